//! The ML endpoints over real HTTP: `POST /api/v1/ml/optimize` plans a battery with the
//! engine's LP (charges when cheap, discharges when dear, within its limits), refuses
//! every kind of bad input with its own problem code, and is for quants and
//! operators only; `GET /api/v1/ml/models` lists what the `ml_models` table records.

mod support;

use std::sync::Arc;

use serde_json::{Value, json};
use voltex::db::{Db, NewMlModel};
use voltex::server::RunningServer;
use voltex::server::auth::Role;
use voltex::server::clock::ManualClock;
use voltex::server::config::ServerConfig;
use voltex_market::UtcNanos;

const SECRET: &str = "ml-test-secret-0123456789abcdef-xyz";
/// 2026-01-05 10:00:00 UTC.
const NOW: UtcNanos = UtcNanos(1_767_607_200_000_000_000);

fn token(subject: &str, role: Role) -> String {
    support::token(SECRET, subject, role, vec![1])
}

/// A day of prices: cheap at night (20), dear in the evening (120), 60 otherwise.
fn day_prices() -> Vec<String> {
    (0..24)
        .map(|hour| match hour {
            0..=5 => "20.00",
            17..=20 => "120.00",
            _ => "60.00",
        })
        .map(String::from)
        .collect()
}

fn battery() -> Value {
    json!({
        "capacity_wh": 10_000,
        "max_charge_w": 5_000,
        "max_discharge_w": 5_000,
        "charge_efficiency": 0.95,
        "discharge_efficiency": 0.95,
        "wear_cost_eur_per_mwh": "2.00"
    })
}

