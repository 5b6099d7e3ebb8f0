//! Durable agent state: what survives a crash, and the [`AgentStore`] interface.
//!
//! The pure core ([`crate::core::AgentCore`]) keeps its state in memory and describes
//! every change as a [`WriteBatch`]; a store applies a batch atomically (all or
//! nothing), and [`AgentStore::load`] returns the [`PersistedState`] the core restores
//! from. Two stores:
//! - [`sqlite::SqliteStore`]: the agent's local SQLite file (WAL, `synchronous=FULL`),
//!   one transaction per batch.
//! - [`memory::MemoryStore`]: plain memory, for the simulator (the simulator keeps it
//!   across a simulated reboot, so a "reboot" is `AgentCore::restore(store.state())`)
//!   and for tests.
//!
//! # Invariants
//! - A committed batch is either entirely visible after a restart or not at all.
//! - At most one [`ScheduleRecord`] per [`ScheduleKey`]; records keep their arrival order.

pub mod memory;
pub mod sqlite;

use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use voltex_dispatch::SignedSchedule;
use voltex_dispatch::message::{FailureReason, ScheduleRejection};
use voltex_market::UtcNanos;

use crate::acceptance::ScheduleKey;
use crate::outbox::OutboxEntry;

/// Where a received schedule stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecordStatus {
    /// Stored, not yet decided (the agent may have crashed before deciding).
    Received,
    /// Accepted; executing or waiting for its window.
    Accepted,
    /// Refused.
    Rejected(ScheduleRejection),
    /// Replaced by a newer version.
    Superseded {
        /// The newer version.
        by_version: u64,
    },
    /// Its window ended after it started.
    Completed,
    /// Stopped before its end.
    Failed(FailureReason),
    /// Its window ended before it started.
    Missed,
}

impl RecordStatus {
    /// Whether the schedule was accepted at some point (its fallback counts).
    pub fn was_accepted(self) -> bool {
        matches!(
            self,
            RecordStatus::Accepted
                | RecordStatus::Superseded { .. }
                | RecordStatus::Completed
                | RecordStatus::Failed(_)
                | RecordStatus::Missed
        )
    }

    /// Whether nothing more will happen to it.
    pub fn is_terminal(self) -> bool {
        !matches!(self, RecordStatus::Received | RecordStatus::Accepted)
    }
}

/// A received schedule and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// Arrival order (strictly increasing).
    pub arrival: u64,
    /// When it was received, on the agent's clock.
    pub received_at: UtcNanos,
    /// The schedule as received, shared with the core's copy of the record and the
    /// executor (one allocation per received schedule, however many holders).
    pub signed: Arc<SignedSchedule>,
    /// Where it stands.
    pub status: RecordStatus,
    /// Whether its first period started (`Started` was acked).
    pub started: bool,
}

impl ScheduleRecord {
    /// Its key.
    pub fn key(&self) -> ScheduleKey {
        ScheduleKey::of(&self.signed)
    }
}

/// A status change of a stored record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordUpdate {
    /// Which record.
    pub key: ScheduleKey,
    /// Its new status.
    pub status: RecordStatus,
    /// Its new started flag.
    pub started: bool,
}

/// One line of the execution log (kept for debugging, bounded by the store).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecLogEntry {
    /// When, on the agent's clock.
    pub at: UtcNanos,
    /// The schedule, if one is concerned.
    pub key: Option<ScheduleKey>,
    /// What happened.
    pub event: ExecLogEvent,
}

/// What an execution log line records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecLogEvent {
    /// A period began with this target.
    Period {
        /// Period index.
        period_idx: u32,
        /// Target in W.
        target_w: i64,
    },
    /// The fallback took over with this target.
    Fallback {
        /// Target in W.
        target_w: i64,
    },
    /// Started / Completed / Failed / Missed / accepted / rejected...
    Status(RecordStatus),
    /// The emergency stop was engaged (`true`) or released.
    EmergencyStop(bool),
    /// The agent (re)started.
    Boot,
}

/// Changes to apply atomically. Empty batches are cheap (no allocation).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteBatch {
    /// Records to forget (applied first: terminal ones beyond the retention bound, or
    /// a forged copy replaced by the real schedule under the same key).
    pub records_delete: Vec<ScheduleKey>,
    /// New records (applied after the deletes).
    pub records_insert: Vec<ScheduleRecord>,
    /// Status changes of existing records (applied after the inserts).
    pub records_update: Vec<RecordUpdate>,
    /// New outbox entries.
    pub outbox_push: Vec<OutboxEntry>,
    /// Outbox entries dropped by the overflow rule.
    pub outbox_delete: Vec<u64>,
    /// Drop every outbox entry with `seq <= ` this (a receipt).
    pub outbox_drain_through: Option<u64>,
    /// The outbox's new sequence high-water mark.
    pub next_seq: Option<u64>,
    /// Execution log lines.
    pub exec_log: Vec<ExecLogEntry>,
}

impl WriteBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.records_insert.is_empty()
            && self.records_update.is_empty()
            && self.records_delete.is_empty()
            && self.outbox_push.is_empty()
            && self.outbox_delete.is_empty()
            && self.outbox_drain_through.is_none()
            && self.next_seq.is_none()
            && self.exec_log.is_empty()
    }

    /// Appends `other`'s changes after this batch's.
    pub fn append(&mut self, mut other: WriteBatch) {
        self.records_insert.append(&mut other.records_insert);
        self.records_update.append(&mut other.records_update);
        self.records_delete.append(&mut other.records_delete);
        self.outbox_push.append(&mut other.outbox_push);
        self.outbox_delete.append(&mut other.outbox_delete);
        self.outbox_drain_through = self.outbox_drain_through.max(other.outbox_drain_through);
        self.next_seq = self.next_seq.max(other.next_seq);
        self.exec_log.append(&mut other.exec_log);
    }
}

/// Everything the core restores from after a restart.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PersistedState {
    /// Stored schedules in arrival order.
    pub records: Vec<ScheduleRecord>,
    /// Unreceipted reports in sequence order.
    pub outbox: Vec<OutboxEntry>,
    /// The outbox's sequence high-water mark.
    pub next_seq: u64,
}

/// A durable home for the agent's state.
pub trait AgentStore {
    /// Why a load or commit failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Reads the stored state.
    ///
    /// Cancellation safety: read-only; cancelling loses nothing.
    fn load(&mut self) -> impl Future<Output = Result<PersistedState, Self::Error>> + Send;

    /// Applies `batch` atomically and durably: when this returns `Ok` the batch
    /// survives a crash; on `Err` none of it was applied.
    ///
    /// Cancellation safety: cancelling may or may not have committed the batch (never
    /// part of it); the caller must treat it as unknown, i.e. stop and restart from
    /// [`AgentStore::load`]. The runtime never cancels a commit.
    fn commit(
        &mut self,
        batch: &WriteBatch,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}
