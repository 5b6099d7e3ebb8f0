//! Scenario parse errors name the file, the line and the field, for each kind of
//! mistake: unknown field, missing field, wrong type, bad value.

use voltex_sim::scenario::{Scenario, ScenarioError};

const GOOD: &str = r#"name = "t"
seed = 1
interval_minutes = 15

[market]
data = "x.csv"
start_date = "2017-01-02"
days = 2

[strategy]
kind = "perfect_foresight"

[[fleet]]
name = "a"
count = 3
capacity_wh = 10000
max_charge_w = 5000
max_discharge_w = 5000
soc_min_wh = 0
soc_max_wh = 10000
charge_efficiency = 0.95
discharge_efficiency = 0.95
standing_loss_per_hour = 0.0
wear_cost_eur_per_mwh = "1.5"
initial_soc_wh = 5000
"#;

fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    Scenario::parse("scenarios/t.toml", text)
}

#[test]
fn the_template_parses() {
    let scenario = parse(GOOD).expect("valid scenario");
    assert_eq!(scenario.n_devices(), 3);
    assert_eq!(scenario.interval_s(), 900);
}

#[test]
fn unknown_field_is_named_with_its_line() {
    let text = GOOD.replace("count = 3", "count = 3\ncapacity_kwh = 10");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.field(), Some("capacity_kwh"), "{err}");
    assert_eq!(err.line(), 16, "{err}");
    assert!(err.to_string().starts_with("scenarios/t.toml:16:"), "{err}");
}

#[test]
fn missing_field_is_named() {
    let text = GOOD.replace("seed = 1\n", "");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.field(), Some("seed"), "{err}");
    assert!(err.to_string().contains("scenarios/t.toml:1:"), "{err}");
}

#[test]
fn wrong_type_points_at_the_value() {
    let text = GOOD.replace("count = 3", "count = \"three\"");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.line(), 15, "{err}");
    assert!(err.to_string().contains("string"), "{err}");
}

#[test]
fn bad_values_are_reported_at_their_line_with_the_field() {
    let cases = [
        (
            "charge_efficiency = 0.95",
            "charge_efficiency = 1.5",
            "charge_efficiency",
            21,
        ),
        (
            "initial_soc_wh = 5000",
            "initial_soc_wh = 50000",
            "initial_soc_wh",
            25,
        ),
        (
            "interval_minutes = 15",
            "interval_minutes = 7",
            "interval_minutes",
            3,
        ),
        (
            "start_date = \"2017-01-02\"",
            "start_date = \"2017-13-02\"",
            "start_date",
            7,
        ),
        ("count = 3", "count = 0", "count", 15),
    ];
    for (from, to, field, line) in cases {
        let err = parse(&GOOD.replace(from, to)).unwrap_err();
        assert_eq!(err.field(), Some(field), "{err}");
        assert_eq!(err.line(), line, "{err}");
    }
}

#[test]
fn a_zero_signature_sample_is_refused_at_its_line() {
    let network = "\n[network]\nlatency_ms_median = 1.0\nlatency_ms_p99 = 1.0\nloss = 0.0\n\
                   duplicate = 0.0\nretry_s = 60\nmax_retries = 1\n";
    let good = format!("{GOOD}{network}verify_signatures_one_in = 100\n");
    let scenario = parse(&good).expect("1 in 100 is fine");
    let one_in = scenario
        .network
        .verify_signatures_one_in
        .map(|n| *n.get_ref());
    assert_eq!(one_in, Some(100));
    let bad = format!("{GOOD}{network}verify_signatures_one_in = 0\n");
    let err = parse(&bad).unwrap_err();
    assert_eq!(err.field(), Some("verify_signatures_one_in"), "{err}");
    assert_eq!(err.line(), bad.lines().count(), "{err}");
}

#[test]
fn a_risk_limit_below_one_watt_is_refused_at_its_line() {
    let with_limit = |mw: &str| {
        GOOD.replace(
            "kind = \"perfect_foresight\"",
            &format!("kind = \"perfect_foresight\"\nmax_position_mw = {mw}"),
        )
    };
    let scenario = parse(&with_limit("\"2.5\"")).expect("2.5 MW is fine");
    assert_eq!(scenario.strategy.max_position_w(), Some(2_500_000));
    assert_eq!(parse(GOOD).expect("valid").strategy.max_position_w(), None);
    for bad in ["\"0\"", "\"-1\"", "\"0.0000001\""] {
        let err = parse(&with_limit(bad)).unwrap_err();
        assert_eq!(err.field(), Some("max_position_mw"), "{bad}: {err}");
        assert_eq!(err.line(), 12, "{bad}: {err}");
    }
    // Not a decimal string: a type error at the value.
    let err = parse(&with_limit("\"lots\"")).unwrap_err();
    assert_eq!(err.line(), 12, "{err}");
}

