//! End to end through the platform server over real HTTP: traders submit orders, the
//! sequencer journals and matches them, the database projection records orders,
//! fills and positions, every mutating call is audited; bad requests get problem
//! documents; a restart replays the journal without losing or duplicating anything.
//!
//! Runs on SQLite always and on PostgreSQL when `VOLTEX_DATABASE_URL` is set (with
//! `VOLTEX_REQUIRE_SERVICES=1` a missing PostgreSQL fails the test).

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::Client;
use voltex::server::RunningServer;
use voltex::server::auth::Role;
use voltex::server::clock::ManualClock;
use voltex::server::config::ServerConfig;
use voltex_market::UtcNanos;

const SECRET: &str = "e2e-test-secret-0123456789abcdef-xyz";
/// 2026-01-05 10:00:00 UTC.
const NOW: UtcNanos = UtcNanos(1_767_607_200_000_000_000);

fn token(subject: &str, role: Role, accounts: Vec<u32>) -> String {
    support::token(SECRET, subject, role, accounts)
}

fn config(data_dir: &std::path::Path, database_url: &str) -> ServerConfig {
    ServerConfig {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_path_buf(),
        database_url: Some(database_url.to_string()),
        jwt_secret: Some(SECRET.into()),
        intraday_hours_ahead: 3,
        ..ServerConfig::default()
    }
}

async fn start(data_dir: &std::path::Path, database_url: &str) -> (RunningServer, Client) {
    let server = RunningServer::start(
        config(data_dir, database_url),
        Arc::new(ManualClock::new(NOW)),
    )
    .await
    .unwrap();
    let client = Client::new(server.http_addr).with_correlation_prefix("e2e-");
    (server, client)
}

