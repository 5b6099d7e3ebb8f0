//! `POST /api/v1/schedules` and `GET /api/v1/rollouts/{id}` over real HTTP, with a
//! real orchestrator on the server's database behind a test-driven platform link: the
//! schedules are validated (one typed problem code per kind of bad input), signed,
//! persisted and sent; the agent's ack shows up as a fleet event; a server without an
//! orchestrator answers 503; `POST /api/v1/devices` registers once (409 after). Fleet
//! events are checked on the broadcast the WebSocket stream reads, through the
//! stream's per-role filter (`ws::fleet_message`), and over a real WebSocket.
//!
//! Runs on SQLite (the repository suite covers PostgreSQL for the same queries).

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use voltex::db::NewDevice;
use voltex::server::RunningServer;
use voltex::server::api::fleet_events::{EventingStore, FleetEvent};
use voltex::server::api::ws::{StreamMessage, fleet_message};
use voltex::server::auth::{Claims, JwtKeys, Role};
use voltex::server::clock::{Clock, ManualClock};
use voltex::server::config::ServerConfig;
use voltex::server::fleet::{Orchestrator, OrchestratorConfig, TransportKind};
use voltex_dispatch::{Ack, AckStatus, DeviceId, Message, ScheduleSigner};
use voltex_market::UtcNanos;

const SECRET: &str = "schedules-test-secret-0123456789abcdef";
/// 2026-01-05 10:00:00 UTC.
const NOW: UtcNanos = UtcNanos(1_767_607_200_000_000_000);

fn claims(subject: &str, role: Role) -> Claims {
    Claims {
        sub: subject.into(),
        role,
        accounts: vec![1],
        iat: 0,
        exp: 4_000_000_000,
    }
}

fn token(subject: &str, role: Role) -> String {
    JwtKeys::from_secret(SECRET.as_bytes())
        .issue(&claims(subject, role))
        .expect("token")
}

struct Harness {
    server: RunningServer,
    http: reqwest::Client,
    base: String,
    uplink: mpsc::Sender<(DeviceId, Message)>,
    downlink: mpsc::Receiver<(DeviceId, Message)>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn post(&self, token: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/api/v1/schedules", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json body"))
    }

    async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json body"))
    }
}

/// A server on SQLite with two registered devices (`bat-1`, `bat-2`: ±5 kW) and,
/// if `with_orchestrator`, an orchestrator attached as `voltex up` does.
async fn start(with_orchestrator: bool) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(NOW));
    let config = ServerConfig {
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_path_buf(),
        jwt_secret: Some(SECRET.into()),
        intraday_hours_ahead: 1,
        ..ServerConfig::default()
    };
    let server = RunningServer::start(config, Arc::clone(&clock))
        .await
        .expect("server");
    for device in ["bat-1", "bat-2"] {
        server
            .state
            .db
            .register_device(&NewDevice {
                device_id: device.into(),
                name: device.into(),
                public_key_hex: None,
                cert_fingerprint_sha256: None,
                mqtt_credential_hash: None,
                capacity_wh: 10_000,
                max_charge_w: 5_000,
                max_discharge_w: 5_000,
                registered_at_ns: NOW.nanos(),
            })
            .await
            .expect("device");
    }
    let (uplink, uplink_rx) = mpsc::channel(16);
    let (downlink_tx, downlink) = mpsc::channel(16);
    if with_orchestrator {
        let orchestrator = Orchestrator::builder(
            OrchestratorConfig::default(),
            EventingStore::new(server.state.db.clone(), server.state.fleet_events.clone()),
            ScheduleSigner::from_seed(&[7; 32]),
            clock,
        )
        .link(
            TransportKind::Mqtt,
            support::FakeLink {
                uplink: uplink_rx,
                downlink: downlink_tx,
            },
        )
        .start()
        .expect("orchestrator");
        server
            .state
            .orchestrator
            .set(orchestrator)
            .expect("first orchestrator");
    }
    let base = format!("http://{}", server.http_addr);
    Harness {
        server,
        http: reqwest::Client::new(),
        base,
        uplink,
        downlink,
        _dir: dir,
    }
}

