//! Depth-limited pins (a shard of a sharded DAG, [`PinOpts::max_depth`])
//! on Kubo, which has no such pin: the root and every block the pin keeps
//! ([`pin_follows`]) are pinned `direct`, the blocks first and the root
//! last, so a root pinned means its whole shard is. The nodes whose links
//! are followed are read with `block/get` (Kubo fetches what it lacks).
//!
//! Unpinning cannot be told the depth (the pin may be gone from the state):
//! when a DAG-CBOR root pinned `direct` is unpinned, the direct pins of the
//! blocks a shard of at most [`SHARD_MAX_DEPTH`] keeps are removed with it,
//! reading the nodes the node still has (`offline`). A cluster DAG (also a
//! direct DAG-CBOR pin) is only released with its shards, so this removes
//! nothing another pin still needs; a user's direct pin of a block inside
//! a released shard is removed with it (a known limit).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use cid::Cid;
use tokio::sync::mpsc;

use super::KuboClient;
use super::wire::{PinsOut, says_not_pinned};
use crate::ipfs::dagcbor::DAG_CBOR;
use crate::ipfs::{IpfsError, PinOpts, dagpb, pin_follows};
use crate::manifest::CidKey;

/// CIDs per `pin/add` or `pin/rm` call.
const PIN_BATCH: usize = 256;
/// The deepest shard pin (IPFS Cluster's: an indirect root, leaf shard
/// nodes, their blocks).
const SHARD_MAX_DEPTH: u32 = 2;

impl KuboClient {
    /// The block `cid`, from the node only when `offline`.
    async fn block_get(
        &self,
        cid: &Cid,
        timeout: Duration,
        offline: bool,
    ) -> Result<Vec<u8>, IpfsError> {
        let arg = cid.to_string();
        let params = [("arg", arg.as_str()), ("offline", super::bool_str(offline))];
        let body = self.call_bytes("block/get", &params, timeout).await?;
        Ok(body.to_vec())
    }

    /// Every block a pin of `root` reaching `limit` links keeps, root
    /// first, breadth first; each node followed is read (`offline`: from
    /// the node only, a missing one ends that branch).
    async fn depth_blocks(
        &self,
        root: Cid,
        limit: Option<u32>,
        timeout: Duration,
        offline: bool,
    ) -> Result<Vec<Cid>, IpfsError> {
        let mut out = Vec::new();
        let mut seen = HashSet::from([root]);
        let mut queue = VecDeque::from([(root, 0u32)]);
        while let Some((c, depth)) = queue.pop_front() {
            out.push(c);
            if !pin_follows(limit, root.codec(), &c, depth) {
                continue;
            }
            let data = match self.block_get(&c, timeout, offline).await {
                Ok(d) => d,
                Err(_) if offline => continue,
                Err(e) => return Err(e),
            };
            let children = dagpb::links(&c, &data).map_err(|e| IpfsError::Unsupported {
                what: format!("pinning {root}: block {c}: {e}"),
            })?;
            for child in children {
                if seen.insert(child) {
                    queue.push_back((child, depth + 1));
                }
            }
        }
        Ok(out)
    }

    /// `pin/add` (direct) or `pin/rm` of `cids`, a batch at a time; a
    /// failed batch is retried one CID at a time, where `tolerated` says
    /// which failures do not matter.
    async fn direct_pins(
        &self,
        endpoint: &str,
        cids: &[Cid],
        timeout: Duration,
        tolerated: fn(&IpfsError) -> bool,
        progress: Option<&mpsc::Sender<u64>>,
    ) -> Result<(), IpfsError> {
        let mut done = 0u64;
        for chunk in cids.chunks(PIN_BATCH) {
            let args: Vec<String> = chunk.iter().map(ToString::to_string).collect();
            let mut params: Vec<(&str, &str)> = args.iter().map(|a| ("arg", a.as_str())).collect();
            params.push(("recursive", "false"));
            let batch: Result<PinsOut, _> = self.call(endpoint, &params, timeout).await;
            if batch.is_err() {
                for arg in &args {
                    let one = [("arg", arg.as_str()), ("recursive", "false")];
                    match self.call::<PinsOut>(endpoint, &one, timeout).await {
                        Ok(_) => {}
                        Err(e) if tolerated(&e) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            done += chunk.len() as u64;
            if let Some(p) = progress {
                let _ = p.try_send(done);
            }
        }
        Ok(())
    }

    /// Pins `root` and the blocks `opts.max_depth` links below it, each
    /// `direct` (see the module docs).
    pub(super) async fn pin_depth(
        &self,
        root: CidKey,
        opts: &PinOpts,
        progress: Option<mpsc::Sender<u64>>,
    ) -> Result<(), IpfsError> {
        let timeout = opts.progress_timeout;
        let blocks = self
            .depth_blocks(*root.cid(), opts.limit(), timeout, false)
            .await?;
        // A block some other pin holds recursively is kept already.
        let held = |e: &IpfsError| e.to_string().contains("already pinned recursively");
        let (first, rest) = blocks.split_at(1);
        self.direct_pins("pin/add", rest, timeout, held, progress.as_ref())
            .await?;
        self.direct_pins("pin/add", first, timeout, held, None)
            .await
    }

    /// After `root`'s pin was removed: whether it was a direct pin of a
    /// DAG-CBOR node, whose blocks' direct pins go with it.
    pub(super) async fn was_depth_pin(&self, root: &CidKey) -> bool {
        if root.cid().codec() != DAG_CBOR {
            return false;
        }
        let arg = root.to_string();
        let params = [("arg", arg.as_str()), ("type", "direct")];
        self.call::<serde_json::Value>("pin/ls", &params, self.call_timeout)
            .await
            .is_ok()
    }

    /// Removes the direct pins of the blocks a shard pin of `root` keeps
    /// (not `root`'s own), reading the nodes the node still holds.
    pub(super) async fn unpin_depth_blocks(&self, root: &CidKey) -> Result<(), IpfsError> {
        let blocks = self
            .depth_blocks(*root.cid(), Some(SHARD_MAX_DEPTH), self.call_timeout, true)
            .await?;
        let gone =
            |e: &IpfsError| says_not_pinned(e) || e.to_string().contains("pinned recursively");
        self.direct_pins("pin/rm", &blocks[1..], self.call_timeout, gone, None)
            .await
    }
}
