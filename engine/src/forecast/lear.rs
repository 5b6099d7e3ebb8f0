//! LEAR: the LASSO-estimated autoregressive model of Lago, Marcjasz, De Schutter & Weron
//! (2021), as in epftoolbox, recalibrated every day on a rolling window.
//!
//! For the day `d` to forecast and each period `h` of the day, one LASSO regression maps
//! the features of a day to its price at `h`. The features of day `t` are (defaults):
//!
//! - prices of days `t−1, t−2, t−3, t−7`, every period of each day (4 × 24);
//! - each exogenous day-ahead forecast on days `t, t−1, t−7`, every period (2 × 3 × 24 for
//!   the benchmark files);
//! - seven weekday dummies (Monday..Sunday of `t`'s local date).
//!
//! That is 247 features for hourly data with two exogenous series. (epftoolbox's code uses
//! exogenous lags `t, t−1, t−2` while its paper says `t, t−1, t−7`; we follow the paper.)
//!
//! **Calibration.** With a calibration window of `W` days, the training targets are the
//! days `d−W+7 .. d−1` (the first week of the window only feeds the lags, as in
//! epftoolbox), so there are `W − 7` samples and the first day that can be forecast is
//! `d = W`. Every feature column except the dummies, and every period's price, is
//! transformed with the variance-stabilising `asinh((x − median) / MAD)`, median and MAD
//! (scaled by 1/Φ⁻¹(0.75), as statsmodels' `mad`) fitted on the training rows of that day;
//! the forecast is transformed back with `sinh(z) · MAD + median`. A column whose MAD is
//! zero falls back to its mean absolute deviation (× √(π/2)), then to 1.
//!
//! **Fitting.** Because the transform is refitted every day, every entry of the design
//! matrix changes from one day to the next, so `XᵀX` cannot be rolled forward
//! incrementally; it is recomputed once per day and window (one `ndarray` matrix product,
//! O(n·p²)) and shared by the periods of the day. Each period then runs the LASSO of
//! [`super::lasso`]: by default the exact LARS path with the AIC at every knot, then the
//! exact solution at the chosen penalty (as epftoolbox's `LassoLarsIC` + `Lasso`); the
//! periods run in parallel with rayon and are collected in period order, so results are
//! deterministic and do not depend on the thread count.
//!
//! **Warm start.** Only the coordinate-descent solver ([`LassoSolver::CoordinateDescent`])
//! uses [`LearConfig::warm_start`]: each period's fit then starts from the same period's
//! fit of the previous forecast made by this model, and a forecast depends on the
//! sequence of days this instance forecast before (replaying the same sequence gives
//! bit-identical results). With the default LARS solver a forecast is a pure function of
//! the data and the day.
//!
//! # Invariants
//! - No look-ahead: price lags are `>= 1` day (checked by [`Lear::new`]), training targets
//!   are days `< d`, and exogenous lags are `>= 0`. Tests corrupt all later data.
//! - The only state kept between days is the warm start and the diagnostics of the last
//!   fit; the warm start itself comes only from data the earlier forecasts could read.

use std::collections::BTreeMap;

use ndarray::ArrayView2;
use rayon::prelude::*;

use super::lasso::{
    AlphaSelection, GramSystem, InformationCriterion, LassoFit, LassoPathConfig, LassoSolver,
    WarmStart, fit_lasso_ic,
};
use super::{ForecastError, Forecaster, PriceSeries, check_day};

/// Φ⁻¹(0.75): the MAD of a standard normal, which makes MAD a consistent σ estimate.
const NORMAL_MAD: f64 = 0.674_489_750_196_081_7;

/// The calibration windows of the epftoolbox LEAR ensemble, in days.
pub const ENSEMBLE_WINDOWS_DAYS: [usize; 4] = [56, 84, 1092, 1456];

