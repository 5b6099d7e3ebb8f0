//! The order book's hot path allocates nothing in steady state: after warm-up, a long
//! run of submits, modifies, cancels and IOC sweeps performs zero heap allocations
//! (counted by a global allocator wrapper, so this is a count, not a timing).
//!
//! Only the test's own thread is counted: libtest's main thread may still be
//! bookkeeping (it allocates) while a descheduled CI machine runs the test thread, and
//! one CI run failed on exactly such foreign allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use voltex_market::book::{BookCommand, BookConfig, NewOrder, OrderBook, StpMode, TimeInForce};
use voltex_market::{AccountId, MarketRules, OrderId, Price, Qty, Side};

struct CountingAllocator;

thread_local! {
    // Const-initialised and without a destructor, so reading it never allocates.
    static COUNTING_THIS_THREAD: Cell<bool> = const { Cell::new(false) };
}
static N_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

fn counting_this_thread() -> bool {
    COUNTING_THIS_THREAD.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting_this_thread() {
            N_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting_this_thread() {
            N_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// A small deterministic generator (xorshift) so the test needs no RNG crate state.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[test]
fn steady_state_operations_do_not_allocate() {
    let config = BookConfig {
        orders_max: 8_192,
        emit_depth: true,
    };
    let mut book = OrderBook::new(MarketRules::intraday_default(), config).unwrap();
    let mut events = Vec::with_capacity(4_096);
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut live: Vec<(OrderId, AccountId)> = Vec::with_capacity(8_192);
    let mut next_id = 1u64;
    let mid = 5_000i64;

    let mut step = |book: &mut OrderBook,
                    events: &mut Vec<_>,
                    live: &mut Vec<(OrderId, AccountId)>,
                    rng: &mut XorShift| {
        let draw = rng.next(100);
        let command = if draw < 30 || live.is_empty() {
            let side = if rng.next(2) == 0 {
                Side::Buy
            } else {
                Side::Sell
            };
            let offset = rng.next(300) as i64 - 2;
            let price = if side == Side::Buy {
                mid - offset
            } else {
                mid + offset
            };
            let account = AccountId(rng.next(50) as u32 + 1);
            let mut order = NewOrder::limit(
                OrderId(next_id),
                account,
                side,
                Price(price),
                Qty(rng.next(40) as i64 + 1),
            );
            if draw < 5 {
                order.time_in_force = TimeInForce::Ioc;
                order.qty = Qty(200);
            }
            order.stp = StpMode::CancelResting;
            next_id += 1;
            if order.time_in_force == TimeInForce::Gtc && live.len() < 4_000 {
                live.push((order.id, account));
            }
            BookCommand::Submit(order)
        } else if draw < 45 {
            let (id, account) = live.swap_remove(rng.next(live.len() as u64) as usize);
            BookCommand::Cancel { id, account }
        } else {
            let (id, account) = live[rng.next(live.len() as u64) as usize];
            let price = Price(mid + rng.next(600) as i64 - 300);
            BookCommand::Modify {
                id,
                account,
                price,
                qty: Qty(rng.next(30) as i64 + 1),
            }
        };
        events.clear();
        book.apply(&command, events);
    };

    // Warm-up: touches every price page the run will use and grows the event buffer.
    for _ in 0..50_000 {
        step(&mut book, &mut events, &mut live, &mut rng);
    }
    book.check_invariants();
    assert!(
        book.n_resting() > 100,
        "warm-up should leave a populated book"
    );

    COUNTING_THIS_THREAD.set(true);
    for _ in 0..100_000 {
        step(&mut book, &mut events, &mut live, &mut rng);
    }
    COUNTING_THIS_THREAD.set(false);
    let n_allocations = N_ALLOCATIONS.load(Ordering::SeqCst);
    book.check_invariants();
    assert_eq!(
        n_allocations, 0,
        "the book allocated {n_allocations} times in steady state"
    );
}
