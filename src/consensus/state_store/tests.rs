//! Tests of the on-disk state machine: what a snapshot carries.

use super::*;
use crate::manifest::PinSetId;
use crate::manifest::model::Condition;
use crate::state::{Command, Op, Request};

#[test]
fn snapshots_carry_controller_conditions() {
    let dir = tempfile::tempdir().unwrap();
    let a = StateStore::open(&dir.path().join("a.redb"), &dir.path().join("snap-a")).unwrap();
    let owner = Owner::pinset(PinSetId::new("ns", "never"));
    let condition = Condition {
        type_: "Stalled".into(),
        status: "True".into(),
        reason: "ManifestInvalid".into(),
        message: "c.yaml:1:2: bad".into(),
        last_transition_time: "2026-01-01T00:00:00Z".into(),
        observed_generation: None,
    };
    let txn = a.db.begin_write().unwrap();
    {
        let mut store = TxnStore::open(&txn, &a.dict).unwrap();
        let req = Request {
            now_ms: 9,
            command: Command::SetConditions {
                owner: owner.clone(),
                source: "dir:/m".into(),
                revision: None,
                conditions: vec![condition.clone()],
            },
        };
        apply(&mut store, &req).unwrap();
        store.finish().unwrap();
    }
    txn.commit().unwrap();
    let stored = a.conditions(&owner).unwrap().unwrap();
    assert_eq!(stored.conditions, vec![condition]);

    let (meta, path) = a.write_snapshot_file().unwrap();
    let b = StateStore::open(&dir.path().join("b.redb"), &dir.path().join("snap-b")).unwrap();
    b.install_from(&meta, &path).unwrap();
    assert_eq!(b.conditions(&owner).unwrap(), Some(stored));
}

/// Applies `req` to `store` in a transaction of its own.
fn apply_one(store: &StateStore, req: &Request) -> Outcome {
    let txn = store.db.begin_write().unwrap();
    let out = {
        let mut tables = TxnStore::open(&txn, &store.dict).unwrap();
        let out = apply(&mut tables, req).unwrap();
        tables.finish().unwrap();
        out
    };
    txn.commit().unwrap();
    out
}

fn commit(owner: &Owner, attempt: u64, base: u64, cid: u64) -> Request {
    let spec = crate::manifest::PinSpec {
        name: String::new(),
        options: std::sync::Arc::new(crate::manifest::PinOptions::default()),
    };
    Request {
        now_ms: 1,
        command: Command::Commit {
            owner: owner.clone(),
            revision: attempt,
            base: Some(base),
            staged: 0,
            ops: vec![Op::Set {
                cid: crate::testkit::seq_cid(cid),
                written_as: None,
                spec,
            }],
            record: None,
        },
    }
}

#[test]
fn generations_survive_a_snapshot_and_a_deleted_pinset() {
    let dir = tempfile::tempdir().unwrap();
    let a = StateStore::open(&dir.path().join("a.redb"), &dir.path().join("snap-a")).unwrap();
    let owner = Owner::pinset(PinSetId::new("ns", "gone"));
    // Two commits, the last one forgetting the PinSet (record: None).
    assert_eq!(apply_one(&a, &commit(&owner, 11, 0, 1)).created, 1);
    let second = apply_one(&a, &commit(&owner, 12, 1, 2));
    assert_eq!((second.created, second.refused.as_deref()), (1, None));
    assert_eq!(a.pinset(&owner).unwrap(), None);
    assert_eq!(a.generation(&owner).unwrap(), 2);

    let (meta, path) = a.write_snapshot_file().unwrap();
    let b = StateStore::open(&dir.path().join("b.redb"), &dir.path().join("snap-b")).unwrap();
    b.install_from(&meta, &path).unwrap();
    assert_eq!(b.generation(&owner).unwrap(), 2);
    // A plan made before the delete is refused on the installed copy…
    let stale = apply_one(&b, &commit(&owner, 13, 1, 3));
    assert!(stale.refused.unwrap().contains("generation 1, now 2"));
    assert!(b.get(&crate::testkit::seq_cid(3)).unwrap().is_none());
    // …and a retry of the last commit answers what it did.
    assert_eq!(apply_one(&b, &commit(&owner, 12, 1, 2)), second);
    assert_eq!(b.pin_count().unwrap(), 2);
}

