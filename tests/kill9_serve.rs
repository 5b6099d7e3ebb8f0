//! The real `voltex serve` process killed with SIGKILL (no shutdown, no flush, no
//! destructor) while traders' orders stream in: after a restart on the same data
//! directory, every order the API acknowledged (201) is resting with its id, the
//! database projection catches up from the journal, and new order ids never reuse an
//! acknowledged one. The journal is the durability boundary, not a clean stop.
//!
//! Runs the binary Cargo builds for this package (`CARGO_BIN_EXE_voltex`) on embedded
//! defaults (SQLite in a temporary data directory); it needs no outside service.

mod support;

use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use voltex::server::auth::Role;

const SECRET: &str = "kill9-test-secret-0123456789abcdef-xyz";
/// Hang guard for waits on the process: not a performance expectation.
const GUARD: Duration = Duration::from_secs(120);
/// Concurrent HTTP clients posting orders.
const N_CLIENTS: usize = 8;
/// How long orders stream before the kill.
const STREAM_BEFORE_KILL: Duration = Duration::from_millis(800);

/// Starts `voltex serve` on `data_dir` and returns it with its API base URL.
fn start_serve(data_dir: &std::path::Path) -> (Child, String) {
    support::spawn_serve(data_dir, SECRET, &[])
}

async fn post_order(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    product: u64,
    price: &str,
) -> Result<(u16, Value), reqwest::Error> {
    let response = http
        .post(format!("{base}/api/v1/orders"))
        .bearer_auth(token)
        .json(&json!({"account": 1, "product": product, "side": "buy",
                      "price_eur_per_mwh": price, "qty_mw": "1"}))
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_order_survives_sigkill() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let token = support::token(SECRET, "kill9", Role::Trader, vec![1]);
    let http = reqwest::Client::new();

    let (mut child, base) = start_serve(data_dir.path());
    let products: Value = http
        .get(format!("{base}/api/v1/products"))
        .send()
        .await
        .expect("products")
        .json()
        .await
        .expect("products json");
    let product = products
        .as_array()
        .and_then(|all| all.iter().find(|p| p["phase"] == "open"))
        .and_then(|p| p["product_id"].as_u64())
        .expect("an open product");

    // Non-crossing buys at distinct prices, so every acknowledged order stays resting.
    let acknowledged = Arc::new(Mutex::new(Vec::<u64>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..N_CLIENTS {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        let (acknowledged, stop) = (Arc::clone(&acknowledged), Arc::clone(&stop));
        clients.push(tokio::spawn(async move {
            let mut n = 0_u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let cents = 1_000 + (n * N_CLIENTS as u32 + client as u32) % 2_000;
                let price = format!("{}.{:02}", cents / 100, cents % 100);
                n += 1;
                match post_order(&http, &base, &token, product, &price).await {
                    Ok((201, body)) => {
                        let id = body["order_id"].as_u64().expect("order id");
                        acknowledged.lock().expect("lock").push(id);
                    }
                    // Over the account's rate limit: back off and go on.
                    Ok((429, _)) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Ok((status, body)) => panic!("order refused: {status} {body}"),
                    // The process died under this request: not acknowledged.
                    Err(_) => break,
                }
            }
        }));
    }
    tokio::time::sleep(STREAM_BEFORE_KILL).await;
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("reaped");
    assert!(!status.success(), "killed, not exited: {status:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        support::guarded("client", GUARD, client)
            .await
            .expect("client task");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(
        acknowledged.len() > 10,
        "orders were acknowledged before the kill: {}",
        acknowledged.len()
    );

    let (mut child, base) = start_serve(data_dir.path());
    let mut missing = Vec::new();
    for id in &acknowledged {
        let response = http
            .get(format!("{base}/api/v1/orders/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("get order");
        if response.status() != 200 {
            missing.push((*id, response.status().as_u16()));
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged orders lost: {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(10)]
    );
    eprintln!(
        "{} orders acknowledged before SIGKILL, all resting after the restart",
        acknowledged.len()
    );
    // The database projection catches up from the journal (in event order, so once
    // it holds the newest acknowledged order it holds all before it).
    let highest = acknowledged.iter().max().copied().unwrap_or(0);
    support::guarded("projection catches up", GUARD, async {
        loop {
            let history: Value = http
                .get(format!("{base}/api/v1/accounts/1/orders?limit=1000"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("history")
                .json()
                .await
                .expect("history json");
            let has_highest = history
                .as_array()
                .is_some_and(|rows| rows.iter().any(|r| r["order_id"].as_u64() == Some(highest)));
            if has_highest {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // New orders carry on above every acknowledged id.
    let (status, body) = post_order(&http, &base, &token, product, "9.00")
        .await
        .expect("post after restart");
    assert_eq!(status, 201, "{body}");
    let new_id = body["order_id"].as_u64().expect("order id");
    assert!(
        new_id > highest,
        "new id {new_id} <= acknowledged {highest}"
    );
    child.kill().expect("stop");
    let _ = child.wait();
}
