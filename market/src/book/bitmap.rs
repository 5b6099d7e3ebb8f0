//! Hierarchical bitmap over price-level indices: which levels of one side are occupied.
//!
//! Layer 0 has one bit per price tick; each bit of layer k+1 says whether the
//! corresponding 64-bit word of layer k is non-zero. Finding the next occupied level
//! above or below any index takes one word operation per layer (4 layers cover the
//! 2,000,000 ticks of the default intraday range), with no tree walk and no
//! allocation after construction.
//!
//! # Invariants
//! - A bit of layer k+1 is set iff the word it summarises in layer k is non-zero.
//! - The top layer is a single word.

/// A set of indices in `0..len`, with fast predecessor/successor queries.
#[derive(Clone, Debug)]
pub(crate) struct LevelBitmap {
    /// `layers[0]` is the bottom (one bit per index); the last layer is one word.
    layers: Vec<Vec<u64>>,
    len: usize,
}

const WORD_BITS: usize = 64;

fn mask_at_or_below(bit: usize) -> u64 {
    if bit == 63 {
        u64::MAX
    } else {
        (1u64 << (bit + 1)) - 1
    }
}

fn mask_at_or_above(bit: usize) -> u64 {
    u64::MAX << bit
}

impl LevelBitmap {
    /// An empty set over `0..len`.
    pub(crate) fn new(len: usize) -> LevelBitmap {
        let mut layers = Vec::new();
        let mut n_bits = len.max(1);
        loop {
            let n_words = n_bits.div_ceil(WORD_BITS);
            layers.push(vec![0u64; n_words]);
            if n_words == 1 {
                break;
            }
            n_bits = n_words;
        }
        LevelBitmap { layers, len }
    }

    /// Number of indices the set can hold.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// True if `index` is in the set.
    pub(crate) fn contains(&self, index: usize) -> bool {
        self.layers[0][index / WORD_BITS] & (1u64 << (index % WORD_BITS)) != 0
    }

    /// Adds `index`.
    pub(crate) fn insert(&mut self, index: usize) {
        debug_assert!(index < self.len);
        let mut position = index;
        for layer in &mut self.layers {
            let word = &mut layer[position / WORD_BITS];
            let was_empty = *word == 0;
            *word |= 1u64 << (position % WORD_BITS);
            if !was_empty {
                break;
            }
            position /= WORD_BITS;
        }
    }

    /// Removes `index`.
    pub(crate) fn remove(&mut self, index: usize) {
        debug_assert!(index < self.len);
        let mut position = index;
        for layer in &mut self.layers {
            let word = &mut layer[position / WORD_BITS];
            *word &= !(1u64 << (position % WORD_BITS));
            if *word != 0 {
                break;
            }
            position /= WORD_BITS;
        }
    }

    /// The largest index in the set that is `<= index`.
    pub(crate) fn at_or_below(&self, index: usize) -> Option<usize> {
        let mut layer_idx = 0;
        let mut position = index as isize;
        let mut found = loop {
            if position < 0 {
                return None;
            }
            let pos = position as usize;
            let word = self.layers[layer_idx][pos / WORD_BITS] & mask_at_or_below(pos % WORD_BITS);
            if word != 0 {
                break (pos / WORD_BITS) * WORD_BITS + 63 - word.leading_zeros() as usize;
            }
            if layer_idx + 1 == self.layers.len() {
                return None;
            }
            position = (pos / WORD_BITS) as isize - 1;
            layer_idx += 1;
        };
        while layer_idx > 0 {
            layer_idx -= 1;
            let word = self.layers[layer_idx][found];
            debug_assert!(word != 0, "summary bit set over an empty word");
            found = found * WORD_BITS + 63 - word.leading_zeros() as usize;
        }
        Some(found)
    }

    /// The smallest index in the set that is `>= index`.
    pub(crate) fn at_or_above(&self, index: usize) -> Option<usize> {
        let mut layer_idx = 0;
        let mut position = index;
        let mut found = loop {
            let layer = &self.layers[layer_idx];
            let word_idx = position / WORD_BITS;
            if word_idx >= layer.len() {
                return None;
            }
            let word = layer[word_idx] & mask_at_or_above(position % WORD_BITS);
            if word != 0 {
                break word_idx * WORD_BITS + word.trailing_zeros() as usize;
            }
            if layer_idx + 1 == self.layers.len() {
                return None;
            }
            position = word_idx + 1;
            layer_idx += 1;
        };
        while layer_idx > 0 {
            layer_idx -= 1;
            let word = self.layers[layer_idx][found];
            debug_assert!(word != 0, "summary bit set over an empty word");
            found = found * WORD_BITS + word.trailing_zeros() as usize;
        }
        (found < self.len).then_some(found)
    }

    /// Asserts the summary invariant (O(size); for tests and the simulator).
    pub(crate) fn check_invariants(&self) {
        for pair in self.layers.windows(2) {
            let (lower, upper) = (&pair[0], &pair[1]);
            for (word_idx, word) in lower.iter().enumerate() {
                let summary = upper[word_idx / WORD_BITS] & (1u64 << (word_idx % WORD_BITS)) != 0;
                assert_eq!(
                    summary,
                    *word != 0,
                    "bitmap summary out of date at word {word_idx}"
                );
            }
        }
        assert_eq!(
            self.layers.last().map(Vec::len),
            Some(1),
            "top layer must be one word"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn empty_set_finds_nothing() {
        let bitmap = LevelBitmap::new(2_000_000);
        assert_eq!(bitmap.at_or_below(1_999_999), None);
        assert_eq!(bitmap.at_or_above(0), None);
        bitmap.check_invariants();
    }

    #[test]
    fn finds_neighbours_across_words_and_layers() {
        let mut bitmap = LevelBitmap::new(2_000_000);
        bitmap.insert(5);
        bitmap.insert(1_999_999);
        bitmap.insert(300_000);
        assert_eq!(bitmap.at_or_below(299_999), Some(5));
        assert_eq!(bitmap.at_or_above(6), Some(300_000));
        assert_eq!(bitmap.at_or_above(300_001), Some(1_999_999));
        bitmap.remove(300_000);
        assert_eq!(bitmap.at_or_above(6), Some(1_999_999));
        bitmap.check_invariants();
    }

    proptest! {
        #[test]
        fn agrees_with_btreeset(
            len in 1usize..20_000,
            ops in proptest::collection::vec((any::<bool>(), 0usize..20_000), 0..200),
            probes in proptest::collection::vec(0usize..20_000, 1..20),
        ) {
            let mut bitmap = LevelBitmap::new(len);
            let mut model = BTreeSet::new();
            for (insert, raw) in ops {
                let index = raw % len;
                if insert { bitmap.insert(index); model.insert(index); }
                else { bitmap.remove(index); model.remove(&index); }
            }
            bitmap.check_invariants();
            for raw in probes {
                let index = raw % len;
                prop_assert_eq!(bitmap.contains(index), model.contains(&index));
                prop_assert_eq!(bitmap.at_or_below(index), model.range(..=index).next_back().copied());
                prop_assert_eq!(bitmap.at_or_above(index), model.range(index..).next().copied());
            }
        }
    }
}
