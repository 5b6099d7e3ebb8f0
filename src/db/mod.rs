//! Persistence: the platform's repository over one sqlx pool, on PostgreSQL (the
//! production store) or SQLite (the embedded default), with the same methods and the
//! same behaviour on both.
//!
//! [`Db::connect`] takes a URL (`sqlite://path/voltex.db`, `postgres://user@host/db`),
//! opens an [`sqlx::AnyPool`] and runs the migrations in `migrations/` before
//! returning. All SQL is portable (`$N` placeholders, `BIGINT`/`TEXT` columns, `ON
//! CONFLICT`); the two migration directories differ only in how an auto-assigned id
//! column is spelled, and a unit test below keeps them otherwise identical.
//!
//! The methods live in four files: `trading.rs` (accounts, the engine's event stream
//! into orders, trades and positions), `auction.rs` (the day-ahead auction's curves,
//! results and awards from the same stream; awards also count in positions and
//! fills), `fleet.rs` (devices, schedules, acks, telemetry) and `records.rs` (models,
//! analytics, audit log). Row types are in [`types`]. Every method takes the time it
//! stamps (`*_at_ns`) from the caller: the layer reads no clock, so tests and the
//! simulator drive it in virtual time.
//!
//! # Guarantees
//! - Money and prices are integers (ticks, lots, cents), never floats.
//! - [`Db::persist_engine_events`] is idempotent: replaying events that were persisted
//!   before changes nothing, and a gap in the sequence numbers is refused, so a
//!   restart neither duplicates nor skips.
//! - Multi-statement changes run in one transaction; on SQLite write transactions
//!   start with `BEGIN IMMEDIATE`, so concurrent writers wait (busy timeout) instead of
//!   failing on a lock upgrade.
//! - SQLite runs with `journal_mode=WAL`, `synchronous=FULL`, foreign keys on.
//! - Every commit is flushed before it returns, except those of
//!   [`Db::persist_journaled_engine_events`] on PostgreSQL (events the engine's
//!   journal already holds; the replay restores what a crash loses).
//! - Outside input reaches no `unwrap`: bad values come back as [`DbError`].
//!
//! Cancellation: every async method is cancellation-safe in the sense that dropping
//! its future rolls back an open transaction; a dropped call may or may not have
//! committed if it was dropped after the commit was sent.

mod auction;
mod fleet;
mod records;
pub mod scratch;
mod trading;
pub mod types;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Any, AnyPool, ConnectOptions, Row, Transaction};

pub use auction::{
    AuctionAwardRow, AuctionCurveRow, AuctionFamilyRow, AuctionResultRow, FamilyRowStatus,
};
pub use types::*;

/// Largest page any list method returns.
pub const PAGE_LIMIT_MAX: u32 = 1_000;

/// Rows of one batched insert statement (bounded by both engines' parameter limits).
pub const INSERT_BATCH_ROWS_MAX: usize = 500;

/// Why a repository call failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database URL is malformed or names an unsupported backend.
    #[error("invalid database url: {0}")]
    InvalidUrl(String),
    /// The database could not be reached or opened.
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// The migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A value passed in is unusable.
    #[error("invalid {field}: {message}")]
    InvalidInput {
        /// Which argument or field.
        field: &'static str,
        /// Why.
        message: String,
    },
    /// The referenced row does not exist.
    #[error("{entity} {key} not found")]
    NotFound {
        /// Kind of row (`device`, `schedule`, ...).
        entity: &'static str,
        /// Its key.
        key: String,
    },
    /// The row exists already (or a unique value is taken).
    #[error("{entity} {key} already exists")]
    AlreadyExists {
        /// Kind of row.
        entity: &'static str,
        /// Its key.
        key: String,
    },
    /// A schedule version not newer than the device's latest one (and not an
    /// identical retry of it).
    #[error("schedule version {version} for device {device_id} is not newer than {latest}")]
    StaleScheduleVersion {
        /// Device.
        device_id: String,
        /// Version offered.
        version: u64,
        /// Device's latest version.
        latest: u64,
    },
    /// Engine events would leave a gap after the persisted cursor, or a batch is not
    /// contiguous.
    #[error("engine event gap: expected event {expected}, got {got}")]
    EventGap {
        /// Next sequence number that can be persisted.
        expected: u64,
        /// The one offered.
        got: u64,
    },
    /// Another writer changed the same data concurrently; retrying may succeed.
    #[error("concurrent update: {0}")]
    Conflict(String),
    /// A stored value does not decode (a bug or a foreign write).
    #[error("corrupt value in {table}.{column}: {message}")]
    Corrupt {
        /// Table.
        table: &'static str,
        /// Column.
        column: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A JSON document does not encode or decode.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// Any other database error.
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
}

