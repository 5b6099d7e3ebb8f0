//! Day-ahead uniform-price call auction: clears the stepwise and piecewise-linear bid
//! curves of one delivery period at a single price.
//!
//! This module owns [`BidCurve`] (a participant's validated buy or sell curve for one
//! period), [`AuctionConfig`] (market rules plus the named limits `points_max` and
//! `curves_max`), [`Auction`] (the clearing, with scratch buffers reused across
//! periods) and [`ClearingResult`] (price, volume and every participant's accepted
//! quantity). Like the rest of the crate it does no I/O, reads no clock and draws no
//! randomness: the same curves always give the same result, whatever their order.
//!
//! # Curves
//! Prices are [`Price`] ticks and quantities whole [`Qty`] lots. A curve's points have
//! strictly increasing prices, each on the market tick and inside the price limits
//! (day-ahead default -500..+4000 EUR/MWh).
//! - [`CurveKind::Stepwise`]: every point is an independent step (a limit order). A buy
//!   step is accepted at any clearing price `<=` its price, a sell step at any price
//!   `>=` its price; the quantities of the steps add up.
//! - [`CurveKind::PiecewiseLinear`]: every point gives the curve's *total* quantity at
//!   that price, interpolated linearly in between (EUPHEMIA's linear curves). A buy curve
//!   is non-increasing in price, a sell curve non-decreasing. Outside its points a curve
//!   behaves like a limit order: a buy curve demands its first quantity at every lower
//!   price and nothing above its last price; a sell curve offers nothing below its first
//!   price and its last quantity at every higher price. Put a zero-quantity point at the
//!   end (buy) or start (sell) to fade out smoothly.
//!
//! The quantity of a curve at a price is always a whole number of lots: a
//! piecewise-linear curve's interpolated value is **floored** to a whole lot (a buyer or
//! seller never gets more than its curve asks for). [`BidCurve::qty_at`] gives it. So
//! every curve is an integer step function on the tick grid and the clearing below is
//! exact integer arithmetic.
//!
//! # Clearing rule (one period)
//! With aggregate demand `D(p)` (sum of buy curves) and supply `S(p)` (sum of sell
//! curves) on the tick grid inside the limits:
//! 1. **Volume.** The traded volume is `V* = max_p min(D(p), S(p))`: all trades with
//!    bid `>=` ask happen (welfare maximal; at-the-money trades are included, i.e. volume
//!    is maximised among welfare-maximal outcomes, so there is no volume indeterminacy).
//! 2. **Admissible prices.** A price `p` is admissible when it can carry `V*` with every
//!    in-the-money quantity accepted and every out-of-the-money quantity rejected:
//!    `D(p) >= V*`, `S(p) >= V*`, `D(p + tick) <= V*` and `S(p - tick) <= V*`. Demand
//!    above the maximum price and supply below the minimum price are zero. The admissible
//!    prices always form a non-empty interval `[low, high]` when `V* > 0`.
//! 3. **Price indeterminacy.** As in EUPHEMIA's public description, the clearing price is
//!    the middle of the admissible interval; when the middle falls between two ticks it is
//!    rounded **down** to the lower tick (`low + (high - low) / 2` in ticks). Both ends
//!    are reported in [`ClearingResult::price_interval`].
//! 4. **Demand or supply left over at the limits.** If demand exceeds supply even at the
//!    maximum price, the price is the maximum price and buyers are curtailed; if supply
//!    exceeds demand even at the minimum price, the price is the minimum and sellers are
//!    curtailed (both follow from the rule above).
//! 5. **No trade.** When `V* = 0` (no bid meets an ask) nothing trades and the reported
//!    price is `None`: the auction does not invent a price for an uncrossed or one-sided
//!    market.
//!
//! # Acceptance and curtailment (ties)
//! At the clearing price `p*` a buyer's quantity strictly in the money is its quantity at
//! `p* + tick` and its at-the-money quantity the rest of its quantity at `p*` (sellers:
//! `p* - tick`). In-the-money quantities are accepted in full. The side whose
//! at-the-money quantity exceeds what `V*` still needs is curtailed **pro rata** to the
//! at-the-money quantities, in whole lots: everyone gets the floor of their exact share,
//! and the lots left over go one each to the largest remainders, ties to the lower
//! [`AccountId`]. The other side is accepted in full at `p*`; for a piecewise-linear curve
//! on that side the accepted quantity is therefore its floored value at `p*`. Curves of
//! the same participant and side are summed first, so a participant is one entry per
//! side and input order never matters.
//!
//! # Invariants
//! - Accepted buy quantities and accepted sell quantities each sum exactly to `volume`.
//! - Every accepted quantity lies between the participant's in-the-money quantity and its
//!   quantity at `p*` (in the money fully accepted, never more than offered at `p*`); so
//!   no rejected buy with limit above `p*` meets a rejected sell with limit below `p*`.
//! - `price` is `None` exactly when `volume` is zero; otherwise it is admissible.
//! - The result depends only on the multiset of curves, not on their order.
//!
//! The property tests in `market/tests/auction_props.rs` check all of the above against a
//! brute-force reference that scans every tick.
//!
//! # Performance
//! Curves are decomposed into steps (the whole-lot part, radix-sorted by price with prefix
//! sums, so summing them at a price is a binary search) and the partial segments of the
//! piecewise-linear pieces. The crossing is found by bisecting the ticks of the curves'
//! price span while dropping the segments that cannot be partial in the remaining window;
//! the admissible interval is then found by galloping out from the crossing within a
//! small window of segments kept around it. No per-tick array over the price range is
//! built, and the buffers are reused across periods. A curve built under the auction's
//! own limits is not validated a second time.
//!
//! ```
//! use voltex_market::auction::{Auction, AuctionConfig, BidCurve, CurveKind, CurvePoint};
//! use voltex_market::{AccountId, Price, Qty, Side};
//!
//! let config = AuctionConfig::day_ahead_default();
//! let point = |price, qty| CurvePoint { price: Price(price), qty: Qty(qty) };
//! let buy = BidCurve::new(
//!     AccountId(1), Side::Buy, CurveKind::Stepwise, vec![point(5_000, 10)], &config,
//! ).unwrap();
//! let sell = BidCurve::new(
//!     AccountId(2), Side::Sell, CurveKind::Stepwise, vec![point(4_000, 10)], &config,
//! ).unwrap();
//! let mut auction = Auction::new(config).unwrap();
//! let result = auction.clear_period(&[buy, sell]).unwrap();
//! assert_eq!(result.price, Some(Price(4_500))); // middle of 40.00..=50.00 EUR/MWh
//! assert_eq!(result.volume, Qty(10));
//! ```

use crate::rules::{MarketRules, RuleError};
use crate::units::{AccountId, Price, Qty, Side};

/// Default largest number of points in one curve.
pub const POINTS_MAX_DEFAULT: usize = 256;
/// Default largest number of curves in one delivery period.
pub const CURVES_MAX_DEFAULT: usize = 100_000;

/// The rules and limits of one auction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuctionConfig {
    /// Tick, price limits and the largest quantity of one curve (`qty_max`).
    pub rules: MarketRules,
    /// Largest number of points in one curve.
    pub points_max: usize,
    /// Largest number of curves in one delivery period.
    pub curves_max: usize,
}

impl AuctionConfig {
    /// Day-ahead defaults: [`MarketRules::day_ahead_default`] (-500..+4000 EUR/MWh, tick
    /// 0.01), [`POINTS_MAX_DEFAULT`] and [`CURVES_MAX_DEFAULT`].
    pub fn day_ahead_default() -> AuctionConfig {
        AuctionConfig::with_rules(MarketRules::day_ahead_default())
    }

    /// These rules with the default limits.
    pub fn with_rules(rules: MarketRules) -> AuctionConfig {
        AuctionConfig {
            rules,
            points_max: POINTS_MAX_DEFAULT,
            curves_max: CURVES_MAX_DEFAULT,
        }
    }

