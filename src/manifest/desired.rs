//! The validated, resolved form of a manifest: what the plan engine and the
//! state machine work with. No YAML positions except where a PinSet came from.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::cidkey::CidKey;
use super::located::Pos;
use super::model::PinMode;

/// `namespace/name` of a PinSet.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PinSetId {
    /// DNS-1123 label; `default` when the manifest has none.
    pub namespace: String,
    /// DNS-1123 label.
    pub name: String,
}

impl PinSetId {
    /// Builds an id from its two parts (not validated).
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for PinSetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Who wants a pin to exist (DESIGN §5). A pin is unpinned only when it has
/// no owner left.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// Pinned by hand through the REST API or CLI.
    Api,
    /// Declared by a PinSet manifest. Shared: every pin of a set names it.
    PinSet(Arc<PinSetId>),
    /// Requested through the Pinning Service API with the `[pinsvc]` token
    /// of this name (`pinsvc:<name>`).
    PinSvc(Arc<str>),
}

impl Owner {
    /// The owner name of a PinSet.
    pub fn pinset(id: PinSetId) -> Self {
        Owner::PinSet(Arc::new(id))
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Api => f.write_str("api"),
            Owner::PinSet(id) => write!(f, "pinset:{id}"),
            Owner::PinSvc(token) => write!(f, "pinsvc:{token}"),
        }
    }
}

/// Why a string is not an owner.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid owner {0}: expected \"api\", \"pinset:<namespace>/<name>\" or \"pinsvc:<token name>\""
)]
pub struct OwnerParseError(String);

impl FromStr for Owner {
    type Err = OwnerParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "api" {
            return Ok(Owner::Api);
        }
        let bad = || OwnerParseError(super::shown(s).to_string());
        if let Some(token) = s.strip_prefix("pinsvc:") {
            if token.is_empty() {
                return Err(bad());
            }
            return Ok(Owner::PinSvc(Arc::from(token)));
        }
        let rest = s.strip_prefix("pinset:").ok_or_else(bad)?;
        let (ns, name) = rest.split_once('/').ok_or_else(bad)?;
        if ns.is_empty() || name.is_empty() || name.contains('/') {
            return Err(bad());
        }
        Ok(Owner::pinset(PinSetId::new(ns, name)))
    }
}

impl Serialize for Owner {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Owner {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Replication factors after validation. `0/0` means "the cluster's
/// default", as in IPFS Cluster; `-1/-1` means every peer.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct ReplicationFactors {
    /// Fewest peers.
    pub min: i32,
    /// Most peers.
    pub max: i32,
}

/// Everything about a pin except its CID and name. Many pins share one
/// `Arc<PinOptions>` (every CID of a list file gets its PinSet's defaults), so
/// a million-pin set costs one copy of the options.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct PinOptions {
    /// Recursive or direct.
    pub mode: PinMode,
    /// Replication factors.
    pub replication: ReplicationFactors,
    /// Peers must carry all of these tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allocate_tags: BTreeMap<String, String>,
    /// Unpin this long after the pin is applied.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_secs_opt"
    )]
    #[schemars(with = "Option<String>")]
    pub expire_after: Option<Duration>,
    /// User key/values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Multiaddresses that have the content.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<String>,
    /// Peers the user asked for (REST `user-allocations`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_allocations: Vec<String>,
    /// Absolute expiry in Unix milliseconds (REST `expire-at`); manifests
    /// use the relative `expire_after` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_at_ms: Option<i64>,
    /// This pin's part in a sharded DAG (IPFS Cluster's `meta-pin`,
    /// `clusterdag-pin`, `shard-pin`); none for an ordinary data pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_role: Option<ShardRole>,
}

