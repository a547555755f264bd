//! The embedded node's disk: blocks and pins in one redb file
//! (`<peer dir>/ipfs/blocks.redb`).
//!
//! Blocks are keyed by multihash (as Kubo's blockstore is), so a CIDv0 and
//! a CIDv1 of the same dag-pb block share one entry; pins are keyed by the
//! CIDv1 bytes. A running byte total is kept in the same transactions, so
//! `repo stat` is O(1). All calls are blocking: async callers use
//! `spawn_blocking`. It must not hash, fetch or decide what to keep: the
//! node verifies blocks before they get here and computes the live set for
//! gc.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::ipfs::PinKind;

const BLOCKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blocks");
const PINS: TableDefinition<&[u8], u8> = TableDefinition::new("pins");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const BYTES_KEY: &str = "bytes";

const RECURSIVE: u8 = 1;
const DIRECT: u8 = 2;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[error("blockstore failed")]
pub struct StoreError(#[source] pub redb::Error);

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(e: E) -> Self {
        StoreError(e.into())
    }
}

/// What [`BlockStore::lookup_many`] found of one block.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Held {
    /// Not stored.
    Missing,
    /// Stored (its bytes were not asked for).
    Present,
    /// Stored: its bytes.
    Data(Vec<u8>),
}

/// Blocks and pins on disk. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct BlockStore {
    db: Arc<Database>,
}

fn kind_of(v: u8) -> PinKind {
    if v == DIRECT {
        PinKind::Direct
    } else {
        PinKind::Recursive
    }
}

/// redb's page cache for the block store.
const BLOCK_CACHE_BYTES: usize = 64 << 20;

impl BlockStore {
    /// Opens (or creates) the store at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        // redb's default cache is 1 GiB; blocks are read once per transfer,
        // so a small cache keeps RSS independent of the content held.
        let db = Database::builder()
            .set_cache_size(BLOCK_CACHE_BYTES)
            .create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(BLOCKS)?;
        tx.open_table(PINS)?;
        tx.open_table(META)?;
        tx.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    /// The block with multihash `mh`, if stored.
    pub(crate) fn get(&self, mh: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(BLOCKS)?;
        Ok(t.get(mh)?.map(|v| v.value().to_vec()))
    }

