//! Scenario files: the TOML a quant copies from `scenarios/` and edits.
//!
//! [`Scenario::parse`] takes the file's name (for messages) and its text; the caller
//! reads the file. Every table rejects unknown fields and every required field must be
//! present, so a typo is an error, never silently ignored. Each error is a
//! [`ScenarioError`] that names the file, the 1-based line and column, and the field.
//! After parsing, [`Scenario::parse`] checks every value (ranges, battery physics,
//! dates, group names) and reports a bad one at the line where the field is written.
//!
//! The fields are documented on the structs below and, for users, in
//! `scenarios/README.md`.
//!
//! # Invariants (of a value returned by [`Scenario::parse`])
//! - `fleet` is non-empty, group names are unique, every group's [`BatterySpec`]
//!   validates and its initial SoC lies within its SoC limits.
//! - `interval_minutes` divides 60 (15, 20, 30 or 60 in practice); `days >= 1`.
//! - Probabilities and fractions lie in `[0, 1]`; latencies are positive with
//!   `p99 >= median`; windows have positive length; every referenced group exists.

use std::ops::Range;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::Deserialize;
use toml::Spanned;
use voltex_engine::bidding::{IntradayConfig, IntradayError};
use voltex_market::MarketRules;
use voltex_market::battery::BatterySpec;
use voltex_market::block::EXCLUSIVE_GROUP_FAMILIES_MAX;

/// A scenario that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    /// The TOML is malformed, has an unknown field, lacks a required one, or a value has
    /// the wrong type.
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// File name as given by the caller.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The field concerned, when the parser names one.
        field: Option<String>,
        /// The parser's message.
        message: String,
    },
    /// A field has a value outside its allowed range.
    #[error("{file}:{line}:{column}: field `{field}`: {message}")]
    Invalid {
        /// File name as given by the caller.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The offending field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ScenarioError {
    /// The 1-based line of the error.
    pub fn line(&self) -> usize {
        match self {
            ScenarioError::Syntax { line, .. } | ScenarioError::Invalid { line, .. } => *line,
        }
    }

    /// The field concerned, if known.
    pub fn field(&self) -> Option<&str> {
        match self {
            ScenarioError::Syntax { field, .. } => field.as_deref(),
            ScenarioError::Invalid { field, .. } => Some(field),
        }
    }
}

/// A whole scenario.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in output folders and reports.
    pub name: String,
    /// Seed of every random draw in the run (network, fault selection).
    pub seed: u64,
    /// Length of one delivery/dispatch interval in minutes (divides 60).
    pub interval_minutes: Spanned<u32>,
    /// Market data and date range.
    pub market: MarketSpec,
    /// How the platform plans and bids.
    pub strategy: StrategySpec,
    /// Battery groups.
    pub fleet: Vec<Spanned<GroupSpec>>,
    /// Virtual network between platform and devices (default: perfect).
    #[serde(default)]
    pub network: NetworkSpec,
    /// Injected faults (default: none).
    #[serde(default)]
    pub faults: Vec<Spanned<FaultSpec>>,
}

/// Which prices are replayed, from when, for how long.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketSpec {
    /// Price file (epftoolbox layout), relative to the scenario file.
    pub data: String,
    /// First delivery day, `YYYY-MM-DD` (local day of the file).
    pub start_date: Spanned<String>,
    /// Number of days simulated (the scenario's duration).
    pub days: Spanned<u32>,
    /// Extra cost per MWh of imbalance (delivered minus committed), EUR/MWh, as a
    /// decimal string; default `"0"`.
    #[serde(default)]
    pub imbalance_penalty_eur_per_mwh: Option<Spanned<Decimal>>,
    /// The continuous intraday market (none by default): before delivery the platform
    /// closes what a day's commitment cannot deliver on each interval's book against a
    /// synthetic maker quoting the replayed price ± half this spread, EUR/MWh (decimal
    /// string; half of it a multiple of 0.01). See `voltex_engine::bidding::intraday`.
    #[serde(default)]
    pub intraday_spread_eur_per_mwh: Option<Spanned<Decimal>>,
    /// The intraday maker's depth per side and interval, MW (whole 0.1 MW lots; default
    /// the largest order, 999 MW). Needs `intraday_spread_eur_per_mwh`.
    #[serde(default)]
    pub intraday_depth_mw: Option<Spanned<Decimal>>,
}

