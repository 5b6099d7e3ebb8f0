//! A plan's day bid as one linked block family: quantities and limits by hand, the
//! family's surplus against the day's value, all-or-nothing clearing against a replayed
//! market (where hourly curves break the pair), and the typed errors.

use rust_decimal::Decimal;
use voltex_engine::bidding::{
    BidError, PeriodCurve, ReplayError, ReplayMarket, day_ahead_family, price_taking_curves,
};
use voltex_engine::optimise::Plan;
use voltex_market::auction::AuctionConfig;
use voltex_market::battery::BatterySpec;
use voltex_market::block::FamilyClearingError;
use voltex_market::{AccountId, Price, Qty, Side};

const BATTERY: AccountId = AccountId(1);
const MARKET: AccountId = AccountId(2);

/// 1 MW / 2 MWh, 81 % round trip (90 % each way), wear 2 EUR/MWh.
fn spec() -> BatterySpec {
    BatterySpec::symmetric(1_000_000, 2_000_000, 0.81, Decimal::from(2))
}

/// Charges 1 MW in period 0, discharges 0.9 MW in period 1.
fn plan() -> Plan {
    Plan {
        charge_w: vec![1_000_000, 0],
        discharge_w: vec![0, 900_000],
        net_w: vec![-1_000_000, 900_000],
        soc_wh: vec![1_900_000.0, 900_000.0],
        start_soc_wh: 1_000_000.0,
        expected_profit_eur: 0.0,
        marginal_value_eur_per_mwh: None,
        warnings: Vec::new(),
    }
}

fn eur(text: &str) -> Decimal {
    text.parse().expect("decimal")
}

fn replay() -> ReplayMarket {
    ReplayMarket::new(BATTERY, MARKET, AuctionConfig::day_ahead_default()).expect("market")
}

#[test]
fn the_day_is_one_family_priced_at_the_value_of_stored_energy() {
    let config = AuctionConfig::day_ahead_default();
    let family = day_ahead_family(&spec(), &plan(), 50.0, BATTERY, &config)
        .expect("valid")
        .expect("the plan trades");
    assert_eq!(family.participant(), BATTERY);
    let blocks = family.blocks();
    assert_eq!(blocks.len(), 2);
    // Buy up to 50 x 0.9 - 2 = 43.00; sell from 50 / 0.9 + 2 = 57.555.. -> 57.56 (up).
    assert_eq!(blocks[0].side, Side::Buy);
    assert_eq!(blocks[0].limit, Price(4_300));
    assert_eq!(blocks[0].qty, vec![Qty(10), Qty(0)]);
    assert_eq!(blocks[1].side, Side::Sell);
    assert_eq!(blocks[1].limit, Price(5_756));
    assert_eq!(blocks[1].qty, vec![Qty(0), Qty(9)]);

    // Its surplus at 40 / 60 is the day's value: cash -40 + 0.9 x 60 - 2 x 1.9 = 10.2 EUR,
    // plus 50 EUR/MWh times the stored energy's change (0.9 - 0.9 / 0.9 = -0.1 MWh): 5.2
    // EUR, less what rounding the sell limit up to 57.56 takes on 0.9 MWh. One tick
    // times one lot-hour is 0.01 EUR/MWh x 0.1 MWh = 0.001 EUR.
    let surplus = family
        .surplus(&[Some(Price(4_000)), Some(Price(6_000))])
        .expect("priced");
    assert_eq!(surplus, 10 * 300 + 9 * 244);
    let rounded_up_by = 57.56 - (50.0 / 0.9 + 2.0);
    let day_value_eur = 5.2 - 0.9 * rounded_up_by;
    assert!(
        (surplus as f64 * 0.001 - day_value_eur).abs() < 1e-9,
        "{surplus} vs {day_value_eur}"
    );

    // A plan that trades nothing bids no family; a non-finite value is refused.
    let mut idle = plan();
    idle.charge_w = vec![0, 0];
    idle.discharge_w = vec![0, 0];
    assert_eq!(
        day_ahead_family(&spec(), &idle, 50.0, BATTERY, &config),
        Ok(None)
    );
    assert_eq!(
        day_ahead_family(&spec(), &plan(), f64::NAN, BATTERY, &config),
        Err(BidError::NonFiniteValue)
    );
}

#[test]
fn the_family_clears_both_halves_or_neither_where_hourly_curves_break_the_pair() {
    let config = AuctionConfig::day_ahead_default();
    let family = day_ahead_family(&spec(), &plan(), 50.0, BATTERY, &config)
        .expect("valid")
        .expect("trades");
    let no_curves = vec![PeriodCurve::default(); 2];
    // (real prices, accepted W per period)
    let cases = [
        // As planned: both halves.
        (["40", "60"], [-1_000_000, 900_000]),
        // The day came out 10 EUR higher than the limits: the purchase (50 > 43) is
        // carried by the sale (70 - 57.56): 10 x -700 + 9 x 1,244 > 0, both clear.
        (["50", "70"], [-1_000_000, 900_000]),
        // 50 / 60: -7,000 + 2,196 < 0: neither.
        (["50", "60"], [0, 0]),
    ];
    for (prices, expected) in cases {
        let real = [eur(prices[0]), eur(prices[1])];
        let accepted = replay()
            .clear_day_with_families(&no_curves, std::slice::from_ref(&family), &real)
            .expect("clears");
        assert_eq!(accepted, expected, "{prices:?}");
    }
    // The same plan as hourly curves at the same limits: at 50 / 70 the purchase is
    // refused (50 > 43) and the sale clears, with nothing stored to deliver it.
    let mut curves = price_taking_curves(
        &plan(),
        &voltex_engine::bidding::BidConfig {
            rules: config.rules.clone(),
            period_s: 3600,
            headroom: None,
            planned_limits: voltex_engine::bidding::PlannedLimits::RoundTrip,
            imbalance_penalty_eur_per_mwh: 0.0,
        },
    );
    curves[0].buy[0].price = Price(4_300);
    curves[1].sell[0].price = Price(5_756);
    let hourly = replay()
        .clear_day(&curves, &[eur("50"), eur("70")])
        .expect("clears");
    assert_eq!(hourly, vec![0, 900_000]);
}

