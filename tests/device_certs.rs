//! Device certificates from the API: a server given a device CA (`device_ca_dir`)
//! issues a registered device its QUIC client certificate over
//! `POST /api/v1/devices/{id}/certificate`, records the fingerprint on the device,
//! and that certificate then opens a real mutual-TLS QUIC connection to a platform
//! endpoint under the same CA, which reads the device id from it. Bad requests get
//! their problem codes; a server without a CA answers 503; an unreadable CA directory
//! stops the server at start. With the device's CSR, the platform signs the device-held
//! key and returns no key; an unusable or foreign CSR is a 400 with its code. A
//! replaced or deleted certificate is revoked: refused by the QUIC platform, its live
//! connection closed, and still revoked after a restart.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use voltex::server::RunningServer;
use voltex::server::auth::Role;
use voltex::server::clock::ManualClock;
use voltex::server::config::ServerConfig;
use voltex_dispatch::DeviceId;
use voltex_dispatch::message::{Heartbeat, Message};
use voltex_dispatch::transport::certs::{self, CaFiles};
use voltex_dispatch::transport::{
    DeviceLink, PlatformLink, QuicDeviceConfig, QuicPlatformConfig, quic_device, quic_platform,
};
use voltex_market::UtcNanos;

const SECRET: &str = "device-certs-test-secret-0123456789abcdef";
/// 2026-01-05 10:00:00 UTC.
const NOW: UtcNanos = UtcNanos(1_767_607_200_000_000_000);
/// Hang guard, not a performance expectation.
const GUARD: Duration = Duration::from_secs(60);

fn config(data_dir: &std::path::Path, device_ca_dir: Option<std::path::PathBuf>) -> ServerConfig {
    ServerConfig {
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        data_dir: data_dir.to_path_buf(),
        database_url: Some(format!(
            "sqlite://{}?mode=rwc",
            data_dir.join("certs.db").display()
        )),
        jwt_secret: Some(SECRET.into()),
        intraday_hours_ahead: 2,
        device_ca_dir,
        ..ServerConfig::default()
    }
}

