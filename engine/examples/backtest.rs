//! `voltex backtest` without the root binary: the same command code
//! (`src/backtest_cmd.rs`, included by path), built from the engine alone.
//!
//! ```text
//! cargo run --release -p voltex-engine --example backtest -- --data ../shared/data/NP.csv
//! ```
//!
//! The root binary links every crate of the workspace; this example lets the backtest
//! run while an unrelated crate does not build. Arguments are those of `voltex backtest`.
#![allow(clippy::disallowed_methods)] // the command times its stages

#[path = "../../src/backtest_cmd.rs"]
mod backtest_cmd;

use clap::Parser;

/// `voltex backtest` arguments.
#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    args: backtest_cmd::BacktestArgs,
}

fn main() -> anyhow::Result<()> {
    backtest_cmd::run(&Cli::parse().args)
}
