//! Schedule acceptance: the pure decision whether a received schedule replaces the one
//! the agent holds.
//!
//! [`decide`] takes the newest accepted schedule (if any), the received one, the time on
//! the agent's clock and the [`AcceptanceConfig`], and returns a [`Decision`]: accept
//! (possibly superseding the held schedule), reject with a [`ScheduleRejection`], or
//! "duplicate" (the same schedule again). It does no I/O, reads no clock and allocates
//! nothing, so the simulator runs exactly this code for every virtual battery.
//!
//! Checks, in order (the first that fails decides):
//! 1. `Malformed`: [`voltex_dispatch::Schedule::validate`] fails (the codec already validates frames; the
//!    check is repeated because the simulator and tests hand schedules in directly).
//! 2. `InvalidSignature`: the platform's ed25519 signature does not verify (skipped
//!    only under [`SignatureCheck::TrustedSimulation`], which no configuration file can
//!    select: see there).
//! 3. `WrongDevice`: the schedule names another device.
//! 4. Version against the held (newest accepted) schedule: the identical schedule again
//!    is a [`Verdict::Duplicate`] (no new state, no new ack); a lower version, or the
//!    same version with different content, is `OlderVersion` ("not newer").
//! 5. `Expired`: `now >= valid_until`.
//! 6. `Late`: the last period started more than [`AcceptancePolicy::late_grace_s`] ago.
//! 7. `ExceedsDeviceLimits`: a period's or the fallback's target is outside
//!    [`DeviceLimits`].
//!
//! Clock skew: if `issued_at` is more than [`AcceptancePolicy::clock_skew_tolerance_s`]
//! ahead of `now`, the agent's clock is probably behind; the decision is unchanged but
//! [`Decision::clock_skew_s`] carries the difference so the caller can warn and set the
//! `CLOCK_SKEW` health flag.
//!
//! # Invariants
//! - An accepted schedule has a valid signature (under [`SignatureCheck::Verify`], the
//!   only check a real agent can run), names this device, is strictly newer than the
//!   held one, has not ended, and every target is within the device limits.
//! - A superseded ack is produced only for a held schedule that is still live.

use serde::{Deserialize, Serialize};
use voltex_dispatch::message::{AckStatus, DeviceId, ScheduleId, ScheduleRejection};
use voltex_dispatch::{Fallback, ScheduleVerifier, SignatureError, SignedSchedule};
use voltex_market::UtcNanos;

/// Nanoseconds per second.
pub(crate) const NANOS_PER_S: i64 = 1_000_000_000;

/// A schedule's identity and version: what acks and the store key on.
///
/// 24 bytes: [`ScheduleId`] is itself packed to 8-byte alignment, so the key needs no
/// padding. Every executor (twice), ack and outbox entry holds one, and so does each
/// of a simulated fleet's thousands of cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ScheduleKey {
    /// The schedule id.
    pub schedule_id: ScheduleId,
    /// Its version.
    pub version: u64,
}

const _: () = assert!(std::mem::size_of::<ScheduleKey>() == 24);

impl ScheduleKey {
    /// The key of a signed schedule.
    pub fn of(signed: &SignedSchedule) -> ScheduleKey {
        ScheduleKey {
            schedule_id: signed.schedule.schedule_id,
            version: signed.schedule.version,
        }
    }
}

/// The device's power limits, in W (both non-negative).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceLimits {
    /// Largest charging power (drawn from the grid).
    pub max_charge_w: i64,
    /// Largest discharging power (delivered to the grid).
    pub max_discharge_w: i64,
}

impl DeviceLimits {
    /// Whether `target_w` (positive = discharge) is within the limits.
    pub fn allows(&self, target_w: i64) -> bool {
        (-self.max_charge_w..=self.max_discharge_w).contains(&target_w)
    }

    /// `target_w` clamped into the limits.
    pub fn clamp(&self, target_w: i64) -> i64 {
        target_w.clamp(-self.max_charge_w, self.max_discharge_w)
    }

    /// Whether every target of a fallback is within the limits.
    pub fn allows_fallback(&self, fallback: &Fallback) -> bool {
        match fallback {
            Fallback::Idle => true,
            Fallback::Hold { target_w } => self.allows(*target_w),
            Fallback::DailyProfile { targets_w, .. } => {
                targets_w.iter().all(|target_w| self.allows(*target_w))
            }
        }
    }
}

/// Tolerances of the acceptance checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptancePolicy {
    /// How long after its last period started a schedule is still accepted, in seconds.
    pub late_grace_s: u32,
    /// How far `issued_at` may be ahead of the agent's clock before a skew warning.
    pub clock_skew_tolerance_s: u32,
}

impl Default for AcceptancePolicy {
    fn default() -> Self {
        AcceptancePolicy {
            late_grace_s: 60,
            clock_skew_tolerance_s: 5,
        }
    }
}

/// How the agent checks the platform's signature on a schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureCheck {
    /// Verify with the platform's schedule-signing public key. The agent's configuration
    /// file ([`crate::config`]) builds only this variant.
    Verify(ScheduleVerifier),
    /// Accept any signature. Only for a virtual battery in the simulator, whose
    /// schedules come from the simulator's own platform model in the same process and
    /// never cross a network or a broker. A simulator runs a sample of its fleet with
    /// [`SignatureCheck::Verify`] so that the check stays exercised, and the rest this
    /// way: ed25519 signing and verification cost about 70 µs per schedule, minutes
    /// for a year of a 10,000-battery fleet. Constructed in code only; there is no
    /// configuration syntax for it.
    TrustedSimulation,
}

