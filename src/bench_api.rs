//! `voltex bench api`: order commands through the whole trader API on loopback —
//! HTTP/1.1 keep-alive → JSON → JWT auth → rate limiter → sequencer → journal commit →
//! ack (the audit record travels in the journal with the command and is projected
//! into `audit_log` with its events) — against a baseline of the same command stream
//! sent straight to the exchange (`Exchange::execute`, the sequencer path without
//! HTTP), so the ratio shows what HTTP, JSON and auth cost.
//!
//! The server is a real [`RunningServer`] in this process (temporary data directory,
//! temporary SQLite database unless `--database-url` names another, e.g. PostgreSQL).
//! N clients, each with its own account, token and one keep-alive connection, run a
//! seeded stream of commands: GTC limit orders that rest, IOC orders that cancel on
//! arrival, and cancels of the client's own oldest resting order (always when it has
//! `RESTING_PER_CLIENT_MAX` resting). Every price is on the tick grid and every
//! quantity a whole number of lots of a product the server lists; buys stay below and
//! sells above a mid price, so nothing trades and every command's outcome is known in
//! advance.
//!
//! Two ways to load the server:
//! - **closed loop** (default): each client sends its next command when the previous
//!   one is answered, so the run shows the most the path takes, and its latencies
//!   include the queue the clients themselves build;
//! - **open loop** (`--rate R`): commands are due at a fixed total rate R, spread
//!   evenly over the clients, and every latency counts from the command's *due* time,
//!   not from when it was sent. A server that falls behind is charged for the wait
//!   (no coordinated omission), so "R commands/s with p99 ≤ X" is what the issue's
//!   target asks. Tokio's timer has millisecond granularity: a command is sent up to
//!   about 1 ms after it is due, and that wait is in its latency. The table also
//!   shows the latency from the actual send.
//!
//! With a PostgreSQL `--database-url` the bench creates a scratch database through it
//! and drops it afterwards, so runs never see each other's rows.
//!
//! After the orders, the same server answers schedule reads
//! (`GET /api/v1/schedules/{device_id}`, the issue's second target; see
//! `bench_api_schedules`).
//!
//! The bench fails on a wrong result, never on timing: every request must be answered
//! 2xx with the expected order status, each account's resting orders on the server
//! (`GET /api/v1/orders`, the live index for the baseline) must equal what the client
//! expects, and the database projection must hold exactly one order row per submit.
//!
//! Clients, server and sequencer share the machine's cores; on a small machine the
//! client side costs a good part of the API's throughput.

// Benchmarks measure wall time: the one place the clock seam is crossed on purpose.
#![allow(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::Row;
use voltex::db::scratch::ScratchPostgres;
use voltex::server::RunningServer;
use voltex::server::auth::{Claims, JwtKeys, Role};
use voltex::server::clock::SystemClock;
use voltex::server::config::ServerConfig;
use voltex::server::exchange::{Exchange, ProductInfo};
use voltex_engine::{EngineCommand, EventKind};
use voltex_market::book::{BookCommand, BookEvent, NewOrder, TimeInForce};
use voltex_market::{AccountId, OrderId, ProductId, Side};

/// Most resting orders one client keeps; beyond it the client cancels its oldest.
const RESTING_PER_CLIENT_MAX: usize = 100;
/// Share of submits that are IOC (they cancel on arrival: nothing to cross).
const IOC_FRACTION: f64 = 0.2;
/// Price levels on each side of the mid.
const LEVELS_PER_SIDE: i64 = 500;
/// Most lots per order.
const LOTS_MAX: i64 = 10;
/// A product is used only if its gate closes at least this far ahead.
const GATE_MARGIN_NS: i64 = 15 * 60 * 1_000_000_000;
/// First account of the API clients and of the baseline clients.
const API_ACCOUNT_BASE: u32 = 10_000;
const DIRECT_ACCOUNT_BASE: u32 = 20_000;
/// HTTP secret of the bench's server.
const SECRET: &str = "voltex-bench-api-secret-0123456789abcdef";
/// Longest wait for the database projection to catch up with the journal.
const PERSIST_WAIT: Duration = Duration::from_secs(120);
/// Failures kept for the report.
const FAILURES_KEPT_MAX: usize = 5;
/// Granularity of Tokio's timer.
pub(crate) const TIMER_TICK: Duration = Duration::from_millis(1);
/// Open loop: from spawning the clients to the first due time.
pub(crate) const PACED_START_DELAY: Duration = Duration::from_millis(50);
/// The issue's target: this rate through the API ...
const TARGET_COMMANDS_PER_S: u32 = 5_000;
/// ... with this p99 (ms).
const TARGET_P99_MS: f64 = 5.0;

/// Arguments of `voltex bench api`.
#[derive(clap::Args, Debug)]
pub struct ApiBenchArgs {
    /// Concurrent clients (keep-alive connections, one account each); default 32.
    #[arg(long)]
    clients: Option<usize>,
    /// Order commands (submits + cancels) per path; default 100,000 (10,000 with --quick).
    #[arg(long)]
    commands: Option<usize>,
    /// Share of commands that cancel the client's oldest resting order.
    #[arg(long, default_value_t = 0.15)]
    cancel_fraction: f64,
    /// Seed of the command stream.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Database (default: a temporary SQLite file). A postgres:// URL names the server
    /// and a database to connect to first: the bench creates a scratch database there
    /// and drops it when done.
    #[arg(long)]
    database_url: Option<String>,
    /// Open loop: send commands at this total rate (commands/s, spread over the
    /// clients) and measure each latency from its due time. Default: closed loop.
    #[arg(long)]
    rate: Option<u32>,
    /// CI mode: 10,000 commands per path, a few seconds.
    #[arg(long)]
    quick: bool,
}

