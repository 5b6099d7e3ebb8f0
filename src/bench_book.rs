//! `voltex bench book`: order-book throughput and latency, against the BTreeMap
//! reference book in the same run.
//!
//! For each workload it generates seeded commands once, then:
//! 1. replays them through the fast book and the reference book, untimed per op,
//!    several times, and reports the median throughput of each and their ratio;
//! 2. replays them once more through each book with a timer around every command and
//!    prints hdrhistogram percentiles per operation type (the timer's own cost, measured
//!    in the same run, is printed beside them);
//! 3. checks that both books produced identical event streams (a differential test:
//!    a mismatch is an error, never a timing).
//!
//! Then it measures the sequencer with its file journal and group commit.
//! Timings are reported, never asserted: CI prints this table on every run.

// Benchmarks measure wall time: the one place the clock seam is crossed on purpose.
#![allow(clippy::disallowed_methods)]

use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use hdrhistogram::Histogram;
use rustc_hash::FxHasher;
use voltex::workload::{OpKind, Workload, WorkloadKind, generate};
use voltex_market::MarketRules;
use voltex_market::book::reference::ReferenceBook;
use voltex_market::book::{BookCommand, BookEvent, OrderBook};

/// Arguments of `voltex bench book`.
#[derive(clap::Args, Debug)]
pub struct BookBenchArgs {
    /// Small run for CI logs (fewer operations and repetitions).
    #[arg(long)]
    quick: bool,
    /// Seed of the workload generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Measured operations per workload (default 2,000,000; 200,000 with --quick).
    #[arg(long)]
    ops: Option<usize>,
    /// Repetitions of the throughput pass; the median is reported (default 5; 3 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Only this workload.
    #[arg(long, value_enum)]
    workload: Option<WorkloadKind>,
    /// Skip the journal (sequencer) measurement.
    #[arg(long)]
    no_journal: bool,
}

/// A book the benchmark can drive.
trait BenchBook {
    fn apply(&mut self, command: &BookCommand, events: &mut Vec<BookEvent>);
}

impl BenchBook for OrderBook {
    fn apply(&mut self, command: &BookCommand, events: &mut Vec<BookEvent>) {
        OrderBook::apply(self, command, events);
    }
}

impl BenchBook for ReferenceBook {
    fn apply(&mut self, command: &BookCommand, events: &mut Vec<BookEvent>) {
        ReferenceBook::apply(self, command, events);
    }
}

struct PassResult {
    elapsed: Duration,
    events_hash: u64,
    n_events: u64,
}

/// One untimed-per-op pass: warm up, then replay the measured commands.
fn throughput_pass<B: BenchBook>(
    book: &mut B,
    workload: &Workload,
    hash_events: bool,
) -> PassResult {
    let mut events = Vec::with_capacity(4_096);
    for command in &workload.warmup {
        book.apply(command, &mut events);
        events.clear();
    }
    let mut hasher = FxHasher::default();
    let mut n_events = 0u64;
    let started = Instant::now();
    for (_, command) in &workload.commands {
        book.apply(command, &mut events);
        if hash_events {
            n_events += events.len() as u64;
            events.hash(&mut hasher);
        }
        events.clear();
    }
    let elapsed = started.elapsed();
    PassResult {
        elapsed,
        events_hash: hasher.finish(),
        n_events,
    }
}

/// One pass with a timer around every command; histograms per operation kind (ns).
fn latency_pass<B: BenchBook>(book: &mut B, workload: &Workload) -> Result<Vec<Histogram<u64>>> {
    let mut histograms = Vec::with_capacity(OpKind::ALL.len());
    for _ in OpKind::ALL {
        histograms.push(Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3)?);
    }
    let mut events = Vec::with_capacity(4_096);
    for command in &workload.warmup {
        book.apply(command, &mut events);
        events.clear();
    }
    for (kind, command) in &workload.commands {
        let started = Instant::now();
        book.apply(command, &mut events);
        let nanos = started.elapsed().as_nanos() as u64;
        events.clear();
        histograms[kind.index()].saturating_record(nanos.max(1));
    }
    Ok(histograms)
}

