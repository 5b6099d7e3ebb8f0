//! The battery LP against hand-solved small cases, the perfect-foresight bound, start SoC
//! clamping, typed infeasibility, fleet grouping, the rolling horizon and the day planned
//! ahead of its own repeats, with both pure-Rust backends.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use voltex_engine::commit::settle::{SettleConfig, execute_and_settle};
use voltex_engine::optimise::fleet::{
    FleetDevice, group_devices, plan_fleet, plan_fleet_within, share_of_limit_w,
};
use voltex_engine::optimise::rule::DailyRule;
use voltex_engine::optimise::{
    LpBackend, MAX_CONTINUATION_DAYS, OptimiseError, PlanConfig, PlanWarning, RollingHorizon,
    TerminalSoc, plan_battery, plan_day_with_continuation, plan_rolling,
};
use voltex_market::battery::BatterySpec;

const BACKENDS: [LpBackend; 2] = [LpBackend::Microlp, LpBackend::Clarabel];

/// 1 MW / `capacity_mwh`, one-way efficiency `eta`, wear `wear` EUR/MWh.
fn battery(capacity_mwh: i64, eta: f64, wear: i64) -> BatterySpec {
    BatterySpec {
        charge_efficiency: eta,
        discharge_efficiency: eta,
        ..BatterySpec::symmetric(
            1_000_000,
            capacity_mwh * 1_000_000,
            1.0,
            Decimal::from(wear),
        )
    }
}

