//! `voltex backtest`: day-by-day battery backtest over the test period of a price file.
//!
//! For every day of the test period (the last `--test-days` days, 728 by default), each
//! strategy sees only what it may see before the auction, plans the day with the LP
//! (`voltex_engine::optimise`), turns the plan into bid curves (`voltex_engine::bidding`:
//! planned quantities limited at the plan's round-trip value of stored energy by default,
//! `--marginal-limits` for the LP's per-period marginal value, `--price-taking` for the
//! plain quantities, `--family-bids` for the whole day as one linked block family,
//! accepted or refused whole: `bidding::day_ahead_family`; with `--alternatives N`, N
//! alternative day schedules in one exclusive group, of which at most one is accepted:
//! the plan and plans on the forecast plus the forecaster's N − 1 latest daily errors),
//! and bids them into the
//! day-ahead call auction
//! (`voltex_market::auction`) against the real price. The battery is a price-taker: a
//! counterparty bids "buy anything" and "sell anything" at the real price (rounded to the
//! tick for the auction), so the auction accepts exactly the steps in the money at the
//! real price. Accepted quantities from independent per-period curves may be infeasible
//! for the SoC path when real prices differ from the forecast: the battery delivers what
//! its physics allows and the rest is settled as imbalance at the real price
//! (`voltex_engine::commit::settle`, optional penalty `--imbalance-penalty`). With
//! `--intraday-spread` the platform instead trades what it cannot deliver back on the
//! continuous intraday book before delivery (`voltex_engine::bidding::intraday`: a
//! synthetic maker quoting the real price ± half the spread, `--intraday-depth-mw` per
//! side), paying the spread rather than the imbalance. Money is exact (`Decimal`): the
//! exact real price from the file times whole-W energy.
//!
//! Strategies (one table row each):
//! - perfect foresight: the same daily pipeline planned on the true prices (the bound
//!   every forecast-driven strategy here is measured against);
//! - perfect foresight, rolling 48 h: the LP on true prices looking one day further
//!   ahead (a looser bound, executed directly, no bidding);
//! - LEAR-forecast LP and naive-forecast LP;
//! - rule-based: fixed charge and discharge hours from the mean daily profile of the
//!   data *before* the test period, committed as the battery can deliver them from the
//!   day's SoC and executed directly;
//! - no battery.
//!
//! Each daily plan ends the day with at least `--terminal-soc` of capacity stored (50 %
//! by default), clamped to what is reachable, so every day is a closed optimisation.
//! With `--terminal-value` it instead values what is left at the end of the day at what
//! it would sell for at the day's mean price (`η_d · mean − wear` per MWh stored; the
//! forecast's mean for forecast strategies, the true mean for perfect foresight), so
//! a day may end emptier or fuller when the prices say so. With `--horizon-days N` each
//! day is planned ahead of `N − 1` repeats of its own prices (the persistence forecast
//! of the days after it; `optimise::plan_day_with_continuation`) and only the day itself
//! is bid, so the energy held at midnight is valued by the next day's plan; the floor or
//! value then applies at the end of the horizon.

// The binary may read the wall clock: it times the stages it reports.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use voltex_engine::bidding::{
    BidConfig, FamilyOwner, HeadroomSteps, IntradayConfig, PlannedLimits, ReplayIntraday,
    ReplayMarket, day_ahead_curves, day_ahead_families, price_taking_curves, scenario_with_error,
    stored_energy_value_eur_per_mwh,
};
use voltex_engine::commit::settle::{SettleConfig, Settlement, execute_and_settle};
use voltex_engine::forecast::{Forecaster, LearEnsemble, NaiveForecaster};
use voltex_engine::optimise::rule::DailyRule;
use voltex_engine::optimise::{
    LpBackend, MAX_CONTINUATION_DAYS, PlanConfig, RollingHorizon, TerminalSoc,
    plan_day_with_continuation, plan_rolling,
};
use voltex_market::auction::AuctionConfig;
use voltex_market::battery::BatterySpec;
use voltex_market::block::{EXCLUSIVE_GROUP_FAMILIES_MAX, ExclusiveGroupId};
use voltex_market::series::{PriceSeries, STANDARD_TEST_DAYS, SeriesLayout};
use voltex_market::{AccountId, MarketRules};

