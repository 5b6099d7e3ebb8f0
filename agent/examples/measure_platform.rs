//! A minimal platform for measuring the agent: over an MQTT broker it sends the device a
//! signed schedule every `SCHEDULE_EVERY_S` seconds (a new version each time) and a
//! receipt for every ack and telemetry batch it gets, for `RUN_FOR_S` seconds, then
//! prints what it saw. `--print-key` prints the public key to put in the agent config.
//!
//! ```sh
//! cargo run -p voltex-agent --example measure_platform -- --print-key
//! cargo run -p voltex-agent --example measure_platform -- mqtt://127.0.0.1:1883 bat-0001 300 60
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use voltex_dispatch::message::{DeviceId, Fallback, Schedule, ScheduleId, SchedulePeriod};
use voltex_dispatch::transport::{MqttConfig, PlatformLink, mqtt_platform};
use voltex_dispatch::{Message, Receipt, ScheduleSigner};
use voltex_market::UtcNanos;

const SEED: [u8; 32] = [7; 32];

// A measurement tool reads the real clock.
#[allow(clippy::disallowed_methods)]
fn now() -> UtcNanos {
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(0));
    UtcNanos(ns)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let signer = ScheduleSigner::from_seed(&SEED);
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--print-key") {
        let key: String = signer
            .verifier()
            .public_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        println!("{key}");
        return Ok(());
    }
    let [url, device, every_s, run_for_s] = args.as_slice() else {
        anyhow::bail!("usage: measure_platform URL DEVICE SCHEDULE_EVERY_S RUN_FOR_S");
    };
    let device = DeviceId::new(device.clone())?;
    let every = Duration::from_secs(every_s.parse().context("SCHEDULE_EVERY_S")?);
    let run_for = Duration::from_secs(run_for_s.parse().context("RUN_FOR_S")?);
    let mut config = MqttConfig::from_url(url)?;
    config.client_id = "measure-platform".into();
    let mut link = mqtt_platform(config).await?;
    let end = tokio::time::Instant::now() + run_for;
    let mut next_schedule = tokio::time::Instant::now();
    let (mut version, mut acks, mut samples, mut heartbeats) = (0u64, 0u64, 0u64, 0u64);
    while tokio::time::Instant::now() < end {
        if tokio::time::Instant::now() >= next_schedule {
            version += 1;
            next_schedule += every;
            let start = now();
            let periods = (0..4)
                .map(|i| SchedulePeriod {
                    offset_s: i * 75,
                    target_w: if i % 2 == 0 { -2_000 } else { 1_500 },
                    ramp_s: 5,
                })
                .collect();
            let schedule = Schedule {
                device: device.clone(),
                schedule_id: ScheduleId(1),
                version,
                issued_at: start,
                valid_from: start,
                valid_until: start.plus_seconds(300),
                randomize_start_s: 10,
                periods,
                fallback: Fallback::Idle,
            };
            let signed = signer.sign(schedule)?;
            link.send_to(&device, &Message::Schedule(signed)).await?;
        }
        let wait = next_schedule.min(end);
        let Ok(received) = tokio::time::timeout_at(wait, link.recv()).await else {
            continue;
        };
        let (from, message) = received?;
        let through_seq = match &message {
            Message::Ack(_) | Message::Acks(_) => {
                acks += message.ack_count() as u64;
                message.acks().map(|ack| ack.outbox_seq).max().unwrap_or(0)
            }
            Message::Telemetry(batch) => {
                samples += batch.samples.len() as u64;
                batch
                    .samples
                    .iter()
                    .map(|s| s.outbox_seq)
                    .max()
                    .unwrap_or(0)
            }
            _ => {
                heartbeats += 1;
                continue;
            }
        };
        let receipt = Receipt {
            device: from.clone(),
            through_seq,
        };
        link.send_to(&from, &Message::Receipt(receipt)).await?;
    }
    println!("schedules={version} acks={acks} samples={samples} heartbeats={heartbeats}");
    Ok(())
}
