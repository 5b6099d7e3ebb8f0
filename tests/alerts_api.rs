//! `GET /api/v1/alerts` over real HTTP: the shipped rules of `deploy/` evaluated over
//! the server's own Prometheus exposition, with the server's clock driving the
//! pending → firing → ok transitions; roles enforced.

mod support;

use std::sync::Arc;

use serde_json::Value;
use voltex::server::RunningServer;
use voltex::server::auth::Role;
use voltex::server::clock::ManualClock;
use voltex::server::config::ServerConfig;
use voltex_market::UtcNanos;

const SECRET: &str = "alerts-test-secret-0123456789abcdef";
/// 2026-01-05 10:00:00 UTC.
const NOW: UtcNanos = UtcNanos(1_767_607_200_000_000_000);
const SECOND_NS: i64 = 1_000_000_000;

fn token(subject: &str, role: Role) -> String {
    support::token(SECRET, subject, role, vec![1])
}

async fn alerts(client: &reqwest::Client, base: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = client.get(format!("{base}/api/v1/alerts"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

fn rule<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["alerts"]
        .as_array()
        .expect("an alerts array")
        .iter()
        .find(|alert| alert["name"] == name)
        .unwrap_or_else(|| panic!("rule {name} missing from {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_follow_the_servers_own_metrics_and_clock() {
    let data_dir = tempfile::tempdir().expect("a temp dir");
    let db_path = data_dir.path().join("voltex.db");
    let config = ServerConfig {
        http_addr: "127.0.0.1:0".parse().expect("an address"),
        data_dir: data_dir.path().join("data"),
        database_url: Some(format!("sqlite://{}?mode=rwc", db_path.display())),
        jwt_secret: Some(SECRET.into()),
        intraday_hours_ahead: 2,
        ..ServerConfig::default()
    };
    let clock = Arc::new(ManualClock::new(NOW));
    let server = RunningServer::start(config, Arc::clone(&clock) as _)
        .await
        .expect("the server starts");
    let base = format!("http://{}", server.http_addr);
    let client = reqwest::Client::new();
    let operator = token("olga", Role::Operator);

    // Roles: no token is 401, a device is 403, traders and operators read.
    assert_eq!(alerts(&client, &base, None).await.0, 401);
    let (status, body) = alerts(&client, &base, Some(&token("dev-1", Role::Device))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "forbidden");
    let (status, body) = alerts(&client, &base, Some(&token("tom", Role::Trader))).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["alerts"]
        .as_array()
        .expect("an alerts array")
        .iter()
        .filter_map(|alert| alert["name"].as_str())
        .collect();
    assert!(names.contains(&"VoltexPersistFailing"), "{names:?}");
    assert!(names.len() >= 8, "{names:?}");

    // The fleet gauge the orchestrator maintains says nobody is online: the rule
    // holds, but `for: 2m` keeps it pending until two minutes of server time pass.
    metrics::gauge!("voltex_devices_online").set(0.0);
    clock.set(UtcNanos(NOW.nanos() + 10 * SECOND_NS));
    let (_, body) = alerts(&client, &base, Some(&operator)).await;
    let offline = rule(&body, "VoltexFleetOffline");
    assert_eq!(offline["state"], "pending", "{offline}");
    assert_eq!(offline["value"], 0.0);
    assert_eq!(offline["severity"], "critical");

    clock.set(UtcNanos(NOW.nanos() + 140 * SECOND_NS));
    let (_, body) = alerts(&client, &base, Some(&operator)).await;
    assert_eq!(
        rule(&body, "VoltexFleetOffline")["state"],
        "firing",
        "{body}"
    );

    // Devices come back: the alert clears at the next sample.
    metrics::gauge!("voltex_devices_online").set(25.0);
    clock.set(UtcNanos(NOW.nanos() + 150 * SECOND_NS));
    let (_, body) = alerts(&client, &base, Some(&operator)).await;
    let offline = rule(&body, "VoltexFleetOffline");
    assert_eq!(offline["state"], "ok", "{offline}");
    assert_eq!(offline["value"], 25.0);

    // The requests above were counted, but none ended in a 5xx: the error-rate
    // rule's numerator has no series, so it has no value and does not fire.
    let errors = rule(&body, "VoltexApiErrors");
    assert_eq!(errors["state"], "ok", "{errors}");
    assert!(errors["value"].is_null(), "{errors}");

    server.stop().await.expect("the server stops");
}
