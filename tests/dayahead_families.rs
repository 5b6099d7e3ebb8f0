//! Block families over the trader API, end to end: with the server's daily day-ahead
//! gate the hours of a delivery day share one auction gate; a trader bids a battery's
//! day as a buy block linked with a sell block, another an unprofitable block; the
//! server's time passes the gate, the engine clears the day's products together, and
//! the outcome (accepted with its surplus, rejected), the awards and the positions are
//! checked over HTTP. One case per kind of bad input, each a problem document with its
//! stable code.
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

const SECRET: &str = "families-test-secret-0123456789abcdef";
/// 2026-01-05 10:00:00 UTC.
const NOW: UtcNanos = UtcNanos(1_767_607_200_000_000_000);
const HOUR_NS: i64 = 3_600_000_000_000;
/// The daily gate: 11:00 UTC, an hour after `NOW`, for every hour of 2026-01-06.
const GATE: UtcNanos = UtcNanos(NOW.0 + HOUR_NS);

/// Product ids are hours since the epoch: 2026-01-06 00:00 and 01:00 UTC.
const HOUR_A: u64 = 491_016;
const HOUR_B: u64 = 491_017;
/// 2026-01-07 00:00 UTC: the next day's gate (2026-01-06 11:00).
const NEXT_DAY: u64 = 491_040;
/// 2026-01-05 11:00 UTC: listed after its gate (2026-01-04 11:00), so no auction.
const TODAY: u64 = 491_003;

fn token(subject: &str, role: Role, accounts: Vec<u32>) -> String {
    support::token(SECRET, subject, role, accounts)
}

async fn start(
    database_url: &str,
    data_dir: &std::path::Path,
    clock: &Arc<ManualClock>,
) -> (RunningServer, Client) {
    let config = ServerConfig {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_path_buf(),
        database_url: Some(database_url.to_string()),
        jwt_secret: Some(SECRET.into()),
        intraday_hours_ahead: 48,
        day_ahead_gate_utc: Some("11:00".into()),
        ..ServerConfig::default()
    };
    let server = RunningServer::start(
        config,
        Arc::clone(clock) as Arc<dyn voltex::server::clock::Clock>,
    )
    .await
    .unwrap();
    let client = Client::new(server.http_addr);
    (server, client)
}

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..400 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} never held");
}

fn curve(account: u32, product: u64, side: &str, price: &str, qty: &str) -> Value {
    json!({
        "account": account, "product": product, "side": side, "kind": "stepwise",
        "points": [{"price_eur_per_mwh": price, "qty_mw": qty}],
    })
}

fn block(side: &str, limit: &str, qty: &[&str]) -> Value {
    json!({"side": side, "limit_eur_per_mwh": limit, "qty_mw": qty})
}

fn family(account: u32, name: u32, products: &[u64], blocks: Vec<Value>) -> Value {
    json!({"account": account, "family": name, "products": products, "blocks": blocks})
}

/// Alice's battery day: charge 1 MW in hour A at an average of at most 30.00, discharge
/// it in hour B at an average of at least 60.00.
fn alice_family() -> Value {
    family(
        1,
        1,
        &[HOUR_A, HOUR_B],
        vec![
            block("buy", "30.00", &["1.0", "0"]),
            block("sell", "60.00", &["0", "1.0"]),
        ],
    )
}

