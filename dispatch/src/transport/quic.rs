//! QUIC transport (quinn) with mutual TLS 1.3: the platform's CA signs every device.
//!
//! # Framing
//! Each side opens **one long-lived unidirectional stream** per connection and writes
//! length-prefixed frames on it: a big-endian `u32` length (1..=[`MESSAGE_LEN_MAX`]) then
//! a [`codec`](crate::codec) frame. A length outside that range is a protocol violation
//! and closes the connection; a frame that fails [`decode`] is dropped and counted, the
//! stream stays usable. ALPN is `voltex/1`.
//!
//! # Identity
//! The platform verifies client certificates with rustls's `WebPkiClientVerifier` against
//! its CA, so a device without a certificate from that CA never completes the handshake
//! (counted as [`LinkStats::handshakes_refused`]). The device id is the certificate's
//! common name ([`certs::device_id_from_cert_der`]); an uplink message whose own device
//! field differs is dropped and counted. A new connection of a device replaces its older
//! one.
//!
//! # Liveness and delivery
//! Keep-alive pings every [`QuicDeviceConfig::keep_alive`] hold NAT bindings open; a
//! connection idle for [`QuicDeviceConfig::idle_timeout`] closes, and the device's
//! background task reconnects with [`Backoff`]. A frame whose write failed
//! is written again on the next connection; frames written but not yet delivered when a
//! connection dies are lost, so end-to-end delivery rests on the application (the platform
//! re-sends schedules until acked, the agent's outbox re-sends until receipted).
//! [`PlatformLink::send_to`] to a device without a live connection fails with
//! [`TransportError::NotConnected`]: QUIC has no broker to queue it.
//!
//! # Reconnect storms and restarts
//! When thousands of devices reconnect at once, at most
//! [`QuicPlatformConfig::handshakes_in_flight_max`] handshakes run; a device beyond that
//! is refused before any cryptography and retries after its back-off (counted as
//! [`LinkStats::handshakes_deferred`]). The UDP socket asks the kernel for a large receive
//! buffer ([`QuicPlatformConfig::recv_buffer_bytes`], past `net.core.rmem_max` when the
//! process may). Both keep datagrams from being dropped under load: a lost last
//! handshake flight left a device thinking itself connected until its probe timeout,
//! tens of seconds, and a lost ack delays a roll-out by a probe timeout too.
//!
//! The platform's stateless-reset key (RFC 9000 §10.3) and the key its connection ids are
//! checked with are derived from its private key, so a restarted platform recognises a
//! packet of a connection it no longer knows as one of its own and answers it with a
//! reset the device recognises: a device whose close frame was lost (a crash) learns at
//! its next keep-alive, not after its idle timeout.
//!
//! # Shutdown
//! [`QuicPlatformLink::shutdown`] closes every connection, lets them drain for at most
//! [`SHUTDOWN_DRAIN_MAX`] and then closes its UDP socket itself (it is a
//! `ReleasableSocket`, which quinn's handles do not keep open), so a platform
//! restarting on the same address binds at once, whatever the number of connections.
//! Dropping the link closes too, but the socket goes later, on quinn's driver task.
//!
//! # Invariants
//! - Every connection the platform keeps has a verified client certificate with a valid
//!   device id, not in [`QuicPlatformConfig::revoked`]; its uplink is attributed to that
//!   id only. Revoking a certificate closes its live connections.
//! - Every channel is bounded (the `*_channel_len` fields); a full channel makes the
//!   writer wait, which QUIC flow control turns into back-pressure on the peer.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use quinn_proto::HashedConnectionIdGenerator;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::releasable_socket::{RecvBuffer, ReleasableSocket};

use super::{
    Backoff, Counters, DeliveryToken, DeviceLink, Inbound, LinkStats, PlatformLink,
    ReconnectPolicy, RevokedCertificates, TokenKind, TransportError, certs, check_downlink,
    check_uplink,
};
use crate::codec::{MESSAGE_LEN_MAX, decode, encode_binary};
use crate::message::{DeviceId, Message};

/// ALPN protocol id.
pub const ALPN: &[u8] = b"voltex/1";
/// Application close code: normal shutdown.
const CLOSE_NORMAL: u32 = 0;
/// Application close code: the peer broke the framing.
const CLOSE_PROTOCOL: u32 = 1;
/// Application close code: the certificate carries no usable device id.
const CLOSE_IDENTITY: u32 = 2;
/// Application close code: the certificate is revoked.
const CLOSE_REVOKED: u32 = 3;

fn quic_error(what: &str, error: impl std::fmt::Display) -> TransportError {
    TransportError::Quic(format!("{what}: {error}"))
}

fn config_error(what: &str, error: impl std::fmt::Display) -> TransportError {
    TransportError::Config(format!("{what}: {error}"))
}

fn root_store(ca_cert_pem: &str) -> Result<rustls::RootCertStore, TransportError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_cert_pem.as_bytes()) {
        let cert = cert.map_err(|e| config_error("CA PEM", e))?;
        roots
            .add(cert)
            .map_err(|e| config_error("CA certificate", e))?;
    }
    if roots.is_empty() {
        return Err(TransportError::Config("no CA certificate in PEM".into()));
    }
    Ok(roots)
}

fn cert_chain(pem: &str) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_error("certificate PEM", e))?;
    if chain.is_empty() {
        return Err(TransportError::Config("no certificate in PEM".into()));
    }
    Ok(chain)
}

fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>, TransportError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| config_error("key PEM", e))
}

fn transport_config(
    keep_alive: Duration,
    idle_timeout: Duration,
) -> Result<quinn::TransportConfig, TransportError> {
    if keep_alive.is_zero() || keep_alive >= idle_timeout {
        return Err(TransportError::Config(
            "QUIC keep_alive must be > 0 and shorter than idle_timeout".into(),
        ));
    }
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(keep_alive))
        .max_idle_timeout(Some(
            idle_timeout
                .try_into()
                .map_err(|e| config_error("idle_timeout", e))?,
        ))
        .max_concurrent_bidi_streams(0u32.into())
        .max_concurrent_uni_streams(4u32.into());
    Ok(transport)
}

