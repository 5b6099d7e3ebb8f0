//! Bids cleared against a replayed market. The backtest, the simulator and `voltex up`
//! replay a price series with no other participants, so the rest of the market is one
//! counterparty that buys and sells any quantity at the replayed price
//! ([`replay_counterparty`]); [`ReplayMarket`] clears each period's bid curves against it
//! in a call auction and reports what the bidder won.
//!
//! # Guarantees
//! - The counterparty's price is the replayed price clamped into the rules' limits and
//!   rounded to the nearest tick (half to even), so its curves are valid under any
//!   valid rules, and an unrepresentable price saturates at a limit instead of wrapping.
//! - Against that counterparty a call auction accepts exactly the bidder's steps that
//!   are in the money at the replayed price (a buy limit at or above it, a sell limit at
//!   or below it).
//! - [`ReplayMarket::clear_day`] clears every period independently and returns the
//!   bidder's net accepted power per period in W (positive = sell), exact in lots; a
//!   period without bids is zero and runs no auction.
//! - [`ReplayMarket::clear_day_with_families`] clears the bidder's linked block families
//!   ([`voltex_market::block`]) in the same day: since the replayed market is deep, a
//!   family is accepted exactly when its surplus at the replayed prices is `>= 0`, and
//!   then counts in full.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use voltex_market::auction::{
    Auction, AuctionConfig, AuctionError, BidCurve, CurveError, CurveKind, CurvePoint,
};
use voltex_market::block::{BlockFamily, FamilyClearingError, clear_day_with_families};
use voltex_market::{AccountId, MarketRules, Price, Side};

use super::PeriodCurve;

/// Why bids could not be cleared against the replay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Bidder and counterparty are one account.
    #[error("the bidder and the replayed market must be different accounts ({0:?})")]
    SameAccount(AccountId),
    /// The auction configuration is unusable.
    #[error("auction configuration: {0}")]
    Config(AuctionError),
    /// Curves and prices differ in length.
    #[error("{curves} period curves for {prices} replayed prices")]
    LengthMismatch {
        /// Period curves given.
        curves: usize,
        /// Replayed prices given.
        prices: usize,
    },
    /// A period's bid breaks the auction's rules.
    #[error("period {period}: {source}")]
    Curve {
        /// The period.
        period: usize,
        /// Why the curve was refused.
        source: CurveError,
    },
    /// A period's auction could not clear.
    #[error("period {period}: {source}")]
    Auction {
        /// The period.
        period: usize,
        /// Why.
        source: AuctionError,
    },
    /// The accepted lots do not fit in W.
    #[error("period {period}: accepted power overflows i64 W")]
    Overflow {
        /// The period.
        period: usize,
    },
    /// The day with block families could not clear.
    #[error("block families: {0}")]
    Families(FamilyClearingError),
    /// A block family belongs to another account than the bidder.
    #[error("a block family of {0:?} bid as the replay's bidder")]
    ForeignFamily(AccountId),
}

/// The rest of the market when replaying a price series: `account` buys and sells the
/// market's largest quantity at `real_price`, clamped into the price limits and rounded
/// to the nearest tick, so a call auction accepts exactly the steps in the money at
/// that price.
///
/// # Errors
/// The auction's [`CurveError`] if `config` rejects the curves (invalid rules).
pub fn replay_counterparty(
    account: AccountId,
    real_price: Decimal,
    config: &AuctionConfig,
) -> Result<[BidCurve; 2], CurveError> {
    let point = vec![CurvePoint {
        price: replay_price(real_price, &config.rules),
        qty: config.rules.qty_max,
    }];
    Ok([
        BidCurve::new(
            account,
            Side::Buy,
            CurveKind::Stepwise,
            point.clone(),
            config,
        )?,
        BidCurve::new(account, Side::Sell, CurveKind::Stepwise, point, config)?,
    ])
}

/// `real_price` (EUR/MWh) clamped into the limits and rounded to the nearest tick (the
/// replayed market's price in the call auction and the intraday maker's mid).
pub(super) fn replay_price(real_price: Decimal, rules: &MarketRules) -> Price {
    let tick_cents = Decimal::from(rules.tick.0.max(1));
    let cents = real_price.clamp(rules.price_min.to_decimal(), rules.price_max.to_decimal())
        * Decimal::from(100);
    let ticks = (cents / tick_cents).round().to_i64().unwrap_or(0);
    // On the grid and inside the limits: the limits are themselves on the grid.
    Price(
        ticks
            .saturating_mul(rules.tick.0)
            .clamp(rules.price_min.0, rules.price_max.0),
    )
}

/// One bidder against the replayed market, with the auction it clears in (kept, so its
/// buffers are reused from period to period).
#[derive(Debug)]
pub struct ReplayMarket {
    bidder: AccountId,
    market: AccountId,
    auction: Auction,
    bids: Vec<BidCurve>,
}

