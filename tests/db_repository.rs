//! The repository test-suite of `voltex::db`: every scenario runs on SQLite (a fresh
//! file in a temporary directory) and on PostgreSQL (a fresh database with a random
//! name, dropped afterwards) when `VOLTEX_DATABASE_URL` is set.
//!
//! Without `VOLTEX_DATABASE_URL`, or with PostgreSQL unreachable, the PostgreSQL runs
//! print why and pass, unless `VOLTEX_REQUIRE_SERVICES=1`, which turns that into a
//! failure (CI sets it). Run both:
//!
//! ```text
//! VOLTEX_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres VOLTEX_REQUIRE_SERVICES=1 \
//!     cargo test -p voltex --test db_repository
//! ```
//!
//! Engine events come from the real engine (in-memory journal), so the persistence
//! is tested against the event stream the sequencer really emits.

mod support;

use std::future::Future;
use std::time::Duration;

use voltex::db::{
    AggregateRow, AggregateScope, Backend, Db, DbConfig, DbError, DeliveryStatus,
    DeviceStatusUpdate, FillSource, NewAuditEntry, NewDevice, NewMlModel, OrderFilter, OrderStatus,
    PAGE_LIMIT_MAX, SocReading,
};
use voltex_dispatch::message::{
    Ack, AckStatus, DeviceId, Fallback, HealthFlags, Schedule, ScheduleId, SchedulePeriod,
    ScheduleRejection, SignedSchedule, Telemetry, TelemetryBatch,
};
use voltex_engine::command::{EngineCommand, EngineEvent};
use voltex_engine::engine::{Engine, EngineConfig, MemDisk};
use voltex_market::book::{BookCommand, NewOrder};
use voltex_market::{
    AccountId, DeliveryPeriod, MarketRules, OrderId, PeriodLength, Price, ProductId, Qty, Side,
    UtcNanos,
};

const NS_PER_S: i64 = 1_000_000_000;
/// A fixed "now": 2026-11-27T00:00:00Z.
const T0: i64 = 1_795_737_600 * NS_PER_S;

// ---------------------------------------------------------------------------------
// Harness: one fresh database per scenario and backend.
// ---------------------------------------------------------------------------------

async fn run_on_sqlite<F, Fut>(scenario: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("voltex.db").display());
    let db = Db::connect(&url).await.expect("open SQLite");
    assert_eq!(db.backend(), Backend::Sqlite);
    scenario(db.clone()).await;
    db.close().await;
}

async fn run_on_postgres<F, Fut>(scenario: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()>,
{
    support::with_postgres_database("voltex_test", async |url| {
        let db = Db::connect(&url).await.expect("open PostgreSQL");
        assert_eq!(db.backend(), Backend::Postgres);
        scenario(db.clone()).await;
        db.close().await;
    })
    .await;
}

/// Declares each scenario as a test on SQLite and one on PostgreSQL.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    crate::run_on_sqlite(crate::$scenario).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    crate::run_on_postgres(crate::$scenario).await;
                }
            )*
        }
    };
}

on_both_backends!(
    engine_event_replay_is_idempotent,
    journaled_persists_store_what_flushed_ones_do_and_replay_idempotently,
    auction_events_project_curves_results_and_awards_idempotently,
    auction_awards_count_once_in_positions_and_fills,
    block_families_keep_their_history_and_backfill_once,
    a_stored_award_of_another_event_is_corrupt_and_writes_nothing,
    engine_events_with_a_gap_are_refused_and_write_nothing,
    concurrent_persists_of_one_batch_count_positions_once,
    orders_filter_and_page_by_account,
    newer_schedule_version_supersedes_older_non_final_versions,
    a_schedule_payload_is_read_back_verbatim_and_a_corrupt_one_is_reported,
    stale_schedule_version_is_refused_and_identical_retry_is_idempotent,
    schedule_retry_and_deadline_bookkeeping,
    same_ack_twice_is_one_row_and_status_only_moves_forward,
    writes_naming_an_unknown_device_fail_with_not_found,
    devices_page_without_gaps_or_duplicates,
    device_status_moves_forward_only,
    telemetry_resent_is_stored_once,
    ml_models_record_once_with_metrics,
    model_versions_are_assigned_and_identical_reruns_reuse_them,
    devices_in_fault_by_their_newest_sample,
    a_device_certificate_is_recorded_replaced_and_never_shared,
    a_revoked_certificate_leaves_its_device_and_is_never_recorded_again,
    dayahead_periods_upsert_settle_and_list_newest,
    analytics_upsert_replaces_and_totals_sum_devices,
    audit_log_lists_newest_first_with_paging,
    a_large_audit_batch_is_stored_whole_and_in_order,
    journaled_audit_records_are_stored_once_with_their_commands,
    accounts_create_get_list,
    page_limits_are_enforced,
);

// ---------------------------------------------------------------------------------
// Engine event fixtures.
// ---------------------------------------------------------------------------------

const PRODUCT: ProductId = ProductId(7);
const ALICE: AccountId = AccountId(1);
const BOB: AccountId = AccountId(2);
const DAVE: AccountId = AccountId(4);

fn period() -> DeliveryPeriod {
    let length = PeriodLength::from_minutes(60).expect("60 minutes");
    DeliveryPeriod::new(UtcNanos(T0 + 24 * 3_600 * NS_PER_S), length).expect("aligned")
}

fn submit(
    at_s: i64,
    id: u64,
    account: AccountId,
    side: Side,
    price: i64,
    qty: i64,
) -> EngineCommand {
    EngineCommand::book(
        UtcNanos(T0 + at_s * NS_PER_S),
        PRODUCT,
        BookCommand::Submit(NewOrder::limit(
            OrderId(id),
            account,
            side,
            Price(price),
            Qty(qty),
        )),
    )
}

/// A session on one product: Alice rests two sells, Bob buys through the first and
/// part of the second, Alice cancels the rest; Bob rests a bid that stays open.
/// Returns every event the engine emitted, in order.
fn trading_session() -> Vec<EngineEvent> {
    let (mut engine, _) =
        Engine::open_in_memory(&MemDisk::default(), EngineConfig::default()).expect("engine");
    let commands = vec![
        EngineCommand::add_product(
            UtcNanos(T0),
            PRODUCT,
            period(),
            MarketRules::intraday_default(),
        ),
        submit(1, 1, ALICE, Side::Sell, 5_000, 10),
        submit(2, 2, ALICE, Side::Sell, 5_100, 10),
        submit(3, 3, BOB, Side::Buy, 5_200, 15),
        EngineCommand::book(
            UtcNanos(T0 + 4 * NS_PER_S),
            PRODUCT,
            BookCommand::Cancel {
                id: OrderId(2),
                account: ALICE,
            },
        ),
        submit(5, 4, BOB, Side::Buy, 4_000, 3),
    ];
    let mut events = Vec::new();
    let mut acks = Vec::new();
    engine
        .process_batch(&commands, &mut events, &mut acks)
        .expect("process");
    assert_eq!(acks.len(), commands.len());
    events
}

/// Every row the event stream produces, as comparable text.
async fn trading_rows(db: &Db) -> Vec<String> {
    let mut rows = Vec::new();
    for account in [ALICE.0, BOB.0] {
        let orders = db
            .list_orders(account, &OrderFilter::default(), PAGE_LIMIT_MAX)
            .await
            .expect("orders");
        rows.extend(orders.iter().map(|o| format!("{o:?}")));
        let fills = db
            .list_fills(account, None, PAGE_LIMIT_MAX)
            .await
            .expect("fills");
        rows.extend(fills.iter().map(|f| format!("{f:?}")));
        let positions = db.list_positions(account).await.expect("positions");
        rows.extend(positions.iter().map(|p| format!("{p:?}")));
    }
    let trades = db
        .list_trades(PRODUCT.0, None, PAGE_LIMIT_MAX)
        .await
        .expect("trades");
    rows.extend(trades.iter().map(|t| format!("{t:?}")));
    rows.extend(
        db.list_products()
            .await
            .expect("products")
            .iter()
            .map(|p| format!("{p:?}")),
    );
    rows
}

// ---------------------------------------------------------------------------------
// Scenarios.
// ---------------------------------------------------------------------------------

async fn engine_event_replay_is_idempotent(db: Db) {
    let events = trading_session();
    let n_events = events.len() as u64;
    assert_eq!(db.last_persisted_seq().await.expect("cursor"), 0);

    // First pass in two batches, as the sequencer's sink would hand them over.
    let split = events.len() / 2;
    let first = db
        .persist_engine_events(&events[..split])
        .await
        .expect("first half");
    assert_eq!(first.n_applied, split as u64);
    let second = db
        .persist_engine_events(&events[split..])
        .await
        .expect("second half");
    assert_eq!(second.n_skipped, 0);
    assert_eq!(second.last_event_seq, n_events);
    let cursor = db.engine_cursor().await.expect("cursor");
    assert_eq!(cursor.last_event_seq, n_events);
    assert_eq!(cursor.last_command_seq, 6);
    let rows_once = trading_rows(&db).await;

    // The stored state is what the session did.
    let alice = db.list_positions(ALICE.0).await.expect("positions");
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].net_qty_lots, -15);
    assert_eq!(alice[0].sold_qty_lots, 15);
    assert_eq!(alice[0].sold_notional_tick_lots, 5_000 * 10 + 5_100 * 5);
    assert_eq!(alice[0].n_trades, 2);
    let bob = db.list_positions(BOB.0).await.expect("positions");
    assert_eq!(bob[0].net_qty_lots, 15);
    assert_eq!(bob[0].bought_notional_tick_lots, 5_000 * 10 + 5_100 * 5);
    let order = |id| db.get_order(PRODUCT.0, id);
    let o1 = order(1).await.expect("get").expect("order 1");
    assert_eq!(
        (o1.status, o1.filled_qty_lots, o1.remaining_qty_lots),
        (OrderStatus::Filled, 10, 0)
    );
    let o2 = order(2).await.expect("get").expect("order 2");
    assert_eq!(o2.status, OrderStatus::Cancelled);
    assert_eq!((o2.filled_qty_lots, o2.remaining_qty_lots), (5, 0));
    assert_eq!(o2.status_reason.as_deref(), Some("requested"));
    let o3 = order(3).await.expect("get").expect("order 3");
    assert_eq!((o3.status, o3.filled_qty_lots), (OrderStatus::Filled, 15));
    let o4 = order(4).await.expect("get").expect("order 4");
    assert_eq!((o4.status, o4.remaining_qty_lots), (OrderStatus::Open, 3));
    let bob_fills = db.list_fills(BOB.0, None, 10).await.expect("fills");
    assert_eq!(bob_fills.len(), 2);
    assert!(bob_fills.iter().all(|f| f.source == FillSource::Continuous
        && f.aggressor == Some(true)
        && f.side == Side::Buy
        && f.order_id == Some(3)));

    // A restart replays everything, then an overlapping tail: nothing changes.
    let replay = db.persist_engine_events(&events).await.expect("replay");
    assert_eq!((replay.n_applied, replay.n_skipped), (0, n_events));
    let overlap = db
        .persist_engine_events(&events[split - 1..])
        .await
        .expect("overlap");
    assert_eq!(overlap.n_applied, 0);
    assert_eq!(trading_rows(&db).await, rows_once);
    assert_eq!(db.last_persisted_seq().await.expect("cursor"), n_events);
}

