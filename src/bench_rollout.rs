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
//! Timings are printed, never asserted. Orchestrator and broker share one process; the
//! agents run in it too, or (`--agents child`, the default with the embedded broker) in
//! a child process, `voltex bench rollout-agents`, as devices would be elsewhere. With
//! the embedded broker both ends of every agent's socket would otherwise count against
//! one process's file-descriptor limit (20,000 here, too few for 10,000 agents). On a
//! small machine everything shares the same cores either way.
//!
//! The child reads its [`AgentsProcessConfig`] as one JSON line on stdin, starts the
//! fleet, writes `{"started": N}` on stdout, and when its stdin closes shuts the
//! fleet down and writes the fleet's counters as one more JSON line.

// Benchmarks measure wall time: the one place the clock seam is crossed on purpose.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::Ipv4Addr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bench_dispatch::OwnBroker;
use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use voltex::server::clock::{Clock, SystemClock};
use voltex::server::fleet::{
    MemoryDispatchStore, Orchestrator, OrchestratorConfig, RolloutId, SimFleet, SimFleetConfig,
    SimFleetCounters, SimQuic, TransportKind, spawn_simulated_fleet,
};
use voltex_dispatch::message::{Fallback, SchedulePeriod};
use voltex_dispatch::transport::embedded_broker::free_port;
use voltex_dispatch::transport::{
    MqttConfig, QuicPlatformConfig, certs, mqtt_platform, quic_platform, start_embedded_broker,
};
use voltex_dispatch::{DeviceId, Schedule, ScheduleId, ScheduleSigner, ScheduleVerifier};
use voltex_market::UtcNanos;

/// Transport under test.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutTransport {
    /// MQTT through a broker (see `--broker`).
    Mqtt,
    /// QUIC with mutual TLS.
    Quic,
}

/// Where the simulated agents run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentsPlacement {
    /// `child` with the embedded broker, `in-process` otherwise.
    Auto,
    /// In the bench's own process.
    InProcess,
    /// In a child process (MQTT only).
    Child,
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
    /// Where the agents run: `child` (a second process), `in-process`, or `auto`
    /// (`child` with the embedded broker, whose sockets would otherwise share the
    /// agents' file-descriptor limit).
    #[arg(long, value_enum, default_value = "auto")]
    agents: AgentsPlacement,
}

/// What the agents' child process is told on its stdin (one JSON line).
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct AgentsProcessConfig {
    /// Agents to start.
    pub n_agents: usize,
    /// The MQTT broker's port on 127.0.0.1.
    pub mqtt_port: u16,
    /// The platform's schedule verification key (ed25519 public key).
    pub verifier_public_key: [u8; 32],
}

/// The first line the child writes: how many agents it started.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct AgentsStarted {
    started: usize,
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
    block_on(bench(args, n_agents, rounds))
}

/// Runs `work` on a fresh multi-threaded Tokio runtime, then drops the runtime without
/// waiting for tasks still running (agents' and links' background tasks).
fn block_on(work: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the Tokio runtime")?;
    let result = runtime.block_on(work);
    runtime.shutdown_background();
    result
}

/// `voltex bench rollout-agents`: the child side of `--agents child`.
pub fn run_agents_process() -> Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the agents' configuration from stdin")?;
    let config: AgentsProcessConfig = serde_json::from_str(line.trim())
        .context("the agents' configuration (one JSON line on stdin) is malformed")?;
    if config.n_agents == 0 {
        bail!("the agents' configuration asks for no agents");
    }
    let verifier = ScheduleVerifier::from_public_bytes(&config.verifier_public_key)
        .context("the agents' verification key is not an ed25519 public key")?;
    raise_fd_limit(config.n_agents);
    block_on(async {
        let mut fleet_config = fleet_config(config.n_agents, verifier);
        fleet_config.mqtt = Some(MqttConfig::new("127.0.0.1", config.mqtt_port));
        let fleet = spawn_simulated_fleet(fleet_config).await?;
        write_json_line(&AgentsStarted {
            started: fleet.devices().len(),
        })?;
        // Runs until the bench closes our stdin (or exits).
        tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
            .await
            .context("waiting for stdin to close")?
            .context("reading stdin")?;
        let counters = fleet.shutdown().await;
        write_json_line(&counters)
    })
}

fn write_json_line(value: &impl serde::Serialize) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, value)?;
    stdout.write_all(b"\n")?;
    stdout.flush()?;
    Ok(())
}

/// The simulated agents, in this process or in a child.
enum Agents {
    InProcess(SimFleet),
    Child(AgentsChild),
}

impl Agents {
    /// Stops the agents and returns their counters.
    async fn shutdown(self) -> Result<SimFleetCounters> {
        match self {
            Agents::InProcess(fleet) => Ok(fleet.shutdown().await),
            Agents::Child(child) => child.shutdown().await,
        }
    }
}

/// `voltex bench rollout-agents` running as a child of this bench (killed if dropped).
struct AgentsChild {
    child: Child,
    /// `None` only while a line is being read on a blocking thread.
    stdout: Option<BufReader<ChildStdout>>,
}