impl ReplayMarket {
    /// `bidder`'s curves will clear against `market`, the replay's counterparty, under
    /// `config`.
    ///
    /// # Errors
    /// [`ReplayError::SameAccount`] or [`ReplayError::Config`].
    pub fn new(
        bidder: AccountId,
        market: AccountId,
        config: AuctionConfig,
    ) -> Result<ReplayMarket, ReplayError> {
        if bidder == market {
            return Err(ReplayError::SameAccount(bidder));
        }
        Ok(ReplayMarket {
            bidder,
            market,
            auction: Auction::new(config).map_err(ReplayError::Config)?,
            bids: Vec::with_capacity(4),
        })
    }

    /// The auction's configuration.
    pub fn config(&self) -> &AuctionConfig {
        self.auction.config()
    }

    /// Clears `curves[t]` against the replayed price `real_prices[t]` for every period
    /// and returns the bidder's net accepted power per period, W (positive = sell).
    ///
    /// # Errors
    /// [`ReplayError::LengthMismatch`], or the first period whose curve or auction
    /// fails.
    pub fn clear_day(
        &mut self,
        curves: &[PeriodCurve],
        real_prices: &[Decimal],
    ) -> Result<Vec<i64>, ReplayError> {
        check_lengths(curves, real_prices)?;
        let lot_w = self.config().rules.lot_kw.saturating_mul(1_000);
        let mut accepted_w = Vec::with_capacity(curves.len());
        for (period, (curve, real_price)) in curves.iter().zip(real_prices).enumerate() {
            self.bids.clear();
            let (bidder, market) = (self.bidder, self.market);
            let bid = push_period_bids(
                (bidder, market),
                self.auction.config(),
                (period, curve, *real_price),
                false,
                &mut self.bids,
            )?;
            if !bid {
                accepted_w.push(0);
                continue;
            }
            let result = self
                .auction
                .clear_period(&self.bids)
                .map_err(|source| ReplayError::Auction { period, source })?;
            accepted_w.push(self.net_w(&result, period, lot_w)?);
        }
        Ok(accepted_w)
    }

    /// As [`ReplayMarket::clear_day`], with the bidder's linked block `families` (see
    /// [`voltex_market::block`]) cleared in the same day: a family's quantities count in
    /// the returned power only if it was accepted. Against the replayed market a family
    /// is accepted exactly when its surplus at the replayed prices is not negative.
    ///
    /// # Errors
    /// As [`ReplayMarket::clear_day`], plus [`ReplayError::ForeignFamily`] and
    /// [`ReplayError::Families`] (a family of another day length, too many families).
    pub fn clear_day_with_families(
        &mut self,
        curves: &[PeriodCurve],
        families: &[BlockFamily],
        real_prices: &[Decimal],
    ) -> Result<Vec<i64>, ReplayError> {
        check_lengths(curves, real_prices)?;
        if let Some(family) = families.iter().find(|f| f.participant() != self.bidder) {
            return Err(ReplayError::ForeignFamily(family.participant()));
        }
        let config = self.auction.config().clone();
        let mut periods = Vec::with_capacity(curves.len());
        for (period, (curve, real_price)) in curves.iter().zip(real_prices).enumerate() {
            let mut bids = Vec::with_capacity(4);
            push_period_bids(
                (self.bidder, self.market),
                &config,
                (period, curve, *real_price),
                true,
                &mut bids,
            )?;
            periods.push(bids);
        }
        let day = clear_day_with_families(&mut self.auction, &periods, families)
            .map_err(ReplayError::Families)?;
        let lot_w = config.rules.lot_kw.saturating_mul(1_000);
        day.periods
            .iter()
            .enumerate()
            .map(|(period, result)| self.net_w(result, period, lot_w))
            .collect()
    }

    /// [`ReplayMarket::clear_day_with_families`] for a bidder that bids only `families`
    /// (no curves) in a day of `real_prices.len()` periods.
    ///
    /// # Errors
    /// As [`ReplayMarket::clear_day_with_families`].
    pub fn clear_families(
        &mut self,
        families: &[BlockFamily],
        real_prices: &[Decimal],
    ) -> Result<Vec<i64>, ReplayError> {
        let no_curves: Vec<PeriodCurve> = (0..real_prices.len())
            .map(|period| PeriodCurve {
                period,
                ..PeriodCurve::default()
            })
            .collect();
        self.clear_day_with_families(&no_curves, families, real_prices)
    }

