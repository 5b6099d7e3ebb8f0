//! Records that are not on the trading or dispatch path: forecasting/optimisation
//! models with their metrics (seed: ml_models), pre-computed analytics per period
//! (seed: analytics_aggregates) and the append-only audit log.
//!
//! # Guarantees
//! - A model (name, version) is recorded once; a second insert is refused.
//! - Aggregates are upserts keyed by (period start, period length, device): an ETL
//!   job may recompute a period any number of times and the last write wins.
//! - Fleet totals are exact integer sums (Wh, counts, cents) done by the database.
//! - The audit log is append-only: there is no update or delete method.

use sqlx::any::AnyRow;

use super::{
    AggregateRow, AggregateScope, AuditRow, DayAheadPeriodRow, Db, DbError, FleetTotals,
    INSERT_BATCH_ROWS_MAX, MlModelRow, NewAuditEntry, NewMlModel, col, col_int, col_int_opt,
    col_json, input_i64, page_limit, placeholders,
};

const AGGREGATE_COLUMNS: &str = "period_start_ns, period_len_s, device_id, charged_wh, \
     discharged_wh, n_schedules, n_acks_completed, n_acks_failed, revenue_cents, updated_at_ns";

const DAYAHEAD_COLUMNS: &str = "period_start_ns, period_len_s, delivery_day, delivery_hour, \
     clearing_price_cents_per_mwh, forecast_price_cents_per_mwh, model_name, model_version, \
     committed_w, perfect_foresight_w, trading_cents, perfect_foresight_cents, delivered_w, \
     imbalance_cents, wear_cents, updated_at_ns, planned_w";

const AUDIT_COLUMNS: &str = "audit_id, at_ns, actor, role, action, target, correlation_id, \
     result, detail_json, command_seq";

/// Versions [`Db::record_model_version`] tries before giving up on a busy name.
pub const MODEL_VERSION_ATTEMPTS: usize = 3;

/// `device_id` of the fleet-level aggregate rows.
const FLEET_DEVICE_ID: &str = "";

impl Db {
    /// Records a model version.
    ///
    /// # Errors
    /// [`DbError::AlreadyExists`] if (name, version) is recorded; [`DbError::InvalidInput`]
    /// for an empty name.
    pub async fn insert_ml_model(&self, model: &NewMlModel) -> Result<MlModelRow, DbError> {
        if model.name.trim().is_empty() {
            return Err(DbError::InvalidInput {
                field: "name",
                message: "must not be empty".into(),
            });
        }
        let inserted = sqlx::query(
            "INSERT INTO ml_models \
             (name, version, kind, trained_at_ns, parameters_json, metrics_json) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(model.name.as_str())
        .bind(i64::from(model.version))
        .bind(model.kind.as_str())
        .bind(model.trained_at_ns)
        .bind(serde_json::to_string(&model.parameters)?)
        .bind(serde_json::to_string(&model.metrics)?)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(DbError::AlreadyExists {
                entity: "ml_model",
                key: format!("{} v{}", model.name, model.version),
            });
        }
        Ok(MlModelRow {
            name: model.name.clone(),
            version: model.version,
            kind: model.kind.clone(),
            trained_at_ns: model.trained_at_ns,
            parameters: model.parameters.clone(),
            metrics: model.metrics.clone(),
        })
    }

    /// Records `model` under the next free version of its name, unless the newest
    /// recorded version already has the same kind, parameters and metrics (a re-run of
    /// the same evaluation), which is returned instead. `model.version` is ignored.
    ///
    /// # Errors
    /// [`DbError::InvalidInput`] for an empty name; [`DbError::AlreadyExists`] only if
    /// other writers took the next versions `MODEL_VERSION_ATTEMPTS` times in a row.
    pub async fn record_model_version(&self, model: &NewMlModel) -> Result<MlModelRow, DbError> {
        let mut last_error = None;
        for _ in 0..MODEL_VERSION_ATTEMPTS {
            let newest = self.list_ml_models(Some(&model.name), 1).await?;
            if let Some(newest) = newest.first()
                && newest.kind == model.kind
                && newest.parameters == model.parameters
                && newest.metrics == model.metrics
            {
                return Ok(newest.clone());
            }
            let version = newest.first().map_or(0, |row| row.version) + 1;
            match self
                .insert_ml_model(&NewMlModel {
                    version,
                    ..model.clone()
                })
                .await
            {
                Err(error @ DbError::AlreadyExists { .. }) => last_error = Some(error),
                other => return other,
            }
        }
        Err(last_error.unwrap_or(DbError::AlreadyExists {
            entity: "ml_model",
            key: model.name.clone(),
        }))
    }

