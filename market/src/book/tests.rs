//! Tests of the order book: one per order type and rule, one per reject reason, and
//! property tests of the invariants listed in the module docs, including a
//! differential test against the `BTreeMap` reference book.

use super::reference::ReferenceBook;
use super::*;
use proptest::prelude::*;

const ALICE: AccountId = AccountId(1);
const BOB: AccountId = AccountId(2);

fn book() -> OrderBook {
    OrderBook::new(MarketRules::intraday_default(), BookConfig::default()).unwrap()
}

fn limit(id: u64, account: AccountId, side: Side, price: i64, qty: i64) -> NewOrder {
    NewOrder::limit(OrderId(id), account, side, Price(price), Qty(qty))
}

fn run(book: &mut OrderBook, command: BookCommand) -> Vec<BookEvent> {
    let mut events = Vec::new();
    book.apply(&command, &mut events);
    book.check_invariants();
    events
}

fn submit(book: &mut OrderBook, order: NewOrder) -> Vec<BookEvent> {
    run(book, BookCommand::Submit(order))
}

fn trades(events: &[BookEvent]) -> Vec<(OrderId, OrderId, Price, Qty)> {
    events
        .iter()
        .filter_map(|event| match *event {
            BookEvent::Trade {
                aggressor,
                resting,
                price,
                qty,
                ..
            } => Some((aggressor, resting, price, qty)),
            _ => None,
        })
        .collect()
}

fn rejection(events: &[BookEvent]) -> Option<RejectReason> {
    match events {
        [BookEvent::Rejected { reason, .. }] => Some(*reason),
        _ => None,
    }
}

#[test]
fn limit_order_rests_then_trades_at_resting_price() {
    let mut book = book();
    submit(&mut book, limit(1, ALICE, Side::Sell, 5000, 10));
    let events = submit(&mut book, limit(2, BOB, Side::Buy, 5100, 4));
    assert_eq!(
        trades(&events),
        vec![(OrderId(2), OrderId(1), Price(5000), Qty(4))]
    );
    assert_eq!(
        book.bbo(),
        Bbo {
            bid: None,
            ask: Some((Price(5000), Qty(6)))
        }
    );
}

#[test]
fn price_then_time_priority() {
    let mut book = book();
    submit(&mut book, limit(1, ALICE, Side::Sell, 5001, 5));
    submit(&mut book, limit(2, ALICE, Side::Sell, 5000, 5));
    submit(&mut book, limit(3, AccountId(3), Side::Sell, 5000, 5));
    let events = submit(&mut book, limit(4, BOB, Side::Buy, 5001, 12));
    let resting: Vec<_> = trades(&events).iter().map(|t| t.1).collect();
    assert_eq!(resting, vec![OrderId(2), OrderId(3), OrderId(1)]);
    assert_eq!(book.order(OrderId(1)).unwrap().visible, Qty(3));
}

#[test]
fn ioc_remainder_is_cancelled() {
    let mut book = book();
    submit(&mut book, limit(1, ALICE, Side::Sell, 5000, 3));
    let mut ioc = limit(2, BOB, Side::Buy, 5000, 5);
    ioc.time_in_force = TimeInForce::Ioc;
    let events = submit(&mut book, ioc);
    assert_eq!(trades(&events).len(), 1);
    assert_eq!(
        events.last(),
        Some(&BookEvent::Cancelled {
            id: OrderId(2),
            qty: Qty(2),
            reason: CancelReason::IocRemainder
        })
    );
    assert_eq!(book.n_resting(), 0);
}

#[test]
fn fok_fills_all_or_nothing() {
    let mut book = book();
    submit(&mut book, limit(1, ALICE, Side::Sell, 5000, 3));
    submit(&mut book, limit(2, ALICE, Side::Sell, 5200, 3));
    let mut fok = limit(3, BOB, Side::Buy, 5100, 4);
    fok.time_in_force = TimeInForce::Fok;
    let events = submit(&mut book, fok);
    assert!(trades(&events).is_empty());
    assert!(matches!(
        events.last(),
        Some(BookEvent::Cancelled {
            reason: CancelReason::FokNotFilled,
            qty: Qty(4),
            ..
        })
    ));
    assert_eq!(
        book.n_resting(),
        2,
        "a killed FOK leaves the book untouched"
    );
    fok.id = OrderId(4);
    fok.price = Price(5200);
    let events = submit(&mut book, fok);
    let filled: i64 = trades(&events).iter().map(|t| t.3.0).sum();
    assert_eq!(filled, 4);
}