    /// Checks the configuration is consistent and that no sum the auction forms can
    /// overflow.
    ///
    /// # Errors
    /// [`AuctionError::Rules`] if the market rules are invalid,
    /// [`AuctionError::InvalidConfig`] if a limit is zero or too large.
    pub fn validate(&self) -> Result<(), AuctionError> {
        self.rules.validate()?;
        if self.points_max == 0 {
            return Err(AuctionError::InvalidConfig("points_max must be positive"));
        }
        if self.curves_max == 0 {
            return Err(AuctionError::InvalidConfig("curves_max must be positive"));
        }
        let tick = self.rules.tick.0;
        if self.rules.price_min.0.checked_sub(tick).is_none()
            || self.rules.price_max.0.checked_add(tick).is_none()
        {
            return Err(AuctionError::InvalidConfig(
                "price limits too close to the i64 range",
            ));
        }
        let curves_max = i64::try_from(self.curves_max)
            .map_err(|_| AuctionError::InvalidConfig("curves_max does not fit in i64"))?;
        if self.rules.qty_max.0.checked_mul(curves_max).is_none() {
            return Err(AuctionError::InvalidConfig(
                "qty_max * curves_max overflows i64",
            ));
        }
        Ok(())
    }
}

/// How a curve's points are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CurveKind {
    /// Independent steps whose quantities add up (each point is a limit order).
    Stepwise,
    /// Total quantity at each point, linearly interpolated in between (floored to lots).
    PiecewiseLinear,
}

/// One point of a bid curve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct CurvePoint {
    /// Price of the point.
    pub price: Price,
    /// Step quantity ([`CurveKind::Stepwise`]) or total quantity at `price`
    /// ([`CurveKind::PiecewiseLinear`]).
    pub qty: Qty,
}

/// A participant's buy or sell curve for one delivery period, validated on construction.
///
/// Two curves are equal when participant, side, kind and points are; the limits a curve
/// was validated against do not take part.
#[derive(Clone, Debug)]
pub struct BidCurve {
    participant: AccountId,
    side: Side,
    kind: CurveKind,
    points: Vec<CurvePoint>,
    /// The limits `points` were checked against on construction. The fields are private
    /// and never change afterwards, so an auction with the same limits need not check
    /// the curve again.
    validated_for: CurveLimits,
}

impl PartialEq for BidCurve {
    fn eq(&self, other: &BidCurve) -> bool {
        self.participant == other.participant
            && self.side == other.side
            && self.kind == other.kind
            && self.points == other.points
    }
}

impl Eq for BidCurve {}

/// Everything in an [`AuctionConfig`] that decides whether a curve is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CurveLimits {
    tick: Price,
    price_min: Price,
    price_max: Price,
    qty_max: Qty,
    points_max: usize,
}

impl CurveLimits {
    fn of(config: &AuctionConfig) -> CurveLimits {
        CurveLimits {
            tick: config.rules.tick,
            price_min: config.rules.price_min,
            price_max: config.rules.price_max,
            qty_max: config.rules.qty_max,
            points_max: config.points_max,
        }
    }
}

/// Why a bid curve was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurveError {
    /// The curve has no points.
    #[error("a bid curve needs at least one point")]
    Empty,
    /// More points than `points_max`.
    #[error("{n_points} points is more than the limit of {points_max}")]
    TooManyPoints {
        /// Number of points given.
        n_points: usize,
        /// The limit.
        points_max: usize,
    },
    /// A price is off the tick or outside the price limits.
    #[error("point {point_idx}: {source}")]
    Price {
        /// Index of the offending point.
        point_idx: usize,
        /// The broken rule.
        source: RuleError,
    },
    /// A price is not strictly above the previous point's.
    #[error("point {point_idx}: price {price} is not above the previous price {previous}")]
    PricesNotIncreasing {
        /// Index of the offending point.
        point_idx: usize,
        /// Its price.
        price: Price,
        /// The previous point's price.
        previous: Price,
    },
    /// A quantity is negative.
    #[error("point {point_idx}: quantity {qty} is negative")]
    NegativeQty {
        /// Index of the offending point.
        point_idx: usize,
        /// Its quantity.
        qty: Qty,
    },
    /// A piecewise-linear buy curve rises or a sell curve falls with the price.
    #[error(
        "point {point_idx}: a piecewise-linear {side:?} curve must be monotone \
         (buy non-increasing, sell non-decreasing in price)"
    )]
    NonMonotone {
        /// Index of the offending point.
        point_idx: usize,
        /// The curve's side.
        side: Side,
    },
    /// The curve's largest quantity is above the market's `qty_max`.
    #[error("curve quantity {qty} is above the maximum {max}")]
    QtyAboveMax {
        /// The curve's total (stepwise, saturating at `i64::MAX`) or largest
        /// (piecewise-linear) quantity.
        qty: Qty,
        /// The market's maximum.
        max: Qty,
    },
}

impl BidCurve {
    /// Builds a curve and checks it against `config`.
    ///
    /// # Errors
    /// Any [`CurveError`]: no points, too many points, a price off the tick or outside
    /// the limits, prices not strictly increasing, a negative quantity, a non-monotone
    /// piecewise-linear curve, or a total quantity above `qty_max`.
    pub fn new(
        participant: AccountId,
        side: Side,
        kind: CurveKind,
        points: Vec<CurvePoint>,
        config: &AuctionConfig,
    ) -> Result<BidCurve, CurveError> {
        let curve = BidCurve {
            participant,
            side,
            kind,
            points,
            validated_for: CurveLimits::of(config),
        };
        curve.validate(config)?;
        Ok(curve)
    }

    /// The bidding account.
    pub fn participant(&self) -> AccountId {
        self.participant
    }

    /// Buy or sell.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Stepwise or piecewise-linear.
    pub fn kind(&self) -> CurveKind {
        self.kind
    }

    /// The points, by strictly increasing price.
    pub fn points(&self) -> &[CurvePoint] {
        &self.points
    }

    /// Checks the curve against `config` (the auction re-checks every curve against its
    /// own configuration before clearing).
    ///
    /// # Errors
    /// As [`BidCurve::new`].
    pub fn validate(&self, config: &AuctionConfig) -> Result<(), CurveError> {
        let points = &self.points;
        if points.is_empty() {
            return Err(CurveError::Empty);
        }
        if points.len() > config.points_max {
            return Err(CurveError::TooManyPoints {
                n_points: points.len(),
                points_max: config.points_max,
            });
        }
        let mut qty_total = 0_i64;
        for (point_idx, point) in points.iter().enumerate() {
            config
                .rules
                .check_price(point.price)
                .map_err(|source| CurveError::Price { point_idx, source })?;
            if point.qty.0 < 0 {
                return Err(CurveError::NegativeQty {
                    point_idx,
                    qty: point.qty,
                });
            }
            if point_idx > 0 {
                let previous = points[point_idx - 1];
                if point.price <= previous.price {
                    return Err(CurveError::PricesNotIncreasing {
                        point_idx,
                        price: point.price,
                        previous: previous.price,
                    });
                }
                let monotone = match self.side {
                    Side::Buy => point.qty <= previous.qty,
                    Side::Sell => point.qty >= previous.qty,
                };
                if self.kind == CurveKind::PiecewiseLinear && !monotone {
                    return Err(CurveError::NonMonotone {
                        point_idx,
                        side: self.side,
                    });
                }
            }
            qty_total = match self.kind {
                CurveKind::Stepwise => qty_total.saturating_add(point.qty.0),
                CurveKind::PiecewiseLinear => qty_total.max(point.qty.0),
            };
        }
        if qty_total > config.rules.qty_max.0 {
            return Err(CurveError::QtyAboveMax {
                qty: Qty(qty_total),
                max: config.rules.qty_max,
            });
        }
        Ok(())
    }

    /// `(qty_at(p), qty_at(q))` in one pass over a stepwise curve's points.
    fn qty_at_two(&self, p: i64, q: i64) -> (i64, i64) {
        match self.kind {
            CurveKind::Stepwise => {
                let (mut at_p, mut at_q) = (0, 0);
                for point in &self.points {
                    let price = point.price.0;
                    if step_counts(self.side, price, p) {
                        at_p += point.qty.0;
                    }
                    if step_counts(self.side, price, q) {
                        at_q += point.qty.0;
                    }
                }
                (at_p, at_q)
            }
            CurveKind::PiecewiseLinear => (self.qty_at(Price(p)).0, self.qty_at(Price(q)).0),
        }
    }