impl MarketSpec {
    /// The intraday market's terms, if the scenario has one.
    ///
    /// # Errors
    /// The field at fault and why: a spread or depth [`IntradayConfig`] refuses, a depth
    /// that is not whole lots, or a depth without a spread.
    pub fn intraday(&self) -> Result<Option<IntradayConfig>, (&'static str, usize, String)> {
        let depth_field = "intraday_depth_mw";
        let Some(spread) = &self.intraday_spread_eur_per_mwh else {
            return match &self.intraday_depth_mw {
                None => Ok(None),
                Some(depth) => Err((
                    depth_field,
                    depth.span().start,
                    "needs intraday_spread_eur_per_mwh".into(),
                )),
            };
        };
        let depth = self.intraday_depth_mw.as_ref();
        IntradayConfig::with_depth_mw(
            MarketRules::intraday_default(),
            *spread.get_ref(),
            depth.map(|d| *d.get_ref()),
        )
        .map(Some)
        .map_err(|error| match (&error, depth) {
            (IntradayError::Depth { .. } | IntradayError::DepthNotWholeLots { .. }, Some(d)) => {
                (depth_field, d.span().start, error.to_string())
            }
            _ => (
                "intraday_spread_eur_per_mwh",
                spread.span().start,
                error.to_string(),
            ),
        })
    }
}

/// The platform's planning strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    /// LP on the true prices of the day (the upper bound).
    PerfectForesight,
    /// LP on the LEAR forecast (engine's `Lear`, recalibrated daily).
    LearLp,
    /// LP on the naive seasonal forecast.
    NaiveLp,
    /// Fixed charge/discharge hours from the mean profile of the preceding days.
    RuleBased,
}

/// Strategy settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategySpec {
    /// Which strategy.
    pub kind: StrategyKind,
    /// Days of history the rule-based strategy averages (default 28); LEAR's
    /// calibration window in days (default 56).
    #[serde(default)]
    pub history_days: Option<Spanned<u32>>,
    /// How the plan reaches the market (default [`Bidding::PriceTaker`]).
    #[serde(default)]
    pub bidding: Bidding,
    /// The fleet's risk limit: its net position (committed power, either way) may not
    /// exceed this in any interval, MW (decimal string; none = no limit). Each group
    /// plans within its share of it, in proportion to its power
    /// (`voltex_engine::optimise::fleet::share_of_limit_w`).
    #[serde(default)]
    pub max_position_mw: Option<Spanned<Decimal>>,
    /// With [`Bidding::Family`]: how many alternative day schedules each group offers
    /// in one exclusive group (1 up to the group limit, 24; default 1): the plan on the
    /// forecast and the plans on the forecast plus each of the latest days' forecast
    /// errors of the run (`voltex_engine::bidding::day_family`).
    #[serde(default)]
    pub alternatives: Option<Spanned<u32>>,
}

/// The smallest risk limit a scenario takes, MW: 1 W.
pub const MAX_POSITION_MW_MIN: Decimal = Decimal::from_parts(1, 0, 0, false, 6);

impl StrategySpec {
    /// The alternative day schedules a group offers with [`Bidding::Family`] (1: the
    /// plan alone).
    pub fn alternatives(&self) -> usize {
        self.alternatives
            .as_ref()
            .map_or(1, |n| *n.get_ref() as usize)
    }

