//! Cost of excluding simultaneous charge and discharge in the battery LP.
//!
//! ```text
//! cargo run --release -p voltex-engine --example lp_modes -- [ITERATIONS]
//! ```
//!
//! Times `plan_battery` on one 96-period day (1 MW / 2 MWh, 90 % round trip, wear 2,
//! terminal SoC >= 1 MWh) with both backends: on an ordinary day (positive prices: the
//! plain LP, as `benches/optimise.rs`) and on a day whose midday hours are deeply
//! negative (the LP relaxation charges and discharges at once there, so the MILP and,
//! for Clarabel, the fixed-mode re-solve run). Prints mean microseconds per plan.
#![allow(clippy::disallowed_methods)] // an example measures wall time; the library never does

use std::hint::black_box;
use std::time::Instant;

use rust_decimal::Decimal;
use voltex_engine::optimise::{LpBackend, PlanConfig, TerminalSoc, plan_battery};
use voltex_market::battery::BatterySpec;

fn day(negative: bool) -> Vec<f64> {
    (0..96)
        .map(|t| {
            let phase = t as f64 / 96.0;
            let shape = 50.0 + 30.0 * (std::f64::consts::TAU * (phase - 0.3)).sin();
            let noise = ((t * 37 % 17) as f64 - 8.0) * 1.2;
            if negative && (40..56).contains(&t) {
                -120.0 - noise * 5.0
            } else {
                shape + noise
            }
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iterations: usize = std::env::args().nth(1).map_or(Ok(300), |s| s.parse())?;
    let spec = BatterySpec::symmetric(1_000_000, 2_000_000, 0.9, Decimal::from(2));
    for negative in [false, true] {
        let prices = day(negative);
        for backend in [LpBackend::Microlp, LpBackend::Clarabel] {
            let config = PlanConfig {
                period_s: 900,
                terminal: TerminalSoc::AtLeastWh(1_000_000.0),
                backend,
            };
            let plan = plan_battery(&spec, 1_000_000.0, &prices, &config)?;
            let both = plan
                .charge_w
                .iter()
                .zip(&plan.discharge_w)
                .filter(|(c, d)| **c > 0 && **d > 0)
                .count();
            let started = Instant::now();
            for _ in 0..iterations {
                black_box(plan_battery(
                    &spec,
                    1_000_000.0,
                    black_box(&prices),
                    &config,
                )?);
            }
            let micros = started.elapsed().as_secs_f64() * 1e6 / iterations as f64;
            println!(
                "{:<22} {:<9} {micros:>9.0} µs/plan  profit {:>8.2} EUR  periods charging and discharging: {both}",
                if negative {
                    "negative midday"
                } else {
                    "ordinary day"
                },
                backend.name(),
                plan.expected_profit_eur
            );
        }
    }
    Ok(())
}