/// The server's projection (`persist_journaled_engine_events`, asynchronous commit on
/// PostgreSQL) mixed with flushed persists: the same rows, the same idempotent replay.
async fn journaled_persists_store_what_flushed_ones_do_and_replay_idempotently(db: Db) {
    let events = trading_session();
    let n_events = events.len() as u64;
    let split = events.len() / 2;
    let first = db
        .persist_journaled_engine_events(&events[..split], &[])
        .await
        .expect("first half, journaled");
    assert_eq!(
        (first.n_applied, first.last_event_seq),
        (split as u64, split as u64)
    );
    db.persist_engine_events(&events[split..])
        .await
        .expect("second half, flushed");
    let rows = trading_rows(&db).await;
    let alice = db.list_positions(ALICE.0).await.expect("positions");
    assert_eq!((alice[0].net_qty_lots, alice[0].n_trades), (-15, 2));
    let o4 = db
        .get_order(PRODUCT.0, 4)
        .await
        .expect("get")
        .expect("order 4");
    assert_eq!((o4.status, o4.remaining_qty_lots), (OrderStatus::Open, 3));

    // A restart's replay through the journaled path changes nothing.
    let replay = db
        .persist_journaled_engine_events(&events, &[])
        .await
        .expect("replay");
    assert_eq!((replay.n_applied, replay.n_skipped), (0, n_events));
    assert_eq!(trading_rows(&db).await, rows);
    // A gap is refused on this path too.
    let holed = [events[0], events[2]];
    assert!(matches!(
        db.persist_journaled_engine_events(&holed, &[]).await,
        Err(DbError::EventGap {
            expected: 2,
            got: 3
        })
    ));
    assert_eq!(db.last_persisted_seq().await.expect("cursor"), n_events);
}

/// A day-ahead auction on `PRODUCT` (delivery 24 h after `T0`, gate 12 h after): Alice
/// bids, then replaces her curve with a shorter one; Bob offers; Carol bids and
/// withdraws; Alice sells 5 lots at 5,000 ticks to Dave on the continuous book; the
/// gate passes. Every event the engine emitted, in order.
fn auction_session() -> Vec<EngineEvent> {
    use voltex_engine::command::CommandKind;
    use voltex_market::auction::{CurveKind, CurvePoint};
    let (mut engine, _) =
        Engine::open_in_memory(&MemDisk::default(), EngineConfig::default()).expect("engine");
    let at = |s: i64| UtcNanos(T0 + s * NS_PER_S);
    let points = |points: &[(i64, i64)]| -> Vec<CurvePoint> {
        points
            .iter()
            .map(|(price, qty)| CurvePoint {
                price: Price(*price),
                qty: Qty(*qty),
            })
            .collect()
    };
    let curve = |s: i64, account: AccountId, side: Side, pts: &[(i64, i64)]| EngineCommand {
        now: at(s),
        origin: None,
        kind: CommandKind::SubmitCurve {
            product: PRODUCT,
            account,
            side,
            kind: CurveKind::Stepwise,
            points: points(pts),
        },
    };
    let carol = AccountId(3);
    let commands = vec![
        EngineCommand::add_product(at(0), PRODUCT, period(), MarketRules::intraday_default()),
        curve(1, ALICE, Side::Buy, &[(3_000, 5), (4_000, 20), (6_000, 10)]),
        curve(2, ALICE, Side::Buy, &[(4_000, 20), (6_000, 10)]),
        curve(3, BOB, Side::Sell, &[(3_000, 15), (5_000, 15)]),
        curve(4, carol, Side::Buy, &[(9_000, 50)]),
        EngineCommand {
            now: at(5),
            origin: None,
            kind: CommandKind::WithdrawCurve {
                product: PRODUCT,
                account: carol,
                side: Side::Buy,
            },
        },
        // On the continuous book, Alice sells 5 lots at 50.00 to Dave.
        submit(6, 1, ALICE, Side::Sell, 5_000, 5),
        submit(7, 2, DAVE, Side::Buy, 5_000, 5),
        EngineCommand::advance_time(at(12 * 3_600)),
    ];
    let (mut events, mut acks) = (Vec::new(), Vec::new());
    engine
        .process_batch(&commands, &mut events, &mut acks)
        .expect("process");
    events
}

async fn auction_events_project_curves_results_and_awards_idempotently(db: Db) {
    let events = auction_session();
    // One event per transaction: a curve's points arrive in later transactions than
    // its acceptance, as they may when the persister's batches split.
    for event in &events {
        db.persist_engine_events(std::slice::from_ref(event))
            .await
            .expect("persist");
    }
    let rows = async || {
        (
            db.auction_curves_of(ALICE.0).await.expect("alice"),
            db.auction_curves_of(3).await.expect("carol"),
            db.auction_result(PRODUCT.0).await.expect("result"),
            db.auction_awards(PRODUCT.0).await.expect("awards"),
        )
    };
    let once = rows().await;
    let (alice, carol, result, awards) = once.clone();
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].status, "active");
    assert_eq!(
        alice[0].points,
        vec![(4_000, 20), (6_000, 10)],
        "the replacement's points only"
    );
    assert_eq!(carol.len(), 1);
    assert_eq!(
        (carol[0].status.as_str(), carol[0].points.len()),
        ("withdrawn", 0)
    );
    let result = result.expect("cleared");
    assert_eq!(
        (result.price_ticks, result.volume_lots, result.n_curves),
        (Some(4_000), 15, 2)
    );
    let awards: Vec<_> = awards
        .iter()
        .map(|award| (award.account_id, award.side, award.qty_lots))
        .collect();
    assert_eq!(awards, vec![(1, Side::Buy, 15), (2, Side::Sell, 15)]);

    let replay = db.persist_engine_events(&events).await.expect("replay");
    assert_eq!(replay.n_applied, 0);
    assert_eq!(rows().await, once, "a replay changes nothing");
}

/// Block families on `PRODUCT` (gate 12 h after `T0`) against Bob's 100 lots offered at
/// 30.00 EUR/MWh and Dave's 50 bid at 30.00: Alice's family 1 buys 5 lots at up to
/// 40.00 and is replaced by 6 at up to 45.00 (accepted at 30.00); family 2 buys 5 at up
/// to 20.00 (rejected); family 3 is withdrawn; a family naming an unknown product is
/// refused. After the gate she reuses name 1 for `LATER` (gate 36 h after `T0`), which
/// stays open. Every event the engine emitted, in order.
fn family_session() -> Vec<EngineEvent> {
    use voltex_engine::command::CommandKind;
    use voltex_engine::family::{FamilyBlock, FamilyRef};
    use voltex_market::auction::{CurveKind, CurvePoint};
    const LATER: ProductId = ProductId(8);
    let (mut engine, _) =
        Engine::open_in_memory(&MemDisk::default(), EngineConfig::default()).expect("engine");
    let at = |s: i64| UtcNanos(T0 + s * NS_PER_S);
    let curve = |s: i64, account: AccountId, side: Side| EngineCommand {
        now: at(s),
        origin: None,
        kind: CommandKind::SubmitCurve {
            product: PRODUCT,
            account,
            side,
            kind: CurveKind::Stepwise,
            points: vec![CurvePoint {
                price: Price(3_000),
                qty: Qty(if side == Side::Sell { 100 } else { 50 }),
            }],
        },
    };
    let family = |s: i64, name: u32, product: ProductId, limit: i64, lots: i64| EngineCommand {
        now: at(s),
        origin: None,
        kind: CommandKind::SubmitFamily {
            account: ALICE,
            family: FamilyRef(name),
            products: vec![product],
            blocks: vec![FamilyBlock {
                side: Side::Buy,
                limit: Price(limit),
                qty: vec![Qty(lots)],
            }],
            exclusive_group: None,
        },
    };
    let later_period = DeliveryPeriod::new(
        UtcNanos(T0 + 48 * 3_600 * NS_PER_S),
        PeriodLength::from_minutes(60).expect("60 minutes"),
    )
    .expect("aligned");
    let commands = vec![
        EngineCommand::add_product(at(0), PRODUCT, period(), MarketRules::intraday_default()),
        EngineCommand::add_product(at(0), LATER, later_period, MarketRules::intraday_default()),
        curve(1, BOB, Side::Sell),
        curve(2, DAVE, Side::Buy),
        family(3, 1, PRODUCT, 4_000, 5),
        family(4, 1, PRODUCT, 4_500, 6),
        family(5, 2, PRODUCT, 2_000, 5),
        family(6, 3, PRODUCT, 5_000, 1),
        EngineCommand {
            now: at(7),
            origin: None,
            kind: CommandKind::WithdrawFamily {
                account: ALICE,
                family: FamilyRef(3),
            },
        },
        family(8, 4, ProductId(99), 5_000, 1),
        EngineCommand::advance_time(at(12 * 3_600)),
        family(12 * 3_600 + 1, 1, LATER, 3_500, 2),
    ];
    let (mut events, mut acks) = (Vec::new(), Vec::new());
    engine
        .process_batch(&commands, &mut events, &mut acks)
        .expect("process");
    events
}