/// One command of a client's stream.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// A new limit order (`price_level` ticks away from the mid, on its side).
    Submit {
        product_idx: usize,
        side: Side,
        price_level: i64,
        lots: i64,
        ioc: bool,
    },
    /// Cancel the client's oldest resting order.
    CancelOldest,
}

/// The seeded stream of one client. The resting count is tracked while generating, so
/// a cancel always has an order to cancel.
fn client_ops(
    seed: u64,
    client_idx: usize,
    n_ops: usize,
    n_products: usize,
    cancel_fraction: f64,
) -> Vec<Op> {
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (client_idx as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut resting = 0usize;
    let mut ops = Vec::with_capacity(n_ops);
    for _ in 0..n_ops {
        if resting >= RESTING_PER_CLIENT_MAX || (resting > 0 && rng.random_bool(cancel_fraction)) {
            resting -= 1;
            ops.push(Op::CancelOldest);
            continue;
        }
        let ioc = rng.random_bool(IOC_FRACTION);
        if !ioc {
            resting += 1;
        }
        ops.push(Op::Submit {
            product_idx: rng.random_range(0..n_products),
            side: if rng.random_bool(0.5) {
                Side::Buy
            } else {
                Side::Sell
            },
            price_level: rng.random_range(1..=LEVELS_PER_SIDE),
            lots: rng.random_range(1..=LOTS_MAX),
            ioc,
        });
    }
    ops
}

/// The grid the stream is priced on, from what the server lists.
#[derive(Clone, Debug)]
struct Grid {
    products: Vec<u32>,
    mid: Decimal,
    tick: Decimal,
    lot: Decimal,
}

impl Grid {
    fn price(&self, side: Side, level: i64) -> Decimal {
        let offset = self.tick * Decimal::from(level);
        match side {
            Side::Buy => self.mid - offset,
            Side::Sell => self.mid + offset,
        }
    }

    fn qty(&self, lots: i64) -> Decimal {
        self.lot * Decimal::from(lots)
    }

    fn from_products(products: &[ProductInfo], now_ns: i64) -> Result<Grid> {
        let usable: Vec<&ProductInfo> = products
            .iter()
            .filter(|product| {
                product.phase == "open" && product.gate_closure_ns > now_ns + GATE_MARGIN_NS
            })
            .collect();
        let Some(first) = usable.first() else {
            bail!("the server lists no product whose gate closes in more than 15 minutes");
        };
        let parse = |field: &str, text: &str| -> Result<Decimal> {
            text.parse::<Decimal>()
                .with_context(|| format!("product {field} {text:?}"))
        };
        let tick = parse("tick", &first.tick_eur_per_mwh)?;
        let lot = parse("lot", &first.lot_mw)?;
        let price_min = parse("price_min", &first.price_min_eur_per_mwh)?;
        let price_max = parse("price_max", &first.price_max_eur_per_mwh)?;
        if tick <= Decimal::ZERO || lot <= Decimal::ZERO {
            bail!("product {} has tick {tick} and lot {lot}", first.product_id);
        }
        // 50 EUR/MWh on the grid, clamped so every level stays inside the limits.
        let mid = (Decimal::from(50) / tick).floor() * tick;
        let span = tick * Decimal::from(LEVELS_PER_SIDE);
        if mid - span < price_min || mid + span > price_max {
            bail!("price limits [{price_min}, {price_max}] are too narrow for the bench's levels");
        }
        Ok(Grid {
            products: usable.iter().map(|product| product.product_id).collect(),
            mid,
            tick,
            lot,
        })
    }
}

/// Open-loop schedule of one client: its command `i` is due at
/// `first_due + i × interval`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pacer {
    first_due: tokio::time::Instant,
    interval: Duration,
}

impl Pacer {
    /// The schedule of client `client_idx` of `n_clients` sharing `rate_per_s`, all
    /// starting at `start`; clients are staggered so the total stream is even.
    pub(crate) fn for_client(
        start: tokio::time::Instant,
        rate_per_s: u32,
        client_idx: usize,
        n_clients: usize,
    ) -> Pacer {
        let interval_ns = n_clients as f64 * 1e9 / f64::from(rate_per_s.max(1));
        let offset_ns = interval_ns * client_idx as f64 / n_clients as f64;
        Pacer {
            first_due: start + Duration::from_nanos(offset_ns as u64),
            interval: Duration::from_nanos(interval_ns as u64),
        }
    }

    pub(crate) fn due(&self, command_idx: usize) -> tokio::time::Instant {
        let after_ns = self.interval.as_nanos().saturating_mul(command_idx as u128);
        self.first_due + Duration::from_nanos(u64::try_from(after_ns).unwrap_or(u64::MAX))
    }
}

