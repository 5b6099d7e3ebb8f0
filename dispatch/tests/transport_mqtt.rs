//! MQTT transport over real brokers: Mosquitto (at `VOLTEX_MQTT_URL`, default
//! `mqtt://127.0.0.1:1883`) and the embedded rumqttd.
//!
//! If Mosquitto is unreachable the Mosquitto cases print why and pass, unless
//! `VOLTEX_REQUIRE_SERVICES=1`, in which case they fail. Every case uses fresh device and
//! platform client ids, so parallel cases and earlier runs (Mosquitto persists sessions)
//! do not interfere. Sends are repeated until received, as the platform and the agent do,
//! because a subscription becomes active asynchronously after connecting.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio::time::timeout;
use voltex_dispatch::codec::encode_binary;
use voltex_dispatch::message::*;
use voltex_dispatch::signing::ScheduleSigner;
use voltex_dispatch::topics::{TopicKind, topic};
use voltex_dispatch::transport::embedded_broker::free_port;
use voltex_dispatch::transport::{
    DeviceLink, EmbeddedBroker, Inbound, MqttConfig, MqttDeviceLink, MqttPlatformLink,
    PlatformLink, mqtt_device, mqtt_platform, start_embedded_broker,
};
use voltex_market::UtcNanos;

const STEP: Duration = Duration::from_millis(300);
const PATIENCE: Duration = Duration::from_secs(20);

fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::UNIX_EPOCH
        .elapsed()
        .map_or(0, |d| d.as_nanos() % 1_000_000_000_000);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

fn mosquitto() -> Option<MqttConfig> {
    let url = std::env::var("VOLTEX_MQTT_URL").unwrap_or("mqtt://127.0.0.1:1883".into());
    let config = MqttConfig::from_url(&url).expect("VOLTEX_MQTT_URL must be mqtt://host:port");
    let reachable = std::net::TcpStream::connect((config.host.as_str(), config.port)).is_ok();
    if reachable {
        return Some(config);
    }
    let required = std::env::var("VOLTEX_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "Mosquitto at {url} unreachable and VOLTEX_REQUIRE_SERVICES=1"
    );
    eprintln!("SKIPPED: Mosquitto at {url} unreachable (set VOLTEX_REQUIRE_SERVICES=1 to fail)");
    None
}

fn embedded() -> MqttConfig {
    static BROKER: OnceLock<EmbeddedBroker> = OnceLock::new();
    let broker = BROKER.get_or_init(|| {
        start_embedded_broker(free_port().expect("free port")).expect("embedded broker starts")
    });
    MqttConfig::new("127.0.0.1", broker.addr().port())
}

fn with_fresh_ids(mut config: MqttConfig) -> (MqttConfig, DeviceId) {
    config.client_id = unique("platform");
    config.reconnect.delay_max = Duration::from_secs(1);
    (config, DeviceId::new(unique("bat")).unwrap())
}

/// Connects with `clean_session = true` under the test's client ids, so Mosquitto (which
/// persists sessions) does not keep them after the test.
async fn forget_sessions(config: &MqttConfig, device: &DeviceId) {
    for client_id in [config.client_id.as_str(), device.as_str()] {
        let mut options = MqttOptions::new(client_id, config.host.clone(), config.port);
        options.set_clean_session(true);
        let (client, mut eventloop) = AsyncClient::new(options, 4);
        let _ = timeout(Duration::from_secs(2), async {
            while let Ok(event) = eventloop.poll().await {
                if matches!(event, rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) {
                    let _ = client.try_disconnect();
                }
                if matches!(
                    event,
                    rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)
                ) {
                    break;
                }
            }
        })
        .await;
    }
}

fn schedule(device: &DeviceId, version: u64) -> Message {
    let signer = ScheduleSigner::from_seed(&[7; 32]);
    let schedule = Schedule {
        device: device.clone(),
        schedule_id: ScheduleId(42),
        version,
        issued_at: UtcNanos(0),
        valid_from: UtcNanos(0),
        valid_until: UtcNanos(3_600_000_000_000),
        randomize_start_s: 0,
        periods: vec![SchedulePeriod {
            offset_s: 0,
            target_w: -2_000,
            ramp_s: 0,
        }]
        .into(),
        fallback: Fallback::Idle,
    };
    Message::Schedule(signer.sign(schedule).unwrap())
}

