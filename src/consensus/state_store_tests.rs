//! Tests of the on-disk state machine: what a snapshot carries.

use super::*;
use crate::manifest::PinSetId;
use crate::manifest::model::Condition;
use crate::state::{Command, Request};

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
        let mut store = TxnStore::open(&txn).unwrap();
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
        let mut tables = TxnStore::open(&txn).unwrap();
        apply(&mut tables, req).unwrap()
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
