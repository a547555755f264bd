use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::manifest::{PinOptions, PinSetId, ReplicationFactors};
use crate::state::PinState;

/// Deterministic, distinct, valid CIDs.
fn cid(i: u8) -> CidKey {
    use multihash::Multihash;
    let mut digest = [0u8; 32];
    digest[0] = i;
    let mh = Multihash::<64>::wrap(0x12, &digest).unwrap();
    CidKey::from_cid(cid::Cid::new_v1(0x70, mh)).unwrap()
}

fn pin(name: &str, min: i32) -> DesiredPin {
    DesiredPin {
        spec: PinSpec {
            name: name.to_string(),
            options: Arc::new(PinOptions {
                replication: ReplicationFactors {
                    min,
                    max: min.max(3),
                },
                ..PinOptions::default()
            }),
        },
        written_as: None,
    }
}

fn owner(n: &str) -> Owner {
    Owner::pinset(PinSetId::new("default", n))
}

fn desired(ids: &[u8]) -> BTreeMap<CidKey, DesiredPin> {
    ids.iter()
        .map(|i| (cid(*i), pin(&format!("p{i}"), 1)))
        .collect()
}

#[test]
fn new_pins_are_added_in_cid_order_and_replanning_is_empty() {
    let o = owner("a");
    let mut state = PinState::new();
    let want = desired(&[5, 1, 3]);
    let p = plan(&o, &want, true, &state.owned_by(&o), PruneGuard::default()).unwrap();
    assert_eq!(p.add.len(), 3);
    let order: Vec<_> = p.add.iter().map(|(c, _)| *c).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    state.apply(&p);
    let again = plan(&o, &want, true, &state.owned_by(&o), PruneGuard::default()).unwrap();
    assert!(again.is_empty(), "{again}");
    assert_eq!(again.unchanged, 3);
}

#[test]
fn changed_options_are_updates_not_add_and_release() {
    let o = owner("a");
    let mut state = PinState::new();
    state.apply(
        &plan(
            &o,
            &desired(&[1, 2]),
            true,
            &state.owned_by(&o),
            PruneGuard::default(),
        )
        .unwrap(),
    );
    let mut want = desired(&[1, 2]);
    want.insert(cid(2), pin("renamed", 2));
    let p = plan(&o, &want, true, &state.owned_by(&o), PruneGuard::default()).unwrap();
    assert!(p.add.is_empty() && p.release.is_empty());
    assert_eq!(p.update.len(), 1);
    assert_eq!(p.update[0].cid, cid(2));
    assert_eq!(p.update[0].from.name, "p2");
    assert_eq!(p.update[0].to.spec.name, "renamed");
}

#[test]
fn prune_guard_refuses_an_empty_set_and_large_releases() {
    let o = owner("a");
    let mut state = PinState::new();
    state.apply(
        &plan(
            &o,
            &desired(&[1, 2, 3, 4]),
            true,
            &state.owned_by(&o),
            PruneGuard::default(),
        )
        .unwrap(),
    );
    let current = state.owned_by(&o);

    let err = plan(&o, &BTreeMap::new(), true, &current, PruneGuard::default()).unwrap_err();
    assert_eq!((err.release, err.owned, err.desired), (4, 4, 0));
    assert!(err.to_string().contains("empty desired set"), "{err}");

    // 3 of 4 is 75% > 50%.
    let err = plan(&o, &desired(&[1]), true, &current, PruneGuard::default()).unwrap_err();
    assert_eq!(err.release, 3);
    assert!(err.to_string().contains("75%"), "{err}");

    // 2 of 4 is exactly the limit: allowed.
    assert_eq!(
        plan(&o, &desired(&[1, 2]), true, &current, PruneGuard::default())
            .unwrap()
            .release
            .len(),
        2
    );

    // Forced, or with a looser limit, it goes through.
    let forced = PruneGuard {
        force: true,
        ..PruneGuard::default()
    };
    assert_eq!(
        plan(&o, &BTreeMap::new(), true, &current, forced)
            .unwrap()
            .release
            .len(),
        4
    );
    let loose = PruneGuard {
        max_fraction: 0.8,
        force: false,
    };
    assert_eq!(
        plan(&o, &desired(&[1]), true, &current, loose)
            .unwrap()
            .release
            .len(),
        3
    );
}

#[test]
fn without_prune_nothing_is_released() {
    let o = owner("a");
    let mut state = PinState::new();
    state.apply(
        &plan(
            &o,
            &desired(&[1, 2]),
            true,
            &state.owned_by(&o),
            PruneGuard::default(),
        )
        .unwrap(),
    );
    let p = plan(
        &o,
        &desired(&[3]),
        false,
        &state.owned_by(&o),
        PruneGuard::default(),
    )
    .unwrap();
    assert!(p.release.is_empty());
    assert_eq!(p.add.len(), 1);
    assert_eq!(p.unchanged, 2);
}