fn options(min: i32) -> std::sync::Arc<crate::manifest::PinOptions> {
    std::sync::Arc::new(crate::manifest::PinOptions {
        replication: crate::manifest::ReplicationFactors { min, max: min + 1 },
        ..crate::manifest::PinOptions::default()
    })
}

fn set(owner: &Owner, cid: u64, o: &std::sync::Arc<crate::manifest::PinOptions>) -> Request {
    Request {
        now_ms: 1_000 + cid as i64,
        command: Command::Apply {
            owner: owner.clone(),
            ops: vec![Op::Set {
                cid: crate::testkit::seq_cid(cid),
                written_as: cid.is_multiple_of(2).then(|| format!("w{cid}").into()),
                spec: crate::manifest::PinSpec {
                    name: format!("p{cid}"),
                    options: std::sync::Arc::clone(o),
                },
            }],
        },
    }
}

fn release(owner: &Owner, cid: u64) -> Request {
    Request {
        now_ms: 5,
        command: Command::Apply {
            owner: owner.clone(),
            ops: vec![Op::Release {
                cid: crate::testkit::seq_cid(cid),
            }],
        },
    }
}

fn option_sets(store: &StateStore) -> usize {
    let txn = store.db.begin_read().unwrap();
    let dict = txn.open_table(DICT).unwrap();
    dict.iter()
        .unwrap()
        .filter(|i| {
            let (k, _) = i.as_ref().unwrap();
            let (kind, id) = k.value();
            kind == records::OPTIONS && id != txn::NEXT_ID
        })
        .count()
}

/// Option sets are stored once, shared by every pin that uses them, and
/// dropped when the last pin that used one is gone or changed: the
/// dictionary follows the state, it does not leak.
#[test]
fn option_sets_are_shared_and_dropped_with_their_last_pin() {
    let dir = tempfile::tempdir().unwrap();
    let s = StateStore::open(&dir.path().join("s.redb"), &dir.path().join("snap")).unwrap();
    let (a, b) = (
        Owner::pinset(PinSetId::new("ns", "a")),
        Owner::pinset(PinSetId::new("ns", "b")),
    );
    let (two, three) = (options(2), options(3));
    for i in 0..10 {
        apply_one(&s, &set(&a, i, &two));
    }
    apply_one(&s, &set(&b, 3, &three));
    assert_eq!(option_sets(&s), 2);
    let pin = s.get(&crate::testkit::seq_cid(3)).unwrap().unwrap();
    assert_eq!(pin.owners.len(), 2);
    assert_eq!(pin.owners[&b].options.replication.min, 3);
    assert_eq!(pin.owners[&a].name, "p3");
    assert_eq!(s.owned_by(&a).unwrap().len(), 10);
    assert_eq!(s.owned_by(&b).unwrap().len(), 1);

    // b leaves: its option set goes with its only pin.
    apply_one(&s, &release(&b, 3));
    assert_eq!(option_sets(&s), 1);
    assert_eq!(s.owned_by(&b).unwrap().len(), 0);
    // a moves every pin to another set: the old one is dropped.
    let five = options(5);
    for i in 0..10 {
        apply_one(&s, &set(&a, i, &five));
    }
    assert_eq!(option_sets(&s), 1);
    for i in 0..10 {
        apply_one(&s, &release(&a, i));
    }
    assert_eq!(option_sets(&s), 0);
    assert_eq!(s.pin_count().unwrap(), 0);
    assert!(s.owned_by(&a).unwrap().is_empty());
}

