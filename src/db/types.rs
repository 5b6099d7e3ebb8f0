//! Row types and small enums of the persistence layer: what the repository methods
//! take and return.
//!
//! Every row type is plain data with `serde::Serialize`, so the API can return it as
//! JSON unchanged. Units are in the field names: `*_at_ns` are UTC nanoseconds since
//! the Unix epoch, `*_ticks` prices in ticks of 0.01 EUR/MWh, `*_lots` quantities in
//! market lots, `*_w` / `*_wh` power and energy, `*_cents` money in euro cents.
//! Enums are stored as their `snake_case` names ([`OrderStatus::as_str`], ...), the
//! same text their JSON uses.
//!
//! Secrets never serialize: [`DeviceRow::mqtt_credential_hash`] is skipped by serde.

use serde::{Deserialize, Serialize};
use voltex_market::Side;

/// Lifecycle of an order as the engine's events left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Accepted, nothing filled yet, not cancelled or expired.
    Open,
    /// Some quantity filled, some still live.
    PartiallyFilled,
    /// Completely filled.
    Filled,
    /// Cancelled (by the owner, an IOC/FOK remainder or self-trade prevention); may
    /// have been partly filled before.
    Cancelled,
    /// Expired at gate closure; may have been partly filled before.
    Expired,
}

impl OrderStatus {
    /// Every status, for parsing and tests.
    pub const ALL: [OrderStatus; 5] = [
        OrderStatus::Open,
        OrderStatus::PartiallyFilled,
        OrderStatus::Filled,
        OrderStatus::Cancelled,
        OrderStatus::Expired,
    ];

    /// The stored (and JSON) name.
    pub const fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Open => "open",
            OrderStatus::PartiallyFilled => "partially_filled",
            OrderStatus::Filled => "filled",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<OrderStatus> {
        OrderStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether the order can still trade.
    pub const fn is_live(self) -> bool {
        matches!(self, OrderStatus::Open | OrderStatus::PartiallyFilled)
    }
}

/// Delivery status of one schedule version, after IEEE 2030.5 response statuses.
///
/// Statuses only move forward ([`DeliveryStatus::rank`]); the last four are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Stored and handed to the transport; no word from the device yet.
    Issued,
    /// The device stored it.
    Received,
    /// The device verified and accepted it.
    Accepted,
    /// Its first period started.
    Started,
    /// Final: every period executed.
    Completed,
    /// Final: the device refused it.
    Rejected,
    /// Final: a newer version replaced it before it completed.
    Superseded,
    /// Final: it could not be executed, or its deadline passed unacknowledged.
    Failed,
}

impl DeliveryStatus {
    /// Every status, for parsing and tests.
    pub const ALL: [DeliveryStatus; 8] = [
        DeliveryStatus::Issued,
        DeliveryStatus::Received,
        DeliveryStatus::Accepted,
        DeliveryStatus::Started,
        DeliveryStatus::Completed,
        DeliveryStatus::Rejected,
        DeliveryStatus::Superseded,
        DeliveryStatus::Failed,
    ];

    /// Final statuses (stored text), for SQL `IN` lists.
    pub(crate) const FINAL_SQL: &'static str = "('completed', 'rejected', 'superseded', 'failed')";

    /// The stored (and JSON) name.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Issued => "issued",
            DeliveryStatus::Received => "received",
            DeliveryStatus::Accepted => "accepted",
            DeliveryStatus::Started => "started",
            DeliveryStatus::Completed => "completed",
            DeliveryStatus::Rejected => "rejected",
            DeliveryStatus::Superseded => "superseded",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<DeliveryStatus> {
        DeliveryStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Progress order: a schedule's status changes only to a higher rank. Issued 0,
    /// received 1, accepted 2, started 3, every final status 4 (so nothing replaces a
    /// final status).
    pub const fn rank(self) -> i64 {
        match self {
            DeliveryStatus::Issued => 0,
            DeliveryStatus::Received => 1,
            DeliveryStatus::Accepted => 2,
            DeliveryStatus::Started => 3,
            DeliveryStatus::Completed
            | DeliveryStatus::Rejected
            | DeliveryStatus::Superseded
            | DeliveryStatus::Failed => 4,
        }
    }

    /// Whether nothing more will happen to the schedule version.
    pub const fn is_final(self) -> bool {
        self.rank() == 4
    }

    /// Whether the status counts as a success for command success rates.
    pub const fn is_success(self) -> bool {
        matches!(self, DeliveryStatus::Completed)
    }
}

/// Serde for [`Side`] as `"buy"` / `"sell"`, the stored text.
pub(crate) mod side_text {
    use serde::Serializer;
    use voltex_market::Side;