async fn write_frame(stream: &mut SendStream, frame: &[u8]) -> Result<(), TransportError> {
    let len = u32::try_from(frame.len()).map_err(|e| quic_error("frame length", e))?;
    stream
        .write_all(&len.to_be_bytes())
        .await
        .map_err(|e| quic_error("write", e))?;
    stream
        .write_all(frame)
        .await
        .map_err(|e| quic_error("write", e))
}

/// Reads the next frame; `Ok(None)` when the peer finished the stream cleanly.
async fn read_frame(stream: &mut RecvStream) -> Result<Option<Vec<u8>>, TransportError> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(error) => return Err(quic_error("read", error)),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MESSAGE_LEN_MAX {
        return Err(TransportError::Quic(format!(
            "frame length {len} out of range"
        )));
    }
    let mut frame = vec![0u8; len];
    stream
        .read_exact(&mut frame)
        .await
        .map_err(|e| quic_error("read", e))?;
    Ok(Some(frame))
}

// ---------------------------------------------------------------------------------------
// Platform side
// ---------------------------------------------------------------------------------------

/// The platform's QUIC endpoint configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuicPlatformConfig {
    /// UDP address to bind (port 0 picks one: see [`QuicPlatformLink::local_addr`]).
    pub bind: SocketAddr,
    /// The CA that signs device certificates (PEM).
    pub ca_cert_pem: String,
    /// The platform's certificate chain (PEM), signed by a CA the devices trust.
    pub server_cert_pem: String,
    /// The platform's private key (PEM).
    pub server_key_pem: String,
    /// Keep-alive ping interval.
    pub keep_alive: Duration,
    /// Idle time after which a connection closes.
    pub idle_timeout: Duration,
    /// Capacity of the channel of uplink messages to `recv` (shared by all devices).
    pub uplink_channel_len: usize,
    /// Capacity of each device's downlink frame channel.
    pub downlink_channel_len: usize,
    /// Receive buffer asked of the kernel for the UDP socket (`SO_RCVBUF`; past
    /// `net.core.rmem_max` with `SO_RCVBUFFORCE` when the process has `CAP_NET_ADMIN`).
    /// Every device's packets arrive on this one socket: when thousands handshake at
    /// once (a restart) or answer a roll-out together, the OS default (208 KiB on Linux,
    /// about 170 Initial packets) overflows, the kernel drops the datagrams, and each
    /// drop costs its device a probe timeout.
    pub recv_buffer_bytes: usize,
    /// Handshakes the platform carries at once; a device that tries while this many are
    /// under way is refused at once (a QUIC `CONNECTION_REFUSED`, no cryptography) and
    /// retries after its back-off. See [`PLATFORM_HANDSHAKES_IN_FLIGHT_MAX`].
    pub handshakes_in_flight_max: usize,
    /// Client certificates refused even though the CA signed them; shared with the
    /// owner, who may revoke more while the link runs (live connections close).
    pub revoked: RevokedCertificates,
}

impl QuicPlatformConfig {
    /// Defaults: keep-alive 10 s, idle timeout 30 s, channel lengths 65,536 and 64,
    /// receive buffer [`PLATFORM_RECV_BUFFER_BYTES`], handshakes in flight
    /// [`PLATFORM_HANDSHAKES_IN_FLIGHT_MAX`].
    pub fn new(
        bind: SocketAddr,
        ca_cert_pem: String,
        server_cert_pem: String,
        server_key_pem: String,
    ) -> QuicPlatformConfig {
        QuicPlatformConfig {
            bind,
            ca_cert_pem,
            server_cert_pem,
            server_key_pem,
            keep_alive: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            uplink_channel_len: 65_536,
            downlink_channel_len: 64,
            recv_buffer_bytes: PLATFORM_RECV_BUFFER_BYTES,
            handshakes_in_flight_max: PLATFORM_HANDSHAKES_IN_FLIGHT_MAX,
            revoked: RevokedCertificates::new(),
        }
    }
}

/// Default [`QuicPlatformConfig::recv_buffer_bytes`]: 16 MiB. The kernel charges each
/// queued datagram its whole buffer allocation and bookkeeping, not its payload; 16 MiB
/// held the acks of a 10,000-device roll-out arriving together (quic-go asks for 7 MB;
/// against 8 MiB, 16 MiB cut the datagrams dropped in a 10,000-device reconnect storm
/// from about 10,000 to about 1,500).
/// Linux grants an unprivileged process at most `net.core.rmem_max` (4 MiB on the
/// development machine; `deploy/sysctl/90-voltex-quic.conf` raises it, and a process
/// with `CAP_NET_ADMIN` passes it); a shortfall is logged as a warning and the link
/// runs with what it got. With 10,000 devices on one machine a 4 MiB buffer dropped up
/// to 38,000 datagrams in a roll-out round (README, `bench dispatch`).
pub const PLATFORM_RECV_BUFFER_BYTES: usize = 16 << 20;

/// Shortest interval between two stateless resets the platform sends (quinn's default is
/// 20 ms, 50 a second). After a restart every device whose close frame was lost needs
/// one; a reset is smaller than the packet that incited it, so a higher rate amplifies
/// nothing.
const STATELESS_RESET_INTERVAL_MIN: Duration = Duration::from_micros(500);

/// HKDF info of the stateless-reset key; a new label gives a new key.
const STATELESS_RESET_KEY_INFO: &[u8] = b"voltex/1 QUIC stateless reset key";
/// HKDF info of the connection-id key.
const CONNECTION_ID_KEY_INFO: &[u8] = b"voltex/1 QUIC connection id key";

