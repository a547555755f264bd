use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

const NOW: i64 = 1_000_000;
const LATER: i64 = NOW + 30_000;
const GRACE: i64 = 60_000;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|p| (*p).to_owned()).collect()
}

/// A healthy peer: group tag (if any), queue length, free space.
fn peer(id: &str, group: Option<&str>, queued: u64, free: u64) -> Vec<Metric> {
    let mut m = vec![
        Metric::pinqueue(id, queued, LATER),
        Metric::freespace(id, free, LATER),
    ];
    if let Some(g) = group {
        m.push(Metric::tag(id, "group", g, LATER));
    }
    m
}

fn metrics(peers: Vec<Vec<Metric>>) -> PeerMetrics {
    peers.into_iter().flatten().collect()
}

fn req(min: i32, max: i32) -> AllocationRequest {
    AllocationRequest {
        cid: "bafy".into(),
        replication_min: min,
        replication_max: max,
        now_ms: NOW,
        ..AllocationRequest::default()
    }
}

fn members(m: &PeerMetrics) -> Vec<String> {
    m.peers().map(str::to_owned).collect()
}

fn run(r: &AllocationRequest, m: &PeerMetrics) -> Result<Allocation, AllocError> {
    allocate(r, m, &members(m), &AllocatorConfig::default())
}

fn peers_of(r: &AllocationRequest, m: &PeerMetrics) -> Vec<String> {
    run(r, m).map(|a| a.peers).unwrap_or_default()
}

/// Expires every metric of `id` at `at`.
fn expire(m: &mut PeerMetrics, id: &str, at: i64) {
    let old: Vec<Metric> = m
        .peer(id)
        .into_iter()
        .flat_map(|n| n.values().cloned())
        .collect();
    m.remove_peer(id);
    for mut x in old {
        x.expire_ms = at;
        m.insert(x);
    }
}

#[test]
fn orders_by_pinqueue_then_freespace_then_peer_id() {
    let m = metrics(vec![
        peer("a", None, 5, 1000),
        peer("b", None, 1, 10),
        peer("c", None, 1, 500),
        peer("d", None, 1, 500),
        peer("e", None, 0, 1),
    ]);
    assert_eq!(peers_of(&req(-1, -1), &m), s(&["e", "c", "d", "b", "a"]));
    assert_eq!(peers_of(&req(2, 2), &m), s(&["e", "c"]));
}

#[test]
fn spreads_copies_across_groups_before_reusing_one() {
    let m = metrics(vec![
        peer("a1", Some("a"), 0, 900),
        peer("a2", Some("a"), 0, 800),
        peer("a3", Some("a"), 0, 700),
        peer("b1", Some("b"), 0, 10),
        peer("c1", Some("c"), 0, 20),
        peer("c2", Some("c"), 0, 5),
    ]);
    let got = peers_of(&req(3, 3), &m);
    let groups: BTreeSet<char> = got.iter().filter_map(|p| p.chars().next()).collect();
    assert_eq!(groups.len(), 3, "{got:?}");
    // Group a has the most weight below it, so it goes first, then c, then b;
    // the fourth copy goes back to a, the fifth to c.
    assert_eq!(peers_of(&req(5, 5), &m), s(&["a1", "c1", "b1", "a2", "c2"]));
}

#[test]
fn untagged_peers_form_a_group_of_their_own() {
    let m = metrics(vec![
        peer("a1", Some("a"), 0, 900),
        peer("a2", Some("a"), 0, 800),
        peer("x", None, 0, 10),
        peer("y", None, 0, 10),
    ]);
    let got = peers_of(&req(2, 2), &m);
    assert_eq!(got, s(&["a1", "x"]));
}

