//! Trader endpoints: products, L2 depth, and orders into the sequencer.
//!
//! Prices travel as decimal strings in EUR/MWh and quantities as decimal strings in
//! MW; both are checked against the market's grid and limits and never rounded (an
//! off-grid price is a 400 `price_off_grid`, not a silently moved order). An order is
//! answered only after the sequencer has journaled and applied it.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use voltex_engine::{EngineCommand, EventKind};
use voltex_market::book::{BookCommand, BookEvent, NewOrder, StpMode, TimeInForce};
use voltex_market::rules::RuleError;
use voltex_market::{AccountId, OrderId, Price, ProductId, Qty, Side};

use super::{Ctx, SharedState};
use crate::server::auth::{Auth, Role};
use crate::server::exchange::ProductInfo;
use crate::server::problem::{ApiError, Problem, book_command_refusal};

/// Buy or sell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SideDto {
    /// Buy.
    Buy,
    /// Sell.
    Sell,
}

impl From<SideDto> for Side {
    fn from(side: SideDto) -> Side {
        match side {
            SideDto::Buy => Side::Buy,
            SideDto::Sell => Side::Sell,
        }
    }
}

impl From<Side> for SideDto {
    fn from(side: Side) -> SideDto {
        match side {
            Side::Buy => SideDto::Buy,
            Side::Sell => SideDto::Sell,
        }
    }
}

/// Time in force.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TifDto {
    /// Good till cancelled (or gate closure).
    #[default]
    Gtc,
    /// Immediate or cancel.
    Ioc,
    /// Fill or kill.
    Fok,
}

/// Self-trade prevention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StpDto {
    /// Cancel the resting order.
    #[default]
    CancelResting,
    /// Cancel the incoming order.
    CancelIncoming,
    /// Cancel both.
    CancelBoth,
    /// Decrement both by the overlap.
    DecrementBoth,
}

/// A new order.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitOrder {
    /// Trading account.
    pub account: u32,
    /// Product id (see `GET /api/v1/products`).
    pub product: u32,
    /// Buy or sell.
    pub side: SideDto,
    /// Limit price in EUR/MWh as a decimal string, on the 0.01 tick grid.
    #[schema(example = "45.10")]
    pub price_eur_per_mwh: String,
    /// Quantity in MW as a decimal string, a whole number of lots.
    #[schema(example = "1.5")]
    pub qty_mw: String,
    /// Time in force (default gtc).
    #[serde(default)]
    pub time_in_force: TifDto,
    /// Book or cancel.
    #[serde(default)]
    pub post_only: bool,
    /// Iceberg peak in MW.
    #[serde(default)]
    pub peak_mw: Option<String>,
    /// Self-trade prevention (default cancel_resting).
    #[serde(default)]
    pub stp: StpDto,
}

/// A price and quantity change.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModifyOrder {
    /// New limit price in EUR/MWh.
    pub price_eur_per_mwh: String,
    /// New remaining quantity in MW.
    pub qty_mw: String,
}

/// One fill of an order.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FillDto {
    /// Trade id within the product.
    pub trade_id: u64,
    /// Price in EUR/MWh.
    pub price_eur_per_mwh: String,
    /// Quantity in MW.
    pub qty_mw: String,
}

/// An order's state after a command.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct OrderAck {
    /// Order id.
    pub order_id: u64,
    /// Sequence number the sequencer gave the command (journaled).
    pub command_seq: u64,
    /// `resting`, `filled`, `cancelled` (IOC/FOK remainder, self-trade) or
    /// `accepted` (state changed, still resting).
    pub status: String,
    /// Remaining quantity in MW (0 unless resting).
    pub remaining_mw: String,
    /// Fills caused by this command.
    pub fills: Vec<FillDto>,
}

/// A resting order.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct OrderView {
    /// Order id.
    pub order_id: u64,
    /// Product id.
    pub product: u32,
    /// Account.
    pub account: u32,
    /// Side.
    pub side: SideDto,
    /// Limit price in EUR/MWh.
    pub price_eur_per_mwh: String,
    /// Quantity when accepted, MW.
    pub qty_mw: String,
    /// Remaining, MW.
    pub remaining_mw: String,
}

/// One L2 level.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct LevelDto {
    /// Price in EUR/MWh.
    pub price_eur_per_mwh: String,
    /// Visible quantity in MW.
    pub qty_mw: String,
    /// Orders at the level.
    pub n_orders: u32,
}

/// L2 depth of a product.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DepthDto {
    /// Product id.
    pub product: u32,
    /// Bids, best first.
    pub bids: Vec<LevelDto>,
    /// Asks, best first.
    pub asks: Vec<LevelDto>,
    /// Event sequence number the snapshot is current at (WebSocket increments follow).
    pub as_of_event_seq: u64,
}

