//! The protocol's messages: what the platform sends a battery agent and what the agent
//! sends back, after IEEE 2030.5 DERControl / OCPP charging profiles where they fit.
//!
//! Downlink: [`SignedSchedule`] (a [`Schedule`] of power setpoints plus the platform's
//! ed25519 signature) and [`Receipt`] (the platform has stored the agent's reports up to
//! a sequence number). Uplink: [`Ack`] (2030.5-style response statuses), [`AckBatch`]
//! (several acks of one device in one message: what an agent sends, since one schedule
//! usually yields three or four acks at once: the previous version superseded, this one
//! received, accepted and started), [`TelemetryBatch`] and [`Heartbeat`]. Acks and
//! telemetry samples carry the agent's outbox sequence number so the agent can drop them
//! only once a receipt covers them.
//!
//! Sign convention: a setpoint's `target_w` is positive for discharge (power to the
//! grid) and negative for charge.
//!
//! # Invariants
//! Every value that [`Message::validate`] accepts is within the named bounds below
//! (`PERIODS_MAX`, `ACK_BATCH_MAX`, `TELEMETRY_BATCH_MAX`, `TARGET_W_ABS_MAX`, ...); the
//! codec validates every decoded message, so nothing out of bounds reaches an agent's
//! logic.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use voltex_market::UtcNanos;

use crate::signing::proof_steps;

/// Longest device id, in bytes.
pub const DEVICE_ID_LEN_MAX: usize = 64;
/// Most setpoint periods in one schedule (two weeks of quarter hours).
pub const PERIODS_MAX: usize = 1_344;
/// Largest absolute setpoint, in W (100 MW).
pub const TARGET_W_ABS_MAX: i64 = 100_000_000;
/// Longest ramp and longest randomised start, in seconds.
pub const RAMP_S_MAX: u32 = 3_600;
/// Most telemetry samples in one batch.
pub const TELEMETRY_BATCH_MAX: usize = 256;
/// Most acks in one [`AckBatch`].
pub const ACK_BATCH_MAX: usize = 64;
/// Longest schedule validity window, in seconds (35 days).
pub const VALIDITY_S_MAX: i64 = 35 * 24 * 3_600;
/// Length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// A message that breaks a protocol rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Device id empty, too long, or with characters outside `[A-Za-z0-9._-]`.
    #[error("invalid device id {0:?}: 1..=64 characters of [A-Za-z0-9._-]")]
    InvalidDeviceId(String),
    /// A field breaks its rule.
    #[error("invalid {field}: {rule}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// The rule it breaks.
        rule: &'static str,
    },
}

fn invalid(field: &'static str, rule: &'static str) -> ProtocolError {
    ProtocolError::Invalid { field, rule }
}

/// A device's identity: the common name of its certificate and its MQTT client id.
///
/// Shared text (`Arc<str>`): every ack, receipt, schedule and log line of a device carries
/// its id, so a clone is a reference count, not an allocation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(Arc<str>);