/// What a platform instance must share with its predecessor to end the predecessor's
/// connections: both derived by HKDF-SHA256 from the platform's private key (DER), so
/// any instance holding that key, a restarted one included, has them, and nobody
/// without it can forge a reset.
struct RestartKeys {
    /// Computes the reset token of each connection id (RFC 9000 §10.3.2), which the
    /// devices hold.
    reset: ring::hmac::Key,
    /// Keys the check quinn makes before it answers a packet for an unknown connection:
    /// was the connection id one of ours? With a random key (quinn's default) a
    /// restarted platform drops the packet instead of resetting.
    connection_id: u64,
}

/// HKDF output length for the connection-id key.
struct ConnectionIdKeyLen;

impl ring::hkdf::KeyType for ConnectionIdKeyLen {
    fn len(&self) -> usize {
        8
    }
}

impl RestartKeys {
    fn derive(server_key_pem: &str) -> Result<RestartKeys, TransportError> {
        let failed = |_| TransportError::Config("QUIC restart key derivation".into());
        let key = private_key(server_key_pem)?;
        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]).extract(key.secret_der());
        let reset = prk
            .expand(&[STATELESS_RESET_KEY_INFO], ring::hmac::HMAC_SHA256)
            .map_err(failed)?
            .into();
        let mut connection_id = [0_u8; 8];
        prk.expand(&[CONNECTION_ID_KEY_INFO], ConnectionIdKeyLen)
            .map_err(failed)?
            .fill(&mut connection_id)
            .map_err(failed)?;
        Ok(RestartKeys {
            reset,
            connection_id: u64::from_le_bytes(connection_id),
        })
    }
}

/// Default [`QuicPlatformConfig::handshakes_in_flight_max`].
///
/// Why a limit: when thousands of devices reconnect at once (a platform restart), every
/// handshake in progress competes for the CPU with the task that reads the UDP socket.
/// Unbounded, the socket overflowed, the kernel dropped datagrams, and a device whose
/// last handshake flight was lost, with round-trip estimates of seconds taken under that
/// load, waited up to half a minute for its probe timeout (RFC 9002 §6.2) while thinking
/// itself connected. Refusing beyond the limit keeps the handshakes in progress quick.
pub const PLATFORM_HANDSHAKES_IN_FLIGHT_MAX: usize = 256;

/// A connected device as the platform sees it.
#[derive(Debug)]
struct Peer {
    connection_id: usize,
    downlink: mpsc::Sender<Vec<u8>>,
}

#[derive(Debug, Default)]
struct PlatformShared {
    counters: Counters,
    peers: Mutex<HashMap<DeviceId, Peer>>,
    /// Handshakes under way (see [`QuicPlatformConfig::handshakes_in_flight_max`]).
    handshakes_in_progress: AtomicUsize,
}

impl PlatformShared {
    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, Peer>> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Platform side of the QUIC transport; see the module doc.
#[derive(Debug)]
pub struct QuicPlatformLink {
    endpoint: Endpoint,
    shared: Arc<PlatformShared>,
    uplink: mpsc::Receiver<(DeviceId, Message)>,
    accept_task: AbortHandle,
    /// The endpoint's UDP socket, closed by [`QuicPlatformLink::shutdown`].
    socket: Arc<ReleasableSocket>,
    /// The socket's receive buffer as the kernel granted it.
    recv_buffer: RecvBuffer,
}

/// How long [`QuicPlatformLink::shutdown`] lets closed connections drain before it
/// closes the UDP socket. The close frames go out at once; draining only answers a peer
/// whose packets crossed them. A connection still draining after this (a handshake the
/// device abandoned, with an RTT estimate of seconds) is cut: its device learns by its
/// idle timeout, as after a power cut.
pub const SHUTDOWN_DRAIN_MAX: Duration = Duration::from_secs(2);

/// Binds the platform's QUIC endpoint and starts accepting devices in the background.
///
/// # Errors
/// [`TransportError::Config`] for unusable PEM or limits, [`TransportError::Io`] if the
/// address cannot be bound.
///
/// # Panics
/// Outside a Tokio runtime.
///
/// # Cancellation
/// Cancel-safe (it does not await).
pub async fn quic_platform(config: QuicPlatformConfig) -> Result<QuicPlatformLink, TransportError> {
    if config.uplink_channel_len == 0 || config.downlink_channel_len == 0 {
        return Err(TransportError::Config(
            "QUIC channel lengths must be > 0".into(),
        ));
    }
    if config.handshakes_in_flight_max == 0 {
        return Err(TransportError::Config(
            "QUIC handshakes_in_flight_max must be > 0".into(),
        ));
    }
    let provider = super::crypto_provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(root_store(&config.ca_cert_pem)?),
        provider.clone(),
    )
    .build()
    .map_err(|e| config_error("client verifier", e))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| config_error("TLS versions", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            cert_chain(&config.server_cert_pem)?,
            private_key(&config.server_key_pem)?,
        )
        .map_err(|e| config_error("server certificate", e))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| config_error("QUIC TLS", e))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(
        config.keep_alive,
        config.idle_timeout,
    )?));
    // `Endpoint::server` would bind and wrap the socket itself; it is spelled out so
    // `shutdown` can close the socket (see `ReleasableSocket`).
    let runtime = quinn::default_runtime()
        .ok_or_else(|| TransportError::Config("QUIC needs a Tokio runtime".into()))?;
    let restart_keys = RestartKeys::derive(&config.server_key_pem)?;
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(restart_keys.reset));
    let cid_key = restart_keys.connection_id;
    endpoint_config
        .min_reset_interval(STATELESS_RESET_INTERVAL_MIN)
        .cid_generator(move || Box::new(HashedConnectionIdGenerator::from_key(cid_key)));
    let socket = ReleasableSocket::new(std::net::UdpSocket::bind(config.bind)?)?;
    let recv_buffer = socket.set_recv_buffer(config.recv_buffer_bytes)?;
    if recv_buffer.granted_bytes < config.recv_buffer_bytes {
        tracing::warn!(
            requested = config.recv_buffer_bytes,
            granted = recv_buffer.granted_bytes,
            "QUIC socket receive buffer smaller than requested (raise net.core.rmem_max): \
             a reconnect storm or a large roll-out may lose datagrams"
        );
    } else if recv_buffer.forced {
        tracing::info!(
            granted = recv_buffer.granted_bytes,
            "QUIC socket receive buffer set past net.core.rmem_max (SO_RCVBUFFORCE)"
        );
    }
    let endpoint = Endpoint::new_with_abstract_socket(
        endpoint_config,
        Some(server),
        Arc::clone(&socket) as Arc<dyn quinn::AsyncUdpSocket>,
        runtime,
    )?;
    let shared = Arc::new(PlatformShared::default());
    let (uplink_tx, uplink) = mpsc::channel(config.uplink_channel_len);
    let accept_task = tokio::spawn(accept_devices(
        endpoint.clone(),
        shared.clone(),
        uplink_tx,
        config.downlink_channel_len,
        config.handshakes_in_flight_max,
        config.revoked.clone(),
    ))
    .abort_handle();
    Ok(QuicPlatformLink {
        endpoint,
        shared,
        uplink,
        accept_task,
        socket,
        recv_buffer,
    })
}