/// A snapshot carries records and their dictionaries: the installed copy
/// answers every read as the original does; a file cut short is refused
/// and leaves the state as it was.
#[test]
fn a_snapshot_installs_pins_with_their_dictionaries_and_a_cut_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = StateStore::open(&dir.path().join("a.redb"), &dir.path().join("snap-a")).unwrap();
    let owner = Owner::pinset(PinSetId::new("ns", "snap"));
    let other = Owner::Api;
    for i in 0..50 {
        apply_one(&a, &set(&owner, i, &options((i % 3) as i32)));
    }
    apply_one(&a, &set(&other, 7, &options(9)));
    apply_one(
        &a,
        &Request {
            now_ms: 9,
            command: Command::Allocate {
                allocations: vec![(
                    crate::testkit::seq_cid(4),
                    vec!["peer-a".into(), "peer-b".into()],
                )],
            },
        },
    );
    let all = |s: &StateStore| {
        let mut v = Vec::new();
        s.for_each_pin(|p| {
            v.push(p);
            true
        })
        .unwrap();
        v
    };
    let (meta, path) = a.write_snapshot_file().unwrap();
    let b = StateStore::open(&dir.path().join("b.redb"), &dir.path().join("snap-b")).unwrap();
    apply_one(&b, &set(&Owner::Api, 999, &options(1)));
    let before = all(&b);

    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.snap");
    std::fs::write(&cut, &bytes[..bytes.len() - 20]).unwrap();
    assert!(b.install_from(&meta, &cut).is_err());
    assert_eq!(all(&b), before, "a refused snapshot changes nothing");

    b.install_from(&meta, &path).unwrap();
    assert_eq!(all(&b), all(&a));
    assert_eq!(b.owned_by(&owner).unwrap(), a.owned_by(&owner).unwrap());
    assert_eq!(b.owned_by(&other).unwrap().len(), 1);
    assert_eq!(
        b.get(&crate::testkit::seq_cid(4))
            .unwrap()
            .unwrap()
            .allocations,
        ["peer-a", "peer-b"]
    );
    // The installed store keeps working: a change after the snapshot.
    apply_one(&b, &release(&owner, 0));
    assert_eq!(b.owned_by(&owner).unwrap().len(), 49);
}

