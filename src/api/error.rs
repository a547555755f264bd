//! Error answers: `{"code": <http>, "message": "..."}` everywhere, as IPFS
//! Cluster sends them; an invalid manifest adds its located problems.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::consensus::ClusterError;
use crate::manifest::Diagnostics;
use crate::wire::{ErrorBody, Problem};

/// An error answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", body.message)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    /// An answer with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                code: status.as_u16(),
                message: message.into(),
                errors: Vec::new(),
            },
        }
    }

    /// 400: the request is malformed; nothing was done.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// 422: the manifest is invalid, with every problem located.
    pub fn invalid_manifest(diags: &Diagnostics) -> Self {
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid manifest");
        e.body.errors = diags
            .0
            .iter()
            .map(|d| Problem {
                file: d.file.display().to_string(),
                line: d.line,
                col: d.col,
                message: d.message.clone(),
            })
            .collect();
        e
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body sent.
    pub fn body(&self) -> &ErrorBody {
        &self.body
    }
}

/// An answer another layer produced (its code and message kept; a code
/// that is not an HTTP error status becomes 500).
impl From<ErrorBody> for ApiError {
    fn from(body: ErrorBody) -> Self {
        let status = StatusCode::from_u16(body.code)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self {
            status,
            body: ErrorBody {
                code: status.as_u16(),
                ..body
            },
        }
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        let status = if e.is_unavailable() {
            StatusCode::SERVICE_UNAVAILABLE
        } else if matches!(e, ClusterError::Refused(_)) {
            StatusCode::CONFLICT
        } else if matches!(e, ClusterError::TooLarge(_)) {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() && self.status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(status = self.status.as_u16(), error = %self.body.message, "request failed");
        }
        (self.status, Json(self.body)).into_response()
    }
}
