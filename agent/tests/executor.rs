//! Executor: setpoints at boundaries on the monotonic clock, ramps, fallback, randomised
//! start, emergency stop, clock steps; and the property that no setpoint ever exceeds
//! the device limits.

mod common;

use common::*;
use std::sync::Arc;

use proptest::prelude::*;
use voltex_agent::acceptance::{DeviceLimits, ScheduleKey};
use voltex_agent::executor::{ExecEvent, Executor, ExecutorConfig, Mode, MonoNanos, start_delay_s};
use voltex_dispatch::message::{
    FailureReason, Fallback, Schedule, ScheduleId, SchedulePeriod, SignedSchedule,
};
use voltex_market::UtcNanos;

fn tick(executor: &mut Executor, s: i64) -> (i64, Mode, Vec<ExecEvent>) {
    let mut events = Vec::new();
    let setpoint = executor.tick(at(s), mono(s), false, &mut events);
    (setpoint.target_w, setpoint.mode, events)
}

/// The executor needs no signature (acceptance checked it before).
fn unsigned(schedule: &Schedule) -> Arc<SignedSchedule> {
    Arc::new(SignedSchedule {
        schedule: schedule.clone(),
        signature: Vec::new(),
    })
}

fn loaded(schedule: &Schedule) -> (Executor, ScheduleKey) {
    let mut executor = Executor::new(executor_config(), SEED);
    let key = ScheduleKey {
        schedule_id: schedule.schedule_id,
        version: schedule.version,
    };
    executor.load(unsigned(schedule), false);
    (executor, key)
}

#[test]
fn setpoints_change_exactly_at_period_boundaries() {
    let (mut executor, k) = loaded(&hour_schedule(1, 1));
    let expected: &[(i64, i64, Mode)] = &[
        (-1, 0, Mode::Fallback),
        (
            0,
            -2_000,
            Mode::Schedule {
                key: k,
                period_idx: 0,
            },
        ),
        (
            899,
            -2_000,
            Mode::Schedule {
                key: k,
                period_idx: 0,
            },
        ),
        (
            900,
            3_000,
            Mode::Schedule {
                key: k,
                period_idx: 1,
            },
        ),
        (
            1_799,
            3_000,
            Mode::Schedule {
                key: k,
                period_idx: 1,
            },
        ),
        (
            1_800,
            0,
            Mode::Schedule {
                key: k,
                period_idx: 2,
            },
        ),
        (
            2_700,
            1_000,
            Mode::Schedule {
                key: k,
                period_idx: 3,
            },
        ),
        (
            3_599,
            1_000,
            Mode::Schedule {
                key: k,
                period_idx: 3,
            },
        ),
        (3_600, 0, Mode::Fallback),
    ];
    let mut all_events = Vec::new();
    for &(s, target_w, mode) in expected {
        let (got_w, got_mode, events) = tick(&mut executor, s);
        assert_eq!((got_w, got_mode), (target_w, mode), "at +{s} s");
        all_events.extend(events);
    }
    let lifecycle: Vec<ExecEvent> = all_events
        .into_iter()
        .filter(|e| matches!(e, ExecEvent::Started(_) | ExecEvent::Completed(_)))
        .collect();
    assert_eq!(
        lifecycle,
        vec![ExecEvent::Started(k), ExecEvent::Completed(k)]
    );
    assert_eq!(executor.live(), None);
}

#[test]
fn next_boundary_names_the_next_period_start_on_the_monotonic_clock() {
    let (mut executor, _) = loaded(&hour_schedule(1, 1));
    tick(&mut executor, 10);
    assert_eq!(executor.next_boundary(at(10), mono(10)), Some(mono(900)));
    tick(&mut executor, 2_750);
    assert_eq!(
        executor.next_boundary(at(2_750), mono(2_750)),
        Some(mono(3_600))
    );
}

#[test]
fn ramps_linearly_from_the_previous_setpoint_over_ramp_s() {
    let schedule = schedule(
        1,
        1,
        0,
        3_600,
        &[(0, 0, 0), (600, 3_000, 100), (1_200, -3_000, 60)],
    );
    let (mut executor, _) = loaded(&schedule);
    for (s, expected_w) in [
        (0, 0),
        (600, 0),
        (625, 750),
        (650, 1_500),
        (700, 3_000),
        (1_200, 3_000),
        (1_230, 0),
        (1_260, -3_000),
    ] {
        assert_eq!(tick(&mut executor, s).0, expected_w, "at +{s} s");
    }
}

#[test]
fn ramp_follows_the_monotonic_clock_not_wall_jitter() {
    let schedule = schedule(1, 1, 0, 3_600, &[(0, 0, 0), (600, 3_000, 100)]);
    let (mut executor, _) = loaded(&schedule);
    let mut events = Vec::new();
    executor.tick(at(0), mono(0), false, &mut events);
    executor.tick(at(600), mono(600), false, &mut events);
    // The wall clock is 3 s ahead (within the 5 s tolerance): time comes from mono.
    let setpoint = executor.tick(UtcNanos(at(650).0 + 3 * NS), mono(650), false, &mut events);
    assert_eq!(setpoint.target_w, 1_500);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ExecEvent::ClockStepped { .. }))
    );
}

