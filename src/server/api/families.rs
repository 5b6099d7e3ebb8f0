//! Trader endpoints of block families in the day-ahead auction: submit or replace a
//! family (linked blocks over several products, accepted whole or not at all), withdraw
//! it, and list an account's families with their outcome.
//!
//! A family's products must share one day-ahead gate: with the server's daily gate
//! (`day_ahead_gate_utc`) every hour of a delivery day does; without it each hour has
//! its own and a family spans one hour. Prices travel as decimal strings in EUR/MWh
//! and quantities as decimal strings in MW, converted exactly with the first product's
//! listed auction rules (an off-grid price is a typed 400, never rounded). Sizes are
//! checked here against the engine's limits, so an oversized family never costs a
//! journal record; what only the engine can decide (unknown product, gate closed or
//! different gates, rules, limits per gate and exclusive group) comes back from the
//! journaled command as a typed problem. Every answer to a mutating call is sent only
//! after the sequencer journaled the command, and every mutating call is audited.
//!
//! A trader touches and sees only their own accounts.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use voltex_engine::family::{
    BLOCKS_PER_FAMILY_MAX, FAMILY_PRODUCTS_MAX, FAMILY_QTYS_MAX, FamilyBlock, FamilyRef,
    FamilyReject,
};
use voltex_engine::{CommandKind, EventKind};
use voltex_market::{AccountId, MarketRules, ProductId, Qty};

use super::auction::{execute_auction_command, parse_decimal_field, rule_problem};
use super::market::SideDto;
use super::{Ctx, SharedState};
use crate::server::auth::{Auth, Role};
use crate::server::exchange::{FamilyStatus, LiveFamily};
use crate::server::problem::{ApiError, Problem};

/// One block of a family.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FamilyBlockDto {
    /// Buy (charging) or sell (discharging).
    pub side: SideDto,
    /// The block's limit: the volume-weighted average price it accepts at worst, in
    /// EUR/MWh as a decimal string on the tick grid.
    #[schema(example = "40.00")]
    pub limit_eur_per_mwh: String,
    /// MW per product, in the family's product order (a whole number of lots each,
    /// zero where the block does not trade).
    pub qty_mw: Vec<String>,
}

/// A block family (replaces the account's family of the same name).
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitFamily {
    /// Trading account.
    pub account: u32,
    /// The account's name for the family.
    pub family: u32,
    /// Of the account's families in one exclusive group at most one is accepted (the
    /// one with the most surplus).
    #[serde(default)]
    pub exclusive_group: Option<u32>,
    /// The products it spans (at most 100), all with one day-ahead gate.
    pub products: Vec<u32>,
    /// Its blocks (at most 8, at most 200 quantities in all).
    pub blocks: Vec<FamilyBlockDto>,
}

/// The acknowledgement of a family command (journaled).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FamilyAck {
    /// Account.
    pub account: u32,
    /// Family name.
    pub family: u32,
    /// Sequence number the sequencer gave the command.
    pub command_seq: u64,
    /// `accepted`, `replaced` or `withdrawn`.
    pub status: String,
}

/// A block family and, once its gate passed, its outcome.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FamilyView {
    /// Account.
    pub account: u32,
    /// Family name.
    pub family: u32,
    /// Its first product.
    pub first_product: u32,
    /// Products it spans.
    pub n_products: u32,
    /// Blocks.
    pub n_blocks: u32,
    /// `open`, `accepted` (every block traded in full) or `rejected` (nothing traded).
    pub status: String,
    /// Its surplus at the clearing prices in EUR (the blocks' quantities times the
    /// distance of each product's price from the block's limit, for hourly products);
    /// absent before clearing or where a product had no trade.
    pub surplus_eur: Option<String>,
    /// Event seq of its last change.
    pub event_seq: u64,
}

/// Query of the family list.
#[derive(Clone, Debug, Deserialize, IntoParams)]
pub struct FamiliesQuery {
    /// Account whose families to list.
    pub account: u32,
}

