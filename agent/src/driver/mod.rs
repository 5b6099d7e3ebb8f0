//! Battery drivers: what turns a setpoint into charge or discharge.
//!
//! [`BatteryDriver`] is synchronous (GPIO writes and the simulated physics are both
//! instantaneous), so the simulator can step thousands of drivers without a runtime.
//! - [`sim::SimulatedBattery`] (default): the shared physics of
//!   [`voltex_market::battery::BatterySpec`].
//! - `gpio::GpioDriver` (feature `pi`): charge / discharge / idle relays and a setpoint
//!   PWM on a Raspberry Pi, through rppal.
//!
//! # Invariants
//! - [`BatteryDriver::emergency_stop`] leaves the device idle whatever state the driver
//!   is in, and is safe to call repeatedly (the runtime calls it on every tick while
//!   the stop is engaged).

#[cfg(feature = "pi")]
pub mod gpio;
pub mod sim;

use crate::executor::MonoNanos;

/// A driver failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The hardware could not be opened or configured.
    #[error("driver setup failed: {0}")]
    Setup(String),
    /// A command or reading failed.
    #[error("driver I/O failed: {0}")]
    Io(String),
}

/// A reading of the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Reading {
    /// Energy stored, in Wh (`-1` if the driver cannot measure it).
    pub soc_wh: i64,
    /// Grid-side power now, in W (positive discharge).
    pub power_w: i64,
    /// Energy taken from the grid since commissioning, in Wh.
    pub charged_wh: u64,
    /// Energy delivered to the grid since commissioning, in Wh.
    pub discharged_wh: u64,
    /// Temperature in milli-degrees Celsius.
    pub temperature_mc: i32,
    /// The device reports a fault.
    pub fault: bool,
}

/// A battery the agent controls.
pub trait BatteryDriver: Send {
    /// Commands `setpoint_w` (positive discharge) from `now`.
    ///
    /// # Errors
    /// The command could not be applied.
    fn apply(&mut self, setpoint_w: i64, now: MonoNanos) -> Result<(), DriverError>;

    /// Reads the device at `now`.
    ///
    /// # Errors
    /// The reading failed.
    fn read(&mut self, now: MonoNanos) -> Result<Reading, DriverError>;

    /// Forces the device idle now (emergency stop). Must succeed whenever physically
    /// possible, whatever state the driver is in.
    ///
    /// # Errors
    /// The hardware did not take the command (the runtime logs it loudly and retries
    /// on every tick).
    fn emergency_stop(&mut self, now: MonoNanos) -> Result<(), DriverError>;

    /// Whether a hardware emergency-stop input is engaged (`false` if there is none).
    ///
    /// # Errors
    /// The input could not be read (the runtime then treats the stop as engaged).
    fn emergency_input(&mut self) -> Result<bool, DriverError> {
        Ok(false)
    }
}

impl BatteryDriver for Box<dyn BatteryDriver> {
    fn apply(&mut self, setpoint_w: i64, now: MonoNanos) -> Result<(), DriverError> {
        (**self).apply(setpoint_w, now)
    }

    fn read(&mut self, now: MonoNanos) -> Result<Reading, DriverError> {
        (**self).read(now)
    }

    fn emergency_stop(&mut self, now: MonoNanos) -> Result<(), DriverError> {
        (**self).emergency_stop(now)
    }

    fn emergency_input(&mut self) -> Result<bool, DriverError> {
        (**self).emergency_input()
    }
}
