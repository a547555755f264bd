//! The tables of one write transaction seen as a [`PinStore`]: what the
//! state machine's apply reads and writes. Owners, peers and option sets
//! are interned into the dictionaries as records need them; option sets
//! are reference-counted, the counts settled once per transaction in
//! [`TxnStore::finish`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use redb::{ReadableTable, Table, WriteTransaction};

use super::records::{
    DICT, DICT_BY_VALUE, Dict, Learnt, OPTIONS, OWNER, PEER, RawRecord, RecordError, Resolver,
    SharedDict,
};
use super::{COMMITS, CONDITIONS, OWNER_INDEX, PINS, PINSETS, SHARD_INDEX, STAGING};
use crate::manifest::{CidKey, Owner, PinOptions};
use crate::state::codec::{decode_ops, encode_ops};
use crate::state::pinsvc::PinSvcRequest;
use crate::state::{CommitRecord, ConditionsRecord, Op, PinSetRecord, PinStore, StatePin};

/// Leading byte of a staged chunk in the binary format (`at` as 8 bytes
/// little endian, then an op batch). Older chunks are JSON (`{`).
const STAGED_V2: u8 = 2;

/// Where each dictionary's next id is kept: `(kind, NEXT_ID)`.
pub(super) const NEXT_ID: u64 = u64::MAX;

/// Errors inside an apply transaction.
#[derive(Debug, thiserror::Error)]
pub(super) enum TxnError {
    /// redb failed.
    #[error("storage")]
    Redb(#[from] redb::Error),
    /// A record, chunk or dictionary entry does not decode.
    #[error("encoding")]
    Json(#[from] serde_json::Error),
    /// A stored record does not decode.
    #[error("record")]
    Record(#[from] RecordError),
}

impl From<redb::StorageError> for TxnError {
    fn from(e: redb::StorageError) -> Self {
        TxnError::Redb(e.into())
    }
}

impl From<redb::TableError> for TxnError {
    fn from(e: redb::TableError) -> Self {
        TxnError::Redb(e.into())
    }
}

/// A staged chunk as written before the binary format.
#[derive(serde::Deserialize)]
struct LegacyChunk {
    at: i64,
    ops: Vec<Op>,
}

fn encode_chunk(at: i64, ops: &[Op]) -> Vec<u8> {
    let batch = encode_ops(ops);
    let mut out = Vec::with_capacity(batch.len() + 9);
    out.push(STAGED_V2);
    out.extend_from_slice(&at.to_le_bytes());
    out.extend_from_slice(&batch);
    out
}

/// A staged chunk: when it was staged, and its ops.
pub(super) fn decode_chunk(bytes: &[u8]) -> Result<(i64, Vec<Op>), TxnError> {
    match bytes.split_first() {
        Some((&STAGED_V2, rest)) if rest.len() >= 8 => {
            let (at, batch) = rest.split_at(8);
            let mut at_bytes = [0u8; 8];
            at_bytes.copy_from_slice(at);
            let ops = decode_ops(batch)
                .map_err(|e| TxnError::Record(RecordError::Corrupt(e.to_string())))?;
            Ok((i64::from_le_bytes(at_bytes), ops))
        }
        Some((b'{', _)) => {
            let c: LegacyChunk = serde_json::from_slice(bytes)?;
            Ok((c.at, c.ops))
        }
        _ => Err(TxnError::Record(RecordError::Corrupt(
            "unknown staged chunk format".into(),
        ))),
    }
}

/// The tables of one write transaction.
pub(super) struct TxnStore<'t> {
    pins: Table<'t, &'static [u8], &'static [u8]>,
    index: Table<'t, (u64, &'static [u8]), ()>,
    shards: Table<'t, (&'static [u8], &'static [u8]), ()>,
    dict: Table<'t, (u8, u64), &'static [u8]>,
    by_value: Table<'t, (u8, &'static [u8]), u64>,
    staging: Table<'t, (&'static str, u64, u32), &'static [u8]>,
    pinsets: Table<'t, &'static str, &'static [u8]>,
    conditions: Table<'t, &'static str, &'static [u8]>,
    commits: Table<'t, &'static str, &'static [u8]>,
    pinsvc: super::pinsvc::Tables<'t>,
    shared: SharedDict,
    /// Entries resolved or created in this transaction.
    local: RefCell<Dict>,
    /// What the shared cache learns once the transaction committed.
    learnt: RefCell<Learnt>,
    owner_ids: HashMap<String, u64>,
    peer_ids: HashMap<String, u64>,
    /// Option sets met in this transaction, by allocation (the `Arc` is
    /// kept so that the address cannot be reused for another set).
    options_by_ptr: HashMap<*const PinOptions, (Arc<PinOptions>, u64)>,
    /// Reference count changes of option sets.
    refs: HashMap<u64, i64>,
    /// Next ids handed out, per kind, once read.
    next: HashMap<u8, u64>,
    /// The dictionaries' epoch in this transaction.
    epoch: u64,
}

