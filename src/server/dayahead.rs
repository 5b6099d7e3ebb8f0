//! The P&L of one day of the day-ahead cycle, per delivery period and by component:
//! trading (the committed position at the clearing price), imbalance (what the fleet
//! did not deliver), wear, and the perfect-foresight bound. `voltex up` writes the
//! result to `dayahead_periods`; the dashboard's P&L and market pages read it.
//!
//! # Guarantees
//! - Pure: no I/O and no clock; the caller passes prices, plans and which devices
//!   took their schedule.
//! - The components follow the engine's settlement
//!   ([`voltex_engine::commit::settle`]): trading = price × committed energy;
//!   imbalance = −price × short energy − penalty × |short energy|, where short =
//!   committed − delivered; wear = κ × |delivered energy| per device; net = trading +
//!   imbalance − wear. Each device's delivery is `execute_and_settle` on its own
//!   setpoints, so it never breaks the device's power or SoC limits.
//! - A device that did not take its schedule delivers nothing in any period (it idles,
//!   losing only its standing charge).
//! - Money stays exact [`Decimal`] until [`cents`] rounds it once, half to even.

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use voltex_engine::commit::settle::{SettleConfig, SettleError, energy_mwh, execute_and_settle};
use voltex_market::battery::BatterySpec;

/// One day of the fleet as committed, before delivery. All per-period slices have the
/// same length; per-device slices have one entry per device.
#[derive(Clone, Copy, Debug)]
pub struct CommittedDay<'a> {
    /// Every device's battery (the simulated fleet is homogeneous).
    pub spec: &'a BatterySpec,
    /// Each device's SoC at the start of the day, Wh.
    pub start_soc_wh: &'a [f64],
    /// `setpoints_w[device][period]`, W (positive = discharge), as allocated.
    pub setpoints_w: &'a [Vec<i64>],
    /// The fleet's committed net position per period, W (positive = sell).
    pub committed_w: &'a [i64],
    /// Clearing price per period, EUR/MWh.
    pub clearing_prices: &'a [Decimal],
    /// Market period length, seconds (3600 for hourly day-ahead products).
    pub period_s: i64,
}

/// What the fleet delivered over one day, per period.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetDelivery {
    /// Fleet net power delivered per period, W.
    pub delivered_w: Vec<i64>,
    /// Imbalance cash per period, EUR (negative: a cost).
    pub imbalance_eur: Vec<Decimal>,
    /// Wear cost per period, EUR (positive: a cost).
    pub wear_eur: Vec<Decimal>,
    /// Each device's SoC at the end of the day, Wh.
    pub end_soc_wh: Vec<f64>,
}

