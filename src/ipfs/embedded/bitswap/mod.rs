//! Bitswap 1.2.0 (`/ipfs/bitswap/1.2.0`) between embedded nodes: the wire
//! messages, a want manager for fetching, and a responder for serving.
//!
//! Wire: each direction of a peer pair uses its own stream (as go-bitswap
//! does); a stream carries uvarint-length-prefixed protobuf `Message`s.
//!
//! Fetching: [`Bitswap::fetch`] registers a want and sends `want-block` to
//! one connected peer and `want-have` to the others (all with
//! `sendDontHave`). The peer asked for the block is the least loaded
//! recent source: among peers that sent us a wanted block in the last
//! [`SOURCE_FRESH`], the one with the fewest unanswered `want-block`s
//! (else any, at random), so a DAG held by several peers is fetched from
//! all of them. A `Have` from a peer when no `want-block` is still
//! outstanding (every peer asked for the block said `DontHave`) turns into
//! a `want-block` to that peer, so one copy of each block travels in the
//! common case. A want that every asked peer refused goes to every peer as
//! `want-block` after [`REBROADCAST`]; one a peer still owes, only after
//! [`REASK`] (a slow peer is not a lost message, and asking everyone again
//! would send the block twice). A newly connected peer gets every open
//! want as `want-have`. A block
//! is accepted only if the multihash computed here from its bytes (with the
//! hash function its prefix names) is one we want: a peer cannot make us
//! store bytes under a CID they do not hash to. Our wants and our answers
//! to a peer queue separately (wants first); queued messages go out in one
//! write.
//!
//! Serving: every want-block for a block we hold is answered with it,
//! want-have with `Have`, anything else (when asked) with `DontHave`; the
//! wants that queued meanwhile are looked up in one store read. No
//! per-peer ledger is kept: requesters rebroadcast. A stream's reader never
//! waits for serving (wants go to a per-peer serve task through a bounded
//! queue, dropped when full), so two peers fetching from each other cannot
//! deadlock on full stream windows.
//!
//! This module must not write to the store (the pin walk batches writes)
//! nor decide what to fetch. The wire format (messages, framing, CID
//! prefixes, block verification) is in `wire`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cid::Cid;
use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream, StreamProtocol};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::wire::{
    Block, BlockPresence, Message, Presence, WantEntry, Wantlist, block_cid, cid_prefix,
    next_message, serve_streams,
};
use super::store::{BlockStore, Held};

#[cfg(test)]
mod fuzz_tests;
pub(super) mod wire;

pub(crate) use self::wire::digest;

/// The protocol this node speaks.
pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/ipfs/bitswap/1.2.0");
/// Block bytes per response message before a new one is started.
const RESPONSE_BLOCK_BYTES: usize = 2 << 20;
/// How often open wants are sent again.
pub(crate) const REBROADCAST: Duration = Duration::from_secs(1);
/// Want messages queued per peer before new ones to it are dropped (the
/// rebroadcast sends them again). Small messages: a pin walk keeps up to
/// 512 wants open, each its own message, and a dropped want costs a
/// rebroadcast period.
const OUTBOX: usize = 4096;
/// Answers (blocks, up to [`RESPONSE_BLOCK_BYTES`] each) queued per peer:
/// the serving side waits for room, so memory stays bounded.
const ANSWERS: usize = 4;
/// A peer's wantlists queued for serving before new ones are dropped (the
/// peer rebroadcasts them).
const SERVE_QUEUE: usize = 4096;
/// Wants still unanswered by every peer asked are sent again to all after
/// [`REBROADCAST`]; wants a peer is still expected to answer only after
/// this long (lost on a reset stream).
const REASK: Duration = Duration::from_secs(10);

struct Want {
    cid: Cid,
    waiters: Vec<oneshot::Sender<Vec<u8>>>,
    sent: Option<Instant>,
    /// Peers sent a `want-block`.
    asked: HashSet<PeerId>,
    /// Peers that answered `DontHave`.
    dont_have: HashSet<PeerId>,
    /// Peers that answered `Have`, in order.
    haves: Vec<PeerId>,
}

