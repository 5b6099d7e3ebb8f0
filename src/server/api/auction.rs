//! Trader endpoints of the day-ahead call auction: submit or replace a bid curve,
//! withdraw it, list an account's curves, and read a product's auction result.
//!
//! Prices travel as decimal strings in EUR/MWh and quantities as decimal strings in
//! MW. They go through the configured day-ahead rules' exact conversions
//! ([`voltex_market::MarketRules::price_from_decimal`], whole lots): an off-grid or
//! out-of-limit price is a typed 400, never rounded. A curve is checked here with the
//! rules new products are listed with ([`Exchange::day_ahead_rules`] through
//! [`voltex_engine::auction::auction_config`]) so a malformed curve is refused before
//! it costs a journal record; what only the engine can decide (unknown product, gate
//! closed, too many curves, and the product's own rules when it was listed under an
//! earlier configuration) comes back from the journaled command.
//!
//! [`Exchange::day_ahead_rules`]: crate::server::exchange::Exchange::day_ahead_rules Every answer to a mutating call is sent only after the sequencer
//! journaled the command, and every mutating call is audited.
//!
//! A trader sees and touches only their own accounts: the curve's account must be
//! theirs, and an auction result shows only their awards.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use voltex_engine::auction::{AUCTION_POINTS_PER_CURVE_MAX, CurveReject, auction_config};
use voltex_engine::{CommandKind, EngineCommand, EventKind};
use voltex_market::auction::{BidCurve, CurveKind, CurvePoint};
use voltex_market::rules::RuleError;
use voltex_market::{AccountId, MarketRules, ProductId, Qty, Side};

use super::market::SideDto;
use super::{Ctx, SharedState};
use crate::server::auth::{Auth, Role};
use crate::server::exchange::{ExchangeError, LiveCurve};
use crate::server::problem::{ApiError, Problem};

/// How a curve's points are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CurveKindDto {
    /// Every point is an independent step (a limit order); quantities add up.
    Stepwise,
    /// Every point is the curve's total quantity at its price, linear in between.
    PiecewiseLinear,
}

impl From<CurveKindDto> for CurveKind {
    fn from(kind: CurveKindDto) -> CurveKind {
        match kind {
            CurveKindDto::Stepwise => CurveKind::Stepwise,
            CurveKindDto::PiecewiseLinear => CurveKind::PiecewiseLinear,
        }
    }
}

impl From<CurveKind> for CurveKindDto {
    fn from(kind: CurveKind) -> CurveKindDto {
        match kind {
            CurveKind::Stepwise => CurveKindDto::Stepwise,
            CurveKind::PiecewiseLinear => CurveKindDto::PiecewiseLinear,
        }
    }
}

/// One point of a curve.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CurvePointDto {
    /// Price in EUR/MWh as a decimal string, on the 0.01 tick grid, inside
    /// -500..+4000.
    #[schema(example = "45.10")]
    pub price_eur_per_mwh: String,
    /// Quantity in MW as a decimal string, a whole number of 0.1 MW lots, not negative.
    #[schema(example = "1.5")]
    pub qty_mw: String,
}

/// A bid curve for one product's day-ahead auction (replaces the account's curve on
/// the same side).
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitCurve {
    /// Trading account.
    pub account: u32,
    /// Product id (see `GET /api/v1/products`).
    pub product: u32,
    /// Buy or sell.
    pub side: SideDto,
    /// Stepwise or piecewise-linear.
    pub kind: CurveKindDto,
    /// Points by strictly increasing price (at most 64).
    pub points: Vec<CurvePointDto>,
}

/// The acknowledgement of a curve command (journaled).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CurveAck {
    /// Product id.
    pub product: u32,
    /// Account.
    pub account: u32,
    /// Side.
    pub side: SideDto,
    /// Sequence number the sequencer gave the command.
    pub command_seq: u64,
    /// `accepted`, `replaced` or `withdrawn`.
    pub status: String,
}

/// A stored curve.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CurveView {
    /// Product id.
    pub product: u32,
    /// Account.
    pub account: u32,
    /// Side.
    pub side: SideDto,
    /// How the points are read.
    pub kind: CurveKindDto,
    /// Points by increasing price.
    pub points: Vec<CurvePointDto>,
    /// Event seq of its acceptance.
    pub accepted_event_seq: u64,
}

/// One account's accepted quantity on one side.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AwardDto {
    /// Account.
    pub account: u32,
    /// Side.
    pub side: SideDto,
    /// Accepted quantity in MW.
    pub qty_mw: String,
}

