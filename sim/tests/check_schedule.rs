//! `check-schedule`: limit violations per device-interval, expected P&L against a hand
//! computation, and typed errors for bad files.
//!
//! Market: hourly 50.00 EUR/MWh, except -10.00 at 03:00 and 100.00 at 18:00 (one day).
//! Device `b1`: 1 MWh, 1 MW both ways, efficiencies 1, no standing loss, wear 2 EUR/MWh.

use rust_decimal::Decimal;
use voltex_dispatch::{
    DeviceId, Fallback, Schedule, ScheduleId, SchedulePeriod, ScheduleSigner, SignedSchedule,
};
use voltex_market::UtcNanos;
use voltex_market::series::{PriceSeries, SeriesLayout};
use voltex_sim::check::{
    CheckError, ViolationKind, check_schedules, parse_fleet_state, parse_schedule_set,
};

const HOUR_NS: i64 = 3_600_000_000_000;
/// 2020-01-01T00:00:00Z.
const T0: i64 = 1_577_836_800 * 1_000_000_000;

fn series() -> PriceSeries {
    let mut text = String::from(",Price\n");
    for hour in 0..24 {
        let price = match hour {
            3 => "-10.00",
            18 => "100.00",
            _ => "50.00",
        };
        text.push_str(&format!("2020-01-01 {hour:02}:00:00,{price}\n"));
    }
    PriceSeries::parse_csv("p.csv", &text, &SeriesLayout::default()).expect("valid")
}

fn fleet(soc_wh: i64) -> String {
    format!(
        r#"{{"imbalance_penalty_eur_per_mwh": "5", "devices": [{{
            "device": "b1", "soc_wh": {soc_wh}, "capacity_wh": 1000000,
            "max_charge_w": 1000000, "max_discharge_w": 1000000,
            "soc_min_wh": 0, "soc_max_wh": 1000000,
            "charge_efficiency": 1.0, "discharge_efficiency": 1.0,
            "standing_loss_per_hour": 0.0, "wear_cost_eur_per_mwh": "2"}}]}}"#
    )
}

/// Charge `charge_w` at 03:00, discharge `discharge_w` at 18:00, idle otherwise.
fn schedule(charge_w: i64, discharge_w: i64) -> Schedule {
    let period = |hour: u32, target_w| SchedulePeriod {
        offset_s: hour * 3_600,
        target_w,
        ramp_s: 0,
    };
    Schedule {
        device: DeviceId::new("b1").expect("valid"),
        schedule_id: ScheduleId(1),
        version: 1,
        issued_at: UtcNanos(T0 - 12 * HOUR_NS),
        valid_from: UtcNanos(T0),
        valid_until: UtcNanos(T0 + 24 * HOUR_NS),
        randomize_start_s: 0,
        periods: vec![
            period(0, 0),
            period(3, -charge_w),
            period(4, 0),
            period(18, discharge_w),
            period(19, 0),
        ]
        .into(),
        fallback: Fallback::Idle,
    }
}

fn signed_json(schedules: Vec<Schedule>) -> String {
    let signer = ScheduleSigner::from_seed(&[3; 32]);
    let signed: Vec<SignedSchedule> = schedules
        .into_iter()
        .map(|s| signer.sign(s).expect("encodable"))
        .collect();
    serde_json::to_string(&signed).expect("serialisable")
}

fn eur(s: &str) -> Decimal {
    s.parse().expect("decimal")
}

#[test]
fn a_feasible_schedule_has_no_violation_and_the_hand_computed_pnl() {
    let set = parse_schedule_set("s.json", &signed_json(vec![schedule(1_000_000, 1_000_000)]))
        .expect("set");
    let fleet = parse_fleet_state("f.json", &fleet(0)).expect("fleet");
    let verifier = ScheduleSigner::from_seed(&[3; 32]).verifier();
    let report = check_schedules(&set, &fleet, &series(), 3_600, Some(&verifier)).expect("check");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(
        report.market_eur,
        eur("110"),
        "+10 for charging at -10, +100"
    );
    assert_eq!(report.imbalance_eur, eur("0"));
    assert_eq!(report.wear_eur, eur("4"), "2 MWh x 2 EUR");
    assert_eq!(report.profit_eur, eur("106"));
    assert_eq!(report.n_device_intervals, 24);
}