/// IPFS Cluster's pin types other than `pin`: what a sharded add writes
/// (docs/sharding.md). The content's root is the meta pin, which no node
/// pins; the cluster DAG (a DAG-CBOR node linking every shard) is pinned
/// directly on every peer; each shard (a DAG-CBOR node linking the blocks it
/// groups) is pinned `max_depth` links deep on its allocations.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ShardRole {
    /// Which part.
    pub kind: ShardKind,
    /// IPFS Cluster's `reference`: meta → its cluster DAG, cluster DAG →
    /// the meta pin (the content's root), shard → the previous shard (none
    /// for the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The meta pin (content root) this pin belongs to, so that releasing
    /// the meta pin releases its cluster DAG and shards too. The meta pin
    /// names itself.
    pub meta: String,
    /// Meta and cluster DAG: the add's shard size limit in bytes; shard:
    /// the bytes of the blocks it groups.
    pub shard_size: u64,
    /// Links below the pinned node that are pinned: 1 for a shard whose
    /// node links the blocks, 2 when it links intermediate shard nodes; 0
    /// for the cluster DAG and the meta pin.
    pub max_depth: i32,
}

/// The part a pin plays in a sharded DAG, spelled as IPFS Cluster's `type`.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub enum ShardKind {
    /// The content's root; not pinned on any node.
    #[serde(rename = "meta-pin")]
    Meta,
    /// The node linking every shard; pinned directly on every peer.
    #[serde(rename = "clusterdag-pin")]
    ClusterDag,
    /// One shard: a node linking a group of the content's blocks.
    #[serde(rename = "shard-pin")]
    Shard,
}

impl ShardKind {
    /// IPFS Cluster's `type` name.
    pub fn as_str(self) -> &'static str {
        match self {
            ShardKind::Meta => "meta-pin",
            ShardKind::ClusterDag => "clusterdag-pin",
            ShardKind::Shard => "shard-pin",
        }
    }
}

mod duration_secs_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::super::duration::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| super::super::duration::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// What one owner wants for one CID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinSpec {
    /// Pin name (may be empty).
    pub name: String,
    /// Shared options.
    pub options: Arc<PinOptions>,
}

impl PinSpec {
    /// Compares two specs, cheaply when they share their options.
    pub fn same_as(&self, other: &PinSpec) -> bool {
        self.name == other.name
            && (Arc::ptr_eq(&self.options, &other.options) || self.options == other.options)
    }
}

/// The pins an owner holds in the shared state, with the spec it recorded.
pub type OwnedPins = std::collections::BTreeMap<crate::manifest::CidKey, PinSpec>;

/// A pin wanted by a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredPin {
    /// Name and options.
    pub spec: PinSpec,
    /// The CID as the user wrote it, when that differs from the canonical
    /// form (a `Qm…` CIDv0, an upper-case or other-base CIDv1).
    pub written_as: Option<Box<str>>,
}

/// Where a PinSet was declared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRef {
    /// Manifest file.
    pub file: PathBuf,
    /// Position of the document's `metadata`.
    pub pos: Pos,
}

impl fmt::Display for SourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.file.display(),
            self.pos.line,
            self.pos.col
        )
    }
}

/// A validated PinSet with every `pinsFrom` list resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredPinSet {
    /// `namespace/name`.
    pub id: PinSetId,
    /// Labels from the manifest.
    pub labels: BTreeMap<String, String>,
    /// Annotations from the manifest.
    pub annotations: BTreeMap<String, String>,
    /// Reconciling is paused.
    pub suspend: bool,
    /// Pins that left the manifest are released.
    pub prune: bool,
    /// Declared in this file.
    pub source: SourceRef,
    /// The pins, keyed and ordered by normalised CID.
    pub pins: BTreeMap<CidKey, DesiredPin>,
}

impl DesiredPinSet {
    /// The owner name this PinSet writes into the shared state.
    pub fn owner(&self) -> Owner {
        Owner::pinset(self.id.clone())
    }

    /// True when the annotation `pinfleet.io/force-prune: "true"` is set.
    pub fn force_prune(&self) -> bool {
        self.annotations
            .get(super::model::FORCE_PRUNE_ANNOTATION)
            .is_some_and(|v| v == "true")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_round_trips_through_its_string_form() {
        for s in ["api", "pinset:mirrors/arch-core", "pinsvc:kubo"] {
            assert_eq!(s.parse::<Owner>().unwrap().to_string(), s);
        }
        for bad in [
            "",
            "pinset:",
            "pinset:a",
            "pinset:/b",
            "pinset:a/b/c",
            "pinsvc:",
            "user",
        ] {
            assert!(bad.parse::<Owner>().is_err(), "{bad}");
        }
    }
}
