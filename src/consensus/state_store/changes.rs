//! The applied-change feed: which pins the state machine changed, in apply
//! order, so that a consumer (the pin tracker) compares only what changed
//! instead of walking the whole state after every change.
//!
//! Every put or remove of a pin in a batch of applied log entries is
//! recorded in the same redb write transaction, under a sequence number
//! that only grows. Only the last [`CHANGES_KEPT`] entries are kept: a
//! consumer asking for an older position (or one this store never had) is
//! told it is `truncated`, compares everything once, and resumes from the
//! `next_seq` it was given.
//!
//! Snapshots do not carry the feed: installing one resets it (the sequence
//! jumps ahead and old entries are dropped), so every consumer sees
//! `truncated` and does a full comparison. The feed records CIDs only and
//! is never read by the state machine itself.

use std::collections::VecDeque;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{NodeId, PinStore, StateStore, StorageError, TxnError, read_err};
use crate::manifest::{CidKey, Owner};
use crate::state::pinsvc::PinSvcRequest;
use crate::state::{CommitRecord, ConditionsRecord, Op, PinSetRecord, StatePin};

/// Sequence number of a row's first change → the row: up to [`ROW_CIDS`]
/// changes with consecutive sequence numbers, packed ([`pack`]), so a
/// change costs a share of one B-tree insert, not one of its own.
const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("change_rows");
/// The feed of format 1 (one row per change); dropped on open.
const OLD_CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");
/// Changes per row.
const ROW_CIDS: usize = 256;
/// `next` (the sequence number of the next change) and `floor` (the oldest
/// sequence number still answered; every entry from `floor` to `next` is
/// present).
const CHANGES_META: TableDefinition<&str, u64> = TableDefinition::new("changes_meta");
const NEXT: &str = "next";
const FLOOR: &str = "floor";

/// Changes kept; older ones are trimmed in the transaction that adds newer.
pub const CHANGES_KEPT: u64 = 65_536;

/// A page of the change feed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangePage {
    /// The pins changed, in apply order (a pin changed twice is listed
    /// twice).
    pub cids: Vec<CidKey>,
    /// Where to continue from.
    pub next_seq: u64,
    /// The position asked for is no longer (or was never) in the feed:
    /// compare everything, then continue from `next_seq`.
    pub truncated: bool,
}

/// Creates the feed's tables (when the state is opened).
pub(super) fn create(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(CHANGES)?;
    txn.open_table(CHANGES_META)?;
    // A feed written one row per change (before rows were packed) is
    // dropped; its consumers see `truncated` and compare everything once.
    if txn.delete_table(OLD_CHANGES)? {
        let mut meta = txn.open_table(CHANGES_META)?;
        let next = meta.get(NEXT)?.map(|v| v.value()).unwrap_or(0) + 1;
        meta.insert(NEXT, next)?;
        meta.insert(FLOOR, next)?;
    }
    Ok(())
}

/// A row: the number of changes (u16 LE), then each CID's bytes behind its
/// length (u16 LE).
fn pack(cids: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + cids.iter().map(|c| c.len() + 2).sum::<usize>());
    // Rows hold at most ROW_CIDS (< u16::MAX) changes, and CIDs are far
    // shorter than 64 KiB (manifest CIDs are bounded on load).
    out.extend_from_slice(&u16::try_from(cids.len()).unwrap_or(u16::MAX).to_le_bytes());
    for c in cids {
        out.extend_from_slice(&u16::try_from(c.len()).unwrap_or(u16::MAX).to_le_bytes());
        out.extend_from_slice(c);
    }
    out
}

/// How many changes `row` holds.
fn row_len(row: &[u8]) -> u64 {
    match row {
        [a, b, ..] => u64::from(u16::from_le_bytes([*a, *b])),
        _ => 0,
    }
}

