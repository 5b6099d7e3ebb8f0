//! Read endpoints made for the web dashboard: fleet summary (SoC histogram, fleet
//! power against the scheduled plan), roll-out progress per schedule version with
//! the slowest devices, recent trades of a product, devices in fault, and the
//! day-ahead cycle per delivery period (prices, positions and P&L by component).
//!
//! Everything is read from the database the dispatch orchestrator and the engine
//! projection write; nothing here changes state. Each answer is bounded (named
//! limits below) so a dashboard polling a 10,000-device fleet stays cheap.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use voltex_dispatch::message::{HealthFlags, SignedSchedule};
use voltex_market::{Price, Qty, Side};

use super::SharedState;
use crate::server::auth::{Auth, Role};
use crate::server::problem::ApiError;

/// Roles that may read fleet data (as in `fleet.rs`).
const FLEET_READERS: &[Role] = &[Role::Operator, Role::Quant];
/// Bins of the SoC histogram (10 % each).
const SOC_BINS: usize = 10;
/// Longest power window, seconds.
const POWER_WINDOW_S_MAX: i64 = 24 * 3600;
/// Most buckets in a power series.
const POWER_BUCKETS_MAX: i64 = 600;
/// Most schedule versions summarised at once.
const VERSIONS_MAX: u32 = 50;
/// Most slow devices listed.
const SLOWEST_MAX: i64 = 10;
/// Most schedules whose plan is evaluated for the power chart.
const PLAN_SCHEDULES_MAX: i64 = 20_000;
/// Instants averaged per power bucket for the plan (one per second up to this).
const PLAN_SAMPLES_PER_BUCKET_MAX: i64 = 10;
/// Most trades per request.
const TRADES_MAX: u32 = 200;

fn db_error(error: crate::db::DbError) -> ApiError {
    if error.is_unavailable() {
        ApiError::unavailable(format!("database unavailable: {error}"))
    } else {
        ApiError::internal(error)
    }
}

fn sql_error(error: sqlx::Error) -> ApiError {
    db_error(crate::db::DbError::from(error))
}

fn int(row: &sqlx::any::AnyRow, column: &str) -> Result<i64, ApiError> {
    row.try_get::<i64, _>(column).map_err(sql_error)
}

fn int_opt(row: &sqlx::any::AnyRow, column: &str) -> Result<Option<i64>, ApiError> {
    row.try_get::<Option<i64>, _>(column).map_err(sql_error)
}

/// Fleet summary query.
#[derive(Clone, Debug, Deserialize, IntoParams)]
pub struct FleetSummaryQuery {
    /// Power series window ending now, seconds (default 900, at most 86,400).
    pub window_s: Option<i64>,
    /// Power series bucket, seconds (default 10; at least window/600).
    pub bucket_s: Option<i64>,
}

/// One bucket of fleet power.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PowerPoint {
    /// Bucket start, UTC ns.
    pub at_ns: i64,
    /// Measured fleet power, W (discharge positive): the mean telemetry sample of the
    /// bucket times the devices that reported in it; `None` when none reported.
    pub measured_w: Option<i64>,
    /// Scheduled fleet power, W: per device the newest schedule version covering the
    /// instant, summed over devices, averaged over up to 10 instants of the bucket
    /// (ramps and randomised starts ignored).
    pub plan_w: i64,
    /// Devices that reported telemetry in the bucket.
    pub n_reporting: i64,
}

/// Fleet summary for the dashboard.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FleetSummary {
    /// Registered devices.
    pub n_devices: i64,
    /// Devices online by heartbeat.
    pub n_online: i64,
    /// Devices with a reported state of charge, per 10 % SoC bin (0–10 %, …, 90–100 %).
    pub soc_histogram: Vec<i64>,
    /// Fleet power per bucket, oldest first.
    pub power: Vec<PowerPoint>,
    /// Server time of the answer, UTC ns.
    pub as_of_ns: i64,
}

/// SoC bin of a device (0..SOC_BINS), `None` without a usable capacity.
fn soc_bin(soc_wh: i64, capacity_wh: i64) -> Option<usize> {
    if capacity_wh <= 0 {
        return None;
    }
    let fraction = (soc_wh.max(0) as f64 / capacity_wh as f64).min(1.0);
    Some(((fraction * SOC_BINS as f64) as usize).min(SOC_BINS - 1))
}

