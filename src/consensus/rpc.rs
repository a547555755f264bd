//! What peers say to each other over the p2p request-response protocol:
//! Raft's own messages, writes forwarded to the leader, membership changes
//! — and named *service methods* that other layers register on the node
//! (`tracker` answers status, `ipfs` answers its node's id and gc).
//!
//! Consensus owns the transport and the dispatch, not the services: it
//! knows a method by its name and carries its request and reply as opaque
//! CBOR bytes, so it imports none of the layers that serve them. A layer
//! declares a method with [`Method`], serves it with
//! [`ClusterNode::serve`](super::ClusterNode::serve) and calls it with
//! [`ClusterNode::call`](super::ClusterNode::call), both typed.
//!
//! Every method carries a [`Permission`] ([`Method::PERMISSION`]) that the
//! receiving peer checks against the caller before it decodes anything
//! (`permission.rs`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use libp2p::PeerId;

use super::permission::{Permission, Trust};
use super::{NodeId, PeerNode, TypeConfig};
use crate::p2p::P2pError;
use crate::state::{Command, Outcome};

/// A request from one peer to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum Rpc {
    /// Raft replication.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft election.
    Vote(VoteRequest<NodeId>),
    /// Raft snapshot transfer (one chunk; its data travels as one byte
    /// string, not as a sequence of numbers).
    InstallSnapshot(#[serde(with = "snapshot_chunk")] InstallSnapshotRequest<TypeConfig>),
    /// A state machine command forwarded to the leader.
    Write(Command),
    /// Commands forwarded to the leader together, in order (a follower's
    /// writes that queued while its previous request was on its way).
    WriteBatch(Vec<Command>),
    /// A new peer asks to become a voter.
    Join(PeerNode),
    /// Remove a peer from the membership (sent to the leader).
    Remove(NodeId),
    /// The leader's linearizable read position.
    ReadIndex,
    /// A follower pulls the signed state feed (any peer answers; follower
    /// permission: anyone connected may ask).
    FeedPull(super::feed::PullRequest),
    /// A part of a snapshot file, for a follower installing it.
    FeedChunk(super::feed::ChunkRequest),
    /// A service method another layer registered ([`Method::NAME`]), with
    /// its CBOR-encoded request.
    Call {
        /// The method's name.
        method: String,
        /// The request, CBOR.
        body: ByteBuf,
    },
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
    /// To `WriteBatch`: each command's answer, in order.
    WriteBatch(Vec<Result<Outcome, RemoteFailure>>),
    /// To `Join` and `Remove`.
    Membership(Result<(), RemoteFailure>),
    /// To `ReadIndex`: the index the reader must have applied.
    ReadIndex(Result<u64, RemoteFailure>),
    /// To `Call`: the CBOR-encoded reply.
    Call(Result<ByteBuf, RemoteFailure>),
    /// To `FeedPull`.
    FeedPull(super::feed::PullReply),
    /// To `FeedChunk`.
    FeedChunk(super::feed::ChunkReply),
    /// To the last `InstallSnapshot` chunk: the snapshot is still being
    /// installed; the leader sends the same chunk again to wait longer.
    SnapshotInstalling,
    /// To any request but `Call` (whose refusal is its own `Err`): the
    /// caller may not make it here ([`RemoteFailure::Forbidden`]), or this
    /// peer is a follower and takes part in no Raft.
    Refused(RemoteFailure),
}

impl Rpc {
    /// What the request is called in a refusal and in the log
    /// (`consensus.write`; a service method's own name).
    pub fn name(&self) -> &str {
        match self {
            Rpc::AppendEntries(_) => "consensus.append_entries",
            Rpc::Vote(_) => "consensus.vote",
            Rpc::InstallSnapshot(_) => "consensus.install_snapshot",
            Rpc::Write(_) => "consensus.write",
            Rpc::WriteBatch(_) => "consensus.write_batch",
            Rpc::Join(_) => "consensus.join",
            Rpc::Remove(_) => "consensus.remove",
            Rpc::ReadIndex => "consensus.read_index",
            Rpc::FeedPull(_) => "feed.pull",
            Rpc::FeedChunk(_) => "feed.chunk",
            Rpc::Call { method, .. } => method,
        }
    }
}

/// `#[serde(with = "snapshot_chunk")]` for an `InstallSnapshotRequest`:
/// openraft's own form writes its `data` (megabytes of snapshot) as a
/// sequence of numbers, about twice the bytes and one value at a time.
mod snapshot_chunk {
    use openraft::raft::InstallSnapshotRequest;
    use openraft::{SnapshotMeta, Vote};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    use super::super::{NodeId, PeerNode, TypeConfig};

