//! Pinning Service API requests on disk: the records by id, and the
//! indexes that make a listing a range scan — by `(token, created)` for
//! pages newest first, by `(token, CID, created)` for the `cid` filter and
//! for "does another request of this token hold the CID", and the global
//! `created` set whose last key keeps `created` unique.
//!
//! Owns the tables and their snapshot frames; it must not decide what a
//! command does (that is `state::pinsvc`).

use redb::{ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};

use super::txn::TxnError;
use super::{StateStore, StoreResult, read_err, write_err};
use crate::manifest::CidKey;
use crate::state::pinsvc::PinSvcRequest;

/// Request id → JSON record.
const REQUESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("pinsvc_requests");
/// `(token, created_ns)` → request id.
const BY_TOKEN: TableDefinition<(&str, i64), &str> = TableDefinition::new("pinsvc_by_token");
/// `(token, CID bytes, created_ns)` → request id.
const BY_CID: TableDefinition<(&str, &[u8], i64), &str> = TableDefinition::new("pinsvc_by_cid");
/// Every `created_ns` in use.
const CREATED: TableDefinition<i64, ()> = TableDefinition::new("pinsvc_created");

/// Creates the tables (at open, so readers always find them).
pub(super) fn create(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(REQUESTS)?;
    txn.open_table(BY_TOKEN)?;
    txn.open_table(BY_CID)?;
    txn.open_table(CREATED)?;
    Ok(())
}

/// Drops every request (before a snapshot is installed).
pub(super) fn clear(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.delete_table(REQUESTS)?;
    txn.delete_table(BY_TOKEN)?;
    txn.delete_table(BY_CID)?;
    txn.delete_table(CREATED)?;
    create(txn)
}

/// The tables inside one write transaction.
pub(super) struct Tables<'t> {
    requests: Table<'t, &'static str, &'static [u8]>,
    by_token: Table<'t, (&'static str, i64), &'static str>,
    by_cid: Table<'t, (&'static str, &'static [u8], i64), &'static str>,
    created: Table<'t, i64, ()>,
}

impl<'t> Tables<'t> {
    /// Opens them in `txn`.
    pub fn open(txn: &'t WriteTransaction) -> Result<Self, redb::TableError> {
        Ok(Self {
            requests: txn.open_table(REQUESTS)?,
            by_token: txn.open_table(BY_TOKEN)?,
            by_cid: txn.open_table(BY_CID)?,
            created: txn.open_table(CREATED)?,
        })
    }