impl DbError {
    /// Whether the database itself is unavailable (connection lost, pool exhausted):
    /// the server answers 503 and `/readyz` fails.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Connect(_) => true,
            DbError::Sqlx(error) => matches!(
                error,
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            ),
            _ => false,
        }
    }
}

/// Which database engine a [`Db`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The backend a URL names.
    ///
    /// # Errors
    /// [`DbError::InvalidUrl`] for any scheme but `sqlite:`, `postgres:` and
    /// `postgresql:`.
    pub fn of_url(url: &str) -> Result<Backend, DbError> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(DbError::InvalidUrl(format!(
                "expected a sqlite: or postgres: url, got scheme {scheme:?}"
            ))),
        }
    }
}

/// Pool settings. [`DbConfig::default`] suits the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbConfig {
    /// Most connections in the pool (SQLite in-memory databases always use one).
    pub max_connections: u32,
    /// How long to wait for a connection (also bounds the initial connect).
    pub acquire_timeout: Duration,
    /// How long an SQLite writer waits for the write lock.
    pub sqlite_busy_timeout: Duration,
}

impl Default for DbConfig {
    fn default() -> DbConfig {
        DbConfig {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
            sqlite_busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The repository: one pool, one backend. Cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Db {
    /// Connects with [`DbConfig::default`] and migrates. See [`Db::connect_with`].
    ///
    /// # Errors
    /// As [`Db::connect_with`].
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        Db::connect_with(url, &DbConfig::default()).await
    }

    /// Connects to `url`, creating an SQLite file if it does not exist (unless the URL
    /// sets `mode=`), and runs the migrations.
    ///
    /// # Errors
    /// [`DbError::InvalidUrl`] for an unusable URL, [`DbError::Connect`] if the database
    /// cannot be reached or opened, [`DbError::Migrate`] if migrating fails.
    pub async fn connect_with(url: &str, config: &DbConfig) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        if config.max_connections == 0 {
            return Err(DbError::InvalidInput {
                field: "max_connections",
                message: "must be positive".into(),
            });
        }
        let options = AnyPoolOptions::new().acquire_timeout(config.acquire_timeout);
        let pool = match backend {
            Backend::Postgres => {
                sqlx::postgres::PgConnectOptions::from_str(url)
                    .map_err(|e| DbError::InvalidUrl(e.to_string()))?;
                options
                    .max_connections(config.max_connections)
                    .connect(url)
                    .await
                    .map_err(DbError::Connect)?
            }
            Backend::Sqlite => Db::connect_sqlite(url, config, options).await?,
        };
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&pool).await?;
        let db = Db { pool, backend };
        db.run_pending_backfills().await?;
        Ok(db)
    }