/// A handshake under way; counted in [`accept_devices`]'s limit until dropped.
struct HandshakeSlot(Arc<PlatformShared>);

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.0.handshakes_in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn accept_devices(
    endpoint: Endpoint,
    shared: Arc<PlatformShared>,
    uplink: mpsc::Sender<(DeviceId, Message)>,
    downlink_channel_len: usize,
    handshakes_in_flight_max: usize,
    revoked: RevokedCertificates,
) {
    while let Some(incoming) = endpoint.accept().await {
        // Only this task adds, so the check and the add cannot race past the limit.
        let in_flight = &shared.handshakes_in_progress;
        if in_flight.load(Ordering::Acquire) >= handshakes_in_flight_max {
            Counters::bump(&shared.counters.handshakes_deferred);
            incoming.refuse();
            continue;
        }
        in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = HandshakeSlot(shared.clone());
        let shared = shared.clone();
        let uplink = uplink.clone();
        let revoked = revoked.clone();
        tokio::spawn(async move {
            let handshake = incoming.await;
            drop(slot);
            let connection = match handshake {
                Ok(connection) => connection,
                Err(error) => {
                    Counters::bump(&shared.counters.handshakes_refused);
                    tracing::info!(%error, "QUIC handshake refused");
                    return;
                }
            };
            serve_device(connection, shared, uplink, downlink_channel_len, revoked).await;
        });
    }
}

/// The device id and certificate fingerprint of a connection's client certificate.
fn peer_device(connection: &Connection) -> Result<(DeviceId, String), String> {
    let identity = connection
        .peer_identity()
        .ok_or_else(|| "no client certificate".to_string())?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| "unexpected peer identity type".to_string())?;
    let leaf = chain
        .first()
        .ok_or_else(|| "empty certificate chain".to_string())?;
    let device = certs::device_id_from_cert_der(leaf).map_err(|e| e.to_string())?;
    Ok((device, certs::fingerprint_sha256_der(leaf)))
}

async fn serve_device(
    connection: Connection,
    shared: Arc<PlatformShared>,
    uplink: mpsc::Sender<(DeviceId, Message)>,
    downlink_channel_len: usize,
    revoked: RevokedCertificates,
) {
    let (device, fingerprint) = match peer_device(&connection) {
        Ok(peer) => peer,
        Err(reason) => {
            Counters::bump(&shared.counters.handshakes_refused);
            tracing::warn!(%reason, "QUIC device refused");
            connection.close(CLOSE_IDENTITY.into(), b"no device id in certificate");
            return;
        }
    };
    // Subscribed before the check, so a revocation between the two is still seen.
    let mut revocations = revoked.watch();
    if revoked.is_revoked(&fingerprint) {
        Counters::bump(&shared.counters.handshakes_refused);
        tracing::warn!(%device, %fingerprint, "QUIC device refused: certificate revoked");
        connection.close(CLOSE_REVOKED.into(), b"certificate revoked");
        return;
    }
    let watched_connection = connection.clone();
    let revocation_watch = tokio::spawn(async move {
        while revocations.changed().await.is_ok() {
            if revoked.is_revoked(&fingerprint) {
                tracing::warn!(%fingerprint, "closing QUIC connection: certificate revoked");
                watched_connection.close(CLOSE_REVOKED.into(), b"certificate revoked");
                break;
            }
        }
    });
    Counters::bump(&shared.counters.connects);
    let connection_id = connection.stable_id();
    let (downlink_tx, mut downlink_rx) = mpsc::channel::<Vec<u8>>(downlink_channel_len);
    let replaced = shared.peers().insert(
        device.clone(),
        Peer {
            connection_id,
            downlink: downlink_tx,
        },
    );
    if replaced.is_some() {
        tracing::debug!(%device, "device reconnected; older connection replaced");
    } else {
        tracing::debug!(%device, "device connected");
    }
    let writer_connection = connection.clone();
    let writer = tokio::spawn(async move {
        let mut stream = writer_connection.open_uni().await.ok()?;
        while let Some(frame) = downlink_rx.recv().await {
            write_frame(&mut stream, &frame).await.ok()?;
        }
        Some(())
    });
    // The device sends on one uni stream; accept them in turn (a reconnect opens a new
    // connection, so normally there is exactly one).
    while let Ok(mut stream) = connection.accept_uni().await {
        loop {
            let frame = match read_frame(&mut stream).await {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) if connection.close_reason().is_some() => {
                    tracing::debug!(%device, %error, "QUIC connection ended");
                    break;
                }
                Err(error) => {
                    tracing::warn!(%device, %error, "closing QUIC connection");
                    connection.close(CLOSE_PROTOCOL.into(), b"bad frame");
                    break;
                }
            };
            match accept_uplink(&device, &frame) {
                Ok(message) => {
                    if uplink.send((device.clone(), message)).await.is_err() {
                        connection.close(CLOSE_NORMAL.into(), b"platform closed");
                        break;
                    }
                }
                Err((undecodable, reason)) => {
                    let counter = if undecodable {
                        &shared.counters.dropped_undecodable
                    } else {
                        &shared.counters.dropped_mismatched
                    };
                    Counters::bump(counter);
                    tracing::warn!(%device, %reason, "dropped uplink frame");
                }
            }
        }
    }
    writer.abort();
    revocation_watch.abort();
    let mut peers = shared.peers();
    if peers
        .get(&device)
        .is_some_and(|peer| peer.connection_id == connection_id)
    {
        peers.remove(&device);
    }
}

