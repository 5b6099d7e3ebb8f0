//! The agent's pure core: acceptance, executor and outbox put together as one state
//! machine, with every durable change returned as a [`WriteBatch`].
//!
//! The live runtime ([`crate::runtime`]) and the simulator drive the same
//! [`AgentCore`]; the core does no I/O, reads no clock and draws no unseeded
//! randomness. Each step returns the batch the caller must commit to its
//! [`crate::store::AgentStore`] *before* acting on the step's outcome (confirming the
//! delivery, sending acks, commanding the driver). For a schedule the order is:
//!
//! 1. [`AgentCore::receive`]: store the schedule and its `Received` ack (one batch);
//!    commit; then confirm the delivery to the transport (MQTT PUBACK). A crash before
//!    the commit loses nothing: the broker re-delivers the un-PUBACKed message.
//! 2. [`AgentCore::decide_pending`]: decide every stored, undecided schedule; store
//!    the verdict and its acks (one batch); commit. A crash before this commit is
//!    repaired at restart: [`AgentCore::restore`] keeps undecided records, and the
//!    runtime calls `decide_pending` first thing.
//! 3. Send the outbox; entries leave only on a receipt ([`AgentCore::on_receipt`]).
//!
//! Idempotency: a schedule whose `(schedule_id, version)` is already stored is a
//! duplicate: [`Received::duplicate`] is set, the batch is empty and no ack is queued;
//! the acks queued the first time are still in the outbox (or already receipted) and
//! are re-sent with the rest of the outbox after a reconnect — the same acks with the
//! same sequence numbers, never new ones. One exception keeps a compromised broker from
//! blocking a schedule by publishing a forged copy first: if the stored record under
//! that key was rejected as `InvalidSignature` or `Malformed` and the new copy differs,
//! the new copy replaces it and is decided afresh (new `Received` + verdict acks). A
//! different copy under the key of a *verified* record is ignored as a duplicate (the
//! platform never reuses a version for other content).
//!
//! # Invariants (`check_invariants`)
//! - At most one record per key; at most one record is `Accepted` and live, and it is
//!   the one the executor holds.
//! - Records beyond [`AgentProfile::records_max`] are only terminal ones (pruned oldest
//!   first; undecided and live records are never pruned).

use std::sync::Arc;

use smallvec::SmallVec;
use voltex_dispatch::message::{AckStatus, FailureReason, HealthFlags, ScheduleRejection};
use voltex_dispatch::{DeviceId, Heartbeat, Receipt, SignedSchedule};
use voltex_market::UtcNanos;

use crate::acceptance::{AcceptanceConfig, AckDraft, Held, ScheduleKey, Verdict, decide};
use crate::executor::{ExecEvent, Executor, ExecutorConfig, Mode, MonoNanos, Setpoint};
use crate::outbox::{Outbox, OutboxConfig, OutboxItem, Sample};
use crate::store::{
    ExecLogEntry, ExecLogEvent, PersistedState, RecordStatus, RecordUpdate, ScheduleRecord,
    WriteBatch,
};

/// Everything fixed about one agent: what is its own (device id, seed) and a profile
/// it may share with every agent of the same kind.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// This agent's device id (a schedule for another device is rejected).
    pub device: DeviceId,
    /// Seed of the executor's randomised starts.
    pub seed: u64,
    /// The settings alike for every device of this kind.
    pub profile: Arc<AgentProfile>,
}

/// The settings alike for every agent of one kind. The simulator shares one per
/// battery group among thousands of cores; the agent binary has one of its own.
#[derive(Clone, Debug)]
pub struct AgentProfile {
    /// Acceptance checks (limits, verifier, tolerances).
    pub acceptance: AcceptanceConfig,
    /// Executor (limits, default fallback, ramps), shared with the executor itself.
    pub executor: Arc<ExecutorConfig>,
    /// Outbox bound.
    pub outbox: OutboxConfig,
    /// Most schedule records kept (terminal ones beyond it are pruned).
    pub records_max: usize,
}

