//! `voltex sim`: run a scenario (`voltex sim scenarios/x.toml [--out DIR]`), a grid of
//! variants of it (`--sweep strategy=perfect,naive_lp seed=1,2`, run in parallel across
//! cores, printed as a comparison table) and the event-queue benchmark
//! (`voltex sim bench-des [--quick]`).
//!
//! The simulation itself is `voltex_sim::run::run`, a pure function of the scenario,
//! the price file and the seed; this module reads files, shows progress with the
//! simulated-time rate and the process's resident memory (the only wall-clock and
//! `/proc` reads), and writes the outputs. A sweep's variants are independent runs, so
//! their results do not depend on the thread count.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use rust_decimal::Decimal;
use toml::Spanned;
use voltex_dispatch::ScheduleVerifier;
use voltex_market::block::EXCLUSIVE_GROUP_FAMILIES_MAX;
use voltex_market::series::{PriceSeries, SeriesLayout};
use voltex_sim::check;
use voltex_sim::des::bench::{HoldConfig, HoldWorkload, fill, run_hold};
use voltex_sim::des::{EventQueue, HeapQueue, RadixQueue};
use voltex_sim::run::SimOutput;
use voltex_sim::run::{Progress, run};
use voltex_sim::scenario::{Bidding, MAX_POSITION_MW_MIN, Scenario, StrategyKind};

/// Arguments of `voltex sim`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SimArgs {
    #[command(subcommand)]
    command: Option<SimCommand>,
    /// Scenario file (TOML, see scenarios/README.md).
    scenario: Option<PathBuf>,
    /// Output folder (default: out/<scenario name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run a grid of variants instead: KEY=V1,V2 ... with KEY one of strategy
    /// (perfect_foresight|lear_lp|naive_lp|rule_based, or perfect|lear|naive|rule),
    /// bidding (price_taker|auction), seed, days, loss, max_position_mw (MW or none),
    /// intraday_spread (EUR/MWh or none).
    /// Every combination runs, in parallel across cores.
    #[arg(long, num_args = 1..)]
    sweep: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum SimCommand {
    /// Hold-model benchmark of the DES event queue against a BinaryHeap reference.
    BenchDes(BenchDesArgs),
    /// Replay a schedule set against a fleet state before it goes live: every
    /// device-interval that would break a limit, expected P&L and imbalance.
    CheckSchedule(CheckScheduleArgs),
}

