//! Scratch PostgreSQL databases: a fresh, empty database created through an
//! administrative URL and dropped afterwards, for tests and benchmarks that must not
//! see (or leave) rows of earlier runs.
//!
//! Guarantees: the name is checked to be a plain lower-case identifier before it is
//! spliced into `CREATE DATABASE` (DDL takes no bind parameters), so no input reaches
//! SQL unchecked; [`ScratchPostgres::drop_database`] drops with `WITH (FORCE)`, so
//! connections a caller leaked do not keep the database alive.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// Longest PostgreSQL identifier (`NAMEDATALEN - 1`).
const DATABASE_NAME_LEN_MAX: usize = 63;

/// Why a scratch database could not be made or removed.
#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    /// The name is not a plain identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes).
    #[error("invalid scratch database name {0:?}: use [a-z_][a-z0-9_]*, at most 63 bytes")]
    InvalidName(String),
    /// The administrative URL could not be reached (PostgreSQL down, wrong address).
    #[error("cannot connect to {admin_url}: {source}")]
    Connect {
        /// The URL tried.
        admin_url: String,
        /// What sqlx said.
        #[source]
        source: sqlx::Error,
    },
    /// `CREATE DATABASE` or `DROP DATABASE` failed.
    #[error("{statement} failed: {source}")]
    Statement {
        /// The statement.
        statement: String,
        /// What PostgreSQL said.
        #[source]
        source: sqlx::Error,
    },
}

/// `url` with its database name replaced by `name` (query parameters kept).
pub fn postgres_url_with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    let mut url_out = format!("{}/{name}", &base[..host_end]);
    if let Some(query) = query {
        url_out.push('?');
        url_out.push_str(query);
    }
    url_out
}

fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|first| first.is_ascii_lowercase() || first == '_');
    first_ok
        && name.len() <= DATABASE_NAME_LEN_MAX
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A database created by [`ScratchPostgres::create`]; drop it with
/// [`ScratchPostgres::drop_database`] (a plain `drop` of this value leaves it behind).
#[derive(Debug)]
pub struct ScratchPostgres {
    admin_url: String,
    name: String,
    url: String,
}

impl ScratchPostgres {
    /// Creates the empty database `name` through `admin_url` (any database the user
    /// can connect to, e.g. `postgres://postgres@127.0.0.1:5432/postgres`).
    pub async fn create(admin_url: &str, name: &str) -> Result<ScratchPostgres, ScratchError> {
        if !is_plain_identifier(name) {
            return Err(ScratchError::InvalidName(name.to_owned()));
        }
        let statement = format!("CREATE DATABASE {name}");
        let mut admin = connect(admin_url).await?;
        let created = sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
            .execute(&mut admin)
            .await;
        // Closing is best effort: the server ends the session when the socket goes.
        let _ = admin.close().await;
        created.map_err(|source| ScratchError::Statement { statement, source })?;
        Ok(ScratchPostgres {
            admin_url: admin_url.to_owned(),
            name: name.to_owned(),
            url: postgres_url_with_database(admin_url, name),
        })
    }

    /// The URL of the scratch database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database, closing any connection still open to it.
    pub async fn drop_database(self) -> Result<(), ScratchError> {
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let mut admin = connect(&self.admin_url).await?;
        let dropped = sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
            .execute(&mut admin)
            .await;
        let _ = admin.close().await;
        dropped
            .map(|_| ())
            .map_err(|source| ScratchError::Statement { statement, source })
    }
}

async fn connect(admin_url: &str) -> Result<PgConnection, ScratchError> {
    PgConnection::connect(admin_url)
        .await
        .map_err(|source| ScratchError::Connect {
            admin_url: admin_url.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_identifiers_are_accepted_as_names() {
        assert!(is_plain_identifier("voltex_bench_api_12_ab01"));
        assert!(is_plain_identifier("_x"));
        for bad in [
            "",
            "1abc",
            "Abc",
            "a-b",
            "a;DROP DATABASE postgres",
            "a b",
            "é",
        ] {
            assert!(!is_plain_identifier(bad), "{bad:?} was accepted");
        }
        assert!(is_plain_identifier(&"a".repeat(63)));
        assert!(!is_plain_identifier(&"a".repeat(64)));
    }

    #[test]
    fn the_url_gets_the_new_database_name_and_keeps_the_rest() {
        assert_eq!(
            postgres_url_with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            postgres_url_with_database("postgres://u:p@h:5432?sslmode=disable", "t1"),
            "postgres://u:p@h:5432/t1?sslmode=disable"
        );
        let options: sqlx::postgres::PgConnectOptions =
            postgres_url_with_database("postgres://u@h/a", "b")
                .parse()
                .expect("the URL parses");
        assert_eq!(options.get_database(), Some("b"));
    }

    #[tokio::test]
    async fn a_bad_name_is_refused_before_any_connection() {
        // The URL is unreachable: the name check must answer first.
        let error = ScratchPostgres::create("postgres://nobody@127.0.0.1:1/x", "Bad-Name")
            .await
            .expect_err("a bad name must be refused");
        assert!(matches!(error, ScratchError::InvalidName(name) if name == "Bad-Name"));
    }
}