#[test]
fn wall_clock_step_beyond_tolerance_reanchors_with_an_event() {
    let (mut executor, k) = loaded(&hour_schedule(1, 1));
    tick(&mut executor, 0);
    let mut events = Vec::new();
    // The wall clock jumps 20 minutes ahead while only 10 s pass on the monotonic one.
    let setpoint = executor.tick(at(1_210), mono(10), false, &mut events);
    assert!(events.contains(&ExecEvent::ClockStepped {
        wall_minus_schedule_ns: 1_200 * NS
    }));
    assert_eq!(
        setpoint.mode,
        Mode::Schedule {
            key: k,
            period_idx: 1
        }
    );
}

#[test]
fn fallback_of_the_schedule_applies_after_expiry() {
    let mut schedule = hour_schedule(1, 1);
    schedule.fallback = Fallback::Hold { target_w: 1_500 };
    let (mut executor, _) = loaded(&schedule);
    tick(&mut executor, 100);
    let (w, mode, events) = tick(&mut executor, 3_600);
    assert_eq!((w, mode), (1_500, Mode::Fallback));
    assert!(events.contains(&ExecEvent::FallbackEntered { target_w: 1_500 }));
    assert_eq!(
        tick(&mut executor, 90_000).0,
        1_500,
        "long partition: still the fallback"
    );
}

#[test]
fn default_fallback_applies_with_no_schedule() {
    let mut config = executor_config();
    let mut targets_w = vec![0; 24];
    targets_w[1] = -1_000;
    config.default_fallback = Fallback::DailyProfile {
        slot_s: 3_600,
        targets_w,
    };
    let mut executor = Executor::new(config, SEED);
    // T0 is midnight UTC: slot 0 until 01:00, then -1000 W.
    assert_eq!(tick(&mut executor, 10).0, 0);
    assert_eq!(executor.next_boundary(at(10), mono(10)), Some(mono(3_600)));
    let (w, mode, _) = tick(&mut executor, 3_600);
    assert_eq!((w, mode), (-1_000, Mode::Fallback));
}

#[test]
fn fallback_targets_are_clamped_to_the_limits() {
    let mut config = executor_config();
    config.default_fallback = Fallback::Hold { target_w: 9_999 };
    let mut executor = Executor::new(config, SEED);
    assert_eq!(tick(&mut executor, 0).0, 4_000);
}

#[test]
fn randomised_start_is_within_bounds_deterministic_per_seed_and_spread() {
    let k = ScheduleKey {
        schedule_id: ScheduleId(77),
        version: 3,
    };
    let delays: Vec<u32> = (0..500).map(|seed| start_delay_s(seed, k, 300)).collect();
    assert!(delays.iter().all(|&d| d <= 300));
    assert_eq!(
        delays,
        (0..500)
            .map(|seed| start_delay_s(seed, k, 300))
            .collect::<Vec<_>>()
    );
    let distinct: std::collections::BTreeSet<u32> = delays.iter().copied().collect();
    assert!(
        distinct.len() > 200,
        "only {} distinct delays",
        distinct.len()
    );
    assert!(distinct.iter().any(|&d| d < 30) && distinct.iter().any(|&d| d > 270));
    assert_eq!(start_delay_s(5, k, 0), 0);
}

#[test]
fn randomised_start_holds_the_previous_setpoint_then_starts_late() {
    let mut schedule = hour_schedule(1, 1);
    schedule.randomize_start_s = 300;
    let config = executor_config();
    let k = ScheduleKey {
        schedule_id: schedule.schedule_id,
        version: 1,
    };
    let delay = i64::from(start_delay_s(SEED, k, 300));
    assert!(delay > 0, "seed 42 gives a non-zero delay for this key");
    let mut executor = Executor::new(
        ExecutorConfig {
            default_fallback: Fallback::Hold { target_w: 500 },
            ..config
        },
        SEED,
    );
    executor.load(unsigned(&schedule), false);
    assert_eq!(
        tick(&mut executor, -10).0,
        0,
        "the schedule's own fallback (Idle)"
    );
    let (w, mode, _) = tick(&mut executor, delay - 1);
    assert_eq!((w, mode), (0, Mode::StartDelay { key: k }));
    let (w, mode, events) = tick(&mut executor, delay);
    assert_eq!(
        (w, mode),
        (
            -2_000,
            Mode::Schedule {
                key: k,
                period_idx: 0
            }
        )
    );
    assert!(events.contains(&ExecEvent::Started(k)));
    // Period offsets count from the randomised start.
    assert_eq!(tick(&mut executor, delay + 899).0, -2_000);
    assert_eq!(tick(&mut executor, delay + 900).0, 3_000);
}

