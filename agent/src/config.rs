//! The agent's configuration file (TOML).
//!
//! ```toml
//! device_id = "bat-0001"
//! database = "/var/lib/voltex-agent/agent.db"
//! # seed = 42                      # randomised start, reconnect jitter (default: from device_id)
//! # fallback = "Idle"              # or { Hold = { target_w = 0 } }: before any schedule
//!
//! [platform]
//! transport = "mqtt"               # or "quic"
//! mqtt_url = "mqtt://127.0.0.1:1883"
//! # quic_addr = "platform.example:4433"
//! # quic_server_name = "platform.example"
//! # ca_cert = "/etc/voltex-agent/ca.pem"
//! # client_cert = "/etc/voltex-agent/device.pem"
//! # client_key = "/etc/voltex-agent/device.key"
//! schedule_public_key = "<64 hex digits: the platform's ed25519 dispatch key>"
//!
//! [limits]
//! max_charge_w = 5000
//! max_discharge_w = 5000
//!
//! [battery]                        # the simulated driver's battery
//! capacity_wh = 10000
//! initial_soc_wh = 5000
//!
//! [driver]
//! kind = "simulated"               # or "gpio" (feature `pi`)
//! # [driver.gpio]
//! # charge_relay_pin = 17
//! # discharge_relay_pin = 27
//! # idle_relay_pin = 22
//! # pwm_pin = 18
//! # emergency_input_pin = 23
//!
//! [emergency_stop]
//! file = "/run/voltex-agent/estop"  # present = stop engaged
//!
//! [timing]                         # all optional, defaults shown in `Timing`
//! telemetry_interval_s = 10
//! ```
//!
//! # Invariants
//! [`AgentConfig::validate`] accepts only a config whose limits are non-negative,
//! whose default fallback is within them, whose intervals are positive and whose key
//! parses; the binary refuses to start otherwise.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use voltex_dispatch::{DeviceId, Fallback, ScheduleVerifier};
use voltex_market::battery::BatterySpec;

use crate::acceptance::{AcceptanceConfig, AcceptancePolicy, DeviceLimits, SignatureCheck};
use crate::core::{AgentProfile, CoreConfig};
use crate::executor::{ExecutorConfig, splitmix64};
use crate::outbox::OutboxConfig;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML does not parse into the config.
    #[error("invalid config: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value breaks a rule.
    #[error("invalid config: {0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

/// Which transport reaches the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// MQTT (QoS 1, persistent session).
    Mqtt,
    /// QUIC with mutual TLS.
    Quic,
}

/// Where the platform is and how to trust it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    /// Transport.
    pub transport: TransportKind,
    /// MQTT broker URL (`mqtt://host:port`).
    #[serde(default)]
    pub mqtt_url: Option<String>,
    /// QUIC endpoint `host:port`.
    #[serde(default)]
    pub quic_addr: Option<String>,
    /// TLS server name of the QUIC endpoint.
    #[serde(default)]
    pub quic_server_name: Option<String>,
    /// CA certificate (PEM) that signs the platform's and the device's certificates.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// The device certificate (PEM).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// The device key (PEM).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// The platform's ed25519 schedule-signing public key, 64 hex digits.
    pub schedule_public_key: String,
}

/// The simulated driver's battery (defaults: 10 kWh, 90 % round trip).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatteryConfig {
    /// Usable capacity, Wh.
    pub capacity_wh: i64,
    /// Lowest SoC, Wh.
    pub soc_min_wh: i64,
    /// Highest SoC, Wh (default: capacity).
    pub soc_max_wh: Option<i64>,
    /// One-way charge efficiency.
    pub charge_efficiency: f64,
    /// One-way discharge efficiency.
    pub discharge_efficiency: f64,
    /// Standing loss per hour.
    pub standing_loss_per_hour: f64,
    /// SoC at start, Wh.
    pub initial_soc_wh: i64,
}

impl Default for BatteryConfig {
    fn default() -> Self {
        BatteryConfig {
            capacity_wh: 10_000,
            soc_min_wh: 0,
            soc_max_wh: None,
            charge_efficiency: 0.95,
            discharge_efficiency: 0.95,
            standing_loss_per_hour: 0.0,
            initial_soc_wh: 5_000,
        }
    }
}

