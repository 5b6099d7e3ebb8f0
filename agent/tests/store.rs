//! Stores: the SQLite store round-trips every kind of change through a reopened file,
//! and agrees with the in-memory store fed the same batches.

mod common;

use common::*;
use voltex_agent::core::AgentCore;
use voltex_agent::outbox::Sample;
use voltex_agent::store::memory::MemoryStore;
use voltex_agent::store::sqlite::SqliteStore;
use voltex_agent::store::{AgentStore, PersistedState, RecordStatus, WriteBatch};
use voltex_dispatch::Receipt;

fn sample(s: i64) -> Sample {
    Sample {
        at: at(s),
        soc_wh: 5_000 + s,
        power_w: -2_000,
        charged_wh: 10,
        discharged_wh: 20,
        temperature_mc: 24_500,
        health: 4,
    }
}

/// A life of one agent: two schedules (the second supersedes), a rejected one, ticks
/// through periods, telemetry and a receipt. Returns every batch in order.
// Each push mutates the core in order; a `vec![]` literal would hide that sequence.
#[allow(clippy::vec_init_then_push)]
fn batches() -> Vec<WriteBatch> {
    let mut core = AgentCore::restore(core_config(), PersistedState::default());
    let mut out = Vec::new();
    out.push(core.receive(sign(hour_schedule(1, 1)), at(-120)).batch);
    out.push(core.decide_pending(at(-120)).batch);
    out.push(core.tick(at(0), mono(0), false).batch);
    out.push(core.push_telemetry(sample(10)));
    out.push(core.tick(at(900), mono(900), false).batch);
    let mut forged = sign(hour_schedule(1, 3));
    forged.signature[0] ^= 1;
    out.push(core.receive(forged, at(950)).batch);
    out.push(core.decide_pending(at(950)).batch);
    let mut second = hour_schedule(2, 2);
    second.valid_from = at(1_000);
    second.valid_until = at(4_600);
    out.push(core.receive(sign(second), at(960)).batch);
    out.push(core.decide_pending(at(960)).batch);
    out.push(core.tick(at(1_000), mono(1_000), false).batch);
    out.push(core.push_telemetry(sample(1_010)));
    out.push(core.on_receipt(&Receipt {
        device: device(),
        through_seq: 4,
    }));
    core.check_invariants();
    out
}

#[tokio::test]
async fn sqlite_store_round_trips_through_a_reopened_file_and_matches_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.db");
    let mut memory = MemoryStore::new();
    {
        let mut sqlite = SqliteStore::open(&path).await.expect("open");
        for batch in batches() {
            sqlite.commit(&batch).await.expect("commit");
            memory.apply(&batch);
        }
        assert!(sqlite.exec_log_len().await.expect("count") > 0);
        sqlite.close().await.expect("close");
    }
    let mut reopened = SqliteStore::open(&path).await.expect("reopen");
    let loaded = reopened.load().await.expect("load");
    assert_eq!(loaded, memory.state());
    // What the life above leaves behind, spelled out.
    let statuses: Vec<_> = loaded
        .records
        .iter()
        .map(|r| (r.key(), r.status, r.started))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (key(1, 1), RecordStatus::Superseded { by_version: 2 }, true),
            (
                key(1, 3),
                RecordStatus::Rejected(
                    voltex_dispatch::message::ScheduleRejection::InvalidSignature
                ),
                false
            ),
            (key(2, 2), RecordStatus::Accepted, true),
        ]
    );
    assert!(
        loaded.outbox.iter().all(|e| e.seq > 4),
        "receipted entries are gone"
    );
    assert!(loaded.next_seq > loaded.outbox.last().map_or(0, |e| e.seq));
    // A core restored from the file executes the live schedule.
    let mut core = AgentCore::restore(core_config(), loaded);
    assert_eq!(core.live_schedule(), Some(key(2, 2)));
    assert_eq!(
        core.tick(at(1_001), mono(1_001), false).setpoint.target_w,
        -2_000
    );
    core.check_invariants();
}

#[tokio::test]
async fn empty_batches_write_nothing_and_a_fresh_file_loads_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = SqliteStore::open(&dir.path().join("a.db"))
        .await
        .expect("open");
    store.commit(&WriteBatch::default()).await.expect("commit");
    let loaded = store.load().await.expect("load");
    assert!(loaded.records.is_empty() && loaded.outbox.is_empty());
    assert_eq!(loaded.next_seq, 1);
}
