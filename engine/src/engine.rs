//! [`Engine`]: the synchronous, thread-free sequencer core. Journal, then apply, then
//! acknowledge; snapshots at intervals; recovery from snapshot + journal replay.
//!
//! The threaded [`crate::sequencer::Sequencer`] wraps it; the simulator and the
//! benchmark drive it directly with [`Engine::process_batch`].
//!
//! # One group (at most `batch_len_max` commands)
//! 1. Number the commands `last_seq + 1 ..` and append each, encoded, to the journal.
//! 2. Write the group to the journal: one write.
//! 3. Sync the journal (one fsync for the whole group) and, at the same time, apply
//!    each command to the [`ShardState`], collecting its events. For groups of at least
//!    `sync_overlap_len_min` commands on a journal whose sync blocks, the fsync runs on a
//!    scoped helper thread while this thread applies, so the disk wait and the matching
//!    overlap; otherwise the sync runs first, inline.
//! 4. Only once the sync has returned `Ok`: hand out the group's events and one [`Ack`]
//!    per command (seq and event range).
//! 5. Every `snapshot_interval` commands, write a snapshot.
//!
//! Applying before the sync returns is safe because nothing leaves the engine before
//! it: events and acks of the group are withheld until the group is durable.
//!
//! A failed write or sync poisons the engine: the journal may hold part of the group,
//! the state may already have applied it, and only [`Engine::recover`] (which scans and
//! truncates the journal) brings back a state that agrees with the disk. Nothing of a
//! failed group is handed out or acknowledged; a crash at any point loses nothing
//! acknowledged.
//!
//! A failed snapshot does not poison: the journal still holds every command, so it only
//! lengthens the next recovery. It is logged and counted ([`Engine::n_snapshot_failures`]).
//!
//! # Recovery
//! [`Engine::recover`] loads the newest valid snapshot (skipping damaged ones), then
//! replays every journal record with a seq above the snapshot's, checking that seqs are
//! contiguous. The journal is never compacted, so it always reaches back to seq 1 and
//! recovery works without any snapshot at all.
//!
//! # Invariants
//! - Every acknowledged command is in the committed journal (ack after commit).
//! - The state's `last_seq` equals the seq of the last committed journal record.
//! - Journal records carry seqs `1, 2, 3, ...` in order, without gaps.
//! - Recovery yields the state (same [`ShardState::state_hash`]) that applying every
//!   committed record in order yields, whichever snapshot it starts from.

use std::path::Path;

use crate::command::{
    Ack, Committed, EngineCommand, EngineEvent, OversizeCommand, decode_entry, encode_entry,
};
use crate::journal::{
    FileJournal, Journal, JournalConfig, JournalError, MemJournal, MemStorage, OpenReport,
};
use crate::snapshot::{
    FileSnapshotStore, MemSnapshotStore, SkippedSnapshot, SnapshotError, SnapshotStore,
    encode_snapshot, load_latest,
};
use crate::state::{ShardConfig, ShardState};

/// Upper bound on the encoded size of one journal entry, in bytes. Every
/// [`EngineCommand`] encodes well below it (a unit test checks the largest one), and
/// [`EngineConfig::validate`] requires `record_len_max >= ENTRY_LEN_MAX`, so an append
/// can never be refused for its size.
pub const ENTRY_LEN_MAX: usize = 4096;

/// Name of the journal file inside an engine directory.
pub const JOURNAL_FILE_NAME: &str = "journal.log";

/// Limits and intervals of an engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// The shard's limits and book configuration.
    pub shard: ShardConfig,
    /// The journal's limits and damage policy.
    pub journal: JournalConfig,
    /// Most commands in one group commit; longer inputs are split.
    pub batch_len_max: usize,
    /// Commands between snapshots; 0 disables automatic snapshots.
    pub snapshot_interval: u64,
    /// Snapshots kept (the newest ones); at least 2, so one damaged snapshot still
    /// leaves a recent one.
    pub snapshots_kept: usize,
    /// Smallest group whose fsync runs on a helper thread while the group is applied;
    /// smaller groups sync inline (a thread costs more than it saves there).
    pub sync_overlap_len_min: usize,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            shard: ShardConfig::default(),
            journal: JournalConfig::default(),
            batch_len_max: 4096,
            snapshot_interval: 1_000_000,
            snapshots_kept: 2,
            sync_overlap_len_min: 256,
        }
    }
}

