//! `voltex bench rollout`: a schedule roll-out to N simulated agents through the real
//! orchestrator, from `roll_out` (validate, sign, persist in memory, send) until every
//! agent has acknowledged its version.
//!
//! The agents are the real `voltex-agent` runtime (in-memory store, simulated
//! battery, accelerated clock: [`voltex::server::fleet::spawn_simulated_fleet`]), each
//! with its own connection: MQTT through the embedded rumqttd, a Mosquitto started by
//! the bench, or a broker URL; or QUIC with certificates from a fresh CA. Phases:
//! 1. **connect**: start the broker or endpoint and N agents; their links connect in
//!    the background.
//! 2. **warm-up** roll-out (version 1): retried until every agent acked, so every link
//!    is up after it; not timed as a result (first deliveries also wait for
//!    connections and subscriptions to settle). The fleet's connected counter is not
//!    waited for: an agent updates it when its runtime next looks at its link, and
//!    these quiet agents look once per tick, a real minute.
//! 3. **rounds** (versions 2..): each timed from the `roll_out` call to the last first
//!    ack; per-device issue-to-ack latency goes into an HDR histogram; prints the
//!    median, p99 and max, and the round time against the 1 s target.
//!
//! Timings are printed, never asserted. Everything shares one process (and, on a small
//! machine, the same cores): agents, broker, orchestrator.

// Benchmarks measure wall time: the one place the clock seam is crossed on purpose.
#![allow(clippy::disallowed_methods)]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use voltex::server::clock::{Clock, SystemClock};
use voltex::server::fleet::{
    MemoryDispatchStore, Orchestrator, OrchestratorConfig, RolloutId, SimFleet, SimFleetConfig,
    SimQuic, TransportKind, spawn_simulated_fleet,
};
use voltex_dispatch::message::{Fallback, SchedulePeriod};
use voltex_dispatch::transport::embedded_broker::free_port;
use voltex_dispatch::transport::{
    MqttConfig, QuicPlatformConfig, certs, mqtt_platform, quic_platform, start_embedded_broker,
};
use voltex_dispatch::{DeviceId, Schedule, ScheduleId, ScheduleSigner};
use voltex_market::UtcNanos;

/// Transport under test.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutTransport {
    /// MQTT through a broker (see `--broker`).
    Mqtt,
    /// QUIC with mutual TLS.
    Quic,
}

/// Arguments of `voltex bench rollout`.
#[derive(clap::Args, Debug)]
pub struct RolloutBenchArgs {
    /// Simulated agents (default 10,000; 500 with --quick).
    #[arg(long)]
    devices: Option<usize>,
    /// Transport.
    #[arg(long, value_enum, default_value = "mqtt")]
    transport: RolloutTransport,
    /// MQTT broker: `embedded` (rumqttd in this process), `mosquitto` (a Mosquitto
    /// process started by the bench on a free port), or `mqtt://127.0.0.1:PORT`.
    #[arg(long, default_value = "embedded")]
    broker: String,
    /// Timed roll-outs after the warm-up.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// CI mode: 500 agents, 2 rounds.
    #[arg(long)]
    quick: bool,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 300)]
    phase_timeout_s: u64,
}

/// Runs `voltex bench rollout`.
pub fn run(args: &RolloutBenchArgs) -> Result<()> {
    let n_agents = args
        .devices
        .unwrap_or(if args.quick { 500 } else { 10_000 });
    let rounds = if args.quick {
        args.rounds.min(2)
    } else {
        args.rounds
    };
    if n_agents == 0 || rounds == 0 {
        bail!("--devices and --rounds must be > 0");
    }
    raise_fd_limit(n_agents);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the Tokio runtime")?;
    let result = runtime.block_on(bench(args, n_agents, rounds));
    runtime.shutdown_background();
    result
}

fn raise_fd_limit(n_agents: usize) {
    let wanted = (4 * n_agents + 1_024) as u64;
    if let Err(error) = rlimit::setrlimit(rlimit::Resource::NOFILE, wanted, wanted) {
        match rlimit::increase_nofile_limit(wanted) {
            Ok(got) if got < wanted => {
                eprintln!("warning: fd limit {got} < {wanted} wanted ({error}); may run out");
            }
            Ok(_) => {}
            Err(error) => eprintln!("warning: cannot raise the fd limit: {error}"),
        }
    }
}

