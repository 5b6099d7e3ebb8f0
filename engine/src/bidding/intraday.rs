//! Closing what a day-ahead award cannot deliver, on the continuous intraday book.
//!
//! Each hour of the day-ahead auction clears on its own, so an award can hold a sale
//! whose planned purchase did not clear, or a purchase into a battery that a sale did
//! not empty (see `README.md`, "bid pairing"). Undelivered energy is imbalance, priced
//! at the clearing price plus a penalty. [`ReplayIntraday::close_out_day`] instead walks
//! the day's award through the battery's physics from its expected state of charge and,
//! in every period where the award is not deliverable, trades the difference back on
//! that period's continuous book (the market crate's [`OrderBook`]): it buys back a sale
//! it cannot deliver and sells back a purchase it cannot store, in whole lots rounded to
//! the nearest. It never trades beyond what closes the gap: no speculation on the
//! replayed prices, which the platform would not know in advance. Closing pays half the
//! spread per MWh where imbalance would pay the penalty: it is worth it only when the
//! penalty is larger.
//!
//! The rest of the intraday market is a synthetic market maker: in each period's book it
//! quotes an ask at the replayed price plus half the spread and a bid at the replayed
//! price minus half of it (on the tick grid, clamped into the price limits), each for
//! `depth` lots. The platform's closing order is immediate-or-cancel at the maker's
//! price, so it fills up to the quoted depth and the rest stays open (imbalance).
//!
//! # Guarantees
//! - A period whose award the battery can deliver is not traded.
//! - A closing trade is in the gap's direction and never larger than the gap rounded to
//!   the nearest whole lot, nor than the award: the position after it keeps the award's
//!   side and is never further from zero.
//! - With enough depth, every period's position is deliverable, up to half a lot, from
//!   the state of charge the previous positions leave (the walk is sequential).
//! - Every fill is at the maker's quote: the replayed price ± half the spread, exact in
//!   ticks. Pure: no I/O, no clock.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use voltex_market::battery::BatterySpec;
use voltex_market::book::{BookCommand, BookConfig, BookEvent, NewOrder, OrderBook, TimeInForce};
use voltex_market::{AccountId, MarketRules, OrderId, Price, Qty, Side};

use super::replay::replay_price;

/// Why a day could not be closed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntradayError {
    /// The bidder and the market maker are one account.
    #[error("the bidder and the intraday market maker must be different accounts ({0:?})")]
    SameAccount(AccountId),
    /// The rules are not self-consistent.
    #[error("intraday rules: {0}")]
    Rules(String),
    /// The spread is negative or its half is not on the tick grid.
    #[error("intraday spread {spread} EUR/MWh: {reason}")]
    Spread {
        /// The spread given.
        spread: Decimal,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The quoted depth is not a positive number of lots within the largest order.
    #[error("intraday depth {depth_lots} lots: must be 1..={qty_max} lots")]
    Depth {
        /// The depth given.
        depth_lots: i64,
        /// The rules' largest order.
        qty_max: i64,
    },
    /// A depth in MW that is not a whole number of lots.
    #[error("intraday depth {depth_mw} MW: must be whole {lot_mw} MW lots")]
    DepthNotWholeLots {
        /// The depth given, MW.
        depth_mw: Decimal,
        /// The lot, MW.
        lot_mw: Decimal,
    },
    /// Award and prices differ in length.
    #[error("{award} award periods for {prices} replayed prices")]
    LengthMismatch {
        /// Award periods given.
        award: usize,
        /// Replayed prices given.
        prices: usize,
    },
    /// The book refused an order (a bug: the quotes are built within its rules).
    #[error("period {period}: the intraday book refused an order: {reason}")]
    Refused {
        /// The period.
        period: usize,
        /// The book's reason.
        reason: String,
    },
}

/// The replayed intraday market's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntradayConfig {
    /// The continuous market's rules (tick, limits, lot, largest order).
    pub rules: MarketRules,
    /// Full bid-ask spread of the market maker's quotes around the replayed price,
    /// EUR/MWh; its half must be a multiple of the tick.
    pub spread_eur_per_mwh: Decimal,
    /// Lots the maker quotes on each side of each period's book.
    pub depth: Qty,
}