/// The planned power of one device at `at_ns`, W: the setpoint of the newest of
/// `versions` (newest first) whose window covers it, 0 when none does.
fn plan_at(versions: &[SignedSchedule], at_ns: i64) -> i64 {
    versions
        .iter()
        .find(|signed| {
            signed.schedule.valid_from.nanos() <= at_ns
                && at_ns < signed.schedule.valid_until.nanos()
        })
        .map_or(0, |signed| setpoint_at(signed, at_ns))
}

/// Setpoint of `schedule` at `at_ns`, W (0 outside its window).
fn setpoint_at(schedule: &SignedSchedule, at_ns: i64) -> i64 {
    let schedule = &schedule.schedule;
    if at_ns < schedule.valid_from.nanos() || at_ns >= schedule.valid_until.nanos() {
        return 0;
    }
    let offset_s = (at_ns - schedule.valid_from.nanos()) / 1_000_000_000;
    schedule
        .periods
        .iter()
        .take_while(|period| i64::from(period.offset_s) <= offset_s)
        .last()
        .map_or(0, |period| period.target_w)
}

/// Fleet summary: counts, SoC histogram, measured power against the plan.
#[utoipa::path(get, path = "/api/v1/dashboard/fleet", tag = "dashboard",
    params(FleetSummaryQuery), security(("bearer" = [])),
    responses((status = 200, description = "Fleet summary", body = FleetSummary)))]
pub async fn fleet_summary(
    State(state): State<SharedState>,
    auth: Auth,
    query: Result<Query<FleetSummaryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<FleetSummary>, ApiError> {
    auth.require(FLEET_READERS)?;
    let Query(query) = query?;
    let window_s = query.window_s.unwrap_or(900);
    if !(1..=POWER_WINDOW_S_MAX).contains(&window_s) {
        return Err(ApiError::bad_request(
            "bad_window",
            format!("window_s must be in 1..={POWER_WINDOW_S_MAX}"),
        ));
    }
    let bucket_s = query
        .bucket_s
        .unwrap_or(10)
        .max(1)
        .max(window_s / POWER_BUCKETS_MAX);
    let pool = state.db.pool();
    let now_ns = state.exchange.now().nanos();
    let bucket_ns = bucket_s * 1_000_000_000;
    let from_ns = (now_ns - window_s * 1_000_000_000) / bucket_ns * bucket_ns;

    let mut n_devices = 0;
    let mut n_online = 0;
    let mut soc_histogram = vec![0_i64; SOC_BINS];
    let devices = sqlx::query("SELECT online, last_soc_wh, capacity_wh FROM devices")
        .fetch_all(pool)
        .await
        .map_err(sql_error)?;
    for row in &devices {
        n_devices += 1;
        if int(row, "online")? != 0 {
            n_online += 1;
        }
        if let Some(soc_wh) = int_opt(row, "last_soc_wh")?
            && let Some(bin) = soc_bin(soc_wh, int(row, "capacity_wh")?)
        {
            soc_histogram[bin] += 1;
        }
    }

    let measured = sqlx::query(
        "SELECT (at_ns / $1) * $1 AS bucket, CAST(SUM(power_w) AS BIGINT) AS sum_w, COUNT(*) AS n_samples, \
         COUNT(DISTINCT device_id) AS n_reporting FROM telemetry WHERE at_ns >= $2 \
         GROUP BY bucket",
    )
    .bind(bucket_ns)
    .bind(from_ns)
    .fetch_all(pool)
    .await
    .map_err(sql_error)?;
    let mut by_bucket: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for row in &measured {
        let n_samples = int(row, "n_samples")?;
        let n_reporting = int(row, "n_reporting")?;
        let sum_w = int(row, "sum_w")?;
        let measured_w = if n_samples > 0 {
            sum_w / n_samples * n_reporting
        } else {
            0
        };
        by_bucket.insert(int(row, "bucket")?, (measured_w, n_reporting));
    }

    let active = sqlx::query(
        "SELECT payload_json FROM schedules WHERE valid_until_ns > $1 AND valid_from_ns <= $2 \
         AND status NOT IN ('rejected', 'failed') ORDER BY device_id, version DESC LIMIT $3",
    )
    .bind(from_ns)
    .bind(now_ns)
    .bind(PLAN_SCHEDULES_MAX)
    .fetch_all(pool)
    .await
    .map_err(sql_error)?;
    // Per device, newest version first: at any instant the newest version whose
    // window covers it is the plan (a superseded version was the plan until then).
    let mut by_device: BTreeMap<String, Vec<SignedSchedule>> = BTreeMap::new();
    for row in &active {
        let text: String = row.try_get("payload_json").map_err(sql_error)?;
        match serde_json::from_str::<SignedSchedule>(&text) {
            Ok(schedule) => by_device
                .entry(schedule.schedule.device.as_str().to_string())
                .or_default()
                .push(schedule),
            Err(error) => tracing::warn!(%error, "stored schedule payload does not parse"),
        }
    }
    let n_samples = bucket_s.clamp(1, PLAN_SAMPLES_PER_BUCKET_MAX);
    let step_ns = bucket_ns / n_samples;
    let mut power = Vec::new();
    let mut at_ns = from_ns;
    while at_ns <= now_ns {
        let (measured_w, n_reporting) = by_bucket.get(&at_ns).copied().unwrap_or((0, 0));
        power.push(PowerPoint {
            at_ns,
            measured_w: (n_reporting > 0).then_some(measured_w),
            plan_w: (0..n_samples)
                .map(|sample| {
                    let t_ns = at_ns + sample * step_ns;
                    by_device
                        .values()
                        .map(|versions| plan_at(versions, t_ns))
                        .sum::<i64>()
                })
                .sum::<i64>()
                / n_samples,
            n_reporting,
        });
        at_ns += bucket_ns;
    }
    Ok(Json(FleetSummary {
        n_devices,
        n_online,
        soc_histogram,
        power,
        as_of_ns: now_ns,
    }))
}

/// Roll-out query.
#[derive(Clone, Debug, Deserialize, IntoParams)]
pub struct RolloutQuery {
    /// Newest versions summarised (default 10, at most 50).
    pub limit: Option<u32>,
}

/// Progress of one schedule version across the fleet.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct VersionProgress {
    /// Schedule version (one per roll-out in `voltex up`).
    pub version: u64,
    /// Devices it was issued to.
    pub n_devices: i64,
    /// Devices per delivery status (`issued`, `received`, `accepted`, `started`,
    /// `completed`, `rejected`, `superseded`, `failed`).
    pub by_status: BTreeMap<String, i64>,
    /// First issue time, UTC ns.
    pub issued_at_ns: i64,
    /// Devices that reached accepted or beyond without failing, over all devices.
    pub success_rate: f64,
}