/// Arguments of `voltex sim check-schedule`.
#[derive(Args, Debug)]
struct CheckScheduleArgs {
    /// Schedule set: JSON array of signed schedules (as dispatch sends) or schedules.
    schedules: PathBuf,
    /// Fleet state: JSON {"devices": [{device, soc_wh, battery parameters...}]}.
    fleet: PathBuf,
    /// Price file (epftoolbox layout) covering the schedules' windows.
    #[arg(long)]
    prices: PathBuf,
    /// Replay interval in minutes (divides 60).
    #[arg(long, default_value_t = 15)]
    interval_minutes: u32,
    /// Platform public key (64 hex digits): also verify the signatures.
    #[arg(long)]
    public_key: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `voltex sim bench-des`.
#[derive(Args, Debug)]
struct BenchDesArgs {
    /// Smaller sizes (seconds instead of a minute).
    #[arg(long)]
    quick: bool,
    /// Seed of the increments.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Runs `voltex sim ...`.
pub fn run_cmd(args: &SimArgs) -> Result<()> {
    // A run's resident memory is reported and is the scenario's budget: give the daily
    // churn back to the OS as it is freed (see `voltex::allocator`).
    voltex::allocator::return_freed_pages_at_once()?;
    match (&args.command, &args.scenario) {
        (Some(SimCommand::BenchDes(bench)), _) => bench_des(bench),
        (Some(SimCommand::CheckSchedule(check)), _) => check_schedule(check),
        (None, Some(path)) if !args.sweep.is_empty() => sweep(path, &args.sweep),
        (None, Some(path)) => run_scenario(path, args.out.as_deref()),
        (None, None) => bail!("give a scenario file (voltex sim scenarios/x.toml) or bench-des"),
    }
}

#[allow(clippy::disallowed_methods)] // wall time for the progress line only
fn now() -> std::time::Instant {
    std::time::Instant::now()
}

use voltex::process_stats::rss_bytes;

fn load(path: &Path) -> Result<(Scenario, PriceSeries)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let scenario = Scenario::parse(&path.display().to_string(), &text)?;
    let data = path
        .parent()
        .unwrap_or(Path::new("."))
        .join(&scenario.market.data);
    let csv = std::fs::read_to_string(&data)
        .with_context(|| format!("reading market data {}", data.display()))?;
    let series =
        PriceSeries::parse_csv(&data.display().to_string(), &csv, &SeriesLayout::default())?;
    Ok((scenario, series))
}

fn run_scenario(path: &Path, out: Option<&Path>) -> Result<()> {
    let (scenario, series) = load(path)?;
    let out = out.map_or_else(
        || PathBuf::from("out").join(&scenario.name),
        Path::to_path_buf,
    );
    eprintln!(
        "{}: {} batteries, {} days, seed {}",
        scenario.name,
        scenario.n_devices(),
        scenario.market.days.get_ref(),
        scenario.seed
    );
    let rss_before = rss_bytes();
    let mut rss_last = None;
    let started = now();
    let mut show = |p: Progress| {
        rss_last = rss_bytes();
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let width = 30;
        let filled = (p.days_done as usize * width) / p.days_total.max(1) as usize;
        eprint!(
            "\r[{}{}] day {}/{}  {:.1} sim-days/s  {:.2} M events/s ",
            "#".repeat(filled),
            " ".repeat(width - filled),
            p.days_done,
            p.days_total,
            f64::from(p.days_done) / secs,
            p.n_events as f64 / secs / 1e6
        );
        let _ = std::io::stderr().flush();
    };
    let output = run(&scenario, &series, &mut show)?;
    let wall = started.elapsed().as_secs_f64();
    eprintln!();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("summary.json"), output.summary_json())?;
    std::fs::write(out.join("intervals.csv"), &output.intervals_csv)?;
    std::fs::write(out.join("report.html"), &output.report_html)?;
    let s = &output.summary;
    let device_intervals = s.counters.device_intervals as f64;
    println!(
        "profit {} EUR (market {}, intraday {}, imbalance {}, wear {})",
        s.pnl.profit_eur, s.pnl.market_eur, s.pnl.intraday_eur, s.pnl.imbalance_eur, s.pnl.wear_eur
    );
    println!(
        "{} events, {:.0} device-intervals in {wall:.2} s wall ({:.2} M events/s, \
         {:.2} M device-intervals/s)",
        s.counters.n_events,
        device_intervals,
        s.counters.n_events as f64 / wall / 1e6,
        device_intervals / wall / 1e6,
    );
    if let (Some(before), Some(last)) = (rss_before, rss_last) {
        let growth = last.saturating_sub(before);
        println!(
            "resident memory grew {:.1} MB during the run (after the last day) = {:.0} B per \
             battery (everything the run holds: agents, stores, platform, per-interval rows)",
            growth as f64 / 1e6,
            growth as f64 / s.n_devices.max(1) as f64
        );
    }
    println!("result hash {}", s.result_hash);
    println!(
        "wrote {}/summary.json, intervals.csv, report.html",
        out.display()
    );
    Ok(())
}

fn check_schedule(args: &CheckScheduleArgs) -> Result<()> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    };
    let set = check::parse_schedule_set(
        &args.schedules.display().to_string(),
        &read(&args.schedules)?,
    )?;
    let fleet = check::parse_fleet_state(&args.fleet.display().to_string(), &read(&args.fleet)?)?;
    let series = PriceSeries::parse_csv(
        &args.prices.display().to_string(),
        &read(&args.prices)?,
        &SeriesLayout::default(),
    )?;
    let verifier = match &args.public_key {
        Some(hex) => {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| {
                    hex.get(i..i + 2)
                        .and_then(|b| u8::from_str_radix(b, 16).ok())
                })
                .collect::<Option<_>>()
                .context("--public-key: not hex")?;
            let bytes: [u8; 32] = bytes
                .try_into()
                .map_err(|_| anyhow::anyhow!("--public-key: expected 32 bytes (64 hex digits)"))?;
            Some(ScheduleVerifier::from_public_bytes(&bytes)?)
        }
        None => None,
    };
    let report = check::check_schedules(
        &set,
        &fleet,
        &series,
        i64::from(args.interval_minutes) * 60,
        verifier.as_ref(),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for v in &report.violations {
        println!(
            "{} {} v{} {:?}: target {} W, feasible {} W",
            v.at.to_datetime().format("%Y-%m-%dT%H:%M:%SZ"),
            v.device,
            v.version,
            v.kind,
            v.target_w,
            v.feasible_w
        );
    }
    println!(
        "{} schedules, {} devices, {} device-intervals: {} violations{}",
        set.len(),
        report.n_devices,
        report.n_device_intervals,
        report.violations.len(),
        if verifier.is_some() {
            ""
        } else {
            " (signatures not checked: no --public-key)"
        }
    );
    println!(
        "energy scheduled {} MWh, delivered {} MWh, |imbalance| {} MWh",
        report.scheduled_mwh, report.delivered_mwh, report.imbalance_abs_mwh
    );
    println!(
        "expected profit {} EUR (market {}, imbalance {}, wear {})",
        report.profit_eur, report.market_eur, report.imbalance_eur, report.wear_eur
    );
    Ok(())
}

