//! The blocks of a DAG and their sizes, for sharding content that is
//! already in IPFS (a PinSet's `shard:`, docs/sharding.md): a depth-first
//! walk from the root in link order, reading each block that can have
//! links (from the store, else through Bitswap, as a read does: nothing is
//! stored) and taking a raw block's size from the link that names it, so
//! the leaves of a raw-leaves DAG are never fetched. It must not store,
//! pin or decide how blocks are grouped.

use cid::Cid;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use super::EmbeddedNode;
use crate::ipfs::{IpfsError, dagpb};

/// Blocks handed over ahead of the consumer.
const QUEUE: usize = 1024;
/// Links below the root a walk follows at most (a balanced file DAG of
/// 1 TiB is 4 levels; HAMT directories add a few).
const MAX_DEPTH: usize = 64;

impl EmbeddedNode {
    /// Every block of the DAG under `root` once (a block linked twice is
    /// listed the first time), with its size in bytes, parents before
    /// their children, children in link order.
    pub(super) fn layout_stream(
        &self,
        root: Cid,
    ) -> BoxStream<'static, Result<(Cid, u64), IpfsError>> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let node = self.clone();
        // Driven as the stream is polled (no task of its own), like `cat`.
        let walk = async move {
            if let Err(e) = node.layout(root, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        };
        let drive = walk
            .into_stream()
            .filter_map(|()| futures::future::ready(None));
        futures::stream::select(tokio_stream::wrappers::ReceiverStream::new(rx), drive).boxed()
    }

    async fn layout(
        &self,
        root: Cid,
        tx: &mpsc::Sender<Result<(Cid, u64), IpfsError>>,
    ) -> Result<(), IpfsError> {
        let mut seen = std::collections::HashSet::new();
        // (block, size when a link told it, depth)
        let mut todo: Vec<(Cid, Option<u64>, usize)> = vec![(root, None, 0)];
        while let Some((cid, told, depth)) = todo.pop() {
            if !seen.insert(cid) {
                continue;
            }
            if cid.hash().code() == 0 {
                // An identity CID carries its block (nothing stored), but
                // an inlined node may still link stored blocks.
                let links = dagpb::links(&cid, &[]).map_err(|e| IpfsError::Unsupported {
                    what: format!("reading block {cid}: {e}"),
                })?;
                todo.extend(links.into_iter().rev().map(|c| (c, None, depth + 1)));
                continue;
            }
            let size = if cid.codec() == dagpb::RAW && told.is_some() {
                told.unwrap_or_default()
            } else {
                let block = self.read_block(cid).await?;
                let links = child_links(&cid, &block)?;
                if !links.is_empty() && depth >= MAX_DEPTH {
                    return Err(IpfsError::Unsupported {
                        what: format!("{root}: a DAG deeper than {MAX_DEPTH} links"),
                    });
                }
                todo.extend(links.into_iter().rev().map(|(c, s)| (c, s, depth + 1)));
                block.len() as u64
            };
            if tx.send(Ok((cid, size))).await.is_err() {
                return Ok(()); // the consumer went away
            }
        }
        Ok(())
    }
}

/// The links of a block with the size each link records (dag-pb `Tsize`,
/// exact for a raw leaf), none recorded for other codecs.
fn child_links(cid: &Cid, block: &[u8]) -> Result<Vec<(Cid, Option<u64>)>, IpfsError> {
    let bad = |e: dagpb::DagPbError| IpfsError::Unsupported {
        what: format!("reading block {cid}: {e}"),
    };
    if cid.codec() == dagpb::DAG_PB {
        let node = dagpb::decode(block).map_err(bad)?;
        return Ok(node.links.into_iter().map(|l| (l.hash, l.tsize)).collect());
    }
    Ok(dagpb::links(cid, block)
        .map_err(bad)?
        .into_iter()
        .map(|c| (c, None))
        .collect())
}
