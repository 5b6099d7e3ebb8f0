//! Bids: a battery plan becomes day-ahead bid curves and continuous-market limit orders,
//! under per-account risk limits.
//!
//! # Marginal value
//! The LP's dual of the SoC balance in period `t`, `λ_t` (EUR per MWh *stored*), is what
//! one more MWh in the battery at the end of `t` is worth to the rest of the plan. Buying
//! 1 MWh from the grid stores `η_c` MWh and costs `κ` wear, so the battery should buy at
//! any price up to `λ_t·η_c − κ`; selling 1 MWh takes `1/η_d` MWh out of storage, so it
//! should sell at any price from `λ_t/η_d + κ` up. [`day_ahead_curves`] bids exactly
//! that: a buy step at the buy limit (rounded **down** to the tick) for the planned
//! charge, a sell step at the sell limit (rounded **up**) for the planned discharge, and
//! optionally extra steps for the unplanned headroom at limits pushed further by a
//! spread. The curve is thus not a price-taking quantity: if the auction clears above the
//! battery's value of energy it does not buy, and below it it does not sell.
//!
//! [`day_ahead_family`] bids the same plan as one linked block family instead
//! ([`voltex_market::block`]): the day's purchases and sales accepted together or not at
//! all, priced so the auction accepts the day only where, at the prices it clears at,
//! its cash plus the value of the energy it leaves stored is not negative. Per-period
//! curves clear hour by hour and can win a sale without the purchase that was to fill it
//! when the day comes out higher or lower than forecast; a family cannot.
//!
//! # Invariants
//! - Every curve's net quantity (sold − bought) is non-decreasing in price (buy steps
//!   have non-increasing limits, sell steps non-decreasing ones).
//! - Every buy limit is `<=` the period's buy marginal value and every sell limit `>=`
//!   the sell marginal value, except that a *planned* step's limit is never worse than
//!   the forecast price it was planned at (the interior-point dual is only accurate to
//!   its tolerance), and, with [`PlannedLimits::RoundTrip`], not tighter than the plan's
//!   average round-trip value of stored energy (widened by the imbalance penalty, see
//!   there); then clamped into the market's limits. At the forecast price
//!   the curve reproduces the plan's quantity (up to lot rounding).
//! - All prices are on the market's tick grid and inside its limits; all quantities are
//!   whole positive lots, and a curve's buy (sell) lots never add up to more power than
//!   the battery's charge (discharge) limit holds in whole lots.
//! - [`RiskBook::check_curve`] / [`RiskBook::check_order`] reject, with a
//!   [`RiskRejection`] reason, any bid that breaks a [`RiskLimits`]; accepted bids are
//!   counted against the account's worst-case position.
//! - [`RiskBook::fit_curve`] is the bidder's side of the same limits: it trims a curve
//!   to what they allow (steps cut to the largest order, the least eager steps of each
//!   side cut to the position headroom left) and counts the result; what it returns
//!   always passes [`RiskBook::check_curve`], is never larger step by step than what it
//!   was given, and equals it when that passed already.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use voltex_market::auction::{AuctionConfig, BidCurve, CurveError, CurveKind, CurvePoint};
use voltex_market::battery::BatterySpec;
use voltex_market::block::{Block, BlockError, BlockFamily};
use voltex_market::book::NewOrder;
use voltex_market::{AccountId, MarketRules, OrderId, Price, Qty, Side};

use crate::optimise::Plan;

pub mod day_family;
pub mod intraday;
pub mod replay;

pub use day_family::{
    DayFamilies, FamilyOwner, day_ahead_families, scenario_with_error,
    stored_energy_value_eur_per_mwh,
};
pub use intraday::{CloseOut, ClosingFill, IntradayConfig, IntradayError, ReplayIntraday};
pub use replay::{ReplayError, ReplayMarket, replay_counterparty};

/// One step of a stepwise bid: `qty` at `price` or better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BidStep {
    /// Limit price: for a buy the highest price paid, for a sell the lowest accepted.
    pub price: Price,
    /// Quantity in lots (`> 0`).
    pub qty: Qty,
}

