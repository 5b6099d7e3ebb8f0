//! A battery's day bid as linked block families: the plan on the forecast, and
//! optionally plans on other price scenarios of the same day offered beside it as one
//! exclusive group, of which the auction accepts at most the one with the most surplus.
//!
//! The backtest (`voltex backtest --family-bids [--alternatives N]`), the simulator
//! (`bidding = "family"`) and `voltex up --family-bids` all bid a day this way; this
//! module is the one place that decides what is offered.
//!
//! # Guarantees
//! - Pure: the caller passes the planner, so this module neither plans nor clears by
//!   itself, and reads no clock.
//! - The main plan's family is listed first (the auction's tie rule prefers the first);
//!   an alternative whose plan equals one already offered is not offered again, and an
//!   alternative whose plan fails is skipped (returned as a count), never fatal.
//! - Every family is priced with the same value of stored energy, so the surpluses the
//!   auction compares are one measure: the day's cash plus that value times the energy
//!   the day leaves stored.
//! - Alternative scenarios use only past days' errors: [`scenario_with_error`] takes a
//!   past day's real prices and that day's forecast, both published before the auction.

use voltex_market::AccountId;
use voltex_market::auction::AuctionConfig;
use voltex_market::battery::BatterySpec;
use voltex_market::block::{BlockFamily, ExclusiveGroupId};

use super::{BidError, day_ahead_family};
use crate::optimise::{OptimiseError, Plan};

/// The value of a MWh left stored at the end of a day, EUR/MWh: what selling it later
/// at about the day's mean price would earn, `η_d · mean(prices) − κ`. Used as the
/// plan's terminal value and to price its block family.
pub fn stored_energy_value_eur_per_mwh(spec: &BatterySpec, prices: &[f64]) -> f64 {
    use rust_decimal::prelude::ToPrimitive;
    let mean = prices.iter().sum::<f64>() / prices.len().max(1) as f64;
    let wear = spec.wear_cost_eur_per_mwh.to_f64().unwrap_or(0.0);
    spec.discharge_efficiency * mean - wear
}

/// `forecast` moved by one past day's forecast error: `forecast + (real − guess)` per
/// period. `past_real` and `past_forecast` must be of a day whose prices were
/// published before the auction of the day forecast (the caller's responsibility);
/// periods beyond the shortest input are dropped.
pub fn scenario_with_error(forecast: &[f64], past_real: &[f64], past_forecast: &[f64]) -> Vec<f64> {
    forecast
        .iter()
        .zip(past_real.iter().zip(past_forecast))
        .map(|(f, (real, guess))| f + (real - guess))
        .collect()
}

/// Whose families they are and where they are bid.
#[derive(Clone, Copy, Debug)]
pub struct FamilyOwner<'a> {
    /// The bidding account.
    pub participant: AccountId,
    /// The exclusive group alternatives share (unused for a day offered alone).
    pub group: ExclusiveGroupId,
    /// The auction whose rules the families must keep.
    pub auction: &'a AuctionConfig,
}

/// What a day offers the auction.
#[derive(Clone, Debug)]
pub struct DayFamilies {
    /// The families, the main plan's first; in one exclusive group when more than one.
    pub families: Vec<BlockFamily>,
    /// Net power of each offered plan, W per period (positive = sell), in the order of
    /// the plans offered (a plan trading nothing is offered as no family, but counts
    /// here so an equal alternative is not offered either).
    pub offered_net_w: Vec<Vec<i64>>,
    /// Alternatives whose plan failed and were not offered.
    pub failed_alternatives: usize,
}