fn accept_uplink(device: &DeviceId, frame: &[u8]) -> Result<Message, (bool, String)> {
    let message = decode(frame).map_err(|e| (true, e.to_string()))?;
    check_uplink(&message).map_err(|e| (false, e.to_string()))?;
    if message.device() != device {
        return Err((
            false,
            format!(
                "message names device {} but the certificate {device}",
                message.device()
            ),
        ));
    }
    Ok(message)
}

impl QuicPlatformLink {
    /// The bound UDP address.
    ///
    /// # Errors
    /// [`TransportError::Io`].
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        Ok(self.endpoint.local_addr()?)
    }

    /// The UDP socket's receive buffer in bytes, as the kernel granted it (see
    /// [`QuicPlatformConfig::recv_buffer_bytes`]).
    pub fn recv_buffer_bytes(&self) -> usize {
        self.recv_buffer.granted_bytes
    }

    /// Whether the receive buffer was set past `net.core.rmem_max` (`SO_RCVBUFFORCE`,
    /// which needs `CAP_NET_ADMIN`).
    pub fn recv_buffer_forced(&self) -> bool {
        self.recv_buffer.forced
    }

    /// Whether `device` has a live, authenticated connection.
    pub fn is_connected(&self, device: &DeviceId) -> bool {
        self.shared.peers().contains_key(device)
    }

    /// Number of devices with a live connection.
    pub fn n_connected(&self) -> usize {
        self.shared.peers().len()
    }

    /// Handshakes under way now (at most
    /// [`QuicPlatformConfig::handshakes_in_flight_max`]).
    pub fn handshakes_in_progress(&self) -> usize {
        self.shared.handshakes_in_progress.load(Ordering::Acquire)
    }

    /// A handle on the link's counters that stays valid after the link is handed on
    /// (to an orchestrator) or dropped, for metrics.
    pub fn stats_handle(&self) -> QuicPlatformStats {
        QuicPlatformStats(self.shared.clone())
    }

    /// The link's counters.
    pub fn stats(&self) -> LinkStats {
        self.shared.counters.snapshot()
    }

    /// Closes every connection and the endpoint (devices will try to reconnect).
    pub fn close(&self) {
        self.accept_task.abort();
        self.endpoint
            .close(CLOSE_NORMAL.into(), b"platform shutting down");
        self.shared.peers().clear();
    }

    /// Closes every connection like [`close`](Self::close), lets them drain for at most
    /// [`SHUTDOWN_DRAIN_MAX`], then closes the UDP socket: when this returns, the port
    /// can be bound again (a restart on the same address). Returns how many connections
    /// were still draining and were cut (0: every peer was told and done).
    ///
    /// Dropping the link instead closes the same way but without waiting: quinn's driver
    /// task lets go of the socket only once every connection has drained (seconds to
    /// tens of seconds with thousands), and a bind in between fails with `AddrInUse`.
    ///
    /// # Cancellation
    /// Not cancel-safe in the sense that the link is consumed: cancelling leaves it closed,
    /// with the socket released in the background.
    pub async fn shutdown(self) -> usize {
        self.close();
        let drained = tokio::time::timeout(SHUTDOWN_DRAIN_MAX, self.endpoint.wait_idle()).await;
        let cut = if drained.is_ok() {
            0
        } else {
            self.endpoint.open_connections()
        };
        self.socket.release();
        cut
    }
}

/// Read-only view of a [`QuicPlatformLink`]'s counters; see
/// [`QuicPlatformLink::stats_handle`].
#[derive(Clone, Debug)]
pub struct QuicPlatformStats(Arc<PlatformShared>);

impl QuicPlatformStats {
    /// The link's counters.
    pub fn stats(&self) -> LinkStats {
        self.0.counters.snapshot()
    }

    /// Devices with a live connection.
    pub fn n_connected(&self) -> usize {
        self.0.peers().len()
    }

    /// Handshakes under way now.
    pub fn handshakes_in_progress(&self) -> usize {
        self.0.handshakes_in_progress.load(Ordering::Acquire)
    }
}

impl Drop for QuicPlatformLink {
    fn drop(&mut self) {
        self.close();
    }
}

impl PlatformLink for QuicPlatformLink {
    async fn send_to(
        &mut self,
        device: &DeviceId,
        message: &Message,
    ) -> Result<(), TransportError> {
        check_downlink(message)?;
        if message.device() != device {
            return Err(TransportError::DeviceMismatch {
                expected: device.clone(),
                found: message.device().clone(),
            });
        }
        let frame = encode_binary(message)?;
        let downlink = self
            .shared
            .peers()
            .get(device)
            .map(|peer| peer.downlink.clone())
            .ok_or_else(|| TransportError::NotConnected(device.clone()))?;
        downlink
            .send(frame)
            .await
            .map_err(|_| TransportError::NotConnected(device.clone()))
    }

