//! The state of one shard: its products' books, the engine time and the sequence
//! counters, and the pure, deterministic transition [`ShardState::apply`].
//!
//! `apply` is the only way the state changes, and it depends on nothing but the state
//! and the command: no clock, no randomness, no I/O, deterministic iteration
//! (`BTreeMap`/`BTreeSet`). That is what makes snapshot + journal replay rebuild the
//! same state, and what [`ShardState::state_hash`] checks.
//!
//! # Gate closure
//! Books do not know time. Each product's gate closes at
//! `period.start - rules.gate_closure_lead_s`. Before applying any command, `apply`
//! first advances the engine time to `max(time, command.now)` and closes, in order of
//! (gate time, product id), every open book whose gate time is `<= time`, by applying
//! [`BookCommand::Close`] (its resting orders expire). So a command that arrives after
//! gate closure reaches a closed book and is rejected with `Closed`, and an
//! `AdvanceTime` command closes books even when nobody trades.
//!
//! # Day-ahead auctions
//! Every product also holds a day-ahead call auction ([`crate::auction`]) whose gate is
//! `period.start - auction_rules.gate_closure_lead_s` (the rules its listing named).
//! `SubmitCurve` / `WithdrawCurve` change its curves while it is open; the same time step that closes due books clears
//! every auction whose gate is `<= time`. Due gates are handled in order of gate time,
//! an auction before a book at the same instant, then by product id, so the events of
//! a clearing (`AuctionCleared`, then one `AuctionAward` per account and side) come out
//! at the same place on every replay. Curves, auction phase and outcome are part of
//! the snapshot and so of [`ShardState::state_hash`].
//!
//! # Invariants
//! - `last_seq` is the seq of the last applied command; `apply` takes exactly
//!   `last_seq + 1` (commands are applied once, in order, without gaps).
//! - Event sequence numbers are `1, 2, 3, ...` without gaps (`next_event_seq` is the next).
//! - Engine time never decreases.
//! - `open_gates` holds exactly the (gate time, id) of every product whose book is not
//!   closed, and when `apply` returns every such gate time is later than the engine time.
//! - Every book keeps its own invariants (`OrderBook::check_invariants`).
//! - `auction_gates` holds exactly the (gate time, id) of every open auction, and when
//!   `apply` returns every such gate time is later than the engine time; every auction
//!   keeps its own invariants (`ProductAuction::check_invariants`).
//! - At most `products_max` products.
//!
//! [`ShardState::check_invariants`] asserts all of the above.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use voltex_market::auction::{CurveKind, CurvePoint};
use voltex_market::book::{BookCommand, BookConfig, BookEvent, BookSnapshot, OrderBook, Phase};
use voltex_market::time::NANOS_PER_SECOND;
use voltex_market::{AccountId, DeliveryPeriod, MarketRules, ProductId, Side, UtcNanos};

use crate::auction::{AuctionSnapshot, CurveReject, ProductAuction};
use crate::command::{CommandKind, EngineCommand, EngineEvent, EngineReject, EventKind};

/// Limits of one shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardConfig {
    /// Most products (books) the shard holds, closed ones included.
    pub products_max: usize,
    /// Configuration of every book (capacity is reserved per book up front).
    pub book: BookConfig,
}

impl Default for ShardConfig {
    fn default() -> ShardConfig {
        ShardConfig {
            products_max: 256,
            book: BookConfig::default(),
        }
    }
}

/// Errors restoring a shard from a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// A book snapshot that the book refuses.
    #[error("product {product:?}: {source}")]
    Book {
        /// The product.
        product: ProductId,
        /// The book's reason.
        source: voltex_market::book::SnapshotError,
    },
    /// The snapshot was taken with another book configuration.
    #[error("snapshot taken with another configuration: {0}")]
    ConfigMismatch(&'static str),
    /// The snapshot breaks a shard invariant.
    #[error("inconsistent shard snapshot: {0}")]
    Inconsistent(&'static str),
}

/// One product in a shard snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductSnapshot {
    /// Identity.
    pub product: ProductId,
    /// Delivery period.
    pub period: DeliveryPeriod,
    /// Market rules.
    pub rules: MarketRules,
    /// The book.
    pub book: BookSnapshot,
    /// The day-ahead auction.
    pub auction: AuctionSnapshot,
}

