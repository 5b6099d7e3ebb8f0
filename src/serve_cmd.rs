//! `voltex serve` (the platform server), `voltex up` (everything on one machine) and
//! `voltex token issue` (operator tool for JWT bearer tokens).
#![allow(clippy::disallowed_methods)] // token expiry is computed from the wall clock

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use voltex::server::RunningServer;
use voltex::server::auth::{Claims, JwtKeys, Role};
use voltex::server::clock::SystemClock;
use voltex::server::config::ServerConfig;

/// Flags shared by `serve` and `up`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Configuration file (TOML); environment variables `VOLTEX_*` override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// HTTP listen address, e.g. 127.0.0.1:8080.
    #[arg(long)]
    pub http_addr: Option<std::net::SocketAddr>,
    /// Database URL (`sqlite://...` or `postgres://...`).
    #[arg(long)]
    pub database_url: Option<String>,
    /// External MQTT broker (`mqtt://host:port`); default: embedded broker.
    #[arg(long)]
    pub mqtt_url: Option<String>,
    /// The platform's MQTT client id (default `voltex-platform`): stable per
    /// deployment, distinct between deployments sharing a broker.
    #[arg(long)]
    pub mqtt_client_id: Option<String>,
    /// Data directory (journal, SQLite file, platform CA).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Log as JSON lines (with correlation ids) instead of text.
    #[arg(long)]
    pub log_json: bool,
}

impl ServeArgs {
    /// The configuration: file, then environment, then flags.
    pub fn config(&self) -> Result<ServerConfig> {
        let mut config = match &self.config {
            Some(path) => ServerConfig::from_file(path)?,
            None => ServerConfig::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        if let Some(addr) = self.http_addr {
            config.http_addr = addr;
        }
        if let Some(url) = &self.database_url {
            config.database_url = Some(url.clone());
        }
        if let Some(url) = &self.mqtt_url {
            config.mqtt_url = Some(url.clone());
        }
        if let Some(id) = &self.mqtt_client_id {
            config.mqtt_client_id = id.clone();
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        config.validate()?;
        Ok(config)
    }
}

/// Runs the server until Ctrl-C or SIGTERM.
pub fn run_serve(args: &ServeArgs) -> Result<()> {
    let config = args.config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let server = RunningServer::start(config, Arc::new(SystemClock)).await?;
        println!("voltex serve: API http://{}/api/v1  (OpenAPI: /api/v1/openapi.json, metrics: /metrics)", server.http_addr);
        voltex::server::stop_signal()
            .await
            .context("waiting for Ctrl-C or SIGTERM")?;
        println!("shutting down");
        server.stop().await?;
        Ok(())
    })
}

/// Token commands.
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Issues a JWT bearer token signed with the server's secret.
    Issue(TokenIssueArgs),
}

/// Arguments of `voltex token issue`.
#[derive(Args, Debug)]
pub struct TokenIssueArgs {
    /// Subject: user name or device id.
    #[arg(long)]
    pub subject: String,
    /// Role.
    #[arg(long, value_enum)]
    pub role: Role,
    /// Trading account the subject may act for (repeatable).
    #[arg(long = "account")]
    pub accounts: Vec<u32>,
    /// Validity in hours.
    #[arg(long, default_value_t = 24)]
    pub valid_hours: i64,
    /// HS256 secret; default: `VOLTEX_JWT_SECRET`.
    #[arg(long, env = "VOLTEX_JWT_SECRET", hide_env_values = true)]
    pub secret: String,
}

/// Runs a token command.
pub fn run_token(command: &TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Issue(args) => {
            anyhow::ensure!(
                args.secret.len() >= 32,
                "the secret must be at least 32 bytes"
            );
            anyhow::ensure!(args.valid_hours > 0, "--valid-hours must be positive");
            let now_s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .context("system clock before 1970")?
                .as_secs();
            let now_s = i64::try_from(now_s).context("system clock out of range")?;
            let claims = Claims {
                sub: args.subject.clone(),
                role: args.role,
                accounts: args.accounts.clone(),
                iat: now_s,
                exp: now_s + args.valid_hours * 3600,
            };
            println!(
                "{}",
                JwtKeys::from_secret(args.secret.as_bytes()).issue(&claims)?
            );
            Ok(())
        }
    }
}

