//! The journal part of `voltex bench book`: the exchange-core workload through the
//! engine with its file journal and group commit, and through the threaded sequencer.
//!
//! Three measurements on the same commands, in the same run:
//! 1. `Engine::process_batch` over an in-memory journal (same encoding and checksums,
//!    no disk): the baseline;
//! 2. the same over the file journal (one write + one `sync_data` per group of
//!    `batch_len_max` commands);
//! 3. the `Sequencer` thread fed by a pipelining client, with the submit → ack latency
//!    of every command.
//!
//! After (2) and (3) the journal directory is reopened and recovered; the recovered
//! state must hold every acknowledged command and hash equal to the live state — a
//! durability check, so a failure is an error, never a timing.

// Benchmarks measure wall time: the one place the clock seam is crossed on purpose.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use hdrhistogram::Histogram;
use voltex::workload::{WorkloadKind, generate};
use voltex_engine::{
    Engine, EngineCommand, EngineConfig, MemDisk, Sequencer, SequencerConfig, ShardConfig,
};
use voltex_market::time::NANOS_PER_SECOND;
use voltex_market::{DeliveryPeriod, MarketRules, PeriodLength, ProductId, UtcNanos};

/// Commands in flight from the pipelining client of the sequencer pass.
const CLIENT_WINDOW: usize = 65_536;
/// Commands sent one at a time (wait for each ack) to show the latency of a lone command.
const N_LONE_COMMANDS: usize = 200;

fn engine_config(batch_len_max: usize) -> EngineConfig {
    let kind = WorkloadKind::ExchangeCore;
    EngineConfig {
        shard: ShardConfig {
            products_max: 4,
            book: kind.book_config(),
        },
        batch_len_max,
        snapshot_interval: 0,
        ..EngineConfig::default()
    }
}

/// The workload as engine commands: one product far from gate closure, virtual time
/// advancing 1 µs per command.
fn engine_commands(n_ops: usize, seed: u64) -> Result<Vec<EngineCommand>> {
    let workload = generate(WorkloadKind::ExchangeCore, n_ops, seed);
    let product = ProductId(1);
    let delivery = UtcNanos(900_000 * NANOS_PER_SECOND);
    let period = DeliveryPeriod::new(delivery, PeriodLength::Minutes15)?;
    let mut commands = Vec::with_capacity(1 + workload.warmup.len() + workload.commands.len());
    commands.push(EngineCommand::add_product(
        UtcNanos(0),
        product,
        period,
        MarketRules::intraday_default(),
    ));
    let book_commands = workload
        .warmup
        .iter()
        .chain(workload.commands.iter().map(|(_, c)| c));
    for (n, command) in book_commands.enumerate() {
        commands.push(EngineCommand::book(
            UtcNanos(1_000 * (n as i64 + 1)),
            product,
            *command,
        ));
    }
    Ok(commands)
}

