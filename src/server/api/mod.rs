//! The HTTP surface: routes, shared state, request context (correlation ids),
//! per-route latency metrics, rate limits, the audit trail and the OpenAPI document.
//!
//! # Guarantees
//! - Every error body is an RFC 9457 problem document with a stable `code`.
//! - Every request carries a correlation id (`x-correlation-id`, taken from the
//!   request or generated) that is echoed in the response and in every log line of
//!   its span, and written to the audit log for mutating calls.
//! - Every mutating call is written to the audit log with actor, action, target,
//!   correlation id and result (success or the problem code).

pub mod account;
pub mod auction;
pub mod dashboard_api;
pub mod devices;
pub mod families;
pub mod fleet;
pub mod fleet_events;
pub mod market;
pub mod ml;
pub mod ops;
pub mod schedules;
pub mod ws;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use tracing::Instrument;
use utoipa::OpenApi;
use voltex_engine::command::CommandOrigin;

use super::auth::{Auth, HasJwtKeys, JwtKeys};
use super::clock::monotonic;
use super::exchange::Exchange;
use super::fleet::Orchestrator;
use super::problem::ApiError;

/// Header carrying the correlation id.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// Everything a handler can reach.
pub struct AppState {
    /// The trading core.
    pub exchange: Arc<Exchange>,
    /// The database (system of record for everything but the journal).
    pub db: crate::db::Db,
    /// Token verification.
    pub jwt: JwtKeys,
    /// Per-account order rate limits.
    pub limiter: RateLimiter,
    /// Prometheus text rendering.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The dispatch orchestrator, once one is attached (`voltex up`); plain
    /// `voltex serve` has none and the schedule endpoints answer 503.
    pub orchestrator: std::sync::OnceLock<Orchestrator<fleet_events::EventingStore<crate::db::Db>>>,
    /// The CA that signs device certificates, if this server may issue them (see
    /// `ServerConfig::device_ca_dir`; `voltex up` sets its per-run CA).
    pub device_ca: std::sync::OnceLock<voltex_dispatch::transport::certs::CaFiles>,
    /// Revoked device certificates, loaded from the database at start and kept in step
    /// with it by the device API; `voltex up`'s QUIC endpoint refuses them.
    pub revoked_certificates: voltex_dispatch::transport::RevokedCertificates,
    /// Delivery progress of schedule versions, for the stream (`fleet` messages).
    pub fleet_events: tokio::sync::broadcast::Sender<fleet_events::FleetEvent>,
    /// The shipped alert rules, evaluated over this process's metrics.
    pub alerts: Arc<crate::server::alerts::AlertBoard>,
    /// Group commit of audit records.
    pub audit_writer: crate::server::audit::AuditWriter,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The state handlers share.
pub type SharedState = Arc<AppState>;

impl HasJwtKeys for Arc<AppState> {
    fn jwt_keys(&self) -> &JwtKeys {
        &self.jwt
    }
}

impl AppState {
    /// The origin a command of this call carries into the journal, from which its
    /// audit record is projected (see `server::audit`); `None` when a field does not
    /// fit (an overlong correlation id or subject), and the call is audited by the
    /// writer instead.
    pub fn command_origin(&self, ctx: &Ctx, auth: &Auth) -> Option<CommandOrigin> {
        CommandOrigin::new(
            auth.0.sub.clone(),
            role_name(auth),
            ctx.correlation_id.clone(),
        )
        .ok()
    }

    /// Writes one audit record for a mutating call.
    pub async fn audit<T>(
        &self,
        ctx: &Ctx,
        auth: &Auth,
        action: &str,
        target: &str,
        result: &Result<T, ApiError>,
    ) {
        let outcome = match result {
            Ok(_) => "ok".to_string(),
            Err(error) => error.code.to_string(),
        };
        let entry = crate::db::NewAuditEntry {
            at_ns: self.exchange.now().nanos(),
            actor: auth.0.sub.clone(),
            role: role_name(auth),
            action: action.to_string(),
            target: target.to_string(),
            correlation_id: ctx.correlation_id.clone(),
            result: outcome,
            detail: None,
            command_seq: None,
        };
        if let Err(error) = self.audit_writer.append(entry).await {
            // The action itself already happened (it is in the journal); losing its
            // audit line is logged loudly rather than failing the caller.
            tracing::error!(%error, action, correlation_id = %ctx.correlation_id, "audit write failed");
            metrics::counter!("voltex_audit_failures_total").increment(1);
        }
    }
}

/// How a role is written in audit records.
fn role_name(auth: &Auth) -> String {
    format!("{:?}", auth.0.role).to_lowercase()
}

/// Per-request context.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// The request's correlation id.
    pub correlation_id: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Ctx, ApiError> {
        Ok(parts.extensions.get::<Ctx>().cloned().unwrap_or(Ctx {
            correlation_id: String::new(),
        }))
    }
}

