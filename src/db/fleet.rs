//! Fleet data: devices, schedule versions and their delivery state, acks (the seed's
//! execution logs) and telemetry.
//!
//! # Guarantees
//! - Schedule versions are monotonic per device: a version not above the device's
//!   latest is refused ([`DbError::StaleScheduleVersion`]) unless it is the identical
//!   schedule again (an idempotent retry). Inserting a version marks every older
//!   non-final version of the device `superseded`, in the same transaction. The
//!   device row is the per-device lock, so concurrent inserts cannot interleave.
//! - A schedule's delivery status only moves forward ([`DeliveryStatus::rank`]).
//! - The same ack recorded twice is one row (unique on device, version, status),
//!   and only its first recording moves the schedule's status.
//! - A telemetry sample resent by an agent (same device and time) is stored once.
//! - Every write naming an unknown device fails with [`DbError::NotFound`].

use sqlx::any::AnyRow;
use voltex_dispatch::message::{Ack, AckStatus, DeviceId, SignedSchedule, TelemetryBatch};

use super::Db;
use super::{
    AckOutcome, DbError, DeliveryStatus, DeviceRow, DeviceStatusUpdate, ExecutionLogRow,
    FleetCounts, INSERT_BATCH_ROWS_MAX, NewDevice, ScheduleInsert, ScheduleRow, StatusCount,
    TelemetryRow, col, col_enum, col_int, col_int_opt, col_stored_json, input_i64, page_limit,
    placeholders,
};

type Tx = sqlx::Transaction<'static, sqlx::Any>;

const DEVICE_COLUMNS: &str = "device_id, name, public_key_hex, cert_fingerprint_sha256, \
     mqtt_credential_hash, capacity_wh, max_charge_w, max_discharge_w, registered_at_ns, online, \
     last_seen_at_ns, last_soc_wh, last_soc_at_ns, latest_schedule_version";

const SCHEDULE_COLUMNS: &str = "device_id, version, schedule_id, issued_at_ns, valid_from_ns, \
     valid_until_ns, deadline_at_ns, status, status_at_ns, status_detail, superseded_by_version, \
     attempts, last_attempt_at_ns, next_attempt_at_ns, payload_json";

const LOG_COLUMNS: &str = "log_id, device_id, schedule_id, version, status, status_detail, \
     outbox_seq, at_ns, received_at_ns";

const TELEMETRY_COLUMNS: &str = "device_id, at_ns, outbox_seq, soc_wh, power_w, charged_wh, \
     discharged_wh, temperature_mc, health_flags, received_at_ns";

impl Db {
    /// Registers a device with its credentials.
    ///
    /// # Errors
    /// [`DbError::InvalidInput`] for an id that breaks the dispatch protocol's rules or
    /// negative limits; [`DbError::AlreadyExists`] if the id or the certificate
    /// fingerprint is registered already.
    pub async fn register_device(&self, device: &NewDevice) -> Result<DeviceRow, DbError> {
        checked_device_id(&device.device_id)?;
        for (field, value) in [
            ("capacity_wh", device.capacity_wh),
            ("max_charge_w", device.max_charge_w),
            ("max_discharge_w", device.max_discharge_w),
        ] {
            if value < 0 {
                return Err(DbError::InvalidInput {
                    field,
                    message: format!("must not be negative, got {value}"),
                });
            }
        }
        let sql = format!(
            "INSERT INTO devices ({DEVICE_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, NULL, NULL, NULL, 0) ON CONFLICT DO NOTHING"
        );
        let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(device.device_id.as_str())
            .bind(device.name.as_str())
            .bind(device.public_key_hex.as_deref())
            .bind(device.cert_fingerprint_sha256.as_deref())
            .bind(device.mqtt_credential_hash.as_deref())
            .bind(device.capacity_wh)
            .bind(device.max_charge_w)
            .bind(device.max_discharge_w)
            .bind(device.registered_at_ns)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if inserted == 0 {
            return Err(DbError::AlreadyExists {
                entity: "device",
                key: device.device_id.clone(),
            });
        }
        self.get_device(&device.device_id)
            .await?
            .ok_or_else(|| not_found_device(&device.device_id))
    }

