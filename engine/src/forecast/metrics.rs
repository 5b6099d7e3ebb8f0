//! Forecast accuracy metrics as in the epftoolbox benchmark (Lago et al. 2021).
//!
//! - [`mae`]: mean absolute error, in price units.
//! - [`smape_pct`]: symmetric MAPE in percent,
//!   `100 · mean(|p − p̂| / ((|p| + |p̂|) / 2))`; a period where both are zero counts 0.
//! - [`rmae`]: MAE divided by the MAE of a naive forecast over the same periods. The
//!   paper's rMAE uses the weekly naive forecast (same period, seven days earlier:
//!   epftoolbox `rMAE(..., m="W")`); [`weekly_naive`] builds it from the series, so the
//!   naive forecast covers exactly the evaluated days (epftoolbox instead drops the first
//!   week of the test period from the naive MAE).
//!
//! # Invariants
//! - Every metric rejects empty, unequal-length or non-finite inputs with a
//!   [`MetricsError`] rather than returning NaN.

use serde::{Deserialize, Serialize};

use super::{ForecastError, Forecaster, PriceSeries, WeeklyNaiveForecaster, forecast_days};

/// Why a metric could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// No values.
    #[error("no values to evaluate")]
    Empty,
    /// Inputs of different lengths.
    #[error("length mismatch: {actual} actual values, {other} forecast values")]
    LengthMismatch {
        /// Number of actual values.
        actual: usize,
        /// Number of forecast (or naive) values.
        other: usize,
    },
    /// A NaN or infinite input.
    #[error("non-finite value at index {index}")]
    NonFinite {
        /// Index of the first bad value.
        index: usize,
    },
    /// The naive forecast is perfect, so the relative error is undefined.
    #[error("the naive forecast has zero MAE: rMAE undefined")]
    ZeroNaiveError,
}

/// Accuracy of one forecaster over one period.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Mean absolute error, price units.
    pub mae: f64,
    /// Symmetric mean absolute percentage error, percent.
    pub smape_pct: f64,
    /// MAE relative to the weekly naive forecast's MAE.
    pub rmae: f64,
    /// Number of periods evaluated.
    pub n_periods: usize,
}

impl Metrics {
    /// All three metrics of `forecast` against `actual`, scaled by `naive`.
    ///
    /// # Errors
    /// See [`MetricsError`].
    pub fn compute(actual: &[f64], forecast: &[f64], naive: &[f64]) -> Result<Self, MetricsError> {
        Ok(Self {
            mae: mae(actual, forecast)?,
            smape_pct: smape_pct(actual, forecast)?,
            rmae: rmae(actual, forecast, naive)?,
            n_periods: actual.len(),
        })
    }
}

fn check(actual: &[f64], other: &[f64]) -> Result<(), MetricsError> {
    if actual.is_empty() {
        return Err(MetricsError::Empty);
    }
    if actual.len() != other.len() {
        return Err(MetricsError::LengthMismatch {
            actual: actual.len(),
            other: other.len(),
        });
    }
    let bad = |values: &[f64]| values.iter().position(|v| !v.is_finite());
    if let Some(index) = bad(actual).or_else(|| bad(other)) {
        return Err(MetricsError::NonFinite { index });
    }
    Ok(())
}

/// Mean absolute error.
///
/// # Errors
/// Empty, unequal-length or non-finite inputs.
pub fn mae(actual: &[f64], forecast: &[f64]) -> Result<f64, MetricsError> {
    check(actual, forecast)?;
    let sum: f64 = actual
        .iter()
        .zip(forecast)
        .map(|(a, f)| (a - f).abs())
        .sum();
    Ok(sum / actual.len() as f64)
}

/// Symmetric mean absolute percentage error, in percent.
///
/// # Errors
/// Empty, unequal-length or non-finite inputs.
pub fn smape_pct(actual: &[f64], forecast: &[f64]) -> Result<f64, MetricsError> {
    check(actual, forecast)?;
    let sum: f64 = actual
        .iter()
        .zip(forecast)
        .map(|(a, f)| {
            let denominator = (a.abs() + f.abs()) / 2.0;
            if denominator == 0.0 {
                0.0
            } else {
                (a - f).abs() / denominator
            }
        })
        .sum();
    Ok(100.0 * sum / actual.len() as f64)
}

