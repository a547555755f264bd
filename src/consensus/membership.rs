//! Membership: joining the cluster through a bootstrap address (as a
//! learner, then a voter), removing a peer, and waiting until this peer is
//! a voter with a leader. Changes run on the leader; other peers forward
//! them there. Only trusted peers (`permission.rs`) become voters: the
//! leader refuses any other joiner, whoever forwarded its join.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use openraft::ChangeMembers;
use openraft::error::{ClientWriteError, RaftError};
use tokio_util::sync::CancellationToken;

use super::node::write_failure;
use super::{
    ClusterError, ClusterNode, NodeId, PeerNode, RemoteFailure, Rpc, RpcReply, TypeConfig, node_id,
};

/// How often a peer the cluster refused as a voter asks again.
const FORBIDDEN_RETRY: Duration = Duration::from_secs(60);

impl ClusterNode {
    /// Waits until this peer is a voter of a cluster with a leader.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), ClusterError> {
        let id = self.inner.id;
        let Some(raft) = &self.inner.raft else {
            return Err(ClusterError::Forbidden(
                "this peer is a follower: it never joins the cluster's consensus".into(),
            ));
        };
        raft.wait(Some(timeout))
            .metrics(
                |m| {
                    m.current_leader.is_some()
                        && m.membership_config
                            .membership()
                            .voter_ids()
                            .any(|v| v == id)
                },
                "peer ready",
            )
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::Unavailable(e.to_string()))
    }

    /// After a restart: once a leader is known, makes sure the membership
    /// records this peer as it runs now (its p2p addresses and API URL may
    /// have changed, e.g. on new ports), asking the leader to update the
    /// record when it differs; retried until it matches.
    pub(super) async fn announce_loop(self, cancel: CancellationToken) {
        let mut delay = Duration::from_millis(200);
        loop {
            let ready = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.wait_ready(Duration::from_secs(60)) => r.is_ok(),
            };
            if ready {
                let recorded = self
                    .metrics()
                    .membership_config
                    .membership()
                    .get_node(&self.inner.id)
                    .cloned();
                if recorded.as_ref() == Some(&self.inner.node) {
                    return;
                }
                match self.join_local(self.inner.node.clone()).await {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot update this peer's member record yet")
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Asks the bootstrap peers to let this peer join until one does. A
    /// peer the cluster does not trust is told so: that is logged once
    /// (as an error) and asked again only every [`FORBIDDEN_RETRY`], in
    /// case the cluster's trusted list changes.
    pub(super) async fn join_loop(self, bootstrap: Vec<Multiaddr>, cancel: CancellationToken) {
        let mut delay = Duration::from_millis(200);
        let mut told = false;
        loop {
            let mut forbidden = false;
            for addr in &bootstrap {
                match self.try_join(addr.clone()).await {
                    Ok(()) => {
                        tracing::info!(via = %addr, "joined the cluster");
                        return;
                    }
                    Err(ClusterError::Forbidden(m)) => {
                        if !std::mem::replace(&mut told, true) {
                            tracing::error!(via = %addr, "the cluster refuses this peer as a voter: {m}");
                        }
                        forbidden = true;
                    }
                    Err(e) => tracing::debug!(via = %addr, error = %e, "join attempt failed"),
                }
            }
            let wait = if forbidden { FORBIDDEN_RETRY } else { delay };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn try_join(&self, addr: Multiaddr) -> Result<(), ClusterError> {
        let peer = self
            .inner
            .p2p
            .dial(addr)
            .await
            .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
        match self
            .inner
            .p2p
            .request(peer, Rpc::Join(self.inner.node.clone()))
            .await
        {
            Ok(RpcReply::Membership(Ok(()))) => Ok(()),
            Ok(RpcReply::Membership(Err(e)) | RpcReply::Refused(e)) => Err(e.into()),
            Ok(_) => Err(ClusterError::Raft("unexpected reply to join".into())),
            Err(e) => Err(ClusterError::Unavailable(e.to_string())),
        }
    }

    pub(super) async fn join_local(&self, node: PeerNode) -> Result<(), RemoteFailure> {
        if !self.is_leader() {
            return self.forward_membership(Rpc::Join(node)).await;
        }
        let peer: PeerId = node
            .peer_id
            .parse()
            .map_err(|_| RemoteFailure::Other(format!("invalid peer id {:?}", node.peer_id)))?;
        self.inner.trust.check_joiner(&peer)?;
        let id = node_id(&peer);
        let Some(raft) = &self.inner.raft else {
            return Err(RemoteFailure::Forbidden(super::node::FOLLOWER_WRITE.into()));
        };
        let voters: BTreeSet<NodeId> = self
            .metrics()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if voters.contains(&id) {
            // A member that came back with other addresses or another API
            // URL: its record is updated, so the others (and whoever
            // forwards to it as the leader) reach it where it is now.
            let recorded = self
                .metrics()
                .membership_config
                .membership()
                .get_node(&id)
                .cloned();
            if recorded.as_ref() != Some(&node) {
                self.membership_change(|| {
                    raft.change_membership(
                        ChangeMembers::SetNodes(BTreeMap::from([(id, node.clone())])),
                        false,
                    )
                })
                .await?;
                tracing::info!(peer = %node, api = %node.api, "member record updated");
            }
            return Ok(());
        }
        self.membership_change(|| raft.add_learner(id, node.clone(), true))
            .await?;
        self.membership_change(|| {
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
        })
        .await?;
        Ok(())
    }

    /// Runs a membership change, retrying while another one is still in
    /// progress (joins of several peers arrive together).
    async fn membership_change<F, Fut>(&self, mut change: F) -> Result<(), RemoteFailure>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<
                Output = Result<
                    openraft::raft::ClientWriteResponse<TypeConfig>,
                    RaftError<NodeId, ClientWriteError<NodeId, PeerNode>>,
                >,
            >,
    {
        let deadline = tokio::time::Instant::now() + self.inner.write_timeout;
        loop {
            match change().await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tracing::debug!(error = %e, "membership change busy, retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(write_failure(e)),
            }
        }
    }

    pub(super) async fn remove_local(&self, id: NodeId) -> Result<(), RemoteFailure> {
        if !self.is_leader() {
            return self.forward_membership(Rpc::Remove(id)).await;
        }
        let members = self.metrics().membership_config.membership().clone();
        if !members.nodes().any(|(n, _)| *n == id) {
            return Err(RemoteFailure::Other(format!("node {id} is not a member")));
        }
        let Some(raft) = &self.inner.raft else {
            return Err(RemoteFailure::Forbidden(super::node::FOLLOWER_WRITE.into()));
        };
        if members.voter_ids().any(|v| v == id) {
            self.membership_change(|| {
                raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            })
            .await?;
        }
        self.membership_change(|| {
            raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
        })
        .await
    }

    async fn forward_membership(&self, rpc: Rpc) -> Result<(), RemoteFailure> {
        match self.send_to_leader(rpc).await? {
            RpcReply::Membership(r) => r,
            _ => Err(RemoteFailure::Other("unexpected reply".into())),
        }
    }

    /// Adds `node` as a voter (on the leader; a follower forwards it there).
    /// The peer must be reachable at one of `node.addrs` and must not have
    /// bootstrapped a cluster of its own.
    pub async fn add_peer(&self, node: PeerNode) -> Result<(), ClusterError> {
        self.join_local(node).await.map_err(Into::into)
    }

    /// Removes a peer from the membership (on the leader).
    pub async fn remove_peer(&self, id: NodeId) -> Result<(), ClusterError> {
        self.remove_local(id).await.map_err(Into::into)
    }
}
