//! Crash safety with the SQLite store on disk.
//!
//! Each test runs the agent's documented step order (see `voltex_agent::core`):
//! receive → commit schedule + `Received` → confirm (PUBACK) → decide → commit verdict
//! and acks → send the outbox, and "kills" the agent at one point by dropping the core
//! and the store (all process state) without any shutdown. A restart opens the same
//! file, restores the core and decides anything left undecided (what
//! `Runtime::start` does); the fake broker re-delivers every message that was not
//! confirmed. The tests then check: no accepted schedule lost; every ack the platform
//! sees is either new or an idempotent re-send of the same `(outbox_seq, ack)`; no two
//! different sequence numbers carry the same `(schedule, status)`; and execution
//! resumes at the right period without a second `Started`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use voltex_agent::acceptance::ScheduleKey;
use voltex_agent::core::AgentCore;
use voltex_agent::executor::Mode;
use voltex_agent::outbox::next_messages;
use voltex_agent::store::sqlite::SqliteStore;
use voltex_agent::store::{AgentStore, RecordStatus};
use voltex_dispatch::message::AckStatus;
use voltex_dispatch::{Ack, Message, Receipt, SignedSchedule};
use voltex_market::UtcNanos;

/// A broker that keeps a QoS 1 message until it is confirmed (then redelivers it to
/// the next session), and a platform that records every ack it receives.
#[derive(Default)]
struct World {
    unconfirmed: Vec<SignedSchedule>,
    /// Every ack received, by outbox seq (re-sends must be identical).
    acks: BTreeMap<u64, Ack>,
    ack_messages: usize,
}

impl World {
    fn platform_receives(&mut self, messages: &[(Message, u64)]) {
        for (message, _) in messages {
            if message.ack_count() > 0 {
                self.ack_messages += 1;
            }
            for ack in message.acks() {
                if let Some(previous) = self.acks.insert(ack.outbox_seq, ack.clone()) {
                    assert_eq!(
                        previous, ack,
                        "a re-send under the same seq must be identical"
                    );
                }
            }
        }
    }

    fn statuses(&self, key: ScheduleKey) -> Vec<AckStatus> {
        let (schedule_id, version) = (key.schedule_id, key.version);
        self.acks
            .values()
            .filter(|a| a.schedule_id == schedule_id && a.version == version)
            .map(|a| a.status)
            .collect()
    }

