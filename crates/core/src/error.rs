//! API errors: an HTTP status, a stable machine-readable code, and a message
//! that never echoes ciphertext, tokens or anything else a client sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status answered.
    pub status: StatusCode,
    /// What clients match on (e.g. `not_a_member`); never changes for a given refusal.
    pub code: &'static str,
    /// What was wrong, for a person; may change wording, never quotes the request.
    pub message: String,
    /// Seconds after which a retry may pass (429): sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

/// The JSON body of an error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// A stable code to match on (`not_found`, `bad_json`, `relay_throttled`, …).
    pub error: String,
    /// What was wrong, for a person.
    pub message: String,
}

impl ApiError {
    /// An error with any status; the helpers below cover the common ones.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }
    /// 400: the request itself is wrong.
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 401 `unauthenticated`: no usable bearer token.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }
    /// 403: the caller is known but may not do this.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }
    /// 404 `not_found`, "no such <what>"; also what non-members get, so
    /// that they learn nothing of what exists.
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no such {what}"))
    }
    /// 409: the request clashes with the state (e.g. a file not complete yet).
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    /// 413 `too_large`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }
    /// 429, with `Retry-After`.
    pub fn throttled(code: &'static str, message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self { retry_after: Some(retry_after_secs), ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, message) }
    }
    /// 500, logged; the client learns nothing of the cause.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the core failed; retry")
    }
}

impl From<core_store::StoreError> for ApiError {
    fn from(e: core_store::StoreError) -> Self {
        match e {
            core_store::StoreError::Exists(w) => ApiError::conflict("exists", format!("that {w} already exists")),
            core_store::StoreError::NotFound(w) => ApiError::not_found(w),
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r =
            (self.status, axum::Json(ErrorBody { error: self.code.into(), message: self.message })).into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        r
    }
}
