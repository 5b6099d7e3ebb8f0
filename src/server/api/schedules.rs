//! Issuing schedules over the API: `POST /api/v1/schedules` and the roll-out's
//! progress, `GET /api/v1/rollouts/{rollout_id}`.
//!
//! An operator or quant posts per-device target power periods (W, positive
//! discharges, offsets in seconds from `valid_from`) with one validity window. The
//! handler checks everything it can before anything is signed — known devices, no
//! device twice, periods present and within the device's registered power limits,
//! validity not in the past — then gives each device the next version above the
//! newest it holds and hands the set to the dispatch orchestrator, which signs,
//! persists and rolls out (`crate::server::fleet::Orchestrator::roll_out_with_deadline`).
//! The answer is `202 Accepted` with the roll-out id and each device's schedule id and
//! version: delivery goes on in the background, visible at `GET /api/v1/rollouts/{id}`,
//! `GET /api/v1/schedules/{device_id}` and as `fleet` events on the stream.
//!
//! A server without an orchestrator (plain `voltex serve`) answers 503
//! `orchestrator_unavailable`. Every refusal is a problem document with its own code.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use voltex_dispatch::message::{Fallback, PERIODS_MAX, SchedulePeriod, VALIDITY_S_MAX};
use voltex_dispatch::{DeviceId, Schedule, ScheduleId};
use voltex_market::UtcNanos;

use super::{Ctx, SharedState};
use crate::server::auth::{Auth, Role};
use crate::server::fleet::tracker::TrackerError;
use crate::server::fleet::{RolloutError, RolloutId, RolloutStatus};
use crate::server::problem::{ApiError, Problem};

/// Roles that may issue schedules and read roll-outs.
const SCHEDULERS: &[Role] = &[Role::Operator, Role::Quant];
/// Most devices in one request.
pub const DEVICES_PER_REQUEST_MAX: usize = 10_000;

/// One setpoint period.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeriodDto {
    /// Start, seconds after `valid_from`; strictly increasing, the first 0.
    pub offset_s: u32,
    /// Target power in W: positive discharges, negative charges.
    pub target_w: i64,
    /// Seconds to ramp from the previous setpoint (default 0: step).
    #[serde(default)]
    pub ramp_s: u32,
}

/// The periods for one device.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceScheduleDto {
    /// A registered device.
    pub device_id: String,
    /// Its setpoints.
    pub periods: Vec<PeriodDto>,
}

/// A set of schedules to roll out together.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostSchedules {
    /// Start of validity, RFC 3339 (offsets count from here).
    #[schema(example = "2026-11-27T12:00:00Z")]
    pub valid_from: String,
    /// End of validity (exclusive), RFC 3339; must be in the future.
    #[schema(example = "2026-11-28T12:00:00Z")]
    pub valid_until: String,
    /// Delivery deadline of every version, RFC 3339 (default: the orchestrator's).
    #[serde(default)]
    pub deadline: Option<String>,
    /// One entry per device.
    pub devices: Vec<DeviceScheduleDto>,
}

/// One issued version.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct IssuedSchedule {
    /// Device.
    pub device_id: String,
    /// Schedule id (128-bit, decimal string).
    pub schedule_id: String,
    /// Version (above every earlier version of the device).
    pub version: u64,
}

/// The answer to `POST /api/v1/schedules`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SchedulesAccepted {
    /// Roll-out id (decimal string; see `GET /api/v1/rollouts/{rollout_id}`).
    pub rollout_id: String,
    /// The versions, in request order.
    pub schedules: Vec<IssuedSchedule>,
}

fn parse_time(field: &str, text: &str) -> Result<UtcNanos, ApiError> {
    let parsed = chrono::DateTime::parse_from_rfc3339(text.trim()).map_err(|error| {
        ApiError::bad_request(
            "bad_time",
            format!("{field}: {text:?} is not RFC 3339: {error}"),
        )
    })?;
    UtcNanos::from_datetime(parsed.with_timezone(&chrono::Utc))
        .map_err(|error| ApiError::bad_request("bad_time", format!("{field}: {error}")))
}

