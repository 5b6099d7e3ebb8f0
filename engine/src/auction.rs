//! The day-ahead call auction of each product inside a shard: bid curves collected
//! until the product's day-ahead gate closure, then cleared once at a uniform price by
//! [`voltex_market::auction::Auction`].
//!
//! This module owns the auction's named limits, the typed reasons a curve command is
//! refused ([`CurveReject`]), and the per-product state the shard keeps
//! ([`ProductAuction`]) with its snapshot form. [`crate::state::ShardState::apply`]
//! drives it: `SubmitCurve` / `WithdrawCurve` commands change the curves while the
//! auction is open, and the first command whose time reaches the gate clears it, exactly
//! like a book's gate closure, so replaying the journal clears it at the same point with
//! the same result.
//!
//! # Rules
//! - Each product's auction has its own [`MarketRules`], named by the command that
//!   listed the product (`ListProduct`; the older `AddProduct` means
//!   [`MarketRules::day_ahead_default`]: tick 0.01 EUR/MWh, -500..+4000 EUR/MWh, gate
//!   12 h before delivery). They are journaled with the listing and kept in snapshots,
//!   so a replay clears with the rules the auction was opened with, whatever the
//!   server's configuration says today.
//! - One curve per (account, side) and product; a new submission replaces it whole.
//! - Curves are accepted while `now < period.start - rules.gate_closure_lead_s`; a
//!   product listed after that instant holds no auction (curves are refused with
//!   [`CurveReject::GateClosed`], and no clearing happens).
//! - Prices are checked against the rules' tick and limits and quantities against
//!   their `qty_max`; see [`voltex_market::auction`] for the curve shapes and the
//!   clearing rule.
//! - Limits: at most [`AUCTION_CURVES_PER_PRODUCT_MAX`] curves per product and
//!   [`AUCTION_POINTS_PER_CURVE_MAX`] points per curve. Beyond them a curve is refused;
//!   nothing is truncated.
//!
//! # Invariants
//! - An open auction has no outcome; a cleared one has an outcome and takes no curves;
//!   one never held (product listed after its gate) has neither curves nor outcome.
//! - Every stored curve is valid under the auction's own [`auction_config`] and there
//!   are at most
//!   [`AUCTION_CURVES_PER_PRODUCT_MAX`] of them.
//! - The outcome is [`Auction::clear_period`] of the curves stored at the gate, so it
//!   depends only on the journaled commands.

use std::collections::BTreeMap;

use crate::state::gate_closure;
use serde::{Deserialize, Serialize};
use voltex_market::auction::{
    Auction, AuctionConfig, BidCurve, ClearingResult, CurveError, CurveKind, CurvePoint,
};
use voltex_market::rules::RuleError;
use voltex_market::{AccountId, DeliveryPeriod, MarketRules, Price, Qty, Side, UtcNanos};

/// Most bid curves one product's auction holds (each account may hold one per side).
pub const AUCTION_CURVES_PER_PRODUCT_MAX: usize = 256;

/// Most points in one bid curve. With it every `SubmitCurve` command encodes well
/// inside the journal's `ENTRY_LEN_MAX`.
pub const AUCTION_POINTS_PER_CURVE_MAX: usize = 64;

/// The configuration an auction with `rules` clears with: those rules and the limits
/// above.
pub fn auction_config(rules: MarketRules) -> AuctionConfig {
    AuctionConfig {
        rules,
        points_max: AUCTION_POINTS_PER_CURVE_MAX,
        curves_max: AUCTION_CURVES_PER_PRODUCT_MAX,
    }
}