/// The stepwise day-ahead bid of one delivery period.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PeriodCurve {
    /// Index of the delivery period within the planned horizon.
    pub period: usize,
    /// Buy steps, limit prices descending.
    pub buy: Vec<BidStep>,
    /// Sell steps, limit prices ascending.
    pub sell: Vec<BidStep>,
}

impl PeriodCurve {
    /// Lots bought if the auction clears at `price` (all buy steps with limit `>= price`).
    pub fn bought_at(&self, price: Decimal) -> Qty {
        let lots = self
            .buy
            .iter()
            .filter(|s| s.price.to_decimal() >= price)
            .map(|s| s.qty.0);
        Qty(lots.sum())
    }

    /// Lots sold if the auction clears at `price` (all sell steps with limit `<= price`).
    pub fn sold_at(&self, price: Decimal) -> Qty {
        let lots = self
            .sell
            .iter()
            .filter(|s| s.price.to_decimal() <= price)
            .map(|s| s.qty.0);
        Qty(lots.sum())
    }

    /// Net lots at a clearing price: sold − bought (positive = the battery sells).
    pub fn net_at(&self, price: Decimal) -> i64 {
        self.sold_at(price).0 - self.bought_at(price).0
    }

    /// This period's bid as call-auction curves for `account`: one stepwise buy curve and
    /// one stepwise sell curve (each left out when empty), points by increasing price,
    /// steps at the same price merged.
    ///
    /// # Errors
    /// The auction's [`CurveError`] if a step breaks its rules (price limits, `qty_max`).
    pub fn to_auction_curves(
        &self,
        account: AccountId,
        config: &AuctionConfig,
    ) -> Result<Vec<BidCurve>, CurveError> {
        let mut curves = Vec::with_capacity(2);
        for (side, steps) in [(Side::Buy, &self.buy), (Side::Sell, &self.sell)] {
            let mut points: Vec<CurvePoint> = Vec::with_capacity(steps.len());
            let mut sorted: Vec<BidStep> = steps.clone();
            sorted.sort_by_key(|s| s.price);
            for step in sorted {
                match points.last_mut() {
                    Some(last) if last.price == step.price => last.qty += step.qty,
                    _ => points.push(CurvePoint {
                        price: step.price,
                        qty: step.qty,
                    }),
                }
            }
            if !points.is_empty() {
                curves.push(BidCurve::new(
                    account,
                    side,
                    CurveKind::Stepwise,
                    points,
                    config,
                )?);
            }
        }
        Ok(curves)
    }

    /// Worst-case gross quantities `(all buy lots, all sell lots)`.
    pub fn totals(&self) -> (Qty, Qty) {
        let sum = |steps: &[BidStep]| Qty(steps.iter().map(|s| s.qty.0).sum());
        (sum(&self.buy), sum(&self.sell))
    }
}

/// Extra steps for headroom the plan does not use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeadroomSteps {
    /// The extra buy step's limit is the buy marginal value minus this, and the extra sell
    /// step's the sell marginal value plus this, EUR/MWh (`>= 0`).
    pub spread_eur_per_mwh: f64,
}

/// Settings of bid construction.
#[derive(Clone, Debug, PartialEq)]
pub struct BidConfig {
    /// The market's tick, lot size and price limits.
    pub rules: MarketRules,
    /// Length of a delivery period, seconds.
    pub period_s: i64,
    /// Optional extra steps for unplanned headroom (`None`: bid the plan only).
    pub headroom: Option<HeadroomSteps>,
    /// Where the limits of the *planned* quantities sit.
    pub planned_limits: PlannedLimits,
    /// What one MWh of an award the battery cannot deliver costs beyond its price,
    /// EUR/MWh (the settlement's imbalance penalty; `>= 0`, a negative value counts as
    /// zero). Only [`PlannedLimits::RoundTrip`] reads it: see there.
    pub imbalance_penalty_eur_per_mwh: f64,
}