/// Arguments of `voltex up`.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// Server flags.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Simulated agents (real agent runtime, in this process).
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Share of agents on QUIC, per thousand (the rest use MQTT).
    #[arg(long, default_value_t = 500)]
    pub quic_per_mille: u32,
    /// Price file replayed by the day-ahead cycle.
    #[arg(long = "data", default_value = "../shared/data/DE.csv")]
    pub prices_csv: PathBuf,
    /// Real seconds per replayed hour (10: a replayed day every 4 minutes).
    #[arg(long, default_value_t = 10)]
    pub hour_seconds: u32,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub run_for_s: Option<u64>,
    /// Imbalance penalty on top of the clearing price, EUR/MWh: what the day-ahead
    /// settlement charges per MWh the fleet did not deliver as committed.
    #[arg(long, default_value = "20")]
    pub imbalance_penalty_eur_per_mwh: rust_decimal::Decimal,
    /// The fleet's day-ahead risk limit: the largest position it bids per hour, either
    /// way, MW (whole 0.1 MW lots). The fleet plans within it, and each hour's bid is
    /// trimmed to it, least eager steps first.
    /// Default: no limit beyond the fleet's power.
    #[arg(long)]
    pub max_position_mw: Option<rust_decimal::Decimal>,
    /// Close what the fleet cannot deliver of each day's award on the intraday book
    /// before the schedules go out, against a replayed maker quoting the historical
    /// price ± half this spread, EUR/MWh (half a multiple of the intraday tick). It pays
    /// half the spread per MWh closed instead of the imbalance penalty. Default: no
    /// close-out.
    #[arg(long)]
    pub intraday_spread_eur_per_mwh: Option<rust_decimal::Decimal>,
    /// The intraday maker's depth per side and hour, MW (whole lots; default the largest
    /// order).
    #[arg(long, requires = "intraday_spread_eur_per_mwh")]
    pub intraday_depth_mw: Option<rust_decimal::Decimal>,
    /// Bid each day as one linked block family per group of devices instead of hourly
    /// curves: the day's purchases and sales accepted whole or not at all, priced at the
    /// value of stored energy (`η_d · mean forecast price − wear` per MWh).
    #[arg(long)]
    pub family_bids: bool,
    /// With `--family-bids`: offer N alternative day schedules as one exclusive group
    /// (the plan on the forecast and on the forecast plus each of the N − 1 latest
    /// days' forecast errors), of which the auction accepts the one with the most
    /// surplus. 1 offers the plan alone.
    #[arg(long, default_value_t = 1, requires = "family_bids", value_parser = crate::backtest_cmd::parse_alternatives)]
    pub alternatives: usize,
    /// Print this process's CPU use and resident memory every this many seconds, and
    /// at the end the verdict on the idle target (≤ 0.5 core, ≤ 500 MiB with 1,000
    /// agents). Linux only.
    #[arg(long)]
    pub resources_every_s: Option<u64>,
}

/// Idle target of `voltex up` with 1,000 agents: cores ...
const IDLE_CORES_MAX: f64 = 0.5;
/// ... and resident memory (MiB).
const IDLE_RSS_MIB_MAX: f64 = 500.0;

/// Samples this process's CPU and memory on its own thread, printing a line per
/// interval, until stopped.
struct ResourceSampler {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<Vec<(f64, u64)>>,
    every: std::time::Duration,
}

