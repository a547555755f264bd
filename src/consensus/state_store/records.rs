//! How a pin is stored: a compact binary record whose owners, peers and
//! option sets are small integers into dictionaries kept in the same
//! database, so a pin costs tens of bytes however long its owner's name,
//! its peers' ids or its options are.
//!
//! ```text
//! record  = 2 varint(zigzag t) written_as
//!           varint(n_alloc) varint(peer id)*
//!           varint(n_owners) (varint(owner id) varint(len) name varint(options id))*
//! written_as = varint(0) | varint(len + 1) utf8
//! ```
//!
//! Dictionary ids are local to one store (a snapshot carries its
//! dictionaries with it) and never reused, so a cache of id → value can
//! never be stale. Owners and peers are few and kept forever; an option set
//! is reference-counted by the records that use it and dropped at zero.
//! Records written before this format (JSON, first byte `{`) still decode.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use redb::{ReadableTable, TableDefinition};

use crate::manifest::{CidKey, Owner, PinOptions, PinSpec};
use crate::state::StatePin;

/// `(kind, id)` → value: an owner's or peer's name, or for an option set
/// its reference count (8 bytes, little endian) and its JSON.
pub(super) const DICT: TableDefinition<(u8, u64), &[u8]> = TableDefinition::new("dict");
/// `(kind, value)` → id (for option sets, the value is the JSON alone).
pub(super) const DICT_BY_VALUE: TableDefinition<(u8, &[u8]), u64> =
    TableDefinition::new("dict_by_value");

/// Dictionary kinds.
pub(super) const OWNER: u8 = 1;
pub(super) const PEER: u8 = 2;
pub(super) const OPTIONS: u8 = 3;

/// Leading byte of a record in this format.
pub(super) const RECORD_V2: u8 = 2;

/// Most option sets the shared cache keeps before it starts over.
const MAX_CACHED_OPTIONS: usize = 100_000;

/// Why a stored record does not decode.
#[derive(Debug, thiserror::Error)]
pub(super) enum RecordError {
    /// The bytes are not a record.
    #[error("corrupt pin record: {0}")]
    Corrupt(String),
    /// A dictionary id with no entry.
    #[error("pin record names {kind} {id}, which the dictionary does not hold")]
    Missing {
        /// Which dictionary.
        kind: &'static str,
        /// The id.
        id: u64,
    },
    /// A record of the format before this one.
    #[error("legacy pin record: {0}")]
    Legacy(#[from] serde_json::Error),
    /// Reading a dictionary failed.
    #[error("storage")]
    Storage(#[from] redb::StorageError),
}

/// A record's content with ids, not yet resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct RawRecord {
    pub timestamp_ms: i64,
    pub written_as: Option<Box<str>>,
    pub allocations: Vec<u64>,
    /// `(owner id, name, options id)`.
    pub owners: Vec<(u64, String, u64)>,
}

impl RawRecord {
    /// The encoded record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.owners.len() * 16);
        out.push(RECORD_V2);
        put_varint(&mut out, zigzag(self.timestamp_ms));
        match &self.written_as {
            Some(w) => {
                put_varint(&mut out, w.len() as u64 + 1);
                out.extend_from_slice(w.as_bytes());
            }
            None => put_varint(&mut out, 0),
        }
        put_varint(&mut out, self.allocations.len() as u64);
        for p in &self.allocations {
            put_varint(&mut out, *p);
        }
        put_varint(&mut out, self.owners.len() as u64);
        for (owner, name, options) in &self.owners {
            put_varint(&mut out, *owner);
            put_varint(&mut out, name.len() as u64);
            out.extend_from_slice(name.as_bytes());
            put_varint(&mut out, *options);
        }
        out
    }