/// The half-open range `from_ns..to_ns` of a query's optional bounds (unbounded where
/// absent), or a `bad_range` problem when it is empty.
pub(crate) fn time_range_ns(
    from_ns: Option<i64>,
    to_ns: Option<i64>,
) -> Result<(i64, i64), ApiError> {
    let (from_ns, to_ns) = (from_ns.unwrap_or(i64::MIN), to_ns.unwrap_or(i64::MAX));
    if from_ns >= to_ns {
        return Err(ApiError::bad_request(
            "bad_range",
            "from_ns must be before to_ns",
        ));
    }
    Ok((from_ns, to_ns))
}

/// A query's `limit` (`default` when absent) if in `1..=max`, else a `bad_limit`
/// problem.
pub(crate) fn checked_limit(limit: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request(
            "bad_limit",
            format!("limit must be in 1..={max}"),
        ))
    }
}

static NEXT_CORRELATION: AtomicU64 = AtomicU64::new(1);

fn correlation_id_of(request: &Request) -> String {
    request
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty() && value.len() <= 128 && value.is_ascii())
        .map_or_else(
            || {
                format!(
                    "{:016x}-{:08x}",
                    std::process::id() as u64 ^ 0x5eed_0000_0000_0000,
                    NEXT_CORRELATION.fetch_add(1, Ordering::Relaxed)
                )
            },
            str::to_string,
        )
}

/// Middleware: correlation id, request span, latency histogram by route.
async fn observe(mut request: Request, next: Next) -> Response {
    let correlation_id = correlation_id_of(&request);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let method = request.method().clone();
    request.extensions_mut().insert(Ctx {
        correlation_id: correlation_id.clone(),
    });
    let span = tracing::info_span!("request", %method, %route, correlation_id = %correlation_id);
    let started = monotonic();
    let mut response = next.run(request).instrument(span).await;
    let elapsed_s = started.elapsed().as_secs_f64();
    let status = response.status().as_u16().to_string();
    metrics::histogram!("voltex_api_request_seconds", "route" => route.clone(), "method" => method.to_string())
        .record(elapsed_s);
    metrics::counter!("voltex_api_requests_total", "route" => route, "status" => status)
        .increment(1);
    if let Ok(value) = HeaderValue::from_str(&correlation_id) {
        response.headers_mut().insert(CORRELATION_HEADER, value);
    }
    response
}

/// Token-bucket rate limits per account.
#[derive(Debug)]
pub struct RateLimiter {
    rate_per_s: f64,
    burst: f64,
    buckets: Mutex<HashMap<u32, (f64, std::time::Instant)>>,
}

/// Most accounts tracked at once; beyond it the fullest (idle) buckets are dropped.
const RATE_LIMIT_ACCOUNTS_MAX: usize = 100_000;

impl RateLimiter {
    /// `rate_per_s` orders per second sustained, bursts of `burst`.
    pub fn new(rate_per_s: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            rate_per_s: f64::from(rate_per_s),
            burst: f64::from(burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `account`.
    ///
    /// # Errors
    /// 429 `rate_limited` when the bucket is empty.
    pub fn check(&self, account: u32) -> Result<(), ApiError> {
        let now = monotonic();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= RATE_LIMIT_ACCOUNTS_MAX && !buckets.contains_key(&account) {
            let burst = self.burst;
            let rate = self.rate_per_s;
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets.entry(account).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.rate_per_s).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            metrics::counter!("voltex_api_rate_limited_total").increment(1);
            Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("account {account} exceeds {} orders/s", self.rate_per_s),
            ))
        }
    }
}

