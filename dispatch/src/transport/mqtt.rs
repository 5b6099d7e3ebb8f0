//! MQTT transport (rumqttc, MQTT 3.1.1): topics `voltex/v1/dev/{device}/{kind}`, QoS 1
//! except receipts, which go at QoS 0 (see `downlink_qos`: a lost one costs an
//! idempotent re-send, and none is queued for an offline agent).
//!
//! Both sides keep a persistent session (`clean_session = false`) under a stable client id:
//! the device's id is its [`DeviceId`], the platform's is [`MqttConfig::client_id`]. A
//! background task per link drives rumqttc's event loop, reconnects with
//! [`Backoff`], subscribes again on every connection (not only when the broker reports no
//! stored session: rumqttd can restore a session without its subscriptions, see `drive`;
//! MQTT 3.1.1 §3.8.4 makes an identical SUBSCRIBE replace the subscription without
//! interrupting its flow), and forwards inbound publishes to the link over a
//! bounded channel. Dropping a link stops its task.
//!
//! Device side: subscribes to its own `schedule` and `receipt` topics at QoS 1 with manual
//! acks; [`DeviceLink::confirm`] sends the PUBACK, so the broker redelivers whatever the
//! agent has not stored. Credentials: username = device id, password from the config.
//! Per-device ACLs (a device may only read its own downlink and write its own uplink
//! topics) are the broker's deployment concern; the platform also checks that every uplink
//! message names the device of its topic.
//!
//! Platform side: subscribes to every device's `ack`, `telemetry` and `heartbeat` at QoS 1
//! and acks on receipt (the application's `Receipt` is the durable confirmation).
//!
//! # Invariants
//! - A PUBACK is only ever sent for a token of the current connection (its *epoch*): after
//!   a reconnect packet ids may be reused, so an old token is not acked and the broker
//!   redelivers that message instead (duplicates are harmless, schedule ids are idempotent).
//! - Frames that fail [`decode`], arrive on a foreign topic, or whose message kind or device
//!   does not match the topic are dropped, counted and acked, never returned.
//! - The inbound channel is bounded ([`MqttConfig::inbound_channel_len`]); when full, the
//!   event loop waits (TCP back-pressure to the broker).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, Publish, QoS,
    SubscribeFilter, TlsConfiguration, Transport,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::{
    Backoff, Counters, DeliveryToken, DeviceLink, Inbound, LinkStats, PlatformLink,
    ReconnectPolicy, TokenKind, TransportError, check_downlink, check_uplink,
};
use crate::codec::{MESSAGE_LEN_MAX, decode, encode_binary};
use crate::message::{DeviceId, Message};
use crate::topics::{TopicKind, parse_topic, topic, uplink_filter};

/// TLS to the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttTls {
    /// CA certificate(s) that sign the broker's certificate (PEM).
    pub ca_cert_pem: String,
    /// Optional client certificate and key (PEM) for brokers that require them.
    pub client_cert_key_pem: Option<(String, String)>,
}

/// How to reach the broker, and the link's limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttConfig {
    /// Broker host name or IP.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id of the platform link (stable, so its session persists). The device link
    /// always uses the device id.
    pub client_id: String,
    /// Username (platform link). The device link uses its device id.
    pub username: Option<String>,
    /// Password; sent only when set.
    pub password: Option<String>,
    /// MQTT keep-alive interval.
    pub keep_alive: Duration,
    /// TLS, or plain TCP when `None`.
    pub tls: Option<MqttTls>,
    /// Most outgoing QoS 1 publishes awaiting PUBACK.
    pub inflight_max: u16,
    /// Capacity of the request channel into rumqttc.
    pub request_channel_len: usize,
    /// Capacity of the inbound channel from the event loop to `recv`.
    pub inbound_channel_len: usize,
    /// Seconds to wait for the TCP/TLS connection and CONNACK.
    pub connection_timeout_s: u64,
    /// Back-off between connection attempts.
    pub reconnect: ReconnectPolicy,
}

impl MqttConfig {
    /// Plain TCP to `host:port` with default limits, client id `voltex-platform`.
    pub fn new(host: impl Into<String>, port: u16) -> MqttConfig {
        MqttConfig {
            host: host.into(),
            port,
            client_id: "voltex-platform".into(),
            username: None,
            password: None,
            keep_alive: Duration::from_secs(30),
            tls: None,
            inflight_max: 100,
            request_channel_len: 1_024,
            inbound_channel_len: 1_024,
            connection_timeout_s: 10,
            reconnect: ReconnectPolicy::default(),
        }
    }

