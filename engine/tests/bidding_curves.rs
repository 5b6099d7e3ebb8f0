//! Bid curves from plans (monotonicity, the marginal-value property, consistency with the
//! plan at the forecast) and risk-limit rejections, one test per reason.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use voltex_engine::bidding::{
    BidConfig, BidError, HeadroomSteps, OrderIntent, PeriodCurve, PlannedLimits, RiskBook,
    RiskLimits, RiskRejection, day_ahead_curves, limit_orders, marginal_limits,
};
use voltex_engine::optimise::{LpBackend, Plan, PlanConfig, TerminalSoc, plan_battery};
use voltex_market::battery::BatterySpec;
use voltex_market::{AccountId, MarketRules, Price, Qty, Side};

fn spec() -> BatterySpec {
    BatterySpec::symmetric(1_000_000, 2_000_000, 0.9, Decimal::from(2))
}

fn plan(prices: &[f64], backend: LpBackend) -> Plan {
    let config = PlanConfig {
        period_s: 3600,
        terminal: TerminalSoc::AtLeastWh(1_000_000.0),
        backend,
    };
    plan_battery(&spec(), 1_000_000.0, prices, &config).unwrap()
}

fn bid_config(headroom: Option<HeadroomSteps>) -> BidConfig {
    BidConfig {
        rules: MarketRules::day_ahead_default(),
        period_s: 3600,
        headroom,
        planned_limits: PlannedLimits::Marginal,
        imbalance_penalty_eur_per_mwh: 0.0,
    }
}

fn random_day(rng: &mut ChaCha8Rng) -> Vec<f64> {
    (0..24)
        .map(|t| {
            60.0 + 40.0 * (t as f64 / 24.0 * std::f64::consts::TAU - 1.5).sin()
                + rng.random_range(-15.0..15.0)
        })
        .collect()
}

/// Prices to probe a curve at: every step limit, one cent either side, and extremes.
fn probes(curve: &PeriodCurve) -> Vec<Decimal> {
    let mut out = vec![Decimal::from(-500), Decimal::from(4000)];
    for step in curve.buy.iter().chain(&curve.sell) {
        let p = step.price.to_decimal();
        out.extend([p - Decimal::new(1, 2), p, p + Decimal::new(1, 2)]);
    }
    out.sort();
    out
}

#[test]
fn net_quantity_never_decreases_with_price() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for _ in 0..10 {
        let forecast = random_day(&mut rng);
        let plan = plan(&forecast, LpBackend::Clarabel);
        let headroom = Some(HeadroomSteps {
            spread_eur_per_mwh: 5.0,
        });
        for cfg in [bid_config(None), bid_config(headroom)] {
            for curve in day_ahead_curves(&spec(), &plan, &forecast, &cfg).unwrap() {
                let nets: Vec<i64> = probes(&curve).iter().map(|p| curve.net_at(*p)).collect();
                assert!(nets.windows(2).all(|w| w[0] <= w[1]), "{curve:?} {nets:?}");
                assert!(curve.buy.windows(2).all(|w| w[0].price >= w[1].price));
                assert!(curve.sell.windows(2).all(|w| w[0].price <= w[1].price));
                assert!(curve.buy.iter().chain(&curve.sell).all(|s| s.qty.0 > 0));
            }
        }
    }
}