/// IPFS Cluster's `TestAllocate` (allocator/balanced), minus its peer 8,
/// which IPFS Cluster drops for lacking metrics and pinfleet would place
/// in a "missing" partition.
#[test]
fn matches_ipfs_cluster_balanced_order() {
    let mk = |name: &str, value: &str, weight: i64, peer: &str, part: bool| Metric {
        name: name.into(),
        value: value.into(),
        weight,
        partitionable: part,
        ..Metric::numpin(peer, 0, LATER)
    };
    let m: PeerMetrics = [
        mk("abc", "a", 0, "p1", true),
        mk("abc", "b", 0, "p2", true),
        mk("region", "a-us", 0, "p1", true),
        mk("region", "a-us", 0, "p2", true),
        mk("region", "b-eu", 0, "p3", true),
        mk("region", "b-eu", 0, "p4", true),
        mk("region", "b-eu", 0, "p5", true),
        mk("region", "c-au", 0, "p6", true),
        mk("region", "c-au", 0, "p7", true),
        mk("az", "us1", 0, "p1", true),
        mk("az", "us2", 0, "p2", true),
        mk("az", "eu1", 0, "p3", true),
        mk("az", "eu1", 0, "p4", true),
        mk("az", "eu2", 0, "p5", true),
        mk("az", "au1", 0, "p6", true),
        mk("az", "au1", 0, "p7", true),
        mk("pinqueue", "100", 0, "p1", true),
        mk("pinqueue", "200", 0, "p2", true),
        mk("pinqueue", "100", 0, "p3", true),
        mk("pinqueue", "200", 0, "p4", true),
        mk("pinqueue", "300", 0, "p5", true),
        mk("pinqueue", "100", 0, "p6", true),
        mk("pinqueue", "1000", -1, "p7", true),
        mk("freespace", "100", 100, "p1", false),
        mk("freespace", "500", 500, "p2", false),
        mk("freespace", "200", 200, "p3", false),
        mk("freespace", "400", 400, "p4", false),
        mk("freespace", "10", 10, "p5", false),
        mk("freespace", "50", 50, "p6", false),
        mk("freespace", "600", 600, "p7", false),
    ]
    .into_iter()
    .collect();
    let config = AllocatorConfig {
        allocate_by: s(&["region", "az", "pinqueue", "freespace"]),
        ..AllocatorConfig::default()
    };
    let got = allocate(&req(-1, -1), &m, &members(&m), &config).map(|a| a.peers);
    assert_eq!(got, Ok(s(&["p6", "p4", "p2", "p7", "p5", "p1", "p3"])));
}

#[test]
fn never_allocates_expired_invalid_or_non_member_peers() {
    let mut m = metrics(vec![
        peer("a", None, 0, 100),
        peer("b", None, 0, 200),
        peer("c", None, 0, 300),
        peer("d", None, 0, 400),
        peer("e", None, 0, 500),
    ]);
    expire(&mut m, "e", NOW - 1);
    // d: disk full (invalid freespace) — alive, but takes no new pins.
    m.insert(Metric::freespace("d", 0, LATER + 1));
    let all = members(&m);
    let cfg = AllocatorConfig::default();
    let got = allocate(&req(-1, -1), &m, &all, &cfg).map(|a| a.peers);
    assert_eq!(got, Ok(s(&["c", "b", "a"])));
    // Not a member: ignored even with fresh metrics.
    let got = allocate(&req(-1, -1), &m, &s(&["a", "b"]), &cfg).map(|a| a.peers);
    assert_eq!(got, Ok(s(&["b", "a"])));
    // A metric expiring exactly now still counts.
    expire(&mut m, "a", NOW);
    assert!(peers_of(&req(-1, -1), &m).contains(&"a".to_owned()));
    // A peer with no metrics at all is unavailable.
    let got = allocate(&req(-1, -1), &m, &s(&["a", "zz"]), &cfg).map(|a| a.peers);
    assert_eq!(got, Ok(s(&["a"])));
}

#[test]
fn full_disk_keeps_its_current_pins() {
    let mut m = metrics(vec![peer("a", None, 0, 100), peer("b", None, 0, 200)]);
    m.insert(Metric::freespace("a", 0, LATER + 1));
    let mut r = req(1, 2);
    r.current = s(&["a"]);
    assert_eq!(peers_of(&r, &m), s(&["a", "b"]));
}

