//! Fleet events for the WebSocket stream: delivery progress of schedule versions.
//!
//! [`EventingStore`] wraps the orchestrator's [`DispatchStore`] (the database in
//! `voltex serve`/`voltex up`) and, after each write succeeds, publishes a
//! [`FleetEvent`] on a bounded broadcast channel: a version saved (`issued`), each new
//! delivery state the tracker decides or an agent acknowledges (`received`,
//! `accepted`, `started`, `completed`, `rejected`, `superseded`, `failed`). The wrapper
//! adds no state of its own and never changes what is stored; with no subscriber the
//! events are dropped.
//!
//! Events are published only after the store accepted the write, so a stream client
//! never sees a state the database does not hold. Operators and quants see every
//! device's events; a device token sees only its own device; traders and anonymous
//! clients see none (`super::ws`).

use serde::Serialize;
use tokio::sync::broadcast;
use utoipa::ToSchema;
use voltex_dispatch::{Ack, AckStatus, Heartbeat, TelemetryBatch};
use voltex_market::UtcNanos;

use crate::server::fleet::{
    DeliveryState, DeliveryUpdate, DispatchStore, ResumeDevice, ScheduleVersionRow, StoreError,
    TransportKind,
};

/// Bound of the fleet-event broadcast channel (a slower client gets `lagged`).
pub const FLEET_EVENTS_LEN_MAX: usize = 1 << 14;

/// One delivery step of one schedule version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct FleetEvent {
    /// Device.
    pub device_id: String,
    /// Schedule id (128-bit, decimal string).
    pub schedule_id: String,
    /// Version.
    pub version: u64,
    /// `issued`, `received`, `accepted`, `started`, `completed`, `rejected`,
    /// `superseded`, `failed`.
    pub status: String,
    /// Whether an agent ack caused it (`false`: the platform decided, e.g. a deadline).
    pub by_agent: bool,
    /// When, UTC ns (platform clock; for acks, the agent's).
    pub at_ns: i64,
    /// When, RFC 3339 UTC.
    pub at: String,
}

impl FleetEvent {
    fn new(
        device_id: &str,
        schedule_id: u128,
        version: u64,
        status: &str,
        by_agent: bool,
        at: UtcNanos,
    ) -> FleetEvent {
        FleetEvent {
            device_id: device_id.to_string(),
            schedule_id: schedule_id.to_string(),
            version,
            status: status.to_string(),
            by_agent,
            at_ns: at.nanos(),
            at: at.to_datetime().to_rfc3339(),
        }
    }
}

/// The name of a delivery state on the stream.
pub fn state_name(state: &DeliveryState) -> &'static str {
    match state {
        DeliveryState::Issued => "issued",
        DeliveryState::Received => "received",
        DeliveryState::Accepted => "accepted",
        DeliveryState::Started => "started",
        DeliveryState::Completed => "completed",
        DeliveryState::Rejected { .. } => "rejected",
        DeliveryState::Superseded { .. } => "superseded",
        DeliveryState::Failed { .. } => "failed",
    }
}

fn ack_name(status: &AckStatus) -> &'static str {
    match status {
        AckStatus::Received => "received",
        AckStatus::Accepted => "accepted",
        AckStatus::Started => "started",
        AckStatus::Completed => "completed",
        AckStatus::Superseded { .. } => "superseded",
        AckStatus::Rejected(_) => "rejected",
        AckStatus::Failed(_) => "failed",
    }
}

/// A [`DispatchStore`] that publishes a [`FleetEvent`] after every successful write.
#[derive(Debug)]
pub struct EventingStore<S> {
    inner: S,
    events: broadcast::Sender<FleetEvent>,
}

impl<S: DispatchStore> EventingStore<S> {
    /// Wraps `inner`; events go to `events` (e.g. `AppState::fleet_events`).
    pub fn new(inner: S, events: broadcast::Sender<FleetEvent>) -> EventingStore<S> {
        EventingStore { inner, events }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn publish(&self, event: FleetEvent) {
        // No subscriber is not an error.
        let _ = self.events.send(event);
    }
}

impl<S: DispatchStore> DispatchStore for EventingStore<S> {
    async fn save_schedule(&self, row: &ScheduleVersionRow) -> Result<(), StoreError> {
        self.inner.save_schedule(row).await?;
        let schedule = &row.signed.schedule;
        self.publish(FleetEvent::new(
            schedule.device.as_str(),
            schedule.schedule_id.0,
            schedule.version,
            "issued",
            false,
            row.issued_at,
        ));
        Ok(())
    }

    async fn update_delivery(&self, update: &DeliveryUpdate) -> Result<(), StoreError> {
        self.inner.update_delivery(update).await?;
        // Acks publish from `record_ack` (with the agent's status); attempts are noise.
        if let DeliveryUpdate::State {
            device,
            schedule_id,
            version,
            state,
            at,
            by_agent: false,
        } = update
        {
            self.publish(FleetEvent::new(
                device.as_str(),
                schedule_id.0,
                *version,
                state_name(state),
                false,
                *at,
            ));
        }
        Ok(())
    }

    async fn record_ack(
        &self,
        ack: &Ack,
        transport: TransportKind,
        received_at: UtcNanos,
    ) -> Result<bool, StoreError> {
        let new = self.inner.record_ack(ack, transport, received_at).await?;
        if new {
            self.publish(FleetEvent::new(
                ack.device.as_str(),
                ack.schedule_id.0,
                ack.version,
                ack_name(&ack.status),
                true,
                ack.at,
            ));
        }
        Ok(new)
    }

    async fn record_telemetry(
        &self,
        batch: &TelemetryBatch,
        received_at: UtcNanos,
    ) -> Result<u64, StoreError> {
        self.inner.record_telemetry(batch, received_at).await
    }

    async fn record_heartbeat(
        &self,
        heartbeat: &Heartbeat,
        received_at: UtcNanos,
    ) -> Result<(), StoreError> {
        self.inner.record_heartbeat(heartbeat, received_at).await
    }

    async fn load_resume_state(&self) -> Result<Vec<ResumeDevice>, StoreError> {
        self.inner.load_resume_state().await
    }
}
