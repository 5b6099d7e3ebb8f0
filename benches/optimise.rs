//! Optimiser benchmarks: the 96-period battery LP with microlp and with Clarabel, side by
//! side on the same prices, and a 10,000-battery fleet (24 parameter groups) planned and
//! allocated into device schedules.
//!
//! Run: `cargo bench --bench optimise` (add `-- --quick` for a short run). Prices are a
//! seeded synthetic daily shape plus noise, so every run solves the same LPs.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use voltex_engine::commit::{Commitment, allocate};
use voltex_engine::optimise::fleet::{FleetDevice, plan_fleet};
use voltex_engine::optimise::{LpBackend, PlanConfig, TerminalSoc, plan_battery};
use voltex_market::battery::BatterySpec;

fn prices(n: usize, periods_per_day: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|t| {
            let phase = (t % periods_per_day) as f64 / periods_per_day as f64;
            let shape = 50.0 + 30.0 * (std::f64::consts::TAU * (phase - 0.3)).sin();
            shape + rng.random_range(-10.0..10.0)
        })
        .collect()
}

fn fleet(n_devices: usize, n_groups: usize) -> Vec<FleetDevice> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    (0..n_devices)
        .map(|i| {
            let g = (i % n_groups) as i64;
            let power_w = 3_000 + 500 * g;
            let capacity_wh = 5_000 + 1_000 * (g % 8) + 2_000 * (g / 8);
            let spec = BatterySpec::symmetric(power_w, capacity_wh, 0.9, Decimal::from(2));
            let soc_wh = rng.random_range(0..=capacity_wh);
            FleetDevice { spec, soc_wh }
        })
        .collect()
}

fn lp_96(c: &mut Criterion) {
    let spec = BatterySpec::symmetric(1_000_000, 2_000_000, 0.9, Decimal::from(2));
    let p = prices(96, 96, 1);
    let mut group = c.benchmark_group("lp_96_periods");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(3));
    for backend in [LpBackend::Microlp, LpBackend::Clarabel] {
        let config = PlanConfig {
            period_s: 900,
            terminal: TerminalSoc::AtLeastWh(1_000_000.0),
            backend,
        };
        group.bench_function(backend.name(), |b| {
            b.iter(|| plan_battery(&spec, 1_000_000.0, black_box(&p), &config))
        });
    }
    group.finish();
}

fn lp_8760(c: &mut Criterion) {
    let spec = BatterySpec::symmetric(1_000_000, 2_000_000, 0.9, Decimal::from(2));
    let p = prices(8760, 24, 2);
    let mut group = c.benchmark_group("lp_8760_periods");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    let config = PlanConfig {
        period_s: 3600,
        terminal: TerminalSoc::Free,
        backend: LpBackend::Clarabel,
    };
    group.bench_function("clarabel", |b| {
        b.iter(|| plan_battery(&spec, 1_000_000.0, black_box(&p), &config))
    });
    group.finish();
}

fn fleet_10k(c: &mut Criterion) {
    let devices = fleet(10_000, 24);
    let p = prices(96, 96, 3);
    let mut group = c.benchmark_group("fleet_10000_devices_24_groups");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for backend in [LpBackend::Microlp, LpBackend::Clarabel] {
        let config = PlanConfig {
            period_s: 900,
            terminal: TerminalSoc::Free,
            backend,
        };
        group.bench_function(format!("plan+allocate/{}", backend.name()), |b| {
            b.iter(|| {
                let plan = plan_fleet(&devices, black_box(&p), &config).expect("plan");
                let commitment = Commitment {
                    period_s: 900,
                    net_w: plan.net_w,
                };
                allocate(&devices, &commitment).expect("allocate")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lp_96, lp_8760, fleet_10k);
criterion_main!(benches);
