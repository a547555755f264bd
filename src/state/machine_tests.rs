//! Tests of the state machine's rules (`machine.rs`): conditions,
//! generations, staged revisions and their commits.

use super::*;
use crate::manifest::PinSetId;
use crate::manifest::PinSpec;
use crate::manifest::model::Condition;
use crate::state::PinState;

fn stalled(reason: &str) -> Condition {
    Condition {
        type_: "Stalled".into(),
        status: "True".into(),
        reason: reason.into(),
        message: "c.yaml:6:9: unexpected end".into(),
        last_transition_time: "2026-01-01T00:00:00Z".into(),
        observed_generation: None,
    }
}

fn set(owner: &Owner, now_ms: i64, conditions: Vec<Condition>) -> Request {
    Request {
        now_ms,
        command: Command::SetConditions {
            owner: owner.clone(),
            source: "dir:/m".into(),
            revision: Some("r1".into()),
            conditions,
        },
    }
}

#[test]
fn conditions_are_stored_for_a_pinset_never_applied_and_replaced() {
    let owner = Owner::pinset(PinSetId::new("ns", "never"));
    let mut a = PinState::new();
    let mut b = PinState::new();
    for s in [&mut a, &mut b] {
        s.apply_request(&set(&owner, 5, vec![stalled("ManifestInvalid")]));
    }
    assert_eq!(a, b);
    assert_eq!(a.pinsets().count(), 0);
    let (o, r) = a.conditions().next().unwrap();
    assert_eq!(o, &owner);
    assert_eq!(r.reported_at_ms, 5);
    assert_eq!(r.revision.as_deref(), Some("r1"));
    assert_eq!(r.conditions[0].reason, "ManifestInvalid");

    a.apply_request(&set(&owner, 6, vec![stalled("PruneGuard")]));
    assert_eq!(a.conditions().count(), 1);
    assert_eq!(
        a.conditions().next().unwrap().1.conditions[0].reason,
        "PruneGuard"
    );

    // An empty report forgets.
    a.apply_request(&set(&owner, 7, Vec::new()));
    assert_eq!(a.conditions().count(), 0);
}

#[test]
fn deleting_a_pinset_forgets_its_conditions() {
    let owner = Owner::pinset(PinSetId::new("ns", "gone"));
    let mut s = PinState::new();
    s.apply_request(&set(&owner, 1, vec![stalled("PruneGuard")]));
    s.apply_request(&Request {
        now_ms: 2,
        command: Command::Commit {
            owner: owner.clone(),
            revision: 1,
            base: None,
            staged: 0,
            ops: Vec::new(),
            record: None,
        },
    });
    assert_eq!(s.conditions().count(), 0);
}

fn set_op(i: u64, name: &str) -> Op {
    Op::Set {
        cid: crate::testkit::seq_cid(i),
        written_as: None,
        spec: PinSpec {
            name: name.into(),
            options: std::sync::Arc::new(crate::manifest::PinOptions::default()),
        },
    }
}

fn record(revision: &str) -> PinSetRecord {
    PinSetRecord {
        namespace: "ns".into(),
        name: "site".into(),
        revision: revision.into(),
        labels: BTreeMap::new(),
        source: "test".into(),
        pins: 1,
        prune: true,
        suspend: false,
        applied_at_ms: 0,
    }
}

/// A commit of attempt `attempt` planned at generation `base`.
fn commit(owner: &Owner, attempt: u64, base: u64, staged: u32, ops: Vec<Op>) -> Request {
    Request {
        now_ms: 10,
        command: Command::Commit {
            owner: owner.clone(),
            revision: attempt,
            base: Some(base),
            staged,
            ops,
            record: Some(record(&format!("r{attempt}"))),
        },
    }
}

fn stage(owner: &Owner, attempt: u64, seq: u32, ops: Vec<Op>) -> Request {
    Request {
        now_ms: 10,
        command: Command::Stage {
            owner: owner.clone(),
            revision: attempt,
            seq,
            ops,
        },
    }
}