    /// The quantity this curve buys or sells if the clearing price is `price`, in whole
    /// lots (piecewise-linear values are floored).
    pub fn qty_at(&self, price: Price) -> Qty {
        let p = price.0;
        let points = &self.points;
        let lots = match (self.kind, self.side) {
            (CurveKind::Stepwise, Side::Buy) => points
                .iter()
                .filter(|point| point.price.0 >= p)
                .map(|point| point.qty.0)
                .sum(),
            (CurveKind::Stepwise, Side::Sell) => points
                .iter()
                .filter(|point| point.price.0 <= p)
                .map(|point| point.qty.0)
                .sum(),
            (CurveKind::PiecewiseLinear, side) => {
                let n_at_or_below = points.partition_point(|point| point.price.0 <= p);
                if n_at_or_below == 0 {
                    match side {
                        Side::Buy => points.first().map_or(0, |point| point.qty.0),
                        Side::Sell => 0,
                    }
                } else if n_at_or_below == points.len() {
                    let last = points[points.len() - 1];
                    match side {
                        Side::Buy if last.price.0 == p => last.qty.0,
                        Side::Buy => 0,
                        Side::Sell => last.qty.0,
                    }
                } else {
                    let (a, b) = (points[n_at_or_below - 1], points[n_at_or_below]);
                    let width = b.price.0 - a.price.0;
                    match side {
                        Side::Buy => {
                            b.qty.0 + mul_div_floor(a.qty.0 - b.qty.0, b.price.0 - p, width)
                        }
                        Side::Sell => {
                            a.qty.0 + mul_div_floor(b.qty.0 - a.qty.0, p - a.price.0, width)
                        }
                    }
                }
            }
        };
        Qty(lots)
    }
}

/// Why an auction could not run or could not clear a period.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuctionError {
    /// The market rules are invalid.
    #[error(transparent)]
    Rules(#[from] RuleError),
    /// The auction's limits are inconsistent.
    #[error("invalid auction configuration: {0}")]
    InvalidConfig(&'static str),
    /// More curves in one period than `curves_max`.
    #[error("{n_curves} curves in one period is more than the limit of {curves_max}")]
    TooManyCurves {
        /// Number of curves given.
        n_curves: usize,
        /// The limit.
        curves_max: usize,
    },
    /// A curve breaks this auction's rules.
    #[error("curve {curve_idx} of {participant}: {source}")]
    InvalidCurve {
        /// Index of the curve in the period's input.
        curve_idx: usize,
        /// Its participant.
        participant: AccountId,
        /// What is wrong with it.
        source: CurveError,
    },
}

/// One participant's accepted quantity on one side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Accepted {
    /// The participant.
    pub participant: AccountId,
    /// Buy or sell.
    pub side: Side,
    /// Accepted quantity (all its curves on this side together), possibly zero.
    pub qty: Qty,
}

/// The outcome of one delivery period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClearingResult {
    /// Uniform clearing price; `None` exactly when nothing trades.
    pub price: Option<Price>,
    /// Lowest and highest admissible price; `price` is its middle, rounded down to the
    /// tick. `None` when nothing trades.
    pub price_interval: Option<(Price, Price)>,
    /// Traded volume: the sum of accepted buys and, equally, of accepted sells.
    pub volume: Qty,
    /// One entry per participant and side that submitted a curve, buys first, each side
    /// by increasing participant id.
    pub accepted: Vec<Accepted>,
}

impl ClearingResult {
    /// The accepted quantity of `participant` on `side` (zero if it did not bid).
    pub fn accepted_qty(&self, participant: AccountId, side: Side) -> Qty {
        self.accepted
            .iter()
            .find(|entry| entry.participant == participant && entry.side == side)
            .map_or(Qty::ZERO, |entry| entry.qty)
    }
}

/// Clears one period with `rules` and the default limits.
///
/// # Errors
/// As [`Auction::new`] and [`Auction::clear_period`].
pub fn clear_period(
    curves: &[BidCurve],
    rules: &MarketRules,
) -> Result<ClearingResult, AuctionError> {
    Auction::new(AuctionConfig::with_rules(rules.clone()))?.clear_period(curves)
}

/// Clears every period of a day with `rules` and the default limits; see
/// [`Auction::clear_day`].
///
/// # Errors
/// [`AuctionError`] if the rules are invalid; per-period errors are in the vector.
pub fn clear_day<P: AsRef<[BidCurve]>>(
    periods: &[P],
    rules: &MarketRules,
) -> Result<Vec<Result<ClearingResult, AuctionError>>, AuctionError> {
    Ok(Auction::new(AuctionConfig::with_rules(rules.clone()))?.clear_day(periods))
}

/// A uniform-price call auction with validated configuration and reusable buffers.
#[derive(Debug)]
pub struct Auction {
    config: AuctionConfig,
    buy: SideCurves,
    sell: SideCurves,
    window_buy: Window,
    window_sell: Window,
    entries: Vec<Entry>,
    order: Vec<usize>,
}

