//! The intraday close-out: what a day-ahead award cannot deliver is traded back on the
//! continuous book at the synthetic maker's quote, and nothing else is traded.

use proptest::prelude::*;
use rust_decimal::Decimal;
use voltex_engine::bidding::{CloseOut, IntradayConfig, IntradayError, ReplayIntraday};
use voltex_market::battery::BatterySpec;
use voltex_market::{AccountId, MarketRules, Price, Qty, Side};

const FLEET: AccountId = AccountId(1);
const MAKER: AccountId = AccountId(2);
const HOUR_S: i64 = 3_600;

/// 1 MW / 1 MWh, lossless, the full SoC range.
fn battery() -> BatterySpec {
    BatterySpec::symmetric(1_000_000, 1_000_000, 1.0, Decimal::ZERO)
}

fn eur(s: &str) -> Decimal {
    s.parse().expect("decimal")
}

fn market(spread: &str, depth_lots: i64) -> ReplayIntraday {
    ReplayIntraday::new(
        FLEET,
        MAKER,
        IntradayConfig {
            rules: MarketRules::intraday_default(),
            spread_eur_per_mwh: eur(spread),
            depth: Qty(depth_lots),
        },
    )
    .expect("valid intraday market")
}

fn close(market: &mut ReplayIntraday, soc_wh: f64, award_w: &[i64], prices: &[&str]) -> CloseOut {
    let prices: Vec<Decimal> = prices.iter().map(|p| eur(p)).collect();
    market
        .close_out_day(&battery(), soc_wh, award_w, &prices, HOUR_S)
        .expect("closed out")
}

#[test]
fn a_deliverable_award_is_not_traded() {
    // 0.5 MWh: sell 0.5, buy 1, sell 1 — every step fits.
    let award = [500_000, -1_000_000, 1_000_000];
    let out = close(
        &mut market("2", 9_990),
        500_000.0,
        &award,
        &["50", "40", "60"],
    );
    assert_eq!(out.position_w, award);
    assert!(out.fills.iter().all(Option::is_none));
    assert_eq!(out.traded_lots(), 0);
}

#[test]
fn a_sale_beyond_the_stored_energy_is_bought_back_at_the_ask() {
    // 0.26 MWh stored, 1 MW sold: 0.74 MW undeliverable, bought back as 7 lots (the
    // nearest) at 50.00 + 1.00; the position keeps 0.3 MW, of which 0.04 MW remain
    // imbalance (closing an 8th lot would give up 0.06 MW the battery can deliver).
    let out = close(&mut market("2", 9_990), 260_000.0, &[1_000_000], &["50"]);
    assert_eq!(out.position_w, [300_000]);
    let fill = out.fills[0].expect("a closing trade");
    assert_eq!(fill.side, Side::Buy);
    assert_eq!(fill.price, Price(5_100));
    assert_eq!(fill.qty, Qty(7));
    assert_eq!(fill.power_w, 700_000);
    assert_eq!(out.traded_mwh(HOUR_S), eur("0.7"));
    // 0.7 MWh bought at 1.00 above the replayed price.
    assert_eq!(out.cash_vs_replay_eur(&[eur("50")], HOUR_S), eur("-0.7"));
    // 0.24 MWh stored: 0.76 MW rounds to 8 lots.
    let out = close(&mut market("2", 9_990), 240_000.0, &[1_000_000], &["50"]);
    assert_eq!(out.position_w, [200_000]);
    // 0.96 MWh stored: 0.04 MW short rounds to nothing: not traded.
    let out = close(&mut market("2", 9_990), 960_000.0, &[1_000_000], &["50"]);
    assert_eq!((out.position_w[0], out.fills[0]), (1_000_000, None));
}

#[test]
fn a_purchase_into_a_full_battery_is_sold_back_at_the_bid() {
    // 0.95 MWh stored, 1 MW bought: only 0.05 MW fits; 0.95 MW rounds (half up) to 10
    // lots, the award's 10: the whole purchase is sold back at 40.00 - 1.00.
    let out = close(&mut market("2", 9_990), 950_000.0, &[-1_000_000], &["40"]);
    assert_eq!(out.position_w, [0]);
    let fill = out.fills[0].expect("a closing trade");
    assert_eq!(
        (fill.side, fill.price, fill.qty),
        (Side::Sell, Price(3_900), Qty(10))
    );
    assert_eq!(out.cash_vs_replay_eur(&[eur("40")], HOUR_S), eur("-1"));
}