/// The CIDs of `row`, in order.
fn unpack(row: &[u8]) -> impl Iterator<Item = Result<&[u8], redb::StorageError>> {
    let mut rest = row.get(2..).unwrap_or_default();
    let mut left = row_len(row);
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        left -= 1;
        let broken = || redb::StorageError::Corrupted("change feed row cut short".into());
        let [a, b, tail @ ..] = rest else {
            left = 0;
            return Some(Err(broken()));
        };
        let n = usize::from(u16::from_le_bytes([*a, *b]));
        if tail.len() < n {
            left = 0;
            return Some(Err(broken()));
        }
        let (cid, after) = tail.split_at(n);
        rest = after;
        Some(Ok(cid))
    })
}

/// A [`PinStore`] that remembers which pins it put or removed (at most the
/// last [`CHANGES_KEPT`] of them, counting the ones it forgot).
pub(super) struct Recording<S> {
    store: S,
    changed: VecDeque<Vec<u8>>,
    forgotten: u64,
    kept: u64,
}

impl<S> Recording<S> {
    pub(super) fn new(store: S) -> Self {
        Self::keeping(store, CHANGES_KEPT)
    }

    /// Keeps `kept` changes instead of [`CHANGES_KEPT`] (tests).
    fn keeping(store: S, kept: u64) -> Self {
        Self {
            store,
            changed: VecDeque::new(),
            forgotten: 0,
            kept: kept.max(1),
        }
    }

    fn note(&mut self, cid: &CidKey) {
        if self.changed.len() as u64 >= self.kept {
            self.changed.pop_front();
            self.forgotten += 1;
        }
        self.changed.push_back(cid.cid().to_bytes());
    }

    /// Writes what was recorded to the feed, in `txn` (the transaction the
    /// changes were applied in), and trims the feed to what it keeps;
    /// returns the store it recorded for.
    pub(super) fn write(self, txn: &WriteTransaction) -> Result<S, redb::Error> {
        if self.changed.is_empty() {
            return Ok(self.store);
        }
        let mut meta = txn.open_table(CHANGES_META)?;
        let mut table = txn.open_table(CHANGES)?;
        let get = |meta: &redb::Table<&str, u64>, key| -> Result<u64, redb::Error> {
            Ok(meta.get(key)?.map(|v| v.value()).unwrap_or(0))
        };
        let (floor, mut next) = (get(&meta, FLOOR)?, get(&meta, NEXT)?);
        // Forgotten changes take their sequence numbers without an entry:
        // whoever has not read past them must compare everything.
        next += self.forgotten;
        let first = next;
        let changed: Vec<Vec<u8>> = self.changed.into();
        for row in changed.chunks(ROW_CIDS) {
            table.insert(next, pack(row).as_slice())?;
            next += row.len() as u64;
        }
        let new_floor = if self.forgotten > 0 {
            first
        } else {
            floor.max(next.saturating_sub(self.kept))
        };
        if new_floor > floor {
            // Rows wholly below the floor go; a row the floor cuts stays
            // (its older changes are no longer answered).
            table.retain_in(..new_floor, |start, row| start + row_len(row) > new_floor)?;
        }
        meta.insert(NEXT, next)?;
        meta.insert(FLOOR, new_floor)?;
        Ok(self.store)
    }
}

/// Empties the feed after a snapshot was installed: the sequence moves past
/// every position a consumer may hold, so each one sees `truncated`.
pub(super) fn reset(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let mut meta = txn.open_table(CHANGES_META)?;
    let next = meta.get(NEXT)?.map(|v| v.value()).unwrap_or(0) + 1;
    meta.insert(NEXT, next)?;
    meta.insert(FLOOR, next)?;
    drop(meta);
    txn.delete_table(CHANGES)?;
    txn.open_table(CHANGES)?;
    Ok(())
}

impl<S: PinStore<Error = TxnError>> PinStore for Recording<S> {
    type Error = TxnError;

    fn get(&self, cid: &CidKey) -> Result<Option<StatePin>, TxnError> {
        self.store.get(cid)
    }

    fn put(&mut self, pin: &StatePin, before: Option<&StatePin>) -> Result<(), TxnError> {
        self.store.put(pin, before)?;
        self.note(&pin.cid);
        Ok(())
    }

