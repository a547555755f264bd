//! Pinning Service API requests on disk: the records by id, and one index
//! per listing filter, so that every filter is a range scan of an index:
//!
//! - `(token, created)` → id, CID and name: pages newest first, and what a
//!   hit is checked against without reading its record;
//! - `(token, CID, created)`: the `cid` filter, and "does another request
//!   of this token hold the CID";
//! - `(token, lowercase name, created)`: `name` with `exact` and `iexact`;
//! - `(token, lowercase suffix of the name, created)`: `partial` and
//!   `ipartial` (a substring of a name is a prefix of one of its suffixes);
//! - `(token, meta key, meta value, created)`: `meta` pairs;
//! - per token, how many requests it has and how many changes it saw;
//! - the global `created` set whose last key keeps `created` unique.
//!
//! A listing with several filters intersects their ranges newest first
//! (leapfrog: each range jumps to the newest `created` no newer than where
//! the others are), so it reads the index keys of the matches and of the
//! misses between them, never the token's other requests.
//!
//! Owns the tables and their snapshot frames; it must not decide what a
//! command does (that is `state::pinsvc`).

use std::collections::BTreeMap;

use redb::{
    ReadOnlyTable, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction,
};

use super::txn::TxnError;
use super::{StateStore, StoreResult, read_err, write_err};
use crate::manifest::CidKey;
use crate::state::pinsvc::PinSvcRequest;

/// Request id → JSON record.
const REQUESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("pinsvc_requests");
/// `(token, created_ns)` → (request id, CID bytes, name or "").
const BY_CREATED: TableDefinition<(&str, i64), (&str, &[u8], &str)> =
    TableDefinition::new("pinsvc_by_created");
/// `(token, CID bytes, created_ns)` → request id.
const BY_CID: TableDefinition<(&str, &[u8], i64), &str> = TableDefinition::new("pinsvc_by_cid");
/// `(token, lowercase name, created_ns)`.
const BY_NAME: TableDefinition<(&str, &str, i64), ()> = TableDefinition::new("pinsvc_by_name");
/// `(token, lowercase suffix of the name, created_ns)`.
const BY_SUFFIX: TableDefinition<(&str, &str, i64), ()> = TableDefinition::new("pinsvc_by_suffix");
/// `(token, meta key, meta value, created_ns)`.
const BY_META: TableDefinition<(&str, &str, &str, i64), ()> =
    TableDefinition::new("pinsvc_by_meta");
/// Token → (requests, changes so far).
const TOKENS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("pinsvc_tokens");
/// Every `created_ns` in use.
const CREATED: TableDefinition<i64, ()> = TableDefinition::new("pinsvc_created");
/// `"version"` → the version of the indexes above.
const INDEX_META: TableDefinition<&str, u32> = TableDefinition::new("pinsvc_index");
/// The only index of the first version, `(token, created_ns)` → id.
const LEGACY_BY_TOKEN: TableDefinition<(&str, i64), &str> = TableDefinition::new("pinsvc_by_token");

/// The indexes' version: a store whose indexes are older (or absent) has
/// them rebuilt from the records when it opens.
const INDEX_VERSION: u32 = 2;

/// Records indexed per batch when the indexes are rebuilt.
const REINDEX_BATCH: usize = 10_000;

/// Longest suffix the suffix index keeps, in characters: a longer `name`
/// is looked up by its first `SUFFIX_CHARS` and checked against the name.
/// Bounds a request's suffix keys to 255 × 64 characters.
pub const SUFFIX_CHARS: usize = 64;

/// How a listing compares `name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NameMatch {
    /// The same string.
    Exact,
    /// The same string, ignoring case.
    IExact,
    /// A substring.
    Partial,
    /// A substring, ignoring case.
    IPartial,
}

impl NameMatch {
    /// Whether `have` matches the query `want` (`want_lower` is its
    /// lowercase form).
    pub fn hits(self, have: &str, want: &str, want_lower: &str) -> bool {
        match self {
            NameMatch::Exact => have == want,
            NameMatch::IExact => have.to_lowercase() == want_lower,
            NameMatch::Partial => have.contains(want),
            NameMatch::IPartial => have.to_lowercase().contains(want_lower),
        }
    }
}

