//! Trading data: accounts, and the engine's event stream persisted into products,
//! orders, trades and positions; an account's fills (continuous trades, and the
//! day-ahead awards that `auction.rs` projects) and positions.
//!
//! # The event stream
//! The sequencer numbers events `1, 2, 3, ...` without gaps (`event_seq`).
//! [`Db::persist_engine_events`] applies a batch in one transaction together with the
//! cursor (`engine_cursor.last_event_seq`): events at or below the cursor are skipped,
//! an event beyond `cursor + 1` is refused as a gap. So after a restart the server
//! replays from [`Db::engine_cursor`] (or simply everything again) and the stored rows
//! come out the same: no duplicate trade, no position counted twice, nothing skipped.
//! Trades are also keyed by `(product_id, trade_id)` with `ON CONFLICT DO NOTHING`,
//! and a position changes only when its trade row was newly inserted: a second guard
//! that does not depend on the cursor. Day-ahead awards reach positions the same way
//! (`auction.rs`: only when the award's row was newly inserted).
//!
//! L2 depth events are not stored (the journal regenerates them); every other event
//! is kept in `engine_events` as JSON for inspection.

use sqlx::any::AnyRow;
use voltex_engine::command::{EngineEvent, EventKind};
use voltex_market::Side;
use voltex_market::book::{BookEvent, CancelReason};

use super::records::audit_insert_statements;
use super::types::side_text;
use super::{
    AccountRow, Db, DbError, EngineCursor, FillRow, FillSource, INSERT_BATCH_ROWS_MAX,
    NewAuditEntry, OrderFilter, OrderRow, OrderStatus, PersistOutcome, PositionRow, ProductRow,
    TradeRow, col, col_enum, col_int, input_i64, page_limit, placeholders,
};

type Tx = sqlx::Transaction<'static, sqlx::Any>;

const ORDER_COLUMNS: &str = "product_id, order_id, account_id, side, price_ticks, qty_lots, \
     filled_qty_lots, remaining_qty_lots, status, status_reason, created_at_ns, updated_at_ns, \
     created_event_seq, updated_event_seq";

const TRADE_COLUMNS: &str = "product_id, trade_id, event_seq, at_ns, price_ticks, qty_lots, \
     aggressor_order_id, aggressor_account_id, aggressor_side, resting_order_id, \
     resting_account_id";

const POSITION_COLUMNS: &str = "account_id, product_id, net_qty_lots, bought_qty_lots, \
     sold_qty_lots, bought_notional_tick_lots, sold_notional_tick_lots, n_trades, \
     updated_at_ns, updated_event_seq";

/// Whether a projection commit waits for durability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CommitWait {
    /// Until the commit is on disk (the default of both backends).
    WalFlushed,
    /// Only until it is visible (PostgreSQL's asynchronous commit).
    Returns,
}

impl Db {
    /// Creates an account with an operator-chosen id.
    ///
    /// # Errors
    /// [`DbError::AlreadyExists`] if the id or the name is taken; [`DbError::InvalidInput`]
    /// for an empty name.
    pub async fn create_account(
        &self,
        account_id: u32,
        name: &str,
        created_at_ns: i64,
    ) -> Result<AccountRow, DbError> {
        if name.trim().is_empty() {
            return Err(DbError::InvalidInput {
                field: "name",
                message: "must not be empty".into(),
            });
        }
        let inserted = sqlx::query(
            "INSERT INTO accounts (account_id, name, created_at_ns) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(i64::from(account_id))
        .bind(name)
        .bind(created_at_ns)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(DbError::AlreadyExists {
                entity: "account",
                key: format!("{account_id} / {name:?}"),
            });
        }
        Ok(AccountRow {
            account_id,
            name: name.to_string(),
            created_at_ns,
        })
    }

    /// One account.
    ///
    /// # Errors
    /// Database errors only; an unknown id is `Ok(None)`.
    pub async fn get_account(&self, account_id: u32) -> Result<Option<AccountRow>, DbError> {
        let row = sqlx::query(
            "SELECT account_id, name, created_at_ns FROM accounts WHERE account_id = $1",
        )
        .bind(i64::from(account_id))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(account_from_row).transpose()
    }