/// Why a curve command was refused. A refused command changes no curve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum CurveReject {
    /// The product is not listed.
    #[error("unknown product")]
    UnknownProduct,
    /// The product's day-ahead gate has closed (or it was listed after it).
    #[error("the day-ahead gate is closed for this product")]
    GateClosed,
    /// A new curve beyond [`AUCTION_CURVES_PER_PRODUCT_MAX`].
    #[error("the product's auction holds the maximum number of curves")]
    TooManyCurves,
    /// Withdrawal of a curve that is not there.
    #[error("no such curve")]
    NoSuchCurve,
    /// A curve without points.
    #[error("a bid curve needs at least one point")]
    Empty,
    /// More than [`AUCTION_POINTS_PER_CURVE_MAX`] points.
    #[error("more points than the limit")]
    TooManyPoints,
    /// A price off the tick grid.
    #[error("point {point_idx}: price off the tick grid")]
    PriceOffTick {
        /// Offending point.
        point_idx: u32,
    },
    /// A price outside the day-ahead limits.
    #[error("point {point_idx}: price outside the limits")]
    PriceOutOfLimits {
        /// Offending point.
        point_idx: u32,
    },
    /// Prices not strictly increasing (unsorted or duplicate).
    #[error("point {point_idx}: price not above the previous point's")]
    PricesNotIncreasing {
        /// Offending point.
        point_idx: u32,
    },
    /// A negative quantity.
    #[error("point {point_idx}: negative quantity")]
    NegativeQty {
        /// Offending point.
        point_idx: u32,
    },
    /// A piecewise-linear curve that is not monotone for its side.
    #[error("point {point_idx}: piecewise-linear curve not monotone")]
    NonMonotone {
        /// Offending point.
        point_idx: u32,
    },
    /// The curve's total (stepwise) or largest (piecewise-linear) quantity is above
    /// `qty_max`.
    #[error("curve quantity above the maximum")]
    QtyAboveMax,
}

fn point_idx_u32(point_idx: usize) -> u32 {
    u32::try_from(point_idx).unwrap_or(u32::MAX)
}

impl CurveReject {
    /// The reason for a curve the market crate refused.
    pub fn from_curve_error(error: &CurveError) -> CurveReject {
        match error {
            CurveError::Empty => CurveReject::Empty,
            CurveError::TooManyPoints { .. } => CurveReject::TooManyPoints,
            CurveError::Price { point_idx, source } => {
                let point_idx = point_idx_u32(*point_idx);
                match source {
                    RuleError::PriceOffTick { .. } => CurveReject::PriceOffTick { point_idx },
                    _ => CurveReject::PriceOutOfLimits { point_idx },
                }
            }
            CurveError::PricesNotIncreasing { point_idx, .. } => CurveReject::PricesNotIncreasing {
                point_idx: point_idx_u32(*point_idx),
            },
            CurveError::NegativeQty { point_idx, .. } => CurveReject::NegativeQty {
                point_idx: point_idx_u32(*point_idx),
            },
            CurveError::NonMonotone { point_idx, .. } => CurveReject::NonMonotone {
                point_idx: point_idx_u32(*point_idx),
            },
            CurveError::QtyAboveMax { .. } => CurveReject::QtyAboveMax,
        }
    }
}

/// One account's accepted quantity on one side after clearing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Award {
    /// The account.
    pub account: AccountId,
    /// Buy or sell.
    pub side: Side,
    /// Accepted quantity, possibly zero.
    pub qty: Qty,
}

/// The result of one product's auction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuctionOutcome {
    /// Uniform clearing price; `None` when nothing traded.
    pub price: Option<Price>,
    /// Traded volume.
    pub volume: Qty,
    /// Number of curves that took part.
    pub n_curves: u32,
    /// One award per account and side that bid, buys first, by account.
    pub awards: Vec<Award>,
}

/// One stored curve in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurveSnapshot {
    /// Owner.
    pub account: AccountId,
    /// Buy or sell.
    pub side: Side,
    /// How the points are read.
    pub kind: CurveKind,
    /// The points, by increasing price.
    pub points: Vec<CurvePoint>,
}

/// A product's auction in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuctionSnapshot {
    /// The rules it was opened with.
    pub rules: MarketRules,
    /// Whether curves are still accepted.
    pub open: bool,
    /// Curves by (account, side).
    pub curves: Vec<CurveSnapshot>,
    /// The result, once cleared.
    pub outcome: Option<AuctionOutcome>,
}

/// The day-ahead auction of one product.
#[derive(Clone, Debug)]
pub struct ProductAuction {
    config: AuctionConfig,
    gate_closure: UtcNanos,
    open: bool,
    curves: BTreeMap<(AccountId, Side), BidCurve>,
    outcome: Option<AuctionOutcome>,
}

/// What a successful submission did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// Whether an earlier curve of the same account and side was replaced.
    pub replaced: bool,
}