/// Settings of one LEAR model.
#[derive(Debug, Clone, PartialEq)]
pub struct LearConfig {
    /// Calibration window in days (training targets are the last `window − max lag` days).
    pub calibration_window_days: usize,
    /// Days back of the price features (each >= 1).
    pub price_lags_days: Vec<usize>,
    /// Days back of the exogenous features (0 = the day being forecast).
    pub exogenous_lags_days: Vec<usize>,
    /// Penalty path and solver settings.
    pub lasso: LassoPathConfig,
    /// Start each day's fits from the previous forecast's fits (see the module docs).
    pub warm_start: bool,
}

impl LearConfig {
    /// The paper's configuration with calibration window `days`.
    pub fn with_window(days: usize) -> Self {
        Self {
            calibration_window_days: days,
            price_lags_days: vec![1, 2, 3, 7],
            exogenous_lags_days: vec![0, 1, 7],
            lasso: LassoPathConfig::default(),
            warm_start: true,
        }
    }

    /// The longest lag in days.
    pub fn max_lag_days(&self) -> usize {
        self.price_lags_days
            .iter()
            .chain(&self.exogenous_lags_days)
            .copied()
            .max()
            .unwrap_or(0)
    }

    /// Number of features for `periods_per_day` and `n_exogenous` exogenous series.
    pub fn n_features(&self, periods_per_day: usize, n_exogenous: usize) -> usize {
        let n_blocks = self.price_lags_days.len() + n_exogenous * self.exogenous_lags_days.len();
        n_blocks * periods_per_day + 7
    }

    fn problem(&self) -> Option<String> {
        if self.price_lags_days.contains(&0) {
            return Some("price lag 0 would read the prices being forecast".to_owned());
        }
        let min_window = self.max_lag_days() + 2;
        if self.calibration_window_days < min_window {
            return Some(format!(
                "calibration window {} days is shorter than max lag + 2 = {min_window}",
                self.calibration_window_days
            ));
        }
        self.lasso.problem()
    }
}

/// Diagnostics of the last daily recalibration.
#[derive(Debug, Clone, PartialEq)]
pub struct LearFitSummary {
    /// The day forecast.
    pub day: usize,
    /// Training samples (days).
    pub n_samples: usize,
    /// Features per sample.
    pub n_features: usize,
    /// Chosen penalty per period of the day.
    pub alphas: Vec<f64>,
    /// Non-zero coefficients per period of the day.
    pub n_nonzero: Vec<usize>,
    /// Coordinate-descent sweeps, summed over the periods.
    pub n_sweeps: usize,
}

/// One LEAR model (one calibration window).
#[derive(Debug, Clone)]
pub struct Lear {
    config: LearConfig,
    last_fit: Option<LearFitSummary>,
    /// Per period of the day: what the last forecast's fit leaves for the next one.
    warm: Vec<WarmStart>,
}

