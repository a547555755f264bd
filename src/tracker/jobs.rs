//! The comparisons the tracker runs in the background, so that its actor
//! keeps answering statuses and finishing operations meanwhile: the full
//! comparison (list the node's pins, then merge-walk them with the state,
//! read a page at a time, and a snapshot of the managed set) and the read
//! of the changed pins (the state's change feed). They only read, and
//! report to the actor by message; the actor decides.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::managed;
use super::walk::{Finding, Merge, SortedCids, Wanted};
use super::wanted_here;
use crate::consensus::StateStore;
use crate::ipfs::{IpfsBackend, IpfsError, PinLsFilter};
use crate::manifest::{CidKey, ReplicationFactors};

/// Findings per message from a full comparison.
const FINDINGS_CHUNK: usize = 1024;
/// Changes compared per incremental sync.
const CHANGES_PAGE: usize = 8192;
/// Pins read from the state per read transaction in a full comparison
/// (unit tests walk tiny pages, so that their walks cross pages).
const STATE_PAGE: usize = if cfg!(test) { 2 } else { 4096 };

/// What a background comparison reports to the actor.
pub(super) enum JobMsg {
    /// The node's pins were listed (how many), or why not.
    Listed(Result<u64, String>),
    /// Part of a full comparison's findings.
    Findings(Vec<Finding>),
    /// The full comparison ended; the change feed continues at `cursor`.
    Walked { cursor: u64 },
    /// The changed pins and what the state wants of them; the feed
    /// continues at `next`; `more` are waiting.
    Changed {
        facts: Vec<(CidKey, Option<Wanted>)>,
        next: u64,
        more: bool,
    },
    /// The change feed no longer reaches back to our position.
    Truncated,
    /// The comparison failed.
    Failed(String),
}

/// What a job reads the state as: peer `me`, the cluster's default
/// replication, the time of the comparison.
pub(super) struct Reader {
    pub store: StateStore,
    pub me: String,
    pub default: ReplicationFactors,
    pub now: i64,
}

/// Reads up to a page of the pins changed since `cursor`, plus `recheck`,
/// with what the state wants of each, and reports them.
pub(super) async fn read_changes(
    r: Reader,
    cursor: u64,
    recheck: Vec<CidKey>,
    tx: mpsc::Sender<JobMsg>,
) {
    let read = move || -> Result<JobMsg, String> {
        let page = r
            .store
            .changes_since(cursor, CHANGES_PAGE)
            .map_err(|e| e.to_string())?;
        if page.truncated {
            return Ok(JobMsg::Truncated);
        }
        let more = page.cids.len() >= CHANGES_PAGE;
        let mut seen = HashSet::new();
        let cids: Vec<CidKey> = page
            .cids
            .into_iter()
            .chain(recheck)
            .filter(|cid| seen.insert(*cid))
            .collect();
        let pins = r.store.get_many(&cids).map_err(|e| e.to_string())?;
        let facts = cids
            .into_iter()
            .zip(pins)
            .map(|(cid, pin)| {
                (
                    cid,
                    pin.and_then(|p| wanted_here(&p, &r.me, r.default, r.now)),
                )
            })
            .collect();
        Ok(JobMsg::Changed {
            facts,
            next: page.next_seq,
            more,
        })
    };
    let msg = match tokio::task::spawn_blocking(read).await {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => JobMsg::Failed(e),
        Err(e) => JobMsg::Failed(e.to_string()),
    };
    let _ = tx.send(msg).await;
}

/// A full comparison, run in the background: list the node, then walk the
/// state and the managed snapshot against that list.
pub(super) struct FullWalk {
    pub reader: Reader,
    pub backend: Arc<dyn IpfsBackend>,
    pub tx: mpsc::Sender<JobMsg>,
    pub cancel: CancellationToken,
}