impl<'t> TxnStore<'t> {
    /// The tables of `txn`; `shared` is the store's dictionary cache.
    pub fn open(txn: &'t WriteTransaction, shared: &SharedDict) -> Result<Self, TxnError> {
        let epoch = super::epoch_of(&txn.open_table(super::SM_META)?)?;
        Ok(Self {
            pins: txn.open_table(PINS)?,
            index: txn.open_table(OWNER_INDEX)?,
            shards: txn.open_table(SHARD_INDEX)?,
            dict: txn.open_table(DICT)?,
            by_value: txn.open_table(DICT_BY_VALUE)?,
            staging: txn.open_table(STAGING)?,
            pinsets: txn.open_table(PINSETS)?,
            conditions: txn.open_table(CONDITIONS)?,
            commits: txn.open_table(COMMITS)?,
            pinsvc: super::pinsvc::Tables::open(txn)?,
            shared: Arc::clone(shared),
            local: RefCell::new(Dict::of_epoch(epoch)),
            learnt: RefCell::new(Learnt {
                epoch,
                ..Learnt::default()
            }),
            owner_ids: HashMap::new(),
            peer_ids: HashMap::new(),
            options_by_ptr: HashMap::new(),
            refs: HashMap::new(),
            next: HashMap::new(),
            epoch,
        })
    }

    /// Settles option set reference counts and dictionary counters. What
    /// the returned [`Learnt`] holds may enter the shared cache once the
    /// transaction committed, not before.
    pub fn finish(mut self) -> Result<Learnt, TxnError> {
        let refs = std::mem::take(&mut self.refs);
        for (id, delta) in refs {
            if delta == 0 {
                continue;
            }
            let Some(row) = self.dict.get((OPTIONS, id))?.map(|v| v.value().to_vec()) else {
                continue;
            };
            let (count, json) = split_options_row(&row)?;
            let count = (count as i64 + delta).max(0) as u64;
            if count == 0 {
                self.dict.remove((OPTIONS, id))?;
                self.by_value.remove((OPTIONS, json))?;
            } else {
                let mut new = count.to_le_bytes().to_vec();
                new.extend_from_slice(json);
                self.dict.insert((OPTIONS, id), new.as_slice())?;
            }
        }
        for (kind, next) in std::mem::take(&mut self.next) {
            self.dict
                .insert((kind, NEXT_ID), next.to_le_bytes().as_slice())?;
        }
        Ok(self.learnt.into_inner())
    }

    fn new_id(&mut self, kind: u8) -> Result<u64, TxnError> {
        let next = match self.next.get(&kind) {
            Some(n) => *n,
            None => read_next(&self.dict, kind)?,
        };
        self.next.insert(kind, next + 1);
        Ok(next)
    }