#[test]
fn discharging_an_empty_battery_is_a_soc_violation_with_its_imbalance() {
    // No charge at 03:00: the 18:00 discharge finds the battery empty.
    let set =
        parse_schedule_set("s.json", &signed_json(vec![schedule(0, 1_000_000)])).expect("set");
    let fleet = parse_fleet_state("f.json", &fleet(0)).expect("fleet");
    let report = check_schedules(&set, &fleet, &series(), 3_600, None).expect("check");
    assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
    let v = &report.violations[0];
    assert_eq!(v.kind, ViolationKind::SocLimit);
    assert_eq!(v.at, UtcNanos(T0 + 18 * HOUR_NS));
    assert_eq!((v.target_w, v.feasible_w), (1_000_000, 0));
    // Scheduled: sell 1 MWh at 100. Delivered: nothing; imbalance -1 MWh at 100 - 5.
    assert_eq!(report.market_eur, eur("100"));
    assert_eq!(report.imbalance_eur, eur("-105"));
    assert_eq!(report.imbalance_abs_mwh, eur("1"));
    assert_eq!(report.profit_eur, eur("-5"));
}

#[test]
fn a_target_above_the_power_limit_is_reported_per_interval() {
    let set = parse_schedule_set(
        "s.json",
        &serde_json::to_string(&vec![schedule(1_500_000, 0)]).expect("json"),
    )
    .expect("unsigned schedules are accepted too");
    let fleet = parse_fleet_state("f.json", &fleet(0)).expect("fleet");
    let report = check_schedules(&set, &fleet, &series(), 900, None).expect("check");
    let power: Vec<_> = report
        .violations
        .iter()
        .filter(|v| v.kind == ViolationKind::PowerLimit)
        .collect();
    assert_eq!(power.len(), 4, "four quarter hours of 03:00-04:00");
    assert!(power.iter().all(|v| v.feasible_w == -1_000_000));
}

#[test]
fn a_forged_signature_is_reported_when_a_key_is_given() {
    let mut json = signed_json(vec![schedule(1_000_000, 1_000_000)]);
    json = json.replacen("\"version\":1", "\"version\":2", 1);
    let set = parse_schedule_set("s.json", &json).expect("set");
    let fleet = parse_fleet_state("f.json", &fleet(0)).expect("fleet");
    let verifier = ScheduleSigner::from_seed(&[3; 32]).verifier();
    let report = check_schedules(&set, &fleet, &series(), 3_600, Some(&verifier)).expect("check");
    assert_eq!(report.violations.len(), 1);
    assert_eq!(report.violations[0].kind, ViolationKind::InvalidSignature);
    assert_eq!(
        report.market_eur,
        eur("0"),
        "a rejected schedule does not run"
    );
}

#[test]
fn bad_files_give_typed_errors() {
    let fleet_ok = parse_fleet_state("f.json", &fleet(0)).expect("fleet");
    assert!(matches!(
        parse_schedule_set("s.json", "{not json"),
        Err(CheckError::ScheduleSet { .. })
    ));
    assert!(matches!(
        parse_schedule_set("s.json", "[]"),
        Err(CheckError::Empty)
    ));
    assert!(matches!(
        parse_fleet_state("f.json", r#"{"devices": [], "colour": 1}"#),
        Err(CheckError::FleetState { .. })
    ));
    assert!(matches!(
        parse_fleet_state("f.json", &fleet(2_000_000)),
        Err(CheckError::Battery { .. })
    ));
    let mut other = schedule(0, 0);
    other.device = DeviceId::new("b2").expect("valid");
    let set = parse_schedule_set("s.json", &signed_json(vec![other])).expect("set");
    assert!(matches!(
        check_schedules(&set, &fleet_ok, &series(), 3_600, None),
        Err(CheckError::UnknownDevice { .. })
    ));
    let set = parse_schedule_set("s.json", &signed_json(vec![schedule(0, 0)])).expect("set");
    assert!(matches!(
        check_schedules(&set, &fleet_ok, &series(), 7, None),
        Err(CheckError::Interval(7))
    ));
    let mut late = schedule(0, 0);
    late.valid_until = UtcNanos(T0 + 48 * HOUR_NS);
    let set = parse_schedule_set("s.json", &signed_json(vec![late])).expect("set");
    assert!(matches!(
        check_schedules(&set, &fleet_ok, &series(), 3_600, None),
        Err(CheckError::NoPrice(_))
    ));
}