impl FullWalk {
    pub(super) async fn run(self, snapshot: redb::ReadTransaction) {
        let listed = tokio::select! {
            l = list_node(self.backend.as_ref()) => l,
            _ = self.cancel.cancelled() => return,
        };
        let tx = self.tx.clone();
        let msg = match tokio::task::spawn_blocking(move || self.walk(listed, &snapshot)).await {
            Ok(Ok(cursor)) => JobMsg::Walked { cursor },
            Ok(Err(e)) => JobMsg::Failed(e),
            Err(e) => JobMsg::Failed(e.to_string()),
        };
        let _ = tx.send(msg).await;
    }

    /// The merge walk (blocking); returns the change feed's position
    /// before the state was read.
    fn walk(
        self,
        listed: Result<SortedCids, IpfsError>,
        snapshot: &redb::ReadTransaction,
    ) -> Result<u64, String> {
        let held = match listed {
            Ok(mut held) => {
                held.finish();
                self.send(JobMsg::Listed(Ok(held.len() as u64)))?;
                Some(held)
            }
            Err(e) => {
                self.send(JobMsg::Listed(Err(e.to_string())))?;
                None
            }
        };
        let cursor = self
            .reader
            .store
            .changes_head()
            .map_err(|e| e.to_string())?;
        let table = managed::table(snapshot).map_err(|e| e.to_string())?;
        let mut managed_error = None;
        let managed = managed::keys(&table, &mut managed_error).map_err(|e| e.to_string())?;
        let mut merge = Merge::new(held.as_ref().map(SortedCids::iter), managed);
        let mut chunk = Chunk {
            list: Vec::with_capacity(FINDINGS_CHUNK),
            tx: &self.tx,
            alive: true,
        };
        // The state a page at a time: no read transaction spans the walk.
        // Pages read later may see newer pins; whatever changed after
        // `cursor` is compared again from the change feed afterwards.
        let r = &self.reader;
        let mut after = None;
        while chunk.alive && !self.cancel.is_cancelled() {
            let page = r
                .store
                .pins_after(after.as_ref(), STATE_PAGE)
                .map_err(|e| e.to_string())?;
            let Some(last) = page.last() else { break };
            after = Some(last.cid);
            let full = page.len() >= STATE_PAGE;
            for pin in page {
                if let Some(w) = wanted_here(&pin, &r.me, r.default, r.now) {
                    let key = pin.cid.cid().to_bytes();
                    merge.wanted(&key, pin.cid, w, &mut |f| chunk.push(f));
                }
            }
            if !full {
                break;
            }
        }
        if !chunk.alive || self.cancel.is_cancelled() {
            return Err("the tracker stopped".into());
        }
        merge.finish(&mut |f| chunk.push(f));
        if let Some(e) = managed_error {
            return Err(e.to_string());
        }
        chunk.send()?;
        Ok(cursor)
    }

    fn send(&self, msg: JobMsg) -> Result<(), String> {
        self.tx
            .blocking_send(msg)
            .map_err(|_| "the tracker stopped".to_string())
    }
}

/// Findings on their way to the actor, a chunk at a time.
struct Chunk<'a> {
    list: Vec<Finding>,
    tx: &'a mpsc::Sender<JobMsg>,
    alive: bool,
}

impl Chunk<'_> {
    fn push(&mut self, f: Finding) {
        self.list.push(f);
        if self.list.len() >= FINDINGS_CHUNK && self.send().is_err() {
            self.alive = false;
        }
    }

    fn send(&mut self) -> Result<(), String> {
        if self.list.is_empty() || !self.alive {
            return Ok(());
        }
        let list = std::mem::replace(&mut self.list, Vec::with_capacity(FINDINGS_CHUNK));
        self.tx
            .blocking_send(JobMsg::Findings(list))
            .map_err(|_| "the tracker stopped".to_string())
    }
}

/// The node's recursive and direct pins (`all` would walk every pinned DAG
/// to list indirect blocks, which the tracker never needs), unsorted.
async fn list_node(backend: &dyn IpfsBackend) -> Result<SortedCids, IpfsError> {
    use futures::StreamExt;
    let mut out = SortedCids::default();
    for filter in [PinLsFilter::Recursive, PinLsFilter::Direct] {
        let mut stream = backend.pin_ls(filter);
        while let Some(item) = stream.next().await {
            out.push(&item?.cid);
        }
    }
    Ok(out)
}