/// The result of [`AgentCore::receive`].
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    /// Already stored: nothing new to do but confirm the delivery.
    pub duplicate: bool,
    /// What to commit before confirming the delivery.
    pub batch: WriteBatch,
}

/// The result of [`AgentCore::decide_pending`].
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Decided {
    /// What to commit before sending.
    pub batch: WriteBatch,
    /// Largest clock skew seen (`issued_at - now`, seconds) beyond tolerance, if any.
    pub clock_skew_s: Option<i64>,
    /// Keys accepted by this call.
    pub accepted: Vec<ScheduleKey>,
    /// Keys rejected by this call.
    pub rejected: Vec<ScheduleKey>,
}

/// The result of [`AgentCore::tick`].
#[derive(Clone, Debug, PartialEq)]
pub struct Ticked {
    /// The setpoint to command (after committing `batch`).
    pub setpoint: Setpoint,
    /// What to commit (empty on most ticks).
    pub batch: WriteBatch,
    /// Wall clock minus schedule time if the executor re-anchored, in ns.
    pub clock_stepped_ns: Option<i64>,
}

/// The agent's pure state machine. See the module doc.
#[derive(Clone, Debug)]
pub struct AgentCore {
    config: CoreConfig,
    /// Inline while there is one record, as there is most of the time (a new version
    /// supersedes the live one, which is pruned in the same `decide_pending`): a
    /// simulated fleet holds thousands of cores, and a heap buffer per core would be
    /// re-allocated at every delivery, scattering long-lived blocks among short-lived
    /// ones.
    records: SmallVec<[ScheduleRecord; 1]>,
    next_arrival: u64,
    executor: Executor,
    outbox: Outbox,
    /// The health flags the last tick's mode implies (fallback, emergency stop), added
    /// to every telemetry sample (one word, not the whole `Mode`).
    mode_health: u32,
}

fn status_of_ack(status: AckStatus) -> Option<RecordStatus> {
    match status {
        AckStatus::Accepted => Some(RecordStatus::Accepted),
        AckStatus::Rejected(reason) => Some(RecordStatus::Rejected(reason)),
        AckStatus::Superseded { by_version } => Some(RecordStatus::Superseded { by_version }),
        AckStatus::Completed => Some(RecordStatus::Completed),
        AckStatus::Failed(reason) => Some(RecordStatus::Failed(reason)),
        AckStatus::Received | AckStatus::Started => None,
    }
}

impl AgentCore {
    /// Rebuilds the core from stored state (empty state = first boot). The newest
    /// accepted, live schedule is loaded into the executor (its `started` flag kept, so
    /// `Started` is not acked twice); otherwise the newest accepted schedule's fallback
    /// applies. Undecided records stay undecided: call [`AgentCore::decide_pending`].
    pub fn restore(config: CoreConfig, state: PersistedState) -> AgentCore {
        let mut records: SmallVec<[ScheduleRecord; 1]> = SmallVec::from_vec(state.records);
        records.sort_by_key(|r| r.arrival);
        records.shrink_to_fit();
        let mut executor = Executor::new(Arc::clone(&config.profile.executor), config.seed);
        let newest_accepted = records
            .iter()
            .filter(|r| r.status.was_accepted())
            .max_by_key(|r| r.signed.schedule.version);
        if let Some(record) = newest_accepted {
            if record.status == RecordStatus::Accepted {
                executor.load(Arc::clone(&record.signed), record.started);
            } else {
                executor.set_fallback(record.signed.schedule.fallback.clone());
            }
        }
        let next_arrival = records.last().map_or(0, |r| r.arrival + 1);
        let outbox = Outbox::restore(config.profile.outbox, state.outbox, state.next_seq);
        AgentCore {
            config,
            records,
            next_arrival,
            executor,
            outbox,
            mode_health: 0,
        }
    }

