//! The day-ahead auction inside the engine: curves are journaled commands, the auction
//! clears when engine time passes its gate, and replay (journal only, snapshot +
//! journal, any batching) gives the same events and the same state hash.

mod common;

use common::{T0, engine_config, random_batches, rules, run_batches};
use proptest::prelude::*;
use voltex_engine::auction::{
    AUCTION_CURVES_PER_PRODUCT_MAX, AUCTION_POINTS_PER_CURVE_MAX, CurveReject,
};
use voltex_engine::{
    CommandKind, Engine, EngineCommand, EngineError, EngineEvent, EventKind, MemDisk,
};
use voltex_market::UtcNanos;
use voltex_market::auction::{CurveKind, CurvePoint};
use voltex_market::{
    AccountId, DeliveryPeriod, MarketRules, PeriodLength, Price, ProductId, Qty, Side,
};

const N_AUCTION_PRODUCTS: u32 = 3;

/// Product `index` delivers 13 + index hours after `T0`: its day-ahead gate is
/// 1 + index hours after `T0`.
fn auction_period(index: u32) -> DeliveryPeriod {
    let start = T0.plus_seconds(3600 * (13 + i64::from(index)));
    DeliveryPeriod::new(start, PeriodLength::Minutes60).unwrap()
}

fn gate_of(index: u32) -> UtcNanos {
    auction_period(index)
        .start()
        .plus_seconds(-MarketRules::day_ahead_default().gate_closure_lead_s)
}

fn listings() -> Vec<EngineCommand> {
    (0..N_AUCTION_PRODUCTS)
        .map(|index| {
            EngineCommand::add_product(T0, ProductId(index), auction_period(index), rules())
        })
        .collect()
}

fn point(price: i64, qty: i64) -> CurvePoint {
    CurvePoint {
        price: Price(price),
        qty: Qty(qty),
    }
}

fn submit(
    now: UtcNanos,
    product: u32,
    account: u32,
    side: Side,
    kind: CurveKind,
    points: Vec<CurvePoint>,
) -> EngineCommand {
    EngineCommand {
        now,
        origin: None,
        kind: CommandKind::SubmitCurve {
            product: ProductId(product),
            account: AccountId(account),
            side,
            kind,
            points,
        },
    }
}

/// The reasons of the curve commands refused, in order.
fn rejection_reasons(events: &[EngineEvent]) -> Vec<CurveReject> {
    events
        .iter()
        .filter_map(|event| match event.kind {
            EventKind::CurveRejected { reason, .. } => Some(reason),
            _ => None,
        })
        .collect()
}

fn engine(snapshot_interval: u64) -> (Engine, MemDisk) {
    let disk = MemDisk::default();
    let engine = Engine::open_in_memory(&disk, engine_config(snapshot_interval))
        .unwrap()
        .0;
    (engine, disk)
}

#[test]
fn two_accounts_clear_at_the_gate_with_price_volume_and_awards() {
    let (mut engine, _disk) = engine(0);
    let mut commands = listings();
    commands.push(submit(
        T0,
        0,
        1,
        Side::Buy,
        CurveKind::Stepwise,
        vec![point(4_000, 20), point(6_000, 10)],
    ));
    commands.push(submit(
        T0,
        0,
        2,
        Side::Sell,
        CurveKind::Stepwise,
        vec![point(3_000, 15), point(5_000, 15)],
    ));
    // Just before the gate nothing clears; at the gate it does.
    commands.push(EngineCommand::advance_time(UtcNanos(gate_of(0).0 - 1)));
    commands.push(EngineCommand::advance_time(gate_of(0)));
    let run = run_batches(&mut engine, &[&commands]);
    let cleared: Vec<_> = run
        .events
        .iter()
        .filter(|event| event.product == ProductId(0))
        .filter_map(|event| match event.kind {
            EventKind::AuctionCleared { .. } | EventKind::AuctionAward { .. } => {
                Some((event.command_seq, event.kind))
            }
            _ => None,
        })
        .collect();
    let gate_seq = commands.len() as u64;
    // D(p) = 30 up to 40.00, 10 up to 60.00; S(p) = 15 from 30.00, 30 from 50.00.
    // The most that trades is 15 (at 30.00..=40.00); only 40.00 carries it with every
    // in-the-money quantity accepted (D(40.01) = 10 <= 15), so the price is 40.00 and
    // the buyer, 20 at the money, is curtailed to 15.
    assert_eq!(
        cleared,
        vec![
            (
                gate_seq,
                EventKind::AuctionCleared {
                    price: Some(Price(4_000)),
                    volume: Qty(15),
                    n_curves: 2
                }
            ),
            (
                gate_seq,
                EventKind::AuctionAward {
                    account: AccountId(1),
                    side: Side::Buy,
                    qty: Qty(15)
                }
            ),
            (
                gate_seq,
                EventKind::AuctionAward {
                    account: AccountId(2),
                    side: Side::Sell,
                    qty: Qty(15)
                }
            ),
        ]
    );
    let auction = engine.state().auction(ProductId(0)).unwrap();
    assert!(!auction.is_open());
    assert_eq!(auction.outcome().unwrap().volume, Qty(15));
}

