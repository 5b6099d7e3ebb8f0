//! Device registration: `POST /api/v1/devices` (operators).
//!
//! Stores the device row (id, name, capacity and power limits, optionally the
//! device's public key and the SHA-256 fingerprint of a certificate issued with
//! `voltex certs issue-device`) and issues a per-device MQTT credential: a random
//! 256-bit password, returned once in the answer and stored only as a BLAKE3 hash
//! (`blake3:<hex>`; a fast hash is enough for a uniformly random 256-bit secret, which
//! cannot be guessed from its hash by brute force). The MQTT user name is the device
//! id. A device id or certificate fingerprint registered already is a 409
//! `device_exists`.
//!
//! `POST /api/v1/devices/{device_id}/certificate` (operators) issues a registered
//! device its QUIC client certificate (common name = device id, `clientAuth`),
//! signed by the server's device CA, and records its SHA-256 fingerprint on the device
//! (a re-issue replaces it). With a body `{"csr_pem": ...}` (made on the device by
//! `voltex-agent csr`) the server signs the request's public key and the private key
//! never leaves the device; a request that does not parse, whose signature does not
//! verify, or that names another device is a 400 `invalid_csr` / `csr_device_mismatch`.
//! Without a body the key pair is generated here and the private key is returned once
//! and never stored. A device holds one certificate: the one a new issue replaces is
//! revoked. `DELETE /api/v1/devices/{device_id}/certificate` (operators) revokes the
//! device's certificate (409 `no_certificate` if it has none). Revocations are stored
//! (`revoked_certificates`) and added to [`AppState::revoked_certificates`](super::AppState),
//! which `voltex up`'s QUIC endpoint checks on every connection and which closes the
//! live connections of a revoked certificate. Only a server given a CA (`device_ca_dir`, or
//! `voltex up`'s per-run CA) issues certificates; any other answers 503 `no_device_ca`,
//! and the CA stays offline (`voltex certs issue-device`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Ctx, SharedState};
use crate::db::{DbError, DeviceRow, NewDevice};
use crate::server::auth::{Auth, Role};
use crate::server::problem::{ApiError, Problem};

/// A device to register.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDevice {
    /// Device id: ASCII letters, digits, `.`, `_`, `-`, at most 64 characters.
    pub device_id: String,
    /// Display name.
    pub name: String,
    /// Usable capacity, Wh.
    pub capacity_wh: i64,
    /// Maximum charging power, W.
    pub max_charge_w: i64,
    /// Maximum discharging power, W.
    pub max_discharge_w: i64,
    /// The device's public key, hex.
    #[serde(default)]
    pub public_key_hex: Option<String>,
    /// SHA-256 fingerprint of its certificate (from the platform CA), hex.
    #[serde(default)]
    pub cert_fingerprint_sha256: Option<String>,
}

/// The registered device and its credential (the password is shown only here).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RegisteredDevice {
    /// The stored row.
    #[schema(value_type = Object)]
    pub device: DeviceRow,
    /// MQTT user name (the device id).
    pub mqtt_username: String,
    /// MQTT password: store it on the device; the platform keeps only its hash.
    pub mqtt_password: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn is_hex(text: &str, len: Option<usize>) -> bool {
    !text.is_empty()
        && text.chars().all(|c| c.is_ascii_hexdigit())
        && len.is_none_or(|len| text.len() == len)
}

