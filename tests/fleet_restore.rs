//! A restarted orchestrator resumes from its [`DispatchStore`]: the newest version of
//! every device with its delivery state, and when the device was last heard from.
//! Acked versions are neither re-sent nor re-issuable; a version still waiting for its
//! first ack is sent again (the same signed schedule) until acked; acks move the
//! device's last-seen time.
//!
//! Runs on [`MemoryDispatchStore`], on SQLite (a fresh file) and on PostgreSQL when
//! `VOLTEX_DATABASE_URL` is set (a fresh database, dropped afterwards; unset or
//! unreachable is a skip unless `VOLTEX_REQUIRE_SERVICES=1`, which makes it a failure).
//! Waits are bounded by [`GUARD`] only so a broken build fails instead of hanging.

mod support;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use voltex::db::{Db, DeliveryStatus, NewDevice};
use voltex::server::clock::{Clock, SystemClock};
use voltex::server::fleet::{
    DeliveryState, DispatchStore, MemoryDispatchStore, Orchestrator, OrchestratorConfig,
    RolloutError, TrackerError, TransportKind,
};
use voltex_dispatch::message::{AckStatus, Fallback, SchedulePeriod};
use voltex_dispatch::{Ack, DeviceId, Message, Schedule, ScheduleId};

/// Upper bound of any wait: a hang guard, not a performance expectation.
const GUARD: Duration = Duration::from_secs(120);

const DEVICES: [&str; 3] = ["restore-a", "restore-b", "restore-c"];

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

fn config() -> OrchestratorConfig {
    let mut config = OrchestratorConfig::default();
    // Slow retries: the test sees at most a few re-sends of the unacked version.
    config.tracker.retry_delay_min = Duration::from_secs(5);
    config.tracker.retry_delay_max = Duration::from_secs(40);
    config.idle_wake = Duration::from_millis(200);
    config
}

fn id(name: &str) -> DeviceId {
    DeviceId::new(name).expect("device id")
}

fn schedule(device: &DeviceId, version: u64) -> Schedule {
    let now = SystemClock.now();
    Schedule {
        device: device.clone(),
        schedule_id: ScheduleId(9_000 + u128::from(version)),
        version,
        issued_at: now,
        valid_from: now,
        valid_until: now.plus_seconds(86_400),
        randomize_start_s: 0,
        periods: vec![SchedulePeriod {
            offset_s: 0,
            target_w: -1_000,
            ramp_s: 0,
        }]
        .into(),
        fallback: Fallback::Idle,
    }
}

async fn guarded<F: Future>(what: &str, future: F) -> F::Output {
    support::guarded(what, GUARD, future).await
}

type Uplink = mpsc::Sender<(DeviceId, Message)>;
type Downlink = mpsc::Receiver<(DeviceId, Message)>;

fn start<S: DispatchStore>(store: S) -> (Orchestrator<S>, Uplink, Downlink) {
    let (uplink_tx, uplink) = mpsc::channel(64);
    let (downlink, downlink_rx) = mpsc::channel(64);
    let orchestrator = Orchestrator::builder(config(), store, support::signer(), clock())
        .link(TransportKind::Quic, support::FakeLink { uplink, downlink })
        .start()
        .expect("orchestrator");
    (orchestrator, uplink_tx, downlink_rx)
}

fn ack(device: &DeviceId, seq: u64, version: u64, status: AckStatus) -> Message {
    Message::Ack(Ack {
        device: device.clone(),
        outbox_seq: seq,
        schedule_id: ScheduleId(9_000 + u128::from(version)),
        version,
        status,
        at: SystemClock.now(),
    })
}

/// Sends `message` up and waits for the receipt that says it is stored; schedules
/// seen meanwhile are returned.
async fn ack_and_wait_receipt(
    uplink: &Uplink,
    downlink: &mut Downlink,
    message: Message,
) -> Vec<(DeviceId, u64)> {
    let device = message.device().clone();
    uplink
        .send((device.clone(), message))
        .await
        .expect("inject");
    let mut schedules = Vec::new();
    loop {
        let (to, down) = guarded("receipt", downlink.recv()).await.expect("downlink");
        match down {
            Message::Receipt(_) if to == device => return schedules,
            Message::Schedule(signed) => schedules.push((to, signed.schedule.version)),
            _ => {}
        }
    }
}

