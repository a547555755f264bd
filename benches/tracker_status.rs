//! Pinning and status at scale, with mock Kubo nodes at zero latency.
//!
//! 1. 100,000 pins (replicate everywhere) applied to a 3-peer cluster:
//!    time until every peer's IPFS holds all of them → tracker ops/s.
//! 2. 1,000,000 pins in the state, all pinned on 3 peers: `GET /pins`
//!    (global status, fanned out over RPC) → time to first byte and total.
//! 3. A fresh 3-peer cluster whose pins never get pinned: on two peers the
//!    content never arrives (64 pins in flight, the rest queued), on the
//!    third IPFS is down (every pin fails and is retried). `GET /pins` and
//!    the PinSet's status (`GET /pinsets/bench/queued/status`) with
//!    100,000 and then 300,000 such pins: what status costs while the
//!    trackers hold that many operations.
//!
//! Prints figures; asserts only correctness. `cargo bench --bench
//! tracker_status` (PINFLEET_BENCH_PINS / PINFLEET_BENCH_STATUS_PINS resize
//! parts 1 and 2, PINFLEET_BENCH_QUEUED the sizes of part 3, e.g.
//! `100000,300000`; PINFLEET_BENCH_PARTS selects parts, e.g. `3`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use pinfleet::api::{ApiState, serve};
use pinfleet::ipfs::{KuboClient, PinKind};
use pinfleet::manifest::ReplicationFactors;
use pinfleet::pinsets::{self, PinSetApply};
use pinfleet::plan::PruneGuard;
use pinfleet::testkit::{MockKubo, seq_cid, seq_pinset};
use pinfleet::tracker::TrackerConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn list(name: &str, default: &str) -> Vec<u64> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let parts = list("PINFLEET_BENCH_PARTS", "1,2,3");
    if parts.contains(&1) || parts.contains(&2) {
        pinning_and_status().await;
    }
    if parts.contains(&3) {
        queued_status(&list("PINFLEET_BENCH_QUEUED", "100000,300000")).await;
    }
}

/// Reads an NDJSON stream to its end: (time to first byte since `t`,
/// lines, the last line).
async fn read_ndjson(t: Instant, resp: reqwest::Response) -> (Duration, u64, Vec<u8>) {
    let mut body = resp.bytes_stream();
    let mut first = None;
    let mut lines = 0u64;
    let mut last = Vec::new();
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("chunk");
        if first.is_none() {
            first = Some(t.elapsed());
        }
        rest.extend_from_slice(&chunk);
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            last = rest.drain(..=pos).collect();
            lines += 1;
        }
    }
    (first.unwrap_or_default(), lines, last)
}

