//! The ML endpoints of the seed: `POST /api/v1/ml/optimize` runs the engine's battery
//! LP (`voltex_engine::optimise::plan_battery`) on the prices and battery a quant
//! posts, and `GET /api/v1/ml/models` lists the recorded forecast models with their
//! metrics (the `ml_models` table).
//!
//! The optimiser is the one the bidding engine uses, not a copy; the LP runs on the
//! blocking pool so a long horizon never stalls the request runtime. Inputs are
//! bounded ([`HORIZON_PERIODS_MAX`]) and every bad input is a problem document with its
//! own code.

use std::str::FromStr;

use axum::Json;
use axum::extract::{Query, State};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use voltex_engine::optimise::{
    LpBackend, OptimiseError, PlanConfig, PlanWarning, TerminalSoc, plan_battery,
};
use voltex_market::battery::BatterySpec;

use super::SharedState;
use crate::server::auth::{Auth, Role};
use crate::server::problem::ApiError;

/// Longest horizon one call may plan: a leap year of hours.
pub const HORIZON_PERIODS_MAX: usize = 8_784;

/// Who may run the optimiser and read models.
const ML_USERS: &[Role] = &[Role::Quant, Role::Operator];

/// The battery to plan, in the units of `BatterySpec`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatteryDto {
    /// Usable capacity, Wh.
    pub capacity_wh: i64,
    /// Largest charging power, W.
    pub max_charge_w: i64,
    /// Largest discharging power, W.
    pub max_discharge_w: i64,
    /// Lowest SoC, Wh (default 0).
    #[serde(default)]
    pub soc_min_wh: Option<i64>,
    /// Highest SoC, Wh (default `capacity_wh`).
    #[serde(default)]
    pub soc_max_wh: Option<i64>,
    /// Charging efficiency in (0, 1] (default 0.95).
    #[serde(default)]
    pub charge_efficiency: Option<f64>,
    /// Discharging efficiency in (0, 1] (default 0.95).
    #[serde(default)]
    pub discharge_efficiency: Option<f64>,
    /// Share of the stored energy lost per idle hour, [0, 1) (default 0).
    #[serde(default)]
    pub standing_loss_per_hour: Option<f64>,
    /// Wear cost per MWh of throughput, EUR/MWh as a decimal string (default "0").
    #[serde(default)]
    pub wear_cost_eur_per_mwh: Option<String>,
}

/// Terminal SoC condition.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TerminalDto {
    /// No condition.
    #[default]
    Free,
    /// End with at least this much stored, Wh.
    AtLeastWh(i64),
    /// Value what is left at this price, EUR/MWh as a decimal string.
    ValueEurPerMwh(String),
}

/// `POST /api/v1/ml/optimize` body.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OptimizeRequest {
    /// The battery.
    pub battery: BatteryDto,
    /// Measured SoC at the start, Wh (clamped into the limits with a warning).
    pub start_soc_wh: i64,
    /// Price per period, EUR/MWh as decimal strings, in delivery order.
    pub prices_eur_per_mwh: Vec<String>,
    /// Period length, s: 900, 1800 or 3600 (default 3600).
    #[serde(default)]
    pub period_s: Option<i64>,
    /// Terminal condition (default free).
    #[serde(default)]
    pub terminal: TerminalDto,
    /// `clarabel` (default; gives marginal values) or `microlp`.
    #[serde(default)]
    pub backend: Option<String>,
}

/// The plan.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct OptimizeResponse {
    /// Solver used.
    pub backend: String,
    /// Period length, s.
    pub period_s: i64,
    /// Charging power per period, W.
    pub charge_w: Vec<i64>,
    /// Discharging power per period, W.
    pub discharge_w: Vec<i64>,
    /// Net grid power per period, W (positive: sell).
    pub net_w: Vec<i64>,
    /// SoC at the end of each period, Wh.
    pub soc_wh: Vec<f64>,
    /// The start SoC used, Wh.
    pub start_soc_wh: f64,
    /// Objective at the posted prices, EUR: a floating-point estimate, not a
    /// settlement amount.
    pub expected_profit_eur_estimate: f64,
    /// Marginal value of stored energy per period, EUR/MWh (clarabel only).
    pub marginal_value_eur_per_mwh: Option<Vec<f64>>,
    /// Adjustments made instead of failing.
    pub warnings: Vec<String>,
}