#[test]
fn families_of_another_account_or_day_length_are_typed_errors() {
    let config = AuctionConfig::day_ahead_default();
    let foreign = day_ahead_family(&spec(), &plan(), 50.0, AccountId(7), &config)
        .expect("valid")
        .expect("trades");
    let two = vec![PeriodCurve::default(); 2];
    assert_eq!(
        replay().clear_day_with_families(&two, &[foreign], &[eur("40"), eur("60")]),
        Err(ReplayError::ForeignFamily(AccountId(7)))
    );
    let family = day_ahead_family(&spec(), &plan(), 50.0, BATTERY, &config)
        .expect("valid")
        .expect("trades");
    let three = vec![PeriodCurve::default(); 3];
    assert!(matches!(
        replay().clear_day_with_families(
            &three,
            std::slice::from_ref(&family),
            &[eur("40"), eur("60"), eur("50")]
        ),
        Err(ReplayError::Families(
            FamilyClearingError::LengthMismatch { .. }
        ))
    ));
    assert!(matches!(
        replay().clear_day_with_families(&two, &[family], &[eur("40")]),
        Err(ReplayError::LengthMismatch { .. })
    ));
}

/// The net power a family trades when accepted, W per period (positive = sell).
fn family_net_w(family: &voltex_market::block::BlockFamily, lot_w: i64) -> Vec<i64> {
    let mut net = vec![0_i64; family.periods()];
    for block in family.blocks() {
        let sign = if block.side == Side::Sell { 1 } else { -1 };
        for (total, qty) in net.iter_mut().zip(&block.qty) {
            *total += sign * qty.0 * lot_w;
        }
    }
    net
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]

    /// A day of alternatives (the plan and plans on the forecast moved by past errors)
    /// against the replayed market: what clears is one offered family whole, the one
    /// with the most surplus at the real prices, or nothing when none pays.
    #[test]
    fn against_the_replay_a_day_of_alternatives_clears_its_best_family_whole_or_nothing(
        forecast in proptest::collection::vec(-30_i32..150, 24),
        errors in proptest::collection::vec(proptest::collection::vec(-40_i32..40, 24), 0..6),
        real in proptest::collection::vec(-30_i32..150, 24),
        start_soc_wh in 0.0..2_000_000.0_f64,
    ) {
        use voltex_engine::bidding::{FamilyOwner, day_ahead_families, stored_energy_value_eur_per_mwh};
        use voltex_engine::optimise::{LpBackend, PlanConfig, TerminalSoc, plan_battery};
        use voltex_market::block::ExclusiveGroupId;

        let spec = spec();
        let forecast: Vec<f64> = forecast.iter().map(|p| f64::from(*p)).collect();
        let lambda = stored_energy_value_eur_per_mwh(&spec, &forecast);
        let config = PlanConfig {
            period_s: 3600,
            terminal: TerminalSoc::ValueEurPerMwh(lambda),
            backend: LpBackend::Microlp,
        };
        let planner = |prices: &[f64]| plan_battery(&spec, start_soc_wh, prices, &config);
        let plan = planner(&forecast).expect("plan");
        let alternatives: Vec<Vec<f64>> = errors
            .iter()
            .map(|error| forecast.iter().zip(error).map(|(f, e)| f + f64::from(*e)).collect())
            .collect();
        let auction = AuctionConfig::day_ahead_default();
        let day = day_ahead_families(
            &spec,
            &plan,
            &alternatives,
            planner,
            lambda,
            FamilyOwner { participant: BATTERY, group: ExclusiveGroupId(0), auction: &auction },
        )
        .expect("families");
        proptest::prop_assert_eq!(day.failed_alternatives, 0);
        proptest::prop_assert!(day.families.len() <= 1 + alternatives.len());
        proptest::prop_assert_eq!(&day.offered_net_w[0], &plan.net_w);
        for (i, offered) in day.offered_net_w.iter().enumerate() {
            proptest::prop_assert!(!day.offered_net_w[..i].contains(offered), "offered twice");
        }
        if day.families.len() > 1 {
            proptest::prop_assert!(day
                .families
                .iter()
                .all(|family| family.exclusive_group() == Some(ExclusiveGroupId(0))));
        }
        let real_prices: Vec<Decimal> = real.iter().map(|p| Decimal::from(*p)).collect();
        let awarded = replay()
            .clear_families(&day.families, &real_prices)
            .expect("clears");
        let at_real: Vec<Option<Price>> = real.iter().map(|p| Some(Price(i64::from(*p) * 100))).collect();
        let surpluses: Vec<i128> = day
            .families
            .iter()
            .map(|family| family.surplus(&at_real).expect("priced"))
            .collect();
        let best = surpluses.iter().copied().max();
        match best {
            Some(best) if best >= 0 => {
                // The award is a family with the best surplus, whole.
                let lot_w = 100_000;
                proptest::prop_assert!(
                    day.families
                        .iter()
                        .zip(&surpluses)
                        .any(|(family, s)| *s == best && family_net_w(family, lot_w) == awarded),
                    "awarded {:?}, surpluses {:?}", awarded, surpluses
                );
            }
            _ => proptest::prop_assert!(awarded.iter().all(|w| *w == 0), "{:?}", awarded),
        }
    }
}