/// Arguments of `voltex backtest`.
#[derive(Args, Debug)]
pub struct BacktestArgs {
    /// Price file (CSV: timestamp, price, exogenous columns), e.g. ../shared/data/DE.csv.
    #[arg(long)]
    data: PathBuf,
    /// Battery power/energy, e.g. 1MW/2MWh (units W, kW, MW and Wh, kWh, MWh).
    #[arg(long, default_value = "1MW/2MWh")]
    battery: String,
    /// Round-trip efficiency in (0, 1]; split evenly between charge and discharge.
    #[arg(long, default_value = "0.9")]
    rte: f64,
    /// Wear cost, EUR per MWh of throughput (charge plus discharge).
    #[arg(long, default_value = "2")]
    wear: Decimal,
    /// Number of test days at the end of the file.
    #[arg(long, default_value_t = STANDARD_TEST_DAYS)]
    test_days: usize,
    /// End-of-day SoC floor as a fraction of capacity.
    #[arg(long, default_value = "0.5")]
    terminal_soc: f64,
    /// Instead of the --terminal-soc floor, value the energy left at the end of each
    /// day at `η_d · mean price − wear` per MWh (the mean of the prices planned on).
    #[arg(long, conflicts_with = "terminal_soc")]
    terminal_value: bool,
    /// Plan each day ahead of N − 1 repeats of its own prices (the forecast's, or the
    /// real ones for perfect foresight) and bid only the day: what is stored at midnight
    /// is then valued by the next day's plan. 1 plans the day alone.
    #[arg(long, default_value_t = 1, value_parser = parse_horizon_days)]
    horizon_days: usize,
    /// Extra cost per MWh of imbalance (undeliverable accepted energy), EUR/MWh.
    #[arg(long, default_value = "0")]
    imbalance_penalty: Decimal,
    /// Also bid unplanned headroom at this spread beyond the marginal value (EUR/MWh).
    #[arg(long)]
    headroom_spread: Option<f64>,
    /// Bid the plan's quantities price-taking (at the price limits) instead of at the
    /// marginal-value limits (for comparison).
    #[arg(long)]
    price_taking: bool,
    /// Put the planned steps' limits at the LP's marginal value of each period instead of
    /// the plan's round-trip value of stored energy (see `PlannedLimits`).
    #[arg(long)]
    marginal_limits: bool,
    /// Bid each day's plan as one linked block family instead of hourly curves: its
    /// charging as a buy block and its discharging as a sell block, accepted together
    /// or not at all, priced at the value of stored energy (`η_d · mean price − wear`
    /// per MWh), so the day clears only where its cash plus the value of the energy it
    /// leaves stored is not negative at the real prices.
    #[arg(long, conflicts_with_all = ["price_taking", "marginal_limits", "headroom_spread"])]
    family_bids: bool,
    /// With `--family-bids`: offer N alternative day schedules as one exclusive group of
    /// families, of which the auction accepts at most one (the most surplus at the real
    /// prices): the plan on the forecast, and plans on the forecast plus each of the
    /// N − 1 latest days' forecast errors (known before the auction). 1 offers the plan
    /// alone.
    #[arg(long, default_value_t = 1, requires = "family_bids", value_parser = parse_alternatives)]
    alternatives: usize,
    /// Read the LEAR forecasts of the test period from this file if it exists, else
    /// compute them and write them there (one line per day, comma-separated EUR/MWh).
    #[arg(long)]
    forecast_cache: Option<PathBuf>,
    /// Skip the LEAR strategy (fast runs without its daily recalibration).
    #[arg(long)]
    no_lear: bool,
    /// Close what an award cannot deliver on the intraday book, against a maker quoting
    /// the real price ± half this spread (EUR/MWh; half a multiple of 0.01).
    #[arg(long)]
    intraday_spread: Option<Decimal>,
    /// The intraday maker's depth per side and hour, MW (whole 0.1 MW lots; default the
    /// largest order, 999 MW).
    #[arg(long, requires = "intraday_spread")]
    intraday_depth_mw: Option<Decimal>,
    /// Also write one CSV row per test day to this file: the date and, per strategy,
    /// the day's profit (EUR) and end-of-day SoC (MWh), to see where a strategy gains or
    /// loses against perfect foresight.
    #[arg(long)]
    daily_csv: Option<PathBuf>,
}

/// Parses `--horizon-days`: 1 up to a week.
fn parse_horizon_days(text: &str) -> std::result::Result<usize, String> {
    let days: usize = text
        .parse()
        .map_err(|_| format!("expected a whole number of days, got {text:?}"))?;
    if (1..=MAX_CONTINUATION_DAYS + 1).contains(&days) {
        Ok(days)
    } else {
        Err(format!(
            "must be 1 to {} days, got {days}",
            MAX_CONTINUATION_DAYS + 1
        ))
    }
}

/// Parses `--alternatives`: 1 up to an exclusive group's limit.
pub(crate) fn parse_alternatives(text: &str) -> std::result::Result<usize, String> {
    let n: usize = text
        .parse()
        .map_err(|_| format!("expected a whole number of schedules, got {text:?}"))?;
    if (1..=EXCLUSIVE_GROUP_FAMILIES_MAX).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "must be 1 to {EXCLUSIVE_GROUP_FAMILIES_MAX} schedules, got {n}"
        ))
    }
}

/// Parses "1MW/2MWh" into (power W, energy Wh), exactly.
fn parse_battery(text: &str) -> Result<(i64, i64)> {
    let (power, energy) = text
        .split_once('/')
        .ok_or_else(|| anyhow!("--battery {text:?}: expected POWER/ENERGY"))?;
    let parse = |part: &str, units: &[(&str, i64)]| -> Result<i64> {
        let part = part.trim();
        for (suffix, scale) in units {
            if let Some(number) = part.strip_suffix(suffix) {
                let value: Decimal = number
                    .trim()
                    .parse()
                    .with_context(|| format!("--battery {text:?}: {number:?} is not a number"))?;
                let scaled = value * Decimal::from(*scale);
                if !scaled.fract().is_zero() || scaled <= Decimal::ZERO {
                    bail!("--battery {text:?}: {part} is not a positive whole number of W/Wh");
                }
                return scaled
                    .to_i64()
                    .ok_or_else(|| anyhow!("--battery {text:?}: too large"));
            }
        }
        bail!("--battery {text:?}: {part:?} has no known unit")
    };
    let power_w = parse(power, &[("kW", 1_000), ("MW", 1_000_000), ("W", 1)])?;
    let energy_wh = parse(energy, &[("kWh", 1_000), ("MWh", 1_000_000), ("Wh", 1)])?;
    Ok((power_w, energy_wh))
}

