//! The agent's local SQLite store (sqlx, one connection).
//!
//! Opened in WAL mode with `synchronous=FULL`, so a committed transaction survives a
//! power cut, not only a process crash. Each [`WriteBatch`] is one transaction. The
//! schema is the sqlx migration in `agent/migrations/` (embedded in the binary). Rows
//! hold postcard encodings of the core's types; `u64` values are stored as their
//! `i64` bit pattern (SQLite integers are signed).
//!
//! # Invariants
//! - A batch commits entirely or not at all (one transaction, rolled back on error or
//!   when the transaction is dropped unfinished).
//! - The execution log keeps at most [`SqliteStore::EXEC_LOG_MAX`] rows.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Row};
use voltex_dispatch::ScheduleId;
use voltex_market::UtcNanos;

use super::{AgentStore, PersistedState, RecordStatus, ScheduleRecord, WriteBatch};
use crate::acceptance::ScheduleKey;
use crate::outbox::{OutboxEntry, OutboxItem};

/// Why the SQLite store failed.
#[derive(Debug, thiserror::Error)]
pub enum SqliteStoreError {
    /// The database failed.
    #[error("sqlite: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// The schema migration failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row does not decode (corruption or a foreign file).
    #[error("corrupt row in {table}: {detail}")]
    Corrupt {
        /// Table.
        table: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A value could not be encoded.
    #[error("encode: {0}")]
    Encode(String),
}

/// The SQLite store. See the module doc.
#[derive(Debug)]
pub struct SqliteStore {
    conn: SqliteConnection,
}

fn key_text(id: ScheduleId) -> String {
    id.to_string() // 32 hex digits
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, SqliteStoreError> {
    postcard::to_allocvec(value).map_err(|error| SqliteStoreError::Encode(error.to_string()))
}

fn decode<T: serde::de::DeserializeOwned>(
    table: &'static str,
    bytes: &[u8],
) -> Result<T, SqliteStoreError> {
    postcard::from_bytes(bytes).map_err(|error| SqliteStoreError::Corrupt {
        table,
        detail: error.to_string(),
    })
}

impl SqliteStore {
    /// Most execution log rows kept.
    pub const EXEC_LOG_MAX: i64 = 10_000;

    /// Opens (creating if missing) the database at `path` and migrates it.
    ///
    /// Cancellation safety: cancelling leaves at most a partly migrated database that
    /// the next open finishes (each migration runs in a transaction).
    ///
    /// # Errors
    /// The file cannot be opened or migrated.
    pub async fn open(path: &Path) -> Result<SqliteStore, SqliteStoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let mut conn = SqliteConnection::connect_with(&options).await?;
        sqlx::migrate!("./migrations").run(&mut conn).await?;
        Ok(SqliteStore { conn })
    }

    /// Closes the connection cleanly (checkpointing the WAL).
    ///
    /// Cancellation safety: cancelling drops the connection, which is also safe.
    ///
    /// # Errors
    /// The close failed (the data is durable anyway).
    pub async fn close(self) -> Result<(), SqliteStoreError> {
        self.conn.close().await?;
        Ok(())
    }

    /// Number of execution log rows (for tests and diagnostics).
    ///
    /// Cancellation safety: read-only.
    ///
    /// # Errors
    /// The query failed.
    pub async fn exec_log_len(&mut self) -> Result<i64, SqliteStoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM exec_log")
            .fetch_one(&mut self.conn)
            .await?;
        Ok(row.try_get("n")?)
    }

