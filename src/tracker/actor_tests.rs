//! The actor against a real state store and a mock Kubo: between full
//! comparisons it follows the state's change feed (no listing of the node),
//! and when the feed no longer reaches back to its position (a snapshot was
//! installed) it compares everything once, the state read in pages of
//! two pins (`jobs::STATE_PAGE` in unit tests).

use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, LogId};

use super::*;
use crate::ipfs::KuboClient;
use crate::manifest::{Owner, PinOptions, PinSetId, PinSpec};
use crate::state::{Command, Op, Request};
use crate::testkit::{MockKubo, seq_cid};

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

fn entry(index: u64, ops: Vec<Op>) -> openraft::Entry<crate::consensus::TypeConfig> {
    openraft::Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request {
            now_ms: 1,
            command: Command::Apply {
                owner: Owner::pinset(PinSetId::new("ns", "feed")),
                ops,
            },
        }),
    }
}

/// Waits (30 s at most) until `check` holds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_followed_by_the_feed_and_a_truncated_feed_means_a_full_comparison() {
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| {
        StateStore::open(
            &dir.path().join(format!("{name}.redb")),
            &dir.path().join(name),
        )
        .unwrap()
    };
    let mut store = open("b");
    let (kubo, url) = MockKubo::start().await.unwrap();
    let backend = Arc::new(KuboClient::new(&url, Duration::from_secs(5)).unwrap());
    let config = TrackerConfig {
        // Only the first full comparison, unless the feed is truncated.
        recheck_interval: Duration::from_secs(3600),
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        ..TrackerConfig::default()
    };
    let (applied, applied_rx) = watch::channel(0u64);
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let _tracker = spawn(
        "me".into(),
        store.clone(),
        backend,
        config,
        applied_rx,
        cancel.clone(),
        &tasks,
    )
    .unwrap();
    let listings = || kubo.count_calls("pin/ls");
    until("the first full comparison listed the node", || {
        listings() == 2
    })
    .await;

    // Pins added and released reach the node through the feed alone.
    store
        .apply(vec![entry(1, (0..3).map(set).collect())])
        .await
        .unwrap();
    applied.send_replace(1);
    until("pins 0..3 pinned", || {
        (0..3).all(|i| kubo.pinned(seq_cid(i)).is_some())
    })
    .await;
    store
        .apply(vec![entry(2, vec![Op::Release { cid: seq_cid(0) }])])
        .await
        .unwrap();
    applied.send_replace(2);
    until("pin 0 unpinned", || kubo.pinned(seq_cid(0)).is_none()).await;
    assert_eq!(listings(), 2, "no other full comparison");

    // Another state installed as a snapshot resets the feed: everything is
    // compared once — its pins pinned, the ones it lacks unpinned.
    let mut other = open("a");
    other
        .apply(vec![entry(5, (10..15).map(set).collect())])
        .await
        .unwrap();
    let snapshot = other.build_snapshot().await.unwrap();
    let mut from = snapshot.snapshot;
    let mut into = store.begin_receiving_snapshot().await.unwrap();
    tokio::io::copy(&mut from, &mut *into).await.unwrap();
    store.install_snapshot(&snapshot.meta, into).await.unwrap();
    applied.send_replace(5);
    until("the snapshot's pins pinned and the others unpinned", || {
        (10..15).all(|i| kubo.pinned(seq_cid(i)).is_some())
            && (0..3).all(|i| kubo.pinned(seq_cid(i)).is_none())
    })
    .await;
    assert_eq!(listings(), 4, "one full comparison after the truncation");
    assert_eq!(kubo.pin_count(), 5);

    cancel.cancel();
    tasks.close();
    tasks.wait().await;
}

/// A peer without an IPFS node keeps no operation per pin: while a peer
/// whose node is unreachable has tried every pin, its pin queue is empty
/// and each pin reports `pin_error` with the reason, never an attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_ipfs_queues_nothing_and_reports_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(&dir.path().join("s.redb"), &dir.path().join("s")).unwrap();
    let (applied, applied_rx) = watch::channel(0u64);
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let start = |backend: Arc<dyn IpfsBackend>| {
        spawn(
            "me".into(),
            store.clone(),
            backend,
            TrackerConfig::default(),
            applied_rx.clone(),
            cancel.clone(),
            &tasks,
        )
        .unwrap()
    };
    let none = start(Arc::new(crate::ipfs::NoBackend));
    // Port 1 on loopback: refused at once.
    let dead = KuboClient::new("http://127.0.0.1:1", Duration::from_secs(1)).unwrap();
    let control = start(Arc::new(dead));
    store
        .apply(vec![entry(1, (0..50).map(set).collect())])
        .await
        .unwrap();
    applied.send_replace(1);
    let queries: Vec<StatusQuery> = (0..50)
        .map(|i| StatusQuery {
            cid: seq_cid(i),
            here: true,
            expired: false,
            gone: false,
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let tried = control.statuses(queries.clone()).await.unwrap();
        if tried.iter().all(|s| s.attempt_count >= 1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "control never tried"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(none.view().await.unwrap().pin_queue(), 0);
    let statuses = none.statuses(queries).await.unwrap();
    for s in statuses {
        assert_eq!(s.status, TrackerStatus::PinError);
        assert_eq!(s.attempt_count, 0);
        assert!(s.error.contains("no ipfs backend"), "{}", s.error);
    }
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
}
