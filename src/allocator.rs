//! The `voltex` binary's memory allocator: jemalloc (`tikv-jemallocator`), installed by
//! `main.rs` as the global allocator, and the one setting a command may change: hand
//! freed pages back to the operating system at once
//! ([`return_freed_pages_at_once`]).
//!
//! Why jemalloc: it keeps allocations of one size class on their own pages, so memory a
//! program frees in bulk leaves whole pages free. The simulator frees in bulk every
//! simulated day (each device's previous schedule, its acks once receipted); glibc's
//! malloc had scattered those between the devices' long-lived allocations, and a
//! 10,000-battery run kept about twice its live heap resident
//! (`examples/memory_per_battery.rs` measures both).
//!
//! What it guarantees: nothing about contents or layout; only where freed memory goes.
//! The functions here touch no data of the program.

use thiserror::Error;

/// The global allocator type `main.rs` installs (and the memory example wraps).
#[cfg(not(target_env = "msvc"))]
pub type Global = tikv_jemallocator::Jemalloc;

/// The allocator value (`#[global_allocator] static ...: Global = ALLOCATOR;`).
#[cfg(not(target_env = "msvc"))]
pub const ALLOCATOR: Global = tikv_jemallocator::Jemalloc;

/// The global allocator type `main.rs` installs (and the memory example wraps).
#[cfg(target_env = "msvc")]
pub type Global = std::alloc::System;

/// The allocator value (`#[global_allocator] static ...: Global = ALLOCATOR;`).
#[cfg(target_env = "msvc")]
pub const ALLOCATOR: Global = std::alloc::System;

/// An allocator setting that could not be changed.
#[derive(Debug, Error)]
#[error("allocator setting {setting}: {reason}")]
pub struct AllocatorError {
    /// The jemalloc control name.
    pub setting: &'static str,
    /// What jemalloc answered.
    pub reason: String,
}

/// Makes jemalloc return freed pages to the operating system at once (dirty and muzzy
/// decay 0, for every arena, existing and future) instead of after its default 10 s.
/// For batch work whose resident memory is reported (`voltex sim`): the simulator's daily
/// churn is then given back before the next day, so resident memory follows the live
/// heap. Costs more `madvise` calls; the one-year, 10,000-battery run was not slower
/// for it (see the README). The server keeps jemalloc's default decay (10 s).
///
/// # Errors
/// [`AllocatorError`] if jemalloc refuses a default (never expected: these controls
/// exist in every jemalloc 5).
#[cfg(not(target_env = "msvc"))]
pub fn return_freed_pages_at_once() -> Result<(), AllocatorError> {
    use tikv_jemalloc_ctl::raw;
    const DEFAULTS: [&str; 2] = ["arenas.dirty_decay_ms\0", "arenas.muzzy_decay_ms\0"];
    for setting in DEFAULTS {
        // SAFETY: both controls are `ssize_t`, written as `isize`.
        unsafe { raw::write(setting.as_bytes(), 0isize) }.map_err(|error| AllocatorError {
            setting: setting.trim_end_matches('\0'),
            reason: error.to_string(),
        })?;
    }
    // Arenas created from now on take the defaults above; those that exist take it here.
    // SAFETY: `arenas.narenas` is an `unsigned`, read as `u32`.
    let n_arenas: u32 =
        unsafe { raw::read(b"arenas.narenas\0") }.map_err(|error| AllocatorError {
            setting: "arenas.narenas",
            reason: error.to_string(),
        })?;
    for arena in 0..n_arenas {
        for decay in ["dirty_decay_ms", "muzzy_decay_ms"] {
            let name = format!("arena.{arena}.{decay}\0");
            // An index not yet initialised refuses the write: it will take the default
            // when a thread first uses it.
            // SAFETY: the control is `ssize_t`, written as `isize`.
            let _ = unsafe { raw::write(name.as_bytes(), 0isize) };
        }
    }
    Ok(())
}

/// No-op where the system allocator is used (it has no such setting).
///
/// # Errors
/// Never.
#[cfg(target_env = "msvc")]
pub fn return_freed_pages_at_once() -> Result<(), AllocatorError> {
    Ok(())
}
