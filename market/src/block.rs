//! Linked block orders: all-or-none families of blocks that span the periods of a day,
//! cleared on top of the per-period call auction ([`crate::auction`]).
//!
//! This module owns [`Block`] (one side, one limit price, a quantity per period of the
//! day), [`BlockFamily`] (one participant's linked blocks, accepted or rejected as a
//! whole; validated on construction) and [`clear_day_with_families`] (the day's
//! clearing with them). Like the rest of the crate it does no I/O, reads no clock and
//! draws no randomness.
//!
//! A participant may put several families in one *exclusive group*
//! ([`BlockFamily::in_exclusive_group`]): at most one of them is accepted (EUPHEMIA's
//! exclusive groups of blocks). A battery offers there alternative day schedules, of which
//! the clearing takes the one with the most surplus.
//!
//! Why: hourly curves clear hour by hour, so a storage bid can win a sale without the
//! purchase that was to fill it (or the reverse) when the day's prices come out higher or
//! lower than forecast. A family makes the day's buying and selling one decision: a
//! battery bids its charging as a buy block and its discharging as a sell block, linked.
//!
//! # Surplus
//! A family's surplus at the day's prices `p_t` is, over its blocks and periods,
//! `Σ q_t · (p_t − limit)` for a sell block and `Σ q_t · (limit − p_t)` for a buy block,
//! in ticks of 0.01 EUR/MWh times lots ([`BlockFamily::surplus`]). A block's limit is
//! thus the volume-weighted *average* price it accepts, and a linked sell block's gain
//! can carry a buy block's loss (as EUPHEMIA's linked block families do).
//!
//! # Clearing rule ([`clear_day_with_families`])
//! An accepted family trades every quantity of every block in full at the period prices,
//! and its surplus at those prices is `>= 0`: no family is accepted at a loss
//! ("paradoxically"). A family may be rejected although it would have had a surplus
//! (paradoxically rejected, as EUPHEMIA allows).
//!
//! The outcome is found greedily: every family starts accepted; each period is cleared
//! with the accepted blocks' quantities as price-taking steps of their participant (a
//! buy at the maximum price, a sell at the minimum); if an accepted family did not trade
//! in full (a period without trade, or cleared at its step's price limit where steps
//! can be curtailed) or has a negative surplus, the one worst off (not traded in full
//! first, then the lowest surplus, then the lowest index) is rejected and the day is
//! cleared again. Once no accepted family breaks that rule, an exclusive group with more
//! than one accepted member loses its member with the lowest surplus (the later one on a
//! tie, so a participant lists its preferred alternative first), and the day is cleared
//! again. That is at most `families + 1` rounds, and the result depends only on
//! the input. EUPHEMIA instead searches the combinations of blocks for the most
//! welfare (branch and bound); this rule finds a consistent outcome, not necessarily the
//! welfare-best one. Against a market deep enough that blocks do not move the prices
//! (a replayed price series) it accepts exactly the families with surplus `>= 0`, and of
//! each exclusive group the first of those with the most surplus.
//!
//! # Invariants
//! - Accepted families: every block quantity traded in full, surplus `>= 0` at the
//!   returned prices (asserted before returning); at most one accepted family per
//!   participant and exclusive group.
//! - Limits: at most [`FAMILIES_MAX`] families per day and [`BLOCKS_PER_FAMILY_MAX`]
//!   blocks per family; every block price on the tick grid and inside the limits, every
//!   quantity whole lots in `0..=qty_max`, and every block has some quantity; at most
//!   [`EXCLUSIVE_GROUP_FAMILIES_MAX`] families in one participant's exclusive group.

use std::collections::BTreeMap;

use crate::auction::{
    Auction, AuctionConfig, AuctionError, BidCurve, ClearingResult, CurveKind, CurvePoint,
};
use crate::{AccountId, Price, Qty, RuleError, Side};

/// Most families one day's clearing takes.
pub const FAMILIES_MAX: usize = 256;

