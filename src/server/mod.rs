//! The platform server: `voltex serve` and `voltex up`.
//!
//! Joins the spine end to end: HTTP API ([`api`]) → sequencer ([`exchange`]) →
//! database projection → dispatch orchestration ([`fleet`]) → agents. Everything
//! that touches the wall clock, sockets or the database lives here, not in the pure
//! crates.
//!
//! **Architecture Invariant:** handlers never touch the engine's state directly; they
//! send commands through the sequencer and read projections built from its event
//! stream (live index in memory, tables in the database).

pub mod alerts;
pub mod api;
pub mod audit;
pub mod auth;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod dayahead;
pub mod exchange;
pub mod fleet;
pub mod problem;
pub mod up;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use self::api::{AppState, RateLimiter, SharedState};
use self::auth::JwtKeys;
use self::clock::Clock;
use self::config::ServerConfig;
use self::exchange::{Exchange, ExchangeConfig, PERSIST_BATCHES_MAX, PersistBatch};

/// Completes when the process is asked to stop: SIGINT (Ctrl-C) or SIGTERM (what
/// service managers and container runtimes send). `voltex serve` and `voltex up` stop
/// cleanly on either: the API drains, the journal and projection close, queued traces
/// are exported.
///
/// # Errors
/// If a signal handler cannot be installed.
pub async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The engine did not open.
    #[error(transparent)]
    Exchange(#[from] exchange::ExchangeError),
    /// Binding or serving failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The database did not open.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    /// The database holds events the journal does not.
    #[error(
        "the database is at event {database_event_seq} but the journal only reaches {journal_event_seq}: \
         they belong to different engines (use a fresh database or the matching data directory)"
    )]
    Mismatch {
        /// Newest event in the database.
        database_event_seq: u64,
        /// Newest event in the journal.
        journal_event_seq: u64,
    },
    /// A start-up task failed.
    #[error("start-up task failed: {0}")]
    Task(String),
    /// The shipped alert rules do not parse.
    #[error(transparent)]
    Alerts(#[from] alerts::AlertRuleError),
    /// The configured device CA could not be read.
    #[error("device CA in {dir}: {message}")]
    DeviceCa {
        /// The configured directory.
        dir: std::path::PathBuf,
        /// Why.
        message: String,
    },
}

/// Longest wait for the database projection to drain at shutdown.
const PERSIST_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often products are listed ahead and engine time is advanced.
const MARKET_TICK: Duration = Duration::from_secs(5);

/// How often the alert board samples the metrics (Prometheus' default scrape).
const ALERT_SAMPLE_INTERVAL: Duration = Duration::from_secs(15);

