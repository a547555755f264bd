//! The Raft log and vote on disk (redb, every commit fsync'd before openraft
//! is told it is durable).
//!
//! The entries appended last are also kept decoded in memory
//! ([`RECENT_ENTRIES`], [`RECENT_BYTES`]): right after an append, openraft
//! reads each entry back once per follower to send it and once to apply
//! it, and serving those from memory saves a blocking-thread hop, a read
//! transaction and a CBOR decode each, on the path every write waits for.
//!
//! The committed index is kept in memory and written with the log's next
//! append, or at [`LogStore::flush`] (a clean stop): openraft saves it on
//! every commit, and a write transaction of its own there (fsync'd,
//! awaited by the Raft core before it applies) cost each peer a commit per
//! entry. What is on disk may lag by the entries since; at start openraft
//! applies what it says is committed and learns the rest from the leader,
//! as after any stop.
//!
//! Entries are stored as a format byte and CBOR ([`ENTRY_CBOR`]); a PinSet's
//! ops inside are a compact binary batch (`state::codec`). Entries written
//! before this format (JSON, first byte `{`) are still read, so a peer
//! upgrades without losing its log.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, RaftLogId, RaftLogReader, StorageError, StorageIOError, Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{NodeId, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

/// Format byte of an entry stored as CBOR.
pub const ENTRY_CBOR: u8 = 1;

fn encode_entry(e: &Entry<TypeConfig>) -> Result<Vec<u8>, StorageError<NodeId>> {
    let mut out = vec![ENTRY_CBOR];
    cbor4ii::serde::to_writer(&mut out, e).map_err(|x| StorageIOError::write_logs(err(x)))?;
    Ok(out)
}

fn decode_entry(bytes: &[u8]) -> Result<Entry<TypeConfig>, StorageError<NodeId>> {
    let read = |e: &dyn std::fmt::Display| {
        StorageIOError::read_logs(AnyError::error(format!("log entry: {e}")))
    };
    match bytes.split_first() {
        Some((&ENTRY_CBOR, rest)) => cbor4ii::serde::from_slice(rest).map_err(|e| read(&e).into()),
        // Written before the CBOR format.
        Some((b'{', _)) => serde_json::from_slice(bytes).map_err(|e| read(&e).into()),
        Some((other, _)) => Err(read(&format!("unknown format {other}")).into()),
        None => Err(read(&"empty").into()),
    }
}

/// The Raft log of one peer. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// The committed log id openraft saved last, and whether the database
    /// has it yet (see the module's comment).
    committed: Arc<Mutex<Committed>>,
    /// The last entries appended, in order (see the module's comment).
    recent: Arc<Mutex<Recent>>,
}

/// Most entries kept decoded in memory.
pub const RECENT_ENTRIES: usize = 1024;
/// Most encoded bytes of entries kept decoded in memory.
pub const RECENT_BYTES: usize = 32 << 20;

/// The last entries appended: consecutive indexes, the last one the log's
/// last entry (or empty).
#[derive(Default)]
struct Recent {
    entries: std::collections::VecDeque<(Entry<TypeConfig>, usize)>,
    bytes: usize,
}

