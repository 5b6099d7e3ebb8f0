//! `report.html`: one self-contained page (inline SVG, no scripts, no external files)
//! with the P&L table and charts per interval: price, committed vs delivered fleet
//! power, the fleet's SoC band (lowest device, fleet mean, highest device), cumulative
//! profit, and imbalance (delivered − committed energy). Long runs are thinned to at
//! most [`POINTS_MAX`] points per chart (every k-th interval; the cumulative profit is
//! sampled, not summed, so its end point is exact); the CSV keeps every interval.

use std::fmt::Write;

use rust_decimal::prelude::ToPrimitive;

use crate::run::Summary;
use crate::world::IntervalRow;

/// Most points drawn per chart line.
pub const POINTS_MAX: usize = 2_000;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 220.0;

fn polyline(values: &[f64], lo: f64, hi: f64, colour: &str) -> String {
    let span = if hi > lo { hi - lo } else { 1.0 };
    let n = values.len().max(2) - 1;
    let mut points = String::new();
    for (i, v) in values.iter().enumerate() {
        let x = i as f64 / n as f64 * WIDTH;
        let y = HEIGHT - (v - lo) / span * HEIGHT;
        let _ = write!(points, "{x:.1},{y:.1} ");
    }
    format!("<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1\" points=\"{points}\"/>")
}

/// A filled band between `lower` and `upper` (same length).
fn band(lower: &[f64], upper: &[f64], lo: f64, hi: f64, colour: &str) -> String {
    let span = if hi > lo { hi - lo } else { 1.0 };
    let n = lower.len().max(2) - 1;
    let point = |i: usize, v: f64| {
        let x = i as f64 / n as f64 * WIDTH;
        let y = HEIGHT - (v - lo) / span * HEIGHT;
        format!("{x:.1},{y:.1} ")
    };
    let mut points = String::new();
    for (i, v) in upper.iter().enumerate() {
        points.push_str(&point(i, *v));
    }
    for (i, v) in lower.iter().enumerate().rev() {
        points.push_str(&point(i, *v));
    }
    format!(
        "<polygon fill=\"{colour}\" fill-opacity=\"0.25\" stroke=\"none\" points=\"{points}\"/>"
    )
}

/// Everything the report draws besides the summary and the rows.
pub struct Series<'a> {
    /// Length of an interval, s.
    pub interval_s: i64,
    /// Total capacity of the fleet, Wh (for the mean SoC in %).
    pub fleet_capacity_wh: f64,
    /// Cumulative profit after each interval, EUR (one per row).
    pub cumulative_profit_eur: &'a [f64],
}

fn chart(title: &str, lines: &[(&str, &str, Vec<f64>)]) -> String {
    chart_with_band(title, lines, None)
}

/// A chart of `lines`, optionally over a shaded band `(name, colour, lower, upper)`.
fn chart_with_band(
    title: &str,
    lines: &[(&str, &str, Vec<f64>)],
    shaded: Option<(&str, &str, &[f64], &[f64])>,
) -> String {
    let band_values = shaded
        .iter()
        .flat_map(|(_, _, lower, upper)| lower.iter().chain(upper.iter()).copied());
    let all = lines
        .iter()
        .flat_map(|(_, _, v)| v.iter().copied())
        .chain(band_values);
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let mut svg = format!(
        "<h2>{title}</h2><p class=\"axis\">min {lo:.2} · max {hi:.2}</p>\
         <svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\">\
         <rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#fafafa\" stroke=\"#ccc\"/>"
    );
    if lo < 0.0 && hi > 0.0 {
        let y = HEIGHT - (0.0 - lo) / (hi - lo) * HEIGHT;
        let _ = write!(
            svg,
            "<line x1=\"0\" x2=\"{WIDTH}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#999\"/>"
        );
    }
    if let Some((_, colour, lower, upper)) = shaded {
        svg.push_str(&band(lower, upper, lo, hi, colour));
    }
    for (_, colour, values) in lines {
        svg.push_str(&polyline(values, lo, hi, colour));
    }
    svg.push_str("</svg><p>");
    if let Some((name, colour, _, _)) = shaded {
        let _ = write!(svg, "<span style=\"color:{colour}\">▒ {name}</span> ");
    }
    for (name, colour, _) in lines {
        let _ = write!(svg, "<span style=\"color:{colour}\">■ {name}</span> ");
    }
    svg.push_str("</p>");
    svg
}