/// A state database of the first (JSON) format is migrated when opened:
/// the same pins come back, owner lookups work, and it is written in the
/// current format from then on; a database of a newer format is refused.
#[test]
fn a_json_state_is_migrated_when_opened_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.redb");
    let owner = Owner::pinset(PinSetId::new("ns", "old"));
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut pins = txn.open_table(PINS).unwrap();
            let mut index = txn.open_table(LEGACY_OWNERS).unwrap();
            for i in 0..25u64 {
                let cid = crate::testkit::seq_cid(i);
                let json = serde_json::json!({
                    "w": format!("Qm{i}"),
                    "o": {"pinset:ns/old": {"name": format!("p{i}"), "options": {"mode": "recursive", "replication": {"min": 2, "max": 3}}}},
                    "a": ["peer-x"],
                    "t": 77,
                });
                let key = cid.cid().to_bytes();
                pins.insert(key.as_slice(), json.to_string().as_bytes())
                    .unwrap();
                index.insert(("pinset:ns/old", key.as_slice()), ()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let s = StateStore::open(&path, &dir.path().join("snap")).unwrap();
    let owned = s.owned_by(&owner).unwrap();
    assert_eq!(owned.len(), 25);
    assert_eq!(owned[&crate::testkit::seq_cid(3)].name, "p3");
    let pin = s.get(&crate::testkit::seq_cid(3)).unwrap().unwrap();
    assert_eq!(pin.written_as.as_deref(), Some("Qm3"));
    assert_eq!(pin.allocations, ["peer-x"]);
    assert_eq!(pin.timestamp_ms, 77);
    assert_eq!(pin.owners[&owner].options.replication.min, 2);
    {
        let txn = s.db.begin_read().unwrap();
        let pins = txn.open_table(PINS).unwrap();
        for item in pins.iter().unwrap() {
            let (_, v) = item.unwrap();
            assert_eq!(v.value()[0], records::RECORD_V2, "rewritten");
        }
    }
    drop(s);
    // Opening again changes nothing; a newer format is refused.
    let s = StateStore::open(&path, &dir.path().join("snap")).unwrap();
    assert_eq!(s.owned_by(&owner).unwrap().len(), 25);
    {
        let txn = s.db.begin_write().unwrap();
        txn.open_table(SM_META)
            .unwrap()
            .insert(FORMAT, b"99".as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    drop(s);
    match StateStore::open(&path, &dir.path().join("snap")) {
        Err(OpenError::Newer { found: 99 }) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A store with pins 0..`n`: every `every`-th owned by PinSet `ns/every`
/// (returned first), the others by `ns/rest`.
fn split_store(n: u64, every: u64) -> (tempfile::TempDir, StateStore, Owner, Owner) {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(&dir.path().join("s.redb"), &dir.path().join("snap")).unwrap();
    let (nth, rest) = (
        Owner::pinset(PinSetId::new("ns", "every")),
        Owner::pinset(PinSetId::new("ns", "rest")),
    );
    let o = options(1);
    for cid in 0..n {
        apply_one(
            &store,
            &set(if cid % every == 0 { &nth } else { &rest }, cid, &o),
        );
    }
    (dir, store, nth, rest)
}

/// A PinSet's pins page by page: every pin once, in CID-bytes order,
/// only the owner's, and a released pin is gone from the pages.
#[test]
fn an_owners_pins_page_in_cid_order_without_the_others() {
    let (_dir, store, _, a) = split_store(25, 5);
    apply_one(&store, &release(&a, 7));
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.owned_pins_after(&a, after.as_ref(), 4).unwrap();
        assert!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        after = Some(last.cid);
        seen.extend(page.iter().map(|p| p.cid));
        assert!(page.iter().all(|p| p.owners.contains_key(&a)));
    }
    let mut want: Vec<_> = (0..25)
        .filter(|c| c % 5 != 0 && *c != 7)
        .map(crate::testkit::seq_cid)
        .collect();
    want.sort_by_key(|c| c.cid().to_bytes());
    assert_eq!(seen, want);
    let unknown = Owner::pinset(PinSetId::new("ns", "none"));
    assert!(
        store
            .owned_pins_after(&unknown, None, 4)
            .unwrap()
            .is_empty()
    );
}

/// The whole state page by page: every pin once, in CID-bytes order.
#[test]
fn the_state_pages_in_cid_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(&dir.path().join("s.redb"), &dir.path().join("snap")).unwrap();
    let owner = Owner::pinset(PinSetId::new("ns", "a"));
    let o = options(1);
    for cid in 0..23 {
        apply_one(&store, &set(&owner, cid, &o));
    }
    let (mut seen, mut after) = (Vec::new(), None);
    loop {
        let page = store.pins_after(after.as_ref(), 5).unwrap();
        assert!(page.len() <= 5);
        let Some(last) = page.last() else { break };
        after = Some(last.cid);
        seen.extend(page.iter().map(|p| p.cid));
    }
    let mut want: Vec<_> = (0..23).map(crate::testkit::seq_cid).collect();
    want.sort_by_key(|c| c.cid().to_bytes());
    assert_eq!(seen, want);
}

/// Several pins from one read: each as `get` reads it alone, absent
/// ones as `None`, in the order asked (a repeat too).
#[test]
fn many_pins_read_at_once_are_the_pins_read_one_by_one() {
    let (_dir, store, nth, _) = split_store(12, 3);
    apply_one(&store, &release(&nth, 3));
    let ask: Vec<_> = [5, 3, 40, 0, 5]
        .into_iter()
        .map(crate::testkit::seq_cid)
        .collect();
    let many = store.get_many(&ask).unwrap();
    let one: Vec<_> = ask.iter().map(|c| store.get(c).unwrap()).collect();
    assert_eq!(many, one);
    assert!(
        many[1].is_none() && many[2].is_none(),
        "released and unknown"
    );
    assert_eq!(many[0].as_ref().unwrap().cid, ask[0]);
    assert!(many[3].as_ref().unwrap().owners.contains_key(&nth));
}

/// A status range reads no more than it is asked for: one owner's page
/// whose CIDs interleave with the rest of the state stops at `limit`
/// (a peer answering it must not load the whole state), and a range
/// that is exactly the page comes back whole, in order.
#[test]
fn a_pin_range_reads_at_most_its_limit() {
    let (_dir, store, a, _) = split_store(40, 4);
    let page = store.owned_pins_after(&a, None, 100).unwrap();
    assert_eq!(page.len(), 10);
    let (first, last) = (page[0].cid, page[9].cid);
    let between = store.pins_in_range(&first, &last, usize::MAX).unwrap();
    assert!(between.len() > 11, "the page spans other owners' pins");
    let bounded = store.pins_in_range(&first, &last, 11).unwrap();
    assert_eq!(bounded.len(), 11);
    assert_eq!(
        bounded.iter().map(|p| p.cid).collect::<Vec<_>>(),
        between[..11].iter().map(|p| p.cid).collect::<Vec<_>>()
    );
    let all = store.pins_after(None, 100).unwrap();
    let exact = store.pins_in_range(&all[3].cid, &all[8].cid, 7).unwrap();
    assert_eq!(
        exact.iter().map(|p| p.cid).collect::<Vec<_>>(),
        all[3..=8].iter().map(|p| p.cid).collect::<Vec<_>>()
    );
}

/// Receive files do not pile up: a stream the leader abandoned is removed
/// when the next one is installed, and one left by a stopped peer when
/// the store opens again.
#[tokio::test]
async fn abandoned_snapshot_receive_files_are_removed() {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    let dir = tempfile::tempdir().unwrap();
    let mut a = StateStore::open(&dir.path().join("a.redb"), &dir.path().join("snap-a")).unwrap();
    let owner = Owner::pinset(PinSetId::new("ns", "a"));
    apply_one(&a, &set(&owner, 1, &options(1)));
    let built = a.build_snapshot().await.unwrap();
    let b_dir = dir.path().join("snap-b");
    let mut b = StateStore::open(&dir.path().join("b.redb"), &b_dir).unwrap();
    let recv_files = || {
        std::fs::read_dir(&b_dir)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with("recv-")
            })
            .count()
    };
    let _abandoned = b.begin_receiving_snapshot().await.unwrap();
    let mut into = b.begin_receiving_snapshot().await.unwrap();
    assert_eq!(recv_files(), 2);
    let mut from = built.snapshot;
    tokio::io::copy(&mut from, &mut *into).await.unwrap();
    b.install_snapshot(&built.meta, into).await.unwrap();
    assert_eq!(recv_files(), 0);
    assert!(b.get(&crate::testkit::seq_cid(1)).unwrap().is_some());

    let _left = b.begin_receiving_snapshot().await.unwrap();
    assert_eq!(recv_files(), 1);
    drop(b);
    StateStore::open(&dir.path().join("b.redb"), &b_dir).unwrap();
    assert_eq!(recv_files(), 0);
}

fn pinsvc_add(id: &str, token: &str, cid: u64, now_ms: i64) -> Request {
    use crate::state::pinsvc::{PinSvcChange, PinSvcRequest};
    let cid = crate::testkit::seq_cid(cid);
    Request {
        now_ms,
        command: Command::PinSvc(PinSvcChange::Add {
            request: PinSvcRequest {
                requestid: id.into(),
                token: token.into(),
                created_ns: 0,
                cid,
                cid_as_sent: cid.to_string(),
                name: None,
                origins: Vec::new(),
                meta: Default::default(),
            },
        }),
    }
}

/// Pinning Service requests page newest first from the `(token, created)`
/// index with strict bounds, filter by CID through their own index, are
/// counted per token, and travel in snapshots with their indexes rebuilt.
#[test]
fn pinsvc_requests_page_from_their_index_and_survive_a_snapshot() {
    use crate::consensus::CreatedRange;
    let dir = tempfile::tempdir().unwrap();
    let a = StateStore::open(&dir.path().join("a.redb"), &dir.path().join("snap-a")).unwrap();
    // Five in one millisecond for "t", one for "u".
    for i in 0..5 {
        apply_one(&a, &pinsvc_add(&format!("r{i}"), "t", i % 2, 7));
    }
    apply_one(&a, &pinsvc_add("other", "u", 0, 7));
    let page = |s: &StateStore, cids: &[CidKey], range: CreatedRange, max: usize| {
        s.pinsvc_page("t", cids, range, max)
            .unwrap()
            .into_iter()
            .map(|r| (r.requestid, r.created_ns))
            .collect::<Vec<_>>()
    };
    let all = page(&a, &[], CreatedRange::default(), 10);
    let ids: Vec<&str> = all.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["r4", "r3", "r2", "r1", "r0"]);
    assert!(all.windows(2).all(|w| w[0].1 > w[1].1), "{all:?}");
    let middle = CreatedRange {
        after: Some(all[4].1),
        before: Some(all[0].1),
    };
    let ids: Vec<String> = page(&a, &[], middle, 10).into_iter().map(|p| p.0).collect();
    assert_eq!(ids, ["r3", "r2", "r1"]);
    assert_eq!(a.pinsvc_count("t", middle).unwrap(), 3);
    assert_eq!(a.pinsvc_count("u", CreatedRange::default()).unwrap(), 1);
    let odd = [crate::testkit::seq_cid(1)];
    let ids: Vec<String> = page(&a, &odd, CreatedRange::default(), 10)
        .into_iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(ids, ["r3", "r1"]);
    let ids: Vec<String> = page(&a, &odd, middle, 1).into_iter().map(|p| p.0).collect();
    assert_eq!(ids, ["r3"]);

    let (meta, path) = a.write_snapshot_file().unwrap();
    let b = StateStore::open(&dir.path().join("b.redb"), &dir.path().join("snap-b")).unwrap();
    b.install_from(&meta, &path).unwrap();
    assert_eq!(page(&b, &[], CreatedRange::default(), 10), all);
    assert_eq!(page(&b, &odd, CreatedRange::default(), 10).len(), 2);
    assert!(b.pinsvc_request("other").unwrap().is_some());
    // Created times stay unique after the install: one past the latest
    // (token u's, at 7 ms + 5), even from a clock behind it.
    let latest = b.pinsvc_request("other").unwrap().unwrap().created_ns;
    assert_eq!(latest, 7_000_005);
    apply_one(&b, &pinsvc_add("r5", "t", 9, 1));
    assert_eq!(
        b.pinsvc_request("r5").unwrap().unwrap().created_ns,
        latest + 1
    );
}

