//! The CIDs this peer pinned for the cluster ("managed"): the only pins the
//! tracker ever unpins or reports unexpectedly unpinned. They live in a
//! small redb file of the tracker's own (the daemon passes
//! `<peer dir>/tracker/managed.redb`), so a pin released while the peer
//! was down is still unpinned after it restarts; without a path they live
//! in memory only (in-process tests).
//!
//! Writes are batched: changes collect in memory and are written in one
//! transaction per flush, run off the async runtime by the tracker; lookups
//! see unwritten changes first. The set is never held in memory as a
//! whole: the full comparison iterates a read snapshot in CID-bytes order.
//! This module must not decide what is managed (the tracker does).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};

use crate::manifest::CidKey;

/// CID bytes → nothing.
const MANAGED: TableDefinition<&[u8], ()> = TableDefinition::new("managed");

/// Page cache of the file: lookups are by key, the walk is sequential.
const CACHE_BYTES: usize = 16 << 20;

/// The managed-pins file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the tracker's managed-pins file {path}")]
pub struct ManagedError {
    /// The file (`memory` when none).
    pub path: String,
    /// Cause.
    #[source]
    pub source: redb::Error,
}

/// Unwritten changes: `true` = managed, `false` = no longer.
type Changes = HashMap<CidKey, bool>;

/// The managed set: a redb table plus changes not yet written.
pub(super) struct Managed {
    db: Arc<Database>,
    pending: Changes,
    /// Changes being written by a flush (still consulted by lookups).
    flushing: Option<Arc<Changes>>,
}

/// A flush to run off the runtime; hand its result to
/// [`Managed::flushed`].
pub(super) struct Flush {
    db: Arc<Database>,
    changes: Arc<Changes>,
}

impl Flush {
    /// Writes the changes in one durable transaction (blocking).
    pub(super) fn run(self) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(MANAGED)?;
            for (cid, managed) in self.changes.iter() {
                let key = cid.cid().to_bytes();
                if *managed {
                    table.insert(key.as_slice(), ())?;
                } else {
                    table.remove(key.as_slice())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

impl Managed {
    /// Opens (or creates) the file at `path`, creating its directory; in
    /// memory when `None`.
    pub(super) fn open(path: Option<&Path>) -> Result<Self, ManagedError> {
        let label = path.map_or_else(|| "memory".to_string(), |p| p.display().to_string());
        let err = |source: redb::Error| ManagedError {
            path: label.clone(),
            source,
        };
        let mut builder = Database::builder();
        builder.set_cache_size(CACHE_BYTES);
        let db = match path {
            Some(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| err(redb::Error::Io(e)))?;
                }
                builder.create(p).map_err(|e| err(e.into()))?
            }
            None => builder
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(|e| err(e.into()))?,
        };
        let txn = db.begin_write().map_err(|e| err(e.into()))?;
        txn.open_table(MANAGED).map_err(|e| err(e.into()))?;
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(Self {
            db: Arc::new(db),
            pending: Changes::new(),
            flushing: None,
        })
    }

    /// The default file under a peer directory.
    pub(super) fn default_path(peer_dir: &Path) -> PathBuf {
        peer_dir.join("tracker").join("managed.redb")
    }

    fn unwritten(&self, cid: &CidKey) -> Option<bool> {
        self.pending
            .get(cid)
            .or_else(|| self.flushing.as_ref().and_then(|f| f.get(cid)))
            .copied()
    }

    /// Whether each of `cids` is managed, from one read transaction. A
    /// page in CID-bytes order (as status pages are) is answered by one
    /// range scan rather than a lookup per CID.
    pub(super) fn contains_all<'a>(
        &self,
        cids: impl IntoIterator<Item = &'a CidKey>,
    ) -> Result<Vec<bool>, redb::Error> {
        let mut out = Vec::new();
        let mut ask: Vec<(usize, Vec<u8>)> = Vec::new();
        for (i, cid) in cids.into_iter().enumerate() {
            match self.unwritten(cid) {
                Some(m) => out.push(m),
                None => {
                    out.push(false);
                    ask.push((i, cid.cid().to_bytes()));
                }
            }
        }
        let (Some((_, first)), Some((_, last))) = (ask.first(), ask.last()) else {
            return Ok(out);
        };
        let table = self.db.begin_read()?.open_table(MANAGED)?;
        let mut done = 0;
        if ask.windows(2).all(|w| w[0].1 < w[1].1) {
            // Scan while the range is about as dense as the page; a sparse
            // page falls back to lookups for the rest.
            let budget = 4 * ask.len() + 64;
            let mut range = table.range(first.as_slice()..=last.as_slice())?;
            let mut current = range.next().transpose()?.map(|(k, _)| k.value().to_vec());
            let mut scanned = 0;
            for (i, key) in &ask {
                while current.as_ref().is_some_and(|c| c < key) && scanned < budget {
                    current = range.next().transpose()?.map(|(k, _)| k.value().to_vec());
                    scanned += 1;
                }
                if scanned >= budget {
                    break;
                }
                out[*i] = current.as_ref() == Some(key);
                done += 1;
            }
        }
        for (i, key) in &ask[done..] {
            out[*i] = table.get(key.as_slice())?.is_some();
        }
        Ok(out)
    }