    /// Decodes a record in this format.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader(bytes);
        let version = r.byte()?;
        if version != RECORD_V2 {
            return Err(RecordError::Corrupt(format!("unknown format {version}")));
        }
        let timestamp_ms = unzigzag(r.varint()?);
        let written_as = match r.varint()? {
            0 => None,
            n => Some(r.str(n - 1)?.into()),
        };
        let n = r.count()?;
        let mut allocations = Vec::with_capacity(n);
        for _ in 0..n {
            allocations.push(r.varint()?);
        }
        let n = r.count()?;
        let mut owners = Vec::with_capacity(n);
        for _ in 0..n {
            let owner = r.varint()?;
            let len = r.varint()?;
            let name = r.str(len)?.to_string();
            owners.push((owner, name, r.varint()?));
        }
        if !r.0.is_empty() {
            return Err(RecordError::Corrupt("trailing bytes".into()));
        }
        Ok(Self {
            timestamp_ms,
            written_as,
            allocations,
            owners,
        })
    }
}

/// A pin as the format before this one stored it (JSON).
#[derive(serde::Deserialize)]
pub(super) struct LegacyPin {
    #[serde(default)]
    w: Option<Box<str>>,
    o: BTreeMap<Owner, PinSpec>,
    #[serde(default)]
    a: Vec<String>,
    t: i64,
}

impl LegacyPin {
    /// Decodes a legacy record.
    pub fn decode(cid: CidKey, bytes: &[u8]) -> Result<StatePin, RecordError> {
        let p: LegacyPin = serde_json::from_slice(bytes)?;
        Ok(StatePin {
            cid,
            written_as: p.w,
            owners: p.o,
            allocations: p.a,
            timestamp_ms: p.t,
        })
    }
}

/// Resolved dictionary entries, shared by every reader and the writer.
/// Entries are added after the transaction that created them committed.
///
/// Ids mean something only within one *epoch* of the database: installing
/// a snapshot brings other dictionaries and a new epoch (stored with the
/// tables). Entries are used and added only by transactions of the cache's
/// epoch; one of a newer epoch starts the cache over.
#[derive(Debug, Default)]
pub(super) struct Dict {
    epoch: u64,
    owners: HashMap<u64, Owner>,
    owner_ids: HashMap<String, u64>,
    peers: HashMap<u64, String>,
    peer_ids: HashMap<String, u64>,
    options: HashMap<u64, Arc<PinOptions>>,
}

/// The shared dictionary cache.
pub(super) type SharedDict = Arc<RwLock<Dict>>;

/// Dictionary entries learnt while reading or writing, for the cache.
#[derive(Debug, Default)]
pub(super) struct Learnt {
    /// The epoch of the transaction that learnt these.
    pub epoch: u64,
    pub owners: Vec<(u64, Owner)>,
    pub peers: Vec<(u64, String)>,
    pub options: Vec<(u64, Arc<PinOptions>)>,
}

impl Learnt {
    fn is_empty(&self) -> bool {
        self.owners.is_empty() && self.peers.is_empty() && self.options.is_empty()
    }

    /// Adds what was learnt to the shared cache.
    pub fn publish(self, dict: &SharedDict) {
        if self.is_empty() {
            return;
        }
        let Ok(mut d) = dict.write() else {
            return; // a poisoned cache is only a slower path: reads fall back to the tables
        };
        if self.epoch < d.epoch {
            return; // learnt from a state a snapshot has replaced since
        }
        if self.epoch > d.epoch {
            *d = Dict {
                epoch: self.epoch,
                ..Dict::default()
            };
        }
        for (id, o) in self.owners {
            d.owner_ids.insert(o.to_string(), id);
            d.owners.insert(id, o);
        }
        for (id, p) in self.peers {
            d.peer_ids.insert(p.clone(), id);
            d.peers.insert(id, p);
        }
        if d.options.len() + self.options.len() > MAX_CACHED_OPTIONS {
            d.options.clear();
        }
        for (id, o) in self.options {
            d.options.insert(id, o);
        }
    }
}

impl Dict {
    /// An empty dictionary of `epoch` (a transaction's own entries).
    pub fn of_epoch(epoch: u64) -> Self {
        Self {
            epoch,
            ..Dict::default()
        }
    }

    /// The id of owner `o`, if cached for `epoch`.
    pub fn owner_id(&self, epoch: u64, o: &str) -> Option<u64> {
        (self.epoch == epoch)
            .then(|| self.owner_ids.get(o).copied())
            .flatten()
    }