impl ProductAuction {
    /// The auction of a product listed at `now` for `period` under `rules`: open when
    /// its gate is still ahead.
    ///
    /// # Errors
    /// [`RuleError::InvalidRules`] if `rules` are inconsistent (then no product is
    /// listed).
    pub fn new(
        period: &DeliveryPeriod,
        now: UtcNanos,
        rules: MarketRules,
    ) -> Result<ProductAuction, RuleError> {
        let config = auction_config(rules);
        config.validate().map_err(|_| {
            RuleError::InvalidRules("day-ahead auction rules break the auction's limits")
        })?;
        let gate_closure = gate_closure(period, &config.rules);
        Ok(ProductAuction {
            config,
            gate_closure,
            open: gate_closure > now,
            curves: BTreeMap::new(),
            outcome: None,
        })
    }

    /// The rules the auction was opened with.
    pub fn rules(&self) -> &MarketRules {
        &self.config.rules
    }

    /// When the auction clears.
    pub fn gate_closure(&self) -> UtcNanos {
        self.gate_closure
    }

    /// Whether curves are accepted.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The result, once cleared.
    pub fn outcome(&self) -> Option<&AuctionOutcome> {
        self.outcome.as_ref()
    }

    /// The curves by (account, side).
    pub fn curves(&self) -> impl Iterator<Item = &BidCurve> {
        self.curves.values()
    }

    /// Validates and stores (or replaces) a curve.
    ///
    /// # Errors
    /// [`CurveReject`]: gate closed, an invalid curve, or too many curves.
    pub fn submit(
        &mut self,
        account: AccountId,
        side: Side,
        kind: CurveKind,
        points: &[CurvePoint],
    ) -> Result<Submitted, CurveReject> {
        if !self.open {
            return Err(CurveReject::GateClosed);
        }
        if points.len() > AUCTION_POINTS_PER_CURVE_MAX {
            // Checked before copying the points.
            return Err(CurveReject::TooManyPoints);
        }
        let curve = BidCurve::new(account, side, kind, points.to_vec(), &self.config)
            .map_err(|error| CurveReject::from_curve_error(&error))?;
        let replaced = self.curves.contains_key(&(account, side));
        if !replaced && self.curves.len() >= AUCTION_CURVES_PER_PRODUCT_MAX {
            return Err(CurveReject::TooManyCurves);
        }
        self.curves.insert((account, side), curve);
        Ok(Submitted { replaced })
    }

    /// Removes a curve.
    ///
    /// # Errors
    /// [`CurveReject::GateClosed`] or [`CurveReject::NoSuchCurve`].
    pub fn withdraw(&mut self, account: AccountId, side: Side) -> Result<(), CurveReject> {
        if !self.open {
            return Err(CurveReject::GateClosed);
        }
        self.curves
            .remove(&(account, side))
            .map(drop)
            .ok_or(CurveReject::NoSuchCurve)
    }

    /// Clears the auction (once) and returns its outcome.
    ///
    /// # Panics
    /// If the stored curves break the auction configuration they were validated
    /// against (a bug).
    pub fn clear(&mut self) -> &AuctionOutcome {
        assert!(self.open, "an auction clears once");
        let curves: Vec<BidCurve> = self.curves.values().cloned().collect();
        let result: ClearingResult = Auction::new(self.config.clone())
            .and_then(|mut auction| auction.clear_period(&curves))
            .expect("stored curves were validated against the same configuration");
        self.settle(&result)
    }

    /// The auction's configuration (its rules and limits).
    pub fn config(&self) -> &AuctionConfig {
        &self.config
    }

    /// Closes the auction with `result`, a clearing of its curves made elsewhere (the
    /// joint clearing of a gate's block families, whose accepted quantities the result
    /// includes), and returns its outcome.
    ///
    /// # Panics
    /// If the auction is not open (it clears once).
    pub fn settle(&mut self, result: &ClearingResult) -> &AuctionOutcome {
        assert!(self.open, "an auction clears once");
        self.open = false;
        self.outcome.insert(AuctionOutcome {
            price: result.price,
            volume: result.volume,
            n_curves: u32::try_from(self.curves.len()).unwrap_or(u32::MAX),
            awards: result
                .accepted
                .iter()
                .map(|accepted| Award {
                    account: accepted.participant,
                    side: accepted.side,
                    qty: accepted.qty,
                })
                .collect(),
        })
    }