impl EngineConfig {
    /// Checks the limits.
    ///
    /// # Errors
    /// [`EngineError::InvalidConfig`] naming the broken limit.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.batch_len_max == 0 {
            return Err(EngineError::InvalidConfig("batch_len_max must be positive"));
        }
        if (self.journal.record_len_max as usize) < ENTRY_LEN_MAX {
            return Err(EngineError::InvalidConfig(
                "record_len_max must be >= ENTRY_LEN_MAX",
            ));
        }
        if self.sync_overlap_len_min == 0 {
            return Err(EngineError::InvalidConfig(
                "sync_overlap_len_min must be positive",
            ));
        }
        if self.snapshots_kept < 2 {
            return Err(EngineError::InvalidConfig(
                "snapshots_kept must be at least 2",
            ));
        }
        if self.shard.products_max == 0 || self.shard.book.orders_max == 0 {
            return Err(EngineError::InvalidConfig(
                "products_max and orders_max must be positive",
            ));
        }
        Ok(())
    }
}

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Journal failure (I/O, damage that is not a torn tail).
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Snapshot failure that recovery cannot skip.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A journal record with a valid checksum that does not decode.
    #[error("journal record {index} does not decode: {source}")]
    UndecodableRecord {
        /// Position of the record in the journal (0-based).
        index: usize,
        /// The decoder's error.
        source: postcard::Error,
    },
    /// Journal seqs are not contiguous.
    #[error("journal record {index} has seq {found}, expected {expected}")]
    SeqGap {
        /// Position of the record in the journal (0-based).
        index: usize,
        /// The seq that should follow.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// The snapshot contains commands the journal does not: the journal lost
    /// acknowledged records (or belongs to another engine).
    #[error("journal ends at seq {journal_last_seq} but the snapshot is at {snapshot_seq}")]
    JournalBehindSnapshot {
        /// The loaded snapshot's seq.
        snapshot_seq: u64,
        /// The last seq in the journal.
        journal_last_seq: u64,
    },
    /// Encoding a command failed (cannot happen for these types).
    #[error("encoding a command failed: {0}")]
    Encode(postcard::Error),
    /// A command too large for a journal entry (a bid curve or block family over its
    /// limits); nothing of its group was journaled and the engine is not poisoned.
    #[error("command {index} of the batch is too large: {size}")]
    CommandTooLarge {
        /// Position of the command in the group.
        index: usize,
        /// What is over its limit.
        size: OversizeCommand,
    },
    /// An earlier commit failed; recover from disk.
    #[error("engine poisoned by an earlier journal failure; recover to continue")]
    Poisoned,
    /// The configuration is unusable.
    #[error("invalid engine config: {0}")]
    InvalidConfig(&'static str),
}

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The journal scan (records kept, damaged tail truncated).
    pub journal: OpenReport,
    /// Seq of the snapshot recovery started from, if any.
    pub snapshot_seq: Option<u64>,
    /// Damaged snapshots skipped.
    pub snapshots_skipped: Vec<SkippedSnapshot>,
    /// Journal records replayed on top of the snapshot.
    pub n_replayed: u64,
    /// Seq of the last command in the recovered state.
    pub last_seq: u64,
}

/// Storage of an in-memory engine: survives dropping the engine ("crash") and can be
/// reopened with [`Engine::open_in_memory`]. Clones share the same storage.
#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    /// The journal's bytes.
    pub journal: MemStorage,
    /// The snapshots.
    pub snapshots: MemSnapshotStore,
}

