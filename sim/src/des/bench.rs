//! The hold-model benchmark workload (Vaucher & Duval 1975; Jones 1986), shared by
//! `voltex sim bench-des` and the tests.
//!
//! Fill a queue with `n_pending` events, then repeat `n_ops` times: pop the earliest
//! event and push it back at its time plus a random increment. The queue size stays at
//! `n_pending`, which is the classic way to measure an event queue's cost per event.
//! Increments come from a table of exponential variates (mean `mean_increment_ns`)
//! drawn once from a seeded ChaCha8 RNG, so both queues see exactly the same
//! workload and the RNG is not part of the measured loop.
//!
//! This module measures nothing itself (the core reads no clock): the CLI times
//! [`run_hold`]. The result is an order-sensitive checksum of the popped `(time, id)`
//! sequence, so equal checksums from two queues mean they popped the same events in
//! the same order.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::EventQueue;

/// Size of the increment table (a power of two).
const TABLE_LEN: usize = 1 << 16;

/// Parameters of one hold-model run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldConfig {
    /// Events kept pending.
    pub n_pending: usize,
    /// Pop-and-push operations measured.
    pub n_ops: u64,
    /// Mean time increment, ns.
    pub mean_increment_ns: u64,
    /// RNG seed for the increments.
    pub seed: u64,
}

/// Pre-drawn increments for one configuration.
#[derive(Clone, Debug)]
pub struct HoldWorkload {
    config: HoldConfig,
    increments_ns: Vec<i64>,
}

impl HoldWorkload {
    /// Draws the increment table for `config`.
    pub fn new(config: HoldConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mean = config.mean_increment_ns.max(1) as f64;
        let increments_ns = (0..TABLE_LEN)
            .map(|_| {
                let u: f64 = rng.random::<f64>();
                // Inverse CDF of the exponential; 1 - u is in (0, 1].
                (-(1.0 - u).ln() * mean) as i64
            })
            .collect();
        HoldWorkload {
            config,
            increments_ns,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HoldConfig {
        &self.config
    }
}

/// Fills `queue` with the workload's pending events (not measured separately).
pub fn fill<Q: EventQueue<u32>>(queue: &mut Q, workload: &HoldWorkload) {
    for id in 0..workload.config.n_pending {
        let inc = workload.increments_ns[id % TABLE_LEN];
        queue.push(inc, id as u32);
    }
}

/// Runs the hold loop on a queue filled by [`fill`]; returns the order-sensitive
/// checksum of the pops.
///
/// # Panics
/// If the queue runs empty (it never does when filled with `n_pending >= 1`).
pub fn run_hold<Q: EventQueue<u32>>(queue: &mut Q, workload: &HoldWorkload) -> u64 {
    let mut checksum: u64 = 0xcbf2_9ce4_8422_2325;
    let table = &workload.increments_ns;
    for op in 0..workload.config.n_ops {
        let (time, id) = queue.pop().expect("hold model queue never runs empty");
        checksum = (checksum ^ (time as u64) ^ (u64::from(id) << 40)).wrapping_mul(0x100_0000_01b3);
        let inc = table[(op as usize) & (TABLE_LEN - 1)];
        queue.push(time + inc, id);
    }
    checksum
}
