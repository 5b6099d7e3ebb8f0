//! The battery arbitrage LP: plans charge and discharge per delivery period.
//!
//! For prices `p_t` (EUR/MWh, a forecast or the true prices), period length `Δt` and
//! wear cost `κ` the optimiser solves, with good_lp,
//!
//! ```text
//! maximise   Σ_t p_t (d_t − c_t) Δt − κ (c_t + d_t) Δt  [+ V · s_T]
//! subject to s_t = η_stand · s_{t−1} + η_c c_t Δt − d_t Δt / η_d
//!            0 ≤ c_t ≤ P_c,  0 ≤ d_t ≤ P_d,  S_min ≤ s_t ≤ S_max
//!            [s_T ≥ S_target]
//! ```
//!
//! in MW and MWh (well scaled for the solvers); the plan is rounded to whole W at the
//! boundary ([`Plan::charge_w`], [`Plan::discharge_w`], [`Plan::net_w`]).
//!
//! - [`plan_battery`]: one battery (or one aggregated group of identical batteries).
//! - [`plan_rolling`]: rolling horizon, re-planning every `step` periods over a `window`.
//! - [`plan_day_with_continuation`]: one day planned ahead of repeats of itself, so the
//!   energy held past midnight is valued by the next day's plan.
//! - [`fleet`]: batteries grouped by identical parameters and planned as aggregated units.
//! - [`rule`]: the rule-based baseline (fixed charge and discharge hours).
//!
//! Perfect foresight is simply [`plan_battery`] (or [`plan_rolling`]) on the true prices.
//!
//! # Backends
//! [`LpBackend::Microlp`] (simplex) and [`LpBackend::Clarabel`] (interior point) are pure
//! Rust, so the default build needs nothing but cargo. Clarabel also yields the duals of
//! the SoC balance rows, the marginal value of stored energy that [`crate::bidding`]
//! turns into bid prices, and scales to year-long horizons; it is the default
//! ([`LpBackend::default`]). `benches/optimise.rs` measures both side by side.
//!
//! # Invariants
//! - The measured start SoC is clamped into `[soc_min_wh, soc_max_wh]` (with a
//!   [`PlanWarning`] and a `tracing` warning when it was off by more than 1 mWh), never
//!   turned into an infeasible model.
//! - An infeasible or unbounded model is an [`OptimiseError`] naming the offending
//!   constraint; nothing here panics on solver outcomes.
//! - Rounded powers are rounded towards zero, so they never exceed the power limits.
//! - No period both charges and discharges (`charge_w[t] == 0 || discharge_w[t] == 0`):
//!   where that could pay (deeply negative prices) and the LP relaxation does it, the
//!   model is re-solved as a MILP with a binary in those periods only (see
//!   `PeriodMode`, which also says why this is exact).
//! - No I/O, no clock: the same inputs give the same plan.

pub mod fleet;
pub mod rule;

use good_lp::solvers::{DualValues, SolutionWithDual};
use good_lp::{
    Expression, ProblemVariables, ResolutionError, Solution, SolverModel, Variable, constraint,
    variable,
};
use rust_decimal::prelude::ToPrimitive;
use voltex_market::battery::{BatteryError, BatterySpec};

/// W per MW.
const W_PER_MW: f64 = 1e6;
/// Seconds per hour.
const SECONDS_PER_HOUR: f64 = 3600.0;

/// Which pure-Rust LP solver good_lp drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LpBackend {
    /// microlp: dense-ish simplex; fast on one-day horizons, no duals.
    Microlp,
    /// Clarabel: interior point; duals (marginal values), scales to long horizons.
    #[default]
    Clarabel,
}

impl LpBackend {
    /// Lower-case name, as printed in reports and benches.
    pub fn name(self) -> &'static str {
        match self {
            LpBackend::Microlp => "microlp",
            LpBackend::Clarabel => "clarabel",
        }
    }
}