fn receipt(device: &DeviceId, through_seq: u64) -> Message {
    Message::Receipt(Receipt {
        device: device.clone(),
        through_seq,
    })
}

fn ack(device: &DeviceId) -> Message {
    Message::Ack(Ack {
        device: device.clone(),
        outbox_seq: 1,
        schedule_id: ScheduleId(42),
        version: 1,
        status: AckStatus::Received,
        at: UtcNanos(5),
    })
}

/// The platform sends `message` every STEP until the device receives a message.
async fn deliver(
    platform: &mut MqttPlatformLink,
    device_link: &mut MqttDeviceLink,
    message: &Message,
) -> Inbound {
    let started = tokio::time::Instant::now();
    loop {
        platform
            .send_to(device_link.device(), message)
            .await
            .unwrap();
        if let Ok(inbound) = timeout(STEP, device_link.recv()).await {
            return inbound.unwrap();
        }
        assert!(
            started.elapsed() < PATIENCE,
            "device never received {message:?}"
        );
    }
}

/// The device sends `message` every STEP until the platform receives a message.
async fn report(
    platform: &mut MqttPlatformLink,
    device_link: &mut MqttDeviceLink,
    message: &Message,
) -> (DeviceId, Message) {
    let started = tokio::time::Instant::now();
    loop {
        device_link.send(message).await.unwrap();
        if let Ok(received) = timeout(STEP, platform.recv()).await {
            return received.unwrap();
        }
        assert!(
            started.elapsed() < PATIENCE,
            "platform never received {message:?}"
        );
    }
}

/// Next message that is not `duplicate` (earlier re-sends of it may still be queued);
/// duplicates are confirmed.
async fn recv_other_than(device_link: &mut MqttDeviceLink, duplicate: &Message) -> Inbound {
    loop {
        let inbound = timeout(PATIENCE, device_link.recv())
            .await
            .expect("a message")
            .unwrap();
        if &inbound.message != duplicate {
            return inbound;
        }
        device_link.confirm(inbound.delivery).await.unwrap();
    }
}

async fn schedule_confirm_ack_round_trip(config: MqttConfig, device: DeviceId) {
    let mut platform = mqtt_platform(config.clone()).await.unwrap();
    let mut device_link = mqtt_device(config, device.clone()).await.unwrap();
    let sent = schedule(&device, 1);
    let inbound = deliver(&mut platform, &mut device_link, &sent).await;
    assert_eq!(inbound.message, sent);
    device_link.confirm(inbound.delivery).await.unwrap();
    let (from, received) = report(&mut platform, &mut device_link, &ack(&device)).await;
    assert_eq!((from, received), (device.clone(), ack(&device)));
    assert!(device_link.is_connected() && platform.is_connected());
}

/// The device drops its link without confirming: the broker must redeliver the schedule to
/// the next connection with the same client id (manual acks + persistent session).
async fn unconfirmed_schedule_is_redelivered(config: MqttConfig, device: DeviceId) {
    let mut platform = mqtt_platform(config.clone()).await.unwrap();
    let mut first = mqtt_device(config.clone(), device.clone()).await.unwrap();
    let sent = schedule(&device, 1);
    let inbound = deliver(&mut platform, &mut first, &sent).await;
    assert_eq!(inbound.message, sent);
    drop(inbound); // not confirmed: not stored
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut second = mqtt_device(config, device.clone()).await.unwrap();
    let redelivered = timeout(PATIENCE, second.recv())
        .await
        .expect("redelivery")
        .unwrap();
    assert_eq!(redelivered.message, sent);
    second.confirm(redelivered.delivery).await.unwrap();
}