    fn remove(&mut self, before: &StatePin) -> Result<(), TxnError> {
        self.store.remove(before)?;
        self.note(&before.cid);
        Ok(())
    }

    fn shard_members(&self, meta: &CidKey) -> Result<Vec<CidKey>, TxnError> {
        self.store.shard_members(meta)
    }

    fn stage(
        &mut self,
        owner: &Owner,
        revision: u64,
        seq: u32,
        now_ms: i64,
        ops: &[Op],
    ) -> Result<(), TxnError> {
        self.store.stage(owner, revision, seq, now_ms, ops)
    }

    fn take_staged(&mut self, owner: &Owner, revision: u64) -> Result<Vec<Vec<Op>>, TxnError> {
        self.store.take_staged(owner, revision)
    }

    fn expire_staged(&mut self, older_than_ms: i64) -> Result<(), TxnError> {
        self.store.expire_staged(older_than_ms)
    }

    fn set_pinset(&mut self, owner: &Owner, record: Option<&PinSetRecord>) -> Result<(), TxnError> {
        self.store.set_pinset(owner, record)
    }

    fn set_conditions(
        &mut self,
        owner: &Owner,
        record: Option<&ConditionsRecord>,
    ) -> Result<(), TxnError> {
        self.store.set_conditions(owner, record)
    }

    fn pinset(&self, owner: &Owner) -> Result<Option<PinSetRecord>, TxnError> {
        self.store.pinset(owner)
    }

    fn conditions(&self, owner: &Owner) -> Result<Option<ConditionsRecord>, TxnError> {
        self.store.conditions(owner)
    }

    fn commits(&self, owner: &Owner) -> Result<Option<CommitRecord>, TxnError> {
        self.store.commits(owner)
    }

    fn set_commits(&mut self, owner: &Owner, record: &CommitRecord) -> Result<(), TxnError> {
        self.store.set_commits(owner, record)
    }

    fn pinsvc_get(&self, requestid: &str) -> Result<Option<PinSvcRequest>, TxnError> {
        self.store.pinsvc_get(requestid)
    }

    fn pinsvc_put(&mut self, request: &PinSvcRequest) -> Result<(), TxnError> {
        self.store.pinsvc_put(request)
    }

    fn pinsvc_remove(&mut self, request: &PinSvcRequest) -> Result<(), TxnError> {
        self.store.pinsvc_remove(request)
    }

    fn pinsvc_holds(&self, token: &str, cid: &CidKey) -> Result<bool, TxnError> {
        self.store.pinsvc_holds(token, cid)
    }

    fn pinsvc_last_created(&self) -> Result<i64, TxnError> {
        self.store.pinsvc_last_created()
    }
}

