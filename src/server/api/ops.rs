//! Operations endpoints: liveness, readiness and Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::SharedState;

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
