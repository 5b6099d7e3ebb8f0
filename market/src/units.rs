//! Units of the market: prices in integer ticks, quantities in integer lots,
//! sides and identifiers.
//!
//! Inside Voltex a price is an `i64` count of 0.01 EUR/MWh ([`Price`]) and a quantity
//! an `i64` count of lots ([`Qty`]); `rust_decimal::Decimal` is used only at the
//! boundaries (API, files, database). Conversions from `Decimal` never round: a value
//! that is not exactly representable is a typed error.
//!
//! # Invariants
//! - `Price::from_decimal(p.to_decimal()) == Ok(p)` for every `Price`.
//! - Conversions reject rather than round: `Price::from_decimal(1.005)` is an error.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Number of decimal places of one price tick unit (0.01 EUR/MWh).
pub const PRICE_SCALE: u32 = 2;

/// A price in integer ticks of 0.01 EUR/MWh (the market's tick size may be a multiple).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Price(pub i64);

/// A quantity in integer lots (the lot size is a per-market rule, default 0.1 MW).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Qty(pub i64);

/// Errors converting boundary values (decimal numbers, strings) into market units.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The text is not a decimal number.
    #[error("not a decimal number: {text:?}")]
    NotANumber {
        /// The offending text.
        text: String,
    },
    /// The value has more decimal places than the unit allows (would need rounding).
    #[error("{value} is not on the 0.01 grid of {unit}; Voltex never rounds prices")]
    OffGrid {
        /// The offending value.
        value: Decimal,
        /// The unit it was parsed as.
        unit: &'static str,
    },
    /// The value does not fit in the internal integer representation.
    #[error("{value} is out of range for {unit}")]
    OutOfRange {
        /// The offending value.
        value: Decimal,
        /// The unit it was parsed as.
        unit: &'static str,
    },
}

impl Price {
    /// Zero EUR/MWh.
    pub const ZERO: Price = Price(0);

    /// Builds a price from a count of 0.01 EUR/MWh ticks.
    pub const fn from_cents(cents: i64) -> Price {
        Price(cents)
    }

    /// The price as a count of 0.01 EUR/MWh.
    pub const fn cents(self) -> i64 {
        self.0
    }

    /// Converts an exact decimal EUR/MWh value into a price.
    ///
    /// # Errors
    /// [`UnitError::OffGrid`] if the value has more than two decimal places that are
    /// not zero; [`UnitError::OutOfRange`] if it does not fit in `i64` cents.
    pub fn from_decimal(eur_per_mwh: Decimal) -> Result<Price, UnitError> {
        let scaled = eur_per_mwh
            .checked_mul(Decimal::from(100))
            .ok_or(UnitError::OutOfRange {
                value: eur_per_mwh,
                unit: "EUR/MWh",
            })?;
        if !scaled.fract().is_zero() {
            return Err(UnitError::OffGrid {
                value: eur_per_mwh,
                unit: "EUR/MWh",
            });
        }
        let cents: i64 = scaled
            .trunc()
            .try_into()
            .map_err(|_| UnitError::OutOfRange {
                value: eur_per_mwh,
                unit: "EUR/MWh",
            })?;
        Ok(Price(cents))
    }

    /// The exact decimal value in EUR/MWh.
    pub fn to_decimal(self) -> Decimal {
        Decimal::new(self.0, PRICE_SCALE)
    }

    /// Checked addition of two prices.
    pub fn checked_add(self, other: Price) -> Option<Price> {
        self.0.checked_add(other.0).map(Price)
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_decimal())
    }
}

impl FromStr for Price {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let value = Decimal::from_str(text.trim()).map_err(|_| UnitError::NotANumber {
            text: text.to_string(),
        })?;
        Price::from_decimal(value)
    }
}

impl Qty {
    /// No quantity.
    pub const ZERO: Qty = Qty(0);

    /// Number of lots.
    pub const fn lots(self) -> i64 {
        self.0
    }

    /// True if the quantity is zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// The smaller of two quantities.
    pub fn min(self, other: Qty) -> Qty {
        Qty(self.0.min(other.0))
    }
}

impl std::ops::Add for Qty {
    type Output = Qty;
    fn add(self, rhs: Qty) -> Qty {
        Qty(self.0 + rhs.0)
    }
}

impl std::ops::Sub for Qty {
    type Output = Qty;
    fn sub(self, rhs: Qty) -> Qty {
        Qty(self.0 - rhs.0)
    }
}

impl std::ops::AddAssign for Qty {
    fn add_assign(&mut self, rhs: Qty) {
        self.0 += rhs.0;
    }
}

impl std::ops::SubAssign for Qty {
    fn sub_assign(&mut self, rhs: Qty) {
        self.0 -= rhs.0;
    }
}

impl fmt::Display for Qty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} lots", self.0)
    }
}

/// Buy or sell. Ordered buy before sell (map keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Side {
    /// Buy (bid).
    Buy,
    /// Sell (offer / ask).
    Sell,
}

impl Side {
    /// The other side.
    pub const fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }

    /// Index 0 for buy, 1 for sell (for per-side arrays).
    pub const fn index(self) -> usize {
        match self {
            Side::Buy => 0,
            Side::Sell => 1,
        }
    }
}

/// An order's identity, unique within a book (assigned by the sequencer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderId(pub u64);

/// A trading account (self-trade prevention, positions and risk are per account).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AccountId(pub u32);

/// A tradable product (one delivery period of one market), unique within a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProductId(pub u32);

/// A trade's identity, unique within a book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TradeId(pub u64);

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "order#{}", self.0)
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "account#{}", self.0)
    }
}

impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "product#{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_parses_exact_cents_and_round_trips() {
        for (text, cents) in [
            ("0", 0),
            ("12.34", 1234),
            ("-9999.99", -999_999),
            ("4000", 400_000),
            ("0.10", 10),
        ] {
            let price: Price = text.parse().unwrap();
            assert_eq!(price, Price(cents), "{text}");
            assert_eq!(Price::from_decimal(price.to_decimal()), Ok(price));
        }
    }

    #[test]
    fn price_off_the_cent_grid_is_rejected_not_rounded() {
        assert!(matches!(
            "1.005".parse::<Price>(),
            Err(UnitError::OffGrid { .. })
        ));
        assert!(matches!(
            "-0.001".parse::<Price>(),
            Err(UnitError::OffGrid { .. })
        ));
    }

    #[test]
    fn price_garbage_and_huge_values_are_typed_errors() {
        assert!(matches!(
            "abc".parse::<Price>(),
            Err(UnitError::NotANumber { .. })
        ));
        assert!(matches!(
            "".parse::<Price>(),
            Err(UnitError::NotANumber { .. })
        ));
        assert!(matches!(
            "99999999999999999999999".parse::<Price>(),
            Err(UnitError::OutOfRange { .. })
        ));
        // Regression: scaling a huge decimal used to overflow inside Decimal's `*`.
        assert!(matches!(
            "79228162514264337593543950335".parse::<Price>(),
            Err(UnitError::OutOfRange { .. })
        ));
    }
}