#[test]
fn periods_close_in_order_from_the_state_the_earlier_ones_leave() {
    // Empty: the first hour's sale is closed whole; the purchase then fills the battery,
    // so the last hour's sale is deliverable and not traded.
    let award = [1_000_000, -1_000_000, 1_000_000];
    let out = close(&mut market("0.2", 9_990), 0.0, &award, &["80", "20", "90"]);
    assert_eq!(out.position_w, [0, -1_000_000, 1_000_000]);
    assert!(out.fills[0].is_some() && out.fills[1].is_none() && out.fills[2].is_none());
    assert_eq!(out.fills[0].map(|f| f.price), Some(Price(8_010)));
}

#[test]
fn the_makers_depth_limits_the_close_out_and_the_rest_stays_open() {
    let out = close(&mut market("2", 3), 240_000.0, &[1_000_000], &["50"]);
    assert_eq!(out.position_w, [700_000], "3 of the 8 lots filled");
    assert_eq!(out.fills[0].map(|f| f.qty), Some(Qty(3)));
}

#[test]
fn bad_terms_and_inputs_are_typed_errors() {
    let config = |spread: &str, depth: i64| IntradayConfig {
        rules: MarketRules::intraday_default(),
        spread_eur_per_mwh: eur(spread),
        depth: Qty(depth),
    };
    assert!(matches!(
        ReplayIntraday::new(FLEET, FLEET, config("2", 10)),
        Err(IntradayError::SameAccount(_))
    ));
    for (spread, why) in [
        ("-1", "must not be negative"),
        ("0.01", "multiple of the tick"),
    ] {
        let error = ReplayIntraday::new(FLEET, MAKER, config(spread, 10)).unwrap_err();
        assert!(
            matches!(error, IntradayError::Spread { .. }) && error.to_string().contains(why),
            "{spread}: {error}"
        );
    }
    for depth in [0, -1, 9_991] {
        assert!(matches!(
            ReplayIntraday::new(FLEET, MAKER, config("2", depth)),
            Err(IntradayError::Depth { .. })
        ));
    }
    // Depth in MW: whole 0.1 MW lots, checked like the rest.
    let rules = MarketRules::intraday_default;
    let in_mw = IntradayConfig::with_depth_mw(rules(), eur("1"), Some(eur("2.5")));
    assert_eq!(in_mw.map(|c| c.depth), Ok(Qty(25)));
    let largest = IntradayConfig::with_depth_mw(rules(), eur("1"), None);
    assert_eq!(largest.map(|c| c.depth), Ok(rules().qty_max));
    assert!(matches!(
        IntradayConfig::with_depth_mw(rules(), eur("1"), Some(eur("0.05"))),
        Err(IntradayError::DepthNotWholeLots { .. })
    ));
    assert!(matches!(
        IntradayConfig::with_depth_mw(rules(), eur("1"), Some(eur("0"))),
        Err(IntradayError::Depth { .. })
    ));
    assert!(matches!(
        IntradayConfig::with_depth_mw(rules(), eur("0.01"), None),
        Err(IntradayError::Spread { .. })
    ));
    let mut bad_rules = config("2", 10);
    bad_rules.rules.tick = Price(0);
    assert!(matches!(
        ReplayIntraday::new(FLEET, MAKER, bad_rules),
        Err(IntradayError::Rules(_))
    ));
    let error = market("2", 10)
        .close_out_day(&battery(), 0.0, &[0, 0], &[eur("1")], HOUR_S)
        .unwrap_err();
    assert_eq!(
        error,
        IntradayError::LengthMismatch {
            award: 2,
            prices: 1
        }
    );
}

