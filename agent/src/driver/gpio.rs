//! GPIO relay/PWM driver for a Raspberry Pi (feature `pi`, rppal).
//!
//! Wiring (BCM pin numbers from [`GpioConfig`]): three relays — *charge* (connects the
//! charger), *discharge* (connects the inverter) and *idle* (signals the power stage
//! to stand by) — and a PWM output whose duty cycle is `|setpoint| / limit` of the
//! direction in force (the power stage's analogue setpoint input). An optional input
//! pin is the hardware emergency stop (active low by default: a normally-closed loop
//! that a cut wire also engages).
//!
//! # Invariants
//! - Break before make: every change of direction first opens both power relays and
//!   zeroes the PWM, then closes the one needed; charge and discharge relays are never
//!   closed together.
//! - [`BatteryDriver::emergency_stop`] opens both power relays, zeroes the PWM and
//!   closes the idle relay, whatever the previous state.
//!
//! The driver has no sensor: readings report the commanded power, `soc_wh = -1` (not
//! measured) and zero counters. A metering input is future work.

use rppal::gpio::{Gpio, InputPin, OutputPin};

use super::{BatteryDriver, DriverError, Reading};
use crate::acceptance::DeviceLimits;
use crate::config::GpioConfig;
use crate::executor::MonoNanos;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Idle,
    Charge,
    Discharge,
}

/// The GPIO driver. See the module doc.
#[derive(Debug)]
pub struct GpioDriver {
    charge: OutputPin,
    discharge: OutputPin,
    idle: OutputPin,
    pwm: OutputPin,
    pwm_frequency_hz: f64,
    emergency: Option<(InputPin, bool)>,
    limits: DeviceLimits,
    direction: Direction,
    setpoint_w: i64,
}

fn io(error: rppal::gpio::Error) -> DriverError {
    DriverError::Io(error.to_string())
}

impl GpioDriver {
    /// Opens the GPIO pins, all relays open except idle, PWM at 0.
    ///
    /// # Errors
    /// [`DriverError::Setup`] if the GPIO peripheral or a pin cannot be opened.
    pub fn new(config: &GpioConfig, limits: DeviceLimits) -> Result<GpioDriver, DriverError> {
        let setup = |error: rppal::gpio::Error| DriverError::Setup(error.to_string());
        let gpio = Gpio::new().map_err(setup)?;
        let output = |pin: u8| gpio.get(pin).map(|p| p.into_output_low()).map_err(setup);
        let mut driver = GpioDriver {
            charge: output(config.charge_relay_pin)?,
            discharge: output(config.discharge_relay_pin)?,
            idle: output(config.idle_relay_pin)?,
            pwm: output(config.pwm_pin)?,
            pwm_frequency_hz: config.pwm_frequency_hz,
            emergency: match config.emergency_input_pin {
                Some(pin) => Some((
                    gpio.get(pin)
                        .map(|p| p.into_input_pullup())
                        .map_err(setup)?,
                    config.emergency_input_active_low,
                )),
                None => None,
            },
            limits,
            direction: Direction::Charge,
            setpoint_w: 0,
        };
        driver.set_direction(Direction::Idle);
        driver.set_pwm(0.0)?;
        Ok(driver)
    }

    fn set_direction(&mut self, direction: Direction) {
        if direction == self.direction {
            return;
        }
        // Break before make.
        self.charge.set_low();
        self.discharge.set_low();
        match direction {
            Direction::Idle => self.idle.set_high(),
            Direction::Charge => {
                self.idle.set_low();
                self.charge.set_high();
            }
            Direction::Discharge => {
                self.idle.set_low();
                self.discharge.set_high();
            }
        }
        self.direction = direction;
    }

    fn set_pwm(&mut self, duty_cycle: f64) -> Result<(), DriverError> {
        if duty_cycle <= 0.0 {
            self.pwm.clear_pwm().map_err(io)?;
            self.pwm.set_low();
            return Ok(());
        }
        self.pwm
            .set_pwm_frequency(self.pwm_frequency_hz, duty_cycle.min(1.0))
            .map_err(io)
    }
}

impl BatteryDriver for GpioDriver {
    fn apply(&mut self, setpoint_w: i64, _now: MonoNanos) -> Result<(), DriverError> {
        let setpoint_w = self.limits.clamp(setpoint_w);
        let (direction, limit_w) = match setpoint_w {
            0 => (Direction::Idle, 1),
            w if w > 0 => (Direction::Discharge, self.limits.max_discharge_w.max(1)),
            _ => (Direction::Charge, self.limits.max_charge_w.max(1)),
        };
        if direction != self.direction {
            self.set_pwm(0.0)?;
        }
        self.set_direction(direction);
        self.set_pwm(setpoint_w.unsigned_abs() as f64 / limit_w as f64)?;
        self.setpoint_w = setpoint_w;
        Ok(())
    }

    fn read(&mut self, _now: MonoNanos) -> Result<Reading, DriverError> {
        Ok(Reading {
            soc_wh: -1,
            power_w: self.setpoint_w,
            ..Reading::default()
        })
    }

    fn emergency_stop(&mut self, _now: MonoNanos) -> Result<(), DriverError> {
        // Open the power relays first, unconditionally (not via set_direction's cache).
        self.charge.set_low();
        self.discharge.set_low();
        self.idle.set_high();
        self.direction = Direction::Idle;
        self.setpoint_w = 0;
        self.set_pwm(0.0)
    }

    fn emergency_input(&mut self) -> Result<bool, DriverError> {
        Ok(self
            .emergency
            .as_ref()
            .is_some_and(|(pin, active_low)| pin.is_low() == *active_low))
    }
}