/// Everything needed to rebuild a [`ShardState`] exactly. Its postcard encoding is
/// the canonical serialization that [`ShardState::state_hash`] hashes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSnapshot {
    /// Seq of the last applied command.
    pub last_seq: u64,
    /// Next event sequence number.
    pub next_event_seq: u64,
    /// Engine time.
    pub now: UtcNanos,
    /// `BookConfig::orders_max` it was taken with.
    pub orders_max: u64,
    /// `BookConfig::emit_depth` it was taken with.
    pub emit_depth: bool,
    /// Products in id order.
    pub products: Vec<ProductSnapshot>,
}

#[derive(Clone, Debug)]
struct Listing {
    period: DeliveryPeriod,
    gate_closure: UtcNanos,
    book: OrderBook,
    auction: ProductAuction,
}

/// The books of one shard and the engine's clock and counters.
#[derive(Clone, Debug)]
pub struct ShardState {
    config: ShardConfig,
    products: BTreeMap<ProductId, Listing>,
    open_gates: BTreeSet<(UtcNanos, ProductId)>,
    auction_gates: BTreeSet<(UtcNanos, ProductId)>,
    last_seq: u64,
    next_event_seq: u64,
    now: UtcNanos,
    book_events: Vec<BookEvent>,
}

/// When trading in `period` closes under `rules`.
pub fn gate_closure(period: &DeliveryPeriod, rules: &MarketRules) -> UtcNanos {
    let lead_nanos = rules.gate_closure_lead_s.saturating_mul(NANOS_PER_SECOND);
    UtcNanos(period.start().0.saturating_sub(lead_nanos))
}

impl ShardState {
    /// An empty shard: no products, `last_seq` 0, engine time `i64::MIN` (before any
    /// command).
    pub fn new(config: ShardConfig) -> ShardState {
        ShardState {
            config,
            products: BTreeMap::new(),
            open_gates: BTreeSet::new(),
            auction_gates: BTreeSet::new(),
            last_seq: 0,
            next_event_seq: 1,
            now: UtcNanos(i64::MIN),
            book_events: Vec::new(),
        }
    }

    /// Seq of the last applied command (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The event sequence number the next event will get.
    pub fn next_event_seq(&self) -> u64 {
        self.next_event_seq
    }

    /// Engine time: the largest `now` of any applied command.
    pub fn now(&self) -> UtcNanos {
        self.now
    }

    /// The shard's configuration.
    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// Number of products (open and closed).
    pub fn n_products(&self) -> usize {
        self.products.len()
    }

    /// A product's book, for reads (market data, tests).
    pub fn book(&self, product: ProductId) -> Option<&OrderBook> {
        self.products.get(&product).map(|listing| &listing.book)
    }

    /// A product's day-ahead auction, for reads (tests).
    pub fn auction(&self, product: ProductId) -> Option<&ProductAuction> {
        self.products.get(&product).map(|listing| &listing.auction)
    }

    /// A product's delivery period.
    pub fn period(&self, product: ProductId) -> Option<DeliveryPeriod> {
        self.products.get(&product).map(|listing| listing.period)
    }

