//! `/pinsets`: recorded PinSets, and applying or deleting one PinSet
//! document (pinfleet-only routes; Kubernetes-style camelCase JSON).

use std::path::PathBuf;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::pins::{Params, RawParams, storage};
use super::{ApiError, ApiState, Shared, blocking};
use crate::manifest::{MAX_STORED_MESSAGE_BYTES, capped, shown};
use crate::manifest::{Owner, PinSetId, load_str};
use crate::pinsets::{self, PinSetApply};
use crate::plan::{DEFAULT_MAX_PRUNE_FRACTION, PruneGuard};
use crate::state::format_time as rfc3339;
use crate::state::{Command, PinSetRecord};
use crate::wire::{ApplyReport, ConditionsReport, PinSetInfo, RefusedApply};

impl From<PinSetRecord> for PinSetInfo {
    fn from(r: PinSetRecord) -> Self {
        Self {
            namespace: r.namespace,
            name: r.name,
            revision: r.revision,
            source: r.source,
            pins: r.pins,
            prune: r.prune,
            suspend: r.suspend,
            applied_at: rfc3339(r.applied_at_ms),
            labels: r.labels,
        }
    }
}

/// `GET /pinsets`.
pub(super) async fn list(State(state): State<Shared>) -> Result<Json<Vec<PinSetInfo>>, ApiError> {
    let store = state.node.store().clone();
    let records = blocking(move || store.pinsets().map_err(storage)).await?;
    Ok(Json(
        records
            .into_iter()
            .map(|(_, r)| PinSetInfo::from(r))
            .collect(),
    ))
}

