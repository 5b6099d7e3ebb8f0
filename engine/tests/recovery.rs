//! Crash and recovery: snapshot + journal replay rebuilds the state the engine had, and
//! nothing acknowledged is ever lost, whatever the crash tore.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;

use common::{engine_config, random_batches, random_commands, reference_engine, run_batches};
use voltex_engine::command::encode_entry;
use voltex_engine::engine::JOURNAL_FILE_NAME;
use voltex_engine::journal::{
    DamageKind, Journal, JournalConfig, JournalError, MemJournal, OpenReport, Records,
    encode_record,
};
use voltex_engine::snapshot::{SnapshotStore, encode_snapshot};
use voltex_engine::{Ack, Engine, EngineError, MemDisk, ShardState};

#[test]
fn crash_and_recover_matches_an_engine_that_never_crashed() {
    for seed in 0..4u64 {
        let commands = random_commands(seed, 1_500);
        let crash_at = 700 + seed as usize * 150;
        let dir = tempfile::tempdir().unwrap();
        let config = engine_config(97);

        let (mut crashing, report) = Engine::open(dir.path(), config).unwrap();
        assert_eq!(report.last_seq, 0);
        let before = run_batches(
            &mut crashing,
            &random_batches(&commands[..crash_at], seed, 40),
        );
        let hash_at_crash = crashing.state_hash();
        drop(crashing); // crash: no shutdown, no final snapshot

        let (mut recovered, report) = Engine::open(dir.path(), config).unwrap();
        assert_eq!(report.last_seq, crash_at as u64);
        let snapshot_seq = report.snapshot_seq.expect("a snapshot was taken");
        assert!(snapshot_seq > 0 && snapshot_seq <= crash_at as u64);
        assert_eq!(
            report.n_replayed,
            crash_at as u64 - snapshot_seq,
            "replay starts after it"
        );
        assert_eq!(report.journal.damage, None);
        assert_eq!(
            recovered.state_hash(),
            hash_at_crash,
            "seed {seed}: same state"
        );
        let after = run_batches(
            &mut recovered,
            &random_batches(&commands[crash_at..], seed + 1, 40),
        );

        let mut never_crashed = reference_engine();
        let whole = run_batches(
            &mut never_crashed,
            &[&commands[..crash_at], &commands[crash_at..]],
        );
        assert_eq!(
            before.events,
            whole.events[..before.events.len()],
            "seed {seed}"
        );
        assert_eq!(
            after.events,
            whole.events[before.events.len()..],
            "seed {seed}: same future"
        );
        assert_eq!(after.acks, whole.acks[crash_at..]);
        assert_eq!(
            recovered.state_hash(),
            never_crashed.state_hash(),
            "seed {seed}"
        );
        common::assert_workload_is_rich(&whole.events);
    }
}

#[test]
fn torn_final_write_on_disk_keeps_every_acknowledged_command() {
    let commands = random_commands(11, 600);
    let dir = tempfile::tempdir().unwrap();
    let config = engine_config(50);
    let (mut engine, _) = Engine::open(dir.path(), config).unwrap();
    let run = run_batches(&mut engine, &random_batches(&commands[..500], 3, 30));
    let acked_last_seq = run.acks.last().unwrap().seq;
    drop(engine);

    // The crash tore the next group commit: its first record is whole, the second is cut.
    let mut torn = Vec::new();
    for (offset, command) in commands[500..502].iter().enumerate() {
        let mut payload = Vec::new();
        encode_entry(acked_last_seq + 1 + offset as u64, command, &mut payload).unwrap();
        encode_record(&payload, &mut torn);
    }
    torn.truncate(torn.len() - 3);
    let journal_path = dir.path().join(JOURNAL_FILE_NAME);
    let good_len = fs::metadata(&journal_path).unwrap().len();
    OpenOptions::new()
        .append(true)
        .open(&journal_path)
        .unwrap()
        .write_all(&torn)
        .unwrap();

    let (mut recovered, report) = Engine::open(dir.path(), config).unwrap();
    let damage = report.journal.damage.expect("torn tail reported");
    assert_eq!(damage.kind, DamageKind::Torn);
    assert!(
        damage.offset > good_len,
        "the whole first record of the torn batch survived"
    );
    // The unacknowledged but whole record is kept; the torn one is gone.
    assert_eq!(report.last_seq, acked_last_seq + 1);
    assert_eq!(fs::metadata(&journal_path).unwrap().len(), damage.offset);

    let mut reference = reference_engine();
    run_batches(&mut reference, &[&commands[..501]]);
    assert_eq!(recovered.state_hash(), reference.state_hash());
    // And it continues exactly like the reference.
    let after = run_batches(&mut recovered, &[&commands[501..]]);
    let expected = run_batches(&mut reference, &[&commands[501..]]);
    assert_eq!(after, expected);
}