    async fn recv(&mut self) -> Result<(DeviceId, Message), TransportError> {
        self.uplink.recv().await.ok_or(TransportError::Closed)
    }
}

// ---------------------------------------------------------------------------------------
// Device side
// ---------------------------------------------------------------------------------------

/// A device's QUIC configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuicDeviceConfig {
    /// The platform's UDP address.
    pub server_addr: SocketAddr,
    /// The name in the platform's certificate (e.g. `localhost`).
    pub server_name: String,
    /// The platform's CA (PEM): it signed the server certificate.
    pub ca_cert_pem: String,
    /// This device's certificate (PEM); its common name is the device id.
    pub device_cert_pem: String,
    /// This device's private key (PEM).
    pub device_key_pem: String,
    /// Keep-alive ping interval (keeps NAT bindings open).
    pub keep_alive: Duration,
    /// Idle time after which the connection closes and is re-made.
    pub idle_timeout: Duration,
    /// Longest wait for one connection attempt (handshake included) before retrying.
    pub connect_timeout: Duration,
    /// Back-off between connection attempts.
    pub reconnect: ReconnectPolicy,
    /// Capacity of the uplink frame channel.
    pub outbound_channel_len: usize,
    /// Capacity of the downlink message channel.
    pub inbound_channel_len: usize,
}

impl QuicDeviceConfig {
    /// Defaults: keep-alive 10 s, idle timeout 30 s, connect timeout 5 s, channel lengths 256.
    pub fn new(
        server_addr: SocketAddr,
        server_name: impl Into<String>,
        ca_cert_pem: String,
        device_cert_pem: String,
        device_key_pem: String,
    ) -> QuicDeviceConfig {
        QuicDeviceConfig {
            server_addr,
            server_name: server_name.into(),
            ca_cert_pem,
            device_cert_pem,
            device_key_pem,
            keep_alive: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            reconnect: ReconnectPolicy::default(),
            outbound_channel_len: 256,
            inbound_channel_len: 256,
        }
    }
}

#[derive(Debug, Default)]
struct DeviceShared {
    counters: Counters,
    connected: AtomicBool,
}

/// Device side of the QUIC transport; see the module doc.
#[derive(Debug)]
pub struct QuicDeviceLink {
    device: DeviceId,
    outbound: mpsc::Sender<Vec<u8>>,
    inbound: mpsc::Receiver<Message>,
    shared: Arc<DeviceShared>,
    endpoint: Endpoint,
    task: AbortHandle,
}

/// Starts a device's QUIC link. The device id comes from the certificate. Connecting (and
/// reconnecting) happens in a background task, so this returns before the platform is
/// reached.
///
/// # Errors
/// [`TransportError::Config`] for unusable PEM (or a certificate without a device id) or
/// limits, [`TransportError::Io`] if no UDP socket can be bound.
///
/// # Panics
/// Outside a Tokio runtime.
///
/// # Cancellation
/// Cancel-safe (it does not await).
pub async fn quic_device(config: QuicDeviceConfig) -> Result<QuicDeviceLink, TransportError> {
    if config.outbound_channel_len == 0 || config.inbound_channel_len == 0 {
        return Err(TransportError::Config(
            "QUIC channel lengths must be > 0".into(),
        ));
    }
    let chain = cert_chain(&config.device_cert_pem)?;
    let device = certs::device_id_from_cert_der(&chain[0])
        .map_err(|e| config_error("device certificate", e))?;
    let mut tls = rustls::ClientConfig::builder_with_provider(super::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| config_error("TLS versions", e))?
        .with_root_certificates(root_store(&config.ca_cert_pem)?)
        .with_client_auth_cert(chain, private_key(&config.device_key_pem)?)
        .map_err(|e| config_error("device certificate", e))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| config_error("QUIC TLS", e))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(transport_config(
        config.keep_alive,
        config.idle_timeout,
    )?));
    let local: SocketAddr = match (config.server_addr.is_ipv4(), config.server_addr.ip()) {
        (true, ip) if ip.is_loopback() => (Ipv4Addr::LOCALHOST, 0).into(),
        (true, _) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        (false, ip) if ip.is_loopback() => (Ipv6Addr::LOCALHOST, 0).into(),
        (false, _) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let mut endpoint = Endpoint::client(local)?;
    endpoint.set_default_client_config(client);
    let (outbound_tx, outbound_rx) = mpsc::channel(config.outbound_channel_len);
    let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_channel_len);
    let shared = Arc::new(DeviceShared::default());
    let task = tokio::spawn(run_device(
        endpoint.clone(),
        config.server_addr,
        config.server_name,
        config.connect_timeout,
        device.clone(),
        outbound_rx,
        inbound_tx,
        shared.clone(),
        Backoff::new(config.reconnect),
    ))
    .abort_handle();
    Ok(QuicDeviceLink {
        device,
        outbound: outbound_tx,
        inbound: inbound_rx,
        shared,
        endpoint,
        task,
    })
}

