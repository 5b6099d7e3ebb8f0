//! Event-queue tests: the radix queue against the `BinaryHeap` reference (differential
//! property test), stable ties, cancellation, and the scheduler's clock.

use proptest::prelude::*;
use voltex_sim::des::bench::{HoldConfig, HoldWorkload, fill, run_hold};
use voltex_sim::des::{
    EventHandle, EventQueue, HeapQueue, Model, RadixQueue, Scheduler, run_until,
};

#[derive(Clone, Debug)]
enum Op {
    /// Push at `floor + delta` (deltas are small so ties are frequent).
    Push(i64),
    Pop,
    /// Cancel the handle of the k-th push so far (modulo the number of pushes).
    Cancel(usize),
    /// Compact the radix queue (handles from before are dropped, as `compact` requires).
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop_oneof![0_i64..4, 0_i64..1_000, 0_i64..(1 << 40)].prop_map(Op::Push),
        3 => Just(Op::Pop),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => Just(Op::Compact),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Same operations, same results: every pop, cancel and length agrees with the
    /// `(time, seq)` BinaryHeap, and the radix queue's invariants hold after each step.
    #[test]
    fn radix_queue_pops_exactly_like_the_binary_heap_reference(
        start in -1_000_000_i64..1_000_000,
        ops in proptest::collection::vec(op(), 0..400),
    ) {
        let mut radix: RadixQueue<u32> = RadixQueue::starting_at(start);
        let mut heap: HeapQueue<u32> = HeapQueue::new();
        let mut handles: Vec<(EventHandle, EventHandle)> = Vec::new();
        let mut floor = start;
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Push(delta) => {
                    let a = radix.push(floor + delta, i as u32);
                    let b = heap.push(floor + delta, i as u32);
                    handles.push((a, b));
                }
                Op::Pop => {
                    let a = radix.pop();
                    let b = heap.pop();
                    prop_assert_eq!(a, b);
                    if let Some((t, _)) = a {
                        floor = t;
                    }
                }
                Op::Cancel(k) => {
                    if !handles.is_empty() {
                        let (a, b) = handles[k % handles.len()];
                        prop_assert_eq!(radix.cancel(a), heap.cancel(b));
                    }
                }
                Op::Compact => {
                    radix.compact();
                    prop_assert_eq!(radix.slab_len(), radix.len(), "only pending slots kept");
                    // Old handles cancel nothing now, pending or not.
                    for (a, _) in handles.drain(..) {
                        prop_assert_eq!(radix.cancel(a), None);
                    }
                }
            }
            prop_assert_eq!(radix.len(), heap.len());
            prop_assert_eq!(radix.peek_time(), heap.peek_time());
            radix.check_invariants();
        }
        loop {
            let a = radix.pop();
            prop_assert_eq!(a, heap.pop());
            if a.is_none() { break; }
        }
    }
}

#[test]
fn simultaneous_events_pop_in_scheduling_order() {
    let mut queue: RadixQueue<u32> = RadixQueue::starting_at(0);
    // Interleave two times so the ties are split across buckets and refills.
    for id in 0..1_000_u32 {
        queue.push(if id % 2 == 0 { 500 } else { 70 }, id);
    }
    let order: Vec<(i64, u32)> = std::iter::from_fn(|| queue.pop()).collect();
    let odd: Vec<(i64, u32)> = (0..1_000).filter(|i| i % 2 == 1).map(|i| (70, i)).collect();
    let even: Vec<(i64, u32)> = (0..1_000)
        .filter(|i| i % 2 == 0)
        .map(|i| (500, i))
        .collect();
    assert_eq!(order, [odd, even].concat());
}

#[test]
fn cancelled_events_never_pop_and_stale_handles_cancel_nothing() {
    let mut queue: RadixQueue<&str> = RadixQueue::starting_at(0);
    let a = queue.push(10, "a");
    let b = queue.push(10, "b");
    let c = queue.push(20, "c");
    assert_eq!(queue.cancel(b), Some("b"));
    assert_eq!(queue.cancel(b), None, "double cancel");
    assert_eq!(queue.len(), 2);
    assert_eq!(queue.pop(), Some((10, "a")));
    assert_eq!(queue.cancel(a), None, "cancel after it ran");
    // The freed slot is reused; the stale handle must not reach the new event.
    let d = queue.push(15, "d");
    assert_eq!(queue.cancel(b), None);
    assert_eq!(queue.pop(), Some((15, "d")));
    assert_eq!(queue.cancel(d), None);
    assert_eq!(queue.cancel(c), Some("c"));
    assert_eq!(queue.pop(), None);
    queue.check_invariants();
}

#[test]
fn hold_model_gives_the_same_pop_sequence_on_both_queues() {
    let workload = HoldWorkload::new(HoldConfig {
        n_pending: 1_000,
        n_ops: 50_000,
        mean_increment_ns: 1_000,
        seed: 7,
    });
    let mut radix = RadixQueue::starting_at(0);
    let mut heap = HeapQueue::new();
    fill(&mut radix, &workload);
    fill(&mut heap, &workload);
    assert_eq!(
        run_hold(&mut radix, &workload),
        run_hold(&mut heap, &workload)
    );
    assert_eq!(radix.len(), 1_000);
}

