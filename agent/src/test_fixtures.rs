//! Fixtures shared by the crate's unit tests (compiled for tests only): an unsigned
//! one-period schedule for device `bat-1`.

use voltex_dispatch::SignedSchedule;
use voltex_dispatch::message::{DeviceId, Fallback, Schedule, ScheduleId, SchedulePeriod};
use voltex_market::UtcNanos;

/// Nanoseconds per second.
pub const NS: i64 = 1_000_000_000;

/// The fixtures' device.
pub fn device() -> DeviceId {
    DeviceId::new("bat-1").expect("valid id")
}

/// Version `version` of schedule 7 for [`device`]: `target_w` from `valid_from` for
/// `len_s` seconds, issued an hour before it starts, fallback idle, no signature.
pub fn one_period(version: u64, valid_from: UtcNanos, len_s: i64, target_w: i64) -> SignedSchedule {
    SignedSchedule {
        schedule: Schedule {
            device: device(),
            schedule_id: ScheduleId(7),
            version,
            issued_at: UtcNanos(valid_from.0 - 3_600 * NS),
            valid_from,
            valid_until: UtcNanos(valid_from.0 + len_s * NS),
            randomize_start_s: 0,
            periods: vec![SchedulePeriod {
                offset_s: 0,
                target_w,
                ramp_s: 0,
            }]
            .into(),
            fallback: Fallback::Idle,
        },
        signature: Vec::new(),
    }
}
