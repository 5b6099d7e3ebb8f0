//! Checks before going live: replay a schedule set (what dispatch would send) against
//! a fleet state and report every device-interval that would break a limit, with the
//! expected P&L and imbalance.
//!
//! Inputs are text (the caller reads the files):
//! - the schedule set, [`parse_schedule_set`]: a JSON array of signed schedules
//!   (`{"schedule": {...}, "signature": [...]}`, the dispatch protocol's
//!   [`SignedSchedule`]) or of bare [`Schedule`]s (a file with a `"signature"` key is
//!   read as signed);
//! - the fleet state, [`parse_fleet_state`]: JSON `{"devices": [...]}`, one entry per
//!   device with its battery parameters and present SoC (see [`DeviceState`]), and an
//!   optional `imbalance_penalty_eur_per_mwh`.
//!
//! # Replay rules (those of the agent core)
//! Per device, at every interval start `t` from the earliest `valid_from` to the latest
//! `valid_until`: the governing schedule is the highest version issued at or before
//! `t` (a newer version supersedes the held one on receipt); inside its window the
//! target is that of the period in force, outside it the schedule's fallback; before any
//! schedule, idle. The battery then runs the target for the interval by the shared
//! [`BatterySpec`] physics.
//!
//! # What is reported
//! - Per schedule: `Malformed` (breaks a protocol rule), `InvalidSignature` (when a
//!   verifier is given), `WrongDevice`-like errors are typed [`CheckError`]s instead
//!   (an unknown device is a broken input, not a limit).
//! - Per device-interval: [`ViolationKind::PowerLimit`] (the target exceeds the
//!   device's power limits: the agent would reject the whole schedule with
//!   `ExceedsDeviceLimits`) and [`ViolationKind::SocLimit`] (the battery cannot hold the
//!   target for the whole interval: SoC limit reached).
//! - Money, exact ([`Decimal`]): scheduled energy sold at the price (`market`), delivered
//!   minus scheduled energy at the price minus the penalty (`imbalance`), wear of the
//!   delivered throughput, and the net.
//!
//! # Invariants
//! - `delivered_mwh − scheduled_mwh` is the sum of the per-interval imbalances.
//! - A schedule set within every limit from a feasible SoC gives no violation and zero
//!   imbalance.

use chrono::Timelike;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use voltex_dispatch::{DeviceId, Schedule, ScheduleVerifier, SignedSchedule};
use voltex_market::UtcNanos;
use voltex_market::battery::BatterySpec;
use voltex_market::series::PriceSeries;

use voltex_agent::acceptance::DeviceLimits;

/// Joules per MWh.
const J_PER_MWH: i64 = 3_600_000_000;
/// ns per second.
const NS_PER_S: i64 = 1_000_000_000;
/// Most device-intervals one check replays (a year of 15-minute intervals for 1,000
/// devices is 35 M): bounds the work a file can ask for.
pub const DEVICE_INTERVALS_MAX: u64 = 100_000_000;

/// Why a check could not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The schedule set is not valid JSON of schedules.
    #[error("{file}: not a JSON array of schedules or signed schedules: {source}")]
    ScheduleSet {
        /// File name as given.
        file: String,
        /// The parser's error (with line and column).
        source: serde_json::Error,
    },
    /// The fleet state is not valid JSON of the expected shape.
    #[error("{file}: not a fleet state: {source}")]
    FleetState {
        /// File name as given.
        file: String,
        /// The parser's error (with line and column).
        source: serde_json::Error,
    },
    /// A device's battery parameters are inconsistent.
    #[error("fleet state, device {device}: {message}")]
    Battery {
        /// The device.
        device: String,
        /// What is wrong.
        message: String,
    },
    /// A device appears twice in the fleet state.
    #[error("fleet state: device {0} appears twice")]
    DuplicateDevice(String),
    /// A schedule names a device the fleet state does not have.
    #[error("schedule {schedule_id} v{version} names device {device}, not in the fleet state")]
    UnknownDevice {
        /// The device named.
        device: String,
        /// The schedule.
        schedule_id: String,
        /// Its version.
        version: u64,
    },
    /// The schedule set is empty.
    #[error("the schedule set is empty")]
    Empty,
    /// The interval does not divide an hour.
    #[error("interval of {0} s: must be positive and divide 3600")]
    Interval(i64),
    /// No price for an interval.
    #[error("no price for {0} in the price file")]
    NoPrice(String),
    /// The replay would be too large.
    #[error("{0} device-intervals to replay; at most {DEVICE_INTERVALS_MAX}")]
    TooLarge(u64),
}