/// A device slow to confirm its latest version.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SlowDevice {
    /// Device.
    pub device_id: String,
    /// Version.
    pub version: u64,
    /// Current status.
    pub status: String,
    /// Issue to last status change, ms (until now while still issued).
    pub latency_ms: i64,
    /// Delivery attempts.
    pub attempts: i64,
}

/// Roll-out progress per version and the slowest devices of the newest one.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RolloutSummary {
    /// Newest versions first.
    pub versions: Vec<VersionProgress>,
    /// Slowest devices of the newest version, slowest first.
    pub slowest: Vec<SlowDevice>,
}

/// Statuses counted as a success (the device took the schedule).
const SUCCESS_STATUSES: &[&str] = &["accepted", "started", "completed", "superseded"];

/// Roll-out progress per schedule version.
#[utoipa::path(get, path = "/api/v1/dashboard/rollouts", tag = "dashboard",
    params(RolloutQuery), security(("bearer" = [])),
    responses((status = 200, description = "Roll-out progress", body = RolloutSummary)))]
pub async fn rollouts(
    State(state): State<SharedState>,
    auth: Auth,
    query: Result<Query<RolloutQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RolloutSummary>, ApiError> {
    auth.require(FLEET_READERS)?;
    let Query(query) = query?;
    let limit = i64::from(query.limit.unwrap_or(10).clamp(1, VERSIONS_MAX));
    let pool = state.db.pool();
    let rows = sqlx::query(
        "SELECT version, status, COUNT(*) AS n, MIN(issued_at_ns) AS issued_at_ns FROM schedules \
         WHERE version IN (SELECT DISTINCT version FROM schedules ORDER BY version DESC LIMIT $1) \
         GROUP BY version, status",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(sql_error)?;
    let mut versions: BTreeMap<i64, VersionProgress> = BTreeMap::new();
    for row in &rows {
        let version = int(row, "version")?;
        let status: String = row.try_get("status").map_err(sql_error)?;
        let n = int(row, "n")?;
        let issued_at_ns = int(row, "issued_at_ns")?;
        let entry = versions.entry(version).or_insert_with(|| VersionProgress {
            version: u64::try_from(version).unwrap_or(0),
            n_devices: 0,
            by_status: BTreeMap::new(),
            issued_at_ns,
            success_rate: 0.0,
        });
        entry.n_devices += n;
        entry.issued_at_ns = entry.issued_at_ns.min(issued_at_ns);
        *entry.by_status.entry(status).or_insert(0) += n;
    }
    let mut versions: Vec<VersionProgress> = versions.into_values().rev().collect();
    for progress in &mut versions {
        let n_ok: i64 = SUCCESS_STATUSES
            .iter()
            .filter_map(|status| progress.by_status.get(*status))
            .sum();
        progress.success_rate = if progress.n_devices > 0 {
            n_ok as f64 / progress.n_devices as f64
        } else {
            0.0
        };
    }
    let mut slowest = Vec::new();
    if let Some(newest) = versions.first() {
        let now_ns = state.exchange.now().nanos();
        let rows = sqlx::query(
            "SELECT device_id, status, attempts, \
             (CASE WHEN status = 'issued' THEN $2 ELSE status_at_ns END) - issued_at_ns AS latency_ns \
             FROM schedules WHERE version = $1 ORDER BY latency_ns DESC, device_id LIMIT $3",
        )
        .bind(i64::try_from(newest.version).unwrap_or(i64::MAX))
        .bind(now_ns)
        .bind(SLOWEST_MAX)
        .fetch_all(pool)
        .await
        .map_err(sql_error)?;
        for row in &rows {
            slowest.push(SlowDevice {
                device_id: row.try_get("device_id").map_err(sql_error)?,
                version: newest.version,
                status: row.try_get("status").map_err(sql_error)?,
                latency_ms: int(row, "latency_ns")? / 1_000_000,
                attempts: int(row, "attempts")?,
            });
        }
    }
    Ok(Json(RolloutSummary { versions, slowest }))
}

/// Trades query.
#[derive(Clone, Debug, Deserialize, IntoParams)]
pub struct TradesQuery {
    /// Most trades, newest first (default 50, at most 200).
    pub limit: Option<u32>,
}

/// One trade as the dashboard shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TradeDto {
    /// Event sequence number.
    pub event_seq: u64,
    /// Trade id within the product.
    pub trade_id: u64,
    /// Engine time, UTC ns.
    pub at_ns: i64,
    /// Price, EUR/MWh.
    pub price_eur_per_mwh: String,
    /// Quantity, MW.
    pub qty_mw: String,
    /// The aggressor's side (`buy` or `sell`).
    pub aggressor_side: String,
}

/// Recent trades of a product, newest first (market data, public like the depth).
#[utoipa::path(get, path = "/api/v1/dashboard/trades/{product}", tag = "dashboard",
    params(("product" = u32, Path, description = "Product id"), TradesQuery),
    responses((status = 200, description = "Trades", body = [TradeDto])))]
