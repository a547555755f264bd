//! `ClusterNode`: one running peer's consensus: starts p2p and Raft, serves
//! peer RPCs, forwards writes to the leader, joins or bootstraps the cluster,
//! and turns PinSet applies into chunked, atomic log entries.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use openraft::error::{ClientWriteError, Fatal, InstallSnapshotError, RaftError};
use openraft::raft::{InstallSnapshotRequest, InstallSnapshotResponse};
use openraft::{Raft, RaftMetrics, SnapshotPolicy};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::assemble::{Parts, start_p2p};
use super::network::{Network, TransferLimits};
use super::rpc::{self, CallError, Method, Registry};
use super::{
    LogStore, NodeId, PeerNode, RemoteFailure, Rpc, RpcReply, StateStore, TypeConfig, node_id,
};
use crate::manifest::{CidKey, Owner, PinSpec};
use crate::p2p::{InboundRequest, P2pHandle};
use crate::state::{Command, Op, Outcome};

/// Longest openraft lets one snapshot chunk (with the install after the
/// last one) take; the network's size-based timeouts end it first.
const SNAPSHOT_CEILING: Duration = Duration::from_secs(3600);

/// Snapshot bytes per `InstallSnapshot` chunk: far below the p2p message
/// limit, and a few seconds at worst on a slow link.
const SNAPSHOT_CHUNK_BYTES: u64 = 2 << 20;

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
    /// Most bytes of log entries in one replication message (an entry
    /// larger than this still goes, alone).
    pub append_max_bytes: usize,
    /// Most log entries read and sent in one replication message.
    pub append_max_entries: u64,
    /// The cluster's name (`cluster.name`): what the follower feed is
    /// signed for.
    pub cluster_name: String,
    /// Trusted peers (`cluster.trusted_peers`): only they may write,
    /// change the membership, take part in Raft or call trusted-only
    /// methods here, and only they become voters. Empty: every peer that
    /// holds the secret is trusted.
    pub trusted: Vec<PeerId>,
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
            append_max_bytes: 2 << 20,
            append_max_entries: 32,
            cluster_name: DEFAULT_CLUSTER_NAME.to_string(),
            trusted: Vec::new(),
        }
    }

    /// Who signs this cluster's feed.
    pub(super) fn trust(&self) -> super::feed::Trusted {
        super::feed::Trusted {
            cluster: self.cluster_name.clone(),
            peers: self.trusted.clone(),
        }
    }
}

/// What a write on a follower answers.
pub const FOLLOWER_WRITE: &str =
    "this peer is a follower: it cannot change the cluster state; write to a trusted peer";

/// `cluster.name` when a config does not set one.
pub const DEFAULT_CLUSTER_NAME: &str = "pinfleet";

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
    /// The change does not fit in one log entry ([`super::MAX_ENTRY_BYTES`]);
    /// nothing was written.
    #[error("too large for one log entry: {0}")]
    TooLarge(String),
    /// A peer refused the request: this peer (or the joiner) is not trusted
    /// by the cluster, or this peer is a follower, which never writes.
    /// Nothing changed.
    #[error("forbidden: {0}")]
    Forbidden(String),
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
            RemoteFailure::Forbidden(m) => ClusterError::Forbidden(m),
            RemoteFailure::Other(m) => ClusterError::Raft(m),
        }
    }
}

/// Receives gossip payloads (peer, bytes).
pub type GossipSink = Arc<dyn Fn(PeerId, Vec<u8>) + Send + Sync>;

