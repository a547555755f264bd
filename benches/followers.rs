//! Issue 17's scale benchmark: 3 trusted peers and N followers (default
//! 200) on 127.0.0.1, a state of P pins (default 100,000); how long until
//! every follower holds the whole state, the feed bytes each follower
//! received, who served them (trusted peers or other followers), and the
//! CPU the trusted peers spent.
//!
//! Everything runs in this process, on real libp2p connections over
//! loopback (private network, noise, yamux), with each peer's fsync'd redb
//! state: the 3 trusted peers on a tokio runtime of their own (threads
//! named `trusted`, so their CPU time is read from
//! `/proc/self/task/*/stat`), the followers on another. The trusted peers
//! snapshot every 5 log entries, so followers get the state as a signed
//! snapshot (from whoever holds it) and the entries after it.
//!
//! `cargo bench --bench followers`. Settings: `PINFLEET_FOLLOWBENCH_FOLLOWERS`
//! (N), `PINFLEET_FOLLOWBENCH_PINS` (P), `PINFLEET_FOLLOWBENCH_TIMEOUT_SECS`
//! (default 900). Speed is never asserted; a follower that does not end
//! with the leader's exact pin count and index fails the run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use pinfleet::consensus::{ClusterNode, NodeOptions};
use pinfleet::pinsets::{self, PinSetApply};
use pinfleet::plan::PruneGuard;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const SECRET: [u8; 32] = [17u8; 32];
const CLUSTER: &str = "bench";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) of this process's threads whose name starts
/// with `prefix`.
fn thread_cpu(prefix: &str) -> f64 {
    // Clock ticks per second: 100 on Linux for /proc's utime and stime.
    const TICKS: f64 = 100.0;
    let mut ticks = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // pid (comm) state … : comm may hold spaces; it ends at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with(prefix) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // After the comm: state is field 0; utime 11, stime 12.
        let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
        let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        ticks += utime + stime;
    }
    ticks as f64 / TICKS
}

fn addr_of(node: &ClusterNode) -> Multiaddr {
    let a: Multiaddr = node.node().addrs[0].parse().expect("p2p address");
    a.with(libp2p::multiaddr::Protocol::P2p(node.peer_id()))
}