impl Auction {
    /// An auction under `config`.
    ///
    /// # Errors
    /// As [`AuctionConfig::validate`].
    pub fn new(config: AuctionConfig) -> Result<Auction, AuctionError> {
        config.validate()?;
        Ok(Auction {
            config,
            buy: SideCurves::new(Side::Buy),
            sell: SideCurves::new(Side::Sell),
            window_buy: Window::default(),
            window_sell: Window::default(),
            entries: Vec::new(),
            order: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AuctionConfig {
        &self.config
    }

    /// Clears each period independently (this auction has no block orders linking
    /// periods), in order; one period's bad input does not withhold the others' results.
    pub fn clear_day<P: AsRef<[BidCurve]>>(
        &mut self,
        periods: &[P],
    ) -> Vec<Result<ClearingResult, AuctionError>> {
        periods
            .iter()
            .map(|curves| self.clear_period(curves.as_ref()))
            .collect()
    }

    /// Clears one delivery period; see the module documentation for the rules.
    ///
    /// # Errors
    /// [`AuctionError::TooManyCurves`], or [`AuctionError::InvalidCurve`] for the first
    /// curve that breaks this auction's configuration.
    ///
    /// # Panics
    /// Only on a bug: the internal consistency assertions (admissible interval not
    /// empty, volumes balancing) hold for every valid input.
    pub fn clear_period(&mut self, curves: &[BidCurve]) -> Result<ClearingResult, AuctionError> {
        if curves.len() > self.config.curves_max {
            return Err(AuctionError::TooManyCurves {
                n_curves: curves.len(),
                curves_max: self.config.curves_max,
            });
        }
        let limits = CurveLimits::of(&self.config);
        for (curve_idx, curve) in curves.iter().enumerate() {
            if curve.validated_for != limits {
                curve
                    .validate(&self.config)
                    .map_err(|source| AuctionError::InvalidCurve {
                        curve_idx,
                        participant: curve.participant,
                        source,
                    })?;
            }
        }
        self.buy.clear();
        self.sell.clear();
        for curve in curves {
            match curve.side {
                Side::Buy => self.buy.add_curve(curve),
                Side::Sell => self.sell.add_curve(curve),
            }
        }
        self.buy.finish();
        self.sell.finish();
        let tick = self.config.rules.tick.0;
        let k_min = self.config.rules.price_min.0 / tick;
        let k_max = self.config.rules.price_max.0 / tick;

        // Without quantity on both sides nothing can trade. Otherwise the crossing lies in
        // the span of the curves' prices: below it supply is zero and demand is all of
        // it; above it demand is zero.
        if self.buy.qty_total == 0 || self.sell.qty_total == 0 {
            return Ok(self.no_trade(curves));
        }
        let span_low = self.buy.price_low.min(self.sell.price_low) / tick;
        let span_high = self.buy.price_high.max(self.sell.price_high) / tick;
        let k_cross = self.find_crossing(k_min.max(span_low), (k_max + 1).min(span_high + 1), tick);

        // Everything else is evaluated near the crossing: one window for each side.
        let near_low = (k_cross - NEAR_TICKS).max(k_min - 1) * tick;
        let near_high = (k_cross + NEAR_TICKS).min(k_max + 1) * tick;
        self.window_buy
            .reset_eval(&self.buy, (near_low, near_high), near_low);
        self.window_sell
            .reset_eval(&self.sell, (near_low, near_high), near_low);
        let demand = Evaluator {
            curves: &self.buy,
            window: &self.window_buy,
            tick,
        };
        let supply = Evaluator {
            curves: &self.sell,
            window: &self.window_sell,
            tick,
        };

        let demand_at_cross = demand.at(k_cross);
        let supply_below_cross = supply.at(k_cross - 1);
        let (volume, k_anchor) = if demand_at_cross >= supply_below_cross {
            (demand_at_cross, k_cross)
        } else {
            (supply_below_cross, k_cross - 1)
        };
        if volume == 0 {
            return Ok(self.no_trade(curves));
        }
        assert!(k_min <= k_anchor, "anchor price below the limits");
        assert!(k_anchor <= k_max, "anchor price above the limits");

        // The admissible interval: each of its four conditions holds at the anchor and is
        // monotone in the price, so each bound is found by galloping out from the anchor.
        let low_demand = gallop_down(k_min, k_anchor, |k| demand.at(k + 1) <= volume);
        let low_supply = gallop_down(k_min, k_anchor, |k| supply.at(k) >= volume);
        let high_supply = gallop_up(k_anchor, k_max, |k| supply.at(k - 1) <= volume);
        let high_demand = gallop_up(k_anchor, k_max, |k| demand.at(k) >= volume);
        let k_low = low_demand.max(low_supply);
        let k_high = high_supply.min(high_demand);
        assert!(k_low <= k_anchor, "anchor below the admissible interval");
        assert!(k_anchor <= k_high, "anchor above the admissible interval");
        let k_price = k_low + (k_high - k_low) / 2;
        let price = k_price * tick;
        let demand_beyond = demand.at(k_price + 1);
        let supply_beyond = supply.at(k_price - 1);

        let accepted = self.allocate(curves, price, tick, volume, demand_beyond, supply_beyond);
        Ok(ClearingResult {
            price: Some(Price(price)),
            price_interval: Some((Price(k_low * tick), Price(k_high * tick))),
            volume: Qty(volume),
            accepted,
        })
    }

    /// Smallest k in `[k_low, k_high]` with `S(k) >= D(k)`, which must hold at `k_high`
    /// (the caller passes a range known to contain the crossing).
    fn find_crossing(&mut self, k_low: i64, k_high: i64, tick: i64) -> i64 {
        let (mut low, mut high) = (k_low, k_high);
        if low >= high {
            return low;
        }
        // Each step restricts both windows to the remaining candidates `[low, high - 1]`
        // and evaluates them at the middle in the same pass.
        let mid = low + (high - low) / 2;
        let window = (low * tick, (high - 1) * tick);
        let mut demand = self.window_buy.reset_eval(&self.buy, window, mid * tick);
        let mut supply = self.window_sell.reset_eval(&self.sell, window, mid * tick);
        loop {
            let mid = low + (high - low) / 2;
            if supply >= demand {
                high = mid;
            } else {
                low = mid + 1;
            }
            if low >= high {
                return low;
            }
            let next = low + (high - low) / 2;
            let window = (low * tick, (high - 1) * tick);
            demand = self.window_buy.narrow_eval(&self.buy, window, next * tick);
            supply = self
                .window_sell
                .narrow_eval(&self.sell, window, next * tick);
        }
    }

    fn no_trade(&mut self, curves: &[BidCurve]) -> ClearingResult {
        self.entries.clear();
        for curve in curves {
            self.entries.push(Entry::new(curve, 0, 0));
        }
        merge_entries(&mut self.entries);
        ClearingResult {
            price: None,
            price_interval: None,
            volume: Qty::ZERO,
            accepted: self
                .entries
                .iter()
                .map(|entry| Accepted {
                    participant: AccountId(entry.participant),
                    side: entry.side(),
                    qty: Qty::ZERO,
                })
                .collect(),
        }
    }

    /// Accepts in-the-money quantities in full and shares what is left of `volume` pro
    /// rata among each side's at-the-money quantities.
    fn allocate(
        &mut self,
        curves: &[BidCurve],
        price: i64,
        tick: i64,
        volume: i64,
        demand_beyond: i64,
        supply_beyond: i64,
    ) -> Vec<Accepted> {
        self.entries.clear();
        for curve in curves {
            let beyond = match curve.side {
                Side::Buy => price + tick,
                Side::Sell => price - tick,
            };
            let (at_price, in_the_money) = curve.qty_at_two(price, beyond);
            self.entries.push(Entry::new(curve, in_the_money, at_price));
        }
        merge_entries(&mut self.entries);
        let n_buy = self.entries.partition_point(|entry| entry.side_idx == 0);
        let (buys, sells) = self.entries.split_at_mut(n_buy);
        assert_eq!(
            buys.iter().map(|entry| entry.in_the_money).sum::<i64>(),
            demand_beyond,
            "per-curve and aggregate demand disagree"
        );
        assert_eq!(
            sells.iter().map(|entry| entry.in_the_money).sum::<i64>(),
            supply_beyond,
            "per-curve and aggregate supply disagree"
        );
        share_pro_rata(buys, volume, &mut self.order);
        share_pro_rata(sells, volume, &mut self.order);
        self.entries
            .iter()
            .map(|entry| Accepted {
                participant: AccountId(entry.participant),
                side: entry.side(),
                qty: Qty(entry.accepted),
            })
            .collect()
    }
}

/// `floor(a * b / c)` for `a, b >= 0`, `c > 0`, without overflow in the product.
fn mul_div_floor(a: i64, b: i64, c: i64) -> i64 {
    debug_assert!(a >= 0 && b >= 0 && c > 0);
    match a.checked_mul(b) {
        Some(product) => product / c,
        // The quotient is at most `a` whenever `b <= c`, as in every caller.
        None => (i128::from(a) * i128::from(b) / i128::from(c)) as i64,
    }
}

/// A whole-lot step of the aggregate: a buy step counts at prices `<= price`, a sell step
/// at prices `>= price`.
#[derive(Clone, Copy, Debug)]
struct Step {
    price: i64,
    qty: i64,
}

/// The fractional part of a piecewise-linear piece, non-zero only strictly between
/// `price_low` and `price_high`: `floor(delta * distance / width)` where distance is
/// measured from `price_high` (buy) or from `price_low` (sell).
#[derive(Clone, Copy, Debug)]
struct Segment {
    price_low: i64,
    price_high: i64,
    delta: i64,
}

impl Segment {
    fn partial(&self, side: Side, p: i64) -> i64 {
        if self.price_low < p && p < self.price_high {
            let distance = match side {
                Side::Buy => self.price_high - p,
                Side::Sell => p - self.price_low,
            };
            mul_div_floor(self.delta, distance, self.price_high - self.price_low)
        } else {
            0
        }
    }
}

fn step_counts(side: Side, step_price: i64, p: i64) -> bool {
    match side {
        Side::Buy => step_price >= p,
        Side::Sell => step_price <= p,
    }
}

/// All curves of one side of one period, decomposed into steps and segments. The sum of
/// a curve's steps counting at `p` plus its segment partials at `p` is exactly
/// [`BidCurve::qty_at`]: inside a linear piece the floor of the curve value equals the
/// whole-lot part below it plus the floor of the fractional piece.
#[derive(Debug)]
struct SideCurves {
    side: Side,
    /// Sorted by price once all curves are added ([`SideCurves::finish`]).
    steps: Vec<Step>,
    /// `qty_prefix[i]` is the sum of the quantities of `steps[..i]`.
    qty_prefix: Vec<i64>,
    /// Scratch space of the radix sort.
    steps_scratch: Vec<Step>,
    segments: Vec<Segment>,
    /// Sum of the steps: demand at the lowest price, supply at the highest.
    qty_total: i64,
    /// Lowest price of any step or segment end (`i64::MAX` when empty).
    price_low: i64,
    /// Highest price of any step or segment end (`i64::MIN` when empty).
    price_high: i64,
}

impl SideCurves {
    fn new(side: Side) -> SideCurves {
        SideCurves {
            side,
            steps: Vec::new(),
            qty_prefix: Vec::new(),
            steps_scratch: Vec::new(),
            segments: Vec::new(),
            qty_total: 0,
            price_low: i64::MAX,
            price_high: i64::MIN,
        }
    }

    fn clear(&mut self) {
        self.steps.clear();
        self.qty_prefix.clear();
        self.segments.clear();
        self.qty_total = 0;
        self.price_low = i64::MAX;
        self.price_high = i64::MIN;
    }

    fn cover(&mut self, price: i64) {
        self.price_low = self.price_low.min(price);
        self.price_high = self.price_high.max(price);
    }

    fn push_step(&mut self, price: Price, qty: i64) {
        if qty > 0 {
            self.steps.push(Step {
                price: price.0,
                qty,
            });
            self.qty_total += qty;
            self.cover(price.0);
        }
    }

    fn add_curve(&mut self, curve: &BidCurve) {
        debug_assert_eq!(curve.side, self.side);
        let points = curve.points();
        match curve.kind {
            CurveKind::Stepwise => {
                for point in points {
                    self.push_step(point.price, point.qty.0);
                }
            }
            CurveKind::PiecewiseLinear => {
                // Buy: q_last counts up to the last price, each drop q_i - q_{i+1} counts
                // in full up to p_i. Sell: q_0 counts from p_0, each rise from p_{i+1}.
                match self.side {
                    Side::Buy => {
                        if let Some(last) = points.last() {
                            self.push_step(last.price, last.qty.0);
                        }
                    }
                    Side::Sell => {
                        if let Some(first) = points.first() {
                            self.push_step(first.price, first.qty.0);
                        }
                    }
                }
                for pair in points.windows(2) {
                    let (a, b) = (pair[0], pair[1]);
                    let delta = match self.side {
                        Side::Buy => a.qty.0 - b.qty.0,
                        Side::Sell => b.qty.0 - a.qty.0,
                    };
                    if delta > 0 {
                        let full_from = match self.side {
                            Side::Buy => a.price,
                            Side::Sell => b.price,
                        };
                        self.push_step(full_from, delta);
                        self.segments.push(Segment {
                            price_low: a.price.0,
                            price_high: b.price.0,
                            delta,
                        });
                        self.cover(a.price.0);
                        self.cover(b.price.0);
                    }
                }
            }
        }
    }

    /// Sorts the steps by price and builds their prefix sums.
    fn finish(&mut self) {
        sort_steps(
            &mut self.steps,
            &mut self.steps_scratch,
            self.price_low,
            self.price_high,
        );
        self.qty_prefix.clear();
        self.qty_prefix.reserve(self.steps.len() + 1);
        let mut sum = 0;
        self.qty_prefix.push(sum);
        for step in &self.steps {
            sum += step.qty;
            self.qty_prefix.push(sum);
        }
    }

    /// Sum of the steps that count at `p` (binary search; needs [`SideCurves::finish`]).
    fn steps_at(&self, p: i64) -> i64 {
        match self.side {
            Side::Buy => {
                let n_below = self.steps.partition_point(|step| step.price < p);
                self.qty_total - self.qty_prefix[n_below]
            }
            Side::Sell => {
                let n_at_or_below = self.steps.partition_point(|step| step.price <= p);
                self.qty_prefix[n_at_or_below]
            }
        }
    }

    /// Aggregate quantity at `p`, scanning every segment.
    fn qty_at(&self, p: i64) -> i64 {
        let partials: i64 = self
            .segments
            .iter()
            .map(|seg| seg.partial(self.side, p))
            .sum();
        self.steps_at(p) + partials
    }
}

/// Sorts `steps` by price. Prices span `[price_low, price_high]`, usually a few hundred
/// thousand ticks at most, so an LSD radix sort on the offset from `price_low` (two
/// passes of 11 bits cover the default day-ahead range) beats a comparison sort; very
/// small inputs and very wide spans use the standard sort.
fn sort_steps(steps: &mut Vec<Step>, scratch: &mut Vec<Step>, price_low: i64, price_high: i64) {
    const DIGIT_BITS: u32 = 11;
    const DIGIT_MASK: u64 = (1 << DIGIT_BITS) - 1;
    const PASSES_MAX: u32 = 3;
    const RADIX_LEN_MIN: usize = 256;
    let span_bits = u64::BITS - price_high.abs_diff(price_low).leading_zeros();
    if steps.len() < RADIX_LEN_MIN || span_bits > PASSES_MAX * DIGIT_BITS {
        steps.sort_unstable_by_key(|step| step.price);
        return;
    }
    let digit =
        |step: &Step, shift: u32| ((step.price.abs_diff(price_low) >> shift) & DIGIT_MASK) as usize;
    let mut starts = [0_usize; 1 << DIGIT_BITS];
    scratch.clear();
    scratch.resize(steps.len(), Step { price: 0, qty: 0 });
    for pass in 0..span_bits.div_ceil(DIGIT_BITS) {
        let shift = pass * DIGIT_BITS;
        starts.fill(0);
        for step in steps.iter() {
            starts[digit(step, shift)] += 1;
        }
        let mut start = 0;
        for slot in starts.iter_mut() {
            let count = *slot;
            *slot = start;
            start += count;
        }
        for step in steps.iter() {
            let slot = &mut starts[digit(step, shift)];
            scratch[*slot] = *step;
            *slot += 1;
        }
        std::mem::swap(steps, scratch);
    }
    debug_assert!(steps.windows(2).all(|pair| pair[0].price <= pair[1].price));
}

/// The segments of one side that can be partial inside a price window `[low, high]`
/// (the steps are summed by binary search instead).
#[derive(Debug, Default)]
struct Window {
    /// Lowest price the window covers.
    low: i64,
    /// Highest price the window covers (`low > high`: empty).
    high: i64,
    segments: Vec<Segment>,
}

fn segment_in_window(segment: &Segment, low: i64, high: i64) -> bool {
    segment.price_low < high && segment.price_high > low
}

impl Window {
    fn contains(&self, price: i64) -> bool {
        self.low <= price && price <= self.high
    }

    /// Keeps the segments of `curves` that can be partial inside `[low, high]` and
    /// returns the quantity at `p` (inside the window).
    fn reset_eval(&mut self, curves: &SideCurves, (low, high): (i64, i64), p: i64) -> i64 {
        debug_assert!(low <= p && p <= high, "evaluated outside the window");
        (self.low, self.high) = (low, high);
        let mut partials = 0;
        self.segments.clear();
        for segment in &curves.segments {
            if segment_in_window(segment, low, high) {
                partials += segment.partial(curves.side, p);
                self.segments.push(*segment);
            }
        }
        curves.steps_at(p) + partials
    }

    /// Narrows the window to `[low, high]` and returns the quantity at `p` inside it.
    fn narrow_eval(&mut self, curves: &SideCurves, (low, high): (i64, i64), p: i64) -> i64 {
        debug_assert!(
            self.low <= low && high <= self.high,
            "a window only narrows"
        );
        debug_assert!(low <= p && p <= high, "evaluated outside the window");
        (self.low, self.high) = (low, high);
        let mut partials = 0;
        self.segments.retain(|segment| {
            let keep = segment_in_window(segment, low, high);
            if keep {
                partials += segment.partial(curves.side, p);
            }
            keep
        });
        curves.steps_at(p) + partials
    }

    fn eval(&self, curves: &SideCurves, p: i64) -> i64 {
        debug_assert!(self.contains(p), "evaluated outside the window");
        let partials: i64 = self
            .segments
            .iter()
            .map(|seg| seg.partial(curves.side, p))
            .sum();
        curves.steps_at(p) + partials
    }
}

/// Half-width in ticks of the windows kept around the crossing for the final searches.
const NEAR_TICKS: i64 = 64;

/// Evaluates one side's aggregate at a tick index: in its window when the price is inside,
/// by a full scan otherwise.
struct Evaluator<'a> {
    curves: &'a SideCurves,
    window: &'a Window,
    tick: i64,
}

impl Evaluator<'_> {
    fn at(&self, k: i64) -> i64 {
        let price = k * self.tick;
        if self.window.contains(price) {
            self.window.eval(self.curves, price)
        } else {
            self.curves.qty_at(price)
        }
    }
}

/// Smallest k in `[k_floor, k_start]` with `pred(k)`, where `pred` is monotone
/// (false, then true) and holds at `k_start`: probes 1, 2, 4, ... ticks below `k_start`,
/// then bisects the last step.
fn gallop_down(k_floor: i64, k_start: i64, mut pred: impl FnMut(i64) -> bool) -> i64 {
    let mut known_true = k_start;
    let mut known_false = k_floor - 1;
    let mut step = 1;
    while known_true > k_floor {
        let probe = (known_true - step).max(k_floor);
        if pred(probe) {
            known_true = probe;
            step *= 2;
        } else {
            known_false = probe;
            break;
        }
    }
    while known_true - known_false > 1 {
        let mid = known_false + (known_true - known_false) / 2;
        if pred(mid) {
            known_true = mid;
        } else {
            known_false = mid;
        }
    }
    known_true
}

/// Largest k in `[k_start, k_ceiling]` with `pred(k)`, where `pred` is monotone (true,
/// then false) and holds at `k_start`; the mirror image of [`gallop_down`].
fn gallop_up(k_start: i64, k_ceiling: i64, mut pred: impl FnMut(i64) -> bool) -> i64 {
    -gallop_down(-k_ceiling, -k_start, |k| pred(-k))
}

/// One participant's position on one side at the clearing price.
#[derive(Clone, Copy, Debug)]
struct Entry {
    side_idx: u8,
    participant: u32,
    /// Quantity strictly in the money (accepted in full).
    in_the_money: i64,
    /// Quantity at the clearing price (the most that can be accepted).
    at_price: i64,
    accepted: i64,
    remainder: i128,
}

impl Entry {
    fn new(curve: &BidCurve, in_the_money: i64, at_price: i64) -> Entry {
        Entry {
            side_idx: curve.side.index() as u8,
            participant: curve.participant.0,
            in_the_money,
            at_price,
            accepted: 0,
            remainder: 0,
        }
    }