    /// Accounts by id, ascending, after `after_account_id`.
    ///
    /// # Errors
    /// [`DbError::InvalidInput`] for a limit outside `1..=PAGE_LIMIT_MAX`.
    pub async fn list_accounts(
        &self,
        after_account_id: Option<u32>,
        limit: u32,
    ) -> Result<Vec<AccountRow>, DbError> {
        let limit = page_limit(limit)?;
        let rows = sqlx::query(
            "SELECT account_id, name, created_at_ns FROM accounts \
             WHERE account_id > $1 ORDER BY account_id LIMIT $2",
        )
        .bind(after_account_id.map_or(-1, i64::from))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(account_from_row).collect()
    }

    /// Where persistence of the engine's event stream stands: replay from
    /// `last_event_seq + 1` after a restart.
    ///
    /// # Errors
    /// Database errors only.
    pub async fn engine_cursor(&self) -> Result<EngineCursor, DbError> {
        let row = sqlx::query(
            "SELECT last_event_seq, last_command_seq FROM engine_cursor WHERE cursor_id = 1",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(EngineCursor {
            last_event_seq: col_int(&row, "engine_cursor", "last_event_seq")?,
            last_command_seq: col_int(&row, "engine_cursor", "last_command_seq")?,
        })
    }

    /// The last persisted event sequence number (0: none); shorthand for
    /// [`Db::engine_cursor`].
    ///
    /// # Errors
    /// Database errors only.
    pub async fn last_persisted_seq(&self) -> Result<u64, DbError> {
        Ok(self.engine_cursor().await?.last_event_seq)
    }

    /// Persists a batch of engine events (as the sequencer's sink hands them over) in
    /// one transaction, idempotently: events already persisted are skipped.
    ///
    /// `events` must have consecutive `event_seq`s, and the first must be at most the
    /// cursor + 1.
    ///
    /// # Errors
    /// [`DbError::EventGap`] for a non-contiguous batch or one that starts beyond the
    /// cursor + 1 (nothing is written); [`DbError::Corrupt`] if an event names an order
    /// that was never accepted (the stream and the database disagree); [`DbError::Conflict`]
    /// if another writer moved the cursor meanwhile.
    pub async fn persist_engine_events(
        &self,
        events: &[EngineEvent],
    ) -> Result<PersistOutcome, DbError> {
        self.persist_events_with(events, &[], CommitWait::WalFlushed)
            .await
    }

    /// [`Db::persist_engine_events`] for events the engine's journal holds durably
    /// already (the server's projection), with the audit records of the same commands
    /// (projected from their journaled origins, keyed by command seq): stored in the
    /// same transaction, records of commands the cursor covers are skipped, and a
    /// record whose command seq is stored already is not stored again. On PostgreSQL the transaction commits
    /// without waiting for its WAL flush (`SET LOCAL synchronous_commit = off`), so the
    /// projection stops competing with order entry's durable writes for the disk.
    ///
    /// What a crash can do: lose the last such commits, never one that a later
    /// synchronous commit depends on (PostgreSQL flushes its WAL in order), and the
    /// restart's journal replay writes them again (idempotent by event seq), so the
    /// projection comes back whole. On SQLite this is [`Db::persist_engine_events`].
    ///
    /// # Errors
    /// As [`Db::persist_engine_events`].
    pub async fn persist_journaled_engine_events(
        &self,
        events: &[EngineEvent],
        audit: &[NewAuditEntry],
    ) -> Result<PersistOutcome, DbError> {
        self.persist_events_with(events, audit, CommitWait::Returns)
            .await
    }

    async fn persist_events_with(
        &self,
        events: &[EngineEvent],
        audit: &[NewAuditEntry],
        commit_wait: CommitWait,
    ) -> Result<PersistOutcome, DbError> {
        for pair in events.windows(2) {
            if pair[1].event_seq != pair[0].event_seq.wrapping_add(1) {
                return Err(DbError::EventGap {
                    expected: pair[0].event_seq.wrapping_add(1),
                    got: pair[1].event_seq,
                });
            }
        }
        if events.is_empty() && audit.is_empty() {
            let cursor = self.engine_cursor().await?;
            return Ok(PersistOutcome {
                n_applied: 0,
                n_skipped: 0,
                last_event_seq: cursor.last_event_seq,
            });
        }
        if let Some(first) = events.first() {
            input_i64(
                "event_seq",
                first.event_seq.saturating_add(events.len() as u64),
            )?;
        }
        for entry in audit {
            if let Some(seq) = entry.command_seq {
                input_i64("command_seq", seq)?;
            }
        }
        let mut tx = self.begin_write().await?;
        if commit_wait == CommitWait::Returns && self.backend == super::Backend::Postgres {
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await?;
        }
        // The no-op update takes the cursor row's lock (PostgreSQL) before reading it,
        // so concurrent persisters serialise here; SQLite holds the write lock already.
        let row = sqlx::query(
            "UPDATE engine_cursor SET last_event_seq = last_event_seq WHERE cursor_id = 1 \
             RETURNING last_event_seq, last_command_seq",
        )
        .fetch_one(&mut *tx)
        .await?;
        let cursor: u64 = col_int(&row, "engine_cursor", "last_event_seq")?;
        let cursor_command: u64 = col_int(&row, "engine_cursor", "last_command_seq")?;
        if let Some(first) = events.first()
            && first.event_seq > cursor + 1
        {
            return Err(DbError::EventGap {
                expected: cursor + 1,
                got: first.event_seq,
            });
        }
        let fresh: Vec<&EngineEvent> = events.iter().filter(|e| e.event_seq > cursor).collect();
        let n_skipped = (events.len() - fresh.len()) as u64;
        // A command's audit record travels in the same batch as its events, so the
        // cursor covers both: records of commands at or below it are stored already.
        let fresh_audit: Vec<&NewAuditEntry> = audit
            .iter()
            .filter(|entry| entry.command_seq.is_none_or(|seq| seq > cursor_command))
            .collect();
        if fresh.is_empty() && fresh_audit.is_empty() {
            tx.rollback().await?;
            return Ok(PersistOutcome {
                n_applied: 0,
                n_skipped,
                last_event_seq: cursor,
            });
        }
        insert_event_rows(&mut tx, &fresh).await?;
        for event in &fresh {
            apply_event(&mut tx, event).await?;
        }
        for statement in audit_insert_statements(&fresh_audit)? {
            statement.execute(&mut *tx).await?;
        }
        let last_event_seq = fresh.last().map_or(cursor, |event| event.event_seq);
        let last_command_seq = fresh
            .iter()
            .map(|event| event.command_seq)
            .chain(fresh_audit.iter().filter_map(|entry| entry.command_seq))
            .fold(cursor_command, u64::max);
        let updated_at_ns = fresh
            .iter()
            .map(|event| event.now.0)
            .chain(fresh_audit.iter().map(|entry| entry.at_ns))
            .max()
            .unwrap_or(0);
        let moved = sqlx::query(
            "UPDATE engine_cursor SET last_event_seq = $1, last_command_seq = $2, \
             updated_at_ns = $3 WHERE cursor_id = 1 AND last_event_seq = $4",
        )
        .bind(input_i64("event_seq", last_event_seq)?)
        .bind(input_i64("command_seq", last_command_seq)?)
        .bind(updated_at_ns)
        .bind(input_i64("event_seq", cursor)?)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved != 1 {
            return Err(DbError::Conflict(
                "engine cursor moved during persist".into(),
            ));
        }
        tx.commit().await?;
        Ok(PersistOutcome {
            n_applied: fresh.len() as u64,
            n_skipped,
            last_event_seq,
        })
    }

    /// One order.
    ///
    /// # Errors
    /// Database errors only; an unknown order is `Ok(None)`.
    pub async fn get_order(
        &self,
        product_id: u32,
        order_id: u64,
    ) -> Result<Option<OrderRow>, DbError> {
        let sql =
            format!("SELECT {ORDER_COLUMNS} FROM orders WHERE product_id = $1 AND order_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(product_id))
            .bind(input_i64("order_id", order_id)?)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(order_from_row).transpose()
    }

    /// An account's orders, newest first (by acceptance), filtered; page with
    /// `filter.before_event_seq` = the last row's `created_event_seq`.
    ///
    /// # Errors
    /// [`DbError::InvalidInput`] for a limit outside `1..=PAGE_LIMIT_MAX`.
    pub async fn list_orders(
        &self,
        account_id: u32,
        filter: &OrderFilter,
        limit: u32,
    ) -> Result<Vec<OrderRow>, DbError> {
        let limit = page_limit(limit)?;
        let before = match filter.before_event_seq {
            Some(seq) => input_i64("before_event_seq", seq)?,
            None => i64::MAX,
        };
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE account_id = $1 \
             AND ($2 IS NULL OR product_id = $2) AND ($3 IS NULL OR status = $3) \
             AND ($4 = 0 OR status IN ('open', 'partially_filled')) \
             AND created_event_seq < $5 ORDER BY created_event_seq DESC LIMIT $6"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(account_id))
            .bind(filter.product_id.map(i64::from))
            .bind(filter.status.map(OrderStatus::as_str))
            .bind(i64::from(filter.live_only))
            .bind(before)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(order_from_row).collect()
    }

    /// Trades of one product, newest first; page with the last row's `event_seq`.
    ///
    /// # Errors
    /// [`DbError::InvalidInput`] for a limit outside `1..=PAGE_LIMIT_MAX`.
    pub async fn list_trades(
        &self,
        product_id: u32,
        before_event_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<TradeRow>, DbError> {
        let limit = page_limit(limit)?;
        let before = page_before(before_event_seq)?;
        let sql = format!(
            "SELECT {TRADE_COLUMNS} FROM trades WHERE product_id = $1 AND event_seq < $2 \
             ORDER BY event_seq DESC LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(product_id))
            .bind(before)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(trade_from_row).collect()
    }

    /// An account's fills, newest first: each continuous trade it took part in, from
    /// its side, and each day-ahead auction award it won, at its auction's clearing
    /// price ([`FillSource`] tells them apart); page with the last row's `event_seq`.
    ///
    /// # Errors
    /// [`DbError::InvalidInput`] for a limit outside `1..=PAGE_LIMIT_MAX`;
    /// [`DbError::Corrupt`] for an award whose auction has no clearing price.
    pub async fn list_fills(
        &self,
        account_id: u32,
        before_event_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<FillRow>, DbError> {
        let limit = page_limit(limit)?;
        let before = page_before(before_event_seq)?;
        let sql = format!(
            "SELECT {TRADE_COLUMNS} FROM trades \
             WHERE (aggressor_account_id = $1 OR resting_account_id = $1) AND event_seq < $2 \
             ORDER BY event_seq DESC LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(account_id))
            .bind(before)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut fills = Vec::with_capacity(rows.len());
        for row in &rows {
            let trade = trade_from_row(row)?;
            // Self-trade prevention keeps an account off both sides of one trade; if it
            // ever happens, the aggressor side is reported.
            let aggressor = trade.aggressor_account_id == account_id;
            fills.push(FillRow {
                source: FillSource::Continuous,
                product_id: trade.product_id,
                trade_id: Some(trade.trade_id),
                event_seq: trade.event_seq,
                at_ns: trade.at_ns,
                account_id,
                order_id: Some(if aggressor {
                    trade.aggressor_order_id
                } else {
                    trade.resting_order_id
                }),
                side: if aggressor {
                    trade.aggressor_side
                } else {
                    trade.aggressor_side.opposite()
                },
                price_ticks: trade.price_ticks,
                qty_lots: trade.qty_lots,
                aggressor: Some(aggressor),
            });
        }
        // Each source gives at most `limit` rows older than `before`; every fill is its
        // own event, so the newest `limit` of the union are the page.
        fills.extend(self.auction_fills(account_id, before, limit).await?);
        fills.sort_unstable_by_key(|fill| std::cmp::Reverse(fill.event_seq));
        fills.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(fills)
    }

    /// An account's positions, by product.
    ///
    /// # Errors
    /// Database errors only.
    pub async fn list_positions(&self, account_id: u32) -> Result<Vec<PositionRow>, DbError> {
        let sql = format!(
            "SELECT {POSITION_COLUMNS} FROM positions WHERE account_id = $1 ORDER BY product_id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(account_id))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(position_from_row).collect()
    }

    /// Products the engine listed, by id.
    ///
    /// # Errors
    /// Database errors only.
    pub async fn list_products(&self) -> Result<Vec<ProductRow>, DbError> {
        let rows = sqlx::query(
            "SELECT product_id, period_start_ns, period_minutes, listed_at_ns FROM products \
             ORDER BY product_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ProductRow {
                    product_id: col_int(row, "products", "product_id")?,
                    period_start_ns: col(row, "period_start_ns")?,
                    period_minutes: col_int(row, "products", "period_minutes")?,
                    listed_at_ns: col(row, "listed_at_ns")?,
                })
            })
            .collect()
    }
}

/// Stored name of an event kind.
fn event_kind_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::ProductAdded { .. } => "product_added",
        EventKind::Rejected { .. } => "engine_rejected",
        EventKind::CurveAccepted { .. } => "curve_accepted",
        EventKind::CurvePointAccepted { .. } => "curve_point_accepted",
        EventKind::CurveWithdrawn { .. } => "curve_withdrawn",
        EventKind::CurveRejected { .. } => "curve_rejected",
        EventKind::AuctionCleared { .. } => "auction_cleared",
        EventKind::AuctionAward { .. } => "auction_award",
        EventKind::FamilyAccepted { .. } => "family_accepted",
        EventKind::FamilyWithdrawn { .. } => "family_withdrawn",
        EventKind::FamilyRejected { .. } => "family_rejected",
        EventKind::FamilyCleared { .. } => "family_cleared",
        EventKind::Book(book) => match book {
            BookEvent::Accepted { .. } => "accepted",
            BookEvent::Rejected { .. } => "rejected",
            BookEvent::Trade { .. } => "trade",
            BookEvent::Cancelled { .. } => "cancelled",
            BookEvent::Expired { .. } => "expired",
            BookEvent::Restated { .. } => "restated",
            BookEvent::Depth { .. } => "depth",
            BookEvent::PhaseChanged { .. } => "phase_changed",
        },
    }
}

/// Stored name of a cancel reason.
fn cancel_reason_name(reason: CancelReason) -> &'static str {
    match reason {
        CancelReason::Requested => "requested",
        CancelReason::IocRemainder => "ioc_remainder",
        CancelReason::FokNotFilled => "fok_not_filled",
        CancelReason::SelfTrade => "self_trade",
    }
}

/// Inserts the `engine_events` rows of a batch (depth updates excluded) in a few
/// multi-row statements.
async fn insert_event_rows(tx: &mut Tx, events: &[&EngineEvent]) -> Result<(), DbError> {
    const N_COLUMNS: usize = 6;
    let stored: Vec<&&EngineEvent> = events
        .iter()
        .filter(|e| !matches!(e.kind, EventKind::Book(BookEvent::Depth { .. })))
        .collect();
    for chunk in stored.chunks(INSERT_BATCH_ROWS_MAX) {
        let mut sql = String::from(
            "INSERT INTO engine_events \
             (event_seq, command_seq, at_ns, product_id, kind, body_json) VALUES ",
        );
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&placeholders(1 + i * N_COLUMNS, N_COLUMNS));
        }
        sql.push_str(" ON CONFLICT (event_seq) DO NOTHING");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for event in chunk {
            query = query
                .bind(input_i64("event_seq", event.event_seq)?)
                .bind(input_i64("command_seq", event.command_seq)?)
                .bind(event.now.0)
                .bind(i64::from(event.product.0))
                .bind(event_kind_name(&event.kind))
                .bind(serde_json::to_string(&event.kind)?);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Applies one event's effect on products, orders, trades and positions.
async fn apply_event(tx: &mut Tx, event: &EngineEvent) -> Result<(), DbError> {
    let product_id = i64::from(event.product.0);
    let at_ns = event.now.0;
    let seq = input_i64("event_seq", event.event_seq)?;
    match event.kind {
        EventKind::ProductAdded { period, .. } => {
            sqlx::query(
                "INSERT INTO products \
                 (product_id, period_start_ns, period_minutes, listed_at_ns, listed_event_seq) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (product_id) DO NOTHING",
            )
            .bind(product_id)
            .bind(period.start().0)
            .bind(i64::from(period.minutes()))
            .bind(at_ns)
            .bind(seq)
            .execute(&mut **tx)
            .await?;
        }
        EventKind::Rejected { .. }
        | EventKind::CurveRejected { .. }
        | EventKind::FamilyRejected { .. } => {}
        EventKind::FamilyAccepted { .. }
        | EventKind::FamilyWithdrawn { .. }
        | EventKind::FamilyCleared { .. }
        | EventKind::CurveAccepted { .. }
        | EventKind::CurvePointAccepted { .. }
        | EventKind::CurveWithdrawn { .. }
        | EventKind::AuctionCleared { .. }
        | EventKind::AuctionAward { .. } => {
            super::auction::apply_auction_event(tx, event).await?;
        }
        EventKind::Book(book) => match book {
            BookEvent::Accepted {
                id,
                account,
                side,
                price,
                qty,
            } => {
                let sql = format!(
                    "INSERT INTO orders ({ORDER_COLUMNS}) VALUES \
                     ($1, $2, $3, $4, $5, $6, 0, $6, 'open', NULL, $7, $7, $8, $8) \
                     ON CONFLICT (product_id, order_id) DO NOTHING"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(product_id)
                    .bind(input_i64("order_id", id.0)?)
                    .bind(i64::from(account.0))
                    .bind(side_text::as_str(side))
                    .bind(price.0)
                    .bind(qty.0)
                    .bind(at_ns)
                    .bind(seq)
                    .execute(&mut **tx)
                    .await?;
            }
            BookEvent::Trade {
                trade_id,
                aggressor,
                aggressor_account,
                aggressor_side,
                resting,
                resting_account,
                price,
                qty,
            } => {
                let sql = format!(
                    "INSERT INTO trades ({TRADE_COLUMNS}) VALUES \
                     ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                     ON CONFLICT (product_id, trade_id) DO NOTHING"
                );
                let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(product_id)
                    .bind(input_i64("trade_id", trade_id.0)?)
                    .bind(seq)
                    .bind(at_ns)
                    .bind(price.0)
                    .bind(qty.0)
                    .bind(input_i64("order_id", aggressor.0)?)
                    .bind(i64::from(aggressor_account.0))
                    .bind(side_text::as_str(aggressor_side))
                    .bind(input_i64("order_id", resting.0)?)
                    .bind(i64::from(resting_account.0))
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                if inserted == 0 {
                    return Ok(()); // persisted before: orders and positions already count it
                }
                for order in [aggressor, resting] {
                    let changed = sqlx::query(
                        "UPDATE orders SET filled_qty_lots = filled_qty_lots + $1, \
                         remaining_qty_lots = remaining_qty_lots - $1, \
                         status = CASE WHEN remaining_qty_lots - $1 <= 0 THEN 'filled' \
                         ELSE 'partially_filled' END, \
                         updated_at_ns = $2, updated_event_seq = $3 \
                         WHERE product_id = $4 AND order_id = $5",
                    )
                    .bind(qty.0)
                    .bind(at_ns)
                    .bind(seq)
                    .bind(product_id)
                    .bind(input_i64("order_id", order.0)?)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                    expect_order(changed, event, order.0)?;
                }
                let notional = price.0.checked_mul(qty.0).ok_or(DbError::InvalidInput {
                    field: "trade",
                    message: format!("price {} x qty {} overflows", price.0, qty.0),
                })?;
                let resting_side = aggressor_side.opposite();
                for (account, side) in [
                    (aggressor_account, aggressor_side),
                    (resting_account, resting_side),
                ] {
                    add_fill_to_position(
                        tx, account.0, product_id, side, qty.0, notional, at_ns, seq,
                    )
                    .await?;
                }
            }
            BookEvent::Cancelled { id, qty, reason } => {
                let changed = sqlx::query(
                    "UPDATE orders SET remaining_qty_lots = remaining_qty_lots - $1, \
                     status = 'cancelled', status_reason = $2, updated_at_ns = $3, \
                     updated_event_seq = $4 WHERE product_id = $5 AND order_id = $6",
                )
                .bind(qty.0)
                .bind(cancel_reason_name(reason))
                .bind(at_ns)
                .bind(seq)
                .bind(product_id)
                .bind(input_i64("order_id", id.0)?)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                expect_order(changed, event, id.0)?;
            }
            BookEvent::Expired { id, qty } => {
                let changed = sqlx::query(
                    "UPDATE orders SET remaining_qty_lots = remaining_qty_lots - $1, \
                     status = 'expired', updated_at_ns = $2, updated_event_seq = $3 \
                     WHERE product_id = $4 AND order_id = $5",
                )
                .bind(qty.0)
                .bind(at_ns)
                .bind(seq)
                .bind(product_id)
                .bind(input_i64("order_id", id.0)?)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                expect_order(changed, event, id.0)?;
            }
            BookEvent::Restated {
                id,
                price,
                visible,
                hidden,
                ..
            } => {
                let remaining = visible
                    .0
                    .checked_add(hidden.0)
                    .ok_or(DbError::InvalidInput {
                        field: "restated",
                        message: "visible + hidden overflows".into(),
                    })?;
                let changed = sqlx::query(
                    "UPDATE orders SET price_ticks = $1, remaining_qty_lots = $2, \
                     updated_at_ns = $3, updated_event_seq = $4 \
                     WHERE product_id = $5 AND order_id = $6",
                )
                .bind(price.0)
                .bind(remaining)
                .bind(at_ns)
                .bind(seq)
                .bind(product_id)
                .bind(input_i64("order_id", id.0)?)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                expect_order(changed, event, id.0)?;
            }
            BookEvent::Rejected { .. }
            | BookEvent::Depth { .. }
            | BookEvent::PhaseChanged { .. } => {}
        },
    }
    Ok(())
}

/// An update of an order row must have found the row.
fn expect_order(n_changed: u64, event: &EngineEvent, order_id: u64) -> Result<(), DbError> {
    if n_changed == 1 {
        return Ok(());
    }
    Err(DbError::Corrupt {
        table: "orders",
        column: "order_id",
        message: format!(
            "event {} names order {order_id} of product {}, which was never accepted",
            event.event_seq, event.product.0
        ),
    })
}

/// Adds one fill (a trade's side, or an auction award) to an account's position
/// (upsert). The caller guards against counting one fill twice.
#[allow(clippy::too_many_arguments)]
pub(super) async fn add_fill_to_position(
    tx: &mut Tx,
    account_id: u32,
    product_id: i64,
    side: Side,
    qty_lots: i64,
    notional: i64,
    at_ns: i64,
    seq: i64,
) -> Result<(), DbError> {
    let (net, bought, sold, bought_notional, sold_notional) = match side {
        Side::Buy => (qty_lots, qty_lots, 0, notional, 0),
        Side::Sell => (-qty_lots, 0, qty_lots, 0, notional),
    };
    let sql = format!(
        "INSERT INTO positions ({POSITION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9) \
         ON CONFLICT (account_id, product_id) DO UPDATE SET \
         net_qty_lots = positions.net_qty_lots + excluded.net_qty_lots, \
         bought_qty_lots = positions.bought_qty_lots + excluded.bought_qty_lots, \
         sold_qty_lots = positions.sold_qty_lots + excluded.sold_qty_lots, \
         bought_notional_tick_lots = \
             positions.bought_notional_tick_lots + excluded.bought_notional_tick_lots, \
         sold_notional_tick_lots = \
             positions.sold_notional_tick_lots + excluded.sold_notional_tick_lots, \
         n_trades = positions.n_trades + 1, \
         updated_at_ns = excluded.updated_at_ns, \
         updated_event_seq = excluded.updated_event_seq"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(i64::from(account_id))
        .bind(product_id)
        .bind(net)
        .bind(bought)
        .bind(sold)
        .bind(bought_notional)
        .bind(sold_notional)
        .bind(at_ns)
        .bind(seq)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn account_from_row(row: &AnyRow) -> Result<AccountRow, DbError> {
    Ok(AccountRow {
        account_id: col_int(row, "accounts", "account_id")?,
        name: col(row, "name")?,
        created_at_ns: col(row, "created_at_ns")?,
    })
}

fn order_from_row(row: &AnyRow) -> Result<OrderRow, DbError> {
    Ok(OrderRow {
        product_id: col_int(row, "orders", "product_id")?,
        order_id: col_int(row, "orders", "order_id")?,
        account_id: col_int(row, "orders", "account_id")?,
        side: col_enum(row, "orders", "side", side_text::parse)?,
        price_ticks: col(row, "price_ticks")?,
        qty_lots: col(row, "qty_lots")?,
        filled_qty_lots: col(row, "filled_qty_lots")?,
        remaining_qty_lots: col(row, "remaining_qty_lots")?,
        status: col_enum(row, "orders", "status", OrderStatus::parse)?,
        status_reason: col(row, "status_reason")?,
        created_at_ns: col(row, "created_at_ns")?,
        updated_at_ns: col(row, "updated_at_ns")?,
        created_event_seq: col_int(row, "orders", "created_event_seq")?,
        updated_event_seq: col_int(row, "orders", "updated_event_seq")?,
    })
}

fn trade_from_row(row: &AnyRow) -> Result<TradeRow, DbError> {
    Ok(TradeRow {
        product_id: col_int(row, "trades", "product_id")?,
        trade_id: col_int(row, "trades", "trade_id")?,
        event_seq: col_int(row, "trades", "event_seq")?,
        at_ns: col(row, "at_ns")?,
        price_ticks: col(row, "price_ticks")?,
        qty_lots: col(row, "qty_lots")?,
        aggressor_order_id: col_int(row, "trades", "aggressor_order_id")?,
        aggressor_account_id: col_int(row, "trades", "aggressor_account_id")?,
        aggressor_side: col_enum(row, "trades", "aggressor_side", side_text::parse)?,
        resting_order_id: col_int(row, "trades", "resting_order_id")?,
        resting_account_id: col_int(row, "trades", "resting_account_id")?,
    })
}

fn position_from_row(row: &AnyRow) -> Result<PositionRow, DbError> {
    Ok(PositionRow {
        account_id: col_int(row, "positions", "account_id")?,
        product_id: col_int(row, "positions", "product_id")?,
        net_qty_lots: col(row, "net_qty_lots")?,
        bought_qty_lots: col(row, "bought_qty_lots")?,
        sold_qty_lots: col(row, "sold_qty_lots")?,
        bought_notional_tick_lots: col(row, "bought_notional_tick_lots")?,
        sold_notional_tick_lots: col(row, "sold_notional_tick_lots")?,
        n_trades: col_int(row, "positions", "n_trades")?,
        updated_at_ns: col(row, "updated_at_ns")?,
        updated_event_seq: col_int(row, "positions", "updated_event_seq")?,
    })
}

/// The keyset-paging bound for "older than `before_event_seq`" (no bound: `i64::MAX`).
pub(super) fn page_before(before_event_seq: Option<u64>) -> Result<i64, DbError> {
    before_event_seq
        .map(|seq| input_i64("before_event_seq", seq))
        .transpose()
        .map(|bound| bound.unwrap_or(i64::MAX))
}
