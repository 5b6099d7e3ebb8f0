//! The schedule-read part of `voltex bench api`: `GET /api/v1/schedules/{device_id}`
//! (the seed's read of a device's schedule versions, with delivery status) through the
//! whole API — HTTP/1.1 keep-alive → JWT auth → database query → JSON — against the
//! same query made straight on the database ([`Db::schedule_history`]), closed loop,
//! in the same run.
//!
//! Seeding: [`DEVICES_PER_CLIENT`] devices per client, each with
//! [`VERSIONS_PER_DEVICE`] signed day schedules (96 quarter-hours) stored through
//! [`Db::insert_schedule`], as the orchestrator stores what it issues. The versions
//! lie in the past and their delivery deadlines have passed, so the orchestrator does
//! not try to deliver them while the reads run (no agent is connected). Each read asks
//! for a device drawn from a seeded stream and checks the answer: every version,
//! newest first.
//!
//! Three runs: both paths closed loop (each client sends its next read when the last
//! is answered: the most reads/s the path takes, with the queue that builds), then
//! the API open loop at [`READS_PER_S`] (latency from each read's due time, as for
//! the orders), which is where the issue's target — p95 ≤ [`TARGET_P95_MS`] ms — is
//! judged: a steady read load well above what operators' views and dashboards of a
//! 10,000-battery fleet ask, rather than saturation, where latency only measures the
//! clients' own queue.

// A benchmark measures wall-clock time and seeds history before now.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use voltex::db::{Db, NewDevice};
use voltex::server::RunningServer;
use voltex::server::auth::{Claims, JwtKeys, Role};
use voltex_dispatch::message::{Fallback, SchedulePeriod};
use voltex_dispatch::{DeviceId, Schedule, ScheduleId, ScheduleSigner};
use voltex_market::UtcNanos;

use crate::bench_api::{PACED_START_DELAY, Pacer, TIMER_TICK};

/// Devices seeded per client.
pub const DEVICES_PER_CLIENT: usize = 4;
/// Schedule versions stored per device (all returned by one read).
pub const VERSIONS_PER_DEVICE: u64 = 8;
/// The issue's target for a schedule read (ms).
pub const TARGET_P95_MS: f64 = 5.0;
/// Seeded versions end this long before now (their deadlines have passed).
const HISTORY_END_AGO_S: i64 = 86_400;
/// The open-loop read rate the target is judged at.
pub const READS_PER_S: u32 = 1_000;
/// Quarter-hours in one schedule.
const PERIODS_PER_SCHEDULE: u32 = 96;

/// Latencies of one path, and the reads whose answers were wrong.
struct ReadPath {
    name: &'static str,
    latency_us: Histogram<u64>,
    elapsed: Duration,
    n_reads: u64,
    failures: Vec<String>,
}

