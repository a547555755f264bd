//! Block push (`/pinfleet/block-push/1.0.0`): while an add imports, the
//! adder sends the blocks it produces to the other nodes of its swarm (a
//! private network: cluster members only), so that replication overlaps
//! with the add and the pin that follows finds the blocks already stored.
//!
//! Wire: one stream per add and peer, one way, carrying Bitswap frames (a
//! uvarint-length-prefixed `Message` with only `payload`, see
//! `bitswap::wire`). Sending: each peer has a queue of at most
//! [`QUEUE_BYTES`]; a frame that does not fit is dropped (the peer fetches
//! those blocks with Bitswap when the pin arrives), so an add never waits
//! for a slow peer. Receiving: one frame at a time (at most
//! `MAX_MESSAGE_BYTES`), every block hashed here against the CID its prefix
//! names; verified blocks are written per frame in one transaction,
//! unpinned (gc may remove them before the pin arrives); the others are
//! dropped and counted.
//!
//! A node with a storage limit (`[ipfs] storage_max`) refuses the frames
//! that would take its store past it (counted).
//!
//! The lossless variant for sharded adds, whose adder keeps no copy, is
//! [`lossless`] (`/pinfleet/block-push-acked/1.0.0`): same frames, each
//! acknowledged by the receiver; it waits for room and fails instead of
//! dropping.
//!
//! This module must not pin, decide whom to push to (the caller names the
//! peers), nor make an unsharded add wait for a peer.

pub(crate) mod lossless;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream, StreamProtocol};
use prost::Message as _;
use std::collections::HashSet;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::bitswap::wire::{
    Block, MAX_MESSAGE_BYTES, Message, block_cid, cid_prefix, next_message, serve_streams,
};
use super::store::{BlockStore, StoreError};

/// The protocol.
pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/pinfleet/block-push/1.0.0");
/// Frame bytes queued per peer; a frame that does not fit is dropped.
pub(crate) const QUEUE_BYTES: usize = 32 << 20;
/// Block bytes per frame before the next frame is started.
const FRAME_BLOCK_BYTES: usize = 1 << 20;
/// Room for a block's prefix, tags and lengths in a frame (generous).
const BLOCK_OVERHEAD: usize = 64;
/// A write to a peer that makes no progress this long ends its stream
/// (the rest of the add's frames to it are dropped).
const WRITE_STALL: Duration = Duration::from_secs(30);

/// The push engine of one node: serves inbound pushes, starts outbound
/// ones ([`Push::session`]).
pub(crate) struct Push {
    store: BlockStore,
    control: libp2p_stream::Control,
    cancel: CancellationToken,
    tasks: TaskTracker,
    counters: Arc<Counters>,
    /// On the public network, the cluster members' nodes: the only peers
    /// that may push to us or be pushed to. `None` in the private swarm,
    /// where only members connect at all.
    members: Option<std::sync::RwLock<HashSet<PeerId>>>,
    /// Most bytes the store may hold; frames past it are refused.
    storage_max: Option<u64>,
}

#[derive(Default)]
struct Counters {
    /// Pushed blocks received that verified (stored or already held).
    received: AtomicU64,
    /// Pushed blocks received that did not hash to their CID.
    rejected: AtomicU64,
    /// Frames not queued to a peer (queue full or stream gone).
    dropped: AtomicU64,
    /// Push streams refused: their node is not a member's (public network).
    refused: AtomicU64,
    /// Pushed blocks refused because they would take the store past its
    /// `storage_max`.
    full: AtomicU64,
}

impl std::fmt::Debug for Push {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Push").finish_non_exhaustive()
    }
}

