//! [`RadixQueue`]: the simulator's event queue, a monotone radix heap with FIFO ties.
//!
//! Keys are event times (ns). A radix heap keeps 65 buckets relative to `last`, the time
//! of the most recently popped event: bucket 0 holds events at exactly `last`, bucket
//! `i >= 1` holds events whose time differs from `last` first in bit `i - 1`. A push is
//! one `Vec::push`; a pop takes the front of bucket 0, and when bucket 0 is empty it
//! finds the lowest non-empty bucket, makes its minimum the new `last` and spreads that
//! bucket over the (empty) lower buckets. Every event moves down at most 64 times, so
//! both operations are O(1) amortised for the bounded time increments of a DES (the
//! hold model), with no comparisons between events at all.
//!
//! Cancellation is by [`EventHandle`]: payloads live in a slab whose slots carry a
//! generation counter; cancelling takes the payload out and bumps the generation, and
//! the bucket entry left behind is skipped (lazy deletion) when it surfaces.
//!
//! # Invariants
//! - **Monotone:** no event is pushed earlier than `last` (the DES never schedules into
//!   the past); `push` asserts it. `last` only moves when an event is popped (a peek,
//!   or a [`RadixQueue::pop_until`] that finds nothing due, leaves it alone).
//! - **Stable ties:** within every bucket, entries are in push order. Pushes append;
//!   a bucket is only refilled from a higher one while it is empty, and the spreading
//!   walks the source in order. So events with equal times pop in push (sequence)
//!   order, exactly like the `(time, seq)` order of [`super::heap::HeapQueue`].
//! - `len()` counts live (pushed, not popped, not cancelled) events.
//!
//! [`RadixQueue::check_invariants`] asserts the bucket placement and the live count.
//!
//! # Memory
//! A drained bucket keeps its buffer for the next refill, but only up to
//! [`BUCKET_KEEP_MAX`] entries: a burst (every device of a 10,000-battery fleet at one
//! instant) passes through dozens of buckets on its way down, and keeping each one's
//! peak size pinned 5.7 MB (570 B per battery) in buckets that sat empty all day.
//!
//! The slab, too, grows to the most events pending at once (a daily roll-out: about
//! two per device) and, slots being named by handles, cannot shrink by itself.
//! [`RadixQueue::compact`] gives it back at a quiet moment: the live events move to the
//! lowest slots, stale entries go, and the slab keeps room for no more. It re-numbers
//! the pending events, so handles to them no longer cancel them; the simulator calls
//! it at each day's end and keeps no handles.

use super::{EventHandle, EventQueue};

/// Number of buckets: bucket 0 for `key == last`, 1..=64 by highest differing bit.
const N_BUCKETS: usize = 65;

/// Largest buffer (entries) a bucket keeps once drained; larger ones are freed.
pub const BUCKET_KEEP_MAX: usize = 1_024;

/// Empties `bucket`, keeping its buffer only if it is at most [`BUCKET_KEEP_MAX`].
fn recycle(bucket: &mut Vec<Entry>) {
    if bucket.capacity() > BUCKET_KEEP_MAX {
        *bucket = Vec::new();
    } else {
        bucket.clear();
    }
}

/// One bucket entry: the key and the slab slot (with the generation it was pushed at).
#[derive(Clone, Copy, Debug)]
struct Entry {
    key: u64,
    slot: u32,
    generation: u32,
}

/// One slab slot: the payload while the event is pending.
#[derive(Debug)]
struct Slot<E> {
    generation: u32,
    payload: Option<E>,
}

/// Maps a signed time onto an unsigned key with the same order.
#[inline]
fn key_of(time_ns: i64) -> u64 {
    (time_ns as u64) ^ (1 << 63)
}

/// Inverse of [`key_of`].
#[inline]
fn time_of(key: u64) -> i64 {
    (key ^ (1 << 63)) as i64
}

/// The monotone radix-heap event queue; see the [module docs](self).
#[derive(Debug)]
pub struct RadixQueue<E> {
    buckets: Vec<Vec<Entry>>,
    /// Read position in bucket 0 (entries before it are popped).
    head: usize,
    last: u64,
    slab: Vec<Slot<E>>,
    free: Vec<u32>,
    n_live: usize,
    /// Cancelled entries still sitting in buckets; while zero, no liveness checks.
    n_stale: usize,
    /// Generation a newly appended slot starts at: above every generation any slot
    /// had before the last [`RadixQueue::compact`], so no handle from before matches.
    fresh_generation: u32,
}

