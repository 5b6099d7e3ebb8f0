//! The `voltex` binary's memory allocator: jemalloc (`tikv-jemallocator`), installed by
//! `main.rs` as the global allocator; its start-up options ([`MALLOC_CONF`], installed
//! by [`install_malloc_conf!`](crate::install_malloc_conf)); and the one setting a
//! command may change: hand freed pages back to the operating system at once
//! ([`return_freed_pages_at_once`]).
//!
//! Why jemalloc: it keeps allocations of one size class on their own pages, so memory a
//! program frees in bulk leaves whole pages free. The simulator frees in bulk every
//! simulated day (each device's previous schedule, its acks once receipted); glibc's
//! malloc had scattered those between the devices' long-lived allocations, and a
//! 10,000-battery run kept about twice its live heap resident
//! (`examples/memory_per_battery.rs` measures both).
//!
//! Small size classes (up to 512 B) live on one-page slabs, not jemalloc's default of
//! up to five pages per slab. A slab goes back to the operating system only when every
//! block on it is free, and a simulated day leaves a few long-lived blocks (a device's
//! acks awaiting a receipt, say) among thousands freed: with one-page slabs each such
//! straggler keeps 4 KiB resident instead of up to 20 KiB. Measured on the one-year,
//! 10,000-battery run: resident memory per battery stopped creeping up over the year
//! (quarterly means 722/721/726/713 B instead of 623/813/884/864 B) at a cost of about
//! 3 % in run time (medians of four alternated runs: 31.8 s against 30.9 s; README,
//! "Simulator memory").
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

/// jemalloc's start-up options (`malloc_conf`, NUL-terminated): one-page slabs for the
/// size classes up to 512 B (see the module doc). Above 512 B a one-page slab would
/// waste up to a third of its page, and no per-device allocation is that large.
/// `slab_sizes` is parsed by every jemalloc since 5.2 and covered by its own test suite
/// (`test/unit/slab_sizes`), though the manual does not list it; [`slab_bytes`] reads
/// back what took effect.
pub const MALLOC_CONF: &[u8; 19] = b"slab_sizes:1-512:1\0";

/// Defines jemalloc's options symbol with [`MALLOC_CONF`] in the binary that invokes it
/// (`main.rs`, the memory example, a test). jemalloc reads the symbol once, when it
/// starts; it must be defined by the binary itself because a library's static that
/// nothing references may be left out by the linker.
#[macro_export]
macro_rules! install_malloc_conf {
    () => {
        /// jemalloc's start-up options (see `voltex::allocator::MALLOC_CONF`): a thin
        /// pointer to a NUL-terminated string, which is what jemalloc reads as
        /// `const char *malloc_conf` (the `_rjem_` prefix is `tikv-jemalloc-sys`'s).
        #[cfg(not(target_env = "msvc"))]
        #[unsafe(export_name = "_rjem_malloc_conf")]
        static MALLOC_CONF: &[u8; $crate::allocator::MALLOC_CONF.len()] =
            $crate::allocator::MALLOC_CONF;
    };
}

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

/// The slab size, in bytes, of the jemalloc size class that holds blocks of
/// `block_bytes` (`None` if no slab class does: above the small classes).
///
/// # Errors
/// [`AllocatorError`] if jemalloc refuses to answer (never expected).
#[cfg(not(target_env = "msvc"))]
pub fn slab_bytes(block_bytes: usize) -> Result<Option<usize>, AllocatorError> {
    use tikv_jemalloc_ctl::raw;
    let refused = |setting: &'static str| {
        move |error: tikv_jemalloc_ctl::Error| AllocatorError {
            setting,
            reason: error.to_string(),
        }
    };
    // SAFETY: `arenas.nbins` is an `unsigned`, read as `u32`.
    let n_bins: u32 = unsafe { raw::read(b"arenas.nbins\0") }.map_err(refused("arenas.nbins"))?;
    for bin in 0..n_bins {
        let size_name = format!("arenas.bin.{bin}.size\0");
        // SAFETY: `arenas.bin.<i>.size` is a `size_t`, read as `usize`.
        let class_bytes: usize =
            unsafe { raw::read(size_name.as_bytes()) }.map_err(refused("arenas.bin.<i>.size"))?;
        if class_bytes >= block_bytes {
            let slab_name = format!("arenas.bin.{bin}.slab_size\0");
            // SAFETY: `arenas.bin.<i>.slab_size` is a `size_t`, read as `usize`.
            let slab: usize = unsafe { raw::read(slab_name.as_bytes()) }
                .map_err(refused("arenas.bin.<i>.slab_size"))?;
            return Ok(Some(slab));
        }
    }
    Ok(None)
}

/// Unknown where the system allocator is used.
///
/// # Errors
/// Never.
#[cfg(target_env = "msvc")]
pub fn slab_bytes(_block_bytes: usize) -> Result<Option<usize>, AllocatorError> {
    Ok(None)
}
