//! The delivery state machine of dispatch: which schedule version each device holds,
//! what it said about it, when to send it again, and the operator's view of a roll-out.
//!
//! [`Tracker`] is pure: every method takes the time (`now`, platform UTC) and returns
//! what the caller must persist ([`DeliveryUpdate`]) and send ([`Dispatch`]); it does no
//! I/O and reads no clock, so tests drive it through any sequence of events.
//!
//! # States of one schedule version
//! `issued` (stored, being sent) → `received` (the agent stored it) → `accepted` →
//! `started` → `completed`; or final `rejected` (with the agent's reason), `superseded`
//! (a newer version replaced it) or `failed` (no ack before the deadline, or the agent
//! could not execute it). Rules:
//! - Only the newest version of a device is sent; it is re-sent with exponential
//!   back-off (seeded jitter, `[bound/2, bound]`, the bound doubling up to
//!   [`TrackerConfig::retry_delay_max`]) until the first ack of any kind, or until its
//!   deadline, when it becomes `failed` ([`FailureCause::DeadlinePassed`]).
//! - **Adaptive first bound.** The first bound is
//!   [`TrackerConfig::retry_latency_factor`] × the p99 of the recent hand-off-to-ack
//!   latencies (a window of [`TrackerConfig::latency_window`] samples), clamped to
//!   [`TrackerConfig::retry_delay_floor`]..=`retry_delay_max`; before
//!   [`LATENCY_SAMPLES_MIN`] samples exist it is [`TrackerConfig::retry_delay_min`].
//!   Only versions acked after exactly one attempt are sampled (Karn's rule: an ack
//!   after a re-send cannot be attributed to one send).
//! - **No re-send while the transport still holds the last send.** The back-off clock
//!   of an attempt starts when the link reports it handed the schedule to the transport
//!   ([`Tracker::on_handed_off`]), not when it was queued for the link; until then only
//!   the deadline is pending.
//! - **Retry budget.** Re-sends (attempts after the first) draw from a fleet-wide token
//!   bucket ([`TrackerConfig::retry_rate_per_s`], burst
//!   [`TrackerConfig::retry_burst`], in the GCRA form); a re-send without a token is
//!   given the next free slot instead, so a mass re-send is spread out rather than
//!   flooding the broker and the agents. First attempts never wait for tokens.
//! - Issuing a newer version marks an older, still unacknowledged version
//!   `superseded` at once (its retries stop); an older version the agent already
//!   acknowledged keeps its state until the agent reports it superseded.
//! - Agent acks move the state forward only (a late `received` after `started` is
//!   ignored). The first final status the *agent* reports wins over one the platform
//!   decided (a late ack after a deadline failure tells the truth), and is itself final.
//! - Success rate: a version counts as a success once it was accepted (unless it later
//!   failed), as a failure when rejected or failed, and not at all while pending or
//!   when superseded before acceptance.
//!
//! # Receipts
//! A receipt is cumulative: `through_seq` tells the agent to drop every report up to
//! it. The tracker therefore receipts only the *contiguous* prefix of a device's
//! outbox sequence numbers that is stored ([`Tracker::on_uplink`]): when a broker drops
//! one ack and passes a later one, the receipt stops below the hole, and the agent,
//! seeing no progress, re-sends its unreceipted outbox, hole included. Numbers above a
//! hole are remembered (at most [`TrackerConfig::receipt_holes_seqs_max`] per device);
//! a hole not filled within [`TrackerConfig::receipt_hole_wait`] (an agent whose
//! bounded outbox dropped old telemetry leaves one for good) is skipped and counted.
//! After a start or restore, a device's first report sets where its window starts.
//!
//! # Restart
//! [`Tracker::restore`] rebuilds the tracker from what the store kept (the newest
//! version of every device with its delivery state, last seen): a version still
//! `issued` is due again at once (a re-send of the same signed schedule, which the
//! agent treats as a duplicate) and keeps its deadline; any other state is kept as is
//! and never re-sent; a new roll-out must still be above the stored version. Restored
//! versions join their stored roll-out, or one new roll-out when the store kept none.
//!
//! # Invariants ([`Tracker::check_invariants`])
//! - At most one version per device is `issued`, and it is the newest; every `issued`
//!   version has a next attempt time no later than its deadline.
//! - A roll-out's pending count equals its members still `issued`.
//! - The fleet's success and failure counts are the sums of the devices'.
//! - Bounded: at most [`TrackerConfig::devices_max`] devices,
//!   [`TrackerConfig::versions_per_device_max`] versions per device (oldest dropped) and
//!   [`TrackerConfig::rollouts_max`] roll-outs (oldest dropped).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use voltex_dispatch::message::{AckStatus, FailureReason, ScheduleRejection};
use voltex_dispatch::receipt::ReceiptWindow;
pub use voltex_dispatch::receipt::Receipted;
use voltex_dispatch::{Ack, DeviceId, Schedule, SignedSchedule};
use voltex_market::UtcNanos;

use super::TransportKind;
use super::store::{DeliveryUpdate, ResumeDevice};

/// Latency samples needed before the retry bound follows the observed p99.
pub const LATENCY_SAMPLES_MIN: usize = 16;

/// Limits and timing of the tracker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackerConfig {
    /// Back-off bound after the first attempt while too few hand-off-to-ack latencies
    /// have been observed (see the module doc).
    pub retry_delay_min: Duration,
    /// Smallest first back-off bound derived from observed latencies.
    pub retry_delay_floor: Duration,
    /// The first back-off bound is this many times the observed p99 latency.
    pub retry_latency_factor: u32,
    /// Hand-off-to-ack latencies kept for the p99 (the most recent ones).
    pub latency_window: usize,
    /// Re-sends per second, fleet-wide, in steady state.
    pub retry_rate_per_s: u32,
    /// Re-sends allowed at once above the rate.
    pub retry_burst: u32,
    /// Largest back-off bound.
    pub retry_delay_max: Duration,
    /// Deadline of a version issued without one: issue time plus this, but never after
    /// the schedule's `valid_until`.
    pub delivery_timeout: Duration,
    /// A device not heard from for this long counts as offline.
    pub offline_after: Duration,
    /// Devices listed in [`RolloutStatus::slowest`].
    pub slowest_max: usize,
    /// Most devices tracked.
    pub devices_max: usize,
    /// Most versions kept per device (oldest dropped first).
    pub versions_per_device_max: usize,
    /// Most roll-outs kept (oldest dropped first).
    pub rollouts_max: usize,
    /// How long a hole in a device's stored outbox sequence numbers holds back its
    /// receipts before it is skipped (longer than the agents' re-send interval, 60 s by
    /// default, so a lost report is re-sent first).
    pub receipt_hole_wait: Duration,
    /// Most sequence numbers remembered above a hole per device; beyond, the hole is
    /// skipped at once.
    pub receipt_holes_seqs_max: usize,
    /// Seed of the retry jitter.
    pub seed: u64,
}

impl Default for TrackerConfig {
    /// First retry after 4 × the observed p99 hand-off-to-ack latency (at least
    /// 100 ms; 1 s before 16 samples, window 1,024), doubling up to 60 s; 2,000
    /// re-sends/s fleet-wide with a burst of 1,000; 15 min deadline, offline after
    /// 3 min of silence, 10 slowest devices, 1,000,000 devices, 8 versions each, 256
    /// roll-outs; a receipt hole waits 150 s (4,096 numbers above it at most).
    fn default() -> Self {
        TrackerConfig {
            retry_delay_min: Duration::from_secs(1),
            retry_delay_floor: Duration::from_millis(100),
            retry_latency_factor: 4,
            latency_window: 1_024,
            retry_rate_per_s: 2_000,
            retry_burst: 1_000,
            retry_delay_max: Duration::from_secs(60),
            delivery_timeout: Duration::from_secs(15 * 60),
            offline_after: Duration::from_secs(180),
            slowest_max: 10,
            devices_max: 1_000_000,
            versions_per_device_max: 8,
            rollouts_max: 256,
            receipt_hole_wait: Duration::from_secs(150),
            receipt_holes_seqs_max: 4_096,
            seed: 0,
        }
    }
}

/// Identity of a roll-out: a set of schedule versions issued together. Ids increase
/// and are never below the issue time in nanoseconds, so they stay unique across
/// restarts of a platform whose clock does not step back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RolloutId(pub u64);

impl std::fmt::Display for RolloutId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a version failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCause {
    /// No ack before the deadline (decided by the platform).
    DeadlinePassed,
    /// The agent's driver reported a fault.
    DriverFault,
    /// The agent's emergency stop is engaged.
    EmergencyStop,
    /// The battery's state of charge made it impossible.
    SocLimit,
}

impl From<FailureReason> for FailureCause {
    fn from(reason: FailureReason) -> FailureCause {
        match reason {
            FailureReason::DriverFault => FailureCause::DriverFault,
            FailureReason::EmergencyStop => FailureCause::EmergencyStop,
            FailureReason::SocLimit => FailureCause::SocLimit,
        }
    }
}