    /// This agent's device id.
    pub fn device(&self) -> &DeviceId {
        &self.config.device
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The stored records, in arrival order.
    pub fn records(&self) -> &[ScheduleRecord] {
        &self.records
    }

    /// The outbox.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The outbox, to mark entries sent or reset after a reconnect (transient state
    /// only: nothing here needs storing).
    pub fn outbox_mut(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// The executor (read-only).
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// The schedule being executed or waiting for its window, if any.
    pub fn live_schedule(&self) -> Option<ScheduleKey> {
        self.executor.live()
    }

    fn queue_ack(&mut self, ack: AckDraft, batch: &mut WriteBatch) {
        let pushed = self.outbox.push(OutboxItem::Ack(ack));
        batch.outbox_push.push(pushed.entry);
        batch.outbox_delete.extend(pushed.dropped_seq);
        batch.next_seq = Some(self.outbox.next_seq());
    }

    fn update_record(&mut self, key: ScheduleKey, status: RecordStatus, batch: &mut WriteBatch) {
        if let Some(record) = self.records.iter_mut().find(|r| r.key() == key) {
            record.status = status;
            batch.records_update.push(RecordUpdate {
                key,
                status,
                started: record.started,
            });
        }
    }

    /// Step 1 of the module doc: stores a received schedule with its `Received` ack,
    /// unless its key is already stored (a duplicate: empty batch, no ack).
    /// Takes the schedule as an `Arc` too, so that a caller holding one (the simulator)
    /// shares it instead of copying it.
    pub fn receive(&mut self, signed: impl Into<Arc<SignedSchedule>>, now: UtcNanos) -> Received {
        let signed: Arc<SignedSchedule> = signed.into();
        let key = ScheduleKey::of(&signed);
        let mut batch = WriteBatch::default();
        if let Some(idx) = self.records.iter().position(|r| r.key() == key) {
            let existing = &self.records[idx];
            let untrusted = matches!(
                existing.status,
                RecordStatus::Rejected(
                    ScheduleRejection::InvalidSignature | ScheduleRejection::Malformed
                )
            );
            if existing.signed == signed || !untrusted {
                return Received {
                    duplicate: true,
                    batch,
                };
            }
            // A forged or malformed copy got here first under this key: it must not
            // shadow the real schedule, so the new copy replaces it.
            self.records.remove(idx);
            batch.records_delete.push(key);
        }
        let record = ScheduleRecord {
            arrival: self.next_arrival,
            received_at: now,
            signed,
            status: RecordStatus::Received,
            started: false,
        };
        self.next_arrival += 1;
        batch.records_insert.push(record.clone());
        if self.records.len() < crate::EXACT_GROWTH_BELOW {
            self.records.reserve_exact(1);
        }
        self.records.push(record);
        let ack = AckDraft {
            key,
            status: AckStatus::Received,
            at: now,
        };
        self.queue_ack(ack, &mut batch);
        Received {
            duplicate: false,
            batch,
        }
    }

    /// Whether some stored schedule waits for a decision.
    pub fn has_pending(&self) -> bool {
        self.records
            .iter()
            .any(|r| r.status == RecordStatus::Received)
    }

    /// Step 2 of the module doc: decides every undecided record, in arrival order.
    pub fn decide_pending(&mut self, now: UtcNanos) -> Decided {
        let mut decided = Decided::default();
        while let Some(idx) = self
            .records
            .iter()
            .position(|r| r.status == RecordStatus::Received)
        {
            let key = self.records[idx].key();
            let live = self.executor.live();
            let held_idx = self
                .records
                .iter()
                .enumerate()
                .filter(|(_, r)| r.status.was_accepted())
                .max_by_key(|(_, r)| r.signed.schedule.version)
                .map(|(i, _)| i);
            let decision = {
                let held = held_idx.map(|i| Held {
                    signed: &self.records[i].signed,
                    live: live == Some(self.records[i].key()),
                });
                decide(
                    held,
                    &self.records[idx].signed,
                    now,
                    &self.config.device,
                    &self.config.profile.acceptance,
                )
            };
            if let Some(skew) = decision.clock_skew_s {
                decided.clock_skew_s = Some(decided.clock_skew_s.map_or(skew, |s| s.max(skew)));
            }
            match decision.verdict {
                Verdict::Accept { .. } => {
                    self.executor
                        .load(Arc::clone(&self.records[idx].signed), false);
                    decided.accepted.push(key);
                }
                Verdict::Reject(_) => decided.rejected.push(key),
                Verdict::Duplicate => {
                    // Unreachable in practice (records are unique per key, and the held
                    // record has another key); forget the copy without a new ack.
                    let record = self.records.remove(idx);
                    decided.batch.records_delete.push(record.key());
                    continue;
                }
            }
            for ack in decision.acks() {
                if let Some(status) = status_of_ack(ack.status) {
                    self.update_record(ack.key, status, &mut decided.batch);
                    decided.batch.exec_log.push(ExecLogEntry {
                        at: now,
                        key: Some(ack.key),
                        event: ExecLogEvent::Status(status),
                    });
                }
                self.queue_ack(ack, &mut decided.batch);
            }
        }
        self.prune(&mut decided.batch);
        decided
    }

    fn prune(&mut self, batch: &mut WriteBatch) {
        let newest_accepted = self
            .records
            .iter()
            .filter(|r| r.status.was_accepted())
            .max_by_key(|r| r.signed.schedule.version)
            .map(ScheduleRecord::key);
        while self.records.len() > self.config.profile.records_max {
            // Oldest terminal record that is not the newest accepted (whose version
            // and fallback still matter).
            let Some(idx) = self
                .records
                .iter()
                .position(|r| r.status.is_terminal() && Some(r.key()) != newest_accepted)
            else {
                break;
            };
            let record = self.records.remove(idx);
            batch.records_delete.push(record.key());
        }
        // Give back the slots of pruned records: a simulated fleet holds thousands of
        // cores, each with this vector, and most of the time one live record.
        if self.records.capacity() > self.records.len() {
            self.records.shrink_to_fit();
        }
    }

    /// Handles a receipt: drops the covered outbox entries (receipts for another
    /// device are ignored: empty batch).
    pub fn on_receipt(&mut self, receipt: &Receipt) -> WriteBatch {
        let mut batch = WriteBatch::default();
        if receipt.device == self.config.device && self.outbox.receipt(receipt.through_seq) > 0 {
            batch.outbox_drain_through = Some(receipt.through_seq);
        }
        batch
    }

    /// Runs the executor at this moment (see [`Executor::tick`]) and turns its events
    /// into record updates, acks and log lines.
    pub fn tick(
        &mut self,
        now_wall: UtcNanos,
        now_mono: MonoNanos,
        emergency_stop: bool,
    ) -> Ticked {
        self.tick_with_scratch(now_wall, now_mono, emergency_stop, &mut Vec::new())
    }

    /// [`AgentCore::tick`] with a caller-lent buffer for the executor's events (cleared
    /// first; its contents afterwards are unspecified). A caller ticking many cores
    /// (the simulator) lends one buffer to all of them, so no core holds one and no
    /// tick allocates for its events.
    pub fn tick_with_scratch(
        &mut self,
        now_wall: UtcNanos,
        now_mono: MonoNanos,
        emergency_stop: bool,
        events: &mut Vec<ExecEvent>,
    ) -> Ticked {
        events.clear();
        let setpoint = self
            .executor
            .tick(now_wall, now_mono, emergency_stop, events);
        let mut batch = WriteBatch::default();
        let clock_stepped_ns = self.apply_events(events, now_wall, &mut batch);
        self.mode_health = match setpoint.mode {
            Mode::Fallback => HealthFlags::ON_FALLBACK,
            Mode::EmergencyStop => HealthFlags::EMERGENCY_STOP,
            _ => 0,
        };
        Ticked {
            setpoint,
            batch,
            clock_stepped_ns,
        }
    }

    /// The driver failed: fails the live schedule with `Failed(DriverFault)`.
    pub fn driver_fault(&mut self, now: UtcNanos) -> WriteBatch {
        let mut events = Vec::new();
        self.executor.fail(FailureReason::DriverFault, &mut events);
        let mut batch = WriteBatch::default();
        self.apply_events(&events, now, &mut batch);
        batch
    }

    fn apply_events(
        &mut self,
        events: &[ExecEvent],
        now: UtcNanos,
        batch: &mut WriteBatch,
    ) -> Option<i64> {
        let mut clock_stepped_ns = None;
        for event in events {
            let (key, log_event, ack) = match *event {
                ExecEvent::Started(key) => {
                    if let Some(record) = self.records.iter_mut().find(|r| r.key() == key) {
                        record.started = true;
                        batch.records_update.push(RecordUpdate {
                            key,
                            status: record.status,
                            started: true,
                        });
                    }
                    (Some(key), None, Some(AckStatus::Started))
                }
                ExecEvent::Completed(key) => {
                    self.update_record(key, RecordStatus::Completed, batch);
                    let log = ExecLogEvent::Status(RecordStatus::Completed);
                    (Some(key), Some(log), Some(AckStatus::Completed))
                }
                ExecEvent::Failed(key, reason) => {
                    self.update_record(key, RecordStatus::Failed(reason), batch);
                    let log = ExecLogEvent::Status(RecordStatus::Failed(reason));
                    (Some(key), Some(log), Some(AckStatus::Failed(reason)))
                }
                ExecEvent::Missed(key) => {
                    self.update_record(key, RecordStatus::Missed, batch);
                    (
                        Some(key),
                        Some(ExecLogEvent::Status(RecordStatus::Missed)),
                        None,
                    )
                }
                ExecEvent::PeriodEntered {
                    key,
                    period_idx,
                    target_w,
                } => {
                    let period_idx = u32::try_from(period_idx).unwrap_or(u32::MAX);
                    let log = ExecLogEvent::Period {
                        period_idx,
                        target_w,
                    };
                    (Some(key), Some(log), None)
                }
                ExecEvent::FallbackEntered { target_w } => {
                    (None, Some(ExecLogEvent::Fallback { target_w }), None)
                }
                ExecEvent::ClockStepped {
                    wall_minus_schedule_ns,
                } => {
                    clock_stepped_ns = Some(wall_minus_schedule_ns);
                    (None, None, None)
                }
                ExecEvent::EmergencyStopEngaged => {
                    (None, Some(ExecLogEvent::EmergencyStop(true)), None)
                }
                ExecEvent::EmergencyStopReleased => {
                    (None, Some(ExecLogEvent::EmergencyStop(false)), None)
                }
            };
            if let Some(event) = log_event {
                batch.exec_log.push(ExecLogEntry {
                    at: now,
                    key,
                    event,
                });
            }
            if let (Some(key), Some(status)) = (key, ack) {
                self.queue_ack(
                    AckDraft {
                        key,
                        status,
                        at: now,
                    },
                    batch,
                );
            }
        }
        clock_stepped_ns
    }

    /// Queues a telemetry sample; health flags for fallback and emergency stop are
    /// added from the last tick's mode.
    pub fn push_telemetry(&mut self, mut sample: Sample) -> WriteBatch {
        sample.health |= self.mode_health;
        let mut batch = WriteBatch::default();
        let pushed = self.outbox.push(OutboxItem::Telemetry(sample));
        batch.outbox_push.push(pushed.entry);
        batch.outbox_delete.extend(pushed.dropped_seq);
        batch.next_seq = Some(self.outbox.next_seq());
        batch
    }

    /// A heartbeat (not queued in the outbox: it is only worth sending now).
    pub fn heartbeat(&self, now: UtcNanos, uptime_s: u64) -> Heartbeat {
        Heartbeat {
            device: self.config.device.clone(),
            at: now,
            uptime_s,
            active: self.executor.live().map(|k| (k.schedule_id, k.version)),
            outbox_len: u32::try_from(self.outbox.len()).unwrap_or(u32::MAX),
        }
    }

    /// Asserts the invariants of the module doc and the outbox's.
    ///
    /// # Panics
    /// If one is broken (a bug).
    pub fn check_invariants(&self) {
        for (i, record) in self.records.iter().enumerate() {
            let key = record.key();
            assert!(
                self.records[i + 1..].iter().all(|r| r.key() != key),
                "duplicate record {key:?}"
            );
        }
        let live: Vec<ScheduleKey> = self
            .records
            .iter()
            .filter(|r| r.status == RecordStatus::Accepted)
            .map(ScheduleRecord::key)
            .collect();
        assert!(live.len() <= 1, "more than one live schedule: {live:?}");
        assert_eq!(
            live.first().copied(),
            self.executor.live(),
            "executor out of step"
        );
        self.outbox.check_invariants();
    }
}

#[cfg(test)]
mod tests {
    use voltex_dispatch::message::Fallback;

    use super::*;
    use crate::acceptance::{AcceptancePolicy, DeviceLimits, SignatureCheck};
    use crate::test_fixtures::{NS, device, one_period};

    /// 2026-01-01T00:00:00Z in ns.
    const T0_NS: i64 = 1_767_225_600 * NS;
    const DAY_NS: i64 = 86_400 * NS;

    fn core(records_max: usize) -> AgentCore {
        let limits = DeviceLimits {
            max_charge_w: 5_000,
            max_discharge_w: 5_000,
        };
        let executor = Arc::new(ExecutorConfig {
            limits,
            default_fallback: Fallback::Idle,
            fallback_ramp_s: 0,
            clock_step_tolerance_s: 5,
        });
        let profile = AgentProfile {
            acceptance: AcceptanceConfig {
                limits,
                signature: SignatureCheck::TrustedSimulation,
                policy: AcceptancePolicy {
                    late_grace_s: 60,
                    clock_skew_tolerance_s: 5,
                },
            },
            executor,
            outbox: OutboxConfig::default(),
            records_max,
        };
        let config = CoreConfig {
            device: device(),
            seed: 1,
            profile: Arc::new(profile),
        };
        AgentCore::restore(config, PersistedState::default())
    }

    /// Delivers day `version`'s schedule (a new version of the same one) an hour before
    /// it starts, as the simulator does: receive, then decide.
    fn deliver(core: &mut AgentCore, version: u64) -> Decided {
        let valid_from = UtcNanos(T0_NS + version as i64 * DAY_NS);
        let now = UtcNanos(valid_from.0 - 3_600 * NS);
        core.receive(one_period(version, valid_from, 86_400, 1_000), now);
        core.decide_pending(now)
    }

    #[test]
    fn a_superseded_record_is_pruned_and_the_one_left_lives_inline() {
        let mut core = core(1);
        for v in 1..=3u64 {
            assert_eq!(
                deliver(&mut core, v).accepted.len(),
                1,
                "version {v} accepted"
            );
            assert_eq!(core.records().len(), 1, "version {v}: the older one pruned");
            assert_eq!(core.records()[0].signed.schedule.version, v);
            assert!(
                !core.records.spilled(),
                "version {v}: one record, no heap buffer"
            );
        }
    }

    #[test]
    fn records_beyond_one_spill_to_the_heap_and_keep_their_order() {
        let mut core = core(4);
        for v in 1..=3u64 {
            deliver(&mut core, v);
        }
        let versions: Vec<u64> = core
            .records()
            .iter()
            .map(|r| r.signed.schedule.version)
            .collect();
        assert_eq!(
            versions,
            [1, 2, 3],
            "superseded records kept up to records_max"
        );
        assert!(core.records.spilled());
    }
}
