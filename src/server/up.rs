//! `voltex up`: the whole platform on one machine, with embedded defaults.
//!
//! Starts the server ([`RunningServer`]: API, sequencer, SQLite or PostgreSQL), an
//! MQTT broker (embedded rumqttd unless an external URL is given), the QUIC endpoint
//! with a platform CA, the dispatch orchestrator, and N simulated agents (the real
//! `voltex-agent` runtime) over both transports. A market replay drives the day-ahead
//! cycle: for each replayed day the weekly-naive forecast of that day's prices feeds
//! the fleet LP (`voltex_engine::optimise::fleet`); each group's plan is bid as
//! day-ahead curves at its marginal values of energy (`voltex_engine::bidding`) into a
//! call auction per hour against the replayed market, which buys and sells any
//! quantity at the historical price (`ReplayMarket`, the backtest's and simulator's
//! auction, under the configured `[day_ahead_rules]`); with `UpConfig::family_bids` each
//! group's day is bid instead as linked block families (`bidding::day_ahead_families`:
//! the plan, priced at the day's value of stored energy, accepted whole or not at all,
//! optionally beside alternatives in one exclusive group). What the auction awards is
//! allocated to devices (`voltex_engine::commit::allocate`); with
//! `UpConfig::intraday`, what the allocation cannot deliver (each hour clears on its
//! own, so a sale can clear without the purchase that was to fill it) is first traded
//! back on the intraday book against a replayed maker
//! (`ReplayIntraday::close_shortfall`) and the position left is allocated. That
//! position is the fleet's commitment: signed, persisted and rolled out; its revenue at
//! the realised prices (plus what the closing trades paid beyond them) is written to
//! `dayahead_periods` and `analytics_aggregates`.
//!
//! Replay runs accelerated: one replayed hour lasts `hour_real_s` real seconds, and
//! schedules are issued in real time with periods of that length, so the agents
//! execute and acknowledge them for real. Energy actually moved by the simulated
//! batteries is therefore the planned power for a compressed time; the P&L figures
//! are those of the replayed (uncompressed) day.
//!
//! The replayed auction runs beside the engine, not in it: the engine's products are
//! real-time hours, while the replay compresses an hour into `hour_real_s` seconds, so
//! the cycle's curves are not journaled (traders' curves over the API are).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::prelude::ToPrimitive;
use voltex_dispatch::ScheduleSigner;
use voltex_dispatch::message::{DeviceId, Fallback, Schedule, ScheduleId, SchedulePeriod};
use voltex_dispatch::transport::{
    MqttConfig, QuicPlatformConfig, certs, mqtt_platform, quic_platform, start_embedded_broker,
};
use voltex_engine::bidding::{
    BidConfig, FamilyOwner, IntradayConfig, PeriodCurve, PlannedLimits, ReplayIntraday,
    ReplayMarket, RiskBook, RiskLimits, day_ahead_curves, day_ahead_families, scenario_with_error,
    stored_energy_value_eur_per_mwh,
};
use voltex_engine::commit::{Allocation, Commitment, allocate};
use voltex_engine::forecast::Forecaster;
use voltex_engine::forecast::naive::NaiveForecaster;
use voltex_engine::optimise::fleet::{FleetDevice, FleetPlan, plan_fleet, plan_fleet_within};
use voltex_engine::optimise::{PlanConfig, plan_battery};
use voltex_market::auction::AuctionConfig;
use voltex_market::battery::BatterySpec;
use voltex_market::block::ExclusiveGroupId;
use voltex_market::series::{PriceSeries, SeriesLayout};
use voltex_market::{AccountId, UtcNanos};

use super::RunningServer;
use super::api::fleet_events::EventingStore;
use super::clock::{Clock, SystemClock};
use super::config::ServerConfig;
use super::dayahead::{self, CommittedDay};
use super::fleet::DeliveryState;
use super::fleet::{
    Orchestrator, OrchestratorConfig, SimFleetConfig, SimQuic, TransportKind, spawn_simulated_fleet,
};
use crate::db::{AggregateRow, DayAheadPeriodRow, Db, NewDevice, NewMlModel};

/// What `voltex up` starts.
#[derive(Clone, Debug)]
pub struct UpConfig {
    /// The server's configuration.
    pub server: ServerConfig,
    /// Simulated agents.
    pub n_agents: usize,
    /// Agents on QUIC per thousand (the rest use MQTT).
    pub quic_per_mille: u32,
    /// Price file replayed (epftoolbox CSV shape).
    pub prices_csv: PathBuf,
    /// Real seconds per replayed hour.
    pub hour_real_s: u32,
    /// Stop after this long (real time); `None` runs until Ctrl-C.
    pub run_for: Option<Duration>,
    /// Extra cost per MWh of imbalance (energy committed but not delivered, or
    /// delivered but not committed), on top of the clearing price, EUR/MWh.
    pub imbalance_penalty_eur_per_mwh: rust_decimal::Decimal,
    /// The fleet's day-ahead risk limit: the largest position it may bid per hour,
    /// either way, MW (whole 0.1 MW lots of the day-ahead rules). The fleet plans within
    /// it (`plan_fleet_within`) and each hour's curve is trimmed to it
    /// (`engine::bidding::RiskBook::fit_curve`). `None`: no limit
    /// beyond the fleet's power.
    pub max_position_mw: Option<rust_decimal::Decimal>,
    /// The intraday close-out: what the fleet cannot deliver of a day's award (the
    /// allocation's shortfall) is traded back on the continuous book against a
    /// replayed maker quoting the historical price ± half the spread, before the
    /// schedules go out (`engine::bidding::ReplayIntraday::close_shortfall`). `None`:
    /// the shortfall is left to the imbalance settlement.
    pub intraday: Option<IntradayConfig>,
    /// Bid each group's day as one linked block family instead of hourly curves
    /// (`engine::bidding::day_ahead_families`): its purchases and sales accepted whole
    /// or not at all, priced at the day's value of stored energy. `Some(n)` offers `n`
    /// alternative schedules in one exclusive group (the plan on the forecast and on the
    /// forecast plus each of the `n − 1` latest days' forecast errors; 1 = the plan
    /// alone). `None`: hourly curves.
    pub family_bids: Option<usize>,
}

/// Why `voltex up` stopped.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// The server did not start.
    #[error(transparent)]
    Server(#[from] super::ServerError),
    /// A transport, certificate or the fleet did not start.
    #[error("{0}")]
    Start(String),
    /// The price file is unusable.
    #[error("price replay {path}: {message}")]
    Replay {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Database failure.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
}

fn start_error(what: &str) -> impl Fn(&dyn std::fmt::Display) -> UpError + '_ {
    move |error| UpError::Start(format!("{what}: {error}"))
}

/// How often the QUIC endpoint's counters are copied to the metrics.
const QUIC_METRICS_EVERY: Duration = Duration::from_secs(1);