impl DeviceId {
    /// Checks and wraps a device id.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidDeviceId`] if empty, longer than [`DEVICE_ID_LEN_MAX`], or
    /// containing anything but ASCII letters, digits, `.`, `_` and `-` (so it is always
    /// a safe MQTT topic level and file name).
    pub fn new(id: impl Into<String>) -> Result<DeviceId, ProtocolError> {
        let id = id.into();
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if id.is_empty() || id.len() > DEVICE_ID_LEN_MAX || !id.chars().all(allowed) {
            return Err(ProtocolError::InvalidDeviceId(id));
        }
        Ok(DeviceId(Arc::from(id)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeviceId {
    type Error = ProtocolError;
    fn try_from(id: String) -> Result<Self, Self::Error> {
        DeviceId::new(id)
    }
}

impl From<DeviceId> for String {
    fn from(id: DeviceId) -> String {
        id.0.to_string()
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A schedule's identity (mRID-like, 128 bits). Versions of the same schedule share it.
///
/// Packed to 8-byte alignment: a `u128` would align every struct holding one to 16 and
/// pad it. A [`SignedSchedule`] is 144 bytes so, not 160, and its `Arc` fits the
/// allocator's 160-byte class instead of the 192-byte one; a platform and a simulated
/// fleet hold one per device. Read the field by value (`id.0`); it cannot be borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(C, packed(8))]
pub struct ScheduleId(pub u128);

impl fmt::Display for ScheduleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.0; // by value: packed
        write!(f, "{id:032x}")
    }
}

/// One setpoint period of a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SchedulePeriod {
    /// Start, in seconds after the schedule's (possibly randomised) start.
    pub offset_s: u32,
    /// Target power in W: positive discharges, negative charges.
    pub target_w: i64,
    /// Seconds to ramp linearly from the previous setpoint to this one (0 = step).
    pub ramp_s: u32,
}

/// What the device does when no schedule covers the present moment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Fallback {
    /// Neither charge nor discharge.
    Idle,
    /// Hold a fixed setpoint.
    Hold {
        /// Target power in W.
        target_w: i64,
    },
    /// Repeat a daily profile (UTC), one setpoint per slot.
    DailyProfile {
        /// Slot length in seconds; divides 86,400.
        slot_s: u32,
        /// One target per slot, `86_400 / slot_s` of them.
        targets_w: Vec<i64>,
    },
}

impl Fallback {
    /// The setpoint this fallback gives at `now`.
    pub fn target_w_at(&self, now: UtcNanos) -> i64 {
        match self {
            Fallback::Idle => 0,
            Fallback::Hold { target_w } => *target_w,
            Fallback::DailyProfile { slot_s, targets_w } => {
                let second_of_day = (now.0.div_euclid(1_000_000_000)).rem_euclid(86_400);
                let slot = (second_of_day / i64::from((*slot_s).max(1))) as usize;
                targets_w.get(slot).copied().unwrap_or(0)
            }
        }
    }

    fn validate(&self) -> Result<(), ProtocolError> {
        match self {
            Fallback::Idle => Ok(()),
            Fallback::Hold { target_w } => check_target(*target_w, "fallback.target_w"),
            Fallback::DailyProfile { slot_s, targets_w } => {
                if *slot_s == 0 || 86_400 % slot_s != 0 || *slot_s < 60 {
                    return Err(invalid("fallback.slot_s", "must divide 86400 and be >= 60"));
                }
                if targets_w.len() != (86_400 / slot_s) as usize {
                    return Err(invalid("fallback.targets_w", "needs one target per slot"));
                }
                targets_w
                    .iter()
                    .try_for_each(|t| check_target(*t, "fallback.targets_w"))
            }
        }
    }
}

fn check_target(target_w: i64, field: &'static str) -> Result<(), ProtocolError> {
    if target_w.abs() > TARGET_W_ABS_MAX {
        return Err(invalid(field, "absolute value above TARGET_W_ABS_MAX"));
    }
    Ok(())
}

/// A device schedule: setpoints over a validity window, issued by the platform.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Schedule {
    /// The device it commands.
    pub device: DeviceId,
    /// Identity shared by all versions.
    pub schedule_id: ScheduleId,
    /// Monotonic version: a newer version supersedes an older one for the same device.
    pub version: u64,
    /// When the platform issued it.
    pub issued_at: UtcNanos,
    /// Start of validity (period offsets count from here).
    pub valid_from: UtcNanos,
    /// End of validity (exclusive); after it the fallback applies.
    pub valid_until: UtcNanos,
    /// Upper bound of a random start delay, in seconds, so a fleet does not step at
    /// once (2030.5 `randomizeStart`). 0 = none.
    pub randomize_start_s: u32,
    /// Setpoint periods, offsets strictly increasing, the first at 0. Shared, not
    /// copied: the devices of a fleet group usually get the same periods, and a
    /// platform holds every device's schedule until it is acknowledged.
    pub periods: Arc<[SchedulePeriod]>,
    /// What to do outside the window.
    pub fallback: Fallback,
}

impl Schedule {
    /// Checks the protocol rules.
    ///
    /// # Errors
    /// The first rule broken, as [`ProtocolError::Invalid`].
    pub fn validate(&self) -> Result<(), ProtocolError> {
        if self.valid_until <= self.valid_from {
            return Err(invalid("valid_until", "must be after valid_from"));
        }
        let window_s = (self.valid_until.0 - self.valid_from.0) / 1_000_000_000;
        if window_s > VALIDITY_S_MAX {
            return Err(invalid(
                "valid_until",
                "validity window longer than VALIDITY_S_MAX",
            ));
        }
        if self.randomize_start_s > RAMP_S_MAX {
            return Err(invalid("randomize_start_s", "above RAMP_S_MAX"));
        }
        if self.periods.is_empty() || self.periods.len() > PERIODS_MAX {
            return Err(invalid("periods", "needs 1..=PERIODS_MAX periods"));
        }
        if self.periods[0].offset_s != 0 {
            return Err(invalid(
                "periods",
                "the first period must start at offset 0",
            ));
        }
        for pair in self.periods.windows(2) {
            if pair[1].offset_s <= pair[0].offset_s {
                return Err(invalid("periods", "offsets must increase strictly"));
            }
        }
        for period in self.periods.iter() {
            if i64::from(period.offset_s) >= window_s {
                return Err(invalid("periods", "a period starts after valid_until"));
            }
            if period.ramp_s > RAMP_S_MAX {
                return Err(invalid("periods.ramp_s", "above RAMP_S_MAX"));
            }
            check_target(period.target_w, "periods.target_w")?;
        }
        self.fallback.validate()
    }

