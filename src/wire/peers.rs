//! `/id`, `/version`, `/peers`: IPFS Cluster's `ID`, `IPFSID` and
//! `Version` objects.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// IPFS Cluster's `ID` object: a peer and what it knows of the cluster.
///
/// Arrays are sent as `[]` when empty where Go would send `null`; clients
/// decode both.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PeerInfo {
    /// libp2p peer id.
    pub id: String,
    /// The peer's p2p addresses, each ending in `/p2p/<id>`.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Peer ids of every cluster member.
    #[serde(default)]
    pub cluster_peers: Vec<String>,
    /// p2p addresses of the other members.
    #[serde(default)]
    pub cluster_peers_addresses: Vec<String>,
    /// Software version; empty when unknown.
    #[serde(default)]
    pub version: String,
    /// Source commit; empty when unknown.
    #[serde(default)]
    pub commit: String,
    /// Peer-to-peer RPC protocol id; empty when unknown.
    #[serde(default)]
    pub rpc_protocol_version: String,
    /// Why the peer could not be asked; empty when fine.
    #[serde(default)]
    pub error: String,
    /// The peer's IPFS daemon.
    #[serde(default)]
    pub ipfs: IpfsInfo,
    /// Human-readable peer name; empty when unknown.
    #[serde(default)]
    pub peername: String,
}

/// IPFS Cluster's `IPFSID`: the IPFS daemon behind a peer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IpfsInfo {
    /// IPFS peer id (omitted when unknown, as Go's `omitempty` does).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// IPFS swarm addresses.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Why the daemon could not be asked; empty when fine.
    #[serde(default)]
    pub error: String,
}

/// IPFS Cluster's `Version` object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VersionInfo {
    /// Software version.
    pub version: String,
}

/// `GET /followers`: one follower as this peer knows it — from the feed
/// (it pulled from this peer) and from its informer metrics (which every
/// follower gossips with `tag:follower = "true"`). pinfleet's own shape;
/// IPFS Cluster has no such route.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FollowerInfo {
    /// libp2p peer id.
    pub id: String,
    /// Its p2p addresses, as it gave them when it pulled the feed here.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The last log index it has applied, as it last said (its pull here
    /// or its `applied` metric); absent when neither is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<u64>,
    /// How many indexes it is behind this peer's state (0: caught up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind: Option<u64>,
    /// Milliseconds since this peer last heard from it.
    pub last_seen_ms: u64,
    /// Free space it reports, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freespace: Option<u64>,
    /// Pins it has queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinqueue: Option<u64>,
    /// Pins it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numpin: Option<u64>,
    /// Its tags (`follower` among them).
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
}
