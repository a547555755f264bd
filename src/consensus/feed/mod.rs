//! The signed state feed: how followers, which never join Raft, receive the
//! committed state — a snapshot, then the committed log entries after it —
//! from any peer that has it, and how they know it is genuine.
//!
//! Every piece is signed by a trusted peer (`cluster.trusted_peers`) with
//! its libp2p identity key, over the exact bytes that travel: a follower
//! checks the signature before it decodes anything, so a piece a follower
//! passes on to another follower is as good as one from a trusted peer,
//! and a follower can forge nothing. A trusted peer only signs what it has
//! applied, which Raft has committed, so one signature is enough: there is
//! only one committed entry at each index.
//!
//! - An [`EntriesBody`] holds committed entries `first..=last` in order; a
//!   follower applies it only when `first <= applied + 1 <= last` (replays
//!   and gaps are refused), after checking that every entry carries the
//!   index it should.
//! - A [`SnapshotOffer`] names a snapshot (its Raft metadata, size and
//!   SHA-256); the file itself travels in chunks from any peer that holds
//!   it, and is installed only if its size and hash match the offer, and
//!   only if it is newer than what the follower has.
//!
//! Serving (`serve.rs`) is the same code on trusted peers (from their Raft
//! log and snapshot) and on followers (from what they received); a busy
//! peer answers with other peers that have what was asked (`Busy`), so the
//! followers spread the feed among themselves. Following (`follow.rs`) is
//! the follower's loop. Trusted peers announce their newest applied index
//! on the feed gossip topic, so followers fetch at once.

pub(crate) mod follow;
pub mod serve;
#[cfg(test)]
mod tests;

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};
use openraft::{Entry, SnapshotMeta};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::{ClusterNode, NodeId, PeerNode, TypeConfig};

/// What every signature covers first, so a signature over a feed piece can
/// never be taken for a signature over anything else.
const DOMAIN: &[u8] = b"pinfleet/feed/1\0";

/// The largest entries piece a peer sends in one answer (it may send one
/// entry larger than this, alone).
pub const MAX_PIECE_BYTES: usize = 4 << 20;

/// Most entries in one piece.
pub const MAX_PIECE_ENTRIES: u64 = 256;

/// Snapshot bytes per chunk request.
pub const CHUNK_BYTES: u64 = 1 << 20;

/// Most other peers named in a `Busy` answer or next to an offer.
pub const MAX_SOURCES: usize = 8;

/// What a piece says it is (covered by the signature).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PieceKind {
    /// An [`EntriesBody`].
    Entries,
    /// A [`SnapshotOffer`].
    Snapshot,
    /// A [`HeadBody`].
    Head,
}

/// A piece of the feed as it travels: the CBOR body, who signed it, and the
/// signature over [`DOMAIN`], the kind and the body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    /// What the body is.
    pub kind: PieceKind,
    /// The CBOR-encoded body, exactly as signed.
    pub body: ByteBuf,
    /// The signer's public key (protobuf encoding); its peer id must be a
    /// trusted peer's.
    pub key: ByteBuf,
    /// The signature.
    pub signature: ByteBuf,
}

/// Committed log entries `first..=last` of one cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EntriesBody {
    /// The cluster's name (`cluster.name`).
    pub cluster: String,
    /// Index of the first entry.
    pub first: u64,
    /// Index of the last entry.
    pub last: u64,
    /// The entries, in index order.
    pub entries: Vec<Entry<TypeConfig>>,
}

/// A snapshot of one cluster's state, as a trusted peer built or installed
/// it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotOffer {
    /// The cluster's name.
    pub cluster: String,
    /// Raft's metadata of the snapshot (its last log id, its membership,
    /// its id).
    pub meta: SnapshotMeta<NodeId, PeerNode>,
    /// Size of the snapshot file in bytes.
    pub size: u64,
    /// SHA-256 of the snapshot file.
    pub sha256: [u8; 32],
    /// SHA-256 of each [`CHUNK_BYTES`] chunk of the file, in order: a
    /// follower checks every chunk as it arrives, so a peer that sends a
    /// bad one is known at once (and avoided), not at the end.
    pub chunks: Vec<[u8; 32]>,
}

impl SnapshotOffer {
    /// The last index the snapshot contains (0 for an empty state).
    pub fn index(&self) -> u64 {
        self.meta.last_log_id.map_or(0, |l| l.index)
    }

    /// Whether `bytes`, received as the chunk at `offset`, is that chunk.
    pub fn chunk_matches(&self, offset: u64, bytes: &[u8]) -> bool {
        use sha2::{Digest, Sha256};
        if !offset.is_multiple_of(CHUNK_BYTES) {
            return false;
        }
        let expected_len = CHUNK_BYTES.min(self.size.saturating_sub(offset));
        let Some(hash) = self.chunks.get((offset / CHUNK_BYTES) as usize) else {
            return false;
        };
        bytes.len() as u64 == expected_len && Sha256::digest(bytes).as_slice() == hash
    }