impl<E> Default for RadixQueue<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> RadixQueue<E> {
    /// An empty queue whose clock starts at the earliest representable time.
    pub fn new() -> Self {
        RadixQueue {
            buckets: (0..N_BUCKETS).map(|_| Vec::new()).collect(),
            head: 0,
            last: 0,
            slab: Vec::new(),
            free: Vec::new(),
            n_live: 0,
            n_stale: 0,
            fresh_generation: 0,
        }
    }

    /// An empty queue whose floor is `floor_ns`: no event may be pushed before it.
    pub fn starting_at(floor_ns: i64) -> Self {
        let mut queue = Self::new();
        queue.last = key_of(floor_ns);
        queue
    }

    /// An empty queue with room for `n` pending events before it allocates.
    pub fn with_capacity(n: usize) -> Self {
        let mut queue = Self::new();
        queue.slab.reserve(n);
        queue.free.reserve(n);
        queue
    }

    #[inline]
    fn bucket_of(&self, key: u64) -> usize {
        if key == self.last {
            0
        } else {
            64 - (key ^ self.last).leading_zeros() as usize
        }
    }

    /// The time of the last popped event (the queue's monotone floor).
    pub fn floor_ns(&self) -> i64 {
        time_of(self.last)
    }

    #[inline]
    fn is_live(&self, entry: &Entry) -> bool {
        self.slab[entry.slot as usize].generation == entry.generation
    }

    /// The lowest non-empty bucket above 0 and its smallest live key, dropping buckets
    /// that hold only cancelled entries. Does not move `last`.
    fn lowest_live(&mut self) -> Option<(usize, u64)> {
        for i in 1..N_BUCKETS {
            if self.buckets[i].is_empty() {
                continue;
            }
            let min = if self.n_stale == 0 {
                self.buckets[i].iter().map(|e| e.key).min()
            } else {
                self.buckets[i]
                    .iter()
                    .filter(|e| self.is_live(e))
                    .map(|e| e.key)
                    .min()
            };
            match min {
                Some(min) => return Some((i, min)),
                None => {
                    self.n_stale -= self.buckets[i].len();
                    recycle(&mut self.buckets[i]);
                }
            }
        }
        None
    }

    /// Refills bucket 0 from the lowest non-empty bucket if its earliest live event is at
    /// or before `limit_key`. Returns false (and moves nothing) otherwise.
    fn refill_until(&mut self, limit_key: u64) -> bool {
        let Some((i, min)) = self.lowest_live() else {
            return false;
        };
        if min > limit_key {
            return false;
        }
        recycle(&mut self.buckets[0]);
        self.head = 0;
        self.last = min;
        let mut source = std::mem::take(&mut self.buckets[i]);
        if self.n_stale == 0 {
            for entry in source.drain(..) {
                let b = self.bucket_of(entry.key);
                debug_assert!(b < i);
                self.buckets[b].push(entry);
            }
        } else {
            for entry in source.drain(..) {
                if self.is_live(&entry) {
                    let b = self.bucket_of(entry.key);
                    debug_assert!(b < i);
                    self.buckets[b].push(entry);
                } else {
                    self.n_stale -= 1;
                }
            }
        }
        // Give the (now empty) vector back so its capacity is reused (up to a bound).
        recycle(&mut source);
        self.buckets[i] = source;
        debug_assert!(!self.buckets[0].is_empty());
        true
    }

    /// Skips cancelled entries at the head of bucket 0; true if a live one remains.
    fn skip_stale_head(&mut self) -> bool {
        while let Some(entry) = self.buckets[0].get(self.head) {
            if self.n_stale == 0 || self.is_live(entry) {
                return true;
            }
            self.n_stale -= 1;
            self.head += 1;
        }
        false
    }

    /// Pops the earliest event if it is due at or before `end_ns`; `None` otherwise
    /// (the queue is left as it was, so events before the earliest may still be pushed).
    pub fn pop_until(&mut self, end_ns: i64) -> Option<(i64, E)> {
        if !self.skip_stale_head() {
            if !self.refill_until(key_of(end_ns)) {
                return None;
            }
        } else if self.last > key_of(end_ns) {
            return None;
        }
        let entry = self.buckets[0][self.head];
        self.head += 1;
        let slot = &mut self.slab[entry.slot as usize];
        let payload = slot.payload.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(entry.slot);
        self.n_live -= 1;
        Some((time_of(entry.key), payload))
    }

    /// Bucket entries the queue holds room for (live, stale and spare), summed over
    /// all buckets: its memory beyond the slab, in entries of 16 bytes.
    pub fn bucket_capacity(&self) -> usize {
        self.buckets.iter().map(Vec::capacity).sum()
    }