/// Relative MAE: `mae(actual, forecast) / mae(actual, naive)`.
///
/// # Errors
/// Empty, unequal-length or non-finite inputs, or a naive forecast with zero error.
pub fn rmae(actual: &[f64], forecast: &[f64], naive: &[f64]) -> Result<f64, MetricsError> {
    let scale = mae(actual, naive)?;
    if scale == 0.0 {
        return Err(MetricsError::ZeroNaiveError);
    }
    Ok(mae(actual, forecast)? / scale)
}

/// The weekly naive forecast (same period, seven days earlier) for `days`, the scale of
/// [`rmae`].
///
/// # Errors
/// [`ForecastError`] if a day is out of range or earlier than day 7.
pub fn weekly_naive(
    series: &PriceSeries,
    days: std::ops::Range<usize>,
) -> Result<Vec<f64>, ForecastError> {
    forecast_days(&mut WeeklyNaiveForecaster, series, days)
}

/// Actual prices of `days`, concatenated.
///
/// # Panics
/// If a day is out of range.
pub fn actual_prices(series: &PriceSeries, days: std::ops::Range<usize>) -> Vec<f64> {
    let ppd = series.periods_per_day();
    series.prices_f64()[days.start * ppd..days.end * ppd].to_vec()
}

/// Forecasts `days` with `forecaster` and scores it against the actual prices, with the
/// weekly naive forecast as the rMAE scale. Returns the forecasts and the metrics.
///
/// # Errors
/// The forecaster's error; a day range that is empty, starts before day 7 or runs past
/// the series; or, reported as [`ForecastError::InvalidConfig`], a metric that cannot be
/// computed (e.g. a weekly naive forecast with zero error).
pub fn evaluate(
    forecaster: &mut dyn Forecaster,
    series: &PriceSeries,
    days: std::ops::Range<usize>,
) -> Result<(Vec<f64>, Metrics), ForecastError> {
    let forecast = forecast_days(forecaster, series, days.clone())?;
    let naive = weekly_naive(series, days.clone())?;
    let actual = actual_prices(series, days);
    let metrics = Metrics::compute(&actual, &forecast, &naive)
        .map_err(|err| ForecastError::InvalidConfig(format!("cannot score: {err}")))?;
    Ok((forecast, metrics))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_vectors() {
        let actual = [10.0, 20.0, -5.0, 0.0];
        let forecast = [12.0, 15.0, -5.0, 0.0];
        let naive = [10.0, 30.0, 5.0, 4.0];
        // |e| = 2, 5, 0, 0 -> MAE 7/4.
        assert_eq!(mae(&actual, &forecast).unwrap(), 1.75);
        // sMAPE terms: 2/11, 5/17.5, 0, 0 (both zero counts 0).
        let expected = 100.0 * (2.0 / 11.0 + 5.0 / 17.5) / 4.0;
        assert!((smape_pct(&actual, &forecast).unwrap() - expected).abs() < 1e-12);
        // Naive |e| = 0, 10, 10, 4 -> MAE 6; rMAE = 1.75 / 6.
        assert!((rmae(&actual, &forecast, &naive).unwrap() - 1.75 / 6.0).abs() < 1e-15);
        let metrics = Metrics::compute(&actual, &forecast, &naive).unwrap();
        assert_eq!(metrics.n_periods, 4);
    }

    #[test]
    fn rejects_bad_inputs() {
        assert_eq!(mae(&[], &[]), Err(MetricsError::Empty));
        assert_eq!(
            mae(&[1.0], &[1.0, 2.0]),
            Err(MetricsError::LengthMismatch {
                actual: 1,
                other: 2
            })
        );
        assert_eq!(
            smape_pct(&[1.0, 2.0], &[1.0, f64::NAN]),
            Err(MetricsError::NonFinite { index: 1 })
        );
        assert_eq!(
            rmae(&[1.0], &[2.0], &[1.0]),
            Err(MetricsError::ZeroNaiveError)
        );
    }
}