pub(super) struct Inner {
    pub(super) gossip_sink: Arc<std::sync::OnceLock<GossipSink>>,
    pub(super) services: Registry,
    /// Who may ask this peer for what (`permission.rs`).
    pub(super) trust: super::permission::Trust,
    pub(super) applied: tokio::sync::watch::Receiver<u64>,
    pub(super) id: NodeId,
    /// This peer's Raft; `None` on a follower, which never joins it.
    pub(super) raft: Option<Raft<TypeConfig>>,
    /// Raft's metrics; a follower keeps its own (no leader, the trusted
    /// peers' membership, what it applied).
    pub(super) metrics: tokio::sync::watch::Receiver<RaftMetrics<NodeId, PeerNode>>,
    /// The follower-facing feed of the committed state.
    pub(super) feed: Arc<super::feed::serve::FeedServer>,
    pub(super) store: StateStore,
    pub(super) p2p: P2pHandle<Rpc, RpcReply>,
    pub(super) node: PeerNode,
    pub(super) write_timeout: Duration,
    pub(super) quorum_grace: Duration,
    pub(super) batch_max_pins: usize,
    pub(super) tasks: TaskTracker,
    /// The snapshot this peer installs or last installed (its id) and the
    /// outcome, once there is one.
    pub(super) installing: std::sync::Mutex<Option<(String, InstallOutcome)>>,
    /// Writes accepted while leading, for the group-commit proposer
    /// (`batcher.rs`).
    pub(super) queue: mpsc::Sender<super::batcher::Pending>,
    /// Writes accepted while following, for the leader (`forward.rs`).
    pub(super) forwards: mpsc::Sender<super::forward::Forward>,
    /// The write-time allocation hook, once registered.
    pub(super) pin_allocator: std::sync::OnceLock<super::batcher::PinAllocator>,
    /// Leaders seen elected since start (`assemble.rs` counts them).
    pub(super) leader_changes: Arc<std::sync::atomic::AtomicU64>,
}

/// What installing a snapshot answered, once it has.
pub(super) type InstallOutcome = tokio::sync::watch::Receiver<
    Option<Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>>,
>;

/// How long the last snapshot chunk's request waits for the install
/// before answering "still installing" (well within the p2p request
/// timeout; the leader asks again).
const INSTALL_REPLY_WAIT: Duration = Duration::from_secs(5);

