//! `ClusterNode`: one running peer's consensus: starts p2p and Raft, serves
//! peer RPCs, forwards writes to the leader, joins or bootstraps the cluster,
//! and turns PinSet applies into chunked, atomic log entries.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, Raft, RaftMetrics, SnapshotPolicy};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::network::Network;
use super::{
    LogStore, NodeId, PeerNode, RemoteFailure, Rpc, RpcReply, StateStore, TypeConfig, node_id,
};
use crate::manifest::{CidKey, DesiredPin, DesiredPinSet, Owner, PinSetId, PinSpec};
use crate::p2p::{self, InboundRequest, P2pConfig, P2pHandle};
use crate::plan::{PruneGuard, PruneGuardTripped, plan_pinset, plan_release_all};
use crate::state::{Command, Op, Outcome, PinSetRecord, Request, plan_ops};
use crate::wire::ApplyReport;

/// Everything a peer needs to run consensus.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Peer directory; Raft data goes to `<dir>/raft/`.
    pub dir: PathBuf,
    /// libp2p identity.
    pub keypair: Keypair,
    /// Cluster secret (pnet PSK).
    pub secret: [u8; 32],
    /// p2p listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Peers to join through; empty: bootstrap a new cluster if this peer
    /// has no state yet.
    pub bootstrap: Vec<Multiaddr>,
    /// This peer's REST API URL, recorded in the membership.
    pub api_url: String,
    /// Raft heartbeat.
    pub heartbeat_interval: Duration,
    /// Raft election timeout, lower bound.
    pub election_timeout_min: Duration,
    /// Raft election timeout, upper bound.
    pub election_timeout_max: Duration,
    /// Build a snapshot after this many applied entries.
    pub snapshot_logs_since_last: u64,
    /// Entries kept in the log behind a snapshot.
    pub max_in_snapshot_log_to_keep: u64,
    /// How long a write may wait to commit before failing.
    pub write_timeout: Duration,
    /// Most pin ops in one log entry.
    pub batch_max_pins: usize,
}

impl NodeOptions {
    /// Defaults suited to tests and a local testbed.
    pub fn new(dir: PathBuf, keypair: Keypair, secret: [u8; 32]) -> Self {
        Self {
            dir,
            keypair,
            secret,
            listen: vec![local_any_port()],
            bootstrap: Vec::new(),
            api_url: String::new(),
            heartbeat_interval: Duration::from_millis(250),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            snapshot_logs_since_last: 5000,
            max_in_snapshot_log_to_keep: 1000,
            write_timeout: Duration::from_secs(30),
            batch_max_pins: 10_000,
        }
    }
}

fn local_any_port() -> Multiaddr {
    // A literal that always parses.
    Multiaddr::from(std::net::Ipv4Addr::LOCALHOST).with(libp2p::multiaddr::Protocol::Tcp(0))
}

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No leader is known: the cluster has no quorum (or is electing).
    #[error("no leader: the cluster has no quorum or is electing one")]
    NoLeader,
    /// The write could not be committed (no quorum, timeout, leader lost).
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// Local storage failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// The peer is shutting down.
    #[error("the peer is shutting down")]
    Stopped,
    /// Starting the peer failed.
    #[error("cannot start the peer: {0}")]
    Start(String),
    /// The state machine refused the command.
    #[error("refused: {0}")]
    Refused(String),
    /// Anything else from Raft.
    #[error("raft: {0}")]
    Raft(String),
}

impl ClusterError {
    /// True for errors that mean "try again later" (HTTP 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ClusterError::NoLeader | ClusterError::Unavailable(_) | ClusterError::Stopped
        )
    }
}

impl From<RemoteFailure> for ClusterError {
    fn from(f: RemoteFailure) -> Self {
        match f {
            RemoteFailure::NotLeader(_) => ClusterError::Unavailable("leader changed".into()),
            RemoteFailure::Unavailable(m) => ClusterError::Unavailable(m),
            RemoteFailure::Other(m) => ClusterError::Raft(m),
        }
    }
}

/// A PinSet to apply.
#[derive(Clone, Debug)]
pub struct PinSetApply {
    /// The validated, resolved PinSet.
    pub pinset: DesiredPinSet,
    /// Revision label (content digest, git revision).
    pub revision: String,
    /// Where it came from.
    pub source: String,
    /// Prune guard (the PinSet's force-prune annotation is honoured too).
    pub guard: PruneGuard,
    /// Plan only.
    pub dry_run: bool,
}

