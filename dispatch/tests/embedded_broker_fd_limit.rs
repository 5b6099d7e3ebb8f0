//! The embedded broker out of file descriptors: while `accept` fails for lack of
//! descriptors its accept loop pauses (5 ms, doubling, at most 1 s) instead of retrying
//! at once, and it accepts again once descriptors are free.
//!
//! Its own test binary because it lowers the process's descriptor limit and counts the
//! broker's log events through a global tracing subscriber. The connection the broker
//! cannot accept comes from a child process (bash's `/dev/tcp`), whose descriptors are
//! its own.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use voltex_dispatch::transport::embedded_broker::free_port;
use voltex_dispatch::transport::start_embedded_broker;

/// rumqttd's "accept failed; pausing" events (one per failed accept).
static ACCEPT_FAILURES: AtomicU64 = AtomicU64::new(0);
/// rumqttd's "Accepting sockets again." events (one per recovery).
static ACCEPT_RECOVERIES: AtomicU64 = AtomicU64::new(0);

/// Counts the two accept-loop events of rumqttd by their message.
struct AcceptEvents;

struct Message(Option<String>);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AcceptEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if !event.metadata().target().starts_with("rumqttd") {
            return;
        }
        let mut message = Message(None);
        event.record(&mut message);
        match message.0.as_deref() {
            Some("accept failed; pausing") => ACCEPT_FAILURES.fetch_add(1, Ordering::Relaxed),
            Some("Accepting sockets again.") => ACCEPT_RECOVERIES.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }
}

/// Opens `/dev/null` until the process is out of descriptors; returns the files.
fn exhaust_descriptors() -> Vec<File> {
    let mut files = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(file) => files.push(file),
            Err(error) if error.raw_os_error() == Some(24) => return files, // EMFILE
            Err(error) => panic!("opening /dev/null: {error}"),
        }
        assert!(files.len() < 100_000, "the descriptor limit did not take");
    }
}

/// Kills the connecting child on every exit path.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `done` holds, polling every 20 ms for about `patience` (a liveness wait,
/// not a timing check).
fn eventually(patience: Duration, mut done: impl FnMut() -> bool) -> bool {
    const POLL: Duration = Duration::from_millis(20);
    for _ in 0..patience.as_millis() / POLL.as_millis() {
        if done() {
            return true;
        }
        std::thread::sleep(POLL);
    }
    done()
}

/// An MQTT 3.1.1 CONNECT (clean session, keep-alive 60 s, client id `fdtest`) answered
/// by a CONNACK accepting it.
fn mqtt_connects(port: u16) -> Result<(), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let connect = [
        0x10, 18, // CONNECT, remaining length
        0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, // protocol, level, flags, keep-alive
        0, 6, b'f', b'd', b't', b'e', b's', b't', // client id
    ];
    stream.write_all(&connect).map_err(|e| e.to_string())?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).map_err(|e| e.to_string())?;
    if connack == [0x20, 2, 0, 0] {
        Ok(())
    } else {
        Err(format!("unexpected CONNACK {connack:?}"))
    }
}

#[test]
fn out_of_descriptors_the_accept_loop_pauses_and_then_accepts_again() {
    tracing_subscriber::registry().with(AcceptEvents).init();
    let broker = start_embedded_broker(free_port().expect("free port")).expect("broker starts");
    let port = broker.addr().port();
    mqtt_connects(port).expect("the broker accepts before the limit");

    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).expect("getrlimit");
    let open = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count() as u64;
    rlimit::setrlimit(rlimit::Resource::NOFILE, open + 64, hard).expect("lower the soft limit");

    // Out of descriptors, but for the few the child process needs to be spawned.
    let mut files = exhaust_descriptors();
    files.truncate(files.len().saturating_sub(8));
    let child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "sleep 0.3; exec 3<>/dev/tcp/127.0.0.1/{port}; sleep 30"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn bash");
    let _child = KillOnDrop(child);
    files.extend(exhaust_descriptors());

    // The child connects after 0.3 s; the broker cannot accept it.
    assert!(
        eventually(Duration::from_secs(20), || ACCEPT_FAILURES
            .load(Ordering::Relaxed)
            > 0),
        "the broker never failed to accept the child's connection"
    );
    let failures_at_first = ACCEPT_FAILURES.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1_500));
    let failures = ACCEPT_FAILURES.load(Ordering::Relaxed) - failures_at_first;
    // Pauses of 5, 10, 20, ... ms: 1.5 s holds at most 9 more attempts. Without them the
    // loop retried millions of times a second.
    assert!(
        failures <= 12,
        "{failures} accept attempts in 1.5 s while out of descriptors: the loop does not pause"
    );
    assert_eq!(ACCEPT_RECOVERIES.load(Ordering::Relaxed), 0);

    drop(files);
    rlimit::setrlimit(rlimit::Resource::NOFILE, soft, hard).expect("restore the soft limit");
    // A new client is accepted once the pause ends (at most 1 s), and the accept loop
    // reports its recovery. Not the child's connection: on a loaded machine (1 run in
    // 15 beside a build) the loop failed 9 times, then neither failed nor recovered for
    // 20 s, as if that connection had left the queue; why is not known. A loop that
    // stalled would fail this new client too.
    mqtt_connects(port).expect("the broker serves new clients again");
    assert!(
        eventually(Duration::from_secs(20), || ACCEPT_RECOVERIES
            .load(Ordering::Relaxed)
            >= 1),
        "the broker accepted without reporting its recovery ({} failed accepts)",
        ACCEPT_FAILURES.load(Ordering::Relaxed)
    );
}