pub async fn recent_trades(
    State(state): State<SharedState>,
    path: Result<Path<u32>, axum::extract::rejection::PathRejection>,
    query: Result<Query<TradesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<TradeDto>>, ApiError> {
    let Path(product) = path?;
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(50).clamp(1, TRADES_MAX);
    let rows = state
        .db
        .list_trades(product, None, limit)
        .await
        .map_err(db_error)?;
    let rules = state.exchange.rules();
    Ok(Json(
        rows.iter()
            .map(|trade| TradeDto {
                event_seq: trade.event_seq,
                trade_id: trade.trade_id,
                at_ns: trade.at_ns,
                price_eur_per_mwh: Price(trade.price_ticks).to_decimal().to_string(),
                qty_mw: rules.qty_to_mw(Qty(trade.qty_lots)).normalize().to_string(),
                aggressor_side: match trade.aggressor_side {
                    Side::Buy => "buy",
                    Side::Sell => "sell",
                }
                .to_string(),
            })
            .collect(),
    ))
}

/// Health flags that put a device in the fault list. Running on the fallback control
/// is a state, not a fault: it is named in `flags` but does not list a device alone.
const FAULT_MASK: u32 = HealthFlags::DRIVER_FAULT
    | HealthFlags::EMERGENCY_STOP
    | HealthFlags::CLOCK_SKEW
    | HealthFlags::OVER_TEMPERATURE;

/// Names of the health flags, in bit order.
const FLAG_NAMES: [(u32, &str); 5] = [
    (HealthFlags::DRIVER_FAULT, "driver_fault"),
    (HealthFlags::EMERGENCY_STOP, "emergency_stop"),
    (HealthFlags::ON_FALLBACK, "on_fallback"),
    (HealthFlags::CLOCK_SKEW, "clock_skew"),
    (HealthFlags::OVER_TEMPERATURE, "over_temperature"),
];

/// Faults query.
#[derive(Clone, Debug, Deserialize, IntoParams)]
pub struct FaultsQuery {
    /// Most devices (default 50, at most 1000).
    pub limit: Option<u32>,
}

/// A device whose newest telemetry reports a fault.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DeviceFault {
    /// The device.
    pub device_id: String,
    /// Time of the sample, UTC ns (agent clock).
    pub at_ns: i64,
    /// The raw health flags.
    pub health_flags: u32,
    /// The flags by name (`driver_fault`, `emergency_stop`, `on_fallback`,
    /// `clock_skew`, `over_temperature`; `unknown_bit_N` for others).
    pub flags: Vec<String>,
    /// SoC in that sample, Wh.
    pub soc_wh: i64,
    /// Temperature in that sample, milli-degrees Celsius.
    pub temperature_mc: i32,
}