#[test]
fn battery_buys_only_below_and_sells_only_above_its_marginal_value() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for _ in 0..10 {
        let forecast = random_day(&mut rng);
        let plan = plan(&forecast, LpBackend::Clarabel);
        let values = plan.marginal_value_eur_per_mwh.clone().unwrap();
        let cfg = bid_config(Some(HeadroomSteps {
            spread_eur_per_mwh: 5.0,
        }));
        let curves = day_ahead_curves(&spec(), &plan, &forecast, &cfg).unwrap();
        for (t, curve) in curves.iter().enumerate() {
            let limits = marginal_limits(&spec(), values[t]);
            // A planned step may sit at the forecast it was planned at; any other step is
            // strictly on the right side of the marginal value.
            let buy_cap = limits.buy_eur_per_mwh.max(forecast[t]) + 0.01;
            let sell_floor = limits.sell_eur_per_mwh.min(forecast[t]) - 0.01;
            for step in &curve.buy {
                let p: f64 = step.price.to_decimal().to_string().parse().unwrap();
                assert!(p <= buy_cap, "period {t}: buys at {p} above {buy_cap}");
            }
            for step in &curve.sell {
                let p: f64 = step.price.to_decimal().to_string().parse().unwrap();
                assert!(
                    p >= sell_floor,
                    "period {t}: sells at {p} below {sell_floor}"
                );
            }
            // Above every buy limit nothing is bought; below every sell limit nothing sold.
            if let Some(top) = curve.buy.first() {
                assert_eq!(
                    curve.bought_at(top.price.to_decimal() + Decimal::new(1, 2)),
                    Qty(0)
                );
            }
            if let Some(bottom) = curve.sell.first() {
                assert_eq!(
                    curve.sold_at(bottom.price.to_decimal() - Decimal::new(1, 2)),
                    Qty(0)
                );
            }
        }
    }
}

#[test]
fn at_the_forecast_price_the_curve_reproduces_the_plan_in_lots() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let forecast: Vec<f64> = random_day(&mut rng).iter().map(|p| p.round()).collect();
    let plan = plan(&forecast, LpBackend::Clarabel);
    let curves = day_ahead_curves(&spec(), &plan, &forecast, &bid_config(None)).unwrap();
    let mut traded = 0;
    for (t, curve) in curves.iter().enumerate() {
        let lots = (plan.net_w[t] as f64 / 100_000.0).round() as i64;
        assert_eq!(
            curve.net_at(Decimal::from(forecast[t] as i64)),
            lots,
            "period {t}"
        );
        traded += lots.abs();
    }
    assert!(traded > 0, "the test day must make the battery trade");
}

/// With an imbalance penalty the round-trip limits widen: every planned buy limit
/// rises and every planned sell limit falls (never the other way), by at most
/// `π·η_c·η_d` and `π/(η_c·η_d)` plus a tick, so a sale is less often awarded without
/// its purchase; quantities stay the plan's, and a negative penalty counts as none.
#[test]
fn an_imbalance_penalty_widens_the_round_trip_limits() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let penalty = 20.0;
    let efficiency = spec().charge_efficiency * spec().discharge_efficiency;
    let (mut n_buys_raised, mut n_sells_lowered) = (0, 0);
    for _ in 0..10 {
        let forecast = random_day(&mut rng);
        let plan = plan(&forecast, LpBackend::Clarabel);
        let config = |imbalance_penalty_eur_per_mwh| BidConfig {
            planned_limits: PlannedLimits::RoundTrip,
            imbalance_penalty_eur_per_mwh,
            ..bid_config(None)
        };
        let blind = day_ahead_curves(&spec(), &plan, &forecast, &config(0.0)).unwrap();
        let aware = day_ahead_curves(&spec(), &plan, &forecast, &config(penalty)).unwrap();
        let negative = day_ahead_curves(&spec(), &plan, &forecast, &config(-5.0)).unwrap();
        assert_eq!(negative, blind, "a negative penalty counts as zero");
        for (blind, aware) in blind.iter().zip(&aware) {
            assert_eq!(blind.totals(), aware.totals(), "the plan's quantities");
            for (b, a) in blind.buy.iter().zip(&aware.buy) {
                let raised = (a.price.0 - b.price.0) as f64 / 100.0;
                assert!(
                    (0.0..=penalty * efficiency + 0.01).contains(&raised),
                    "{blind:?} {aware:?}"
                );
                n_buys_raised += usize::from(raised > 0.0);
            }
            for (b, a) in blind.sell.iter().zip(&aware.sell) {
                let lowered = (b.price.0 - a.price.0) as f64 / 100.0;
                assert!(
                    (0.0..=penalty / efficiency + 0.01).contains(&lowered),
                    "{blind:?} {aware:?}"
                );
                n_sells_lowered += usize::from(lowered > 0.0);
            }
        }
    }
    assert!(
        n_buys_raised > 0 && n_sells_lowered > 0,
        "the penalty moved limits"
    );
}

