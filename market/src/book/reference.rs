//! Reference order book: the same rules as [`super::OrderBook`], written the
//! straightforward way with `BTreeMap<Price, VecDeque<Order>>` per side.
//!
//! It exists for two reasons: it is the oracle of the differential tests (both books
//! must emit identical event streams for any command sequence), and it is the
//! baseline the benchmark measures the fast book against. It favours obviousness over
//! speed; validation is shared with the fast book so both reject identically, while
//! matching, priority and bookkeeping are implemented independently.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::types::*;
use super::{crosses, validate_new_order, validate_price_qty};
use crate::rules::MarketRules;
use crate::units::{AccountId, OrderId, Price, Qty, Side, TradeId};

#[derive(Clone, Copy, Debug)]
struct RefOrder {
    id: OrderId,
    account: AccountId,
    side: Side,
    price: Price,
    visible: i64,
    hidden: i64,
    peak: i64,
    stp: StpMode,
    post_only: bool,
}

/// The reference book. Same public behaviour as [`super::OrderBook`] for
/// [`ReferenceBook::apply`].
#[derive(Clone, Debug)]
pub struct ReferenceBook {
    rules: MarketRules,
    orders_max: usize,
    emit_depth: bool,
    phase: Phase,
    bids: BTreeMap<Price, VecDeque<RefOrder>>,
    asks: BTreeMap<Price, VecDeque<RefOrder>>,
    /// id → (side, price) of resting orders.
    where_is: HashMap<OrderId, (Side, Price)>,
    next_trade_id: u64,
    ledger: QtyLedger,
}

impl ReferenceBook {
    /// An empty, open book with the same options as the fast one.
    pub fn new(rules: MarketRules, config: super::BookConfig) -> ReferenceBook {
        ReferenceBook {
            rules,
            orders_max: config.orders_max,
            emit_depth: config.emit_depth,
            phase: Phase::Open,
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
            where_is: HashMap::new(),
            next_trade_id: 1,
            ledger: QtyLedger::default(),
        }
    }

    /// Quantity accounting.
    pub fn ledger(&self) -> QtyLedger {
        self.ledger
    }

    /// Bids then asks, best first, time priority within a level (as in a snapshot).
    pub fn resting(&self) -> (Vec<RestingOrder>, Vec<RestingOrder>) {
        let view = |order: &RefOrder| RestingOrder {
            id: order.id,
            account: order.account,
            side: order.side,
            price: order.price,
            visible: Qty(order.visible),
            hidden: Qty(order.hidden),
            peak: Qty(order.peak),
            stp: order.stp,
            post_only: order.post_only,
        };
        let bids = self.bids.values().rev().flatten().map(view).collect();
        let asks = self.asks.values().flatten().map(view).collect();
        (bids, asks)
    }