#[test]
fn a_commit_planned_against_a_stale_generation_is_refused_and_changes_nothing() {
    let owner = Owner::pinset(PinSetId::new("ns", "site"));
    let mut s = PinState::new();
    // Two applies plan against generation 0; the first commits.
    s.apply_request(&commit(&owner, 1, 0, 0, vec![set_op(1, "a")]));
    assert_eq!(s.generation(&owner), 1);
    let before = s.clone();
    // The second staged a chunk and now commits against generation 0.
    s.apply_request(&stage(&owner, 2, 0, vec![set_op(2, "b")]));
    let out = s.apply_request(&commit(&owner, 2, 0, 1, vec![set_op(3, "b")]));
    assert_eq!(
        out.refused.as_deref(),
        Some(
            "pinset ns/site changed since this apply was planned (generation 0, now 1): nothing applied; apply again"
        )
    );
    assert_eq!((out.created, out.changed, out.removed), (0, 0, 0));
    // Nothing applied, the staged chunk dropped, the generation kept.
    assert_eq!(s, before);
    // Planned again at generation 1, it goes in.
    let out = s.apply_request(&commit(&owner, 3, 1, 0, vec![set_op(3, "b")]));
    assert_eq!((out.created, out.refused), (1, None));
    assert_eq!(s.generation(&owner), 2);
}

#[test]
fn a_staged_import_lands_placed_at_commit_and_records_no_pinset() {
    let cid = crate::testkit::seq_cid;
    let place = |i: u64, peers: &[&str]| Op::Place {
        cid: cid(i),
        peers: peers.iter().map(|p| p.to_string()).collect(),
    };
    let mut s = PinState::new();
    // A chunk: two pins and their placements, one for a pin never set.
    let chunk = vec![
        set_op(1, "a"),
        set_op(2, "b"),
        place(1, &["p1", "p2"]),
        place(2, &["p3"]),
        place(9, &["p1"]),
    ];
    s.apply_request(&stage(&Owner::Api, 7, 0, chunk));
    assert!(s.is_empty(), "staged ops stay invisible until the commit");
    let out = s.apply_request(&Request {
        now_ms: 11,
        command: Command::Commit {
            owner: Owner::Api,
            revision: 7,
            base: None,
            staged: 1,
            ops: vec![set_op(3, "c"), place(3, &["p2"])],
            record: None,
        },
    });
    assert_eq!((out.created, out.changed, out.refused), (3, 0, None));
    let peers = |s: &PinState, i: u64| s.get(&cid(i)).unwrap().allocations.clone();
    assert_eq!(peers(&s, 1), ["p1", "p2"]);
    assert_eq!(peers(&s, 2), ["p3"]);
    assert_eq!(peers(&s, 3), ["p2"]);
    assert!(s.get(&cid(9)).is_none(), "a placement alone creates no pin");
    assert_eq!(s.pinsets().count(), 0);
    // A later placement moves an existing pin.
    s.apply_request(&Request {
        now_ms: 12,
        command: Command::Apply {
            owner: Owner::Api,
            ops: vec![place(1, &["p3"])],
        },
    });
    assert_eq!(peers(&s, 1), ["p3"]);
}

#[test]
fn a_retried_commit_answers_the_first_outcome_and_applies_nothing_twice() {
    let owner = Owner::pinset(PinSetId::new("ns", "site"));
    let mut s = PinState::new();
    s.apply_request(&stage(&owner, 5, 0, vec![set_op(1, "a"), set_op(2, "a")]));
    let first = s.apply_request(&commit(&owner, 5, 0, 1, vec![set_op(3, "a")]));
    assert_eq!((first.created, first.refused.as_deref()), (3, None));
    let after = s.clone();
    // The reply was lost: the chunk and the commit are sent again.
    let restaged = s.apply_request(&stage(&owner, 5, 0, vec![set_op(1, "a"), set_op(2, "a")]));
    assert_eq!(restaged.staged, 2);
    let again = s.apply_request(&commit(&owner, 5, 0, 1, vec![set_op(3, "a")]));
    assert_eq!(
        again, first,
        "the first attempt's outcome, not \"chunks missing\""
    );
    assert_eq!(s, after, "nothing staged or applied twice");
    assert_eq!(s.generation(&owner), 1);
}

