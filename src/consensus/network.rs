//! openraft's network over the p2p request-response RPC.

use libp2p::{Multiaddr, PeerId};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::{NodeId, PeerNode, Rpc, RpcReply, TypeConfig};
use crate::p2p::{P2pError, P2pHandle};

/// Makes one `PeerConnection` per Raft target.
#[derive(Clone, Debug)]
pub struct Network {
    pub(super) p2p: P2pHandle<Rpc, RpcReply>,
}

/// The Raft view of one remote peer.
#[derive(Debug)]
pub struct PeerConnection {
    p2p: P2pHandle<Rpc, RpcReply>,
    target: NodeId,
    peer: Option<PeerId>,
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
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> {
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
