//! Consensus: openraft over the p2p RPC, with the log and the state machine
//! on disk (redb). Owns the Raft type configuration, the RPC vocabulary
//! between peers, and `ClusterNode`, the handle the daemon and API use to
//! write (forwarded to the leader) and read (with a read barrier when asked).
//!
//! It must not decide *what* to pin: plans come from `plan`, the effect of
//! a command from `state`.

// openraft fixes its storage error type (`StorageError`, ~224 bytes); boxing
// it at every call would only add noise.
#![allow(clippy::result_large_err)]

mod log_store;
mod network;
mod node;
mod state_store;

use std::fmt;

use libp2p::PeerId;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use log_store::LogStore;
pub use node::{ClusterError, ClusterNode, GossipSink, NodeOptions, PinSetApply, PinSetPatch};

pub use state_store::{SNAPSHOT_VERSION, StateStore};

use crate::state::{Command, Outcome, Request};

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

/// A request from one peer to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum Rpc {
    /// Raft replication.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft election.
    Vote(VoteRequest<NodeId>),
    /// Raft snapshot transfer (one chunk).
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A state machine command forwarded to the leader.
    Write(Command),
    /// A new peer asks to become a voter.
    Join(PeerNode),
    /// Remove a peer from the membership (sent to the leader).
    Remove(NodeId),
    /// The leader's linearizable read position.
    ReadIndex,
    /// This peer's pin status for these CIDs (status fan-out).
    Status(Vec<crate::manifest::CidKey>),
    /// This peer's pin status for the `count` pins from `first` to `last`
    /// in store order (a status page), answered in that order without CIDs.
    StatusRange {
        /// First CID of the page.
        first: crate::manifest::CidKey,
        /// Last CID of the page.
        last: crate::manifest::CidKey,
        /// Pins the asker has in that range.
        count: u32,
    },
    /// Retry this peer's failed pin operations (one CID or all).
    Recover(Option<crate::manifest::CidKey>),
    /// This peer's IPFS node: who it is and where it listens (peers connect
    /// their nodes to each other with it).
    IpfsId,
    /// Run garbage collection on this peer's IPFS node (`POST /ipfs/gc`).
    IpfsGc,
}

/// The answer to an [`Rpc`].
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcReply {
    /// To `AppendEntries`.
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// To `Vote`.
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// To `InstallSnapshot`.
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// To `Write`.
    Write(Result<Outcome, RemoteFailure>),
    /// To `Join` and `Remove`.
    Membership(Result<(), RemoteFailure>),
    /// To `ReadIndex`: the index the reader must have applied.
    ReadIndex(Result<u64, RemoteFailure>),
    /// To `Status`: one entry per requested CID that is in the state.
    Status(Result<Vec<PeerPinStatus>, RemoteFailure>),
    /// To `StatusRange`: one entry per pin of the range, in order; `None`
    /// when this peer's range differs (it lags): ask by CID instead.
    StatusRange(Result<Option<Vec<RangeStatus>>, RemoteFailure>),
    /// To `Recover`: operations re-queued.
    Recover(Result<u64, RemoteFailure>),
    /// To `IpfsId`: `None` when the peer has no IPFS node.
    IpfsId(Result<Option<crate::ipfs::IpfsId>, RemoteFailure>),
    /// To `IpfsGc`: blocks removed.
    IpfsGc(Result<u64, RemoteFailure>),
}

/// One peer's status for one CID, as sent between peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerPinStatus {
    /// The pin.
    pub cid: crate::manifest::CidKey,
    /// Tracker status name (`pinned`, `pin_error`, …).
    pub status: String,
    /// Last error.
    pub error: String,
    /// Attempts so far.
    pub attempt_count: u32,
    /// When the status last changed (Unix ms).
    pub timestamp_ms: i64,
    /// Queued ahead of retries.
    pub priority_pin: bool,
}

/// One peer's status for one pin of a status page (the CID is implied by
/// the position).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeStatus {
    /// Tracker status name.
    pub s: String,
    /// Last error (empty when none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub e: String,
    /// Attempts so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub a: u32,
    /// When the status last changed (Unix ms).
    pub t: i64,
    /// Queued ahead of retries.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub p: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Answers the pin-status RPCs of other peers (implemented by the tracker
/// layer, registered after the node starts).
pub trait StatusProvider: Send + Sync + 'static {
    /// This peer's status for each CID that is in its state.
    fn statuses(
        &self,
        cids: Vec<crate::manifest::CidKey>,
    ) -> futures::future::BoxFuture<'_, Result<Vec<PeerPinStatus>, String>>;
    /// This peer's status for the pins of a range, in store order, or
    /// `None` when it does not hold exactly `count` pins there.
    fn range_statuses(
        &self,
        first: crate::manifest::CidKey,
        last: crate::manifest::CidKey,
        count: u32,
    ) -> futures::future::BoxFuture<'_, Result<Option<Vec<RangeStatus>>, String>>;
    /// Retries failed operations; returns how many.
    fn recover(
        &self,
        cid: Option<crate::manifest::CidKey>,
    ) -> futures::future::BoxFuture<'_, Result<u64, String>>;
}

/// A failure on the remote peer, as data.
#[derive(Clone, Debug, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteFailure {
    /// The remote is not the leader; the leader's id if it knows one.
    #[error("not the leader")]
    NotLeader(Option<NodeId>),
    /// No quorum, or the write did not commit in time.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}