#[test]
fn a_delete_keeps_the_generation_so_a_racing_recreate_is_refused() {
    let owner = Owner::pinset(PinSetId::new("ns", "site"));
    let mut s = PinState::new();
    s.apply_request(&commit(&owner, 1, 0, 0, vec![set_op(1, "a")]));
    // Delete (planned at 1) and a re-create (also planned at 1) race.
    let delete = Request {
        now_ms: 11,
        command: Command::Commit {
            owner: owner.clone(),
            revision: 2,
            base: Some(1),
            staged: 0,
            ops: vec![Op::Release {
                cid: crate::testkit::seq_cid(1),
            }],
            record: None,
        },
    };
    assert_eq!(s.apply_request(&delete).removed, 1);
    assert_eq!(s.pinsets().count(), 0);
    let recreate = s.apply_request(&commit(&owner, 3, 1, 0, vec![set_op(1, "b")]));
    assert!(recreate.refused.unwrap().contains("(generation 1, now 2)"));
    assert!(s.is_empty());
    assert_eq!(s.generation(&owner), 2);
}

#[test]
fn two_stores_fed_the_same_log_count_the_same_generations() {
    let site = Owner::pinset(PinSetId::new("ns", "site"));
    let other = Owner::pinset(PinSetId::new("ns", "other"));
    // Two writers racing on `site`, one on `other`, a REST pin and an
    // outdated commit without a base (written before generations).
    let log = [
        stage(&site, 1, 0, vec![set_op(1, "a")]),
        commit(&site, 1, 0, 1, vec![set_op(2, "a")]),
        commit(&site, 2, 0, 0, vec![set_op(9, "b")]),
        commit(&other, 3, 0, 0, vec![set_op(2, "o")]),
        Request {
            now_ms: 12,
            command: Command::Apply {
                owner: Owner::Api,
                ops: vec![set_op(4, "api")],
            },
        },
        commit(&site, 1, 0, 1, vec![set_op(2, "a")]),
        commit(
            &site,
            4,
            1,
            0,
            vec![Op::Release {
                cid: crate::testkit::seq_cid(1),
            }],
        ),
        Request {
            now_ms: 13,
            command: Command::Commit {
                owner: other.clone(),
                revision: 5,
                base: None,
                staged: 0,
                ops: vec![set_op(5, "o")],
                record: None,
            },
        },
    ];
    let mut a = PinState::new();
    let mut b = PinState::new();
    let outs_a: Vec<Outcome> = log.iter().map(|r| a.apply_request(r)).collect();
    let outs_b: Vec<Outcome> = log.iter().map(|r| b.apply_request(r)).collect();
    assert_eq!(outs_a, outs_b);
    assert_eq!(a, b);
    let refused: Vec<bool> = outs_a.iter().map(|o| o.refused.is_some()).collect();
    assert_eq!(
        refused,
        [false, false, true, false, false, false, false, false]
    );
    assert_eq!((a.generation(&site), a.generation(&other)), (2, 2));
    assert_eq!(a.generation(&Owner::Api), 0, "REST pins never commit");
}

fn apply_as(owner: &Owner, ops: Vec<Op>) -> Request {
    Request {
        now_ms: 20,
        command: Command::Apply {
            owner: owner.clone(),
            ops,
        },
    }
}

fn unpin(i: u64, force: bool) -> Request {
    Request {
        now_ms: 30,
        command: Command::Unpin {
            cid: crate::testkit::seq_cid(i),
            force,
        },
    }
}

#[test]
fn unpin_of_a_pin_a_pinset_also_owns_is_refused_naming_it_and_changes_nothing() {
    let site = Owner::pinset(PinSetId::new("ns", "site"));
    let mut s = PinState::new();
    s.apply_request(&apply_as(&Owner::Api, vec![set_op(1, "api")]));
    s.apply_request(&commit(&site, 1, 0, 0, vec![set_op(1, "site")]));
    let before = s.clone();
    let out = s.apply_request(&unpin(1, false));
    let msg = out.refused.unwrap();
    let cid = crate::testkit::seq_cid(1).to_string();
    assert!(
        msg.starts_with(&format!(
            "\"{cid}\" is also owned by pinset ns/site: it stays pinned"
        )),
        "{msg}"
    );
    assert!(msg.contains("force=true as an admin"), "{msg}");
    assert_eq!((out.created, out.changed, out.removed), (0, 0, 0));
    assert_eq!(s, before);
}

