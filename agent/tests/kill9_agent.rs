//! Crash safety of the real `voltex-agent` process: SIGKILL, then a restart on the same
//! SQLite file, over an embedded MQTT broker and over QUIC with mutual TLS; once after
//! a schedule has started, once in the middle of a burst of new versions.
//!
//! The platform sends a signed schedule and sees `Received`, `Accepted` and `Started`
//! but sends no receipt, so those acks stay in the agent's outbox. The process is then
//! killed with SIGKILL (no shutdown code runs) and started again with the same config.
//! Without the platform sending anything, the new process must:
//! - re-send the unreceipted acks under the same outbox sequence numbers, with the same
//!   content (nothing lost, nothing renumbered);
//! - not report `Started` again (the stored record says it started);
//! - resume the schedule: telemetry shows the battery charging at its setpoint and the
//!   heartbeat names the schedule as active;
//! - drain its outbox once the platform's receipt arrives (no re-send after it).
//!
//! The in-process variants, which stop the agent at every step of the store protocol,
//! are in `crash.rs`; this test checks the binary as a supervisor would run it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::live::*;
use common::*;
use voltex_dispatch::message::AckStatus;
use voltex_dispatch::transport::{
    PlatformLink, QuicPlatformConfig, QuicPlatformLink, certs, quic_platform,
};
use voltex_dispatch::{Ack, Message};

/// A running agent process, killed (SIGKILL) and reaped when dropped, so a failing
/// test leaves no process behind.
struct AgentProcess(Child);

