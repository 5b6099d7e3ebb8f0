//! The simulated battery: shared physics keeps the SoC in range, counters integrate
//! the clipped power, and the emergency stop idles it.

use voltex_agent::driver::BatteryDriver;
use voltex_agent::driver::sim::SimulatedBattery;
use voltex_agent::executor::MonoNanos;
use voltex_market::battery::BatterySpec;

const NS: i64 = 1_000_000_000;

fn battery() -> SimulatedBattery {
    let mut spec = BatterySpec::symmetric(3_600, 1_000, 1.0, Default::default());
    spec.soc_min_wh = 100;
    spec.soc_max_wh = 900;
    SimulatedBattery::new(spec, 500).expect("valid spec")
}

#[test]
fn charging_stops_at_soc_max_and_counts_grid_energy() {
    let mut battery = battery();
    battery.apply(-3_600, MonoNanos(0)).expect("apply");
    // 3.6 kW for 5 min would add 300 Wh; room is 400 Wh.
    let reading = battery.read(MonoNanos(300 * NS)).expect("read");
    assert_eq!(
        (reading.soc_wh, reading.power_w, reading.charged_wh),
        (800, -3_600, 300)
    );
    // Another 10 min, in sub-second steps: stops at 900 Wh.
    for step in 1..=1_200 {
        battery
            .read(MonoNanos(300 * NS + step * NS / 2))
            .expect("read");
    }
    let reading = battery.read(MonoNanos(900 * NS)).expect("read");
    assert_eq!(reading.soc_wh, 900);
    assert_eq!(reading.power_w, 0, "clipped to zero at the limit");
    assert_eq!(reading.charged_wh, 400);
}

#[test]
fn emergency_stop_idles_and_discharge_stops_at_soc_min() {
    let mut battery = battery();
    battery.apply(3_600, MonoNanos(0)).expect("apply");
    battery.emergency_stop(MonoNanos(60 * NS)).expect("stop");
    let reading = battery.read(MonoNanos(600 * NS)).expect("read");
    assert_eq!(
        (reading.soc_wh, reading.power_w, reading.discharged_wh),
        (440, 0, 60)
    );
    battery.apply(3_600, MonoNanos(600 * NS)).expect("apply");
    let reading = battery.read(MonoNanos(4 * 3_600 * NS)).expect("read");
    assert_eq!((reading.soc_wh, reading.discharged_wh), (100, 400));
}
