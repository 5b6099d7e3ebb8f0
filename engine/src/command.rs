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
//! A command may carry its [`CommandOrigin`] (who asked, under which correlation id):
//! journaled with it, so the record of who did what is exactly as durable as what was
//! done, without a second write (the server projects its audit log from it). The
//! engine never reads it; state and events do not depend on it. Records written
//! before commands had an origin (format 1: the command's last field was its `kind`)
//! still decode, with no origin: postcard is not self-describing, but a format-1
//! record is a strict prefix of what format 2 expects (one field short), so it never
//! decodes as format 2, and a format-2 record always leaves bytes over as format 1.
//!
//! # Invariants
//! - `decode_entry(encode_entry(e)) == e` for every entry (round trip).
//! - Decoding arbitrary bytes returns `Err`, never panics.
//! - Every origin field is at most [`ORIGIN_FIELD_LEN_MAX`] bytes, also when decoded,
//!   so the largest command stays within the engine's `ENTRY_LEN_MAX`.

use serde::{Deserialize, Serialize};
use voltex_market::auction::{CurveKind, CurvePoint};
use voltex_market::book::{BookCommand, BookEvent};
use voltex_market::{
    AccountId, DeliveryPeriod, MarketRules, Price, ProductId, Qty, Side, UtcNanos,
};

use crate::auction::{AUCTION_POINTS_PER_CURVE_MAX, CurveReject};
use crate::family::{
    BLOCKS_PER_FAMILY_MAX, FAMILY_PRODUCTS_MAX, FAMILY_QTYS_MAX, FamilyBlock, FamilyRef,
    FamilyReject, StoredFamily,
};

/// One command to the sequencer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineCommand {
    /// When the command arrived (caller's clock). The engine's time is the maximum
    /// `now` seen so far, so time never runs backwards inside the engine.
    pub now: UtcNanos,
    /// What to do.
    pub kind: CommandKind,
    /// Who asked for it, journaled with it; never read by the engine.
    pub origin: Option<CommandOrigin>,
}

/// Most bytes in one field of a [`CommandOrigin`].
pub const ORIGIN_FIELD_LEN_MAX: usize = 128;

/// Who asked for a command: the authenticated actor, their role, and the request's
/// correlation id. Each field is at most [`ORIGIN_FIELD_LEN_MAX`] bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "OriginFields")]
pub struct CommandOrigin {
    actor: String,
    role: String,
    correlation_id: String,
}

/// A [`CommandOrigin`] field above [`ORIGIN_FIELD_LEN_MAX`] bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("command origin field {field} is {len_bytes} bytes, above {ORIGIN_FIELD_LEN_MAX}")]
pub struct OriginFieldTooLong {
    /// Which field.
    pub field: &'static str,
    /// Its length.
    pub len_bytes: usize,
}

/// The wire shape of [`CommandOrigin`] (same fields, same order), checked on decode.
#[derive(Deserialize)]
struct OriginFields {
    actor: String,
    role: String,
    correlation_id: String,
}

impl TryFrom<OriginFields> for CommandOrigin {
    type Error = OriginFieldTooLong;

    fn try_from(fields: OriginFields) -> Result<CommandOrigin, OriginFieldTooLong> {
        CommandOrigin::new(fields.actor, fields.role, fields.correlation_id)
    }
}

impl CommandOrigin {
    /// An origin from its fields.
    ///
    /// # Errors
    /// [`OriginFieldTooLong`] naming the first field above [`ORIGIN_FIELD_LEN_MAX`].
    pub fn new(
        actor: String,
        role: String,
        correlation_id: String,
    ) -> Result<CommandOrigin, OriginFieldTooLong> {
        for (field, value) in [
            ("actor", &actor),
            ("role", &role),
            ("correlation_id", &correlation_id),
        ] {
            if value.len() > ORIGIN_FIELD_LEN_MAX {
                return Err(OriginFieldTooLong {
                    field,
                    len_bytes: value.len(),
                });
            }
        }
        Ok(CommandOrigin {
            actor,
            role,
            correlation_id,
        })
    }

