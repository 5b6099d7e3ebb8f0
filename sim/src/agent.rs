//! The virtual batteries' agent: the real `voltex-agent` core, one per device, and the
//! platform-side construction of the schedules it is sent.
//!
//! Every virtual battery runs a [`voltex_agent::core::AgentCore`] over a
//! [`voltex_agent::store::memory::MemoryStore`] (the agent crate's own API boundary for
//! the simulator): schedule acceptance (signature, device, version, expiry, lateness,
//! limits), the interval executor with its fallback, and the outbox of acks drained by
//! platform receipts. Nothing of that logic is re-implemented here; this module only
//! holds the cores, commits their write batches to their stores, and builds
//! configurations and schedules.
//!
//! # What the simulator does differently from the live runtime (and why)
//! - **Execution log lines are not stored.** Each [`WriteBatch`]'s `exec_log` is
//!   cleared before [`MemoryStore::apply`]: the log is a debugging aid the core never
//!   reads back, and `MemoryStore` keeps up to 1,024 lines per device (about 100 KB), far
//!   more than a fleet of thousands can afford. Records, outbox and sequence numbers —
//!   everything [`AgentCore::restore`] reads — are stored exactly.
//! - **Ticks at boundaries only.** The runtime ticks every second; the simulator ticks
//!   a core at the boundaries [`voltex_agent::executor::Executor::next_boundary`] names
//!   (plus every segment of a device under a fault, and right after a schedule or a
//!   reboot), which the executor documents as sufficient when no ramp and no emergency
//!   stop are in play (the platform sends `ramp_s = 0`, the simulator never engages the
//!   stop). Between boundaries the commanded setpoint is read back unchanged.
//! - **Signatures on a sample.** Devices `0, n, 2n, ...` (`n` =
//!   `network.verify_signatures_one_in`, default 1) get ed25519-signed schedules and
//!   verify them; the others get unsigned ones and run with
//!   [`SignatureCheck::TrustedSimulation`] ([`GroupProfiles::of_device`]). Every
//!   other acceptance check runs for every device.
//! - **One profile per group.** What is alike for every device of a battery group
//!   (limits, verifier, tolerances, executor settings, bounds) is one shared
//!   [`AgentProfile`] per group and signature check ([`GroupProfiles`]); a core holds
//!   only its device id, its seed and a pointer. Thousands of cores, one copy.
//! - **Schedules are shared, not copied.** A device's schedule is one
//!   `Arc<SignedSchedule>`, held by the platform until acked, the core's record, the
//!   executor and the store alike (the agent's own types share it the same way).
//! - **No telemetry samples** are queued: the platform reads delivered energy and the SoC
//!   sensors from the world directly, so the outbox carries acks only.
//!
//! # Invariants
//! - A device's store holds exactly what its core committed (minus log lines), so a
//!   reboot (`AgentCore::restore(config, store.state())`) sees every accepted schedule.
//! - [`schedule_periods`] describes exactly the same setpoint per interval as its input.

use std::sync::Arc;

use voltex_agent::acceptance::{AcceptanceConfig, AcceptancePolicy, DeviceLimits, SignatureCheck};
use voltex_agent::core::{AgentCore, AgentProfile, CoreConfig};
use voltex_agent::executor::ExecutorConfig;
use voltex_agent::outbox::OutboxConfig;
use voltex_agent::store::WriteBatch;
use voltex_agent::store::memory::MemoryStore;
use voltex_dispatch::message::{DeviceId, Fallback, SchedulePeriod};
use voltex_dispatch::{ScheduleVerifier, SignedSchedule};
use voltex_market::battery::BatterySpec;

/// Schedule records a core keeps beyond the live one (terminal records beyond this are
/// pruned by the core, oldest first).
pub const RECORDS_MAX: usize = 1;

/// Acks a device keeps waiting for a receipt (the agent's default bound is sized for a
/// week of telemetry; the simulator queues acks only, a handful per day).
pub const OUTBOX_LEN_MAX: usize = 256;

/// The device id of device `index`: `d<index>` (always a valid [`DeviceId`]).
pub fn device_id(index: usize) -> DeviceId {
    DeviceId::new(format!("d{index}")).expect("d<digits> is a valid device id")
}

/// Whether device `index` gets signed schedules and verifies them: every
/// `verify_one_in`-th device, starting with device 0.
pub fn verifies_signatures(index: usize, verify_one_in: u32) -> bool {
    index.is_multiple_of(verify_one_in.max(1) as usize)
}

/// The agent profiles of one battery group, shared by all its cores: one for the
/// devices that verify signatures, one for the rest (see [`verifies_signatures`]).
#[derive(Clone, Debug)]
pub struct GroupProfiles {
    verifying: Arc<AgentProfile>,
    trusted: Arc<AgentProfile>,
}