/// Why a day could not be settled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DayAheadError {
    /// Two inputs that must match in length do not.
    #[error("{what}: expected {expected} entries, got {got}")]
    Shape {
        /// Which input.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// The engine's settlement refused the input.
    #[error(transparent)]
    Settle(#[from] SettleError),
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), DayAheadError> {
    if expected == got {
        Ok(())
    } else {
        Err(DayAheadError::Shape {
            what,
            expected,
            got,
        })
    }
}

/// Market cash of a position per period: price × energy, EUR.
pub fn trading_eur(position_w: &[i64], prices: &[Decimal], period_s: i64) -> Vec<Decimal> {
    position_w
        .iter()
        .zip(prices)
        .map(|(w, price)| *price * energy_mwh(*w, period_s))
        .collect()
}

/// Net P&L of a plan per period (market cash minus wear), EUR. With the plan made on
/// the clearing prices themselves, this is the perfect-foresight bound.
pub fn net_of_wear_eur(
    spec: &BatterySpec,
    position_w: &[i64],
    prices: &[Decimal],
    period_s: i64,
) -> Vec<Decimal> {
    position_w
        .iter()
        .zip(prices)
        .map(|(w, price)| {
            let energy = energy_mwh(*w, period_s);
            *price * energy - spec.wear_cost_eur_per_mwh * energy.abs()
        })
        .collect()
}

/// Delivers a committed day: each device in `took_schedule` executes its setpoints as
/// far as its physics allows, the others idle; the fleet's shortfall against the
/// commitment is settled at the clearing price plus `penalty_eur_per_mwh`.
///
/// # Errors
/// [`DayAheadError`] if the inputs' lengths disagree or the period length is unusable.
pub fn deliver_day(
    day: &CommittedDay<'_>,
    took_schedule: &[bool],
    penalty_eur_per_mwh: Decimal,
) -> Result<FleetDelivery, DayAheadError> {
    let n_periods = day.committed_w.len();
    let n_devices = day.start_soc_wh.len();
    check_len("clearing prices", n_periods, day.clearing_prices.len())?;
    check_len("device setpoints", n_devices, day.setpoints_w.len())?;
    check_len(
        "devices that took their schedule",
        n_devices,
        took_schedule.len(),
    )?;
    let config = SettleConfig {
        period_s: day.period_s,
        imbalance_penalty_eur_per_mwh: penalty_eur_per_mwh,
    };
    let idle = vec![0_i64; n_periods];
    let mut delivered_w = vec![0_i64; n_periods];
    let mut wear_eur = vec![Decimal::ZERO; n_periods];
    let mut end_soc_wh = Vec::with_capacity(n_devices);
    for ((start_soc, setpoints), took) in day
        .start_soc_wh
        .iter()
        .zip(day.setpoints_w)
        .zip(took_schedule)
    {
        check_len("a device's setpoints", n_periods, setpoints.len())?;
        let executed = if *took { setpoints } else { &idle };
        let settled =
            execute_and_settle(day.spec, *start_soc, executed, day.clearing_prices, &config)?;
        for (period, power_w) in settled.delivered_w.iter().enumerate() {
            delivered_w[period] += power_w;
            wear_eur[period] +=
                day.spec.wear_cost_eur_per_mwh * energy_mwh(*power_w, day.period_s).abs();
        }
        end_soc_wh.push(settled.end_soc_wh);
    }
    let imbalance_eur = day
        .committed_w
        .iter()
        .zip(&delivered_w)
        .zip(day.clearing_prices)
        .map(|((committed, delivered), price)| {
            let short_mwh = energy_mwh(committed - delivered, day.period_s);
            -(*price * short_mwh) - penalty_eur_per_mwh * short_mwh.abs()
        })
        .collect();
    Ok(FleetDelivery {
        delivered_w,
        imbalance_eur,
        wear_eur,
        end_soc_wh,
    })
}

/// `eur` in cents, rounded half to even; saturates far beyond any real P&L.
pub fn cents(eur: Decimal) -> i64 {
    let saturated = if eur.is_sign_negative() {
        i64::MIN
    } else {
        i64::MAX
    };
    eur.checked_mul(Decimal::ONE_HUNDRED)
        .map(|cents| cents.round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven))
        .and_then(|cents| cents.to_i64())
        .unwrap_or(saturated)
}