    /// The id of peer `p`, if cached for `epoch`.
    pub fn peer_id(&self, epoch: u64, p: &str) -> Option<u64> {
        (self.epoch == epoch)
            .then(|| self.peer_ids.get(p).copied())
            .flatten()
    }
}

/// Turns ids into values, from the shared cache or the dictionary table of
/// the transaction at hand (what it learns goes into `learnt`).
pub(super) struct Resolver<'a, T> {
    dict: &'a SharedDict,
    table: &'a T,
    /// Resolved here, not (yet) in the shared cache.
    local: &'a mut Dict,
    learnt: &'a mut Learnt,
}

impl<'a, T: ReadableTable<(u8, u64), &'static [u8]>> Resolver<'a, T> {
    /// Resolves through `local`, then the shared cache, then `table`;
    /// entries read from `table` are added to `local` and `learnt`.
    pub fn new(
        dict: &'a SharedDict,
        table: &'a T,
        local: &'a mut Dict,
        learnt: &'a mut Learnt,
    ) -> Self {
        Self {
            dict,
            table,
            local,
            learnt,
        }
    }

    fn raw(&self, kind: u8, id: u64) -> Result<Vec<u8>, RecordError> {
        match self.table.get((kind, id))? {
            Some(v) => Ok(v.value().to_vec()),
            None => Err(RecordError::Missing {
                kind: kind_name(kind),
                id,
            }),
        }
    }

    /// The owner with dictionary id `id`.
    pub fn owner(&mut self, id: u64) -> Result<Owner, RecordError> {
        if let Some(o) = self.local.owners.get(&id) {
            return Ok(o.clone());
        }
        if let Ok(d) = self.dict.read()
            && d.epoch == self.local.epoch
            && let Some(o) = d.owners.get(&id)
        {
            return Ok(o.clone());
        }
        let raw = self.raw(OWNER, id)?;
        let text = std::str::from_utf8(&raw).map_err(|e| RecordError::Corrupt(e.to_string()))?;
        let owner: Owner = text
            .parse()
            .map_err(|e: crate::manifest::OwnerParseError| RecordError::Corrupt(e.to_string()))?;
        self.local.owners.insert(id, owner.clone());
        self.learnt.owners.push((id, owner.clone()));
        Ok(owner)
    }

    /// The peer with dictionary id `id`.
    pub fn peer(&mut self, id: u64) -> Result<String, RecordError> {
        if let Some(p) = self.local.peers.get(&id) {
            return Ok(p.clone());
        }
        if let Ok(d) = self.dict.read()
            && d.epoch == self.local.epoch
            && let Some(p) = d.peers.get(&id)
        {
            return Ok(p.clone());
        }
        let raw = self.raw(PEER, id)?;
        let peer = String::from_utf8(raw).map_err(|e| RecordError::Corrupt(e.to_string()))?;
        self.local.peers.insert(id, peer.clone());
        self.learnt.peers.push((id, peer.clone()));
        Ok(peer)
    }

    /// The option set with dictionary id `id`.
    pub fn options(&mut self, id: u64) -> Result<Arc<PinOptions>, RecordError> {
        if let Some(o) = self.local.options.get(&id) {
            return Ok(Arc::clone(o));
        }
        if let Ok(d) = self.dict.read()
            && d.epoch == self.local.epoch
            && let Some(o) = d.options.get(&id)
        {
            return Ok(Arc::clone(o));
        }
        let raw = self.raw(OPTIONS, id)?;
        let json = raw
            .get(8..)
            .ok_or_else(|| RecordError::Corrupt("short option set".into()))?;
        let options: PinOptions =
            serde_json::from_slice(json).map_err(|e| RecordError::Corrupt(e.to_string()))?;
        let options = Arc::new(options);
        self.local.options.insert(id, Arc::clone(&options));
        self.learnt.options.push((id, Arc::clone(&options)));
        Ok(options)
    }

    /// A stored record (this format or the one before) as a pin.
    pub fn pin(&mut self, cid: CidKey, bytes: &[u8]) -> Result<StatePin, RecordError> {
        if bytes.first() == Some(&b'{') {
            return LegacyPin::decode(cid, bytes);
        }
        let raw = RawRecord::decode(bytes)?;
        let mut owners = BTreeMap::new();
        for (owner, name, options) in raw.owners {
            owners.insert(
                self.owner(owner)?,
                PinSpec {
                    name,
                    options: self.options(options)?,
                },
            );
        }
        let mut allocations = Vec::with_capacity(raw.allocations.len());
        for p in raw.allocations {
            allocations.push(self.peer(p)?);
        }
        Ok(StatePin {
            cid,
            written_as: raw.written_as,
            owners,
            allocations,
            timestamp_ms: raw.timestamp_ms,
        })
    }

    /// The spec owner id `owner` holds in a stored record, if any, without
    /// resolving the rest.
    pub fn spec_of(&mut self, owner: u64, bytes: &[u8]) -> Result<Option<PinSpec>, RecordError> {
        let raw = RawRecord::decode(bytes)?;
        match raw.owners.into_iter().find(|(o, _, _)| *o == owner) {
            Some((_, name, options)) => Ok(Some(PinSpec {
                name,
                options: self.options(options)?,
            })),
            None => Ok(None),
        }
    }
}

