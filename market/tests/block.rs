//! Linked block families in the day's clearing: accepted exactly at a non-negative
//! surplus against a deep market (hand-computed and property-tested), rejected when they
//! move a thin market against themselves or would be curtailed, and every kind of bad
//! family or day refused with a typed error.

use proptest::prelude::*;
use voltex_market::auction::{Auction, AuctionConfig, BidCurve, CurveKind, CurvePoint};
use voltex_market::block::{
    BLOCKS_PER_FAMILY_MAX, Block, BlockError, BlockFamily, EXCLUSIVE_GROUP_FAMILIES_MAX,
    ExclusiveGroupId, FAMILIES_MAX, FamilyClearingError, clear_day_with_families,
};
use voltex_market::{AccountId, Price, Qty, RuleError, Side};

const BATTERY: AccountId = AccountId(1);
const MARKET: AccountId = AccountId(99);

fn config() -> AuctionConfig {
    AuctionConfig::day_ahead_default()
}

fn eur(cents: i64) -> Price {
    Price(cents)
}

fn step(participant: AccountId, side: Side, price: Price, qty: i64) -> BidCurve {
    BidCurve::new(
        participant,
        side,
        CurveKind::Stepwise,
        vec![CurvePoint {
            price,
            qty: Qty(qty),
        }],
        &config(),
    )
    .expect("valid step")
}

/// A market that buys and sells any quantity at `price`.
fn deep(price: Price) -> Vec<BidCurve> {
    let max = config().rules.qty_max.0;
    vec![
        step(MARKET, Side::Buy, price, max),
        step(MARKET, Side::Sell, price, max),
    ]
}

/// `participant` buys 10 lots in period 0 at an average of at most `buy_limit`, linked
/// with selling 9 lots in period 1 at an average of at least `sell_limit`.
fn round_trip_of(participant: AccountId, buy_limit: Price, sell_limit: Price) -> BlockFamily {
    BlockFamily::new(
        participant,
        2,
        vec![
            Block {
                side: Side::Buy,
                limit: buy_limit,
                qty: vec![Qty(10), Qty(0)],
            },
            Block {
                side: Side::Sell,
                limit: sell_limit,
                qty: vec![Qty(0), Qty(9)],
            },
        ],
        &config(),
    )
    .expect("valid family")
}

/// The battery's round trip: buy at most 40.00, sell at least 60.00.
fn round_trip() -> BlockFamily {
    round_trip_of(BATTERY, eur(4_000), eur(6_000))
}

fn auction() -> Auction {
    Auction::new(config()).expect("auction")
}

#[test]
fn a_linked_family_clears_all_or_nothing_at_a_non_negative_surplus() {
    // (prices, accepted, surplus in ticks x lots)
    let cases = [
        // Both in the money: 10 x 10.00 + 9 x 10.00.
        ([3_000, 7_000], true, 10 * 1_000 + 9 * 1_000),
        // Both out of the money.
        ([5_000, 5_500], false, -(10 * 1_000) - 9 * 500),
        // The purchase is 5.00 above its limit but the linked sale is 20.00 above its own:
        // the sale carries the purchase (hourly curves would sell without the energy).
        ([4_500, 8_000], true, -(10 * 500) + 9 * 2_000),
        // The sale's gain does not cover the purchase's loss.
        ([5_000, 6_500], false, -(10 * 1_000) + 9 * 500),
        // Exactly zero surplus is accepted.
        ([4_900, 7_000], true, -(10 * 900) + 9 * 1_000),
    ];
    for (prices, accepted, surplus) in cases {
        let periods: Vec<Vec<BidCurve>> = prices.iter().map(|p| deep(eur(*p))).collect();
        let day =
            clear_day_with_families(&mut auction(), &periods, &[round_trip()]).expect("day clears");
        let outcome = day.families[0];
        assert_eq!(outcome.accepted, accepted, "{prices:?}");
        assert_eq!(outcome.surplus, Some(surplus), "{prices:?}");
        let (bought, sold) = (
            day.periods[0].accepted_qty(BATTERY, Side::Buy),
            day.periods[1].accepted_qty(BATTERY, Side::Sell),
        );
        let expected = if accepted { (10, 9) } else { (0, 0) };
        assert_eq!((bought.0, sold.0), expected, "{prices:?}: all or nothing");
        assert_eq!(day.periods[0].price, Some(eur(prices[0])));
        assert_eq!(day.rounds, if accepted { 1 } else { 2 });
    }
}