/// What the plan must do with the state of charge at the end of the horizon.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TerminalSoc {
    /// No condition: the LP will empty the battery when that pays.
    Free,
    /// End with at least this much energy stored, in Wh (a hard constraint).
    AtLeastWh(f64),
    /// Value energy left in the battery at this price, EUR per MWh stored.
    ValueEurPerMwh(f64),
}

/// Settings of one optimisation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlanConfig {
    /// Length of one delivery period in seconds (900, 1800 or 3600).
    pub period_s: i64,
    /// Terminal SoC condition.
    pub terminal: TerminalSoc,
    /// LP solver.
    pub backend: LpBackend,
}

impl PlanConfig {
    /// Hourly periods, free terminal SoC, the default backend.
    pub fn hourly() -> PlanConfig {
        PlanConfig {
            period_s: 3600,
            terminal: TerminalSoc::Free,
            backend: LpBackend::default(),
        }
    }
}

/// Something the optimiser adjusted rather than fail on.
#[derive(Clone, Debug, PartialEq)]
pub enum PlanWarning {
    /// The measured start SoC was outside `[soc_min_wh, soc_max_wh]` and was clamped.
    StartSocClamped {
        /// The SoC passed in, Wh.
        measured_wh: f64,
        /// The SoC the plan starts from, Wh.
        used_wh: f64,
    },
}

/// A charge/discharge plan over a horizon.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Charging power per period, W, rounded towards zero (`>= 0`).
    pub charge_w: Vec<i64>,
    /// Discharging power per period, W, rounded towards zero (`>= 0`).
    pub discharge_w: Vec<i64>,
    /// Net grid power per period, W: `discharge_w − charge_w` (positive = sell).
    pub net_w: Vec<i64>,
    /// LP state of charge at the end of each period, Wh (unrounded).
    pub soc_wh: Vec<f64>,
    /// The start SoC the plan used (after clamping), Wh.
    pub start_soc_wh: f64,
    /// Objective value at the prices planned with, EUR (an f64 estimate; settlement is
    /// done elsewhere in exact arithmetic).
    pub expected_profit_eur: f64,
    /// Marginal value of one more MWh stored at the end of each period (dual of the SoC
    /// balance), EUR/MWh. `Some` with the Clarabel backend, `None` with microlp.
    pub marginal_value_eur_per_mwh: Option<Vec<f64>>,
    /// Adjustments made instead of failing.
    pub warnings: Vec<PlanWarning>,
}

impl Plan {
    /// Number of periods planned.
    pub fn len(&self) -> usize {
        self.net_w.len()
    }

