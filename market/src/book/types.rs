//! The order book's commands and events: what goes in, what comes out.
//!
//! These types are plain data (serde) so the engine can journal commands and stream
//! events. They carry no behaviour; the matching rules live in [`super::OrderBook`].

use serde::{Deserialize, Serialize};

use crate::units::{AccountId, OrderId, Price, Qty, Side, TradeId};

/// How long an order may rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimeInForce {
    /// Good till cancelled: rests until filled, cancelled or expired at gate closure.
    Gtc,
    /// Immediate or cancel: matches what it can, the rest is cancelled.
    Ioc,
    /// Fill or kill: fills completely at once or not at all.
    Fok,
}

/// Self-trade prevention: what happens when an incoming order would trade with a
/// resting order of the same account. The incoming order's mode decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum StpMode {
    /// Cancel the resting order and keep matching the incoming one.
    #[default]
    CancelResting,
    /// Cancel what is left of the incoming order; the resting order stays.
    CancelIncoming,
    /// Cancel both the resting order and the rest of the incoming one.
    CancelBoth,
    /// Reduce both by the smaller quantity without a trade; a side reduced to zero is
    /// cancelled, and the incoming order keeps matching if anything is left.
    DecrementBoth,
}

/// A new order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    /// Identity, unique within the book (assigned by the sequencer).
    pub id: OrderId,
    /// Owner.
    pub account: AccountId,
    /// Buy or sell.
    pub side: Side,
    /// Limit price.
    pub price: Price,
    /// Total quantity (for an iceberg: visible peak + hidden).
    pub qty: Qty,
    /// Time in force.
    pub time_in_force: TimeInForce,
    /// Post-only (book-or-cancel): rejected if it would trade on arrival. GTC only.
    pub post_only: bool,
    /// Iceberg peak: the visible quantity; `None` for a plain order. GTC only.
    pub peak: Option<Qty>,
    /// Self-trade prevention mode.
    pub stp: StpMode,
}

impl NewOrder {
    /// A plain GTC limit order with default self-trade prevention.
    pub fn limit(id: OrderId, account: AccountId, side: Side, price: Price, qty: Qty) -> NewOrder {
        NewOrder {
            id,
            account,
            side,
            price,
            qty,
            time_in_force: TimeInForce::Gtc,
            post_only: false,
            peak: None,
            stp: StpMode::default(),
        }
    }
}

/// A command to one book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BookCommand {
    /// Submit a new order.
    Submit(NewOrder),
    /// Cancel a resting order.
    Cancel {
        /// Order to cancel.
        id: OrderId,
        /// Account asking (must own the order).
        account: AccountId,
    },
    /// Change price and/or total remaining quantity. Reducing quantity at the same
    /// price keeps time priority; anything else loses it (and may trade).
    Modify {
        /// Order to modify.
        id: OrderId,
        /// Account asking (must own the order).
        account: AccountId,
        /// New limit price.
        price: Price,
        /// New total remaining quantity (visible + hidden).
        qty: Qty,
    },
    /// Stop accepting new orders and modifications (cancels still work).
    Halt,
    /// Resume trading after a halt.
    Resume,
    /// Close the book now (gate closure): every resting order expires.
    Close,
}

/// Why a command was rejected. A rejected command changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum RejectReason {
    /// Quantity zero or negative.
    #[error("quantity must be positive")]
    QtyNotPositive,
    /// Quantity above the market's per-order maximum.
    #[error("quantity above the market maximum")]
    QtyAboveMax,
    /// Price not a multiple of the market's tick.
    #[error("price not on the tick grid")]
    PriceOffTick,
    /// Price outside the market's limits.
    #[error("price outside the market limits")]
    PriceOutOfLimits,
    /// Iceberg peak zero, or larger than the total.
    #[error("iceberg peak must be positive and at most the total quantity")]
    InvalidPeak,
    /// A restriction that cannot be combined (post-only or iceberg with IOC/FOK, or
    /// a post-only iceberg).
    #[error("order type restrictions cannot be combined")]
    InvalidOrderType,
    /// Post-only order would have traded on arrival.
    #[error("post-only order would cross the book")]
    PostOnlyWouldCross,
    /// Order id already used in this book.
    #[error("order id already used")]
    DuplicateOrderId,
    /// No resting order with this id.
    #[error("unknown order id")]
    UnknownOrder,
    /// The order belongs to another account.
    #[error("order belongs to another account")]
    NotOwner,
    /// Modify that changes nothing.
    #[error("modify changes nothing")]
    NoChange,
    /// Trading is halted.
    #[error("trading is halted")]
    Halted,
    /// The book is closed (gate closure passed).
    #[error("market closed")]
    Closed,
    /// The book holds `orders_max` resting orders already.
    #[error("book full")]
    BookFull,
}

/// Why an order (or what was left of it) was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CancelReason {
    /// The owner asked.
    Requested,
    /// What an IOC order could not fill at once.
    IocRemainder,
    /// A FOK order that could not fill completely.
    FokNotFilled,
    /// Self-trade prevention removed it.
    SelfTrade,
}

