//! The embedded node's disk: blocks and pins in one redb file
//! (`<peer dir>/ipfs/blocks.redb`).
//!
//! Blocks are keyed by multihash (as Kubo's blockstore is), so a CIDv0 and
//! a CIDv1 of the same dag-pb block share one entry; pins are keyed by the
//! CIDv1 bytes. A running byte total is kept in the same transactions, so
//! `repo stat` is O(1). All calls are blocking: async callers use
//! `spawn_blocking`. Identity blocks (multihash code 0) are read as held,
//! from the multihash itself, and never written. It must not hash, fetch
//! or decide what to keep: the
//! node verifies blocks before they get here and computes the live set for
//! gc.
//!
//! Layout: redb gives a leaf holding one large value a power-of-two number
//! of 4 KiB pages, so a 256 KiB chunk of a file (262,158 bytes with its
//! dag-pb framing) took 512 KiB of disk, and was written twice over.
//! Blocks that fit one page stay whole in `blocks` (as every block did
//! before); larger ones are cut into pieces that each fill their pages
//! (see [`pieces`]) in `block_chunks`, keyed by multihash and a 2-byte
//! index: a 256 KiB chunk takes 65 pages instead of 128. Readers look in
//! both tables, so stores written before this layout keep working.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::ipfs::PinKind;

const BLOCKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blocks");
/// Pieces of blocks larger than [`SMALL`]: multihash ++ index (u16, big
/// endian) → bytes.
const CHUNKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("block_chunks");
/// Blocks stored in [`CHUNKS`] (`stat` counts them without a scan).
const CHUNKED_KEY: &str = "chunked_blocks";
/// A piece that fills 16 pages with its key and redb's leaf header.
const BIG: usize = 16 * 4096 - 64;
/// A piece that fills one page likewise; blocks up to this size are kept
/// whole.
const SMALL: usize = 4096 - 64;

/// Where the pieces of a block of `len` bytes (over [`SMALL`]) start and
/// end: [`BIG`] ones while they fit, then [`SMALL`] ones, then the rest, so
/// that no piece leaves more than a page of its pages unused.
pub(super) fn pieces(len: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while len - at >= BIG {
        out.push((at, at + BIG));
        at += BIG;
    }
    while len - at > SMALL {
        out.push((at, at + SMALL));
        at += SMALL;
    }
    if at < len || out.is_empty() {
        out.push((at, len));
    }
    out
}

fn chunk_key(mh: &[u8], index: u16) -> Vec<u8> {
    let mut k = Vec::with_capacity(mh.len() + 2);
    k.extend_from_slice(mh);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The pieces of `mh` in `chunks`, in order.
fn chunk_range<'t, T: ReadableTable<&'static [u8], &'static [u8]>>(
    chunks: &'t T,
    mh: &[u8],
) -> Result<redb::Range<'t, &'static [u8], &'static [u8]>, StoreError> {
    let (first, last) = (chunk_key(mh, 0), chunk_key(mh, u16::MAX));
    Ok(chunks.range::<&[u8]>(first.as_slice()..=last.as_slice())?)
}

/// The bytes of the block an identity multihash (code 0) names: its
/// digest. Every node holds such a block without storing it.
fn identity(mh: &[u8]) -> Option<Vec<u8>> {
    if mh.first() != Some(&0) {
        return None;
    }
    let mh = cid::multihash::Multihash::<64>::from_bytes(mh).ok()?;
    (mh.code() == 0).then(|| mh.digest().to_vec())
}

