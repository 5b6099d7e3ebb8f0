-- Voltex platform schema, version 6 (PostgreSQL): audit records projected from the journal.
-- migrations/sqlite/0006_audit_command_seq.sql is the same statement for the other
-- backend; the two files differ only in this header.
--
-- An order command journaled by the engine carries its origin (actor, role,
-- correlation id); the server projects its audit record from the journal with the
-- events, keyed by the command's sequence number. The unique index makes that
-- projection idempotent (a journal replay stores no record twice); records of calls
-- that were never journaled have no command_seq (NULLs never conflict).
ALTER TABLE audit_log ADD COLUMN command_seq BIGINT;
CREATE UNIQUE INDEX audit_log_command_seq ON audit_log (command_seq);