#[test]
fn a_product_keeps_the_auction_rules_it_was_listed_with_across_recovery() {
    // A market capped at 3,000.00 EUR/MWh whose auction closes 1 h before delivery
    // (the default: -500..4,000 EUR/MWh, 12 h).
    let capped = MarketRules {
        price_max: Price(300_000),
        gate_closure_lead_s: 3600,
        ..MarketRules::day_ahead_default()
    };
    let period = auction_period(0);
    let capped_gate = period.start().plus_seconds(-3600);
    for snapshot_interval in [0, 2] {
        let (mut engine, disk) = engine(snapshot_interval);
        let commands = vec![
            EngineCommand::list_product(T0, ProductId(0), period, rules(), capped.clone()),
            submit(
                T0,
                0,
                1,
                Side::Buy,
                CurveKind::Stepwise,
                vec![point(350_000, 1)],
            ),
            submit(
                T0,
                0,
                1,
                Side::Buy,
                CurveKind::Stepwise,
                vec![point(5_000, 10)],
            ),
            submit(
                T0,
                0,
                2,
                Side::Sell,
                CurveKind::Stepwise,
                vec![point(4_000, 10)],
            ),
            // The default gate: under these rules the auction is still open.
            EngineCommand::advance_time(gate_of(0)),
        ];
        let run = run_batches(&mut engine, &[&commands]);
        assert_eq!(
            rejection_reasons(&run.events),
            vec![CurveReject::PriceOutOfLimits { point_idx: 0 }],
            "3,500 EUR/MWh is legal by default, not under the product's cap"
        );
        assert!(
            !run.events
                .iter()
                .any(|event| matches!(event.kind, EventKind::AuctionCleared { .. })),
            "nothing clears at the default gate"
        );
        let hash = engine.state_hash();
        drop(engine);

        let (mut recovered, _report) =
            Engine::open_in_memory(&disk, engine_config(snapshot_interval)).unwrap();
        assert_eq!(recovered.state_hash(), hash);
        let auction = recovered.state().auction(ProductId(0)).unwrap();
        assert_eq!(auction.rules(), &capped);
        assert!(auction.is_open());
        assert_eq!(auction.gate_closure(), capped_gate);

        let run = run_batches(
            &mut recovered,
            &[&[EngineCommand::advance_time(capped_gate)]],
        );
        let volumes: Vec<Qty> = run
            .events
            .iter()
            .filter_map(|event| match event.kind {
                EventKind::AuctionCleared { volume, .. } => Some(volume),
                _ => None,
            })
            .collect();
        assert_eq!(volumes, vec![Qty(10)], "clears at the product's own gate");
    }

    // Auction rules that contradict themselves list nothing.
    let (mut engine, _disk) = engine(0);
    let inverted = MarketRules {
        price_min: Price(100),
        price_max: Price(0),
        ..MarketRules::day_ahead_default()
    };
    let run = run_batches(
        &mut engine,
        &[&[EngineCommand::list_product(
            T0,
            ProductId(0),
            period,
            rules(),
            inverted,
        )]],
    );
    assert_eq!(
        run.events
            .iter()
            .map(|event| event.kind)
            .collect::<Vec<_>>(),
        vec![EventKind::Rejected {
            reason: voltex_engine::EngineReject::InvalidRules
        }]
    );
    assert!(engine.state().auction(ProductId(0)).is_none());
}