impl IntradayConfig {
    /// Terms from the units people write: `spread_eur_per_mwh` and the maker's depth
    /// per side in MW (whole lots; `None`: the rules' largest order), checked as
    /// [`IntradayConfig::validate`] does.
    ///
    /// # Errors
    /// [`IntradayError::DepthNotWholeLots`], or any of [`IntradayConfig::validate`]'s.
    pub fn with_depth_mw(
        rules: MarketRules,
        spread_eur_per_mwh: Decimal,
        depth_mw: Option<Decimal>,
    ) -> Result<IntradayConfig, IntradayError> {
        let depth = match depth_mw {
            None => rules.qty_max,
            Some(depth_mw) => {
                let lot_mw = Decimal::new(rules.lot_kw, 3);
                let lots = depth_mw
                    .checked_div(lot_mw)
                    .filter(|lots| lots.fract().is_zero())
                    .ok_or(IntradayError::DepthNotWholeLots { depth_mw, lot_mw })?;
                Qty(lots.to_i64().unwrap_or(i64::MAX))
            }
        };
        let config = IntradayConfig {
            rules,
            spread_eur_per_mwh,
            depth,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the terms and returns half the spread in ticks' units.
    ///
    /// # Errors
    /// [`IntradayError::Rules`], [`IntradayError::Spread`] or [`IntradayError::Depth`].
    pub fn validate(&self) -> Result<Price, IntradayError> {
        self.rules
            .validate()
            .map_err(|e| IntradayError::Rules(e.to_string()))?;
        let spread = self.spread_eur_per_mwh;
        let bad = |reason| IntradayError::Spread { spread, reason };
        if spread < Decimal::ZERO {
            return Err(bad("must not be negative"));
        }
        let off_grid = "half of it must be a multiple of the tick";
        let half_spread = Price::from_decimal(spread / Decimal::TWO).map_err(|_| bad(off_grid))?;
        if half_spread.0 % self.rules.tick.0.max(1) != 0 {
            return Err(bad(off_grid));
        }
        if !(1..=self.rules.qty_max.0).contains(&self.depth.0) {
            return Err(IntradayError::Depth {
                depth_lots: self.depth.0,
                qty_max: self.rules.qty_max.0,
            });
        }
        Ok(half_spread)
    }
}

/// One period's closing trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClosingFill {
    /// The bidder's side: [`Side::Buy`] buys back a sale, [`Side::Sell`] sells back a
    /// purchase.
    pub side: Side,
    /// The fill price (the maker's quote).
    pub price: Price,
    /// Filled lots.
    pub qty: Qty,
    /// The filled quantity as power over the period, W (positive).
    pub power_w: i64,
}

/// A day after its close-out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseOut {
    /// Net position per period after the closing trades, W (positive = sell): the
    /// award plus the sold-back minus the bought-back power.
    pub position_w: Vec<i64>,
    /// Each period's closing trade, if it traded.
    pub fills: Vec<Option<ClosingFill>>,
}

impl CloseOut {
    /// Lots traded over the day.
    pub fn traded_lots(&self) -> i64 {
        self.fills.iter().flatten().map(|f| f.qty.0).sum()
    }

    /// Energy traded over the day, MWh (periods of `period_s`).
    pub fn traded_mwh(&self, period_s: i64) -> Decimal {
        self.fills
            .iter()
            .flatten()
            .map(|f| mwh(f.power_w, period_s))
            .sum()
    }

    /// The closing trades' cash beyond the traded energy's value at the replayed
    /// prices, EUR (≤ 0 when the quotes straddle the prices: the spread paid). The
    /// day's cash is then the position's value at the replayed prices plus this.
    pub fn cash_vs_replay_eur(&self, real_prices: &[Decimal], period_s: i64) -> Decimal {
        self.cash_vs_replay_per_period_eur(real_prices, period_s)
            .iter()
            .sum()
    }

    /// [`CloseOut::cash_vs_replay_eur`] period by period (zero where nothing traded),
    /// EUR.
    pub fn cash_vs_replay_per_period_eur(
        &self,
        real_prices: &[Decimal],
        period_s: i64,
    ) -> Vec<Decimal> {
        self.fills
            .iter()
            .zip(real_prices)
            .map(|(fill, real)| {
                fill.map_or(Decimal::ZERO, |fill| {
                    let premium = fill.price.to_decimal() - real;
                    let sold_mwh = match fill.side {
                        Side::Sell => mwh(fill.power_w, period_s),
                        Side::Buy => -mwh(fill.power_w, period_s),
                    };
                    sold_mwh * premium
                })
            })
            .collect()
    }
}

/// `power_w` over `period_s`, MWh, exact.
fn mwh(power_w: i64, period_s: i64) -> Decimal {
    Decimal::from(power_w) * Decimal::from(period_s) / Decimal::from(3_600_000_000_i64)
}