/// A new revision of an applied PinSet, given as the pins that differ from
/// the revision the cluster holds (`base_revision`): what a controller that
/// remembers its last apply sends instead of the whole PinSet.
#[derive(Clone, Debug)]
pub struct PinSetPatch {
    /// `namespace/name`.
    pub id: PinSetId,
    /// The revision the cluster must hold for the patch to apply.
    pub base_revision: String,
    /// The revision the patch brings the PinSet to.
    pub revision: String,
    /// Where it came from.
    pub source: String,
    /// Labels of the new revision.
    pub labels: BTreeMap<String, String>,
    /// Prune enabled in the new revision.
    pub prune: bool,
    /// Reconciling suspended in the new revision (nothing is written).
    pub suspend: bool,
    /// Pins the PinSet declares in the new revision.
    pub pins: u64,
    /// Pins to add or whose name or options change.
    pub set: Vec<(CidKey, DesiredPin)>,
    /// Pins that left the PinSet.
    pub release: Vec<CidKey>,
    /// Prune guard.
    pub guard: PruneGuard,
    /// Plan only.
    pub dry_run: bool,
}

/// Receives gossip payloads (peer, bytes).
pub type GossipSink = Arc<dyn Fn(PeerId, Vec<u8>) + Send + Sync>;

struct Inner {
    gossip_sink: Arc<std::sync::OnceLock<GossipSink>>,
    status: std::sync::OnceLock<Arc<dyn super::StatusProvider>>,
    ipfs: std::sync::OnceLock<Arc<dyn crate::ipfs::IpfsBackend>>,
    applied: tokio::sync::watch::Receiver<u64>,
    id: NodeId,
    raft: Raft<TypeConfig>,
    store: StateStore,
    p2p: P2pHandle<Rpc, RpcReply>,
    node: PeerNode,
    write_timeout: Duration,
    quorum_grace: Duration,
    batch_max_pins: usize,
}

/// A running peer's consensus. Cheap to clone.
#[derive(Clone)]
pub struct ClusterNode {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("id", &self.inner.id)
            .finish()
    }
}

const SAMPLE: usize = 10;