/// The cost of the timer pair itself, so per-op latencies can be read honestly.
fn timer_overhead_ns() -> u64 {
    let mut samples: Vec<u64> = (0..10_001)
        .map(|_| {
            let started = Instant::now();
            started.elapsed().as_nanos() as u64
        })
        .collect();
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn mops(n_ops: usize, elapsed: Duration) -> f64 {
    n_ops as f64 / elapsed.as_secs_f64() / 1e6
}

/// One percentile row (count, p50, p90, p99, p99.9, max) of the `voltex bench` tables.
pub(crate) fn print_histogram_row(label: &str, histogram: &Histogram<u64>) {
    if histogram.is_empty() {
        return;
    }
    println!(
        "  {:<22} {:>9} {:>7} {:>7} {:>7} {:>8} {:>9}",
        label,
        histogram.len(),
        histogram.value_at_quantile(0.50),
        histogram.value_at_quantile(0.90),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max()
    );
}

fn bench_workload(kind: WorkloadKind, n_ops: usize, n_runs: usize, seed: u64) -> Result<()> {
    let rules = MarketRules::intraday_default();
    let config = kind.book_config();
    let workload = generate(kind, n_ops, seed);
    let mut counts = [0usize; 4];
    for (op, _) in &workload.commands {
        counts[op.index()] += 1;
    }
    println!();
    println!(
        "workload {}: {} measured ops after {} warm-up orders, seed {seed}",
        kind.label(),
        n_ops,
        workload.warmup.len()
    );
    println!(
        "  mix: limit {:.1}%  ioc {:.1}%  cancel {:.1}%  modify {:.1}%",
        counts[0] as f64 * 100.0 / n_ops as f64,
        counts[1] as f64 * 100.0 / n_ops as f64,
        counts[2] as f64 * 100.0 / n_ops as f64,
        counts[3] as f64 * 100.0 / n_ops as f64
    );

    let (mut fast_rates, mut reference_rates) = (Vec::new(), Vec::new());
    let (mut fast_digest, mut reference_digest) = (None, None);
    for run in 0..n_runs {
        let mut fast = OrderBook::new(rules.clone(), config)?;
        let pass = throughput_pass(&mut fast, &workload, run == 0);
        fast_rates.push(mops(n_ops, pass.elapsed));
        if run == 0 {
            fast_digest = Some((pass.events_hash, pass.n_events));
        }
        let mut reference = ReferenceBook::new(rules.clone(), config);
        let pass = throughput_pass(&mut reference, &workload, run == 0);
        reference_rates.push(mops(n_ops, pass.elapsed));
        if run == 0 {
            reference_digest = Some((pass.events_hash, pass.n_events));
        }
    }
    if fast_digest != reference_digest {
        bail!(
            "differential check failed on {}: fast book events {:?} != reference {:?}",
            kind.label(),
            fast_digest,
            reference_digest
        );
    }
    let (fast_median, reference_median) =
        (median(fast_rates.clone()), median(reference_rates.clone()));
    println!(
        "  throughput (median of {n_runs}): fast {fast_median:.2} M ops/s, reference {reference_median:.2} M ops/s, ratio {:.1}x",
        fast_median / reference_median
    );
    println!(
        "  identical event streams: yes ({} events, digest {:016x})",
        fast_digest.map_or(0, |d| d.1),
        fast_digest.map_or(0, |d| d.0)
    );

    let fast_latency = latency_pass(&mut OrderBook::new(rules.clone(), config)?, &workload)?;
    let reference_latency = latency_pass(&mut ReferenceBook::new(rules, config), &workload)?;
    println!(
        "  latency per op (ns, timer overhead ~{} ns included):",
        timer_overhead_ns()
    );
    println!(
        "  {:<22} {:>9} {:>7} {:>7} {:>7} {:>8} {:>9}",
        "book/op", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    for (name, histograms) in [("fast", &fast_latency), ("reference", &reference_latency)] {
        let mut all = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3)?;
        for histogram in histograms.iter() {
            all.add(histogram)?;
        }
        print_histogram_row(&format!("{name}/all"), &all);
        for op in OpKind::ALL {
            print_histogram_row(&format!("{name}/{}", op.name()), &histograms[op.index()]);
        }
    }
    Ok(())
}

/// Runs `voltex bench book`.
pub fn run(args: &BookBenchArgs) -> Result<()> {
    let n_ops = args
        .ops
        .unwrap_or(if args.quick { 200_000 } else { 2_000_000 });
    let n_runs = args.runs.unwrap_or(if args.quick { 3 } else { 5 }).max(1);
    println!("voltex bench book (release build recommended; timings are reported, never asserted)");
    let kinds = match args.workload {
        Some(kind) => vec![kind],
        None => vec![
            WorkloadKind::ExchangeCore,
            WorkloadKind::DeepBook,
            WorkloadKind::MatchingHeavy,
        ],
    };
    for kind in kinds {
        bench_workload(kind, n_ops, n_runs, args.seed)?;
    }
    if !args.no_journal {
        crate::bench_journal::run(n_ops, n_runs, args.seed)?;
    }
    Ok(())
}