/// A forecast price (EUR/MWh, `f64` from the forecaster) in cents per MWh.
pub fn forecast_cents(price_eur_per_mwh: f64) -> i64 {
    Decimal::from_f64_retain(price_eur_per_mwh).map_or(0, cents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec() -> BatterySpec {
        BatterySpec::symmetric(5_000, 10_000, 0.9, Decimal::from(2))
    }

    fn prices(values: &[i64]) -> Vec<Decimal> {
        values.iter().map(|p| Decimal::from(*p)).collect()
    }

    #[test]
    fn a_fleet_that_delivers_its_commitment_has_no_imbalance() {
        let spec = spec();
        // Two devices: charge 2 kW in hour 0, discharge 2 kW in hour 1, idle in hour 2.
        let setpoints = vec![vec![-2_000, 2_000, 0], vec![-2_000, 2_000, 0]];
        let committed = [-4_000, 4_000, 0];
        let clearing = prices(&[10, 90, 50]);
        let day = CommittedDay {
            spec: &spec,
            start_soc_wh: &[5_000.0, 5_000.0],
            setpoints_w: &setpoints,
            committed_w: &committed,
            clearing_prices: &clearing,
            period_s: 3600,
        };
        let delivery = deliver_day(&day, &[true, true], Decimal::from(20)).unwrap();
        assert_eq!(delivery.delivered_w, committed.to_vec());
        assert!(delivery.imbalance_eur.iter().all(|e| e.is_zero()));
        // 4 kWh charged at 10 and sold at 90: -0.04 + 0.36 EUR; wear 2 EUR/MWh x 4 kWh
        // per period.
        let trading: Decimal = trading_eur(&committed, &clearing, 3600).iter().sum();
        assert_eq!(trading, Decimal::new(32, 2));
        assert_eq!(
            delivery.wear_eur,
            vec![Decimal::new(8, 3), Decimal::new(8, 3), Decimal::ZERO]
        );
    }

    #[test]
    fn a_device_that_did_not_take_its_schedule_delivers_nothing_and_is_short() {
        let spec = spec();
        let setpoints = vec![vec![3_000], vec![3_000]];
        let committed = [6_000];
        let clearing = prices(&[100]);
        let day = CommittedDay {
            spec: &spec,
            start_soc_wh: &[8_000.0, 8_000.0],
            setpoints_w: &setpoints,
            committed_w: &committed,
            clearing_prices: &clearing,
            period_s: 3600,
        };
        let delivery = deliver_day(&day, &[true, false], Decimal::from(20)).unwrap();
        assert_eq!(delivery.delivered_w, vec![3_000]);
        // Short 3 kWh: bought back at 100 EUR/MWh plus 20 penalty = -0.36 EUR.
        assert_eq!(delivery.imbalance_eur, vec![Decimal::new(-36, 2)]);
        // The idle device kept its charge (less standing loss); the other discharged.
        assert!(delivery.end_soc_wh[1] <= 8_000.0 && delivery.end_soc_wh[1] > 7_900.0);
        assert!(delivery.end_soc_wh[0] < 5_000.0);
    }

    #[test]
    fn mismatched_inputs_are_a_typed_error() {
        let spec = spec();
        let setpoints = vec![vec![0, 0]];
        let day = CommittedDay {
            spec: &spec,
            start_soc_wh: &[1_000.0],
            setpoints_w: &setpoints,
            committed_w: &[0, 0],
            clearing_prices: &prices(&[1]),
            period_s: 3600,
        };
        assert!(matches!(
            deliver_day(&day, &[true], Decimal::ZERO),
            Err(DayAheadError::Shape {
                what: "clearing prices",
                ..
            })
        ));
        let day = CommittedDay {
            clearing_prices: &prices(&[1, 2]),
            ..day
        };
        assert!(matches!(
            deliver_day(&day, &[], Decimal::ZERO),
            Err(DayAheadError::Shape { .. })
        ));
        assert!(matches!(
            deliver_day(&CommittedDay { period_s: 7, ..day }, &[true], Decimal::ZERO),
            Err(DayAheadError::Settle(SettleError::BadPeriod(7)))
        ));
    }

    #[test]
    fn cents_round_half_to_even_and_saturate() {
        assert_eq!(cents(Decimal::new(12_345, 4)), 123); // 1.2345 EUR
        assert_eq!(cents(Decimal::new(125, 3)), 12); // 0.125 -> 12 (even)
        assert_eq!(cents(Decimal::new(135, 3)), 14); // 0.135 -> 14 (even)
        assert_eq!(cents(Decimal::new(-125, 3)), -12);
        assert_eq!(cents(Decimal::MAX), i64::MAX);
        assert_eq!(cents(Decimal::MIN), i64::MIN);
        assert_eq!(forecast_cents(42.5), 4_250);
        assert_eq!(forecast_cents(f64::NAN), 0);
    }

    proptest! {
        /// Whatever the setpoints and which devices took them: delivery never exceeds a
        /// device's power limits, wear is never negative, and the imbalance is exactly
        /// minus the short energy at price plus penalty.
        #[test]
        fn delivery_respects_limits_and_imbalance_matches_the_shortfall(
            setpoints in prop::collection::vec(prop::collection::vec(-6_000_i64..6_000, 4), 1..5),
            took in prop::collection::vec(any::<bool>(), 5),
            soc_start in 0.0_f64..10_000.0,
            price_values in prop::collection::vec(-50_i64..300, 4),
        ) {
            let spec = spec();
            let n = setpoints.len();
            let committed: Vec<i64> = (0..4).map(|t| setpoints.iter().map(|s| s[t]).sum()).collect();
            let clearing = prices(&price_values);
            let starts = vec![soc_start; n];
            let day = CommittedDay {
                spec: &spec,
                start_soc_wh: &starts,
                setpoints_w: &setpoints,
                committed_w: &committed,
                clearing_prices: &clearing,
                period_s: 3600,
            };
            let penalty = Decimal::from(15);
            let delivery = deliver_day(&day, &took[..n], penalty).unwrap();
            let limit = i64::try_from(n).unwrap() * 5_000;
            for t in 0..4 {
                prop_assert!(delivery.delivered_w[t].abs() <= limit);
                prop_assert!(delivery.wear_eur[t] >= Decimal::ZERO);
                let short = energy_mwh(committed[t] - delivery.delivered_w[t], 3600);
                prop_assert_eq!(delivery.imbalance_eur[t], -(clearing[t] * short) - penalty * short.abs());
            }
            for soc in &delivery.end_soc_wh {
                prop_assert!((0.0..=10_000.0).contains(soc));
            }
        }
    }
}
