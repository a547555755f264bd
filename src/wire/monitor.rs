//! What `GET /monitor/metrics/{name}` answers: IPFS Cluster's `api.Metric`
//! JSON, one per peer.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One peer's latest reading of one metric (IPFS Cluster's `Metric`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MonitorMetric {
    /// `freespace`, `ping`, `pinqueue`, `numpin` or `tag:<key>`.
    pub name: String,
    /// Peer id of the peer it describes.
    pub peer: String,
    /// The reading, as text (a number, a tag's value, `""` for `ping`).
    pub value: String,
    /// Unix nanoseconds after which it no longer counts.
    pub expire: i64,
    /// Whether the reading counts (IPFS reachable, disk not full).
    pub valid: bool,
    /// Allocation preference: a higher weight is allocated first.
    pub weight: i64,
    /// Whether peers with the same value form one group (tags).
    pub partitionable: bool,
    /// Unix nanoseconds when this peer took or received it.
    pub received_at: i64,
}
