//! Day-ahead bid curves over the trader API, end to end: two traders submit curves
//! over HTTP, the server's time passes the day-ahead gate, the engine clears the
//! auction, and the clearing price, volume and awards are checked over HTTP and in the
//! database, and so are the awards in each trader's positions (with the cash P&L) and
//! fills, which another trader cannot read. One case per kind of bad input, each a problem document with its stable
//! code; a restart keeps the journaled curves and clears them identically.
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
use voltex_engine::auction::AUCTION_POINTS_PER_CURVE_MAX;
use voltex_market::{MarketRules, UtcNanos};

const SECRET: &str = "dayahead-test-secret-0123456789abcdef";
/// 2026-01-05 10:00:00 UTC.
const NOW: UtcNanos = UtcNanos(1_767_607_200_000_000_000);
const HOUR_NS: i64 = 3_600_000_000_000;

fn token(subject: &str, role: Role, accounts: Vec<u32>) -> String {
    support::token(SECRET, subject, role, accounts)
}

fn config(data_dir: &std::path::Path, database_url: &str) -> ServerConfig {
    ServerConfig {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_path_buf(),
        database_url: Some(database_url.to_string()),
        jwt_secret: Some(SECRET.into()),
        intraday_hours_ahead: 24,
        ..ServerConfig::default()
    }
}

async fn start(
    data_dir: &std::path::Path,
    database_url: &str,
    clock: &Arc<ManualClock>,
) -> (RunningServer, Client) {
    let server = RunningServer::start(
        config(data_dir, database_url),
        Arc::clone(clock) as Arc<dyn voltex::server::clock::Clock>,
    )
    .await
    .unwrap();
    let client = Client::new(server.http_addr);
    (server, client)
}

/// The product delivering 14 hours after `NOW`: its day-ahead gate is 2 hours ahead.
fn product_id() -> u64 {
    u64::try_from(NOW.0 / HOUR_NS + 14).unwrap()
}

fn gate_ns() -> i64 {
    (NOW.0 / HOUR_NS + 14) * HOUR_NS
        - MarketRules::day_ahead_default().gate_closure_lead_s * 1_000_000_000
}

fn curve(account: u32, side: &str, kind: &str, points: &[(&str, &str)]) -> Value {
    json!({
        "account": account,
        "product": product_id(),
        "side": side,
        "kind": kind,
        "points": points
            .iter()
            .map(|(price, qty)| json!({"price_eur_per_mwh": price, "qty_mw": qty}))
            .collect::<Vec<_>>(),
    })
}

/// Alice buys 2.0 MW up to 40.00 and 1.0 MW more up to 60.00; Bob sells 1.5 MW from
/// 30.00 and 1.5 MW more from 50.00. They clear at 40.00 EUR/MWh with 1.5 MW: only
/// 40.00 carries 1.5 MW with every in-the-money quantity accepted.
fn alice_curve() -> Value {
    curve(1, "buy", "stepwise", &[("40.00", "2.0"), ("60.00", "1.0")])
}

fn bob_curve() -> Value {
    curve(2, "sell", "stepwise", &[("30.00", "1.5"), ("50.00", "1.5")])
}

/// Moves the server's clock past the gate and the engine with it.
async fn pass_the_gate(server: &RunningServer, clock: &ManualClock) {
    clock.set(UtcNanos(gate_ns() + 1_000_000_000));
    server.state.exchange.advance_time().await.unwrap();
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

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON text message on `socket`, if one arrives within `wait`.
async fn next_message_within(socket: &mut Socket, wait: Duration) -> Option<Value> {
    use futures_util::StreamExt;
    loop {
        let frame = tokio::time::timeout(wait, socket.next())
            .await
            .ok()??
            .ok()?;
        if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
            return serde_json::from_str(&text).ok();
        }
    }
}

async fn check_cleared_over_http(client: &Client, alice: &str, bob: &str) {
    let path = format!("/api/v1/auction/results/{}", product_id());
    let (status, result) = client.get(&path, Some(alice)).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["auction_phase"], "cleared", "{result}");
    assert_eq!(result["clearing_price_eur_per_mwh"], "40.00", "{result}");
    assert_eq!(result["volume_mw"], "1.5", "{result}");
    assert_eq!(result["n_curves"], 2, "{result}");
    assert_eq!(
        result["awards"],
        json!([{"account": 1, "side": "buy", "qty_mw": "1.5"}]),
        "a trader sees only their own award"
    );
    let (_, result) = client.get(&path, Some(bob)).await;
    assert_eq!(
        result["awards"],
        json!([{"account": 2, "side": "sell", "qty_mw": "1.5"}])
    );
}