#[test]
fn fok_counts_iceberg_hidden_quantity() {
    let mut book = book();
    let mut iceberg = limit(1, ALICE, Side::Sell, 5000, 10);
    iceberg.peak = Some(Qty(2));
    submit(&mut book, iceberg);
    let mut fok = limit(2, BOB, Side::Buy, 5000, 9);
    fok.time_in_force = TimeInForce::Fok;
    let events = submit(&mut book, fok);
    assert_eq!(trades(&events).iter().map(|t| t.3.0).sum::<i64>(), 9);
    assert_eq!(book.order(OrderId(1)).unwrap().visible, Qty(1));
}

#[test]
fn post_only_rests_or_is_rejected() {
    let mut book = book();
    submit(&mut book, limit(1, ALICE, Side::Sell, 5000, 3));
    let mut post = limit(2, BOB, Side::Buy, 5000, 1);
    post.post_only = true;
    assert_eq!(
        rejection(&submit(&mut book, post)),
        Some(RejectReason::PostOnlyWouldCross)
    );
    post.price = Price(4999);
    assert!(matches!(
        submit(&mut book, post)[0],
        BookEvent::Accepted { .. }
    ));
    assert_eq!(book.bbo().bid, Some((Price(4999), Qty(1))));
    let modify = BookCommand::Modify {
        id: OrderId(2),
        account: BOB,
        price: Price(5000),
        qty: Qty(1),
    };
    assert_eq!(
        rejection(&run(&mut book, modify)),
        Some(RejectReason::PostOnlyWouldCross)
    );
}

#[test]
fn iceberg_shows_peak_and_refresh_loses_priority() {
    let mut book = book();
    let mut iceberg = limit(1, ALICE, Side::Sell, 5000, 10);
    iceberg.peak = Some(Qty(4));
    submit(&mut book, iceberg);
    submit(&mut book, limit(2, AccountId(3), Side::Sell, 5000, 5));
    assert_eq!(
        book.bbo().ask,
        Some((Price(5000), Qty(9))),
        "only the peak is visible"
    );
    let events = submit(&mut book, limit(3, BOB, Side::Buy, 5000, 4));
    assert!(events.iter().any(|e| matches!(
        e,
        BookEvent::Restated {
            id: OrderId(1),
            reason: RestateReason::IcebergRefresh,
            ..
        }
    )));
    // The refreshed peak went behind order 2.
    let events = submit(&mut book, limit(4, BOB, Side::Buy, 5000, 5));
    assert_eq!(
        trades(&events),
        vec![(OrderId(4), OrderId(2), Price(5000), Qty(5))]
    );
    let left = book.order(OrderId(1)).unwrap();
    assert_eq!((left.visible, left.hidden), (Qty(4), Qty(2)));
}

#[test]
fn iceberg_aggressor_can_trade_its_whole_quantity() {
    let mut book = book();
    submit(&mut book, limit(1, ALICE, Side::Sell, 5000, 7));
    let mut iceberg = limit(2, BOB, Side::Buy, 5000, 10);
    iceberg.peak = Some(Qty(2));
    let events = submit(&mut book, iceberg);
    assert_eq!(trades(&events)[0].3, Qty(7));
    let rest = book.order(OrderId(2)).unwrap();
    assert_eq!((rest.visible, rest.hidden), (Qty(2), Qty(1)));
}

#[test]
fn cancel_removes_and_reports_remaining() {
    let mut book = book();
    submit(&mut book, limit(1, ALICE, Side::Buy, 5000, 3));
    let events = run(
        &mut book,
        BookCommand::Cancel {
            id: OrderId(1),
            account: ALICE,
        },
    );
    assert_eq!(
        events[0],
        BookEvent::Cancelled {
            id: OrderId(1),
            qty: Qty(3),
            reason: CancelReason::Requested
        }
    );
    assert_eq!(book.n_resting(), 0);
}