    /// Parses `mqtt://host[:port]` (default port 1883). `mqtts://` is refused here: set
    /// [`MqttConfig::tls`] with the CA instead.
    ///
    /// # Errors
    /// [`TransportError::Config`].
    pub fn from_url(url: &str) -> Result<MqttConfig, TransportError> {
        let bad = || TransportError::Config(format!("expected mqtt://host[:port], got {url:?}"));
        let rest = url.strip_prefix("mqtt://").ok_or_else(bad)?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().map_err(|_| bad())?),
            None => (rest, 1883),
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(MqttConfig::new(host, port))
    }

    fn options(
        &self,
        client_id: &str,
        username: Option<&str>,
    ) -> Result<MqttOptions, TransportError> {
        if self.inflight_max == 0 || self.request_channel_len == 0 || self.inbound_channel_len == 0
        {
            return Err(TransportError::Config("MQTT limits must be > 0".into()));
        }
        let mut options = MqttOptions::new(client_id, self.host.clone(), self.port);
        options
            .set_clean_session(false)
            .set_keep_alive(self.keep_alive)
            .set_inflight(self.inflight_max)
            .set_request_channel_capacity(self.request_channel_len)
            .set_max_packet_size(MESSAGE_LEN_MAX + 1024, MESSAGE_LEN_MAX + 1024);
        if let (Some(username), Some(password)) = (username, &self.password) {
            options.set_credentials(username, password.clone());
        }
        if let Some(tls) = &self.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(rustls_client_config(tls)?),
            )));
        }
        Ok(options)
    }
}

fn rustls_client_config(tls: &MqttTls) -> Result<rustls::ClientConfig, TransportError> {
    let bad = |what: &str, error: &dyn std::fmt::Display| {
        TransportError::Config(format!("MQTT TLS {what}: {error}"))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(tls.ca_cert_pem.as_bytes()) {
        let cert = cert.map_err(|e| bad("CA PEM", &e))?;
        roots.add(cert).map_err(|e| bad("CA certificate", &e))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(super::crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("protocol versions", &e))?
        .with_root_certificates(roots);
    match &tls.client_cert_key_pem {
        None => Ok(builder.with_no_client_auth()),
        Some((cert_pem, key_pem)) => {
            let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad("client certificate PEM", &e))?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(|e| bad("client key PEM", &e))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| bad("client certificate", &e))
        }
    }
}

/// State shared between a link and its event-loop task.
#[derive(Debug, Default)]
struct Shared {
    counters: Counters,
    /// Bumped on every CONNACK.
    epoch: AtomicU64,
    connected: AtomicBool,
}

/// An inbound publish and the connection epoch it arrived on.
type Delivery = (Publish, u64);