/// The filters of a listing other than time and status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinSvcFilter {
    /// Requests for one of these CIDs (none: any).
    pub cids: Vec<CidKey>,
    /// Requests whose name matches.
    pub name: Option<(String, NameMatch)>,
    /// Requests whose meta holds every pair.
    pub meta: BTreeMap<String, String>,
}

impl PinSvcFilter {
    /// Whether it keeps every request.
    pub fn is_empty(&self) -> bool {
        self.cids.is_empty() && self.name.is_none() && self.meta.is_empty()
    }
}

/// Creates the tables (at open, so readers always find them).
pub(super) fn create(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(REQUESTS)?;
    txn.open_table(BY_CREATED)?;
    txn.open_table(BY_CID)?;
    txn.open_table(BY_NAME)?;
    txn.open_table(BY_SUFFIX)?;
    txn.open_table(BY_META)?;
    txn.open_table(TOKENS)?;
    txn.open_table(CREATED)?;
    txn.open_table(INDEX_META)?;
    Ok(())
}

/// Drops every request (before a snapshot is installed).
pub(super) fn clear(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.delete_table(REQUESTS)?;
    drop_indexes(txn)?;
    create(txn)
}

fn drop_indexes(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.delete_table(BY_CREATED)?;
    txn.delete_table(BY_CID)?;
    txn.delete_table(BY_NAME)?;
    txn.delete_table(BY_SUFFIX)?;
    txn.delete_table(BY_META)?;
    txn.delete_table(TOKENS)?;
    txn.delete_table(CREATED)?;
    txn.delete_table(LEGACY_BY_TOKEN)?;
    Ok(())
}

/// Rebuilds the indexes from the records when they are of an older
/// version (a store written before they existed). Returns how many
/// records were indexed (0 when nothing was to do).
pub(super) fn reindex(txn: &WriteTransaction) -> Result<u64, TxnError> {
    let version = txn
        .open_table(INDEX_META)?
        .get("version")?
        .map(|v| v.value());
    if version == Some(INDEX_VERSION) {
        return Ok(0);
    }
    drop_indexes(txn)?;
    create(txn)?;
    let mut done = 0u64;
    let mut after: Option<String> = None;
    loop {
        // A batch of records read, then indexed (one table open at a time).
        let batch: Vec<PinSvcRequest> = {
            let requests = txn.open_table(REQUESTS)?;
            let range = match &after {
                Some(id) => requests.range::<&str>((
                    std::ops::Bound::Excluded(id.as_str()),
                    std::ops::Bound::Unbounded,
                ))?,
                None => requests.range::<&str>(..)?,
            };
            let mut batch = Vec::new();
            for item in range.take(REINDEX_BATCH) {
                batch.push(serde_json::from_slice(item?.1.value())?);
            }
            batch
        };
        let Some(last) = batch.last() else { break };
        after = Some(last.requestid.clone());
        let mut tables = Tables::open(txn)?;
        for r in &batch {
            tables.index(r)?;
            done += 1;
        }
    }
    txn.open_table(INDEX_META)?
        .insert("version", INDEX_VERSION)?;
    Ok(done)
}

/// Makes the store look as one written before the filter indexes: only
/// the records and the first version's index (for the test of
/// [`reindex`]).
#[cfg(test)]
pub(super) fn forget_indexes(txn: &WriteTransaction) -> Result<(), TxnError> {
    drop_indexes(txn)?;
    create(txn)?;
    txn.open_table(INDEX_META)?.remove("version")?;
    let requests = txn.open_table(REQUESTS)?;
    let mut legacy = txn.open_table(LEGACY_BY_TOKEN)?;
    for item in requests.iter()? {
        let r: PinSvcRequest = serde_json::from_slice(item?.1.value())?;
        legacy.insert((r.token.as_str(), r.created_ns), r.requestid.as_str())?;
    }
    Ok(())
}