    /// Index of the period in force `elapsed_s` seconds after the (randomised) start,
    /// if any.
    pub fn period_index_at(&self, elapsed_s: i64) -> Option<usize> {
        if elapsed_s < 0 {
            return None;
        }
        let position = self
            .periods
            .partition_point(|p| i64::from(p.offset_s) <= elapsed_s);
        position.checked_sub(1)
    }
}

/// A schedule with the platform's signature over its canonical encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedSchedule {
    /// The schedule.
    pub schedule: Schedule,
    /// ed25519 signature (64 bytes) by the platform's dispatch key, followed by the
    /// schedule's batch proof when the signature covers a roll-out batch; see
    /// [`crate::signing`].
    pub signature: Vec<u8>,
}

// Its `Arc` (16 bytes of counts on top) fills jemalloc's 160-byte class exactly: one
// more field costs a simulated fleet 32 bytes per device (see [`ScheduleId`]).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<SignedSchedule>() == 144);

/// Why an agent refused a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ScheduleRejection {
    /// The signature does not verify with the platform's key.
    InvalidSignature,
    /// The schedule names another device.
    WrongDevice,
    /// Its validity window has ended already.
    Expired,
    /// It arrived after its last period started and too late to be useful.
    Late,
    /// An older version than the one the agent holds.
    OlderVersion,
    /// A setpoint exceeds the device's power limits.
    ExceedsDeviceLimits,
    /// It breaks a protocol rule (see [`Schedule::validate`]).
    Malformed,
}

/// Why execution failed after acceptance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailureReason {
    /// The battery driver reported a fault.
    DriverFault,
    /// The local emergency stop is engaged.
    EmergencyStop,
    /// The device's state of charge made a setpoint impossible.
    SocLimit,
}

/// A 2030.5-style response status for a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AckStatus {
    /// Received and stored (durably) by the agent.
    Received,
    /// Verified and accepted.
    Accepted,
    /// Its first period started executing.
    Started,
    /// Its window ended with every period executed.
    Completed,
    /// Replaced by a newer version before it completed.
    Superseded {
        /// The version that replaced it.
        by_version: u64,
    },
    /// Refused.
    Rejected(ScheduleRejection),
    /// Accepted but could not be executed.
    Failed(FailureReason),
}

/// An agent's response to a schedule.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ack {
    /// Reporting device.
    pub device: DeviceId,
    /// The agent's outbox sequence number (for receipts).
    pub outbox_seq: u64,
    /// The schedule.
    pub schedule_id: ScheduleId,
    /// Its version.
    pub version: u64,
    /// What happened.
    pub status: AckStatus,
    /// When, on the agent's clock.
    pub at: UtcNanos,
}

/// One ack in an [`AckBatch`]: an [`Ack`] without the device, which the batch names once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AckEntry {
    /// The agent's outbox sequence number (for receipts).
    pub outbox_seq: u64,
    /// The schedule.
    pub schedule_id: ScheduleId,
    /// Its version.
    pub version: u64,
    /// What happened.
    pub status: AckStatus,
    /// When, on the agent's clock.
    pub at: UtcNanos,
}

/// Acks of one device, sent together (in outbox order).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AckBatch {
    /// Reporting device.
    pub device: DeviceId,
    /// The acks, 1..=[`ACK_BATCH_MAX`].
    pub acks: Vec<AckEntry>,
}

impl AckBatch {
    /// Each entry as a whole [`Ack`] (naming the batch's device).
    pub fn iter_acks(&self) -> impl Iterator<Item = Ack> + '_ {
        self.acks.iter().map(|entry| Ack {
            device: self.device.clone(),
            outbox_seq: entry.outbox_seq,
            schedule_id: entry.schedule_id,
            version: entry.version,
            status: entry.status,
            at: entry.at,
        })
    }
}

/// Health flags of a telemetry sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct HealthFlags(pub u32);

impl HealthFlags {
    /// The driver reports a fault.
    pub const DRIVER_FAULT: u32 = 1;
    /// The emergency stop is engaged.
    pub const EMERGENCY_STOP: u32 = 1 << 1;
    /// Running on the fallback control (no valid schedule).
    pub const ON_FALLBACK: u32 = 1 << 2;
    /// The agent's clock differs from the platform's by more than the tolerance.
    pub const CLOCK_SKEW: u32 = 1 << 3;
    /// Temperature outside the operating range.
    pub const OVER_TEMPERATURE: u32 = 1 << 4;
}

