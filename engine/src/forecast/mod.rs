//! Day-ahead price forecasting: the first stage of the bidding engine.
//!
//! A [`Forecaster`] turns a [`PriceSeries`] and a day index into one price per delivery
//! period of that day. The optimiser and the backtests use only this trait.
//!
//! - [`naive::NaiveForecaster`]: the standard naive benchmark of electricity price
//!   forecasting (epftoolbox): Monday, Saturday and Sunday repeat the same weekday of the
//!   last week, Tuesday to Friday repeat yesterday. [`naive::WeeklyNaiveForecaster`]
//!   repeats last week, and is the scale of [`metrics::rmae`].
//! - [`lear::Lear`]: LEAR (Lago et al. 2021), one LASSO per period of the day on lagged
//!   prices, exogenous day-ahead forecasts and weekday dummies, under an asinh
//!   variance-stabilising transform, recalibrated every day on a rolling window.
//!   [`lear::LearEnsemble`] averages several windows (56, 84, 1092, 1456 days).
//! - [`metrics`]: MAE, sMAPE and rMAE; [`registry`]: model versions and their metrics.
//!
//! # Invariants
//! - **No look-ahead:** `forecast_day(series, d)` reads prices of days `< d` only and
//!   exogenous values of days `<= d` only (they are forecasts published before the
//!   auction). Tests corrupt everything after that and check the forecast is bit-identical.
//!   Prices of day `d` itself may be placeholders in live use.
//! - Forecasts are deterministic: no clock, no randomness, and the per-period fits that run
//!   in parallel (rayon) are collected in period order.
//! - A forecast is either `periods_per_day` finite prices or a [`ForecastError`].
//!
//! `PriceSeries` cannot hold a NaN or infinite value (it checks at construction), so
//! "bad input" here means a day without enough history, a day past the end of the series,
//! or a configuration that cannot work.

pub mod lars;
pub mod lasso;
pub mod lear;
pub mod metrics;
pub mod naive;
pub mod registry;

pub use lear::{Lear, LearConfig, LearEnsemble};
pub use metrics::{Metrics, MetricsError};
pub use naive::{NaiveForecaster, WeeklyNaiveForecaster};
pub use registry::{ModelRecord, ModelRegistry};
pub use voltex_market::series::PriceSeries;

/// A day-ahead price forecaster.
pub trait Forecaster {
    /// Short stable name, e.g. "naive", "lear-ensemble".
    fn name(&self) -> String;
    /// Prices for every period of day `day` (index into the series' days).
    /// May read prices of days < `day` only, and exogenous values of days <= `day`
    /// (they are day-ahead forecasts known before the auction).
    ///
    /// # Errors
    /// A [`ForecastError`] if `day` is out of range, lacks the history the model needs, or
    /// the model produced a non-finite price.
    fn forecast_day(&mut self, series: &PriceSeries, day: usize)
    -> Result<Vec<f64>, ForecastError>;
}

/// Why a forecast could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForecastError {
    /// `day` is not a day of the series.
    #[error("day {day} is out of range: the series has {n_days} days")]
    DayOutOfRange {
        /// The day asked for.
        day: usize,
        /// Days in the series.
        n_days: usize,
    },
    /// The model needs more days before `day` than the series has.
    #[error("{model}: day {day} needs {needed_days} days of history before it")]
    NotEnoughHistory {
        /// Model name.
        model: String,
        /// The day asked for.
        day: usize,
        /// Days the model must have before `day`, i.e. the smallest valid `day`.
        needed_days: usize,
    },
    /// The model produced a NaN or infinite value.
    #[error("{model}: non-finite {what} for day {day}")]
    NonFinite {
        /// Model name.
        model: String,
        /// The day forecast.
        day: usize,
        /// What was not finite.
        what: String,
    },
    /// The model's configuration cannot work.
    #[error("invalid forecaster configuration: {0}")]
    InvalidConfig(String),
}

/// Forecasts every day in `days` in order and concatenates the prices.
///
/// # Errors
/// The first [`ForecastError`] of the forecaster.
pub fn forecast_days(
    forecaster: &mut dyn Forecaster,
    series: &PriceSeries,
    days: std::ops::Range<usize>,
) -> Result<Vec<f64>, ForecastError> {
    let mut out = Vec::with_capacity(days.len() * series.periods_per_day());
    for day in days {
        out.extend(forecaster.forecast_day(series, day)?);
    }
    Ok(out)
}

/// Checks `day < n_days` and `day >= needed_days`.
fn check_day(
    model: &str,
    series: &PriceSeries,
    day: usize,
    needed_days: usize,
) -> Result<(), ForecastError> {
    if day >= series.n_days() {
        return Err(ForecastError::DayOutOfRange {
            day,
            n_days: series.n_days(),
        });
    }
    if day < needed_days {
        return Err(ForecastError::NotEnoughHistory {
            model: model.to_owned(),
            day,
            needed_days,
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Synthetic series for the forecaster tests.
    use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
    use rust_decimal::Decimal;
    use rust_decimal::prelude::FromPrimitive;

    use super::PriceSeries;

    /// Hourly timestamps from 2020-01-06 (a Monday) for `n_days` days.
    pub fn hourly_timestamps(n_days: usize) -> Vec<NaiveDateTime> {
        let start = NaiveDate::from_ymd_opt(2020, 1, 6).and_then(|d| d.and_hms_opt(0, 0, 0));
        let start = start.expect("valid date");
        (0..n_days * 24)
            .map(|i| start + TimeDelta::hours(i as i64))
            .collect()
    }

    /// A series from f64 prices (rounded to 6 decimals) and exogenous columns.
    pub fn series_from(prices: &[f64], exogenous: Vec<Vec<f64>>) -> PriceSeries {
        let n_days = prices.len() / 24;
        let prices = prices
            .iter()
            .map(|p| Decimal::from_f64(*p).expect("finite").round_dp(6))
            .collect();
        let names = (0..exogenous.len()).map(|k| format!("exo{k}")).collect();
        PriceSeries::from_parts(
            "synthetic",
            "Price",
            hourly_timestamps(n_days),
            prices,
            names,
            exogenous,
        )
        .expect("valid synthetic series")
    }
}