    /// Records `fingerprint_sha256` (64 hex digits, stored lowercase) as the device's
    /// current certificate, replacing the one before (a re-issue); returns the row.
    ///
    /// # Errors
    /// [`DbError::NotFound`] for an unknown device, [`DbError::InvalidInput`] for a
    /// fingerprint that is not 64 hex digits, [`DbError::AlreadyExists`] if another
    /// device holds that certificate.
    pub async fn set_device_cert_fingerprint(
        &self,
        device_id: &str,
        fingerprint_sha256: &str,
    ) -> Result<DeviceRow, DbError> {
        checked_device_id(device_id)?;
        if fingerprint_sha256.len() != 64
            || !fingerprint_sha256.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(DbError::InvalidInput {
                field: "cert_fingerprint_sha256",
                message: "must be 64 hex digits".into(),
            });
        }
        let fingerprint = fingerprint_sha256.to_ascii_lowercase();
        if self.is_certificate_revoked(&fingerprint).await? {
            return Err(DbError::InvalidInput {
                field: "cert_fingerprint_sha256",
                message: format!("certificate {fingerprint} is revoked"),
            });
        }
        if let Some(holder) = self.get_device_by_cert_fingerprint(&fingerprint).await?
            && holder.device_id != device_id
        {
            return Err(DbError::AlreadyExists {
                entity: "device certificate",
                key: fingerprint,
            });
        }
        let updated =
            sqlx::query("UPDATE devices SET cert_fingerprint_sha256 = $2 WHERE device_id = $1")
                .bind(device_id)
                .bind(fingerprint.as_str())
                .execute(&self.pool)
                .await?
                .rows_affected();
        if updated == 0 {
            return Err(not_found_device(device_id));
        }
        self.get_device(device_id)
            .await?
            .ok_or_else(|| not_found_device(device_id))
    }

    /// Revokes the certificate recorded on a device: its fingerprint goes into
    /// `revoked_certificates` (with `reason` and `at_ns`) and off the device, in one
    /// transaction. Returns the revoked fingerprint, or `Ok(None)` (and changes
    /// nothing) when the device has no certificate recorded.
    ///
    /// # Errors
    /// [`DbError::NotFound`] for an unknown device.
    pub async fn revoke_device_certificate(
        &self,
        device_id: &str,
        reason: &str,
        at_ns: i64,
    ) -> Result<Option<String>, DbError> {
        checked_device_id(device_id)?;
        let mut tx = self.begin_write().await?;
        let current: Option<Option<String>> =
            sqlx::query_scalar("SELECT cert_fingerprint_sha256 FROM devices WHERE device_id = $1")
                .bind(device_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(current) = current else {
            return Err(not_found_device(device_id));
        };
        let Some(fingerprint) = current else {
            return Ok(None);
        };
        sqlx::query(
            "INSERT INTO revoked_certificates (fingerprint_sha256, device_id, revoked_at_ns, reason) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (fingerprint_sha256) DO NOTHING",
        )
        .bind(fingerprint.as_str())
        .bind(device_id)
        .bind(at_ns)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE devices SET cert_fingerprint_sha256 = NULL WHERE device_id = $1")
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(fingerprint))
    }

    /// Every revoked certificate's fingerprint, in revocation order (for the QUIC
    /// platform's refusal set at start).
    ///
    /// # Errors
    /// Database errors only.
    pub async fn list_revoked_certificate_fingerprints(&self) -> Result<Vec<String>, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT fingerprint_sha256 FROM revoked_certificates \
             ORDER BY revoked_at_ns, fingerprint_sha256",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether a certificate (by fingerprint, lowercase hex) is revoked.
    ///
    /// # Errors
    /// Database errors only.
    pub async fn is_certificate_revoked(&self, fingerprint_sha256: &str) -> Result<bool, DbError> {
        // COUNT(*) is a BIGINT on both backends (a bare `1` is INT4 on PostgreSQL).
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM revoked_certificates WHERE fingerprint_sha256 = $1",
        )
        .bind(fingerprint_sha256)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// One device.
    ///
    /// # Errors
    /// Database errors only; an unknown id is `Ok(None)`.
    pub async fn get_device(&self, device_id: &str) -> Result<Option<DeviceRow>, DbError> {
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(device_from_row).transpose()
    }

    /// The device holding a certificate (QUIC mutual TLS).
    ///
    /// # Errors
    /// Database errors only; an unknown fingerprint is `Ok(None)`.
    pub async fn get_device_by_cert_fingerprint(
        &self,
        cert_fingerprint_sha256: &str,
    ) -> Result<Option<DeviceRow>, DbError> {
        let sql =
            format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE cert_fingerprint_sha256 = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(cert_fingerprint_sha256)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(device_from_row).transpose()
    }

    /// Devices by id, ascending, after `after_device_id`, optionally only online or
    /// offline ones.
    ///
    /// # Errors
    /// [`DbError::InvalidInput`] for a limit outside `1..=PAGE_LIMIT_MAX`.
    pub async fn list_devices(
        &self,
        after_device_id: Option<&str>,
        online: Option<bool>,
        limit: u32,
    ) -> Result<Vec<DeviceRow>, DbError> {
        let limit = page_limit(limit)?;
        let sql = format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id > $1 \
             AND ($2 IS NULL OR online = $2) ORDER BY device_id LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after_device_id.unwrap_or(""))
            .bind(online.map(i64::from))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(device_from_row).collect()
    }

    /// Records that the platform heard from a device: `last_seen_at_ns` moves forward
    /// only, the online flag changes if given, the state of charge is kept if newer.
    ///
    /// # Errors
    /// [`DbError::NotFound`] for an unknown device.
    pub async fn update_device_status(
        &self,
        update: &DeviceStatusUpdate,
    ) -> Result<DeviceRow, DbError> {
        let changed = sqlx::query(
            "UPDATE devices SET \
             last_seen_at_ns = CASE WHEN last_seen_at_ns IS NULL OR last_seen_at_ns < $1 \
                 THEN $1 ELSE last_seen_at_ns END, \
             online = COALESCE($2, online), \
             last_soc_wh = CASE WHEN $3 IS NOT NULL \
                 AND (last_soc_at_ns IS NULL OR last_soc_at_ns < $4) \
                 THEN $3 ELSE last_soc_wh END, \
             last_soc_at_ns = CASE WHEN $3 IS NOT NULL \
                 AND (last_soc_at_ns IS NULL OR last_soc_at_ns < $4) \
                 THEN $4 ELSE last_soc_at_ns END \
             WHERE device_id = $5",
        )
        .bind(update.seen_at_ns)
        .bind(update.online.map(i64::from))
        .bind(update.soc.map(|s| s.soc_wh))
        .bind(update.soc.map(|s| s.at_ns))
        .bind(update.device_id.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(not_found_device(&update.device_id));
        }
        self.get_device(&update.device_id)
            .await?
            .ok_or_else(|| not_found_device(&update.device_id))
    }

    /// Marks offline every online device not heard from since `seen_before_ns`
    /// (heartbeat timeout); returns how many changed.
    ///
    /// # Errors
    /// Database errors only.
    pub async fn mark_silent_devices_offline(&self, seen_before_ns: i64) -> Result<u64, DbError> {
        Ok(sqlx::query(
            "UPDATE devices SET online = 0 WHERE online = 1 \
             AND (last_seen_at_ns IS NULL OR last_seen_at_ns < $1)",
        )
        .bind(seen_before_ns)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Registered and online device counts.
    ///
    /// # Errors
    /// Database errors only.
    pub async fn fleet_counts(&self) -> Result<FleetCounts, DbError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n_devices, \
             CAST(COALESCE(SUM(online), 0) AS BIGINT) AS n_online FROM devices",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(FleetCounts {
            n_devices: col_int(&row, "devices", "n_devices")?,
            n_online: col_int(&row, "devices", "n_online")?,
        })
    }

    /// Stores a new schedule version, due for delivery at once, and marks the device's
    /// older non-final versions superseded. Storing the identical schedule again returns
    /// the stored row with `inserted: false`.
    ///
    /// # Errors
    /// [`DbError::InvalidInput`] for a schedule that breaks the protocol rules, version 0
    /// or a deadline before issue; [`DbError::NotFound`] for an unknown device;
    /// [`DbError::StaleScheduleVersion`] for a version not above the device's latest.
    pub async fn insert_schedule(
        &self,
        signed: &SignedSchedule,
        deadline_at_ns: i64,
    ) -> Result<ScheduleInsert, DbError> {
        let schedule = &signed.schedule;
        schedule.validate().map_err(|e| DbError::InvalidInput {
            field: "schedule",
            message: e.to_string(),
        })?;
        if schedule.version == 0 {
            return Err(DbError::InvalidInput {
                field: "version",
                message: "versions start at 1".into(),
            });
        }
        if deadline_at_ns < schedule.issued_at.0 {
            return Err(DbError::InvalidInput {
                field: "deadline_at_ns",
                message: "must not be before issued_at".into(),
            });
        }
        let device_id = schedule.device.as_str();
        let version = input_i64("version", schedule.version)?;
        let payload = serde_json::to_string(signed)?;
        let mut tx = self.begin_write().await?;
        // The device row is the per-device lock: it also holds the latest version.
        let claimed = sqlx::query(
            "UPDATE devices SET latest_schedule_version = $1 \
             WHERE device_id = $2 AND latest_schedule_version < $1",
        )
        .bind(version)
        .bind(device_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            let latest: Option<i64> = sqlx::query_scalar(
                "SELECT latest_schedule_version FROM devices WHERE device_id = $1",
            )
            .bind(device_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(latest) = latest else {
                return Err(not_found_device(device_id));
            };
            if let Some(existing) = schedule_in_tx(&mut tx, device_id, version).await?
                && existing.payload.to_value()?
                    == serde_json::from_str::<serde_json::Value>(&payload)?
            {
                return Ok(ScheduleInsert {
                    schedule: existing,
                    inserted: false,
                    n_superseded: 0,
                });
            }
            return Err(DbError::StaleScheduleVersion {
                device_id: device_id.to_string(),
                version: schedule.version,
                latest: u64::try_from(latest).unwrap_or(0),
            });
        }
        let supersede = format!(
            "UPDATE schedules SET status = 'superseded', status_rank = $1, status_at_ns = $2, \
             superseded_by_version = $3, next_attempt_at_ns = NULL \
             WHERE device_id = $4 AND version < $3 AND status NOT IN {}",
            DeliveryStatus::FINAL_SQL
        );
        let n_superseded = sqlx::query(sqlx::AssertSqlSafe(supersede))
            .bind(DeliveryStatus::Superseded.rank())
            .bind(schedule.issued_at.0)
            .bind(version)
            .bind(device_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "INSERT INTO schedules (device_id, version, schedule_id, issued_at_ns, \
             valid_from_ns, valid_until_ns, deadline_at_ns, status, status_rank, status_at_ns, \
             status_detail, superseded_by_version, attempts, last_attempt_at_ns, \
             next_attempt_at_ns, payload_json) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, 'issued', 0, $4, NULL, NULL, 0, NULL, $4, $8)",
        )
        .bind(device_id)
        .bind(version)
        .bind(schedule.schedule_id.to_string())
        .bind(schedule.issued_at.0)
        .bind(schedule.valid_from.0)
        .bind(schedule.valid_until.0)
        .bind(deadline_at_ns)
        .bind(payload)
        .execute(&mut *tx)
        .await?;
        let stored = schedule_in_tx(&mut tx, device_id, version)
            .await?
            .ok_or_else(|| not_found_schedule(device_id, schedule.version))?;
        tx.commit().await?;
        Ok(ScheduleInsert {
            schedule: stored,
            inserted: true,
            n_superseded,
        })
    }

    /// One schedule version.
    ///
    /// # Errors
    /// Database errors only; unknown is `Ok(None)`.
    pub async fn get_schedule(
        &self,
        device_id: &str,
        version: u64,
    ) -> Result<Option<ScheduleRow>, DbError> {
        let sql = format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE device_id = $1 AND version = $2"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(device_id)
            .bind(input_i64("version", version)?)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(schedule_from_row).transpose()
    }

    /// A device's newest schedule version (whatever its status).
    ///
    /// # Errors
    /// Database errors only; no schedule is `Ok(None)`.
    pub async fn latest_schedule(&self, device_id: &str) -> Result<Option<ScheduleRow>, DbError> {
        Ok(self
            .schedule_history(device_id, None, 1)
            .await?
            .into_iter()
            .next())
    }

    /// A device's schedule versions, newest first, below `before_version`.
    ///
    /// # Errors
    /// [`DbError::InvalidInput`] for a limit outside `1..=PAGE_LIMIT_MAX`.
    pub async fn schedule_history(
        &self,
        device_id: &str,
        before_version: Option<u64>,
        limit: u32,
    ) -> Result<Vec<ScheduleRow>, DbError> {
        let limit = page_limit(limit)?;
        let before = before_version
            .map(|v| input_i64("before_version", v))
            .transpose()?
            .unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE device_id = $1 AND version < $2 \
             ORDER BY version DESC LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(device_id)
            .bind(before)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(schedule_from_row).collect()
    }

    /// Moves a schedule version's delivery status forward (a lower or equal rank, or
    /// anything after a final status, leaves it unchanged) and returns the row.
    ///
    /// # Errors
    /// [`DbError::NotFound`] for an unknown schedule version.
    pub async fn update_schedule_status(
        &self,
        device_id: &str,
        version: u64,
        status: DeliveryStatus,
        at_ns: i64,
        detail: Option<&str>,
    ) -> Result<ScheduleRow, DbError> {
        let version_i64 = input_i64("version", version)?;
        let mut tx = self.begin_write().await?;
        advance_status(&mut tx, device_id, version_i64, status, at_ns, detail, None).await?;
        let row = schedule_in_tx(&mut tx, device_id, version_i64)
            .await?
            .ok_or_else(|| not_found_schedule(device_id, version))?;
        tx.commit().await?;
        Ok(row)
    }

    /// Counts a delivery attempt and sets when the next one is due (`None`: no retry).
    /// A version that is no longer `issued` keeps no retry time.
    ///
    /// # Errors
    /// [`DbError::NotFound`] for an unknown schedule version.
    pub async fn record_schedule_attempt(
        &self,
        device_id: &str,
        version: u64,
        at_ns: i64,
        next_attempt_at_ns: Option<i64>,
    ) -> Result<ScheduleRow, DbError> {
        let version_i64 = input_i64("version", version)?;
        let changed = sqlx::query(
            "UPDATE schedules SET attempts = attempts + 1, last_attempt_at_ns = $1, \
             next_attempt_at_ns = CASE WHEN status = 'issued' THEN $2 ELSE NULL END \
             WHERE device_id = $3 AND version = $4",
        )
        .bind(at_ns)
        .bind(next_attempt_at_ns)
        .bind(device_id)
        .bind(version_i64)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(not_found_schedule(device_id, version));
        }
        self.get_schedule(device_id, version)
            .await?
            .ok_or_else(|| not_found_schedule(device_id, version))
    }

    /// Schedule versions still `issued` whose next attempt is due at `now_ns` and whose
    /// deadline has not passed, earliest due first.
    ///
    /// # Errors
    /// [`DbError::InvalidInput`] for a limit outside `1..=PAGE_LIMIT_MAX`.
    pub async fn list_schedules_due(
        &self,
        now_ns: i64,
        limit: u32,
    ) -> Result<Vec<ScheduleRow>, DbError> {
        let limit = page_limit(limit)?;
        let sql = format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE status = 'issued' \
             AND next_attempt_at_ns <= $1 AND deadline_at_ns > $1 \
             ORDER BY next_attempt_at_ns, device_id, version LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ns)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(schedule_from_row).collect()
    }

    /// Marks `failed` (detail `deadline_passed`) every version not yet accepted
    /// (`issued` or `received`) whose deadline is at or before `now_ns`; returns how
    /// many changed.
    ///
    /// # Errors
    /// Database errors only.
    pub async fn fail_overdue_schedules(&self, now_ns: i64) -> Result<u64, DbError> {
        Ok(sqlx::query(
            "UPDATE schedules SET status = 'failed', status_rank = $1, status_at_ns = $2, \
             status_detail = 'deadline_passed', next_attempt_at_ns = NULL \
             WHERE status IN ('issued', 'received') AND deadline_at_ns <= $2",
        )
        .bind(DeliveryStatus::Failed.rank())
        .bind(now_ns)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Schedule versions per status, for one device or the fleet (`None`); statuses
    /// with no version are left out.
    ///
    /// # Errors
    /// Database errors only.
    pub async fn schedule_status_counts(
        &self,
        device_id: Option<&str>,
    ) -> Result<Vec<StatusCount>, DbError> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM schedules WHERE ($1 IS NULL OR device_id = $1) \
             GROUP BY status ORDER BY status",
        )
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StatusCount {
                    status: col_enum(row, "schedules", "status", DeliveryStatus::parse)?,
                    n_schedules: col_int(row, "schedules", "n")?,
                })
            })
            .collect()
    }

    /// Records an ack idempotently and moves the schedule's status forward (first
    /// recording only). Acks for versions the platform does not know are kept too.
    ///
    /// # Errors
    /// [`DbError::NotFound`] for an unknown device.
    pub async fn record_ack(&self, ack: &Ack, received_at_ns: i64) -> Result<AckOutcome, DbError> {
        let device_id = ack.device.as_str();
        let version = input_i64("version", ack.version)?;
        let (status, detail, by_version) = ack_status(&ack.status)?;
        let mut tx = self.begin_write().await?;
        require_device(&mut tx, device_id).await?;
        let sql = format!(
            "INSERT INTO execution_logs ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (device_id, version, status) DO NOTHING",
            &LOG_COLUMNS["log_id, ".len()..]
        );
        let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(device_id)
            .bind(ack.schedule_id.to_string())
            .bind(version)
            .bind(status.as_str())
            .bind(detail.as_deref())
            .bind(input_i64("outbox_seq", ack.outbox_seq)?)
            .bind(ack.at.0)
            .bind(received_at_ns)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if inserted {
            advance_status(
                &mut tx,
                device_id,
                version,
                status,
                ack.at.0,
                detail.as_deref(),
                by_version,
            )
            .await?;
        }
        let schedule = schedule_in_tx(&mut tx, device_id, version).await?;
        tx.commit().await?;
        Ok(AckOutcome { inserted, schedule })
    }

    /// A device's acks, newest first, below `before_log_id`.
    ///
    /// # Errors
    /// [`DbError::InvalidInput`] for a limit outside `1..=PAGE_LIMIT_MAX`.
    pub async fn list_execution_logs(
        &self,
        device_id: &str,
        before_log_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ExecutionLogRow>, DbError> {
        let limit = page_limit(limit)?;
        let sql = format!(
            "SELECT {LOG_COLUMNS} FROM execution_logs WHERE device_id = $1 AND log_id < $2 \
             ORDER BY log_id DESC LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(device_id)
            .bind(before_log_id.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ExecutionLogRow {
                    log_id: col(row, "log_id")?,
                    device_id: col(row, "device_id")?,
                    schedule_id: col(row, "schedule_id")?,
                    version: col_int(row, "execution_logs", "version")?,
                    status: col_enum(row, "execution_logs", "status", DeliveryStatus::parse)?,
                    status_detail: col(row, "status_detail")?,
                    outbox_seq: col_int(row, "execution_logs", "outbox_seq")?,
                    at_ns: col(row, "at_ns")?,
                    received_at_ns: col(row, "received_at_ns")?,
                })
            })
            .collect()
    }

    /// Stores a telemetry batch (samples already stored are skipped) and keeps the
    /// newest state of charge on the device; returns how many samples were new.
    ///
    /// # Errors
    /// [`DbError::NotFound`] for an unknown device; [`DbError::InvalidInput`] for
    /// counters beyond `i64::MAX`.
    pub async fn insert_telemetry(
        &self,
        batch: &TelemetryBatch,
        received_at_ns: i64,
    ) -> Result<u64, DbError> {
        const N_COLUMNS: usize = 10;
        let device_id = batch.device.as_str();
        let mut tx = self.begin_write().await?;
        require_device(&mut tx, device_id).await?;
        let mut n_inserted = 0;
        for chunk in batch.samples.chunks(INSERT_BATCH_ROWS_MAX) {
            let mut sql = format!("INSERT INTO telemetry ({TELEMETRY_COLUMNS}) VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&placeholders(1 + i * N_COLUMNS, N_COLUMNS));
            }
            sql.push_str(" ON CONFLICT (device_id, at_ns) DO NOTHING");
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for sample in chunk {
                query = query
                    .bind(device_id)
                    .bind(sample.at.0)
                    .bind(input_i64("outbox_seq", sample.outbox_seq)?)
                    .bind(sample.soc_wh)
                    .bind(sample.power_w)
                    .bind(input_i64("charged_wh", sample.charged_wh)?)
                    .bind(input_i64("discharged_wh", sample.discharged_wh)?)
                    .bind(i64::from(sample.temperature_mc))
                    .bind(i64::from(sample.health.0))
                    .bind(received_at_ns);
            }
            n_inserted += query.execute(&mut *tx).await?.rows_affected();
        }
        if let Some(newest) = batch.samples.iter().max_by_key(|s| s.at) {
            sqlx::query(
                "UPDATE devices SET last_soc_wh = $1, last_soc_at_ns = $2 \
                 WHERE device_id = $3 AND (last_soc_at_ns IS NULL OR last_soc_at_ns < $2)",
            )
            .bind(newest.soc_wh)
            .bind(newest.at.0)
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(n_inserted)
    }

    /// A device's newest telemetry sample.
    ///
    /// # Errors
    /// Database errors only; none is `Ok(None)`.
    pub async fn latest_telemetry(&self, device_id: &str) -> Result<Option<TelemetryRow>, DbError> {
        let sql = format!(
            "SELECT {TELEMETRY_COLUMNS} FROM telemetry WHERE device_id = $1 \
             ORDER BY at_ns DESC LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(telemetry_from_row).transpose()
    }

    /// Devices whose newest telemetry sample has a flag of `fault_mask` set, newest
    /// sample first, with that sample.
    ///
    /// # Errors
    /// [`DbError::InvalidInput`] for a limit outside `1..=PAGE_LIMIT_MAX`.
    pub async fn devices_in_fault(
        &self,
        fault_mask: u32,
        limit: u32,
    ) -> Result<Vec<TelemetryRow>, DbError> {
        let limit = page_limit(limit)?;
        // The correlated MAX uses the (device_id, at_ns) primary key.
        let sql = format!(
            "SELECT {TELEMETRY_COLUMNS} FROM telemetry t WHERE (health_flags & $1) <> 0 \
             AND at_ns = (SELECT MAX(n.at_ns) FROM telemetry n WHERE n.device_id = t.device_id) \
             ORDER BY at_ns DESC, device_id LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(fault_mask))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(telemetry_from_row).collect()
    }

    /// A device's samples with `from_ns <= at_ns < to_ns`, oldest first.
    ///
    /// # Errors
    /// [`DbError::InvalidInput`] for a limit outside `1..=PAGE_LIMIT_MAX`.
    pub async fn list_telemetry(
        &self,
        device_id: &str,
        from_ns: i64,
        to_ns: i64,
        limit: u32,
    ) -> Result<Vec<TelemetryRow>, DbError> {
        let limit = page_limit(limit)?;
        let sql = format!(
            "SELECT {TELEMETRY_COLUMNS} FROM telemetry WHERE device_id = $1 \
             AND at_ns >= $2 AND at_ns < $3 ORDER BY at_ns LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(device_id)
            .bind(from_ns)
            .bind(to_ns)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(telemetry_from_row).collect()
    }
}

fn checked_device_id(device_id: &str) -> Result<(), DbError> {
    DeviceId::new(device_id)
        .map(|_| ())
        .map_err(|e| DbError::InvalidInput {
            field: "device_id",
            message: e.to_string(),
        })
}

fn not_found_device(device_id: &str) -> DbError {
    DbError::NotFound {
        entity: "device",
        key: device_id.to_string(),
    }
}

fn not_found_schedule(device_id: &str, version: u64) -> DbError {
    DbError::NotFound {
        entity: "schedule",
        key: format!("{device_id} v{version}"),
    }
}

async fn require_device(tx: &mut Tx, device_id: &str) -> Result<(), DbError> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT device_id FROM devices WHERE device_id = $1")
            .bind(device_id)
            .fetch_optional(&mut **tx)
            .await?;
    match found {
        Some(_) => Ok(()),
        None => Err(not_found_device(device_id)),
    }
}

async fn schedule_in_tx(
    tx: &mut Tx,
    device_id: &str,
    version: i64,
) -> Result<Option<ScheduleRow>, DbError> {
    let sql =
        format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE device_id = $1 AND version = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(device_id)
        .bind(version)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(schedule_from_row).transpose()
}

/// Moves a schedule version's status forward; a no-op for unknown versions and for
/// statuses of equal or lower rank.
async fn advance_status(
    tx: &mut Tx,
    device_id: &str,
    version: i64,
    status: DeliveryStatus,
    at_ns: i64,
    detail: Option<&str>,
    superseded_by: Option<i64>,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE schedules SET status = $1, status_rank = $2, status_at_ns = $3, \
         status_detail = COALESCE($4, status_detail), \
         superseded_by_version = COALESCE($5, superseded_by_version), \
         next_attempt_at_ns = NULL \
         WHERE device_id = $6 AND version = $7 AND status_rank < $2",
    )
    .bind(status.as_str())
    .bind(status.rank())
    .bind(at_ns)
    .bind(detail)
    .bind(superseded_by)
    .bind(device_id)
    .bind(version)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// An ack's status as (delivery status, detail, superseding version).
fn ack_status(
    status: &AckStatus,
) -> Result<(DeliveryStatus, Option<String>, Option<i64>), DbError> {
    Ok(match status {
        AckStatus::Received => (DeliveryStatus::Received, None, None),
        AckStatus::Accepted => (DeliveryStatus::Accepted, None, None),
        AckStatus::Started => (DeliveryStatus::Started, None, None),
        AckStatus::Completed => (DeliveryStatus::Completed, None, None),
        AckStatus::Superseded { by_version } => (
            DeliveryStatus::Superseded,
            Some(format!("superseded_by_version_{by_version}")),
            Some(input_i64("by_version", *by_version)?),
        ),
        AckStatus::Rejected(reason) => (
            DeliveryStatus::Rejected,
            Some(snake_case(&format!("{reason:?}"))),
            None,
        ),
        AckStatus::Failed(reason) => (
            DeliveryStatus::Failed,
            Some(snake_case(&format!("{reason:?}"))),
            None,
        ),
    })
}

/// `OlderVersion` → `older_version`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn device_from_row(row: &AnyRow) -> Result<DeviceRow, DbError> {
    Ok(DeviceRow {
        device_id: col(row, "device_id")?,
        name: col(row, "name")?,
        public_key_hex: col(row, "public_key_hex")?,
        cert_fingerprint_sha256: col(row, "cert_fingerprint_sha256")?,
        mqtt_credential_hash: col(row, "mqtt_credential_hash")?,
        capacity_wh: col(row, "capacity_wh")?,
        max_charge_w: col(row, "max_charge_w")?,
        max_discharge_w: col(row, "max_discharge_w")?,
        registered_at_ns: col(row, "registered_at_ns")?,
        online: col::<i64>(row, "online")? != 0,
        last_seen_at_ns: col(row, "last_seen_at_ns")?,
        last_soc_wh: col(row, "last_soc_wh")?,
        last_soc_at_ns: col(row, "last_soc_at_ns")?,
        latest_schedule_version: col_int(row, "devices", "latest_schedule_version")?,
    })
}

fn schedule_from_row(row: &AnyRow) -> Result<ScheduleRow, DbError> {
    Ok(ScheduleRow {
        device_id: col(row, "device_id")?,
        version: col_int(row, "schedules", "version")?,
        schedule_id: col(row, "schedule_id")?,
        issued_at_ns: col(row, "issued_at_ns")?,
        valid_from_ns: col(row, "valid_from_ns")?,
        valid_until_ns: col(row, "valid_until_ns")?,
        deadline_at_ns: col(row, "deadline_at_ns")?,
        status: col_enum(row, "schedules", "status", DeliveryStatus::parse)?,
        status_at_ns: col(row, "status_at_ns")?,
        status_detail: col(row, "status_detail")?,
        superseded_by_version: col_int_opt(row, "schedules", "superseded_by_version")?,
        attempts: col_int(row, "schedules", "attempts")?,
        last_attempt_at_ns: col(row, "last_attempt_at_ns")?,
        next_attempt_at_ns: col(row, "next_attempt_at_ns")?,
        payload: col_stored_json(row, "schedules", "payload_json")?,
    })
}

fn telemetry_from_row(row: &AnyRow) -> Result<TelemetryRow, DbError> {
    Ok(TelemetryRow {
        device_id: col(row, "device_id")?,
        at_ns: col(row, "at_ns")?,
        outbox_seq: col_int(row, "telemetry", "outbox_seq")?,
        soc_wh: col(row, "soc_wh")?,
        power_w: col(row, "power_w")?,
        charged_wh: col_int(row, "telemetry", "charged_wh")?,
        discharged_wh: col_int(row, "telemetry", "discharged_wh")?,
        temperature_mc: col_int(row, "telemetry", "temperature_mc")?,
        health_flags: col_int(row, "telemetry", "health_flags")?,
        received_at_ns: col(row, "received_at_ns")?,
    })
}

#[cfg(test)]
mod tests {
    use super::snake_case;

    #[test]
    fn snake_case_splits_words() {
        assert_eq!(snake_case("OlderVersion"), "older_version");
        assert_eq!(snake_case("Expired"), "expired");
        assert_eq!(snake_case("SocLimit"), "soc_limit");
    }
}
