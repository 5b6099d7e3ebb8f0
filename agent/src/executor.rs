//! The interval executor: which setpoint the battery gets now.
//!
//! [`Executor::tick`] takes the wall-clock time (UTC, for the schedule's calendar), the
//! monotonic time (for measuring intervals) and the emergency-stop input, and returns
//! the [`Setpoint`] to command plus the [`ExecEvent`]s the caller persists and acks.
//! It does no I/O, reads no clock and draws no randomness (the randomised start comes
//! from a seed), so the simulator runs this exact code with virtual time.
//!
//! # Time
//! Schedule time is `anchor_wall + (now_mono - anchor_mono)`: period boundaries advance
//! on the monotonic clock, so an NTP slew or a small wall-clock jump does not make the
//! setpoint flap. When the wall clock departs from schedule time by more than
//! [`ExecutorConfig::clock_step_tolerance_s`], the executor re-anchors on the wall clock
//! and reports [`ExecEvent::ClockStepped`] (the runtime logs a warning).
//!
//! # Control
//! - Emergency stop wins over everything: setpoint 0 at once (no ramp), and the live
//!   schedule fails with `Failed(EmergencyStop)`.
//! - A live schedule covering now (after its randomised start, before `valid_until`)
//!   gives the target of the period in force. `Started` is reported when its first
//!   period begins, `Completed` when `valid_until` passes after it started (`Missed`,
//!   without ack, if it never started — the protocol has no status for that).
//! - Between `valid_from` and the randomised start the last commanded setpoint is held
//!   (so the fleet does not step together, the purpose of `randomize_start_s`).
//! - Otherwise the fallback: the latest accepted schedule's, or the configured default
//!   (after a reboot or a long partition the restored schedule's fallback applies).
//! - Whenever the segment (period, fallback slot, ...) or its target changes, the
//!   executor ramps linearly from the setpoint commanded at that moment to the new
//!   target over the period's `ramp_s` (fallback: [`ExecutorConfig::fallback_ramp_s`]),
//!   measured on the monotonic clock. After a reboot the device is idle, so it ramps
//!   from 0.
//!
//! # Invariants
//! - Every returned setpoint is within [`ExecutorConfig::limits`] (proptest in
//!   `tests/executor.rs`), whatever the schedule, ramp or fallback says.
//! - `Started`, `Completed`, `Failed` and `Missed` are reported at most once per loaded
//!   schedule, and at most one of the last three.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use voltex_dispatch::message::FailureReason;
use voltex_dispatch::{Fallback, SignedSchedule};
use voltex_market::UtcNanos;

use crate::acceptance::{DeviceLimits, NANOS_PER_S, ScheduleKey};

/// Monotonic time in nanoseconds from an arbitrary origin (never goes back).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct MonoNanos(pub i64);

/// Fixed parameters of an executor, alike for every device of one kind (the
/// per-device seed is an argument of [`Executor::new`]), so devices may share one.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutorConfig {
    /// Power limits every setpoint is clamped into.
    pub limits: DeviceLimits,
    /// Fallback before any schedule was accepted.
    pub default_fallback: Fallback,
    /// Ramp into and between fallback targets, in seconds.
    pub fallback_ramp_s: u32,
    /// Largest tolerated difference between wall clock and schedule time, in seconds.
    pub clock_step_tolerance_s: u32,
}

/// Why the executor commands what it commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// Executing a period of a schedule.
    Schedule {
        /// The schedule.
        key: ScheduleKey,
        /// The period in force.
        period_idx: usize,
    },
    /// Waiting out a schedule's randomised start, holding the last setpoint.
    StartDelay {
        /// The schedule about to start.
        key: ScheduleKey,
    },
    /// No schedule covers now: following the fallback.
    Fallback,
    /// The emergency stop is engaged: idle.
    EmergencyStop,
}

/// The setpoint to command and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setpoint {
    /// Power in W (positive discharge), within the device limits.
    pub target_w: i64,
    /// Why.
    pub mode: Mode,
}