fn parse_decimal_f64(field: &str, index: Option<usize>, text: &str) -> Result<f64, ApiError> {
    let at = index.map_or_else(String::new, |i| format!("[{i}]"));
    Decimal::from_str(text.trim())
        .ok()
        .and_then(|value| value.to_f64())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_decimal",
                format!("{field}{at}: `{text}` is not a decimal number"),
            )
        })
}

fn spec_of(battery: &BatteryDto) -> Result<BatterySpec, ApiError> {
    let wear = match &battery.wear_cost_eur_per_mwh {
        None => Decimal::ZERO,
        Some(text) => Decimal::from_str(text.trim()).map_err(|_| {
            ApiError::bad_request(
                "invalid_decimal",
                format!("battery.wear_cost_eur_per_mwh: `{text}` is not a decimal number"),
            )
        })?,
    };
    let spec = BatterySpec {
        capacity_wh: battery.capacity_wh,
        max_charge_w: battery.max_charge_w,
        max_discharge_w: battery.max_discharge_w,
        soc_min_wh: battery.soc_min_wh.unwrap_or(0),
        soc_max_wh: battery.soc_max_wh.unwrap_or(battery.capacity_wh),
        charge_efficiency: battery.charge_efficiency.unwrap_or(0.95),
        discharge_efficiency: battery.discharge_efficiency.unwrap_or(0.95),
        standing_loss_per_hour: battery.standing_loss_per_hour.unwrap_or(0.0),
        wear_cost_eur_per_mwh: wear,
    };
    spec.validate()
        .map_err(|error| ApiError::bad_request("invalid_battery", error.to_string()))?;
    Ok(spec)
}

fn optimise_error(error: OptimiseError) -> ApiError {
    use axum::http::StatusCode;
    match error {
        OptimiseError::InvalidSpec(error) => {
            ApiError::bad_request("invalid_battery", error.to_string())
        }
        OptimiseError::EmptyHorizon => ApiError::bad_request("empty_horizon", error.to_string()),
        OptimiseError::NonFinitePrice { .. } => {
            ApiError::bad_request("invalid_decimal", error.to_string())
        }
        OptimiseError::InvalidConfig(_) => {
            ApiError::bad_request("invalid_config", error.to_string())
        }
        OptimiseError::Infeasible { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "infeasible",
            error.to_string(),
        ),
        OptimiseError::Unbounded { .. } | OptimiseError::Solver { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "solver_failed",
            error.to_string(),
        ),
    }
}

/// Plans a battery against posted prices with the engine's LP (quants, operators).
#[utoipa::path(post, path = "/api/v1/ml/optimize", tag = "ml",
    request_body = OptimizeRequest, security(("bearer" = [])),
    responses((status = 200, body = OptimizeResponse),
        (status = 400, description = "Invalid battery, price, horizon or config"),
        (status = 403, description = "Not a quant or operator"),
        (status = 422, description = "Infeasible (e.g. a terminal SoC the battery cannot reach)")))]