/// Limit prices of the steps that carry the plan's own quantities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PlannedLimits {
    /// At the LP's marginal value of the period (the dual of the marginal unit).
    #[default]
    Marginal,
    /// At the average value of stored energy in the plan: buy up to what the plan's
    /// sales earn per MWh stored (`Σ d·(f − κ)·η_d / Σ d`, times `η_c`, minus `κ`),
    /// sell down to what the plan's purchases cost per MWh stored; never tighter than
    /// [`PlannedLimits::Marginal`]. Per-period curves are cleared independently, so a
    /// charge rejected by a small forecast error breaks the discharge it was paired with;
    /// limits at the round-trip break-even keep the plan together unless the trade itself
    /// stops paying on the forecast.
    ///
    /// With an imbalance penalty `π` ([`BidConfig::imbalance_penalty_eur_per_mwh`]) the
    /// break-even counts what a broken pair costs: a sale awarded without its purchase
    /// is settled short at the price plus `π`, so a stored MWh is worth `π` more to the
    /// plan's sales (the buy limit rises by `π·η_c·η_d`); a purchase awarded without the
    /// sale that was to make room is settled short at `π` too, so the sell limit falls
    /// by `π / (η_c·η_d)`. With `π = 0` the limits are the plain round-trip ones.
    RoundTrip,
}

/// Why bids could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BidError {
    /// The plan carries no marginal values (it was solved with a backend without duals).
    #[error("plan has no marginal values: solve it with the Clarabel backend")]
    NoMarginalValues,
    /// Plan, marginal values and forecast differ in length.
    #[error("length mismatch: plan {plan}, forecast {forecast}")]
    LengthMismatch {
        /// Periods in the plan.
        plan: usize,
        /// Periods in the forecast.
        forecast: usize,
    },
    /// A marginal value or forecast price is not finite.
    #[error("non-finite marginal value or forecast in period {period}")]
    NonFinite {
        /// The offending period.
        period: usize,
    },
    /// The value of stored energy a block family is priced with is not finite.
    #[error("the value of stored energy is not finite")]
    NonFiniteValue,
    /// The plan's block family breaks the auction's rules.
    #[error("block family: {0}")]
    Family(#[from] BlockError),
}

/// Buy and sell marginal values of one period, EUR/MWh (before rounding).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MarginalLimits {
    /// Highest price at which buying still pays: `λ·η_c − κ`.
    pub buy_eur_per_mwh: f64,
    /// Lowest price at which selling pays: `λ/η_d + κ`.
    pub sell_eur_per_mwh: f64,
}

/// The marginal buy and sell values of period `t` from the storage value `lambda`.
pub fn marginal_limits(spec: &BatterySpec, lambda: f64) -> MarginalLimits {
    let wear = spec.wear_cost_eur_per_mwh.to_f64().unwrap_or(0.0);
    MarginalLimits {
        buy_eur_per_mwh: lambda * spec.charge_efficiency - wear,
        sell_eur_per_mwh: lambda / spec.discharge_efficiency + wear,
    }
}

fn to_tick(rules: &MarketRules, eur_per_mwh: f64, round_up: bool) -> Price {
    let tick = rules.tick.0.max(1) as f64;
    let cents = eur_per_mwh * 100.0 / tick;
    let steps = if round_up {
        cents.ceil()
    } else {
        cents.floor()
    };
    let cents = (steps * tick).clamp(rules.price_min.0 as f64, rules.price_max.0 as f64);
    Price(cents as i64)
}

/// Power in W as whole lots, rounded to nearest (power limits are enforced at execution).
fn to_lots(rules: &MarketRules, power_w: i64) -> Qty {
    let lot_w = rules.lot_kw.max(1) * 1000;
    Qty((power_w + lot_w / 2) / lot_w)
}

/// [`to_lots`], but never more lots than `max_w` holds whole: rounding up must not bid
/// power the battery does not have (a 0.15 MW unit charging flat out is 1 lot, not 2).
fn to_lots_within(rules: &MarketRules, power_w: i64, max_w: i64) -> Qty {
    let lot_w = rules.lot_kw.max(1) * 1000;
    Qty(to_lots(rules, power_w).0.min(max_w.max(0) / lot_w))
}

