//! The trading core as the server sees it: the sequencer thread around the engine,
//! product listing, order ids, a live index of resting orders and L2 depth, and the
//! fan-out of committed events to WebSocket subscribers and the database projection.
//!
//! Async callers reach the sequencer through one bridge thread: it submits every
//! command waiting (one group for the sequencer's group commit) and hands each reply
//! to its caller's oneshot, so a request never parks a thread of its own.
//!
//! # Guarantees
//! - An order is acknowledged to the API only after the sequencer journaled and
//!   committed it ([`Exchange::execute`] returns after the sequencer's `Ack`).
//! - Bounded: at most [`BRIDGE_QUEUE_LEN_MAX`] commands wait for the bridge; beyond,
//!   [`Exchange::execute`] refuses with [`ExchangeError::Overloaded`] at once.
//! - Every committed event reaches the persistence channel exactly once per process,
//!   in event-seq order; the channel is bounded, so a slow database slows the
//!   sequencer (back-pressure) instead of losing events. After a restart the journal
//!   is replayed ([`Engine::open_replaying`], snapshots disabled) and the projection
//!   skips what it already holds (idempotent by event seq).
//! - With a batch's events go the audit records of its commands that carry an origin
//!   ([`super::audit::journaled_records`]), live and at replay alike, so the
//!   projection stores each journaled order's record with its events.
//! - The intraday rules have the day-ahead auction's lot and tick (checked in
//!   [`Exchange::open`]), so the projection adds awards and trades in one position.
//! - Each product keeps the rules it was listed under (read from its journaled listing
//!   command, [`Exchange::listed_rules`]): a restart with other price limits or gate
//!   leads changes new listings only. A restart with another lot or tick than the
//!   journal's products is refused ([`ExchangeError::UnitsChanged`]): the database
//!   holds positions in lots and ticks, which would silently change meaning.
//! - WebSocket subscribers get events through a bounded broadcast channel; a
//!   subscriber that falls behind is told it lagged and must resynchronise from the
//!   REST snapshot. They never slow the sequencer.
//! - The live index also holds every product's day-ahead auction as the events tell
//!   it: the stored curves with their points, and after the gate the clearing price,
//!   volume and awards. It is rebuilt by the same replay, so curves journaled before a
//!   restart are there after it.
//! - Order ids are strictly increasing within a process and start above the wall
//!   clock's microseconds at start-up, so ids from before a restart are never reused
//!   (unless the clock jumps back by more than the restart took; the book then rejects
//!   the duplicate id, nothing is corrupted).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver as StdReceiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use voltex_engine::family::FamilyRef;
use voltex_engine::sequencer::{Sequencer, SequencerClient, SequencerConfig, SequencerError};
use voltex_engine::state::ShardConfig;
use voltex_engine::{
    Ack, CommandKind, Engine, EngineCommand, EngineConfig, EngineEvent, EventKind,
};
use voltex_market::auction::{CurveKind, CurvePoint};
use voltex_market::book::{BookConfig, BookEvent, Phase};
use voltex_market::time::NANOS_PER_SECOND;
use voltex_market::{
    AccountId, DeliveryPeriod, MarketRules, OrderId, PeriodLength, Price, ProductId, Qty, Side,
    UtcNanos,
};

use super::clock::Clock;

/// Committed events kept in memory for [`Exchange::execute`] to return a command's
/// own events (far more than can be in flight at once).
const RECENT_EVENTS_MAX: usize = 1 << 16;
/// Bound of the broadcast channel to WebSocket subscribers.
const BROADCAST_LEN_MAX: usize = 1 << 14;
/// Bound of the persistence channel, in batches.
pub const PERSIST_BATCHES_MAX: usize = 1024;

/// What the persister stores from one committed batch (or one replayed command): its
/// events and the audit records of its commands that carry an origin.
#[derive(Clone, Debug, Default)]
pub struct PersistBatch {
    /// The events, in event-seq order.
    pub events: Vec<EngineEvent>,
    /// The audit records, in command-seq order.
    pub audit: Vec<crate::db::NewAuditEntry>,
}

impl PersistBatch {
    fn of(committed: voltex_engine::command::Committed<'_>) -> PersistBatch {
        let mut audit = Vec::new();
        super::audit::journaled_records(committed, &mut audit);
        PersistBatch {
            events: committed.events.to_vec(),
            audit,
        }
    }
}
/// Most commands waiting for the sequencer bridge.
pub const BRIDGE_QUEUE_LEN_MAX: usize = 16_384;
/// Most commands the bridge submits before it waits for their replies (well below the
/// sequencer's queue bound, so submitting never blocks).
const BRIDGE_GROUP_LEN_MAX: usize = 4_096;

/// Where the bridge sends a command's outcome.
type BridgeReply = tokio::sync::oneshot::Sender<Result<Ack, SequencerError>>;
/// A command waiting for the bridge.
type BridgeRequest = (EngineCommand, BridgeReply);

/// Limits of the server's engine.
#[derive(Clone, Debug)]
pub struct ExchangeConfig {
    /// Engine directory (journal).
    pub engine_dir: PathBuf,
    /// Most products listed over the engine's life (closed ones included).
    pub products_max: usize,
    /// Most orders resting in one book (storage reserved up front per book).
    pub orders_per_book_max: usize,
    /// Rules of the intraday products' books.
    pub rules: MarketRules,
    /// Rules of the products' day-ahead auctions.
    pub day_ahead_rules: MarketRules,
    /// Seconds after 00:00 UTC at which the auctions of the next UTC day's hours all
    /// close (one daily gate, as the day-ahead markets hold it, so one block family can
    /// span the day); `None`: each hour's auction closes
    /// `day_ahead_rules.gate_closure_lead_s` before it.
    pub day_ahead_daily_gate_s: Option<i64>,
}

impl ExchangeConfig {
    /// Defaults for `engine_dir`: 512 products, 20,000 resting orders per book
    /// (about 1.3 MiB reserved per book), default intraday and day-ahead rules.
    pub fn new(engine_dir: PathBuf) -> ExchangeConfig {
        ExchangeConfig {
            engine_dir,
            products_max: 512,
            orders_per_book_max: 20_000,
            rules: MarketRules::intraday_default(),
            day_ahead_rules: MarketRules::day_ahead_default(),
            day_ahead_daily_gate_s: None,
        }
    }
}

