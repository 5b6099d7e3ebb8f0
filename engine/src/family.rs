//! Linked block families in a shard's day-ahead auctions: what a `SubmitFamily`
//! command carries ([`FamilyBlock`], [`FamilyRef`]), the typed reasons one is refused
//! ([`FamilyReject`]), the stored form ([`StoredFamily`]) and its named limits.
//!
//! A family is one account's blocks over a list of products (one delivery period each)
//! whose day-ahead auctions share one gate closure and one set of rules. It is accepted
//! or rejected as a whole by [`voltex_market::block::clear_day_with_families`] when that
//! gate is reached: the products the gate's families name clear together, the other
//! products of that gate alone, as before ([`crate::state`] drives it). A battery bids
//! its day there as a buy block (charging) linked with a sell block (discharging), and
//! several alternative days in one exclusive group, of which at most one is taken.
//!
//! # Rules
//! - One family per (account, [`FamilyRef`]) among the open ones; a new submission
//!   replaces it whole (also if it names other products).
//! - Accepted while every named product's auction is open; refused with
//!   [`FamilyReject::GatesDiffer`] / [`FamilyReject::RulesDiffer`] if the products'
//!   auctions close at different times or clear under different rules (the gate
//!   closure lead aside: the hours of one day share a gate with leads of their own), or
//!   under other rules than the families already stored for that gate.
//! - Blocks are checked as [`voltex_market::block::BlockFamily::new`] checks them: on
//!   the tick grid and inside the limits, whole lots in `0..=qty_max`, some quantity in
//!   every block, one quantity per named product.
//!
//! # Limits
//! [`FAMILY_PRODUCTS_MAX`] products and [`FAMILY_QTYS_MAX`] quantities per family (so
//! the largest command fits a journal entry), [`BLOCKS_PER_FAMILY_MAX`] blocks,
//! [`FAMILIES_PER_GATE_MAX`] families per gate (a gate takes at most one clearing round
//! per family plus one, inside the sequencer: `cargo bench --bench auction` measures
//! 64 families at a loss over 24 products of 256 curves at about 84 ms with 8 blocks
//! each, 41 ms as battery days), [`EXCLUSIVE_GROUP_FAMILIES_MAX`] per exclusive group.

use serde::{Deserialize, Serialize};
use voltex_market::auction::AuctionConfig;
use voltex_market::block::{Block, BlockError, BlockFamily, ExclusiveGroupId};
use voltex_market::rules::RuleError;
use voltex_market::{AccountId, Price, ProductId, Qty, Side};

pub use voltex_market::block::{BLOCKS_PER_FAMILY_MAX, EXCLUSIVE_GROUP_FAMILIES_MAX};

/// Most products one family names: a day of quarter-hours, 25-hour days included.
pub const FAMILY_PRODUCTS_MAX: usize = 100;

/// Most quantities (blocks × products) in one family: two blocks over a day of
/// quarter-hours, or eight over a day of hours. With it the largest `SubmitFamily`
/// command fits the engine's `ENTRY_LEN_MAX`.
pub const FAMILY_QTYS_MAX: usize = 200;

/// Most families one gate's clearing takes.
pub const FAMILIES_PER_GATE_MAX: usize = 64;

/// An account's name for one of its families.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct FamilyRef(pub u32);

/// One block of a family: `qty[i]` lots in the family's `i`-th product, all on `side`,
/// at a volume-weighted average price no worse than `limit`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyBlock {
    /// Buy or sell.
    pub side: Side,
    /// Limit price of the block as a whole.
    pub limit: Price,
    /// Lots per named product, in the order the family names them.
    pub qty: Vec<Qty>,
}

/// Why a family command was refused. A refused command changes no family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum FamilyReject {
    /// A named product is not listed.
    #[error("unknown product")]
    UnknownProduct,
    /// A named product's day-ahead gate has closed (or it holds no auction).
    #[error("the day-ahead gate is closed for a named product")]
    GateClosed,
    /// No product named.
    #[error("a family names at least one product")]
    NoProducts,
    /// More than [`FAMILY_PRODUCTS_MAX`] products.
    #[error("a family names at most {FAMILY_PRODUCTS_MAX} products")]
    TooManyProducts,
    /// A product named twice.
    #[error("a product is named twice")]
    DuplicateProduct,
    /// The products' auctions close at different times.
    #[error("the named products' auctions close at different times")]
    GatesDiffer,
    /// The products' auctions, or the gate's other families, clear under other rules.
    #[error("the named products' auctions clear under different rules")]
    RulesDiffer,
    /// No block.
    #[error("a family needs at least one block")]
    NoBlocks,
    /// More than [`BLOCKS_PER_FAMILY_MAX`] blocks, or more than [`FAMILY_QTYS_MAX`]
    /// quantities.
    #[error("too many blocks or quantities in one family")]
    TooManyBlocks,
    /// A block has not one quantity per named product.
    #[error("block {block_idx} has not one quantity per named product")]
    BlockLength {
        /// Index of the block.
        block_idx: u32,
    },
    /// A block's limit price is not a multiple of the tick.
    #[error("block {block_idx}: limit price off the tick")]
    PriceOffTick {
        /// Index of the block.
        block_idx: u32,
    },
    /// A block's limit price is outside the auction's price limits.
    #[error("block {block_idx}: limit price outside the auction's limits")]
    PriceOutOfLimits {
        /// Index of the block.
        block_idx: u32,
    },
    /// A quantity is negative or above the auction's maximum.
    #[error("block {block_idx}: a quantity is negative or above the maximum")]
    QtyOutOfRange {
        /// Index of the block.
        block_idx: u32,
    },
    /// Every quantity of a block is zero.
    #[error("block {block_idx} trades nothing")]
    NoQuantity {
        /// Index of the block.
        block_idx: u32,
    },
    /// The gate holds [`FAMILIES_PER_GATE_MAX`] families already.
    #[error("the gate holds the maximum number of families")]
    TooManyFamilies,
    /// The account's exclusive group holds [`EXCLUSIVE_GROUP_FAMILIES_MAX`] already.
    #[error("the exclusive group holds the maximum number of families")]
    ExclusiveGroupFull,
    /// Withdrawal of a family that is not open.
    #[error("no such open family")]
    NoSuchFamily,
}