/// Something the caller must persist, ack or log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecEvent {
    /// The schedule's first period began.
    Started(ScheduleKey),
    /// The schedule's window ended after it started.
    Completed(ScheduleKey),
    /// The schedule was stopped before its end.
    Failed(ScheduleKey, FailureReason),
    /// The schedule's window ended before it ever started (e.g. agent down throughout).
    Missed(ScheduleKey),
    /// A period began.
    PeriodEntered {
        /// The schedule.
        key: ScheduleKey,
        /// The period.
        period_idx: usize,
        /// Its target, in W.
        target_w: i64,
    },
    /// The fallback took over.
    FallbackEntered {
        /// The fallback target now, in W.
        target_w: i64,
    },
    /// The wall clock moved away from the monotonic schedule time; re-anchored.
    ClockStepped {
        /// Wall clock minus schedule time before re-anchoring, in ns.
        wall_minus_schedule_ns: i64,
    },
    /// The emergency stop was engaged.
    EmergencyStopEngaged,
    /// The emergency stop was released.
    EmergencyStopReleased,
}

#[derive(Clone, Debug)]
struct Plan {
    /// Shared with the agent's stored record (the executor needs only the schedule).
    signed: Arc<SignedSchedule>,
    start: UtcNanos,
    started: bool,
    finished: bool,
}

