//! Bitswap (`/ipfs/bitswap/1.2.0`, `1.1.0`, `1.0.0`): the wire messages, a
//! want manager for fetching, and a responder for serving.
//!
//! Wire: each direction of a peer pair uses its own stream (as go-bitswap
//! does); a stream carries uvarint-length-prefixed protobuf `Message`s.
//! Inbound streams are accepted in every version; ours to a peer is opened
//! with the newest it accepts (`send`), and what we send is encoded for
//! that version: a peer before 1.2.0 never gets `want-have`s or presences
//! (so it is asked with `want-block` on rebroadcast, and its silence reads
//! as a `DontHave` once [`REASK`] passes).
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
//! store bytes under a CID they do not hash to. A peer that sends a block
//! we never wanted (nor recently had) or one that does not hash to its
//! prefix is distrusted for [`DISTRUST`]: what it still owes us counts as
//! `DontHave` (so a peer that said `Have` is asked at once) and it is asked
//! for blocks only when no one else is. Our wants and our answers to a
//! peer queue separately (wants first); queued messages go out in one
//! write.
//!
//! Serving: every want-block for a block we hold is answered with it,
//! want-have with `Have`, anything else (when asked) with `DontHave`. A
//! peer's wants wait in its `ledger` (at most `PEER_WANTS`, oldest dropped
//! first, cancels applied), answered oldest first [`SERVE_BATCH`] per
//! store read by the peer's own serve task into a bounded queue of
//! answers. A stream's reader never waits for serving, so two peers
//! fetching from each other cannot deadlock on full stream windows, and a
//! peer that floods wants or never reads holds up only its own tasks; it
//! may keep at most [`INBOUND_STREAMS`] streams to us open.
//!
//! This module must not write to the store (the pin walk batches writes)
//! nor decide what to fetch. The wire format (messages, framing, CID
//! prefixes, block verification) is in `wire`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cid::Cid;
use libp2p::{PeerId, Stream};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::ledger::Ledger;
use self::wire::{
    Block, BlockPresence, Message, Presence, Version, WantEntry, Wantlist, block_cid, cid_prefix,
    decode_for, read_frame_into,
};
use super::store::{BlockStore, Held};

#[cfg(test)]
mod abuse_tests;
#[cfg(test)]
mod fuzz_tests;
mod ledger;
mod send;
pub(super) mod wire;

pub(crate) use self::wire::{PROTOCOLS, digest};

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
/// Inbound Bitswap streams one peer may keep open at once (a peer needs
/// one; each may hold a frame buffer of up to 4 MiB). Further ones are
/// closed at once.
const INBOUND_STREAMS: usize = 16;
/// How long a peer that sent a bad block is asked for blocks last.
const DISTRUST: Duration = Duration::from_secs(60);
/// Closed wants remembered, so that a late copy of a block we had wanted
/// is told from a block nobody asked for.
const RECENT: usize = 8192;
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

    /// When no peer asked for the block may still send it: the first
    /// trusted peer that said `Have` and was not asked yet, now asked.
    fn next_source(&mut self, peers: &HashMap<PeerId, PeerQueues>, now: Instant) -> Option<PeerId> {
        if self.block_outstanding() {
            return None;
        }
        let next = self
            .haves
            .iter()
            .find(|p| {
                !self.asked.contains(p)
                    && !self.dont_have.contains(p)
                    && peers.get(p).is_some_and(|q| !q.distrusted(now))
            })
            .copied()?;
        self.asked.insert(next);
        Some(next)
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
        let mh = want.cid.hash().to_bytes();
        if self.recent_set.insert(mh.clone()) {
            self.recent.push_back(mh);
            if self.recent.len() > RECENT
                && let Some(old) = self.recent.pop_front()
            {
                self.recent_set.remove(&old);
            }
        }
    }

    /// Sends `want-block`s for `asks` (peer, CIDs), counting them.
    fn ask(&mut self, asks: HashMap<PeerId, Vec<Cid>>) {
        for (p, cids) in asks {
            if let Some(q) = self.peers.get_mut(&p) {
                q.outstanding += cids.len();
                let _ = q.out.try_send(want_message(&cids, false, false));
            }
        }
    }

    /// `peer` sent a block nobody wanted or that does not verify: it is
    /// asked last for a while, and what it owes counts as `DontHave`
    /// (a peer that said `Have` is asked instead).
    fn distrust(&mut self, peer: &PeerId, now: Instant) {
        let Some(q) = self.peers.get_mut(peer) else {
            return;
        };
        q.distrusted = Some(now + DISTRUST);
        q.outstanding = 0;
        let mut asks: HashMap<PeerId, Vec<Cid>> = HashMap::new();
        for w in self.wants.values_mut() {
            if w.asked.contains(peer)
                && w.dont_have.insert(*peer)
                && let Some(next) = w.next_source(&self.peers, now)
            {
                asks.entry(next).or_default().push(w.cid);
            }
        }
        self.ask(asks);
    }
}