impl GroupProfiles {
    /// The profiles of a group with `spec`, checking signatures with `verifier`.
    pub fn new(spec: &BatterySpec, verifier: &ScheduleVerifier) -> GroupProfiles {
        let limits = DeviceLimits {
            max_charge_w: spec.max_charge_w,
            max_discharge_w: spec.max_discharge_w,
        };
        let executor = Arc::new(ExecutorConfig {
            limits,
            default_fallback: Fallback::Idle,
            fallback_ramp_s: 0,
            clock_step_tolerance_s: 5,
        });
        let profile = |signature| {
            Arc::new(AgentProfile {
                acceptance: AcceptanceConfig {
                    limits,
                    signature,
                    policy: AcceptancePolicy::default(),
                },
                executor: Arc::clone(&executor),
                outbox: OutboxConfig {
                    len_max: OUTBOX_LEN_MAX,
                },
                records_max: RECORDS_MAX,
            })
        };
        GroupProfiles {
            verifying: profile(SignatureCheck::Verify(verifier.clone())),
            trusted: profile(SignatureCheck::TrustedSimulation),
        }
    }

    /// The profile of device `index`: verifying for every `verify_one_in`-th device
    /// ([`verifies_signatures`]), trusted for the others.
    pub fn of_device(&self, index: usize, verify_one_in: u32) -> &Arc<AgentProfile> {
        if verifies_signatures(index, verify_one_in) {
            &self.verifying
        } else {
            &self.trusted
        }
    }
}

/// The agent configuration of device `index` (id `device`, from [`device_id`]) with
/// its group's `profile` ([`GroupProfiles::of_device`]).
pub fn core_config(index: usize, device: DeviceId, profile: &Arc<AgentProfile>) -> CoreConfig {
    CoreConfig {
        device,
        seed: index as u64,
        profile: Arc::clone(profile),
    }
}

/// One virtual battery's agent: its core (lost while rebooting) and its durable store.
/// The core is held inline, not boxed: one allocation less per device, and the fleet's
/// cores lie in one buffer (a rebooting device keeps the slot, empty).
#[derive(Debug)]
pub struct VirtualAgent {
    core: Option<AgentCore>,
    store: MemoryStore,
}

impl VirtualAgent {
    /// A first-boot agent (empty store).
    pub fn boot(config: CoreConfig) -> VirtualAgent {
        let store = MemoryStore::new();
        let core = AgentCore::restore(config, store.state());
        VirtualAgent {
            core: Some(core),
            store,
        }
    }

    /// The running core, `None` while the device reboots.
    pub fn core(&self) -> Option<&AgentCore> {
        self.core.as_ref()
    }

    /// The running core, `None` while the device reboots.
    pub fn core_mut(&mut self) -> Option<&mut AgentCore> {
        self.core.as_mut()
    }

    /// Commits a batch to the store (without its log lines; see the module doc).
    pub fn commit(&mut self, mut batch: WriteBatch) {
        batch.exec_log.clear();
        if !batch.is_empty() {
            self.store.apply(&batch);
        }
    }

    /// Power loss: the core and everything only in RAM are gone; the store survives.
    pub fn lose_ram(&mut self) {
        self.core = None;
    }

    /// Boot after a power loss: the core is restored from the store.
    pub fn restore(&mut self, config: CoreConfig) {
        self.core = Some(AgentCore::restore(config, self.store.state()));
    }

    /// Whether the store holds a record of `signed` (tests).
    pub fn stored(&self, signed: &SignedSchedule) -> bool {
        self.store
            .state()
            .records
            .iter()
            .any(|r| *r.signed == *signed)
    }
}

/// The schedule periods for one setpoint per interval (`targets_w`, W), starting at
/// offset 0: a period only where the setpoint changes, plus one at the last interval
/// (so the agent's lateness check — "last period started more than a minute ago" —
/// means the same as for one period per interval). `ramp_s` is 0 (steps).
pub fn schedule_periods(targets_w: &[i64], interval_s: u32) -> Vec<SchedulePeriod> {
    let mut periods: Vec<SchedulePeriod> = Vec::new();
    let last = targets_w.len().saturating_sub(1);
    for (k, &target_w) in targets_w.iter().enumerate() {
        let changed = periods.last().is_none_or(|p| p.target_w != target_w);
        if changed || k == last {
            periods.push(SchedulePeriod {
                offset_s: k as u32 * interval_s,
                target_w,
                ramp_s: 0,
            });
        }
    }
    periods
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(periods: &[SchedulePeriod], n: usize, interval_s: u32) -> Vec<i64> {
        (0..n)
            .map(|k| {
                let t = k as u32 * interval_s;
                periods
                    .iter()
                    .rev()
                    .find(|p| p.offset_s <= t)
                    .map_or(0, |p| p.target_w)
            })
            .collect()
    }

    #[test]
    fn compacted_periods_give_the_same_setpoint_every_interval() {
        let targets = [0, 0, -5, -5, -5, 3, 0, 0, 0];
        let periods = schedule_periods(&targets, 900);
        assert_eq!(expand(&periods, targets.len(), 900), targets);
        assert_eq!(periods.first().map(|p| p.offset_s), Some(0));
        assert_eq!(periods.last().map(|p| p.offset_s), Some(8 * 900));
        assert_eq!(
            periods.len(),
            5,
            "changes at 0, 2, 5, 6, plus the last interval"
        );
    }

    #[test]
    fn a_single_interval_gives_one_period() {
        assert_eq!(schedule_periods(&[7], 60).len(), 1);
    }
}