/// When command `command_idx` counts as started: now (closed loop), or, open loop,
/// the earlier of its due time and its actual send (waiting until it is due is not
/// latency; a late send is, an early one is counted from the send). Also returns when
/// it was actually sent.
async fn start_command(
    pacer: Option<&Pacer>,
    command_idx: usize,
    outcome: &mut ClientOutcome,
) -> (Instant, Instant) {
    let Some(pacer) = pacer else {
        let now = Instant::now();
        return (now, now);
    };
    let due = pacer.due(command_idx);
    // Tokio wakes a sleep at the first timer tick (1 ms) at or after its deadline;
    // aiming half a tick early sends at the tick nearest the due time, so the timer
    // adds no systematic delay to what is measured.
    tokio::time::sleep_until(due - TIMER_TICK / 2).await;
    let sent = Instant::now();
    let due = due.into_std();
    if sent.saturating_duration_since(due) > pacer.interval {
        outcome.n_sent_late += 1;
    }
    (due.min(sent), sent)
}

/// What one client measured and saw.
struct ClientOutcome {
    account: u32,
    /// From due (open loop) or send (closed loop) to the answer.
    submit_us: Histogram<u64>,
    cancel_us: Histogram<u64>,
    /// From the actual send to the answer, every command.
    service_us: Histogram<u64>,
    /// Open loop: commands sent more than one interval after they were due (the
    /// client was still waiting for an earlier answer).
    n_sent_late: u64,
    n_submits: u64,
    n_cancels: u64,
    /// Orders the client expects to be resting on the server, oldest first.
    resting: VecDeque<u64>,
    failures: Vec<String>,
    n_failures: u64,
}

impl ClientOutcome {
    fn new(account: u32) -> Result<ClientOutcome> {
        Ok(ClientOutcome {
            account,
            submit_us: latency_histogram()?,
            cancel_us: latency_histogram()?,
            service_us: latency_histogram()?,
            n_sent_late: 0,
            n_submits: 0,
            n_cancels: 0,
            resting: VecDeque::with_capacity(RESTING_PER_CLIENT_MAX + 1),
            failures: Vec::new(),
            n_failures: 0,
        })
    }

    /// Records a finished command: `started` is its due or send time, `sent` when it
    /// went out.
    fn record(&mut self, is_submit: bool, started: Instant, sent: Instant) -> Result<()> {
        let latency_us = micros(started.elapsed());
        if is_submit {
            self.submit_us.record(latency_us)?;
            self.n_submits += 1;
        } else {
            self.cancel_us.record(latency_us)?;
            self.n_cancels += 1;
        }
        self.service_us.record(micros(sent.elapsed()))?;
        Ok(())
    }

    fn fail(&mut self, what: String) {
        self.n_failures += 1;
        if self.failures.len() < FAILURES_KEPT_MAX {
            self.failures.push(what);
        }
    }
}

fn latency_histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?)
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// One HTTP client: its own connection, account and token.
async fn api_client(
    base: Arc<str>,
    token: String,
    account: u32,
    grid: Arc<Grid>,
    ops: Vec<Op>,
    pacer: Option<Pacer>,
) -> Result<ClientOutcome> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")?;
    let mut outcome = ClientOutcome::new(account)?;
    let orders_url = format!("{base}/api/v1/orders");
    for (command_idx, op) in ops.into_iter().enumerate() {
        match op {
            Op::Submit {
                product_idx,
                side,
                price_level,
                lots,
                ioc,
            } => {
                let body = json!({
                    "account": account,
                    "product": grid.products[product_idx],
                    "side": if side == Side::Buy { "buy" } else { "sell" },
                    "price_eur_per_mwh": grid.price(side, price_level).to_string(),
                    "qty_mw": grid.qty(lots).to_string(),
                    "time_in_force": if ioc { "ioc" } else { "gtc" },
                });
                let (started, sent) =
                    start_command(pacer.as_ref(), command_idx, &mut outcome).await;
                let response = http
                    .post(&orders_url)
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await;
                let answer = read_answer(response).await;
                outcome.record(true, started, sent)?;
                let expected = if ioc { "cancelled" } else { "resting" };
                match answer {
                    Ok((201, value)) if value["status"] == expected => {
                        if !ioc {
                            match value["order_id"].as_u64() {
                                Some(id) => outcome.resting.push_back(id),
                                None => {
                                    outcome.fail(format!("submit ack without order_id: {value}"))
                                }
                            }
                        }
                    }
                    Ok((status, value)) => {
                        outcome.fail(format!(
                            "submit {body}: expected 201 {expected}, got {status} {value}"
                        ));
                    }
                    Err(error) => outcome.fail(format!("submit {body}: {error:#}")),
                }
            }
            Op::CancelOldest => {
                let Some(id) = outcome.resting.pop_front() else {
                    // Only after an earlier failed submit (already reported).
                    continue;
                };
                let (started, sent) =
                    start_command(pacer.as_ref(), command_idx, &mut outcome).await;
                let response = http
                    .delete(format!("{orders_url}/{id}"))
                    .bearer_auth(&token)
                    .send()
                    .await;
                let answer = read_answer(response).await;
                outcome.record(false, started, sent)?;
                match answer {
                    Ok((200, value)) if value["status"] == "cancelled" => {}
                    Ok((status, value)) => {
                        outcome.fail(format!(
                            "cancel {id}: expected 200 cancelled, got {status} {value}"
                        ));
                    }
                    Err(error) => outcome.fail(format!("cancel {id}: {error:#}")),
                }
            }
        }
    }
    Ok(outcome)
}