impl ReadPath {
    fn reads_per_s(&self) -> f64 {
        self.n_reads as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Seeds the devices and schedules, runs `n_reads` reads on each path with `n_clients`
/// concurrent clients, prints the table and the verdict.
///
/// # Errors
/// Seeding failures, client failures, or any read whose answer is wrong.
pub async fn measure(
    server: &RunningServer,
    base: &Arc<str>,
    secret: &str,
    n_clients: usize,
    n_reads: usize,
    seed: u64,
) -> Result<()> {
    let db = server.state.db.clone();
    let devices = seed_devices(&db, n_clients * DEVICES_PER_CLIENT).await?;
    let token = JwtKeys::from_secret(secret.as_bytes()).issue(&Claims {
        sub: "bench-operator".into(),
        role: Role::Operator,
        accounts: Vec::new(),
        iat: 0,
        exp: 4_000_000_000,
    })?;
    let reads_per_client = n_reads / n_clients;
    let direct = run_path(
        "direct",
        None,
        n_clients,
        reads_per_client,
        seed,
        &devices,
        {
            let db = db.clone();
            move |device: String| {
                let db = db.clone();
                async move {
                    let rows = db.schedule_history(&device, None, 100).await?;
                    Ok(rows.iter().map(|row| row.version).collect())
                }
            }
        },
    )
    .await?;
    // One pool: reqwest keeps a keep-alive connection per concurrent client.
    let http = reqwest::Client::new();
    let api_read = {
        let base = Arc::clone(base);
        move |device: String| {
            let (base, token, http) = (Arc::clone(&base), token.clone(), http.clone());
            async move { get_versions(&http, &base, &token, &device).await }
        }
    };
    let api = run_path(
        "api",
        None,
        n_clients,
        reads_per_client,
        seed,
        &devices,
        api_read.clone(),
    )
    .await?;
    let paced = run_path(
        "api paced",
        Some(READS_PER_S),
        n_clients,
        reads_per_client,
        seed.wrapping_add(1),
        &devices,
        api_read,
    )
    .await?;
    println!(
        "schedule reads, {n_clients} clients, {} devices x {VERSIONS_PER_DEVICE} versions of {PERIODS_PER_SCHEDULE} periods \
         (µs; closed loop from the send, \"api paced\" open loop at {READS_PER_S}/s from the due time):",
        devices.len()
    );
    println!(
        "  {:<22} {:>9} {:>7} {:>7} {:>7} {:>9} {:>10}",
        "path", "count", "p50", "p95", "p99", "max", "reads/s"
    );
    for path in [&direct, &api, &paced] {
        let h = &path.latency_us;
        println!(
            "  {:<22} {:>9} {:>7} {:>7} {:>7} {:>9} {:>10.0}",
            format!("{}/schedules", path.name),
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.95),
            h.value_at_quantile(0.99),
            h.max(),
            path.reads_per_s()
        );
    }
    for path in [&direct, &api, &paced] {
        if let Some(first) = path.failures.first() {
            bail!(
                "{}: {} schedule reads got a wrong answer; first: {first}",
                path.name,
                path.failures.len()
            );
        }
    }
    let paced_p95_ms = paced.latency_us.value_at_quantile(0.95) as f64 / 1000.0;
    // Kept up: the paced run ended within 3 % of its schedule's length.
    let kept_up = paced.reads_per_s() >= f64::from(READS_PER_S) * 0.97;
    println!(
        "  ratio direct/api: {:.2}x reads/s; api p50 {} µs vs direct p50 {} µs",
        direct.reads_per_s() / api.reads_per_s(),
        api.latency_us.value_at_quantile(0.5),
        direct.latency_us.value_at_quantile(0.5)
    );
    println!(
        "  issue target (GET schedule p95 ≤ {TARGET_P95_MS} ms, judged at {READS_PER_S} reads/s open loop): {} \
         (p95 {paced_p95_ms:.2} ms from due, achieved {:.0} reads/s; closed loop took {:.0} reads/s at p95 {:.2} ms)",
        if kept_up && paced_p95_ms <= TARGET_P95_MS {
            "met"
        } else {
            "NOT met"
        },
        paced.reads_per_s(),
        api.reads_per_s(),
        api.latency_us.value_at_quantile(0.95) as f64 / 1000.0
    );
    println!(
        "verified: every schedule read ({} api, {} direct) returned all {VERSIONS_PER_DEVICE} versions, newest first",
        api.n_reads + paced.n_reads,
        direct.n_reads
    );
    Ok(())
}

/// Registers `n_devices` devices and stores their schedule versions.
async fn seed_devices(db: &Db, n_devices: usize) -> Result<Vec<String>> {
    let signer = ScheduleSigner::from_seed(&rand::random::<[u8; 32]>());
    let now_ns = UtcNanos(i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos(),
    )?);
    let history_end = now_ns.plus_seconds(-HISTORY_END_AGO_S);
    let mut devices = Vec::with_capacity(n_devices);
    for index in 0..n_devices {
        let device_id = format!("bench-read-{index:05}");
        db.register_device(&NewDevice {
            device_id: device_id.clone(),
            name: format!("bench battery {index}"),
            public_key_hex: None,
            cert_fingerprint_sha256: None,
            mqtt_credential_hash: None,
            capacity_wh: 13_500,
            max_charge_w: 5_000,
            max_discharge_w: 5_000,
            registered_at_ns: history_end.plus_seconds(-30 * 86_400).0,
        })
        .await
        .with_context(|| format!("registering {device_id}"))?;
        let device = DeviceId::new(&device_id)?;
        for version in 1..=VERSIONS_PER_DEVICE {
            // One version a day, the newest a day before now.
            let days_before_end = (VERSIONS_PER_DEVICE - version) as i64;
            let issued = history_end.plus_seconds(-days_before_end * 86_400);
            let schedule = Schedule {
                device: device.clone(),
                schedule_id: ScheduleId((index as u128) << 32 | u128::from(version)),
                version,
                issued_at: issued,
                valid_from: issued,
                valid_until: issued.plus_seconds(86_400),
                randomize_start_s: 0,
                periods: (0..PERIODS_PER_SCHEDULE)
                    .map(|i| SchedulePeriod {
                        offset_s: i * 900,
                        target_w: if i % 2 == 0 { -2_000 } else { 3_000 },
                        ramp_s: 0,
                    })
                    .collect(),
                fallback: Fallback::Idle,
            };
            let signed = signer.sign(schedule)?;
            db.insert_schedule(&signed, issued.plus_seconds(60).0)
                .await
                .with_context(|| format!("storing {device_id} v{version}"))?;
        }
        devices.push(device_id);
    }
    Ok(devices)
}