fn config(terminal: TerminalSoc, backend: LpBackend) -> PlanConfig {
    PlanConfig {
        period_s: 3600,
        terminal,
        backend,
    }
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

/// Net W within a few W of the expected (rounding towards zero and solver tolerance).
fn assert_net(actual: &[i64], expected: &[i64]) {
    assert_eq!(actual.len(), expected.len());
    for (a, e) in actual.iter().zip(expected) {
        assert!((a - e).abs() <= 5, "net {actual:?} expected {expected:?}");
    }
}

#[test]
fn buys_cheap_sells_dear_in_two_periods() {
    for backend in BACKENDS {
        let plan = plan_battery(
            &battery(1, 1.0, 0),
            0.0,
            &[10.0, 100.0],
            &config(TerminalSoc::Free, backend),
        )
        .unwrap();
        assert_net(&plan.net_w, &[-1_000_000, 1_000_000]);
        assert!(
            close(plan.expected_profit_eur, 90.0, 1e-3),
            "{backend:?} {plan:?}"
        );
    }
}

#[test]
fn efficiency_losses_shrink_what_can_be_sold() {
    // Charge 1 MW for 1 h stores 0.9 MWh; selling it yields 0.81 MWh.
    for backend in BACKENDS {
        let plan = plan_battery(
            &battery(1, 0.9, 0),
            0.0,
            &[10.0, 100.0],
            &config(TerminalSoc::Free, backend),
        )
        .unwrap();
        assert_net(&plan.net_w, &[-1_000_000, 810_000]);
        assert!(close(plan.expected_profit_eur, 71.0, 1e-3), "{backend:?}");
    }
}

#[test]
fn wear_cost_above_the_spread_means_no_trade_and_below_it_trade() {
    for backend in BACKENDS {
        let prices = [10.0, 100.0];
        let idle = plan_battery(
            &battery(1, 1.0, 50),
            0.0,
            &prices,
            &config(TerminalSoc::Free, backend),
        )
        .unwrap();
        assert_net(&idle.net_w, &[0, 0]);
        assert!(close(idle.expected_profit_eur, 0.0, 1e-3));
        let trade = plan_battery(
            &battery(1, 1.0, 40),
            0.0,
            &prices,
            &config(TerminalSoc::Free, backend),
        )
        .unwrap();
        assert_net(&trade.net_w, &[-1_000_000, 1_000_000]);
        assert!(close(trade.expected_profit_eur, 10.0, 1e-3), "{backend:?}");
    }
}

#[test]
fn full_battery_sells_first_and_does_not_refill_without_terminal_value() {
    for backend in BACKENDS {
        let plan = plan_battery(
            &battery(1, 1.0, 0),
            1_000_000.0,
            &[100.0, 10.0],
            &config(TerminalSoc::Free, backend),
        )
        .unwrap();
        assert_net(&plan.net_w, &[1_000_000, 0]);
        assert!(close(plan.expected_profit_eur, 100.0, 1e-3));
    }
}

#[test]
fn a_day_planned_ahead_of_its_repeat_refills_for_the_next_morning_when_the_round_trip_pays() {
    // Full 1 MWh battery, lossless; the day is [100, 10] EUR/MWh and nothing is worth
    // anything after it (Free terminal).
    for backend in BACKENDS {
        let free = config(TerminalSoc::Free, backend);
        let alone =
            plan_day_with_continuation(&battery(1, 1.0, 0), 1e6, &[100.0, 10.0], 0, &free).unwrap();
        let one_shot = plan_battery(&battery(1, 1.0, 0), 1e6, &[100.0, 10.0], &free).unwrap();
        assert_eq!(
            alone, one_shot,
            "{backend:?}: no continuation is plan_battery"
        );
        assert_net(&alone.net_w, &[1_000_000, 0]);

        // With tomorrow repeating today, the 10 EUR hour refills for tomorrow's 100:
        // the day sells 1 MWh at 100 and buys 1 MWh at 10 (90 EUR) and ends full.
        let ahead =
            plan_day_with_continuation(&battery(1, 1.0, 0), 1e6, &[100.0, 10.0], 1, &free).unwrap();
        assert_net(&ahead.net_w, &[1_000_000, -1_000_000]);
        assert_eq!(ahead.len(), 2, "only the first day is returned");
        assert_eq!(ahead.soc_wh.len(), 2);
        assert!(close(ahead.soc_wh[1], 1e6, 10.0), "{backend:?} {ahead:?}");
        assert!(
            close(ahead.expected_profit_eur, 90.0, 1e-2),
            "{backend:?}: the day's own profit, {ahead:?}"
        );
        if let Some(values) = &ahead.marginal_value_eur_per_mwh {
            assert_eq!(values.len(), 2);
        }

        // At 60 EUR/MWh wear the refill would buy at 70 to sell at 40: it never charges.
        // (Selling the stored 1 MWh today or at tomorrow's same 100 is a tie, so either
        // may be planned.)
        let worn = plan_day_with_continuation(&battery(1, 1.0, 60), 1e6, &[100.0, 10.0], 1, &free)
            .unwrap();
        assert!(
            worn.charge_w.iter().all(|c| *c <= 5),
            "{backend:?} {worn:?}"
        );
        let sold_mwh = worn.discharge_w.iter().sum::<i64>() as f64 / 1e6;
        assert!(
            close(worn.expected_profit_eur, 40.0 * sold_mwh, 1e-2),
            "{backend:?} {worn:?}"
        );

        assert!(matches!(
            plan_day_with_continuation(
                &battery(1, 1.0, 0),
                1e6,
                &[100.0, 10.0],
                MAX_CONTINUATION_DAYS + 1,
                &free
            ),
            Err(OptimiseError::InvalidConfig(_))
        ));
    }
}

#[test]
fn terminal_target_forces_charging_at_flat_prices() {
    for backend in BACKENDS {
        let plan = plan_battery(
            &battery(2, 1.0, 0),
            0.0,
            &[50.0, 50.0, 50.0],
            &config(TerminalSoc::AtLeastWh(1_000_000.0), backend),
        )
        .unwrap();
        // With lossless cells and no wear, simultaneous charge and discharge is free, so
        // only the net is determined: 1 MWh bought in total.
        let net: i64 = plan.net_w.iter().sum();
        assert!((net + 1_000_000).abs() <= 5, "{backend:?} {plan:?}");
        assert!(close(plan.expected_profit_eur, -50.0, 1e-3));
        assert!(plan.soc_wh[2] >= 1_000_000.0 - 1.0);
    }
}

#[test]
fn terminal_value_keeps_energy_worth_more_than_the_market() {
    for backend in BACKENDS {
        let plan = plan_battery(
            &battery(1, 1.0, 0),
            0.0,
            &[10.0, 100.0],
            &config(TerminalSoc::ValueEurPerMwh(200.0), backend),
        )
        .unwrap();
        assert_net(&plan.net_w, &[-1_000_000, 0]);
        assert!(close(plan.expected_profit_eur, 190.0, 1e-3));
    }
}

#[test]
fn clarabel_reports_marginal_value_of_storage_and_microlp_none() {
    // Both prices are below the terminal value: charge twice, 4 MWh never fills, SoC stays
    // strictly inside its limits, so an extra stored MWh is worth exactly 50.
    let prices = [10.0, 40.0];
    let cfg = config(TerminalSoc::ValueEurPerMwh(50.0), LpBackend::Clarabel);
    let plan = plan_battery(&battery(4, 1.0, 0), 0.0, &prices, &cfg).unwrap();
    let values = plan.marginal_value_eur_per_mwh.expect("clarabel has duals");
    assert!(values.iter().all(|v| close(*v, 50.0, 1e-3)), "{values:?}");
    let cfg = config(TerminalSoc::ValueEurPerMwh(50.0), LpBackend::Microlp);
    let plan = plan_battery(&battery(4, 1.0, 0), 0.0, &prices, &cfg).unwrap();
    assert_eq!(plan.marginal_value_eur_per_mwh, None);
}

#[test]
fn measured_start_soc_outside_limits_is_clamped_with_a_warning() {
    let mut spec = battery(2, 1.0, 0);
    spec.soc_min_wh = 200_000;
    spec.soc_max_wh = 1_800_000;
    for (measured, used) in [(5_000_000.0, 1_800_000.0), (-3.0, 200_000.0)] {
        let plan = plan_battery(
            &spec,
            measured,
            &[50.0; 4],
            &config(TerminalSoc::Free, LpBackend::Clarabel),
        )
        .unwrap();
        assert_eq!(plan.start_soc_wh, used);
        assert_eq!(
            plan.warnings,
            vec![PlanWarning::StartSocClamped {
                measured_wh: measured,
                used_wh: used
            }]
        );
        assert!(
            plan.soc_wh
                .iter()
                .all(|s| *s >= 200_000.0 - 1.0 && *s <= 1_800_000.0 + 1.0)
        );
    }
}

#[test]
fn unreachable_terminal_target_is_a_typed_error_naming_it() {
    for backend in BACKENDS {
        let err = plan_battery(
            &battery(2, 1.0, 0),
            0.0,
            &[50.0],
            &config(TerminalSoc::AtLeastWh(1_500_000.0), backend),
        )
        .unwrap_err();
        match err {
            OptimiseError::Infeasible { constraint } => {
                assert!(
                    constraint.starts_with("terminal_soc >= 1500000 Wh"),
                    "{constraint}"
                )
            }
            other => panic!("{backend:?}: expected Infeasible, got {other:?}"),
        }
    }
}

#[test]
fn standing_losses_below_soc_min_without_charge_power_is_infeasible_naming_soc_min() {
    let mut spec = battery(2, 1.0, 0);
    spec.max_charge_w = 0;
    spec.soc_min_wh = 1_000_000;
    spec.standing_loss_per_hour = 0.1;
    for backend in BACKENDS {
        let err = plan_battery(
            &spec,
            1_000_000.0,
            &[50.0, 50.0],
            &config(TerminalSoc::Free, backend),
        )
        .unwrap_err();
        match err {
            OptimiseError::Infeasible { constraint } => {
                assert!(
                    constraint.starts_with("soc_min_wh = 1000000 in period 0"),
                    "{constraint}"
                )
            }
            other => panic!("{backend:?}: expected Infeasible, got {other:?}"),
        }
    }
}

#[test]
fn bad_inputs_are_typed_errors_not_panics() {
    let cfg = config(TerminalSoc::Free, LpBackend::Clarabel);
    let spec = battery(1, 1.0, 0);
    assert_eq!(
        plan_battery(&spec, 0.0, &[], &cfg),
        Err(OptimiseError::EmptyHorizon)
    );
    assert_eq!(
        plan_battery(&spec, 0.0, &[1.0, f64::NAN], &cfg),
        Err(OptimiseError::NonFinitePrice { period: 1 })
    );
    let mut broken = spec.clone();
    broken.discharge_efficiency = 0.0;
    assert!(matches!(
        plan_battery(&broken, 0.0, &[1.0], &cfg),
        Err(OptimiseError::InvalidSpec(_))
    ));
}

fn random_prices(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n)
        .map(|t| {
            50.0 + 30.0 * ((t % 24) as f64 / 24.0 * std::f64::consts::TAU).sin()
                + rng.random_range(-20.0..20.0)
        })
        .collect()
}