#[test]
fn allocate_tags_are_a_hard_constraint() {
    let mut m = metrics(vec![
        peer("a", Some("x"), 0, 100),
        peer("b", Some("y"), 0, 900),
        peer("c", Some("x"), 0, 50),
        peer("d", None, 0, 1000),
    ]);
    m.insert(Metric::tag("a", "region", "eu", LATER));
    m.insert(Metric::tag("b", "region", "eu", LATER));
    m.insert(Metric::tag("c", "region", "us", LATER));
    let mut r = req(1, 3);
    r.allocate_tags = [("region".to_owned(), "eu".to_owned())].into();
    assert_eq!(peers_of(&r, &m), s(&["b", "a"]));
    r.replication_min = 3;
    assert_eq!(
        run(&r, &m),
        Err(AllocError::NotEnoughPeers {
            needed: 3,
            available: 2
        })
    );
    // Every-peer pins respect tags too; user allocations do as well.
    let mut r = req(-1, -1);
    r.allocate_tags = [("group".to_owned(), "x".to_owned())].into();
    r.user_allocations = s(&["d"]);
    assert_eq!(peers_of(&r, &m), s(&["a", "c"]));
}

#[test]
fn keeps_current_allocations_that_are_still_available() {
    let mut m = metrics(vec![
        peer("a", None, 9, 1),
        peer("b", None, 0, 1000),
        peer("c", None, 0, 900),
        peer("d", None, 0, 800),
    ]);
    let mut r = req(2, 3);
    r.current = s(&["a", "gone", "a"]);
    // `a` is a poor choice now, but it already holds the pin.
    assert_eq!(peers_of(&r, &m), s(&["a", "b", "c"]));
    r.current = s(&["d", "a", "c"]);
    assert_eq!(peers_of(&r, &m), s(&["d", "a", "c"]));
    // More current peers than max: the best ones stay, in recorded order.
    r.replication_max = 2;
    assert_eq!(peers_of(&r, &m), s(&["d", "c"]));
    // An expired current peer is replaced.
    expire(&mut m, "d", NOW - 1);
    r.replication_max = 3;
    assert_eq!(peers_of(&r, &m), s(&["a", "c", "b"]));
}

#[test]
fn top_up_spreads_away_from_groups_already_holding() {
    let m = metrics(vec![
        peer("a1", Some("a"), 0, 900),
        peer("a2", Some("a"), 0, 800),
        peer("b1", Some("b"), 0, 10),
    ]);
    let mut r = req(2, 2);
    r.current = s(&["a1"]);
    assert_eq!(peers_of(&r, &m), s(&["a1", "b1"]));
}

#[test]
fn every_peer_means_every_available_peer() {
    let mut m = metrics(vec![
        peer("a", None, 0, 1),
        peer("b", None, 0, 2),
        peer("c", None, 0, 3),
    ]);
    expire(&mut m, "b", NOW - 1);
    let a = run(&req(-1, -1), &m);
    assert_eq!(
        a,
        Ok(Allocation {
            peers: s(&["c", "a"]),
            under_replicated: false
        })
    );
    // At least 3, as many as possible.
    assert_eq!(
        run(&req(3, -1), &m),
        Err(AllocError::NotEnoughPeers {
            needed: 3,
            available: 2
        })
    );
    assert_eq!(peers_of(&req(2, -1), &m), s(&["c", "a"]));
    // No peer at all is fine for an every-peer pin: the loop adds them later.
    assert_eq!(
        run(&req(-1, -1), &PeerMetrics::new()),
        Ok(Allocation::default())
    );
}

#[test]
fn user_allocations_come_first_when_available() {
    let m = metrics(vec![
        peer("a", None, 0, 1000),
        peer("b", None, 0, 900),
        peer("c", None, 5, 1),
        peer("d", None, 5, 2),
    ]);
    let mut r = req(2, 3);
    r.user_allocations = s(&["c", "nobody", "d"]);
    assert_eq!(peers_of(&r, &m), s(&["c", "d", "a"]));
    // More user peers than max: the best of them.
    r.replication_max = 1;
    r.replication_min = 1;
    assert_eq!(peers_of(&r, &m), s(&["d"]));
    // They come first in the output even when already allocated.
    let mut r = req(2, 2);
    r.current = s(&["a", "c"]);
    r.user_allocations = s(&["c"]);
    assert_eq!(peers_of(&r, &m), s(&["c", "a"]));
}