impl Recent {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index)
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Adds entries just appended (`size`: encoded bytes). A gap after
    /// the last one kept (never expected: openraft appends in order)
    /// starts over.
    fn push(&mut self, entry: Entry<TypeConfig>, size: usize) {
        if self
            .last_index()
            .is_some_and(|last| last.checked_add(1) != Some(entry.log_id.index))
        {
            self.clear();
        }
        self.bytes = self.bytes.saturating_add(size);
        self.entries.push_back((entry, size));
        while self.entries.len() > RECENT_ENTRIES
            || (self.bytes > RECENT_BYTES && self.entries.len() > 1)
        {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        let popped = self.entries.pop_front();
        self.forget(popped);
    }

    fn pop_back(&mut self) {
        let popped = self.entries.pop_back();
        self.forget(popped);
    }

    /// Takes a popped entry's bytes off the count.
    fn forget(&mut self, popped: Option<(Entry<TypeConfig>, usize)>) {
        if let Some((_, size)) = popped {
            self.bytes = self.bytes.saturating_sub(size);
        }
    }

    /// Drops entries from `index` on (a truncated log).
    fn truncate(&mut self, index: u64) {
        while self.last_index().is_some_and(|last| last >= index) {
            self.pop_back();
        }
    }

    /// Drops entries through `index` (a purged log).
    fn purge(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            self.pop_front();
        }
    }

    /// The entries of `range`, if every one of them is kept here (an
    /// unbounded end is read from the database: an entry being appended
    /// is in the log before it is here).
    fn get(&self, range: &impl RangeBounds<u64>) -> Option<Vec<Entry<TypeConfig>>> {
        use std::ops::Bound;
        let (first, last) = (self.first_index()?, self.last_index()?);
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.checked_add(1)?,
            Bound::Unbounded => return None,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.checked_sub(1)?,
            Bound::Unbounded => return None,
        };
        if start < first || end > last {
            return None;
        }
        let skip = usize::try_from(start - first).ok()?;
        Some(
            self.entries
                .iter()
                .skip(skip)
                .map(|(e, _)| e)
                .take_while(|e| range.contains(&e.log_id.index))
                .cloned()
                .collect(),
        )
    }
}

/// The committed log id, as last saved, and whether it is on disk.
#[derive(Debug, Default, Clone, Copy)]
struct Committed {
    id: Option<LogId<NodeId>>,
    written: bool,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogStore")
    }
}

type StoreResult<T> = Result<T, StorageError<NodeId>>;

fn err<E: std::error::Error + 'static>(e: E) -> AnyError {
    AnyError::new(&e)
}

/// redb's page cache for the Raft log.
pub const LOG_CACHE_BYTES: usize = 16 << 20;

impl LogStore {
    /// Opens (or creates) the log database at `path`.
    pub fn open(path: &Path) -> Result<Self, redb::Error> {
        // redb's default cache is 1 GiB per database; the log is read back
        // mostly right after it is written (replication), so a small cache
        // does: the OS page cache holds the rest.
        let db = Database::builder()
            .set_cache_size(LOG_CACHE_BYTES)
            .create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(META)?;
        txn.commit()?;
        let committed = Committed {
            id: Self::read_meta::<Option<LogId<NodeId>>>(&db, COMMITTED)
                .map_err(|e| redb::Error::Io(std::io::Error::other(e.to_string())))?
                .flatten(),
            written: true,
        };
        Ok(Self {
            db: Arc::new(db),
            committed: Arc::new(Mutex::new(committed)),
            recent: Arc::default(),
        })
    }

    /// The entries kept in memory; a poisoned lock's are dropped (the log
    /// on disk still has them).
    fn recent(&self) -> MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|poisoned| {
            let mut r = poisoned.into_inner();
            r.clear();
            r
        })
    }

    /// The committed id held in memory; a poisoned lock still holds a
    /// usable value.
    fn committed(&self) -> MutexGuard<'_, Committed> {
        self.committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The committed id to write with the transaction about to start, if
    /// the database does not have it yet.
    fn unwritten_committed(&self) -> Option<Option<LogId<NodeId>>> {
        let c = *self.committed();
        (!c.written).then_some(c.id)
    }

    /// Records that `id` reached the database (unless a later one was
    /// saved meanwhile).
    fn committed_written(&self, id: Option<LogId<NodeId>>) {
        let mut c = self.committed();
        if c.id == id {
            c.written = true;
        }
    }

    /// Writes the committed id if the database does not have it yet: at
    /// a clean stop, so that the next start applies everything committed.
    pub fn flush(&self) -> Result<(), StorageError<NodeId>> {
        if let Some(id) = self.unwritten_committed() {
            Self::write_meta(&self.db, COMMITTED, &id)?;
            self.committed_written(id);
        }
        Ok(())
    }

    async fn blocking<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> StoreResult<T> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StorageIOError::read_logs(err(e)))?
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        db: &Database,
        key: &str,
    ) -> StoreResult<Option<T>> {
        let txn = db.begin_read().map_err(|e| StorageIOError::read(err(e)))?;
        let table = txn
            .open_table(META)
            .map_err(|e| StorageIOError::read(err(e)))?;
        let Some(v) = table.get(key).map_err(|e| StorageIOError::read(err(e)))? else {
            return Ok(None);
        };
        serde_json::from_slice(v.value())
            .map(Some)
            .map_err(|e| StorageIOError::read(err(e)).into())
    }

    fn write_meta<T: serde::Serialize>(db: &Database, key: &str, value: &T) -> StoreResult<()> {
        let txn = db
            .begin_write()
            .map_err(|e| StorageIOError::write(err(e)))?;
        put_meta(&txn, key, value)?;
        txn.commit().map_err(|e| StorageIOError::write(err(e)))?;
        Ok(())
    }
}