pub(super) fn kind_name(kind: u8) -> &'static str {
    match kind {
        OWNER => "owner",
        PEER => "peer",
        OPTIONS => "option set",
        _ => "entry",
    }
}

/// The CID of a stored key.
pub(super) fn cid_of(key: &[u8]) -> Result<CidKey, RecordError> {
    let cid = cid::Cid::try_from(key).map_err(|e| RecordError::Corrupt(e.to_string()))?;
    CidKey::from_cid(cid).map_err(|e| RecordError::Corrupt(e.to_string()))
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub(super) fn put_varint(out: &mut Vec<u8>, v: u64) {
    let mut buf = unsigned_varint::encode::u64_buffer();
    out.extend_from_slice(unsigned_varint::encode::u64(v, &mut buf));
}

/// A cursor over encoded bytes.
pub(super) struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn byte(&mut self) -> Result<u8, RecordError> {
        let (b, rest) = self
            .0
            .split_first()
            .ok_or_else(|| RecordError::Corrupt("truncated".into()))?;
        self.0 = rest;
        Ok(*b)
    }

    pub fn varint(&mut self) -> Result<u64, RecordError> {
        let (v, rest) = unsigned_varint::decode::u64(self.0)
            .map_err(|e| RecordError::Corrupt(format!("varint: {e}")))?;
        self.0 = rest;
        Ok(v)
    }

    /// A count of items each at least one byte long: never more than the
    /// bytes left.
    pub fn count(&mut self) -> Result<usize, RecordError> {
        let n = self.varint()?;
        if n > self.0.len() as u64 {
            return Err(RecordError::Corrupt(format!("count {n} past the end")));
        }
        Ok(n as usize)
    }

    pub fn take(&mut self, n: u64) -> Result<&'a [u8], RecordError> {
        if n > self.0.len() as u64 {
            return Err(RecordError::Corrupt("truncated".into()));
        }
        let (head, rest) = self.0.split_at(n as usize);
        self.0 = rest;
        Ok(head)
    }

    pub fn str(&mut self, n: u64) -> Result<&'a str, RecordError> {
        std::str::from_utf8(self.take(n)?).map_err(|e| RecordError::Corrupt(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_stay_small() {
        let r = RawRecord {
            timestamp_ms: 1_764_000_000_000,
            written_as: Some("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG".into()),
            allocations: vec![1, 2, 3],
            owners: vec![(1, "core-2026".into(), 4), (300, String::new(), 70_000)],
        };
        let bytes = r.encode();
        assert_eq!(RawRecord::decode(&bytes).unwrap(), r);
        let plain = RawRecord {
            timestamp_ms: -5,
            written_as: None,
            allocations: vec![1, 2, 3],
            owners: vec![(1, "p1".into(), 1)],
        };
        let small = plain.encode();
        assert_eq!(RawRecord::decode(&small).unwrap(), plain);
        assert!(small.len() <= 16, "{} bytes", small.len());
        for cut in 0..bytes.len() {
            assert!(RawRecord::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
