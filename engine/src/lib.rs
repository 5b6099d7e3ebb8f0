//! # voltex-engine: the live core — sequencer, command journal, snapshots
//!
//! One shard of products is owned by one single-writer sequencer:
//! - [`command`]: [`EngineCommand`] in (add a product, a book command, advance time,
//!   submit or withdraw a day-ahead bid curve),
//!   [`EngineEvent`]s and an [`Ack`] per command out; the journal record encoding.
//! - [`state`]: [`ShardState`], the books of the shard and the pure, deterministic
//!   transition `apply(seq, command) -> events`, gate closure by time, and
//!   [`ShardState::state_hash`] (blake3 of a canonical serialization).
//! - [`auction`]: each product's day-ahead call auction (curves until the day-ahead
//!   gate, cleared once when engine time passes it), its limits and reject reasons.
//! - [`journal`]: the append-only, checksummed, group-committed [`Journal`] (file and
//!   in-memory), and torn-tail detection and repair.
//! - [`snapshot`]: atomic snapshots of the whole state, newest valid one first.
//! - [`engine`]: [`Engine`], the synchronous core: journal → commit (one fsync per
//!   group) → apply → ack; snapshots every N commands; recovery = snapshot + replay.
//! - [`sequencer`]: [`Sequencer`], the writer thread around an [`Engine`], fed by a
//!   bounded queue, batching whatever is queued into one group commit.
//!
//! **Architecture Invariant:** this crate does no network I/O and reads no clock: time
//! arrives on the commands. Disk is touched only by [`journal::FileJournal`] and
//! [`snapshot::FileSnapshotStore`]; the simulator uses the in-memory twins
//! ([`engine::MemDisk`]), with the same formats and the same recovery code.
//!
//! **API Boundary:** [`Engine::open`] + [`Engine::process_batch`] (benchmarks, the
//! simulator), [`Sequencer::spawn`] + [`sequencer::SequencerClient`] (the server).
//!
//! # Invariants (whole crate)
//! - Nothing is acknowledged before it is durable in the journal.
//! - Commands are numbered `1, 2, 3, ...` and applied exactly once, in that order.
//! - Replaying the same commands gives the same events and the same state hash; recovery
//!   from any valid snapshot plus the journal gives the state the live engine had.
//! - A torn or corrupt journal tail is detected, reported and truncated to the last good
//!   record; damage followed by valid records is refused, never silently dropped.
//!
//! ```
//! use voltex_engine::{Engine, EngineCommand, EngineConfig, EventKind, MemDisk};
//! use voltex_market::book::{BookCommand, BookEvent, NewOrder};
//! use voltex_market::{AccountId, DeliveryPeriod, MarketRules, OrderId, PeriodLength};
//! use voltex_market::{Price, ProductId, Qty, Side, UtcNanos};
//!
//! let disk = MemDisk::default();
//! let (mut engine, _report) = Engine::open_in_memory(&disk, EngineConfig::default()).unwrap();
//! let hour = 3_600_000_000_000;
//! let period = DeliveryPeriod::new(UtcNanos(10 * hour), PeriodLength::Minutes60).unwrap();
//! let product = ProductId(1);
//! let order = NewOrder::limit(OrderId(1), AccountId(7), Side::Buy, Price(5000), Qty(10));
//! let commands = [
//!     EngineCommand::add_product(UtcNanos(0), product, period, MarketRules::intraday_default()),
//!     EngineCommand::book(UtcNanos(1), product, BookCommand::Submit(order)),
//!     EngineCommand::advance_time(UtcNanos(10 * hour)), // past gate closure
//! ];
//! let (mut events, mut acks) = (Vec::new(), Vec::new());
//! engine.process_batch(&commands, &mut events, &mut acks).unwrap(); // one fsync
//! assert_eq!(acks.len(), 3);
//! assert!(events.iter().any(|event| event.kind
//!     == EventKind::Book(BookEvent::Expired { id: OrderId(1), qty: Qty(10) })));
//!
//! // Crash and recover: same state.
//! let hash = engine.state_hash();
//! drop(engine);
//! let (engine, report) = Engine::open_in_memory(&disk, EngineConfig::default()).unwrap();
//! assert_eq!(report.n_replayed, 3);
//! assert_eq!(engine.state_hash(), hash);
//! ```
#![deny(missing_docs)]

pub mod auction;
pub mod bidding;
pub mod command;
pub mod commit;
pub mod engine;
pub mod family;
pub mod forecast;
pub mod journal;
pub mod optimise;
pub mod sequencer;
pub mod snapshot;
pub mod state;

pub use command::{
    Ack, CommandKind, EngineCommand, EngineEvent, EngineReject, EventKind, ListingTerms,
};
pub use engine::{Engine, EngineConfig, EngineError, MemDisk, RecoveryReport};
pub use journal::{DamageKind, Journal, JournalConfig, JournalError, TailDamage};
pub use sequencer::{Reply, Sequencer, SequencerClient, SequencerConfig, SequencerError};
pub use state::{ShardConfig, ShardState};