/// The day-ahead rules of the hour starting at `start`: `rules`, with the gate
/// closure lead that puts its gate at `daily_gate_s` after 00:00 UTC of the day before
/// its own (UTC) day, when there is a daily gate.
pub fn day_ahead_rules_for(
    rules: &MarketRules,
    daily_gate_s: Option<i64>,
    start: UtcNanos,
) -> MarketRules {
    let Some(gate_s) = daily_gate_s else {
        return rules.clone();
    };
    const DAY_S: i64 = 86_400;
    let start_s = start.nanos().div_euclid(NANOS_PER_SECOND);
    let gate_at_s = start_s.div_euclid(DAY_S) * DAY_S - DAY_S + gate_s;
    MarketRules {
        gate_closure_lead_s: start_s - gate_at_s,
        ..rules.clone()
    }
}

/// Why the exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The engine could not open or recover its journal.
    #[error("engine: {0}")]
    Engine(#[from] voltex_engine::EngineError),
    /// The sequencer refused or failed the command.
    #[error("sequencer: {0}")]
    Sequencer(#[from] SequencerError),
    /// The engine directory could not be created.
    #[error("engine directory: {0}")]
    Io(#[from] std::io::Error),
    /// The sequencer has been shut down.
    #[error("exchange is shut down")]
    ShutDown,
    /// A committed command's events are no longer in memory (cannot happen unless
    /// more than `RECENT_EVENTS_MAX` events were committed while it waited).
    #[error("events of command {0} are no longer in memory")]
    EventsEvicted(u64),
    /// Too many commands are waiting for the sequencer: try again later.
    #[error("the sequencer's queue is full ({BRIDGE_QUEUE_LEN_MAX} commands waiting)")]
    Overloaded,
    /// The intraday rules use another lot or tick than the day-ahead auction's, so
    /// positions could not add auction awards to continuous trades.
    #[error(
        "intraday lot {intraday_lot_kw} kW / tick {intraday_tick} differ from the day-ahead \
         auction's {day_ahead_lot_kw} kW / {day_ahead_tick}: positions count both"
    )]
    RulesMismatch {
        /// Intraday lot size, kW.
        intraday_lot_kw: i64,
        /// Intraday tick.
        intraday_tick: voltex_market::Price,
        /// Day-ahead lot size, kW.
        day_ahead_lot_kw: i64,
        /// Day-ahead tick.
        day_ahead_tick: voltex_market::Price,
    },
    /// The configured lot or tick differs from those of a product in the journal: the
    /// database counts its positions and cash in those units.
    #[error(
        "product {product} was listed with lot {journal_lot_kw} kW / tick {journal_tick}, the \
         configuration now says {config_lot_kw} kW / {config_tick}: positions and cash are \
         stored in lots and ticks, so these cannot change on an existing engine directory"
    )]
    UnitsChanged {
        /// A product listed under other units.
        product: u32,
        /// Its lot size, kW.
        journal_lot_kw: i64,
        /// Its tick.
        journal_tick: voltex_market::Price,
        /// The configured lot size, kW.
        config_lot_kw: i64,
        /// The configured tick.
        config_tick: voltex_market::Price,
    },
}

/// The rules a product was listed under (from its journaled listing command).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedRules {
    /// Its continuous book's rules.
    pub book: MarketRules,
    /// Its day-ahead auction's rules.
    pub auction: MarketRules,
}

/// A listed product, as the API shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ProductInfo {
    /// Product id.
    pub product_id: u32,
    /// Delivery start, UTC nanoseconds.
    pub delivery_start_ns: i64,
    /// Delivery end, UTC nanoseconds.
    pub delivery_end_ns: i64,
    /// Delivery start, RFC 3339 UTC.
    pub delivery_start: String,
    /// Gate closure, UTC nanoseconds.
    pub gate_closure_ns: i64,
    /// `open`, `halted` or `closed`.
    pub phase: String,
    /// Price tick in EUR/MWh.
    pub tick_eur_per_mwh: String,
    /// Lowest limit price in EUR/MWh.
    pub price_min_eur_per_mwh: String,
    /// Highest limit price in EUR/MWh.
    pub price_max_eur_per_mwh: String,
    /// Lot size in MW.
    pub lot_mw: String,
    /// Day-ahead gate closure (curves accepted before it), UTC nanoseconds.
    pub auction_gate_closure_ns: i64,
    /// Lowest curve price of the day-ahead auction, EUR/MWh (the product's own rules,
    /// those it was listed under).
    pub auction_price_min_eur_per_mwh: String,
    /// Highest curve price of the day-ahead auction, EUR/MWh.
    pub auction_price_max_eur_per_mwh: String,
    /// Largest quantity of one curve in the day-ahead auction, MW.
    pub auction_qty_max_mw: String,
    /// Day-ahead auction: `open`, `cleared`, or `not_held` (listed after its gate).
    pub auction_phase: String,
}

/// A resting order in the live index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveOrder {
    /// Its product.
    pub product: ProductId,
    /// Owner.
    pub account: AccountId,
    /// Side.
    pub side: Side,
    /// Limit price now.
    pub price: Price,
    /// Quantity when accepted.
    pub qty_accepted: Qty,
    /// Quantity left (visible + hidden).
    pub remaining: Qty,
}

/// One side of an L2 level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    /// Visible quantity.
    pub visible: Qty,
    /// Orders at the level.
    pub n_orders: u32,
}

/// L2 depth of one product: best first.
#[derive(Clone, Debug, Default)]
pub struct Depth {
    /// Bids, highest price first.
    pub bids: Vec<(Price, Level)>,
    /// Asks, lowest price first.
    pub asks: Vec<(Price, Level)>,
    /// Event seq the depth is current at.
    pub as_of_event_seq: u64,
}

/// A bid curve stored in a product's day-ahead auction, as the events tell it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveCurve {
    /// Its product.
    pub product: ProductId,
    /// Owner.
    pub account: AccountId,
    /// Buy or sell.
    pub side: Side,
    /// How the points are read.
    pub kind: CurveKind,
    /// Points by increasing price.
    pub points: Vec<CurvePoint>,
    /// Event seq of its acceptance.
    pub accepted_event_seq: u64,
}

