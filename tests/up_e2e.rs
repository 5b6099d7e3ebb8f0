//! `voltex up` end to end: the server, a broker, the QUIC endpoint, the orchestrator
//! and real agent runtimes over both transports; the day-ahead replay issues signed
//! schedules, the agents acknowledge them, and the database ends up holding every
//! schedule version with its acks and the day's analytics row.
//!
//! On embedded defaults (SQLite, in-process broker) always; on PostgreSQL with
//! Mosquitto when `VOLTEX_DATABASE_URL` and `VOLTEX_MQTT_URL` are set (with
//! `VOLTEX_REQUIRE_SERVICES=1`, missing services fail the test).

mod support;

use std::path::PathBuf;
use std::time::Duration;

use voltex::db::{AggregateScope, Db, DeliveryStatus};
use voltex::server::config::ServerConfig;
use voltex::server::up::{UpConfig, run};

/// 40 devices of 5 kW: 200 kW, two of the day-ahead auction's 0.1 MW lots, so the
/// fleet's bids are not all rounded away.
const N_AGENTS: usize = 40;

fn prices() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/DE.csv");
    if path.exists() {
        Some(path)
    } else {
        assert!(
            !support::services_required(),
            "../shared/data/DE.csv is missing"
        );
        eprintln!("skipping: ../shared/data/DE.csv is missing");
        None
    }
}

async fn run_and_check(database_url: String, mqtt_url: Option<String>) {
    let Some(prices_csv) = prices() else { return };
    let data_dir = tempfile::tempdir().unwrap();
    let config = UpConfig {
        server: ServerConfig {
            http_addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.path().to_path_buf(),
            database_url: Some(database_url.clone()),
            mqtt_url,
            ..ServerConfig::default()
        },
        n_agents: N_AGENTS,
        quic_per_mille: 500,
        prices_csv,
        hour_real_s: 1,
        run_for: Some(Duration::from_secs(6)),
        imbalance_penalty_eur_per_mwh: rust_decimal::Decimal::from(20),
        max_position_mw: None,
        intraday: None,
        family_bids: None,
    };
    let mut api = String::new();
    let report = run(config, |address, _token| api = address.to_string())
        .await
        .unwrap();
    assert!(api.starts_with("http://127.0.0.1:"), "{api}");
    assert_eq!(report.n_days, 1);
    assert_eq!(report.n_issued, N_AGENTS as u64);
    assert_eq!(
        report.n_acked, N_AGENTS as u64,
        "every agent acked: {report:?}"
    );

    let db = Db::connect(&database_url).await.unwrap();
    let counts = db.schedule_status_counts(None).await.unwrap();
    let total: u64 = counts.iter().map(|count| count.n_schedules).sum();
    assert_eq!(total, N_AGENTS as u64, "{counts:?}");
    let issued: u64 = counts
        .iter()
        .filter(|count| count.status == DeliveryStatus::Issued)
        .map(|count| count.n_schedules)
        .sum();
    assert_eq!(issued, 0, "no version is left un-acknowledged: {counts:?}");
    for index in [0, N_AGENTS - 1] {
        let device = format!("sim-{index:06}");
        let logs = db.list_execution_logs(&device, None, 100).await.unwrap();
        assert!(
            logs.iter()
                .any(|log| log.status == DeliveryStatus::Received),
            "{device}: {logs:?}"
        );
        assert!(
            logs.iter()
                .any(|log| log.status == DeliveryStatus::Accepted),
            "{device}: {logs:?}"
        );
        let latest = db
            .latest_schedule(&device)
            .await
            .unwrap()
            .expect("schedule stored");
        assert_eq!(latest.device_id, device);
    }
    // Every QUIC agent's certificate is on its device row (revocable over the API),
    // and no MQTT agent has one: half of the agents (quic_per_mille = 500).
    let devices = db.list_devices(None, None, 100).await.unwrap();
    assert_eq!(devices.len(), N_AGENTS);
    let with_certificate = devices
        .iter()
        .filter(|device| {
            device
                .cert_fingerprint_sha256
                .as_ref()
                .is_some_and(|fingerprint| fingerprint.len() == 64)
        })
        .count();
    assert_eq!(with_certificate, N_AGENTS / 2, "{devices:?}");
    let rows = db
        .list_aggregates(0, i64::MAX, &AggregateScope::Fleet, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].n_schedules, N_AGENTS as u64);
    assert_eq!(rows[0].revenue_cents, report.revenue_cents);

    // The day-ahead record: one row per replayed hour, the trading column summing to
    // the analytics revenue, and no settlement yet (the run stopped before the
    // replayed day was over).
    let periods = db.list_dayahead_periods(0, i64::MAX, 100).await.unwrap();
    assert_eq!(periods.len(), 24, "{periods:?}");
    assert_eq!(
        periods.iter().map(|p| p.trading_cents).sum::<i64>(),
        report.revenue_cents
    );
    assert!(
        periods
            .iter()
            .all(|p| p.delivered_w.is_none() && p.imbalance_cents.is_none())
    );
    // The commitment is what the day-ahead auction awarded: whole 0.1 MW lots, within
    // the fleet's power, and not nothing on this replayed day.
    assert!(
        periods
            .iter()
            .all(|p| p.committed_w % 100_000 == 0 && p.committed_w.abs() <= 200_000),
        "{periods:?}"
    );
    assert!(periods.iter().any(|p| p.committed_w != 0), "{periods:?}");
    assert!(
        periods.iter().all(|p| p.planned_w.is_some()),
        "the bid is recorded with its award: {periods:?}"
    );
    assert!(
        periods
            .windows(2)
            .all(|w| w[0].period_start_ns < w[1].period_start_ns)
    );
    let models = db
        .list_ml_models(Some(&periods[0].model_name), 10)
        .await
        .unwrap();
    assert!(
        models
            .iter()
            .any(|m| m.version == periods[0].model_version
                && m.metrics.get("mae_eur_per_mwh").is_some()),
        "{models:?}"
    );
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_rolls_a_replayed_day_out_to_real_agents_on_embedded_defaults() {
    let db_dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", db_dir.path().join("up.db").display());
    run_and_check(url, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_rolls_a_replayed_day_out_on_postgres_and_mosquitto() {
    let Ok(mqtt) = std::env::var("VOLTEX_MQTT_URL") else {
        support::service_unavailable("VOLTEX_MQTT_URL is not set");
        return;
    };
    support::with_postgres_database("voltex_up", async |url| {
        run_and_check(url, Some(mqtt)).await;
    })
    .await;
}