#[test]
fn lots_never_add_up_to_more_power_than_the_battery_has() {
    // 0.15 MW: a full-power step is 1.5 lots, which rounds to 2 (0.2 MW) — more than
    // the battery can charge or discharge. Every curve stays within 1 whole lot a side,
    // headroom included.
    let small = BatterySpec::symmetric(150_000, 300_000, 0.9, Decimal::from(2));
    // Two cheapest hours (charged flat out) and two dearest (discharged flat out).
    let forecast: Vec<f64> = (0..24)
        .map(|t| match t {
            1 => 5.0,
            2 => 6.0,
            20 => 200.0,
            21 => 199.0,
            _ => 100.0,
        })
        .collect();
    let config = PlanConfig {
        period_s: 3600,
        terminal: TerminalSoc::Free,
        backend: LpBackend::Clarabel,
    };
    let plan = plan_battery(&small, 0.0, &forecast, &config).unwrap();
    assert!(
        plan.charge_w.iter().any(|w| *w > 125_000),
        "the plan must charge above 1.25 lots somewhere: {:?}",
        plan.charge_w
    );
    for headroom in [
        None,
        Some(HeadroomSteps {
            spread_eur_per_mwh: 5.0,
        }),
    ] {
        let curves = day_ahead_curves(&small, &plan, &forecast, &bid_config(headroom)).unwrap();
        for curve in &curves {
            let (bought, sold) = curve.totals();
            assert!(bought.0 <= 1 && sold.0 <= 1, "{curve:?}");
        }
        assert!(
            curves.iter().any(|c| c.totals().0.0 == 1),
            "the charge is still bid"
        );
    }
}

#[test]
fn plan_without_marginal_values_cannot_be_bid() {
    let forecast = vec![50.0; 24];
    let plan = plan(&forecast, LpBackend::Microlp);
    let err = day_ahead_curves(&spec(), &plan, &forecast, &bid_config(None));
    assert_eq!(err, Err(BidError::NoMarginalValues));
}

#[test]
fn limit_orders_mirror_the_curve_steps() {
    let curve = PeriodCurve {
        period: 3,
        buy: vec![voltex_engine::bidding::BidStep {
            price: Price(2000),
            qty: Qty(4),
        }],
        sell: vec![voltex_engine::bidding::BidStep {
            price: Price(9000),
            qty: Qty(6),
        }],
    };
    let orders = limit_orders(std::slice::from_ref(&curve));
    assert_eq!(
        orders,
        vec![
            OrderIntent {
                period: 3,
                side: Side::Buy,
                price: Price(2000),
                qty: Qty(4)
            },
            OrderIntent {
                period: 3,
                side: Side::Sell,
                price: Price(9000),
                qty: Qty(6)
            },
        ]
    );
}

fn risk() -> RiskBook {
    let mut book = RiskBook::new();
    book.set_limits(
        AccountId(1),
        RiskLimits {
            max_net_position: Qty(10),
            max_order_qty: Qty(8),
            price_floor: Price(-10_000),
            price_cap: Price(50_000),
        },
    );
    book
}

fn order(side: Side, price: i64, qty: i64) -> OrderIntent {
    OrderIntent {
        period: 0,
        side,
        price: Price(price),
        qty: Qty(qty),
    }
}

#[test]
fn risk_rejects_unknown_account() {
    let err = risk().check_order(AccountId(2), &order(Side::Buy, 5000, 1));
    assert_eq!(
        err,
        Err(RiskRejection::UnknownAccount {
            account: AccountId(2)
        })
    );
}

#[test]
fn risk_rejects_non_positive_quantity() {
    let err = risk().check_order(AccountId(1), &order(Side::Buy, 5000, 0));
    assert_eq!(err, Err(RiskRejection::NonPositiveQty { qty: Qty(0) }));
}

#[test]
fn risk_rejects_order_above_max_size() {
    let err = risk().check_order(AccountId(1), &order(Side::Sell, 5000, 9));
    assert_eq!(
        err,
        Err(RiskRejection::OrderTooLarge {
            qty: Qty(9),
            max: Qty(8)
        })
    );
}