/// The result of a product's day-ahead auction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveClearing {
    /// Uniform price; `None` when nothing traded.
    pub price: Option<Price>,
    /// Traded volume.
    pub volume: Qty,
    /// Curves that took part.
    pub n_curves: u32,
    /// Accepted quantity per (account, side) that bid.
    pub awards: BTreeMap<(AccountId, Side), Qty>,
    /// Event seq of the clearing.
    pub event_seq: u64,
}

/// Most block families the live index remembers; beyond it the oldest cleared ones
/// are forgotten (the event store keeps every family event).
pub const LIVE_FAMILIES_MAX: usize = 4_096;

/// Where a block family stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyStatus {
    /// Waiting for its gate.
    Open,
    /// Cleared and accepted: every block traded in full.
    Accepted,
    /// Cleared and rejected: nothing traded.
    Rejected,
}

/// A block family as the events tell it (open, or its last clearing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveFamily {
    /// Owner.
    pub account: AccountId,
    /// The owner's name for it.
    pub family: FamilyRef,
    /// Its first product.
    pub first_product: ProductId,
    /// Products it spans.
    pub n_products: u32,
    /// Blocks.
    pub n_blocks: u32,
    /// Open, accepted or rejected.
    pub status: FamilyStatus,
    /// Surplus at the clearing prices, price ticks times lots (once cleared; `None`
    /// where a product had no trade).
    pub surplus_ticks_x_lots: Option<i64>,
    /// Event seq of its last change.
    pub event_seq: u64,
}

/// A product's day-ahead auction in the live index.
#[derive(Clone, Debug, Default)]
pub struct LiveAuction {
    /// Whether it was open when the product was listed.
    pub held: bool,
    /// When it clears (under the rules the product was listed with).
    pub gate_closure: UtcNanos,
    /// Curves by (account, side).
    pub curves: BTreeMap<(AccountId, Side), LiveCurve>,
    /// The result, once cleared.
    pub clearing: Option<LiveClearing>,
}

#[derive(Debug, Default)]
struct ProductState {
    period: Option<DeliveryPeriod>,
    phase: Option<Phase>,
    bids: BTreeMap<Price, Level>,
    asks: BTreeMap<Price, Level>,
    auction: LiveAuction,
    /// The rules it was listed under; `None` until its listing is seen.
    rules: Option<ListedRules>,
}

/// What the events say the books look like now.
#[derive(Debug, Default)]
struct LiveIndex {
    orders: HashMap<OrderId, LiveOrder>,
    products: BTreeMap<ProductId, ProductState>,
    /// Block families by (account, name); beyond [`LIVE_FAMILIES_MAX`] the oldest
    /// cleared one is forgotten (open ones are bounded by the engine's limits).
    families: BTreeMap<(AccountId, FamilyRef), LiveFamily>,
    last_event_seq: u64,
    /// Largest order id any event named (so ids are not reused after a restart).
    order_id_max: u64,
}

impl LiveIndex {
    /// Applies a committed batch: its events, then the rules of every listing that
    /// succeeded (a refused listing leaves no product behind).
    fn apply_committed(&mut self, committed: voltex_engine::command::Committed<'_>) {
        for event in committed.events {
            self.apply(event);
        }
        for (command, _, events) in committed.per_command() {
            let Some(terms) = command.kind.listing() else {
                continue;
            };
            let listed = events.iter().any(|event| {
                event.product == terms.product
                    && matches!(event.kind, EventKind::ProductAdded { .. })
            });
            if let (true, Some(product)) = (listed, self.products.get_mut(&terms.product)) {
                product.rules = Some(ListedRules {
                    book: terms.rules.clone(),
                    auction: terms.auction_rules,
                });
            }
        }
    }

    /// Applies a block family event; false for every other event.
    fn apply_family_event(&mut self, event: &EngineEvent) -> bool {
        match event.kind {
            EventKind::FamilyAccepted {
                account,
                family,
                n_products,
                n_blocks,
                ..
            } => {
                self.families.insert(
                    (account, family),
                    LiveFamily {
                        account,
                        family,
                        first_product: event.product,
                        n_products,
                        n_blocks,
                        status: FamilyStatus::Open,
                        surplus_ticks_x_lots: None,
                        event_seq: event.event_seq,
                    },
                );
                if self.families.len() > LIVE_FAMILIES_MAX {
                    let oldest_cleared = self
                        .families
                        .iter()
                        .filter(|(_, live)| live.status != FamilyStatus::Open)
                        .min_by_key(|(_, live)| live.event_seq)
                        .map(|(key, _)| *key);
                    if let Some(key) = oldest_cleared {
                        self.families.remove(&key);
                    }
                }
            }
            EventKind::FamilyWithdrawn { account, family } => {
                self.families.remove(&(account, family));
            }
            EventKind::FamilyCleared {
                account,
                family,
                accepted,
                surplus_ticks_x_lots,
            } => {
                if let Some(live) = self.families.get_mut(&(account, family)) {
                    live.status = if accepted {
                        FamilyStatus::Accepted
                    } else {
                        FamilyStatus::Rejected
                    };
                    live.surplus_ticks_x_lots = surplus_ticks_x_lots;
                    live.event_seq = event.event_seq;
                }
            }
            EventKind::FamilyRejected { .. } => {}
            _ => return false,
        }
        true
    }

    /// The first product listed under another lot or tick than `rules`.
    fn units_changed(&self, rules: &MarketRules) -> Option<ExchangeError> {
        self.products.iter().find_map(|(id, product)| {
            let listed = product.rules.as_ref()?;
            [&listed.book, &listed.auction]
                .into_iter()
                .find(|listed| (listed.lot_kw, listed.tick) != (rules.lot_kw, rules.tick))
                .map(|listed| ExchangeError::UnitsChanged {
                    product: id.0,
                    journal_lot_kw: listed.lot_kw,
                    journal_tick: listed.tick,
                    config_lot_kw: rules.lot_kw,
                    config_tick: rules.tick,
                })
        })
    }

