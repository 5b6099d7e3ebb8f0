//! `voltex bench rollout-agents`, the child process that holds the simulated agents of
//! `voltex bench rollout --agents child`: its stdin/stdout protocol (one JSON
//! configuration line in; `{"started": N}` out; stdin closing stops the fleet and its
//! counters come out as one more line) and its refusal of a bad configuration.
//!
//! Runs the binary Cargo builds for this package (`CARGO_BIN_EXE_voltex`). The agents
//! point at a loopback port nobody listens on, so they start and keep retrying their
//! connection; no broker is needed.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Command, Stdio};

use voltex::server::fleet::SimFleetCounters;
use voltex_dispatch::ScheduleSigner;

fn agents_process() -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_voltex"))
        .args(["bench", "rollout-agents"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("voltex bench rollout-agents starts")
}

/// A loopback TCP port with no listener (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn public_key() -> Vec<u8> {
    ScheduleSigner::from_seed(&[5; 32])
        .verifier()
        .public_bytes()
        .to_vec()
}

#[test]
fn the_agents_process_reports_its_start_and_its_counters_when_stdin_closes() {
    let mut child = agents_process();
    let mut stdin = child.stdin.take().expect("stdin");
    let config = serde_json::json!({
        "n_agents": 3,
        "mqtt_port": closed_port(),
        "verifier_public_key": public_key(),
    });
    writeln!(stdin, "{config}").expect("write the configuration");
    stdin.flush().expect("flush");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("first line");
    let started: serde_json::Value = serde_json::from_str(line.trim()).expect("JSON");
    assert_eq!(started, serde_json::json!({ "started": 3 }), "{line}");

    drop(stdin);
    line.clear();
    stdout.read_line(&mut line).expect("second line");
    let counters: SimFleetCounters = serde_json::from_str(line.trim()).expect("counters");
    assert_eq!(counters.agents_started, 3, "{counters:?}");
    assert_eq!(counters.agents_failed, 0, "{counters:?}");
    assert_eq!(counters.agents_connected, 0, "nobody listens: {counters:?}");
    assert_eq!(counters.schedules_received, 0, "{counters:?}");
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit {status}");
}

/// Writes `input` on the child's stdin, closes it, and returns its exit status and
/// stderr.
fn refused(input: &str) -> (std::process::ExitStatus, String) {
    let mut child = agents_process();
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write");
    drop(stdin);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("read stdout");
    assert!(
        stdout.is_empty(),
        "nothing is reported as started: {stdout}"
    );
    (child.wait().expect("wait"), stderr)
}

#[test]
fn a_malformed_configuration_is_refused_with_a_clear_error() {
    for input in [
        "",
        "not json\n",
        "{\"n_agents\": 3}\n",
        "{\"n_agents\": -1, \"mqtt_port\": 1, \"verifier_public_key\": []}\n",
    ] {
        let (status, stderr) = refused(input);
        assert!(!status.success(), "{input:?} was accepted");
        assert!(stderr.contains("malformed"), "{input:?}: {stderr}");
    }
}

#[test]
fn a_configuration_without_agents_is_refused() {
    let config = serde_json::json!({
        "n_agents": 0,
        "mqtt_port": closed_port(),
        "verifier_public_key": public_key(),
    });
    let (status, stderr) = refused(&format!("{config}\n"));
    assert!(!status.success());
    assert!(stderr.contains("no agents"), "{stderr}");
}
