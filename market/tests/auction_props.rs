//! Property tests of the day-ahead call auction: every invariant listed in the
//! `voltex_market::auction` module doc, checked against a brute-force reference that
//! scans every tick of a small price range, and locally (a few evaluations around the
//! clearing price) on the default -500..+4000 EUR/MWh limits.

use proptest::prelude::*;
use voltex_market::auction::{
    Auction, AuctionConfig, BidCurve, ClearingResult, CurveKind, CurvePoint,
};
use voltex_market::{AccountId, MarketRules, Price, Qty, Side};

/// A curve before normalisation: points as (tick index, quantity).
#[derive(Clone, Debug)]
struct RawCurve {
    participant: u32,
    buy: bool,
    linear: bool,
    points: Vec<(i64, i64)>,
}

/// Small market: 81 ticks from -30 to +50 ticks, so the reference can scan them all.
fn small_config(tick: i64) -> AuctionConfig {
    let rules = MarketRules {
        tick: Price(tick),
        price_min: Price(-30 * tick),
        price_max: Price(50 * tick),
        qty_max: Qty(40),
        ..MarketRules::day_ahead_default()
    };
    AuctionConfig {
        rules,
        points_max: 5,
        curves_max: 40,
    }
}

fn raw_curve(k_min: i64, k_max: i64, qty_step_max: i64) -> impl Strategy<Value = RawCurve> {
    (
        0_u32..6,
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec((k_min..=k_max, 0..=qty_step_max), 1..=5),
    )
        .prop_map(|(participant, buy, linear, points)| RawCurve {
            participant,
            buy,
            linear,
            points,
        })
}

/// Sorts and de-duplicates the prices; piecewise-linear quantities become running sums
/// of the drawn increments (non-increasing for buy, non-decreasing for sell).
fn build(raw: &RawCurve, config: &AuctionConfig) -> BidCurve {
    let mut points = raw.points.clone();
    points.sort_by_key(|&(k, _)| k);
    points.dedup_by_key(|&mut (k, _)| k);
    let tick = config.rules.tick.0;
    let mut curve_points: Vec<CurvePoint> = points
        .iter()
        .map(|&(k, qty)| CurvePoint {
            price: Price(k * tick),
            qty: Qty(qty),
        })
        .collect();
    if raw.linear {
        let mut running = 0;
        if raw.buy {
            for point in curve_points.iter_mut().rev() {
                running += point.qty.0;
                point.qty = Qty(running);
            }
        } else {
            for point in curve_points.iter_mut() {
                running += point.qty.0;
                point.qty = Qty(running);
            }
        }
    }
    let side = if raw.buy { Side::Buy } else { Side::Sell };
    let kind = if raw.linear {
        CurveKind::PiecewiseLinear
    } else {
        CurveKind::Stepwise
    };
    BidCurve::new(AccountId(raw.participant), side, kind, curve_points, config)
        .expect("generated curves are valid by construction")
}

fn small_period() -> impl Strategy<Value = (AuctionConfig, Vec<BidCurve>)> {
    (
        prop_oneof![Just(1_i64), Just(5)],
        prop::collection::vec(raw_curve(-30, 50, 8), 0..16),
    )
        .prop_map(|(tick, raws)| {
            let config = small_config(tick);
            let curves = raws.iter().map(|raw| build(raw, &config)).collect();
            (config, curves)
        })
}

/// Default day-ahead limits, prices anywhere in -500..+4000 EUR/MWh but clustered so
/// that curves cross, more curves per period.
fn wide_period() -> impl Strategy<Value = (AuctionConfig, Vec<BidCurve>)> {
    let config = AuctionConfig::day_ahead_default();
    (
        -50_000_i64..=390_000,
        prop::collection::vec(
            (
                0_u32..20,
                any::<bool>(),
                any::<bool>(),
                prop::collection::vec((-10_000_i64..=10_000, 0_i64..=500), 1..=10),
            ),
            0..60,
        ),
    )
        .prop_map(move |(center, raws)| {
            let curves = raws
                .into_iter()
                .map(|(participant, buy, linear, points)| {
                    let points = points
                        .into_iter()
                        .map(|(offset, qty)| ((center + offset).clamp(-50_000, 400_000), qty))
                        .collect();
                    build(
                        &RawCurve {
                            participant,
                            buy,
                            linear,
                            points,
                        },
                        &config,
                    )
                })
                .collect();
            (config.clone(), curves)
        })
}

fn aggregate(curves: &[BidCurve], side: Side, price: i64) -> i64 {
    curves
        .iter()
        .filter(|c| c.side() == side)
        .map(|c| c.qty_at(Price(price)).0)
        .sum()
}

fn participant_qty(curves: &[BidCurve], participant: AccountId, side: Side, price: i64) -> i64 {
    curves
        .iter()
        .filter(|c| c.side() == side && c.participant() == participant)
        .map(|c| c.qty_at(Price(price)).0)
        .sum()
}