/// One axis of a sweep: a key and its values.
struct Axis {
    key: String,
    values: Vec<String>,
}

fn parse_axes(specs: &[String]) -> Result<Vec<Axis>> {
    specs
        .iter()
        .map(|spec| {
            let Some((key, values)) = spec.split_once('=') else {
                bail!("sweep axis {spec:?}: expected KEY=V1,V2,...");
            };
            let values: Vec<String> = values.split(',').map(str::to_string).collect();
            if values.iter().any(String::is_empty) {
                bail!("sweep axis {spec:?}: empty value");
            }
            Ok(Axis {
                key: key.to_string(),
                values,
            })
        })
        .collect()
}

fn strategy_named(value: &str) -> Result<StrategyKind> {
    Ok(match value {
        "perfect" | "perfect_foresight" => StrategyKind::PerfectForesight,
        "lear" | "lear_lp" => StrategyKind::LearLp,
        "naive" | "naive_lp" => StrategyKind::NaiveLp,
        "rule" | "rule_based" => StrategyKind::RuleBased,
        _ => bail!("unknown strategy {value:?}"),
    })
}

/// `scenario` with `key = value`.
fn apply_axis(scenario: &mut Scenario, key: &str, value: &str) -> Result<()> {
    let bad = |what: &str| anyhow::anyhow!("sweep {key}={value}: {what}");
    match key {
        "strategy" => scenario.strategy.kind = strategy_named(value)?,
        "bidding" => {
            scenario.strategy.bidding = match value {
                "price_taker" => Bidding::PriceTaker,
                "auction" => Bidding::Auction,
                "family" => Bidding::Family,
                _ => return Err(bad("expected price_taker, auction or family")),
            }
        }
        "seed" => scenario.seed = value.parse().map_err(|_| bad("not an integer"))?,
        "days" => {
            let days: u32 = value.parse().map_err(|_| bad("not an integer"))?;
            if days == 0 {
                return Err(bad("must be >= 1"));
            }
            *scenario.market.days.get_mut() = days;
        }
        "loss" => {
            let loss: f64 = value.parse().map_err(|_| bad("not a number"))?;
            if !(0.0..=1.0).contains(&loss) {
                return Err(bad("must be in [0, 1]"));
            }
            *scenario.network.loss.get_mut() = loss;
        }
        "max_position_mw" => {
            scenario.strategy.max_position_mw = match value {
                "none" => None,
                _ => {
                    let mw: Decimal = value.parse().map_err(|_| bad("not a decimal or none"))?;
                    if mw < MAX_POSITION_MW_MIN {
                        return Err(bad("must be at least 0.000001 (1 W), or none"));
                    }
                    Some(Spanned::new(0..0, mw))
                }
            }
        }
        "alternatives" => {
            let n: u32 = value.parse().map_err(|_| bad("not an integer"))?;
            if !(1..=EXCLUSIVE_GROUP_FAMILIES_MAX).contains(&(n as usize)) {
                return Err(bad(&format!("must be 1 to {EXCLUSIVE_GROUP_FAMILIES_MAX}")));
            }
            scenario.strategy.alternatives = Some(Spanned::new(0..0, n));
        }
        "intraday_spread" => {
            scenario.market.intraday_spread_eur_per_mwh = match value {
                "none" => None,
                _ => Some(Spanned::new(
                    0..0,
                    value.parse().map_err(|_| bad("not a decimal or none"))?,
                )),
            };
            if let Err((_, _, message)) = scenario.market.intraday() {
                return Err(bad(&message));
            }
        }
        _ => bail!(
            "unknown sweep key {key:?} (strategy, bidding, alternatives, seed, days, loss, \
             max_position_mw, intraday_spread)"
        ),
    }
    Ok(())
}

