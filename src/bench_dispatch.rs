//! `voltex bench dispatch`: N simulated agents, each with its own connection on loopback,
//! against the platform side of the MQTT or QUIC transport.
//!
//! Phases, per transport:
//! 1. **connect**: start the broker (MQTT) or the platform endpoint (QUIC), start N agents,
//!    and warm up: the platform sends each device a `Receipt` (re-sent every second) until
//!    every agent has one, which proves its subscription or connection is live.
//! 2. **round**: the platform issues a new schedule to every device; each agent confirms it
//!    (the PUBACK goes out only now) and sends `Ack(Received)`; per-device latency = ack
//!    received − schedule handed to the transport. Prints p50/p99/max and the round time.
//! 3. **ingest**: every agent sends `--telemetry` telemetry batches as fast as it can; the
//!    platform's receive rate is printed in messages per second.
//! 4. **restart** (a broker the bench started, or QUIC): the broker is killed and
//!    restarted (QUIC: the platform endpoint is closed and re-bound); the time until every
//!    agent has reconnected and acked a schedule issued after the restart is printed. The
//!    platform re-sends unacked schedules every second, as the real platform does.
//!    rumqttd keeps sessions in memory only, so after its restart every agent starts a
//!    new session and subscribes again.
//!
//! Timings are printed, never asserted; for QUIC each phase also prints the machine's UDP
//! counters (datagrams sent, received, and dropped for a full receive buffer; whenever
//! UDP moved). Agents and platform share one process; the broker runs in a process of
//! its own: Mosquitto, or the embedded rumqttd in a `voltex bench broker` child (with
//! both ends of every connection in one process, 10,000 agents would need more file
//! descriptors than this machine's limit of 20,000, and rumqttd cannot be stopped
//! in-process for the restart). On a small machine they all compete for the same
//! cores.

// Benchmarks measure wall time: the one place the clock seam is crossed on purpose.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use voltex_dispatch::message::*;
use voltex_dispatch::signing::ScheduleSigner;
use voltex_dispatch::transport::embedded_broker::free_port;
use voltex_dispatch::transport::{
    DeviceLink, MqttConfig, PlatformLink, QuicDeviceConfig, QuicPlatformConfig, TransportError,
    certs, mqtt_device, mqtt_platform, quic_device, quic_platform, start_embedded_broker,
};
use voltex_market::UtcNanos;

/// Transport under test.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchTransport {
    /// MQTT through a broker (see `--broker`).
    Mqtt,
    /// QUIC with mutual TLS, straight to the platform.
    Quic,
}

/// Arguments of `voltex bench dispatch`.
#[derive(clap::Args, Debug)]
pub struct DispatchBenchArgs {
    /// Simulated agents, each with its own connection (default 10,000; 500 with --quick).
    #[arg(long)]
    devices: Option<usize>,
    /// Transport; both (MQTT first) when absent.
    #[arg(long, value_enum)]
    transport: Option<BenchTransport>,
    /// MQTT broker: `embedded` (rumqttd, in a child process started by the bench),
    /// `mosquitto` (a Mosquitto process started by the bench), or `mqtt://host:port`
    /// (no restart phase).
    #[arg(long, default_value = "embedded")]
    broker: String,
    /// CI mode: 500 devices, embedded broker and QUIC, fewer telemetry messages.
    #[arg(long)]
    quick: bool,
    /// Telemetry batches each agent sends in the ingest phase (default 10; 4 with --quick).
    #[arg(long)]
    telemetry: Option<usize>,
    /// Skip the restart phase.
    #[arg(long)]
    no_restart: bool,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 120)]
    phase_timeout_s: u64,
}

