//! The `voltex` binary: command-line entry point.
//!
//! Subcommands are thin: they parse arguments, read files, measure wall time and
//! print, and leave every decision to the library crates (`voltex-market`,
//! `voltex-engine`). This is the only crate allowed to read the wall clock.

mod bench_book;
// [helper-modules] (one `mod` line per command module; keep this marker)

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Voltex: energy-market trading engine and battery-fleet platform.
#[derive(Parser, Debug)]
#[command(name = "voltex", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Latency and throughput benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    // [helper-commands] (one variant per top-level command; keep this marker)
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Order book: seeded workloads through the fast book and the BTreeMap reference,
    /// plus the sequencer with its journal.
    Book(bench_book::BookBenchArgs),
    // [helper-bench-commands] (keep this marker)
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(BenchCommand::Book(args)) => bench_book::run(&args),
        // [helper-dispatch] (keep this marker)
    }
}
