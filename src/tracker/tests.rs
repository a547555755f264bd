//! The tracker's rules against the algorithm they replace: the sync that
//! built a `wanted` map of every pin allocated here and a set of every pin
//! the node holds, and the status view that copied the whole op map. For
//! random wanted / held / managed sets and operations in every phase, the
//! merge walk (and, where the node holds what it should, the incremental
//! comparison) leaves the same operations, managed pins and missing pins,
//! and a page of statuses reads the same.

use std::collections::{BTreeMap, HashMap, HashSet};

use proptest::prelude::*;

use super::book::{Book, Managing, Op, OpKind, Phase};
use super::walk::{Merge, SortedCids, Wanted};
use super::*;
use crate::testkit::seq_cid;

const NOW: i64 = 100;
const SYNCED: i64 = 90;
const N: usize = 24;

/// Where the state puts one pin.
#[derive(Clone, Debug)]
enum Placement {
    /// Not in the state, or allocated elsewhere.
    Elsewhere,
    /// Allocated here and live.
    Here(Wanted),
    /// Expired (allocated here or not).
    Expired { here: bool },
}

#[derive(Clone, Debug)]
struct Case {
    placement: Vec<Placement>,
    held: Vec<bool>,
    managed: Vec<bool>,
    unexpected: Vec<bool>,
    ops: Vec<Option<Op>>,
    /// The node's pin list was read (else the backend failed).
    listed: bool,
    repair: bool,
}

impl Case {
    fn wanted(&self, i: usize) -> Option<&Wanted> {
        match &self.placement[i] {
            Placement::Here(w) => Some(w),
            _ => None,
        }
    }

    fn query(&self, i: usize) -> StatusQuery {
        let (here, expired) = match &self.placement[i] {
            Placement::Elsewhere => (false, false),
            Placement::Here(_) => (true, false),
            Placement::Expired { here } => (*here, true),
        };
        StatusQuery {
            cid: seq_cid(i as u64),
            here,
            expired,
            gone: false,
        }
    }

    fn set(flags: &[bool]) -> HashSet<CidKey> {
        (0..N)
            .filter(|i| flags[*i])
            .map(|i| seq_cid(i as u64))
            .collect()
    }
}

fn op() -> impl Strategy<Value = Option<Op>> {
    prop_oneof![
        3 => Just(None),
        2 => (any::<bool>(), 0u8..3, 0u32..3, any::<bool>(), any::<bool>()).prop_map(
            |(pin, phase, attempts, priority, recursive)| Some(Op {
                kind: if pin { OpKind::Pin } else { OpKind::Unpin },
                phase: match phase {
                    0 => Phase::Queued,
                    1 => Phase::InFlight,
                    _ => Phase::Failed {
                        error: "ipfs said no".into(),
                        next_at_ms: 5,
                    },
                },
                attempts,
                since_ms: 1,
                priority,
                recursive,
                max_depth: None,
                origins: Vec::new(),
                seen: 0,
                stale: false,
            })
        ),
    ]
}

