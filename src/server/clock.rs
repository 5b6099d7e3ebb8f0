//! The server's wall clock: the one place platform code reads system time.
//!
//! Library crates never read a clock (ARCHITECTURE.md); the server passes
//! [`UtcNanos`] from here into the engine and stamps rows with it. Tests and the
//! simulator substitute their own [`Clock`].
#![allow(clippy::disallowed_methods)] // this module is the sanctioned wall-clock reader

use std::sync::atomic::{AtomicI64, Ordering};

use voltex_market::UtcNanos;

/// A source of UTC time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, in UTC nanoseconds since the Unix epoch.
    fn now(&self) -> UtcNanos;
}

/// The system's UTC clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UtcNanos {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
            });
        UtcNanos(nanos)
    }
}

/// A clock tests move by hand.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `now`.
    pub fn new(now: UtcNanos) -> ManualClock {
        ManualClock(AtomicI64::new(now.nanos()))
    }

    /// Moves the clock to `now`.
    pub fn set(&self, now: UtcNanos) {
        self.0.store(now.nanos(), Ordering::Release);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UtcNanos {
        UtcNanos(self.0.load(Ordering::Acquire))
    }
}

/// Monotonic seconds since an arbitrary origin, for latency histograms only.
pub fn monotonic() -> std::time::Instant {
    std::time::Instant::now()
}
