//! Battery specifications and the physics every part of Voltex agrees on.
//!
//! A [`BatterySpec`] describes one device (or an aggregate of identical devices): power
//! limits in W, energy limits in Wh, one-way charge and discharge efficiencies, a
//! standing loss per hour, and a wear (degradation) cost per MWh of throughput. The
//! optimiser, the allocator, the simulator's virtual batteries and the backtest all step
//! the state of charge with [`BatterySpec::soc_after_wh`] and clip requests with
//! [`BatterySpec::feasible_power_w`], so they cannot disagree about what is feasible.
//! Both are [`PeriodPhysics`] methods underneath: a caller stepping many batteries over
//! the same period length takes [`BatterySpec::period`] once and saves the standing-loss
//! `powf` per call (the simulator's hot loop); the results are the same bits.
//!
//! Sign convention: a **positive** power is a **discharge** (energy sold to the grid), a
//! negative power is a charge (energy bought from the grid).
//!
//! # Invariants (checked by [`BatterySpec::validate`])
//! - `0 <= soc_min_wh <= soc_max_wh <= capacity_wh`, `capacity_wh > 0`.
//! - `max_charge_w >= 0`, `max_discharge_w >= 0`.
//! - Efficiencies in `(0, 1]`, standing loss per hour in `[0, 1)`, wear cost `>= 0`.
//! - [`BatterySpec::feasible_power_w`] never returns a power whose
//!   [`BatterySpec::soc_after_wh`] leaves `[soc_min_wh, soc_max_wh]` (from a SoC inside it)
//!   or exceeds the power limits — except that standing loss alone can take an idle
//!   battery below `soc_min_wh` (the result is then 0 or a charge, never a discharge).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Seconds per hour.
const SECONDS_PER_HOUR: f64 = 3600.0;

/// Physical and economic parameters of one battery (or an aggregate of identical ones).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatterySpec {
    /// Usable energy capacity in Wh.
    pub capacity_wh: i64,
    /// Largest charging power drawn from the grid, in W.
    pub max_charge_w: i64,
    /// Largest discharging power delivered to the grid, in W.
    pub max_discharge_w: i64,
    /// Lowest allowed state of charge, in Wh.
    pub soc_min_wh: i64,
    /// Highest allowed state of charge, in Wh.
    pub soc_max_wh: i64,
    /// Fraction of grid energy that reaches the cells when charging, in `(0, 1]`.
    pub charge_efficiency: f64,
    /// Fraction of cell energy that reaches the grid when discharging, in `(0, 1]`.
    pub discharge_efficiency: f64,
    /// Fraction of the stored energy lost per hour while idle, in `[0, 1)`.
    pub standing_loss_per_hour: f64,
    /// Degradation cost per MWh of grid-side throughput (charge plus discharge), EUR/MWh.
    pub wear_cost_eur_per_mwh: Decimal,
}

/// A battery specification that breaks an invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatteryError {
    /// A field is out of its allowed range.
    #[error("invalid battery spec: {field} {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

fn invalid(field: &'static str, reason: &'static str) -> BatteryError {
    BatteryError::Invalid { field, reason }
}

impl BatterySpec {
    /// A symmetric battery: `power_w` both ways, `capacity_wh`, full SoC range, the
    /// round-trip efficiency split evenly (`sqrt(rte)` each way), no standing loss.
    pub fn symmetric(
        power_w: i64,
        capacity_wh: i64,
        round_trip_efficiency: f64,
        wear_cost_eur_per_mwh: Decimal,
    ) -> BatterySpec {
        let one_way = round_trip_efficiency.sqrt();
        BatterySpec {
            capacity_wh,
            max_charge_w: power_w,
            max_discharge_w: power_w,
            soc_min_wh: 0,
            soc_max_wh: capacity_wh,
            charge_efficiency: one_way,
            discharge_efficiency: one_way,
            standing_loss_per_hour: 0.0,
            wear_cost_eur_per_mwh,
        }
    }

