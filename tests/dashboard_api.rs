//! The dashboard over real HTTP: the embedded single-page app at `/` (and for deep
//! links), problem 404s for unknown API paths, and the read endpoints made for it —
//! fleet summary (SoC histogram, measured power against the plan), roll-out progress
//! per schedule version with the slowest devices, recent trades, devices in fault,
//! a device's telemetry history, and the day-ahead record (JSON and CSV) — each only
//! to the roles that may read it.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use voltex::db::{DeviceStatusUpdate, NewDevice, SocReading};
use voltex::server::RunningServer;
use voltex::server::auth::Role;
use voltex::server::clock::ManualClock;
use voltex::server::config::ServerConfig;
use voltex_dispatch::message::{
    DeviceId, Fallback, HealthFlags, Schedule, ScheduleId, SchedulePeriod, Telemetry,
    TelemetryBatch,
};
use voltex_market::UtcNanos;

const SECRET: &str = "dashboard-test-secret-0123456789abcdef";
/// 2026-01-05 10:00:00 UTC.
const NOW: UtcNanos = UtcNanos(1_767_607_200_000_000_000);

fn token(subject: &str, role: Role, accounts: Vec<u32>) -> String {
    support::token(SECRET, subject, role, accounts)
}

async fn register(db: &voltex::db::Db, device_id: &str, soc_wh: i64) {
    db.register_device(&NewDevice {
        device_id: device_id.into(),
        name: device_id.into(),
        public_key_hex: None,
        cert_fingerprint_sha256: None,
        mqtt_credential_hash: None,
        capacity_wh: 10_000,
        max_charge_w: 5_000,
        max_discharge_w: 5_000,
        registered_at_ns: NOW.nanos(),
    })
    .await
    .expect("register");
    db.update_device_status(&DeviceStatusUpdate {
        device_id: device_id.into(),
        seen_at_ns: NOW.nanos(),
        online: Some(true),
        soc: Some(SocReading {
            soc_wh,
            at_ns: NOW.nanos(),
        }),
    })
    .await
    .expect("status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_pages_and_read_endpoints() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let url = support::sqlite_url(&data_dir.path().join("d.db"));
    let config = ServerConfig {
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        data_dir: data_dir.path().to_path_buf(),
        database_url: Some(url),
        jwt_secret: Some(SECRET.into()),
        intraday_hours_ahead: 3,
        ..ServerConfig::default()
    };
    let server = RunningServer::start(config, Arc::new(ManualClock::new(NOW)))
        .await
        .expect("server");
    let client = support::Client::new(server.http_addr);
    let operator = token("olga", Role::Operator, vec![]);
    let trader = token("alice", Role::Trader, vec![1]);

    // The app: index at `/` and for deep links, problem 404 for unknown API paths.
    for path in ["/", "/fleet/deep/link"] {
        let (status, content_type, body) = client
            .send_typed(reqwest::Method::GET, path, None, None)
            .await;
        assert_eq!(
            (status, content_type.as_str()),
            (200, "text/html; charset=utf-8")
        );
        assert!(
            body.as_str().is_some_and(|html| html.contains("Voltex")),
            "{path}"
        );
    }
    let (status, body) = client.get("/api/v1/no-such-route", None).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));

    // Two devices at 15 % and 85 % SoC, a schedule version for both (one accepted),
    // and one telemetry sample each in the current 10 s bucket.
    let db = server.state.db.clone();
    register(&db, "pi-0001", 1_500).await;
    register(&db, "pi-0002", 8_500).await;
    let signer = voltex_dispatch::ScheduleSigner::from_seed(&[7; 32]);
    for device in ["pi-0001", "pi-0002"] {
        let schedule = Schedule {
            device: DeviceId::new(device).expect("device id"),
            schedule_id: ScheduleId(42),
            version: 1,
            issued_at: NOW.plus_seconds(-60),
            valid_from: NOW.plus_seconds(-60),
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
        db.insert_schedule(
            &signer.sign(schedule).expect("sign"),
            NOW.nanos() + 60_000_000_000,
        )
        .await
        .expect("schedule");
        db.insert_telemetry(
            &TelemetryBatch {
                device: DeviceId::new(device).expect("device id"),
                samples: vec![Telemetry {
                    outbox_seq: 1,
                    at: NOW,
                    soc_wh: if device == "pi-0001" { 1_500 } else { 8_500 },
                    power_w: -1_900,
                    charged_wh: 0,
                    discharged_wh: 0,
                    temperature_mc: 25_000,
                    health: HealthFlags::default(),
                }],
            },
            NOW.nanos(),
        )
        .await
        .expect("telemetry");
    }
    db.update_schedule_status(
        "pi-0001",
        1,
        voltex::db::DeliveryStatus::Accepted,
        NOW.nanos() - 30_000_000_000,
        None,
    )
    .await
    .expect("accepted");

    let (status, _) = client.get("/api/v1/dashboard/fleet", Some(&trader)).await;
    assert_eq!(status, 403, "traders do not see the fleet");
    let (status, body) = client
        .get("/api/v1/dashboard/fleet?window_s=0", Some(&operator))
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_window")));
    let (status, fleet) = client
        .get(
            "/api/v1/dashboard/fleet?window_s=60&bucket_s=10",
            Some(&operator),
        )
        .await;
    assert_eq!(status, 200, "{fleet}");
    assert_eq!(
        (fleet["n_devices"].as_i64(), fleet["n_online"].as_i64()),
        (Some(2), Some(2))
    );
    assert_eq!(
        fleet["soc_histogram"],
        json!([0, 1, 0, 0, 0, 0, 0, 0, 1, 0]),
        "15 % in bin 1, 85 % in bin 8"
    );
    let last = fleet["power"]
        .as_array()
        .and_then(|points| points.last())
        .cloned()
        .expect("power points");
    assert_eq!(last["at_ns"].as_i64(), Some(NOW.nanos()));
    assert_eq!(
        last["plan_w"].as_i64(),
        Some(-4_000),
        "two devices at -2 kW"
    );
    assert_eq!(last["measured_w"].as_i64(), Some(-3_800));
    assert_eq!(last["n_reporting"].as_i64(), Some(2));

    let (status, _) = client
        .get("/api/v1/dashboard/rollouts", Some(&trader))
        .await;
    assert_eq!(status, 403);
    let (status, rollouts) = client
        .get("/api/v1/dashboard/rollouts", Some(&operator))
        .await;
    assert_eq!(status, 200, "{rollouts}");
    let version = &rollouts["versions"][0];
    assert_eq!(
        (
            version["version"].as_u64(),
            version["n_devices"].as_i64(),
            version["by_status"]["issued"].as_i64(),
            version["by_status"]["accepted"].as_i64(),
            version["success_rate"].as_f64(),
        ),
        (Some(1), Some(2), Some(1), Some(1), Some(0.5))
    );
    assert_eq!(
        rollouts["slowest"][0]["device_id"], "pi-0002",
        "the still-issued device is the slowest"
    );

    // Two crossing orders make one trade.
    let (status, products) = client.get("/api/v1/products", None).await;
    assert_eq!(status, 200);
    let product = products[0]["product_id"]
        .as_u64()
        .expect("a listed product");
    for (side, account) in [("sell", 2), ("buy", 1)] {
        let (status, body) = client
            .send(
                reqwest::Method::POST,
                "/api/v1/orders",
                Some(&operator),
                Some(json!({"account": account, "product": product, "side": side,
                            "price_eur_per_mwh": "55.50", "qty_mw": "1"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let path = format!("/api/v1/dashboard/trades/{product}?limit=5");
    let mut trades = Value::Null;
    for _ in 0..200 {
        let (status, body) = client.get(&path, None).await;
        assert_eq!(status, 200, "{body}");
        if body.as_array().is_some_and(|rows| !rows.is_empty()) {
            trades = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(trades[0]["price_eur_per_mwh"], "55.50", "{trades}");
    assert_eq!(trades[0]["qty_mw"], "1");
    assert_eq!(trades[0]["aggressor_side"], "buy");

    // Devices in fault: by the flags of each device's newest sample only.
    let sample = |device: &str, offset_s: i64, seq: u64, health: u32| TelemetryBatch {
        device: DeviceId::new(device).expect("device id"),
        samples: vec![Telemetry {
            outbox_seq: seq,
            at: UtcNanos(NOW.nanos() + offset_s * 1_000_000_000),
            soc_wh: 4_000,
            power_w: 0,
            charged_wh: 0,
            discharged_wh: 0,
            temperature_mc: 61_000,
            health: HealthFlags(health),
        }],
    };
    for batch in [
        sample(
            "pi-0001",
            1,
            2,
            HealthFlags::DRIVER_FAULT | HealthFlags::OVER_TEMPERATURE,
        ),
        sample("pi-0002", -60, 3, HealthFlags::EMERGENCY_STOP),
        sample("pi-0002", 2, 4, HealthFlags::ON_FALLBACK),
    ] {
        db.insert_telemetry(&batch, NOW.nanos())
            .await
            .expect("telemetry");
    }
    let (status, faults) = client
        .get("/api/v1/dashboard/faults", Some(&operator))
        .await;
    assert_eq!(status, 200, "{faults}");
    assert_eq!(
        faults,
        json!([{"device_id": "pi-0001", "at_ns": NOW.nanos() + 1_000_000_000,
                "health_flags": 17, "flags": ["driver_fault", "over_temperature"],
                "soc_wh": 4_000, "temperature_mc": 61_000}]),
        "pi-0002's emergency stop is older than its newest sample; on_fallback alone is no fault"
    );
    let (status, _) = client.get("/api/v1/dashboard/faults", Some(&trader)).await;
    assert_eq!(status, 403);
    let (status, problem) = client
        .get("/api/v1/dashboard/faults?limit=0", Some(&operator))
        .await;
    assert_eq!((status, problem["code"].clone()), (400, json!("bad_limit")));
    // Telemetry history of a device, oldest first, in a range.
    let (status, history) = client
        .get("/api/v1/devices/pi-0001/telemetry", Some(&operator))
        .await;
    assert_eq!(status, 200, "{history}");
    let at: Vec<i64> = history
        .as_array()
        .expect("array")
        .iter()
        .map(|row| row["at_ns"].as_i64().expect("at_ns"))
        .collect();
    assert_eq!(at, vec![NOW.nanos(), NOW.nanos() + 1_000_000_000]);
    let (status, history) = client
        .get(
            &format!(
                "/api/v1/devices/pi-0001/telemetry?from_ns={}",
                NOW.nanos() + 1
            ),
            Some(&operator),
        )
        .await;
    assert_eq!((status, history.as_array().map(Vec::len)), (200, Some(1)));
    for (query, code) in [("limit=0", "bad_limit"), ("from_ns=9&to_ns=3", "bad_range")] {
        let (status, problem) = client
            .get(
                &format!("/api/v1/devices/pi-0001/telemetry?{query}"),
                Some(&operator),
            )
            .await;
        assert_eq!(
            (status, problem["code"].clone()),
            (400, json!(code)),
            "{query}"
        );
    }
    let (status, _) = client
        .get("/api/v1/devices/pi-0001/telemetry", Some(&trader))
        .await;
    assert_eq!(status, 403);

    // The day-ahead record: two periods, one settled, read back oldest first, as JSON
    // and CSV, to fleet readers only; a bad query is a problem document.
    let period = |hour: u8, settled: bool| voltex::db::DayAheadPeriodRow {
        period_start_ns: NOW.nanos() + i64::from(hour) * 10_000_000_000,
        period_len_s: 10,
        delivery_day: "2016-12-27".into(),
        delivery_hour: hour,
        clearing_price_cents_per_mwh: 4_210 + i64::from(hour),
        forecast_price_cents_per_mwh: 3_990,
        model_name: "dayahead-naive".into(),
        model_version: 1,
        committed_w: -25_000,
        planned_w: settled.then_some(-30_000),
        perfect_foresight_w: -50_000,
        trading_cents: -105,
        perfect_foresight_cents: -212,
        delivered_w: settled.then_some(-20_000),
        imbalance_cents: settled.then_some(-31),
        wear_cents: settled.then_some(4),
        updated_at_ns: NOW.nanos(),
    };
    db.upsert_dayahead_periods(&[period(1, false), period(0, true)])
        .await
        .expect("day-ahead rows");
    let (status, rows) = client
        .get("/api/v1/dashboard/dayahead?limit=10", Some(&operator))
        .await;
    assert_eq!(status, 200, "{rows}");
    let rows = rows.as_array().expect("array").clone();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["delivery_hour"], 0, "oldest first");
    assert_eq!(rows[0]["clearing_price_cents_per_mwh"], 4_210);
    assert_eq!(rows[0]["imbalance_cents"], -31);
    assert_eq!(rows[0]["wear_cents"], 4);
    assert_eq!(rows[0]["planned_w"], -30_000);
    assert_eq!(
        rows[1]["planned_w"],
        Value::Null,
        "a row from before the cycle bid"
    );
    assert_eq!(rows[1]["delivered_w"], Value::Null, "not settled yet");
    let (status, newest) = client
        .get("/api/v1/dashboard/dayahead?limit=1", Some(&operator))
        .await;
    assert_eq!(
        (status, newest[0]["delivery_hour"].clone()),
        (200, json!(1))
    );
    let (status, content_type, csv) = client
        .send_typed(
            reqwest::Method::GET,
            "/api/v1/dashboard/dayahead?format=csv",
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/csv; charset=utf-8")
    );
    let csv = csv.as_str().expect("text").to_string();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("period_start_ns,period_len_s,delivery_day,"));
    assert!(lines[0].ends_with(",wear_cents,planned_w"), "{csv}");
    assert!(lines[1].ends_with(",-20000,-31,4,-30000"), "{csv}");
    assert!(lines[2].ends_with(",,,,"), "unsettled: empty fields: {csv}");
    let (status, _) = client
        .get("/api/v1/dashboard/dayahead", Some(&trader))
        .await;
    assert_eq!(status, 403, "traders do not read the fleet's P&L");
    for (query, code) in [
        ("limit=0", "bad_limit"),
        ("limit=1001", "bad_limit"),
        ("format=xml", "bad_format"),
        ("from_ns=5&to_ns=5", "bad_range"),
        ("limit=minus", "malformed_query"),
    ] {
        let (status, problem) = client
            .get(
                &format!("/api/v1/dashboard/dayahead?{query}"),
                Some(&operator),
            )
            .await;
        assert_eq!(status, 400, "{query}: {problem}");
        assert_eq!(problem["code"], code, "{query}: {problem}");
    }
    server.stop().await.expect("stop");
}