/// `name`'s suffixes, each cut to [`SUFFIX_CHARS`] characters (a run of
/// repeated characters can make two alike: the index holds it once).
fn suffixes(name: &str) -> impl Iterator<Item = &str> {
    name.char_indices().map(|(i, _)| prefix_chars(&name[i..]))
}

/// The first [`SUFFIX_CHARS`] characters of `s`.
fn prefix_chars(s: &str) -> &str {
    match s.char_indices().nth(SUFFIX_CHARS) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// The tables inside one write transaction.
pub(super) struct Tables<'t> {
    requests: Table<'t, &'static str, &'static [u8]>,
    by_created: Table<'t, (&'static str, i64), (&'static str, &'static [u8], &'static str)>,
    by_cid: Table<'t, (&'static str, &'static [u8], i64), &'static str>,
    by_name: Table<'t, (&'static str, &'static str, i64), ()>,
    by_suffix: Table<'t, (&'static str, &'static str, i64), ()>,
    by_meta: Table<'t, (&'static str, &'static str, &'static str, i64), ()>,
    tokens: Table<'t, &'static str, (u64, u64)>,
    created: Table<'t, i64, ()>,
}

impl<'t> Tables<'t> {
    /// Opens them in `txn`.
    pub fn open(txn: &'t WriteTransaction) -> Result<Self, redb::TableError> {
        Ok(Self {
            requests: txn.open_table(REQUESTS)?,
            by_created: txn.open_table(BY_CREATED)?,
            by_cid: txn.open_table(BY_CID)?,
            by_name: txn.open_table(BY_NAME)?,
            by_suffix: txn.open_table(BY_SUFFIX)?,
            by_meta: txn.open_table(BY_META)?,
            tokens: txn.open_table(TOKENS)?,
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
        self.requests
            .insert(r.requestid.as_str(), bytes.as_slice())?;
        self.index(r)
    }

    /// Writes a stored request's index entries.
    fn index(&mut self, r: &PinSvcRequest) -> Result<(), TxnError> {
        let cid = r.cid.cid().to_bytes();
        let (token, at, id) = (r.token.as_str(), r.created_ns, r.requestid.as_str());
        let name = r.name.as_deref().unwrap_or("");
        self.by_created
            .insert((token, at), (id, cid.as_slice(), name))?;
        self.by_cid.insert((token, cid.as_slice(), at), id)?;
        if let Some(name) = &r.name {
            let lower = name.to_lowercase();
            self.by_name.insert((token, lower.as_str(), at), ())?;
            for s in suffixes(&lower) {
                self.by_suffix.insert((token, s, at), ())?;
            }
        }
        for (k, v) in &r.meta {
            self.by_meta
                .insert((token, k.as_str(), v.as_str(), at), ())?;
        }
        self.created.insert(at, ())?;
        self.count(token, 1)
    }

    /// Removes a request and its index entries.
    pub fn remove(&mut self, r: &PinSvcRequest) -> Result<(), TxnError> {
        let cid = r.cid.cid().to_bytes();
        let (token, at) = (r.token.as_str(), r.created_ns);
        self.requests.remove(r.requestid.as_str())?;
        self.by_created.remove((token, at))?;
        self.by_cid.remove((token, cid.as_slice(), at))?;
        if let Some(name) = &r.name {
            let lower = name.to_lowercase();
            self.by_name.remove((token, lower.as_str(), at))?;
            for s in suffixes(&lower) {
                self.by_suffix.remove((token, s, at))?;
            }
        }
        for (k, v) in &r.meta {
            self.by_meta.remove((token, k.as_str(), v.as_str(), at))?;
        }
        self.created.remove(at)?;
        self.count(token, -1)
    }

    /// Adds `delta` to `token`'s request count, and one to its changes.
    fn count(&mut self, token: &str, delta: i64) -> Result<(), TxnError> {
        let (n, changes) = self.tokens.get(token)?.map_or((0, 0), |v| v.value());
        let n = n.saturating_add_signed(delta);
        self.tokens.insert(token, (n, changes.wrapping_add(1)))?;
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
        self.requests.insert(r.requestid.as_str(), bytes)?;
        self.index(&r)
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
    pub fn inclusive(&self) -> Option<(i64, i64)> {
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

/// The read-only indexes a walk seeks in.
struct Readers {
    by_created: ReadOnlyTable<(&'static str, i64), (&'static str, &'static [u8], &'static str)>,
    by_name: ReadOnlyTable<(&'static str, &'static str, i64), ()>,
    by_meta: ReadOnlyTable<(&'static str, &'static str, &'static str, i64), ()>,
}

/// One filter's matches, newest first.
enum Cursor<'f> {
    /// Listed in memory, newest first.
    Listed(Vec<i64>),
    /// A range of the name index: this lowercase name.
    Name(&'f str),
    /// A range of the meta index: this pair.
    Meta(&'f str, &'f str),
}

impl Cursor<'_> {
    /// The newest match within `lo..=x`.
    fn seek(&self, r: &Readers, token: &str, lo: i64, x: i64) -> StoreResult<Option<i64>> {
        Ok(match self {
            Cursor::Listed(v) => {
                let i = v.partition_point(|at| *at > x);
                v.get(i).copied().filter(|at| *at >= lo)
            }
            Cursor::Name(n) => r
                .by_name
                .range((token, *n, lo)..=(token, *n, x))
                .map_err(read_err)?
                .next_back()
                .transpose()
                .map_err(read_err)?
                .map(|(k, _)| k.value().2),
            Cursor::Meta(k, v) => r
                .by_meta
                .range((token, *k, *v, lo)..=(token, *k, *v, x))
                .map_err(read_err)?
                .next_back()
                .transpose()
                .map_err(read_err)?
                .map(|(k, _)| k.value().3),
        })
    }
}

/// Sorts newest first, without repeats.
fn newest_first(mut v: Vec<i64>) -> Vec<i64> {
    v.sort_unstable_by(|a, b| b.cmp(a));
    v.dedup();
    v
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

    /// How many changes `token`'s requests saw (creates and removals):
    /// equal between two reads when its requests did not change.
    pub fn pinsvc_changes(&self, token: &str) -> StoreResult<u64> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let t = txn.open_table(TOKENS).map_err(read_err)?;
        Ok(t.get(token).map_err(read_err)?.map_or(0, |v| v.value().1))
    }

    /// Calls `f` with the `created_ns` of each of `token`'s requests within
    /// `range` that pass `filter`, newest first, until it returns false. Reads index keys
    /// only (one read transaction); returns the token's change count as
    /// that transaction saw it ([`Self::pinsvc_changes`]).
    pub fn pinsvc_walk(
        &self,
        token: &str,
        filter: &PinSvcFilter,
        range: CreatedRange,
        mut f: impl FnMut(i64) -> bool,
    ) -> StoreResult<u64> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let changes = {
            let t = txn.open_table(TOKENS).map_err(read_err)?;
            t.get(token).map_err(read_err)?.map_or(0, |v| v.value().1)
        };
        let Some((lo, hi)) = range.inclusive() else {
            return Ok(changes);
        };
        let r = Readers {
            by_created: txn.open_table(BY_CREATED).map_err(read_err)?,
            by_name: txn.open_table(BY_NAME).map_err(read_err)?,
            by_meta: txn.open_table(BY_META).map_err(read_err)?,
        };
        let name = filter
            .name
            .as_ref()
            .map(|(want, mode)| (want.as_str(), want.to_lowercase(), *mode));
        let mut cursors: Vec<Cursor<'_>> = Vec::new();
        if !filter.cids.is_empty() {
            let t = txn.open_table(BY_CID).map_err(read_err)?;
            let mut v = Vec::new();
            for cid in &filter.cids {
                let b = cid.cid().to_bytes();
                let b = b.as_slice();
                for item in t.range((token, b, lo)..=(token, b, hi)).map_err(read_err)? {
                    v.push(item.map_err(read_err)?.0.value().2);
                }
            }
            cursors.push(Cursor::Listed(newest_first(v)));
        }
        if let Some((_, lower, mode)) = &name {
            if matches!(mode, NameMatch::Exact | NameMatch::IExact) {
                cursors.push(Cursor::Name(lower.as_str()));
            } else {
                let t = txn.open_table(BY_SUFFIX).map_err(read_err)?;
                let prefix = prefix_chars(lower);
                let mut v = Vec::new();
                for item in t.range((token, prefix, i64::MIN)..).map_err(read_err)? {
                    let (k, _) = item.map_err(read_err)?;
                    let (tk, suffix, at) = k.value();
                    if tk != token || !suffix.starts_with(prefix) {
                        break;
                    }
                    if (lo..=hi).contains(&at) {
                        v.push(at);
                    }
                }
                cursors.push(Cursor::Listed(newest_first(v)));
            }
        }
        for (k, v) in &filter.meta {
            cursors.push(Cursor::Meta(k.as_str(), v.as_str()));
        }
        // What the indexes cannot tell: the name's case, and the rest of a
        // query longer than the suffix index keeps.
        let keeps = |have: &str| match &name {
            None => true,
            Some((want, lower, mode)) => mode.hits(have, want, lower),
        };
        if cursors.is_empty() {
            let scan = r.by_created.range((token, lo)..=(token, hi));
            for item in scan.map_err(read_err)?.rev() {
                let (k, v) = item.map_err(read_err)?;
                if keeps(v.value().2) && !f(k.value().1) {
                    break;
                }
            }
            return Ok(changes);
        }
        // A match of the cursors, told to `f` if its name passes; false
        // when `f` wants no more.
        let mut visit = |at: i64| -> StoreResult<bool> {
            Ok(match r.by_created.get((token, at)).map_err(read_err)? {
                Some(v) => !keeps(v.value().2) || f(at),
                None => true,
            })
        };
        if let [only] = cursors.as_slice() {
            // One filter: its matches in order, no seeking.
            match only {
                Cursor::Listed(v) => {
                    for at in v {
                        if !visit(*at)? {
                            break;
                        }
                    }
                }
                Cursor::Name(n) => {
                    let scan = r.by_name.range((token, *n, lo)..=(token, *n, hi));
                    for item in scan.map_err(read_err)?.rev() {
                        if !visit(item.map_err(read_err)?.0.value().2)? {
                            break;
                        }
                    }
                }
                Cursor::Meta(k, val) => {
                    let scan = r
                        .by_meta
                        .range((token, *k, *val, lo)..=(token, *k, *val, hi));
                    for item in scan.map_err(read_err)?.rev() {
                        if !visit(item.map_err(read_err)?.0.value().3)? {
                            break;
                        }
                    }
                }
            }
            return Ok(changes);
        }
        // Leapfrog: `cur` moves down to the newest `created` every cursor
        // has; `agreed` counts the cursors in a row that have `cur`.
        let mut cur = hi;
        'walk: loop {
            let (mut agreed, mut i) = (0, 0);
            while agreed < cursors.len() {
                match cursors[i].seek(&r, token, lo, cur)? {
                    None => break 'walk,
                    Some(at) if at < cur => {
                        cur = at;
                        agreed = 1;
                    }
                    Some(_) => agreed += 1,
                }
                i = (i + 1) % cursors.len();
            }
            if !visit(cur)? || cur == lo {
                break;
            }
            cur -= 1;
        }
        Ok(changes)
    }

    /// `token`'s requests created at these times, in order (one gone
    /// since is left out).
    pub fn pinsvc_records(&self, token: &str, created: &[i64]) -> StoreResult<Vec<PinSvcRequest>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let by_created = txn.open_table(BY_CREATED).map_err(read_err)?;
        let requests = txn.open_table(REQUESTS).map_err(read_err)?;
        let mut out = Vec::with_capacity(created.len());
        for at in created {
            let Some(ids) = by_created.get((token, *at)).map_err(read_err)? else {
                continue;
            };
            if let Some(v) = requests.get(ids.value().0).map_err(read_err)? {
                out.push(serde_json::from_slice(v.value()).map_err(read_err)?);
            }
        }
        Ok(out)
    }

    /// The CIDs of `token`'s requests created at these times, in order
    /// (`None` for one gone since).
    pub fn pinsvc_cids(&self, token: &str, created: &[i64]) -> StoreResult<Vec<Option<CidKey>>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let by_created = txn.open_table(BY_CREATED).map_err(read_err)?;
        let mut out = Vec::with_capacity(created.len());
        for at in created {
            out.push(match by_created.get((token, *at)).map_err(read_err)? {
                Some(v) => Some(super::records::cid_of(v.value().1).map_err(read_err)?),
                None => None,
            });
        }
        Ok(out)
    }