impl AgentsChild {
    /// Starts the child and waits (at most `phase`) until its agents are started.
    async fn start(config: &AgentsProcessConfig, phase: Duration) -> Result<AgentsChild> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let mut child = Command::new(exe)
            .args(["bench", "rollout-agents"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the agents' child process")?;
        let stdout = child.stdout.take().map(BufReader::new);
        let mut agents = AgentsChild { child, stdout };
        let stdin = agents
            .child
            .stdin
            .as_mut()
            .context("the child has no stdin")?;
        let mut line = serde_json::to_vec(config)?;
        line.push(b'\n');
        // Kept open afterwards: closing it is the child's signal to stop.
        stdin.write_all(&line)?;
        stdin.flush()?;
        let first = agents.next_line(phase, "start its agents").await?;
        let started: AgentsStarted = serde_json::from_str(&first)
            .with_context(|| format!("the agents' child process said {first:?}"))?;
        if started.started != config.n_agents {
            bail!(
                "the agents' child process started {} of {} agents",
                started.started,
                config.n_agents
            );
        }
        Ok(agents)
    }

    /// The child's next stdout line, read on a blocking thread, within `limit`.
    async fn next_line(&mut self, limit: Duration, what: &str) -> Result<String> {
        let mut stdout = self.stdout.take().context("the child's stdout is gone")?;
        let read = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let n = stdout.read_line(&mut line);
            (stdout, n.map(|n| (n, line)))
        });
        let (stdout, read) = tokio::time::timeout(limit, read)
            .await
            .with_context(|| format!("the agents' child process did not {what} in time"))?
            .context("the reading thread failed")?;
        self.stdout = Some(stdout);
        match read.context("reading the child's stdout")? {
            (0, _) => bail!("the agents' child process exited before it could {what}"),
            (_, line) => Ok(line.trim_end().to_string()),
        }
    }

    async fn shutdown(mut self) -> Result<SimFleetCounters> {
        drop(self.child.stdin.take());
        let last = self
            .next_line(Duration::from_secs(60), "stop its agents")
            .await?;
        let counters: SimFleetCounters = serde_json::from_str(&last)
            .with_context(|| format!("the agents' child process said {last:?}"))?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the agents' child process exited with {status}");
        }
        Ok(counters)
    }
}

impl Drop for AgentsChild {
    fn drop(&mut self) {
        // After a clean shutdown the child has exited and this does nothing.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

fn fleet_config(n_agents: usize, verifier: ScheduleVerifier) -> SimFleetConfig {
    let mut config = SimFleetConfig::new(n_agents, verifier);
    config.id_prefix = "bench-".into();
    // Quiet agents: an executor tick, telemetry and a heartbeat per real minute.
    config.tick = Duration::from_secs(3_600);
    config.telemetry_interval = Duration::from_secs(3_600);
    config.heartbeat_interval = Duration::from_secs(3_600);
    config.resend_after = Duration::from_secs(600);
    config
}

fn schedules(devices: &[DeviceId], version: u64) -> Vec<Schedule> {
    let now = SystemClock.now();
    devices
        .iter()
        .map(|device| schedule(device, version, now))
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
    if tokio::time::timeout(phase, orchestrator.wait_finished(rollout))
        .await
        .is_err()
    {
        bail!(
            "{what}: the roll-out did not finish in {phase:?}: {:?}; orchestrator {:?}",
            orchestrator.rollout_status(rollout),
            orchestrator.counters()
        );
    }
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
    let mut fleet_config = fleet_config(n_agents, signer.verifier());
    let verifier_public_key = signer.verifier().public_bytes();
    let agents_in_child = match (args.agents, args.transport, args.broker.as_str()) {
        (AgentsPlacement::Child, RolloutTransport::Quic, _) => {
            bail!("--agents child is for MQTT; QUIC agents need this process's CA")
        }
        (AgentsPlacement::Auto, transport, broker) => {
            transport == RolloutTransport::Mqtt && broker == "embedded"
        }
        (placement, _, _) => placement == AgentsPlacement::Child,
    };
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
                    _mosquitto = Some(OwnBroker::mosquitto(port)?);
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
    let started = Instant::now();
    let (agents, devices) = if agents_in_child {
        eprintln!("{label}: starting {n_agents} agents in a child process");
        let mqtt_port = fleet_config
            .mqtt
            .as_ref()
            .map(|mqtt| mqtt.port)
            .context("--agents child needs MQTT")?;
        let child = AgentsChild::start(
            &AgentsProcessConfig {
                n_agents,
                mqtt_port,
                verifier_public_key,
            },
            phase,
        )
        .await?;
        // The child builds the same configuration, so the same ids.
        let devices = (0..n_agents)
            .map(|index| fleet_config.device_id(index))
            .collect::<Result<Vec<_>, _>>()?;
        for device in &devices {
            orchestrator.register_device(device, TransportKind::Mqtt)?;
        }
        (Agents::Child(child), devices)
    } else {
        eprintln!("{label}: starting {n_agents} agents in this process");
        let fleet = spawn_simulated_fleet(fleet_config).await?;
        for (device, transport) in fleet.devices() {
            orchestrator.register_device(device, *transport)?;
        }
        let devices = fleet.devices().iter().map(|(id, _)| id.clone()).collect();
        (Agents::InProcess(fleet), devices)
    };
    eprintln!(
        "  agents started in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    let warm_up = Instant::now();
    let rollout = orchestrator.roll_out(schedules(&devices, 1)).await?;
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
        let batch = schedules(&devices, version);
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
    let fleet_counters = agents.shutdown().await?;
    eprintln!(
        "  agents: {} failed, {} schedules received, {} acks sent, {} ed25519 verifications \
         (one per batch root: the agents share a verifier; a Pi verifies each schedule it gets)",
        fleet_counters.agents_failed,
        fleet_counters.schedules_received,
        fleet_counters.acks_sent,
        fleet_counters.signature_checks
    );
    orchestrator.shutdown().await;
    Ok(())
}
