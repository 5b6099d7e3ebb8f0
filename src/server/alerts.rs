//! Alerts: the Prometheus rules shipped in `deploy/prometheus/voltex-rules.yml`,
//! evaluated by the server over its own metrics, for `GET /api/v1/alerts` and the
//! dashboard's Alerts page.
//!
//! The rule file is compiled into the binary, so what the server reports and what a
//! Prometheus loading `deploy/` would fire come from the same text. The evaluator
//! understands the subset of PromQL the file's header documents (aggregations over
//! instant selectors or `rate`/`increase` ranges, one binary operator, a comparison
//! with a number); a rule outside it is an error at start-up, never a silent "ok".
//!
//! Differences from Prometheus, on purpose: `rate`/`increase` use the first and last
//! sample in the range without extrapolation, and a series that first appears inside
//! the range counts as 0 at the earlier samples (the exporter renders a series from
//! its first increment, and this process saw every sample of its own counters).
//!
//! **Architecture Invariant:** [`AlertEngine`] is pure: it reads no clock and does no
//! I/O. The server feeds it the Prometheus exposition text and the time; history is
//! bounded by [`MAX_SNAPSHOTS`] and by the longest range any rule reads.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::server::clock::Clock;

/// The rule file, as shipped in `deploy/`.
pub const RULES_YAML: &str = include_str!("../../deploy/prometheus/voltex-rules.yml");

/// Most metric snapshots kept, whatever the rules' ranges.
pub const MAX_SNAPSHOTS: usize = 512;