pub async fn optimize(
    auth: Auth,
    body: Result<Json<OptimizeRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<OptimizeResponse>, ApiError> {
    auth.require(ML_USERS)?;
    let Json(request) = body?;
    if request.prices_eur_per_mwh.is_empty() {
        return Err(ApiError::bad_request(
            "empty_horizon",
            "prices_eur_per_mwh is empty: nothing to plan",
        ));
    }
    if request.prices_eur_per_mwh.len() > HORIZON_PERIODS_MAX {
        return Err(ApiError::bad_request(
            "horizon_too_long",
            format!(
                "{} periods; at most {HORIZON_PERIODS_MAX} per call",
                request.prices_eur_per_mwh.len()
            ),
        ));
    }
    let prices: Vec<f64> = request
        .prices_eur_per_mwh
        .iter()
        .enumerate()
        .map(|(i, text)| parse_decimal_f64("prices_eur_per_mwh", Some(i), text))
        .collect::<Result<_, _>>()?;
    let spec = spec_of(&request.battery)?;
    let period_s = request.period_s.unwrap_or(3_600);
    if ![900, 1_800, 3_600].contains(&period_s) {
        return Err(ApiError::bad_request(
            "invalid_config",
            format!("period_s {period_s}: must be 900, 1800 or 3600"),
        ));
    }
    let backend = match request.backend.as_deref() {
        None | Some("clarabel") => LpBackend::Clarabel,
        Some("microlp") => LpBackend::Microlp,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_config",
                format!("backend `{other}`: must be clarabel or microlp"),
            ));
        }
    };
    let terminal = match &request.terminal {
        TerminalDto::Free => TerminalSoc::Free,
        TerminalDto::AtLeastWh(wh) => TerminalSoc::AtLeastWh(*wh as f64),
        TerminalDto::ValueEurPerMwh(text) => TerminalSoc::ValueEurPerMwh(parse_decimal_f64(
            "terminal.value_eur_per_mwh",
            None,
            text,
        )?),
    };
    let config = PlanConfig {
        period_s,
        terminal,
        backend,
    };
    let start_soc_wh = request.start_soc_wh as f64;
    let plan =
        tokio::task::spawn_blocking(move || plan_battery(&spec, start_soc_wh, &prices, &config))
            .await
            .map_err(ApiError::internal)?
            .map_err(optimise_error)?;
    Ok(Json(OptimizeResponse {
        backend: backend.name().into(),
        period_s,
        charge_w: plan.charge_w,
        discharge_w: plan.discharge_w,
        net_w: plan.net_w,
        soc_wh: plan.soc_wh,
        start_soc_wh: plan.start_soc_wh,
        expected_profit_eur_estimate: plan.expected_profit_eur,
        marginal_value_eur_per_mwh: plan.marginal_value_eur_per_mwh,
        warnings: plan
            .warnings
            .iter()
            .map(|warning| match warning {
                PlanWarning::StartSocClamped {
                    measured_wh,
                    used_wh,
                } => format!(
                    "start SoC {measured_wh} Wh is outside the limits; planned from {used_wh} Wh"
                ),
            })
            .collect(),
    }))
}

/// Model list query.
#[derive(Clone, Debug, Deserialize, IntoParams)]
pub struct ModelQuery {
    /// Only this model name.
    pub name: Option<String>,
    /// Page size (default 100).
    pub limit: Option<u32>,
}

/// Recorded forecast models with version, training window, hyper-parameters and
/// validation metrics (quants, operators).
#[utoipa::path(get, path = "/api/v1/ml/models", tag = "ml",
    params(ModelQuery), security(("bearer" = [])),
    responses((status = 200, description = "Models, by name then newest version first"),
        (status = 403, description = "Not a quant or operator")))]
pub async fn list_models(
    State(state): State<SharedState>,
    auth: Auth,
    query: Result<Query<ModelQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    auth.require(ML_USERS)?;
    let Query(query) = query?;
    let models = state
        .db
        .list_ml_models(query.name.as_deref(), query.limit.unwrap_or(100))
        .await
        .map_err(|error| match error {
            crate::db::DbError::InvalidInput { .. } => {
                ApiError::bad_request("invalid_limit", error.to_string())
            }
            other if other.is_unavailable() => {
                ApiError::unavailable(format!("database unavailable: {other}"))
            }
            other => ApiError::internal(other),
        })?;
    Ok(Json(serde_json::json!({ "models": models })))
}
