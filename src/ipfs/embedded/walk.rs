//! The embedded node's pin: a breadth-first walk of the DAG under a root,
//! reading the blocks it holds in batches (one read transaction per
//! [`LOCAL_BATCH`] blocks) and fetching the others through Bitswap with a
//! window of blocks in flight sized by the blocks seen so far (many small
//! blocks, or fewer large ones: about [`WINDOW_BYTES`] in flight), writing
//! fetched blocks in batches without an fsync each, and recording the pin
//! in a durable transaction at the end (which makes the blocks durable
//! too). Children are visited from a random offset, so two peers pinning
//! the same DAG at once fetch different parts first and can serve each
//! other. It must not decide what to pin or whom to ask (Bitswap does).

use std::collections::{HashMap, HashSet, VecDeque};

use cid::Cid;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::Multiaddr;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::store::{BlockStore, StoreError, StoredPin};
use super::{EmbeddedNode, ORIGIN_DIAL_TIMEOUT, WRITE_BATCH_BLOCKS, WRITE_BATCH_BYTES, mh_of};
use crate::ipfs::{IpfsError, PinKind, PinOpts, PinnedCid, pin_follows as follows};
use crate::manifest::CidKey;

/// Blocks in flight from peers at once, per pin: between these bounds, as
/// many as make about [`WINDOW_BYTES`] at the average block size so far.
const WINDOW_MIN: usize = 32;
const WINDOW_MAX: usize = 512;
const WINDOW_BYTES: u64 = 16 << 20;
/// Blocks looked up in the store per read transaction.
const LOCAL_BATCH: usize = 256;
/// A public node's pin that received nothing for this long looks up
/// providers of its root.
const LOOKUP_DELAY: std::time::Duration = std::time::Duration::from_millis(500);
/// Between two lookups of one stalled pin.
const LOOKUP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(20);

/// Marks the blocks the pin on `root` keeps that the store holds, breadth
/// first (a block met twice counts at its shallowest). `live` maps each
/// block kept to whether a whole-DAG walk went through it (then nothing
/// below it needs walking again); `on_new` sees each block the first time
/// it becomes live.
fn mark(
    s: &BlockStore,
    root: Cid,
    limit: Option<u32>,
    live: &mut HashMap<Vec<u8>, bool>,
    on_new: &mut dyn FnMut(&Cid),
) -> Result<(), StoreError> {
    let codec = root.codec();
    let mut local: HashSet<Vec<u8>> = HashSet::new();
    let mut queue = VecDeque::from([(root, 0u32)]);
    while let Some((c, depth)) = queue.pop_front() {
        let mh = mh_of(&c);
        let walk_on = match live.get_mut(&mh) {
            Some(true) => false,
            Some(whole) => {
                if limit.is_none() {
                    *whole = true;
                }
                local.insert(mh.clone())
            }
            None => {
                on_new(&c);
                live.insert(mh.clone(), limit.is_none());
                local.insert(mh.clone())
            }
        };
        if !walk_on || !follows(limit, codec, &c, depth) {
            continue;
        }
        if let Some(block) = s.get(&mh)? {
            // A block we cannot traverse keeps only itself.
            let children = crate::ipfs::dagpb::links(&c, &block).unwrap_or_default();
            queue.extend(children.into_iter().map(|child| (child, depth + 1)));
        }
    }
    Ok(())
}

/// Every block some pin keeps (multihash → walked as part of a whole
/// DAG), reading the pins in pages; `on_new` sees each block once.
pub(super) fn live_blocks(
    s: &BlockStore,
    on_new: &mut dyn FnMut(&Cid),
) -> Result<HashMap<Vec<u8>, bool>, StoreError> {
    let mut live = HashMap::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = s.pins_page(after.as_deref(), super::PIN_LS_PAGE)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (key, pin) in page {
            if let Ok(cid) = Cid::try_from(key.as_slice()) {
                mark(s, cid, pin.limit(), &mut live, on_new)?;
            }
        }
    }
    Ok(live)
}