/// A server with a device CA (`device_ca_dir`) on temporary directories, the devices
/// `device_ids` registered, and what the tests use to call it.
struct CaServer {
    ca: CaFiles,
    server: RunningServer,
    /// The server's configuration (to restart it on the same data).
    config: ServerConfig,
    base: String,
    http: reqwest::Client,
    operator: String,
    trader: String,
    /// The CA and data directories, removed when dropped.
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn ca_server(device_ids: &[&str]) -> CaServer {
    let ca_dir = tempfile::tempdir().expect("tempdir");
    let ca: CaFiles = certs::init_ca("device-certs test CA").expect("CA");
    std::fs::write(ca_dir.path().join("ca.pem"), &ca.cert_pem).expect("ca.pem");
    std::fs::write(ca_dir.path().join("ca.key"), &ca.key_pem).expect("ca.key");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let server_config = config(data_dir.path(), Some(ca_dir.path().to_path_buf()));
    let server = RunningServer::start(server_config.clone(), Arc::new(ManualClock::new(NOW)))
        .await
        .expect("server");
    let base = format!("http://{}", server.http_addr);
    let http = reqwest::Client::new();
    let operator = support::token(SECRET, "olga", Role::Operator, vec![]);
    for id in device_ids {
        let (status, body) = post(
            &http,
            format!("{base}/api/v1/devices"),
            &operator,
            Some(
                json!({"device_id": id, "name": "garage", "capacity_wh": 10_000,
                        "max_charge_w": 5_000, "max_discharge_w": 5_000}),
            ),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    CaServer {
        ca,
        server,
        config: server_config,
        base,
        http,
        operator,
        trader: support::token(SECRET, "alice", Role::Trader, vec![1]),
        _dirs: (ca_dir, data_dir),
    }
}

/// The certificate works: mutual TLS against a platform endpoint under `ca`, which
/// reads `device_id` from the certificate and receives a heartbeat over it.
async fn assert_connects_as(ca: &CaFiles, cert_pem: String, key_pem: String, device_id: &str) {
    let server_cert = certs::issue_server(ca, &["localhost".into()]).expect("server cert");
    let mut platform = quic_platform(QuicPlatformConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        ca.cert_pem.clone(),
        server_cert.cert_pem,
        server_cert.key_pem,
    ))
    .await
    .expect("QUIC platform");
    let mut device = quic_device(QuicDeviceConfig::new(
        platform.local_addr().expect("addr"),
        "localhost",
        ca.cert_pem.clone(),
        cert_pem,
        key_pem,
    ))
    .await
    .expect("QUIC device");
    let id = DeviceId::new(device_id).expect("id");
    assert_eq!(device.device(), &id);
    let heartbeat = Message::Heartbeat(Heartbeat {
        device: id.clone(),
        at: NOW,
        uptime_s: 1,
        active: None,
        outbox_len: 0,
    });
    support::guarded("connected", GUARD, async {
        while !platform.is_connected(&id) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    device.send(&heartbeat).await.expect("send");
    let received = support::guarded("heartbeat", GUARD, platform.recv())
        .await
        .expect("received");
    assert_eq!(received, (id, heartbeat));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_csr_is_signed_and_its_private_key_never_leaves_the_device() {
    let CaServer {
        ca,
        server,
        base,
        http,
        operator,
        // Bound, not `..`: the directories must outlive the server.
        _dirs,
        ..
    } = ca_server(&["pi-csr-1", "pi-csr-2"]).await;
    let issue_url = format!("{base}/api/v1/devices/pi-csr-1/certificate");

    // On the device: a key pair and a request. Only the request goes to the platform.
    let device = DeviceId::new("pi-csr-1").expect("id");
    let request = certs::device_csr(&device).expect("CSR");
    let (status, issued) = post(
        &http,
        issue_url.clone(),
        &operator,
        Some(json!({"csr_pem": request.csr_pem})),
    )
    .await;
    assert_eq!(status, 201, "{issued}");
    assert_eq!(issued["key_pem"], Value::Null, "no key from the platform");
    let cert_pem = issued["cert_pem"].as_str().expect("cert").to_string();
    let stored = server
        .state
        .db
        .get_device("pi-csr-1")
        .await
        .expect("db")
        .expect("device");
    assert_eq!(
        stored.cert_fingerprint_sha256.as_deref(),
        Some(
            certs::fingerprint_sha256(&cert_pem)
                .expect("fingerprint")
                .as_str()
        )
    );
    // The device's own key opens the connection with the signed certificate.
    assert_connects_as(&ca, cert_pem, request.key_pem, "pi-csr-1").await;

    // Bad requests, each with its code; none changes the recorded certificate.
    let other = certs::device_csr(&DeviceId::new("pi-csr-2").expect("id")).expect("CSR");
    let mut tampered = request
        .csr_pem
        .replace("-----BEGIN CERTIFICATE REQUEST-----\n", "");
    tampered.insert_str(0, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA");
    let cases = [
        (json!({"csr_pem": other.csr_pem}), "csr_device_mismatch"),
        (json!({"csr_pem": "not a request"}), "invalid_csr"),
        (json!({"csr_pem": ca.cert_pem}), "invalid_csr"),
        (json!({"csr_pem": tampered}), "invalid_csr"),
        (json!({"csr": request.csr_pem}), "malformed_body"),
        (json!("a CSR"), "malformed_body"),
        (json!({"csr_pem": 42}), "malformed_body"),
    ];
    for (body, code) in cases {
        let (status, problem) = post(&http, issue_url.clone(), &operator, Some(body.clone())).await;
        assert_eq!(
            (status, problem["code"].clone()),
            (400, json!(code)),
            "{body} -> {problem}"
        );
    }
    let after = server
        .state
        .db
        .get_device("pi-csr-1")
        .await
        .expect("db")
        .expect("device");
    assert_eq!(
        after.cert_fingerprint_sha256,
        stored.cert_fingerprint_sha256
    );
    server.stop().await.expect("stop");
}

async fn post(
    http: &reqwest::Client,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    send(http, reqwest::Method::POST, url, token, body).await
}

async fn delete(http: &reqwest::Client, url: String, token: &str) -> (u16, Value) {
    send(http, reqwest::Method::DELETE, url, token, None).await
}

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issued_certificate_opens_a_mutual_tls_quic_connection_as_its_device() {
    let CaServer {
        ca,
        server,
        base,
        http,
        operator,
        trader,
        // Bound, not `..`: the directories must outlive the server.
        _dirs,
        ..
    } = ca_server(&["pi-cert-1"]).await;

    let issue_url = format!("{base}/api/v1/devices/pi-cert-1/certificate");
    let (status, issued) = post(&http, issue_url.clone(), &operator, None).await;
    assert_eq!(status, 201, "{issued}");
    assert_eq!(issued["device_id"], "pi-cert-1");
    assert_eq!(issued["ca_cert_pem"], ca.cert_pem.as_str());
    let cert_pem = issued["cert_pem"].as_str().expect("cert").to_string();
    let key_pem = issued["key_pem"].as_str().expect("key").to_string();
    let fingerprint = issued["cert_fingerprint_sha256"]
        .as_str()
        .expect("fingerprint");
    assert_eq!(
        fingerprint,
        certs::fingerprint_sha256(&cert_pem).expect("fingerprint of the PEM")
    );
    let stored = server
        .state
        .db
        .get_device("pi-cert-1")
        .await
        .expect("db")
        .expect("device");
    assert_eq!(stored.cert_fingerprint_sha256.as_deref(), Some(fingerprint));

    assert_connects_as(&ca, cert_pem, key_pem, "pi-cert-1").await;

    // A re-issue replaces the recorded certificate.
    let (status, again) = post(&http, issue_url.clone(), &operator, None).await;
    assert_eq!(status, 201, "{again}");
    assert_ne!(
        again["cert_fingerprint_sha256"],
        issued["cert_fingerprint_sha256"]
    );

    // Bad requests.
    let (status, problem) = post(&http, issue_url.clone(), &trader, None).await;
    assert_eq!(status, 403, "{problem}");
    let (status, problem) = post(
        &http,
        format!("{base}/api/v1/devices/pi-unknown/certificate"),
        &operator,
        None,
    )
    .await;
    assert_eq!(
        (status, problem["code"].clone()),
        (404, json!("not_found")),
        "{problem}"
    );
    let (status, problem) = post(
        &http,
        format!("{base}/api/v1/devices/bad%20id/certificate"),
        &operator,
        None,
    )
    .await;
    assert_eq!(
        (status, problem["code"].clone()),
        (400, json!("invalid_device_id")),
        "{problem}"
    );
    // Each issue is audited.
    let audit = server.state.db.list_audit(None, 100).await.expect("audit");
    let issues = audit
        .iter()
        .filter(|entry| entry.action == "device.certificate")
        .count();
    assert!(issues >= 5, "{audit:?}");
    server.stop().await.expect("stop");

    // A server without a CA issues nothing.
    let plain_dir = tempfile::tempdir().expect("tempdir");
    let plain = RunningServer::start(
        config(plain_dir.path(), None),
        Arc::new(ManualClock::new(NOW)),
    )
    .await
    .expect("server");
    let (status, problem) = post(
        &http,
        format!(
            "http://{}/api/v1/devices/pi-cert-1/certificate",
            plain.http_addr
        ),
        &operator,
        None,
    )
    .await;
    assert_eq!(
        (status, problem["code"].clone()),
        (503, json!("no_device_ca")),
        "{problem}"
    );
    plain.stop().await.expect("stop");

    // An unusable CA directory stops the server at start.
    let broken_dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(broken_dir.path().join("ca.pem"), "not a certificate").expect("write");
    std::fs::write(broken_dir.path().join("ca.key"), "not a key").expect("write");
    for dir in [
        broken_dir.path().to_path_buf(),
        broken_dir.path().join("missing"),
    ] {
        let data = tempfile::tempdir().expect("tempdir");
        let error = RunningServer::start(
            config(data.path(), Some(dir)),
            Arc::new(ManualClock::new(NOW)),
        )
        .await
        .expect_err("refused");
        assert!(
            matches!(error, voltex::server::ServerError::DeviceCa { .. }),
            "{error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_certificates_are_refused_closed_and_still_revoked_after_a_restart() {
    let CaServer {
        ca,
        server,
        config: server_config,
        base,
        http,
        operator,
        trader,
        _dirs,
    } = ca_server(&["pi-rev-1"]).await;
    let cert_url = format!("{base}/api/v1/devices/pi-rev-1/certificate");
    let revoked = server.state.revoked_certificates.clone();

    // Issue, then re-issue: the replaced certificate is revoked.
    let (status, first) = post(&http, cert_url.clone(), &operator, None).await;
    assert_eq!(status, 201, "{first}");
    let first_fingerprint = first["cert_fingerprint_sha256"]
        .as_str()
        .expect("fp")
        .to_string();
    assert!(revoked.is_empty());
    let (status, second) = post(&http, cert_url.clone(), &operator, None).await;
    assert_eq!(status, 201, "{second}");
    let second_fingerprint = second["cert_fingerprint_sha256"]
        .as_str()
        .expect("fp")
        .to_string();
    assert!(revoked.is_revoked(&first_fingerprint));
    assert!(!revoked.is_revoked(&second_fingerprint));

    // A platform endpoint sharing the server's set: the current certificate connects,
    // the replaced one does not.
    let server_cert = certs::issue_server(&ca, &["localhost".into()]).expect("server cert");
    let mut quic_config = QuicPlatformConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        ca.cert_pem.clone(),
        server_cert.cert_pem,
        server_cert.key_pem,
    );
    quic_config.revoked = revoked.clone();
    let platform = quic_platform(quic_config).await.expect("QUIC platform");
    let device_config = |issued: &Value| {
        let mut config = QuicDeviceConfig::new(
            platform.local_addr().expect("addr"),
            "localhost",
            ca.cert_pem.clone(),
            issued["cert_pem"].as_str().expect("cert").to_string(),
            issued["key_pem"].as_str().expect("key").to_string(),
        );
        config.reconnect.delay_max = Duration::from_millis(200);
        config
    };
    let id = DeviceId::new("pi-rev-1").expect("id");
    let old = quic_device(device_config(&first)).await.expect("device");
    support::guarded("the replaced certificate is refused", GUARD, async {
        while platform.stats().handshakes_refused == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(!platform.is_connected(&id));
    drop(old);
    let _current = quic_device(device_config(&second)).await.expect("device");
    support::guarded("the current certificate connects", GUARD, async {
        while !platform.is_connected(&id) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // Bad requests change nothing.
    let (status, problem) = delete(&http, cert_url.clone(), &trader).await;
    assert_eq!(status, 403, "{problem}");
    for (device, expected) in [
        ("pi-nobody", (404, "not_found")),
        ("bad%20id", (400, "invalid_device_id")),
    ] {
        let url = format!("{base}/api/v1/devices/{device}/certificate");
        let (status, problem) = delete(&http, url, &operator).await;
        assert_eq!(
            (status, problem["code"].clone()),
            (expected.0, json!(expected.1)),
            "{problem}"
        );
    }
    assert!(platform.is_connected(&id));

    // Revoke: the live connection closes and stays out.
    let (status, answer) = delete(&http, cert_url.clone(), &operator).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"device_id": "pi-rev-1", "revoked_fingerprint_sha256": second_fingerprint})
    );
    support::guarded("the revoked device is disconnected", GUARD, async {
        while platform.is_connected(&id) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let stored = server
        .state
        .db
        .get_device("pi-rev-1")
        .await
        .expect("db")
        .expect("device");
    assert_eq!(stored.cert_fingerprint_sha256, None);
    let (status, problem) = delete(&http, cert_url.clone(), &operator).await;
    assert_eq!(
        (status, problem["code"].clone()),
        (409, json!("no_certificate")),
        "{problem}"
    );
    // A revoked certificate cannot be recorded again.
    assert!(
        server
            .state
            .db
            .set_device_cert_fingerprint("pi-rev-1", &first_fingerprint)
            .await
            .is_err()
    );
    let audit = server.state.db.list_audit(None, 100).await.expect("audit");
    let revocations = audit
        .iter()
        .filter(|entry| entry.action == "device.certificate.revoke")
        .count();
    assert_eq!(revocations, 5, "every DELETE is audited: {audit:?}");
    server.stop().await.expect("stop");

    // After a restart on the same database both certificates are still refused.
    let restarted = RunningServer::start(server_config, Arc::new(ManualClock::new(NOW)))
        .await
        .expect("restarted server");
    let reloaded = &restarted.state.revoked_certificates;
    assert_eq!(reloaded.len(), 2);
    assert!(reloaded.is_revoked(&first_fingerprint) && reloaded.is_revoked(&second_fingerprint));
    restarted.stop().await.expect("stop");
}
