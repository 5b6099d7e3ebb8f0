//! MQTT topic names: `voltex/v1/dev/{device_id}/{kind}`.
//!
//! The platform publishes `schedule` and `receipt` (QoS 1); the agent publishes `ack`,
//! `telemetry` and `heartbeat`. Device ids are restricted (see
//! [`DeviceId::new`](crate::message::DeviceId::new)) so they are always one safe topic level.

use crate::message::{DeviceId, ProtocolError};

/// Topic prefix of protocol version 1.
pub const TOPIC_PREFIX: &str = "voltex/v1/dev";

/// What a topic carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// Platform → agent schedules.
    Schedule,
    /// Platform → agent receipts.
    Receipt,
    /// Agent → platform acks.
    Ack,
    /// Agent → platform telemetry.
    Telemetry,
    /// Agent → platform heartbeats.
    Heartbeat,
}

impl TopicKind {
    /// Last topic level.
    pub fn as_str(self) -> &'static str {
        match self {
            TopicKind::Schedule => "schedule",
            TopicKind::Receipt => "receipt",
            TopicKind::Ack => "ack",
            TopicKind::Telemetry => "telemetry",
            TopicKind::Heartbeat => "heartbeat",
        }
    }

    fn parse(level: &str) -> Option<TopicKind> {
        Some(match level {
            "schedule" => TopicKind::Schedule,
            "receipt" => TopicKind::Receipt,
            "ack" => TopicKind::Ack,
            "telemetry" => TopicKind::Telemetry,
            "heartbeat" => TopicKind::Heartbeat,
            _ => return None,
        })
    }
}

/// The topic of `kind` for `device`.
pub fn topic(device: &DeviceId, kind: TopicKind) -> String {
    format!("{TOPIC_PREFIX}/{device}/{}", kind.as_str())
}

/// The platform's subscription filter for every device's uplink of `kind`.
pub fn uplink_filter(kind: TopicKind) -> String {
    format!("{TOPIC_PREFIX}/+/{}", kind.as_str())
}

/// Splits a topic into device and kind.
///
/// # Errors
/// [`ProtocolError::Invalid`] if it is not a Voltex v1 device topic, or
/// [`ProtocolError::InvalidDeviceId`].
pub fn parse_topic(topic: &str) -> Result<(DeviceId, TopicKind), ProtocolError> {
    let not_ours = ProtocolError::Invalid {
        field: "topic",
        rule: "voltex/v1/dev/{device}/{kind}",
    };
    let rest = topic
        .strip_prefix(TOPIC_PREFIX)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or(not_ours.clone())?;
    let (device, kind) = rest.split_once('/').ok_or(not_ours.clone())?;
    let kind = TopicKind::parse(kind).ok_or(not_ours)?;
    Ok((DeviceId::new(device)?, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_and_reject_foreign_ones() {
        let device = DeviceId::new("bat-0042").unwrap();
        for kind in [
            TopicKind::Schedule,
            TopicKind::Receipt,
            TopicKind::Ack,
            TopicKind::Telemetry,
            TopicKind::Heartbeat,
        ] {
            assert_eq!(
                parse_topic(&topic(&device, kind)),
                Ok((device.clone(), kind))
            );
        }
        assert!(parse_topic("voltex/v1/dev/bat-0042/other").is_err());
        assert!(parse_topic("voltex/v2/dev/bat-0042/ack").is_err());
        assert!(parse_topic("voltex/v1/dev/bat+0042/ack").is_err());
        assert!(parse_topic("voltex/v1/dev/bat-0042").is_err());
        assert_eq!(uplink_filter(TopicKind::Ack), "voltex/v1/dev/+/ack");
    }
}