    /// Who (a token's subject).
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// Their role.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The request's correlation id.
    pub fn correlation_id(&self) -> &str {
        &self.correlation_id
    }
}

/// What a command does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandKind {
    /// List a new product (one delivery period) with its own book, and a day-ahead
    /// auction under [`MarketRules::day_ahead_default`]. Kept so journals written before
    /// [`CommandKind::ListProduct`] existed replay unchanged; new listings use that.
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
    /// List a new product with its own book under `rules` and a day-ahead auction under
    /// `auction_rules` (both journaled, so a replay lists it exactly as it was). Last
    /// variant on purpose: postcard numbers variants in order, and appending keeps
    /// every older journal record decodable.
    ListProduct {
        /// Identity within the shard; must be new.
        product: ProductId,
        /// The delivery period it trades.
        period: DeliveryPeriod,
        /// The continuous book's rules (gate closure lead included).
        rules: MarketRules,
        /// The day-ahead auction's rules (its gate closure lead included); boxed so a
        /// listing, which is rare, does not grow every command.
        auction_rules: Box<MarketRules>,
    },
    /// Submit or replace `account`'s block family `family` over `products`, whose
    /// day-ahead auctions must share one gate closure and one set of rules
    /// ([`crate::family`]). Appended after `ListProduct` (postcard numbers variants in
    /// order).
    ///
    /// Callers must send at most [`FAMILY_PRODUCTS_MAX`] products and
    /// [`FAMILY_QTYS_MAX`] quantities over at most [`BLOCKS_PER_FAMILY_MAX`] blocks: a
    /// larger command is refused by `Engine::process_batch` before it is journaled
    /// ([`EngineCommand::check_size`]).
    SubmitFamily {
        /// The bidding account.
        account: AccountId,
        /// The account's name for the family.
        family: FamilyRef,
        /// The products (delivery periods) it spans, in its blocks' order.
        products: Vec<ProductId>,
        /// Its blocks: one quantity per product each.
        blocks: Vec<FamilyBlock>,
        /// The account's exclusive group: of its families in one group at most one is
        /// accepted.
        exclusive_group: Option<u32>,
    },
    /// Withdraw `account`'s open block family `family`.
    WithdrawFamily {
        /// The bidding account.
        account: AccountId,
        /// The account's name for the family.
        family: FamilyRef,
    },
}

/// What a listing command asks for, whichever record wrote it: [`CommandKind::AddProduct`]
/// (auction under [`MarketRules::day_ahead_default`]) or [`CommandKind::ListProduct`].
/// The engine lists from these terms, and projections read them, so both agree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListingTerms<'a> {
    /// The product.
    pub product: ProductId,
    /// Its delivery period.
    pub period: DeliveryPeriod,
    /// Its continuous book's rules.
    pub rules: &'a MarketRules,
    /// Its day-ahead auction's rules.
    pub auction_rules: MarketRules,
}

impl CommandKind {
    /// The terms of a listing command; `None` for every other command.
    pub fn listing(&self) -> Option<ListingTerms<'_>> {
        match self {
            CommandKind::AddProduct {
                product,
                period,
                rules,
            } => Some(ListingTerms {
                product: *product,
                period: *period,
                rules,
                auction_rules: MarketRules::day_ahead_default(),
            }),
            CommandKind::ListProduct {
                product,
                period,
                rules,
                auction_rules,
            } => Some(ListingTerms {
                product: *product,
                period: *period,
                rules,
                auction_rules: (**auction_rules).clone(),
            }),
            CommandKind::Book { .. }
            | CommandKind::AdvanceTime
            | CommandKind::SubmitCurve { .. }
            | CommandKind::WithdrawCurve { .. }
            | CommandKind::SubmitFamily { .. }
            | CommandKind::WithdrawFamily { .. } => None,
        }
    }
}