/// One sweep variant's outcome and its wall time in seconds.
type VariantResult = (Result<SimOutput, String>, f64);

fn sweep(path: &Path, specs: &[String]) -> Result<()> {
    let (base, series) = load(path)?;
    let axes = parse_axes(specs)?;
    // Every combination, first axis slowest.
    let mut variants: Vec<(String, Scenario)> = vec![(String::new(), base)];
    for axis in &axes {
        let mut next = Vec::new();
        for (label, scenario) in &variants {
            for value in &axis.values {
                let mut scenario = scenario.clone();
                apply_axis(&mut scenario, &axis.key, value)?;
                let sep = if label.is_empty() { "" } else { " " };
                next.push((format!("{label}{sep}{}={value}", axis.key), scenario));
            }
        }
        variants = next;
    }
    for (label, scenario) in &variants {
        if scenario.strategy.alternatives() > 1 && scenario.strategy.bidding != Bidding::Family {
            bail!("sweep variant {label:?}: alternatives needs bidding=family");
        }
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(variants.len());
    eprintln!(
        "sweep: {} variants of {} on {threads} threads",
        variants.len(),
        path.display()
    );
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<VariantResult>>> = Mutex::new(vec![None; variants.len()]);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((_, scenario)) = variants.get(i) else {
                        break;
                    };
                    let started = now();
                    let result = run(scenario, &series, &mut |_| {}).map_err(|e| e.to_string());
                    let wall = started.elapsed().as_secs_f64();
                    if let Ok(mut results) = results.lock() {
                        results[i] = Some((result, wall));
                    }
                }
            });
        }
    });
    let results = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a sweep thread panicked"))?;
    let width = variants
        .iter()
        .map(|(l, _)| l.len())
        .max()
        .unwrap_or(7)
        .max(7);
    println!(
        "{:<width$} {:>14} {:>14} {:>12} {:>12} {:>11} {:>9} {:>9} {:>8} {:>17}",
        "variant",
        "profit EUR",
        "market EUR",
        "intrad. EUR",
        "imbal. EUR",
        "wear EUR",
        "accepted",
        "fallback",
        "wall s",
        "result hash"
    );
    for ((label, _), result) in variants.iter().zip(results) {
        match result {
            Some((Ok(out), wall)) => {
                let s = &out.summary;
                println!(
                    "{label:<width$} {:>14.2} {:>14.2} {:>12.2} {:>12.2} {:>11.2} {:>9} {:>9} {wall:>8.2} {:>17}",
                    s.pnl.profit_eur,
                    s.pnl.market_eur,
                    s.pnl.intraday_eur,
                    s.pnl.imbalance_eur,
                    s.pnl.wear_eur,
                    s.counters.schedules_accepted,
                    s.counters.device_intervals_fallback,
                    &s.result_hash[..16]
                );
            }
            Some((Err(error), _)) => println!("{label:<width$} error: {error}"),
            None => println!("{label:<width$} not run"),
        }
    }
    Ok(())
}

fn time_hold<Q: EventQueue<u32>>(mut queue: Q, workload: &HoldWorkload) -> (f64, u64) {
    fill(&mut queue, workload);
    let started = now();
    let checksum = run_hold(&mut queue, workload);
    let secs = started.elapsed().as_secs_f64();
    (workload.config().n_ops as f64 / secs, checksum)
}