    /// True if the plan covers no period.
    pub fn is_empty(&self) -> bool {
        self.net_w.is_empty()
    }
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptimiseError {
    /// The battery spec breaks an invariant.
    #[error(transparent)]
    InvalidSpec(#[from] BatteryError),
    /// No periods to plan.
    #[error("empty horizon: no prices to plan against")]
    EmptyHorizon,
    /// A price is NaN or infinite.
    #[error("price of period {period} is not finite")]
    NonFinitePrice {
        /// Index of the offending period.
        period: usize,
    },
    /// A configuration value is out of range.
    #[error("invalid plan config: {0}")]
    InvalidConfig(&'static str),
    /// The model has no feasible point; `constraint` names the constraint that cannot be
    /// met.
    #[error("infeasible model: {constraint}")]
    Infeasible {
        /// The offending constraint, e.g. `terminal_soc >= 1900000 Wh`.
        constraint: String,
    },
    /// The objective can grow without bound; `detail` says what is unbounded.
    #[error("unbounded model ({backend}): {detail}")]
    Unbounded {
        /// The solver that reported it.
        backend: &'static str,
        /// What is unbounded.
        detail: String,
    },
    /// The solver failed for another reason (numerical trouble, iteration limit).
    #[error("solver {backend} failed: {message}")]
    Solver {
        /// The solver.
        backend: &'static str,
        /// Its message.
        message: String,
    },
}

/// A solved LP: variable values and, when the backend has them, row duals.
pub(crate) struct LpSolution {
    pub(crate) values: Vec<f64>,
    pub(crate) duals: Option<Vec<f64>>,
}

/// Why an LP could not be solved, before the caller names the offending constraint.
#[derive(Debug)]
pub(crate) enum LpFailure {
    Infeasible,
    Unbounded,
    Other(String),
}

/// Solves `maximise objective` subject to `rows`, returning the values of `read` and
/// the duals of `rows` (Clarabel only). Maps every solver outcome to a typed result.
pub(crate) fn solve_lp(
    backend: LpBackend,
    vars: ProblemVariables,
    objective: Expression,
    rows: Vec<good_lp::Constraint>,
    read: &[Variable],
) -> Result<LpSolution, LpFailure> {
    let problem = vars.maximise(objective);
    match backend {
        LpBackend::Microlp => {
            let mut model = problem.using(good_lp::microlp);
            for row in rows {
                model.add_constraint(row);
            }
            let solution = model.solve().map_err(map_resolution)?;
            let values = read.iter().map(|v| solution.value(*v)).collect();
            Ok(LpSolution {
                values,
                duals: None,
            })
        }
        LpBackend::Clarabel => {
            let mut model = problem.using(good_lp::clarabel);
            let refs: Vec<_> = rows
                .into_iter()
                .map(|row| model.add_constraint(row))
                .collect();
            let mut solution = model.solve().map_err(map_resolution)?;
            // good_lp reports Clarabel's (almost) dual infeasibility as success: a dual
            // infeasible LP is primal unbounded.
            let status = solution.inner().status;
            if matches!(
                status,
                clarabel::solver::SolverStatus::DualInfeasible
                    | clarabel::solver::SolverStatus::AlmostDualInfeasible
            ) {
                return Err(LpFailure::Unbounded);
            }
            let values: Vec<f64> = read.iter().map(|v| solution.value(*v)).collect();
            if values.iter().any(|v| !v.is_finite()) {
                return Err(LpFailure::Other("non-finite solution".to_string()));
            }
            let dual = solution.compute_dual();
            let duals = refs.iter().map(|r| dual.dual(r.clone())).collect();
            Ok(LpSolution {
                values,
                duals: Some(duals),
            })
        }
    }
}

fn map_resolution(error: ResolutionError) -> LpFailure {
    match error {
        ResolutionError::Infeasible => LpFailure::Infeasible,
        ResolutionError::Unbounded => LpFailure::Unbounded,
        ResolutionError::Other(message) => LpFailure::Other(message.to_string()),
        ResolutionError::Str(message) => LpFailure::Other(message),
    }
}

fn check_inputs(
    spec: &BatterySpec,
    prices: &[f64],
    config: &PlanConfig,
) -> Result<(), OptimiseError> {
    spec.validate()?;
    if prices.is_empty() {
        return Err(OptimiseError::EmptyHorizon);
    }
    if let Some(period) = prices.iter().position(|p| !p.is_finite()) {
        return Err(OptimiseError::NonFinitePrice { period });
    }
    if config.period_s <= 0 {
        return Err(OptimiseError::InvalidConfig("period_s must be positive"));
    }
    match config.terminal {
        TerminalSoc::AtLeastWh(wh) if !wh.is_finite() => Err(OptimiseError::InvalidConfig(
            "terminal SoC target must be finite",
        )),
        TerminalSoc::ValueEurPerMwh(v) if !v.is_finite() => Err(OptimiseError::InvalidConfig(
            "terminal SoC value must be finite",
        )),
        _ => Ok(()),
    }
}

/// Plans one battery (or one aggregated group) over `prices` (EUR/MWh per period),
/// starting from the measured `start_soc_wh`.
///
/// # Errors
/// [`OptimiseError`] for an invalid spec or config, an empty horizon, non-finite prices,
/// an infeasible model (naming the constraint) or a solver failure.
pub fn plan_battery(
    spec: &BatterySpec,
    start_soc_wh: f64,
    prices: &[f64],
    config: &PlanConfig,
) -> Result<Plan, OptimiseError> {
    check_inputs(spec, prices, config)?;
    let mut warnings = Vec::new();
    let measured = if start_soc_wh.is_finite() {
        start_soc_wh
    } else {
        spec.soc_min_wh as f64
    };
    let start = spec.clamp_soc_wh(measured);
    // Below 1 mWh the difference is floating-point dust from stepping the SoC, not a
    // measurement outside the limits: clamp it silently.
    if (start - start_soc_wh).abs() > 1e-3 || !start_soc_wh.is_finite() {
        tracing::warn!(
            measured_wh = start_soc_wh,
            used_wh = start,
            "start SoC clamped"
        );
        warnings.push(PlanWarning::StartSocClamped {
            measured_wh: start_soc_wh,
            used_wh: start,
        });
    }
    let model = BatteryModel::new(spec, start, prices, config);
    let n = model.n;
    let (dt_h, wear) = (model.dt_h, model.wear);
    let fail = |failure: LpFailure, backend: LpBackend| match failure {
        LpFailure::Infeasible => OptimiseError::Infeasible {
            constraint: diagnose_infeasible(spec, start, n, config),
        },
        LpFailure::Unbounded => OptimiseError::Unbounded {
            backend: backend.name(),
            detail: "battery objective (all variables are bounded: solver trouble)".into(),
        },
        LpFailure::Other(message) => OptimiseError::Solver {
            backend: backend.name(),
            message,
        },
    };
    // 1. The LP with every period free to charge and discharge.
    let free = vec![PeriodMode::Free; n];
    let mut solution = model
        .solve(&free, config.backend)
        .map_err(|f| fail(f, config.backend))?;
    // 2. Only where simultaneous charge and discharge can pay (see `PeriodMode`) and the
    //    LP actually did it: the MILP with one binary per such period (microlp's branch
    //    and bound), then, for Clarabel, the LP again with those periods' modes fixed to
    //    the MILP's choice, which has the same optimum and yields the duals.
    let risky: Vec<usize> = (0..n)
        .filter(|&t| model.simultaneous_may_pay(prices[t]))
        .collect();
    let simultaneous =
        |values: &[f64], t: usize| values[t] > SIMULTANEOUS_MW && values[n + t] > SIMULTANEOUS_MW;
    if risky.iter().any(|&t| simultaneous(&solution.values, t)) {
        let mut modes = free;
        for &t in &risky {
            modes[t] = PeriodMode::Exclusive;
        }
        let milp = model
            .solve(&modes, LpBackend::Microlp)
            .map_err(|f| fail(f, LpBackend::Microlp))?;
        for &t in &risky {
            // Either choice is optimal when the MILP does neither.
            modes[t] = if milp.values[n + t] > milp.values[t] {
                PeriodMode::DischargeOnly
            } else {
                PeriodMode::ChargeOnly
            };
        }
        solution = match config.backend {
            LpBackend::Microlp => milp,
            LpBackend::Clarabel => model
                .solve(&modes, LpBackend::Clarabel)
                .map_err(|f| fail(f, LpBackend::Clarabel))?,
        };
    }
    let values = &solution.values;
    let to_w = |mw: f64, max_w: i64| ((mw * W_PER_MW).max(0.0).floor() as i64).min(max_w);
    let charge_w: Vec<i64> = values[..n]
        .iter()
        .map(|v| to_w(*v, spec.max_charge_w))
        .collect();
    let discharge_w: Vec<i64> = values[n..2 * n]
        .iter()
        .map(|v| to_w(*v, spec.max_discharge_w))
        .collect();
    let net_w = discharge_w
        .iter()
        .zip(&charge_w)
        .map(|(d, c)| d - c)
        .collect();
    let soc_wh = values[2 * n..].iter().map(|v| v * W_PER_MW).collect();
    let mut expected_profit_eur = 0.0;
    for t in 0..n {
        expected_profit_eur += period_profit_eur(prices[t], values[t], values[n + t], wear, dt_h);
    }
    if let TerminalSoc::ValueEurPerMwh(value) = config.terminal {
        expected_profit_eur += value * values[3 * n - 1];
    }
    let marginal_value_eur_per_mwh = solution.duals.map(|duals| duals[..n].to_vec());
    Ok(Plan {
        charge_w,
        discharge_w,
        net_w,
        soc_wh,
        start_soc_wh: start,
        expected_profit_eur,
        marginal_value_eur_per_mwh,
        warnings,
    })
}

/// Below this (MW, i.e. 1 W) a solver's charge or discharge value counts as zero when
/// checking for simultaneous charging and discharging.
const SIMULTANEOUS_MW: f64 = 1e-6;

/// What a period of the model may do.
///
/// # Why a MILP only in some periods
/// Charging and discharging in the same period is physically impossible, but the LP
/// relaxation allows it. It is harmless wherever it cannot pay: if `c_t > 0` and
/// `d_t > 0`, lowering `c_t` by `δ` and `d_t` by `η δ` (`η = η_c η_d`) leaves every SoC
/// and so every other constraint unchanged and changes the objective by
/// `δ Δt (p_t (1 − η) + κ (1 + η))`, which is positive unless
/// `p_t (1 − η) + κ (1 + η) <= 0`. So in every period with a price above
/// `−κ (1 + η) / (1 − η)` (−38 EUR/MWh for 90 % round trip and κ = 2) no optimum of the LP
/// charges and discharges at once, and the LP is exact there. Below it (deeply negative
/// prices), the LP "burns" energy in the round-trip losses to import more than the
/// battery can store and be paid for it. Those periods, and only those, get a binary
/// (`c_t <= P_c z_t`, `d_t <= P_d (1 − z_t)`), and only when the LP solution actually
/// uses both: on ordinary days the model stays a pure LP. The alternatives were worse: a
/// MILP in every period makes every solve a branch and bound; forbidding discharge below
/// the threshold is a heuristic (discharging at a negative price to make room for a
/// deeper one can be optimal); and a convex net-power reformulation (`s_t <= s_{t−1} −
/// f(g_t)` with convex piecewise-linear `f`) is the same relaxation in other clothes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PeriodMode {
    /// Charge and discharge both allowed (exact where simultaneity cannot pay).
    Free,
    /// At most one of charge and discharge (a binary; microlp only).
    Exclusive,
    /// Discharge fixed at zero.
    ChargeOnly,
    /// Charge fixed at zero.
    DischargeOnly,
}

/// The battery model in MW and MWh.
struct BatteryModel<'a> {
    prices: &'a [f64],
    terminal: TerminalSoc,
    n: usize,
    dt_h: f64,
    keep: f64,
    eta_c: f64,
    eta_d: f64,
    wear: f64,
    p_c: f64,
    p_d: f64,
    s_min: f64,
    s_max: f64,
    s0: f64,
}

impl<'a> BatteryModel<'a> {
    fn new(
        spec: &BatterySpec,
        start_wh: f64,
        prices: &'a [f64],
        config: &PlanConfig,
    ) -> BatteryModel<'a> {
        BatteryModel {
            prices,
            terminal: config.terminal,
            n: prices.len(),
            dt_h: config.period_s as f64 / SECONDS_PER_HOUR,
            keep: spec.standing_retention(config.period_s),
            eta_c: spec.charge_efficiency,
            eta_d: spec.discharge_efficiency,
            wear: spec.wear_cost_eur_per_mwh.to_f64().unwrap_or(0.0),
            p_c: spec.max_charge_w as f64 / W_PER_MW,
            p_d: spec.max_discharge_w as f64 / W_PER_MW,
            s_min: spec.soc_min_wh as f64 / W_PER_MW,
            s_max: spec.soc_max_wh as f64 / W_PER_MW,
            s0: start_wh / W_PER_MW,
        }
    }

