//! A follower peer: it holds the cluster's state without taking part in
//! Raft. It runs the same p2p swarm (the cluster secret is published to
//! followers), receives the committed state as the signed feed
//! (`feed/`), verifies it against the trusted peers' keys, and applies it
//! to its own state store under `<dir>/follow/`; trackers, the informer
//! and the REST API read that store as on any peer. Every write answers
//! [`ClusterError::Forbidden`].

use std::collections::HashMap;
use std::sync::Arc;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::assemble::{Parts, start_p2p};
use super::feed::follow::{Follow, OFFER_FILE, metrics_of};
use super::feed::serve::FeedServer;
use super::feed::{PieceKind, Signed, SnapshotOffer};
use super::{ClusterError, ClusterNode, NodeOptions, StateStore, node_id};

/// The directory under a follower's peer directory that holds its state.
pub const FOLLOW_DIR: &str = "follow";

impl ClusterNode {
    /// Starts a follower: p2p (dialling the trusted peers in
    /// `opts.bootstrap`), its state store, and the loop that follows the
    /// feed. `opts.trusted` must name the trusted peers.
    pub async fn start_follower(
        opts: NodeOptions,
        cancel: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Self, ClusterError> {
        let start = |e: &dyn std::fmt::Display| ClusterError::Start(e.to_string());
        if opts.trusted.is_empty() {
            return Err(ClusterError::Start(
                "a follower needs cluster.trusted_peers: the peers whose signatures it accepts"
                    .into(),
            ));
        }
        let dir = opts.dir.join(FOLLOW_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| start(&e))?;
        let store = StateStore::open(&dir.join("state.redb"), &dir.join("snapshots"))
            .map_err(|e| start(&e))?;
        let (p2p, events, node) = start_p2p(&opts, &cancel, tasks).await?;
        let id = node_id(&p2p.local_peer_id());
        let trust = opts.trust();
        let feed = Arc::new(FeedServer::follower(trust.clone(), store.clone()));
        restore_offer(&dir, &store, &feed);
        let (metrics_tx, metrics) = tokio::sync::watch::channel(metrics_of(id, &store));
        let (this, heads) = ClusterNode::assemble(
            Parts {
                raft: None,
                metrics,
                feed: Arc::clone(&feed),
                store: store.clone(),
                p2p,
                node,
                id,
            },
            &opts,
            events,
            &cancel,
            tasks,
        );
        let follow = Follow {
            node: this.clone(),
            server: feed,
            metrics: metrics_tx,
            dir,
            trusted_addrs: trusted_addrs(&opts.bootstrap),
        };
        tasks.spawn(follow.run(heads, cancel));
        tracing::info!(
            peer = %this.peer_id(),
            cluster = %trust.cluster,
            trusted = trust.peers.len(),
            "following the cluster"
        );
        Ok(this)
    }
}

/// The trusted peers' addresses by peer id (addresses ending in
/// `/p2p/<id>`; others are dialled at start but cannot be named).
fn trusted_addrs(bootstrap: &[Multiaddr]) -> HashMap<PeerId, Vec<Multiaddr>> {
    let mut out: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
    for a in bootstrap {
        if let Some(Protocol::P2p(peer)) = a.iter().last() {
            out.entry(peer).or_default().push(a.clone());
        }
    }
    out
}

/// Serves again, after a restart, the snapshot installed before it (its
/// signed offer is kept next to the state), if the offer still checks.
fn restore_offer(dir: &std::path::Path, store: &StateStore, feed: &FeedServer) {
    let Ok(bytes) = std::fs::read(dir.join(OFFER_FILE)) else {
        return;
    };
    let Ok(piece) = cbor4ii::serde::from_slice::<Signed>(&bytes) else {
        return;
    };
    let Ok((_, offer)) = piece.open::<SnapshotOffer>(PieceKind::Snapshot, feed.trust()) else {
        return;
    };
    if let Ok(Some((meta, _))) = store.current_snapshot()
        && meta.snapshot_id == offer.meta.snapshot_id
    {
        feed.set_offer(meta.snapshot_id, offer.index(), piece);
    }
}