    fn owner_id(&mut self, owner: &Owner) -> Result<u64, TxnError> {
        let key = owner.to_string();
        if let Some(id) = self.owner_ids.get(&key) {
            return Ok(*id);
        }
        let cached = self
            .shared
            .read()
            .ok()
            .and_then(|d| d.owner_id(self.epoch, &key));
        let stored = match cached {
            Some(_) => None,
            None => self
                .by_value
                .get((OWNER, key.as_bytes()))?
                .map(|v| v.value()),
        };
        let id = match cached.or(stored) {
            Some(id) => id,
            None => {
                let id = self.new_id(OWNER)?;
                self.dict.insert((OWNER, id), key.as_bytes())?;
                self.by_value.insert((OWNER, key.as_bytes()), id)?;
                self.learnt.get_mut().owners.push((id, owner.clone()));
                id
            }
        };
        self.owner_ids.insert(key, id);
        Ok(id)
    }

    fn peer_id(&mut self, peer: &str) -> Result<u64, TxnError> {
        if let Some(id) = self.peer_ids.get(peer) {
            return Ok(*id);
        }
        let cached = self
            .shared
            .read()
            .ok()
            .and_then(|d| d.peer_id(self.epoch, peer));
        let stored = match cached {
            Some(_) => None,
            None => self
                .by_value
                .get((PEER, peer.as_bytes()))?
                .map(|v| v.value()),
        };
        let id = match cached.or(stored) {
            Some(id) => id,
            None => {
                let id = self.new_id(PEER)?;
                self.dict.insert((PEER, id), peer.as_bytes())?;
                self.by_value.insert((PEER, peer.as_bytes()), id)?;
                self.learnt.get_mut().peers.push((id, peer.to_string()));
                id
            }
        };
        self.peer_ids.insert(peer.to_string(), id);
        Ok(id)
    }

    fn options_id(&mut self, options: &Arc<PinOptions>) -> Result<u64, TxnError> {
        if let Some((_, id)) = self.options_by_ptr.get(&Arc::as_ptr(options)) {
            return Ok(*id);
        }
        let json = serde_json::to_vec(&**options)?;
        let stored = self
            .by_value
            .get((OPTIONS, json.as_slice()))?
            .map(|v| v.value());
        let id = match stored {
            Some(id) => id,
            None => {
                let id = self.new_id(OPTIONS)?;
                let mut row = 0u64.to_le_bytes().to_vec();
                row.extend_from_slice(&json);
                self.dict.insert((OPTIONS, id), row.as_slice())?;
                self.by_value.insert((OPTIONS, json.as_slice()), id)?;
                self.learnt
                    .get_mut()
                    .options
                    .push((id, Arc::clone(options)));
                id
            }
        };
        self.options_by_ptr
            .insert(Arc::as_ptr(options), (Arc::clone(options), id));
        Ok(id)
    }

    /// The record of `pin` with interned ids (reference counts raised).
    fn record_of(&mut self, pin: &StatePin) -> Result<RawRecord, TxnError> {
        let mut owners = Vec::with_capacity(pin.owners.len());
        for (owner, spec) in &pin.owners {
            let o = self.owner_id(owner)?;
            let opts = self.options_id(&spec.options)?;
            *self.refs.entry(opts).or_default() += 1;
            owners.push((o, spec.name.clone(), opts));
        }
        let mut allocations = Vec::with_capacity(pin.allocations.len());
        for p in &pin.allocations {
            allocations.push(self.peer_id(p)?);
        }
        Ok(RawRecord {
            timestamp_ms: pin.timestamp_ms,
            written_as: pin.written_as.clone(),
            allocations,
            owners,
        })
    }

    /// Undoes what a replaced or removed record held: its option set
    /// references and its owner index entries (except owners in `keep`).
    fn release(&mut self, key: &[u8], old: &[u8], keep: &[u64]) -> Result<(), TxnError> {
        // A record of the format before this one has no ids to release
        // (only met while migrating, which builds the index afresh).
        if old.first() == Some(&b'{') {
            return Ok(());
        }
        let old = RawRecord::decode(old)?;
        for (owner, _, options) in old.owners {
            *self.refs.entry(options).or_default() -= 1;
            if !keep.contains(&owner) {
                self.index.remove((owner, key))?;
            }
        }
        Ok(())
    }