#[test]
fn a_family_that_moves_a_thin_market_against_itself_is_rejected_and_nothing_trades() {
    // Period 0 offers 5 lots at 30.00 and 10 more at 100.00: buying 10 lots there sets the
    // price at 100.00, far above the block's 40.00; period 1 has a buyer of 10 lots at 60.00.
    let periods = vec![
        vec![
            step(MARKET, Side::Sell, eur(3_000), 5),
            step(AccountId(98), Side::Sell, eur(10_000), 10),
        ],
        vec![step(MARKET, Side::Buy, eur(6_000), 10)],
    ];
    let day = clear_day_with_families(&mut auction(), &periods, &[round_trip()]).expect("clears");
    assert!(!day.families[0].accepted);
    assert_eq!(day.rounds, 2);
    // Without the family neither period crosses.
    assert_eq!(day.periods[0].price, None);
    assert_eq!(day.periods[1].price, None);
    assert_eq!(day.periods[0].accepted_qty(BATTERY, Side::Buy), Qty(0));
}

#[test]
fn a_family_whose_block_would_be_curtailed_at_the_price_limit_is_rejected() {
    // Only 5 lots are offered in period 0: a 10-lot price-taking buy clears at the
    // maximum price and is curtailed, so the family cannot trade in full.
    let periods = vec![
        vec![step(MARKET, Side::Sell, eur(3_000), 5)],
        deep(eur(9_000)),
    ];
    let day = clear_day_with_families(&mut auction(), &periods, &[round_trip()]).expect("clears");
    assert!(!day.families[0].accepted);
    assert_eq!(day.periods[1].accepted_qty(BATTERY, Side::Sell), Qty(0));
}

#[test]
fn of_an_exclusive_group_only_the_alternative_with_the_most_surplus_is_accepted() {
    // Prices 45.00 then 61.00. The battery offers three alternative round trips in group
    // 7: surplus -5,000 + 900 (loss), 10 x 500 + 9 x 600 = 10,400, and 10 x 1,000 + 9 x 100
    // = 10,900; and a fourth family outside the group (10,400 again). Another
    // participant's group 7 is its own.
    let group = ExclusiveGroupId(7);
    let battery_families = [
        round_trip().in_exclusive_group(group),
        round_trip_of(BATTERY, eur(5_000), eur(5_500)).in_exclusive_group(group),
        round_trip_of(BATTERY, eur(5_500), eur(6_000)).in_exclusive_group(group),
        round_trip_of(BATTERY, eur(5_000), eur(5_500)),
    ];
    let other = round_trip_of(AccountId(2), eur(5_000), eur(5_500)).in_exclusive_group(group);
    let mut families = battery_families.to_vec();
    families.push(other);
    let periods = vec![deep(eur(4_500)), deep(eur(6_100))];
    let day = clear_day_with_families(&mut auction(), &periods, &families).expect("clears");
    let accepted: Vec<bool> = day.families.iter().map(|o| o.accepted).collect();
    assert_eq!(accepted, vec![false, false, true, true, true]);
    assert_eq!(day.families[2].surplus, Some(10 * 1_000 + 9 * 100));
    // The battery buys for two accepted families, the other participant for its own.
    assert_eq!(day.periods[0].accepted_qty(BATTERY, Side::Buy), Qty(20));
    assert_eq!(day.periods[1].accepted_qty(BATTERY, Side::Sell), Qty(18));
    assert_eq!(
        day.periods[0].accepted_qty(AccountId(2), Side::Buy),
        Qty(10)
    );
    // One rejection per round: the loss first, then the lesser alternative.
    assert_eq!(day.rounds, 3);

    // On a tie the alternative listed first is kept.
    let tied = [
        round_trip_of(BATTERY, eur(5_000), eur(5_500)).in_exclusive_group(group),
        round_trip_of(BATTERY, eur(5_000), eur(5_500)).in_exclusive_group(group),
    ];
    let day = clear_day_with_families(&mut auction(), &periods, &tied).expect("clears");
    assert!(day.families[0].accepted);
    assert!(!day.families[1].accepted);
    assert_eq!(day.periods[0].accepted_qty(BATTERY, Side::Buy), Qty(10));
}