    /// Checks the invariants listed in the module doc.
    ///
    /// # Errors
    /// [`BatteryError::Invalid`] naming the first broken field.
    pub fn validate(&self) -> Result<(), BatteryError> {
        if self.capacity_wh <= 0 {
            return Err(invalid("capacity_wh", "must be positive"));
        }
        if self.soc_min_wh < 0 {
            return Err(invalid("soc_min_wh", "must not be negative"));
        }
        if self.soc_min_wh > self.soc_max_wh {
            return Err(invalid("soc_min_wh", "must be <= soc_max_wh"));
        }
        if self.soc_max_wh > self.capacity_wh {
            return Err(invalid("soc_max_wh", "must be <= capacity_wh"));
        }
        if self.max_charge_w < 0 {
            return Err(invalid("max_charge_w", "must not be negative"));
        }
        if self.max_discharge_w < 0 {
            return Err(invalid("max_discharge_w", "must not be negative"));
        }
        let unit = |x: f64| x.is_finite() && x > 0.0 && x <= 1.0;
        if !unit(self.charge_efficiency) {
            return Err(invalid("charge_efficiency", "must be in (0, 1]"));
        }
        if !unit(self.discharge_efficiency) {
            return Err(invalid("discharge_efficiency", "must be in (0, 1]"));
        }
        let loss = self.standing_loss_per_hour;
        if !(loss.is_finite() && (0.0..1.0).contains(&loss)) {
            return Err(invalid("standing_loss_per_hour", "must be in [0, 1)"));
        }
        if self.wear_cost_eur_per_mwh < Decimal::ZERO {
            return Err(invalid("wear_cost_eur_per_mwh", "must not be negative"));
        }
        Ok(())
    }

    /// Fraction of the stored energy kept over one period of `period_s` seconds.
    pub fn standing_retention(&self, period_s: i64) -> f64 {
        (1.0 - self.standing_loss_per_hour).powf(period_s as f64 / SECONDS_PER_HOUR)
    }

    /// The physics of one period of `period_s` seconds, with the standing retention
    /// computed once (see [`PeriodPhysics`]).
    pub fn period(&self, period_s: i64) -> PeriodPhysics {
        PeriodPhysics {
            period_s,
            hours: period_s as f64 / SECONDS_PER_HOUR,
            retention: self.standing_retention(period_s),
            charge_efficiency: self.charge_efficiency,
            discharge_efficiency: self.discharge_efficiency,
            soc_min_wh: self.soc_min_wh as f64,
            soc_max_wh: self.soc_max_wh as f64,
            max_charge_w: self.max_charge_w,
            max_discharge_w: self.max_discharge_w,
        }
    }

    /// The state of charge clamped into `[soc_min_wh, soc_max_wh]`.
    pub fn clamp_soc_wh(&self, soc_wh: f64) -> f64 {
        soc_wh.clamp(self.soc_min_wh as f64, self.soc_max_wh as f64)
    }

    /// The SoC after holding grid-side power `power_w` (positive = discharge) for one
    /// period of `period_s` seconds, starting from `soc_wh`.
    pub fn soc_after_wh(&self, soc_wh: f64, power_w: i64, period_s: i64) -> f64 {
        self.period(period_s).soc_after_wh(soc_wh, power_w)
    }

    /// The power closest to `requested_w` (towards zero) that keeps the power limits and
    /// keeps the SoC inside `[soc_min_wh, soc_max_wh]` after one period, starting from
    /// `soc_wh`. Rounded towards zero to whole W, so the result is always feasible.
    pub fn feasible_power_w(&self, soc_wh: f64, requested_w: i64, period_s: i64) -> i64 {
        self.period(period_s).feasible_power_w(soc_wh, requested_w)
    }