fn to_decimal_cents(prices: &[f64]) -> Vec<Decimal> {
    prices
        .iter()
        .map(|p| Decimal::new((p * 100.0).round() as i64, 2))
        .collect()
}

#[test]
fn the_rules_last_charge_hour_is_cut_to_what_fills_the_battery() {
    // 1 MW / 2 MWh at 0.9 each way, empty: three charge hours are needed at full power
    // (0.9 MWh stored per hour), but only 0.2 MWh of room is left for the third.
    let spec = BatterySpec::symmetric(1_000_000, 2_000_000, 0.81, Decimal::ZERO);
    let mut profile = vec![50.0; 24];
    profile[1..4].copy_from_slice(&[10.0, 11.0, 12.0]);
    profile[18..20].copy_from_slice(&[90.0, 91.0]);
    let rule = DailyRule::from_profile(&spec, &profile, 3600);
    assert_eq!(rule.charge_periods, vec![1, 2, 3]);
    assert_eq!(rule.discharge_periods, vec![18, 19]);
    let full = rule.day_schedule_w(&spec, 24);
    assert_eq!(&full[1..4], &[-1_000_000; 3]);
    let committed = rule.day_commitment_w(&spec, spec.soc_min_wh as f64, 24, 3600);
    assert_eq!(&committed[1..3], &[-1_000_000; 2]);
    // 0.2 MWh / 0.9 = 222,222 W, give or take the float rounding of the efficiency.
    assert!(
        (-222_223..=-222_200).contains(&committed[3]),
        "{}",
        committed[3]
    );
    // Full again: 1 MW out, then what is left (0.889 MWh × 0.9 = 0.8 MW).
    assert_eq!(committed[18], 1_000_000);
    assert!(
        (799_990..=800_000).contains(&committed[19]),
        "{}",
        committed[19]
    );
    let settle = SettleConfig {
        period_s: 3600,
        ..Default::default()
    };
    let prices: Vec<Decimal> = profile.iter().map(|p| Decimal::from(*p as i64)).collect();
    let empty_wh = spec.soc_min_wh as f64;
    let naive = execute_and_settle(&spec, empty_wh, &full, &prices, &settle).unwrap();
    let fitted = execute_and_settle(&spec, empty_wh, &committed, &prices, &settle).unwrap();
    assert!(naive.imbalance_mwh > Decimal::new(7, 1), "{naive:?}");
    assert_eq!(fitted.imbalance_mwh, Decimal::ZERO);
    assert_eq!(fitted.delivered_w, naive.delivered_w);
}