async fn submit_clear_and_check(database_url: &str) {
    let data_dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(NOW));
    let alice = token("alice", Role::Trader, vec![1]);
    let carol = token("carol", Role::Trader, vec![3]);
    let market = token("mia", Role::Trader, vec![8, 9]);
    let (server, client) = start(database_url, data_dir.path(), &clock).await;

    for hour in [HOUR_A, HOUR_B] {
        let (status, product) = client
            .get(&format!("/api/v1/products/{hour}"), Some(&alice))
            .await;
        assert_eq!(status, 200, "{product}");
        assert_eq!(product["auction_phase"], "open");
        assert_eq!(
            product["auction_gate_closure_ns"], GATE.0,
            "one gate for the day"
        );
    }
    // A market deep enough that 1 MW does not move it: 20.00 in hour A, 70.00 in B.
    for (hour, price) in [(HOUR_A, "20.00"), (HOUR_B, "70.00")] {
        for (account, side) in [(8, "sell"), (9, "buy")] {
            let (status, ack) = client
                .post(
                    "/api/v1/auction/curves",
                    Some(&market),
                    curve(account, hour, side, price, "5.0"),
                )
                .await;
            assert_eq!(status, 201, "{ack}");
        }
    }

    let path = "/api/v1/auction/families";
    let (status, ack) = client.post(path, Some(&alice), alice_family()).await;
    assert_eq!((status, &ack["status"]), (201, &json!("accepted")), "{ack}");
    assert!(ack["command_seq"].as_u64().unwrap() > 0, "journaled");
    let (status, ack) = client.post(path, Some(&alice), alice_family()).await;
    assert_eq!((status, &ack["status"]), (201, &json!("replaced")), "{ack}");
    // Carol buys hour B at no more than 50.00 (it clears at 70.00), and withdraws a
    // second family before the gate.
    let carol_family = family(3, 1, &[HOUR_B], vec![block("buy", "50.00", &["1.0"])]);
    let (status, ack) = client.post(path, Some(&carol), carol_family).await;
    assert_eq!(status, 201, "{ack}");
    let second = family(3, 2, &[HOUR_A], vec![block("buy", "50.00", &["1.0"])]);
    let (status, ack) = client.post(path, Some(&carol), second).await;
    assert_eq!(status, 201, "{ack}");
    let (status, ack) = client.delete(&format!("{path}/3/2"), Some(&carol)).await;
    assert_eq!(
        (status, &ack["status"]),
        (200, &json!("withdrawn")),
        "{ack}"
    );

    let (status, families) = client.get(&format!("{path}?account=1"), Some(&alice)).await;
    assert_eq!(status, 200, "{families}");
    assert_eq!(
        families,
        json!([{
            "account": 1, "family": 1, "first_product": HOUR_A, "n_products": 2,
            "n_blocks": 2, "status": "open", "surplus_eur": null,
            "event_seq": families[0]["event_seq"],
        }])
    );

    // The gate passes: the day's two products clear together with the families.
    clock.set(UtcNanos(GATE.0 + 1_000_000_000));
    server.state.exchange.advance_time().await.unwrap();

    // Surpluses, hand-computed: Alice buys 1 MWh at 20.00 under a limit of 30.00 and
    // sells it at 70.00 over a limit of 60.00: 10 + 10 = 20 EUR, accepted. Carol would
    // buy 1 MWh at 70.00 under a limit of 50.00: -20 EUR, rejected.
    let (_, families) = client.get(&format!("{path}?account=1"), Some(&alice)).await;
    assert_eq!(
        (&families[0]["status"], &families[0]["surplus_eur"]),
        (&json!("accepted"), &json!("20")),
        "{families}"
    );
    let (_, families) = client.get(&format!("{path}?account=3"), Some(&carol)).await;
    assert_eq!(families.as_array().map(Vec::len), Some(1), "{families}");
    assert_eq!(
        (&families[0]["status"], &families[0]["surplus_eur"]),
        (&json!("rejected"), &json!("-20")),
        "{families}"
    );

    // The accepted family traded in full at the day's prices; the rejected one nothing.
    for (hour, price, award) in [
        (
            HOUR_A,
            "20.00",
            json!([{"account": 1, "side": "buy", "qty_mw": "1"}]),
        ),
        (
            HOUR_B,
            "70.00",
            json!([{"account": 1, "side": "sell", "qty_mw": "1"}]),
        ),
    ] {
        let (status, result) = client
            .get(&format!("/api/v1/auction/results/{hour}"), Some(&alice))
            .await;
        assert_eq!(status, 200, "{result}");
        assert_eq!(result["auction_phase"], "cleared", "{result}");
        assert_eq!(result["clearing_price_eur_per_mwh"], price, "{result}");
        assert_eq!(result["awards"], award, "{result}");
    }
    let (_, result) = client
        .get(&format!("/api/v1/auction/results/{HOUR_B}"), Some(&carol))
        .await;
    assert_eq!(result["awards"], json!([]), "{result}");

    // Alice's positions: bought 1 MWh for 20 EUR, sold 1 MWh for 70 EUR.
    let positions = eventually("the awards reach the positions", async || {
        let (status, positions) = client
            .get("/api/v1/accounts/1/positions", Some(&alice))
            .await;
        assert_eq!(status, 200, "{positions}");
        (positions.as_array()?.len() == 2).then_some(positions)
    })
    .await;
    let by_product: Vec<(u64, &Value, &Value)> = positions
        .as_array()
        .unwrap()
        .iter()
        .map(|position| {
            (
                position["product_id"].as_u64().unwrap(),
                &position["net_mw"],
                &position["cash_eur"],
            )
        })
        .collect();
    assert_eq!(
        by_product,
        vec![
            (HOUR_A, &json!("1"), &json!("-20")),
            (HOUR_B, &json!("-1"), &json!("70")),
        ]
    );

    // The stored history: Carol's rejected family and her withdrawn one, newest first
    // (the live list above no longer shows the withdrawn one); Alice's replaced once.
    let history = eventually("the family outcomes reach the database", async || {
        let (status, history) = client
            .get("/api/v1/accounts/3/families", Some(&carol))
            .await;
        assert_eq!(status, 200, "{history}");
        let rows = history.as_array()?;
        (rows.len() == 2 && rows[1]["status"] == "rejected").then_some(history)
    })
    .await;
    let outcome = |row: &Value| {
        (
            row["family"].clone(),
            row["status"].clone(),
            row["surplus_eur"].clone(),
            row["n_replacements"].clone(),
        )
    };
    assert_eq!(
        history
            .as_array()
            .unwrap()
            .iter()
            .map(outcome)
            .collect::<Vec<_>>(),
        vec![
            (json!(2), json!("withdrawn"), Value::Null, json!(0)),
            (json!(1), json!("rejected"), json!("-20"), json!(0)),
        ],
        "{history}"
    );
    let (status, page) = client
        .get(
            &format!(
                "/api/v1/accounts/3/families?limit=1&before={}",
                history[0]["opened_event_seq"]
            ),
            Some(&carol),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page, json!([history[1].clone()]), "the older page");
    let (status, alice_history) = client
        .get("/api/v1/accounts/1/families", Some(&alice))
        .await;
    assert_eq!(status, 200, "{alice_history}");
    assert_eq!(
        outcome(&alice_history[0]),
        (json!(1), json!("accepted"), json!("20"), json!(1)),
        "{alice_history}"
    );
    assert_eq!(alice_history[0]["first_product"], HOUR_A);
    let (status, problem) = client
        .get("/api/v1/accounts/1/families", Some(&carol))
        .await;
    assert_eq!(status, 403, "another trader's families: {problem}");
    let (status, problem) = client
        .get("/api/v1/accounts/3/families?before=minus-one", Some(&carol))
        .await;
    assert_eq!(status, 400, "a malformed page: {problem}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_battery_s_linked_day_clears_whole_on_sqlite() {
    let db_dir = tempfile::tempdir().unwrap();
    let url = support::sqlite_url(&db_dir.path().join("families.db"));
    submit_clear_and_check(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_battery_s_linked_day_clears_whole_on_postgres() {
    support::with_postgres_database("voltex_families", async |url| {
        submit_clear_and_check(&url).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_families_are_refused_with_a_stable_code() {
    let db_dir = tempfile::tempdir().unwrap();
    let url = support::sqlite_url(&db_dir.path().join("bad.db"));
    let data_dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(NOW));
    let alice = token("alice", Role::Trader, vec![1]);
    let (server, client) = start(&url, data_dir.path(), &clock).await;
    let path = "/api/v1/auction/families";
    let buy = |qty: &[&str]| vec![block("buy", "30.00", qty)];
    let too_many: Vec<u64> = (0..101).map(|offset| HOUR_A + offset).collect();
    let cases = [
        (
            family(1, 1, &[HOUR_A, NEXT_DAY], buy(&["1", "1"])),
            422,
            "family_gates_differ",
        ),
        (
            family(1, 1, &[TODAY], buy(&["1"])),
            422,
            "auction_gate_closed",
        ),
        (family(1, 1, &[42], buy(&["1"])), 422, "unknown_product"),
        (family(1, 1, &[], buy(&[])), 400, "family_no_products"),
        (
            family(1, 1, &[HOUR_A, HOUR_A], buy(&["1", "1"])),
            400,
            "duplicate_product",
        ),
        (family(1, 1, &[HOUR_A], vec![]), 400, "family_no_blocks"),
        (
            family(1, 1, &[HOUR_A, HOUR_B], buy(&["1"])),
            400,
            "block_length",
        ),
        (
            family(1, 1, &[HOUR_A, HOUR_B], buy(&["0", "0"])),
            400,
            "block_no_quantity",
        ),
        (
            family(1, 1, &[HOUR_A], vec![block("buy", "30.001", &["1"])]),
            400,
            "price_off_grid",
        ),
        (
            family(1, 1, &[HOUR_A], vec![block("buy", "5000", &["1"])]),
            400,
            "price_out_of_limits",
        ),
        (
            family(1, 1, &[HOUR_A], vec![block("buy", "thirty", &["1"])]),
            400,
            "bad_number",
        ),
        (family(1, 1, &[HOUR_A], buy(&["-1"])), 400, "qty_negative"),
        (family(1, 1, &[HOUR_A], buy(&["0.05"])), 400, "qty_off_lot"),
        (
            family(1, 1, &too_many, buy(&["1"])),
            400,
            "too_many_products",
        ),
        (family(2, 1, &[HOUR_A], buy(&["1"])), 403, "forbidden"),
    ];
    for (body, status, code) in cases {
        let (got, problem) = client.post(path, Some(&alice), body.clone()).await;
        assert_eq!(
            (got, problem["code"].as_str()),
            (status, Some(code)),
            "{body}: {problem}"
        );
    }
    let mut unknown_field = alice_family();
    unknown_field["limit"] = json!("1");
    let (status, problem) = client.post(path, Some(&alice), unknown_field).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("malformed_body")),
        "{problem}"
    );
    let (status, problem) = client.delete(&format!("{path}/1/9"), Some(&alice)).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (404, Some("family_not_found")),
        "{problem}"
    );
    // Nothing was stored by any refusal.
    let (_, families) = client.get(&format!("{path}?account=1"), Some(&alice)).await;
    assert_eq!(families, json!([]));
    let (_, openapi) = client.get("/api/v1/openapi.json", Some(&alice)).await;
    for documented in [
        "/api/v1/auction/families",
        "/api/v1/auction/families/{account}/{family}",
    ] {
        assert!(openapi["paths"][documented].is_object(), "{documented}");
    }
    server.stop().await.unwrap();
}