    /// Applies command `seq`, appending the events it caused to `out` (never clears).
    ///
    /// # Panics
    /// If `seq != last_seq + 1` (a sequencing bug), or if a book breaks an invariant.
    pub fn apply(&mut self, seq: u64, command: &EngineCommand, out: &mut Vec<EngineEvent>) {
        assert_eq!(
            seq,
            self.last_seq + 1,
            "commands are applied in order without gaps"
        );
        self.last_seq = seq;
        self.now = self.now.max(command.now);
        self.close_due_gates(out);
        match &command.kind {
            CommandKind::AddProduct { .. } | CommandKind::ListProduct { .. } => {
                if let Some(terms) = command.kind.listing() {
                    self.add_product(
                        terms.product,
                        terms.period,
                        terms.rules,
                        &terms.auction_rules,
                        out,
                    );
                }
            }
            CommandKind::Book { product, command } => self.apply_book(*product, command, out),
            CommandKind::AdvanceTime => {}
            CommandKind::SubmitCurve {
                product,
                account,
                side,
                kind,
                points,
            } => self.submit_curve(*product, *account, *side, *kind, points, out),
            CommandKind::WithdrawCurve {
                product,
                account,
                side,
            } => self.withdraw_curve(*product, *account, *side, out),
        }
    }

    fn emit(&mut self, product: ProductId, kind: EventKind, out: &mut Vec<EngineEvent>) {
        out.push(EngineEvent {
            event_seq: self.next_event_seq,
            command_seq: self.last_seq,
            now: self.now,
            product,
            kind,
        });
        self.next_event_seq += 1;
    }

    fn close_due_gates(&mut self, out: &mut Vec<EngineEvent>) {
        let now = self.now;
        let due = |gates: &BTreeSet<(UtcNanos, ProductId)>| {
            gates.first().copied().filter(|(gate, _)| *gate <= now)
        };
        loop {
            match (due(&self.auction_gates), due(&self.open_gates)) {
                (None, None) => break,
                (Some(auction), Some(book)) if book.0 < auction.0 => {
                    self.open_gates.pop_first();
                    self.apply_to_book(book.1, &BookCommand::Close, out);
                }
                (Some((_, product)), _) => {
                    self.auction_gates.pop_first();
                    self.clear_auction(product, out);
                }
                (None, Some((_, product))) => {
                    self.open_gates.pop_first();
                    self.apply_to_book(product, &BookCommand::Close, out);
                }
            }
        }
    }

    fn clear_auction(&mut self, product: ProductId, out: &mut Vec<EngineEvent>) {
        let Some(listing) = self.products.get_mut(&product) else {
            return;
        };
        let outcome = listing.auction.clear().clone();
        self.emit(
            product,
            EventKind::AuctionCleared {
                price: outcome.price,
                volume: outcome.volume,
                n_curves: outcome.n_curves,
            },
            out,
        );
        for award in outcome.awards {
            self.emit(
                product,
                EventKind::AuctionAward {
                    account: award.account,
                    side: award.side,
                    qty: award.qty,
                },
                out,
            );
        }
    }

    fn submit_curve(
        &mut self,
        product: ProductId,
        account: AccountId,
        side: Side,
        kind: CurveKind,
        points: &[CurvePoint],
        out: &mut Vec<EngineEvent>,
    ) {
        let verdict = match self.products.get_mut(&product) {
            None => Err(CurveReject::UnknownProduct),
            Some(listing) => listing.auction.submit(account, side, kind, points),
        };
        match verdict {
            Ok(submitted) => {
                let n_points = u32::try_from(points.len()).unwrap_or(u32::MAX);
                self.emit(
                    product,
                    EventKind::CurveAccepted {
                        account,
                        side,
                        kind,
                        n_points,
                        replaced: submitted.replaced,
                    },
                    out,
                );
                for (point_idx, point) in (0_u32..).zip(points) {
                    self.emit(
                        product,
                        EventKind::CurvePointAccepted {
                            account,
                            side,
                            point_idx,
                            price: point.price,
                            qty: point.qty,
                        },
                        out,
                    );
                }
            }
            Err(reason) => self.emit(
                product,
                EventKind::CurveRejected {
                    account,
                    side,
                    reason,
                },
                out,
            ),
        }
    }