async fn block_families_keep_their_history_and_backfill_once(db: Db) {
    use voltex::db::FamilyRowStatus;
    let events = family_session();
    for event in &events {
        db.persist_engine_events(std::slice::from_ref(event))
            .await
            .expect("persist");
    }
    let rows = db
        .auction_families_of(ALICE.0, None, 10)
        .await
        .expect("rows");
    let summary: Vec<_> = rows
        .iter()
        .map(|row| {
            (
                row.family_ref,
                row.first_product_id,
                row.n_replacements,
                row.status,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, 8, 0, FamilyRowStatus::Open),
            (3, PRODUCT.0, 0, FamilyRowStatus::Withdrawn),
            (2, PRODUCT.0, 0, FamilyRowStatus::Rejected),
            (1, PRODUCT.0, 1, FamilyRowStatus::Accepted),
        ],
        "newest first; the refused family has no row; the reused name a row of its own"
    );
    // The replacement's 6 lots bought at 30.00 under a 45.00 limit.
    assert_eq!(rows[3].surplus_ticks_x_lots, Some((4_500 - 3_000) * 6));
    assert!(
        rows[2]
            .surplus_ticks_x_lots
            .is_some_and(|surplus| surplus < 0)
    );
    assert_eq!(rows[0].surplus_ticks_x_lots, None, "not cleared yet");
    assert!(
        rows.windows(2)
            .all(|w| w[0].opened_event_seq > w[1].opened_event_seq)
    );
    assert!(
        rows.iter()
            .all(|row| row.updated_event_seq >= row.opened_event_seq)
    );
    assert!(
        db.auction_families_of(2, None, 10)
            .await
            .expect("bob")
            .is_empty()
    );

    // Paging: older than the second row.
    let older = db
        .auction_families_of(ALICE.0, Some(rows[1].opened_event_seq), 1)
        .await
        .expect("page");
    assert_eq!(older, vec![rows[2].clone()]);
    assert!(matches!(
        db.auction_families_of(ALICE.0, None, 0).await,
        Err(DbError::InvalidInput { field: "limit", .. })
    ));

    // Replayed events change nothing, whether skipped by the cursor or applied again
    // (the cursor rewound to before the first family event).
    let replay = db.persist_engine_events(&events).await.expect("replay");
    assert_eq!(replay.n_applied, 0);
    let first_family = events
        .iter()
        .position(|event| {
            matches!(
                event.kind,
                voltex_engine::command::EventKind::FamilyAccepted { .. }
            )
        })
        .expect("a family event");
    rewind_cursor_before(&db, &events[first_family]).await;
    db.persist_engine_events(&events[first_family..])
        .await
        .expect("re-apply");
    assert_eq!(
        db.auction_families_of(ALICE.0, None, 10)
            .await
            .expect("rows"),
        rows
    );

    // A database migrated to version 8 after these events were stored: the table is
    // empty and the backfill is pending. It fills the table once from engine_events.
    sqlx::query("DELETE FROM auction_families")
        .execute(db.pool())
        .await
        .expect("empty the projection");
    sqlx::query("INSERT INTO pending_backfills (name) VALUES ('auction_families')")
        .execute(db.pool())
        .await
        .expect("mark pending");
    db.run_pending_backfills().await.expect("backfill");
    assert_eq!(
        db.auction_families_of(ALICE.0, None, 10)
            .await
            .expect("rows"),
        rows
    );
    let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pending_backfills")
        .fetch_one(db.pool())
        .await
        .expect("count");
    assert_eq!(pending, 0, "done once");
    sqlx::query("DELETE FROM auction_families")
        .execute(db.pool())
        .await
        .expect("empty the projection");
    db.run_pending_backfills().await.expect("nothing pending");
    assert!(
        db.auction_families_of(ALICE.0, None, 10)
            .await
            .expect("rows")
            .is_empty(),
        "a backfill runs only while its row is pending"
    );
}

/// Positions, fills and the award rows of the accounts of [`auction_session`].
async fn auction_account_rows(db: &Db) -> Vec<String> {
    let mut rows = Vec::new();
    for account in [ALICE.0, BOB.0, 3] {
        let positions = db.list_positions(account).await.expect("positions");
        rows.extend(positions.iter().map(|p| format!("{p:?}")));
        let fills = db
            .list_fills(account, None, PAGE_LIMIT_MAX)
            .await
            .expect("fills");
        rows.extend(fills.iter().map(|f| format!("{f:?}")));
    }
    let awards = db.auction_awards(PRODUCT.0).await.expect("awards");
    rows.extend(awards.iter().map(|a| format!("{a:?}")));
    rows
}

/// Index of the `AuctionCleared` event in `events`.
fn cleared_index(events: &[EngineEvent]) -> usize {
    events
        .iter()
        .position(|e| {
            matches!(
                e.kind,
                voltex_engine::command::EventKind::AuctionCleared { .. }
            )
        })
        .expect("the auction cleared")
}

/// Moves the engine cursor back to just before `event` (as a projection restored from an
/// older cursor would be); returns the cursor's new value.
async fn rewind_cursor_before(db: &Db, event: &EngineEvent) -> i64 {
    let before = i64::try_from(event.event_seq - 1).expect("seq");
    sqlx::query("UPDATE engine_cursor SET last_event_seq = $1 WHERE cursor_id = 1")
        .bind(before)
        .execute(db.pool())
        .await
        .expect("rewind the cursor");
    before
}