/// Part 3: status while the trackers hold many queued or failing pins.
async fn queued_status(sizes: &[u64]) {
    let root = tempfile::tempdir().expect("tempdir");
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let nodes = pinfleet::testkit::start_cluster(3, root.path(), &cancel, &tasks, |opts| {
        opts.write_timeout = Duration::from_secs(300);
        opts.snapshot_logs_since_last = 1_000_000;
    })
    .await
    .expect("cluster");
    let mut kubos: Vec<MockKubo> = Vec::new();
    let mut status = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let (kubo, url) = MockKubo::start().await.expect("mock");
        kubo.set_heartbeat(Duration::from_secs(5));
        if i == 2 {
            kubo.set_down(true);
        }
        let backend = Arc::new(KuboClient::new(&url, Duration::from_secs(60)).expect("client"));
        let config = TrackerConfig {
            concurrency: 64,
            recheck_interval: Duration::from_secs(600),
            default_replication: ReplicationFactors { min: -1, max: -1 },
            ..TrackerConfig::default()
        };
        status.push(
            pinfleet::daemon::start_tracking(
                node,
                backend,
                config,
                format!("p{i}"),
                &cancel,
                &tasks,
            )
            .expect("tracker starts"),
        );
        kubos.push(kubo);
    }
    let leader = nodes
        .iter()
        .find(|x| x.leader() == Some(x.id()))
        .expect("leader")
        .clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut state = ApiState::new(nodes[0].clone(), "bench", "p0");
    state.status = Some(Arc::clone(&status[0]));
    let c = cancel.clone();
    tasks.spawn(async move {
        let _ = serve(listener, state, c).await;
    });
    let client = pinfleet::tls::client(None)
        .expect("http client")
        .build()
        .expect("http client");
    let mut from = 0;
    for &size in sizes {
        for k in &kubos[..2] {
            for i in from..size {
                k.never_arrives(seq_cid(i));
            }
        }
        from = size;
        let t = Instant::now();
        pinsets::apply(
            &leader,
            PinSetApply {
                pinset: seq_pinset("bench", "queued", 0..size),
                revision: format!("r{size}"),
                source: "bench".into(),
                guard: PruneGuard::default(),
                dry_run: false,
            },
        )
        .await
        .expect("apply");
        for node in &nodes {
            while node.store().pin_count().expect("count") != size {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Every pin has been tried (and failed) once on the peer whose
        // IPFS is down: its tracker holds an operation for each.
        while (kubos[2].count_calls("pin/add") as u64) < size {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "{size} pins queued on 2 peers, failing on 1 (state and first attempts: {:.1} s)",
            t.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        let resp = client
            .get(format!("http://{addr}/pins"))
            .send()
            .await
            .expect("get /pins");
        let (first, lines, last) = read_ndjson(t, resp).await;
        let total = t.elapsed();
        assert_eq!(lines, size);
        let v: serde_json::Value = serde_json::from_slice(&last).expect("json");
        let statuses: Vec<String> = v["peer_map"]
            .as_object()
            .map(|m| m.values().map(|p| p["status"].to_string()).collect())
            .unwrap_or_default();
        println!(
            "  GET /pins, {size} queued/failing pins × 3 peers: first byte {:.1} ms, total {:.2} s ({:.0} pins/s); last pin: {}",
            first.as_secs_f64() * 1000.0,
            total.as_secs_f64(),
            lines as f64 / total.as_secs_f64(),
            statuses.join(" ")
        );
        let t = Instant::now();
        let st: serde_json::Value = client
            .get(format!("http://{addr}/pinsets/bench/queued/status"))
            .send()
            .await
            .expect("pinset status")
            .json()
            .await
            .expect("status json");
        let took = t.elapsed();
        assert_eq!(st["summary"]["total"], size);
        println!(
            "  PinSet status, {size} queued/failing pins × 3 peers: {:.2} s; summary {}",
            took.as_secs_f64(),
            st["summary"]
        );
    }
    cancel.cancel();
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), tasks.wait()).await;
}