    /// The stored name.
    pub(crate) const fn as_str(side: Side) -> &'static str {
        match side {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }

    /// Parses a stored name.
    pub(crate) fn parse(text: &str) -> Option<Side> {
        match text {
            "buy" => Some(Side::Buy),
            "sell" => Some(Side::Sell),
            _ => None,
        }
    }

    pub(crate) fn serialize<S: Serializer>(side: &Side, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(as_str(*side))
    }
}

/// A trading account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccountRow {
    /// Engine account id (`AccountId`).
    pub account_id: u32,
    /// Unique display name.
    pub name: String,
    /// When it was created.
    pub created_at_ns: i64,
}

/// One order, as of the last persisted engine event that touched it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OrderRow {
    /// Product (book) the order belongs to.
    pub product_id: u32,
    /// Order id, unique within the product.
    pub order_id: u64,
    /// Owner.
    pub account_id: u32,
    /// Buy or sell (`"buy"` / `"sell"` in JSON).
    #[serde(serialize_with = "side_text::serialize")]
    pub side: Side,
    /// Limit price now (a modify may have changed it).
    pub price_ticks: i64,
    /// Quantity at submission.
    pub qty_lots: i64,
    /// Quantity filled so far.
    pub filled_qty_lots: i64,
    /// Quantity still live (visible + hidden); 0 once filled, cancelled or expired.
    pub remaining_qty_lots: i64,
    /// Lifecycle status.
    pub status: OrderStatus,
    /// Why it was cancelled (`requested`, `ioc_remainder`, ...), when it was.
    pub status_reason: Option<String>,
    /// Engine time of acceptance.
    pub created_at_ns: i64,
    /// Engine time of the last change.
    pub updated_at_ns: i64,
    /// Event sequence number of its acceptance (a stable paging key).
    pub created_event_seq: u64,
    /// Event sequence number of its last change.
    pub updated_event_seq: u64,
}

/// Filters and keyset paging for [`crate::db::Db::list_orders`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrderFilter {
    /// Only this product.
    pub product_id: Option<u32>,
    /// Only this status.
    pub status: Option<OrderStatus>,
    /// Only live orders (open or partially filled); combined with `status` by AND.
    pub live_only: bool,
    /// Page: only orders with `created_event_seq` below this (newest first).
    pub before_event_seq: Option<u64>,
}

/// One trade of a book.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TradeRow {
    /// Product.
    pub product_id: u32,
    /// Trade id, unique within the product.
    pub trade_id: u64,
    /// Event sequence number of the trade.
    pub event_seq: u64,
    /// Engine time.
    pub at_ns: i64,
    /// Price (the resting order's limit).
    pub price_ticks: i64,
    /// Traded quantity.
    pub qty_lots: i64,
    /// Incoming order.
    pub aggressor_order_id: u64,
    /// Incoming order's account.
    pub aggressor_account_id: u32,
    /// Incoming order's side.
    #[serde(serialize_with = "side_text::serialize")]
    pub aggressor_side: Side,
    /// Resting order.
    pub resting_order_id: u64,
    /// Resting order's account.
    pub resting_account_id: u32,
}

/// Where a fill came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FillSource {
    /// A trade of the continuous book: one of the account's orders matched.
    Continuous,
    /// An award of the product's day-ahead call auction, at its clearing price.
    Auction,
}

impl FillSource {
    /// The JSON name.
    pub const fn as_str(self) -> &'static str {
        match self {
            FillSource::Continuous => "continuous",
            FillSource::Auction => "auction",
        }
    }
}