#[test]
fn perfect_foresight_bounds_every_forecast_plan_and_the_rule() {
    let spec = BatterySpec::symmetric(1_000_000, 2_000_000, 0.9, Decimal::from(2));
    let settle = SettleConfig {
        period_s: 3600,
        ..Default::default()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for _ in 0..5 {
        let truth = to_decimal_cents(&random_prices(&mut rng, 48));
        let truth_f64: Vec<f64> = truth
            .iter()
            .map(|p| p.to_string().parse().unwrap())
            .collect();
        let cfg = config(TerminalSoc::Free, LpBackend::Clarabel);
        let perfect = plan_battery(&spec, 1_000_000.0, &truth_f64, &cfg).unwrap();
        let bound =
            execute_and_settle(&spec, 1_000_000.0, &perfect.net_w, &truth, &settle).unwrap();
        let forecast: Vec<f64> = truth_f64
            .iter()
            .map(|p| p + rng.random_range(-25.0..25.0))
            .collect();
        let guess = plan_battery(&spec, 1_000_000.0, &forecast, &cfg).unwrap();
        let realised =
            execute_and_settle(&spec, 1_000_000.0, &guess.net_w, &truth, &settle).unwrap();
        let rule = DailyRule::from_profile(&spec, &truth_f64[..24], 3600);
        let first_day = rule.day_commitment_w(&spec, 1_000_000.0, 24, 3600);
        let first_pnl =
            execute_and_settle(&spec, 1_000_000.0, &first_day, &truth[..24], &settle).unwrap();
        let mut rule_w = first_day;
        rule_w.extend(rule.day_commitment_w(&spec, first_pnl.end_soc_wh, 24, 3600));
        let rule_pnl = execute_and_settle(&spec, 1_000_000.0, &rule_w, &truth, &settle).unwrap();
        assert_eq!(rule_pnl.imbalance_mwh, Decimal::ZERO, "{rule_w:?}");
        // W rounding of the plan costs at most a few cents.
        let slack = Decimal::new(5, 2);
        assert!(
            bound.profit_eur + slack >= realised.profit_eur,
            "{bound:?} {realised:?}"
        );
        assert!(bound.profit_eur + slack >= rule_pnl.profit_eur);
        assert!(
            (bound.profit_eur.to_string().parse::<f64>().unwrap() - perfect.expected_profit_eur)
                .abs()
                < 0.5
        );
    }
}

#[test]
fn microlp_and_clarabel_agree_on_the_optimum() {
    let spec = BatterySpec::symmetric(1_000_000, 2_000_000, 0.9, Decimal::from(2));
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for _ in 0..5 {
        let prices = random_prices(&mut rng, 96);
        let terminal = TerminalSoc::AtLeastWh(1_000_000.0);
        let a = plan_battery(
            &spec,
            1_000_000.0,
            &prices,
            &config(terminal, LpBackend::Microlp),
        )
        .unwrap();
        let b = plan_battery(
            &spec,
            1_000_000.0,
            &prices,
            &config(terminal, LpBackend::Clarabel),
        )
        .unwrap();
        assert!(close(
            a.expected_profit_eur,
            b.expected_profit_eur,
            1e-3 * (1.0 + a.expected_profit_eur.abs())
        ));
    }
}

#[test]
fn rolling_horizon_with_full_window_equals_one_shot_and_short_windows_do_not_beat_it() {
    let spec = BatterySpec::symmetric(1_000_000, 2_000_000, 0.9, Decimal::from(2));
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let prices = random_prices(&mut rng, 72);
    let cfg = config(TerminalSoc::Free, LpBackend::Clarabel);
    let one = plan_battery(&spec, 0.0, &prices, &cfg).unwrap();
    let full = plan_rolling(
        &spec,
        0.0,
        &prices,
        RollingHorizon {
            window: 72,
            step: 72,
        },
        &cfg,
    )
    .unwrap();
    assert!(close(
        one.expected_profit_eur,
        full.expected_profit_eur,
        0.5
    ));
    let daily = plan_rolling(
        &spec,
        0.0,
        &prices,
        RollingHorizon {
            window: 36,
            step: 24,
        },
        &cfg,
    )
    .unwrap();
    assert_eq!(daily.len(), 72);
    assert!(daily.expected_profit_eur <= one.expected_profit_eur + 0.5);
    assert_eq!(daily.marginal_value_eur_per_mwh.map(|v| v.len()), Some(72));
    assert!(matches!(
        plan_rolling(
            &spec,
            0.0,
            &prices,
            RollingHorizon { window: 4, step: 5 },
            &cfg
        ),
        Err(OptimiseError::InvalidConfig(_))
    ));
}

/// Ten devices of two kinds, 5 kWh in each: `a` (5 kW, 10 kWh) at indices not divisible
/// by 3, `b` (3 kW, 13.5 kWh) at 0, 3, 6, 9.
fn two_kind_fleet() -> (BatterySpec, Vec<FleetDevice>) {
    let a = BatterySpec::symmetric(5_000, 10_000, 0.9, Decimal::from(2));
    let b = BatterySpec::symmetric(3_000, 13_500, 0.9, Decimal::from(2));
    let devices = (0..10)
        .map(|i| FleetDevice {
            spec: if i % 3 == 0 { b.clone() } else { a.clone() },
            soc_wh: 5_000,
        })
        .collect();
    (a, devices)
}

#[test]
fn fleet_groups_identical_devices_and_scales_the_plan() {
    let (a, devices) = two_kind_fleet();
    let groups = group_devices(&devices);
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0].members, vec![0, 3, 6, 9]);
    assert_eq!(groups[1].members, vec![1, 2, 4, 5, 7, 8]);
    assert_eq!(groups[0].aggregate.max_charge_w, 12_000);
    assert_eq!(groups[1].start_soc_wh, 30_000.0);
    let prices = [10.0, 90.0, 20.0, 80.0];
    let cfg = config(TerminalSoc::Free, LpBackend::Clarabel);
    let fleet = plan_fleet(&devices, &prices, &cfg).unwrap();
    // The aggregate of 6 identical devices plans 6× what one device plans.
    let single = plan_battery(&a, 5_000.0, &prices, &cfg).unwrap();
    for t in 0..4 {
        assert!(
            (fleet.plans[1].net_w[t] - 6 * single.net_w[t]).abs() <= 6,
            "{t}"
        );
        assert_eq!(
            fleet.net_w[t],
            fleet.plans[0].net_w[t] + fleet.plans[1].net_w[t]
        );
    }
}