    /// The fleet's risk limit in whole W (rounded down), if any. A value
    /// [`Scenario::parse`] accepted is positive and at least 1 W.
    pub fn max_position_w(&self) -> Option<i64> {
        // A limit beyond i64 W (9.2 TW) is no limit at all: saturate.
        self.max_position_mw.as_ref().map(|mw| {
            mw.get_ref()
                .checked_mul(Decimal::from(1_000_000))
                .and_then(|w| w.floor().to_i64())
                .unwrap_or(i64::MAX)
        })
    }
}

/// How a group's plan becomes its commitment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bidding {
    /// The whole plan clears at the replayed price (per-device plan × count).
    #[default]
    PriceTaker,
    /// The group is planned as one aggregated unit (the engine's LP with its marginal
    /// values), bid as the engine's day-ahead curves (`voltex_engine::bidding`, limits
    /// at the plan's round-trip value of stored energy) in whole market lots, and
    /// cleared per interval in `voltex_market`'s call auction against a counterparty
    /// that buys and sells any quantity at the replayed price: only the steps in the
    /// money at the real price are committed.
    Auction,
    /// The group is planned as one aggregated unit, as for [`Bidding::Auction`], and
    /// bid as one linked block family (its charging a buy block, its discharging a
    /// sell block, both priced at the day's value of stored energy, `η_d · mean
    /// forecast price − wear`;
    /// `voltex_engine::bidding::day_ahead_family`), accepted whole or not at all in
    /// `voltex_market::block`'s day clearing against the replayed price: a day whose
    /// round trip does not pay at the real prices is not committed at all, and a sale
    /// never clears without its purchase.
    Family,
}

/// One group of identical batteries.
///
/// The battery fields restate [`BatterySpec`]'s on purpose: serde cannot combine
/// `#[serde(flatten)]` with `deny_unknown_fields`, and a scenario must reject unknown
/// fields with their line. [`GroupSpec::battery`] is the one place they are mapped.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Group name (unique); faults and partitions refer to it.
    pub name: String,
    /// Number of batteries.
    pub count: u32,
    /// Usable capacity, Wh.
    pub capacity_wh: i64,
    /// Largest charging power, W.
    pub max_charge_w: i64,
    /// Largest discharging power, W.
    pub max_discharge_w: i64,
    /// Lowest allowed SoC, Wh.
    pub soc_min_wh: i64,
    /// Highest allowed SoC, Wh.
    pub soc_max_wh: i64,
    /// One-way charge efficiency, `(0, 1]`.
    pub charge_efficiency: f64,
    /// One-way discharge efficiency, `(0, 1]`.
    pub discharge_efficiency: f64,
    /// Standing loss per hour, fraction of stored energy, `[0, 1)`.
    pub standing_loss_per_hour: f64,
    /// Wear cost per MWh of throughput, EUR/MWh, decimal string.
    pub wear_cost_eur_per_mwh: Decimal,
    /// SoC at the start of the run, Wh.
    pub initial_soc_wh: i64,
}

impl GroupSpec {
    /// The shared battery physics for one device of this group.
    pub fn battery(&self) -> BatterySpec {
        BatterySpec {
            capacity_wh: self.capacity_wh,
            max_charge_w: self.max_charge_w,
            max_discharge_w: self.max_discharge_w,
            soc_min_wh: self.soc_min_wh,
            soc_max_wh: self.soc_max_wh,
            charge_efficiency: self.charge_efficiency,
            discharge_efficiency: self.discharge_efficiency,
            standing_loss_per_hour: self.standing_loss_per_hour,
            wear_cost_eur_per_mwh: self.wear_cost_eur_per_mwh,
        }
    }
}