/// A schedule published while the device is offline reaches it when it reconnects; a
/// receipt published then does not (receipts go at QoS 0: the reconnecting agent re-sends
/// its outbox and earns a fresh one, so a queued receipt would only be stale load).
async fn schedule_sent_while_offline_arrives_after_reconnect(config: MqttConfig, device: DeviceId) {
    let mut platform = mqtt_platform(config.clone()).await.unwrap();
    let mut first = mqtt_device(config.clone(), device.clone()).await.unwrap();
    // Establish the session and its subscription.
    let inbound = deliver(&mut platform, &mut first, &receipt(&device, 0)).await;
    first.confirm(inbound.delivery).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = schedule(&device, 2);
    // Queued ahead of the schedule if it were queued at all.
    platform
        .send_to(&device, &receipt(&device, 7))
        .await
        .unwrap();
    platform.send_to(&device, &sent).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut second = mqtt_device(config, device.clone()).await.unwrap();
    // Earlier probe receipts still in flight at the disconnect may come first.
    let inbound = recv_other_than(&mut second, &receipt(&device, 0)).await;
    assert_eq!(
        inbound.message, sent,
        "the schedule, not the receipt sent while offline"
    );
    second.confirm(inbound.delivery).await.unwrap();
}

/// Garbage and a schedule for another device on this device's schedule topic are dropped
/// and counted; the valid schedule after them is returned.
async fn corrupt_frames_are_dropped_not_returned(config: MqttConfig, device: DeviceId) {
    let mut platform = mqtt_platform(config.clone()).await.unwrap();
    let mut device_link = mqtt_device(config.clone(), device.clone()).await.unwrap();
    let inbound = deliver(&mut platform, &mut device_link, &receipt(&device, 0)).await;
    device_link.confirm(inbound.delivery).await.unwrap();

    let (raw, mut eventloop) = AsyncClient::new(
        MqttOptions::new(unique("raw"), config.host.clone(), config.port),
        16,
    );
    let driver = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let schedule_topic = topic(&device, TopicKind::Schedule);
    let other = DeviceId::new(unique("other")).unwrap();
    let foreign = encode_binary(&schedule(&other, 1)).unwrap();
    for payload in [
        b"garbage".to_vec(),
        vec![b'V', 1, 0xff, 0xff],
        vec![],
        foreign,
    ] {
        raw.publish(schedule_topic.clone(), QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    let valid = schedule(&device, 3);
    let encoded = encode_binary(&valid).unwrap();
    raw.publish(schedule_topic, QoS::AtLeastOnce, false, encoded)
        .await
        .unwrap();

    let inbound = recv_other_than(&mut device_link, &receipt(&device, 0)).await;
    assert_eq!(inbound.message, valid);
    device_link.confirm(inbound.delivery).await.unwrap();
    let stats = device_link.stats();
    assert_eq!(stats.dropped_undecodable, 3, "{stats:?}");
    assert_eq!(stats.dropped_mismatched, 1, "{stats:?}");
    driver.abort();
}

/// Connects a plain client under `client_id` with a persistent session, subscribes to
/// `filter` (QoS 1) if one is given, then disconnects; returns the connection's
/// `session_present`.
async fn leave_persistent_session(
    config: &MqttConfig,
    client_id: &str,
    filter: Option<&str>,
) -> bool {
    let mut options = MqttOptions::new(client_id, config.host.clone(), config.port);
    options.set_clean_session(false);
    let (client, mut eventloop) = AsyncClient::new(options, 4);
    if let Some(filter) = filter {
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe queued");
    }
    let mut session_present = None;
    timeout(PATIENCE, async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(connack))) => {
                    session_present = Some(connack.session_present);
                    if filter.is_none() {
                        client.try_disconnect().expect("disconnect queued");
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    client.try_disconnect().expect("disconnect queued");
                }
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(error) => panic!("plain client of {client_id}: {error}"),
            }
        }
    })
    .await
    .expect("connect and disconnect in time");
    session_present.expect("a ConnAck")
}

/// The broker reports a stored session (`session_present`) that holds none of the
/// device's subscriptions (here left by a plain client under its id; rumqttd also does
/// this after a duplicate-client-id reconnect in a connect storm): the link subscribes on
/// every connection, so schedules still arrive.
async fn stored_session_without_subscriptions_still_delivers(config: MqttConfig, device: DeviceId) {
    assert!(!leave_persistent_session(&config, device.as_str(), None).await);
    // The broker kept that session: the link's connection will be told `session_present`.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(leave_persistent_session(&config, device.as_str(), None).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    schedule_confirm_ack_round_trip(config, device).await;
}