/// `GET /pinsets/{namespace}/{name}`.
pub(super) async fn get_one(
    State(state): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<PinSetInfo>, ApiError> {
    let id = pinset_id(namespace, name)?;
    match record(&state, &id).await? {
        Some(r) => Ok(Json(r.into())),
        None => Err(ApiError::not_found(format!("pinset {id} not found"))),
    }
}

/// The record of PinSet `id` in this peer's state, if any.
pub(super) async fn record(
    state: &ApiState,
    id: &PinSetId,
) -> Result<Option<PinSetRecord>, ApiError> {
    let store = state.node.store().clone();
    let owner = Owner::pinset(id.clone());
    blocking(move || store.pinset(&owner).map_err(storage)).await
}

/// `PUT /pinsets/{namespace}/{name}?dryRun=&force=&maxPruneFraction=`: the
/// body is one PinSet document (YAML or JSON, `pinsFrom` resolved) whose
/// name and namespace match the path. Optional `source` and `revision`
/// label the applied revision (default: `api` and the body's SHA-256).
pub(super) async fn put(
    State(state): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
    query: RawParams,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = pinset_id(namespace, name)?;
    let params = Params::from_query(query)?;
    let guard = guard(&params)?;
    let dry_run = params.flag("dryRun")?;
    let bytes = read_capped(&headers, body, state.max_body_bytes, state.read_timeout).await?;
    let revision = match params.get("revision") {
        Some(r) => r.to_string(),
        None => format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
    };
    let source = params.get("source").unwrap_or("api").to_string();
    let text = String::from_utf8(bytes)
        .map_err(|e| ApiError::bad_request(format!("body is not utf-8 text: {e}")))?;
    let limits = state.limits;
    let label = PathBuf::from(format!("pinsets/{id}"));
    let mut sets = blocking(move || {
        load_str(&label, &text, &limits).map_err(|d| ApiError::invalid_manifest(&d))
    })
    .await?;
    if sets.len() != 1 {
        return Err(ApiError::bad_request(format!(
            "the body must hold exactly one PinSet document, found {}",
            sets.len()
        )));
    }
    let pinset = sets.remove(0);
    if pinset.id != id {
        return Err(ApiError::bad_request(format!(
            "the document declares pinset {} but the path names {id}",
            pinset.id
        )));
    }
    let owner = pinset.owner();
    let sharded = super::sharder::sharded_metas(pinset.pins.iter().map(|(c, p)| (c, &p.spec)));
    let report = pinsets::apply(
        &state.node,
        PinSetApply {
            pinset,
            revision,
            source,
            guard,
            dry_run,
        },
    )
    .await?;
    if !dry_run && !report.suspended && report.refused.is_none() {
        super::sharder::shard_pending(&state, &owner, sharded);
    }
    Ok(report_response(report))
}

/// `DELETE /pinsets/{namespace}/{name}?force=&dryRun=&maxPruneFraction=`:
/// releases everything the PinSet owns and forgets it, under the prune guard.
pub(super) async fn remove(
    State(state): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
    query: RawParams,
) -> Result<Response, ApiError> {
    let id = pinset_id(namespace, name)?;
    let params = Params::from_query(query)?;
    let guard = guard(&params)?;
    let dry_run = params.flag("dryRun")?;
    let owner = Owner::pinset(id.clone());
    let known = record(&state, &id).await?.is_some();
    let report = pinsets::delete(&state.node, owner, guard, dry_run).await?;
    if !known && report.release == 0 && report.refused.is_none() {
        return Err(ApiError::not_found(format!("pinset {id} not found")));
    }
    Ok(report_response(report))
}

/// `PUT /pinsets/{namespace}/{name}/conditions`: records the conditions a
/// controller computed for a PinSet (applied or not); 204 when committed.
/// The body is small (at most [`super::MAX_CONDITIONS_BODY_BYTES`]).
pub(super) async fn put_conditions(
    State(state): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let id = pinset_id(namespace, name)?;
    let bytes = read_capped(
        &headers,
        body,
        super::MAX_CONDITIONS_BODY_BYTES,
        state.read_timeout,
    )
    .await?;
    let mut report: ConditionsReport =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::json_body("conditions body", &e))?;
    for c in &report.conditions {
        if !matches!(c.status.as_str(), "True" | "False" | "Unknown") || c.type_.is_empty() {
            return Err(ApiError::bad_request(format!(
                "invalid condition {}: type must be set and status True, False or Unknown",
                shown(&c.type_)
            )));
        }
    }
    // Conditions are stored in the cluster state: each text is capped, so
    // an error echoed whole cannot grow it.
    for c in &mut report.conditions {
        c.message = capped(std::mem::take(&mut c.message), MAX_STORED_MESSAGE_BYTES);
        c.reason = capped(std::mem::take(&mut c.reason), MAX_STORED_MESSAGE_BYTES);
    }
    let owner = Owner::pinset(id.clone());
    let source = report.source.clone();
    state
        .node
        .write(Command::SetConditions {
            owner: owner.clone(),
            source: report.source,
            revision: report.revision,
            conditions: report.conditions,
        })
        .await?;
    if let Some(mut entry) = report.reconcile {
        entry.message = capped(entry.message, MAX_STORED_MESSAGE_BYTES);
        entry.trigger = capped(entry.trigger, 64);
        entry.revision = capped(entry.revision, MAX_STORED_MESSAGE_BYTES);
        state
            .node
            .write(Command::RecordReconcile {
                owner,
                entry: entry.clone(),
            })
            .await?;
        state
            .metrics
            .record_reconcile(&id, &source, entry.ok, entry.duration_ms);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The PinSet named by a request path; 400 when a part is not a DNS-1123
/// label.
pub(super) fn pinset_id(namespace: String, name: String) -> Result<PinSetId, ApiError> {
    crate::manifest::pinset_id(namespace, name).map_err(ApiError::bad_request)
}

pub(super) fn guard(params: &Params) -> Result<PruneGuard, ApiError> {
    let max_fraction = match params.get("maxPruneFraction") {
        None => DEFAULT_MAX_PRUNE_FRACTION,
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|f| (0.0..=1.0).contains(f))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid maxPruneFraction {}: expected a number between 0 and 1",
                    shown(v)
                ))
            })?,
    };
    Ok(PruneGuard {
        max_fraction,
        force: params.flag("force")?,
    })
}

/// 200 with the report, or, when the prune guard refused, 409 with an
/// error answer (`code`, `message`) that carries the report.
pub(super) fn report_response(report: ApplyReport) -> Response {
    match report.refused.clone() {
        Some(message) => (
            StatusCode::CONFLICT,
            Json(RefusedApply {
                code: StatusCode::CONFLICT.as_u16(),
                message: capped(message, super::error::MAX_MESSAGE_BYTES),
                report,
            }),
        )
            .into_response(),
        None => (StatusCode::OK, Json(report)).into_response(),
    }
}

/// Reads the whole body, refusing it (413) as soon as it exceeds `cap`,
/// and giving up (408) when no piece of it arrives for `idle`.
pub(super) async fn read_capped(
    headers: &HeaderMap,
    body: Body,
    cap: u64,
    idle: std::time::Duration,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {cap} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap) {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(64 << 20) as usize);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = tokio::time::timeout(idle, stream.next())
        .await
        .map_err(|_| super::body_timeout(idle))?
    {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        if (buf.len() + chunk.len()) as u64 > cap {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}