/// The bidder against a replayed intraday market (see the module doc).
#[derive(Debug)]
pub struct ReplayIntraday {
    bidder: AccountId,
    maker: AccountId,
    config: IntradayConfig,
    half_spread: Price,
    events: Vec<BookEvent>,
}

impl ReplayIntraday {
    /// `bidder` closes its awards against `maker`'s quotes under `config`.
    ///
    /// # Errors
    /// [`IntradayError::SameAccount`], [`IntradayError::Rules`],
    /// [`IntradayError::Spread`] or [`IntradayError::Depth`].
    pub fn new(
        bidder: AccountId,
        maker: AccountId,
        config: IntradayConfig,
    ) -> Result<ReplayIntraday, IntradayError> {
        if bidder == maker {
            return Err(IntradayError::SameAccount(bidder));
        }
        let half_spread = config.validate()?;
        Ok(ReplayIntraday {
            bidder,
            maker,
            config,
            half_spread,
            events: Vec::with_capacity(8),
        })
    }

    /// The market's terms.
    pub fn config(&self) -> &IntradayConfig {
        &self.config
    }

    /// Walks `award_w` (net W per period, positive = sell) through `spec`'s physics
    /// from `start_soc_wh` and closes, period by period, what it cannot deliver (see
    /// the module doc). `real_prices` are the replayed prices, EUR/MWh.
    ///
    /// # Errors
    /// [`IntradayError::LengthMismatch`], or [`IntradayError::Refused`] if the book
    /// refused an order.
    pub fn close_out_day(
        &mut self,
        spec: &BatterySpec,
        start_soc_wh: f64,
        award_w: &[i64],
        real_prices: &[Decimal],
        period_s: i64,
    ) -> Result<CloseOut, IntradayError> {
        if award_w.len() != real_prices.len() {
            return Err(IntradayError::LengthMismatch {
                award: award_w.len(),
                prices: real_prices.len(),
            });
        }
        let physics = spec.period(period_s);
        let mut soc_wh = spec.clamp_soc_wh(start_soc_wh);
        let mut position_w = Vec::with_capacity(award_w.len());
        let mut fills = Vec::with_capacity(award_w.len());
        for (period, (&award, &price)) in award_w.iter().zip(real_prices).enumerate() {
            let gap_w = award - physics.feasible_power_w(soc_wh, award);
            // To the nearest lot: a remainder under half a lot stays imbalance, as
            // closing a whole lot for it would trade away more deliverable energy than
            // it saves.
            let (position, fill) =
                self.close_gap(period, award, gap_w, price, LotRounding::Nearest)?;
            soc_wh = physics.soc_after_wh(soc_wh, physics.feasible_power_w(soc_wh, position));
            position_w.push(position);
            fills.push(fill);
        }
        Ok(CloseOut { position_w, fills })
    }

    /// Closes a shortfall someone else computed: `shortfall_w[t]` is what the award of
    /// period `t` cannot deliver, W (positive: sold more than the batteries hold, so
    /// bought back; negative: bought more than they can store, so sold back), as
    /// [`crate::commit::allocate`] reports it for a fleet. Each period closes the
    /// shortfall in whole lots rounded **down**, so the position left is never more
    /// deliverable than the award was beyond what was closed: a fleet that delivered
    /// `award − shortfall` still delivers exactly that, and the later periods'
    /// shortfalls, computed on that path, stay valid. The remainder (under a lot) stays
    /// imbalance.
    ///
    /// # Errors
    /// [`IntradayError::LengthMismatch`] if award, shortfall and prices differ in
    /// length, or [`IntradayError::Refused`] if the book refused an order.
    pub fn close_shortfall(
        &mut self,
        award_w: &[i64],
        shortfall_w: &[i64],
        real_prices: &[Decimal],
    ) -> Result<CloseOut, IntradayError> {
        if award_w.len() != real_prices.len() || shortfall_w.len() != real_prices.len() {
            return Err(IntradayError::LengthMismatch {
                award: award_w.len().min(shortfall_w.len()),
                prices: real_prices.len(),
            });
        }
        let mut position_w = Vec::with_capacity(award_w.len());
        let mut fills = Vec::with_capacity(award_w.len());
        for (period, ((&award, &gap_w), &price)) in
            award_w.iter().zip(shortfall_w).zip(real_prices).enumerate()
        {
            let (position, fill) =
                self.close_gap(period, award, gap_w, price, LotRounding::Down)?;
            position_w.push(position);
            fills.push(fill);
        }
        Ok(CloseOut { position_w, fills })
    }

