//! QUIC transport on loopback with real certificates from `transport::certs`: delivery
//! both ways, the device id taken from the certificate, refusal of a certificate from
//! another CA, dropping of uplink messages that claim another device, a restart on the
//! same port, and refusal of revoked certificates (live connections closed).

use std::time::Duration;

use tokio::time::timeout;
use voltex_dispatch::message::*;
use voltex_dispatch::signing::ScheduleSigner;
use voltex_dispatch::transport::certs::{self, CaFiles};
use voltex_dispatch::transport::{
    DeviceLink, PlatformLink, QuicDeviceConfig, QuicDeviceLink, QuicPlatformConfig,
    QuicPlatformLink, RevokedCertificates, TransportError, quic_device, quic_platform,
};
use voltex_market::UtcNanos;

const PATIENCE: Duration = Duration::from_secs(20);

async fn platform(ca: &CaFiles) -> QuicPlatformLink {
    platform_revoking(ca, RevokedCertificates::new()).await
}

/// A platform that refuses the certificates in `revoked`.
async fn platform_revoking(ca: &CaFiles, revoked: RevokedCertificates) -> QuicPlatformLink {
    let server = certs::issue_server(ca, &["localhost".into()]).unwrap();
    let mut config = QuicPlatformConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        ca.cert_pem.clone(),
        server.cert_pem,
        server.key_pem,
    );
    config.revoked = revoked;
    quic_platform(config).await.unwrap()
}

/// A device whose certificate is signed by `issuing_ca`, trusting `platform_ca`.
async fn device(
    platform: &QuicPlatformLink,
    platform_ca: &CaFiles,
    issuing_ca: &CaFiles,
    id: &str,
) -> QuicDeviceLink {
    let issued = certs::issue_device(issuing_ca, &DeviceId::new(id).unwrap()).unwrap();
    quic_device(device_config(platform, platform_ca, issued))
        .await
        .unwrap()
}

/// A device config with `issued` as its certificate, trusting `platform_ca`, that
/// retries within half a second.
fn device_config(
    platform: &QuicPlatformLink,
    platform_ca: &CaFiles,
    issued: certs::IssuedCert,
) -> QuicDeviceConfig {
    let mut config = QuicDeviceConfig::new(
        platform.local_addr().unwrap(),
        "localhost",
        platform_ca.cert_pem.clone(),
        issued.cert_pem,
        issued.key_pem,
    );
    config.reconnect.delay_max = Duration::from_millis(500);
    config
}