#[test]
fn curve_commands_are_refused_with_typed_reasons() {
    let (mut engine, _disk) = engine(0);
    let mut commands = listings();
    let buy = vec![point(5_000, 10)];
    commands.push(submit(
        T0,
        99,
        1,
        Side::Buy,
        CurveKind::Stepwise,
        buy.clone(),
    ));
    commands.push(submit(
        T0,
        0,
        1,
        Side::Buy,
        CurveKind::Stepwise,
        vec![point(5_000, 1), point(5_000, 1)],
    ));
    commands.push(EngineCommand {
        now: T0,
        origin: None,
        kind: CommandKind::WithdrawCurve {
            product: ProductId(0),
            account: AccountId(1),
            side: Side::Sell,
        },
    });
    commands.push(submit(
        gate_of(0),
        0,
        1,
        Side::Buy,
        CurveKind::Stepwise,
        buy,
    ));
    let run = run_batches(&mut engine, &[&commands]);
    assert_eq!(
        rejection_reasons(&run.events),
        vec![
            CurveReject::UnknownProduct,
            CurveReject::PricesNotIncreasing { point_idx: 1 },
            CurveReject::NoSuchCurve,
            CurveReject::GateClosed,
        ]
    );
    // A product listed after its day-ahead gate holds no auction.
    let late = auction_period(0);
    let late_commands = [
        EngineCommand::add_product(gate_of(0), ProductId(7), late, rules()),
        submit(
            gate_of(0),
            7,
            1,
            Side::Buy,
            CurveKind::Stepwise,
            vec![point(1, 1)],
        ),
    ];
    let run = run_batches(&mut engine, &[&late_commands]);
    assert!(matches!(
        run.events.last().unwrap().kind,
        EventKind::CurveRejected {
            reason: CurveReject::GateClosed,
            ..
        }
    ));
}

#[test]
fn oversized_curve_is_refused_before_the_journal_without_poisoning() {
    let (mut engine, _disk) = engine(0);
    let run = run_batches(&mut engine, &[&listings()]);
    assert!(!run.events.is_empty());
    let too_long = submit(
        T0,
        0,
        1,
        Side::Buy,
        CurveKind::Stepwise,
        (0..=AUCTION_POINTS_PER_CURVE_MAX as i64)
            .map(|index| point(index, 1))
            .collect(),
    );
    let (mut events, mut acks) = (Vec::new(), Vec::new());
    let last_seq = engine.last_seq();
    let error = engine
        .process_batch(&[too_long], &mut events, &mut acks)
        .unwrap_err();
    assert!(matches!(error, EngineError::CommandTooLarge { size, .. }
        if size.len == AUCTION_POINTS_PER_CURVE_MAX + 1 && size.what == "curve points"));
    assert_eq!(engine.last_seq(), last_seq, "nothing journaled");
    let fits = submit(
        T0,
        0,
        1,
        Side::Buy,
        CurveKind::Stepwise,
        (0..AUCTION_POINTS_PER_CURVE_MAX as i64)
            .map(|index| point(index, 1))
            .collect(),
    );
    engine
        .process_batch(&[fits], &mut events, &mut acks)
        .unwrap();
    assert!(matches!(
        events[0].kind,
        EventKind::CurveAccepted { n_points, .. } if n_points as usize == AUCTION_POINTS_PER_CURVE_MAX
    ));
}