/// A plain MQTT client subscribed to one filter, recording every topic it receives.
struct RawSubscriber {
    _client: AsyncClient,
    topics: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl RawSubscriber {
    /// Connects (clean session) and returns once the broker has acknowledged the
    /// subscription.
    async fn subscribe(config: &MqttConfig, filter: &str) -> RawSubscriber {
        let mut options = MqttOptions::new(unique("raw"), config.host.clone(), config.port);
        options.set_clean_session(true);
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        client
            .subscribe(filter, QoS::AtMostOnce)
            .await
            .expect("subscribe queued");
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let (topics_tx, topics) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut subscribed_tx = Some(subscribed_tx);
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish))) => {
                        if topics_tx.send(publish.topic).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(STEP).await,
                }
            }
        });
        timeout(PATIENCE, subscribed_rx)
            .await
            .expect("subscription acknowledged in time")
            .expect("event loop alive");
        RawSubscriber {
            _client: client,
            topics,
            seen: Vec::new(),
        }
    }

    /// Whether `topic` has arrived (waiting at most `wait` for more).
    async fn has_seen(&mut self, topic: &str, wait: Duration) -> bool {
        if self.seen.iter().any(|t| t == topic) {
            return true;
        }
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(received)) = tokio::time::timeout_at(deadline, self.topics.recv()).await {
            self.seen.push(received);
            if self.seen.iter().any(|t| t == topic) {
                return true;
            }
        }
        false
    }
}

/// Publishes `topic` every [`STEP`] until every subscriber in `to` has received it.
async fn publish_until_received(
    publisher: &AsyncClient,
    topic: &str,
    to: &mut [&mut RawSubscriber],
) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        publisher
            .publish(topic, QoS::AtMostOnce, false, b"x".to_vec())
            .await
            .expect("publish queued");
        let mut all = true;
        for subscriber in to.iter_mut() {
            all &= subscriber.has_seen(topic, STEP).await;
        }
        if all {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{topic} did not reach every subscriber within {PATIENCE:?}"
        );
    }
}

/// A topic reaches exactly the filters that match it, whether the filter was subscribed
/// before or after the topic was first published, with or without wildcards. (The
/// embedded broker's router is patched to look exact filters up rather than scan them;
/// see `vendor/rumqttd/VOLTEX-PATCH.md`.)
async fn exact_and_wildcard_filters_route_in_any_order(config: MqttConfig, device: DeviceId) {
    let base = format!("voltex-test/{device}");
    let (topic_a, topic_b) = (format!("{base}/a/x"), format!("{base}/b/x"));
    let mut publisher_options =
        MqttOptions::new(unique("raw-pub"), config.host.clone(), config.port);
    publisher_options.set_clean_session(true);
    let (publisher, mut publisher_loop) = AsyncClient::new(publisher_options, 16);
    tokio::spawn(async move {
        loop {
            if publisher_loop.poll().await.is_err() {
                tokio::time::sleep(STEP).await;
            }
        }
    });

    let mut wildcard = RawSubscriber::subscribe(&config, &format!("{base}/+/x")).await;
    publish_until_received(&publisher, &topic_a, &mut [&mut wildcard]).await;
    // An exact filter subscribed after its topic is known, one before.
    let mut exact_a = RawSubscriber::subscribe(&config, &topic_a).await;
    let mut exact_b = RawSubscriber::subscribe(&config, &topic_b).await;
    publish_until_received(&publisher, &topic_a, &mut [&mut exact_a, &mut wildcard]).await;
    publish_until_received(&publisher, &topic_b, &mut [&mut exact_b, &mut wildcard]).await;
    // A wildcard filter subscribed after both topics are known.
    let mut everything = RawSubscriber::subscribe(&config, &format!("{base}/#")).await;
    publish_until_received(&publisher, &topic_a, &mut [&mut everything, &mut exact_a]).await;
    publish_until_received(&publisher, &topic_b, &mut [&mut everything, &mut exact_b]).await;

    // Nothing reached a filter it does not match.
    assert!(
        !exact_a.has_seen(&topic_b, STEP).await,
        "{:?}",
        exact_a.seen
    );
    assert!(
        !exact_b.has_seen(&topic_a, STEP).await,
        "{:?}",
        exact_b.seen
    );
    assert!(
        wildcard
            .seen
            .iter()
            .chain(&everything.seen)
            .all(|t| t == &topic_a || t == &topic_b)
    );
}

