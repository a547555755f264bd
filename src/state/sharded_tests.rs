//! The state machine's rules for sharded pins: releasing a meta pin
//! releases its cluster DAG and shards (for that owner), on every path;
//! a part cannot be unpinned alone while its meta pin is in the state.

use std::sync::Arc;

use super::*;
use crate::manifest::{PinSetId, ShardKind, ShardRole};
use crate::testkit::seq_cid;

/// seq 1 is the meta pin, 2 its cluster DAG, 3.. its shards; seq 9 a data pin.
fn part(kind: ShardKind) -> PinSpec {
    PinSpec {
        name: kind.as_str().into(),
        options: Arc::new(PinOptions {
            shard_role: Some(ShardRole {
                kind,
                reference: None,
                meta: seq_cid(1).to_string(),
                shard_size: 100,
                max_depth: i32::from(kind == ShardKind::Shard),
            }),
            ..PinOptions::default()
        }),
    }
}

fn set(i: u64, spec: PinSpec) -> Op {
    Op::Set {
        cid: seq_cid(i),
        written_as: None,
        spec,
    }
}

fn sharded_add(owner: &Owner) -> Request {
    let mut ops = vec![
        set(1, part(ShardKind::Meta)),
        set(2, part(ShardKind::ClusterDag)),
    ];
    ops.extend((3..6).map(|i| set(i, part(ShardKind::Shard))));
    ops.push(set(
        9,
        PinSpec {
            name: "data".into(),
            options: Arc::new(PinOptions::default()),
        },
    ));
    Request {
        now_ms: 1,
        command: Command::Apply {
            owner: owner.clone(),
            ops,
        },
    }
}

fn unpin(i: u64, force: bool) -> Request {
    Request {
        now_ms: 2,
        command: Command::Unpin {
            cid: seq_cid(i),
            force,
        },
    }
}

fn held(state: &PinState) -> Vec<u64> {
    (1..10)
        .filter(|i| state.get(&seq_cid(*i)).is_some())
        .collect()
}

#[test]
fn the_parts_of_a_sharded_pin_are_indexed_under_their_meta_pin() {
    let mut s = PinState::new();
    s.apply_request(&sharded_add(&Owner::Api));
    let members = s.shard_members(&seq_cid(1)).unwrap();
    let mut want: Vec<CidKey> = (2..6).map(seq_cid).collect();
    want.sort_by_key(|c| c.cid().to_bytes());
    assert_eq!(members, want);
    assert_eq!(s.get(&seq_cid(3)).unwrap().shard_metas(), vec![seq_cid(1)]);
    assert!(s.get(&seq_cid(1)).unwrap().shard_metas().is_empty());
}

#[test]
fn unpinning_the_meta_pin_releases_its_cluster_dag_and_every_shard_but_no_other_pin() {
    let mut s = PinState::new();
    s.apply_request(&sharded_add(&Owner::Api));
    let out = s.apply_request(&unpin(1, false));
    assert_eq!(out.refused, None);
    assert_eq!(out.removed, 5);
    assert_eq!(held(&s), vec![9]);
}

#[test]
fn unpinning_a_shard_or_the_cluster_dag_alone_is_refused_naming_the_meta_pin() {
    let mut s = PinState::new();
    s.apply_request(&sharded_add(&Owner::Api));
    for (i, kind) in [(2, "clusterdag-pin"), (4, "shard-pin")] {
        for force in [false, true] {
            let refused = s.apply_request(&unpin(i, force)).refused.unwrap();
            assert!(refused.contains(kind), "{refused}");
            assert!(refused.contains(&seq_cid(1).to_string()), "{refused}");
        }
    }
    assert_eq!(held(&s), vec![1, 2, 3, 4, 5, 9]);
}

fn plan_release(owner: &Owner, i: u64) -> Request {
    let plan = crate::plan::Plan {
        owner: owner.clone(),
        add: Vec::new(),
        update: Vec::new(),
        release: vec![seq_cid(i)],
        unchanged: 0,
    };
    Request {
        now_ms: 3,
        command: Command::Apply {
            owner: owner.clone(),
            ops: plan_ops(&plan),
        },
    }
}

#[test]
fn a_plan_dropping_a_co_owned_meta_pin_releases_only_its_own_hold_on_the_parts() {
    let site = Owner::pinset(PinSetId::new("ns", "site"));
    let mut s = PinState::new();
    s.apply_request(&sharded_add(&site));
    s.apply_request(&sharded_add(&Owner::Api));
    s.apply_request(&plan_release(&site, 1));
    assert_eq!(held(&s), vec![1, 2, 3, 4, 5, 9]);
    for i in 1..6 {
        let owners: Vec<Owner> = s.get(&seq_cid(i)).unwrap().owners.keys().cloned().collect();
        assert_eq!(owners, vec![Owner::Api], "{i}");
    }
}

#[test]
fn once_its_meta_pin_leaves_the_state_every_part_goes_whoever_wrote_it() {
    // A PinSet declares the sharded pin; the parts were written by `api`.
    let site = Owner::pinset(PinSetId::new("ns", "site"));
    let mut s = PinState::new();
    s.apply_request(&Request {
        now_ms: 1,
        command: Command::Apply {
            owner: site.clone(),
            ops: vec![set(1, part(ShardKind::Meta))],
        },
    });
    let Command::Apply { ops, .. } = sharded_add(&Owner::Api).command else {
        unreachable!()
    };
    s.apply_request(&Request {
        now_ms: 1,
        command: Command::Apply {
            owner: Owner::Api,
            ops: ops.into_iter().skip(1).collect(),
        },
    });
    assert_eq!(held(&s), vec![1, 2, 3, 4, 5, 9]);
    s.apply_request(&plan_release(&site, 1));
    assert_eq!(held(&s), vec![9]);
}

#[test]
fn a_forced_unpin_of_the_meta_pin_removes_every_part_from_every_owner() {
    let site = Owner::pinset(PinSetId::new("ns", "site"));
    let mut s = PinState::new();
    s.apply_request(&sharded_add(&site));
    s.apply_request(&sharded_add(&Owner::Api));
    assert!(s.apply_request(&unpin(1, false)).refused.is_some());
    let out = s.apply_request(&unpin(1, true));
    assert_eq!(out.removed, 5);
    assert_eq!(held(&s), vec![9]);
}
