//! The state machine on disk (redb): pins keyed by CID with an owner index,
//! staged revision chunks, PinSet records, per-owner commit records
//! (generation, last attempt), and Raft's applied position. One
//! redb write transaction per batch of applied log entries, so a revision
//! committed in one entry becomes visible to readers all at once.
//!
//! Snapshots are files under `<dir>/snapshots/`: a JSON header line, then one
//! JSON record per line, so building and installing them streams.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{BufRead, BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{NodeId, PeerNode, TypeConfig};
use crate::manifest::{CidKey, Owner, PinSpec};
use crate::state::{
    CommitRecord, ConditionsRecord, Op, Outcome, PinSetRecord, PinStore, StatePin, apply,
};

mod changes;
pub use changes::{CHANGES_KEPT, ChangePage};

const PINS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("pins");
const OWNERS: TableDefinition<(&str, &[u8]), ()> = TableDefinition::new("owners");
const STAGING: TableDefinition<(&str, u64, u32), &[u8]> = TableDefinition::new("staging");
const PINSETS: TableDefinition<&str, &[u8]> = TableDefinition::new("pinsets");
const CONDITIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("conditions");
const COMMITS: TableDefinition<&str, &[u8]> = TableDefinition::new("commits");
const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
const LAST_APPLIED: &str = "last_applied";
const MEMBERSHIP: &str = "membership";
const SNAPSHOT: &str = "snapshot";

/// redb's page cache for the state machine.
pub const STATE_CACHE_BYTES: usize = 64 << 20;

/// Snapshot file format version; bump on any incompatible change.
/// Version 2 adds `commits` records (version 1 files are still read: their
/// owners start at generation 0).
pub const SNAPSHOT_VERSION: u32 = 2;

/// A pin as stored (the CID is the key).
#[derive(Serialize, Deserialize)]
struct StoredPin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    w: Option<Box<str>>,
    o: BTreeMap<Owner, PinSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    a: Vec<String>,
    t: i64,
}

#[derive(Serialize, Deserialize)]
struct StagedChunk {
    at: i64,
    ops: Vec<Op>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    format: String,
    version: u32,
    meta: SnapshotMeta<NodeId, PeerNode>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "t")]
enum SnapshotRecord {
    #[serde(rename = "pin")]
    Pin { cid: CidKey, pin: StoredPin },
    #[serde(rename = "staged")]
    Staged {
        owner: String,
        revision: u64,
        seq: u32,
        chunk: StagedChunk,
    },
    #[serde(rename = "pinset")]
    PinSet { owner: String, record: PinSetRecord },
    #[serde(rename = "conditions")]
    Conditions {
        owner: String,
        record: ConditionsRecord,
    },
    #[serde(rename = "commits")]
    Commits { owner: String, record: CommitRecord },
}

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

fn decode_pin(cid: CidKey, bytes: &[u8]) -> Result<StatePin, serde_json::Error> {
    let p: StoredPin = serde_json::from_slice(bytes)?;
    Ok(StatePin {
        cid,
        written_as: p.w,
        owners: p.o,
        allocations: p.a,
        timestamp_ms: p.t,
    })
}

fn encode_pin(pin: &StatePin) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&StoredPin {
        w: pin.written_as.clone(),
        o: pin.owners.clone(),
        a: pin.allocations.clone(),
        t: pin.timestamp_ms,
    })
}

/// The state machine of one peer, shared between Raft (writer) and the API
/// (readers). Cheap to clone.
#[derive(Clone)]
pub struct StateStore {
    db: Arc<Database>,
    snapshot_dir: PathBuf,
    /// Snapshot files being received: openraft hands back only the file
    /// handle at install time, so the path is remembered here.
    receiving: Arc<std::sync::Mutex<Vec<PathBuf>>>,
}

impl Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateStore")
    }
}

/// The tables of one write transaction, seen as a `PinStore`.
struct TxnStore<'t> {
    pins: redb::Table<'t, &'static [u8], &'static [u8]>,
    owners: redb::Table<'t, (&'static str, &'static [u8]), ()>,
    staging: redb::Table<'t, (&'static str, u64, u32), &'static [u8]>,
    pinsets: redb::Table<'t, &'static str, &'static [u8]>,
    conditions: redb::Table<'t, &'static str, &'static [u8]>,
    commits: redb::Table<'t, &'static str, &'static [u8]>,
}

