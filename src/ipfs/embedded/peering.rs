//! Keeps this peer's embedded IPFS node connected to the other cluster
//! members' nodes, so content added on one peer is fetched by the others
//! (docs/design/embedded-ipfs.md, "Connecting the nodes").
//!
//! Pull, as IPFS Cluster's `ConnectSwarms` does: for every Raft member
//! whose node we are not connected to, ask that peer over cluster RPC
//! ([`crate::ipfs::rpc::Id`]) for its node's id and addresses, and dial them. The
//! answer is cached until a dial fails (addresses change on restart). A
//! round runs on every membership or log change (at most every
//! [`PeeringConfig::min_delay`]), again after a backoff while some node is
//! unreachable, and every [`PeeringConfig::max_delay`] otherwise.
//!
//! It owns nothing but that cache; it must not pin or fetch.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::consensus::ClusterNode;
use crate::ipfs::{EmbeddedNode, IpfsId};

/// Timing of the connect loop.
#[derive(Clone, Debug)]
pub struct PeeringConfig {
    /// Shortest time between rounds, and the first backoff step.
    pub min_delay: Duration,
    /// Longest backoff, and the interval once every node is connected.
    pub max_delay: Duration,
    /// How long an RPC or a dial may take.
    pub timeout: Duration,
}

impl Default for PeeringConfig {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Starts the connect loop for `ipfs` on `node`'s membership.
pub fn spawn(
    node: ClusterNode,
    ipfs: EmbeddedNode,
    config: PeeringConfig,
    cancel: CancellationToken,
    tasks: &TaskTracker,
) {
    tasks.spawn(run(node, ipfs, config, cancel));
}

async fn run(
    node: ClusterNode,
    ipfs: EmbeddedNode,
    config: PeeringConfig,
    cancel: CancellationToken,
) {
    let mut known: HashMap<String, Option<IpfsId>> = HashMap::new();
    let mut applied = node.applied_watch();
    let mut backoff = config.min_delay;
    loop {
        let delay = if round(&node, &ipfs, &config, &mut known).await {
            backoff = config.min_delay;
            config.max_delay
        } else {
            let d = backoff;
            backoff = (backoff * 2).min(config.max_delay);
            d
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
            r = applied.changed() => {
                if r.is_err() {
                    return;
                }
                // Coalesce bursts of log entries.
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(config.min_delay) => {}
                }
            }
        }
    }
}

/// One pass over the membership; true when every member's node (that has
/// one) is connected.
async fn round(
    node: &ClusterNode,
    ipfs: &EmbeddedNode,
    config: &PeeringConfig,
    known: &mut HashMap<String, Option<IpfsId>>,
) -> bool {
    let me = node.peer_id().to_string();
    let connected: HashSet<PeerId> = ipfs.connected_peers().await.into_iter().collect();
    let mut all = true;
    for (_, member) in node.members() {
        if member.peer_id == me {
            continue;
        }
        let Ok(peer) = member.peer_id.parse::<PeerId>() else {
            continue;
        };
        let id = match known.get(&member.peer_id) {
            Some(id) => id.clone(),
            None => match ask(node, peer, config.timeout).await {
                Some(id) => {
                    known.insert(member.peer_id.clone(), id.clone());
                    id
                }
                None => {
                    all = false;
                    continue;
                }
            },
        };
        let Some(id) = id else { continue }; // that peer runs no IPFS node
        let Ok(target) = id.id.parse::<PeerId>() else {
            continue;
        };
        if connected.contains(&target) {
            continue;
        }
        if reach(ipfs, &id, config.timeout).await {
            tracing::debug!(peer = %member.peer_id, ipfs = %target, "connected to a member's ipfs node");
        } else {
            tracing::debug!(peer = %member.peer_id, "cannot reach a member's ipfs node yet");
            known.remove(&member.peer_id);
            all = false;
        }
    }
    // The current members' nodes: on the public network only they may
    // push blocks to ours.
    let members: HashSet<String> = node.members().into_iter().map(|(_, m)| m.peer_id).collect();
    known.retain(|peer, _| members.contains(peer));
    ipfs.set_cluster_nodes(
        known
            .values()
            .flatten()
            .filter_map(|id| id.id.parse::<PeerId>().ok())
            .collect(),
    );
    all
}

/// A member's IPFS identity; `None` when it did not answer.
async fn ask(node: &ClusterNode, peer: PeerId, timeout: Duration) -> Option<Option<IpfsId>> {
    match tokio::time::timeout(timeout, node.call::<crate::ipfs::rpc::Id>(peer, &())).await {
        Ok(Ok(id)) => Some(id),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "member's ipfs node did not answer");
            None
        }
        Err(_) => None,
    }
}

/// Dials the node `id` at its announced addresses, each bounded by
/// `timeout`, unless it is connected already; whether it is connected.
pub async fn reach(ipfs: &EmbeddedNode, id: &IpfsId, timeout: Duration) -> bool {
    let Ok(target) = id.id.parse::<PeerId>() else {
        return false;
    };
    if ipfs.connected_peers().await.contains(&target) {
        return true;
    }
    for addr in id
        .addresses
        .iter()
        .filter_map(|a| a.parse::<Multiaddr>().ok())
    {
        if let Ok(Ok(_)) = tokio::time::timeout(timeout, ipfs.connect(addr)).await {
            return true;
        }
    }
    false
}
