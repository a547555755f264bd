//! Sharded adds (`POST /add?shard=true`, issue 18): three in-process peers
//! whose embedded nodes have a `storage_max`, the adder's API serving on
//! 127.0.0.1:0 with an informer view filled from the nodes' repo stats.
//! No tracker runs: what the peers' stores hold is exactly what the add
//! delivered.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cid::Cid;
use pinfleet::allocator::{Metric, PeerMetrics};
use pinfleet::api::ApiState;
use pinfleet::ipfs::IpfsBackend;
use pinfleet::ipfs::embedded::{EmbeddedConfig, EmbeddedNode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const MIB: u64 = 1 << 20;
const SECRET: [u8; 32] = [7; 32];

/// Pseudo-random bytes (incompressible, distinct blocks).
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The blocks `ipfs add` makes of `data` (default options), in import
/// order; the root last.
fn reference_import(data: &[u8]) -> (Cid, Vec<(Cid, Vec<u8>)>) {
    let mut blocks = Vec::new();
    let added = pinfleet::ipfs::unixfs::add_reader(
        std::io::Cursor::new(data),
        &pinfleet::ipfs::unixfs::AddOptions::default(),
        &mut |c: Cid, d: Vec<u8>| {
            blocks.push((c, d));
            Ok::<(), std::convert::Infallible>(())
        },
    )
    .unwrap();
    (added.cid, blocks)
}

/// Three cluster peers, each with an embedded node limited to
/// `storage_max` bytes, connected to each other and answering the IPFS id
/// RPC; peer 0 serves the API with `backend` (its embedded node unless
/// given).
struct ShardCluster {
    peers: Vec<crate::cluster::Peer>,
    nodes: Vec<EmbeddedNode>,
    metrics: Arc<Mutex<PeerMetrics>>,
    url: String,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl ShardCluster {
    async fn start(
        root: &Path,
        storage_max: u64,
        backend: Option<Arc<dyn IpfsBackend>>,
    ) -> ShardCluster {
        let peers = crate::cluster::cluster(3, root, 10_000).await;
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut nodes = Vec::new();
        for (i, p) in peers.iter().enumerate() {
            let mut config = EmbeddedConfig::new(&root.join(format!("ipfs-{i}")), SECRET);
            config.storage_max = Some(storage_max);
            let node = EmbeddedNode::start(config, cancel.clone(), &tasks)
                .await
                .unwrap();
            pinfleet::ipfs::rpc::serve(&p.node, Arc::new(node.clone()));
            nodes.push(node);
        }
        for i in 0..nodes.len() {
            for j in (i + 1)..nodes.len() {
                let addr = nodes[j].listen_addrs().await.remove(0);
                nodes[i].connect(addr).await.unwrap();
            }
        }
        let metrics = Arc::new(Mutex::new(PeerMetrics::new()));
        let mut state = ApiState::new(peers[0].node.clone(), "0.0.0-it", "p0");
        state.ipfs = Some(backend.unwrap_or_else(|| Arc::new(nodes[0].clone())));
        state.monitor = Some(Arc::clone(&metrics));
        state.upload_dir = root.join("uploads");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tasks.spawn(pinfleet::api::serve(listener, state, cancel.clone()));
        let c = ShardCluster {
            peers,
            nodes,
            metrics,
            url,
            cancel,
            tasks,
        };
        c.report_free_space().await;
        c
    }

    /// What each peer's informer would publish: `storage_max - used`.
    async fn report_free_space(&self) {
        let expire = chrono::Utc::now().timestamp_millis() + 600_000;
        for (p, n) in self.peers.iter().zip(&self.nodes) {
            let stat = n.repo_stat().await.unwrap();
            let free = stat.storage_max.unwrap().saturating_sub(stat.repo_size);
            self.metrics.lock().unwrap().insert(Metric::freespace(
                p.node.peer_id().to_string(),
                free,
                expire,
            ));
        }
    }

    fn index_of(&self, peer: &str) -> usize {
        self.peers
            .iter()
            .position(|p| p.node.peer_id().to_string() == peer)
            .unwrap_or_else(|| panic!("{peer} is not a peer"))
    }

    async fn add(&self, query: &str, data: Vec<u8>) -> reqwest::Response {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(data).file_name("big.bin"),
        );
        crate::support::http()
            .post(format!("{}/add?{query}", self.url))
            .multipart(form)
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .unwrap()
    }

    async fn pin(&self, cid: &str) -> Option<Value> {
        let resp = crate::support::http()
            .get(format!("{}/allocations/{cid}", self.url))
            .send()
            .await
            .unwrap();
        resp.status()
            .is_success()
            .then_some(resp.json::<Value>().await.unwrap())
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        for p in self.peers {
            p.stop().await;
        }
    }
}

/// Sends only the head of a sharded add declaring a `len`-byte body and
/// returns the answer (the refusal comes before any body is read).
async fn declared_upload(url: &str, query: &str, len: u64) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /add?shard=true&shard-size=1048576&{query} HTTP/1.1\r\nHost: localhost\r\n\
         Content-Length: {len}\r\nContent-Type: multipart/form-data; boundary=b0undary\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        // Until the JSON error body is complete.
        while !String::from_utf8_lossy(&answer).trim_end().ends_with('}') {
            let n = conn.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("an answer before the body");
    String::from_utf8_lossy(&answer).into_owned()
}

async fn repo_size(node: &EmbeddedNode) -> u64 {
    node.repo_stat().await.unwrap().repo_size
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_add_spreads_its_blocks_over_the_peers_and_writes_ipfs_clusters_pins() {
    let dir = tempfile::tempdir().unwrap();
    let c = ShardCluster::start(dir.path(), 24 * MIB, None).await;
    let data = random_bytes(40 * MIB as usize, 18);
    let (root, blocks) = reference_import(&data);
    let size = |b: &[(Cid, Vec<u8>)]| b.iter().map(|(_, d)| d.len() as u64).sum::<u64>();
    let adder_before = repo_size(&c.nodes[0]).await;

    let resp = c
        .add(
            "shard=true&shard-size=4194304&replication-min=1&replication-max=1&name=big",
            data,
        )
        .await;
    assert!(resp.status().is_success(), "{}", resp.status());
    let text = resp.text().await.unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(
        last["cid"],
        root.to_string(),
        "the same root as an unsharded import: {text}"
    );

    // The meta pin: the content root, referencing the cluster DAG.
    let meta = c.pin(&root.to_string()).await.expect("the meta pin");
    assert_eq!(meta["type"], "meta-pin");
    assert_eq!(meta["name"], "big");
    assert_eq!(meta["shard_size"], 4_194_304);
    assert_eq!(meta["max_depth"], 0);
    let dag_cid = meta["reference"].as_str().expect("a reference").to_string();
    let dag = c.pin(&dag_cid).await.expect("the cluster dag pin");
    assert_eq!(dag["type"], "clusterdag-pin");
    assert_eq!(dag["name"], "big-clusterDAG");
    assert_eq!(dag["reference"], root.to_string());
    assert_eq!(dag["mode"], "direct");
    assert_eq!(dag["replication_factor_min"], -1);
    assert_eq!(dag["max_depth"], 0);

    // The cluster DAG node is stored on the adder and links every shard.
    let dag_key: Cid = dag_cid.parse().unwrap();
    let dag_block = c.nodes[0].get_block(&dag_key).await.unwrap().unwrap();
    let shards = pinfleet::ipfs::dagcbor::links(&dag_block).unwrap();
    // 160 leaves of 256 KiB (and a few bytes of dag-pb) in shards of at
    // most 4 MiB: 15 leaves a shard, the root node in the last.
    assert!((10..=11).contains(&shards.len()), "{} shards", shards.len());

    // Every shard: IPFS Cluster's JSON, its blocks on its one peer, and
    // together every block of the content once, in import order.
    let mut previous: Option<String> = None;
    let mut grouped: Vec<Cid> = Vec::new();
    let mut per_peer: BTreeMap<usize, u64> = BTreeMap::new();
    for (n, s) in shards.iter().enumerate() {
        let pin = c.pin(&s.to_string()).await.expect("a shard pin");
        assert_eq!(pin["type"], "shard-pin");
        assert_eq!(pin["name"], format!("big-shard-{n}"));
        assert_eq!(pin["max_depth"], 1);
        assert_eq!(pin["replication_factor_min"], 1);
        assert_eq!(pin["replication_factor_max"], 1);
        match &previous {
            None => assert!(pin["reference"].is_null(), "{pin}"),
            Some(p) => assert_eq!(pin["reference"], p.as_str()),
        }
        previous = Some(s.to_string());
        let owners = pin["user_allocations"].as_array().expect("its peers");
        assert_eq!(owners.len(), 1, "{pin}");
        let holder = c.index_of(owners[0].as_str().unwrap());
        let node = &c.nodes[holder];
        let shard_block = node.get_block(s).await.unwrap().expect("the shard node");
        let links = pinfleet::ipfs::dagcbor::links(&shard_block).unwrap();
        let mut bytes = 0u64;
        for l in &links {
            let held = node.get_block(l).await.unwrap();
            bytes += held.as_ref().map_or(0, |d| d.len() as u64);
            assert!(
                held.is_some(),
                "block {l} of shard {n} is not on peer {holder}"
            );
        }
        assert_eq!(pin["shard_size"], bytes, "shard {n}");
        assert!(bytes <= 4_194_304, "shard {n} holds {bytes} bytes");
        *per_peer.entry(holder).or_insert(0) += bytes;
        grouped.extend(links);
    }
    let expected: Vec<Cid> = blocks.iter().map(|(c, _)| *c).collect();
    assert_eq!(grouped, expected, "every block once, in import order");
    // Shards went by free space: nobody took more than its 24 MiB, the
    // content went to more than one peer, and the adder holds only its
    // shards (plus the tiny cluster DAG), never the whole content.
    assert!(per_peer.len() >= 2, "{per_peer:?}");
    let adder_grew = repo_size(&c.nodes[0]).await - adder_before;
    assert!(
        adder_grew < size(&blocks) / 2,
        "the adder stored {adder_grew} of {} bytes",
        size(&blocks)
    );
    for (i, n) in c.nodes.iter().enumerate() {
        assert!(
            repo_size(n).await <= 24 * MIB,
            "peer {i} is past its storage_max"
        );
        assert_eq!(n.pushed_blocks_refused_full(), 0);
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_add_larger_than_the_clusters_free_space_is_refused_before_import() {
    let dir = tempfile::tempdir().unwrap();
    let c = ShardCluster::start(dir.path(), 4 * MIB, None).await;
    // 13 MiB declared, 12 MiB free: refused from the request's head.
    let answer = declared_upload(&c.url, "replication-min=1&replication-max=1", 13 * MIB).await;
    assert!(answer.starts_with("HTTP/1.1 507"), "{answer}");
    assert!(
        answer.contains("larger than the cluster's free space (12582912 bytes)")
            && answer.contains(&(13 * MIB).to_string()),
        "{answer}"
    );
    assert_eq!(
        crate::support::http()
            .get(format!("{}/allocations?filter=all", c.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .trim(),
        "",
        "nothing written"
    );
    for n in &c.nodes {
        assert_eq!(repo_size(n).await, 0, "nothing imported");
    }

    // Replication min 2 doubles what is needed: 7 MiB fits once, not twice.
    let answer = declared_upload(&c.url, "replication-min=2&replication-max=2", 7 * MIB).await;
    assert!(answer.starts_with("HTTP/1.1 507"), "{answer}");

    // Every-peer replication cannot shard.
    let resp = c
        .add(
            "shard=true&replication-min=-1&replication-max=-1",
            vec![1; 10],
        )
        .await;
    assert_eq!(resp.status(), reqwest::StatusCode::BAD_REQUEST);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_fits_nowhere_fails_the_add_and_writes_no_pin() {
    let dir = tempfile::tempdir().unwrap();
    let c = ShardCluster::start(dir.path(), 4 * MIB, None).await;
    // 3 MiB fits the cluster (6 MiB free by the metrics), but no peer has
    // room for its one shard: each reports 2 MiB (a later expiry than the
    // first report's, so that this reading replaces it).
    let expire = chrono::Utc::now().timestamp_millis() + 900_000;
    for p in &c.peers {
        c.metrics.lock().unwrap().insert(Metric::freespace(
            p.node.peer_id().to_string(),
            2 * MIB,
            expire,
        ));
    }
    let data = random_bytes(3 * MIB as usize, 4);
    let resp = c
        .add(
            "shard=true&shard-size=8388608&replication-min=1&replication-max=1",
            data.clone(),
        )
        .await;
    // It fails at its first block, before any line of the answer.
    assert_eq!(resp.status(), reqwest::StatusCode::INSUFFICIENT_STORAGE);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("cannot allocate shard 0 of this add: no 1 peer(s) have room for a shard of"),
        "{body}"
    );
    let (root, _) = reference_import(&data);
    assert!(c.pin(&root.to_string()).await.is_none(), "no meta pin");
    let all = crate::support::http()
        .get(format!("{}/allocations?filter=all", c.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(all.trim(), "", "nothing in the state: {all}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubo_backed_adder_refuses_sharded_adds() {
    let dir = tempfile::tempdir().unwrap();
    // Never contacted: the add is refused before anything is read.
    let kubo: Arc<dyn IpfsBackend> = Arc::new(
        pinfleet::ipfs::KuboClient::with_ca("http://127.0.0.1:9", Duration::from_secs(5), None)
            .unwrap(),
    );
    let c = ShardCluster::start(dir.path(), 24 * MIB, Some(kubo)).await;
    let resp = c
        .add(
            "shard=true&replication-min=1&replication-max=1",
            vec![1; 100],
        )
        .await;
    assert_eq!(resp.status(), reqwest::StatusCode::BAD_REQUEST);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("sharded adds need the embedded IPFS node on the adding peer"),
        "{body}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_push_confirms_every_block_or_fails_when_the_receiver_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let start = |name: &str, max: Option<u64>| {
        let mut config = EmbeddedConfig::new(&dir.path().join(name), SECRET);
        config.storage_max = max;
        EmbeddedNode::start(config, cancel.clone(), &tasks)
    };
    let a = start("a", None).await.unwrap();
    let roomy = start("b", Some(64 * MIB)).await.unwrap();
    let small = start("c", Some(MIB)).await.unwrap();
    for n in [&roomy, &small] {
        a.connect(n.listen_addrs().await.remove(0)).await.unwrap();
    }
    let (_, blocks) = reference_import(&random_bytes(6 * MIB as usize, 9));
    let send = |to: &EmbeddedNode| {
        let session = a.acked_session(vec![to.peer_id()]);
        let blocks = blocks.clone();
        tokio::task::spawn_blocking(move || {
            let mut session = session;
            for (c, d) in &blocks {
                session.send(c, d)?;
            }
            session.finish()
        })
    };
    // Confirmed: every block is on b, before anything pinned it.
    send(&roomy).await.unwrap().unwrap();
    for (c, d) in &blocks {
        assert_eq!(roomy.get_block(c).await.unwrap().as_ref(), Some(d));
    }
    assert_eq!(a.push_frames_dropped(), 0);
    // c refuses what passes its 1 MiB: the sender learns why.
    let e = send(&small).await.unwrap().unwrap_err().to_string();
    assert!(e.contains("storage_max"), "{e}");
    assert!(small.pushed_blocks_refused_full() > 0);
    assert!(repo_size(&small).await <= MIB);
    assert!(repo_size(&roomy).await > 6 * MIB);
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinfleet_add_shard_sends_ipfs_clusters_sharding_query() {
    let dir = tempfile::tempdir().unwrap();
    let c = ShardCluster::start(dir.path(), 24 * MIB, None).await;
    let file = dir.path().join("three.bin");
    let data = random_bytes(3 * MIB as usize, 5);
    std::fs::write(&file, &data).unwrap();
    let (root, _) = reference_import(&data);
    let args: Vec<String> = [
        "add",
        "--shard",
        "--shard-size",
        "1MiB",
        "--replication-min",
        "1",
        "--replication-max",
        "1",
        "--quiet",
        "--host",
        &c.url,
        file.to_str().unwrap(),
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pinfleet"))
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        root.to_string()
    );
    let meta = c.pin(&root.to_string()).await.expect("the meta pin");
    assert_eq!(meta["type"], "meta-pin");
    assert_eq!(meta["name"], "three.bin");
    assert_eq!(meta["shard_size"], 1 << 20);
    // 3 MiB in shards of at most 1 MiB: four leaves of 256 KiB need a few
    // bytes more than 1 MiB, so three a shard; the small root node fits
    // in the last: four shards.
    let dag: Cid = meta["reference"].as_str().unwrap().parse().unwrap();
    let block = c.nodes[0].get_block(&dag).await.unwrap().unwrap();
    assert_eq!(pinfleet::ipfs::dagcbor::links(&block).unwrap().len(), 4);
    c.stop().await;
}
