//! In-memory [`AgentStore`]: the simulator's store and the tests' reference.
//!
//! [`MemoryStore::apply`] is synchronous, so the simulator needs no async runtime; the
//! [`AgentStore`] impl wraps it in ready futures. A simulated reboot drops the
//! `AgentCore` and restores a new one from [`MemoryStore::state`].
//!
//! # Invariants
//! - Same as the module `store`: batches apply whole; one record per key.
//! - The execution log keeps at most [`MemoryStore::EXEC_LOG_MAX`] lines (oldest dropped).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::{Future, ready};

use smallvec::SmallVec;

use super::{AgentStore, ExecLogEntry, PersistedState, ScheduleRecord, WriteBatch};
use crate::outbox::OutboxEntry;

/// The state in plain memory. See the module doc.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    state: Stored,
    /// Boxed and created by the first line: the simulator commits batches without log
    /// lines, and each of its thousands of stores then costs one pointer here instead
    /// of an empty `VecDeque` (32 bytes). The extra allocation the lint warns of is
    /// made once per store that logs at all.
    #[allow(clippy::box_collection)]
    exec_log: Option<Box<VecDeque<ExecLogEntry>>>,
}

/// A [`PersistedState`] with the records inline while there is one (as `AgentCore`
/// keeps them, and for the same reason: thousands of simulated stores).
#[derive(Clone, Debug, Default)]
struct Stored {
    records: SmallVec<[ScheduleRecord; 1]>,
    outbox: Vec<OutboxEntry>,
    next_seq: u64,
}

impl MemoryStore {
    /// Most execution log lines kept.
    pub const EXEC_LOG_MAX: usize = 1_024;

    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Applies a batch (cannot fail).
    pub fn apply(&mut self, batch: &WriteBatch) {
        let state = &mut self.state;
        if !batch.records_delete.is_empty() {
            state
                .records
                .retain(|r| !batch.records_delete.contains(&r.key()));
            // Give the slack back (as `AgentCore` does with its records).
            state.records.shrink_to_fit();
        }
        for record in &batch.records_insert {
            let key = record.key();
            if !state.records.iter().any(|r| r.key() == key) {
                if state.records.len() < crate::EXACT_GROWTH_BELOW {
                    state.records.reserve_exact(1);
                }
                state.records.push(record.clone());
            }
        }
        for update in &batch.records_update {
            if let Some(record) = state.records.iter_mut().find(|r| r.key() == update.key) {
                record.status = update.status;
                record.started = update.started;
            }
        }
        if state.outbox.len() < crate::EXACT_GROWTH_BELOW {
            state.outbox.reserve_exact(batch.outbox_push.len());
        }
        state.outbox.extend(batch.outbox_push.iter().copied());
        if !batch.outbox_delete.is_empty() {
            state
                .outbox
                .retain(|e| !batch.outbox_delete.contains(&e.seq));
        }
        if let Some(through) = batch.outbox_drain_through {
            state.outbox.retain(|e| e.seq > through);
        }
        if state.outbox.is_empty() {
            // Drained: free the buffer (see `Outbox::receipt`; thousands of simulated
            // agents each hold a store).
            state.outbox = Vec::new();
        }
        if let Some(next_seq) = batch.next_seq {
            state.next_seq = state.next_seq.max(next_seq);
        }
        if !batch.exec_log.is_empty() {
            let exec_log = self.exec_log.get_or_insert_default();
            for line in &batch.exec_log {
                if exec_log.len() >= Self::EXEC_LOG_MAX {
                    exec_log.pop_front();
                }
                exec_log.push_back(*line);
            }
        }
    }

    /// A copy of the stored state (what a restarted agent would load).
    pub fn state(&self) -> PersistedState {
        PersistedState {
            records: self.state.records.to_vec(),
            outbox: self.state.outbox.clone(),
            next_seq: self.state.next_seq,
        }
    }

    /// The execution log, oldest first.
    pub fn exec_log(&self) -> impl Iterator<Item = &ExecLogEntry> {
        self.exec_log.iter().flat_map(|log| log.iter())
    }
}

impl AgentStore for MemoryStore {
    type Error = Infallible;

    /// Cancellation safety: ready at once.
    fn load(&mut self) -> impl Future<Output = Result<PersistedState, Infallible>> + Send {
        ready(Ok(self.state()))
    }

    /// Cancellation safety: applied before the future is returned, so always committed.
    fn commit(
        &mut self,
        batch: &WriteBatch,
    ) -> impl Future<Output = Result<(), Infallible>> + Send {
        self.apply(batch);
        ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use voltex_market::UtcNanos;

    use super::*;
    use crate::store::{ExecLogEvent, RecordStatus};

    fn line(k: u32) -> ExecLogEntry {
        ExecLogEntry {
            at: UtcNanos(i64::from(k)),
            key: None,
            event: ExecLogEvent::Period {
                period_idx: k,
                target_w: 0,
            },
        }
    }

    fn record(arrival: u64, version: u64) -> ScheduleRecord {
        let signed = crate::test_fixtures::one_period(version, UtcNanos(0), 3_600, 0);
        ScheduleRecord {
            arrival,
            received_at: UtcNanos(0),
            signed: signed.into(),
            status: RecordStatus::Accepted,
            started: false,
        }
    }

    #[test]
    fn a_replaced_record_gives_its_heap_buffer_back_and_the_state_reads_the_same() {
        let mut store = MemoryStore::new();
        store.apply(&WriteBatch {
            records_insert: vec![record(0, 1)],
            ..WriteBatch::default()
        });
        assert!(!store.state.records.spilled(), "one record lives inline");
        // A delivery stores the new version first, then the core prunes the old one.
        store.apply(&WriteBatch {
            records_insert: vec![record(1, 2)],
            ..WriteBatch::default()
        });
        assert!(store.state.records.spilled(), "two records need a buffer");
        let old_key = record(0, 1).key();
        store.apply(&WriteBatch {
            records_delete: vec![old_key],
            ..WriteBatch::default()
        });
        assert!(!store.state.records.spilled(), "the buffer is given back");
        let state = store.state();
        assert_eq!(state.records, vec![record(1, 2)]);
        assert!(state.outbox.is_empty());
    }

    #[test]
    fn batches_without_log_lines_allocate_no_log_and_the_log_keeps_the_newest_lines() {
        let mut store = MemoryStore::new();
        store.apply(&WriteBatch {
            next_seq: Some(3),
            ..WriteBatch::default()
        });
        assert!(store.exec_log.is_none(), "no line, no log buffer");
        assert_eq!(store.exec_log().count(), 0);

        let n_lines = MemoryStore::EXEC_LOG_MAX as u32 + 5;
        for k in 0..n_lines {
            store.apply(&WriteBatch {
                exec_log: vec![line(k)],
                ..WriteBatch::default()
            });
        }
        let kept: Vec<ExecLogEntry> = store.exec_log().copied().collect();
        assert_eq!(kept.len(), MemoryStore::EXEC_LOG_MAX);
        assert_eq!(kept.first(), Some(&line(5)), "the oldest five were dropped");
        assert_eq!(kept.last(), Some(&line(n_lines - 1)));
    }
}
