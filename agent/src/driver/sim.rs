//! A simulated battery on the shared physics of [`voltex_market::battery`].
//!
//! Between calls the battery holds its power and its state of charge evolves by
//! [`BatterySpec::soc_after_wh`] in whole-second steps (the physics API takes whole
//! seconds; the sub-second remainder is carried to the next call, so nothing is lost).
//! Each step's power is the setpoint clipped by [`BatterySpec::feasible_power_w`] for
//! that second, so the SoC never leaves `[soc_min_wh, soc_max_wh]`.
//!
//! Implemented here because `market/src/battery.rs` does not model them: the grid-side
//! energy counters (`charged_wh`, `discharged_wh`, integrated from the clipped power)
//! and the temperature (a constant 25 °C; there is no thermal model).
//!
//! # Invariants
//! - The SoC stays in `[soc_min_wh, soc_max_wh]` from a start inside it.
//! - The energy counters never decrease.

use voltex_market::battery::BatterySpec;

use super::{BatteryDriver, DriverError, Reading};
use crate::acceptance::NANOS_PER_S;
use crate::executor::MonoNanos;

/// Seconds stepped at most per call (a long gap is integrated in one go at the held
/// power, clipped at the end; a coarse but safe approximation).
const STEP_S_MAX: i64 = 3_600;

/// The simulated battery. See the module doc.
#[derive(Clone, Debug)]
pub struct SimulatedBattery {
    spec: BatterySpec,
    soc_wh: f64,
    setpoint_w: i64,
    power_w: i64,
    last: Option<MonoNanos>,
    remainder_ns: i64,
    charged_wh: f64,
    discharged_wh: f64,
}

impl SimulatedBattery {
    /// A battery with `spec` (validated) at `soc_wh` (clamped into the SoC range).
    ///
    /// # Errors
    /// [`DriverError::Setup`] if the spec breaks an invariant.
    pub fn new(spec: BatterySpec, soc_wh: i64) -> Result<SimulatedBattery, DriverError> {
        spec.validate()
            .map_err(|error| DriverError::Setup(error.to_string()))?;
        let soc_wh = spec.clamp_soc_wh(soc_wh as f64);
        Ok(SimulatedBattery {
            spec,
            soc_wh,
            setpoint_w: 0,
            power_w: 0,
            last: None,
            remainder_ns: 0,
            charged_wh: 0.0,
            discharged_wh: 0.0,
        })
    }

    /// The state of charge, in Wh.
    pub fn soc_wh(&self) -> f64 {
        self.soc_wh
    }

    /// The spec.
    pub fn spec(&self) -> &BatterySpec {
        &self.spec
    }

    fn advance(&mut self, now: MonoNanos) {
        let Some(last) = self.last else {
            self.last = Some(now);
            return;
        };
        let elapsed_ns = now.0.saturating_sub(last.0).max(0) + self.remainder_ns;
        self.last = Some(now);
        let mut seconds = elapsed_ns / NANOS_PER_S;
        self.remainder_ns = elapsed_ns % NANOS_PER_S;
        // Step second by second while short; a long gap in one clipped chunk.
        while seconds > 0 {
            let step_s = if seconds > 60 {
                seconds.min(STEP_S_MAX)
            } else {
                1
            };
            let power_w = self
                .spec
                .feasible_power_w(self.soc_wh, self.setpoint_w, step_s);
            self.soc_wh =
                self.spec
                    .clamp_soc_wh(self.spec.soc_after_wh(self.soc_wh, power_w, step_s));
            let energy_wh = power_w.unsigned_abs() as f64 * step_s as f64 / 3_600.0;
            if power_w >= 0 {
                self.discharged_wh += energy_wh;
            } else {
                self.charged_wh += energy_wh;
            }
            self.power_w = power_w;
            seconds -= step_s;
        }
    }
}

impl BatteryDriver for SimulatedBattery {
    fn apply(&mut self, setpoint_w: i64, now: MonoNanos) -> Result<(), DriverError> {
        self.advance(now);
        self.setpoint_w = setpoint_w;
        self.power_w = self.spec.feasible_power_w(self.soc_wh, setpoint_w, 1);
        Ok(())
    }

    fn read(&mut self, now: MonoNanos) -> Result<Reading, DriverError> {
        self.advance(now);
        Ok(Reading {
            soc_wh: self.soc_wh.round() as i64,
            power_w: self.power_w,
            charged_wh: self.charged_wh as u64,
            discharged_wh: self.discharged_wh as u64,
            temperature_mc: 25_000,
            fault: false,
        })
    }

    fn emergency_stop(&mut self, now: MonoNanos) -> Result<(), DriverError> {
        self.apply(0, now)
    }
}
