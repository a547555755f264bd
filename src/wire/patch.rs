//! The body of `PATCH /pinsets/{namespace}/{name}`: a new revision of an
//! applied PinSet as the pins that differ from the revision the cluster
//! holds. Pins refer to shared option sets by index, so a million pins with
//! the same options cost one copy of them.

use std::collections::BTreeMap;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::manifest::{CidKey, DesiredPin, DesiredPinSet, PinOptions};

/// The body of `PATCH /pinsets/{namespace}/{name}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    #[schemars(with = "Vec<String>")]
    pub release: Vec<CidKey>,
}

/// One pin to add or change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchPin {
    /// The CID (any spelling; normalised).
    #[schemars(with = "String")]
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
