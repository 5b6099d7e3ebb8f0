//! # voltex: the platform crate
//!
//! The root crate holds the `voltex` binary (CLI) and what the binary and the
//! criterion benches share. Today that is [`workload`], the seeded order-flow
//! generator behind `voltex bench book` and `benches/book.rs`.
//!
//! **Architecture Invariant:** no other crate depends on this one; it is where wall
//! clocks, files, sockets and databases meet the pure crates below it.
#![deny(missing_docs)]

pub mod allocator;
pub mod db;
pub mod process_stats;
pub mod server;
pub mod telemetry;
pub mod workload;