#[test]
fn between_min_and_max_is_success_but_flagged() {
    let m = metrics(vec![peer("a", None, 0, 1), peer("b", None, 0, 2)]);
    assert_eq!(
        run(&req(2, 5), &m),
        Ok(Allocation {
            peers: s(&["b", "a"]),
            under_replicated: true
        })
    );
    assert_eq!(
        run(&req(3, 5), &m),
        Err(AllocError::NotEnoughPeers {
            needed: 3,
            available: 2
        })
    );
}

#[test]
fn zero_means_cluster_defaults_and_bad_factors_are_refused() {
    let m = metrics(vec![
        peer("a", None, 0, 1),
        peer("b", None, 0, 2),
        peer("c", None, 0, 3),
    ]);
    let cfg = AllocatorConfig {
        default_min: 1,
        default_max: 2,
        ..AllocatorConfig::default()
    };
    let got = allocate(&req(0, 0), &m, &members(&m), &cfg).map(|a| a.peers);
    assert_eq!(got, Ok(s(&["c", "b"])));
    let got = allocate(&req(0, 0), &m, &members(&m), &AllocatorConfig::default());
    assert_eq!(got.map(|a| a.peers.len()), Ok(3));
    for (min, max) in [(3, 2), (-1, 2), (-2, -1), (1, -2), (0, -5)] {
        assert_eq!(
            allocate(&req(min, max), &m, &members(&m), &cfg),
            Err(AllocError::InvalidReplication {
                min: if min == 0 { 1 } else { min },
                max
            }),
            "{min}/{max}"
        );
    }
}

#[test]
fn metric_insertion_keeps_the_latest_reading_in_any_order() {
    let old = Metric::pinqueue("a", 10, NOW);
    let new = Metric::pinqueue("a", 1, LATER);
    let mut x = PeerMetrics::new();
    assert!(x.insert(old.clone()));
    assert!(x.insert(new.clone()));
    let mut y = PeerMetrics::new();
    assert!(y.insert(new.clone()));
    assert!(!y.insert(old));
    assert_eq!(x, y);
    assert_eq!(x.get("a", PINQUEUE), Some(&new));
}

#[test]
fn charging_the_pin_queue_spreads_a_batch() {
    let mut m = metrics(vec![
        peer("a", None, 0, 100),
        peer("b", None, 0, 100),
        peer("c", None, 0, 100),
    ]);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..30 {
        let got = peers_of(&req(1, 1), &m);
        m.charge_pinqueue(&got);
        for p in got {
            *counts.entry(p).or_default() += 1;
        }
    }
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), [10, 10, 10]);
    assert_eq!(m.get("a", PINQUEUE).map(|x| x.value.as_str()), Some("10"));
}

fn decide(r: &AllocationRequest, m: &PeerMetrics) -> Decision {
    reallocate_needed(r, m, &members(m), &AllocatorConfig::default(), GRACE)
        .unwrap_or(Decision::Keep)
}

fn step(r: &AllocationRequest, m: &PeerMetrics) -> Result<Option<Allocation>, AllocError> {
    reallocate(r, m, &members(m), &AllocatorConfig::default(), GRACE)
}

#[test]
fn down_peers_are_replaced_only_after_the_grace_period() {
    let mut m = metrics(vec![
        peer("a", None, 0, 100),
        peer("b", None, 0, 200),
        peer("c", None, 0, 300),
    ]);
    let mut r = req(2, 2);
    r.current = s(&["a", "b"]);
    assert_eq!(decide(&r, &m), Decision::Keep);
    // b stopped reporting recently: within grace, nothing moves.
    expire(&mut m, "b", NOW - GRACE);
    assert_eq!(decide(&r, &m), Decision::Keep);
    assert_eq!(step(&r, &m), Ok(None));
    // Past the grace period: below min, b is replaced.
    expire(&mut m, "b", NOW - GRACE - 1);
    assert_eq!(
        decide(&r, &m),
        Decision::BelowMin {
            holding: 1,
            needed: 2
        }
    );
    let next = step(&r, &m).ok().flatten().map(|a| a.peers);
    assert_eq!(next, Some(s(&["a", "c"])));
}