/// The report for a finished run.
pub fn report_html(summary: &Summary, rows: &[IntervalRow], series: &Series<'_>) -> String {
    let interval_s = series.interval_s;
    let stride = rows.len().div_ceil(POINTS_MAX).max(1);
    // Every stride-th interval, and always the last one (where the totals are).
    let picked: Vec<usize> = (0..rows.len())
        .step_by(stride)
        .chain(rows.len().checked_sub(1).filter(|last| last % stride != 0))
        .collect();
    let thin: Vec<&IntervalRow> = picked.iter().map(|&k| &rows[k]).collect();
    let price: Vec<f64> = thin
        .iter()
        .map(|r| r.price.to_f64().unwrap_or(0.0))
        .collect();
    let committed: Vec<f64> = thin.iter().map(|r| r.committed_w as f64 / 1e6).collect();
    let delivered: Vec<f64> = thin
        .iter()
        .map(|r| r.delivered_j as f64 / interval_s.max(1) as f64 / 1e6)
        .collect();
    let capacity_wh = series.fleet_capacity_wh.max(1.0);
    let soc_mean: Vec<f64> = thin
        .iter()
        .map(|r| r.fleet_soc_wh / capacity_wh * 100.0)
        .collect();
    let soc_min: Vec<f64> = thin.iter().map(|r| r.soc_min_pct).collect();
    let soc_max: Vec<f64> = thin.iter().map(|r| r.soc_max_pct).collect();
    let profit: Vec<f64> = picked
        .iter()
        .map(|&k| series.cumulative_profit_eur.get(k).copied().unwrap_or(0.0))
        .collect();
    let imbalance: Vec<f64> = thin
        .iter()
        .map(|r| (r.delivered_j - r.committed_w * interval_s) as f64 / 3.6e9)
        .collect();
    let p = &summary.pnl;
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{name}</title><style>\
         body{{font-family:sans-serif;margin:2em}}td{{padding:2px 12px}}\
         .axis{{color:#666;font-size:small}}</style></head><body>\
         <h1>Scenario {name}</h1><p>seed {seed} · strategy {strategy} · bidding {bidding}\
         {limit} · {n} batteries · \
         {k} intervals · device logic: {logic} · result hash <code>{hash}</code></p>\
         <table><tr><td>market</td><td>{m} EUR</td></tr>{intraday}<tr><td>imbalance</td><td>{i} EUR</td>\
         </tr><tr><td>wear</td><td>−{w} EUR</td></tr><tr><td><b>profit</b></td>\
         <td><b>{pr} EUR</b></td></tr></table>",
        name = summary.scenario,
        seed = summary.seed,
        strategy = summary.strategy,
        bidding = summary.bidding,
        limit = summary
            .max_position_mw
            .map_or(String::new(), |mw| format!(" · risk limit {mw} MW")),
        n = summary.n_devices,
        k = summary.n_intervals,
        logic = summary.device_logic,
        hash = summary.result_hash,
        m = p.market_eur,
        intraday = if summary.energy.intraday_closed_mwh > 0.0 || !p.intraday_eur.is_zero() {
            format!(
                "<tr><td>intraday close-out ({:.1} MWh)</td><td>{} EUR</td></tr>",
                summary.energy.intraday_closed_mwh, p.intraday_eur
            )
        } else {
            String::new()
        },
        i = p.imbalance_eur,
        w = p.wear_eur,
        pr = p.profit_eur,
    );
    if stride > 1 {
        let _ = write!(
            html,
            "<p class=\"axis\">charts show every {stride}th interval</p>"
        );
    }
    html.push_str(&chart("Price (EUR/MWh)", &[("price", "#1f77b4", price)]));
    html.push_str(&chart(
        "Fleet power (MW, + = sell)",
        &[
            ("committed", "#2ca02c", committed),
            ("delivered", "#d62728", delivered),
        ],
    ));
    html.push_str(&chart_with_band(
        "Fleet state of charge (% of capacity)",
        &[("fleet mean", "#9467bd", soc_mean)],
        Some((
            "lowest to highest device",
            "#9467bd",
            soc_min.as_slice(),
            soc_max.as_slice(),
        )),
    ));
    html.push_str(&chart(
        "Cumulative profit (EUR, market + imbalance − wear)",
        &[("profit", "#ff7f0e", profit)],
    ));
    html.push_str(&chart(
        "Imbalance per interval (MWh, delivered − committed)",
        &[("imbalance", "#8c564b", imbalance)],
    ));
    let _ = writeln!(
        html,
        "<h2>Counters</h2><pre>{}</pre></body></html>",
        serde_json::to_string_pretty(&summary.counters).unwrap_or_default()
    );
    html
}
