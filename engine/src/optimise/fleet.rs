//! Fleet mode: batteries grouped by identical parameters and planned as aggregated units.
//!
//! Ten thousand batteries of twenty kinds are twenty LPs, not ten thousand: every group of
//! devices with bit-identical [`BatterySpec`]s becomes one aggregated unit
//! ([`BatterySpec::scaled`]) whose start SoC is the sum of its members' (each clamped into
//! its own limits). The losses are linear, so the aggregate's feasible set is exactly the
//! sum of its members' when they move in proportion; [`crate::commit`] splits the result
//! back into device schedules and reports any shortfall.
//!
//! # Invariants
//! - Groups are listed in order of their first member; members in device order. Grouping
//!   never iterates a hash map, so the result is deterministic.
//! - Every device belongs to exactly one group.
//! - Under [`plan_fleet_within`] the groups' power limits add up to at most the fleet's
//!   limit either way, so the summed plan never exceeds it in any period.

use std::collections::HashMap;

use voltex_market::battery::BatterySpec;

use super::{OptimiseError, Plan, PlanConfig, TerminalSoc, plan_battery};

/// One device of a fleet as the planner sees it: its spec and measured state of charge.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetDevice {
    /// The device's parameters.
    pub spec: BatterySpec,
    /// Measured state of charge, Wh.
    pub soc_wh: i64,
}

/// Devices with identical parameters, planned as one unit.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetGroup {
    /// The members' common spec.
    pub device_spec: BatterySpec,
    /// Indices of the members in the device slice, ascending.
    pub members: Vec<usize>,
    /// The aggregated unit: `device_spec` scaled by the member count.
    pub aggregate: BatterySpec,
    /// Sum of the members' start SoC, each clamped into its limits, Wh.
    pub start_soc_wh: f64,
}

/// Bit-exact identity of a spec (f64 fields compared by their bits).
type SpecKey = (
    i64,
    i64,
    i64,
    i64,
    i64,
    u64,
    u64,
    u64,
    rust_decimal::Decimal,
);

fn key(spec: &BatterySpec) -> SpecKey {
    (
        spec.capacity_wh,
        spec.max_charge_w,
        spec.max_discharge_w,
        spec.soc_min_wh,
        spec.soc_max_wh,
        spec.charge_efficiency.to_bits(),
        spec.discharge_efficiency.to_bits(),
        spec.standing_loss_per_hour.to_bits(),
        spec.wear_cost_eur_per_mwh.normalize(),
    )
}

/// Groups devices by identical spec (see the module doc for the order).
pub fn group_devices(devices: &[FleetDevice]) -> Vec<FleetGroup> {
    let mut index: HashMap<SpecKey, usize> = HashMap::new();
    let mut groups: Vec<FleetGroup> = Vec::new();
    for (device_idx, device) in devices.iter().enumerate() {
        let group_idx = *index.entry(key(&device.spec)).or_insert_with(|| {
            groups.push(FleetGroup {
                device_spec: device.spec.clone(),
                members: Vec::new(),
                aggregate: device.spec.clone(),
                start_soc_wh: 0.0,
            });
            groups.len() - 1
        });
        let group = &mut groups[group_idx];
        group.members.push(device_idx);
        group.start_soc_wh += device.spec.clamp_soc_wh(device.soc_wh as f64);
    }
    for group in &mut groups {
        group.aggregate = group.device_spec.scaled(group.members.len() as i64);
    }
    groups
}

/// Plans of every group of a fleet and their sum.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetPlan {
    /// The groups, as [`group_devices`] returns them.
    pub groups: Vec<FleetGroup>,
    /// One plan per group (same order).
    pub plans: Vec<Plan>,
    /// Fleet net power per period, W (positive = sell): the sum of the group plans.
    pub net_w: Vec<i64>,
}