/// One fill of an account: a continuous trade seen from its side, or a day-ahead
/// auction award.
///
/// Fills of both sources share one sequence of event seqs (each fill is one engine
/// event), which is the paging key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FillRow {
    /// Continuous trade or auction award.
    pub source: FillSource,
    /// Product.
    pub product_id: u32,
    /// Trade id, unique within the product; `None` for an auction award.
    pub trade_id: Option<u64>,
    /// Event sequence number of the trade or award (paging key, newest first).
    pub event_seq: u64,
    /// Engine time (of the trade, or of the auction's clearing).
    pub at_ns: i64,
    /// The account.
    pub account_id: u32,
    /// The account's order that filled; `None` for an auction award.
    pub order_id: Option<u64>,
    /// The account's side.
    #[serde(serialize_with = "side_text::serialize")]
    pub side: Side,
    /// Price (an award's is its auction's clearing price).
    pub price_ticks: i64,
    /// Quantity.
    pub qty_lots: i64,
    /// Whether the account's order was the incoming one (taker) rather than resting;
    /// `None` for an auction award (a call auction has no taker).
    pub aggressor: Option<bool>,
}

/// Net position of one account in one product.
///
/// Counts every fill of the account in the product: continuous trades and day-ahead
/// auction awards (at the clearing price). Notional values are
/// `sum(price_ticks * qty_lots)` over the fills, exact integers;
/// the cash value in EUR is `notional * 0.01 * lot_mw * period_hours`, which the
/// caller computes from the product's market rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PositionRow {
    /// Account.
    pub account_id: u32,
    /// Product.
    pub product_id: u32,
    /// Bought minus sold.
    pub net_qty_lots: i64,
    /// Total bought.
    pub bought_qty_lots: i64,
    /// Total sold.
    pub sold_qty_lots: i64,
    /// Sum of price × quantity over buys.
    pub bought_notional_tick_lots: i64,
    /// Sum of price × quantity over sells.
    pub sold_notional_tick_lots: i64,
    /// Number of fills.
    pub n_trades: u64,
    /// Engine time of the last fill.
    pub updated_at_ns: i64,
    /// Event sequence number of the last fill.
    pub updated_event_seq: u64,
}

/// A product listed by the engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProductRow {
    /// Product id.
    pub product_id: u32,
    /// Start of its delivery period.
    pub period_start_ns: i64,
    /// Length of its delivery period.
    pub period_minutes: u32,
    /// Engine time it was listed.
    pub listed_at_ns: i64,
}

/// What [`crate::db::Db::persist_engine_events`] did with a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PersistOutcome {
    /// Events applied now (sequence numbers above the stored cursor).
    pub n_applied: u64,
    /// Events skipped because they were persisted before (a replay).
    pub n_skipped: u64,
    /// The cursor after the batch: every event up to this one is persisted.
    pub last_event_seq: u64,
}

/// Where persistence of the engine's event stream stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct EngineCursor {
    /// Last persisted event sequence number (0: none yet).
    pub last_event_seq: u64,
    /// Last command whose events (and journaled audit record, if any) are persisted
    /// (0: none yet).
    pub last_command_seq: u64,
}

/// A device to register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDevice {
    /// Device id (certificate common name, MQTT client id); checked with the
    /// dispatch protocol's rules.
    pub device_id: String,
    /// Display name.
    pub name: String,
    /// The device's public key, hex, if it has one.
    pub public_key_hex: Option<String>,
    /// SHA-256 fingerprint of its certificate, hex; unique across devices.
    pub cert_fingerprint_sha256: Option<String>,
    /// Hash of its MQTT password (PHC string or similar; never the password).
    pub mqtt_credential_hash: Option<String>,
    /// Usable capacity.
    pub capacity_wh: i64,
    /// Maximum charging power.
    pub max_charge_w: i64,
    /// Maximum discharging power.
    pub max_discharge_w: i64,
    /// Registration time.
    pub registered_at_ns: i64,
}

