//! Consensus: openraft over the p2p RPC, with the log and the state machine
//! on disk (redb). Owns the Raft type configuration, membership
//! (`membership.rs`), the RPC transport between peers (`rpc.rs`: Raft's
//! messages plus named service methods other layers register), and
//! `ClusterNode`, the handle the daemon and API use to write (forwarded to
//! the leader, where concurrent single-pin writes share one log entry and
//! new pins are allocated before they are proposed: `batcher.rs`) and read
//! (with a read barrier when asked). Every request a peer receives is
//! checked against the caller's trust first (`permission.rs`).
//!
//! It must not decide *what* to pin: plans come from `plan` through the
//! apply service (`pinsets`), the effect of a command from `state`. It
//! imports neither `plan` nor `ipfs`: the tracker and the IPFS glue serve
//! their RPC methods by registering them on the node.

// openraft fixes its storage error type (`StorageError`, ~224 bytes); boxing
// it at every call would only add noise.
#![allow(clippy::result_large_err)]

mod assemble;
mod batcher;
pub mod feed;
mod follower;
mod forward;
mod log_store;
mod membership;
mod network;
mod node;
mod permission;
mod rpc;
mod size;
mod state_store;

use std::fmt;

use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use batcher::PinAllocator;
pub use feed::serve::FollowerSeen;
pub use follower::FOLLOW_DIR;
pub use log_store::LogStore;
pub use node::{
    ClusterError, ClusterNode, DEFAULT_CLUSTER_NAME, FOLLOWER_WRITE, GossipSink, NodeOptions,
};
pub use permission::Permission;
pub use rpc::{CallError, Method, RemoteFailure, Rpc, RpcReply};
pub use size::{MAX_ENTRY_BYTES, entry_bytes};

pub use state_store::{
    CHANGES_KEPT, ChangePage, CreatedRange, NameMatch, PinSvcFilter, SNAPSHOT_VERSION, StateStore,
};

use crate::state::{Outcome, Request};

/// Raft node ids are derived from libp2p peer ids.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// openraft type configuration for pinfleet.
    pub TypeConfig:
        D = Request,
        R = Outcome,
        NodeId = NodeId,
        Node = PeerNode,
        SnapshotData = tokio::fs::File,
);

/// A cluster member as Raft's membership records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerNode {
    /// libp2p peer id (base58).
    pub peer_id: String,
    /// Where the peer's p2p listener can be reached.
    pub addrs: Vec<String>,
    /// The peer's REST API URL (for clients that want to talk to it).
    pub api: String,
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.peer_id)
    }
}

/// The Raft node id of a libp2p peer: the first 8 bytes of the SHA-256 of its
/// peer id. Stable across restarts; collisions are negligible for clusters
/// of any realistic size.
pub fn node_id(peer: &PeerId) -> NodeId {
    let digest = Sha256::digest(peer.to_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(id)
}