#[test]
fn a_fleet_planned_within_a_limit_never_exceeds_it_and_shares_it_by_power() {
    let (_, devices) = two_kind_fleet();
    // 12 kW of `b` and 30 kW of `a`: 42 kW either way.
    let prices = [10.0, 90.0, 20.0, 80.0, 5.0, 100.0];
    let cfg = config(TerminalSoc::Free, LpBackend::Clarabel);
    let free = plan_fleet(&devices, &prices, &cfg).unwrap();
    assert!(
        free.net_w.iter().any(|w| w.abs() > 21_000),
        "{:?}",
        free.net_w
    );

    let within = plan_fleet_within(&devices, &prices, &cfg, 21_000).unwrap();
    let caps: Vec<(i64, i64)> = within
        .groups
        .iter()
        .map(|g| (g.aggregate.max_charge_w, g.aggregate.max_discharge_w))
        .collect();
    assert_eq!(
        caps,
        vec![(6_000, 6_000), (15_000, 15_000)],
        "shares by power"
    );
    for (t, w) in within.net_w.iter().enumerate() {
        assert!(w.abs() <= 21_000, "period {t}: {w} W");
    }
    // It still trades, at the limit where the free plan went beyond it.
    assert!(
        within.net_w.iter().any(|w| w.abs() > 20_000),
        "{:?}",
        within.net_w
    );

    // A limit above the fleet's power changes nothing; none means no trading.
    let loose = plan_fleet_within(&devices, &prices, &cfg, 50_000).unwrap();
    assert_eq!(loose, free);
    let none = plan_fleet_within(&devices, &prices, &cfg, 0).unwrap();
    assert!(none.net_w.iter().all(|w| *w == 0), "{:?}", none.net_w);
}

