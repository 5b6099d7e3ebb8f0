//! Dispatch orchestration end to end: the roll-out orchestrator against fleets of real
//! `voltex-agent` runtimes over the embedded MQTT broker, over QUIC with certificates
//! from the platform CA, over both at once, and over Mosquitto when
//! `VOLTEX_MQTT_URL` is set; plus supersede, deadline and duplicate-ack behaviour.
//!
//! Waits are bounded by [`GUARD`] only so that a broken build fails instead of hanging;
//! no assertion depends on how long anything took.

mod support;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use voltex::server::clock::{Clock, SystemClock};
use voltex::server::fleet::{
    DeliveryState, FailureCause, MemoryDispatchStore, Orchestrator, OrchestratorConfig, RolloutId,
    SimFleet, SimFleetConfig, SimQuic, TransportKind, spawn_simulated_fleet,
};
use voltex_dispatch::message::{AckStatus, Fallback, SchedulePeriod};
use voltex_dispatch::transport::embedded_broker::free_port;
use voltex_dispatch::transport::{
    MqttConfig, QuicPlatformConfig, certs, mqtt_platform, quic_platform, start_embedded_broker,
};
use voltex_dispatch::{
    Ack, AckBatch, AckEntry, DeviceId, Message, Receipt, Schedule, ScheduleId, SignedSchedule,
};
use voltex_market::UtcNanos;

/// Upper bound of any wait: a hang guard, not a performance expectation.
const GUARD: Duration = Duration::from_secs(180);

type Orch = Orchestrator<MemoryDispatchStore>;

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

fn config(retry_ms: u64) -> OrchestratorConfig {
    let mut config = OrchestratorConfig::default();
    config.tracker.retry_delay_min = Duration::from_millis(retry_ms);
    config.tracker.retry_delay_max = Duration::from_millis(retry_ms * 8);
    config.idle_wake = Duration::from_millis(200);
    config
}

/// A day-long schedule of 96 quarter hours starting now.
fn schedule(device: &DeviceId, version: u64, now: UtcNanos) -> Schedule {
    Schedule {
        device: device.clone(),
        schedule_id: ScheduleId(7),
        version,
        issued_at: now,
        valid_from: now,
        valid_until: now.plus_seconds(86_400),
        randomize_start_s: 0,
        periods: (0..96)
            .map(|i| SchedulePeriod {
                offset_s: i * 900,
                target_w: if i % 2 == 0 { -2_000 } else { 1_500 },
                ramp_s: 0,
            })
            .collect(),
        fallback: Fallback::Idle,
    }
}

fn schedules(devices: &[(DeviceId, TransportKind)], version: u64) -> Vec<Schedule> {
    let now = SystemClock.now();
    devices
        .iter()
        .map(|(device, _)| schedule(device, version, now))
        .collect()
}

async fn guarded<F: Future>(what: &str, future: F) -> F::Output {
    support::guarded(what, GUARD, future).await
}

async fn mqtt_link(port: u16, client_id: &str) -> voltex_dispatch::transport::MqttPlatformLink {
    let mut platform = MqttConfig::new("127.0.0.1", port);
    platform.client_id = client_id.into();
    platform.inflight_max = 1_000;
    platform.request_channel_len = 16_384;
    platform.inbound_channel_len = 16_384;
    mqtt_platform(platform).await.expect("platform MQTT link")
}

struct QuicSetup {
    link: voltex_dispatch::transport::QuicPlatformLink,
    sim: SimQuic,
}

async fn quic_setup() -> QuicSetup {
    let ca = certs::init_ca("voltex test CA").expect("CA");
    let server = certs::issue_server(&ca, &["localhost".into()]).expect("server cert");
    let link = quic_platform(QuicPlatformConfig::new(
        (Ipv4Addr::LOCALHOST, 0).into(),
        ca.cert_pem.clone(),
        server.cert_pem,
        server.key_pem,
    ))
    .await
    .expect("QUIC endpoint");
    let addr = link.local_addr().expect("bound address");
    QuicSetup {
        link,
        sim: SimQuic {
            addr,
            server_name: "localhost".into(),
            ca,
        },
    }
}