/// The virtual network between platform and devices.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Median one-way latency, ms (log-normal).
    pub latency_ms_median: Spanned<f64>,
    /// 99th-percentile one-way latency, ms (sets the log-normal's spread; jitter larger
    /// than the gap between two messages reorders them).
    pub latency_ms_p99: Spanned<f64>,
    /// Probability that a message is lost.
    pub loss: Spanned<f64>,
    /// Probability that a delivered message is delivered twice.
    pub duplicate: Spanned<f64>,
    /// Seconds the platform waits for an ack before resending a schedule.
    pub retry_s: Spanned<u32>,
    /// Resends per schedule before the platform gives up.
    pub max_retries: u32,
    /// Every n-th device (indices 0, n, 2n, ...) gets ed25519-signed schedules and
    /// verifies them; the others run their agent with
    /// `SignatureCheck::TrustedSimulation` and get unsigned ones (the simulator's
    /// schedules never leave the process). Default 1: every device.
    #[serde(default)]
    pub verify_signatures_one_in: Option<Spanned<u32>>,
    /// Partitions: a fraction of a group unreachable over a window.
    #[serde(default)]
    pub partitions: Vec<Spanned<WindowSpec>>,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        let zero = |v: f64| Spanned::new(0..0, v);
        NetworkSpec {
            latency_ms_median: zero(1.0),
            latency_ms_p99: zero(1.0),
            loss: zero(0.0),
            duplicate: zero(0.0),
            retry_s: Spanned::new(0..0, 60),
            max_retries: 0,
            verify_signatures_one_in: None,
            partitions: Vec::new(),
        }
    }
}

/// A fraction of a group affected over a time window.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// The group affected.
    pub group: String,
    /// Fraction of the group's devices affected, `[0, 1]` (chosen with the seed).
    pub fraction: f64,
    /// Start, hours after the first delivery day's 00:00.
    pub start_hour: f64,
    /// Length, hours.
    pub hours: f64,
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Device off: no power, no messages.
    Offline,
    /// Device holds `setpoint_w` whatever its schedule says (physics still clips).
    Stuck,
    /// SoC sensor reads `drift_wh_per_hour` × hours since the fault started too high.
    SocDrift,
    /// Device clock is `skew_s` seconds off (positive = ahead).
    ClockSkew,
    /// Device reboots at the window start, is down for the window, loses RAM; its
    /// persistent store (accepted schedules) survives.
    Reboot,
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Which fault.
    pub kind: FaultKind,
    /// Group, fraction and window.
    pub group: String,
    /// Fraction of the group affected, `[0, 1]`.
    pub fraction: f64,
    /// Start, hours after the first delivery day's 00:00.
    pub start_hour: f64,
    /// Length, hours.
    pub hours: f64,
    /// `stuck` only: the setpoint held, W.
    #[serde(default)]
    pub setpoint_w: Option<i64>,
    /// `soc_drift` only: sensor error growth, Wh per hour.
    #[serde(default)]
    pub drift_wh_per_hour: Option<f64>,
    /// `clock_skew` only: clock offset, s (|skew| < interval length).
    #[serde(default)]
    pub skew_s: Option<i64>,
}

/// 1-based (line, column) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

/// Byte offset of `field = ...` inside `span` of `text` (start of the span if absent).
fn field_offset(text: &str, span: &Range<usize>, field: &str) -> usize {
    let end = span.end.min(text.len());
    let start = span.start.min(end);
    let mut offset = start;
    for line in text[start..end].split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(field)
            && rest.trim_start().starts_with('=')
        {
            return offset + (line.len() - trimmed.len());
        }
        offset += line.len();
    }
    start
}

/// The first name in backticks of a serde message (`unknown field `x``).
fn field_in_message(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// Collects value errors with the text at hand to locate them.
struct Checker<'a> {
    file: &'a str,
    text: &'a str,
}

