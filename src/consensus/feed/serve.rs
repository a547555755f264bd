//! Serving the feed: answers to [`PullRequest`] and [`ChunkRequest`], the
//! same on trusted peers (which sign what they applied, from their Raft log
//! and snapshot) and on followers (which pass on the signed pieces they
//! received and the snapshot they installed).
//!
//! A peer serves a few pulls and chunks at a time; past that it answers
//! `Busy` with other peers known to have what was asked (they told it so
//! when they pulled from it), so the followers spread the feed among
//! themselves and the trusted peers are not the bottleneck.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::identity::Keypair;
use rand::seq::SliceRandom;
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::{
    CHUNK_BYTES, ChunkReply, ChunkRequest, EntriesBody, MAX_PIECE_BYTES, MAX_PIECE_ENTRIES,
    MAX_SOURCES, PieceKind, PullReply, PullRequest, Signed, SnapshotOffer, Source, Trusted,
};
use crate::consensus::{LogStore, StateStore};

/// Signed entry pieces kept to serve again (a trusted peer signs a piece
/// once for all the followers that ask for the same index; a follower
/// passes on what it received): at most this many…
const KEPT_PIECES: usize = 64;

/// …and at most this many bytes of them.
const KEPT_BYTES: usize = 32 << 20;

/// How long a request waits for a free slot before it is answered busy.
const SLOT_WAIT: Duration = Duration::from_secs(5);

/// Most addresses remembered per peer, and the longest one.
const MAX_ADDRS: usize = 8;
const MAX_ADDR_LEN: usize = 256;

/// How long a peer that pulled is named as a source.
const SOURCE_FRESH: Duration = Duration::from_secs(60);

/// Most peers remembered as sources.
const MAX_SEEN: usize = 4096;

/// A download of a snapshot is under way while its follower asked for a
/// chunk this recently.
const DOWNLOAD_IDLE: Duration = Duration::from_secs(2);

/// What a peer that pulled from us told us.
#[derive(Clone, Debug)]
struct Seen {
    applied: u64,
    holds: Option<String>,
    addrs: Vec<String>,
    when: Instant,
}

/// The follower-facing side of one peer.
pub(crate) struct FeedServer {
    trusted: Trusted,
    /// Set on a trusted peer that is in the trusted list: it signs.
    signer: Option<Keypair>,
    /// A trusted peer's Raft log.
    log: Option<LogStore>,
    store: StateStore,
    seen: Mutex<HashMap<PeerId, Seen>>,
    pieces: Mutex<VecDeque<(u64, u64, Signed)>>,
    /// The signed offer of the snapshot this peer serves (its id and last
    /// index first).
    offer: Mutex<Option<(String, u64, Signed)>>,
    pulls: Semaphore,
    chunks: Semaphore,
    /// Followers downloading the snapshot from this peer now (last chunk
    /// asked for at): past `max_downloads`, others are sent elsewhere or
    /// wait, so the first followers to hold the snapshot serve the rest.
    downloads: Mutex<HashMap<PeerId, Instant>>,
    max_downloads: usize,
    /// Pieces this follower refused (bad signature, untrusted signer,
    /// replay, gap, snapshot not matching its offer).
    refused: std::sync::atomic::AtomicU64,
    /// Feed bytes this peer sent (entry pieces and snapshot chunks).
    served: std::sync::atomic::AtomicU64,
    /// Feed bytes this peer received and kept.
    received: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for FeedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedServer")
            .field("cluster", &self.trusted.cluster)
            .field("signs", &self.signer.is_some())
            .finish()
    }
}

/// A follower the trusted peers know of: it pulled the feed recently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowerSeen {
    /// Its peer id.
    pub peer: PeerId,
    /// The last index it had applied when it pulled.
    pub applied: u64,
    /// Its p2p addresses.
    pub addrs: Vec<String>,
    /// How long ago it pulled.
    pub ago: Duration,
}

impl FeedServer {
    /// A trusted peer's server: it signs with `key` if it is in the
    /// trusted list.
    pub(crate) fn trusted(
        trusted: Trusted,
        key: &Keypair,
        log: LogStore,
        store: StateStore,
    ) -> Self {
        let signs = trusted.contains(&key.public().to_peer_id());
        Self::new(
            trusted,
            signs.then(|| key.clone()),
            Some(log),
            store,
            4,
            2,
            2,
        )
    }