#[test]
fn an_exclusive_group_above_the_limit_is_refused() {
    let periods = vec![deep(eur(4_500)), deep(eur(6_100))];
    let group = ExclusiveGroupId(1);
    let full = vec![round_trip().in_exclusive_group(group); EXCLUSIVE_GROUP_FAMILIES_MAX];
    assert!(clear_day_with_families(&mut auction(), &periods, &full).is_ok());
    let mut over = full.clone();
    over.push(round_trip().in_exclusive_group(group));
    assert_eq!(
        clear_day_with_families(&mut auction(), &periods, &over),
        Err(FamilyClearingError::ExclusiveGroupTooLarge {
            participant: BATTERY,
            group,
            n_families: EXCLUSIVE_GROUP_FAMILIES_MAX + 1,
            max: EXCLUSIVE_GROUP_FAMILIES_MAX,
        })
    );
    // The same number split over two groups, or two participants, is fine.
    let mut split = full;
    split.push(round_trip().in_exclusive_group(ExclusiveGroupId(2)));
    split.push(round_trip_of(AccountId(2), eur(4_000), eur(6_000)).in_exclusive_group(group));
    assert!(clear_day_with_families(&mut auction(), &periods, &split).is_ok());
}

#[test]
fn the_worst_family_goes_first_and_a_good_one_stays() {
    // Two batteries bid the same round trip into a deep market at 45.00 / 61.00: the
    // first with the default limits (surplus -5,000 + 900), the second wider (accepted).
    let wide = round_trip_of(AccountId(2), eur(5_000), eur(5_500));
    let periods = vec![deep(eur(4_500)), deep(eur(6_100))];
    let day =
        clear_day_with_families(&mut auction(), &periods, &[round_trip(), wide]).expect("clears");
    assert!(!day.families[0].accepted);
    assert!(day.families[1].accepted);
    assert_eq!(day.families[1].surplus, Some(10 * 500 + 9 * 600));
    assert_eq!(
        day.periods[0].accepted_qty(AccountId(2), Side::Buy),
        Qty(10)
    );
    assert_eq!(day.periods[0].accepted_qty(BATTERY, Side::Buy), Qty(0));
}