impl<'t> TxnStore<'t> {
    fn open(txn: &'t redb::WriteTransaction) -> Result<Self, redb::TableError> {
        Ok(Self {
            pins: txn.open_table(PINS)?,
            owners: txn.open_table(OWNERS)?,
            staging: txn.open_table(STAGING)?,
            pinsets: txn.open_table(PINSETS)?,
            conditions: txn.open_table(CONDITIONS)?,
            commits: txn.open_table(COMMITS)?,
        })
    }
}

/// Errors inside an apply transaction.
#[derive(Debug, thiserror::Error)]
enum TxnError {
    #[error("storage")]
    Redb(#[from] redb::Error),
    #[error("encoding")]
    Json(#[from] serde_json::Error),
}

impl From<redb::StorageError> for TxnError {
    fn from(e: redb::StorageError) -> Self {
        TxnError::Redb(e.into())
    }
}

impl PinStore for TxnStore<'_> {
    type Error = TxnError;

    fn get(&self, cid: &CidKey) -> Result<Option<StatePin>, TxnError> {
        let key = cid.cid().to_bytes();
        match self.pins.get(key.as_slice())? {
            Some(v) => Ok(Some(decode_pin(*cid, v.value())?)),
            None => Ok(None),
        }
    }

    fn put(&mut self, pin: &StatePin, before: Option<&StatePin>) -> Result<(), TxnError> {
        let key = pin.cid.cid().to_bytes();
        if let Some(b) = before {
            for o in b.owners.keys().filter(|o| !pin.owners.contains_key(*o)) {
                self.owners
                    .remove((o.to_string().as_str(), key.as_slice()))?;
            }
        }
        for o in pin.owners.keys() {
            if before.is_none_or(|b| !b.owners.contains_key(o)) {
                self.owners
                    .insert((o.to_string().as_str(), key.as_slice()), ())?;
            }
        }
        self.pins
            .insert(key.as_slice(), encode_pin(pin)?.as_slice())?;
        Ok(())
    }

    fn remove(&mut self, before: &StatePin) -> Result<(), TxnError> {
        let key = before.cid.cid().to_bytes();
        for o in before.owners.keys() {
            self.owners
                .remove((o.to_string().as_str(), key.as_slice()))?;
        }
        self.pins.remove(key.as_slice())?;
        Ok(())
    }

    fn stage(
        &mut self,
        owner: &Owner,
        revision: u64,
        seq: u32,
        now_ms: i64,
        ops: &[Op],
    ) -> Result<(), TxnError> {
        let chunk = serde_json::to_vec(&StagedChunk {
            at: now_ms,
            ops: ops.to_vec(),
        })?;
        self.staging.insert(
            (owner.to_string().as_str(), revision, seq),
            chunk.as_slice(),
        )?;
        Ok(())
    }

    fn take_staged(&mut self, owner: &Owner, revision: u64) -> Result<Vec<Vec<Op>>, TxnError> {
        let o = owner.to_string();
        let mut out = Vec::new();
        let mut seqs = Vec::new();
        for item in self
            .staging
            .range((o.as_str(), revision, 0)..=(o.as_str(), revision, u32::MAX))?
        {
            let (k, v) = item?;
            let chunk: StagedChunk = serde_json::from_slice(v.value())?;
            seqs.push(k.value().2);
            out.push(chunk.ops);
        }
        for seq in seqs {
            self.staging.remove((o.as_str(), revision, seq))?;
        }
        Ok(out)
    }

    fn expire_staged(&mut self, older_than_ms: i64) -> Result<(), TxnError> {
        self.staging.retain(|_, v| {
            serde_json::from_slice::<StagedChunk>(v).is_ok_and(|c| c.at >= older_than_ms)
        })?;
        Ok(())
    }

    fn set_conditions(
        &mut self,
        owner: &Owner,
        record: Option<&ConditionsRecord>,
    ) -> Result<(), TxnError> {
        let key = owner.to_string();
        match record {
            Some(r) => {
                self.conditions
                    .insert(key.as_str(), serde_json::to_vec(r)?.as_slice())?;
            }
            None => {
                self.conditions.remove(key.as_str())?;
            }
        }
        Ok(())
    }

    fn commits(&self, owner: &Owner) -> Result<Option<CommitRecord>, TxnError> {
        match self.commits.get(owner.to_string().as_str())? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    fn set_commits(&mut self, owner: &Owner, record: &CommitRecord) -> Result<(), TxnError> {
        self.commits.insert(
            owner.to_string().as_str(),
            serde_json::to_vec(record)?.as_slice(),
        )?;
        Ok(())
    }

    fn set_pinset(&mut self, owner: &Owner, record: Option<&PinSetRecord>) -> Result<(), TxnError> {
        let key = owner.to_string();
        match record {
            Some(r) => {
                self.pinsets
                    .insert(key.as_str(), serde_json::to_vec(r)?.as_slice())?;
            }
            None => {
                self.pinsets.remove(key.as_str())?;
            }
        }
        Ok(())
    }
}

impl StateStore {
    /// Opens (or creates) the state database at `path`; snapshots go to
    /// `snapshot_dir`.
    pub fn open(path: &Path, snapshot_dir: &Path) -> Result<Self, redb::Error> {
        std::fs::create_dir_all(snapshot_dir).map_err(redb::Error::Io)?;
        // redb's default cache is 1 GiB per database, which a peer holding
        // millions of pins fills: RSS would grow with the archive. The OS
        // page cache keeps hot pages of the file anyway.
        let db = Database::builder()
            .set_cache_size(STATE_CACHE_BYTES)
            .create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(PINS)?;
        txn.open_table(OWNERS)?;
        txn.open_table(STAGING)?;
        txn.open_table(PINSETS)?;
        txn.open_table(CONDITIONS)?;
        txn.open_table(COMMITS)?;
        txn.open_table(SM_META)?;
        changes::create(&txn)?;
        txn.commit()?;
        Ok(Self {
            db: Arc::new(db),
            snapshot_dir: snapshot_dir.to_path_buf(),
            receiving: Arc::default(),
        })
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
        let table = txn.open_table(PINS).map_err(read_err)?;
        let key = cid.cid().to_bytes();
        match table.get(key.as_slice()).map_err(read_err)? {
            Some(v) => decode_pin(*cid, v.value()).map(Some).map_err(read_err),
            None => Ok(None),
        }
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
        let table = txn.open_table(PINS).map_err(read_err)?;
        for item in table.iter().map_err(read_err)? {
            let (k, v) = item.map_err(read_err)?;
            let cid = cid::Cid::try_from(k.value())
                .map_err(read_err)
                .and_then(|c| CidKey::from_cid(c).map_err(read_err))?;
            if !f(decode_pin(cid, v.value()).map_err(read_err)?) {
                break;
            }
        }
        Ok(())
    }

    /// The pins whose CIDs sort between `first` and `last` (inclusive, in
    /// the store's order: by CID bytes), from one read transaction. Status
    /// pages are such ranges, so a peer can answer for a page without one
    /// lookup per CID.
    pub fn pins_in_range(
        &self,
        first: &CidKey,
        last: &CidKey,
    ) -> Result<Vec<StatePin>, StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(PINS).map_err(read_err)?;
        let (lo, hi) = (first.cid().to_bytes(), last.cid().to_bytes());
        let mut out = Vec::new();
        for item in table
            .range(lo.as_slice()..=hi.as_slice())
            .map_err(read_err)?
        {
            let (k, v) = item.map_err(read_err)?;
            let cid = cid::Cid::try_from(k.value())
                .map_err(read_err)
                .and_then(|c| CidKey::from_cid(c).map_err(read_err))?;
            out.push(decode_pin(cid, v.value()).map_err(read_err)?);
        }
        Ok(out)
    }

    /// The pins `owner` holds, with the spec it recorded for each.
    pub fn owned_by(
        &self,
        owner: &Owner,
    ) -> Result<crate::manifest::OwnedPins, StorageError<NodeId>> {
        let o = owner.to_string();
        let txn = self.db.begin_read().map_err(read_err)?;
        let index = txn.open_table(OWNERS).map_err(read_err)?;
        let pins = txn.open_table(PINS).map_err(read_err)?;
        let mut out = crate::manifest::OwnedPins::new();
        let lo: &[u8] = &[];
        for item in index.range((o.as_str(), lo)..).map_err(read_err)? {
            let (k, _) = item.map_err(read_err)?;
            let (owner_key, cid_bytes) = k.value();
            if owner_key != o {
                break;
            }
            let Some(v) = pins.get(cid_bytes).map_err(read_err)? else {
                continue;
            };
            let cid = cid::Cid::try_from(cid_bytes)
                .map_err(read_err)
                .and_then(|c| CidKey::from_cid(c).map_err(read_err))?;
            let pin = decode_pin(cid, v.value()).map_err(read_err)?;
            if let Some(spec) = pin.owners.get(owner) {
                out.insert(cid, spec.clone());
            }
        }
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
        let pins = txn.open_table(PINS).map_err(read_err)?;
        let mut out = Vec::with_capacity(cids.len());
        for cid in cids {
            let key = cid.cid().to_bytes();
            let spec = match pins.get(key.as_slice()).map_err(read_err)? {
                Some(v) => decode_pin(*cid, v.value())
                    .map_err(read_err)?
                    .owners
                    .remove(owner),
                None => None,
            };
            out.push(spec);
        }
        Ok(out)
    }

    /// Every recorded PinSet.
    pub fn pinsets(&self) -> Result<Vec<(Owner, PinSetRecord)>, StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(PINSETS).map_err(read_err)?;
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
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(PINSETS).map_err(read_err)?;
        match table.get(owner.to_string().as_str()).map_err(read_err)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    /// The conditions a controller last reported for `owner`, if any.
    pub fn conditions(
        &self,
        owner: &Owner,
    ) -> Result<Option<ConditionsRecord>, StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(CONDITIONS).map_err(read_err)?;
        match table.get(owner.to_string().as_str()).map_err(read_err)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    /// The generation of `owner` (commits applied for it; 0 if none): the
    /// base a commit planned now names.
    pub fn generation(&self, owner: &Owner) -> Result<u64, StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(COMMITS).map_err(read_err)?;
        match table.get(owner.to_string().as_str()).map_err(read_err)? {
            Some(v) => serde_json::from_slice::<CommitRecord>(v.value())
                .map(|r| r.generation)
                .map_err(read_err),
            None => Ok(0),
        }
    }