/// Why a rule file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AlertRuleError {
    /// Not a Prometheus rule file.
    #[error("the rule file is not a Prometheus rule file: {0}")]
    Yaml(String),
    /// An expression outside the supported PromQL subset.
    #[error("rule {rule}: expression `{expr}`, at byte {at}: {reason}")]
    Expr {
        /// The alert's name.
        rule: String,
        /// The whole expression.
        expr: String,
        /// Byte offset of the problem.
        at: usize,
        /// What is wrong.
        reason: String,
    },
    /// A `for:` or range that is not a Prometheus duration.
    #[error("rule {rule}: `{text}` is not a Prometheus duration (e.g. 30s, 5m, 1h)")]
    Duration {
        /// The alert's name.
        rule: String,
        /// The text.
        text: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    #[allow(dead_code)] // part of the format; the server evaluates on demand
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    interval: Option<String>,
    rules: Vec<RuleDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDef {
    alert: String,
    expr: String,
    #[serde(default, rename = "for")]
    for_duration: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// One parsed alerting rule.
#[derive(Clone, Debug)]
pub struct AlertRule {
    /// The alert's name.
    pub name: String,
    /// The expression text.
    pub expr_text: String,
    expr: Comparison,
    /// How long the condition must hold before the alert fires, s.
    pub for_s: f64,
    /// `severity` label (`unknown` when absent).
    pub severity: String,
    /// `summary` annotation.
    pub summary: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum CmpOp {
    Gt,
    Lt,
    Ge,
    Le,
    Eq,
    Ne,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum BinOp {
    Div,
    Sub,
    Add,
    Mul,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum AggFunc {
    Sum,
    Max,
    Min,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum RangeFunc {
    Rate,
    Increase,
}

#[derive(Clone, Debug)]
enum MatchOp {
    Eq,
    Ne,
    Re(regex::Regex),
    NotRe(regex::Regex),
}

#[derive(Clone, Debug)]
struct Matcher {
    label: String,
    value: String,
    op: MatchOp,
}

#[derive(Clone, Debug)]
struct Selector {
    metric: String,
    matchers: Vec<Matcher>,
}

#[derive(Clone, Debug)]
enum Inner {
    Instant(Selector),
    Range {
        func: RangeFunc,
        selector: Selector,
        range_s: f64,
    },
}

#[derive(Clone, Debug)]
struct Aggregate {
    func: AggFunc,
    inner: Inner,
}

#[derive(Clone, Debug)]
struct Comparison {
    lhs: Aggregate,
    rhs: Option<(BinOp, Aggregate)>,
    op: CmpOp,
    threshold: f64,
}

/// Parses the rule file.
///
/// # Errors
/// [`AlertRuleError`] for a file that is not a rule file, an expression outside the
/// supported subset, or a bad duration.
pub fn parse_rules(yaml: &str) -> Result<Vec<AlertRule>, AlertRuleError> {
    let file: RuleFile =
        serde_saphyr::from_str(yaml).map_err(|error| AlertRuleError::Yaml(error.to_string()))?;
    let mut rules = Vec::new();
    for group in file.groups {
        for def in group.rules {
            let expr = Parser::new(&def.alert, &def.expr).comparison()?;
            let for_s = match &def.for_duration {
                None => 0.0,
                Some(text) => parse_duration_s(text).ok_or_else(|| AlertRuleError::Duration {
                    rule: def.alert.clone(),
                    text: text.clone(),
                })?,
            };
            rules.push(AlertRule {
                severity: def
                    .labels
                    .get("severity")
                    .cloned()
                    .unwrap_or_else(|| "unknown".into()),
                summary: def.annotations.get("summary").cloned().unwrap_or_default(),
                name: def.alert,
                expr_text: def.expr,
                expr,
                for_s,
            });
        }
    }
    Ok(rules)
}

/// A Prometheus duration (`90s`, `5m`, `1h30m`, `0s`) in seconds.
fn parse_duration_s(text: &str) -> Option<f64> {
    let mut total_s = 0.0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit_s, unit_len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else {
            match rest.bytes().next()? {
                b's' => (1.0, 1),
                b'm' => (60.0, 1),
                b'h' => (3_600.0, 1),
                b'd' => (86_400.0, 1),
                b'w' => (604_800.0, 1),
                b'y' => (31_536_000.0, 1),
                _ => return None,
            }
        };
        total_s += number * unit_s;
        rest = &rest[unit_len..];
    }
    Some(total_s)
}

/// Recursive-descent parser of the PromQL subset.
struct Parser<'a> {
    rule: &'a str,
    text: &'a str,
    at: usize,
}

impl<'a> Parser<'a> {
    fn new(rule: &'a str, text: &'a str) -> Parser<'a> {
        Parser { rule, text, at: 0 }
    }

    fn error(&self, reason: impl Into<String>) -> AlertRuleError {
        AlertRuleError::Expr {
            rule: self.rule.to_string(),
            expr: self.text.to_string(),
            at: self.at,
            reason: reason.into(),
        }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.at..]
    }

    fn skip_space(&mut self) {
        let trimmed = self.rest().trim_start();
        self.at = self.text.len() - trimmed.len();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.rest().starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), AlertRuleError> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.error(format!("expected `{token}`")))
        }
    }

    fn identifier(&mut self) -> Result<&'a str, AlertRuleError> {
        self.skip_space();
        let rest = self.rest();
        let len = rest
            .char_indices()
            .find(|&(index, c)| {
                !(c.is_ascii_alphabetic()
                    || c == '_'
                    || c == ':'
                    || (index > 0 && c.is_ascii_digit()))
            })
            .map_or(rest.len(), |(index, _)| index);
        if len == 0 {
            return Err(self.error("expected a name"));
        }
        self.at += len;
        Ok(&rest[..len])
    }

    fn comparison(mut self) -> Result<Comparison, AlertRuleError> {
        let lhs = self.aggregate()?;
        let rhs = [
            ("/", BinOp::Div),
            ("-", BinOp::Sub),
            ("+", BinOp::Add),
            ("*", BinOp::Mul),
        ]
        .into_iter()
        .find(|(token, _)| self.eat(token))
        .map(|(_, op)| self.aggregate().map(|agg| (op, agg)))
        .transpose()?;
        // Two-character operators first, so `>=` is not read as `>`.
        let op = [
            (">=", CmpOp::Ge),
            ("<=", CmpOp::Le),
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            (">", CmpOp::Gt),
            ("<", CmpOp::Lt),
        ]
        .into_iter()
        .find(|(token, _)| self.eat(token))
        .map(|(_, op)| op)
        .ok_or_else(|| self.error("expected a comparison (>, <, >=, <=, ==, !=)"))?;
        self.skip_space();
        let number_len = self
            .rest()
            .find(|c: char| c.is_whitespace())
            .unwrap_or(self.rest().len());
        let threshold: f64 = self.rest()[..number_len]
            .parse()
            .map_err(|_| self.error("expected a number after the comparison"))?;
        if !threshold.is_finite() {
            return Err(self.error("the threshold must be a finite number"));
        }
        self.at += number_len;
        self.skip_space();
        if !self.rest().is_empty() {
            return Err(self.error("unexpected text after the threshold"));
        }
        Ok(Comparison {
            lhs,
            rhs,
            op,
            threshold,
        })
    }

    fn aggregate(&mut self) -> Result<Aggregate, AlertRuleError> {
        let func = match self.identifier()? {
            "sum" => AggFunc::Sum,
            "max" => AggFunc::Max,
            "min" => AggFunc::Min,
            other => {
                return Err(self.error(format!(
                    "`{other}`: expected an aggregation (sum, max, min)"
                )));
            }
        };
        self.expect("(")?;
        let save = self.at;
        let name = self.identifier()?;
        let range_func = match name {
            "rate" => Some(RangeFunc::Rate),
            "increase" => Some(RangeFunc::Increase),
            _ => None,
        };
        let inner = match range_func {
            Some(func) if self.eat("(") => {
                let selector = self.selector()?;
                self.expect("[")?;
                let close = self
                    .rest()
                    .find(']')
                    .ok_or_else(|| self.error("expected `]`"))?;
                let range_text = &self.rest()[..close];
                let range_s = parse_duration_s(range_text)
                    .filter(|&s| s > 0.0)
                    .ok_or_else(|| self.error(format!("`{range_text}` is not a range")))?;
                self.at += close;
                self.expect("]")?;
                self.expect(")")?;
                Inner::Range {
                    func,
                    selector,
                    range_s,
                }
            }
            _ => {
                self.at = save;
                Inner::Instant(self.selector()?)
            }
        };
        self.expect(")")?;
        Ok(Aggregate { func, inner })
    }

    fn selector(&mut self) -> Result<Selector, AlertRuleError> {
        let metric = self.identifier()?.to_string();
        let mut matchers = Vec::new();
        if self.eat("{") {
            while !self.eat("}") {
                let label = self.identifier()?.to_string();
                let op_text = ["=~", "!~", "!=", "="]
                    .into_iter()
                    .find(|token| self.eat(token))
                    .ok_or_else(|| self.error("expected =, !=, =~ or !~"))?;
                self.expect("\"")?;
                let close = self
                    .rest()
                    .find('"')
                    .ok_or_else(|| self.error("unterminated label value"))?;
                let value = self.rest()[..close].to_string();
                self.at += close + 1;
                let anchored = || {
                    regex::Regex::new(&format!("^(?:{value})$"))
                        .map_err(|error| self.error(format!("bad regex: {error}")))
                };
                let op = match op_text {
                    "=" => MatchOp::Eq,
                    "!=" => MatchOp::Ne,
                    "=~" => MatchOp::Re(anchored()?),
                    _ => MatchOp::NotRe(anchored()?),
                };
                matchers.push(Matcher { label, value, op });
                if !self.eat(",") {
                    self.expect("}")?;
                    break;
                }
            }
        }
        Ok(Selector { metric, matchers })
    }
}