    /// Whether charging and discharging at once can pay at `price` (see [`PeriodMode`]).
    fn simultaneous_may_pay(&self, price: f64) -> bool {
        let eta = self.eta_c * self.eta_d;
        price * (1.0 - eta) + self.wear * (1.0 + eta) <= 1e-9
    }

    /// Builds and solves the model with `modes`; values are `c`, `d`, `s` (n each), duals
    /// (Clarabel) start with the n SoC balance rows.
    fn solve(&self, modes: &[PeriodMode], backend: LpBackend) -> Result<LpSolution, LpFailure> {
        let n = self.n;
        let dt_h = self.dt_h;
        let mut vars = ProblemVariables::new();
        let bound = |max: f64, off: bool| variable().min(0.0).max(if off { 0.0 } else { max });
        let c: Vec<Variable> = modes
            .iter()
            .map(|m| vars.add(bound(self.p_c, *m == PeriodMode::DischargeOnly)))
            .collect();
        let d: Vec<Variable> = modes
            .iter()
            .map(|m| vars.add(bound(self.p_d, *m == PeriodMode::ChargeOnly)))
            .collect();
        let s: Vec<Variable> = vars.add_vector(variable().min(self.s_min).max(self.s_max), n);
        let z: Vec<(usize, Variable)> = modes
            .iter()
            .enumerate()
            .filter(|(_, m)| **m == PeriodMode::Exclusive)
            .map(|(t, _)| (t, vars.add(variable().binary())))
            .collect();
        let mut objective = Expression::with_capacity(3 * n + 1);
        for t in 0..n {
            objective.add_mul((self.prices[t] - self.wear) * dt_h, d[t]);
            objective.add_mul((-self.prices[t] - self.wear) * dt_h, c[t]);
        }
        if let TerminalSoc::ValueEurPerMwh(value) = self.terminal {
            objective.add_mul(value, s[n - 1]);
        }
        let mut rows = Vec::with_capacity(n + 1 + 2 * z.len());
        for t in 0..n {
            let mut balance = Expression::with_capacity(4);
            balance.add_mul(1.0, s[t]);
            balance.add_mul(-self.eta_c * dt_h, c[t]);
            balance.add_mul(dt_h / self.eta_d, d[t]);
            let inflow = if t == 0 {
                self.keep * self.s0
            } else {
                balance.add_mul(-self.keep, s[t - 1]);
                0.0
            };
            rows.push(constraint!(balance == inflow));
        }
        if let TerminalSoc::AtLeastWh(target_wh) = self.terminal {
            rows.push(constraint!(s[n - 1] >= target_wh / W_PER_MW));
        }
        for &(t, zt) in &z {
            rows.push(constraint!(c[t] - self.p_c * zt <= 0.0));
            rows.push(constraint!(d[t] + self.p_d * zt <= self.p_d));
        }
        let read: Vec<Variable> = c.iter().chain(&d).chain(&s).copied().collect();
        solve_lp(backend, vars, objective, rows, &read)
    }
}