fn bench_des(args: &BenchDesArgs) -> Result<()> {
    let (sizes, n_ops): (&[usize], u64) = if args.quick {
        (&[1_000, 100_000], 2_000_000)
    } else {
        (&[1_000, 100_000, 1_000_000], 20_000_000)
    };
    println!("hold model: pop the earliest event, push it back at t + Exp(mean 1 ms)");
    println!(
        "{:>10} {:>12} {:>16} {:>16} {:>7}",
        "pending", "ops", "radix ev/s", "heap ev/s", "ratio"
    );
    for &n_pending in sizes {
        let workload = HoldWorkload::new(HoldConfig {
            n_pending,
            n_ops,
            mean_increment_ns: 1_000_000,
            seed: args.seed,
        });
        let (radix, sum_r) = time_hold(RadixQueue::with_capacity(n_pending), &workload);
        let (heap, sum_h) = time_hold(HeapQueue::with_capacity(n_pending), &workload);
        if sum_r != sum_h {
            bail!("queues popped different sequences at n_pending = {n_pending}");
        }
        println!(
            "{n_pending:>10} {n_ops:>12} {:>14.2} M {:>14.2} M {:>6.2}x",
            radix / 1e6,
            heap / 1e6,
            radix / heap
        );
    }
    println!("(both queues popped identical (time, id) sequences: checksums equal)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCENARIO: &str = "name = \"t\"\nseed = 1\ninterval_minutes = 60\n\n[market]\n\
        data = \"x.csv\"\nstart_date = \"2020-01-01\"\ndays = 1\n\n[strategy]\n\
        kind = \"perfect_foresight\"\n\n[[fleet]]\nname = \"a\"\ncount = 1\n\
        capacity_wh = 1000\nmax_charge_w = 1000\nmax_discharge_w = 1000\nsoc_min_wh = 0\n\
        soc_max_wh = 1000\ncharge_efficiency = 1.0\ndischarge_efficiency = 1.0\n\
        standing_loss_per_hour = 0.0\nwear_cost_eur_per_mwh = \"0\"\ninitial_soc_wh = 0\n";

    #[test]
    fn the_risk_limit_sweeps_over_values_and_none_and_refuses_bad_ones() {
        let mut scenario = Scenario::parse("t.toml", SCENARIO).expect("valid scenario");
        apply_axis(&mut scenario, "max_position_mw", "0.5").expect("0.5 MW");
        assert_eq!(scenario.strategy.max_position_w(), Some(500_000));
        apply_axis(&mut scenario, "max_position_mw", "none").expect("no limit");
        assert_eq!(scenario.strategy.max_position_w(), None);
        for bad in ["0", "-2", "0.0000001", "half"] {
            let error = apply_axis(&mut scenario, "max_position_mw", bad).unwrap_err();
            assert!(
                error.to_string().contains("sweep max_position_mw="),
                "{bad}: {error}"
            );
            assert_eq!(
                scenario.strategy.max_position_w(),
                None,
                "{bad} left it alone"
            );
        }
        let error = apply_axis(&mut scenario, "max_position", "1").unwrap_err();
        assert!(error.to_string().contains("max_position_mw"), "{error}");
    }

    #[test]
    fn alternatives_sweep_over_counts_and_refuse_bad_ones() {
        let mut scenario = Scenario::parse("t.toml", SCENARIO).expect("valid scenario");
        apply_axis(&mut scenario, "bidding", "family").expect("family bids");
        apply_axis(&mut scenario, "alternatives", "4").expect("4 schedules");
        assert_eq!(scenario.strategy.alternatives(), 4);
        for bad in ["0", "25", "-1", "four"] {
            let error = apply_axis(&mut scenario, "alternatives", bad).unwrap_err();
            assert!(
                error.to_string().contains("sweep alternatives="),
                "{bad}: {error}"
            );
            assert_eq!(scenario.strategy.alternatives(), 4, "{bad} left it alone");
        }
    }

    #[test]
    fn the_intraday_spread_sweeps_over_values_and_none_and_refuses_bad_ones() {
        let mut scenario = Scenario::parse("t.toml", SCENARIO).expect("valid scenario");
        let spread = |s: &Scenario| {
            s.market
                .intraday()
                .expect("valid terms")
                .map(|c| c.spread_eur_per_mwh)
        };
        apply_axis(&mut scenario, "intraday_spread", "1").expect("1 EUR/MWh");
        assert_eq!(spread(&scenario), Some(Decimal::ONE));
        apply_axis(&mut scenario, "intraday_spread", "none").expect("no intraday market");
        assert_eq!(spread(&scenario), None);
        for bad in ["-1", "0.01", "wide"] {
            let error = apply_axis(&mut scenario, "intraday_spread", bad).unwrap_err();
            assert!(
                error.to_string().contains("sweep intraday_spread="),
                "{bad}: {error}"
            );
        }
    }
}