fn orchestrator_missing() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "orchestrator_unavailable",
        "this server runs no dispatch orchestrator (start it with `voltex up`)",
    )
}

fn rollout_error(error: RolloutError) -> ApiError {
    match error {
        RolloutError::Invalid { .. } => {
            ApiError::bad_request("invalid_schedule", error.to_string())
        }
        RolloutError::Tracker(TrackerError::StaleVersion { .. }) => {
            ApiError::new(StatusCode::CONFLICT, "stale_version", error.to_string())
        }
        RolloutError::Tracker(TrackerError::DuplicateDevice(_)) => {
            ApiError::bad_request("duplicate_device", error.to_string())
        }
        RolloutError::Tracker(TrackerError::TooManyDevices(_)) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_devices",
            error.to_string(),
        ),
        RolloutError::Tracker(TrackerError::Empty) => {
            ApiError::bad_request("no_devices", error.to_string())
        }
        RolloutError::Store(crate::server::fleet::StoreError::Refused(detail)) => {
            ApiError::new(StatusCode::CONFLICT, "stale_version", detail)
        }
        RolloutError::Stopped => orchestrator_missing(),
        other => ApiError::internal(other),
    }
}

fn db_error(error: crate::db::DbError) -> ApiError {
    if error.is_unavailable() {
        ApiError::unavailable(format!("database unavailable: {error}"))
    } else {
        ApiError::internal(error)
    }
}

/// Checks the request and builds one schedule per device (not yet signed).
async fn build_schedules(
    state: &SharedState,
    body: &PostSchedules,
) -> Result<(Vec<Schedule>, Option<UtcNanos>), ApiError> {
    if body.devices.is_empty() {
        return Err(ApiError::bad_request("no_devices", "devices is empty"));
    }
    if body.devices.len() > DEVICES_PER_REQUEST_MAX {
        return Err(ApiError::bad_request(
            "too_many_devices",
            format!("at most {DEVICES_PER_REQUEST_MAX} devices per request"),
        ));
    }
    let valid_from = parse_time("valid_from", &body.valid_from)?;
    let valid_until = parse_time("valid_until", &body.valid_until)?;
    let deadline = body
        .deadline
        .as_deref()
        .map(|text| parse_time("deadline", text))
        .transpose()?;
    if valid_until <= valid_from {
        return Err(ApiError::bad_request(
            "invalid_validity",
            "valid_until must be after valid_from",
        ));
    }
    if valid_until.nanos() - valid_from.nanos() > VALIDITY_S_MAX * 1_000_000_000 {
        return Err(ApiError::bad_request(
            "invalid_validity",
            format!("validity longer than {VALIDITY_S_MAX} s"),
        ));
    }
    let now = state.exchange.now();
    if valid_until <= now {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validity_in_past",
            format!("valid_until {} is not after now", body.valid_until),
        ));
    }
    if deadline.is_some_and(|deadline| deadline <= now) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validity_in_past",
            "deadline is not after now",
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(body.devices.len());
    let mut schedules = Vec::with_capacity(body.devices.len());
    for entry in &body.devices {
        let device = DeviceId::new(entry.device_id.clone())
            .map_err(|error| ApiError::bad_request("invalid_device_id", error.to_string()))?;
        if !seen.insert(entry.device_id.as_str()) {
            return Err(ApiError::bad_request(
                "duplicate_device",
                format!("device {} appears twice", entry.device_id),
            ));
        }
        if entry.periods.is_empty() {
            return Err(ApiError::bad_request(
                "empty_periods",
                format!("device {}: no periods", entry.device_id),
            ));
        }
        if entry.periods.len() > PERIODS_MAX {
            return Err(ApiError::bad_request(
                "too_many_periods",
                format!(
                    "device {}: more than {PERIODS_MAX} periods",
                    entry.device_id
                ),
            ));
        }
        let row = state
            .db
            .get_device(&entry.device_id)
            .await
            .map_err(db_error)?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown_device",
                    format!("device {} is not registered", entry.device_id),
                )
            })?;
        for period in &entry.periods {
            if period.target_w > row.max_discharge_w || period.target_w < -row.max_charge_w {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "power_beyond_limits",
                    format!(
                        "device {}: {} W at offset {} s is outside [-{}, {}] W",
                        entry.device_id,
                        period.target_w,
                        period.offset_s,
                        row.max_charge_w,
                        row.max_discharge_w
                    ),
                ));
            }
        }
        let schedule = Schedule {
            device: device.clone(),
            schedule_id: ScheduleId(rand::random::<u128>()),
            version: row.latest_schedule_version.saturating_add(1),
            issued_at: now,
            valid_from,
            valid_until,
            randomize_start_s: 0,
            periods: entry
                .periods
                .iter()
                .map(|period| SchedulePeriod {
                    offset_s: period.offset_s,
                    target_w: period.target_w,
                    ramp_s: period.ramp_s,
                })
                .collect(),
            fallback: Fallback::Idle,
        };
        schedule.validate().map_err(|error| {
            ApiError::bad_request(
                "invalid_schedule",
                format!("device {}: {error}", entry.device_id),
            )
        })?;
        schedules.push(schedule);
    }
    Ok((schedules, deadline))
}

