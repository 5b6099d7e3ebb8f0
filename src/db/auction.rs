//! The day-ahead auction's projection: the engine's curve and clearing events into
//! `auction_curves`, `auction_curve_points`, `auction_results` and `auction_awards`
//! (migration 0003), the block families' events into `auction_families` (migration
//! 0008), and the reads of those tables.
//!
//! [`apply_auction_event`] runs inside the transaction of
//! [`Db::persist_engine_events`], so like every other projection it sees each event once
//! and in event-seq order (the cursor skips what was persisted before). The writes are
//! upserts keyed by (product, account, side) or product and carry the event seq, so even
//! applied twice they leave the same rows: a replacement deletes the old points before
//! its own point events re-insert them. Awards are inserted once (`ON CONFLICT DO
//! NOTHING`; an auction clears once, so a stored award of another event seq is
//! [`DbError::Corrupt`]).
//!
//! An award is also a fill: when its `auction_awards` row is newly inserted, it is added
//! to the account's position at the clearing price that the preceding `AuctionCleared`
//! stored (buy: bought quantity and notional; sell: sold). An award applied again finds
//! its row and changes nothing, the same guard the continuous trades' positions have, so
//! a row in `auction_awards` always means "counted once in `positions`" (migration 0004
//! counted the awards stored before this rule). [`Db::list_fills`] reads the awards back
//! as fills of source `auction`.
//!
//! A block family's row follows it from the acceptance that opened it to its end
//! (`open` → `accepted` | `rejected` | `withdrawn`); a replacement updates the open row.
//! The family events carry the seq of the change, and an event whose seq the open row
//! already holds (or passed) changes nothing, so these writes are idempotent too. The
//! families accepted before migration 0008 are projected once from the stored events
//! ([`run_pending_backfills`]), in the same transaction that deletes the migration's
//! `pending_backfills` row.

use sqlx::any::AnyRow;
use voltex_engine::command::{EngineEvent, EventKind};
use voltex_engine::family::FamilyRef;
use voltex_market::auction::CurveKind;
use voltex_market::{AccountId, ProductId, Side, UtcNanos};

use super::types::side_text;
use super::{Db, DbError, FillRow, FillSource, col, col_enum, col_int, col_int_opt, input_i64};

type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Stored name of a curve kind.
pub(crate) const fn kind_text(kind: CurveKind) -> &'static str {
    match kind {
        CurveKind::Stepwise => "stepwise",
        CurveKind::PiecewiseLinear => "piecewise_linear",
    }
}

fn parse_kind(text: &str) -> Option<CurveKind> {
    match text {
        "stepwise" => Some(CurveKind::Stepwise),
        "piecewise_linear" => Some(CurveKind::PiecewiseLinear),
        _ => None,
    }
}

/// A stored bid curve with its points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuctionCurveRow {
    /// Product.
    pub product_id: u32,
    /// Owner.
    pub account_id: u32,
    /// Buy or sell.
    pub side: Side,
    /// How the points are read.
    pub kind: CurveKind,
    /// `active` or `withdrawn`.
    pub status: String,
    /// `(price_ticks, qty_lots)` by point index (empty once withdrawn).
    pub points: Vec<(i64, i64)>,
    /// Event seq of the last change.
    pub updated_event_seq: u64,
}

/// A cleared auction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuctionResultRow {
    /// Product.
    pub product_id: u32,
    /// Clearing price in ticks; `None` when nothing traded.
    pub price_ticks: Option<i64>,
    /// Traded volume in lots.
    pub volume_lots: i64,
    /// Curves that took part.
    pub n_curves: u32,
    /// Engine time of the clearing.
    pub cleared_at_ns: i64,
}

/// One award.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuctionAwardRow {
    /// Product.
    pub product_id: u32,
    /// Account.
    pub account_id: u32,
    /// Buy or sell.
    pub side: Side,
    /// Accepted quantity in lots.
    pub qty_lots: i64,
}

/// Where a stored block family stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyRowStatus {
    /// Waiting for its gate.
    Open,
    /// Cleared: every block traded in full.
    Accepted,
    /// Cleared: nothing traded.
    Rejected,
    /// Withdrawn before its gate.
    Withdrawn,
}

impl FamilyRowStatus {
    /// The stored (and API) name.
    pub const fn as_str(self) -> &'static str {
        match self {
            FamilyRowStatus::Open => "open",
            FamilyRowStatus::Accepted => "accepted",
            FamilyRowStatus::Rejected => "rejected",
            FamilyRowStatus::Withdrawn => "withdrawn",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            FamilyRowStatus::Open,
            FamilyRowStatus::Accepted,
            FamilyRowStatus::Rejected,
            FamilyRowStatus::Withdrawn,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }
}