#[test]
fn gone_peers_stay_allocated_while_the_minimum_holds() {
    let mut m = metrics(vec![
        peer("a", None, 0, 100),
        peer("b", None, 0, 200),
        peer("c", None, 0, 300),
        peer("d", None, 0, 400),
    ]);
    let mut r = req(2, 3);
    r.current = s(&["a", "b", "c"]);
    expire(&mut m, "c", NOW - 10 * GRACE);
    assert_eq!(decide(&r, &m), Decision::Keep);
    // A member never seen at all counts as gone too.
    r.current = s(&["a", "b", "never"]);
    let mut all = members(&m);
    all.push("never".into());
    let d = reallocate_needed(&r, &m, &all, &AllocatorConfig::default(), GRACE);
    assert_eq!(d, Ok(Decision::Keep));
    r.current = s(&["a", "never"]);
    let d = reallocate_needed(&r, &m, &all, &AllocatorConfig::default(), GRACE);
    assert_eq!(
        d,
        Ok(Decision::BelowMin {
            holding: 1,
            needed: 2
        })
    );
}

#[test]
fn peers_back_online_release_copies_beyond_max() {
    let mut m = metrics(vec![
        peer("a", None, 0, 100),
        peer("b", None, 0, 200),
        peer("c", None, 0, 300),
        peer("d", None, 0, 400),
    ]);
    let mut r = req(2, 2);
    r.current = s(&["a", "b"]);
    // a is gone for long, b just restarted (within grace): the pin needs
    // new peers, and b keeps its place meanwhile.
    expire(&mut m, "a", NOW - 10 * GRACE);
    expire(&mut m, "b", NOW - 1);
    let next = step(&r, &m).ok().flatten().map(|a| a.peers);
    assert_eq!(next, Some(s(&["d", "c", "b"])));
    r.current = next.unwrap_or_default();
    assert_eq!(decide(&r, &m), Decision::Keep);
    // b is back: three live copies for max 2, the extra one goes.
    m.extend(peer("b", None, 0, 200));
    assert_eq!(decide(&r, &m), Decision::OverMax { live: 3, max: 2 });
    let next = step(&r, &m).ok().flatten().map(|a| a.peers);
    assert_eq!(next, Some(s(&["d", "c"])));
}

#[test]
fn misplaced_peers_are_replaced() {
    let mut m = metrics(vec![
        peer("a", Some("x"), 0, 100),
        peer("b", Some("x"), 0, 200),
        peer("c", Some("x"), 0, 300),
    ]);
    let mut r = req(1, 2);
    r.allocate_tags = [("group".to_owned(), "x".to_owned())].into();
    r.current = s(&["a", "b"]);
    assert_eq!(decide(&r, &m), Decision::Keep);
    m.insert(Metric::tag("b", "group", "y", LATER + 1));
    assert_eq!(decide(&r, &m), Decision::Misplaced { peers: s(&["b"]) });
    let next = step(&r, &m).ok().flatten().map(|a| a.peers);
    assert_eq!(next, Some(s(&["a", "c"])));
    // Removed from the cluster.
    r.current = s(&["a", "c"]);
    let cfg = AllocatorConfig::default();
    let d = reallocate_needed(&r, &m, &s(&["a", "b"]), &cfg, GRACE);
    assert_eq!(d, Ok(Decision::Misplaced { peers: s(&["c"]) }));
}

#[test]
fn every_peer_pins_pick_up_new_peers() {
    let mut m = metrics(vec![peer("a", None, 0, 100), peer("b", None, 0, 200)]);
    let mut r = req(-1, -1);
    r.current = s(&["b", "a"]);
    assert_eq!(decide(&r, &m), Decision::Keep);
    m.extend(peer("c", None, 0, 300));
    assert_eq!(decide(&r, &m), Decision::NewPeers { peers: s(&["c"]) });
    let next = step(&r, &m).ok().flatten().map(|a| a.peers);
    assert_eq!(next, Some(s(&["b", "a", "c"])));
}

#[test]
fn reallocation_that_cannot_reach_min_is_an_error() {
    let mut m = metrics(vec![peer("a", None, 0, 100), peer("b", None, 0, 200)]);
    let mut r = req(2, 2);
    r.current = s(&["a", "b"]);
    expire(&mut m, "b", NOW - 10 * GRACE);
    assert_eq!(
        step(&r, &m),
        Err(AllocError::NotEnoughPeers {
            needed: 2,
            available: 1
        })
    );
}

// ---- properties ----