#[test]
fn bad_families_and_days_are_typed_errors() {
    let config = config();
    let block = |side, limit, qty: Vec<i64>| Block {
        side,
        limit,
        qty: qty.into_iter().map(Qty).collect(),
    };
    let build = |blocks| BlockFamily::new(BATTERY, 2, blocks, &config);
    assert_eq!(build(vec![]), Err(BlockError::Empty));
    assert!(matches!(
        build(vec![
            block(Side::Buy, eur(100), vec![1, 0]);
            BLOCKS_PER_FAMILY_MAX + 1
        ]),
        Err(BlockError::TooManyBlocks { .. })
    ));
    assert!(matches!(
        build(vec![block(Side::Buy, eur(100), vec![1, 0, 0])]),
        Err(BlockError::LengthMismatch {
            block_idx: 0,
            len: 3,
            periods: 2
        })
    ));
    let off_tick = AuctionConfig {
        rules: voltex_market::MarketRules {
            tick: Price(10),
            ..config.rules.clone()
        },
        ..config.clone()
    };
    assert!(matches!(
        BlockFamily::new(
            BATTERY,
            2,
            vec![block(Side::Buy, eur(105), vec![1, 0])],
            &off_tick
        ),
        Err(BlockError::Price {
            block_idx: 0,
            source: RuleError::PriceOffTick { .. }
        })
    ));
    assert!(matches!(
        build(vec![block(
            Side::Sell,
            Price(config.rules.price_max.0 + 1),
            vec![1, 0]
        )]),
        Err(BlockError::Price {
            source: RuleError::PriceOutOfLimits { .. },
            ..
        })
    ));
    assert!(matches!(
        build(vec![
            block(Side::Buy, eur(100), vec![1, 0]),
            block(Side::Sell, eur(100), vec![0, -1])
        ]),
        Err(BlockError::Qty {
            block_idx: 1,
            period: 1,
            ..
        })
    ));
    assert!(matches!(
        build(vec![block(
            Side::Sell,
            eur(100),
            vec![config.rules.qty_max.0 + 1, 0]
        )]),
        Err(BlockError::Qty { period: 0, .. })
    ));
    assert_eq!(
        build(vec![block(Side::Sell, eur(100), vec![0, 0])]),
        Err(BlockError::NoQuantity { block_idx: 0 })
    );

    // A family of two periods in a day of three; more families than the limit.
    let three: Vec<Vec<BidCurve>> = (0..3).map(|_| deep(eur(5_000))).collect();
    assert_eq!(
        clear_day_with_families(&mut auction(), &three, &[round_trip()]),
        Err(FamilyClearingError::LengthMismatch {
            family_idx: 0,
            family_periods: 2,
            periods: 3
        })
    );
    let two: Vec<Vec<BidCurve>> = (0..2).map(|_| deep(eur(5_000))).collect();
    let many = vec![round_trip(); FAMILIES_MAX + 1];
    assert!(matches!(
        clear_day_with_families(&mut auction(), &two, &many),
        Err(FamilyClearingError::TooManyFamilies { .. })
    ));
}