fn placement() -> impl Strategy<Value = Placement> {
    prop_oneof![
        2 => Just(Placement::Elsewhere),
        3 => (any::<bool>(), any::<bool>()).prop_map(|(recursive, origin)| {
            Placement::Here(Wanted {
                recursive,
                max_depth: None,
                origins: if origin {
                    vec!["/ip4/127.0.0.1/tcp/4001/p2p/QmOrigin".into()]
                } else {
                    Vec::new()
                },
            })
        }),
        1 => any::<bool>().prop_map(|here| Placement::Expired { here }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let flags = || prop::collection::vec(any::<bool>(), N);
    (
        prop::collection::vec(placement(), N),
        flags(),
        flags(),
        flags(),
        prop::collection::vec(op(), N),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(placement, held, managed, u, ops, listed, repair)| {
            // Only managed pins go missing.
            let unexpected = u.iter().zip(&managed).map(|(u, m)| *u && *m).collect();
            Case {
                placement,
                held,
                managed,
                unexpected,
                ops,
                listed,
                repair,
            }
        })
}

/// The replaced tracker's books.
#[derive(Clone, Debug, Default)]
struct Old {
    ops: HashMap<CidKey, Op>,
    pinned: HashSet<CidKey>,
    managed: HashSet<CidKey>,
    unexpected: HashSet<CidKey>,
    queue_new: Vec<CidKey>,
    queue_retry: Vec<CidKey>,
    backend_error: Option<String>,
}

impl Old {
    fn of(c: &Case) -> Self {
        Old {
            ops: (0..N)
                .filter_map(|i| c.ops[i].clone().map(|op| (seq_cid(i as u64), op)))
                .collect(),
            // Before the sync the tracker knew the node as it is now (so
            // in-flight operations, which keep that knowledge, agree with
            // the listing); with the backend down, what it manages.
            pinned: Case::set(if c.listed { &c.held } else { &c.managed }),
            managed: Case::set(&c.managed),
            unexpected: Case::set(&c.unexpected),
            ..Old::default()
        }
    }

    /// The replaced `sync`, verbatim but for I/O: the state's wishes as a
    /// map, the node's pins as a set (`None`: pin ls failed).
    fn sync(
        &mut self,
        wanted: &HashMap<CidKey, Wanted>,
        listing: Option<HashSet<CidKey>>,
        repair: bool,
    ) {
        let in_flight = |op: &Op| matches!(op.phase, Phase::InFlight);
        match listing {
            Some(mut pins) => {
                for (cid, op) in &self.ops {
                    if in_flight(op) {
                        if self.pinned.contains(cid) {
                            pins.insert(*cid);
                        } else {
                            pins.remove(cid);
                        }
                    }
                }
                self.pinned = pins;
                self.backend_error = None;
            }
            None => self.backend_error = Some("ipfs is down".into()),
        }
        for (cid, w) in wanted {
            if self.pinned.contains(cid) {
                self.managed.insert(*cid);
                self.unexpected.remove(cid);
                if self
                    .ops
                    .get(cid)
                    .is_some_and(|op| op.kind == OpKind::Unpin && !in_flight(op))
                {
                    self.ops.remove(cid);
                }
                continue;
            }
            let lost = self.managed.contains(cid) && self.backend_error.is_none();
            if lost && !self.unexpected.contains(cid) {
                self.unexpected.insert(*cid);
            }
            match self.ops.get_mut(cid) {
                Some(op) if op.kind == OpKind::Pin => {}
                Some(op) if in_flight(op) => {}
                _ => {
                    if lost && !repair {
                        continue;
                    }
                    self.ops.insert(
                        *cid,
                        Op {
                            kind: OpKind::Pin,
                            phase: Phase::Queued,
                            attempts: 0,
                            since_ms: NOW,
                            priority: !lost,
                            recursive: w.recursive,
                            max_depth: w.max_depth,
                            origins: w.origins.clone(),
                            seen: 0,
                            stale: false,
                        },
                    );
                    if lost {
                        self.queue_retry.push(*cid);
                    } else {
                        self.queue_new.push(*cid);
                    }
                }
            }
        }
        let release: Vec<CidKey> = self
            .managed
            .iter()
            .filter(|c| !wanted.contains_key(c))
            .copied()
            .collect();
        for cid in release {
            self.unexpected.remove(&cid);
            if !self.pinned.contains(&cid) {
                if !self.ops.get(&cid).is_some_and(in_flight) {
                    self.ops.remove(&cid);
                    self.managed.remove(&cid);
                }
                continue;
            }
            let busy = self
                .ops
                .get(&cid)
                .is_some_and(|op| op.kind == OpKind::Unpin || in_flight(op));
            if !busy {
                self.ops.insert(
                    cid,
                    Op {
                        kind: OpKind::Unpin,
                        phase: Phase::Queued,
                        attempts: 0,
                        since_ms: NOW,
                        priority: true,
                        recursive: true,
                        max_depth: None,
                        origins: Vec::new(),
                        seen: 0,
                        stale: false,
                    },
                );
                self.queue_new.push(cid);
            }
        }
        self.ops.retain(|cid, op| {
            op.kind == OpKind::Unpin || in_flight(op) || wanted.contains_key(cid)
        });
    }

    /// The replaced `TrackerView::status_of`, for one pin.
    fn status(&self, q: &StatusQuery) -> LocalStatus {
        let base = |status| LocalStatus {
            status,
            error: String::new(),
            attempt_count: 0,
            timestamp_ms: SYNCED,
            priority_pin: false,
        };
        if let Some(op) = self.ops.get(&q.cid) {
            let (status, error) = match (&op.phase, op.kind) {
                (Phase::Queued, OpKind::Pin) => (TrackerStatus::PinQueued, String::new()),
                (Phase::InFlight, OpKind::Pin) => (TrackerStatus::Pinning, String::new()),
                (Phase::Failed { error, .. }, OpKind::Pin) => {
                    (TrackerStatus::PinError, error.clone())
                }
                (Phase::Queued, OpKind::Unpin) => (TrackerStatus::UnpinQueued, String::new()),
                (Phase::InFlight, OpKind::Unpin) => (TrackerStatus::Unpinning, String::new()),
                (Phase::Failed { error, .. }, OpKind::Unpin) => {
                    (TrackerStatus::UnpinError, error.clone())
                }
            };
            let status = if op.kind == OpKind::Pin
                && self.unexpected.contains(&q.cid)
                && status == TrackerStatus::PinQueued
            {
                TrackerStatus::UnexpectedlyUnpinned
            } else {
                status
            };
            return LocalStatus {
                status,
                error,
                attempt_count: op.attempts,
                timestamp_ms: op.since_ms,
                priority_pin: op.priority,
            };
        }
        if !q.here || q.expired {
            return if self.pinned.contains(&q.cid) && !q.expired {
                base(TrackerStatus::Remote)
            } else if q.expired {
                base(TrackerStatus::Unpinned)
            } else {
                base(TrackerStatus::Remote)
            };
        }
        if self.pinned.contains(&q.cid) {
            match &self.backend_error {
                Some(e) => LocalStatus {
                    error: e.clone(),
                    ..base(TrackerStatus::ClusterError)
                },
                None => base(TrackerStatus::Pinned),
            }
        } else if self.unexpected.contains(&q.cid) {
            base(TrackerStatus::UnexpectedlyUnpinned)
        } else if let Some(e) = &self.backend_error {
            LocalStatus {
                error: e.clone(),
                ..base(TrackerStatus::PinError)
            }
        } else {
            base(TrackerStatus::PinQueued)
        }
    }
}

/// The new books for a case, and its managed set.
fn new_books(c: &Case) -> (Book, HashSet<CidKey>) {
    let mut book = Book::default();
    for i in 0..N {
        if let Some(op) = &c.ops[i] {
            book.ops.insert(seq_cid(i as u64), op.clone());
        }
    }
    book.unexpected = Case::set(&c.unexpected);
    (book, Case::set(&c.managed))
}

fn manage(managed: &mut HashSet<CidKey>, cid: CidKey, m: Managing) {
    match m {
        Managing::Keep => {}
        Managing::Adopt => {
            managed.insert(cid);
        }
        Managing::Forget => {
            managed.remove(&cid);
        }
    }
}

fn key(cid: &CidKey) -> Vec<u8> {
    cid.cid().to_bytes()
}

/// The full comparison as the actor runs it: merge walk, then the books.
fn full(c: &Case) -> (Book, HashSet<CidKey>) {
    let (mut book, mut managed) = new_books(c);
    let held = c.listed.then(|| {
        let mut s = SortedCids::default();
        for cid in Case::set(&c.held) {
            s.push(&cid);
        }
        s.finish();
        s
    });
    let mut managed_keys: Vec<Vec<u8>> = managed.iter().map(key).collect();
    managed_keys.sort();
    // The state store iterates in CID-bytes order.
    let wanted: BTreeMap<Vec<u8>, (CidKey, Wanted)> = (0..N)
        .filter_map(|i| {
            let cid = seq_cid(i as u64);
            c.wanted(i).map(|w| (key(&cid), (cid, w.clone())))
        })
        .collect();
    let mut findings = Vec::new();
    let mut merge = Merge::new(
        held.as_ref().map(SortedCids::iter),
        managed_keys.into_iter(),
    );
    for (k, (cid, w)) in &wanted {
        merge.wanted(k, *cid, w.clone(), &mut |f| findings.push(f));
    }
    merge.finish(&mut |f| findings.push(f));
    let seen = 1;
    for f in findings {
        let m = book.compare(
            f.cid,
            f.wanted.as_ref(),
            Some(f.held),
            f.managed,
            c.listed,
            c.repair,
            seen,
            NOW,
        );
        manage(&mut managed, f.cid, m);
    }
    book.drop_unwanted(seen, &HashSet::new());
    (book, managed)
}

/// Operations without the new books' own markers.
fn plain(ops: &HashMap<CidKey, Op>) -> BTreeMap<String, Op> {
    ops.iter()
        .map(|(c, op)| {
            let mut op = op.clone();
            op.seen = 0;
            op.stale = false;
            (c.to_string(), op)
        })
        .collect()
}

fn sorted(v: impl IntoIterator<Item = CidKey>) -> Vec<String> {
    let mut v: Vec<String> = v.into_iter().map(|c| c.to_string()).collect();
    v.sort();
    v
}

fn assert_same(old: &Old, book: &Book, managed: &HashSet<CidKey>) -> Result<(), TestCaseError> {
    prop_assert_eq!(plain(&old.ops), plain(&book.ops));
    prop_assert_eq!(sorted(old.managed.clone()), sorted(managed.clone()));
    prop_assert_eq!(
        sorted(old.unexpected.clone()),
        sorted(book.unexpected.clone())
    );
    prop_assert_eq!(
        sorted(old.queue_new.clone()),
        sorted(book.queue_new.iter().copied())
    );
    prop_assert_eq!(
        sorted(old.queue_retry.clone()),
        sorted(book.queue_retry.iter().copied())
    );
    Ok(())
}

fn old_wanted(c: &Case) -> HashMap<CidKey, Wanted> {
    (0..N)
        .filter_map(|i| c.wanted(i).map(|w| (seq_cid(i as u64), w.clone())))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn the_merge_walk_leaves_what_the_whole_state_sync_left(c in case()) {
        let mut old = Old::of(&c);
        old.sync(&old_wanted(&c), c.listed.then(|| Case::set(&c.held)), c.repair);
        let (book, managed) = full(&c);
        assert_same(&old, &book, &managed)?;
    }

    /// Between full comparisons the node is assumed to hold what this peer
    /// manages and has not seen go missing; where it does (and holds no
    /// other pin the state wants), comparing each changed pin alone
    /// decides what the whole-state sync decided.
    #[test]
    fn comparing_changed_pins_alone_leaves_what_the_whole_state_sync_left(
        mut c in case(),
        foreign in prop::collection::vec(any::<bool>(), N),
    ) {
        c.listed = true;
        c.held = (0..N)
            .map(|i| {
                (c.managed[i] && !c.unexpected[i])
                    || (foreign[i] && !c.managed[i] && c.wanted(i).is_none())
            })
            .collect();
        let mut old = Old::of(&c);
        old.sync(&old_wanted(&c), Some(Case::set(&c.held)), c.repair);
        let (mut book, mut managed) = new_books(&c);
        for i in 0..N {
            let cid = seq_cid(i as u64);
            let m = managed.contains(&cid);
            let r = book.compare(cid, c.wanted(i), None, m, true, c.repair, 1, NOW);
            manage(&mut managed, cid, r);
        }
        assert_same(&old, &book, &managed)?;
    }

    /// A page of statuses after a full comparison reads as the old view
    /// (which copied the op map and the node's pin set) read it.
    #[test]
    fn a_status_page_reads_as_the_copied_view_did(c in case()) {
        let mut old = Old::of(&c);
        old.sync(&old_wanted(&c), c.listed.then(|| Case::set(&c.held)), c.repair);
        let (book, managed) = full(&c);
        let backend_error = (!c.listed).then_some("ipfs is down");
        let page: Vec<StatusQuery> = (0..N).map(|i| c.query(i)).collect();
        let new: Vec<LocalStatus> = page
            .iter()
            .map(|q| book.status(q, managed.contains(&q.cid), backend_error, SYNCED))
            .collect();
        let before: Vec<LocalStatus> = page.iter().map(|q| old.status(q)).collect();
        prop_assert_eq!(before, new);
    }
}

#[test]
fn failed_operations_retry_with_backoff_and_recover_makes_them_due() {
    let mut book = Book::default();
    let cid = seq_cid(1);
    let w = Wanted {
        recursive: true,
        max_depth: None,
        origins: Vec::new(),
    };
    book.compare(cid, Some(&w), Some(false), false, true, true, 1, NOW);
    let (started, _) = book.next_to_start(NOW).unwrap();
    assert_eq!(started, cid);
    let retry = (Duration::from_millis(100), Duration::from_millis(250));
    book.finished(cid, OpKind::Pin, Some("no".into()), retry, NOW);
    book.requeue_due(NOW + 99);
    assert!(book.next_to_start(NOW + 99).is_none(), "not due yet");
    book.requeue_due(NOW + 100);
    assert!(book.next_to_start(NOW + 100).is_some());
    book.finished(cid, OpKind::Pin, Some("no".into()), retry, NOW + 100);
    assert_eq!(book.ops[&cid].attempts, 2);
    book.requeue_due(NOW + 299);
    assert!(
        book.queue_retry.is_empty(),
        "second delay doubles to 200 ms"
    );
    assert_eq!(book.recover(Some(cid), NOW + 150), [cid]);
    assert_eq!(book.next_to_start(NOW + 150).map(|(c, _)| c), Some(cid));
    book.finished(cid, OpKind::Pin, None, retry, NOW + 160);
    assert!(book.ops.is_empty());
    assert!(book.recover(None, NOW + 170).is_empty());
}

fn role(kind: crate::manifest::ShardKind, max_depth: i32) -> PinOptions {
    PinOptions {
        shard_role: Some(crate::manifest::ShardRole {
            kind,
            reference: None,
            meta: "bafymeta".into(),
            shard_size: 1,
            max_depth,
        }),
        ..PinOptions::default()
    }
}

#[test]
fn a_shard_pins_to_its_depth_a_cluster_dag_direct_and_a_meta_pin_nowhere() {
    use crate::manifest::ShardKind;
    assert_eq!(node_pin(&role(ShardKind::Shard, 2)), Some((true, Some(2))));
    assert_eq!(node_pin(&role(ShardKind::Shard, 0)), Some((true, Some(1))));
    assert_eq!(
        node_pin(&role(ShardKind::ClusterDag, 0)),
        Some((false, None))
    );
    assert_eq!(node_pin(&role(ShardKind::Meta, 0)), None);
    assert_eq!(node_pin(&PinOptions::default()), Some((true, None)));
    let direct = PinOptions {
        mode: PinMode::Direct,
        ..PinOptions::default()
    };
    assert_eq!(node_pin(&direct), Some((false, None)));
}
