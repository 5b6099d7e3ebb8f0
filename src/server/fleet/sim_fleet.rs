//! A simulated fleet in this process: N real `voltex-agent` runtimes, each with its own
//! connection to the platform over real MQTT (any broker: the embedded rumqttd or
//! Mosquitto) or real QUIC with a device certificate from the platform's CA.
//!
//! Each agent is the production [`Runtime`] with the in-memory [`MemoryStore`], the
//! [`SimulatedBattery`] driver and an accelerated [`SystemClock`] (`time_scale` times
//! real time), so schedules are verified, stored, acknowledged, executed and reported
//! exactly as on a Pi. Only the store is volatile: a shut-down fleet forgets
//! everything.
//!
//! Agents are assigned to transports deterministically: with both configured,
//! [`SimFleetConfig::quic_per_mille`] of them (spread evenly over the indices) use QUIC.
//! Connections are opened in batches ([`SimFleetConfig::connect_batch`]) so a listen
//! backlog does not overflow.
//!
//! # Guarantees
//! - [`SimFleet::shutdown`] stops every agent (orderly: each idles its battery) and
//!   returns the final counters; dropping the handle without it aborts the agents.
//! - The counters are live ([`SimFleet::counters`]) and count what crossed each
//!   agent's link, so a test can see deliveries without reaching into the agents.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use voltex_agent::acceptance::{AcceptanceConfig, AcceptancePolicy, DeviceLimits, SignatureCheck};
use voltex_agent::core::{AgentProfile, CoreConfig};
use voltex_agent::driver::DriverError;
use voltex_agent::driver::sim::SimulatedBattery;
use voltex_agent::executor::ExecutorConfig;
use voltex_agent::outbox::OutboxConfig;
use voltex_agent::runtime::{AgentLink, Runtime, RuntimeConfig, RuntimeError, SystemClock};
use voltex_agent::store::memory::MemoryStore;
use voltex_dispatch::transport::certs::{self, CaFiles, CertError};
use voltex_dispatch::transport::{
    DeliveryToken, DeviceLink, Inbound, MqttConfig, QuicDeviceConfig, TransportError, mqtt_device,
    quic_device,
};
use voltex_dispatch::{DeviceId, Fallback, Message, ScheduleVerifier};
use voltex_market::battery::BatterySpec;

use super::TransportKind;

/// How simulated agents reach the platform's QUIC endpoint.
#[derive(Clone, Debug)]
pub struct SimQuic {
    /// The endpoint's UDP address.
    pub addr: SocketAddr,
    /// The name in the platform's certificate (e.g. `localhost`).
    pub server_name: String,
    /// The platform's CA: it signed the server certificate and signs each agent's.
    pub ca: CaFiles,
}

/// What to start. [`SimFleetConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct SimFleetConfig {
    /// Agents.
    pub n_agents: usize,
    /// Device ids are `{id_prefix}{index:06}`.
    pub id_prefix: String,
    /// MQTT broker (host, port, TLS; the client id and username are the device id).
    pub mqtt: Option<MqttConfig>,
    /// QUIC endpoint.
    pub quic: Option<SimQuic>,
    /// With both transports: agents on QUIC per thousand (0..=1000).
    pub quic_per_mille: u32,
    /// Agent clocks run this many times faster than real time.
    pub time_scale: u32,
    /// The platform's schedule verification key.
    pub verifier: ScheduleVerifier,
    /// Every agent's power limits.
    pub limits: DeviceLimits,
    /// Battery capacity, Wh (state of charge starts at half).
    pub capacity_wh: i64,
    /// Executor tick, agent clock time.
    pub tick: Duration,
    /// Telemetry interval, agent clock time.
    pub telemetry_interval: Duration,
    /// Heartbeat interval, agent clock time.
    pub heartbeat_interval: Duration,
    /// Re-send the outbox when no receipt came for this long, agent clock time.
    pub resend_after: Duration,
    /// Reconnect back-off bounds (real time).
    pub reconnect_min: Duration,
    /// Largest reconnect delay (real time).
    pub reconnect_max: Duration,
    /// Agents connected per batch.
    pub connect_batch: usize,
    /// Pause between batches (real time).
    pub connect_pause: Duration,
    /// Seed of jitter and randomised starts (each agent derives its own).
    pub seed: u64,
}

