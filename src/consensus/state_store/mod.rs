//! The state machine on disk (redb): pins keyed by CID with an owner index,
//! staged revision chunks, PinSet records, per-owner commit records
//! (generation, last attempt), the applied-change feed and Raft's applied
//! position. One redb write transaction per batch of applied log entries,
//! so a revision committed in one entry becomes visible to readers all at
//! once.
//!
//! Pins are compact binary records whose owners, peers and option sets are
//! ids into dictionaries of the same database (`records.rs`); a store
//! written in the earlier JSON format is migrated when opened. Snapshots
//! are streamed files of raw records (`snapshot.rs`).

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{NodeId, PeerNode, TypeConfig};
use crate::manifest::{CidKey, Owner, PinSpec};
use crate::state::{
    CommitRecord, ConditionsRecord, Outcome, PinSetRecord, PinStore, StatePin, apply,
};

mod changes;
mod pinsvc;
mod records;
mod snapshot;
mod txn;

pub use changes::{CHANGES_KEPT, ChangePage};
pub use pinsvc::{CreatedRange, NameMatch, PinSvcFilter};
pub use snapshot::SNAPSHOT_VERSION;

use records::{DICT, DICT_BY_VALUE, Dict, Learnt, LegacyPin, OWNER, Resolver, SharedDict, cid_of};
use txn::{TxnError, TxnStore};

const PINS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("pins");
/// `(owner id, CID)`: the pins each owner holds.
const OWNER_INDEX: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("owner_index");
/// `(meta pin CID, CID)`: the cluster DAG and shards of each sharded pin
/// (`StatePin::shard_metas`), so that releasing a meta pin finds them.
const SHARD_INDEX: TableDefinition<(&[u8], &[u8]), ()> = TableDefinition::new("shard_index");
/// The owner index of the JSON format (dropped by the migration).
const LEGACY_OWNERS: TableDefinition<(&str, &[u8]), ()> = TableDefinition::new("owners");
const STAGING: TableDefinition<(&str, u64, u32), &[u8]> = TableDefinition::new("staging");
const PINSETS: TableDefinition<&str, &[u8]> = TableDefinition::new("pinsets");
const CONDITIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("conditions");
const COMMITS: TableDefinition<&str, &[u8]> = TableDefinition::new("commits");
const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
const LAST_APPLIED: &str = "last_applied";
const MEMBERSHIP: &str = "membership";
const SNAPSHOT: &str = "snapshot";
/// The storage format (absent: the JSON format of the first versions).
const FORMAT: &str = "format";
/// The dictionaries' epoch: raised when a snapshot replaces them.
const DICT_EPOCH: &str = "dict_epoch";

/// The dictionaries' epoch in `meta` (0 until a snapshot was installed).
fn epoch_of(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<u64, redb::StorageError> {
    Ok(meta
        .get(DICT_EPOCH)?
        .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
        .map_or(0, u64::from_le_bytes))
}
/// The storage format this code writes.
pub const STORAGE_FORMAT: u32 = 2;

/// redb's page cache for the state machine.
pub const STATE_CACHE_BYTES: usize = 64 << 20;

/// Longest time between two durable (fsync'd) apply transactions. The
/// ones between are committed without fsync: the Raft log (fsync'd before
/// an entry is acknowledged) holds every entry they applied, and after a
/// crash the state restarts from its last durable commit and Raft applies
/// the entries after it again: at start those up to the committed index
/// the log has on disk (written with each append, so it may lack the
/// last commits before the crash), the rest once a leader commits again.
/// Building a snapshot ends with a durable commit (`set_current_snapshot`)
/// before openraft purges the log behind it, so the log is never purged
/// past what the state holds on disk.
pub const DURABLE_APPLY_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Pins migrated per batch while converting a store of the JSON format.
const MIGRATION_BATCH: usize = 10_000;

type StoreResult<T> = Result<T, StorageError<NodeId>>;

fn err<E: std::error::Error + 'static>(e: E) -> AnyError {
    AnyError::new(&e)
}

fn read_err<E: std::error::Error + 'static>(e: E) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(err(e)).into()
}

fn write_err<E: std::error::Error + 'static>(e: E) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(err(e)).into()
}

