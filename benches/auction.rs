//! Day-ahead auction benchmark: one full day of 96 quarter-hour periods, each with 1,000
//! bid curves (a seeded mix of buy and sell, stepwise and piecewise-linear, about 10
//! points each), cleared by one `Auction` that reuses its buffers across periods.
//!
//! Target (a benchmark figure, never a test threshold): a full day in <= 50 ms.
//!
//! Also the engine's worst day-ahead gate with block families, which the sequencer
//! clears inline: 24 hourly products with `AUCTION_CURVES_PER_PRODUCT_MAX` (256) curves
//! each and `FAMILIES_PER_GATE_MAX` (64) families, through `clear_day_with_families` as
//! `engine/src/state.rs` calls it: families of 8 blocks trading in most hours, once all
//! accepted (one round) and once all at a loss (rejected one per round: 65 rounds, the
//! most the limits allow), and battery days (a buy block over 4 hours, a sell block
//! over 4 later ones) all at a loss. What the rejected cases take is how long the
//! engine stalls at such a gate.
//! Run: `cargo bench --bench auction -- --quick`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use voltex_engine::auction::AUCTION_CURVES_PER_PRODUCT_MAX;
use voltex_engine::family::{BLOCKS_PER_FAMILY_MAX, FAMILIES_PER_GATE_MAX};
use voltex_market::auction::{Auction, AuctionConfig, BidCurve, CurveKind, CurvePoint};
use voltex_market::block::{Block, BlockFamily, clear_day_with_families};
use voltex_market::{AccountId, Price, Qty, Side};

const N_PERIODS: usize = 96;
const N_CURVES: usize = 1_000;
const SEED: u64 = 0x5EED_DA7A;

/// A curve of 8..=12 points around `center` (in ticks), quantities of at most 100 lots
/// per step so the curve stays under the default `qty_max`.
fn random_curve(rng: &mut ChaCha8Rng, config: &AuctionConfig, center: i64) -> BidCurve {
    let rules = &config.rules;
    let side = if rng.random_bool(0.5) {
        Side::Buy
    } else {
        Side::Sell
    };
    let kind = if rng.random_bool(0.5) {
        CurveKind::Stepwise
    } else {
        CurveKind::PiecewiseLinear
    };
    let n_points = rng.random_range(8..=12);
    // Strictly increasing prices: a random start around the centre, random gaps.
    let price_start_max = rules.price_max.0 - 12 * 1_500;
    let mut price =
        (center + rng.random_range(-6_000..=6_000)).clamp(rules.price_min.0, price_start_max);
    let mut prices = Vec::with_capacity(n_points);
    for _ in 0..n_points {
        prices.push(price);
        price += rng.random_range(1..=1_500);
    }
    let steps: Vec<i64> = (0..n_points).map(|_| rng.random_range(0..=100)).collect();
    let points: Vec<CurvePoint> = match kind {
        CurveKind::Stepwise => prices
            .iter()
            .zip(&steps)
            .map(|(&p, &q)| CurvePoint {
                price: Price(p),
                qty: Qty(q),
            })
            .collect(),
        CurveKind::PiecewiseLinear => {
            // Running sums: non-increasing for buy (sum from the right), non-decreasing for sell.
            let mut totals = steps.clone();
            match side {
                Side::Buy => {
                    for idx in (0..n_points - 1).rev() {
                        totals[idx] += totals[idx + 1];
                    }
                }
                Side::Sell => {
                    for idx in 1..n_points {
                        totals[idx] += totals[idx - 1];
                    }
                }
            }
            prices
                .iter()
                .zip(&totals)
                .map(|(&p, &q)| CurvePoint {
                    price: Price(p),
                    qty: Qty(q),
                })
                .collect()
        }
    };
    let participant = AccountId(rng.random_range(0..400));
    BidCurve::new(participant, side, kind, points, config).expect("benchmark curves are valid")
}

fn random_day(config: &AuctionConfig) -> Vec<Vec<BidCurve>> {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    (0..N_PERIODS)
        .map(|period_idx| {
            // A daily price shape: 40..120 EUR/MWh.
            let center =
                4_000 + 8_000 * ((period_idx as i64 * 7) % N_PERIODS as i64) / N_PERIODS as i64;
            (0..N_CURVES)
                .map(|_| random_curve(&mut rng, config, center))
                .collect()
        })
        .collect()
}

fn bench_clear_day(c: &mut Criterion) {
    let config = AuctionConfig::day_ahead_default();
    let day = random_day(&config);
    let mut auction = Auction::new(config).expect("default config is valid");
    // Sanity: every period clears and trades, so the benchmark measures real work.
    let results = auction.clear_day(&day);
    let n_traded = results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|r| r.volume.0 > 0))
        .count();
    assert_eq!(n_traded, N_PERIODS, "every benchmark period should trade");

    c.bench_function("auction/clear_day/1000_curves_x_96_periods", |b| {
        b.iter(|| auction.clear_day(black_box(&day)))
    });
}