#[test]
fn modify_down_keeps_priority_anything_else_loses_it() {
    let mut book = book();
    submit(&mut book, limit(1, ALICE, Side::Sell, 5000, 5));
    submit(&mut book, limit(2, AccountId(3), Side::Sell, 5000, 5));
    let down = BookCommand::Modify {
        id: OrderId(1),
        account: ALICE,
        price: Price(5000),
        qty: Qty(3),
    };
    let events = run(&mut book, down);
    assert!(matches!(
        events[0],
        BookEvent::Restated {
            reason: RestateReason::ReducedKeepsPriority,
            ..
        }
    ));
    let events = submit(&mut book, limit(3, BOB, Side::Buy, 5000, 1));
    assert_eq!(
        trades(&events)[0].1,
        OrderId(1),
        "reduced order kept its place"
    );
    let up = BookCommand::Modify {
        id: OrderId(1),
        account: ALICE,
        price: Price(5000),
        qty: Qty(4),
    };
    let events = run(&mut book, up);
    assert!(matches!(
        events[0],
        BookEvent::Restated {
            reason: RestateReason::ModifiedLosesPriority,
            ..
        }
    ));
    let events = submit(&mut book, limit(4, BOB, Side::Buy, 5000, 1));
    assert_eq!(
        trades(&events)[0].1,
        OrderId(2),
        "increased order went to the back"
    );
}

#[test]
fn modify_to_crossing_price_trades() {
    let mut book = book();
    submit(&mut book, limit(1, ALICE, Side::Sell, 5000, 5));
    submit(&mut book, limit(2, BOB, Side::Buy, 4900, 5));
    let events = run(
        &mut book,
        BookCommand::Modify {
            id: OrderId(2),
            account: BOB,
            price: Price(5000),
            qty: Qty(2),
        },
    );
    assert_eq!(
        trades(&events),
        vec![(OrderId(2), OrderId(1), Price(5000), Qty(2))]
    );
    assert_eq!(book.n_resting(), 1);
}

fn stp_order(id: u64, mode: StpMode, qty: i64) -> NewOrder {
    let mut order = limit(id, ALICE, Side::Buy, 5000, qty);
    order.stp = mode;
    order
}

#[test]
fn stp_cancel_resting_keeps_matching_others() {
    let mut book = book();
    submit(&mut book, limit(1, ALICE, Side::Sell, 5000, 2));
    submit(&mut book, limit(2, BOB, Side::Sell, 5000, 2));
    let events = submit(&mut book, stp_order(3, StpMode::CancelResting, 3));
    assert!(events.contains(&BookEvent::Cancelled {
        id: OrderId(1),
        qty: Qty(2),
        reason: CancelReason::SelfTrade
    }));
    assert_eq!(
        trades(&events),
        vec![(OrderId(3), OrderId(2), Price(5000), Qty(2))]
    );
    assert_eq!(book.bbo().bid, Some((Price(5000), Qty(1))));
}

#[test]
fn stp_cancel_incoming_leaves_resting() {
    let mut book = book();
    submit(&mut book, limit(1, ALICE, Side::Sell, 5000, 2));
    let events = submit(&mut book, stp_order(2, StpMode::CancelIncoming, 3));
    assert_eq!(
        events.last(),
        Some(&BookEvent::Cancelled {
            id: OrderId(2),
            qty: Qty(3),
            reason: CancelReason::SelfTrade
        })
    );
    assert_eq!(book.n_resting(), 1);
    assert!(book.order(OrderId(1)).is_some());
}

#[test]
fn stp_cancel_both() {
    let mut book = book();
    submit(&mut book, limit(1, ALICE, Side::Sell, 5000, 2));
    let events = submit(&mut book, stp_order(2, StpMode::CancelBoth, 3));
    let cancelled: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            BookEvent::Cancelled {
                id,
                reason: CancelReason::SelfTrade,
                ..
            } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(cancelled, vec![OrderId(1), OrderId(2)]);
    assert_eq!(book.n_resting(), 0);
}

#[test]
fn stp_decrement_both_reduces_without_trading() {
    let mut book = book();
    submit(&mut book, limit(1, ALICE, Side::Sell, 5000, 2));
    let events = submit(&mut book, stp_order(2, StpMode::DecrementBoth, 5));
    assert!(trades(&events).is_empty());
    assert!(events.contains(&BookEvent::Cancelled {
        id: OrderId(1),
        qty: Qty(2),
        reason: CancelReason::SelfTrade
    }));
    assert_eq!(book.bbo().bid, Some((Price(5000), Qty(3))));
    assert_eq!(book.ledger().cancelled, 4);
}