async fn read_answer(response: reqwest::Result<reqwest::Response>) -> Result<(u16, Value)> {
    let response = response.context("request failed")?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.context("reading the body")?;
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok((status, value))
}

/// One baseline client: the same stream straight into the exchange.
async fn direct_client(
    exchange: Arc<Exchange>,
    account: u32,
    grid: Arc<Grid>,
    ops: Vec<Op>,
    pacer: Option<Pacer>,
) -> Result<ClientOutcome> {
    let rules = exchange.rules().clone();
    let mut outcome = ClientOutcome::new(account)?;
    let mut resting_products: VecDeque<ProductId> =
        VecDeque::with_capacity(RESTING_PER_CLIENT_MAX + 1);
    for (command_idx, op) in ops.into_iter().enumerate() {
        match op {
            Op::Submit {
                product_idx,
                side,
                price_level,
                lots,
                ioc,
            } => {
                let product = ProductId(grid.products[product_idx]);
                let (started, sent) =
                    start_command(pacer.as_ref(), command_idx, &mut outcome).await;
                // The same conversions and checks the API does.
                let price = rules.price_from_decimal(grid.price(side, price_level));
                let qty = rules.qty_from_mw(grid.qty(lots));
                let (price, qty) = match (price, qty) {
                    (Ok(price), Ok(qty)) => (price, qty),
                    (price, qty) => {
                        outcome.fail(format!("off-grid order: {price:?} {qty:?}"));
                        continue;
                    }
                };
                let id = exchange.next_order_id();
                let mut order = NewOrder::limit(id, AccountId(account), side, price, qty);
                if ioc {
                    order.time_in_force = TimeInForce::Ioc;
                }
                let executed = exchange
                    .execute(EngineCommand::book(
                        exchange.now(),
                        product,
                        BookCommand::Submit(order),
                    ))
                    .await;
                outcome.record(true, started, sent)?;
                match executed {
                    Ok(executed) => {
                        let events: Vec<&EventKind> =
                            executed.events.iter().map(|event| &event.kind).collect();
                        let accepted = events.iter().any(|kind| matches!(kind, EventKind::Book(BookEvent::Accepted { id: accepted, .. }) if *accepted == id));
                        let cancelled = events.iter().any(|kind| matches!(kind, EventKind::Book(BookEvent::Cancelled { id: cancelled, .. }) if *cancelled == id));
                        if !accepted || cancelled != ioc {
                            outcome.fail(format!("order {}: accepted {accepted}, cancelled {cancelled}, ioc {ioc}: {events:?}", id.0));
                        } else if !ioc {
                            outcome.resting.push_back(id.0);
                            resting_products.push_back(product);
                        }
                    }
                    Err(error) => outcome.fail(format!("submit: {error}")),
                }
            }
            Op::CancelOldest => {
                let (Some(id), Some(product)) =
                    (outcome.resting.pop_front(), resting_products.pop_front())
                else {
                    continue;
                };
                let (started, sent) =
                    start_command(pacer.as_ref(), command_idx, &mut outcome).await;
                let cancel = BookCommand::Cancel {
                    id: OrderId(id),
                    account: AccountId(account),
                };
                let executed = exchange
                    .execute(EngineCommand::book(exchange.now(), product, cancel))
                    .await;
                outcome.record(false, started, sent)?;
                match executed {
                    Ok(executed)
                        if executed.events.iter().any(|event| matches!(event.kind, EventKind::Book(BookEvent::Cancelled { id: cancelled, .. }) if cancelled.0 == id)) => {}
                    Ok(executed) => outcome.fail(format!("cancel {id}: {:?}", executed.events)),
                    Err(error) => outcome.fail(format!("cancel {id}: {error}")),
                }
            }
        }
    }
    Ok(outcome)
}

/// What one path (API or baseline) achieved.
struct PathResult {
    name: &'static str,
    elapsed: Duration,
    clients: Vec<ClientOutcome>,
}

impl PathResult {
    fn n_submits(&self) -> u64 {
        self.clients.iter().map(|client| client.n_submits).sum()
    }

    fn n_cancels(&self) -> u64 {
        self.clients.iter().map(|client| client.n_cancels).sum()
    }

    fn commands_per_s(&self) -> f64 {
        (self.n_submits() + self.n_cancels()) as f64 / self.elapsed.as_secs_f64()
    }

    fn submits_per_s(&self) -> f64 {
        self.n_submits() as f64 / self.elapsed.as_secs_f64()
    }

    /// Submit, cancel, all (from due or send) and service (from send) latencies.
    fn histograms(&self) -> Result<[Histogram<u64>; 4]> {
        let (mut submit, mut cancel, mut all, mut service) = (
            latency_histogram()?,
            latency_histogram()?,
            latency_histogram()?,
            latency_histogram()?,
        );
        for client in &self.clients {
            submit.add(&client.submit_us)?;
            cancel.add(&client.cancel_us)?;
            all.add(&client.submit_us)?;
            all.add(&client.cancel_us)?;
            service.add(&client.service_us)?;
        }
        Ok([submit, cancel, all, service])
    }