/// The single-writer sequencer core of one shard (see the module docs).
pub struct Engine {
    config: EngineConfig,
    state: ShardState,
    journal: Box<dyn Journal>,
    snapshots: Box<dyn SnapshotStore>,
    last_snapshot_seq: u64,
    n_snapshot_failures: u64,
    poisoned: bool,
    entry: Vec<u8>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field("last_seq", &self.state.last_seq())
            .field("last_snapshot_seq", &self.last_snapshot_seq)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

/// Applies a journaled group to the state, pushing its events and acks.
fn apply_group(
    state: &mut ShardState,
    first_seq: u64,
    group: &[EngineCommand],
    events: &mut Vec<EngineEvent>,
    acks: &mut Vec<Ack>,
) {
    for (offset, command) in group.iter().enumerate() {
        let seq = first_seq + offset as u64;
        let first_event_seq = state.next_event_seq();
        state.apply(seq, command, events);
        acks.push(Ack {
            seq,
            first_event_seq,
            end_event_seq: state.next_event_seq(),
        });
    }
}

impl Engine {
    /// Opens (or creates) an engine in directory `dir` — journal `journal.log` and
    /// `snapshot-*.snap` files — and recovers its state.
    ///
    /// # Errors
    /// Invalid config, I/O, journal damage that is not a torn tail, undecodable records,
    /// a seq gap, or a journal behind the newest valid snapshot.
    pub fn open(dir: &Path, config: EngineConfig) -> Result<(Engine, RecoveryReport), EngineError> {
        config.validate()?;
        let snapshots = FileSnapshotStore::open(dir)?;
        let (journal, report) = FileJournal::open(&dir.join(JOURNAL_FILE_NAME), config.journal)?;
        Engine::recover(Box::new(journal), report, Box::new(snapshots), config)
    }

    /// Opens an engine over in-memory storage and recovers its state.
    ///
    /// # Errors
    /// As [`Engine::open`], without I/O errors.
    pub fn open_in_memory(
        disk: &MemDisk,
        config: EngineConfig,
    ) -> Result<(Engine, RecoveryReport), EngineError> {
        config.validate()?;
        let (journal, report) = MemJournal::open(disk.journal.clone(), config.journal)?;
        Engine::recover(
            Box::new(journal),
            report,
            Box::new(disk.snapshots.clone()),
            config,
        )
    }

    /// Recovers from an opened journal and a snapshot store: newest valid snapshot,
    /// then replay of the journal records after it.
    ///
    /// # Errors
    /// As [`Engine::open`].
    pub fn recover(
        journal: Box<dyn Journal>,
        journal_report: OpenReport,
        snapshots: Box<dyn SnapshotStore>,
        config: EngineConfig,
    ) -> Result<(Engine, RecoveryReport), EngineError> {
        Engine::recover_replaying(journal, journal_report, snapshots, config, &mut |_| {})
    }

