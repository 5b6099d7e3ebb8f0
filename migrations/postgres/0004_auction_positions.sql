-- Voltex platform schema, version 4 (PostgreSQL): day-ahead awards count in positions.
-- migrations/sqlite/0004_auction_positions.sql is the same statement for the other
-- backend; the two files differ only in this header.
--
-- From this version on, the persister adds each day-ahead award to the account's
-- position at its auction's clearing price when it inserts the award's row into
-- auction_awards (and only then, so a replayed award is not counted twice): a row in
-- auction_awards means "counted in positions". Awards persisted before this version
-- were not counted; this backfill counts them once, so the rule holds for every row.
-- No table changes.
INSERT INTO positions (account_id, product_id, net_qty_lots, bought_qty_lots,
    sold_qty_lots, bought_notional_tick_lots, sold_notional_tick_lots, n_trades,
    updated_at_ns, updated_event_seq)
SELECT a.account_id, a.product_id,
    CAST(SUM(CASE WHEN a.side = 'buy' THEN a.qty_lots ELSE -a.qty_lots END) AS BIGINT),
    CAST(SUM(CASE WHEN a.side = 'buy' THEN a.qty_lots ELSE 0 END) AS BIGINT),
    CAST(SUM(CASE WHEN a.side = 'sell' THEN a.qty_lots ELSE 0 END) AS BIGINT),
    CAST(SUM(CASE WHEN a.side = 'buy' THEN a.qty_lots * r.price_ticks ELSE 0 END) AS BIGINT),
    CAST(SUM(CASE WHEN a.side = 'sell' THEN a.qty_lots * r.price_ticks ELSE 0 END) AS BIGINT),
    COUNT(*), MAX(r.cleared_at_ns), MAX(a.event_seq)
FROM auction_awards a JOIN auction_results r ON r.product_id = a.product_id
WHERE r.price_ticks IS NOT NULL
GROUP BY a.account_id, a.product_id
ON CONFLICT (account_id, product_id) DO UPDATE SET
    net_qty_lots = positions.net_qty_lots + excluded.net_qty_lots,
    bought_qty_lots = positions.bought_qty_lots + excluded.bought_qty_lots,
    sold_qty_lots = positions.sold_qty_lots + excluded.sold_qty_lots,
    bought_notional_tick_lots =
        positions.bought_notional_tick_lots + excluded.bought_notional_tick_lots,
    sold_notional_tick_lots =
        positions.sold_notional_tick_lots + excluded.sold_notional_tick_lots,
    n_trades = positions.n_trades + excluded.n_trades,
    updated_at_ns = CASE WHEN excluded.updated_event_seq > positions.updated_event_seq
        THEN excluded.updated_at_ns ELSE positions.updated_at_ns END,
    updated_event_seq = CASE WHEN excluded.updated_event_seq > positions.updated_event_seq
        THEN excluded.updated_event_seq ELSE positions.updated_event_seq END;