/// Admissible in the sense of the module doc, for volume `volume` at tick index `k`.
fn admissible(curves: &[BidCurve], tick: i64, k: i64, volume: i64) -> bool {
    let demand = |k: i64| aggregate(curves, Side::Buy, k * tick);
    let supply = |k: i64| aggregate(curves, Side::Sell, k * tick);
    demand(k) >= volume && supply(k) >= volume && demand(k + 1) <= volume && supply(k - 1) <= volume
}

/// Brute force: scan every tick. Returns V* and the admissible interval (tick indices).
fn reference(curves: &[BidCurve], rules: &MarketRules) -> (i64, Option<(i64, i64)>) {
    let tick = rules.tick.0;
    let (k_min, k_max) = (rules.price_min.0 / tick, rules.price_max.0 / tick);
    let volume = (k_min..=k_max)
        .map(|k| {
            aggregate(curves, Side::Buy, k * tick).min(aggregate(curves, Side::Sell, k * tick))
        })
        .max()
        .unwrap_or(0);
    if volume == 0 {
        return (0, None);
    }
    let ks: Vec<i64> = (k_min..=k_max)
        .filter(|&k| admissible(curves, tick, k, volume))
        .collect();
    assert!(
        !ks.is_empty(),
        "reference: no admissible price for volume {volume}"
    );
    let (first, last) = (ks[0], ks[ks.len() - 1]);
    assert_eq!(
        ks.len() as i64,
        last - first + 1,
        "reference: admissible set not an interval"
    );
    (volume, Some((first, last)))
}