async fn check_cleared_in_database(server: &RunningServer) {
    let product = u32::try_from(product_id()).unwrap();
    let db = &server.state.db;
    let result = eventually("the auction result is persisted", async || {
        db.auction_result(product).await.unwrap()
    })
    .await;
    assert_eq!(result.price_ticks, Some(4_000));
    assert_eq!(result.volume_lots, 15);
    assert_eq!(result.n_curves, 2);
    let awards = db.auction_awards(product).await.unwrap();
    let awards: Vec<_> = awards
        .iter()
        .map(|award| (award.account_id, award.side, award.qty_lots))
        .collect();
    assert_eq!(
        awards,
        vec![
            (1, voltex_market::Side::Buy, 15),
            (2, voltex_market::Side::Sell, 15)
        ]
    );
    let curves = db.auction_curves_of(1).await.unwrap();
    assert_eq!(curves.len(), 1);
    assert_eq!(curves[0].status, "active");
    assert_eq!(curves[0].points, vec![(4_000, 20), (6_000, 10)]);
}

/// What the traders' account endpoints show after the clearing, hand-computed: 1.5 MW
/// for the one-hour product at 40.00 EUR/MWh is 1.5 MWh for 60 EUR, paid by Alice
/// (buy) and received by Bob (sell), as one fill of source `auction` each. The cash is
/// the account's P&L (positions are not marked to market).
async fn check_awards_in_accounts(client: &Client, alice: &str, bob: &str) {
    let position = |net: &str, bought: &str, sold: &str, paid: &str, got: &str, cash: &str| {
        json!([{
            "product_id": product_id(), "net_mw": net, "bought_mwh": bought,
            "sold_mwh": sold, "bought_eur": paid, "sold_eur": got, "cash_eur": cash,
            "n_trades": 1,
        }])
    };
    for (account, token, expected) in [
        (1, alice, position("1.5", "1.5", "0", "60", "0", "-60")),
        (2, bob, position("-1.5", "0", "1.5", "0", "60", "60")),
    ] {
        let path = format!("/api/v1/accounts/{account}/positions");
        let positions = eventually("the award reaches the positions", async || {
            let (status, positions) = client.get(&path, Some(token)).await;
            assert_eq!(status, 200, "{positions}");
            (!positions.as_array()?.is_empty()).then_some(positions)
        })
        .await;
        assert_eq!(positions, expected, "account {account}");
    }

    let mut award_seqs = Vec::new();
    for (account, token, side) in [(1, alice, "buy"), (2, bob, "sell")] {
        let (status, fills) = client
            .get(&format!("/api/v1/accounts/{account}/fills"), Some(token))
            .await;
        assert_eq!(status, 200, "{fills}");
        let event_seq = fills[0]["event_seq"].as_u64().expect("an event seq");
        assert_eq!(
            fills,
            json!([{
                "source": "auction", "product_id": product_id(), "trade_id": null,
                "event_seq": event_seq, "at_ns": gate_ns() + 1_000_000_000,
                "account_id": account, "order_id": null, "side": side,
                "price_ticks": 4_000, "qty_lots": 15, "price_eur_per_mwh": "40.00",
                "qty_mw": "1.5", "aggressor": null,
            }]),
            "account {account}: exactly its own award at the clearing price"
        );
        award_seqs.push(event_seq);
    }
    assert_ne!(award_seqs[0], award_seqs[1], "one event per award");

    // A trader cannot read another account's auction fills or positions.
    for path in ["/api/v1/accounts/1/fills", "/api/v1/accounts/1/positions"] {
        let (status, problem) = client.get(path, Some(bob)).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (403, Some("forbidden")),
            "bob reads {path}: {problem}"
        );
    }
}

