//! Replay determinism: the same commands give the same events and the same state hash,
//! however they are batched and whether the state was rebuilt from a snapshot, the
//! journal, or both. Also: decoding outside bytes (journal entries, snapshots) never
//! panics.

mod common;

use common::{
    Op, assert_workload_is_rich, commands_from_ops, engine_config, op_strategy, random_batches,
    random_commands, run_batches,
};
use proptest::prelude::*;
use voltex_engine::command::{decode_entry, encode_entry};
use voltex_engine::snapshot::{decode_snapshot, encode_snapshot};
use voltex_engine::{Engine, EngineCommand, MemDisk, ShardState};

fn batches_of(commands: &[EngineCommand], len: usize) -> Vec<&[EngineCommand]> {
    commands.chunks(len).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Same commands → identical events, acks and state hash, for any batching, any
    /// snapshot interval, and after recovering from what was written.
    #[test]
    fn same_commands_give_identical_events_and_state_hash(
        ops in proptest::collection::vec(op_strategy(), 1..250),
        batch_len in 1usize..40,
        snapshot_interval in 0u64..60,
        batch_seed in any::<u64>(),
    ) {
        let commands = commands_from_ops(&ops);

        let disk_a = MemDisk::default();
        let (mut engine_a, _) = Engine::open_in_memory(&disk_a, engine_config(0)).unwrap();
        let run_a = run_batches(&mut engine_a, &batches_of(&commands, batch_len));

        let disk_b = MemDisk::default();
        let config_b = engine_config(snapshot_interval);
        let (mut engine_b, _) = Engine::open_in_memory(&disk_b, config_b).unwrap();
        let run_b = run_batches(&mut engine_b, &random_batches(&commands, batch_seed, 30));

        prop_assert_eq!(&run_a.events, &run_b.events);
        prop_assert_eq!(&run_a.acks, &run_b.acks);
        prop_assert_eq!(engine_a.state_hash(), engine_b.state_hash());
        prop_assert_eq!(engine_a.last_seq(), commands.len() as u64);

        // The state is a function of the commands alone: a bare ShardState agrees.
        let mut bare = ShardState::new(config_b.shard);
        let mut bare_events = Vec::new();
        for (index, command) in commands.iter().enumerate() {
            bare.apply(index as u64 + 1, command, &mut bare_events);
        }
        prop_assert_eq!(&bare_events, &run_a.events);
        prop_assert_eq!(bare.state_hash(), engine_a.state_hash());

        // Recovery from journal only (A) and from snapshot + journal (B) agree too.
        let hash = engine_a.state_hash();
        drop(engine_a);
        drop(engine_b);
        let (recovered_a, report_a) = Engine::open_in_memory(&disk_a, engine_config(0)).unwrap();
        prop_assert_eq!(report_a.snapshot_seq, None);
        prop_assert_eq!(recovered_a.state_hash(), hash);
        let (recovered_b, _) = Engine::open_in_memory(&disk_b, config_b).unwrap();
        prop_assert_eq!(recovered_b.state_hash(), hash);
    }

    /// Snapshot round trip: restoring a snapshot gives a state with the same hash that
    /// then behaves identically.
    #[test]
    fn snapshot_restore_then_continue_is_indistinguishable(
        ops in proptest::collection::vec(op_strategy(), 2..200),
        split_fraction in 0.0f64..1.0,
    ) {
        let commands = commands_from_ops(&ops);
        let split = ((commands.len() as f64) * split_fraction) as usize;
        let config = engine_config(0).shard;
        let mut live = ShardState::new(config);
        let mut events = Vec::new();
        for (index, command) in commands[..split].iter().enumerate() {
            live.apply(index as u64 + 1, command, &mut events);
        }
        let bytes = encode_snapshot(&live.snapshot()).unwrap();
        let decoded = decode_snapshot(&bytes).unwrap();
        let mut restored = ShardState::from_snapshot(config, &decoded).unwrap();
        restored.check_invariants();
        prop_assert_eq!(restored.state_hash(), live.state_hash());
        let (mut live_events, mut restored_events) = (Vec::new(), Vec::new());
        for (index, command) in commands.iter().enumerate().skip(split) {
            live.apply(index as u64 + 1, command, &mut live_events);
            restored.apply(index as u64 + 1, command, &mut restored_events);
        }
        prop_assert_eq!(live_events, restored_events);
        prop_assert_eq!(restored.state_hash(), live.state_hash());
    }

    /// Journal entries round-trip, and decoding arbitrary bytes never panics.
    #[test]
    fn journal_entry_codec_round_trips_and_rejects_garbage(
        ops in proptest::collection::vec(op_strategy(), 1..20),
        garbage in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        for (index, command) in commands_from_ops(&ops).iter().enumerate() {
            let mut bytes = Vec::new();
            encode_entry(index as u64, command, &mut bytes).unwrap();
            let entry = decode_entry(&bytes).unwrap();
            prop_assert_eq!(entry.seq, index as u64);
            prop_assert_eq!(&entry.command, command);
            bytes.push(0);
            prop_assert!(decode_entry(&bytes).is_err(), "trailing bytes are refused");
        }
        let _ = decode_entry(&garbage);
    }

    /// Snapshot decoding never panics: on random bytes, and on a valid snapshot with a
    /// flipped bit or a cut, it returns an error.
    #[test]
    fn snapshot_decoding_never_panics_and_detects_damage(
        ops in proptest::collection::vec(op_strategy(), 1..60),
        garbage in proptest::collection::vec(any::<u8>(), 0..200),
        flip_at in any::<prop::sample::Index>(),
        bit in 0u8..8,
        cut_at in any::<prop::sample::Index>(),
    ) {
        let _ = decode_snapshot(&garbage);
        let commands = commands_from_ops(&ops);
        let mut state = ShardState::new(engine_config(0).shard);
        let mut events = Vec::new();
        for (index, command) in commands.iter().enumerate() {
            state.apply(index as u64 + 1, command, &mut events);
        }
        let bytes = encode_snapshot(&state.snapshot()).unwrap();
        let mut flipped = bytes.clone();
        flipped[flip_at.index(bytes.len())] ^= 1 << bit;
        prop_assert!(decode_snapshot(&flipped).is_err());
        let cut = cut_at.index(bytes.len());
        prop_assert!(decode_snapshot(&bytes[..cut]).is_err());
    }
}

#[test]
fn random_workload_is_rich_enough_to_test_determinism() {
    // The generated streams trade, expire, and hit both kinds of rejection; otherwise
    // the properties above would hold trivially.
    let commands = random_commands(7, 2_000);
    let mut engine = common::reference_engine();
    let run = run_batches(&mut engine, &batches_of(&commands, 50));
    assert_workload_is_rich(&run.events);
    let ops: Vec<(Op, u16)> = proptest::strategy::ValueTree::current(
        &proptest::collection::vec(op_strategy(), 400)
            .new_tree(&mut proptest::test_runner::TestRunner::deterministic())
            .unwrap(),
    );
    let mut engine = common::reference_engine();
    let run = run_batches(&mut engine, &[&commands_from_ops(&ops)]);
    assert_workload_is_rich(&run.events);
}