/// One series of an exposition.
#[derive(Clone, Debug, PartialEq)]
struct Series {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses Prometheus text exposition (format 0.0.4). Comment lines and lines that
/// do not parse are skipped: the text comes from this process's own exporter, and
/// one odd line must not blind every alert.
fn parse_exposition(text: &str) -> Vec<Series> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(parse_series_line)
        .collect()
}

fn parse_series_line(line: &str) -> Option<Series> {
    let name_len = line.find(['{', ' '])?;
    let name = line[..name_len].to_string();
    let mut rest = &line[name_len..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        rest = after_brace;
        loop {
            rest = rest.trim_start_matches(',');
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=')?;
            let label = rest[..eq].trim().to_string();
            rest = rest[eq + 1..].strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                let (index, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break index,
                    other => value.push(other),
                }
            };
            rest = &rest[end + 1..];
            labels.push((label, value));
        }
    }
    let value_text = rest.split_whitespace().next()?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Series {
        name,
        labels,
        value,
    })
}

impl Selector {
    fn matches(&self, series: &Series) -> bool {
        series.name == self.metric
            && self.matchers.iter().all(|matcher| {
                let value = series
                    .labels
                    .iter()
                    .find(|(label, _)| *label == matcher.label)
                    .map_or("", |(_, value)| value.as_str());
                match &matcher.op {
                    MatchOp::Eq => value == matcher.value,
                    MatchOp::Ne => value != matcher.value,
                    MatchOp::Re(re) => re.is_match(value),
                    MatchOp::NotRe(re) => !re.is_match(value),
                }
            })
    }
}