async fn submit_clear_and_check(database_url: &str) {
    let data_dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(NOW));
    let alice = token("alice", Role::Trader, vec![1]);
    let bob = token("bob", Role::Trader, vec![2]);
    let carol = token("carol", Role::Trader, vec![3]);
    let operator = token("olga", Role::Operator, vec![]);
    let (server, client) = start(data_dir.path(), database_url, &clock).await;

    let (status, product) = client
        .get(&format!("/api/v1/products/{}", product_id()), Some(&alice))
        .await;
    assert_eq!(status, 200, "{product}");
    assert_eq!(product["auction_phase"], "open");
    assert_eq!(product["auction_gate_closure_ns"], gate_ns());

    let (status, ack) = client
        .post("/api/v1/auction/curves", Some(&alice), alice_curve())
        .await;
    assert_eq!((status, &ack["status"]), (201, &json!("accepted")), "{ack}");
    assert!(ack["command_seq"].as_u64().unwrap() > 0, "journaled");
    let (status, ack) = client
        .post("/api/v1/auction/curves", Some(&alice), alice_curve())
        .await;
    assert_eq!((status, &ack["status"]), (201, &json!("replaced")), "{ack}");
    let (status, ack) = client
        .post("/api/v1/auction/curves", Some(&bob), bob_curve())
        .await;
    assert_eq!((status, &ack["status"]), (201, &json!("accepted")), "{ack}");

    // Carol bids and withdraws: her curve takes no part.
    let carol_curve = curve(3, "buy", "piecewise_linear", &[("0", "5"), ("100", "0")]);
    let (status, ack) = client
        .post("/api/v1/auction/curves", Some(&carol), carol_curve)
        .await;
    assert_eq!(status, 201, "{ack}");
    let withdraw = format!("/api/v1/auction/curves/{}/3/buy", product_id());
    let (status, ack) = client.delete(&withdraw, Some(&carol)).await;
    assert_eq!(
        (status, &ack["status"]),
        (200, &json!("withdrawn")),
        "{ack}"
    );
    let (status, problem) = client.delete(&withdraw, Some(&carol)).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (404, Some("curve_not_found"))
    );
    let (_, carol_curves) = client
        .get("/api/v1/auction/curves?account=3", Some(&carol))
        .await;
    assert_eq!(carol_curves, json!([]));

    let (status, curves) = client
        .get("/api/v1/auction/curves?account=1", Some(&alice))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        curves,
        json!([{
            "product": product_id(), "account": 1, "side": "buy", "kind": "stepwise",
            "points": [{"price_eur_per_mwh": "40.00", "qty_mw": "2"},
                       {"price_eur_per_mwh": "60.00", "qty_mw": "1"}],
            "accepted_event_seq": curves[0]["accepted_event_seq"],
        }])
    );
    let (status, _) = client
        .get("/api/v1/auction/curves?account=1", Some(&bob))
        .await;
    assert_eq!(status, 403, "bob may not read alice's curves");

    let path = format!("/api/v1/auction/results/{}", product_id());
    let (_, open) = client.get(&path, Some(&alice)).await;
    assert_eq!(open["auction_phase"], "open");
    assert_eq!(open["clearing_price_eur_per_mwh"], Value::Null);

    // Alice follows the product on the stream: her own curve changes, the clearing and
    // her award. A replaced curve's message also shows her subscription is live.
    let url = format!(
        "ws://{}/api/v1/stream?product={}&token={alice}",
        server.http_addr,
        product_id()
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut replaced = None;
    for _ in 0..100 {
        let (status, _) = client
            .post("/api/v1/auction/curves", Some(&alice), alice_curve())
            .await;
        assert_eq!(status, 201);
        if let Some(message) = next_message_within(&mut socket, Duration::from_millis(200)).await {
            replaced = Some(message);
            break;
        }
    }
    assert_eq!(
        replaced.expect("a curve message")["event"],
        "replaced",
        "own curve changes are streamed"
    );
    pass_the_gate(&server, &clock).await;
    let mut auction_messages = Vec::new();
    while auction_messages.len() < 2 {
        let message = next_message_within(&mut socket, Duration::from_secs(10))
            .await
            .expect("the clearing on the stream");
        if message["type"] != "depth" && message["type"] != "phase" {
            auction_messages.push(message);
        }
    }
    assert_eq!(auction_messages[0]["type"], "auction_cleared");
    assert_eq!(auction_messages[0]["price_eur_per_mwh"], "40.00");
    assert_eq!(auction_messages[0]["volume_mw"], "1.5");
    assert_eq!(auction_messages[1]["type"], "auction_award");
    assert_eq!(auction_messages[1]["account"], 1, "only her own award");
    assert_eq!(auction_messages[1]["qty_mw"], "1.5");
    check_cleared_over_http(&client, &alice, &bob).await;
    check_cleared_in_database(&server).await;
    check_awards_in_accounts(&client, &alice, &bob).await;

    let (status, problem) = client
        .post("/api/v1/auction/curves", Some(&alice), alice_curve())
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("auction_gate_closed")),
        "{problem}"
    );

    // Every mutating call is audited, the refused ones included.
    let audit = eventually("the curve calls are audited", async || {
        let (_, audit) = client.get("/api/v1/audit?limit=100", Some(&operator)).await;
        let rows = audit.as_array()?.clone();
        let n_curve_calls = rows
            .iter()
            .filter(|row| {
                row["action"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("curve."))
            })
            .count();
        (n_curve_calls >= 7).then_some(rows)
    })
    .await;
    assert!(
        audit
            .iter()
            .any(|row| row["action"] == "curve.withdraw" && row["result"] == "curve_not_found")
    );
    assert!(audit.iter().any(|row| row["action"] == "curve.submit"
        && row["result"] == "auction_gate_closed"
        && row["actor"] == "alice"));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_traders_bid_and_the_auction_clears_on_sqlite() {
    let db_dir = tempfile::tempdir().unwrap();
    let url = support::sqlite_url(&db_dir.path().join("dayahead.db"));
    submit_clear_and_check(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_traders_bid_and_the_auction_clears_on_postgres() {
    support::with_postgres_database("voltex_dayahead", async |url| {
        submit_clear_and_check(&url).await;
    })
    .await;
}

async fn restart_keeps_and_clears_curves(database_url: &str) {
    let data_dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(NOW));
    let alice = token("alice", Role::Trader, vec![1]);
    let bob = token("bob", Role::Trader, vec![2]);
    let (server, client) = start(data_dir.path(), database_url, &clock).await;
    for (who, body) in [(&alice, alice_curve()), (&bob, bob_curve())] {
        let (status, ack) = client.post("/api/v1/auction/curves", Some(who), body).await;
        assert_eq!(status, 201, "{ack}");
    }
    let (_, before) = client
        .get("/api/v1/auction/curves?account=1", Some(&alice))
        .await;
    server.stop().await.unwrap();

    let (server, client) = start(data_dir.path(), database_url, &clock).await;
    let (_, after) = client
        .get("/api/v1/auction/curves?account=1", Some(&alice))
        .await;
    assert_eq!(after, before, "journaled curves survive the restart");
    assert_eq!(after.as_array().map(Vec::len), Some(1));
    pass_the_gate(&server, &clock).await;
    check_cleared_over_http(&client, &alice, &bob).await;
    check_cleared_in_database(&server).await;
    check_awards_in_accounts(&client, &alice, &bob).await;
    server.stop().await.unwrap();

    // And once more: the cleared result replays identically, without duplicates (the
    // awards count once in positions and fills after the journal's replay).
    let (server, client) = start(data_dir.path(), database_url, &clock).await;
    check_cleared_over_http(&client, &alice, &bob).await;
    check_cleared_in_database(&server).await;
    check_awards_in_accounts(&client, &alice, &bob).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curves_journaled_before_a_restart_clear_identically_on_sqlite() {
    let db_dir = tempfile::tempdir().unwrap();
    let url = support::sqlite_url(&db_dir.path().join("restart.db"));
    restart_keeps_and_clears_curves(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curves_journaled_before_a_restart_clear_identically_on_postgres() {
    support::with_postgres_database("voltex_dayahead_restart", async |url| {
        restart_keeps_and_clears_curves(&url).await;
    })
    .await;
}

/// A market with its own day-ahead rules (`[day_ahead_rules]`: capped at 3,000 EUR/MWh,
/// gate 1 h before delivery): the product shows them, the API refuses a curve above the
/// cap, and after a restart on the default rules the product listed under the cap
/// keeps it (the engine journaled it), while its gate stays where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_day_ahead_rules_hold_for_the_products_listed_under_them() {
    let db_dir = tempfile::tempdir().unwrap();
    let url = support::sqlite_url(&db_dir.path().join("rules.db"));
    let data_dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(NOW));
    let alice = token("alice", Role::Trader, vec![1]);
    let capped = ServerConfig {
        day_ahead_rules: ServerConfig::from_toml(
            "[day_ahead_rules]\nprice_max_eur_per_mwh = \"3000\"\ngate_closure_lead_s = 3600\n",
        )
        .unwrap()
        .day_ahead_rules,
        ..config(data_dir.path(), &url)
    };
    let server = RunningServer::start(
        capped,
        Arc::clone(&clock) as Arc<dyn voltex::server::clock::Clock>,
    )
    .await
    .unwrap();
    let client = Client::new(server.http_addr);
    let delivery_start_ns = (NOW.0 / HOUR_NS + 14) * HOUR_NS;
    let capped_gate_ns = delivery_start_ns - HOUR_NS;
    let (status, product) = client
        .get(&format!("/api/v1/products/{}", product_id()), Some(&alice))
        .await;
    assert_eq!(status, 200, "{product}");
    assert_eq!(product["auction_price_max_eur_per_mwh"], "3000.00");
    assert_eq!(product["auction_price_min_eur_per_mwh"], "-500.00");
    assert_eq!(product["auction_gate_closure_ns"], capped_gate_ns);
    let above_cap = curve(1, "buy", "stepwise", &[("3500.00", "1")]);
    let (status, problem) = client
        .post("/api/v1/auction/curves", Some(&alice), above_cap.clone())
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("price_out_of_limits")),
        "{problem}"
    );
    let (status, ack) = client
        .post(
            "/api/v1/auction/curves",
            Some(&alice),
            curve(1, "buy", "stepwise", &[("2999.99", "1")]),
        )
        .await;
    assert_eq!(status, 201, "{ack}");
    server.stop().await.unwrap();

    // Restarted on the defaults (-500..4,000 EUR/MWh, 12 h): the product shows, and the
    // API checks curves by, the cap it was listed under (from its journaled listing);
    // the engine would refuse 3,500 under it as well.
    let (server, client) = start(data_dir.path(), &url, &clock).await;
    let (_, product) = client
        .get(&format!("/api/v1/products/{}", product_id()), Some(&alice))
        .await;
    assert_eq!(
        product["auction_gate_closure_ns"], capped_gate_ns,
        "the gate it was listed with, from the journal: {product}"
    );
    assert_eq!(product["auction_phase"], "open");
    assert_eq!(
        product["auction_price_max_eur_per_mwh"], "3000.00",
        "its own cap, not the configured 4,000: {product}"
    );
    let (status, problem) = client
        .post("/api/v1/auction/curves", Some(&alice), above_cap)
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("price_out_of_limits")),
        "{problem}"
    );
    let (_, curves) = client
        .get("/api/v1/auction/curves?account=1", Some(&alice))
        .await;
    assert_eq!(
        curves[0]["points"][0]["price_eur_per_mwh"], "2999.99",
        "the refused curve replaced nothing: {curves}"
    );
    // Past the default gate (12 h ahead of delivery) the auction still takes curves.
    clock.set(UtcNanos(gate_ns() + HOUR_NS));
    server.state.exchange.advance_time().await.unwrap();
    let (status, ack) = client
        .post(
            "/api/v1/auction/curves",
            Some(&alice),
            curve(1, "buy", "stepwise", &[("100.00", "1")]),
        )
        .await;
    assert_eq!((status, &ack["status"]), (201, &json!("replaced")), "{ack}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_curve_input_gets_its_problem_code() {
    let db_dir = tempfile::tempdir().unwrap();
    let url = support::sqlite_url(&db_dir.path().join("bad.db"));
    let data_dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(NOW));
    let alice = token("alice", Role::Trader, vec![1]);
    let (server, client) = start(data_dir.path(), &url, &clock).await;
    let too_many: Vec<(String, &str)> = (0..=AUCTION_POINTS_PER_CURVE_MAX)
        .map(|index| (format!("{index}.00"), "0.1"))
        .collect();
    let too_many: Vec<(&str, &str)> = too_many
        .iter()
        .map(|(price, qty)| (price.as_str(), *qty))
        .collect();
    let mut unknown_product = alice_curve();
    unknown_product["product"] = json!(1);
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "malformed body",
            json!({"account": 1, "product": product_id(), "side": "buy"}),
            422,
            "malformed_body",
        ),
        (
            "unknown side",
            curve(1, "sideways", "stepwise", &[("40.00", "1")]),
            422,
            "malformed_body",
        ),
        (
            "off-grid price",
            curve(1, "buy", "stepwise", &[("40.001", "1")]),
            400,
            "price_off_grid",
        ),
        (
            "price above the day-ahead limit",
            curve(1, "buy", "stepwise", &[("4000.01", "1")]),
            400,
            "price_out_of_limits",
        ),
        (
            "not a number",
            curve(1, "buy", "stepwise", &[("forty", "1")]),
            400,
            "bad_number",
        ),
        (
            "quantity off the lot",
            curve(1, "buy", "stepwise", &[("40.00", "0.15")]),
            400,
            "qty_off_lot",
        ),
        (
            "unsorted points",
            curve(1, "buy", "stepwise", &[("50.00", "1"), ("40.00", "1")]),
            400,
            "points_not_increasing",
        ),
        (
            "duplicate points",
            curve(1, "buy", "stepwise", &[("40.00", "1"), ("40.00", "1")]),
            400,
            "points_not_increasing",
        ),
        (
            "no points",
            curve(1, "buy", "stepwise", &[]),
            400,
            "curve_empty",
        ),
        (
            "rising piecewise-linear buy curve",
            curve(
                1,
                "buy",
                "piecewise_linear",
                &[("10.00", "1"), ("20.00", "2")],
            ),
            400,
            "curve_not_monotone",
        ),
        (
            "too many points",
            curve(1, "buy", "stepwise", &too_many),
            400,
            "too_many_points",
        ),
        ("unknown product", unknown_product, 422, "unknown_product"),
        (
            "another trader's account",
            curve(2, "buy", "stepwise", &[("40.00", "1")]),
            403,
            "forbidden",
        ),
    ];
    for (case, body, status, code) in cases {
        let (got_status, problem) = client
            .post("/api/v1/auction/curves", Some(&alice), body)
            .await;
        assert_eq!(
            (got_status, problem["code"].as_str()),
            (status, Some(code)),
            "{case}: {problem}"
        );
        assert_eq!(problem["status"], status, "{case}: a problem document");
        assert_eq!(
            problem["type"],
            format!("urn:voltex:problem:{code}"),
            "{case}"
        );
    }
    let (status, problem) = client
        .delete(
            &format!("/api/v1/auction/curves/{}/2/buy", product_id()),
            Some(&alice),
        )
        .await;
    assert_eq!((status, problem["code"].as_str()), (403, Some("forbidden")));
    let (status, problem) = client.get("/api/v1/auction/results/1", Some(&alice)).await;
    assert_eq!((status, problem["code"].as_str()), (404, Some("not_found")));

    pass_the_gate(&server, &clock).await;
    let (status, problem) = client
        .post("/api/v1/auction/curves", Some(&alice), alice_curve())
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("auction_gate_closed"))
    );
    let (_, result) = client
        .get(
            &format!("/api/v1/auction/results/{}", product_id()),
            Some(&alice),
        )
        .await;
    assert_eq!(result["auction_phase"], "cleared");
    assert_eq!(
        result["volume_mw"], "0",
        "no valid curve reached the auction"
    );

    let (_, openapi) = client.get("/api/v1/openapi.json", Some(&alice)).await;
    for path in [
        "/api/v1/auction/curves",
        "/api/v1/auction/curves/{product}/{account}/{side}",
        "/api/v1/auction/results/{product}",
    ] {
        assert!(
            openapi["paths"][path].is_object(),
            "{path} in the OpenAPI document"
        );
    }
    let fill = &openapi["components"]["schemas"]["AccountFill"]["properties"];
    for field in [
        "source",
        "trade_id",
        "order_id",
        "price_eur_per_mwh",
        "qty_mw",
    ] {
        assert!(
            fill[field].is_object(),
            "AccountFill.{field} in the OpenAPI document"
        );
    }
    server.stop().await.unwrap();
}