impl Push {
    /// Starts serving inbound pushes on `control`'s swarm.
    /// `public`: only peers named by [`Push::set_members`] push or are
    /// pushed to.
    pub(crate) fn start(
        store: BlockStore,
        mut control: libp2p_stream::Control,
        public: bool,
        storage_max: Option<u64>,
        cancel: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Arc<Self>, libp2p_stream::AlreadyRegistered> {
        let incoming = control.accept(PROTOCOL)?;
        let acked = control.accept(lossless::PROTOCOL)?;
        let this = Arc::new(Push {
            store,
            control,
            cancel: cancel.clone(),
            tasks: tasks.clone(),
            counters: Arc::new(Counters::default()),
            members: public.then(|| std::sync::RwLock::new(HashSet::new())),
            storage_max,
        });
        let served = Arc::clone(&this);
        tasks.spawn(serve_streams(
            incoming,
            cancel.clone(),
            tasks.clone(),
            move |peer, stream| Arc::clone(&served).read_loop(peer, stream),
        ));
        let served = Arc::clone(&this);
        tasks.spawn(serve_streams(
            acked,
            cancel,
            tasks.clone(),
            move |peer, stream| Arc::clone(&served).acked_loop(peer, stream),
        ));
        Ok(this)
    }

    /// The cluster members' nodes (public network only; ignored in the
    /// private swarm).
    pub(crate) fn set_members(&self, peers: HashSet<PeerId>) {
        if let Some(m) = &self.members {
            *m.write().unwrap_or_else(std::sync::PoisonError::into_inner) = peers;
        }
    }

    /// Whether `peer` may push to us and be pushed to.
    pub(crate) fn allowed(&self, peer: &PeerId) -> bool {
        self.members.as_ref().is_none_or(|m| {
            m.read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(peer)
        })
    }

    /// Pushed blocks received that verified.
    pub(crate) fn received(&self) -> u64 {
        self.counters.received.load(Ordering::Relaxed)
    }

    /// Pushed blocks received that did not hash to their CID.
    pub(crate) fn rejected(&self) -> u64 {
        self.counters.rejected.load(Ordering::Relaxed)
    }

    /// Push streams refused because their node is not a member's.
    pub(crate) fn refused(&self) -> u64 {
        self.counters.refused.load(Ordering::Relaxed)
    }

    /// Pushed blocks refused because the store would pass `storage_max`.
    pub(crate) fn refused_full(&self) -> u64 {
        self.counters.full.load(Ordering::Relaxed)
    }

    /// Frames this node did not queue to a peer.
    pub(crate) fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Pushing to `peers`: one sender task and queue per peer, ended when
    /// the session is dropped (after its queued frames are written).
    /// Call within the runtime; the session itself may be used anywhere.
    pub(crate) fn session(&self, peers: Vec<PeerId>) -> PushSession {
        let outboxes = peers
            .into_iter()
            .filter(|p| self.allowed(p))
            .map(|peer| {
                let (outbox, rx) = Outbox::new(QUEUE_BYTES);
                self.tasks.spawn(send_loop(
                    self.control.clone(),
                    peer,
                    rx,
                    self.cancel.clone(),
                ));
                outbox
            })
            .collect();
        PushSession {
            outboxes,
            pending: Vec::new(),
            pending_bytes: 0,
            counters: Arc::clone(&self.counters),
        }
    }

    /// Reads `peer`'s frames one at a time, storing each frame's verified
    /// blocks before reading the next.
    async fn read_loop(self: Arc<Self>, peer: PeerId, mut stream: Stream) {
        if !self.allowed(&peer) {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "refused a block push from a node outside the cluster");
            return;
        }
        let mut buf = Vec::new();
        loop {
            let msg = match next_message(&mut stream, &mut buf, &self.cancel).await {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "block push stream dropped");
                    return;
                }
            };
            let store = self.store.clone();
            let max = self.storage_max;
            let stored =
                tokio::task::spawn_blocking(move || store_verified(&store, msg.payload, max)).await;
            match stored {
                Ok(Ok(stored)) => {
                    self.count(peer, stored);
                }
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "cannot store pushed blocks");
                    return;
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "cannot store pushed blocks");
                    return;
                }
            }
        }
    }
}

impl Push {
    /// Counts what one frame's storing did.
    fn count(&self, peer: PeerId, stored: Stored) {
        let c = &self.counters;
        c.received.fetch_add(stored.received, Ordering::Relaxed);
        if stored.rejected > 0 {
            c.rejected.fetch_add(stored.rejected, Ordering::Relaxed);
            tracing::debug!(%peer, rejected = stored.rejected, "dropped pushed blocks that do not match their cid");
        }
        if stored.full > 0 {
            c.full.fetch_add(stored.full, Ordering::Relaxed);
            tracing::warn!(%peer, refused = stored.full, "refused pushed blocks: the store would pass ipfs.storage_max");
        }
    }
}

/// What storing one frame did, in blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stored {
    /// Verified: stored (or already held).
    pub received: u64,
    /// Not matching their CID: dropped.
    pub rejected: u64,
    /// Refused: the store would pass its limit.
    pub full: u64,
}