/// An auction clears once: an award row stored under another event seq than the award
/// being applied means the projection and the event stream disagree. The batch fails
/// as `Corrupt` and its transaction writes nothing.
async fn a_stored_award_of_another_event_is_corrupt_and_writes_nothing(db: Db) {
    let events = auction_session();
    db.persist_engine_events(&events).await.expect("persist");
    let cleared_idx = cleared_index(&events);
    let alice_before = db.list_positions(ALICE.0).await.expect("positions");
    let bob_before = db.list_positions(BOB.0).await.expect("positions");
    let cursor_before = db.last_persisted_seq().await.expect("cursor");

    sqlx::query("UPDATE auction_awards SET event_seq = event_seq + 1000 WHERE account_id = $1")
        .bind(i64::from(ALICE.0))
        .execute(db.pool())
        .await
        .expect("tamper with alice's award row");
    let before_clearing = rewind_cursor_before(&db, &events[cleared_idx]).await;
    let error = db
        .persist_engine_events(&events[cleared_idx..])
        .await
        .expect_err("a second award for the same auction is refused");
    assert!(
        matches!(
            error,
            DbError::Corrupt {
                table: "auction_awards",
                column: "event_seq",
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(
        db.list_positions(ALICE.0).await.expect("positions"),
        alice_before
    );
    assert_eq!(
        db.list_positions(BOB.0).await.expect("positions"),
        bob_before
    );
    assert_eq!(
        db.last_persisted_seq().await.expect("cursor"),
        u64::try_from(before_clearing).expect("seq"),
        "the failed batch moved the cursor nowhere (it was {cursor_before})"
    );
}

async fn auction_awards_count_once_in_positions_and_fills(db: Db) {
    use voltex_engine::command::EventKind;
    use voltex_market::book::BookEvent;
    let events = auction_session();
    db.persist_engine_events(&events).await.expect("persist");
    let cleared_idx = cleared_index(&events);
    let trade = events
        .iter()
        .find(|e| matches!(e.kind, EventKind::Book(BookEvent::Trade { .. })))
        .expect("a trade");
    let award_seq = |account: AccountId| {
        events
            .iter()
            .find(|e| matches!(e.kind, EventKind::AuctionAward { account: a, .. } if a == account))
            .expect("an award")
            .event_seq
    };

    // The auction clears at 40.00 EUR/MWh (4,000 ticks) with 1.5 MW (15 lots): Alice
    // is awarded a buy of 15 lots (notional 4,000 x 15 = 60,000 tick-lots), Bob a sell
    // of 15. Before it, Alice sold 5 lots at 5,000 (notional 25,000) on the book.
    let alice = db.list_positions(ALICE.0).await.expect("positions");
    assert_eq!(alice.len(), 1);
    assert_eq!(
        (
            alice[0].product_id,
            alice[0].net_qty_lots,
            alice[0].bought_qty_lots,
            alice[0].sold_qty_lots,
            alice[0].bought_notional_tick_lots,
            alice[0].sold_notional_tick_lots,
            alice[0].n_trades,
            alice[0].updated_event_seq,
        ),
        (PRODUCT.0, 10, 15, 5, 60_000, 25_000, 2, award_seq(ALICE))
    );
    let bob = db.list_positions(BOB.0).await.expect("positions");
    assert_eq!(
        (
            bob[0].net_qty_lots,
            bob[0].bought_qty_lots,
            bob[0].sold_qty_lots,
            bob[0].bought_notional_tick_lots,
            bob[0].sold_notional_tick_lots,
            bob[0].n_trades,
        ),
        (-15, 0, 15, 0, 60_000, 1)
    );
    assert!(
        db.list_positions(3).await.expect("carol").is_empty(),
        "a withdrawn curve wins nothing"
    );

    // Alice's fills, newest first: the award, then the trade; one per page.
    let fills = db.list_fills(ALICE.0, None, 10).await.expect("fills");
    let summary: Vec<_> = fills
        .iter()
        .map(|f| (f.source, f.side, f.price_ticks, f.qty_lots, f.event_seq))
        .collect();
    assert_eq!(
        summary,
        vec![
            (FillSource::Auction, Side::Buy, 4_000, 15, award_seq(ALICE)),
            (
                FillSource::Continuous,
                Side::Sell,
                5_000,
                5,
                trade.event_seq
            ),
        ]
    );
    let award = &fills[0];
    assert_eq!(
        (award.product_id, award.account_id, award.at_ns),
        (PRODUCT.0, ALICE.0, events[cleared_idx].now.0)
    );
    assert_eq!(
        (award.trade_id, award.order_id, award.aggressor),
        (None, None, None)
    );
    assert_eq!(
        (fills[1].order_id, fills[1].aggressor),
        (Some(1), Some(false))
    );
    let first_page = db.list_fills(ALICE.0, None, 1).await.expect("page 1");
    assert_eq!(first_page, fills[..1]);
    let second_page = db
        .list_fills(ALICE.0, Some(first_page[0].event_seq), 1)
        .await
        .expect("page 2");
    assert_eq!(second_page, fills[1..]);
    assert!(
        db.list_fills(ALICE.0, Some(trade.event_seq), 10)
            .await
            .expect("page 3")
            .is_empty()
    );
    let bob_fills = db.list_fills(BOB.0, None, 10).await.expect("fills");
    assert_eq!(bob_fills.len(), 1, "only his own award");
    assert_eq!(
        (
            bob_fills[0].source,
            bob_fills[0].side,
            bob_fills[0].qty_lots
        ),
        (FillSource::Auction, Side::Sell, 15)
    );
    let once = auction_account_rows(&db).await;

    // Apply the clearing and its awards a second time behind the cursor's back (as a
    // projection restored from an older cursor would): the award rows guard the
    // positions, nothing counts twice.
    rewind_cursor_before(&db, &events[cleared_idx]).await;
    let again = db
        .persist_engine_events(&events[cleared_idx..])
        .await
        .expect("re-apply");
    assert_eq!(again.n_applied, (events.len() - cleared_idx) as u64);
    assert_eq!(
        auction_account_rows(&db).await,
        once,
        "re-applied awards count once"
    );
    let replay = db.persist_engine_events(&events).await.expect("replay");
    assert_eq!(replay.n_applied, 0);
    assert_eq!(auction_account_rows(&db).await, once);

    // Migration 0004 counts the awards a version-3 database stored without counting
    // them, once: with Bob's position gone (insert path) and Alice's holding only her
    // trade (conflict path), it restores exactly the rows above.
    sqlx::query("DELETE FROM positions WHERE account_id = $1")
        .bind(i64::from(BOB.0))
        .execute(db.pool())
        .await
        .expect("forget bob's position");
    sqlx::query(
        "UPDATE positions SET net_qty_lots = -5, bought_qty_lots = 0, \
         bought_notional_tick_lots = 0, n_trades = 1, updated_at_ns = $1, \
         updated_event_seq = $2 WHERE account_id = $3",
    )
    .bind(trade.now.0)
    .bind(i64::try_from(trade.event_seq).expect("seq"))
    .bind(i64::from(ALICE.0))
    .execute(db.pool())
    .await
    .expect("alice's position before awards counted");
    let backfill = match db.backend() {
        Backend::Sqlite => include_str!("../migrations/sqlite/0004_auction_positions.sql"),
        Backend::Postgres => include_str!("../migrations/postgres/0004_auction_positions.sql"),
    };
    sqlx::raw_sql(backfill)
        .execute(db.pool())
        .await
        .expect("backfill");
    assert_eq!(
        auction_account_rows(&db).await,
        once,
        "the backfill counts each award once"
    );
}

async fn engine_events_with_a_gap_are_refused_and_write_nothing(db: Db) {
    let events = trading_session();
    // Starting after the cursor + 1 is a gap.
    match db.persist_engine_events(&events[2..]).await {
        Err(DbError::EventGap {
            expected: 1,
            got: 3,
        }) => {}
        other => panic!("expected a gap error, got {other:?}"),
    }
    // A batch with a hole inside is a gap too.
    let holed = [events[0], events[2]];
    assert!(matches!(
        db.persist_engine_events(&holed).await,
        Err(DbError::EventGap {
            expected: 2,
            got: 3
        })
    ));
    assert_eq!(db.last_persisted_seq().await.expect("cursor"), 0);
    assert!(trading_rows(&db).await.is_empty());
    // The empty batch is a no-op.
    let empty = db.persist_engine_events(&[]).await.expect("empty");
    assert_eq!((empty.n_applied, empty.last_event_seq), (0, 0));
    // After the refusals, the stream persists normally.
    db.persist_engine_events(&events)
        .await
        .expect("whole stream");
    assert_eq!(
        db.last_persisted_seq().await.expect("cursor"),
        events.len() as u64
    );
}

async fn concurrent_persists_of_one_batch_count_positions_once(db: Db) {
    let events = trading_session();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let db = db.clone();
            let events = events.clone();
            tokio::spawn(async move { db.persist_engine_events(&events).await })
        })
        .collect();
    let mut n_applied = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(outcome) => n_applied += outcome.n_applied,
            // A writer that lost the race may be told so; the data must still be right.
            Err(DbError::Conflict(_)) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(n_applied, events.len() as u64);
    let alice = db.list_positions(ALICE.0).await.expect("positions");
    assert_eq!((alice[0].net_qty_lots, alice[0].n_trades), (-15, 2));
    assert_eq!(
        db.list_trades(PRODUCT.0, None, 10)
            .await
            .expect("trades")
            .len(),
        2
    );
}

async fn orders_filter_and_page_by_account(db: Db) {
    let events = trading_session();
    db.persist_engine_events(&events).await.expect("persist");
    let all = db
        .list_orders(BOB.0, &OrderFilter::default(), 10)
        .await
        .expect("orders");
    let ids: Vec<u64> = all.iter().map(|o| o.order_id).collect();
    assert_eq!(ids, [4, 3], "newest first");
    let live = OrderFilter {
        live_only: true,
        ..OrderFilter::default()
    };
    let live_ids: Vec<u64> = db
        .list_orders(BOB.0, &live, 10)
        .await
        .expect("live")
        .iter()
        .map(|o| o.order_id)
        .collect();
    assert_eq!(live_ids, [4]);
    let cancelled = OrderFilter {
        status: Some(OrderStatus::Cancelled),
        ..OrderFilter::default()
    };
    let alice_cancelled = db
        .list_orders(ALICE.0, &cancelled, 10)
        .await
        .expect("cancelled");
    assert_eq!(alice_cancelled.len(), 1);
    assert_eq!(alice_cancelled[0].order_id, 2);
    let other_product = OrderFilter {
        product_id: Some(PRODUCT.0 + 1),
        ..OrderFilter::default()
    };
    assert!(
        db.list_orders(ALICE.0, &other_product, 10)
            .await
            .expect("none")
            .is_empty()
    );
    // Keyset paging: one order per page, following created_event_seq.
    let page1 = db
        .list_orders(BOB.0, &OrderFilter::default(), 1)
        .await
        .expect("page 1");
    let after = OrderFilter {
        before_event_seq: Some(page1[0].created_event_seq),
        ..OrderFilter::default()
    };
    let page2 = db.list_orders(BOB.0, &after, 1).await.expect("page 2");
    assert_eq!((page1[0].order_id, page2[0].order_id), (4, 3));
    let last = OrderFilter {
        before_event_seq: Some(page2[0].created_event_seq),
        ..OrderFilter::default()
    };
    assert!(
        db.list_orders(BOB.0, &last, 1)
            .await
            .expect("page 3")
            .is_empty()
    );
    assert!(db.get_order(PRODUCT.0, 99).await.expect("get").is_none());
    // JSON as the API returns it: sides and statuses in snake case.
    let json = serde_json::to_value(&all[0]).expect("json");
    assert_eq!(json["side"], "buy");
    assert_eq!(json["status"], "open");
}

fn new_device(id: &str) -> NewDevice {
    NewDevice {
        device_id: id.to_string(),
        name: format!("battery {id}"),
        public_key_hex: Some("ab".repeat(32)),
        cert_fingerprint_sha256: Some(format!("fp-{id}")),
        mqtt_credential_hash: Some("$argon2id$v=19$test".into()),
        capacity_wh: 13_500,
        max_charge_w: 5_000,
        max_discharge_w: 5_000,
        registered_at_ns: T0,
    }
}

fn signed_schedule(device: &str, version: u64, target_w: i64) -> SignedSchedule {
    SignedSchedule {
        schedule: Schedule {
            device: DeviceId::new(device).expect("device id"),
            schedule_id: ScheduleId(0xfeed_0000 + u128::from(version)),
            version,
            issued_at: UtcNanos(T0 + version as i64 * NS_PER_S),
            valid_from: UtcNanos(T0 + 3_600 * NS_PER_S),
            valid_until: UtcNanos(T0 + 7_200 * NS_PER_S),
            randomize_start_s: 0,
            periods: vec![SchedulePeriod {
                offset_s: 0,
                target_w,
                ramp_s: 0,
            }]
            .into(),
            fallback: Fallback::Idle,
        },
        signature: vec![7; 64],
    }
}

fn ack(device: &str, version: u64, outbox_seq: u64, status: AckStatus) -> Ack {
    Ack {
        device: DeviceId::new(device).expect("device id"),
        outbox_seq,
        schedule_id: ScheduleId(0xfeed_0000 + u128::from(version)),
        version,
        status,
        at: UtcNanos(T0 + 100 * NS_PER_S + outbox_seq as i64),
    }
}

/// Schedule payloads are kept as stored JSON text: read back byte for byte (the
/// signed schedule decodes from it), and a row whose payload is not JSON is reported
/// as corrupt, naming the column, rather than served.
async fn a_schedule_payload_is_read_back_verbatim_and_a_corrupt_one_is_reported(db: Db) {
    db.register_device(&new_device("bat-1"))
        .await
        .expect("register");
    let signed = signed_schedule("bat-1", 1, 1_500);
    db.insert_schedule(&signed, T0 + 600 * NS_PER_S)
        .await
        .expect("insert");
    let row = db
        .schedule_history("bat-1", None, 10)
        .await
        .expect("history")
        .remove(0);
    assert_eq!(row.payload.get(), serde_json::to_string(&signed).unwrap());
    assert_eq!(row.signed_schedule().expect("decodes"), signed);
    let listed = serde_json::to_value(&row).expect("serialises");
    assert_eq!(listed["payload"], serde_json::to_value(&signed).unwrap());

    sqlx::query(
        "UPDATE schedules SET payload_json = '{\"schedule\": tru' WHERE device_id = 'bat-1'",
    )
    .execute(db.pool())
    .await
    .expect("corrupt the row");
    assert!(matches!(
        db.schedule_history("bat-1", None, 10).await,
        Err(DbError::Corrupt {
            table: "schedules",
            column: "payload_json",
            ..
        })
    ));
}

async fn newer_schedule_version_supersedes_older_non_final_versions(db: Db) {
    db.register_device(&new_device("bat-1"))
        .await
        .expect("register");
    db.register_device(&new_device("bat-2"))
        .await
        .expect("register");
    let deadline = T0 + 600 * NS_PER_S;
    let v1 = db
        .insert_schedule(&signed_schedule("bat-1", 1, 1_000), deadline)
        .await
        .expect("v1");
    assert!(v1.inserted);
    assert_eq!(
        (v1.schedule.status, v1.n_superseded),
        (DeliveryStatus::Issued, 0)
    );
    assert_eq!(
        v1.schedule.signed_schedule().expect("payload"),
        signed_schedule("bat-1", 1, 1_000)
    );
    // v2 completes before v3 arrives: a final status is not superseded.
    db.insert_schedule(&signed_schedule("bat-1", 2, 2_000), deadline)
        .await
        .expect("v2");
    db.update_schedule_status("bat-1", 2, DeliveryStatus::Completed, T0 + 50, None)
        .await
        .expect("complete v2");
    // Another device's schedule is untouched by bat-1's versions.
    db.insert_schedule(&signed_schedule("bat-2", 1, 500), deadline)
        .await
        .expect("bat-2 v1");
    let v4 = db
        .insert_schedule(&signed_schedule("bat-1", 4, 4_000), deadline)
        .await
        .expect("v4");
    assert_eq!(
        v4.n_superseded, 0,
        "v1 was superseded by v2 already, v2 is final"
    );

    let history = db
        .schedule_history("bat-1", None, 10)
        .await
        .expect("history");
    let summary: Vec<(u64, DeliveryStatus, Option<u64>)> = history
        .iter()
        .map(|s| (s.version, s.status, s.superseded_by_version))
        .collect();
    assert_eq!(
        summary,
        [
            (4, DeliveryStatus::Issued, None),
            (2, DeliveryStatus::Completed, None),
            (1, DeliveryStatus::Superseded, Some(2)),
        ]
    );
    let v5 = db
        .insert_schedule(&signed_schedule("bat-1", 5, 5_000), deadline)
        .await
        .expect("v5");
    assert_eq!(v5.n_superseded, 1);
    let v4_now = db.get_schedule("bat-1", 4).await.expect("get").expect("v4");
    assert_eq!(v4_now.status, DeliveryStatus::Superseded);
    assert_eq!(v4_now.superseded_by_version, Some(5));
    assert_eq!(
        v4_now.next_attempt_at_ns, None,
        "a superseded version is not retried"
    );
    let latest = db
        .latest_schedule("bat-1")
        .await
        .expect("latest")
        .expect("some");
    assert_eq!(latest.version, 5);
    assert_eq!(
        db.get_device("bat-1")
            .await
            .expect("get")
            .expect("device")
            .latest_schedule_version,
        5
    );
    let other = db
        .latest_schedule("bat-2")
        .await
        .expect("latest")
        .expect("some");
    assert_eq!((other.version, other.status), (1, DeliveryStatus::Issued));
    // History pages by version.
    let page = db
        .schedule_history("bat-1", Some(4), 1)
        .await
        .expect("page");
    assert_eq!(page[0].version, 2);
    assert!(
        db.latest_schedule("nobody")
            .await
            .expect("latest")
            .is_none()
    );
    let counts = db
        .schedule_status_counts(Some("bat-1"))
        .await
        .expect("counts");
    let count_of = |status| {
        counts
            .iter()
            .find(|c| c.status == status)
            .map_or(0, |c| c.n_schedules)
    };
    assert_eq!(count_of(DeliveryStatus::Superseded), 2);
    assert_eq!(count_of(DeliveryStatus::Completed), 1);
    assert_eq!(count_of(DeliveryStatus::Issued), 1);
    let fleet = db.schedule_status_counts(None).await.expect("fleet counts");
    assert_eq!(fleet.iter().map(|c| c.n_schedules).sum::<u64>(), 5);
}

async fn stale_schedule_version_is_refused_and_identical_retry_is_idempotent(db: Db) {
    db.register_device(&new_device("bat-1"))
        .await
        .expect("register");
    let deadline = T0 + 600 * NS_PER_S;
    db.insert_schedule(&signed_schedule("bat-1", 3, 1_000), deadline)
        .await
        .expect("v3");
    let retry = db
        .insert_schedule(&signed_schedule("bat-1", 3, 1_000), deadline)
        .await
        .expect("retry");
    assert!(!retry.inserted);
    assert_eq!(retry.schedule.version, 3);
    for (version, target_w) in [(3, 9_999), (2, 1_000)] {
        match db
            .insert_schedule(&signed_schedule("bat-1", version, target_w), deadline)
            .await
        {
            Err(DbError::StaleScheduleVersion {
                version: v,
                latest: 3,
                ..
            }) => assert_eq!(v, version),
            other => panic!("expected a stale version error, got {other:?}"),
        }
    }
    assert!(matches!(
        db.insert_schedule(&signed_schedule("bat-1", 0, 1), deadline)
            .await,
        Err(DbError::InvalidInput {
            field: "version",
            ..
        })
    ));
    let mut broken = signed_schedule("bat-1", 4, 1);
    broken.schedule.valid_until = broken.schedule.valid_from;
    assert!(matches!(
        db.insert_schedule(&broken, deadline).await,
        Err(DbError::InvalidInput {
            field: "schedule",
            ..
        })
    ));
    assert!(matches!(
        db.insert_schedule(&signed_schedule("bat-1", 4, 1), T0)
            .await,
        Err(DbError::InvalidInput {
            field: "deadline_at_ns",
            ..
        })
    ));
    assert_eq!(
        db.schedule_history("bat-1", None, 10)
            .await
            .expect("history")
            .len(),
        1
    );
}

async fn schedule_retry_and_deadline_bookkeeping(db: Db) {
    db.register_device(&new_device("bat-1"))
        .await
        .expect("register");
    db.register_device(&new_device("bat-2"))
        .await
        .expect("register");
    let deadline = T0 + 600 * NS_PER_S;
    db.insert_schedule(&signed_schedule("bat-1", 1, 1_000), deadline)
        .await
        .expect("bat-1");
    db.insert_schedule(&signed_schedule("bat-2", 1, 1_000), deadline)
        .await
        .expect("bat-2");
    let now = T0 + 10 * NS_PER_S;
    assert_eq!(db.list_schedules_due(now, 10).await.expect("due").len(), 2);
    let after_attempt = db
        .record_schedule_attempt("bat-1", 1, now, Some(now + 5 * NS_PER_S))
        .await
        .expect("attempt");
    assert_eq!(after_attempt.attempts, 1);
    assert_eq!(after_attempt.last_attempt_at_ns, Some(now));
    let due: Vec<String> = db
        .list_schedules_due(now, 10)
        .await
        .expect("due")
        .into_iter()
        .map(|s| s.device_id)
        .collect();
    assert_eq!(due, ["bat-2"]);
    // Received: no longer due for retry.
    db.update_schedule_status("bat-2", 1, DeliveryStatus::Received, now, None)
        .await
        .expect("received");
    let later = now + 5 * NS_PER_S;
    let due_later: Vec<String> = db
        .list_schedules_due(later, 10)
        .await
        .expect("due")
        .into_iter()
        .map(|s| s.device_id)
        .collect();
    assert_eq!(due_later, ["bat-1"]);
    // Past the deadline neither is due; both unaccepted versions fail.
    assert!(
        db.list_schedules_due(deadline, 10)
            .await
            .expect("due")
            .is_empty()
    );
    assert_eq!(
        db.fail_overdue_schedules(deadline).await.expect("overdue"),
        2
    );
    let failed = db
        .get_schedule("bat-1", 1)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(failed.status, DeliveryStatus::Failed);
    assert_eq!(failed.status_detail.as_deref(), Some("deadline_passed"));
    assert_eq!(db.fail_overdue_schedules(deadline).await.expect("again"), 0);
    assert!(matches!(
        db.record_schedule_attempt("bat-1", 9, now, None).await,
        Err(DbError::NotFound {
            entity: "schedule",
            ..
        })
    ));
    assert!(matches!(
        db.update_schedule_status("bat-1", 9, DeliveryStatus::Accepted, now, None)
            .await,
        Err(DbError::NotFound {
            entity: "schedule",
            ..
        })
    ));
}

async fn same_ack_twice_is_one_row_and_status_only_moves_forward(db: Db) {
    db.register_device(&new_device("bat-1"))
        .await
        .expect("register");
    db.insert_schedule(&signed_schedule("bat-1", 1, 1_000), T0 + 600 * NS_PER_S)
        .await
        .expect("v1");
    let accepted = ack("bat-1", 1, 2, AckStatus::Accepted);
    let first = db.record_ack(&accepted, T0 + 200).await.expect("first");
    assert!(first.inserted);
    assert_eq!(
        first.schedule.as_ref().map(|s| s.status),
        Some(DeliveryStatus::Accepted)
    );
    let again = db.record_ack(&accepted, T0 + 300).await.expect("again");
    assert!(!again.inserted);
    // A late "received" (outbox resend order) does not move the status back.
    let received = db
        .record_ack(&ack("bat-1", 1, 1, AckStatus::Received), T0 + 400)
        .await
        .expect("received");
    assert!(received.inserted);
    assert_eq!(
        received.schedule.map(|s| s.status),
        Some(DeliveryStatus::Accepted)
    );
    let failed = db
        .record_ack(
            &ack(
                "bat-1",
                1,
                3,
                AckStatus::Failed(voltex_dispatch::message::FailureReason::SocLimit),
            ),
            T0 + 500,
        )
        .await
        .expect("failed");
    let schedule = failed.schedule.expect("known schedule");
    assert_eq!(schedule.status, DeliveryStatus::Failed);
    assert_eq!(schedule.status_detail.as_deref(), Some("soc_limit"));
    // Final: a later "completed" is logged but does not replace it.
    db.record_ack(&ack("bat-1", 1, 4, AckStatus::Completed), T0 + 600)
        .await
        .expect("completed");
    let row = db
        .get_schedule("bat-1", 1)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(row.status, DeliveryStatus::Failed);
    // An ack for a version the platform never issued is kept, with no schedule.
    let unknown = db
        .record_ack(
            &ack(
                "bat-1",
                7,
                5,
                AckStatus::Rejected(ScheduleRejection::OlderVersion),
            ),
            T0,
        )
        .await
        .expect("unknown version");
    assert!(unknown.inserted && unknown.schedule.is_none());

    let logs = db
        .list_execution_logs("bat-1", None, 10)
        .await
        .expect("logs");
    let statuses: Vec<DeliveryStatus> = logs.iter().map(|l| l.status).collect();
    assert_eq!(
        statuses,
        [
            DeliveryStatus::Rejected,
            DeliveryStatus::Completed,
            DeliveryStatus::Failed,
            DeliveryStatus::Received,
            DeliveryStatus::Accepted,
        ],
        "one row per distinct ack, newest first"
    );
    assert_eq!(logs[0].status_detail.as_deref(), Some("older_version"));
    let page = db
        .list_execution_logs("bat-1", Some(logs[1].log_id), 2)
        .await
        .expect("page");
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].log_id, logs[2].log_id);
}