/// One telemetry sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Telemetry {
    /// The agent's outbox sequence number (for receipts).
    pub outbox_seq: u64,
    /// Sample time, on the agent's clock.
    pub at: UtcNanos,
    /// Energy stored, in Wh.
    pub soc_wh: i64,
    /// Power now, in W (positive discharge).
    pub power_w: i64,
    /// Energy taken from the grid since commissioning, in Wh.
    pub charged_wh: u64,
    /// Energy delivered to the grid since commissioning, in Wh.
    pub discharged_wh: u64,
    /// Temperature in milli-degrees Celsius.
    pub temperature_mc: i32,
    /// Health flags.
    pub health: HealthFlags,
}

/// Telemetry samples of one device.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TelemetryBatch {
    /// Reporting device.
    pub device: DeviceId,
    /// Samples, at most [`TELEMETRY_BATCH_MAX`].
    pub samples: Vec<Telemetry>,
}

/// Liveness report.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Reporting device.
    pub device: DeviceId,
    /// When, on the agent's clock.
    pub at: UtcNanos,
    /// Seconds since the agent started.
    pub uptime_s: u64,
    /// The schedule in force, if any.
    pub active: Option<(ScheduleId, u64)>,
    /// Reports waiting in the agent's outbox for a receipt.
    pub outbox_len: u32,
}

/// The platform has durably stored every ack and telemetry sample of `device` with
/// `outbox_seq <= through_seq`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Receipt {
    /// Device whose reports were stored.
    pub device: DeviceId,
    /// Highest outbox sequence number covered (cumulative).
    pub through_seq: u64,
}

/// Every message of protocol version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Platform → agent: a signed schedule.
    Schedule(SignedSchedule),
    /// Platform → agent: reports stored.
    Receipt(Receipt),
    /// Agent → platform: a schedule response.
    Ack(Ack),
    /// Agent → platform: telemetry.
    Telemetry(TelemetryBatch),
    /// Agent → platform: liveness.
    Heartbeat(Heartbeat),
    /// Agent → platform: several schedule responses (appended last, so the binary
    /// encoding of the variants above is unchanged).
    Acks(AckBatch),
}

impl Message {
    /// The device the message is about.
    pub fn device(&self) -> &DeviceId {
        match self {
            Message::Schedule(signed) => &signed.schedule.device,
            Message::Receipt(receipt) => &receipt.device,
            Message::Ack(ack) => &ack.device,
            Message::Telemetry(batch) => &batch.device,
            Message::Heartbeat(heartbeat) => &heartbeat.device,
            Message::Acks(batch) => &batch.device,
        }
    }

    /// How many acks the message carries (see [`Message::acks`]).
    pub fn ack_count(&self) -> usize {
        match self {
            Message::Ack(_) => 1,
            Message::Acks(batch) => batch.acks.len(),
            _ => 0,
        }
    }

    /// The acks the message carries: one for [`Message::Ack`], each of an
    /// [`Message::Acks`] batch, none for the other kinds.
    pub fn acks(&self) -> impl Iterator<Item = Ack> + '_ {
        let single = match self {
            Message::Ack(ack) => Some(ack.clone()),
            _ => None,
        };
        let batch = match self {
            Message::Acks(batch) => Some(batch),
            _ => None,
        };
        single
            .into_iter()
            .chain(batch.into_iter().flat_map(AckBatch::iter_acks))
    }

    /// Checks the protocol rules of the message (not its signature).
    ///
    /// # Errors
    /// The first rule broken.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        match self {
            Message::Schedule(signed) => {
                if proof_steps(signed.signature.len()).is_none() {
                    return Err(invalid(
                        "signature",
                        "must be 64 bytes, then at most 32 batch proof steps of 33 bytes",
                    ));
                }
                signed.schedule.validate()
            }
            Message::Telemetry(batch) => {
                if batch.samples.is_empty() || batch.samples.len() > TELEMETRY_BATCH_MAX {
                    return Err(invalid("samples", "needs 1..=TELEMETRY_BATCH_MAX samples"));
                }
                Ok(())
            }
            Message::Acks(batch) => {
                if batch.acks.is_empty() || batch.acks.len() > ACK_BATCH_MAX {
                    return Err(invalid("acks", "needs 1..=ACK_BATCH_MAX acks"));
                }
                Ok(())
            }
            Message::Receipt(_) | Message::Ack(_) | Message::Heartbeat(_) => Ok(()),
        }
    }
}