#[test]
fn a_shared_cid_stays_until_its_last_owner_leaves() {
    let (a, b) = (owner("a"), owner("b"));
    let mut state = PinState::new();
    state.apply(
        &plan(
            &a,
            &desired(&[1, 2]),
            true,
            &state.owned_by(&a),
            PruneGuard::default(),
        )
        .unwrap(),
    );
    state.apply(
        &plan(
            &b,
            &desired(&[2, 3]),
            true,
            &state.owned_by(&b),
            PruneGuard::default(),
        )
        .unwrap(),
    );
    let forced = PruneGuard {
        force: true,
        ..PruneGuard::default()
    };
    state.apply(&plan_release_all(&a, &state.owned_by(&a), forced).unwrap());
    assert!(state.get(&cid(1)).is_none());
    let shared = state.get(&cid(2)).unwrap();
    assert_eq!(shared.owners.keys().collect::<Vec<_>>(), vec![&b]);
    assert!(state.get(&cid(3)).is_some());
}

#[test]
fn api_pins_are_never_touched_by_a_pinset() {
    let a = owner("a");
    let mut state = PinState::new();
    state.apply(
        &plan(
            &Owner::Api,
            &desired(&[1]),
            false,
            &state.owned_by(&Owner::Api),
            PruneGuard::default(),
        )
        .unwrap(),
    );
    state.apply(
        &plan(
            &a,
            &desired(&[1, 2]),
            true,
            &state.owned_by(&a),
            PruneGuard::default(),
        )
        .unwrap(),
    );
    let forced = PruneGuard {
        force: true,
        ..PruneGuard::default()
    };
    state.apply(&plan(&a, &BTreeMap::new(), true, &state.owned_by(&a), forced).unwrap());
    let p = state.get(&cid(1)).unwrap();
    assert_eq!(p.owners.keys().collect::<Vec<_>>(), vec![&Owner::Api]);
    assert!(state.get(&cid(2)).is_none());
}

#[test]
fn strictest_options_win_between_owners() {
    let (a, b) = (owner("a"), owner("b"));
    let mut state = PinState::new();
    let mut wa = BTreeMap::new();
    wa.insert(cid(1), pin("", 2));
    let mut wb = BTreeMap::new();
    wb.insert(cid(1), pin("named", 3));
    state.apply(&plan(&a, &wa, true, &state.owned_by(&a), PruneGuard::default()).unwrap());
    state.apply(&plan(&b, &wb, true, &state.owned_by(&b), PruneGuard::default()).unwrap());
    let eff = state.get(&cid(1)).unwrap().effective();
    assert_eq!(
        eff.options.replication,
        ReplicationFactors { min: 3, max: 3 }
    );
    assert_eq!(eff.name, "named");
    // Replanning either owner is still empty: options are recorded per owner.
    assert!(
        plan(&a, &wa, true, &state.owned_by(&a), PruneGuard::default())
            .unwrap()
            .is_empty()
    );
    assert!(
        plan(&b, &wb, true, &state.owned_by(&b), PruneGuard::default())
            .unwrap()
            .is_empty()
    );
}

