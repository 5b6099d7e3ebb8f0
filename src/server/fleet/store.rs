//! The persistence seam of dispatch: what the orchestrator writes, and an in-memory
//! implementation.
//!
//! [`DispatchStore`] is what [`super::Orchestrator`] needs from a database: schedule
//! versions, their delivery state and attempts, acks (idempotently), telemetry and
//! when a device was last heard from. The orchestrator calls it *before* acting: a
//! version is saved before it is first sent, an ack or telemetry batch is recorded
//! before the receipt that lets the agent drop it. `db_store.rs` implements it for
//! [`crate::db::Db`] (SQLite and PostgreSQL).
//!
//! # Guarantees of an implementation
//! - `record_ack` is idempotent: the same `(device, version, status)` recorded twice is
//!   one record, and only the first call returns `true`.
//! - `record_telemetry` stores a sample once per `(device, at)`; re-sent samples are
//!   skipped.
//! - Every method is atomic: on `Err` nothing of the call was stored.
//! - `record_ack` counts as hearing from the device (its last-seen time moves forward).
//! - `load_resume_state` returns, per device, the newest saved version with its stored
//!   delivery state, and when the device was last heard from: a restarted orchestrator
//!   resumes from it ([`super::Tracker::restore`]) instead of forgetting pending
//!   versions or re-issuing acknowledged ones.
//!
//! [`MemoryDispatchStore`] keeps all of it in memory, bounded by
//! [`MemoryStoreLimits`] (oldest records dropped first; acks beyond the bound fall
//! out of the duplicate filter, so a very late resend could be counted again).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use voltex_dispatch::message::AckStatus;
use voltex_dispatch::{Ack, DeviceId, Heartbeat, ScheduleId, SignedSchedule, TelemetryBatch};
use voltex_market::UtcNanos;

use super::TransportKind;
use super::tracker::{DeliveryState, RolloutId};

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The device is not registered with the store.
    #[error("unknown device {0}")]
    UnknownDevice(DeviceId),
    /// The store refused a version (e.g. not above the stored latest).
    #[error("schedule version refused: {0}")]
    Refused(String),
    /// The backend failed (database unavailable, I/O, ...).
    #[error("dispatch store backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A schedule version to save before it is first sent.
#[derive(Clone, Debug)]
pub struct ScheduleVersionRow {
    /// The roll-out it belongs to.
    pub rollout: RolloutId,
    /// The signed schedule, exactly as it will be sent.
    pub signed: Arc<SignedSchedule>,
    /// When the platform issued it.
    pub issued_at: UtcNanos,
    /// Retries stop here; without an ack by then it is `failed`.
    pub deadline: UtcNanos,
}

/// A change of a version's delivery record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryUpdate {
    /// One more delivery attempt.
    Attempt {
        /// Device.
        device: DeviceId,
        /// Version.
        version: u64,
        /// Attempts so far, this one included.
        attempts: u32,
        /// When.
        at: UtcNanos,
        /// When the next attempt is due, if any.
        next_attempt_at: Option<UtcNanos>,
    },
    /// A new delivery state.
    State {
        /// Device.
        device: DeviceId,
        /// Schedule id.
        schedule_id: ScheduleId,
        /// Version.
        version: u64,
        /// The new state.
        state: DeliveryState,
        /// When the platform decided or learned it.
        at: UtcNanos,
        /// Caused by an agent ack already recorded with [`DispatchStore::record_ack`]
        /// (a store that derives state from acks may skip it); `false` for the
        /// platform's own decisions (deadline passed, superseded before any ack).
        by_agent: bool,
    },
}

/// The newest saved version of a device and its stored delivery record.
#[derive(Clone, Debug, PartialEq)]
pub struct ResumeVersion {
    /// The roll-out it was saved with, if the store keeps it.
    pub rollout: Option<RolloutId>,
    /// The signed schedule as saved (its `issued_at` is the issue time).
    pub signed: Arc<SignedSchedule>,
    /// Deadline.
    pub deadline: UtcNanos,
    /// Stored delivery state.
    pub state: DeliveryState,
    /// Attempts so far.
    pub attempts: u32,
}

/// What a restarted orchestrator needs to know about one device.
#[derive(Clone, Debug, PartialEq)]
pub struct ResumeDevice {
    /// The device.
    pub device: DeviceId,
    /// When it was last heard from.
    pub last_seen: Option<UtcNanos>,
    /// Its last reported state of charge, Wh.
    pub last_soc_wh: Option<i64>,
    /// Its newest schedule version, if any.
    pub latest: Option<ResumeVersion>,
}