    #[derive(Serialize)]
    struct ChunkRef<'a> {
        vote: &'a Vote<NodeId>,
        meta: &'a SnapshotMeta<NodeId, PeerNode>,
        offset: u64,
        data: &'a Bytes,
        done: bool,
    }

    #[derive(Deserialize)]
    struct Chunk {
        vote: Vote<NodeId>,
        meta: SnapshotMeta<NodeId, PeerNode>,
        offset: u64,
        data: ByteBuf,
        done: bool,
    }

    pub(super) fn serialize<S: Serializer>(
        r: &InstallSnapshotRequest<TypeConfig>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        ChunkRef {
            vote: &r.vote,
            meta: &r.meta,
            offset: r.offset,
            data: Bytes::new(&r.data),
            done: r.done,
        }
        .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<InstallSnapshotRequest<TypeConfig>, D::Error> {
        let c = Chunk::deserialize(d)?;
        Ok(InstallSnapshotRequest {
            vote: c.vote,
            meta: c.meta,
            offset: c.offset,
            data: c.data.into_vec(),
            done: c.done,
        })
    }
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
    /// The caller may not make this request here (not a trusted peer, or
    /// a local-only method); the message says who and what.
    #[error("{0}")]
    Forbidden(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// A service method peers call on each other: its name on the wire and its
/// request and reply types.
pub trait Method: 'static {
    /// The name on the wire (`status.range`, `ipfs.gc`, …); unique.
    const NAME: &'static str;
    /// Who may call it, checked by the receiving peer. Trusted-only unless
    /// the method says otherwise: a new method is closed until opened.
    const PERMISSION: Permission = Permission::Trusted;
    /// What the caller sends.
    type Request: Serialize + DeserializeOwned + Send + 'static;
    /// What the callee answers.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
}

/// Why a [`Method`] call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The peer could not be reached or did not answer.
    #[error(transparent)]
    P2p(#[from] P2pError),
    /// The peer answered with a failure (its handler's error, or "not
    /// served here").
    #[error(transparent)]
    Remote(RemoteFailure),
    /// The request could not be encoded, or the reply not decoded.
    #[error("{method}: {reason}")]
    Codec {
        /// The method.
        method: &'static str,
        /// What went wrong.
        reason: String,
    },
}

/// An untyped handler: CBOR request in, CBOR reply (or failure) out.
type Handler =
    Arc<dyn Fn(Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, RemoteFailure>> + Send + Sync>;

/// A served method: who may call it and its handler.
#[derive(Clone)]
struct Served {
    permission: Permission,
    handler: Handler,
}

/// The service methods a node serves, by name.
#[derive(Clone, Default)]
pub(super) struct Registry {
    handlers: Arc<RwLock<HashMap<&'static str, Served>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = match self.handlers.read() {
            Ok(h) => h.keys().copied().collect(),
            Err(_) => Vec::new(),
        };
        f.debug_struct("Registry").field("methods", &names).finish()
    }
}

impl Registry {
    /// Serves `M` with `handler` (replacing an earlier handler of `M`).
    pub(super) fn serve<M, F, Fut>(&self, handler: F)
    where
        M: Method,
        F: Fn(M::Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<M::Reply, String>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: Handler = Arc::new(move |body: Vec<u8>| {
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                let request: M::Request = decode(M::NAME, &body).map_err(RemoteFailure::Other)?;
                let reply = handler(request).await.map_err(RemoteFailure::Other)?;
                encode(M::NAME, &reply).map_err(RemoteFailure::Other)
            })
        });
        if let Ok(mut h) = self.handlers.write() {
            h.insert(
                M::NAME,
                Served {
                    permission: M::PERMISSION,
                    handler: erased,
                },
            );
        }
    }

    /// Runs the handler of `method` for `caller`, once `trust` allows the
    /// caller to call it (refused before the request is decoded).
    pub(super) async fn dispatch(
        &self,
        caller: &PeerId,
        trust: &Trust,
        method: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, RemoteFailure> {
        let served = self
            .handlers
            .read()
            .ok()
            .and_then(|h| h.get(method).cloned());
        match served {
            Some(s) => {
                trust.check(caller, method, s.permission)?;
                (s.handler)(body).await
            }
            None => Err(RemoteFailure::Other(format!(
                "this peer does not serve {method}"
            ))),
        }
    }
}

/// CBOR-encodes a request or reply of `method`.
pub(super) fn encode<T: Serialize>(method: &str, value: &T) -> Result<Vec<u8>, String> {
    cbor4ii::serde::to_vec(Vec::new(), value).map_err(|e| format!("{method}: cannot encode: {e}"))
}

/// Decodes a request or reply of `method`.
pub(super) fn decode<T: DeserializeOwned>(method: &str, bytes: &[u8]) -> Result<T, String> {
    cbor4ii::serde::from_slice(bytes).map_err(|e| format!("{method}: invalid message: {e}"))
}

#[cfg(test)]
mod tests {
    use openraft::{SnapshotMeta, Vote};

    use super::*;

    #[test]
    fn a_snapshot_chunk_travels_as_one_byte_string_and_round_trips() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let rpc = Rpc::InstallSnapshot(InstallSnapshotRequest {
            vote: Vote::new_committed(3, 9),
            meta: SnapshotMeta {
                last_log_id: None,
                last_membership: Default::default(),
                snapshot_id: "3-40-1".into(),
            },
            offset: 2 << 20,
            data: data.clone(),
            done: true,
        });
        let bytes = encode("test", &rpc).unwrap();
        assert!(
            bytes.len() < data.len() + 1024,
            "{} bytes for {} of data",
            bytes.len(),
            data.len()
        );
        let Rpc::InstallSnapshot(back) = decode::<Rpc>("test", &bytes).unwrap() else {
            panic!("not a snapshot chunk");
        };
        let Rpc::InstallSnapshot(sent) = rpc else {
            unreachable!()
        };
        assert_eq!(back, sent);
    }
}