    fn book(&mut self, side: Side) -> &mut BTreeMap<Price, VecDeque<RefOrder>> {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    fn best_price(&self, side: Side) -> Option<Price> {
        match side {
            Side::Buy => self.bids.keys().next_back().copied(),
            Side::Sell => self.asks.keys().next().copied(),
        }
    }

    /// Prices of `side` in priority order.
    fn prices_in_priority(&self, side: Side) -> Vec<Price> {
        match side {
            Side::Buy => self.bids.keys().rev().copied().collect(),
            Side::Sell => self.asks.keys().copied().collect(),
        }
    }

    fn depth_event(&mut self, side: Side, price: Price, events: &mut Vec<BookEvent>) {
        if !self.emit_depth {
            return;
        }
        let (visible, n_orders) = match self.book(side).get(&price) {
            Some(queue) => (queue.iter().map(|o| o.visible).sum(), queue.len() as u32),
            None => (0, 0),
        };
        events.push(BookEvent::Depth {
            side,
            price,
            visible: Qty(visible),
            n_orders,
        });
    }

    /// Applies one command, appending its events.
    pub fn apply(&mut self, command: &BookCommand, events: &mut Vec<BookEvent>) {
        match *command {
            BookCommand::Submit(order) => self.submit(order, events),
            BookCommand::Cancel { id, account } => {
                if self.phase == Phase::Closed {
                    events.push(BookEvent::Rejected {
                        id,
                        reason: RejectReason::Closed,
                    });
                    return;
                }
                match self.owned(id, account) {
                    Ok(()) => {
                        let order = self.remove(id);
                        let total = order.visible + order.hidden;
                        self.ledger.cancelled += total;
                        events.push(BookEvent::Cancelled {
                            id,
                            qty: Qty(total),
                            reason: CancelReason::Requested,
                        });
                        self.depth_event(order.side, order.price, events);
                    }
                    Err(reason) => events.push(BookEvent::Rejected { id, reason }),
                }
            }
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
            BookCommand::Close => {
                if self.phase == Phase::Closed {
                    return;
                }
                for side in [Side::Buy, Side::Sell] {
                    for price in self.prices_in_priority(side) {
                        let queue = self.book(side).remove(&price).unwrap_or_default();
                        for order in queue {
                            let total = order.visible + order.hidden;
                            self.ledger.expired += total;
                            self.where_is.remove(&order.id);
                            events.push(BookEvent::Expired {
                                id: order.id,
                                qty: Qty(total),
                            });
                        }
                        self.depth_event(side, price, events);
                    }
                }
                self.phase = Phase::Closed;
                events.push(BookEvent::PhaseChanged {
                    phase: Phase::Closed,
                });
            }
        }
    }

    fn owned(&self, id: OrderId, account: AccountId) -> Result<(), RejectReason> {
        let (side, price) = *self.where_is.get(&id).ok_or(RejectReason::UnknownOrder)?;
        let queue = match side {
            Side::Buy => &self.bids[&price],
            Side::Sell => &self.asks[&price],
        };
        let order = queue
            .iter()
            .find(|o| o.id == id)
            .ok_or(RejectReason::UnknownOrder)?;
        if order.account != account {
            return Err(RejectReason::NotOwner);
        }
        Ok(())
    }

    fn get(&self, id: OrderId) -> RefOrder {
        let (side, price) = self.where_is[&id];
        let queue = match side {
            Side::Buy => &self.bids[&price],
            Side::Sell => &self.asks[&price],
        };
        *queue
            .iter()
            .find(|o| o.id == id)
            .expect("indexed order is resting")
    }

    fn remove(&mut self, id: OrderId) -> RefOrder {
        let (side, price) = self.where_is.remove(&id).expect("indexed order");
        let queue = self
            .book(side)
            .get_mut(&price)
            .expect("level of indexed order");
        let position = queue
            .iter()
            .position(|o| o.id == id)
            .expect("order in its level");
        let order = queue.remove(position).expect("position is valid");
        if queue.is_empty() {
            self.book(side).remove(&price);
        }
        order
    }

    fn would_cross(&self, side: Side, price: Price) -> bool {
        self.best_price(side.opposite())
            .is_some_and(|best| crosses(side, price, best))
    }

    fn submit(&mut self, order: NewOrder, events: &mut Vec<BookEvent>) {
        let phase_reject = match self.phase {
            Phase::Open => None,
            Phase::Halted => Some(RejectReason::Halted),
            Phase::Closed => Some(RejectReason::Closed),
        };
        let verdict = match phase_reject {
            Some(reason) => Err(reason),
            None => validate_new_order(&self.rules, &order),
        }
        .and_then(|()| {
            if self.where_is.contains_key(&order.id) {
                Err(RejectReason::DuplicateOrderId)
            } else if order.time_in_force == TimeInForce::Gtc
                && self.where_is.len() >= self.orders_max
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
        if order.time_in_force == TimeInForce::Fok && !self.fok_fillable(&order) {
            self.ledger.cancelled += order.qty.0;
            events.push(BookEvent::Cancelled {
                id: order.id,
                qty: order.qty,
                reason: CancelReason::FokNotFilled,
            });
            return;
        }
        let (remaining, cancelled) = self.match_against_book(
            order.id,
            order.account,
            order.side,
            order.price,
            order.qty.0,
            order.stp,
            events,
        );
        if cancelled || remaining == 0 {
            return;
        }
        if order.time_in_force == TimeInForce::Gtc {
            let peak = order.peak.map_or(0, |p| p.0);
            self.insert(
                order.id,
                order.account,
                order.side,
                order.price,
                remaining,
                peak,
                order.stp,
                order.post_only,
                events,
            );
        } else {
            self.ledger.cancelled += remaining;
            events.push(BookEvent::Cancelled {
                id: order.id,
                qty: Qty(remaining),
                reason: CancelReason::IocRemainder,
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        id: OrderId,
        account: AccountId,
        side: Side,
        price: Price,
        qty: i64,
        peak: i64,
        stp: StpMode,
        post_only: bool,
        events: &mut Vec<BookEvent>,
    ) {
        let visible = if peak > 0 { peak.min(qty) } else { qty };
        let order = RefOrder {
            id,
            account,
            side,
            price,
            visible,
            hidden: qty - visible,
            peak,
            stp,
            post_only,
        };
        self.book(side).entry(price).or_default().push_back(order);
        self.where_is.insert(id, (side, price));
        self.depth_event(side, price, events);
    }

    fn fok_fillable(&self, order: &NewOrder) -> bool {
        let opposite = order.side.opposite();
        let mut available = 0;
        for price in self.prices_in_priority(opposite) {
            if !crosses(order.side, order.price, price) {
                return false;
            }
            let queue = match opposite {
                Side::Buy => &self.bids[&price],
                Side::Sell => &self.asks[&price],
            };
            for resting in queue {
                if resting.account == order.account {
                    if order.stp != StpMode::CancelResting {
                        return false;
                    }
                } else {
                    available += resting.visible + resting.hidden;
                    if available >= order.qty.0 {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// Matches an incoming order; returns (remaining, cancelled by self-trade prevention).
    #[allow(clippy::too_many_arguments)]
    fn match_against_book(
        &mut self,
        id: OrderId,
        account: AccountId,
        side: Side,
        limit: Price,
        mut remaining: i64,
        stp: StpMode,
        events: &mut Vec<BookEvent>,
    ) -> (i64, bool) {
        let opposite = side.opposite();
        while remaining > 0 {
            let Some(price) = self.best_price(opposite) else {
                break;
            };
            if !crosses(side, limit, price) {
                break;
            }
            let head = self.book(opposite)[&price][0];
            if head.account == account {
                match stp {
                    StpMode::CancelResting | StpMode::CancelBoth => {
                        self.remove(head.id);
                        let total = head.visible + head.hidden;
                        self.ledger.cancelled += total;
                        events.push(BookEvent::Cancelled {
                            id: head.id,
                            qty: Qty(total),
                            reason: CancelReason::SelfTrade,
                        });
                        self.depth_event(opposite, price, events);
                        if stp == StpMode::CancelResting {
                            continue;
                        }
                        self.ledger.cancelled += remaining;
                        events.push(BookEvent::Cancelled {
                            id,
                            qty: Qty(remaining),
                            reason: CancelReason::SelfTrade,
                        });
                        return (0, true);
                    }
                    StpMode::CancelIncoming => {
                        self.ledger.cancelled += remaining;
                        events.push(BookEvent::Cancelled {
                            id,
                            qty: Qty(remaining),
                            reason: CancelReason::SelfTrade,
                        });
                        return (0, true);
                    }
                    StpMode::DecrementBoth => {
                        let qty = remaining.min(head.visible);
                        self.ledger.cancelled += 2 * qty;
                        remaining -= qty;
                        if head.visible + head.hidden == qty {
                            events.push(BookEvent::Cancelled {
                                id: head.id,
                                qty: Qty(qty),
                                reason: CancelReason::SelfTrade,
                            });
                            self.remove(head.id);
                        } else {
                            let after = self.reduce_head(opposite, price, qty);
                            events.push(BookEvent::Restated {
                                id: after.id,
                                price,
                                visible: Qty(after.visible),
                                hidden: Qty(after.hidden),
                                reason: RestateReason::SelfTradeDecrement,
                            });
                        }
                        self.depth_event(opposite, price, events);
                        if remaining == 0 {
                            events.push(BookEvent::Cancelled {
                                id,
                                qty: Qty(qty),
                                reason: CancelReason::SelfTrade,
                            });
                            return (0, true);
                        }
                        events.push(BookEvent::Restated {
                            id,
                            price: limit,
                            visible: Qty(remaining),
                            hidden: Qty(0),
                            reason: RestateReason::SelfTradeDecrement,
                        });
                        continue;
                    }
                }
            }
            let qty = remaining.min(head.visible);
            events.push(BookEvent::Trade {
                trade_id: TradeId(self.next_trade_id),
                aggressor: id,
                aggressor_account: account,
                aggressor_side: side,
                resting: head.id,
                resting_account: head.account,
                price,
                qty: Qty(qty),
            });
            self.next_trade_id += 1;
            self.ledger.filled += 2 * qty;
            remaining -= qty;
            if head.visible + head.hidden == qty {
                self.remove(head.id);
            } else {
                let refreshed = head.visible == qty;
                let after = self.reduce_head(opposite, price, qty);
                if refreshed {
                    events.push(BookEvent::Restated {
                        id: after.id,
                        price,
                        visible: Qty(after.visible),
                        hidden: Qty(after.hidden),
                        reason: RestateReason::IcebergRefresh,
                    });
                }
            }
            self.depth_event(opposite, price, events);
        }
        (remaining, false)
    }

    /// Takes `qty` from the visible part of the head order at `price` (which keeps
    /// something); a used-up iceberg peak is refreshed and sent to the back.
    fn reduce_head(&mut self, side: Side, price: Price, qty: i64) -> RefOrder {
        let queue = self.book(side).get_mut(&price).expect("level exists");
        let mut head = queue.pop_front().expect("level not empty");
        head.visible -= qty;
        if head.visible == 0 {
            let refill = head.peak.min(head.hidden);
            head.hidden -= refill;
            head.visible = refill;
            queue.push_back(head);
        } else {
            queue.push_front(head);
        }
        head
    }

    fn modify(
        &mut self,
        id: OrderId,
        account: AccountId,
        price: Price,
        qty: Qty,
        events: &mut Vec<BookEvent>,
    ) {
        let phase_reject = match self.phase {
            Phase::Open => None,
            Phase::Halted => Some(RejectReason::Halted),
            Phase::Closed => Some(RejectReason::Closed),
        };
        let verdict = match phase_reject {
            Some(reason) => Err(reason),
            None => validate_price_qty(&self.rules, price, qty),
        }
        .and_then(|()| self.owned(id, account))
        .and_then(|()| {
            let order = self.get(id);
            if order.price == price && order.visible + order.hidden == qty.0 {
                Err(RejectReason::NoChange)
            } else if order.post_only && order.price != price && self.would_cross(order.side, price)
            {
                Err(RejectReason::PostOnlyWouldCross)
            } else {
                Ok(())
            }
        });
        if let Err(reason) = verdict {
            events.push(BookEvent::Rejected { id, reason });
            return;
        }
        let order = self.get(id);
        let total = order.visible + order.hidden;
        if price == order.price && qty.0 < total {
            let reduction = total - qty.0;
            self.ledger.cancelled += reduction;
            let from_hidden = reduction.min(order.hidden);
            let (side, level_price) = self.where_is[&id];
            let queue = self.book(side).get_mut(&level_price).expect("level exists");
            let slot = queue
                .iter_mut()
                .find(|o| o.id == id)
                .expect("order in level");
            slot.hidden -= from_hidden;
            slot.visible -= reduction - from_hidden;
            let after = *slot;
            events.push(BookEvent::Restated {
                id,
                price,
                visible: Qty(after.visible),
                hidden: Qty(after.hidden),
                reason: RestateReason::ReducedKeepsPriority,
            });
            self.depth_event(side, level_price, events);
            return;
        }
        if qty.0 > total {
            self.ledger.submitted += qty.0 - total;
        } else {
            self.ledger.cancelled += total - qty.0;
        }
        self.remove(id);
        let visible = if order.peak > 0 {
            order.peak.min(qty.0)
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
        self.depth_event(order.side, order.price, events);
        let (remaining, cancelled) =
            self.match_against_book(id, account, order.side, price, qty.0, order.stp, events);
        if !cancelled && remaining > 0 {
            self.insert(
                id,
                account,
                order.side,
                price,
                remaining,
                order.peak,
                order.stp,
                order.post_only,
                events,
            );
        }
    }
}