proptest! {
    /// Against a deep market (prices strictly inside the limits) every family is
    /// accepted exactly when its surplus at those prices is not negative, accepted ones
    /// trade every lot, and the prices are the market's.
    #[test]
    fn against_a_deep_market_exactly_the_families_in_surplus_are_accepted(
        prices in prop::collection::vec(-2_000_i64..20_000, 4),
        families in prop::collection::vec(
            (
                -2_000_i64..20_000,
                -2_000_i64..20_000,
                prop::collection::vec(0_i64..6, 4),
                prop::collection::vec(0_i64..6, 4),
            ),
            1..6,
        ),
    ) {
        let config = config();
        let mut built = Vec::new();
        for (i, (buy_limit, sell_limit, buys, sells)) in families.iter().enumerate() {
            let mut blocks = Vec::new();
            if buys.iter().any(|q| *q > 0) {
                blocks.push(Block {
                    side: Side::Buy,
                    limit: Price(*buy_limit),
                    qty: buys.iter().copied().map(Qty).collect(),
                });
            }
            if sells.iter().any(|q| *q > 0) {
                blocks.push(Block {
                    side: Side::Sell,
                    limit: Price(*sell_limit),
                    qty: sells.iter().copied().map(Qty).collect(),
                });
            }
            if blocks.is_empty() {
                continue;
            }
            built.push(BlockFamily::new(AccountId(i as u32 + 1), 4, blocks, &config).expect("valid"));
        }
        let periods: Vec<Vec<BidCurve>> = prices.iter().map(|p| deep(Price(*p))).collect();
        let day = clear_day_with_families(&mut auction(), &periods, &built).expect("clears");
        let day_prices: Vec<Option<Price>> = prices.iter().map(|p| Some(Price(*p))).collect();
        for (t, result) in day.periods.iter().enumerate() {
            prop_assert_eq!(result.price, Some(Price(prices[t])));
        }
        for (family, outcome) in built.iter().zip(&day.families) {
            let surplus = family.surplus(&day_prices).expect("every period has a price");
            prop_assert_eq!(outcome.surplus, Some(surplus));
            prop_assert_eq!(outcome.accepted, surplus >= 0);
            for block in family.blocks() {
                for (t, qty) in block.qty.iter().enumerate() {
                    let got = day.periods[t].accepted_qty(family.participant(), block.side);
                    prop_assert_eq!(got, if outcome.accepted { *qty } else { Qty(0) });
                }
            }
        }
    }

    /// One participant's families, some in exclusive groups, against a deep market: an
    /// ungrouped family is accepted exactly at a surplus `>= 0`; of each group exactly the
    /// first member with the most surplus, if that surplus is `>= 0`; the participant
    /// trades the sum of its accepted families' lots.
    #[test]
    fn against_a_deep_market_each_exclusive_group_keeps_its_best_alternative(
        prices in prop::collection::vec(-2_000_i64..20_000, 3),
        families in prop::collection::vec(
            (
                -2_000_i64..20_000,
                -2_000_i64..20_000,
                prop::collection::vec(0_i64..4, 3),
                prop::collection::vec(0_i64..4, 3),
                prop::option::of(0_u32..3),
            ),
            1..10,
        ),
    ) {
        let config = config();
        let mut built = Vec::new();
        for (buy_limit, sell_limit, buys, sells, group) in &families {
            let mut buys: Vec<Qty> = buys.iter().copied().map(Qty).collect();
            if buys.iter().all(|q| q.is_zero()) {
                buys[0] = Qty(1);
            }
            let blocks = vec![
                Block { side: Side::Buy, limit: Price(*buy_limit), qty: buys },
                Block {
                    side: Side::Sell,
                    limit: Price(*sell_limit),
                    qty: sells.iter().map(|q| Qty(q + 1)).collect(),
                },
            ];
            let family = BlockFamily::new(BATTERY, 3, blocks, &config).expect("valid");
            built.push(match group {
                Some(g) => family.in_exclusive_group(ExclusiveGroupId(*g)),
                None => family,
            });
        }
        let periods: Vec<Vec<BidCurve>> = prices.iter().map(|p| deep(Price(*p))).collect();
        let day = clear_day_with_families(&mut auction(), &periods, &built).expect("clears");
        let day_prices: Vec<Option<Price>> = prices.iter().map(|p| Some(Price(*p))).collect();
        let surplus: Vec<i128> = built
            .iter()
            .map(|f| f.surplus(&day_prices).expect("every period has a price"))
            .collect();
        for (idx, family) in built.iter().enumerate() {
            let expected = match family.exclusive_group() {
                None => surplus[idx] >= 0,
                Some(group) => {
                    let members: Vec<usize> = (0..built.len())
                        .filter(|j| built[*j].exclusive_group() == Some(group))
                        .collect();
                    let best = members.iter().map(|j| surplus[*j]).max().expect("a member");
                    let first_best = members.iter().find(|j| surplus[**j] == best);
                    best >= 0 && first_best == Some(&idx)
                }
            };
            prop_assert_eq!(day.families[idx].accepted, expected, "family {}", idx);
        }
        for t in 0..3 {
            for side in [Side::Buy, Side::Sell] {
                let lots: i64 = built
                    .iter()
                    .zip(&day.families)
                    .filter(|(_, outcome)| outcome.accepted)
                    .flat_map(|(family, _)| family.blocks())
                    .filter(|block| block.side == side)
                    .map(|block| block.qty[t].0)
                    .sum();
                prop_assert_eq!(day.periods[t].accepted_qty(BATTERY, side), Qty(lots));
            }
        }
    }

    /// Against thin markets (a few stepwise buyers and sellers per period, whose prices
    /// move with the blocks), with families of several participants, some in exclusive
    /// groups: the day clears, an accepted family trades every lot of its blocks at a
    /// surplus `>= 0` at the returned prices, a rejected one trades nothing, no exclusive
    /// group has two accepted members, and it takes at most one round per family more.
    #[test]
    fn against_thin_markets_every_outcome_keeps_the_clearing_rule(
        market in prop::collection::vec(
            prop::collection::vec((any::<bool>(), 1_000_i64..9_000, 1_i64..8), 0..4),
            3,
        ),
        families in prop::collection::vec(
            (
                1_u32..4,
                1_000_i64..9_000,
                1_000_i64..9_000,
                prop::collection::vec(0_i64..4, 3),
                prop::collection::vec(0_i64..4, 3),
                prop::option::of(0_u32..2),
            ),
            1..8,
        ),
    ) {
        let config = config();
        let periods: Vec<Vec<BidCurve>> = market
            .iter()
            .map(|steps| {
                steps
                    .iter()
                    .map(|(buy, price, qty)| {
                        let side = if *buy { Side::Buy } else { Side::Sell };
                        step(MARKET, side, Price(*price), *qty)
                    })
                    .collect()
            })
            .collect();
        let mut built = Vec::new();
        for (participant, buy_limit, sell_limit, buys, sells, group) in &families {
            let mut blocks = Vec::new();
            for (side, limit, qty) in [(Side::Buy, buy_limit, buys), (Side::Sell, sell_limit, sells)] {
                if qty.iter().any(|q| *q > 0) {
                    blocks.push(Block {
                        side,
                        limit: Price(*limit),
                        qty: qty.iter().copied().map(Qty).collect(),
                    });
                }
            }
            if blocks.is_empty() {
                continue;
            }
            let family = BlockFamily::new(AccountId(*participant), 3, blocks, &config).expect("valid");
            built.push(match group {
                Some(g) => family.in_exclusive_group(ExclusiveGroupId(*g)),
                None => family,
            });
        }
        let day = clear_day_with_families(&mut auction(), &periods, &built).expect("clears");
        prop_assert!(day.rounds <= built.len() + 1, "{} rounds", day.rounds);
        let prices: Vec<Option<Price>> = day.periods.iter().map(|p| p.price).collect();
        for (idx, (family, outcome)) in built.iter().zip(&day.families).enumerate() {
            prop_assert_eq!(outcome.surplus, family.surplus(&prices));
            if outcome.accepted {
                prop_assert!(outcome.surplus.is_some_and(|s| s >= 0), "family {}", idx);
            }
            if let Some(group) = family.exclusive_group() {
                let accepted_in_group = built
                    .iter()
                    .zip(&day.families)
                    .filter(|(other, o)| {
                        o.accepted
                            && other.participant() == family.participant()
                            && other.exclusive_group() == Some(group)
                    })
                    .count();
                prop_assert!(accepted_in_group <= 1, "group {:?}", group);
            }
        }
        // Each participant's traded lots are exactly its accepted families' lots.
        for participant in 1..4 {
            let account = AccountId(participant);
            for (t, result) in day.periods.iter().enumerate() {
                for side in [Side::Buy, Side::Sell] {
                    let lots: i64 = built
                        .iter()
                        .zip(&day.families)
                        .filter(|(family, o)| o.accepted && family.participant() == account)
                        .flat_map(|(family, _)| family.blocks())
                        .filter(|block| block.side == side)
                        .map(|block| block.qty[t].0)
                        .sum();
                    prop_assert_eq!(result.accepted_qty(account, side), Qty(lots));
                }
            }
        }
        // Each period's result is a fresh clearing of its curves with the accepted
        // families' steps (the rounds re-clear only the periods a rejection touched).
        let rules = &config.rules;
        for (t, result) in day.periods.iter().enumerate() {
            let mut bids = periods[t].clone();
            for (family, _) in built.iter().zip(&day.families).filter(|(_, o)| o.accepted) {
                for block in family.blocks().iter().filter(|block| block.qty[t].0 > 0) {
                    let price = match block.side {
                        Side::Buy => rules.price_max,
                        Side::Sell => rules.price_min,
                    };
                    bids.push(step(family.participant(), block.side, price, block.qty[t].0));
                }
            }
            prop_assert_eq!(&auction().clear_period(&bids).expect("clears"), result, "period {}", t);
        }
    }
}