/// A PinSet `bench/<name>` of `seq_cid(i)` for `i` in `range`.
fn apply(name: &str, range: std::ops::Range<u64>) -> PinSetApply {
    PinSetApply {
        pinset: pinfleet::testkit::seq_pinset("bench", name, range),
        revision: "r1".into(),
        source: "bench".into(),
        guard: PruneGuard::default(),
        dry_run: false,
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn main() {
    let followers = env("PINFLEET_FOLLOWBENCH_FOLLOWERS", 200) as usize;
    let pins = env("PINFLEET_FOLLOWBENCH_PINS", 100_000);
    let timeout = Duration::from_secs(env("PINFLEET_FOLLOWBENCH_TIMEOUT_SECS", 900));
    let root = tempfile::tempdir().expect("tempdir");
    let cancel = CancellationToken::new();

    let trusted_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("trusted")
        .enable_all()
        .build()
        .expect("trusted runtime");
    let follower_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("follower")
        .enable_all()
        .build()
        .expect("follower runtime");

    // The trusted peers: they name each other; snapshots every 5 entries.
    let keys: Vec<Keypair> = (0..3).map(|_| Keypair::generate_ed25519()).collect();
    let ids: Vec<PeerId> = keys.iter().map(|k| k.public().to_peer_id()).collect();
    let trusted_tasks = TaskTracker::new();
    let trusted: Vec<ClusterNode> = trusted_rt.block_on(async {
        let mut nodes: Vec<ClusterNode> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let mut o = NodeOptions::new(root.path().join(format!("t{i}")), key.clone(), SECRET);
            o.trusted = ids.clone();
            o.cluster_name = CLUSTER.into();
            o.snapshot_logs_since_last = 5;
            o.max_in_snapshot_log_to_keep = 2;
            o.write_timeout = Duration::from_secs(120);
            if let Some(first) = nodes.first() {
                o.bootstrap = vec![addr_of(first)];
            }
            let node = ClusterNode::start(o, cancel.clone(), &trusted_tasks)
                .await
                .expect("trusted peer");
            nodes.push(node);
        }
        for n in &nodes {
            n.wait_ready(Duration::from_secs(60)).await.expect("ready");
        }
        let leader = nodes
            .iter()
            .find(|n| n.is_leader())
            .expect("a leader")
            .clone();
        let t = Instant::now();
        pinsets::apply(&leader, apply("mirror", 0..pins))
            .await
            .expect("apply");
        println!(
            "state: {pins} pins written on 3 trusted peers in {:.2} s",
            t.elapsed().as_secs_f64()
        );
        // Enough entries after it that every trusted peer snapshots.
        for i in 0..6u64 {
            let extra = pins + i;
            pinsets::apply(&leader, apply(&format!("x{i}"), extra..extra + 1))
                .await
                .expect("apply");
        }
        nodes
    });
    let target_pins = pins + 6;
    let leader_index = |nodes: &[ClusterNode]| {
        nodes
            .iter()
            .filter_map(|n| n.store().last_applied().ok().flatten())
            .map(|l| l.index)
            .max()
            .unwrap_or(0)
    };
    let index = leader_index(&trusted);
    let via: Vec<Multiaddr> = trusted.iter().map(addr_of).collect();
    let cpu_before = thread_cpu("trusted");
    let served_before: u64 = trusted.iter().map(|n| n.feed_traffic().0).sum();

    // The followers, all at once, each told only the trusted peers.
    let follower_tasks = TaskTracker::new();
    let t = Instant::now();
    let fs: Vec<ClusterNode> = follower_rt.block_on(async {
        let mut out = Vec::with_capacity(followers);
        for i in 0..followers {
            let mut o = NodeOptions::new(
                root.path().join(format!("f{i}")),
                Keypair::generate_ed25519(),
                SECRET,
            );
            o.trusted = ids.clone();
            o.cluster_name = CLUSTER.into();
            o.bootstrap = via.clone();
            out.push(
                ClusterNode::start_follower(o, cancel.clone(), &follower_tasks)
                    .await
                    .expect("follower"),
            );
        }
        out
    });
    let started = t.elapsed();
    let fs = Arc::new(fs);
    let done = follower_rt.block_on(async {
        let deadline = Instant::now() + timeout;
        let mut last_report = Instant::now();
        loop {
            let caught_up = fs
                .iter()
                .filter(|f| {
                    f.store().pin_count().ok() == Some(target_pins)
                        && f.store().last_applied().ok().flatten().map(|l| l.index) >= Some(index)
                })
                .count();
            if caught_up == fs.len() {
                return true;
            }
            if Instant::now() > deadline {
                eprintln!("timed out: {caught_up} of {} followers caught up", fs.len());
                return false;
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!(
                    "  {:>5.1} s: {caught_up} of {} followers hold the whole state",
                    t.elapsed().as_secs_f64(),
                    fs.len()
                );
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let elapsed = t.elapsed();
    let cpu = thread_cpu("trusted") - cpu_before;
    let served_by_trusted: u64 =
        trusted.iter().map(|n| n.feed_traffic().0).sum::<u64>() - served_before;
    let served_by_followers: u64 = fs.iter().map(|f| f.feed_traffic().0).sum();
    let received: Vec<u64> = fs.iter().map(|f| f.feed_traffic().1).collect();
    let total_received: u64 = received.iter().sum();
    let max_received = received.iter().copied().max().unwrap_or(0);
    let snapshot_holders = fs.iter().filter(|f| f.feed_snapshot().is_some()).count();
    let refused: u64 = fs.iter().map(|f| f.feed_refused()).sum();

    println!(
        "{followers} followers, state of {target_pins} pins (index {index}), 3 trusted peers, one process, loopback"
    );
    println!(
        "  every follower holds the whole state after {:.2} s (starting the followers took {:.2} s of it)",
        elapsed.as_secs_f64(),
        started.as_secs_f64()
    );
    println!(
        "  feed bytes received per follower: {:.2} MiB mean, {:.2} MiB max; {snapshot_holders} installed a snapshot",
        mib(total_received / followers.max(1) as u64),
        mib(max_received)
    );
    println!(
        "  served by the trusted peers: {:.1} MiB ({:.1}%); by followers: {:.1} MiB ({:.1}%)",
        mib(served_by_trusted),
        100.0 * served_by_trusted as f64 / (served_by_trusted + served_by_followers).max(1) as f64,
        mib(served_by_followers),
        100.0 * served_by_followers as f64
            / (served_by_trusted + served_by_followers).max(1) as f64
    );
    println!(
        "  CPU of the 3 trusted peers meanwhile: {cpu:.2} s ({:.0}% of one core); followers' pieces refused: {refused}",
        100.0 * cpu / elapsed.as_secs_f64()
    );
    cancel.cancel();
    follower_tasks.close();
    trusted_tasks.close();
    follower_rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(30), follower_tasks.wait()).await;
    });
    trusted_rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(30), trusted_tasks.wait()).await;
    });
    if !done || refused > 0 {
        std::process::exit(1);
    }
}