impl EngineCommand {
    /// A book command at `now`.
    pub fn book(now: UtcNanos, product: ProductId, command: BookCommand) -> EngineCommand {
        EngineCommand {
            now,
            kind: CommandKind::Book { product, command },
            origin: None,
        }
    }

    /// A new product at `now` whose book trades under `rules` and whose auction clears
    /// under `auction_rules`.
    pub fn list_product(
        now: UtcNanos,
        product: ProductId,
        period: DeliveryPeriod,
        rules: MarketRules,
        auction_rules: MarketRules,
    ) -> EngineCommand {
        EngineCommand {
            now,
            kind: CommandKind::ListProduct {
                product,
                period,
                rules,
                auction_rules: Box::new(auction_rules),
            },
            origin: None,
        }
    }

    /// A new product at `now` whose book trades under `rules`, its auction under the
    /// day-ahead defaults (the journal's older `AddProduct` record).
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
            origin: None,
        }
    }

    /// A time advance to `now`.
    pub fn advance_time(now: UtcNanos) -> EngineCommand {
        EngineCommand {
            now,
            kind: CommandKind::AdvanceTime,
            origin: None,
        }
    }

    /// The same command, recording who asked for it.
    pub fn with_origin(self, origin: CommandOrigin) -> EngineCommand {
        EngineCommand {
            origin: Some(origin),
            ..self
        }
    }

    /// Checks the command fits a journal entry: a `SubmitCurve` has at most
    /// [`AUCTION_POINTS_PER_CURVE_MAX`] points, a `SubmitFamily` at most
    /// [`FAMILY_PRODUCTS_MAX`] products, [`BLOCKS_PER_FAMILY_MAX`] blocks and
    /// [`FAMILY_QTYS_MAX`] quantities.
    ///
    /// # Errors
    /// The first count over its limit: a curve's points; a family's products, blocks
    /// or quantities.
    pub fn check_size(&self) -> Result<(), OversizeCommand> {
        let over = |what: &'static str, len: usize, max: usize| {
            if len > max {
                Err(OversizeCommand { what, len, max })
            } else {
                Ok(())
            }
        };
        match &self.kind {
            CommandKind::SubmitCurve { points, .. } => {
                over("curve points", points.len(), AUCTION_POINTS_PER_CURVE_MAX)
            }
            CommandKind::SubmitFamily {
                products, blocks, ..
            } => {
                over("family products", products.len(), FAMILY_PRODUCTS_MAX)?;
                over("family blocks", blocks.len(), BLOCKS_PER_FAMILY_MAX)?;
                over(
                    "family quantities",
                    StoredFamily::n_qtys(blocks),
                    FAMILY_QTYS_MAX,
                )
            }
            _ => Ok(()),
        }
    }
}

/// A command that does not fit a journal entry: `len` of `what`, more than `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{len} {what}, more than the limit of {max}")]
pub struct OversizeCommand {
    /// What is counted (`curve points`, `family products`, ...).
    pub what: &'static str,
    /// How many the command has.
    pub len: usize,
    /// The limit.
    pub max: usize,
}

