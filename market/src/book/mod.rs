//! Continuous order book for one product (one delivery period).
//!
//! Orders rest in price-time priority; [`OrderBook::apply`] takes one [`BookCommand`]
//! (submit, cancel, modify, halt, resume, close) and appends the [`BookEvent`]s it
//! caused to a caller-owned buffer. The book does no I/O, reads no clock and draws no
//! randomness: gate closure arrives as an explicit `Close` command from the sequencer,
//! so replaying the same commands yields the same events (the simulator relies on this).
//!
//! # Order types (European intraday continuous market)
//! - **Limit** (GTC): matches what crosses, the rest rests until filled, cancelled or
//!   expired at gate closure.
//! - **IOC**: matches what crosses, the rest is cancelled (`IocRemainder`).
//! - **FOK**: fills completely at once or not at all (`FokNotFilled`); liquidity is
//!   counted before any trade, including iceberg hidden quantity and skipping own
//!   orders that self-trade prevention `CancelResting` would remove.
//! - **Post-only** (book-or-cancel): rejected with `PostOnlyWouldCross` if it would
//!   trade on arrival (also on a modify that would cross).
//! - **Iceberg**: shows `peak` lots; when the peak is used up it is refreshed from the
//!   hidden quantity and goes to the back of its level (new time priority,
//!   `Restated(IcebergRefresh)`). As an aggressor the whole quantity can trade.
//! - **Modify**: reducing quantity at the same price keeps priority; any other change
//!   loses it and the order is re-entered as an aggressor (it may trade). Reductions
//!   take hidden quantity first.
//! - **Self-trade prevention**: the incoming order's [`StpMode`] decides; see there.
//!   `DecrementBoth` reduces both by the quantity that would have traded with the
//!   resting order's visible part.
//!
//! # Events, in order
//! `Accepted` first for a valid new order; per matching step `Trade` (then
//! `Restated(IcebergRefresh)` if a peak was refreshed) or the self-trade events; then a
//! `Depth` update for the touched level; finally the remainder's `Cancelled` or the
//! `Depth` of the level it rests at. A rejected command emits exactly one `Rejected`.
//! `Depth` events (L2 incremental) are emitted only with [`BookConfig::emit_depth`].
//!
//! # Performance design
//! Prices are integer ticks; a level is found by index `(price - price_min) / tick`
//! in lazily allocated pages of levels, and the best level by a hierarchical bitmap
//! (no tree walk). Each level is an intrusive doubly linked FIFO through a slab of
//! order nodes preallocated to `orders_max`; the id → node map is an `FxHashMap`
//! reserved to the same size. In steady state no operation allocates (provided the
//! caller reuses its event buffer).
//!
//! # Invariants
//! - Never crossed when `apply` returns: best bid < best ask.
//! - Every resting order has `0 < visible`, `0 <= hidden`, and an iceberg `visible <= peak`.
//! - Each level's cached visible total and order count equal the sums over its FIFO.
//! - Quantity is conserved: submitted = resting + filled + cancelled + expired.
//! - At most `orders_max` orders rest.
//!
//! [`OrderBook::check_invariants`] asserts all of the above.

mod bitmap;
pub mod reference;
mod types;

pub use types::*;

use rustc_hash::FxHashMap;

use crate::rules::{MarketRules, RuleError};
use crate::units::{AccountId, OrderId, Price, Qty, Side, TradeId};
use bitmap::LevelBitmap;

/// Capacity and output options of a book.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BookConfig {
    /// Most orders that may rest at once; storage for them is reserved up front.
    pub orders_max: usize,
    /// Emit `Depth` (L2 incremental) events.
    pub emit_depth: bool,
}

impl Default for BookConfig {
    fn default() -> Self {
        BookConfig {
            orders_max: 65_536,
            emit_depth: true,
        }
    }
}