    /// As [`Engine::open`], handing every replayed journal record to `replayed` (one
    /// command, its ack and its events, in seq order), so a consumer that lags the journal — a
    /// database projection, say — can catch up. With snapshots disabled
    /// (`snapshot_interval == 0`, no snapshot files) that is every event since the
    /// engine was created.
    ///
    /// # Errors
    /// As [`Engine::open`].
    pub fn open_replaying(
        dir: &Path,
        config: EngineConfig,
        replayed: &mut dyn FnMut(Committed<'_>),
    ) -> Result<(Engine, RecoveryReport), EngineError> {
        config.validate()?;
        let snapshots = FileSnapshotStore::open(dir)?;
        let (journal, report) = FileJournal::open(&dir.join(JOURNAL_FILE_NAME), config.journal)?;
        Engine::recover_replaying(
            Box::new(journal),
            report,
            Box::new(snapshots),
            config,
            replayed,
        )
    }

    /// As [`Engine::recover`], handing replayed events to `replayed`.
    ///
    /// # Errors
    /// As [`Engine::open`].
    pub fn recover_replaying(
        mut journal: Box<dyn Journal>,
        journal_report: OpenReport,
        snapshots: Box<dyn SnapshotStore>,
        config: EngineConfig,
        replayed: &mut dyn FnMut(Committed<'_>),
    ) -> Result<(Engine, RecoveryReport), EngineError> {
        config.validate()?;
        let (loaded, snapshots_skipped) = load_latest(snapshots.as_ref(), config.shard)?;
        let snapshot_seq = loaded.as_ref().map(ShardState::last_seq);
        let mut state = loaded.unwrap_or_else(|| ShardState::new(config.shard));
        let records = journal.read_all()?;
        let mut events = Vec::new();
        let mut n_replayed = 0u64;
        let mut journal_last_seq = 0u64;
        for (index, payload) in records.iter().enumerate() {
            let entry = decode_entry(payload)
                .map_err(|source| EngineError::UndecodableRecord { index, source })?;
            let expected = journal_last_seq + 1;
            if entry.seq != expected {
                return Err(EngineError::SeqGap {
                    index,
                    expected,
                    found: entry.seq,
                });
            }
            journal_last_seq = entry.seq;
            if entry.seq <= state.last_seq() {
                continue;
            }
            events.clear();
            let first_event_seq = state.next_event_seq();
            state.apply(entry.seq, &entry.command, &mut events);
            replayed(Committed {
                commands: std::slice::from_ref(&entry.command),
                acks: &[Ack {
                    seq: entry.seq,
                    first_event_seq,
                    end_event_seq: first_event_seq + events.len() as u64,
                }],
                events: &events,
            });
            n_replayed += 1;
        }
        if journal_last_seq < state.last_seq() {
            return Err(EngineError::JournalBehindSnapshot {
                snapshot_seq: state.last_seq(),
                journal_last_seq,
            });
        }
        state.check_invariants();
        let report = RecoveryReport {
            journal: journal_report,
            snapshot_seq,
            snapshots_skipped,
            n_replayed,
            last_seq: state.last_seq(),
        };
        tracing::info!(
            last_seq = report.last_seq,
            snapshot_seq = ?report.snapshot_seq,
            n_replayed = report.n_replayed,
            tail_damage = ?report.journal.damage,
            "engine recovered"
        );
        let engine = Engine {
            config,
            last_snapshot_seq: snapshot_seq.unwrap_or(0),
            state,
            journal,
            snapshots,
            n_snapshot_failures: 0,
            poisoned: false,
            entry: Vec::with_capacity(ENTRY_LEN_MAX),
        };
        Ok((engine, report))
    }

    /// Journals, commits and applies `commands` in groups of at most `batch_len_max`
    /// (one fsync per group), appending their events to `events` and one [`Ack`] per
    /// command to `acks` (neither is cleared). Acks are pushed only for committed
    /// groups: on error, the acks already pushed are durable and the rest are not.
    ///
    /// # Errors
    /// A journal failure, after which the engine is poisoned
    /// ([`EngineError::Poisoned`] from then on).
    pub fn process_batch(
        &mut self,
        commands: &[EngineCommand],
        events: &mut Vec<EngineEvent>,
        acks: &mut Vec<Ack>,
    ) -> Result<(), EngineError> {
        for group in commands.chunks(self.config.batch_len_max) {
            self.process_group(group, events, acks)?;
        }
        Ok(())
    }

    fn process_group(
        &mut self,
        group: &[EngineCommand],
        events: &mut Vec<EngineEvent>,
        acks: &mut Vec<Ack>,
    ) -> Result<(), EngineError> {
        if self.poisoned {
            return Err(EngineError::Poisoned);
        }
        for (index, command) in group.iter().enumerate() {
            command
                .check_size()
                .map_err(|size| EngineError::CommandTooLarge { index, size })?;
        }
        let first_seq = self.state.last_seq() + 1;
        if let Err(error) = self.write_group(first_seq, group) {
            return Err(self.poison(error, first_seq));
        }
        let (n_events_before, n_acks_before) = (events.len(), acks.len());
        acks.reserve(group.len());
        let synced =
            if group.len() >= self.config.sync_overlap_len_min && self.journal.sync_blocks() {
                let journal = &*self.journal;
                let state = &mut self.state;
                std::thread::scope(|scope| {
                    let syncing = scope.spawn(|| journal.sync());
                    apply_group(state, first_seq, group, events, acks);
                    syncing.join().unwrap_or_else(|_| {
                        Err(JournalError::Io {
                            path: "<sync thread>".into(),
                            source: std::io::Error::other("journal sync thread panicked"),
                        })
                    })
                })
            } else {
                self.journal
                    .sync()
                    .map(|()| apply_group(&mut self.state, first_seq, group, events, acks))
            };
        if let Err(error) = synced {
            // Nothing of this group leaves the engine.
            events.truncate(n_events_before);
            acks.truncate(n_acks_before);
            return Err(self.poison(EngineError::Journal(error), first_seq));
        }
        if self.config.snapshot_interval > 0
            && self.state.last_seq() - self.last_snapshot_seq >= self.config.snapshot_interval
        {
            self.snapshot_or_warn();
        }
        Ok(())
    }

    fn poison(&mut self, error: EngineError, first_seq: u64) -> EngineError {
        self.poisoned = true;
        tracing::error!(%error, first_seq, "journal write or sync failed; engine poisoned");
        error
    }

    fn write_group(&mut self, first_seq: u64, group: &[EngineCommand]) -> Result<(), EngineError> {
        for (offset, command) in group.iter().enumerate() {
            self.entry.clear();
            encode_entry(first_seq + offset as u64, command, &mut self.entry)
                .map_err(EngineError::Encode)?;
            debug_assert!(
                self.entry.len() <= ENTRY_LEN_MAX,
                "entry within ENTRY_LEN_MAX"
            );
            self.journal.append(&self.entry)?;
        }
        self.journal.write()?;
        Ok(())
    }

    fn snapshot_or_warn(&mut self) {
        if let Err(error) = self.snapshot_now() {
            self.n_snapshot_failures += 1;
            let seq = self.state.last_seq();
            tracing::warn!(%error, seq, "snapshot failed; the journal still holds everything");
        }
    }

    /// Writes a snapshot of the current state now, then deletes snapshots beyond the
    /// newest `snapshots_kept`.
    ///
    /// # Errors
    /// Snapshot I/O errors (the engine stays usable); [`EngineError::Poisoned`].
    pub fn snapshot_now(&mut self) -> Result<(), EngineError> {
        if self.poisoned {
            return Err(EngineError::Poisoned);
        }
        let seq = self.state.last_seq();
        let bytes = encode_snapshot(&self.state.snapshot()).map_err(EngineError::Encode)?;
        self.snapshots.save(seq, &bytes)?;
        self.last_snapshot_seq = seq;
        let seqs = self.snapshots.list()?;
        let n_old = seqs.len().saturating_sub(self.config.snapshots_kept);
        for old in &seqs[..n_old] {
            self.snapshots.remove(*old)?;
        }
        Ok(())
    }

    /// The shard state (books, time, counters).
    pub fn state(&self) -> &ShardState {
        &self.state
    }

    /// Seq of the last applied (and committed) command.
    pub fn last_seq(&self) -> u64 {
        self.state.last_seq()
    }

    /// [`ShardState::state_hash`] of the current state.
    pub fn state_hash(&self) -> [u8; 32] {
        self.state.state_hash()
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Seq of the last snapshot written or loaded (0 if none).
    pub fn last_snapshot_seq(&self) -> u64 {
        self.last_snapshot_seq
    }

    /// Snapshots that failed since the engine was opened.
    pub fn n_snapshot_failures(&self) -> u64 {
        self.n_snapshot_failures
    }

    /// True after a journal failure; only recovery helps then.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{CommandKind, JournalEntry};
    use voltex_market::book::{BookCommand, NewOrder, StpMode, TimeInForce};
    use voltex_market::{
        AccountId, DeliveryPeriod, MarketRules, OrderId, PeriodLength, Price, ProductId, Qty, Side,
        UtcNanos,
    };

    #[test]
    fn largest_commands_fit_entry_len_max() {
        let rules = MarketRules {
            tick: Price(i64::MIN),
            price_min: Price(i64::MIN),
            price_max: Price(i64::MAX),
            lot_kw: i64::MIN,
            qty_max: Qty(i64::MIN),
            gate_closure_lead_s: i64::MIN,
        };
        let period = DeliveryPeriod::containing(UtcNanos(i64::MIN / 2), PeriodLength::Minutes60)
            .expect("i64::MIN / 2 is far from the representable edge");
        let order = NewOrder {
            id: OrderId(u64::MAX),
            account: AccountId(u32::MAX),
            side: Side::Sell,
            price: Price(i64::MIN),
            qty: Qty(i64::MIN),
            time_in_force: TimeInForce::Fok,
            post_only: true,
            peak: Some(Qty(i64::MIN)),
            stp: StpMode::DecrementBoth,
        };
        let product = ProductId(u32::MAX);
        let kinds = [
            CommandKind::AddProduct {
                product,
                period,
                rules: rules.clone(),
            },
            CommandKind::ListProduct {
                product,
                period,
                rules: rules.clone(),
                auction_rules: Box::new(rules),
            },
            CommandKind::Book {
                product,
                command: BookCommand::Submit(order),
            },
            CommandKind::Book {
                product,
                command: BookCommand::Modify {
                    id: OrderId(u64::MAX),
                    account: AccountId(u32::MAX),
                    price: Price(i64::MIN),
                    qty: Qty(i64::MIN),
                },
            },
            CommandKind::SubmitCurve {
                product,
                account: AccountId(u32::MAX),
                side: Side::Sell,
                kind: voltex_market::auction::CurveKind::PiecewiseLinear,
                points: vec![
                    voltex_market::auction::CurvePoint {
                        price: Price(i64::MIN),
                        qty: Qty(i64::MIN),
                    };
                    crate::auction::AUCTION_POINTS_PER_CURVE_MAX
                ],
            },
        ];
        // The largest block family: every product id and quantity at its longest
        // encoding. It needs more room than the others, but fits an entry.
        let family = CommandKind::SubmitFamily {
            account: AccountId(u32::MAX),
            family: crate::family::FamilyRef(u32::MAX),
            products: vec![product; crate::family::FAMILY_PRODUCTS_MAX],
            blocks: vec![
                crate::family::FamilyBlock {
                    side: Side::Sell,
                    limit: Price(i64::MIN),
                    qty: vec![
                        Qty(i64::MIN);
                        crate::family::FAMILY_QTYS_MAX / crate::family::BLOCKS_PER_FAMILY_MAX
                    ],
                };
                crate::family::BLOCKS_PER_FAMILY_MAX
            ],
            exclusive_group: Some(u32::MAX),
        };
        for (kind, len_max) in kinds
            .into_iter()
            .map(|kind| (kind, ENTRY_LEN_MAX / 2))
            .chain([(family, ENTRY_LEN_MAX)])
        {
            let long = "x".repeat(crate::command::ORIGIN_FIELD_LEN_MAX);
            let command = EngineCommand {
                now: UtcNanos(i64::MIN),
                kind,
                origin: None,
            }
            .with_origin(
                crate::command::CommandOrigin::new(long.clone(), long.clone(), long).unwrap(),
            );
            let mut bytes = Vec::new();
            encode_entry(u64::MAX, &command, &mut bytes).unwrap();
            assert!(bytes.len() <= len_max, "{} bytes", bytes.len());
            let decoded = decode_entry(&bytes).unwrap();
            assert_eq!(
                decoded,
                JournalEntry {
                    seq: u64::MAX,
                    command
                }
            );
        }
    }

    #[test]
    fn config_limits_are_checked() {
        let mut config = EngineConfig::default();
        config.validate().unwrap();
        config.batch_len_max = 0;
        assert!(matches!(
            config.validate(),
            Err(EngineError::InvalidConfig(_))
        ));
        let mut config = EngineConfig::default();
        config.journal.record_len_max = 64;
        assert!(matches!(
            config.validate(),
            Err(EngineError::InvalidConfig(_))
        ));
    }
}