/// One read through the API: the versions listed, in the order listed.
async fn get_versions(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    device: &str,
) -> Result<Vec<u64>> {
    let response = http
        .get(format!("{base}/api/v1/schedules/{device}"))
        .bearer_auth(token)
        .send()
        .await?;
    let status = response.status();
    if !status.is_success() {
        bail!("GET /api/v1/schedules/{device}: {status}");
    }
    // Only the versions: the client shares the machine with the server, so it skips
    // building the rest of each row.
    #[derive(serde::Deserialize)]
    struct Row {
        version: u64,
    }
    let rows: Vec<Row> = response.json().await?;
    Ok(rows.iter().map(|row| row.version).collect())
}

/// Runs `reads_per_client` reads on each of `n_clients` concurrent clients, each read
/// waiting for the previous one; closed loop, or open loop at `rate_per_s` in all
/// (latency from the due time; a read is never sent before it is due); devices come
/// from a seeded stream.
async fn run_path<F, Fut>(
    name: &'static str,
    rate_per_s: Option<u32>,
    n_clients: usize,
    reads_per_client: usize,
    seed: u64,
    devices: &[String],
    read: F,
) -> Result<ReadPath>
where
    F: Fn(String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Vec<u64>>> + Send,
{
    let expected: Vec<u64> = (1..=VERSIONS_PER_DEVICE).rev().collect();
    let devices: Arc<[String]> = devices.into();
    let start = tokio::time::Instant::now() + PACED_START_DELAY;
    let started = if rate_per_s.is_some() {
        start.into_std()
    } else {
        Instant::now()
    };
    let mut handles = Vec::with_capacity(n_clients);
    for client_idx in 0..n_clients {
        let read = read.clone();
        let devices = Arc::clone(&devices);
        let expected = expected.clone();
        let pacer = rate_per_s.map(|rate| Pacer::for_client(start, rate, client_idx, n_clients));
        handles.push(tokio::spawn(async move {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (client_idx as u64) << 20);
            let mut latency_us = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
            let mut failures = Vec::new();
            for read_idx in 0..reads_per_client {
                let device = devices[rng.random_range(0..devices.len())].clone();
                let sent = match &pacer {
                    Some(pacer) => {
                        // As for the orders: aim half a timer tick early, count from
                        // the earlier of due and send.
                        let due = pacer.due(read_idx);
                        tokio::time::sleep_until(due - TIMER_TICK / 2).await;
                        due.into_std().min(Instant::now())
                    }
                    None => Instant::now(),
                };
                let outcome = read(device.clone()).await;
                let elapsed_us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                latency_us.saturating_record(elapsed_us.max(1));
                match outcome {
                    Ok(versions) if versions == expected => {}
                    Ok(versions) => failures.push(format!("{device}: versions {versions:?}")),
                    Err(error) => failures.push(format!("{device}: {error:#}")),
                }
            }
            anyhow::Ok((latency_us, failures))
        }));
    }
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut failures = Vec::new();
    for handle in handles {
        let (client_latency, client_failures) = handle.await.context("read client panicked")??;
        latency_us.add(&client_latency)?;
        failures.extend(client_failures);
    }
    Ok(ReadPath {
        name,
        n_reads: latency_us.len(),
        latency_us,
        elapsed: started.elapsed(),
        failures,
    })
}