fn register(orchestrator: &Orch, fleet: &SimFleet) {
    for (device, transport) in fleet.devices() {
        orchestrator
            .register_device(device, *transport)
            .expect("register");
    }
}

/// Waits until every device of `rollout` has acked and reached at least `accepted`.
async fn wait_all_accepted(orchestrator: &Orch, rollout: RolloutId, n: u64) {
    guarded(
        "all accepted",
        orchestrator.wait_until(|o| {
            o.rollout_status(rollout).is_some_and(|status| {
                let c = status.counts;
                c.accepted + c.started + c.completed == n
            })
        }),
    )
    .await;
}

/// Rolls version 1 out to the fleet and checks that every agent acked and accepted it.
async fn roll_out_and_check(orchestrator: &Orch, fleet: &SimFleet, version: u64) -> RolloutId {
    let n = fleet.devices().len() as u64;
    let rollout = orchestrator
        .roll_out(schedules(fleet.devices(), version))
        .await
        .expect("roll-out");
    guarded("roll-out finished", orchestrator.wait_finished(rollout)).await;
    let status = orchestrator.rollout_status(rollout).expect("status");
    assert_eq!(status.n_devices, n);
    assert_eq!(status.n_acked, n, "every device acked: {status:#?}");
    assert_eq!(status.counts.issued, 0);
    assert_eq!(status.counts.failed, 0);
    assert_eq!(status.counts.rejected, 0);
    assert!(status.finished_at_ns.is_some());
    assert!(status.ack_latency_p99_ms.is_some());
    wait_all_accepted(orchestrator, rollout, n).await;
    let status = orchestrator.rollout_status(rollout).expect("status");
    assert_eq!(status.success_rate, Some(1.0));
    for (device, _) in fleet.devices() {
        let stored = orchestrator
            .store()
            .acks_of(device, version)
            .into_iter()
            .collect::<Vec<_>>();
        assert!(
            stored.contains(&AckStatus::Received),
            "{device}: {stored:?}"
        );
        assert!(
            stored.contains(&AckStatus::Accepted),
            "{device}: {stored:?}"
        );
        let saved = orchestrator
            .store()
            .schedule(device, version)
            .expect("version saved");
        assert!(saved.attempts >= 1);
        assert!(support::signer().verifier().verify(&saved.signed).is_ok());
    }
    orchestrator.check_invariants();
    rollout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_to_50_agents_over_the_embedded_broker_is_all_acked_then_superseded() {
    let broker = start_embedded_broker(free_port().expect("port")).expect("broker");
    let port = broker.addr().port();
    let link = mqtt_link(port, "voltex-test-embedded").await;
    let orchestrator = Orchestrator::builder(
        config(250),
        MemoryDispatchStore::new(),
        support::signer(),
        clock(),
    )
    .link(TransportKind::Mqtt, link)
    .start()
    .expect("orchestrator");
    let mut fleet_config = SimFleetConfig::new(50, support::signer().verifier());
    fleet_config.id_prefix = "emb-".into();
    fleet_config.mqtt = Some(MqttConfig::new("127.0.0.1", port));
    let fleet = spawn_simulated_fleet(fleet_config).await.expect("fleet");
    register(&orchestrator, &fleet);

    let first = roll_out_and_check(&orchestrator, &fleet, 1).await;
    // A newer version for every device: each agent reports version 1 superseded.
    let second = roll_out_and_check(&orchestrator, &fleet, 2).await;
    guarded(
        "version 1 superseded by the agents",
        orchestrator.wait_until(|o| {
            o.rollout_status(first)
                .is_some_and(|s| s.counts.superseded == 50)
        }),
    )
    .await;
    for (device, _) in fleet.devices() {
        assert_eq!(
            orchestrator.version_state(device, 1),
            Some(DeliveryState::Superseded { by_version: 2 })
        );
    }
    let fleet_status = orchestrator.fleet_status();
    assert_eq!(fleet_status.n_devices, 50);
    assert_eq!(fleet_status.n_failed, 0);
    assert_eq!(fleet_status.success_rate, Some(1.0));
    assert!(orchestrator.rollout_status(second).is_some());
    let device = orchestrator
        .device_status(&fleet.devices()[0].0)
        .expect("device status");
    assert_eq!(device.transport, Some(TransportKind::Mqtt));
    assert_eq!(device.success_rate, Some(1.0));
    let counters = fleet.shutdown().await;
    assert_eq!(counters.agents_failed, 0);
    assert!(counters.receipts_received > 0, "agents got receipts");
    orchestrator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_to_50_agents_over_quic_is_all_acked() {
    let quic = quic_setup().await;
    let orchestrator = Orchestrator::builder(
        config(250),
        MemoryDispatchStore::new(),
        support::signer(),
        clock(),
    )
    .link(TransportKind::Quic, quic.link)
    .start()
    .expect("orchestrator");
    let mut fleet_config = SimFleetConfig::new(50, support::signer().verifier());
    fleet_config.id_prefix = "quic-".into();
    fleet_config.quic = Some(quic.sim);
    let fleet = spawn_simulated_fleet(fleet_config).await.expect("fleet");
    register(&orchestrator, &fleet);
    roll_out_and_check(&orchestrator, &fleet, 1).await;
    let counters = fleet.shutdown().await;
    assert_eq!(counters.agents_failed, 0);
    orchestrator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_fleet_is_reached_over_each_devices_own_transport() {
    let broker = start_embedded_broker(free_port().expect("port")).expect("broker");
    let port = broker.addr().port();
    let quic = quic_setup().await;
    let orchestrator = Orchestrator::builder(
        config(250),
        MemoryDispatchStore::new(),
        support::signer(),
        clock(),
    )
    .link(
        TransportKind::Mqtt,
        mqtt_link(port, "voltex-test-mixed").await,
    )
    .link(TransportKind::Quic, quic.link)
    .start()
    .expect("orchestrator");
    let mut fleet_config = SimFleetConfig::new(40, support::signer().verifier());
    fleet_config.id_prefix = "mix-".into();
    fleet_config.mqtt = Some(MqttConfig::new("127.0.0.1", port));
    fleet_config.quic = Some(quic.sim);
    fleet_config.quic_per_mille = 250;
    let fleet = spawn_simulated_fleet(fleet_config).await.expect("fleet");
    let n_quic = fleet
        .devices()
        .iter()
        .filter(|(_, t)| *t == TransportKind::Quic)
        .count();
    assert_eq!(n_quic, 10, "a quarter of the agents on QUIC");
    register(&orchestrator, &fleet);
    roll_out_and_check(&orchestrator, &fleet, 1).await;
    for (device, transport) in fleet.devices() {
        let status = orchestrator.device_status(device).expect("status");
        assert_eq!(status.transport, Some(*transport));
    }
    fleet.shutdown().await;
    orchestrator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_device_is_retried_then_failed_at_the_deadline_and_a_newer_version_stops_old_retries()
 {
    let broker = start_embedded_broker(free_port().expect("port")).expect("broker");
    let link = mqtt_link(broker.addr().port(), "voltex-test-offline").await;
    let orchestrator = Orchestrator::builder(
        config(20),
        MemoryDispatchStore::new(),
        support::signer(),
        clock(),
    )
    .link(TransportKind::Mqtt, link)
    .start()
    .expect("orchestrator");
    let ghost = DeviceId::new("ghost-1").expect("id");
    let now = SystemClock.now();

    // Supersede: version 1 is retried until version 2 replaces it, then never again.
    orchestrator
        .roll_out(vec![schedule(&ghost, 1, now)])
        .await
        .expect("v1");
    guarded(
        "v1 retried",
        orchestrator.wait_until(|o| o.version_attempts(&ghost, 1).is_some_and(|n| n >= 3)),
    )
    .await;
    let deadline = UtcNanos(SystemClock.now().0 + 1_500_000_000);
    let rollout = orchestrator
        .roll_out_with_deadline(vec![schedule(&ghost, 2, now)], Some(deadline))
        .await
        .expect("v2");
    let superseded_at_attempts = orchestrator.version_attempts(&ghost, 1).expect("v1");
    assert_eq!(
        orchestrator.version_state(&ghost, 1),
        Some(DeliveryState::Superseded { by_version: 2 })
    );

    // Deadline: version 2 is retried, never acked, and fails at its deadline.
    guarded("v2 failed", orchestrator.wait_finished(rollout)).await;
    assert_eq!(
        orchestrator.version_state(&ghost, 2),
        Some(DeliveryState::Failed {
            cause: FailureCause::DeadlinePassed
        })
    );
    let v2_attempts = orchestrator.version_attempts(&ghost, 2).expect("v2");
    assert!(v2_attempts >= 2, "v2 was retried: {v2_attempts} attempts");
    assert_eq!(
        orchestrator.version_attempts(&ghost, 1),
        Some(superseded_at_attempts),
        "no retry of v1 after it was superseded"
    );
    let status = orchestrator.rollout_status(rollout).expect("status");
    assert_eq!(status.counts.failed, 1);
    assert_eq!(status.n_acked, 0);
    assert_eq!(status.success_rate, Some(0.0));
    assert_eq!(status.slowest.len(), 1);
    assert!(!status.slowest[0].acked);
    let stored = orchestrator.store().schedule(&ghost, 2).expect("saved");
    assert_eq!(
        stored.state,
        DeliveryState::Failed {
            cause: FailureCause::DeadlinePassed
        }
    );
    assert_eq!(stored.attempts, v2_attempts);
    assert_eq!(
        orchestrator
            .store()
            .schedule(&ghost, 1)
            .expect("saved")
            .state,
        DeliveryState::Superseded { by_version: 2 }
    );
    // No further attempt of v2 after the deadline either.
    let after = orchestrator.counters().schedules_queued;
    orchestrator
        .roll_out(vec![schedule(
            &DeviceId::new("ghost-2").expect("id"),
            1,
            now,
        )])
        .await
        .expect("another device");
    guarded(
        "ghost-2 attempted twice",
        orchestrator.wait_until(|o| {
            o.version_attempts(&DeviceId::new("ghost-2").expect("id"), 1)
                .is_some_and(|n| n >= 2)
        }),
    )
    .await;
    assert!(orchestrator.counters().schedules_queued >= after + 2);
    assert_eq!(orchestrator.version_attempts(&ghost, 2), Some(v2_attempts));
    orchestrator.check_invariants();
    orchestrator.shutdown().await;
}

/// An orchestrator on a [`support::FakeLink`] of `transport`, with version 3 of a
/// day-long schedule rolled out to `device`: the orchestrator, the uplink to inject
/// device messages, the downlink the orchestrator sends to, and the roll-out.
async fn one_device_rollout(
    transport: TransportKind,
    device: &DeviceId,
) -> (
    Orch,
    mpsc::Sender<(DeviceId, Message)>,
    mpsc::Receiver<(DeviceId, Message)>,
    RolloutId,
) {
    let (uplink_tx, uplink) = mpsc::channel(16);
    let (downlink, downlink_rx) = mpsc::channel(16);
    let orchestrator = Orchestrator::builder(
        config(5_000),
        MemoryDispatchStore::new(),
        support::signer(),
        clock(),
    )
    .link(transport, support::FakeLink { uplink, downlink })
    .start()
    .expect("orchestrator");
    let rollout = orchestrator
        .roll_out(vec![schedule(device, 3, SystemClock.now())])
        .await
        .expect("roll-out");
    (orchestrator, uplink_tx, downlink_rx, rollout)
}

/// The next downlink message, which must be a schedule, with its addressee.
async fn next_schedule(
    downlink_rx: &mut mpsc::Receiver<(DeviceId, Message)>,
) -> (DeviceId, SignedSchedule) {
    let (to, message) = guarded("schedule sent", downlink_rx.recv())
        .await
        .expect("sent");
    let Message::Schedule(signed) = message else {
        panic!("expected a schedule, got {message:?}")
    };
    (to, signed)
}

/// The next downlink message, which must be a receipt, with its addressee.
async fn next_receipt(
    downlink_rx: &mut mpsc::Receiver<(DeviceId, Message)>,
) -> (DeviceId, Receipt) {
    let (to, message) = guarded("receipt", downlink_rx.recv())
        .await
        .expect("receipt");
    let Message::Receipt(receipt) = message else {
        panic!("expected a receipt, got {message:?}")
    };
    (to, receipt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_report_holds_the_receipt_back_until_it_is_resent() {
    let device = DeviceId::new("lossy-1").expect("id");
    let (orchestrator, uplink_tx, mut downlink_rx, _) =
        one_device_rollout(TransportKind::Mqtt, &device).await;
    let (_, signed) = next_schedule(&mut downlink_rx).await;
    let ack = |outbox_seq: u64, status: AckStatus| Ack {
        device: device.clone(),
        outbox_seq,
        schedule_id: signed.schedule.schedule_id,
        version: 3,
        status,
        at: SystemClock.now(),
    };
    let mut receipt_after = async |message: Message| {
        uplink_tx
            .send((device.clone(), message))
            .await
            .expect("inject");
        next_receipt(&mut downlink_rx).await.1.through_seq
    };
    assert_eq!(
        receipt_after(Message::Ack(ack(1, AckStatus::Received))).await,
        1
    );
    // The broker lost seq 2 (the `accepted` ack); seq 3 arrives. A receipt through 3
    // would make the agent drop seq 2 for good, so the receipt stays at 1.
    assert_eq!(
        receipt_after(Message::Ack(ack(3, AckStatus::Started))).await,
        1
    );
    // The agent, seeing no progress, re-sends its unreceipted outbox.
    assert_eq!(
        receipt_after(Message::Ack(ack(2, AckStatus::Accepted))).await,
        3
    );
    assert_eq!(
        orchestrator.store().acks_of(&device, 3),
        vec![AckStatus::Received, AckStatus::Started, AckStatus::Accepted],
        "every report is stored, in arrival order"
    );
    assert_eq!(orchestrator.counters().receipt_seqs_given_up, 0);
    orchestrator.check_invariants();
    orchestrator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_acks_is_stored_in_order_and_receipted_once() {
    let device = DeviceId::new("batch-1").expect("id");
    let (orchestrator, uplink_tx, mut downlink_rx, rollout) =
        one_device_rollout(TransportKind::Mqtt, &device).await;
    let (_, signed) = next_schedule(&mut downlink_rx).await;
    let entry = |outbox_seq: u64, status: AckStatus| AckEntry {
        outbox_seq,
        schedule_id: signed.schedule.schedule_id,
        version: 3,
        status,
        at: SystemClock.now(),
    };
    let batch = Message::Acks(AckBatch {
        device: device.clone(),
        acks: vec![
            entry(1, AckStatus::Received),
            entry(2, AckStatus::Accepted),
            entry(3, AckStatus::Started),
        ],
    });
    uplink_tx
        .send((device.clone(), batch))
        .await
        .expect("inject");
    let (to, receipt) = next_receipt(&mut downlink_rx).await;
    assert_eq!(to, device);
    assert_eq!(receipt.through_seq, 3, "one receipt covers the whole batch");
    assert_eq!(
        orchestrator.store().acks_of(&device, 3),
        vec![AckStatus::Received, AckStatus::Accepted, AckStatus::Started],
    );
    assert_eq!(orchestrator.counters().acks_new, 3);
    assert_eq!(
        orchestrator.version_state(&device, 3),
        Some(DeliveryState::Started)
    );
    assert_eq!(
        orchestrator
            .rollout_status(rollout)
            .expect("status")
            .n_acked,
        1
    );
    orchestrator.check_invariants();
    orchestrator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_ack_is_recorded_once_and_receipted_again() {
    let device = DeviceId::new("dup-1").expect("id");
    let (orchestrator, uplink_tx, mut downlink_rx, rollout) =
        one_device_rollout(TransportKind::Quic, &device).await;
    let (to, signed) = next_schedule(&mut downlink_rx).await;
    assert_eq!(to, device);
    assert!(support::signer().verifier().verify(&signed).is_ok());
    let ack = Ack {
        device: device.clone(),
        outbox_seq: 4,
        schedule_id: signed.schedule.schedule_id,
        version: 3,
        status: AckStatus::Received,
        at: SystemClock.now(),
    };
    for _ in 0..2 {
        uplink_tx
            .send((device.clone(), Message::Ack(ack.clone())))
            .await
            .expect("inject");
        let (to, receipt) = next_receipt(&mut downlink_rx).await;
        assert_eq!(to, device);
        assert_eq!(receipt.through_seq, 4, "the receipt covers the stored ack");
    }
    let counters = orchestrator.counters();
    assert_eq!(counters.acks_new, 1);
    assert_eq!(counters.acks_duplicate, 1);
    assert_eq!(
        orchestrator.store().acks_of(&device, 3),
        vec![AckStatus::Received]
    );
    let status = orchestrator.rollout_status(rollout).expect("status");
    assert_eq!(status.counts.received, 1);
    assert_eq!(status.n_acked, 1);
    assert_eq!(
        orchestrator.version_state(&device, 3),
        Some(DeliveryState::Received)
    );
    orchestrator.check_invariants();
    orchestrator.shutdown().await;
}

/// Mosquitto (or any broker) from `VOLTEX_MQTT_URL`; skipped when unset or unreachable
/// unless `VOLTEX_REQUIRE_SERVICES=1`, which turns both into failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_to_50_agents_over_an_external_broker_is_all_acked() {
    let required = std::env::var("VOLTEX_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    let Ok(url) = std::env::var("VOLTEX_MQTT_URL") else {
        assert!(
            !required,
            "VOLTEX_REQUIRE_SERVICES=1 but VOLTEX_MQTT_URL is not set"
        );
        println!("skipped: VOLTEX_MQTT_URL is not set");
        return;
    };
    let broker = MqttConfig::from_url(&url).expect("VOLTEX_MQTT_URL is mqtt://host[:port]");
    let reachable = tokio::net::TcpStream::connect((broker.host.as_str(), broker.port))
        .await
        .is_ok();
    if !reachable {
        assert!(
            !required,
            "VOLTEX_REQUIRE_SERVICES=1 but {url} is unreachable"
        );
        println!("skipped: {url} is unreachable");
        return;
    }
    // Unique ids per run: the broker keeps persistent sessions between runs.
    let run = format!("{}-{}", std::process::id(), SystemClock.now().0 % 1_000_000);
    let mut platform = broker.clone();
    platform.client_id = format!("voltex-test-platform-{run}");
    platform.inflight_max = 1_000;
    platform.request_channel_len = 16_384;
    platform.inbound_channel_len = 16_384;
    let link = mqtt_platform(platform).await.expect("platform link");
    let orchestrator = Orchestrator::builder(
        config(250),
        MemoryDispatchStore::new(),
        support::signer(),
        clock(),
    )
    .link(TransportKind::Mqtt, link)
    .start()
    .expect("orchestrator");
    let mut fleet_config = SimFleetConfig::new(50, support::signer().verifier());
    fleet_config.id_prefix = format!("mq{run}-");
    fleet_config.mqtt = Some(broker);
    let fleet = spawn_simulated_fleet(fleet_config).await.expect("fleet");
    register(&orchestrator, &fleet);
    roll_out_and_check(&orchestrator, &fleet, 1).await;
    fleet.shutdown().await;
    orchestrator.shutdown().await;
}
