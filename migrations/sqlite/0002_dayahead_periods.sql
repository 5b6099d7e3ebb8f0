-- Voltex platform schema, version 2 (SQLite): the day-ahead cycle's record.
-- migrations/postgres/0002_dayahead_periods.sql is the same statement for the other
-- backend; the two files differ only in this header.
--
-- One row per delivery period that the day-ahead cycle of `voltex up` replays: the
-- clearing price of the replayed market, the forecast the plan used and its model,
-- the fleet's committed position, the perfect-foresight position, and the P&L by
-- component in euro cents. The settlement columns (delivered_w, imbalance_cents,
-- wear_cents) are NULL until the period's day has been delivered. Money is rounded
-- once, per period and component, to the cent (half to even); prices are cents per
-- MWh. period_start_ns is wall-clock time (the replay is accelerated: the row also
-- names the replayed market day and hour it stands for).
CREATE TABLE dayahead_periods (
    period_start_ns BIGINT NOT NULL PRIMARY KEY,
    period_len_s BIGINT NOT NULL,
    delivery_day TEXT NOT NULL,
    delivery_hour BIGINT NOT NULL,
    clearing_price_cents_per_mwh BIGINT NOT NULL,
    forecast_price_cents_per_mwh BIGINT NOT NULL,
    model_name TEXT NOT NULL,
    model_version BIGINT NOT NULL,
    committed_w BIGINT NOT NULL,
    perfect_foresight_w BIGINT NOT NULL,
    trading_cents BIGINT NOT NULL,
    perfect_foresight_cents BIGINT NOT NULL,
    delivered_w BIGINT,
    imbalance_cents BIGINT,
    wear_cents BIGINT,
    updated_at_ns BIGINT NOT NULL
);