/// A Mosquitto process owned by the bench.
struct OwnMosquitto {
    child: Child,
    _dir: tempfile::TempDir,
}

impl OwnMosquitto {
    fn start(port: u16) -> Result<OwnMosquitto> {
        let dir = tempfile::tempdir()?;
        let config: PathBuf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_inflight_messages 1000\nmax_queued_messages 100000\n\
                 set_tcp_nodelay true\nlog_dest none\n"
            ),
        )?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto (is it installed?)")?;
        let addr = std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        for _ in 0..250 {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(20)).is_ok() {
                return Ok(OwnMosquitto { child, _dir: dir });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("mosquitto is not listening on {addr}")
    }
}

impl Drop for OwnMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fleet_config(n_agents: usize, signer: &ScheduleSigner) -> SimFleetConfig {
    let mut config = SimFleetConfig::new(n_agents, signer.verifier());
    config.id_prefix = "bench-".into();
    // Quiet agents: an executor tick, telemetry and a heartbeat per real minute.
    config.tick = Duration::from_secs(3_600);
    config.telemetry_interval = Duration::from_secs(3_600);
    config.heartbeat_interval = Duration::from_secs(3_600);
    config.resend_after = Duration::from_secs(600);
    config
}

fn schedules(fleet: &SimFleet, version: u64) -> Vec<Schedule> {
    let now = SystemClock.now();
    fleet
        .devices()
        .iter()
        .map(|(device, _)| schedule(device, version, now))
        .collect()
}

fn schedule(device: &DeviceId, version: u64, now: UtcNanos) -> Schedule {
    Schedule {
        device: device.clone(),
        schedule_id: ScheduleId(u128::from(version)),
        version,
        issued_at: now,
        valid_from: now,
        valid_until: now.plus_seconds(2 * 86_400),
        randomize_start_s: 0,
        periods: (0..96)
            .map(|i| SchedulePeriod {
                offset_s: i * 900,
                target_w: -2_000,
                ramp_s: 0,
            })
            .collect(),
        fallback: Fallback::Idle,
    }
}

/// Waits (at most `phase`) until `rollout` is finished and checks every agent acked.
async fn finish_rollout(
    orchestrator: &Orchestrator<MemoryDispatchStore>,
    rollout: RolloutId,
    phase: Duration,
    n_agents: usize,
    what: &str,
) -> Result<()> {
    tokio::time::timeout(phase, orchestrator.wait_finished(rollout))
        .await
        .with_context(|| format!("{what}: the roll-out did not finish"))?;
    let status = orchestrator
        .rollout_status(rollout)
        .with_context(|| format!("{what}: no roll-out status"))?;
    if status.n_acked != n_agents as u64 {
        bail!("{what}: {} of {n_agents} acked: {status:?}", status.n_acked);
    }
    Ok(())
}