/// A client whose in-flight window (4) is far smaller than what is queued (200 QoS 1
/// publishes, queued at once) delivers each exactly once and in order. The event loop
/// takes queued requests into one socket write only while the window has room (see
/// `vendor/rumqttc/VOLTEX-PATCH.md`): this is the path that batching changed.
async fn queued_publishes_beyond_the_inflight_window_arrive_once_in_order(
    config: MqttConfig,
    device: DeviceId,
) {
    const N_PUBLISHES: u32 = 200;
    let topic = format!("voltex-test/{device}/seq");
    let mut subscriber_options =
        MqttOptions::new(unique("seq-sub"), config.host.clone(), config.port);
    subscriber_options.set_clean_session(true);
    let (subscriber, mut subscriber_loop) = AsyncClient::new(subscriber_options, 16);
    subscriber
        .subscribe(&topic, QoS::AtLeastOnce)
        .await
        .expect("subscribe queued");
    let (payloads_tx, mut payloads) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        loop {
            match subscriber_loop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish))) => {
                    if payloads_tx.send(publish.payload.to_vec()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(STEP).await,
            }
        }
    });

    let mut publisher_options =
        MqttOptions::new(unique("seq-pub"), config.host.clone(), config.port);
    publisher_options.set_clean_session(true);
    publisher_options.set_inflight(4);
    let (publisher, mut publisher_loop) = AsyncClient::new(publisher_options, 256);
    tokio::spawn(async move {
        loop {
            if publisher_loop.poll().await.is_err() {
                tokio::time::sleep(STEP).await;
            }
        }
    });
    // The subscription is live once a probe gets through.
    let probe = b"probe".to_vec();
    timeout(PATIENCE, async {
        loop {
            publisher
                .publish(&topic, QoS::AtLeastOnce, false, probe.clone())
                .await
                .expect("probe queued");
            if let Ok(Some(payload)) = timeout(STEP, payloads.recv()).await
                && payload == probe
            {
                break;
            }
        }
    })
    .await
    .expect("the subscription becomes live");

    for seq in 0..N_PUBLISHES {
        publisher
            .publish(&topic, QoS::AtLeastOnce, false, seq.to_be_bytes().to_vec())
            .await
            .expect("publish queued");
    }
    let mut received = Vec::new();
    timeout(PATIENCE, async {
        while received.len() < N_PUBLISHES as usize {
            let payload = payloads.recv().await.expect("subscriber running");
            if payload != probe {
                received.push(u32::from_be_bytes(
                    payload.try_into().expect("4-byte payload"),
                ));
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} of {N_PUBLISHES} publishes arrived", received.len()));
    assert_eq!(received, (0..N_PUBLISHES).collect::<Vec<_>>());
    // Nothing more arrives (no duplicate beyond the probes).
    while let Ok(Some(payload)) = timeout(STEP, payloads.recv()).await {
        assert_eq!(payload, probe, "a publish arrived twice");
    }
}

macro_rules! on_both_brokers {
    ($($case:ident),* $(,)?) => {
        mod mosquitto {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(config) = super::mosquitto() {
                        let (config, device) = super::with_fresh_ids(config);
                        super::$case(config.clone(), device.clone()).await;
                        super::forget_sessions(&config, &device).await;
                    }
                }
            )*
        }
        mod embedded_rumqttd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (config, device) = super::with_fresh_ids(super::embedded());
                    super::$case(config, device).await;
                }
            )*
        }
    };
}