/// Identity of a series across snapshots.
fn series_key(series: &Series) -> String {
    let mut key = series.name.clone();
    for (label, value) in &series.labels {
        key.push('\u{1f}');
        key.push_str(label);
        key.push('=');
        key.push_str(value);
    }
    key
}

#[derive(Debug)]
struct Snapshot {
    at_s: f64,
    values: HashMap<String, Series>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum RuleState {
    Inactive,
    Pending { since_s: f64 },
    Firing { since_s: f64 },
}

/// One rule's state, as `GET /api/v1/alerts` reports it.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct AlertStatus {
    /// The alert's name.
    pub name: String,
    /// `critical`, `warning`, `info` (the rule's `severity` label).
    pub severity: String,
    /// `ok`, `pending` (true for less than `for_s`) or `firing`.
    pub state: String,
    /// The expression, as written in the rule file.
    pub expr: String,
    /// The expression's left side now; null without data (no series yet, or a
    /// range with fewer than two samples, or 0/0).
    pub value: Option<f64>,
    /// The rule's `for`, s.
    pub for_s: f64,
    /// Since when the condition holds, s on the evaluator's time base.
    pub active_since_s: Option<f64>,
    /// What the alert means.
    pub summary: String,
}

/// Evaluates rules over snapshots of the exposition text. Pure: time is passed in.
#[derive(Debug)]
pub struct AlertEngine {
    rules: Vec<AlertRule>,
    states: Vec<RuleState>,
    history: VecDeque<Snapshot>,
    keep_s: f64,
}

impl AlertEngine {
    /// An engine for `rules` with no samples yet.
    pub fn new(rules: Vec<AlertRule>) -> AlertEngine {
        let longest_range_s = rules
            .iter()
            .filter_map(|rule| {
                let ranges = [
                    Some(&rule.expr.lhs),
                    rule.expr.rhs.as_ref().map(|(_, agg)| agg),
                ];
                ranges
                    .into_iter()
                    .flatten()
                    .filter_map(|agg| match agg.inner {
                        Inner::Range { range_s, .. } => Some(range_s),
                        Inner::Instant(_) => None,
                    })
                    .reduce(f64::max)
            })
            .fold(0.0, f64::max);
        AlertEngine {
            states: vec![RuleState::Inactive; rules.len()],
            rules,
            history: VecDeque::new(),
            // One range plus slack, so a range always finds a sample at its start.
            keep_s: longest_range_s + 60.0,
        }
    }

    /// The rules.
    pub fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// Time of the newest snapshot, s.
    pub fn last_observed_s(&self) -> Option<f64> {
        self.history.back().map(|snapshot| snapshot.at_s)
    }

