-- Voltex platform schema, version 5 (PostgreSQL): revoked device certificates.
-- migrations/sqlite/0005_revoked_certificates.sql is the same statement for the other
-- backend; the two files differ only in this header.
--
-- A device's QUIC client certificate is revoked by its SHA-256 fingerprint (of the
-- DER, lowercase hex, as devices.cert_fingerprint_sha256 holds it): by an operator
-- (DELETE /api/v1/devices/{id}/certificate) or when a new certificate replaces it.
-- The QUIC platform refuses every fingerprint in this table; rows are never deleted.
CREATE TABLE revoked_certificates (
    fingerprint_sha256 TEXT PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices (device_id),
    revoked_at_ns BIGINT NOT NULL,
    reason TEXT NOT NULL
);
