//! Running a scenario end to end, and its outputs: `summary.json`, the per-interval
//! CSV and `report.html`, as strings (the caller writes the files).
//!
//! [`run`] builds the [`World`], steps the DES one simulated day at a time (calling the
//! progress callback after each day) and settles the run. The summary carries a blake3
//! hash of the per-interval CSV and of the summary's own fields, so two runs can be
//! compared for bit-identical results by one string.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;
use voltex_market::series::PriceSeries;

use crate::des::{Scheduler, run_until};
use crate::scenario::{Bidding, Scenario};
use crate::world::{Counters, Event, IntervalRow, SimError, World};

/// Joules per MWh.
const J_PER_MWH: i64 = 3_600_000_000;

/// P&L of a run, EUR, exact (rounded to 1e-6 EUR only here, at the boundary).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pnl {
    /// Cash for the committed position at the replayed prices.
    pub market_eur: Decimal,
    /// What the intraday close-outs paid beyond the replayed prices (≤ 0: the spread).
    pub intraday_eur: Decimal,
    /// Cash for delivered minus committed energy at the price, minus the penalty.
    pub imbalance_eur: Decimal,
    /// Wear cost of the throughput.
    pub wear_eur: Decimal,
    /// `market + intraday + imbalance − wear`.
    pub profit_eur: Decimal,
}

/// Energy totals of a run, MWh (reporting only; the money is exact).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Energy {
    /// Energy committed to be sold minus bought.
    pub committed_net_mwh: f64,
    /// Energy delivered minus drawn.
    pub delivered_net_mwh: f64,
    /// Charge plus discharge throughput.
    pub throughput_mwh: f64,
    /// Sum over intervals of |delivered − committed|.
    pub imbalance_abs_mwh: f64,
    /// Sum over intervals of |power closed on the intraday book|.
    pub intraday_closed_mwh: f64,
}

/// `summary.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Strategy, as in the scenario.
    pub strategy: String,
    /// How the plan reached the market (`price_taker`, `auction` or `family`).
    pub bidding: String,
    /// The fleet's risk limit, MW (`null`: none).
    pub max_position_mw: Option<Decimal>,
    /// The intraday maker's spread, EUR/MWh (`null`: no intraday market).
    pub intraday_spread_eur_per_mwh: Option<Decimal>,
    /// Which code made the devices' decisions.
    pub device_logic: String,
    /// Number of batteries.
    pub n_devices: usize,
    /// Number of intervals.
    pub n_intervals: usize,
    /// P&L breakdown.
    pub pnl: Pnl,
    /// Energy totals.
    pub energy: Energy,
    /// Dispatch and fault counters.
    pub counters: Counters,
    /// blake3 of the CSV and of this summary without the hash, hex.
    pub result_hash: String,
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct SimOutput {
    /// The summary.
    pub summary: Summary,
    /// The per-interval CSV.
    pub intervals_csv: String,
    /// The self-contained HTML report.
    pub report_html: String,
}

impl SimOutput {
    /// `summary.json`, pretty-printed.
    pub fn summary_json(&self) -> String {
        serde_json::to_string_pretty(&self.summary).unwrap_or_default()
    }
}

/// Progress after each simulated day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Days done.
    pub days_done: u32,
    /// Days in the run.
    pub days_total: u32,
    /// Events handled so far.
    pub n_events: u64,
}

fn to_eur(money: i128, scale: u32) -> Decimal {
    // money is in J × 10^-scale EUR/MWh; EUR = money / (3.6e9 × 10^scale).
    let Ok(value) = Decimal::try_from_i128_with_scale(money, scale) else {
        return Decimal::MAX;
    };
    (value / Decimal::from(J_PER_MWH)).round_dp(6)
}

fn csv(rows: &[IntervalRow]) -> String {
    let mut out = String::with_capacity(rows.len() * 96);
    out.push_str(
        "interval_start_utc,price_eur_per_mwh,committed_w,delivered_j,imbalance_j,\
         throughput_j,fleet_soc_wh,soc_min_pct,soc_max_pct,n_fallback,n_down,closed_w\n",
    );
    let interval_s = rows
        .get(1)
        .map_or(0, |r| (r.start_ns - rows[0].start_ns) / 1_000_000_000);
    for row in rows {
        let start = voltex_market::UtcNanos(row.start_ns)
            .to_datetime()
            .format("%Y-%m-%dT%H:%M:%SZ");
        let imbalance = row.delivered_j - row.committed_w * interval_s;
        out.push_str(&format!(
            "{start},{},{},{},{imbalance},{},{:.3},{:.3},{:.3},{},{},{}\n",
            row.price,
            row.committed_w,
            row.delivered_j,
            row.throughput_j,
            row.fleet_soc_wh,
            row.soc_min_pct,
            row.soc_max_pct,
            row.n_fallback,
            row.n_down,
            row.closed_w
        ));
    }
    out
}