/// Why a state database cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// redb failed.
    #[error("cannot open the state database")]
    Redb(#[from] redb::Error),
    /// The database was written by a newer pinfleet.
    #[error(
        "the state database has storage format {found}, newer than this pinfleet's {STORAGE_FORMAT}: \
         run the version that wrote it"
    )]
    Newer {
        /// The format found.
        found: u32,
    },
    /// Converting a database of an earlier format failed.
    #[error("cannot migrate the state database to format {STORAGE_FORMAT}")]
    Migration(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<redb::DatabaseError> for OpenError {
    fn from(e: redb::DatabaseError) -> Self {
        OpenError::Redb(e.into())
    }
}

impl From<redb::TableError> for OpenError {
    fn from(e: redb::TableError) -> Self {
        OpenError::Redb(e.into())
    }
}

impl From<redb::StorageError> for OpenError {
    fn from(e: redb::StorageError) -> Self {
        OpenError::Redb(e.into())
    }
}

impl From<redb::TransactionError> for OpenError {
    fn from(e: redb::TransactionError) -> Self {
        OpenError::Redb(e.into())
    }
}

impl From<redb::CommitError> for OpenError {
    fn from(e: redb::CommitError) -> Self {
        OpenError::Redb(e.into())
    }
}

/// The state machine of one peer, shared between Raft (writer) and the API
/// (readers). Cheap to clone.
#[derive(Clone)]
pub struct StateStore {
    db: Arc<Database>,
    snapshot_dir: PathBuf,
    /// Dictionary entries resolved so far (ids are never reused).
    dict: SharedDict,
    /// Snapshot files being received: openraft hands back only the file
    /// handle at install time, so the path is remembered here.
    receiving: Arc<std::sync::Mutex<Vec<PathBuf>>>,
    /// When an apply transaction was last committed durably (fsync'd).
    last_durable: Arc<std::sync::Mutex<std::time::Instant>>,
}

impl Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateStore")
    }
}

/// A read transaction's view of pins, resolving dictionary ids (what it
/// learns is shared once it is done).
struct View<'s> {
    store: &'s StateStore,
    pins: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    dict: redb::ReadOnlyTable<(u8, u64), &'static [u8]>,
    local: Dict,
    learnt: Learnt,
}

impl<'s> View<'s> {
    fn open(store: &'s StateStore, txn: &redb::ReadTransaction) -> StoreResult<Self> {
        let meta = txn.open_table(SM_META).map_err(read_err)?;
        let epoch = epoch_of(&meta).map_err(read_err)?;
        Ok(Self {
            store,
            pins: txn.open_table(PINS).map_err(read_err)?,
            dict: txn.open_table(DICT).map_err(read_err)?,
            local: Dict::of_epoch(epoch),
            learnt: Learnt {
                epoch,
                ..Learnt::default()
            },
        })
    }

    fn resolver(&mut self) -> Resolver<'_, redb::ReadOnlyTable<(u8, u64), &'static [u8]>> {
        Resolver::new(
            &self.store.dict,
            &self.dict,
            &mut self.local,
            &mut self.learnt,
        )
    }

    fn pin(&mut self, cid: CidKey, bytes: &[u8]) -> StoreResult<StatePin> {
        self.resolver().pin(cid, bytes).map_err(read_err)
    }

    fn get(&mut self, cid: &CidKey) -> StoreResult<Option<StatePin>> {
        let key = cid.cid().to_bytes();
        let bytes = match self.pins.get(key.as_slice()).map_err(read_err)? {
            Some(v) => v.value().to_vec(),
            None => return Ok(None),
        };
        self.pin(*cid, &bytes).map(Some)
    }

    /// Shares what this view resolved with later readers.
    fn done(self) {
        self.learnt.publish(&self.store.dict);
    }
}