/// The day of `plan` (the plan on the main forecast) as block families of `owner`: its
/// family, then one per alternative scenario
/// whose plan (by `planner`) differs from every plan already offered. Each is priced at
/// `lambda_eur_per_mwh` (see [`day_ahead_family`]). With more than one family, all are
/// placed in the owner's exclusive group.
///
/// # Errors
/// [`BidError`] from [`day_ahead_family`] (a non-finite value, a quantity or limit
/// outside the auction's rules). A failing alternative plan is not an error.
pub fn day_ahead_families(
    spec: &BatterySpec,
    plan: &Plan,
    alternatives: &[Vec<f64>],
    mut planner: impl FnMut(&[f64]) -> Result<Plan, OptimiseError>,
    lambda_eur_per_mwh: f64,
    owner: FamilyOwner<'_>,
) -> Result<DayFamilies, BidError> {
    let FamilyOwner {
        participant,
        group,
        auction,
    } = owner;
    let mut families: Vec<BlockFamily> =
        day_ahead_family(spec, plan, lambda_eur_per_mwh, participant, auction)?
            .into_iter()
            .collect();
    let mut offered_net_w = vec![plan.net_w.clone()];
    let mut failed_alternatives = 0;
    for scenario in alternatives {
        let alternative = match planner(scenario) {
            Ok(alternative) => alternative,
            Err(error) => {
                tracing::warn!(%error, "alternative plan failed: not offered");
                failed_alternatives += 1;
                continue;
            }
        };
        if offered_net_w.contains(&alternative.net_w) {
            continue;
        }
        families.extend(day_ahead_family(
            spec,
            &alternative,
            lambda_eur_per_mwh,
            participant,
            auction,
        )?);
        offered_net_w.push(alternative.net_w);
    }
    if families.len() > 1 {
        families = families
            .into_iter()
            .map(|family| family.in_exclusive_group(group))
            .collect();
    }
    Ok(DayFamilies {
        families,
        offered_net_w,
        failed_alternatives,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimise::{LpBackend, PlanConfig, TerminalSoc, plan_battery};
    use rust_decimal::Decimal;
    use voltex_market::Side;

    fn spec() -> BatterySpec {
        // 1 MW / 2 MWh, 81 % round trip (0.9 each way), 2 EUR/MWh wear.
        BatterySpec::symmetric(1_000_000, 2_000_000, 0.81, Decimal::from(2))
    }

    fn plan_on(prices: &[f64]) -> Result<Plan, OptimiseError> {
        let spec = spec();
        let lambda = stored_energy_value_eur_per_mwh(&spec, prices);
        let config = PlanConfig {
            period_s: 3600,
            terminal: TerminalSoc::ValueEurPerMwh(lambda),
            backend: LpBackend::Clarabel,
        };
        plan_battery(&spec, 0.0, prices, &config)
    }

    #[test]
    fn the_value_of_stored_energy_is_the_mean_price_after_losses_and_wear() {
        let value = stored_energy_value_eur_per_mwh(&spec(), &[10.0, 30.0, 50.0, 70.0]);
        // 0.9 × 40 − 2
        assert!((value - 34.0).abs() < 1e-12, "{value}");
    }

    #[test]
    fn a_scenario_is_the_forecast_moved_by_a_past_days_error() {
        let moved = scenario_with_error(
            &[10.0, 20.0, 30.0],
            &[12.0, 15.0, 30.0],
            &[10.0, 20.0, 25.0],
        );
        assert_eq!(moved, vec![12.0, 15.0, 35.0]);
    }

    #[test]
    fn alternatives_join_one_exclusive_group_after_the_main_plan_and_are_not_repeated() {
        let spec = spec();
        let auction = AuctionConfig::day_ahead_default();
        let forecast = [20.0, 20.0, 80.0, 80.0];
        let plan = plan_on(&forecast).expect("main plan");
        let lambda = stored_energy_value_eur_per_mwh(&spec, &forecast);
        // The second scenario swaps the cheap and dear hours, the third repeats the
        // forecast (same plan: not offered twice), the fourth cannot be planned.
        let alternatives = vec![
            vec![80.0, 80.0, 20.0, 20.0],
            forecast.to_vec(),
            vec![f64::NAN, 1.0, 1.0, 1.0],
        ];
        let day = day_ahead_families(
            &spec,
            &plan,
            &alternatives,
            plan_on,
            lambda,
            FamilyOwner {
                participant: AccountId(7),
                group: ExclusiveGroupId(3),
                auction: &auction,
            },
        )
        .expect("families");
        assert_eq!(day.families.len(), 2);
        assert_eq!(day.offered_net_w.len(), 2);
        assert_eq!(day.offered_net_w[0], plan.net_w);
        assert_eq!(day.failed_alternatives, 1);
        assert!(day.families.iter().all(|family| family.exclusive_group()
            == Some(ExclusiveGroupId(3))
            && family.participant() == AccountId(7)));
        // The main family buys first and sells last; the swapped one the other way.
        let first_buy = |family: &BlockFamily| {
            family
                .blocks()
                .iter()
                .find(|block| block.side == Side::Buy)
                .map(|block| block.qty.iter().position(|q| !q.is_zero()))
        };
        assert_eq!(first_buy(&day.families[0]), Some(Some(0)));
        assert_eq!(first_buy(&day.families[1]), Some(Some(2)));
    }

    #[test]
    fn a_day_alone_is_not_placed_in_a_group() {
        let spec = spec();
        let forecast = [20.0, 20.0, 80.0, 80.0];
        let plan = plan_on(&forecast).expect("plan");
        let lambda = stored_energy_value_eur_per_mwh(&spec, &forecast);
        let day = day_ahead_families(
            &spec,
            &plan,
            &[],
            plan_on,
            lambda,
            FamilyOwner {
                participant: AccountId(1),
                group: ExclusiveGroupId(0),
                auction: &AuctionConfig::day_ahead_default(),
            },
        )
        .expect("family");
        assert_eq!(day.families.len(), 1);
        assert_eq!(day.families[0].exclusive_group(), None);
    }

    #[test]
    fn a_non_finite_value_of_energy_is_refused() {
        let spec = spec();
        let plan = plan_on(&[20.0, 80.0]).expect("plan");
        let refused = day_ahead_families(
            &spec,
            &plan,
            &[],
            plan_on,
            f64::INFINITY,
            FamilyOwner {
                participant: AccountId(1),
                group: ExclusiveGroupId(0),
                auction: &AuctionConfig::day_ahead_default(),
            },
        );
        assert!(
            matches!(refused, Err(BidError::NonFiniteValue)),
            "{refused:?}"
        );
    }
}
