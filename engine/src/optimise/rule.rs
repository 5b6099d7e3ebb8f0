//! The rule-based baseline: charge in fixed hours, discharge in fixed hours, every day.
//!
//! The hours are chosen once, from an average daily price profile of data the strategy
//! is allowed to see (e.g. the training period): the cheapest periods to charge, the
//! dearest to discharge, as many as it takes to fill and to empty the battery.
//!
//! # Invariants
//! - Charge and discharge periods never overlap; both lists are sorted.
//! - [`DailyRule::day_schedule_w`] asks for full rated power in every chosen period;
//!   [`DailyRule::day_commitment_w`] trims that to what the battery can deliver from a
//!   given SoC, so a strategy committing it never owes imbalance for its own physics
//!   (executing it through `commit::execute_and_settle` delivers every W).

use voltex_market::battery::BatterySpec;

/// Fixed charge and discharge periods of a day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DailyRule {
    /// Period indices (within the day) in which to charge at full power, sorted.
    pub charge_periods: Vec<usize>,
    /// Period indices in which to discharge at full power, sorted.
    pub discharge_periods: Vec<usize>,
}

impl DailyRule {
    /// Picks the cheapest and the dearest periods of `mean_profile` (one mean price per
    /// period of the day): enough charge periods to fill the usable range at full power,
    /// enough discharge periods to empty it. Ties go to the earlier period.
    pub fn from_profile(spec: &BatterySpec, mean_profile: &[f64], period_s: i64) -> DailyRule {
        let n = mean_profile.len();
        let hours = period_s as f64 / 3600.0;
        let range_wh = (spec.soc_max_wh - spec.soc_min_wh) as f64;
        let per_charge = spec.max_charge_w as f64 * spec.charge_efficiency * hours;
        let per_discharge = spec.max_discharge_w as f64 / spec.discharge_efficiency * hours;
        let count = |per: f64| {
            if per > 0.0 {
                (range_wh / per).ceil() as usize
            } else {
                0
            }
        };
        let n_charge = count(per_charge).min(n / 2);
        let n_discharge = count(per_discharge).min(n / 2);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|a, b| mean_profile[*a].total_cmp(&mean_profile[*b]).then(a.cmp(b)));
        let mut charge_periods: Vec<usize> = order[..n_charge].to_vec();
        let mut discharge_periods: Vec<usize> = order[n - n_discharge..].to_vec();
        charge_periods.sort_unstable();
        discharge_periods.sort_unstable();
        DailyRule {
            charge_periods,
            discharge_periods,
        }
    }

    /// Requested net power per period of one day of `n_periods`, W (positive = sell).
    pub fn day_schedule_w(&self, spec: &BatterySpec, n_periods: usize) -> Vec<i64> {
        let mut net = vec![0_i64; n_periods];
        for &t in self.charge_periods.iter().filter(|t| **t < n_periods) {
            net[t] = -spec.max_charge_w;
        }
        for &t in self.discharge_periods.iter().filter(|t| **t < n_periods) {
            net[t] = spec.max_discharge_w;
        }
        net
    }

    /// [`DailyRule::day_schedule_w`] as the battery can deliver it starting the day at
    /// `start_soc_wh`: each period's request trimmed by the power and SoC limits
    /// ([`BatterySpec::feasible_power_w`]), walking the SoC forward exactly as execution
    /// does. The last charge period of a day is then usually a partial one, rather than a
    /// full-power commitment the battery would fall short of.
    pub fn day_commitment_w(
        &self,
        spec: &BatterySpec,
        start_soc_wh: f64,
        n_periods: usize,
        period_s: i64,
    ) -> Vec<i64> {
        let physics = spec.period(period_s);
        let mut soc_wh = start_soc_wh;
        let mut net = self.day_schedule_w(spec, n_periods);
        for w in &mut net {
            *w = physics.feasible_power_w(soc_wh, *w);
            soc_wh = crate::commit::step(spec, soc_wh, *w, period_s);
        }
        net
    }
}