/// Parts 1 and 2.
async fn pinning_and_status() {
    let n = env("PINFLEET_BENCH_PINS", 100_000);
    let total_status = env("PINFLEET_BENCH_STATUS_PINS", 1_000_000);
    let root = tempfile::tempdir().expect("tempdir");
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let nodes = pinfleet::testkit::start_cluster(3, root.path(), &cancel, &tasks, |opts| {
        opts.write_timeout = Duration::from_secs(300);
        opts.snapshot_logs_since_last = 1_000_000;
    })
    .await
    .expect("cluster");
    let mut kubos: Vec<MockKubo> = Vec::new();
    let mut status = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let (kubo, url) = MockKubo::start().await.expect("mock");
        kubo.set_heartbeat(Duration::from_secs(5));
        let backend = Arc::new(KuboClient::new(&url, Duration::from_secs(60)).expect("client"));
        let config = TrackerConfig {
            concurrency: 64,
            // Three peers share two cores here; a periodic full re-check
            // (every 30 s by default) would compete with what is measured.
            // The state does not change while status is measured, so no
            // sync is due anyway.
            recheck_interval: Duration::from_secs(600),
            default_replication: ReplicationFactors { min: -1, max: -1 },
            ..TrackerConfig::default()
        };
        status.push(
            pinfleet::daemon::start_tracking(
                node,
                backend,
                config,
                format!("p{i}"),
                &cancel,
                &tasks,
            )
            .expect("tracker starts"),
        );
        kubos.push(kubo);
    }
    let leader = nodes
        .iter()
        .find(|x| x.leader() == Some(x.id()))
        .expect("leader")
        .clone();
    let apply = |range: std::ops::Range<u64>, name: &str| PinSetApply {
        pinset: seq_pinset("bench", name, range),
        revision: "r1".into(),
        source: "bench".into(),
        guard: PruneGuard::default(),
        dry_run: false,
    };

    // 1. Tracker throughput.
    let t = Instant::now();
    pinsets::apply(&leader, apply(0..n, "pinning"))
        .await
        .expect("apply");
    let committed = t.elapsed();
    loop {
        if kubos.iter().all(|k| k.pin_count() as u64 >= n) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = t.elapsed();
    let pin_time = all - committed;
    println!(
        "{n} pins × 3 peers pinned: {:.2} s after commit ({:.2} s to commit) → {:.0} tracker ops/s",
        pin_time.as_secs_f64(),
        committed.as_secs_f64(),
        (3 * n) as f64 / pin_time.as_secs_f64()
    );

    // 2. Global status of a large state. The extra pins are already on the
    //    mock nodes, so the trackers only have to notice.
    let extra = total_status.saturating_sub(n);
    for k in &kubos {
        k.add_pins((n..n + extra).map(|i| (seq_cid(i), PinKind::Recursive)));
    }
    let t = Instant::now();
    pinsets::apply(&leader, apply(n..n + extra, "status"))
        .await
        .expect("apply");
    println!(
        "  (state grown to {} pins in {:.1} s)",
        n + extra,
        t.elapsed().as_secs_f64()
    );
    for node in &nodes {
        while node.store().pin_count().expect("count") != n + extra {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut state = ApiState::new(nodes[0].clone(), "bench", "p0");
    state.status = Some(Arc::clone(&status[0]));
    let c = cancel.clone();
    tasks.spawn(async move {
        let _ = serve(listener, state, c).await;
    });
    // Let the trackers take in the new pins (they are already on IPFS):
    // the last pin reads as pinned on all three peers.
    let last = nodes[0]
        .store()
        .get(&seq_cid(n + extra - 1))
        .expect("get")
        .expect("pin");
    loop {
        let info = status[0]
            .global(std::slice::from_ref(&last))
            .await
            .expect("status");
        if info[0]
            .peer_map
            .values()
            .filter(|p| p.status == pinfleet::wire::TrackerStatus::Pinned)
            .count()
            == 3
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let client = pinfleet::tls::client(None)
        .expect("http client")
        .build()
        .expect("http client");
    let t = Instant::now();
    let resp = client
        .get(format!("http://{addr}/pins"))
        .send()
        .await
        .expect("get /pins");
    let mut body = resp.bytes_stream();
    let mut first = None;
    let mut lines = 0u64;
    let mut pinned_everywhere = 0u64;
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("chunk");
        if first.is_none() {
            first = Some(t.elapsed());
        }
        rest.extend_from_slice(&chunk);
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = rest.drain(..=pos).collect();
            lines += 1;
            if lines % 1000 == 1 {
                let v: serde_json::Value = serde_json::from_slice(&line).expect("json");
                let ok = v["peer_map"]
                    .as_object()
                    .is_some_and(|m| m.len() == 3 && m.values().all(|p| p["status"] == "pinned"));
                pinned_everywhere += u64::from(ok);
            }
        }
    }
    let total = t.elapsed();
    assert_eq!(lines, n + extra);
    println!(
        "GET /pins over {} pins on 3 peers: first byte {:.1} ms, total {:.2} s ({:.0} pins/s); sampled lines pinned on all 3: {}/{}",
        n + extra,
        first.unwrap_or_default().as_secs_f64() * 1000.0,
        total.as_secs_f64(),
        lines as f64 / total.as_secs_f64(),
        pinned_everywhere,
        lines.div_ceil(1000)
    );

    cancel.cancel();
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), tasks.wait()).await;
}
