-- Voltex platform schema, version 3 (SQLite): the day-ahead call auction.
-- migrations/postgres/0003_auction.sql is the same statement for the other backend;
-- the two files differ only in this header.
--
-- Projections of the engine's auction events (written by the persister in event-seq
-- order, once each, like the order tables). Prices are ticks of 0.01 EUR/MWh,
-- quantities lots of the day-ahead rules (0.1 MW).
--
-- auction_curves: one row per (product, account, side) that ever held a curve; status
-- 'active' or 'withdrawn'. A replacement overwrites the row and its points.
CREATE TABLE auction_curves (
    product_id BIGINT NOT NULL,
    account_id BIGINT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    kind TEXT NOT NULL CHECK (kind IN ('stepwise', 'piecewise_linear')),
    n_points BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'withdrawn')),
    accepted_at_ns BIGINT NOT NULL,
    updated_at_ns BIGINT NOT NULL,
    accepted_event_seq BIGINT NOT NULL,
    updated_event_seq BIGINT NOT NULL,
    PRIMARY KEY (product_id, account_id, side)
);
CREATE INDEX auction_curves_by_account ON auction_curves (account_id, product_id);

-- The points of the current curve of a (product, account, side).
CREATE TABLE auction_curve_points (
    product_id BIGINT NOT NULL,
    account_id BIGINT NOT NULL,
    side TEXT NOT NULL,
    point_idx BIGINT NOT NULL,
    price_ticks BIGINT NOT NULL,
    qty_lots BIGINT NOT NULL,
    event_seq BIGINT NOT NULL,
    PRIMARY KEY (product_id, account_id, side, point_idx)
);

-- One row per cleared auction; price NULL when nothing traded.
CREATE TABLE auction_results (
    product_id BIGINT NOT NULL PRIMARY KEY,
    price_ticks BIGINT,
    volume_lots BIGINT NOT NULL,
    n_curves BIGINT NOT NULL,
    cleared_at_ns BIGINT NOT NULL,
    event_seq BIGINT NOT NULL
);

-- Accepted quantity per product, account and side that bid.
CREATE TABLE auction_awards (
    product_id BIGINT NOT NULL,
    account_id BIGINT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    qty_lots BIGINT NOT NULL,
    event_seq BIGINT NOT NULL,
    PRIMARY KEY (product_id, account_id, side)
);
CREATE INDEX auction_awards_by_account ON auction_awards (account_id, product_id);