/// Checks every invariant that needs only a few evaluations around the result.
fn check_invariants(
    curves: &[BidCurve],
    config: &AuctionConfig,
    result: &ClearingResult,
) -> Result<(), TestCaseError> {
    let rules = &config.rules;
    let tick = rules.tick.0;
    let volume = result.volume.0;

    // One entry per (participant, side) that bid, in (side, participant) order.
    let mut expected_keys: Vec<(usize, u32)> = curves
        .iter()
        .map(|c| (c.side().index(), c.participant().0))
        .collect();
    expected_keys.sort_unstable();
    expected_keys.dedup();
    let keys: Vec<(usize, u32)> = result
        .accepted
        .iter()
        .map(|a| (a.side.index(), a.participant.0))
        .collect();
    prop_assert_eq!(keys, expected_keys);

    let buys: i64 = result
        .accepted
        .iter()
        .filter(|a| a.side == Side::Buy)
        .map(|a| a.qty.0)
        .sum();
    let sells: i64 = result
        .accepted
        .iter()
        .filter(|a| a.side == Side::Sell)
        .map(|a| a.qty.0)
        .sum();
    prop_assert_eq!(buys, volume, "accepted buys must sum to the volume");
    prop_assert_eq!(sells, volume, "accepted sells must sum to the volume");

    let Some(price) = result.price else {
        prop_assert_eq!(volume, 0);
        prop_assert!(result.price_interval.is_none());
        // No trade means no crossing: at no curve point (nor a tick either side) would
        // anybody buy while anybody sells. (The reference test scans every tick.)
        for point in curves.iter().flat_map(|c| c.points()) {
            for p in [point.price.0 - tick, point.price.0, point.price.0 + tick] {
                let crossing =
                    aggregate(curves, Side::Buy, p).min(aggregate(curves, Side::Sell, p));
                prop_assert_eq!(crossing, 0, "no trade although both sides meet at {}", p);
            }
        }
        return Ok(());
    };
    prop_assert!(volume > 0, "a price is reported only when something trades");
    prop_assert!(
        rules.check_price(price).is_ok(),
        "price {} off the rules",
        price
    );
    let p = price.0;

    // The market clears at p*: supply at p* covers demand strictly above, and vice versa;
    // together with the volume bounds this makes V* the maximum of min(D, S).
    let k = p / tick;
    prop_assert!(
        admissible(curves, tick, k, volume),
        "price {} not admissible",
        price
    );

    // The interval ends are admissible and maximal, and the price is its middle.
    let (low, high) = result
        .price_interval
        .expect("interval reported with the price");
    let (k_low, k_high) = (low.0 / tick, high.0 / tick);
    prop_assert!(admissible(curves, tick, k_low, volume));
    prop_assert!(admissible(curves, tick, k_high, volume));
    prop_assert!(low == rules.price_min || !admissible(curves, tick, k_low - 1, volume));
    prop_assert!(high == rules.price_max || !admissible(curves, tick, k_high + 1, volume));
    prop_assert_eq!(
        k,
        k_low + (k_high - k_low) / 2,
        "price is the middle rounded down"
    );

    // Per participant: in the money fully accepted, never more than offered at p*, and
    // the at-the-money share within one lot of the exact pro-rata share.
    for side in [Side::Buy, Side::Sell] {
        let beyond = match side {
            Side::Buy => p + tick,
            Side::Sell => p - tick,
        };
        let entries: Vec<_> = result.accepted.iter().filter(|a| a.side == side).collect();
        let in_the_money: Vec<i64> = entries
            .iter()
            .map(|a| participant_qty(curves, a.participant, side, beyond))
            .collect();
        let at_price: Vec<i64> = entries
            .iter()
            .map(|a| participant_qty(curves, a.participant, side, p))
            .collect();
        let to_share = volume - in_the_money.iter().sum::<i64>();
        let at_the_money: i64 = at_price.iter().zip(&in_the_money).map(|(a, i)| a - i).sum();
        for (idx, entry) in entries.iter().enumerate() {
            let accepted = entry.qty.0;
            prop_assert!(
                in_the_money[idx] <= accepted,
                "in-the-money {:?} curtailed",
                entry
            );
            prop_assert!(
                accepted <= at_price[idx],
                "{:?} above its offer at p*",
                entry
            );
            let share = i128::from(accepted - in_the_money[idx]) * i128::from(at_the_money);
            let exact = i128::from(to_share) * i128::from(at_price[idx] - in_the_money[idx]);
            prop_assert!((share - exact).abs() < i128::from(at_the_money.max(1)));
        }
        // The lots above the floors go to the largest remainders, ties to the lower id.
        if at_the_money > 0 {
            let total = i128::from(at_the_money);
            let split: Vec<(i128, bool, u32)> = entries
                .iter()
                .enumerate()
                .map(|(idx, entry)| {
                    let exact =
                        i128::from(to_share) * i128::from(at_price[idx] - in_the_money[idx]);
                    let extra = i128::from(entry.qty.0 - in_the_money[idx]) > exact / total;
                    (exact % total, extra, entry.participant.0)
                })
                .collect();
            for &(remainder, _, id) in split.iter().filter(|s| s.1) {
                for &(other_remainder, _, other_id) in split.iter().filter(|s| !s.1) {
                    prop_assert!(
                        remainder > other_remainder
                            || (remainder == other_remainder && id < other_id),
                        "extra lot to {} (remainder {}) before {} (remainder {})",
                        id,
                        remainder,
                        other_id,
                        other_remainder
                    );
                }
            }
        }
    }

    // No profitable unmatched pair: a rejected buy willing to pay more than p* and a
    // rejected sell willing to take less than p* never both exist.
    let rejected_buy_above = result.accepted.iter().any(|a| {
        a.side == Side::Buy && participant_qty(curves, a.participant, Side::Buy, p + tick) > a.qty.0
    });
    let rejected_sell_below = result.accepted.iter().any(|a| {
        a.side == Side::Sell
            && participant_qty(curves, a.participant, Side::Sell, p - tick) > a.qty.0
    });
    prop_assert!(!(rejected_buy_above && rejected_sell_below));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn auction_clearing_matches_the_brute_force_reference((config, curves) in small_period()) {
        let result = Auction::new(config.clone()).unwrap().clear_period(&curves).unwrap();
        let (volume, interval) = reference(&curves, &config.rules);
        let tick = config.rules.tick.0;
        prop_assert_eq!(result.volume, Qty(volume));
        let expected_interval = interval.map(|(l, h)| (Price(l * tick), Price(h * tick)));
        prop_assert_eq!(result.price_interval, expected_interval);
        let expected_price = interval.map(|(l, h)| Price((l + (h - l) / 2) * tick));
        prop_assert_eq!(result.price, expected_price);
    }

    #[test]
    fn auction_small_market_results_keep_every_invariant((config, curves) in small_period()) {
        let result = Auction::new(config.clone()).unwrap().clear_period(&curves).unwrap();
        check_invariants(&curves, &config, &result)?;
    }

    #[test]
    fn auction_result_does_not_depend_on_curve_order(
        (config, curves, shuffled) in small_period().prop_flat_map(|(config, curves)| {
            (Just(config), Just(curves.clone()), Just(curves).prop_shuffle())
        })
    ) {
        let mut auction = Auction::new(config).unwrap();
        let result = auction.clear_period(&curves).unwrap();
        let result_shuffled = auction.clear_period(&shuffled).unwrap();
        prop_assert_eq!(result, result_shuffled);
    }

    #[test]
    fn auction_clear_day_with_reused_buffers_equals_fresh_auctions_per_period(
        periods in prop::collection::vec(small_period(), 1..6)
    ) {
        // All periods share the tick of the first so one auction can clear them.
        let config = periods[0].0.clone();
        let days: Vec<Vec<BidCurve>> = periods
            .into_iter()
            .filter(|(c, _)| *c == config)
            .map(|(_, curves)| curves)
            .collect();
        let mut auction = Auction::new(config.clone()).unwrap();
        let results = auction.clear_day(&days);
        prop_assert_eq!(results.len(), days.len());
        for (curves, result) in days.iter().zip(results) {
            let fresh = Auction::new(config.clone()).unwrap().clear_period(curves);
            prop_assert_eq!(result, fresh);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn auction_default_limits_results_keep_every_invariant((config, curves) in wide_period()) {
        let result = Auction::new(config.clone()).unwrap().clear_period(&curves).unwrap();
        check_invariants(&curves, &config, &result)?;
    }
}
