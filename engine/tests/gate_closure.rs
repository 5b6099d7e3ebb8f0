//! Gate closure is the sequencer's job: books close by time, with or without traffic,
//! and resting orders expire. Also the engine-level rejections.

mod common;

use common::{T0, engine_config, period, rules};
use voltex_engine::{Ack, Engine, EngineCommand, EngineEvent, EngineReject, EventKind, MemDisk};
use voltex_market::book::{BookCommand, BookEvent, NewOrder, Phase, RejectReason};
use voltex_market::{AccountId, OrderId, Price, ProductId, Qty, Side, UtcNanos};

fn engine() -> Engine {
    Engine::open_in_memory(&MemDisk::default(), engine_config(0))
        .unwrap()
        .0
}

fn process(engine: &mut Engine, commands: &[EngineCommand]) -> (Vec<EngineEvent>, Vec<Ack>) {
    let (mut events, mut acks) = (Vec::new(), Vec::new());
    engine
        .process_batch(commands, &mut events, &mut acks)
        .unwrap();
    engine.state().check_invariants();
    (events, acks)
}

fn book_events(events: &[EngineEvent], product: ProductId) -> Vec<BookEvent> {
    events
        .iter()
        .filter(|event| event.product == product)
        .filter_map(|event| match event.kind {
            EventKind::Book(book_event) => Some(book_event),
            _ => None,
        })
        .collect()
}

fn gate_of(index: u32) -> UtcNanos {
    period(index)
        .start()
        .plus_seconds(-rules().gate_closure_lead_s)
}

fn submit(now: UtcNanos, product: u32, id: u64, side: Side, price: i64) -> EngineCommand {
    let order = NewOrder::limit(OrderId(id), AccountId(1), side, Price(price), Qty(3));
    EngineCommand::book(now, ProductId(product), BookCommand::Submit(order))
}

fn listed(engine: &mut Engine, n_products: u32) {
    let adds: Vec<EngineCommand> = (0..n_products)
        .map(|index| EngineCommand::add_product(T0, ProductId(index), period(index), rules()))
        .collect();
    let (events, _) = process(engine, &adds);
    assert!(
        events
            .iter()
            .all(|event| matches!(event.kind, EventKind::ProductAdded { .. }))
    );
}