#[test]
fn halt_blocks_new_orders_but_not_cancels_and_resume_reopens() {
    let mut book = book();
    submit(&mut book, limit(1, ALICE, Side::Buy, 5000, 1));
    run(&mut book, BookCommand::Halt);
    assert_eq!(book.phase(), Phase::Halted);
    assert_eq!(
        rejection(&submit(&mut book, limit(2, BOB, Side::Sell, 5000, 1))),
        Some(RejectReason::Halted)
    );
    let modify = BookCommand::Modify {
        id: OrderId(1),
        account: ALICE,
        price: Price(5001),
        qty: Qty(1),
    };
    assert_eq!(
        rejection(&run(&mut book, modify)),
        Some(RejectReason::Halted)
    );
    assert!(matches!(
        run(
            &mut book,
            BookCommand::Cancel {
                id: OrderId(1),
                account: ALICE
            }
        )[0],
        BookEvent::Cancelled { .. }
    ));
    run(&mut book, BookCommand::Resume);
    assert!(matches!(
        submit(&mut book, limit(3, BOB, Side::Sell, 5000, 1))[0],
        BookEvent::Accepted { .. }
    ));
}

#[test]
fn gate_closure_expires_every_resting_order() {
    let mut book = book();
    let mut iceberg = limit(1, ALICE, Side::Buy, 4000, 10);
    iceberg.peak = Some(Qty(3));
    submit(&mut book, iceberg);
    submit(&mut book, limit(2, BOB, Side::Sell, 6000, 2));
    let events = run(&mut book, BookCommand::Close);
    let expired: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            BookEvent::Expired { id, qty } => Some((*id, *qty)),
            _ => None,
        })
        .collect();
    assert_eq!(expired, vec![(OrderId(1), Qty(10)), (OrderId(2), Qty(2))]);
    assert_eq!(
        events.last(),
        Some(&BookEvent::PhaseChanged {
            phase: Phase::Closed
        })
    );
    assert_eq!(book.ledger().expired, 12);
    assert_eq!(
        rejection(&submit(&mut book, limit(3, BOB, Side::Sell, 6000, 2))),
        Some(RejectReason::Closed)
    );
    assert_eq!(
        rejection(&run(
            &mut book,
            BookCommand::Cancel {
                id: OrderId(2),
                account: BOB
            }
        )),
        Some(RejectReason::Closed)
    );
}

