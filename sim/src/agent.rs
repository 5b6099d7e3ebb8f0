//! The device-side decision logic a virtual battery runs: schedule acceptance and the
//! setpoint of the executor, behind the [`DeviceLogic`] seam.
//!
//! The real agent core (`voltex-agent`'s `decide` and `Executor`) is being written in
//! parallel; until it lands, [`ReferenceAgent`] implements the same rules as the
//! design brief states them, so the simulator can be wired to the real core by
//! implementing [`DeviceLogic`] for it without touching the fleet model.
//!
//! A device keeps up to [`SLOTS`] accepted schedules (a day's schedule arrives the day
//! before, while today's still runs). Schedules are identified by a version (the
//! platform's monotonic counter) and carry a validity window `[valid_from, valid_until)`
//! of whole intervals.
//!
//! # Rules ([`ReferenceAgent`])
//! - A schedule whose window has ended on the device's clock is rejected (`Expired`).
//! - A version already held is a duplicate: acknowledged again, nothing changes.
//! - Otherwise it is accepted into the slot holding the oldest version (or an empty
//!   one); a late-arriving older version is still accepted if its window is open
//!   (windows of different days do not overlap, so nothing it replaces is live).
//! - The setpoint at device time `t` comes from the held schedule whose window contains
//!   `t`, interval `(t − valid_from) / interval`; with none, the fallback (idle, 0 W).

/// Schedules a device holds at once.
pub const SLOTS: usize = 2;

/// What a device holds for one schedule: its version (0 = empty slot).
pub type Slots = [u32; SLOTS];

/// The identity and window of one schedule, as the device sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduleRef {
    /// Monotonic version (>= 1).
    pub version: u32,
    /// Start of the validity window, ns.
    pub valid_from_ns: i64,
    /// End of the validity window (exclusive), ns.
    pub valid_until_ns: i64,
}

/// The device's answer to an incoming schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Stored; the slots to keep.
    Accept(Slots),
    /// Already held: re-acknowledge, keep the slots.
    Duplicate,
    /// The window is over on the device's clock.
    Expired,
}

/// Where the device's setpoint comes from at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Interval `index` of the schedule with `version`.
    Schedule {
        /// The schedule's version.
        version: u32,
        /// Interval index within it.
        index: usize,
    },
    /// No valid schedule: the fallback policy (idle).
    Fallback,
}

/// The agent logic a virtual battery runs (the seam for the real `voltex-agent` core).
pub trait DeviceLogic {
    /// Decides on `incoming` given the held `slots`, at `device_now_ns` on the device's
    /// clock. `window_of` gives the window of a held version.
    fn decide(
        &self,
        slots: &Slots,
        incoming: ScheduleRef,
        device_now_ns: i64,
        window_of: &dyn Fn(u32) -> ScheduleRef,
    ) -> Decision;

    /// Where the setpoint comes from at `device_now_ns`.
    fn source(
        &self,
        slots: &Slots,
        device_now_ns: i64,
        interval_ns: i64,
        window_of: &dyn Fn(u32) -> ScheduleRef,
    ) -> Source;
}

/// The rules in the [module docs](self); stateless, so one instance serves a fleet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReferenceAgent;

impl DeviceLogic for ReferenceAgent {
    fn decide(
        &self,
        slots: &Slots,
        incoming: ScheduleRef,
        device_now_ns: i64,
        _window_of: &dyn Fn(u32) -> ScheduleRef,
    ) -> Decision {
        if slots.contains(&incoming.version) {
            return Decision::Duplicate;
        }
        if incoming.valid_until_ns <= device_now_ns {
            return Decision::Expired;
        }
        let mut next = *slots;
        let oldest = (0..SLOTS).min_by_key(|&i| next[i]).unwrap_or(0);
        next[oldest] = incoming.version;
        Decision::Accept(next)
    }

    fn source(
        &self,
        slots: &Slots,
        device_now_ns: i64,
        interval_ns: i64,
        window_of: &dyn Fn(u32) -> ScheduleRef,
    ) -> Source {
        for &version in slots.iter().filter(|v| **v != 0) {
            let w = window_of(version);
            if (w.valid_from_ns..w.valid_until_ns).contains(&device_now_ns) {
                let index = ((device_now_ns - w.valid_from_ns) / interval_ns) as usize;
                return Source::Schedule { version, index };
            }
        }
        Source::Fallback
    }
}