/// A peer's queued wants and the wake-up of the task that serves them.
#[derive(Default)]
struct PeerLedger {
    wants: Mutex<Ledger>,
    ready: Notify,
}

impl PeerLedger {
    fn lock(&self) -> MutexGuard<'_, Ledger> {
        // A plain queue: a panic elsewhere leaves it usable.
        self.wants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A connected peer's queues and how it served us lately.
struct PeerQueues {
    /// Messages to send it.
    out: mpsc::Sender<Message>,
    /// Its wants, to serve.
    ledger: Arc<PeerLedger>,
    /// Fires when it disconnects: ends its send and serve tasks.
    gone: CancellationToken,
    /// `want-block`s sent to it and not answered yet.
    outstanding: usize,
    /// When it last sent us a block we wanted.
    delivered: Option<Instant>,
    /// Until when it is asked for blocks last (it sent a bad block).
    distrusted: Option<Instant>,
}

/// A peer that sent a wanted block this recently counts as a source.
const SOURCE_FRESH: Duration = Duration::from_secs(2);

impl PeerQueues {
    /// Lower is a better peer to ask for a block: trusted peers first,
    /// then recent sources, then the one with the fewest unanswered
    /// `want-block`s.
    fn load(&self, now: Instant) -> (bool, bool, usize) {
        let source = self
            .delivered
            .is_some_and(|t| now.duration_since(t) < SOURCE_FRESH);
        (self.distrusted(now), !source, self.outstanding)
    }

