//! The follower's loop: learn that the state moved (trusted peers' signed
//! head announcements, and a poll every few seconds in case gossip was
//! missed), pull what comes next from a peer that has it — another
//! follower when one is known, a trusted peer otherwise — verify it, and
//! apply it to the follower's own state store. A refused piece is logged
//! with its reason and its sender is avoided for a while; nothing of it is
//! applied.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use openraft::storage::RaftStateMachine;
use rand::seq::IndexedRandom;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::serve::FeedServer;
use super::{
    CHUNK_BYTES, ChunkReply, ChunkRequest, FeedError, MAX_SOURCES, PullReply, PullRequest, Signed,
    SnapshotOffer, Source,
};
use crate::consensus::{ClusterNode, NodeId, PeerNode, Rpc, RpcReply, StateStore};
use openraft::{RaftMetrics, ServerState};

/// How often a follower asks even without an announcement.
const POLL: Duration = Duration::from_secs(2);

/// The longest one snapshot download may take (busy peers included).
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(600);

/// How long a peer that sent a refused piece, or failed, is avoided.
const AVOID: Duration = Duration::from_secs(30);

/// Where a follower keeps the signed offer of the snapshot it installed,
/// so it can serve that snapshot again after a restart.
pub(crate) const OFFER_FILE: &str = "offer.cbor";

/// Everything the loop needs.
pub(crate) struct Follow {
    pub(crate) node: ClusterNode,
    pub(crate) server: Arc<FeedServer>,
    /// The follower's own Raft-like metrics (what it applied, the
    /// membership it follows).
    pub(crate) metrics: watch::Sender<RaftMetrics<NodeId, PeerNode>>,
    /// `<dir>/follow/`: the offer file lives here.
    pub(crate) dir: PathBuf,
    /// Trusted peers and where to dial them (from the bootstrap list).
    pub(crate) trusted_addrs: HashMap<PeerId, Vec<Multiaddr>>,
}

