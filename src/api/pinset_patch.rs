//! `PATCH /pinsets/{namespace}/{name}`: a new revision of an applied PinSet
//! sent as the pins that differ from the revision the cluster holds, so that
//! a 1% change of a million-pin list costs 1% on the wire and in planning.
//!
//! The server still decides: ops are applied as the PinSet's owner only,
//! ops that change nothing are dropped, the prune guard applies, and the
//! revision is committed atomically. A PinSet not recorded at the patch's
//! base revision is answered `412` and nothing is written: the client then
//! sends the whole PinSet with `PUT`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::pins::{Params, RawParams};
use super::pinsets::{guard, pinset_id, read_capped, report_response};
use super::{ApiError, Shared};
use crate::manifest::{CidKey, DesiredPin, PinOptions, PinSpec};
use crate::pinsets::{self, PinSetPatch};
use crate::wire::PatchDocument;

/// Longest pin name accepted (as in manifests).
const MAX_PIN_NAME: usize = 1024;

/// `PATCH /pinsets/{namespace}/{name}?source=&force=&dryRun=&maxPruneFraction=`.
pub(super) async fn patch(
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
    let source = params.get("source").unwrap_or("api").to_string();
    let bytes = read_capped(&headers, body, state.max_body_bytes, state.read_timeout).await?;
    let doc: PatchDocument =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::json_body("patch body", &e))?;
    let options: Vec<Arc<PinOptions>> = doc
        .options
        .into_iter()
        .map(|o| check_options(o).map(Arc::new))
        .collect::<Result<_, _>>()?;
    let mut set = Vec::with_capacity(doc.set.len());
    for p in doc.set {
        let opts = options.get(p.options).ok_or_else(|| {
            ApiError::bad_request(format!("pin {}: no options #{}", p.cid, p.options))
        })?;
        if p.name.len() > MAX_PIN_NAME {
            return Err(ApiError::bad_request(format!(
                "pin {}: name is longer than {MAX_PIN_NAME} bytes",
                p.cid
            )));
        }
        if let Some(w) = &p.written_as
            && CidKey::parse(w).ok() != Some(p.cid)
        {
            return Err(ApiError::bad_request(format!(
                "pin {}: writtenAs {} is not the same CID",
                p.cid,
                crate::manifest::shown(w)
            )));
        }
        let spec = PinSpec {
            name: p.name,
            options: Arc::clone(opts),
        };
        let written_as = p.written_as.map(String::into_boxed_str);
        set.push((p.cid, DesiredPin { spec, written_as }));
    }
    let sharded = super::sharder::sharded_metas(set.iter().map(|(c, p)| (c, &p.spec)));
    let owner = crate::manifest::Owner::pinset(id.clone());
    let report = pinsets::apply_patch(
        &state.node,
        PinSetPatch {
            id: id.clone(),
            base_revision: doc.base_revision,
            revision: doc.revision,
            source,
            labels: doc.labels,
            prune: doc.prune,
            suspend: doc.suspend,
            pins: doc.pins,
            set,
            release: doc.release,
            guard,
            dry_run,
        },
    )
    .await?;
    match report {
        Some(r) => {
            if !dry_run && !r.suspended && r.refused.is_none() {
                super::sharder::shard_pending(&state, &owner, sharded);
            }
            Ok(report_response(r))
        }
        None => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            format!(
                "pinset {id} is not recorded at the patch's base revision; send the whole pinset"
            ),
        )),
    }
}

/// The checks a manifest's options pass (replication factors).
fn check_options(o: PinOptions) -> Result<PinOptions, ApiError> {
    let r = o.replication;
    let valid = |n: i32| n == -1 || n >= 0;
    let ok = valid(r.min)
        && valid(r.max)
        && (r.min != -1 || r.max == -1)
        && (r.max == -1 || r.max == 0 || r.min <= r.max);
    if ok {
        Ok(o)
    } else {
        Err(ApiError::bad_request(format!(
            "invalid replication min {} / max {}",
            r.min, r.max
        )))
    }
}
