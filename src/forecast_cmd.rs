//! `voltex forecast evaluate`: day-ahead price forecasters on a price file, scored over the
//! standard test period (the last 728 days) or the last `--days N` days.
//!
//! The command reads the CSV file (the only I/O), parses it with
//! [`voltex_market::series::PriceSeries::parse_csv`], forecasts every test day with the
//! naive benchmark and the LEAR ensemble (each window and their average, one daily
//! recalibration per window), and prints MAE, sMAPE and rMAE (relative to the weekly
//! naive forecast over the same days, as in Lago et al. 2021) with the wall time.
//! Each evaluated model is also entered in an in-memory
//! [`voltex_engine::forecast::ModelRegistry`] with its hyper-parameters and metrics, which
//! `--json` prints and `--database-url` records in the `ml_models` table (the only other
//! I/O). Timings are reported, never asserted.

// The root binary measures wall time (clippy.toml forbids it only in market/ and engine/).
#![allow(clippy::disallowed_methods)]

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use voltex_engine::forecast::lear::{ENSEMBLE_WINDOWS_DAYS, LearConfig, LearEnsemble};
use voltex_engine::forecast::metrics::{Metrics, actual_prices, weekly_naive};
use voltex_engine::forecast::registry::Validation;
use voltex_engine::forecast::{Forecaster, ModelRecord, ModelRegistry, NaiveForecaster};
use voltex_market::series::{ColumnChoice, PriceSeries, STANDARD_TEST_DAYS, SeriesLayout};

/// `voltex forecast ...` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum ForecastCommand {
    /// Score the naive and LEAR forecasters on a price file over its last days.
    Evaluate(EvaluateArgs),
}

/// Arguments of `voltex forecast evaluate`.
#[derive(clap::Args, Debug)]
pub struct EvaluateArgs {
    /// Price CSV: timestamp, price, exogenous columns (e.g. ../shared/data/NP.csv).
    #[arg(long)]
    data: std::path::PathBuf,
    /// Evaluate only the last N days (default: the standard 728-day test period).
    #[arg(long)]
    days: Option<usize>,
    /// Price column, by header name or 0-based position (default: the column after the
    /// timestamp).
    #[arg(long)]
    price_column: Option<String>,
    /// LEAR calibration windows in days, comma-separated (default: 56,84,1092,1456).
    #[arg(long, value_delimiter = ',')]
    windows: Option<Vec<usize>>,
    /// LEAR exogenous lags in days, comma-separated (default: 0,1,7 as in the paper;
    /// epftoolbox's code uses 0,1,2). Lag 0 is the delivery day's own day-ahead forecast.
    #[arg(long, value_delimiter = ',')]
    exogenous_lags: Option<Vec<usize>>,
    /// Print the results (and the model registry records) as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also record every evaluated model, with its metrics, in this database's model
    /// registry (`ml_models`, read by `GET /api/v1/ml/models` and the dashboard), e.g.
    /// `sqlite://voltex-data/voltex.db` or `postgres://postgres@127.0.0.1/postgres`.
    #[arg(long)]
    database_url: Option<String>,
}

/// Runs a `voltex forecast` subcommand.
///
/// # Errors
/// An unreadable or malformed file, too few days for the models, or a forecaster error.
pub fn run(command: &ForecastCommand) -> Result<()> {
    match command {
        ForecastCommand::Evaluate(args) => evaluate(args),
    }
}

/// One scored model.
struct Row {
    model: String,
    metrics: Metrics,
    wall_s: Option<f64>,
    note: &'static str,
}