/// Copies the QUIC endpoint's counters to the metrics: live connections, handshakes in
/// progress, and how many attempts were deferred (the endpoint was at its handshake
/// limit: a reconnect storm) or refused (bad certificate).
fn publish_quic_metrics(stats: &voltex_dispatch::transport::QuicPlatformStats) {
    let counters = stats.stats();
    metrics::gauge!("voltex_quic_connections").set(stats.n_connected() as f64);
    metrics::gauge!("voltex_quic_handshakes_in_progress")
        .set(stats.handshakes_in_progress() as f64);
    metrics::counter!("voltex_quic_handshakes_deferred_total")
        .absolute(counters.handshakes_deferred);
    metrics::counter!("voltex_quic_handshakes_refused_total").absolute(counters.handshakes_refused);
}

/// Per-device battery of the simulated fleet (matches [`SimFleetConfig::new`]).
fn device_spec(config: &SimFleetConfig) -> Result<BatterySpec, UpError> {
    let spec = BatterySpec::symmetric(
        config.limits.max_discharge_w,
        config.capacity_wh,
        0.9,
        rust_decimal::Decimal::from(2),
    );
    spec.validate()
        .map_err(|error| UpError::Start(format!("battery spec: {error}")))?;
    Ok(spec)
}

/// A summary of a run, printed at the end.
#[derive(Clone, Debug, Default)]
pub struct UpReport {
    /// Days replayed (roll-outs issued).
    pub n_days: usize,
    /// Device schedules acknowledged over all roll-outs.
    pub n_acked: u64,
    /// Device schedules issued.
    pub n_issued: u64,
    /// Expected revenue at realised prices, EUR cents, over all days.
    pub revenue_cents: i64,
}