async fn writes_naming_an_unknown_device_fail_with_not_found(db: Db) {
    let not_found = |result: Result<_, DbError>| {
        matches!(
            result,
            Err(DbError::NotFound {
                entity: "device",
                ..
            })
        )
    };
    assert!(not_found(
        db.insert_schedule(&signed_schedule("ghost", 1, 1), T0 + NS_PER_S)
            .await
            .map(|_| ())
    ));
    assert!(not_found(
        db.record_ack(&ack("ghost", 1, 1, AckStatus::Received), T0)
            .await
            .map(|_| ())
    ));
    let batch = TelemetryBatch {
        device: DeviceId::new("ghost").expect("id"),
        samples: vec![sample(1, T0)],
    };
    assert!(not_found(db.insert_telemetry(&batch, T0).await.map(|_| ())));
    let update = DeviceStatusUpdate {
        device_id: "ghost".into(),
        seen_at_ns: T0,
        online: Some(true),
        soc: None,
    };
    assert!(not_found(
        db.update_device_status(&update).await.map(|_| ())
    ));
    assert!(db.get_device("ghost").await.expect("get").is_none());
    // Registration refuses bad ids and duplicates with typed errors.
    assert!(matches!(
        db.register_device(&new_device("bad id/with slash")).await,
        Err(DbError::InvalidInput {
            field: "device_id",
            ..
        })
    ));
    let mut negative = new_device("bat-x");
    negative.max_charge_w = -1;
    assert!(matches!(
        db.register_device(&negative).await,
        Err(DbError::InvalidInput {
            field: "max_charge_w",
            ..
        })
    ));
    db.register_device(&new_device("bat-1"))
        .await
        .expect("register");
    assert!(matches!(
        db.register_device(&new_device("bat-1")).await,
        Err(DbError::AlreadyExists {
            entity: "device",
            ..
        })
    ));
    let mut same_cert = new_device("bat-2");
    same_cert.cert_fingerprint_sha256 = Some("fp-bat-1".into());
    assert!(matches!(
        db.register_device(&same_cert).await,
        Err(DbError::AlreadyExists { .. })
    ));
    let by_cert = db
        .get_device_by_cert_fingerprint("fp-bat-1")
        .await
        .expect("get");
    assert_eq!(by_cert.map(|d| d.device_id), Some("bat-1".to_string()));
}