/// Sets `key` of the meta table to `value` (JSON) in `txn`.
fn put_meta<T: serde::Serialize>(
    txn: &redb::WriteTransaction,
    key: &str,
    value: &T,
) -> StoreResult<()> {
    let bytes = serde_json::to_vec(value).map_err(|e| StorageIOError::write(err(e)))?;
    let mut table = txn
        .open_table(META)
        .map_err(|e| StorageIOError::write(err(e)))?;
    table
        .insert(key, bytes.as_slice())
        .map_err(|e| StorageIOError::write(err(e)))?;
    Ok(())
}

/// The entries in `range`, in order, stopping before the one that would
/// bring the encoded bytes read past `max_bytes` (the first always comes).
fn entries_in(
    db: &Database,
    range: impl RangeBounds<u64>,
    max_bytes: usize,
) -> StoreResult<Vec<Entry<TypeConfig>>> {
    let read = |e: redb::Error| StorageIOError::read_logs(err(e));
    let txn = db.begin_read().map_err(|e| read(e.into()))?;
    let table = txn.open_table(LOG).map_err(|e| read(e.into()))?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for item in table.range(range).map_err(|e| read(e.into()))? {
        let (_, v) = item.map_err(|e| read(e.into()))?;
        let raw = v.value();
        if !out.is_empty() && bytes.saturating_add(raw.len()) > max_bytes {
            break;
        }
        bytes = bytes.saturating_add(raw.len());
        out.push(decode_entry(raw)?);
    }
    Ok(out)
}