/// Where a schedule version stands. See the module doc for the transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeliveryState {
    /// Stored and being sent; no ack yet.
    Issued,
    /// The agent stored it.
    Received,
    /// The agent verified and accepted it.
    Accepted,
    /// Its first period started.
    Started,
    /// Final: every period executed.
    Completed,
    /// Final: the agent refused it.
    Rejected {
        /// The agent's reason.
        reason: ScheduleRejection,
    },
    /// Final: a newer version replaced it.
    Superseded {
        /// The newer version.
        by_version: u64,
    },
    /// Final: deadline passed without an ack, or execution failed.
    Failed {
        /// Why.
        cause: FailureCause,
    },
}

impl DeliveryState {
    /// Progress order: issued 0, received 1, accepted 2, started 3, final 4.
    pub const fn rank(self) -> u8 {
        match self {
            DeliveryState::Issued => 0,
            DeliveryState::Received => 1,
            DeliveryState::Accepted => 2,
            DeliveryState::Started => 3,
            DeliveryState::Completed
            | DeliveryState::Rejected { .. }
            | DeliveryState::Superseded { .. }
            | DeliveryState::Failed { .. } => 4,
        }
    }

    /// Whether the state is final.
    pub const fn is_final(self) -> bool {
        self.rank() == 4
    }

    /// The lower-case name (`issued`, ..., `failed`), for metric labels and counts.
    pub const fn name(self) -> &'static str {
        match self {
            DeliveryState::Issued => "issued",
            DeliveryState::Received => "received",
            DeliveryState::Accepted => "accepted",
            DeliveryState::Started => "started",
            DeliveryState::Completed => "completed",
            DeliveryState::Rejected { .. } => "rejected",
            DeliveryState::Superseded { .. } => "superseded",
            DeliveryState::Failed { .. } => "failed",
        }
    }

    /// The state an agent's ack status reports.
    pub fn of_ack(status: AckStatus) -> DeliveryState {
        match status {
            AckStatus::Received => DeliveryState::Received,
            AckStatus::Accepted => DeliveryState::Accepted,
            AckStatus::Started => DeliveryState::Started,
            AckStatus::Completed => DeliveryState::Completed,
            AckStatus::Superseded { by_version } => DeliveryState::Superseded { by_version },
            AckStatus::Rejected(reason) => DeliveryState::Rejected { reason },
            AckStatus::Failed(reason) => DeliveryState::Failed {
                cause: reason.into(),
            },
        }
    }
}

/// Why the tracker refused to issue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    /// A version not above the device's newest known version.
    #[error("device {device}: version {version} is not above the latest {latest}")]
    StaleVersion {
        /// The device.
        device: DeviceId,
        /// The version offered.
        version: u64,
        /// The newest version known.
        latest: u64,
    },
    /// The same device twice in one roll-out.
    #[error("device {0} appears twice in one roll-out")]
    DuplicateDevice(DeviceId),
    /// Tracking the roll-out would exceed [`TrackerConfig::devices_max`].
    #[error("more than {0} devices")]
    TooManyDevices(usize),
    /// A roll-out with no schedule.
    #[error("a roll-out needs at least one schedule")]
    Empty,
}

/// A schedule to hand to a transport now.
#[derive(Clone, Debug)]
pub struct Dispatch {
    /// Where to.
    pub device: DeviceId,
    /// The registered or last-heard transport, if any (else the caller's default).
    pub transport: Option<TransportKind>,
    /// What.
    pub signed: Arc<SignedSchedule>,
    /// Attempt number, from 1.
    pub attempt: u32,
}

/// What an uplink ack did to the tracked state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AckEffect {
    /// The version is tracked.
    pub known: bool,
    /// This was the version's first ack: time since issue.
    pub first_ack_latency: Option<Duration>,
}

/// Counts of versions per state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    /// Still being sent.
    pub issued: u64,
    /// Stored by the agent.
    pub received: u64,
    /// Accepted.
    pub accepted: u64,
    /// Executing.
    pub started: u64,
    /// Done.
    pub completed: u64,
    /// Refused by the agent.
    pub rejected: u64,
    /// Replaced by a newer version.
    pub superseded: u64,
    /// Deadline passed or execution failed.
    pub failed: u64,
}

impl StateCounts {
    fn add(&mut self, state: DeliveryState) {
        let slot = match state {
            DeliveryState::Issued => &mut self.issued,
            DeliveryState::Received => &mut self.received,
            DeliveryState::Accepted => &mut self.accepted,
            DeliveryState::Started => &mut self.started,
            DeliveryState::Completed => &mut self.completed,
            DeliveryState::Rejected { .. } => &mut self.rejected,
            DeliveryState::Superseded { .. } => &mut self.superseded,
            DeliveryState::Failed { .. } => &mut self.failed,
        };
        *slot += 1;
    }

    /// Versions no longer waiting for their first ack.
    pub fn n_settled(&self) -> u64 {
        self.received
            + self.accepted
            + self.started
            + self.completed
            + self.rejected
            + self.superseded
            + self.failed
    }
}

/// One device in [`RolloutStatus::slowest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlowDevice {
    /// The device.
    pub device: DeviceId,
    /// Its version in the roll-out.
    pub version: u64,
    /// Where it stands.
    pub state: DeliveryState,
    /// Delivery attempts.
    pub attempts: u32,
    /// Whether any ack arrived.
    pub acked: bool,
    /// Issue to first ack, or to now while unacknowledged, in ms.
    pub waited_ms: f64,
}

/// The operator's snapshot of a roll-out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutStatus {
    /// The roll-out.
    pub rollout: RolloutId,
    /// Devices (versions) in it.
    pub n_devices: u64,
    /// Versions per state.
    pub counts: StateCounts,
    /// Rejections per agent reason.
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Versions with at least one ack.
    pub n_acked: u64,
    /// Successes / (successes + failures), if any outcome is known.
    pub success_rate: Option<f64>,
    /// Issue time, UTC ns.
    pub started_at_ns: i64,
    /// When the last version stopped waiting for its first ack (acked, failed or
    /// superseded), UTC ns.
    pub finished_at_ns: Option<i64>,
    /// Issue to finish, or to now while running, in ms.
    pub elapsed_ms: f64,
    /// Median issue-to-first-ack latency of the acked versions, ms.
    pub ack_latency_p50_ms: Option<f64>,
    /// 99th percentile issue-to-first-ack latency, ms.
    pub ack_latency_p99_ms: Option<f64>,
    /// The slowest devices: unacknowledged ones first (longest waiting), then the
    /// acknowledged ones with the longest latency.
    pub slowest: Vec<SlowDevice>,
}

/// One device, for the fleet API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// The device.
    pub device: DeviceId,
    /// The transport it was registered on, else last heard on.
    pub transport: Option<TransportKind>,
    /// Heard from within [`TrackerConfig::offline_after`].
    pub online: bool,
    /// Last uplink message, UTC ns.
    pub last_seen_at_ns: Option<i64>,
    /// Last reported state of charge, Wh.
    pub last_soc_wh: Option<i64>,
    /// The newest version and its state.
    pub latest: Option<(u64, DeliveryState)>,
    /// Versions that succeeded.
    pub n_succeeded: u64,
    /// Versions that were rejected or failed.
    pub n_failed: u64,
    /// Command success rate, if any outcome is known.
    pub success_rate: Option<f64>,
}

/// The fleet at a glance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// Devices tracked.
    pub n_devices: u64,
    /// Devices heard from within [`TrackerConfig::offline_after`].
    pub n_online: u64,
    /// Newest version of every device, per state.
    pub latest_counts: StateCounts,
    /// Versions that succeeded, fleet-wide.
    pub n_succeeded: u64,
    /// Versions rejected or failed, fleet-wide.
    pub n_failed: u64,
    /// Fleet-wide command success rate, if any outcome is known.
    pub success_rate: Option<f64>,
    /// Roll-outs kept, oldest first.
    pub rollouts: Vec<RolloutId>,
}

#[derive(Clone, Debug)]
struct Version {
    rollout: RolloutId,
    signed: Arc<SignedSchedule>,
    state: DeliveryState,
    /// The agent reported a final state.
    agent_final: bool,
    was_accepted: bool,
    attempts: u32,
    issued_at: UtcNanos,
    deadline: UtcNanos,
    first_ack_at: Option<UtcNanos>,
    next_attempt_at: Option<UtcNanos>,
    /// The back-off drawn for the last attempt, while the link has not yet handed it
    /// to the transport ([`Tracker::on_handed_off`] starts the clock).
    awaiting_handoff: Option<Duration>,
    /// When the last attempt was handed to the transport.
    handed_off_at: Option<UtcNanos>,
    /// This retry already holds a slot of the retry budget.
    retry_slot_held: bool,
}

/// +1 success, -1 failure, 0 neither.
fn outcome(version: &Version) -> i8 {
    match version.state {
        DeliveryState::Rejected { .. } | DeliveryState::Failed { .. } => -1,
        _ if version.was_accepted => 1,
        _ => 0,
    }
}