    /// Whether the offer is self-consistent: one hash per chunk of `size`.
    fn well_formed(&self) -> bool {
        self.chunks.len() as u64 == self.size.div_ceil(CHUNK_BYTES)
    }
}

/// A trusted peer's newest applied index, announced on the feed topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadBody {
    /// The cluster's name.
    pub cluster: String,
    /// The last applied (committed) index.
    pub applied: u64,
}

/// Why a piece was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// The signer's key does not decode.
    #[error("the signer's key is not a valid public key")]
    BadKey,
    /// The signer is not one of the cluster's trusted peers.
    #[error("signed by {0}, which is not a trusted peer of this cluster")]
    Untrusted(PeerId),
    /// The signature does not match the bytes (forged, altered or cut).
    #[error("the signature does not match the piece (forged, altered or truncated)")]
    BadSignature,
    /// The piece is not the kind that was expected.
    #[error("expected a {expected:?} piece, got {got:?}")]
    WrongKind {
        /// What the caller asked for.
        expected: PieceKind,
        /// What came.
        got: PieceKind,
    },
    /// The body does not decode.
    #[error("the piece does not decode: {0}")]
    Decode(String),
    /// The piece belongs to another cluster.
    #[error("the piece belongs to cluster {got:?}, not {expected:?}")]
    OtherCluster {
        /// This cluster's name.
        expected: String,
        /// The piece's.
        got: String,
    },
    /// The entries do not carry the indexes the piece says.
    #[error("the entries do not match their range {first}..={last}")]
    Inconsistent {
        /// The piece's first index.
        first: u64,
        /// The piece's last index.
        last: u64,
    },
    /// Everything in the piece is already applied.
    #[error("a replay: the piece ends at {last}, and {applied} is applied")]
    Replay {
        /// The piece's last index (or the snapshot's).
        last: u64,
        /// What the follower has applied.
        applied: u64,
    },
    /// The piece starts after the next index: something is missing.
    #[error("out of order: the piece starts at {first}, and the next index is {next}")]
    Gap {
        /// The piece's first index.
        first: u64,
        /// The index the follower needs next.
        next: u64,
    },
    /// The snapshot file does not match its offer.
    #[error("the snapshot does not match its offer: {0}")]
    SnapshotMismatch(String),
}

impl Signed {
    /// Signs `body` (CBOR-encoded here) as a piece of `kind` with `key`.
    pub fn sign<T: Serialize>(kind: PieceKind, body: &T, key: &Keypair) -> Result<Self, String> {
        let body = cbor4ii::serde::to_vec(Vec::new(), body)
            .map_err(|e| format!("cannot encode a feed piece: {e}"))?;
        let signature = key
            .sign(&signed_bytes(kind, &body))
            .map_err(|e| format!("cannot sign a feed piece: {e}"))?;
        Ok(Self {
            kind,
            body: ByteBuf::from(body),
            key: ByteBuf::from(key.public().encode_protobuf()),
            signature: ByteBuf::from(signature),
        })
    }

    /// Checks the signature and the signer, then decodes the body as a
    /// piece of `kind`. Nothing is decoded before the signature holds.
    pub fn open<T: serde::de::DeserializeOwned>(
        &self,
        kind: PieceKind,
        trusted: &Trusted,
    ) -> Result<(PeerId, T), FeedError> {
        let key = PublicKey::try_decode_protobuf(&self.key).map_err(|_| FeedError::BadKey)?;
        let signer = key.to_peer_id();
        if !trusted.contains(&signer) {
            return Err(FeedError::Untrusted(signer));
        }
        if !key.verify(&signed_bytes(self.kind, &self.body), &self.signature) {
            return Err(FeedError::BadSignature);
        }
        if self.kind != kind {
            return Err(FeedError::WrongKind {
                expected: kind,
                got: self.kind,
            });
        }
        let body =
            cbor4ii::serde::from_slice(&self.body).map_err(|e| FeedError::Decode(e.to_string()))?;
        Ok((signer, body))
    }
}

fn signed_bytes(kind: PieceKind, body: &[u8]) -> Vec<u8> {
    let tag = match kind {
        PieceKind::Entries => b'e',
        PieceKind::Snapshot => b's',
        PieceKind::Head => b'h',
    };
    let mut out = Vec::with_capacity(DOMAIN.len() + 1 + body.len());
    out.extend_from_slice(DOMAIN);
    out.push(tag);
    out.extend_from_slice(body);
    out
}

/// Who may sign the feed of one cluster.
#[derive(Clone, Debug, Default)]
pub struct Trusted {
    /// The cluster's name; pieces of other clusters are refused.
    pub cluster: String,
    /// The trusted peers.
    pub peers: Vec<PeerId>,
}

