//! Seeded order-flow workloads for the order-book benchmarks.
//!
//! A workload is generated once, up front, into a `Vec<BookCommand>` so that every
//! book under test replays exactly the same commands and the generator's own cost is
//! never measured. Generation tracks which orders are live by running the commands
//! through an [`OrderBook`] as it goes, so cancels and modifies name real orders.
//!
//! Same seed, same workload: the generator draws only from the `ChaCha8Rng` it is given.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;
use voltex_market::book::{
    BookCommand, BookConfig, BookEvent, NewOrder, OrderBook, StpMode, TimeInForce,
};
use voltex_market::{AccountId, MarketRules, OrderId, Price, Qty, Side};

/// Which order flow to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkloadKind {
    /// exchange-core's mix: 9% GTC limit, 3% IOC, 6% cancel, 82% move/modify, about
    /// 1,000 live orders over about 750 price levels.
    ExchangeCore,
    /// The same mix on a deep book of about 100,000 resting orders.
    DeepBook,
    /// Matching-heavy: 40% GTC, 40% aggressive IOC sweeps, 10% cancel, 10% modify.
    MatchingHeavy,
}

impl WorkloadKind {
    /// Short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            WorkloadKind::ExchangeCore => "(a) exchange-core mix, ~1k live orders, ~750 levels",
            WorkloadKind::DeepBook => "(b) deep book, ~100k resting orders",
            WorkloadKind::MatchingHeavy => "(c) matching-heavy",
        }
    }

    fn live_target(self) -> usize {
        match self {
            WorkloadKind::ExchangeCore | WorkloadKind::MatchingHeavy => 1_000,
            WorkloadKind::DeepBook => 100_000,
        }
    }

    fn half_range_ticks(self) -> i64 {
        match self {
            WorkloadKind::ExchangeCore | WorkloadKind::MatchingHeavy => 375,
            WorkloadKind::DeepBook => 5_000,
        }
    }

    /// Book options big enough for this workload.
    pub fn book_config(self) -> BookConfig {
        BookConfig {
            orders_max: self.live_target() * 2 + 1_024,
            emit_depth: true,
        }
    }
}

/// The kind of a generated command, for per-operation latency tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// New GTC limit order.
    Limit,
    /// New IOC order.
    Ioc,
    /// Cancel.
    Cancel,
    /// Move/modify.
    Modify,
}

impl OpKind {
    /// All kinds, in table order.
    pub const ALL: [OpKind; 4] = [OpKind::Limit, OpKind::Ioc, OpKind::Cancel, OpKind::Modify];

    /// Name for tables.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Limit => "limit",
            OpKind::Ioc => "ioc",
            OpKind::Cancel => "cancel",
            OpKind::Modify => "modify",
        }
    }

    /// Index into per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A generated workload: a warm-up prefix (not measured) and the measured commands.
pub struct Workload {
    /// What it is.
    pub kind: WorkloadKind,
    /// Commands that build the initial book.
    pub warmup: Vec<BookCommand>,
    /// Measured commands and their kinds.
    pub commands: Vec<(OpKind, BookCommand)>,
}

struct Live {
    orders: Vec<(OrderId, AccountId, Side, Price, Qty)>,
    position: FxHashMap<OrderId, usize>,
}

impl Live {
    fn remove(&mut self, id: OrderId) {
        if let Some(at) = self.position.remove(&id) {
            self.orders.swap_remove(at);
            if let Some(moved) = self.orders.get(at) {
                self.position.insert(moved.0, at);
            }
        }
    }

    fn track(&mut self, book: &OrderBook, events: &[BookEvent]) {
        for event in events {
            let id = match *event {
                BookEvent::Trade {
                    resting, aggressor, ..
                } => {
                    self.refresh(book, resting);
                    aggressor
                }
                BookEvent::Cancelled { id, .. }
                | BookEvent::Expired { id, .. }
                | BookEvent::Restated { id, .. }
                | BookEvent::Accepted { id, .. } => id,
                _ => continue,
            };
            self.refresh(book, id);
        }
    }

    fn refresh(&mut self, book: &OrderBook, id: OrderId) {
        match book.order(id) {
            Some(order) => {
                let entry = (
                    id,
                    order.account,
                    order.side,
                    order.price,
                    order.visible + order.hidden,
                );
                match self.position.get(&id) {
                    Some(&at) => self.orders[at] = entry,
                    None => {
                        self.position.insert(id, self.orders.len());
                        self.orders.push(entry);
                    }
                }
            }
            None => self.remove(id),
        }
    }
}

