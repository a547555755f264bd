//! openraft's network over the p2p request-response RPC.
//!
//! It owns how much one Raft message carries: an `AppendEntries` holds at
//! most [`TransferLimits::append_max_bytes`] of entries (always at least
//! one; openraft is told `PayloadTooLarge` and sends fewer), so a follower
//! that lags by a large ingest catches up in messages that stay far below
//! the p2p message limit and can finish within openraft's per-message
//! timeout (the heartbeat interval). It must not interpret entries: sizes
//! are their encoded length, whatever they hold.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use libp2p::{Multiaddr, PeerId};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{LogId, RaftLogId};

use super::{NodeId, PeerNode, Rpc, RpcReply, TypeConfig};
use crate::p2p::{P2pError, P2pHandle};

/// How much one Raft message may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferLimits {
    /// Most bytes of log entries (CBOR, as sent) in one `AppendEntries`; an
    /// entry larger than this still goes alone.
    pub append_max_bytes: usize,
}

/// Encoded sizes of recently sent entries, shared by every connection so
/// an entry is measured once, not once per follower and retry.
#[derive(Debug, Default)]
struct SizeCache {
    sizes: BTreeMap<LogId<NodeId>, usize>,
}

/// Entries whose size is remembered; the oldest are forgotten first.
const SIZE_CACHE_ENTRIES: usize = 4096;

impl SizeCache {
    fn size_of(&mut self, entry: &openraft::Entry<TypeConfig>) -> usize {
        let id = *entry.get_log_id();
        if let Some(size) = self.sizes.get(&id) {
            return *size;
        }
        let size = encoded_len(entry);
        if self.sizes.len() >= SIZE_CACHE_ENTRIES {
            self.sizes.pop_first();
        }
        self.sizes.insert(id, size);
        size
    }
}

/// A `cbor4ii` writer that only counts.
struct Counter(usize);

impl cbor4ii::core::enc::Write for Counter {
    type Error = std::convert::Infallible;

    fn push(&mut self, input: &[u8]) -> Result<(), Self::Error> {
        self.0 += input.len();
        Ok(())
    }
}

/// The CBOR length of `value`, as the p2p codec would send it; a value
/// that does not encode counts as huge (it goes alone, and fails there).
fn encoded_len<T: serde::Serialize>(value: &T) -> usize {
    let mut counter = Counter(0);
    match value.serialize(&mut cbor4ii::serde::Serializer::new(&mut counter)) {
        Ok(_) => counter.0,
        Err(_) => usize::MAX,
    }
}

/// How many of `entries` (at least one) fit in `max_bytes`.
fn entries_within(
    entries: &[openraft::Entry<TypeConfig>],
    max_bytes: usize,
    cache: &Mutex<SizeCache>,
) -> usize {
    if entries.len() <= 1 {
        return entries.len();
    }
    let Ok(mut cache) = cache.lock() else {
        return entries.len();
    };
    let mut total = 0usize;
    for (i, entry) in entries.iter().enumerate() {
        total = total.saturating_add(cache.size_of(entry));
        if total > max_bytes {
            return i.max(1);
        }
    }
    entries.len()
}

/// Makes one `PeerConnection` per Raft target.
#[derive(Clone, Debug)]
pub struct Network {
    p2p: P2pHandle<Rpc, RpcReply>,
    limits: TransferLimits,
    sizes: Arc<Mutex<SizeCache>>,
}

impl Network {
    pub(super) fn new(p2p: P2pHandle<Rpc, RpcReply>, limits: TransferLimits) -> Self {
        Self {
            p2p,
            limits,
            sizes: Arc::default(),
        }
    }
}

/// The Raft view of one remote peer.
#[derive(Debug)]
pub struct PeerConnection {
    p2p: P2pHandle<Rpc, RpcReply>,
    target: NodeId,
    peer: Option<PeerId>,
    limits: TransferLimits,
    sizes: Arc<Mutex<SizeCache>>,
}

#[derive(Debug, thiserror::Error)]
#[error("peer answered with the wrong reply type")]
struct WrongReply;

#[derive(Debug, thiserror::Error)]
#[error("membership has no valid peer id for node {0}")]
struct BadPeer(NodeId);

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> PeerConnection {
        let peer = node.peer_id.parse::<PeerId>().ok();
        if let Some(peer) = peer {
            for addr in node
                .addrs
                .iter()
                .filter_map(|a| a.parse::<Multiaddr>().ok())
            {
                // Best effort: the peer may also be known through identify.
                let _ = self.p2p.add_address(peer, addr).await;
            }
        }
        PeerConnection {
            p2p: self.p2p.clone(),
            target,
            peer,
            limits: self.limits,
            sizes: Arc::clone(&self.sizes),
        }
    }
}

impl PeerConnection {
    async fn call<E: std::error::Error>(
        &self,
        rpc: Rpc,
    ) -> Result<RpcReply, RPCError<NodeId, PeerNode, E>> {
        let Some(peer) = self.peer else {
            return Err(RPCError::Unreachable(Unreachable::new(&BadPeer(
                self.target,
            ))));
        };
        self.p2p.request(peer, rpc).await.map_err(|e| match e {
            P2pError::Unreachable { .. } | P2pError::Dial { .. } | P2pError::Stopped => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            other => RPCError::Network(NetworkError::new(&other)),
        })
    }

    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<NodeId, E>,
    ) -> RPCError<NodeId, PeerNode, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    /// Sends the request when its entries fit in `append_max_bytes` (a
    /// single entry always does); otherwise answers openraft's
    /// `PayloadTooLarge` with how many do, and openraft sends that many
    /// (and reads no more from the log for its next few messages).
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> {
        let fit = entries_within(&rpc.entries, self.limits.append_max_bytes, &self.sizes);
        if fit < rpc.entries.len() {
            let hint = u64::try_from(fit).unwrap_or(1);
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        match self.call(Rpc::AppendEntries(rpc)).await? {
            RpcReply::AppendEntries(r) => r.map_err(|e| self.remote(e)),
            _ => Err(RPCError::Network(NetworkError::new(&WrongReply))),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, PeerNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.call(Rpc::InstallSnapshot(rpc)).await? {
            RpcReply::InstallSnapshot(r) => r.map_err(|e| self.remote(e)),
            _ => Err(RPCError::Network(NetworkError::new(&WrongReply))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> {
        match self.call(Rpc::Vote(rpc)).await? {
            RpcReply::Vote(r) => r.map_err(|e| self.remote(e)),
            _ => Err(RPCError::Network(NetworkError::new(&WrongReply))),
        }
    }
}