/// Builds the day-ahead curves of every planned period (see the module doc).
///
/// # Errors
/// [`BidError`] if the plan has no marginal values, lengths differ or a value is not
/// finite.
pub fn day_ahead_curves(
    spec: &BatterySpec,
    plan: &Plan,
    forecast: &[f64],
    config: &BidConfig,
) -> Result<Vec<PeriodCurve>, BidError> {
    let values = plan
        .marginal_value_eur_per_mwh
        .as_ref()
        .ok_or(BidError::NoMarginalValues)?;
    if values.len() != plan.len() || forecast.len() != plan.len() {
        return Err(BidError::LengthMismatch {
            plan: plan.len(),
            forecast: forecast.len(),
        });
    }
    let rules = &config.rules;
    let wear = spec.wear_cost_eur_per_mwh.to_f64().unwrap_or(0.0);
    // Average value (EUR per MWh stored) of the plan's sales and cost of its purchases.
    let (mut sold, mut sold_value, mut bought, mut bought_cost) = (0.0, 0.0, 0.0, 0.0);
    for ((c, d), f) in plan.charge_w.iter().zip(&plan.discharge_w).zip(forecast) {
        let (c, d) = (*c as f64, *d as f64);
        sold += d / spec.discharge_efficiency;
        sold_value += d * (f - wear);
        bought += c * spec.charge_efficiency;
        bought_cost += c * (f + wear);
    }
    let round_trip = config.planned_limits == PlannedLimits::RoundTrip;
    let penalty = config.imbalance_penalty_eur_per_mwh.max(0.0);
    // Per MWh stored: a sale's energy also avoids π per MWh delivered, a purchase's
    // energy that cannot be sold costs π per MWh bought (see `PlannedLimits::RoundTrip`).
    let stored_value =
        (round_trip && sold > 0.0).then(|| sold_value / sold + penalty * spec.discharge_efficiency);
    let stored_cost = (round_trip && bought > 0.0)
        .then(|| bought_cost / bought - penalty / spec.charge_efficiency);
    let mut curves = Vec::with_capacity(plan.len());
    for t in 0..plan.len() {
        if !values[t].is_finite() || !forecast[t].is_finite() {
            return Err(BidError::NonFinite { period: t });
        }
        let limits = marginal_limits(spec, values[t]);
        let mut curve = PeriodCurve {
            period: t,
            ..PeriodCurve::default()
        };
        let charge = to_lots_within(rules, plan.charge_w[t], spec.max_charge_w);
        let discharge = to_lots_within(rules, plan.discharge_w[t], spec.max_discharge_w);
        // The LP's KKT conditions put a planned charge at a forecast price at or below
        // the buy value; the interior-point dual is only accurate to its tolerance, so
        // the limit never falls below the forecast the plan was made for.
        if !charge.is_zero() {
            let mut limit = limits.buy_eur_per_mwh.max(forecast[t]);
            if let Some(value) = stored_value {
                limit = limit.max(value * spec.charge_efficiency - wear);
            }
            curve.buy.push(BidStep {
                price: to_tick(rules, limit, false),
                qty: charge,
            });
        }
        if !discharge.is_zero() {
            let mut limit = limits.sell_eur_per_mwh.min(forecast[t]);
            if let Some(cost) = stored_cost {
                limit = limit.min(cost / spec.discharge_efficiency + wear);
            }
            curve.sell.push(BidStep {
                price: to_tick(rules, limit, true),
                qty: discharge,
            });
        }
        if let Some(extra) = config.headroom {
            let spread = extra.spread_eur_per_mwh.max(0.0);
            let more_buy = to_lots_within(rules, spec.max_charge_w, spec.max_charge_w).0 - charge.0;
            if more_buy > 0 {
                let limit = to_tick(rules, limits.buy_eur_per_mwh - spread, false);
                let limit = curve.buy.last().map_or(limit, |s| limit.min(s.price));
                curve.buy.push(BidStep {
                    price: limit,
                    qty: Qty(more_buy),
                });
            }
            let more_sell =
                to_lots_within(rules, spec.max_discharge_w, spec.max_discharge_w).0 - discharge.0;
            if more_sell > 0 {
                let limit = to_tick(rules, limits.sell_eur_per_mwh + spread, true);
                let limit = curve.sell.last().map_or(limit, |s| limit.max(s.price));
                curve.sell.push(BidStep {
                    price: limit,
                    qty: Qty(more_sell),
                });
            }
        }
        curves.push(curve);
    }
    Ok(curves)
}