/// A registered device and its last known status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceRow {
    /// Device id.
    pub device_id: String,
    /// Display name.
    pub name: String,
    /// Public key, hex.
    pub public_key_hex: Option<String>,
    /// Certificate fingerprint (SHA-256, hex).
    pub cert_fingerprint_sha256: Option<String>,
    /// MQTT credential hash; never serialized.
    #[serde(skip)]
    pub mqtt_credential_hash: Option<String>,
    /// Usable capacity.
    pub capacity_wh: i64,
    /// Maximum charging power.
    pub max_charge_w: i64,
    /// Maximum discharging power.
    pub max_discharge_w: i64,
    /// Registration time.
    pub registered_at_ns: i64,
    /// Online by heartbeat, as last set by [`crate::db::Db::update_device_status`].
    pub online: bool,
    /// Last time the platform heard from it.
    pub last_seen_at_ns: Option<i64>,
    /// Last reported state of charge.
    pub last_soc_wh: Option<i64>,
    /// Agent time of that report.
    pub last_soc_at_ns: Option<i64>,
    /// Highest schedule version issued to it (0: none).
    pub latest_schedule_version: u64,
}

/// A status report about a device (heartbeat, connection change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceStatusUpdate {
    /// Device id.
    pub device_id: String,
    /// When the platform heard from it; `last_seen_at_ns` never moves backwards.
    pub seen_at_ns: i64,
    /// New online flag, if it changed.
    pub online: Option<bool>,
    /// Reported state of charge and its time, if any; kept only if newer.
    pub soc: Option<SocReading>,
}

/// A state-of-charge reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocReading {
    /// State of charge.
    pub soc_wh: i64,
    /// When it was measured (agent clock).
    pub at_ns: i64,
}

/// Device counts for the fleet view and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FleetCounts {
    /// Registered devices.
    pub n_devices: u64,
    /// Devices marked online.
    pub n_online: u64,
}

/// One schedule version and its delivery state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScheduleRow {
    /// Device.
    pub device_id: String,
    /// Version (monotonic per device).
    pub version: u64,
    /// Schedule id, 32 hex digits.
    pub schedule_id: String,
    /// Issue time.
    pub issued_at_ns: i64,
    /// Start of validity.
    pub valid_from_ns: i64,
    /// End of validity (exclusive).
    pub valid_until_ns: i64,
    /// The device must have received it by then, or it fails.
    pub deadline_at_ns: i64,
    /// Delivery status.
    pub status: DeliveryStatus,
    /// When the status last changed (platform or agent clock, as reported).
    pub status_at_ns: i64,
    /// Rejection or failure reason, or why it was superseded.
    pub status_detail: Option<String>,
    /// The version that superseded it.
    pub superseded_by_version: Option<u64>,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Last delivery attempt.
    pub last_attempt_at_ns: Option<i64>,
    /// Next delivery attempt due (retry with backoff), while still issued.
    pub next_attempt_at_ns: Option<i64>,
    /// The signed schedule as sent (`SignedSchedule` JSON), for resending verbatim.
    pub payload: StoredJson,
}

/// A JSON document as stored: checked to be well-formed when read, then kept as its
/// text and written out verbatim, so listing stored documents (a device's schedule
/// versions, say) does not parse each into a tree only to serialise it again.
#[derive(Clone, Debug)]
pub struct StoredJson(Box<serde_json::value::RawValue>);

impl StoredJson {
    /// Checks `text` is one well-formed JSON value.
    ///
    /// # Errors
    /// The parser's error for anything else.
    pub fn from_text(text: String) -> Result<StoredJson, serde_json::Error> {
        Ok(StoredJson(serde_json::value::RawValue::from_string(text)?))
    }

    /// The text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// Parsed into a tree.
    ///
    /// # Errors
    /// Only if the text is not JSON, which [`StoredJson::from_text`] rules out.
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(self.get())
    }
}

/// The same text; documents that differ only in spacing or key order differ here.
impl PartialEq for StoredJson {
    fn eq(&self, other: &StoredJson) -> bool {
        self.get() == other.get()
    }
}

impl Serialize for StoredJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl ScheduleRow {
    /// The signed schedule as stored.
    ///
    /// # Errors
    /// [`crate::db::DbError::Json`] if the stored payload does not decode.
    pub fn signed_schedule(
        &self,
    ) -> Result<voltex_dispatch::message::SignedSchedule, crate::db::DbError> {
        Ok(serde_json::from_str(self.payload.get())?)
    }
}