impl AgentProcess {
    fn start(config: &Path) -> AgentProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_voltex-agent"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn voltex-agent");
        AgentProcess(child)
    }

    /// SIGKILL: the process gets no chance to flush, close or say goodbye.
    fn kill9(mut self) {
        self.0.kill().expect("SIGKILL");
        let status = self.0.wait().expect("reap");
        assert!(!status.success(), "killed, not exited: {status:?}");
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The agent's config: the test device, `platform` (the `[platform]` lines naming the
/// transport), a database in `dir`, fast ticks and telemetry so the test is short.
fn write_config_with(dir: &Path, platform: &str) -> PathBuf {
    let config = format!(
        r#"device_id = "{device}"
database = "{database}"
fallback = "Idle"

[platform]
{platform}
schedule_public_key = "{key}"

[limits]
max_charge_w = 5000
max_discharge_w = 4000

[battery]
capacity_wh = 10000
soc_min_wh = 0
soc_max_wh = 10000
initial_soc_wh = 5000

[driver]
kind = "simulated"

[emergency_stop]
file = "{estop}"

[timing]
tick_ms = 200
telemetry_interval_s = 1
heartbeat_interval_s = 1
reconnect_min_ms = 100
reconnect_max_ms = 1000
"#,
        device = device(),
        database = dir.join("agent.db").display(),
        key = hex(&signer().verifier().public_bytes()),
        estop = dir.join("estop").display(),
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

/// [`write_config_with`] for MQTT at `mqtt_url`.
fn write_config(dir: &Path, mqtt_url: &str) -> PathBuf {
    write_config_with(
        dir,
        &format!("transport = \"mqtt\"\nmqtt_url = \"{mqtt_url}\""),
    )
}

/// Every ack seen, by outbox seq; a re-send under a seq must be identical.
fn acks_by_seq(messages: &[Message]) -> BTreeMap<u64, Ack> {
    let mut acks = BTreeMap::new();
    for ack in messages.iter().flat_map(Message::acks) {
        if let Some(previous) = acks.insert(ack.outbox_seq, ack.clone()) {
            assert_eq!(previous, ack, "a re-send under the same seq differs");
        }
    }
    acks
}

fn statuses(acks: &BTreeMap<u64, Ack>) -> Vec<AckStatus> {
    acks.values().map(|ack| ack.status).collect()
}

fn charging(messages: &[Message], power_w: i64) -> bool {
    messages.iter().any(|m| match m {
        Message::Telemetry(batch) => batch.samples.iter().any(|s| s.power_w == power_w),
        _ => false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_agent_process_resends_its_unreceipted_acks_and_resumes_the_schedule() {
    let (_broker, url, mut platform) = platform_on_embedded_broker("kill9-platform").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &url);
    kill_restart_resend_resume(&mut platform, &config).await;
}

/// The same over QUIC: the platform's CA signs the device's client certificate, the
/// agent's config names the CA, its certificate and key, and the platform endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_quic_a_sigkilled_agent_process_resends_its_unreceipted_acks_and_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut platform, config) = quic_platform_and_agent_config(dir.path()).await;
    kill_restart_resend_resume(&mut platform, &config).await;
}

/// A QUIC platform on a free loopback port with a fresh CA, and an agent config in
/// `dir` naming the CA, a device certificate and key the CA issued, and the endpoint.
async fn quic_platform_and_agent_config(dir: &Path) -> (QuicPlatformLink, PathBuf) {
    let ca = certs::init_ca("kill9 test CA").expect("CA");
    let server = certs::issue_server(&ca, &["localhost".into()]).expect("server cert");
    let platform = quic_platform(QuicPlatformConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        ca.cert_pem.clone(),
        server.cert_pem,
        server.key_pem,
    ))
    .await
    .expect("QUIC platform");
    let addr = platform.local_addr().expect("bound");
    let issued = certs::issue_device(&ca, &device()).expect("device cert");
    let pem = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write PEM");
        path.display().to_string()
    };
    let ca_path = pem("ca.pem", &ca.cert_pem);
    let cert_path = pem("device.pem", &issued.cert_pem);
    let key_path = pem("device.key", &issued.key_pem);
    let config = write_config_with(
        dir,
        &format!(
            "transport = \"quic\"\nquic_addr = \"{addr}\"\nquic_server_name = \"localhost\"\n\
             ca_cert = \"{ca_path}\"\nclient_cert = \"{cert_path}\"\nclient_key = \"{key_path}\""
        ),
    );
    (platform, config)
}

/// The body of both transports' tests: see the module doc.
async fn kill_restart_resend_resume(platform: &mut impl PlatformLink, config: &Path) {
    let agent = AgentProcess::start(config);

    // Charge at 1 kW for an hour, from 10 s ago on the real clock.
    let signed = sign(running_now(schedule(9, 1, 0, 3_600, &[(0, -1_000, 0)])));
    // Until the process has subscribed (MQTT) or connected (QUIC: `NotConnected`), a
    // send goes nowhere: re-send until an ack arrives (as the platform does).
    let mut before = Vec::new();
    for _ in 0..60 {
        if let Err(error) = platform
            .send_to(&device(), &Message::Schedule(signed.clone()))
            .await
        {
            eprintln!("not yet: {error}");
        }
        before.extend(collect(platform, Duration::from_millis(500), |m| !m.is_empty()).await);
        if !acks_by_seq(&before).is_empty() {
            break;
        }
    }
    before.extend(
        collect(platform, Duration::from_secs(15), |m| {
            statuses(&acks_by_seq(m)).contains(&AckStatus::Started) && charging(m, -1_000)
        })
        .await,
    );
    let acks_before = acks_by_seq(&before);
    assert_eq!(
        statuses(&acks_before),
        vec![AckStatus::Received, AckStatus::Accepted, AckStatus::Started],
        "{before:?}"
    );
    assert!(
        charging(&before, -1_000),
        "the schedule runs before the kill"
    );

    // No receipt: the acks stay in the outbox. Kill the process outright.
    agent.kill9();
    // Whatever was still in flight from the dead process is not evidence of the new one.
    collect(platform, Duration::from_millis(300), |_| false).await;

    // Same config, same database. The platform sends nothing.
    let agent = AgentProcess::start(config);
    let after = collect(platform, Duration::from_secs(20), |m| {
        acks_by_seq(m).len() >= acks_before.len()
            && charging(m, -1_000)
            && m.iter()
                .any(|x| matches!(x, Message::Heartbeat(h) if h.active.is_some()))
    })
    .await;
    let acks_after = acks_by_seq(&after);
    for (seq, ack) in &acks_before {
        assert_eq!(
            acks_after.get(seq),
            Some(ack),
            "ack {seq} ({:?}) re-sent unchanged after the kill",
            ack.status
        );
    }
    let new_acks: Vec<&Ack> = acks_after
        .iter()
        .filter(|(seq, _)| !acks_before.contains_key(seq))
        .map(|(_, ack)| ack)
        .collect();
    assert!(
        new_acks.is_empty(),
        "no new acks after the restart (Started is not reported twice): {new_acks:?}"
    );
    assert!(
        charging(&after, -1_000),
        "the schedule resumes after the restart"
    );
    let active = after.iter().any(|m| match m {
        Message::Heartbeat(h) => h.active == Some((signed.schedule.schedule_id, 1)),
        _ => false,
    });
    assert!(active, "the restarted agent reports the schedule active");

    // The receipt drains the outbox: those acks are not sent again.
    let through_seq = receipt_for_all(platform, &after).await;
    collect(platform, Duration::from_millis(500), |_| false).await;
    // A second kill now loses nothing either, and the drained acks stay drained.
    agent.kill9();
    collect(platform, Duration::from_millis(300), |_| false).await;
    let _agent = AgentProcess::start(config);
    let later = collect(platform, Duration::from_secs(5), |m| charging(m, -1_000)).await;
    let resent: Vec<u64> = acks_by_seq(&later)
        .into_keys()
        .filter(|seq| *seq <= through_seq)
        .collect();
    assert!(
        resent.is_empty(),
        "receipted acks came back after a restart: {resent:?}"
    );
    assert!(
        charging(&later, -1_000),
        "still executing after a second kill"
    );
}

/// SIGKILL in the middle of a burst: 29 new versions of one schedule published back to
/// back, the process killed while it is storing and deciding them. After the restart
/// the platform re-sends the newest version until it is accepted (as the platform does
/// until it holds an ack). Across both processes no outbox seq carries two different
/// acks, no version is acked `Received` (or given any status) twice, and the agent
/// ends on the newest version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_during_a_burst_of_versions_reuses_no_seq_and_ends_on_the_newest() {
    let (_broker, url, mut platform) = platform_on_embedded_broker("kill9-burst-platform").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &url);
    kill_during_a_burst(&mut platform, &config).await;
}

