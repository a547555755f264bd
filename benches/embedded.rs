//! Adding and replicating content between embedded IPFS nodes: three
//! in-process peers on 127.0.0.1 (consensus, embedded node, pin tracker,
//! informer and node peering each, wired as the daemon wires them).
//!
//! 1. 1,000 distinct 4 KiB files added on peer 0 (the backend's `add`, as
//!    `POST /add` does), each root pinned in the cluster with replication 3:
//!    time from the first add until every pin is on all 3 nodes → pins/s.
//! 2. One 256 MiB file (pseudo-random, streamed) added on peer 0 and pinned
//!    with replication 3: time until peers 1 and 2 hold it → MB/s, next to a
//!    plain loopback TCP copy of the same size in the same run.
//!
//! Prints figures; asserts only correctness. `cargo bench --bench embedded`
//! (PINFLEET_BENCH_FILES, PINFLEET_BENCH_FILE_KIB, PINFLEET_BENCH_MB resize;
//! PINFLEET_BENCH_ALLOC_CHECK_MS sets the leader's allocation check interval,
//! 5000 as in the daemon).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use pinfleet::allocator::informer::InformerConfig;
use pinfleet::consensus::ClusterNode;
use pinfleet::ipfs::embedded::{EmbeddedConfig, EmbeddedNode};
use pinfleet::ipfs::{AddInput, AddOpts, AddedContent, IpfsBackend, PinLsFilter};
use pinfleet::manifest::{CidKey, PinOptions, PinSpec, ReplicationFactors, written_as_of};
use pinfleet::tracker::TrackerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const SECRET: [u8; 32] = [9; 32];
const MIB: f64 = 1024.0 * 1024.0;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Deterministic pseudo-random bytes (xorshift64*), produced as read: a
/// large file is never held in memory.
struct Noise {
    state: u64,
    left: u64,
}