    /// Writes `pin` as a new record, ignoring what the key held (used when
    /// migrating records of the previous format).
    pub fn put_fresh(&mut self, pin: &StatePin) -> Result<(), TxnError> {
        let key = pin.cid.cid().to_bytes();
        for m in pin.shard_metas() {
            self.shards
                .insert((m.cid().to_bytes().as_slice(), key.as_slice()), ())?;
        }
        let record = self.record_of(pin)?;
        for (owner, _, _) in &record.owners {
            self.index.insert((*owner, key.as_slice()), ())?;
        }
        self.pins
            .insert(key.as_slice(), record.encode().as_slice())?;
        Ok(())
    }
}

/// The CIDs indexed under `meta` in a shard index table.
pub(super) fn members_of(
    table: &impl ReadableTable<(&'static [u8], &'static [u8]), ()>,
    meta: &CidKey,
) -> Result<Vec<CidKey>, redb::Error> {
    let m = meta.cid().to_bytes();
    let lo: &[u8] = &[];
    let mut out = Vec::new();
    for item in table.range((m.as_slice(), lo)..)? {
        let (k, _) = item?;
        let (km, cid) = k.value();
        if km != m.as_slice() {
            break;
        }
        if let Ok(c) = super::records::cid_of(cid) {
            out.push(c);
        }
    }
    Ok(out)
}

/// Rebuilds the shard index from every pin (after a snapshot install
/// wrote the records directly).
pub(super) fn rebuild_shard_index(
    txn: &WriteTransaction,
    shared: &SharedDict,
) -> Result<(), TxnError> {
    let mut store = TxnStore::open(txn, shared)?;
    let keys: Vec<Vec<u8>> = store
        .pins
        .iter()?
        .map(|item| item.map(|(k, _)| k.value().to_vec()))
        .collect::<Result<_, _>>()?;
    for key in keys {
        let Ok(cid) = super::records::cid_of(&key) else {
            continue;
        };
        if let Some(pin) = store.get(&cid)? {
            for m in pin.shard_metas() {
                store
                    .shards
                    .insert((m.cid().to_bytes().as_slice(), key.as_slice()), ())?;
            }
        }
    }
    store.finish()?;
    Ok(())
}

/// The next id of `kind` (0 when none was handed out).
pub(super) fn read_next(
    dict: &impl ReadableTable<(u8, u64), &'static [u8]>,
    kind: u8,
) -> Result<u64, TxnError> {
    match dict.get((kind, NEXT_ID))? {
        Some(v) => {
            let b = v.value();
            let mut n = [0u8; 8];
            if b.len() != 8 {
                return Err(TxnError::Record(RecordError::Corrupt(
                    "dictionary counter".into(),
                )));
            }
            n.copy_from_slice(b);
            Ok(u64::from_le_bytes(n))
        }
        None => Ok(0),
    }
}

/// An option set's row: its reference count and its JSON.
pub(super) fn split_options_row(row: &[u8]) -> Result<(u64, &[u8]), TxnError> {
    if row.len() < 8 {
        return Err(TxnError::Record(RecordError::Corrupt(
            "short option set".into(),
        )));
    }
    let (count, json) = row.split_at(8);
    let mut c = [0u8; 8];
    c.copy_from_slice(count);
    Ok((u64::from_le_bytes(c), json))
}