/// The blocks recursive and depth-limited pins keep below their roots
/// (the roots themselves are listed as pins), as `pin ls --type=indirect`.
pub(super) fn indirect_pins(s: &BlockStore) -> Result<Vec<PinnedCid>, StoreError> {
    let mut roots = HashSet::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = s.pins_page(after.as_deref(), super::PIN_LS_PAGE)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        roots.extend(
            page.into_iter()
                .filter_map(|(key, _)| Cid::try_from(key.as_slice()).ok())
                .map(|c| mh_of(&c)),
        );
    }
    let mut out = Vec::new();
    live_blocks(s, &mut |c| {
        if !roots.contains(&mh_of(c))
            && let Ok(cid) = CidKey::from_cid(*c)
        {
            out.push(PinnedCid {
                cid,
                kind: PinKind::Indirect,
            });
        }
    })?;
    Ok(out)
}

/// One walk's progress.
struct Walk<'a> {
    root: &'a CidKey,
    /// Links below the root to follow (see [`pin_follows`](crate::ipfs::pin_follows)).
    limit: Option<u32>,
    seen: HashSet<Vec<u8>>,
    /// Blocks to visit, with their depth below the root.
    queue: VecDeque<(Cid, u32)>,
    /// Fetched blocks not written yet, and their bytes.
    batch: Vec<(Vec<u8>, Vec<u8>)>,
    batch_bytes: usize,
    /// Blocks walked, and the bytes of those.
    count: u64,
    bytes: u64,
    /// Where each node's children start (see the module docs).
    offset: usize,
    progress: Option<mpsc::Sender<u64>>,
}

impl Walk<'_> {
    fn window(&self) -> usize {
        let avg = self.bytes.checked_div(self.count).unwrap_or(0).max(1);
        usize::try_from(WINDOW_BYTES / avg)
            .unwrap_or(WINDOW_MAX)
            .clamp(WINDOW_MIN, WINDOW_MAX)
    }

    /// Takes one block: queues its children, keeps it for writing when it
    /// was fetched.
    fn take(
        &mut self,
        cid: Cid,
        depth: u32,
        data: Vec<u8>,
        fetched: bool,
    ) -> Result<(), IpfsError> {
        self.count += 1;
        self.bytes += data.len() as u64;
        if let Some(p) = &self.progress {
            let _ = p.try_send(self.count);
        }
        if follows(self.limit, self.root.cid().codec(), &cid, depth) {
            let mut children =
                crate::ipfs::dagpb::links(&cid, &data).map_err(|e| IpfsError::Unsupported {
                    what: format!("pinning {}: block {cid}: {e}", self.root),
                })?;
            if !children.is_empty() {
                let at = self.offset % children.len();
                children.rotate_left(at);
            }
            for child in children {
                if self.seen.insert(mh_of(&child)) {
                    self.queue.push_back((child, depth + 1));
                }
            }
        }
        if fetched && cid.hash().code() != 0 {
            self.batch_bytes += data.len();
            self.batch.push((mh_of(&cid), data));
        }
        Ok(())
    }

    fn batch_full(&self) -> bool {
        self.batch.len() >= WRITE_BATCH_BLOCKS || self.batch_bytes >= WRITE_BATCH_BYTES
    }
}

impl EmbeddedNode {
    /// Writes the fetched blocks of `walk` (not durable yet: the pin's
    /// commit makes them so).
    async fn flush(&self, walk: &mut Walk<'_>) -> Result<(), IpfsError> {
        if walk.batch.is_empty() {
            return Ok(());
        }
        let blocks = std::mem::take(&mut walk.batch);
        walk.batch_bytes = 0;
        self.blocking(move |s| s.put_many_lazy(&blocks)).await
    }

    /// The block `cid` from peers.
    async fn fetch(&self, cid: Cid, depth: u32) -> Result<(Cid, u32, Vec<u8>), IpfsError> {
        match self.inner.bitswap.fetch(cid).await {
            Some(data) => Ok((cid, depth, data)),
            None => Err(IpfsError::Stopped),
        }
    }

