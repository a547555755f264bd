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
