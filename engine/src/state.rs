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
//! # Block families
//! Block families ([`crate::family`]) wait for their gate in `families`, by gate time.
//! When a due auction gate has families, the products those families name clear
//! together by [`clear_day_with_families`] (in product id order: each product's
//! `AuctionCleared` and `AuctionAward` events, then one `FamilyCleared` per family in
//! (account, family) order) before any other auction of that gate, which clears alone as
//! before. Should the joint clearing fail (it cannot with validated input, but a panic
//! inside the sequencer is not an answer), every product of the day clears alone and
//! every family is reported rejected. Families are part of the snapshot.
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
//! - Every stored family names only open auctions of its gate, all under one set of
//!   rules shared by the gate's families, within the family limits.
//!
//! [`ShardState::check_invariants`] asserts all of the above.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use voltex_market::auction::{Auction, AuctionConfig, BidCurve, CurveKind, CurvePoint};
use voltex_market::block::{BlockFamily, clear_day_with_families};
use voltex_market::book::{BookCommand, BookConfig, BookEvent, BookSnapshot, OrderBook, Phase};
use voltex_market::time::NANOS_PER_SECOND;
use voltex_market::{AccountId, DeliveryPeriod, MarketRules, ProductId, Side, UtcNanos};

use crate::auction::{
    AUCTION_CURVES_PER_PRODUCT_MAX, AuctionOutcome, AuctionSnapshot, CurveReject, ProductAuction,
};
use crate::command::{CommandKind, EngineCommand, EngineEvent, EngineReject, EventKind};
use crate::family::{
    BLOCKS_PER_FAMILY_MAX, EXCLUSIVE_GROUP_FAMILIES_MAX, FAMILIES_PER_GATE_MAX,
    FAMILY_PRODUCTS_MAX, FAMILY_QTYS_MAX, FamilyRef, FamilyReject, StoredFamily,
};

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
    /// Open block families in (gate, account, family) order.
    pub families: Vec<StoredFamily>,
}

/// The open block families of each gate, by (account, family).
type FamiliesByGate = BTreeMap<UtcNanos, BTreeMap<(AccountId, FamilyRef), StoredFamily>>;

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
    families: FamiliesByGate,
    last_seq: u64,
    next_event_seq: u64,
    now: UtcNanos,
    book_events: Vec<BookEvent>,
}