impl StateStore {
    /// Up to `limit` pins changed from sequence number `seq` on, from one
    /// read transaction. Start from [`changes_head`](Self::changes_head)
    /// read before a full comparison.
    pub fn changes_since(
        &self,
        seq: u64,
        limit: usize,
    ) -> Result<ChangePage, StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let meta = txn.open_table(CHANGES_META).map_err(read_err)?;
        let get = |key| -> Result<u64, StorageError<NodeId>> {
            Ok(meta
                .get(key)
                .map_err(read_err)?
                .map(|v| v.value())
                .unwrap_or(0))
        };
        let (floor, next) = (get(FLOOR)?, get(NEXT)?);
        if seq < floor || seq > next {
            return Ok(ChangePage {
                cids: Vec::new(),
                next_seq: next,
                truncated: true,
            });
        }
        let table = txn.open_table(CHANGES).map_err(read_err)?;
        let mut page = ChangePage {
            cids: Vec::new(),
            next_seq: seq,
            truncated: false,
        };
        // The row holding `seq` starts at or before it.
        let from = table
            .range(..=seq)
            .map_err(read_err)?
            .next_back()
            .transpose()
            .map_err(read_err)?
            .map_or(seq, |(k, _)| k.value());
        'rows: for item in table.range(from..).map_err(read_err)? {
            let (k, v) = item.map_err(read_err)?;
            for (at, bytes) in (k.value()..).zip(unpack(v.value())) {
                if at < seq {
                    continue;
                }
                if page.cids.len() >= limit {
                    break 'rows;
                }
                let cid = cid::Cid::try_from(bytes.map_err(read_err)?)
                    .map_err(read_err)
                    .and_then(|c| CidKey::from_cid(c).map_err(read_err))?;
                page.cids.push(cid);
                page.next_seq = at + 1;
            }
        }
        Ok(page)
    }

    /// The sequence number the next change will get: where a consumer that
    /// is about to compare everything resumes afterwards.
    pub fn changes_head(&self) -> Result<u64, StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let meta = txn.open_table(CHANGES_META).map_err(read_err)?;
        Ok(meta
            .get(NEXT)
            .map_err(read_err)?
            .map(|v| v.value())
            .unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    use super::super::TxnStore;
    use super::*;
    use crate::manifest::{PinOptions, PinSetId, PinSpec};
    use crate::state::{Command, Request, apply};
    use crate::testkit::seq_cid;

    fn open(dir: &std::path::Path, name: &str) -> StateStore {
        StateStore::open(&dir.join(format!("{name}.redb")), &dir.join(name)).unwrap()
    }

    fn set(i: u64) -> Op {
        Op::Set {
            cid: seq_cid(i),
            written_as: None,
            spec: PinSpec {
                name: format!("p{i}"),
                options: Arc::new(PinOptions::default()),
            },
        }
    }

    fn release(i: u64) -> Op {
        Op::Release { cid: seq_cid(i) }
    }

    fn request(ops: Vec<Op>) -> Request {
        Request {
            now_ms: 1,
            command: Command::Apply {
                owner: Owner::pinset(PinSetId::new("ns", "feed")),
                ops,
            },
        }
    }

    /// Applies `ops` in one transaction with a feed keeping `kept` changes.
    fn apply_keeping(store: &StateStore, kept: u64, ops: Vec<Op>) {
        let txn = store.db.begin_write().unwrap();
        {
            let mut rec = Recording::keeping(TxnStore::open(&txn, &store.dict).unwrap(), kept);
            apply(&mut rec, &request(ops)).unwrap();
            rec.write(&txn).unwrap().finish().unwrap();
        }
        txn.commit().unwrap();
    }

    fn cids(page: &ChangePage) -> Vec<CidKey> {
        page.cids.clone()
    }

    #[test]
    fn the_feed_lists_applied_changes_in_order_and_resumes_where_asked() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), "a");
        let start = store.changes_head().unwrap();
        let mut index = 0;
        let mut entry = |ops: Vec<Op>| {
            index += 1;
            openraft::Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                payload: EntryPayload::Normal(request(ops)),
            }
        };
        // Through the real apply path: two batches of log entries.
        store
            .apply_batch(vec![entry(vec![set(0), set(1)]), entry(vec![set(2)])])
            .unwrap();
        store
            .apply_batch(vec![entry(vec![release(1), set(5)])])
            .unwrap();

        let first = store.changes_since(start, 2).unwrap();
        assert!(!first.truncated);
        assert_eq!(cids(&first), vec![seq_cid(0), seq_cid(1)]);
        let rest = store.changes_since(first.next_seq, 100).unwrap();
        assert_eq!(
            cids(&rest),
            vec![seq_cid(2), seq_cid(1), seq_cid(5)],
            "a released pin is a change too, in apply order"
        );
        assert_eq!(rest.next_seq, store.changes_head().unwrap());
        let caught_up = store.changes_since(rest.next_seq, 100).unwrap();
        assert_eq!(
            caught_up,
            ChangePage {
                cids: Vec::new(),
                next_seq: rest.next_seq,
                truncated: false
            }
        );
        // Applying an unchanged pin records nothing; an entry that touches
        // no pin neither.
        store.apply_batch(vec![entry(vec![set(5)])]).unwrap();
        assert!(
            store
                .changes_since(rest.next_seq, 100)
                .unwrap()
                .cids
                .is_empty()
        );
        // Reopening the store keeps the feed and its position.
        drop(store);
        let store = open(dir.path(), "a");
        assert_eq!(store.changes_head().unwrap(), rest.next_seq);
        assert_eq!(
            cids(&store.changes_since(first.next_seq, 100).unwrap()),
            cids(&rest)
        );
    }

    #[test]
    fn a_consumer_behind_the_trimmed_feed_is_told_it_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), "a");
        let start = store.changes_head().unwrap();
        apply_keeping(&store, 4, (0..3).map(set).collect());
        let mid = store.changes_since(start, 100).unwrap();
        assert_eq!(mid.cids.len(), 3);
        // Three more: the oldest two are trimmed (4 kept).
        apply_keeping(&store, 4, (3..6).map(set).collect());
        let behind = store.changes_since(start, 100).unwrap();
        assert!(behind.truncated, "{behind:?}");
        assert!(behind.cids.is_empty());
        assert_eq!(behind.next_seq, store.changes_head().unwrap());
        assert_eq!(
            cids(&store.changes_since(start + 2, 100).unwrap()),
            (2..6).map(seq_cid).collect::<Vec<_>>(),
            "the last 4 are kept"
        );
        // One batch larger than the feed: its first changes are forgotten,
        // and whoever had not read past them is truncated.
        let head = store.changes_head().unwrap();
        apply_keeping(&store, 4, (10..20).map(set).collect());
        assert!(store.changes_since(head, 100).unwrap().truncated);
        let page = store
            .changes_since(store.changes_head().unwrap() - 4, 100)
            .unwrap();
        assert_eq!(cids(&page), (16..20).map(seq_cid).collect::<Vec<_>>());
        // A position past the head (another store's) is truncated too.
        assert!(store.changes_since(u64::MAX, 1).unwrap().truncated);
    }

    /// Changes are packed in rows; a position inside a row, a row the
    /// trimmed floor cuts and pages across rows answer as single changes.
    #[test]
    fn positions_inside_packed_rows_answer_change_by_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), "a");
        let start = store.changes_head().unwrap();
        apply_keeping(&store, 300, (0..400).map(set).collect());
        apply_keeping(&store, 300, (400..600).map(set).collect());
        let head = store.changes_head().unwrap();
        assert_eq!(head, start + 600);
        assert!(store.changes_since(start + 299, 10).unwrap().truncated);
        let mut at = start + 300;
        let mut seen = Vec::new();
        while at < head {
            let page = store.changes_since(at, 77).unwrap();
            assert!(!page.truncated);
            assert!(page.cids.len() <= 77);
            seen.extend(page.cids);
            at = page.next_seq;
        }
        let mut want: Vec<CidKey> = (300..600).map(seq_cid).collect();
        want.sort_by_key(|c| c.cid().to_bytes());
        seen.sort_by_key(|c| c.cid().to_bytes());
        assert_eq!(seen, want);
        let rows = {
            let txn = store.db.begin_read().unwrap();
            redb::ReadableTableMetadata::len(&txn.open_table(CHANGES).unwrap()).unwrap()
        };
        assert!(rows <= 3, "rows below the floor are dropped: {rows}");
    }

    #[test]
    fn installing_a_snapshot_truncates_every_consumer() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(dir.path(), "a");
        apply_keeping(&a, CHANGES_KEPT, (0..3).map(set).collect());
        let (meta, path) = a.write_snapshot_file().unwrap();
        let b = open(dir.path(), "b");
        apply_keeping(&b, CHANGES_KEPT, vec![set(7)]);
        let caught_up = b.changes_head().unwrap();
        b.install_from(&meta, &path).unwrap();
        let page = b.changes_since(caught_up, 100).unwrap();
        assert!(page.truncated, "{page:?}");
        assert_eq!(page.next_seq, b.changes_head().unwrap());
        assert!(!b.changes_since(page.next_seq, 100).unwrap().truncated);
    }
}