impl Want {
    /// Whether some peer asked for the block may still send it.
    fn block_outstanding(&self) -> bool {
        self.asked.iter().any(|p| !self.dont_have.contains(p))
    }
}

impl State {
    /// `peer` was sent a `want-block`.
    fn asked(&mut self, peer: &PeerId) {
        if let Some(q) = self.peers.get_mut(peer) {
            q.outstanding += 1;
        }
    }

    /// `peer` answered a `want-block` (with the block or `DontHave`), or
    /// the want is gone.
    fn answered(&mut self, peer: &PeerId) {
        if let Some(q) = self.peers.get_mut(peer) {
            q.outstanding = q.outstanding.saturating_sub(1);
        }
    }

    /// A want is closed: its unanswered asks no longer count.
    fn closed(&mut self, want: &Want) {
        for p in &want.asked {
            if !want.dont_have.contains(p) {
                self.answered(p);
            }
        }
    }
}

/// A connected peer's queues and how it served us lately.
struct PeerQueues {
    /// Messages to send it.
    out: mpsc::Sender<Message>,
    /// Its wants, to serve.
    serve: mpsc::Sender<Vec<WantEntry>>,
    /// `want-block`s sent to it and not answered yet.
    outstanding: usize,
    /// When it last sent us a block we wanted.
    delivered: Option<Instant>,
}

/// A peer that sent a wanted block this recently counts as a source.
const SOURCE_FRESH: Duration = Duration::from_secs(2);

impl PeerQueues {
    /// Lower is a better peer to ask for a block: recent sources first,
    /// the one with the fewest unanswered `want-block`s among them.
    fn load(&self, now: Instant) -> (bool, usize) {
        let source = self
            .delivered
            .is_some_and(|t| now.duration_since(t) < SOURCE_FRESH);
        (!source, self.outstanding)
    }
}

#[derive(Default)]
struct State {
    /// Open wants by multihash bytes.
    wants: HashMap<Vec<u8>, Want>,
    /// Connected peers.
    peers: HashMap<PeerId, PeerQueues>,
}

/// The Bitswap engine of one node. Shared (`Arc`) by the swarm loop (which
/// reports connections), the pin walk (which fetches) and its own tasks.
pub(crate) struct Bitswap {
    store: BlockStore,
    control: libp2p_stream::Control,
    state: Mutex<State>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// Blocks received that were not wanted or did not verify.
    rejected: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Bitswap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitswap").finish_non_exhaustive()
    }
}

