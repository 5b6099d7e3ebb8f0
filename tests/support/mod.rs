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
use serde_json::Value;
use tokio::sync::mpsc;
use voltex::db::scratch::{ScratchError, ScratchPostgres};
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

/// The URL of a SQLite database file at `path`, created if missing (`mode=rwc`).
pub fn sqlite_url(path: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// A JSON client of a running server: every call answers `(status, body)`, the body
/// parsed as JSON or, if it is not JSON, as a string value.
pub struct Client {
    http: reqwest::Client,
    base: String,
    correlation_prefix: Option<&'static str>,
}

impl Client {
    /// A client of the server listening on `addr`.
    pub fn new(addr: std::net::SocketAddr) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: format!("http://{addr}"),
            correlation_prefix: None,
        }
    }

    /// The same client, sending `x-correlation-id: {prefix}{path}` on every request.
    pub fn with_correlation_prefix(self, prefix: &'static str) -> Client {
        Client {
            correlation_prefix: Some(prefix),
            ..self
        }
    }

    /// One request with an optional bearer token and JSON body; also answers the
    /// response's content type.
    pub async fn send_typed(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, String, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(prefix) = self.correlation_prefix {
            request = request.header("x-correlation-id", format!("{prefix}{path}"));
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, content_type, body)
    }

    /// One request; see [`Client::send_typed`].
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, _, body) = self.send_typed(method, path, token, body).await;
        (status, body)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, token, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.send(reqwest::Method::DELETE, path, token, None).await
    }
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
    let name = format!(
        "{prefix}_{}_{:016x}",
        std::process::id(),
        rand::random::<u64>()
    );
    let scratch = match ScratchPostgres::create(&admin_url, &name).await {
        Ok(scratch) => scratch,
        Err(error @ ScratchError::Connect { .. }) => {
            service_unavailable(&error.to_string());
            return;
        }
        Err(error) => panic!("create the test database: {error}"),
    };
    let outcome = AssertUnwindSafe(test(scratch.url().to_owned()))
        .catch_unwind()
        .await;
    let dropped = scratch.drop_database().await;
    if let Err(payload) = outcome {
        std::panic::resume_unwind(payload);
    }
    dropped.expect("drop the test database");
}

/// Starts the real `voltex serve` (`CARGO_BIN_EXE_voltex`) on `data_dir` with embedded
/// defaults whatever the environment says (no database or MQTT URL, no OTLP endpoint,
/// `RUST_LOG=warn`), then `env` on top, and returns it with its API base URL (read
/// from its first line of output).
pub fn spawn_serve(
    data_dir: &std::path::Path,
    jwt_secret: &str,
    env: &[(&str, &str)],
) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut command = Command::new(env!("CARGO_BIN_EXE_voltex"));
    command
        .args(["serve", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("VOLTEX_JWT_SECRET", jwt_secret)
        .env("RUST_LOG", "warn")
        .env_remove("VOLTEX_DATABASE_URL")
        .env_remove("VOLTEX_MQTT_URL")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("spawn voltex serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("API http://").nth(1) {
                let address = rest.split('/').next().unwrap_or_default().to_string();
                let _ = tx.send(format!("http://{address}"));
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("voltex serve printed its address");
    (child, base)
}
