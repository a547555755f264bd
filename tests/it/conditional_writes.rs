//! Conditional, idempotent PinSet writes (DESIGN §9) on real in-process
//! peers: concurrent applies of one PinSet never interleave, and a retried
//! commit answers what its first attempt did. Bounded in rounds and time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pinfleet::consensus::ClusterError;
use pinfleet::manifest::{
    CidKey, DesiredPinSet, Owner, PinOptions, PinSetId, PinSpec, ReplicationFactors,
};
use pinfleet::pinsets::{self, PinSetApply};
use pinfleet::plan::PruneGuard;
use pinfleet::state::{Command, Op};

use crate::cluster::{Peer, cid, cluster, leader_index, pinset, wait_for};

const ROUNDS: u64 = 20;
const ROUND_DEADLINE: Duration = Duration::from_secs(30);

/// Round `round`'s manifest of writer `writer` (0 or 1): overlapping CID
/// ranges that move every round (so each apply adds, updates and
/// releases), with options and names of its own.
fn manifest(round: u64, writer: u64) -> DesiredPinSet {
    let start = round * 10 + writer * 30;
    let mut ps = pinset("race", start..start + 60);
    let options = Arc::new(PinOptions {
        replication: ReplicationFactors {
            min: 1 + writer as i32,
            max: 2 + writer as i32,
        },
        metadata: BTreeMap::from([("writer".to_string(), writer.to_string())]),
        ..PinOptions::default()
    });
    for (c, pin) in ps.pins.iter_mut() {
        pin.spec = PinSpec {
            name: format!("w{writer}-{c}"),
            options: Arc::clone(&options),
        };
    }
    ps
}

fn request(ps: DesiredPinSet, revision: String) -> PinSetApply {
    PinSetApply {
        pinset: ps,
        revision,
        source: "test".into(),
        guard: PruneGuard {
            max_fraction: 1.0,
            force: true,
        },
        dry_run: false,
    }
}

fn wanted(ps: &DesiredPinSet) -> BTreeMap<CidKey, PinSpec> {
    ps.pins.iter().map(|(c, p)| (*c, p.spec.clone())).collect()
}

fn applied_index(p: &Peer) -> Option<u64> {
    p.node.metrics().last_applied.map(|l| l.index)
}

/// Two applies of different manifests to one PinSet, at once, on the leader
/// and on a follower (forwarded), 20 times: after each round every peer
/// holds exactly one of the two manifests — pins, names and options — the
/// one whose apply answered Ok last; the other was refused as a conflict
/// (or, planned after the first committed, applied on top of it whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_applies_of_one_pinset_never_interleave() {
    let root = tempfile::tempdir().unwrap();
    // Small chunks: each apply is several log entries, so the two overlap.
    let peers = cluster(3, root.path(), 10).await;
    let owner = Owner::pinset(PinSetId::new("default", "race"));
    let mut conflicts = 0;
    for round in 0..ROUNDS {
        let leader = leader_index(&peers);
        let follower = (leader + 1) % peers.len();
        let (a, b) = (manifest(round, 0), manifest(round, 1));
        let (ra, rb) = (format!("r{round}-a"), format!("r{round}-b"));
        let (out_a, out_b) = tokio::time::timeout(ROUND_DEADLINE, async {
            tokio::join!(
                pinsets::apply(&peers[leader].node, request(a.clone(), ra.clone())),
                pinsets::apply(&peers[follower].node, request(b.clone(), rb.clone())),
            )
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: applies did not answer in time"));
        for out in [&out_a, &out_b] {
            match out {
                Ok(r) => assert_eq!(r.refused, None, "round {round}"),
                Err(ClusterError::Refused(m)) => {
                    assert!(
                        m.contains("pinset default/race changed since this apply was planned")
                            && m.ends_with("nothing applied; apply again"),
                        "round {round}: {m}"
                    );
                    conflicts += 1;
                }
                Err(e) => panic!("round {round}: unexpected error {e}"),
            }
        }
        assert!(
            out_a.is_ok() || out_b.is_ok(),
            "round {round}: one apply wins"
        );

        // Every peer has applied what the leader has.
        let target = applied_index(&peers[leader]);
        for p in &peers {
            wait_for("the round applied everywhere", || {
                applied_index(p) >= target
            })
            .await;
        }
        let record = peers[leader].node.store().pinset(&owner).unwrap().unwrap();
        let (winner, won) = if record.revision == ra {
            (&a, &out_a)
        } else {
            assert_eq!(record.revision, rb, "round {round}");
            (&b, &out_b)
        };
        assert!(
            won.is_ok(),
            "round {round}: the recorded revision answered Ok"
        );
        for (i, p) in peers.iter().enumerate() {
            let held = p.node.store().owned_by(&owner).unwrap();
            assert!(
                held == wanted(winner),
                "round {round}: peer {i} holds {} pins, not exactly revision {}",
                held.len(),
                record.revision
            );
            assert_eq!(
                p.node.store().pinset(&owner).unwrap().as_ref(),
                Some(&record)
            );
        }
    }
    eprintln!("{conflicts} conflicts refused in {ROUNDS} rounds");
    assert!(
        conflicts > 0,
        "the two applies never overlapped: the test did not race"
    );
    for p in peers {
        p.stop().await;
    }
}

/// A commit sent again after it was committed (its reply lost, or a new
/// leader asked again) answers the first outcome; so does a chunk staged
/// again after the commit, which is not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_commit_reports_the_first_outcome() {
    let root = tempfile::tempdir().unwrap();
    let peers = cluster(3, root.path(), 10_000).await;
    let follower = &peers[(leader_index(&peers) + 1) % peers.len()].node;
    let owner = Owner::pinset(PinSetId::new("default", "retried"));
    let spec = PinSpec {
        name: "x".into(),
        options: Arc::new(PinOptions::default()),
    };
    let set = |i: u64| Op::Set {
        cid: cid(i),
        written_as: None,
        spec: spec.clone(),
    };
    let stage = Command::Stage {
        owner: owner.clone(),
        revision: 41,
        seq: 0,
        ops: (0..5).map(set).collect(),
    };
    let commit = Command::Commit {
        owner: owner.clone(),
        revision: 41,
        base: Some(0),
        staged: 1,
        ops: (5..8).map(set).collect(),
        record: None,
    };
    follower.write(stage.clone()).await.unwrap();
    let first = follower.write(commit.clone()).await.unwrap();
    assert_eq!((first.created, first.refused.as_deref()), (8, None));

    // Sent again: the chunk, then the commit.
    assert_eq!(follower.write(stage).await.unwrap().staged, 5);
    let again = follower.write(commit).await.unwrap();
    assert_eq!(
        again, first,
        "the first outcome, not \"0 of 1 chunks staged\""
    );
    for p in &peers {
        wait_for("8 pins everywhere", || {
            p.node.store().owned_by(&owner).unwrap().len() == 8
        })
        .await;
        assert_eq!(p.node.store().generation(&owner).unwrap(), 1);
    }
    for p in peers {
        p.stop().await;
    }
}
