//! openraft's network over the p2p request-response RPC.
//!
//! It owns how much one Raft message carries and how long it may take.
//!
//! - **AppendEntries**: openraft gives each message one heartbeat interval.
//!   A message holds at most a byte budget of entries (always at least
//!   one; openraft is told `PayloadTooLarge` and sends fewer). The budget
//!   starts at [`TransferLimits::append_max_bytes`], halves (down to one
//!   entry a message) for a peer whose last message did not complete in
//!   time and grows back after quick ones, so a follower that lags by a
//!   large ingest catches up on any link on which one entry (at most
//!   [`super::MAX_ENTRY_BYTES`]) reaches it within a heartbeat.
//! - **InstallSnapshot**: openraft sends a snapshot in chunks and the last
//!   chunk's answer waits until the follower has installed it, which takes
//!   time in proportion to the state. Each chunk gets its own timeout; the
//!   last one is asked again while the follower answers "still installing"
//!   (each answer comes well within the p2p request timeout), up to a
//!   deadline that grows with the snapshot's size. openraft's own
//!   `install_snapshot_timeout` is only a ceiling above these.
//!
//! It must not interpret entries: sizes are their encoded length, whatever
//! they hold.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

use super::size::encoded_len;
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

/// Floor of the rate a snapshot chunk travels at and a snapshot installs
/// at (bytes a second) on a slow, loaded peer: timeouts allow this much.
const SLOW_BYTES_PER_SEC: u64 = 1 << 20;

/// What any snapshot chunk may take before its size counts.
const CHUNK_BASE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one snapshot chunk (of `bytes`) may take to reach the
/// follower and be written.
fn chunk_timeout(bytes: u64) -> Duration {
    CHUNK_BASE_TIMEOUT + Duration::from_millis(bytes.saturating_mul(1000) / SLOW_BYTES_PER_SEC)
}

/// How long installing a snapshot of `bytes` may take on the follower,
/// once its last chunk arrived.
fn install_timeout(bytes: u64) -> Duration {
    3 * CHUNK_BASE_TIMEOUT + Duration::from_millis(bytes.saturating_mul(1000) / SLOW_BYTES_PER_SEC)
}

/// The smallest byte budget of an `AppendEntries`: a fraction of a large
/// entry (a PinSet chunk), so at the floor those go one a message.
const MIN_BUDGET: usize = 64 << 10;

/// How many of `entries` (at least one) fit in `max_bytes`, and their
/// bytes.
fn entries_within(
    entries: &[openraft::Entry<TypeConfig>],
    max_bytes: usize,
    cache: &Mutex<SizeCache>,
) -> (usize, usize) {
    let Ok(mut cache) = cache.lock() else {
        return (entries.len(), 0);
    };
    let mut total = 0usize;
    for (i, entry) in entries.iter().enumerate() {
        let size = cache.size_of(entry);
        if i > 0 && total.saturating_add(size) > max_bytes {
            return (i, total);
        }
        total = total.saturating_add(size);
    }
    (entries.len(), total)
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
    /// Bytes of entries the next `AppendEntries` to this peer may carry.
    budget: usize,
    /// Set while an `AppendEntries` is on its way: still set when the next
    /// one starts means openraft's timeout dropped it.
    in_flight: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("snapshot chunk not answered within {0:?}")]
struct ChunkTimeout(Duration);