async fn devices_page_without_gaps_or_duplicates(db: Db) {
    let mut ids: Vec<String> = (0..25).map(|i| format!("bat-{i:03}")).collect();
    for id in ids.iter().rev() {
        db.register_device(&new_device(id)).await.expect("register");
    }
    ids.sort();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut page_sizes = Vec::new();
    loop {
        let page = db
            .list_devices(after.as_deref(), None, 10)
            .await
            .expect("page");
        if page.is_empty() {
            break;
        }
        page_sizes.push(page.len());
        after = page.last().map(|d| d.device_id.clone());
        seen.extend(page.into_iter().map(|d| d.device_id));
    }
    assert_eq!(page_sizes, [10, 10, 5]);
    assert_eq!(seen, ids);
    // Filter by online.
    let update = DeviceStatusUpdate {
        device_id: "bat-007".into(),
        seen_at_ns: T0 + NS_PER_S,
        online: Some(true),
        soc: None,
    };
    db.update_device_status(&update).await.expect("online");
    let online = db
        .list_devices(None, Some(true), 100)
        .await
        .expect("online");
    assert_eq!(online.len(), 1);
    assert_eq!(online[0].device_id, "bat-007");
    assert_eq!(
        db.list_devices(None, Some(false), 100)
            .await
            .expect("offline")
            .len(),
        24
    );
    let counts = db.fleet_counts().await.expect("counts");
    assert_eq!((counts.n_devices, counts.n_online), (25, 1));
    // The credential hash is stored but never serialized.
    let device = db
        .get_device("bat-007")
        .await
        .expect("get")
        .expect("device");
    assert!(device.mqtt_credential_hash.is_some());
    let json = serde_json::to_value(&device).expect("json");
    assert!(json.get("mqtt_credential_hash").is_none());
    assert_eq!(json["online"], true);
}

async fn device_status_moves_forward_only(db: Db) {
    db.register_device(&new_device("bat-1"))
        .await
        .expect("register");
    let update = |seen_s: i64, online: Option<bool>, soc: Option<(i64, i64)>| DeviceStatusUpdate {
        device_id: "bat-1".into(),
        seen_at_ns: T0 + seen_s * NS_PER_S,
        online,
        soc: soc.map(|(soc_wh, at_s)| SocReading {
            soc_wh,
            at_ns: T0 + at_s * NS_PER_S,
        }),
    };
    let d = db
        .update_device_status(&update(10, Some(true), Some((5_000, 9))))
        .await
        .expect("1");
    assert_eq!(
        (d.online, d.last_seen_at_ns, d.last_soc_wh),
        (true, Some(T0 + 10 * NS_PER_S), Some(5_000))
    );
    // An older report changes neither last_seen nor the SoC.
    let d = db
        .update_device_status(&update(5, None, Some((1_000, 4))))
        .await
        .expect("2");
    assert_eq!(
        (d.online, d.last_seen_at_ns, d.last_soc_wh),
        (true, Some(T0 + 10 * NS_PER_S), Some(5_000))
    );
    // Heartbeat timeout marks it offline.
    assert_eq!(
        db.mark_silent_devices_offline(T0 + 11 * NS_PER_S)
            .await
            .expect("silent"),
        1
    );
    assert!(
        !db.get_device("bat-1")
            .await
            .expect("get")
            .expect("device")
            .online
    );
    assert_eq!(
        db.mark_silent_devices_offline(T0 + 11 * NS_PER_S)
            .await
            .expect("again"),
        0
    );
}

fn sample(outbox_seq: u64, at_ns: i64) -> Telemetry {
    Telemetry {
        outbox_seq,
        at: UtcNanos(at_ns),
        soc_wh: 1_000 + outbox_seq as i64,
        power_w: -2_500,
        charged_wh: 10 * outbox_seq,
        discharged_wh: 5 * outbox_seq,
        temperature_mc: -1_500,
        health: HealthFlags(0b101),
    }
}

async fn telemetry_resent_is_stored_once(db: Db) {
    db.register_device(&new_device("bat-1"))
        .await
        .expect("register");
    let batch = TelemetryBatch {
        device: DeviceId::new("bat-1").expect("id"),
        samples: (1..=5)
            .map(|i| sample(i, T0 + i as i64 * NS_PER_S))
            .collect(),
    };
    assert_eq!(
        db.insert_telemetry(&batch, T0 + 10).await.expect("first"),
        5
    );
    assert_eq!(
        db.insert_telemetry(&batch, T0 + 20).await.expect("resend"),
        0
    );
    let longer = TelemetryBatch {
        device: batch.device.clone(),
        samples: (4..=7)
            .map(|i| sample(i, T0 + i as i64 * NS_PER_S))
            .collect(),
    };
    assert_eq!(
        db.insert_telemetry(&longer, T0 + 30)
            .await
            .expect("overlap"),
        2
    );
    let latest = db
        .latest_telemetry("bat-1")
        .await
        .expect("latest")
        .expect("sample");
    assert_eq!((latest.outbox_seq, latest.soc_wh), (7, 1_007));
    assert_eq!(
        (
            latest.temperature_mc,
            latest.health_flags,
            latest.charged_wh
        ),
        (-1_500, 5, 70)
    );
    let range = db
        .list_telemetry("bat-1", T0 + 2 * NS_PER_S, T0 + 5 * NS_PER_S, 100)
        .await
        .expect("range");
    let seqs: Vec<u64> = range.iter().map(|t| t.outbox_seq).collect();
    assert_eq!(seqs, [2, 3, 4]);
    let device = db.get_device("bat-1").await.expect("get").expect("device");
    assert_eq!(
        (device.last_soc_wh, device.last_soc_at_ns),
        (Some(1_007), Some(T0 + 7 * NS_PER_S))
    );
    assert!(db.latest_telemetry("bat-2").await.expect("none").is_none());
}

async fn ml_models_record_once_with_metrics(db: Db) {
    let model = |version: u32, mae: &str| NewMlModel {
        name: "lear-de".into(),
        version,
        kind: "lear".into(),
        trained_at_ns: T0 + i64::from(version),
        parameters: serde_json::json!({ "calibration_window_days": 364 }),
        metrics: serde_json::json!({ "mae_eur_per_mwh": mae, "smape": "0.12" }),
    };
    db.insert_ml_model(&model(1, "9.10")).await.expect("v1");
    db.insert_ml_model(&model(2, "8.75")).await.expect("v2");
    assert!(matches!(
        db.insert_ml_model(&model(2, "0")).await,
        Err(DbError::AlreadyExists {
            entity: "ml_model",
            ..
        })
    ));
    let mut naive = model(1, "12.0");
    naive.name = "naive".into();
    naive.kind = "naive".into();
    db.insert_ml_model(&naive).await.expect("naive");
    let all = db.list_ml_models(None, 10).await.expect("all");
    let keys: Vec<(String, u32)> = all.iter().map(|m| (m.name.clone(), m.version)).collect();
    assert_eq!(
        keys,
        [
            ("lear-de".into(), 2),
            ("lear-de".into(), 1),
            ("naive".into(), 1)
        ]
    );
    assert_eq!(all[0].metrics["mae_eur_per_mwh"], "8.75");
    assert_eq!(all[0].parameters["calibration_window_days"], 364);
    assert_eq!(
        db.list_ml_models(Some("naive"), 10)
            .await
            .expect("naive")
            .len(),
        1
    );
}

async fn model_versions_are_assigned_and_identical_reruns_reuse_them(db: Db) {
    let model = |mae: f64| NewMlModel {
        name: "lear@NP".into(),
        version: 77, // ignored: the database assigns the version
        kind: "lear".into(),
        trained_at_ns: T0,
        parameters: serde_json::json!({ "windows_days": "56,84" }),
        metrics: serde_json::json!({ "mae_eur_per_mwh": mae }),
    };
    let first = db.record_model_version(&model(4.5)).await.expect("v1");
    assert_eq!(first.version, 1);
    let rerun = db.record_model_version(&model(4.5)).await.expect("rerun");
    assert_eq!(
        rerun.version, 1,
        "the same evaluation again is the same version"
    );
    let better = db.record_model_version(&model(4.25)).await.expect("v2");
    assert_eq!(better.version, 2);
    let versions: Vec<u32> = db
        .list_ml_models(Some("lear@NP"), 10)
        .await
        .expect("list")
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(versions, [2, 1]);
    let empty = NewMlModel {
        name: " ".into(),
        ..model(1.0)
    };
    assert!(matches!(
        db.record_model_version(&empty).await,
        Err(DbError::InvalidInput { field: "name", .. })
    ));
}

async fn a_device_certificate_is_recorded_replaced_and_never_shared(db: Db) {
    for id in ["bat-1", "bat-2"] {
        db.register_device(&new_device(id)).await.expect("register");
    }
    let first = "AB".repeat(32);
    let row = db
        .set_device_cert_fingerprint("bat-1", &first)
        .await
        .expect("first certificate");
    assert_eq!(
        row.cert_fingerprint_sha256.as_deref(),
        Some(&*"ab".repeat(32))
    );
    let found = db
        .get_device_by_cert_fingerprint(&"ab".repeat(32))
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(found.device_id, "bat-1");
    // Re-issue: the new certificate replaces the old one.
    let second = "cd".repeat(32);
    db.set_device_cert_fingerprint("bat-1", &second)
        .await
        .expect("re-issue");
    assert!(
        db.get_device_by_cert_fingerprint(&"ab".repeat(32))
            .await
            .expect("lookup")
            .is_none()
    );
    assert!(matches!(
        db.set_device_cert_fingerprint("bat-2", &second).await,
        Err(DbError::AlreadyExists { .. })
    ));
    assert!(matches!(
        db.set_device_cert_fingerprint("bat-9", &"ef".repeat(32))
            .await,
        Err(DbError::NotFound { .. })
    ));
    assert!(matches!(
        db.set_device_cert_fingerprint("bat-2", "xyz").await,
        Err(DbError::InvalidInput {
            field: "cert_fingerprint_sha256",
            ..
        })
    ));
}