/// What the orchestrator persists. See the module doc for the guarantees.
///
/// Every method's future must be `Send`; cancelling one leaves its write either done
/// or not done (never half), so the orchestrator never cancels them.
pub trait DispatchStore: Send + Sync + 'static {
    /// Saves a new schedule version (status `issued`, no attempt yet).
    ///
    /// # Errors
    /// [`StoreError::UnknownDevice`], [`StoreError::Refused`], [`StoreError::Backend`].
    fn save_schedule(
        &self,
        row: &ScheduleVersionRow,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Applies a delivery state change or counts an attempt.
    ///
    /// # Errors
    /// [`StoreError::Backend`]; an unknown version may be ignored or refused.
    fn update_delivery(
        &self,
        update: &DeliveryUpdate,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records an ack received over `transport` at `received_at`; `true` if it was new.
    ///
    /// # Errors
    /// [`StoreError::UnknownDevice`], [`StoreError::Backend`].
    fn record_ack(
        &self,
        ack: &Ack,
        transport: TransportKind,
        received_at: UtcNanos,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records a telemetry batch (samples already stored are skipped); returns how many
    /// samples were new. Also counts as hearing from the device.
    ///
    /// # Errors
    /// [`StoreError::UnknownDevice`], [`StoreError::Backend`].
    fn record_telemetry(
        &self,
        batch: &TelemetryBatch,
        received_at: UtcNanos,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Records a heartbeat: the device was heard from at `received_at`.
    ///
    /// # Errors
    /// [`StoreError::UnknownDevice`], [`StoreError::Backend`].
    fn record_heartbeat(
        &self,
        heartbeat: &Heartbeat,
        received_at: UtcNanos,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every device known to the store with its newest saved version (see the module
    /// doc); read once when the orchestrator starts. The default keeps nothing to
    /// resume from (an empty fleet); a store that persists, or wraps one that does,
    /// must implement (or forward) it.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn load_resume_state(
        &self,
    ) -> impl Future<Output = Result<Vec<ResumeDevice>, StoreError>> + Send {
        std::future::ready(Ok(Vec::new()))
    }
}

/// Bounds of [`MemoryDispatchStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryStoreLimits {
    /// Schedule versions kept.
    pub schedules_max: usize,
    /// Acks kept (and remembered for idempotency).
    pub acks_max: usize,
    /// Telemetry samples kept.
    pub samples_max: usize,
}

impl Default for MemoryStoreLimits {
    /// 1,000,000 versions, acks and samples.
    fn default() -> Self {
        MemoryStoreLimits {
            schedules_max: 1_000_000,
            acks_max: 1_000_000,
            samples_max: 1_000_000,
        }
    }
}

/// A stored schedule version with its delivery record.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredVersion {
    /// The saved row's roll-out.
    pub rollout: RolloutId,
    /// The signed schedule.
    pub signed: Arc<SignedSchedule>,
    /// Deadline.
    pub deadline: UtcNanos,
    /// Delivery state.
    pub state: DeliveryState,
    /// Attempts.
    pub attempts: u32,
}

type AckKey = (DeviceId, u64, AckStatus);

#[derive(Debug, Default)]
struct Inner {
    schedules: HashMap<(DeviceId, u64), StoredVersion>,
    schedule_order: VecDeque<(DeviceId, u64)>,
    acks: VecDeque<(Ack, TransportKind, UtcNanos)>,
    ack_keys: HashSet<AckKey>,
    samples: HashSet<(DeviceId, UtcNanos)>,
    sample_order: VecDeque<(DeviceId, UtcNanos)>,
    last_seen: HashMap<DeviceId, UtcNanos>,
    n_heartbeats: u64,
}

/// [`DispatchStore`] in memory, for tests and runs without a database. Cloning shares
/// the same data.
#[derive(Clone, Debug, Default)]
pub struct MemoryDispatchStore {
    limits: MemoryStoreLimits,
    inner: Arc<Mutex<Inner>>,
}

impl MemoryDispatchStore {
    /// An empty store with default limits.
    pub fn new() -> MemoryDispatchStore {
        MemoryDispatchStore::with_limits(MemoryStoreLimits::default())
    }

    /// An empty store with `limits`.
    pub fn with_limits(limits: MemoryStoreLimits) -> MemoryDispatchStore {
        MemoryDispatchStore {
            limits,
            inner: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A stored version.
    pub fn schedule(&self, device: &DeviceId, version: u64) -> Option<StoredVersion> {
        self.lock()
            .schedules
            .get(&(device.clone(), version))
            .cloned()
    }

    /// Every distinct ack stored, in arrival order (the oldest beyond the bound dropped).
    pub fn acks(&self) -> Vec<Ack> {
        self.lock()
            .acks
            .iter()
            .map(|(ack, ..)| ack.clone())
            .collect()
    }

    /// Acks stored for one device and version.
    pub fn acks_of(&self, device: &DeviceId, version: u64) -> Vec<AckStatus> {
        self.lock()
            .acks
            .iter()
            .filter(|(ack, ..)| &ack.device == device && ack.version == version)
            .map(|(ack, ..)| ack.status)
            .collect()
    }

    /// Telemetry samples stored.
    pub fn n_samples(&self) -> usize {
        self.lock().samples.len()
    }

    /// Heartbeats recorded.
    pub fn n_heartbeats(&self) -> u64 {
        self.lock().n_heartbeats
    }

    /// When a device was last heard from.
    pub fn last_seen(&self, device: &DeviceId) -> Option<UtcNanos> {
        self.lock().last_seen.get(device).copied()
    }

    fn seen(inner: &mut Inner, device: &DeviceId, at: UtcNanos) {
        let entry = inner.last_seen.entry(device.clone()).or_insert(at);
        *entry = (*entry).max(at);
    }
}

impl DispatchStore for MemoryDispatchStore {
    fn save_schedule(
        &self,
        row: &ScheduleVersionRow,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let result = (|| {
            let mut inner = self.lock();
            let schedule = &row.signed.schedule;
            let key = (schedule.device.clone(), schedule.version);
            if let Some(stored) = inner.schedules.get(&key) {
                if stored.signed == row.signed {
                    return Ok(());
                }
                return Err(StoreError::Refused(format!(
                    "{} version {} exists with other content",
                    schedule.device, schedule.version
                )));
            }
            inner.schedules.insert(
                key.clone(),
                StoredVersion {
                    rollout: row.rollout,
                    signed: row.signed.clone(),
                    deadline: row.deadline,
                    state: DeliveryState::Issued,
                    attempts: 0,
                },
            );
            inner.schedule_order.push_back(key);
            while inner.schedule_order.len() > self.limits.schedules_max {
                if let Some(oldest) = inner.schedule_order.pop_front() {
                    inner.schedules.remove(&oldest);
                }
            }
            Ok(())
        })();
        std::future::ready(result)
    }

    fn update_delivery(
        &self,
        update: &DeliveryUpdate,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let mut inner = self.lock();
        match update {
            DeliveryUpdate::Attempt {
                device,
                version,
                attempts,
                ..
            } => {
                if let Some(stored) = inner.schedules.get_mut(&(device.clone(), *version)) {
                    stored.attempts = stored.attempts.max(*attempts);
                }
            }
            DeliveryUpdate::State {
                device,
                version,
                state,
                ..
            } => {
                if let Some(stored) = inner.schedules.get_mut(&(device.clone(), *version)) {
                    stored.state = *state;
                }
            }
        }
        std::future::ready(Ok(()))
    }

    fn record_ack(
        &self,
        ack: &Ack,
        transport: TransportKind,
        received_at: UtcNanos,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let mut inner = self.lock();
        Self::seen(&mut inner, &ack.device, received_at);
        let new = inner
            .ack_keys
            .insert((ack.device.clone(), ack.version, ack.status));
        if new {
            inner.acks.push_back((ack.clone(), transport, received_at));
            while inner.acks.len() > self.limits.acks_max {
                if let Some((oldest, ..)) = inner.acks.pop_front() {
                    inner
                        .ack_keys
                        .remove(&(oldest.device, oldest.version, oldest.status));
                }
            }
        }
        std::future::ready(Ok(new))
    }

    fn record_telemetry(
        &self,
        batch: &TelemetryBatch,
        received_at: UtcNanos,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let mut inner = self.lock();
        Self::seen(&mut inner, &batch.device, received_at);
        let mut n_new = 0;
        for sample in &batch.samples {
            let key = (batch.device.clone(), sample.at);
            if inner.samples.insert(key.clone()) {
                n_new += 1;
                inner.sample_order.push_back(key);
            }
        }
        while inner.sample_order.len() > self.limits.samples_max {
            if let Some(oldest) = inner.sample_order.pop_front() {
                inner.samples.remove(&oldest);
            }
        }
        std::future::ready(Ok(n_new))
    }

    fn record_heartbeat(
        &self,
        heartbeat: &Heartbeat,
        received_at: UtcNanos,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let mut inner = self.lock();
        Self::seen(&mut inner, &heartbeat.device, received_at);
        inner.n_heartbeats += 1;
        std::future::ready(Ok(()))
    }

    fn load_resume_state(
        &self,
    ) -> impl Future<Output = Result<Vec<ResumeDevice>, StoreError>> + Send {
        let inner = self.lock();
        let mut latest: HashMap<&DeviceId, &StoredVersion> = HashMap::new();
        for ((device, version), stored) in &inner.schedules {
            match latest.get(device) {
                Some(newest) if newest.signed.schedule.version >= *version => {}
                _ => {
                    latest.insert(device, stored);
                }
            }
        }
        let ids: std::collections::BTreeSet<&DeviceId> = latest
            .keys()
            .copied()
            .chain(inner.last_seen.keys())
            .collect();
        let devices = ids
            .into_iter()
            .map(|device| ResumeDevice {
                device: device.clone(),
                last_seen: inner.last_seen.get(device).copied(),
                last_soc_wh: None,
                latest: latest.get(device).map(|stored| ResumeVersion {
                    rollout: Some(stored.rollout),
                    signed: stored.signed.clone(),
                    deadline: stored.deadline,
                    state: stored.state,
                    attempts: stored.attempts,
                }),
            })
            .collect();
        std::future::ready(Ok(devices))
    }
}
