//! Shared test workload: random but reproducible command streams over a few products
//! whose gates close while the stream runs.
#![allow(dead_code)] // each test file uses a different part

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use voltex_engine::journal::JournalConfig;
use voltex_engine::state::ShardConfig;
use voltex_engine::{Ack, Engine, EngineCommand, EngineConfig, EngineEvent, MemDisk};
use voltex_market::book::{BookCommand, BookConfig, NewOrder, StpMode, TimeInForce};
use voltex_market::time::NANOS_PER_SECOND;
use voltex_market::{
    AccountId, DeliveryPeriod, MarketRules, OrderId, PeriodLength, Price, ProductId, Qty, Side,
    UtcNanos,
};

/// Start of the test day (aligned to the hour).
pub const T0: UtcNanos = UtcNanos(1_700_000_000 / 3600 * 3600 * NANOS_PER_SECOND);
pub const N_PRODUCTS: u32 = 4;

/// Rules with a narrow price band so orders meet. The band is exactly 1024 ticks:
/// `OrderBook::check_invariants` (market/src/book/mod.rs, at the time of writing) walks
/// whole 1024-level pages and indexes the level bitmap past its length when the band is
/// not a multiple of 1024 ticks (reported to the book's owner).
pub fn rules() -> MarketRules {
    MarketRules {
        tick: Price(1),
        price_min: Price(4_488),
        price_max: Price(5_511),
        lot_kw: 100,
        qty_max: Qty(50),
        gate_closure_lead_s: 5 * 60,
    }
}

/// Product `index` delivers in hour `index + 1` after `T0`.
pub fn period(index: u32) -> DeliveryPeriod {
    let start = T0.plus_seconds(3600 * (i64::from(index) + 1));
    DeliveryPeriod::new(start, PeriodLength::Minutes60).unwrap()
}

pub fn engine_config(snapshot_interval: u64) -> EngineConfig {
    EngineConfig {
        shard: ShardConfig {
            products_max: 8,
            book: BookConfig {
                orders_max: 256,
                emit_depth: true,
            },
        },
        journal: JournalConfig::default(),
        batch_len_max: 64,
        snapshot_interval,
        snapshots_kept: 2,
        // Small, so the tests' groups exercise the overlapped fsync too.
        sync_overlap_len_min: 8,
    }
}

/// One step of a workload, in a shape proptest can generate and shrink.
#[derive(Clone, Debug)]
pub enum Op {
    /// List product `product % (N_PRODUCTS + 1)` (the extra one is never traded before).
    Add {
        product: u32,
    },
    Submit {
        product: u32,
        id: u64,
        account: u32,
        buy: bool,
        price_offset: i64,
        qty: i64,
        tif: u8,
        post_only: bool,
        peak: Option<i64>,
        stp: u8,
    },
    Cancel {
        product: u32,
        id: u64,
        account: u32,
    },
    Modify {
        product: u32,
        id: u64,
        account: u32,
        price_offset: i64,
        qty: i64,
    },
    Halt {
        product: u32,
    },
    Resume {
        product: u32,
    },
    Close {
        product: u32,
    },
    Advance,
}