    /// Up to `max` of `token`'s requests within `range`, newest first; only
    /// those for one of `cids` when it is not empty.
    pub fn pinsvc_page(
        &self,
        token: &str,
        cids: &[CidKey],
        range: CreatedRange,
        max: usize,
    ) -> StoreResult<Vec<PinSvcRequest>> {
        let filter = PinSvcFilter {
            cids: cids.to_vec(),
            ..PinSvcFilter::default()
        };
        let mut created = Vec::new();
        if max > 0 {
            self.pinsvc_walk(token, &filter, range, |at| {
                created.push(at);
                created.len() < max
            })?;
        }
        self.pinsvc_records(token, &created)
    }

    /// How many of `token`'s requests are within `range`: the token's
    /// count when the range is unbounded; else index keys, walking inside
    /// and outside the range in step and stopping at the shorter, so a
    /// page near either end of the token's requests reads few keys.
    pub fn pinsvc_count(&self, token: &str, range: CreatedRange) -> StoreResult<u64> {
        let Some((lo, hi)) = range.inclusive() else {
            return Ok(0);
        };
        let txn = self.db.begin_read().map_err(read_err)?;
        let total = {
            let t = txn.open_table(TOKENS).map_err(read_err)?;
            t.get(token).map_err(read_err)?.map_or(0, |v| v.value().0)
        };
        if lo == i64::MIN && hi == i64::MAX {
            return Ok(total);
        }
        let t = txn.open_table(BY_CREATED).map_err(read_err)?;
        let mut inside = t.range((token, lo)..=(token, hi)).map_err(read_err)?;
        let mut below = t.range((token, i64::MIN)..(token, lo)).map_err(read_err)?;
        let mut above = match hi.checked_add(1) {
            Some(next) => Some(
                t.range((token, next)..=(token, i64::MAX))
                    .map_err(read_err)?,
            ),
            None => None,
        };
        let (mut n_in, mut n_out) = (0u64, 0u64);
        let (mut below_done, mut above_done) = (false, above.is_none());
        loop {
            match inside.next() {
                None => return Ok(n_in),
                Some(item) => {
                    item.map_err(read_err)?;
                    n_in += 1;
                }
            }
            if !below_done {
                match below.next() {
                    None => below_done = true,
                    Some(item) => {
                        item.map_err(read_err)?;
                        n_out += 1;
                    }
                }
            }
            if let Some(it) = above.as_mut().filter(|_| !above_done) {
                match it.next() {
                    None => above_done = true,
                    Some(item) => {
                        item.map_err(read_err)?;
                        n_out += 1;
                    }
                }
            }
            if below_done && above_done {
                return Ok(total.saturating_sub(n_out));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_cut_at_their_character_bound() {
        let all: Vec<&str> = suffixes("abç").collect();
        assert_eq!(all, ["abç", "bç", "ç"]);
        let long = "x".repeat(SUFFIX_CHARS + 10);
        assert!(suffixes(&long).all(|s| s.chars().count() <= SUFFIX_CHARS));
        assert_eq!(suffixes(&long).count(), SUFFIX_CHARS + 10);
    }

    #[test]
    fn name_modes_compare_as_the_spec_says() {
        use NameMatch::*;
        assert!(Exact.hits("Req-1", "Req-1", "req-1"));
        assert!(!Exact.hits("req-1", "Req-1", "req-1"));
        assert!(IExact.hits("REQ-1", "Req-1", "req-1"));
        assert!(!IExact.hits("req-10", "Req-1", "req-1"));
        assert!(Partial.hits("a-Req-1", "Req", "req"));
        assert!(!Partial.hits("a-req-1", "Req", "req"));
        assert!(IPartial.hits("a-rEQ-1", "Req", "req"));
    }
}