/// Query of the order list.
#[derive(Clone, Debug, Deserialize, IntoParams)]
pub struct AccountQuery {
    /// Account whose orders to list.
    pub account: u32,
}

/// Query of the depth endpoint.
#[derive(Clone, Debug, Deserialize, IntoParams)]
pub struct DepthQuery {
    /// Levels per side (default 20, at most 500).
    pub levels: Option<usize>,
}

fn price_error(error: RuleError) -> ApiError {
    let code = match error {
        RuleError::PriceOffTick { .. } => "price_off_tick",
        RuleError::PriceOutOfLimits { .. } => "price_out_of_limits",
        RuleError::QtyOffLot { .. } => "qty_off_lot",
        RuleError::Unit(voltex_market::units::UnitError::OffGrid { .. }) => "price_off_grid",
        RuleError::Unit(_) => "bad_number",
        _ => "invalid_value",
    };
    ApiError::bad_request(code, error.to_string())
}

fn parse_decimal(field: &str, text: &str) -> Result<Decimal, ApiError> {
    text.trim().parse::<Decimal>().map_err(|_| {
        ApiError::bad_request(
            "bad_number",
            format!("{field}: {text:?} is not a decimal number"),
        )
    })
}

/// Lists products.
#[utoipa::path(get, path = "/api/v1/products", tag = "market",
    responses((status = 200, body = [ProductInfo])))]
pub async fn list_products(State(state): State<SharedState>) -> Json<Vec<ProductInfo>> {
    Json(state.exchange.products())
}

/// One product with its rules.
#[utoipa::path(get, path = "/api/v1/products/{product}", tag = "market",
    params(("product" = u32, Path, description = "Product id")),
    responses((status = 200, body = ProductInfo), (status = 404, body = Problem)))]
pub async fn get_product(
    State(state): State<SharedState>,
    path: Result<Path<u32>, axum::extract::rejection::PathRejection>,
) -> Result<Json<ProductInfo>, ApiError> {
    let Path(product) = path?;
    state
        .exchange
        .product(ProductId(product))
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("product {product} is not listed")))
}

/// L2 depth of a product.
#[utoipa::path(get, path = "/api/v1/products/{product}/depth", tag = "market",
    params(("product" = u32, Path, description = "Product id"), DepthQuery),
    responses((status = 200, body = DepthDto), (status = 404, body = Problem)))]
pub async fn get_depth(
    State(state): State<SharedState>,
    path: Result<Path<u32>, axum::extract::rejection::PathRejection>,
    query: Result<Query<DepthQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DepthDto>, ApiError> {
    let Path(product) = path?;
    let Query(query) = query?;
    let levels = query.levels.unwrap_or(20).min(500);
    let depth = state
        .exchange
        .depth(ProductId(product), levels)
        .ok_or_else(|| ApiError::not_found(format!("product {product} is not listed")))?;
    let rules = state.exchange.rules();
    let level = |(price, level): &(Price, crate::server::exchange::Level)| LevelDto {
        price_eur_per_mwh: price.to_decimal().to_string(),
        qty_mw: rules.qty_to_mw(level.visible).normalize().to_string(),
        n_orders: level.n_orders,
    };
    Ok(Json(DepthDto {
        product,
        bids: depth.bids.iter().map(level).collect(),
        asks: depth.asks.iter().map(level).collect(),
        as_of_event_seq: depth.as_of_event_seq,
    }))
}

fn ack_from_events(
    state: &SharedState,
    order: OrderId,
    executed: &crate::server::exchange::Executed,
) -> Result<OrderAck, ApiError> {
    let rules = state.exchange.rules();
    let mut fills = Vec::new();
    let mut cancelled = false;
    for event in &executed.events {
        if let Some((code, detail)) = book_command_refusal(event) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                code,
                detail,
            ));
        }
        match event.kind {
            EventKind::Book(BookEvent::Trade {
                trade_id,
                aggressor,
                resting,
                price,
                qty,
                ..
            }) if aggressor == order || resting == order => fills.push(FillDto {
                trade_id: trade_id.0,
                price_eur_per_mwh: price.to_decimal().to_string(),
                qty_mw: rules.qty_to_mw(qty).normalize().to_string(),
            }),
            EventKind::Book(BookEvent::Cancelled { id, .. }) if id == order => cancelled = true,
            _ => {}
        }
    }
    let live = state.exchange.live_order(order);
    let status = match (&live, cancelled, fills.is_empty()) {
        (Some(_), _, true) => "resting",
        (Some(_), _, false) => "partially_filled",
        (None, true, _) => "cancelled",
        (None, false, false) => "filled",
        (None, false, true) => "accepted",
    };
    Ok(OrderAck {
        order_id: order.0,
        command_seq: executed.ack.seq,
        status: status.to_string(),
        remaining_mw: rules
            .qty_to_mw(live.map_or(Qty::ZERO, |order| order.remaining))
            .normalize()
            .to_string(),
        fills,
    })
}