/// Which driver commands the battery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// The simulated battery (default).
    #[default]
    Simulated,
    /// GPIO relays and PWM on a Raspberry Pi (feature `pi`).
    Gpio,
}

/// GPIO pins (BCM numbering) of the relay/PWM driver.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioConfig {
    /// Relay that connects the charger.
    pub charge_relay_pin: u8,
    /// Relay that connects the inverter for discharge.
    pub discharge_relay_pin: u8,
    /// Relay that signals idle (both paths open).
    pub idle_relay_pin: u8,
    /// PWM output whose duty cycle is |setpoint| / limit.
    pub pwm_pin: u8,
    /// PWM frequency, Hz.
    #[serde(default = "default_pwm_hz")]
    pub pwm_frequency_hz: f64,
    /// Emergency-stop input, if wired.
    #[serde(default)]
    pub emergency_input_pin: Option<u8>,
    /// Whether the stop input is engaged when low (a normally-closed loop to ground).
    #[serde(default = "default_true")]
    pub emergency_input_active_low: bool,
}

fn default_pwm_hz() -> f64 {
    1_000.0
}

fn default_true() -> bool {
    true
}

/// Driver selection.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DriverConfig {
    /// Which driver.
    #[serde(default)]
    pub kind: DriverKind,
    /// Pins of the GPIO driver.
    #[serde(default)]
    pub gpio: Option<GpioConfig>,
}

/// Emergency stop sources (besides a GPIO input).
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EmergencyStopConfig {
    /// A file whose existence engages the stop.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// Intervals and tolerances.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    /// Executor tick (emergency-stop polling, ramps), ms.
    pub tick_ms: u64,
    /// Telemetry sample interval, s.
    pub telemetry_interval_s: u64,
    /// Heartbeat interval, s.
    pub heartbeat_interval_s: u64,
    /// First reconnect delay, ms.
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay, ms.
    pub reconnect_max_ms: u64,
    /// Acceptance: grace after a schedule's last period started, s.
    pub late_grace_s: u32,
    /// Acceptance: tolerated `issued_at` ahead of the agent clock, s.
    pub clock_skew_tolerance_s: u32,
    /// Executor: tolerated wall-clock step before re-anchoring, s.
    pub clock_step_tolerance_s: u32,
    /// Ramp into fallback targets, s.
    pub fallback_ramp_s: u32,
    /// Outbox bound.
    pub outbox_len_max: usize,
    /// Stored schedule records kept.
    pub records_max: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            tick_ms: 1_000,
            telemetry_interval_s: 10,
            heartbeat_interval_s: 60,
            reconnect_min_ms: 500,
            reconnect_max_ms: 60_000,
            late_grace_s: 60,
            clock_skew_tolerance_s: 5,
            clock_step_tolerance_s: 5,
            fallback_ramp_s: 0,
            outbox_len_max: OutboxConfig::default().len_max,
            records_max: 64,
        }
    }
}

/// The whole configuration file. See the module doc.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This device's id.
    pub device_id: DeviceId,
    /// SQLite database file.
    pub database: PathBuf,
    /// Seed of the randomised start and the backoff jitter.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Fallback before any schedule is accepted.
    #[serde(default = "default_fallback")]
    pub fallback: Fallback,
    /// The platform.
    pub platform: Platform,
    /// Power limits.
    pub limits: DeviceLimits,
    /// The simulated battery.
    #[serde(default)]
    pub battery: BatteryConfig,
    /// Driver.
    #[serde(default)]
    pub driver: DriverConfig,
    /// Emergency stop.
    #[serde(default)]
    pub emergency_stop: EmergencyStopConfig,
    /// Timing.
    #[serde(default)]
    pub timing: Timing,
}

fn default_fallback() -> Fallback {
    Fallback::Idle
}

/// Decodes 64 hex digits into 32 bytes.
fn hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim().as_bytes();
    if text.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

impl AgentConfig {
    /// Parses and validates TOML text.
    ///
    /// # Errors
    /// It does not parse or breaks a rule.
    pub fn from_toml(text: &str) -> Result<AgentConfig, ConfigError> {
        let config: AgentConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a file.
    ///
    /// # Errors
    /// It cannot be read, does not parse or breaks a rule.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        AgentConfig::from_toml(&text)
    }