#[test]
fn alternatives_need_family_bids_and_fit_one_exclusive_group() {
    let with = |strategy: &str| {
        GOOD.replace(
            "kind = \"perfect_foresight\"",
            &format!("kind = \"perfect_foresight\"\n{strategy}"),
        )
    };
    let scenario = parse(&with("bidding = \"family\"\nalternatives = 4")).expect("valid");
    assert_eq!(scenario.strategy.alternatives(), 4);
    assert_eq!(
        parse(&with("bidding = \"family\""))
            .expect("valid")
            .strategy
            .alternatives(),
        1
    );
    // `alternatives` is on line 13, after `bidding` on line 12.
    for (strategy, message) in [
        (
            "bidding = \"auction\"\nalternatives = 2",
            "needs bidding = \"family\"",
        ),
        ("bidding = \"family\"\nalternatives = 0", "must be 1 to 24"),
        ("bidding = \"family\"\nalternatives = 25", "must be 1 to 24"),
    ] {
        let err = parse(&with(strategy)).unwrap_err();
        assert_eq!(err.field(), Some("alternatives"), "{strategy}: {err}");
        assert_eq!(err.line(), 13, "{strategy}: {err}");
        assert!(err.to_string().contains(message), "{strategy}: {err}");
    }
    // Without a bidding line the default (price-taker) is meant: refused at line 12.
    let err = parse(&with("alternatives = 2")).unwrap_err();
    assert_eq!(
        (err.field(), err.line()),
        (Some("alternatives"), 12),
        "{err}"
    );
    // A negative count is a type error at its value.
    let err = parse(&with("bidding = \"family\"\nalternatives = -1")).unwrap_err();
    assert_eq!(err.line(), 13, "{err}");
    // An unknown bidding style is named.
    let err = parse(&with("bidding = \"blocks\"")).unwrap_err();
    assert_eq!(err.line(), 12, "{err}");
}

#[test]
fn bad_intraday_terms_are_refused_at_their_line() {
    // `days = 2` is line 8; the intraday fields go right after it.
    let with = |extra: &str| GOOD.replace("days = 2\n", &format!("days = 2\n{extra}"));
    let scenario = parse(&with(
        "intraday_spread_eur_per_mwh = \"1\"\nintraday_depth_mw = \"2.5\"\n",
    ))
    .expect("valid intraday terms");
    let config = scenario
        .market
        .intraday()
        .expect("valid")
        .expect("a market");
    assert_eq!(config.depth.0, 25, "2.5 MW in 0.1 MW lots");
    let cases = [
        (
            "intraday_spread_eur_per_mwh = \"-1\"\n",
            "intraday_spread_eur_per_mwh",
            9,
        ),
        (
            "intraday_spread_eur_per_mwh = \"0.01\"\n",
            "intraday_spread_eur_per_mwh",
            9,
        ),
        (
            "intraday_spread_eur_per_mwh = \"1\"\nintraday_depth_mw = \"0.05\"\n",
            "intraday_depth_mw",
            10,
        ),
        (
            "intraday_spread_eur_per_mwh = \"1\"\nintraday_depth_mw = \"0\"\n",
            "intraday_depth_mw",
            10,
        ),
        ("intraday_depth_mw = \"1\"\n", "intraday_depth_mw", 9),
    ];
    for (extra, field, line) in cases {
        let err = parse(&with(extra)).unwrap_err();
        assert_eq!(err.field(), Some(field), "{extra}: {err}");
        assert_eq!(err.line(), line, "{extra}: {err}");
    }
}

#[test]
fn fault_kind_specific_fields_are_required() {
    let text = format!(
        "{GOOD}\n[[faults]]\nkind = \"stuck\"\ngroup = \"a\"\nfraction = 0.5\n\
         start_hour = 0\nhours = 1\n"
    );
    let err = parse(&text).unwrap_err();
    assert_eq!(err.field(), Some("setpoint_w"), "{err}");
    let text = text.replace("group = \"a\"", "group = \"b\"");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.field(), Some("group"), "{err}");
    assert_eq!(err.line(), 29, "{err}");
}

#[test]
fn shipped_scenarios_parse() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("scenarios/ exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).expect("readable");
            if let Err(err) = Scenario::parse(&path.display().to_string(), &text) {
                panic!("{err}");
            }
            n += 1;
        }
    }
    assert!(
        n >= 4,
        "expected at least the four shipped scenarios, found {n}"
    );
}
