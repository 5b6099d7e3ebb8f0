//! The embedded MQTT broker of the default platform: rumqttd on its own thread.
//!
//! rumqttd's `Broker::start` blocks forever and has no shutdown API, and it cannot report
//! the port it bound; so [`start_embedded_broker`] takes an explicit port, starts the
//! broker on a named thread, and returns only once a TCP connection to the port succeeds
//! (or fails after [`EmbeddedBrokerConfig::ready_timeout`]). The broker lives until the
//! process exits; dropping [`EmbeddedBroker`] does not stop it.
//!
//! # Invariants
//! - Every router limit is set explicitly (rumqttd's defaults are zero): see
//!   [`EmbeddedBrokerConfig`].
//! - Every filter's in-memory log is bounded: a device's downlink keeps a short tail
//!   (about 12 KiB), the platform's uplink filters up to 17 MiB each (test:
//!   `embedded_broker_keeps_a_bounded_tail_for_a_device_away`).
//! - rumqttd keeps messages in memory only: a process restart loses sessions and queued
//!   messages. Delivery then rests on the application (the platform re-sends schedules
//!   until acked; the agent's outbox re-sends until receipted).
//! - Listens on 127.0.0.1 only, plain TCP, no authentication: for the single-machine
//!   default. A fleet on a network uses an external broker (Mosquitto) with TLS and
//!   per-device ACLs.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, SegmentConfig, ServerSettings};

use super::TransportError;
use crate::codec::MESSAGE_LEN_MAX;
use crate::topics::{TopicKind, uplink_filter};

/// Limits of the embedded broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedBrokerConfig {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Most simultaneous client connections.
    pub connections_max: usize,
    /// Most QoS 1 messages in flight to one client (rumqttd `max_inflight_count`).
    pub inflight_max: usize,
    /// Most outgoing packets buffered per connection (rumqttd `max_outgoing_packet_count`).
    pub outgoing_packets_max: u64,
    /// Bytes per commit-log segment of a filter (a device's downlink: its schedules and
    /// receipts). rumqttd keeps every message of a filter in memory until the filter's
    /// log holds `segment_count_max` + 1 full segments, then drops the oldest segment.
    pub segment_size_max: usize,
    /// Full segments kept per filter besides the one being filled.
    pub segment_count_max: usize,
    /// Bytes per segment of the platform's uplink filters ([`uplink_filter`] of acks,
    /// telemetry and heartbeats, every device's in one log): they hold what the
    /// platform has not read yet in a burst of the whole fleet.
    pub uplink_segment_size_max: usize,
    /// Full segments kept per uplink filter besides the one being filled.
    pub uplink_segment_count_max: usize,
    /// How long [`start_embedded_broker`] waits for the listener.
    pub ready_timeout: Duration,
}

impl EmbeddedBrokerConfig {
    /// Defaults sized for a fleet of 20,000 devices on one machine.
    pub fn new(port: u16) -> EmbeddedBrokerConfig {
        EmbeddedBrokerConfig {
            port,
            connections_max: 20_000,
            inflight_max: 100,
            outgoing_packets_max: 1_000,
            // A device's downlink keeps about 12 KiB (a few schedules) while the
            // device is away; it needs the newest schedule only, and the platform re-sends
            // until acked. With rumqttd's usual 64 MiB × 9 per filter, every message a
            // device was sent stayed in memory for good (a filter per device).
            segment_size_max: 4 * 1024,
            segment_count_max: 2,
            // Up to 17 MiB per uplink kind; a roll-out to 10,000 devices brings about
            // 12,000 ack messages of under 200 bytes (an estimate), about 2 MB.
            uplink_segment_size_max: 1024 * 1024,
            uplink_segment_count_max: 16,
            ready_timeout: Duration::from_secs(10),
        }
    }
}

/// A running embedded broker (see the module doc: it cannot be stopped).
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    _thread: thread::JoinHandle<()>,
}

impl EmbeddedBroker {
    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Starts rumqttd on 127.0.0.1:`port` with [`EmbeddedBrokerConfig::new`] limits.
///
/// # Errors
/// [`TransportError::Broker`] if the thread cannot start or the port does not accept
/// connections in time (e.g. it is taken).
pub fn start_embedded_broker(port: u16) -> Result<EmbeddedBroker, TransportError> {
    start_embedded_broker_with(EmbeddedBrokerConfig::new(port))
}

/// Starts rumqttd with explicit limits; see [`start_embedded_broker`].
///
/// # Errors
/// As [`start_embedded_broker`].
pub fn start_embedded_broker_with(
    config: EmbeddedBrokerConfig,
) -> Result<EmbeddedBroker, TransportError> {
    if config.port == 0 {
        return Err(TransportError::Config(
            "the embedded broker needs an explicit port (rumqttd cannot report one)".into(),
        ));
    }
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, config.port));
    // Fail early and clearly if the port is taken: rumqttd would only log it.
    drop(std::net::TcpListener::bind(addr).map_err(|error| {
        TransportError::Broker(format!("port {} unavailable: {error}", config.port))
    })?);
    let server = ServerSettings {
        name: "voltex-v4".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: MESSAGE_LEN_MAX + 1024,
            max_inflight_count: config.inflight_max,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let broker_config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: config.connections_max,
            max_outgoing_packet_count: config.outgoing_packets_max,
            max_segment_size: config.segment_size_max,
            max_segment_count: config.segment_count_max,
            custom_segment: Some(
                [TopicKind::Ack, TopicKind::Telemetry, TopicKind::Heartbeat]
                    .into_iter()
                    .map(|kind| {
                        let segments = SegmentConfig {
                            max_segment_size: config.uplink_segment_size_max,
                            max_segment_count: config.uplink_segment_count_max,
                        };
                        (uplink_filter(kind), segments)
                    })
                    .collect(),
            ),
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("v4".to_string(), server)])),
        ..Config::default()
    };
    let thread = thread::Builder::new()
        .name("voltex-mqtt-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(broker_config);
            if let Err(error) = broker.start() {
                tracing::error!(%error, "embedded MQTT broker stopped");
            }
        })
        .map_err(|error| TransportError::Broker(error.to_string()))?;
    let step = Duration::from_millis(20);
    let mut waited = Duration::ZERO;
    while TcpStream::connect_timeout(&addr, step).is_err() {
        if waited >= config.ready_timeout {
            return Err(TransportError::Broker(format!(
                "no listener on {addr} after {:?}",
                config.ready_timeout
            )));
        }
        thread::sleep(step);
        waited += step;
    }
    tracing::info!(%addr, "embedded MQTT broker listening");
    Ok(EmbeddedBroker {
        addr,
        _thread: thread,
    })
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for tests and benches: another
/// process may take it before it is used).
///
/// # Errors
/// [`TransportError::Io`].
pub fn free_port() -> Result<u16, TransportError> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}