/// A block to store: (multihash, bytes).
type Keyed = (Vec<u8>, Vec<u8>);

/// The blocks of `payload` that hash to the CID their prefix names, as
/// (multihash, bytes) to store, and how many did not. Identity blocks are
/// neither stored nor rejected.
fn verified(payload: Vec<Block>) -> (Vec<Keyed>, u64) {
    let mut ok = Vec::with_capacity(payload.len());
    let mut rejected = 0u64;
    for Block { prefix, data } in payload {
        match block_cid(&prefix, &data) {
            Ok(cid) if cid.hash().code() == 0 => {}
            Ok(cid) => ok.push((cid.hash().to_bytes(), Vec::from(data))),
            Err(_) => rejected += 1,
        }
    }
    (ok, rejected)
}

/// Stores the verified blocks of `payload` in one transaction, unless
/// they would take the store past `storage_max` (then none is stored).
fn store_verified(
    store: &BlockStore,
    payload: Vec<Block>,
    storage_max: Option<u64>,
) -> Result<Stored, StoreError> {
    let (ok, rejected) = verified(payload);
    if let Some(max) = storage_max {
        let (used, _) = store.stat()?;
        let adding: u64 = ok.iter().map(|(_, d)| d.len() as u64).sum();
        if used.saturating_add(adding) > max {
            return Ok(Stored {
                received: 0,
                rejected,
                full: ok.len() as u64,
            });
        }
    }
    store.put_many_lazy(&ok)?;
    Ok(Stored {
        received: ok.len() as u64,
        rejected,
        full: 0,
    })
}

/// One add's pushing: the blocks offered are framed and each frame queued
/// to every peer of the session (or dropped for a peer whose queue is
/// full). Dropping the session sends what is pending and ends the streams
/// once their queues are written.
pub(crate) struct PushSession {
    outboxes: Vec<Outbox>,
    pending: Vec<Block>,
    pending_bytes: usize,
    counters: Arc<Counters>,
}

impl PushSession {
    /// Offers the block `cid` (its bytes `data`, already known to hash to
    /// it). Never waits.
    pub(crate) fn offer(&mut self, cid: &Cid, data: &[u8]) {
        if self.outboxes.is_empty() || cid.hash().code() == 0 {
            return;
        }
        let size = data.len() + BLOCK_OVERHEAD;
        if size > MAX_MESSAGE_BYTES {
            // Too large for one frame: the peers fetch it.
            return;
        }
        if self.pending_bytes + size > MAX_MESSAGE_BYTES {
            self.flush();
        }
        self.pending.push(Block {
            prefix: cid_prefix(cid),
            data: Bytes::copy_from_slice(data),
        });
        self.pending_bytes += size;
        if self.pending_bytes >= FRAME_BLOCK_BYTES {
            self.flush();
        }
    }