    /// Records the exposition `text` as seen at `at_s`. Out-of-order samples are
    /// ignored (history stays sorted by time).
    pub fn observe(&mut self, at_s: f64, text: &str) {
        if self.last_observed_s().is_some_and(|last| at_s <= last) {
            return;
        }
        let values = parse_exposition(text)
            .into_iter()
            .map(|series| (series_key(&series), series))
            .collect();
        self.history.push_back(Snapshot { at_s, values });
        while self.history.len() > MAX_SNAPSHOTS
            || self
                .history
                .front()
                .is_some_and(|oldest| oldest.at_s < at_s - self.keep_s)
        {
            self.history.pop_front();
        }
    }

    /// Evaluates every rule at `at_s` and advances the pending/firing states.
    pub fn evaluate(&mut self, at_s: f64) -> Vec<AlertStatus> {
        let mut out = Vec::with_capacity(self.rules.len());
        for (rule, state) in self.rules.iter().zip(self.states.iter_mut()) {
            let value = self.history.back().and_then(|_| {
                let lhs = aggregate(&self.history, at_s, &rule.expr.lhs)?;
                match &rule.expr.rhs {
                    None => Some(lhs),
                    Some((op, agg)) => {
                        let rhs = aggregate(&self.history, at_s, agg)?;
                        Some(match op {
                            BinOp::Div => lhs / rhs,
                            BinOp::Sub => lhs - rhs,
                            BinOp::Add => lhs + rhs,
                            BinOp::Mul => lhs * rhs,
                        })
                    }
                }
            });
            let value = value.filter(|v| !v.is_nan());
            let holds = value.is_some_and(|v| compare(v, rule.expr.op, rule.expr.threshold));
            *state = match (*state, holds) {
                (_, false) => RuleState::Inactive,
                (RuleState::Inactive, true) if rule.for_s <= 0.0 => {
                    RuleState::Firing { since_s: at_s }
                }
                (RuleState::Inactive, true) => RuleState::Pending { since_s: at_s },
                (RuleState::Pending { since_s }, true) if at_s - since_s >= rule.for_s => {
                    RuleState::Firing { since_s }
                }
                (kept, true) => kept,
            };
            let (state_name, active_since_s) = match *state {
                RuleState::Inactive => ("ok", None),
                RuleState::Pending { since_s } => ("pending", Some(since_s)),
                RuleState::Firing { since_s } => ("firing", Some(since_s)),
            };
            out.push(AlertStatus {
                name: rule.name.clone(),
                severity: rule.severity.clone(),
                state: state_name.into(),
                expr: rule.expr_text.clone(),
                value,
                for_s: rule.for_s,
                active_since_s,
                summary: rule.summary.clone(),
            });
        }
        out
    }
}

fn compare(value: f64, op: CmpOp, threshold: f64) -> bool {
    match op {
        CmpOp::Gt => value > threshold,
        CmpOp::Lt => value < threshold,
        CmpOp::Ge => value >= threshold,
        CmpOp::Le => value <= threshold,
        CmpOp::Eq => value == threshold,
        CmpOp::Ne => value != threshold,
    }
}

/// The aggregate over the matching series, or None when no series has a value.
fn aggregate(history: &VecDeque<Snapshot>, at_s: f64, agg: &Aggregate) -> Option<f64> {
    let latest = history.back()?;
    let values = latest
        .values
        .iter()
        .filter(|(_, series)| match &agg.inner {
            Inner::Instant(selector) | Inner::Range { selector, .. } => selector.matches(series),
        })
        .filter_map(|(key, series)| match &agg.inner {
            Inner::Instant(_) => Some(series.value),
            Inner::Range { func, range_s, .. } => range_value(history, at_s, key, *func, *range_s),
        });
    match agg.func {
        AggFunc::Sum => values.reduce(|a, b| a + b),
        AggFunc::Max => values.reduce(f64::max),
        AggFunc::Min => values.reduce(f64::min),
    }
}