/// Names the constraint that makes the battery LP infeasible. Called only after a solver
/// reported infeasibility, so it may take its time.
fn diagnose_infeasible(spec: &BatterySpec, start_wh: f64, n: usize, config: &PlanConfig) -> String {
    // Highest reachable SoC path: charge at full power every period.
    let mut high = start_wh;
    for t in 0..n {
        high = spec.soc_after_wh(high, -spec.max_charge_w, config.period_s);
        high = high.min(spec.soc_max_wh as f64);
        if high < spec.soc_min_wh as f64 - 1e-6 {
            return format!(
                "soc_min_wh = {} in period {t}: standing losses exceed the charging power",
                spec.soc_min_wh
            );
        }
    }
    if let TerminalSoc::AtLeastWh(target) = config.terminal {
        if target > high + 1e-6 {
            return format!(
                "terminal_soc >= {target:.0} Wh: at most {high:.0} Wh is reachable in {n} periods"
            );
        }
        if target > spec.soc_max_wh as f64 {
            return format!(
                "terminal_soc >= {target:.0} Wh: above soc_max_wh {}",
                spec.soc_max_wh
            );
        }
    }
    "unidentified: the solver reported infeasibility but every constraint is reachable \
     alone (numerical trouble?)"
        .to_string()
}

/// Most repeats [`plan_day_with_continuation`] appends (a week's horizon in all).
pub const MAX_CONTINUATION_DAYS: usize = 6;