    fn distrusted(&self, now: Instant) -> bool {
        self.distrusted.is_some_and(|t| now < t)
    }
}

#[derive(Default)]
struct State {
    /// Open wants by multihash bytes.
    wants: HashMap<Vec<u8>, Want>,
    /// Connected peers.
    peers: HashMap<PeerId, PeerQueues>,
    /// Multihashes of the last [`RECENT`] closed wants, oldest first, and
    /// as a set.
    recent: VecDeque<Vec<u8>>,
    recent_set: HashSet<Vec<u8>>,
    /// Open inbound streams per peer.
    inbound: HashMap<PeerId, usize>,
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
    /// Inbound streams arrive on `incoming` (see `inbound.rs`), on any of
    /// [`PROTOCOLS`]; outbound ones are opened through `control`.
    pub(crate) fn start(
        store: BlockStore,
        control: libp2p_stream::Control,
        mut incoming: super::inbound::IncomingRx,
        cancel: CancellationToken,
        tasks: &TaskTracker,
    ) -> Arc<Self> {
        let this = Arc::new(Bitswap {
            store,
            control,
            state: Mutex::new(State::default()),
            cancel: cancel.clone(),
            tasks: tasks.clone(),
            rejected: std::sync::atomic::AtomicU64::new(0),
        });
        let served = Arc::clone(&this);
        let spawner = tasks.clone();
        tasks.spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = cancel.cancelled() => return,
                    n = incoming.recv() => n,
                };
                let Some((peer, stream, protocol)) = next else {
                    return;
                };
                let version = PROTOCOLS
                    .iter()
                    .find(|(p, _)| *p == protocol)
                    .map_or(Version::V120, |(_, v)| *v);
                spawner.spawn(Arc::clone(&served).read_loop(peer, stream, version));
            }
        });
        tasks.spawn(Arc::clone(&this).rebroadcast_loop());
        this
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
        let ledger = Arc::new(PeerLedger::default());
        let gone = self.cancel.child_token();
        let wants = {
            let mut s = self.lock();
            let queues = PeerQueues {
                out: tx.clone(),
                ledger: Arc::clone(&ledger),
                gone: gone.clone(),
                outstanding: 0,
                delivered: None,
                distrusted: None,
            };
            if let Some(old) = s.peers.insert(peer, queues) {
                old.gone.cancel();
            }
            s.wants.values().map(|w| w.cid).collect::<Vec<_>>()
        };
        self.tasks.spawn(send::send_loop(
            self.control.clone(),
            peer,
            rx,
            answers_rx,
            gone.clone(),
        ));
        self.tasks
            .spawn(serve_loop(self.store.clone(), ledger, answers_tx, gone));
        if !wants.is_empty() {
            let _ = tx.try_send(want_message(&wants, true, true));
        }
    }

    /// The last connection to `peer` closed.
    pub(crate) fn peer_disconnected(&self, peer: &PeerId) {
        if let Some(q) = self.lock().peers.remove(peer) {
            q.gone.cancel();
        }
    }

    /// Wants of `peer` queued for serving, and how many were dropped.
    #[cfg(test)]
    fn queued_wants(&self, peer: &PeerId) -> Option<(usize, u64)> {
        let ledger = self.lock().peers.get(peer).map(|q| Arc::clone(&q.ledger))?;
        let l = ledger.lock();
        Some((l.len(), l.dropped()))
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

    async fn read_loop(self: Arc<Self>, peer: PeerId, mut stream: Stream, version: Version) {
        let Some(_slot) = InboundSlot::take(&self, peer) else {
            tracing::debug!(%peer, "too many inbound bitswap streams; closing one");
            return;
        };
        // One buffer per stream: no fresh zeroed allocation per message.
        let mut buf = Vec::new();
        loop {
            let frame = tokio::select! {
                _ = self.cancel.cancelled() => return,
                f = read_frame_into(&mut stream, &mut buf) => f,
            };
            let msg = match frame.and_then(|f| {
                f.map(|n| decode_for(buf.get(..n).unwrap_or_default(), version))
                    .transpose()
            }) {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "bitswap stream dropped");
                    return;
                }
            };
            self.receive_blocks(&peer, msg.payload);
            self.receive_presences(peer, msg.block_presences);
            let Some(wantlist) = msg.wantlist else {
                continue;
            };
            let ledger = self.lock().peers.get(&peer).map(|q| Arc::clone(&q.ledger));
            if let Some(ledger) = ledger {
                ledger.lock().apply(wantlist, version < Version::V120);
                ledger.ready.notify_one();
            }
        }
    }

    fn receive_blocks(&self, peer: &PeerId, blocks: Vec<Block>) {
        // Distrust is applied once per message, however many bad blocks it
        // carries: it walks every open want.
        let mut bad = false;
        for Block { prefix, data } in blocks {
            // Hashed outside the lock.
            let mh = block_cid(&prefix, &data).ok().map(|c| c.hash().to_bytes());
            let want = {
                let mut s = self.lock();
                let now = Instant::now();
                match mh.as_ref().and_then(|mh| s.wants.remove(mh)) {
                    Some(want) => {
                        s.closed(&want);
                        if let Some(q) = s.peers.get_mut(peer) {
                            q.delivered = Some(now);
                        }
                        Some(want)
                    }
                    // A late copy of a block we had: harmless.
                    None if mh.as_ref().is_some_and(|mh| s.recent_set.contains(mh)) => None,
                    None => {
                        bad = true;
                        None
                    }
                }
            };
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
        if bad {
            tracing::debug!(%peer, "a block nobody wanted or that does not hash: distrusting the peer");
            self.lock().distrust(peer, Instant::now());
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
        let mut s = self.lock();
        let now = Instant::now();
        let State { wants, peers, .. } = &mut *s;
        for p in presences {
            let presence = p.r#type();
            let Ok(cid) = Cid::try_from(p.cid.as_slice()) else {
                continue;
            };
            let Some(w) = wants.get_mut(&cid.hash().to_bytes()) else {
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
            if let Some(next) = w.next_source(peers, now) {
                asks.entry(next).or_default().push(w.cid);
            }
        }
        if let Some(q) = peers.get_mut(&peer) {
            q.outstanding = q.outstanding.saturating_sub(refused);
        }
        s.ask(asks);
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

/// Wants answered per store read, at most: bounds the block bytes one
/// read holds (the answers wait in the peer's queue of [`ANSWERS`]).
const SERVE_BATCH: usize = 32;

/// Answers one peer's wants, oldest first, until the peer is `gone`.
async fn serve_loop(
    store: BlockStore,
    ledger: Arc<PeerLedger>,
    out: mpsc::Sender<Message>,
    gone: CancellationToken,
) {
    loop {
        let batch = ledger.lock().take(SERVE_BATCH);
        if batch.is_empty() {
            tokio::select! {
                _ = gone.cancelled() => return,
                _ = ledger.ready.notified() => continue,
            }
        }
        let store = store.clone();
        let answers = tokio::task::spawn_blocking(move || answer(&store, batch))
            .await
            .unwrap_or_default();
        for m in answers {
            tokio::select! {
                _ = gone.cancelled() => return,
                sent = out.send(m) => if sent.is_err() { return },
            }
        }
    }
}

/// One of a peer's [`INBOUND_STREAMS`] stream slots, given back on drop.
struct InboundSlot<'a> {
    bitswap: &'a Bitswap,
    peer: PeerId,
}

impl<'a> InboundSlot<'a> {
    fn take(bitswap: &'a Bitswap, peer: PeerId) -> Option<Self> {
        let mut s = bitswap.lock();
        let n = s.inbound.entry(peer).or_default();
        if *n >= INBOUND_STREAMS {
            return None;
        }
        *n += 1;
        Some(InboundSlot { bitswap, peer })
    }
}

impl Drop for InboundSlot<'_> {
    fn drop(&mut self) {
        let mut s = self.bitswap.lock();
        if let Some(n) = s.inbound.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                s.inbound.remove(&self.peer);
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