impl SimFleetConfig {
    /// `n_agents` agents (ids `sim-000000`, ...), no transport yet, clocks 60× fast,
    /// 5 kW / 10 kWh batteries, a tick and a heartbeat per real second and telemetry
    /// every 5 real seconds, reconnects between 100 ms and 5 s, 500 connections per
    /// 20 ms.
    pub fn new(n_agents: usize, verifier: ScheduleVerifier) -> SimFleetConfig {
        SimFleetConfig {
            n_agents,
            id_prefix: "sim-".into(),
            mqtt: None,
            quic: None,
            quic_per_mille: 500,
            time_scale: 60,
            verifier,
            limits: DeviceLimits {
                max_charge_w: 5_000,
                max_discharge_w: 5_000,
            },
            capacity_wh: 10_000,
            tick: Duration::from_secs(60),
            telemetry_interval: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(60),
            resend_after: Duration::from_secs(120),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            connect_batch: 500,
            connect_pause: Duration::from_millis(20),
            seed: 1,
        }
    }

    /// The device id of agent `index`.
    pub fn device_id(&self, index: usize) -> Result<DeviceId, SimFleetError> {
        DeviceId::new(format!("{}{index:06}", self.id_prefix))
            .map_err(|error| SimFleetError::Config(error.to_string()))
    }

    /// The transport of agent `index` (`None` if no transport is configured).
    pub fn transport_of(&self, index: usize) -> Option<TransportKind> {
        match (&self.mqtt, &self.quic) {
            (None, None) => None,
            (Some(_), None) => Some(TransportKind::Mqtt),
            (None, Some(_)) => Some(TransportKind::Quic),
            (Some(_), Some(_)) => {
                // Bresenham: floor((i + 1) * share) > floor(i * share) for a QUIC agent.
                let share = u64::from(self.quic_per_mille.min(1_000));
                let i = index as u64;
                let quic = (i + 1) * share / 1_000 > i * share / 1_000;
                Some(if quic {
                    TransportKind::Quic
                } else {
                    TransportKind::Mqtt
                })
            }
        }
    }
}

/// Why the fleet could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimFleetError {
    /// A configuration value is unusable.
    #[error("simulated fleet configuration: {0}")]
    Config(String),
    /// A transport could not be set up.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A device certificate could not be issued.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The simulated battery refused its spec.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// An agent runtime did not start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Live counters of a fleet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimFleetCounters {
    /// Agents started.
    pub agents_started: u64,
    /// Agents whose runtime stopped with an error.
    pub agents_failed: u64,
    /// Agents whose link is connected now.
    pub agents_connected: u64,
    /// Schedules received (duplicates included).
    pub schedules_received: u64,
    /// Receipts received.
    pub receipts_received: u64,
    /// Acks sent (re-sends included).
    pub acks_sent: u64,
    /// Telemetry batches sent.
    pub telemetry_sent: u64,
    /// Heartbeats sent.
    pub heartbeats_sent: u64,
    /// ed25519 verifications the agents ran. They share one verifier, which checks a
    /// batch's signature once for all of them (`voltex_dispatch::signing`).
    pub signature_checks: u64,
}