    /// Whether `cid` is managed.
    #[cfg(test)]
    pub(super) fn contains(&self, cid: &CidKey) -> Result<bool, redb::Error> {
        Ok(self
            .contains_all(std::iter::once(cid))?
            .first()
            .copied()
            .unwrap_or(false))
    }

    /// Whether `cid` was recorded as managed but is not in the file yet:
    /// a crash now would forget it.
    pub(super) fn recording(&self, cid: &CidKey) -> bool {
        self.unwritten(cid) == Some(true)
    }

    /// Records that this peer pinned `cid` for the cluster.
    pub(super) fn insert(&mut self, cid: CidKey) {
        self.pending.insert(cid, true);
    }

    /// Records that `cid` is no longer pinned for the cluster.
    pub(super) fn remove(&mut self, cid: CidKey) {
        self.pending.insert(cid, false);
    }

    /// Changes not yet written (to bound them).
    pub(super) fn unwritten_len(&self) -> usize {
        self.pending.len() + self.flushing.as_ref().map_or(0, |f| f.len())
    }

    /// The CIDs whose change is not in the file yet.
    pub(super) fn unwritten_cids(&self) -> impl Iterator<Item = &CidKey> {
        self.pending
            .keys()
            .chain(self.flushing.iter().flat_map(|f| f.keys()))
    }

    /// A read snapshot of the file for [`table`] (unwritten changes are not
    /// in it).
    pub(super) fn snapshot(&self) -> Result<ReadTransaction, redb::Error> {
        Ok(self.db.begin_read()?)
    }

    /// The pending changes as a flush, unless one is running or there is
    /// nothing to write.
    pub(super) fn start_flush(&mut self) -> Option<Flush> {
        if self.flushing.is_some() || self.pending.is_empty() {
            return None;
        }
        let changes = Arc::new(std::mem::take(&mut self.pending));
        self.flushing = Some(Arc::clone(&changes));
        Some(Flush {
            db: Arc::clone(&self.db),
            changes,
        })
    }

    /// A flush ended: written, or (failed) its changes wait for the next
    /// one, behind anything changed since.
    pub(super) fn flushed(&mut self, ok: bool) {
        if let Some(f) = self.flushing.take()
            && !ok
        {
            for (cid, m) in f.iter() {
                self.pending.entry(*cid).or_insert(*m);
            }
        }
    }
}

/// The managed CIDs of `snapshot`, for [`keys`] (the table outlives the
/// iteration).
pub(super) fn table(
    snapshot: &ReadTransaction,
) -> Result<redb::ReadOnlyTable<&'static [u8], ()>, redb::Error> {
    Ok(snapshot.open_table(MANAGED)?)
}