/// Whether two auctions clear alike: equal rules but for the gate closure lead (the
/// products of one day share a gate with a lead of their own each).
fn same_clearing_rules(a: &MarketRules, b: &MarketRules) -> bool {
    let lead_free = |rules: &MarketRules| MarketRules {
        gate_closure_lead_s: 0,
        ..rules.clone()
    };
    lead_free(a) == lead_free(b)
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
            families: BTreeMap::new(),
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
            CommandKind::SubmitFamily {
                account,
                family,
                products,
                blocks,
                exclusive_group,
            } => self.submit_family(
                StoredFamily {
                    account: *account,
                    family: *family,
                    products: products.clone(),
                    blocks: blocks.clone(),
                    exclusive_group: *exclusive_group,
                },
                out,
            ),
            CommandKind::WithdrawFamily { account, family } => {
                self.withdraw_family(*account, *family, out);
            }
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
                (Some((gate, product)), _) => {
                    self.auction_gates.pop_first();
                    if let Some(families) = self.families.remove(&gate) {
                        self.clear_families(gate, families, out);
                    }
                    if self
                        .products
                        .get(&product)
                        .is_some_and(|listing| listing.auction.is_open())
                    {
                        self.clear_auction(product, out);
                    }
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
        self.emit_outcome(product, outcome, out);
    }

    fn emit_outcome(
        &mut self,
        product: ProductId,
        outcome: AuctionOutcome,
        out: &mut Vec<EngineEvent>,
    ) {
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

    /// Where `family` would be stored: its gate, if the shard takes it. The account's
    /// open family of the same name, which it replaces, does not count against the
    /// limits.
    fn check_family(&self, family: &StoredFamily) -> Result<UtcNanos, FamilyReject> {
        if family.products.is_empty() {
            return Err(FamilyReject::NoProducts);
        }
        if family.products.len() > FAMILY_PRODUCTS_MAX {
            return Err(FamilyReject::TooManyProducts);
        }
        if family.blocks.len() > BLOCKS_PER_FAMILY_MAX
            || StoredFamily::n_qtys(&family.blocks) > FAMILY_QTYS_MAX
        {
            return Err(FamilyReject::TooManyBlocks);
        }
        let mut seen = BTreeSet::new();
        let mut gate_and_rules: Option<(UtcNanos, &MarketRules)> = None;
        for product in &family.products {
            if !seen.insert(*product) {
                return Err(FamilyReject::DuplicateProduct);
            }
            let auction = &self
                .products
                .get(product)
                .ok_or(FamilyReject::UnknownProduct)?
                .auction;
            if !auction.is_open() {
                return Err(FamilyReject::GateClosed);
            }
            match gate_and_rules {
                None => gate_and_rules = Some((auction.gate_closure(), auction.rules())),
                Some((gate, _)) if gate != auction.gate_closure() => {
                    return Err(FamilyReject::GatesDiffer);
                }
                Some((_, rules)) if !same_clearing_rules(rules, auction.rules()) => {
                    return Err(FamilyReject::RulesDiffer);
                }
                Some(_) => {}
            }
        }
        let (gate, rules) = gate_and_rules.ok_or(FamilyReject::NoProducts)?;
        let config = crate::auction::auction_config(rules.clone());
        // Validates the blocks exactly as the clearing will read them.
        let mut day: Vec<ProductId> = family.products.clone();
        day.sort_unstable();
        family
            .to_block_family(&day, &config)
            .map_err(|error| FamilyReject::from_block_error(&error))?;
        let key = (family.account, family.family);
        let others = self.families.get(&gate);
        // Every family of a gate clears under one set of rules, so one other tells.
        let gate_rules_differ = others
            .and_then(|families| families.iter().find(|(other, _)| **other != key))
            .and_then(|(_, other)| other.products.first())
            .and_then(|other_first| self.products.get(other_first))
            .is_some_and(|listing| !same_clearing_rules(listing.auction.rules(), rules));
        if gate_rules_differ {
            return Err(FamilyReject::RulesDiffer);
        }
        let replacing = others.is_some_and(|families| families.contains_key(&key));
        let n_others = others.map_or(0, |families| families.len() - usize::from(replacing));
        if n_others >= FAMILIES_PER_GATE_MAX {
            return Err(FamilyReject::TooManyFamilies);
        }
        if let Some(group) = family.exclusive_group {
            let n_in_group = others.map_or(0, |families| {
                families
                    .values()
                    .filter(|other| {
                        other.account == family.account
                            && other.exclusive_group == Some(group)
                            && other.family != family.family
                    })
                    .count()
            });
            if n_in_group >= EXCLUSIVE_GROUP_FAMILIES_MAX {
                return Err(FamilyReject::ExclusiveGroupFull);
            }
        }
        Ok(gate)
    }

    /// The gate holding `account`'s open family `family`, if any.
    fn family_gate(&self, account: AccountId, family: FamilyRef) -> Option<UtcNanos> {
        self.families
            .iter()
            .find(|(_, families)| families.contains_key(&(account, family)))
            .map(|(gate, _)| *gate)
    }

    fn submit_family(&mut self, family: StoredFamily, out: &mut Vec<EngineEvent>) {
        let event_product = family.products.first().copied().unwrap_or(ProductId(0));
        let (account, name) = (family.account, family.family);
        match self.check_family(&family) {
            Ok(gate) => {
                let replaced = match self.family_gate(account, name) {
                    Some(old_gate) => {
                        self.remove_family(old_gate, account, name);
                        true
                    }
                    None => false,
                };
                let n_products = u32::try_from(family.products.len()).unwrap_or(u32::MAX);
                let n_blocks = u32::try_from(family.blocks.len()).unwrap_or(u32::MAX);
                self.families
                    .entry(gate)
                    .or_default()
                    .insert((account, name), family);
                self.emit(
                    event_product,
                    EventKind::FamilyAccepted {
                        account,
                        family: name,
                        n_products,
                        n_blocks,
                        replaced,
                    },
                    out,
                );
            }
            Err(reason) => self.emit(
                event_product,
                EventKind::FamilyRejected {
                    account,
                    family: name,
                    reason,
                },
                out,
            ),
        }
    }

    fn remove_family(
        &mut self,
        gate: UtcNanos,
        account: AccountId,
        family: FamilyRef,
    ) -> Option<StoredFamily> {
        let families = self.families.get_mut(&gate)?;
        let removed = families.remove(&(account, family));
        if families.is_empty() {
            self.families.remove(&gate);
        }
        removed
    }

    fn withdraw_family(
        &mut self,
        account: AccountId,
        family: FamilyRef,
        out: &mut Vec<EngineEvent>,
    ) {
        let removed = self
            .family_gate(account, family)
            .and_then(|gate| self.remove_family(gate, account, family));
        match removed {
            Some(stored) => {
                let product = stored.products.first().copied().unwrap_or(ProductId(0));
                self.emit(product, EventKind::FamilyWithdrawn { account, family }, out);
            }
            None => self.emit(
                ProductId(0),
                EventKind::FamilyRejected {
                    account,
                    family,
                    reason: FamilyReject::NoSuchFamily,
                },
                out,
            ),
        }
    }

    /// Clears the products `families` name, at their gate `gate`, together with them;
    /// see the module documentation.
    fn clear_families(
        &mut self,
        gate: UtcNanos,
        families: BTreeMap<(AccountId, FamilyRef), StoredFamily>,
        out: &mut Vec<EngineEvent>,
    ) {
        let day: Vec<ProductId> = families
            .values()
            .flat_map(|family| family.products.iter().copied())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|product| {
                self.products
                    .get(product)
                    .is_some_and(|listing| listing.auction.is_open())
            })
            .collect();
        for product in &day {
            self.auction_gates.remove(&(gate, *product));
        }
        let families: Vec<StoredFamily> = families.into_values().collect();
        let clearing = self.clear_day(&day, &families);
        match clearing {
            Ok(clearing) => {
                for (product, result) in day.iter().zip(&clearing.periods) {
                    let Some(listing) = self.products.get_mut(product) else {
                        continue;
                    };
                    let outcome = listing.auction.settle(result).clone();
                    self.emit_outcome(*product, outcome, out);
                }
                for (family, outcome) in families.iter().zip(&clearing.families) {
                    let surplus = outcome.surplus.map(|surplus| {
                        i64::try_from(surplus).unwrap_or(if surplus < 0 {
                            i64::MIN
                        } else {
                            i64::MAX
                        })
                    });
                    self.emit_family_cleared(family, outcome.accepted, surplus, out);
                }
            }
            Err(error) => {
                tracing::error!(%error, gate = gate.0, "block families could not clear; their products clear alone and every family is rejected");
                for product in &day {
                    self.clear_auction(*product, out);
                }
                for family in &families {
                    self.emit_family_cleared(family, false, None, out);
                }
            }
        }
    }

    /// The joint clearing of `day` (open auctions of one gate, by id) with `families`.
    fn clear_day(
        &self,
        day: &[ProductId],
        families: &[StoredFamily],
    ) -> Result<voltex_market::block::DayClearing, String> {
        let first = day.first().ok_or("no open product to clear")?;
        let listing = self.products.get(first).ok_or("unknown product")?;
        let base = listing.auction.config();
        // Room for every family's steps beside the curves.
        let config = AuctionConfig {
            curves_max: AUCTION_CURVES_PER_PRODUCT_MAX
                + FAMILIES_PER_GATE_MAX * BLOCKS_PER_FAMILY_MAX,
            ..base.clone()
        };
        let mut curves: Vec<Vec<BidCurve>> = Vec::with_capacity(day.len());
        for product in day {
            let listing = self.products.get(product).ok_or("unknown product")?;
            if !same_clearing_rules(listing.auction.rules(), &config.rules) {
                return Err("the day's auctions have different rules".into());
            }
            curves.push(listing.auction.curves().cloned().collect());
        }
        let block_families: Vec<BlockFamily> = families
            .iter()
            .map(|family| family.to_block_family(day, &config))
            .collect::<Result<_, _>>()
            .map_err(|error| error.to_string())?;
        let mut auction = Auction::new(config).map_err(|error| error.to_string())?;
        clear_day_with_families(&mut auction, &curves, &block_families)
            .map_err(|error| error.to_string())
    }

    fn emit_family_cleared(
        &mut self,
        family: &StoredFamily,
        accepted: bool,
        surplus_ticks_x_lots: Option<i64>,
        out: &mut Vec<EngineEvent>,
    ) {
        let product = family.products.first().copied().unwrap_or(ProductId(0));
        self.emit(
            product,
            EventKind::FamilyCleared {
                account: family.account,
                family: family.family,
                accepted,
                surplus_ticks_x_lots,
            },
            out,
        );
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
            families: self
                .families
                .values()
                .flat_map(|families| families.values().cloned())
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
        for family in &snapshot.families {
            // The same checks as a submission: open auctions of one gate and rules,
            // valid blocks, within the limits.
            let gate = state
                .check_family(family)
                .map_err(|_| RestoreError::Inconsistent("a stored block family is invalid"))?;
            if state.family_gate(family.account, family.family).is_some() {
                return Err(RestoreError::Inconsistent(
                    "two block families of one account and name",
                ));
            }
            state
                .families
                .entry(gate)
                .or_default()
                .insert((family.account, family.family), family.clone());
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
        for (gate, families) in &self.families {
            assert!(!families.is_empty(), "no gate without families is kept");
            assert!(
                families.len() <= FAMILIES_PER_GATE_MAX,
                "at most FAMILIES_PER_GATE_MAX families per gate"
            );
            let mut gate_rules: Option<&MarketRules> = None;
            let mut groups: BTreeMap<(AccountId, u32), usize> = BTreeMap::new();
            for ((account, name), family) in families {
                assert_eq!((family.account, family.family), (*account, *name));
                assert!(
                    !family.products.is_empty() && family.products.len() <= FAMILY_PRODUCTS_MAX,
                    "a family names 1..=FAMILY_PRODUCTS_MAX products"
                );
                assert!(StoredFamily::n_qtys(&family.blocks) <= FAMILY_QTYS_MAX);
                for product in &family.products {
                    let auction = &self.products[product].auction;
                    assert!(auction.is_open(), "a family names only open auctions");
                    assert_eq!(auction.gate_closure(), *gate, "of its own gate");
                    let rules = gate_rules.get_or_insert(auction.rules());
                    assert!(
                        same_clearing_rules(rules, auction.rules()),
                        "one set of clearing rules per gate"
                    );
                }
                if let Some(group) = family.exclusive_group {
                    *groups.entry((*account, group)).or_default() += 1;
                }
            }
            assert!(
                groups.values().all(|n| *n <= EXCLUSIVE_GROUP_FAMILIES_MAX),
                "at most EXCLUSIVE_GROUP_FAMILIES_MAX families per exclusive group"
            );
        }
        if let Some(&(gate, _)) = self.auction_gates.first() {
            assert!(gate > self.now, "no open auction is past its gate closure");
        }
    }
}