async fn a_revoked_certificate_leaves_its_device_and_is_never_recorded_again(db: Db) {
    for id in ["bat-1", "bat-2"] {
        db.register_device(&new_device(id)).await.expect("register");
    }
    // The fingerprint recorded at registration is revoked; then nothing is recorded,
    // so a second revocation revokes and writes nothing.
    assert_eq!(
        db.revoke_device_certificate("bat-1", "revoked", 5)
            .await
            .expect("revoke"),
        Some("fp-bat-1".to_string())
    );
    assert_eq!(
        db.revoke_device_certificate("bat-1", "revoked", 6)
            .await
            .expect("revoke"),
        None
    );
    assert_eq!(
        db.list_revoked_certificate_fingerprints()
            .await
            .expect("list"),
        vec!["fp-bat-1".to_string()]
    );
    let first = "ab".repeat(32);
    let second = "cd".repeat(32);
    db.set_device_cert_fingerprint("bat-1", &first)
        .await
        .expect("record");
    assert_eq!(
        db.revoke_device_certificate("bat-1", "replaced", 10)
            .await
            .expect("revoke"),
        Some(first.clone())
    );
    let device = db.get_device("bat-1").await.expect("get").expect("device");
    assert_eq!(device.cert_fingerprint_sha256, None);
    assert!(db.is_certificate_revoked(&first).await.expect("check"));
    assert!(!db.is_certificate_revoked(&second).await.expect("check"));
    // A revoked certificate is never recorded again, on this device or another.
    for id in ["bat-1", "bat-2"] {
        assert!(matches!(
            db.set_device_cert_fingerprint(id, &first.to_uppercase())
                .await,
            Err(DbError::InvalidInput {
                field: "cert_fingerprint_sha256",
                ..
            })
        ));
    }
    db.set_device_cert_fingerprint("bat-1", &second)
        .await
        .expect("a new certificate");
    db.revoke_device_certificate("bat-1", "revoked", 20)
        .await
        .expect("revoke");
    assert_eq!(
        db.list_revoked_certificate_fingerprints()
            .await
            .expect("list"),
        vec!["fp-bat-1".to_string(), first, second],
        "in revocation order"
    );
    assert!(matches!(
        db.revoke_device_certificate("bat-9", "revoked", 30).await,
        Err(DbError::NotFound { .. })
    ));
}

async fn devices_in_fault_by_their_newest_sample(db: Db) {
    for id in ["bat-1", "bat-2", "bat-3"] {
        db.register_device(&new_device(id)).await.expect("register");
    }
    let flagged = |seq: u64, at_s: i64, flags: u32| {
        let mut sample = sample(seq, T0 + at_s * NS_PER_S);
        sample.health = HealthFlags(flags);
        sample
    };
    let batches = [
        (
            "bat-1",
            vec![flagged(1, 1, 0), flagged(2, 5, HealthFlags::DRIVER_FAULT)],
        ),
        (
            "bat-2",
            vec![
                flagged(1, 9, HealthFlags::EMERGENCY_STOP),
                flagged(2, 10, 0),
            ],
        ),
        (
            "bat-3",
            vec![flagged(
                1,
                3,
                HealthFlags::ON_FALLBACK | HealthFlags::CLOCK_SKEW,
            )],
        ),
    ];
    for (id, samples) in batches {
        let batch = TelemetryBatch {
            device: DeviceId::new(id).expect("id"),
            samples,
        };
        db.insert_telemetry(&batch, T0).await.expect("telemetry");
    }
    let mask = HealthFlags::DRIVER_FAULT | HealthFlags::EMERGENCY_STOP | HealthFlags::CLOCK_SKEW;
    let faults: Vec<(String, u32)> = db
        .devices_in_fault(mask, 10)
        .await
        .expect("faults")
        .into_iter()
        .map(|row| (row.device_id, row.health_flags))
        .collect();
    assert_eq!(
        faults,
        [
            ("bat-1".to_string(), HealthFlags::DRIVER_FAULT),
            (
                "bat-3".to_string(),
                HealthFlags::ON_FALLBACK | HealthFlags::CLOCK_SKEW
            ),
        ],
        "newest sample first; bat-2 recovered after its emergency stop"
    );
    assert_eq!(db.devices_in_fault(mask, 1).await.expect("one").len(), 1);
    assert!(
        db.devices_in_fault(HealthFlags::OVER_TEMPERATURE, 10)
            .await
            .expect("none")
            .is_empty()
    );
    assert!(matches!(
        db.devices_in_fault(mask, 0).await,
        Err(DbError::InvalidInput { field: "limit", .. })
    ));
}

async fn dayahead_periods_upsert_settle_and_list_newest(db: Db) {
    let period = |hour: u8| voltex::db::DayAheadPeriodRow {
        period_start_ns: T0 + i64::from(hour) * 10 * NS_PER_S,
        period_len_s: 10,
        delivery_day: "2017-01-02".into(),
        delivery_hour: hour,
        clearing_price_cents_per_mwh: -1_250 + i64::from(hour),
        forecast_price_cents_per_mwh: 3_000,
        model_name: "dayahead-naive".into(),
        model_version: 3,
        committed_w: -5_000,
        // One legacy row without the plan (written before the cycle bid).
        planned_w: (hour != 5).then_some(-5_000 - i64::from(hour)),
        perfect_foresight_w: 5_000,
        trading_cents: 6,
        perfect_foresight_cents: 12,
        delivered_w: None,
        imbalance_cents: None,
        wear_cents: None,
        updated_at_ns: T0,
    };
    let rows: Vec<_> = (0..24).map(period).collect();
    assert_eq!(db.upsert_dayahead_periods(&rows).await.expect("commit"), 24);
    // Settlement rewrites the same rows.
    let settled: Vec<_> = rows
        .iter()
        .map(|row| voltex::db::DayAheadPeriodRow {
            delivered_w: Some(-4_000),
            imbalance_cents: Some(-2),
            wear_cents: Some(1),
            updated_at_ns: T0 + 1,
            ..row.clone()
        })
        .collect();
    db.upsert_dayahead_periods(&settled[..12])
        .await
        .expect("settle");
    let all = db
        .list_dayahead_periods(i64::MIN, i64::MAX, 100)
        .await
        .expect("all");
    assert_eq!(all.len(), 24, "an upsert never duplicates a period");
    assert_eq!(all[..12], settled[..12]);
    assert_eq!(all[12..], rows[12..]);
    let newest = db
        .list_dayahead_periods(i64::MIN, i64::MAX, 3)
        .await
        .expect("newest");
    let hours: Vec<u8> = newest.iter().map(|row| row.delivery_hour).collect();
    assert_eq!(hours, [21, 22, 23], "the newest periods, oldest first");
    let range = db
        .list_dayahead_periods(T0 + 10 * NS_PER_S, T0 + 30 * NS_PER_S, 100)
        .await
        .expect("range");
    assert_eq!(range.len(), 2);
    let bad = voltex::db::DayAheadPeriodRow {
        period_len_s: 0,
        ..period(0)
    };
    assert!(matches!(
        db.upsert_dayahead_periods(&[bad]).await,
        Err(DbError::InvalidInput {
            field: "period_len_s",
            ..
        })
    ));
    let unnamed = voltex::db::DayAheadPeriodRow {
        model_name: String::new(),
        ..period(0)
    };
    assert!(matches!(
        db.upsert_dayahead_periods(&[unnamed]).await,
        Err(DbError::InvalidInput {
            field: "model_name",
            ..
        })
    ));
}

async fn analytics_upsert_replaces_and_totals_sum_devices(db: Db) {
    let hour = 3_600 * NS_PER_S;
    let row =
        |period: i64, device: Option<&str>, charged_wh: i64, revenue_cents: i64| AggregateRow {
            period_start_ns: T0 + period * hour,
            period_len_s: 3_600,
            device_id: device.map(str::to_string),
            charged_wh,
            discharged_wh: charged_wh / 2,
            n_schedules: 1,
            n_acks_completed: 1,
            n_acks_failed: 0,
            revenue_cents,
            updated_at_ns: T0,
        };
    let rows = vec![
        row(0, Some("bat-1"), 1_000, 150),
        row(0, Some("bat-2"), 2_000, -40),
        row(0, None, 3_000, 110),
        row(1, Some("bat-1"), 500, 7),
        row(5, Some("bat-1"), 9_999, 9_999),
    ];
    assert_eq!(db.upsert_aggregates(&rows).await.expect("upsert"), 5);
    // Recomputing a period replaces its row.
    db.upsert_aggregates(&[row(1, Some("bat-1"), 600, 8)])
        .await
        .expect("recompute");
    let totals = db.fleet_totals(T0, T0 + 2 * hour).await.expect("totals");
    assert_eq!(totals.n_rows, 3);
    assert_eq!(totals.charged_wh, 1_000 + 2_000 + 600);
    assert_eq!(totals.revenue_cents, 150 - 40 + 8);
    assert_eq!(totals.n_schedules, 3);
    let bat1 = db
        .list_aggregates(
            T0,
            T0 + 10 * hour,
            &AggregateScope::Device("bat-1".into()),
            100,
        )
        .await
        .expect("bat-1");
    let charged: Vec<i64> = bat1.iter().map(|r| r.charged_wh).collect();
    assert_eq!(charged, [1_000, 600, 9_999]);
    let fleet = db
        .list_aggregates(T0, T0 + 10 * hour, &AggregateScope::Fleet, 100)
        .await
        .expect("fleet");
    assert_eq!(fleet.len(), 1);
    assert_eq!(fleet[0].device_id, None);
    let devices = db
        .list_aggregates(T0, T0 + hour, &AggregateScope::AllDevices, 100)
        .await
        .expect("devices");
    let ids: Vec<Option<String>> = devices.iter().map(|r| r.device_id.clone()).collect();
    assert_eq!(ids, [Some("bat-1".into()), Some("bat-2".into())]);
    let empty = db.fleet_totals(T0 - hour, T0).await.expect("empty");
    assert_eq!(empty, voltex::db::FleetTotals::default());
    let mut bad = row(0, Some("bat-1"), 1, 1);
    bad.period_len_s = 0;
    assert!(matches!(
        db.upsert_aggregates(&[bad]).await,
        Err(DbError::InvalidInput {
            field: "period_len_s",
            ..
        })
    ));
}