/// The process-wide Prometheus recorder (a process has one global recorder).
fn prometheus() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(&[
                    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .clone()
}

/// A running server.
pub struct RunningServer {
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// Shared state (tests inspect it).
    pub state: SharedState,
    tasks: Vec<JoinHandle<()>>,
    persister: JoinHandle<()>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

impl RunningServer {
    /// Starts the server: engine recovery, HTTP listener, market housekeeping.
    ///
    /// # Errors
    /// [`ServerError`] if any part cannot start.
    pub async fn start(
        config: ServerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<RunningServer, ServerError> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir)?;
        let jwt = match &config.jwt_secret {
            Some(secret) => JwtKeys::from_secret(secret.as_bytes()),
            None => {
                // No configured secret: a random one for this run, so no token from
                // elsewhere is accepted (tokens come from `RunningServer::issue_token`).
                let secret: [u8; 32] = rand::random();
                tracing::warn!("no jwt_secret configured: tokens are valid for this run only");
                JwtKeys::from_secret(&secret)
            }
        };
        let db = crate::db::Db::connect(&config.database_url()).await?;
        tracing::info!(backend = ?db.backend(), "database ready");
        let (persist_tx, persist_rx) = mpsc::channel::<PersistBatch>(PERSIST_BATCHES_MAX);
        let mut tasks = Vec::new();
        // Started before the engine opens: journal replay feeds it.
        let persister = tokio::spawn(persist_events(db.clone(), persist_rx));
        let mut exchange_config = ExchangeConfig::new(config.data_dir.join("engine"));
        exchange_config.rules = config.intraday_market_rules()?;
        exchange_config.day_ahead_rules = config.day_ahead_market_rules()?;
        exchange_config.day_ahead_daily_gate_s = config.day_ahead_gate_s()?;
        let exchange_clock = Arc::clone(&clock);
        let exchange = tokio::task::spawn_blocking(move || {
            Exchange::open(&exchange_config, exchange_clock, persist_tx)
        })
        .await
        .map_err(|error| ServerError::Task(error.to_string()))??;
        let exchange = Arc::new(exchange);
        // The projection can trail the journal, never lead it: a database ahead of the
        // journal belongs to another engine (or the journal was lost), and replaying
        // into it would silently skip events.
        let cursor = db.engine_cursor().await?;
        let journal_event_seq = exchange.last_event_seq();
        if cursor.last_event_seq > journal_event_seq {
            let _ = tokio::task::spawn_blocking(move || exchange.shutdown()).await;
            return Err(ServerError::Mismatch {
                database_event_seq: cursor.last_event_seq,
                journal_event_seq,
            });
        }
        exchange
            .list_products_ahead(config.intraday_hours_ahead)
            .await?;
        // Ends by itself once the state (its last handle) is dropped, after storing
        // what is queued.
        let revoked_certificates = voltex_dispatch::transport::RevokedCertificates::new();
        for fingerprint in db.list_revoked_certificate_fingerprints().await? {
            revoked_certificates.revoke(&fingerprint);
        }
        let (audit_writer, _audit_task) = audit::AuditWriter::spawn(db.clone());
        let state = Arc::new(AppState {
            exchange: Arc::clone(&exchange),
            db,
            jwt,
            limiter: RateLimiter::new(config.rate_limit_orders_per_s, config.rate_limit_burst),
            alerts: Arc::new(alerts::AlertBoard::new(prometheus(), Arc::clone(&clock))?),
            audit_writer,
            metrics: prometheus(),
            orchestrator: OnceLock::new(),
            device_ca: OnceLock::new(),
            revoked_certificates,
            fleet_events: tokio::sync::broadcast::channel(api::fleet_events::FLEET_EVENTS_LEN_MAX)
                .0,
        });
        if let Some(dir) = &config.device_ca_dir {
            let _ = state.device_ca.set(load_device_ca(dir)?);
        }
        let listener = tokio::net::TcpListener::bind(config.http_addr).await?;
        let http_addr = listener.local_addr()?;
        let (shutdown, mut shutdown_rx) = tokio::sync::watch::channel(false);
        let router = api::router(Arc::clone(&state));
        let mut http_shutdown = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = http_shutdown.wait_for(|stop| *stop).await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "HTTP server failed");
            }
        }));
        let alert_board = Arc::clone(&state.alerts);
        let mut alert_shutdown = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            // Samples for the alert rules' rate ranges, as a Prometheus scrape would.
            let mut tick = tokio::time::interval(ALERT_SAMPLE_INTERVAL);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = alert_shutdown.wait_for(|stop| *stop) => break,
                }
                // The process's own CPU and memory, for dashboards and the idle target.
                if let Some(sample) = crate::process_stats::ProcessSample::read() {
                    metrics::gauge!("voltex_process_cpu_seconds").set(sample.cpu_s);
                    metrics::gauge!("voltex_process_resident_memory_bytes")
                        .set(sample.rss_bytes as f64);
                }
                alert_board.sample_and_evaluate();
            }
        }));
        let hours_ahead = config.intraday_hours_ahead;
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(MARKET_TICK);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown_rx.wait_for(|stop| *stop) => break,
                }
                if let Err(error) = exchange.advance_time().await {
                    tracing::error!(%error, "advancing engine time failed");
                }
                if let Err(error) = exchange.list_products_ahead(hours_ahead).await {
                    tracing::error!(%error, "listing products failed");
                }
            }
        }));
        tracing::info!(%http_addr, "voltex server listening");
        Ok(RunningServer {
            http_addr,
            state,
            tasks,
            persister,
            shutdown,
        })
    }

    /// A token signed with this server's key (for `voltex up`, which prints an
    /// operator token).
    ///
    /// # Errors
    /// Only if signing fails.
    pub fn issue_token(&self, claims: &auth::Claims) -> Result<String, auth::TokenError> {
        self.state.jwt.issue(claims)
    }

    /// Stops accepting requests, drains the sequencer and waits for the tasks.
    ///
    /// # Errors
    /// The engine's error if it had failed.
    pub async fn stop(self) -> Result<(), ServerError> {
        let _ = self.shutdown.send(true);
        let exchange = Arc::clone(&self.state.exchange);
        tokio::task::spawn_blocking(move || exchange.shutdown())
            .await
            .map_err(|error| ServerError::Task(error.to_string()))??;
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
        // The sequencer has stopped, so the persistence channel is closed: the
        // persister drains what is queued and ends. (Anything it cannot write now is
        // replayed from the journal at the next start.)
        if tokio::time::timeout(PERSIST_DRAIN_TIMEOUT, self.persister)
            .await
            .is_err()
        {
            tracing::warn!("persister did not drain in time; the journal replay will catch up");
        }
        Ok(())
    }
}