#[test]
fn every_reject_reason_is_reachable() {
    let rules = MarketRules {
        tick: Price(5),
        price_min: Price(-999_995),
        price_max: Price(999_995),
        ..MarketRules::intraday_default()
    };
    let config = BookConfig {
        orders_max: 2,
        emit_depth: true,
    };
    let mut book = OrderBook::new(rules, config).unwrap();
    let cases: Vec<(NewOrder, RejectReason)> = vec![
        (
            limit(1, ALICE, Side::Buy, 5000, 0),
            RejectReason::QtyNotPositive,
        ),
        (
            limit(1, ALICE, Side::Buy, 5000, -1),
            RejectReason::QtyNotPositive,
        ),
        (
            limit(1, ALICE, Side::Buy, 5000, 9_991),
            RejectReason::QtyAboveMax,
        ),
        (
            limit(1, ALICE, Side::Buy, 5001, 1),
            RejectReason::PriceOffTick,
        ),
        (
            limit(1, ALICE, Side::Buy, 1_000_000, 1),
            RejectReason::PriceOutOfLimits,
        ),
        (
            limit(1, ALICE, Side::Buy, -1_000_000, 1),
            RejectReason::PriceOutOfLimits,
        ),
        (
            NewOrder {
                peak: Some(Qty(0)),
                ..limit(1, ALICE, Side::Buy, 5000, 5)
            },
            RejectReason::InvalidPeak,
        ),
        (
            NewOrder {
                peak: Some(Qty(6)),
                ..limit(1, ALICE, Side::Buy, 5000, 5)
            },
            RejectReason::InvalidPeak,
        ),
        (
            NewOrder {
                peak: Some(Qty(1)),
                time_in_force: TimeInForce::Ioc,
                ..limit(1, ALICE, Side::Buy, 5000, 5)
            },
            RejectReason::InvalidOrderType,
        ),
        (
            NewOrder {
                post_only: true,
                time_in_force: TimeInForce::Fok,
                ..limit(1, ALICE, Side::Buy, 5000, 5)
            },
            RejectReason::InvalidOrderType,
        ),
        (
            NewOrder {
                post_only: true,
                peak: Some(Qty(1)),
                ..limit(1, ALICE, Side::Buy, 5000, 5)
            },
            RejectReason::InvalidOrderType,
        ),
    ];
    for (order, reason) in cases {
        assert_eq!(
            rejection(&submit(&mut book, order)),
            Some(reason),
            "{order:?}"
        );
    }
    submit(&mut book, limit(1, ALICE, Side::Buy, 5000, 1));
    assert_eq!(
        rejection(&submit(&mut book, limit(1, ALICE, Side::Buy, 4000, 1))),
        Some(RejectReason::DuplicateOrderId)
    );
    let mut post = limit(4, BOB, Side::Sell, 5000, 1);
    post.post_only = true;
    assert_eq!(
        rejection(&submit(&mut book, post)),
        Some(RejectReason::PostOnlyWouldCross)
    );
    submit(&mut book, limit(2, ALICE, Side::Buy, 4000, 1));
    assert_eq!(
        rejection(&submit(&mut book, limit(3, ALICE, Side::Buy, 3000, 1))),
        Some(RejectReason::BookFull)
    );
    let cancel_unknown = BookCommand::Cancel {
        id: OrderId(99),
        account: ALICE,
    };
    assert_eq!(
        rejection(&run(&mut book, cancel_unknown)),
        Some(RejectReason::UnknownOrder)
    );
    let cancel_foreign = BookCommand::Cancel {
        id: OrderId(1),
        account: BOB,
    };
    assert_eq!(
        rejection(&run(&mut book, cancel_foreign)),
        Some(RejectReason::NotOwner)
    );
    let same = BookCommand::Modify {
        id: OrderId(1),
        account: ALICE,
        price: Price(5000),
        qty: Qty(1),
    };
    assert_eq!(
        rejection(&run(&mut book, same)),
        Some(RejectReason::NoChange)
    );
    let off_tick = BookCommand::Modify {
        id: OrderId(1),
        account: ALICE,
        price: Price(5003),
        qty: Qty(1),
    };
    assert_eq!(
        rejection(&run(&mut book, off_tick)),
        Some(RejectReason::PriceOffTick)
    );
    let zero = BookCommand::Modify {
        id: OrderId(1),
        account: ALICE,
        price: Price(5000),
        qty: Qty(0),
    };
    assert_eq!(
        rejection(&run(&mut book, zero)),
        Some(RejectReason::QtyNotPositive)
    );
    run(&mut book, BookCommand::Halt);
    assert_eq!(
        rejection(&submit(&mut book, limit(5, BOB, Side::Sell, 6000, 1))),
        Some(RejectReason::Halted)
    );
    run(&mut book, BookCommand::Close);
    assert_eq!(
        rejection(&submit(&mut book, limit(5, BOB, Side::Sell, 6000, 1))),
        Some(RejectReason::Closed)
    );
}

/// Regression: `check_invariants` walked whole pages of levels and indexed the bitmap
/// past the price band when the band was not a multiple of the page size.
#[test]
fn invariants_check_at_the_top_of_a_band_that_is_not_a_whole_page() {
    let rules = MarketRules {
        price_min: Price(0),
        price_max: Price(1_500),
        ..MarketRules::intraday_default()
    };
    let mut book = OrderBook::new(rules, BookConfig::default()).unwrap();
    submit(&mut book, limit(1, ALICE, Side::Sell, 1_500, 1));
    submit(&mut book, limit(2, BOB, Side::Buy, 1_499, 1));
    submit(&mut book, limit(3, BOB, Side::Buy, 0, 1));
    assert_eq!(book.bbo().ask, Some((Price(1_500), Qty(1))));
}