/// Runs the platform until Ctrl-C or `run_for`; `on_ready` gets the API address and
/// an operator token valid for 24 hours.
///
/// # Errors
/// [`UpError`] when a part does not start.
pub async fn run(config: UpConfig, on_ready: impl FnOnce(&str, &str)) -> Result<UpReport, UpError> {
    let text = std::fs::read_to_string(&config.prices_csv).map_err(|error| UpError::Replay {
        path: config.prices_csv.clone(),
        message: format!("{error} (pass --data with a price CSV, e.g. ../shared/data/DE.csv)"),
    })?;
    let series = PriceSeries::parse_csv(
        &config.prices_csv.display().to_string(),
        &text,
        &SeriesLayout::default(),
    )
    .map_err(|error| UpError::Replay {
        path: config.prices_csv.clone(),
        message: error.to_string(),
    })?;
    if series.n_days() < 8 || series.periods_per_day() != 24 {
        return Err(UpError::Replay {
            path: config.prices_csv.clone(),
            message: "needs at least 8 days of hourly prices".into(),
        });
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let server = RunningServer::start(config.server.clone(), Arc::clone(&clock)).await?;
    let db = server.state.db.clone();

    // MQTT: external broker or the embedded one.
    let (mqtt, _broker) = match &config.server.mqtt_url {
        Some(url) => (
            MqttConfig::from_url(url).map_err(|e| start_error("MQTT URL")(&e))?,
            None,
        ),
        None => {
            let port = match config.server.embedded_mqtt_port {
                0 => voltex_dispatch::transport::embedded_broker::free_port()
                    .map_err(|e| start_error("free port")(&e))?,
                port => port,
            };
            let broker =
                start_embedded_broker(port).map_err(|e| start_error("embedded MQTT broker")(&e))?;
            (
                MqttConfig::new("127.0.0.1", broker.addr().port()),
                Some(broker),
            )
        }
    };
    let mut platform_mqtt = mqtt.clone();
    platform_mqtt.client_id = config.server.mqtt_client_id.clone();
    platform_mqtt.inflight_max = 1_000;
    platform_mqtt.request_channel_len = 16_384;
    platform_mqtt.inbound_channel_len = 16_384;
    let mqtt_link = mqtt_platform(platform_mqtt)
        .await
        .map_err(|e| start_error("platform MQTT link")(&e))?;

    // QUIC under the configured device CA (`device_ca_dir`), else one made for this
    // run; the API's `POST /api/v1/devices/{id}/certificate` issues under the same CA,
    // so a device certificate from it is trusted here.
    let ca = match server.state.device_ca.get() {
        Some(ca) => ca.clone(),
        None => {
            let ca = certs::init_ca("voltex up CA").map_err(|e| start_error("CA")(&e))?;
            let _ = server.state.device_ca.set(ca.clone());
            ca
        }
    };
    let server_cert = certs::issue_server(&ca, &["localhost".into()])
        .map_err(|e| start_error("server certificate")(&e))?;
    let mut quic_config = QuicPlatformConfig::new(
        config.server.quic_addr,
        ca.cert_pem.clone(),
        server_cert.cert_pem,
        server_cert.key_pem,
    );
    // Certificates revoked over the API (now or later) are refused here.
    quic_config.revoked = server.state.revoked_certificates.clone();
    let quic_link = quic_platform(quic_config)
        .await
        .map_err(|e| start_error("QUIC endpoint")(&e))?;
    let quic_addr = quic_link
        .local_addr()
        .map_err(|e| start_error("QUIC address")(&e))?;
    let quic_stats = quic_link.stats_handle();
    // Ends with the run (dropped on every return path).
    let _quic_metrics = AbortOnDrop(tokio::spawn(async move {
        let mut every = tokio::time::interval(QUIC_METRICS_EVERY);
        loop {
            every.tick().await;
            publish_quic_metrics(&quic_stats);
        }
    }));

    let mut seed = [0u8; 32];
    for (index, byte) in seed.iter_mut().enumerate() {
        *byte = rand::random::<u8>() ^ (index as u8);
    }
    let signer = ScheduleSigner::from_seed(&seed);
    let mut fleet_config = SimFleetConfig::new(config.n_agents, signer.verifier());
    fleet_config.mqtt = Some(mqtt.clone());
    fleet_config.quic = Some(SimQuic {
        addr: quic_addr,
        server_name: "localhost".into(),
        ca,
    });
    fleet_config.quic_per_mille = config.quic_per_mille;
    fleet_config.time_scale = 1;
    fleet_config.tick = Duration::from_secs(1);
    fleet_config.telemetry_interval = Duration::from_secs(30);
    fleet_config.heartbeat_interval = Duration::from_secs(15);
    fleet_config.resend_after = Duration::from_secs(10);
    let spec = device_spec(&fleet_config)?;

    // Devices are registered in the database before anything is sent to them.
    let now_ns = clock.now().nanos();
    let mut transports = Vec::with_capacity(config.n_agents);
    for index in 0..config.n_agents {
        let device = fleet_config
            .device_id(index)
            .map_err(|e| start_error("device id")(&e))?;
        let transport = fleet_config
            .transport_of(index)
            .unwrap_or(TransportKind::Mqtt);
        if db.get_device(device.as_str()).await?.is_none() {
            db.register_device(&NewDevice {
                device_id: device.as_str().to_string(),
                name: format!("simulated battery {index}"),
                public_key_hex: None,
                cert_fingerprint_sha256: None,
                mqtt_credential_hash: None,
                capacity_wh: spec.capacity_wh,
                max_charge_w: spec.max_charge_w,
                max_discharge_w: spec.max_discharge_w,
                registered_at_ns: now_ns,
            })
            .await?;
        }
        transports.push((device, transport));
    }
    let orchestrator = Orchestrator::builder(
        OrchestratorConfig::default(),
        EventingStore::new(db.clone(), server.state.fleet_events.clone()),
        signer,
        Arc::clone(&clock),
    )
    .link(TransportKind::Mqtt, mqtt_link)
    .link(TransportKind::Quic, quic_link)
    .start()
    .map_err(|e| start_error("orchestrator")(&e))?;
    // The API's `POST /api/v1/schedules` and roll-out status go through it too.
    let _ = server.state.orchestrator.set(orchestrator.clone());
    for (device, transport) in &transports {
        orchestrator
            .register_device(device, *transport)
            .map_err(|e| start_error("register device")(&e))?;
    }
    let fleet = spawn_simulated_fleet(fleet_config)
        .await
        .map_err(|e| start_error("simulated fleet")(&e))?;
    // Each QUIC agent's certificate goes on its device row, so an operator can revoke
    // it (`DELETE /api/v1/devices/{id}/certificate`) and the endpoint then refuses it.
    for (device, fingerprint) in fleet.quic_certificate_fingerprints() {
        db.set_device_cert_fingerprint(device.as_str(), fingerprint)
            .await?;
    }
    let now_s = clock.now().nanos() / 1_000_000_000;
    let operator_token = server
        .issue_token(&super::auth::Claims {
            sub: "operator".into(),
            role: super::auth::Role::Operator,
            accounts: Vec::new(),
            iat: now_s,
            exp: now_s + 24 * 3600,
        })
        .map_err(|e| start_error("operator token")(&e))?;
    on_ready(&format!("http://{}", server.http_addr), &operator_token);

    let report = replay_days(
        &config,
        &series,
        &spec,
        &transports,
        &orchestrator,
        &db,
        clock.as_ref(),
    )
    .await;

    let counters = fleet.shutdown().await;
    tracing::info!(?counters, "simulated fleet stopped");
    orchestrator.shutdown().await;
    server.stop().await?;
    report
}

/// Whether the process was asked to stop (SIGINT or SIGTERM), as a flag that stays set:
/// one listener for the whole run, so a signal that arrives while a day is being
/// planned is not missed.
fn stop_requested() -> (
    tokio::sync::watch::Receiver<bool>,
    tokio::task::JoinHandle<()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let listener = tokio::spawn(async move {
        match super::stop_signal().await {
            Ok(()) => {
                let _ = stop_tx.send(true);
            }
            Err(error) => tracing::warn!(%error, "no stop-signal handler: stop with --run-for-s"),
        }
    });
    (stop_rx, listener)
}

async fn wait_or_stop(
    duration: Duration,
    deadline: Option<tokio::time::Instant>,
    stop_requested: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    if *stop_requested.borrow() {
        return true;
    }
    let sleep = tokio::time::sleep(duration);
    let stop_at = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = sleep => false,
        _ = stop_at => true,
        // A listener that could not install its handler drops the sender: that
        // disables this branch instead of stopping.
        Ok(_) = stop_requested.wait_for(|stop| *stop) => true,
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn replay_days(
    config: &UpConfig,
    series: &PriceSeries,
    spec: &BatterySpec,
    devices: &[(DeviceId, TransportKind)],
    orchestrator: &Orchestrator<EventingStore<Db>>,
    db: &Db,
    clock: &dyn Clock,
) -> Result<UpReport, UpError> {
    let deadline = config
        .run_for
        .map(|run_for| tokio::time::Instant::now() + run_for);
    let (mut stop_requested, stop_listener) = stop_requested();
    // Ends the listener on every return path.
    let _stop_listener = AbortOnDrop(stop_listener);
    let hour_s = i64::from(config.hour_real_s.max(1));
    let mut fleet: Vec<FleetDevice> = devices
        .iter()
        .map(|_| FleetDevice {
            spec: spec.clone(),
            soc_wh: spec.capacity_wh / 2,
        })
        .collect();
    let mut report = UpReport::default();
    let mut forecaster = NaiveForecaster;
    // Replay the last weeks of the file: the start of the standard test period.
    let first_day = series.n_days().saturating_sub(728).max(7);
    let model = register_forecast_model(db, config, series, first_day, clock).await?;
    let day_ahead_rules = config
        .server
        .day_ahead_market_rules()
        .map_err(|e| start_error("day-ahead rules")(&e))?;
    let bid_config = BidConfig {
        rules: day_ahead_rules.clone(),
        period_s: MARKET_PERIOD_S,
        headroom: None,
        planned_limits: PlannedLimits::RoundTrip,
        imbalance_penalty_eur_per_mwh: config.imbalance_penalty_eur_per_mwh.to_f64().unwrap_or(0.0),
    };
    let risk_limits = fleet_risk_limits(&day_ahead_rules, config.max_position_mw)?;
    // The fleet plans within its limit (so each LP re-plans its round trips at the
    // capped power); the risk book then trims only lot rounding.
    let position_max_w = risk_limits.map(|limits| {
        limits
            .max_net_position
            .0
            .saturating_mul(day_ahead_rules.lot_kw)
            .saturating_mul(1_000)
    });
    let mut market = ReplayMarket::new(
        FLEET_ACCOUNT,
        REPLAY_MARKET_ACCOUNT,
        AuctionConfig::with_rules(day_ahead_rules),
    )
    .map_err(|e| start_error("day-ahead auction")(&e))?;
    let mut intraday = config
        .intraday
        .clone()
        .map(|terms| ReplayIntraday::new(FLEET_ACCOUNT, REPLAY_MARKET_ACCOUNT, terms))
        .transpose()
        .map_err(|e| start_error("intraday close-out")(&e))?;
    let mut day = first_day;
    let mut version = clock.now().nanos().max(1) as u64 / 1_000_000_000;
    loop {
        if day >= series.n_days() {
            day = first_day;
        }
        let forecast = forecaster
            .forecast_day(series, day)
            .map_err(|e| start_error("forecast")(&e))?;
        // The fleet's plan on given prices, within the risk limit when there is one.
        let plan_on = |prices: &[f64]| match position_max_w {
            Some(max_w) => plan_fleet_within(&fleet, prices, &PlanConfig::hourly(), max_w),
            None => plan_fleet(&fleet, prices, &PlanConfig::hourly()),
        };
        let plan = plan_on(&forecast).map_err(|e| start_error("fleet plan")(&e))?;
        let realised = series.day_prices(day);
        let alternatives: Vec<Vec<f64>> = match config.family_bids {
            Some(n) => past_error_scenarios(&mut forecaster, series, day, &forecast, n),
            None => Vec::new(),
        };
        let mut bids = FleetBids::new(&bid_config, risk_limits);
        if config.family_bids.is_some() {
            bids.families = Some(FamilyDay {
                lambda_eur_per_mwh: stored_energy_value_eur_per_mwh(spec, &forecast),
                alternatives: &alternatives,
            });
        }
        let awarded_w = bid_and_clear(&plan, &forecast, realised, bids, &mut market)?;
        let CommittedAward {
            position_w: committed_w,
            allocation,
            closing_premium_eur,
            closed_mwh,
        } = commit_award(&fleet, &awarded_w, realised, intraday.as_mut())?;
        // The bound: the same fleet, starting SoC and risk limit, planned on the
        // clearing prices (a bound that ignored the limit would not be reachable).
        let perfect_foresight = plan_on(series.day_prices_f64(day))
            .map_err(|e| start_error("perfect-foresight plan")(&e))?;
        // The position's value at the clearing prices, plus what closing trades paid
        // beyond them (the spread).
        let trading_eur: Vec<rust_decimal::Decimal> =
            dayahead::trading_eur(&committed_w, realised, MARKET_PERIOD_S)
                .into_iter()
                .zip(&closing_premium_eur)
                .map(|(trading, premium)| trading + premium)
                .collect();
        let bound_eur =
            dayahead::net_of_wear_eur(spec, &perfect_foresight.net_w, realised, MARKET_PERIOD_S);
        // Revenue of the plan at the realised prices, rounded to cents per period (the
        // analytics row is the sum of the day-ahead rows).
        let revenue_cents: i64 = trading_eur.iter().copied().map(dayahead::cents).sum();
        let start_soc_wh: Vec<f64> = fleet.iter().map(|device| device.soc_wh as f64).collect();

        let now = clock.now();
        let valid_from = UtcNanos(now.nanos() + 2 * 1_000_000_000);
        version += 1;
        // An operator may have issued newer versions through `POST /api/v1/schedules`:
        // each device gets a version above its newest, or the roll-out would be stale.
        let version_of = |device: &DeviceId| {
            orchestrator
                .device_status(device)
                .and_then(|status| status.latest)
                .map_or(version, |(latest, _)| version.max(latest.saturating_add(1)))
        };
        let schedules: Vec<Schedule> = devices
            .iter()
            .enumerate()
            .map(|(index, (device, _))| Schedule {
                device: device.clone(),
                schedule_id: ScheduleId(u128::from(version)),
                version: version_of(device),
                issued_at: now,
                valid_from,
                valid_until: valid_from.plus_seconds(24 * hour_s),
                randomize_start_s: 0,
                periods: allocation.setpoints_w[index]
                    .iter()
                    .enumerate()
                    .map(|(hour, target_w)| SchedulePeriod {
                        offset_s: u32::try_from(hour as i64 * hour_s).unwrap_or(u32::MAX),
                        target_w: *target_w,
                        ramp_s: 0,
                    })
                    .collect(),
                fallback: Fallback::Idle,
            })
            .collect();
        let n = schedules.len() as u64;
        let versions: Vec<u64> = schedules.iter().map(|schedule| schedule.version).collect();
        let mut period_rows: Vec<DayAheadPeriodRow> = (0..committed_w.len())
            .map(|period| DayAheadPeriodRow {
                period_start_ns: valid_from.nanos() + period as i64 * hour_s * 1_000_000_000,
                period_len_s: u32::try_from(hour_s).unwrap_or(u32::MAX),
                delivery_day: series.date(day).to_string(),
                delivery_hour: u8::try_from(period).unwrap_or(u8::MAX),
                clearing_price_cents_per_mwh: dayahead::cents(realised[period]),
                forecast_price_cents_per_mwh: dayahead::forecast_cents(forecast[period]),
                model_name: model.0.clone(),
                model_version: model.1,
                committed_w: committed_w[period],
                planned_w: Some(plan.net_w[period]),
                perfect_foresight_w: perfect_foresight.net_w[period],
                trading_cents: dayahead::cents(trading_eur[period]),
                perfect_foresight_cents: dayahead::cents(bound_eur[period]),
                delivered_w: None,
                imbalance_cents: None,
                wear_cents: None,
                updated_at_ns: now.nanos(),
            })
            .collect();
        db.upsert_dayahead_periods(&period_rows).await?;
        let rollout = orchestrator
            .roll_out_with_deadline(schedules, Some(valid_from.plus_seconds(24 * hour_s)))
            .await
            .map_err(|e| start_error("roll-out")(&e))?;
        db.upsert_aggregates(&[AggregateRow {
            period_start_ns: valid_from.nanos(),
            period_len_s: u32::try_from(24 * hour_s).unwrap_or(u32::MAX),
            device_id: None,
            charged_wh: committed_w.iter().filter(|w| **w < 0).map(|w| -w).sum(),
            discharged_wh: committed_w.iter().filter(|w| **w > 0).sum(),
            n_schedules: n,
            n_acks_completed: 0,
            n_acks_failed: 0,
            revenue_cents,
            updated_at_ns: now.nanos(),
        }])
        .await?;
        report.n_days += 1;
        report.n_issued += n;
        report.revenue_cents += revenue_cents;
        let mwh = |net_w: &[i64]| net_w.iter().map(|w| w.unsigned_abs()).sum::<u64>() as f64 / 1e6;
        println!(
            "day {} ({}): planned {:.1} MWh, awarded {:.1} MWh, issued to {n} devices, expected revenue {:.2} EUR",
            report.n_days,
            series.date(day),
            mwh(&plan.net_w),
            mwh(&awarded_w),
            revenue_cents as f64 / 100.0
        );
        if intraday.is_some() {
            println!(
                "  intraday close-out: {closed_mwh} MWh traded back, committed {:.1} MWh",
                mwh(&committed_w)
            );
        }
        let stop = wait_or_stop(
            Duration::from_secs(24 * hour_s as u64),
            deadline,
            &mut stop_requested,
        )
        .await;
        if let Some(status) = orchestrator.rollout_status(rollout) {
            report.n_acked += status.n_acked;
            println!(
                "  roll-out: {}/{} acked, success rate {:?}",
                status.n_acked, status.n_devices, status.success_rate
            );
        }
        if stop {
            // The day was cut short: its periods stay unsettled (NULL), not guessed.
            return Ok(report);
        }
        // The day is over: devices that took their schedule delivered it (as far as
        // their physics allows), the others idled; settle against the commitment.
        let took_schedule: Vec<bool> = devices
            .iter()
            .zip(&versions)
            .map(|((device, _), version)| {
                orchestrator
                    .version_state(device, *version)
                    .is_some_and(took_schedule)
            })
            .collect();
        let delivery = dayahead::deliver_day(
            &CommittedDay {
                spec,
                start_soc_wh: &start_soc_wh,
                setpoints_w: &allocation.setpoints_w,
                committed_w: &committed_w,
                clearing_prices: realised,
                period_s: MARKET_PERIOD_S,
            },
            &took_schedule,
            config.imbalance_penalty_eur_per_mwh,
        )
        .map_err(|e| start_error("day-ahead settlement")(&e))?;
        let settled_at = clock.now().nanos();
        for (period, row) in period_rows.iter_mut().enumerate() {
            row.delivered_w = Some(delivery.delivered_w[period]);
            row.imbalance_cents = Some(dayahead::cents(delivery.imbalance_eur[period]));
            row.wear_cents = Some(dayahead::cents(delivery.wear_eur[period]));
            row.updated_at_ns = settled_at;
        }
        db.upsert_dayahead_periods(&period_rows).await?;
        let n_took = took_schedule.iter().filter(|took| **took).count();
        println!(
            "  settled: {n_took}/{} devices delivered, imbalance {:.2} EUR, wear {:.2} EUR",
            devices.len(),
            delivery.imbalance_eur.iter().sum::<rust_decimal::Decimal>(),
            delivery.wear_eur.iter().sum::<rust_decimal::Decimal>(),
        );
        for (device, end_soc) in fleet.iter_mut().zip(&delivery.end_soc_wh) {
            device.soc_wh = end_soc.round() as i64;
        }
        day += 1;
    }
}

/// Length of the replayed market's delivery periods (hourly day-ahead products).
const MARKET_PERIOD_S: i64 = 3600;

/// The fleet's account in the replayed day-ahead auction.
const FLEET_ACCOUNT: AccountId = AccountId(1);

/// The replayed market: buys and sells any quantity at the historical price.
const REPLAY_MARKET_ACCOUNT: AccountId = AccountId(2);

/// The fleet's risk limits under `rules`: `max_position_mw` per hour either way, each
/// step at most that, prices inside the market's limits; `None` without a limit.
///
/// # Errors
/// [`UpError::Start`] if the limit is not a positive whole number of lots.
fn fleet_risk_limits(
    rules: &voltex_market::MarketRules,
    max_position_mw: Option<rust_decimal::Decimal>,
) -> Result<Option<RiskLimits>, UpError> {
    max_position_mw
        .map(|mw| {
            let lots = rules
                .qty_from_mw(mw)
                .map_err(|e| start_error("--max-position-mw")(&e))?;
            Ok(RiskLimits {
                max_net_position: lots,
                max_order_qty: lots,
                price_floor: rules.price_min,
                price_cap: rules.price_max,
            })
        })
        .transpose()
}

/// How the fleet's bids are built and checked.
struct FleetBids<'a> {
    config: &'a BidConfig,
    /// The day's risk book (limits set for [`FLEET_ACCOUNT`]); `None`: no limits.
    risk: Option<RiskBook>,
    /// `Some`: each group's day is bid as block families instead of curves.
    families: Option<FamilyDay<'a>>,
}

/// A day bid as linked block families ([`UpConfig::family_bids`]).
struct FamilyDay<'a> {
    /// The day's value of stored energy, EUR/MWh, which prices the families: the
    /// surplus the auction tests is the day's cash plus this value times the energy the
    /// day leaves stored (or minus it for the energy it takes out).
    lambda_eur_per_mwh: f64,
    /// Other price scenarios of the day, whose plans (made as the fleet's plan is,
    /// hourly and ending free) are offered beside the plan in one exclusive group per
    /// group of devices. (Planning to end on the value of stored energy instead lost
    /// about 11 % over the README's 74 replayed DE days, with either bid style.)
    alternatives: &'a [Vec<f64>],
}

