//! The threaded sequencer: acks carry seqs and event ranges matching what the sink saw,
//! concurrent clients are batched, and a crash image taken at any moment holds every
//! command acknowledged before it.

mod common;

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::{engine_config, random_commands};
use voltex_engine::command::decode_entry;
use voltex_engine::command::{CommandOrigin, Committed};
use voltex_engine::engine::JOURNAL_FILE_NAME;
use voltex_engine::journal::{FileJournal, Journal, JournalConfig};
use voltex_engine::sequencer::EventSink;
use voltex_engine::{
    Ack, Engine, EngineCommand, EngineEvent, MemDisk, Sequencer, SequencerConfig, SequencerError,
    ShardState,
};

fn collecting_sink() -> (EventSink, Arc<Mutex<Vec<EngineEvent>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink_seen = Arc::clone(&seen);
    let sink: EventSink = Box::new(move |committed: Committed<'_>| {
        sink_seen
            .lock()
            .unwrap()
            .extend_from_slice(committed.events);
    });
    (sink, seen)
}

#[test]
fn call_returns_ack_whose_event_range_matches_the_sink() {
    let commands = random_commands(31, 300);
    let (engine, _) = Engine::open_in_memory(&MemDisk::default(), engine_config(50)).unwrap();
    let (sink, seen) = collecting_sink();
    let sequencer = Sequencer::spawn(engine, SequencerConfig::default(), sink).unwrap();
    let mut client = sequencer.client();
    let mut acks = Vec::new();
    for command in &commands {
        acks.push(client.call(command.clone()).unwrap());
    }
    let engine = sequencer.shutdown().unwrap();
    assert_eq!(engine.last_seq(), commands.len() as u64);
    let seen = seen.lock().unwrap();
    common::check_acks_match_events(&acks, &seen);
    // The sequencer is the engine: same events as driving the engine directly.
    let mut reference = common::reference_engine();
    let direct = common::run_batches(&mut reference, &[&commands]);
    assert_eq!(direct.events, *seen);
    assert_eq!(direct.acks, acks);
    assert_eq!(reference.state_hash(), engine.state_hash());
}

/// What a sink or the replay saw of one command: the command, its ack, its events.
type Seen = Vec<(EngineCommand, Ack, Vec<EngineEvent>)>;

fn record(seen: &mut Seen, committed: Committed<'_>) {
    for (command, ack, events) in committed.per_command() {
        seen.push((command.clone(), *ack, events.to_vec()));
    }
}

