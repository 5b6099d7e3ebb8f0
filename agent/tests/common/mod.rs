//! Shared fixtures of the agent tests: a platform signer, a device, a core config and
//! schedule builders on a fixed time origin.
#![allow(dead_code)]

pub mod live;

use std::sync::Arc;

use voltex_agent::acceptance::{
    AcceptanceConfig, AcceptancePolicy, DeviceLimits, ScheduleKey, SignatureCheck,
};
use voltex_agent::core::{AgentProfile, CoreConfig};
use voltex_agent::executor::{ExecutorConfig, MonoNanos};
use voltex_agent::outbox::OutboxConfig;
use voltex_dispatch::message::{DeviceId, Fallback, Schedule, ScheduleId, SchedulePeriod};
use voltex_dispatch::{ScheduleSigner, SignedSchedule};
use voltex_market::UtcNanos;

/// 2026-01-01T00:00:00Z in seconds.
pub const T0_S: i64 = 1_767_225_600;
pub const NS: i64 = 1_000_000_000;

pub fn at(seconds: i64) -> UtcNanos {
    UtcNanos((T0_S + seconds) * NS)
}

/// Monotonic time on a clock started 1000 s before T0 (so wall and mono differ).
pub fn mono(seconds: i64) -> MonoNanos {
    MonoNanos((1_000 + seconds) * NS)
}

pub fn signer() -> ScheduleSigner {
    ScheduleSigner::from_seed(&[7; 32])
}

pub fn device() -> DeviceId {
    DeviceId::new("bat-0001").expect("valid id")
}

pub fn limits() -> DeviceLimits {
    DeviceLimits {
        max_charge_w: 5_000,
        max_discharge_w: 4_000,
    }
}

pub fn core_config() -> CoreConfig {
    CoreConfig {
        device: device(),
        seed: SEED,
        profile: Arc::new(profile()),
    }
}

/// The seed of the test device's randomised starts.
pub const SEED: u64 = 42;

pub fn profile() -> AgentProfile {
    AgentProfile {
        acceptance: AcceptanceConfig {
            limits: limits(),
            signature: SignatureCheck::Verify(signer().verifier()),
            policy: AcceptancePolicy {
                late_grace_s: 60,
                clock_skew_tolerance_s: 5,
            },
        },
        executor: Arc::new(executor_config()),
        outbox: OutboxConfig::default(),
        records_max: 16,
    }
}

pub fn executor_config() -> ExecutorConfig {
    ExecutorConfig {
        limits: limits(),
        default_fallback: Fallback::Idle,
        fallback_ramp_s: 0,
        clock_step_tolerance_s: 5,
    }
}

/// A schedule valid from `from_s` for `len_s` seconds with `(offset_s, target_w, ramp_s)`
/// periods, fallback Idle, no randomised start.
pub fn schedule(
    id: u128,
    version: u64,
    from_s: i64,
    len_s: i64,
    periods: &[(u32, i64, u32)],
) -> Schedule {
    Schedule {
        device: device(),
        schedule_id: ScheduleId(id),
        version,
        issued_at: at(from_s - 600),
        valid_from: at(from_s),
        valid_until: at(from_s + len_s),
        randomize_start_s: 0,
        periods: periods
            .iter()
            .map(|&(offset_s, target_w, ramp_s)| SchedulePeriod {
                offset_s,
                target_w,
                ramp_s,
            })
            .collect(),
        fallback: Fallback::Idle,
    }
}

/// One hour from T0 in four quarter-hour periods: -2000, 3000, 0, 1000 W.
pub fn hour_schedule(id: u128, version: u64) -> Schedule {
    schedule(
        id,
        version,
        0,
        3_600,
        &[
            (0, -2_000, 0),
            (900, 3_000, 0),
            (1_800, 0, 0),
            (2_700, 1_000, 0),
        ],
    )
}

pub fn sign(schedule: Schedule) -> SignedSchedule {
    signer().sign(schedule).expect("signable")
}

pub fn key(id: u128, version: u64) -> ScheduleKey {
    ScheduleKey {
        schedule_id: ScheduleId(id),
        version,
    }
}
