//! Fleet endpoints read from the database: devices (status by heartbeat, last SoC),
//! schedule versions per device with their delivery status, execution logs (acks),
//! telemetry, and analytics aggregates (JSON or CSV).
//!
//! Issuing schedules goes through the dispatch orchestrator (`server::fleet`), which
//! `voltex up` runs; these endpoints only read what it persisted.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::SharedState;
use crate::db::{
    AggregateRow, AggregateScope, DeviceRow, ExecutionLogRow, FleetCounts, ScheduleRow,
    TelemetryRow,
};
use crate::server::auth::{Auth, Role};
use crate::server::problem::ApiError;

/// Roles that may read fleet data.
const FLEET_READERS: &[Role] = &[Role::Operator, Role::Quant];

fn db_error(error: crate::db::DbError) -> ApiError {
    if error.is_unavailable() {
        ApiError::unavailable(format!("database unavailable: {error}"))
    } else {
        ApiError::internal(error)
    }
}

/// Device list query.
#[derive(Clone, Debug, Deserialize, IntoParams)]
pub struct DeviceQuery {
    /// Page after this device id (ascending ids).
    pub after: Option<String>,
    /// Only online (`true`) or offline (`false`) devices.
    pub online: Option<bool>,
    /// Most rows (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// Devices, by id.
#[utoipa::path(get, path = "/api/v1/devices", tag = "fleet", params(DeviceQuery),
    security(("bearer" = [])), responses((status = 200, description = "Devices")))]
pub async fn list_devices(
    State(state): State<SharedState>,
    auth: Auth,
    query: Result<Query<DeviceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<DeviceRow>>, ApiError> {
    auth.require(FLEET_READERS)?;
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(
        state
            .db
            .list_devices(query.after.as_deref(), query.online, limit)
            .await
            .map_err(db_error)?,
    ))
}

/// Device counts (registered, online).
#[utoipa::path(get, path = "/api/v1/fleet/status", tag = "fleet",
    security(("bearer" = [])), responses((status = 200, description = "Counts")))]
pub async fn fleet_status(
    State(state): State<SharedState>,
    auth: Auth,
) -> Result<Json<FleetCounts>, ApiError> {
    auth.require(FLEET_READERS)?;
    Ok(Json(state.db.fleet_counts().await.map_err(db_error)?))
}

/// A device may read its own records; operators and quants any device's.
fn require_device_reader(auth: &Auth, device_id: &str) -> Result<(), ApiError> {
    if auth.0.role == Role::Device && auth.0.sub == device_id {
        return Ok(());
    }
    auth.require(FLEET_READERS)
}

/// One device with its latest telemetry.
#[utoipa::path(get, path = "/api/v1/devices/{device_id}", tag = "fleet",
    params(("device_id" = String, Path, description = "Device id")),
    security(("bearer" = [])),
    responses((status = 200, description = "Device and latest telemetry"), (status = 404, description = "Unknown device")))]
pub async fn get_device(
    State(state): State<SharedState>,
    auth: Auth,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(device_id) = path?;
    require_device_reader(&auth, &device_id)?;
    let device = state
        .db
        .get_device(&device_id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| ApiError::not_found(format!("device {device_id} is not registered")))?;
    let telemetry: Option<TelemetryRow> = state
        .db
        .latest_telemetry(&device_id)
        .await
        .map_err(db_error)?;
    Ok(Json(
        serde_json::json!({ "device": device, "latest_telemetry": telemetry }),
    ))
}

/// History page query.
#[derive(Clone, Debug, Deserialize, IntoParams)]
pub struct HistoryQuery {
    /// Only entries older than this (version for schedules, log id for acks).
    pub before: Option<u64>,
    /// Most rows (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// Schedule versions of a device, newest first, with delivery status (the seed's
/// `GET /schedules/{device_id}`).
#[utoipa::path(get, path = "/api/v1/schedules/{device_id}", tag = "fleet",
    params(("device_id" = String, Path, description = "Device id"), HistoryQuery),
    security(("bearer" = [])), responses((status = 200, description = "Schedule versions")))]
pub async fn schedules_of(
    State(state): State<SharedState>,
    auth: Auth,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<ScheduleRow>>, ApiError> {
    let Path(device_id) = path?;
    let Query(query) = query?;
    require_device_reader(&auth, &device_id)?;
    Ok(Json(
        state
            .db
            .schedule_history(
                &device_id,
                query.before,
                query.limit.unwrap_or(100).clamp(1, 1000),
            )
            .await
            .map_err(db_error)?,
    ))
}

/// Acks (execution logs) of a device, newest first.
#[utoipa::path(get, path = "/api/v1/devices/{device_id}/acks", tag = "fleet",
    params(("device_id" = String, Path, description = "Device id"), HistoryQuery),
    security(("bearer" = [])), responses((status = 200, description = "Execution logs")))]
