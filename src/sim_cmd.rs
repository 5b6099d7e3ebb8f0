//! `voltex sim`: run a scenario (`voltex sim scenarios/x.toml [--out DIR]`) and the
//! event-queue benchmark (`voltex sim bench-des [--quick]`).
//!
//! The simulation itself is `voltex_sim::run::run`, a pure function of the scenario,
//! the price file and the seed; this module reads files, shows progress with the
//! simulated-time rate (the only wall-clock reads), and writes the outputs.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use voltex_market::series::{PriceSeries, SeriesLayout};
use voltex_sim::des::bench::{HoldConfig, HoldWorkload, fill, run_hold};
use voltex_sim::des::{EventQueue, HeapQueue, RadixQueue};
use voltex_sim::run::{Progress, run};
use voltex_sim::scenario::Scenario;

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
}

#[derive(Subcommand, Debug)]
enum SimCommand {
    /// Hold-model benchmark of the DES event queue against a BinaryHeap reference.
    BenchDes(BenchDesArgs),
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
    match (&args.command, &args.scenario) {
        (Some(SimCommand::BenchDes(bench)), _) => bench_des(bench),
        (None, Some(path)) => run_scenario(path, args.out.as_deref()),
        (None, None) => bail!("give a scenario file (voltex sim scenarios/x.toml) or bench-des"),
    }
}

#[allow(clippy::disallowed_methods)] // wall time for the progress line only
fn now() -> std::time::Instant {
    std::time::Instant::now()
}

fn run_scenario(path: &Path, out: Option<&Path>) -> Result<()> {
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
    let started = now();
    let mut show = |p: Progress| {
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
        "profit {} EUR (market {}, imbalance {}, wear {})",
        s.pnl.profit_eur, s.pnl.market_eur, s.pnl.imbalance_eur, s.pnl.wear_eur
    );
    println!(
        "{} events, {:.0} device-intervals in {wall:.2} s wall ({:.1} M device-intervals/s), \
         {} B state per battery",
        s.counters.n_events,
        device_intervals,
        device_intervals / wall / 1e6,
        s.device_state_bytes
    );
    println!("result hash {}", s.result_hash);
    println!(
        "wrote {}/summary.json, intervals.csv, report.html",
        out.display()
    );
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