#[test]
fn invalid_rules_and_config_are_refused() {
    let rules = MarketRules {
        tick: Price(0),
        ..MarketRules::intraday_default()
    };
    assert!(OrderBook::new(rules, BookConfig::default()).is_err());
    let config = BookConfig {
        orders_max: 0,
        emit_depth: false,
    };
    assert!(OrderBook::new(MarketRules::intraday_default(), config).is_err());
    // A band of more than LEVELS_MAX ticks (here the whole i64 range) is refused, not allocated.
    let huge = MarketRules {
        price_min: Price(i64::MIN + 1),
        price_max: Price(i64::MAX),
        ..MarketRules::intraday_default()
    };
    assert!(OrderBook::new(huge, BookConfig::default()).is_err());
}

#[test]
fn depth_and_l3_views_are_in_priority_order() {
    let mut book = book();
    submit(&mut book, limit(1, ALICE, Side::Buy, 4900, 1));
    submit(&mut book, limit(2, ALICE, Side::Buy, 5000, 2));
    submit(&mut book, limit(3, BOB, Side::Buy, 5000, 3));
    let mut levels = Vec::new();
    book.depth(Side::Buy, 10, &mut levels);
    assert_eq!(
        levels,
        vec![
            DepthLevel {
                price: Price(5000),
                visible: Qty(5),
                n_orders: 2
            },
            DepthLevel {
                price: Price(4900),
                visible: Qty(1),
                n_orders: 1
            },
        ]
    );
    let mut orders = Vec::new();
    book.orders(Side::Buy, &mut orders);
    let ids: Vec<_> = orders.iter().map(|o| o.id.0).collect();
    assert_eq!(ids, vec![2, 3, 1]);
}

#[test]
fn snapshot_restores_identical_behaviour() {
    let mut book = book();
    submit(&mut book, limit(1, ALICE, Side::Buy, 4900, 1));
    let mut iceberg = limit(2, BOB, Side::Sell, 5100, 9);
    iceberg.peak = Some(Qty(2));
    submit(&mut book, iceberg);
    submit(&mut book, limit(3, BOB, Side::Sell, 5100, 1));
    let snapshot = book.snapshot();
    let mut restored = OrderBook::from_snapshot(
        MarketRules::intraday_default(),
        BookConfig::default(),
        &snapshot,
    )
    .unwrap();
    restored.check_invariants();
    assert_eq!(restored.snapshot(), snapshot);
    let next = BookCommand::Submit(limit(4, ALICE, Side::Buy, 5100, 5));
    assert_eq!(run(&mut book, next), run(&mut restored, next));
}

#[test]
fn corrupt_snapshots_are_refused() {
    let mut book = book();
    submit(&mut book, limit(1, ALICE, Side::Buy, 4900, 1));
    submit(&mut book, limit(2, BOB, Side::Sell, 5100, 1));
    let good = book.snapshot();
    let rules = MarketRules::intraday_default;
    let mut crossed = good.clone();
    crossed.asks[0].price = Price(4800);
    assert!(OrderBook::from_snapshot(rules(), BookConfig::default(), &crossed).is_err());
    let mut wrong_side = good.clone();
    wrong_side.bids[0].side = Side::Sell;
    assert!(OrderBook::from_snapshot(rules(), BookConfig::default(), &wrong_side).is_err());
    let mut unbalanced = good.clone();
    unbalanced.ledger.submitted += 1;
    assert!(OrderBook::from_snapshot(rules(), BookConfig::default(), &unbalanced).is_err());
    let mut duplicate = good.clone();
    duplicate.asks[0].id = OrderId(1);
    assert!(OrderBook::from_snapshot(rules(), BookConfig::default(), &duplicate).is_err());
    let small = BookConfig {
        orders_max: 1,
        emit_depth: true,
    };
    assert!(OrderBook::from_snapshot(rules(), small, &good).is_err());
}

// ---------------------------------------------------------------------------------
// Property tests