/// What is stored of `mh`: its bytes when `data`, else only whether (as
/// [`Held::Present`]). Identity blocks are always held.
fn read_block<T: ReadableTable<&'static [u8], &'static [u8]>>(
    blocks: &T,
    chunks: &T,
    mh: &[u8],
    data: bool,
) -> Result<Held, StoreError> {
    if let Some(d) = identity(mh) {
        return Ok(if data { Held::Data(d) } else { Held::Present });
    }
    if let Some(v) = blocks.get(mh)? {
        return Ok(if data {
            Held::Data(v.value().to_vec())
        } else {
            Held::Present
        });
    }
    let mut out: Option<Vec<u8>> = None;
    for entry in chunk_range(chunks, mh)? {
        let (_, v) = entry?;
        if !data {
            return Ok(Held::Present);
        }
        out.get_or_insert_with(Vec::new)
            .extend_from_slice(v.value());
    }
    Ok(out.map_or(Held::Missing, Held::Data))
}
const PINS: TableDefinition<&[u8], u8> = TableDefinition::new("pins");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const BYTES_KEY: &str = "bytes";

const RECURSIVE: u8 = 1;
const DIRECT: u8 = 2;
/// A depth-limited pin of depth `d` is stored as `DEPTH_BASE + d`.
const DEPTH_BASE: u8 = 16;
/// The deepest depth-limited pin the store records (IPFS Cluster's shard
/// pins are 1 or 2 deep).
pub(crate) const MAX_PIN_DEPTH: u32 = (u8::MAX - DEPTH_BASE) as u32;

/// How a root is pinned in the store: Kubo's two kinds of root pin, plus
/// the depth-limited pin a shard of a sharded DAG needs (the root and the
/// blocks at most `d` links below it, see `crate::ipfs::pin_follows`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StoredPin {
    /// The whole DAG.
    Recursive,
    /// The root block only.
    Direct,
    /// The root and the blocks at most this many links below it (≥ 1).
    Depth(u32),
}

impl StoredPin {
    /// The pin for a walk limit: `None` (unlimited) is recursive, `Some(0)`
    /// direct; depths above [`MAX_PIN_DEPTH`] are recursive.
    pub(crate) fn of_limit(limit: Option<u32>) -> Self {
        match limit {
            Some(0) => StoredPin::Direct,
            Some(d) if d <= MAX_PIN_DEPTH => StoredPin::Depth(d),
            _ => StoredPin::Recursive,
        }
    }

    /// The walk limit of this pin (`None`: the whole DAG).
    pub(crate) fn limit(self) -> Option<u32> {
        match self {
            StoredPin::Recursive => None,
            StoredPin::Direct => Some(0),
            StoredPin::Depth(d) => Some(d),
        }
    }

    /// How `pin ls` shows it. A depth-limited pin shows as `recursive`: it
    /// is a root pin that keeps blocks below it, and Kubo's `pin ls` has
    /// no other word for one (IPFS Cluster's shard pins show so too).
    pub(crate) fn kind(self) -> PinKind {
        match self {
            StoredPin::Direct => PinKind::Direct,
            StoredPin::Recursive | StoredPin::Depth(_) => PinKind::Recursive,
        }
    }