/// Submits an order; answered after the sequencer journaled it.
#[utoipa::path(post, path = "/api/v1/orders", tag = "orders", request_body = SubmitOrder,
    security(("bearer" = [])),
    responses((status = 201, body = OrderAck), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem), (status = 429, body = Problem)))]
pub async fn submit_order(
    State(state): State<SharedState>,
    auth: Auth,
    ctx: Ctx,
    body: Result<Json<SubmitOrder>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<OrderAck>), ApiError> {
    let mut target = "order:-".to_string();
    let mut journaled = false;
    let result: Result<OrderAck, ApiError> = async {
        auth.require(&[Role::Trader, Role::Operator])?;
        let Json(body) = body?;
        auth.require_account(body.account)?;
        state.limiter.check(body.account)?;
        // The product's own rules: one listed before a configuration change keeps its.
        let listed = state.exchange.rules_of(ProductId(body.product));
        let rules = &listed.book;
        let (price, qty) = parse_price_qty(rules, &body.price_eur_per_mwh, &body.qty_mw)?;
        let peak = match &body.peak_mw {
            Some(text) => Some(
                rules
                    .qty_from_mw(parse_decimal("peak_mw", text)?)
                    .map_err(price_error)?,
            ),
            None => None,
        };
        let id = state.exchange.next_order_id();
        target = format!("order:{}", id.0);
        let order = NewOrder {
            id,
            account: AccountId(body.account),
            side: body.side.into(),
            price,
            qty,
            time_in_force: match body.time_in_force {
                TifDto::Gtc => TimeInForce::Gtc,
                TifDto::Ioc => TimeInForce::Ioc,
                TifDto::Fok => TimeInForce::Fok,
            },
            post_only: body.post_only,
            peak,
            stp: match body.stp {
                StpDto::CancelResting => StpMode::CancelResting,
                StpDto::CancelIncoming => StpMode::CancelIncoming,
                StpDto::CancelBoth => StpMode::CancelBoth,
                StpDto::DecrementBoth => StpMode::DecrementBoth,
            },
        };
        let ack = execute_book_command(
            &state,
            (&ctx, &auth, &mut journaled),
            id,
            ProductId(body.product),
            BookCommand::Submit(order),
        )
        .await;
        metrics::counter!("voltex_orders_total").increment(1);
        ack
    }
    .await;
    if !journaled {
        state
            .audit(&ctx, &auth, "order.submit", &target, &result)
            .await;
    }
    Ok((StatusCode::CREATED, Json(result?)))
}

/// Runs a book command through the sequencer (answered after the journal commit) and
/// reports what it did to `order`. The command carries the call's origin when it fits;
/// `journaled` is set once the sequencer has journaled a command with an origin, whose
/// audit record is then projected from the journal (the caller writes none).
async fn execute_book_command(
    state: &SharedState,
    (ctx, auth, journaled): (&Ctx, &Auth, &mut bool),
    order: OrderId,
    product: ProductId,
    command: BookCommand,
) -> Result<OrderAck, ApiError> {
    let origin = state.command_origin(ctx, auth);
    let has_origin = origin.is_some();
    let mut command = EngineCommand::book(state.exchange.now(), product, command);
    if let Some(origin) = origin {
        command = command.with_origin(origin);
    }
    let executed = state
        .exchange
        .execute(command)
        .await
        .map_err(|error| match error {
            // Back-pressure, not a fault: the client may retry.
            crate::server::exchange::ExchangeError::Overloaded => {
                ApiError::unavailable(error.to_string())
            }
            other => ApiError::internal(other),
        })?;
    *journaled = has_origin;
    ack_from_events(state, order, &executed)
}

/// A limit price and a quantity from their decimal strings, on the market's grid.
fn parse_price_qty(
    rules: &voltex_market::MarketRules,
    price_eur_per_mwh: &str,
    qty_mw: &str,
) -> Result<(Price, Qty), ApiError> {
    let price = rules
        .price_from_decimal(parse_decimal("price_eur_per_mwh", price_eur_per_mwh)?)
        .map_err(price_error)?;
    let qty = rules
        .qty_from_mw(parse_decimal("qty_mw", qty_mw)?)
        .map_err(price_error)?;
    Ok((price, qty))
}

fn owned_live_order(
    state: &SharedState,
    auth: &Auth,
    order_id: u64,
) -> Result<crate::server::exchange::LiveOrder, ApiError> {
    let order = state
        .exchange
        .live_order(OrderId(order_id))
        .ok_or_else(|| ApiError::not_found(format!("order {order_id} is not resting")))?;
    auth.require_account(order.account.0)?;
    Ok(order)
}