#[test]
fn advance_time_past_gate_expires_resting_orders_without_traffic() {
    let mut engine = engine();
    listed(&mut engine, 2);
    process(
        &mut engine,
        &[
            submit(T0, 0, 1, Side::Buy, 4_990),
            submit(T0, 0, 2, Side::Sell, 5_010),
        ],
    );
    // One nanosecond before the gate nothing happens.
    let just_before = UtcNanos(gate_of(0).0 - 1);
    let (events, _) = process(&mut engine, &[EngineCommand::advance_time(just_before)]);
    assert!(events.is_empty());
    assert_eq!(
        engine.state().book(ProductId(0)).unwrap().phase(),
        Phase::Open
    );

    // At the gate (now >= start - lead) the book closes and its orders expire.
    let (events, acks) = process(&mut engine, &[EngineCommand::advance_time(gate_of(0))]);
    let expired: Vec<OrderId> = book_events(&events, ProductId(0))
        .iter()
        .filter_map(|event| match event {
            BookEvent::Expired { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(
        expired,
        vec![OrderId(1), OrderId(2)],
        "both resting orders expired"
    );
    assert_eq!(
        book_events(&events, ProductId(0)).last(),
        Some(&BookEvent::PhaseChanged {
            phase: Phase::Closed
        })
    );
    assert!(
        events
            .iter()
            .all(|event| event.command_seq == acks[0].seq && event.now == gate_of(0))
    );
    assert_eq!(
        engine.state().book(ProductId(0)).unwrap().phase(),
        Phase::Closed
    );
    assert_eq!(
        engine.state().book(ProductId(0)).unwrap().ledger().expired,
        6
    );
    // The other product's gate is an hour later: still open.
    assert_eq!(
        engine.state().book(ProductId(1)).unwrap().phase(),
        Phase::Open
    );
}

#[test]
fn late_command_closes_its_book_first_then_is_rejected_as_closed() {
    let mut engine = engine();
    listed(&mut engine, 1);
    process(&mut engine, &[submit(T0, 0, 1, Side::Buy, 4_990)]);
    let late = gate_of(0).plus_seconds(1);
    let (events, _) = process(&mut engine, &[submit(late, 0, 2, Side::Sell, 4_990)]);
    let book = book_events(&events, ProductId(0));
    let expired_at = book
        .iter()
        .position(|event| matches!(event, BookEvent::Expired { id: OrderId(1), .. }));
    let rejected_at = book.iter().position(|event| {
        *event
            == BookEvent::Rejected {
                id: OrderId(2),
                reason: RejectReason::Closed,
            }
    });
    let (Some(expired_at), Some(rejected_at)) = (expired_at, rejected_at) else {
        panic!("expected expiry then rejection, got {book:?}");
    };
    assert!(
        expired_at < rejected_at,
        "closure comes before the late command"
    );
    assert!(
        !book
            .iter()
            .any(|event| matches!(event, BookEvent::Trade { .. })),
        "no late trade"
    );
}

#[test]
fn traffic_on_one_product_closes_every_due_book_in_gate_order() {
    let mut engine = engine();
    listed(&mut engine, 3);
    process(
        &mut engine,
        &[
            submit(T0, 0, 1, Side::Buy, 4_990),
            submit(T0, 1, 1, Side::Buy, 4_990),
        ],
    );
    // A command for product 2 arrives after the gates of products 0 and 1.
    let now = gate_of(1);
    let (events, _) = process(&mut engine, &[submit(now, 2, 7, Side::Sell, 5_020)]);
    let order: Vec<ProductId> = events.iter().map(|event| event.product).collect();
    let first_of = |product| order.iter().position(|p| *p == ProductId(product)).unwrap();
    assert!(
        first_of(0) < first_of(1) && first_of(1) < first_of(2),
        "gate order: {order:?}"
    );
    for product in [0, 1] {
        assert_eq!(
            engine.state().book(ProductId(product)).unwrap().phase(),
            Phase::Closed
        );
        assert!(
            book_events(&events, ProductId(product)).contains(&BookEvent::Expired {
                id: OrderId(1),
                qty: Qty(3)
            })
        );
    }
    assert_eq!(
        engine.state().book(ProductId(2)).unwrap().phase(),
        Phase::Open
    );
    assert_eq!(engine.state().book(ProductId(2)).unwrap().n_resting(), 1);
}

#[test]
fn engine_rejects_unknown_duplicate_late_and_excess_products() {
    let mut engine = engine();
    listed(&mut engine, 1);
    let products_max = engine_config(0).shard.products_max as u32;
    let mut commands = vec![
        EngineCommand::add_product(T0, ProductId(0), period(0), rules()),
        submit(T0, 99, 1, Side::Buy, 5_000),
    ];
    let mut bad_rules = rules();
    bad_rules.price_min = Price(6_000);
    commands.push(EngineCommand::add_product(
        T0,
        ProductId(50),
        period(2),
        bad_rules,
    ));
    commands.push(EngineCommand::add_product(
        gate_of(3),
        ProductId(51),
        period(3),
        rules(),
    ));
    for index in 1..products_max {
        commands.push(EngineCommand::add_product(
            T0,
            ProductId(100 + index),
            period(5),
            rules(),
        ));
    }
    commands.push(EngineCommand::add_product(
        T0,
        ProductId(200),
        period(5),
        rules(),
    ));
    let (events, acks) = process(&mut engine, &commands);
    // The engine's own rejection among the command's events (a late command's events
    // start with the closures its time caused).
    let rejection = |ack: &Ack| {
        let mut own = events
            .iter()
            .filter(|event| (ack.first_event_seq..ack.end_event_seq).contains(&event.event_seq));
        own.find_map(|event| match event.kind {
            EventKind::Rejected { reason } => Some(reason),
            _ => None,
        })
    };
    assert_eq!(rejection(&acks[0]), Some(EngineReject::DuplicateProduct));
    assert_eq!(rejection(&acks[1]), Some(EngineReject::UnknownProduct));
    assert_eq!(rejection(&acks[2]), Some(EngineReject::InvalidRules));
    assert_eq!(rejection(&acks[3]), Some(EngineReject::GateClosurePassed));
    assert!(
        acks[4..acks.len() - 1]
            .iter()
            .all(|ack| rejection(ack).is_none())
    );
    assert_eq!(
        rejection(acks.last().unwrap()),
        Some(EngineReject::ShardFull)
    );
    assert_eq!(engine.state().n_products(), products_max as usize);
}

#[test]
fn engine_time_never_runs_backwards() {
    let mut engine = engine();
    listed(&mut engine, 1);
    let later = T0.plus_seconds(100);
    process(&mut engine, &[EngineCommand::advance_time(later)]);
    let (events, _) = process(&mut engine, &[submit(T0, 0, 1, Side::Buy, 5_000)]);
    assert_eq!(engine.state().now(), later);
    assert!(
        events.iter().all(|event| event.now == later),
        "events carry engine time"
    );
}

#[test]
fn closing_by_hand_before_the_gate_is_not_repeated_at_the_gate() {
    let mut engine = engine();
    listed(&mut engine, 1);
    process(
        &mut engine,
        &[EngineCommand::book(T0, ProductId(0), BookCommand::Close)],
    );
    assert_eq!(
        engine.state().book(ProductId(0)).unwrap().phase(),
        Phase::Closed
    );
    let (events, _) = process(&mut engine, &[EngineCommand::advance_time(gate_of(0))]);
    assert!(events.is_empty(), "no second closure: {events:?}");
}