fn evaluate(args: &EvaluateArgs) -> Result<()> {
    let file_name = args.data.display().to_string();
    let text = std::fs::read_to_string(&args.data)
        .with_context(|| format!("cannot read price file {file_name}"))?;
    let price_column = match &args.price_column {
        None => ColumnChoice::Default,
        Some(text) => match text.parse::<usize>() {
            Ok(index) => ColumnChoice::ByIndex(index),
            Err(_) => ColumnChoice::ByName(text.clone()),
        },
    };
    let layout = SeriesLayout {
        price_column,
        ..SeriesLayout::default()
    };
    let series = PriceSeries::parse_csv(&file_name, &text, &layout)?;

    let windows = args
        .windows
        .clone()
        .unwrap_or_else(|| ENSEMBLE_WINDOWS_DAYS.to_vec());
    let mut ensemble = LearEnsemble::new(
        windows
            .iter()
            .map(|&w| {
                let mut config = LearConfig::with_window(w);
                if let Some(lags) = &args.exogenous_lags {
                    config.exogenous_lags_days.clone_from(lags);
                }
                config
            })
            .collect(),
    )?;
    let n_test = args.days.unwrap_or(STANDARD_TEST_DAYS);
    let needed = ensemble.first_forecast_day().max(7);
    let Some(first_day) = series.n_days().checked_sub(n_test) else {
        bail!(
            "{file_name} has {} days, fewer than the {n_test} to evaluate",
            series.n_days()
        );
    };
    if n_test == 0 || first_day < needed {
        bail!(
            "{file_name}: evaluating the last {n_test} of {} days leaves {first_day} days of \
             history, the models need {needed}",
            series.n_days()
        );
    }
    let days = first_day..series.n_days();
    tracing::info!(
        file = %file_name,
        first = %series.date(first_day),
        last = %series.date(series.n_days() - 1),
        n_days = n_test,
        windows = ?windows,
        "evaluating forecasters"
    );

    let ppd = series.periods_per_day();
    let mut naive_forecast = Vec::with_capacity(n_test * ppd);
    let mut ensemble_forecast = Vec::with_capacity(n_test * ppd);
    let mut member_forecasts = vec![Vec::with_capacity(n_test * ppd); windows.len()];
    let mut naive_s = 0.0;
    let lear_start = Instant::now();
    let mut lear_s = 0.0;
    for (done, day) in days.clone().enumerate() {
        let started = Instant::now();
        naive_forecast.extend(NaiveForecaster.forecast_day(&series, day)?);
        naive_s += started.elapsed().as_secs_f64();
        let started = Instant::now();
        let (average, members) = ensemble.forecast_day_with_members(&series, day)?;
        lear_s += started.elapsed().as_secs_f64();
        ensemble_forecast.extend(average);
        for (all, member) in member_forecasts.iter_mut().zip(members) {
            all.extend(member);
        }
        if (done + 1) % 100 == 0 {
            tracing::info!(
                days_done = done + 1,
                elapsed_s = format!("{:.1}", lear_start.elapsed().as_secs_f64()),
                "LEAR progress"
            );
        }
    }

    let actual = actual_prices(&series, days.clone());
    let naive_weekly = weekly_naive(&series, days.clone())?;
    let score = |forecast: &[f64]| Metrics::compute(&actual, forecast, &naive_weekly);
    let mut rows = vec![
        Row {
            model: "naive-weekly".into(),
            metrics: score(&naive_weekly)?,
            wall_s: None,
            note: "rMAE scale",
        },
        Row {
            model: "naive".into(),
            metrics: score(&naive_forecast)?,
            wall_s: Some(naive_s),
            note: "",
        },
    ];
    for (member, forecast) in ensemble.members().iter().zip(&member_forecasts) {
        let model = member.name();
        rows.push(Row {
            model,
            metrics: score(forecast)?,
            wall_s: None,
            note: "in ensemble",
        });
    }
    rows.push(Row {
        model: ensemble.name(),
        metrics: score(&ensemble_forecast)?,
        wall_s: Some(lear_s),
        note: "all windows",
    });

    let mut registry = ModelRegistry::new();
    let trained_through_day = Some(series.n_days() - 2);
    for row in &rows {
        let mut record = ModelRecord::new(&row.model, series.name());
        record.trained_through_day = trained_through_day;
        if let Some(member) = ensemble.members().iter().find(|m| m.name() == row.model) {
            record.calibration_window_days = Some(member.config().calibration_window_days);
            record.hyper_parameters = member.hyper_parameters();
        } else if row.model == ensemble.name() {
            let list = windows
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            record.hyper_parameters.insert("windows_days".into(), list);
            record
                .hyper_parameters
                .insert("combination".into(), "mean".into());
        }
        record.validation = Some(Validation {
            first_day,
            end_day: series.n_days(),
            metrics: row.metrics,
        });
        registry.register(record);
    }

    if let Some(url) = &args.database_url {
        for (name, version) in record_models(url, &series, &registry)? {
            eprintln!("recorded {name} v{version} in ml_models");
        }
    }
    if args.json {
        println!("{}", to_json(&series, first_day, &rows, &registry));
    } else {
        print_table(
            &series,
            first_day,
            &rows,
            lear_start.elapsed().as_secs_f64(),
        );
    }
    Ok(())
}