/// Runs `voltex bench dispatch`.
pub fn run(args: &DispatchBenchArgs) -> Result<()> {
    let n_devices = args
        .devices
        .unwrap_or(if args.quick { 500 } else { 10_000 });
    if n_devices == 0 {
        bail!("--devices must be > 0");
    }
    raise_fd_limit(n_devices);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the Tokio runtime")?;
    let transports = match args.transport {
        Some(transport) => vec![transport],
        None => vec![BenchTransport::Mqtt, BenchTransport::Quic],
    };
    let mut rows = Vec::new();
    for transport in transports {
        let row = runtime.block_on(async {
            match transport {
                BenchTransport::Mqtt => bench_mqtt(args, n_devices).await,
                BenchTransport::Quic => bench_quic(args, n_devices).await,
            }
        })?;
        rows.push(row);
    }
    println!();
    println!(
        "{:<6} {:<10} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>12} {:>10}",
        "trans",
        "broker",
        "devices",
        "connect_s",
        "round_s",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "ingest_msg/s",
        "restart_s"
    );
    for row in &rows {
        println!("{row}");
    }
    // The runtime holds the agents' tasks; shut it down without waiting for them.
    runtime.shutdown_background();
    Ok(())
}

fn raise_fd_limit(n_devices: usize) {
    // Agents and platform share this process (the broker has its own): a socket per
    // device, and a few for the runtime and the platform.
    let wanted = (n_devices + 2_048) as u64;
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

struct Row {
    transport: &'static str,
    broker: String,
    n_devices: usize,
    connect: Duration,
    round: Duration,
    latency_us: Histogram<u64>,
    ingest_per_s: f64,
    restart: Option<Duration>,
}

impl std::fmt::Display for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1_000.0;
        let restart = self
            .restart
            .map_or("n/a".to_string(), |d| format!("{:.2}", d.as_secs_f64()));
        write!(
            f,
            "{:<6} {:<10} {:>7} {:>9.2} {:>8.3} {:>8.1} {:>8.1} {:>8.1} {:>12.0} {:>10}",
            self.transport,
            self.broker,
            self.n_devices,
            self.connect.as_secs_f64(),
            self.round.as_secs_f64(),
            ms(0.5),
            ms(0.99),
            self.latency_us.max() as f64 / 1_000.0,
            self.ingest_per_s,
            restart
        )
    }
}

fn device_id(index: usize) -> DeviceId {
    // Infallible: the format only yields allowed characters.
    DeviceId::new(format!("bench-{index:06}")).unwrap_or_else(|_| unreachable!())
}

