//! API errors as RFC 9457 problem documents (`application/problem+json`).
//!
//! Every error the API returns is an [`ApiError`]: a stable machine-readable `code`
//! (part of the API contract: clients switch on it), an HTTP status, and a human
//! `detail`. Internal errors are logged with the correlation id and reported without
//! internals.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The problem document body.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// URI reference of the problem type (`urn:voltex:problem:{code}`).
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong this time.
    pub detail: String,
    /// Stable error code (snake case).
    pub code: String,
}

/// An error returned by a handler.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `price_off_tick`.
    pub code: &'static str,
    /// Human-readable detail.
    pub detail: String,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            detail: detail.into(),
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 404 `not_found`.
    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
    }

    /// 403 `forbidden`.
    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 500 `internal`; the cause is logged, not returned.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(%cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }

    /// 503 `unavailable`.
    pub fn unavailable(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        Problem {
            type_uri: format!("urn:voltex:problem:{}", self.code),
            title: self
                .status
                .canonical_reason()
                .unwrap_or("error")
                .to_string(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_string(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.problem())).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

/// Turns axum's JSON extractor failures into problem documents.
impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> ApiError {
        ApiError::new(rejection.status(), "malformed_body", rejection.body_text())
    }
}

/// Turns path/query extractor failures into problem documents.
impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::PathRejection) -> ApiError {
        ApiError::new(rejection.status(), "malformed_path", rejection.body_text())
    }
}

/// Turns query-string extractor failures into problem documents.
impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> ApiError {
        ApiError::new(rejection.status(), "malformed_query", rejection.body_text())
    }
}

/// The problem code and detail of a journaled book command that `event` refuses
/// (the engine's refusal — an unlisted product — or the book's), or `None`. The API's
/// answer and the command's audit record projected from the journal both use it, so
/// they name a refusal alike.
pub fn book_command_refusal(event: &voltex_engine::EngineEvent) -> Option<(&'static str, String)> {
    use voltex_engine::EventKind;
    use voltex_market::book::BookEvent;
    match event.kind {
        EventKind::Rejected { reason } => Some(("unknown_product", reason.to_string())),
        EventKind::Book(BookEvent::Rejected { reason, .. }) => {
            Some((book_reject_code(reason), reason.to_string()))
        }
        _ => None,
    }
}

/// The stable code of a book's refusal.
pub fn book_reject_code(reason: voltex_market::book::RejectReason) -> &'static str {
    use voltex_market::book::RejectReason;
    match reason {
        RejectReason::QtyNotPositive => "qty_not_positive",
        RejectReason::QtyAboveMax => "qty_above_max",
        RejectReason::PriceOffTick => "price_off_tick",
        RejectReason::PriceOutOfLimits => "price_out_of_limits",
        RejectReason::InvalidPeak => "invalid_peak",
        RejectReason::InvalidOrderType => "invalid_order_type",
        RejectReason::PostOnlyWouldCross => "post_only_would_cross",
        RejectReason::DuplicateOrderId => "duplicate_order_id",
        RejectReason::UnknownOrder => "unknown_order",
        RejectReason::NotOwner => "not_owner",
        RejectReason::NoChange => "no_change",
        RejectReason::Halted => "halted",
        RejectReason::Closed => "market_closed",
        RejectReason::BookFull => "book_full",
    }
}
