-- Voltex platform schema, version 1 (PostgreSQL).
--
-- migrations/sqlite/0001_init.sql is the same schema for the embedded default. The two
-- files are identical except on lines marked `-- dialect`: a unit test in src/db/mod.rs
-- strips those lines and compares the rest, so the schemas cannot drift apart.
--
-- Conventions: times are BIGINT UTC nanoseconds since the Unix epoch (`*_at_ns`);
-- prices are BIGINT ticks of 0.01 EUR/MWh (`*_ticks`); quantities BIGINT lots
-- (`*_lots`); power and energy BIGINT W and Wh; money BIGINT cents (`*_cents`);
-- flags BIGINT 0/1; JSON documents TEXT. No floating-point column holds money.

-- Trading accounts. Ids are chosen by the operator (tokens name them).
CREATE TABLE accounts (
    account_id BIGINT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at_ns BIGINT NOT NULL
);

-- Persistence cursor of the engine's event stream: one row. Every event with
-- event_seq <= last_event_seq has been applied to orders, trades and positions.
CREATE TABLE engine_cursor (
    cursor_id BIGINT PRIMARY KEY,
    last_event_seq BIGINT NOT NULL,
    last_command_seq BIGINT NOT NULL,
    updated_at_ns BIGINT NOT NULL
);
INSERT INTO engine_cursor (cursor_id, last_event_seq, last_command_seq, updated_at_ns)
VALUES (1, 0, 0, 0);

-- The engine's events (all but L2 depth updates, which the journal can regenerate).
CREATE TABLE engine_events (
    event_seq BIGINT PRIMARY KEY,
    command_seq BIGINT NOT NULL,
    at_ns BIGINT NOT NULL,
    product_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    body_json TEXT NOT NULL
);
CREATE INDEX engine_events_by_command ON engine_events (command_seq);

-- Products listed by the engine (one delivery period each).
CREATE TABLE products (
    product_id BIGINT PRIMARY KEY,
    period_start_ns BIGINT NOT NULL,
    period_minutes BIGINT NOT NULL,
    listed_at_ns BIGINT NOT NULL,
    listed_event_seq BIGINT NOT NULL
);

-- Orders as the engine's events left them. Order ids are unique within a product.
CREATE TABLE orders (
    product_id BIGINT NOT NULL,
    order_id BIGINT NOT NULL,
    account_id BIGINT NOT NULL,
    side TEXT NOT NULL,
    price_ticks BIGINT NOT NULL,
    qty_lots BIGINT NOT NULL,
    filled_qty_lots BIGINT NOT NULL,
    remaining_qty_lots BIGINT NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT,
    created_at_ns BIGINT NOT NULL,
    updated_at_ns BIGINT NOT NULL,
    created_event_seq BIGINT NOT NULL,
    updated_event_seq BIGINT NOT NULL,
    PRIMARY KEY (product_id, order_id)
);
CREATE INDEX orders_by_account ON orders (account_id, created_event_seq);

-- Trades. Trade ids are unique within a product.
CREATE TABLE trades (
    product_id BIGINT NOT NULL,
    trade_id BIGINT NOT NULL,
    event_seq BIGINT NOT NULL UNIQUE,
    at_ns BIGINT NOT NULL,
    price_ticks BIGINT NOT NULL,
    qty_lots BIGINT NOT NULL,
    aggressor_order_id BIGINT NOT NULL,
    aggressor_account_id BIGINT NOT NULL,
    aggressor_side TEXT NOT NULL,
    resting_order_id BIGINT NOT NULL,
    resting_account_id BIGINT NOT NULL,
    PRIMARY KEY (product_id, trade_id)
);
CREATE INDEX trades_by_aggressor_account ON trades (aggressor_account_id, event_seq);
CREATE INDEX trades_by_resting_account ON trades (resting_account_id, event_seq);

-- Net position per account and product; notional = sum of price_ticks * qty_lots.
CREATE TABLE positions (
    account_id BIGINT NOT NULL,
    product_id BIGINT NOT NULL,
    net_qty_lots BIGINT NOT NULL,
    bought_qty_lots BIGINT NOT NULL,
    sold_qty_lots BIGINT NOT NULL,
    bought_notional_tick_lots BIGINT NOT NULL,
    sold_notional_tick_lots BIGINT NOT NULL,
    n_trades BIGINT NOT NULL,
    updated_at_ns BIGINT NOT NULL,
    updated_event_seq BIGINT NOT NULL,
    PRIMARY KEY (account_id, product_id)
);

