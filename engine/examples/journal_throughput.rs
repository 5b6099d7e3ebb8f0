//! Throughput of the sequencer core with a file journal and group commit.
//!
//! ```text
//! cargo run --release -p voltex-engine --example journal_throughput -- [N_COMMANDS] [BATCH...]
//! ```
//!
//! Runs the same seeded workload (submits and cancels over 8 products) through:
//! - `apply only`: a bare `ShardState` (no journal): the baseline;
//! - `engine, memory journal`: `Engine` over `MemDisk` (encoding + checksums, no disk);
//! - `engine, file journal, batch B`: `Engine::open` in a temp dir, `process_batch` with
//!   B commands per call, so one fsync per B commands;
//! - `sequencer thread, file journal`: a client pipelining commands into the threaded
//!   `Sequencer`, which batches whatever is queued (up to `batch_len_max`).
//!
//! Every command counted here was acknowledged only after its group's `sync_data`.
//! Prints commands/s and the ratio against the baseline measured in the same run.
#![allow(clippy::disallowed_methods)] // an example measures wall time; the library never does

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use voltex_engine::journal::JournalConfig;
use voltex_engine::state::ShardConfig;
use voltex_engine::{
    Engine, EngineCommand, EngineConfig, MemDisk, Sequencer, SequencerConfig, ShardState,
};
use voltex_market::book::{BookCommand, BookConfig, NewOrder};
use voltex_market::{
    AccountId, DeliveryPeriod, MarketRules, OrderId, PeriodLength, Price, ProductId, Qty, Side,
    UtcNanos,
};

const N_PRODUCTS: u32 = 8;

fn workload(n_commands: usize) -> Vec<EngineCommand> {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let now = UtcNanos(1_700_000_000_000_000_000 / 3_600_000_000_000 * 3_600_000_000_000);
    let mut commands = Vec::with_capacity(n_commands);
    for index in 0..N_PRODUCTS {
        let start = now.plus_seconds(3600 * (i64::from(index) + 10));
        let period = DeliveryPeriod::new(start, PeriodLength::Minutes60).expect("aligned");
        commands.push(EngineCommand::add_product(
            now,
            ProductId(index),
            period,
            MarketRules::intraday_default(),
        ));
    }
    let mut next_id = 1u64;
    let mut live: Vec<Vec<(OrderId, AccountId)>> = vec![Vec::new(); N_PRODUCTS as usize];
    while commands.len() < n_commands {
        let product = rng.random_range(0..N_PRODUCTS);
        let resting = &mut live[product as usize];
        let command = if rng.random_bool(0.3) && !resting.is_empty() {
            let (id, account) = resting.swap_remove(rng.random_range(0..resting.len()));
            BookCommand::Cancel { id, account }
        } else {
            let side = if rng.random_bool(0.5) {
                Side::Buy
            } else {
                Side::Sell
            };
            let offset = rng.random_range(-50i64..50);
            let price = match side {
                Side::Buy => Price(500_000 - 20 + offset),
                Side::Sell => Price(500_000 + 20 + offset),
            };
            let account = AccountId(rng.random_range(0..100));
            let id = OrderId(next_id);
            next_id += 1;
            resting.push((id, account));
            if resting.len() > 4_000 {
                resting.swap_remove(0);
            }
            let qty = Qty(rng.random_range(1..50));
            BookCommand::Submit(NewOrder::limit(id, account, side, price, qty))
        };
        commands.push(EngineCommand::book(now, ProductId(product), command));
    }
    commands
}

fn config(batch_len_max: usize) -> EngineConfig {
    EngineConfig {
        shard: ShardConfig {
            products_max: 64,
            book: BookConfig {
                orders_max: 1 << 16,
                emit_depth: true,
            },
        },
        journal: JournalConfig::default(),
        batch_len_max,
        snapshot_interval: 1_000_000,
        snapshots_kept: 2,
        sync_overlap_len_min: 256,
    }
}

fn report(label: &str, n_commands: usize, seconds: f64, baseline: Option<f64>) -> f64 {
    let rate = n_commands as f64 / seconds;
    let ratio = baseline.map_or(String::new(), |base| {
        format!("  ({:.2}x of apply-only)", rate / base)
    });
    println!(
        "{label:<44} {:>12.0} commands/s  {seconds:>7.3} s{ratio}",
        rate
    );
    rate
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n_commands: usize = args
        .first()
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(2_000_000);
    let mut batches: Vec<usize> = args
        .iter()
        .skip(1)
        .filter_map(|arg| arg.parse().ok())
        .collect();
    if batches.is_empty() {
        batches = vec![256, 1_024, 4_096, 16_384];
    }
    let commands = workload(n_commands);
    println!("workload: {n_commands} commands over {N_PRODUCTS} products (submits and cancels)");

    let mut events = Vec::with_capacity(1 << 20);
    let start = Instant::now();
    let mut state = ShardState::new(config(1).shard);
    for (index, command) in commands.iter().enumerate() {
        state.apply(index as u64 + 1, command, &mut events);
        if events.len() > 1 << 19 {
            events.clear();
        }
    }
    let baseline = report(
        "apply only (no journal)",
        n_commands,
        start.elapsed().as_secs_f64(),
        None,
    );
    let hash = state.state_hash();

    let mut acks = Vec::with_capacity(1 << 16);
    let (mut engine, _) = Engine::open_in_memory(&MemDisk::default(), config(4_096)).expect("open");
    let start = Instant::now();
    for batch in commands.chunks(4_096) {
        events.clear();
        acks.clear();
        engine
            .process_batch(batch, &mut events, &mut acks)
            .expect("process");
    }
    let seconds = start.elapsed().as_secs_f64();
    report(
        "engine, memory journal, batch 4096",
        n_commands,
        seconds,
        Some(baseline),
    );
    assert_eq!(engine.state_hash(), hash, "same state as apply-only");

    for &batch_len in &batches {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut engine, _) = Engine::open(dir.path(), config(batch_len)).expect("open");
        let start = Instant::now();
        for batch in commands.chunks(batch_len) {
            events.clear();
            acks.clear();
            engine
                .process_batch(batch, &mut events, &mut acks)
                .expect("process");
        }
        let seconds = start.elapsed().as_secs_f64();
        let label = format!(
            "engine, file journal, batch {batch_len} ({} fsyncs)",
            n_commands.div_ceil(batch_len)
        );
        report(&label, n_commands, seconds, Some(baseline));
        assert_eq!(engine.state_hash(), hash, "same state as apply-only");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, _) = Engine::open(dir.path(), config(16_384)).expect("open");
    let sequencer = Sequencer::spawn(
        engine,
        SequencerConfig {
            command_queue_len_max: 65_536,
        },
        Box::new(|_committed| {}),
    )
    .expect("spawn");
    let mut client = sequencer.client();
    let start = Instant::now();
    for command in &commands {
        client.submit(command.clone()).expect("submit");
        while client.n_outstanding() > 60_000 {
            client.recv_reply().expect("reply").result.expect("ack");
        }
    }
    while client.n_outstanding() > 0 {
        client.recv_reply().expect("reply").result.expect("ack");
    }
    let seconds = start.elapsed().as_secs_f64();
    report(
        "sequencer thread, file journal, batch<=16384",
        n_commands,
        seconds,
        Some(baseline),
    );
    let engine = sequencer.shutdown().expect("shutdown");
    assert_eq!(engine.state_hash(), hash, "same state as apply-only");
}