impl Bitswap {
    /// Starts serving inbound Bitswap streams of `control`'s swarm.
    pub(crate) fn start(
        store: BlockStore,
        mut control: libp2p_stream::Control,
        cancel: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Arc<Self>, libp2p_stream::AlreadyRegistered> {
        let incoming = control.accept(PROTOCOL)?;
        let this = Arc::new(Bitswap {
            store,
            control,
            state: Mutex::new(State::default()),
            cancel: cancel.clone(),
            tasks: tasks.clone(),
            rejected: std::sync::atomic::AtomicU64::new(0),
        });
        let served = Arc::clone(&this);
        tasks.spawn(serve_streams(
            incoming,
            cancel.clone(),
            tasks.clone(),
            move |peer, stream| Arc::clone(&served).read_loop(peer, stream),
        ));
        tasks.spawn(Arc::clone(&this).rebroadcast_loop());
        Ok(this)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain maps: a panic elsewhere leaves them usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many received blocks were dropped as unwanted or corrupt.
    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A connection to `peer` opened: start its queue and send it our wants.
    pub(crate) fn peer_connected(self: &Arc<Self>, peer: PeerId) {
        let (tx, rx) = mpsc::channel(OUTBOX);
        let (answers_tx, answers_rx) = mpsc::channel(ANSWERS);
        let (serve_tx, serve_rx) = mpsc::channel(SERVE_QUEUE);
        let wants = {
            let mut s = self.lock();
            let queues = PeerQueues {
                out: tx.clone(),
                serve: serve_tx,
                outstanding: 0,
                delivered: None,
            };
            s.peers.insert(peer, queues);
            s.wants.values().map(|w| w.cid).collect::<Vec<_>>()
        };
        self.tasks.spawn(send_loop(
            self.control.clone(),
            peer,
            rx,
            answers_rx,
            self.cancel.clone(),
        ));
        self.tasks.spawn(serve_loop(
            self.store.clone(),
            serve_rx,
            answers_tx,
            self.cancel.clone(),
        ));
        if !wants.is_empty() {
            let _ = tx.try_send(want_message(&wants, true, true));
        }
    }

    /// The last connection to `peer` closed.
    pub(crate) fn peer_disconnected(&self, peer: &PeerId) {
        self.lock().peers.remove(peer);
    }

    /// Whether peers are connected and every one answered `DontHave` to
    /// the open want for `cid` since it was last sent. A reader uses it to
    /// tell content nobody has from content on its way.
    pub(crate) fn refused_by_all(&self, cid: &Cid) -> bool {
        let s = self.lock();
        !s.peers.is_empty()
            && s.wants
                .get(&cid.hash().to_bytes())
                .is_some_and(|w| s.peers.keys().all(|p| w.dont_have.contains(p)))
    }

    /// How many peers are connected.
    pub(crate) fn peer_count(&self) -> usize {
        self.lock().peers.len()
    }

    /// Fetches the block `cid` from whichever connected peer sends it first;
    /// waits until one does (callers bound the wait). The bytes are
    /// verified against `cid`. `None` when the node shuts down.
    pub(crate) async fn fetch(self: &Arc<Self>, cid: Cid) -> Option<Vec<u8>> {
        let mh = cid.hash().to_bytes();
        let (tx, rx) = oneshot::channel();
        let send_now = {
            let mut s = self.lock();
            let peers: Vec<(PeerId, mpsc::Sender<Message>)> =
                s.peers.iter().map(|(p, q)| (*p, q.out.clone())).collect();
            let want = s.wants.entry(mh.clone()).or_insert_with(|| Want {
                cid,
                waiters: Vec::new(),
                sent: None,
                asked: HashSet::new(),
                dont_have: HashSet::new(),
                haves: Vec::new(),
            });
            want.waiters.push(tx);
            // A new want goes out now; a joined one keeps its schedule.
            if want.sent.is_none() {
                let now = Instant::now();
                want.sent = Some(now);
                // The block from the least loaded peer (a recent source
                // first, see `PeerQueues::load`; ties broken at random so
                // that first asks spread), `Have`s from the others.
                let tie = rand::random::<u32>() as usize;
                let pick = peers
                    .iter()
                    .enumerate()
                    .filter_map(|(i, (p, _))| {
                        let q = s.peers.get(p)?;
                        Some((q.load(now), (i + tie) % peers.len(), i))
                    })
                    .min()
                    .map(|(_, _, i)| i);
                let picked = pick.and_then(|i| peers.get(i)).map(|(p, _)| *p);
                if let Some(p) = picked {
                    if let Some(w) = s.wants.get_mut(&mh) {
                        w.asked.insert(p);
                    }
                    s.asked(&p);
                }
                Some(
                    peers
                        .into_iter()
                        .enumerate()
                        .map(|(i, (_, out))| (out, Some(i) != pick))
                        .collect::<Vec<_>>(),
                )
            } else {
                None
            }
        };
        let mut ticket = Ticket {
            bitswap: self,
            mh,
            rx,
        };
        for (peer, have_only) in send_now.into_iter().flatten() {
            let _ = peer.try_send(want_message(&[cid], false, have_only));
        }
        tokio::select! {
            r = &mut ticket.rx => r.ok(),
            _ = self.cancel.cancelled() => None,
        }
    }

    async fn read_loop(self: Arc<Self>, peer: PeerId, mut stream: Stream) {
        // One buffer per stream: no fresh zeroed allocation per message.
        let mut buf = Vec::new();
        loop {
            let msg = match next_message(&mut stream, &mut buf, &self.cancel).await {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "bitswap stream dropped");
                    return;
                }
            };
            self.receive_blocks(&peer, msg.payload);
            self.receive_presences(peer, msg.block_presences);
            let wants: Vec<WantEntry> = msg
                .wantlist
                .map(|wl| wl.entries)
                .unwrap_or_default()
                .into_iter()
                .filter(|w| !w.cancel)
                .collect();
            if !wants.is_empty() {
                let queue = self.lock().peers.get(&peer).map(|q| q.serve.clone());
                if let Some(q) = queue
                    && q.try_send(wants).is_err()
                {
                    tracing::debug!(%peer, "serve queue full; the peer will ask again");
                }
            }
        }
    }