#[expect(
    clippy::too_many_arguments,
    reason = "one task's whole state, passed once"
)]
async fn run_device(
    endpoint: Endpoint,
    server_addr: SocketAddr,
    server_name: String,
    connect_timeout: Duration,
    device: DeviceId,
    mut outbound: mpsc::Receiver<Vec<u8>>,
    inbound: mpsc::Sender<Message>,
    shared: Arc<DeviceShared>,
    mut backoff: Backoff,
) {
    let mut unsent: Option<Vec<u8>> = None;
    loop {
        let connecting = match endpoint.connect(server_addr, &server_name) {
            Ok(connecting) => connecting,
            Err(error) => {
                tracing::error!(%device, %error, "QUIC connect refused locally; giving up");
                return;
            }
        };
        let connection = match tokio::time::timeout(connect_timeout, connecting).await {
            Ok(Ok(connection)) => connection,
            failed => {
                let error = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => "timed out".to_string(),
                };
                Counters::bump(&shared.counters.connection_errors);
                let delay = backoff.next_delay();
                tracing::debug!(%device, %error, ?delay, "QUIC connect failed; retrying");
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        shared.connected.store(true, Ordering::Release);
        Counters::bump(&shared.counters.connects);
        tracing::debug!(%device, "QUIC connected");
        backoff.reset();
        let mut stream = match connection.open_uni().await {
            Ok(stream) => stream,
            Err(error) => {
                // With TLS 1.3 a refused client certificate shows up here, after the
                // client thought the handshake was done.
                shared.connected.store(false, Ordering::Release);
                Counters::bump(&shared.counters.connection_errors);
                let delay = backoff.next_delay();
                tracing::debug!(%device, %error, ?delay, "QUIC connection lost; retrying");
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        let reader = tokio::spawn(read_downlink(
            connection.clone(),
            device.clone(),
            inbound.clone(),
            shared.clone(),
        ));
        let mut link_dropped = false;
        loop {
            let frame = match unsent.take() {
                Some(frame) => frame,
                None => tokio::select! {
                    biased;
                    _ = connection.closed() => break,
                    frame = outbound.recv() => match frame {
                        Some(frame) => frame,
                        None => {
                            link_dropped = true;
                            break;
                        }
                    },
                },
            };
            if connection.close_reason().is_some()
                || write_frame(&mut stream, &frame).await.is_err()
            {
                unsent = Some(frame);
                break;
            }
        }
        reader.abort();
        shared.connected.store(false, Ordering::Release);
        if link_dropped {
            connection.close(CLOSE_NORMAL.into(), b"device link dropped");
            return;
        }
        Counters::bump(&shared.counters.connection_errors);
        let delay = backoff.next_delay();
        tracing::debug!(%device, reason = ?connection.close_reason(), ?delay, "reconnecting");
        tokio::time::sleep(delay).await;
    }
}

async fn read_downlink(
    connection: Connection,
    device: DeviceId,
    inbound: mpsc::Sender<Message>,
    shared: Arc<DeviceShared>,
) {
    while let Ok(mut stream) = connection.accept_uni().await {
        loop {
            let frame = match read_frame(&mut stream).await {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) if connection.close_reason().is_some() => {
                    tracing::debug!(%device, %error, "QUIC connection ended");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%device, %error, "closing QUIC connection");
                    connection.close(CLOSE_PROTOCOL.into(), b"bad frame");
                    return;
                }
            };
            let accepted = decode(&frame)
                .map_err(|e| (true, e.to_string()))
                .and_then(|message| {
                    check_downlink(&message).map_err(|e| (false, e.to_string()))?;
                    if message.device() != &device {
                        return Err((false, format!("message for {}", message.device())));
                    }
                    Ok(message)
                });
            match accepted {
                Ok(message) => {
                    if inbound.send(message).await.is_err() {
                        return;
                    }
                }
                Err((undecodable, reason)) => {
                    let counter = if undecodable {
                        &shared.counters.dropped_undecodable
                    } else {
                        &shared.counters.dropped_mismatched
                    };
                    Counters::bump(counter);
                    tracing::warn!(%device, %reason, "dropped downlink frame");
                }
            }
        }
    }
}

impl QuicDeviceLink {
    /// The device id, from the certificate.
    pub fn device(&self) -> &DeviceId {
        &self.device
    }

    /// Whether the link holds a connection whose handshake completed. With TLS 1.3 the
    /// platform checks the client certificate after the client's side of the handshake, so
    /// a refused device may look connected for one round trip before the close arrives.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// The link's counters.
    pub fn stats(&self) -> LinkStats {
        self.shared.counters.snapshot()
    }
}

impl Drop for QuicDeviceLink {
    fn drop(&mut self) {
        self.task.abort();
        self.endpoint
            .close(CLOSE_NORMAL.into(), b"device link dropped");
    }
}

impl DeviceLink for QuicDeviceLink {
    async fn send(&mut self, message: &Message) -> Result<(), TransportError> {
        check_uplink(message)?;
        let frame = encode_binary(message)?;
        self.outbound
            .send(frame)
            .await
            .map_err(|_| TransportError::Closed)
    }

    async fn recv(&mut self) -> Result<Inbound, TransportError> {
        let message = self.inbound.recv().await.ok_or(TransportError::Closed)?;
        Ok(Inbound {
            message,
            delivery: DeliveryToken(TokenKind::Quic),
        })
    }

    async fn confirm(&mut self, delivery: DeliveryToken) -> Result<(), TransportError> {
        match delivery.0 {
            TokenKind::Quic => Ok(()),
            TokenKind::Mqtt { .. } => Err(TransportError::Config(
                "an MQTT delivery token confirmed on a QUIC link".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATIENCE: Duration = Duration::from_secs(60);

    /// The platform dies without a word: its socket closes before the endpoint can send
    /// a close frame, as when its process is killed.
    fn crash(link: QuicPlatformLink) {
        link.socket.release();
        drop(link);
    }

    async fn wait_connected(platform: &QuicPlatformLink, device: &DeviceId) -> bool {
        tokio::time::timeout(PATIENCE, async {
            while !platform.is_connected(device) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .is_ok()
    }

    /// A platform on a free loopback port with a server certificate from `ca`.
    fn platform_config(ca: &certs::CaFiles) -> QuicPlatformConfig {
        let server = certs::issue_server(ca, &["localhost".into()]).unwrap();
        QuicPlatformConfig::new(
            (Ipv4Addr::LOCALHOST, 0).into(),
            ca.cert_pem.clone(),
            server.cert_pem,
            server.key_pem,
        )
    }

    /// A device `id` with a certificate from `ca`, retrying within 300 ms.
    fn device_config(ca: &certs::CaFiles, id: &str, server: SocketAddr) -> QuicDeviceConfig {
        let issued = certs::issue_device(ca, &DeviceId::new(id).unwrap()).unwrap();
        let mut config = QuicDeviceConfig::new(
            server,
            "localhost",
            ca.cert_pem.clone(),
            issued.cert_pem,
            issued.key_pem,
        );
        config.reconnect.delay_max = Duration::from_millis(300);
        config
    }

    /// Crashes a platform and starts a successor on its port, with the same server key or
    /// another one from the same CA; returns whether the device, with a 600-s idle
    /// timeout, reconnected to the successor within [`PATIENCE`], and its connection
    /// count.
    async fn crash_and_restart(same_key: bool) -> (bool, u64) {
        let ca = certs::init_ca("reset test CA").unwrap();
        let mut config = platform_config(&ca);
        // The idle timeout in force is the smaller of the two sides'.
        config.idle_timeout = Duration::from_secs(600);
        let first = quic_platform(config.clone()).await.unwrap();
        let addr = first.local_addr().unwrap();
        let device = DeviceId::new("dev-reset").unwrap();
        let mut device_config = device_config(&ca, device.as_str(), addr);
        device_config.keep_alive = Duration::from_millis(200);
        device_config.idle_timeout = Duration::from_secs(600);
        let link = quic_device(device_config).await.unwrap();
        assert!(wait_connected(&first, &device).await, "first connection");

        crash(first);
        let mut successor = config;
        successor.bind = addr;
        if !same_key {
            let other = certs::issue_server(&ca, &["localhost".into()]).unwrap();
            successor.server_cert_pem = other.cert_pem;
            successor.server_key_pem = other.key_pem;
        }
        let second = quic_platform(successor).await.unwrap();
        let reconnected = if same_key {
            wait_connected(&second, &device).await
        } else {
            // Fifteen keep-alives reach the successor meanwhile; none may end the
            // connection.
            tokio::time::sleep(Duration::from_secs(3)).await;
            second.is_connected(&device)
        };
        (reconnected, link.stats().connects)
    }

    /// Passes a client's first datagram (its Initial) on to `server` and drops every
    /// other one, both ways, so the platform holds a handshake that never completes
    /// until the platform's idle timeout ends it.
    async fn first_datagram_relay(server: SocketAddr) -> SocketAddr {
        let relay = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let addr = relay.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0_u8; 2_048];
            let Ok((len, _)) = relay.recv_from(&mut buf).await else {
                return;
            };
            let _ = relay.send_to(&buf[..len], server).await;
            while relay.recv_from(&mut buf).await.is_ok() {}
        });
        addr
    }

    #[tokio::test]
    async fn a_handshake_beyond_the_limit_is_deferred_and_completes_once_a_slot_frees() {
        let ca = certs::init_ca("admission test CA").unwrap();
        let mut config = platform_config(&ca);
        config.handshakes_in_flight_max = 1;
        // The stalled handshake holds the one slot until this idle timeout ends it.
        config.keep_alive = Duration::from_millis(500);
        config.idle_timeout = Duration::from_secs(2);
        let platform = quic_platform(config).await.unwrap();
        let addr = platform.local_addr().unwrap();

        let relay = first_datagram_relay(addr).await;
        let stalled = quic_device(device_config(&ca, "dev-stalled", relay))
            .await
            .unwrap();
        tokio::time::timeout(PATIENCE, async {
            while platform.handshakes_in_progress() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the stalled handshake reaches the platform");
        let device = DeviceId::new("dev-admitted").unwrap();
        let _link = quic_device(device_config(&ca, device.as_str(), addr))
            .await
            .unwrap();
        assert!(
            wait_connected(&platform, &device).await,
            "a deferred device gets in once the stalled handshake times out"
        );
        assert!(
            platform.stats().handshakes_deferred >= 1,
            "the device was turned away while the slot was held: {:?}",
            platform.stats()
        );
        assert!(!platform.is_connected(&DeviceId::new("dev-stalled").unwrap()));
        assert_eq!(platform.handshakes_in_progress(), 0);
        drop(stalled);
    }

    #[tokio::test]
    async fn a_restarted_platform_resets_a_device_that_missed_the_close() {
        let (reconnected, connects) = crash_and_restart(true).await;
        assert!(
            reconnected,
            "the device reconnects on the successor's stateless reset, not after its \
             600-s idle timeout"
        );
        assert_eq!(connects, 2);
    }

    #[tokio::test]
    async fn a_reset_from_a_platform_with_another_key_is_ignored() {
        let (reconnected, connects) = crash_and_restart(false).await;
        assert!(
            !reconnected,
            "a reset token from another key must not end the connection"
        );
        assert_eq!(connects, 1);
    }

    #[test]
    fn the_restart_keys_are_a_function_of_the_server_key() {
        let ca = certs::init_ca("reset key CA").unwrap();
        let a = certs::issue_server(&ca, &["localhost".into()]).unwrap();
        let b = certs::issue_server(&ca, &["localhost".into()]).unwrap();
        let keys = |pem: &str| {
            let keys = RestartKeys::derive(pem).unwrap();
            (
                ring::hmac::sign(&keys.reset, b"cid").as_ref().to_vec(),
                keys.connection_id,
            )
        };
        assert_eq!(keys(&a.key_pem), keys(&a.key_pem));
        let (reset_a, cid_a) = keys(&a.key_pem);
        let (reset_b, cid_b) = keys(&b.key_pem);
        assert_ne!(reset_a, reset_b);
        assert_ne!(cid_a, cid_b);
        assert!(matches!(
            RestartKeys::derive("not a key"),
            Err(TransportError::Config(_))
        ));
    }
}