    fn apply(&mut self, event: &EngineEvent) {
        debug_assert!(event.event_seq > self.last_event_seq, "events in seq order");
        self.last_event_seq = event.event_seq;
        if self.apply_family_event(event) {
            // A family event may name no listed product (a refusal of a command that
            // named none), so it never reaches the products below; an accepted
            // family's lots arrive in its products' awards.
            return;
        }
        let product = self.products.entry(event.product).or_default();
        match event.kind {
            EventKind::ProductAdded {
                period,
                auction_gate_closure,
            } => {
                product.period = Some(period);
                product.phase = Some(Phase::Open);
                product.auction.gate_closure = auction_gate_closure;
                product.auction.held = auction_gate_closure > event.now;
            }
            // Returned above.
            EventKind::Rejected { .. }
            | EventKind::CurveRejected { .. }
            | EventKind::FamilyAccepted { .. }
            | EventKind::FamilyWithdrawn { .. }
            | EventKind::FamilyRejected { .. }
            | EventKind::FamilyCleared { .. } => {}
            EventKind::CurveAccepted {
                account,
                side,
                kind,
                n_points,
                ..
            } => {
                product.auction.curves.insert(
                    (account, side),
                    LiveCurve {
                        product: event.product,
                        account,
                        side,
                        kind,
                        points: Vec::with_capacity(n_points as usize),
                        accepted_event_seq: event.event_seq,
                    },
                );
            }
            EventKind::CurvePointAccepted {
                account,
                side,
                price,
                qty,
                ..
            } => {
                if let Some(curve) = product.auction.curves.get_mut(&(account, side)) {
                    curve.points.push(CurvePoint { price, qty });
                }
            }
            EventKind::CurveWithdrawn { account, side } => {
                product.auction.curves.remove(&(account, side));
            }
            EventKind::AuctionCleared {
                price,
                volume,
                n_curves,
            } => {
                product.auction.clearing = Some(LiveClearing {
                    price,
                    volume,
                    n_curves,
                    awards: BTreeMap::new(),
                    event_seq: event.event_seq,
                });
            }
            EventKind::AuctionAward { account, side, qty } => {
                if let Some(clearing) = product.auction.clearing.as_mut() {
                    clearing.awards.insert((account, side), qty);
                }
            }
            EventKind::Book(book_event) => match book_event {
                BookEvent::Accepted {
                    id,
                    account,
                    side,
                    price,
                    qty,
                } => {
                    self.order_id_max = self.order_id_max.max(id.0);
                    self.orders.insert(
                        id,
                        LiveOrder {
                            product: event.product,
                            account,
                            side,
                            price,
                            qty_accepted: qty,
                            remaining: qty,
                        },
                    );
                }
                BookEvent::Trade {
                    aggressor,
                    resting,
                    qty,
                    ..
                } => {
                    for id in [aggressor, resting] {
                        if let Some(order) = self.orders.get_mut(&id) {
                            order.remaining = Qty(order.remaining.lots() - qty.lots());
                            if order.remaining.lots() <= 0 {
                                self.orders.remove(&id);
                            }
                        }
                    }
                }
                BookEvent::Cancelled { id, .. } | BookEvent::Expired { id, .. } => {
                    self.orders.remove(&id);
                }
                BookEvent::Restated {
                    id,
                    price,
                    visible,
                    hidden,
                    ..
                } => {
                    if let Some(order) = self.orders.get_mut(&id) {
                        order.price = price;
                        order.remaining = Qty(visible.lots() + hidden.lots());
                    }
                }
                BookEvent::Depth {
                    side,
                    price,
                    visible,
                    n_orders,
                } => {
                    let levels = match side {
                        Side::Buy => &mut product.bids,
                        Side::Sell => &mut product.asks,
                    };
                    if visible.is_zero() {
                        levels.remove(&price);
                    } else {
                        levels.insert(price, Level { visible, n_orders });
                    }
                }
                BookEvent::PhaseChanged { phase } => {
                    product.phase = Some(phase);
                    if phase == Phase::Closed {
                        product.bids.clear();
                        product.asks.clear();
                        let closed = event.product;
                        self.orders.retain(|_, order| order.product != closed);
                    }
                }
                BookEvent::Rejected { .. } => {}
            },
        }
    }
}

struct Shared {
    recent: Mutex<VecDeque<EngineEvent>>,
    live: Mutex<LiveIndex>,
    broadcast: broadcast::Sender<EngineEvent>,
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the data
/// are projections that stay consistent event by event).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn observe(&self, committed: voltex_engine::command::Committed<'_>) {
        lock(&self.live).apply_committed(committed);
        let mut recent = lock(&self.recent);
        for event in committed.events {
            if recent.len() == RECENT_EVENTS_MAX {
                recent.pop_front();
            }
            recent.push_back(*event);
        }
    }
}

/// A command's outcome: its ack and its events.
#[derive(Clone, Debug)]
pub struct Executed {
    /// Sequence numbers.
    pub ack: Ack,
    /// The events it caused, in order.
    pub events: Vec<EngineEvent>,
}

/// The running trading core. Cheap to share behind an `Arc`.
pub struct Exchange {
    sequencer: Mutex<Option<Sequencer>>,
    /// Commands to the bridge thread; taken at shutdown (the thread then ends).
    bridge: Mutex<Option<SyncSender<BridgeRequest>>>,
    bridge_thread: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
    rules: MarketRules,
    day_ahead_rules: MarketRules,
    day_ahead_daily_gate_s: Option<i64>,
    next_order_id: AtomicU64,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange").finish_non_exhaustive()
    }
}

