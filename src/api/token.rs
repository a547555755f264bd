//! `POST /token`: an HS256 token for the caller, answered
//! `{"token": "…"}` as IPFS Cluster does, to send as `Authorization:
//! Bearer` on every route instead of a password.
//!
//! Query (pinfleet's): `role=` a lower role than the caller's (a writer
//! mints a reader token for a dashboard), `ttl=` a shorter life than
//! `[api] token_ttl`; `user=` a token for another user, admin only.

use axum::Json;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::access::Caller;
use super::{ApiError, Shared};
use crate::auth::{Role, TokenError};
use crate::manifest::duration::parse_duration;
use crate::manifest::shown;

/// The query of `POST /token`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct TokenQuery {
    user: Option<String>,
    role: Option<String>,
    ttl: Option<String>,
}

/// The answer, as IPFS Cluster's.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub(super) struct TokenAnswer {
    /// An HS256 token: send it as `Authorization: Bearer <token>`.
    token: String,
}

pub(super) async fn post(
    State(state): State<Shared>,
    Extension(Caller(caller)): Extension<Caller>,
    query: Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let policy = &state.access;
    if !policy.requires_auth() {
        return Err(ApiError::bad_request(
            "this API has no users (api.basic_auth_credentials is empty): no token is needed",
        ));
    }
    let Query(q) = query
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))?;
    let user = match q.user.filter(|u| !u.is_empty()) {
        Some(u) if u != caller.user && caller.role < Role::Admin => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden: only an admin gets tokens for other users",
            ));
        }
        Some(u) => u,
        None => caller.user.clone(),
    };
    let Some(cred) = policy.users().get(&user) else {
        return Err(ApiError::bad_request(format!(
            "{} is not a user of api.basic_auth_credentials",
            shown(&user)
        )));
    };
    // A caller never gets more than it has, nor more than the user has.
    let ceiling = cred.role.min(if user == caller.user {
        caller.role
    } else {
        Role::Admin
    });
    let role = match q.role.as_deref().filter(|r| !r.is_empty()) {
        None => ceiling,
        Some(r) => {
            let r = Role::parse(r).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid role {}: expected reader, writer or admin",
                    shown(r)
                ))
            })?;
            if r > ceiling {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("forbidden: cannot issue a {r} token (at most {ceiling})"),
                ));
            }
            r
        }
    };
    let ttl = match q.ttl.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => {
            let d = parse_duration(t).map_err(|e| ApiError::bad_request(format!("ttl: {e}")))?;
            if d > policy.token_ttl() || d.is_zero() {
                return Err(ApiError::bad_request(format!(
                    "ttl: {t} is outside 1s..{} (api.token_ttl)",
                    crate::manifest::duration::format_duration(policy.token_ttl())
                )));
            }
            Some(d)
        }
    };
    let token = policy.issue(&user, role, ttl).map_err(|e| match e {
        TokenError::RoleAbove(_) => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
        _ => ApiError::internal("cannot issue the token"),
    })?;
    Ok(Json(TokenAnswer { token }).into_response())
}
