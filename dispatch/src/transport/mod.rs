//! Transports: how [`Message`]s travel between the platform and battery agents.
//!
//! One pair of traits, two implementations:
//!
//! - [`DeviceLink`] (agent side, one connection to the platform) and [`PlatformLink`]
//!   (platform side, all devices).
//! - MQTT ([`mqtt_device`], [`mqtt_platform`]; module [`mqtt`]) over any MQTT 3.1.1
//!   broker: Mosquitto, or the embedded rumqttd ([`start_embedded_broker`]).
//! - QUIC ([`quic_device`], [`quic_platform`]; module [`quic`]) with mutual TLS; the
//!   platform's CA is in [`certs`].
//!
//! # Delivery guarantees
//! Transports give *at-least-once while connected*; end-to-end guarantees come from the
//! application, so they hold even through a broker that keeps nothing on disk:
//! - schedule ids and versions are idempotent, and the platform re-sends a schedule until
//!   it holds an `Ack` for it;
//! - the agent's outbox re-sends acks and telemetry until a `Receipt` covers them.
//!
//! On top of that, MQTT uses QoS 1 with persistent sessions, and the device side sends
//! its PUBACK only in [`DeviceLink::confirm`], after the agent has stored the message.
//!
//! # Invariants
//! - Nothing undecodable or invalid is ever returned by a `recv`: every inbound frame goes
//!   through [`codec::decode`](crate::codec::decode); frames that fail are logged, counted
//!   ([`LinkStats`]) and confirmed so they are not redelivered forever.
//! - A device link only returns downlink messages (`Schedule`, `Receipt`) about its own
//!   device; a platform link only returns uplink messages (`Ack`, `Telemetry`,
//!   `Heartbeat`) whose device field equals the authenticated sender (MQTT: the topic;
//!   QUIC: the certificate). Anything else is dropped and counted.
//! - Nothing is sent that [`codec::encode_binary`](crate::codec::encode_binary) refuses.
//!
//! Reconnection uses exponential back-off with full jitter ([`ReconnectPolicy`]), drawn
//! from a seeded RNG when a seed is given.

pub mod certs;
pub mod embedded_broker;
pub mod mqtt;
pub mod quic;
mod releasable_socket;
pub mod revoked;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::codec::EncodeError;
use crate::message::{DeviceId, Message};

pub use certs::{CaFiles, CertError};
pub use embedded_broker::{EmbeddedBroker, EmbeddedBrokerConfig, start_embedded_broker};
pub use mqtt::{MqttConfig, MqttDeviceLink, MqttPlatformLink, MqttTls, mqtt_device, mqtt_platform};
pub use quic::{
    PLATFORM_HANDSHAKES_IN_FLIGHT_MAX, PLATFORM_RECV_BUFFER_BYTES, QuicDeviceConfig,
    QuicDeviceLink, QuicPlatformConfig, QuicPlatformLink, QuicPlatformStats, quic_device,
    quic_platform,
};
pub use revoked::RevokedCertificates;

/// A message received by a device, with the token that confirms it.
#[derive(Debug)]
pub struct Inbound {
    /// The decoded, validated message (`Schedule` or `Receipt`).
    pub message: Message,
    /// Pass to [`DeviceLink::confirm`] once the message is durably stored.
    pub delivery: DeliveryToken,
}

/// Opaque handle that confirms one inbound message; see [`DeviceLink::confirm`].
#[derive(Debug)]
pub struct DeliveryToken(pub(crate) TokenKind);

#[derive(Debug)]
pub(crate) enum TokenKind {
    /// MQTT: the publish to PUBACK (payload emptied), and the connection epoch it
    /// arrived on; a token from an older connection is not acked (its packet id may
    /// have been reused), the broker redelivers the message instead.
    Mqtt {
        publish: rumqttc::Publish,
        epoch: u64,
    },
    /// QUIC: stream data is acknowledged by the transport; the application-level `Ack`
    /// is the confirmation, so there is nothing to send.
    Quic,
}