proptest! {
    /// Over any day of whole-lot awards: a period is traded only where its award is not
    /// deliverable, the trade closes towards zero without changing side, every fill is
    /// at the maker's quote, and every position is deliverable up to half a lot.
    #[test]
    fn a_close_out_only_shrinks_undeliverable_awards(
        award_lots in proptest::collection::vec(-10i64..=10, 1..24),
        start_soc_wh in 0u32..=1_000_000,
        price_cents in proptest::collection::vec(-50_000i64..=400_000, 24),
        half_spread_cents in 0i64..=500,
    ) {
        let spec = battery();
        let award: Vec<i64> = award_lots.iter().map(|lots| lots * 100_000).collect();
        let prices: Vec<Decimal> = price_cents[..award.len()]
            .iter()
            .map(|c| Decimal::new(*c, 2))
            .collect();
        let mut intraday = market(&Decimal::new(2 * half_spread_cents, 2).to_string(), 9_990);
        let out = intraday
            .close_out_day(&spec, f64::from(start_soc_wh), &award, &prices, HOUR_S)
            .expect("closed out");
        let physics = spec.period(HOUR_S);
        let mut soc = f64::from(start_soc_wh);
        for t in 0..award.len() {
            let (a, p) = (award[t], out.position_w[t]);
            let deliverable = physics.feasible_power_w(soc, a);
            prop_assert!(a.signum() * p.signum() >= 0 && p.abs() <= a.abs(), "{} -> {}", a, p);
            match out.fills[t] {
                None => prop_assert_eq!(p, a, "period {}: untraded", t),
                Some(fill) => {
                    prop_assert!(deliverable != a, "period {}: traded a deliverable award", t);
                    prop_assert_eq!((a - p).abs(), fill.power_w);
                    let mid = price_cents[t];
                    let expected = match fill.side {
                        Side::Buy => mid + half_spread_cents,
                        Side::Sell => mid - half_spread_cents,
                    };
                    prop_assert_eq!(fill.price, Price(expected.clamp(-999_999, 999_999)));
                }
            }
            // Closed to the nearest lot: at most half a lot is left undeliverable.
            let shortfall = (physics.feasible_power_w(soc, p) - p).abs();
            prop_assert!(shortfall <= 50_000, "period {}: {} W not deliverable", t, shortfall);
            soc = physics.soc_after_wh(soc, p);
        }
    }
}

/// A fleet's shortfall (from `allocate`) is closed in whole lots rounded down, in the
/// gap's direction, at the maker's quote; the remainder under a lot stays open.
#[test]
fn a_fleet_shortfall_is_closed_in_whole_lots_rounded_down() {
    let mut market = market("2", 9_990);
    // Sold 1 MW with 0.37 MW undeliverable; bought 0.8 MW with 0.25 MW that cannot be
    // stored; a deliverable hour; a 0.05 MW shortfall, under one 0.1 MW lot.
    let award = [1_000_000, -800_000, 300_000, 500_000];
    let shortfall = [370_000, -250_000, 0, 50_000];
    let prices: Vec<Decimal> = ["50", "40", "60", "55"].iter().map(|p| eur(p)).collect();
    let out = market
        .close_shortfall(&award, &shortfall, &prices)
        .expect("closed");
    assert_eq!(out.position_w, [700_000, -600_000, 300_000, 500_000]);
    let buy_back = out.fills[0].expect("bought back");
    assert_eq!(
        (
            buy_back.side,
            buy_back.price,
            buy_back.qty,
            buy_back.power_w
        ),
        (Side::Buy, Price(5_100), Qty(3), 300_000)
    );
    let sell_back = out.fills[1].expect("sold back");
    assert_eq!(
        (
            sell_back.side,
            sell_back.price,
            sell_back.qty,
            sell_back.power_w
        ),
        (Side::Sell, Price(3_900), Qty(2), 200_000)
    );
    assert_eq!(out.fills[2], None);
    assert_eq!(
        out.fills[3], None,
        "0.05 MW is under a lot: left as imbalance"
    );
    // The spread paid: 0.3 MWh at +1 and 0.2 MWh at -1 EUR/MWh from the price.
    assert_eq!(
        out.cash_vs_replay_per_period_eur(&prices, HOUR_S),
        [eur("-0.3"), eur("-0.2"), Decimal::ZERO, Decimal::ZERO]
    );
    assert_eq!(out.cash_vs_replay_eur(&prices, HOUR_S), eur("-0.5"));
}

/// A shortfall never closes past the award, nor against its side, and a thin maker
/// fills only its depth.
#[test]
fn a_fleet_shortfall_never_closes_past_the_award_or_the_depth() {
    let prices: Vec<Decimal> = ["50", "40", "45"].iter().map(|p| eur(p)).collect();
    // A shortfall larger than the award; one against the award's side; a deep one
    // against a 2-lot maker.
    let award = [300_000, -500_000, 900_000];
    let shortfall = [800_000, 200_000, 900_000];
    let out = market("2", 2)
        .close_shortfall(&award, &shortfall, &prices)
        .expect("closed");
    assert_eq!(out.position_w, [100_000, -500_000, 700_000]);
    assert_eq!(out.fills[1], None);
    assert_eq!(out.traded_lots(), 4);
}

#[test]
fn a_shortfall_of_another_length_is_a_typed_error() {
    let prices: Vec<Decimal> = ["50", "40"].iter().map(|p| eur(p)).collect();
    let error = market("2", 10)
        .close_shortfall(&[100_000, 0], &[100_000], &prices)
        .expect_err("ragged");
    assert!(matches!(error, IntradayError::LengthMismatch { .. }));
}