/// Reads the device-issuing CA (`ca.pem`, `ca.key`) from `dir` and checks that it can
/// sign.
fn load_device_ca(
    dir: &std::path::Path,
) -> Result<voltex_dispatch::transport::certs::CaFiles, ServerError> {
    use voltex_dispatch::transport::certs;
    let error = |message: String| ServerError::DeviceCa {
        dir: dir.to_path_buf(),
        message,
    };
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).map_err(|e| error(format!("{name}: {e}")))
    };
    let ca = certs::CaFiles {
        cert_pem: read("ca.pem")?,
        key_pem: read("ca.key")?,
    };
    let probe = voltex_dispatch::DeviceId::new("ca-probe").map_err(|e| error(e.to_string()))?;
    certs::issue_device(&ca, &probe).map_err(|e| error(format!("cannot sign: {e}")))?;
    Ok(ca)
}

/// Most events written in one database transaction.
const PERSIST_EVENTS_PER_TX_MAX: usize = 4096;

/// Writes committed events, and the audit records journaled with their commands, to
/// the database projection, in order, coalescing queued batches into one transaction.
/// A failed write is retried (with back-off) until it succeeds: nothing is dropped,
/// and if the database stays down the bounded channel fills and back-pressures the
/// sequencer.
async fn persist_events(db: crate::db::Db, mut batches: mpsc::Receiver<PersistBatch>) {
    let mut pending = PersistBatch::default();
    let fits = |pending: &PersistBatch| {
        pending.events.len() + pending.audit.len() < PERSIST_EVENTS_PER_TX_MAX
    };
    while let Some(batch) = batches.recv().await {
        pending.events.extend(batch.events);
        pending.audit.extend(batch.audit);
        while fits(&pending) {
            match batches.try_recv() {
                Ok(more) => {
                    pending.events.extend(more.events);
                    pending.audit.extend(more.audit);
                }
                Err(_) => break,
            }
        }
        let mut delay = Duration::from_millis(10);
        loop {
            let started = clock::monotonic();
            // The journal holds these events and records durably: the projection's
            // commits need not wait for the disk (see `Db::persist_journaled_engine_events`).
            match db
                .persist_journaled_engine_events(&pending.events, &pending.audit)
                .await
            {
                Ok(outcome) => {
                    metrics::histogram!("voltex_db_persist_seconds")
                        .record(started.elapsed().as_secs_f64());
                    metrics::counter!("voltex_persisted_events_total").increment(outcome.n_applied);
                    metrics::gauge!("voltex_persisted_event_seq")
                        .set(outcome.last_event_seq as f64);
                    break;
                }
                Err(error) => {
                    tracing::error!(%error, n_events = pending.events.len(), "persisting engine events failed; retrying");
                    metrics::counter!("voltex_db_persist_failures_total").increment(1);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        pending.events.clear();
        pending.audit.clear();
    }
}