    /// A follower's server: it passes on what it received.
    pub(crate) fn follower(trusted: Trusted, store: StateStore) -> Self {
        Self::new(trusted, None, None, store, 8, 4, 4)
    }

    fn new(
        trusted: Trusted,
        signer: Option<Keypair>,
        log: Option<LogStore>,
        store: StateStore,
        pulls: usize,
        chunks: usize,
        max_downloads: usize,
    ) -> Self {
        Self {
            trusted,
            signer,
            log,
            store,
            seen: Mutex::new(HashMap::new()),
            pieces: Mutex::new(VecDeque::new()),
            offer: Mutex::new(None),
            pulls: Semaphore::new(pulls),
            chunks: Semaphore::new(chunks),
            downloads: Mutex::new(HashMap::new()),
            max_downloads,
            refused: std::sync::atomic::AtomicU64::new(0),
            served: std::sync::atomic::AtomicU64::new(0),
            received: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Who may sign the feed.
    pub(crate) fn trust(&self) -> &Trusted {
        &self.trusted
    }

    /// A signed announcement of `applied`, if this peer signs.
    pub(crate) fn sign_head(&self, applied: u64) -> Option<Signed> {
        let key = self.signer.as_ref()?;
        let head = super::HeadBody {
            cluster: self.trusted.cluster.clone(),
            applied,
        };
        Signed::sign(PieceKind::Head, &head, key).ok()
    }

    /// Counts a refused piece.
    pub(crate) fn count_refused(&self) {
        self.refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts feed bytes received.
    pub(crate) fn count_received(&self, bytes: usize) {
        self.received
            .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn count_served(&self, bytes: usize) {
        self.served
            .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Feed bytes (sent, received) since this peer started.
    pub fn traffic(&self) -> (u64, u64) {
        (
            self.served.load(std::sync::atomic::Ordering::Relaxed),
            self.received.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// How many pieces this peer refused since it started.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether this peer signs the feed.
    pub(crate) fn signs(&self) -> bool {
        self.signer.is_some()
    }

    /// The last index this peer's state has applied.
    pub(crate) fn applied(&self) -> u64 {
        self.store
            .last_applied()
            .ok()
            .flatten()
            .map_or(0, |l| l.index)
    }

    /// The peers that pulled from this one in the last minute (the
    /// followers, on a trusted peer), newest first.
    pub fn followers(&self) -> Vec<FollowerSeen> {
        let now = Instant::now();
        let mut out: Vec<FollowerSeen> = lock(&self.seen)
            .iter()
            .filter(|(_, s)| now.duration_since(s.when) < SOURCE_FRESH)
            .map(|(p, s)| FollowerSeen {
                peer: *p,
                applied: s.applied,
                addrs: s.addrs.clone(),
                ago: now.duration_since(s.when),
            })
            .collect();
        out.sort_by_key(|f| f.ago);
        out
    }

    /// Remembers what `peer` said when it pulled. What it says is not
    /// trusted: its index counts only up to this peer's own, it is named as
    /// holding a snapshot only if that is the snapshot this peer serves,
    /// and its addresses are bounded.
    fn remember(&self, peer: PeerId, req: &PullRequest, applied: u64) {
        let holds = req
            .holds
            .clone()
            .filter(|h| self.holds().as_ref() == Some(h));
        let addrs: Vec<String> = req
            .addrs
            .iter()
            .filter(|a| a.len() <= MAX_ADDR_LEN)
            .take(MAX_ADDRS)
            .cloned()
            .collect();
        let mut seen = lock(&self.seen);
        if seen.len() >= MAX_SEEN && !seen.contains_key(&peer) {
            let now = Instant::now();
            seen.retain(|_, s| now.duration_since(s.when) < SOURCE_FRESH);
            if seen.len() >= MAX_SEEN {
                return;
            }
        }
        seen.insert(
            peer,
            Seen {
                applied: req.after.min(applied),
                holds,
                addrs,
                when: Instant::now(),
            },
        );
    }

    /// Peers (not `asker`) that told us they hold snapshot `id`.
    fn holders(&self, asker: &PeerId, id: &str) -> Vec<Source> {
        self.sources(asker, |s| s.holds.as_deref() == Some(id))
    }

    /// Peers (not `asker`) that told us they have `wanted`.
    fn sources(&self, asker: &PeerId, wanted: impl Fn(&Seen) -> bool) -> Vec<Source> {
        let now = Instant::now();
        let mut out: Vec<Source> = lock(&self.seen)
            .iter()
            .filter(|(p, s)| {
                *p != asker
                    && !s.addrs.is_empty()
                    && now.duration_since(s.when) < SOURCE_FRESH
                    && wanted(s)
            })
            .map(|(p, s)| Source {
                peer: p.to_string(),
                addrs: s.addrs.clone(),
            })
            .collect();
        out.shuffle(&mut rand::rng());
        out.truncate(MAX_SOURCES);
        out
    }

    /// Keeps a piece received from the feed, to pass it on.
    pub(crate) fn keep_piece(&self, first: u64, last: u64, piece: Signed) {
        let mut pieces = lock(&self.pieces);
        pieces.push_back((first, last, piece));
        let mut bytes: usize = pieces.iter().map(|(_, _, p)| p.body.len()).sum();
        while pieces.len() > 1 && (pieces.len() > KEPT_PIECES || bytes > KEPT_BYTES) {
            if let Some((_, _, p)) = pieces.pop_front() {
                bytes -= p.body.len();
            }
        }
    }

    /// Serves `offer` (the snapshot just installed from it) from now on.
    pub(crate) fn set_offer(&self, snapshot_id: String, index: u64, offer: Signed) {
        *lock(&self.offer) = Some((snapshot_id, index, offer));
    }

    /// The id of the snapshot this peer serves, if any.
    pub(crate) fn holds(&self) -> Option<String> {
        lock(&self.offer).as_ref().map(|(id, _, _)| id.clone())
    }

    fn kept_piece(&self, next: u64) -> Option<Signed> {
        lock(&self.pieces)
            .iter()
            .rev()
            .find(|(first, last, _)| *first <= next && next <= *last)
            .map(|(_, _, p)| p.clone())
    }

    /// Answers a pull from `peer`.
    pub(crate) async fn pull(&self, peer: PeerId, req: PullRequest) -> PullReply {
        let applied = self.applied();
        if req.cluster != self.trusted.cluster {
            return PullReply::Nothing { head: 0 };
        }
        self.remember(peer, &req, applied);
        if req.after >= applied {
            return PullReply::Nothing { head: applied };
        }
        let _permit = match self.pulls.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                let sources = self.sources(&peer, |s| s.applied > req.after);
                if !sources.is_empty() {
                    return PullReply::Busy { sources };
                }
                match tokio::time::timeout(SLOT_WAIT, self.pulls.acquire()).await {
                    Ok(Ok(p)) => p,
                    _ => return PullReply::Busy { sources },
                }
            }
        };
        let next = req.after + 1;
        if let Some(piece) = self.kept_piece(next) {
            self.count_served(piece.body.len());
            return PullReply::Entries(piece);
        }
        if self.signer.is_some() {
            match self.sign_entries(next, applied).await {
                Ok(Some(piece)) => {
                    self.count_served(piece.body.len());
                    return PullReply::Entries(piece);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot serve the feed");
                    return PullReply::Nothing { head: applied };
                }
            }
            if let Err(e) = self.refresh_offer().await {
                tracing::warn!(error = %e, "cannot offer the snapshot to a follower");
                return PullReply::Nothing { head: applied };
            }
        }
        let offer = lock(&self.offer).clone();
        match offer {
            Some((id, index, offer)) if index > req.after => {
                let sources = self.holders(&peer, &id);
                PullReply::Snapshot { offer, sources }
            }
            _ => PullReply::Nothing { head: applied },
        }
    }

    /// Signs the committed entries from `next` on (up to the limits);
    /// `None` when they are purged from the log.
    async fn sign_entries(&self, next: u64, applied: u64) -> Result<Option<Signed>, String> {
        let (Some(log), Some(key)) = (&self.log, &self.signer) else {
            return Ok(None);
        };
        let last = applied.min(next + MAX_PIECE_ENTRIES - 1);
        let Some(entries) = log
            .feed_range(next, last, MAX_PIECE_BYTES)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let last = next + entries.len() as u64 - 1;
        let body = EntriesBody {
            cluster: self.trusted.cluster.clone(),
            first: next,
            last,
            entries,
        };
        let key = key.clone();
        let piece =
            tokio::task::spawn_blocking(move || Signed::sign(PieceKind::Entries, &body, &key))
                .await
                .map_err(|e| e.to_string())??;
        self.keep_piece(next, last, piece.clone());
        Ok(Some(piece))
    }

    /// Signs an offer of the current snapshot unless it is the one offered
    /// already.
    async fn refresh_offer(&self) -> Result<(), String> {
        let Some(key) = &self.signer else {
            return Ok(());
        };
        let Some((meta, path)) = self.store.current_snapshot().map_err(|e| e.to_string())? else {
            return Ok(());
        };
        if self.holds().as_deref() == Some(meta.snapshot_id.as_str()) {
            return Ok(());
        }
        let (size, sha256, chunks) = tokio::task::spawn_blocking(move || hash_file(&path))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot read the snapshot: {e}"))?;
        let offer = SnapshotOffer {
            cluster: self.trusted.cluster.clone(),
            meta: meta.clone(),
            size,
            sha256,
            chunks,
        };
        let piece = Signed::sign(PieceKind::Snapshot, &offer, key)?;
        self.set_offer(meta.snapshot_id, offer.index(), piece);
        Ok(())
    }

    /// Whether `peer` may download from this peer now: it already is, or
    /// fewer than `max_downloads` followers are.
    fn admit_download(&self, peer: PeerId, last_chunk: bool) -> bool {
        let mut d = lock(&self.downloads);
        let now = Instant::now();
        d.retain(|_, at| now.duration_since(*at) < DOWNLOAD_IDLE);
        if !d.contains_key(&peer) && d.len() >= self.max_downloads {
            return false;
        }
        if last_chunk {
            d.remove(&peer);
        } else {
            d.insert(peer, now);
        }
        true
    }

    /// Answers a chunk request from `peer`.
    pub(crate) async fn chunk(&self, peer: PeerId, req: ChunkRequest) -> ChunkReply {
        let Some(path) = self.snapshot_file(&req.snapshot_id) else {
            return ChunkReply::Unknown;
        };
        if !req.offset.is_multiple_of(CHUNK_BYTES) {
            return ChunkReply::Unknown;
        }
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let last_chunk = req.offset.saturating_add(CHUNK_BYTES) >= size;
        // Past the download bound: send the asker to followers that hold
        // the snapshot, or, when none does yet, let it wait a little for a
        // slot here.
        let waited = Instant::now();
        while !self.admit_download(peer, last_chunk) {
            let sources = self.holders(&peer, &req.snapshot_id);
            if !sources.is_empty() || waited.elapsed() >= SLOT_WAIT {
                return ChunkReply::Busy { sources };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _permit = match self.chunks.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                let sources = self.holders(&peer, &req.snapshot_id);
                if !sources.is_empty() {
                    return ChunkReply::Busy { sources };
                }
                match self.chunks.acquire().await {
                    Ok(p) => p,
                    Err(_) => return ChunkReply::Unknown,
                }
            }
        };
        let len = CHUNK_BYTES;
        match tokio::task::spawn_blocking(move || read_at(&path, req.offset, len)).await {
            Ok(Ok(bytes)) => {
                self.count_served(bytes.len());
                ChunkReply::Data(ByteBuf::from(bytes))
            }
            _ => ChunkReply::Unknown,
        }
    }

    fn snapshot_file(&self, id: &str) -> Option<PathBuf> {
        let (meta, path) = self.store.current_snapshot().ok().flatten()?;
        (meta.snapshot_id == id).then_some(path)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Size, SHA-256, and the SHA-256 of each [`CHUNK_BYTES`] chunk of a file.
pub(crate) fn hash_file(path: &std::path::Path) -> std::io::Result<(u64, [u8; 32], Vec<[u8; 32]>)> {
    let mut f = std::fs::File::open(path)?;
    let mut whole = Sha256::new();
    let mut chunks = Vec::new();
    let mut buf = Vec::with_capacity(CHUNK_BYTES as usize);
    let mut size = 0u64;
    loop {
        buf.clear();
        let n = (&mut f).take(CHUNK_BYTES).read_to_end(&mut buf)?;
        if n == 0 {
            break;
        }
        whole.update(&buf);
        chunks.push(Sha256::digest(&buf).into());
        size += n as u64;
    }
    Ok((size, whole.finalize().into(), chunks))
}

fn read_at(path: &std::path::Path, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut out = Vec::with_capacity(len as usize);
    f.take(len).read_to_end(&mut out)?;
    Ok(out)
}
