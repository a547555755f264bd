//! Putting a [`ClusterNode`] together: the parts both roles share (the
//! p2p swarm, the state store, the feed server, Raft's metrics) and the
//! tasks every peer runs, trusted peer or follower.

use std::sync::Arc;

use libp2p::PeerId;
use openraft::{Raft, RaftMetrics};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::node::Inner;
use super::rpc::Registry;
use super::{
    ClusterError, ClusterNode, NodeId, NodeOptions, PeerNode, Rpc, RpcReply, StateStore, TypeConfig,
};
use crate::p2p::{self, P2pConfig, P2pHandle};

/// What [`ClusterNode::assemble`] builds a node from.
pub(super) struct Parts {
    pub(super) raft: Option<Raft<TypeConfig>>,
    pub(super) metrics: tokio::sync::watch::Receiver<RaftMetrics<NodeId, PeerNode>>,
    pub(super) feed: Arc<super::feed::serve::FeedServer>,
    pub(super) store: StateStore,
    pub(super) p2p: P2pHandle<Rpc, RpcReply>,
    pub(super) node: PeerNode,
    pub(super) id: NodeId,
}

/// Starts the p2p swarm of a peer and describes it as a [`PeerNode`].
pub(super) async fn start_p2p(
    opts: &NodeOptions,
    cancel: &CancellationToken,
    tasks: &TaskTracker,
) -> Result<
    (
        P2pHandle<Rpc, RpcReply>,
        p2p::P2pEvents<Rpc, RpcReply>,
        PeerNode,
    ),
    ClusterError,
> {
    let start = |e: &dyn std::fmt::Display| ClusterError::Start(e.to_string());
    let mut p2p_config = P2pConfig::new(opts.keypair.clone(), opts.secret);
    p2p_config.listen = opts.listen.clone();
    p2p_config.bootstrap = opts.bootstrap.clone();
    let (p2p, events) = p2p::spawn::<Rpc, RpcReply>(p2p_config, cancel.clone(), tasks)
        .await
        .map_err(|e| start(&e))?;
    let addrs = p2p.listen_addrs().await.map_err(|e| start(&e))?;
    let node = PeerNode {
        peer_id: p2p.local_peer_id().to_string(),
        addrs: addrs.iter().map(ToString::to_string).collect(),
        api: opts.api_url.clone(),
    };
    Ok((p2p, events, node))
}

impl ClusterNode {
    /// Builds the node around its parts (either role) and starts what
    /// every peer runs: the write batcher and forwarder, serving inbound
    /// RPCs, delivering gossip, and the applied-index watch.
    pub(super) fn assemble(
        parts: Parts,
        opts: &NodeOptions,
        events: p2p::P2pEvents<Rpc, RpcReply>,
        cancel: &CancellationToken,
        tasks: &TaskTracker,
    ) -> (Self, mpsc::Receiver<(PeerId, Vec<u8>)>) {
        let (applied_tx, applied) = tokio::sync::watch::channel(0u64);
        let leader_changes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let changes = Arc::clone(&leader_changes);
        let mut metrics = parts.metrics.clone();
        let c = cancel.clone();
        tasks.spawn(async move {
            // The leader and term last seen: a different pair is an election.
            let mut seen = None;
            loop {
                let (last, elected) = {
                    let m = metrics.borrow();
                    let last = m.last_applied.map(|l| l.index).unwrap_or(0);
                    (last, m.current_leader.map(|l| (l, m.current_term)))
                };
                if elected.is_some() && elected != seen {
                    seen = elected;
                    changes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
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
        let (queue, queued) = mpsc::channel(super::batcher::QUEUE);
        let (forwards, to_forward) = mpsc::channel(super::forward::QUEUE);
        let this = ClusterNode {
            inner: Arc::new(Inner {
                gossip_sink: Arc::new(std::sync::OnceLock::new()),
                services: Registry::default(),
                trust: super::permission::Trust::new(
                    parts.p2p.local_peer_id(),
                    opts.trusted.iter().copied(),
                ),
                applied,
                id: parts.id,
                raft: parts.raft,
                metrics: parts.metrics,
                feed: parts.feed,
                store: parts.store,
                p2p: parts.p2p,
                node: parts.node,
                write_timeout: opts.write_timeout,
                quorum_grace: opts.election_timeout_max * 2,
                batch_max_pins: opts.batch_max_pins.max(1),
                tasks: tasks.clone(),
                installing: std::sync::Mutex::new(None),
                queue,
                forwards,
                pin_allocator: std::sync::OnceLock::new(),
                leader_changes,
            }),
        };
        tasks.spawn(super::batcher::run(this.clone(), queued, cancel.clone()));
        tasks.spawn(super::forward::run(
            this.clone(),
            to_forward,
            cancel.clone(),
        ));
        tasks.spawn(
            this.clone()
                .serve_inbound(events.inbound, cancel.clone(), tasks.clone()),
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
        (this, events.feed)
    }
}