#[test]
fn the_shard_index_follows_puts_and_releases_and_is_rebuilt_by_a_snapshot() {
    use crate::manifest::{PinOptions, PinSpec, ShardKind, ShardRole};
    use crate::testkit::seq_cid;
    let dir = tempfile::tempdir().unwrap();
    let a = StateStore::open(&dir.path().join("a.redb"), &dir.path().join("snap-a")).unwrap();
    let part = |kind: ShardKind| PinSpec {
        name: String::new(),
        options: std::sync::Arc::new(PinOptions {
            shard_role: Some(ShardRole {
                kind,
                reference: None,
                meta: seq_cid(1).to_string(),
                shard_size: 1,
                max_depth: 1,
            }),
            ..PinOptions::default()
        }),
    };
    let set = |i: u64, kind: ShardKind| Op::Set {
        cid: seq_cid(i),
        written_as: None,
        spec: part(kind),
    };
    let req = |command| Request { now_ms: 1, command };
    apply_one(
        &a,
        &req(Command::Apply {
            owner: Owner::Api,
            ops: vec![
                set(1, ShardKind::Meta),
                set(2, ShardKind::ClusterDag),
                set(3, ShardKind::Shard),
                set(4, ShardKind::Shard),
            ],
        }),
    );
    let mut parts: Vec<CidKey> = (2..5).map(seq_cid).collect();
    parts.sort_by_key(|c| c.cid().to_bytes());
    assert_eq!(a.shard_members(&seq_cid(1)).unwrap(), parts);
    assert!(a.shard_members(&seq_cid(3)).unwrap().is_empty());

    let (meta, path) = a.write_snapshot_file().unwrap();
    let b = StateStore::open(&dir.path().join("b.redb"), &dir.path().join("snap-b")).unwrap();
    b.install_from(&meta, &path).unwrap();
    assert_eq!(b.shard_members(&seq_cid(1)).unwrap(), parts);

    let out = apply_one(
        &b,
        &req(Command::Unpin {
            cid: seq_cid(1),
            force: false,
        }),
    );
    assert_eq!((out.refused, out.removed), (None, 4));
    assert!(b.shard_members(&seq_cid(1)).unwrap().is_empty());
    assert_eq!(b.pin_count().unwrap(), 0);
}

