//! Allocation of a fleet commitment into device schedules: property tests for the
//! invariants in `engine/src/commit/mod.rs` (exact sums, device limits, shortfall,
//! determinism) and a case table for spreading by headroom.

use proptest::prelude::*;
use rust_decimal::Decimal;
use voltex_engine::commit::{Commitment, allocate};
use voltex_engine::optimise::fleet::FleetDevice;
use voltex_market::battery::BatterySpec;

fn kinds() -> Vec<BatterySpec> {
    let mut lossy = BatterySpec::symmetric(3_000, 10_000, 0.85, Decimal::from(3));
    lossy.soc_min_wh = 1_000;
    lossy.soc_max_wh = 9_000;
    lossy.standing_loss_per_hour = 0.01;
    vec![
        BatterySpec::symmetric(5_000, 13_500, 0.9, Decimal::from(2)),
        lossy,
        BatterySpec {
            max_discharge_w: 2_500,
            ..BatterySpec::symmetric(4_000, 7_000, 0.95, Decimal::ZERO)
        },
    ]
}

fn fleet_strategy() -> impl Strategy<Value = Vec<FleetDevice>> {
    prop::collection::vec((0..3_usize, 0.0..=1.0_f64), 1..12).prop_map(|raw| {
        let kinds = kinds();
        raw.into_iter()
            .map(|(k, frac)| {
                let spec = kinds[k].clone();
                let span = (spec.soc_max_wh - spec.soc_min_wh) as f64;
                let soc_wh = spec.soc_min_wh + (span * frac) as i64;
                FleetDevice { spec, soc_wh }
            })
            .collect()
    })
}

fn commitment_strategy() -> impl Strategy<Value = Commitment> {
    (
        prop::sample::select(vec![900_i64, 1800, 3600]),
        prop::collection::vec(-40_000..40_000_i64, 1..10),
    )
        .prop_map(|(period_s, net_w)| Commitment { period_s, net_w })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn setpoints_plus_shortfall_equal_the_commitment_exactly(
        devices in fleet_strategy(), commitment in commitment_strategy()
    ) {
        let a = allocate(&devices, &commitment).unwrap();
        for (t, &target) in commitment.net_w.iter().enumerate() {
            let sum: i64 = a.setpoints_w.iter().map(|s| s[t]).sum();
            prop_assert_eq!(sum + a.shortfall_w[t], target);
            // Never overshoots, never goes the wrong way.
            prop_assert!(a.shortfall_w[t] == 0 || a.shortfall_w[t].signum() == target.signum());
        }
    }

    #[test]
    fn no_device_limit_is_ever_broken(devices in fleet_strategy(), commitment in commitment_strategy()) {
        let a = allocate(&devices, &commitment).unwrap();
        for (i, device) in devices.iter().enumerate() {
            let spec = &device.spec;
            let mut soc = device.soc_wh as f64;
            for &p in &a.setpoints_w[i] {
                prop_assert!(p <= spec.max_discharge_w && -p <= spec.max_charge_w);
                let next = spec.soc_after_wh(soc, p, commitment.period_s);
                // A discharge never takes the SoC below its floor, a charge never above its
                // ceiling (idle standing losses may drift below the floor: that is physics).
                if p > 0 {
                    prop_assert!(next >= spec.soc_min_wh as f64 - 1e-6, "soc {} below min", next);
                }
                if p < 0 {
                    prop_assert!(next <= spec.soc_max_wh as f64 + 1e-6, "soc {} above max", next);
                }
                soc = match p.signum() {
                    1 => next.max(spec.soc_min_wh as f64),
                    -1 => next.min(spec.soc_max_wh as f64),
                    _ => next,
                };
            }
        }
    }

    #[test]
    fn shortfall_only_when_every_device_is_at_its_limit(
        devices in fleet_strategy(), commitment in commitment_strategy()
    ) {
        let a = allocate(&devices, &commitment).unwrap();
        let mut soc: Vec<f64> = devices.iter().map(|d| d.soc_wh as f64).collect();
        for (t, &target) in commitment.net_w.iter().enumerate() {
            let request = if target >= 0 { i64::MAX } else { -i64::MAX };
            let room: i64 = devices.iter().zip(&soc)
                .map(|(d, s)| d.spec.feasible_power_w(*s, request, commitment.period_s))
                .sum();
            if target.abs() <= room.abs() {
                prop_assert_eq!(a.shortfall_w[t], 0, "period {} room {}", t, room);
            } else {
                prop_assert_eq!(a.shortfall_w[t], target - room);
            }
            for (i, d) in devices.iter().enumerate() {
                let next = d.spec.soc_after_wh(soc[i], a.setpoints_w[i][t], commitment.period_s);
                soc[i] = match a.setpoints_w[i][t].signum() {
                    1 => next.max(d.spec.soc_min_wh as f64),
                    -1 => next.min(d.spec.soc_max_wh as f64),
                    _ => next,
                };
            }
        }
    }

    #[test]
    fn allocation_is_deterministic(devices in fleet_strategy(), commitment in commitment_strategy()) {
        prop_assert_eq!(allocate(&devices, &commitment).unwrap(), allocate(&devices, &commitment).unwrap());
    }
}

#[test]
fn commitment_is_spread_in_proportion_to_headroom() {
    // Same power, different energy room: 1 h discharge room 1000 W vs 3000 W.
    let spec = BatterySpec::symmetric(10_000, 10_000, 1.0, Decimal::ZERO);
    let devices = vec![
        FleetDevice {
            spec: spec.clone(),
            soc_wh: 1_000,
        },
        FleetDevice {
            spec: spec.clone(),
            soc_wh: 3_000,
        },
    ];
    let cases = [
        (2_000, [500, 1_500], 0),
        (4_000, [1_000, 3_000], 0),
        (5_000, [1_000, 3_000], 1_000),
        (3, [1, 2], 0),
    ];
    for (target, expected, shortfall) in cases {
        let a = allocate(
            &devices,
            &Commitment {
                period_s: 3600,
                net_w: vec![target],
            },
        )
        .unwrap();
        assert_eq!(
            [a.setpoints_w[0][0], a.setpoints_w[1][0]],
            expected,
            "target {target}"
        );
        assert_eq!(a.shortfall_w, vec![shortfall]);
    }
}