#[test]
fn emergency_stop_wins_at_once_and_fails_the_schedule_once() {
    let schedule = schedule(1, 1, 0, 3_600, &[(0, 3_000, 600)]);
    let (mut executor, k) = loaded(&schedule);
    tick(&mut executor, 0);
    assert_eq!(tick(&mut executor, 300).0, 1_500);
    let mut events = Vec::new();
    let setpoint = executor.tick(at(301), mono(301), true, &mut events);
    assert_eq!((setpoint.target_w, setpoint.mode), (0, Mode::EmergencyStop));
    assert!(events.contains(&ExecEvent::Failed(k, FailureReason::EmergencyStop)));
    events.clear();
    executor.tick(at(302), mono(302), true, &mut events);
    assert!(events.is_empty(), "no second Failed: {events:?}");
    let (w, mode, events) = tick(&mut executor, 303);
    assert_eq!(
        (w, mode),
        (0, Mode::Fallback),
        "released: fallback, the schedule failed"
    );
    assert!(events.contains(&ExecEvent::EmergencyStopReleased));
}

#[test]
fn schedule_whose_window_passed_unstarted_is_missed_not_completed() {
    let (mut executor, k) = loaded(&hour_schedule(1, 1));
    let (_, _, events) = tick(&mut executor, 4_000);
    assert!(events.contains(&ExecEvent::Missed(k)));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ExecEvent::Started(_) | ExecEvent::Completed(_)))
    );
}

#[test]
fn restored_started_schedule_resumes_at_the_current_period_without_a_second_started() {
    let schedule = hour_schedule(1, 1);
    let mut executor = Executor::new(executor_config(), SEED);
    let k = ScheduleKey {
        schedule_id: schedule.schedule_id,
        version: 1,
    };
    executor.load(unsigned(&schedule), true);
    let (w, mode, events) = tick(&mut executor, 1_850);
    assert_eq!(
        (w, mode),
        (
            0,
            Mode::Schedule {
                key: k,
                period_idx: 2
            }
        )
    );
    assert!(!events.iter().any(|e| matches!(e, ExecEvent::Started(_))));
    assert_eq!(tick(&mut executor, 2_700).0, 1_000);
}

fn arb_schedule() -> impl Strategy<Value = Schedule> {
    (
        proptest::collection::vec((1u32..1_000, -20_000i64..20_000, 0u32..900), 1..12),
        0u32..600,
        prop_oneof![
            Just(Fallback::Idle),
            (-20_000i64..20_000).prop_map(|target_w| Fallback::Hold { target_w }),
        ],
    )
        .prop_map(|(steps, randomize_start_s, fallback)| {
            let mut offset_s = 0;
            let mut periods = Vec::new();
            for (i, (gap_s, target_w, ramp_s)) in steps.into_iter().enumerate() {
                if i > 0 {
                    offset_s += gap_s;
                }
                periods.push(SchedulePeriod {
                    offset_s,
                    target_w,
                    ramp_s,
                });
            }
            let len_s = i64::from(offset_s) + 1_000;
            let mut schedule = schedule(9, 1, 0, len_s, &[]);
            schedule.periods = periods.into();
            schedule.randomize_start_s = randomize_start_s;
            schedule.fallback = fallback;
            schedule
        })
}

proptest! {
    #[test]
    fn executor_never_commands_beyond_the_device_limits(
        schedule in arb_schedule(),
        max_charge_w in 0i64..10_000,
        max_discharge_w in 0i64..10_000,
        steps in proptest::collection::vec((0i64..400, any::<bool>(), -3i64..3), 1..80),
        seed in any::<u64>(),
    ) {
        let limits = DeviceLimits { max_charge_w, max_discharge_w };
        let mut executor = Executor::new(ExecutorConfig {
            limits,
            default_fallback: Fallback::Hold { target_w: 15_000 },
            fallback_ramp_s: 30,
            clock_step_tolerance_s: 5,
        }, seed);
        executor.load(unsigned(&schedule), false);
        let mut s = -100;
        let mut events = Vec::new();
        for (advance_s, estop, wall_jitter_s) in steps {
            s += advance_s;
            let wall = UtcNanos(at(s).0 + wall_jitter_s * NS);
            let setpoint = executor.tick(wall, MonoNanos(mono(s).0), estop, &mut events);
            let target_w = setpoint.target_w;
            prop_assert!(limits.allows(target_w), "{} outside {:?}", target_w, limits);
            if estop {
                prop_assert_eq!(setpoint.target_w, 0);
            }
        }
        let started = events.iter().filter(|e| matches!(e, ExecEvent::Started(_))).count();
        let ended = events
            .iter()
            .filter(|e| {
                matches!(e, ExecEvent::Completed(_) | ExecEvent::Failed(..) | ExecEvent::Missed(_))
            })
            .count();
        prop_assert!(started <= 1 && ended <= 1);
    }
}