/// Registers a device and issues its MQTT credential.
#[utoipa::path(post, path = "/api/v1/devices", tag = "fleet", request_body = RegisterDevice,
    security(("bearer" = [])),
    responses((status = 201, body = RegisteredDevice), (status = 400, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn register_device(
    State(state): State<SharedState>,
    auth: Auth,
    ctx: Ctx,
    body: Result<Json<RegisterDevice>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<RegisteredDevice>), ApiError> {
    let mut target = "device:-".to_string();
    let result: Result<RegisteredDevice, ApiError> = async {
        auth.require(&[Role::Operator])?;
        let Json(body) = body?;
        target = format!("device:{}", body.device_id);
        if voltex_dispatch::DeviceId::new(body.device_id.clone()).is_err() {
            return Err(ApiError::bad_request(
                "invalid_device_id",
                format!("{:?} is not a valid device id", body.device_id),
            ));
        }
        if let Some(key) = &body.public_key_hex
            && !is_hex(key, None)
        {
            return Err(ApiError::bad_request(
                "invalid_public_key",
                "public_key_hex is not hex",
            ));
        }
        if let Some(fingerprint) = &body.cert_fingerprint_sha256
            && !is_hex(fingerprint, Some(64))
        {
            return Err(ApiError::bad_request(
                "invalid_fingerprint",
                "cert_fingerprint_sha256 is not 64 hex digits",
            ));
        }
        let password = hex(&rand::random::<[u8; 32]>());
        let hash = format!("blake3:{}", blake3::hash(password.as_bytes()).to_hex());
        let device = state
            .db
            .register_device(&NewDevice {
                device_id: body.device_id.clone(),
                name: body.name.clone(),
                public_key_hex: body.public_key_hex.clone(),
                cert_fingerprint_sha256: body
                    .cert_fingerprint_sha256
                    .as_ref()
                    .map(|text| text.to_ascii_lowercase()),
                mqtt_credential_hash: Some(hash),
                capacity_wh: body.capacity_wh,
                max_charge_w: body.max_charge_w,
                max_discharge_w: body.max_discharge_w,
                registered_at_ns: state.exchange.now().nanos(),
            })
            .await
            .map_err(|error| match error {
                DbError::AlreadyExists { key, .. } => ApiError::new(
                    StatusCode::CONFLICT,
                    "device_exists",
                    format!("{key} (device id or certificate) is registered already"),
                ),
                DbError::InvalidInput { field, message } => {
                    ApiError::bad_request("invalid_value", format!("{field}: {message}"))
                }
                other if other.is_unavailable() => {
                    ApiError::unavailable(format!("database unavailable: {other}"))
                }
                other => ApiError::internal(other),
            })?;
        Ok(RegisteredDevice {
            mqtt_username: device.device_id.clone(),
            device,
            mqtt_password: password,
        })
    }
    .await;
    state
        .audit(&ctx, &auth, "device.register", &target, &result)
        .await;
    Ok((StatusCode::CREATED, Json(result?)))
}

/// A device certificate, issued once.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct IssuedDeviceCertificate {
    /// The device (the certificate's common name).
    pub device_id: String,
    /// The client certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PKCS#8 PEM) when the server made the key pair: store it on the
    /// device; the platform keeps none. `null` when the certificate was signed from the
    /// device's CSR (the key is on the device already).
    pub key_pem: Option<String>,
    /// The CA certificate (PEM) that signed it and the platform's server certificate.
    pub ca_cert_pem: String,
    /// SHA-256 of the certificate's DER, hex, as recorded on the device.
    pub cert_fingerprint_sha256: String,
}

/// Body of `POST /api/v1/devices/{device_id}/certificate` (optional).
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateRequest {
    /// The device's certificate signing request (PKCS#10 PEM, `voltex-agent csr`): its
    /// common name must be the device id. Absent: the server makes the key pair.
    pub csr_pem: Option<String>,
}

/// Issues a registered device its QUIC client certificate.
#[utoipa::path(post, path = "/api/v1/devices/{device_id}/certificate", tag = "fleet",
    params(("device_id" = String, Path, description = "Device id")),
    request_body(content = Option<CertificateRequest>, description = "Optional: the device's CSR"),
    security(("bearer" = [])),
    responses((status = 201, body = IssuedDeviceCertificate), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 503, body = Problem)))]