/// What the virtual batteries run, as named in the summary.
pub const DEVICE_LOGIC: &str =
    "voltex-agent AgentCore + MemoryStore, ed25519-signed schedules (every device, or a sample)";

/// Runs `scenario` over `series`: every virtual battery runs the real agent core.
///
/// # Errors
/// [`SimError`] if the data does not cover the run or the platform fails to plan.
pub fn run(
    scenario: &Scenario,
    series: &PriceSeries,
    progress: &mut dyn FnMut(Progress),
) -> Result<SimOutput, SimError> {
    let (world, _) = simulate(scenario, series, progress)?;
    Ok(output(scenario, &world))
}

/// Runs the DES to the end and returns the final world (for tests and custom reports).
///
/// # Errors
/// As [`run`].
pub fn simulate<'a>(
    scenario: &Scenario,
    series: &'a PriceSeries,
    progress: &mut dyn FnMut(Progress),
) -> Result<(World<'a>, u64), SimError> {
    let mut world = World::new(scenario, series)?;
    let mut sched: Scheduler<Event> = Scheduler::new(world.start_ns());
    world.seed_events(&mut sched);
    let days = *scenario.market.days.get_ref();
    let mut n_events = 0;
    for day in 0..days {
        let end = world.t0_ns() + i64::from(day + 1) * 86_400_000_000_000 - 1;
        n_events += run_until(&mut world, &mut sched, end).n_events;
        if let Some(err) = world.take_error() {
            return Err(err);
        }
        // The day's roll-out left the queue's slab sized for every device's messages in
        // flight at once; the world keeps no event handles, so give it back.
        sched.compact_queue();
        progress(Progress {
            days_done: day + 1,
            days_total: days,
            n_events,
        });
    }
    Ok((world, n_events))
}

fn output(scenario: &Scenario, world: &World<'_>) -> SimOutput {
    let scale = world.money_scale();
    let money = world.money();
    let pnl = Pnl {
        market_eur: to_eur(money.market, scale),
        intraday_eur: to_eur(money.intraday, scale),
        imbalance_eur: to_eur(money.imbalance, scale),
        wear_eur: to_eur(money.wear, scale),
        profit_eur: to_eur(money.profit(), scale),
    };
    let rows = world.rows();
    let interval_s = scenario.interval_s();
    let mwh = |j: i64| j as f64 / J_PER_MWH as f64;
    let energy = Energy {
        committed_net_mwh: mwh(rows.iter().map(|r| r.committed_w * interval_s).sum()),
        delivered_net_mwh: mwh(rows.iter().map(|r| r.delivered_j).sum()),
        throughput_mwh: mwh(rows.iter().map(|r| r.throughput_j).sum()),
        imbalance_abs_mwh: mwh(rows
            .iter()
            .map(|r| (r.delivered_j - r.committed_w * interval_s).abs())
            .sum()),
        intraday_closed_mwh: mwh(rows.iter().map(|r| r.closed_w.abs() * interval_s).sum()),
    };
    let intervals_csv = csv(rows);
    let mut summary = Summary {
        scenario: scenario.name.clone(),
        seed: scenario.seed,
        strategy: format!("{:?}", scenario.strategy.kind),
        bidding: match scenario.strategy.bidding {
            Bidding::PriceTaker => "price_taker",
            Bidding::Auction => "auction",
            Bidding::Family => "family",
        }
        .to_string(),
        max_position_mw: scenario
            .strategy
            .max_position_mw
            .as_ref()
            .map(|mw| *mw.get_ref()),
        intraday_spread_eur_per_mwh: scenario
            .market
            .intraday_spread_eur_per_mwh
            .as_ref()
            .map(|spread| *spread.get_ref()),
        device_logic: DEVICE_LOGIC.to_string(),
        n_devices: world.n_devices(),
        n_intervals: rows.len(),
        pnl,
        energy,
        counters: world.counters().clone(),
        result_hash: String::new(),
    };
    let mut hasher = blake3::Hasher::new();
    hasher.update(intervals_csv.as_bytes());
    hasher.update(
        serde_json::to_string(&summary)
            .unwrap_or_default()
            .as_bytes(),
    );
    summary.result_hash = hasher.finalize().to_hex().to_string();
    // Cumulative profit after each interval, EUR (exact sums; f64 only for drawing).
    let mut profit_m = 0_i128;
    let cumulative_profit_eur: Vec<f64> = world
        .money_by_interval()
        .map(|money| {
            profit_m += money.profit();
            to_eur(profit_m, scale).to_f64().unwrap_or(0.0)
        })
        .collect();
    let report_html = crate::report::report_html(
        &summary,
        rows,
        &crate::report::Series {
            interval_s,
            fleet_capacity_wh: world.fleet_capacity_wh(),
            cumulative_profit_eur: &cumulative_profit_eur,
        },
    );
    SimOutput {
        summary,
        intervals_csv,
        report_html,
    }
}