fn schedule(device: &DeviceId, version: u64) -> Schedule {
    Schedule {
        device: device.clone(),
        schedule_id: ScheduleId(u128::from(version)),
        version,
        issued_at: UtcNanos(0),
        valid_from: UtcNanos(0),
        valid_until: UtcNanos(86_400_000_000_000),
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

/// What the agents tell the bench.
#[derive(Default)]
struct Tally {
    n_warm: AtomicUsize,
}

/// A simulated agent: confirms every downlink message; acks schedules; on each `go`
/// signal sends `telemetry` batches.
async fn agent<L: DeviceLink>(
    mut link: L,
    device: DeviceId,
    tally: Arc<Tally>,
    mut go: tokio::sync::watch::Receiver<u64>,
    n_telemetry: usize,
) {
    let mut warm = false;
    let mut seq = 0u64;
    loop {
        tokio::select! {
            biased;
            changed = go.changed() => {
                if changed.is_err() {
                    return;
                }
                for _ in 0..n_telemetry {
                    seq += 1;
                    let sample = Telemetry {
                        outbox_seq: seq,
                        at: UtcNanos(0),
                        soc_wh: 5_000,
                        power_w: 0,
                        charged_wh: 0,
                        discharged_wh: 0,
                        temperature_mc: 25_000,
                        health: HealthFlags::default(),
                    };
                    let batch = TelemetryBatch { device: device.clone(), samples: vec![sample] };
                    if link.send(&Message::Telemetry(batch)).await.is_err() {
                        return;
                    }
                }
            }
            inbound = link.recv() => {
                let Ok(inbound) = inbound else { return };
                let message = inbound.message;
                // "Stored": a real agent writes SQLite here before confirming.
                if link.confirm(inbound.delivery).await.is_err() {
                    return;
                }
                match message {
                    Message::Schedule(signed) => {
                        seq += 1;
                        let ack = Ack {
                            device: device.clone(),
                            outbox_seq: seq,
                            schedule_id: signed.schedule.schedule_id,
                            version: signed.schedule.version,
                            status: AckStatus::Received,
                            at: UtcNanos(0),
                        };
                        if link.send(&Message::Ack(ack)).await.is_err() {
                            return;
                        }
                    }
                    Message::Receipt(_) if !warm => {
                        warm = true;
                        tally.n_warm.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Sends `make(device)` to every device not yet done, every second, until `done` covers all.
async fn warm_up<P: PlatformLink>(
    platform: &mut P,
    devices: &[DeviceId],
    tally: &Tally,
    deadline: Instant,
) -> Result<()> {
    loop {
        for device in devices {
            let receipt = Message::Receipt(Receipt {
                device: device.clone(),
                through_seq: 0,
            });
            match platform.send_to(device, &receipt).await {
                Ok(()) | Err(TransportError::NotConnected(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        let next = Instant::now() + Duration::from_secs(1);
        while Instant::now() < next {
            if tally.n_warm.load(Ordering::Relaxed) == devices.len() {
                return Ok(());
            }
            // Uplink is idle while warming up; drain anything stray.
            let _ = tokio::time::timeout(Duration::from_millis(20), platform.recv()).await;
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {} agents ready before the phase timeout",
                tally.n_warm.load(Ordering::Relaxed),
                devices.len()
            );
        }
    }
}

/// Issues schedule `version` to every device, re-sending to the unacked every second;
/// returns the per-device latency (from the first send) and the time until all acked.
async fn schedule_round<P: PlatformLink>(
    platform: &mut P,
    devices: &[DeviceId],
    signer: &ScheduleSigner,
    version: u64,
    deadline: Instant,
) -> Result<(Histogram<u64>, Duration)> {
    // Signed as one batch, as the platform's orchestrator signs a roll-out.
    let messages: Vec<Message> = signer
        .sign_batch(
            devices
                .iter()
                .map(|device| schedule(device, version))
                .collect(),
        )?
        .into_iter()
        .map(Message::Schedule)
        .collect();
    let index_of: HashMap<&DeviceId, usize> = devices
        .iter()
        .enumerate()
        .map(|(index, device)| (device, index))
        .collect();
    let mut first_sent: Vec<Option<Instant>> = vec![None; devices.len()];
    let mut acked = vec![false; devices.len()];
    let mut n_acked = 0;
    let mut latency_us = Histogram::<u64>::new(3)?;
    let started = Instant::now();
    // Where a slow round's time goes: passes over the unacked devices, sends, and
    // sends skipped because the device was not connected at that moment.
    let (mut n_passes, mut n_sends, mut n_not_connected) = (0_u32, 0_usize, 0_usize);
    let mut last_first_send = started;
    while n_acked < devices.len() {
        n_passes += 1;
        for (index, device) in devices.iter().enumerate() {
            if acked[index] {
                continue;
            }
            match platform.send_to(device, &messages[index]).await {
                Ok(()) => {
                    n_sends += 1;
                    if first_sent[index].is_none() {
                        last_first_send = Instant::now();
                        first_sent[index] = Some(last_first_send);
                    }
                }
                Err(TransportError::NotConnected(_)) => n_not_connected += 1,
                Err(error) => return Err(error.into()),
            }
        }
        let resend_at = Instant::now() + Duration::from_secs(1);
        while n_acked < devices.len() {
            let remaining = resend_at.saturating_duration_since(Instant::now());
            let Ok(received) = tokio::time::timeout(remaining, platform.recv()).await else {
                break;
            };
            let (device, message) = received?;
            let Message::Ack(ack) = message else { continue };
            let Some(&index) = index_of.get(&device) else {
                continue;
            };
            if ack.version != version || acked[index] {
                continue;
            }
            let Some(sent) = first_sent[index] else {
                continue;
            };
            acked[index] = true;
            n_acked += 1;
            latency_us.record(sent.elapsed().as_micros() as u64)?;
        }
        if n_acked < devices.len() && Instant::now() > deadline {
            bail!(
                "{} devices never acked version {version}",
                devices.len() - n_acked
            );
        }
    }
    // When devices were first reached: after a restart, how their reconnects spread.
    let mut first_reached_ms = Histogram::<u64>::new(3)?;
    for sent in first_sent.iter().flatten() {
        first_reached_ms.record(sent.duration_since(started).as_millis() as u64)?;
    }
    eprintln!(
        "  round {version}: {n_passes} passes, {n_sends} sends, {n_not_connected} skipped \
         (not connected); devices first reached after p50 {:.2} s, p90 {:.2} s, p99 {:.2} s, \
         last {:.2} s",
        first_reached_ms.value_at_quantile(0.5) as f64 / 1e3,
        first_reached_ms.value_at_quantile(0.9) as f64 / 1e3,
        first_reached_ms.value_at_quantile(0.99) as f64 / 1e3,
        last_first_send.duration_since(started).as_secs_f64()
    );
    Ok((latency_us, started.elapsed()))
}

/// Every agent sends its telemetry; returns messages per second received by the platform.
async fn ingest<P: PlatformLink>(
    platform: &mut P,
    go: &tokio::sync::watch::Sender<u64>,
    n_expected: usize,
    deadline: Instant,
) -> Result<f64> {
    let started = Instant::now();
    go.send_modify(|n| *n += 1);
    let mut n_received = 0usize;
    while n_received < n_expected {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, platform.recv()).await {
            Ok(received) => {
                if let (_, Message::Telemetry(_)) = received? {
                    n_received += 1;
                }
            }
            Err(_) => {
                eprintln!("ingest: only {n_received} of {n_expected} telemetry messages");
                break;
            }
        }
    }
    Ok(n_received as f64 / started.elapsed().as_secs_f64())
}

/// A broker process owned by the bench, so it can be killed and restarted: Mosquitto, or
/// the embedded rumqttd in a `voltex bench broker` process of its own.
pub(crate) struct OwnBroker {
    kind: OwnBrokerKind,
    port: u16,
    child: Child,
}

enum OwnBrokerKind {
    Mosquitto {
        config: PathBuf,
        _dir: tempfile::TempDir,
    },
    Embedded,
}

impl OwnBroker {
    /// Mosquitto on 127.0.0.1:`port`, with room for a fleet's acks (see the README's
    /// roll-out bench notes).
    pub(crate) fn mosquitto(port: u16) -> Result<OwnBroker> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_inflight_messages 1000\nmax_queued_messages 100000\n\
                 set_tcp_nodelay true\nlog_dest none\n"
            ),
        )?;
        Self::start(OwnBrokerKind::Mosquitto { config, _dir: dir }, port)
    }

    /// The embedded broker (`EmbeddedBrokerConfig::new`'s limits) in a process with
    /// file descriptors of its own: in one process with 10,000 agents both ends of every
    /// connection would count against one limit (20,000 on this machine).
    fn embedded(port: u16) -> Result<OwnBroker> {
        Self::start(OwnBrokerKind::Embedded, port)
    }

    fn start(kind: OwnBrokerKind, port: u16) -> Result<OwnBroker> {
        let child = Self::spawn(&kind, port)?;
        let broker = OwnBroker { kind, port, child };
        wait_for_port(port)?;
        Ok(broker)
    }

    fn spawn(kind: &OwnBrokerKind, port: u16) -> Result<Child> {
        match kind {
            OwnBrokerKind::Mosquitto { config, .. } => Command::new("mosquitto")
                .arg("-c")
                .arg(config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting mosquitto (is it installed?)"),
            OwnBrokerKind::Embedded => {
                let exe = std::env::current_exe().context("locating the voltex binary")?;
                Command::new(exe)
                    .args(["bench", "broker", "--port", &port.to_string()])
                    // Its stdin is our pipe: if this process dies, the broker stops.
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()
                    .context("starting `voltex bench broker`")
            }
        }
    }

    fn restart(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        self.child = Self::spawn(&self.kind, self.port)?;
        wait_for_port(self.port)
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Arguments of `voltex bench broker` (internal).
#[derive(clap::Args, Debug)]
pub struct BrokerArgs {
    /// TCP port on 127.0.0.1.
    #[arg(long)]
    port: u16,
}

/// `voltex bench broker`: the embedded broker until stdin closes.
pub fn run_broker_process(args: &BrokerArgs) -> Result<()> {
    // Room for every connection the broker allows (as far as the hard limit goes).
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("warning: cannot raise the fd limit: {error}");
    }
    let broker = start_embedded_broker(args.port)?;
    eprintln!("embedded broker on {}", broker.addr());
    std::io::copy(&mut std::io::stdin(), &mut std::io::sink()).context("reading stdin")?;
    Ok(())
}

fn wait_for_port(port: u16) -> Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    for _ in 0..250 {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(20)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listening on {addr}")
}

/// The agents' side of a run, as the shared phases need it.
struct Fleet<'a> {
    devices: &'a [DeviceId],
    tally: &'a Tally,
    go: &'a tokio::sync::watch::Sender<u64>,
    signer: &'a ScheduleSigner,
}

/// What both transports measure once their agents are connecting.
struct Phases {
    connect: Duration,
    round: Duration,
    latency_us: Histogram<u64>,
    ingest_per_s: f64,
}

/// The phases every transport runs in the same order: wait until all agents are
/// connected and warm (`connect` counts from `started`), one schedule round (version 1),
/// then telemetry ingest of `n_expected` messages. Each phase gives up after `phase`.
async fn measure_phases<P: PlatformLink>(
    platform: &mut P,
    fleet: &Fleet<'_>,
    n_expected: usize,
    started: Instant,
    phase: Duration,
) -> Result<Phases> {
    let udp = UdpCounters::read();
    warm_up(platform, fleet.devices, fleet.tally, Instant::now() + phase).await?;
    let connect = started.elapsed();
    eprintln!("  connected and warm in {:.2} s", connect.as_secs_f64());
    let udp = UdpCounters::report_since(udp, "the warm-up");
    let (latency_us, round) = schedule_round(
        platform,
        fleet.devices,
        fleet.signer,
        1,
        Instant::now() + phase,
    )
    .await?;
    eprintln!("  schedule round {:.3} s", round.as_secs_f64());
    let udp = UdpCounters::report_since(udp, "the round");
    let ingest_per_s = ingest(platform, fleet.go, n_expected, Instant::now() + phase).await?;
    eprintln!("  ingest {ingest_per_s:.0} msg/s");
    UdpCounters::report_since(udp, "ingest");
    Ok(Phases {
        connect,
        round,
        latency_us,
        ingest_per_s,
    })
}

fn telemetry_per_agent(args: &DispatchBenchArgs) -> usize {
    args.telemetry.unwrap_or(if args.quick { 4 } else { 10 })
}

async fn bench_mqtt(args: &DispatchBenchArgs, n_devices: usize) -> Result<Row> {
    let phase = Duration::from_secs(args.phase_timeout_s);
    let (port, broker_name, mut own) = match args.broker.as_str() {
        "embedded" => {
            let port = free_port()?;
            (
                port,
                "embedded".to_string(),
                Some(OwnBroker::embedded(port)?),
            )
        }
        "mosquitto" => {
            let port = free_port()?;
            (
                port,
                "mosquitto".to_string(),
                Some(OwnBroker::mosquitto(port)?),
            )
        }
        url => {
            let config = MqttConfig::from_url(url)?;
            if config.host != "127.0.0.1" && config.host != "localhost" {
                bail!("the bench runs on loopback: use mqtt://127.0.0.1:PORT");
            }
            (config.port, url.to_string(), None)
        }
    };
    eprintln!("mqtt/{broker_name}: {n_devices} agents on port {port}");
    let n_telemetry = telemetry_per_agent(args);
    let mut config = MqttConfig::new("127.0.0.1", port);
    config.client_id = format!("voltex-bench-platform-{}", std::process::id());
    config.inflight_max = 1_000;
    config.request_channel_len = 4 * n_devices + 1_024;
    config.inbound_channel_len = (n_telemetry + 4) * n_devices + 1_024;
    let mut platform = mqtt_platform(config.clone()).await?;
    let (go, _) = tokio::sync::watch::channel(0u64);
    let tally = Arc::new(Tally::default());
    let devices: Vec<DeviceId> = (0..n_devices).map(device_id).collect();
    let started = Instant::now();
    for (index, device) in devices.iter().enumerate() {
        let mut device_config = config.clone();
        device_config.request_channel_len = n_telemetry + 16;
        device_config.inbound_channel_len = 16;
        device_config.reconnect.seed = Some(index as u64);
        device_config.reconnect.delay_max = Duration::from_secs(5);
        let link = mqtt_device(device_config, device.clone()).await?;
        tokio::spawn(agent(
            link,
            device.clone(),
            tally.clone(),
            go.subscribe(),
            n_telemetry,
        ));
        if index % 500 == 499 {
            // Let the accept queue drain rather than overflow the listen backlog.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let signer = ScheduleSigner::from_seed(&[3; 32]);
    let fleet = Fleet {
        devices: &devices,
        tally: &tally,
        go: &go,
        signer: &signer,
    };
    let phases = measure_phases(
        &mut platform,
        &fleet,
        n_devices * n_telemetry,
        started,
        phase,
    )
    .await?;
    let mut restart = None;
    if let Some(own) = own.as_mut().filter(|_| !args.no_restart) {
        let restarted = Instant::now();
        own.restart()?;
        let (_, _) =
            schedule_round(&mut platform, &devices, &signer, 2, Instant::now() + phase).await?;
        restart = Some(restarted.elapsed());
        eprintln!(
            "  restart: all up to date in {:.2} s",
            restarted.elapsed().as_secs_f64()
        );
    }
    Ok(Row {
        transport: "mqtt",
        broker: broker_name,
        n_devices,
        connect: phases.connect,
        round: phases.round,
        latency_us: phases.latency_us,
        ingest_per_s: phases.ingest_per_s,
        restart,
    })
}

/// The machine's UDP counters (`/proc/net/snmp`, Linux), to tell how many datagrams a
/// QUIC phase cost and how many the kernel dropped because a receive buffer was full.
/// Whole-machine counts: anything else using UDP meanwhile is included.
#[derive(Clone, Copy, Debug)]
struct UdpCounters {
    sent: u64,
    received: u64,
    receive_buffer_full: u64,
}

impl UdpCounters {
    /// `None` where `/proc/net/snmp` cannot be read or parsed (not Linux).
    fn read() -> Option<UdpCounters> {
        let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
        let mut udp_lines = snmp.lines().filter(|line| line.starts_with("Udp:"));
        let names: Vec<&str> = udp_lines.next()?.split_whitespace().collect();
        let values: Vec<&str> = udp_lines.next()?.split_whitespace().collect();
        let get = |name: &str| -> Option<u64> {
            let at = names.iter().position(|n| *n == name)?;
            values.get(at)?.parse().ok()
        };
        Some(UdpCounters {
            sent: get("OutDatagrams")?,
            received: get("InDatagrams")?,
            receive_buffer_full: get("RcvbufErrors")?,
        })
    }

    /// Prints what changed since `before` (nothing when UDP was idle or the counters are
    /// unavailable) and returns the counters now.
    fn report_since(before: Option<UdpCounters>, phase: &str) -> Option<UdpCounters> {
        let now = UdpCounters::read();
        if let (Some(before), Some(now)) = (before, now) {
            let sent = now.sent.saturating_sub(before.sent);
            if sent > 0 {
                eprintln!(
                    "  UDP in {phase} (whole machine): {sent} datagrams sent, {} received, {} \
                     dropped by the kernel (receive buffer full)",
                    now.received.saturating_sub(before.received),
                    now.receive_buffer_full
                        .saturating_sub(before.receive_buffer_full)
                );
            }
        }
        now
    }
}

async fn bench_quic(args: &DispatchBenchArgs, n_devices: usize) -> Result<Row> {
    let phase = Duration::from_secs(args.phase_timeout_s);
    let n_telemetry = telemetry_per_agent(args);
    let ca = certs::init_ca("voltex bench CA")?;
    let server = certs::issue_server(&ca, &["localhost".into()])?;
    let devices: Vec<DeviceId> = (0..n_devices).map(device_id).collect();
    let issuing = Instant::now();
    let issued = devices
        .iter()
        .map(|device| certs::issue_device(&ca, device))
        .collect::<Result<Vec<_>, _>>()?;
    eprintln!(
        "quic: {n_devices} device certificates issued in {:.2} s",
        issuing.elapsed().as_secs_f64()
    );
    let mut platform_config = QuicPlatformConfig::new(
        (Ipv4Addr::LOCALHOST, 0).into(),
        ca.cert_pem.clone(),
        server.cert_pem,
        server.key_pem,
    );
    platform_config.uplink_channel_len = (n_telemetry + 4) * n_devices + 1_024;
    let mut platform = quic_platform(platform_config.clone()).await?;
    eprintln!(
        "quic: platform UDP receive buffer {} KiB granted ({} KiB asked{})",
        platform.recv_buffer_bytes() >> 10,
        platform_config.recv_buffer_bytes >> 10,
        if platform.recv_buffer_forced() {
            "; set past net.core.rmem_max with SO_RCVBUFFORCE"
        } else {
            ""
        }
    );
    let addr = platform.local_addr()?;
    platform_config.bind = addr;
    let (go, _) = tokio::sync::watch::channel(0u64);
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    for (index, (device, issued)) in devices.iter().zip(issued).enumerate() {
        let mut config = QuicDeviceConfig::new(
            addr,
            "localhost",
            ca.cert_pem.clone(),
            issued.cert_pem,
            issued.key_pem,
        );
        config.reconnect.seed = Some(index as u64);
        config.reconnect.delay_max = Duration::from_secs(5);
        config.outbound_channel_len = n_telemetry + 16;
        let link = quic_device(config).await?;
        tokio::spawn(agent(
            link,
            device.clone(),
            tally.clone(),
            go.subscribe(),
            n_telemetry,
        ));
        if index % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let signer = ScheduleSigner::from_seed(&[3; 32]);
    let fleet = Fleet {
        devices: &devices,
        tally: &tally,
        go: &go,
        signer: &signer,
    };
    let phases = measure_phases(
        &mut platform,
        &fleet,
        n_devices * n_telemetry,
        started,
        phase,
    )
    .await?;
    let mut restart = None;
    if !args.no_restart {
        let restarted = Instant::now();
        let udp = UdpCounters::read();
        // `shutdown` returns once the old UDP socket is closed, so the bind below cannot
        // race it.
        let cut = platform.shutdown().await;
        let mut again = quic_platform(platform_config.clone()).await?;
        let waited = restarted.elapsed().as_secs_f64();
        eprintln!(
            "  restart: port re-bound after {waited:.2} s ({cut} connections still draining \
             were cut)"
        );
        schedule_round(&mut again, &devices, &signer, 2, Instant::now() + phase).await?;
        restart = Some(restarted.elapsed());
        let stats = again.stats();
        eprintln!(
            "  restart: all up to date in {:.2} s ({} handshakes, {} attempts deferred: \
             {} in progress at most)",
            restarted.elapsed().as_secs_f64(),
            stats.connects,
            stats.handshakes_deferred,
            platform_config.handshakes_in_flight_max
        );
        UdpCounters::report_since(udp, "the restart");
    }
    Ok(Row {
        transport: "quic",
        broker: "-".into(),
        n_devices,
        connect: phases.connect,
        round: phases.round,
        latency_us: phases.latency_us,
        ingest_per_s: phases.ingest_per_s,
        restart,
    })
}