    /// The snapshot form.
    pub fn snapshot(&self) -> AuctionSnapshot {
        AuctionSnapshot {
            rules: self.config.rules.clone(),
            open: self.open,
            curves: self
                .curves
                .values()
                .map(|curve| CurveSnapshot {
                    account: curve.participant(),
                    side: curve.side(),
                    kind: curve.kind(),
                    points: curve.points().to_vec(),
                })
                .collect(),
            outcome: self.outcome.clone(),
        }
    }

    /// Rebuilds the auction of `period` from its snapshot.
    ///
    /// # Errors
    /// A message naming the broken invariant.
    pub fn from_snapshot(
        period: &DeliveryPeriod,
        snapshot: &AuctionSnapshot,
    ) -> Result<ProductAuction, &'static str> {
        if snapshot.open && snapshot.outcome.is_some() {
            return Err("an open auction has no outcome");
        }
        if !snapshot.open && snapshot.outcome.is_none() && !snapshot.curves.is_empty() {
            return Err("an auction never held has no curves");
        }
        if snapshot.curves.len() > AUCTION_CURVES_PER_PRODUCT_MAX {
            return Err("more curves than AUCTION_CURVES_PER_PRODUCT_MAX");
        }
        let config = auction_config(snapshot.rules.clone());
        if config.validate().is_err() {
            return Err("the auction's rules are invalid");
        }
        let mut curves = BTreeMap::new();
        for curve in &snapshot.curves {
            let built = BidCurve::new(
                curve.account,
                curve.side,
                curve.kind,
                curve.points.clone(),
                &config,
            )
            .map_err(|_| "a stored curve is invalid")?;
            if curves.insert((curve.account, curve.side), built).is_some() {
                return Err("two curves for one account and side");
            }
        }
        Ok(ProductAuction {
            gate_closure: gate_closure(period, &config.rules),
            config,
            open: snapshot.open,
            curves,
            outcome: snapshot.outcome.clone(),
        })
    }

    /// Asserts the invariants in the module docs.
    ///
    /// # Panics
    /// On a broken invariant (a bug).
    pub fn check_invariants(&self) {
        assert!(
            !(self.open && self.outcome.is_some()),
            "an open auction has no outcome"
        );
        assert!(
            self.open || self.outcome.is_some() || self.curves.is_empty(),
            "an auction never held has no curves"
        );
        assert!(
            self.curves.len() <= AUCTION_CURVES_PER_PRODUCT_MAX,
            "at most AUCTION_CURVES_PER_PRODUCT_MAX curves"
        );
        for ((account, side), curve) in &self.curves {
            assert_eq!((curve.participant(), curve.side()), (*account, *side));
            assert!(
                curve.validate(&self.config).is_ok(),
                "stored curves are valid"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voltex_market::PeriodLength;
    use voltex_market::time::NANOS_PER_SECOND;

    fn point(price: i64, qty: i64) -> CurvePoint {
        CurvePoint {
            price: Price(price),
            qty: Qty(qty),
        }
    }

    fn period_at_hour_100() -> DeliveryPeriod {
        DeliveryPeriod::new(
            UtcNanos(100 * 3600 * NANOS_PER_SECOND),
            PeriodLength::Minutes60,
        )
        .unwrap()
    }

    fn open_auction() -> ProductAuction {
        ProductAuction::new(
            &period_at_hour_100(),
            UtcNanos(0),
            MarketRules::day_ahead_default(),
        )
        .unwrap()
    }

    #[test]
    fn an_auction_checks_and_clears_with_its_own_rules() {
        // A market capped at 3000 EUR/MWh, tick 0.10, gate 1 h before delivery.
        let rules = MarketRules {
            tick: Price(10),
            price_max: Price(300_000),
            gate_closure_lead_s: 3600,
            ..MarketRules::day_ahead_default()
        };
        let period = period_at_hour_100();
        let mut auction = ProductAuction::new(&period, UtcNanos(0), rules.clone()).unwrap();
        assert_eq!(
            auction.gate_closure(),
            UtcNanos(99 * 3600 * NANOS_PER_SECOND)
        );
        let over_cap = [point(350_000, 1)];
        assert_eq!(
            auction.submit(AccountId(1), Side::Buy, CurveKind::Stepwise, &over_cap),
            Err(CurveReject::PriceOutOfLimits { point_idx: 0 }),
            "legal under the default rules, not under these"
        );
        let off_tick = [point(5_005, 1)];
        assert_eq!(
            auction.submit(AccountId(1), Side::Buy, CurveKind::Stepwise, &off_tick),
            Err(CurveReject::PriceOffTick { point_idx: 0 })
        );
        auction
            .submit(
                AccountId(1),
                Side::Buy,
                CurveKind::Stepwise,
                &[point(5_010, 4)],
            )
            .unwrap();
        let snapshot = auction.snapshot();
        assert_eq!(snapshot.rules, rules);
        let restored = ProductAuction::from_snapshot(&period, &snapshot).unwrap();
        assert_eq!(restored.rules(), &rules);
        assert_eq!(restored.gate_closure(), auction.gate_closure());
        restored.check_invariants();

        let mut bad = snapshot;
        bad.rules.tick = Price(0);
        assert!(ProductAuction::from_snapshot(&period, &bad).is_err());
        let invalid = MarketRules {
            price_min: Price(10),
            price_max: Price(0),
            ..rules
        };
        assert!(ProductAuction::new(&period, UtcNanos(0), invalid).is_err());
    }

    #[test]
    fn every_curve_error_maps_to_its_reason() {
        let mut auction = open_auction();
        let cases: Vec<(Vec<CurvePoint>, CurveKind, CurveReject)> = vec![
            (vec![], CurveKind::Stepwise, CurveReject::Empty),
            (
                vec![point(1, 1); AUCTION_POINTS_PER_CURVE_MAX + 1],
                CurveKind::Stepwise,
                CurveReject::TooManyPoints,
            ),
            (
                vec![point(500_000, 1)],
                CurveKind::Stepwise,
                CurveReject::PriceOutOfLimits { point_idx: 0 },
            ),
            (
                vec![point(10, 1), point(10, 1)],
                CurveKind::Stepwise,
                CurveReject::PricesNotIncreasing { point_idx: 1 },
            ),
            (
                vec![point(10, -1)],
                CurveKind::Stepwise,
                CurveReject::NegativeQty { point_idx: 0 },
            ),
            (
                vec![point(10, 1), point(20, 2)],
                CurveKind::PiecewiseLinear,
                CurveReject::NonMonotone { point_idx: 1 },
            ),
            (
                vec![point(10, 100_000)],
                CurveKind::Stepwise,
                CurveReject::QtyAboveMax,
            ),
        ];
        for (points, kind, reason) in cases {
            assert_eq!(
                auction.submit(AccountId(1), Side::Buy, kind, &points),
                Err(reason)
            );
        }
        assert_eq!(auction.curves().count(), 0, "nothing stored");
        auction.check_invariants();
    }

    #[test]
    fn replace_withdraw_and_clear_once() {
        let mut auction = open_auction();
        let buy = [point(5_000, 10)];
        let submitted = auction.submit(AccountId(1), Side::Buy, CurveKind::Stepwise, &buy);
        assert_eq!(submitted, Ok(Submitted { replaced: false }));
        let submitted = auction.submit(AccountId(1), Side::Buy, CurveKind::Stepwise, &buy);
        assert_eq!(submitted, Ok(Submitted { replaced: true }));
        let sell = [point(4_000, 6)];
        auction
            .submit(AccountId(2), Side::Sell, CurveKind::Stepwise, &sell)
            .unwrap();
        assert_eq!(
            auction.withdraw(AccountId(2), Side::Buy),
            Err(CurveReject::NoSuchCurve)
        );
        let outcome = auction.clear().clone();
        assert_eq!(outcome.volume, Qty(6));
        assert_eq!(
            outcome.price,
            Some(Price(5_000)),
            "buyer curtailed: its price"
        );
        assert_eq!(
            auction.submit(AccountId(3), Side::Buy, CurveKind::Stepwise, &buy),
            Err(CurveReject::GateClosed)
        );
        auction.check_invariants();
        let restored =
            ProductAuction::from_snapshot(&period_at_hour_100(), &auction.snapshot()).unwrap();
        assert_eq!(restored.snapshot(), auction.snapshot());
    }
}