proptest::proptest! {
    /// The rule's commitment from any starting SoC is delivered in full (no imbalance),
    /// and each period asks for at most the full-power schedule, in the same direction.
    #[test]
    fn the_rule_commits_only_what_its_battery_can_deliver(
        power_kw in 1i64..5_000,
        hours_of_storage in 1i64..6,
        round_trip in 0.5f64..1.0,
        start_share in 0.0f64..=1.0,
        profile in proptest::collection::vec(-100.0f64..300.0, 24),
        period_s in proptest::sample::select(vec![900_i64, 1800, 3600]),
    ) {
        let power_w = power_kw * 1_000;
        let spec = BatterySpec::symmetric(power_w, power_w * hours_of_storage, round_trip, Decimal::ZERO);
        let n = profile.len() * (3600 / period_s) as usize;
        let profile: Vec<f64> = profile
            .iter()
            .flat_map(|p| std::iter::repeat_n(*p, (3600 / period_s) as usize))
            .collect();
        let rule = DailyRule::from_profile(&spec, &profile, period_s);
        let range_wh = (spec.soc_max_wh - spec.soc_min_wh) as f64;
        let start_wh = spec.soc_min_wh as f64 + start_share * range_wh;
        let full = rule.day_schedule_w(&spec, n);
        let committed = rule.day_commitment_w(&spec, start_wh, n, period_s);
        for (f, c) in full.iter().zip(&committed) {
            proptest::prop_assert!(*c == 0 || c.signum() == f.signum(), "{} vs {}", c, f);
            proptest::prop_assert!(c.abs() <= f.abs(), "{} vs {}", c, f);
        }
        let prices = vec![Decimal::from(50); n];
        let settle = SettleConfig { period_s, ..Default::default() };
        let settled = execute_and_settle(&spec, start_wh, &committed, &prices, &settle).unwrap();
        proptest::prop_assert_eq!(settled.imbalance_mwh, Decimal::ZERO);
        proptest::prop_assert_eq!(&settled.delivered_w, &committed);
    }

    /// Members' shares of a limit never add up to more than it, never exceed a
    /// member's own power, and leave every power alone when the total fits.
    #[test]
    fn shares_of_a_limit_add_up_to_at_most_the_limit(
        powers_w in proptest::collection::vec(0i64..=i64::MAX / 64, 1..12),
        net_max_w in 0i64..=i64::MAX / 8,
    ) {
        let total_w: i64 = powers_w.iter().sum();
        let shares: Vec<i64> = powers_w
            .iter()
            .map(|&own_w| share_of_limit_w(own_w, total_w, net_max_w))
            .collect();
        let shared_w: i128 = shares.iter().map(|&w| i128::from(w)).sum();
        proptest::prop_assert!(shared_w <= i128::from(net_max_w), "{} of {}", shared_w, net_max_w);
        for (own, share) in powers_w.iter().zip(&shares) {
            proptest::prop_assert!((0..=*own).contains(share), "{} of {}", share, own);
        }
        if total_w <= net_max_w {
            proptest::prop_assert_eq!(&shares, &powers_w);
        } else {
            // Rounding down loses less than one watt per member.
            proptest::prop_assert!(
                i128::from(net_max_w) - shared_w < powers_w.len() as i128,
                "{} of {}", shared_w, net_max_w
            );
        }
    }
}