/// Cancels a resting order.
#[utoipa::path(delete, path = "/api/v1/orders/{order_id}", tag = "orders",
    params(("order_id" = u64, Path, description = "Order id")),
    security(("bearer" = [])),
    responses((status = 200, body = OrderAck), (status = 404, body = Problem),
        (status = 403, body = Problem)))]
pub async fn cancel_order(
    State(state): State<SharedState>,
    auth: Auth,
    ctx: Ctx,
    path: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Result<Json<OrderAck>, ApiError> {
    let mut target = "order:-".to_string();
    let mut journaled = false;
    let result: Result<OrderAck, ApiError> = async {
        auth.require(&[Role::Trader, Role::Operator])?;
        let Path(order_id) = path?;
        target = format!("order:{order_id}");
        let order = owned_live_order(&state, &auth, order_id)?;
        let cancel = BookCommand::Cancel {
            id: OrderId(order_id),
            account: order.account,
        };
        let origin = (&ctx, &auth, &mut journaled);
        execute_book_command(&state, origin, OrderId(order_id), order.product, cancel).await
    }
    .await;
    if !journaled {
        state
            .audit(&ctx, &auth, "order.cancel", &target, &result)
            .await;
    }
    Ok(Json(result?))
}

/// Changes price and/or remaining quantity of a resting order.
#[utoipa::path(patch, path = "/api/v1/orders/{order_id}", tag = "orders",
    params(("order_id" = u64, Path, description = "Order id")), request_body = ModifyOrder,
    security(("bearer" = [])),
    responses((status = 200, body = OrderAck), (status = 400, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn modify_order(
    State(state): State<SharedState>,
    auth: Auth,
    ctx: Ctx,
    path: Result<Path<u64>, axum::extract::rejection::PathRejection>,
    body: Result<Json<ModifyOrder>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<OrderAck>, ApiError> {
    let mut target = "order:-".to_string();
    let mut journaled = false;
    let result: Result<OrderAck, ApiError> = async {
        auth.require(&[Role::Trader, Role::Operator])?;
        let Path(order_id) = path?;
        target = format!("order:{order_id}");
        let Json(body) = body?;
        let order = owned_live_order(&state, &auth, order_id)?;
        state.limiter.check(order.account.0)?;
        let listed = state.exchange.rules_of(order.product);
        let (price, qty) = parse_price_qty(&listed.book, &body.price_eur_per_mwh, &body.qty_mw)?;
        let modify = BookCommand::Modify {
            id: OrderId(order_id),
            account: order.account,
            price,
            qty,
        };
        let origin = (&ctx, &auth, &mut journaled);
        execute_book_command(&state, origin, OrderId(order_id), order.product, modify).await
    }
    .await;
    if !journaled {
        state
            .audit(&ctx, &auth, "order.modify", &target, &result)
            .await;
    }
    Ok(Json(result?))
}

fn view(state: &SharedState, id: OrderId, order: &crate::server::exchange::LiveOrder) -> OrderView {
    let rules = state.exchange.rules();
    OrderView {
        order_id: id.0,
        product: order.product.0,
        account: order.account.0,
        side: order.side.into(),
        price_eur_per_mwh: order.price.to_decimal().to_string(),
        qty_mw: rules.qty_to_mw(order.qty_accepted).normalize().to_string(),
        remaining_mw: rules.qty_to_mw(order.remaining).normalize().to_string(),
    }
}

/// Resting orders of an account.
#[utoipa::path(get, path = "/api/v1/orders", tag = "orders", params(AccountQuery),
    security(("bearer" = [])),
    responses((status = 200, body = [OrderView]), (status = 403, body = Problem)))]
pub async fn list_orders(
    State(state): State<SharedState>,
    auth: Auth,
    query: Result<Query<AccountQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<OrderView>>, ApiError> {
    let Query(query) = query?;
    auth.require_account(query.account)?;
    Ok(Json(
        state
            .exchange
            .live_orders_of(AccountId(query.account))
            .iter()
            .map(|(id, order)| view(&state, *id, order))
            .collect(),
    ))
}

/// One resting order.
#[utoipa::path(get, path = "/api/v1/orders/{order_id}", tag = "orders",
    params(("order_id" = u64, Path, description = "Order id")),
    security(("bearer" = [])),
    responses((status = 200, body = OrderView), (status = 404, body = Problem)))]
pub async fn get_order(
    State(state): State<SharedState>,
    auth: Auth,
    path: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Result<Json<OrderView>, ApiError> {
    let Path(order_id) = path?;
    let order = owned_live_order(&state, &auth, order_id)?;
    Ok(Json(view(&state, OrderId(order_id), &order)))
}