/// Accumulated results of one strategy.
#[derive(Default)]
struct Tally {
    profit_eur: Decimal,
    discharged_mwh: Decimal,
    imbalance_mwh: Decimal,
    /// Energy closed on the intraday book, MWh.
    closed_mwh: Decimal,
    soc_wh: f64,
    plan_errors: usize,
}

impl Tally {
    fn add(&mut self, settlement: &Settlement) {
        self.profit_eur += settlement.profit_eur;
        self.discharged_mwh += settlement.discharged_mwh;
        self.imbalance_mwh += settlement.imbalance_mwh;
        self.soc_wh = settlement.end_soc_wh;
    }
}

/// Everything a daily bidding strategy needs besides its forecast.
struct DayContext<'a> {
    spec: &'a BatterySpec,
    market: ReplayMarket,
    bid_config: BidConfig,
    settle: SettleConfig,
    terminal_wh: f64,
    /// Value the end-of-day energy (`--terminal-value`) instead of the floor.
    terminal_value: bool,
    /// Repeats of the day planned after it (`--horizon-days` − 1).
    continuation_days: usize,
    price_taking: bool,
    /// Bid the day as one linked block family (`--family-bids`).
    family_bids: bool,
    intraday: Option<ReplayIntraday>,
}

/// One strategy's day: the settlement of what was delivered, and the intraday
/// close-out's energy (MWh) and cash beyond the replayed prices (EUR, in `profit_eur`).
struct Day {
    settlement: Settlement,
    closed_mwh: Decimal,
}

const BATTERY: AccountId = AccountId(1);
const COUNTERPARTY: AccountId = AccountId(2);

/// How a strategy's plan becomes bids.
struct BidStyle {
    headroom: Option<HeadroomSteps>,
    planned_limits: PlannedLimits,
    price_taking: bool,
    /// See `DayContext::family_bids`.
    family_bids: bool,
    /// See `DayContext::terminal_value`.
    terminal_value: bool,
    /// See `DayContext::continuation_days`.
    continuation_days: usize,
}

impl<'a> DayContext<'a> {
    /// A day's context for `spec` under the default day-ahead rules, periods of
    /// `period_s`, imbalance priced at the price plus `imbalance_penalty` (EUR/MWh),
    /// bids in `style`, each day ending with at least `terminal_wh` stored, and an
    /// optional intraday close-out.
    fn new(
        spec: &'a BatterySpec,
        period_s: i64,
        imbalance_penalty: Decimal,
        style: BidStyle,
        terminal_wh: f64,
        intraday: Option<ReplayIntraday>,
    ) -> Result<DayContext<'a>> {
        let rules = MarketRules::day_ahead_default();
        Ok(DayContext {
            spec,
            market: ReplayMarket::new(
                BATTERY,
                COUNTERPARTY,
                AuctionConfig::with_rules(rules.clone()),
            )?,
            bid_config: BidConfig {
                rules,
                period_s,
                headroom: style.headroom,
                planned_limits: style.planned_limits,
                imbalance_penalty_eur_per_mwh: imbalance_penalty.to_f64().unwrap_or(0.0),
            },
            settle: SettleConfig {
                period_s,
                imbalance_penalty_eur_per_mwh: imbalance_penalty,
            },
            terminal_wh,
            terminal_value: style.terminal_value,
            continuation_days: style.continuation_days,
            price_taking: style.price_taking,
            family_bids: style.family_bids,
            intraday,
        })
    }

    /// Plans on `forecast`, bids, clears against `real` and settles; returns the
    /// settlement, or `None` (idle day) if the plan or the bids failed. With family bids,
    /// the plans on each of `alternatives` (other price scenarios of the day) are offered
    /// beside it in one exclusive group; the main plan is listed first and every plan is
    /// valued with the main forecast's value of stored energy, so the surpluses the
    /// auction compares are the same measure.
    fn run_day(
        &mut self,
        soc_wh: f64,
        forecast: &[f64],
        alternatives: &[Vec<f64>],
        real: &[Decimal],
    ) -> Result<Option<Day>> {
        let ppd = real.len();
        let lambda = stored_energy_value_eur_per_mwh(self.spec, forecast);
        let terminal = if self.terminal_value {
            TerminalSoc::ValueEurPerMwh(lambda)
        } else {
            // The end-of-day floor, clamped to what full-power charging can reach in a
            // day (a longer horizon can reach at least as much).
            let mut reachable = soc_wh;
            for _ in 0..ppd {
                reachable = self.spec.soc_after_wh(
                    reachable,
                    -self.spec.max_charge_w,
                    self.settle.period_s,
                );
            }
            TerminalSoc::AtLeastWh(
                self.terminal_wh
                    .min(reachable - 1.0)
                    .min(self.spec.soc_max_wh as f64),
            )
        };
        let config = PlanConfig {
            period_s: self.settle.period_s,
            terminal,
            backend: LpBackend::Clarabel,
        };
        let plan = match plan_day_with_continuation(
            self.spec,
            soc_wh,
            forecast,
            self.continuation_days,
            &config,
        ) {
            Ok(plan) => plan,
            Err(error) => {
                tracing::warn!(%error, "plan failed: battery idle for the day");
                return Ok(None);
            }
        };
        let accepted_w = if self.family_bids {
            // The day's value of stored energy prices every block (see `day_ahead_family`).
            let families = day_ahead_families(
                self.spec,
                &plan,
                alternatives,
                |scenario| {
                    plan_day_with_continuation(
                        self.spec,
                        soc_wh,
                        scenario,
                        self.continuation_days,
                        &config,
                    )
                },
                lambda,
                FamilyOwner {
                    participant: BATTERY,
                    group: ExclusiveGroupId(0),
                    auction: self.market.config(),
                },
            )?
            .families;
            self.market.clear_families(&families, real)?
        } else {
            let curves = if self.price_taking {
                price_taking_curves(&plan, &self.bid_config)
            } else {
                day_ahead_curves(self.spec, &plan, forecast, &self.bid_config)?
            };
            self.market.clear_day(&curves, real)?
        };
        let period_s = self.settle.period_s;
        let (position_w, closed_mwh, intraday_eur) = match self.intraday.as_mut() {
            None => (accepted_w, Decimal::ZERO, Decimal::ZERO),
            Some(intraday) => {
                let out = intraday.close_out_day(self.spec, soc_wh, &accepted_w, real, period_s)?;
                let closed_mwh = out.traded_mwh(period_s);
                let cash = out.cash_vs_replay_eur(real, period_s);
                (out.position_w, closed_mwh, cash)
            }
        };
        let mut settlement =
            execute_and_settle(self.spec, soc_wh, &position_w, real, &self.settle)?;
        // The market cash is the position's at the real prices plus what the closing
        // trades paid beyond them (the spread), so profit stays market + imbalance − wear.
        settlement.market_eur += intraday_eur;
        settlement.profit_eur += intraday_eur;
        Ok(Some(Day {
            settlement,
            closed_mwh,
        }))
    }
}

