//! # voltex-sim: the discrete-event simulator
//!
//! Replays market prices against a virtual fleet of batteries, with the platform's own
//! planning code (the engine's forecasters, LP optimiser and rule baseline), a virtual
//! network and injected faults, in virtual time.
//!
//! - [`des`]: the core. A virtual clock in ns, [`des::RadixQueue`] (a monotone radix
//!   heap: O(1) amortised, stable `(time, seq)` order, cancellation by handle), the
//!   [`des::Model`] / [`des::Scheduler`] handler API, the `BinaryHeap` reference
//!   queue and the hold-model benchmark.
//! - [`scenario`]: the TOML scenario format, with errors that name file, line and field.
//! - [`agent`]: every virtual battery's agent — the real `voltex-agent` core
//!   (`AgentCore` over its in-memory store) — and the schedules the platform builds.
//! - [`check`]: `check-schedule`, a schedule set replayed against a fleet state:
//!   limit violations per device-interval, expected P&L and imbalance.
//! - [`network`]: latency (log-normal), loss, duplication; partitions come from windows.
//! - [`world`]: the simulated world as one DES model: platform planning, dispatch,
//!   cohort steps of struct-of-arrays battery state, faults, exact settlement.
//! - [`run`]: scenario in, `summary.json` and the per-interval CSV out;
//!   [`report`]: the self-contained `report.html`.
//!
//! ```
//! use voltex_sim::des::{EventQueue, RadixQueue};
//!
//! let mut queue = RadixQueue::starting_at(0);
//! let late = queue.push(20, "late");
//! queue.push(10, "first");
//! queue.push(10, "second"); // same time: runs after "first"
//! assert_eq!(queue.cancel(late), Some("late"));
//! assert_eq!(queue.pop(), Some((10, "first")));
//! assert_eq!(queue.pop(), Some((10, "second")));
//! assert_eq!(queue.pop(), None);
//! ```
//!
//! **Architecture Invariant:** the simulator reads no wall clock and draws only from
//! seeded ChaCha8 RNGs; it does no file I/O (the `voltex sim` command reads the scenario
//! and the prices and writes the outputs). Same scenario + same seed = same bytes.
#![deny(missing_docs)]

pub mod agent;
pub mod check;
pub mod des;
pub mod network;
pub mod report;
pub mod run;
pub mod scenario;
pub mod world;