/// No period of `plan` both charges and discharges.
fn assert_exclusive(plan: &voltex_engine::optimise::Plan, what: &str) {
    for (t, (c, d)) in plan.charge_w.iter().zip(&plan.discharge_w).enumerate() {
        assert!(
            *c == 0 || *d == 0,
            "{what}: period {t} charges {c} W and discharges {d} W at once"
        );
    }
}

#[test]
fn negative_prices_never_charge_and_discharge_in_the_same_period() {
    // Full 1 MWh battery, 90 % one way, wear 2, two hours at -100 EUR/MWh. The LP
    // relaxation "burns" energy: charge 1 MW and discharge 0.81 MW in both hours
    // (earning 100 − 81 − 2·1.81 = 15.38 EUR per hour, 30.76 in all). A real battery can
    // only discharge 0.81 MWh in hour 0 (paying 81 + 1.62 wear) to make room for 1 MWh
    // bought in hour 1 (paid 100, minus 2 wear): 15.38 EUR in all.
    for backend in BACKENDS {
        let plan = plan_battery(
            &battery(1, 0.9, 2),
            1_000_000.0,
            &[-100.0, -100.0],
            &config(TerminalSoc::Free, backend),
        )
        .unwrap();
        assert_exclusive(&plan, backend.name());
        assert!(
            close(plan.expected_profit_eur, 15.38, 1e-3),
            "{backend:?} {plan:?}"
        );
        assert_net(&plan.net_w, &[810_000, -1_000_000]);
    }
}

#[test]
fn deeply_negative_days_plan_only_what_the_battery_can_execute() {
    // Random days with many deeply negative hours: every plan is exclusive, both backends
    // find the same optimum, and executing the plan's net power reproduces the expected
    // profit (nothing was "earned" by energy the battery cannot absorb).
    let spec = BatterySpec::symmetric(1_000_000, 2_000_000, 0.9, Decimal::from(2));
    let settle = SettleConfig {
        period_s: 3600,
        ..Default::default()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    for case in 0..6 {
        let prices: Vec<f64> = (0..24)
            .map(|_| {
                if rng.random_bool(0.4) {
                    rng.random_range(-300.0..-40.0)
                } else {
                    rng.random_range(-20.0..120.0)
                }
            })
            .map(|p: f64| (p * 100.0).round() / 100.0)
            .collect();
        let terminal = TerminalSoc::AtLeastWh(1_000_000.0);
        let mut profits = Vec::new();
        for backend in BACKENDS {
            let plan =
                plan_battery(&spec, 2_000_000.0, &prices, &config(terminal, backend)).unwrap();
            let what = format!("case {case} {}", backend.name());
            assert_exclusive(&plan, &what);
            let executed = execute_and_settle(
                &spec,
                2_000_000.0,
                &plan.net_w,
                &to_decimal_cents(&prices),
                &settle,
            )
            .unwrap();
            assert!(
                executed.imbalance_mwh < Decimal::new(1, 3),
                "{what}: {executed:?}"
            );
            let realised: f64 = executed.profit_eur.to_string().parse().unwrap();
            assert!(
                (realised - plan.expected_profit_eur).abs() < 0.5,
                "{what}: planned {} realised {realised}",
                plan.expected_profit_eur
            );
            profits.push(plan.expected_profit_eur);
        }
        assert!(
            close(profits[0], profits[1], 1e-3 * (1.0 + profits[0].abs())),
            "case {case}: {profits:?}"
        );
    }
}