#[derive(Debug, thiserror::Error)]
#[error("snapshot not installed within {0:?} of its last chunk")]
struct InstallTimeout(Duration);

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
            budget: self.limits.append_max_bytes,
            in_flight: false,
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
        let reply = self.p2p.request(peer, rpc).await.map_err(|e| match e {
            P2pError::Unreachable { .. } | P2pError::Dial { .. } | P2pError::Stopped => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            other => RPCError::Network(NetworkError::new(&other)),
        })?;
        match reply {
            // The target does not trust this peer: to Raft it is out of
            // reach (openraft backs off), not a wrong answer.
            RpcReply::Refused(f) => Err(RPCError::Unreachable(Unreachable::new(&f))),
            other => Ok(other),
        }
    }

    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<NodeId, E>,
    ) -> RPCError<NodeId, PeerNode, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }

    /// The byte budget for the next `AppendEntries`: halved (down to
    /// [`MIN_BUDGET`]: one entry a message) when the last one was dropped
    /// by openraft's timeout.
    fn next_budget(&mut self) -> usize {
        if std::mem::replace(&mut self.in_flight, false) {
            self.budget = (self.budget / 2).max(MIN_BUDGET);
            tracing::debug!(
                target_node = self.target,
                budget = self.budget,
                "append timed out; smaller messages"
            );
        }
        self.budget
    }

    /// Grows the budget back after a message that used at least half of
    /// it was answered in less than a quarter of its time (heartbeats and
    /// small messages say nothing about large ones).
    fn answered(&mut self, bytes: usize, took: Duration, ttl: Duration) {
        self.in_flight = false;
        if bytes >= self.budget / 2 && took < ttl / 4 {
            self.budget = self
                .budget
                .saturating_mul(2)
                .min(self.limits.append_max_bytes);
        }
    }

    /// One snapshot chunk, within [`chunk_timeout`].
    async fn send_chunk(
        &self,
        rpc: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<RpcReply, RPCError<NodeId, PeerNode, RaftError<NodeId, InstallSnapshotError>>> {
        let limit = chunk_timeout(rpc.data.len() as u64);
        tokio::time::timeout(limit, self.call(Rpc::InstallSnapshot(rpc)))
            .await
            .map_err(|_| RPCError::Network(NetworkError::new(&ChunkTimeout(limit))))?
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    /// Sends the request when its entries fit in this peer's byte budget
    /// (a single entry always does); otherwise answers openraft's
    /// `PayloadTooLarge` with how many do, and openraft sends that many
    /// (and reads no more from the log for its next few messages).
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> {
        let budget = self.next_budget();
        let (fit, bytes) = entries_within(&rpc.entries, budget, &self.sizes);
        if fit < rpc.entries.len() {
            let hint = u64::try_from(fit).unwrap_or(1);
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        let started = Instant::now();
        self.in_flight = true;
        let reply = self.call(Rpc::AppendEntries(rpc)).await;
        self.answered(bytes, started.elapsed(), option.hard_ttl());
        match reply? {
            RpcReply::AppendEntries(r) => r.map_err(|e| self.remote(e)),
            _ => Err(RPCError::Network(NetworkError::new(&WrongReply))),
        }
    }

    /// Sends one chunk within [`chunk_timeout`]. The last chunk is sent
    /// again while the follower answers that it is still installing, until
    /// [`install_timeout`] of the snapshot's size has passed.
    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, PeerNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let limit = install_timeout(rpc.offset.saturating_add(rpc.data.len() as u64));
        let started = Instant::now();
        loop {
            match self.send_chunk(rpc.clone()).await? {
                RpcReply::InstallSnapshot(r) => return r.map_err(|e| self.remote(e)),
                RpcReply::SnapshotInstalling if rpc.done && started.elapsed() < limit => {
                    tracing::debug!(
                        target_node = self.target,
                        "follower still installing the snapshot"
                    );
                }
                RpcReply::SnapshotInstalling => {
                    return Err(RPCError::Network(NetworkError::new(&InstallTimeout(limit))));
                }
                _ => return Err(RPCError::Network(NetworkError::new(&WrongReply))),
            }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc as StdArc;

    use libp2p::identity::Keypair;
    use openraft::{CommittedLeaderId, EntryPayload, Vote};
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::manifest::{Owner, PinOptions, PinSpec};
    use crate::p2p::P2pConfig;
    use crate::state::{Command, Op, Request};
    use crate::testkit::seq_cid;

    /// Log entry `index`: a staged chunk of `ops` pins.
    fn entry(index: u64, ops: u64) -> openraft::Entry<TypeConfig> {
        let options = StdArc::new(PinOptions::default());
        let ops = (0..ops)
            .map(|i| Op::Set {
                cid: seq_cid(index * 100_000 + i),
                written_as: None,
                spec: PinSpec {
                    name: format!("p{i}"),
                    options: StdArc::clone(&options),
                },
            })
            .collect();
        openraft::Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(Request {
                now_ms: 0,
                command: Command::Stage {
                    owner: Owner::Api,
                    revision: 1,
                    seq: index as u32,
                    ops,
                },
            }),
        }
    }

    #[test]
    fn entries_are_counted_until_the_budget_and_one_always_goes() {
        let cache = Mutex::new(SizeCache::default());
        let entries: Vec<_> = (1..=4).map(|i| entry(i, 1000)).collect();
        let one = encoded_len(&entries[0]);
        assert!(one > 40_000, "a 1000-pin entry takes {one} bytes");
        assert_eq!(entries_within(&entries, 4 * one + 100, &cache).0, 4);
        let (fit, bytes) = entries_within(&entries, 2 * one + 100, &cache);
        assert_eq!(fit, 2);
        assert_eq!(bytes, encoded_len(&entries[0]) + encoded_len(&entries[1]));
        // Larger than the budget on its own: still goes, alone.
        assert_eq!(entries_within(&entries, 10, &cache).0, 1);
        assert_eq!(entries_within(&entries[..0], 10, &cache), (0, 0));
    }

    async fn connection(append_max_bytes: usize) -> (PeerConnection, CancellationToken) {
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut config = P2pConfig::new(Keypair::generate_ed25519(), [3; 32]);
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        let (p2p, _events) = crate::p2p::spawn::<Rpc, RpcReply>(config, cancel.clone(), &tasks)
            .await
            .unwrap();
        let mut network = Network::new(p2p, TransferLimits { append_max_bytes });
        let node = PeerNode::default();
        (network.new_client(9, &node).await, cancel)
    }

    fn append(entries: Vec<openraft::Entry<TypeConfig>>) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 0),
            prev_log_id: None,
            leader_commit: None,
            entries,
        }
    }

    fn hint(
        r: Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>>,
    ) -> Option<u64> {
        match r {
            Err(RPCError::PayloadTooLarge(p)) => Some(p.entries_hint()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn too_many_bytes_answer_payload_too_large_with_how_many_fit() {
        let entries: Vec<_> = (1..=6).map(|i| entry(i, 1000)).collect();
        let one = encoded_len(&entries[0]);
        let (mut conn, cancel) = connection(3 * one + 100).await;
        let ttl = RPCOption::new(Duration::from_secs(1));
        let r = conn
            .append_entries(append(entries.clone()), ttl.clone())
            .await;
        assert_eq!(hint(r), Some(3), "three of six entries fit");
        // Within the budget: the request is sent (to a peer that has no
        // valid id here, so it is unreachable, not too large).
        let r = conn
            .append_entries(append(entries[..3].to_vec()), ttl)
            .await;
        assert!(matches!(r, Err(RPCError::Unreachable(_))), "{r:?}");
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_message_dropped_by_openraft_s_timeout_halves_the_next_budget() {
        let max = 2 << 20;
        let (mut conn, cancel) = connection(max).await;
        assert_eq!(conn.next_budget(), max);
        // What openraft's timeout leaves behind: a call that never ended.
        conn.in_flight = true;
        assert_eq!(conn.next_budget(), max / 2);
        assert_eq!(
            conn.next_budget(),
            max / 2,
            "a completed call changes nothing"
        );
        for _ in 0..10 {
            conn.in_flight = true;
            conn.next_budget();
        }
        assert_eq!(
            conn.next_budget(),
            MIN_BUDGET,
            "one entry a message at least"
        );
        // Slow answers keep it, and so do quick heartbeats; quick answers
        // to full messages grow it back, up to append_max_bytes.
        let hb = Duration::from_millis(250);
        conn.answered(MIN_BUDGET, Duration::from_millis(200), hb);
        assert_eq!(conn.next_budget(), MIN_BUDGET);
        conn.answered(0, Duration::from_millis(1), hb);
        assert_eq!(conn.next_budget(), MIN_BUDGET);
        for _ in 0..10 {
            let full = conn.next_budget();
            conn.answered(full, Duration::from_millis(1), hb);
        }
        assert_eq!(conn.next_budget(), max);
        cancel.cancel();
    }

    #[test]
    fn snapshot_timeouts_grow_with_size() {
        assert!(chunk_timeout(0) >= CHUNK_BASE_TIMEOUT);
        assert!(chunk_timeout(64 << 20) > chunk_timeout(2 << 20));
        // A million-pin snapshot (~100 MB) gets minutes, not seconds.
        assert!(install_timeout(100 << 20) >= Duration::from_secs(100));
        assert!(install_timeout(1 << 20) < Duration::from_secs(60));
    }
}