/// Records the registry's models in the database's `ml_models` table, each as
/// `{model}@{file stem}` under a new version unless identical to the newest recorded.
fn record_models(
    url: &str,
    series: &PriceSeries,
    registry: &ModelRegistry,
) -> Result<Vec<(String, u32)>> {
    let stem = std::path::Path::new(series.name()).file_stem().map_or_else(
        || series.name().to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    let trained_at_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
        });
    let models: Vec<voltex::db::NewMlModel> = registry
        .list()
        .iter()
        .map(|record| {
            let metrics = record.validation.as_ref().map_or_else(
                || serde_json::json!({}),
                |validation| {
                    let finite = |value: f64| value.is_finite().then_some(value);
                    serde_json::json!({
                        "mae_eur_per_mwh": finite(validation.metrics.mae),
                        "smape_pct": finite(validation.metrics.smape_pct),
                        "rmae": finite(validation.metrics.rmae),
                        "n_periods": validation.metrics.n_periods,
                        "validation_from": series.date(validation.first_day).to_string(),
                        "validation_to": series.date(validation.end_day - 1).to_string(),
                    })
                },
            );
            voltex::db::NewMlModel {
                name: format!("{}@{stem}", record.name),
                version: 0,
                kind: if record.name.starts_with("naive") { "naive" } else { "lear" }.to_string(),
                trained_at_ns,
                parameters: serde_json::json!({
                    "prices": series.name(),
                    "trained_through": record.trained_through_day.map(|day| series.date(day).to_string()),
                    "calibration_window_days": record.calibration_window_days,
                    "hyper_parameters": record.hyper_parameters,
                }),
                metrics,
            }
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let db = voltex::db::Db::connect(url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let mut recorded = Vec::with_capacity(models.len());
        for model in &models {
            let row = db
                .record_model_version(model)
                .await
                .with_context(|| format!("recording {}", model.name))?;
            recorded.push((row.name, row.version));
        }
        db.close().await;
        Ok(recorded)
    })
}

fn print_table(series: &PriceSeries, first_day: usize, rows: &[Row], total_s: f64) {
    let last_day = series.n_days() - 1;
    println!(
        "{}: {} days, {} .. {} ({} periods/day), price column {:?}",
        series.name(),
        last_day + 1 - first_day,
        series.date(first_day),
        series.date(last_day),
        series.periods_per_day(),
        series.price_name()
    );
    println!(
        "{:<16} {:>9} {:>9} {:>7} {:>9}  note",
        "model", "MAE", "sMAPE %", "rMAE", "wall s"
    );
    for row in rows {
        let wall = row.wall_s.map_or("-".to_owned(), |s| format!("{s:.1}"));
        println!(
            "{:<16} {:>9.3} {:>9.2} {:>7.3} {:>9}  {}",
            row.model, row.metrics.mae, row.metrics.smape_pct, row.metrics.rmae, wall, row.note
        );
    }
    println!("total wall time {total_s:.1} s (LEAR windows run in parallel, so one shared time)");
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_number(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else {
        "null".to_owned()
    }
}

fn to_json(
    series: &PriceSeries,
    first_day: usize,
    rows: &[Row],
    registry: &ModelRegistry,
) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "{{\"file\":{},\"first_date\":\"{}\",\"n_days\":{},\"results\":[",
        json_string(series.name()),
        series.date(first_day),
        series.n_days() - first_day
    );
    for (idx, row) in rows.iter().enumerate() {
        let m = &row.metrics;
        let wall = row.wall_s.map_or("null".to_owned(), json_number);
        let _ = write!(
            out,
            "{}{{\"model\":{},\"mae\":{},\"smape_pct\":{},\"rmae\":{},\
             \"n_periods\":{},\"wall_s\":{}}}",
            if idx == 0 { "" } else { "," },
            json_string(&row.model),
            json_number(m.mae),
            json_number(m.smape_pct),
            json_number(m.rmae),
            m.n_periods,
            wall
        );
    }
    out.push_str("],\"registry\":[");
    for (idx, record) in registry.list().iter().enumerate() {
        let params: Vec<String> = record
            .hyper_parameters
            .iter()
            .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
            .collect();
        let _ = write!(
            out,
            "{}{{\"name\":{},\"version\":{},\"series\":{},\"trained_through_day\":{},\
             \"calibration_window_days\":{},\"hyper_parameters\":{{{}}}}}",
            if idx == 0 { "" } else { "," },
            json_string(&record.name),
            record.version,
            json_string(&record.series_name),
            record
                .trained_through_day
                .map_or("null".to_owned(), |d| d.to_string()),
            record
                .calibration_window_days
                .map_or("null".to_owned(), |d| d.to_string()),
            params.join(",")
        );
    }
    out.push_str("]}");
    out
}