async fn audit_log_lists_newest_first_with_paging(db: Db) {
    let mut ids = Vec::new();
    let mut batch = Vec::new();
    for i in 0..5 {
        let entry = NewAuditEntry {
            at_ns: T0 + i,
            actor: "alice".into(),
            role: "trader".into(),
            action: "order.submit".into(),
            target: format!("order:{i}"),
            correlation_id: format!("corr-{i}"),
            result: if i == 3 {
                "rejected".into()
            } else {
                "ok".into()
            },
            detail: (i % 2 == 0).then(|| serde_json::json!({ "price": "50.00" })),
            command_seq: None,
        };
        if i < 3 {
            ids.push(db.append_audit(&entry).await.expect("append"));
        } else {
            batch.push(entry);
        }
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    // The audit writer's group commit: the last two in one transaction, in order.
    db.append_audit_batch(&batch).await.expect("append a batch");
    db.append_audit_batch(&[])
        .await
        .expect("an empty batch is a no-op");
    let first = db.list_audit(None, 2).await.expect("page 1");
    let targets: Vec<&str> = first.iter().map(|a| a.target.as_str()).collect();
    assert_eq!(targets, ["order:4", "order:3"]);
    assert_eq!(
        first[0].detail.as_ref().map(|d| d["price"].clone()),
        Some("50.00".into())
    );
    assert_eq!(first[1].detail, None);
    assert_eq!(first[1].result, "rejected");
    let rest = db
        .list_audit(Some(first[1].audit_id), 10)
        .await
        .expect("page 2");
    let targets: Vec<&str> = rest.iter().map(|a| a.target.as_str()).collect();
    assert_eq!(targets, ["order:2", "order:1", "order:0"]);
}

/// A batch larger than one INSERT statement takes (three statements, one
/// transaction): every record once, in the batch's order.
async fn a_large_audit_batch_is_stored_whole_and_in_order(db: Db) {
    let n = 2 * voltex::db::INSERT_BATCH_ROWS_MAX + 201;
    let batch: Vec<NewAuditEntry> = (0..n)
        .map(|i| NewAuditEntry {
            at_ns: T0 + i as i64,
            actor: format!("trader-{}", i % 7),
            role: "trader".into(),
            action: "order.submit".into(),
            target: format!("order:{i}"),
            correlation_id: format!("corr-{i}"),
            result: "ok".into(),
            detail: (i % 100 == 0).then(|| serde_json::json!({ "i": i })),
            command_seq: None,
        })
        .collect();
    db.append_audit_batch(&batch).await.expect("append");
    let mut newest_first = Vec::new();
    let mut before = None;
    loop {
        let page = db.list_audit(before, 1_000).await.expect("a page");
        let Some(last) = page.last() else { break };
        before = Some(last.audit_id);
        newest_first.extend(page);
    }
    let targets: Vec<String> = newest_first
        .iter()
        .rev()
        .map(|a| a.target.clone())
        .collect();
    let expected: Vec<String> = (0..n).map(|i| format!("order:{i}")).collect();
    assert_eq!(targets, expected);
    let with_detail = newest_first.iter().filter(|a| a.detail.is_some()).count();
    assert_eq!(with_detail, n.div_ceil(100));
}

/// The audit records the server projects from journaled commands: stored with their
/// commands' events, once each, whatever is replayed.
async fn journaled_audit_records_are_stored_once_with_their_commands(db: Db) {
    let events = trading_session();
    let record = |seq: u64| NewAuditEntry {
        at_ns: T0 + seq as i64,
        actor: "alice".into(),
        role: "trader".into(),
        action: "order.submit".into(),
        target: format!("order:{seq}"),
        correlation_id: format!("corr-{seq}"),
        result: "ok".into(),
        detail: None,
        command_seq: Some(seq),
    };
    let records_of = |events: &[EngineEvent]| {
        let mut seqs: Vec<u64> = events.iter().map(|e| e.command_seq).collect();
        seqs.dedup();
        seqs.into_iter().map(record).collect::<Vec<_>>()
    };
    let stored_seqs = async || {
        let mut seqs: Vec<u64> = db
            .list_audit(None, 1_000)
            .await
            .expect("list")
            .iter()
            .filter_map(|row| row.command_seq)
            .collect();
        seqs.sort_unstable();
        seqs
    };
    // Split at a command boundary: a command's events and record travel together.
    let mid = events.len() / 2;
    let split = (mid..events.len())
        .find(|&i| events[i].command_seq != events[mid - 1].command_seq)
        .expect("a later command");
    let (first, second) = events.split_at(split);
    db.persist_journaled_engine_events(first, &records_of(first))
        .await
        .expect("first half");
    db.persist_journaled_engine_events(second, &records_of(second))
        .await
        .expect("second half");
    let all_seqs: Vec<u64> = records_of(&events)
        .iter()
        .filter_map(|r| r.command_seq)
        .collect();
    assert_eq!(stored_seqs().await, all_seqs);
    let row = db.list_audit(None, 1).await.expect("newest")[0].clone();
    assert_eq!(
        (row.actor.as_str(), row.command_seq, row.at_ns),
        (
            "alice",
            all_seqs.last().copied(),
            T0 + *all_seqs.last().unwrap() as i64
        )
    );

    // A restart's replay hands everything again: nothing is stored twice.
    let replay = db
        .persist_journaled_engine_events(&events, &records_of(&events))
        .await
        .expect("replay");
    assert_eq!(replay.n_applied, 0);
    assert_eq!(stored_seqs().await, all_seqs);

    // A command without events (its record alone) is stored and moves the cursor.
    let last_seq = *all_seqs.last().unwrap();
    let lone = [record(last_seq + 1)];
    db.persist_journaled_engine_events(&[], &lone)
        .await
        .expect("a record alone");
    assert_eq!(
        db.engine_cursor().await.expect("cursor").last_command_seq,
        last_seq + 1
    );
    db.persist_journaled_engine_events(&[], &lone)
        .await
        .expect("again");
    let mut expected = all_seqs.clone();
    expected.push(last_seq + 1);
    assert_eq!(stored_seqs().await, expected);

    // The writer's path skips a command seq stored already, keeps one without.
    let mut writer_record = record(last_seq + 1);
    writer_record.command_seq = None;
    db.append_audit_batch(&[record(1), writer_record])
        .await
        .expect("a batch");
    assert_eq!(stored_seqs().await, expected);
    assert_eq!(
        db.list_audit(None, 1_000).await.expect("list").len(),
        expected.len() + 1
    );
    // A command seq the database cannot hold is refused, nothing stored.
    let huge = record(u64::MAX);
    assert!(matches!(
        db.persist_journaled_engine_events(&[], std::slice::from_ref(&huge))
            .await,
        Err(DbError::InvalidInput {
            field: "command_seq",
            ..
        })
    ));
    assert!(matches!(
        db.append_audit_batch(&[huge]).await,
        Err(DbError::InvalidInput {
            field: "command_seq",
            ..
        })
    ));
    assert_eq!(
        db.list_audit(None, 1_000).await.expect("list").len(),
        expected.len() + 1
    );
}

async fn accounts_create_get_list(db: Db) {
    db.create_account(2, "bob", T0).await.expect("bob");
    db.create_account(1, "alice", T0).await.expect("alice");
    assert!(matches!(
        db.create_account(1, "other", T0).await,
        Err(DbError::AlreadyExists {
            entity: "account",
            ..
        })
    ));
    assert!(matches!(
        db.create_account(3, "alice", T0).await,
        Err(DbError::AlreadyExists {
            entity: "account",
            ..
        })
    ));
    assert!(matches!(
        db.create_account(3, " ", T0).await,
        Err(DbError::InvalidInput { field: "name", .. })
    ));
    assert_eq!(
        db.get_account(1).await.expect("get").map(|a| a.name),
        Some("alice".into())
    );
    assert!(db.get_account(9).await.expect("get").is_none());
    let names: Vec<String> = db
        .list_accounts(None, 10)
        .await
        .expect("list")
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    let after = db.list_accounts(Some(1), 10).await.expect("after");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].account_id, 2);
}

async fn page_limits_are_enforced(db: Db) {
    for limit in [0, PAGE_LIMIT_MAX + 1] {
        assert!(matches!(
            db.list_devices(None, None, limit).await,
            Err(DbError::InvalidInput { field: "limit", .. })
        ));
        assert!(matches!(
            db.list_audit(None, limit).await,
            Err(DbError::InvalidInput { field: "limit", .. })
        ));
        assert!(matches!(
            db.list_orders(1, &OrderFilter::default(), limit).await,
            Err(DbError::InvalidInput { field: "limit", .. })
        ));
    }
    db.ping().await.expect("ping");
}

// ---------------------------------------------------------------------------------
// Connection-level behaviour.
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn invalid_urls_are_typed_errors() {
    for url in [
        "mysql://root@localhost/voltex",
        "voltex.db",
        "",
        "http://example.com",
    ] {
        match Db::connect(url).await {
            Err(DbError::InvalidUrl(_)) => {}
            other => panic!("{url:?}: expected InvalidUrl, got {other:?}"),
        }
    }
    match Db::connect("sqlite://x.db?mode=sideways").await {
        Err(DbError::InvalidUrl(_)) => {}
        other => panic!("expected InvalidUrl for a bad sqlite option, got {other:?}"),
    }
}

#[tokio::test]
async fn unopenable_databases_are_connect_errors() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let missing_dir = dir.path().join("no/such/dir/voltex.db");
    let error = Db::connect(&format!("sqlite://{}", missing_dir.display()))
        .await
        .expect_err("no directory");
    assert!(matches!(error, DbError::Connect(_)), "{error:?}");
    assert!(error.is_unavailable());
    let config = DbConfig {
        acquire_timeout: Duration::from_secs(2),
        ..DbConfig::default()
    };
    // Nothing listens on port 1.
    let error = Db::connect_with("postgres://postgres@127.0.0.1:1/voltex", &config)
        .await
        .expect_err("no server");
    assert!(matches!(error, DbError::Connect(_)), "{error:?}");
}

#[tokio::test]
async fn sqlite_file_survives_reopen_and_replay_after_restart() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("voltex.db").display());
    let events = trading_session();
    let db = Db::connect(&url).await.expect("open");
    db.persist_engine_events(&events[..4])
        .await
        .expect("persist part");
    db.close().await;
    // Restart: migrations run again (no-op), the cursor survived, a full replay fills
    // in exactly the rest.
    let db = Db::connect(&url).await.expect("reopen");
    assert_eq!(db.last_persisted_seq().await.expect("cursor"), 4);
    let outcome = db.persist_engine_events(&events).await.expect("replay");
    assert_eq!(
        (outcome.n_skipped, outcome.n_applied),
        (4, events.len() as u64 - 4)
    );
    let alice = db.list_positions(ALICE.0).await.expect("positions");
    assert_eq!((alice[0].net_qty_lots, alice[0].n_trades), (-15, 2));
    // The file is in WAL mode with full synchronous writes.
    let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(db.pool())
        .await
        .expect("journal_mode");
    assert_eq!(journal_mode.to_lowercase(), "wal");
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(db.pool())
        .await
        .expect("synchronous");
    assert_eq!(synchronous, 2, "2 = FULL");
    let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(db.pool())
        .await
        .expect("foreign_keys");
    assert_eq!(foreign_keys, 1);
    db.close().await;
}
