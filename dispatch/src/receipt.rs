//! Receipt windows: which of a device's outbox sequence numbers the platform has
//! stored, and the cumulative receipt it may send for them.
//!
//! A [`crate::Receipt`] is cumulative ("everything through `through_seq` is stored"),
//! and the agent drops every outbox entry it covers. So the platform may receipt only
//! the contiguous stored prefix: when an uplink message is lost and a later one
//! arrives, the later one is stored and remembered above the hole, and the receipt
//! stays below the hole until the agent's re-send fills it. A hole that stays open
//! longer than `hole_wait` (an agent whose bounded outbox dropped the entry will never
//! fill it), or too many numbers waiting above it, is skipped and counted.
//!
//! Shared by the platform's delivery tracker and the simulator's platform model, so the
//! simulator receipts exactly as the platform does.
//!
//! # Invariants
//! - The receipt never covers a sequence number that was neither stored nor counted
//!   as skipped.
//! - `through` never decreases; at most `above_max` numbers wait above a hole.

use std::collections::BTreeSet;
use std::time::Duration;

use voltex_market::UtcNanos;

/// Which outbox sequence numbers of one device are stored: all through `through`, and
/// the numbers above a hole, which has been waited for since it opened.
#[derive(Clone, Debug, Default)]
pub struct ReceiptWindow {
    /// `None` until the first report since start (or restore).
    through: Option<u64>,
    /// `Some` only while numbers wait above a hole. Boxed: a platform (or the
    /// simulator) holds one window per device and almost none has a hole, so a window
    /// is 24 bytes instead of 56.
    hole: Option<Box<Hole>>,
}

/// The numbers stored above a hole, and since when the hole has been waited for.
#[derive(Clone, Debug)]
struct Hole {
    above: BTreeSet<u64>,
    since: UtcNanos,
}

impl ReceiptWindow {
    /// A window whose receipts start after `seq` (a device known to number its reports
    /// from `seq + 1`). [`ReceiptWindow::default`] instead starts at the first report
    /// it sees, as after a platform restart.
    pub fn starting_after(seq: u64) -> ReceiptWindow {
        ReceiptWindow {
            through: Some(seq),
            ..ReceiptWindow::default()
        }
    }

    /// Notes `seqs` as stored at `now`; returns the receipt and how many sequence
    /// numbers a skipped hole left out.
    pub fn stored(
        &mut self,
        now: UtcNanos,
        seqs: &[u64],
        hole_wait: Duration,
        above_max: usize,
    ) -> Receipted {
        let mut through = match self.through {
            Some(through) => through,
            None => seqs.iter().min().map_or(0, |min| min.saturating_sub(1)),
        };
        for &seq in seqs {
            // In order (the usual case): no set operation at all.
            if seq == through + 1 {
                through = seq;
            } else if seq > through {
                let hole = self.hole.get_or_insert_with(|| {
                    Box::new(Hole {
                        above: BTreeSet::new(),
                        since: now,
                    })
                });
                hole.above.insert(seq);
            }
        }
        let mut n_skipped = 0;
        while let Some(hole) = self.hole.as_deref_mut() {
            while hole.above.first() == Some(&(through + 1)) {
                hole.above.pop_first();
                through += 1;
            }
            let Some(&next) = hole.above.first() else {
                // Filled: the set and its node (about 100 bytes) go with the hole; a
                // tracker of thousands of devices, each with a hole filled once, gives
                // them back.
                self.hole = None;
                break;
            };
            let waited = now.nanos().saturating_sub(hole.since.nanos());
            let overdue = waited >= i64::try_from(hole_wait.as_nanos()).unwrap_or(i64::MAX);
            if !overdue && hole.above.len() <= above_max {
                break;
            }
            // Skip the hole below `next`; a further hole waits afresh.
            n_skipped += next - through - 1;
            through = next - 1;
            hole.since = now;
        }
        self.through = Some(through);
        Receipted {
            through_seq: through,
            n_skipped,
        }
    }

    /// Whether `seq` is already stored (at or below the receipt, or above a hole).
    pub fn contains(&self, seq: u64) -> bool {
        self.through.is_some_and(|through| seq <= through)
            || self
                .hole
                .as_ref()
                .is_some_and(|hole| hole.above.contains(&seq))
    }

    /// The newest receipt given, if any.
    pub fn through(&self) -> Option<u64> {
        self.through
    }
}

/// A receipt to send after an uplink message was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipted {
    /// Everything up to this outbox sequence number is stored.
    pub through_seq: u64,
    /// Sequence numbers given up on: a hole that stayed open past
    /// `hole_wait` (or too many numbers above it).
    pub n_skipped: u64,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const WAIT: Duration = Duration::from_secs(150);

    fn at_s(s: i64) -> UtcNanos {
        UtcNanos(s * 1_000_000_000)
    }

    #[test]
    fn a_hole_holds_the_receipt_until_it_fills() {
        let mut window = ReceiptWindow::starting_after(0);
        assert_eq!(window.stored(at_s(0), &[1], WAIT, 16).through_seq, 1);
        assert_eq!(window.stored(at_s(1), &[3], WAIT, 16).through_seq, 1);
        assert!(window.contains(3) && !window.contains(2));
        let filled = window.stored(at_s(2), &[2], WAIT, 16);
        assert_eq!((filled.through_seq, filled.n_skipped), (3, 0));
        assert_eq!(window.through(), Some(3));
    }

    #[test]
    fn a_hole_open_past_the_wait_or_with_too_much_above_is_skipped() {
        let mut window = ReceiptWindow::starting_after(0);
        window.stored(at_s(0), &[2], WAIT, 16);
        let late = window.stored(at_s(151), &[3], WAIT, 16);
        assert_eq!((late.through_seq, late.n_skipped), (3, 1));
        let mut crowded = ReceiptWindow::starting_after(0);
        let over = crowded.stored(at_s(0), &[2, 3, 4], WAIT, 2);
        assert_eq!((over.through_seq, over.n_skipped), (4, 1));
    }

    proptest! {
        /// Whatever the order and batching, the receipt is always the contiguous
        /// stored prefix, and once everything is stored it covers everything.
        #[test]
        fn the_receipt_is_the_contiguous_stored_prefix_in_any_order(
            order in Just((1..=40_u64).collect::<Vec<_>>()).prop_shuffle(),
            batch_len in 1..5_usize,
        ) {
            let mut window = ReceiptWindow::starting_after(0);
            let mut stored = BTreeSet::new();
            for batch in order.chunks(batch_len) {
                stored.extend(batch.iter().copied());
                let receipt = window.stored(at_s(0), batch, WAIT, 64);
                let prefix = (1..).take_while(|seq| stored.contains(seq)).last().unwrap_or(0);
                prop_assert_eq!(receipt, Receipted { through_seq: prefix, n_skipped: 0 });
                prop_assert!(batch.iter().all(|&seq| window.contains(seq)));
            }
            prop_assert_eq!(window.through(), Some(40));
            prop_assert!(window.hole.is_none(), "the filled hole is given back");
        }
    }

    #[test]
    fn a_default_window_starts_at_the_first_report_it_sees() {
        let mut window = ReceiptWindow::default();
        assert_eq!(window.through(), None);
        assert_eq!(window.stored(at_s(0), &[7], WAIT, 16).through_seq, 7);
        assert!(window.contains(6), "below the start counts as stored");
    }
}