/// Feeds the engine one group commit at a time, as the sequencer does, consuming the
/// events and acks of each group before the next. Returns the number acknowledged.
fn process_in_groups(
    engine: &mut Engine,
    commands: &[EngineCommand],
    group_len: usize,
) -> Result<usize> {
    let (mut events, mut acks) = (
        Vec::with_capacity(4 * group_len),
        Vec::with_capacity(group_len),
    );
    let mut n_acked = 0;
    for group in commands.chunks(group_len) {
        engine.process_batch(group, &mut events, &mut acks)?;
        n_acked += acks.len();
        events.clear();
        acks.clear();
    }
    Ok(n_acked)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs the journal measurements and prints their table.
pub fn run(n_ops: usize, n_runs: usize, seed: u64) -> Result<()> {
    let commands = engine_commands(n_ops, seed)?;
    let n_commands = commands.len();
    let batch_len_max = 16_384;
    println!();
    println!(
        "sequencer + journal: {n_commands} commands (exchange-core mix incl. warm-up), group commit up to {batch_len_max} commands per fsync"
    );

    let (mut memory_rates, mut file_rates) = (Vec::new(), Vec::new());
    let mut journal_bytes = 0u64;
    for _ in 0..n_runs {
        let disk = MemDisk::default();
        let (mut engine, _) = Engine::open_in_memory(&disk, engine_config(batch_len_max))?;
        let started = Instant::now();
        let n_acked = process_in_groups(&mut engine, &commands, batch_len_max)?;
        memory_rates.push(n_commands as f64 / started.elapsed().as_secs_f64() / 1e6);
        ensure!(
            n_acked == n_commands,
            "in-memory engine acknowledged {n_acked} of {n_commands}"
        );

        let dir = tempfile::tempdir().context("temporary journal directory")?;
        let (mut engine, _) = Engine::open(dir.path(), engine_config(batch_len_max))?;
        let started = Instant::now();
        let n_acked = process_in_groups(&mut engine, &commands, batch_len_max)?;
        file_rates.push(n_commands as f64 / started.elapsed().as_secs_f64() / 1e6);
        let live_hash = engine.state_hash();
        drop(engine);
        journal_bytes =
            std::fs::metadata(dir.path().join(voltex_engine::engine::JOURNAL_FILE_NAME))?.len();
        let (recovered, report) = Engine::open(dir.path(), engine_config(batch_len_max))?;
        ensure!(
            report.last_seq == n_acked as u64,
            "recovered {} of {n_acked} acknowledged commands",
            report.last_seq
        );
        ensure!(
            recovered.state_hash() == live_hash,
            "recovered state differs from the live state"
        );
    }
    let (memory, file) = (median(memory_rates), median(file_rates));
    println!("  engine, in-memory journal:        {memory:.2} M commands/s (median of {n_runs})");
    println!(
        "  engine, file journal + fsync:     {file:.2} M commands/s (median of {n_runs}), {:.2}x of in-memory, {:.0} bytes/command",
        file / memory,
        journal_bytes as f64 / n_commands as f64
    );
    println!("  recovery after each run: every acknowledged command present, state hash equal");

    // The threaded sequencer with a pipelining client: submit → ack latency per command.
    let dir = tempfile::tempdir().context("temporary journal directory")?;
    let (engine, _) = Engine::open(dir.path(), engine_config(batch_len_max))?;
    let sequencer = Sequencer::spawn(
        engine,
        SequencerConfig::default(),
        Box::new(|_committed| {}),
    )?;
    let mut client = sequencer.client();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut submitted_at: Vec<Instant> = Vec::with_capacity(n_commands);
    let mut n_acked = 0usize;
    let started = Instant::now();
    for command in &commands {
        if submitted_at.len() - n_acked >= CLIENT_WINDOW {
            let reply = client.recv_reply()?;
            reply.result?;
            latency
                .saturating_record(submitted_at[reply.token as usize].elapsed().as_nanos() as u64);
            n_acked += 1;
        }
        let token = client.submit(command.clone())?;
        if token as usize != submitted_at.len() {
            bail!("sequencer token {token} out of order");
        }
        submitted_at.push(Instant::now());
    }
    while n_acked < n_commands {
        let reply = client.recv_reply()?;
        reply.result?;
        latency.saturating_record(submitted_at[reply.token as usize].elapsed().as_nanos() as u64);
        n_acked += 1;
    }
    let elapsed = started.elapsed();
    let engine = sequencer.shutdown()?;
    let live_hash = engine.state_hash();
    drop(engine);
    let (recovered, report) = Engine::open(dir.path(), engine_config(batch_len_max))?;
    ensure!(
        report.last_seq == n_acked as u64,
        "recovered {} of {n_acked} acknowledged commands",
        report.last_seq
    );
    ensure!(
        recovered.state_hash() == live_hash,
        "recovered state differs from the live state"
    );
    println!(
        "  sequencer thread, file journal:   {:.2} M commands/s sustained, {} in flight; submit→ack latency µs p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}",
        n_commands as f64 / elapsed.as_secs_f64() / 1e6,
        CLIENT_WINDOW,
        latency.value_at_quantile(0.50) as f64 / 1e3,
        latency.value_at_quantile(0.90) as f64 / 1e3,
        latency.value_at_quantile(0.99) as f64 / 1e3,
        latency.value_at_quantile(0.999) as f64 / 1e3,
        latency.max() as f64 / 1e3,
    );
    println!(
        "  recovery after the sequencer run: all {n_acked} acknowledged commands present, state hash equal"
    );

    // A lone client waiting for each ack: the durable-ack latency of an idle system
    // (one fsync per command, nothing to share it with).
    let dir = tempfile::tempdir().context("temporary journal directory")?;
    let (engine, _) = Engine::open(dir.path(), engine_config(batch_len_max))?;
    let sequencer = Sequencer::spawn(
        engine,
        SequencerConfig::default(),
        Box::new(|_committed| {}),
    )?;
    let mut client = sequencer.client();
    let mut lone = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    for command in commands.iter().take(N_LONE_COMMANDS) {
        let started = Instant::now();
        client.call(command.clone())?;
        lone.saturating_record(started.elapsed().as_nanos() as u64);
    }
    sequencer.shutdown()?;
    println!(
        "  lone client, one command at a time ({} commands): ack latency µs p50 {:.1} p99 {:.1} max {:.1} (one fsync each)",
        lone.len(),
        lone.value_at_quantile(0.50) as f64 / 1e3,
        lone.value_at_quantile(0.99) as f64 / 1e3,
        lone.max() as f64 / 1e3,
    );
    Ok(())
}