/// Most blocks in one family.
pub const BLOCKS_PER_FAMILY_MAX: usize = 8;

/// Most families in one participant's exclusive group (the 24 of EPEX's and Nord Pool's
/// exclusive groups of blocks).
pub const EXCLUSIVE_GROUP_FAMILIES_MAX: usize = 24;

/// A participant's name for one of its exclusive groups; groups of different
/// participants never interact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExclusiveGroupId(pub u32);

/// One block: `qty[t]` lots in period `t` of the day, all on `side`, at a volume-weighted
/// average price no worse than `limit` (a buy pays at most, a sell gets at least).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Buy or sell.
    pub side: Side,
    /// Limit price of the block as a whole.
    pub limit: Price,
    /// Lots per period of the day (zero where the block does not trade).
    pub qty: Vec<Qty>,
}

/// Why a block family was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The family has no blocks.
    #[error("a block family needs at least one block")]
    Empty,
    /// More blocks than [`BLOCKS_PER_FAMILY_MAX`].
    #[error("{n_blocks} blocks in one family is more than the limit of {max}")]
    TooManyBlocks {
        /// Blocks given.
        n_blocks: usize,
        /// The limit.
        max: usize,
    },
    /// A block's profile does not cover the day's periods exactly.
    #[error("block {block_idx}: {len} quantities for a day of {periods} periods")]
    LengthMismatch {
        /// Index of the block.
        block_idx: usize,
        /// Quantities given.
        len: usize,
        /// Periods of the day.
        periods: usize,
    },
    /// The limit price is off the tick or outside the limits.
    #[error("block {block_idx}: {source}")]
    Price {
        /// Index of the block.
        block_idx: usize,
        /// The broken rule.
        source: RuleError,
    },
    /// A quantity is negative or above the market's maximum.
    #[error("block {block_idx}, period {period}: quantity {qty} is not in 0..={max}")]
    Qty {
        /// Index of the block.
        block_idx: usize,
        /// The period.
        period: usize,
        /// The quantity.
        qty: Qty,
        /// The market's maximum.
        max: Qty,
    },
    /// Every quantity of the block is zero.
    #[error("block {block_idx} trades nothing in any period")]
    NoQuantity {
        /// Index of the block.
        block_idx: usize,
    },
}

/// One participant's linked blocks, accepted or rejected together; validated on
/// construction against a day of `periods` periods and an auction's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockFamily {
    participant: AccountId,
    periods: usize,
    blocks: Vec<Block>,
    exclusive_group: Option<ExclusiveGroupId>,
}

impl BlockFamily {
    /// Builds a family and checks it.
    ///
    /// # Errors
    /// Any [`BlockError`]: no blocks, too many, a profile of another length than
    /// `periods`, a limit off the tick or outside the limits, a quantity out of range, a
    /// block without quantity.
    pub fn new(
        participant: AccountId,
        periods: usize,
        blocks: Vec<Block>,
        config: &AuctionConfig,
    ) -> Result<BlockFamily, BlockError> {
        if blocks.is_empty() {
            return Err(BlockError::Empty);
        }
        if blocks.len() > BLOCKS_PER_FAMILY_MAX {
            return Err(BlockError::TooManyBlocks {
                n_blocks: blocks.len(),
                max: BLOCKS_PER_FAMILY_MAX,
            });
        }
        let rules = &config.rules;
        for (block_idx, block) in blocks.iter().enumerate() {
            if block.qty.len() != periods {
                return Err(BlockError::LengthMismatch {
                    block_idx,
                    len: block.qty.len(),
                    periods,
                });
            }
            rules
                .check_price(block.limit)
                .map_err(|source| BlockError::Price { block_idx, source })?;
            for (period, qty) in block.qty.iter().enumerate() {
                if qty.0 < 0 || *qty > rules.qty_max {
                    return Err(BlockError::Qty {
                        block_idx,
                        period,
                        qty: *qty,
                        max: rules.qty_max,
                    });
                }
            }
            if block.qty.iter().all(|qty| qty.is_zero()) {
                return Err(BlockError::NoQuantity { block_idx });
            }
        }
        Ok(BlockFamily {
            participant,
            periods,
            blocks,
            exclusive_group: None,
        })
    }