mod pinsvc_filters {
    use super::*;
    use crate::consensus::{CreatedRange, NameMatch, PinSvcFilter};
    use crate::state::pinsvc::{PinSvcChange, PinSvcRequest};
    use proptest::prelude::*;

    fn add(
        store: &StateStore,
        id: &str,
        token: &str,
        cid: u64,
        name: Option<&str>,
        meta: &[(&str, &str)],
    ) {
        let cid = crate::testkit::seq_cid(cid);
        let request = PinSvcRequest {
            requestid: id.into(),
            token: token.into(),
            created_ns: 0,
            cid,
            cid_as_sent: cid.to_string(),
            name: name.map(str::to_string),
            origins: Vec::new(),
            meta: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        apply_one(
            store,
            &Request {
                now_ms: 5,
                command: Command::PinSvc(PinSvcChange::Add { request }),
            },
        );
    }

    fn walk(
        store: &StateStore,
        token: &str,
        filter: &PinSvcFilter,
        range: CreatedRange,
    ) -> Vec<String> {
        let mut created = Vec::new();
        store
            .pinsvc_walk(token, filter, range, |at| {
                created.push(at);
                true
            })
            .unwrap();
        let records = store.pinsvc_records(token, &created).unwrap();
        assert_eq!(records.len(), created.len(), "every hit has its record");
        records.into_iter().map(|r| r.requestid).collect()
    }

    /// What the spec's filters keep, decided on the records themselves.
    fn brute(
        all: &[PinSvcRequest],
        token: &str,
        filter: &PinSvcFilter,
        range: CreatedRange,
    ) -> Vec<String> {
        let (lo, hi) = range.inclusive().unwrap_or((1, 0));
        let mut kept: Vec<&PinSvcRequest> = all
            .iter()
            .filter(|r| r.token == token && (lo..=hi).contains(&r.created_ns))
            .filter(|r| filter.cids.is_empty() || filter.cids.contains(&r.cid))
            .filter(|r| match (&filter.name, &r.name) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some((want, mode)), Some(have)) => mode.hits(have, want, &want.to_lowercase()),
            })
            .filter(|r| filter.meta.iter().all(|(k, v)| r.meta.get(k) == Some(v)))
            .collect();
        kept.sort_by_key(|r| std::cmp::Reverse(r.created_ns));
        kept.into_iter().map(|r| r.requestid.clone()).collect()
    }

    fn text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![Just('a'), Just('A'), Just('b'), Just('-'), Just('é')],
            1..6,
        )
        .prop_map(|c| c.into_iter().collect())
    }

    fn mode() -> impl Strategy<Value = NameMatch> {
        prop_oneof![
            Just(NameMatch::Exact),
            Just(NameMatch::IExact),
            Just(NameMatch::Partial),
            Just(NameMatch::IPartial)
        ]
    }

    type Made = (bool, u64, Option<String>, Vec<(u8, u8)>, bool);

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Every combination of `cid`, `name` (four modes), `meta` and
        /// time filters lists, from the indexes, exactly the requests the
        /// filters keep, newest first; `count` of a time range too; and
        /// removed requests leave every index.
        #[test]
        fn index_walks_list_exactly_what_the_filters_keep(
            made in proptest::collection::vec(
                (any::<bool>(), 0u64..6, proptest::option::of(text()), proptest::collection::vec((0u8..3, 0u8..2), 0..3), any::<bool>()),
                1..30,
            ),
            cids in proptest::collection::vec(0u64..6, 0..3),
            name in proptest::option::of((text(), mode())),
            meta in proptest::collection::vec((0u8..3, 0u8..2), 0..3),
            bounds in (proptest::option::of(0usize..30), proptest::option::of(0usize..30)),
        ) {
            let made: Vec<Made> = made;
            let dir = tempfile::tempdir().unwrap();
            let s = StateStore::open(&dir.path().join("s.redb"), &dir.path().join("snap")).unwrap();
            let keys = ["k0", "k1", "k2"];
            let values = ["x", "y"];
            for (i, (token, cid, name, pairs, _)) in made.iter().enumerate() {
                let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (keys[*k as usize], values[*v as usize])).collect();
                add(&s, &format!("r{i}"), if *token { "t" } else { "u" }, *cid, name.as_deref(), &pairs);
            }
            for (i, (token, .., removed)) in made.iter().enumerate() {
                if *removed {
                    apply_one(&s, &Request {
                        now_ms: 6,
                        command: Command::PinSvc(PinSvcChange::Remove {
                            token: if *token { "t" } else { "u" }.into(),
                            requestid: format!("r{i}"),
                        }),
                    });
                }
            }
            let all: Vec<PinSvcRequest> = (0..made.len())
                .filter_map(|i| s.pinsvc_request(&format!("r{i}")).unwrap())
                .collect();
            let at = |i: Option<usize>| i.and_then(|i| all.get(i)).map(|r| r.created_ns);
            let range = CreatedRange { after: at(bounds.0), before: at(bounds.1) };
            let filter = PinSvcFilter {
                cids: cids.iter().map(|c| crate::testkit::seq_cid(*c)).collect::<std::collections::BTreeSet<_>>().into_iter().collect(),
                name,
                meta: meta.iter().map(|(k, v)| (keys[*k as usize].to_string(), values[*v as usize].to_string())).collect(),
            };
            for token in ["t", "u"] {
                prop_assert_eq!(walk(&s, token, &filter, range), brute(&all, token, &filter, range));
                let every = PinSvcFilter::default();
                let n = brute(&all, token, &every, range).len() as u64;
                prop_assert_eq!(s.pinsvc_count(token, range).unwrap(), n);
            }
        }
    }

    /// A query longer than the suffix index keeps is checked against the
    /// whole name; case-sensitive modes are checked against the name as
    /// written.
    #[test]
    fn long_partial_queries_and_case_are_checked_against_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(&dir.path().join("s.redb"), &dir.path().join("snap")).unwrap();
        let base = "n".repeat(super::super::pinsvc::SUFFIX_CHARS);
        add(&s, "long-a", "t", 1, Some(&format!("x{base}-a")), &[]);
        add(&s, "long-b", "t", 2, Some(&format!("x{base}-b")), &[]);
        add(&s, "upper", "t", 3, Some("Mirror-1"), &[]);
        let by = |q: &str, mode| PinSvcFilter {
            name: Some((q.to_string(), mode)),
            ..PinSvcFilter::default()
        };
        let all = CreatedRange::default();
        assert_eq!(
            walk(&s, "t", &by(&format!("{base}-b"), NameMatch::Partial), all),
            ["long-b"]
        );
        assert_eq!(
            walk(&s, "t", &by(&base, NameMatch::Partial), all),
            ["long-b", "long-a"]
        );
        assert!(walk(&s, "t", &by("mirror", NameMatch::Partial), all).is_empty());
        assert_eq!(
            walk(&s, "t", &by("mirror", NameMatch::IPartial), all),
            ["upper"]
        );
        assert!(walk(&s, "t", &by("mirror-1", NameMatch::Exact), all).is_empty());
        assert_eq!(
            walk(&s, "t", &by("mirror-1", NameMatch::IExact), all),
            ["upper"]
        );
    }

    /// A store written before the filter indexes existed (records and the
    /// old `(token, created)` index only) has them built when it opens.
    #[test]
    fn a_store_without_the_filter_indexes_has_them_built_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let s = StateStore::open(&path, &dir.path().join("snap")).unwrap();
            add(&s, "a", "t", 1, Some("Alpha"), &[("k", "v")]);
            add(&s, "b", "t", 2, Some("beta"), &[]);
            let txn = s.db.begin_write().unwrap();
            super::super::pinsvc::forget_indexes(&txn).unwrap();
            txn.commit().unwrap();
            assert!(walk(&s, "t", &PinSvcFilter::default(), CreatedRange::default()).is_empty());
        }
        let s = StateStore::open(&path, &dir.path().join("snap")).unwrap();
        let all = CreatedRange::default();
        assert_eq!(walk(&s, "t", &PinSvcFilter::default(), all), ["b", "a"]);
        assert_eq!(s.pinsvc_count("t", all).unwrap(), 2);
        let meta = PinSvcFilter {
            meta: [("k".to_string(), "v".to_string())].into(),
            ..PinSvcFilter::default()
        };
        assert_eq!(walk(&s, "t", &meta, all), ["a"]);
        let name = PinSvcFilter {
            name: Some(("ALP".into(), NameMatch::IPartial)),
            ..PinSvcFilter::default()
        };
        assert_eq!(walk(&s, "t", &name, all), ["a"]);
    }
}