async fn post(client: &reqwest::Client, base: &str, token: &str, body: &Value) -> (u16, Value) {
    let response = client
        .post(format!("{base}/api/v1/ml/optimize"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_plans_with_the_engine_lp_and_refuses_bad_input() {
    let data_dir = tempfile::tempdir().expect("a temp dir");
    let db_url = format!(
        "sqlite://{}?mode=rwc",
        data_dir.path().join("voltex.db").display()
    );
    let config = ServerConfig {
        http_addr: "127.0.0.1:0".parse().expect("an address"),
        data_dir: data_dir.path().join("data"),
        database_url: Some(db_url.clone()),
        jwt_secret: Some(SECRET.into()),
        intraday_hours_ahead: 2,
        ..ServerConfig::default()
    };
    let server = RunningServer::start(config, Arc::new(ManualClock::new(NOW)))
        .await
        .expect("the server starts");
    let base = format!("http://{}", server.http_addr);
    let client = reqwest::Client::new();
    let quant = token("quinn", Role::Quant);

    // A day plan: charge in the cheap night, discharge in the dear evening.
    let request = json!({
        "battery": battery(),
        "start_soc_wh": 0,
        "prices_eur_per_mwh": day_prices(),
        "terminal": "free"
    });
    let (status, plan) = post(&client, &base, &quant, &request).await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["backend"], "clarabel");
    let net: Vec<i64> = serde_json::from_value(plan["net_w"].clone()).expect("net_w");
    let soc: Vec<f64> = serde_json::from_value(plan["soc_wh"].clone()).expect("soc_wh");
    assert_eq!(net.len(), 24);
    assert!(
        net[..6].iter().all(|&w| w <= 0),
        "charges at night: {net:?}"
    );
    assert!(net[..6].iter().any(|&w| w < 0), "charges at night: {net:?}");
    assert!(
        net[17..21].iter().any(|&w| w > 0),
        "sells in the evening: {net:?}"
    );
    assert!(
        net.iter().all(|&w| (-5_000..=5_000).contains(&w)),
        "{net:?}"
    );
    assert!(
        soc.iter()
            .all(|&wh| (-1e-6..=10_000.0 + 1e-6).contains(&wh)),
        "{soc:?}"
    );
    assert!(
        plan["expected_profit_eur_estimate"]
            .as_f64()
            .expect("a number")
            > 0.0
    );
    assert_eq!(
        plan["marginal_value_eur_per_mwh"].as_array().map(Vec::len),
        Some(24)
    );

    // A start SoC outside the limits is clamped with a warning, not refused.
    let mut clamped = request.clone();
    clamped["start_soc_wh"] = json!(12_000);
    clamped["backend"] = json!("microlp");
    let (status, plan) = post(&client, &base, &quant, &clamped).await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["backend"], "microlp");
    assert_eq!(plan["start_soc_wh"], 10_000.0);
    assert_eq!(plan["warnings"].as_array().map(Vec::len), Some(1), "{plan}");

    // Roles.
    for role in [Role::Trader, Role::Device] {
        let (status, body) = post(&client, &base, &token("x", role), &request).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    }
    let (status, _) = post(&client, &base, &token("olga", Role::Operator), &request).await;
    assert_eq!(status, 200);

    // Every kind of bad input, with its code.
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut body = request.clone();
        edit(&mut body);
        body
    };
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "no prices",
            with(&|b| b["prices_eur_per_mwh"] = json!([])),
            400,
            "empty_horizon",
        ),
        (
            "a price that is not a decimal",
            with(&|b| b["prices_eur_per_mwh"][3] = json!("cheap")),
            400,
            "invalid_decimal",
        ),
        (
            "more than a leap year of hours",
            with(&|b| b["prices_eur_per_mwh"] = json!(vec!["50.00"; 8_785])),
            400,
            "horizon_too_long",
        ),
        (
            "soc_max above capacity",
            with(&|b| b["battery"]["soc_max_wh"] = json!(20_000)),
            400,
            "invalid_battery",
        ),
        (
            "an efficiency above 1",
            with(&|b| b["battery"]["charge_efficiency"] = json!(1.5)),
            400,
            "invalid_battery",
        ),
        (
            "a wear cost that is not a decimal",
            with(&|b| b["battery"]["wear_cost_eur_per_mwh"] = json!("2,00")),
            400,
            "invalid_decimal",
        ),
        (
            "a 60 s period",
            with(&|b| b["period_s"] = json!(60)),
            400,
            "invalid_config",
        ),
        (
            "an unknown solver",
            with(&|b| b["backend"] = json!("cplex")),
            400,
            "invalid_config",
        ),
        (
            "an unknown field",
            with(&|b| b["horizon"] = json!(24)),
            422,
            "malformed_body",
        ),
        (
            "a terminal SoC the battery cannot hold",
            with(&|b| b["terminal"] = json!({ "at_least_wh": 50_000 })),
            422,
            "infeasible",
        ),
    ];
    for (what, body, want_status, want_code) in cases {
        let (status, problem) = post(&client, &base, &quant, &body).await;
        assert_eq!(status, want_status, "{what}: {problem}");
        assert_eq!(problem["code"], want_code, "{what}: {problem}");
    }

    // Models: what the table records, by name then newest version first.
    let db = Db::connect(&db_url).await.expect("the same database");
    for version in [1, 2] {
        db.insert_ml_model(&NewMlModel {
            name: "lear-de".into(),
            version,
            kind: "lear".into(),
            trained_at_ns: NOW.nanos(),
            parameters: json!({ "windows_days": [56, 84, 1092, 1456] }),
            metrics: json!({ "rmae": 0.39 }),
        })
        .await
        .expect("a model");
    }
    let models: Value = client
        .get(format!("{base}/api/v1/ml/models?name=lear-de"))
        .bearer_auth(&quant)
        .send()
        .await
        .expect("the server answers")
        .json()
        .await
        .expect("JSON");
    let versions: Vec<i64> = models["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter_map(|model| model["version"].as_i64())
        .collect();
    assert_eq!(versions, [2, 1], "{models}");
    assert_eq!(models["models"][0]["metrics"]["rmae"], 0.39);
    let status = client
        .get(format!("{base}/api/v1/ml/models?limit=0"))
        .bearer_auth(&quant)
        .send()
        .await
        .expect("the server answers")
        .status();
    assert_eq!(status, 400);

    db.close().await;
    server.stop().await.expect("the server stops");
}