/// The names of the set bits of `health_flags`.
fn flag_names(health_flags: u32) -> Vec<String> {
    (0..32)
        .map(|bit| 1_u32 << bit)
        .filter(|flag| health_flags & flag != 0)
        .map(|flag| {
            FLAG_NAMES
                .iter()
                .find(|(known, _)| *known == flag)
                .map_or_else(
                    || format!("unknown_bit_{}", flag.trailing_zeros()),
                    |(_, name)| (*name).to_string(),
                )
        })
        .collect()
}

/// Devices in fault: those whose newest telemetry sample has a driver fault, an
/// engaged emergency stop, clock skew or over-temperature, newest first.
#[utoipa::path(get, path = "/api/v1/dashboard/faults", tag = "dashboard",
    params(FaultsQuery), security(("bearer" = [])),
    responses((status = 200, description = "Devices in fault", body = [DeviceFault]),
        (status = 400, description = "Bad limit", body = crate::server::problem::Problem)))]
pub async fn faults(
    State(state): State<SharedState>,
    auth: Auth,
    query: Result<Query<FaultsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<DeviceFault>>, ApiError> {
    auth.require(FLEET_READERS)?;
    let Query(query) = query?;
    let limit = super::checked_limit(query.limit, 50, crate::db::PAGE_LIMIT_MAX)?;
    let rows = state
        .db
        .devices_in_fault(FAULT_MASK, limit)
        .await
        .map_err(db_error)?;
    Ok(Json(
        rows.into_iter()
            .map(|row| DeviceFault {
                flags: flag_names(row.health_flags),
                device_id: row.device_id,
                at_ns: row.at_ns,
                health_flags: row.health_flags,
                soc_wh: row.soc_wh,
                temperature_mc: row.temperature_mc,
            })
            .collect(),
    ))
}

/// Day-ahead query.
#[derive(Clone, Debug, Deserialize, IntoParams)]
pub struct DayAheadQuery {
    /// Periods starting at or after this instant, UTC ns (default: all).
    pub from_ns: Option<i64>,
    /// Periods starting before this instant, UTC ns (default: all).
    pub to_ns: Option<i64>,
    /// The newest periods in the range (default 24 × 14, at most 1000).
    pub limit: Option<u32>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// Most day-ahead periods per request.
const DAYAHEAD_PERIODS_MAX: u32 = 1000;

/// The day-ahead cycle per delivery period: clearing and forecast prices, committed,
/// delivered and perfect-foresight positions, and the P&L by component.
#[utoipa::path(get, path = "/api/v1/dashboard/dayahead", tag = "dashboard",
    params(DayAheadQuery), security(("bearer" = [])),
    responses((status = 200, description = "Periods, oldest first", body = [crate::db::DayAheadPeriodRow]),
        (status = 400, description = "Bad range, limit or format", body = crate::server::problem::Problem)))]