on_both_brokers!(
    schedule_confirm_ack_round_trip,
    unconfirmed_schedule_is_redelivered,
    schedule_sent_while_offline_arrives_after_reconnect,
    corrupt_frames_are_dropped_not_returned,
    exact_and_wildcard_filters_route_in_any_order,
    stored_session_without_subscriptions_still_delivers,
    queued_publishes_beyond_the_inflight_window_arrive_once_in_order,
);

/// rumqttd keeps every message of a topic in memory until that topic's log holds
/// `segment_size_max` × (`segment_count_max` + 1) bytes. The embedded broker keeps a short
/// tail of a device's downlink: a device away while 300 schedules of 1 KiB were
/// published to it gets the newest few on its return, in order, not all 300 (with
/// rumqttd's per-filter logs of 64 MiB × 9 every message stayed in memory for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_keeps_a_bounded_tail_for_a_device_away() {
    const N_PUBLISHES: u32 = 300;
    const PAYLOAD_BYTES: usize = 1_024;
    let (config, device) = with_fresh_ids(embedded());
    let topic = topic(&device, TopicKind::Schedule);
    let away_id = unique("away");

    // 1. The device's persistent session subscribes, then leaves.
    leave_persistent_session(&config, &away_id, Some(&topic)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 2. 300 publishes of 1 KiB while it is away, each acknowledged by the broker.
    let mut publisher_options =
        MqttOptions::new(unique("tail-pub"), config.host.clone(), config.port);
    publisher_options.set_clean_session(true);
    let (publisher, mut publisher_loop) = AsyncClient::new(publisher_options, 512);
    for seq in 0..N_PUBLISHES {
        let mut payload = vec![0u8; PAYLOAD_BYTES];
        payload[..4].copy_from_slice(&seq.to_be_bytes());
        publisher
            .publish(&topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish queued");
    }
    let mut acked = 0;
    timeout(PATIENCE, async {
        while acked < N_PUBLISHES {
            match publisher_loop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(error) => panic!("publisher: {error}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{acked} of {N_PUBLISHES} publishes acknowledged"));

    // 3. The device returns to its session: what the broker kept arrives.
    let mut options = MqttOptions::new(away_id, config.host.clone(), config.port);
    options.set_clean_session(false);
    let (_client, mut eventloop) = AsyncClient::new(options, 4);
    let mut received = Vec::new();
    let mut last_seen = None;
    // Until nothing new for 2 s after the newest publish arrived (or PATIENCE).
    let _ = timeout(PATIENCE, async {
        loop {
            match timeout(Duration::from_secs(2), eventloop.poll()).await {
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish)))) => {
                    let seq = u32::from_be_bytes(
                        publish.payload[..4].try_into().expect("4-byte sequence"),
                    );
                    received.push(seq);
                    last_seen = Some(seq);
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => panic!("returning subscriber: {error}"),
                Err(_) if last_seen == Some(N_PUBLISHES - 1) => return,
                Err(_) => {}
            }
        }
    })
    .await;
    assert_eq!(
        last_seen,
        Some(N_PUBLISHES - 1),
        "the newest publish arrives ({received:?})"
    );
    assert!(
        received.windows(2).all(|pair| pair[0] < pair[1]),
        "in order, once each: {received:?}"
    );
    assert!(
        received.len() < 32,
        "{} of {N_PUBLISHES} publishes were kept for the device",
        received.len()
    );
}

#[tokio::test]
async fn device_link_refuses_downlink_kinds_and_foreign_devices() {
    let config = MqttConfig::new("127.0.0.1", 9); // never reached: checks come first
    let device = DeviceId::new("bat-1").unwrap();
    let mut link = mqtt_device(config.clone(), device.clone()).await.unwrap();
    assert!(link.send(&schedule(&device, 1)).await.is_err());
    let other = DeviceId::new("bat-2").unwrap();
    assert!(link.send(&ack(&other)).await.is_err());
    let mut platform = mqtt_platform(config).await.unwrap();
    assert!(platform.send_to(&device, &ack(&device)).await.is_err());
    assert!(
        platform
            .send_to(&other, &schedule(&device, 1))
            .await
            .is_err()
    );
}