/// Runs the backtest and prints the table.
pub fn run(args: &BacktestArgs) -> Result<()> {
    let started = Instant::now();
    let text = std::fs::read_to_string(&args.data)
        .with_context(|| format!("reading {}", args.data.display()))?;
    let name = args
        .data
        .file_name()
        .map_or("data".into(), |n| n.to_string_lossy().to_string());
    let series = PriceSeries::parse_csv(&name, &text, &SeriesLayout::default())?;
    let (power_w, capacity_wh) = parse_battery(&args.battery)?;
    if !(args.rte > 0.0 && args.rte <= 1.0) {
        bail!("--rte must be in (0, 1], got {}", args.rte);
    }
    if !(0.0..=1.0).contains(&args.terminal_soc) {
        bail!(
            "--terminal-soc must be in [0, 1], got {}",
            args.terminal_soc
        );
    }
    let spec = BatterySpec::symmetric(power_w, capacity_wh, args.rte, args.wear);
    spec.validate()?;
    let ppd = series.periods_per_day();
    if ppd == 0 || 86_400 % ppd != 0 {
        bail!("{name}: {ppd} periods per day do not divide a day into whole seconds");
    }
    let period_s = (86_400 / ppd) as i64;
    let first = series
        .test_period_start_day(args.test_days)
        .ok_or_else(|| anyhow!("{name}: not longer than {} test days", args.test_days))?;
    let days = first..series.n_days();
    let n_days = days.len();

    let mut ctx = DayContext::new(
        &spec,
        period_s,
        args.imbalance_penalty,
        BidStyle {
            headroom: args.headroom_spread.map(|s| HeadroomSteps {
                spread_eur_per_mwh: s,
            }),
            planned_limits: if args.marginal_limits {
                PlannedLimits::Marginal
            } else {
                PlannedLimits::RoundTrip
            },
            price_taking: args.price_taking,
            family_bids: args.family_bids,
            terminal_value: args.terminal_value,
            continuation_days: args.horizon_days - 1,
        },
        capacity_wh as f64 * args.terminal_soc,
        match args.intraday_spread {
            None => None,
            Some(spread) => Some(intraday_market(spread, args.intraday_depth_mw)?),
        },
    )?;
    let start_soc = ctx.terminal_wh;

    // Forecasts first (the LEAR ensemble recalibrates daily), timed on their own.
    let forecast_started = Instant::now();
    let mut naive = NaiveForecaster;
    let mut naive_days = Vec::with_capacity(n_days);
    for day in days.clone() {
        naive_days.push(naive.forecast_day(&series, day)?);
    }
    let mut lear_days = Vec::new();
    if !args.no_lear {
        lear_days = match &args.forecast_cache {
            Some(path) if path.exists() => read_cache(path, n_days, ppd)?,
            _ => {
                let mut lear = LearEnsemble::standard()?;
                for day in days.clone() {
                    lear_days.push(lear.forecast_day(&series, day)?);
                    if (day - first + 1) % 100 == 0 {
                        tracing::info!(done = day - first + 1, of = n_days, "LEAR forecasts");
                    }
                }
                if let Some(path) = &args.forecast_cache {
                    write_cache(path, &lear_days)?;
                }
                lear_days
            }
        };
    }
    let forecast_s = forecast_started.elapsed().as_secs_f64();

    // Rule-based hours from the mean daily profile before the test period.
    let mut profile = vec![0.0; ppd];
    for day in 0..first {
        for (p, x) in profile.iter_mut().zip(series.day_prices_f64(day)) {
            *p += x / first as f64;
        }
    }
    let rule = DailyRule::from_profile(&spec, &profile, period_s);

    let strategies = ["perfect foresight", "LEAR-forecast LP", "naive-forecast LP"];
    let mut tallies: Vec<Tally> = strategies
        .iter()
        .map(|_| Tally {
            soc_wh: start_soc,
            ..Tally::default()
        })
        .collect();
    let mut rule_tally = Tally {
        soc_wh: start_soc,
        ..Tally::default()
    };
    let mut daily_csv = String::new();
    if args.daily_csv.is_some() {
        daily_csv.push_str("date");
        for label in ["pf", "lear", "naive", "rule"] {
            daily_csv.push_str(&format!(",{label}_profit_eur,{label}_end_soc_mwh"));
        }
        daily_csv.push('\n');
    }
    let plan_started = Instant::now();
    for (i, day) in days.clone().enumerate() {
        let real = series.day_prices(day);
        let truth = series.day_prices_f64(day);
        let forecasts: [Option<&[f64]>; 3] = [
            Some(truth),
            lear_days.get(i).map(Vec::as_slice),
            Some(naive_days[i].as_slice()),
        ];
        // Each strategy's profit of the day (zero when skipped or idle).
        let mut day_profits = [Decimal::ZERO; 3];
        for (strategy, ((tally, forecast), day_profit)) in tallies
            .iter_mut()
            .zip(forecasts)
            .zip(day_profits.iter_mut())
            .enumerate()
        {
            let Some(forecast) = forecast else { continue };
            // The forecast plus each of the latest days' errors of the same forecaster.
            let alternatives: Vec<Vec<f64>> = (1..args.alternatives.min(i + 1))
                .map(|back| {
                    let (past, past_day) = (i - back, day - back);
                    let past_forecast: &[f64] = match strategy {
                        0 => series.day_prices_f64(past_day),
                        1 => &lear_days[past],
                        _ => &naive_days[past],
                    };
                    scenario_with_error(forecast, series.day_prices_f64(past_day), past_forecast)
                })
                .collect();
            match ctx.run_day(tally.soc_wh, forecast, &alternatives, real)? {
                Some(day) => {
                    *day_profit = day.settlement.profit_eur;
                    tally.add(&day.settlement);
                    tally.closed_mwh += day.closed_mwh;
                }
                None => tally.plan_errors += 1,
            }
        }
        // The rule commits only what its battery can deliver from today's SoC.
        let rule_day = rule.day_commitment_w(&spec, rule_tally.soc_wh, ppd, period_s);
        let settlement =
            execute_and_settle(&spec, rule_tally.soc_wh, &rule_day, real, &ctx.settle)?;
        rule_tally.add(&settlement);
        if args.daily_csv.is_some() {
            daily_csv.push_str(&series.date(day).to_string());
            let days_end: [(Decimal, f64); 4] = [
                (day_profits[0], tallies[0].soc_wh),
                (day_profits[1], tallies[1].soc_wh),
                (day_profits[2], tallies[2].soc_wh),
                (settlement.profit_eur, rule_tally.soc_wh),
            ];
            for (profit, soc_wh) in days_end {
                daily_csv.push_str(&format!(",{},{:.4}", profit.round_dp(2), soc_wh / 1e6));
            }
            daily_csv.push('\n');
        }
    }
    if let Some(path) = &args.daily_csv {
        std::fs::write(path, &daily_csv)
            .with_context(|| format!("writing daily CSV {}", path.display()))?;
    }
    let plan_s = plan_started.elapsed().as_secs_f64();

    // The looser bound: rolling 48 h look-ahead on true prices, executed directly.
    let rolling_started = Instant::now();
    let all_truth = &series.prices_f64()[first * ppd..];
    let all_real = &series.prices()[first * ppd..];
    let rolling_config = PlanConfig {
        period_s,
        terminal: TerminalSoc::Free,
        backend: LpBackend::Clarabel,
    };
    let horizon = RollingHorizon {
        window: 2 * ppd,
        step: ppd,
    };
    let rolling = plan_rolling(&spec, start_soc, all_truth, horizon, &rolling_config)?;
    let mut rolling_tally = Tally::default();
    rolling_tally.add(&execute_and_settle(
        &spec,
        start_soc,
        &rolling.net_w,
        all_real,
        &ctx.settle,
    )?);
    let rolling_s = rolling_started.elapsed().as_secs_f64();

    let usable_mwh = Decimal::from(spec.soc_max_wh - spec.soc_min_wh) / Decimal::from(1_000_000);
    let pf = tallies[0].profit_eur;
    let naive_profit = tallies[2].profit_eur;
    println!(
        "backtest {name}: {n_days} days ({} .. {}), {ppd} periods/day, battery {} rte {} \
         wear {} EUR/MWh, {}{}, LP clarabel, bids {}",
        series.date(first),
        series.date(series.n_days() - 1),
        args.battery,
        args.rte,
        args.wear,
        if args.terminal_value {
            "end-of-day energy valued at eta_d x mean price - wear".to_string()
        } else {
            format!("end-of-day SoC >= {:.0}%", args.terminal_soc * 100.0)
        },
        if args.horizon_days > 1 {
            format!(
                " (after a horizon of {} days, the day's prices repeated)",
                args.horizon_days
            )
        } else {
            String::new()
        },
        if args.family_bids && args.alternatives > 1 {
            format!(
                "as an exclusive group of up to {} linked block families per day (the plan, and plans on the forecast plus recent days' errors)",
                args.alternatives
            )
        } else if args.family_bids {
            "as one linked block family per day".to_string()
        } else if args.price_taking {
            "price-taking".to_string()
        } else if args.marginal_limits {
            "at marginal value".to_string()
        } else {
            "at round-trip value".to_string()
        }
    );
    println!(
        "| {:<32} | {:>14} | {:>12} | {:>9} | {:>11} | {:>11} | {:>13} |",
        "strategy",
        "total EUR",
        "EUR/day",
        "% of PF",
        "full cycles",
        "vs naive LP",
        "imbalance MWh"
    );
    println!(
        "|{:-<34}|{:->16}|{:->14}|{:->11}|{:->13}|{:->13}|{:->15}|",
        "", "", "", "", "", "", ""
    );
    let mut rows: Vec<(&str, Option<&Tally>)> = vec![
        (strategies[0], Some(&tallies[0])),
        ("perfect foresight, rolling 48 h", Some(&rolling_tally)),
        (strategies[1], (!args.no_lear).then_some(&tallies[1])),
        (strategies[2], Some(&tallies[2])),
        ("rule-based daily schedule", Some(&rule_tally)),
    ];
    let none = Tally::default();
    rows.push(("no battery", Some(&none)));
    for (label, tally) in rows {
        let Some(t) = tally else {
            println!("| {label:<32} | {:>14} | (skipped: --no-lear)", "");
            continue;
        };
        let total = t.profit_eur.round_dp(2);
        let per_day = (t.profit_eur / Decimal::from(n_days as u64)).round_dp(2);
        let share = percent(t.profit_eur, pf);
        let vs_naive = if naive_profit.is_zero() {
            "n/a".to_string()
        } else {
            format!(
                "{:+.1}%",
                ratio(t.profit_eur - naive_profit, naive_profit.abs()) * 100.0
            )
        };
        let cycles = if usable_mwh.is_zero() {
            Decimal::ZERO
        } else {
            t.discharged_mwh / usable_mwh
        };
        println!(
            "| {label:<32} | {total:>14} | {per_day:>12} | {share:>9} | {:>11} | {vs_naive:>11} | {:>13} |",
            cycles.round_dp(1),
            t.imbalance_mwh.round_dp(1)
        );
    }
    if let Some(intraday) = &ctx.intraday {
        let lot_mw = Decimal::from(intraday.config().rules.lot_kw) / Decimal::from(1_000);
        println!(
            "intraday close-out (maker spread {} EUR/MWh, depth {} MW per side and hour): \
             closed {} MWh (perfect foresight), {} (LEAR-forecast LP), {} (naive-forecast LP)",
            intraday.config().spread_eur_per_mwh,
            Decimal::from(intraday.config().depth.0) * lot_mw,
            tallies[0].closed_mwh.round_dp(1),
            if args.no_lear {
                "skipped".to_string()
            } else {
                tallies[1].closed_mwh.round_dp(1).to_string()
            },
            tallies[2].closed_mwh.round_dp(1)
        );
    }
    let errors: usize = tallies.iter().map(|t| t.plan_errors).sum();
    println!(
        "timings: forecasts {forecast_s:.1} s (LEAR daily recalibration{}), plan+bid+clear+settle \
         {plan_s:.1} s, rolling PF {rolling_s:.1} s, total {:.1} s; idle days after plan errors: {errors}",
        if args.no_lear { " skipped" } else { "" },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The replayed intraday market of `--intraday-spread` and `--intraday-depth-mw`.
fn intraday_market(spread: Decimal, depth_mw: Option<Decimal>) -> Result<ReplayIntraday> {
    IntradayConfig::with_depth_mw(MarketRules::intraday_default(), spread, depth_mw)
        .and_then(|config| ReplayIntraday::new(BATTERY, COUNTERPARTY, config))
        .map_err(|e| anyhow!("--intraday-spread / --intraday-depth-mw: {e}"))
}

fn read_cache(path: &std::path::Path, n_days: usize, ppd: usize) -> Result<Vec<Vec<f64>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading forecast cache {}", path.display()))?;
    let days: Vec<Vec<f64>> = text
        .lines()
        .map(|line| line.split(',').map(|x| x.trim().parse::<f64>()).collect())
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing forecast cache {}", path.display()))?;
    if days.len() != n_days || days.iter().any(|d| d.len() != ppd) {
        bail!(
            "forecast cache {} does not match {n_days} days x {ppd} periods",
            path.display()
        );
    }
    Ok(days)
}

fn write_cache(path: &std::path::Path, days: &[Vec<f64>]) -> Result<()> {
    let text: Vec<String> = days
        .iter()
        .map(|d| {
            d.iter()
                .map(|x| format!("{x:?}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    std::fs::write(path, text.join("\n") + "\n")
        .with_context(|| format!("writing forecast cache {}", path.display()))
}

fn ratio(a: Decimal, b: Decimal) -> f64 {
    if b.is_zero() {
        0.0
    } else {
        (a / b).to_f64().unwrap_or(0.0)
    }
}

fn percent(a: Decimal, base: Decimal) -> String {
    if base <= Decimal::ZERO {
        "n/a".to_string()
    } else {
        format!("{:.1}%", ratio(a, base) * 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_of_day_energy_is_valued_at_the_mean_price_after_losses_and_wear() {
        let spec = BatterySpec::symmetric(1_000_000, 2_000_000, 0.81, Decimal::from(2));
        // η_d = 0.9: 0.9 × 40 − 2.
        let value = stored_energy_value_eur_per_mwh(&spec, &[30.0, 50.0, 40.0, 40.0]);
        assert!((value - 34.0).abs() < 1e-9, "{value}");
        // An empty day plans nothing; the value is then only the wear.
        assert_eq!(stored_energy_value_eur_per_mwh(&spec, &[]), -2.0);
    }

    #[test]
    fn horizon_days_are_one_to_a_week() {
        assert_eq!(parse_horizon_days("1"), Ok(1));
        assert_eq!(parse_horizon_days("7"), Ok(7));
        for bad in ["0", "8", "-1", "2.5", "two", ""] {
            let error = parse_horizon_days(bad).expect_err(bad);
            assert!(
                error.contains("days"),
                "{bad:?} is refused with a reason: {error}"
            );
        }
    }

    /// `voltex backtest`'s arguments alone, as clap parses them.
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: BacktestArgs,
    }

    #[test]
    fn a_terminal_value_and_a_terminal_floor_together_are_refused() {
        use clap::Parser;
        let both = Cli::try_parse_from([
            "backtest",
            "--data",
            "x.csv",
            "--terminal-value",
            "--terminal-soc",
            "0.3",
        ]);
        let error = both.err().expect("conflicting flags are refused");
        assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
        let value = Cli::try_parse_from(["backtest", "--data", "x.csv", "--terminal-value"])
            .expect("the value alone parses");
        assert!(value.args.terminal_value);
        assert_eq!(value.args.horizon_days, 1);
        let horizon = Cli::try_parse_from(["backtest", "--data", "x.csv", "--horizon-days", "9"]);
        assert!(horizon.is_err(), "a horizon past a week is refused");
    }

    #[test]
    fn alternatives_need_family_bids_and_fit_one_exclusive_group() {
        use clap::Parser;
        let alone = Cli::try_parse_from(["backtest", "--data", "x.csv", "--alternatives", "4"]);
        let error = alone
            .err()
            .expect("alternatives without families are refused");
        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        let ok = Cli::try_parse_from([
            "backtest",
            "--data",
            "x.csv",
            "--family-bids",
            "--alternatives",
            "4",
        ])
        .expect("alternatives with families parse");
        assert_eq!(ok.args.alternatives, 4);
        assert_eq!(parse_alternatives("24"), Ok(24));
        for bad in ["0", "25", "-3", "many", ""] {
            let error = parse_alternatives(bad).expect_err(bad);
            assert!(error.contains("schedules"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn battery_sizes_parse_exactly_and_reject_garbage() {
        assert_eq!(parse_battery("1MW/2MWh").unwrap(), (1_000_000, 2_000_000));
        assert_eq!(parse_battery("5kW/13.5kWh").unwrap(), (5_000, 13_500));
        assert_eq!(parse_battery("0.5MW/1MWh").unwrap(), (500_000, 1_000_000));
        assert!(parse_battery("1MW").is_err());
        assert!(parse_battery("1XW/2MWh").is_err());
        assert!(parse_battery("0.0000001MW/2MWh").is_err());
    }

    fn eur(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    #[test]
    fn intraday_terms_are_checked_with_the_flags_named() {
        let market = intraday_market(eur("1"), Some(eur("2.5"))).expect("valid terms");
        assert_eq!(market.config().depth, voltex_market::Qty(25));
        assert_eq!(
            intraday_market(eur("1"), None)
                .expect("valid")
                .config()
                .depth,
            MarketRules::intraday_default().qty_max
        );
        for (spread, depth) in [("0.01", None), ("-2", None), ("1", Some("0.05"))] {
            let error = intraday_market(eur(spread), depth.map(eur)).unwrap_err();
            assert!(
                error.to_string().contains("--intraday-"),
                "{spread} {depth:?}: {error}"
            );
        }
    }

    #[test]
    fn a_valued_day_end_keeps_energy_bought_below_its_value() {
        // 1 MW / 1 MWh, lossless, no wear, full. The day sells at 100, then 20: with no
        // floor the plan sells and ends empty (energy at the end is worth nothing);
        // valued at the mean, 60, it buys back at 20 and ends full; so it does, with no
        // floor or value, when the day is planned ahead of its repeat (for tomorrow's 100).
        let spec = BatterySpec::symmetric(1_000_000, 1_000_000, 1.0, Decimal::ZERO);
        let end_soc_wh_with = |terminal_value: bool, continuation_days: usize| {
            let style = BidStyle {
                headroom: None,
                planned_limits: PlannedLimits::RoundTrip,
                price_taking: false,
                family_bids: false,
                terminal_value,
                continuation_days,
            };
            let mut ctx =
                DayContext::new(&spec, 3_600, Decimal::ZERO, style, 0.0, None).expect("context");
            let day = ctx
                .run_day(1_000_000.0, &[100.0, 20.0], &[], &[eur("100"), eur("20")])
                .expect("day runs")
                .expect("plan succeeds");
            day.settlement.end_soc_wh
        };
        let end_soc_wh = |terminal_value: bool| end_soc_wh_with(terminal_value, 0);
        let ahead = end_soc_wh_with(false, 1);
        assert!(ahead > 999_999.0, "{ahead}");
        assert!(end_soc_wh(false) < 1.0, "{}", end_soc_wh(false));
        assert!(end_soc_wh(true) > 999_999.0, "{}", end_soc_wh(true));
    }

    #[test]
    fn a_family_bid_clears_the_day_whole_or_not_at_all() {
        // 1 MW / 1 MWh, lossless, empty, no wear, imbalance penalty 20. Forecast 10 then
        // 100: the plan buys 1 MWh and sells it; the stored energy is valued at the
        // forecast's mean, 55, so the buy block's limit is 55 and the sell block's 55.
        let spec = BatterySpec::symmetric(1_000_000, 1_000_000, 1.0, Decimal::ZERO);
        let day = |family_bids: bool, real: [&str; 2]| {
            let style = BidStyle {
                headroom: None,
                planned_limits: PlannedLimits::RoundTrip,
                price_taking: false,
                family_bids,
                terminal_value: false,
                continuation_days: 0,
            };
            let mut ctx =
                DayContext::new(&spec, 3_600, eur("20"), style, 0.0, None).expect("day context");
            ctx.run_day(0.0, &[10.0, 100.0], &[], &[eur(real[0]), eur(real[1])])
                .expect("day runs")
                .expect("plan succeeds")
                .settlement
        };
        // Real 200 then 100: hourly curves win the sale without the purchase (200 is
        // above the buy limit) and pay the imbalance; the family (surplus -145 + 45 per
        // MW) is refused whole, so nothing is traded or owed.
        let curves = day(false, ["200", "100"]);
        assert_eq!(curves.imbalance_mwh, eur("1"));
        assert_eq!(curves.profit_eur, eur("-20"));
        let family = day(true, ["200", "100"]);
        assert_eq!(family.imbalance_mwh, Decimal::ZERO);
        assert_eq!(family.profit_eur, Decimal::ZERO);
        // Real 60 then 120: the purchase is 5 above its limit, the sale 65 above its own;
        // the sale carries the purchase and the family clears whole (buy 60, sell 120).
        let family = day(true, ["60", "120"]);
        assert_eq!(family.imbalance_mwh, Decimal::ZERO);
        assert_eq!(family.profit_eur, eur("60"));
    }

    #[test]
    fn of_alternative_schedules_the_auction_takes_the_one_with_the_most_surplus() {
        // 1 MW / 1 MWh, lossless, empty, no wear. The forecast 10, 100, 50 plans to buy in
        // hour 0 and sell in hour 1; the alternative scenario 10, 50, 100 to sell in hour 2
        // instead. Both are valued at the forecast's mean (53.33). Real 10, 40, 120: the
        // plan alone clears at a surplus (43.33 - 13.34) and earns 30; offered with the
        // alternative in one exclusive group, the alternative's surplus (43.33 + 66.66)
        // is the larger and the day earns 110, still with no imbalance.
        let spec = BatterySpec::symmetric(1_000_000, 1_000_000, 1.0, Decimal::ZERO);
        let day = |alternatives: &[Vec<f64>]| {
            let style = BidStyle {
                headroom: None,
                planned_limits: PlannedLimits::RoundTrip,
                price_taking: false,
                family_bids: true,
                terminal_value: false,
                continuation_days: 0,
            };
            let mut ctx =
                DayContext::new(&spec, 3_600, eur("20"), style, 0.0, None).expect("day context");
            ctx.run_day(
                0.0,
                &[10.0, 100.0, 50.0],
                alternatives,
                &[eur("10"), eur("40"), eur("120")],
            )
            .expect("day runs")
            .expect("plan succeeds")
            .settlement
        };
        let alone = day(&[]);
        assert_eq!(alone.profit_eur, eur("30"));
        let with_alternative = day(&[vec![10.0, 50.0, 100.0]]);
        assert_eq!(with_alternative.profit_eur, eur("110"));
        assert_eq!(with_alternative.imbalance_mwh, Decimal::ZERO);
        // An alternative that plans the same schedule is not offered twice; the day is
        // the plan's.
        let same = day(&[vec![10.0, 90.0, 40.0]]);
        assert_eq!(same.profit_eur, eur("30"));
    }

    #[test]
    fn a_sale_awarded_without_its_purchase_is_closed_intraday_at_the_spread() {
        // 1 MW / 1 MWh, lossless, empty, no wear. Forecast 10 then 100: the plan buys
        // 1 MWh, then sells it. The real prices are 200 then 100: the purchase does not
        // clear (200 is above its limit) and the sale does, with nothing stored.
        let spec = BatterySpec::symmetric(1_000_000, 1_000_000, 1.0, Decimal::ZERO);
        let day = |intraday: Option<ReplayIntraday>| {
            let style = BidStyle {
                headroom: None,
                planned_limits: PlannedLimits::RoundTrip,
                price_taking: false,
                family_bids: false,
                terminal_value: false,
                continuation_days: 0,
            };
            let mut ctx = DayContext::new(&spec, 3_600, eur("20"), style, 0.0, intraday)
                .expect("day context");
            ctx.run_day(0.0, &[10.0, 100.0], &[], &[eur("200"), eur("100")])
                .expect("day runs")
                .expect("plan succeeds")
        };
        // Without intraday: 1 MWh sold for 100, none delivered: imbalance at 100 + 20.
        let alone = day(None);
        assert_eq!(alone.settlement.profit_eur, eur("-20"));
        assert_eq!(alone.settlement.imbalance_mwh, eur("1"));
        assert_eq!(alone.closed_mwh, Decimal::ZERO);
        // With it: bought back at 100 + 0.50 before delivery; only the half spread paid.
        let closed = day(Some(intraday_market(eur("1"), None).expect("valid")));
        assert_eq!(closed.settlement.profit_eur, eur("-0.5"));
        assert_eq!(closed.settlement.imbalance_mwh, Decimal::ZERO);
        assert_eq!(closed.closed_mwh, eur("1"));
    }
}