/// A running peer's consensus. Cheap to clone.
#[derive(Clone)]
pub struct ClusterNode {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("id", &self.inner.id)
            .finish()
    }
}

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
        let (p2p, events, node) = start_p2p(&opts, &cancel, tasks).await?;
        let peer_id = p2p.local_peer_id();
        let id = node_id(&peer_id);

        let log = LogStore::open(&raft_dir.join("log.redb")).map_err(|e| start(&e))?;
        let store = StateStore::open(&raft_dir.join("state.redb"), &raft_dir.join("snapshots"))
            .map_err(|e| start(&e))?;
        let config = openraft::Config {
            cluster_name: "pinfleet".into(),
            heartbeat_interval: opts.heartbeat_interval.as_millis() as u64,
            election_timeout_min: opts.election_timeout_min.as_millis() as u64,
            election_timeout_max: opts.election_timeout_max.as_millis() as u64,
            // A ceiling only: the network gives each chunk, and the
            // install after the last one, a timeout that grows with its
            // size (network.rs).
            install_snapshot_timeout: SNAPSHOT_CEILING.as_millis() as u64,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: opts.max_in_snapshot_log_to_keep,
            max_payload_entries: opts.append_max_entries.max(1),
            ..Default::default()
        }
        .validate()
        .map_err(|e| start(&e))?;
        let raft = Raft::new(
            id,
            Arc::new(config),
            Network::new(
                p2p.clone(),
                TransferLimits {
                    append_max_bytes: opts.append_max_bytes.max(1),
                },
            ),
            log.clone(),
            store.clone(),
        )
        .await
        .map_err(|e| start(&e))?;
        let log_at_stop = log.clone();

        let feed = Arc::new(super::feed::serve::FeedServer::trusted(
            opts.trust(),
            &opts.keypair,
            log,
            store.clone(),
        ));
        let metrics = raft.metrics();
        // Trusted peers only announce on the feed topic; they read nothing
        // from it.
        let (this, _feed_gossip) = ClusterNode::assemble(
            Parts {
                raft: Some(raft.clone()),
                metrics,
                feed,
                store,
                p2p,
                node,
                id,
            },
            &opts,
            events,
            &cancel,
            tasks,
        );
        if this.inner.feed.signs() {
            tasks.spawn(super::feed::announce(this.clone(), cancel.clone()));
        }
        let shutdown = raft.clone();
        let c = cancel.clone();
        let state = this.inner.store.clone();
        tasks.spawn(async move {
            c.cancelled().await;
            if let Err(e) = shutdown.shutdown().await {
                tracing::warn!(error = %e, "raft shutdown failed");
            }
            // Applies commit without fsync between durable ones; the
            // committed index is written with the log's next append. Both
            // are flushed even if one fails (the other still spares the
            // next start some work).
            let flushed = tokio::task::spawn_blocking(move || {
                [
                    state.flush().map_err(|e| format!("state: {e}")),
                    log_at_stop.flush().map_err(|e| format!("log: {e}")),
                ]
            })
            .await
            .unwrap_or_else(|e| [Err(e.to_string()), Ok(())]);
            for e in flushed.into_iter().filter_map(Result::err) {
                tracing::warn!(error = %e, "cannot flush at stop");
            }
        });

        let initialized = raft.is_initialized().await.map_err(|e| start(&e))?;
        if !initialized {
            if opts.bootstrap.is_empty() {
                let members = BTreeMap::from([(id, this.inner.node.clone())]);
                raft.initialize(members).await.map_err(|e| start(&e))?;
                tracing::info!(peer = %peer_id, "bootstrapped a new cluster");
            } else {
                tasks.spawn(
                    this.clone()
                        .join_loop(opts.bootstrap.clone(), cancel.clone()),
                );
            }
        } else {
            tasks.spawn(this.clone().announce_loop(cancel.clone()));
        }
        Ok(this)
    }

    /// Registers where gossip (informer metrics) goes (once).
    pub fn set_gossip_sink(&self, sink: GossipSink) {
        let _ = self.inner.gossip_sink.set(sink);
    }

    /// Publishes a gossip message to the other peers.
    pub async fn publish(&self, data: Vec<u8>) -> Result<(), crate::p2p::P2pError> {
        self.inner.p2p.publish(data).await
    }

    /// Serves the service method `M` to other peers with `handler` (its
    /// error string reaches the caller). The layer that owns a method
    /// registers it once, after the node starts; until then, and on a peer
    /// that never registers it, calls are answered "not served here".
    pub fn serve<M, F, Fut>(&self, handler: F)
    where
        M: Method,
        F: Fn(M::Request) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<M::Reply, String>> + Send + 'static,
    {
        self.inner.services.serve::<M, F, Fut>(handler);
    }

    /// Calls the service method `M` on `peer`.
    pub async fn call<M: Method>(
        &self,
        peer: PeerId,
        request: &M::Request,
    ) -> Result<M::Reply, CallError> {
        let codec = |reason| CallError::Codec {
            method: M::NAME,
            reason,
        };
        let body = rpc::encode(M::NAME, request).map_err(codec)?;
        let rpc = Rpc::Call {
            method: M::NAME.to_string(),
            body: serde_bytes::ByteBuf::from(body),
        };
        match self.ask(peer, rpc).await? {
            RpcReply::Call(Ok(reply)) => rpc::decode(M::NAME, &reply).map_err(codec),
            RpcReply::Call(Err(e)) | RpcReply::Refused(e) => Err(CallError::Remote(e)),
            _ => Err(codec("unexpected reply".to_string())),
        }
    }

    /// Changes whenever the local state applies log entries (last applied index).
    pub fn applied_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.applied.clone()
    }

    /// Sends an RPC to one peer.
    pub(super) async fn ask(
        &self,
        peer: PeerId,
        rpc: Rpc,
    ) -> Result<RpcReply, crate::p2p::P2pError> {
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

    /// Most ops one log entry carries (`consensus.batch_max_pins`): larger
    /// revisions are written as several staged chunks and a commit.
    pub fn batch_max_pins(&self) -> usize {
        self.inner.batch_max_pins
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
        self.inner.metrics.borrow().clone()
    }

    /// Raft metrics as they change (the leader's `replication` map says
    /// which log index each voter holds: what is committed).
    pub fn metrics_watch(&self) -> tokio::sync::watch::Receiver<RaftMetrics<NodeId, PeerNode>> {
        self.inner.metrics.clone()
    }

    /// Leaders this peer has seen elected since it started (a new leader,
    /// or the same one in a newer term).
    pub fn leader_changes(&self) -> u64 {
        self.inner
            .leader_changes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The current leader's id, if one is known.
    pub fn leader(&self) -> Option<NodeId> {
        self.inner.metrics.borrow().current_leader
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

    pub(super) async fn serve_inbound(
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
                let reply = this.handle(req.peer, req.request).await;
                // The requester may have given up; nothing to do then.
                let _ = req.reply.send(reply);
            });
        }
    }

    /// Answers `rpc` from `caller`, once the caller may make it here.
    async fn handle(&self, caller: PeerId, rpc: Rpc) -> RpcReply {
        if let Some(refused) = self.refusal(&caller, &rpc) {
            return refused;
        }
        let rpc = match rpc {
            Rpc::FeedPull(req) => {
                return RpcReply::FeedPull(self.inner.feed.pull(caller, req).await);
            }
            Rpc::FeedChunk(req) => {
                return RpcReply::FeedChunk(self.inner.feed.chunk(caller, req).await);
            }
            other => other,
        };
        let Some(raft) = &self.inner.raft else {
            return RpcReply::Refused(RemoteFailure::Forbidden(
                "this peer is a follower: it takes part in no consensus and accepts no writes"
                    .into(),
            ));
        };
        match rpc {
            Rpc::FeedPull(_) | Rpc::FeedChunk(_) => unreachable!("answered above"),
            Rpc::AppendEntries(r) => RpcReply::AppendEntries(raft.append_entries(r).await),
            Rpc::Vote(r) => RpcReply::Vote(raft.vote(r).await),
            Rpc::InstallSnapshot(r) if r.done => self.install_last_chunk(r).await,
            Rpc::InstallSnapshot(r) => RpcReply::InstallSnapshot(raft.install_snapshot(r).await),
            Rpc::Write(cmd) => RpcReply::Write(self.write_local(cmd).await),
            Rpc::WriteBatch(cmds) => RpcReply::WriteBatch(self.write_local_group(cmds).await),
            Rpc::Join(node) => RpcReply::Membership(self.join_local(node).await),
            Rpc::Remove(id) => RpcReply::Membership(self.remove_local(id).await),
            Rpc::Call { method, body } => RpcReply::Call(
                self.inner
                    .services
                    .dispatch(&caller, &self.inner.trust, &method, body.into_vec())
                    .await
                    .map(serde_bytes::ByteBuf::from),
            ),
            Rpc::ReadIndex => RpcReply::ReadIndex(if self.is_leader() {
                Ok(self.leader_read_index())
            } else {
                Err(RemoteFailure::NotLeader(self.leader()))
            }),
        }
    }

    /// The last chunk of a snapshot: openraft answers it once the snapshot
    /// is installed, which takes time in proportion to its size. The
    /// install runs in a task of its own; this answers its outcome, or
    /// "still installing" after [`INSTALL_REPLY_WAIT`]. The leader sends
    /// the chunk again to wait longer: a last chunk of the snapshot being
    /// (or last) installed waits for that install (or answers its success
    /// again) instead of starting another.
    async fn install_last_chunk(&self, req: InstallSnapshotRequest<TypeConfig>) -> RpcReply {
        let id = req.meta.snapshot_id.clone();
        let mut outcome = {
            let Ok(mut slot) = self.inner.installing.lock() else {
                return RpcReply::InstallSnapshot(Err(RaftError::Fatal(Fatal::Panicked)));
            };
            match &*slot {
                // Running, or done and installed: wait for it or answer it
                // again. A failed one (a mismatch: the leader streams the
                // snapshot again) is tried anew.
                Some((current, outcome))
                    if *current == id && !matches!(*outcome.borrow(), Some(Err(_))) =>
                {
                    outcome.clone()
                }
                _ => {
                    let (tx, rx) = tokio::sync::watch::channel(None);
                    let Some(raft) = self.inner.raft.clone() else {
                        return RpcReply::InstallSnapshot(Err(RaftError::Fatal(Fatal::Stopped)));
                    };
                    self.inner.tasks.spawn(async move {
                        let _ = tx.send(Some(raft.install_snapshot(req).await));
                    });
                    *slot = Some((id, rx.clone()));
                    rx
                }
            }
        };
        let done =
            tokio::time::timeout(INSTALL_REPLY_WAIT, outcome.wait_for(Option::is_some)).await;
        match done {
            Ok(Ok(result)) => match &*result {
                // The response is not `Clone`; its one field is.
                Some(r) => RpcReply::InstallSnapshot(match r {
                    Ok(resp) => Ok(InstallSnapshotResponse { vote: resp.vote }),
                    Err(e) => Err(e.clone()),
                }),
                None => RpcReply::SnapshotInstalling,
            },
            // The install task ended without an outcome: shutting down.
            Ok(Err(_)) => RpcReply::InstallSnapshot(Err(RaftError::Fatal(Fatal::Stopped))),
            Err(_) => RpcReply::SnapshotInstalling,
        }
    }

    /// True on a follower: it holds the state it follows, but no Raft.
    pub fn is_follower(&self) -> bool {
        self.inner.raft.is_none()
    }

    /// The followers that pulled the feed from this peer recently.
    pub fn followers(&self) -> Vec<super::feed::serve::FollowerSeen> {
        self.inner.feed.followers()
    }

    /// How many feed pieces this follower refused (forged, replayed, out
    /// of order, cut short) since it started.
    pub fn feed_refused(&self) -> u64 {
        self.inner.feed.refused()
    }

    /// Feed bytes this peer has (sent, received) since it started.
    pub fn feed_traffic(&self) -> (u64, u64) {
        self.inner.feed.traffic()
    }

    /// The snapshot this peer serves to followers (its id), if any.
    pub fn feed_snapshot(&self) -> Option<String> {
        self.inner.feed.holds()
    }

    /// True when this peer is the Raft leader.
    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.inner.id)
    }

    pub(super) async fn send_to_leader(&self, rpc: Rpc) -> Result<RpcReply, RemoteFailure> {
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
        let reply =
            tokio::time::timeout(self.inner.write_timeout, self.inner.p2p.request(peer, rpc))
                .await
                .map_err(|_| RemoteFailure::Unavailable("leader did not answer in time".into()))?
                .map_err(|e| RemoteFailure::Unavailable(format!("cannot reach the leader: {e}")))?;
        match reply {
            // The leader does not trust this peer: every caller sees why.
            RpcReply::Refused(f) => Err(f),
            other => Ok(other),
        }
    }

    /// Commits a command on the leader (forwarding if needed) and returns
    /// its outcome. Fails fast with `NoLeader` when no leader is known.
    /// A command whose log entry would exceed [`super::MAX_ENTRY_BYTES`] is
    /// refused (`TooLarge`) before it is sent anywhere.
    pub async fn write(&self, command: Command) -> Result<Outcome, ClusterError> {
        if self.is_follower() {
            return Err(ClusterError::Forbidden(FOLLOWER_WRITE.into()));
        }
        let bytes = super::entry_bytes(&command);
        if bytes > super::MAX_ENTRY_BYTES {
            return Err(ClusterError::TooLarge(format!(
                "the change takes {bytes} bytes encoded; a log entry holds at most {}",
                super::MAX_ENTRY_BYTES
            )));
        }
        let deadline = tokio::time::Instant::now() + self.inner.write_timeout;
        loop {
            if self.leader().is_none() {
                return Err(ClusterError::NoLeader);
            }
            let forwarded = !self.is_leader();
            let result = if forwarded {
                self.forward(command.clone()).await
            } else {
                self.write_local(command.clone()).await
            };
            match result {
                Ok(out) => {
                    if forwarded {
                        self.applied_through(out.log_index, deadline).await;
                    }
                    return Ok(out);
                }
                // Leadership moved while we asked: try the new leader.
                Err(RemoteFailure::NotLeader(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits (until `deadline` at most) until this peer has applied the
    /// log through `index`, so what it answers next shows a write the
    /// leader committed there. Past the deadline it answers from what it
    /// has, as a read barrier that fails does.
    async fn applied_through(&self, index: Option<u64>, deadline: tokio::time::Instant) {
        let Some(index) = index else { return };
        let mut applied = self.inner.applied.clone();
        let caught_up = tokio::time::timeout_at(deadline, applied.wait_for(|a| *a >= index));
        if !matches!(caught_up.await, Ok(Ok(_))) {
            tracing::debug!(index, "a forwarded write is not applied here yet");
        }
    }

    pub(super) async fn write_local(&self, command: Command) -> Result<Outcome, RemoteFailure> {
        // Two fields read in place: cloning the whole metrics (membership
        // maps and all) for every pin written showed in profiles.
        let (leader, since) = {
            let m = self.inner.metrics.borrow();
            (m.current_leader, m.millis_since_quorum_ack)
        };
        if leader != Some(self.inner.id) {
            return Err(RemoteFailure::NotLeader(leader));
        }
        if let Some(since) = since
            && Duration::from_millis(since) > self.inner.quorum_grace
        {
            return Err(RemoteFailure::Unavailable(format!(
                "no quorum: last acknowledged by a majority {since} ms ago"
            )));
        }
        // Proposed by the group-commit task, in arrival order, possibly
        // in one entry with other writes (`batcher.rs`).
        let (reply, answer) = tokio::sync::oneshot::channel();
        let pending = super::batcher::Pending { command, reply };
        let stopped = || RemoteFailure::Unavailable("the peer is shutting down".into());
        self.inner
            .queue
            .send(pending)
            .await
            .map_err(|_| stopped())?;
        // The proposer bounds the commit by `write_timeout`; the queue
        // wait comes on top.
        match tokio::time::timeout(self.inner.write_timeout * 2, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(stopped()),
            Err(_) => Err(RemoteFailure::Unavailable(format!(
                "write not committed within {:?} (no quorum?)",
                self.inner.write_timeout * 2
            ))),
        }
    }

    /// The libp2p ids of the other members (voters and learners): whom a
    /// fan-out asks. None on a follower.
    pub fn other_members(&self) -> Vec<PeerId> {
        if self.is_follower() {
            // A follower answers for itself only: the trusted peers serve
            // their status to each other, not to followers.
            return Vec::new();
        }
        let me = self.peer_id();
        self.members()
            .into_iter()
            .filter_map(|(_, n)| n.peer_id.parse::<PeerId>().ok())
            .filter(|p| *p != me)
            .collect()
    }

    /// Waits until the local state has applied everything the leader had
    /// in its log when asked, so a read or plan here is not stale.
    ///
    /// On the leader this waits for its own log to be applied (which needs a
    /// quorum to commit); it does not re-confirm leadership with a round of
    /// heartbeats, so a deposed leader that has not noticed yet may serve a
    /// plan one election old — the write that follows is then refused.
    pub async fn read_barrier(&self) -> Result<(), ClusterError> {
        if self.is_follower() {
            // Its state is the feed it verified; there is no leader to ask.
            return Ok(());
        }
        let index = if self.is_leader() {
            self.leader_read_index()
        } else {
            match self.send_to_leader(Rpc::ReadIndex).await? {
                RpcReply::ReadIndex(r) => r?,
                _ => return Err(ClusterError::Raft("unexpected reply".into())),
            }
        };
        let Some(raft) = &self.inner.raft else {
            return Ok(()); // a follower, answered above
        };
        raft.wait(Some(self.inner.write_timeout))
            .applied_index_at_least(Some(index), "read barrier")
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::Unavailable(format!("read barrier: {e}")))
    }

    fn leader_read_index(&self) -> u64 {
        self.metrics().last_log_index.unwrap_or(0)
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

    /// Unpins by hand: drops the `api` owner when it is the only one; while
    /// a PinSet also owns the pin the outcome is refused (nothing changed)
    /// unless `force`, which removes the pin from every owner
    /// (`Command::Unpin`).
    pub async fn unpin(&self, cid: CidKey, force: bool) -> Result<Outcome, ClusterError> {
        self.write(Command::Unpin { cid, force }).await
    }
}

pub(super) fn write_failure(
    e: RaftError<NodeId, ClientWriteError<NodeId, PeerNode>>,
) -> RemoteFailure {
    match e {
        RaftError::APIError(e) => client_write_failure(e),
        other => RemoteFailure::Other(other.to_string()),
    }
}

/// A refused client write as the callers see it: not the leader (retry
/// there), or why.
pub(super) fn client_write_failure(e: ClientWriteError<NodeId, PeerNode>) -> RemoteFailure {
    match e {
        ClientWriteError::ForwardToLeader(f) => RemoteFailure::NotLeader(f.leader_id),
        other => RemoteFailure::Other(other.to_string()),
    }
}