    fn withdraw_curve(
        &mut self,
        product: ProductId,
        account: AccountId,
        side: Side,
        out: &mut Vec<EngineEvent>,
    ) {
        let verdict = match self.products.get_mut(&product) {
            None => Err(CurveReject::UnknownProduct),
            Some(listing) => listing.auction.withdraw(account, side),
        };
        let kind = match verdict {
            Ok(()) => EventKind::CurveWithdrawn { account, side },
            Err(reason) => EventKind::CurveRejected {
                account,
                side,
                reason,
            },
        };
        self.emit(product, kind, out);
    }

    fn add_product(
        &mut self,
        product: ProductId,
        period: DeliveryPeriod,
        rules: &MarketRules,
        auction_rules: &MarketRules,
        out: &mut Vec<EngineEvent>,
    ) {
        let gate = gate_closure(&period, rules);
        let verdict = if self.products.contains_key(&product) {
            Err(EngineReject::DuplicateProduct)
        } else if self.products.len() >= self.config.products_max {
            Err(EngineReject::ShardFull)
        } else if gate <= self.now {
            Err(EngineReject::GateClosurePassed)
        } else {
            OrderBook::new(rules.clone(), self.config.book)
                .ok()
                .zip(ProductAuction::new(&period, self.now, auction_rules.clone()).ok())
                .ok_or(EngineReject::InvalidRules)
        };
        match verdict {
            Ok((book, auction)) => {
                let auction_gate_closure = auction.gate_closure();
                if auction.is_open() {
                    self.auction_gates.insert((auction.gate_closure(), product));
                }
                self.products.insert(
                    product,
                    Listing {
                        period,
                        gate_closure: gate,
                        book,
                        auction,
                    },
                );
                self.open_gates.insert((gate, product));
                self.emit(
                    product,
                    EventKind::ProductAdded {
                        period,
                        auction_gate_closure,
                    },
                    out,
                );
            }
            Err(reason) => self.emit(product, EventKind::Rejected { reason }, out),
        }
    }

    fn apply_book(
        &mut self,
        product: ProductId,
        command: &BookCommand,
        out: &mut Vec<EngineEvent>,
    ) {
        let Some(listing) = self.products.get(&product) else {
            self.emit(
                product,
                EventKind::Rejected {
                    reason: EngineReject::UnknownProduct,
                },
                out,
            );
            return;
        };
        let gate = listing.gate_closure;
        self.apply_to_book(product, command, out);
        if matches!(command, BookCommand::Close) {
            // Closed by hand before its gate: it no longer needs closing by time.
            self.open_gates.remove(&(gate, product));
        }
    }

    fn apply_to_book(
        &mut self,
        product: ProductId,
        command: &BookCommand,
        out: &mut Vec<EngineEvent>,
    ) {
        let mut book_events = std::mem::take(&mut self.book_events);
        book_events.clear();
        if let Some(listing) = self.products.get_mut(&product) {
            listing.book.apply(command, &mut book_events);
        }
        for event in book_events.drain(..) {
            self.emit(product, EventKind::Book(event), out);
        }
        self.book_events = book_events;
    }

    /// Everything needed to rebuild this state exactly.
    pub fn snapshot(&self) -> ShardSnapshot {
        ShardSnapshot {
            last_seq: self.last_seq,
            next_event_seq: self.next_event_seq,
            now: self.now,
            orders_max: self.config.book.orders_max as u64,
            emit_depth: self.config.book.emit_depth,
            products: self
                .products
                .iter()
                .map(|(product, listing)| ProductSnapshot {
                    product: *product,
                    period: listing.period,
                    rules: listing.book.rules().clone(),
                    book: listing.book.snapshot(),
                    auction: listing.auction.snapshot(),
                })
                .collect(),
        }
    }