/// The day's `forecast` moved by each of the latest `alternatives − 1` days' errors of
/// `forecaster` (newest first). Those days' prices were published before this day's
/// auction; a day the forecaster cannot forecast (too early in the file) is skipped.
fn past_error_scenarios(
    forecaster: &mut impl Forecaster,
    series: &PriceSeries,
    day: usize,
    forecast: &[f64],
    alternatives: usize,
) -> Vec<Vec<f64>> {
    (1..alternatives)
        .filter_map(|back| {
            let past_day = day.checked_sub(back)?;
            let past_forecast = forecaster.forecast_day(series, past_day).ok()?;
            Some(scenario_with_error(
                forecast,
                series.day_prices_f64(past_day),
                &past_forecast,
            ))
        })
        .collect()
}

impl FleetBids<'_> {
    /// One day's bids under `config`, checked against `limits` if any (a fresh book:
    /// exposure counts per delivery hour of this day).
    fn new(config: &BidConfig, limits: Option<RiskLimits>) -> FleetBids<'_> {
        let risk = limits.map(|limits| {
            let mut risk = RiskBook::new();
            risk.set_limits(FLEET_ACCOUNT, limits);
            risk
        });
        FleetBids {
            config,
            risk,
            families: None,
        }
    }
}

/// Bids every group's plan as day-ahead curves at its marginal values into the call
/// auction against the replayed prices; returns the fleet's awarded net power per
/// period, W (positive = sell). Under a risk limit each hour's curve is trimmed to it
/// (`RiskBook::fit_curve`: the least eager steps go first, logged); an hour it refuses
/// outright (a price outside the collar) is not bid. The groups' curves count together
/// against the limits, so a later group gets the headroom the earlier ones left.
fn bid_and_clear(
    plan: &FleetPlan,
    forecast: &[f64],
    realised: &[rust_decimal::Decimal],
    mut bids: FleetBids<'_>,
    market: &mut ReplayMarket,
) -> Result<Vec<i64>, UpError> {
    let mut awarded_w = vec![0_i64; realised.len()];
    for (group, group_plan) in plan.groups.iter().zip(&plan.plans) {
        if let Some(family) = &bids.families {
            // Each group planned within its share of the risk limit (its aggregate is
            // capped), and a family's lots never exceed its battery's power, so the
            // groups' families together stay within the limit whichever are accepted.
            let day = day_ahead_families(
                &group.aggregate,
                group_plan,
                family.alternatives,
                |prices| {
                    plan_battery(
                        &group.aggregate,
                        group.start_soc_wh,
                        prices,
                        &PlanConfig::hourly(),
                    )
                },
                family.lambda_eur_per_mwh,
                FamilyOwner {
                    participant: FLEET_ACCOUNT,
                    group: ExclusiveGroupId(0),
                    auction: market.config(),
                },
            )
            .map_err(|e| start_error("day-ahead families")(&e))?;
            let accepted_w = market
                .clear_families(&day.families, realised)
                .map_err(|e| start_error("day-ahead auction")(&e))?;
            for (total, w) in awarded_w.iter_mut().zip(accepted_w) {
                *total += w;
            }
            continue;
        }
        let mut curves = day_ahead_curves(&group.aggregate, group_plan, forecast, bids.config)
            .map_err(|e| start_error("day-ahead bids")(&e))?;
        if let Some(risk) = bids.risk.as_mut() {
            for curve in &mut curves {
                match risk.fit_curve(FLEET_ACCOUNT, curve) {
                    Ok(trimmed) => {
                        if trimmed.was_cut() {
                            tracing::info!(
                                hour = curve.period,
                                buy_cut_lots = trimmed.buy_cut.0,
                                sell_cut_lots = trimmed.sell_cut.0,
                                "day-ahead bid trimmed to the fleet's risk limits"
                            );
                        }
                        *curve = trimmed.curve;
                    }
                    Err(reason) => {
                        tracing::warn!(hour = curve.period, %reason, "day-ahead bid refused by the fleet's risk limits");
                        *curve = PeriodCurve {
                            period: curve.period,
                            ..PeriodCurve::default()
                        };
                    }
                }
            }
        }
        let accepted_w = market
            .clear_day(&curves, realised)
            .map_err(|e| start_error("day-ahead auction")(&e))?;
        for (total, w) in awarded_w.iter_mut().zip(accepted_w) {
            *total += w;
        }
    }
    Ok(awarded_w)
}

