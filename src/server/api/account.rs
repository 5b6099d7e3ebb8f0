//! Account endpoints read from the database projection: positions (with exact cash
//! values), fills, order history, and the operator's audit log.
//!
//! The projection is written asynchronously from the sequencer's event stream, so it
//! may trail an order acknowledgement by a few milliseconds; it never loses or
//! duplicates an event (see `server::exchange`).

use axum::Json;
use axum::extract::{Path, Query, State};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::SharedState;
use crate::db::{AuditRow, FillRow, OrderFilter, OrderRow};
use crate::server::auth::{Auth, Role};
use crate::server::problem::ApiError;

/// Paging of list endpoints.
#[derive(Clone, Debug, Deserialize, IntoParams)]
pub struct Page {
    /// Most rows (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Only rows older than this event seq (newest first).
    pub before: Option<u64>,
}

/// A net position with exact EUR values.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PositionDto {
    /// Product.
    pub product_id: u32,
    /// Bought minus sold, MW.
    pub net_mw: String,
    /// Energy bought, MWh (hourly products).
    pub bought_mwh: String,
    /// Energy sold, MWh.
    pub sold_mwh: String,
    /// Cash paid for purchases, EUR (exact).
    pub bought_eur: String,
    /// Cash received for sales, EUR (exact).
    pub sold_eur: String,
    /// Sales minus purchases, EUR (exact; open positions are not marked to market).
    pub cash_eur: String,
    /// Number of fills.
    pub n_trades: u64,
}

fn db_error(error: crate::db::DbError) -> ApiError {
    if error.is_unavailable() {
        ApiError::unavailable(format!("database unavailable: {error}"))
    } else {
        ApiError::internal(error)
    }
}

fn page_limit(page: &Page) -> u32 {
    page.limit.unwrap_or(100).clamp(1, 1000)
}

/// Positions of an account.
#[utoipa::path(get, path = "/api/v1/accounts/{account}/positions", tag = "accounts",
    params(("account" = u32, Path, description = "Account id")), security(("bearer" = [])),
    responses((status = 200, body = [PositionDto])))]
pub async fn positions(
    State(state): State<SharedState>,
    auth: Auth,
    path: Result<Path<u32>, axum::extract::rejection::PathRejection>,
) -> Result<Json<Vec<PositionDto>>, ApiError> {
    let Path(account) = path?;
    auth.require_account(account)?;
    let rows = state.db.list_positions(account).await.map_err(db_error)?;
    let rules = state.exchange.rules();
    // Hourly products: 1 MW for one hour is 1 MWh. Price ticks are 0.01 EUR/MWh.
    let lot_mwh = rules.qty_to_mw(voltex_market::Qty(1));
    let tick_eur = Decimal::new(1, 2);
    let eur = |notional: i64| (Decimal::from(notional) * tick_eur * lot_mwh).normalize();
    Ok(Json(
        rows.iter()
            .map(|row| PositionDto {
                product_id: row.product_id,
                net_mw: (Decimal::from(row.net_qty_lots) * lot_mwh)
                    .normalize()
                    .to_string(),
                bought_mwh: (Decimal::from(row.bought_qty_lots) * lot_mwh)
                    .normalize()
                    .to_string(),
                sold_mwh: (Decimal::from(row.sold_qty_lots) * lot_mwh)
                    .normalize()
                    .to_string(),
                bought_eur: eur(row.bought_notional_tick_lots).to_string(),
                sold_eur: eur(row.sold_notional_tick_lots).to_string(),
                cash_eur: (eur(row.sold_notional_tick_lots) - eur(row.bought_notional_tick_lots))
                    .normalize()
                    .to_string(),
                n_trades: row.n_trades,
            })
            .collect(),
    ))
}

/// Fills of an account, newest first.
#[utoipa::path(get, path = "/api/v1/accounts/{account}/fills", tag = "accounts",
    params(("account" = u32, Path, description = "Account id"), Page), security(("bearer" = [])),
    responses((status = 200, description = "Fills (price_ticks: 0.01 EUR/MWh; qty_lots: market lots)")))]
pub async fn fills(
    State(state): State<SharedState>,
    auth: Auth,
    path: Result<Path<u32>, axum::extract::rejection::PathRejection>,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<FillRow>>, ApiError> {
    let Path(account) = path?;
    let Query(page) = page?;
    auth.require_account(account)?;
    Ok(Json(
        state
            .db
            .list_fills(account, page.before, page_limit(&page))
            .await
            .map_err(db_error)?,
    ))
}

/// Orders of an account (all states), newest first.
#[utoipa::path(get, path = "/api/v1/accounts/{account}/orders", tag = "accounts",
    params(("account" = u32, Path, description = "Account id"), Page), security(("bearer" = [])),
    responses((status = 200, description = "Orders with status, filled and remaining lots")))]
pub async fn order_history(
    State(state): State<SharedState>,
    auth: Auth,
    path: Result<Path<u32>, axum::extract::rejection::PathRejection>,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<OrderRow>>, ApiError> {
    let Path(account) = path?;
    let Query(page) = page?;
    auth.require_account(account)?;
    let filter = OrderFilter {
        before_event_seq: page.before,
        ..OrderFilter::default()
    };
    Ok(Json(
        state
            .db
            .list_orders(account, &filter, page_limit(&page))
            .await
            .map_err(db_error)?,
    ))
}

/// The audit log, newest first (operators only).
#[utoipa::path(get, path = "/api/v1/audit", tag = "accounts", params(Page),
    security(("bearer" = [])),
    responses((status = 200, description = "Audit entries"), (status = 403, description = "Not an operator")))]
pub async fn audit_log(
    State(state): State<SharedState>,
    auth: Auth,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<AuditRow>>, ApiError> {
    auth.require(&[Role::Operator])?;
    let Query(page) = page?;
    let before = page.before.and_then(|id| i64::try_from(id).ok());
    Ok(Json(
        state
            .db
            .list_audit(before, page_limit(&page))
            .await
            .map_err(db_error)?,
    ))
}