/// The price-taking baseline: the plan's quantities bid at the market's price limits
/// (buy at `price_max`, sell at `price_min`), so they are accepted at any price. Used to
/// measure what the marginal-value limits of [`day_ahead_curves`] are worth.
pub fn price_taking_curves(plan: &Plan, config: &BidConfig) -> Vec<PeriodCurve> {
    let rules = &config.rules;
    (0..plan.len())
        .map(|t| {
            let mut curve = PeriodCurve {
                period: t,
                ..PeriodCurve::default()
            };
            let charge = to_lots(rules, plan.charge_w[t]);
            let discharge = to_lots(rules, plan.discharge_w[t]);
            if !charge.is_zero() {
                curve.buy.push(BidStep {
                    price: rules.price_max,
                    qty: charge,
                });
            }
            if !discharge.is_zero() {
                curve.sell.push(BidStep {
                    price: rules.price_min,
                    qty: discharge,
                });
            }
            curve
        })
        .collect()
}

/// The plan's day as one linked block family for the day-ahead auction (see
/// [`voltex_market::block`]): its charging as a buy block and its discharging as a sell
/// block, in whole lots (never more than the battery's power holds), accepted together
/// or not at all. Both are priced at the value `lambda` (EUR per MWh stored) of the
/// energy the day leaves in the battery or takes out of it, as [`marginal_limits`]: the
/// buy block at `λ·η_c − κ` rounded down to the tick, the sell block at `λ/η_d + κ`
/// rounded up. The family's surplus at the clearing prices is then the day's cash
/// (sales − purchases − wear) plus `λ` times the change in stored energy, so the auction
/// accepts the day only where that is not negative at the prices it actually clears at,
/// whether they came out as forecast or shifted. `None` when the plan trades nothing.
///
/// # Errors
/// [`BidError::NonFiniteValue`], or [`BidError::Family`] if a quantity or limit breaks
/// `auction`'s rules.
pub fn day_ahead_family(
    spec: &BatterySpec,
    plan: &Plan,
    lambda_eur_per_mwh: f64,
    participant: AccountId,
    auction: &AuctionConfig,
) -> Result<Option<BlockFamily>, BidError> {
    if !lambda_eur_per_mwh.is_finite() {
        return Err(BidError::NonFiniteValue);
    }
    let rules = &auction.rules;
    let limits = marginal_limits(spec, lambda_eur_per_mwh);
    let buy: Vec<Qty> = plan
        .charge_w
        .iter()
        .map(|w| to_lots_within(rules, *w, spec.max_charge_w))
        .collect();
    let sell: Vec<Qty> = plan
        .discharge_w
        .iter()
        .map(|w| to_lots_within(rules, *w, spec.max_discharge_w))
        .collect();
    let mut blocks = Vec::with_capacity(2);
    if buy.iter().any(|q| !q.is_zero()) {
        blocks.push(Block {
            side: Side::Buy,
            limit: to_tick(rules, limits.buy_eur_per_mwh, false),
            qty: buy,
        });
    }
    if sell.iter().any(|q| !q.is_zero()) {
        blocks.push(Block {
            side: Side::Sell,
            limit: to_tick(rules, limits.sell_eur_per_mwh, true),
            qty: sell,
        });
    }
    if blocks.is_empty() {
        return Ok(None);
    }
    Ok(Some(BlockFamily::new(
        participant,
        plan.len(),
        blocks,
        auction,
    )?))
}

/// A limit order for the continuous book, before the sequencer assigns its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderIntent {
    /// Index of the delivery period (product) within the planned horizon.
    pub period: usize,
    /// Buy or sell.
    pub side: Side,
    /// Limit price.
    pub price: Price,
    /// Quantity in lots.
    pub qty: Qty,
}

impl OrderIntent {
    /// The book order for this intent, with the id the sequencer assigned.
    pub fn to_new_order(&self, id: OrderId, account: AccountId) -> NewOrder {
        NewOrder::limit(id, account, self.side, self.price, self.qty)
    }
}

/// One limit order per curve step: the same prices, so the continuous book sees the same
/// marginal-value limits as the auction. Ordered by period, buys before sells.
pub fn limit_orders(curves: &[PeriodCurve]) -> Vec<OrderIntent> {
    let mut orders = Vec::new();
    for curve in curves {
        for (side, steps) in [(Side::Buy, &curve.buy), (Side::Sell, &curve.sell)] {
            for step in steps {
                let intent = OrderIntent {
                    period: curve.period,
                    side,
                    price: step.price,
                    qty: step.qty,
                };
                orders.push(intent);
            }
        }
    }
    orders
}