    /// Queues the pending blocks as one frame to every peer.
    pub(crate) fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let msg = Message {
            wantlist: None,
            payload: std::mem::take(&mut self.pending),
            block_presences: Vec::new(),
        };
        self.pending_bytes = 0;
        let frame = Bytes::from(msg.encode_length_delimited_to_vec());
        for outbox in &self.outboxes {
            if !outbox.offer(&frame) {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for PushSession {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A peer's queue of frames, bounded in bytes: a frame holds its size in
/// permits until it is written.
struct Outbox {
    room: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<(Bytes, OwnedSemaphorePermit)>,
}

type OutboxRx = mpsc::UnboundedReceiver<(Bytes, OwnedSemaphorePermit)>;

impl Outbox {
    fn new(bytes: usize) -> (Self, OutboxRx) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Outbox {
                room: Arc::new(Semaphore::new(bytes)),
                tx,
            },
            rx,
        )
    }

    /// Queues `frame` if it fits; false (dropped) when it does not or the
    /// peer's sender has ended. Never waits.
    fn offer(&self, frame: &Bytes) -> bool {
        let Ok(n) = u32::try_from(frame.len()) else {
            return false;
        };
        match Arc::clone(&self.room).try_acquire_many_owned(n) {
            Ok(permit) => self.tx.send((frame.clone(), permit)).is_ok(),
            Err(_) => false,
        }
    }
}

/// Writes one session's frames to `peer` on a stream of its own.
async fn send_loop(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    mut frames: OutboxRx,
    cancel: CancellationToken,
) {
    let opened = tokio::select! {
        _ = cancel.cancelled() => return,
        s = control.open_stream(peer, PROTOCOL) => s,
    };
    let mut stream = match opened {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "cannot open a block push stream");
            return;
        }
    };
    loop {
        // The permit is released once the frame is written.
        let (frame, _permit) = tokio::select! {
            _ = cancel.cancelled() => return,
            f = frames.recv() => match f { Some(f) => f, None => break },
        };
        let written = tokio::select! {
            _ = cancel.cancelled() => return,
            w = tokio::time::timeout(WRITE_STALL, stream.write_all(&frame)) => w,
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "block push stream failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "block push stream stalled; the peer fetches the rest");
                return;
            }
        }
    }
    let _ = tokio::time::timeout(WRITE_STALL, stream.close()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(data: &[u8]) -> Cid {
        let mh = multihash::Multihash::<64>::wrap(
            0x12,
            &super::super::bitswap::digest(0x12, data).unwrap(),
        )
        .unwrap();
        Cid::new_v1(0x55, mh)
    }

    #[test]
    fn a_full_queue_drops_frames_instead_of_waiting() {
        let (outbox, mut rx) = Outbox::new(10);
        let frame = Bytes::from_static(&[1; 8]);
        assert!(outbox.offer(&frame), "a frame that fits is queued");
        assert!(
            !outbox.offer(&frame),
            "a frame that does not fit is dropped"
        );
        // Written (its permit released): there is room again.
        drop(rx.try_recv().unwrap());
        assert!(outbox.offer(&frame));
        // A sender that has ended takes nothing.
        drop(rx);
        let (outbox, rx) = Outbox::new(100);
        drop(rx);
        assert!(!outbox.offer(&frame));
        let _ = outbox;
    }

    #[tokio::test]
    async fn a_session_counts_frames_a_full_peer_queue_could_not_take() {
        let (outbox, mut rx) = Outbox::new(QUEUE_BYTES);
        let counters = Arc::new(Counters::default());
        let mut session = PushSession {
            outboxes: vec![outbox],
            pending: Vec::new(),
            pending_bytes: 0,
            counters: Arc::clone(&counters),
        };
        // Nobody reads: 64 MiB offered, at most 32 MiB queued.
        let block = vec![7u8; 256 << 10];
        let started = std::time::Instant::now();
        for i in 0..256u32 {
            let mut data = block.clone();
            data[..4].copy_from_slice(&i.to_be_bytes());
            session.offer(&raw(&data), &data);
        }
        drop(session);
        assert!(started.elapsed() < Duration::from_secs(10));
        let mut queued = 0usize;
        while let Ok((frame, _)) = rx.try_recv() {
            queued += frame.len();
        }
        assert!(queued <= QUEUE_BYTES, "{queued} bytes queued");
        assert!(queued >= QUEUE_BYTES / 2, "{queued} bytes queued");
        assert!(counters.dropped.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn pushed_blocks_that_do_not_match_their_cid_are_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlockStore::open(&dir.path().join("b.redb")).unwrap();
        let good = b"a good block".to_vec();
        let claimed = b"what the cid names".to_vec();
        let (good_cid, claimed_cid) = (raw(&good), raw(&claimed));
        let payload = vec![
            Block {
                prefix: cid_prefix(&good_cid),
                data: Bytes::from(good.clone()),
            },
            // Sent as `claimed` (its prefix), but other bytes: they are
            // stored under the CID they hash to, never under `claimed`.
            Block {
                prefix: cid_prefix(&claimed_cid),
                data: Bytes::from_static(b"tampered"),
            },
            // A prefix that names no hash function this node knows.
            Block {
                prefix: vec![0x01, 0x55, 0xff, 0x01, 0x20],
                data: Bytes::from_static(b"unverifiable"),
            },
            // Not a prefix at all.
            Block {
                prefix: vec![0xff],
                data: Bytes::from_static(b"garbage"),
            },
        ];
        let stored = store_verified(&store, payload, None).unwrap();
        assert_eq!((stored.received, stored.rejected), (2, 2));
        assert_eq!(store.get(&good_cid.hash().to_bytes()).unwrap(), Some(good));
        assert_eq!(
            store.get(&raw(b"tampered").hash().to_bytes()).unwrap(),
            Some(b"tampered".to_vec())
        );
        assert_eq!(store.get(&claimed_cid.hash().to_bytes()).unwrap(), None);
    }
}