/// Issues schedules to devices through the dispatch orchestrator.
#[utoipa::path(post, path = "/api/v1/schedules", tag = "fleet", request_body = PostSchedules,
    security(("bearer" = [])),
    responses((status = 202, body = SchedulesAccepted), (status = 400, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem), (status = 503, body = Problem)))]
pub async fn post_schedules(
    State(state): State<SharedState>,
    auth: Auth,
    ctx: Ctx,
    body: Result<Json<PostSchedules>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<SchedulesAccepted>), ApiError> {
    let mut target = "rollout:-".to_string();
    let result: Result<SchedulesAccepted, ApiError> = async {
        auth.require(SCHEDULERS)?;
        let orchestrator = state.orchestrator.get().ok_or_else(orchestrator_missing)?;
        let Json(body) = body?;
        let (schedules, deadline) = build_schedules(&state, &body).await?;
        let issued: Vec<IssuedSchedule> = schedules
            .iter()
            .map(|schedule| IssuedSchedule {
                device_id: schedule.device.as_str().to_string(),
                // Braces copy the packed id's field out before borrowing it.
                schedule_id: { schedule.schedule_id.0 }.to_string(),
                version: schedule.version,
            })
            .collect();
        let rollout = orchestrator
            .roll_out_with_deadline(schedules, deadline)
            .await
            .map_err(rollout_error)?;
        target = format!("rollout:{}", rollout.0);
        metrics::counter!("voltex_api_schedules_issued_total").increment(issued.len() as u64);
        Ok(SchedulesAccepted {
            rollout_id: rollout.0.to_string(),
            schedules: issued,
        })
    }
    .await;
    state
        .audit(&ctx, &auth, "schedules.issue", &target, &result)
        .await;
    Ok((StatusCode::ACCEPTED, Json(result?)))
}

/// Progress of a roll-out: versions per delivery state, acks, success rate, the
/// slowest devices.
#[utoipa::path(get, path = "/api/v1/rollouts/{rollout_id}", tag = "fleet",
    params(("rollout_id" = String, Path, description = "Roll-out id")),
    security(("bearer" = [])),
    responses((status = 200, description = "The roll-out's status"), (status = 404, body = Problem),
        (status = 503, body = Problem)))]
pub async fn get_rollout(
    State(state): State<SharedState>,
    auth: Auth,
    path: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Result<Json<RolloutStatus>, ApiError> {
    auth.require(SCHEDULERS)?;
    let Path(rollout) = path?;
    let orchestrator = state.orchestrator.get().ok_or_else(orchestrator_missing)?;
    orchestrator
        .rollout_status(RolloutId(rollout))
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("roll-out {rollout} is not tracked")))
}