#[test]
fn forced_unpin_removes_the_pin_from_every_owner_and_stales_their_plans() {
    let a = Owner::pinset(PinSetId::new("ns", "a"));
    let b = Owner::pinset(PinSetId::new("ns", "b"));
    let mut s = PinState::new();
    s.apply_request(&apply_as(&Owner::Api, vec![set_op(1, "api")]));
    s.apply_request(&commit(&a, 1, 0, 0, vec![set_op(1, "a"), set_op(2, "a")]));
    s.apply_request(&commit(&b, 2, 0, 0, vec![set_op(1, "b")]));
    let out = s.apply_request(&unpin(1, true));
    assert_eq!((out.removed, out.refused), (1, None));
    assert!(s.get(&crate::testkit::seq_cid(1)).is_none());
    assert!(
        s.get(&crate::testkit::seq_cid(2)).is_some(),
        "other pins stay"
    );
    assert_eq!((s.generation(&a), s.generation(&b)), (2, 2));
    // A plan made before the forced unpin is refused.
    let stale = s.apply_request(&commit(&a, 3, 1, 0, vec![set_op(3, "a")]));
    assert!(stale.refused.is_some());
}

#[test]
fn unpin_of_an_api_only_pin_releases_it_and_of_an_unknown_cid_does_nothing() {
    let mut s = PinState::new();
    s.apply_request(&apply_as(&Owner::Api, vec![set_op(1, "api")]));
    let out = s.apply_request(&unpin(1, false));
    assert_eq!((out.removed, out.refused), (1, None));
    assert!(s.is_empty());
    assert_eq!(s.apply_request(&unpin(1, false)), Outcome::default());
}

#[test]
fn unpin_refusal_caps_the_owners_it_names() {
    let mut pin = StatePin {
        cid: crate::testkit::seq_cid(1),
        written_as: None,
        owners: BTreeMap::new(),
        allocations: Vec::new(),
        timestamp_ms: 0,
    };
    let spec = PinSpec {
        name: String::new(),
        options: std::sync::Arc::new(crate::manifest::PinOptions::default()),
    };
    assert_eq!(unpin_refusal("x", &pin), None);
    pin.owners.insert(Owner::Api, spec.clone());
    assert_eq!(unpin_refusal("x", &pin), None);
    pin.owners.remove(&Owner::Api);
    for i in 0..8 {
        let id = PinSetId::new("ns", format!("p{i}"));
        pin.owners.insert(Owner::pinset(id), spec.clone());
    }
    let msg = unpin_refusal("x", &pin).unwrap();
    assert!(
        msg.starts_with(
            "\"x\" is owned by pinset ns/p0, ns/p1, ns/p2, ns/p3, ns/p4 and 3 more: it stays pinned"
        ),
        "{msg}"
    );
}

#[test]
fn a_batch_answers_each_member_as_if_it_were_written_alone() {
    let site = Owner::pinset(PinSetId::new("ns", "site"));
    let members = vec![
        apply_as(&Owner::Api, vec![set_op(1, "api")]).command,
        apply_as(&Owner::Api, vec![set_op(1, "api")]).command,
        apply_as(&Owner::Api, vec![set_op(2, "api")]).command,
        unpin(2, false).command,
        unpin(3, false).command,
        apply_as(&Owner::Api, vec![set_op(3, "renamed")]).command,
    ];
    let mut alone = PinState::new();
    alone.apply_request(&commit(&site, 1, 0, 0, vec![set_op(3, "site")]));
    let mut batched = alone.clone();
    let expected: Vec<Outcome> = members
        .iter()
        .map(|c| {
            alone.apply_request(&Request {
                now_ms: 40,
                command: c.clone(),
            })
        })
        .collect();
    let out = batched.apply_request(&Request {
        now_ms: 40,
        command: Command::Batch(members),
    });
    assert_eq!(out.members, expected);
    assert!(expected[3].removed == 1 && expected[4].refused.is_some());
    assert_eq!(
        expected[1],
        Outcome::default(),
        "a repeated pin changes nothing"
    );
    assert_eq!((out.created, out.changed, out.removed), (2, 1, 1));
    assert_eq!(out.refused, None, "one member's refusal is its own");
    assert_eq!(batched, alone);
}

#[test]
fn outcomes_written_before_batches_still_decode() {
    let old = serde_json::json!({
        "created": 1, "changed": 0, "removed": 0, "staged": 0, "refused": null
    });
    let out: Outcome = serde_json::from_value(old).unwrap();
    assert_eq!(out.created, 1);
    assert!(out.members.is_empty());
    let json = serde_json::to_value(&out).unwrap();
    assert!(json.get("members").is_none(), "{json}");
}