/// A stored block family: one per acceptance that opened it (see migration 0008).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuctionFamilyRow {
    /// Event seq of the acceptance that opened it (its identity).
    pub opened_event_seq: u64,
    /// Owner.
    pub account_id: u32,
    /// The owner's name for it.
    pub family_ref: u32,
    /// Its first product (after the last replacement).
    pub first_product_id: u32,
    /// Products it spans.
    pub n_products: u32,
    /// Blocks.
    pub n_blocks: u32,
    /// Replacements before its gate.
    pub n_replacements: u32,
    /// Where it stands.
    pub status: FamilyRowStatus,
    /// Surplus at the clearing prices, price ticks times lots; `None` before clearing
    /// or where a product had no trade.
    pub surplus_ticks_x_lots: Option<i64>,
    /// Engine time of the acceptance that opened it.
    pub opened_at_ns: i64,
    /// Engine time of its last change.
    pub updated_at_ns: i64,
    /// Event seq of its last change.
    pub updated_event_seq: u64,
}

/// The open row of `account`'s family `family`: (opened, last updated) event seqs.
async fn open_family(
    tx: &mut Tx,
    account: AccountId,
    family: FamilyRef,
) -> Result<Option<(i64, i64)>, DbError> {
    let row = sqlx::query(
        "SELECT opened_event_seq, updated_event_seq FROM auction_families \
         WHERE account_id = $1 AND family_ref = $2 AND status = 'open'",
    )
    .bind(i64::from(account.0))
    .bind(i64::from(family.0))
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|row| {
        Ok((
            col(&row, "opened_event_seq")?,
            col(&row, "updated_event_seq")?,
        ))
    })
    .transpose()
}

/// Applies one block family event to `auction_families` (other events are ignored).
async fn apply_family_event(tx: &mut Tx, event: &EngineEvent) -> Result<(), DbError> {
    let at_ns = event.now.0;
    let seq = input_i64("event_seq", event.event_seq)?;
    let (account, family) = match event.kind {
        EventKind::FamilyAccepted {
            account, family, ..
        }
        | EventKind::FamilyWithdrawn { account, family }
        | EventKind::FamilyCleared {
            account, family, ..
        } => (account, family),
        _ => return Ok(()),
    };
    let open = open_family(tx, account, family).await?;
    if matches!(open, Some((_, updated)) if updated >= seq) {
        return Ok(()); // applied before
    }
    match (event.kind, open) {
        (
            EventKind::FamilyAccepted {
                n_products,
                n_blocks,
                replaced: true,
                ..
            },
            Some((opened, _)),
        ) => {
            sqlx::query(
                "UPDATE auction_families SET first_product_id = $1, n_products = $2, \
                 n_blocks = $3, n_replacements = n_replacements + 1, updated_at_ns = $4, \
                 updated_event_seq = $5 WHERE opened_event_seq = $6",
            )
            .bind(i64::from(event.product.0))
            .bind(i64::from(n_products))
            .bind(i64::from(n_blocks))
            .bind(at_ns)
            .bind(seq)
            .bind(opened)
            .execute(&mut **tx)
            .await?;
        }
        (
            EventKind::FamilyAccepted {
                replaced: false, ..
            },
            Some((opened, _)),
        ) => {
            return Err(DbError::Corrupt {
                table: "auction_families",
                column: "status",
                message: format!(
                    "event {seq} opens family {} of {account}, which is open since event \
                     {opened}: the engine holds one open family per name",
                    family.0
                ),
            });
        }
        (
            EventKind::FamilyAccepted {
                n_products,
                n_blocks,
                ..
            },
            None,
        ) => {
            // A replacement whose open row is missing opens one: nothing is lost.
            // An acceptance replayed after its family closed meets its own key.
            sqlx::query(
                "INSERT INTO auction_families (opened_event_seq, account_id, family_ref, \
                 first_product_id, n_products, n_blocks, n_replacements, status, \
                 surplus_ticks_x_lots, opened_at_ns, updated_at_ns, updated_event_seq) \
                 VALUES ($1, $2, $3, $4, $5, $6, 0, 'open', NULL, $7, $7, $1) \
                 ON CONFLICT (opened_event_seq) DO NOTHING",
            )
            .bind(seq)
            .bind(i64::from(account.0))
            .bind(i64::from(family.0))
            .bind(i64::from(event.product.0))
            .bind(i64::from(n_products))
            .bind(i64::from(n_blocks))
            .bind(at_ns)
            .execute(&mut **tx)
            .await?;
        }
        (EventKind::FamilyWithdrawn { .. }, Some((opened, _))) => {
            close_family(tx, opened, FamilyRowStatus::Withdrawn, None, at_ns, seq).await?;
        }
        (
            EventKind::FamilyCleared {
                accepted,
                surplus_ticks_x_lots,
                ..
            },
            Some((opened, _)),
        ) => {
            let status = if accepted {
                FamilyRowStatus::Accepted
            } else {
                FamilyRowStatus::Rejected
            };
            close_family(tx, opened, status, surplus_ticks_x_lots, at_ns, seq).await?;
        }
        // Withdrawn or cleared with no open row: replayed after the row closed.
        _ => {}
    }
    Ok(())
}

