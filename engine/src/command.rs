//! What goes into the sequencer ([`EngineCommand`]) and what comes out
//! ([`EngineEvent`], [`Ack`]), and how a command is encoded in a journal record.
//!
//! Commands carry the time they arrive at (`now`): the engine never reads a clock.
//! The sequencer numbers commands `1, 2, 3, ...` (the command sequence number, `seq`)
//! and numbers events the same way, independently (`event_seq`), so a consumer can
//! detect a gap in either stream.
//!
//! A journal record is the postcard encoding of [`JournalEntry`]: the command's seq and
//! the command itself. postcard is a canonical encoding for these types, so the same
//! command always produces the same bytes.
//!
//! # Invariants
//! - `decode_entry(encode_entry(e)) == e` for every entry (round trip).
//! - Decoding arbitrary bytes returns `Err`, never panics.

use serde::{Deserialize, Serialize};
use voltex_market::auction::{CurveKind, CurvePoint};
use voltex_market::book::{BookCommand, BookEvent};
use voltex_market::{
    AccountId, DeliveryPeriod, MarketRules, Price, ProductId, Qty, Side, UtcNanos,
};

use crate::auction::{AUCTION_POINTS_PER_CURVE_MAX, CurveReject};

/// One command to the sequencer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineCommand {
    /// When the command arrived (caller's clock). The engine's time is the maximum
    /// `now` seen so far, so time never runs backwards inside the engine.
    pub now: UtcNanos,
    /// What to do.
    pub kind: CommandKind,
}

/// What a command does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandKind {
    /// List a new product (one delivery period) with its own book.
    AddProduct {
        /// Identity within the shard; must be new.
        product: ProductId,
        /// The delivery period it trades.
        period: DeliveryPeriod,
        /// Its market rules (gate closure lead included).
        rules: MarketRules,
    },
    /// A command to one product's book.
    Book {
        /// Target product.
        product: ProductId,
        /// The book command.
        command: BookCommand,
    },
    /// Only advance the engine's time (closing every book whose gate has passed).
    AdvanceTime,
    /// Submit or replace `account`'s `side` curve in `product`'s day-ahead auction.
    ///
    /// Callers must send at most [`AUCTION_POINTS_PER_CURVE_MAX`] points: a longer
    /// command is refused by `Engine::process_batch` before it is journaled
    /// ([`EngineCommand::check_size`]).
    SubmitCurve {
        /// Target product (delivery period).
        product: ProductId,
        /// The bidding account.
        account: AccountId,
        /// Buy or sell.
        side: Side,
        /// Stepwise or piecewise-linear.
        kind: CurveKind,
        /// Points by strictly increasing price.
        points: Vec<CurvePoint>,
    },
    /// Withdraw `account`'s `side` curve from `product`'s day-ahead auction.
    WithdrawCurve {
        /// Target product.
        product: ProductId,
        /// The bidding account.
        account: AccountId,
        /// Buy or sell.
        side: Side,
    },
}

impl EngineCommand {
    /// A book command at `now`.
    pub fn book(now: UtcNanos, product: ProductId, command: BookCommand) -> EngineCommand {
        EngineCommand {
            now,
            kind: CommandKind::Book { product, command },
        }
    }

    /// A new product at `now`.
    pub fn add_product(
        now: UtcNanos,
        product: ProductId,
        period: DeliveryPeriod,
        rules: MarketRules,
    ) -> EngineCommand {
        EngineCommand {
            now,
            kind: CommandKind::AddProduct {
                product,
                period,
                rules,
            },
        }
    }

    /// A time advance to `now`.
    pub fn advance_time(now: UtcNanos) -> EngineCommand {
        EngineCommand {
            now,
            kind: CommandKind::AdvanceTime,
        }
    }

    /// Checks the command fits a journal entry: a `SubmitCurve` has at most
    /// [`AUCTION_POINTS_PER_CURVE_MAX`] points.
    ///
    /// # Errors
    /// The number of points of an oversized curve.
    pub fn check_size(&self) -> Result<(), usize> {
        match &self.kind {
            CommandKind::SubmitCurve { points, .. }
                if points.len() > AUCTION_POINTS_PER_CURVE_MAX =>
            {
                Err(points.len())
            }
            _ => Ok(()),
        }
    }
}