impl Noise {
    fn new(seed: u64, len: u64) -> Self {
        Self {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            left: len,
        }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl std::io::Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        for chunk in buf[..n].chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

struct Peer {
    node: ClusterNode,
    ipfs: EmbeddedNode,
}

fn spec(name: String) -> PinSpec {
    PinSpec {
        name,
        options: Arc::new(PinOptions {
            replication: ReplicationFactors { min: 3, max: 3 },
            ..PinOptions::default()
        }),
    }
}

/// Adds `len` bytes of noise on `peer` as `POST /add` does (import without
/// a local pin), then pins the root in the cluster. Returns the add and the
/// time the add and the cluster write took.
async fn add_and_pin(
    peer: &Peer,
    seed: u64,
    len: u64,
    name: String,
) -> (AddedContent, Duration, Duration) {
    let t = Instant::now();
    let added = peer
        .ipfs
        .add(
            AddInput::Reader(Box::new(Noise::new(seed, len))),
            AddOpts {
                pin: false,
                ..AddOpts::default()
            },
        )
        .await
        .expect("add");
    let add = t.elapsed();
    let t = Instant::now();
    let root_text = added
        .entries
        .last()
        .map_or_else(|| added.root.to_string(), |e| e.cid.to_string());
    let out = peer
        .node
        .pin(
            added.root,
            written_as_of(&added.root, &root_text),
            spec(name),
        )
        .await
        .expect("cluster pin");
    assert!(out.refused.is_none(), "{:?}", out.refused);
    (added, add, t.elapsed())
}

async fn recursive_pins(ipfs: &EmbeddedNode) -> HashSet<CidKey> {
    ipfs.pin_ls(PinLsFilter::Recursive)
        .map(|r| r.expect("pin ls").cid)
        .collect()
        .await
}

fn allocated(node: &ClusterNode, keys: &[CidKey]) -> bool {
    keys.iter().all(|k| {
        node.store()
            .get(k)
            .expect("state")
            .is_some_and(|p| p.allocations.len() == 3)
    })
}

/// Polls until every key in `keys` is allocated (in `node`'s state) and
/// pinned on the embedded nodes of `peers`; returns both instants.
async fn wait_pinned(node: &ClusterNode, peers: &[&Peer], keys: &[CidKey]) -> (Instant, Instant) {
    let mut allocated_at = None;
    loop {
        if allocated_at.is_none() && allocated(node, keys) {
            allocated_at = Some(Instant::now());
        }
        let mut all = true;
        for p in peers {
            let pins = recursive_pins(&p.ipfs).await;
            if !keys.iter().all(|k| pins.contains(k)) {
                all = false;
                break;
            }
        }
        if all {
            let now = Instant::now();
            return (allocated_at.unwrap_or(now), now);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every block of the DAG under `root`, read from `ipfs`'s own store.
async fn local_dag_blocks(ipfs: &EmbeddedNode, root: &CidKey) -> (u64, u64) {
    let (mut blocks, mut bytes) = (0u64, 0u64);
    let mut stack = vec![*root.cid()];
    while let Some(c) = stack.pop() {
        let data = ipfs
            .get_block(&c)
            .await
            .expect("get block")
            .unwrap_or_else(|| panic!("block {c} missing"));
        blocks += 1;
        bytes += data.len() as u64;
        stack.extend(pinfleet::ipfs::dagpb::links(&c, &data).expect("links"));
    }
    (blocks, bytes)
}

/// CPU time used by this process so far (user + system; Linux, 0 elsewhere).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command: utime and stime are the
    // 12th and 13th, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// Cores busy on average between two readings.
fn cores(cpu: Duration, wall: Duration) -> f64 {
    cpu.as_secs_f64() / wall.as_secs_f64()
}

/// A plain loopback TCP copy of `len` bytes in 256 KiB writes.
async fn loopback_copy(len: u64) -> Duration {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reader = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.expect("accept");
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0u64;
        loop {
            let n = sock.read(&mut buf).await.expect("read");
            if n == 0 {
                return total;
            }
            total += n as u64;
        }
    });
    let mut chunk = vec![0u8; 256 << 10];
    std::io::Read::read_exact(&mut Noise::new(1, chunk.len() as u64), &mut chunk).expect("noise");
    let t = Instant::now();
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut left = len;
    while left > 0 {
        let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        sock.write_all(&chunk[..n]).await.expect("write");
        left -= n as u64;
    }
    sock.shutdown().await.expect("shutdown");
    let got = reader.await.expect("reader");
    let elapsed = t.elapsed();
    assert_eq!(got, len);
    elapsed
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let files = env("PINFLEET_BENCH_FILES", 1_000);
    let file_len = env("PINFLEET_BENCH_FILE_KIB", 4) << 10;
    let big_len = env("PINFLEET_BENCH_MB", 256) << 20;
    let check = Duration::from_millis(env("PINFLEET_BENCH_ALLOC_CHECK_MS", 5_000));

    let root = tempfile::tempdir().expect("tempdir");
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let nodes = pinfleet::testkit::start_cluster(3, root.path(), &cancel, &tasks, |opts| {
        opts.write_timeout = Duration::from_secs(120);
    })
    .await
    .expect("cluster");
    let mut peers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let ipfs = EmbeddedNode::start(
            EmbeddedConfig::new(&root.path().join(format!("p{i}")), SECRET),
            cancel.clone(),
            &tasks,
        )
        .await
        .expect("embedded node");
        let backend: Arc<dyn IpfsBackend> = Arc::new(ipfs.clone());
        pinfleet::ipfs::rpc::serve(node, Arc::clone(&backend));
        pinfleet::ipfs::embedded::peering::spawn(
            node.clone(),
            ipfs.clone(),
            pinfleet::ipfs::embedded::peering::PeeringConfig::default(),
            cancel.clone(),
            &tasks,
        );
        // The daemon's tracker settings.
        let status = pinfleet::daemon::start_tracking(
            node,
            Arc::clone(&backend),
            TrackerConfig::default(),
            format!("p{i}"),
            &cancel,
            &tasks,
        )
        .expect("tracker starts");
        // The daemon's informer, except metrics every 2 s instead of 15 s
        // (only the warm-up waits for them).
        let mut informer = InformerConfig::new(ReplicationFactors { min: -1, max: -1 });
        informer.interval = Duration::from_secs(2);
        informer.check_interval = check;
        pinfleet::allocator::informer::spawn(
            node.clone(),
            backend,
            status.tracker().clone(),
            informer,
            cancel.clone(),
            &tasks,
        );
        peers.push(Peer {
            node: node.clone(),
            ipfs,
        });
    }
    let all: Vec<&Peer> = peers.iter().collect();

    // Warm-up (untimed): nodes connected, metrics heard, one pin through.
    let t = Instant::now();
    for p in &peers {
        while p.ipfs.connected_peers().await.len() < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (warm, _, _) = add_and_pin(&peers[0], u64::MAX, 1024, "warm-up".into()).await;
    wait_pinned(&peers[0].node, &all, &[warm.root]).await;
    println!(
        "warm-up: nodes connected, first replication-3 pin everywhere after {:.1} s (allocation check every {:.1} s)",
        t.elapsed().as_secs_f64(),
        check.as_secs_f64()
    );

    // 1. Many small files.
    let t = Instant::now();
    let (mut add_time, mut commit_time) = (Duration::ZERO, Duration::ZERO);
    let mut keys = Vec::new();
    for i in 0..files {
        let (added, a, c) = add_and_pin(&peers[0], i, file_len, format!("file-{i}")).await;
        assert_eq!(added.entries.last().map(|e| e.bytes), Some(file_len));
        add_time += a;
        commit_time += c;
        keys.push(added.root);
    }
    let submitted = t.elapsed();
    let (allocated_at, pinned_at) = wait_pinned(&peers[0].node, &all, &keys).await;
    let total = pinned_at - t;
    println!(
        "{files} files of {} KiB, replication 3: pinned on 3 peers in {:.2} s → {:.1} pins/s",
        file_len >> 10,
        total.as_secs_f64(),
        files as f64 / total.as_secs_f64()
    );
    println!(
        "  adds {:.2} s ({:.2} ms each) + cluster pin writes {:.2} s ({:.2} ms each); all allocated {:.2} s after the last write; all pinned {:.2} s after allocation",
        add_time.as_secs_f64(),
        add_time.as_secs_f64() * 1000.0 / files as f64,
        commit_time.as_secs_f64(),
        commit_time.as_secs_f64() * 1000.0 / files as f64,
        allocated_at
            .saturating_duration_since(t + submitted)
            .as_secs_f64(),
        pinned_at
            .saturating_duration_since(allocated_at)
            .as_secs_f64(),
    );
    for p in &peers {
        let pins = recursive_pins(&p.ipfs).await;
        assert!(keys.iter().all(|k| pins.contains(k)));
    }
    for k in keys.iter().step_by(97) {
        let block = peers[2].ipfs.get_block(k.cid()).await.expect("get");
        assert!(block.is_some_and(|b| b.len() as u64 > file_len));
    }

    // 2. One large file.
    let copy = loopback_copy(big_len).await;
    let copy_rate = big_len as f64 / MIB / copy.as_secs_f64();
    println!(
        "loopback TCP copy of {} MiB (256 KiB writes): {:.2} s → {:.0} MB/s",
        big_len >> 20,
        copy.as_secs_f64(),
        copy_rate
    );
    let t = Instant::now();
    let (big, add, commit) = add_and_pin(&peers[0], 42, big_len, "big".into()).await;
    assert_eq!(big.entries.last().map(|e| e.bytes), Some(big_len));
    let committed = Instant::now();
    let cpu0 = cpu_time();
    let (allocated_at, pinned_at) = wait_pinned(&peers[0].node, &all[1..], &[big.root]).await;
    let busy = cores(cpu_time() - cpu0, pinned_at - committed);
    let transfer = pinned_at.saturating_duration_since(allocated_at);
    let from_commit = pinned_at - committed;
    let rate = |d: Duration| big_len as f64 / MIB / d.as_secs_f64();
    println!(
        "{} MiB file ({} blocks), replication 3: add {:.2} s ({:.0} MB/s), cluster pin write {:.0} ms, allocated {:.2} s later",
        big_len >> 20,
        big.blocks,
        add.as_secs_f64(),
        rate(add),
        commit.as_secs_f64() * 1000.0,
        allocated_at
            .saturating_duration_since(committed)
            .as_secs_f64()
    );
    println!(
        "  pinned on peers 1 and 2: {:.2} s after allocation → {:.1} MB/s ({:.1}% of loopback TCP); {:.2} s after the pin write ({:.1} MB/s); {:.2} s from the first byte added; {:.2} of 2 cores busy from the pin write on",
        transfer.as_secs_f64(),
        rate(transfer),
        100.0 * rate(transfer) / copy_rate,
        from_commit.as_secs_f64(),
        rate(from_commit),
        (pinned_at - t).as_secs_f64(),
        busy
    );
    // Split: the same transfer without the cluster, one receiver: peer 1's
    // node pins a second file held by peer 0 only.
    let (solo, _, _) = {
        let t = Instant::now();
        let added = peers[0]
            .ipfs
            .add(
                AddInput::Reader(Box::new(Noise::new(43, big_len))),
                AddOpts {
                    pin: true,
                    ..AddOpts::default()
                },
            )
            .await
            .expect("add");
        (added, t.elapsed(), ())
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
    let watch = tokio::spawn(async move {
        let mut times = Vec::new();
        while rx.recv().await.is_some() {
            times.push(Instant::now());
        }
        times
    });
    let t = Instant::now();
    let cpu0 = cpu_time();
    peers[1]
        .ipfs
        .pin(solo.root, pinfleet::ipfs::PinOpts::default(), Some(tx))
        .await
        .expect("direct pin");
    let direct = t.elapsed();
    let busy = cores(cpu_time() - cpu0, direct);
    let times = watch.await.expect("progress");
    let mut gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    let pct = |q: f64| {
        gaps.get(((gaps.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "  split: peer 1's node pins another {} MiB file from peer 0 directly (no cluster): {:.2} s → {:.1} MB/s; first block after {:.0} ms; gaps between blocks p50 {:.1} ms, p99 {:.1} ms, max {:.0} ms ({} progress reports); {:.2} of 2 cores busy",
        big_len >> 20,
        direct.as_secs_f64(),
        rate(direct),
        times
            .first()
            .map_or(0.0, |f| (*f - t).as_secs_f64() * 1000.0),
        pct(0.5).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        gaps.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        times.len(),
        busy
    );

    for p in &peers {
        let (blocks, _) = local_dag_blocks(&p.ipfs, &big.root).await;
        assert_eq!(blocks, big.blocks, "every block of the big file is stored");
    }

    cancel.cancel();
    tasks.close();
    drop(peers);
    let _ = tokio::time::timeout(Duration::from_secs(10), tasks.wait()).await;
}