    /// Rebuilds a state from a snapshot taken with the same configuration.
    ///
    /// # Errors
    /// Another book configuration, a book snapshot the book refuses, or a snapshot
    /// that breaks a shard invariant.
    pub fn from_snapshot(
        config: ShardConfig,
        snapshot: &ShardSnapshot,
    ) -> Result<ShardState, RestoreError> {
        if snapshot.orders_max != config.book.orders_max as u64 {
            return Err(RestoreError::ConfigMismatch("orders_max differs"));
        }
        if snapshot.emit_depth != config.book.emit_depth {
            return Err(RestoreError::ConfigMismatch("emit_depth differs"));
        }
        if snapshot.products.len() > config.products_max {
            return Err(RestoreError::ConfigMismatch(
                "more products than products_max",
            ));
        }
        if snapshot.next_event_seq == 0 {
            return Err(RestoreError::Inconsistent(
                "event sequence numbers start at 1",
            ));
        }
        let mut state = ShardState::new(config);
        state.last_seq = snapshot.last_seq;
        state.next_event_seq = snapshot.next_event_seq;
        state.now = snapshot.now;
        for product in &snapshot.products {
            let book = OrderBook::from_snapshot(product.rules.clone(), config.book, &product.book)
                .map_err(|source| RestoreError::Book {
                    product: product.product,
                    source,
                })?;
            let gate = gate_closure(&product.period, &product.rules);
            if book.phase() != Phase::Closed {
                if gate <= state.now {
                    return Err(RestoreError::Inconsistent(
                        "open book past its gate closure",
                    ));
                }
                state.open_gates.insert((gate, product.product));
            }
            let auction = ProductAuction::from_snapshot(&product.period, &product.auction)
                .map_err(RestoreError::Inconsistent)?;
            if auction.is_open() {
                if auction.gate_closure() <= state.now {
                    return Err(RestoreError::Inconsistent(
                        "open auction past its gate closure",
                    ));
                }
                state
                    .auction_gates
                    .insert((auction.gate_closure(), product.product));
            }
            let listing = Listing {
                period: product.period,
                gate_closure: gate,
                book,
                auction,
            };
            if state.products.insert(product.product, listing).is_some() {
                return Err(RestoreError::Inconsistent("duplicate product id"));
            }
        }
        Ok(state)
    }

    /// The canonical serialization that [`ShardState::state_hash`] hashes: the postcard
    /// encoding of [`ShardState::snapshot`].
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Serializing plain data into a Vec cannot fail.
        postcard::to_allocvec(&self.snapshot()).expect("shard snapshot serializes")
    }

    /// blake3 of the canonical serialization of all books, the time and the counters.
    /// Equal hashes mean equal states, whatever path (live, replay, snapshot) led there.
    pub fn state_hash(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_derive_key("voltex-engine shard state v2");
        hasher.update(&self.canonical_bytes());
        *hasher.finalize().as_bytes()
    }

    /// Asserts the invariants in the module docs.
    ///
    /// # Panics
    /// On any broken invariant (a bug).
    pub fn check_invariants(&self) {
        assert!(
            self.next_event_seq >= 1,
            "event sequence numbers start at 1"
        );
        assert!(
            self.products.len() <= self.config.products_max,
            "at most products_max"
        );
        let mut expected_open = BTreeSet::new();
        let mut expected_auctions = BTreeSet::new();
        for (product, listing) in &self.products {
            listing.book.check_invariants();
            listing.auction.check_invariants();
            if listing.book.phase() != Phase::Closed {
                expected_open.insert((listing.gate_closure, *product));
            }
            if listing.auction.is_open() {
                expected_auctions.insert((listing.auction.gate_closure(), *product));
            }
        }
        assert_eq!(
            self.open_gates, expected_open,
            "open_gates lists exactly the open books"
        );
        if let Some(&(gate, _)) = self.open_gates.first() {
            assert!(gate > self.now, "no open book is past its gate closure");
        }
        assert_eq!(
            self.auction_gates, expected_auctions,
            "auction_gates lists exactly the open auctions"
        );
        if let Some(&(gate, _)) = self.auction_gates.first() {
            assert!(gate > self.now, "no open auction is past its gate closure");
        }
    }
}