    async fn connect_sqlite(
        url: &str,
        config: &DbConfig,
        options: AnyPoolOptions,
    ) -> Result<AnyPool, DbError> {
        let parsed =
            SqliteConnectOptions::from_str(url).map_err(|e| DbError::InvalidUrl(e.to_string()))?;
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let explicit_mode = url.contains("mode=");
        let busy_timeout_ms = config.sqlite_busy_timeout.as_millis().min(i32::MAX as u128);
        // One direct connection first: it creates the file and switches it to WAL, which
        // is a property of the file. Doing that on every pooled connection could fail
        // with "database is locked" when several open at once.
        let mut pool_url = url.to_string();
        if !in_memory {
            // An explicit `mode=` in the URL decides creation itself (`rwc` creates,
            // `rw` does not); otherwise the file is created.
            let bootstrap = if explicit_mode {
                parsed.clone()
            } else {
                parsed.clone().create_if_missing(true)
            };
            let bootstrap = bootstrap
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(config.sqlite_busy_timeout);
            let connection = bootstrap.connect().await.map_err(DbError::Connect)?;
            sqlx::Connection::close(connection)
                .await
                .map_err(DbError::Connect)?;
            if !explicit_mode {
                pool_url.push(if url.contains('?') { '&' } else { '?' });
                pool_url.push_str("mode=rw");
            }
        }
        // Every connection a sqlite: URL opens over the Any driver is configured from
        // the URL alone, so the per-connection pragmas are set here.
        let options = options.after_connect(move |connection, _meta| {
            Box::pin(async move {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "PRAGMA busy_timeout = {busy_timeout_ms}"
                )))
                .execute(&mut *connection)
                .await?;
                sqlx::query("PRAGMA synchronous = FULL")
                    .execute(&mut *connection)
                    .await?;
                sqlx::query("PRAGMA foreign_keys = ON")
                    .execute(&mut *connection)
                    .await?;
                Ok(())
            })
        });
        // An in-memory database lives as long as its one connection: keep exactly one.
        let options = if in_memory {
            options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            options.max_connections(config.max_connections)
        };
        options.connect(&pool_url).await.map_err(DbError::Connect)
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The underlying pool (for health checks and metrics; prefer the methods).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// One round trip to the database (for `/readyz`).
    ///
    /// # Errors
    /// The database is unreachable ([`DbError::is_unavailable`]).
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a transaction that will write. SQLite takes the write lock at once
    /// (`BEGIN IMMEDIATE`, waiting up to the busy timeout) so a read-then-write
    /// transaction cannot fail on a lock upgrade.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>, DbError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }
}

/// Checks a page size: 1 ..= [`PAGE_LIMIT_MAX`].
pub(crate) fn page_limit(limit: u32) -> Result<i64, DbError> {
    if limit == 0 || limit > PAGE_LIMIT_MAX {
        return Err(DbError::InvalidInput {
            field: "limit",
            message: format!("must be 1..={PAGE_LIMIT_MAX}, got {limit}"),
        });
    }
    Ok(i64::from(limit))
}

/// An unsigned input value as a BIGINT.
pub(crate) fn input_i64(field: &'static str, value: u64) -> Result<i64, DbError> {
    i64::try_from(value).map_err(|_| DbError::InvalidInput {
        field,
        message: format!("{value} exceeds the largest storable value {}", i64::MAX),
    })
}

/// Reads one column.
pub(crate) fn col<'r, T>(row: &'r AnyRow, column: &'static str) -> Result<T, DbError>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    Ok(row.try_get::<T, _>(column)?)
}

/// Reads a BIGINT column as a narrower or unsigned integer type `T`.
pub(crate) fn col_int<T: TryFrom<i64>>(
    row: &AnyRow,
    table: &'static str,
    column: &'static str,
) -> Result<T, DbError> {
    let value: i64 = col(row, column)?;
    T::try_from(value).map_err(|_| DbError::Corrupt {
        table,
        column,
        message: format!("{value} out of range"),
    })
}

/// Reads a nullable BIGINT column as a narrower or unsigned integer type `T`.
pub(crate) fn col_int_opt<T: TryFrom<i64>>(
    row: &AnyRow,
    table: &'static str,
    column: &'static str,
) -> Result<Option<T>, DbError> {
    let value: Option<i64> = col(row, column)?;
    value
        .map(|v| {
            T::try_from(v).map_err(|_| DbError::Corrupt {
                table,
                column,
                message: format!("{v} out of range"),
            })
        })
        .transpose()
}

