//! `POST /pinsets/{ns}/{name}/reconcile`: reconcile-now for a PinSet whose
//! source the cluster's own controller runs (`[controller]` of the daemon).
//!
//! Only the Raft leader's controller acts, so a follower forwards the
//! request to the leader's REST API (once: a forwarded request that lands on
//! a follower again answers 503, the leader just changed). The request
//! bookkeeping belongs to the controller, reached through
//! [`ApiState::reconcile_now`](super::ApiState) (a [`super::ReconcileNow`]);
//! this module only finds the PinSet's source and routes the call.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::pinsets::{pinset_id, record};
use super::{ApiError, ApiState, Shared};
use crate::manifest::PinSetId;
use crate::wire::{MAX_WAIT, ReconcileQuery};

/// Marks a request one peer forwarded to the leader.
pub const FORWARDED_HEADER: &str = "x-pinfleet-forwarded";

/// `POST /pinsets/{namespace}/{name}/reconcile[?wait=true&timeout=2m]`:
/// 202 when queued, 200 when `wait` and done, 404 for an unknown PinSet,
/// 409 when no controller of this cluster runs its source, 504 when the
/// wait timed out.
pub(super) async fn post(
    State(state): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<ReconcileQuery>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = pinset_id(namespace, name)?;
    let forwarded = headers.contains_key(FORWARDED_HEADER);
    let auth = headers.get(header::AUTHORIZATION);
    reconcile_now(&state, &id, &query, raw.as_deref(), auth, forwarded).await
}

/// Reconcile-now of PinSet `id` by the controller that runs its source:
/// on the leader, or forwarded to it with `auth` (`forwarded`: this
/// request already was). The answer as `POST /pinsets/../reconcile`
/// gives it (an error answer as `Err`, or the leader's as it came).
pub(super) async fn reconcile_now(
    state: &ApiState,
    id: &PinSetId,
    query: &ReconcileQuery,
    raw: Option<&str>,
    auth: Option<&axum::http::HeaderValue>,
    forwarded: bool,
) -> Result<Response, ApiError> {
    if !state.node.is_leader() {
        if forwarded {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "forwarded to a peer that is no longer the leader: retry",
            ));
        }
        return Ok(forward(state, &id.namespace, &id.name, raw, auth).await);
    }
    let record = record(state, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("pinset {id} not found")))?;
    let Some(controller) = &state.reconcile_now else {
        return Err(crate::wire::not_run_here(id, &record.source).into());
    };
    let (status, answer) = controller.reconcile(id, &record.source, query).await?;
    Ok((status, Json(answer)).into_response())
}

/// Sends the request to the leader's API and relays its answer. The
/// caller's credentials go along: every peer of a cluster has the same
/// users and token key.
async fn forward(
    state: &ApiState,
    namespace: &str,
    name: &str,
    query: Option<&str>,
    auth: Option<&axum::http::HeaderValue>,
) -> Response {
    let leader = state.node.leader().and_then(|l| {
        state
            .node
            .members()
            .into_iter()
            .find(|(id, _)| *id == l)
            .map(|(_, n)| n.api)
    });
    let Some(api) = leader.filter(|a| !a.is_empty()) else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no leader is known: the cluster cannot reconcile now",
        )
        .into_response();
    };
    let mut url = format!(
        "{}/pinsets/{namespace}/{name}/reconcile",
        api.trim_end_matches('/')
    );
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    let client = match crate::tls::client(state.tls_ca.as_deref())
        .map_err(|e| e.to_string())
        .and_then(|b| {
            b.timeout(MAX_WAIT + Duration::from_secs(30))
                .build()
                .map_err(|e| e.to_string())
        }) {
        Ok(c) => c,
        Err(e) => return ApiError::internal(e).into_response(),
    };
    let mut request = client.post(&url).header(FORWARDED_HEADER, "1");
    if let Some(auth) = auth {
        request = request.header(header::AUTHORIZATION, auth.as_bytes());
    }
    let answer = match request.send().await {
        Ok(a) => a,
        Err(e) => {
            return ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("cannot reach the leader at {api}: {e}"),
            )
            .into_response();
        }
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    match answer.bytes().await {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            Body::from(body),
        )
            .into_response(),
        Err(e) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("the leader's answer broke off: {e}"),
        )
        .into_response(),
    }
}
