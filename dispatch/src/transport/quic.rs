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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::releasable_socket::ReleasableSocket;

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
    /// Client certificates refused even though the CA signed them; shared with the
    /// owner, who may revoke more while the link runs (live connections close).
    pub revoked: RevokedCertificates,
}

impl QuicPlatformConfig {
    /// Defaults: keep-alive 10 s, idle timeout 30 s, channel lengths 65,536 and 64.
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
            revoked: RevokedCertificates::new(),
        }
    }
}

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
    let socket = ReleasableSocket::new(std::net::UdpSocket::bind(config.bind)?)?;
    let endpoint = Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
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
        config.revoked.clone(),
    ))
    .abort_handle();
    Ok(QuicPlatformLink {
        endpoint,
        shared,
        uplink,
        accept_task,
        socket,
    })
}

async fn accept_devices(
    endpoint: Endpoint,
    shared: Arc<PlatformShared>,
    uplink: mpsc::Sender<(DeviceId, Message)>,
    downlink_channel_len: usize,
    revoked: RevokedCertificates,
) {
    while let Some(incoming) = endpoint.accept().await {
        let shared = shared.clone();
        let uplink = uplink.clone();
        let revoked = revoked.clone();
        tokio::spawn(async move {
            let connection = match incoming.await {
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

    /// Whether `device` has a live, authenticated connection.
    pub fn is_connected(&self, device: &DeviceId) -> bool {
        self.shared.peers().contains_key(device)
    }

    /// Number of devices with a live connection.
    pub fn n_connected(&self) -> usize {
        self.shared.peers().len()
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