async fn until_connected(platform: &QuicPlatformLink, device: &DeviceId) {
    timeout(PATIENCE, async {
        while !platform.is_connected(device) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("device connects");
}

fn heartbeat(device: &str, uptime_s: u64) -> Message {
    Message::Heartbeat(Heartbeat {
        device: DeviceId::new(device).unwrap(),
        at: UtcNanos(1),
        uptime_s,
        active: None,
        outbox_len: 0,
    })
}

fn schedule(device: &DeviceId) -> Message {
    let signer = ScheduleSigner::from_seed(&[9; 32]);
    let schedule = Schedule {
        device: device.clone(),
        schedule_id: ScheduleId(7),
        version: 1,
        issued_at: UtcNanos(0),
        valid_from: UtcNanos(0),
        valid_until: UtcNanos(3_600_000_000_000),
        randomize_start_s: 0,
        periods: vec![SchedulePeriod {
            offset_s: 0,
            target_w: 1_500,
            ramp_s: 0,
        }]
        .into(),
        fallback: Fallback::Idle,
    };
    Message::Schedule(signer.sign(schedule).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_both_ways_with_the_device_id_from_the_certificate() {
    let ca = certs::init_ca("voltex test CA").unwrap();
    let mut platform = platform(&ca).await;
    let mut link = device(&platform, &ca, &ca, "bat-q1").await;
    let id = DeviceId::new("bat-q1").unwrap();
    assert_eq!(link.device(), &id);
    until_connected(&platform, &id).await;

    link.send(&heartbeat("bat-q1", 10)).await.unwrap();
    let received = timeout(PATIENCE, platform.recv()).await.unwrap().unwrap();
    assert_eq!(received, (id.clone(), heartbeat("bat-q1", 10)));

    let sent = schedule(&id);
    platform.send_to(&id, &sent).await.unwrap();
    let inbound = timeout(PATIENCE, link.recv()).await.unwrap().unwrap();
    assert_eq!(inbound.message, sent);
    link.confirm(inbound.delivery).await.unwrap();
    assert!(link.is_connected());
    assert_eq!(platform.stats().handshakes_refused, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_with_a_certificate_from_another_ca_is_refused() {
    let ca = certs::init_ca("voltex test CA").unwrap();
    let rogue_ca = certs::init_ca("rogue CA").unwrap();
    let mut platform = platform(&ca).await;
    let mut rogue = device(&platform, &ca, &rogue_ca, "bat-rogue").await;
    let id = DeviceId::new("bat-rogue").unwrap();
    timeout(PATIENCE, async {
        while platform.stats().handshakes_refused == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the platform refuses the handshake");
    rogue.send(&heartbeat("bat-rogue", 1)).await.unwrap();
    assert!(
        timeout(Duration::from_secs(1), platform.recv())
            .await
            .is_err()
    );
    assert!(!platform.is_connected(&id));
    assert_eq!(platform.n_connected(), 0);
    assert!(matches!(
        platform.send_to(&id, &schedule(&id)).await,
        Err(TransportError::NotConnected(_))
    ));
    assert!(rogue.stats().connection_errors >= 1, "{:?}", rogue.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplink_claiming_another_device_is_dropped_and_counted() {
    let ca = certs::init_ca("voltex test CA").unwrap();
    let mut platform = platform(&ca).await;
    let mut link = device(&platform, &ca, &ca, "bat-q2").await;
    let id = DeviceId::new("bat-q2").unwrap();
    until_connected(&platform, &id).await;

    link.send(&heartbeat("bat-victim", 1)).await.unwrap();
    link.send(&heartbeat("bat-q2", 2)).await.unwrap();
    let received = timeout(PATIENCE, platform.recv()).await.unwrap().unwrap();
    assert_eq!(received, (id, heartbeat("bat-q2", 2)));
    assert_eq!(platform.stats().dropped_mismatched, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_reconnects_after_the_platform_restarts() {
    let ca = certs::init_ca("voltex test CA").unwrap();
    let server = certs::issue_server(&ca, &["localhost".into()]).unwrap();
    let first = platform(&ca).await;
    let addr = first.local_addr().unwrap();
    let mut link = device(&first, &ca, &ca, "bat-q3").await;
    let id = DeviceId::new("bat-q3").unwrap();
    until_connected(&first, &id).await;
    // Returns once the socket is closed, drained or not.
    first.shutdown().await;
    let config =
        QuicPlatformConfig::new(addr, ca.cert_pem.clone(), server.cert_pem, server.key_pem);
    // No retry: after `shutdown` the port is free at once.
    let mut second = quic_platform(config).await.unwrap();
    until_connected(&second, &id).await;
    link.send(&heartbeat("bat-q3", 3)).await.unwrap();
    let received = timeout(PATIENCE, second.recv()).await.unwrap().unwrap();
    assert_eq!(received, (id, heartbeat("bat-q3", 3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_frees_the_port_for_an_immediate_rebind() {
    let ca = certs::init_ca("voltex test CA").unwrap();
    let server = certs::issue_server(&ca, &["localhost".into()]).unwrap();
    let first = platform(&ca).await;
    let addr = first.local_addr().unwrap();
    // Several live connections, so there is something to drain.
    let mut links = Vec::new();
    for n in 0..3 {
        let id = format!("bat-s{n}");
        links.push(device(&first, &ca, &ca, &id).await);
        until_connected(&first, &DeviceId::new(id).unwrap()).await;
    }
    // Returns once the socket is closed, drained or not.
    first.shutdown().await;
    // With `drop(first)` in place of `shutdown` this bind fails with AddrInUse.
    let config =
        QuicPlatformConfig::new(addr, ca.cert_pem.clone(), server.cert_pem, server.key_pem);
    let second = quic_platform(config)
        .await
        .expect("the port is free at once");
    assert_eq!(second.local_addr().unwrap(), addr);
    // The devices find the new endpoint by themselves.
    for n in 0..3 {
        until_connected(&second, &DeviceId::new(format!("bat-s{n}")).unwrap()).await;
    }
    drop(links);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_and_its_live_connection_closed() {
    let ca = certs::init_ca("voltex test CA").unwrap();
    let revoked = RevokedCertificates::new();
    let mut platform = platform_revoking(&ca, revoked.clone()).await;
    let issue = |name: &str| {
        let id = DeviceId::new(name).unwrap();
        let issued = certs::issue_device(&ca, &id).unwrap();
        let fingerprint = certs::fingerprint_sha256(&issued.cert_pem).unwrap();
        (id, fingerprint, device_config(&platform, &ca, issued))
    };
    let (id, fingerprint, config) = issue("bat-r1");
    let (other_id, _, other_config) = issue("bat-r2");
    let _link = quic_device(config).await.unwrap();
    let mut other = quic_device(other_config).await.unwrap();
    until_connected(&platform, &id).await;
    until_connected(&platform, &other_id).await;
    let refused_before = platform.stats().handshakes_refused;

    // Revoked while connected: the connection closes, and the device's reconnects
    // with the same certificate are refused.
    assert!(revoked.revoke(&fingerprint));
    timeout(PATIENCE, async {
        while platform.is_connected(&id) || platform.stats().handshakes_refused <= refused_before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the revoked device is disconnected and refused on reconnect");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!platform.is_connected(&id), "it stays out");
    // Another device's certificate is untouched.
    assert!(platform.is_connected(&other_id));
    other.send(&heartbeat("bat-r2", 1)).await.unwrap();
    let received = timeout(PATIENCE, platform.recv()).await.unwrap().unwrap();
    assert_eq!(received, (other_id, heartbeat("bat-r2", 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_revoked_before_it_connects_never_gets_in() {
    let ca = certs::init_ca("voltex test CA").unwrap();
    let revoked = RevokedCertificates::new();
    let platform = platform_revoking(&ca, revoked.clone()).await;
    let id = DeviceId::new("bat-r3").unwrap();
    let issued = certs::issue_device(&ca, &id).unwrap();
    revoked.revoke(
        &certs::fingerprint_sha256(&issued.cert_pem)
            .unwrap()
            .to_uppercase(),
    );
    let _link = quic_device(device_config(&platform, &ca, issued))
        .await
        .unwrap();
    timeout(PATIENCE, async {
        while platform.stats().handshakes_refused < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every attempt is refused");
    assert!(!platform.is_connected(&id));
    assert_eq!(platform.stats().connects, 0);
}