    fn n_sent_late(&self) -> u64 {
        self.clients.iter().map(|client| client.n_sent_late).sum()
    }

    fn failures(&self) -> (u64, Vec<&str>) {
        let n = self.clients.iter().map(|client| client.n_failures).sum();
        let first = self
            .clients
            .iter()
            .flat_map(|client| client.failures.iter().map(String::as_str))
            .take(FAILURES_KEPT_MAX)
            .collect();
        (n, first)
    }
}

/// Waits for every client; the path's time runs from `started` (for the open loop,
/// the first due time) to the last answer.
async fn join_clients(
    name: &'static str,
    started: Instant,
    handles: Vec<tokio::task::JoinHandle<Result<ClientOutcome>>>,
) -> Result<PathResult> {
    let mut clients = Vec::with_capacity(handles.len());
    for handle in handles {
        clients.push(handle.await.context("client task panicked")??);
    }
    Ok(PathResult {
        name,
        elapsed: started.elapsed(),
        clients,
    })
}

fn token_for(account: u32) -> Result<String> {
    Ok(JwtKeys::from_secret(SECRET.as_bytes()).issue(&Claims {
        sub: format!("bench-{account}"),
        role: Role::Trader,
        accounts: vec![account],
        iat: 0,
        exp: 4_000_000_000,
    })?)
}