impl PinStore for TxnStore<'_> {
    type Error = TxnError;

    fn get(&self, cid: &CidKey) -> Result<Option<StatePin>, TxnError> {
        let key = cid.cid().to_bytes();
        let Some(v) = self.pins.get(key.as_slice())? else {
            return Ok(None);
        };
        let mut local = self.local.borrow_mut();
        let mut learnt = self.learnt.borrow_mut();
        let mut r = Resolver::new(&self.shared, &self.dict, &mut local, &mut learnt);
        Ok(Some(r.pin(*cid, v.value())?))
    }

    fn put(&mut self, pin: &StatePin, before: Option<&StatePin>) -> Result<(), TxnError> {
        let key = pin.cid.cid().to_bytes();
        let metas = pin.shard_metas();
        let old = before.map(StatePin::shard_metas).unwrap_or_default();
        if metas != old {
            for m in old.iter().filter(|m| !metas.contains(m)) {
                self.shards
                    .remove((m.cid().to_bytes().as_slice(), key.as_slice()))?;
            }
            for m in &metas {
                self.shards
                    .insert((m.cid().to_bytes().as_slice(), key.as_slice()), ())?;
            }
        }
        let record = self.record_of(pin)?;
        let new_owners: Vec<u64> = record.owners.iter().map(|(o, _, _)| *o).collect();
        let old = self
            .pins
            .insert(key.as_slice(), record.encode().as_slice())?
            .map(|v| v.value().to_vec());
        match old {
            Some(old) if old.first() != Some(&b'{') => {
                let before: Vec<u64> = RawRecord::decode(&old)?
                    .owners
                    .iter()
                    .map(|(o, _, _)| *o)
                    .collect();
                self.release(&key, &old, &new_owners)?;
                for o in new_owners.iter().filter(|o| !before.contains(o)) {
                    self.index.insert((*o, key.as_slice()), ())?;
                }
            }
            _ => {
                for o in &new_owners {
                    self.index.insert((*o, key.as_slice()), ())?;
                }
            }
        }
        Ok(())
    }

    fn remove(&mut self, before: &StatePin) -> Result<(), TxnError> {
        let key = before.cid.cid().to_bytes();
        for m in before.shard_metas() {
            self.shards
                .remove((m.cid().to_bytes().as_slice(), key.as_slice()))?;
        }
        let old = self
            .pins
            .remove(key.as_slice())?
            .map(|v| v.value().to_vec());
        if let Some(old) = old {
            self.release(&key, &old, &[])?;
        }
        Ok(())
    }

    fn shard_members(&self, meta: &CidKey) -> Result<Vec<CidKey>, TxnError> {
        Ok(members_of(&self.shards, meta)?)
    }

    fn stage(
        &mut self,
        owner: &Owner,
        revision: u64,
        seq: u32,
        now_ms: i64,
        ops: &[Op],
    ) -> Result<(), TxnError> {
        let chunk = encode_chunk(now_ms, ops);
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
            seqs.push(k.value().2);
            out.push(decode_chunk(v.value())?.1);
        }
        for seq in seqs {
            self.staging.remove((o.as_str(), revision, seq))?;
        }
        Ok(out)
    }

    fn expire_staged(&mut self, older_than_ms: i64) -> Result<(), TxnError> {
        self.staging.retain(|_, v| {
            // Only the timestamp is needed: read it without decoding ops.
            match v.split_first() {
                Some((&STAGED_V2, rest)) if rest.len() >= 8 => {
                    let mut at = [0u8; 8];
                    at.copy_from_slice(&rest[..8]);
                    i64::from_le_bytes(at) >= older_than_ms
                }
                _ => decode_chunk(v).is_ok_and(|(at, _)| at >= older_than_ms),
            }
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

    fn pinset(&self, owner: &Owner) -> Result<Option<PinSetRecord>, TxnError> {
        match self.pinsets.get(owner.to_string().as_str())? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    fn conditions(&self, owner: &Owner) -> Result<Option<ConditionsRecord>, TxnError> {
        match self.conditions.get(owner.to_string().as_str())? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
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

    fn pinsvc_get(&self, requestid: &str) -> Result<Option<PinSvcRequest>, TxnError> {
        self.pinsvc.get(requestid)
    }

    fn pinsvc_put(&mut self, request: &PinSvcRequest) -> Result<(), TxnError> {
        self.pinsvc.put(request)
    }

    fn pinsvc_remove(&mut self, request: &PinSvcRequest) -> Result<(), TxnError> {
        self.pinsvc.remove(request)
    }

    fn pinsvc_holds(&self, token: &str, cid: &CidKey) -> Result<bool, TxnError> {
        self.pinsvc.holds(token, cid)
    }

    fn pinsvc_last_created(&self) -> Result<i64, TxnError> {
        self.pinsvc.last_created()
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