/// A schedule of the set, with its signature if it had one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetSchedule {
    /// The schedule.
    pub schedule: Schedule,
    /// The signed message, if the file held one.
    pub signed: Option<SignedSchedule>,
}

/// Parses a schedule set (see the module doc).
///
/// # Errors
/// [`CheckError::ScheduleSet`] with the parser's line and column; [`CheckError::Empty`].
pub fn parse_schedule_set(file: &str, text: &str) -> Result<Vec<SetSchedule>, CheckError> {
    let error = |source| CheckError::ScheduleSet {
        file: file.to_string(),
        source,
    };
    // Not an untagged enum: serde's buffering cannot hold the u128 schedule ids.
    let set: Vec<SetSchedule> = if text.contains("\"signature\"") {
        serde_json::from_str::<Vec<SignedSchedule>>(text)
            .map_err(error)?
            .into_iter()
            .map(|signed| SetSchedule {
                schedule: signed.schedule.clone(),
                signed: Some(signed),
            })
            .collect()
    } else {
        serde_json::from_str::<Vec<Schedule>>(text)
            .map_err(error)?
            .into_iter()
            .map(|schedule| SetSchedule {
                schedule,
                signed: None,
            })
            .collect()
    };
    if set.is_empty() {
        return Err(CheckError::Empty);
    }
    Ok(set)
}

/// One device of the fleet state.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceState {
    /// Device id, as in the schedules.
    pub device: DeviceId,
    /// Present state of charge, Wh.
    pub soc_wh: i64,
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
    /// Standing loss per hour, fraction of stored energy.
    pub standing_loss_per_hour: f64,
    /// Wear cost, EUR per MWh of throughput (decimal string).
    pub wear_cost_eur_per_mwh: Decimal,
}

impl DeviceState {
    fn battery(&self) -> BatterySpec {
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

/// The fleet state file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetState {
    /// The devices.
    pub devices: Vec<DeviceState>,
    /// Extra cost per MWh of imbalance (decimal string, default 0).
    #[serde(default)]
    pub imbalance_penalty_eur_per_mwh: Decimal,
}

/// Parses and checks a fleet state.
///
/// # Errors
/// [`CheckError::FleetState`], [`CheckError::Battery`], [`CheckError::DuplicateDevice`].
pub fn parse_fleet_state(file: &str, text: &str) -> Result<FleetState, CheckError> {
    let fleet: FleetState =
        serde_json::from_str(text).map_err(|source| CheckError::FleetState {
            file: file.to_string(),
            source,
        })?;
    for (i, d) in fleet.devices.iter().enumerate() {
        if fleet.devices[..i].iter().any(|o| o.device == d.device) {
            return Err(CheckError::DuplicateDevice(d.device.to_string()));
        }
        let battery_error = |message: String| CheckError::Battery {
            device: d.device.to_string(),
            message,
        };
        d.battery()
            .validate()
            .map_err(|e| battery_error(e.to_string()))?;
        if !(d.soc_min_wh..=d.soc_max_wh).contains(&d.soc_wh) {
            return Err(battery_error("soc_wh outside the SoC limits".into()));
        }
        if d.wear_cost_eur_per_mwh < Decimal::ZERO {
            return Err(battery_error("wear cost must be >= 0".into()));
        }
    }
    if fleet.imbalance_penalty_eur_per_mwh < Decimal::ZERO {
        return Err(CheckError::Battery {
            device: "-".into(),
            message: "imbalance_penalty_eur_per_mwh must be >= 0".into(),
        });
    }
    Ok(fleet)
}

/// What is wrong at a device-interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ViolationKind {
    /// The schedule breaks a protocol rule: the agent rejects it as `Malformed`.
    Malformed,
    /// The signature does not verify: the agent rejects it as `InvalidSignature`.
    InvalidSignature,
    /// The target exceeds the device's power limits: the agent rejects the schedule
    /// (`ExceedsDeviceLimits`); the replay clamps the target.
    PowerLimit,
    /// The SoC limits stop the battery from holding the target for the interval.
    SocLimit,
}