/// Why the engine (not a book) refused a command. A refused command changes nothing
/// except the engine's time and sequence numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum EngineReject {
    /// `AddProduct` for an id already listed.
    #[error("product already listed")]
    DuplicateProduct,
    /// `AddProduct` with rules the book (or the auction) refuses.
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
        /// When its day-ahead auction clears (under the rules it was listed with); at
        /// or before the listing's time when no auction is held.
        auction_gate_closure: UtcNanos,
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
    /// A block family was stored for its gate (event product: its first product).
    FamilyAccepted {
        /// Owner.
        account: AccountId,
        /// The owner's name for it.
        family: FamilyRef,
        /// Products it spans.
        n_products: u32,
        /// Blocks.
        n_blocks: u32,
        /// Whether it replaced the account's open family of that name.
        replaced: bool,
    },
    /// A block family was withdrawn (event product: its first product).
    FamilyWithdrawn {
        /// Owner.
        account: AccountId,
        /// The owner's name for it.
        family: FamilyRef,
    },
    /// A family command was refused; no family changed (event product: the command's
    /// first product, [`ProductId`] 0 when it names none).
    FamilyRejected {
        /// The account named by the command.
        account: AccountId,
        /// The family named by the command.
        family: FamilyRef,
        /// Why.
        reason: FamilyReject,
    },
    /// A block family's outcome at its gate, after its products' `AuctionCleared`
    /// and `AuctionAward` events (which include an accepted family's quantities)
    /// (event product: its first product).
    FamilyCleared {
        /// Owner.
        account: AccountId,
        /// The owner's name for it.
        family: FamilyRef,
        /// Accepted (every block traded in full) or rejected (nothing traded).
        accepted: bool,
        /// Its surplus at the day's prices in price ticks (0.01 EUR/MWh) times lots
        /// (saturated to `i64`); `None` where a quantity falls in a product without trade.
        surplus_ticks_x_lots: Option<i64>,
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

/// Commands the engine committed and applied, with their acks and events, as the
/// sequencer's sink and the journal replay hand them on: `acks[i]` is `commands[i]`'s,
/// and `events` are theirs, in event-seq order.
#[derive(Clone, Copy, Debug)]
pub struct Committed<'a> {
    /// The commands, in seq order.
    pub commands: &'a [EngineCommand],
    /// One ack per command.
    pub acks: &'a [Ack],
    /// Every event of these commands.
    pub events: &'a [EngineEvent],
}