fn index_u32(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

impl FamilyReject {
    /// The reject for a block error of [`BlockFamily::new`].
    pub fn from_block_error(error: &BlockError) -> FamilyReject {
        match error {
            BlockError::Empty => FamilyReject::NoBlocks,
            BlockError::TooManyBlocks { .. } => FamilyReject::TooManyBlocks,
            BlockError::LengthMismatch { block_idx, .. } => FamilyReject::BlockLength {
                block_idx: index_u32(*block_idx),
            },
            BlockError::Price { block_idx, source } => {
                let block_idx = index_u32(*block_idx);
                match source {
                    RuleError::PriceOffTick { .. } => FamilyReject::PriceOffTick { block_idx },
                    _ => FamilyReject::PriceOutOfLimits { block_idx },
                }
            }
            BlockError::Qty { block_idx, .. } => FamilyReject::QtyOutOfRange {
                block_idx: index_u32(*block_idx),
            },
            BlockError::NoQuantity { block_idx } => FamilyReject::NoQuantity {
                block_idx: index_u32(*block_idx),
            },
        }
    }
}

/// A family as the shard keeps it until its gate (and in snapshots).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFamily {
    /// Owner.
    pub account: AccountId,
    /// The owner's name for it.
    pub family: FamilyRef,
    /// The products it spans, in the order of its blocks' quantities.
    pub products: Vec<ProductId>,
    /// Its blocks.
    pub blocks: Vec<FamilyBlock>,
    /// The owner's exclusive group, if any.
    pub exclusive_group: Option<u32>,
}

impl StoredFamily {
    /// Number of quantities over all blocks (what [`FAMILY_QTYS_MAX`] bounds).
    pub fn n_qtys(blocks: &[FamilyBlock]) -> usize {
        blocks.iter().map(|block| block.qty.len()).sum()
    }

    /// The market's family over `day` (products in clearing order, a superset of this
    /// family's): each block's quantities placed at its products' positions, zero
    /// elsewhere.
    ///
    /// # Errors
    /// [`BlockError`] if the blocks break `config`'s rules, or (as a length mismatch) if
    /// `day` lacks one of the family's products.
    pub fn to_block_family(
        &self,
        day: &[ProductId],
        config: &AuctionConfig,
    ) -> Result<BlockFamily, BlockError> {
        let mut positions = Vec::with_capacity(self.products.len());
        for product in &self.products {
            match day.binary_search(product) {
                Ok(position) => positions.push(position),
                Err(_) => {
                    return Err(BlockError::LengthMismatch {
                        block_idx: 0,
                        len: self.products.len(),
                        periods: day.len(),
                    });
                }
            }
        }
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for (block_idx, block) in self.blocks.iter().enumerate() {
            if block.qty.len() != self.products.len() {
                return Err(BlockError::LengthMismatch {
                    block_idx,
                    len: block.qty.len(),
                    periods: self.products.len(),
                });
            }
            let mut qty = vec![Qty(0); day.len()];
            for (position, lots) in positions.iter().zip(&block.qty) {
                qty[*position] = *lots;
            }
            blocks.push(Block {
                side: block.side,
                limit: block.limit,
                qty,
            });
        }
        let family = BlockFamily::new(self.account, day.len(), blocks, config)?;
        Ok(match self.exclusive_group {
            Some(group) => family.in_exclusive_group(ExclusiveGroupId(group)),
            None => family,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voltex_market::auction::AuctionConfig;

    fn family(products: &[u32], qty: &[i64]) -> StoredFamily {
        StoredFamily {
            account: AccountId(7),
            family: FamilyRef(1),
            products: products.iter().map(|id| ProductId(*id)).collect(),
            blocks: vec![FamilyBlock {
                side: Side::Buy,
                limit: Price(5_000),
                qty: qty.iter().map(|lots| Qty(*lots)).collect(),
            }],
            exclusive_group: Some(3),
        }
    }

    #[test]
    fn a_family_spreads_over_the_day_in_product_order_with_zeros_elsewhere() {
        let config = AuctionConfig::day_ahead_default();
        // Named out of order: product 4 first, then 2.
        let stored = family(&[4, 2], &[3, 5]);
        let day = [ProductId(1), ProductId(2), ProductId(4)];
        let block_family = stored.to_block_family(&day, &config).unwrap();
        assert_eq!(block_family.periods(), 3);
        assert_eq!(block_family.blocks()[0].qty, vec![Qty(0), Qty(5), Qty(3)]);
        assert_eq!(block_family.exclusive_group(), Some(ExclusiveGroupId(3)));
        // A day without one of its products is refused, not truncated.
        assert!(matches!(
            stored.to_block_family(&[ProductId(2)], &config),
            Err(BlockError::LengthMismatch { .. })
        ));
        // A block with a quantity short is refused.
        let short = family(&[4, 2], &[3]);
        assert!(matches!(
            short.to_block_family(&day, &config),
            Err(BlockError::LengthMismatch { block_idx: 0, .. })
        ));
    }
}
