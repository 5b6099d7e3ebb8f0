//! [`HeapQueue`]: the reference event queue, a `BinaryHeap` ordered by `(time, seq)`.
//!
//! Simple and obviously correct: every push gets the next sequence number and the heap
//! pops the smallest `(time, seq)`. It serves as the oracle of the differential
//! property test and as the baseline of `voltex sim bench-des`. Cancellation removes the
//! entry eagerly (an O(n) rebuild: fine for a reference, never used on a hot path).
//!
//! # Invariants
//! - Pops come out in ascending `(time, seq)`: ties by push order.
//! - `len()` counts live (pushed, not popped, not cancelled) events.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::{EventHandle, EventQueue};

/// One heap entry; the payload takes no part in the order.
#[derive(Debug)]
struct Entry<E> {
    time_ns: i64,
    seq: u64,
    payload: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.time_ns, self.seq) == (other.time_ns, other.seq)
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.time_ns, self.seq).cmp(&(other.time_ns, other.seq))
    }
}

/// The `BinaryHeap` reference queue; see the [module docs](self).
#[derive(Debug)]
pub struct HeapQueue<E> {
    heap: BinaryHeap<Reverse<Entry<E>>>,
    next_seq: u64,
    n_live: usize,
}

impl<E> Default for HeapQueue<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> HeapQueue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        HeapQueue {
            heap: BinaryHeap::new(),
            next_seq: 0,
            n_live: 0,
        }
    }

    /// An empty queue with room for `n` pending events.
    pub fn with_capacity(n: usize) -> Self {
        let mut queue = Self::new();
        queue.heap.reserve(n);
        queue
    }

    fn handle_of(seq: u64) -> EventHandle {
        EventHandle {
            slot: seq as u32,
            generation: (seq >> 32) as u32,
        }
    }
}

impl<E> EventQueue<E> for HeapQueue<E> {
    fn push(&mut self, time_ns: i64, payload: E) -> EventHandle {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse(Entry {
            time_ns,
            seq,
            payload,
        }));
        self.n_live += 1;
        Self::handle_of(seq)
    }

    fn pop(&mut self) -> Option<(i64, E)> {
        let Reverse(entry) = self.heap.pop()?;
        self.n_live -= 1;
        Some((entry.time_ns, entry.payload))
    }

    fn cancel(&mut self, handle: EventHandle) -> Option<E> {
        // Eager removal by rebuilding the heap: O(n), fine for a reference.
        let seq = u64::from(handle.slot) | (u64::from(handle.generation) << 32);
        let position = self.heap.iter().position(|Reverse(e)| e.seq == seq)?;
        let mut entries: Vec<Reverse<Entry<E>>> = std::mem::take(&mut self.heap).into_vec();
        let Reverse(entry) = entries.swap_remove(position);
        self.heap = BinaryHeap::from(entries);
        self.n_live -= 1;
        Some(entry.payload)
    }

    fn peek_time(&mut self) -> Option<i64> {
        self.heap.peek().map(|Reverse(e)| e.time_ns)
    }

    fn len(&self) -> usize {
        self.n_live
    }
}