async fn bench(args: &RolloutBenchArgs, n_agents: usize, rounds: u32) -> Result<()> {
    let phase = Duration::from_secs(args.phase_timeout_s);
    let signer_seed = [9; 32];
    let signer = ScheduleSigner::from_seed(&signer_seed);
    let mut config = OrchestratorConfig::default();
    config.tracker.retry_delay_min = Duration::from_secs(1);
    config.tracker.retry_delay_max = Duration::from_secs(5);
    let store = MemoryDispatchStore::new();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut fleet_config = fleet_config(n_agents, &signer);
    let mut _mosquitto = None;
    let (builder, label) = match args.transport {
        RolloutTransport::Mqtt => {
            let (port, label) = match args.broker.as_str() {
                "embedded" => {
                    let broker = start_embedded_broker(free_port()?)?;
                    (broker.addr().port(), "mqtt/embedded".to_string())
                }
                "mosquitto" => {
                    let port = free_port()?;
                    _mosquitto = Some(OwnMosquitto::start(port)?);
                    (port, "mqtt/mosquitto".to_string())
                }
                url => {
                    let config = MqttConfig::from_url(url)?;
                    (config.port, format!("mqtt/{url}"))
                }
            };
            let mut platform = MqttConfig::new("127.0.0.1", port);
            platform.client_id = format!("voltex-bench-rollout-{}", std::process::id());
            platform.inflight_max = 1_000;
            platform.request_channel_len = 4 * n_agents + 1_024;
            platform.inbound_channel_len = 4 * n_agents + 1_024;
            fleet_config.mqtt = Some(MqttConfig::new("127.0.0.1", port));
            let link = mqtt_platform(platform).await?;
            let builder =
                Orchestrator::builder(config, store, signer, clock).link(TransportKind::Mqtt, link);
            (builder, label)
        }
        RolloutTransport::Quic => {
            let ca = certs::init_ca("voltex bench CA")?;
            let server = certs::issue_server(&ca, &["localhost".into()])?;
            let mut platform = QuicPlatformConfig::new(
                (Ipv4Addr::LOCALHOST, 0).into(),
                ca.cert_pem.clone(),
                server.cert_pem,
                server.key_pem,
            );
            platform.uplink_channel_len = 4 * n_agents + 1_024;
            let link = quic_platform(platform).await?;
            fleet_config.quic = Some(SimQuic {
                addr: link.local_addr()?,
                server_name: "localhost".into(),
                ca,
            });
            let builder =
                Orchestrator::builder(config, store, signer, clock).link(TransportKind::Quic, link);
            (builder, "quic".to_string())
        }
    };
    let orchestrator = builder.start()?;
    eprintln!("{label}: starting {n_agents} agents");
    let started = Instant::now();
    let fleet = spawn_simulated_fleet(fleet_config).await?;
    for (device, transport) in fleet.devices() {
        orchestrator.register_device(device, *transport)?;
    }
    eprintln!(
        "  agents started in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    let warm_up = Instant::now();
    let rollout = orchestrator.roll_out(schedules(&fleet, 1)).await?;
    finish_rollout(&orchestrator, rollout, phase, n_agents, "warm-up").await?;
    eprintln!(
        "  warm-up roll-out (while links connect) in {:.2} s; every agent acked",
        warm_up.elapsed().as_secs_f64()
    );

    println!();
    println!(
        "{:<16} {:>7} {:>5} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "transport", "agents", "round", "issue_ms", "all_s", "p50_ms", "p99_ms", "max_ms", "target"
    );
    for round in 0..rounds {
        let version = 2 + u64::from(round);
        let batch = schedules(&fleet, version);
        let issued = Instant::now();
        let rollout = orchestrator.roll_out(batch).await?;
        let issue_ms = issued.elapsed().as_secs_f64() * 1_000.0;
        finish_rollout(
            &orchestrator,
            rollout,
            phase,
            n_agents,
            &format!("round {round}"),
        )
        .await?;
        let all = issued.elapsed();
        let mut latency_us = Histogram::<u64>::new(3)?;
        for latency in orchestrator.ack_latencies(rollout) {
            latency_us.record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX))?;
        }
        let ms = |q: f64| latency_us.value_at_quantile(q) as f64 / 1_000.0;
        println!(
            "{:<16} {:>7} {:>5} {:>9.1} {:>8.3} {:>8.1} {:>8.1} {:>8.1} {:>7}",
            label,
            n_agents,
            round + 1,
            issue_ms,
            all.as_secs_f64(),
            ms(0.5),
            ms(0.99),
            latency_us.max() as f64 / 1_000.0,
            if all <= Duration::from_secs(1) {
                "met"
            } else {
                "missed"
            }
        );
    }
    let counters = orchestrator.counters();
    eprintln!(
        "  orchestrator: {} schedules sent ({} re-sends, {} waited for the retry budget), \
         {} acks ({} duplicates), {} receipts; ack latency p99 {:?} (the retry base)",
        counters.schedules_sent,
        counters.retries,
        counters.retries_deferred,
        counters.acks_new,
        counters.acks_duplicate,
        counters.receipts_queued,
        orchestrator.ack_latency_p99()
    );
    let fleet_counters = fleet.shutdown().await;
    eprintln!(
        "  agents: {} failed, {} schedules received, {} acks sent",
        fleet_counters.agents_failed, fleet_counters.schedules_received, fleet_counters.acks_sent
    );
    orchestrator.shutdown().await;
    Ok(())
}