    /// This spec scaled to `n` identical devices operated as one unit (powers and energies
    /// multiplied by `n`; efficiencies, losses and wear cost unchanged).
    pub fn scaled(&self, n: i64) -> BatterySpec {
        BatterySpec {
            capacity_wh: self.capacity_wh * n,
            max_charge_w: self.max_charge_w * n,
            max_discharge_w: self.max_discharge_w * n,
            soc_min_wh: self.soc_min_wh * n,
            soc_max_wh: self.soc_max_wh * n,
            ..self.clone()
        }
    }
}

/// A [`BatterySpec`]'s physics over periods of one fixed length: what
/// [`BatterySpec::soc_after_wh`] and [`BatterySpec::feasible_power_w`] compute, with the
/// period's standing retention (a `powf`) computed once by [`BatterySpec::period`].
/// Those two methods are these, so the two paths give the same bits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeriodPhysics {
    period_s: i64,
    hours: f64,
    retention: f64,
    charge_efficiency: f64,
    discharge_efficiency: f64,
    soc_min_wh: f64,
    soc_max_wh: f64,
    max_charge_w: i64,
    max_discharge_w: i64,
}

impl PeriodPhysics {
    /// The period's length, seconds.
    pub fn period_s(&self) -> i64 {
        self.period_s
    }

    /// Fraction of the stored energy kept over the period
    /// ([`BatterySpec::standing_retention`]).
    pub fn standing_retention(&self) -> f64 {
        self.retention
    }

    /// [`BatterySpec::soc_after_wh`] over this period.
    pub fn soc_after_wh(&self, soc_wh: f64, power_w: i64) -> f64 {
        let kept = soc_wh * self.retention;
        if power_w >= 0 {
            kept - power_w as f64 * self.hours / self.discharge_efficiency
        } else {
            kept - power_w as f64 * self.hours * self.charge_efficiency
        }
    }

    /// [`BatterySpec::feasible_power_w`] over this period.
    pub fn feasible_power_w(&self, soc_wh: f64, requested_w: i64) -> i64 {
        let kept = soc_wh * self.retention;
        if requested_w >= 0 {
            let room_wh = (kept - self.soc_min_wh).max(0.0);
            let by_soc = (room_wh * self.discharge_efficiency / self.hours).floor() as i64;
            requested_w.min(self.max_discharge_w).min(by_soc).max(0)
        } else {
            let room_wh = (self.soc_max_wh - kept).max(0.0);
            let by_soc = (room_wh / (self.charge_efficiency * self.hours)).floor() as i64;
            -((-requested_w).min(self.max_charge_w).min(by_soc).max(0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BatterySpec {
        BatterySpec::symmetric(1_000_000, 2_000_000, 0.81, Decimal::from(2))
    }

    #[test]
    fn symmetric_spec_is_valid_and_splits_round_trip_efficiency() {
        let s = spec();
        assert_eq!(s.validate(), Ok(()));
        assert!((s.charge_efficiency - 0.9).abs() < 1e-12);
    }

    #[test]
    fn invalid_fields_are_named() {
        let mut s = spec();
        s.soc_min_wh = 3_000_000;
        assert!(matches!(
            s.validate(),
            Err(BatteryError::Invalid {
                field: "soc_min_wh",
                ..
            })
        ));
        let mut s = spec();
        s.charge_efficiency = 1.5;
        let err = s.validate();
        assert!(matches!(
            err,
            Err(BatteryError::Invalid {
                field: "charge_efficiency",
                ..
            })
        ));
    }

    #[test]
    fn feasible_power_never_leaves_soc_limits() {
        let s = spec();
        for soc in [0.0, 1.0, 500_000.0, 1_999_999.0, 2_000_000.0] {
            for req in [-5_000_000, -1_000_000, -1, 0, 1, 999_999, 5_000_000] {
                let p = s.feasible_power_w(soc, req, 3600);
                let after = s.soc_after_wh(soc, p, 3600);
                assert!(
                    (-1e-6..=2_000_000.0 + 1e-6).contains(&after),
                    "{soc} {req} {p}"
                );
                assert!(p.abs() <= req.abs() && p.signum() * req.signum() >= 0);
            }
        }
    }
}
