//! Per-market rules: tick size, lot size, price limits, maximum order size and gate
//! closure, and the checked conversions from boundary values into [`Price`] and [`Qty`].
//!
//! Every price or quantity that enters Voltex from outside goes through
//! [`MarketRules::price_from_decimal`] / [`MarketRules::qty_from_mw`], which reject
//! off-grid and out-of-limit values with a [`RuleError`]; nothing is rounded.
//!
//! # Invariants
//! - `price_min <= price_max`, both on the tick grid; `tick > 0`, `lot_kw > 0`,
//!   `qty_max > 0` (checked by [`MarketRules::validate`]).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::units::{Price, Qty, UnitError};

/// The trading rules of one market.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketRules {
    /// Price tick, in 0.01 EUR/MWh (1 = 0.01 EUR/MWh).
    pub tick: Price,
    /// Lowest allowed limit price.
    pub price_min: Price,
    /// Highest allowed limit price.
    pub price_max: Price,
    /// Lot size in kW (100 = 0.1 MW).
    pub lot_kw: i64,
    /// Largest quantity of one order, in lots.
    pub qty_max: Qty,
    /// Trading closes this many seconds before delivery starts.
    pub gate_closure_lead_s: i64,
}

/// A boundary value that breaks the market's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Not a representable number in the unit.
    #[error(transparent)]
    Unit(#[from] UnitError),
    /// Price not a multiple of the tick.
    #[error("price {price} is not a multiple of the tick {tick}")]
    PriceOffTick {
        /// Offending price.
        price: Price,
        /// The market's tick.
        tick: Price,
    },
    /// Price outside `[price_min, price_max]`.
    #[error("price {price} is outside the limits {min}..{max}")]
    PriceOutOfLimits {
        /// Offending price.
        price: Price,
        /// Lowest allowed.
        min: Price,
        /// Highest allowed.
        max: Price,
    },
    /// Quantity not a whole number of lots.
    #[error("{mw} MW is not a whole number of {lot_kw} kW lots")]
    QtyOffLot {
        /// Offending quantity in MW.
        mw: Decimal,
        /// The market's lot size.
        lot_kw: i64,
    },
    /// Quantity zero or negative.
    #[error("quantity must be positive, got {0} MW")]
    QtyNotPositive(Decimal),
    /// Quantity above the per-order maximum.
    #[error("quantity {qty} is above the maximum {max}")]
    QtyAboveMax {
        /// Offending quantity.
        qty: Qty,
        /// The market's maximum.
        max: Qty,
    },
    /// The rules themselves are inconsistent.
    #[error("invalid market rules: {0}")]
    InvalidRules(&'static str),
}

impl MarketRules {
    /// Default rules of a European intraday continuous market: prices
    /// -9999.99..+9999.99 EUR/MWh, tick 0.01, lot 0.1 MW, max order 999 MW, gate closure
    /// 5 minutes before delivery.
    pub fn intraday_default() -> MarketRules {
        MarketRules {
            tick: Price(1),
            price_min: Price(-999_999),
            price_max: Price(999_999),
            lot_kw: 100,
            qty_max: Qty(9_990),
            gate_closure_lead_s: 5 * 60,
        }
    }

    /// Default rules of the day-ahead auction: harmonised limits -500..+4000 EUR/MWh,
    /// tick 0.01, lot 0.1 MW.
    pub fn day_ahead_default() -> MarketRules {
        MarketRules {
            tick: Price(1),
            price_min: Price(-50_000),
            price_max: Price(400_000),
            lot_kw: 100,
            qty_max: Qty(9_990),
            gate_closure_lead_s: 12 * 3600,
        }
    }

    /// Checks the rules are self-consistent.
    ///
    /// # Errors
    /// [`RuleError::InvalidRules`] naming the broken condition.
    pub fn validate(&self) -> Result<(), RuleError> {
        if self.tick.0 <= 0 {
            return Err(RuleError::InvalidRules("tick must be positive"));
        }
        if self.price_min > self.price_max {
            return Err(RuleError::InvalidRules("price_min must be <= price_max"));
        }
        if self.price_min.0 % self.tick.0 != 0 || self.price_max.0 % self.tick.0 != 0 {
            return Err(RuleError::InvalidRules(
                "price limits must be on the tick grid",
            ));
        }
        if self.lot_kw <= 0 {
            return Err(RuleError::InvalidRules("lot_kw must be positive"));
        }
        if self.qty_max.0 <= 0 {
            return Err(RuleError::InvalidRules("qty_max must be positive"));
        }
        if self.gate_closure_lead_s < 0 {
            return Err(RuleError::InvalidRules(
                "gate_closure_lead_s must not be negative",
            ));
        }
        Ok(())
    }

    /// Checks an internal price against the tick grid and the limits.
    ///
    /// # Errors
    /// [`RuleError::PriceOffTick`] or [`RuleError::PriceOutOfLimits`].
    pub fn check_price(&self, price: Price) -> Result<Price, RuleError> {
        if price.0 % self.tick.0 != 0 {
            return Err(RuleError::PriceOffTick {
                price,
                tick: self.tick,
            });
        }
        if price < self.price_min || price > self.price_max {
            return Err(RuleError::PriceOutOfLimits {
                price,
                min: self.price_min,
                max: self.price_max,
            });
        }
        Ok(price)
    }

    /// Converts an exact EUR/MWh decimal into a price allowed on this market.
    ///
    /// # Errors
    /// Off the 0.01 grid, off the market tick, or outside the limits.
    pub fn price_from_decimal(&self, eur_per_mwh: Decimal) -> Result<Price, RuleError> {
        self.check_price(Price::from_decimal(eur_per_mwh)?)
    }

    /// Checks an internal quantity: positive and at most `qty_max`.
    ///
    /// # Errors
    /// [`RuleError::QtyNotPositive`] or [`RuleError::QtyAboveMax`].
    pub fn check_qty(&self, qty: Qty) -> Result<Qty, RuleError> {
        if qty.0 <= 0 {
            return Err(RuleError::QtyNotPositive(Decimal::from(qty.0)));
        }
        if qty > self.qty_max {
            return Err(RuleError::QtyAboveMax {
                qty,
                max: self.qty_max,
            });
        }
        Ok(qty)
    }

    /// Converts an exact MW decimal into whole lots allowed on this market.
    ///
    /// # Errors
    /// Not positive, not a whole number of lots, or above the maximum.
    pub fn qty_from_mw(&self, mw: Decimal) -> Result<Qty, RuleError> {
        if mw <= Decimal::ZERO {
            return Err(RuleError::QtyNotPositive(mw));
        }
        let out_of_range = || {
            RuleError::Unit(UnitError::OutOfRange {
                value: mw,
                unit: "MW",
            })
        };
        let lots = mw
            .checked_mul(Decimal::from(1000))
            .and_then(|kw| kw.checked_div(Decimal::from(self.lot_kw)))
            .ok_or_else(out_of_range)?;
        if !lots.fract().is_zero() {
            return Err(RuleError::QtyOffLot {
                mw,
                lot_kw: self.lot_kw,
            });
        }
        let lots: i64 = lots.trunc().try_into().map_err(|_| out_of_range())?;
        self.check_qty(Qty(lots))
    }

    /// A quantity in lots as exact MW.
    pub fn qty_to_mw(&self, qty: Qty) -> Decimal {
        Decimal::from(qty.0 * self.lot_kw) / Decimal::from(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn dec(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    #[test]
    fn default_rules_are_valid() {
        MarketRules::intraday_default().validate().unwrap();
        MarketRules::day_ahead_default().validate().unwrap();
    }

    #[test]
    fn price_limits_and_ticks_reject_with_typed_errors() {
        let mut rules = MarketRules::intraday_default();
        assert_eq!(rules.price_from_decimal(dec("9999.99")), Ok(Price(999_999)));
        assert!(matches!(
            rules.price_from_decimal(dec("10000.00")),
            Err(RuleError::PriceOutOfLimits { .. })
        ));
        assert!(matches!(
            rules.price_from_decimal(dec("-10000")),
            Err(RuleError::PriceOutOfLimits { .. })
        ));
        assert!(matches!(
            rules.price_from_decimal(dec("12.345")),
            Err(RuleError::Unit(UnitError::OffGrid { .. }))
        ));
        rules.tick = Price(10);
        assert!(matches!(
            rules.price_from_decimal(dec("12.34")),
            Err(RuleError::PriceOffTick { .. })
        ));
        assert_eq!(rules.price_from_decimal(dec("12.30")), Ok(Price(1230)));
    }

    #[test]
    fn quantities_are_whole_lots_never_rounded() {
        let rules = MarketRules::intraday_default();
        assert_eq!(rules.qty_from_mw(dec("0.1")), Ok(Qty(1)));
        assert_eq!(rules.qty_from_mw(dec("999")), Ok(Qty(9_990)));
        assert!(matches!(
            rules.qty_from_mw(dec("0.15")),
            Err(RuleError::QtyOffLot { .. })
        ));
        assert!(matches!(
            rules.qty_from_mw(dec("0")),
            Err(RuleError::QtyNotPositive(_))
        ));
        assert!(matches!(
            rules.qty_from_mw(dec("-1")),
            Err(RuleError::QtyNotPositive(_))
        ));
        assert!(matches!(
            rules.qty_from_mw(dec("999.1")),
            Err(RuleError::QtyAboveMax { .. })
        ));
        assert_eq!(rules.qty_to_mw(Qty(15)), dec("1.5"));
        assert!(matches!(
            rules.qty_from_mw(dec("79228162514264337593543950335")),
            Err(RuleError::Unit(UnitError::OutOfRange { .. }))
        ));
    }

    #[test]
    fn inconsistent_rules_are_refused() {
        let mut rules = MarketRules::intraday_default();
        rules.price_min = Price(5);
        rules.price_max = Price(1);
        assert!(matches!(rules.validate(), Err(RuleError::InvalidRules(_))));
        let mut rules = MarketRules::intraday_default();
        rules.tick = Price(0);
        assert!(matches!(rules.validate(), Err(RuleError::InvalidRules(_))));
    }
}