/// The OpenAPI document, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(title = "Voltex platform API", version = "1", description = "Trader, fleet and operator API of the Voltex platform. Errors are RFC 9457 problem documents."),
    paths(
        market::list_products, market::get_product, market::get_depth,
        market::submit_order, market::cancel_order, market::modify_order,
        market::list_orders, market::get_order,
        auction::submit_curve, auction::withdraw_curve, auction::list_curves,
        auction::get_result, families::submit_family, families::withdraw_family,
        families::list_families,
        account::positions, account::fills, account::families, account::order_history, account::audit_log,
        fleet::list_devices, fleet::fleet_status, fleet::get_device, fleet::schedules_of,
        fleet::acks_of, fleet::analytics, schedules::post_schedules, schedules::get_rollout,
        devices::register_device, devices::issue_certificate, devices::revoke_certificate,
        dashboard_api::fleet_summary, dashboard_api::rollouts, dashboard_api::recent_trades,
        dashboard_api::dayahead, dashboard_api::faults, fleet::telemetry_of,
        ops::healthz, ops::readyz, ops::alerts, ml::optimize, ml::list_models,
    ),
    components(schemas(
        crate::server::problem::Problem, crate::server::exchange::ProductInfo,
        market::SubmitOrder, market::ModifyOrder, market::OrderAck, market::OrderView,
        market::FillDto, market::DepthDto, market::LevelDto, market::SideDto,
        market::TifDto, market::StpDto, auction::SubmitCurve, auction::CurvePointDto,
        auction::CurveKindDto, auction::CurveAck, auction::CurveView, auction::AwardDto,
        auction::AuctionResultDto, families::SubmitFamily, families::FamilyBlockDto,
        families::FamilyAck, families::FamilyView, ws::StreamMessage, account::PositionDto, account::AccountFill, account::AccountFamily,
        schedules::PostSchedules, schedules::DeviceScheduleDto, schedules::PeriodDto,
        schedules::SchedulesAccepted, schedules::IssuedSchedule, fleet_events::FleetEvent,
        devices::RegisterDevice, devices::RegisteredDevice, devices::CertificateRequest,
        devices::IssuedDeviceCertificate, devices::RevokedDeviceCertificate,
        crate::server::alerts::AlertStatus, ops::AlertsDto,
        ml::OptimizeRequest, ml::OptimizeResponse, ml::BatteryDto, ml::TerminalDto,
    )),
    modifiers(&BearerAuth),
    tags((name = "market"), (name = "orders"), (name = "auction"), (name = "accounts"), (name = "fleet"), (name = "ops"), (name = "dashboard"), (name = "ml"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

/// The whole router.
pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/api/v1/products", get(market::list_products))
        .route("/api/v1/products/{product}", get(market::get_product))
        .route("/api/v1/products/{product}/depth", get(market::get_depth))
        .route(
            "/api/v1/orders",
            get(market::list_orders).post(market::submit_order),
        )
        .route(
            "/api/v1/orders/{order_id}",
            get(market::get_order)
                .delete(market::cancel_order)
                .patch(market::modify_order),
        )
        .route(
            "/api/v1/auction/curves",
            get(auction::list_curves).post(auction::submit_curve),
        )
        .route(
            "/api/v1/auction/curves/{product}/{account}/{side}",
            axum::routing::delete(auction::withdraw_curve),
        )
        .route(
            "/api/v1/auction/families",
            get(families::list_families).post(families::submit_family),
        )
        .route(
            "/api/v1/auction/families/{account}/{family}",
            axum::routing::delete(families::withdraw_family),
        )
        .route(
            "/api/v1/auction/results/{product}",
            get(auction::get_result),
        )
        .route(
            "/api/v1/accounts/{account}/positions",
            get(account::positions),
        )
        .route("/api/v1/accounts/{account}/fills", get(account::fills))
        .route(
            "/api/v1/accounts/{account}/families",
            get(account::families),
        )
        .route(
            "/api/v1/accounts/{account}/orders",
            get(account::order_history),
        )
        .route("/api/v1/audit", get(account::audit_log))
        .route(
            "/api/v1/devices",
            get(fleet::list_devices).post(devices::register_device),
        )
        .route("/api/v1/devices/{device_id}", get(fleet::get_device))
        .route("/api/v1/devices/{device_id}/acks", get(fleet::acks_of))
        .route("/api/v1/schedules/{device_id}", get(fleet::schedules_of))
        .route(
            "/api/v1/schedules",
            axum::routing::post(schedules::post_schedules),
        )
        .route("/api/v1/rollouts/{rollout_id}", get(schedules::get_rollout))
        .route("/api/v1/fleet/status", get(fleet::fleet_status))
        .route("/api/v1/analytics", get(fleet::analytics))
        .route("/api/v1/stream", get(ws::stream))
        .route("/api/v1/dashboard/fleet", get(dashboard_api::fleet_summary))
        .route("/api/v1/dashboard/rollouts", get(dashboard_api::rollouts))
        .route("/api/v1/dashboard/dayahead", get(dashboard_api::dayahead))
        .route("/api/v1/dashboard/faults", get(dashboard_api::faults))
        .route(
            "/api/v1/devices/{device_id}/certificate",
            axum::routing::post(devices::issue_certificate).delete(devices::revoke_certificate),
        )
        .route(
            "/api/v1/devices/{device_id}/telemetry",
            get(fleet::telemetry_of),
        )
        .route(
            "/api/v1/dashboard/trades/{product}",
            get(dashboard_api::recent_trades),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/api/v1/alerts", get(ops::alerts))
        .route("/api/v1/ml/optimize", axum::routing::post(ml::optimize))
        .route("/api/v1/ml/models", get(ml::list_models))
        // The web dashboard for every other path; unknown /api/ paths stay 404.
        .fallback(crate::server::dashboard::serve)
        .layer(axum::middleware::from_fn(observe))
        .with_state(state)
}
