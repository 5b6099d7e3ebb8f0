//! The `voltex` binary: command-line entry point.
//!
//! Subcommands are thin: they parse arguments, read files, measure wall time and
//! print, and leave every decision to the library crates (`voltex-market`,
//! `voltex-engine`). This is the only crate allowed to read the wall clock.

mod backtest_cmd;
mod bench_api;
mod bench_api_schedules;
mod bench_book;
mod bench_dispatch;
mod bench_journal;
mod bench_rollout;
mod certs_cmd;
mod forecast_cmd;
mod serve_cmd;
mod sim_cmd;
// [helper-modules] (one `mod` line per command module; keep this marker)

use anyhow::Result;
use clap::{Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer, Registry};

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
    /// Day-by-day battery backtest: forecast, LP plan, bid curves, auction, settlement.
    Backtest(backtest_cmd::BacktestArgs),
    /// Day-ahead price forecasting: evaluate forecasters on a price file.
    #[command(subcommand)]
    Forecast(forecast_cmd::ForecastCommand),
    /// Platform CA and device certificates for QUIC mutual TLS.
    #[command(subcommand)]
    Certs(certs_cmd::CertsCommand),
    /// Discrete-event simulation of a fleet scenario; `sim bench-des` benchmarks the queue.
    Sim(sim_cmd::SimArgs),
    /// The platform server: API, sequencer, database, dispatch, metrics.
    Serve(serve_cmd::ServeArgs),
    /// Everything on one machine with embedded defaults, a market replay and simulated agents.
    Up(serve_cmd::UpArgs),
    /// JWT bearer tokens for the API.
    #[command(subcommand)]
    Token(serve_cmd::TokenCommand),
    // [helper-commands] (one variant per top-level command; keep this marker)
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Order book: seeded workloads through the fast book and the BTreeMap reference,
    /// plus the sequencer with its journal.
    Book(bench_book::BookBenchArgs),
    /// Dispatch transports: N simulated agents over MQTT or QUIC on loopback.
    Dispatch(bench_dispatch::DispatchBenchArgs),
    /// Schedule roll-out through the orchestrator to N real simulated agents (issue → all acked).
    Rollout(bench_rollout::RolloutBenchArgs),
    /// Internal: the simulated agents of `bench rollout` in their own process (reads its
    /// configuration as one JSON line on stdin; stdin closing stops it).
    #[command(hide = true)]
    RolloutAgents,
    /// Internal: the embedded MQTT broker (rumqttd) in its own process on
    /// 127.0.0.1:PORT, for `bench dispatch` (stdin closing stops it).
    #[command(hide = true)]
    Broker(bench_dispatch::BrokerArgs),
    /// Order commands through the HTTP API (N keep-alive clients) vs straight into the sequencer.
    Api(bench_api::ApiBenchArgs),
    // [helper-bench-commands] (keep this marker)
}

/// jemalloc (see `voltex::allocator` for why).
#[global_allocator]
static GLOBAL: voltex::allocator::Global = voltex::allocator::ALLOCATOR;
voltex::install_malloc_conf!();

fn main() -> Result<()> {
    let cli = Cli::parse();
    let log_json = match &cli.command {
        Command::Serve(args) => args.log_json,
        Command::Up(args) => args.serve.log_json,
        _ => false,
    } || std::env::var("VOLTEX_LOG_JSON").is_ok_and(|value| value == "1");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(match &cli.command {
            Command::Serve(_) | Command::Up(_) => "info,sqlx=warn,rumqttd=warn,voltex_agent=warn",
            _ => "warn",
        })
    });
    #[cfg_attr(not(feature = "otlp"), allow(unused_mut))]
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![if log_json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    }];
    let traces_endpoint = voltex::telemetry::traces_endpoint_from_env();
    #[cfg(feature = "otlp")]
    let otlp = match &traces_endpoint {
        Some(endpoint) => {
            let (layer, export) = voltex::telemetry::OtlpExport::start(endpoint, "voltex")?;
            layers.push(layer);
            Some(export)
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .init();
    #[cfg(not(feature = "otlp"))]
    if let Some(endpoint) = &traces_endpoint {
        tracing::warn!(
            %endpoint,
            "an OTLP endpoint is set but this binary was built without the `otlp` feature: no traces are exported"
        );
    }
    let result = run(cli.command);
    #[cfg(feature = "otlp")]
    if let Some(export) = otlp
        && let Err(error) = export.shutdown()
    {
        eprintln!("warning: {error}");
    }
    result
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Bench(BenchCommand::Book(args)) => bench_book::run(&args),
        Command::Backtest(args) => backtest_cmd::run(&args),
        Command::Forecast(command) => forecast_cmd::run(&command),
        Command::Certs(command) => certs_cmd::run(&command),
        Command::Bench(BenchCommand::Dispatch(args)) => bench_dispatch::run(&args),
        Command::Sim(args) => sim_cmd::run_cmd(&args),
        Command::Serve(args) => serve_cmd::run_serve(&args),
        Command::Up(args) => serve_cmd::run_up(&args),
        Command::Token(command) => serve_cmd::run_token(&command),
        Command::Bench(BenchCommand::Rollout(args)) => bench_rollout::run(&args),
        Command::Bench(BenchCommand::RolloutAgents) => bench_rollout::run_agents_process(),
        Command::Bench(BenchCommand::Broker(args)) => bench_dispatch::run_broker_process(&args),
        Command::Bench(BenchCommand::Api(args)) => bench_api::run(&args),
        // [helper-dispatch] (keep this marker)
    }
}