/// What can go wrong in a transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The configuration is unusable (bad PEM, bad address, bad limits).
    #[error("invalid transport configuration: {0}")]
    Config(String),
    /// The message could not be encoded; it was not sent.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A message that does not travel in this direction (e.g. a device sending a
    /// `Schedule`, or the platform sending an `Ack`).
    #[error("{kind} messages do not travel {direction}")]
    WrongDirection {
        /// Message kind.
        kind: &'static str,
        /// "uplink" or "downlink".
        direction: &'static str,
    },
    /// `send_to(device, message)` where the message names another device.
    #[error("message for device {found} sent to device {expected}")]
    DeviceMismatch {
        /// The device addressed.
        expected: DeviceId,
        /// The device the message names.
        found: DeviceId,
    },
    /// QUIC: the device has no live connection; the platform re-sends later.
    #[error("device {0} is not connected")]
    NotConnected(DeviceId),
    /// The link's background task has ended (the link was shut down or its runtime stopped).
    #[error("transport closed")]
    Closed,
    /// The MQTT client refused a request.
    #[error("mqtt client: {0}")]
    Mqtt(String),
    /// QUIC endpoint or connection failure.
    #[error("quic: {0}")]
    Quic(String),
    /// Certificate generation or parsing failed.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The embedded broker could not start.
    #[error("embedded broker: {0}")]
    Broker(String),
    /// Socket I/O.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Device side (agent): one connection to the platform.
///
/// Implementations reconnect on their own (with back-off); `send` and `recv` keep working
/// across reconnections.
pub trait DeviceLink: Send {
    /// Queues an uplink message (`Ack`, `Telemetry`, `Heartbeat`) for delivery.
    ///
    /// At-least-once while the process lives (MQTT QoS 1 with retransmission on
    /// reconnect; QUIC: best effort per connection); across crashes and long outages the
    /// agent's outbox re-sends until a `Receipt` covers the message.
    ///
    /// # Errors
    /// [`TransportError::WrongDirection`] for downlink kinds, [`TransportError::Encode`],
    /// [`TransportError::Closed`].
    ///
    /// # Cancellation
    /// Cancel-safe in the sense that a cancelled call either queued the whole message or
    /// nothing.
    fn send(
        &mut self,
        message: &Message,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Next downlink message (`Schedule` or `Receipt`), decoded and validated; undecodable
    /// or foreign frames are logged, counted and confirmed (dropped), never returned.
    ///
    /// # Errors
    /// [`TransportError::Closed`] once the link has shut down.
    ///
    /// # Cancellation
    /// Cancel-safe: a cancelled call loses no message that it would have returned.
    fn recv(&mut self) -> impl Future<Output = Result<Inbound, TransportError>> + Send;

    /// Confirms an inbound message after it is durably stored (MQTT: the PUBACK is sent
    /// only now, so the broker redelivers anything not confirmed).
    ///
    /// # Errors
    /// [`TransportError::Closed`].
    ///
    /// # Cancellation
    /// Cancel-safe: an unsent confirmation means the broker redelivers the message.
    fn confirm(
        &mut self,
        delivery: DeliveryToken,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;
}

/// Platform side: all devices.
pub trait PlatformLink: Send {
    /// Sends a downlink message (`Schedule`, `Receipt`) to `device`.
    ///
    /// # Errors
    /// [`TransportError::WrongDirection`], [`TransportError::DeviceMismatch`],
    /// [`TransportError::Encode`], [`TransportError::NotConnected`] (QUIC),
    /// [`TransportError::Closed`].
    ///
    /// # Cancellation
    /// Cancel-safe: a cancelled call queued the whole message or nothing.
    fn send_to(
        &mut self,
        device: &DeviceId,
        message: &Message,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Next uplink message with the authenticated device id (MQTT: from the topic; QUIC:
    /// from the client certificate). A message whose own device field differs is dropped
    /// and counted.
    ///
    /// # Errors
    /// [`TransportError::Closed`] once the link has shut down.
    ///
    /// # Cancellation
    /// Cancel-safe.
    fn recv(&mut self) -> impl Future<Output = Result<(DeviceId, Message), TransportError>> + Send;
}

/// Counters of one link, see [`LinkStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) dropped_undecodable: AtomicU64,
    pub(crate) dropped_mismatched: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) connection_errors: AtomicU64,
    pub(crate) handshakes_refused: AtomicU64,
    pub(crate) handshakes_deferred: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LinkStats {
        LinkStats {
            dropped_undecodable: self.dropped_undecodable.load(Ordering::Relaxed),
            dropped_mismatched: self.dropped_mismatched.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
            connection_errors: self.connection_errors.load(Ordering::Relaxed),
            handshakes_refused: self.handshakes_refused.load(Ordering::Relaxed),
            handshakes_deferred: self.handshakes_deferred.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of a link's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Inbound frames that failed [`codec::decode`](crate::codec::decode).
    pub dropped_undecodable: u64,
    /// Inbound messages of the wrong kind, or naming another device than their sender.
    pub dropped_mismatched: u64,
    /// Successful connections (device side) or accepted connections (platform side).
    pub connects: u64,
    /// Failed connection attempts and lost connections.
    pub connection_errors: u64,
    /// QUIC platform: handshakes refused (e.g. a client certificate from another CA).
    pub handshakes_refused: u64,
    /// QUIC platform: connection attempts turned away at once, before any cryptography,
    /// because [`QuicPlatformConfig::handshakes_in_flight_max`] handshakes were under
    /// way; the device retries after its back-off.
    pub handshakes_deferred: u64,
}

/// Reconnection back-off: exponential with full jitter, capped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Delay bound after the first failure.
    pub delay_min: Duration,
    /// Largest delay bound.
    pub delay_max: Duration,
    /// RNG seed for the jitter; `None` seeds from the operating system.
    pub seed: Option<u64>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            delay_min: Duration::from_millis(100),
            delay_max: Duration::from_secs(30),
            seed: None,
        }
    }
}

/// Back-off state: `next_delay` draws uniformly from `[bound / 2, bound]`, where the bound
/// doubles from `delay_min` up to `delay_max` with every failure.
#[derive(Debug)]
pub struct Backoff {
    policy: ReconnectPolicy,
    n_failures: u32,
    rng: StdRng,
}

impl Backoff {
    /// A back-off with no failures yet.
    pub fn new(policy: ReconnectPolicy) -> Backoff {
        let rng = match policy.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Backoff {
            policy,
            n_failures: 0,
            rng,
        }
    }