/// What [`crate::db::Db::insert_schedule`] did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScheduleInsert {
    /// The stored version.
    pub schedule: ScheduleRow,
    /// False if the identical version was stored before (an idempotent retry).
    pub inserted: bool,
    /// Older non-final versions of the device marked superseded now.
    pub n_superseded: u64,
}

/// Schedule versions per delivery status (success rates, roll-out views).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StatusCount {
    /// The status.
    pub status: DeliveryStatus,
    /// Number of schedule versions in it.
    pub n_schedules: u64,
}

/// One ack from a device (seed: execution log).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExecutionLogRow {
    /// Row id, increasing in insertion order (paging key, newest first).
    pub log_id: i64,
    /// Device.
    pub device_id: String,
    /// Schedule id, 32 hex digits.
    pub schedule_id: String,
    /// Schedule version.
    pub version: u64,
    /// Reported status.
    pub status: DeliveryStatus,
    /// Rejection / failure reason or superseding version.
    pub status_detail: Option<String>,
    /// The agent's outbox sequence number.
    pub outbox_seq: u64,
    /// When it happened (agent clock).
    pub at_ns: i64,
    /// When the platform stored it.
    pub received_at_ns: i64,
}

/// What [`crate::db::Db::record_ack`] did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AckOutcome {
    /// False if the same ack was recorded before (a resend).
    pub inserted: bool,
    /// The schedule version after the ack, if the platform knows it.
    pub schedule: Option<ScheduleRow>,
}

/// One telemetry sample.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TelemetryRow {
    /// Device.
    pub device_id: String,
    /// Sample time (agent clock).
    pub at_ns: i64,
    /// The agent's outbox sequence number.
    pub outbox_seq: u64,
    /// State of charge.
    pub soc_wh: i64,
    /// Power: positive discharges, negative charges.
    pub power_w: i64,
    /// Energy charged since installation.
    pub charged_wh: u64,
    /// Energy discharged since installation.
    pub discharged_wh: u64,
    /// Temperature in milli-degrees Celsius.
    pub temperature_mc: i32,
    /// Health flag bits.
    pub health_flags: u32,
    /// When the platform stored it.
    pub received_at_ns: i64,
}

/// A forecasting or optimisation model to record.
#[derive(Clone, Debug, PartialEq)]
pub struct NewMlModel {
    /// Model name.
    pub name: String,
    /// Version, unique per name.
    pub version: u32,
    /// Model kind (`naive`, `lear`, ...).
    pub kind: String,
    /// When it was trained.
    pub trained_at_ns: i64,
    /// Hyper-parameters and training settings.
    pub parameters: serde_json::Value,
    /// Validation metrics.
    pub metrics: serde_json::Value,
}

/// A recorded model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MlModelRow {
    /// Model name.
    pub name: String,
    /// Version.
    pub version: u32,
    /// Model kind.
    pub kind: String,
    /// When it was trained.
    pub trained_at_ns: i64,
    /// Hyper-parameters and training settings.
    pub parameters: serde_json::Value,
    /// Validation metrics.
    pub metrics: serde_json::Value,
}

/// Pre-computed analytics of one period for one device, or the whole fleet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AggregateRow {
    /// Period start.
    pub period_start_ns: i64,
    /// Period length in seconds.
    pub period_len_s: u32,
    /// The device, or `None` for the fleet-level row.
    pub device_id: Option<String>,
    /// Energy charged in the period.
    pub charged_wh: i64,
    /// Energy discharged in the period.
    pub discharged_wh: i64,
    /// Schedule versions issued in the period.
    pub n_schedules: u64,
    /// Schedule versions completed.
    pub n_acks_completed: u64,
    /// Schedule versions failed or rejected.
    pub n_acks_failed: u64,
    /// Market revenue attributed, euro cents (negative: cost).
    pub revenue_cents: i64,
    /// When this row was computed.
    pub updated_at_ns: i64,
}