/// Polls until `check` holds for the JSON at `path` (the projection trails acks).
async fn eventually(
    client: &Client,
    path: &str,
    token: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        let (status, body) = client.get(path, Some(token)).await;
        assert_eq!(status, 200, "{path}: {body}");
        if check(&body) {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{path} never satisfied the check; last: {last}");
}

async fn trade_restart_and_check(database_url: &str) {
    let data_dir = tempfile::tempdir().unwrap();
    let alice = token("alice", Role::Trader, vec![1]);
    let bob = token("bob", Role::Trader, vec![2]);
    let operator = token("olga", Role::Operator, vec![]);
    let (server, client) = start(data_dir.path(), database_url).await;

    let (status, products) = client.get("/api/v1/products", None).await;
    assert_eq!(status, 200);
    let product = products[0]["product_id"].as_u64().unwrap();

    // Bad input: problem documents with stable codes, nothing reaches the book.
    let order = |account: u32, side: &str, price: &str, qty: &str| {
        json!({"account": account, "product": product, "side": side,
               "price_eur_per_mwh": price, "qty_mw": qty})
    };
    let (status, body) = client
        .post("/api/v1/orders", None, order(1, "buy", "50.00", "1"))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (status, body) = client
        .post(
            "/api/v1/orders",
            Some(&alice),
            order(2, "buy", "50.00", "1"),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    let (status, body) = client
        .post(
            "/api/v1/orders",
            Some(&alice),
            order(1, "buy", "50.001", "1"),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("price_off_grid")),
        "{body}"
    );
    let (status, body) = client
        .post(
            "/api/v1/orders",
            Some(&alice),
            order(1, "buy", "50.00", "0.05"),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("qty_off_lot")),
        "{body}"
    );
    let (status, body) = client
        .post("/api/v1/orders", Some(&alice), json!({"account": 1}))
        .await;
    assert!(status == 400 || status == 422, "{status}");
    assert_eq!(body["code"], "malformed_body");
    let (status, body) = client
        .post(
            "/api/v1/orders",
            Some(&alice),
            json!({"account": 1, "product": 1, "side": "buy",
            "price_eur_per_mwh": "1", "qty_mw": "1"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("unknown_product")),
        "{body}"
    );

    // Bob rests 1.0 MW at 50.00; Alice lifts 0.4 MW of it.
    let (status, sell) = client
        .post(
            "/api/v1/orders",
            Some(&bob),
            order(2, "sell", "50.00", "1.0"),
        )
        .await;
    assert_eq!(status, 201, "{sell}");
    assert_eq!(sell["status"], "resting");
    let sell_id = sell["order_id"].as_u64().unwrap();
    let (status, buy) = client
        .post(
            "/api/v1/orders",
            Some(&alice),
            order(1, "buy", "51.00", "0.4"),
        )
        .await;
    assert_eq!(status, 201, "{buy}");
    assert_eq!(buy["status"], "filled");
    assert_eq!(buy["fills"][0]["price_eur_per_mwh"], "50.00");
    assert_eq!(buy["fills"][0]["qty_mw"], "0.4");
    assert!(buy["command_seq"].as_u64().unwrap() > sell["command_seq"].as_u64().unwrap());

    let (status, depth) = client
        .get(&format!("/api/v1/products/{product}/depth"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(depth["asks"][0]["qty_mw"], "0.6");

    // Alice cannot cancel Bob's order; Bob can read it.
    let (status, _) = client
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/orders/{sell_id}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 403);

    let positions_of = |account: u32| format!("/api/v1/accounts/{account}/positions");
    let alice_positions = eventually(&client, &positions_of(1), &alice, |body| {
        body.as_array().is_some_and(|rows| rows.len() == 1)
    })
    .await;
    assert_eq!(alice_positions[0]["net_mw"], "0.4");
    assert_eq!(alice_positions[0]["bought_eur"], "20");
    let bob_positions = eventually(&client, &positions_of(2), &bob, |body| {
        body.as_array().is_some_and(|rows| rows.len() == 1)
    })
    .await;
    assert_eq!(bob_positions[0]["net_mw"], "-0.4");
    assert_eq!(bob_positions[0]["cash_eur"], "20");

    let audit = eventually(&client, "/api/v1/audit", &operator, |body| {
        body.as_array().is_some_and(|rows| rows.len() >= 6)
    })
    .await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|row| row["action"] == "order.submit"
                && row["correlation_id"] == "e2e-/api/v1/orders"
                && row["result"] == "price_off_grid"),
        "rejected calls are audited too: {audit}"
    );
    let (status, _) = client.get("/api/v1/audit", Some(&alice)).await;
    assert_eq!(status, 403, "traders do not read the audit log");

    let (_, fills_before) = client.get("/api/v1/accounts/1/fills", Some(&alice)).await;
    server.stop().await.unwrap();

    // Restart on the same journal and database: the replay is idempotent.
    let (server, client) = start(data_dir.path(), database_url).await;
    let (status, resting) = client
        .get(&format!("/api/v1/orders/{sell_id}"), Some(&bob))
        .await;
    assert_eq!(
        status, 200,
        "the resting order survives the restart: {resting}"
    );
    assert_eq!(resting["remaining_mw"], "0.6");
    // Let the replay reach the database, then check nothing doubled.
    let (status, buy_again) = client
        .post(
            "/api/v1/orders",
            Some(&alice),
            order(1, "buy", "50.00", "0.1"),
        )
        .await;
    assert_eq!(status, 201, "{buy_again}");
    let after = eventually(&client, &positions_of(1), &alice, |body| {
        body[0]["n_trades"].as_u64() == Some(2)
    })
    .await;
    assert_eq!(
        after[0]["net_mw"], "0.5",
        "0.4 before the restart + 0.1 after, not 0.9"
    );
    // The orders' audit records come from the journal, keyed by command seq: one
    // each, none doubled by the replay, and a call refused before the sequencer has
    // its record from the writer, with no command seq.
    let journaled_seqs = [&sell, &buy, &buy_again].map(|ack| ack["command_seq"].as_u64());
    let audit = eventually(&client, "/api/v1/audit?limit=500", &operator, |body| {
        body.as_array().is_some_and(|rows| {
            journaled_seqs
                .iter()
                .all(|seq| rows.iter().any(|row| row["command_seq"].as_u64() == *seq))
        })
    })
    .await;
    let rows = audit.as_array().unwrap();
    let submitted_ok: Vec<_> = rows
        .iter()
        .filter(|row| row["action"] == "order.submit" && row["result"] == "ok")
        .collect();
    assert_eq!(
        submitted_ok.len(),
        3,
        "one record per accepted order: {audit}"
    );
    assert!(
        submitted_ok
            .iter()
            .all(|row| row["command_seq"].is_u64() && row["correlation_id"] == "e2e-/api/v1/orders"),
        "{audit}"
    );
    let unknown_product: Vec<_> = rows
        .iter()
        .filter(|row| row["result"] == "unknown_product")
        .collect();
    assert_eq!(
        unknown_product.len(),
        1,
        "journaled, refused by the engine: {audit}"
    );
    assert!(unknown_product[0]["command_seq"].is_u64());
    assert!(
        rows.iter()
            .filter(|row| row["result"] == "price_off_grid")
            .all(|row| row["command_seq"].is_null()),
        "{audit}"
    );

    let (_, fills_after) = client.get("/api/v1/accounts/1/fills", Some(&alice)).await;
    assert_eq!(
        fills_after.as_array().unwrap().len(),
        fills_before.as_array().unwrap().len() + 1
    );

    let (status, metrics) = client.get("/metrics", None).await;
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap_or_default().to_string();
    assert!(text.contains("voltex_api_request_seconds"), "{text}");
    // Sampled at start (and every 15 s): CPU seconds so far and resident bytes.
    for gauge in [
        "voltex_process_cpu_seconds",
        "voltex_process_resident_memory_bytes",
    ] {
        let value: f64 = text
            .lines()
            .find_map(|line| line.strip_prefix(gauge)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{gauge} is exported: {text}"));
        assert!(value > 0.0, "{gauge} = {value}");
    }
    let (status, ready) = client.get("/readyz", None).await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ok")));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_trade_persist_and_survive_a_restart_on_sqlite() {
    let db_dir = tempfile::tempdir().unwrap();
    let url = support::sqlite_url(&db_dir.path().join("e2e.db"));
    trade_restart_and_check(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_trade_persist_and_survive_a_restart_on_postgres() {
    support::with_postgres_database("voltex_e2e", async |url| {
        trade_restart_and_check(&url).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_ahead_of_the_journal_is_refused_at_start() {
    let db_dir = tempfile::tempdir().unwrap();
    let url = support::sqlite_url(&db_dir.path().join("ahead.db"));
    let first_data = tempfile::tempdir().unwrap();
    let (server, _) = start(first_data.path(), &url).await;
    server.stop().await.unwrap();
    // Same database, a different (empty) journal.
    let other_data = tempfile::tempdir().unwrap();
    let error = RunningServer::start(
        config(other_data.path(), &url),
        Arc::new(ManualClock::new(NOW)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            voltex::server::ServerError::Mismatch {
                journal_event_seq: 0,
                ..
            }
        ),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_lists_the_order_endpoints() {
    let data_dir = tempfile::tempdir().unwrap();
    let url = support::sqlite_url(&data_dir.path().join("o.db"));
    let (server, client) = start(data_dir.path(), &url).await;
    let (status, doc) = client.get("/api/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/api/v1/orders"]["post"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let (status, body) = client.get("/api/v1/nowhere", None).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_api_shows_devices_schedules_and_analytics_to_permitted_roles_only() {
    use voltex_dispatch::message::{DeviceId, Fallback, Schedule, ScheduleId, SchedulePeriod};
    let data_dir = tempfile::tempdir().unwrap();
    let url = support::sqlite_url(&data_dir.path().join("f.db"));
    let (server, client) = start(data_dir.path(), &url).await;
    let db = server.state.db.clone();
    db.register_device(&voltex::db::NewDevice {
        device_id: "pi-0001".into(),
        name: "garage".into(),
        public_key_hex: None,
        cert_fingerprint_sha256: None,
        mqtt_credential_hash: None,
        capacity_wh: 10_000,
        max_charge_w: 5_000,
        max_discharge_w: 5_000,
        registered_at_ns: NOW.nanos(),
    })
    .await
    .unwrap();
    let signer = voltex_dispatch::ScheduleSigner::from_seed(&[7; 32]);
    for version in 1..=2 {
        let schedule = Schedule {
            device: DeviceId::new("pi-0001").unwrap(),
            schedule_id: ScheduleId(42),
            version,
            issued_at: NOW,
            valid_from: NOW,
            valid_until: NOW.plus_seconds(3600),
            randomize_start_s: 0,
            periods: vec![SchedulePeriod {
                offset_s: 0,
                target_w: -2_000,
                ramp_s: 0,
            }]
            .into(),
            fallback: Fallback::Idle,
        };
        db.insert_schedule(&signer.sign(schedule).unwrap(), NOW.nanos() + 1_000_000_000)
            .await
            .unwrap();
    }
    db.upsert_aggregates(&[voltex::db::AggregateRow {
        period_start_ns: NOW.nanos(),
        period_len_s: 3600,
        device_id: None,
        charged_wh: 2_000,
        discharged_wh: 1_500,
        n_schedules: 2,
        n_acks_completed: 0,
        n_acks_failed: 0,
        revenue_cents: 1_234,
        updated_at_ns: NOW.nanos(),
    }])
    .await
    .unwrap();

    let operator = token("olga", Role::Operator, vec![]);
    let trader = token("alice", Role::Trader, vec![1]);
    let device = token("pi-0001", Role::Device, vec![]);
    let other_device = token("pi-0002", Role::Device, vec![]);

    let (status, devices) = client.get("/api/v1/devices", Some(&operator)).await;
    assert_eq!(status, 200);
    assert_eq!(devices[0]["device_id"], "pi-0001");
    let (status, _) = client.get("/api/v1/devices", Some(&trader)).await;
    assert_eq!(status, 403, "traders do not see the fleet");
    let (status, counts) = client.get("/api/v1/fleet/status", Some(&operator)).await;
    assert_eq!((status, counts["n_devices"].as_u64()), (200, Some(1)));

    let (status, schedules) = client.get("/api/v1/schedules/pi-0001", Some(&device)).await;
    assert_eq!(status, 200, "a device reads its own schedules: {schedules}");
    let versions: Vec<u64> = schedules
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, vec![2, 1], "newest first");
    let (status, _) = client
        .get("/api/v1/schedules/pi-0001", Some(&other_device))
        .await;
    assert_eq!(status, 403, "not another device's");
    let (status, body) = client.get("/api/v1/devices/pi-9999", Some(&operator)).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));

    let range = format!(
        "from_ns={}&to_ns={}",
        NOW.nanos(),
        NOW.nanos() + 3_600_000_000_000
    );
    let (status, rows) = client
        .get(&format!("/api/v1/analytics?{range}"), Some(&operator))
        .await;
    assert_eq!(
        (status, rows[0]["revenue_cents"].as_i64()),
        (200, Some(1_234))
    );
    let (status, csv) = client
        .get(
            &format!("/api/v1/analytics?{range}&format=csv"),
            Some(&operator),
        )
        .await;
    assert_eq!(status, 200);
    let csv = csv.as_str().unwrap().to_string();
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().starts_with("period_start_ns,"));
    assert!(lines.next().unwrap().ends_with(",1234"), "{csv}");
    let (status, body) = client
        .get(
            &format!("/api/v1/analytics?{range}&format=xml"),
            Some(&operator),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_format")));
    server.stop().await.unwrap();
}