/// The scenario, on any store; `store_again` gives the same data to the restarted
/// orchestrator.
async fn restart_resumes<S: DispatchStore + Clone>(store: S) {
    let [a, b, c] = DEVICES.map(id);
    // Before the restart: v1 to all three; a accepts, b receives, c never answers.
    let (first, uplink, mut downlink) = start(store.clone());
    let rollout = first
        .roll_out(vec![schedule(&a, 1), schedule(&b, 1), schedule(&c, 1)])
        .await
        .expect("roll-out");
    let mut sent = Vec::new();
    while sent.len() < 3 {
        let (to, message) = guarded("first sends", downlink.recv()).await.expect("sent");
        if let Message::Schedule(signed) = message {
            sent.push((to, signed));
        }
    }
    ack_and_wait_receipt(&uplink, &mut downlink, ack(&a, 1, 1, AckStatus::Received)).await;
    ack_and_wait_receipt(&uplink, &mut downlink, ack(&a, 2, 1, AckStatus::Accepted)).await;
    ack_and_wait_receipt(&uplink, &mut downlink, ack(&b, 1, 1, AckStatus::Received)).await;
    let status = first.rollout_status(rollout).expect("status");
    assert_eq!((status.n_acked, status.counts.issued), (2, 1));
    let attempts_a = first.version_attempts(&a, 1).expect("a tracked");
    first.shutdown().await;
    drop((uplink, downlink));

    // After the restart on the same store.
    let (second, uplink, mut downlink) = start(store.clone());
    guarded("restore", second.wait_restored()).await;
    second.check_invariants();
    assert_eq!(second.version_state(&a, 1), Some(DeliveryState::Accepted));
    assert_eq!(second.version_state(&b, 1), Some(DeliveryState::Received));
    assert_eq!(second.version_state(&c, 1), Some(DeliveryState::Issued));
    assert_eq!(second.version_attempts(&a, 1), Some(attempts_a));
    for device in [&a, &b] {
        let seen = second.device_status(device).expect("restored device");
        assert!(
            seen.last_seen_at_ns.is_some(),
            "the acks of {device} moved its last-seen time: {seen:?}"
        );
    }
    // Not re-issued: the stored version is the newest.
    let stale = second.roll_out(vec![schedule(&a, 1)]).await;
    assert!(
        matches!(
            stale,
            Err(RolloutError::Tracker(TrackerError::StaleVersion { .. }))
        ),
        "{stale:?}"
    );
    // Not forgotten: c gets the very same signed v1 again, and only c is sent anything.
    let (to, message) = guarded("re-send", downlink.recv()).await.expect("sent");
    let Message::Schedule(resent) = message else {
        panic!("expected a schedule, got {message:?}")
    };
    assert_eq!(to, c);
    let original = sent
        .iter()
        .find(|(to, _)| *to == c)
        .map(|(_, signed)| signed.clone())
        .expect("c was sent v1");
    assert_eq!(resent, original, "a re-send is the stored signed schedule");
    let more =
        ack_and_wait_receipt(&uplink, &mut downlink, ack(&c, 1, 1, AckStatus::Received)).await;
    assert!(
        more.iter().all(|(to, version)| *to == c && *version == 1),
        "only c's pending v1 is re-sent: {more:?}"
    );
    assert_eq!(second.version_state(&c, 1), Some(DeliveryState::Received));
    assert!(
        second
            .device_status(&c)
            .and_then(|d| d.last_seen_at_ns)
            .is_some()
    );
    // A newer version still rolls out.
    second
        .roll_out(vec![schedule(&a, 2)])
        .await
        .expect("v2 rolls out");
    second.check_invariants();
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_the_memory_store() {
    restart_resumes(MemoryDispatchStore::new()).await;
}

fn new_device(device_id: &str) -> NewDevice {
    NewDevice {
        device_id: device_id.to_string(),
        name: format!("battery {device_id}"),
        public_key_hex: None,
        cert_fingerprint_sha256: None,
        mqtt_credential_hash: None,
        capacity_wh: 13_500,
        max_charge_w: 5_000,
        max_discharge_w: 5_000,
        registered_at_ns: SystemClock.now().0,
    }
}

async fn on_db(db: Db) {
    for device in DEVICES {
        db.register_device(&new_device(device))
            .await
            .expect("register");
    }
    restart_resumes(db.clone()).await;
    // The database agrees: statuses as acked (a's v1 superseded by its v2 on insert),
    // and every device seen.
    for (device, status) in DEVICES.into_iter().zip([
        DeliveryStatus::Superseded,
        DeliveryStatus::Received,
        DeliveryStatus::Received,
    ]) {
        let row = db
            .get_schedule(device, 1)
            .await
            .expect("query")
            .expect("v1");
        assert_eq!(row.status, status, "{device}");
        let stored = db.get_device(device).await.expect("query").expect("device");
        assert!(stored.last_seen_at_ns.is_some(), "{device} seen");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_sqlite() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("voltex.db").display());
    let db = Db::connect(&url).await.expect("open SQLite");
    on_db(db.clone()).await;
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_postgres() {
    support::with_postgres_database("voltex_restore", async |url| {
        let db = Db::connect(&url).await.expect("open PostgreSQL");
        on_db(db.clone()).await;
        db.close().await;
    })
    .await;
}