    async fn load_inner(&mut self) -> Result<PersistedState, SqliteStoreError> {
        let rows = sqlx::query(
            "SELECT schedule_id, version, arrival, received_at, body, status, started \
             FROM schedules ORDER BY arrival",
        )
        .fetch_all(&mut self.conn)
        .await?;
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            let body: Vec<u8> = row.try_get("body")?;
            let status: Vec<u8> = row.try_get("status")?;
            let arrival: i64 = row.try_get("arrival")?;
            let record = ScheduleRecord {
                arrival: arrival as u64,
                received_at: UtcNanos(row.try_get("received_at")?),
                signed: decode("schedules", &body)?,
                status: decode::<RecordStatus>("schedules", &status)?,
                started: row.try_get::<i64, _>("started")? != 0,
            };
            let id: String = row.try_get("schedule_id")?;
            let version: i64 = row.try_get("version")?;
            let key = record.key();
            if id != key_text(key.schedule_id) || version as u64 != key.version {
                return Err(SqliteStoreError::Corrupt {
                    table: "schedules",
                    detail: format!("row key {id}/{version} does not match its body"),
                });
            }
            records.push(record);
        }
        let rows = sqlx::query("SELECT seq, body FROM outbox ORDER BY seq")
            .fetch_all(&mut self.conn)
            .await?;
        let mut outbox = Vec::with_capacity(rows.len());
        for row in rows {
            let seq: i64 = row.try_get("seq")?;
            let body: Vec<u8> = row.try_get("body")?;
            outbox.push(OutboxEntry {
                seq: seq as u64,
                item: decode::<OutboxItem>("outbox", &body)?,
            });
        }
        let next_seq = sqlx::query("SELECT value FROM meta WHERE name = 'next_seq'")
            .fetch_optional(&mut self.conn)
            .await?
            .map(|row| row.try_get::<i64, _>("value"))
            .transpose()?
            .map_or(1, |v| v as u64);
        Ok(PersistedState {
            records,
            outbox,
            next_seq,
        })
    }

    async fn commit_inner(&mut self, batch: &WriteBatch) -> Result<(), SqliteStoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.conn.begin().await?;
        for key in &batch.records_delete {
            delete_record(&mut tx, *key).await?;
        }
        for record in &batch.records_insert {
            let key = record.key();
            sqlx::query(
                "INSERT OR IGNORE INTO schedules \
                 (schedule_id, version, arrival, received_at, body, status, started) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(key_text(key.schedule_id))
            .bind(key.version as i64)
            .bind(record.arrival as i64)
            .bind(record.received_at.0)
            .bind(encode(&record.signed)?)
            .bind(encode(&record.status)?)
            .bind(i64::from(record.started))
            .execute(&mut *tx)
            .await?;
        }
        for update in &batch.records_update {
            sqlx::query(
                "UPDATE schedules SET status = ?, started = ? \
                 WHERE schedule_id = ? AND version = ?",
            )
            .bind(encode(&update.status)?)
            .bind(i64::from(update.started))
            .bind(key_text(update.key.schedule_id))
            .bind(update.key.version as i64)
            .execute(&mut *tx)
            .await?;
        }
        for entry in &batch.outbox_push {
            sqlx::query("INSERT INTO outbox (seq, body) VALUES (?, ?)")
                .bind(entry.seq as i64)
                .bind(encode(&entry.item)?)
                .execute(&mut *tx)
                .await?;
        }
        for seq in &batch.outbox_delete {
            sqlx::query("DELETE FROM outbox WHERE seq = ?")
                .bind(*seq as i64)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(through) = batch.outbox_drain_through {
            // Sequence numbers stay below 2^63 in practice; clamp so the bit pattern
            // of a huge receipt does not turn negative.
            let through = i64::try_from(through).unwrap_or(i64::MAX);
            sqlx::query("DELETE FROM outbox WHERE seq <= ?")
                .bind(through)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(next_seq) = batch.next_seq {
            sqlx::query(
                "INSERT INTO meta (name, value) VALUES ('next_seq', ?) \
                 ON CONFLICT(name) DO UPDATE SET value = max(value, excluded.value)",
            )
            .bind(next_seq as i64)
            .execute(&mut *tx)
            .await?;
        }
        for line in &batch.exec_log {
            sqlx::query("INSERT INTO exec_log (at, body) VALUES (?, ?)")
                .bind(line.at.0)
                .bind(encode(line)?)
                .execute(&mut *tx)
                .await?;
        }
        if !batch.exec_log.is_empty() {
            sqlx::query("DELETE FROM exec_log WHERE id <= (SELECT MAX(id) FROM exec_log) - ?")
                .bind(Self::EXEC_LOG_MAX)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn delete_record(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    key: ScheduleKey,
) -> Result<(), SqliteStoreError> {
    sqlx::query("DELETE FROM schedules WHERE schedule_id = ? AND version = ?")
        .bind(key_text(key.schedule_id))
        .bind(key.version as i64)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl AgentStore for SqliteStore {
    type Error = SqliteStoreError;

    /// Cancellation safety: read-only; cancelling loses nothing.
    fn load(&mut self) -> impl Future<Output = Result<PersistedState, SqliteStoreError>> + Send {
        self.load_inner()
    }

    /// Cancellation safety: cancelling before the commit rolls the transaction back
    /// (dropped); cancelling during the commit leaves it committed or not (never
    /// partly). Treat as unknown: restart from `load`.
    fn commit(
        &mut self,
        batch: &WriteBatch,
    ) -> impl Future<Output = Result<(), SqliteStoreError>> + Send {
        self.commit_inner(batch)
    }
}