/// A day's award made a commitment: the position the fleet is held to and its
/// allocation to devices.
struct CommittedAward {
    /// The award after the intraday close-out (the award itself without one), W per
    /// period (positive = sell).
    position_w: Vec<i64>,
    /// The position split into device setpoints.
    allocation: Allocation,
    /// What the closing trades paid beyond the clearing prices, EUR per period (zero
    /// where nothing was closed; negative: the spread).
    closing_premium_eur: Vec<rust_decimal::Decimal>,
    /// Energy traded back on the intraday book, MWh.
    closed_mwh: rust_decimal::Decimal,
}

/// Allocates `awarded_w` to the fleet and, with an intraday market, closes the
/// allocation's shortfall there (whole lots, rounded down, so the fleet's delivery path
/// is the one the shortfall was computed on) and allocates the position left.
fn commit_award(
    fleet: &[FleetDevice],
    awarded_w: &[i64],
    realised: &[rust_decimal::Decimal],
    intraday: Option<&mut ReplayIntraday>,
) -> Result<CommittedAward, UpError> {
    let allocate_w = |net_w: &[i64]| {
        allocate(
            fleet,
            &Commitment {
                period_s: MARKET_PERIOD_S,
                net_w: net_w.to_vec(),
            },
        )
        .map_err(|e| start_error("allocation")(&e))
    };
    let allocation = allocate_w(awarded_w)?;
    let untouched = |allocation| CommittedAward {
        position_w: awarded_w.to_vec(),
        allocation,
        closing_premium_eur: vec![rust_decimal::Decimal::ZERO; awarded_w.len()],
        closed_mwh: rust_decimal::Decimal::ZERO,
    };
    let Some(intraday) = intraday else {
        return Ok(untouched(allocation));
    };
    if allocation.shortfall_w.iter().all(|w| *w == 0) {
        return Ok(untouched(allocation));
    }
    let out = intraday
        .close_shortfall(awarded_w, &allocation.shortfall_w, realised)
        .map_err(|e| start_error("intraday close-out")(&e))?;
    if out.traded_lots() == 0 {
        return Ok(untouched(allocation));
    }
    let closed = allocate_w(&out.position_w)?;
    Ok(CommittedAward {
        closing_premium_eur: out.cash_vs_replay_per_period_eur(realised, MARKET_PERIOD_S),
        closed_mwh: out.traded_mwh(MARKET_PERIOD_S),
        position_w: out.position_w,
        allocation: closed,
    })
}