pub async fn acks_of(
    State(state): State<SharedState>,
    auth: Auth,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<ExecutionLogRow>>, ApiError> {
    let Path(device_id) = path?;
    let Query(query) = query?;
    require_device_reader(&auth, &device_id)?;
    let before = query.before.and_then(|id| i64::try_from(id).ok());
    Ok(Json(
        state
            .db
            .list_execution_logs(
                &device_id,
                before,
                query.limit.unwrap_or(100).clamp(1, 1000),
            )
            .await
            .map_err(db_error)?,
    ))
}

/// Telemetry history query.
#[derive(Clone, Debug, Deserialize, IntoParams)]
pub struct TelemetryQuery {
    /// Samples at or after this instant, UTC ns (default: the first).
    pub from_ns: Option<i64>,
    /// Samples before this instant, UTC ns (default: no bound).
    pub to_ns: Option<i64>,
    /// Most samples, oldest first from `from_ns` (default 500, at most 1000).
    pub limit: Option<u32>,
}

/// Telemetry samples of a device (SoC, power, energy counters, temperature, health
/// flags), oldest first.
#[utoipa::path(get, path = "/api/v1/devices/{device_id}/telemetry", tag = "fleet",
    params(("device_id" = String, Path, description = "Device id"), TelemetryQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "Telemetry samples"),
        (status = 400, description = "Bad range or limit", body = crate::server::problem::Problem)))]
pub async fn telemetry_of(
    State(state): State<SharedState>,
    auth: Auth,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    query: Result<Query<TelemetryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<TelemetryRow>>, ApiError> {
    let Path(device_id) = path?;
    let Query(query) = query?;
    require_device_reader(&auth, &device_id)?;
    let (from_ns, to_ns) = super::time_range_ns(query.from_ns, query.to_ns)?;
    let limit = super::checked_limit(query.limit, 500, crate::db::PAGE_LIMIT_MAX)?;
    Ok(Json(
        state
            .db
            .list_telemetry(&device_id, from_ns, to_ns, limit)
            .await
            .map_err(db_error)?,
    ))
}

/// Analytics query.
#[derive(Clone, Debug, Deserialize, IntoParams)]
pub struct AnalyticsQuery {
    /// From, UTC nanoseconds (inclusive).
    pub from_ns: i64,
    /// To, UTC nanoseconds (exclusive).
    pub to_ns: i64,
    /// One device's rows; default the fleet rows.
    pub device_id: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// Analytics aggregates per period (fleet or one device), as JSON or CSV.
#[utoipa::path(get, path = "/api/v1/analytics", tag = "fleet", params(AnalyticsQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "Aggregates (energy in Wh, revenue in EUR cents)")))]
pub async fn analytics(
    State(state): State<SharedState>,
    auth: Auth,
    query: Result<Query<AnalyticsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    auth.require(FLEET_READERS)?;
    let Query(query) = query?;
    if query.to_ns <= query.from_ns {
        return Err(ApiError::bad_request(
            "bad_range",
            "to_ns must be after from_ns",
        ));
    }
    let scope = match &query.device_id {
        Some(device) => AggregateScope::Device(device.clone()),
        None => AggregateScope::Fleet,
    };
    let rows: Vec<AggregateRow> = state
        .db
        .list_aggregates(query.from_ns, query.to_ns, &scope, 1000)
        .await
        .map_err(db_error)?;
    match query.format.as_deref() {
        None | Some("json") => Ok(Json(rows).into_response()),
        Some("csv") => {
            let mut csv = String::from(
                "period_start_ns,period_len_s,device_id,charged_wh,discharged_wh,n_schedules,n_acks_completed,n_acks_failed,revenue_cents\n",
            );
            for row in &rows {
                csv.push_str(&format!(
                    "{},{},{},{},{},{},{},{},{}\n",
                    row.period_start_ns,
                    row.period_len_s,
                    row.device_id.as_deref().unwrap_or(""),
                    row.charged_wh,
                    row.discharged_wh,
                    row.n_schedules,
                    row.n_acks_completed,
                    row.n_acks_failed,
                    row.revenue_cents
                ));
            }
            Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response())
        }
        Some(other) => Err(ApiError::bad_request(
            "bad_format",
            format!("format {other:?}: use json or csv"),
        )),
    }
}