#[test]
fn risk_rejects_price_outside_collar() {
    let err = risk().check_order(AccountId(1), &order(Side::Sell, 50_001, 1));
    assert!(matches!(
        err,
        Err(RiskRejection::PriceOutsideCollar {
            price: Price(50_001),
            ..
        })
    ));
    let err = risk().check_order(AccountId(1), &order(Side::Buy, -10_001, 1));
    assert!(matches!(err, Err(RiskRejection::PriceOutsideCollar { .. })));
}

#[test]
fn risk_rejects_net_position_beyond_limit_and_counts_nothing_then() {
    let mut book = risk();
    assert_eq!(
        book.check_order(AccountId(1), &order(Side::Buy, 5000, 6)),
        Ok(())
    );
    // Selling does not add to the long side.
    assert_eq!(
        book.check_order(AccountId(1), &order(Side::Sell, 6000, 8)),
        Ok(())
    );
    let err = book.check_order(AccountId(1), &order(Side::Buy, 4000, 5));
    assert_eq!(
        err,
        Err(RiskRejection::NetPositionExceeded {
            period: 0,
            would_be: 11,
            max: Qty(10)
        })
    );
    assert_eq!(book.exposure(AccountId(1), 0), (6, 8));
    // Another period has its own limit.
    let other = OrderIntent {
        period: 1,
        ..order(Side::Buy, 4000, 5)
    };
    assert_eq!(book.check_order(AccountId(1), &other), Ok(()));
}

#[test]
fn risk_checks_every_step_of_a_curve_and_its_worst_case_total() {
    let mut book = risk();
    let step = |price, qty| voltex_engine::bidding::BidStep {
        price: Price(price),
        qty: Qty(qty),
    };
    let too_big = PeriodCurve {
        period: 0,
        buy: vec![step(3000, 6), step(2000, 6)],
        sell: vec![],
    };
    assert!(matches!(
        book.check_curve(AccountId(1), &too_big),
        Err(RiskRejection::NetPositionExceeded { would_be: 12, .. })
    ));
    let fine = PeriodCurve {
        period: 0,
        buy: vec![step(3000, 6)],
        sell: vec![step(8000, 4)],
    };
    assert_eq!(book.check_curve(AccountId(1), &fine), Ok(()));
}

#[test]
fn curves_clear_in_the_call_auction_like_the_step_function_says() {
    use voltex_market::auction::{Auction, AuctionConfig, BidCurve, CurveKind, CurvePoint};
    let config = AuctionConfig::day_ahead_default();
    let step = |price, qty| voltex_engine::bidding::BidStep {
        price: Price(price),
        qty: Qty(qty),
    };
    // Two buy steps at the same price are merged into one auction point.
    let curve = PeriodCurve {
        period: 0,
        buy: vec![step(4000, 3), step(4000, 1), step(2000, 2)],
        sell: vec![step(6000, 6)],
    };
    let battery = AccountId(1);
    let mut auction = Auction::new(config.clone()).unwrap();
    for (real, expected_net) in [(1500, -6), (3000, -4), (5000, 0), (7000, 6)] {
        let mut curves = curve.to_auction_curves(battery, &config).unwrap();
        assert_eq!(curves.len(), 2);
        assert_eq!(curves[0].points().len(), 2);
        let flat = vec![CurvePoint {
            price: Price(real),
            qty: Qty(9_990),
        }];
        for side in [Side::Buy, Side::Sell] {
            curves.push(
                BidCurve::new(
                    AccountId(2),
                    side,
                    CurveKind::Stepwise,
                    flat.clone(),
                    &config,
                )
                .unwrap(),
            );
        }
        let result = auction.clear_period(&curves).unwrap();
        let net =
            result.accepted_qty(battery, Side::Sell).0 - result.accepted_qty(battery, Side::Buy).0;
        assert_eq!(net, expected_net, "real price {real}");
        assert_eq!(net, curve.net_at(Price(real).to_decimal()));
    }
}