/// Why a resting order was restated (its quantity, and maybe its priority, changed
/// without a trade).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RestateReason {
    /// Owner reduced the quantity at the same price: priority kept.
    ReducedKeepsPriority,
    /// Owner changed the price or raised the quantity: priority lost.
    ModifiedLosesPriority,
    /// An iceberg's peak was used up and refreshed from its hidden quantity: new priority.
    IcebergRefresh,
    /// Self-trade prevention (decrement-both) reduced it.
    SelfTradeDecrement,
}

/// Trading phase of a book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Continuous trading.
    Open,
    /// Halted: no new orders or modifications; cancels allowed; orders keep resting.
    Halted,
    /// Closed at gate closure: empty, accepts nothing.
    Closed,
}

/// Something that happened in a book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BookEvent {
    /// A new order passed validation (it may trade, rest, or be cancelled next).
    Accepted {
        /// The order.
        id: OrderId,
        /// Owner.
        account: AccountId,
        /// Side.
        side: Side,
        /// Limit price.
        price: Price,
        /// Total quantity.
        qty: Qty,
    },
    /// A command was refused; nothing changed.
    Rejected {
        /// Order the command named.
        id: OrderId,
        /// Why.
        reason: RejectReason,
    },
    /// A trade at the resting order's price.
    Trade {
        /// Identity within the book.
        trade_id: TradeId,
        /// The incoming order.
        aggressor: OrderId,
        /// The incoming order's account.
        aggressor_account: AccountId,
        /// The incoming order's side.
        aggressor_side: Side,
        /// The resting order.
        resting: OrderId,
        /// The resting order's account.
        resting_account: AccountId,
        /// Trade price (the resting order's limit).
        price: Price,
        /// Traded quantity.
        qty: Qty,
    },
    /// An order left the book, or an incoming remainder was dropped.
    Cancelled {
        /// The order.
        id: OrderId,
        /// Quantity that was left and is now gone.
        qty: Qty,
        /// Why.
        reason: CancelReason,
    },
    /// A resting order expired at gate closure.
    Expired {
        /// The order.
        id: OrderId,
        /// Quantity that was left.
        qty: Qty,
    },
    /// A resting order's price or quantity changed without a trade.
    Restated {
        /// The order.
        id: OrderId,
        /// Its limit price now.
        price: Price,
        /// Visible quantity now.
        visible: Qty,
        /// Hidden (iceberg) quantity now.
        hidden: Qty,
        /// Why.
        reason: RestateReason,
    },
    /// L2 incremental update: the visible total at one price level changed.
    Depth {
        /// Side of the level.
        side: Side,
        /// Level price.
        price: Price,
        /// Visible quantity at the level now (zero: level gone).
        visible: Qty,
        /// Number of orders at the level now.
        n_orders: u32,
    },
    /// The book's trading phase changed.
    PhaseChanged {
        /// New phase.
        phase: Phase,
    },
}

/// One resting order as seen in L3 market data and in snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestingOrder {
    /// The order.
    pub id: OrderId,
    /// Owner.
    pub account: AccountId,
    /// Side.
    pub side: Side,
    /// Limit price.
    pub price: Price,
    /// Visible quantity.
    pub visible: Qty,
    /// Hidden iceberg quantity (zero for plain orders).
    pub hidden: Qty,
    /// Iceberg peak (zero for plain orders).
    pub peak: Qty,
    /// Self-trade prevention mode it was submitted with.
    pub stp: StpMode,
    /// Post-only: a modify that would make it trade is rejected.
    pub post_only: bool,
}

/// One L2 level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepthLevel {
    /// Level price.
    pub price: Price,
    /// Visible quantity.
    pub visible: Qty,
    /// Number of orders.
    pub n_orders: u32,
}

/// Best bid and offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Bbo {
    /// Best bid price and visible quantity there.
    pub bid: Option<(Price, Qty)>,
    /// Best ask price and visible quantity there.
    pub ask: Option<(Price, Qty)>,
}

/// Quantity accounting of a book, for the conservation invariant:
/// `submitted == resting + filled + cancelled + expired` (all in lots, each order side
/// counted separately, so one trade of q adds 2q to `filled`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QtyLedger {
    /// Quantity of accepted orders, plus increases by modify.
    pub submitted: i64,
    /// Quantity filled (both sides of every trade).
    pub filled: i64,
    /// Quantity cancelled (requested, IOC/FOK remainders, self-trade, reduced by modify).
    pub cancelled: i64,
    /// Quantity expired at gate closure.
    pub expired: i64,
}

/// Everything needed to rebuild a book exactly: resting orders in priority order
/// per level, counters and phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookSnapshot {
    /// Trading phase.
    pub phase: Phase,
    /// Next trade id to assign.
    pub next_trade_id: u64,
    /// Quantity ledger.
    pub ledger: QtyLedger,
    /// Bids, best price first, time priority within a price.
    pub bids: Vec<RestingOrder>,
    /// Asks, best price first, time priority within a price.
    pub asks: Vec<RestingOrder>,
}