/// Reads a TEXT column holding JSON.
pub(crate) fn col_json(
    row: &AnyRow,
    table: &'static str,
    column: &'static str,
) -> Result<serde_json::Value, DbError> {
    let text: String = col(row, column)?;
    serde_json::from_str(&text).map_err(|e| DbError::Corrupt {
        table,
        column,
        message: e.to_string(),
    })
}

/// Reads a TEXT column holding JSON, checked but kept as text.
pub(crate) fn col_stored_json(
    row: &AnyRow,
    table: &'static str,
    column: &'static str,
) -> Result<StoredJson, DbError> {
    let text: String = col(row, column)?;
    StoredJson::from_text(text).map_err(|e| DbError::Corrupt {
        table,
        column,
        message: e.to_string(),
    })
}

/// Reads a TEXT column through a parser of stored names.
pub(crate) fn col_enum<T>(
    row: &AnyRow,
    table: &'static str,
    column: &'static str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T, DbError> {
    let text: String = col(row, column)?;
    parse(&text).ok_or_else(|| DbError::Corrupt {
        table,
        column,
        message: format!("unknown value {text:?}"),
    })
}

/// `$first, $first+1, ...` for `n` values: one row of a batched insert.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    let mut out = String::from("(");
    for i in 0..n {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('$');
        out.push_str(&(first + i).to_string());
    }
    out.push(')');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema without comments and `-- dialect` lines.
    fn portable_lines(sql: &str) -> Vec<&str> {
        sql.lines()
            .map(str::trim)
            .filter(|line| !line.starts_with("--") && !line.contains("-- dialect"))
            .collect()
    }

    #[test]
    fn sqlite_and_postgres_migrations_differ_only_on_dialect_lines() {
        let names = |migrator: &sqlx::migrate::Migrator| {
            migrator
                .iter()
                .map(|m| (m.version, m.description.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&SQLITE_MIGRATIONS), names(&POSTGRES_MIGRATIONS));
        for (sqlite, postgres) in SQLITE_MIGRATIONS.iter().zip(POSTGRES_MIGRATIONS.iter()) {
            assert_eq!(
                portable_lines(sqlite.sql.as_str()),
                portable_lines(postgres.sql.as_str()),
                "migration {} differs outside `-- dialect` lines",
                sqlite.version
            );
            let n_dialect = |sql: &str| sql.lines().filter(|l| l.contains("-- dialect")).count();
            assert_eq!(
                n_dialect(sqlite.sql.as_str()),
                n_dialect(postgres.sql.as_str())
            );
        }
    }

    #[test]
    fn backend_of_url_accepts_only_sqlite_and_postgres() {
        assert_eq!(Backend::of_url("sqlite://a.db").ok(), Some(Backend::Sqlite));
        assert_eq!(
            Backend::of_url("sqlite::memory:").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::of_url("postgres://u@h/d").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::of_url("postgresql://u@h/d").ok(),
            Some(Backend::Postgres)
        );
        for bad in ["mysql://u@h/d", "", "voltex.db", "http://x"] {
            assert!(
                matches!(Backend::of_url(bad), Err(DbError::InvalidUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn page_limit_is_bounded() {
        assert!(page_limit(0).is_err());
        assert_eq!(page_limit(1).ok(), Some(1));
        assert_eq!(
            page_limit(PAGE_LIMIT_MAX).ok(),
            Some(i64::from(PAGE_LIMIT_MAX))
        );
        assert!(page_limit(PAGE_LIMIT_MAX + 1).is_err());
    }

    #[test]
    fn placeholders_number_from_first() {
        assert_eq!(placeholders(1, 3), "($1, $2, $3)");
        assert_eq!(placeholders(4, 2), "($4, $5)");
    }
}
