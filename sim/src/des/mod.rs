//! The discrete-event core: virtual clock, event queue, models and handlers.
//!
//! A simulation is a [`Model`] (all mutable state of the simulated world) and a
//! [`Scheduler`] (the virtual clock plus the pending events). [`run_until`] pops the
//! earliest event, advances the clock to its time and hands it to
//! [`Model::handle`], which may schedule or cancel further events through the
//! scheduler. Nothing here reads a wall clock or draws randomness: models receive a
//! seeded RNG from whoever builds them, so a run is a pure function of its inputs.
//!
//! ```
//! use voltex_sim::des::{Model, Scheduler, run_until};
//!
//! /// Counts ticks every 10 ns.
//! struct Ticker { ticks: u32 }
//! impl Model for Ticker {
//!     type Event = ();
//!     fn handle(&mut self, sched: &mut Scheduler<()>, _event: ()) {
//!         self.ticks += 1;
//!         sched.schedule_in(10, ());
//!     }
//! }
//! let mut sched = Scheduler::new(0);
//! sched.schedule_at(0, ());
//! let mut model = Ticker { ticks: 0 };
//! let stats = run_until(&mut model, &mut sched, 100);
//! assert_eq!(model.ticks, 11); // t = 0, 10, ..., 100
//! assert_eq!(stats.n_events, 11);
//! assert_eq!(sched.now_ns(), 100);
//! ```
//!
//! # Invariants
//! - **Time never goes backwards:** `now_ns` is non-decreasing; scheduling before `now`
//!   is a bug and panics.
//! - **Stable order:** events at the same time run in the order they were scheduled
//!   (time, then sequence), whichever [`EventQueue`] backs the scheduler.
//! - **Cancellation:** a cancelled event never runs; cancelling twice, or after it ran,
//!   returns `None`.
//!
//! Modules: [`radix`] (the production queue), [`heap`] (the `BinaryHeap` reference),
//! [`bench`](mod@bench) (the hold-model benchmark).

pub mod bench;
pub mod heap;
pub mod radix;

pub use heap::HeapQueue;
pub use radix::RadixQueue;

/// Identifies one scheduled event, for [`EventQueue::cancel`].
///
/// Handles are not reused: a stale handle (event already run or cancelled) cancels
/// nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventHandle {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

/// A priority queue of timed events with stable ties and cancellation.
pub trait EventQueue<E> {
    /// Adds `payload` at `time_ns`; ties with earlier pushes run after them.
    fn push(&mut self, time_ns: i64, payload: E) -> EventHandle;
    /// Removes and returns the earliest event (ties: first pushed first).
    fn pop(&mut self) -> Option<(i64, E)>;
    /// Removes a pending event; `None` if it already ran or was cancelled.
    fn cancel(&mut self, handle: EventHandle) -> Option<E>;
    /// Time of the earliest pending event.
    fn peek_time(&mut self) -> Option<i64>;
    /// Number of pending events.
    fn len(&self) -> usize;
    /// True if no event is pending.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The virtual clock and the pending events, as seen by a [`Model`]'s handler.
#[derive(Debug)]
pub struct Scheduler<E> {
    now_ns: i64,
    queue: RadixQueue<E>,
}

impl<E> Scheduler<E> {
    /// A scheduler whose clock reads `start_ns` and which has nothing pending.
    pub fn new(start_ns: i64) -> Self {
        Scheduler {
            now_ns: start_ns,
            queue: RadixQueue::starting_at(start_ns),
        }
    }

    /// The current virtual time, ns.
    pub fn now_ns(&self) -> i64 {
        self.now_ns
    }

    /// Schedules `event` at absolute time `at_ns`.
    ///
    /// # Panics
    /// If `at_ns` is before [`Scheduler::now_ns`] (a causality bug in the model).
    pub fn schedule_at(&mut self, at_ns: i64, event: E) -> EventHandle {
        assert!(
            at_ns >= self.now_ns,
            "scheduled at {at_ns} ns, before now ({} ns)",
            self.now_ns
        );
        self.queue.push(at_ns, event)
    }

    /// Schedules `event` `delay_ns` after now.
    ///
    /// # Panics
    /// If `delay_ns` is negative or the time overflows.
    pub fn schedule_in(&mut self, delay_ns: i64, event: E) -> EventHandle {
        assert!(delay_ns >= 0, "negative delay {delay_ns} ns");
        let at = self
            .now_ns
            .checked_add(delay_ns)
            .expect("virtual time overflow");
        self.queue.push(at, event)
    }

    /// Cancels a pending event; returns it, or `None` if it already ran or was cancelled.
    pub fn cancel(&mut self, handle: EventHandle) -> Option<E> {
        self.queue.cancel(handle)
    }

    /// Gives back the queue's memory beyond the pending events
    /// ([`RadixQueue::compact`]). Every handle returned before stops working: call it
    /// only when the model keeps no handle to a pending event.
    pub fn compact_queue(&mut self) {
        self.queue.compact();
    }

    /// Number of pending events.
    pub fn n_pending(&self) -> usize {
        self.queue.len()
    }

    /// Pops the next event due at or before `end_ns` and advances the clock to it.
    fn next_before(&mut self, end_ns: i64) -> Option<E> {
        let (at, event) = self.queue.pop_until(end_ns)?;
        debug_assert!(at >= self.now_ns);
        self.now_ns = at;
        Some(event)
    }
}

/// The simulated world: all state, and what happens when an event fires.
pub trait Model {
    /// The events this model schedules (usually a small enum).
    type Event;
    /// Handles one event at `sched.now_ns()`; may schedule and cancel events.
    fn handle(&mut self, sched: &mut Scheduler<Self::Event>, event: Self::Event);
}

/// What a call to [`run_until`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Events handled.
    pub n_events: u64,
}

/// Runs events in order until none is due at or before `end_ns`; the clock then reads
/// `end_ns` (or stays later if it already was).
pub fn run_until<M: Model>(
    model: &mut M,
    sched: &mut Scheduler<M::Event>,
    end_ns: i64,
) -> RunStats {
    let mut stats = RunStats::default();
    while let Some(event) = sched.next_before(end_ns) {
        model.handle(sched, event);
        stats.n_events += 1;
    }
    sched.now_ns = sched.now_ns.max(end_ns);
    stats
}
