//! Account endpoints read from the database projection: positions (with exact cash
//! values), fills, order history, the history of block families, and the operator's
//! audit log.
//!
//! Positions, their cash (the account's P&L: sales minus purchases, not marked to
//! market) and fills count both continuous trades and day-ahead auction awards at the
//! clearing price; a fill says which it is (`source`). Quantities and prices of both
//! are in the same lots and ticks (the exchange checks at start that the intraday and
//! day-ahead rules agree on them).
//!
//! The projection is written asynchronously from the sequencer's event stream, so it
//! may trail an order acknowledgement by a few milliseconds; it never loses or
//! duplicates an event (see `server::exchange`).

use axum::Json;
use axum::extract::{Path, Query, State};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use voltex_market::MarketRules;

use super::SharedState;
use crate::db::{AuctionFamilyRow, AuditRow, FillRow, OrderFilter, OrderRow};
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
    /// Number of fills (continuous trades and auction awards).
    pub n_trades: u64,
}

/// One fill of an account: a continuous trade from its side, or a day-ahead award.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AccountFill {
    /// `continuous` (a trade of the book) or `auction` (a day-ahead award).
    #[schema(example = "auction")]
    pub source: String,
    /// Product.
    pub product_id: u32,
    /// Trade id within the product; null for an auction award.
    pub trade_id: Option<u64>,
    /// Event seq of the trade or award (paging key: pass it as `before`).
    pub event_seq: u64,
    /// Engine time of the trade or of the auction's clearing, UTC ns.
    pub at_ns: i64,
    /// The account.
    pub account_id: u32,
    /// The account's order that filled; null for an auction award.
    pub order_id: Option<u64>,
    /// `buy` or `sell`, the account's side.
    pub side: String,
    /// Price in ticks of 0.01 EUR/MWh (an award's is the clearing price).
    pub price_ticks: i64,
    /// Quantity in market lots.
    pub qty_lots: i64,
    /// Price in EUR/MWh (exact).
    pub price_eur_per_mwh: String,
    /// Quantity in MW (exact).
    pub qty_mw: String,
    /// Whether the account's order was the incoming one; null for an auction award.
    pub aggressor: Option<bool>,
}

impl AccountFill {
    fn new(row: &FillRow, rules: &MarketRules) -> AccountFill {
        AccountFill {
            source: row.source.as_str().to_string(),
            product_id: row.product_id,
            trade_id: row.trade_id,
            event_seq: row.event_seq,
            at_ns: row.at_ns,
            account_id: row.account_id,
            order_id: row.order_id,
            side: match row.side {
                voltex_market::Side::Buy => "buy",
                voltex_market::Side::Sell => "sell",
            }
            .to_string(),
            price_ticks: row.price_ticks,
            qty_lots: row.qty_lots,
            price_eur_per_mwh: voltex_market::Price(row.price_ticks)
                .to_decimal()
                .to_string(),
            qty_mw: rules
                .qty_to_mw(voltex_market::Qty(row.qty_lots))
                .normalize()
                .to_string(),
            aggressor: row.aggressor,
        }
    }
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

/// Fills of an account, newest first: continuous trades and day-ahead auction awards.
#[utoipa::path(get, path = "/api/v1/accounts/{account}/fills", tag = "accounts",
    params(("account" = u32, Path, description = "Account id"), Page), security(("bearer" = [])),
    responses((status = 200, body = [AccountFill],
        description = "Fills of both sources (`source`: continuous | auction)"),
        (status = 403, description = "Not the caller's account")))]
pub async fn fills(
    State(state): State<SharedState>,
    auth: Auth,
    path: Result<Path<u32>, axum::extract::rejection::PathRejection>,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<AccountFill>>, ApiError> {
    let Path(account) = path?;
    let Query(page) = page?;
    auth.require_account(account)?;
    let rows = state
        .db
        .list_fills(account, page.before, page_limit(&page))
        .await
        .map_err(db_error)?;
    let rules = state.exchange.rules();
    Ok(Json(
        rows.iter()
            .map(|row| AccountFill::new(row, rules))
            .collect(),
    ))
}

/// A stored block family: its acceptance, replacements and outcome.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AccountFamily {
    /// Event seq of the acceptance that opened it (paging key: pass it as `before`).
    pub opened_event_seq: u64,
    /// The account.
    pub account: u32,
    /// The account's name for it (reused names open new rows, one per gate).
    pub family: u32,
    /// Its first product (after its last replacement).
    pub first_product: u32,
    /// Products it spans.
    pub n_products: u32,
    /// Blocks.
    pub n_blocks: u32,
    /// Replacements before its gate.
    pub n_replacements: u32,
    /// `open`, `accepted` (every block traded in full), `rejected` (nothing traded) or
    /// `withdrawn`.
    pub status: String,
    /// Surplus at the clearing prices in EUR (exact); absent before clearing or where
    /// a product had no trade.
    pub surplus_eur: Option<String>,
    /// Engine time of the acceptance, UTC ns.
    pub opened_at_ns: i64,
    /// Engine time of its last change, UTC ns.
    pub updated_at_ns: i64,
    /// Event seq of its last change.
    pub updated_event_seq: u64,
}

impl AccountFamily {
    fn new(row: &AuctionFamilyRow, rules: &MarketRules) -> Self {
        Self {
            opened_event_seq: row.opened_event_seq,
            account: row.account_id,
            family: row.family_ref,
            first_product: row.first_product_id,
            n_products: row.n_products,
            n_blocks: row.n_blocks,
            n_replacements: row.n_replacements,
            status: row.status.as_str().to_owned(),
            surplus_eur: row
                .surplus_ticks_x_lots
                .and_then(|surplus| super::families::surplus_eur(surplus, rules.lot_kw)),
            opened_at_ns: row.opened_at_ns,
            updated_at_ns: row.updated_at_ns,
            updated_event_seq: row.updated_event_seq,
        }
    }
}

/// Block families of an account, newest first: every one it held, with its outcome
/// (the live `GET /api/v1/auction/families` shows only what the engine still indexes).
#[utoipa::path(get, path = "/api/v1/accounts/{account}/families", tag = "accounts",
    params(("account" = u32, Path, description = "Account id"), Page), security(("bearer" = [])),
    responses((status = 200, body = [AccountFamily]),
        (status = 403, description = "Not the caller's account")))]
pub async fn families(
    State(state): State<SharedState>,
    auth: Auth,
    path: Result<Path<u32>, axum::extract::rejection::PathRejection>,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<AccountFamily>>, ApiError> {
    let Path(account) = path?;
    let Query(page) = page?;
    auth.require_account(account)?;
    let rows = state
        .db
        .auction_families_of(account, page.before, page_limit(&page))
        .await
        .map_err(db_error)?;
    let rules = state.exchange.day_ahead_rules();
    Ok(Json(
        rows.iter()
            .map(|row| AccountFamily::new(row, rules))
            .collect(),
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