    /// This family as a member of its participant's exclusive group `group`: of the
    /// group's members at most one is accepted.
    #[must_use]
    pub fn in_exclusive_group(mut self, group: ExclusiveGroupId) -> BlockFamily {
        self.exclusive_group = Some(group);
        self
    }

    /// The exclusive group the family belongs to, if any.
    pub fn exclusive_group(&self) -> Option<ExclusiveGroupId> {
        self.exclusive_group
    }

    /// The bidding account.
    pub fn participant(&self) -> AccountId {
        self.participant
    }

    /// The periods of the day the family was built for.
    pub fn periods(&self) -> usize {
        self.periods
    }

    /// The blocks.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// The family's surplus at `prices` (one per period; `None` = no trade), in ticks of
    /// 0.01 EUR/MWh times lots; `None` if some quantity falls in a period without a
    /// price or `prices` has another length.
    pub fn surplus(&self, prices: &[Option<Price>]) -> Option<i128> {
        if prices.len() != self.periods {
            return None;
        }
        let mut surplus: i128 = 0;
        for block in &self.blocks {
            for (qty, price) in block.qty.iter().zip(prices) {
                if qty.is_zero() {
                    continue;
                }
                let price = (*price)?;
                let margin = match block.side {
                    Side::Sell => i128::from(price.0) - i128::from(block.limit.0),
                    Side::Buy => i128::from(block.limit.0) - i128::from(price.0),
                };
                surplus += margin * i128::from(qty.0);
            }
        }
        Some(surplus)
    }

    /// True if at `prices` every quantity trades in full: its period has a price, and
    /// the price is not at the limit where its price-taking step could be curtailed.
    fn trades_in_full(&self, prices: &[Option<Price>], config: &AuctionConfig) -> bool {
        self.blocks.iter().all(|block| {
            block.qty.iter().zip(prices).all(|(qty, price)| {
                qty.is_zero()
                    || match (block.side, price) {
                        (_, None) => false,
                        (Side::Buy, Some(p)) => *p < config.rules.price_max,
                        (Side::Sell, Some(p)) => *p > config.rules.price_min,
                    }
            })
        })
    }
}

/// A family's outcome in the day's clearing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FamilyOutcome {
    /// Accepted (every block traded in full) or rejected (nothing of it traded).
    pub accepted: bool,
    /// Its surplus at the day's prices (see [`BlockFamily::surplus`]); `None` where a
    /// quantity falls in a period without trade.
    pub surplus: Option<i128>,
}

/// The day's clearing with block families.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DayClearing {
    /// Each period's result; an accepted family's quantities are in its participant's
    /// accepted quantities, beside its curves.
    pub periods: Vec<ClearingResult>,
    /// One outcome per family, in input order.
    pub families: Vec<FamilyOutcome>,
    /// Clearing rounds run (1 when no family had to be rejected).
    pub rounds: usize,
}

/// Why a day with block families could not clear.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FamilyClearingError {
    /// More families than [`FAMILIES_MAX`].
    #[error("{n_families} block families in one day is more than the limit of {max}")]
    TooManyFamilies {
        /// Families given.
        n_families: usize,
        /// The limit.
        max: usize,
    },
    /// More families in one participant's exclusive group than
    /// [`EXCLUSIVE_GROUP_FAMILIES_MAX`].
    #[error(
        "participant {participant:?}'s exclusive group {group:?} has {n_families} families, more than the limit of {max}"
    )]
    ExclusiveGroupTooLarge {
        /// The participant.
        participant: AccountId,
        /// The group.
        group: ExclusiveGroupId,
        /// Families in it.
        n_families: usize,
        /// The limit.
        max: usize,
    },
    /// A family was built for a day of another length.
    #[error("family {family_idx} covers {family_periods} periods, the day has {periods}")]
    LengthMismatch {
        /// Index of the family.
        family_idx: usize,
        /// Its periods.
        family_periods: usize,
        /// The day's periods.
        periods: usize,
    },
    /// A block quantity cannot be bid under this auction's rules.
    #[error("family {family_idx}: {source}")]
    Block {
        /// Index of the family.
        family_idx: usize,
        /// Why its step was refused.
        source: crate::auction::CurveError,
    },
    /// A period could not clear.
    #[error("period {period}: {source}")]
    Period {
        /// The period.
        period: usize,
        /// Why.
        source: AuctionError,
    },
}