impl Lear {
    /// A LEAR model with `config`.
    ///
    /// # Errors
    /// [`ForecastError::InvalidConfig`] for a price lag of 0, a window shorter than the
    /// longest lag + 2, or an unusable LASSO configuration.
    pub fn new(config: LearConfig) -> Result<Self, ForecastError> {
        if let Some(problem) = config.problem() {
            return Err(ForecastError::InvalidConfig(problem));
        }
        Ok(Self {
            config,
            last_fit: None,
            warm: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LearConfig {
        &self.config
    }

    /// The first day index this model can forecast (its calibration window).
    pub fn first_forecast_day(&self) -> usize {
        self.config.calibration_window_days
    }

    /// Diagnostics of the last successful forecast, if any.
    pub fn last_fit(&self) -> Option<&LearFitSummary> {
        self.last_fit.as_ref()
    }

    /// Hyper-parameters as text, for a [`super::ModelRecord`].
    pub fn hyper_parameters(&self) -> BTreeMap<String, String> {
        let c = &self.config;
        let criterion = match c.lasso.criterion {
            InformationCriterion::Aic => "aic",
            InformationCriterion::Bic => "bic",
        };
        let selection = match c.lasso.selection {
            AlphaSelection::PaperEra => "paper-era (unit-norm columns, refit unscaled)",
            AlphaSelection::Consistent => "consistent",
        };
        BTreeMap::from([
            (
                "calibration_window_days".to_owned(),
                c.calibration_window_days.to_string(),
            ),
            (
                "price_lags_days".to_owned(),
                format!("{:?}", c.price_lags_days),
            ),
            (
                "exogenous_lags_days".to_owned(),
                format!("{:?}", c.exogenous_lags_days),
            ),
            ("criterion".to_owned(), criterion.to_owned()),
            ("n_alphas".to_owned(), c.lasso.n_alphas.to_string()),
            (
                "alpha_min_ratio".to_owned(),
                c.lasso.alpha_min_ratio.to_string(),
            ),
            ("tol".to_owned(), c.lasso.tol.to_string()),
            ("patience".to_owned(), c.lasso.patience.to_string()),
            ("alpha_selection".to_owned(), selection.to_owned()),
            (
                "solver".to_owned(),
                match c.lasso.solver {
                    LassoSolver::Lars => format!("lars (knot patience {})", c.lasso.knot_patience),
                    LassoSolver::CoordinateDescent => "coordinate-descent".to_owned(),
                },
            ),
            ("transform".to_owned(), "asinh-median-mad".to_owned()),
        ])
    }

    /// Writes the features of target day `t` into `column` of the `p × n` matrix `xt`
    /// (feature-major: feature `j` of sample `i` at `xt[j * n + i]`).
    fn fill_features(&self, series: &PriceSeries, t: usize, xt: &mut [f64], n: usize, i: usize) {
        let mut feature = 0;
        let mut put_day = |values: &[f64], feature: &mut usize| {
            for &v in values {
                xt[*feature * n + i] = v;
                *feature += 1;
            }
        };
        for &lag in &self.config.price_lags_days {
            put_day(series.day_prices_f64(t - lag), &mut feature);
        }
        for column in 0..series.exogenous().len() {
            for &lag in &self.config.exogenous_lags_days {
                put_day(series.day_exogenous(column, t - lag), &mut feature);
            }
        }
        let weekday = chrono::Datelike::weekday(&series.date(t)).num_days_from_monday() as usize;
        for dummy in 0..7 {
            xt[(feature + dummy) * n + i] = if dummy == weekday { 1.0 } else { 0.0 };
        }
    }

    fn fit_and_forecast(
        &self,
        series: &PriceSeries,
        day: usize,
    ) -> Result<(Vec<f64>, LearFitSummary, Vec<WarmStart>), ForecastError> {
        let name = self.name();
        check_day(&name, series, day, self.config.calibration_window_days)?;
        let ppd = series.periods_per_day();
        let p = self.config.n_features(ppd, series.exogenous().len());
        let n_scaled = p - 7;
        let n = self.config.calibration_window_days - self.config.max_lag_days();
        let first = day - n;

        // Features (p × n) and targets (ppd × n), sample i = day first + i; test features.
        let mut xt = vec![0.0; p * n];
        let mut yt = vec![0.0; ppd * n];
        for (i, t) in (first..day).enumerate() {
            self.fill_features(series, t, &mut xt, n, i);
            for (h, &price) in series.day_prices_f64(t).iter().enumerate() {
                yt[h * n + i] = price;
            }
        }
        let mut x_test = vec![0.0; p];
        self.fill_features(series, day, &mut x_test, 1, 0);

        // Transform (all but the dummies) and centre every feature; same for the targets.
        let mut scratch = Vec::with_capacity(n);
        for (j, row) in xt.chunks_exact_mut(n).enumerate() {
            if j < n_scaled {
                let scale = RobustScale::fit(row, &mut scratch);
                scale.transform_in_place(row);
                x_test[j] = scale.transform(x_test[j]);
            }
            let mean = row.iter().sum::<f64>() / n as f64;
            row.iter_mut().for_each(|v| *v -= mean);
            x_test[j] -= mean;
        }
        let mut y_scales = Vec::with_capacity(ppd);
        let mut y_means = Vec::with_capacity(ppd);
        let mut yty = Vec::with_capacity(ppd);
        for row in yt.chunks_exact_mut(n) {
            let scale = RobustScale::fit(row, &mut scratch);
            scale.transform_in_place(row);
            let mean = row.iter().sum::<f64>() / n as f64;
            row.iter_mut().for_each(|v| *v -= mean);
            yty.push(row.iter().map(|v| v * v).sum::<f64>() / n as f64);
            y_scales.push(scale);
            y_means.push(mean);
        }

        // Gram matrix and correlations: one matrix product each, shared by all periods.
        let inverse_n = 1.0 / n as f64;
        let (gram, xty) = {
            let x_view = ArrayView2::from_shape((p, n), &xt).map_err(shape_error)?;
            let y_view = ArrayView2::from_shape((ppd, n), &yt).map_err(shape_error)?;
            let gram = x_view.dot(&x_view.t()) * inverse_n;
            let xty = y_view.dot(&x_view.t()) * inverse_n; // ppd × p
            (GramSystem::new(gram.iter().copied().collect(), p, n), xty)
        };

        let use_warm = self.config.warm_start && self.warm.len() == ppd;
        let (fits, warm): (Vec<LassoFit>, Vec<WarmStart>) = (0..ppd)
            .into_par_iter()
            .map(|h| {
                let c: Vec<f64> = xty.row(h).iter().copied().collect();
                let warm = if use_warm { Some(&self.warm[h]) } else { None };
                fit_lasso_ic(&gram, &c, yty[h], &self.config.lasso, warm)
            })
            .unzip();

        let mut forecast = Vec::with_capacity(ppd);
        for (h, fit) in fits.iter().enumerate() {
            let z: f64 = y_means[h]
                + fit
                    .coefficients
                    .iter()
                    .zip(&x_test)
                    .map(|(b, x)| b * x)
                    .sum::<f64>();
            let price = y_scales[h].inverse(z);
            if !price.is_finite() {
                let what = format!("price at period {h}");
                return Err(ForecastError::NonFinite {
                    model: name,
                    day,
                    what,
                });
            }
            forecast.push(price);
        }
        let summary = LearFitSummary {
            day,
            n_samples: n,
            n_features: p,
            alphas: fits.iter().map(|f| f.alpha).collect(),
            n_nonzero: fits.iter().map(|f| f.n_nonzero).collect(),
            n_sweeps: fits.iter().map(|f| f.n_sweeps).sum(),
        };
        Ok((forecast, summary, warm))
    }
}

fn shape_error(err: ndarray::ShapeError) -> ForecastError {
    // The buffers are sized from the same p, n and ppd: this is a bug, reported as such.
    ForecastError::InvalidConfig(format!("internal matrix shape error: {err}"))
}

impl Forecaster for Lear {
    fn name(&self) -> String {
        format!("lear-{}", self.config.calibration_window_days)
    }

    fn forecast_day(
        &mut self,
        series: &PriceSeries,
        day: usize,
    ) -> Result<Vec<f64>, ForecastError> {
        let (forecast, summary, warm) = self.fit_and_forecast(series, day)?;
        self.last_fit = Some(summary);
        self.warm = warm;
        Ok(forecast)
    }
}

/// The asinh-median-MAD transform of one column.
#[derive(Debug, Clone, Copy)]
struct RobustScale {
    median: f64,
    scale: f64,
}

impl RobustScale {
    fn fit(values: &[f64], scratch: &mut Vec<f64>) -> Self {
        scratch.clear();
        scratch.extend_from_slice(values);
        let median = median_in_place(scratch);
        scratch.iter_mut().for_each(|v| *v = (*v - median).abs());
        let mad = median_in_place(scratch) / NORMAL_MAD;
        let scale = if mad > 0.0 {
            mad
        } else {
            let mean_abs = scratch.iter().sum::<f64>() / scratch.len() as f64;
            let scale = mean_abs * (std::f64::consts::PI / 2.0).sqrt();
            if scale > 0.0 { scale } else { 1.0 }
        };
        Self { median, scale }
    }

    fn transform(&self, x: f64) -> f64 {
        fast_asinh((x - self.median) / self.scale)
    }

    fn transform_in_place(&self, values: &mut [f64]) {
        values.iter_mut().for_each(|v| *v = self.transform(*v));
    }

    fn inverse(&self, z: f64) -> f64 {
        z.sinh() * self.scale + self.median
    }
}

/// `asinh(z) = sign(z) · ln(|z| + √(z² + 1))`: one `ln` and one `sqrt` instead of libm's
/// `log1p` and `hypot` (the transform of ~0.7 million values a day was a tenth of the
/// LEAR time). Accurate to a few ulp in absolute terms, which is all a regression
/// feature needs; `|z|` beyond 1e150 falls back to `f64::asinh` to avoid overflow.
fn fast_asinh(z: f64) -> f64 {
    let a = z.abs();
    if a > 1e150 {
        return z.asinh();
    }
    let v = (a + (a * a + 1.0).sqrt()).ln();
    if z < 0.0 { -v } else { v }
}

/// Median (mean of the two middle values for an even count); reorders `values`.
fn median_in_place(values: &mut [f64]) -> f64 {
    let len = values.len();
    let mid = len / 2;
    let (lower, upper_middle, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    let upper_middle = *upper_middle;
    if len % 2 == 1 {
        upper_middle
    } else {
        let lower_middle = lower.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower_middle + upper_middle) / 2.0
    }
}

/// The LEAR ensemble: the average of LEAR models with different calibration windows.
#[derive(Debug, Clone)]
pub struct LearEnsemble {
    members: Vec<Lear>,
}

impl LearEnsemble {
    /// The epftoolbox ensemble: windows of 56, 84, 1092 and 1456 days.
    ///
    /// # Errors
    /// Never for these windows; kept fallible like [`LearEnsemble::new`].
    pub fn standard() -> Result<Self, ForecastError> {
        Self::new(
            ENSEMBLE_WINDOWS_DAYS
                .iter()
                .map(|&w| LearConfig::with_window(w))
                .collect(),
        )
    }

    /// An ensemble of one LEAR model per config.
    ///
    /// # Errors
    /// [`ForecastError::InvalidConfig`] for no members or an invalid member config.
    pub fn new(configs: Vec<LearConfig>) -> Result<Self, ForecastError> {
        if configs.is_empty() {
            return Err(ForecastError::InvalidConfig(
                "an ensemble needs members".to_owned(),
            ));
        }
        let members = configs
            .into_iter()
            .map(Lear::new)
            .collect::<Result<_, _>>()?;
        Ok(Self { members })
    }

    /// The member models.
    pub fn members(&self) -> &[Lear] {
        &self.members
    }

    /// The first day every member can forecast.
    pub fn first_forecast_day(&self) -> usize {
        self.members
            .iter()
            .map(Lear::first_forecast_day)
            .max()
            .unwrap_or(0)
    }

    /// The ensemble forecast and each member's forecast (in member order). Members run in
    /// parallel; the average is taken in member order, so it is deterministic.
    ///
    /// # Errors
    /// The first member's error, in member order.
    pub fn forecast_day_with_members(
        &mut self,
        series: &PriceSeries,
        day: usize,
    ) -> Result<(Vec<f64>, Vec<Vec<f64>>), ForecastError> {
        let results: Vec<Result<Vec<f64>, ForecastError>> = self
            .members
            .par_iter_mut()
            .map(|m| m.forecast_day(series, day))
            .collect();
        let members = results.into_iter().collect::<Result<Vec<_>, _>>()?;
        let ppd = series.periods_per_day();
        let weight = 1.0 / members.len() as f64;
        let mut average = vec![0.0; ppd];
        for forecast in &members {
            for (a, f) in average.iter_mut().zip(forecast) {
                *a += f * weight;
            }
        }
        Ok((average, members))
    }
}

impl Forecaster for LearEnsemble {
    fn name(&self) -> String {
        "lear-ensemble".to_owned()
    }

    fn forecast_day(
        &mut self,
        series: &PriceSeries,
        day: usize,
    ) -> Result<Vec<f64>, ForecastError> {
        self.forecast_day_with_members(series, day)
            .map(|(average, _)| average)
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rust_decimal::Decimal;

    use super::*;
    use crate::forecast::forecast_days;
    use crate::forecast::metrics::{actual_prices, mae, weekly_naive};
    use crate::forecast::naive::NaiveForecaster;
    use crate::forecast::test_support::{hourly_timestamps, series_from};

    /// Prices with a known linear structure: an AR(1) on yesterday's price at the same
    /// hour, a load-like exogenous effect of the same day, a weekend drop and Gaussian-ish
    /// noise of standard deviation `noise`.
    fn synthetic(n_days: usize, noise: f64, seed: u64) -> PriceSeries {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut prices = vec![0.0; n_days * 24];
        let mut load = vec![0.0; n_days * 24];
        for d in 0..n_days {
            let weekend = if d % 7 >= 5 { -4.0 } else { 0.0 };
            for h in 0..24 {
                let i = d * 24 + h;
                let daily = 5.0 * ((h as f64 - 6.0) / 24.0 * std::f64::consts::TAU).sin();
                load[i] = 40_000.0 + 3_000.0 * daily / 5.0 + rng.random_range(-4000.0..4000.0);
                let yesterday = if d == 0 { 30.0 } else { prices[i - 24] };
                // Sum of 4 uniforms: roughly normal, std = noise.
                let eps: f64 = (0..4).map(|_| rng.random_range(-1.0..1.0)).sum::<f64>()
                    * noise
                    * (3.0_f64 / 4.0).sqrt();
                prices[i] =
                    12.0 + 0.6 * yesterday + 0.0015 * (load[i] - 40_000.0) + daily + weekend + eps;
            }
        }
        series_from(&prices, vec![load])
    }

    #[test]
    fn recovers_a_known_linear_structure() {
        let noise = 1.0;
        let series = synthetic(300, noise, 7);
        let mut lear = Lear::new(LearConfig::with_window(200)).unwrap();
        let days = 250..300;
        let forecast = forecast_days(&mut lear, &series, days.clone()).unwrap();
        let actual = actual_prices(&series, days.clone());
        let lear_mae = mae(&actual, &forecast).unwrap();
        let naive = forecast_days(&mut NaiveForecaster, &series, days.clone()).unwrap();
        let naive_mae = mae(&actual, &naive).unwrap();
        let weekly_mae = mae(&actual, &weekly_naive(&series, days).unwrap()).unwrap();
        // The best possible forecast (the true model) has MAE = E|eps| ≈ 0.8 · noise.
        assert!(lear_mae < 1.5 * noise, "LEAR MAE {lear_mae}");
        assert!(
            lear_mae < 0.5 * naive_mae,
            "LEAR {lear_mae} vs naive {naive_mae}"
        );
        assert!(
            lear_mae < 0.5 * weekly_mae,
            "LEAR {lear_mae} vs weekly {weekly_mae}"
        );
        let fit = lear.last_fit().unwrap();
        assert_eq!((fit.n_samples, fit.n_features), (193, 96 + 72 + 7));
        // Sparse: far fewer active features than available.
        assert!(
            fit.n_nonzero.iter().all(|&k| k > 0 && k < 120),
            "{:?}",
            fit.n_nonzero
        );
    }

    /// Rebuilds `series` with prices of days >= `from_price_day` and exogenous values of
    /// days >= `from_exogenous_day` replaced by garbage.
    fn corrupted(
        series: &PriceSeries,
        from_price_day: usize,
        from_exogenous_day: usize,
    ) -> PriceSeries {
        let ppd = series.periods_per_day();
        let mut prices = series.prices().to_vec();
        for (i, p) in prices.iter_mut().enumerate().skip(from_price_day * ppd) {
            *p = Decimal::from(9_000 + (i % 37) as i64);
        }
        let mut exogenous = series.exogenous().to_vec();
        for column in &mut exogenous {
            for (i, v) in column.iter_mut().enumerate().skip(from_exogenous_day * ppd) {
                *v = -1.0e6 * (1.0 + (i % 11) as f64);
            }
        }
        PriceSeries::from_parts(
            series.name(),
            series.price_name(),
            series.timestamps().to_vec(),
            prices,
            series.exogenous_names().to_vec(),
            exogenous,
        )
        .unwrap()
    }

    fn small_ensemble() -> LearEnsemble {
        LearEnsemble::new(vec![
            LearConfig::with_window(56),
            LearConfig::with_window(84),
        ])
        .unwrap()
    }

    #[test]
    fn no_look_ahead_forecast_is_bit_identical_when_the_future_is_corrupted() {
        let series = synthetic(130, 1.0, 11);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for day in [84, 100, 129] {
            let future_corrupted = corrupted(&series, day, day + 1);
            let mut clean = small_ensemble();
            let mut dirty = small_ensemble();
            // A run of consecutive days ending at `day`, so the warm starts are exercised.
            for d in day.saturating_sub(4).max(84)..=day {
                let (a, a_members) = clean.forecast_day_with_members(&series, d).unwrap();
                let (b, b_members) = dirty
                    .forecast_day_with_members(&future_corrupted, d)
                    .unwrap();
                assert_eq!(
                    bits(&a),
                    bits(&b),
                    "ensemble, day {d} (corrupted from {day})"
                );
                for (x, y) in a_members.iter().zip(&b_members) {
                    assert_eq!(bits(x), bits(y), "member, day {d} (corrupted from {day})");
                }
            }
            let naive_a = NaiveForecaster.forecast_day(&series, day).unwrap();
            let naive_b = NaiveForecaster
                .forecast_day(&future_corrupted, day)
                .unwrap();
            assert_eq!(bits(&naive_a), bits(&naive_b), "naive, day {day}");
        }
    }

    #[test]
    fn corrupting_the_allowed_inputs_does_change_the_forecast() {
        // Control for the test above: the data at the boundary is really used.
        let series = synthetic(130, 1.0, 11);
        let day = 100;
        let base = small_ensemble().forecast_day(&series, day).unwrap();
        let exogenous_of_day = small_ensemble().forecast_day(&corrupted(&series, 130, day), day);
        assert_ne!(base, exogenous_of_day.unwrap());
        let prices_of_yesterday =
            small_ensemble().forecast_day(&corrupted(&series, day - 1, 130), day);
        assert_ne!(base, prices_of_yesterday.unwrap());
    }

    #[test]
    fn without_warm_start_a_forecast_does_not_depend_on_earlier_calls() {
        let series = synthetic(130, 1.0, 3);
        let cold = || {
            let configs = [56, 84].map(|w| LearConfig {
                warm_start: false,
                ..LearConfig::with_window(w)
            });
            LearEnsemble::new(configs.to_vec()).unwrap()
        };
        let mut fresh = cold();
        let mut used = cold();
        for day in 90..100 {
            used.forecast_day(&series, day).unwrap();
        }
        assert_eq!(
            fresh.forecast_day(&series, 100).unwrap(),
            used.forecast_day(&series, 100).unwrap()
        );
    }

    #[test]
    fn with_warm_start_replaying_the_same_days_is_bit_identical_and_close_to_cold() {
        let series = synthetic(130, 1.0, 3);
        let mut first = small_ensemble();
        let mut second = small_ensemble();
        let mut cold = LearEnsemble::new(
            [56, 84]
                .map(|w| LearConfig {
                    warm_start: false,
                    ..LearConfig::with_window(w)
                })
                .to_vec(),
        )
        .unwrap();
        for day in 90..=100 {
            let a = first.forecast_day(&series, day).unwrap();
            let b = second.forecast_day(&series, day).unwrap();
            assert_eq!(a, b, "day {day}");
            let c = cold.forecast_day(&series, day).unwrap();
            let mean_abs_diff = a.iter().zip(&c).map(|(x, y)| (x - y).abs()).sum::<f64>() / 24.0;
            // Warm and cold fits agree up to solver tolerance and the local penalty walk;
            // prices here are around 30 with noise 1.
            assert!(
                mean_abs_diff < 0.5,
                "day {day}: warm vs cold differ by {mean_abs_diff}"
            );
        }
    }

    #[test]
    fn rejects_days_without_enough_history_or_past_the_end() {
        let series = synthetic(100, 1.0, 5);
        let mut lear = Lear::new(LearConfig::with_window(56)).unwrap();
        assert_eq!(
            lear.forecast_day(&series, 55),
            Err(ForecastError::NotEnoughHistory {
                model: "lear-56".into(),
                day: 55,
                needed_days: 56
            })
        );
        assert_eq!(
            lear.forecast_day(&series, 100),
            Err(ForecastError::DayOutOfRange {
                day: 100,
                n_days: 100
            })
        );
        assert!(lear.forecast_day(&series, 56).is_ok());
        let mut ensemble = LearEnsemble::standard().unwrap();
        assert_eq!(ensemble.first_forecast_day(), 1456);
        assert!(matches!(
            ensemble.forecast_day(&series, 99),
            Err(ForecastError::NotEnoughHistory {
                needed_days: 1092,
                ..
            })
        ));
    }

    #[test]
    fn rejects_configs_that_look_ahead_or_cannot_fit() {
        let mut config = LearConfig::with_window(56);
        config.price_lags_days = vec![0, 1];
        assert!(matches!(
            Lear::new(config),
            Err(ForecastError::InvalidConfig(_))
        ));
        assert!(matches!(
            Lear::new(LearConfig::with_window(8)),
            Err(ForecastError::InvalidConfig(_))
        ));
        let mut config = LearConfig::with_window(56);
        config.lasso.alpha_min_ratio = f64::NAN;
        assert!(matches!(
            Lear::new(config),
            Err(ForecastError::InvalidConfig(_))
        ));
        assert!(matches!(
            LearEnsemble::new(Vec::new()),
            Err(ForecastError::InvalidConfig(_))
        ));
    }

    #[test]
    fn nan_exogenous_input_is_rejected_before_it_reaches_a_forecaster() {
        let n_days = 60;
        let mut load = vec![1.0; n_days * 24];
        load[100] = f64::NAN;
        let prices = vec![Decimal::from(30); n_days * 24];
        let result = PriceSeries::from_parts(
            "nan",
            "Price",
            hourly_timestamps(n_days),
            prices,
            vec!["load".into()],
            vec![load],
        );
        assert!(result.is_err());
    }

    #[test]
    fn constant_prices_are_forecast_exactly() {
        let n_days = 70;
        let series = series_from(&vec![42.5; n_days * 24], vec![vec![7.0; n_days * 24]]);
        let forecast = Lear::new(LearConfig::with_window(56))
            .unwrap()
            .forecast_day(&series, 60);
        assert!(forecast.unwrap().iter().all(|&p| (p - 42.5).abs() < 1e-9));
    }

    #[test]
    fn fast_asinh_matches_the_library_asinh() {
        for &z in &[0.0, 1e-12, -3e-7, 0.5, -1.0, 2.0, 37.5, -1e6, 1e200, -1e200] {
            let (a, b) = (fast_asinh(z), z.asinh());
            assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "{z}: {a} vs {b}");
        }
    }

    #[test]
    fn median_handles_odd_and_even_counts() {
        assert_eq!(median_in_place(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_in_place(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