    /// Whether this pin keeps at least every block `other` keeps.
    pub(crate) fn covers(self, other: StoredPin) -> bool {
        match (self.limit(), other.limit()) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a >= b,
        }
    }

    fn value(self) -> u8 {
        match self {
            StoredPin::Recursive => RECURSIVE,
            StoredPin::Direct => DIRECT,
            // of_limit keeps d within MAX_PIN_DEPTH; larger is recursive.
            StoredPin::Depth(d) => u8::try_from(d)
                .ok()
                .and_then(|d| DEPTH_BASE.checked_add(d))
                .unwrap_or(RECURSIVE),
        }
    }

    fn from_value(v: u8) -> Self {
        match v {
            DIRECT => StoredPin::Direct,
            v if v > DEPTH_BASE => StoredPin::Depth(u32::from(v - DEPTH_BASE)),
            _ => StoredPin::Recursive,
        }
    }
}

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
    StoredPin::from_value(v).kind()
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
        tx.open_table(CHUNKS)?;
        tx.open_table(PINS)?;
        tx.open_table(META)?;
        tx.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    /// The block with multihash `mh`, if stored.
    pub(crate) fn get(&self, mh: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get_many(&[mh.to_vec()])?.pop().flatten())
    }

    /// The size of the block with multihash `mh`, if stored.
    pub(crate) fn size(&self, mh: &[u8]) -> Result<Option<u64>, StoreError> {
        if let Some(d) = identity(mh) {
            return Ok(Some(d.len() as u64));
        }
        let tx = self.db.begin_read()?;
        let t = tx.open_table(BLOCKS)?;
        if let Some(v) = t.get(mh)? {
            return Ok(Some(v.value().len() as u64));
        }
        let chunks = tx.open_table(CHUNKS)?;
        let mut total = None;
        for entry in chunk_range(&chunks, mh)? {
            *total.get_or_insert(0) += entry?.1.value().len() as u64;
        }
        Ok(total)
    }

    /// The blocks with multihashes `mhs`, in order, read in one transaction.
    pub(crate) fn get_many(&self, mhs: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let tx = self.db.begin_read()?;
        let (blocks, chunks) = (tx.open_table(BLOCKS)?, tx.open_table(CHUNKS)?);
        mhs.iter()
            .map(|mh| {
                Ok(match read_block(&blocks, &chunks, mh, true)? {
                    Held::Data(d) => Some(d),
                    Held::Missing | Held::Present => None,
                })
            })
            .collect()
    }

    /// For each (multihash, data wanted): the block's bytes when wanted,
    /// else whether it is held; one read transaction for all.
    pub(crate) fn lookup_many(&self, keys: &[(Vec<u8>, bool)]) -> Result<Vec<Held>, StoreError> {
        let tx = self.db.begin_read()?;
        let (blocks, chunks) = (tx.open_table(BLOCKS)?, tx.open_table(CHUNKS)?);
        keys.iter()
            .map(|(mh, data)| read_block(&blocks, &chunks, mh, *data))
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
            let mut c = tx.open_table(CHUNKS)?;
            let (mut added, mut chunked) = (0u64, 0u64);
            for (mh, data) in blocks {
                if read_block(&t, &c, mh, false)? != Held::Missing {
                    continue;
                }
                added += data.len() as u64;
                if data.len() <= SMALL {
                    t.insert(mh.as_slice(), data.as_slice())?;
                    continue;
                }
                chunked += 1;
                for (i, (start, end)) in pieces(data.len()).into_iter().enumerate() {
                    // A block is at most `MAX_BLOCK` bytes: far fewer than
                    // 65,536 pieces.
                    let i = u16::try_from(i).map_err(|_| {
                        redb::Error::Io(std::io::Error::other("block too large to store"))
                    })?;
                    c.insert(chunk_key(mh, i).as_slice(), &data[start..end])?;
                }
            }
            let mut m = tx.open_table(META)?;
            let total = m.get(BYTES_KEY)?.map_or(0, |v| v.value());
            m.insert(BYTES_KEY, total + added)?;
            let n = m.get(CHUNKED_KEY)?.map_or(0, |v| v.value());
            m.insert(CHUNKED_KEY, n + chunked)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a pin. A recursive pin replaces a direct one; a direct pin on
    /// a recursively pinned CID changes nothing.
    pub(crate) fn pin(&self, cid: &[u8], kind: PinKind) -> Result<(), StoreError> {
        let pin = match kind {
            PinKind::Direct => StoredPin::Direct,
            PinKind::Recursive | PinKind::Indirect => StoredPin::Recursive,
        };
        self.pin_stored(cid, pin)
    }

    /// Records a pin; the CID keeps whichever of its current pin and `pin`
    /// keeps more blocks (recursive, then the deeper, then direct).
    pub(crate) fn pin_stored(&self, cid: &[u8], pin: StoredPin) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(PINS)?;
            let current = t.get(cid)?.map(|v| StoredPin::from_value(v.value()));
            let keep = match current {
                Some(c) if c.covers(pin) => c,
                _ => pin,
            };
            t.insert(cid, keep.value())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// How `cid` is pinned, if it is, as the store records it.
    pub(crate) fn stored_pin(&self, cid: &[u8]) -> Result<Option<StoredPin>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(PINS)?;
        Ok(t.get(cid)?.map(|v| StoredPin::from_value(v.value())))
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
    ) -> Result<Vec<(Vec<u8>, StoredPin)>, StoreError> {
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
            out.push((k.value().to_vec(), StoredPin::from_value(v.value())));
        }
        Ok(out)
    }

    /// Bytes and blocks stored.
    pub(crate) fn stat(&self) -> Result<(u64, u64), StoreError> {
        let tx = self.db.begin_read()?;
        let m = tx.open_table(META)?;
        let bytes = m.get(BYTES_KEY)?.map_or(0, |v| v.value());
        let chunked = m.get(CHUNKED_KEY)?.map_or(0, |v| v.value());
        let count = tx.open_table(BLOCKS)?.len()? + chunked;
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
            // Pieces come in key order: one decision per block.
            let mut c = tx.open_table(CHUNKS)?;
            let mut last: Option<(Vec<u8>, bool)> = None;
            let mut dropped = 0u64;
            c.retain(|key, data| {
                let mh = key.get(..key.len().saturating_sub(2)).unwrap_or_default();
                let kept = match &last {
                    Some((m, k)) if m.as_slice() == mh => *k,
                    _ => {
                        let k = keep(mh);
                        if !k {
                            removed.push(mh.to_vec());
                            dropped += 1;
                        }
                        last = Some((mh.to_vec(), k));
                        k
                    }
                };
                if !kept {
                    freed += data.len() as u64;
                }
                kept
            })?;
            let mut m = tx.open_table(META)?;
            let total = m.get(BYTES_KEY)?.map_or(0, |v| v.value());
            m.insert(BYTES_KEY, total.saturating_sub(freed))?;
            let n = m.get(CHUNKED_KEY)?.map_or(0, |v| v.value());
            m.insert(CHUNKED_KEY, n.saturating_sub(dropped))?;
        }
        tx.commit()?;
        Ok(removed)
    }

    /// Bytes of the pages the blocks and everything else occupy.
    #[cfg(test)]
    pub(crate) fn allocated_bytes(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_write()?;
        let stats = tx.stats()?;
        let bytes = stats.allocated_pages() * stats.page_size() as u64;
        tx.abort()?;
        Ok(bytes)
    }

    /// Overwrites a block without any check: simulates disk corruption in
    /// tests of peers that must reject it.
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) fn put_unchecked(&self, mh: &[u8], data: &[u8]) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut c = tx.open_table(CHUNKS)?;
            let (first, last) = (chunk_key(mh, 0), chunk_key(mh, u16::MAX));
            c.retain_in::<&[u8], _>(first.as_slice()..=last.as_slice(), |_, _| false)?;
            tx.open_table(BLOCKS)?.insert(mh, data)?;
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_a_block_and_each_fills_its_pages() {
        for len in [
            SMALL + 1,
            4110,
            65_000,
            BIG,
            BIG + 1,
            262_158,
            1 << 20,
            2 << 20,
        ] {
            let p = pieces(len);
            assert_eq!(p[0].0, 0);
            assert_eq!(p.last().unwrap().1, len);
            assert!(p.windows(2).all(|w| w[0].1 == w[1].0), "{len}: contiguous");
            for (a, b) in &p {
                let n = b - a;
                assert!(n > 0 && n <= BIG, "{len}: piece of {n}");
                // With a 36-byte key and the leaf header: the pages redb
                // gives it, at most one of them partly unused.
                let need = n + 36 + 12;
                let pages = need.div_ceil(4096).next_power_of_two();
                assert!(
                    pages * 4096 - need < 4096,
                    "{len}: piece of {n} wastes a page"
                );
            }
        }
    }

    #[test]
    fn identity_blocks_are_held_without_being_stored() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlockStore::open(&dir.path().join("b.redb")).unwrap();
        let mh = cid::multihash::Multihash::<64>::wrap(0, b"inline")
            .unwrap()
            .to_bytes();
        assert_eq!(s.get(&mh).unwrap(), Some(b"inline".to_vec()));
        assert_eq!(s.size(&mh).unwrap(), Some(6));
        assert_eq!(
            s.lookup_many(&[(mh.clone(), false)]).unwrap(),
            vec![Held::Present]
        );
        s.put_many(&[(mh, b"inline".to_vec())]).unwrap();
        assert_eq!(s.stat().unwrap(), (0, 0), "nothing stored");
    }

    #[test]
    fn large_blocks_round_trip_in_pieces_and_take_little_more_disk_than_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        let s = BlockStore::open(&path).unwrap();
        // 64 chunks of a file as Kubo cuts them (256 KiB + dag-pb framing).
        let blocks: Vec<(Vec<u8>, Vec<u8>)> = (0..64u8)
            .map(|i| {
                (
                    vec![0x12, 0x20, i],
                    (0..262_158u32).map(|j| (j as u8) ^ i).collect(),
                )
            })
            .collect();
        s.put_many(&blocks).unwrap();
        s.put_many(&blocks[..1]).unwrap(); // already stored: no change
        let data: u64 = blocks.iter().map(|(_, d)| d.len() as u64).sum();
        assert_eq!(s.stat().unwrap(), (data, 64));
        for (mh, d) in &blocks {
            assert_eq!(s.get(mh).unwrap().as_ref(), Some(d));
            assert_eq!(s.size(mh).unwrap(), Some(d.len() as u64));
        }
        let held = s
            .lookup_many(&[(blocks[3].0.clone(), false), (vec![0x12, 0x20, 200], false)])
            .unwrap();
        assert_eq!(held, vec![Held::Present, Held::Missing]);
        // Whole, each took 512 KiB (twice its size).
        let pages = s.allocated_bytes().unwrap();
        assert!(
            pages < data + data / 16,
            "{pages} bytes of pages for {data}"
        );
        drop(s);
        let s = BlockStore::open(&path).unwrap();
        let removed = s.sweep(|mh| mh[2] % 2 == 0).unwrap();
        assert_eq!(removed.len(), 32);
        assert_eq!(s.stat().unwrap(), (data / 2, 32));
        assert_eq!(s.get(&blocks[1].0).unwrap(), None);
        assert_eq!(s.get(&blocks[2].0).unwrap().as_ref(), Some(&blocks[2].1));
    }

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

    #[test]
    fn a_depth_pin_survives_reopening_shows_as_recursive_and_yields_only_to_a_deeper_pin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        {
            let s = BlockStore::open(&path).unwrap();
            s.pin(b"x", PinKind::Direct).unwrap();
            s.pin_stored(b"x", StoredPin::Depth(2)).unwrap();
            s.pin_stored(b"x", StoredPin::Depth(1)).unwrap();
            s.pin(b"x", PinKind::Direct).unwrap();
            s.pin_stored(b"y", StoredPin::Depth(1)).unwrap();
            s.pin(b"y", PinKind::Recursive).unwrap();
            s.pin_stored(b"y", StoredPin::Depth(2)).unwrap();
        }
        let s = BlockStore::open(&path).unwrap();
        assert_eq!(s.stored_pin(b"x").unwrap(), Some(StoredPin::Depth(2)));
        assert_eq!(s.pin_kind(b"x").unwrap(), Some(PinKind::Recursive));
        assert_eq!(s.stored_pin(b"y").unwrap(), Some(StoredPin::Recursive));
        let page = s.pins_page(None, 10).unwrap();
        assert_eq!(page[0], (b"x".to_vec(), StoredPin::Depth(2)));
        assert!(!s.unpin(b"x", false).unwrap(), "a direct unpin leaves it");
        assert!(s.unpin(b"x", true).unwrap());
        assert_eq!(s.stored_pin(b"x").unwrap(), None);
        assert_eq!(StoredPin::of_limit(Some(0)), StoredPin::Direct);
        assert_eq!(StoredPin::of_limit(None), StoredPin::Recursive);
        assert_eq!(
            StoredPin::of_limit(Some(MAX_PIN_DEPTH + 1)),
            StoredPin::Recursive
        );
        assert_eq!(StoredPin::Depth(MAX_PIN_DEPTH).value(), u8::MAX);
    }
}