impl StateStore {
    /// Opens (or creates) the state database at `path`; snapshots go to
    /// `snapshot_dir`. A database of the earlier JSON format is migrated
    /// to the current one in one transaction (it is left as it was if that
    /// fails); one of a newer format is refused.
    pub fn open(path: &Path, snapshot_dir: &Path) -> Result<Self, OpenError> {
        std::fs::create_dir_all(snapshot_dir).map_err(|e| OpenError::Redb(redb::Error::Io(e)))?;
        // Snapshots being received when the peer stopped are of no use now
        // (the leader sends again from the start).
        if let Ok(dir) = std::fs::read_dir(snapshot_dir) {
            for e in dir.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with("recv-") && name.ends_with(".tmp") {
                    let _ = std::fs::remove_file(e.path()); // best effort: only disk space
                }
            }
        }
        // redb's default cache is 1 GiB per database, which a peer holding
        // millions of pins fills: RSS would grow with the archive. The OS
        // page cache keeps hot pages of the file anyway.
        let db = Database::builder()
            .set_cache_size(STATE_CACHE_BYTES)
            .create(path)?;
        let store = Self {
            db: Arc::new(db),
            snapshot_dir: snapshot_dir.to_path_buf(),
            dict: SharedDict::default(),
            receiving: Arc::default(),
            last_durable: Arc::new(std::sync::Mutex::new(std::time::Instant::now())),
        };
        let txn = store.db.begin_write()?;
        let format = {
            let meta = txn.open_table(SM_META)?;
            meta.get(FORMAT)?
                .and_then(|v| std::str::from_utf8(v.value()).ok()?.parse::<u32>().ok())
        };
        if let Some(found) = format.filter(|f| *f > STORAGE_FORMAT) {
            return Err(OpenError::Newer { found });
        }
        txn.open_table(PINS)?;
        txn.open_table(OWNER_INDEX)?;
        txn.open_table(SHARD_INDEX)?;
        txn.open_table(DICT)?;
        txn.open_table(DICT_BY_VALUE)?;
        txn.open_table(STAGING)?;
        txn.open_table(PINSETS)?;
        txn.open_table(CONDITIONS)?;
        txn.open_table(COMMITS)?;
        changes::create(&txn)?;
        pinsvc::create(&txn)?;
        let indexed = pinsvc::reindex(&txn).map_err(|e| OpenError::Migration(Box::new(e)))?;
        if indexed > 0 {
            tracing::info!(
                requests = indexed,
                "Pinning Service request indexes rebuilt"
            );
        }
        if format.is_none() {
            let migrated = store
                .migrate(&txn)
                .map_err(|e| OpenError::Migration(Box::new(e)))?;
            if migrated > 0 {
                tracing::info!(
                    pins = migrated,
                    "state database migrated to storage format {STORAGE_FORMAT}"
                );
            }
            let mut meta = txn.open_table(SM_META)?;
            meta.insert(FORMAT, STORAGE_FORMAT.to_string().as_bytes())?;
        }
        txn.commit()?;
        Ok(store)
    }

    /// Rewrites every pin of the JSON format as a record, builds the owner
    /// index and drops the old one. Returns how many pins were rewritten.
    fn migrate(&self, txn: &redb::WriteTransaction) -> Result<u64, TxnError> {
        txn.delete_table(LEGACY_OWNERS)?;
        let mut done = 0u64;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let batch: Vec<(Vec<u8>, Vec<u8>)> = {
                let pins = txn.open_table(PINS)?;
                let range = match &after {
                    Some(k) => pins.range::<&[u8]>((
                        std::ops::Bound::Excluded(k.as_slice()),
                        std::ops::Bound::Unbounded,
                    ))?,
                    None => pins.range::<&[u8]>(..)?,
                };
                let mut batch = Vec::new();
                for item in range.take(MIGRATION_BATCH) {
                    let (k, v) = item?;
                    batch.push((k.value().to_vec(), v.value().to_vec()));
                }
                batch
            };
            let Some((last, _)) = batch.last() else {
                break;
            };
            after = Some(last.clone());
            let mut tables = TxnStore::open(txn, &SharedDict::default())?;
            for (k, v) in &batch {
                if v.first() != Some(&b'{') {
                    continue;
                }
                let pin = LegacyPin::decode(cid_of(k)?, v)?;
                tables.put_fresh(&pin)?;
                done += 1;
            }
            // Nothing to share: the cache fills again from the tables.
            tables.finish()?;
        }
        Ok(done)
    }

    async fn blocking<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&StateStore) -> StoreResult<T> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(read_err)?
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> StoreResult<Option<T>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(SM_META).map_err(read_err)?;
        match table.get(key).map_err(read_err)? {
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(read_err),
            None => Ok(None),
        }
    }

    /// One pin, or `None`.
    pub fn get(&self, cid: &CidKey) -> Result<Option<StatePin>, StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let mut view = View::open(self, &txn)?;
        let pin = view.get(cid)?;
        view.done();
        Ok(pin)
    }

    /// The pins `cids` name (`None` where absent), in their order, from one
    /// read transaction: what a batch needs costs one transaction, not one
    /// per pin.
    pub fn get_many(&self, cids: &[CidKey]) -> Result<Vec<Option<StatePin>>, StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let mut view = View::open(self, &txn)?;
        let pins = cids
            .iter()
            .map(|cid| view.get(cid))
            .collect::<StoreResult<Vec<_>>>()?;
        view.done();
        Ok(pins)
    }

    /// The cluster DAG and shards of the sharded pin `meta`, in CID-bytes
    /// order (empty for any other pin).
    pub fn shard_members(&self, meta: &CidKey) -> Result<Vec<CidKey>, StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let index = txn.open_table(SHARD_INDEX).map_err(read_err)?;
        txn::members_of(&index, meta).map_err(read_err)
    }

    /// Overwrites the stored record of `cid` with bytes that do not decode,
    /// to simulate a damaged state in tests (readers then fail on it). Only
    /// with the `testkit` feature.
    #[cfg(any(test, feature = "testkit"))]
    pub fn corrupt_pin_for_tests(&self, cid: &CidKey) -> Result<(), StorageError<NodeId>> {
        let txn = self.db.begin_write().map_err(write_err)?;
        {
            let mut pins = txn.open_table(PINS).map_err(write_err)?;
            let key = cid.cid().to_bytes();
            pins.insert(key.as_slice(), b"\xff\xfenot a record".as_slice())
                .map_err(write_err)?;
        }
        txn.commit().map_err(write_err)
    }

    /// Number of pins.
    pub fn pin_count(&self) -> Result<u64, StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(PINS).map_err(read_err)?;
        table.len().map_err(read_err)
    }

    /// Calls `f` for every pin in CID order, from one consistent read
    /// transaction, until it returns false. Blocking: run it off the runtime.
    pub fn for_each_pin(
        &self,
        mut f: impl FnMut(StatePin) -> bool,
    ) -> Result<(), StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let mut view = View::open(self, &txn)?;
        let pins = txn.open_table(PINS).map_err(read_err)?;
        for item in pins.iter().map_err(read_err)? {
            let (k, v) = item.map_err(read_err)?;
            let cid = cid_of(k.value()).map_err(read_err)?;
            if !f(view.pin(cid, v.value())?) {
                break;
            }
        }
        view.done();
        Ok(())
    }

    /// The pins whose CIDs sort between `first` and `last` (inclusive, in
    /// the store's order: by CID bytes), from one read transaction. Status
    /// pages are such ranges, so a peer can answer for a page without one
    /// lookup per CID. At most `limit` pins are read: a page of one
    /// owner's pins may span the whole state (its CIDs interleave with
    /// other owners'), and the caller only needs to know it is not a range.
    pub fn pins_in_range(
        &self,
        first: &CidKey,
        last: &CidKey,
        limit: usize,
    ) -> Result<Vec<StatePin>, StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let mut view = View::open(self, &txn)?;
        let pins = txn.open_table(PINS).map_err(read_err)?;
        let (lo, hi) = (first.cid().to_bytes(), last.cid().to_bytes());
        let mut out = Vec::new();
        for item in pins
            .range(lo.as_slice()..=hi.as_slice())
            .map_err(read_err)?
            .take(limit)
        {
            let (k, v) = item.map_err(read_err)?;
            let cid = cid_of(k.value()).map_err(read_err)?;
            out.push(view.pin(cid, v.value())?);
        }
        view.done();
        Ok(out)
    }

    /// Up to `limit` pins in CID-bytes order after `after` (from the first
    /// when `None`), from one read transaction: a walk of the whole state
    /// page by page, holding no read transaction between pages.
    pub fn pins_after(
        &self,
        after: Option<&CidKey>,
        limit: usize,
    ) -> Result<Vec<StatePin>, StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let mut view = View::open(self, &txn)?;
        let pins = txn.open_table(PINS).map_err(read_err)?;
        let start = after.map(|c| c.cid().to_bytes());
        let range = match &start {
            Some(s) => pins.range::<&[u8]>((
                std::ops::Bound::Excluded(s.as_slice()),
                std::ops::Bound::Unbounded,
            )),
            None => pins.range::<&[u8]>(..),
        }
        .map_err(read_err)?;
        let mut out = Vec::new();
        for item in range.take(limit) {
            let (k, v) = item.map_err(read_err)?;
            let cid = cid_of(k.value()).map_err(read_err)?;
            out.push(view.pin(cid, v.value())?);
        }
        view.done();
        Ok(out)
    }

    /// The dictionary id of `owner`, if it ever held a pin.
    fn owner_id(&self, txn: &redb::ReadTransaction, owner: &Owner) -> StoreResult<Option<u64>> {
        let key = owner.to_string();
        let meta = txn.open_table(SM_META).map_err(read_err)?;
        let epoch = epoch_of(&meta).map_err(read_err)?;
        if let Some(id) = self.dict.read().ok().and_then(|d| d.owner_id(epoch, &key)) {
            return Ok(Some(id));
        }
        let by_value = txn.open_table(DICT_BY_VALUE).map_err(read_err)?;
        Ok(by_value
            .get((OWNER, key.as_bytes()))
            .map_err(read_err)?
            .map(|v| v.value()))
    }

    /// The pins `owner` holds, with the spec it recorded for each.
    pub fn owned_by(
        &self,
        owner: &Owner,
    ) -> Result<crate::manifest::OwnedPins, StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let mut out = crate::manifest::OwnedPins::new();
        let Some(id) = self.owner_id(&txn, owner)? else {
            return Ok(out);
        };
        let mut view = View::open(self, &txn)?;
        let index = txn.open_table(OWNER_INDEX).map_err(read_err)?;
        let lo: &[u8] = &[];
        for item in index.range((id, lo)..(id + 1, lo)).map_err(read_err)? {
            let (k, _) = item.map_err(read_err)?;
            let (_, cid_bytes) = k.value();
            let Some(v) = view.pins.get(cid_bytes).map_err(read_err)? else {
                continue;
            };
            let bytes = v.value().to_vec();
            let cid = cid_of(cid_bytes).map_err(read_err)?;
            if let Some(spec) = view.resolver().spec_of(id, &bytes).map_err(read_err)? {
                out.insert(cid, spec);
            }
        }
        view.done();
        Ok(out)
    }

    /// Up to `limit` of the pins `owner` holds, in CID-bytes order, after
    /// `after` (from the first when `None`), from one read transaction: a
    /// page of a PinSet's pins without reading the others.
    pub fn owned_pins_after(
        &self,
        owner: &Owner,
        after: Option<&CidKey>,
        limit: usize,
    ) -> Result<Vec<StatePin>, StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let Some(id) = self.owner_id(&txn, owner)? else {
            return Ok(Vec::new());
        };
        let mut view = View::open(self, &txn)?;
        let index = txn.open_table(OWNER_INDEX).map_err(read_err)?;
        let lo: &[u8] = &[];
        let start = after.map(|c| c.cid().to_bytes());
        let range = match &start {
            Some(s) => index.range((id, s.as_slice())..(id + 1, lo)),
            None => index.range((id, lo)..(id + 1, lo)),
        }
        .map_err(read_err)?;
        let mut out = Vec::new();
        for item in range {
            if out.len() >= limit {
                break;
            }
            let (k, _) = item.map_err(read_err)?;
            let (_, cid_bytes) = k.value();
            if start.as_deref() == Some(cid_bytes) {
                continue;
            }
            let Some(v) = view.pins.get(cid_bytes).map_err(read_err)? else {
                continue;
            };
            let bytes = v.value().to_vec();
            let cid = cid_of(cid_bytes).map_err(read_err)?;
            out.push(view.pin(cid, &bytes)?);
        }
        view.done();
        Ok(out)
    }

    /// The spec `owner` recorded for each of `cids` (`None` where it holds
    /// no such pin), from one read transaction: what a patch changes,
    /// without reading every pin the owner holds.
    pub fn owner_specs(
        &self,
        owner: &Owner,
        cids: &[CidKey],
    ) -> Result<Vec<Option<PinSpec>>, StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let Some(id) = self.owner_id(&txn, owner)? else {
            return Ok(vec![None; cids.len()]);
        };
        let mut view = View::open(self, &txn)?;
        let mut out = Vec::with_capacity(cids.len());
        for cid in cids {
            let key = cid.cid().to_bytes();
            let bytes = match view.pins.get(key.as_slice()).map_err(read_err)? {
                Some(v) => v.value().to_vec(),
                None => {
                    out.push(None);
                    continue;
                }
            };
            out.push(view.resolver().spec_of(id, &bytes).map_err(read_err)?);
        }
        view.done();
        Ok(out)
    }

    /// Every recorded PinSet.
    pub fn pinsets(&self) -> Result<Vec<(Owner, PinSetRecord)>, StorageError<NodeId>> {
        self.by_owner(PINSETS)
    }

    /// Every controller conditions report, by owner (a PinSet that never
    /// applied, e.g. an invalid manifest, is known only by its report).
    pub fn reported(&self) -> Result<Vec<(Owner, ConditionsRecord)>, StorageError<NodeId>> {
        self.by_owner(CONDITIONS)
    }

    /// Every JSON record of `table`, a table keyed by owner.
    fn by_owner<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<(Owner, T)>, StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(table).map_err(read_err)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(read_err)? {
            let (k, v) = item.map_err(read_err)?;
            let owner: Owner = k.value().parse().map_err(read_err)?;
            out.push((owner, serde_json::from_slice(v.value()).map_err(read_err)?));
        }
        Ok(out)
    }

    /// The PinSet recorded for `owner`, if any.
    pub fn pinset(&self, owner: &Owner) -> Result<Option<PinSetRecord>, StorageError<NodeId>> {
        self.record(PINSETS, owner)
    }

    /// The conditions a controller last reported for `owner`, if any.
    pub fn conditions(
        &self,
        owner: &Owner,
    ) -> Result<Option<ConditionsRecord>, StorageError<NodeId>> {
        self.record(CONDITIONS, owner)
    }

    /// The generation of `owner` (commits applied for it; 0 if none): the
    /// base a commit planned now names.
    pub fn generation(&self, owner: &Owner) -> Result<u64, StorageError<NodeId>> {
        Ok(self
            .record::<CommitRecord>(COMMITS, owner)?
            .map_or(0, |r| r.generation))
    }

    fn record<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        owner: &Owner,
    ) -> StoreResult<Option<T>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(table).map_err(read_err)?;
        match table.get(owner.to_string().as_str()).map_err(read_err)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    /// The membership the state last applied (the trusted peers, on a
    /// follower).
    pub fn membership(&self) -> Result<StoredMembership<NodeId, PeerNode>, StorageError<NodeId>> {
        Ok(self.meta(MEMBERSHIP)?.unwrap_or_default())
    }

    /// The current snapshot's metadata and file, if there is one on disk.
    pub fn current_snapshot(
        &self,
    ) -> StoreResult<Option<(SnapshotMeta<NodeId, PeerNode>, PathBuf)>> {
        let Some(meta) = self.meta::<SnapshotMeta<NodeId, PeerNode>>(SNAPSHOT)? else {
            return Ok(None);
        };
        let path = self.snapshot_dir.join(format!("{}.snap", meta.snapshot_id));
        Ok(path.is_file().then_some((meta, path)))
    }

    /// The last log id applied to this state.
    pub fn last_applied(&self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.meta::<Option<LogId<NodeId>>>(LAST_APPLIED)?.flatten())
    }

    fn apply_batch(&self, entries: Vec<openraft::Entry<TypeConfig>>) -> StoreResult<Vec<Outcome>> {
        let mut txn = self.db.begin_write().map_err(write_err)?;
        let durable = self.durable_now(&entries);
        if !durable {
            txn.set_durability(redb::Durability::None)
                .map_err(write_err)?;
        }
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut last = None;
        let mut membership = None;
        let learnt = {
            let mut store =
                changes::Recording::new(TxnStore::open(&txn, &self.dict).map_err(write_err)?);
            for entry in entries {
                last = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => outcomes.push(Outcome::default()),
                    EntryPayload::Normal(req) => {
                        outcomes.push(apply(&mut store, &req).map_err(write_err)?)
                    }
                    EntryPayload::Membership(m) => {
                        membership = Some(StoredMembership::new(Some(entry.log_id), m));
                        outcomes.push(Outcome::default());
                    }
                }
            }
            let tables = store.write(&txn).map_err(write_err)?;
            let learnt = tables.finish().map_err(write_err)?;
            let mut meta = txn.open_table(SM_META).map_err(write_err)?;
            let last_bytes = serde_json::to_vec(&last).map_err(write_err)?;
            meta.insert(LAST_APPLIED, last_bytes.as_slice())
                .map_err(write_err)?;
            if let Some(m) = membership {
                let bytes = serde_json::to_vec(&m).map_err(write_err)?;
                meta.insert(MEMBERSHIP, bytes.as_slice())
                    .map_err(write_err)?;
            }
            learnt
        };
        txn.commit().map_err(write_err)?;
        if durable {
            *lock(&self.last_durable) = std::time::Instant::now();
        }
        learnt.publish(&self.dict);
        Ok(outcomes)
    }

    /// Makes every apply so far durable (one empty fsync'd commit): at a
    /// clean stop, so the next start has nothing to apply again.
    pub fn flush(&self) -> Result<(), redb::Error> {
        self.db.begin_write()?.commit()?;
        *lock(&self.last_durable) = std::time::Instant::now();
        Ok(())
    }

    /// Whether the apply of `entries` commits durably: one apply per
    /// [`DURABLE_APPLY_EVERY`], and any that changes the membership (rare;
    /// a restarted peer then reads the current members from its state
    /// before it has applied anything again).
    fn durable_now(&self, entries: &[openraft::Entry<TypeConfig>]) -> bool {
        entries
            .iter()
            .any(|e| matches!(e.payload, EntryPayload::Membership(_)))
            || lock(&self.last_durable).elapsed() >= DURABLE_APPLY_EVERY
    }
}

