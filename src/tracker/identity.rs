//! Who each member is, as IPFS Cluster's `PinInfoShort` shows it with every
//! status: its peer name and its IPFS node's ID and addresses. Each peer
//! answers for itself ([`super::rpc::Identity`]); the asker keeps the
//! answers for [`FRESH`] and keeps a stale answer when a member does not
//! answer, so a status page costs at most one short call per member.
//!
//! Owns the cache only; it must not change statuses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::consensus::ClusterNode;
use crate::ipfs::IpfsBackend;

/// How long a member's identity is used before it is asked again.
pub const FRESH: Duration = Duration::from_secs(30);

/// How long one member's (or the local IPFS node's) answer is waited for.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// A member as status answers name it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerIdentity {
    /// The member's peer name.
    pub peername: String,
    /// Its IPFS node's peer ID (empty when unknown).
    pub ipfs_peer_id: String,
    /// Its IPFS node's addresses.
    pub ipfs_peer_addresses: Vec<String>,
    /// Its pinfleet version.
    #[serde(default)]
    pub version: String,
    /// The members its cluster swarm is connected to (for
    /// `/health/graph`).
    #[serde(default)]
    pub connected: Vec<String>,
    /// The IPFS nodes its IPFS node is connected to (for `/health/graph`).
    #[serde(default)]
    pub ipfs_connected: Vec<String>,
}

/// Identities of the members, asked for when stale.
#[derive(Clone)]
pub struct Identities {
    node: ClusterNode,
    peername: String,
    ipfs: Option<Arc<dyn IpfsBackend>>,
    cache: Arc<Mutex<HashMap<String, (PeerIdentity, Instant)>>>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("peername", &self.peername)
            .finish_non_exhaustive()
    }
}

impl Identities {
    /// Identities as seen from `node`, this peer named `peername` with the
    /// IPFS node `ipfs`.
    pub fn new(node: ClusterNode, peername: String, ipfs: Option<Arc<dyn IpfsBackend>>) -> Self {
        Self {
            node,
            peername,
            ipfs,
            cache: Arc::default(),
        }
    }

    /// This peer's identity as status answers show it: cached for
    /// [`FRESH`], so what it is connected to may be that old.
    pub async fn own(&self) -> PeerIdentity {
        self.own_with(false).await
    }

    /// This peer's identity with what it is connected to as of now (what
    /// [`super::rpc::Identity`] answers, for `/health/graph`).
    pub async fn own_now(&self) -> PeerIdentity {
        self.own_with(true).await
    }

    /// The cached identity (links refreshed when `fresh_links`), or one
    /// described and linked afresh, then cached.
    async fn own_with(&self, fresh_links: bool) -> PeerIdentity {
        let me = self.node.peer_id().to_string();
        if let Some(mut id) = self.cached(&me, false) {
            if fresh_links {
                self.links(&mut id).await;
            }
            return id;
        }
        let mut id = self.describe().await;
        self.links(&mut id).await;
        self.store(me, id.clone());
        id
    }

    /// This peer's names, version and IPFS node, asked afresh.
    async fn describe(&self) -> PeerIdentity {
        let mut id = PeerIdentity {
            peername: self.peername.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..PeerIdentity::default()
        };
        if let Some(ipfs) = self.ipfs.as_ref().filter(|b| b.kind() != "none")
            && let Ok(Ok(got)) = tokio::time::timeout(ASK_TIMEOUT, ipfs.id()).await
        {
            id.ipfs_peer_id = got.id;
            id.ipfs_peer_addresses = got.addresses;
        }
        id
    }

    /// Sets the members this peer's cluster swarm is connected to and the
    /// nodes its IPFS node is connected to, as of now.
    async fn links(&self, id: &mut PeerIdentity) {
        let members: std::collections::HashSet<String> = self
            .node
            .members()
            .into_iter()
            .map(|(_, n)| n.peer_id)
            .collect();
        id.connected = match self.node.p2p().connected_peers().await {
            Ok(peers) => peers
                .iter()
                .map(ToString::to_string)
                .filter(|p| members.contains(p))
                .collect(),
            Err(_) => Vec::new(),
        };
        id.ipfs_connected = match self.ipfs.as_ref().filter(|b| b.kind() != "none") {
            Some(ipfs) => tokio::time::timeout(ASK_TIMEOUT, ipfs.swarm_peers())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default(),
            None => Vec::new(),
        };
    }

    /// Every member's identity by peer ID: fresh ones from the cache, the
    /// others asked at once (a member that does not answer keeps its last
    /// known identity, or none).
    pub async fn members(&self) -> HashMap<String, PeerIdentity> {
        let me = self.node.peer_id();
        let others = self.node.other_members();
        let asks = others.iter().map(|peer| async move {
            let key = peer.to_string();
            if let Some(id) = self.cached(&key, false) {
                return (key, Some(id));
            }
            let call = self.node.call::<super::rpc::Identity>(*peer, &());
            match tokio::time::timeout(ASK_TIMEOUT, call).await {
                Ok(Ok(id)) => {
                    self.store(key.clone(), id.clone());
                    (key, Some(id))
                }
                _ => {
                    let stale = self.cached(&key, true);
                    (key, stale)
                }
            }
        });
        let (own, answers) = tokio::join!(self.own(), futures::future::join_all(asks));
        let mut out: HashMap<String, PeerIdentity> = answers
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        out.insert(me.to_string(), own);
        out
    }

    /// Asks `peer` who it is now (this peer answers for itself), keeping
    /// the answer; the reason when it does not answer.
    pub async fn ask(&self, peer: libp2p::PeerId) -> Result<PeerIdentity, String> {
        if peer == self.node.peer_id() {
            return Ok(self.own_now().await);
        }
        let call = self.node.call::<super::rpc::Identity>(peer, &());
        match tokio::time::timeout(ASK_TIMEOUT, call).await {
            Ok(Ok(id)) => {
                self.store(peer.to_string(), id.clone());
                Ok(id)
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {ASK_TIMEOUT:?}")),
        }
    }

    fn cached(&self, peer: &str, stale_ok: bool) -> Option<PeerIdentity> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(peer)
            .filter(|(_, at)| stale_ok || at.elapsed() < FRESH)
            .map(|(id, _)| id.clone())
    }

    fn store(&self, peer: String, id: PeerIdentity) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(peer, (id, Instant::now()));
    }
}