impl Plan {
    /// Derived, not stored: one key less in each of a simulated fleet's executors.
    fn key(&self) -> ScheduleKey {
        ScheduleKey::of(&self.signed)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Segment {
    Boot,
    Period(ScheduleKey, usize),
    Delay(ScheduleKey),
    Fallback,
    Estop,
}

#[derive(Clone, Copy, Debug)]
struct Ramp {
    from_w: i64,
    to_w: i64,
    start: MonoNanos,
    duration_ns: i64,
}

impl Ramp {
    fn value_at(&self, now: MonoNanos) -> i64 {
        let elapsed = now.0.saturating_sub(self.start.0);
        if self.duration_ns <= 0 || elapsed >= self.duration_ns {
            return self.to_w;
        }
        let elapsed = i128::from(elapsed.max(0));
        let delta = i128::from(self.to_w) - i128::from(self.from_w);
        let value = i128::from(self.from_w) + delta * elapsed / i128::from(self.duration_ns);
        // Between from_w and to_w, both i64.
        i64::try_from(value).unwrap_or(self.to_w)
    }
}

/// The randomised start delay of a schedule, in `0..=randomize_start_s` seconds:
/// a deterministic function of the device seed and the schedule key, so it survives a
/// restart and differs between devices.
pub fn start_delay_s(seed: u64, key: ScheduleKey, randomize_start_s: u32) -> u32 {
    if randomize_start_s == 0 {
        return 0;
    }
    let id = key.schedule_id.0;
    let mixed =
        splitmix64(seed ^ splitmix64((id as u64) ^ splitmix64((id >> 64) as u64 ^ key.version)));
    // Fits: the result is at most randomize_start_s.
    (mixed % (u64::from(randomize_start_s) + 1)) as u32
}

/// SplitMix64 finaliser: a cheap, well-mixed 64-bit hash.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The interval executor of one device. See the module doc.
#[derive(Clone, Debug)]
pub struct Executor {
    config: Arc<ExecutorConfig>,
    /// Seed of the randomised start (one per device).
    seed: u64,
    plan: Option<Plan>,
    fallback: Fallback,
    anchor: Option<(UtcNanos, MonoNanos)>,
    segment: Segment,
    segment_target_w: i64,
    ramp: Ramp,
    commanded_w: i64,
    estop: bool,
}

impl Executor {
    /// An executor with no schedule, commanding 0 W until its first tick. `seed` (one
    /// per device) draws its randomised starts ([`start_delay_s`]); `config` may be
    /// shared by many executors.
    pub fn new(config: impl Into<Arc<ExecutorConfig>>, seed: u64) -> Executor {
        let config: Arc<ExecutorConfig> = config.into();
        let fallback = config.default_fallback.clone();
        Executor {
            config,
            seed,
            plan: None,
            fallback,
            anchor: None,
            segment: Segment::Boot,
            segment_target_w: 0,
            ramp: Ramp {
                from_w: 0,
                to_w: 0,
                start: MonoNanos(0),
                duration_ns: 0,
            },
            commanded_w: 0,
            estop: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ExecutorConfig {
        &self.config
    }

    /// The seed of the randomised start.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Makes `signed` (accepted, not finished) the one to execute, replacing any other.
    /// `started` says whether `Started` was already reported (after a restart), so it is
    /// not reported again. Its fallback becomes the fallback from now on.
    pub fn load(&mut self, signed: Arc<SignedSchedule>, started: bool) {
        let schedule = &signed.schedule;
        let key = ScheduleKey::of(&signed);
        let delay_s = start_delay_s(self.seed, key, schedule.randomize_start_s);
        self.fallback = schedule.fallback.clone();
        self.plan = Some(Plan {
            start: schedule.valid_from.plus_seconds(i64::from(delay_s)),
            signed,
            started,
            finished: false,
        });
    }

    /// Sets the fallback without loading a schedule (after a restart whose newest
    /// accepted schedule has already finished).
    pub fn set_fallback(&mut self, fallback: Fallback) {
        self.fallback = fallback;
    }

    /// The loaded schedule, if it is still live.
    pub fn live(&self) -> Option<ScheduleKey> {
        self.plan.as_ref().filter(|p| !p.finished).map(|p| p.key())
    }

    /// The setpoint commanded by the last tick.
    pub fn commanded_w(&self) -> i64 {
        self.commanded_w
    }

    /// Stops the live schedule (driver fault, ...): reports `Failed(reason)` into
    /// `events` if there was one.
    pub fn fail(&mut self, reason: FailureReason, events: &mut Vec<ExecEvent>) {
        if let Some(plan) = self.plan.as_mut().filter(|p| !p.finished) {
            plan.finished = true;
            events.push(ExecEvent::Failed(plan.key(), reason));
        }
    }

    /// Schedule time at `now_mono`, re-anchoring on `now_wall` when they disagree.
    fn schedule_time(
        &mut self,
        now_wall: UtcNanos,
        now_mono: MonoNanos,
        events: &mut Vec<ExecEvent>,
    ) -> UtcNanos {
        let tolerance_ns = i64::from(self.config.clock_step_tolerance_s) * NANOS_PER_S;
        if let Some((wall, mono)) = self.anchor {
            let derived = UtcNanos(wall.0.saturating_add(now_mono.0.saturating_sub(mono.0)));
            let difference = now_wall.0.saturating_sub(derived.0);
            if difference.saturating_abs() <= tolerance_ns {
                return derived;
            }
            events.push(ExecEvent::ClockStepped {
                wall_minus_schedule_ns: difference,
            });
        }
        self.anchor = Some((now_wall, now_mono));
        now_wall
    }

    /// The setpoint at this moment; appends what happened to `events`. Call it at least
    /// at every boundary [`Executor::next_boundary`] names, and often enough for ramps
    /// and the emergency stop (the runtime ticks every second).
    pub fn tick(
        &mut self,
        now_wall: UtcNanos,
        now_mono: MonoNanos,
        emergency_stop: bool,
        events: &mut Vec<ExecEvent>,
    ) -> Setpoint {
        let now = self.schedule_time(now_wall, now_mono, events);
        if emergency_stop {
            if !self.estop {
                self.estop = true;
                events.push(ExecEvent::EmergencyStopEngaged);
            }
            self.fail(FailureReason::EmergencyStop, events);
            self.segment = Segment::Estop;
            self.segment_target_w = 0;
            self.ramp = Ramp {
                from_w: 0,
                to_w: 0,
                start: now_mono,
                duration_ns: 0,
            };
            self.commanded_w = 0;
            return Setpoint {
                target_w: 0,
                mode: Mode::EmergencyStop,
            };
        }
        if self.estop {
            self.estop = false;
            events.push(ExecEvent::EmergencyStopReleased);
        }

        let (segment, target_w, ramp_s) = self.segment_at(now, events);
        let target_w = self.config.limits.clamp(target_w);
        if segment != self.segment || target_w != self.segment_target_w {
            if segment != self.segment {
                match segment {
                    Segment::Period(key, period_idx) => events.push(ExecEvent::PeriodEntered {
                        key,
                        period_idx,
                        target_w,
                    }),
                    Segment::Fallback => events.push(ExecEvent::FallbackEntered { target_w }),
                    Segment::Boot | Segment::Delay(_) | Segment::Estop => {}
                }
            }
            self.ramp = Ramp {
                from_w: self.commanded_w,
                to_w: target_w,
                start: now_mono,
                duration_ns: i64::from(ramp_s) * NANOS_PER_S,
            };
            self.segment = segment;
            self.segment_target_w = target_w;
        }
        self.commanded_w = self.config.limits.clamp(self.ramp.value_at(now_mono));
        let mode = match segment {
            Segment::Period(key, period_idx) => Mode::Schedule { key, period_idx },
            Segment::Delay(key) => Mode::StartDelay { key },
            Segment::Fallback | Segment::Boot => Mode::Fallback,
            Segment::Estop => Mode::EmergencyStop,
        };
        Setpoint {
            target_w: self.commanded_w,
            mode,
        }
    }

    /// Segment, target and ramp at schedule time `now`; advances the plan's lifecycle.
    fn segment_at(&mut self, now: UtcNanos, events: &mut Vec<ExecEvent>) -> (Segment, i64, u32) {
        if let Some(plan) = self.plan.as_mut().filter(|p| !p.finished) {
            let schedule = &plan.signed.schedule;
            if now >= schedule.valid_until {
                plan.finished = true;
                events.push(if plan.started {
                    ExecEvent::Completed(plan.key())
                } else {
                    ExecEvent::Missed(plan.key())
                });
            } else if now >= plan.start {
                if !plan.started {
                    plan.started = true;
                    events.push(ExecEvent::Started(plan.key()));
                }
                let elapsed_s = now.0.saturating_sub(plan.start.0) / NANOS_PER_S;
                if let Some(idx) = schedule.period_index_at(elapsed_s)
                    && let Some(period) = schedule.periods.get(idx)
                {
                    return (
                        Segment::Period(plan.key(), idx),
                        period.target_w,
                        period.ramp_s,
                    );
                }
            } else if now >= schedule.valid_from {
                return (Segment::Delay(plan.key()), self.commanded_w, 0);
            }
        }
        let target_w = self.fallback.target_w_at(now);
        (Segment::Fallback, target_w, self.config.fallback_ramp_s)
    }

    /// The next moment (monotonic) at which the setpoint's segment changes by the
    /// calendar: randomised start, period boundary, end of validity, fallback slot.
    /// `None` if nothing is scheduled; ramps and the emergency stop need regular ticks
    /// on top of this.
    pub fn next_boundary(&self, now_wall: UtcNanos, now_mono: MonoNanos) -> Option<MonoNanos> {
        let now = match self.anchor {
            Some((wall, mono)) => UtcNanos(wall.0.saturating_add(now_mono.0 - mono.0)),
            None => now_wall,
        };
        let mut next: Option<i64> = None;
        let mut consider = |at: i64| {
            if at > now.0 {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        };
        if let Some(plan) = self.plan.as_ref().filter(|p| !p.finished) {
            let schedule = &plan.signed.schedule;
            consider(schedule.valid_from.0);
            consider(plan.start.0);
            consider(schedule.valid_until.0);
            let elapsed_s = now.0.saturating_sub(plan.start.0).div_euclid(NANOS_PER_S);
            let idx = schedule
                .periods
                .partition_point(|p| i64::from(p.offset_s) <= elapsed_s);
            if let Some(period) = schedule.periods.get(idx) {
                consider(plan.start.plus_seconds(i64::from(period.offset_s)).0);
            }
        }
        if let Fallback::DailyProfile { slot_s, .. } = &self.fallback {
            let slot_ns = i64::from((*slot_s).max(1)) * NANOS_PER_S;
            consider((now.0.div_euclid(slot_ns) + 1).saturating_mul(slot_ns));
        }
        next.map(|at| MonoNanos(now_mono.0.saturating_add(at - now.0)))
    }
}
