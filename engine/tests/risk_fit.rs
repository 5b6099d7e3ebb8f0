//! `RiskBook::fit_curve`: the bidder's side of the risk limits. An example of each
//! trim (order size, position headroom shared with earlier bids, the least eager steps
//! cut first), the refusals no trim can mend, and a property test that a fitted curve
//! always passes `check_curve`, never grows a step, and is the curve itself when that
//! passed already.

use proptest::prelude::*;
use voltex_engine::bidding::{BidStep, PeriodCurve, RiskBook, RiskLimits, RiskRejection};
use voltex_market::{AccountId, Price, Qty};

const TRADER: AccountId = AccountId(1);

fn step(price: i64, qty: i64) -> BidStep {
    BidStep {
        price: Price(price),
        qty: Qty(qty),
    }
}

fn book(limits: RiskLimits) -> RiskBook {
    let mut book = RiskBook::new();
    book.set_limits(TRADER, limits);
    book
}

fn limits(max_net_position: i64, max_order_qty: i64) -> RiskLimits {
    RiskLimits {
        max_net_position: Qty(max_net_position),
        max_order_qty: Qty(max_order_qty),
        price_floor: Price(-50_000),
        price_cap: Price(400_000),
    }
}

#[test]
fn the_least_eager_steps_are_cut_to_the_headroom_and_counted() {
    let mut risk = book(limits(10, 8));
    let curve = PeriodCurve {
        period: 3,
        // Buys by descending limit, sells by ascending: the first is the most eager.
        buy: vec![step(6_000, 9), step(4_000, 5)],
        sell: vec![step(9_000, 4), step(12_000, 4)],
    };
    let trimmed = risk.fit_curve(TRADER, &curve).unwrap();
    assert_eq!(
        trimmed.curve.buy,
        vec![step(6_000, 8), step(4_000, 2)],
        "9 cut to the order size 8, then 2 of the 5 fit the position limit"
    );
    assert_eq!(trimmed.curve.sell, curve.sell, "8 sold fits under 10");
    assert_eq!((trimmed.buy_cut, trimmed.sell_cut), (Qty(4), Qty(0)));
    assert!(trimmed.was_cut());
    assert_eq!(
        risk.exposure(TRADER, 3),
        (10, 8),
        "the trimmed curve is counted"
    );

    // A second curve for the same hour has only the headroom left.
    let more = PeriodCurve {
        period: 3,
        buy: vec![step(5_000, 1)],
        sell: vec![step(10_000, 3), step(11_000, 1)],
    };
    let trimmed = risk.fit_curve(TRADER, &more).unwrap();
    assert!(trimmed.curve.buy.is_empty(), "no long headroom left");
    assert_eq!(trimmed.curve.sell, vec![step(10_000, 2)]);
    assert_eq!((trimmed.buy_cut, trimmed.sell_cut), (Qty(1), Qty(2)));
    assert_eq!(risk.exposure(TRADER, 3), (10, 10));
    assert_eq!(risk.exposure(TRADER, 4), (0, 0), "other hours untouched");
}

#[test]
fn a_curve_within_the_limits_is_kept_whole() {
    let mut risk = book(limits(10, 8));
    let curve = PeriodCurve {
        period: 0,
        buy: vec![step(3_000, 6)],
        sell: vec![step(8_000, 4)],
    };
    let trimmed = risk.fit_curve(TRADER, &curve).unwrap();
    assert_eq!(trimmed.curve, curve);
    assert!(!trimmed.was_cut());
}

#[test]
fn what_no_trim_can_mend_is_refused_and_nothing_counted() {
    let mut risk = book(limits(10, 8));
    let outside = PeriodCurve {
        period: 0,
        buy: vec![step(3_000, 2)],
        sell: vec![step(400_001, 1)],
    };
    assert!(matches!(
        risk.fit_curve(TRADER, &outside),
        Err(RiskRejection::PriceOutsideCollar { .. })
    ));
    let empty_step = PeriodCurve {
        period: 0,
        buy: vec![step(3_000, 0)],
        sell: vec![],
    };
    assert_eq!(
        risk.fit_curve(TRADER, &empty_step),
        Err(RiskRejection::NonPositiveQty { qty: Qty(0) })
    );
    assert_eq!(
        risk.fit_curve(AccountId(9), &empty_step),
        Err(RiskRejection::UnknownAccount {
            account: AccountId(9)
        })
    );
    assert_eq!(risk.exposure(TRADER, 0), (0, 0));
}

fn steps(descending: bool) -> impl Strategy<Value = Vec<BidStep>> {
    prop::collection::vec((-500_i64..4_000, 1_i64..40), 0..6).prop_map(move |raw| {
        let mut steps: Vec<BidStep> = raw
            .into_iter()
            .map(|(eur, qty)| step(eur * 100, qty))
            .collect();
        steps.sort_by_key(|s| s.price);
        if descending {
            steps.reverse();
        }
        steps
    })
}

proptest! {
    #[test]
    fn a_fitted_curve_passes_the_check_and_never_grows(
        buy in steps(true),
        sell in steps(false),
        max_net_position in 0_i64..60,
        max_order_qty in 1_i64..30,
        earlier_long in 0_i64..30,
        earlier_short in 0_i64..30,
    ) {
        let mut risk = book(limits(max_net_position, max_order_qty));
        // Earlier bids for the same hour, as far as the limits let them in.
        let earlier = PeriodCurve {
            period: 0,
            buy: vec![step(1_000, earlier_long.max(1))],
            sell: vec![step(2_000, earlier_short.max(1))],
        };
        risk.fit_curve(TRADER, &earlier).unwrap();
        let curve = PeriodCurve { period: 0, buy, sell };
        let before = risk.clone();
        let whole_passes = before.clone().check_curve(TRADER, &curve).is_ok();
        let trimmed = risk.fit_curve(TRADER, &curve).unwrap();
        prop_assert!(
            before.clone().check_curve(TRADER, &trimmed.curve).is_ok(),
            "{:?}", trimmed
        );
        for (kept, given) in [(&trimmed.curve.buy, &curve.buy), (&trimmed.curve.sell, &curve.sell)] {
            prop_assert!(kept.len() <= given.len());
            for (kept, given) in kept.iter().zip(given) {
                prop_assert_eq!(kept.price, given.price);
                prop_assert!(kept.qty.0 > 0 && kept.qty <= given.qty);
            }
        }
        let ((buy, sell), (buy_given, sell_given)) = (trimmed.curve.totals(), curve.totals());
        prop_assert_eq!((trimmed.buy_cut.0, trimmed.sell_cut.0), (buy_given.0 - buy.0, sell_given.0 - sell.0));
        let (long, short) = before.exposure(TRADER, 0);
        prop_assert_eq!(risk.exposure(TRADER, 0), (long + buy.0, short + sell.0));
        if whole_passes {
            prop_assert_eq!(&trimmed.curve, &curve);
        }
    }
}