/// Turns ops into commands; time advances by `dt_s[i]` seconds before op `i`.
pub fn commands_from_ops(ops: &[(Op, u16)]) -> Vec<EngineCommand> {
    let mut now = T0;
    let mut commands = Vec::with_capacity(ops.len() + N_PRODUCTS as usize);
    for index in 0..N_PRODUCTS {
        commands.push(EngineCommand::add_product(
            now,
            ProductId(index),
            period(index),
            rules(),
        ));
    }
    for (op, dt_s) in ops {
        now = now.plus_seconds(i64::from(*dt_s));
        let book = |product: &u32, command| {
            EngineCommand::book(now, ProductId(product % N_PRODUCTS), command)
        };
        let command = match op {
            Op::Add { product } => EngineCommand::add_product(
                now,
                ProductId(product % (N_PRODUCTS + 1)),
                period(product % (N_PRODUCTS + 1)),
                rules(),
            ),
            Op::Submit {
                product,
                id,
                account,
                buy,
                price_offset,
                qty,
                tif,
                post_only,
                peak,
                stp,
            } => {
                let order = NewOrder {
                    id: OrderId(*id),
                    account: AccountId(*account),
                    side: if *buy { Side::Buy } else { Side::Sell },
                    price: Price(5_000 + price_offset),
                    qty: Qty(*qty),
                    time_in_force: match tif % 4 {
                        0 | 1 => TimeInForce::Gtc,
                        2 => TimeInForce::Ioc,
                        _ => TimeInForce::Fok,
                    },
                    post_only: *post_only,
                    peak: peak.map(Qty),
                    stp: match stp % 4 {
                        0 => StpMode::CancelResting,
                        1 => StpMode::CancelIncoming,
                        2 => StpMode::CancelBoth,
                        _ => StpMode::DecrementBoth,
                    },
                };
                book(product, BookCommand::Submit(order))
            }
            Op::Cancel {
                product,
                id,
                account,
            } => book(
                product,
                BookCommand::Cancel {
                    id: OrderId(*id),
                    account: AccountId(*account),
                },
            ),
            Op::Modify {
                product,
                id,
                account,
                price_offset,
                qty,
            } => book(
                product,
                BookCommand::Modify {
                    id: OrderId(*id),
                    account: AccountId(*account),
                    price: Price(5_000 + price_offset),
                    qty: Qty(*qty),
                },
            ),
            Op::Halt { product } => book(product, BookCommand::Halt),
            Op::Resume { product } => book(product, BookCommand::Resume),
            Op::Close { product } => book(product, BookCommand::Close),
            Op::Advance => EngineCommand::advance_time(now),
        };
        commands.push(command);
    }
    commands
}

/// Ids, accounts and prices are drawn from small ranges so orders collide, trade,
/// self-trade, reuse ids and hit the limits; time steps make gates close mid-stream.
pub fn op_strategy() -> impl Strategy<Value = (Op, u16)> {
    let product = 0u32..N_PRODUCTS + 1;
    let id = 0u64..40;
    let account = 0u32..4;
    let price_offset = prop_oneof![9 => -60i64..60, 1 => -600i64..600];
    let op = prop_oneof![
        1 => product.clone().prop_map(|product| Op::Add { product }),
        12 => (
            product.clone(),
            id.clone(),
            account.clone(),
            any::<bool>(),
            price_offset.clone(),
            -1i64..60,
            any::<u8>(),
            proptest::bool::weighted(0.1),
            proptest::option::weighted(0.15, 0i64..12),
            any::<u8>(),
        )
            .prop_map(
                |(product, id, account, buy, price_offset, qty, tif, post_only, peak, stp)| {
                    Op::Submit {
                        product,
                        id,
                        account,
                        buy,
                        price_offset,
                        qty,
                        tif,
                        post_only,
                        peak,
                        stp,
                    }
                }
            ),
        3 => (product.clone(), id.clone(), account.clone())
            .prop_map(|(product, id, account)| Op::Cancel { product, id, account }),
        3 => (product.clone(), id, account, price_offset, -1i64..60).prop_map(
            |(product, id, account, price_offset, qty)| Op::Modify {
                product,
                id,
                account,
                price_offset,
                qty
            }
        ),
        1 => product.clone().prop_map(|product| Op::Halt { product }),
        1 => product.clone().prop_map(|product| Op::Resume { product }),
        1 => product.prop_map(|product| Op::Close { product }),
        1 => Just(Op::Advance),
    ];
    // Mostly small steps, sometimes a big jump (past a gate).
    let dt_s = prop_oneof![60 => 0u16..30, 1 => 600u16..3_000];
    (op, dt_s)
}

/// A reproducible random command stream of `n_ops` ops after the product listings.
pub fn random_commands(seed: u64, n_ops: usize) -> Vec<EngineCommand> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ops = Vec::with_capacity(n_ops);
    for _ in 0..n_ops {
        let product = rng.random_range(0..N_PRODUCTS + 1);
        let id = rng.random_range(0..60u64);
        let account = rng.random_range(0..4u32);
        let price_offset = if rng.random_bool(0.05) {
            rng.random_range(-600i64..600)
        } else {
            rng.random_range(-60i64..60)
        };
        let op = match rng.random_range(0..22u32) {
            0 => Op::Add { product },
            1..=13 => Op::Submit {
                product,
                id,
                account,
                buy: rng.random_bool(0.5),
                price_offset,
                qty: rng.random_range(-1i64..60),
                tif: rng.random(),
                post_only: rng.random_bool(0.1),
                peak: rng.random_bool(0.15).then(|| rng.random_range(0i64..12)),
                stp: rng.random(),
            },
            14..=16 => Op::Cancel {
                product,
                id,
                account,
            },
            17..=19 => Op::Modify {
                product,
                id,
                account,
                price_offset,
                qty: rng.random_range(-1i64..60),
            },
            20 => match rng.random_range(0..3u32) {
                0 => Op::Halt { product },
                1 => Op::Resume { product },
                _ => Op::Close { product },
            },
            _ => Op::Advance,
        };
        // Over ~n_ops * 4 s on average the stream crosses the first gates.
        let dt_s = if rng.random_bool(0.01) {
            rng.random_range(600..3_000)
        } else {
            rng.random_range(0..8)
        };
        ops.push((op, dt_s));
    }
    commands_from_ops(&ops)
}