/// One reported device-interval (or schedule, for `Malformed`/`InvalidSignature`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The device.
    pub device: String,
    /// Interval start (or the schedule's `valid_from`).
    pub at: UtcNanos,
    /// Schedule version concerned.
    pub version: u64,
    /// What is wrong.
    pub kind: ViolationKind,
    /// The scheduled target, W.
    pub target_w: i64,
    /// What the device would actually do, W.
    pub feasible_w: i64,
}

/// The result of a check.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckReport {
    /// Devices replayed.
    pub n_devices: usize,
    /// Device-intervals replayed.
    pub n_device_intervals: u64,
    /// Every violation, by device then time.
    pub violations: Vec<Violation>,
    /// Scheduled net energy sold, MWh (exact).
    pub scheduled_mwh: Decimal,
    /// Delivered net energy, MWh (exact).
    pub delivered_mwh: Decimal,
    /// Sum over intervals of |delivered − scheduled| (fleet), MWh.
    pub imbalance_abs_mwh: Decimal,
    /// Scheduled energy at the price, EUR.
    pub market_eur: Decimal,
    /// Imbalance at the price minus the penalty, EUR.
    pub imbalance_eur: Decimal,
    /// Wear of the delivered throughput, EUR.
    pub wear_eur: Decimal,
    /// `market + imbalance − wear`, EUR.
    pub profit_eur: Decimal,
}

fn mwh(j: i64) -> Decimal {
    Decimal::from(j) / Decimal::from(J_PER_MWH)
}