/// A product's day-ahead auction.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AuctionResultDto {
    /// Product id.
    pub product: u32,
    /// `open`, `cleared` or `not_held`.
    pub auction_phase: String,
    /// Day-ahead gate closure, UTC nanoseconds.
    pub auction_gate_closure_ns: i64,
    /// Uniform clearing price in EUR/MWh; absent before clearing or when nothing traded.
    pub clearing_price_eur_per_mwh: Option<String>,
    /// Traded volume in MW; absent before clearing.
    pub volume_mw: Option<String>,
    /// Curves that took part; absent before clearing.
    pub n_curves: Option<u32>,
    /// Awards of the accounts the caller may see (a trader: their own).
    pub awards: Vec<AwardDto>,
}

/// Query of the curve list.
#[derive(Clone, Debug, Deserialize, IntoParams)]
pub struct CurvesQuery {
    /// Account whose curves to list.
    pub account: u32,
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

/// The stable code and status of a curve rejection.
fn reject_problem(reason: CurveReject) -> ApiError {
    let (status, code) = match reason {
        CurveReject::UnknownProduct => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_product"),
        CurveReject::GateClosed => (StatusCode::UNPROCESSABLE_ENTITY, "auction_gate_closed"),
        CurveReject::TooManyCurves => (StatusCode::UNPROCESSABLE_ENTITY, "too_many_curves"),
        CurveReject::NoSuchCurve => (StatusCode::NOT_FOUND, "curve_not_found"),
        CurveReject::Empty => (StatusCode::BAD_REQUEST, "curve_empty"),
        CurveReject::TooManyPoints => (StatusCode::BAD_REQUEST, "too_many_points"),
        CurveReject::PriceOffTick { .. } => (StatusCode::BAD_REQUEST, "price_off_tick"),
        CurveReject::PriceOutOfLimits { .. } => (StatusCode::BAD_REQUEST, "price_out_of_limits"),
        CurveReject::PricesNotIncreasing { .. } => {
            (StatusCode::BAD_REQUEST, "points_not_increasing")
        }
        CurveReject::NegativeQty { .. } => (StatusCode::BAD_REQUEST, "qty_negative"),
        CurveReject::NonMonotone { .. } => (StatusCode::BAD_REQUEST, "curve_not_monotone"),
        CurveReject::QtyAboveMax => (StatusCode::BAD_REQUEST, "qty_above_max"),
    };
    ApiError::new(status, code, reason.to_string())
}

/// A 400 with the stable code of the market rule a value of `field` breaks.
pub(super) fn rule_problem(field: &str, error: &RuleError) -> ApiError {
    let code = match error {
        RuleError::PriceOffTick { .. } => "price_off_tick",
        RuleError::PriceOutOfLimits { .. } => "price_out_of_limits",
        RuleError::QtyOffLot { .. } => "qty_off_lot",
        RuleError::QtyAboveMax { .. } => "qty_above_max",
        RuleError::Unit(voltex_market::units::UnitError::OffGrid { .. }) => "price_off_grid",
        RuleError::Unit(_) => "bad_number",
        _ => "invalid_value",
    };
    ApiError::bad_request(code, format!("{field}: {error}"))
}

fn point_error(point_idx: usize, field: &str, error: &RuleError) -> ApiError {
    rule_problem(&format!("points[{point_idx}].{field}"), error)
}

/// `text` of `field` as a decimal number, or a 400 `bad_number`.
pub(super) fn parse_decimal_field(field: &str, text: &str) -> Result<Decimal, ApiError> {
    text.trim().parse::<Decimal>().map_err(|_| {
        ApiError::bad_request(
            "bad_number",
            format!("{field}: {text:?} is not a decimal number"),
        )
    })
}

fn parse_decimal(point_idx: usize, field: &str, text: &str) -> Result<Decimal, ApiError> {
    parse_decimal_field(&format!("points[{point_idx}].{field}"), text)
}

/// The points of a request on the day-ahead grid (prices exact, whole lots, zero
/// allowed).
fn parse_points(
    rules: &MarketRules,
    points: &[CurvePointDto],
) -> Result<Vec<CurvePoint>, ApiError> {
    if points.len() > AUCTION_POINTS_PER_CURVE_MAX {
        return Err(ApiError::bad_request(
            "too_many_points",
            format!(
                "{} points is more than the limit of {AUCTION_POINTS_PER_CURVE_MAX}",
                points.len()
            ),
        ));
    }
    points
        .iter()
        .enumerate()
        .map(|(point_idx, point)| {
            let price = rules
                .price_from_decimal(parse_decimal(
                    point_idx,
                    "price_eur_per_mwh",
                    &point.price_eur_per_mwh,
                )?)
                .map_err(|error| point_error(point_idx, "price_eur_per_mwh", &error))?;
            let mw = parse_decimal(point_idx, "qty_mw", &point.qty_mw)?;
            let qty = if mw.is_zero() {
                Qty::ZERO
            } else if mw.is_sign_negative() {
                return Err(ApiError::bad_request(
                    "qty_negative",
                    format!("points[{point_idx}].qty_mw: {mw} MW is negative"),
                ));
            } else {
                rules
                    .qty_from_mw(mw)
                    .map_err(|error| point_error(point_idx, "qty_mw", &error))?
            };
            Ok(CurvePoint { price, qty })
        })
        .collect()
}

fn points_dto(rules: &MarketRules, points: &[CurvePoint]) -> Vec<CurvePointDto> {
    points
        .iter()
        .map(|point| CurvePointDto {
            price_eur_per_mwh: point.price.to_decimal().to_string(),
            qty_mw: rules.qty_to_mw(point.qty).normalize().to_string(),
        })
        .collect()
}

/// Runs an auction command through the sequencer (answered after the journal commit)
/// and returns its command seq and the first of its events that `is_answer` picks (a
/// command without one is an internal error naming `what`).
pub(super) async fn execute_auction_command(
    state: &SharedState,
    kind: CommandKind,
    what: &str,
    is_answer: fn(&EventKind) -> bool,
) -> Result<(u64, EventKind), ApiError> {
    let command = EngineCommand {
        now: state.exchange.now(),
        origin: None,
        kind,
    };
    let executed = state
        .exchange
        .execute(command)
        .await
        .map_err(|error| match error {
            ExchangeError::Overloaded => ApiError::unavailable(error.to_string()),
            other => ApiError::internal(other),
        })?;
    let answer = executed
        .events
        .iter()
        .map(|event| event.kind)
        .find(is_answer)
        .ok_or_else(|| ApiError::internal(format!("a {what} command caused no {what} event")))?;
    Ok((executed.ack.seq, answer))
}

/// Runs a curve command and returns its command seq and curve event; a refusal is its
/// problem document.
async fn execute_curve_command(
    state: &SharedState,
    kind: CommandKind,
) -> Result<(u64, EventKind), ApiError> {
    let (command_seq, outcome) = execute_auction_command(state, kind, "curve", |kind| {
        matches!(
            kind,
            EventKind::CurveAccepted { .. }
                | EventKind::CurveWithdrawn { .. }
                | EventKind::CurveRejected { .. }
        )
    })
    .await?;
    if let EventKind::CurveRejected { reason, .. } = outcome {
        return Err(reject_problem(reason));
    }
    Ok((command_seq, outcome))
}

/// Submits or replaces a bid curve; answered after the sequencer journaled it.
#[utoipa::path(post, path = "/api/v1/auction/curves", tag = "auction", request_body = SubmitCurve,
    security(("bearer" = [])),
    responses((status = 201, body = CurveAck), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem), (status = 429, body = Problem)))]