/// Splits `commands` into batches of pseudo-random lengths in `1..=len_max`.
pub fn random_batches(
    commands: &[EngineCommand],
    seed: u64,
    len_max: usize,
) -> Vec<&[EngineCommand]> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut batches = Vec::new();
    let mut rest = commands;
    while !rest.is_empty() {
        let len = rng.random_range(1..=len_max).min(rest.len());
        let (batch, tail) = rest.split_at(len);
        batches.push(batch);
        rest = tail;
    }
    batches
}

/// Everything observable from running batches through an engine.
#[derive(Debug, Default, PartialEq)]
pub struct Run {
    pub events: Vec<EngineEvent>,
    pub acks: Vec<Ack>,
}

/// Runs batches, checking invariants and ack/event consistency after each.
pub fn run_batches(engine: &mut Engine, batches: &[&[EngineCommand]]) -> Run {
    let mut run = Run::default();
    for batch in batches {
        let first_ack = run.acks.len();
        let first_event = run.events.len();
        engine
            .process_batch(batch, &mut run.events, &mut run.acks)
            .unwrap();
        engine.state().check_invariants();
        assert_eq!(
            run.acks.len() - first_ack,
            batch.len(),
            "one ack per command"
        );
        check_acks_match_events(&run.acks[first_ack..], &run.events[first_event..]);
    }
    run
}

/// Acks are contiguous in seq, their event ranges tile the events, and every event
/// names the command that caused it.
pub fn check_acks_match_events(acks: &[Ack], events: &[EngineEvent]) {
    let mut event_index = 0usize;
    for pair in acks.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "acks carry consecutive seqs");
        assert_eq!(
            pair[1].first_event_seq, pair[0].end_event_seq,
            "event ranges tile"
        );
    }
    for ack in acks {
        for event_seq in ack.first_event_seq..ack.end_event_seq {
            let event = &events[event_index];
            assert_eq!(event.event_seq, event_seq);
            assert_eq!(event.command_seq, ack.seq);
            event_index += 1;
        }
    }
    assert_eq!(event_index, events.len(), "every event belongs to an ack");
}

/// A fresh in-memory engine that never crashes and never snapshots: the reference.
pub fn reference_engine() -> Engine {
    Engine::open_in_memory(&MemDisk::default(), engine_config(0))
        .unwrap()
        .0
}

/// Asserts a stream exercised what it should: trades, expiries at gate closure, book
/// rejections and engine rejections. Guards the workload against silently going dull.
pub fn assert_workload_is_rich(events: &[EngineEvent]) {
    use voltex_engine::EventKind;
    use voltex_market::book::BookEvent;
    let count = |predicate: &dyn Fn(&EventKind) -> bool| {
        events.iter().filter(|event| predicate(&event.kind)).count()
    };
    let n_trades = count(&|kind| matches!(kind, EventKind::Book(BookEvent::Trade { .. })));
    let n_expired = count(&|kind| matches!(kind, EventKind::Book(BookEvent::Expired { .. })));
    let n_book_rejects = count(&|kind| matches!(kind, EventKind::Book(BookEvent::Rejected { .. })));
    let n_engine_rejects = count(&|kind| matches!(kind, EventKind::Rejected { .. }));
    assert!(n_trades > 0, "workload trades");
    assert!(
        n_expired > 0,
        "workload reaches gate closure with resting orders"
    );
    assert!(n_book_rejects > 0, "workload hits book rejections");
    assert!(n_engine_rejects > 0, "workload hits engine rejections");
}