impl LogStore {
    /// Entries `first..=last` for the follower feed, stopping once
    /// `max_bytes` of encoded entries are read (the first always comes).
    /// `None` when `first` was purged (it is in a snapshot now).
    pub async fn feed_range(
        &self,
        first: u64,
        last: u64,
        max_bytes: usize,
    ) -> StoreResult<Option<Vec<Entry<TypeConfig>>>> {
        self.blocking(move |db| {
            let purged: Option<LogId<NodeId>> = Self::read_meta(db, LAST_PURGED)?;
            if purged.is_some_and(|p| first <= p.index) {
                return Ok(None);
            }
            let out = entries_in(db, first..=last, max_bytes)?;
            match out.first() {
                Some(e) if e.log_id.index == first => Ok(Some(out)),
                // Purged between the two reads, or never written here.
                _ => Ok(None),
            }
        })
        .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<TypeConfig>>> {
        if let Some(kept) = self.recent().get(&range) {
            return Ok(kept);
        }
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        self.blocking(move |db| entries_in(db, (start, end), usize::MAX))
            .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StoreResult<LogState<TypeConfig>> {
        self.blocking(|db| {
            let last_purged: Option<LogId<NodeId>> = Self::read_meta(db, LAST_PURGED)?;
            let txn = db
                .begin_read()
                .map_err(|e| StorageIOError::read_logs(err(e)))?;
            let table = txn
                .open_table(LOG)
                .map_err(|e| StorageIOError::read_logs(err(e)))?;
            let last = match table
                .last()
                .map_err(|e| StorageIOError::read_logs(err(e)))?
            {
                Some((_, v)) => Some(*decode_entry(v.value())?.get_log_id()),
                None => last_purged,
            };
            Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: last,
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StoreResult<()> {
        let vote = *vote;
        self.blocking(move |db| Self::write_meta(db, VOTE, &vote))
            .await
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<NodeId>>> {
        self.blocking(|db| Self::read_meta(db, VOTE)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StoreResult<()> {
        let mut c = self.committed();
        if c.id != committed {
            *c = Committed {
                id: committed,
                written: false,
            };
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<NodeId>>> {
        Ok(self.committed().id)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let mut encoded = Vec::with_capacity(entries.len());
        for e in &entries {
            encoded.push((e.get_log_id().index, encode_entry(e)?));
        }
        let sizes: Vec<usize> = encoded.iter().map(|(_, b)| b.len()).collect();
        let committed = self.unwritten_committed();
        let result = self
            .blocking(move |db| {
                let txn = db
                    .begin_write()
                    .map_err(|e| StorageIOError::write_logs(err(e)))?;
                // See the module's comment.
                if let Some(id) = &committed {
                    put_meta(&txn, COMMITTED, id)?;
                }
                {
                    let mut table = txn
                        .open_table(LOG)
                        .map_err(|e| StorageIOError::write_logs(err(e)))?;
                    for (index, bytes) in &encoded {
                        table
                            .insert(*index, bytes.as_slice())
                            .map_err(|e| StorageIOError::write_logs(err(e)))?;
                    }
                }
                // Default durability is Immediate: commit returns after fsync.
                txn.commit()
                    .map_err(|e| StorageIOError::write_logs(err(e)))?;
                Ok(())
            })
            .await;
        if result.is_ok() {
            if let Some(id) = committed {
                self.committed_written(id);
            }
            let mut recent = self.recent();
            for (e, size) in entries.into_iter().zip(sizes) {
                recent.push(e, size);
            }
        }
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        self.recent().truncate(log_id.index);
        self.blocking(move |db| {
            let txn = db
                .begin_write()
                .map_err(|e| StorageIOError::write_logs(err(e)))?;
            {
                let mut table = txn
                    .open_table(LOG)
                    .map_err(|e| StorageIOError::write_logs(err(e)))?;
                table
                    .retain_in(log_id.index.., |_, _| false)
                    .map_err(|e| StorageIOError::write_logs(err(e)))?;
            }
            txn.commit()
                .map_err(|e| StorageIOError::write_logs(err(e)))?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        self.recent().purge(log_id.index);
        self.blocking(move |db| {
            let bytes = serde_json::to_vec(&Some(log_id))
                .map_err(|e| StorageIOError::write_logs(err(e)))?;
            let txn = db
                .begin_write()
                .map_err(|e| StorageIOError::write_logs(err(e)))?;
            {
                let mut meta = txn
                    .open_table(META)
                    .map_err(|e| StorageIOError::write_logs(err(e)))?;
                meta.insert(LAST_PURGED, bytes.as_slice())
                    .map_err(|e| StorageIOError::write_logs(err(e)))?;
                let mut table = txn
                    .open_table(LOG)
                    .map_err(|e| StorageIOError::write_logs(err(e)))?;
                table
                    .retain_in(..=log_id.index, |_, _| false)
                    .map_err(|e| StorageIOError::write_logs(err(e)))?;
            }
            txn.commit()
                .map_err(|e| StorageIOError::write_logs(err(e)))?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn entries(indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry<TypeConfig>> {
        indexes
            .map(|i| Entry {
                log_id: id(i),
                payload: EntryPayload::Blank,
            })
            .collect()
    }

    fn indexes(entries: &[Entry<TypeConfig>]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    /// What the database alone holds for `range`.
    fn on_disk(log: &LogStore, range: std::ops::Range<u64>) -> Vec<u64> {
        indexes(&entries_in(&log.db, range, usize::MAX).unwrap())
    }

    #[tokio::test]
    async fn the_committed_index_is_written_with_the_next_append_and_at_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        {
            let mut log = LogStore::open(&path).unwrap();
            log.blocking_append(entries(1..=3)).await.unwrap();
            log.save_committed(Some(id(2))).await.unwrap();
            assert_eq!(log.read_committed().await.unwrap(), Some(id(2)));
        }
        // Dropped without an append or a flush: the database never had it.
        let mut log = LogStore::open(&path).unwrap();
        assert_eq!(log.read_committed().await.unwrap(), None);
        log.save_committed(Some(id(3))).await.unwrap();
        log.blocking_append(entries(4..=4)).await.unwrap();
        drop(log);
        let mut log = LogStore::open(&path).unwrap();
        assert_eq!(log.read_committed().await.unwrap(), Some(id(3)));
        log.save_committed(Some(id(4))).await.unwrap();
        log.flush().unwrap();
        drop(log);
        let mut log = LogStore::open(&path).unwrap();
        assert_eq!(log.read_committed().await.unwrap(), Some(id(4)));
    }

    #[tokio::test]
    async fn entries_kept_in_memory_read_as_the_log_on_disk_through_truncate_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(&dir.path().join("log.redb")).unwrap();
        log.blocking_append(entries(1..=10)).await.unwrap();
        let same = |log: &mut LogStore, range: std::ops::Range<u64>| {
            let kept = log.recent().get(&range).map(|e| indexes(&e));
            (kept, on_disk(log, range))
        };
        for range in [1..11, 3..7, 10..11, 5..5] {
            let (kept, disk) = same(&mut log, range.clone());
            assert_eq!(kept.as_ref(), Some(&disk), "{range:?}");
        }
        // Beyond the last entry: not claimed from memory.
        assert!(log.recent().get(&(8..12)).is_none());
        // A truncate drops the same tail from both.
        log.truncate(id(7)).await.unwrap();
        assert_eq!(log.recent().last_index(), Some(6));
        assert_eq!(on_disk(&log, 1..11), vec![1, 2, 3, 4, 5, 6]);
        log.blocking_append(entries(7..=8)).await.unwrap();
        let (kept, disk) = same(&mut log, 1..9);
        assert_eq!(kept.as_ref(), Some(&disk));
        assert_eq!(disk, (1..=8).collect::<Vec<_>>());
        // A purge drops the same head from both; what it dropped is read
        // from the database again (nothing).
        log.purge(id(3)).await.unwrap();
        assert!(log.recent().get(&(2..6)).is_none());
        let (kept, disk) = same(&mut log, 4..9);
        assert_eq!(kept.as_ref(), Some(&disk));
        assert_eq!(
            indexes(&log.try_get_log_entries(1..9).await.unwrap()),
            (4..=8).collect::<Vec<_>>()
        );
    }

    #[test]
    fn memory_keeps_the_newest_entries_within_its_bounds() {
        let mut recent = Recent::default();
        for e in entries(1..=(RECENT_ENTRIES as u64 + 5)) {
            recent.push(e, 10);
        }
        assert_eq!(recent.entries.len(), RECENT_ENTRIES);
        assert_eq!(recent.first_index(), Some(6));
        assert_eq!(recent.bytes, RECENT_ENTRIES * 10);
        // One entry larger than the byte bound is still kept, alone.
        let big = entries(RECENT_ENTRIES as u64 + 6..=RECENT_ENTRIES as u64 + 6);
        recent.push(big.into_iter().next().unwrap(), RECENT_BYTES + 1);
        assert_eq!(recent.entries.len(), 1);
        // A gap (never expected) starts over rather than mislabel.
        recent.push(entries(9000..=9000).pop().unwrap(), 10);
        assert_eq!(
            (recent.first_index(), recent.last_index()),
            (Some(9000), Some(9000))
        );
    }
}