impl<'a> Committed<'a> {
    /// Each command with its ack and its own events.
    pub fn per_command(
        &self,
    ) -> impl Iterator<Item = (&'a EngineCommand, &'a Ack, &'a [EngineEvent])> + use<'a> {
        debug_assert_eq!(self.commands.len(), self.acks.len(), "one ack per command");
        let events = self.events;
        let first_event_seq = events.first().map_or(0, |event| event.event_seq);
        self.commands
            .iter()
            .zip(self.acks)
            .map(move |(command, ack)| {
                let start = ack.first_event_seq.saturating_sub(first_event_seq) as usize;
                let end = (start + ack.n_events() as usize).min(events.len());
                (command, ack, &events[start.min(end)..end])
            })
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

/// A format-1 journal entry: commands had no origin (see the module docs).
#[derive(Deserialize)]
struct EntryFormat1 {
    seq: u64,
    command: CommandFormat1,
}

#[derive(Deserialize)]
struct CommandFormat1 {
    now: UtcNanos,
    kind: CommandKind,
}

/// Decodes a journal payload, of the current format or format 1 (no origin). The
/// whole payload must be consumed.
///
/// # Errors
/// Malformed bytes or trailing bytes (the current format's error when neither
/// format decodes).
pub fn decode_entry(bytes: &[u8]) -> Result<JournalEntry, postcard::Error> {
    match decode_whole::<JournalEntry>(bytes) {
        Ok(entry) => Ok(entry),
        Err(error) => match decode_whole::<EntryFormat1>(bytes) {
            Ok(old) => Ok(JournalEntry {
                seq: old.seq,
                command: EngineCommand {
                    now: old.command.now,
                    kind: old.command.kind,
                    origin: None,
                },
            }),
            Err(_) => Err(error),
        },
    }
}

fn decode_whole<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, postcard::Error> {
    let (value, rest) = postcard::take_from_bytes::<T>(bytes)?;
    if !rest.is_empty() {
        return Err(postcard::Error::DeserializeBadEncoding);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use voltex_market::OrderId;

    use super::*;

    fn cancel(now: i64, id: u64) -> EngineCommand {
        EngineCommand::book(
            UtcNanos(now),
            ProductId(7),
            BookCommand::Cancel {
                id: OrderId(id),
                account: AccountId(3),
            },
        )
    }

    /// How a format-1 record was written (before commands had an origin).
    fn format_1_bytes(seq: u64, command: &EngineCommand) -> Vec<u8> {
        #[derive(Serialize)]
        struct Entry<'a> {
            seq: u64,
            command: Command<'a>,
        }
        #[derive(Serialize)]
        struct Command<'a> {
            now: UtcNanos,
            kind: &'a CommandKind,
        }
        postcard::to_allocvec(&Entry {
            seq,
            command: Command {
                now: command.now,
                kind: &command.kind,
            },
        })
        .unwrap()
    }

    fn origin(actor: &str, correlation_id: &str) -> CommandOrigin {
        CommandOrigin::new(actor.into(), "trader".into(), correlation_id.into()).unwrap()
    }

    #[test]
    fn a_format_1_record_decodes_with_no_origin() {
        let command = cancel(1_700_000_000_000_000_000, 42);
        let decoded = decode_entry(&format_1_bytes(9, &command)).unwrap();
        assert_eq!(decoded, JournalEntry { seq: 9, command });
    }

    #[test]
    fn an_origin_round_trips_and_lengthens_the_record() {
        let plain = cancel(5, 42);
        let with = plain.clone().with_origin(origin("alice", "req-1"));
        let (mut plain_bytes, mut with_bytes) = (Vec::new(), Vec::new());
        encode_entry(3, &plain, &mut plain_bytes).unwrap();
        encode_entry(3, &with, &mut with_bytes).unwrap();
        assert!(with_bytes.len() > plain_bytes.len());
        let decoded = decode_entry(&with_bytes).unwrap();
        assert_eq!(
            decoded.command.origin.as_ref().map(CommandOrigin::actor),
            Some("alice")
        );
        assert_eq!(
            decoded,
            JournalEntry {
                seq: 3,
                command: with
            }
        );
        assert_eq!(decode_entry(&plain_bytes).unwrap().command.origin, None);
    }

    #[test]
    fn an_overlong_origin_field_is_refused_when_built_and_when_decoded() {
        let long = "x".repeat(ORIGIN_FIELD_LEN_MAX + 1);
        assert_eq!(
            CommandOrigin::new("a".into(), "trader".into(), long.clone()),
            Err(OriginFieldTooLong {
                field: "correlation_id",
                len_bytes: ORIGIN_FIELD_LEN_MAX + 1
            })
        );
        assert!(
            CommandOrigin::new("x".repeat(ORIGIN_FIELD_LEN_MAX), "r".into(), "c".into()).is_ok()
        );
        // Bytes as a writer that skipped the check would have produced them.
        let forged = CommandOrigin {
            actor: long,
            role: "trader".into(),
            correlation_id: "c".into(),
        };
        let mut bytes = Vec::new();
        encode_entry(1, &cancel(1, 1).with_origin(forged), &mut bytes).unwrap();
        assert!(decode_entry(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn entries_of_both_formats_round_trip_and_every_truncation_fails(
            seq in any::<u64>(),
            now in any::<i64>(),
            id in any::<u64>(),
            actor in "[a-z0-9@.]{0,128}",
            correlation_id in "[ -~]{0,128}",
            with_origin in any::<bool>(),
        ) {
            let mut command = cancel(now, id);
            if with_origin {
                command = command.with_origin(origin(&actor, &correlation_id));
            }
            let mut current = Vec::new();
            encode_entry(seq, &command, &mut current).unwrap();
            let expected = JournalEntry { seq, command: command.clone() };
            prop_assert_eq!(decode_entry(&current).unwrap(), expected.clone());
            let old = format_1_bytes(seq, &command);
            let mut expected_old = expected;
            expected_old.command.origin = None;
            prop_assert_eq!(decode_entry(&old).unwrap(), expected_old);
            for bytes in [&current, &old] {
                for len in 0..bytes.len() {
                    // A cut record may decode as the other format only when the cut
                    // falls exactly at the format boundary (a whole format-1 entry).
                    if let Ok(entry) = decode_entry(&bytes[..len]) {
                        prop_assert_eq!(entry.command.origin, None);
                        prop_assert_eq!(len, old.len());
                    }
                }
            }
        }
    }
}