/// The same over QUIC with mutual TLS: the burst is written on the dead connection's
/// stream, and the restarted process comes back on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_quic_a_sigkill_during_a_burst_of_versions_reuses_no_seq_and_ends_on_the_newest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut platform, config) = quic_platform_and_agent_config(dir.path()).await;
    kill_during_a_burst(&mut platform, &config).await;
}

/// The body of both transports' burst tests: see the first one's doc.
async fn kill_during_a_burst(platform: &mut impl PlatformLink, config: &Path) {
    let agent = AgentProcess::start(config);

    // One clock reading for the whole burst, so every version has the same window.
    let window = running_now(schedule(10, 1, 0, 3_600, &[]));
    let version = |v: u64| {
        let mut schedule = schedule(10, v, 0, 3_600, &[(0, -(v as i64) * 100, 0)]);
        schedule.issued_at = window.issued_at;
        schedule.valid_from = window.valid_from;
        schedule.valid_until = window.valid_until;
        sign(schedule)
    };
    // Version 1 until acked: the process is up and subscribed (MQTT) or connected
    // (QUIC, where a send before that fails with `NotConnected`).
    let mut seen = Vec::new();
    for _ in 0..60 {
        if let Err(error) = platform
            .send_to(&device(), &Message::Schedule(version(1)))
            .await
        {
            eprintln!("not yet: {error}");
        }
        seen.extend(collect(platform, Duration::from_millis(500), |m| !m.is_empty()).await);
        if !acks_by_seq(&seen).is_empty() {
            break;
        }
    }
    assert!(!acks_by_seq(&seen).is_empty(), "version 1 acked");
    let newest = 30;
    for v in 2..=newest {
        platform
            .send_to(&device(), &Message::Schedule(version(v)))
            .await
            .expect("send burst");
    }
    let received = |messages: &[Message]| {
        acks_by_seq(messages)
            .values()
            .filter(|a| a.status == AckStatus::Received)
            .count()
    };
    // Kill once a few of the burst's versions are acked: the process is then in the
    // middle of storing and deciding the rest (a fixed delay was after the whole burst
    // on a fast run).
    seen.extend(collect(platform, Duration::from_secs(5), |m| received(m) >= 5).await);
    agent.kill9();
    let received_before_kill = received(&seen);
    assert!(
        received_before_kill < newest as usize,
        "the kill lands before the whole burst is acked"
    );

    let _agent = AgentProcess::start(config);
    let accepted_newest = |messages: &[Message]| {
        messages
            .iter()
            .flat_map(Message::acks)
            .any(|a| a.version == newest && a.status == AckStatus::Accepted)
    };
    for _ in 0..40 {
        if accepted_newest(&seen) {
            break;
        }
        // Until the new process is connected a QUIC send fails: try again next round.
        if let Err(error) = platform
            .send_to(&device(), &Message::Schedule(version(newest)))
            .await
        {
            eprintln!("not yet: {error}");
        }
        seen.extend(collect(platform, Duration::from_millis(500), |_| false).await);
    }
    seen.extend(
        collect(platform, Duration::from_secs(10), |m| {
            m.iter().any(|x| {
                matches!(x, Message::Heartbeat(h) if h.active.is_some_and(|(_, v)| v == newest))
            }) && charging(m, -(newest as i64) * 100)
        })
        .await,
    );
    // One seq, one ack (asserted inside), across the kill.
    let acks = acks_by_seq(&seen);
    let mut by_version_status: BTreeMap<(u64, String), Vec<u64>> = BTreeMap::new();
    for (seq, ack) in &acks {
        by_version_status
            .entry((ack.version, format!("{:?}", ack.status)))
            .or_default()
            .push(*seq);
    }
    let twice: Vec<_> = by_version_status
        .iter()
        .filter(|(_, seqs)| seqs.len() > 1)
        .collect();
    assert!(twice.is_empty(), "a status acked under two seqs: {twice:?}");
    eprintln!(
        "versions acked Received: {received_before_kill} before the kill, {} in all",
        received(&seen)
    );
    assert!(accepted_newest(&seen), "the newest version is accepted");
    assert!(
        charging(&seen, -(newest as i64) * 100),
        "the newest version's setpoint runs"
    );
    assert!(
        seen.iter().any(|m| matches!(m, Message::Heartbeat(h)
            if h.active == Some((version(newest).schedule.schedule_id, newest)))),
        "the heartbeat names the newest version"
    );
}
