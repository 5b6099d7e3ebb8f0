//! Commitments and allocation: the fleet's position per delivery period becomes
//! per-device schedules.
//!
//! A [`Commitment`] is the fleet's net power per delivery period (W, positive = sell,
//! from auction results or fills). [`allocate`] walks the periods in order; in each it
//! computes every device's feasible range from its current state of charge
//! ([`BatterySpec::feasible_power_w`]), splits the commitment in proportion to the
//! headroom each device has in the required direction, and steps every device's SoC.
//! Spreading by headroom means a device with more room takes more, so no battery is
//! cycled much harder than its peers; integer remainders go one W at a time to the
//! largest fractional shares (ties to the lower device index).
//!
//! # Invariants (property-tested in `engine/tests/commit_allocation.rs`)
//! - No setpoint breaks its device's power limits; no discharge takes a device's SoC
//!   below `soc_min_wh` and no charge takes it above `soc_max_wh` (an idle device with
//!   standing losses may still drift below its floor: the allocator has no power to
//!   spend on that unless the commitment asks for a charge).
//! - In each period, `Σ setpoints + shortfall = commitment` exactly; the shortfall is zero
//!   whenever the fleet's headroom covers the commitment.
//! - Same inputs, same output (no hash-map iteration, no randomness).
//!
//! [`settle`] executes one battery's accepted position against its physics and settles
//! it in exact money (imbalance for what cannot be delivered).

pub mod settle;

use voltex_market::battery::BatterySpec;

use crate::optimise::fleet::FleetDevice;

/// The fleet's committed net power per delivery period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commitment {
    /// Length of each delivery period in seconds.
    pub period_s: i64,
    /// Net power per period, W (positive = sell / discharge).
    pub net_w: Vec<i64>,
}

/// Per-device schedules for a commitment.
#[derive(Clone, Debug, PartialEq)]
pub struct Allocation {
    /// `setpoints_w[device][period]`, W (positive = discharge).
    pub setpoints_w: Vec<Vec<i64>>,
    /// Per period: commitment minus the sum of setpoints, W (zero where feasible).
    pub shortfall_w: Vec<i64>,
    /// Each device's SoC at the end of the horizon, Wh.
    pub end_soc_wh: Vec<f64>,
}

/// Why an allocation could not be attempted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    /// A device's spec breaks an invariant.
    #[error("device {device}: {source}")]
    InvalidDevice {
        /// Index of the device.
        device: usize,
        /// What is wrong.
        source: voltex_market::battery::BatteryError,
    },
    /// The period length is not positive.
    #[error("period_s must be positive, got {0}")]
    BadPeriod(i64),
}

/// Splits `commitment` into device schedules; see the module doc for the rules.
///
/// # Errors
/// [`AllocationError`] for an invalid device spec or period length. A commitment the
/// fleet cannot meet is not an error: it is reported in [`Allocation::shortfall_w`].
pub fn allocate(
    devices: &[FleetDevice],
    commitment: &Commitment,
) -> Result<Allocation, AllocationError> {
    if commitment.period_s <= 0 {
        return Err(AllocationError::BadPeriod(commitment.period_s));
    }
    for (device, d) in devices.iter().enumerate() {
        d.spec
            .validate()
            .map_err(|source| AllocationError::InvalidDevice { device, source })?;
    }
    let n_periods = commitment.net_w.len();
    let mut soc: Vec<f64> = devices.iter().map(|d| d.soc_wh as f64).collect();
    let mut setpoints_w = vec![vec![0_i64; n_periods]; devices.len()];
    let mut shortfall_w = vec![0_i64; n_periods];
    let mut headroom = vec![0_i64; devices.len()];
    let mut share = vec![0_i64; devices.len()];
    let mut rest: Vec<(u128, usize)> = Vec::with_capacity(devices.len());
    for (t, &target) in commitment.net_w.iter().enumerate() {
        let request = if target >= 0 { i64::MAX } else { i64::MIN + 1 };
        let mut total: i128 = 0;
        for (i, d) in devices.iter().enumerate() {
            headroom[i] = d
                .spec
                .feasible_power_w(soc[i], request, commitment.period_s)
                .abs();
            total += i128::from(headroom[i]);
        }
        let want = i128::from(target).abs();
        let give = want.min(total);
        split(give, total, &headroom, &mut share, &mut rest);
        let sign = if target >= 0 { 1 } else { -1 };
        let mut delivered: i64 = 0;
        for (i, d) in devices.iter().enumerate() {
            let power = sign * share[i];
            setpoints_w[i][t] = power;
            delivered += power;
            soc[i] = step(&d.spec, soc[i], power, commitment.period_s);
        }
        shortfall_w[t] = target - delivered;
    }
    Ok(Allocation {
        setpoints_w,
        shortfall_w,
        end_soc_wh: soc,
    })
}

/// SoC after one period. `feasible_power_w` keeps a move inside the limit it moves
/// towards up to float rounding; that dust is clamped away, and only on that side.
pub(crate) fn step(spec: &BatterySpec, soc_wh: f64, power_w: i64, period_s: i64) -> f64 {
    let next = spec.soc_after_wh(soc_wh, power_w, period_s);
    match power_w.signum() {
        1 => next.max(spec.soc_min_wh as f64),
        -1 => next.min(spec.soc_max_wh as f64),
        _ => next,
    }
}

/// Writes into `share` a split of `give` (≤ `total`) in proportion to `headroom`, exact
/// in integers: floors first, then one unit each to the largest remainders.
fn split(
    give: i128,
    total: i128,
    headroom: &[i64],
    share: &mut [i64],
    rest: &mut Vec<(u128, usize)>,
) {
    rest.clear();
    if total == 0 || give == 0 {
        share.iter_mut().for_each(|s| *s = 0);
        return;
    }
    let mut assigned: i128 = 0;
    for (i, &h) in headroom.iter().enumerate() {
        let exact = give * i128::from(h);
        let floor = exact / total;
        share[i] = floor as i64;
        assigned += floor;
        if floor < i128::from(h) {
            rest.push(((exact % total) as u128, i));
        }
    }
    let mut left = give - assigned;
    if left > 0 {
        rest.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, i) in rest.iter() {
            if left == 0 {
                break;
            }
            share[i] += 1;
            left -= 1;
        }
    }
    debug_assert_eq!(
        left, 0,
        "remainder fits: it is below the number of devices with room"
    );
}
