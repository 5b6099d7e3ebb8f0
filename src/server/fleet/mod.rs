//! # Fleet: dispatch orchestration and the simulated fleet
//!
//! This module owns the platform's side of the dispatch protocol above the transports:
//! it turns per-device [`Schedule`](voltex_dispatch::Schedule)s into signed, persisted,
//! delivered and acknowledged commands, and it can start a fleet of real agents in
//! this process to talk to.
//!
//! - [`tracker`]: [`Tracker`], the pure state machine of delivery. Per schedule version
//!   it tracks issued → received → accepted → started → completed, or rejected (with the
//!   agent's reason), superseded, failed (deadline passed, or execution failed); when
//!   the next retry is due (exponential back-off with seeded jitter from a multiple of
//!   the observed p99 ack latency, started when the link hands the send to its
//!   transport, within a fleet-wide retry budget, capped by the deadline); per-device
//!   and fleet-wide command success rates; [`RolloutStatus`], the operator's snapshot
//!   of a roll-out; and the restore of a restarted platform from the store. Time is
//!   passed in.
//! - [`store`]: [`DispatchStore`], the persistence seam (schedule versions, delivery
//!   status and attempts, acks recorded idempotently, telemetry, last seen), and
//!   [`MemoryDispatchStore`] for tests and database-less runs; [`db_store`]
//!   implements it for [`crate::db::Db`].
//! - [`rollout`]: [`Orchestrator`], the live loop around the tracker: signs with the
//!   platform's dispatch key, persists, pushes over one or more
//!   [`PlatformLink`](voltex_dispatch::transport::PlatformLink)s (a device is reached
//!   over the transport it is registered on, else the one it was last heard on), stores
//!   uplink acks, telemetry and heartbeats and only then sends the agent a
//!   [`Receipt`](voltex_dispatch::Receipt); exports `voltex_dispatch_*` metrics.
//! - [`sim_fleet`]: [`spawn_simulated_fleet`], N real `voltex-agent` runtimes (in-memory
//!   store, simulated battery, accelerated clock) over real MQTT and/or QUIC.
//!
//! **Architecture Invariant:** a schedule is persisted before it is first sent, and an
//! ack or telemetry batch is persisted before the receipt that lets the agent forget it.
//!
//! **API Boundary:** the HTTP API uses [`Orchestrator::roll_out`],
//! [`Orchestrator::rollout_status`], [`Orchestrator::device_status`] and
//! [`Orchestrator::fleet_status`]; `voltex up` uses [`spawn_simulated_fleet`].

pub mod db_store;
pub mod rollout;
pub mod sim_fleet;
pub mod store;
pub mod tracker;

use serde::{Deserialize, Serialize};

pub use rollout::{Orchestrator, OrchestratorBuilder, OrchestratorConfig, RolloutError};
pub use sim_fleet::{
    SimFleet, SimFleetConfig, SimFleetCounters, SimFleetError, SimQuic, spawn_simulated_fleet,
};
pub use store::{
    DeliveryUpdate, DispatchStore, MemoryDispatchStore, ResumeDevice, ResumeVersion,
    ScheduleVersionRow, StoreError,
};
pub use tracker::{
    DeliveryState, DeviceStatus, FailureCause, FleetStatus, Receipted, RolloutId, RolloutStatus,
    StateCounts, Tracker, TrackerConfig, TrackerError,
};

/// How the platform reaches a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    /// Through an MQTT broker.
    Mqtt,
    /// Straight to the platform's QUIC endpoint.
    Quic,
}

impl TransportKind {
    /// The lower-case name (`mqtt`, `quic`), for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            TransportKind::Mqtt => "mqtt",
            TransportKind::Quic => "quic",
        }
    }
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
