//! Shared helpers of the integration tests (each test binary includes this module
//! with `mod support;` and uses what it needs).
//!
//! `dead_code` is allowed because every test binary compiles the whole module but no
//! single one uses all of it.
#![allow(dead_code)]

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use sqlx::Connection;
use tokio::sync::mpsc;
use voltex::server::auth::{Claims, JwtKeys, Role};
use voltex_dispatch::transport::{PlatformLink, TransportError};
use voltex_dispatch::{DeviceId, Message, ScheduleSigner};

/// A bearer token signed with `secret` (HS256) for `subject` with `role` and
/// `accounts`, valid until 2096.
pub fn token(secret: &str, subject: &str, role: Role, accounts: Vec<u32>) -> String {
    JwtKeys::from_secret(secret.as_bytes())
        .issue(&Claims {
            sub: subject.into(),
            role,
            accounts,
            iat: 0,
            exp: 4_000_000_000,
        })
        .expect("a token")
}

/// The platform's schedule signer in tests (a fixed key).
pub fn signer() -> ScheduleSigner {
    ScheduleSigner::from_seed(&[42; 32])
}

/// Awaits `future`, failing the test if it takes longer than `guard`: a hang guard,
/// not a performance expectation.
pub async fn guarded<F: Future>(what: &str, guard: Duration, future: F) -> F::Output {
    match tokio::time::timeout(guard, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: still waiting after {guard:?} (hang guard)"),
    }
}

/// A platform link driven by the test: it sees downlink and injects uplink.
pub struct FakeLink {
    /// Messages the test injects as if devices had sent them.
    pub uplink: mpsc::Receiver<(DeviceId, Message)>,
    /// Where the orchestrator's sends go, for the test to read.
    pub downlink: mpsc::Sender<(DeviceId, Message)>,
}

impl PlatformLink for FakeLink {
    async fn send_to(
        &mut self,
        device: &DeviceId,
        message: &Message,
    ) -> Result<(), TransportError> {
        self.downlink
            .send((device.clone(), message.clone()))
            .await
            .map_err(|_| TransportError::Closed)
    }

    async fn recv(&mut self) -> Result<(DeviceId, Message), TransportError> {
        self.uplink.recv().await.ok_or(TransportError::Closed)
    }
}

/// `VOLTEX_REQUIRE_SERVICES=1`: a missing service fails the test instead of skipping it.
pub fn services_required() -> bool {
    std::env::var("VOLTEX_REQUIRE_SERVICES").is_ok_and(|value| value == "1")
}

/// Skips (prints why) or fails, as `VOLTEX_REQUIRE_SERVICES` says.
pub fn service_unavailable(why: &str) {
    assert!(
        !services_required(),
        "VOLTEX_REQUIRE_SERVICES=1 but a service is unavailable: {why}"
    );
    eprintln!("skipping: {why}");
}

/// `url` with its database name replaced by `name` (query parameters kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Runs `test` with the URL of a fresh PostgreSQL database (named `{prefix}_{pid}_{random}`)
/// created through `VOLTEX_DATABASE_URL`, and drops the database afterwards, also when
/// the test panics (the panic is then resumed). Without PostgreSQL it skips or fails,
/// as [`service_unavailable`] says.
pub async fn with_postgres_database<F, Fut>(prefix: &str, test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let Ok(admin_url) = std::env::var("VOLTEX_DATABASE_URL") else {
        service_unavailable("VOLTEX_DATABASE_URL is not set");
        return;
    };
    let mut admin = match sqlx::postgres::PgConnection::connect(&admin_url).await {
        Ok(connection) => connection,
        Err(error) => {
            service_unavailable(&format!("cannot connect to {admin_url}: {error}"));
            return;
        }
    };
    let name = format!(
        "{prefix}_{}_{:016x}",
        std::process::id(),
        rand::random::<u64>()
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create the test database");
    let outcome = AssertUnwindSafe(test(with_database(&admin_url, &name)))
        .catch_unwind()
        .await;
    let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
    if let Err(payload) = outcome {
        std::panic::resume_unwind(payload);
    }
    dropped.expect("drop the test database");
}