    /// The bidder's net accepted power in one period's result, W (positive = sell).
    fn net_w(
        &self,
        result: &voltex_market::auction::ClearingResult,
        period: usize,
        lot_w: i64,
    ) -> Result<i64, ReplayError> {
        let sold = result.accepted_qty(self.bidder, Side::Sell).0;
        let bought = result.accepted_qty(self.bidder, Side::Buy).0;
        sold.checked_sub(bought)
            .and_then(|lots| lots.checked_mul(lot_w))
            .ok_or(ReplayError::Overflow { period })
    }
}

/// One curve per period and one replayed price per period.
fn check_lengths(curves: &[PeriodCurve], real_prices: &[Decimal]) -> Result<(), ReplayError> {
    if curves.len() == real_prices.len() {
        Ok(())
    } else {
        Err(ReplayError::LengthMismatch {
            curves: curves.len(),
            prices: real_prices.len(),
        })
    }
}

/// Appends the `(bidder, market)` bids of one `(period, curve, replayed price)` to
/// `out`: the bidder's curves, then the replayed market's if the bidder bid anything or
/// `with_market_always` (a day with block families needs every period's price). Returns
/// whether the bidder bid.
fn push_period_bids(
    (bidder, market): (AccountId, AccountId),
    config: &AuctionConfig,
    (period, curve, real_price): (usize, &PeriodCurve, Decimal),
    with_market_always: bool,
    out: &mut Vec<BidCurve>,
) -> Result<bool, ReplayError> {
    let before = out.len();
    out.extend(
        curve
            .to_auction_curves(bidder, config)
            .map_err(|source| ReplayError::Curve { period, source })?,
    );
    let bid = out.len() > before;
    if bid || with_market_always {
        out.extend(
            replay_counterparty(market, real_price, config)
                .map_err(|source| ReplayError::Curve { period, source })?,
        );
    }
    Ok(bid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bidding::BidStep;
    use voltex_market::{MarketRules, Qty};

    const FLEET: AccountId = AccountId(1);
    const MARKET: AccountId = AccountId(2);

    fn eur(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    /// Buys 2 lots up to 50.00 EUR/MWh, sells 3 lots from 80.00.
    fn curve(period: usize) -> PeriodCurve {
        PeriodCurve {
            period,
            buy: vec![BidStep {
                price: Price(5_000),
                qty: Qty(2),
            }],
            sell: vec![BidStep {
                price: Price(8_000),
                qty: Qty(3),
            }],
        }
    }

    #[test]
    fn exactly_the_steps_in_the_money_are_accepted() {
        let mut market =
            ReplayMarket::new(FLEET, MARKET, AuctionConfig::day_ahead_default()).unwrap();
        let curves = [
            curve(0),
            curve(1),
            curve(2),
            curve(3),
            curve(4),
            PeriodCurve::default(),
        ];
        let prices = ["40", "50", "60", "80", "95.5", "10"].map(eur);
        // 0.1 MW lots: 2 lots bought = -200 kW, 3 sold = +300 kW.
        assert_eq!(
            market.clear_day(&curves, &prices).unwrap(),
            vec![-200_000, -200_000, 0, 300_000, 300_000, 0]
        );
    }

    #[test]
    fn the_counterparty_price_is_on_the_grid_and_inside_the_limits() {
        let coarse = AuctionConfig::with_rules(MarketRules {
            tick: Price(10),
            price_max: Price(300_000),
            ..MarketRules::day_ahead_default()
        });
        for (real, expected) in [
            ("41.24", 4_120),
            ("41.25", 4_120), // half to even: 412.5 ticks -> 412
            ("41.26", 4_130),
            ("3500", 300_000),
            ("-9999", -50_000),
            ("79228162514264337593543950335", 300_000),
            ("-79228162514264337593543950335", -50_000),
        ] {
            assert_eq!(
                replay_price(eur(real), &coarse.rules),
                Price(expected),
                "{real}"
            );
            assert!(replay_counterparty(MARKET, eur(real), &coarse).is_ok());
        }
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        assert_eq!(
            ReplayMarket::new(FLEET, FLEET, AuctionConfig::day_ahead_default()).unwrap_err(),
            ReplayError::SameAccount(FLEET)
        );
        let mut market =
            ReplayMarket::new(FLEET, MARKET, AuctionConfig::day_ahead_default()).unwrap();
        assert_eq!(
            market.clear_day(&[curve(0)], &[]).unwrap_err(),
            ReplayError::LengthMismatch {
                curves: 1,
                prices: 0
            }
        );
        let off_limits = PeriodCurve {
            period: 0,
            buy: vec![BidStep {
                price: Price(900_000),
                qty: Qty(1),
            }],
            sell: vec![],
        };
        assert!(matches!(
            market.clear_day(&[curve(0), off_limits], &[eur("1"), eur("1")]),
            Err(ReplayError::Curve { period: 1, .. })
        ));
    }
}