/// One generated peer.
#[derive(Clone, Debug)]
struct GenPeer {
    group: Option<u8>,
    queued: Option<u8>,
    free: Option<u8>,
    /// 0: expired long ago, 1: expired within grace, 2+: fresh.
    age: u8,
    valid: bool,
    member: bool,
}

fn gen_peer() -> impl Strategy<Value = GenPeer> {
    (
        proptest::option::weighted(0.7, 0u8..3),
        proptest::option::weighted(0.9, 0u8..4),
        proptest::option::weighted(0.9, 0u8..4),
        0u8..6,
        proptest::bool::weighted(0.9),
        proptest::bool::weighted(0.9),
    )
        .prop_map(|(group, queued, free, age, valid, member)| GenPeer {
            group,
            queued,
            free,
            age,
            valid,
            member,
        })
}

#[derive(Clone, Debug)]
struct Case {
    peers: Vec<GenPeer>,
    req: AllocationRequest,
    config: AllocatorConfig,
}

fn gen_case() -> impl Strategy<Value = Case> {
    let factors = prop_oneof![
        Just((-1, -1)),
        Just((0, 0)),
        (1i32..5, 0i32..4).prop_map(|(min, extra)| (min, min + extra)),
        (1i32..4).prop_map(|min| (min, -1)),
    ];
    (
        proptest::collection::vec(gen_peer(), 0..9),
        factors,
        proptest::collection::vec(0usize..10, 0..5),
        proptest::collection::vec(0usize..10, 0..3),
        proptest::option::weighted(0.2, 0u8..3),
        (-1i32..3, 0i32..3),
    )
        .prop_map(|(peers, (min, max), current, users, tag, (dmin, dextra))| {
            let id = |i: usize| format!("p{i}");
            let mut req = req(min, max);
            req.current = current.into_iter().map(id).collect();
            req.user_allocations = users.into_iter().map(id).collect();
            if let Some(t) = tag {
                req.allocate_tags = [("group".to_owned(), format!("g{t}"))].into();
            }
            let (default_min, default_max) = if dmin == -1 {
                (-1, -1)
            } else {
                (dmin + 1, dmin + 1 + dextra)
            };
            let config = AllocatorConfig {
                default_min,
                default_max,
                ..AllocatorConfig::default()
            };
            Case { peers, req, config }
        })
}

impl Case {
    fn metric_list(&self) -> Vec<Metric> {
        let mut out = Vec::new();
        for (i, p) in self.peers.iter().enumerate() {
            let id = format!("p{i}");
            let exp = match p.age {
                0 => NOW - 10 * GRACE,
                1 => NOW - GRACE / 2,
                _ => LATER,
            };
            if let Some(g) = p.group {
                out.push(Metric::tag(&id, "group", format!("g{g}"), exp));
            }
            if let Some(q) = p.queued {
                let mut m = Metric::pinqueue(&id, u64::from(q), exp);
                m.valid = p.valid;
                out.push(m);
            }
            if let Some(f) = p.free {
                out.push(Metric::freespace(&id, u64::from(f) * 100, exp));
            }
        }
        out
    }

    fn metrics(&self) -> PeerMetrics {
        self.metric_list().into_iter().collect()
    }

    fn members(&self) -> Vec<String> {
        (0..self.peers.len())
            .filter(|i| self.peers.get(*i).is_some_and(|p| p.member))
            .map(|i| format!("p{i}"))
            .collect()
    }

    fn allocate(&self) -> Result<Allocation, AllocError> {
        allocate(&self.req, &self.metrics(), &self.members(), &self.config)
    }

    fn factors(&self) -> Option<Factors> {
        Factors::resolve(&self.req, &self.config).ok()
    }

    /// Oracle: may `id` keep / take a new allocation? Written from the
    /// rules, independently of `View`.
    fn generated(&self, id: &str) -> Option<&GenPeer> {
        let i: usize = id.strip_prefix('p')?.parse().ok()?;
        self.peers.get(i)
    }

    fn fits(&self, p: &GenPeer) -> bool {
        self.req
            .allocate_tags
            .get("group")
            .is_none_or(|want| p.group.map(|g| format!("g{g}")).as_ref() == Some(want))
    }