impl Exchange {
    /// Opens the engine in `config.engine_dir`, replays its journal (handing every
    /// replayed event to `persist` first, so the database can catch up) and starts the
    /// sequencer, whose committed events go to `persist` from then on.
    ///
    /// Call from a blocking context (it reads the journal and may block on `persist`).
    ///
    /// # Errors
    /// [`ExchangeError::Engine`] if the journal cannot be recovered;
    /// [`ExchangeError::RulesMismatch`] if `config.rules` has another lot or tick than
    /// the day-ahead auction (positions add awards and trades in the same units).
    pub fn open(
        config: &ExchangeConfig,
        clock: Arc<dyn Clock>,
        persist: mpsc::Sender<PersistBatch>,
    ) -> Result<Exchange, ExchangeError> {
        let day_ahead = &config.day_ahead_rules;
        if (config.rules.lot_kw, config.rules.tick) != (day_ahead.lot_kw, day_ahead.tick) {
            return Err(ExchangeError::RulesMismatch {
                intraday_lot_kw: config.rules.lot_kw,
                intraday_tick: config.rules.tick,
                day_ahead_lot_kw: day_ahead.lot_kw,
                day_ahead_tick: day_ahead.tick,
            });
        }
        std::fs::create_dir_all(&config.engine_dir)?;
        let engine_config = EngineConfig {
            shard: ShardConfig {
                products_max: config.products_max,
                book: BookConfig {
                    orders_max: config.orders_per_book_max,
                    emit_depth: true,
                },
            },
            // Snapshots off: a restart replays the whole journal, which is how the
            // live index and the database projection are rebuilt (see module docs).
            snapshot_interval: 0,
            ..EngineConfig::default()
        };
        let (broadcast, _) = broadcast::channel(BROADCAST_LEN_MAX);
        let shared = Arc::new(Shared {
            recent: Mutex::new(VecDeque::with_capacity(RECENT_EVENTS_MAX)),
            live: Mutex::new(LiveIndex::default()),
            broadcast,
        });
        let mut replay_failed = false;
        let (engine, report) =
            Engine::open_replaying(&config.engine_dir, engine_config, &mut |committed| {
                let batch = PersistBatch::of(committed);
                if batch.events.is_empty() && batch.audit.is_empty() {
                    return;
                }
                shared.observe(committed);
                if persist.blocking_send(batch).is_err() {
                    replay_failed = true;
                }
            })?;
        if replay_failed {
            tracing::warn!("persistence channel closed during replay");
        }
        if let Some(changed) = lock(&shared.live).units_changed(&config.rules) {
            return Err(changed);
        }
        tracing::info!(
            last_seq = report.last_seq,
            replayed = report.n_replayed,
            "engine recovered"
        );
        let sink_shared = Arc::clone(&shared);
        let sink = Box::new(move |committed: voltex_engine::command::Committed<'_>| {
            let events = committed.events;
            sink_shared.observe(committed);
            for event in events {
                // No subscriber is not an error.
                let _ = sink_shared.broadcast.send(*event);
            }
            metrics::counter!("voltex_engine_events_total").increment(events.len() as u64);
            if persist.blocking_send(PersistBatch::of(committed)).is_err() {
                tracing::error!("persistence channel closed: events are only in the journal");
            }
        });
        let sequencer = Sequencer::spawn(engine, SequencerConfig::default(), sink)?;
        let (bridge, inbox) = std::sync::mpsc::sync_channel(BRIDGE_QUEUE_LEN_MAX);
        let client = sequencer.client();
        let bridge_thread = std::thread::Builder::new()
            .name("voltex-sequencer-bridge".into())
            .spawn(move || run_bridge(client, &inbox))?;
        // Microseconds, so ids stay below 2^53 and survive JSON numbers in browsers.
        let start_id = u64::try_from(clock.now().nanos() / 1_000).unwrap_or(0);
        let next_order_id = AtomicU64::new(
            start_id
                .max(lock(&shared.live).order_id_max.saturating_add(1))
                .max(1),
        );
        Ok(Exchange {
            sequencer: Mutex::new(Some(sequencer)),
            bridge: Mutex::new(Some(bridge)),
            bridge_thread: Mutex::new(Some(bridge_thread)),
            shared,
            clock,
            rules: config.rules.clone(),
            day_ahead_rules: config.day_ahead_rules.clone(),
            day_ahead_daily_gate_s: config.day_ahead_daily_gate_s,
            next_order_id,
        })
    }

    /// The rules `product` was listed under; `None` if it is not listed.
    pub fn listed_rules(&self, product: ProductId) -> Option<ListedRules> {
        lock(&self.shared.live)
            .products
            .get(&product)?
            .rules
            .clone()
    }

    /// The rules an order or curve for `product` is checked by before it goes to the
    /// engine: those it was listed under, else (not listed: the engine refuses it) the
    /// configured ones.
    pub fn rules_of(&self, product: ProductId) -> ListedRules {
        self.listed_rules(product).unwrap_or_else(|| ListedRules {
            book: self.rules.clone(),
            auction: self.day_ahead_rules.clone(),
        })
    }

    /// The intraday rules (of new listings).
    pub fn rules(&self) -> &MarketRules {
        &self.rules
    }

    /// The day-ahead auction's rules new products are listed with (same tick and lot
    /// as [`Exchange::rules`]).
    pub fn day_ahead_rules(&self) -> &MarketRules {
        &self.day_ahead_rules
    }

    /// Now, from the server clock.
    pub fn now(&self) -> UtcNanos {
        self.clock.now()
    }

    /// A fresh order id.
    pub fn next_order_id(&self) -> OrderId {
        OrderId(self.next_order_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Runs one command through the sequencer and waits until it is journaled,
    /// committed and applied; returns its ack and events.
    ///
    /// # Errors
    /// [`ExchangeError::ShutDown`], [`ExchangeError::Sequencer`] (journal failure).
    pub async fn execute(&self, command: EngineCommand) -> Result<Executed, ExchangeError> {
        let bridge = lock(&self.bridge)
            .as_ref()
            .cloned()
            .ok_or(ExchangeError::ShutDown)?;
        let started = super::clock::monotonic();
        let (reply, outcome) = tokio::sync::oneshot::channel();
        bridge
            .try_send((command, reply))
            .map_err(|error| match error {
                TrySendError::Full(_) => ExchangeError::Overloaded,
                TrySendError::Disconnected(_) => ExchangeError::ShutDown,
            })?;
        let ack = outcome.await.map_err(|_| ExchangeError::ShutDown)??;
        metrics::histogram!("voltex_sequencer_call_seconds")
            .record(started.elapsed().as_secs_f64());
        let events = self.events_of(&ack)?;
        Ok(Executed { ack, events })
    }

    fn events_of(&self, ack: &Ack) -> Result<Vec<EngineEvent>, ExchangeError> {
        if ack.n_events() == 0 {
            return Ok(Vec::new());
        }
        let recent = lock(&self.shared.recent);
        let first = recent
            .front()
            .map(|event| event.event_seq)
            .ok_or(ExchangeError::EventsEvicted(ack.seq))?;
        if ack.first_event_seq < first {
            return Err(ExchangeError::EventsEvicted(ack.seq));
        }
        let start = usize::try_from(ack.first_event_seq - first)
            .map_err(|_| ExchangeError::EventsEvicted(ack.seq))?;
        let end = start + ack.n_events() as usize;
        if end > recent.len() {
            return Err(ExchangeError::EventsEvicted(ack.seq));
        }
        Ok(recent.range(start..end).copied().collect())
    }

    /// Lists hourly products for the next `hours_ahead` hours that are not listed
    /// yet (ids are hours since the Unix epoch, so a restart lists the same ids), their
    /// auctions under [`day_ahead_rules_for`] (so with a daily gate an hour listed after
    /// it holds no auction: list two days ahead).
    ///
    /// # Errors
    /// As [`Exchange::execute`].
    pub async fn list_products_ahead(&self, hours_ahead: u32) -> Result<usize, ExchangeError> {
        let now = self.now();
        let hour_ns = 3600 * NANOS_PER_SECOND;
        let this_hour = now.nanos().div_euclid(hour_ns);
        let mut n_listed = 0;
        for offset in 1..=i64::from(hours_ahead) {
            let start_hour = this_hour + offset;
            let Ok(id) = u32::try_from(start_hour) else {
                continue;
            };
            let product = ProductId(id);
            if lock(&self.shared.live).products.contains_key(&product) {
                continue;
            }
            let Ok(period) =
                DeliveryPeriod::new(UtcNanos(start_hour * hour_ns), PeriodLength::Minutes60)
            else {
                continue;
            };
            let executed = self
                .execute(EngineCommand::list_product(
                    now,
                    product,
                    period,
                    self.rules.clone(),
                    day_ahead_rules_for(
                        &self.day_ahead_rules,
                        self.day_ahead_daily_gate_s,
                        period.start(),
                    ),
                ))
                .await?;
            if executed
                .events
                .iter()
                .any(|event| matches!(event.kind, EventKind::ProductAdded { .. }))
            {
                n_listed += 1;
            }
        }
        Ok(n_listed)
    }

    /// Moves engine time to now, closing every book whose gate has passed.
    ///
    /// # Errors
    /// As [`Exchange::execute`].
    pub async fn advance_time(&self) -> Result<Executed, ExchangeError> {
        self.execute(EngineCommand {
            now: self.now(),
            origin: None,
            kind: CommandKind::AdvanceTime,
        })
        .await
    }

    /// Every listed product, by id.
    pub fn products(&self) -> Vec<ProductInfo> {
        let live = lock(&self.shared.live);
        live.products
            .iter()
            .filter_map(|(id, state)| {
                let period = state.period?;
                Some(self.product_info(*id, &period, state))
            })
            .collect()
    }

    /// One product, if listed.
    pub fn product(&self, product: ProductId) -> Option<ProductInfo> {
        let live = lock(&self.shared.live);
        let state = live.products.get(&product)?;
        let period = state.period?;
        Some(self.product_info(product, &period, state))
    }

    fn product_info(
        &self,
        id: ProductId,
        period: &DeliveryPeriod,
        state: &ProductState,
    ) -> ProductInfo {
        let phase = state.phase;
        let (rules, day_ahead) = state
            .rules
            .as_ref()
            .map_or((&self.rules, &self.day_ahead_rules), |listed| {
                (&listed.book, &listed.auction)
            });
        let gate = voltex_engine::state::gate_closure(period, rules);
        ProductInfo {
            product_id: id.0,
            delivery_start_ns: period.start().nanos(),
            delivery_end_ns: period.end().nanos(),
            delivery_start: period.start().to_datetime().to_rfc3339(),
            gate_closure_ns: gate.nanos(),
            phase: match phase {
                Some(Phase::Open) => "open",
                Some(Phase::Halted) => "halted",
                Some(Phase::Closed) | None => "closed",
            }
            .to_string(),
            tick_eur_per_mwh: rules.tick.to_decimal().to_string(),
            price_min_eur_per_mwh: rules.price_min.to_decimal().to_string(),
            price_max_eur_per_mwh: rules.price_max.to_decimal().to_string(),
            lot_mw: rules.qty_to_mw(Qty(1)).to_string(),
            auction_gate_closure_ns: state.auction.gate_closure.nanos(),
            auction_price_min_eur_per_mwh: day_ahead.price_min.to_decimal().to_string(),
            auction_price_max_eur_per_mwh: day_ahead.price_max.to_decimal().to_string(),
            auction_qty_max_mw: day_ahead
                .qty_to_mw(day_ahead.qty_max)
                .normalize()
                .to_string(),
            auction_phase: auction_phase(&state.auction).to_string(),
        }
    }

    /// The day-ahead auction of `product` (curves of every account), if listed.
    pub fn auction(&self, product: ProductId) -> Option<LiveAuction> {
        let live = lock(&self.shared.live);
        live.products
            .get(&product)
            .filter(|state| state.period.is_some())
            .map(|state| state.auction.clone())
    }

    /// The stored curves of `account` over all products, by product then side.
    pub fn curves_of(&self, account: AccountId) -> Vec<LiveCurve> {
        let live = lock(&self.shared.live);
        live.products
            .values()
            .flat_map(|state| state.auction.curves.values())
            .filter(|curve| curve.account == account)
            .cloned()
            .collect()
    }

    /// The block families of `account` the live index remembers, by name.
    pub fn families_of(&self, account: AccountId) -> Vec<LiveFamily> {
        lock(&self.shared.live)
            .families
            .range((account, FamilyRef(0))..=(account, FamilyRef(u32::MAX)))
            .map(|(_, live)| *live)
            .collect()
    }

    /// A resting order, if it is in a book now.
    pub fn live_order(&self, id: OrderId) -> Option<LiveOrder> {
        lock(&self.shared.live).orders.get(&id).copied()
    }

    /// Resting orders of `account`.
    pub fn live_orders_of(&self, account: AccountId) -> Vec<(OrderId, LiveOrder)> {
        let live = lock(&self.shared.live);
        let mut orders: Vec<_> = live
            .orders
            .iter()
            .filter(|(_, order)| order.account == account)
            .map(|(id, order)| (*id, *order))
            .collect();
        orders.sort_by_key(|(id, _)| *id);
        orders
    }

    /// L2 depth of `product` (at most `levels_max` per side), if listed.
    pub fn depth(&self, product: ProductId, levels_max: usize) -> Option<Depth> {
        let live = lock(&self.shared.live);
        let state = live.products.get(&product)?;
        Some(Depth {
            bids: state
                .bids
                .iter()
                .rev()
                .take(levels_max)
                .map(|(price, level)| (*price, *level))
                .collect(),
            asks: state
                .asks
                .iter()
                .take(levels_max)
                .map(|(price, level)| (*price, *level))
                .collect(),
            as_of_event_seq: live.last_event_seq,
        })
    }

    /// Event seq of the newest committed event (0 before the first).
    pub fn last_event_seq(&self) -> u64 {
        lock(&self.shared.live).last_event_seq
    }

    /// Number of resting orders over all books.
    pub fn n_live_orders(&self) -> usize {
        lock(&self.shared.live).orders.len()
    }

    /// Events from now on (bounded; a slow receiver gets `Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.shared.broadcast.subscribe()
    }

    /// Whether the sequencer is running.
    pub fn is_running(&self) -> bool {
        lock(&self.sequencer).is_some()
    }

    /// Stops the sequencer after everything queued is processed.
    ///
    /// # Errors
    /// The engine's error if it had failed.
    pub fn shutdown(&self) -> Result<(), ExchangeError> {
        // The bridge ends once its queue is closed and what it holds is answered.
        drop(lock(&self.bridge).take());
        let sequencer = lock(&self.sequencer).take();
        let stopped = sequencer.map_or(Ok(()), |sequencer| sequencer.shutdown().map(drop));
        if let Some(thread) = lock(&self.bridge_thread).take() {
            let _ = thread.join();
        }
        stopped.map_err(ExchangeError::from)
    }
}