/// `rate` or `increase` of one counter series over `[at_s - range_s, at_s]`.
fn range_value(
    history: &VecDeque<Snapshot>,
    at_s: f64,
    key: &str,
    func: RangeFunc,
    range_s: f64,
) -> Option<f64> {
    let window: Vec<(f64, f64)> = history
        .iter()
        .filter(|snapshot| snapshot.at_s >= at_s - range_s && snapshot.at_s <= at_s)
        .map(|snapshot| {
            let value = snapshot.values.get(key).map_or(0.0, |series| series.value);
            (snapshot.at_s, value)
        })
        .collect();
    let (first, last) = (window.first()?, window.last()?);
    if window.len() < 2 || last.0 <= first.0 {
        return None;
    }
    // A counter that goes down was reset: count from zero again.
    let increase: f64 = window
        .windows(2)
        .map(|pair| {
            let (before, after) = (pair[0].1, pair[1].1);
            if after < before {
                after
            } else {
                after - before
            }
        })
        .sum();
    Some(match func {
        RangeFunc::Increase => increase,
        RangeFunc::Rate => increase / (last.0 - first.0),
    })
}

/// The server's alert board: samples the process's own Prometheus exposition and
/// evaluates the shipped rules on demand and on a timer.
pub struct AlertBoard {
    engine: Mutex<AlertEngine>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for AlertBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertBoard").finish_non_exhaustive()
    }
}

/// Samples closer together than this are not taken again on demand.
const MIN_SAMPLE_SPACING_S: f64 = 1.0;

impl AlertBoard {
    /// A board over the shipped rules.
    ///
    /// # Errors
    /// [`AlertRuleError`] when the shipped rule file does not parse (a unit test keeps
    /// this from happening).
    pub fn new(
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
        clock: Arc<dyn Clock>,
    ) -> Result<AlertBoard, AlertRuleError> {
        Ok(AlertBoard {
            engine: Mutex::new(AlertEngine::new(parse_rules(RULES_YAML)?)),
            metrics,
            clock,
        })
    }

