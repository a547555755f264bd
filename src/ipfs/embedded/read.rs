//! The embedded node's reads ([`IpfsBackend::get`](crate::ipfs::IpfsBackend::get)
//! and `cat`): paths walked through UnixFS directories (basic and
//! HAMT-sharded), directories listed with each entry's kind and size, and
//! byte ranges of files streamed by walking the file's DAG, skipping the
//! subtrees before the range by the blocksizes its nodes record.
//!
//! Blocks come from the store, or through Bitswap (which verifies them)
//! when missing; fetched blocks are not stored (a read pins nothing, so gc
//! would remove them). A block no connected node has is
//! [`IpfsError::NotFound`] as soon as every connected node said so (at
//! once when none is connected: a node alone has no one to ask). It
//! must not write to the store nor keep state between reads.

use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::EmbeddedNode;
use crate::ipfs::IpfsError;
use crate::ipfs::content::{Content, DirEntry, EntryKind, split_range};
use crate::ipfs::path::IpfsPath;
use crate::ipfs::unixfs::{HamtStep, UnixfsNode, decode_node, hamt_split, hamt_step};
use crate::manifest::{CidKey, shown};

/// How long a read waits for one block no connected node has refused.
const READ_FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a read waits for a provider lookup (public network) before
/// answering not found.
const READ_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a fetch checks whether every connected node refused it.
const ABSENT_POLL: Duration = Duration::from_millis(50);
/// Bytes of a file fetched ahead of the block being sent, about (Bitswap
/// needs several blocks in flight to keep a connection busy): as many
/// children of a node as make this much, within the bounds below.
const PREFETCH_BYTES: u64 = 8 << 20;
const PREFETCH_MIN: usize = 4;
const PREFETCH_MAX: usize = 64;
/// Entries of a directory looked at (their first block) at once.
const LIST_CONCURRENCY: usize = 16;
/// The deepest file DAG read (a balanced DAG of 1 TiB is 4 levels).
const MAX_DEPTH: usize = 32;
/// The deepest HAMT walked (64 bits of hash, 8 per level).
const MAX_SHARD_DEPTH: usize = 8;
/// Chunks queued between the walk and the reader of a `cat`.
const CAT_QUEUE: usize = 4;

/// The error for a block a reader cannot walk.
fn unreadable(cid: &Cid, reason: impl std::fmt::Display) -> IpfsError {
    IpfsError::Unsupported {
        what: format!("reading block {cid}: {reason}"),
    }
}

fn key_of(cid: Cid) -> Result<CidKey, IpfsError> {
    CidKey::from_cid(cid).map_err(|e| unreadable(&cid, e))
}