/// Clears a day: `periods[t]` are period `t`'s curves, `families` the linked blocks
/// (see the module documentation for the rule).
///
/// After the first round only the periods the last rejected family traded in clear
/// again (a period's result depends only on its curves and the accepted steps in it).
/// Allocates per cleared period (its curves plus the accepted blocks' steps); it runs
/// once per auction day, not per order.
///
/// # Errors
/// [`FamilyClearingError`] for too many families, a family of another day length, or a
/// period that cannot clear (as [`Auction::clear_period`]).
pub fn clear_day_with_families<P: AsRef<[BidCurve]>>(
    auction: &mut Auction,
    periods: &[P],
    families: &[BlockFamily],
) -> Result<DayClearing, FamilyClearingError> {
    if families.len() > FAMILIES_MAX {
        return Err(FamilyClearingError::TooManyFamilies {
            n_families: families.len(),
            max: FAMILIES_MAX,
        });
    }
    let n = periods.len();
    // Each exclusive group's members, by participant and group.
    let mut groups: BTreeMap<(AccountId, ExclusiveGroupId), Vec<usize>> = BTreeMap::new();
    for (family_idx, family) in families.iter().enumerate() {
        if family.periods != n {
            return Err(FamilyClearingError::LengthMismatch {
                family_idx,
                family_periods: family.periods,
                periods: n,
            });
        }
        if let Some(group) = family.exclusive_group {
            groups
                .entry((family.participant, group))
                .or_default()
                .push(family_idx);
        }
    }
    for ((participant, group), members) in &groups {
        if members.len() > EXCLUSIVE_GROUP_FAMILIES_MAX {
            return Err(FamilyClearingError::ExclusiveGroupTooLarge {
                participant: *participant,
                group: *group,
                n_families: members.len(),
                max: EXCLUSIVE_GROUP_FAMILIES_MAX,
            });
        }
    }
    let config = auction.config().clone();
    // The price-taking step of each family, block and period, built once.
    let mut steps: Vec<Vec<(usize, BidCurve)>> = vec![Vec::new(); n];
    // The periods each family trades in: only those clear again when it is rejected.
    let mut family_periods: Vec<Vec<usize>> = vec![Vec::new(); families.len()];
    for (family_idx, family) in families.iter().enumerate() {
        for block in &family.blocks {
            let price = match block.side {
                Side::Buy => config.rules.price_max,
                Side::Sell => config.rules.price_min,
            };
            for (period, qty) in block.qty.iter().enumerate() {
                if qty.is_zero() {
                    continue;
                }
                let step = BidCurve::new(
                    family.participant,
                    block.side,
                    CurveKind::Stepwise,
                    vec![CurvePoint { price, qty: *qty }],
                    &config,
                )
                .map_err(|source| FamilyClearingError::Block { family_idx, source })?;
                steps[period].push((family_idx, step));
                if family_periods[family_idx].last() != Some(&period) {
                    family_periods[family_idx].push(period);
                }
            }
        }
    }
    for periods_of_family in &mut family_periods {
        periods_of_family.sort_unstable();
        periods_of_family.dedup();
    }
    let mut accepted = vec![true; families.len()];
    let mut rounds = 0;
    // A period's result depends only on its curves and the accepted families' steps in
    // it, so a round clears again only the periods the last rejected family traded in.
    let mut results: Vec<Option<ClearingResult>> = vec![None; n];
    let mut bids: Vec<BidCurve> = Vec::new();
    loop {
        rounds += 1;
        for (period, curves) in periods.iter().enumerate() {
            if results[period].is_some() {
                continue;
            }
            bids.clear();
            bids.extend_from_slice(curves.as_ref());
            bids.extend(
                steps[period]
                    .iter()
                    .filter(|(family_idx, _)| accepted[*family_idx])
                    .map(|(_, step)| step.clone()),
            );
            results[period] = Some(
                auction
                    .clear_period(&bids)
                    .map_err(|source| FamilyClearingError::Period { period, source })?,
            );
        }
        let prices: Vec<Option<Price>> = results
            .iter()
            .map(|result| result.as_ref().and_then(|result| result.price))
            .collect();
        // The accepted family worst off, if any breaks the rule: not traded in full
        // first, then the lowest surplus, then the lowest index.
        let mut worst: Option<(bool, i128, usize)> = None;
        for (family_idx, family) in families.iter().enumerate() {
            if !accepted[family_idx] {
                continue;
            }
            let in_full = family.trades_in_full(&prices, &config);
            let surplus = family.surplus(&prices).unwrap_or(i128::MIN);
            if in_full && surplus >= 0 {
                continue;
            }
            let key = (in_full, surplus, family_idx);
            if worst.is_none_or(|current| key < current) {
                worst = Some(key);
            }
        }
        let worst = worst
            .map(|(_, _, family_idx)| family_idx)
            .or_else(|| exclusive_group_loser(families, &groups, &accepted, &prices));
        match worst {
            Some(family_idx) => {
                accepted[family_idx] = false;
                for period in &family_periods[family_idx] {
                    results[*period] = None;
                }
            }
            None => {
                let outcomes: Vec<FamilyOutcome> = families
                    .iter()
                    .zip(&accepted)
                    .map(|(family, accepted)| FamilyOutcome {
                        accepted: *accepted,
                        surplus: family.surplus(&prices),
                    })
                    .collect();
                for (family, outcome) in families.iter().zip(&outcomes) {
                    assert!(
                        !outcome.accepted
                            || (family.trades_in_full(&prices, &config)
                                && outcome.surplus.is_some_and(|s| s >= 0)),
                        "an accepted family trades in full at a surplus"
                    );
                }
                for members in groups.values() {
                    assert!(
                        members.iter().filter(|idx| accepted[**idx]).count() <= 1,
                        "at most one accepted family per exclusive group"
                    );
                }
                return Ok(DayClearing {
                    periods: results
                        .into_iter()
                        .map(|result| result.expect("every period is cleared in each round"))
                        .collect(),
                    families: outcomes,
                    rounds,
                });
            }
        }
    }
}

/// Of the exclusive groups with more than one accepted member, the member to reject: the
/// lowest surplus at `prices`, the later one on a tie; `None` if no group has two.
fn exclusive_group_loser(
    families: &[BlockFamily],
    groups: &BTreeMap<(AccountId, ExclusiveGroupId), Vec<usize>>,
    accepted: &[bool],
    prices: &[Option<Price>],
) -> Option<usize> {
    let mut worst: Option<(i128, std::cmp::Reverse<usize>)> = None;
    for members in groups.values() {
        if members.iter().filter(|idx| accepted[**idx]).count() < 2 {
            continue;
        }
        for &family_idx in members.iter().filter(|idx| accepted[**idx]) {
            let surplus = families[family_idx].surplus(prices).unwrap_or(i128::MIN);
            let key = (surplus, std::cmp::Reverse(family_idx));
            if worst.is_none_or(|current| key < current) {
                worst = Some(key);
            }
        }
    }
    worst.map(|(_, std::cmp::Reverse(family_idx))| family_idx)
}