/// The guarded value; a poisoned lock still holds a usable `Instant`.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RaftSnapshotBuilder<TypeConfig> for StateStore {
    async fn build_snapshot(&mut self) -> StoreResult<Snapshot<TypeConfig>> {
        let (meta, path) = self.blocking(|s| s.write_snapshot_file()).await?;
        let file = tokio::fs::File::open(&path).await.map_err(read_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StoreResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, PeerNode>)> {
        self.blocking(|s| {
            let last = s.meta::<Option<LogId<NodeId>>>(LAST_APPLIED)?.flatten();
            let membership = s.meta(MEMBERSHIP)?.unwrap_or_default();
            Ok((last, membership))
        })
        .await
    }

    async fn apply<I>(&mut self, entries: I) -> StoreResult<Vec<Outcome>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        self.blocking(move |s| s.apply_batch(entries)).await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StoreResult<Box<tokio::fs::File>> {
        let path = self
            .snapshot_dir
            .join(format!("recv-{}.tmp", rand::random::<u64>()));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(write_err)?;
        self.receiving
            .lock()
            .map_err(|_| write_err(std::io::Error::other("poisoned")))?
            .push(path);
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, PeerNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> StoreResult<()> {
        use tokio::io::AsyncWriteExt;
        let mut f = *snapshot;
        f.flush().await.map_err(write_err)?;
        f.sync_all().await.map_err(write_err)?;
        drop(f);
        let (path, abandoned) = {
            let mut receiving = self
                .receiving
                .lock()
                .map_err(|_| write_err(std::io::Error::other("poisoned")))?;
            let path = receiving
                .pop()
                .ok_or_else(|| write_err(std::io::Error::other("no snapshot being received")))?;
            (path, std::mem::take(&mut *receiving))
        };
        // openraft installs the stream it received last; earlier ones were
        // abandoned (the leader started again): only disk space now.
        for old in abandoned {
            let _ = tokio::fs::remove_file(old).await; // best effort
        }
        let meta = meta.clone();
        self.blocking(move |s| s.install_from(&meta, &path)).await
    }

    async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot<TypeConfig>>> {
        let Some(meta) = self
            .blocking(|s| s.meta::<SnapshotMeta<NodeId, PeerNode>>(SNAPSHOT))
            .await?
        else {
            return Ok(None);
        };
        let path = self.snapshot_dir.join(format!("{}.snap", meta.snapshot_id));
        match tokio::fs::File::open(&path).await {
            Ok(file) => Ok(Some(Snapshot {
                meta,
                snapshot: Box::new(file),
            })),
            Err(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests;