    /// Takes a sample of the metrics (unless one was taken in the last second) and
    /// evaluates every rule.
    pub fn sample_and_evaluate(&self) -> Vec<AlertStatus> {
        let now_s = self.clock.now().nanos() as f64 / 1e9;
        let mut engine = self
            .engine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = engine
            .last_observed_s()
            .is_none_or(|last| now_s - last >= MIN_SAMPLE_SPACING_S);
        if due && let Some(handle) = &self.metrics {
            engine.observe(now_s, &handle.render());
        }
        engine.evaluate(now_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(yaml: &str) -> AlertEngine {
        AlertEngine::new(parse_rules(yaml).expect("rules parse"))
    }

    fn one_rule(expr: &str, for_duration: &str) -> String {
        format!(
            "groups:\n  - name: t\n    rules:\n      - alert: T\n        expr: '{expr}'\n        for: {for_duration}\n        labels:\n          severity: warning\n"
        )
    }

    #[test]
    fn every_shipped_rule_parses() {
        let rules = parse_rules(RULES_YAML).expect("deploy/prometheus/voltex-rules.yml parses");
        assert!(rules.len() >= 8, "{} rules", rules.len());
        for rule in &rules {
            assert!(rule.name.starts_with("Voltex"), "{}", rule.name);
            assert!(
                ["critical", "warning", "info"].contains(&rule.severity.as_str()),
                "{}: severity {}",
                rule.name,
                rule.severity
            );
            assert!(!rule.summary.is_empty(), "{} has no summary", rule.name);
        }
    }

    /// Every `voltex_*` metric the deploy files name is registered somewhere in
    /// `src/` (as a string literal), so a renamed metric cannot leave a dead alert
    /// or an empty Grafana panel behind.
    #[test]
    fn deploy_files_name_only_registered_metrics() {
        fn sources(dir: &std::path::Path, out: &mut String) {
            for entry in std::fs::read_dir(dir).expect("src/ is readable") {
                let path = entry.expect("a directory entry").path();
                if path.is_dir() {
                    sources(&path, out);
                } else if path.extension().is_some_and(|ext| ext == "rs")
                    && !path.ends_with("alerts.rs")
                {
                    out.push_str(&std::fs::read_to_string(&path).expect("a source file"));
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut code = String::new();
        sources(&root.join("src"), &mut code);
        let grafana = std::fs::read_to_string(root.join("deploy/grafana/voltex-dashboard.json"))
            .expect("the Grafana dashboard");
        let dashboard: serde_json::Value =
            serde_json::from_str(&grafana).expect("the Grafana dashboard is JSON");
        assert!(
            dashboard["panels"]
                .as_array()
                .is_some_and(|panels| !panels.is_empty()),
            "the dashboard has panels"
        );
        let name = regex::Regex::new(r"voltex_[a-z_]+").expect("a regex");
        let mut checked = 0;
        for text in [RULES_YAML, grafana.as_str()] {
            for found in name.find_iter(text) {
                let metric = found.as_str();
                let base = ["_bucket", "_sum", "_count"]
                    .into_iter()
                    .find_map(|suffix| metric.strip_suffix(suffix))
                    .unwrap_or(metric);
                if base == "voltex_rules" || base.starts_with("voltex_dashboard") {
                    continue; // file names, not metrics
                }
                assert!(
                    code.contains(&format!("\"{base}\"")),
                    "{metric} is named in deploy/ but no code registers \"{base}\""
                );
                checked += 1;
            }
        }
        assert!(checked >= 20, "only {checked} metric references found");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_s("90s"), Some(90.0));
        assert_eq!(parse_duration_s("5m"), Some(300.0));
        assert_eq!(parse_duration_s("1h30m"), Some(5_400.0));
        assert_eq!(parse_duration_s("0s"), Some(0.0));
        assert_eq!(parse_duration_s("250ms"), Some(0.25));
        assert_eq!(parse_duration_s("5"), None);
        assert_eq!(parse_duration_s("m"), None);
        assert_eq!(parse_duration_s(""), None);
    }

    #[test]
    fn expressions_outside_the_subset_are_typed_errors() {
        for bad in [
            "histogram_quantile(0.99, sum(rate(x_bucket[5m])) by (le)) > 1",
            "sum(x) >",
            "sum(x) > high",
            "sum(x)",
            "sum(rate(x[5q])) > 1",
            "sum(x{a=\"b) > 1",
            "sum(x{a=~\"(\"}) > 1",
            "sum(x) > 1 extra",
            "avg(x) > 1",
        ] {
            match parse_rules(&one_rule(bad, "0s")) {
                Err(AlertRuleError::Expr { rule, .. }) => assert_eq!(rule, "T", "{bad}"),
                other => panic!("{bad}: expected an expression error, got {other:?}"),
            }
        }
        assert!(matches!(
            parse_rules(&one_rule("sum(x) > 1", "soon")),
            Err(AlertRuleError::Duration { .. })
        ));
        assert!(matches!(
            parse_rules("groups:\n  - name: t\n    rules:\n      - alert: T\n        exp: x\n"),
            Err(AlertRuleError::Yaml(_))
        ));
        assert!(matches!(parse_rules("[1, 2"), Err(AlertRuleError::Yaml(_))));
    }

    #[test]
    fn exposition_lines_parse_with_labels_and_escapes() {
        let series = parse_exposition(
            "# TYPE x counter\nx{route=\"/a\",msg=\"say \\\"hi\\\"\"} 3\ny 2.5\nz{} +Inf\nbroken{\n",
        );
        assert_eq!(series.len(), 3);
        assert_eq!(series[0].name, "x");
        assert_eq!(
            series[0].labels,
            vec![
                ("route".to_string(), "/a".to_string()),
                ("msg".to_string(), "say \"hi\"".to_string())
            ]
        );
        assert_eq!(series[0].value, 3.0);
        assert_eq!(series[1].value, 2.5);
        assert_eq!(series[2].value, f64::INFINITY);
    }

    #[test]
    fn gauge_rule_goes_pending_then_firing_then_ok() {
        let mut engine = engine(&one_rule("sum(online) < 1", "2m"));
        // No data: the rule cannot hold.
        assert_eq!(engine.evaluate(0.0)[0].state, "ok");
        engine.observe(0.0, "online 0\n");
        let status = &engine.evaluate(0.0)[0];
        assert_eq!(
            (status.state.as_str(), status.value),
            ("pending", Some(0.0))
        );
        engine.observe(60.0, "online 0\n");
        assert_eq!(engine.evaluate(60.0)[0].state, "pending");
        engine.observe(120.0, "online 0\n");
        let status = &engine.evaluate(120.0)[0];
        assert_eq!(status.state, "firing");
        assert_eq!(status.active_since_s, Some(0.0));
        engine.observe(130.0, "online 12\n");
        assert_eq!(engine.evaluate(130.0)[0].state, "ok");
    }

    #[test]
    fn ratio_of_rates_with_regex_matchers() {
        let mut engine = engine(&one_rule(
            "sum(rate(req_total{status=~\"5..\"}[5m])) / sum(rate(req_total[5m])) > 0.01",
            "0s",
        ));
        engine.observe(0.0, "req_total{status=\"200\"} 100\n");
        // One sample: no rate yet.
        assert_eq!(engine.evaluate(0.0)[0].value, None);
        engine.observe(
            60.0,
            "req_total{status=\"200\"} 190\nreq_total{status=\"503\"} 10\n",
        );
        let status = &engine.evaluate(60.0)[0];
        // 10 errors of 100 requests in the minute; the 503 series appeared inside the
        // range and counts from 0.
        let value = status.value.expect("a value");
        assert!((value - 0.1).abs() < 1e-12, "{value}");
        assert_eq!(status.state, "firing");
        // Another minute without errors: 10 of 200 over the range, still above 1%.
        engine.observe(
            120.0,
            "req_total{status=\"200\"} 290\nreq_total{status=\"503\"} 10\n",
        );
        let value = engine.evaluate(120.0)[0].value.expect("a value");
        assert!((value - 0.05).abs() < 1e-12, "{value}");
    }

    #[test]
    fn increase_counts_across_a_counter_reset_and_range_drops_old_samples() {
        let mut engine = engine(&one_rule("sum(increase(failures_total[5m])) > 0", "0s"));
        engine.observe(0.0, "failures_total 5\n");
        engine.observe(30.0, "failures_total 7\n");
        engine.observe(60.0, "failures_total 1\n");
        let status = &engine.evaluate(60.0)[0];
        assert_eq!(status.value, Some(3.0)); // +2, then a reset and +1
        assert_eq!(status.state, "firing");
        // Six minutes later the range holds only unchanged samples.
        engine.observe(400.0, "failures_total 1\n");
        engine.observe(420.0, "failures_total 1\n");
        let status = &engine.evaluate(420.0)[0];
        assert_eq!(status.value, Some(0.0));
        assert_eq!(status.state, "ok");
    }

    #[test]
    fn zero_over_zero_is_no_data_not_an_alert() {
        let mut engine = engine(&one_rule(
            "sum(rate(acks_total{status=\"rejected\"}[10m])) / sum(rate(acks_total[10m])) > 0.02",
            "0s",
        ));
        engine.observe(
            0.0,
            "acks_total{status=\"rejected\"} 0\nacks_total{status=\"completed\"} 4\n",
        );
        engine.observe(
            15.0,
            "acks_total{status=\"rejected\"} 0\nacks_total{status=\"completed\"} 4\n",
        );
        let status = &engine.evaluate(15.0)[0];
        assert_eq!((status.value, status.state.as_str()), (None, "ok"));
    }

    #[test]
    fn history_is_bounded_and_ordered() {
        let mut engine = engine(&one_rule("sum(rate(x_total[1m])) > 1", "0s"));
        for step in 0..2_000 {
            engine.observe(f64::from(step), &format!("x_total {step}\n"));
        }
        // Out of order: ignored.
        engine.observe(5.0, "x_total 0\n");
        assert!(engine.history.len() <= MAX_SNAPSHOTS);
        assert!(engine.history.len() <= 121, "{}", engine.history.len());
        assert_eq!(engine.last_observed_s(), Some(1_999.0));
        let value = engine.evaluate(1_999.0)[0].value.expect("a rate");
        assert!((value - 1.0).abs() < 1e-12, "{value}");
    }
}