/// Ends the open family row `opened` with `status`.
async fn close_family(
    tx: &mut Tx,
    opened: i64,
    status: FamilyRowStatus,
    surplus_ticks_x_lots: Option<i64>,
    at_ns: i64,
    seq: i64,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE auction_families SET status = $1, surplus_ticks_x_lots = $2, \
         updated_at_ns = $3, updated_event_seq = $4 WHERE opened_event_seq = $5",
    )
    .bind(status.as_str())
    .bind(surplus_ticks_x_lots)
    .bind(at_ns)
    .bind(seq)
    .bind(opened)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Db {
    /// Runs the projections a migration left to fill from the stored engine events
    /// (the rows of `pending_backfills`), each at most once: the row is deleted in the
    /// transaction that fills its projection, so a concurrent or later start finds it
    /// gone. Today: `auction_families` (migration 0008), from the family events stored
    /// before it. [`Db::connect_with`] runs it after migrating.
    ///
    /// # Errors
    /// Database errors; [`DbError::Corrupt`] for a stored event that does not decode.
    pub async fn run_pending_backfills(&self) -> Result<(), DbError> {
        let mut tx = self.begin_write().await?;
        let claimed = sqlx::query("DELETE FROM pending_backfills WHERE name = 'auction_families'")
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if claimed > 0 {
            let rows = sqlx::query(
                "SELECT event_seq, command_seq, at_ns, product_id, body_json FROM engine_events \
             WHERE kind IN ('family_accepted', 'family_withdrawn', 'family_cleared') \
             ORDER BY event_seq",
            )
            .fetch_all(&mut *tx)
            .await?;
            for row in &rows {
                let body: String = col(row, "body_json")?;
                let kind: EventKind =
                    serde_json::from_str(&body).map_err(|e| DbError::Corrupt {
                        table: "engine_events",
                        column: "body_json",
                        message: e.to_string(),
                    })?;
                let event = EngineEvent {
                    event_seq: col_int(row, "engine_events", "event_seq")?,
                    command_seq: col_int(row, "engine_events", "command_seq")?,
                    now: UtcNanos(col(row, "at_ns")?),
                    product: ProductId(col_int(row, "engine_events", "product_id")?),
                    kind,
                };
                apply_family_event(&mut tx, &event).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Forgets the points of a (product, account, side) curve (replaced or withdrawn).
async fn delete_curve_points(
    tx: &mut Tx,
    product_id: i64,
    account: AccountId,
    side: Side,
) -> Result<(), DbError> {
    sqlx::query(
        "DELETE FROM auction_curve_points \
         WHERE product_id = $1 AND account_id = $2 AND side = $3",
    )
    .bind(product_id)
    .bind(i64::from(account.0))
    .bind(side_text::as_str(side))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The clearing price of `product_id`'s auction, which the `AuctionCleared` event
/// before `award` stored (in this transaction or an earlier one).
async fn clearing_price_ticks(
    tx: &mut Tx,
    award: &EngineEvent,
    product_id: i64,
) -> Result<i64, DbError> {
    let row = sqlx::query("SELECT price_ticks FROM auction_results WHERE product_id = $1")
        .bind(product_id)
        .fetch_optional(&mut **tx)
        .await?;
    let price: Option<i64> = match &row {
        Some(row) => col_int_opt(row, "auction_results", "price_ticks")?,
        None => None,
    };
    price.ok_or_else(|| DbError::Corrupt {
        table: "auction_results",
        column: "price_ticks",
        message: format!(
            "award event {} of product {product_id} has no clearing price before it",
            award.event_seq
        ),
    })
}

/// An award row that was already stored must be the one `award` wrote.
async fn expect_same_award(
    tx: &mut Tx,
    award: &EngineEvent,
    product_id: i64,
    account: AccountId,
    side: Side,
) -> Result<(), DbError> {
    let stored: i64 = sqlx::query_scalar(
        "SELECT event_seq FROM auction_awards \
         WHERE product_id = $1 AND account_id = $2 AND side = $3",
    )
    .bind(product_id)
    .bind(i64::from(account.0))
    .bind(side_text::as_str(side))
    .fetch_one(&mut **tx)
    .await?;
    if u64::try_from(stored) == Ok(award.event_seq) {
        return Ok(());
    }
    Err(DbError::Corrupt {
        table: "auction_awards",
        column: "event_seq",
        message: format!(
            "award event {} of product {product_id}, {account}, {} meets a stored award of \
             event {stored}: an auction clears once",
            award.event_seq,
            side_text::as_str(side)
        ),
    })
}

/// Applies one auction event (other events are ignored).
pub(crate) async fn apply_auction_event(tx: &mut Tx, event: &EngineEvent) -> Result<(), DbError> {
    let product_id = i64::from(event.product.0);
    let at_ns = event.now.0;
    let seq = input_i64("event_seq", event.event_seq)?;
    match event.kind {
        EventKind::CurveAccepted {
            account,
            side,
            kind,
            n_points,
            ..
        } => {
            delete_curve_points(tx, product_id, account, side).await?;
            sqlx::query(
                "INSERT INTO auction_curves (product_id, account_id, side, kind, n_points, \
                 status, accepted_at_ns, updated_at_ns, accepted_event_seq, updated_event_seq) \
                 VALUES ($1, $2, $3, $4, $5, 'active', $6, $6, $7, $7) \
                 ON CONFLICT (product_id, account_id, side) DO UPDATE SET \
                 kind = excluded.kind, n_points = excluded.n_points, status = 'active', \
                 accepted_at_ns = excluded.accepted_at_ns, \
                 updated_at_ns = excluded.updated_at_ns, \
                 accepted_event_seq = excluded.accepted_event_seq, \
                 updated_event_seq = excluded.updated_event_seq",
            )
            .bind(product_id)
            .bind(i64::from(account.0))
            .bind(side_text::as_str(side))
            .bind(kind_text(kind))
            .bind(i64::from(n_points))
            .bind(at_ns)
            .bind(seq)
            .execute(&mut **tx)
            .await?;
        }
        EventKind::CurvePointAccepted {
            account,
            side,
            point_idx,
            price,
            qty,
        } => {
            sqlx::query(
                "INSERT INTO auction_curve_points \
                 (product_id, account_id, side, point_idx, price_ticks, qty_lots, event_seq) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (product_id, account_id, side, point_idx) DO UPDATE SET \
                 price_ticks = excluded.price_ticks, qty_lots = excluded.qty_lots, \
                 event_seq = excluded.event_seq",
            )
            .bind(product_id)
            .bind(i64::from(account.0))
            .bind(side_text::as_str(side))
            .bind(i64::from(point_idx))
            .bind(price.0)
            .bind(qty.0)
            .bind(seq)
            .execute(&mut **tx)
            .await?;
        }
        EventKind::CurveWithdrawn { account, side } => {
            delete_curve_points(tx, product_id, account, side).await?;
            sqlx::query(
                "UPDATE auction_curves SET status = 'withdrawn', n_points = 0, \
                 updated_at_ns = $1, updated_event_seq = $2 \
                 WHERE product_id = $3 AND account_id = $4 AND side = $5",
            )
            .bind(at_ns)
            .bind(seq)
            .bind(product_id)
            .bind(i64::from(account.0))
            .bind(side_text::as_str(side))
            .execute(&mut **tx)
            .await?;
        }
        EventKind::AuctionCleared {
            price,
            volume,
            n_curves,
        } => {
            sqlx::query(
                "INSERT INTO auction_results \
                 (product_id, price_ticks, volume_lots, n_curves, cleared_at_ns, event_seq) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (product_id) DO UPDATE SET price_ticks = excluded.price_ticks, \
                 volume_lots = excluded.volume_lots, n_curves = excluded.n_curves, \
                 cleared_at_ns = excluded.cleared_at_ns, event_seq = excluded.event_seq",
            )
            .bind(product_id)
            .bind(price.map(|price| price.0))
            .bind(volume.0)
            .bind(i64::from(n_curves))
            .bind(at_ns)
            .bind(seq)
            .execute(&mut **tx)
            .await?;
        }
        EventKind::AuctionAward { account, side, qty } => {
            let inserted = sqlx::query(
                "INSERT INTO auction_awards (product_id, account_id, side, qty_lots, event_seq) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (product_id, account_id, side) DO NOTHING",
            )
            .bind(product_id)
            .bind(i64::from(account.0))
            .bind(side_text::as_str(side))
            .bind(qty.0)
            .bind(seq)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                // Persisted before, so the position counts it already. An auction
                // clears once, so the stored award must be this very event.
                return expect_same_award(tx, event, product_id, account, side).await;
            }
            let price_ticks = clearing_price_ticks(tx, event, product_id).await?;
            let notional = price_ticks
                .checked_mul(qty.0)
                .ok_or(DbError::InvalidInput {
                    field: "auction_award",
                    message: format!("price {price_ticks} x qty {} overflows", qty.0),
                })?;
            super::trading::add_fill_to_position(
                tx, account.0, product_id, side, qty.0, notional, at_ns, seq,
            )
            .await?;
        }
        // A family's accepted quantities arrive in its products' awards; its own
        // events move its `auction_families` row. A refused family command changed
        // nothing (`engine_events` keeps it).
        EventKind::FamilyAccepted { .. }
        | EventKind::FamilyWithdrawn { .. }
        | EventKind::FamilyCleared { .. } => apply_family_event(tx, event).await?,
        EventKind::CurveRejected { .. }
        | EventKind::ProductAdded { .. }
        | EventKind::Rejected { .. }
        | EventKind::Book(_)
        | EventKind::FamilyRejected { .. } => {}
    }
    Ok(())
}

fn award_from_row(row: &AnyRow) -> Result<AuctionAwardRow, DbError> {
    Ok(AuctionAwardRow {
        product_id: col_int(row, "auction_awards", "product_id")?,
        account_id: col_int(row, "auction_awards", "account_id")?,
        side: col_enum(row, "auction_awards", "side", side_text::parse)?,
        qty_lots: col(row, "qty_lots")?,
    })
}

impl Db {
    /// The curves of `account_id` (active and withdrawn) with their points, by product
    /// and side.
    ///
    /// # Errors
    /// Database errors; [`DbError::Corrupt`] for a stored value out of range.
    pub async fn auction_curves_of(
        &self,
        account_id: u32,
    ) -> Result<Vec<AuctionCurveRow>, DbError> {
        let account = i64::from(account_id);
        let curves = sqlx::query(
            "SELECT product_id, account_id, side, kind, status, updated_event_seq \
             FROM auction_curves WHERE account_id = $1 ORDER BY product_id, side",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        let points = sqlx::query(
            "SELECT product_id, side, point_idx, price_ticks, qty_lots \
             FROM auction_curve_points WHERE account_id = $1 \
             ORDER BY product_id, side, point_idx",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(curves.len());
        for row in &curves {
            out.push(AuctionCurveRow {
                product_id: col_int(row, "auction_curves", "product_id")?,
                account_id: col_int(row, "auction_curves", "account_id")?,
                side: col_enum(row, "auction_curves", "side", side_text::parse)?,
                kind: col_enum(row, "auction_curves", "kind", parse_kind)?,
                status: col(row, "status")?,
                points: Vec::new(),
                updated_event_seq: col_int(row, "auction_curves", "updated_event_seq")?,
            });
        }
        for row in &points {
            let product_id: u32 = col_int(row, "auction_curve_points", "product_id")?;
            let side = col_enum(row, "auction_curve_points", "side", side_text::parse)?;
            if let Some(curve) = out
                .iter_mut()
                .find(|curve| curve.product_id == product_id && curve.side == side)
            {
                curve
                    .points
                    .push((col(row, "price_ticks")?, col(row, "qty_lots")?));
            }
        }
        Ok(out)
    }

    /// The result of `product_id`'s auction, once cleared.
    ///
    /// # Errors
    /// Database errors; [`DbError::Corrupt`] for a stored value out of range.
    pub async fn auction_result(
        &self,
        product_id: u32,
    ) -> Result<Option<AuctionResultRow>, DbError> {
        let row = sqlx::query(
            "SELECT product_id, price_ticks, volume_lots, n_curves, cleared_at_ns \
             FROM auction_results WHERE product_id = $1",
        )
        .bind(i64::from(product_id))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(AuctionResultRow {
                product_id: col_int(&row, "auction_results", "product_id")?,
                price_ticks: col_int_opt(&row, "auction_results", "price_ticks")?,
                volume_lots: col(&row, "volume_lots")?,
                n_curves: col_int(&row, "auction_results", "n_curves")?,
                cleared_at_ns: col(&row, "cleared_at_ns")?,
            })
        })
        .transpose()
    }

    /// The awards of `product_id`'s auction, by account and side.
    ///
    /// # Errors
    /// Database errors; [`DbError::Corrupt`] for a stored value out of range.
    pub async fn auction_awards(&self, product_id: u32) -> Result<Vec<AuctionAwardRow>, DbError> {
        let rows = sqlx::query(
            "SELECT product_id, account_id, side, qty_lots FROM auction_awards \
             WHERE product_id = $1 ORDER BY account_id, side",
        )
        .bind(i64::from(product_id))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(award_from_row).collect()
    }

    /// The block families of `account_id` (every status), newest first by the event
    /// that opened them, with `opened_event_seq < before`, at most `limit`.
    ///
    /// # Errors
    /// [`DbError::InvalidInput`] for a limit outside `1..=PAGE_LIMIT_MAX`; database
    /// errors; [`DbError::Corrupt`] for a stored value out of range.
    pub async fn auction_families_of(
        &self,
        account_id: u32,
        before_event_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<AuctionFamilyRow>, DbError> {
        let limit = super::page_limit(limit)?;
        let before = super::trading::page_before(before_event_seq)?;
        let rows = sqlx::query(
            "SELECT opened_event_seq, account_id, family_ref, first_product_id, n_products, \
             n_blocks, n_replacements, status, surplus_ticks_x_lots, opened_at_ns, \
             updated_at_ns, updated_event_seq FROM auction_families \
             WHERE account_id = $1 AND opened_event_seq < $2 \
             ORDER BY opened_event_seq DESC LIMIT $3",
        )
        .bind(i64::from(account_id))
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        const T: &str = "auction_families";
        rows.iter()
            .map(|row| {
                Ok(AuctionFamilyRow {
                    opened_event_seq: col_int(row, T, "opened_event_seq")?,
                    account_id: col_int(row, T, "account_id")?,
                    family_ref: col_int(row, T, "family_ref")?,
                    first_product_id: col_int(row, T, "first_product_id")?,
                    n_products: col_int(row, T, "n_products")?,
                    n_blocks: col_int(row, T, "n_blocks")?,
                    n_replacements: col_int(row, T, "n_replacements")?,
                    status: col_enum(row, T, "status", FamilyRowStatus::parse)?,
                    surplus_ticks_x_lots: col(row, "surplus_ticks_x_lots")?,
                    opened_at_ns: col(row, "opened_at_ns")?,
                    updated_at_ns: col(row, "updated_at_ns")?,
                    updated_event_seq: col_int(row, T, "updated_event_seq")?,
                })
            })
            .collect()
    }

    /// The day-ahead awards of `account_id` as fills at their auctions' clearing
    /// prices, newest first, with `event_seq < before`, at most `limit`.
    pub(super) async fn auction_fills(
        &self,
        account_id: u32,
        before: i64,
        limit: i64,
    ) -> Result<Vec<FillRow>, DbError> {
        let rows = sqlx::query(
            "SELECT a.product_id, a.side, a.qty_lots, a.event_seq, r.price_ticks, \
             r.cleared_at_ns FROM auction_awards a \
             JOIN auction_results r ON r.product_id = a.product_id \
             WHERE a.account_id = $1 AND a.event_seq < $2 \
             ORDER BY a.event_seq DESC LIMIT $3",
        )
        .bind(i64::from(account_id))
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let price_ticks: Option<i64> = col_int_opt(row, "auction_results", "price_ticks")?;
                Ok(FillRow {
                    source: FillSource::Auction,
                    product_id: col_int(row, "auction_awards", "product_id")?,
                    trade_id: None,
                    event_seq: col_int(row, "auction_awards", "event_seq")?,
                    at_ns: col(row, "cleared_at_ns")?,
                    account_id,
                    order_id: None,
                    side: col_enum(row, "auction_awards", "side", side_text::parse)?,
                    price_ticks: price_ticks.ok_or(DbError::Corrupt {
                        table: "auction_results",
                        column: "price_ticks",
                        message: "an auction with awards has no clearing price".into(),
                    })?,
                    qty_lots: col(row, "qty_lots")?,
                    aggressor: None,
                })
            })
            .collect()
    }
}
