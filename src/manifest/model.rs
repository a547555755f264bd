//! The PinSet manifest as written by users (DESIGN §4) and as served to
//! Kubernetes: one set of Rust types gives the YAML parser, the JSON schema and
//! the CRD. Only shapes live here; meaning (CID syntax, `min <= max`, names) is
//! checked in `validate`.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::located::Located;

/// API group of every pinfleet resource.
pub const GROUP: &str = "pinfleet.io";
/// Served version of the PinSet resource.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` a manifest must carry.
pub const API_VERSION: &str = "pinfleet.io/v1alpha1";
/// `kind` of a PinSet manifest.
pub const KIND: &str = "PinSet";
/// Annotation that lifts the prune guard for one PinSet.
pub const FORCE_PRUNE_ANNOTATION: &str = "pinfleet.io/force-prune";

/// Desired state of a PinSet: which CIDs the cluster must keep pinned, and how.
// Each printcolumn repeats `type_`/`json_path` keys; that is the macro's syntax,
// not a mistake.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "pinfleet.io",
    version = "v1alpha1",
    kind = "PinSet",
    plural = "pinsets",
    singular = "pinset",
    shortname = "ps",
    namespaced,
    status = "PinSetStatus",
    doc = "A declarative set of IPFS pins kept by a pinfleet cluster.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Pinned",
        type_ = "integer",
        json_path = ".status.summary.pinned"
    ),
    printcolumn(name = "Total", type_ = "integer", json_path = ".status.summary.total"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PinSetSpec {
    /// Keep the current state but stop reconciling this PinSet.
    #[serde(default)]
    pub suspend: bool,
    /// Release pins that left the manifest (default true).
    #[serde(default = "default_true")]
    pub prune: bool,
    /// Options applied to every pin unless the pin overrides them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<PinDefaults>,
    /// Pins listed inline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pins: Vec<PinEntry>,
    /// Lists of one CID per line (optionally followed by a name): files
    /// relative to the manifest, or (kube source) ConfigMap keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pins_from: Vec<Located<PinsFrom>>,
}

fn default_true() -> bool {
    true
}

/// Options shared by all pins of a PinSet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PinDefaults {
    /// How many peers pin each CID; -1/-1 means every peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Located<Replication>>,
    /// Restricts which peers may be allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocate: Option<Allocate>,
    /// `recursive` (default) or `direct`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<PinMode>,
    /// Unpin this long after the pin was applied (Go duration, e.g. `720h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_after: Option<Located<String>>,
    /// Free-form key/values stored with each pin.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// One inline pin.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PinEntry {
    /// CID v0 (`Qm…`) or v1.
    pub cid: Located<String>,
    /// Human-readable pin name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Located<String>>,
    /// Overrides `defaults.replication`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Located<Replication>>,
    /// Overrides `defaults.allocate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocate: Option<Allocate>,
    /// Overrides `defaults.mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<PinMode>,
    /// Overrides `defaults.expireAfter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_after: Option<Located<String>>,
    /// Merged over `defaults.metadata` (the pin's value wins).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Multiaddresses of peers known to have the content.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<Located<String>>,
    /// Keep this content sharded across the peers (docs/sharding.md): its
    /// blocks in shards of at most `size`, each on its own peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Located<ShardSpec>>,
}

/// How a pin is sharded.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShardSpec {
    /// Largest shard: bytes, or with a unit (`64MiB`, `1GiB`, `500MB`).
    pub size: ShardSize,
}

/// A size as a number of bytes or a string with a unit (in the CRD, an
/// int-or-string as Kubernetes spells it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(untagged)]
#[schemars(schema_with = "int_or_string")]
pub enum ShardSize {
    /// Bytes.
    Bytes(u64),
    /// With a unit: `64MiB`.
    Text(String),
}

/// A list of CIDs, one per line: a file (`path`) or a ConfigMap key
/// (`configMapKeyRef`); exactly one of the two.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PinsFrom {
    /// Path relative to the manifest file; it may not leave the source root
    /// (dir and git sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<Located<String>>,
    /// A key of a ConfigMap in the PinSet's namespace (kube source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<ConfigMapKeyRef>,
}

/// A key of a ConfigMap in the PinSet's namespace, holding a CID list.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap.
    pub name: Located<String>,
    /// Key in its `data` (or `binaryData`).
    pub key: Located<String>,
}

/// Replication factors, IPFS Cluster semantics: -1/-1 pins on every peer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Replication {
    /// Fewest peers that must pin the CID (-1: every peer).
    pub min: i32,
    /// Most peers that may pin the CID (-1: every peer).
    pub max: i32,
}

/// Peer selection constraints.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Allocate {
    /// Only peers whose informer tags carry all of these key/values.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// How IPFS pins the DAG.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PinMode {
    /// The whole DAG below the CID.
    #[default]
    Recursive,
    /// Only the root block.
    Direct,
}

impl PinMode {
    /// The name used in manifests and in IPFS Cluster's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            PinMode::Recursive => "recursive",
            PinMode::Direct => "direct",
        }
    }
}

/// Observed state of a PinSet (DESIGN §6), Kubernetes conventions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PinSetStatus {
    /// `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Applied revision: `<ref>@sha1:<sha>` for git, a content digest for files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// `Ready`, `Reconciling` and `Stalled`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Pin counts over the whole set.
    #[serde(default)]
    pub summary: StatusSummary,
    /// Pin counts per peer id.
    #[serde(default)]
    pub peers: BTreeMap<String, StatusSummary>,
    /// The first errors (at most 20).
    #[serde(default)]
    pub errors: Vec<PinErrorStatus>,
}

/// A Kubernetes-style condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Reconciling` or `Stalled`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase machine-readable reason.
    pub reason: String,
    /// Human-readable detail.
    #[serde(default)]
    pub message: String,
    /// RFC 3339 time of the last status change.
    pub last_transition_time: String,
    /// Generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Pin counts; a pin counts as pinned when `replication.min` peers pinned it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusSummary {
    /// Pins in the set.
    pub total: u64,
    /// Pins with enough `pinned` peers.
    pub pinned: u64,
    /// Pins being pinned.
    pub pinning: u64,
    /// Pins waiting in a queue.
    pub queued: u64,
    /// Pins with an error.
    pub error: u64,
    /// Pins not pinned anywhere.
    pub unpinned: u64,
}

/// One pin error reported in status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PinErrorStatus {
    /// The CID as written in the manifest.
    pub cid: String,
    /// Peer id reporting the error.
    pub peer: String,
    /// The error text.
    pub error: String,
}

/// A PinSet document as written in a file: the resource with a restricted,
/// strictly checked `metadata`.
#[derive(Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PinSetDocument {
    /// Must be `pinfleet.io/v1alpha1`.
    pub api_version: Located<String>,
    /// Must be `PinSet`.
    pub kind: Located<String>,
    /// Name, namespace, labels and annotations.
    pub metadata: Located<DocumentMeta>,
    /// The desired pins.
    pub spec: PinSetSpec,
}

/// The metadata a manifest file may carry.
#[derive(Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DocumentMeta {
    /// DNS-1123 label, unique per namespace.
    pub name: Located<String>,
    /// DNS-1123 label; `default` when absent.
    #[serde(default)]
    pub namespace: Option<Located<String>>,
    /// Kubernetes-style labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Kubernetes-style annotations (`pinfleet.io/force-prune: "true"`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// Kubernetes' int-or-string schema (what `resource.Quantity` uses): the
/// structural form the API server accepts for a value of either type.
fn int_or_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-int-or-string": true,
        "anyOf": [{"type": "integer"}, {"type": "string"}]
    })
}