/// The stable code and status of a family rejection.
fn reject_problem(reason: FamilyReject) -> ApiError {
    use FamilyReject as R;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let (status, code) = match reason {
        R::UnknownProduct => (unprocessable, "unknown_product"),
        R::GateClosed => (unprocessable, "auction_gate_closed"),
        R::GatesDiffer => (unprocessable, "family_gates_differ"),
        R::RulesDiffer => (unprocessable, "family_rules_differ"),
        R::TooManyFamilies => (unprocessable, "too_many_families"),
        R::ExclusiveGroupFull => (unprocessable, "exclusive_group_full"),
        R::NoSuchFamily => (StatusCode::NOT_FOUND, "family_not_found"),
        R::NoProducts => (StatusCode::BAD_REQUEST, "family_no_products"),
        R::TooManyProducts => (StatusCode::BAD_REQUEST, "too_many_products"),
        R::DuplicateProduct => (StatusCode::BAD_REQUEST, "duplicate_product"),
        R::NoBlocks => (StatusCode::BAD_REQUEST, "family_no_blocks"),
        R::TooManyBlocks => (StatusCode::BAD_REQUEST, "too_many_blocks"),
        R::BlockLength { .. } => (StatusCode::BAD_REQUEST, "block_length"),
        R::PriceOffTick { .. } => (StatusCode::BAD_REQUEST, "price_off_tick"),
        R::PriceOutOfLimits { .. } => (StatusCode::BAD_REQUEST, "price_out_of_limits"),
        R::QtyOutOfRange { .. } => (StatusCode::BAD_REQUEST, "qty_above_max"),
        R::NoQuantity { .. } => (StatusCode::BAD_REQUEST, "block_no_quantity"),
    };
    ApiError::new(status, code, reason.to_string())
}

/// The request's sizes against the engine's limits (so an oversized family is refused
/// before it reaches the journal).
fn check_sizes(body: &SubmitFamily) -> Result<(), ApiError> {
    if body.products.len() > FAMILY_PRODUCTS_MAX {
        return Err(reject_problem(FamilyReject::TooManyProducts));
    }
    let n_qtys: usize = body.blocks.iter().map(|block| block.qty_mw.len()).sum();
    if body.blocks.len() > BLOCKS_PER_FAMILY_MAX || n_qtys > FAMILY_QTYS_MAX {
        return Err(reject_problem(FamilyReject::TooManyBlocks));
    }
    Ok(())
}

/// The blocks on the auction's grid (prices exact, whole lots, zero allowed).
fn parse_blocks(
    rules: &MarketRules,
    blocks: &[FamilyBlockDto],
) -> Result<Vec<FamilyBlock>, ApiError> {
    blocks
        .iter()
        .enumerate()
        .map(|(block_idx, block)| {
            let field = format!("blocks[{block_idx}].limit_eur_per_mwh");
            let limit = rules
                .price_from_decimal(parse_decimal_field(&field, &block.limit_eur_per_mwh)?)
                .map_err(|error| rule_problem(&field, &error))?;
            let qty = block
                .qty_mw
                .iter()
                .enumerate()
                .map(|(idx, text)| {
                    let field = format!("blocks[{block_idx}].qty_mw[{idx}]");
                    let mw = parse_decimal_field(&field, text)?;
                    if mw.is_zero() {
                        Ok(Qty::ZERO)
                    } else if mw.is_sign_negative() {
                        Err(ApiError::bad_request(
                            "qty_negative",
                            format!("{field}: {mw} MW is negative"),
                        ))
                    } else {
                        rules
                            .qty_from_mw(mw)
                            .map_err(|error| rule_problem(&field, &error))
                    }
                })
                .collect::<Result<Vec<Qty>, ApiError>>()?;
            Ok(FamilyBlock {
                side: block.side.into(),
                limit,
                qty,
            })
        })
        .collect()
}

