//! Ingest through consensus: three in-process peers on loopback, one PinSet
//! of N pins applied (chunked log entries, fsync'd redb), then a 1% change
//! and a no-op re-apply. Prints figures; asserts only correctness.
//!
//! `cargo bench --bench cluster_ingest` (PINFLEET_BENCH_PINS=N to resize).

use std::time::{Duration, Instant};

use pinfleet::manifest::DesiredPinSet;
use pinfleet::pinsets::{self, PinSetApply};
use pinfleet::plan::PruneGuard;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn pinset(range: std::ops::Range<u64>) -> DesiredPinSet {
    pinfleet::testkit::seq_pinset("bench", "mirror", range)
}

fn apply(ps: DesiredPinSet, rev: &str) -> PinSetApply {
    PinSetApply {
        pinset: ps,
        revision: rev.into(),
        source: "bench".into(),
        guard: PruneGuard::default(),
        dry_run: false,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: u64 = std::env::var("PINFLEET_BENCH_PINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let root = tempfile::tempdir().expect("tempdir");
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let nodes = pinfleet::testkit::start_cluster(3, root.path(), &cancel, &tasks, |opts| {
        opts.write_timeout = Duration::from_secs(120);
        opts.snapshot_logs_since_last = 100_000;
    })
    .await
    .expect("cluster");
    let leader = nodes
        .iter()
        .find(|x| x.leader() == Some(x.id()))
        .expect("leader")
        .clone();

    let desired = pinset(0..n);
    let t = Instant::now();
    let r = pinsets::apply(&leader, apply(desired, "r1"))
        .await
        .expect("apply");
    let ingest = t.elapsed();
    assert_eq!(r.add, n);
    println!(
        "apply {n} new pins on 3 peers: {:.2} s ({:.0} pins/s, {} log entries)",
        ingest.as_secs_f64(),
        n as f64 / ingest.as_secs_f64(),
        r.entries
    );
    let t = Instant::now();
    for node in &nodes {
        while node.store().pin_count().expect("count") != n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    println!(
        "  every peer applied it {:.2} s later",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let r = pinsets::apply(&leader, apply(pinset(0..n), "r1"))
        .await
        .expect("apply");
    assert_eq!(r.entries, 0);
    println!(
        "re-apply of the same revision (no-op): {:.2} s, 0 log entries",
        t.elapsed().as_secs_f64()
    );

    let shift = n / 100;
    let t = Instant::now();
    let r = pinsets::apply(&leader, apply(pinset(shift..n + shift), "r2"))
        .await
        .expect("apply");
    assert_eq!((r.add, r.release), (shift, shift));
    println!(
        "1% change ({shift} added, {shift} released): {:.2} s",
        t.elapsed().as_secs_f64()
    );

    cancel.cancel();
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), tasks.wait()).await;
}
