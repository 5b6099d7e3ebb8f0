//! Where the LEAR daily recalibration spends its time, per calibration window.
//!
//! ```text
//! cargo run --release -p voltex-engine --example lear_profile -- DATA.csv [DAYS] [WINDOWS]
//! ```
//!
//! Forecasts the last `DAYS` days (default 728, the standard test period) of the price
//! file with the LEAR ensemble (windows comma-separated, default 56,84,1092,1456), one
//! window at a time and then the ensemble, and prints per window the wall time, the
//! coordinate-descent sweeps, the mean number of non-zero coefficients and the rMAE
//! against the weekly naive forecast, so the expensive windows stand out. It depends on
//! `LEAR_KNOT_PATIENCE=K` and `LEAR_EXO_LAGS=0,1,2` override those settings;
//! `LEAR_PROFILE_SOLO=1` adds the per-window runs; `LEAR_PROFILE_CACHE=FILE` writes the
//! ensemble forecasts in the format of `voltex backtest --forecast-cache`. It depends on
//! the engine only (not on the root binary), so it builds while other crates do not.
#![allow(clippy::disallowed_methods)] // an example measures wall time; the library never does

use std::time::Instant;

use voltex_engine::forecast::lear::{ENSEMBLE_WINDOWS_DAYS, Lear, LearConfig, LearEnsemble};
use voltex_engine::forecast::metrics::{actual_prices, mae, rmae, weekly_naive};
use voltex_engine::forecast::{Forecaster, PriceSeries};
use voltex_market::series::SeriesLayout;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: lear_profile DATA.csv [DAYS] [WINDOWS]")?;
    let n_test: usize = args.next().map_or(Ok(728), |s| s.parse())?;
    let windows: Vec<usize> = match args.next() {
        Some(text) => text.split(',').map(str::parse).collect::<Result<_, _>>()?,
        None => ENSEMBLE_WINDOWS_DAYS.to_vec(),
    };
    let text = std::fs::read_to_string(&path)?;
    let series = PriceSeries::parse_csv(&path, &text, &SeriesLayout::default())?;
    let first = series
        .n_days()
        .checked_sub(n_test)
        .ok_or("fewer days than asked for")?;
    let days = first..series.n_days();
    let actual = actual_prices(&series, days.clone());
    let naive = weekly_naive(&series, days.clone())?;
    let solo = std::env::var_os("LEAR_PROFILE_SOLO").is_some();
    // `LEAR_KNOT_PATIENCE=K` overrides the LARS knot patience (0: whole path).
    let knot_patience: Option<usize> = match std::env::var("LEAR_KNOT_PATIENCE") {
        Ok(text) => Some(text.parse()?),
        Err(_) => None,
    };
    // `LEAR_EXO_LAGS=0,1,2` overrides the exogenous lags (epftoolbox's code uses 0,1,2).
    let exo_lags: Option<Vec<usize>> = match std::env::var("LEAR_EXO_LAGS") {
        Ok(text) => Some(text.split(',').map(str::parse).collect::<Result<_, _>>()?),
        Err(_) => None,
    };
    let config = |w: usize| {
        let mut config = LearConfig::with_window(w);
        if let Some(k) = knot_patience {
            config.lasso.knot_patience = k;
        }
        if let Some(lags) = &exo_lags {
            config.exogenous_lags_days = lags.clone();
        }
        config
    };
    if solo {
        for &w in &windows {
            let mut lear = Lear::new(config(w))?;
            let started = Instant::now();
            let mut forecast = Vec::with_capacity(actual.len());
            let (mut sweeps, mut nonzero) = (0_usize, 0_usize);
            for day in days.clone() {
                forecast.extend(lear.forecast_day(&series, day)?);
                if let Some(fit) = lear.last_fit() {
                    sweeps += fit.n_sweeps;
                    nonzero += fit.n_nonzero.iter().sum::<usize>();
                }
            }
            let wall = started.elapsed().as_secs_f64();
            println!(
                "window {w:>5}: {wall:>8.2} s, {:>8.0} sweeps/day, {:>6.1} non-zero/period, \
                 MAE {:.3}, rMAE {:.4}",
                sweeps as f64 / n_test as f64,
                nonzero as f64 / (n_test * series.periods_per_day()) as f64,
                mae(&actual, &forecast)?,
                rmae(&actual, &forecast, &naive)?
            );
        }
    }
    let mut ensemble = LearEnsemble::new(windows.iter().map(|&w| config(w)).collect())?;
    let started = Instant::now();
    let mut forecast = Vec::with_capacity(actual.len());
    let mut cache = String::new();
    for day in days {
        let prices = ensemble.forecast_day(&series, day)?;
        let line: Vec<String> = prices.iter().map(|x| format!("{x:?}")).collect();
        cache.push_str(&line.join(","));
        cache.push('\n');
        forecast.extend(prices);
    }
    // Same format as `voltex backtest --forecast-cache`.
    if let Some(path) = std::env::var_os("LEAR_PROFILE_CACHE") {
        std::fs::write(path, cache)?;
    }
    println!(
        "ensemble {windows:?}: {:.2} s, MAE {:.3}, rMAE {:.4}",
        started.elapsed().as_secs_f64(),
        mae(&actual, &forecast)?,
        rmae(&actual, &forecast, &naive)?
    );
    Ok(())
}