/// How a [`FaultyJournal`] fails.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The write stores only this many bytes of its batch, then fails.
    TornWrite(usize),
    /// The write succeeds, the sync fails (the batch is on disk but not acknowledged).
    FailedSync,
}

/// A memory journal that fails its `writes_before_fault`-th write (0-based), and
/// claims its sync blocks so the engine takes the overlapped-fsync path.
struct FaultyJournal {
    inner: MemJournal,
    writes_before_fault: usize,
    fault: Fault,
    sync_fails: std::sync::atomic::AtomicBool,
}

impl Journal for FaultyJournal {
    fn append(&mut self, payload: &[u8]) -> Result<(), JournalError> {
        self.inner.append(payload)
    }
    fn write(&mut self) -> Result<(), JournalError> {
        if self.writes_before_fault == 0 {
            match self.fault {
                Fault::TornWrite(n_bytes) => self.inner.tear_next_commit(n_bytes),
                Fault::FailedSync => self
                    .sync_fails
                    .store(true, std::sync::atomic::Ordering::SeqCst),
            }
        }
        self.writes_before_fault = self.writes_before_fault.wrapping_sub(1);
        self.inner.write()
    }
    fn sync(&self) -> Result<(), JournalError> {
        if self.sync_fails.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(JournalError::Io {
                path: "<faulty>".into(),
                source: std::io::Error::other("injected sync failure"),
            });
        }
        self.inner.sync()
    }
    fn sync_blocks(&self) -> bool {
        true
    }
    fn read_all(&mut self) -> Result<Records, JournalError> {
        self.inner.read_all()
    }
    fn committed_len(&self) -> u64 {
        self.inner.committed_len()
    }
    fn n_pending(&self) -> usize {
        self.inner.n_pending()
    }
}

