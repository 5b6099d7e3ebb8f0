//! End to end over the embedded MQTT broker: the real `Runtime` with the SQLite store,
//! the simulated battery and the MQTT device link, against an MQTT platform link.
//!
//! The platform sends a signed schedule and sees `Received`, `Accepted`, `Started` and
//! telemetry; its receipt drains the outbox; the agent is stopped and restarted on the
//! same database, the platform re-sends the same schedule (as it does until it holds an
//! ack), and the restarted agent neither acks it again nor re-sends `Started`, and
//! reports it active in its heartbeat.

mod common;

use std::time::Duration;

use common::live::*;
use common::*;
use voltex_agent::driver::sim::SimulatedBattery;
use voltex_agent::runtime::{Runtime, RuntimeConfig, SystemClock};
use voltex_agent::store::AgentStore;
use voltex_agent::store::sqlite::SqliteStore;
use voltex_dispatch::Message;
use voltex_dispatch::message::AckStatus;
use voltex_dispatch::transport::{MqttConfig, PlatformLink, mqtt_device};
use voltex_market::battery::BatterySpec;

fn runtime_config() -> RuntimeConfig {
    RuntimeConfig {
        tick: Duration::from_millis(200),
        telemetry_interval: Duration::from_secs(1),
        heartbeat_interval: Duration::from_secs(1),
        resend_after: Duration::from_secs(60),
        emergency_file: None,
        flush_messages_max: 64,
    }
}

async fn start_agent(
    url: &str,
    path: &std::path::Path,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let store = SqliteStore::open(path).await.expect("open store");
    let spec = BatterySpec {
        max_charge_w: 5_000,
        max_discharge_w: 4_000,
        ..BatterySpec::symmetric(5_000, 10_000, 0.9, Default::default())
    };
    let driver = SimulatedBattery::new(spec, 5_000).expect("battery");
    let link = mqtt_device(MqttConfig::from_url(url).expect("url"), device())
        .await
        .expect("device link");
    let runtime = Runtime::start(
        core_config(),
        store,
        driver,
        link,
        SystemClock::new(1),
        runtime_config(),
    )
    .await
    .expect("start");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        runtime
            .run(async {
                let _ = stopped.await;
            })
            .await
            .expect("run");
    });
    (stop, task)
}

fn ack_statuses(messages: &[Message]) -> Vec<(u64, AckStatus)> {
    messages
        .iter()
        .flat_map(Message::acks)
        .map(|a| (a.outbox_seq, a.status))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_over_embedded_mqtt_acks_executes_drains_and_survives_restart() {
    let (_broker, url, mut platform) = platform_on_embedded_broker("e2e-platform").await;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.db");
    let (stop, task) = start_agent(&url, &path).await;

    // A schedule that started 10 s ago on the real clock: charge at 1 kW for an hour.
    let signed = sign(running_now(schedule(5, 1, 0, 3_600, &[(0, -1_000, 0)])));
    // Until the agent's subscription is in place the broker drops the publish, so the
    // platform re-sends until it holds an ack (as the real platform does).
    let mut seen = Vec::new();
    for _ in 0..20 {
        platform
            .send_to(&device(), &Message::Schedule(signed.clone()))
            .await
            .expect("send schedule");
        seen.extend(collect(&mut platform, Duration::from_millis(500), |m| !m.is_empty()).await);
        if !ack_statuses(&seen).is_empty() {
            break;
        }
    }
    seen.extend(
        collect(&mut platform, Duration::from_secs(10), |m| {
            let statuses: Vec<AckStatus> = ack_statuses(m).into_iter().map(|(_, s)| s).collect();
            // Wait for a charging sample itself: an agent re-sends its outbox (older,
            // idle samples included) when a schedule it holds arrives again, so "some
            // telemetry" can arrive before the first sample of the running schedule.
            statuses.contains(&AckStatus::Started)
                && m.iter().any(|x| match x {
                    Message::Telemetry(batch) => batch.samples.iter().any(|s| s.power_w == -1_000),
                    _ => false,
                })
        })
        .await,
    );
    // The platform re-sent the schedule until it saw an ack, and the agent answers a
    // schedule it already holds by re-sending its outbox: the same acks (same outbox
    // seq) can arrive more than once. Distinct by seq they are exactly these three.
    let statuses: Vec<AckStatus> = ack_statuses(&seen)
        .into_iter()
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_values()
        .collect();
    assert_eq!(
        statuses,
        vec![AckStatus::Received, AckStatus::Accepted, AckStatus::Started],
        "{seen:?}"
    );
    let charging = seen.iter().any(|m| match m {
        Message::Telemetry(batch) => batch.samples.iter().any(|s| s.power_w == -1_000),
        _ => false,
    });
    assert!(charging, "telemetry shows the battery charging at 1 kW");

    // Receipt for everything so far: the outbox drains.
    let through_seq = receipt_for_all(&mut platform, &seen).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(()).expect("stop");
    task.await.expect("agent task");

    let mut store = SqliteStore::open(&path).await.expect("reopen");
    let state = store.load().await.expect("load");
    assert!(
        state.outbox.iter().all(|e| e.seq > through_seq),
        "receipted entries drained"
    );
    store.close().await.expect("close");

    // Restart on the same file; the platform re-sends the same schedule.
    let (stop, task) = start_agent(&url, &path).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    platform
        .send_to(&device(), &Message::Schedule(signed.clone()))
        .await
        .expect("re-send schedule");
    let after = collect(&mut platform, Duration::from_secs(4), |_| false).await;
    let new_acks: Vec<(u64, AckStatus)> = ack_statuses(&after)
        .into_iter()
        .filter(|(seq, _)| *seq > through_seq)
        .collect();
    assert!(
        new_acks.is_empty(),
        "no new acks after restart + duplicate: {new_acks:?}"
    );
    let active = after.iter().any(|m| match m {
        Message::Heartbeat(h) => h.active == Some((signed.schedule.schedule_id, 1)),
        _ => false,
    });
    assert!(active, "the restarted agent reports the schedule active");
    stop.send(()).expect("stop");
    task.await.expect("agent task");
}
