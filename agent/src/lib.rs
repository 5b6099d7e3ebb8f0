//! # voltex-agent: the battery agent
//!
//! The agent receives signed schedules from the platform, decides whether to accept
//! them, executes their setpoints at interval boundaries through a battery driver,
//! follows the fallback when no schedule covers the present, and reports acks and
//! telemetry through an outbox that only a platform receipt drains.
//!
//! The pure, synchronous core (no I/O, no clock reads, seeded randomness), which the
//! simulator runs for every virtual battery:
//! - [`acceptance`]: [`acceptance::decide`], the acceptance verdict for one schedule.
//! - [`executor`]: [`executor::Executor`], setpoints with ramps, start/complete
//!   transitions, randomised start and fallback.
//! - [`outbox`]: [`outbox::Outbox`], numbered reports drained by receipts.
//! - [`core`]: [`core::AgentCore`], the three together as one state machine whose
//!   every durable change is a [`store::WriteBatch`].
//!
//! At the edges:
//! - [`store`]: the [`store::AgentStore`] trait, SQLite ([`store::sqlite`]) and
//!   in-memory ([`store::memory`]) stores.
//! - [`driver`]: the [`driver::BatteryDriver`] trait, the simulated battery and the
//!   GPIO driver (feature `pi`).
//! - [`config`]: the TOML configuration file.
//! - [`runtime`]: the tokio loop that ties the core to a transport, a store, a driver
//!   and the real clocks (the only place that reads them).
//!
//! **API Boundary:** the simulator uses [`core::AgentCore`] with a
//! [`store::memory::MemoryStore`] and a [`driver::sim::SimulatedBattery`], passing
//! virtual time; it does not use [`runtime`].
//!
//! ```
//! use voltex_agent::acceptance::{AcceptanceConfig, AcceptancePolicy, DeviceLimits, SignatureCheck};
//! use std::sync::Arc;
//! use voltex_agent::core::{AgentCore, AgentProfile, CoreConfig};
//! use voltex_agent::executor::{ExecutorConfig, MonoNanos};
//! use voltex_agent::outbox::OutboxConfig;
//! use voltex_agent::store::memory::MemoryStore;
//! use voltex_dispatch::message::*;
//! use voltex_dispatch::ScheduleSigner;
//! use voltex_market::UtcNanos;
//!
//! let signer = ScheduleSigner::from_seed(&[7; 32]);
//! let device = DeviceId::new("bat-1").unwrap();
//! let limits = DeviceLimits { max_charge_w: 5_000, max_discharge_w: 5_000 };
//! let profile = AgentProfile {
//!     acceptance: AcceptanceConfig {
//!         limits,
//!         signature: SignatureCheck::Verify(signer.verifier()),
//!         policy: AcceptancePolicy::default(),
//!     },
//!     executor: Arc::new(ExecutorConfig {
//!         limits,
//!         default_fallback: Fallback::Idle,
//!         fallback_ramp_s: 0,
//!         clock_step_tolerance_s: 5,
//!     }),
//!     outbox: OutboxConfig::default(),
//!     records_max: 64,
//! };
//! let config = CoreConfig { device: device.clone(), seed: 1, profile: Arc::new(profile) };
//! let mut store = MemoryStore::new();
//! let mut agent = AgentCore::restore(config, store.state());
//! let schedule = Schedule {
//!     device,
//!     schedule_id: ScheduleId(1),
//!     version: 1,
//!     issued_at: UtcNanos(0),
//!     valid_from: UtcNanos(0),
//!     valid_until: UtcNanos(3_600_000_000_000),
//!     randomize_start_s: 0,
//!     periods: vec![SchedulePeriod { offset_s: 0, target_w: -2_000, ramp_s: 0 }].into(),
//!     fallback: Fallback::Idle,
//! };
//! let received = agent.receive(signer.sign(schedule).unwrap(), UtcNanos(0));
//! store.apply(&received.batch); // then confirm the delivery (PUBACK)
//! let decided = agent.decide_pending(UtcNanos(0));
//! store.apply(&decided.batch); // then send the outbox
//! let ticked = agent.tick(UtcNanos(1_000_000_000), MonoNanos(1_000_000_000), false);
//! store.apply(&ticked.batch); // then command the driver
//! assert_eq!(ticked.setpoint.target_w, -2_000);
//! assert_eq!(agent.outbox().len(), 3); // Received, Accepted, Started
//! ```
#![deny(missing_docs)]

pub mod acceptance;
pub mod config;
pub mod core;
pub mod driver;
pub mod executor;
pub mod outbox;
pub mod runtime;
pub mod store;
#[cfg(test)]
mod test_fixtures;

/// Below this many entries, the agent's records and outbox buffers grow one entry at a
/// time instead of jumping to Rust's first capacity of 4: an agent usually holds one or
/// two schedules and a few unreceipted acks, and a simulated fleet holds thousands of
/// agents (at 80 bytes an outbox entry, the jump wastes up to 240 bytes per buffer).
/// Above it, the usual amortised doubling applies (an outbox may hold a week of
/// telemetry).
pub(crate) const EXACT_GROWTH_BELOW: usize = 4;