#[test]
fn curves_beyond_the_per_product_limit_are_refused() {
    let (mut engine, _disk) = engine(0);
    let mut commands = listings();
    for account in 0..=AUCTION_CURVES_PER_PRODUCT_MAX as u32 {
        commands.push(submit(
            T0,
            0,
            account,
            Side::Buy,
            CurveKind::Stepwise,
            vec![point(100, 1)],
        ));
    }
    // Replacing an existing curve is still allowed at the limit.
    commands.push(submit(
        T0,
        0,
        0,
        Side::Buy,
        CurveKind::Stepwise,
        vec![point(200, 1)],
    ));
    let run = run_batches(&mut engine, &[&commands]);
    let last_two: Vec<_> = run.events.iter().rev().take(2).map(|e| e.kind).collect();
    assert!(matches!(last_two[0], EventKind::CurvePointAccepted { .. }));
    assert!(run.events.iter().any(|event| matches!(
        event.kind,
        EventKind::CurveRejected {
            reason: CurveReject::TooManyCurves,
            ..
        }
    )));
    assert_eq!(
        engine
            .state()
            .auction(ProductId(0))
            .unwrap()
            .curves()
            .count(),
        AUCTION_CURVES_PER_PRODUCT_MAX
    );
}

/// One step of an auction workload.
#[derive(Clone, Debug)]
enum AuctionOp {
    Submit {
        product: u32,
        account: u32,
        buy: bool,
        linear: bool,
        points: Vec<(i64, i64)>,
    },
    Withdraw {
        product: u32,
        account: u32,
        buy: bool,
    },
    Advance,
}

fn auction_op() -> impl Strategy<Value = (AuctionOp, u16)> {
    let product = 0u32..N_AUCTION_PRODUCTS + 1;
    let account = 0u32..5;
    // Prices 40.00..59.95 EUR/MWh, small quantities (some negative, to be refused).
    let points = proptest::collection::vec((-200i64..200, -1i64..20), 0..6);
    let op = prop_oneof![
        8 => (product.clone(), account.clone(), any::<bool>(), any::<bool>(), points)
            .prop_map(|(product, account, buy, linear, points)| AuctionOp::Submit {
                product,
                account,
                buy,
                linear,
                points,
            }),
        2 => (product, account, any::<bool>())
            .prop_map(|(product, account, buy)| AuctionOp::Withdraw { product, account, buy }),
        1 => Just(AuctionOp::Advance),
    ];
    // Small steps, sometimes a jump over a gate (gates are an hour apart).
    let dt_s = prop_oneof![20 => 0u16..120, 1 => 1_800u16..4_000];
    (op, dt_s)
}

/// Product 1's day-ahead auction under its own rules (`ListProduct`): a 0.10 EUR/MWh
/// tick, so about half the generated prices are refused as off its grid, and a gate
/// 11 h before delivery (an hour later than the default's, tying product 2's gate).
fn coarse_rules() -> MarketRules {
    MarketRules {
        tick: Price(10),
        gate_closure_lead_s: 11 * 3600,
        ..MarketRules::day_ahead_default()
    }
}