#[test]
fn failed_write_or_sync_acknowledges_nothing_of_its_group_and_loses_nothing_acknowledged() {
    let commands = random_commands(5, 800);
    let faults = [
        (0usize, Fault::TornWrite(0)),
        (3, Fault::TornWrite(5)),
        (7, Fault::TornWrite(100)),
        (12, Fault::TornWrite(1_000)),
        (0, Fault::FailedSync),
        (9, Fault::FailedSync),
    ];
    for (writes_before_fault, fault) in faults {
        let disk = MemDisk::default();
        let config = engine_config(40);
        let (journal, report) = MemJournal::open(disk.journal.clone(), config.journal).unwrap();
        let faulty = FaultyJournal {
            inner: journal,
            writes_before_fault,
            fault,
            sync_fails: std::sync::atomic::AtomicBool::new(false),
        };
        let (mut engine, _) = Engine::recover(
            Box::new(faulty),
            report,
            Box::new(disk.snapshots.clone()),
            config,
        )
        .unwrap();
        let mut acks: Vec<Ack> = Vec::new();
        let mut events = Vec::new();
        let mut failed = false;
        for batch in commands.chunks(25) {
            let (n_acked, n_events) = (acks.len(), events.len());
            match engine.process_batch(batch, &mut events, &mut acks) {
                Ok(()) => assert_eq!(acks.len(), n_acked + batch.len()),
                Err(EngineError::Journal(_)) => {
                    assert_eq!(
                        acks.len(),
                        n_acked,
                        "{fault:?}: nothing of a failed group is acked"
                    );
                    assert_eq!(
                        events.len(),
                        n_events,
                        "{fault:?}: no event of it is handed out"
                    );
                    failed = true;
                    break;
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert!(failed, "the fault happened");
        assert!(engine.is_poisoned());
        assert!(matches!(
            engine.process_batch(&commands[..1], &mut events, &mut acks),
            Err(EngineError::Poisoned)
        ));
        let acked_last_seq = acks.last().map_or(0, |ack| ack.seq);
        drop(engine);

        let (recovered, report) = Engine::open_in_memory(&disk, config).unwrap();
        assert!(
            report.last_seq >= acked_last_seq,
            "every acknowledged command survives"
        );
        assert!(
            report.last_seq <= acked_last_seq + 25,
            "at most the failed group survives"
        );
        match fault {
            Fault::TornWrite(n_bytes) if n_bytes < 8 => {
                assert_eq!(
                    report.last_seq, acked_last_seq,
                    "no whole record was written"
                );
            }
            Fault::FailedSync => {
                // Written but not acknowledged: recovery may keep it (it is whole).
                assert_eq!(report.last_seq, acked_last_seq + 25);
            }
            Fault::TornWrite(_) => {}
        }
        let mut reference = reference_engine();
        run_batches(&mut reference, &[&commands[..report.last_seq as usize]]);
        assert_eq!(recovered.state_hash(), reference.state_hash());
    }
}

#[test]
fn damaged_newest_snapshot_falls_back_to_an_older_one() {
    let commands = random_commands(21, 700);
    let disk = MemDisk::default();
    let config = engine_config(100);
    let (mut engine, _) = Engine::open_in_memory(&disk, config).unwrap();
    run_batches(&mut engine, &random_batches(&commands, 2, 20));
    let hash = engine.state_hash();
    drop(engine);

    let seqs = disk.snapshots.list().unwrap();
    assert_eq!(seqs.len(), 2, "snapshots_kept = 2");
    let newest = seqs[1];
    let mut bytes = disk.snapshots.read(newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    disk.snapshots.set_bytes(newest, bytes);

    let (recovered, report) = Engine::open_in_memory(&disk, config).unwrap();
    assert_eq!(report.snapshot_seq, Some(seqs[0]));
    assert_eq!(report.snapshots_skipped.len(), 1);
    assert_eq!(report.snapshots_skipped[0].seq, newest);
    assert_eq!(recovered.state_hash(), hash);
}

#[test]
fn no_usable_snapshot_recovers_from_the_journal_alone() {
    let commands = random_commands(22, 500);
    let disk = MemDisk::default();
    let config = engine_config(100);
    let (mut engine, _) = Engine::open_in_memory(&disk, config).unwrap();
    run_batches(&mut engine, &random_batches(&commands, 4, 20));
    let hash = engine.state_hash();
    drop(engine);
    for seq in disk.snapshots.list().unwrap() {
        disk.snapshots.set_bytes(seq, b"not a snapshot".to_vec());
    }
    let (recovered, report) = Engine::open_in_memory(&disk, config).unwrap();
    assert_eq!(report.snapshot_seq, None);
    assert_eq!(report.n_replayed, commands.len() as u64);
    assert_eq!(recovered.state_hash(), hash);
}

#[test]
fn snapshot_taken_with_another_book_config_is_refused() {
    let commands = random_commands(23, 200);
    let disk = MemDisk::default();
    let (mut engine, _) = Engine::open_in_memory(&disk, engine_config(50)).unwrap();
    run_batches(&mut engine, &[&commands]);
    drop(engine);
    let mut other = engine_config(50);
    other.shard.book.orders_max = 512;
    assert!(matches!(
        Engine::open_in_memory(&disk, other),
        Err(EngineError::Snapshot(_))
    ));
}

#[test]
fn journal_shorter_than_the_snapshot_is_refused() {
    let commands = random_commands(24, 300);
    let disk = MemDisk::default();
    let config = engine_config(0);
    let (mut engine, _) = Engine::open_in_memory(&disk, config).unwrap();
    run_batches(&mut engine, &[&commands]);
    let mut snapshots = disk.snapshots.clone();
    let snapshot = engine.state().snapshot();
    snapshots
        .save(snapshot.last_seq, &encode_snapshot(&snapshot).unwrap())
        .unwrap();
    drop(engine);
    // Lose the last 10 records (as if someone truncated the journal by hand).
    let bytes = disk.journal.bytes();
    let scanned = voltex_engine::journal::scan(&bytes, JournalConfig::default().record_len_max);
    let cut = scanned.payloads[scanned.payloads.len() - 10].start - 8;
    disk.journal.set_bytes(bytes[..cut].to_vec());
    assert!(matches!(
        Engine::open_in_memory(&disk, config),
        Err(EngineError::JournalBehindSnapshot { .. })
    ));
}

#[test]
fn undecodable_record_with_valid_checksum_is_an_error_not_a_panic() {
    let disk = MemDisk::default();
    let config = engine_config(0);
    let (journal, _) = MemJournal::open(disk.journal.clone(), config.journal).unwrap();
    let mut journal = journal;
    journal.append(&[0xff; 12]).unwrap();
    journal.commit().unwrap();
    drop(journal);
    assert!(matches!(
        Engine::open_in_memory(&disk, config),
        Err(EngineError::UndecodableRecord { index: 0, .. })
    ));
}

#[test]
fn recovered_state_equals_a_fresh_state_replaying_the_same_records() {
    // Snapshots and replay agree with a plain ShardState fed the journal's commands.
    let commands = random_commands(25, 400);
    let disk = MemDisk::default();
    let config = engine_config(64);
    let (mut engine, _) = Engine::open_in_memory(&disk, config).unwrap();
    run_batches(&mut engine, &random_batches(&commands, 9, 50));
    drop(engine);
    let (recovered, _) = Engine::open_in_memory(&disk, config).unwrap();
    let mut state = ShardState::new(config.shard);
    let mut events = Vec::new();
    let (mut journal, report): (MemJournal, OpenReport) =
        MemJournal::open(disk.journal.clone(), config.journal).unwrap();
    assert_eq!(report.n_records, commands.len() as u64);
    for payload in journal.read_all().unwrap().iter() {
        let entry = voltex_engine::command::decode_entry(payload).unwrap();
        state.apply(entry.seq, &entry.command, &mut events);
    }
    assert_eq!(recovered.state_hash(), state.state_hash());
}

#[test]
fn open_replaying_hands_back_every_event_of_the_journal_without_snapshots() {
    let commands = random_commands(11, 600);
    let dir = tempfile::tempdir().unwrap();
    // Snapshots disabled: recovery replays the whole journal.
    let config = engine_config(0);
    let (mut engine, _) = Engine::open(dir.path(), config).unwrap();
    let ran = run_batches(&mut engine, &random_batches(&commands, 11, 40));
    drop(engine);

    let mut replayed = Vec::new();
    let (recovered, report) = Engine::open_replaying(dir.path(), config, &mut |committed| {
        replayed.extend_from_slice(committed.events)
    })
    .unwrap();
    let n_commands = commands.len() as u64;
    assert_eq!(report.n_replayed, n_commands);
    assert_eq!(recovered.last_seq(), n_commands);
    assert_eq!(replayed, ran.events, "same events, same order, no gaps");
}