impl Checker<'_> {
    fn at(&self, offset: usize, field: &str, message: impl Into<String>) -> ScenarioError {
        let (line, column) = line_col(self.text, offset);
        ScenarioError::Invalid {
            file: self.file.to_string(),
            line,
            column,
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// An error at `field` inside the table spanning `span`.
    fn in_table(
        &self,
        span: &Range<usize>,
        field: &str,
        message: impl Into<String>,
    ) -> ScenarioError {
        self.at(field_offset(self.text, span, field), field, message)
    }

    fn check_window(
        &self,
        span: &Range<usize>,
        groups: &[Spanned<GroupSpec>],
        group: &str,
        fraction: f64,
        hours: f64,
        start_hour: f64,
    ) -> Result<(), ScenarioError> {
        if !groups.iter().any(|g| g.get_ref().name == group) {
            return Err(self.in_table(span, "group", format!("no fleet group named {group:?}")));
        }
        if !(0.0..=1.0).contains(&fraction) {
            return Err(self.in_table(span, "fraction", "must be in [0, 1]"));
        }
        if !(start_hour.is_finite() && start_hour >= 0.0) {
            return Err(self.in_table(span, "start_hour", "must be >= 0"));
        }
        if !(hours.is_finite() && hours > 0.0) {
            return Err(self.in_table(span, "hours", "must be > 0"));
        }
        Ok(())
    }
}

impl Scenario {
    /// Parses and checks a scenario; see the [module docs](self).
    ///
    /// # Errors
    /// [`ScenarioError::Syntax`] for malformed TOML, unknown or missing fields and wrong
    /// types; [`ScenarioError::Invalid`] for values out of range. Both carry file, line,
    /// column and (where known) the field name.
    pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|err| {
            let (line, column) = line_col(text, err.span().map_or(0, |s| s.start));
            ScenarioError::Syntax {
                file: file.to_string(),
                line,
                column,
                field: field_in_message(err.message()),
                message: err.message().to_string(),
            }
        })?;
        scenario.check(&Checker { file, text })?;
        Ok(scenario)
    }

    /// The start date.
    ///
    /// # Panics
    /// Never for a value returned by [`Scenario::parse`] (it checked the date).
    pub fn start_date(&self) -> NaiveDate {
        NaiveDate::parse_from_str(self.market.start_date.get_ref(), "%Y-%m-%d")
            .expect("checked by Scenario::parse")
    }

    /// The interval length in seconds.
    pub fn interval_s(&self) -> i64 {
        i64::from(*self.interval_minutes.get_ref()) * 60
    }

    /// Total number of batteries.
    pub fn n_devices(&self) -> u64 {
        self.fleet
            .iter()
            .map(|g| u64::from(g.get_ref().count))
            .sum()
    }

    fn check(&self, c: &Checker<'_>) -> Result<(), ScenarioError> {
        let minutes = *self.interval_minutes.get_ref();
        if minutes == 0 || 60 % minutes != 0 {
            return Err(c.at(
                self.interval_minutes.span().start,
                "interval_minutes",
                "must divide 60",
            ));
        }
        let date = &self.market.start_date;
        if NaiveDate::parse_from_str(date.get_ref(), "%Y-%m-%d").is_err() {
            return Err(c.at(date.span().start, "start_date", "must be a date YYYY-MM-DD"));
        }
        if *self.market.days.get_ref() == 0 {
            return Err(c.at(self.market.days.span().start, "days", "must be >= 1"));
        }
        if let Some(penalty) = &self.market.imbalance_penalty_eur_per_mwh
            && *penalty.get_ref() < Decimal::ZERO
        {
            return Err(c.at(
                penalty.span().start,
                "imbalance_penalty_eur_per_mwh",
                "must be >= 0",
            ));
        }
        if let Err((field, offset, message)) = self.market.intraday() {
            return Err(c.at(offset, field, message));
        }
        if let Some(days) = &self.strategy.history_days
            && *days.get_ref() == 0
        {
            return Err(c.at(days.span().start, "history_days", "must be >= 1"));
        }
        if let Some(mw) = &self.strategy.max_position_mw
            && *mw.get_ref() < MAX_POSITION_MW_MIN
        {
            return Err(c.at(
                mw.span().start,
                "max_position_mw",
                "must be at least 0.000001 (1 W)",
            ));
        }
        if let Some(alternatives) = &self.strategy.alternatives {
            let n = *alternatives.get_ref() as usize;
            if self.strategy.bidding != Bidding::Family {
                return Err(c.at(
                    alternatives.span().start,
                    "alternatives",
                    "needs bidding = \"family\"",
                ));
            }
            if !(1..=EXCLUSIVE_GROUP_FAMILIES_MAX).contains(&n) {
                return Err(c.at(
                    alternatives.span().start,
                    "alternatives",
                    format!("must be 1 to {EXCLUSIVE_GROUP_FAMILIES_MAX} (one exclusive group)"),
                ));
            }
        }
        if self.fleet.is_empty() {
            return Err(c.at(0, "fleet", "at least one [[fleet]] group is required"));
        }
        for (i, group) in self.fleet.iter().enumerate() {
            let span = group.span();
            let g = group.get_ref();
            if self.fleet[..i]
                .iter()
                .any(|other| other.get_ref().name == g.name)
            {
                return Err(c.in_table(&span, "name", format!("group name {:?} repeats", g.name)));
            }
            if g.count == 0 {
                return Err(c.in_table(&span, "count", "must be >= 1"));
            }
            if let Err(voltex_market::battery::BatteryError::Invalid { field, reason }) =
                g.battery().validate()
            {
                return Err(c.in_table(&span, field, reason));
            }
            if !(g.soc_min_wh..=g.soc_max_wh).contains(&g.initial_soc_wh) {
                return Err(c.in_table(&span, "initial_soc_wh", "must be within the SoC limits"));
            }
        }
        let net = &self.network;
        let median = *net.latency_ms_median.get_ref();
        if !(median.is_finite() && median > 0.0) {
            return Err(c.at(
                net.latency_ms_median.span().start,
                "latency_ms_median",
                "must be > 0",
            ));
        }
        let p99 = *net.latency_ms_p99.get_ref();
        if !(p99.is_finite() && p99 >= median) {
            return Err(c.at(
                net.latency_ms_p99.span().start,
                "latency_ms_p99",
                "must be >= the median",
            ));
        }
        for (name, p) in [("loss", &net.loss), ("duplicate", &net.duplicate)] {
            if !(0.0..=1.0).contains(p.get_ref()) {
                return Err(c.at(p.span().start, name, "must be a probability in [0, 1]"));
            }
        }
        if *net.retry_s.get_ref() == 0 {
            return Err(c.at(net.retry_s.span().start, "retry_s", "must be >= 1"));
        }
        if let Some(one_in) = &net.verify_signatures_one_in
            && *one_in.get_ref() == 0
        {
            return Err(c.at(
                one_in.span().start,
                "verify_signatures_one_in",
                "must be >= 1",
            ));
        }
        for window in &net.partitions {
            let w = window.get_ref();
            c.check_window(
                &window.span(),
                &self.fleet,
                &w.group,
                w.fraction,
                w.hours,
                w.start_hour,
            )?;
        }
        for fault in &self.faults {
            let span = fault.span();
            let f = fault.get_ref();
            c.check_window(
                &span,
                &self.fleet,
                &f.group,
                f.fraction,
                f.hours,
                f.start_hour,
            )?;
            let needs = |present: bool, field: &str, kind: &str| {
                if present {
                    Ok(())
                } else {
                    Err(c.in_table(&span, field, format!("required for kind = \"{kind}\"")))
                }
            };
            match f.kind {
                FaultKind::Stuck => needs(f.setpoint_w.is_some(), "setpoint_w", "stuck")?,
                FaultKind::SocDrift => {
                    needs(
                        f.drift_wh_per_hour.is_some_and(f64::is_finite),
                        "drift_wh_per_hour",
                        "soc_drift",
                    )?;
                }
                FaultKind::ClockSkew => {
                    needs(f.skew_s.is_some(), "skew_s", "clock_skew")?;
                    if f.skew_s.is_some_and(|s| s.abs() >= self.interval_s()) {
                        return Err(c.in_table(&span, "skew_s", "|skew_s| must be < the interval"));
                    }
                }
                FaultKind::Offline | FaultKind::Reboot => {}
            }
        }
        Ok(())
    }
}