/// Runs a family command and returns its command seq and family event; a refusal is
/// its problem document.
async fn execute_family_command(
    state: &SharedState,
    kind: CommandKind,
) -> Result<(u64, EventKind), ApiError> {
    let (command_seq, outcome) = execute_auction_command(state, kind, "family", |kind| {
        matches!(
            kind,
            EventKind::FamilyAccepted { .. }
                | EventKind::FamilyWithdrawn { .. }
                | EventKind::FamilyRejected { .. }
        )
    })
    .await?;
    if let EventKind::FamilyRejected { reason, .. } = outcome {
        return Err(reject_problem(reason));
    }
    Ok((command_seq, outcome))
}

/// Submits or replaces a block family; answered after the sequencer journaled it.
#[utoipa::path(post, path = "/api/v1/auction/families", tag = "auction", request_body = SubmitFamily,
    security(("bearer" = [])),
    responses((status = 201, body = FamilyAck), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem), (status = 429, body = Problem)))]
pub async fn submit_family(
    State(state): State<SharedState>,
    auth: Auth,
    ctx: Ctx,
    body: Result<Json<SubmitFamily>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<FamilyAck>), ApiError> {
    let mut target = "family:-".to_string();
    let result: Result<FamilyAck, ApiError> = async {
        auth.require(&[Role::Trader, Role::Operator])?;
        let Json(body) = body?;
        target = format!("family:{}/{}", body.account, body.family);
        auth.require_account(body.account)?;
        state.limiter.check(body.account)?;
        check_sizes(&body)?;
        let first = body
            .products
            .first()
            .ok_or_else(|| reject_problem(FamilyReject::NoProducts))?;
        // The first product's own auction rules (the engine refuses a family whose
        // products clear under different ones).
        let listed = state.exchange.rules_of(ProductId(*first));
        let blocks = parse_blocks(&listed.auction, &body.blocks)?;
        let (command_seq, outcome) = execute_family_command(
            &state,
            CommandKind::SubmitFamily {
                account: AccountId(body.account),
                family: FamilyRef(body.family),
                products: body.products.iter().map(|id| ProductId(*id)).collect(),
                blocks,
                exclusive_group: body.exclusive_group,
            },
        )
        .await?;
        metrics::counter!("voltex_auction_families_total").increment(1);
        let replaced = matches!(outcome, EventKind::FamilyAccepted { replaced: true, .. });
        Ok(FamilyAck {
            account: body.account,
            family: body.family,
            command_seq,
            status: if replaced { "replaced" } else { "accepted" }.to_string(),
        })
    }
    .await;
    state
        .audit(&ctx, &auth, "family.submit", &target, &result)
        .await;
    Ok((StatusCode::CREATED, Json(result?)))
}