/// A snapshot that cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The rules are invalid.
    #[error(transparent)]
    Rules(#[from] RuleError),
    /// An order in the snapshot is invalid for these rules.
    #[error("snapshot order {id} is invalid: {reason}")]
    InvalidOrder {
        /// The offending order.
        id: OrderId,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The snapshot holds more orders than `orders_max`.
    #[error("snapshot holds {n_orders} orders, more than orders_max {orders_max}")]
    TooManyOrders {
        /// Orders in the snapshot.
        n_orders: usize,
        /// The configured limit.
        orders_max: usize,
    },
    /// The snapshot's book would be crossed or out of priority order.
    #[error("snapshot is not a valid book: {0}")]
    Inconsistent(&'static str),
}

const NIL: u32 = u32::MAX;
const PAGE_LEVELS: usize = 1024;
/// Most price levels per side (ticks between the price limits): bounds the bitmap and
/// page table a book reserves. The default intraday band needs 1,999,999.
pub const LEVELS_MAX: usize = 1 << 22;

#[derive(Clone, Copy, Debug)]
struct OrderNode {
    id: OrderId,
    account: AccountId,
    side: Side,
    post_only: bool,
    stp: StpMode,
    price: Price,
    visible: i64,
    hidden: i64,
    /// Iceberg peak; 0 for a plain order.
    peak: i64,
    prev: u32,
    next: u32,
}

#[derive(Clone, Copy, Debug)]
struct Level {
    head: u32,
    tail: u32,
    visible: i64,
    n_orders: u32,
}

const EMPTY_LEVEL: Level = Level {
    head: NIL,
    tail: NIL,
    visible: 0,
    n_orders: 0,
};

/// One side of the book: paged levels addressed by tick index plus an occupancy bitmap.
#[derive(Clone, Debug)]
struct SideBook {
    side: Side,
    pages: Vec<Option<Box<[Level]>>>,
    occupied: LevelBitmap,
    /// Index of the best occupied level, kept in step with `occupied` so the hot path
    /// reads it without a bitmap query.
    best: Option<usize>,
}

impl SideBook {
    fn new(side: Side, n_levels: usize) -> SideBook {
        SideBook {
            side,
            pages: vec![None; n_levels.div_ceil(PAGE_LEVELS)],
            occupied: LevelBitmap::new(n_levels),
            best: None,
        }
    }

    fn is_better(&self, index: usize, than: usize) -> bool {
        match self.side {
            Side::Buy => index > than,
            Side::Sell => index < than,
        }
    }

    /// Marks level `index` occupied (it just got its first order).
    fn occupy(&mut self, index: usize) {
        self.occupied.insert(index);
        if self.best.is_none_or(|best| self.is_better(index, best)) {
            self.best = Some(index);
        }
    }

    /// Marks level `index` empty (its last order left).
    fn vacate(&mut self, index: usize) {
        self.occupied.remove(index);
        if self.best == Some(index) {
            self.best = self.next_worse(index);
        }
    }

    fn level(&self, index: usize) -> &Level {
        match &self.pages[index / PAGE_LEVELS] {
            Some(page) => &page[index % PAGE_LEVELS],
            None => &EMPTY_LEVEL,
        }
    }

    /// The level at `index`, allocating its page on first use (the only allocation
    /// of the book outside construction; pages are never freed).
    fn level_mut(&mut self, index: usize) -> &mut Level {
        let page = self.pages[index / PAGE_LEVELS]
            .get_or_insert_with(|| vec![EMPTY_LEVEL; PAGE_LEVELS].into_boxed_slice());
        &mut page[index % PAGE_LEVELS]
    }

    /// Index of the best occupied level.
    fn best(&self) -> Option<usize> {
        self.best
    }

    /// The best level found through the bitmap alone (to check the cache).
    fn best_by_bitmap(&self) -> Option<usize> {
        match self.side {
            Side::Buy => self.occupied.at_or_below(self.occupied.len() - 1),
            Side::Sell => self.occupied.at_or_above(0),
        }
    }

    /// The next occupied level after `index`, in priority order (worse price).
    fn next_worse(&self, index: usize) -> Option<usize> {
        match self.side {
            Side::Buy => index
                .checked_sub(1)
                .and_then(|i| self.occupied.at_or_below(i)),
            Side::Sell => self.occupied.at_or_above(index + 1),
        }
    }
}

/// The incoming side of a match: a new order, or a modified one re-entering.
struct Incoming {
    id: OrderId,
    account: AccountId,
    side: Side,
    price: Price,
    remaining: i64,
    stp: StpMode,
    /// Set when self-trade prevention cancelled what was left of the incoming order.
    cancelled: bool,
}

/// Checks a new order against the market rules and type restrictions.
/// Shared by [`OrderBook`] and the reference book so both reject identically.
pub(crate) fn validate_new_order(
    rules: &MarketRules,
    order: &NewOrder,
) -> Result<(), RejectReason> {
    validate_price_qty(rules, order.price, order.qty)?;
    if let Some(peak) = order.peak
        && (peak.0 <= 0 || peak > order.qty)
    {
        return Err(RejectReason::InvalidPeak);
    }
    let restricted = order.post_only || order.peak.is_some();
    if restricted && order.time_in_force != TimeInForce::Gtc {
        return Err(RejectReason::InvalidOrderType);
    }
    if order.post_only && order.peak.is_some() {
        return Err(RejectReason::InvalidOrderType);
    }
    Ok(())
}

/// Checks a price and a quantity against the market rules.
pub(crate) fn validate_price_qty(
    rules: &MarketRules,
    price: Price,
    qty: Qty,
) -> Result<(), RejectReason> {
    if qty.0 <= 0 {
        return Err(RejectReason::QtyNotPositive);
    }
    if qty > rules.qty_max {
        return Err(RejectReason::QtyAboveMax);
    }
    if price.0 % rules.tick.0 != 0 {
        return Err(RejectReason::PriceOffTick);
    }
    if price < rules.price_min || price > rules.price_max {
        return Err(RejectReason::PriceOutOfLimits);
    }
    Ok(())
}

/// True if an order on `side` at `limit` would trade with a resting order at `resting`.
pub(crate) fn crosses(side: Side, limit: Price, resting: Price) -> bool {
    match side {
        Side::Buy => resting <= limit,
        Side::Sell => resting >= limit,
    }
}

/// The continuous order book of one product. See the module docs for the rules.
#[derive(Clone, Debug)]
pub struct OrderBook {
    rules: MarketRules,
    config: BookConfig,
    phase: Phase,
    sides: [SideBook; 2],
    nodes: Vec<OrderNode>,
    free_head: u32,
    by_id: FxHashMap<OrderId, u32>,
    next_trade_id: u64,
    ledger: QtyLedger,
}

impl OrderBook {
    /// An empty, open book.
    ///
    /// # Errors
    /// The rules fail [`MarketRules::validate`], or `orders_max` is zero or does not
    /// fit the node index type.
    pub fn new(rules: MarketRules, config: BookConfig) -> Result<OrderBook, RuleError> {
        rules.validate()?;
        if config.orders_max == 0 || config.orders_max >= NIL as usize {
            return Err(RuleError::InvalidRules("orders_max must be in 1..u32::MAX"));
        }
        let n_levels = rules
            .price_max
            .0
            .checked_sub(rules.price_min.0)
            .map(|band| band / rules.tick.0 + 1)
            .filter(|n_levels| *n_levels <= LEVELS_MAX as i64)
            .ok_or(RuleError::InvalidRules(
                "price band wider than LEVELS_MAX ticks",
            ))? as usize;
        let mut by_id = FxHashMap::default();
        by_id.reserve(config.orders_max);
        Ok(OrderBook {
            sides: [
                SideBook::new(Side::Buy, n_levels),
                SideBook::new(Side::Sell, n_levels),
            ],
            rules,
            config,
            phase: Phase::Open,
            nodes: Vec::with_capacity(config.orders_max),
            free_head: NIL,
            by_id,
            next_trade_id: 1,
            ledger: QtyLedger::default(),
        })
    }

    /// The market rules this book enforces.
    pub fn rules(&self) -> &MarketRules {
        &self.rules
    }

    /// Trading phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Quantity accounting since the book opened.
    pub fn ledger(&self) -> QtyLedger {
        self.ledger
    }

    /// Number of resting orders.
    pub fn n_resting(&self) -> usize {
        self.by_id.len()
    }

    fn level_index(&self, price: Price) -> usize {
        ((price.0 - self.rules.price_min.0) / self.rules.tick.0) as usize
    }

    fn level_price(&self, index: usize) -> Price {
        Price(self.rules.price_min.0 + index as i64 * self.rules.tick.0)
    }

    /// Best bid and offer with the visible quantity at each.
    pub fn bbo(&self) -> Bbo {
        let top = |side: &SideBook| {
            side.best()
                .map(|index| (self.level_price(index), Qty(side.level(index).visible)))
        };
        Bbo {
            bid: top(&self.sides[0]),
            ask: top(&self.sides[1]),
        }
    }

    /// L2 snapshot: up to `n_levels` levels of `side`, best first, appended to `out`.
    pub fn depth(&self, side: Side, n_levels: usize, out: &mut Vec<DepthLevel>) {
        let side_book = &self.sides[side.index()];
        let mut cursor = side_book.best();
        while let Some(index) = cursor {
            if out.len() >= n_levels {
                break;
            }
            let level = side_book.level(index);
            out.push(DepthLevel {
                price: self.level_price(index),
                visible: Qty(level.visible),
                n_orders: level.n_orders,
            });
            cursor = side_book.next_worse(index);
        }
    }

    /// L3 snapshot: every resting order of `side`, best price first, time priority
    /// within a price, appended to `out`.
    pub fn orders(&self, side: Side, out: &mut Vec<RestingOrder>) {
        let side_book = &self.sides[side.index()];
        let mut cursor = side_book.best();
        while let Some(index) = cursor {
            let mut node_idx = side_book.level(index).head;
            while node_idx != NIL {
                let node = &self.nodes[node_idx as usize];
                out.push(RestingOrder {
                    id: node.id,
                    account: node.account,
                    side: node.side,
                    price: node.price,
                    visible: Qty(node.visible),
                    hidden: Qty(node.hidden),
                    peak: Qty(node.peak),
                    stp: node.stp,
                    post_only: node.post_only,
                });
                node_idx = node.next;
            }
            cursor = side_book.next_worse(index);
        }
    }

    /// One resting order by id.
    pub fn order(&self, id: OrderId) -> Option<RestingOrder> {
        let node = &self.nodes[*self.by_id.get(&id)? as usize];
        Some(RestingOrder {
            id: node.id,
            account: node.account,
            side: node.side,
            price: node.price,
            visible: Qty(node.visible),
            hidden: Qty(node.hidden),
            peak: Qty(node.peak),
            stp: node.stp,
            post_only: node.post_only,
        })
    }

    /// Applies one command and appends the events it caused to `events` (never clears
    /// it). A rejected command changes nothing and appends one `Rejected`.
    pub fn apply(&mut self, command: &BookCommand, events: &mut Vec<BookEvent>) {
        match *command {
            BookCommand::Submit(order) => self.submit(&order, events),
            BookCommand::Cancel { id, account } => self.cancel(id, account, events),
            BookCommand::Modify {
                id,
                account,
                price,
                qty,
            } => self.modify(id, account, price, qty, events),
            BookCommand::Halt => {
                if self.phase == Phase::Open {
                    self.phase = Phase::Halted;
                    events.push(BookEvent::PhaseChanged {
                        phase: Phase::Halted,
                    });
                }
            }
            BookCommand::Resume => {
                if self.phase == Phase::Halted {
                    self.phase = Phase::Open;
                    events.push(BookEvent::PhaseChanged { phase: Phase::Open });
                }
            }
            BookCommand::Close => self.close(events),
        }
    }

    fn phase_rejection(&self) -> Option<RejectReason> {
        match self.phase {
            Phase::Open => None,
            Phase::Halted => Some(RejectReason::Halted),
            Phase::Closed => Some(RejectReason::Closed),
        }
    }

    fn submit(&mut self, order: &NewOrder, events: &mut Vec<BookEvent>) {
        let verdict = self
            .phase_rejection()
            .map_or_else(|| validate_new_order(&self.rules, order), Err)
            .and_then(|()| {
                if self.by_id.contains_key(&order.id) {
                    Err(RejectReason::DuplicateOrderId)
                } else if order.time_in_force == TimeInForce::Gtc
                    && self.by_id.len() >= self.config.orders_max
                {
                    Err(RejectReason::BookFull)
                } else if order.post_only && self.would_cross(order.side, order.price) {
                    Err(RejectReason::PostOnlyWouldCross)
                } else {
                    Ok(())
                }
            });
        if let Err(reason) = verdict {
            events.push(BookEvent::Rejected {
                id: order.id,
                reason,
            });
            return;
        }
        events.push(BookEvent::Accepted {
            id: order.id,
            account: order.account,
            side: order.side,
            price: order.price,
            qty: order.qty,
        });
        self.ledger.submitted += order.qty.0;
        if order.time_in_force == TimeInForce::Fok
            && !self.fok_fillable(
                order.account,
                order.side,
                order.price,
                order.qty.0,
                order.stp,
            )
        {
            self.ledger.cancelled += order.qty.0;
            events.push(BookEvent::Cancelled {
                id: order.id,
                qty: order.qty,
                reason: CancelReason::FokNotFilled,
            });
            return;
        }
        let mut incoming = Incoming {
            id: order.id,
            account: order.account,
            side: order.side,
            price: order.price,
            remaining: order.qty.0,
            stp: order.stp,
            cancelled: false,
        };
        self.match_incoming(&mut incoming, events);
        if incoming.cancelled || incoming.remaining == 0 {
            return;
        }
        match order.time_in_force {
            TimeInForce::Gtc => {
                let peak = order.peak.map_or(0, |peak| peak.0);
                self.rest(&incoming, peak, order.post_only, events);
            }
            TimeInForce::Ioc | TimeInForce::Fok => {
                debug_assert!(
                    order.time_in_force == TimeInForce::Ioc,
                    "FOK was pre-checked"
                );
                self.ledger.cancelled += incoming.remaining;
                events.push(BookEvent::Cancelled {
                    id: order.id,
                    qty: Qty(incoming.remaining),
                    reason: CancelReason::IocRemainder,
                });
            }
        }
    }

    fn would_cross(&self, side: Side, price: Price) -> bool {
        let opposite = &self.sides[side.opposite().index()];
        opposite
            .best()
            .is_some_and(|index| crosses(side, price, self.level_price(index)))
    }

    /// Whether a FOK order could fill completely now (see module docs).
    fn fok_fillable(
        &self,
        account: AccountId,
        side: Side,
        price: Price,
        qty: i64,
        stp: StpMode,
    ) -> bool {
        let opposite = &self.sides[side.opposite().index()];
        let mut available = 0i64;
        let mut cursor = opposite.best();
        while let Some(index) = cursor {
            if !crosses(side, price, self.level_price(index)) {
                return false;
            }
            let mut node_idx = opposite.level(index).head;
            while node_idx != NIL {
                let node = &self.nodes[node_idx as usize];
                if node.account == account {
                    if stp != StpMode::CancelResting {
                        return false;
                    }
                } else {
                    available += node.visible + node.hidden;
                    if available >= qty {
                        return true;
                    }
                }
                node_idx = node.next;
            }
            cursor = opposite.next_worse(index);
        }
        false
    }

    fn match_incoming(&mut self, incoming: &mut Incoming, events: &mut Vec<BookEvent>) {
        let opposite = incoming.side.opposite();
        while incoming.remaining > 0 {
            let Some(index) = self.sides[opposite.index()].best() else {
                break;
            };
            let level_price = self.level_price(index);
            if !crosses(incoming.side, incoming.price, level_price) {
                break;
            }
            let node_idx = self.sides[opposite.index()].level(index).head;
            let resting = self.nodes[node_idx as usize];
            if resting.account == incoming.account {
                if self.prevent_self_trade(incoming, node_idx, index, events) {
                    return;
                }
                continue;
            }
            let qty = incoming.remaining.min(resting.visible);
            let trade_id = TradeId(self.next_trade_id);
            self.next_trade_id += 1;
            events.push(BookEvent::Trade {
                trade_id,
                aggressor: incoming.id,
                aggressor_account: incoming.account,
                aggressor_side: incoming.side,
                resting: resting.id,
                resting_account: resting.account,
                price: level_price,
                qty: Qty(qty),
            });
            incoming.remaining -= qty;
            self.ledger.filled += 2 * qty;
            self.take_visible(node_idx, index, qty, events);
            self.emit_depth(opposite, index, events);
        }
    }

    /// Applies self-trade prevention between `incoming` and the resting order at
    /// `node_idx` (head of level `index`). Returns true if matching must stop.
    fn prevent_self_trade(
        &mut self,
        incoming: &mut Incoming,
        node_idx: u32,
        index: usize,
        events: &mut Vec<BookEvent>,
    ) -> bool {
        let opposite = incoming.side.opposite();
        let resting = self.nodes[node_idx as usize];
        match incoming.stp {
            StpMode::CancelResting => {
                self.cancel_resting(node_idx, CancelReason::SelfTrade, events);
                false
            }
            StpMode::CancelIncoming => {
                self.cancel_incoming(incoming, events);
                true
            }
            StpMode::CancelBoth => {
                self.cancel_resting(node_idx, CancelReason::SelfTrade, events);
                self.cancel_incoming(incoming, events);
                true
            }
            StpMode::DecrementBoth => {
                let qty = incoming.remaining.min(resting.visible);
                self.ledger.cancelled += 2 * qty;
                incoming.remaining -= qty;
                let gone = resting.visible + resting.hidden == qty;
                if gone {
                    events.push(BookEvent::Cancelled {
                        id: resting.id,
                        qty: Qty(qty),
                        reason: CancelReason::SelfTrade,
                    });
                    self.take_visible(node_idx, index, qty, events);
                } else {
                    self.take_visible_quietly(node_idx, index, qty);
                    let node = self.nodes[node_idx as usize];
                    events.push(BookEvent::Restated {
                        id: node.id,
                        price: node.price,
                        visible: Qty(node.visible),
                        hidden: Qty(node.hidden),
                        reason: RestateReason::SelfTradeDecrement,
                    });
                }
                self.emit_depth(opposite, index, events);
                if incoming.remaining == 0 {
                    incoming.cancelled = true;
                    events.push(BookEvent::Cancelled {
                        id: incoming.id,
                        qty: Qty(qty),
                        reason: CancelReason::SelfTrade,
                    });
                    return true;
                }
                events.push(BookEvent::Restated {
                    id: incoming.id,
                    price: incoming.price,
                    visible: Qty(incoming.remaining),
                    hidden: Qty(0),
                    reason: RestateReason::SelfTradeDecrement,
                });
                false
            }
        }
    }

    fn cancel_incoming(&mut self, incoming: &mut Incoming, events: &mut Vec<BookEvent>) {
        self.ledger.cancelled += incoming.remaining;
        events.push(BookEvent::Cancelled {
            id: incoming.id,
            qty: Qty(incoming.remaining),
            reason: CancelReason::SelfTrade,
        });
        incoming.remaining = 0;
        incoming.cancelled = true;
    }

    /// Takes `qty` from the visible part of the resting order at `node_idx` (after a
    /// trade): removes it when empty, refreshes an iceberg peak when its visible part is
    /// used up (emitting `Restated(IcebergRefresh)`).
    fn take_visible(&mut self, node_idx: u32, index: usize, qty: i64, events: &mut Vec<BookEvent>) {
        let refreshed = self.take_visible_quietly(node_idx, index, qty);
        if refreshed {
            let node = self.nodes[node_idx as usize];
            events.push(BookEvent::Restated {
                id: node.id,
                price: node.price,
                visible: Qty(node.visible),
                hidden: Qty(node.hidden),
                reason: RestateReason::IcebergRefresh,
            });
        }
    }

    /// As [`Self::take_visible`] without events; returns true if a peak was refreshed.
    fn take_visible_quietly(&mut self, node_idx: u32, index: usize, qty: i64) -> bool {
        let node = &mut self.nodes[node_idx as usize];
        debug_assert!(qty > 0 && qty <= node.visible);
        node.visible -= qty;
        let side = node.side;
        if node.visible > 0 {
            self.sides[side.index()].level_mut(index).visible -= qty;
            return false;
        }
        if node.hidden == 0 {
            self.sides[side.index()].level_mut(index).visible -= qty;
            self.unlink(node_idx, index);
            self.release(node_idx);
            return false;
        }
        self.sides[side.index()].level_mut(index).visible -= qty;
        // A refreshed peak loses time priority: move to the back of the level.
        self.unlink(node_idx, index);
        let node = &mut self.nodes[node_idx as usize];
        let refill = node.peak.min(node.hidden);
        node.hidden -= refill;
        node.visible = refill;
        self.link_back(node_idx, index);
        true
    }

    fn cancel_resting(&mut self, node_idx: u32, reason: CancelReason, events: &mut Vec<BookEvent>) {
        let node = self.nodes[node_idx as usize];
        let index = self.level_index(node.price);
        let total = node.visible + node.hidden;
        self.ledger.cancelled += total;
        events.push(BookEvent::Cancelled {
            id: node.id,
            qty: Qty(total),
            reason,
        });
        self.unlink(node_idx, index);
        self.release(node_idx);
        self.emit_depth(node.side, index, events);
    }

    fn rest(
        &mut self,
        incoming: &Incoming,
        peak: i64,
        post_only: bool,
        events: &mut Vec<BookEvent>,
    ) {
        let visible = if peak > 0 {
            peak.min(incoming.remaining)
        } else {
            incoming.remaining
        };
        let node = OrderNode {
            id: incoming.id,
            account: incoming.account,
            side: incoming.side,
            post_only,
            stp: incoming.stp,
            price: incoming.price,
            visible,
            hidden: incoming.remaining - visible,
            peak,
            prev: NIL,
            next: NIL,
        };
        let node_idx = self.allocate(node);
        let index = self.level_index(incoming.price);
        self.link_back(node_idx, index);
        self.emit_depth(incoming.side, index, events);
    }

    fn allocate(&mut self, node: OrderNode) -> u32 {
        let node_idx = if self.free_head != NIL {
            let node_idx = self.free_head;
            self.free_head = self.nodes[node_idx as usize].next;
            self.nodes[node_idx as usize] = node;
            node_idx
        } else {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        };
        self.by_id.insert(node.id, node_idx);
        node_idx
    }

    fn release(&mut self, node_idx: u32) {
        let id = self.nodes[node_idx as usize].id;
        self.by_id.remove(&id);
        self.nodes[node_idx as usize].next = self.free_head;
        self.free_head = node_idx;
    }

    /// Appends the node to the back of its level's FIFO, adding its visible quantity.
    fn link_back(&mut self, node_idx: u32, index: usize) {
        let (side, visible) = {
            let node = &self.nodes[node_idx as usize];
            (node.side, node.visible)
        };
        let side_book = &mut self.sides[side.index()];
        let level = side_book.level_mut(index);
        let old_tail = level.tail;
        level.tail = node_idx;
        if old_tail == NIL {
            level.head = node_idx;
        }
        level.visible += visible;
        level.n_orders += 1;
        if level.n_orders == 1 {
            side_book.occupy(index);
        }
        if old_tail != NIL {
            self.nodes[old_tail as usize].next = node_idx;
        }
        let node = &mut self.nodes[node_idx as usize];
        node.prev = old_tail;
        node.next = NIL;
    }

    /// Removes the node from its level's FIFO, subtracting its visible quantity.
    fn unlink(&mut self, node_idx: u32, index: usize) {
        let node = self.nodes[node_idx as usize];
        if node.prev != NIL {
            self.nodes[node.prev as usize].next = node.next;
        }
        if node.next != NIL {
            self.nodes[node.next as usize].prev = node.prev;
        }
        let side_book = &mut self.sides[node.side.index()];
        let level = side_book.level_mut(index);
        if level.head == node_idx {
            level.head = node.next;
        }
        if level.tail == node_idx {
            level.tail = node.prev;
        }
        level.visible -= node.visible;
        level.n_orders -= 1;
        if level.n_orders == 0 {
            debug_assert_eq!(level.visible, 0);
            side_book.vacate(index);
        }
    }

    fn emit_depth(&self, side: Side, index: usize, events: &mut Vec<BookEvent>) {
        if self.config.emit_depth {
            let level = self.sides[side.index()].level(index);
            events.push(BookEvent::Depth {
                side,
                price: self.level_price(index),
                visible: Qty(level.visible),
                n_orders: level.n_orders,
            });
        }
    }

    fn find_owned(&self, id: OrderId, account: AccountId) -> Result<u32, RejectReason> {
        let node_idx = *self.by_id.get(&id).ok_or(RejectReason::UnknownOrder)?;
        if self.nodes[node_idx as usize].account != account {
            return Err(RejectReason::NotOwner);
        }
        Ok(node_idx)
    }

    fn cancel(&mut self, id: OrderId, account: AccountId, events: &mut Vec<BookEvent>) {
        let found = if self.phase == Phase::Closed {
            Err(RejectReason::Closed)
        } else {
            self.find_owned(id, account)
        };
        match found {
            Ok(node_idx) => self.cancel_resting(node_idx, CancelReason::Requested, events),
            Err(reason) => events.push(BookEvent::Rejected { id, reason }),
        }
    }

    fn modify(
        &mut self,
        id: OrderId,
        account: AccountId,
        price: Price,
        qty: Qty,
        events: &mut Vec<BookEvent>,
    ) {
        let checked = self
            .phase_rejection()
            .map_or(Ok(()), Err)
            .and_then(|()| validate_price_qty(&self.rules, price, qty))
            .and_then(|()| self.find_owned(id, account))
            .and_then(|node_idx| {
                let node = &self.nodes[node_idx as usize];
                if node.price == price && node.visible + node.hidden == qty.0 {
                    Err(RejectReason::NoChange)
                } else if node.post_only
                    && node.price != price
                    && self.would_cross(node.side, price)
                {
                    Err(RejectReason::PostOnlyWouldCross)
                } else {
                    Ok(node_idx)
                }
            });
        let node_idx = match checked {
            Ok(node_idx) => node_idx,
            Err(reason) => {
                events.push(BookEvent::Rejected { id, reason });
                return;
            }
        };
        let node = self.nodes[node_idx as usize];
        let index = self.level_index(node.price);
        let total = node.visible + node.hidden;
        if price == node.price && qty.0 < total {
            // Reduction at the same price keeps time priority; hidden goes first.
            let reduction = total - qty.0;
            self.ledger.cancelled += reduction;
            let from_hidden = reduction.min(node.hidden);
            let from_visible = reduction - from_hidden;
            let node_mut = &mut self.nodes[node_idx as usize];
            node_mut.hidden -= from_hidden;
            node_mut.visible -= from_visible;
            let node_now = *node_mut;
            self.sides[node.side.index()].level_mut(index).visible -= from_visible;
            events.push(BookEvent::Restated {
                id,
                price,
                visible: Qty(node_now.visible),
                hidden: Qty(node_now.hidden),
                reason: RestateReason::ReducedKeepsPriority,
            });
            self.emit_depth(node.side, index, events);
            return;
        }
        // Price change or increase: loses priority and re-enters as an aggressor.
        if qty.0 > total {
            self.ledger.submitted += qty.0 - total;
        } else {
            self.ledger.cancelled += total - qty.0;
        }
        // The node keeps its slot and id mapping while it re-enters: no hash-map work.
        self.unlink(node_idx, index);
        let visible = if node.peak > 0 {
            node.peak.min(qty.0)
        } else {
            qty.0
        };
        events.push(BookEvent::Restated {
            id,
            price,
            visible: Qty(visible),
            hidden: Qty(qty.0 - visible),
            reason: RestateReason::ModifiedLosesPriority,
        });
        self.emit_depth(node.side, index, events);
        let mut incoming = Incoming {
            id,
            account,
            side: node.side,
            price,
            remaining: qty.0,
            stp: node.stp,
            cancelled: false,
        };
        self.match_incoming(&mut incoming, events);
        if incoming.cancelled || incoming.remaining == 0 {
            self.release(node_idx);
            return;
        }
        let node_mut = &mut self.nodes[node_idx as usize];
        node_mut.price = price;
        node_mut.visible = if node.peak > 0 {
            node.peak.min(incoming.remaining)
        } else {
            incoming.remaining
        };
        node_mut.hidden = incoming.remaining - node_mut.visible;
        let new_index = self.level_index(price);
        self.link_back(node_idx, new_index);
        self.emit_depth(node.side, new_index, events);
    }

    fn close(&mut self, events: &mut Vec<BookEvent>) {
        if self.phase == Phase::Closed {
            return;
        }
        for side in [Side::Buy, Side::Sell] {
            while let Some(index) = self.sides[side.index()].best() {
                loop {
                    let node_idx = self.sides[side.index()].level(index).head;
                    if node_idx == NIL {
                        break;
                    }
                    let node = self.nodes[node_idx as usize];
                    let total = node.visible + node.hidden;
                    self.ledger.expired += total;
                    events.push(BookEvent::Expired {
                        id: node.id,
                        qty: Qty(total),
                    });
                    self.unlink(node_idx, index);
                    self.release(node_idx);
                }
                self.emit_depth(side, index, events);
            }
        }
        self.phase = Phase::Closed;
        events.push(BookEvent::PhaseChanged {
            phase: Phase::Closed,
        });
    }

    /// Everything needed to rebuild this book exactly.
    pub fn snapshot(&self) -> BookSnapshot {
        let mut bids = Vec::with_capacity(self.n_resting());
        self.orders(Side::Buy, &mut bids);
        let mut asks = Vec::with_capacity(self.n_resting() - bids.len());
        self.orders(Side::Sell, &mut asks);
        BookSnapshot {
            phase: self.phase,
            next_trade_id: self.next_trade_id,
            ledger: self.ledger,
            bids,
            asks,
        }
    }

    /// Rebuilds a book from a snapshot, validating every order.
    ///
    /// # Errors
    /// Invalid rules or config, an order invalid for the rules, too many orders,
    /// duplicates, a crossed book or levels out of priority order.
    pub fn from_snapshot(
        rules: MarketRules,
        config: BookConfig,
        snapshot: &BookSnapshot,
    ) -> Result<OrderBook, SnapshotError> {
        let mut book = OrderBook::new(rules, config)?;
        let n_orders = snapshot.bids.len() + snapshot.asks.len();
        if n_orders > config.orders_max {
            return Err(SnapshotError::TooManyOrders {
                n_orders,
                orders_max: config.orders_max,
            });
        }
        for (side, orders) in [(Side::Buy, &snapshot.bids), (Side::Sell, &snapshot.asks)] {
            let mut previous: Option<Price> = None;
            for order in orders.iter() {
                let invalid = |reason| SnapshotError::InvalidOrder {
                    id: order.id,
                    reason,
                };
                if order.side != side {
                    return Err(invalid("listed on the wrong side"));
                }
                if validate_price_qty(&book.rules, order.price, order.visible).is_err() {
                    return Err(invalid("price or visible quantity breaks the rules"));
                }
                if order.hidden.0 < 0 || order.peak.0 < 0 {
                    return Err(invalid("negative hidden quantity or peak"));
                }
                if order.peak.0 > 0 && order.visible > order.peak {
                    return Err(invalid("visible quantity above the iceberg peak"));
                }
                if order.peak.0 == 0 && order.hidden.0 != 0 {
                    return Err(invalid("hidden quantity without an iceberg peak"));
                }
                if book.by_id.contains_key(&order.id) {
                    return Err(invalid("duplicate order id"));
                }
                if let Some(previous) = previous {
                    let worse_or_equal = match side {
                        Side::Buy => order.price <= previous,
                        Side::Sell => order.price >= previous,
                    };
                    if !worse_or_equal {
                        return Err(SnapshotError::Inconsistent("levels out of priority order"));
                    }
                }
                previous = Some(order.price);
                let node_idx = book.allocate(OrderNode {
                    id: order.id,
                    account: order.account,
                    side,
                    post_only: order.post_only,
                    stp: order.stp,
                    price: order.price,
                    visible: order.visible.0,
                    hidden: order.hidden.0,
                    peak: order.peak.0,
                    prev: NIL,
                    next: NIL,
                });
                let index = book.level_index(order.price);
                book.link_back(node_idx, index);
            }
        }
        if let (Some((bid, _)), Some((ask, _))) = (book.bbo().bid, book.bbo().ask)
            && bid >= ask
        {
            return Err(SnapshotError::Inconsistent("crossed book"));
        }
        book.phase = snapshot.phase;
        book.next_trade_id = snapshot.next_trade_id;
        book.ledger = snapshot.ledger;
        let resting: i64 = snapshot
            .bids
            .iter()
            .chain(&snapshot.asks)
            .map(|order| order.visible.0 + order.hidden.0)
            .sum();
        let ledger = snapshot.ledger;
        if ledger.submitted != resting + ledger.filled + ledger.cancelled + ledger.expired {
            return Err(SnapshotError::Inconsistent(
                "quantity ledger does not balance",
            ));
        }
        Ok(book)
    }

    /// Asserts every invariant of the module docs. O(book size): for tests and the
    /// simulator, not the hot path.
    ///
    /// # Panics
    /// On any broken invariant (a bug).
    pub fn check_invariants(&self) {
        let mut n_seen = 0usize;
        let mut resting = 0i64;
        for side_book in &self.sides {
            side_book.occupied.check_invariants();
            assert_eq!(
                side_book.best,
                side_book.best_by_bitmap(),
                "best level cache stale"
            );
            for (page_idx, page) in side_book.pages.iter().enumerate() {
                let Some(page) = page else { continue };
                for (offset, level) in page.iter().enumerate() {
                    let index = page_idx * PAGE_LEVELS + offset;
                    if index >= side_book.occupied.len() {
                        // The last page runs past the price band; those levels are unused.
                        assert_eq!(level.n_orders, 0, "order beyond the price band");
                        break;
                    }
                    assert_eq!(
                        side_book.occupied.contains(index),
                        level.n_orders > 0,
                        "bitmap disagrees with level {index}"
                    );
                    let (mut visible, mut count, mut prev) = (0i64, 0u32, NIL);
                    let mut node_idx = level.head;
                    while node_idx != NIL {
                        let node = &self.nodes[node_idx as usize];
                        assert_eq!(node.prev, prev, "broken back link");
                        assert_eq!(node.side, side_book.side, "order on the wrong side");
                        assert_eq!(
                            self.level_index(node.price),
                            index,
                            "order at the wrong level"
                        );
                        assert!(node.visible > 0, "resting order with nothing visible");
                        assert!(node.hidden >= 0, "negative hidden quantity");
                        assert!(
                            node.peak == 0 || node.visible <= node.peak,
                            "visible above peak"
                        );
                        assert!(node.peak > 0 || node.hidden == 0, "hidden without a peak");
                        assert_eq!(self.by_id.get(&node.id), Some(&node_idx), "id map stale");
                        visible += node.visible;
                        resting += node.visible + node.hidden;
                        count += 1;
                        prev = node_idx;
                        node_idx = node.next;
                    }
                    assert_eq!(level.tail, prev, "level tail stale");
                    assert_eq!(level.visible, visible, "level visible total stale");
                    assert_eq!(level.n_orders, count, "level order count stale");
                    n_seen += count as usize;
                }
            }
        }
        assert_eq!(
            n_seen,
            self.by_id.len(),
            "id map holds orders not in any level"
        );
        assert!(
            n_seen <= self.config.orders_max,
            "more than orders_max resting"
        );
        if let (Some((bid, _)), Some((ask, _))) = (self.bbo().bid, self.bbo().ask) {
            assert!(bid < ask, "book crossed at rest: bid {bid} >= ask {ask}");
        }
        if self.phase == Phase::Closed {
            assert_eq!(n_seen, 0, "closed book with resting orders");
        }
        let ledger = self.ledger;
        assert_eq!(
            ledger.submitted,
            resting + ledger.filled + ledger.cancelled + ledger.expired,
            "quantity not conserved"
        );
    }
}

#[cfg(test)]
mod tests;
