//! Execution and settlement of one battery's accepted position, in exact money.
//!
//! Accepted per-period quantities (from independent stepwise curves, or a fixed rule)
//! may be infeasible for the SoC path when real prices differ from the forecast. The
//! battery then delivers what its physics allows ([`BatterySpec::feasible_power_w`]) and
//! the difference is settled as imbalance: bought back (or sold back) at the period's
//! price plus an optional penalty per MWh. With a zero penalty this equals settling only
//! the feasible energy at the market price.
//!
//! # Invariants
//! - Money is `rust_decimal::Decimal`, never f64: energy per period is `W × period_s /
//!   3600` Wh, exact for aligned periods (900, 1800, 3600 s), times the exact price.
//! - `profit = market cash + imbalance cash − wear`; delivered power never breaks the
//!   device's power or SoC limits.

use rust_decimal::Decimal;
use voltex_market::battery::BatterySpec;

/// Settings of settlement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SettleConfig {
    /// Delivery period length, seconds.
    pub period_s: i64,
    /// Extra cost per MWh of imbalance (undelivered or over-delivered energy), EUR/MWh.
    pub imbalance_penalty_eur_per_mwh: Decimal,
}

/// The outcome of executing and settling one battery over a horizon.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Settlement {
    /// Net power actually delivered per period, W (positive = discharge).
    pub delivered_w: Vec<i64>,
    /// Cash from the market for the accepted position at the period prices, EUR.
    pub market_eur: Decimal,
    /// Cash for imbalance (accepted minus delivered, at price plus penalty), EUR.
    pub imbalance_eur: Decimal,
    /// Wear cost of the delivered throughput, EUR.
    pub wear_eur: Decimal,
    /// `market_eur + imbalance_eur − wear_eur`, EUR.
    pub profit_eur: Decimal,
    /// Energy delivered to the grid (discharge), MWh.
    pub discharged_mwh: Decimal,
    /// Energy drawn from the grid (charge), MWh.
    pub charged_mwh: Decimal,
    /// Absolute imbalance energy, MWh.
    pub imbalance_mwh: Decimal,
    /// SoC at the end, Wh.
    pub end_soc_wh: f64,
}

/// Why a settlement could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    /// Positions and prices differ in length.
    #[error("{positions} positions but {prices} prices")]
    LengthMismatch {
        /// Number of positions.
        positions: usize,
        /// Number of prices.
        prices: usize,
    },
    /// The period length is not a positive divisor-friendly value (900, 1800, 3600 s …).
    #[error("period_s {0} must be positive and divide 3600 or be a multiple of it")]
    BadPeriod(i64),
}

/// Energy in MWh of `power_w` held for `period_s`, exact.
pub fn energy_mwh(power_w: i64, period_s: i64) -> Decimal {
    Decimal::from(i128::from(power_w) * i128::from(period_s)) / Decimal::from(3_600_000_000_i64)
}

/// Executes `accepted_w` (net W per period, positive = sell) on a battery starting at
/// `start_soc_wh` and settles it at `prices` (EUR/MWh, exact).
///
/// # Errors
/// [`SettleError`] on a length mismatch or an unusable period length.
pub fn execute_and_settle(
    spec: &BatterySpec,
    start_soc_wh: f64,
    accepted_w: &[i64],
    prices: &[Decimal],
    config: &SettleConfig,
) -> Result<Settlement, SettleError> {
    if accepted_w.len() != prices.len() {
        return Err(SettleError::LengthMismatch {
            positions: accepted_w.len(),
            prices: prices.len(),
        });
    }
    let period_s = config.period_s;
    if period_s <= 0 || (3600 % period_s != 0 && period_s % 3600 != 0) {
        return Err(SettleError::BadPeriod(period_s));
    }
    let mut out = Settlement {
        delivered_w: Vec::with_capacity(prices.len()),
        ..Default::default()
    };
    let mut soc = start_soc_wh;
    for (&accepted, &price) in accepted_w.iter().zip(prices) {
        let delivered = spec.feasible_power_w(soc, accepted, period_s);
        soc = super::step(spec, soc, delivered, period_s);
        out.delivered_w.push(delivered);
        let accepted_mwh = energy_mwh(accepted, period_s);
        let delivered_mwh = energy_mwh(delivered, period_s);
        let short_mwh = accepted_mwh - delivered_mwh;
        out.market_eur += price * accepted_mwh;
        out.imbalance_eur -= price * short_mwh;
        out.imbalance_eur -= config.imbalance_penalty_eur_per_mwh * short_mwh.abs();
        out.imbalance_mwh += short_mwh.abs();
        if delivered >= 0 {
            out.discharged_mwh += delivered_mwh;
        } else {
            out.charged_mwh -= delivered_mwh;
        }
        out.wear_eur += spec.wear_cost_eur_per_mwh * delivered_mwh.abs();
    }
    out.profit_eur = out.market_eur + out.imbalance_eur - out.wear_eur;
    out.end_soc_wh = soc;
    Ok(out)
}