/// One step of a random history: an owner declares a set.
#[derive(Clone, Debug)]
struct Step {
    owner: usize,
    /// CID index → name variant.
    set: BTreeMap<u8, u8>,
    prune: bool,
    force: bool,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0usize..3,
        proptest::collection::btree_map(0u8..16, 0u8..2, 0..10),
        proptest::bool::weighted(0.8),
        proptest::bool::weighted(0.3),
    )
        .prop_map(|(owner, set, prune, force)| Step {
            owner,
            set,
            prune,
            force,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Over random histories of three PinSets plus hand-made API pins:
    /// - a CID still desired by any owner is never removed from the state;
    /// - applying a plan then planning again gives an empty plan;
    /// - the state always equals the model: each owner holds what it last
    ///   successfully declared (plus, without prune, what it held before),
    ///   and each pin's owners are exactly those holding it.
    #[test]
    fn state_is_the_union_of_desired_sets(steps in proptest::collection::vec(step(), 1..24), api in proptest::collection::btree_set(0u8..16, 0..4)) {
        let owners: Vec<Owner> = (0..3).map(|i| owner(&format!("o{i}"))).collect();
        let mut state = PinState::new();
        let api_set: BTreeMap<CidKey, DesiredPin> = api.iter().map(|i| (cid(*i), pin("api", 1))).collect();
        state.apply(&plan(&Owner::Api, &api_set, false, &state.owned_by(&Owner::Api), PruneGuard::default()).unwrap());
        // Model: owner → (cid → name).
        let mut model: BTreeMap<Owner, BTreeMap<CidKey, String>> = BTreeMap::new();
        model.insert(Owner::Api, api_set.iter().map(|(c, p)| (*c, p.spec.name.clone())).collect());

        for s in &steps {
            let o = &owners[s.owner];
            let want: BTreeMap<CidKey, DesiredPin> = s.set.iter()
                .map(|(i, v)| (cid(*i), pin(&format!("n{v}"), 1)))
                .collect();
            let guard = PruneGuard { force: s.force, ..PruneGuard::default() };
            let before = state.clone();
            match plan(o, &want, s.prune, &state.owned_by(o), guard) {
                Ok(p) => {
                    state.apply(&p);
                    let again = plan(o, &want, s.prune, &state.owned_by(o), PruneGuard::default()).unwrap();
                    prop_assert!(again.is_empty(), "replan not empty: {}", again);
                    let held = model.entry(o.clone()).or_default();
                    if s.prune { held.clear(); }
                    held.extend(want.iter().map(|(c, p)| (*c, p.spec.name.clone())));
                }
                Err(e) => {
                    prop_assert!(!s.force);
                    prop_assert_eq!(&state, &before, "a refused plan changed the state");
                    prop_assert!(e.release > 0);
                }
            }
            // Nothing any owner still wants is gone.
            for (owner, held) in &model {
                for c in held.keys() {
                    let p = state.get(c);
                    prop_assert!(p.is_some_and(|p| p.owners.contains_key(owner)), "{} lost {}", owner, c);
                }
            }
        }
        // The state is exactly the model.
        let mut expected: BTreeMap<CidKey, BTreeMap<Owner, String>> = BTreeMap::new();
        for (owner, held) in &model {
            for (c, name) in held {
                expected.entry(*c).or_default().insert(owner.clone(), name.clone());
            }
        }
        let actual: BTreeMap<CidKey, BTreeMap<Owner, String>> = state.iter()
            .map(|p| (p.cid, p.owners.iter().map(|(o, s)| (o.clone(), s.name.clone())).collect()))
            .collect();
        prop_assert_eq!(actual, expected);
        let all_cids: BTreeSet<_> = state.iter().map(|p| p.cid).collect();
        prop_assert_eq!(all_cids.len(), state.len());
    }
}

#[test]
fn allocations_are_recorded_and_survive_owner_changes() {
    use crate::state::{Command, Request};
    let (a, b) = (owner("a"), owner("b"));
    let mut state = PinState::new();
    state.apply(
        &plan(
            &a,
            &desired(&[1, 2]),
            true,
            &state.owned_by(&a),
            PruneGuard::default(),
        )
        .unwrap(),
    );
    let out = state.apply_request(&Request {
        now_ms: 5,
        command: Command::Allocate {
            allocations: vec![
                (cid(1), vec!["p1".into(), "p2".into()]),
                (cid(9), vec!["p1".into()]),
            ],
        },
    });
    assert_eq!(out.changed, 1, "a CID not in the state is skipped");
    state.apply(
        &plan(
            &b,
            &desired(&[1]),
            true,
            &state.owned_by(&b),
            PruneGuard::default(),
        )
        .unwrap(),
    );
    assert_eq!(
        state.get(&cid(1)).unwrap().allocations,
        vec!["p1".to_string(), "p2".to_string()]
    );
    assert!(state.get(&cid(9)).is_none());
}

fn with_role(mut p: DesiredPin, kind: ShardKind, reference: Option<&str>, meta: u8) -> DesiredPin {
    Arc::make_mut(&mut p.spec.options).shard_role = Some(crate::manifest::ShardRole {
        kind,
        reference: reference.map(str::to_string),
        meta: cid(meta).to_string(),
        shard_size: 4 << 20,
        max_depth: if kind == ShardKind::Shard { 1 } else { 0 },
    });
    p
}

#[test]
fn a_sharded_pins_shards_and_cluster_dag_are_never_pruned_on_their_own() {
    let o = owner("big");
    let meta = with_role(pin("big", 1), ShardKind::Meta, None, 1);
    // What the cluster holds for the owner once it sharded the content:
    // the meta pin (now knowing its cluster DAG), the cluster DAG, shards.
    let held: OwnedPins = BTreeMap::from([
        (
            cid(1),
            with_role(meta.clone(), ShardKind::Meta, Some("bafy-dag"), 1).spec,
        ),
        (
            cid(2),
            with_role(pin("big-clusterDAG", -1), ShardKind::ClusterDag, None, 1).spec,
        ),
        (
            cid(3),
            with_role(pin("big-shard-0", 1), ShardKind::Shard, None, 1).spec,
        ),
    ]);
    // The manifest still says the same: nothing to do.
    let want = BTreeMap::from([(cid(1), meta.clone())]);
    let p = plan(&o, &want, true, &held, PruneGuard::default()).unwrap();
    assert!(p.is_empty(), "{p}");
    // The pin leaves the manifest: only the meta pin is released (its
    // shards and cluster DAG go with it in the state machine).
    let other = desired(&[9]);
    let p = plan(
        &o,
        &other,
        true,
        &held,
        PruneGuard {
            force: true,
            ..PruneGuard::default()
        },
    )
    .unwrap();
    assert_eq!(p.release, vec![cid(1)]);
    // A new shard size is a change of the meta pin.
    let mut bigger = meta;
    Arc::make_mut(&mut bigger.spec.options)
        .shard_role
        .as_mut()
        .unwrap()
        .shard_size = 8 << 20;
    let p = plan(
        &o,
        &BTreeMap::from([(cid(1), bigger)]),
        true,
        &held,
        PruneGuard::default(),
    )
    .unwrap();
    assert_eq!(p.update.len(), 1);
    assert!(p.release.is_empty());
}