    fn receive_blocks(&self, peer: &PeerId, blocks: Vec<Block>) {
        for Block { prefix, data } in blocks {
            // Hashed outside the lock.
            let mh = block_cid(&prefix, &data).ok().map(|c| c.hash().to_bytes());
            let want = mh.and_then(|mh| {
                let mut s = self.lock();
                let want = s.wants.remove(&mh)?;
                s.closed(&want);
                if let Some(q) = s.peers.get_mut(peer) {
                    q.delivered = Some(Instant::now());
                }
                Some(want)
            });
            match want {
                Some(want) => {
                    // Usually one waiter: the last gets the bytes without a
                    // copy (a `Bytes` of its own from decoding).
                    let mut waiters = want.waiters;
                    let last = waiters.pop();
                    for w in waiters {
                        let _ = w.send(data.to_vec());
                    }
                    if let Some(w) = last {
                        let _ = w.send(Vec::from(data));
                    }
                }
                None => {
                    self.rejected
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(%peer, "dropped an unwanted or corrupt block");
                }
            }
        }
    }

    /// `Have`/`DontHave` answers: ask a peer that has the block when nobody
    /// asked for it can still send it.
    fn receive_presences(&self, peer: PeerId, presences: Vec<BlockPresence>) {
        if presences.is_empty() {
            return;
        }
        let mut asks: HashMap<PeerId, Vec<Cid>> = HashMap::new();
        // `want-block`s of ours that `peer` just answered with `DontHave`.
        let mut refused = 0usize;
        let outs = {
            let mut s = self.lock();
            for p in presences {
                let presence = p.r#type();
                let Ok(cid) = Cid::try_from(p.cid.as_slice()) else {
                    continue;
                };
                let Some(w) = s.wants.get_mut(&cid.hash().to_bytes()) else {
                    continue;
                };
                match presence {
                    Presence::Have if !w.haves.contains(&peer) => w.haves.push(peer),
                    Presence::Have => {}
                    Presence::DontHave => {
                        if w.dont_have.insert(peer) && w.asked.contains(&peer) {
                            refused += 1;
                        }
                    }
                }
                if w.block_outstanding() {
                    continue;
                }
                let next = w
                    .haves
                    .iter()
                    .find(|p| !w.asked.contains(p) && !w.dont_have.contains(p))
                    .copied();
                if let Some(p) = next {
                    w.asked.insert(p);
                    asks.entry(p).or_default().push(w.cid);
                }
            }
            if let Some(q) = s.peers.get_mut(&peer) {
                q.outstanding = q.outstanding.saturating_sub(refused);
            }
            for (p, cids) in &asks {
                if let Some(q) = s.peers.get_mut(p) {
                    q.outstanding += cids.len();
                }
            }
            asks.keys()
                .filter_map(|p| s.peers.get(p).map(|q| (*p, q.out.clone())))
                .collect::<Vec<_>>()
        };
        for (p, out) in outs {
            if let Some(cids) = asks.get(&p) {
                let _ = out.try_send(want_message(cids, false, false));
            }
        }
    }