#[derive(Clone, Debug, Default)]
struct Device {
    registered: Option<TransportKind>,
    heard_on: Option<TransportKind>,
    last_seen: Option<UtcNanos>,
    last_soc_wh: Option<i64>,
    receipts: ReceiptWindow,
    versions: BTreeMap<u64, Version>,
    n_succeeded: u64,
    n_failed: u64,
}

#[derive(Clone, Debug)]
struct Rollout {
    started_at: UtcNanos,
    finished_at: Option<UtcNanos>,
    members: Vec<(DeviceId, u64)>,
    n_pending: usize,
}

/// A heap entry: due time, tie-break, device, version.
type Due = Reverse<(UtcNanos, u64, DeviceId, u64)>;

/// The delivery state machine. See the module doc.
#[derive(Debug)]
pub struct Tracker {
    config: TrackerConfig,
    devices: HashMap<DeviceId, Device>,
    due: BinaryHeap<Due>,
    n_due_pushed: u64,
    rollouts: BTreeMap<RolloutId, Rollout>,
    last_rollout: u64,
    rng: StdRng,
    n_succeeded: u64,
    n_failed: u64,
    /// Recent hand-off-to-first-ack latencies (Karn-sampled), oldest first.
    latencies: std::collections::VecDeque<Duration>,
    /// Samples added since `latency_p99` was computed.
    latencies_fresh: usize,
    latency_p99: Option<Duration>,
    /// GCRA theoretical arrival time of the next re-send.
    retry_tat: UtcNanos,
    /// Re-sends counted (attempts after the first).
    n_retries: u64,
    /// Re-sends that had to wait for the retry budget.
    n_retries_deferred: u64,
}

fn nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