/// Risk limits of one account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RiskLimits {
    /// Largest absolute net position per delivery period, lots (worst case over all
    /// accepted bids: everything on one side fills).
    pub max_net_position: Qty,
    /// Largest single order or curve step, lots.
    pub max_order_qty: Qty,
    /// Lowest limit price allowed.
    pub price_floor: Price,
    /// Highest limit price allowed.
    pub price_cap: Price,
}

/// Why a bid was rejected by the risk limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RiskRejection {
    /// The account has no limits configured.
    #[error("{account} has no risk limits")]
    UnknownAccount {
        /// The account.
        account: AccountId,
    },
    /// A quantity is zero or negative.
    #[error("quantity {qty} is not positive")]
    NonPositiveQty {
        /// The offending quantity.
        qty: Qty,
    },
    /// A single order or step is larger than allowed.
    #[error("order of {qty} exceeds the maximum order size {max}")]
    OrderTooLarge {
        /// The offending quantity.
        qty: Qty,
        /// The limit.
        max: Qty,
    },
    /// A limit price is outside the collar.
    #[error("price {price} is outside the collar {floor}..{cap}")]
    PriceOutsideCollar {
        /// The offending price.
        price: Price,
        /// Lowest allowed.
        floor: Price,
        /// Highest allowed.
        cap: Price,
    },
    /// Accepting would let the worst-case net position exceed the limit.
    #[error("period {period}: worst-case net position {would_be} lots exceeds {max}")]
    NetPositionExceeded {
        /// The delivery period.
        period: usize,
        /// Worst-case absolute net position if accepted, lots.
        would_be: i64,
        /// The limit.
        max: Qty,
    },
}

/// A curve trimmed to the risk limits by [`RiskBook::fit_curve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trimmed {
    /// What may be bid (counted in the book already).
    pub curve: PeriodCurve,
    /// Buy lots cut away.
    pub buy_cut: Qty,
    /// Sell lots cut away.
    pub sell_cut: Qty,
}

impl Trimmed {
    /// Whether anything was cut.
    pub fn was_cut(&self) -> bool {
        self.buy_cut.0 > 0 || self.sell_cut.0 > 0
    }
}

/// Per-account, per-period exposure of accepted bids, checked against [`RiskLimits`].
#[derive(Clone, Debug, Default)]
pub struct RiskBook {
    limits: BTreeMap<AccountId, RiskLimits>,
    /// (account, period) → (worst-case long lots, worst-case short lots).
    exposure: BTreeMap<(AccountId, usize), (i64, i64)>,
}

impl RiskBook {
    /// An empty risk book.
    pub fn new() -> RiskBook {
        RiskBook::default()
    }

    /// Sets (or replaces) an account's limits.
    pub fn set_limits(&mut self, account: AccountId, limits: RiskLimits) {
        self.limits.insert(account, limits);
    }

    /// Worst-case `(long, short)` lots accepted so far for an account and period.
    pub fn exposure(&self, account: AccountId, period: usize) -> (i64, i64) {
        self.exposure
            .get(&(account, period))
            .copied()
            .unwrap_or((0, 0))
    }

    fn check_step(limits: &RiskLimits, side_qty: Qty, price: Price) -> Result<(), RiskRejection> {
        if side_qty.0 <= 0 {
            return Err(RiskRejection::NonPositiveQty { qty: side_qty });
        }
        if side_qty > limits.max_order_qty {
            return Err(RiskRejection::OrderTooLarge {
                qty: side_qty,
                max: limits.max_order_qty,
            });
        }
        if price < limits.price_floor || price > limits.price_cap {
            return Err(RiskRejection::PriceOutsideCollar {
                price,
                floor: limits.price_floor,
                cap: limits.price_cap,
            });
        }
        Ok(())
    }

