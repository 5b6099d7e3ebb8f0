//! [`DispatchStore`] for the platform database ([`Db`], SQLite or PostgreSQL).
//!
//! Each method maps onto one repository call of `crate::db::fleet` (two for
//! telemetry: the samples, then the device's last-seen time):
//!
//! | store method        | repository                                              |
//! |---------------------|---------------------------------------------------------|
//! | `save_schedule`     | `insert_schedule` (also supersedes older versions)      |
//! | `update_delivery`   | `record_schedule_attempt` / `update_schedule_status`    |
//! | `record_ack`        | `record_ack` (idempotent; advances the status itself) + `update_device_status` |
//! | `record_telemetry`  | `insert_telemetry` + `update_device_status`             |
//! | `record_heartbeat`  | `update_device_status`                                  |
//! | `load_resume_state` | `list_devices` (pages) + `latest_schedule` per device   |
//!
//! `load_resume_state` reads one query per device with a schedule: about a second per
//! 10,000 devices on SQLite, once per start. The database keeps no roll-out id, so
//! resumed versions come back without one. A stored status maps back to the tracker's
//! state with its detail (rejection reason, failure cause, superseding version); a
//! detail it cannot read maps to the nearest state (e.g. `Rejected { Malformed }`).
//!
//! State changes caused by agent acks (`by_agent`) are skipped: `record_ack` already
//! moved the stored status in the same transaction as the ack. The database only
//! moves statuses forward, so a late or repeated update changes nothing.
//!
//! Every device must be registered in the database first; writes for unknown devices
//! fail with [`StoreError::UnknownDevice`].

use std::sync::Arc;

use voltex_dispatch::message::ScheduleRejection;
use voltex_dispatch::{Ack, DeviceId, Heartbeat, TelemetryBatch};
use voltex_market::UtcNanos;

use super::TransportKind;
use super::store::{
    DeliveryUpdate, DispatchStore, ResumeDevice, ResumeVersion, ScheduleVersionRow, StoreError,
};
use super::tracker::{DeliveryState, FailureCause};
use crate::db::{Db, DbError, DeliveryStatus, DeviceStatusUpdate, PAGE_LIMIT_MAX, ScheduleRow};

fn store_error(error: DbError, device: &DeviceId) -> StoreError {
    match error {
        DbError::NotFound {
            entity: "device", ..
        } => StoreError::UnknownDevice(device.clone()),
        DbError::StaleScheduleVersion { .. } | DbError::InvalidInput { .. } => {
            StoreError::Refused(error.to_string())
        }
        other => StoreError::Backend(Box::new(other)),
    }
}

/// The stored status and detail of a delivery state.
fn status_of(state: DeliveryState) -> (DeliveryStatus, Option<String>) {
    match state {
        DeliveryState::Issued => (DeliveryStatus::Issued, None),
        DeliveryState::Received => (DeliveryStatus::Received, None),
        DeliveryState::Accepted => (DeliveryStatus::Accepted, None),
        DeliveryState::Started => (DeliveryStatus::Started, None),
        DeliveryState::Completed => (DeliveryStatus::Completed, None),
        DeliveryState::Rejected { reason } => {
            (DeliveryStatus::Rejected, Some(format!("{reason:?}")))
        }
        DeliveryState::Superseded { by_version } => (
            DeliveryStatus::Superseded,
            Some(format!("superseded_by_version_{by_version}")),
        ),
        DeliveryState::Failed { cause } => {
            let detail = match cause {
                FailureCause::DeadlinePassed => "deadline_passed",
                FailureCause::DriverFault => "driver_fault",
                FailureCause::EmergencyStop => "emergency_stop",
                FailureCause::SocLimit => "soc_limit",
            };
            (DeliveryStatus::Failed, Some(detail.to_string()))
        }
    }
}