/// A random command over a narrow price band so orders cross often.
fn arb_command(max_id: u64) -> impl Strategy<Value = BookCommand> {
    let side = prop_oneof![Just(Side::Buy), Just(Side::Sell)];
    let tif = prop_oneof![6 => Just(TimeInForce::Gtc), 2 => Just(TimeInForce::Ioc), 2 => Just(TimeInForce::Fok)];
    let stp = prop_oneof![
        Just(StpMode::CancelResting),
        Just(StpMode::CancelIncoming),
        Just(StpMode::CancelBoth),
        Just(StpMode::DecrementBoth)
    ];
    let new_order = (
        1..=max_id,
        1u32..4,
        side,
        4990i64..5010,
        1i64..20,
        tif,
        any::<bool>(),
        0i64..6,
        stp,
    )
        .prop_map(
            |(id, account, side, price, qty, tif, post_only, peak, stp)| {
                BookCommand::Submit(NewOrder {
                    id: OrderId(id),
                    account: AccountId(account),
                    side,
                    price: Price(price),
                    qty: Qty(qty),
                    time_in_force: tif,
                    post_only: post_only && peak == 0 && tif == TimeInForce::Gtc,
                    peak: (peak > 0 && tif == TimeInForce::Gtc).then_some(Qty(peak)),
                    stp,
                })
            },
        );
    let cancel = (1..=max_id, 1u32..4).prop_map(|(id, account)| BookCommand::Cancel {
        id: OrderId(id),
        account: AccountId(account),
    });
    let modify =
        (1..=max_id, 1u32..4, 4990i64..5010, 1i64..20).prop_map(|(id, account, price, qty)| {
            BookCommand::Modify {
                id: OrderId(id),
                account: AccountId(account),
                price: Price(price),
                qty: Qty(qty),
            }
        });
    prop_oneof![
        12 => new_order,
        3 => cancel,
        4 => modify,
        1 => Just(BookCommand::Halt),
        1 => Just(BookCommand::Resume),
    ]
}

fn arb_commands() -> impl Strategy<Value = Vec<BookCommand>> {
    (
        proptest::collection::vec(arb_command(60), 1..200),
        any::<bool>(),
    )
        .prop_map(|(mut commands, close)| {
            if close {
                commands.push(BookCommand::Close);
            }
            commands
        })
}