    fn admit(
        &mut self,
        account: AccountId,
        period: usize,
        add_long: i64,
        add_short: i64,
    ) -> Result<(), RiskRejection> {
        let limits = self
            .limits
            .get(&account)
            .ok_or(RiskRejection::UnknownAccount { account })?;
        let (long, short) = self.exposure(account, period);
        let would_be = (long + add_long).max(short + add_short);
        if would_be > limits.max_net_position.0 {
            return Err(RiskRejection::NetPositionExceeded {
                period,
                would_be,
                max: limits.max_net_position,
            });
        }
        self.exposure
            .insert((account, period), (long + add_long, short + add_short));
        Ok(())
    }

    /// Checks a whole period curve and, if every step passes, counts it.
    ///
    /// # Errors
    /// The first [`RiskRejection`]; nothing is counted then.
    pub fn check_curve(
        &mut self,
        account: AccountId,
        curve: &PeriodCurve,
    ) -> Result<(), RiskRejection> {
        let limits = *self
            .limits
            .get(&account)
            .ok_or(RiskRejection::UnknownAccount { account })?;
        for step in curve.buy.iter().chain(&curve.sell) {
            Self::check_step(&limits, step.qty, step.price)?;
        }
        let (buy, sell) = curve.totals();
        self.admit(account, curve.period, buy.0, sell.0)
    }

    /// Trims `curve` to the account's limits and counts the result: every step cut to
    /// the largest order size, then each side's steps kept in the curve's order (buys
    /// by descending limit, sells by ascending: the most eager first) until the side's
    /// worst-case position headroom is used up, the last kept step cut to fit. Prices
    /// are never changed. The returned [`Trimmed`] says how many lots were cut.
    ///
    /// # Errors
    /// [`RiskRejection::UnknownAccount`]; [`RiskRejection::NonPositiveQty`] or
    /// [`RiskRejection::PriceOutsideCollar`] for a step no trimming can mend (a price is
    /// what the bidder values the energy at, not the risk book's to move). Nothing is
    /// counted then.
    pub fn fit_curve(
        &mut self,
        account: AccountId,
        curve: &PeriodCurve,
    ) -> Result<Trimmed, RiskRejection> {
        let limits = *self
            .limits
            .get(&account)
            .ok_or(RiskRejection::UnknownAccount { account })?;
        for step in curve.buy.iter().chain(&curve.sell) {
            if step.qty.0 <= 0 {
                return Err(RiskRejection::NonPositiveQty { qty: step.qty });
            }
            let capped = Qty(step.qty.0.min(limits.max_order_qty.0));
            Self::check_step(&limits, capped, step.price)?;
        }
        let (long, short) = self.exposure(account, curve.period);
        let fit_side = |steps: &[BidStep], used: i64| {
            let mut headroom = (limits.max_net_position.0 - used).max(0);
            let mut kept = Vec::with_capacity(steps.len());
            for step in steps {
                let qty = step.qty.0.min(limits.max_order_qty.0).min(headroom);
                if qty == 0 {
                    break;
                }
                headroom -= qty;
                kept.push(BidStep {
                    price: step.price,
                    qty: Qty(qty),
                });
            }
            kept
        };
        let fitted = PeriodCurve {
            period: curve.period,
            buy: fit_side(&curve.buy, long),
            sell: fit_side(&curve.sell, short),
        };
        let ((buy_before, sell_before), (buy, sell)) = (curve.totals(), fitted.totals());
        self.admit(account, curve.period, buy.0, sell.0)?;
        debug_assert!(
            buy <= buy_before && sell <= sell_before,
            "trimming never adds"
        );
        Ok(Trimmed {
            buy_cut: Qty(buy_before.0 - buy.0),
            sell_cut: Qty(sell_before.0 - sell.0),
            curve: fitted,
        })
    }

    /// Checks one continuous-market order and, if it passes, counts it.
    ///
    /// # Errors
    /// The first [`RiskRejection`]; nothing is counted then.
    pub fn check_order(
        &mut self,
        account: AccountId,
        order: &OrderIntent,
    ) -> Result<(), RiskRejection> {
        let limits = *self
            .limits
            .get(&account)
            .ok_or(RiskRejection::UnknownAccount { account })?;
        Self::check_step(&limits, order.qty, order.price)?;
        let (long, short) = match order.side {
            Side::Buy => (order.qty.0, 0),
            Side::Sell => (0, order.qty.0),
        };
        self.admit(account, order.period, long, short)
    }
}