    /// A request by id.
    pub fn get(&self, id: &str) -> Result<Option<PinSvcRequest>, TxnError> {
        match self.requests.get(id)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    /// Stores a request and its index entries.
    pub fn put(&mut self, r: &PinSvcRequest) -> Result<(), TxnError> {
        let bytes = serde_json::to_vec(r)?;
        self.put_raw(r, &bytes)
    }

    fn put_raw(&mut self, r: &PinSvcRequest, bytes: &[u8]) -> Result<(), TxnError> {
        let cid = r.cid.cid().to_bytes();
        self.requests.insert(r.requestid.as_str(), bytes)?;
        self.by_token
            .insert((r.token.as_str(), r.created_ns), r.requestid.as_str())?;
        self.by_cid.insert(
            (r.token.as_str(), cid.as_slice(), r.created_ns),
            r.requestid.as_str(),
        )?;
        self.created.insert(r.created_ns, ())?;
        Ok(())
    }

    /// Removes a request and its index entries.
    pub fn remove(&mut self, r: &PinSvcRequest) -> Result<(), TxnError> {
        let cid = r.cid.cid().to_bytes();
        self.requests.remove(r.requestid.as_str())?;
        self.by_token.remove((r.token.as_str(), r.created_ns))?;
        self.by_cid
            .remove((r.token.as_str(), cid.as_slice(), r.created_ns))?;
        self.created.remove(r.created_ns)?;
        Ok(())
    }

    /// Whether a request of `token` is for `cid`.
    pub fn holds(&self, token: &str, cid: &CidKey) -> Result<bool, TxnError> {
        let cid = cid.cid().to_bytes();
        let mut range = self
            .by_cid
            .range((token, cid.as_slice(), i64::MIN)..=(token, cid.as_slice(), i64::MAX))?;
        Ok(range.next().transpose()?.is_some())
    }

    /// The latest `created_ns` in use (0 when none).
    pub fn last_created(&self) -> Result<i64, TxnError> {
        Ok(self.created.last()?.map_or(0, |(k, _)| k.value()))
    }

    /// Installs one snapshot frame's record.
    pub fn install(&mut self, bytes: &[u8]) -> Result<(), TxnError> {
        let r: PinSvcRequest = serde_json::from_slice(bytes)?;
        self.put_raw(&r, bytes)
    }
}

/// Every stored record, raw (for snapshots).
pub(super) fn each_record(
    txn: &redb::ReadTransaction,
    mut f: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> StoreResult<()> {
    let table = txn.open_table(REQUESTS).map_err(read_err)?;
    for item in table.iter().map_err(read_err)? {
        let (_, v) = item.map_err(read_err)?;
        f(v.value()).map_err(write_err)?;
    }
    Ok(())
}

/// The `created_ns` bounds of a listing, both strict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CreatedRange {
    /// Only requests created after this.
    pub after: Option<i64>,
    /// Only requests created before this.
    pub before: Option<i64>,
}

impl CreatedRange {
    /// The inclusive `created_ns` bounds, or `None` when nothing fits.
    fn inclusive(&self) -> Option<(i64, i64)> {
        let lo = match self.after {
            Some(a) => a.checked_add(1)?,
            None => i64::MIN,
        };
        let hi = match self.before {
            Some(b) => b.checked_sub(1)?,
            None => i64::MAX,
        };
        (lo <= hi).then_some((lo, hi))
    }
}

impl StateStore {
    /// A Pinning Service request by id.
    pub fn pinsvc_request(&self, id: &str) -> StoreResult<Option<PinSvcRequest>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(REQUESTS).map_err(read_err)?;
        match table.get(id).map_err(read_err)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    /// Up to `max` of `token`'s requests within `range`, newest first; only
    /// those for one of `cids` when it is not empty. One read transaction,
    /// a range scan of an index (one per CID).
    pub fn pinsvc_page(
        &self,
        token: &str,
        cids: &[CidKey],
        range: CreatedRange,
        max: usize,
    ) -> StoreResult<Vec<PinSvcRequest>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let mut ids: Vec<(i64, String)> = Vec::new();
        let Some((lo, hi)) = range.inclusive() else {
            return Ok(Vec::new());
        };
        if cids.is_empty() {
            let t = txn.open_table(BY_TOKEN).map_err(read_err)?;
            for item in t.range((token, lo)..=(token, hi)).map_err(read_err)?.rev() {
                if ids.len() >= max {
                    break;
                }
                let (k, v) = item.map_err(read_err)?;
                ids.push((k.value().1, v.value().to_string()));
            }
        } else {
            let t = txn.open_table(BY_CID).map_err(read_err)?;
            for cid in cids {
                let bytes = cid.cid().to_bytes();
                let b = bytes.as_slice();
                let scan = t.range((token, b, lo)..=(token, b, hi)).map_err(read_err)?;
                for item in scan.rev().take(max) {
                    let (k, v) = item.map_err(read_err)?;
                    ids.push((k.value().2, v.value().to_string()));
                }
            }
            ids.sort_by_key(|b| std::cmp::Reverse(b.0));
            ids.dedup_by(|a, b| a.1 == b.1);
            ids.truncate(max);
        }
        let table = txn.open_table(REQUESTS).map_err(read_err)?;
        let mut out = Vec::with_capacity(ids.len());
        for (_, id) in ids {
            if let Some(v) = table.get(id.as_str()).map_err(read_err)? {
                out.push(serde_json::from_slice(v.value()).map_err(read_err)?);
            }
        }
        Ok(out)
    }

    /// How many of `token`'s requests are within `range` (index keys only).
    pub fn pinsvc_count(&self, token: &str, range: CreatedRange) -> StoreResult<u64> {
        let Some((lo, hi)) = range.inclusive() else {
            return Ok(0);
        };
        let txn = self.db.begin_read().map_err(read_err)?;
        let t = txn.open_table(BY_TOKEN).map_err(read_err)?;
        let mut n = 0u64;
        for item in t.range((token, lo)..=(token, hi)).map_err(read_err)? {
            item.map_err(read_err)?;
            n += 1;
        }
        Ok(n)
    }
}
