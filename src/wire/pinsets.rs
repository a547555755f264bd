//! `/pinsets`: PinSets as the cluster records them, what an apply did, and
//! the conditions a controller reports (pinfleet-only routes;
//! Kubernetes-style camelCase JSON).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::manifest::model::Condition;

/// A PinSet as the shared state records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PinSetInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Revision applied (content digest or git revision).
    pub revision: String,
    /// Where it came from.
    pub source: String,
    /// Pins the PinSet declared in that revision.
    pub pins: u64,
    /// Prune enabled.
    pub prune: bool,
    /// Reconciling suspended.
    pub suspend: bool,
    /// When the revision was committed (RFC 3339).
    pub applied_at: String,
    /// Labels of the manifest.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// What an apply (or delete) did or would do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyReport {
    /// `namespace/name`.
    pub pinset: String,
    /// Pins added for this owner.
    pub add: u64,
    /// Pins whose options changed.
    pub update: u64,
    /// Pins released by this owner.
    pub release: u64,
    /// Pins already as desired.
    pub unchanged: u64,
    /// Only planned.
    pub dry_run: bool,
    /// The PinSet is suspended: the plan is shown but nothing is written.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspended: bool,
    /// Refused by the prune guard (the message says why); nothing written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Log entries written.
    pub entries: u64,
    /// Pins that entered or left the shared state.
    pub created: u64,
    /// Pins removed from the shared state (no owner left).
    pub removed: u64,
    /// Sample of CIDs added, updated and released (at most 10 each).
    #[serde(default)]
    pub sample: BTreeMap<String, Vec<String>>,
}

/// The answer of a PinSet write the prune guard refused (409): an error
/// answer like every other (`code`, and the refusal as `message`) that also
/// carries the report of what the write would have done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RefusedApply {
    /// 409.
    pub code: u16,
    /// Why the prune guard refused (the report's `refused`).
    pub message: String,
    /// What the write would have done; nothing was written.
    #[serde(flatten)]
    pub report: ApplyReport,
}

/// The body of `PUT /pinsets/{namespace}/{name}/conditions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConditionsReport {
    /// Where the controller read the PinSet.
    pub source: String,
    /// The revision it looked at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// `Ready`, `Reconciling`, `Stalled` as the controller computed them.
    pub conditions: Vec<Condition>,
    /// The reconcile that produced them, added to the PinSet's recent
    /// reconciles (its `atMs` is set by the cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<crate::state::ReconcileEntry>,
}