-- Battery devices (seed: devices).
CREATE TABLE devices (
    device_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    public_key_hex TEXT,
    cert_fingerprint_sha256 TEXT UNIQUE,
    mqtt_credential_hash TEXT,
    capacity_wh BIGINT NOT NULL,
    max_charge_w BIGINT NOT NULL,
    max_discharge_w BIGINT NOT NULL,
    registered_at_ns BIGINT NOT NULL,
    online BIGINT NOT NULL,
    last_seen_at_ns BIGINT,
    last_soc_wh BIGINT,
    last_soc_at_ns BIGINT,
    latest_schedule_version BIGINT NOT NULL
);

-- Device schedules, one row per version (seed: schedules).
CREATE TABLE schedules (
    device_id TEXT NOT NULL REFERENCES devices (device_id),
    version BIGINT NOT NULL,
    schedule_id TEXT NOT NULL,
    issued_at_ns BIGINT NOT NULL,
    valid_from_ns BIGINT NOT NULL,
    valid_until_ns BIGINT NOT NULL,
    deadline_at_ns BIGINT NOT NULL,
    status TEXT NOT NULL,
    status_rank BIGINT NOT NULL,
    status_at_ns BIGINT NOT NULL,
    status_detail TEXT,
    superseded_by_version BIGINT,
    attempts BIGINT NOT NULL,
    last_attempt_at_ns BIGINT,
    next_attempt_at_ns BIGINT,
    payload_json TEXT NOT NULL,
    PRIMARY KEY (device_id, version)
);
CREATE INDEX schedules_by_status ON schedules (status, next_attempt_at_ns);

-- Acks from devices (seed: execution_logs). One row per (device, version, status).
CREATE TABLE execution_logs (
    log_id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, -- dialect
    device_id TEXT NOT NULL REFERENCES devices (device_id),
    schedule_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    status TEXT NOT NULL,
    status_detail TEXT,
    outbox_seq BIGINT NOT NULL,
    at_ns BIGINT NOT NULL,
    received_at_ns BIGINT NOT NULL,
    UNIQUE (device_id, version, status)
);

-- Telemetry samples; a resent sample (same device and time) is stored once.
CREATE TABLE telemetry (
    device_id TEXT NOT NULL REFERENCES devices (device_id),
    at_ns BIGINT NOT NULL,
    outbox_seq BIGINT NOT NULL,
    soc_wh BIGINT NOT NULL,
    power_w BIGINT NOT NULL,
    charged_wh BIGINT NOT NULL,
    discharged_wh BIGINT NOT NULL,
    temperature_mc BIGINT NOT NULL,
    health_flags BIGINT NOT NULL,
    received_at_ns BIGINT NOT NULL,
    PRIMARY KEY (device_id, at_ns)
);

-- Forecast / optimisation models with their metrics (seed: ml_models).
CREATE TABLE ml_models (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    kind TEXT NOT NULL,
    trained_at_ns BIGINT NOT NULL,
    parameters_json TEXT NOT NULL,
    metrics_json TEXT NOT NULL,
    PRIMARY KEY (name, version)
);

-- Pre-computed analytics per period, per device or fleet-wide (seed:
-- analytics_aggregates). device_id '' is the fleet-level row.
CREATE TABLE analytics_aggregates (
    period_start_ns BIGINT NOT NULL,
    period_len_s BIGINT NOT NULL,
    device_id TEXT NOT NULL,
    charged_wh BIGINT NOT NULL,
    discharged_wh BIGINT NOT NULL,
    n_schedules BIGINT NOT NULL,
    n_acks_completed BIGINT NOT NULL,
    n_acks_failed BIGINT NOT NULL,
    revenue_cents BIGINT NOT NULL,
    updated_at_ns BIGINT NOT NULL,
    PRIMARY KEY (period_start_ns, period_len_s, device_id)
);
CREATE INDEX analytics_by_device ON analytics_aggregates (device_id, period_start_ns);

-- Append-only audit trail of mutating calls.
CREATE TABLE audit_log (
    audit_id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, -- dialect
    at_ns BIGINT NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    result TEXT NOT NULL,
    detail_json TEXT
);
