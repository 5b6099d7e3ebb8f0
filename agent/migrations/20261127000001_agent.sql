-- Voltex agent local store (SQLite). See agent/src/store/sqlite.rs.
-- Received schedules and what became of them; one row per (schedule_id, version).
CREATE TABLE schedules (
    schedule_id TEXT NOT NULL,     -- 32 hex digits
    version     INTEGER NOT NULL,  -- u64 stored as its i64 bit pattern
    arrival     INTEGER NOT NULL UNIQUE,
    received_at INTEGER NOT NULL,  -- UTC ns
    body        BLOB NOT NULL,     -- postcard SignedSchedule
    status      BLOB NOT NULL,     -- postcard RecordStatus
    started     INTEGER NOT NULL,
    PRIMARY KEY (schedule_id, version)
);
-- Acks and telemetry waiting for a receipt.
CREATE TABLE outbox (
    seq  INTEGER PRIMARY KEY,      -- u64 as i64 bit pattern
    body BLOB NOT NULL             -- postcard OutboxItem
);
-- Counters (outbox sequence high-water mark).
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
-- Execution log (bounded by the store).
CREATE TABLE exec_log (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    at   INTEGER NOT NULL,
    body BLOB NOT NULL             -- postcard ExecLogEntry
);