/// Every managed CID's bytes in `table`, in CID-bytes order; a read error
/// ends the iteration and is left in `error`.
pub(super) fn keys<'t>(
    table: &'t redb::ReadOnlyTable<&'static [u8], ()>,
    error: &'t mut Option<redb::Error>,
) -> Result<impl Iterator<Item = Vec<u8>> + 't, redb::Error> {
    Ok(table.iter()?.map_while(move |item| match item {
        Ok((k, _)) => Some(k.value().to_vec()),
        Err(e) => {
            *error = Some(e.into());
            None
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::seq_cid;

    fn all(m: &Managed) -> Vec<Vec<u8>> {
        let snap = m.snapshot().unwrap();
        let t = table(&snap).unwrap();
        let mut error = None;
        let out = keys(&t, &mut error).unwrap().collect();
        assert!(error.is_none());
        out
    }

    #[test]
    fn changes_are_seen_before_and_after_they_are_written_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = Managed::default_path(dir.path());
        let mut m = Managed::open(Some(&path)).unwrap();
        m.insert(seq_cid(1));
        m.insert(seq_cid(2));
        assert!(m.contains(&seq_cid(1)).unwrap());
        assert!(all(&m).is_empty(), "not written yet");
        let flush = m.start_flush().unwrap();
        assert!(m.start_flush().is_none(), "one flush at a time");
        m.remove(seq_cid(2));
        assert!(!m.contains(&seq_cid(2)).unwrap(), "the newer change wins");
        assert!(m.contains(&seq_cid(1)).unwrap(), "seen while being written");
        flush.run().unwrap();
        m.flushed(true);
        assert!(m.contains(&seq_cid(1)).unwrap());
        m.start_flush().unwrap().run().unwrap();
        m.flushed(true);
        assert_eq!(all(&m), vec![seq_cid(1).cid().to_bytes()]);
        drop(m);
        let m = Managed::open(Some(&path)).unwrap();
        assert_eq!(
            m.contains_all([&seq_cid(1), &seq_cid(2)]).unwrap(),
            vec![true, false]
        );
    }

    #[test]
    fn a_page_in_cid_order_reads_as_lookups_do() {
        let mut m = Managed::open(None).unwrap();
        let mut cids: Vec<CidKey> = (0..300).map(seq_cid).collect();
        cids.sort_by_key(|c| c.cid().to_bytes());
        for c in cids.iter().step_by(3) {
            m.insert(*c);
        }
        m.start_flush().unwrap().run().unwrap();
        m.flushed(true);
        m.remove(cids[3]);
        let one_by_one: Vec<bool> = cids.iter().map(|c| m.contains(c).unwrap()).collect();
        assert_eq!(one_by_one.iter().filter(|b| **b).count(), 99);
        assert_eq!(
            m.contains_all(&cids).unwrap(),
            one_by_one,
            "dense, in order"
        );
        let sparse = [cids[0], cids[1], cids[299]];
        assert_eq!(
            m.contains_all(&sparse).unwrap(),
            vec![true, false, false],
            "sparse: the scan gives up, lookups answer"
        );
        let mut shuffled = cids.clone();
        shuffled.reverse();
        let mut want = one_by_one.clone();
        want.reverse();
        assert_eq!(m.contains_all(&shuffled).unwrap(), want, "out of order");
    }

    #[test]
    fn a_pin_is_recording_until_a_flush_has_written_it() {
        let mut m = Managed::open(None).unwrap();
        let c = seq_cid(1);
        m.insert(c);
        assert!(m.recording(&c));
        let f = m.start_flush().unwrap();
        assert!(m.recording(&c), "while its flush runs");
        f.run().unwrap();
        m.flushed(true);
        assert!(!m.recording(&c), "written");
        m.remove(c);
        m.insert(c);
        let _lost = m.start_flush().unwrap();
        m.flushed(false);
        assert!(m.recording(&c), "a failed flush leaves it unwritten");
        m.remove(c);
        assert!(!m.recording(&c), "a release is not a record");
    }

    #[test]
    fn a_failed_flush_is_retried_without_undoing_newer_changes() {
        let mut m = Managed::open(None).unwrap();
        m.insert(seq_cid(1));
        m.insert(seq_cid(2));
        let _lost = m.start_flush().unwrap();
        m.remove(seq_cid(1));
        m.flushed(false);
        assert_eq!(m.unwritten_len(), 2);
        assert!(!m.contains(&seq_cid(1)).unwrap());
        m.start_flush().unwrap().run().unwrap();
        m.flushed(true);
        assert_eq!(all(&m), vec![seq_cid(2).cid().to_bytes()]);
    }
}