impl SignatureCheck {
    /// `Ok` if the signature holds (or is not checked).
    ///
    /// # Errors
    /// The signature's length is wrong or it does not verify.
    pub fn check(&self, signed: &SignedSchedule) -> Result<(), SignatureError> {
        match self {
            SignatureCheck::Verify(verifier) => verifier.verify(signed),
            SignatureCheck::TrustedSimulation => Ok(()),
        }
    }
}

impl From<ScheduleVerifier> for SignatureCheck {
    fn from(verifier: ScheduleVerifier) -> SignatureCheck {
        SignatureCheck::Verify(verifier)
    }
}

/// Everything [`decide`] checks against besides the device id, fixed for the agent's
/// lifetime and alike for every device of one kind (so devices may share one).
#[derive(Clone, Debug)]
pub struct AcceptanceConfig {
    /// The device's power limits.
    pub limits: DeviceLimits,
    /// How the platform's signature is checked.
    pub signature: SignatureCheck,
    /// Tolerances.
    pub policy: AcceptancePolicy,
}

/// The newest schedule the agent has accepted.
#[derive(Clone, Copy, Debug)]
pub struct Held<'a> {
    /// The schedule.
    pub signed: &'a SignedSchedule,
    /// Whether it is still live (not completed, failed or missed), so that replacing it
    /// deserves a `Superseded` ack.
    pub live: bool,
}

/// An ack before the outbox gives it a sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AckDraft {
    /// The schedule acked.
    pub key: ScheduleKey,
    /// What happened.
    pub status: AckStatus,
    /// When, on the agent's clock.
    pub at: UtcNanos,
}

/// What to do with a received schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Accept it; it replaces `supersedes` (the held schedule) if that is `Some`.
    Accept {
        /// The held schedule it replaces, if any (live or not).
        supersedes: Option<ScheduleKey>,
    },
    /// Refuse it.
    Reject(ScheduleRejection),
    /// The held schedule itself again: no new state, no new ack.
    Duplicate,
}

/// The outcome of [`decide`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Accept, reject or duplicate.
    pub verdict: Verdict,
    /// `Accepted` or `Rejected(..)` for the received schedule (`None` for a duplicate).
    pub ack: Option<AckDraft>,
    /// `Superseded { by_version }` for the held schedule, if it was live.
    pub superseded_ack: Option<AckDraft>,
    /// `issued_at - now` in seconds if beyond the skew tolerance (agent clock behind).
    pub clock_skew_s: Option<i64>,
}

impl Decision {
    /// The acks to queue, in order (received schedule's first).
    pub fn acks(&self) -> impl Iterator<Item = AckDraft> + '_ {
        self.ack.into_iter().chain(self.superseded_ack)
    }
}

/// Decides whether `signed`, received at `now`, is accepted. See the module doc for
/// the order of checks. Pure: no I/O, no clock, no allocation.
pub fn decide(
    held: Option<Held<'_>>,
    signed: &SignedSchedule,
    now: UtcNanos,
    device: &DeviceId,
    config: &AcceptanceConfig,
) -> Decision {
    let key = ScheduleKey::of(signed);
    let schedule = &signed.schedule;
    let skew_ns = schedule.issued_at.0.saturating_sub(now.0);
    let tolerance_ns = i64::from(config.policy.clock_skew_tolerance_s) * NANOS_PER_S;
    let clock_skew_s = (skew_ns > tolerance_ns).then_some(skew_ns / NANOS_PER_S);
    let reject = |reason| Decision {
        verdict: Verdict::Reject(reason),
        ack: Some(AckDraft {
            key,
            status: AckStatus::Rejected(reason),
            at: now,
        }),
        superseded_ack: None,
        clock_skew_s,
    };

    if schedule.validate().is_err() {
        return reject(ScheduleRejection::Malformed);
    }
    if config.signature.check(signed).is_err() {
        return reject(ScheduleRejection::InvalidSignature);
    }
    if schedule.device != *device {
        return reject(ScheduleRejection::WrongDevice);
    }
    if let Some(held) = held {
        let held_version = held.signed.schedule.version;
        if schedule.version == held_version && held.signed == signed {
            return Decision {
                verdict: Verdict::Duplicate,
                ack: None,
                superseded_ack: None,
                clock_skew_s,
            };
        }
        if schedule.version <= held_version {
            return reject(ScheduleRejection::OlderVersion);
        }
    }
    if now >= schedule.valid_until {
        return reject(ScheduleRejection::Expired);
    }
    let last_offset_s = schedule.periods.last().map_or(0, |p| i64::from(p.offset_s));
    let last_start_ns = schedule
        .valid_from
        .0
        .saturating_add(last_offset_s * NANOS_PER_S);
    let grace_ns = i64::from(config.policy.late_grace_s) * NANOS_PER_S;
    if now.0 > last_start_ns.saturating_add(grace_ns) {
        return reject(ScheduleRejection::Late);
    }
    let periods_ok = schedule
        .periods
        .iter()
        .all(|p| config.limits.allows(p.target_w));
    if !periods_ok || !config.limits.allows_fallback(&schedule.fallback) {
        return reject(ScheduleRejection::ExceedsDeviceLimits);
    }

    let supersedes = held.map(|h| ScheduleKey::of(h.signed));
    let superseded_ack = held.filter(|h| h.live).map(|h| AckDraft {
        key: ScheduleKey::of(h.signed),
        status: AckStatus::Superseded {
            by_version: schedule.version,
        },
        at: now,
    });
    Decision {
        verdict: Verdict::Accept { supersedes },
        ack: Some(AckDraft {
            key,
            status: AckStatus::Accepted,
            at: now,
        }),
        superseded_ack,
        clock_skew_s,
    }
}