    /// Checks the rules of the module doc.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first broken rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.limits.max_charge_w < 0 || self.limits.max_discharge_w < 0 {
            return Err(invalid("limits must not be negative"));
        }
        if !self.limits.allows_fallback(&self.fallback) {
            return Err(invalid("the default fallback exceeds the limits"));
        }
        let timing = &self.timing;
        if timing.tick_ms == 0 || timing.telemetry_interval_s == 0 {
            return Err(invalid("tick_ms and telemetry_interval_s must be positive"));
        }
        if timing.heartbeat_interval_s == 0 || timing.outbox_len_max == 0 {
            return Err(invalid(
                "heartbeat_interval_s and outbox_len_max must be positive",
            ));
        }
        if timing.records_max < 2 {
            return Err(invalid("records_max must be at least 2"));
        }
        self.verifier()?;
        match self.platform.transport {
            TransportKind::Mqtt if self.platform.mqtt_url.is_none() => {
                return Err(invalid(
                    "platform.mqtt_url is required for transport = \"mqtt\"",
                ));
            }
            TransportKind::Quic if self.platform.quic_addr.is_none() => {
                return Err(invalid(
                    "platform.quic_addr is required for transport = \"quic\"",
                ));
            }
            _ => {}
        }
        if self.driver.kind == DriverKind::Gpio && self.driver.gpio.is_none() {
            return Err(invalid("driver.gpio pins are required for kind = \"gpio\""));
        }
        self.battery_spec()?;
        Ok(())
    }

    /// The platform's schedule verifier.
    ///
    /// # Errors
    /// The key is not 64 hex digits of a valid ed25519 public key.
    pub fn verifier(&self) -> Result<ScheduleVerifier, ConfigError> {
        let bytes = hex32(&self.platform.schedule_public_key)
            .ok_or_else(|| invalid("platform.schedule_public_key must be 64 hex digits"))?;
        ScheduleVerifier::from_public_bytes(&bytes)
            .map_err(|error| invalid(format!("platform.schedule_public_key: {error}")))
    }

    /// The seed (configured, or a hash of the device id).
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            self.device_id
                .as_str()
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325, |h, b| splitmix64(h ^ u64::from(b)))
        })
    }

    /// The simulated battery's spec, with the configured limits as power limits.
    ///
    /// # Errors
    /// The spec breaks an invariant of [`BatterySpec::validate`].
    pub fn battery_spec(&self) -> Result<BatterySpec, ConfigError> {
        let battery = &self.battery;
        let spec = BatterySpec {
            capacity_wh: battery.capacity_wh,
            max_charge_w: self.limits.max_charge_w,
            max_discharge_w: self.limits.max_discharge_w,
            soc_min_wh: battery.soc_min_wh,
            soc_max_wh: battery.soc_max_wh.unwrap_or(battery.capacity_wh),
            charge_efficiency: battery.charge_efficiency,
            discharge_efficiency: battery.discharge_efficiency,
            standing_loss_per_hour: battery.standing_loss_per_hour,
            wear_cost_eur_per_mwh: Default::default(),
        };
        spec.validate()
            .map_err(|error| invalid(format!("battery: {error}")))?;
        Ok(spec)
    }

    /// The pure core's configuration.
    ///
    /// # Errors
    /// The key does not parse.
    pub fn core_config(&self) -> Result<CoreConfig, ConfigError> {
        let timing = &self.timing;
        let profile = AgentProfile {
            acceptance: AcceptanceConfig {
                limits: self.limits,
                signature: SignatureCheck::Verify(self.verifier()?),
                policy: AcceptancePolicy {
                    late_grace_s: timing.late_grace_s,
                    clock_skew_tolerance_s: timing.clock_skew_tolerance_s,
                },
            },
            executor: Arc::new(ExecutorConfig {
                limits: self.limits,
                default_fallback: self.fallback.clone(),
                fallback_ramp_s: timing.fallback_ramp_s,
                clock_step_tolerance_s: timing.clock_step_tolerance_s,
            }),
            outbox: OutboxConfig {
                len_max: timing.outbox_len_max,
            },
            records_max: timing.records_max,
        };
        Ok(CoreConfig {
            device: self.device_id.clone(),
            seed: self.seed(),
            profile: Arc::new(profile),
        })
    }
}