fn price_at(series: &PriceSeries, at: UtcNanos) -> Result<Decimal, CheckError> {
    let dt = at.to_datetime();
    let missing = || CheckError::NoPrice(dt.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    let day = series.day_index_of(dt.date_naive()).ok_or_else(missing)?;
    let per_day = series.periods_per_day();
    let slot = dt.num_seconds_from_midnight() as usize * per_day / 86_400;
    series
        .day_prices(day)
        .get(slot)
        .copied()
        .ok_or_else(missing)
}

/// The target of `schedule` at `t` (in its window: the period in force; else fallback).
fn target_at(schedule: &Schedule, t: UtcNanos) -> i64 {
    if (schedule.valid_from..schedule.valid_until).contains(&t) {
        let elapsed_s = (t.0 - schedule.valid_from.0) / NS_PER_S;
        schedule
            .period_index_at(elapsed_s)
            .and_then(|i| schedule.periods.get(i))
            .map_or(0, |p| p.target_w)
    } else {
        schedule.fallback.target_w_at(t)
    }
}

/// Replays `set` against `fleet` at `interval_s` with prices from `series`; checks
/// signatures when `verifier` is given. See the module doc.
///
/// # Errors
/// [`CheckError`] for an unknown device, a bad interval, a missing price or a replay
/// beyond [`DEVICE_INTERVALS_MAX`].
pub fn check_schedules(
    set: &[SetSchedule],
    fleet: &FleetState,
    series: &PriceSeries,
    interval_s: i64,
    verifier: Option<&ScheduleVerifier>,
) -> Result<CheckReport, CheckError> {
    if interval_s <= 0 || 3_600 % interval_s != 0 {
        return Err(CheckError::Interval(interval_s));
    }
    let interval_ns = interval_s * NS_PER_S;
    let mut violations = Vec::new();
    for entry in set {
        let s = &entry.schedule;
        if !fleet.devices.iter().any(|d| d.device == s.device) {
            return Err(CheckError::UnknownDevice {
                device: s.device.to_string(),
                schedule_id: s.schedule_id.to_string(),
                version: s.version,
            });
        }
        let bad = |kind| Violation {
            device: s.device.to_string(),
            at: s.valid_from,
            version: s.version,
            kind,
            target_w: 0,
            feasible_w: 0,
        };
        if s.validate().is_err() {
            violations.push(bad(ViolationKind::Malformed));
        } else if let (Some(verifier), Some(signed)) = (verifier, &entry.signed)
            && verifier.verify(signed).is_err()
        {
            violations.push(bad(ViolationKind::InvalidSignature));
        }
    }
    // Only schedules an agent could accept take part in the replay.
    let usable: Vec<&Schedule> = set
        .iter()
        .map(|e| &e.schedule)
        .filter(|s| {
            !violations
                .iter()
                .any(|v| v.device == s.device.as_str() && v.version == s.version)
        })
        .collect();
    let start = usable.iter().map(|s| s.valid_from.0).min().unwrap_or(0);
    let end = usable.iter().map(|s| s.valid_until.0).max().unwrap_or(0);
    let start = start.div_euclid(interval_ns) * interval_ns;
    let n_intervals = ((end - start).max(0) + interval_ns - 1) / interval_ns;
    let n_intervals = n_intervals as usize;
    let work = n_intervals as u64 * fleet.devices.len() as u64;
    if work > DEVICE_INTERVALS_MAX {
        return Err(CheckError::TooLarge(work));
    }
    let prices: Vec<Decimal> = (0..n_intervals)
        .map(|k| price_at(series, UtcNanos(start + k as i64 * interval_ns)))
        .collect::<Result<_, _>>()?;
    let mut scheduled_j = vec![0_i64; n_intervals];
    let mut delivered_j = vec![0_i64; n_intervals];
    let mut wear = Decimal::ZERO;
    for device in &fleet.devices {
        let spec = device.battery();
        // The agent's own limit check.
        let limits = DeviceLimits {
            max_charge_w: spec.max_charge_w,
            max_discharge_w: spec.max_discharge_w,
        };
        let mut mine: Vec<&Schedule> = usable
            .iter()
            .copied()
            .filter(|s| s.device == device.device)
            .collect();
        mine.sort_by_key(|s| s.version);
        let mut soc = device.soc_wh as f64;
        let mut throughput_j = 0_i64;
        for k in 0..n_intervals {
            let t = UtcNanos(start + k as i64 * interval_ns);
            let governing = mine.iter().rev().find(|s| s.issued_at <= t);
            let Some(schedule) = governing else {
                soc = spec.soc_after_wh(soc, 0, interval_s);
                continue;
            };
            let target_w = target_at(schedule, t);
            let allowed_w = limits.clamp(target_w);
            let feasible_w = spec.feasible_power_w(soc, allowed_w, interval_s);
            let kind = if allowed_w != target_w {
                Some(ViolationKind::PowerLimit)
            } else if feasible_w != target_w {
                Some(ViolationKind::SocLimit)
            } else {
                None
            };
            if let Some(kind) = kind {
                violations.push(Violation {
                    device: device.device.to_string(),
                    at: t,
                    version: schedule.version,
                    kind,
                    target_w,
                    feasible_w,
                });
            }
            scheduled_j[k] += target_w * interval_s;
            delivered_j[k] += feasible_w * interval_s;
            throughput_j += feasible_w.abs() * interval_s;
            soc = spec.soc_after_wh(soc, feasible_w, interval_s);
        }
        wear += mwh(throughput_j) * device.wear_cost_eur_per_mwh;
    }
    let penalty = fleet.imbalance_penalty_eur_per_mwh;
    let (mut market, mut imbalance, mut imbalance_abs) =
        (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
    for k in 0..n_intervals {
        let diff = mwh(delivered_j[k] - scheduled_j[k]);
        market += mwh(scheduled_j[k]) * prices[k];
        imbalance += diff * prices[k] - diff.abs() * penalty;
        imbalance_abs += diff.abs();
    }
    let round = |d: Decimal| d.round_dp(6);
    Ok(CheckReport {
        n_devices: fleet.devices.len(),
        n_device_intervals: work,
        violations,
        scheduled_mwh: round(mwh(scheduled_j.iter().sum())),
        delivered_mwh: round(mwh(delivered_j.iter().sum())),
        imbalance_abs_mwh: round(imbalance_abs),
        market_eur: round(market),
        imbalance_eur: round(imbalance),
        wear_eur: round(wear),
        profit_eur: round(market + imbalance - wear),
    })
}
