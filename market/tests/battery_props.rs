//! Property tests of the shared battery physics: whatever the spec, the starting SoC,
//! the request and the period length, [`BatterySpec::feasible_power_w`] gives a power
//! within the limits, on the request's side of zero and no larger than it, whose
//! [`BatterySpec::soc_after_wh`] stays inside the SoC limits (standing loss alone may
//! take an idle battery below its floor; the power never does); and a
//! [`voltex_market::battery::PeriodPhysics`] taken once steps exactly as the spec does.

use proptest::prelude::*;
use rust_decimal::Decimal;
use voltex_market::battery::BatterySpec;

fn spec() -> impl Strategy<Value = BatterySpec> {
    (
        1_i64..20_000_000,
        0.0_f64..=1.0,
        0.0_f64..=1.0,
        0_i64..10_000_000,
        0_i64..10_000_000,
        0.5_f64..=1.0,
        0.5_f64..=1.0,
        0.0_f64..0.2,
    )
        .prop_map(
            |(capacity_wh, lo, hi, max_charge_w, max_discharge_w, eta_c, eta_d, loss)| {
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                BatterySpec {
                    capacity_wh,
                    max_charge_w,
                    max_discharge_w,
                    soc_min_wh: (capacity_wh as f64 * lo) as i64,
                    soc_max_wh: (capacity_wh as f64 * hi) as i64,
                    charge_efficiency: eta_c,
                    discharge_efficiency: eta_d,
                    standing_loss_per_hour: loss,
                    wear_cost_eur_per_mwh: Decimal::ONE,
                }
            },
        )
}

proptest! {
    #[test]
    fn feasible_power_keeps_limits_and_period_physics_agrees(
        spec in spec(),
        soc_frac in 0.0_f64..=1.0,
        requested_w in -20_000_000_i64..20_000_000,
        period_s in prop::sample::select(vec![1_i64, 60, 300, 900, 3_600, 86_400]),
    ) {
        prop_assert_eq!(spec.validate(), Ok(()));
        let (lo, hi) = (spec.soc_min_wh as f64, spec.soc_max_wh as f64);
        let soc = lo + (hi - lo) * soc_frac;
        let power = spec.feasible_power_w(soc, requested_w, period_s);
        prop_assert!(power.abs() <= requested_w.abs());
        prop_assert!(power == 0 || power.signum() == requested_w.signum());
        prop_assert!(power <= spec.max_discharge_w && -power <= spec.max_charge_w);
        let after = spec.soc_after_wh(soc, power, period_s);
        // Standing loss alone may take an idle battery below its floor; power never
        // does. Tolerance: float rounding, far below the whole W the power is floored to.
        let floor = lo.min(soc * spec.standing_retention(period_s));
        prop_assert!(after >= floor - 1e-6 * hi.max(1.0), "{} below {}", after, floor);
        prop_assert!(after <= hi + 1e-6 * hi.max(1.0), "{} above {}", after, hi);

        let physics = spec.period(period_s);
        prop_assert_eq!(physics.period_s(), period_s);
        prop_assert_eq!(physics.feasible_power_w(soc, requested_w), power);
        prop_assert_eq!(physics.soc_after_wh(soc, power).to_bits(), after.to_bits());
        prop_assert_eq!(
            physics.standing_retention().to_bits(),
            spec.standing_retention(period_s).to_bits()
        );
    }
}
