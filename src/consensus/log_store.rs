//! The Raft log and vote on disk (redb, every commit fsync'd before openraft
//! is told it is durable).
//!
//! Entries are stored as a format byte and CBOR ([`ENTRY_CBOR`]); a PinSet's
//! ops inside are a compact binary batch (`state::codec`). Entries written
//! before this format (JSON, first byte `{`) are still read, so a peer
//! upgrades without losing its log.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

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
        Ok(Self { db: Arc::new(db) })
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
        let bytes = serde_json::to_vec(value).map_err(|e| StorageIOError::write(err(e)))?;
        let txn = db
            .begin_write()
            .map_err(|e| StorageIOError::write(err(e)))?;
        {
            let mut table = txn
                .open_table(META)
                .map_err(|e| StorageIOError::write(err(e)))?;
            table
                .insert(key, bytes.as_slice())
                .map_err(|e| StorageIOError::write(err(e)))?;
        }
        txn.commit().map_err(|e| StorageIOError::write(err(e)))?;
        Ok(())
    }
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
        self.blocking(move |db| Self::write_meta(db, COMMITTED, &committed))
            .await
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<NodeId>>> {
        self.blocking(|db| Ok(Self::read_meta::<Option<LogId<NodeId>>>(db, COMMITTED)?.flatten()))
            .await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        for e in entries {
            encoded.push((e.get_log_id().index, encode_entry(&e)?));
        }
        let result = self
            .blocking(move |db| {
                let txn = db
                    .begin_write()
                    .map_err(|e| StorageIOError::write_logs(err(e)))?;
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
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
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