    fn side(&self) -> Side {
        if self.side_idx == 0 {
            Side::Buy
        } else {
            Side::Sell
        }
    }
}

/// Sorts by (side, participant) and sums entries of the same participant and side.
fn merge_entries(entries: &mut Vec<Entry>) {
    entries.sort_unstable_by_key(|entry| {
        (u64::from(entry.side_idx) << 32) | u64::from(entry.participant)
    });
    let mut n_merged = 0;
    for idx in 0..entries.len() {
        let entry = entries[idx];
        if n_merged > 0 {
            let last = &mut entries[n_merged - 1];
            if last.side_idx == entry.side_idx && last.participant == entry.participant {
                last.in_the_money += entry.in_the_money;
                last.at_price += entry.at_price;
                continue;
            }
        }
        entries[n_merged] = entry;
        n_merged += 1;
    }
    entries.truncate(n_merged);
}

/// Accepts every entry's in-the-money quantity and shares the rest of `volume` pro rata
/// to the at-the-money quantities: floors first, then one lot each to the largest
/// remainders, ties to the lower participant id.
fn share_pro_rata(entries: &mut [Entry], volume: i64, order: &mut Vec<usize>) {
    let in_the_money: i64 = entries.iter().map(|entry| entry.in_the_money).sum();
    let at_the_money: i64 = entries
        .iter()
        .map(|entry| entry.at_price - entry.in_the_money)
        .sum();
    let to_share = volume - in_the_money;
    assert!(to_share >= 0, "in-the-money quantity exceeds the volume");
    assert!(
        to_share <= at_the_money,
        "volume exceeds the quantity offered at the price"
    );
    let mut shared = 0_i64;
    for entry in entries.iter_mut() {
        let at_money = entry.at_price - entry.in_the_money;
        debug_assert!(at_money >= 0);
        let (floor, remainder) = if at_the_money == 0 {
            (0, 0)
        } else {
            let exact = i128::from(to_share) * i128::from(at_money);
            let total = i128::from(at_the_money);
            ((exact / total) as i64, exact % total)
        };
        entry.accepted = entry.in_the_money + floor;
        entry.remainder = remainder;
        shared += floor;
    }
    let leftover = usize::try_from(to_share - shared).unwrap_or(0);
    if leftover > 0 {
        order.clear();
        order.extend((0..entries.len()).filter(|&idx| entries[idx].remainder > 0));
        order.sort_unstable_by(|&a, &b| {
            let (a, b) = (&entries[a], &entries[b]);
            b.remainder
                .cmp(&a.remainder)
                .then(a.participant.cmp(&b.participant))
        });
        assert!(
            order.len() >= leftover,
            "not enough remainders for the leftover lots"
        );
        for &idx in order.iter().take(leftover) {
            entries[idx].accepted += 1;
        }
    }
    debug_assert_eq!(
        entries.iter().map(|entry| entry.accepted).sum::<i64>(),
        volume
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuctionConfig {
        AuctionConfig::day_ahead_default()
    }

    fn curve(id: u32, side: Side, kind: CurveKind, points: &[(i64, i64)]) -> BidCurve {
        let points = points.iter().map(|&(price, qty)| CurvePoint {
            price: Price(price),
            qty: Qty(qty),
        });
        BidCurve::new(AccountId(id), side, kind, points.collect(), &config()).unwrap()
    }

    fn buy(id: u32, price: i64, qty: i64) -> BidCurve {
        curve(id, Side::Buy, CurveKind::Stepwise, &[(price, qty)])
    }

    fn sell(id: u32, price: i64, qty: i64) -> BidCurve {
        curve(id, Side::Sell, CurveKind::Stepwise, &[(price, qty)])
    }

    fn clear(curves: &[BidCurve]) -> ClearingResult {
        Auction::new(config())
            .unwrap()
            .clear_period(curves)
            .unwrap()
    }

    fn accepted(result: &ClearingResult, id: u32, side: Side) -> i64 {
        result.accepted_qty(AccountId(id), side).0
    }

    #[test]
    fn simple_cross_clears_at_the_middle_of_the_overlap() {
        let result = clear(&[buy(1, 5_000, 10), sell(2, 4_000, 10)]);
        assert_eq!(result.price, Some(Price(4_500)));
        assert_eq!(result.price_interval, Some((Price(4_000), Price(5_000))));
        assert_eq!(result.volume, Qty(10));
        assert_eq!(
            result.accepted,
            vec![
                Accepted {
                    participant: AccountId(1),
                    side: Side::Buy,
                    qty: Qty(10)
                },
                Accepted {
                    participant: AccountId(2),
                    side: Side::Sell,
                    qty: Qty(10)
                },
            ]
        );
    }

    #[test]
    fn no_cross_trades_nothing_and_reports_no_price() {
        let result = clear(&[buy(1, 3_000, 10), sell(2, 4_000, 10)]);
        assert_eq!(result.price, None);
        assert_eq!(result.price_interval, None);
        assert_eq!(result.volume, Qty(0));
        assert_eq!(accepted(&result, 1, Side::Buy), 0);
        assert_eq!(accepted(&result, 2, Side::Sell), 0);
        assert_eq!(result.accepted.len(), 2);
    }

    #[test]
    fn empty_period_and_one_sided_period_trade_nothing() {
        assert_eq!(clear(&[]).price, None);
        let result = clear(&[buy(1, 5_000, 10), buy(2, 6_000, 3)]);
        assert_eq!((result.price, result.volume), (None, Qty(0)));
    }

    #[test]
    fn marginal_seller_sets_the_price_and_is_curtailed() {
        let result = clear(&[buy(1, 5_000, 10), sell(2, 4_000, 5), sell(3, 4_500, 10)]);
        assert_eq!(result.price, Some(Price(4_500)));
        assert_eq!(result.price_interval, Some((Price(4_500), Price(4_500))));
        assert_eq!(result.volume, Qty(10));
        assert_eq!(accepted(&result, 1, Side::Buy), 10);
        assert_eq!(accepted(&result, 2, Side::Sell), 5);
        assert_eq!(accepted(&result, 3, Side::Sell), 5);
    }

    #[test]
    fn marginal_buyer_sets_the_price_and_is_curtailed() {
        let result = clear(&[sell(9, 4_000, 10), buy(1, 5_000, 5), buy(2, 4_500, 10)]);
        assert_eq!(result.price, Some(Price(4_500)));
        assert_eq!(result.price_interval, Some((Price(4_500), Price(4_500))));
        assert_eq!(result.volume, Qty(10));
        assert_eq!(accepted(&result, 1, Side::Buy), 5);
        assert_eq!(accepted(&result, 2, Side::Buy), 5);
        assert_eq!(accepted(&result, 9, Side::Sell), 10);
    }

    #[test]
    fn indeterminate_interval_takes_the_middle_rounded_down_to_the_tick() {
        // Admissible 40.00..=50.01: the exact middle 45.005 is rounded down to 45.00.
        let result = clear(&[buy(1, 5_001, 10), sell(2, 4_000, 10)]);
        assert_eq!(result.price_interval, Some((Price(4_000), Price(5_001))));
        assert_eq!(result.price, Some(Price(4_500)));
        // With a coarser tick the middle is rounded to that tick.
        let mut rules = MarketRules::day_ahead_default();
        rules.tick = Price(10);
        let config = AuctionConfig::with_rules(rules);
        let step = |id, side, price| {
            let points = vec![CurvePoint {
                price: Price(price),
                qty: Qty(4),
            }];
            BidCurve::new(AccountId(id), side, CurveKind::Stepwise, points, &config).unwrap()
        };
        let curves = [step(1, Side::Buy, 5_010), step(2, Side::Sell, 4_000)];
        let result = Auction::new(config.clone())
            .unwrap()
            .clear_period(&curves)
            .unwrap();
        assert_eq!(result.price, Some(Price(4_500)));
    }

    #[test]
    fn pro_rata_curtailment_gives_the_remainder_lot_to_the_lowest_id_on_equal_remainders() {
        let result = clear(&[
            buy(3, 4_000, 4),
            buy(1, 4_000, 4),
            buy(2, 4_000, 4),
            sell(9, 4_000, 10),
        ]);
        assert_eq!(result.price, Some(Price(4_000)));
        assert_eq!(result.volume, Qty(10));
        assert_eq!(accepted(&result, 1, Side::Buy), 4);
        assert_eq!(accepted(&result, 2, Side::Buy), 3);
        assert_eq!(accepted(&result, 3, Side::Buy), 3);
        let ids: Vec<u32> = result
            .accepted
            .iter()
            .map(|entry| entry.participant.0)
            .collect();
        assert_eq!(ids, vec![1, 2, 3, 9]);
    }

    #[test]
    fn pro_rata_curtailment_gives_the_remainder_lot_to_the_largest_remainder() {
        // Shares of 10 lots for 7 and 5 at-the-money lots: 5.83 and 4.17.
        let result = clear(&[buy(2, 4_000, 5), buy(5, 4_000, 7), sell(9, 4_000, 10)]);
        assert_eq!(accepted(&result, 5, Side::Buy), 6);
        assert_eq!(accepted(&result, 2, Side::Buy), 4);
    }

    #[test]
    fn curves_of_one_participant_are_summed_before_curtailment() {
        let result = clear(&[
            buy(1, 4_000, 2),
            buy(1, 4_000, 2),
            buy(2, 4_000, 4),
            sell(9, 4_000, 4),
        ]);
        assert_eq!(accepted(&result, 1, Side::Buy), 2);
        assert_eq!(accepted(&result, 2, Side::Buy), 2);
        assert_eq!(result.accepted.len(), 3);
    }

    #[test]
    fn piecewise_linear_curves_clear_at_their_intersection() {
        let pwl = CurveKind::PiecewiseLinear;
        let demand = curve(1, Side::Buy, pwl, &[(4_000, 20), (6_000, 0)]);
        let supply = curve(2, Side::Sell, pwl, &[(4_000, 0), (6_000, 20)]);
        let result = clear(&[demand, supply]);
        assert_eq!(result.price, Some(Price(5_000)));
        assert_eq!(result.price_interval, Some((Price(5_000), Price(5_000))));
        assert_eq!(result.volume, Qty(10));
    }

    #[test]
    fn piecewise_linear_values_are_floored_and_still_balance() {
        // D(p) = floor(0.015 (6000 - p)), S(p) = floor(0.005 (p - 4000)): the real curves
        // meet at 55.00 with 7.5 lots. Floored, 7 lots trade at every price of
        // 54.66..=55.33 (D(p + 0.01) <= 7 from 54.66, D >= 7 up to 55.33): middle 54.99.
        let pwl = CurveKind::PiecewiseLinear;
        let demand = curve(1, Side::Buy, pwl, &[(4_000, 30), (6_000, 0)]);
        let supply = curve(2, Side::Sell, pwl, &[(4_000, 0), (6_000, 10)]);
        let result = clear(&[demand, supply]);
        assert_eq!(result.price_interval, Some((Price(5_466), Price(5_533))));
        assert_eq!(result.price, Some(Price(5_499)));
        assert_eq!(result.volume, Qty(7));
        assert_eq!(accepted(&result, 1, Side::Buy), 7);
        assert_eq!(accepted(&result, 2, Side::Sell), 7);
    }

    #[test]
    fn piecewise_linear_meets_stepwise_and_the_step_is_curtailed() {
        // Sell 15 lots at 45.00; demand falls from 20 at 40.00 to 0 at 60.00, 15 at 45.00.
        let pwl = CurveKind::PiecewiseLinear;
        let demand = curve(1, Side::Buy, pwl, &[(4_000, 20), (6_000, 0)]);
        let result = clear(&[demand, sell(2, 4_500, 30)]);
        assert_eq!(result.price, Some(Price(4_500)));
        assert_eq!(result.volume, Qty(15));
        assert_eq!(accepted(&result, 1, Side::Buy), 15);
        assert_eq!(accepted(&result, 2, Side::Sell), 15);
    }

    #[test]
    fn negative_prices_clear_like_any_other() {
        let result = clear(&[buy(1, -10_000, 10), sell(2, -20_000, 10)]);
        assert_eq!(result.price, Some(Price(-15_000)));
        assert_eq!(result.volume, Qty(10));
    }

    #[test]
    fn demand_left_over_at_the_maximum_price_clears_at_the_maximum() {
        let result = clear(&[buy(1, 400_000, 20), sell(2, 10_000, 5)]);
        assert_eq!(result.price, Some(Price(400_000)));
        assert_eq!(result.volume, Qty(5));
        assert_eq!(accepted(&result, 1, Side::Buy), 5);
    }

    #[test]
    fn supply_left_over_at_the_minimum_price_clears_at_the_minimum() {
        let result = clear(&[buy(1, -50_000, 5), sell(2, -50_000, 20)]);
        assert_eq!(result.price, Some(Price(-50_000)));
        assert_eq!(result.volume, Qty(5));
        assert_eq!(accepted(&result, 2, Side::Sell), 5);
    }

    #[test]
    fn piecewise_linear_curve_outside_its_points_acts_like_a_limit_order() {
        let pwl = CurveKind::PiecewiseLinear;
        let demand = curve(1, Side::Buy, pwl, &[(1_000, 8), (2_000, 4)]);
        assert_eq!(demand.qty_at(Price(500)), Qty(8));
        assert_eq!(demand.qty_at(Price(1_500)), Qty(6));
        assert_eq!(demand.qty_at(Price(1_501)), Qty(5)); // 5.996 floored
        assert_eq!(demand.qty_at(Price(2_000)), Qty(4));
        assert_eq!(demand.qty_at(Price(2_001)), Qty(0));
        let supply = curve(2, Side::Sell, pwl, &[(1_000, 4), (2_000, 8)]);
        assert_eq!(supply.qty_at(Price(999)), Qty(0));
        assert_eq!(supply.qty_at(Price(1_000)), Qty(4));
        assert_eq!(supply.qty_at(Price(1_999)), Qty(7)); // 7.996 floored
        assert_eq!(supply.qty_at(Price(3_000)), Qty(8));
    }

    fn points(points: &[(i64, i64)]) -> Vec<CurvePoint> {
        points
            .iter()
            .map(|&(price, qty)| CurvePoint {
                price: Price(price),
                qty: Qty(qty),
            })
            .collect()
    }

    fn new_curve(side: Side, kind: CurveKind, pts: &[(i64, i64)]) -> Result<BidCurve, CurveError> {
        BidCurve::new(AccountId(1), side, kind, points(pts), &config())
    }

    #[test]
    fn curve_without_points_is_refused() {
        assert_eq!(
            new_curve(Side::Buy, CurveKind::Stepwise, &[]),
            Err(CurveError::Empty)
        );
    }

    #[test]
    fn curve_with_more_than_points_max_points_is_refused() {
        let mut config = config();
        config.points_max = 2;
        let result = BidCurve::new(
            AccountId(1),
            Side::Buy,
            CurveKind::Stepwise,
            points(&[(1, 1), (2, 1), (3, 1)]),
            &config,
        );
        assert_eq!(
            result,
            Err(CurveError::TooManyPoints {
                n_points: 3,
                points_max: 2
            })
        );
    }

    #[test]
    fn curve_price_outside_the_limits_or_off_tick_is_refused() {
        let result = new_curve(Side::Sell, CurveKind::Stepwise, &[(400_001, 1)]);
        assert!(matches!(
            result,
            Err(CurveError::Price {
                point_idx: 0,
                source: RuleError::PriceOutOfLimits { .. }
            })
        ));
        let result = new_curve(
            Side::Sell,
            CurveKind::Stepwise,
            &[(-50_000, 1), (-50_001, 1)],
        );
        assert!(matches!(
            result,
            Err(CurveError::Price {
                point_idx: 1,
                source: RuleError::PriceOutOfLimits { .. }
            })
        ));
        let mut config = config();
        config.rules.tick = Price(10);
        let result = BidCurve::new(
            AccountId(1),
            Side::Buy,
            CurveKind::Stepwise,
            points(&[(1_005, 1)]),
            &config,
        );
        assert!(matches!(
            result,
            Err(CurveError::Price {
                point_idx: 0,
                source: RuleError::PriceOffTick { .. }
            })
        ));
    }

    #[test]
    fn curve_prices_not_strictly_increasing_are_refused() {
        let result = new_curve(Side::Buy, CurveKind::Stepwise, &[(100, 1), (100, 2)]);
        assert_eq!(
            result,
            Err(CurveError::PricesNotIncreasing {
                point_idx: 1,
                price: Price(100),
                previous: Price(100)
            })
        );
    }

    #[test]
    fn curve_negative_quantity_is_refused() {
        let result = new_curve(Side::Sell, CurveKind::PiecewiseLinear, &[(100, -1)]);
        assert_eq!(
            result,
            Err(CurveError::NegativeQty {
                point_idx: 0,
                qty: Qty(-1)
            })
        );
    }

    #[test]
    fn piecewise_linear_curve_on_the_wrong_slope_is_refused() {
        let pwl = CurveKind::PiecewiseLinear;
        let result = new_curve(Side::Buy, pwl, &[(100, 1), (200, 2)]);
        assert_eq!(
            result,
            Err(CurveError::NonMonotone {
                point_idx: 1,
                side: Side::Buy
            })
        );
        let result = new_curve(Side::Sell, pwl, &[(100, 2), (200, 1)]);
        assert_eq!(
            result,
            Err(CurveError::NonMonotone {
                point_idx: 1,
                side: Side::Sell
            })
        );
        // Stepwise steps are independent: any non-negative quantities are fine.
        assert!(new_curve(Side::Buy, CurveKind::Stepwise, &[(100, 1), (200, 2)]).is_ok());
    }

    #[test]
    fn curve_quantity_above_the_market_maximum_is_refused() {
        let max = config().rules.qty_max;
        let result = new_curve(Side::Buy, CurveKind::Stepwise, &[(100, max.0), (200, 1)]);
        assert_eq!(
            result,
            Err(CurveError::QtyAboveMax {
                qty: Qty(max.0 + 1),
                max
            })
        );
        assert!(
            new_curve(
                Side::Sell,
                CurveKind::PiecewiseLinear,
                &[(1, 0), (2, max.0)]
            )
            .is_ok()
        );
    }

    #[test]
    fn auction_rechecks_curves_against_its_own_rules() {
        let curve = buy(1, 300_000, 10);
        let mut rules = MarketRules::day_ahead_default();
        rules.price_max = Price(100_000);
        let result = clear_period(&[sell(2, 100, 1), curve], &rules);
        assert!(matches!(
            result,
            Err(AuctionError::InvalidCurve {
                curve_idx: 1,
                participant: AccountId(1),
                ..
            })
        ));
    }

    #[test]
    fn too_many_curves_in_a_period_are_refused() {
        let mut config = config();
        config.curves_max = 1;
        let mut auction = Auction::new(config).unwrap();
        let result = auction.clear_period(&[buy(1, 100, 1), sell(2, 100, 1)]);
        assert_eq!(
            result,
            Err(AuctionError::TooManyCurves {
                n_curves: 2,
                curves_max: 1
            })
        );
    }

    #[test]
    fn inconsistent_configuration_is_refused() {
        let mut config = config();
        config.points_max = 0;
        assert!(matches!(
            Auction::new(config),
            Err(AuctionError::InvalidConfig(_))
        ));
        let mut config = AuctionConfig::day_ahead_default();
        config.rules.tick = Price(0);
        assert!(matches!(Auction::new(config), Err(AuctionError::Rules(_))));
        let mut config = AuctionConfig::day_ahead_default();
        config.rules.qty_max = Qty(i64::MAX / 2);
        assert!(matches!(
            Auction::new(config),
            Err(AuctionError::InvalidConfig(_))
        ));
    }

    #[test]
    fn radix_sort_of_steps_orders_by_price_like_the_standard_sort() {
        // Spans needing one, two and three 11-bit passes; then the small-input fallback.
        for (span, n_steps) in [(1_000_i64, 300), (450_000, 5_000), (3_000_000_000, 700)] {
            let mut state = 0x9E37_79B9_7F4A_7C15_u64;
            let mut steps: Vec<Step> = (0..n_steps)
                .map(|idx| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1);
                    let offset = ((state >> 11) % (span as u64 + 1)) as i64;
                    Step {
                        price: -50_000 + offset,
                        qty: idx,
                    }
                })
                .collect();
            let mut expected = steps.clone();
            expected.sort_by_key(|step| step.price); // stable, as the radix sort is
            let price_high = steps.iter().map(|step| step.price).max().unwrap();
            let price_low = steps.iter().map(|step| step.price).min().unwrap();
            sort_steps(&mut steps, &mut Vec::new(), price_low, price_high);
            let got: Vec<(i64, i64)> = steps.iter().map(|step| (step.price, step.qty)).collect();
            let want: Vec<(i64, i64)> =
                expected.iter().map(|step| (step.price, step.qty)).collect();
            assert_eq!(got, want, "span {span}");
        }
        let mut wide = vec![
            Step {
                price: i64::MAX,
                qty: 1,
            },
            Step {
                price: i64::MIN,
                qty: 2,
            },
        ];
        sort_steps(&mut wide, &mut Vec::new(), i64::MIN, i64::MAX);
        assert_eq!(wide[0].price, i64::MIN);
    }

    #[test]
    fn clear_day_clears_each_period_independently() {
        let periods = vec![
            vec![buy(1, 5_000, 10), sell(2, 4_000, 10)],
            vec![buy(1, 5_000, 10), sell(2, 400_001 - 1, 10)],
            vec![],
        ];
        let rules = MarketRules::day_ahead_default();
        let results = clear_day(&periods, &rules).unwrap();
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].as_ref().map(|r| r.price), Ok(Some(Price(4_500))));
        assert_eq!(results[1].as_ref().map(|r| r.volume), Ok(Qty(0)));
        assert_eq!(results[2].as_ref().map(|r| r.price), Ok(None));
    }
}