pub async fn issue_certificate(
    State(state): State<SharedState>,
    auth: Auth,
    ctx: Ctx,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<IssuedDeviceCertificate>), ApiError> {
    use voltex_dispatch::transport::certs;
    let mut target = "device:-".to_string();
    let result: Result<IssuedDeviceCertificate, ApiError> = async {
        auth.require(&[Role::Operator])?;
        let Path(device_id) = path?;
        // The body is optional, so it is parsed here rather than by the `Json`
        // extractor (which wants a content type even for no body).
        let request: CertificateRequest = if body.iter().all(u8::is_ascii_whitespace) {
            CertificateRequest { csr_pem: None }
        } else {
            serde_json::from_slice(&body).map_err(|error| {
                ApiError::bad_request("malformed_body", format!("certificate request: {error}"))
            })?
        };
        target = format!("device:{device_id}");
        let device = voltex_dispatch::DeviceId::new(device_id.clone()).map_err(|_| {
            ApiError::bad_request(
                "invalid_device_id",
                format!("{device_id:?} is not a valid device id"),
            )
        })?;
        let ca = state.device_ca.get().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_device_ca",
                "this server holds no device CA (set device_ca_dir, or use voltex certs issue-device)",
            )
        })?;
        let db_error = |error: DbError| match error {
            DbError::NotFound { .. } => {
                ApiError::not_found(format!("device {device_id} is not registered"))
            }
            other if other.is_unavailable() => {
                ApiError::unavailable(format!("database unavailable: {other}"))
            }
            other => ApiError::internal(other),
        };
        // Unknown devices get no certificate (and cost no key generation).
        state
            .db
            .get_device(&device_id)
            .await
            .map_err(db_error)?
            .ok_or_else(|| ApiError::not_found(format!("device {device_id} is not registered")))?;
        let (cert_pem, key_pem) = match &request.csr_pem {
            Some(csr_pem) => {
                let cert_pem = certs::sign_device_csr(ca, &device, csr_pem).map_err(|error| match error {
                    certs::CertError::Csr(reason) => {
                        ApiError::bad_request("invalid_csr", format!("certificate signing request: {reason}"))
                    }
                    mismatch @ certs::CertError::CsrDeviceMismatch { .. } => {
                        ApiError::bad_request("csr_device_mismatch", mismatch.to_string())
                    }
                    other => ApiError::internal(other),
                })?;
                (cert_pem, None)
            }
            None => {
                let issued = certs::issue_device(ca, &device).map_err(ApiError::internal)?;
                (issued.cert_pem, Some(issued.key_pem))
            }
        };
        let fingerprint = certs::fingerprint_sha256(&cert_pem).map_err(ApiError::internal)?;
        // One certificate per device: the one being replaced stops working now.
        if let Some(replaced) = state
            .db
            .revoke_device_certificate(&device_id, "replaced", state.exchange.now().nanos())
            .await
            .map_err(db_error)?
        {
            state.revoked_certificates.revoke(&replaced);
        }
        state
            .db
            .set_device_cert_fingerprint(&device_id, &fingerprint)
            .await
            .map_err(db_error)?;
        Ok(IssuedDeviceCertificate {
            device_id: device_id.clone(),
            cert_pem,
            key_pem,
            ca_cert_pem: ca.cert_pem.clone(),
            cert_fingerprint_sha256: fingerprint,
        })
    }
    .await;
    state
        .audit(&ctx, &auth, "device.certificate", &target, &result)
        .await;
    Ok((StatusCode::CREATED, Json(result?)))
}

/// Answer of `DELETE /api/v1/devices/{device_id}/certificate`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RevokedDeviceCertificate {
    /// The device.
    pub device_id: String,
    /// SHA-256 of the revoked certificate's DER, hex: refused from now on.
    pub revoked_fingerprint_sha256: String,
}

/// Revokes a device's QUIC client certificate.
#[utoipa::path(delete, path = "/api/v1/devices/{device_id}/certificate", tag = "fleet",
    params(("device_id" = String, Path, description = "Device id")),
    security(("bearer" = [])),
    responses((status = 200, body = RevokedDeviceCertificate), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn revoke_certificate(
    State(state): State<SharedState>,
    auth: Auth,
    ctx: Ctx,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<RevokedDeviceCertificate>, ApiError> {
    let mut target = "device:-".to_string();
    let result: Result<RevokedDeviceCertificate, ApiError> = async {
        auth.require(&[Role::Operator])?;
        let Path(device_id) = path?;
        target = format!("device:{device_id}");
        if voltex_dispatch::DeviceId::new(device_id.clone()).is_err() {
            return Err(ApiError::bad_request(
                "invalid_device_id",
                format!("{device_id:?} is not a valid device id"),
            ));
        }
        let revoked = state
            .db
            .revoke_device_certificate(&device_id, "revoked", state.exchange.now().nanos())
            .await
            .map_err(|error| match error {
                DbError::NotFound { .. } => {
                    ApiError::not_found(format!("device {device_id} is not registered"))
                }
                other if other.is_unavailable() => {
                    ApiError::unavailable(format!("database unavailable: {other}"))
                }
                other => ApiError::internal(other),
            })?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "no_certificate",
                    format!("device {device_id} has no certificate to revoke"),
                )
            })?;
        state.revoked_certificates.revoke(&revoked);
        Ok(RevokedDeviceCertificate {
            device_id: device_id.clone(),
            revoked_fingerprint_sha256: revoked,
        })
    }
    .await;
    state
        .audit(&ctx, &auth, "device.certificate.revoke", &target, &result)
        .await;
    Ok(Json(result?))
}