/// Why the engine (not a book) refused a command. A refused command changes nothing
/// except the engine's time and sequence numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum EngineReject {
    /// `AddProduct` for an id already listed.
    #[error("product already listed")]
    DuplicateProduct,
    /// `AddProduct` with rules the book refuses.
    #[error("invalid market rules")]
    InvalidRules,
    /// `AddProduct` whose gate closure has already passed.
    #[error("gate closure already passed")]
    GateClosurePassed,
    /// `AddProduct` beyond `products_max`.
    #[error("shard holds products_max products already")]
    ShardFull,
    /// A book command for a product that is not listed.
    #[error("unknown product")]
    UnknownProduct,
}

/// What happened, as seen by the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A product was listed (its book is open).
    ProductAdded {
        /// Its delivery period.
        period: DeliveryPeriod,
    },
    /// The engine refused the command.
    Rejected {
        /// Why.
        reason: EngineReject,
    },
    /// An event of the product's book.
    Book(BookEvent),
    /// A bid curve was stored in the product's day-ahead auction; its points follow
    /// as `n_points` [`EventKind::CurvePointAccepted`] events of the same command.
    CurveAccepted {
        /// Owner.
        account: AccountId,
        /// Buy or sell.
        side: Side,
        /// How the points are read.
        kind: CurveKind,
        /// Number of points.
        n_points: u32,
        /// Whether it replaced the account's earlier curve on this side.
        replaced: bool,
    },
    /// One point of the curve accepted just before.
    CurvePointAccepted {
        /// Owner.
        account: AccountId,
        /// Buy or sell.
        side: Side,
        /// Index of the point in the curve.
        point_idx: u32,
        /// Its price.
        price: Price,
        /// Its quantity (step or total, by the curve's kind).
        qty: Qty,
    },
    /// A bid curve was withdrawn.
    CurveWithdrawn {
        /// Owner.
        account: AccountId,
        /// Buy or sell.
        side: Side,
    },
    /// A curve command was refused; no curve changed.
    CurveRejected {
        /// The account named by the command.
        account: AccountId,
        /// The side named by the command.
        side: Side,
        /// Why.
        reason: CurveReject,
    },
    /// The product's day-ahead auction cleared at its gate; one
    /// [`EventKind::AuctionAward`] per account and side that bid follows.
    AuctionCleared {
        /// Uniform price; `None` when nothing traded.
        price: Option<Price>,
        /// Traded volume.
        volume: Qty,
        /// Curves that took part.
        n_curves: u32,
    },
    /// One account's accepted quantity on one side.
    AuctionAward {
        /// The account.
        account: AccountId,
        /// Buy or sell.
        side: Side,
        /// Accepted quantity, possibly zero.
        qty: Qty,
    },
}

/// One event out of the sequencer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineEvent {
    /// Event sequence number: `1, 2, 3, ...` without gaps over the engine's life.
    pub event_seq: u64,
    /// Sequence number of the command that caused it.
    pub command_seq: u64,
    /// Engine time when it happened.
    pub now: UtcNanos,
    /// The product it concerns.
    pub product: ProductId,
    /// What happened.
    pub kind: EventKind,
}

/// Acknowledgement of one durable, applied command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The command's sequence number.
    pub seq: u64,
    /// Its events: event sequence numbers `first_event_seq..end_event_seq` (empty when
    /// the command caused none).
    pub first_event_seq: u64,
    /// One past its last event's sequence number.
    pub end_event_seq: u64,
}

impl Ack {
    /// Number of events the command caused.
    pub fn n_events(&self) -> u64 {
        self.end_event_seq - self.first_event_seq
    }
}

/// A journal record: a command with its sequence number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Command sequence number.
    pub seq: u64,
    /// The command.
    pub command: EngineCommand,
}

/// Encodes `(seq, command)` as a journal payload, appending to `out`.
///
/// # Errors
/// Only if serialization fails, which these types cannot cause; kept as an error
/// rather than a panic because the encoder is a library.
pub fn encode_entry(
    seq: u64,
    command: &EngineCommand,
    out: &mut Vec<u8>,
) -> Result<(), postcard::Error> {
    #[derive(Serialize)]
    struct EntryRef<'a> {
        seq: u64,
        command: &'a EngineCommand,
    }
    let taken = std::mem::take(out);
    *out = postcard::to_extend(&EntryRef { seq, command }, taken)?;
    Ok(())
}

/// Decodes a journal payload. The whole payload must be consumed.
///
/// # Errors
/// Malformed bytes or trailing bytes.
pub fn decode_entry(bytes: &[u8]) -> Result<JournalEntry, postcard::Error> {
    let (entry, rest) = postcard::take_from_bytes::<JournalEntry>(bytes)?;
    if !rest.is_empty() {
        return Err(postcard::Error::DeserializeBadEncoding);
    }
    Ok(entry)
}