#[test]
fn the_sink_and_the_replay_see_each_command_with_its_origin_ack_and_own_events() {
    let commands: Vec<EngineCommand> = random_commands(7, 200)
        .into_iter()
        .enumerate()
        .map(|(index, command)| {
            if index % 3 == 0 {
                return command; // some commands have no origin
            }
            let origin = CommandOrigin::new(
                format!("user{}", index % 5),
                "trader".into(),
                format!("req-{index}"),
            )
            .unwrap();
            command.with_origin(origin)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = Engine::open(dir.path(), engine_config(0)).unwrap();
    let live = Arc::new(Mutex::new(Seen::new()));
    let sink_live = Arc::clone(&live);
    let sink: EventSink = Box::new(move |committed: Committed<'_>| {
        record(&mut sink_live.lock().unwrap(), committed);
    });
    let sequencer = Sequencer::spawn(engine, SequencerConfig::default(), sink).unwrap();
    let mut client = sequencer.client();
    // Pipelined, so batches hold several commands.
    for command in &commands {
        client.submit(command.clone()).unwrap();
    }
    let mut acks = Vec::new();
    for _ in &commands {
        acks.push(client.recv_reply().unwrap().result.unwrap());
    }
    drop(client);
    drop(sequencer.shutdown().unwrap());
    let live = live.lock().unwrap().clone();
    assert_eq!(live.len(), commands.len());
    for ((command, ack, events), (sent, replied)) in live.iter().zip(commands.iter().zip(&acks)) {
        assert_eq!(command, sent, "same command, origin included");
        assert_eq!(ack, replied);
        assert_eq!(events.len() as u64, ack.n_events());
        assert!(events.iter().all(|event| event.command_seq == ack.seq));
        assert_eq!(
            events.first().map(|event| event.event_seq),
            (ack.n_events() > 0).then_some(ack.first_event_seq)
        );
    }
    let mut replayed = Seen::new();
    Engine::open_replaying(dir.path(), engine_config(0), &mut |committed| {
        record(&mut replayed, committed)
    })
    .unwrap();
    assert_eq!(replayed, live, "the journal gives back what the sink saw");
}

#[test]
fn pipelined_clients_get_one_reply_each_in_submission_order() {
    let (engine, _) = Engine::open_in_memory(&MemDisk::default(), engine_config(0)).unwrap();
    let (sink, seen) = collecting_sink();
    let config = SequencerConfig {
        command_queue_len_max: 16,
    };
    let sequencer = Sequencer::spawn(engine, config, sink).unwrap();
    let n_ops = 400usize;
    let n_per_client = random_commands(0, n_ops).len();
    let threads: Vec<_> = (0..3u64)
        .map(|client_index| {
            let mut client = sequencer.client();
            let commands = random_commands(100 + client_index, n_ops);
            std::thread::spawn(move || {
                let mut tokens = Vec::new();
                let mut replies = Vec::new();
                for command in commands {
                    tokens.push(client.submit(command).unwrap());
                    // Keep a window of outstanding commands.
                    if client.n_outstanding() > 32 {
                        replies.push(client.recv_reply().unwrap());
                    }
                }
                while client.n_outstanding() > 0 {
                    replies.push(client.recv_reply().unwrap());
                }
                let reply_tokens: Vec<u64> = replies.iter().map(|reply| reply.token).collect();
                assert_eq!(reply_tokens, tokens, "replies in submission order");
                let seqs: Vec<u64> = replies
                    .iter()
                    .map(|reply| reply.result.as_ref().unwrap().seq)
                    .collect();
                assert!(
                    seqs.windows(2).all(|pair| pair[0] < pair[1]),
                    "seqs increase"
                );
                seqs
            })
        })
        .collect();
    let mut all_seqs: Vec<u64> = threads
        .into_iter()
        .flat_map(|thread| thread.join().unwrap())
        .collect();
    let engine = sequencer.shutdown().unwrap();
    all_seqs.sort_unstable();
    let expected: Vec<u64> = (1..=3 * n_per_client as u64).collect();
    assert!(all_seqs == expected, "every command sequenced exactly once");
    assert_eq!(engine.last_seq(), 3 * n_per_client as u64);
    let seen = seen.lock().unwrap();
    assert!(
        seen.windows(2)
            .all(|pair| pair[1].event_seq == pair[0].event_seq + 1)
    );
}

#[test]
fn call_with_replies_pending_is_refused_and_stopped_sequencer_is_reported() {
    let (engine, _) = Engine::open_in_memory(&MemDisk::default(), engine_config(0)).unwrap();
    let (sink, _) = collecting_sink();
    let sequencer = Sequencer::spawn(engine, SequencerConfig::default(), sink).unwrap();
    let mut client = sequencer.client();
    let commands = random_commands(3, 2);
    client.submit(commands[0].clone()).unwrap();
    assert!(matches!(
        client.call(commands[1].clone()),
        Err(SequencerError::RepliesPending)
    ));
    assert!(client.recv_reply().unwrap().result.is_ok());
    sequencer.shutdown().unwrap();
    assert!(matches!(
        client.submit(commands[1].clone()),
        Err(SequencerError::Stopped)
    ));
    assert!(matches!(
        Sequencer::spawn(
            Engine::open_in_memory(&MemDisk::default(), engine_config(0))
                .unwrap()
                .0,
            SequencerConfig {
                command_queue_len_max: 0
            },
            collecting_sink().0,
        ),
        Err(SequencerError::InvalidConfig(_))
    ));
}

/// Copies an engine directory the way a crash would leave it: snapshots first (a
/// snapshot is never newer than the journal it was taken after), then the journal,
/// while the writer keeps writing.
fn crash_image(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".snap") {
            // The writer may delete an old snapshot meanwhile: that is fine.
            let _ = fs::copy(entry.path(), to.join(&name));
        }
    }
    fs::copy(from.join(JOURNAL_FILE_NAME), to.join(JOURNAL_FILE_NAME)).unwrap();
}

#[test]
fn crash_image_taken_while_running_holds_every_acknowledged_command() {
    let dir = tempfile::tempdir().unwrap();
    let live_dir = dir.path().join("live");
    let config = engine_config(200);
    let (engine, _) = Engine::open(&live_dir, config).unwrap();
    let (sink, _) = collecting_sink();
    let sequencer = Sequencer::spawn(engine, SequencerConfig::default(), sink).unwrap();
    let commands = random_commands(41, 3_000);
    let mut client = sequencer.client();
    let mut acked_last_seq = 0u64;
    let mut images = Vec::new();
    for (index, command) in commands.iter().enumerate() {
        client.submit(command.clone()).unwrap();
        while client.n_outstanding() > 64 {
            acked_last_seq = client.recv_reply().unwrap().result.unwrap().seq;
        }
        if index % 700 == 350 {
            let image = dir.path().join(format!("image-{index}"));
            crash_image(&live_dir, &image);
            images.push((image, acked_last_seq));
        }
    }
    while client.n_outstanding() > 0 {
        client.recv_reply().unwrap().result.unwrap();
    }
    sequencer.shutdown().unwrap();

    // The final journal is the order the sequencer chose; each image must be a prefix.
    let (mut journal, _) =
        FileJournal::open(&live_dir.join(JOURNAL_FILE_NAME), JournalConfig::default()).unwrap();
    let records = journal.read_all().unwrap();
    assert_eq!(records.len(), commands.len());
    assert!(images.len() >= 4);
    for (image, acked_before_copy) in images {
        let (recovered, report) = Engine::open(&image, config).unwrap();
        assert!(
            report.last_seq >= acked_before_copy,
            "acknowledged {acked_before_copy} but recovered only {}",
            report.last_seq
        );
        let mut state = ShardState::new(config.shard);
        let mut events = Vec::new();
        for payload in records.iter().take(report.last_seq as usize) {
            let entry = decode_entry(payload).unwrap();
            state.apply(entry.seq, &entry.command, &mut events);
        }
        assert_eq!(
            recovered.state_hash(),
            state.state_hash(),
            "image is a true prefix"
        );
    }
}