    /// The last log id applied to this state.
    pub fn last_applied(&self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.meta::<Option<LogId<NodeId>>>(LAST_APPLIED)?.flatten())
    }

    fn apply_batch(&self, entries: Vec<openraft::Entry<TypeConfig>>) -> StoreResult<Vec<Outcome>> {
        let txn = self.db.begin_write().map_err(write_err)?;
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut last = None;
        let mut membership = None;
        {
            let mut store = changes::Recording::new(TxnStore::open(&txn).map_err(write_err)?);
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
            store.write(&txn).map_err(write_err)?;
            let mut meta = txn.open_table(SM_META).map_err(write_err)?;
            let last_bytes = serde_json::to_vec(&last).map_err(write_err)?;
            meta.insert(LAST_APPLIED, last_bytes.as_slice())
                .map_err(write_err)?;
            if let Some(m) = membership {
                let bytes = serde_json::to_vec(&m).map_err(write_err)?;
                meta.insert(MEMBERSHIP, bytes.as_slice())
                    .map_err(write_err)?;
            }
        }
        txn.commit().map_err(write_err)?;
        Ok(outcomes)
    }

    fn write_snapshot_file(&self) -> StoreResult<(SnapshotMeta<NodeId, PeerNode>, PathBuf)> {
        // One read transaction: the snapshot is a consistent cut.
        let txn = self.db.begin_read().map_err(read_err)?;
        let meta_table = txn.open_table(SM_META).map_err(read_err)?;
        let get_meta = |key: &str| -> StoreResult<Option<Vec<u8>>> {
            Ok(meta_table
                .get(key)
                .map_err(read_err)?
                .map(|v| v.value().to_vec()))
        };
        let last_applied: Option<LogId<NodeId>> = match get_meta(LAST_APPLIED)? {
            Some(b) => serde_json::from_slice(&b).map_err(read_err)?,
            None => None,
        };
        let membership: StoredMembership<NodeId, PeerNode> = match get_meta(MEMBERSHIP)? {
            Some(b) => serde_json::from_slice(&b).map_err(read_err)?,
            None => StoredMembership::default(),
        };
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, rand::random::<u32>()),
            None => format!("0-0-{}", rand::random::<u32>()),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let path = self.snapshot_dir.join(format!("{}.snap", meta.snapshot_id));
        let tmp = path.with_extension("tmp");
        let file = std::fs::File::create(&tmp).map_err(write_err)?;
        let mut w = BufWriter::new(file);
        let header = SnapshotHeader {
            format: "pinfleet-snapshot".into(),
            version: SNAPSHOT_VERSION,
            meta: meta.clone(),
        };
        let line = |w: &mut BufWriter<std::fs::File>, v: &dyn erased::Json| -> StoreResult<()> {
            v.write_line(w).map_err(write_err)
        };
        line(&mut w, &header)?;
        let pins = txn.open_table(PINS).map_err(read_err)?;
        for item in pins.iter().map_err(read_err)? {
            let (k, v) = item.map_err(read_err)?;
            let cid = cid::Cid::try_from(k.value())
                .map_err(read_err)
                .and_then(|c| CidKey::from_cid(c).map_err(read_err))?;
            let pin: StoredPin = serde_json::from_slice(v.value()).map_err(read_err)?;
            line(&mut w, &SnapshotRecord::Pin { cid, pin })?;
        }
        let staging = txn.open_table(STAGING).map_err(read_err)?;
        for item in staging.iter().map_err(read_err)? {
            let (k, v) = item.map_err(read_err)?;
            let (owner, revision, seq) = k.value();
            let chunk: StagedChunk = serde_json::from_slice(v.value()).map_err(read_err)?;
            line(
                &mut w,
                &SnapshotRecord::Staged {
                    owner: owner.to_string(),
                    revision,
                    seq,
                    chunk,
                },
            )?;
        }
        let pinsets = txn.open_table(PINSETS).map_err(read_err)?;
        for item in pinsets.iter().map_err(read_err)? {
            let (k, v) = item.map_err(read_err)?;
            let record: PinSetRecord = serde_json::from_slice(v.value()).map_err(read_err)?;
            line(
                &mut w,
                &SnapshotRecord::PinSet {
                    owner: k.value().to_string(),
                    record,
                },
            )?;
        }
        let conditions = txn.open_table(CONDITIONS).map_err(read_err)?;
        for item in conditions.iter().map_err(read_err)? {
            let (k, v) = item.map_err(read_err)?;
            let record: ConditionsRecord = serde_json::from_slice(v.value()).map_err(read_err)?;
            line(
                &mut w,
                &SnapshotRecord::Conditions {
                    owner: k.value().to_string(),
                    record,
                },
            )?;
        }
        let commits = txn.open_table(COMMITS).map_err(read_err)?;
        for item in commits.iter().map_err(read_err)? {
            let (k, v) = item.map_err(read_err)?;
            let record: CommitRecord = serde_json::from_slice(v.value()).map_err(read_err)?;
            line(
                &mut w,
                &SnapshotRecord::Commits {
                    owner: k.value().to_string(),
                    record,
                },
            )?;
        }
        let file = w.into_inner().map_err(|e| write_err(e.into_error()))?;
        file.sync_all().map_err(write_err)?;
        std::fs::rename(&tmp, &path).map_err(write_err)?;
        self.set_current_snapshot(&meta)?;
        Ok((meta, path))
    }

    fn set_current_snapshot(&self, meta: &SnapshotMeta<NodeId, PeerNode>) -> StoreResult<()> {
        let txn = self.db.begin_write().map_err(write_err)?;
        {
            let mut t = txn.open_table(SM_META).map_err(write_err)?;
            let bytes = serde_json::to_vec(meta).map_err(write_err)?;
            t.insert(SNAPSHOT, bytes.as_slice()).map_err(write_err)?;
        }
        txn.commit().map_err(write_err)?;
        // Older snapshot files are no longer needed.
        if let Ok(dir) = std::fs::read_dir(&self.snapshot_dir) {
            let keep = format!("{}.snap", meta.snapshot_id);
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.ends_with(".snap") && name != keep {
                    let _ = std::fs::remove_file(e.path()); // best effort: a stale file is only disk space
                }
            }
        }
        Ok(())
    }

    fn install_from(&self, meta: &SnapshotMeta<NodeId, PeerNode>, src: &Path) -> StoreResult<()> {
        let file = std::fs::File::open(src).map_err(read_err)?;
        let mut lines = BufReader::new(file).lines();
        let header: SnapshotHeader = match lines.next() {
            Some(l) => serde_json::from_str(&l.map_err(read_err)?).map_err(read_err)?,
            None => return Err(read_err(std::io::Error::other("empty snapshot"))),
        };
        if header.format != "pinfleet-snapshot" || !(1..=SNAPSHOT_VERSION).contains(&header.version)
        {
            return Err(read_err(std::io::Error::other(format!(
                "unsupported snapshot {} version {}",
                header.format, header.version
            ))));
        }
        let txn = self.db.begin_write().map_err(write_err)?;
        {
            txn.delete_table(PINS).map_err(write_err)?;
            txn.delete_table(PINSETS).map_err(write_err)?;
            txn.delete_table(CONDITIONS).map_err(write_err)?;
            txn.delete_table(OWNERS).map_err(write_err)?;
            txn.delete_table(STAGING).map_err(write_err)?;
            txn.delete_table(COMMITS).map_err(write_err)?;
            let mut store = TxnStore::open(&txn).map_err(write_err)?;
            for l in lines {
                let l = l.map_err(read_err)?;
                if l.is_empty() {
                    continue;
                }
                match serde_json::from_str::<SnapshotRecord>(&l).map_err(read_err)? {
                    SnapshotRecord::Pin { cid, pin } => {
                        let pin = StatePin {
                            cid,
                            written_as: pin.w,
                            owners: pin.o,
                            allocations: pin.a,
                            timestamp_ms: pin.t,
                        };
                        store.put(&pin, None).map_err(write_err)?;
                    }
                    SnapshotRecord::Staged {
                        owner,
                        revision,
                        seq,
                        chunk,
                    } => {
                        let owner: Owner = owner.parse().map_err(read_err)?;
                        store
                            .stage(&owner, revision, seq, chunk.at, &chunk.ops)
                            .map_err(write_err)?;
                    }
                    SnapshotRecord::PinSet { owner, record } => {
                        let owner: Owner = owner.parse().map_err(read_err)?;
                        store.set_pinset(&owner, Some(&record)).map_err(write_err)?;
                    }
                    SnapshotRecord::Conditions { owner, record } => {
                        let owner: Owner = owner.parse().map_err(read_err)?;
                        store
                            .set_conditions(&owner, Some(&record))
                            .map_err(write_err)?;
                    }
                    SnapshotRecord::Commits { owner, record } => {
                        let owner: Owner = owner.parse().map_err(read_err)?;
                        store.set_commits(&owner, &record).map_err(write_err)?;
                    }
                }
            }
            // The feed is not in snapshots: consumers compare everything.
            changes::reset(&txn).map_err(write_err)?;
            let mut m = txn.open_table(SM_META).map_err(write_err)?;
            let last = serde_json::to_vec(&meta.last_log_id).map_err(write_err)?;
            m.insert(LAST_APPLIED, last.as_slice()).map_err(write_err)?;
            let mem = serde_json::to_vec(&meta.last_membership).map_err(write_err)?;
            m.insert(MEMBERSHIP, mem.as_slice()).map_err(write_err)?;
        }
        txn.commit().map_err(write_err)?;
        let dest = self.snapshot_dir.join(format!("{}.snap", meta.snapshot_id));
        if src != dest {
            std::fs::copy(src, &dest).map_err(write_err)?;
            let _ = std::fs::remove_file(src); // the received temp file; best effort
        }
        self.set_current_snapshot(meta)
    }
}

/// Writing any serialisable value as one JSON line through a trait object.
mod erased {
    use std::io::Write;

    pub trait Json {
        fn write_line(&self, w: &mut dyn Write) -> std::io::Result<()>;
    }

    impl<T: serde::Serialize> Json for T {
        fn write_line(&self, w: &mut dyn Write) -> std::io::Result<()> {
            serde_json::to_writer(&mut *w, self)?;
            w.write_all(b"\n")
        }
    }
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
        let path = self
            .receiving
            .lock()
            .map_err(|_| write_err(std::io::Error::other("poisoned")))?
            .pop()
            .ok_or_else(|| write_err(std::io::Error::other("no snapshot being received")))?;
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
#[path = "state_store_tests.rs"]
mod tests;