/// Runs `voltex bench api`.
pub fn run(args: &ApiBenchArgs) -> Result<()> {
    let n_clients = args.clients.unwrap_or(32);
    let n_commands = args
        .commands
        .unwrap_or(if args.quick { 10_000 } else { 100_000 });
    if n_clients == 0 || n_commands < n_clients {
        bail!("--clients must be > 0 and --commands at least --clients");
    }
    if !(0.0..1.0).contains(&args.cancel_fraction) {
        bail!("--cancel-fraction must be in [0, 1)");
    }
    if args.rate == Some(0) {
        bail!("--rate must be > 0 commands/s");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the Tokio runtime")?;
    runtime.block_on(bench(args, n_clients, n_commands))
}

async fn bench(args: &ApiBenchArgs, n_clients: usize, n_commands: usize) -> Result<()> {
    println!("voltex bench api (release build recommended; timings are reported, never asserted)");
    let data_dir = tempfile::tempdir().context("temporary data directory")?;
    let scratch = match args.database_url.as_deref() {
        Some(url) if url.starts_with("postgres") => {
            let name = format!(
                "voltex_bench_api_{}_{:08x}",
                std::process::id(),
                rand::random::<u32>()
            );
            Some(
                ScratchPostgres::create(url, &name)
                    .await
                    .context("creating the bench's scratch database")?,
            )
        }
        _ => None,
    };
    let database_url = match &scratch {
        Some(scratch) => Some(scratch.url().to_owned()),
        None => args.database_url.clone(),
    };
    let result = bench_on(args, n_clients, n_commands, data_dir.path(), database_url).await;
    if let Some(scratch) = scratch {
        let name = scratch.name().to_owned();
        scratch
            .drop_database()
            .await
            .with_context(|| format!("dropping the scratch database {name}"))?;
    }
    result
}

async fn bench_on(
    args: &ApiBenchArgs,
    n_clients: usize,
    n_commands: usize,
    data_dir: &std::path::Path,
    database_url: Option<String>,
) -> Result<()> {
    let database = match &database_url {
        Some(url) if url.starts_with("postgres") => "a scratch PostgreSQL database",
        Some(_) => "the given database",
        None => "a temporary SQLite file",
    };
    let config = ServerConfig {
        http_addr: "127.0.0.1:0".parse()?,
        data_dir: data_dir.to_path_buf(),
        database_url,
        jwt_secret: Some(SECRET.into()),
        // The bench measures the path, not the limiter's refusals.
        rate_limit_orders_per_s: 10_000_000,
        rate_limit_burst: 10_000_000,
        intraday_hours_ahead: 4,
        ..ServerConfig::default()
    };
    let server = RunningServer::start(config, Arc::new(SystemClock))
        .await
        .context("starting the server")?;
    let base: Arc<str> = format!("http://{}", server.http_addr).into();
    let mut result = measure(args, &server, &base, n_clients, n_commands, database).await;
    if result.is_ok() {
        let n_reads = if args.quick { 4_000 } else { 40_000 };
        result = crate::bench_api_schedules::measure(
            &server, &base, SECRET, n_clients, n_reads, args.seed,
        )
        .await;
    }
    server.stop().await.context("stopping the server")?;
    result
}

async fn measure(
    args: &ApiBenchArgs,
    server: &RunningServer,
    base: &Arc<str>,
    n_clients: usize,
    n_commands: usize,
    database: &str,
) -> Result<()> {
    let exchange = Arc::clone(&server.state.exchange);
    let grid = Arc::new(Grid::from_products(
        &exchange.products(),
        exchange.now().nanos(),
    )?);
    // The products must be the ones a client sees.
    let listed: Vec<Value> = reqwest::get(format!("{base}/api/v1/products"))
        .await
        .context("GET /api/v1/products")?
        .json()
        .await
        .context("GET /api/v1/products body")?;
    for product in &grid.products {
        if !listed
            .iter()
            .any(|info| info["product_id"].as_u64() == Some(u64::from(*product)))
        {
            bail!("product {product} is not in GET /api/v1/products");
        }
    }
    let ops_per_client = n_commands / n_clients;
    let streams: Vec<Vec<Op>> = (0..n_clients)
        .map(|client_idx| {
            client_ops(
                args.seed,
                client_idx,
                ops_per_client,
                grid.products.len(),
                args.cancel_fraction,
            )
        })
        .collect();
    let n_cancel_ops: usize = streams
        .iter()
        .map(|ops| {
            ops.iter()
                .filter(|op| matches!(op, Op::CancelOldest))
                .count()
        })
        .sum();
    println!(
        "server {base} on {database}; {n_clients} clients (one keep-alive connection and account each), \
         {} products, seed {}",
        grid.products.len(),
        args.seed
    );
    println!(
        "stream per path: {} commands = {} submits ({:.0}% IOC, the rest rest) + {n_cancel_ops} cancels; \
         prices {}±{}×{} EUR/MWh, never crossing",
        ops_per_client * n_clients,
        ops_per_client * n_clients - n_cancel_ops,
        IOC_FRACTION * 100.0,
        grid.mid,
        LEVELS_PER_SIDE,
        grid.tick
    );

    match args.rate {
        Some(rate) => println!(
            "open loop: {rate} commands/s in all, each client's due every {:.2} ms; latency from the due time",
            n_clients as f64 * 1e3 / f64::from(rate.max(1))
        ),
        None => println!(
            "closed loop: each client sends its next command when the previous is answered"
        ),
    }
    // The first due time: late enough for every client task to be running.
    let pacers = |first_due: tokio::time::Instant| -> Vec<Option<Pacer>> {
        (0..n_clients)
            .map(|client_idx| {
                args.rate
                    .map(|rate| Pacer::for_client(first_due, rate, client_idx, n_clients))
            })
            .collect()
    };

    // Baseline: the sequencer path without HTTP.
    let first_due = tokio::time::Instant::now() + PACED_START_DELAY;
    let started = if args.rate.is_some() {
        first_due.into_std()
    } else {
        Instant::now()
    };
    let handles = streams
        .iter()
        .zip(pacers(first_due))
        .enumerate()
        .map(|(client_idx, (ops, pacer))| {
            tokio::spawn(direct_client(
                Arc::clone(&exchange),
                DIRECT_ACCOUNT_BASE + client_idx as u32,
                Arc::clone(&grid),
                ops.clone(),
                pacer,
            ))
        })
        .collect();
    let direct = join_clients("direct", started, handles).await?;
    // The API path runs on a database that has caught up, not behind the baseline's
    // backlog of projection writes.
    wait_for_projection(server).await?;

    // The API.
    let metrics_before = ServerSideTotals::read(server);
    let tokens: Vec<String> = (0..n_clients)
        .map(|client_idx| token_for(API_ACCOUNT_BASE + client_idx as u32))
        .collect::<Result<_>>()?;
    let first_due = tokio::time::Instant::now() + PACED_START_DELAY;
    let started = if args.rate.is_some() {
        first_due.into_std()
    } else {
        Instant::now()
    };
    let handles = streams
        .into_iter()
        .zip(tokens)
        .zip(pacers(first_due))
        .enumerate()
        .map(|(client_idx, ((ops, token), pacer))| {
            tokio::spawn(api_client(
                Arc::clone(base),
                token,
                API_ACCOUNT_BASE + client_idx as u32,
                Arc::clone(&grid),
                ops,
                pacer,
            ))
        })
        .collect();
    let api = join_clients("api", started, handles).await?;
    let server_side = ServerSideTotals::read(server).since(&metrics_before);

    let counted_from = if args.rate.is_some() { "due" } else { "send" };
    println!(
        "latency per request (µs from {counted_from}; the baseline's includes the sequencer's group commit; \
         \"service\" is from the actual send):"
    );
    println!(
        "  {:<22} {:>9} {:>7} {:>7} {:>7} {:>8} {:>9}",
        "path/command", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    for path in [&direct, &api] {
        let [submit, cancel, all, service] = path.histograms()?;
        crate::bench_book::print_histogram_row(&format!("{}/submit", path.name), &submit);
        crate::bench_book::print_histogram_row(&format!("{}/cancel", path.name), &cancel);
        crate::bench_book::print_histogram_row(&format!("{}/all", path.name), &all);
        crate::bench_book::print_histogram_row(&format!("{}/all service", path.name), &service);
    }
    for path in [&direct, &api] {
        println!(
            "  {:<7} {:>9.0} order commands/s ({:>8.0} submits/s) over {:.2} s",
            path.name,
            path.commands_per_s(),
            path.submits_per_s(),
            path.elapsed.as_secs_f64()
        );
    }
    server_side.print();
    let [_, _, api_all, _] = api.histograms()?;
    let api_p99_ms = api_all.value_at_quantile(0.99) as f64 / 1000.0;
    println!(
        "  ratio direct/api: {:.2}x throughput; api p50 {} µs vs direct p50 {} µs",
        direct.commands_per_s() / api.commands_per_s(),
        api_all.value_at_quantile(0.5),
        direct.histograms()?[2].value_at_quantile(0.5)
    );
    match args.rate {
        Some(rate) => {
            let n_commands = api.n_submits() + api.n_cancels();
            println!(
                "  sent more than one interval late (the client still waited for an earlier answer): \
                 api {} of {n_commands}, direct {}",
                api.n_sent_late(),
                direct.n_sent_late()
            );
            // Kept up: the run ended within 3 % of the schedule's length.
            let kept_up = api.commands_per_s() >= f64::from(rate) * 0.97;
            let met = rate >= TARGET_COMMANDS_PER_S && kept_up && api_p99_ms <= TARGET_P99_MS;
            println!(
                "  issue target ({TARGET_COMMANDS_PER_S} orders/s sustained through the API, p99 ≤ {TARGET_P99_MS} ms): \
                 {} (offered {rate}/s, achieved {:.0} commands/s, p99 {api_p99_ms:.2} ms from due)",
                if met { "met" } else { "NOT met" },
                api.commands_per_s()
            );
        }
        None => println!(
            "  closed loop shows the most the path takes ({:.0} commands/s, p99 {api_p99_ms:.2} ms at that load); \
             the issue target is judged open loop: --rate {TARGET_COMMANDS_PER_S}",
            api.commands_per_s()
        ),
    }

    verify(server, base, &direct, &api).await
}

/// Sum (s) and count of the server's latency histograms that make up an API order
/// call, read from its Prometheus exposition (so the bench sees what an operator's
/// dashboard would).
#[derive(Clone, Copy, Debug, Default)]
struct ServerSideTotals {
    /// `voltex_api_request_seconds`: the whole request in the server.
    request: (f64, f64),
    /// `voltex_sequencer_call_seconds`: sequencer round trip incl. journal commit.
    sequencer: (f64, f64),
    /// `voltex_audit_append_seconds`: waiting for an audit record's commit (calls
    /// not journaled with their origin only).
    audit: (f64, f64),
}

impl ServerSideTotals {
    fn read(server: &RunningServer) -> ServerSideTotals {
        let exposition = server
            .state
            .metrics
            .as_ref()
            .map(metrics_exporter_prometheus::PrometheusHandle::render)
            .unwrap_or_default();
        ServerSideTotals {
            request: histogram_totals(&exposition, "voltex_api_request_seconds"),
            sequencer: histogram_totals(&exposition, "voltex_sequencer_call_seconds"),
            audit: histogram_totals(&exposition, "voltex_audit_append_seconds"),
        }
    }

    fn since(&self, before: &ServerSideTotals) -> ServerSideTotals {
        let minus =
            |after: (f64, f64), before: (f64, f64)| (after.0 - before.0, after.1 - before.1);
        ServerSideTotals {
            request: minus(self.request, before.request),
            sequencer: minus(self.sequencer, before.sequencer),
            audit: minus(self.audit, before.audit),
        }
    }

    fn print(&self) {
        // Per call: a component some calls skip (the audit wait) counts as 0 for them.
        let n_calls = self.request.1;
        let per_call_us = |(sum_s, _): (f64, f64)| {
            if n_calls > 0.0 {
                sum_s / n_calls * 1e6
            } else {
                f64::NAN
            }
        };
        let (request, sequencer, audit) = (
            per_call_us(self.request),
            per_call_us(self.sequencer),
            per_call_us(self.audit),
        );
        println!(
            "  api, server side (mean per call, from /metrics): request {request:.0} µs = sequencer call {sequencer:.0} µs \
             + audit commit wait {audit:.0} µs ({:.0} of {n_calls:.0} calls waited for one) + the rest (HTTP, JSON, auth) {:.0} µs",
            self.audit.1,
            request - sequencer - audit
        );
    }
}

/// Sum and count of histogram `name` over all its label sets in a Prometheus text
/// exposition; zeros if it is not there.
fn histogram_totals(exposition: &str, name: &str) -> (f64, f64) {
    let (mut sum, mut count) = (0.0, 0.0);
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let is_series = |suffix: &str| {
            rest.strip_prefix(suffix)
                .is_some_and(|after| after.starts_with('{') || after.starts_with(' '))
        };
        let target = if is_series("_sum") {
            &mut sum
        } else if is_series("_count") {
            &mut count
        } else {
            continue;
        };
        if let Some(value) = line
            .rsplit(' ')
            .next()
            .and_then(|text| text.parse::<f64>().ok())
        {
            *target += value;
        }
    }
    (sum, count)
}

/// Waits until the database projection holds every event the journal has committed
/// (it trails the journal).
async fn wait_for_projection(server: &RunningServer) -> Result<()> {
    let journal_seq = server.state.exchange.last_event_seq();
    let waited = Instant::now();
    loop {
        let cursor = server.state.db.engine_cursor().await?;
        if cursor.last_event_seq >= journal_seq {
            return Ok(());
        }
        if waited.elapsed() > PERSIST_WAIT {
            bail!(
                "the database is at event {} of {journal_seq} after {PERSIST_WAIT:?}",
                cursor.last_event_seq
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fails unless every request got its expected answer, the server's resting orders
/// are what the clients expect, and the database holds one row per submit.
async fn verify(
    server: &RunningServer,
    base: &Arc<str>,
    direct: &PathResult,
    api: &PathResult,
) -> Result<()> {
    for path in [direct, api] {
        let (n_failures, first) = path.failures();
        if n_failures > 0 {
            bail!(
                "{}: {n_failures} commands got an unexpected answer; first: {first:#?}",
                path.name
            );
        }
    }
    let exchange = &server.state.exchange;
    let http = reqwest::Client::new();
    for client in &api.clients {
        let response = http
            .get(format!("{base}/api/v1/orders?account={}", client.account))
            .bearer_auth(token_for(client.account)?)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "GET /api/v1/orders for account {}: {}",
                client.account,
                response.status()
            );
        }
        let listed: Vec<Value> = response.json().await?;
        let mut ids: Vec<u64> = listed
            .iter()
            .filter_map(|order| order["order_id"].as_u64())
            .collect();
        ids.sort_unstable();
        let mut expected: Vec<u64> = client.resting.iter().copied().collect();
        expected.sort_unstable();
        if ids != expected {
            bail!(
                "account {}: the API lists {} resting orders, the client expects {}",
                client.account,
                ids.len(),
                expected.len()
            );
        }
    }
    for client in &direct.clients {
        let mut ids: Vec<u64> = exchange
            .live_orders_of(AccountId(client.account))
            .iter()
            .map(|(id, _)| id.0)
            .collect();
        ids.sort_unstable();
        let mut expected: Vec<u64> = client.resting.iter().copied().collect();
        expected.sort_unstable();
        if ids != expected {
            bail!(
                "account {}: {} resting orders in the live index, {} expected",
                client.account,
                ids.len(),
                expected.len()
            );
        }
    }
    wait_for_projection(server).await?;
    let mut n_rows = 0u64;
    for client in direct.clients.iter().chain(&api.clients) {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM orders WHERE account_id = $1")
            .bind(i64::from(client.account))
            .fetch_one(server.state.db.pool())
            .await?;
        let n: i64 = row.try_get("n")?;
        if u64::try_from(n).ok() != Some(client.n_submits) {
            bail!(
                "account {}: {n} order rows in the database, {} submitted",
                client.account,
                client.n_submits
            );
        }
        n_rows += client.n_submits;
    }
    // Every API call is audited once, whether projected from the journal or written
    // by the writer; the direct path has no caller to audit.
    let n_api_commands = api.n_submits() + api.n_cancels();
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM audit_log \
         WHERE action IN ('order.submit', 'order.cancel') AND result = 'ok'",
    )
    .fetch_one(server.state.db.pool())
    .await?;
    let n_audited: i64 = row.try_get("n")?;
    if u64::try_from(n_audited).ok() != Some(n_api_commands) {
        bail!("{n_audited} audit records of order calls, {n_api_commands} calls answered");
    }
    println!(
        "verified: every command answered 2xx with the expected status ({n_api_commands} api, {} direct), resting orders \
         per account match, the database holds all {n_rows} orders and one audit record per api call",
        direct.n_submits() + direct.n_cancels()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_totals_add_every_label_set_and_nothing_else() {
        let exposition = "\
# TYPE voltex_api_request_seconds histogram
voltex_api_request_seconds_bucket{route=\"/api/v1/orders\",method=\"POST\",le=\"0.001\"} 7
voltex_api_request_seconds_sum{route=\"/api/v1/orders\",method=\"POST\"} 0.5
voltex_api_request_seconds_count{route=\"/api/v1/orders\",method=\"POST\"} 100
voltex_api_request_seconds_sum{route=\"/api/v1/orders/{id}\",method=\"DELETE\"} 0.25
voltex_api_request_seconds_count{route=\"/api/v1/orders/{id}\",method=\"DELETE\"} 50
voltex_api_request_seconds_summary_sum 99
voltex_sequencer_call_seconds_sum 2
voltex_sequencer_call_seconds_count 4
";
        assert_eq!(
            histogram_totals(exposition, "voltex_api_request_seconds"),
            (0.75, 150.0)
        );
        assert_eq!(
            histogram_totals(exposition, "voltex_sequencer_call_seconds"),
            (2.0, 4.0)
        );
        assert_eq!(
            histogram_totals(exposition, "voltex_audit_append_seconds"),
            (0.0, 0.0)
        );
    }

    #[test]
    fn the_clients_schedules_interleave_into_one_even_stream() {
        let start = tokio::time::Instant::now();
        let (rate, n_clients) = (5_000, 32);
        let mut due_ns: Vec<u128> = (0..n_clients)
            .flat_map(|client_idx| {
                let pacer = Pacer::for_client(start, rate, client_idx, n_clients);
                (0..10).map(move |command_idx| (pacer.due(command_idx) - start).as_nanos())
            })
            .collect();
        due_ns.sort_unstable();
        assert_eq!(due_ns.len(), 320);
        // 5,000/s: one command due every 200 µs, to within rounding.
        for pair in due_ns.windows(2) {
            let gap_ns = pair[1] - pair[0];
            assert!((199_000..=201_000).contains(&gap_ns), "gap {gap_ns} ns");
        }
    }
}