/// Withdraws a block family before its gate.
#[utoipa::path(delete, path = "/api/v1/auction/families/{account}/{family}", tag = "auction",
    params(("account" = u32, Path, description = "Account"),
        ("family" = u32, Path, description = "The account's name for the family")),
    security(("bearer" = [])),
    responses((status = 200, body = FamilyAck), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
pub async fn withdraw_family(
    State(state): State<SharedState>,
    auth: Auth,
    ctx: Ctx,
    path: Result<Path<(u32, u32)>, axum::extract::rejection::PathRejection>,
) -> Result<Json<FamilyAck>, ApiError> {
    let mut target = "family:-".to_string();
    let result: Result<FamilyAck, ApiError> = async {
        auth.require(&[Role::Trader, Role::Operator])?;
        let Path((account, family)) = path?;
        target = format!("family:{account}/{family}");
        auth.require_account(account)?;
        state.limiter.check(account)?;
        let (command_seq, _) = execute_family_command(
            &state,
            CommandKind::WithdrawFamily {
                account: AccountId(account),
                family: FamilyRef(family),
            },
        )
        .await?;
        Ok(FamilyAck {
            account,
            family,
            command_seq,
            status: "withdrawn".to_string(),
        })
    }
    .await;
    state
        .audit(&ctx, &auth, "family.withdraw", &target, &result)
        .await;
    Ok(Json(result?))
}

/// The surplus in EUR of `ticks_x_lots` price ticks (0.01 EUR/MWh) times lots of
/// `lot_kw`, over one hour.
pub(super) fn surplus_eur(ticks_x_lots: i64, lot_kw: i64) -> Option<String> {
    let eur = Decimal::new(ticks_x_lots, 2)
        .checked_mul(Decimal::from(lot_kw))?
        .checked_div(Decimal::from(1_000))?;
    Some(eur.normalize().to_string())
}

fn family_view(rules: &MarketRules, family: &LiveFamily) -> FamilyView {
    FamilyView {
        account: family.account.0,
        family: family.family.0,
        first_product: family.first_product.0,
        n_products: family.n_products,
        n_blocks: family.n_blocks,
        status: match family.status {
            FamilyStatus::Open => "open",
            FamilyStatus::Accepted => "accepted",
            FamilyStatus::Rejected => "rejected",
        }
        .to_string(),
        surplus_eur: family
            .surplus_ticks_x_lots
            .and_then(|surplus| surplus_eur(surplus, rules.lot_kw)),
        event_seq: family.event_seq,
    }
}

/// The block families of an account: open ones and the outcome of cleared ones.
#[utoipa::path(get, path = "/api/v1/auction/families", tag = "auction", params(FamiliesQuery),
    security(("bearer" = [])),
    responses((status = 200, body = [FamilyView]), (status = 403, body = Problem)))]
pub async fn list_families(
    State(state): State<SharedState>,
    auth: Auth,
    query: Result<Query<FamiliesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<FamilyView>>, ApiError> {
    let Query(query) = query?;
    auth.require_account(query.account)?;
    let rules = state.exchange.day_ahead_rules();
    Ok(Json(
        state
            .exchange
            .families_of(AccountId(query.account))
            .iter()
            .map(|family| family_view(rules, family))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_surplus_in_ticks_times_lots_is_exact_euros() {
        // 20,000 ticks x lots of 0.1 MW for an hour: 20,000 x 0.01 EUR/MWh x 0.1 MWh.
        assert_eq!(surplus_eur(20_000, 100).as_deref(), Some("20"));
        assert_eq!(surplus_eur(-30_001, 100).as_deref(), Some("-30.001"));
        assert_eq!(surplus_eur(1, 1).as_deref(), Some("0.00001"));
    }

    #[test]
    fn every_family_refusal_has_its_own_code_and_a_client_error_status() {
        let reasons = [
            FamilyReject::UnknownProduct,
            FamilyReject::GateClosed,
            FamilyReject::GatesDiffer,
            FamilyReject::RulesDiffer,
            FamilyReject::TooManyFamilies,
            FamilyReject::ExclusiveGroupFull,
            FamilyReject::NoSuchFamily,
            FamilyReject::NoProducts,
            FamilyReject::TooManyProducts,
            FamilyReject::DuplicateProduct,
            FamilyReject::NoBlocks,
            FamilyReject::TooManyBlocks,
            FamilyReject::BlockLength { block_idx: 0 },
            FamilyReject::PriceOffTick { block_idx: 0 },
            FamilyReject::PriceOutOfLimits { block_idx: 0 },
            FamilyReject::QtyOutOfRange { block_idx: 0 },
            FamilyReject::NoQuantity { block_idx: 0 },
        ];
        let mut codes = std::collections::BTreeSet::new();
        for reason in reasons {
            let problem = reject_problem(reason);
            assert!(problem.status.is_client_error(), "{reason:?}");
            assert!(
                codes.insert(problem.code),
                "{reason:?}: {} twice",
                problem.code
            );
        }
    }
}