fn commands_of(ops: &[(AuctionOp, u16)]) -> Vec<EngineCommand> {
    let mut now = T0;
    let mut commands = listings();
    commands[1] =
        EngineCommand::list_product(T0, ProductId(1), auction_period(1), rules(), coarse_rules());
    for (op, dt_s) in ops {
        now = now.plus_seconds(i64::from(*dt_s));
        let side = |buy: bool| if buy { Side::Buy } else { Side::Sell };
        commands.push(match op {
            AuctionOp::Submit {
                product,
                account,
                buy,
                linear,
                points,
            } => {
                // Sorted by price mostly (some duplicates stay, to be refused).
                let mut points = points.clone();
                points.sort_unstable();
                if *linear && !*buy {
                    // Give sell curves a chance to be monotone.
                    let mut total = 0;
                    for point in &mut points {
                        total += point.1.max(0);
                        point.1 = total;
                    }
                }
                let kind = if *linear {
                    CurveKind::PiecewiseLinear
                } else {
                    CurveKind::Stepwise
                };
                let points = points
                    .iter()
                    .map(|(offset, qty)| point(5_000 + offset * 5, *qty))
                    .collect();
                submit(now, *product, *account, side(*buy), kind, points)
            }
            AuctionOp::Withdraw {
                product,
                account,
                buy,
            } => EngineCommand {
                now,
                origin: None,
                kind: CommandKind::WithdrawCurve {
                    product: ProductId(*product),
                    account: AccountId(*account),
                    side: side(*buy),
                },
            },
            AuctionOp::Advance => EngineCommand::advance_time(now),
        });
    }
    // Finish past every gate, so every auction clears.
    commands.push(EngineCommand::advance_time(gate_of(N_AUCTION_PRODUCTS)));
    commands
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Same curve commands → same events, acks and state hash for any batching and
    /// snapshot interval, and after recovery from the journal alone or a snapshot plus
    /// the journal; every auction clears exactly once.
    #[test]
    fn auction_replay_gives_identical_events_and_state_hash(
        ops in proptest::collection::vec(auction_op(), 1..120),
        batch_len in 1usize..30,
        snapshot_interval in 1u64..40,
        batch_seed in any::<u64>(),
    ) {
        let commands = commands_of(&ops);
        let (mut engine_a, disk_a) = engine(0);
        let batches: Vec<&[EngineCommand]> = commands.chunks(batch_len).collect();
        let run_a = run_batches(&mut engine_a, &batches);
        let (mut engine_b, disk_b) = engine(snapshot_interval);
        let run_b = run_batches(&mut engine_b, &random_batches(&commands, batch_seed, 25));
        prop_assert_eq!(&run_a.events, &run_b.events);
        prop_assert_eq!(&run_a.acks, &run_b.acks);
        prop_assert_eq!(engine_a.state_hash(), engine_b.state_hash());
        let n_cleared = run_a
            .events
            .iter()
            .filter(|event| matches!(event.kind, EventKind::AuctionCleared { .. }))
            .count();
        prop_assert_eq!(n_cleared, N_AUCTION_PRODUCTS as usize);

        let hash = engine_a.state_hash();
        drop(engine_a);
        drop(engine_b);
        let (recovered_a, report_a) = Engine::open_in_memory(&disk_a, engine_config(0)).unwrap();
        prop_assert_eq!(report_a.snapshot_seq, None);
        prop_assert_eq!(recovered_a.state_hash(), hash);
        let (recovered_b, _) =
            Engine::open_in_memory(&disk_b, engine_config(snapshot_interval)).unwrap();
        prop_assert_eq!(recovered_b.state_hash(), hash);
        recovered_b.state().check_invariants();
    }
}

/// Guards the property test's workload against going dull: over a few generated
/// streams some auctions trade, some curves are replaced, withdrawn and refused.
#[test]
fn the_generated_auction_workload_is_rich() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = proptest::collection::vec(auction_op(), 60..120);
    let (mut n_traded, mut n_replaced, mut n_withdrawn, mut n_refused) = (0, 0, 0, 0);
    let mut n_off_coarse_tick = 0;
    for _ in 0..16 {
        let ops = strategy.new_tree(&mut runner).unwrap().current();
        let commands = commands_of(&ops);
        let (mut engine, _disk) = engine(0);
        let run = run_batches(&mut engine, &[&commands]);
        for event in &run.events {
            match event.kind {
                EventKind::AuctionCleared { volume, .. } if volume > Qty::ZERO => n_traded += 1,
                EventKind::CurveAccepted { replaced: true, .. } => n_replaced += 1,
                EventKind::CurveWithdrawn { .. } => n_withdrawn += 1,
                EventKind::CurveRejected { reason, .. } => {
                    n_refused += 1;
                    if matches!(reason, CurveReject::PriceOffTick { .. }) {
                        assert_eq!(event.product, ProductId(1), "only product 1 has 0.10 ticks");
                        n_off_coarse_tick += 1;
                    }
                }
                _ => {}
            }
        }
    }
    assert!(n_traded > 0, "some auctions trade");
    assert!(n_replaced > 0, "some curves are replaced");
    assert!(n_withdrawn > 0, "some curves are withdrawn");
    assert!(n_refused > 0, "some curve commands are refused");
    assert!(
        n_off_coarse_tick > 0,
        "product 1 refuses prices off its own tick"
    );
}