    /// Moves the pending events to the lowest slots, drops cancelled entries and gives
    /// back the slab and free-list memory beyond what is pending. Order is unchanged
    /// (entries keep their place in their buckets).
    ///
    /// Every handle returned before the call stops working: cancelling through it
    /// returns `None`, also for an event still pending. Call it only when no handle
    /// to a pending event is kept. O(slab + entries).
    pub fn compact(&mut self) {
        // Above every generation in use, so no old handle or entry matches a slot again.
        let fresh = self
            .slab
            .iter()
            .map(|slot| slot.generation)
            .max()
            .map_or(self.fresh_generation, |g| {
                g.wrapping_add(1).max(self.fresh_generation)
            });
        let mut slab: Vec<Slot<E>> = Vec::with_capacity(self.n_live);
        let head = self.head;
        self.head = 0;
        for (b, bucket) in self.buckets.iter_mut().enumerate() {
            if b == 0 {
                bucket.drain(..head);
            }
            bucket.retain_mut(|entry| {
                let Some(old) = self.slab.get_mut(entry.slot as usize) else {
                    return false;
                };
                if old.generation != entry.generation {
                    return false;
                }
                let Some(payload) = old.payload.take() else {
                    return false;
                };
                // Fits: at most `n_live` slots, and `push` keeps that under 2^32.
                entry.slot = slab.len() as u32;
                entry.generation = fresh;
                slab.push(Slot {
                    generation: fresh,
                    payload: Some(payload),
                });
                true
            });
        }
        debug_assert_eq!(slab.len(), self.n_live);
        self.slab = slab;
        self.free = Vec::new();
        self.n_stale = 0;
        self.fresh_generation = fresh;
    }

    /// Slots in the slab (pending and free): its memory, in slots.
    pub fn slab_len(&self) -> usize {
        self.slab.len()
    }

    /// Asserts the invariants in the [module docs](self).
    ///
    /// # Panics
    /// If an entry sits in the wrong bucket, ties are out of push order, or the live
    /// count is wrong.
    pub fn check_invariants(&self) {
        let mut n_live = 0;
        for (b, bucket) in self.buckets.iter().enumerate() {
            let start = if b == 0 { self.head } else { 0 };
            for entry in &bucket[start..] {
                assert!(entry.key >= self.last, "entry below the floor");
                assert_eq!(self.bucket_of(entry.key), b, "entry in the wrong bucket");
                if self.is_live(entry) {
                    n_live += 1;
                }
            }
        }
        assert_eq!(n_live, self.n_live, "live count");
        let n_entries: usize = self.buckets[1..].iter().map(Vec::len).sum::<usize>()
            + self.buckets[0].len()
            - self.head;
        assert_eq!(n_entries - n_live, self.n_stale, "stale count");
        let n_pending = self.slab.iter().filter(|s| s.payload.is_some()).count();
        assert_eq!(n_pending, self.n_live, "slab payload count");
        assert_eq!(
            self.free.len() + self.n_live,
            self.slab.len(),
            "every slot is pending or free"
        );
    }
}

impl<E> EventQueue<E> for RadixQueue<E> {
    fn push(&mut self, time_ns: i64, payload: E) -> EventHandle {
        let key = key_of(time_ns);
        assert!(
            key >= self.last,
            "event at {time_ns} ns scheduled before the queue floor {} ns",
            time_of(self.last)
        );
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize].payload = Some(payload);
                slot
            }
            None => {
                let slot = u32::try_from(self.slab.len()).expect("more than 2^32 pending events");
                self.slab.push(Slot {
                    generation: self.fresh_generation,
                    payload: Some(payload),
                });
                slot
            }
        };
        let generation = self.slab[slot as usize].generation;
        let b = self.bucket_of(key);
        self.buckets[b].push(Entry {
            key,
            slot,
            generation,
        });
        self.n_live += 1;
        EventHandle { slot, generation }
    }

    fn pop(&mut self) -> Option<(i64, E)> {
        self.pop_until(i64::MAX)
    }

    fn cancel(&mut self, handle: EventHandle) -> Option<E> {
        let slot = self.slab.get_mut(handle.slot as usize)?;
        if slot.generation != handle.generation {
            return None;
        }
        let payload = slot.payload.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(handle.slot);
        self.n_live -= 1;
        self.n_stale += 1;
        Some(payload)
    }

    fn peek_time(&mut self) -> Option<i64> {
        if self.skip_stale_head() {
            return Some(time_of(self.last));
        }
        self.lowest_live().map(|(_, min)| time_of(min))
    }

    fn len(&self) -> usize {
        self.n_live
    }
}
