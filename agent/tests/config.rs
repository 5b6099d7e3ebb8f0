//! Config file: the shipped example parses, and broken configs are refused with a reason.

mod common;

use common::*;
use voltex_agent::config::{AgentConfig, DriverKind, TransportKind};
use voltex_dispatch::Fallback;

const EXAMPLE: &str = include_str!("../agent.example.toml");

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn example_config_parses_into_a_core_config() {
    let config = AgentConfig::from_toml(EXAMPLE).expect("example parses");
    assert_eq!(config.device_id.as_str(), "bat-0001");
    assert_eq!(config.platform.transport, TransportKind::Mqtt);
    assert_eq!(config.driver.kind, DriverKind::Simulated);
    assert_eq!(config.timing.telemetry_interval_s, 10);
    let core = config.core_config().expect("core config");
    assert_eq!(core.profile.acceptance.limits.max_charge_w, 5_000);
    assert_eq!(core.seed, config.seed());
    assert_eq!(
        config.seed(),
        AgentConfig::from_toml(EXAMPLE).expect("again").seed()
    );
    assert_eq!(config.battery_spec().expect("spec").soc_max_wh, 9_500);
}

#[test]
fn broken_configs_are_refused() {
    let key = hex(&signer().verifier().public_bytes());
    let base = EXAMPLE.replace(
        "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c",
        &key,
    );
    assert!(AgentConfig::from_toml(&base).is_ok());
    let cases = [
        (
            "fallback_beyond_limits",
            base.replace(
                "fallback = \"Idle\"",
                "fallback = { Hold = { target_w = 9000 } }",
            ),
        ),
        (
            "gpio_without_pins",
            base.replace("kind = \"simulated\"", "kind = \"gpio\""),
        ),
        ("short_key", base.replace(&key, "abcd")),
        (
            "negative_limit",
            base.replace("max_charge_w = 5000", "max_charge_w = -1"),
        ),
        (
            "unknown_field",
            base.replace("[limits]", "[limits]\nmax_power = 3"),
        ),
        ("bad_device_id", base.replace("bat-0001", "bat/0001")),
        ("zero_tick", base.replace("tick_ms = 1000", "tick_ms = 0")),
    ];
    for (name, text) in cases {
        assert!(AgentConfig::from_toml(&text).is_err(), "{name} accepted");
    }
    let hold = base.replace(
        "fallback = \"Idle\"",
        "fallback = { Hold = { target_w = -300 } }",
    );
    let config = AgentConfig::from_toml(&hold).expect("hold parses");
    assert_eq!(config.fallback, Fallback::Hold { target_w: -300 });
}