impl Trusted {
    /// Whether `peer` may sign.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.peers.contains(peer)
    }

    /// Opens an entries piece and checks it against what is applied:
    /// the cluster, the indexes of its entries, and that it brings the next
    /// index (a replay or a gap is refused). Returns the entries after
    /// `applied`.
    pub fn accept_entries(
        &self,
        piece: &Signed,
        applied: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, FeedError> {
        let (_, body): (_, EntriesBody) = piece.open(PieceKind::Entries, self)?;
        self.same_cluster(&body.cluster)?;
        let consistent = body.first >= 1
            && body.first <= body.last
            && body.entries.len() as u64 == body.last - body.first + 1
            && body
                .entries
                .iter()
                .zip(body.first..)
                .all(|(e, i)| e.log_id.index == i);
        if !consistent {
            return Err(FeedError::Inconsistent {
                first: body.first,
                last: body.last,
            });
        }
        if body.last <= applied {
            return Err(FeedError::Replay {
                last: body.last,
                applied,
            });
        }
        if body.first > applied + 1 {
            return Err(FeedError::Gap {
                first: body.first,
                next: applied + 1,
            });
        }
        let skip = (applied + 1 - body.first) as usize;
        Ok(body.entries.into_iter().skip(skip).collect())
    }

    /// Opens a snapshot offer and checks that it is of this cluster and
    /// newer than what is applied.
    pub fn accept_offer(&self, piece: &Signed, applied: u64) -> Result<SnapshotOffer, FeedError> {
        let (_, offer): (_, SnapshotOffer) = piece.open(PieceKind::Snapshot, self)?;
        self.same_cluster(&offer.cluster)?;
        if !offer.well_formed() {
            return Err(FeedError::SnapshotMismatch(format!(
                "{} chunk hashes for {} bytes",
                offer.chunks.len(),
                offer.size
            )));
        }
        if offer.index() <= applied {
            return Err(FeedError::Replay {
                last: offer.index(),
                applied,
            });
        }
        Ok(offer)
    }

    /// Opens a head announcement.
    pub fn accept_head(&self, piece: &Signed) -> Result<(PeerId, HeadBody), FeedError> {
        let (signer, head): (_, HeadBody) = piece.open(PieceKind::Head, self)?;
        self.same_cluster(&head.cluster)?;
        Ok((signer, head))
    }

    fn same_cluster(&self, got: &str) -> Result<(), FeedError> {
        if got == self.cluster {
            Ok(())
        } else {
            Err(FeedError::OtherCluster {
                expected: self.cluster.clone(),
                got: got.to_string(),
            })
        }
    }
}

/// A peer that has (part of) the feed, and where to dial it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Its peer id.
    pub peer: String,
    /// Its p2p addresses.
    pub addrs: Vec<String>,
}

/// A follower asks a peer for what comes after `after`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PullRequest {
    /// The cluster's name.
    pub cluster: String,
    /// The last index the asker has applied.
    pub after: u64,
    /// The snapshot the asker holds and serves, if any (its id).
    pub holds: Option<String>,
    /// Where the asker can be dialled, so others can be sent to it.
    pub addrs: Vec<String>,
}

/// The answer to a [`PullRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum PullReply {
    /// Entries after `after` (the first may be at or before it).
    Entries(Signed),
    /// The entries after `after` are gone from this peer's log: install
    /// this snapshot first; `sources` hold it too.
    Snapshot {
        /// The signed offer.
        offer: Signed,
        /// Other peers that hold the same snapshot.
        sources: Vec<Source>,
    },
    /// This peer is busy: ask these instead.
    Busy {
        /// Peers that have at least what was asked.
        sources: Vec<Source>,
    },
    /// Nothing after `after` here; `head` is what this peer has.
    Nothing {
        /// This peer's last applied index.
        head: u64,
    },
}

/// A part of a snapshot file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChunkRequest {
    /// The snapshot's id.
    pub snapshot_id: String,
    /// Byte offset.
    pub offset: u64,
    /// Bytes wanted (at most [`CHUNK_BYTES`]).
    pub len: u64,
}

/// The answer to a [`ChunkRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ChunkReply {
    /// The bytes (fewer than asked at the end of the file).
    Data(ByteBuf),
    /// Busy: ask these instead.
    Busy {
        /// Peers holding the snapshot.
        sources: Vec<Source>,
    },
    /// This peer does not hold that snapshot (any more).
    Unknown,
}

/// How often a trusted peer announces its head when nothing changes.
const ANNOUNCE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Least time between two announcements.
const ANNOUNCE_GAP: std::time::Duration = std::time::Duration::from_millis(100);

/// A trusted peer's announcer: its signed applied index on the feed topic,
/// when it changes (at most every [`ANNOUNCE_GAP`]) and every
/// [`ANNOUNCE_EVERY`].
pub(super) async fn announce(node: ClusterNode, cancel: tokio_util::sync::CancellationToken) {
    let mut applied = node.applied_watch();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = applied.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(ANNOUNCE_EVERY) => {}
        }
        let index = *applied.borrow_and_update();
        if let Some(piece) = node.inner.feed.sign_head(index)
            && let Ok(bytes) = cbor4ii::serde::to_vec(Vec::new(), &piece)
        {
            // No follower subscribed yet is not an error worth a log.
            let _ = node.p2p().publish_feed(bytes).await;
        }
        tokio::time::sleep(ANNOUNCE_GAP).await;
    }
}