    async fn rebroadcast_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(REBROADCAST);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let (due, peers) = {
                let mut s = self.lock();
                let now = Instant::now();
                let peers: Vec<(PeerId, mpsc::Sender<Message>)> =
                    s.peers.iter().map(|(p, q)| (*p, q.out.clone())).collect();
                let mut due = Vec::new();
                // Unanswered `want-block`s per peer, before and after.
                let mut delta: HashMap<PeerId, isize> = HashMap::new();
                for w in s.wants.values_mut() {
                    let waited = w.sent.map(|t| now.duration_since(t));
                    let is_due = match waited {
                        None => true,
                        Some(d) if w.block_outstanding() => d >= REASK,
                        Some(d) => d >= REBROADCAST,
                    };
                    if is_due {
                        for p in w.asked.iter().filter(|p| !w.dont_have.contains(p)) {
                            *delta.entry(*p).or_default() -= 1;
                        }
                        w.sent = Some(now);
                        w.asked.extend(peers.iter().map(|(p, _)| *p));
                        w.dont_have.clear();
                        for p in &w.asked {
                            *delta.entry(*p).or_default() += 1;
                        }
                        due.push(w.cid);
                    }
                }
                for (p, d) in delta {
                    if let Some(q) = s.peers.get_mut(&p) {
                        q.outstanding = q.outstanding.saturating_add_signed(d);
                    }
                }
                (
                    due,
                    peers.into_iter().map(|(_, out)| out).collect::<Vec<_>>(),
                )
            };
            if due.is_empty() {
                continue;
            }
            for p in peers {
                for chunk in due.chunks(1024) {
                    let _ = p.try_send(want_message(chunk, false, false));
                }
            }
        }
    }
}

/// Wants answered per store read, at most.
const SERVE_BATCH: usize = 1024;

/// Answers one peer's wants, in order, until the peer disconnects; wants
/// that queued meanwhile are answered together (one store read).
async fn serve_loop(
    store: BlockStore,
    mut wants: mpsc::Receiver<Vec<WantEntry>>,
    out: mpsc::Sender<Message>,
    cancel: CancellationToken,
) {
    loop {
        let mut batch = tokio::select! {
            _ = cancel.cancelled() => return,
            w = wants.recv() => match w { Some(w) => w, None => return },
        };
        while batch.len() < SERVE_BATCH {
            match wants.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let store = store.clone();
        let answers = tokio::task::spawn_blocking(move || answer(&store, batch))
            .await
            .unwrap_or_default();
        for m in answers {
            if out.send(m).await.is_err() {
                return;
            }
        }
    }
}

/// The messages that answer `wants`: blocks, then presences, split so that
/// no message carries much more than [`RESPONSE_BLOCK_BYTES`] of blocks.
fn answer(store: &BlockStore, wants: Vec<WantEntry>) -> Vec<Message> {
    let wants: Vec<(WantEntry, Cid)> = wants
        .into_iter()
        .filter_map(|w| Cid::try_from(w.cid.as_slice()).ok().map(|c| (w, c)))
        .collect();
    let keys: Vec<(Vec<u8>, bool)> = wants
        .iter()
        .map(|(w, c)| (c.hash().to_bytes(), !w.want_have()))
        .collect();
    let Ok(held) = store.lookup_many(&keys) else {
        return Vec::new();
    };
    let mut msgs = vec![Message::default()];
    let mut bytes = 0usize;
    for ((w, cid), held) in wants.into_iter().zip(held) {
        let Some(m) = msgs.last_mut() else { break };
        match held {
            Held::Data(data) => {
                bytes += data.len();
                m.payload.push(Block {
                    prefix: cid_prefix(&cid),
                    data: data.into(),
                });
                if bytes >= RESPONSE_BLOCK_BYTES {
                    bytes = 0;
                    msgs.push(Message::default());
                }
            }
            Held::Present => m
                .block_presences
                .push(BlockPresence::new(w.cid, Presence::Have)),
            Held::Missing if w.send_dont_have => m
                .block_presences
                .push(BlockPresence::new(w.cid, Presence::DontHave)),
            Held::Missing => {}
        }
    }
    msgs.retain(|m| !m.payload.is_empty() || !m.block_presences.is_empty());
    msgs
}

fn want_message(cids: &[Cid], full: bool, want_have: bool) -> Message {
    let entries = cids
        .iter()
        .map(|c| WantEntry::new(c, want_have, true))
        .collect();
    Message {
        wantlist: Some(Wantlist { entries, full }),
        ..Message::default()
    }
}

/// A registered want; dropping it withdraws the waiter (and the want, when
/// it was the last one).
struct Ticket<'a> {
    bitswap: &'a Bitswap,
    mh: Vec<u8>,
    rx: oneshot::Receiver<Vec<u8>>,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.rx.close();
        let mut s = self.bitswap.lock();
        if let Some(w) = s.wants.get_mut(&self.mh) {
            w.waiters.retain(|t| !t.is_closed());
            if w.waiters.is_empty()
                && let Some(w) = s.wants.remove(&self.mh)
            {
                s.closed(&w);
            }
        }
    }
}