    /// Closes `gap_w` (what `award` cannot deliver, W; positive: buy back) in whole lots
    /// rounded as `rounding` says, never past the award (an award of whole lots, as
    /// auctions give, is never passed). Returns the position after it and the fill.
    fn close_gap(
        &mut self,
        period: usize,
        award: i64,
        gap_w: i64,
        price: Decimal,
        rounding: LotRounding,
    ) -> Result<(i64, Option<ClosingFill>), IntradayError> {
        if gap_w == 0 {
            return Ok((award, None));
        }
        let lot_w = self.config.rules.lot_kw.saturating_mul(1_000).max(1);
        // Sold more than it holds: buy back; bought more than it can store: sell.
        let side = if gap_w > 0 { Side::Buy } else { Side::Sell };
        let (gap, lot) = (gap_w.unsigned_abs(), lot_w.unsigned_abs());
        let round_up = match rounding {
            LotRounding::Nearest => gap % lot >= lot.div_ceil(2),
            LotRounding::Down => false,
        };
        let lots = (gap / lot + u64::from(round_up)).min(award.unsigned_abs() / lot);
        // A gap against the award's own side (a sale "short" of delivering more) is
        // nothing to close.
        let against_award = (side == Side::Buy && award <= 0) || (side == Side::Sell && award >= 0);
        let lots = Qty(i64::try_from(lots).unwrap_or(i64::MAX));
        let mut position = award;
        let mut fill = None;
        if lots.0 > 0
            && !against_award
            && let Some(filled) = self.close(period, side, lots, price)?
        {
            let power_w = filled.qty.0.saturating_mul(lot_w);
            position = match side {
                Side::Buy => award - power_w,
                Side::Sell => award + power_w,
            };
            fill = Some(ClosingFill { power_w, ..filled });
        }
        debug_assert!(
            position.signum() * award.signum() >= 0 && position.abs() <= award.abs(),
            "a close-out only shrinks the award: {award} W -> {position} W"
        );
        Ok((position, fill))
    }

    /// One period's book: the maker quotes the side opposite `side` at the replayed
    /// price ± half the spread; the bidder takes up to `lots` of it, immediately or not
    /// at all. Returns the fill (with `power_w` 0, set by the caller), if any.
    fn close(
        &mut self,
        period: usize,
        side: Side,
        lots: Qty,
        real_price: Decimal,
    ) -> Result<Option<ClosingFill>, IntradayError> {
        let rules = &self.config.rules;
        let quote = maker_quote(real_price, self.half_spread, side, rules);
        let mut book = OrderBook::new(
            rules.clone(),
            BookConfig {
                orders_max: 2,
                emit_depth: false,
            },
        )
        .map_err(|e| IntradayError::Rules(e.to_string()))?;
        let maker_side = match side {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        };
        let maker = NewOrder::limit(OrderId(1), self.maker, maker_side, quote, self.config.depth);
        let closing = NewOrder {
            time_in_force: TimeInForce::Ioc,
            ..NewOrder::limit(
                OrderId(2),
                self.bidder,
                side,
                quote,
                Qty(lots.0.min(rules.qty_max.0)),
            )
        };
        let mut filled = 0_i64;
        for order in [maker, closing] {
            self.events.clear();
            book.apply(&BookCommand::Submit(order), &mut self.events);
            for event in &self.events {
                match event {
                    BookEvent::Rejected { reason, .. } => {
                        return Err(IntradayError::Refused {
                            period,
                            reason: format!("{reason:?}"),
                        });
                    }
                    BookEvent::Trade { qty, .. } => filled += qty.0,
                    _ => {}
                }
            }
        }
        Ok((filled > 0).then_some(ClosingFill {
            side,
            price: quote,
            qty: Qty(filled),
            power_w: 0,
        }))
    }
}

/// How a gap becomes whole lots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LotRounding {
    /// To the nearest lot (one battery, walked period by period).
    Nearest,
    /// Down (a shortfall computed on the award's delivery path, which must stay valid).
    Down,
}

/// The maker's quote a bidder on `side` trades against: the ask (the replayed price on
/// the tick grid, [`replay_price`], plus `half_spread`) for a buyer, the bid (minus it)
/// for a seller; clamped into the limits (which are on the grid).
fn maker_quote(real_price: Decimal, half_spread: Price, side: Side, rules: &MarketRules) -> Price {
    let mid = replay_price(real_price, rules).0;
    let quote = match side {
        Side::Buy => mid.saturating_add(half_spread.0),
        Side::Sell => mid.saturating_sub(half_spread.0),
    };
    Price(quote.clamp(rules.price_min.0, rules.price_max.0))
}
