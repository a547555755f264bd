//! `PATCH /pinsets/{namespace}/{name}`: a new revision of an applied PinSet
//! sent as the pins that differ from the revision the cluster holds, so that
//! a 1% change of a million-pin list costs 1% on the wire and in planning.
//!
//! The server still decides: ops are applied as the PinSet's owner only,
//! ops that change nothing are dropped, the prune guard applies, and the
//! revision is committed atomically. A PinSet not recorded at the patch's
//! base revision is answered `412` and nothing is written: the client then
//! sends the whole PinSet with `PUT`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::pins::{Params, RawParams};
use super::pinsets::{guard, pinset_id, read_capped, report_response};
use super::{ApiError, ApiState};
use crate::consensus::PinSetPatch;
use crate::manifest::{CidKey, DesiredPin, DesiredPinSet, PinOptions, PinSpec};

/// Longest pin name accepted (as in manifests).
const MAX_PIN_NAME: usize = 1024;

/// The body of `PATCH /pinsets/{namespace}/{name}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchDocument {
    /// The revision the cluster must hold (else `412`).
    pub base_revision: String,
    /// The revision this patch brings the PinSet to.
    pub revision: String,
    /// Labels of the new revision.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Prune enabled in the new revision.
    pub prune: bool,
    /// Reconciling suspended in the new revision.
    #[serde(default)]
    pub suspend: bool,
    /// Pins the PinSet declares in the new revision.
    pub pins: u64,
    /// Options referred to by `set` entries, by index.
    #[serde(default)]
    pub options: Vec<PinOptions>,
    /// Pins to add or change.
    #[serde(default)]
    pub set: Vec<PatchPin>,
    /// Pins that left the PinSet.
    #[serde(default)]
    pub release: Vec<CidKey>,
}

/// One pin to add or change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchPin {
    /// The CID (any spelling; normalised).
    pub cid: CidKey,
    /// Pin name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Index into the document's `options`.
    #[serde(default)]
    pub options: usize,
    /// The CID as the manifest wrote it, when not canonical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_as: Option<String>,
}

impl PatchDocument {
    /// The document taking `pinset` from `base_revision` to `revision`
    /// by `set` and `release` (labels, prune, suspend and the pin count come
    /// from `pinset`); pins whose options are the same `Arc` or equal share
    /// one `options` entry.
    pub fn new(
        base_revision: String,
        revision: String,
        pinset: &DesiredPinSet,
        set: &[(CidKey, DesiredPin)],
        release: &[CidKey],
    ) -> Self {
        let mut shared: Vec<Arc<PinOptions>> = Vec::new();
        let mut entries = Vec::with_capacity(set.len());
        for (cid, pin) in set {
            let o = &pin.spec.options;
            let index = match shared.iter().position(|s| Arc::ptr_eq(s, o) || **s == **o) {
                Some(i) => i,
                None => {
                    shared.push(Arc::clone(o));
                    shared.len() - 1
                }
            };
            entries.push(PatchPin {
                cid: *cid,
                name: pin.spec.name.clone(),
                options: index,
                written_as: pin.written_as.as_deref().map(str::to_string),
            });
        }
        Self {
            base_revision,
            revision,
            labels: pinset.labels.clone(),
            prune: pinset.prune,
            suspend: pinset.suspend,
            pins: pinset.pins.len() as u64,
            options: shared.iter().map(|o| (**o).clone()).collect(),
            set: entries,
            release: release.to_vec(),
        }
    }
}

/// `PATCH /pinsets/{namespace}/{name}?source=&force=&dryRun=&maxPruneFraction=`.
pub(super) async fn patch(
    State(state): State<ApiState>,
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
    let bytes = read_capped(&headers, body, state.max_body_bytes).await?;
    let doc: PatchDocument = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid patch body: {e}")))?;
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
                "pin {}: writtenAs {w:?} is not the same CID",
                p.cid
            )));
        }
        let spec = PinSpec {
            name: p.name,
            options: Arc::clone(opts),
        };
        let written_as = p.written_as.map(String::into_boxed_str);
        set.push((p.cid, DesiredPin { spec, written_as }));
    }
    let report = state
        .node
        .apply_pinset_patch(PinSetPatch {
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
        })
        .await?;
    match report {
        Some(r) => Ok(report_response(r)),
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
