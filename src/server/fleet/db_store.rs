//! [`DispatchStore`] for the platform database ([`Db`], SQLite or PostgreSQL).
//!
//! Each method maps onto one repository call of `crate::db::fleet` (two for
//! telemetry: the samples, then the device's last-seen time):
//!
//! | store method        | repository                                              |
//! |---------------------|---------------------------------------------------------|
//! | `save_schedule`     | `insert_schedule` (also supersedes older versions)      |
//! | `update_delivery`   | `record_schedule_attempt` / `update_schedule_status`    |
//! | `record_ack`        | `record_ack` (idempotent; advances the status itself)   |
//! | `record_telemetry`  | `insert_telemetry` + `update_device_status`             |
//! | `record_heartbeat`  | `update_device_status`                                  |
//!
//! State changes caused by agent acks (`by_agent`) are skipped: `record_ack` already
//! moved the stored status in the same transaction as the ack. The database only
//! moves statuses forward, so a late or repeated update changes nothing.
//!
//! Every device must be registered in the database first; writes for unknown devices
//! fail with [`StoreError::UnknownDevice`].

use voltex_dispatch::{Ack, DeviceId, Heartbeat, TelemetryBatch};
use voltex_market::UtcNanos;

use super::TransportKind;
use super::store::{DeliveryUpdate, DispatchStore, ScheduleVersionRow, StoreError};
use super::tracker::{DeliveryState, FailureCause};
use crate::db::{Db, DbError, DeliveryStatus, DeviceStatusUpdate};

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
        Db::record_ack(self, ack, received_at.0)
            .await
            .map(|outcome| outcome.inserted)
            .map_err(|e| store_error(e, &ack.device))
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
}