#[derive(Debug, Default)]
struct Counters {
    agents_started: AtomicU64,
    agents_failed: AtomicU64,
    agents_connected: AtomicU64,
    schedules_received: AtomicU64,
    receipts_received: AtomicU64,
    acks_sent: AtomicU64,
    telemetry_sent: AtomicU64,
    heartbeats_sent: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> SimFleetCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SimFleetCounters {
            agents_started: get(&self.agents_started),
            agents_failed: get(&self.agents_failed),
            agents_connected: get(&self.agents_connected),
            schedules_received: get(&self.schedules_received),
            receipts_received: get(&self.receipts_received),
            acks_sent: get(&self.acks_sent),
            telemetry_sent: get(&self.telemetry_sent),
            heartbeats_sent: get(&self.heartbeats_sent),
            signature_checks: 0,
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A device link that counts what crosses it.
struct CountingLink<L> {
    link: L,
    counters: Arc<Counters>,
    connected: AtomicBool,
}

impl<L: AgentLink> CountingLink<L> {
    fn new(link: L, counters: Arc<Counters>) -> CountingLink<L> {
        CountingLink {
            link,
            counters,
            connected: AtomicBool::new(false),
        }
    }
}

impl<L> Drop for CountingLink<L> {
    fn drop(&mut self) {
        if self.connected.swap(false, Ordering::Relaxed) {
            self.counters
                .agents_connected
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<L: AgentLink> DeviceLink for CountingLink<L> {
    async fn send(&mut self, message: &Message) -> Result<(), TransportError> {
        self.link.send(message).await?;
        match message {
            Message::Ack(_) | Message::Acks(_) => {
                let n_acks = message.ack_count() as u64;
                self.counters.acks_sent.fetch_add(n_acks, Ordering::Relaxed);
            }
            Message::Telemetry(_) => bump(&self.counters.telemetry_sent),
            Message::Heartbeat(_) => bump(&self.counters.heartbeats_sent),
            Message::Schedule(_) | Message::Receipt(_) => {}
        }
        Ok(())
    }

    async fn recv(&mut self) -> Result<Inbound, TransportError> {
        let inbound = self.link.recv().await?;
        match inbound.message {
            Message::Schedule(_) => bump(&self.counters.schedules_received),
            Message::Receipt(_) => bump(&self.counters.receipts_received),
            _ => {}
        }
        Ok(inbound)
    }

    async fn confirm(&mut self, delivery: DeliveryToken) -> Result<(), TransportError> {
        self.link.confirm(delivery).await
    }
}

impl<L: AgentLink> AgentLink for CountingLink<L> {
    fn is_connected(&self) -> bool {
        let now = self.link.is_connected();
        if self.connected.swap(now, Ordering::Relaxed) != now {
            if now {
                bump(&self.counters.agents_connected);
            } else {
                self.counters
                    .agents_connected
                    .fetch_sub(1, Ordering::Relaxed);
            }
        }
        now
    }
}

/// A running simulated fleet. See the module doc.
#[derive(Debug)]
pub struct SimFleet {
    devices: Vec<(DeviceId, TransportKind)>,
    counters: Arc<Counters>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// What every agent of the fleet shares (limits, verifier, tolerances, bounds).
    agent_profile: Arc<AgentProfile>,
    /// Each QUIC agent's client certificate fingerprint (SHA-256 of the DER, hex).
    quic_certificates: Vec<(DeviceId, String)>,
}

impl SimFleet {
    /// Every agent's device id and transport, in index order.
    pub fn devices(&self) -> &[(DeviceId, TransportKind)] {
        &self.devices
    }

    /// The fingerprint of each QUIC agent's client certificate, in index order (for
    /// the device registry, so an operator can revoke one).
    pub fn quic_certificate_fingerprints(&self) -> &[(DeviceId, String)] {
        &self.quic_certificates
    }

    /// The counters now.
    pub fn counters(&self) -> SimFleetCounters {
        let mut counters = self.counters.snapshot();
        if let SignatureCheck::Verify(verifier) = &self.agent_profile.acceptance.signature {
            counters.signature_checks = verifier.signature_checks();
        }
        counters
    }

    /// Stops every agent and waits for them; returns the final counters.
    pub async fn shutdown(mut self) -> SimFleetCounters {
        self.shutdown.send_replace(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        self.counters()
    }
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts the fleet: issues certificates (QUIC), opens every agent's link and starts its
/// runtime. Returns once every agent is started (connections complete in the
/// background; watch [`SimFleetCounters::agents_connected`]).
///
/// # Errors
/// [`SimFleetError::Config`] for no transport, zero agents or a bad share;
/// certificate, transport, driver or runtime start-up failures (agents started before
/// the failure are stopped).
///
/// # Panics
/// Outside a Tokio runtime.
pub async fn spawn_simulated_fleet(config: SimFleetConfig) -> Result<SimFleet, SimFleetError> {
    if config.mqtt.is_none() && config.quic.is_none() {
        return Err(SimFleetError::Config("no transport configured".into()));
    }
    if config.n_agents == 0 || config.connect_batch == 0 || config.quic_per_mille > 1_000 {
        return Err(SimFleetError::Config(
            "n_agents and connect_batch must be > 0, quic_per_mille <= 1000".into(),
        ));
    }
    let spec = BatterySpec::symmetric(
        config
            .limits
            .max_charge_w
            .max(config.limits.max_discharge_w),
        config.capacity_wh,
        0.9,
        Default::default(),
    );
    let (shutdown, _) = watch::channel(false);
    let mut fleet = SimFleet {
        devices: Vec::with_capacity(config.n_agents),
        counters: Arc::new(Counters::default()),
        shutdown,
        tasks: Vec::with_capacity(config.n_agents),
        quic_certificates: Vec::new(),
        agent_profile: Arc::new(AgentProfile {
            acceptance: AcceptanceConfig {
                limits: config.limits,
                signature: SignatureCheck::Verify(config.verifier.clone()),
                policy: AcceptancePolicy::default(),
            },
            executor: Arc::new(ExecutorConfig {
                limits: config.limits,
                default_fallback: Fallback::Idle,
                fallback_ramp_s: 0,
                clock_step_tolerance_s: 5,
            }),
            outbox: OutboxConfig { len_max: 4_096 },
            records_max: 16,
        }),
    };
    for index in 0..config.n_agents {
        let device = config.device_id(index)?;
        let Some(transport) = config.transport_of(index) else {
            return Err(SimFleetError::Config("no transport configured".into()));
        };
        let reconnect = voltex_dispatch::transport::ReconnectPolicy {
            delay_min: config.reconnect_min,
            delay_max: config.reconnect_max,
            seed: Some(config.seed ^ index as u64),
        };
        let driver = SimulatedBattery::new(spec.clone(), config.capacity_wh / 2)?;
        let task = match (transport, &config.mqtt, &config.quic) {
            (TransportKind::Mqtt, Some(mqtt), _) => {
                let mut mqtt = mqtt.clone();
                mqtt.reconnect = reconnect;
                mqtt.inflight_max = mqtt.inflight_max.min(64);
                mqtt.request_channel_len = 256;
                mqtt.inbound_channel_len = 64;
                let link = mqtt_device(mqtt, device.clone()).await?;
                start_agent(&config, &fleet, index, &device, driver, link).await?
            }
            (TransportKind::Quic, _, Some(quic)) => {
                let issued = certs::issue_device(&quic.ca, &device)?;
                fleet
                    .quic_certificates
                    .push((device.clone(), certs::fingerprint_sha256(&issued.cert_pem)?));
                let mut quic_config = QuicDeviceConfig::new(
                    quic.addr,
                    quic.server_name.clone(),
                    quic.ca.cert_pem.clone(),
                    issued.cert_pem,
                    issued.key_pem,
                );
                quic_config.reconnect = reconnect;
                let link = quic_device(quic_config).await?;
                start_agent(&config, &fleet, index, &device, driver, link).await?
            }
            _ => unreachable!("transport_of only picks configured transports"),
        };
        fleet.tasks.push(task);
        fleet.devices.push((device, transport));
        if index % config.connect_batch == config.connect_batch - 1 {
            tokio::time::sleep(config.connect_pause).await;
        }
    }
    Ok(fleet)
}

async fn start_agent<L: AgentLink + Send + 'static>(
    config: &SimFleetConfig,
    fleet: &SimFleet,
    index: usize,
    device: &DeviceId,
    driver: SimulatedBattery,
    link: L,
) -> Result<JoinHandle<()>, SimFleetError> {
    let core_config = CoreConfig {
        device: device.clone(),
        seed: config
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(index as u64),
        profile: Arc::clone(&fleet.agent_profile),
    };
    let runtime_config = RuntimeConfig {
        tick: config.tick,
        telemetry_interval: config.telemetry_interval,
        heartbeat_interval: config.heartbeat_interval,
        resend_after: config.resend_after,
        emergency_file: None,
        flush_messages_max: 64,
    };
    let link = CountingLink::new(link, fleet.counters.clone());
    let runtime = Runtime::start(
        core_config,
        MemoryStore::new(),
        driver,
        link,
        SystemClock::new(config.time_scale),
        runtime_config,
    )
    .await?;
    bump(&fleet.counters.agents_started);
    let counters = fleet.counters.clone();
    let mut shutdown = fleet.shutdown.subscribe();
    let device = device.clone();
    Ok(tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        if let Err(error) = runtime.run(stop).await {
            bump(&counters.agents_failed);
            tracing::warn!(%device, %error, "simulated agent stopped");
        }
    }))
}