pub async fn dayahead(
    State(state): State<SharedState>,
    auth: Auth,
    query: Result<Query<DayAheadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    auth.require(FLEET_READERS)?;
    let Query(query) = query?;
    let (from_ns, to_ns) = super::time_range_ns(query.from_ns, query.to_ns)?;
    let limit = super::checked_limit(query.limit, 24 * 14, DAYAHEAD_PERIODS_MAX)?;
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "bad_format",
                format!("format {other:?}: use json or csv"),
            ));
        }
    };
    let periods = state
        .db
        .list_dayahead_periods(from_ns, to_ns, limit)
        .await
        .map_err(db_error)?;
    if !csv {
        return Ok(Json(periods).into_response());
    }
    let optional = |value: Option<i64>| value.map(|v| v.to_string()).unwrap_or_default();
    let mut text = String::from(
        "period_start_ns,period_len_s,delivery_day,delivery_hour,clearing_price_cents_per_mwh,\
         forecast_price_cents_per_mwh,model_name,model_version,committed_w,perfect_foresight_w,\
         trading_cents,perfect_foresight_cents,delivered_w,imbalance_cents,wear_cents,planned_w\n",
    );
    for p in &periods {
        // Model names are checked identifiers from the server's own registry, but quote
        // them anyway: a CSV field never breaks the row.
        text.push_str(&format!(
            "{},{},{},{},{},{},\"{}\",{},{},{},{},{},{},{},{},{}\n",
            p.period_start_ns,
            p.period_len_s,
            p.delivery_day,
            p.delivery_hour,
            p.clearing_price_cents_per_mwh,
            p.forecast_price_cents_per_mwh,
            p.model_name.replace('"', "\"\""),
            p.model_version,
            p.committed_w,
            p.perfect_foresight_w,
            p.trading_cents,
            p.perfect_foresight_cents,
            optional(p.delivered_w),
            optional(p.imbalance_cents),
            optional(p.wear_cents),
            optional(p.planned_w),
        ));
    }
    Ok((
        [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        text,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_flags_are_named_and_unknown_bits_kept() {
        assert!(flag_names(0).is_empty());
        assert_eq!(
            flag_names(HealthFlags::DRIVER_FAULT | HealthFlags::OVER_TEMPERATURE | (1 << 9)),
            vec!["driver_fault", "over_temperature", "unknown_bit_9"]
        );
        assert_eq!(FAULT_MASK & HealthFlags::ON_FALLBACK, 0);
    }
    use voltex_dispatch::message::{DeviceId, Fallback, Schedule, ScheduleId, SchedulePeriod};
    use voltex_market::UtcNanos;

    fn version(version: u64, from_s: i64, until_s: i64, target_w: i64) -> SignedSchedule {
        SignedSchedule {
            schedule: Schedule {
                device: DeviceId::new("pi-1").expect("device id"),
                schedule_id: ScheduleId(1),
                version,
                issued_at: UtcNanos(0),
                valid_from: UtcNanos(from_s * 1_000_000_000),
                valid_until: UtcNanos(until_s * 1_000_000_000),
                randomize_start_s: 0,
                periods: vec![
                    SchedulePeriod {
                        offset_s: 0,
                        target_w,
                        ramp_s: 0,
                    },
                    SchedulePeriod {
                        offset_s: 5,
                        target_w: 2 * target_w,
                        ramp_s: 0,
                    },
                ]
                .into(),
                fallback: Fallback::Idle,
            },
            signature: Vec::new(),
        }
    }

    #[test]
    fn the_plan_is_the_newest_version_covering_the_instant() {
        // Newest first: v2 covers 10..20 s, v1 covers 0..30 s.
        let versions = [version(2, 10, 20, -100), version(1, 0, 30, 300)];
        let cases = [
            (0, 300),
            (4, 300),
            (5, 600),
            (10, -100),
            (16, -200),
            (20, 600),
            (29, 600),
            (30, 0),
            (-1, 0),
        ];
        for (at_s, expected_w) in cases {
            assert_eq!(
                plan_at(&versions, at_s * 1_000_000_000),
                expected_w,
                "at {at_s} s"
            );
        }
    }

    #[test]
    fn soc_bins_cover_empty_to_full() {
        let cases = [
            (0, 10_000, Some(0)),
            (999, 10_000, Some(0)),
            (1_000, 10_000, Some(1)),
            (9_999, 10_000, Some(9)),
            (10_000, 10_000, Some(9)),
            (12_000, 10_000, Some(9)),
            (-5, 10_000, Some(0)),
            (5_000, 0, None),
        ];
        for (soc_wh, capacity_wh, expected) in cases {
            assert_eq!(
                soc_bin(soc_wh, capacity_wh),
                expected,
                "{soc_wh}/{capacity_wh}"
            );
        }
    }
}