/// `older_version`, `OlderVersion` and `olderversion` all read as `olderversion`.
fn detail_key(detail: Option<&str>) -> String {
    detail
        .unwrap_or("")
        .chars()
        .filter(|c| *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The tracker state of a stored status (the inverse of [`status_of`] and of the
/// repository's ack details).
fn state_of(row: &ScheduleRow) -> DeliveryState {
    let key = detail_key(row.status_detail.as_deref());
    match row.status {
        DeliveryStatus::Issued => DeliveryState::Issued,
        DeliveryStatus::Received => DeliveryState::Received,
        DeliveryStatus::Accepted => DeliveryState::Accepted,
        DeliveryStatus::Started => DeliveryState::Started,
        DeliveryStatus::Completed => DeliveryState::Completed,
        DeliveryStatus::Rejected => {
            let reasons = [
                ScheduleRejection::InvalidSignature,
                ScheduleRejection::WrongDevice,
                ScheduleRejection::Expired,
                ScheduleRejection::Late,
                ScheduleRejection::OlderVersion,
                ScheduleRejection::ExceedsDeviceLimits,
                ScheduleRejection::Malformed,
            ];
            let reason = reasons
                .into_iter()
                .find(|reason| format!("{reason:?}").to_ascii_lowercase() == key)
                .unwrap_or(ScheduleRejection::Malformed);
            DeliveryState::Rejected { reason }
        }
        DeliveryStatus::Superseded => {
            let by_version = row.superseded_by_version.unwrap_or_else(|| {
                key.strip_prefix("supersededbyversion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(row.version.saturating_add(1))
            });
            DeliveryState::Superseded { by_version }
        }
        DeliveryStatus::Failed => {
            let cause = match key.as_str() {
                "driverfault" => FailureCause::DriverFault,
                "emergencystop" => FailureCause::EmergencyStop,
                "soclimit" => FailureCause::SocLimit,
                _ => FailureCause::DeadlinePassed,
            };
            DeliveryState::Failed { cause }
        }
    }
}

fn backend(error: DbError) -> StoreError {
    StoreError::Backend(Box::new(error))
}

impl DispatchStore for Db {
    async fn save_schedule(&self, row: &ScheduleVersionRow) -> Result<(), StoreError> {
        self.insert_schedule(&row.signed, row.deadline.0)
            .await
            .map(|_| ())
            .map_err(|e| store_error(e, &row.signed.schedule.device))
    }

    async fn update_delivery(&self, update: &DeliveryUpdate) -> Result<(), StoreError> {
        let result = match update {
            DeliveryUpdate::Attempt {
                device,
                version,
                at,
                next_attempt_at,
                ..
            } => self
                .record_schedule_attempt(
                    device.as_str(),
                    *version,
                    at.0,
                    next_attempt_at.map(|t| t.0),
                )
                .await
                .map_err(|e| (e, device)),
            DeliveryUpdate::State { by_agent: true, .. } => return Ok(()),
            DeliveryUpdate::State {
                device,
                version,
                state,
                at,
                ..
            } => {
                let (status, detail) = status_of(*state);
                self.update_schedule_status(
                    device.as_str(),
                    *version,
                    status,
                    at.0,
                    detail.as_deref(),
                )
                .await
                .map_err(|e| (e, device))
            }
        };
        match result {
            Ok(_) => Ok(()),
            // A version the database does not hold (e.g. saved elsewhere): nothing to do.
            Err((
                DbError::NotFound {
                    entity: "schedule", ..
                },
                _,
            )) => Ok(()),
            Err((error, device)) => Err(store_error(error, device)),
        }
    }

    async fn record_ack(
        &self,
        ack: &Ack,
        _transport: TransportKind,
        received_at: UtcNanos,
    ) -> Result<bool, StoreError> {
        let inserted = Db::record_ack(self, ack, received_at.0)
            .await
            .map(|outcome| outcome.inserted)
            .map_err(|e| store_error(e, &ack.device))?;
        // Hearing an ack is hearing from the device. A failure here leaves the ack
        // stored: reported as an error, the agent re-sends and the ack is a duplicate.
        self.update_device_status(&DeviceStatusUpdate {
            device_id: ack.device.to_string(),
            seen_at_ns: received_at.0,
            online: Some(true),
            soc: None,
        })
        .await
        .map_err(|e| store_error(e, &ack.device))?;
        Ok(inserted)
    }

    async fn record_telemetry(
        &self,
        batch: &TelemetryBatch,
        received_at: UtcNanos,
    ) -> Result<u64, StoreError> {
        let n_new = self
            .insert_telemetry(batch, received_at.0)
            .await
            .map_err(|e| store_error(e, &batch.device))?;
        self.update_device_status(&DeviceStatusUpdate {
            device_id: batch.device.to_string(),
            seen_at_ns: received_at.0,
            online: Some(true),
            soc: None,
        })
        .await
        .map_err(|e| store_error(e, &batch.device))?;
        Ok(n_new)
    }

    async fn record_heartbeat(
        &self,
        heartbeat: &Heartbeat,
        received_at: UtcNanos,
    ) -> Result<(), StoreError> {
        self.update_device_status(&DeviceStatusUpdate {
            device_id: heartbeat.device.to_string(),
            seen_at_ns: received_at.0,
            online: Some(true),
            soc: None,
        })
        .await
        .map(|_| ())
        .map_err(|e| store_error(e, &heartbeat.device))
    }

    async fn load_resume_state(&self) -> Result<Vec<ResumeDevice>, StoreError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .list_devices(after.as_deref(), None, PAGE_LIMIT_MAX)
                .await
                .map_err(backend)?;
            let Some(last) = page.last() else { break };
            after = Some(last.device_id.clone());
            for row in &page {
                let Ok(device) = DeviceId::new(&row.device_id) else {
                    tracing::warn!(device = %row.device_id, "stored device id is not valid; skipped");
                    continue;
                };
                let latest = if row.latest_schedule_version == 0 {
                    None
                } else {
                    match self
                        .latest_schedule(&row.device_id)
                        .await
                        .map_err(backend)?
                    {
                        Some(schedule) => Some(ResumeVersion {
                            rollout: None,
                            signed: Arc::new(schedule.signed_schedule().map_err(backend)?),
                            deadline: UtcNanos(schedule.deadline_at_ns),
                            state: state_of(&schedule),
                            attempts: schedule.attempts,
                        }),
                        None => None,
                    }
                };
                out.push(ResumeDevice {
                    device,
                    last_seen: row.last_seen_at_ns.map(UtcNanos),
                    last_soc_wh: row.last_soc_wh,
                    latest,
                });
            }
            if page.len() < PAGE_LIMIT_MAX as usize {
                break;
            }
        }
        Ok(out)
    }
}
