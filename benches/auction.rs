//! Day-ahead auction benchmark: one full day of 96 quarter-hour periods, each with 1,000
//! bid curves (a seeded mix of buy and sell, stepwise and piecewise-linear, about 10
//! points each), cleared by one `Auction` that reuses its buffers across periods.
//!
//! Target (a benchmark figure, never a test threshold): a full day in <= 50 ms.
//! Run: `cargo bench --bench auction -- --quick`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use voltex_market::auction::{Auction, AuctionConfig, BidCurve, CurveKind, CurvePoint};
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

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3));
    targets = bench_clear_day
}
criterion_main!(benches);