impl ClusterNode {
    /// Starts p2p and Raft; bootstraps a one-peer cluster when there is no
    /// state and no bootstrap address, otherwise joins in the background.
    /// Everything stops when `cancel` fires; tasks are tracked on `tasks`.
    pub async fn start(
        opts: NodeOptions,
        cancel: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Self, ClusterError> {
        let start = |e: &dyn std::fmt::Display| ClusterError::Start(e.to_string());
        let raft_dir = opts.dir.join("raft");
        std::fs::create_dir_all(&raft_dir).map_err(|e| start(&e))?;
        let mut p2p_config = P2pConfig::new(opts.keypair.clone(), opts.secret);
        p2p_config.listen = opts.listen.clone();
        p2p_config.bootstrap = opts.bootstrap.clone();
        let (p2p, events) = p2p::spawn::<Rpc, RpcReply>(p2p_config, cancel.clone(), tasks)
            .await
            .map_err(|e| start(&e))?;
        let peer_id = p2p.local_peer_id();
        let id = node_id(&peer_id);
        let addrs = p2p.listen_addrs().await.map_err(|e| start(&e))?;
        let node = PeerNode {
            peer_id: peer_id.to_string(),
            addrs: addrs.iter().map(ToString::to_string).collect(),
            api: opts.api_url.clone(),
        };

        let log = LogStore::open(&raft_dir.join("log.redb")).map_err(|e| start(&e))?;
        let store = StateStore::open(&raft_dir.join("state.redb"), &raft_dir.join("snapshots"))
            .map_err(|e| start(&e))?;
        let config = openraft::Config {
            cluster_name: "pinfleet".into(),
            heartbeat_interval: opts.heartbeat_interval.as_millis() as u64,
            election_timeout_min: opts.election_timeout_min.as_millis() as u64,
            election_timeout_max: opts.election_timeout_max.as_millis() as u64,
            install_snapshot_timeout: 10_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: opts.max_in_snapshot_log_to_keep,
            ..Default::default()
        }
        .validate()
        .map_err(|e| start(&e))?;
        let raft = Raft::new(
            id,
            Arc::new(config),
            Network { p2p: p2p.clone() },
            log,
            store.clone(),
        )
        .await
        .map_err(|e| start(&e))?;

        let (applied_tx, applied_rx) = tokio::sync::watch::channel(0u64);
        let mut metrics = raft.metrics();
        let c = cancel.clone();
        tasks.spawn(async move {
            loop {
                let last = metrics.borrow().last_applied.map(|l| l.index).unwrap_or(0);
                applied_tx.send_if_modified(|v| {
                    let changed = *v != last;
                    *v = last;
                    changed
                });
                tokio::select! {
                    _ = c.cancelled() => break,
                    r = metrics.changed() => if r.is_err() { break },
                }
            }
        });
        let this = ClusterNode {
            inner: Arc::new(Inner {
                gossip_sink: Arc::new(std::sync::OnceLock::new()),
                status: std::sync::OnceLock::new(),
                ipfs: std::sync::OnceLock::new(),
                applied: applied_rx,
                id,
                raft,
                store,
                p2p,
                node,
                write_timeout: opts.write_timeout,
                quorum_grace: opts.election_timeout_max * 2,
                batch_max_pins: opts.batch_max_pins.max(1),
            }),
        };

        tasks.spawn(
            this.clone()
                .serve(events.inbound, cancel.clone(), tasks.clone()),
        );
        let mut gossip = events.gossip;
        let c = cancel.clone();
        let sink = Arc::clone(&this.inner.gossip_sink);
        // Informer metrics arrive here; they go to whoever registered.
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = c.cancelled() => break,
                    m = gossip.recv() => match m {
                        None => break,
                        Some((peer, data)) => {
                            if let Some(f) = sink.get() {
                                f(peer, data);
                            }
                        }
                    },
                }
            }
        });
        let raft = this.inner.raft.clone();
        let c = cancel.clone();
        tasks.spawn(async move {
            c.cancelled().await;
            if let Err(e) = raft.shutdown().await {
                tracing::warn!(error = %e, "raft shutdown failed");
            }
        });

        let initialized = this
            .inner
            .raft
            .is_initialized()
            .await
            .map_err(|e| start(&e))?;
        if !initialized {
            if opts.bootstrap.is_empty() {
                let members = BTreeMap::from([(id, this.inner.node.clone())]);
                this.inner
                    .raft
                    .initialize(members)
                    .await
                    .map_err(|e| start(&e))?;
                tracing::info!(peer = %peer_id, "bootstrapped a new cluster");
            } else {
                tasks.spawn(
                    this.clone()
                        .join_loop(opts.bootstrap.clone(), cancel.clone()),
                );
            }
        }
        Ok(this)
    }

    /// Registers this peer's IPFS node (once), which answers other peers'
    /// [`Rpc::IpfsId`].
    pub fn set_ipfs_backend(&self, backend: Arc<dyn crate::ipfs::IpfsBackend>) {
        let _ = self.inner.ipfs.set(backend);
    }

    /// This peer's IPFS node, once registered.
    pub fn ipfs_backend(&self) -> Option<Arc<dyn crate::ipfs::IpfsBackend>> {
        self.inner.ipfs.get().cloned()
    }

    /// Registers where gossip (informer metrics) goes (once).
    pub fn set_gossip_sink(&self, sink: GossipSink) {
        let _ = self.inner.gossip_sink.set(sink);
    }

    /// Publishes a gossip message to the other peers.
    pub async fn publish(&self, data: Vec<u8>) -> Result<(), crate::p2p::P2pError> {
        self.inner.p2p.publish(data).await
    }

    /// Registers what answers other peers' status RPCs (once).
    pub fn set_status_provider(&self, provider: Arc<dyn super::StatusProvider>) {
        let _ = self.inner.status.set(provider);
    }

    /// The local status provider, if one is registered.
    pub fn status_provider(&self) -> Option<Arc<dyn super::StatusProvider>> {
        self.inner.status.get().cloned()
    }

    /// Changes whenever the local state applies log entries (last applied index).
    pub fn applied_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.applied.clone()
    }

    /// Sends an RPC to one peer (status fan-out).
    pub async fn ask(&self, peer: PeerId, rpc: Rpc) -> Result<RpcReply, crate::p2p::P2pError> {
        self.learn_addresses(&peer).await;
        self.inner.p2p.request(peer, rpc).await
    }

    /// Tells p2p where a member listens, from the membership: a follower
    /// may never have dialed the other followers.
    async fn learn_addresses(&self, peer: &PeerId) {
        let key = peer.to_string();
        let addrs: Vec<Multiaddr> = self
            .members()
            .into_iter()
            .filter(|(_, n)| n.peer_id == key)
            .flat_map(|(_, n)| n.addrs)
            .filter_map(|a| a.parse().ok())
            .collect();
        for a in addrs {
            // Best effort: a bad address only means one fewer way to dial.
            let _ = self.inner.p2p.add_address(*peer, a).await;
        }
    }

    /// This peer's Raft id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// This peer's libp2p id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.p2p.local_peer_id()
    }

    /// This peer as recorded in the membership.
    pub fn node(&self) -> &PeerNode {
        &self.inner.node
    }

    /// The local copy of the shared state (may lag the leader).
    pub fn store(&self) -> &StateStore {
        &self.inner.store
    }

    /// The p2p handle (for status fan-out and metrics).
    pub fn p2p(&self) -> &P2pHandle<Rpc, RpcReply> {
        &self.inner.p2p
    }

    /// The latest Raft metrics.
    pub fn metrics(&self) -> RaftMetrics<NodeId, PeerNode> {
        self.inner.raft.metrics().borrow().clone()
    }

    /// Raft metrics as they change (the leader's `replication` map says
    /// which log index each voter holds: what is committed).
    pub fn metrics_watch(&self) -> tokio::sync::watch::Receiver<RaftMetrics<NodeId, PeerNode>> {
        self.inner.raft.metrics()
    }

    /// The current leader's id, if one is known.
    pub fn leader(&self) -> Option<NodeId> {
        self.inner.raft.metrics().borrow().current_leader
    }

    /// Members (voters and learners) with their ids.
    pub fn members(&self) -> Vec<(NodeId, PeerNode)> {
        let m = self.metrics();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.clone()))
            .collect()
    }

    /// Waits until this peer is a voter of a cluster with a leader.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), ClusterError> {
        let id = self.inner.id;
        self.inner
            .raft
            .wait(Some(timeout))
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

    async fn join_loop(self, bootstrap: Vec<Multiaddr>, cancel: CancellationToken) {
        let mut delay = Duration::from_millis(200);
        loop {
            for addr in &bootstrap {
                match self.try_join(addr.clone()).await {
                    Ok(()) => {
                        tracing::info!(via = %addr, "joined the cluster");
                        return;
                    }
                    Err(e) => tracing::debug!(via = %addr, error = %e, "join attempt failed"),
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
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
            Ok(RpcReply::Membership(Err(e))) => Err(e.into()),
            Ok(_) => Err(ClusterError::Raft("unexpected reply to join".into())),
            Err(e) => Err(ClusterError::Unavailable(e.to_string())),
        }
    }

    async fn serve(
        self,
        mut inbound: mpsc::Receiver<InboundRequest<Rpc, RpcReply>>,
        cancel: CancellationToken,
        tasks: TaskTracker,
    ) {
        loop {
            let req = tokio::select! {
                _ = cancel.cancelled() => break,
                r = inbound.recv() => match r { Some(r) => r, None => break },
            };
            let this = self.clone();
            tasks.spawn(async move {
                let reply = this.handle(req.request).await;
                // The requester may have given up; nothing to do then.
                let _ = req.reply.send(reply);
            });
        }
    }

    async fn handle(&self, rpc: Rpc) -> RpcReply {
        let raft = &self.inner.raft;
        match rpc {
            Rpc::AppendEntries(r) => RpcReply::AppendEntries(raft.append_entries(r).await),
            Rpc::Vote(r) => RpcReply::Vote(raft.vote(r).await),
            Rpc::InstallSnapshot(r) => RpcReply::InstallSnapshot(raft.install_snapshot(r).await),
            Rpc::Write(cmd) => RpcReply::Write(self.write_local(cmd).await),
            Rpc::Join(node) => RpcReply::Membership(self.join_local(node).await),
            Rpc::Remove(id) => RpcReply::Membership(self.remove_local(id).await),
            Rpc::Status(cids) => RpcReply::Status(match self.inner.status.get() {
                Some(p) => p.statuses(cids).await.map_err(RemoteFailure::Other),
                None => Err(RemoteFailure::Other("this peer tracks no pins".into())),
            }),
            Rpc::StatusRange { first, last, count } => {
                RpcReply::StatusRange(match self.inner.status.get() {
                    Some(p) => p
                        .range_statuses(first, last, count)
                        .await
                        .map_err(RemoteFailure::Other),
                    None => Err(RemoteFailure::Other("this peer tracks no pins".into())),
                })
            }
            Rpc::Recover(cid) => RpcReply::Recover(match self.inner.status.get() {
                Some(p) => p.recover(cid).await.map_err(RemoteFailure::Other),
                None => Err(RemoteFailure::Other("this peer tracks no pins".into())),
            }),
            Rpc::IpfsGc => RpcReply::IpfsGc(match self.inner.ipfs.get() {
                Some(b) if b.kind() != "none" => b
                    .gc()
                    .await
                    .map(|r| r.removed)
                    .map_err(|e| RemoteFailure::Other(e.to_string())),
                _ => Err(RemoteFailure::Other("this peer has no ipfs node".into())),
            }),
            Rpc::IpfsId => RpcReply::IpfsId(match self.inner.ipfs.get() {
                Some(b) if b.kind() != "none" => b
                    .id()
                    .await
                    .map(Some)
                    .map_err(|e| RemoteFailure::Other(e.to_string())),
                _ => Ok(None),
            }),
            Rpc::ReadIndex => RpcReply::ReadIndex(if self.is_leader() {
                Ok(self.leader_read_index())
            } else {
                Err(RemoteFailure::NotLeader(self.leader()))
            }),
        }
    }

    /// True when this peer is the Raft leader.
    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.inner.id)
    }

    async fn join_local(&self, node: PeerNode) -> Result<(), RemoteFailure> {
        if !self.is_leader() {
            return self.forward_membership(Rpc::Join(node)).await;
        }
        let peer: PeerId = node
            .peer_id
            .parse()
            .map_err(|_| RemoteFailure::Other(format!("invalid peer id {:?}", node.peer_id)))?;
        let id = node_id(&peer);
        let raft = &self.inner.raft;
        let voters: BTreeSet<NodeId> = self
            .metrics()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if voters.contains(&id) {
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

    async fn remove_local(&self, id: NodeId) -> Result<(), RemoteFailure> {
        if !self.is_leader() {
            return self.forward_membership(Rpc::Remove(id)).await;
        }
        let members = self.metrics().membership_config.membership().clone();
        if !members.nodes().any(|(n, _)| *n == id) {
            return Err(RemoteFailure::Other(format!("node {id} is not a member")));
        }
        let raft = &self.inner.raft;
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

    async fn send_to_leader(&self, rpc: Rpc) -> Result<RpcReply, RemoteFailure> {
        let leader = self
            .leader()
            .ok_or(RemoteFailure::Unavailable("no leader".into()))?;
        let peer = self
            .members()
            .into_iter()
            .find(|(id, _)| *id == leader)
            .and_then(|(_, n)| n.peer_id.parse::<PeerId>().ok())
            .ok_or_else(|| RemoteFailure::Unavailable("leader not in membership".into()))?;
        self.learn_addresses(&peer).await;
        tokio::time::timeout(self.inner.write_timeout, self.inner.p2p.request(peer, rpc))
            .await
            .map_err(|_| RemoteFailure::Unavailable("leader did not answer in time".into()))?
            .map_err(|e| RemoteFailure::Unavailable(format!("cannot reach the leader: {e}")))
    }

    /// Commits a command on the leader (forwarding if needed) and returns
    /// its outcome. Fails fast with `NoLeader` when no leader is known.
    pub async fn write(&self, command: Command) -> Result<Outcome, ClusterError> {
        let deadline = tokio::time::Instant::now() + self.inner.write_timeout;
        loop {
            if self.leader().is_none() {
                return Err(ClusterError::NoLeader);
            }
            let result = if self.is_leader() {
                self.write_local(command.clone()).await
            } else {
                match self.send_to_leader(Rpc::Write(command.clone())).await {
                    Ok(RpcReply::Write(r)) => r,
                    Ok(_) => Err(RemoteFailure::Other("unexpected reply".into())),
                    Err(e) => Err(e),
                }
            };
            match result {
                Ok(out) => return Ok(out),
                // Leadership moved while we asked: try the new leader.
                Err(RemoteFailure::NotLeader(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn write_local(&self, command: Command) -> Result<Outcome, RemoteFailure> {
        let m = self.metrics();
        if m.current_leader != Some(self.inner.id) {
            return Err(RemoteFailure::NotLeader(m.current_leader));
        }
        if let Some(since) = m.millis_since_quorum_ack
            && Duration::from_millis(since) > self.inner.quorum_grace
        {
            return Err(RemoteFailure::Unavailable(format!(
                "no quorum: last acknowledged by a majority {since} ms ago"
            )));
        }
        let req = Request {
            now_ms: chrono::Utc::now().timestamp_millis(),
            command,
        };
        match tokio::time::timeout(self.inner.write_timeout, self.inner.raft.client_write(req))
            .await
        {
            Ok(Ok(resp)) => Ok(resp.data),
            Ok(Err(e)) => Err(write_failure(e)),
            Err(_) => Err(RemoteFailure::Unavailable(format!(
                "write not committed within {:?} (no quorum?)",
                self.inner.write_timeout
            ))),
        }
    }

    /// Waits until the local state has applied everything the leader had
    /// in its log when asked, so a read or plan here is not stale.
    ///
    /// On the leader this waits for its own log to be applied (which needs a
    /// quorum to commit); it does not re-confirm leadership with a round of
    /// heartbeats, so a deposed leader that has not noticed yet may serve a
    /// plan one election old — the write that follows is then refused.
    pub async fn read_barrier(&self) -> Result<(), ClusterError> {
        let index = if self.is_leader() {
            self.leader_read_index()
        } else {
            match self.send_to_leader(Rpc::ReadIndex).await? {
                RpcReply::ReadIndex(r) => r?,
                _ => return Err(ClusterError::Raft("unexpected reply".into())),
            }
        };
        self.inner
            .raft
            .wait(Some(self.inner.write_timeout))
            .applied_index_at_least(Some(index), "read barrier")
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::Unavailable(format!("read barrier: {e}")))
    }

    fn leader_read_index(&self) -> u64 {
        self.metrics().last_log_index.unwrap_or(0)
    }

    /// Removes a peer from the membership (on the leader).
    pub async fn remove_peer(&self, id: NodeId) -> Result<(), ClusterError> {
        self.remove_local(id).await.map_err(Into::into)
    }

    /// Pins by hand (owner `api`).
    pub async fn pin(
        &self,
        cid: CidKey,
        written_as: Option<Box<str>>,
        spec: PinSpec,
    ) -> Result<Outcome, ClusterError> {
        self.write(Command::Apply {
            owner: Owner::Api,
            ops: vec![Op::Set {
                cid,
                written_as,
                spec,
            }],
        })
        .await
    }

    /// Drops the `api` owner of a pin; the pin stays if a PinSet owns it.
    pub async fn unpin(&self, cid: CidKey) -> Result<Outcome, ClusterError> {
        self.write(Command::Apply {
            owner: Owner::Api,
            ops: vec![Op::Release { cid }],
        })
        .await
    }

    async fn owned_by(&self, owner: &Owner) -> Result<crate::plan::OwnedPins, ClusterError> {
        let store = self.inner.store.clone();
        let owner = owner.clone();
        tokio::task::spawn_blocking(move || store.owned_by(&owner))
            .await
            .map_err(|e| ClusterError::Storage(e.to_string()))?
            .map_err(|e| ClusterError::Storage(e.to_string()))
    }

    fn record_of(&self, owner: &Owner) -> Result<Option<PinSetRecord>, ClusterError> {
        self.inner
            .store
            .pinset(owner)
            .map_err(|e| ClusterError::Storage(e.to_string()))
    }

    /// Plans a PinSet against the current state (after a read barrier) and,
    /// unless a dry run, commits it atomically. Re-applying an unchanged
    /// revision writes nothing.
    pub async fn apply_pinset(&self, req: PinSetApply) -> Result<ApplyReport, ClusterError> {
        self.read_barrier().await?;
        let ps = &req.pinset;
        let owner = ps.owner();
        let current = self.owned_by(&owner).await?;
        let mut report = ApplyReport {
            pinset: ps.id.to_string(),
            dry_run: req.dry_run,
            ..ApplyReport::default()
        };
        let plan = match plan_pinset(ps, &current, req.guard) {
            Ok(p) => p,
            Err(e) => {
                report.release = e.release as u64;
                report.unchanged = current.len() as u64;
                report.refused = Some(e.to_string());
                return Ok(report);
            }
        };
        report.add = plan.add.len() as u64;
        report.update = plan.update.len() as u64;
        report.release = plan.release.len() as u64;
        report.unchanged = plan.unchanged as u64;
        report.sample = sample(&plan);
        let record = PinSetRecord {
            namespace: ps.id.namespace.clone(),
            name: ps.id.name.clone(),
            revision: req.revision.clone(),
            labels: ps.labels.clone(),
            source: req.source.clone(),
            pins: ps.pins.len() as u64,
            prune: ps.prune,
            suspend: ps.suspend,
            applied_at_ms: 0,
        };
        let same_record = self.record_of(&owner)?.is_some_and(|r| {
            PinSetRecord {
                applied_at_ms: 0,
                ..r
            } == record
        });
        report.suspended = ps.suspend;
        // Suspended: keep the state as it is (DESIGN §4), report what would change.
        if req.dry_run || ps.suspend || (plan.is_empty() && same_record) {
            return Ok(report);
        }
        let record = PinSetRecord {
            applied_at_ms: chrono::Utc::now().timestamp_millis(),
            ..record
        };
        let (out, entries) = self
            .commit_ops(owner, plan_ops(&plan), Some(record))
            .await?;
        report.entries = entries;
        report.created = out.created;
        report.removed = out.removed;
        Ok(report)
    }

    /// Applies a patch atomically (one revision: staged chunks and one
    /// commit, as [`apply_pinset`](Self::apply_pinset)) after a read
    /// barrier, or returns `None` without writing when the PinSet is not
    /// recorded at `base_revision` (the caller then sends the whole PinSet).
    ///
    /// Only the patched pins are read: ops that change nothing are dropped
    /// (re-sending a patch writes no log entry once its revision is
    /// recorded), releases of pins the owner does not hold are ignored, and
    /// the prune guard counts the releases against the pins the base
    /// revision declared (what the owner holds when it prunes).
    pub async fn apply_pinset_patch(
        &self,
        patch: PinSetPatch,
    ) -> Result<Option<ApplyReport>, ClusterError> {
        self.read_barrier().await?;
        let owner = Owner::pinset(patch.id.clone());
        let Some(base) = self.record_of(&owner)? else {
            return Ok(None);
        };
        let mut report = ApplyReport {
            pinset: patch.id.to_string(),
            dry_run: patch.dry_run,
            suspended: patch.suspend,
            ..ApplyReport::default()
        };
        if base.revision != patch.revision && base.revision != patch.base_revision {
            return Ok(None);
        }
        let mut cids: Vec<CidKey> = patch.set.iter().map(|(c, _)| *c).collect();
        cids.extend(patch.release.iter().copied());
        let store = self.inner.store.clone();
        let probe = owner.clone();
        let held = tokio::task::spawn_blocking(move || store.owner_specs(&probe, &cids))
            .await
            .map_err(|e| ClusterError::Storage(e.to_string()))?
            .map_err(|e| ClusterError::Storage(e.to_string()))?;
        let (held_set, held_release) = held.split_at(patch.set.len());
        let mut plan = crate::plan::Plan {
            owner: owner.clone(),
            add: Vec::new(),
            update: Vec::new(),
            release: Vec::new(),
            unchanged: 0,
        };
        for ((cid, pin), before) in patch.set.into_iter().zip(held_set) {
            match before {
                None => plan.add.push((cid, pin)),
                Some(spec) if spec.same_as(&pin.spec) => plan.unchanged += 1,
                Some(spec) => plan.update.push(crate::plan::Update {
                    cid,
                    from: spec.clone(),
                    to: pin,
                }),
            }
        }
        for (cid, before) in patch.release.into_iter().zip(held_release) {
            if before.is_some() {
                plan.release.push(cid);
            }
        }
        report.add = plan.add.len() as u64;
        report.update = plan.update.len() as u64;
        report.release = plan.release.len() as u64;
        report.unchanged = base.pins.saturating_sub(report.update + report.release);
        report.sample = sample(&plan);
        let release = plan.release.len();
        let owned = usize::try_from(base.pins).unwrap_or(usize::MAX);
        let desired = usize::try_from(patch.pins).unwrap_or(usize::MAX);
        let tripped = release > 0
            && !patch.guard.force
            && (desired == 0 || release as f64 > patch.guard.max_fraction * owned as f64);
        if tripped {
            report.refused = Some(
                PruneGuardTripped {
                    owner,
                    release,
                    owned,
                    desired,
                    max_fraction: patch.guard.max_fraction,
                }
                .to_string(),
            );
            return Ok(Some(report));
        }
        let record = PinSetRecord {
            namespace: patch.id.namespace.clone(),
            name: patch.id.name.clone(),
            revision: patch.revision,
            labels: patch.labels,
            source: patch.source,
            pins: patch.pins,
            prune: patch.prune,
            suspend: patch.suspend,
            applied_at_ms: 0,
        };
        let same_record = PinSetRecord {
            applied_at_ms: 0,
            ..base
        } == record;
        if patch.dry_run || patch.suspend || (plan.is_empty() && same_record) {
            return Ok(Some(report));
        }
        let record = PinSetRecord {
            applied_at_ms: chrono::Utc::now().timestamp_millis(),
            ..record
        };
        let (out, entries) = self
            .commit_ops(owner, plan_ops(&plan), Some(record))
            .await?;
        report.entries = entries;
        report.created = out.created;
        report.removed = out.removed;
        Ok(Some(report))
    }

    /// Releases everything a PinSet owns and forgets it, under the guard.
    pub async fn delete_pinset(
        &self,
        owner: Owner,
        guard: PruneGuard,
        dry_run: bool,
    ) -> Result<ApplyReport, ClusterError> {
        self.read_barrier().await?;
        let current = self.owned_by(&owner).await?;
        let mut report = ApplyReport {
            pinset: match &owner {
                Owner::PinSet(id) => id.to_string(),
                Owner::Api => "api".into(),
            },
            dry_run,
            ..ApplyReport::default()
        };
        let plan = match plan_release_all(&owner, &current, guard) {
            Ok(p) => p,
            Err(e) => {
                report.release = e.release as u64;
                report.refused = Some(e.to_string());
                return Ok(report);
            }
        };
        report.release = plan.release.len() as u64;
        report.sample = sample(&plan);
        let known = self.record_of(&owner)?.is_some();
        if dry_run || (plan.is_empty() && !known) {
            return Ok(report);
        }
        let (out, entries) = self.commit_ops(owner, plan_ops(&plan), None).await?;
        report.entries = entries;
        report.removed = out.removed;
        Ok(report)
    }

    /// Writes `ops` as one atomic revision: `Stage` chunks, then `Commit`.
    async fn commit_ops(
        &self,
        owner: Owner,
        ops: Vec<Op>,
        record: Option<PinSetRecord>,
    ) -> Result<(Outcome, u64), ClusterError> {
        let batch = self.inner.batch_max_pins;
        let revision: u64 = rand::random();
        let total = ops.len();
        let mut iter = ops.into_iter();
        let chunks = total.div_ceil(batch).max(1);
        let mut entries = 0u64;
        for seq in 0..chunks - 1 {
            let chunk: Vec<Op> = iter.by_ref().take(batch).collect();
            let staged = self
                .write(Command::Stage {
                    owner: owner.clone(),
                    revision,
                    seq: seq as u32,
                    ops: chunk,
                })
                .await;
            entries += 1;
            if let Err(e) = staged {
                // Best effort: staged chunks also expire on their own.
                let _ = self
                    .write(Command::Abort {
                        owner: owner.clone(),
                        revision,
                    })
                    .await;
                return Err(e);
            }
        }
        let out = self
            .write(Command::Commit {
                owner,
                revision,
                staged: (chunks - 1) as u32,
                ops: iter.collect(),
                record,
            })
            .await?;
        entries += 1;
        if let Some(r) = out.refused {
            return Err(ClusterError::Refused(r));
        }
        Ok((out, entries))
    }
}

fn sample(plan: &crate::plan::Plan) -> BTreeMap<String, Vec<String>> {
    let mut s = BTreeMap::new();
    s.insert(
        "add".to_string(),
        plan.add
            .iter()
            .take(SAMPLE)
            .map(|(c, p)| display(c, &p.written_as))
            .collect(),
    );
    s.insert(
        "update".to_string(),
        plan.update
            .iter()
            .take(SAMPLE)
            .map(|u| display(&u.cid, &u.to.written_as))
            .collect(),
    );
    s.insert(
        "release".to_string(),
        plan.release
            .iter()
            .take(SAMPLE)
            .map(ToString::to_string)
            .collect(),
    );
    s
}

fn display(cid: &CidKey, written: &Option<Box<str>>) -> String {
    written
        .as_deref()
        .map(str::to_string)
        .unwrap_or_else(|| cid.to_string())
}

fn write_failure(e: RaftError<NodeId, ClientWriteError<NodeId, PeerNode>>) -> RemoteFailure {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            RemoteFailure::NotLeader(f.leader_id)
        }
        other => RemoteFailure::Other(other.to_string()),
    }
}
