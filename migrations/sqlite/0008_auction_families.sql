-- Voltex platform schema, version 8 (SQLite): the history of block families.
-- migrations/postgres/0008_auction_families.sql is the same statement for the other
-- backend; the two files differ only in this header.
--
-- auction_families: one row per block family an account held for a gate, from its
-- acceptance to its end: 'open' until its gate, then 'accepted' (every block traded in
-- full) or 'rejected' (nothing traded), or 'withdrawn'. A replacement before the gate
-- updates the open row (n_replacements counts them). The row is keyed by the event
-- seq of the acceptance that opened it, so a name reused for a later gate starts a new
-- row and the earlier outcome stays. At most one open row per (account, name), as the
-- engine holds at most one open family per name. The engine's live index forgets the
-- oldest cleared families; this table keeps them. Surplus: price ticks (0.01 EUR/MWh)
-- times lots at the clearing prices, NULL before clearing or where a product had no
-- trade.
CREATE TABLE auction_families (
    opened_event_seq BIGINT PRIMARY KEY,
    account_id BIGINT NOT NULL,
    family_ref BIGINT NOT NULL,
    first_product_id BIGINT NOT NULL,
    n_products BIGINT NOT NULL,
    n_blocks BIGINT NOT NULL,
    n_replacements BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'accepted', 'rejected', 'withdrawn')),
    surplus_ticks_x_lots BIGINT,
    opened_at_ns BIGINT NOT NULL,
    updated_at_ns BIGINT NOT NULL,
    updated_event_seq BIGINT NOT NULL
);
CREATE INDEX auction_families_by_account ON auction_families (account_id, updated_event_seq);
CREATE UNIQUE INDEX auction_families_one_open ON auction_families (account_id, family_ref)
    WHERE status = 'open';

-- Projections that the server fills from the stored engine events once, at its next
-- start after this migration (Db::connect runs them and deletes their row in the same
-- transaction): here the families accepted before version 8.
CREATE TABLE pending_backfills (
    name TEXT PRIMARY KEY
);
INSERT INTO pending_backfills (name) VALUES ('auction_families');