    /// Recorded models, by name then newest version first; only `name`'s if given.
    ///
    /// # Errors
    /// [`DbError::InvalidInput`] for a limit outside `1..=PAGE_LIMIT_MAX`.
    pub async fn list_ml_models(
        &self,
        name: Option<&str>,
        limit: u32,
    ) -> Result<Vec<MlModelRow>, DbError> {
        let limit = page_limit(limit)?;
        let rows = sqlx::query(
            "SELECT name, version, kind, trained_at_ns, parameters_json, metrics_json \
             FROM ml_models WHERE ($1 IS NULL OR name = $1) \
             ORDER BY name, version DESC LIMIT $2",
        )
        .bind(name)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(MlModelRow {
                    name: col(row, "name")?,
                    version: col_int(row, "ml_models", "version")?,
                    kind: col(row, "kind")?,
                    trained_at_ns: col(row, "trained_at_ns")?,
                    parameters: col_json(row, "ml_models", "parameters_json")?,
                    metrics: col_json(row, "ml_models", "metrics_json")?,
                })
            })
            .collect()
    }

    /// Inserts or replaces aggregate rows (keyed by period start, length and device),
    /// all in one transaction; returns how many rows were written.
    ///
    /// # Errors
    /// [`DbError::InvalidInput`] for a zero period length, an invalid device id, or
    /// counts beyond `i64::MAX`.
    pub async fn upsert_aggregates(&self, rows: &[AggregateRow]) -> Result<u64, DbError> {
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "INSERT INTO analytics_aggregates ({AGGREGATE_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (period_start_ns, period_len_s, device_id) DO UPDATE SET \
             charged_wh = excluded.charged_wh, discharged_wh = excluded.discharged_wh, \
             n_schedules = excluded.n_schedules, n_acks_completed = excluded.n_acks_completed, \
             n_acks_failed = excluded.n_acks_failed, revenue_cents = excluded.revenue_cents, \
             updated_at_ns = excluded.updated_at_ns"
        );
        let mut n_written = 0;
        for row in rows {
            if row.period_len_s == 0 {
                return Err(DbError::InvalidInput {
                    field: "period_len_s",
                    message: "must be positive".into(),
                });
            }
            let device_id = match &row.device_id {
                Some(id) => {
                    voltex_dispatch::message::DeviceId::new(id.as_str()).map_err(|e| {
                        DbError::InvalidInput {
                            field: "device_id",
                            message: e.to_string(),
                        }
                    })?;
                    id.as_str()
                }
                None => FLEET_DEVICE_ID,
            };
            n_written += sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(row.period_start_ns)
                .bind(i64::from(row.period_len_s))
                .bind(device_id)
                .bind(row.charged_wh)
                .bind(row.discharged_wh)
                .bind(input_i64("n_schedules", row.n_schedules)?)
                .bind(input_i64("n_acks_completed", row.n_acks_completed)?)
                .bind(input_i64("n_acks_failed", row.n_acks_failed)?)
                .bind(row.revenue_cents)
                .bind(row.updated_at_ns)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(n_written)
    }

    /// Aggregate rows with `from_ns <= period_start_ns < to_ns` in `scope`, by period
    /// then device.
    ///
    /// # Errors
    /// [`DbError::InvalidInput`] for a limit outside `1..=PAGE_LIMIT_MAX`.
    pub async fn list_aggregates(
        &self,
        from_ns: i64,
        to_ns: i64,
        scope: &AggregateScope,
        limit: u32,
    ) -> Result<Vec<AggregateRow>, DbError> {
        let limit = page_limit(limit)?;
        // $3: exact device ('' = fleet rows), or NULL with $4 = 1 for every device row.
        let (device, all_devices) = match scope {
            AggregateScope::Fleet => (Some(FLEET_DEVICE_ID), 0_i64),
            AggregateScope::Device(id) => (Some(id.as_str()), 0),
            AggregateScope::AllDevices => (None, 1),
        };
        let sql = format!(
            "SELECT {AGGREGATE_COLUMNS} FROM analytics_aggregates \
             WHERE period_start_ns >= $1 AND period_start_ns < $2 \
             AND (device_id = $3 OR ($4 = 1 AND device_id <> '')) \
             ORDER BY period_start_ns, device_id LIMIT $5"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(from_ns)
            .bind(to_ns)
            .bind(device)
            .bind(all_devices)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(aggregate_from_row).collect()
    }

    /// Inserts or replaces day-ahead period rows (keyed by period start), all in one
    /// transaction; returns how many rows were written. The cycle writes a day's rows
    /// when it commits and again, with the settlement, once the day is delivered.
    ///
    /// # Errors
    /// [`DbError::InvalidInput`] for a zero period length or an empty model name.
    pub async fn upsert_dayahead_periods(
        &self,
        rows: &[DayAheadPeriodRow],
    ) -> Result<u64, DbError> {
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "INSERT INTO dayahead_periods ({DAYAHEAD_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
             ON CONFLICT (period_start_ns) DO UPDATE SET \
             period_len_s = excluded.period_len_s, delivery_day = excluded.delivery_day, \
             delivery_hour = excluded.delivery_hour, \
             clearing_price_cents_per_mwh = excluded.clearing_price_cents_per_mwh, \
             forecast_price_cents_per_mwh = excluded.forecast_price_cents_per_mwh, \
             model_name = excluded.model_name, model_version = excluded.model_version, \
             committed_w = excluded.committed_w, perfect_foresight_w = excluded.perfect_foresight_w, \
             trading_cents = excluded.trading_cents, \
             perfect_foresight_cents = excluded.perfect_foresight_cents, \
             delivered_w = excluded.delivered_w, imbalance_cents = excluded.imbalance_cents, \
             wear_cents = excluded.wear_cents, updated_at_ns = excluded.updated_at_ns, \
             planned_w = excluded.planned_w"
        );
        let mut n_written = 0;
        for row in rows {
            if row.period_len_s == 0 {
                return Err(DbError::InvalidInput {
                    field: "period_len_s",
                    message: "must be positive".into(),
                });
            }
            if row.model_name.is_empty() {
                return Err(DbError::InvalidInput {
                    field: "model_name",
                    message: "must not be empty".into(),
                });
            }
            n_written += sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(row.period_start_ns)
                .bind(i64::from(row.period_len_s))
                .bind(row.delivery_day.as_str())
                .bind(i64::from(row.delivery_hour))
                .bind(row.clearing_price_cents_per_mwh)
                .bind(row.forecast_price_cents_per_mwh)
                .bind(row.model_name.as_str())
                .bind(i64::from(row.model_version))
                .bind(row.committed_w)
                .bind(row.perfect_foresight_w)
                .bind(row.trading_cents)
                .bind(row.perfect_foresight_cents)
                .bind(row.delivered_w)
                .bind(row.imbalance_cents)
                .bind(row.wear_cents)
                .bind(row.updated_at_ns)
                .bind(row.planned_w)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(n_written)
    }

    /// The newest `limit` day-ahead period rows with `from_ns <= period_start_ns <
    /// to_ns`, oldest first.
    ///
    /// # Errors
    /// [`DbError::InvalidInput`] for a limit outside `1..=PAGE_LIMIT_MAX`.
    pub async fn list_dayahead_periods(
        &self,
        from_ns: i64,
        to_ns: i64,
        limit: u32,
    ) -> Result<Vec<DayAheadPeriodRow>, DbError> {
        let limit = page_limit(limit)?;
        let sql = format!(
            "SELECT {DAYAHEAD_COLUMNS} FROM dayahead_periods \
             WHERE period_start_ns >= $1 AND period_start_ns < $2 \
             ORDER BY period_start_ns DESC LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(from_ns)
            .bind(to_ns)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut periods = rows
            .iter()
            .map(dayahead_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        periods.reverse();
        Ok(periods)
    }

    /// Sums of the per-device aggregate rows with `from_ns <= period_start_ns < to_ns`.
    ///
    /// # Errors
    /// Database errors only.
    pub async fn fleet_totals(&self, from_ns: i64, to_ns: i64) -> Result<FleetTotals, DbError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n_rows, \
             CAST(COALESCE(SUM(charged_wh), 0) AS BIGINT) AS charged_wh, \
             CAST(COALESCE(SUM(discharged_wh), 0) AS BIGINT) AS discharged_wh, \
             CAST(COALESCE(SUM(n_schedules), 0) AS BIGINT) AS n_schedules, \
             CAST(COALESCE(SUM(n_acks_completed), 0) AS BIGINT) AS n_acks_completed, \
             CAST(COALESCE(SUM(n_acks_failed), 0) AS BIGINT) AS n_acks_failed, \
             CAST(COALESCE(SUM(revenue_cents), 0) AS BIGINT) AS revenue_cents \
             FROM analytics_aggregates \
             WHERE period_start_ns >= $1 AND period_start_ns < $2 AND device_id <> ''",
        )
        .bind(from_ns)
        .bind(to_ns)
        .fetch_one(&self.pool)
        .await?;
        Ok(FleetTotals {
            n_rows: col_int(&row, "analytics_aggregates", "n_rows")?,
            charged_wh: col(&row, "charged_wh")?,
            discharged_wh: col(&row, "discharged_wh")?,
            n_schedules: col_int(&row, "analytics_aggregates", "n_schedules")?,
            n_acks_completed: col_int(&row, "analytics_aggregates", "n_acks_completed")?,
            n_acks_failed: col_int(&row, "analytics_aggregates", "n_acks_failed")?,
            revenue_cents: col(&row, "revenue_cents")?,
        })
    }

    /// Appends an audit entry; returns its id.
    ///
    /// # Errors
    /// Database errors only.
    pub async fn append_audit(&self, entry: &NewAuditEntry) -> Result<i64, DbError> {
        let query = sqlx::query(
            "INSERT INTO audit_log \
             (at_ns, actor, role, action, target, correlation_id, result, detail_json, \
             command_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING audit_id",
        );
        let row = bind_audit_row(query, entry)?.fetch_one(&self.pool).await?;
        col(&row, "audit_id")
    }

    /// Appends `entries` atomically (the audit writer's group commit): all are stored
    /// or none; a record whose `command_seq` is stored already is skipped (see
    /// [`NewAuditEntry::command_seq`]). Rows go in multi-row INSERTs of up to [`INSERT_BATCH_ROWS_MAX`], in
    /// one transaction; on PostgreSQL a batch that fits one statement is that
    /// statement alone (atomic by itself), one round trip instead of three. Every
    /// order through the API waits for this commit, so round trips count.
    ///
    /// # Errors
    /// [`DbError`] when the write fails; nothing of the batch is stored then.
    pub async fn append_audit_batch(&self, entries: &[NewAuditEntry]) -> Result<(), DbError> {
        if entries.is_empty() {
            return Ok(());
        }
        let entries: Vec<&NewAuditEntry> = entries.iter().collect();
        let statements = audit_insert_statements(&entries)?;
        if statements.len() == 1 && self.backend == super::Backend::Postgres {
            for statement in statements {
                statement.execute(&self.pool).await?;
            }
            return Ok(());
        }
        // SQLite takes its write lock up front (see `begin_write`), also for one statement.
        let mut tx = self.begin_write().await?;
        for statement in statements {
            statement.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Audit entries, newest first, below `before_audit_id`.
    ///
    /// # Errors
    /// [`DbError::InvalidInput`] for a limit outside `1..=PAGE_LIMIT_MAX`.
    pub async fn list_audit(
        &self,
        before_audit_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, DbError> {
        let limit = page_limit(limit)?;
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE audit_id < $1 \
             ORDER BY audit_id DESC LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(before_audit_id.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let detail: Option<String> = col(row, "detail_json")?;
                Ok(AuditRow {
                    audit_id: col(row, "audit_id")?,
                    at_ns: col(row, "at_ns")?,
                    actor: col(row, "actor")?,
                    role: col(row, "role")?,
                    action: col(row, "action")?,
                    target: col(row, "target")?,
                    correlation_id: col(row, "correlation_id")?,
                    result: col(row, "result")?,
                    command_seq: col_int_opt(row, "audit_log", "command_seq")?,
                    detail: detail
                        .map(|text| {
                            serde_json::from_str(&text).map_err(|e| DbError::Corrupt {
                                table: "audit_log",
                                column: "detail_json",
                                message: e.to_string(),
                            })
                        })
                        .transpose()?,
                })
            })
            .collect()
    }
}

fn aggregate_from_row(row: &AnyRow) -> Result<AggregateRow, DbError> {
    let device_id: String = col(row, "device_id")?;
    Ok(AggregateRow {
        period_start_ns: col(row, "period_start_ns")?,
        period_len_s: col_int(row, "analytics_aggregates", "period_len_s")?,
        device_id: (device_id != FLEET_DEVICE_ID).then_some(device_id),
        charged_wh: col(row, "charged_wh")?,
        discharged_wh: col(row, "discharged_wh")?,
        n_schedules: col_int(row, "analytics_aggregates", "n_schedules")?,
        n_acks_completed: col_int(row, "analytics_aggregates", "n_acks_completed")?,
        n_acks_failed: col_int(row, "analytics_aggregates", "n_acks_failed")?,
        revenue_cents: col(row, "revenue_cents")?,
        updated_at_ns: col(row, "updated_at_ns")?,
    })
}

fn dayahead_from_row(row: &AnyRow) -> Result<DayAheadPeriodRow, DbError> {
    const TABLE: &str = "dayahead_periods";
    Ok(DayAheadPeriodRow {
        period_start_ns: col(row, "period_start_ns")?,
        period_len_s: col_int(row, TABLE, "period_len_s")?,
        delivery_day: col(row, "delivery_day")?,
        delivery_hour: col_int(row, TABLE, "delivery_hour")?,
        clearing_price_cents_per_mwh: col(row, "clearing_price_cents_per_mwh")?,
        forecast_price_cents_per_mwh: col(row, "forecast_price_cents_per_mwh")?,
        model_name: col(row, "model_name")?,
        model_version: col_int(row, TABLE, "model_version")?,
        committed_w: col(row, "committed_w")?,
        planned_w: col_int_opt(row, TABLE, "planned_w")?,
        perfect_foresight_w: col(row, "perfect_foresight_w")?,
        trading_cents: col(row, "trading_cents")?,
        perfect_foresight_cents: col(row, "perfect_foresight_cents")?,
        delivered_w: col_int_opt(row, TABLE, "delivered_w")?,
        imbalance_cents: col_int_opt(row, TABLE, "imbalance_cents")?,
        wear_cents: col_int_opt(row, TABLE, "wear_cents")?,
        updated_at_ns: col(row, "updated_at_ns")?,
    })
}

/// The multi-row INSERTs (up to [`INSERT_BATCH_ROWS_MAX`] rows each) that store
/// `entries` in order; a row whose `command_seq` is stored already is skipped
/// (`ON CONFLICT DO NOTHING`, on both backends), which makes projecting audit records
/// from a replayed journal idempotent.
///
/// # Errors
/// [`DbError::InvalidInput`] for a command seq above `i64::MAX`; JSON errors of `detail`.
pub(crate) fn audit_insert_statements<'q>(
    entries: &[&'q NewAuditEntry],
) -> Result<Vec<AnyQuery<'q>>, DbError> {
    const N_COLUMNS: usize = 9;
    let mut statements = Vec::with_capacity(entries.len().div_ceil(INSERT_BATCH_ROWS_MAX));
    for chunk in entries.chunks(INSERT_BATCH_ROWS_MAX) {
        let mut sql = String::from(
            "INSERT INTO audit_log (at_ns, actor, role, action, target, correlation_id, \
             result, detail_json, command_seq) VALUES ",
        );
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&placeholders(1 + i * N_COLUMNS, N_COLUMNS));
        }
        sql.push_str(" ON CONFLICT (command_seq) DO NOTHING");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for entry in chunk {
            query = bind_audit_row(query, entry)?;
        }
        statements.push(query);
    }
    Ok(statements)
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds one audit record's nine columns, in the order of the INSERTs above.
fn bind_audit_row<'q>(
    query: AnyQuery<'q>,
    entry: &'q NewAuditEntry,
) -> Result<AnyQuery<'q>, DbError> {
    let detail = entry
        .detail
        .as_ref()
        .map(serde_json::to_string)
        .transpose()?;
    let command_seq = entry
        .command_seq
        .map(|seq| input_i64("command_seq", seq))
        .transpose()?;
    Ok(query
        .bind(entry.at_ns)
        .bind(entry.actor.as_str())
        .bind(entry.role.as_str())
        .bind(entry.action.as_str())
        .bind(entry.target.as_str())
        .bind(entry.correlation_id.as_str())
        .bind(entry.result.as_str())
        .bind(detail)
        .bind(command_seq))
}