    /// Pins `root` (recursively: every block under it; or as deep as
    /// `opts.max_depth`, see [`pin_follows`](crate::ipfs::pin_follows)), fetching what is missing; fails
    /// when no block arrives for `opts.progress_timeout`.
    pub(super) async fn pin_dag(
        &self,
        root: CidKey,
        opts: PinOpts,
        progress: Option<mpsc::Sender<u64>>,
    ) -> Result<(), IpfsError> {
        let root_cid = *root.cid();
        let key = root_cid.to_bytes();
        let pin = StoredPin::of_limit(opts.limit());
        let k = key.clone();
        let current = self.blocking(move |s| s.stored_pin(&k)).await?;
        if current.is_some_and(|c| c.covers(pin)) {
            return Ok(());
        }
        // Best effort, all at once: an unreachable origin costs at most
        // one dial timeout, and the content may come from elsewhere.
        let dials = opts
            .origins
            .iter()
            .filter_map(|o| o.parse::<Multiaddr>().ok())
            .map(|addr| tokio::time::timeout(ORIGIN_DIAL_TIMEOUT, self.connect(addr)));
        futures::future::join_all(dials).await;
        let mut protection = self.protection();
        let mut walk = Walk {
            root: &root,
            limit: pin.limit(),
            seen: HashSet::from([mh_of(&root_cid)]),
            queue: VecDeque::from([(root_cid, 0)]),
            batch: Vec::new(),
            batch_bytes: 0,
            count: 0,
            bytes: 0,
            offset: rand::random::<u32>() as usize,
            progress,
        };
        let mut inflight = FuturesUnordered::new();
        let started = Instant::now();
        let mut last = started;
        // On the public network, a pin that gets nothing from the peers it
        // is connected to looks its root's providers up, and again while
        // it stays stalled.
        let routed = self.inner.swarm.is_public();
        let mut lookup_at = started + LOOKUP_DELAY;
        loop {
            // Held blocks need no window; fetches do.
            while inflight.len() < walk.window() && !walk.queue.is_empty() {
                let n = walk
                    .queue
                    .len()
                    .min(LOCAL_BATCH)
                    .min(walk.window() - inflight.len());
                let cids: Vec<(Cid, u32)> = walk.queue.drain(..n).collect();
                let mhs: Vec<Vec<u8>> = cids.iter().map(|(c, _)| mh_of(c)).collect();
                // Protected before they are read or written: gc must not
                // sweep them between our read and our pin.
                for mh in &mhs {
                    protection.add(mh.clone());
                }
                let held = self.blocking(move |s| s.get_many(&mhs)).await?;
                for ((cid, depth), data) in cids.into_iter().zip(held) {
                    match data {
                        Some(d) => {
                            last = Instant::now();
                            walk.take(cid, depth, d, false)?;
                        }
                        None => inflight.push(self.fetch(cid, depth)),
                    }
                }
            }
            if inflight.is_empty() {
                break;
            }
            let next = tokio::select! {
                r = inflight.next() => r,
                _ = tokio::time::sleep_until(lookup_at), if routed => {
                    if last.elapsed() >= LOOKUP_DELAY {
                        let node = self.clone();
                        tokio::spawn(async move { node.find_providers(&root_cid).await });
                        lookup_at = Instant::now() + LOOKUP_INTERVAL;
                    } else {
                        lookup_at = last + LOOKUP_DELAY;
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(last + opts.progress_timeout) => {
                    // Keep what arrived: a retry need not fetch it again.
                    let _ = self.flush(&mut walk).await;
                    return Err(IpfsError::Timeout {
                        operation: format!("pin of {root}"),
                        stalled_for: opts.progress_timeout,
                    });
                }
            };
            let Some(result) = next else { continue };
            let (cid, depth, data) = match result {
                Ok(r) => r,
                Err(e) => {
                    let _ = self.flush(&mut walk).await;
                    return Err(e);
                }
            };
            last = Instant::now();
            walk.take(cid, depth, data, true)?;
            if walk.batch_full() {
                self.flush(&mut walk).await?;
            }
        }
        self.flush(&mut walk).await?;
        // Durable: the blocks written lazily above become durable with it.
        self.blocking(move |s| s.pin_stored(&key, pin)).await?;
        drop(protection);
        self.inner.swarm.provide(&root_cid).await;
        tracing::debug!(
            %root,
            blocks = walk.count,
            bytes = walk.bytes,
            secs = started.elapsed().as_secs_f64(),
            unwanted_blocks_so_far = self.rejected_blocks(),
            "pinned"
        );
        Ok(())
    }
}