/// `open`, `cleared` or `not_held`.
pub fn auction_phase(auction: &LiveAuction) -> &'static str {
    match (auction.held, &auction.clearing) {
        (_, Some(_)) => "cleared",
        (true, None) => "open",
        (false, None) => "not_held",
    }
}

/// The bridge thread: blocks for one command, submits it with every other one waiting
/// (up to [`BRIDGE_GROUP_LEN_MAX`]), then answers each from the sequencer's replies,
/// which come in submission order. Ends when the queue is closed.
fn run_bridge(mut client: SequencerClient, inbox: &StdReceiver<BridgeRequest>) {
    let mut waiting: VecDeque<BridgeReply> = VecDeque::with_capacity(BRIDGE_GROUP_LEN_MAX);
    while let Ok(first) = inbox.recv() {
        let mut next = Some(first);
        while let Some((command, reply)) = next.take().or_else(|| inbox.try_recv().ok()) {
            match client.submit(command) {
                Ok(_) => waiting.push_back(reply),
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
            }
            if waiting.len() >= BRIDGE_GROUP_LEN_MAX {
                break;
            }
        }
        while let Some(reply) = waiting.pop_front() {
            let result = client.recv_reply().and_then(|answer| answer.result);
            // A caller that went away (request cancelled) needs no answer.
            let _ = reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::clock::ManualClock;
    use voltex_market::book::{BookCommand, NewOrder};

    #[test]
    fn with_a_daily_gate_every_hour_of_a_day_closes_at_it_on_the_day_before() {
        let rules = MarketRules::day_ahead_default();
        assert_eq!(day_ahead_rules_for(&rules, None, NOW), rules);
        let gate_s = 11 * 3600;
        // 2026-01-06 00:00, 05:00 and 23:00 UTC all close at 2026-01-05 11:00 UTC.
        let day_start_s = 1_767_657_600;
        let gate_at_s = day_start_s - 86_400 + gate_s;
        for hour in [0, 5, 23] {
            let start_s = day_start_s + hour * 3600;
            let listed =
                day_ahead_rules_for(&rules, Some(gate_s), UtcNanos(start_s * NANOS_PER_SECOND));
            assert_eq!(
                listed.gate_closure_lead_s,
                start_s - gate_at_s,
                "hour {hour}"
            );
            assert_eq!(
                MarketRules {
                    gate_closure_lead_s: rules.gate_closure_lead_s,
                    ..listed
                },
                rules,
                "only the lead changes"
            );
        }
    }

    fn small_config(dir: &std::path::Path) -> ExchangeConfig {
        let mut config = ExchangeConfig::new(dir.to_path_buf());
        config.orders_per_book_max = 64;
        config.products_max = 16;
        config
    }

    fn open_exchange(
        dir: &std::path::Path,
        now: UtcNanos,
    ) -> (Exchange, mpsc::Receiver<PersistBatch>) {
        let (tx, rx) = mpsc::channel(PERSIST_BATCHES_MAX);
        let config = small_config(dir);
        let exchange = Exchange::open(&config, Arc::new(ManualClock::new(now)), tx).unwrap();
        (exchange, rx)
    }

    const NOW: UtcNanos = UtcNanos(1_790_000_000 * NANOS_PER_SECOND);

    #[test]
    fn intraday_rules_with_another_lot_than_the_auction_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = mpsc::channel(PERSIST_BATCHES_MAX);
        let mut config = ExchangeConfig::new(dir.path().to_path_buf());
        config.rules.lot_kw = 1; // a local market's 1 kW lot
        let opened = Exchange::open(&config, Arc::new(ManualClock::new(NOW)), tx);
        assert!(
            matches!(
                opened,
                Err(ExchangeError::RulesMismatch {
                    intraday_lot_kw: 1,
                    day_ahead_lot_kw: 100,
                    ..
                })
            ),
            "positions cannot add 1 kW lots to 0.1 MW awards"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn products_keep_the_rules_they_were_listed_under_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (exchange, _rx) = tokio::task::block_in_place(|| open_exchange(dir.path(), NOW));
        assert_eq!(exchange.list_products_ahead(1).await.unwrap(), 1);
        let old = ProductId(exchange.products()[0].product_id);
        tokio::task::block_in_place(|| exchange.shutdown()).unwrap();
        drop(exchange);

        // Narrower limits, a longer gate lead: the new configuration of new listings.
        let mut narrower = small_config(dir.path());
        narrower.rules.price_max = Price(100_000);
        narrower.rules.gate_closure_lead_s += 600;
        narrower.day_ahead_rules.price_max = Price(300_000);
        narrower.day_ahead_rules.qty_max = Qty(50);
        let (tx, _rx) = mpsc::channel(PERSIST_BATCHES_MAX);
        let clock = Arc::new(ManualClock::new(NOW));
        let restarted =
            tokio::task::block_in_place(|| Exchange::open(&narrower, clock, tx)).unwrap();
        assert_eq!(restarted.list_products_ahead(2).await.unwrap(), 1);
        let products = restarted.products();
        let (before, after) = (&products[0], &products[1]);
        assert_eq!(before.product_id, old.0);
        let defaults = ListedRules {
            book: MarketRules::intraday_default(),
            auction: MarketRules::day_ahead_default(),
        };
        assert_eq!(restarted.listed_rules(old), Some(defaults.clone()));
        assert_eq!(
            restarted.rules_of(old),
            defaults,
            "orders to it are checked by its rules"
        );
        let eur = |price: Price| price.to_decimal().to_string();
        assert_eq!(before.price_max_eur_per_mwh, eur(defaults.book.price_max));
        assert_eq!(
            before.auction_price_max_eur_per_mwh,
            eur(defaults.auction.price_max)
        );
        let gate = |start_ns: i64, rules: &MarketRules| {
            start_ns - rules.gate_closure_lead_s * NANOS_PER_SECOND
        };
        assert_eq!(
            before.gate_closure_ns,
            gate(before.delivery_start_ns, &defaults.book)
        );
        assert_eq!(after.price_max_eur_per_mwh, eur(Price(100_000)));
        assert_eq!(after.auction_price_max_eur_per_mwh, eur(Price(300_000)));
        assert_eq!(after.auction_qty_max_mw, "5");
        assert_eq!(
            after.gate_closure_ns,
            gate(after.delivery_start_ns, &narrower.rules)
        );
        let new = ProductId(after.product_id);
        assert_eq!(restarted.rules_of(new).book, narrower.rules);
        assert_eq!(
            restarted.rules_of(ProductId(1)).auction,
            narrower.day_ahead_rules,
            "not listed: the configured rules"
        );
        tokio::task::block_in_place(|| restarted.shutdown()).unwrap();
        drop(restarted);

        // Another lot would change what every stored position means: refused.
        let mut other_lot = small_config(dir.path());
        other_lot.rules.lot_kw = 1_000;
        other_lot.day_ahead_rules.lot_kw = 1_000;
        let (tx, _rx) = mpsc::channel(PERSIST_BATCHES_MAX);
        let opened = tokio::task::block_in_place(|| {
            Exchange::open(&other_lot, Arc::new(ManualClock::new(NOW)), tx)
        });
        match opened {
            Err(ExchangeError::UnitsChanged {
                product,
                journal_lot_kw: 100,
                config_lot_kw: 1_000,
                ..
            }) => assert_eq!(product, old.0),
            other => panic!("expected UnitsChanged, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn orders_trade_and_restart_replays_the_same_events() {
        let dir = tempfile::tempdir().unwrap();
        let (exchange, mut rx) = tokio::task::block_in_place(|| open_exchange(dir.path(), NOW));
        assert_eq!(exchange.list_products_ahead(2).await.unwrap(), 2);
        let product = ProductId(exchange.products()[0].product_id);
        let sell = NewOrder::limit(
            exchange.next_order_id(),
            AccountId(1),
            Side::Sell,
            Price(5_000),
            Qty(10),
        );
        exchange
            .execute(EngineCommand::book(NOW, product, BookCommand::Submit(sell)))
            .await
            .unwrap();
        assert_eq!(exchange.live_order(sell.id).unwrap().remaining, Qty(10));
        let buy = NewOrder::limit(
            exchange.next_order_id(),
            AccountId(2),
            Side::Buy,
            Price(5_100),
            Qty(4),
        );
        let origin = voltex_engine::command::CommandOrigin::new(
            "alice".into(),
            "trader".into(),
            "req-buy".into(),
        )
        .unwrap();
        let executed = exchange
            .execute(
                EngineCommand::book(NOW, product, BookCommand::Submit(buy)).with_origin(origin),
            )
            .await
            .unwrap();
        assert!(executed.events.iter().any(|event| matches!(
            event.kind,
            EventKind::Book(BookEvent::Trade {
                qty: Qty(4),
                price: Price(5_000),
                ..
            })
        )));
        assert_eq!(exchange.live_order(sell.id).unwrap().remaining, Qty(6));
        assert!(exchange.live_order(buy.id).is_none(), "filled");
        let depth = exchange.depth(product, 10).unwrap();
        assert_eq!(
            depth.asks,
            vec![(
                Price(5_000),
                Level {
                    visible: Qty(6),
                    n_orders: 1
                }
            )]
        );
        tokio::task::block_in_place(|| exchange.shutdown()).unwrap();
        drop(exchange);
        let drain = |rx: &mut mpsc::Receiver<PersistBatch>| {
            let (mut events, mut audit) = (Vec::new(), Vec::new());
            while let Ok(batch) = rx.try_recv() {
                events.extend(batch.events);
                audit.extend(batch.audit);
            }
            (events, audit)
        };
        let (first_run, first_audit) = drain(&mut rx);
        // Only the buy carried an origin: one record, keyed by its command seq.
        assert_eq!(first_audit.len(), 1, "{first_audit:?}");
        let record = &first_audit[0];
        assert_eq!(record.command_seq, Some(executed.ack.seq));
        assert_eq!(
            (
                record.actor.as_str(),
                record.role.as_str(),
                record.correlation_id.as_str()
            ),
            ("alice", "trader", "req-buy")
        );
        assert_eq!(
            (record.action.as_str(), record.result.as_str(), record.at_ns),
            ("order.submit", "ok", NOW.0)
        );
        assert_eq!(record.target, format!("order:{}", buy.id.0));

        let (restarted, mut rx2) = tokio::task::block_in_place(|| open_exchange(dir.path(), NOW));
        let (replayed, replayed_audit) = drain(&mut rx2);
        assert_eq!(replayed, first_run, "the journal replays every event once");
        assert_eq!(replayed_audit, first_audit, "and the same audit record");
        assert_eq!(restarted.live_order(sell.id).unwrap().remaining, Qty(6));
        assert!(
            restarted.next_order_id() > buy.id,
            "same clock reading, yet no order id is reused after the restart"
        );
        assert_eq!(
            restarted.list_products_ahead(2).await.unwrap(),
            0,
            "already listed"
        );
        tokio::task::block_in_place(|| restarted.shutdown()).unwrap();
    }
}