impl ResourceSampler {
    #[allow(clippy::disallowed_methods)] // wall time between samples is the point
    fn spawn(every: std::time::Duration) -> Result<ResourceSampler> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("voltex-resources".into())
            .spawn(move || {
                let mut intervals = Vec::new();
                let Some(mut last) = voltex::process_stats::ProcessSample::read() else {
                    println!("resources: /proc/self is not readable here; no report");
                    return intervals;
                };
                let mut last_at = std::time::Instant::now();
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(every)
                {
                    let Some(sample) = voltex::process_stats::ProcessSample::read() else {
                        continue;
                    };
                    let at = std::time::Instant::now();
                    let cores = sample.cores_since(&last, (at - last_at).as_secs_f64());
                    println!(
                        "resources: {cores:.3} cores over the last {:.0} s, RSS {:.0} MiB (peak {:.0} MiB)",
                        (at - last_at).as_secs_f64(),
                        mib(sample.rss_bytes),
                        mib(sample.peak_rss_bytes)
                    );
                    intervals.push((cores, sample.peak_rss_bytes));
                    (last, last_at) = (sample, at);
                }
                intervals
            })
            .context("starting the resource sampler")?;
        Ok(ResourceSampler {
            stop,
            thread,
            every,
        })
    }

    /// Stops sampling and prints the verdict: the median interval's cores (roll-outs
    /// are bursts a few intervals long; the median is the idle level) and the peak RSS.
    fn finish(self, n_agents: usize) {
        let _ = self.stop.send(());
        let Ok(mut intervals) = self.thread.join() else {
            return;
        };
        if intervals.is_empty() {
            println!("resources: no full interval sampled");
            return;
        }
        let peak_rss = intervals.iter().map(|(_, peak)| *peak).max().unwrap_or(0);
        intervals.sort_by(|a, b| a.0.total_cmp(&b.0));
        let median_cores = intervals[intervals.len() / 2].0;
        let met = median_cores <= IDLE_CORES_MAX && mib(peak_rss) <= IDLE_RSS_MIB_MAX;
        println!(
            "idle target (voltex up with 1000 agents ≤ {IDLE_CORES_MAX} core, ≤ {IDLE_RSS_MIB_MAX} MiB RSS): {} \
             with {n_agents} agents: median of {} intervals of {} s {median_cores:.3} cores, max {:.3}; peak RSS {:.0} MiB",
            if met { "met" } else { "NOT met" },
            intervals.len(),
            self.every.as_secs(),
            intervals.last().map_or(0.0, |(cores, _)| *cores),
            mib(peak_rss)
        );
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Runs `voltex up`.
pub fn run_up(args: &UpArgs) -> Result<()> {
    anyhow::ensure!(args.agents > 0, "--agents must be positive");
    anyhow::ensure!(
        args.quic_per_mille <= 1000,
        "--quic-per-mille is at most 1000"
    );
    anyhow::ensure!(args.hour_seconds > 0, "--hour-seconds must be positive");
    anyhow::ensure!(
        !args.imbalance_penalty_eur_per_mwh.is_sign_negative(),
        "--imbalance-penalty-eur-per-mwh must not be negative"
    );
    let server = args.serve.config()?;
    if let Some(mw) = args.max_position_mw {
        // Checked before anything starts: a whole, positive number of day-ahead lots.
        server
            .day_ahead_market_rules()?
            .qty_from_mw(mw)
            .map_err(|error| anyhow::anyhow!("--max-position-mw: {error}"))?;
    }
    // Checked before anything starts, like the risk limit.
    let intraday = args
        .intraday_spread_eur_per_mwh
        .map(|spread| {
            voltex_engine::bidding::IntradayConfig::with_depth_mw(
                server.intraday_market_rules()?,
                spread,
                args.intraday_depth_mw,
            )
            .map_err(|error| anyhow::anyhow!("--intraday-spread-eur-per-mwh: {error}"))
        })
        .transpose()?;
    let config = voltex::server::up::UpConfig {
        server,
        n_agents: args.agents,
        quic_per_mille: args.quic_per_mille,
        prices_csv: args.prices_csv.clone(),
        hour_real_s: args.hour_seconds,
        run_for: args.run_for_s.map(std::time::Duration::from_secs),
        imbalance_penalty_eur_per_mwh: args.imbalance_penalty_eur_per_mwh,
        max_position_mw: args.max_position_mw,
        intraday,
        family_bids: args.family_bids.then_some(args.alternatives),
    };
    anyhow::ensure!(
        args.resources_every_s != Some(0),
        "--resources-every-s must be positive"
    );
    let sampler = args
        .resources_every_s
        .map(|every_s| ResourceSampler::spawn(std::time::Duration::from_secs(every_s)))
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(voltex::server::up::run(config, |api, token| {
        println!("voltex up: API {api}/api/v1 (OpenAPI {api}/api/v1/openapi.json, metrics {api}/metrics); Ctrl-C stops");
        println!("operator token (24 h): {token}");
        println!("dashboard: {api}/#token={token}");
    }))?;
    println!(
        "voltex up: {} day(s) replayed, {}/{} device schedules acked, expected revenue {:.2} EUR",
        report.n_days,
        report.n_acked,
        report.n_issued,
        report.revenue_cents as f64 / 100.0
    );
    if let Some(sampler) = sampler {
        sampler.finish(args.agents);
    }
    Ok(())
}