pub async fn submit_curve(
    State(state): State<SharedState>,
    auth: Auth,
    ctx: Ctx,
    body: Result<Json<SubmitCurve>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CurveAck>), ApiError> {
    let mut target = "curve:-".to_string();
    let result: Result<CurveAck, ApiError> = async {
        auth.require(&[Role::Trader, Role::Operator])?;
        let Json(body) = body?;
        let side: Side = body.side.into();
        target = format!(
            "curve:{}/{}/{}",
            body.product,
            body.account,
            side_name(side)
        );
        auth.require_account(body.account)?;
        state.limiter.check(body.account)?;
        // The product's own auction rules (it may predate a configuration change).
        let listed = state.exchange.rules_of(ProductId(body.product));
        let day_ahead = &listed.auction;
        let points = parse_points(day_ahead, &body.points)?;
        let account = AccountId(body.account);
        let kind: CurveKind = body.kind.into();
        // The engine's own check, before the command costs a journal record.
        BidCurve::new(
            account,
            side,
            kind,
            points.clone(),
            &auction_config(day_ahead.clone()),
        )
        .map_err(|error| reject_problem(CurveReject::from_curve_error(&error)))?;
        let (command_seq, outcome) = execute_curve_command(
            &state,
            CommandKind::SubmitCurve {
                product: ProductId(body.product),
                account,
                side,
                kind,
                points,
            },
        )
        .await?;
        metrics::counter!("voltex_auction_curves_total").increment(1);
        let replaced = matches!(outcome, EventKind::CurveAccepted { replaced: true, .. });
        Ok(CurveAck {
            product: body.product,
            account: body.account,
            side: body.side,
            command_seq,
            status: if replaced { "replaced" } else { "accepted" }.to_string(),
        })
    }
    .await;
    state
        .audit(&ctx, &auth, "curve.submit", &target, &result)
        .await;
    Ok((StatusCode::CREATED, Json(result?)))
}