/// Plans one day of `day_prices` (EUR/MWh per period) as the first day of a horizon of
/// `1 + continuation_days` days in which every later day repeats `day_prices` ("tomorrow
/// looks like today"), and returns the first day's part of the plan.
///
/// Why: at the day-ahead auction the next day's prices are not known, yet what the
/// battery holds at midnight is worth what the next day's plan makes of it. Repeating the
/// day is the persistence forecast of the next one; the continuation then values the
/// energy carried over (and the room left to charge) by the same LP instead of a fixed
/// floor or value at midnight. `config.terminal` applies at the end of the whole horizon.
/// Only the first day is returned to be bid; the SoC path, marginal values and expected
/// profit (without any terminal value) cover that day alone. With `continuation_days = 0`
/// this is [`plan_battery`].
///
/// # Errors
/// As [`plan_battery`], plus [`OptimiseError::InvalidConfig`] for more than
/// [`MAX_CONTINUATION_DAYS`].
pub fn plan_day_with_continuation(
    spec: &BatterySpec,
    start_soc_wh: f64,
    day_prices: &[f64],
    continuation_days: usize,
    config: &PlanConfig,
) -> Result<Plan, OptimiseError> {
    if continuation_days == 0 {
        return plan_battery(spec, start_soc_wh, day_prices, config);
    }
    if continuation_days > MAX_CONTINUATION_DAYS {
        return Err(OptimiseError::InvalidConfig(
            "continuation longer than MAX_CONTINUATION_DAYS",
        ));
    }
    let n = day_prices.len();
    let mut horizon = Vec::with_capacity(n * (1 + continuation_days));
    for _ in 0..=continuation_days {
        horizon.extend_from_slice(day_prices);
    }
    let mut plan = plan_battery(spec, start_soc_wh, &horizon, config)?;
    plan.charge_w.truncate(n);
    plan.discharge_w.truncate(n);
    plan.net_w.truncate(n);
    plan.soc_wh.truncate(n);
    if let Some(values) = plan.marginal_value_eur_per_mwh.as_mut() {
        values.truncate(n);
    }
    let dt_h = config.period_s as f64 / SECONDS_PER_HOUR;
    let wear = spec.wear_cost_eur_per_mwh.to_f64().unwrap_or(0.0);
    plan.expected_profit_eur = day_prices
        .iter()
        .zip(plan.charge_w.iter().zip(&plan.discharge_w))
        .map(|(price, (c, d))| {
            period_profit_eur(
                *price,
                *c as f64 / W_PER_MW,
                *d as f64 / W_PER_MW,
                wear,
                dt_h,
            )
        })
        .sum();
    Ok(plan)
}

