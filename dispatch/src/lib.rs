//! # voltex-dispatch: the wire protocol between the platform and battery agents
//!
//! - [`message`]: the messages ([`SignedSchedule`], [`Receipt`] down; [`Ack`],
//!   [`TelemetryBatch`], [`Heartbeat`] up), their bounds and validation.
//! - [`codec`]: binary (postcard) and JSON frames; [`codec::decode`] never panics.
//! - [`signing`]: ed25519 schedule signatures ([`ScheduleSigner`], [`ScheduleVerifier`]).
//! - [`topics`]: MQTT topic names.
//! - [`transport`]: MQTT and QUIC links, platform side and device side.
//!
//! **Architecture Invariant:** only this crate knows the wire format. Everything else
//! exchanges the typed messages.
//!
//! ```
//! use voltex_dispatch::codec::{decode, encode_binary};
//! use voltex_dispatch::message::*;
//! use voltex_dispatch::signing::ScheduleSigner;
//! use voltex_market::UtcNanos;
//!
//! let signer = ScheduleSigner::from_seed(&[7; 32]);
//! let schedule = Schedule {
//!     device: DeviceId::new("bat-1").unwrap(),
//!     schedule_id: ScheduleId(1),
//!     version: 1,
//!     issued_at: UtcNanos(0),
//!     valid_from: UtcNanos(0),
//!     valid_until: UtcNanos(3_600_000_000_000),
//!     randomize_start_s: 0,
//!     periods: vec![SchedulePeriod { offset_s: 0, target_w: -2_000, ramp_s: 0 }].into(),
//!     fallback: Fallback::Idle,
//! };
//! let frame = encode_binary(&Message::Schedule(signer.sign(schedule).unwrap())).unwrap();
//! let Message::Schedule(received) = decode(&frame).unwrap() else { unreachable!() };
//! assert!(signer.verifier().verify(&received).is_ok());
//! ```
#![deny(missing_docs)]

pub mod codec;
pub mod message;
pub mod receipt;
pub mod signing;
pub mod topics;
pub mod transport;

pub use message::{
    Ack, AckBatch, AckEntry, AckStatus, DeviceId, Fallback, Heartbeat, Message, Receipt, Schedule,
    ScheduleId, SchedulePeriod, ScheduleRejection, SignedSchedule, Telemetry, TelemetryBatch,
};
pub use signing::{ScheduleSigner, ScheduleVerifier, SignatureError};