/// Sleeps longer the more attempts in a row brought nothing: 100 ms, then
/// doubling, at most 2 s.
async fn backoff(attempts: u32) {
    let ms = 50u64.saturating_mul(1 << attempts.clamp(1, 6)).min(2_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// What one pull did.
enum Step {
    /// Applied something: pull again at once.
    Progress,
    /// This peer has nothing newer.
    Nothing,
    /// Asked to go elsewhere (sources learned).
    Redirected,
    /// Failed or refused: avoid this peer.
    Failed,
}

impl Follow {
    /// Publishes what the store holds now as this follower's metrics.
    fn refresh_metrics(&self) {
        self.metrics
            .send_replace(metrics_of(self.node.id(), self.node.store()));
    }

    /// Runs until `cancel`.
    pub(crate) async fn run(
        self,
        mut heads: mpsc::Receiver<(PeerId, Vec<u8>)>,
        cancel: CancellationToken,
    ) {
        let mut target = 0u64;
        let mut sources: HashSet<PeerId> = HashSet::new();
        let mut avoid: HashMap<PeerId, Instant> = HashMap::new();
        // The trusted peers, and the other peers this follower was told
        // to start from (followers it joins through): asked when no better
        // source is known.
        let mut fallback: Vec<PeerId> = self.server.trust().peers.clone();
        for (peer, addrs) in &self.trusted_addrs {
            self.learn(*peer, addrs).await;
            if !fallback.contains(peer) {
                fallback.push(*peer);
            }
        }
        let mut idle = 0u32;
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let applied = self.server.applied();
            avoid.retain(|_, t| t.elapsed() < AVOID);
            sources.retain(|p| !avoid.contains_key(p));
            let from_fallback = fallback
                .iter()
                .filter(|p| !avoid.contains_key(*p))
                .copied()
                .collect::<Vec<_>>();
            // Other followers first; after a few answers that brought
            // nothing, a trusted peer (or a peer this follower started from).
            let sources_first = idle < 3;
            let from_source: Vec<PeerId> = sources.iter().copied().collect();
            let peer = if sources_first {
                from_source.choose(&mut rand::rng())
            } else {
                None
            }
            .or_else(|| from_fallback.choose(&mut rand::rng()))
            .or_else(|| fallback.choose(&mut rand::rng()))
            .copied();
            let Some(peer) = peer else {
                return; // no trusted peer: start_follower refuses that
            };
            let step = self.step(peer, applied, &mut sources, &mut avoid).await;
            match step {
                Step::Progress => {
                    idle = 0;
                    continue;
                }
                Step::Redirected => {
                    // Sent elsewhere: that is not progress. A peer that
                    // keeps sending this follower around is slowed down.
                    sources.remove(&peer);
                    idle += 1;
                    backoff(idle).await;
                    continue;
                }
                Step::Failed => {
                    sources.remove(&peer);
                    avoid.insert(peer, Instant::now());
                    idle += 1;
                    backoff(idle).await;
                    continue;
                }
                Step::Nothing if sources.remove(&peer) => {
                    idle += 1;
                    continue;
                }
                Step::Nothing => {}
            }
            // Caught up with what a trusted peer has: wait for news.
            idle = 0;
            let applied = self.server.applied();
            let deadline = tokio::time::sleep(if target > applied {
                Duration::from_millis(200)
            } else {
                POLL
            });
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = &mut deadline => break,
                    m = heads.recv() => match m {
                        None => return,
                        Some((_, data)) => {
                            if let Some(index) = self.head(&data) {
                                let news = index > target.max(applied);
                                target = target.max(index);
                                if news {
                                    break;
                                }
                            }
                        }
                    },
                }
            }
        }
    }

    /// A head announcement's index, if it is genuine.
    fn head(&self, data: &[u8]) -> Option<u64> {
        let piece: Signed = cbor4ii::serde::from_slice(data).ok()?;
        match self.server.trust().accept_head(&piece) {
            Ok((_, head)) => Some(head.applied),
            Err(e) => {
                tracing::debug!(error = %e, "ignored a feed announcement");
                None
            }
        }
    }

    async fn learn(&self, peer: PeerId, addrs: &[Multiaddr]) {
        for a in addrs {
            // Best effort: a bad address is one fewer way to dial.
            let _ = self.node.p2p().add_address(peer, a.clone()).await;
        }
    }

    /// Learns the peers a `Busy` answer or an offer named (their addresses
    /// go to p2p), but not this peer, the one that answered, nor peers
    /// being avoided; at most [`MAX_SOURCES`] of them, with at most 8
    /// addresses each.
    async fn learn_sources(
        &self,
        list: Vec<Source>,
        answerer: PeerId,
        avoid: &HashMap<PeerId, Instant>,
        sources: &mut HashSet<PeerId>,
    ) {
        let me = self.node.peer_id();
        for s in list.into_iter().take(MAX_SOURCES) {
            let Ok(peer) = s.peer.parse::<PeerId>() else {
                continue;
            };
            if peer == me || peer == answerer || avoid.contains_key(&peer) {
                continue;
            }
            let addrs: Vec<Multiaddr> = s
                .addrs
                .iter()
                .take(8)
                .filter_map(|a| a.parse().ok())
                .collect();
            if sources.contains(&peer) {
                continue;
            }
            self.learn(peer, &addrs).await;
            sources.insert(peer);
        }
    }

    async fn step(
        &self,
        peer: PeerId,
        applied: u64,
        sources: &mut HashSet<PeerId>,
        avoid: &mut HashMap<PeerId, Instant>,
    ) -> Step {
        let req = PullRequest {
            cluster: self.server.trust().cluster.clone(),
            after: applied,
            holds: self.server.holds(),
            addrs: self.node.node().addrs.clone(),
        };
        let reply = match self.node.ask(peer, Rpc::FeedPull(req)).await {
            Ok(RpcReply::FeedPull(r)) => r,
            Ok(other) => {
                tracing::debug!(%peer, reply = ?std::mem::discriminant(&other), "unexpected feed reply");
                return Step::Failed;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "feed pull failed");
                return Step::Failed;
            }
        };
        match reply {
            PullReply::Entries(piece) => match self.apply_entries(&piece, applied).await {
                Ok(()) => Step::Progress,
                Err(e) => {
                    self.server.count_refused();
                    tracing::warn!(%peer, error = %e, "refused a piece of the feed");
                    Step::Failed
                }
            },
            PullReply::Snapshot {
                offer,
                sources: more,
            } => {
                let opened = self.server.trust().accept_offer(&offer, applied);
                let parsed = match opened {
                    Ok(o) => o,
                    Err(e) => {
                        self.server.count_refused();
                        tracing::warn!(%peer, error = %e, "refused a snapshot offer");
                        return Step::Failed;
                    }
                };
                // Other followers first: the peer that offered it (often
                // a trusted one) serves only when none of them can.
                let mut learnt = HashSet::new();
                self.learn_sources(more, peer, avoid, &mut learnt).await;
                let holders: Vec<PeerId> = learnt.into_iter().collect();
                match self.install(&offer, &parsed, holders, peer, avoid).await {
                    Ok(()) => Step::Progress,
                    Err(e) => {
                        // The offer was good: whoever sent bad chunks is
                        // avoided already; try again a little later.
                        tracing::warn!(%peer, error = %e, "could not install the offered snapshot");
                        Step::Redirected
                    }
                }
            }
            PullReply::Busy { sources: more } => {
                self.learn_sources(more, peer, avoid, sources).await;
                Step::Redirected
            }
            PullReply::Nothing { .. } => Step::Nothing,
        }
    }

    /// Verifies and applies an entries piece, then keeps it to pass on.
    pub(crate) async fn apply_entries(&self, piece: &Signed, applied: u64) -> Result<(), String> {
        let entries = self
            .server
            .trust()
            .accept_entries(piece, applied)
            .map_err(|e| e.to_string())?;
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        let (first, last) = (first.log_id.index, last.log_id.index);
        let mut store = self.node.store().clone();
        store
            .apply(entries)
            .await
            .map_err(|e| format!("cannot apply the feed: {e}"))?;
        self.server.count_received(piece.body.len());
        self.server.keep_piece(first, last, piece.clone());
        self.refresh_metrics();
        tracing::debug!(first, last, "applied a piece of the feed");
        Ok(())
    }

    /// Fetches the offered snapshot from `holders` (chunk by chunk, from
    /// whichever answers; busy ones name others), checks its size and
    /// hash against the offer, and installs it.
    async fn install(
        &self,
        piece: &Signed,
        offer: &SnapshotOffer,
        mut holders: Vec<PeerId>,
        fallback: PeerId,
        avoid: &mut HashMap<PeerId, Instant>,
    ) -> Result<(), String> {
        let mut store = self.node.store().clone();
        let mut file = store
            .begin_receiving_snapshot()
            .await
            .map_err(|e| e.to_string())?;
        let mut hasher = Sha256::new();
        let mut offset = 0u64;
        let mut turn = 0usize;
        let mut busy_rounds = 0u32;
        let mut fallback = Some(fallback);
        let started = std::time::Instant::now();
        // At least DOWNLOAD_LIMIT, and 1 MiB/s for larger snapshots.
        let limit = DOWNLOAD_LIMIT.max(Duration::from_secs(offer.size / CHUNK_BYTES));
        while offset < offer.size {
            if started.elapsed() > limit {
                return Err("the snapshot did not arrive in time".into());
            }
            let holder = match (holders.is_empty(), fallback) {
                (false, _) => {
                    turn += 1;
                    holders[turn % holders.len()]
                }
                (true, Some(f)) => f,
                (true, None) => return Err("no peer could send the snapshot".into()),
            };
            let req = ChunkRequest {
                snapshot_id: offer.meta.snapshot_id.clone(),
                offset,
                len: CHUNK_BYTES.min(offer.size - offset),
            };
            match self.node.ask(holder, Rpc::FeedChunk(req)).await {
                Ok(RpcReply::FeedChunk(ChunkReply::Data(bytes))) if !bytes.is_empty() => {
                    if !offer.chunk_matches(offset, &bytes) {
                        // Checked against the signed offer: this holder
                        // sent something else. Avoid it; ask another.
                        self.server.count_refused();
                        tracing::warn!(
                            peer = %holder,
                            offset,
                            "refused a snapshot chunk that does not match its signed hash"
                        );
                        avoid.insert(holder, Instant::now());
                        holders.retain(|p| *p != holder);
                        if Some(holder) == fallback {
                            fallback = None;
                        }
                        continue;
                    }
                    hasher.update(&bytes);
                    self.server.count_received(bytes.len());
                    file.write_all(&bytes).await.map_err(|e| e.to_string())?;
                    offset += bytes.len() as u64;
                    busy_rounds = 0;
                }
                Ok(RpcReply::FeedChunk(ChunkReply::Busy { sources })) => {
                    let mut learnt = HashSet::new();
                    self.learn_sources(sources, holder, avoid, &mut learnt)
                        .await;
                    for p in learnt {
                        if !holders.contains(&p) && Some(p) != fallback {
                            holders.push(p);
                        }
                    }
                    busy_rounds += 1;
                    if busy_rounds as usize > holders.len() {
                        backoff(busy_rounds).await;
                    }
                }
                _ if Some(holder) == fallback => fallback = None,
                _ => holders.retain(|p| *p != holder),
            }
        }
        let sha: [u8; 32] = hasher.finalize().into();
        if sha != offer.sha256 {
            return Err(FeedError::SnapshotMismatch("its SHA-256 differs".into()).to_string());
        }
        store
            .install_snapshot(&offer.meta, file)
            .await
            .map_err(|e| format!("cannot install the snapshot: {e}"))?;
        let index = offer.index();
        self.server
            .set_offer(offer.meta.snapshot_id.clone(), index, piece.clone());
        if let Ok(bytes) = cbor4ii::serde::to_vec(Vec::new(), piece) {
            // Best effort: without it the snapshot is only not served again
            // after a restart.
            let _ = std::fs::write(self.dir.join(OFFER_FILE), bytes);
        }
        self.refresh_metrics();
        tracing::info!(
            index,
            bytes = offer.size,
            "installed a snapshot of the cluster state"
        );
        Ok(())
    }
}

/// A follower's metrics: a learner with no leader, the membership and
/// last applied index of the state it follows.
pub(crate) fn metrics_of(id: NodeId, store: &StateStore) -> RaftMetrics<NodeId, PeerNode> {
    let mut m = RaftMetrics::new_initial(id);
    m.state = ServerState::Learner;
    m.last_applied = store.last_applied().ok().flatten();
    m.last_log_index = m.last_applied.map(|l| l.index);
    if let Ok(membership) = store.membership() {
        m.membership_config = Arc::new(membership);
    }
    m
}