/// A model that records (time, label) and reschedules/cancels through the scheduler.
struct Recorder {
    log: Vec<(i64, u8)>,
    pending_timeout: Option<EventHandle>,
}

#[derive(Debug, PartialEq)]
enum Ev {
    Start,
    Label(u8),
    Timeout,
}

impl Model for Recorder {
    type Event = Ev;
    fn handle(&mut self, sched: &mut Scheduler<Ev>, event: Ev) {
        match event {
            Ev::Start => {
                self.pending_timeout = Some(sched.schedule_in(50, Ev::Timeout));
                for label in 1..=3 {
                    sched.schedule_in(10, Ev::Label(label));
                }
            }
            Ev::Label(label) => {
                self.log.push((sched.now_ns(), label));
                if label == 3
                    && let Some(handle) = self.pending_timeout.take()
                {
                    assert_eq!(sched.cancel(handle), Some(Ev::Timeout));
                }
            }
            Ev::Timeout => self.log.push((sched.now_ns(), 99)),
        }
    }
}

#[test]
fn scheduler_runs_ties_in_order_and_cancelled_timeouts_never_fire() {
    let mut sched = Scheduler::new(1_000);
    sched.schedule_at(1_000, Ev::Start);
    let mut model = Recorder {
        log: Vec::new(),
        pending_timeout: None,
    };
    let stats = run_until(&mut model, &mut sched, 10_000);
    assert_eq!(model.log, vec![(1_010, 1), (1_010, 2), (1_010, 3)]);
    assert_eq!(stats.n_events, 4);
    assert_eq!(sched.now_ns(), 10_000);
    assert_eq!(sched.n_pending(), 0);
}

/// A burst (here 200,000 events at distinct times, as when a whole fleet reports at
/// once) does not leave its peak size pinned in every bucket it passed through: once
/// drained, buckets keep at most `BUCKET_KEEP_MAX` entries of room each. Without that
/// bound the drained buckets of this run keep room for 262,152 entries.
#[test]
fn a_drained_burst_gives_its_bucket_memory_back() {
    use voltex_sim::des::radix::BUCKET_KEEP_MAX;
    let mut queue: RadixQueue<u32> = RadixQueue::starting_at(0);
    let n = 200_000_u32;
    for i in 0..n {
        queue.push(i64::from(i) + 1, i);
    }
    let mut popped = 0;
    while let Some((at, i)) = queue.pop() {
        assert_eq!(at, i64::from(i) + 1, "pops in time order");
        popped += 1;
    }
    assert_eq!(popped, n);
    queue.check_invariants();
    let buckets = 65;
    assert!(
        queue.bucket_capacity() <= buckets * BUCKET_KEEP_MAX,
        "drained buckets keep room for {} entries",
        queue.bucket_capacity()
    );
}

/// A daily roll-out in miniature: a burst far larger than what stays pending. After it
/// has drained, `compact` keeps only the pending events' slots, and the order of what
/// is pending, ties included, is unchanged; handles from before cancel nothing, also
/// once new events fill the slots again.
#[test]
fn compact_gives_a_drained_burst_back_and_keeps_the_order() {
    let mut queue: RadixQueue<u32> = RadixQueue::starting_at(0);
    let n_burst = 20_000_u32;
    let mut handles: Vec<EventHandle> = (0..n_burst)
        .map(|i| queue.push(i64::from(i / 2) + 1, i))
        .collect();
    // Stragglers pending after the burst, with ties; one cancelled entry left stale.
    for k in 0..5 {
        handles.push(queue.push(1_000_000 + k / 2, n_burst + k as u32));
    }
    assert_eq!(
        queue.cancel(handles[n_burst as usize + 2]),
        Some(n_burst + 2)
    );
    for i in 0..n_burst {
        assert_eq!(queue.pop().map(|(_, e)| e), Some(i));
    }
    assert_eq!(queue.slab_len(), n_burst as usize + 5);
    queue.compact();
    queue.check_invariants();
    assert_eq!((queue.slab_len(), queue.len()), (4, 4));
    for handle in &handles {
        assert_eq!(
            queue.cancel(*handle),
            None,
            "a handle from before the compaction"
        );
    }
    // New events take the slots again; the old handles still match none of them.
    let second: Vec<EventHandle> = (0..100)
        .map(|i| queue.push(2_000_000 + i, 2 * n_burst + i as u32))
        .collect();
    for handle in &handles {
        assert_eq!(queue.cancel(*handle), None);
    }
    assert_eq!(queue.cancel(second[0]), Some(2 * n_burst));
    queue.check_invariants();
    let order: Vec<u32> = std::iter::from_fn(|| queue.pop().map(|(_, e)| e)).collect();
    let mut expected = vec![n_burst, n_burst + 1, n_burst + 3, n_burst + 4];
    expected.extend((1..100).map(|i| 2 * n_burst + i));
    assert_eq!(order, expected);
}