    /// No two sequence numbers carry the same (schedule, status).
    fn assert_no_duplicate_acks(&self) {
        let mut seen = BTreeMap::new();
        for ack in self.acks.values() {
            let id = (ack.schedule_id, ack.version, format!("{:?}", ack.status));
            if let Some(seq) = seen.insert(id.clone(), ack.outbox_seq) {
                panic!("{id:?} acked twice, seqs {seq} and {}", ack.outbox_seq);
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kill {
    BetweenReceiveAndStore,
    BetweenStoreAndConfirm,
    BetweenConfirmAndDecide,
    BetweenDecideAndSend,
    Never,
}

struct Agent {
    core: AgentCore,
    store: SqliteStore,
}

/// Start (or restart) from the file: restore, then decide what a crash left undecided.
async fn boot(path: &Path, now: UtcNanos, world: &mut World) -> Agent {
    let mut store = SqliteStore::open(path).await.expect("open");
    let state = store.load().await.expect("load");
    let mut core = AgentCore::restore(core_config(), state);
    let decided = core.decide_pending(now);
    store.commit(&decided.batch).await.expect("commit");
    core.check_invariants();
    // A new session: everything unreceipted goes out again.
    core.outbox_mut().reconnected();
    flush(&mut core, world);
    Agent { core, store }
}

fn flush(core: &mut AgentCore, world: &mut World) {
    let mut out = Vec::new();
    next_messages(core.outbox(), core.device(), 1_000, &mut out);
    world.platform_receives(&out);
    if let Some((_, last)) = out.last() {
        core.outbox_mut().mark_sent(*last);
    }
}

/// Delivers the oldest unconfirmed message, killing the agent at `kill`. Returns the
/// agent if it survived.
async fn deliver(mut agent: Agent, world: &mut World, now: UtcNanos, kill: Kill) -> Option<Agent> {
    let signed = world.unconfirmed.first().cloned()?;
    if kill == Kill::BetweenReceiveAndStore {
        return None; // received, nothing stored: drop everything
    }
    let received = agent.core.receive(signed, now);
    agent.store.commit(&received.batch).await.expect("commit");
    if kill == Kill::BetweenStoreAndConfirm {
        return None;
    }
    world.unconfirmed.remove(0); // PUBACK
    if kill == Kill::BetweenConfirmAndDecide {
        return None;
    }
    let decided = agent.core.decide_pending(now);
    agent.store.commit(&decided.batch).await.expect("commit");
    if kill == Kill::BetweenDecideAndSend {
        return None;
    }
    flush(&mut agent.core, world);
    Some(agent)
}

async fn crash_then_restart_keeps_schedule_and_acks(kill: Kill) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.db");
    let mut world = World::default();
    let signed = sign(hour_schedule(1, 1));
    world.unconfirmed.push(signed.clone());

    let agent = boot(&path, at(-300), &mut world).await;
    let survived = deliver(agent, &mut world, at(-300), kill).await;
    assert_eq!(survived.is_some(), kill == Kill::Never);
    drop(survived);

    // Restart; the broker re-delivers whatever was not confirmed.
    let mut agent = boot(&path, at(-200), &mut world).await;
    while !world.unconfirmed.is_empty() {
        agent = deliver(agent, &mut world, at(-200), Kill::Never)
            .await
            .expect("no kill");
    }
    let k = key(1, 1);
    assert_eq!(
        agent.core.live_schedule(),
        Some(k),
        "{kill:?}: accepted schedule lost"
    );
    let record = agent
        .core
        .records()
        .iter()
        .find(|r| r.key() == k)
        .expect("stored");
    assert_eq!(record.status, RecordStatus::Accepted);
    assert_eq!(
        world.statuses(k),
        vec![AckStatus::Received, AckStatus::Accepted],
        "{kill:?}"
    );
    world.assert_no_duplicate_acks();

    // The platform's receipt drains them; a later restart re-sends nothing.
    let through_seq = *world.acks.keys().last().expect("acks");
    let batch = agent.core.on_receipt(&Receipt {
        device: device(),
        through_seq,
    });
    agent.store.commit(&batch).await.expect("commit");
    drop(agent);
    let before = world.ack_messages;
    let agent = boot(&path, at(-100), &mut world).await;
    assert_eq!(world.ack_messages, before, "receipted acks are not re-sent");
    assert!(agent.core.outbox().is_empty());
}

#[tokio::test]
async fn kill_between_receive_and_store_loses_nothing() {
    crash_then_restart_keeps_schedule_and_acks(Kill::BetweenReceiveAndStore).await;
}

#[tokio::test]
async fn kill_between_store_and_confirm_loses_nothing_and_dedups_the_redelivery() {
    crash_then_restart_keeps_schedule_and_acks(Kill::BetweenStoreAndConfirm).await;
}

#[tokio::test]
async fn kill_between_confirm_and_decision_is_decided_at_restart() {
    crash_then_restart_keeps_schedule_and_acks(Kill::BetweenConfirmAndDecide).await;
}

#[tokio::test]
async fn kill_between_decision_and_ack_send_resends_the_stored_acks() {
    crash_then_restart_keeps_schedule_and_acks(Kill::BetweenDecideAndSend).await;
}

#[tokio::test]
async fn no_kill_baseline_has_the_same_outcome() {
    crash_then_restart_keeps_schedule_and_acks(Kill::Never).await;
}

#[tokio::test]
async fn kill_mid_execution_resumes_at_the_right_period_without_a_second_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.db");
    let mut world = World::default();
    world.unconfirmed.push(sign(hour_schedule(1, 1)));
    let agent = boot(&path, at(-300), &mut world).await;
    let mut agent = deliver(agent, &mut world, at(-300), Kill::Never)
        .await
        .expect("alive");
    let k = key(1, 1);
    // Execute into the second period; every tick's batch is committed before acting.
    for s in [0, 300, 900, 1_000] {
        let ticked = agent.core.tick(at(s), mono(s), false);
        agent.store.commit(&ticked.batch).await.expect("commit");
    }
    flush(&mut agent.core, &mut world);
    assert_eq!(
        world.statuses(k),
        vec![AckStatus::Received, AckStatus::Accepted, AckStatus::Started]
    );
    drop(agent); // killed during period 1

    // Reboot 20 minutes later: the monotonic clock restarted from zero.
    let mut agent = boot(&path, at(2_000), &mut world).await;
    let rebooted_mono = voltex_agent::executor::MonoNanos(5 * NS);
    let ticked = agent.core.tick(at(2_000), rebooted_mono, false);
    agent.store.commit(&ticked.batch).await.expect("commit");
    assert_eq!(
        ticked.setpoint.mode,
        Mode::Schedule {
            key: k,
            period_idx: 2
        }
    );
    assert_eq!(ticked.setpoint.target_w, 0);
    let ticked = agent.core.tick(
        at(2_700),
        voltex_agent::executor::MonoNanos(705 * NS),
        false,
    );
    agent.store.commit(&ticked.batch).await.expect("commit");
    assert_eq!(
        ticked.setpoint.target_w, 1_000,
        "next boundary on the new monotonic clock"
    );
    let ticked = agent.core.tick(
        at(3_600),
        voltex_agent::executor::MonoNanos(1_605 * NS),
        false,
    );
    agent.store.commit(&ticked.batch).await.expect("commit");
    flush(&mut agent.core, &mut world);
    assert_eq!(
        world.statuses(k),
        vec![
            AckStatus::Received,
            AckStatus::Accepted,
            AckStatus::Started,
            AckStatus::Completed
        ]
    );
    world.assert_no_duplicate_acks();
}

#[tokio::test]
async fn reboot_after_a_long_partition_follows_the_fallback_and_completes_the_schedule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.db");
    let mut world = World::default();
    let mut schedule = hour_schedule(1, 1);
    schedule.fallback = voltex_dispatch::Fallback::Hold { target_w: -700 };
    world.unconfirmed.push(sign(schedule));
    let agent = boot(&path, at(-300), &mut world).await;
    let mut agent = deliver(agent, &mut world, at(-300), Kill::Never)
        .await
        .expect("alive");
    let ticked = agent.core.tick(at(10), mono(10), false);
    agent.store.commit(&ticked.batch).await.expect("commit");
    drop(agent);
    // Down for a week.
    let mut agent = boot(&path, at(7 * 86_400), &mut world).await;
    let ticked = agent.core.tick(at(7 * 86_400), mono(0), false);
    agent.store.commit(&ticked.batch).await.expect("commit");
    assert_eq!(
        (ticked.setpoint.target_w, ticked.setpoint.mode),
        (-700, Mode::Fallback)
    );
    drop(agent);
    // And once more: the fallback of the finished schedule survives another reboot.
    let mut agent = boot(&path, at(8 * 86_400), &mut world).await;
    let ticked = agent.core.tick(at(8 * 86_400), mono(0), false);
    assert_eq!(
        (ticked.setpoint.target_w, ticked.setpoint.mode),
        (-700, Mode::Fallback)
    );
    flush(&mut agent.core, &mut world);
    assert_eq!(
        world.statuses(key(1, 1)),
        vec![
            AckStatus::Received,
            AckStatus::Accepted,
            AckStatus::Started,
            AckStatus::Completed
        ]
    );
}