/// Queued messages written to a stream at once, up to about this many bytes.
const COALESCE_BYTES: usize = 1 << 20;

/// Sends our wants (first: they are small and keep the peer busy) and our
/// answers to `peer` on one stream.
async fn send_loop(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    mut wants: mpsc::Receiver<Message>,
    mut answers: mpsc::Receiver<Message>,
    cancel: CancellationToken,
) {
    let mut stream: Option<Stream> = None;
    loop {
        let msg = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            m = wants.recv() => match m { Some(m) => m, None => break },
            m = answers.recv() => match m { Some(m) => m, None => break },
        };
        // A uvarint length, then the message; messages that queued
        // meanwhile go in the same write.
        let mut frame = msg.encode_length_delimited_to_vec();
        while frame.len() < COALESCE_BYTES {
            let Ok(more) = wants.try_recv().or_else(|_| answers.try_recv()) else {
                break;
            };
            if more.encode_length_delimited(&mut frame).is_err() {
                break;
            }
        }
        // One retry on a fresh stream: the old one may have been reset.
        for _ in 0..2 {
            if stream.is_none() {
                match control.open_stream(peer, PROTOCOL).await {
                    Ok(s) => stream = Some(s),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "cannot open a bitswap stream");
                        break;
                    }
                }
            }
            if let Some(s) = stream.as_mut() {
                match s.write_all(&frame).await {
                    Ok(()) => break,
                    Err(_) => stream = None,
                }
            }
        }
    }
    if let Some(mut s) = stream {
        let _ = s.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::wire::tests::raw_cid;
    use super::*;

    #[test]
    fn wants_are_answered_with_blocks_haves_and_dont_haves() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlockStore::open(&dir.path().join("b.redb")).unwrap();
        let held = raw_cid(b"held");
        store
            .put_many(&[(held.hash().to_bytes(), b"held".to_vec())])
            .unwrap();
        let missing = raw_cid(b"missing");
        let msgs = answer(
            &store,
            vec![
                WantEntry::new(&held, false, true),
                WantEntry::new(&held, true, true),
                WantEntry::new(&missing, false, true),
                WantEntry::new(&missing, true, false),
            ],
        );
        assert_eq!(msgs.len(), 1);
        assert_eq!(
            msgs[0].payload,
            vec![Block {
                prefix: cid_prefix(&held),
                data: bytes::Bytes::from_static(b"held")
            }]
        );
        assert_eq!(
            msgs[0].block_presences,
            vec![
                BlockPresence::new(held.to_bytes(), Presence::Have),
                BlockPresence::new(missing.to_bytes(), Presence::DontHave)
            ]
        );
        assert!(answer(&store, vec![WantEntry::new(&missing, false, false)]).is_empty());
    }
}