    fn can_keep(&self, id: &str) -> bool {
        self.generated(id).is_some_and(|p| {
            let has_metric = p.group.is_some() || p.queued.is_some() || p.free.is_some();
            p.member && p.age >= 2 && has_metric && self.fits(p)
        })
    }

    fn can_take_new(&self, id: &str) -> bool {
        self.can_keep(id)
            && self.generated(id).is_some_and(|p| {
                let queue_ok = p.queued.is_none() || p.valid;
                let free_ok = p.free.is_none_or(|f| f > 0);
                let some_valid = p.group.is_some()
                    || p.free.is_some_and(|f| f > 0)
                    || (p.queued.is_some() && p.valid);
                queue_ok && free_ok && some_valid
            })
    }

    fn available(&self) -> usize {
        let kept: BTreeSet<&str> = self
            .req
            .current
            .iter()
            .map(String::as_str)
            .filter(|p| self.can_keep(p))
            .collect();
        let fresh = self
            .members()
            .iter()
            .filter(|p| !kept.contains(p.as_str()) && self.can_take_new(p))
            .count();
        kept.len() + fresh
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn deterministic_whatever_the_input_order(case in gen_case(), seed in any::<u64>()) {
        let first = case.allocate();
        prop_assert_eq!(&first, &case.allocate());
        // Shuffle metric insertion and member order.
        let mut list = case.metric_list();
        let mut members = case.members();
        let mut rng = seed;
        let mut next = |bound: usize| {
            rng = rng
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            usize::try_from(rng >> 33).unwrap_or(0) % bound
        };
        for i in (1..list.len()).rev() {
            list.swap(i, next(i + 1));
        }
        for i in (1..members.len()).rev() {
            members.swap(i, next(i + 1));
        }
        let shuffled: PeerMetrics = list.into_iter().collect();
        prop_assert_eq!(&shuffled, &case.metrics());
        prop_assert_eq!(first, allocate(&case.req, &shuffled, &members, &case.config));
    }

    #[test]
    fn only_available_peers_and_bounds_hold(case in gen_case()) {
        let got = case.allocate();
        let Some(f) = case.factors() else {
            prop_assert!(matches!(got, Err(AllocError::InvalidReplication { .. })), "{:?}", got);
            return Ok(());
        };
        let available = case.available();
        if available < f.needed {
            prop_assert_eq!(got, Err(AllocError::NotEnoughPeers { needed: f.needed, available }));
            return Ok(());
        }
        let a = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
        let unique: BTreeSet<&String> = a.peers.iter().collect();
        prop_assert_eq!(unique.len(), a.peers.len(), "duplicates in {:?}", a.peers);
        for p in &a.peers {
            let kept = case.req.current.contains(p);
            prop_assert!(
                if kept { case.can_keep(p) } else { case.can_take_new(p) },
                "{} should not be allocated: {:?}", p, a.peers
            );
        }
        let expect = f.wanted.map_or(available, |w| w.min(available));
        prop_assert_eq!(a.peers.len(), expect);
        prop_assert!(a.peers.len() >= f.needed);
        prop_assert_eq!(a.under_replicated, f.wanted.is_some_and(|w| a.peers.len() < w));
    }

    #[test]
    fn stable_and_idempotent(case in gen_case()) {
        let Ok(a) = case.allocate() else { return Ok(()) };
        let f = case.factors().ok_or_else(|| TestCaseError::fail("factors"))?;
        let keepable: BTreeSet<&String> =
            case.req.current.iter().filter(|p| case.can_keep(p)).collect();
        let got: BTreeSet<&String> = a.peers.iter().collect();
        if f.wanted.is_none_or(|w| keepable.len() <= w) {
            prop_assert!(
                keepable.is_subset(&got),
                "dropped a valid current peer: {:?} → {:?}", case.req.current, a.peers
            );
        } else {
            prop_assert!(got.is_subset(&keepable), "moved a pin needlessly");
        }
        let mut again = case.clone();
        again.req.current = a.peers.clone();
        prop_assert_eq!(again.allocate(), Ok(a));
    }

    #[test]
    fn user_allocations_first(case in gen_case()) {
        let Ok(a) = case.allocate() else { return Ok(()) };
        let prio: BTreeSet<&String> = case.req.user_allocations.iter().collect();
        // Priority peers form a prefix of the result.
        let n = a.peers.iter().take_while(|p| prio.contains(p)).count();
        prop_assert!(a.peers.iter().skip(n).all(|p| !prio.contains(p)), "{:?}", a.peers);
        // Every eligible priority peer is chosen before any other new peer.
        let new_other = a
            .peers
            .iter()
            .any(|p| !prio.contains(p) && !case.req.current.contains(p));
        if new_other {
            for p in &prio {
                prop_assert!(
                    !case.can_take_new(p) || a.peers.contains(p),
                    "{} skipped: {:?}", p, a.peers
                );
            }
        }
    }

    #[test]
    fn copies_spread_across_groups(case in gen_case()) {
        let mut case = case;
        case.req.current.clear();
        case.req.user_allocations.clear();
        case.req.allocate_tags.clear();
        let Ok(a) = case.allocate() else { return Ok(()) };
        let group = |id: &str| case.generated(id).and_then(|p| p.group);
        let mut used: BTreeMap<Option<u8>, usize> = BTreeMap::new();
        for p in &a.peers {
            *used.entry(group(p)).or_default() += 1;
        }
        let chosen: BTreeSet<&String> = a.peers.iter().collect();
        let mut left: BTreeMap<Option<u8>, usize> = BTreeMap::new();
        for p in case.members() {
            if case.can_take_new(&p) && !chosen.contains(&p) {
                *left.entry(group(&p)).or_default() += 1;
            }
        }
        // A group with unchosen peers never has two fewer copies than another.
        for (g, n) in &left {
            if *n == 0 {
                continue;
            }
            let mine = used.get(g).copied().unwrap_or(0);
            for (h, theirs) in &used {
                prop_assert!(
                    *theirs <= mine + 1,
                    "group {:?} has {} copies, {:?} only {} with peers left: {:?}",
                    h, theirs, g, mine, a.peers
                );
            }
        }
    }

    #[test]
    fn reallocation_reaches_a_fixed_point(case in gen_case()) {
        let m = case.metrics();
        let members = case.members();
        let Ok(Some(a)) = reallocate(&case.req, &m, &members, &case.config, GRACE) else {
            return Ok(());
        };
        let mut again = case.req.clone();
        again.current = a.peers;
        prop_assert_eq!(
            reallocate_needed(&again, &m, &members, &case.config, GRACE),
            Ok(Decision::Keep)
        );
        prop_assert_eq!(reallocate(&again, &m, &members, &case.config, GRACE), Ok(None));
    }
}

#[test]
fn peer_states_change_when_a_decision_could_and_not_with_metric_values() {
    let c = AllocatorConfig::default();
    let m = metrics(vec![
        peer("a", Some("eu"), 0, 100),
        peer("b", Some("us"), 5, 50),
    ]);
    let ids = members(&m);
    let states = |m: &PeerMetrics, at: i64| peer_states(m, &ids, &c, at, GRACE);
    let before = states(&m, NOW);
    let busier = metrics(vec![
        peer("a", Some("eu"), 40, 10),
        peer("b", Some("us"), 1, 900),
    ]);
    assert_eq!(states(&busier, NOW), before);
    let r = AllocationRequest {
        current: s(&["a"]),
        ..req(1, 1)
    };
    let decide = |m: &PeerMetrics| reallocate(&r, m, &ids, &c, GRACE).unwrap();
    assert_eq!(decide(&m), decide(&busier));
    // Quiet, then past grace; new tag; full disk; new member: all change.
    let mut quiet = m.clone();
    expire(&mut quiet, "b", NOW - 1);
    assert_ne!(states(&quiet, NOW), before);
    assert_ne!(states(&quiet, NOW + 2 * GRACE), states(&quiet, NOW));
    let retagged = metrics(vec![
        peer("a", Some("asia"), 0, 100),
        peer("b", Some("us"), 5, 50),
    ]);
    assert_ne!(states(&retagged, NOW), before);
    let mut full = m.clone();
    let mut disk = Metric::freespace("a", 0, LATER + 1);
    disk.valid = false;
    full.insert(disk);
    assert_ne!(states(&full, NOW), before);
    assert_ne!(
        peer_states(&m, &s(&["a", "b", "c"]), &c, NOW, GRACE),
        before
    );
}
