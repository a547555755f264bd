//! IPFS Cluster's `/health/*` shapes: `ConnectGraph`, `Alert` and
//! `Bandwidth` (api/types.go), with Go's JSON field names.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::MonitorMetric;

/// IPFS Cluster's `ConnectGraph`: who is connected to whom.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConnectGraph {
    /// The peer that drew the graph.
    pub cluster_id: String,
    /// Each member's peer name.
    #[serde(default)]
    pub id_to_peername: BTreeMap<String, String>,
    /// Each IPFS node's connections to the others (by IPFS peer ID).
    #[serde(default)]
    pub ipfs_links: BTreeMap<String, Vec<String>>,
    /// Each member's cluster connections to the other members.
    #[serde(default)]
    pub cluster_links: BTreeMap<String, Vec<String>>,
    /// Each member's IPFS node.
    #[serde(default)]
    pub cluster_to_ipfs: BTreeMap<String, String>,
    /// Whether the drawing peer trusts each member.
    #[serde(default)]
    pub cluster_trust_links: BTreeMap<String, bool>,
}

/// IPFS Cluster's `Alert`: a metric that expired, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Alert {
    /// The expired metric (Go embeds `Metric`: its fields are inline).
    #[serde(flatten)]
    pub metric: MonitorMetric,
    /// When the alert was raised (RFC 3339).
    pub triggered_at: String,
}

/// IPFS Cluster's `Bandwidth` of one libp2p protocol.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Bandwidth {
    /// Bytes received.
    pub total_in: i64,
    /// Bytes sent.
    pub total_out: i64,
    /// Bytes per second received.
    pub rate_in: f64,
    /// Bytes per second sent.
    pub rate_out: f64,
}
