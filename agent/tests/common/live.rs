//! Fixtures of the tests that run an agent against a real platform link: an MQTT
//! platform on an embedded broker, uplink collection with a deadline, the receipt for
//! everything seen, and schedules that run now on the real clock.

use std::time::Duration;

use voltex_agent::runtime::SystemClock;
use voltex_dispatch::message::Schedule;
use voltex_dispatch::transport::embedded_broker::{EmbeddedBroker, free_port};
use voltex_dispatch::transport::{
    MqttConfig, MqttPlatformLink, PlatformLink, mqtt_platform, start_embedded_broker,
};
use voltex_dispatch::{Message, Receipt};
use voltex_market::UtcNanos;

use super::{NS, device};

/// An embedded broker on a free port, its `mqtt://` URL, and a platform link connected
/// to it as `client_id`. Keep the broker alive for the test's length.
pub async fn platform_on_embedded_broker(
    client_id: &str,
) -> (EmbeddedBroker, String, MqttPlatformLink) {
    let port = free_port().expect("port");
    let broker = start_embedded_broker(port).expect("broker");
    let url = format!("mqtt://127.0.0.1:{port}");
    let mut config = MqttConfig::from_url(&url).expect("url");
    config.client_id = client_id.into();
    let platform = mqtt_platform(config).await.expect("platform");
    for _ in 0..100 {
        if platform.is_connected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        platform.is_connected(),
        "platform connects to the embedded broker"
    );
    (broker, url, platform)
}

/// Collects uplink messages for `wait`, or until `done` says enough.
pub async fn collect(
    platform: &mut impl PlatformLink,
    wait: Duration,
    mut done: impl FnMut(&[Message]) -> bool,
) -> Vec<Message> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline && !done(&seen) {
        match tokio::time::timeout_at(deadline, platform.recv()).await {
            Ok(Ok((_, message))) => seen.push(message),
            Ok(Err(error)) => panic!("platform link: {error}"),
            Err(_) => break,
        }
    }
    seen
}

/// Sends the fixture device the receipt for the highest outbox seq among `seen` (acks
/// and telemetry samples) and returns that seq.
pub async fn receipt_for_all(platform: &mut impl PlatformLink, seen: &[Message]) -> u64 {
    let through_seq = seen
        .iter()
        .flat_map(|m| match m {
            Message::Telemetry(b) => b.samples.iter().map(|s| s.outbox_seq).collect(),
            _ => m.acks().map(|a| a.outbox_seq).collect::<Vec<_>>(),
        })
        .max()
        .expect("some outbox seq seen");
    platform
        .send_to(
            &device(),
            &Message::Receipt(Receipt {
                device: device(),
                through_seq,
            }),
        )
        .await
        .expect("receipt");
    through_seq
}

/// `schedule` moved onto the real clock: issued 20 s ago, valid from 10 s ago for its
/// first hour.
pub fn running_now(mut schedule: Schedule) -> Schedule {
    let now = SystemClock::new(1).now_wall();
    schedule.issued_at = UtcNanos(now.0 - 20 * NS);
    schedule.valid_from = UtcNanos(now.0 - 10 * NS);
    schedule.valid_until = UtcNanos(now.0 + 3_590 * NS);
    schedule
}
