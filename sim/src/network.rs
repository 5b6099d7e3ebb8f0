//! The virtual network between the platform and the devices.
//!
//! Each message independently: is dropped if its device is partitioned off at send
//! time, else lost with probability `loss`, else delivered after a log-normal latency
//! (median and 99th percentile from the scenario) and, with probability `duplicate`,
//! delivered a second time after an independent latency. Independent latencies reorder
//! messages whose send times are closer than the jitter.
//!
//! All draws come from the ChaCha8 RNG passed in, in the order messages are sent, so a
//! run is reproducible from its seed.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::scenario::NetworkSpec;

/// z-score of the 99th percentile of the standard normal.
const Z_99: f64 = 2.326_347_874_040_841;

/// What happens to one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Never arrives.
    Lost,
    /// Arrives after this many ns.
    Once(i64),
    /// Arrives twice, after each latency.
    Twice(i64, i64),
}

/// Latency, loss and duplication (partitions are decided by the caller).
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    mu_ln_ns: f64,
    sigma: f64,
    loss: f64,
    duplicate: f64,
}

impl Network {
    /// The model for a checked [`NetworkSpec`].
    pub fn new(spec: &NetworkSpec) -> Network {
        let median_ns = *spec.latency_ms_median.get_ref() * 1e6;
        let p99_ns = *spec.latency_ms_p99.get_ref() * 1e6;
        Network {
            mu_ln_ns: median_ns.ln(),
            sigma: ((p99_ns / median_ns).ln() / Z_99).max(0.0),
            loss: *spec.loss.get_ref(),
            duplicate: *spec.duplicate.get_ref(),
        }
    }

    fn latency_ns(&self, rng: &mut ChaCha8Rng) -> i64 {
        if self.sigma == 0.0 {
            return self.mu_ln_ns.exp() as i64;
        }
        // Box-Muller; 1 - u is in (0, 1] so the log is finite.
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        (self.mu_ln_ns + self.sigma * z).exp().max(1.0) as i64
    }

    /// Draws the fate of one message sent to or from a reachable device.
    pub fn send(&self, rng: &mut ChaCha8Rng) -> Delivery {
        if self.loss > 0.0 && rng.random::<f64>() < self.loss {
            return Delivery::Lost;
        }
        let first = self.latency_ns(rng);
        if self.duplicate > 0.0 && rng.random::<f64>() < self.duplicate {
            return Delivery::Twice(first, self.latency_ns(rng));
        }
        Delivery::Once(first)
    }
}