/// The expected profit of one period at `price` (EUR/MWh), charging `charge_mw` and
/// discharging `discharge_mw` for `dt_h` hours, net of `wear` (EUR/MWh throughput): the
/// LP's objective term, shared by every way a plan is put together.
fn period_profit_eur(price: f64, charge_mw: f64, discharge_mw: f64, wear: f64, dt_h: f64) -> f64 {
    (price * (discharge_mw - charge_mw) - wear * (charge_mw + discharge_mw)) * dt_h
}

/// A rolling horizon: plan `window` periods, keep the first `step`, move on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RollingHorizon {
    /// Periods planned at each step (look-ahead).
    pub window: usize,
    /// Periods committed at each step (`1 <= step <= window`).
    pub step: usize,
}

/// Plans the whole of `prices` with a rolling horizon: at each step the LP sees `window`
/// periods (fewer at the end), the first `step` periods are kept and the SoC carried on.
/// The terminal condition of `config` applies to every window.
///
/// # Errors
/// As [`plan_battery`], plus [`OptimiseError::InvalidConfig`] for a bad horizon.
pub fn plan_rolling(
    spec: &BatterySpec,
    start_soc_wh: f64,
    prices: &[f64],
    horizon: RollingHorizon,
    config: &PlanConfig,
) -> Result<Plan, OptimiseError> {
    if horizon.step == 0 || horizon.step > horizon.window {
        return Err(OptimiseError::InvalidConfig(
            "rolling horizon needs 1 <= step <= window",
        ));
    }
    check_inputs(spec, prices, config)?;
    let n = prices.len();
    let mut out = Plan {
        charge_w: Vec::with_capacity(n),
        discharge_w: Vec::with_capacity(n),
        net_w: Vec::with_capacity(n),
        soc_wh: Vec::with_capacity(n),
        start_soc_wh: 0.0,
        expected_profit_eur: 0.0,
        marginal_value_eur_per_mwh: (config.backend == LpBackend::Clarabel).then(Vec::new),
        warnings: Vec::new(),
    };
    let mut soc = start_soc_wh;
    let mut first = true;
    let mut at = 0;
    while at < n {
        let end = (at + horizon.window).min(n);
        let plan = plan_battery(spec, soc, &prices[at..end], config)?;
        if first {
            out.start_soc_wh = plan.start_soc_wh;
            out.warnings = plan.warnings.clone();
            first = false;
        }
        let keep = horizon.step.min(end - at);
        let dt_h = config.period_s as f64 / SECONDS_PER_HOUR;
        let wear = spec.wear_cost_eur_per_mwh.to_f64().unwrap_or(0.0);
        for t in 0..keep {
            out.charge_w.push(plan.charge_w[t]);
            out.discharge_w.push(plan.discharge_w[t]);
            out.net_w.push(plan.net_w[t]);
            out.soc_wh.push(plan.soc_wh[t]);
            out.expected_profit_eur += period_profit_eur(
                prices[at + t],
                plan.charge_w[t] as f64 / W_PER_MW,
                plan.discharge_w[t] as f64 / W_PER_MW,
                wear,
                dt_h,
            );
        }
        if let (Some(all), Some(mv)) = (
            out.marginal_value_eur_per_mwh.as_mut(),
            plan.marginal_value_eur_per_mwh.as_ref(),
        ) {
            all.extend_from_slice(&mv[..keep]);
        }
        soc = plan.soc_wh[keep - 1];
        at += keep;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unbounded_lp() -> (
        ProblemVariables,
        Expression,
        Vec<good_lp::Constraint>,
        Vec<Variable>,
    ) {
        let mut vars = ProblemVariables::new();
        let x = vars.add(variable().min(0.0));
        let y = vars.add(variable().min(0.0));
        let rows = vec![constraint!(x - y <= 1.0)];
        (vars, x + y, rows, vec![x, y])
    }

    #[test]
    fn unbounded_lp_is_a_typed_failure_with_both_backends() {
        for backend in [LpBackend::Microlp, LpBackend::Clarabel] {
            let (vars, objective, rows, read) = unbounded_lp();
            let result = solve_lp(backend, vars, objective, rows, &read);
            assert!(matches!(result, Err(LpFailure::Unbounded)), "{backend:?}");
        }
    }

    #[test]
    fn infeasible_lp_is_a_typed_failure_with_both_backends() {
        for backend in [LpBackend::Microlp, LpBackend::Clarabel] {
            let mut vars = ProblemVariables::new();
            let x = vars.add(variable().min(0.0).max(1.0));
            let rows = vec![constraint!(x >= 2.0)];
            let result = solve_lp(backend, vars, Expression::from(x), rows, &[x]);
            assert!(matches!(result, Err(LpFailure::Infeasible)), "{backend:?}");
        }
    }
}