/// Withdraws a bid curve before the day-ahead gate.
#[utoipa::path(delete, path = "/api/v1/auction/curves/{product}/{account}/{side}", tag = "auction",
    params(("product" = u32, Path, description = "Product id"),
        ("account" = u32, Path, description = "Account"),
        ("side" = SideDto, Path, description = "buy or sell")),
    security(("bearer" = [])),
    responses((status = 200, body = CurveAck), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn withdraw_curve(
    State(state): State<SharedState>,
    auth: Auth,
    ctx: Ctx,
    path: Result<Path<(u32, u32, SideDto)>, axum::extract::rejection::PathRejection>,
) -> Result<Json<CurveAck>, ApiError> {
    let mut target = "curve:-".to_string();
    let result: Result<CurveAck, ApiError> = async {
        auth.require(&[Role::Trader, Role::Operator])?;
        let Path((product, account, side_dto)) = path?;
        let side: Side = side_dto.into();
        target = format!("curve:{product}/{account}/{}", side_name(side));
        auth.require_account(account)?;
        state.limiter.check(account)?;
        let (command_seq, _) = execute_curve_command(
            &state,
            CommandKind::WithdrawCurve {
                product: ProductId(product),
                account: AccountId(account),
                side,
            },
        )
        .await?;
        Ok(CurveAck {
            product,
            account,
            side: side_dto,
            command_seq,
            status: "withdrawn".to_string(),
        })
    }
    .await;
    state
        .audit(&ctx, &auth, "curve.withdraw", &target, &result)
        .await;
    Ok(Json(result?))
}

fn curve_view(rules: &MarketRules, curve: &LiveCurve) -> CurveView {
    CurveView {
        product: curve.product.0,
        account: curve.account.0,
        side: curve.side.into(),
        kind: curve.kind.into(),
        points: points_dto(rules, &curve.points),
        accepted_event_seq: curve.accepted_event_seq,
    }
}

/// The stored curves of an account, by product and side.
#[utoipa::path(get, path = "/api/v1/auction/curves", tag = "auction", params(CurvesQuery),
    security(("bearer" = [])),
    responses((status = 200, body = [CurveView]), (status = 403, body = Problem)))]
pub async fn list_curves(
    State(state): State<SharedState>,
    auth: Auth,
    query: Result<Query<CurvesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<CurveView>>, ApiError> {
    let Query(query) = query?;
    auth.require_account(query.account)?;
    let rules = state.exchange.day_ahead_rules();
    Ok(Json(
        state
            .exchange
            .curves_of(AccountId(query.account))
            .iter()
            .map(|curve| curve_view(rules, curve))
            .collect(),
    ))
}

/// A product's day-ahead auction: phase, gate, and after clearing the price, the
/// volume and the caller's own awards.
#[utoipa::path(get, path = "/api/v1/auction/results/{product}", tag = "auction",
    params(("product" = u32, Path, description = "Product id")),
    security(("bearer" = [])),
    responses((status = 200, body = AuctionResultDto), (status = 404, body = Problem)))]
pub async fn get_result(
    State(state): State<SharedState>,
    auth: Auth,
    path: Result<Path<u32>, axum::extract::rejection::PathRejection>,
) -> Result<Json<AuctionResultDto>, ApiError> {
    let Path(product) = path?;
    let info = state
        .exchange
        .product(ProductId(product))
        .ok_or_else(|| ApiError::not_found(format!("product {product} is not listed")))?;
    let auction = state
        .exchange
        .auction(ProductId(product))
        .ok_or_else(|| ApiError::not_found(format!("product {product} is not listed")))?;
    let rules = state.exchange.day_ahead_rules();
    let clearing = auction.clearing.as_ref();
    let awards = clearing
        .map(|clearing| {
            clearing
                .awards
                .iter()
                .filter(|((account, _), _)| auth.require_account(account.0).is_ok())
                .map(|((account, side), qty)| AwardDto {
                    account: account.0,
                    side: (*side).into(),
                    qty_mw: rules.qty_to_mw(*qty).normalize().to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(AuctionResultDto {
        product,
        auction_phase: info.auction_phase,
        auction_gate_closure_ns: info.auction_gate_closure_ns,
        clearing_price_eur_per_mwh: clearing
            .and_then(|clearing| clearing.price)
            .map(|price| price.to_decimal().to_string()),
        volume_mw: clearing
            .map(|clearing| rules.qty_to_mw(clearing.volume).normalize().to_string()),
        n_curves: clearing.map(|clearing| clearing.n_curves),
        awards,
    }))
}