fn request(devices: Value) -> Value {
    json!({
        "valid_from": "2026-01-05T11:00:00Z",
        "valid_until": "2026-01-06T11:00:00Z",
        "devices": devices,
    })
}

fn one_device(device: &str, periods: Value) -> Value {
    request(json!([{ "device_id": device, "periods": periods }]))
}

async fn next_event(events: &mut tokio::sync::broadcast::Receiver<FleetEvent>) -> FleetEvent {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("a fleet event within 10 s")
        .expect("event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_orchestrator_answers_503() {
    let harness = start(false).await;
    let operator = token("olga", Role::Operator);
    let (status, body) = harness
        .post(
            &operator,
            one_device("bat-1", json!([{"offset_s": 0, "target_w": 1000}])),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("orchestrator_unavailable")),
        "{body}"
    );
    let (status, body) = harness.get(&operator, "/api/v1/rollouts/1").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("orchestrator_unavailable")),
        "{body}"
    );
    harness.server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_input_gets_its_problem_code() {
    let harness = start(true).await;
    let operator = token("olga", Role::Operator);
    let step = json!([{"offset_s": 0, "target_w": 1000}]);
    let cases: Vec<(&str, String, Value, u16, &str)> = vec![
        (
            "trader",
            token("tom", Role::Trader),
            one_device("bat-1", step.clone()),
            403,
            "forbidden",
        ),
        (
            "unknown device",
            operator.clone(),
            one_device("nope-9", step.clone()),
            422,
            "unknown_device",
        ),
        (
            "invalid device id",
            operator.clone(),
            one_device("bad id!", step.clone()),
            400,
            "invalid_device_id",
        ),
        (
            "empty periods",
            operator.clone(),
            one_device("bat-1", json!([])),
            400,
            "empty_periods",
        ),
        (
            "no devices",
            operator.clone(),
            request(json!([])),
            400,
            "no_devices",
        ),
        (
            "duplicate device",
            operator.clone(),
            request(
                json!([{"device_id": "bat-1", "periods": step}, {"device_id": "bat-1", "periods": step}]),
            ),
            400,
            "duplicate_device",
        ),
        (
            "discharge beyond the limit",
            operator.clone(),
            one_device("bat-1", json!([{"offset_s": 0, "target_w": 5001}])),
            422,
            "power_beyond_limits",
        ),
        (
            "charge beyond the limit",
            operator.clone(),
            one_device(
                "bat-2",
                json!([{"offset_s": 0, "target_w": 0}, {"offset_s": 60, "target_w": -5001}]),
            ),
            422,
            "power_beyond_limits",
        ),
        (
            "validity in the past",
            operator.clone(),
            json!({"valid_from": "2026-01-04T00:00:00Z", "valid_until": "2026-01-05T09:00:00Z",
                   "devices": [{"device_id": "bat-1", "periods": step}]}),
            422,
            "validity_in_past",
        ),
        (
            "validity reversed",
            operator.clone(),
            json!({"valid_from": "2026-01-06T00:00:00Z", "valid_until": "2026-01-05T12:00:00Z",
                   "devices": [{"device_id": "bat-1", "periods": step}]}),
            400,
            "invalid_validity",
        ),
        (
            "not a time",
            operator.clone(),
            json!({"valid_from": "tomorrow", "valid_until": "2026-01-06T12:00:00Z",
                   "devices": [{"device_id": "bat-1", "periods": step}]}),
            400,
            "bad_time",
        ),
        (
            "offsets not from 0",
            operator.clone(),
            one_device("bat-1", json!([{"offset_s": 30, "target_w": 100}])),
            400,
            "invalid_schedule",
        ),
        (
            "unknown field",
            operator.clone(),
            json!({"valid_from": "2026-01-05T11:00:00Z", "valid_until": "2026-01-06T11:00:00Z",
                   "devices": [], "priority": 1}),
            422,
            "malformed_body",
        ),
    ];
    for (name, token, body, status_expected, code_expected) in cases {
        let (status, problem) = harness.post(&token, body).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (status_expected, Some(code_expected)),
            "{name}: {problem}"
        );
    }
    assert!(
        harness.downlink.is_empty(),
        "nothing was sent for a refused request"
    );
    harness.server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_signed_persisted_sent_and_streamed_to_allowed_roles() {
    let mut harness = start(true).await;
    let operator = token("olga", Role::Operator);
    let mut events = harness.server.state.fleet_events.subscribe();
    let (status, accepted) = harness
        .post(
            &token("quinn", Role::Quant),
            request(json!([
                {"device_id": "bat-1", "periods": [{"offset_s": 0, "target_w": 2000}, {"offset_s": 3600, "target_w": -1500, "ramp_s": 60}]},
                {"device_id": "bat-2", "periods": [{"offset_s": 0, "target_w": -5000}]},
            ])),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let rollout = accepted["rollout_id"]
        .as_str()
        .expect("rollout id")
        .to_string();
    assert_eq!(accepted["schedules"][0]["device_id"], "bat-1");
    assert_eq!(accepted["schedules"][0]["version"], 1);
    assert_eq!(accepted["schedules"][1]["version"], 1);

    // Sent, signed with the orchestrator's key, as posted.
    let verifier = ScheduleSigner::from_seed(&[7; 32]).verifier();
    let mut sent = Vec::new();
    for _ in 0..2 {
        let (device, message) =
            tokio::time::timeout(Duration::from_secs(10), harness.downlink.recv())
                .await
                .expect("sent within 10 s")
                .expect("message");
        let Message::Schedule(signed) = message else {
            panic!("expected a schedule, got {message:?}");
        };
        assert!(verifier.verify(&signed).is_ok(), "signature verifies");
        assert_eq!(signed.schedule.device, device);
        sent.push(signed);
    }
    sent.sort_by(|a, b| a.schedule.device.as_str().cmp(b.schedule.device.as_str()));
    assert_eq!(sent[0].schedule.periods[1].target_w, -1500);
    assert_eq!(sent[0].schedule.periods[1].ramp_s, 60);
    assert_eq!(
        { sent[0].schedule.schedule_id.0 }.to_string(),
        accepted["schedules"][0]["schedule_id"]
            .as_str()
            .expect("id")
    );

    // Persisted: the seed's GET /schedules/{device_id} shows the version.
    let (status, history) = harness.get(&operator, "/api/v1/schedules/bat-1").await;
    assert_eq!(status, 200, "{history}");
    assert!(history.to_string().contains("\"version\":1"), "{history}");
    let (status, progress) = harness
        .get(&operator, &format!("/api/v1/rollouts/{rollout}"))
        .await;
    assert_eq!(status, 200, "{progress}");
    assert_eq!(progress["n_devices"], 2);
    let (status, missing) = harness.get(&operator, "/api/v1/rollouts/12345").await;
    assert_eq!((status, missing["code"].as_str()), (404, Some("not_found")));

    // Fleet events: one `issued` per device, then the agent's ack.
    let mut issued = [next_event(&mut events).await, next_event(&mut events).await];
    issued.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    assert_eq!(
        issued
            .iter()
            .map(|e| (e.device_id.as_str(), e.status.as_str(), e.version))
            .collect::<Vec<_>>(),
        vec![("bat-1", "issued", 1), ("bat-2", "issued", 1)]
    );
    harness
        .uplink
        .send((
            sent[0].schedule.device.clone(),
            Message::Ack(Ack {
                device: sent[0].schedule.device.clone(),
                outbox_seq: 1,
                schedule_id: sent[0].schedule.schedule_id,
                version: 1,
                status: AckStatus::Accepted,
                at: NOW,
            }),
        ))
        .await
        .expect("uplink");
    let acked = loop {
        let event = next_event(&mut events).await;
        if event.by_agent {
            break event;
        }
    };
    assert_eq!(
        (
            acked.device_id.as_str(),
            acked.status.as_str(),
            acked.version
        ),
        ("bat-1", "accepted", 1)
    );
    assert_eq!(
        acked.schedule_id,
        { sent[0].schedule.schedule_id.0 }.to_string()
    );

    // Who sees it on the stream.
    let sees =
        |subject: &str, role: Role| fleet_message(&acked, Some(&claims(subject, role))).is_some();
    assert!(sees("olga", Role::Operator));
    assert!(sees("quinn", Role::Quant));
    assert!(sees("bat-1", Role::Device), "a device sees its own events");
    assert!(
        !sees("bat-2", Role::Device),
        "a device never sees another device"
    );
    assert!(!sees("tom", Role::Trader));
    assert!(
        fleet_message(&acked, None).is_none(),
        "anonymous clients see none"
    );
    let Some(StreamMessage::Fleet { status, .. }) =
        fleet_message(&acked, Some(&claims("olga", Role::Operator)))
    else {
        panic!("expected a fleet message");
    };
    assert_eq!(status, "accepted");
    let text = serde_json::to_value(fleet_message(&acked, Some(&claims("olga", Role::Operator))))
        .expect("json");
    assert_eq!(text["type"], "fleet");

    // The next post gets the next version.
    let (status, again) = harness
        .post(
            &operator,
            one_device("bat-1", json!([{"offset_s": 0, "target_w": 0}])),
        )
        .await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["schedules"][0]["version"], 2);
    harness.server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_registers_a_device_once_and_gets_its_credential() {
    let mut harness = start(true).await;
    let operator = token("olga", Role::Operator);
    let register = |device_id: &str| {
        json!({"device_id": device_id, "name": "garage battery", "capacity_wh": 13_500,
               "max_charge_w": 4_000, "max_discharge_w": 4_500})
    };
    let post = |token: String, body: Value| {
        let http = harness.http.clone();
        let url = format!("{}/api/v1/devices", harness.base);
        async move {
            let response = http
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("request");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("json body"))
        }
    };
    let (status, registered) = post(operator.clone(), register("bat-new")).await;
    assert_eq!(status, 201, "{registered}");
    assert_eq!(registered["device"]["device_id"], "bat-new");
    assert_eq!(registered["device"]["max_discharge_w"], 4_500);
    assert_eq!(registered["mqtt_username"], "bat-new");
    let password = registered["mqtt_password"].as_str().expect("password");
    assert_eq!(password.len(), 64, "256 random bits, hex");
    let stored = harness
        .server
        .state
        .db
        .get_device("bat-new")
        .await
        .expect("db")
        .expect("stored");
    let hash = stored.mqtt_credential_hash.expect("hash stored");
    assert!(
        hash.starts_with("blake3:") && !hash.contains(password),
        "only the hash is stored"
    );

    let (status, problem) = post(operator.clone(), register("bat-new")).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("device_exists")),
        "{problem}"
    );
    let (status, problem) = post(operator.clone(), register("no spaces")).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("invalid_device_id")),
        "{problem}"
    );
    let (status, problem) = post(token("tom", Role::Trader), register("bat-x")).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (403, Some("forbidden")),
        "{problem}"
    );

    // The new device can be scheduled within its limits at once.
    let (status, accepted) = harness
        .post(
            &operator,
            one_device("bat-new", json!([{"offset_s": 0, "target_w": -4000}])),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let sent = tokio::time::timeout(Duration::from_secs(10), harness.downlink.recv())
        .await
        .expect("sent within 10 s")
        .expect("message");
    assert_eq!(sent.0.as_str(), "bat-new");
    harness.server.stop().await.expect("stop");
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next `n` `fleet` messages on `socket` (other message types are skipped).
async fn fleet_messages(socket: &mut Socket, n: usize) -> Vec<Value> {
    fleet_messages_and_others(socket, n).await.0
}

/// The next `n` `fleet` messages on `socket`, and the types of the other messages
/// received before them.
async fn fleet_messages_and_others(socket: &mut Socket, n: usize) -> (Vec<Value>, Vec<String>) {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let mut others = Vec::new();
    while out.len() < n {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("socket open")
            .expect("frame");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
            let value: Value = serde_json::from_str(&text).expect("json message");
            if value["type"] == "fleet" {
                out.push(value);
            } else {
                others.push(value["type"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    (out, others)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_carries_fleet_events_to_operators_and_only_own_ones_to_a_device() {
    let harness = start(true).await;
    let operator = token("olga", Role::Operator);
    let connect = |query: String| {
        let url = format!("ws://{}/api/v1/stream?{query}", harness.server.http_addr);
        async move {
            tokio_tungstenite::connect_async(url)
                .await
                .expect("websocket")
                .0
        }
    };
    let mut operator_socket = connect(format!("token={operator}")).await;
    let mut device_socket = connect(format!("token={}", token("bat-2", Role::Device))).await;
    let mut fleet_only_socket = connect(format!("market=false&token={operator}")).await;
    // All stream tasks subscribed (the handshake answer can precede the subscription).
    for _ in 0..200 {
        if harness.server.state.fleet_events.receiver_count() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(harness.server.state.fleet_events.receiver_count() >= 3);

    // Market data first: an order rests, which the default stream carries as depth.
    let products: Value = harness
        .http
        .get(format!("{}/api/v1/products", harness.base))
        .send()
        .await
        .expect("products")
        .json()
        .await
        .expect("json");
    let product = products[0]["product_id"]
        .as_u64()
        .expect("a listed product");
    let response = harness
        .http
        .post(format!("{}/api/v1/orders", harness.base))
        .bearer_auth(&operator)
        .json(&json!({"account": 1, "product": product, "side": "buy",
                      "price_eur_per_mwh": "40.00", "qty_mw": "1"}))
        .send()
        .await
        .expect("order");
    assert_eq!(response.status().as_u16(), 201);

    // bat-1 first: if a device could see another device's events, bat-2's socket
    // would get bat-1's `issued` before its own.
    for device in ["bat-1", "bat-2"] {
        let (status, body) = harness
            .post(
                &operator,
                one_device(device, json!([{"offset_s": 0, "target_w": 1000}])),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    let (seen, market_before) = fleet_messages_and_others(&mut operator_socket, 2).await;
    assert!(
        market_before.iter().any(|kind| kind == "depth"),
        "the default stream carries market data: {market_before:?}"
    );
    let (fleet_only, others) = fleet_messages_and_others(&mut fleet_only_socket, 2).await;
    assert!(
        others.is_empty(),
        "market=false carries no market data: {others:?}"
    );
    assert_eq!(fleet_only, seen, "the same fleet events");
    assert_eq!(
        seen.iter()
            .map(|m| (
                m["device_id"].as_str(),
                m["status"].as_str(),
                m["version"].as_u64()
            ))
            .collect::<Vec<_>>(),
        vec![
            (Some("bat-1"), Some("issued"), Some(1)),
            (Some("bat-2"), Some("issued"), Some(1))
        ]
    );
    let own = fleet_messages(&mut device_socket, 1).await;
    assert_eq!(own[0]["device_id"], "bat-2", "{own:?}");
    assert_eq!(own[0]["status"], "issued");
    assert!(
        own[0]["schedule_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    harness.server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_the_fleet_endpoints() {
    let harness = start(false).await;
    let doc: Value = harness
        .http
        .get(format!("{}/api/v1/openapi.json", harness.base))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let paths = &doc["paths"];
    assert!(paths["/api/v1/schedules"]["post"].is_object(), "{paths}");
    assert!(paths["/api/v1/rollouts/{rollout_id}"]["get"].is_object());
    assert!(paths["/api/v1/devices"]["post"].is_object());
    assert!(paths["/api/v1/devices/{device_id}/certificate"]["post"].is_object());
    assert!(paths["/api/v1/devices/{device_id}/telemetry"]["get"].is_object());
    assert!(paths["/api/v1/dashboard/dayahead"]["get"].is_object());
    assert!(paths["/api/v1/dashboard/faults"]["get"].is_object());
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["PostSchedules"].is_object());
    assert!(schemas["IssuedDeviceCertificate"].is_object());
    assert!(schemas["DayAheadPeriodRow"].is_object());
    assert!(schemas["DeviceFault"].is_object());
    assert!(schemas["FleetEvent"].is_object());
    assert!(
        schemas["StreamMessage"].to_string().contains("fleet"),
        "the stream's schema has the fleet message"
    );
    harness.server.stop().await.expect("stop");
}