/// Drives rumqttc's event loop until the link is dropped (the task is then aborted).
async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    subscriptions: Vec<SubscribeFilter>,
    inbound: mpsc::Sender<Delivery>,
    shared: Arc<Shared>,
    mut backoff: Backoff,
    name: String,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                shared.epoch.fetch_add(1, Ordering::AcqRel);
                shared.connected.store(true, Ordering::Release);
                Counters::bump(&shared.counters.connects);
                backoff.reset();
                tracing::debug!(%name, session_present = connack.session_present, "connected");
                // Even with `session_present`: when a client reconnects while the broker
                // still handles its previous connection (a connect storm, a client-side
                // connect timeout), rumqttd 0.20 drops the old one as a duplicate client
                // id and restores its session, which can come back without the
                // subscriptions (in `bench rollout` on the embedded broker, 23 of 10,000
                // agents got nothing in 300 s, each schedule re-sent about 80 times).
                // Subscribing again costs one packet per connection.
                if client.try_subscribe_many(subscriptions.clone()).is_err() {
                    let client = client.clone();
                    let subscriptions = subscriptions.clone();
                    tokio::spawn(async move { client.subscribe_many(subscriptions).await });
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let epoch = shared.epoch.load(Ordering::Acquire);
                if inbound.send((publish, epoch)).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => return,
            Err(error) => {
                shared.connected.store(false, Ordering::Release);
                Counters::bump(&shared.counters.connection_errors);
                let delay = backoff.next_delay();
                tracing::debug!(%name, %error, ?delay, "MQTT connection failed; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Spawns the event-loop task; needs a Tokio runtime.
fn spawn_driver(
    options: MqttOptions,
    config: &MqttConfig,
    subscriptions: Vec<SubscribeFilter>,
    name: String,
) -> (
    AsyncClient,
    mpsc::Receiver<Delivery>,
    Arc<Shared>,
    AbortHandle,
) {
    let (client, mut eventloop) = AsyncClient::new(options, config.request_channel_len);
    eventloop
        .network_options
        .set_connection_timeout(config.connection_timeout_s);
    let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_channel_len);
    let shared = Arc::new(Shared::default());
    let task = tokio::spawn(drive(
        eventloop,
        client.clone(),
        subscriptions,
        inbound_tx,
        shared.clone(),
        Backoff::new(config.reconnect),
        name,
    ));
    (client, inbound_rx, shared, task.abort_handle())
}

/// QoS of a downlink message: 1 for schedules; 0 for receipts, which are cumulative and
/// only ever save the agent a re-send: a lost one costs an idempotent re-send of its
/// outbox (after `resend_after`, or at once on its next reconnect, which always re-sends
/// and so earns a fresh receipt), and the broker queues none for an offline agent, so a
/// reconnecting fleet is not handed a backlog of stale receipts. Each saves the two
/// PUBACKs of a QoS 1 delivery.
fn downlink_qos(message: &Message) -> QoS {
    match message {
        Message::Receipt(_) => QoS::AtMostOnce,
        _ => QoS::AtLeastOnce,
    }
}

fn topic_kind(message: &Message) -> TopicKind {
    match message {
        Message::Ack(_) | Message::Acks(_) => TopicKind::Ack,
        Message::Telemetry(_) => TopicKind::Telemetry,
        Message::Heartbeat(_) => TopicKind::Heartbeat,
        Message::Schedule(_) => TopicKind::Schedule,
        Message::Receipt(_) => TopicKind::Receipt,
    }
}

/// Device side of the MQTT transport; see the module doc.
#[derive(Debug)]
pub struct MqttDeviceLink {
    device: DeviceId,
    client: AsyncClient,
    inbound: mpsc::Receiver<Delivery>,
    shared: Arc<Shared>,
    task: AbortHandle,
}

/// Connects a device: client id = `device`, persistent session, manual acks, subscribed
/// to its `schedule` and `receipt` topics at QoS 1. The connection is made (and re-made)
/// by a background task, so this returns before the broker is reached.
///
/// # Errors
/// [`TransportError::Config`] for an unusable configuration (bad TLS PEM, zero limits).
///
/// # Panics
/// Outside a Tokio runtime.
///
/// # Cancellation
/// Cancel-safe (it does not await).
pub async fn mqtt_device(
    config: MqttConfig,
    device: DeviceId,
) -> Result<MqttDeviceLink, TransportError> {
    let mut options = config.options(device.as_str(), Some(device.as_str()))?;
    options.set_manual_acks(true);
    let subscriptions = vec![
        SubscribeFilter::new(topic(&device, TopicKind::Schedule), QoS::AtLeastOnce),
        SubscribeFilter::new(topic(&device, TopicKind::Receipt), QoS::AtLeastOnce),
    ];
    let (client, inbound, shared, task) =
        spawn_driver(options, &config, subscriptions, device.to_string());
    Ok(MqttDeviceLink {
        device,
        client,
        inbound,
        shared,
        task,
    })
}

impl MqttDeviceLink {
    /// The device this link speaks for.
    pub fn device(&self) -> &DeviceId {
        &self.device
    }

    /// Whether the last connection attempt succeeded and has not failed since.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// The link's counters.
    pub fn stats(&self) -> LinkStats {
        self.shared.counters.snapshot()
    }

    /// The message, or whether it was undecodable (else mismatched) and why.
    fn accept(&self, publish: &Publish) -> Result<Message, (bool, String)> {
        let (device, kind) = parse_topic(&publish.topic).map_err(|e| (false, e.to_string()))?;
        if device != self.device || !matches!(kind, TopicKind::Schedule | TopicKind::Receipt) {
            return Err((false, format!("foreign topic {}", publish.topic)));
        }
        let message = decode(&publish.payload).map_err(|e| (true, e.to_string()))?;
        if topic_kind(&message) != kind || message.device() != &self.device {
            return Err((
                false,
                format!("message does not match topic {}", publish.topic),
            ));
        }
        Ok(message)
    }

    async fn ack(&self, publish: &Publish, epoch: u64) -> Result<(), TransportError> {
        if epoch != self.shared.epoch.load(Ordering::Acquire) {
            tracing::debug!(device = %self.device, "stale delivery token: broker redelivers");
            return Ok(());
        }
        self.client
            .ack(publish)
            .await
            .map_err(|_| TransportError::Closed)
    }
}

impl Drop for MqttDeviceLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DeviceLink for MqttDeviceLink {
    async fn send(&mut self, message: &Message) -> Result<(), TransportError> {
        check_uplink(message)?;
        if message.device() != &self.device {
            return Err(TransportError::DeviceMismatch {
                expected: self.device.clone(),
                found: message.device().clone(),
            });
        }
        let frame = encode_binary(message)?;
        let topic = topic(&self.device, topic_kind(message));
        self.client
            .publish(topic, QoS::AtLeastOnce, false, frame)
            .await
            .map_err(|_| TransportError::Closed)
    }

    async fn recv(&mut self) -> Result<Inbound, TransportError> {
        loop {
            let (mut publish, epoch) = self.inbound.recv().await.ok_or(TransportError::Closed)?;
            match self.accept(&publish) {
                Ok(message) => {
                    publish.payload = Default::default();
                    let delivery = DeliveryToken(TokenKind::Mqtt { publish, epoch });
                    return Ok(Inbound { message, delivery });
                }
                Err((undecodable, reason)) => {
                    let counter = if undecodable {
                        &self.shared.counters.dropped_undecodable
                    } else {
                        &self.shared.counters.dropped_mismatched
                    };
                    Counters::bump(counter);
                    tracing::warn!(device = %self.device, %reason, "dropped inbound frame");
                    // Ack it so the broker does not redeliver it forever; if this fails the
                    // link is closed and the next `recv` says so.
                    let _ = self.ack(&publish, epoch).await;
                }
            }
        }
    }

    async fn confirm(&mut self, delivery: DeliveryToken) -> Result<(), TransportError> {
        match delivery.0 {
            TokenKind::Mqtt { publish, epoch } => self.ack(&publish, epoch).await,
            TokenKind::Quic => Ok(()),
        }
    }
}

/// Platform side of the MQTT transport; see the module doc.
#[derive(Debug)]
pub struct MqttPlatformLink {
    client: AsyncClient,
    inbound: mpsc::Receiver<Delivery>,
    shared: Arc<Shared>,
    task: AbortHandle,
}

/// Connects the platform: client id [`MqttConfig::client_id`], persistent session,
/// subscribed to every device's `ack`, `telemetry` and `heartbeat` at QoS 1. The connection
/// is made (and re-made) by a background task, so this returns before the broker is
/// reached.
///
/// # Errors
/// [`TransportError::Config`].
///
/// # Panics
/// Outside a Tokio runtime.
///
/// # Cancellation
/// Cancel-safe (it does not await).
pub async fn mqtt_platform(config: MqttConfig) -> Result<MqttPlatformLink, TransportError> {
    let options = config.options(&config.client_id, config.username.as_deref())?;
    let subscriptions = [TopicKind::Ack, TopicKind::Telemetry, TopicKind::Heartbeat]
        .into_iter()
        .map(|kind| SubscribeFilter::new(uplink_filter(kind), QoS::AtLeastOnce))
        .collect();
    let (client, inbound, shared, task) =
        spawn_driver(options, &config, subscriptions, config.client_id.clone());
    Ok(MqttPlatformLink {
        client,
        inbound,
        shared,
        task,
    })
}

impl MqttPlatformLink {
    /// Whether the last connection attempt succeeded and has not failed since.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// The link's counters.
    pub fn stats(&self) -> LinkStats {
        self.shared.counters.snapshot()
    }
}

impl Drop for MqttPlatformLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn accept_uplink(publish: &Publish) -> Result<(DeviceId, Message), (bool, String)> {
    let (device, kind) = parse_topic(&publish.topic).map_err(|e| (false, e.to_string()))?;
    if !matches!(
        kind,
        TopicKind::Ack | TopicKind::Telemetry | TopicKind::Heartbeat
    ) {
        return Err((false, format!("not an uplink topic: {}", publish.topic)));
    }
    let message = decode(&publish.payload).map_err(|e| (true, e.to_string()))?;
    if topic_kind(&message) != kind || message.device() != &device {
        return Err((
            false,
            format!("message does not match topic {}", publish.topic),
        ));
    }
    Ok((device, message))
}

impl PlatformLink for MqttPlatformLink {
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
        self.client
            .publish(
                topic(device, topic_kind(message)),
                downlink_qos(message),
                false,
                frame,
            )
            .await
            .map_err(|_| TransportError::Closed)
    }

    async fn recv(&mut self) -> Result<(DeviceId, Message), TransportError> {
        loop {
            let (publish, _) = self.inbound.recv().await.ok_or(TransportError::Closed)?;
            match accept_uplink(&publish) {
                Ok(accepted) => return Ok(accepted),
                Err((undecodable, reason)) => {
                    let counter = if undecodable {
                        &self.shared.counters.dropped_undecodable
                    } else {
                        &self.shared.counters.dropped_mismatched
                    };
                    Counters::bump(counter);
                    tracing::warn!(topic = %publish.topic, %reason, "dropped uplink frame");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_or_are_refused() {
        let config = MqttConfig::from_url("mqtt://127.0.0.1:1884").unwrap();
        assert_eq!((config.host.as_str(), config.port), ("127.0.0.1", 1884));
        assert_eq!(MqttConfig::from_url("mqtt://broker").unwrap().port, 1883);
        for bad in [
            "tcp://x:1",
            "mqtt://",
            "mqtt://host:port",
            "mqtts://host:8883",
        ] {
            assert!(MqttConfig::from_url(bad).is_err(), "{bad}");
        }
    }
}