/// Plans a fleet: one LP per group of identical devices. A terminal
/// [`TerminalSoc::AtLeastWh`] is read per device and scaled by each group's size.
///
/// # Errors
/// The first group's [`OptimiseError`], if any.
pub fn plan_fleet(
    devices: &[FleetDevice],
    prices: &[f64],
    config: &PlanConfig,
) -> Result<FleetPlan, OptimiseError> {
    plan_groups(group_devices(devices), prices, config)
}

/// Plans a fleet whose net power may not exceed `net_max_w` either way in any period (a
/// position limit, or a grid connection): each group's aggregated charge and discharge
/// limits are capped at its share of `net_max_w`, in proportion to its own limit
/// (rounded down, so the shares add up to at most `net_max_w`), and the LPs plan within
/// those. The returned groups carry the capped aggregates, so bids built from them stay
/// within the limit too. A `net_max_w` of zero or less plans no trading.
///
/// Planning within the limit, rather than trimming an unconstrained plan afterwards,
/// lets each LP re-plan its round trips: it charges over more hours at the capped power
/// instead of losing the energy it would have bought in a few.
///
/// # Errors
/// As [`plan_fleet`].
pub fn plan_fleet_within(
    devices: &[FleetDevice],
    prices: &[f64],
    config: &PlanConfig,
    net_max_w: i64,
) -> Result<FleetPlan, OptimiseError> {
    let mut groups = group_devices(devices);
    let net_max_w = net_max_w.max(0);
    let charge_total_w: i64 = groups.iter().map(|g| g.aggregate.max_charge_w).sum();
    let discharge_total_w: i64 = groups.iter().map(|g| g.aggregate.max_discharge_w).sum();
    for group in &mut groups {
        let aggregate = &mut group.aggregate;
        aggregate.max_charge_w =
            share_of_limit_w(aggregate.max_charge_w, charge_total_w, net_max_w);
        aggregate.max_discharge_w =
            share_of_limit_w(aggregate.max_discharge_w, discharge_total_w, net_max_w);
    }
    let sum = |power: fn(&FleetGroup) -> i64| groups.iter().map(power).sum::<i64>();
    debug_assert!(
        sum(|g| g.aggregate.max_charge_w) <= net_max_w
            && sum(|g| g.aggregate.max_discharge_w) <= net_max_w,
        "the groups' shares add up to at most the fleet's limit"
    );
    plan_groups(groups, prices, config)
}

/// A member's share of a limit `net_max_w` on the sum of members' powers, where the
/// member's own power is `own_w` and all members' together `total_w`: `own_w` when the
/// total fits the limit, otherwise `net_max_w × own_w / total_w` rounded down (so the
/// shares of members whose powers add up to `total_w` add up to at most `net_max_w`).
/// Never more than `own_w`, never negative for non-negative inputs.
pub fn share_of_limit_w(own_w: i64, total_w: i64, net_max_w: i64) -> i64 {
    let net_max_w = net_max_w.max(0);
    if total_w <= net_max_w {
        return own_w;
    }
    // Widened to i128: the product of two fleet-sized powers can pass i64.
    let share = i128::from(net_max_w) * i128::from(own_w) / i128::from(total_w);
    i64::try_from(share).unwrap_or(own_w).min(own_w)
}

fn plan_groups(
    groups: Vec<FleetGroup>,
    prices: &[f64],
    config: &PlanConfig,
) -> Result<FleetPlan, OptimiseError> {
    let mut plans = Vec::with_capacity(groups.len());
    let mut net_w = vec![0_i64; prices.len()];
    for group in &groups {
        let mut group_config = *config;
        if let TerminalSoc::AtLeastWh(per_device) = config.terminal {
            group_config.terminal = TerminalSoc::AtLeastWh(per_device * group.members.len() as f64);
        }
        let plan = plan_battery(&group.aggregate, group.start_soc_wh, prices, &group_config)?;
        for (total, x) in net_w.iter_mut().zip(&plan.net_w) {
            *total += x;
        }
        plans.push(plan);
    }
    Ok(FleetPlan {
        groups,
        plans,
        net_w,
    })
}