    /// The delay before the next attempt; counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let shift = self.n_failures.min(20);
        self.n_failures = self.n_failures.saturating_add(1);
        let bound = self
            .policy
            .delay_min
            .saturating_mul(1 << shift)
            .min(self.policy.delay_max)
            .max(Duration::from_millis(1));
        let bound_us = u64::try_from(bound.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(self.rng.random_range(bound_us / 2..=bound_us))
    }

    /// Forgets the failures after a successful connection.
    pub fn reset(&mut self) {
        self.n_failures = 0;
    }
}

/// Kind name, for errors and logs.
pub(crate) fn kind_name(message: &Message) -> &'static str {
    match message {
        Message::Schedule(_) => "Schedule",
        Message::Receipt(_) => "Receipt",
        Message::Ack(_) => "Ack",
        Message::Acks(_) => "Acks",
        Message::Telemetry(_) => "Telemetry",
        Message::Heartbeat(_) => "Heartbeat",
    }
}

/// `Ok` if the message travels platform → device.
pub(crate) fn check_downlink(message: &Message) -> Result<(), TransportError> {
    match message {
        Message::Schedule(_) | Message::Receipt(_) => Ok(()),
        _ => Err(TransportError::WrongDirection {
            kind: kind_name(message),
            direction: "downlink",
        }),
    }
}

/// `Ok` if the message travels device → platform.
pub(crate) fn check_uplink(message: &Message) -> Result<(), TransportError> {
    match message {
        Message::Ack(_) | Message::Acks(_) | Message::Telemetry(_) | Message::Heartbeat(_) => {
            Ok(())
        }
        _ => Err(TransportError::WrongDirection {
            kind: kind_name(message),
            direction: "uplink",
        }),
    }
}

/// The one rustls crypto provider of this crate (ring), so no process-level default is
/// needed and no second provider can be picked by accident.
pub(crate) fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_within_jittered_bounds_and_resets() {
        let policy = ReconnectPolicy {
            delay_min: Duration::from_millis(100),
            delay_max: Duration::from_secs(2),
            seed: Some(7),
        };
        let mut backoff = Backoff::new(policy);
        let bounds_ms = [100, 200, 400, 800, 1600, 2000, 2000];
        for bound_ms in bounds_ms {
            let delay = backoff.next_delay();
            assert!(delay >= Duration::from_millis(bound_ms / 2), "{delay:?}");
            assert!(delay <= Duration::from_millis(bound_ms), "{delay:?}");
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
        let mut same_seed = Backoff::new(policy);
        let mut again = Backoff::new(policy);
        assert_eq!(same_seed.next_delay(), again.next_delay());
    }
}