const GATE_HOURS: usize = 24;

/// The shape of the families of a benchmark gate.
#[derive(Clone, Copy)]
enum Shape {
    /// 8 blocks (buy and sell alternating), each 1..=5 lots in three random hours: the
    /// most blocks a family may have, trading in most hours of the day.
    EightBlocks,
    /// A battery's day: a buy block over 4 consecutive hours of the first half of the
    /// day, a sell block over 4 of the second half (8 of 24 hours traded).
    BatteryDay,
}

/// `FAMILIES_PER_GATE_MAX` families of `shape`; `at_a_loss`: buy limits at the price
/// floor and sell limits at the cap, so no family has a surplus; else the reverse, so
/// every one has.
fn gate_families(config: &AuctionConfig, shape: Shape, at_a_loss: bool) -> Vec<BlockFamily> {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ 0xFA);
    let rules = &config.rules;
    let limit = |side: Side| match (side, at_a_loss) {
        (Side::Buy, true) | (Side::Sell, false) => rules.price_min,
        (Side::Buy, false) | (Side::Sell, true) => rules.price_max,
    };
    (0..FAMILIES_PER_GATE_MAX)
        .map(|family_idx| {
            let blocks = match shape {
                Shape::EightBlocks => (0..BLOCKS_PER_FAMILY_MAX)
                    .map(|block_idx| {
                        let side = if block_idx % 2 == 0 {
                            Side::Buy
                        } else {
                            Side::Sell
                        };
                        let mut qty = vec![Qty(0); GATE_HOURS];
                        for _ in 0..3 {
                            qty[rng.random_range(0..GATE_HOURS)] = Qty(rng.random_range(1..=5));
                        }
                        Block {
                            side,
                            limit: limit(side),
                            qty,
                        }
                    })
                    .collect(),
                Shape::BatteryDay => [Side::Buy, Side::Sell]
                    .into_iter()
                    .enumerate()
                    .map(|(half, side)| {
                        let first =
                            half * GATE_HOURS / 2 + rng.random_range(0..=GATE_HOURS / 2 - 4);
                        let mut qty = vec![Qty(0); GATE_HOURS];
                        for lots in &mut qty[first..first + 4] {
                            *lots = Qty(rng.random_range(1..=5));
                        }
                        Block {
                            side,
                            limit: limit(side),
                            qty,
                        }
                    })
                    .collect(),
            };
            let participant = AccountId(10_000 + family_idx as u32);
            BlockFamily::new(participant, GATE_HOURS, blocks, config)
                .expect("benchmark families are valid")
        })
        .collect()
}

fn bench_gate_with_families(c: &mut Criterion) {
    let rules = AuctionConfig::day_ahead_default().rules;
    // The engine's joint-clearing configuration: room for every family's steps.
    let config = AuctionConfig {
        curves_max: AUCTION_CURVES_PER_PRODUCT_MAX + FAMILIES_PER_GATE_MAX * BLOCKS_PER_FAMILY_MAX,
        ..AuctionConfig::with_rules(rules)
    };
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let day: Vec<Vec<BidCurve>> = (0..GATE_HOURS)
        .map(|hour| {
            let center = 4_000 + 8_000 * hour as i64 / GATE_HOURS as i64;
            (0..AUCTION_CURVES_PER_PRODUCT_MAX)
                .map(|_| random_curve(&mut rng, &config, center))
                .collect()
        })
        .collect();
    let mut auction = Auction::new(config.clone()).expect("valid config");
    for (name, shape, at_a_loss, rounds) in [
        ("all_accepted", Shape::EightBlocks, false, 1),
        (
            "all_rejected",
            Shape::EightBlocks,
            true,
            FAMILIES_PER_GATE_MAX + 1,
        ),
        (
            "battery_days_all_rejected",
            Shape::BatteryDay,
            true,
            FAMILIES_PER_GATE_MAX + 1,
        ),
    ] {
        let families = gate_families(&config, shape, at_a_loss);
        // Sanity: the case is what its name says, so the benchmark measures it.
        let clearing =
            clear_day_with_families(&mut auction, &day, &families).expect("the gate clears");
        assert_eq!(clearing.rounds, rounds, "{name}");
        assert!(
            clearing
                .families
                .iter()
                .all(|outcome| outcome.accepted != at_a_loss)
        );
        c.bench_function(
            &format!("auction/gate_with_families/256_curves_x_24_hours_x_64_families/{name}"),
            |b| b.iter(|| clear_day_with_families(&mut auction, black_box(&day), &families)),
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3));
    targets = bench_clear_day, bench_gate_with_families
}
criterion_main!(benches);
