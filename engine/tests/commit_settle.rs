//! Execution and settlement in exact money: feasible schedules settle at the market
//! price, undeliverable energy becomes imbalance, quarter-hours are exact.

use rust_decimal::Decimal;
use voltex_engine::commit::settle::{SettleConfig, SettleError, execute_and_settle};
use voltex_market::battery::BatterySpec;

fn spec() -> BatterySpec {
    BatterySpec::symmetric(1_000_000, 2_000_000, 1.0, Decimal::from(2))
}

fn d(text: &str) -> Decimal {
    text.parse().unwrap()
}

fn hourly(penalty: &str) -> SettleConfig {
    SettleConfig {
        period_s: 3600,
        imbalance_penalty_eur_per_mwh: d(penalty),
    }
}

#[test]
fn feasible_schedule_settles_exactly_at_market_prices_minus_wear() {
    let s = execute_and_settle(
        &spec(),
        0.0,
        &[-1_000_000, 1_000_000],
        &[d("10.01"), d("100.37")],
        &hourly("0"),
    )
    .unwrap();
    assert_eq!(s.delivered_w, vec![-1_000_000, 1_000_000]);
    assert_eq!(s.market_eur, d("90.36"));
    assert_eq!(s.wear_eur, d("4"));
    assert_eq!(s.imbalance_eur, Decimal::ZERO);
    assert_eq!(s.profit_eur, d("86.36"));
    assert_eq!((s.charged_mwh, s.discharged_mwh), (d("1"), d("1")));
}

#[test]
fn undeliverable_energy_is_imbalance_at_the_real_price_plus_penalty() {
    let prices = [d("50.5")];
    let free = execute_and_settle(&spec(), 0.0, &[1_000_000], &prices, &hourly("0")).unwrap();
    assert_eq!(free.delivered_w, vec![0]);
    assert_eq!(free.market_eur, d("50.5"));
    assert_eq!(free.imbalance_eur, d("-50.5"));
    assert_eq!(free.profit_eur, Decimal::ZERO);
    assert_eq!(free.imbalance_mwh, d("1"));
    let penalised = execute_and_settle(&spec(), 0.0, &[1_000_000], &prices, &hourly("10")).unwrap();
    assert_eq!(penalised.profit_eur, d("-10"));
}

#[test]
fn partly_full_battery_delivers_what_fits_and_settles_the_rest_as_imbalance() {
    // 1.5 MWh stored, room for 0.5 MWh: a 1 MW charge delivers 0.5 MW.
    let s = execute_and_settle(
        &spec(),
        1_500_000.0,
        &[-1_000_000],
        &[d("20")],
        &hourly("0"),
    )
    .unwrap();
    assert_eq!(s.delivered_w, vec![-500_000]);
    assert_eq!(s.market_eur, d("-20"));
    assert_eq!(s.imbalance_eur, d("10"));
    assert_eq!(s.wear_eur, d("1"));
    assert_eq!(s.profit_eur, d("-11"));
    assert_eq!(s.end_soc_wh, 2_000_000.0);
}

#[test]
fn quarter_hour_energy_is_exact() {
    let config = SettleConfig {
        period_s: 900,
        ..hourly("0")
    };
    let s = execute_and_settle(&spec(), 2_000_000.0, &[999_999], &[d("40.01")], &config).unwrap();
    // 999,999 W for 15 min = 0.24999975 MWh.
    assert_eq!(s.discharged_mwh, d("0.24999975"));
    assert_eq!(s.market_eur, d("40.01") * d("0.24999975"));
}

#[test]
fn mismatched_lengths_and_odd_periods_are_errors() {
    let err = execute_and_settle(&spec(), 0.0, &[0, 0], &[d("1")], &hourly("0"));
    assert_eq!(
        err,
        Err(SettleError::LengthMismatch {
            positions: 2,
            prices: 1
        })
    );
    let odd = SettleConfig {
        period_s: 7,
        ..hourly("0")
    };
    assert_eq!(
        execute_and_settle(&spec(), 0.0, &[0], &[d("1")], &odd),
        Err(SettleError::BadPeriod(7))
    );
}
