//! Error answers: `{"code": <http>, "message": "..."}` everywhere, as IPFS
//! Cluster sends them; an invalid manifest adds its located problems.
//! Every answer is small whatever the input: the message is capped at
//! [`MAX_MESSAGE_BYTES`], the problems at [`MAX_PROBLEMS`].

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::consensus::ClusterError;
use crate::manifest::{Diagnostics, capped, plural, shown};
use crate::wire::{ErrorBody, Problem};

/// The most bytes of an error answer's message.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// The most located problems an error answer lists; the message says how
/// many more there are.
pub const MAX_PROBLEMS: usize = 100;

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
                message: capped(message.into(), MAX_MESSAGE_BYTES),
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

    /// A request body that is not the JSON expected (`what`: "conditions
    /// body", …), located, in pinfleet's words: values cut, no Rust or
    /// library names.
    pub fn json_body(what: &str, e: &serde_json::Error) -> Self {
        Self::bad_request(format!(
            "invalid {what} at line {}, column {}: {}",
            e.line(),
            e.column(),
            json_words(e)
        ))
    }

    /// 422: the manifest is invalid, with its problems located (the first
    /// [`MAX_PROBLEMS`]; the message counts the rest).
    pub fn invalid_manifest(diags: &Diagnostics) -> Self {
        let more = diags.0.len().saturating_sub(MAX_PROBLEMS);
        let message = if more == 0 {
            "invalid manifest".to_string()
        } else {
            format!(
                "invalid manifest: {} listed and {more} more",
                plural(MAX_PROBLEMS, "problem")
            )
        };
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, message);
        e.body.errors = diags
            .0
            .iter()
            .take(MAX_PROBLEMS)
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
        let mut errors = body.errors;
        errors.truncate(MAX_PROBLEMS);
        Self {
            status,
            body: ErrorBody {
                code: status.as_u16(),
                message: capped(body.message, MAX_MESSAGE_BYTES),
                errors,
            },
        }
    }
}

/// serde_json's message without its location, Rust type names or long
/// values: `` invalid type: integer `5`, expected a string `` becomes
/// `expected a string, found integer "5"`.
fn json_words(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let text = text.strip_suffix(&suffix).unwrap_or(&text);
    // serde quotes values in backticks: every odd piece is one.
    let text: String = text
        .split('`')
        .enumerate()
        .map(|(i, piece)| {
            if i % 2 == 1 {
                shown(piece).to_string()
            } else {
                piece.to_string()
            }
        })
        .collect();
    if e.is_eof() {
        return "the body ends too early".into();
    }
    match text
        .strip_prefix("invalid type: ")
        .or_else(|| text.strip_prefix("invalid value: "))
        .and_then(|t| t.rsplit_once(", expected "))
    {
        Some((found, expected)) => format!("expected {expected}, found {found}"),
        None if matches!(text.as_str(), "expected value" | "expected ident") => "not JSON".into(),
        None => text,
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
        } else if matches!(e, ClusterError::Forbidden(_)) {
            StatusCode::FORBIDDEN
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::manifest::{Diagnostic, Pos};

    #[test]
    fn an_answer_message_is_capped_in_bytes() {
        let e = ApiError::bad_request("é".repeat(10_000));
        assert!(e.body().message.len() <= MAX_MESSAGE_BYTES);
        assert!(e.body().message.ends_with('…'));
        let e = ApiError::from(ErrorBody::new(502, "x".repeat(10_000)));
        assert!(e.body().message.len() <= MAX_MESSAGE_BYTES);
    }

    #[test]
    fn an_invalid_manifest_lists_the_first_problems_and_counts_the_rest() {
        let diags = Diagnostics(
            (1..=150)
                .map(|i| Diagnostic::at(Path::new("m.yaml"), Pos::new(i, 1), "bad"))
                .collect(),
        );
        let e = ApiError::invalid_manifest(&diags);
        assert_eq!(e.body().errors.len(), MAX_PROBLEMS);
        assert_eq!(
            e.body().message,
            "invalid manifest: 100 problems listed and 50 more"
        );
        let one = Diagnostics(diags.0[..1].to_vec());
        assert_eq!(
            ApiError::invalid_manifest(&one).body().message,
            "invalid manifest"
        );
    }

    #[test]
    fn a_write_refused_by_an_untrusting_cluster_is_forbidden_with_its_reason() {
        let e = ApiError::from(ClusterError::Forbidden(
            "peer 12D3KooW… is not trusted by this cluster: consensus.write is trusted-only".into(),
        ));
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert_eq!(e.body().code, 403);
        assert!(
            e.body().message.contains("is trusted-only"),
            "{}",
            e.body().message
        );
    }

    #[test]
    fn json_body_errors_are_located_and_in_our_words() {
        let msg = |body: &str| {
            let e = serde_json::from_str::<crate::wire::ConditionsReport>(body).unwrap_err();
            ApiError::json_body("body", &e).body().message.clone()
        };
        assert_eq!(
            msg(r#"{"conditions": 3}"#),
            "invalid body at line 1, column 16: expected a sequence, found integer \"3\""
        );
        assert_eq!(
            msg("{"),
            "invalid body at line 1, column 1: the body ends too early"
        );
        assert_eq!(msg("nope"), "invalid body at line 1, column 2: not JSON");
        let long = format!(r#"{{"conditions": [{{"type": "{}"}}]}}"#, "t".repeat(5000));
        let m = msg(&long);
        assert!(m.len() < 300, "{m}");
        assert!(!m.contains('`'), "{m}");
    }
}
