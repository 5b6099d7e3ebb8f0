//! Operations endpoints: liveness, readiness, Prometheus metrics, and the alert rules
//! of `deploy/` evaluated over those metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::SharedState;
use crate::server::auth::{Auth, Role};
use crate::server::problem::ApiError;

/// Health answer.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or what is not ready.
    pub status: String,
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: the sequencer runs and the database answers.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(state): State<SharedState>) -> impl IntoResponse {
    let mut problems = Vec::new();
    if !state.exchange.is_running() {
        problems.push("sequencer stopped");
    }
    if let Err(error) = state.db.ping().await {
        tracing::warn!(%error, "readiness: database unreachable");
        problems.push("database unreachable");
    }
    if problems.is_empty() {
        (
            StatusCode::OK,
            Json(Health {
                status: "ok".into(),
            }),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: problems.join(", "),
            }),
        )
    }
}

/// Prometheus text exposition of every `voltex_*` metric.
pub async fn metrics(State(state): State<SharedState>) -> impl IntoResponse {
    metrics::gauge!("voltex_orders_resting").set(state.exchange.n_live_orders() as f64);
    let body = state.metrics.as_ref().map_or_else(
        String::new,
        metrics_exporter_prometheus::PrometheusHandle::render,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// The alert rules of `deploy/prometheus/voltex-rules.yml` and their state now.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AlertsDto {
    /// One entry per rule, in file order.
    pub alerts: Vec<crate::server::alerts::AlertStatus>,
}

/// What the shipped Prometheus rules would fire, evaluated over this server's own
/// metrics (operators, quants and traders; not devices).
#[utoipa::path(get, path = "/api/v1/alerts", tag = "ops",
    security(("bearer" = [])),
    responses((status = 200, body = AlertsDto), (status = 401, description = "No token"),
        (status = 403, description = "Devices may not read alerts")))]
pub async fn alerts(
    State(state): State<SharedState>,
    auth: Auth,
) -> Result<Json<AlertsDto>, ApiError> {
    auth.require(&[Role::Operator, Role::Quant, Role::Trader])?;
    Ok(Json(AlertsDto {
        alerts: state.alerts.sample_and_evaluate(),
    }))
}
