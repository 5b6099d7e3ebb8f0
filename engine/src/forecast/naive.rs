//! Naive benchmarks: the standard naive forecast of electricity price forecasting and the
//! weekly naive forecast.
//!
//! - [`NaiveForecaster`] ("naive"): as in epftoolbox's `naive_forecast` with `m=None`,
//!   Monday, Saturday and Sunday take the prices of the same weekday one week earlier;
//!   Tuesday to Friday take yesterday's prices. The weekday is that of the day's local
//!   date in the series.
//! - [`WeeklyNaiveForecaster`] ("naive-weekly"): every day takes the prices of the same
//!   weekday one week earlier. Its MAE is the denominator of [`super::metrics::rmae`].
//!
//! # Invariants
//! - Both read prices of exactly one earlier day and nothing else (no look-ahead), and the
//!   output is a copy of those prices.

use chrono::Weekday;

use super::{ForecastError, Forecaster, PriceSeries, check_day};

/// The standard naive forecast (Mon/Sat/Sun: last week; Tue–Fri: yesterday).
#[derive(Debug, Clone, Copy, Default)]
pub struct NaiveForecaster;

impl NaiveForecaster {
    /// How many days back this forecaster looks for day `day` of `series`.
    ///
    /// # Panics
    /// If `day` is not a day of `series`.
    pub fn lag_days(series: &PriceSeries, day: usize) -> usize {
        match series.weekday(day) {
            Weekday::Mon | Weekday::Sat | Weekday::Sun => 7,
            Weekday::Tue | Weekday::Wed | Weekday::Thu | Weekday::Fri => 1,
        }
    }
}

impl Forecaster for NaiveForecaster {
    fn name(&self) -> String {
        "naive".to_owned()
    }

    fn forecast_day(
        &mut self,
        series: &PriceSeries,
        day: usize,
    ) -> Result<Vec<f64>, ForecastError> {
        check_day("naive", series, day, 0)?;
        let lag = Self::lag_days(series, day);
        check_day("naive", series, day, lag)?;
        Ok(series.day_prices_f64(day - lag).to_vec())
    }
}

/// The weekly naive forecast: same period, seven days earlier.
#[derive(Debug, Clone, Copy, Default)]
pub struct WeeklyNaiveForecaster;

impl Forecaster for WeeklyNaiveForecaster {
    fn name(&self) -> String {
        "naive-weekly".to_owned()
    }

    fn forecast_day(
        &mut self,
        series: &PriceSeries,
        day: usize,
    ) -> Result<Vec<f64>, ForecastError> {
        check_day("naive-weekly", series, day, 7)?;
        Ok(series.day_prices_f64(day - 7).to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::test_support::series_from;

    /// Day `d` has price `d + h / 100` at hour `h`: the forecast tells which day it copied.
    fn day_numbered_series(n_days: usize) -> PriceSeries {
        let prices: Vec<f64> = (0..n_days * 24)
            .map(|i| (i / 24) as f64 + (i % 24) as f64 / 100.0)
            .collect();
        series_from(&prices, Vec::new())
    }

    #[test]
    fn naive_takes_last_week_on_mon_sat_sun_and_yesterday_otherwise() {
        // Day 0 is Monday 2020-01-06; days 7..=13 are Monday..Sunday of the second week.
        let series = day_numbered_series(14);
        let cases = [
            (7, Weekday::Mon, 0),
            (8, Weekday::Tue, 7),
            (9, Weekday::Wed, 8),
            (10, Weekday::Thu, 9),
            (11, Weekday::Fri, 10),
            (12, Weekday::Sat, 5),
            (13, Weekday::Sun, 6),
        ];
        for (day, weekday, source_day) in cases {
            assert_eq!(series.weekday(day), weekday);
            let forecast = NaiveForecaster.forecast_day(&series, day).unwrap();
            let expected: Vec<f64> = (0..24)
                .map(|h| source_day as f64 + h as f64 / 100.0)
                .collect();
            assert_eq!(forecast, expected, "day {day} ({weekday})");
        }
    }

    #[test]
    fn weekly_naive_takes_seven_days_earlier() {
        let series = day_numbered_series(10);
        let forecast = WeeklyNaiveForecaster.forecast_day(&series, 9).unwrap();
        assert_eq!(forecast[5], 2.05);
    }

    #[test]
    fn naive_rejects_days_without_history_and_past_the_end() {
        let series = day_numbered_series(10);
        // Day 1 is a Tuesday: yesterday exists. Day 0 (Monday) needs last week.
        assert!(NaiveForecaster.forecast_day(&series, 1).is_ok());
        assert_eq!(
            NaiveForecaster.forecast_day(&series, 0),
            Err(ForecastError::NotEnoughHistory {
                model: "naive".into(),
                day: 0,
                needed_days: 7
            })
        );
        assert_eq!(
            NaiveForecaster.forecast_day(&series, 10),
            Err(ForecastError::DayOutOfRange {
                day: 10,
                n_days: 10
            })
        );
        assert!(matches!(
            WeeklyNaiveForecaster.forecast_day(&series, 6),
            Err(ForecastError::NotEnoughHistory { needed_days: 7, .. })
        ));
    }
}
