//! Time in the market: UTC instants in nanoseconds, aligned delivery periods and products.
//!
//! Hot paths carry [`UtcNanos`] (nanoseconds since the Unix epoch, UTC); `chrono` is
//! used only to parse and print at the boundaries. Nothing here reads a clock: callers
//! pass `now` in, so the simulator can run the same code in virtual time.
//!
//! # Invariants
//! - A [`DeliveryPeriod`]'s start is a whole multiple of its length since the epoch
//!   (periods are aligned in UTC); construction checks it.

use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Nanoseconds per second.
pub const NANOS_PER_SECOND: i64 = 1_000_000_000;
/// Nanoseconds per minute.
pub const NANOS_PER_MINUTE: i64 = 60 * NANOS_PER_SECOND;

/// An instant in UTC, as nanoseconds since the Unix epoch.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct UtcNanos(pub i64);

impl UtcNanos {
    /// Nanoseconds since the Unix epoch.
    pub const fn nanos(self) -> i64 {
        self.0
    }

    /// This instant plus a number of seconds.
    pub const fn plus_seconds(self, seconds: i64) -> UtcNanos {
        UtcNanos(self.0 + seconds * NANOS_PER_SECOND)
    }

    /// Converts to a `chrono` date-time (for printing at the boundary).
    pub fn to_datetime(self) -> DateTime<Utc> {
        Utc.timestamp_nanos(self.0)
    }

    /// Converts from a `chrono` date-time.
    ///
    /// # Errors
    /// [`TimeError::OutOfRange`] for dates outside roughly 1677..2262 (i64 nanoseconds).
    pub fn from_datetime(at: DateTime<Utc>) -> Result<UtcNanos, TimeError> {
        at.timestamp_nanos_opt()
            .map(UtcNanos)
            .ok_or(TimeError::OutOfRange)
    }
}

impl fmt::Display for UtcNanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_datetime().format("%Y-%m-%dT%H:%M:%S%.fZ"))
    }
}

/// Errors building time values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// The period start is not aligned to the period length in UTC.
    #[error("delivery period start {start} is not aligned to {length_minutes} minutes")]
    Misaligned {
        /// The requested start.
        start: UtcNanos,
        /// The requested period length.
        length_minutes: u32,
    },
    /// The period length is not one of 15, 30 or 60 minutes.
    #[error("delivery period length must be 15, 30 or 60 minutes, got {0}")]
    BadLength(u32),
    /// The instant does not fit in i64 nanoseconds.
    #[error("instant out of the representable range")]
    OutOfRange,
}

/// Length of a delivery period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PeriodLength {
    /// A quarter-hour product.
    Minutes15,
    /// A half-hour product.
    Minutes30,
    /// An hourly product.
    Minutes60,
}

impl PeriodLength {
    /// Length in minutes.
    pub const fn minutes(self) -> u32 {
        match self {
            PeriodLength::Minutes15 => 15,
            PeriodLength::Minutes30 => 30,
            PeriodLength::Minutes60 => 60,
        }
    }

    /// Length in nanoseconds.
    pub const fn nanos(self) -> i64 {
        self.minutes() as i64 * NANOS_PER_MINUTE
    }

    /// Parses a length in minutes.
    ///
    /// # Errors
    /// [`TimeError::BadLength`] for anything but 15, 30 or 60.
    pub fn from_minutes(minutes: u32) -> Result<PeriodLength, TimeError> {
        match minutes {
            15 => Ok(PeriodLength::Minutes15),
            30 => Ok(PeriodLength::Minutes30),
            60 => Ok(PeriodLength::Minutes60),
            other => Err(TimeError::BadLength(other)),
        }
    }
}

/// A delivery period: an aligned UTC interval `[start, start + length)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeliveryPeriod {
    start: UtcNanos,
    length: PeriodLength,
}

impl DeliveryPeriod {
    /// Builds a period, checking alignment.
    ///
    /// # Errors
    /// [`TimeError::Misaligned`] if `start` is not a multiple of `length` since the epoch.
    pub fn new(start: UtcNanos, length: PeriodLength) -> Result<DeliveryPeriod, TimeError> {
        if start.0.rem_euclid(length.nanos()) != 0 {
            return Err(TimeError::Misaligned {
                start,
                length_minutes: length.minutes(),
            });
        }
        Ok(DeliveryPeriod { start, length })
    }

    /// The period containing instant `at`.
    ///
    /// # Errors
    /// [`TimeError::OutOfRange`] if that period would start before the earliest
    /// representable instant (within one period of `i64::MIN` nanoseconds).
    pub fn containing(at: UtcNanos, length: PeriodLength) -> Result<DeliveryPeriod, TimeError> {
        let start =
            at.0.checked_sub(at.0.rem_euclid(length.nanos()))
                .ok_or(TimeError::OutOfRange)?;
        Ok(DeliveryPeriod {
            start: UtcNanos(start),
            length,
        })
    }

    /// Start of delivery.
    pub const fn start(&self) -> UtcNanos {
        self.start
    }

    /// End of delivery (exclusive).
    pub const fn end(&self) -> UtcNanos {
        UtcNanos(self.start.0 + self.length.nanos())
    }

    /// The period length.
    pub const fn length(&self) -> PeriodLength {
        self.length
    }

    /// Duration in hours as a rational `minutes / 60` (for MW → MWh conversions).
    pub const fn minutes(&self) -> u32 {
        self.length.minutes()
    }
}

impl fmt::Display for DeliveryPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{}min", self.start, self.length.minutes())
    }
}

/// A tradable product: one delivery period in one market area.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Product {
    /// Identity within the shard.
    pub id: ProductId,
    /// Market area code, e.g. `"DE"`.
    pub area: String,
    /// What is delivered, when.
    pub period: DeliveryPeriod,
}

use crate::units::ProductId;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_must_be_aligned_in_utc() {
        let quarter = PeriodLength::Minutes15;
        assert!(DeliveryPeriod::new(UtcNanos(15 * NANOS_PER_MINUTE), quarter).is_ok());
        assert_eq!(
            DeliveryPeriod::new(UtcNanos(NANOS_PER_MINUTE), quarter),
            Err(TimeError::Misaligned {
                start: UtcNanos(NANOS_PER_MINUTE),
                length_minutes: 15
            })
        );
        assert_eq!(
            PeriodLength::from_minutes(20),
            Err(TimeError::BadLength(20))
        );
    }

    #[test]
    fn containing_period_rounds_down_including_before_epoch() {
        let hour = PeriodLength::Minutes60;
        let p = DeliveryPeriod::containing(UtcNanos(-1), hour).unwrap();
        assert_eq!(p.start(), UtcNanos(-hour.nanos()));
        assert_eq!(p.end(), UtcNanos(0));
        // Regression: the period of the earliest instant used to overflow.
        assert_eq!(
            DeliveryPeriod::containing(UtcNanos(i64::MIN), hour),
            Err(TimeError::OutOfRange)
        );
    }
}