impl EmbeddedNode {
    /// The block `cid` for a read: from the store, else from connected
    /// nodes (and, on the public network, from the providers a lookup
    /// finds); [`IpfsError::NotFound`] once every connected node said it
    /// does not have it, or at once when none is connected, and no
    /// provider was found.
    pub(super) async fn read_block(&self, cid: Cid) -> Result<Vec<u8>, IpfsError> {
        if let Some(data) = self.get_block(&cid).await? {
            return Ok(data);
        }
        let bitswap = &self.inner.bitswap;
        let fetch = bitswap.fetch(cid);
        tokio::pin!(fetch);
        let deadline = Instant::now() + READ_FETCH_TIMEOUT;
        let mut poll = tokio::time::interval(ABSENT_POLL);
        let mut looked_up = false;
        loop {
            tokio::select! {
                biased;
                r = &mut fetch => return r.ok_or(IpfsError::Stopped),
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(IpfsError::Timeout {
                        operation: format!("fetch of block {cid} to read it"),
                        stalled_for: READ_FETCH_TIMEOUT,
                    });
                }
                _ = poll.tick() => {
                    if bitswap.peer_count() == 0 || bitswap.refused_by_all(&cid) {
                        // On the public network, providers found in the
                        // DHT are dialled and asked before giving up.
                        if !looked_up {
                            looked_up = true;
                            let found = tokio::time::timeout(
                                READ_LOOKUP_TIMEOUT,
                                self.find_providers(&cid),
                            )
                            .await;
                            if found.is_ok_and(|n| n > 0) {
                                continue;
                            }
                        }
                        return Err(IpfsError::NotFound { cid: key_of(cid)? });
                    }
                }
            }
        }
    }

    async fn read_node(&self, cid: Cid) -> Result<UnixfsNode, IpfsError> {
        let block = self.read_block(cid).await?;
        decode_node(&cid, &block).map_err(|r| unreadable(&cid, r))
    }

    /// What `path` names (see [`IpfsBackend::get`](crate::ipfs::IpfsBackend::get)).
    pub(super) async fn get_content(&self, path: IpfsPath) -> Result<Content, IpfsError> {
        let Some(root) = path.root_cid() else {
            return Err(IpfsError::Unsupported {
                what: format!("reading {path} (ipns) on the embedded node"),
            });
        };
        let mut at = *root.cid();
        let mut node = self.read_node(at).await?;
        for name in path.segments() {
            at = self.child(&path, at, node, name).await?;
            node = self.read_node(at).await?;
        }
        Ok(match node {
            UnixfsNode::File { size, .. } => Content::File { cid: at, size },
            UnixfsNode::Symlink { target } => Content::Symlink { cid: at, target },
            UnixfsNode::Directory { links } => Content::Directory {
                cid: at,
                entries: self.entries(links).await?,
            },
            UnixfsNode::HamtShard { links } => {
                let links = self.shard_entries(at, links).await?;
                Content::Directory {
                    cid: at,
                    entries: self.entries(links).await?,
                }
            }
        })
    }

    /// The entry `name` of the directory `node` (block `at`).
    async fn child(
        &self,
        path: &IpfsPath,
        at: Cid,
        node: UnixfsNode,
        name: &str,
    ) -> Result<Cid, IpfsError> {
        let missing = |reason: String| IpfsError::Resolve {
            path: path.to_string(),
            reason,
        };
        let no_link = || missing(format!("no link named {} under {at}", shown(name)));
        match node {
            UnixfsNode::Directory { links } => links
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, c)| c)
                .ok_or_else(no_link),
            UnixfsNode::HamtShard { mut links } => {
                for depth in 0..MAX_SHARD_DEPTH {
                    match hamt_step(&links, name, depth) {
                        HamtStep::Entry(c) => return Ok(c),
                        HamtStep::Missing => return Err(no_link()),
                        HamtStep::Shard(c) => match self.read_node(c).await? {
                            UnixfsNode::HamtShard { links: next } => links = next,
                            _ => return Err(unreadable(&c, "a HAMT link to a non-shard node")),
                        },
                    }
                }
                Err(no_link())
            }
            UnixfsNode::File { .. } | UnixfsNode::Symlink { .. } => Err(missing(format!(
                "{at} is not a directory: cannot walk to {}",
                shown(name)
            ))),
        }
    }

    /// Every entry of the sharded directory `root` (whose root node has
    /// `links`), walking its sub-shards.
    async fn shard_entries(
        &self,
        root: Cid,
        links: Vec<(String, Cid)>,
    ) -> Result<Vec<(String, Cid)>, IpfsError> {
        let (mut entries, mut todo) = hamt_split(links);
        let mut visited = 0usize;
        while let Some(c) = todo.pop() {
            visited += 1;
            // 256 slots per node over 8 levels is far more than any real
            // directory; a DAG past that repeats itself.
            if visited > 1 << 20 {
                return Err(unreadable(&root, "a sharded directory without end"));
            }
            match self.read_node(c).await? {
                UnixfsNode::HamtShard { links } => {
                    let (more, shards) = hamt_split(links);
                    entries.extend(more);
                    todo.extend(shards);
                }
                _ => return Err(unreadable(&c, "a HAMT link to a non-shard node")),
            }
        }
        Ok(entries)
    }

    /// The entries `links` names, each with its kind and size (its first
    /// block read, a few at a time).
    async fn entries(&self, links: Vec<(String, Cid)>) -> Result<Vec<DirEntry>, IpfsError> {
        futures::stream::iter(links)
            .map(|(name, cid)| async move {
                let (kind, size, target) = match self.read_node(cid).await? {
                    UnixfsNode::File { size, .. } => (EntryKind::File, size, None),
                    UnixfsNode::Directory { .. } | UnixfsNode::HamtShard { .. } => {
                        (EntryKind::Directory, 0, None)
                    }
                    UnixfsNode::Symlink { target } => (EntryKind::Symlink, 0, Some(target)),
                };
                Ok::<_, IpfsError>(DirEntry {
                    name,
                    cid,
                    size,
                    kind,
                    target,
                })
            })
            .buffered(LIST_CONCURRENCY)
            .try_collect()
            .await
    }

    /// Bytes `offset .. offset + len` of the file `cid` as they are read
    /// (see [`IpfsBackend::cat`](crate::ipfs::IpfsBackend::cat)).
    pub(super) fn cat_stream(
        &self,
        cid: CidKey,
        offset: u64,
        len: u64,
    ) -> BoxStream<'static, Result<Bytes, IpfsError>> {
        let (tx, rx) = mpsc::channel(CAT_QUEUE);
        let node = self.clone();
        // The walk runs as the stream is polled (no task of its own): it
        // stops when the reader drops the stream, or when the node stops
        // (fetches fail).
        let walk = async move {
            if len == 0 {
                return;
            }
            let root = *cid.cid();
            let end = offset.saturating_add(len);
            let sent = match node.read_block(root).await {
                Ok(block) => {
                    node.send_range(root, block, None, offset, end, 0, &tx)
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                let _ = tx.send(Err(e)).await;
            }
        };
        let drive = walk
            .into_stream()
            .filter_map(|()| futures::future::ready(None));
        futures::stream::select(tokio_stream::wrappers::ReceiverStream::new(rx), drive).boxed()
    }

    /// Sends bytes `start .. end` (relative to the node) of the file node
    /// `cid` (its `block`), whose parent says it holds `expected` bytes.
    #[allow(clippy::too_many_arguments)] // one recursive step of the walk
    fn send_range<'a>(
        &'a self,
        cid: Cid,
        block: Vec<u8>,
        expected: Option<u64>,
        start: u64,
        end: u64,
        depth: usize,
        tx: &'a mpsc::Sender<Result<Bytes, IpfsError>>,
    ) -> BoxFuture<'a, Result<(), IpfsError>> {
        Box::pin(async move {
            if depth > MAX_DEPTH {
                return Err(unreadable(&cid, "a file DAG deeper than any real one"));
            }
            let UnixfsNode::File {
                size,
                inline,
                children,
            } = decode_node(&cid, &block).map_err(|r| unreadable(&cid, r))?
            else {
                return Err(IpfsError::Unsupported {
                    what: format!("reading {cid}: it is not a file"),
                });
            };
            drop(block);
            if let Some(e) = expected.filter(|e| *e != size) {
                return Err(unreadable(
                    &cid,
                    format!("its parent says it holds {e} bytes, it holds {size}"),
                ));
            }
            let sizes: Vec<u64> = children.iter().map(|c| c.1).collect();
            let widest = sizes.iter().copied().max().unwrap_or(1).max(1);
            let ahead = usize::try_from(PREFETCH_BYTES / widest)
                .unwrap_or(PREFETCH_MAX)
                .clamp(PREFETCH_MIN, PREFETCH_MAX);
            let (own, parts) = split_range(inline.len() as u64, &sizes, start, end.min(size));
            if !own.is_empty() {
                // Within `inline`: `split_range` clamps to its length.
                let piece = inline.slice(own.start as usize..own.end as usize);
                tx.send(Ok(piece)).await.map_err(|_| IpfsError::Stopped)?;
            }
            let mut fetched =
                futures::stream::iter(parts.into_iter().filter_map(|(i, from, to)| {
                    let (child, bytes) = *children.get(i)?;
                    Some(async move {
                        self.read_block(child)
                            .await
                            .map(|b| (child, b, bytes, from, to))
                    })
                }))
                .buffered(ahead);
            while let Some(next) = fetched.next().await {
                let (child, b, bytes, from, to) = next?;
                self.send_range(child, b, Some(bytes), from, to, depth + 1, tx)
                    .await?;
            }
            Ok(())
        })
    }
}