/// Name under which the day-ahead cycle's forecaster is recorded in `ml_models`.
const FORECAST_MODEL_NAME: &str = "dayahead-naive";

/// Days before the replay start on which the recorded model is validated.
const VALIDATION_DAYS: usize = 28;

/// A schedule state in which the device has verified its schedule and will execute
/// it (or has).
fn took_schedule(state: DeliveryState) -> bool {
    matches!(
        state,
        DeliveryState::Accepted | DeliveryState::Started | DeliveryState::Completed
    )
}

/// Records the cycle's forecaster in `ml_models` (the model registry) with its
/// validation metrics on the weeks before the replay (a new version only if these
/// differ from the newest recorded); returns its name and version.
async fn register_forecast_model(
    db: &Db,
    config: &UpConfig,
    series: &PriceSeries,
    first_day: usize,
    clock: &dyn Clock,
) -> Result<(String, u32), UpError> {
    use voltex_engine::forecast::metrics::{mae, smape_pct};
    let file = config.prices_csv.file_name().map_or_else(
        || config.prices_csv.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    let parameters = serde_json::json!({
        "rule": "epftoolbox naive: Monday, Saturday and Sunday from a week before, Tuesday to Friday from the day before",
        "prices": file,
    });
    let validation = first_day.saturating_sub(VALIDATION_DAYS).max(7)..first_day;
    let forecast =
        voltex_engine::forecast::forecast_days(&mut NaiveForecaster, series, validation.clone())
            .map_err(|e| start_error("validation forecast")(&e))?;
    let actual: Vec<f64> = validation
        .clone()
        .flat_map(|day| series.day_prices_f64(day).iter().copied())
        .collect();
    let metrics = match (mae(&actual, &forecast), smape_pct(&actual, &forecast)) {
        (Ok(mae), Ok(smape)) => serde_json::json!({
            "mae_eur_per_mwh": mae,
            "smape_pct": smape,
            "validation_days": validation.len(),
            "validation_from": series.date(validation.start).to_string(),
        }),
        _ => serde_json::json!({ "validation_days": 0 }),
    };
    let model = db
        .record_model_version(&NewMlModel {
            name: FORECAST_MODEL_NAME.to_string(),
            version: 0,
            kind: "naive".to_string(),
            trained_at_ns: clock.now().nanos(),
            parameters,
            metrics,
        })
        .await?;
    Ok((model.name, model.version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use voltex_market::MarketRules;

    #[tokio::test]
    async fn the_quic_endpoint_counters_reach_the_metrics() {
        let ca = certs::init_ca("metrics test CA").unwrap();
        let server = certs::issue_server(&ca, &["localhost".into()]).unwrap();
        let link = quic_platform(QuicPlatformConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            ca.cert_pem.clone(),
            server.cert_pem,
            server.key_pem,
        ))
        .await
        .unwrap();
        // A device from another CA: its handshake is refused and counted.
        let other_ca = certs::init_ca("another CA").unwrap();
        let issued =
            certs::issue_device(&other_ca, &DeviceId::new("dev-foreign").unwrap()).unwrap();
        let _device = voltex_dispatch::transport::quic_device(
            voltex_dispatch::transport::QuicDeviceConfig::new(
                link.local_addr().unwrap(),
                "localhost",
                ca.cert_pem.clone(),
                issued.cert_pem,
                issued.key_pem,
            ),
        )
        .await
        .unwrap();
        let stats = link.stats_handle();
        tokio::time::timeout(Duration::from_secs(20), async {
            while stats.stats().handshakes_refused == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the foreign certificate is refused");

        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let rendered = recorder.handle();
        metrics::with_local_recorder(&recorder, || publish_quic_metrics(&stats));
        let text = rendered.render();
        let value = |name: &str| {
            text.lines()
                .find_map(|line| {
                    line.strip_prefix(name)?
                        .strip_prefix(' ')?
                        .parse::<f64>()
                        .ok()
                })
                .unwrap_or_else(|| panic!("{name} is exported: {text}"))
        };
        assert!(
            value("voltex_quic_handshakes_refused_total") >= 1.0,
            "{text}"
        );
        assert_eq!(
            value("voltex_quic_handshakes_deferred_total"),
            0.0,
            "{text}"
        );
        assert_eq!(value("voltex_quic_connections"), 0.0, "{text}");
        assert_eq!(
            value("voltex_quic_handshakes_in_progress"),
            stats.handshakes_in_progress() as f64
        );
    }

    /// 1,000 devices of 5 kW / 10 kWh (the simulated fleet's battery), half full: 5 MW,
    /// 50 lots.
    fn fleet() -> Vec<FleetDevice> {
        let spec = BatterySpec::symmetric(5_000, 10_000, 0.9, Decimal::from(2));
        vec![
            FleetDevice {
                spec,
                soc_wh: 5_000,
            };
            1_000
        ]
    }

    fn fleet_plan(forecast: &[f64]) -> FleetPlan {
        plan_fleet(&fleet(), forecast, &PlanConfig::hourly()).unwrap()
    }

    /// Cheap night and midday hours, an expensive evening.
    fn forecast() -> Vec<f64> {
        (0..24)
            .map(|hour| match hour {
                0..=4 | 12..=13 => 20.0,
                18..=20 => 150.0,
                _ => 60.0,
            })
            .collect()
    }

    fn setup() -> (BidConfig, ReplayMarket) {
        let rules = MarketRules::day_ahead_default();
        let bid_config = BidConfig {
            rules: rules.clone(),
            period_s: MARKET_PERIOD_S,
            headroom: None,
            planned_limits: PlannedLimits::RoundTrip,
            imbalance_penalty_eur_per_mwh: 20.0,
        };
        let market = ReplayMarket::new(
            FLEET_ACCOUNT,
            REPLAY_MARKET_ACCOUNT,
            AuctionConfig::with_rules(rules),
        )
        .unwrap();
        (bid_config, market)
    }

    #[test]
    fn the_award_is_the_plan_to_the_nearest_lot_when_prices_match_the_forecast() {
        let forecast = forecast();
        let plan = fleet_plan(&forecast);
        let (bid_config, mut market) = setup();
        let realised: Vec<Decimal> = forecast
            .iter()
            .map(|price| Decimal::try_from(*price).unwrap())
            .collect();
        let bids = FleetBids::new(&bid_config, None);
        let awarded = bid_and_clear(&plan, &forecast, &realised, bids, &mut market).unwrap();
        let lot_w = 100_000;
        assert!(awarded.iter().any(|w| *w < 0), "buys at night: {awarded:?}");
        assert!(
            awarded.iter().any(|w| *w > 0),
            "sells in the evening: {awarded:?}"
        );
        for (hour, (award, planned)) in awarded.iter().zip(&plan.net_w).enumerate() {
            assert_eq!(award % lot_w, 0, "hour {hour}: whole lots");
            assert!(
                award.signum() == planned.signum() || *award == 0,
                "hour {hour}: awarded {award} W against a plan of {planned} W"
            );
            assert!(
                (award - planned).abs() <= lot_w / 2,
                "hour {hour}: the plan to the nearest lot, awarded {award} W against {planned} W"
            );
            assert!(
                award.abs() <= 5_000_000,
                "hour {hour}: within the fleet's 5 MW"
            );
        }
    }

    /// The award of the fleet planned on [`forecast`] when the day clears at `real`,
    /// under a risk limit of `max_position_mw` if given.
    fn award_at(real: &[Decimal], max_position_mw: Option<&str>) -> Result<Vec<i64>, UpError> {
        let forecast = forecast();
        let plan = fleet_plan(&forecast);
        let (bid_config, mut market) = setup();
        let limits = fleet_risk_limits(
            &bid_config.rules,
            max_position_mw.map(|mw| mw.parse().unwrap()),
        )?;
        bid_and_clear(
            &plan,
            &forecast,
            real,
            FleetBids::new(&bid_config, limits),
            &mut market,
        )
    }

    #[test]
    fn hours_beyond_the_fleets_risk_limit_are_bid_up_to_it() {
        // At -100 EUR/MWh every planned purchase clears (see below); with a 2 MW limit
        // the 5 MW hours are trimmed to 2 MW, the hours within it clear as before.
        let cheap = [Decimal::from(-100); 24];
        let unlimited = award_at(&cheap, None).unwrap();
        let limited = award_at(&cheap, Some("2")).unwrap();
        assert!(
            unlimited.iter().any(|w| w.abs() > 2_000_000),
            "{unlimited:?}"
        );
        for (hour, (free, capped)) in unlimited.iter().zip(&limited).enumerate() {
            let expected = free.signum() * free.abs().min(2_000_000);
            assert_eq!(*capped, expected, "hour {hour}");
        }
        for bad in ["0", "-1", "0.05"] {
            let error = award_at(&cheap, Some(bad)).unwrap_err();
            assert!(
                error.to_string().contains("--max-position-mw"),
                "{bad}: {error}"
            );
        }
    }

    /// The award of the fleet's day bid as block families (planned on [`forecast`], with
    /// `alternatives`, within a risk limit of `max_w` if given) when the day clears at
    /// `real`; and the plan bid.
    fn family_award_at(
        real: &[Decimal],
        alternatives: &[Vec<f64>],
        max_w: Option<i64>,
    ) -> (Vec<i64>, FleetPlan) {
        let forecast = forecast();
        let spec = fleet()[0].spec.clone();
        let plan_config = PlanConfig::hourly();
        let plan = match max_w {
            Some(max_w) => plan_fleet_within(&fleet(), &forecast, &plan_config, max_w),
            None => plan_fleet(&fleet(), &forecast, &plan_config),
        }
        .unwrap();
        let (bid_config, mut market) = setup();
        let mut bids = FleetBids::new(&bid_config, None);
        bids.families = Some(FamilyDay {
            lambda_eur_per_mwh: stored_energy_value_eur_per_mwh(&spec, &forecast),
            alternatives,
        });
        let awarded = bid_and_clear(&plan, &forecast, real, bids, &mut market).unwrap();
        (awarded, plan)
    }

    fn decimals(prices: &[f64]) -> Vec<Decimal> {
        prices
            .iter()
            .map(|price| Decimal::try_from(*price).unwrap().round_dp(2))
            .collect()
    }

    #[test]
    fn a_family_bid_day_clears_whole_or_not_at_all() {
        let forecast = forecast();
        let lot_w = 100_000;
        // At the forecast prices the day pays: the award is the plan in whole lots,
        // buying and selling.
        let (whole, plan) = family_award_at(&decimals(&forecast), &[], None);
        assert!(
            whole.iter().any(|w| *w < 0) && whole.iter().any(|w| *w > 0),
            "{whole:?}"
        );
        for (hour, (award, planned)) in whole.iter().zip(&plan.net_w).enumerate() {
            assert_eq!(award % lot_w, 0, "hour {hour}: whole lots");
            assert!(
                (award - planned).abs() < lot_w,
                "hour {hour}: {award} W vs plan {planned} W"
            );
        }
        // The whole day shifted up or down by 100 EUR/MWh: the day's surplus moves by
        // 100 × (sold − bought MWh) one way and by as much the other way, so at least
        // one shift keeps it paying; each clears whole or not at all. Hour by hour,
        // curves would win the sales without the purchases (or the reverse).
        let shifted = |by: f64| decimals(&forecast.iter().map(|p| p + by).collect::<Vec<_>>());
        let (up, _) = family_award_at(&shifted(100.0), &[], None);
        let (down, _) = family_award_at(&shifted(-100.0), &[], None);
        for award in [&up, &down] {
            assert!(
                *award == whole || award.iter().all(|w| *w == 0),
                "{award:?}"
            );
        }
        assert!(up == whole || down == whole, "up {up:?}, down {down:?}");
        let curves_up = award_at(&shifted(100.0), None).unwrap();
        assert!(curves_up.iter().all(|w| *w >= 0), "{curves_up:?}");
        // A flat day at the value of stored energy itself: every purchase costs more
        // than its buy limit (λ·η_c − κ) and every sale earns less than its sell limit
        // (λ/η_d + κ), so the family is refused and nothing clears.
        let spec = fleet()[0].spec.clone();
        let lambda = stored_energy_value_eur_per_mwh(&spec, &forecast);
        let (flat, _) = family_award_at(&decimals(&[lambda; 24]), &[], None);
        assert!(flat.iter().all(|w| *w == 0), "{flat:?}");
    }

    #[test]
    fn family_bids_planned_within_the_risk_limit_clear_within_it() {
        // Unlimited, the fleet trades its full 5 MW in some hours; planned within 2 MW
        // (as `voltex up --max-position-mw 2` does), its families, the alternative's
        // too, never trade more than 2 MW in any hour, whichever clears.
        let forecast = forecast();
        let (free, _) = family_award_at(&decimals(&forecast), &[], None);
        assert!(free.iter().any(|w| w.abs() > 2_000_000), "{free:?}");
        let swapped: Vec<f64> = forecast.iter().rev().copied().collect();
        for real in [&forecast, &swapped] {
            let (capped, plan) = family_award_at(
                &decimals(real),
                std::slice::from_ref(&swapped),
                Some(2_000_000),
            );
            assert!(capped.iter().any(|w| *w != 0), "{capped:?}");
            assert!(capped.iter().all(|w| w.abs() <= 2_000_000), "{capped:?}");
            assert!(plan.net_w.iter().all(|w| w.abs() <= 2_000_000));
        }
    }

    #[test]
    fn of_alternative_family_days_the_one_that_pays_best_clears() {
        // The alternative scenario swaps the day: expensive night, cheap evening. If the
        // day clears at those prices, the forecast's plan (charge at night, sell in the
        // evening) loses and the alternative's plan clears instead, whole.
        let swapped: Vec<f64> = forecast()
            .iter()
            .map(|p| match *p {
                20.0 => 150.0,
                150.0 => 20.0,
                other => other,
            })
            .collect();
        let (awarded, _) =
            family_award_at(&decimals(&swapped), std::slice::from_ref(&swapped), None);
        assert!(
            awarded[18..=20].iter().any(|w| *w < 0),
            "buys in the evening: {awarded:?}"
        );
        assert!(awarded.iter().any(|w| *w > 0), "sells: {awarded:?}");
        for (hour, w) in awarded.iter().enumerate() {
            assert!(
                *w <= 0 || swapped[hour] >= 60.0,
                "hour {hour}: sells at 20: {awarded:?}"
            );
            assert!(
                *w >= 0 || swapped[hour] <= 60.0,
                "hour {hour}: buys at 150: {awarded:?}"
            );
        }
        // Without the alternative nothing pays at those prices.
        let (alone, _) = family_award_at(&decimals(&swapped), &[], None);
        assert!(alone.iter().all(|w| *w == 0), "{alone:?}");
    }

    #[test]
    fn the_fleet_buys_below_and_sells_above_its_value_of_energy() {
        // The day clears at 3,000 EUR/MWh everywhere: above every buy limit, so the
        // planned charging is not bought, and the planned selling is sold.
        let awarded = award_at(&[Decimal::from(3_000); 24], None).unwrap();
        assert!(awarded.iter().all(|w| *w >= 0), "{awarded:?}");
        assert!(awarded.iter().any(|w| *w > 0), "{awarded:?}");
        // And at -100 EUR/MWh everywhere nothing is sold and the charging is bought.
        let awarded = award_at(&[Decimal::from(-100); 24], None).unwrap();
        assert!(awarded.iter().all(|w| *w <= 0), "{awarded:?}");
        assert!(awarded.iter().any(|w| *w < 0), "{awarded:?}");
    }

    #[test]
    fn the_intraday_close_out_trades_back_what_the_fleet_cannot_deliver() {
        let lot_w = 100_000;
        let fleet = fleet();
        let intraday_terms =
            IntradayConfig::with_depth_mw(MarketRules::intraday_default(), Decimal::TWO, None)
                .unwrap();
        let mut intraday =
            ReplayIntraday::new(FLEET_ACCOUNT, REPLAY_MARKET_ACCOUNT, intraday_terms).unwrap();
        // At 3,000 EUR/MWh only the planned sales clear: more than the half-full fleet
        // holds.
        let real = [Decimal::from(3_000); 24];
        let awarded = award_at(&real, None).unwrap();
        let left = commit_award(&fleet, &awarded, &real, None).unwrap();
        assert_eq!(left.position_w, awarded);
        assert!(
            left.allocation.shortfall_w.iter().any(|w| *w >= lot_w),
            "the award is not deliverable: {:?}",
            left.allocation.shortfall_w
        );
        let closed = commit_award(&fleet, &awarded, &real, Some(&mut intraday)).unwrap();
        let mut bought_back_w = 0;
        for (hour, (position, award)) in closed.position_w.iter().zip(&awarded).enumerate() {
            assert!(
                (0..=*award).contains(position),
                "hour {hour}: a sale only shrinks, {award} -> {position} W"
            );
            assert_eq!(position % lot_w, 0, "hour {hour}: whole lots");
            assert!(
                closed.allocation.shortfall_w[hour].abs() < lot_w,
                "hour {hour}: deliverable to under a lot, short {} W",
                closed.allocation.shortfall_w[hour]
            );
            bought_back_w += award - position;
        }
        assert!(bought_back_w > 0);
        // Hourly periods: W summed over hours is Wh; the ask is the price + 1 EUR/MWh.
        let closed_mwh = Decimal::from(bought_back_w) / Decimal::from(1_000_000);
        assert_eq!(closed.closed_mwh, closed_mwh);
        let premium: Decimal = closed.closing_premium_eur.iter().sum();
        assert_eq!(premium, -closed_mwh);

        // A deliverable award is not traded.
        let forecast: Vec<Decimal> = forecast()
            .iter()
            .map(|price| Decimal::try_from(*price).unwrap())
            .collect();
        let awarded = award_at(&forecast, None).unwrap();
        let kept = commit_award(&fleet, &awarded, &forecast, Some(&mut intraday)).unwrap();
        assert_eq!(kept.position_w, awarded);
        assert_eq!(kept.closed_mwh, Decimal::ZERO);
    }

    #[test]
    fn a_day_of_the_wrong_length_is_a_typed_error() {
        let error = award_at(&[Decimal::from(50); 23], None).unwrap_err();
        assert!(error.to_string().contains("23 replayed prices"), "{error}");
    }
}