    /// The size of the block with multihash `mh`, if stored.
    pub(crate) fn size(&self, mh: &[u8]) -> Result<Option<u64>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(BLOCKS)?;
        Ok(t.get(mh)?.map(|v| v.value().len() as u64))
    }

    /// The blocks with multihashes `mhs`, in order, read in one transaction.
    pub(crate) fn get_many(&self, mhs: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(BLOCKS)?;
        mhs.iter()
            .map(|mh| Ok(t.get(mh.as_slice())?.map(|v| v.value().to_vec())))
            .collect()
    }

    /// For each (multihash, data wanted): the block's bytes when wanted,
    /// else whether it is held; one read transaction for all.
    pub(crate) fn lookup_many(&self, keys: &[(Vec<u8>, bool)]) -> Result<Vec<Held>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(BLOCKS)?;
        keys.iter()
            .map(|(mh, data)| {
                Ok(match t.get(mh.as_slice())? {
                    None => Held::Missing,
                    Some(v) if *data => Held::Data(v.value().to_vec()),
                    Some(_) => Held::Present,
                })
            })
            .collect()
    }

    /// Stores `blocks` (multihash, data) in one durable transaction; blocks
    /// already present are left as they are.
    #[cfg(test)]
    pub(crate) fn put_many(&self, blocks: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StoreError> {
        self.put(blocks, redb::Durability::Immediate)
    }

    /// [`Self::put_many`] without waiting for the disk: the blocks become
    /// durable with the next durable commit (a pin, [`Self::sync`], another
    /// `put_many`). Losing them in a crash loses nothing acknowledged: the
    /// walk that fetched them has not pinned yet. Saves an fsync per batch.
    pub(crate) fn put_many_lazy(&self, blocks: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StoreError> {
        self.put(blocks, redb::Durability::None)
    }

    /// Makes every earlier commit durable.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.commit()?;
        Ok(())
    }

    fn put(
        &self,
        blocks: &[(Vec<u8>, Vec<u8>)],
        durability: redb::Durability,
    ) -> Result<(), StoreError> {
        if blocks.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_write()?;
        tx.set_durability(durability)?;
        {
            let mut t = tx.open_table(BLOCKS)?;
            let mut added = 0u64;
            for (mh, data) in blocks {
                if t.get(mh.as_slice())?.is_none() {
                    t.insert(mh.as_slice(), data.as_slice())?;
                    added += data.len() as u64;
                }
            }
            let mut m = tx.open_table(META)?;
            let total = m.get(BYTES_KEY)?.map_or(0, |v| v.value());
            m.insert(BYTES_KEY, total + added)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a pin. A recursive pin replaces a direct one; a direct pin on
    /// a recursively pinned CID changes nothing.
    pub(crate) fn pin(&self, cid: &[u8], kind: PinKind) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(PINS)?;
            let current = t.get(cid)?.map(|v| v.value());
            let value = match (kind, current) {
                (_, Some(RECURSIVE)) | (PinKind::Recursive | PinKind::Indirect, _) => RECURSIVE,
                (PinKind::Direct, _) => DIRECT,
            };
            t.insert(cid, value)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// How `cid` is pinned, if it is (directly or as a root).
    pub(crate) fn pin_kind(&self, cid: &[u8]) -> Result<Option<PinKind>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(PINS)?;
        Ok(t.get(cid)?.map(|v| kind_of(v.value())))
    }

    /// Removes the pin on `cid`: any kind when `recursive`, a direct pin
    /// only otherwise. False when there was no such pin.
    pub(crate) fn unpin(&self, cid: &[u8], recursive: bool) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        let removed = {
            let mut t = tx.open_table(PINS)?;
            let current = t.get(cid)?.map(|v| v.value());
            match current {
                Some(DIRECT) => t.remove(cid)?.is_some(),
                Some(_) if recursive => t.remove(cid)?.is_some(),
                _ => false,
            }
        };
        tx.commit()?;
        Ok(removed)
    }

    /// Up to `limit` pins after `after` (exclusive), in key order.
    pub(crate) fn pins_page(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, PinKind)>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(PINS)?;
        let range = match after {
            Some(a) => {
                t.range::<&[u8]>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))?
            }
            None => t.range::<&[u8]>(..)?,
        };
        let mut out = Vec::new();
        for entry in range.take(limit) {
            let (k, v) = entry?;
            out.push((k.value().to_vec(), kind_of(v.value())));
        }
        Ok(out)
    }

    /// Bytes and blocks stored.
    pub(crate) fn stat(&self) -> Result<(u64, u64), StoreError> {
        let tx = self.db.begin_read()?;
        let m = tx.open_table(META)?;
        let bytes = m.get(BYTES_KEY)?.map_or(0, |v| v.value());
        let count = tx.open_table(BLOCKS)?.len()?;
        Ok((bytes, count))
    }

    /// Removes every block whose multihash `keep` rejects, in one
    /// transaction; returns the multihashes removed.
    pub(crate) fn sweep(
        &self,
        mut keep: impl FnMut(&[u8]) -> bool,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let tx = self.db.begin_write()?;
        let mut removed = Vec::new();
        {
            let mut t = tx.open_table(BLOCKS)?;
            let mut freed = 0u64;
            t.retain(|mh, data| {
                if keep(mh) {
                    true
                } else {
                    removed.push(mh.to_vec());
                    freed += data.len() as u64;
                    false
                }
            })?;
            let mut m = tx.open_table(META)?;
            let total = m.get(BYTES_KEY)?.map_or(0, |v| v.value());
            m.insert(BYTES_KEY, total.saturating_sub(freed))?;
        }
        tx.commit()?;
        Ok(removed)
    }

    /// Overwrites a block without any check: simulates disk corruption in
    /// tests of peers that must reject it.
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) fn put_unchecked(&self, mh: &[u8], data: &[u8]) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(BLOCKS)?.insert(mh, data)?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_pins_stat_and_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlockStore::open(&dir.path().join("b.redb")).unwrap();
        s.put_many(&[(b"a".to_vec(), vec![1; 10]), (b"b".to_vec(), vec![2; 5])])
            .unwrap();
        s.put_many(&[(b"a".to_vec(), vec![1; 10])]).unwrap();
        assert_eq!(s.stat().unwrap(), (15, 2));
        assert_eq!(s.size(b"b").unwrap(), Some(5));
        s.pin(b"x", PinKind::Direct).unwrap();
        s.pin(b"x", PinKind::Recursive).unwrap();
        s.pin(b"x", PinKind::Direct).unwrap();
        assert_eq!(s.pin_kind(b"x").unwrap(), Some(PinKind::Recursive));
        assert!(!s.unpin(b"x", false).unwrap());
        s.pin(b"y", PinKind::Direct).unwrap();
        let page = s.pins_page(None, 1).unwrap();
        assert_eq!(page.len(), 1);
        let rest = s.pins_page(Some(&page[0].0), 10).unwrap();
        assert_eq!(rest.len(), 1);
        assert!(s.unpin(b"x", true).unwrap());
        assert_eq!(s.sweep(|mh| mh == b"a").unwrap(), vec![b"b".to_vec()]);
        assert_eq!(s.stat().unwrap(), (10, 1));
    }
}