/// One delivery period of the day-ahead cycle that `voltex up` replays (table
/// `dayahead_periods`): prices, positions and the P&L by component.
///
/// Money is euro cents, prices cents per MWh. The settlement fields are `None` until
/// the period's day has been delivered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DayAheadPeriodRow {
    /// Wall-clock start of the period (the replay is accelerated), UTC ns.
    pub period_start_ns: i64,
    /// Wall-clock length, seconds.
    pub period_len_s: u32,
    /// The replayed market day this period stands for (`YYYY-MM-DD`, market-local).
    pub delivery_day: String,
    /// The replayed delivery hour (0..=23).
    pub delivery_hour: u8,
    /// The replayed market's clearing price.
    pub clearing_price_cents_per_mwh: i64,
    /// The forecast price the plan used.
    pub forecast_price_cents_per_mwh: i64,
    /// The forecasting model (`ml_models.name`).
    pub model_name: String,
    /// Its version (`ml_models.version`).
    pub model_version: u32,
    /// The fleet's committed net position: what the day-ahead auction awarded, W
    /// (positive: sell / discharge).
    pub committed_w: i64,
    /// The net position the plan wanted, W, and bid unless the fleet's risk limit
    /// refused the hour; `None` on rows written before the cycle bid into the auction
    /// (the plan was then taken as cleared).
    pub planned_w: Option<i64>,
    /// The plan with perfect foresight of the clearing prices, W.
    pub perfect_foresight_w: i64,
    /// Market cash of the committed position at the clearing price.
    pub trading_cents: i64,
    /// Net P&L of the perfect-foresight plan (market cash minus wear): the bound.
    pub perfect_foresight_cents: i64,
    /// What the fleet delivered, W; `None` before settlement.
    pub delivered_w: Option<i64>,
    /// Imbalance cash (committed minus delivered, at price plus penalty).
    pub imbalance_cents: Option<i64>,
    /// Wear cost of the delivered throughput (a cost: positive).
    pub wear_cents: Option<i64>,
    /// When this row was written.
    pub updated_at_ns: i64,
}

/// Which aggregate rows a range query returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AggregateScope {
    /// Fleet-level rows only.
    Fleet,
    /// One device's rows.
    Device(String),
    /// Every per-device row.
    AllDevices,
}

/// Sums of the per-device aggregate rows over a time range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FleetTotals {
    /// Per-device rows summed.
    pub n_rows: u64,
    /// Energy charged.
    pub charged_wh: i64,
    /// Energy discharged.
    pub discharged_wh: i64,
    /// Schedule versions issued.
    pub n_schedules: u64,
    /// Schedule versions completed.
    pub n_acks_completed: u64,
    /// Schedule versions failed or rejected.
    pub n_acks_failed: u64,
    /// Revenue, euro cents.
    pub revenue_cents: i64,
}

/// An audit-log entry to append.
#[derive(Clone, Debug, PartialEq)]
pub struct NewAuditEntry {
    /// When.
    pub at_ns: i64,
    /// Who (token subject or device id).
    pub actor: String,
    /// Their role.
    pub role: String,
    /// What (`order.submit`, `schedule.create`, ...).
    pub action: String,
    /// On what (an order, device, account ...).
    pub target: String,
    /// Correlation id of the request.
    pub correlation_id: String,
    /// Outcome (`ok`, or an error code).
    pub result: String,
    /// Anything else worth keeping.
    pub detail: Option<serde_json::Value>,
    /// The journaled command this records, when the record is projected from the
    /// engine's journal (the command carried its origin): at most one record per
    /// command seq is ever stored, so replaying the journal adds none twice.
    pub command_seq: Option<u64>,
}

/// A stored audit-log entry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditRow {
    /// Id, increasing in append order (paging key, newest first).
    pub audit_id: i64,
    /// When.
    pub at_ns: i64,
    /// Who.
    pub actor: String,
    /// Their role.
    pub role: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// Correlation id.
    pub correlation_id: String,
    /// Outcome.
    pub result: String,
    /// Details.
    pub detail: Option<serde_json::Value>,
    /// The journaled command it records, if it was projected from the journal.
    pub command_seq: Option<u64>,
}