/// Generates `n_ops` measured commands of `kind` from `seed`.
///
/// # Panics
/// If the default intraday rules are invalid (a bug).
pub fn generate(kind: WorkloadKind, n_ops: usize, seed: u64) -> Workload {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rules = MarketRules::intraday_default();
    let mut book = OrderBook::new(rules, kind.book_config()).expect("default rules are valid");
    let mut live = Live {
        orders: Vec::new(),
        position: FxHashMap::default(),
    };
    let mut events = Vec::new();
    let mut next_id = 1u64;
    let mid = 5_000i64;
    let half = kind.half_range_ticks();
    let n_accounts = 200u32;

    let new_order = |rng: &mut ChaCha8Rng, tif: TimeInForce, next_id: &mut u64| {
        let side = if rng.random_bool(0.5) {
            Side::Buy
        } else {
            Side::Sell
        };
        let offset = match tif {
            // Resting orders sit on their own side of the mid; a few cross.
            TimeInForce::Gtc => rng.random_range(-2..=half),
            _ => -rng.random_range(0..=half / 8),
        };
        let price = match side {
            Side::Buy => mid - offset,
            Side::Sell => mid + offset,
        };
        let qty = match tif {
            TimeInForce::Gtc => rng.random_range(1..=50),
            _ => rng.random_range(1..=200),
        };
        let id = OrderId(*next_id);
        *next_id += 1;
        NewOrder {
            id,
            account: AccountId(rng.random_range(1..=n_accounts)),
            side,
            price: Price(price),
            qty: Qty(qty),
            time_in_force: tif,
            post_only: false,
            peak: None,
            stp: StpMode::CancelResting,
        }
    };

    let mut warmup = Vec::with_capacity(kind.live_target());
    while live.orders.len() < kind.live_target() {
        let mut order = new_order(&mut rng, TimeInForce::Gtc, &mut next_id);
        // Warm-up orders never cross, so the book fills to the target.
        order.price = match order.side {
            Side::Buy => Price(mid - rng.random_range(1..=half)),
            Side::Sell => Price(mid + rng.random_range(1..=half)),
        };
        let command = BookCommand::Submit(order);
        events.clear();
        book.apply(&command, &mut events);
        live.track(&book, &events);
        warmup.push(command);
    }

    let (p_limit, p_ioc, p_cancel) = match kind {
        WorkloadKind::ExchangeCore | WorkloadKind::DeepBook => (0.09, 0.03, 0.06),
        WorkloadKind::MatchingHeavy => (0.40, 0.40, 0.10),
    };
    let mut commands = Vec::with_capacity(n_ops);
    while commands.len() < n_ops {
        let draw: f64 = rng.random();
        let low = live.orders.len() < kind.live_target() * 9 / 10;
        let (op, command) = if draw < p_limit || (low && draw < p_limit + p_ioc + p_cancel) {
            (
                OpKind::Limit,
                BookCommand::Submit(new_order(&mut rng, TimeInForce::Gtc, &mut next_id)),
            )
        } else if draw < p_limit + p_ioc {
            (
                OpKind::Ioc,
                BookCommand::Submit(new_order(&mut rng, TimeInForce::Ioc, &mut next_id)),
            )
        } else if live.orders.is_empty() {
            continue;
        } else if draw < p_limit + p_ioc + p_cancel {
            let (id, account, ..) = live.orders[rng.random_range(0..live.orders.len())];
            (OpKind::Cancel, BookCommand::Cancel { id, account })
        } else {
            let (id, account, side, price, qty) =
                live.orders[rng.random_range(0..live.orders.len())];
            // Move by a few ticks, or shrink: the usual market-maker requote.
            let (new_price, new_qty) = if rng.random_bool(0.8) || qty.0 == 1 {
                let step = rng.random_range(1..=3) * if rng.random_bool(0.5) { 1 } else { -1 };
                let moved = (price.0 + step).clamp(mid - half - 50, mid + half + 50);
                (Price(if moved == price.0 { moved + 1 } else { moved }), qty)
            } else {
                (price, Qty(rng.random_range(1..qty.0)))
            };
            let _ = side;
            (
                OpKind::Modify,
                BookCommand::Modify {
                    id,
                    account,
                    price: new_price,
                    qty: new_qty,
                },
            )
        };
        events.clear();
        book.apply(&command, &mut events);
        live.track(&book, &events);
        commands.push((op, command));
    }
    Workload {
        kind,
        warmup,
        commands,
    }
}