fn resting_total(book: &OrderBook) -> i64 {
    let snapshot = book.snapshot();
    snapshot
        .bids
        .iter()
        .chain(&snapshot.asks)
        .map(|o| o.visible.0 + o.hidden.0)
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The fast book and the BTreeMap reference emit identical events and end in the
    /// same state, for any command sequence (which also checks price-time priority,
    /// every order type and self-trade prevention against an independent implementation).
    #[test]
    fn fast_book_matches_reference_book(commands in arb_commands()) {
        let rules = MarketRules::intraday_default();
        let config = BookConfig { orders_max: 40, emit_depth: true };
        let mut fast = OrderBook::new(rules.clone(), config).unwrap();
        let mut reference = ReferenceBook::new(rules, config);
        let (mut fast_events, mut reference_events) = (Vec::new(), Vec::new());
        for command in &commands {
            fast_events.clear();
            reference_events.clear();
            fast.apply(command, &mut fast_events);
            reference.apply(command, &mut reference_events);
            prop_assert_eq!(&fast_events, &reference_events, "after {:?}", command);
        }
        let snapshot = fast.snapshot();
        prop_assert_eq!((snapshot.bids, snapshot.asks), reference.resting());
        prop_assert_eq!(fast.ledger(), reference.ledger());
    }

    /// Never crossed at rest, quantity conserved, all structural invariants hold
    /// after every command.
    #[test]
    fn invariants_hold_after_every_command(commands in arb_commands()) {
        let mut book = OrderBook::new(MarketRules::intraday_default(), BookConfig { orders_max: 40, emit_depth: false }).unwrap();
        let mut events = Vec::new();
        for command in &commands {
            book.apply(command, &mut events);
            book.check_invariants();
            if let (Some((bid, _)), Some((ask, _))) = (book.bbo().bid, book.bbo().ask) {
                prop_assert!(bid < ask);
            }
            let ledger = book.ledger();
            prop_assert_eq!(ledger.submitted, resting_total(&book) + ledger.filled + ledger.cancelled + ledger.expired);
        }
    }

    /// A FOK order either trades its whole quantity or nothing at all.
    #[test]
    fn fok_fills_all_or_nothing_prop(commands in arb_commands(), side in prop_oneof![Just(Side::Buy), Just(Side::Sell)], price in 4990i64..5010, qty in 1i64..40, account in 1u32..4) {
        let mut book = OrderBook::new(MarketRules::intraday_default(), BookConfig { orders_max: 40, emit_depth: false }).unwrap();
        let mut events = Vec::new();
        for command in commands.iter().filter(|c| **c != BookCommand::Close && **c != BookCommand::Halt) {
            book.apply(command, &mut events);
        }
        events.clear();
        let fok = NewOrder { time_in_force: TimeInForce::Fok, ..NewOrder::limit(OrderId(1000), AccountId(account), side, Price(price), Qty(qty)) };
        book.apply(&BookCommand::Submit(fok), &mut events);
        let traded: i64 = events.iter().map(|e| match e { BookEvent::Trade { qty, .. } => qty.0, _ => 0 }).sum();
        prop_assert!(traded == 0 || traded == qty, "FOK traded {} of {}", traded, qty);
        prop_assert!(book.order(OrderId(1000)).is_none(), "a FOK never rests");
    }

    /// Without self-trades and icebergs, an aggressor takes resting orders exactly in
    /// the L3 priority order seen before it arrived.
    #[test]
    fn price_time_priority_holds(prices in proptest::collection::vec((4990i64..5010, 1i64..10), 1..60), side in prop_oneof![Just(Side::Buy), Just(Side::Sell)], limit_price in 4990i64..5010, qty in 1i64..200) {
        let mut book = book();
        let mut events = Vec::new();
        for (n, (price, lots)) in prices.iter().enumerate() {
            let order = NewOrder::limit(OrderId(n as u64 + 1), ALICE, side.opposite(), Price(*price), Qty(*lots));
            book.apply(&BookCommand::Submit(order), &mut events);
        }
        let mut priority = Vec::new();
        book.orders(side.opposite(), &mut priority);
        events.clear();
        let aggressor = NewOrder::limit(OrderId(1000), BOB, side, Price(limit_price), Qty(qty));
        book.apply(&BookCommand::Submit(aggressor), &mut events);
        let hit: Vec<OrderId> = trades(&events).iter().map(|t| t.1).collect();
        let expected: Vec<OrderId> = priority.iter().take(hit.len()).map(|o| o.id).collect();
        prop_assert_eq!(hit, expected);
        for trade in trades(&events) {
            prop_assert!(crosses(side, Price(limit_price), trade.2));
        }
    }

    /// An iceberg's visible + hidden + traded + cancelled always equals its total.
    #[test]
    fn iceberg_totals_are_conserved(total in 2i64..100, peak in 1i64..20, takes in proptest::collection::vec(1i64..15, 1..20)) {
        let peak = peak.min(total);
        let mut book = book();
        let mut events = Vec::new();
        let iceberg = NewOrder { peak: Some(Qty(peak)), ..NewOrder::limit(OrderId(1), ALICE, Side::Sell, Price(5000), Qty(total)) };
        book.apply(&BookCommand::Submit(iceberg), &mut events);
        let mut traded = 0;
        for (n, take) in takes.iter().enumerate() {
            events.clear();
            book.apply(&BookCommand::Submit(NewOrder::limit(OrderId(10 + n as u64), BOB, Side::Buy, Price(5000), Qty(*take))), &mut events);
            traded += trades(&events).iter().map(|t| t.3.0).sum::<i64>();
            let left = book.order(OrderId(1)).map_or(0, |o| {
                assert!(o.visible.0 <= peak);
                o.visible.0 + o.hidden.0
            });
            prop_assert_eq!(left + traded, total);
        }
    }

    /// Snapshot → restore gives a book that behaves identically from then on.
    #[test]
    fn snapshot_round_trip_preserves_behaviour(commands in arb_commands(), split in 0usize..200) {
        let rules = MarketRules::intraday_default();
        let config = BookConfig { orders_max: 40, emit_depth: true };
        let mut book = OrderBook::new(rules.clone(), config).unwrap();
        let split = split.min(commands.len());
        let mut events = Vec::new();
        for command in &commands[..split] {
            book.apply(command, &mut events);
        }
        let mut restored = OrderBook::from_snapshot(rules, config, &book.snapshot()).unwrap();
        restored.check_invariants();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for command in &commands[split..] {
            book.apply(command, &mut a);
            restored.apply(command, &mut b);
        }
        prop_assert_eq!(a, b);
        prop_assert_eq!(book.snapshot(), restored.snapshot());
    }
}