fn since(now: UtcNanos, then: UtcNanos) -> Duration {
    Duration::from_nanos(u64::try_from(now.0.saturating_sub(then.0)).unwrap_or(0))
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

fn rate(n_succeeded: u64, n_failed: u64) -> Option<f64> {
    let total = n_succeeded + n_failed;
    (total > 0).then(|| n_succeeded as f64 / total as f64)
}

/// The `q` quantile of sorted values (nearest rank).
fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

impl Tracker {
    /// An empty tracker.
    pub fn new(config: TrackerConfig) -> Tracker {
        let rng = StdRng::seed_from_u64(config.seed);
        Tracker {
            config,
            devices: HashMap::new(),
            due: BinaryHeap::new(),
            n_due_pushed: 0,
            rollouts: BTreeMap::new(),
            last_rollout: 0,
            rng,
            n_succeeded: 0,
            n_failed: 0,
            latencies: std::collections::VecDeque::new(),
            latencies_fresh: 0,
            latency_p99: None,
            retry_tat: UtcNanos(i64::MIN),
            n_retries: 0,
            n_retries_deferred: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TrackerConfig {
        &self.config
    }

    fn device_mut(&mut self, device: &DeviceId) -> Option<&mut Device> {
        if !self.devices.contains_key(device) {
            if self.devices.len() >= self.config.devices_max {
                return None;
            }
            self.devices.insert(device.clone(), Device::default());
        }
        self.devices.get_mut(device)
    }

    /// Registers the transport a device is reached over (it wins over the transport the
    /// device was last heard on).
    ///
    /// # Errors
    /// [`TrackerError::TooManyDevices`].
    pub fn register(
        &mut self,
        device: &DeviceId,
        transport: TransportKind,
    ) -> Result<(), TrackerError> {
        let devices_max = self.config.devices_max;
        let entry = self
            .device_mut(device)
            .ok_or(TrackerError::TooManyDevices(devices_max))?;
        entry.registered = Some(transport);
        Ok(())
    }

    /// The newest version known for a device.
    pub fn latest_version(&self, device: &DeviceId) -> Option<u64> {
        self.devices
            .get(device)
            .and_then(|d| d.versions.last_key_value().map(|(v, _)| *v))
    }

    /// Checks that `schedules` can be issued as one roll-out: at least one, one per
    /// device, every version above the device's newest, within the device bound.
    ///
    /// # Errors
    /// The first problem found.
    pub fn check_issue<'a>(
        &self,
        schedules: impl IntoIterator<Item = &'a Schedule>,
    ) -> Result<(), TrackerError> {
        let mut seen = std::collections::HashSet::new();
        let mut n_new = 0usize;
        for schedule in schedules {
            if !seen.insert(&schedule.device) {
                return Err(TrackerError::DuplicateDevice(schedule.device.clone()));
            }
            match self.latest_version(&schedule.device) {
                Some(latest) if schedule.version <= latest => {
                    return Err(TrackerError::StaleVersion {
                        device: schedule.device.clone(),
                        version: schedule.version,
                        latest,
                    });
                }
                _ => {}
            }
            if !self.devices.contains_key(&schedule.device) {
                n_new += 1;
            }
        }
        if seen.is_empty() {
            return Err(TrackerError::Empty);
        }
        if self.devices.len() + n_new > self.config.devices_max {
            return Err(TrackerError::TooManyDevices(self.config.devices_max));
        }
        Ok(())
    }

    /// The deadline of a version issued at `now` without an explicit one.
    pub fn default_deadline(&self, now: UtcNanos, schedule: &Schedule) -> UtcNanos {
        let by_timeout = UtcNanos(now.0.saturating_add(nanos(self.config.delivery_timeout)));
        by_timeout.min(schedule.valid_until)
    }

    /// Starts tracking a roll-out of signed, already persisted versions, each with its
    /// delivery deadline. Every version is due for its first attempt at `now`. Older
    /// unacknowledged versions of the same devices become `superseded` (pushed to
    /// `updates`).
    ///
    /// # Errors
    /// As [`Tracker::check_issue`]; nothing changes on error.
    pub fn issue(
        &mut self,
        now: UtcNanos,
        versions: Vec<(Arc<SignedSchedule>, UtcNanos)>,
        updates: &mut Vec<DeliveryUpdate>,
    ) -> Result<RolloutId, TrackerError> {
        self.check_issue(versions.iter().map(|(signed, _)| &signed.schedule))?;
        let id = RolloutId(
            self.last_rollout
                .saturating_add(1)
                .max(u64::try_from(now.0).unwrap_or(0)),
        );
        self.last_rollout = id.0;
        let mut members = Vec::with_capacity(versions.len());
        for (signed, deadline) in versions {
            let schedule = &signed.schedule;
            let device_id = schedule.device.clone();
            let version_number = schedule.version;
            // check_issue made sure every new device fits the bound.
            let device = self.devices.entry(device_id.clone()).or_default();
            for (older_number, older) in device.versions.iter_mut() {
                if older.state == DeliveryState::Issued {
                    older.state = DeliveryState::Superseded {
                        by_version: version_number,
                    };
                    older.next_attempt_at = None;
                    updates.push(DeliveryUpdate::State {
                        device: device_id.clone(),
                        schedule_id: older.signed.schedule.schedule_id,
                        version: *older_number,
                        state: older.state,
                        at: now,
                        by_agent: false,
                    });
                    if let Some(rollout) = self.rollouts.get_mut(&older.rollout) {
                        Self::settle(rollout, now);
                    }
                }
            }
            device.versions.insert(
                version_number,
                Version {
                    rollout: id,
                    signed,
                    state: DeliveryState::Issued,
                    agent_final: false,
                    was_accepted: false,
                    attempts: 0,
                    issued_at: now,
                    deadline: deadline.max(now),
                    first_ack_at: None,
                    next_attempt_at: Some(now),
                    awaiting_handoff: None,
                    handed_off_at: None,
                    retry_slot_held: false,
                },
            );
            while device.versions.len() > self.config.versions_per_device_max.max(1) {
                // Only the newest version can be issued, so nothing pending is dropped.
                device.versions.pop_first();
            }
            self.n_due_pushed += 1;
            self.due.push(Reverse((
                now,
                self.n_due_pushed,
                device_id.clone(),
                version_number,
            )));
            members.push((device_id, version_number));
        }
        let n_pending = members.len();
        self.rollouts.insert(
            id,
            Rollout {
                started_at: now,
                finished_at: None,
                members,
                n_pending,
            },
        );
        while self.rollouts.len() > self.config.rollouts_max.max(1) {
            self.rollouts.pop_first();
        }
        Ok(id)
    }

    /// Rebuilds the state of a restarted platform from the store's resume state (see
    /// the module doc) at `now`; call it on an empty tracker, before any roll-out.
    /// Returns how many versions are pending (`issued`) again. Devices beyond
    /// [`TrackerConfig::devices_max`] are skipped.
    pub fn restore(&mut self, now: UtcNanos, devices: Vec<ResumeDevice>) -> usize {
        let fresh = RolloutId(
            self.last_rollout
                .saturating_add(1)
                .max(u64::try_from(now.0).unwrap_or(0)),
        );
        let mut n_pending = 0;
        for resume in devices {
            if self.device_mut(&resume.device).is_none() {
                tracing::warn!(device = %resume.device, "device bound reached: not restored");
                continue;
            }
            let Some(device) = self.devices.get_mut(&resume.device) else {
                continue;
            };
            if let Some(seen) = resume.last_seen {
                device.last_seen = Some(device.last_seen.map_or(seen, |s| s.max(seen)));
            }
            if resume.last_soc_wh.is_some() {
                device.last_soc_wh = resume.last_soc_wh;
            }
            let Some(latest) = resume.latest else {
                continue;
            };
            let number = latest.signed.schedule.version;
            if device
                .versions
                .last_key_value()
                .is_some_and(|(newest, _)| *newest >= number)
            {
                continue;
            }
            let rollout_id = latest.rollout.unwrap_or(fresh);
            let issued = latest.state == DeliveryState::Issued;
            let issued_at = latest.signed.schedule.issued_at;
            let mut version = Version {
                rollout: rollout_id,
                signed: latest.signed,
                state: latest.state,
                agent_final: false,
                was_accepted: matches!(
                    latest.state,
                    DeliveryState::Accepted | DeliveryState::Started | DeliveryState::Completed
                ),
                attempts: latest.attempts,
                issued_at,
                deadline: latest.deadline,
                first_ack_at: None,
                next_attempt_at: None,
                awaiting_handoff: None,
                handed_off_at: None,
                retry_slot_held: false,
            };
            if issued {
                // Due at once; a deadline already passed fails it on the first take.
                version.next_attempt_at = Some(now);
                version.deadline = version.deadline.max(now);
            }
            // A state the platform decided (failed by deadline, superseded) may still be
            // corrected by a late ack; one the agent reported we cannot tell apart, so
            // final states stay as stored.
            version.agent_final = matches!(
                latest.state,
                DeliveryState::Completed | DeliveryState::Rejected { .. }
            ) || matches!(
                latest.state,
                DeliveryState::Failed { cause } if cause != FailureCause::DeadlinePassed
            );
            let sign = outcome(&version);
            device.versions.insert(number, version);
            match sign {
                1 => {
                    device.n_succeeded += 1;
                    self.n_succeeded += 1;
                }
                -1 => {
                    device.n_failed += 1;
                    self.n_failed += 1;
                }
                _ => {}
            }
            let rollout = self.rollouts.entry(rollout_id).or_insert(Rollout {
                started_at: issued_at,
                finished_at: None,
                members: Vec::new(),
                n_pending: 0,
            });
            rollout.started_at = rollout.started_at.min(issued_at);
            rollout.members.push((resume.device.clone(), number));
            if issued {
                rollout.n_pending += 1;
                n_pending += 1;
                self.n_due_pushed += 1;
                self.due
                    .push(Reverse((now, self.n_due_pushed, resume.device, number)));
            }
        }
        for rollout in self.rollouts.values_mut() {
            rollout.finished_at = match rollout.n_pending {
                0 => Some(rollout.finished_at.unwrap_or(now)),
                _ => None,
            };
        }
        self.last_rollout = self
            .last_rollout
            .max(self.rollouts.keys().next_back().map_or(0, |id| id.0));
        while self.rollouts.len() > self.config.rollouts_max.max(1) {
            self.rollouts.pop_first();
        }
        n_pending
    }

    /// One member of `rollout` stopped waiting for its first ack.
    fn settle(rollout: &mut Rollout, now: UtcNanos) {
        rollout.n_pending = rollout.n_pending.saturating_sub(1);
        if rollout.n_pending == 0 && rollout.finished_at.is_none() {
            rollout.finished_at = Some(now);
        }
    }

    /// The first back-off bound: see the module doc.
    pub fn first_retry_bound(&self) -> Duration {
        match self.latency_p99 {
            Some(p99) if self.latencies.len() >= LATENCY_SAMPLES_MIN => p99
                .saturating_mul(self.config.retry_latency_factor.max(1))
                .clamp(
                    self.config.retry_delay_floor,
                    self.config
                        .retry_delay_max
                        .max(self.config.retry_delay_floor),
                ),
            _ => self.config.retry_delay_min,
        }
    }

    /// The p99 of the recent hand-off-to-ack latencies, if sampled yet.
    pub fn latency_p99(&self) -> Option<Duration> {
        self.latency_p99
    }

    /// Re-sends so far, and how many of them waited for the retry budget.
    pub fn retry_counts(&self) -> (u64, u64) {
        (self.n_retries, self.n_retries_deferred)
    }

    fn sample_latency(&mut self, latency: Duration) {
        let window = self.config.latency_window.max(1);
        while self.latencies.len() >= window {
            self.latencies.pop_front();
        }
        self.latencies.push_back(latency);
        self.latencies_fresh += 1;
    }

    /// Recomputes the p99 when enough new samples arrived (at most once per call).
    fn refresh_p99(&mut self) {
        let n = self.latencies.len();
        let stale = self.latency_p99.is_none() || self.latencies_fresh >= (n / 16).max(1);
        if n == 0 || self.latencies_fresh == 0 || !stale {
            return;
        }
        let mut sorted: Vec<Duration> = self.latencies.iter().copied().collect();
        sorted.sort_unstable();
        self.latency_p99 = quantile(&sorted, 0.99);
        self.latencies_fresh = 0;
    }

    /// GCRA: whether a re-send may go at `now`; if not, the time its reserved slot
    /// comes (the slot is taken either way).
    fn retry_budget(&mut self, now: UtcNanos) -> Result<(), UtcNanos> {
        let rate = u64::from(self.config.retry_rate_per_s.max(1));
        let interval = i64::try_from(1_000_000_000 / rate).unwrap_or(1).max(1);
        let tolerance = interval.saturating_mul(i64::from(self.config.retry_burst));
        let tat = self.retry_tat.0.max(now.0);
        let earliest = tat.saturating_sub(tolerance);
        self.retry_tat = UtcNanos(tat.saturating_add(interval));
        if now.0 >= earliest {
            Ok(())
        } else {
            Err(UtcNanos(earliest))
        }
    }

    fn backoff(&mut self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(20);
        let bound = self
            .first_retry_bound()
            .saturating_mul(1 << shift)
            .min(self.config.retry_delay_max)
            .max(Duration::from_millis(1));
        let bound_us = u64::try_from(bound.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(self.rng.random_range(bound_us / 2..=bound_us))
    }

    /// When the earliest attempt or deadline is due (possibly for a version that has
    /// moved on since; [`Tracker::take_due`] then skips it).
    pub fn next_due(&self) -> Option<UtcNanos> {
        self.due.peek().map(|Reverse((at, ..))| *at)
    }

    /// Takes at most `max` versions due for an attempt at `now` into `out`, counting
    /// the attempt and scheduling the next; versions whose deadline has come become
    /// `failed`. Both go to `updates`.
    pub fn take_due(
        &mut self,
        now: UtcNanos,
        max: usize,
        out: &mut Vec<Dispatch>,
        updates: &mut Vec<DeliveryUpdate>,
    ) {
        self.refresh_p99();
        let mut n_taken = 0;
        while n_taken < max {
            let Some(Reverse((at, _, _, _))) = self.due.peek() else {
                break;
            };
            if *at > now {
                break;
            }
            let Some(Reverse((at, _, device_id, version_number))) = self.due.pop() else {
                break;
            };
            let Some(device) = self.devices.get_mut(&device_id) else {
                continue;
            };
            let newest = device.versions.last_key_value().map(|(v, _)| *v);
            let transport = device.registered.or(device.heard_on);
            let Some(version) = device.versions.get_mut(&version_number) else {
                continue;
            };
            let stale = version.state != DeliveryState::Issued
                || newest != Some(version_number)
                || version.next_attempt_at != Some(at);
            if stale {
                continue;
            }
            if now >= version.deadline {
                version.state = DeliveryState::Failed {
                    cause: FailureCause::DeadlinePassed,
                };
                version.next_attempt_at = None;
                device.n_failed += 1;
                self.n_failed += 1;
                updates.push(DeliveryUpdate::State {
                    device: device_id.clone(),
                    schedule_id: version.signed.schedule.schedule_id,
                    version: version_number,
                    state: version.state,
                    at: now,
                    by_agent: false,
                });
                if let Some(rollout) = self.rollouts.get_mut(&version.rollout) {
                    Self::settle(rollout, now);
                }
                continue;
            }
            // While the last send awaits its hand-off, the only live entry is the
            // deadline one, handled above.
            let is_retry = version.attempts > 0;
            let slot_held = std::mem::take(&mut version.retry_slot_held);
            let deadline = version.deadline;
            if is_retry
                && !slot_held
                && let Err(slot) = self.retry_budget(now)
            {
                let next = slot.min(deadline);
                self.n_retries_deferred += 1;
                let Some(version) = self
                    .devices
                    .get_mut(&device_id)
                    .and_then(|d| d.versions.get_mut(&version_number))
                else {
                    continue;
                };
                version.retry_slot_held = true;
                version.next_attempt_at = Some(next);
                self.n_due_pushed += 1;
                self.due.push(Reverse((
                    next,
                    self.n_due_pushed,
                    device_id,
                    version_number,
                )));
                continue;
            }
            let Some(version) = self
                .devices
                .get_mut(&device_id)
                .and_then(|d| d.versions.get_mut(&version_number))
            else {
                continue;
            };
            version.attempts += 1;
            let attempts = version.attempts;
            let signed = version.signed.clone();
            if is_retry {
                self.n_retries += 1;
            }
            let delay = self.backoff(attempts);
            // Persisted as the earliest next attempt; the live clock starts at hand-off.
            let next = UtcNanos(now.0.saturating_add(nanos(delay))).min(deadline);
            // Re-borrow after drawing from the RNG.
            let Some(version) = self
                .devices
                .get_mut(&device_id)
                .and_then(|d| d.versions.get_mut(&version_number))
            else {
                continue;
            };
            version.awaiting_handoff = Some(delay);
            version.next_attempt_at = Some(deadline);
            self.n_due_pushed += 1;
            self.due.push(Reverse((
                deadline,
                self.n_due_pushed,
                device_id.clone(),
                version_number,
            )));
            updates.push(DeliveryUpdate::Attempt {
                device: device_id.clone(),
                version: version_number,
                attempts,
                at: now,
                next_attempt_at: Some(next),
            });
            out.push(Dispatch {
                device: device_id,
                transport,
                signed,
                attempt: attempts,
            });
            n_taken += 1;
        }
    }

    /// The link handed attempt `attempt` of a version to its transport at `now` (or
    /// gave up on it: not connected, send error): the back-off clock starts. Returns
    /// when the next attempt is due, if this changed it.
    pub fn on_handed_off(
        &mut self,
        now: UtcNanos,
        device_id: &DeviceId,
        version_number: u64,
        attempt: u32,
    ) -> Option<UtcNanos> {
        let version = self
            .devices
            .get_mut(device_id)?
            .versions
            .get_mut(&version_number)?;
        if version.state != DeliveryState::Issued || version.attempts != attempt {
            return None;
        }
        let delay = version.awaiting_handoff.take()?;
        version.handed_off_at = Some(now);
        let next = UtcNanos(now.0.saturating_add(nanos(delay))).min(version.deadline);
        version.next_attempt_at = Some(next);
        self.n_due_pushed += 1;
        self.due.push(Reverse((
            next,
            self.n_due_pushed,
            device_id.clone(),
            version_number,
        )));
        Some(next)
    }

    /// Notes an uplink message from `device_id` stored at `now`, carrying outbox
    /// sequence numbers `seqs` (an ack's one, a telemetry batch's; none for a
    /// heartbeat) and maybe a state of charge. Returns the receipt to send once the
    /// message is stored: the contiguous stored prefix (see "Receipts" in the module
    /// doc), or `None` for a message without sequence numbers.
    pub fn on_uplink(
        &mut self,
        now: UtcNanos,
        device_id: &DeviceId,
        transport: TransportKind,
        seqs: &[u64],
        soc_wh: Option<i64>,
    ) -> Option<Receipted> {
        let (hole_wait, above_max) = (
            self.config.receipt_hole_wait,
            self.config.receipt_holes_seqs_max,
        );
        let Some(device) = self.device_mut(device_id) else {
            // Not tracked (device bound reached): the receipt covers this message only.
            return seqs.iter().max().map(|&through_seq| Receipted {
                through_seq,
                n_skipped: 0,
            });
        };
        device.heard_on = Some(transport);
        device.last_seen = Some(device.last_seen.map_or(now, |seen| seen.max(now)));
        if soc_wh.is_some() {
            device.last_soc_wh = soc_wh;
        }
        if seqs.is_empty() {
            return None;
        }
        Some(device.receipts.stored(now, seqs, hole_wait, above_max))
    }

    /// Applies a stored ack (recorded for the first time) at `now`. State changes go to
    /// `updates` (marked `by_agent`).
    pub fn on_ack(
        &mut self,
        now: UtcNanos,
        ack: &Ack,
        updates: &mut Vec<DeliveryUpdate>,
    ) -> AckEffect {
        let Some(device) = self.devices.get_mut(&ack.device) else {
            return AckEffect::default();
        };
        let Some(version) = device.versions.get_mut(&ack.version) else {
            return AckEffect::default();
        };
        if version.signed.schedule.schedule_id != ack.schedule_id {
            return AckEffect::default();
        }
        let mut effect = AckEffect {
            known: true,
            first_ack_latency: None,
        };
        let mut sample = None;
        if version.first_ack_at.is_none() {
            version.first_ack_at = Some(now);
            effect.first_ack_latency = Some(since(now, version.issued_at));
            // Karn's rule: only a version sent once tells the round-trip time.
            if version.attempts == 1 {
                sample = version.handed_off_at.map(|at| since(now, at));
            }
        }
        let reported = DeliveryState::of_ack(ack.status);
        let current = version.state;
        let applies = if reported.is_final() {
            !version.agent_final
        } else {
            let deadline_failed = current
                == DeliveryState::Failed {
                    cause: FailureCause::DeadlinePassed,
                };
            (!current.is_final() && reported.rank() > current.rank()) || deadline_failed
        };
        if !applies {
            if let Some(latency) = sample {
                self.sample_latency(latency);
            }
            return effect;
        }
        let was_issued = current == DeliveryState::Issued;
        let before = outcome(version);
        version.state = reported;
        version.agent_final |= reported.is_final();
        version.was_accepted |= matches!(
            reported,
            DeliveryState::Accepted | DeliveryState::Started | DeliveryState::Completed
        );
        version.next_attempt_at = None;
        version.awaiting_handoff = None;
        let after = outcome(version);
        let rollout_id = version.rollout;
        updates.push(DeliveryUpdate::State {
            device: ack.device.clone(),
            schedule_id: ack.schedule_id,
            version: ack.version,
            state: reported,
            at: now,
            by_agent: true,
        });
        if before != after {
            for (value, sign) in [(before, -1i64), (after, 1i64)] {
                let (device_slot, fleet_slot) = match value {
                    1 => (&mut device.n_succeeded, &mut self.n_succeeded),
                    -1 => (&mut device.n_failed, &mut self.n_failed),
                    _ => continue,
                };
                if sign > 0 {
                    *device_slot += 1;
                    *fleet_slot += 1;
                } else {
                    *device_slot = device_slot.saturating_sub(1);
                    *fleet_slot = fleet_slot.saturating_sub(1);
                }
            }
        }
        if was_issued && let Some(rollout) = self.rollouts.get_mut(&rollout_id) {
            Self::settle(rollout, now);
        }
        if let Some(latency) = sample {
            self.sample_latency(latency);
        }
        effect
    }

    /// The state of one version, if tracked.
    pub fn version_state(&self, device: &DeviceId, version: u64) -> Option<DeliveryState> {
        self.devices
            .get(device)
            .and_then(|d| d.versions.get(&version))
            .map(|v| v.state)
    }

    /// Delivery attempts of one version, if tracked.
    pub fn version_attempts(&self, device: &DeviceId, version: u64) -> Option<u32> {
        self.devices
            .get(device)
            .and_then(|d| d.versions.get(&version))
            .map(|v| v.attempts)
    }

    /// Issue-to-first-ack latencies of a roll-out's acknowledged versions, unsorted.
    pub fn ack_latencies(&self, rollout: RolloutId) -> Vec<Duration> {
        let Some(rollout) = self.rollouts.get(&rollout) else {
            return Vec::new();
        };
        rollout
            .members
            .iter()
            .filter_map(|(device, number)| {
                let version = self.devices.get(device)?.versions.get(number)?;
                Some(since(version.first_ack_at?, version.issued_at))
            })
            .collect()
    }

    /// Whether every version of the roll-out has stopped waiting for its first ack.
    pub fn is_finished(&self, rollout: RolloutId) -> bool {
        self.rollouts
            .get(&rollout)
            .is_some_and(|r| r.finished_at.is_some())
    }

    /// The operator's snapshot of a roll-out at `now`.
    pub fn rollout_status(&self, id: RolloutId, now: UtcNanos) -> Option<RolloutStatus> {
        let rollout = self.rollouts.get(&id)?;
        let mut counts = StateCounts::default();
        let mut rejected_by_reason = BTreeMap::new();
        let mut latencies = Vec::new();
        let mut candidates = Vec::with_capacity(rollout.members.len());
        let (mut n_succeeded, mut n_failed) = (0, 0);
        for (device, number) in &rollout.members {
            let Some(version) = self
                .devices
                .get(device)
                .and_then(|d| d.versions.get(number))
            else {
                // Dropped by the per-device bound: only older versions are dropped.
                counts.superseded += 1;
                continue;
            };
            counts.add(version.state);
            if let DeliveryState::Rejected { reason } = version.state {
                *rejected_by_reason.entry(format!("{reason:?}")).or_insert(0) += 1;
            }
            match outcome(version) {
                1 => n_succeeded += 1,
                -1 => n_failed += 1,
                _ => {}
            }
            let acked = version.first_ack_at.is_some();
            let waited = match version.first_ack_at {
                Some(at) => since(at, version.issued_at),
                None if version.state == DeliveryState::Issued => since(now, version.issued_at),
                // Never acked and failed at its deadline: it waited until then.
                None if matches!(version.state, DeliveryState::Failed { .. }) => {
                    since(version.deadline.min(now), version.issued_at)
                }
                None => continue,
            };
            if acked {
                latencies.push(waited);
            }
            candidates.push((!acked, waited, device, *number, version));
        }
        latencies.sort_unstable();
        candidates.sort_unstable_by_key(|c| Reverse((c.0, c.1)));
        let slowest = candidates
            .into_iter()
            .take(self.config.slowest_max)
            .map(|(pending, waited, device, number, version)| SlowDevice {
                device: device.clone(),
                version: number,
                state: version.state,
                attempts: version.attempts,
                acked: !pending,
                waited_ms: ms(waited),
            })
            .collect();
        let end = rollout.finished_at.unwrap_or(now);
        Some(RolloutStatus {
            rollout: id,
            n_devices: rollout.members.len() as u64,
            counts,
            rejected_by_reason,
            n_acked: latencies.len() as u64,
            success_rate: rate(n_succeeded, n_failed),
            started_at_ns: rollout.started_at.0,
            finished_at_ns: rollout.finished_at.map(|at| at.0),
            elapsed_ms: ms(since(end, rollout.started_at)),
            ack_latency_p50_ms: quantile(&latencies, 0.5).map(ms),
            ack_latency_p99_ms: quantile(&latencies, 0.99).map(ms),
            slowest,
        })
    }

    fn is_online(&self, device: &Device, now: UtcNanos) -> bool {
        device
            .last_seen
            .is_some_and(|seen| since(now, seen) <= self.config.offline_after)
    }

    /// One device at `now`, if tracked.
    pub fn device_status(&self, id: &DeviceId, now: UtcNanos) -> Option<DeviceStatus> {
        let device = self.devices.get(id)?;
        Some(DeviceStatus {
            device: id.clone(),
            transport: device.registered.or(device.heard_on),
            online: self.is_online(device, now),
            last_seen_at_ns: device.last_seen.map(|at| at.0),
            last_soc_wh: device.last_soc_wh,
            latest: device
                .versions
                .last_key_value()
                .map(|(number, version)| (*number, version.state)),
            n_succeeded: device.n_succeeded,
            n_failed: device.n_failed,
            success_rate: rate(device.n_succeeded, device.n_failed),
        })
    }

    /// Devices heard from within [`TrackerConfig::offline_after`] of `now`.
    pub fn n_online(&self, now: UtcNanos) -> u64 {
        self.devices
            .values()
            .filter(|device| self.is_online(device, now))
            .count() as u64
    }

    /// The fleet at `now`.
    pub fn fleet_status(&self, now: UtcNanos) -> FleetStatus {
        let mut latest_counts = StateCounts::default();
        for device in self.devices.values() {
            if let Some((_, version)) = device.versions.last_key_value() {
                latest_counts.add(version.state);
            }
        }
        FleetStatus {
            n_devices: self.devices.len() as u64,
            n_online: self.n_online(now),
            latest_counts,
            n_succeeded: self.n_succeeded,
            n_failed: self.n_failed,
            success_rate: rate(self.n_succeeded, self.n_failed),
            rollouts: self.rollouts.keys().copied().collect(),
        }
    }

    /// Asserts the invariants of the module doc.
    ///
    /// # Panics
    /// If one is broken (a bug).
    pub fn check_invariants(&self) {
        assert!(
            self.devices.len() <= self.config.devices_max,
            "device bound"
        );
        assert!(
            self.rollouts.len() <= self.config.rollouts_max.max(1),
            "rollout bound"
        );
        let (mut n_succeeded, mut n_failed) = (0, 0);
        for device in self.devices.values() {
            assert!(
                device.versions.len() <= self.config.versions_per_device_max.max(1),
                "version bound"
            );
            let newest = device.versions.last_key_value().map(|(v, _)| *v);
            for (number, version) in &device.versions {
                if version.state == DeliveryState::Issued {
                    assert_eq!(Some(*number), newest, "only the newest version is issued");
                    let next = version.next_attempt_at.expect("issued has a next attempt");
                    assert!(next <= version.deadline, "next attempt after the deadline");
                }
            }
            n_succeeded += device.n_succeeded;
            n_failed += device.n_failed;
        }
        assert_eq!(n_succeeded, self.n_succeeded, "fleet successes");
        assert_eq!(n_failed, self.n_failed, "fleet failures");
        for rollout in self.rollouts.values() {
            let n_issued = rollout
                .members
                .iter()
                .filter(|(device, number)| {
                    self.version_state(device, *number) == Some(DeliveryState::Issued)
                })
                .count();
            assert_eq!(n_issued, rollout.n_pending, "roll-out pending count");
        }
    }
}

#[cfg(test)]
mod tests {
    use voltex_dispatch::message::{Fallback, SchedulePeriod};
    use voltex_dispatch::{ScheduleId, ScheduleSigner};

    use super::*;

    const SECOND: i64 = 1_000_000_000;

    fn device(name: &str) -> DeviceId {
        DeviceId::new(name).unwrap()
    }

    fn signed(device: &DeviceId, version: u64) -> Arc<SignedSchedule> {
        let schedule = Schedule {
            device: device.clone(),
            schedule_id: ScheduleId(1),
            version,
            issued_at: UtcNanos(0),
            valid_from: UtcNanos(0),
            valid_until: UtcNanos(86_400 * SECOND),
            randomize_start_s: 0,
            periods: vec![SchedulePeriod {
                offset_s: 0,
                target_w: 1_000,
                ramp_s: 0,
            }]
            .into(),
            fallback: Fallback::Idle,
        };
        Arc::new(ScheduleSigner::from_seed(&[1; 32]).sign(schedule).unwrap())
    }

    fn ack(device: &DeviceId, version: u64, status: AckStatus) -> Ack {
        Ack {
            device: device.clone(),
            outbox_seq: 1,
            schedule_id: ScheduleId(1),
            version,
            status,
            at: UtcNanos(0),
        }
    }

    fn tracker() -> Tracker {
        Tracker::new(TrackerConfig {
            retry_delay_min: Duration::from_secs(1),
            retry_delay_max: Duration::from_secs(8),
            ..TrackerConfig::default()
        })
    }

    /// Runs `take_due` at `now`; returns the devices dispatched.
    fn due(tracker: &mut Tracker, now: i64, updates: &mut Vec<DeliveryUpdate>) -> Vec<u32> {
        let mut out = Vec::new();
        tracker.take_due(UtcNanos(now), usize::MAX, &mut out, updates);
        for dispatch in &out {
            let version = dispatch.signed.schedule.version;
            tracker.on_handed_off(UtcNanos(now), &dispatch.device, version, dispatch.attempt);
        }
        tracker.check_invariants();
        out.iter().map(|d| d.attempt).collect()
    }

    #[test]
    fn retries_back_off_exponentially_until_the_deadline_then_fail() {
        let mut tracker = tracker();
        let a = device("a");
        let mut updates = Vec::new();
        let id = tracker
            .issue(
                UtcNanos(0),
                vec![(signed(&a, 1), UtcNanos(40 * SECOND))],
                &mut updates,
            )
            .unwrap();
        assert_eq!(due(&mut tracker, 0, &mut updates), vec![1]);
        let mut previous = 0;
        let mut bounds = Vec::new();
        // Walk from due time to due time: each gap lies in [bound/2, bound].
        while let Some(next) = tracker.next_due() {
            let gap = next.0 - previous;
            bounds.push(gap);
            previous = next.0;
            let attempts = due(&mut tracker, next.0, &mut updates);
            if attempts.is_empty() {
                break;
            }
        }
        let expected_bounds = [1, 2, 4, 8, 8, 8, 8, 8];
        for (gap, bound) in bounds.iter().zip(expected_bounds) {
            let bound = bound * SECOND;
            // The last gap may be cut short by the deadline.
            assert!(*gap <= bound, "gap {gap} above bound {bound}");
        }
        for (gap, bound) in bounds.iter().zip(expected_bounds).take(4) {
            assert!(
                *gap >= bound * SECOND / 2,
                "gap {gap} below half of {bound} s"
            );
        }
        assert_eq!(previous, 40 * SECOND, "the last wake is the deadline");
        assert_eq!(
            tracker.version_state(&a, 1),
            Some(DeliveryState::Failed {
                cause: FailureCause::DeadlinePassed
            })
        );
        assert!(tracker.is_finished(id));
        assert_eq!(tracker.next_due(), None);
        let status = tracker.rollout_status(id, UtcNanos(41 * SECOND)).unwrap();
        assert_eq!(status.counts.failed, 1);
        assert_eq!(status.success_rate, Some(0.0));
        assert_eq!(status.elapsed_ms, 40_000.0, "elapsed stops at the finish");
    }

    #[test]
    fn a_newer_version_supersedes_an_unacked_one_and_stops_its_retries() {
        let mut tracker = tracker();
        let a = device("a");
        let mut updates = Vec::new();
        let far = UtcNanos(3_600 * SECOND);
        let first = tracker
            .issue(UtcNanos(0), vec![(signed(&a, 1), far)], &mut updates)
            .unwrap();
        assert_eq!(due(&mut tracker, 0, &mut updates), vec![1]);
        assert!(matches!(
            tracker.issue(
                UtcNanos(SECOND / 2),
                vec![(signed(&a, 1), far)],
                &mut updates
            ),
            Err(TrackerError::StaleVersion { .. })
        ));
        updates.clear();
        tracker
            .issue(
                UtcNanos(SECOND / 2),
                vec![(signed(&a, 2), far)],
                &mut updates,
            )
            .unwrap();
        assert_eq!(
            updates,
            vec![DeliveryUpdate::State {
                device: a.clone(),
                schedule_id: ScheduleId(1),
                version: 1,
                state: DeliveryState::Superseded { by_version: 2 },
                at: UtcNanos(SECOND / 2),
                by_agent: false,
            }]
        );
        assert!(tracker.is_finished(first));
        let mut out = Vec::new();
        for now in [SECOND / 2, 2 * SECOND, 10 * SECOND, 60 * SECOND] {
            let from = out.len();
            tracker.take_due(UtcNanos(now), usize::MAX, &mut out, &mut updates);
            for dispatch in &out[from..] {
                let version = dispatch.signed.schedule.version;
                tracker.on_handed_off(UtcNanos(now), &dispatch.device, version, dispatch.attempt);
            }
        }
        assert!(
            out.iter().all(|d| d.signed.schedule.version == 2),
            "{out:?}"
        );
        assert_eq!(tracker.version_attempts(&a, 1), Some(1));
        assert!(tracker.version_attempts(&a, 2).unwrap() >= 3);
        tracker.check_invariants();
    }

    #[test]
    fn acks_only_move_forward_and_the_agents_final_word_wins() {
        let mut tracker = tracker();
        let a = device("a");
        let mut updates = Vec::new();
        let id = tracker
            .issue(
                UtcNanos(0),
                vec![(signed(&a, 1), UtcNanos(SECOND))],
                &mut updates,
            )
            .unwrap();
        due(&mut tracker, 0, &mut updates);
        // Deadline passes first, then the late acks arrive.
        due(&mut tracker, SECOND, &mut updates);
        assert!(tracker.is_finished(id));
        let cases = [
            (AckStatus::Received, DeliveryState::Received),
            (AckStatus::Started, DeliveryState::Started),
            (AckStatus::Accepted, DeliveryState::Started),
            (AckStatus::Received, DeliveryState::Started),
            (
                AckStatus::Superseded { by_version: 2 },
                DeliveryState::Superseded { by_version: 2 },
            ),
            (
                AckStatus::Completed,
                DeliveryState::Superseded { by_version: 2 },
            ),
            (
                AckStatus::Started,
                DeliveryState::Superseded { by_version: 2 },
            ),
        ];
        for (status, expected) in cases {
            tracker.on_ack(UtcNanos(2 * SECOND), &ack(&a, 1, status), &mut updates);
            assert_eq!(
                tracker.version_state(&a, 1),
                Some(expected),
                "after {status:?}"
            );
            tracker.check_invariants();
        }
        // It was accepted before it was superseded: a success.
        let device_status = tracker.device_status(&a, UtcNanos(2 * SECOND)).unwrap();
        assert_eq!((device_status.n_succeeded, device_status.n_failed), (1, 0));
        assert_eq!(tracker.fleet_status(UtcNanos(0)).success_rate, Some(1.0));
    }

    #[test]
    fn success_rates_count_accepted_rejected_and_failed_versions() {
        let mut tracker = tracker();
        let mut updates = Vec::new();
        let far = UtcNanos(3_600 * SECOND);
        let names = ["ok", "rejected", "exec-failed", "silent"];
        let versions = names.iter().map(|n| (signed(&device(n), 1), far)).collect();
        let id = tracker.issue(UtcNanos(0), versions, &mut updates).unwrap();
        due(&mut tracker, 0, &mut updates);
        let now = UtcNanos(SECOND);
        for status in [AckStatus::Received, AckStatus::Accepted] {
            tracker.on_ack(now, &ack(&device("ok"), 1, status), &mut updates);
            tracker.on_ack(now, &ack(&device("exec-failed"), 1, status), &mut updates);
        }
        let reject = AckStatus::Rejected(ScheduleRejection::ExceedsDeviceLimits);
        tracker.on_ack(now, &ack(&device("rejected"), 1, reject), &mut updates);
        let failure = AckStatus::Failed(FailureReason::DriverFault);
        tracker.on_ack(now, &ack(&device("exec-failed"), 1, failure), &mut updates);
        tracker.check_invariants();
        let status = tracker.rollout_status(id, now).unwrap();
        assert_eq!(status.counts.accepted, 1);
        assert_eq!(status.counts.rejected, 1);
        assert_eq!(status.counts.failed, 1);
        assert_eq!(status.counts.issued, 1);
        assert_eq!(status.n_acked, 3);
        assert_eq!(
            status.rejected_by_reason.get("ExceedsDeviceLimits"),
            Some(&1)
        );
        assert_eq!(status.success_rate, Some(1.0 / 3.0));
        assert_eq!(status.finished_at_ns, None);
        assert_eq!(status.slowest[0].device, device("silent"), "unacked first");
        assert!(!status.slowest[0].acked);
        let fleet = tracker.fleet_status(now);
        assert_eq!((fleet.n_succeeded, fleet.n_failed), (1, 2));
        let ok = tracker.device_status(&device("ok"), now).unwrap();
        assert_eq!(ok.success_rate, Some(1.0));
    }

    #[test]
    fn receipts_cover_the_contiguous_stored_prefix() {
        let mut tracker = tracker();
        let a = device("a");
        let at = UtcNanos(0);
        let through = |r: Option<Receipted>| r.map(|r| (r.through_seq, r.n_skipped));
        // The first report since start sets the window's start.
        assert_eq!(
            through(tracker.on_uplink(at, &a, TransportKind::Mqtt, &[5], None)),
            Some((5, 0))
        );
        assert_eq!(
            through(tracker.on_uplink(at, &a, TransportKind::Mqtt, &[3], None)),
            Some((5, 0)),
            "an old re-send changes nothing"
        );
        assert_eq!(
            tracker.on_uplink(at, &a, TransportKind::Quic, &[], Some(7)),
            None
        );
        let status = tracker.device_status(&a, at).unwrap();
        assert_eq!(status.transport, Some(TransportKind::Quic), "last heard on");
        assert_eq!(status.last_soc_wh, Some(7));
        tracker.register(&a, TransportKind::Mqtt).unwrap();
        let status = tracker.device_status(&a, at).unwrap();
        assert_eq!(
            status.transport,
            Some(TransportKind::Mqtt),
            "registration wins"
        );
        let later = UtcNanos(1_000 * SECOND);
        assert!(!tracker.device_status(&a, later).unwrap().online);
        assert_eq!(tracker.n_online(later), 0);
    }

    #[test]
    fn a_hole_holds_receipts_back_until_filled() {
        let mut tracker = tracker();
        let a = device("a");
        let at = UtcNanos(0);
        let through = |r: Option<Receipted>| r.map(|r| (r.through_seq, r.n_skipped));
        let uplink = |tracker: &mut Tracker, seqs: &[u64]| {
            through(tracker.on_uplink(at, &a, TransportKind::Mqtt, seqs, None))
        };
        assert_eq!(uplink(&mut tracker, &[1, 2]), Some((2, 0)));
        // The broker dropped 3: later reports are stored but not receipted past 2, so
        // the agent keeps 3 and re-sends it.
        assert_eq!(uplink(&mut tracker, &[4]), Some((2, 0)));
        assert_eq!(uplink(&mut tracker, &[5, 6]), Some((2, 0)));
        assert_eq!(
            uplink(&mut tracker, &[3]),
            Some((6, 0)),
            "the hole is filled"
        );
        assert_eq!(uplink(&mut tracker, &[3, 4, 5, 6, 7]), Some((7, 0)));
    }

    #[test]
    fn a_hole_left_open_is_skipped_after_the_wait_or_when_too_much_is_above_it() {
        let mut tracker = Tracker::new(TrackerConfig {
            receipt_hole_wait: Duration::from_secs(150),
            receipt_holes_seqs_max: 3,
            ..TrackerConfig::default()
        });
        let a = device("a");
        let at = |s: i64| UtcNanos(s * SECOND);
        let through = |r: Option<Receipted>| r.map(|r| (r.through_seq, r.n_skipped));
        assert_eq!(
            through(tracker.on_uplink(at(0), &a, TransportKind::Mqtt, &[10], None)),
            Some((10, 0))
        );
        // 11 and 12 never come (an agent's full outbox dropped old telemetry).
        assert_eq!(
            through(tracker.on_uplink(at(1), &a, TransportKind::Mqtt, &[13], None)),
            Some((10, 0))
        );
        assert_eq!(
            through(tracker.on_uplink(at(150), &a, TransportKind::Mqtt, &[14], None)),
            Some((10, 0)),
            "waited since the hole was first seen, 149 s"
        );
        assert_eq!(
            through(tracker.on_uplink(at(151), &a, TransportKind::Mqtt, &[16], None)),
            Some((14, 2)),
            "skipped 11 and 12; the hole at 15 waits afresh"
        );
        // Too many numbers above a hole: skipped at once.
        assert_eq!(
            through(tracker.on_uplink(at(152), &a, TransportKind::Mqtt, &[17, 18, 19], None)),
            Some((19, 1))
        );
    }

    #[test]
    fn bounds_refuse_extra_devices_and_drop_old_versions_and_rollouts() {
        let mut tracker = Tracker::new(TrackerConfig {
            devices_max: 2,
            versions_per_device_max: 2,
            rollouts_max: 2,
            ..TrackerConfig::default()
        });
        let mut updates = Vec::new();
        let far = UtcNanos(3_600 * SECOND);
        let (a, b, c) = (device("a"), device("b"), device("c"));
        tracker
            .issue(
                UtcNanos(0),
                vec![(signed(&a, 1), far), (signed(&b, 1), far)],
                &mut updates,
            )
            .unwrap();
        assert_eq!(
            tracker.issue(UtcNanos(1), vec![(signed(&c, 1), far)], &mut updates),
            Err(TrackerError::TooManyDevices(2))
        );
        assert_eq!(
            tracker.issue(
                UtcNanos(1),
                vec![(signed(&a, 2), far), (signed(&a, 3), far)],
                &mut updates
            ),
            Err(TrackerError::DuplicateDevice(a.clone()))
        );
        assert_eq!(
            tracker.issue(UtcNanos(1), vec![], &mut updates),
            Err(TrackerError::Empty)
        );
        for version in 2..=4 {
            tracker
                .issue(
                    UtcNanos(version as i64),
                    vec![(signed(&a, version), far)],
                    &mut updates,
                )
                .unwrap();
            tracker.check_invariants();
        }
        assert_eq!(
            tracker.version_state(&a, 2),
            None,
            "oldest versions dropped"
        );
        assert_eq!(tracker.version_state(&a, 4), Some(DeliveryState::Issued));
        assert_eq!(tracker.fleet_status(UtcNanos(0)).rollouts.len(), 2);
    }

    #[test]
    fn delivery_states_serialise_as_tagged_snake_case() {
        let state = DeliveryState::Rejected {
            reason: ScheduleRejection::Expired,
        };
        assert_eq!(
            serde_json::to_string(&state).unwrap(),
            r#"{"state":"rejected","reason":"Expired"}"#
        );
        let failed = DeliveryState::Failed {
            cause: FailureCause::DeadlinePassed,
        };
        assert_eq!(
            serde_json::to_string(&failed).unwrap(),
            r#"{"state":"failed","cause":"deadline_passed"}"#
        );
    }

    #[test]
    fn no_resend_before_the_link_hands_the_last_send_to_the_transport() {
        let mut tracker = tracker();
        let a = device("a");
        let mut updates = Vec::new();
        tracker
            .issue(
                UtcNanos(0),
                vec![(signed(&a, 1), UtcNanos(60 * SECOND))],
                &mut updates,
            )
            .unwrap();
        let mut out = Vec::new();
        tracker.take_due(UtcNanos(0), usize::MAX, &mut out, &mut updates);
        assert_eq!(out.len(), 1);
        tracker.check_invariants();
        // Still queued for the transport at 30 s: nothing is re-sent.
        out.clear();
        tracker.take_due(UtcNanos(30 * SECOND), usize::MAX, &mut out, &mut updates);
        assert!(out.is_empty(), "{out:?}");
        // Handed off at 30 s: the 1 s back-off bound runs from there.
        let next = tracker
            .on_handed_off(UtcNanos(30 * SECOND), &a, 1, 1)
            .unwrap();
        assert!(
            next.0 >= 30 * SECOND + SECOND / 2 && next.0 <= 31 * SECOND,
            "{next:?}"
        );
        tracker.take_due(next, usize::MAX, &mut out, &mut updates);
        assert_eq!(out.iter().map(|d| d.attempt).collect::<Vec<_>>(), vec![2]);
        // A late report about attempt 1 changes nothing.
        assert_eq!(tracker.on_handed_off(next, &a, 1, 1), None);
        tracker.check_invariants();
        // Never handed off again: the deadline still fails it.
        out.clear();
        tracker.take_due(UtcNanos(60 * SECOND), usize::MAX, &mut out, &mut updates);
        assert!(out.is_empty());
        assert_eq!(
            tracker.version_state(&a, 1),
            Some(DeliveryState::Failed {
                cause: FailureCause::DeadlinePassed
            })
        );
        tracker.check_invariants();
    }

    #[test]
    fn the_first_retry_bound_follows_the_observed_p99_latency() {
        let mut tracker = tracker();
        assert_eq!(tracker.first_retry_bound(), Duration::from_secs(1));
        let mut updates = Vec::new();
        let devices: Vec<DeviceId> = (0..100).map(|i| device(&format!("d{i}"))).collect();
        let versions = devices
            .iter()
            .map(|d| (signed(d, 1), UtcNanos(60 * SECOND)))
            .collect();
        tracker.issue(UtcNanos(0), versions, &mut updates).unwrap();
        assert_eq!(due(&mut tracker, 0, &mut updates).len(), 100);
        let ms = 1_000_000;
        // 98 acks 20 ms after the hand-off, 2 after 60 ms: the p99 is 60 ms.
        for (i, d) in devices.iter().enumerate() {
            let at = if i < 98 { 20 * ms } else { 60 * ms };
            tracker.on_ack(UtcNanos(at), &ack(d, 1, AckStatus::Received), &mut updates);
        }
        due(&mut tracker, 60 * ms, &mut updates);
        assert_eq!(tracker.latency_p99(), Some(Duration::from_millis(60)));
        assert_eq!(tracker.first_retry_bound(), Duration::from_millis(240));
        // A window (1,024) of 5 ms acks brings the bound down to the 100 ms floor.
        let fast: Vec<DeviceId> = (0..1_100).map(|i| device(&format!("f{i}"))).collect();
        let versions = fast
            .iter()
            .map(|d| (signed(d, 1), UtcNanos(60 * SECOND)))
            .collect();
        tracker
            .issue(UtcNanos(SECOND), versions, &mut updates)
            .unwrap();
        due(&mut tracker, SECOND, &mut updates);
        for d in &fast {
            tracker.on_ack(
                UtcNanos(SECOND + 5 * ms),
                &ack(d, 1, AckStatus::Received),
                &mut updates,
            );
        }
        due(&mut tracker, SECOND + 5 * ms, &mut updates);
        assert_eq!(tracker.latency_p99(), Some(Duration::from_millis(5)));
        assert_eq!(tracker.first_retry_bound(), Duration::from_millis(100));
        tracker.check_invariants();
    }

    #[test]
    fn resends_beyond_the_burst_are_spread_at_the_retry_rate() {
        let mut tracker = Tracker::new(TrackerConfig {
            retry_delay_min: Duration::from_secs(1),
            retry_delay_max: Duration::from_secs(1),
            retry_rate_per_s: 10,
            retry_burst: 5,
            ..TrackerConfig::default()
        });
        let mut updates = Vec::new();
        let devices: Vec<DeviceId> = (0..20).map(|i| device(&format!("d{i}"))).collect();
        let versions = devices
            .iter()
            .map(|d| (signed(d, 1), UtcNanos(600 * SECOND)))
            .collect();
        tracker.issue(UtcNanos(0), versions, &mut updates).unwrap();
        // First attempts never wait for the budget.
        assert_eq!(due(&mut tracker, 0, &mut updates).len(), 20);
        // Every first re-send is due by 1 s: the burst (5) plus one go at once ...
        assert_eq!(due(&mut tracker, SECOND, &mut updates), vec![2; 6]);
        assert_eq!(tracker.retry_counts(), (6, 14));
        // ... and the other 14 follow one per 100 ms slot.
        for step in 1..=14 {
            let now = SECOND + step * SECOND / 10;
            assert_eq!(due(&mut tracker, now, &mut updates), vec![2], "step {step}");
        }
        assert_eq!(tracker.retry_counts().0, 20);
        tracker.check_invariants();
    }
}
