//! The embedded IPFS node: in-process nodes on 127.0.0.1 exchanging blocks
//! over Bitswap, pins, gc, restarts, stalls and corrupt peers; and a
//! three-peer cluster whose daemons run embedded nodes.

use std::time::Duration;

use pinfleet::ipfs::embedded::{EmbeddedConfig, EmbeddedNode};
use pinfleet::ipfs::{IpfsBackend, IpfsError, PinKind, PinLsFilter, PinOpts};
use pinfleet::manifest::CidKey;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::support::test_dag;

const SECRET: [u8; 32] = [7; 32];
const DEADLINE: Duration = Duration::from_secs(30);

use crate::support::InProcessNode as Running;

impl Running {
    async fn start(dir: &std::path::Path) -> Running {
        Running::start_with(EmbeddedConfig::new(dir, SECRET)).await
    }

    async fn connect_to(&self, other: &Running) {
        let addr = other.node.listen_addrs().await.remove(0);
        self.node.connect(addr).await.unwrap();
    }

    async fn add(&self, blocks: &[(cid::Cid, Vec<u8>)], root: cid::Cid) {
        self.store(blocks, root, true).await;
    }

    /// Stores `blocks` through `import`, pinning `root` when `pin`.
    async fn store(&self, blocks: &[(cid::Cid, Vec<u8>)], root: cid::Cid, pin: bool) {
        let blocks = blocks.to_vec();
        let added = self
            .node
            .import(pin, move |sink| {
                for (c, d) in blocks {
                    sink(c, d)?;
                }
                Ok(root)
            })
            .await
            .unwrap();
        assert_eq!(*added.root.cid(), root.into_v1().unwrap());
    }
}

fn key(c: &cid::Cid) -> CidKey {
    CidKey::from_cid(*c).unwrap()
}

fn opts(timeout: Duration) -> PinOpts {
    PinOpts {
        recursive: true,
        max_depth: None,
        progress_timeout: timeout,
        origins: Vec::new(),
    }
}

async fn recursive_pins(node: &EmbeddedNode) -> Vec<CidKey> {
    use futures::StreamExt;
    node.pin_ls(PinLsFilter::Recursive)
        .map(|r| r.unwrap().cid)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dag_added_on_one_node_is_fetched_and_pinned_by_two_others() {
    let dir = tempfile::tempdir().unwrap();
    let a = Running::start(&dir.path().join("a")).await;
    let b = Running::start(&dir.path().join("b")).await;
    let c = Running::start(&dir.path().join("c")).await;
    b.connect_to(&a).await;
    c.connect_to(&b).await; // c reaches a's blocks only through b's pin or a later dial
    c.connect_to(&a).await;
    let (root, blocks) = test_dag("spread", 4);
    assert_eq!(blocks.len(), 21);
    a.add(&blocks, root).await;

    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let (rb, rc) = tokio::join!(
        b.node.pin(key(&root), opts(DEADLINE), Some(tx)),
        c.node.pin(key(&root), opts(DEADLINE), None),
    );
    rb.unwrap();
    rc.unwrap();
    let mut last = 0;
    while let Ok(n) = rx.try_recv() {
        assert!(n > last, "progress is cumulative");
        last = n;
    }
    assert_eq!(last, 21, "every block counted once");

    for node in [&b.node, &c.node] {
        for (cid, data) in &blocks {
            assert_eq!(node.get_block(cid).await.unwrap().as_ref(), Some(data));
            assert_eq!(node.block_stat(key(cid)).await.unwrap(), data.len() as u64);
        }
        assert_eq!(recursive_pins(node).await, vec![key(&root)]);
        let stat = node.repo_stat().await.unwrap();
        assert_eq!(stat.num_objects, Some(21));
        let bytes: usize = blocks.iter().map(|(_, d)| d.len()).sum();
        assert_eq!(stat.repo_size, bytes as u64);
    }
    // A fourth node connected to all three holders gets each block once:
    // one peer is asked for the block, the others only whether they have it.
    let d = Running::start(&dir.path().join("d")).await;
    for holder in [&a, &b, &c] {
        d.connect_to(holder).await;
    }
    d.node.pin(key(&root), opts(DEADLINE), None).await.unwrap();
    assert!(
        d.node.rejected_blocks() <= 3,
        "{} duplicate blocks",
        d.node.rejected_blocks()
    );
    d.stop().await;

    let id = b.node.id().await.unwrap();
    assert_eq!(id.id, b.node.peer_id().to_string());
    assert!(id.agent_version.starts_with("pinfleet-embedded/"));
    assert!(id.addresses[0].starts_with("/ip4/127.0.0.1/tcp/"));
    for r in [a, b, c] {
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dag_split_across_two_peers_is_fetched_from_both() {
    let dir = tempfile::tempdir().unwrap();
    let a = Running::start(&dir.path().join("a")).await;
    let b = Running::start(&dir.path().join("b")).await;
    let c = Running::start(&dir.path().join("c")).await;
    let (root, blocks) = test_dag("split", 4);
    // Each holder has the root and every other block: neither has all.
    for (holder, parity) in [(&a, 0), (&b, 1)] {
        let part: Vec<_> = blocks
            .iter()
            .enumerate()
            .filter(|(i, (c, _))| i % 2 == parity || *c == root)
            .map(|(_, b)| b.clone())
            .collect();
        holder.store(&part, root, false).await;
    }
    c.connect_to(&a).await;
    c.connect_to(&b).await;
    c.node.pin(key(&root), opts(DEADLINE), None).await.unwrap();
    for (cid, data) in &blocks {
        assert_eq!(c.node.get_block(cid).await.unwrap().as_ref(), Some(data));
    }
    assert_eq!(recursive_pins(&c.node).await, vec![key(&root)]);
    assert!(
        c.node.rejected_blocks() <= 3,
        "{} duplicate blocks",
        c.node.rejected_blocks()
    );
    for r in [a, b, c] {
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_pin_fetches_the_root_block_only() {
    let dir = tempfile::tempdir().unwrap();
    let a = Running::start(&dir.path().join("a")).await;
    let b = Running::start(&dir.path().join("b")).await;
    b.connect_to(&a).await;
    let (root, blocks) = test_dag("direct", 2);
    a.add(&blocks, root).await;
    let direct = PinOpts {
        recursive: false,
        max_depth: None,
        ..opts(DEADLINE)
    };
    b.node.pin(key(&root), direct, None).await.unwrap();
    assert!(b.node.get_block(&root).await.unwrap().is_some());
    let leaf = blocks.last().unwrap().0;
    assert!(matches!(
        b.node.block_stat(key(&leaf)).await,
        Err(IpfsError::NotFound { .. })
    ));
    use futures::StreamExt;
    let pins: Vec<_> = b
        .node
        .pin_ls(PinLsFilter::All)
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(pins.len(), 1);
    assert_eq!(pins[0].kind, PinKind::Direct);
    // A direct unpin removes it; unpinning again says so.
    b.node.unpin(key(&root), false).await.unwrap();
    assert!(matches!(
        b.node.unpin(key(&root), false).await,
        Err(IpfsError::NotPinned { .. })
    ));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpinned_blocks_are_removed_by_gc_and_pinned_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let a = Running::start(&dir.path().join("a")).await;
    let (gone, gone_blocks) = test_dag("gone", 3);
    let (kept, kept_blocks) = test_dag("kept", 2);
    a.add(&gone_blocks, gone).await;
    a.add(&kept_blocks, kept).await;
    use futures::StreamExt;
    let indirect = a
        .node
        .pin_ls(PinLsFilter::Indirect)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(indirect.len(), 12 + 6);

    assert_eq!(a.node.gc().await.unwrap().removed, 0);
    a.node.unpin(key(&gone), true).await.unwrap();
    assert!(matches!(
        a.node.unpin(key(&gone), true).await,
        Err(IpfsError::NotPinned { .. })
    ));
    let report = a.node.gc().await.unwrap();
    assert_eq!(report.removed, 13);
    // Named as Kubo's gc names them: CIDv1 raw of each block's multihash.
    let mut keys = report.keys.clone();
    keys.sort();
    let mut want: Vec<String> = gone_blocks.iter().map(|(c, _)| raw_cid(c)).collect();
    want.sort();
    assert_eq!(keys, want);
    for (cid, _) in &gone_blocks {
        assert!(a.node.get_block(cid).await.unwrap().is_none());
    }
    for (cid, data) in &kept_blocks {
        assert_eq!(a.node.get_block(cid).await.unwrap().as_ref(), Some(data));
    }
    assert_eq!(a.node.repo_stat().await.unwrap().num_objects, Some(7));
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_and_blocks_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a");
    let (root, blocks) = test_dag("durable", 2);
    let a = Running::start(&path).await;
    let peer = a.node.peer_id();
    a.add(&blocks, root).await;
    a.stop().await;

    let a = Running::start(&path).await;
    assert_eq!(a.node.peer_id(), peer, "the identity is kept");
    assert_eq!(recursive_pins(&a.node).await, vec![key(&root)]);
    for (cid, data) in &blocks {
        assert_eq!(a.node.get_block(cid).await.unwrap().as_ref(), Some(data));
    }
    assert_eq!(a.node.gc().await.unwrap().removed, 0);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cid_nobody_has_times_out_without_blocking_another_pin() {
    let dir = tempfile::tempdir().unwrap();
    let a = Running::start(&dir.path().join("a")).await;
    let b = Running::start(&dir.path().join("b")).await;
    b.connect_to(&a).await;
    let (root, blocks) = test_dag("available", 3);
    a.add(&blocks, root).await;
    let (missing, _) = test_dag("nobody-has-this", 1);

    let stall = Duration::from_millis(1500);
    let started = tokio::time::Instant::now();
    let node = b.node.clone();
    let stuck = tokio::spawn(async move { node.pin(key(&missing), opts(stall), None).await });
    b.node.pin(key(&root), opts(DEADLINE), None).await.unwrap();
    assert!(!stuck.is_finished(), "the missing cid is still pinning");
    let err = tokio::time::timeout(DEADLINE, stuck)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, IpfsError::Timeout { .. }), "{err}");
    assert!(started.elapsed() >= stall);
    assert!(err.is_transient());
    assert_eq!(recursive_pins(&b.node).await, vec![key(&root)]);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_that_does_not_match_its_cid_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let a = Running::start(&dir.path().join("a")).await;
    let b = Running::start(&dir.path().join("b")).await;
    b.connect_to(&a).await;
    let (root, blocks) = test_dag("corrupt", 1);
    a.add(&blocks, root).await;
    let leaf = blocks.last().unwrap().0;
    // a's disk rots: it now serves other bytes under the leaf's CID.
    a.node
        .corrupt_block_for_tests(&leaf, b"not the leaf".to_vec())
        .await
        .unwrap();

    let err = b
        .node
        .pin(key(&root), opts(Duration::from_millis(1500)), None)
        .await
        .unwrap_err();
    assert!(matches!(err, IpfsError::Timeout { .. }), "{err}");
    assert!(b.node.rejected_blocks() >= 1);
    assert!(b.node.get_block(&leaf).await.unwrap().is_none());
    assert!(recursive_pins(&b.node).await.is_empty());
    a.stop().await;
    b.stop().await;
}

/// `pinned` peers of `cid` according to the API at `api`.
async fn pinned_peers(client: &reqwest::Client, api: &str, cid: &str) -> usize {
    let Ok(resp) = client.get(format!("{api}/pins/{cid}")).send().await else {
        return 0;
    };
    let Ok(v) = resp.json::<serde_json::Value>().await else {
        return 0;
    };
    v["peer_map"].as_object().map_or(0, |m| {
        m.values().filter(|p| p["status"] == "pinned").count()
    })
}

/// Waits (120 s at most: a loaded CI machine) until all three peers report `cid` pinned.
async fn wait_pinned_on_three(client: &reqwest::Client, api: &str, cid: &str) {
    let start = tokio::time::Instant::now();
    while pinned_peers(client, api, cid).await < 3 {
        if start.elapsed() >= Duration::from_secs(120) {
            let answer = client.get(format!("{api}/pins/{cid}")).send().await;
            let body = match answer {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            panic!("{cid} not pinned on all three peers: {body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_added_on_peer_0_is_pinned_by_all_three_daemons() {
    let dir = tempfile::tempdir().unwrap();
    let tb = dir.path().join("tb");
    // Content added on peer 0 before its daemon starts: the daemon opens
    // the same blockstore, and peers 1 and 2 have nothing.
    let (root, blocks) = test_dag("daemons", 3);
    let origin = Running::start(&tb.join("peer-0")).await;
    origin.add(&blocks, root).await;
    origin.stop().await;

    let testbed = crate::support::embedded_testbed(&tb, false).await;
    for p in &testbed.file.peers {
        assert!(p.ipfs.starts_with("/ip4/127.0.0.1/tcp/"), "{}", p.ipfs);
        assert!(p.ipfs.contains("/p2p/"), "{}", p.ipfs);
    }
    let api = testbed.file.peers[0].api.clone();
    let client = crate::support::http();
    // `GET /id` shows the embedded node as IPFS Cluster shows Kubo.
    let id: serde_json::Value = client
        .get(format!("{api}/id"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(id["ipfs"]["addresses"][0], testbed.file.peers[0].ipfs);
    assert!(
        testbed.file.peers[0]
            .ipfs
            .ends_with(id["ipfs"]["id"].as_str().unwrap())
    );
    let cid = key(&root).to_string();
    let resp = client
        .post(format!(
            "{api}/pins/{cid}?replication-min=3&replication-max=3&name=daemons"
        ))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());

    wait_pinned_on_three(&client, &api, &cid).await;
    testbed.stop().await;

    // The blocks really moved: peer 2's own store holds all of them.
    let last = Running::start(&tb.join("peer-2")).await;
    for (c, data) in &blocks {
        assert_eq!(last.node.get_block(c).await.unwrap().as_ref(), Some(data));
    }
    last.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_fetch_large_dags_from_each_other_at_once() {
    use crate::support::test_dag_sized;
    let dir = tempfile::tempdir().unwrap();
    let a = Running::start(&dir.path().join("a")).await;
    let b = Running::start(&dir.path().join("b")).await;
    b.connect_to(&a).await;
    // 25 leaves of ~192 KiB each way: responses span several messages.
    let (ra, blocks_a) = test_dag_sized("from-a", 5, 192 << 10);
    let (rb, blocks_b) = test_dag_sized("from-b", 5, 192 << 10);
    a.add(&blocks_a, ra).await;
    b.add(&blocks_b, rb).await;
    let (x, y) = tokio::join!(
        a.node.pin(key(&rb), opts(DEADLINE), None),
        b.node.pin(key(&ra), opts(DEADLINE), None),
    );
    x.unwrap();
    y.unwrap();
    for (node, blocks) in [(&a.node, &blocks_b), (&b.node, &blocks_a)] {
        for (cid, data) in blocks {
            assert_eq!(node.get_block(cid).await.unwrap().as_ref(), Some(data));
        }
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_another_cluster_cannot_connect() {
    let dir = tempfile::tempdir().unwrap();
    let a = Running::start(&dir.path().join("a")).await;
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let stranger = EmbeddedNode::start(
        EmbeddedConfig::new(&dir.path().join("s"), [8; 32]),
        cancel.clone(),
        &tasks,
    )
    .await
    .unwrap();
    let addr = a.node.listen_addrs().await.remove(0);
    // The pnet handshake with the wrong key never completes: the dial fails
    // or hangs until its timeout; either way nobody gets connected.
    let dial = stranger.swarm_connect(addr.to_string());
    if let Ok(result) = tokio::time::timeout(Duration::from_secs(2), dial).await {
        let err = result.unwrap_err();
        assert!(matches!(err, IpfsError::Connect { .. }), "{err}");
    }
    assert!(a.node.connected_peers().await.is_empty());
    assert!(stranger.connected_peers().await.is_empty());
    cancel.cancel();
    tasks.close();
    drop(stranger);
    tasks.wait().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_with_a_block_that_does_not_match_its_cid_fails() {
    let dir = tempfile::tempdir().unwrap();
    let a = Running::start(&dir.path().join("a")).await;
    let (root, blocks) = test_dag("bad-import", 1);
    let err = a
        .node
        .import(true, move |sink| {
            for (i, (c, d)) in blocks.into_iter().enumerate() {
                sink(c, if i == 1 { b"tampered".to_vec() } else { d })?;
            }
            Ok(root)
        })
        .await
        .unwrap_err();
    assert!(matches!(err, IpfsError::Unsupported { .. }), "{err}");
    assert!(recursive_pins(&a.node).await.is_empty());
    // Backends without an importer say so.
    let none = pinfleet::ipfs::NoBackend;
    let err = none
        .add(
            pinfleet::ipfs::AddInput::Path("x".into()),
            Default::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "unsupported: add on the none backend");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_connects_to_its_origins() {
    let dir = tempfile::tempdir().unwrap();
    let a = Running::start(&dir.path().join("a")).await;
    let b = Running::start(&dir.path().join("b")).await;
    let (root, blocks) = test_dag("origins", 2);
    a.add(&blocks, root).await;
    assert!(b.node.connected_peers().await.is_empty());
    let origin = a.node.listen_addrs().await.remove(0).to_string();
    let with_origins = PinOpts {
        origins: vec![
            "/ip4/127.0.0.1/tcp/1".into(),
            "not a multiaddr".into(),
            origin,
        ],
        ..opts(DEADLINE)
    };
    b.node.pin(key(&root), with_origins, None).await.unwrap();
    assert_eq!(b.node.connected_peers().await, vec![a.node.peer_id()]);
    assert_eq!(recursive_pins(&b.node).await, vec![key(&root)]);
    a.stop().await;
    b.stop().await;
}

fn run_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pinfleet"))
        .args(args)
        .env_remove("PINFLEET_HOST")
        .output()
        .unwrap()
}

/// `pinfleet add` (`POST /add`) on peer 0 of a three-daemon testbed: the
/// CIDs are `ipfs add`'s, the root is pinned on every peer, and the blocks
/// are really in the other peers' stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinfleet_add_imports_on_one_peer_and_every_peer_pins_it() {
    use pinfleet::ipfs::unixfs::{AddOptions, add_path};
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("release");
    std::fs::create_dir_all(content.join("docs")).unwrap();
    // 600 KiB: three chunks, so a two-level file DAG.
    let big: Vec<u8> = (0..600 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(content.join("image.bin"), &big).unwrap();
    std::fs::write(content.join("docs/README"), b"release notes\n").unwrap();
    std::fs::write(content.join(".hidden"), b"not sent\n").unwrap();
    let mut expected = Vec::new();
    let local = add_path(&content, &AddOptions::default(), &mut |c, d| {
        expected.push((c, d));
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap();
    let root = local.last().unwrap().cid.to_string();
    assert!(root.starts_with("Qm"), "{root}");

    let tb = dir.path().join("tb");
    let testbed = crate::support::embedded_testbed(&tb, false).await;
    let api = testbed.file.peers[0].api.clone();
    let path = content.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking({
        let api = api.clone();
        let path = path.clone();
        move || {
            run_cli(&[
                "add",
                &path,
                "--replication",
                "-1",
                "--json",
                "--host",
                &api,
            ])
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = lines.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "release/docs/README",
            "release/image.bin",
            "release/docs",
            "release"
        ],
        "the hidden file is not sent"
    );
    assert_eq!(lines.last().unwrap()["cid"], root.as_str());
    assert_eq!(lines[1]["bytes"], 600 * 1024);

    let client = crate::support::http();
    wait_pinned_on_three(&client, &api, &root).await;
    // The pin is the API's, named after the directory, reported as written.
    let pin: serde_json::Value = client
        .get(format!("{api}/allocations/{root}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pin["cid"], root.as_str());
    assert_eq!(pin["name"], "release");

    // Wrapped: entries named as sent, the wrapping root named "" (IPFS
    // Cluster's answer); with --no-pin nothing is pinned in the cluster.
    let (a, b) = (dir.path().join("a b.txt"), dir.path().join("b.txt"));
    std::fs::write(&a, b"first\n").unwrap();
    std::fs::write(&b, b"second\n").unwrap();
    let out = tokio::task::spawn_blocking({
        let api = api.clone();
        let (a, b) = (
            a.to_str().unwrap().to_string(),
            b.to_str().unwrap().to_string(),
        );
        move || run_cli(&["add", &a, &b, "-w", "--no-pin", "--json", "--host", &api])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wrapped: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = wrapped
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a b.txt", "b.txt", ""]);
    let wrapped_root = wrapped[2]["cid"].as_str().unwrap();
    let missing = client
        .get(format!("{api}/allocations/{wrapped_root}"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404, "--no-pin pins nothing");

    // Several top-level parts without wrap-with-directory: each is added
    // and listed, only the last root is pinned (IPFS Cluster's adder).
    let two = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"first top".to_vec()).file_name("a"),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"second top".to_vec()).file_name("b"),
        );
    let resp = client
        .post(format!("{api}/add?stream-channels=false"))
        .multipart(two)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let both: Vec<serde_json::Value> = resp.json().await.unwrap();
    let names: Vec<&str> = both.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(both[0].get("allocations").is_none());
    let (first, last) = (
        both[0]["cid"].as_str().unwrap(),
        both[1]["cid"].as_str().unwrap(),
    );
    for (cid, status) in [(first, 404), (last, 200)] {
        let got = client
            .get(format!("{api}/allocations/{cid}"))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status().as_u16(), status, "{cid}");
    }
    // A path escaping the upload is refused.
    let evil = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("..%2F..%2Fescape"),
    );
    let refused = client
        .post(format!("{api}/add"))
        .multipart(evil)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);

    testbed.stop().await;
    // The blocks really moved: peers 1 and 2 hold every one of them.
    for peer in ["peer-1", "peer-2"] {
        let node = Running::start(&tb.join(peer)).await;
        for (c, data) in &expected {
            assert_eq!(
                node.node.get_block(c).await.unwrap().as_ref(),
                Some(data),
                "{peer} lacks {c}"
            );
        }
        node.stop().await;
    }
}

/// Unpinned in the cluster, then `POST /ipfs/gc`: the content is gone from
/// every peer's node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpinned_content_is_gone_from_every_peer_after_gc() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("old-release.bin");
    let data: Vec<u8> = (0..300 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let mut blocks = Vec::new();
    let added =
        pinfleet::ipfs::unixfs::add_reader(data.as_slice(), &Default::default(), &mut |c, d| {
            blocks.push((c, d));
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap();
    let root = added.cid.to_string();

    let tb = dir.path().join("tb");
    let testbed = crate::support::embedded_testbed(&tb, false).await;
    let api = testbed.file.peers[0].api.clone();
    let out = tokio::task::spawn_blocking({
        let (api, file) = (api.clone(), file.to_str().unwrap().to_string());
        move || run_cli(&["add", &file, "--replication", "-1", "-q", "--host", &api])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), root);
    let client = crate::support::http();
    wait_pinned_on_three(&client, &api, &root).await;

    let resp = client
        .delete(format!("{api}/pins/{root}"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    // Every peer's tracker unpins it from its node.
    let start = tokio::time::Instant::now();
    loop {
        let mut pinned = 0.0;
        for p in &testbed.file.peers {
            let body = client
                .get(format!("{}/metrics", p.api))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            pinned += body
                .lines()
                .find_map(|l| l.strip_prefix("pinfleet_local_pinned "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(1.0);
        }
        if pinned == 0.0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "still pinned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gc: serde_json::Value = client
        .post(format!("{api}/ipfs/gc"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let peers = gc["peer_map"].as_object().unwrap();
    assert_eq!(peers.len(), 3, "{gc}");
    for (id, r) in peers {
        assert_eq!(r["error"], "", "{id}: {r}");
        assert!(
            r["removed"].as_u64().unwrap() >= blocks.len() as u64,
            "{id}: {r}"
        );
        // IPFS Cluster's `keys`: `{"key": {"/": cid}}` per removed block,
        // from the asked peer and from the others (over the cluster RPC).
        let keys = r["keys"].as_array().unwrap();
        assert_eq!(keys.len() as u64, r["removed"].as_u64().unwrap(), "{id}");
        for (c, _) in &blocks {
            let want = serde_json::json!({"key": {"/": raw_cid(c)}});
            assert!(keys.contains(&want), "{id}: {c} not in keys {r}");
        }
    }
    testbed.stop().await;
    for i in 0..3 {
        let node = Running::start(&tb.join(format!("peer-{i}"))).await;
        for (c, _) in &blocks {
            assert_eq!(
                node.node.get_block(c).await.unwrap(),
                None,
                "peer-{i} kept {c}"
            );
        }
        node.stop().await;
    }
}

/// The CID Kubo's and the embedded node's gc name a removed block by: CIDv1
/// `raw` of its multihash.
fn raw_cid(c: &cid::Cid) -> String {
    cid::Cid::new_v1(0x55, *c.hash()).to_string()
}

/// `AddInput::Parts` on the embedded node: entries given as they arrive
/// (the bytes of a file in chunks) are imported and pinned as
/// `add_path` imports the same tree; parts that stop without their end
/// (the upload broke off) fail the add and pin nothing, never a
/// truncated file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_streamed_as_parts_is_added_and_one_that_breaks_off_pins_nothing() {
    use pinfleet::ipfs::AddInput;
    use pinfleet::ipfs::parts::{AddPart, ChunkReader};
    let dir = tempfile::tempdir().unwrap();
    let a = Running::start(&dir.path().join("a")).await;
    let big: Vec<u8> = (0..600 * 1024u32).map(|i| (i % 253) as u8).collect();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/big"), &big).unwrap();
    std::fs::write(tree.join("small"), b"small").unwrap();
    let expected = pinfleet::ipfs::unixfs::add_path(&tree, &Default::default(), &mut |_, _| {
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap();

    for cut in ["file", "entries", "none"] {
        let (parts_tx, parts) = tokio::sync::mpsc::channel(4);
        let add = {
            let node = a.node.clone();
            tokio::spawn(async move { node.add(AddInput::Parts(parts), Default::default()).await })
        };
        // In the order `ipfs add -r` walks (names sorted): "small", then
        // "sub/big".
        let (small, reader) = ChunkReader::channel(2);
        let file = AddPart::File {
            path: "tree/small".into(),
            body: Box::new(reader),
        };
        parts_tx.send(Ok(file)).await.unwrap();
        small
            .send(bytes::Bytes::from_static(b"small"))
            .await
            .unwrap();
        small.finish().await.unwrap();
        let (body, reader) = ChunkReader::channel(2);
        let file = AddPart::File {
            path: "tree/sub/big".into(),
            body: Box::new(reader),
        };
        parts_tx.send(Ok(file)).await.unwrap();
        for piece in big.chunks(10_000) {
            body.send(bytes::Bytes::copy_from_slice(piece))
                .await
                .unwrap();
        }
        if cut != "none" {
            if cut == "file" {
                // The file's sender gone without its end, the entries
                // ended: still not a (truncated) file.
                drop(body);
                // The import may have failed on the broken file already
                // and closed the entries: the end need not arrive.
                let _ = parts_tx.send(Ok(AddPart::End)).await;
            } else {
                // Gone before the file's end and the entries' end.
                drop((body, parts_tx));
            }
            let err = tokio::time::timeout(DEADLINE, add).await.unwrap().unwrap();
            assert!(
                matches!(err, Err(IpfsError::InvalidInput { .. })),
                "{err:?}"
            );
            continue;
        }
        body.finish().await.unwrap();
        parts_tx.send(Ok(AddPart::End)).await.unwrap();
        let added = tokio::time::timeout(DEADLINE, add)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(added.entries, expected);
        let root = CidKey::from_cid(expected.last().unwrap().cid).unwrap();
        assert_eq!(added.root, root);
    }
    let root = CidKey::from_cid(expected.last().unwrap().cid).unwrap();
    assert_eq!(
        recursive_pins(&a.node).await,
        vec![root],
        "only the complete one"
    );
    a.stop().await;
}

/// Polls `check` until it holds; panics with `what` after [`DEADLINE`].
async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bytes that differ everywhere (a linear congruential generator), so that
/// every chunk is a block of its own.
fn varied_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}

async fn objects(node: &EmbeddedNode) -> u64 {
    node.repo_stat().await.unwrap().num_objects.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_with_push_stores_its_blocks_on_connected_nodes_before_any_pin() {
    use pinfleet::ipfs::{AddInput, AddOpts};
    let dir = tempfile::tempdir().unwrap();
    let a = Running::start(&dir.path().join("a")).await;
    let b = Running::start(&dir.path().join("b")).await;
    let c = Running::start(&dir.path().join("c")).await;
    b.connect_to(&a).await;
    c.connect_to(&a).await;
    wait_for("a to see b and c", || async {
        a.node.connected_peers().await.len() == 2
    })
    .await;

    // Without push, nothing is sent: b's pin fetches every block.
    let plain = a
        .node
        .add(
            AddInput::Reader(Box::new(std::io::Cursor::new(varied_bytes(600_000, 1)))),
            AddOpts::default(),
        )
        .await
        .unwrap();
    assert_eq!(plain.blocks, 4, "three leaves and their root");
    b.node.pin(plain.root, opts(DEADLINE), None).await.unwrap();
    assert_eq!(b.node.pushed_blocks_received(), 0);
    assert_eq!(objects(&c.node).await, 0, "c got nothing");

    // With push: 3 MiB, twelve 256 KiB leaves and a root.
    let before = objects(&a.node).await;
    let added = a
        .node
        .add(
            AddInput::Reader(Box::new(std::io::Cursor::new(varied_bytes(3 << 20, 2)))),
            AddOpts {
                push: true,
                ..AddOpts::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(added.blocks, 13);
    assert_eq!(objects(&a.node).await, before + 13);
    wait_for("every pushed block on b and c", || async {
        b.node.pushed_blocks_received() == 13 && c.node.pushed_blocks_received() == 13
    })
    .await;
    assert_eq!(objects(&c.node).await, 13, "stored on c, not only counted");
    for node in [&b.node, &c.node] {
        assert_eq!(node.pushed_blocks_rejected(), 0);
        assert_eq!(
            node.get_block(added.root.cid())
                .await
                .unwrap()
                .map(|d| d.len()),
            a.node
                .get_block(added.root.cid())
                .await
                .unwrap()
                .map(|d| d.len())
        );
    }
    assert_eq!(
        recursive_pins(&c.node).await,
        Vec::<CidKey>::new(),
        "pushed, not pinned"
    );
    assert_eq!(a.node.push_frames_dropped(), 0);

    // With a and c gone, b's pin can only complete from its own store.
    let rejected = b.node.rejected_blocks();
    a.stop().await;
    c.stop().await;
    b.node
        .pin(added.root, opts(Duration::from_secs(10)), None)
        .await
        .unwrap();
    assert_eq!(recursive_pins(&b.node).await.len(), 2);
    assert_eq!(b.node.rejected_blocks(), rejected);
    b.stop().await;
}

/// `GET /health/graph` shows each member's embedded node connected to the
/// other members' nodes (IPFS Cluster's `ipfs_links`), which is what
/// `testbed up` waits for; `pinfleet health graph` draws those edges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_graph_links_each_embedded_node_to_the_other_members_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let testbed = crate::support::embedded_testbed(&dir.path().join("tb"), false).await;
    let api = testbed.file.peers[2].api.clone();
    let g = crate::support::get_json(&format!("{api}/health/graph")).await;
    let to_ipfs = g["cluster_to_ipfs"].as_object().unwrap();
    assert_eq!(to_ipfs.len(), 3, "{g}");
    for p in &testbed.file.peers {
        let node = to_ipfs[&p.id].as_str().unwrap();
        assert!(p.ipfs.ends_with(node), "{} is not {node}", p.ipfs);
        let mut links: Vec<&str> = g["ipfs_links"][node]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        links.sort_unstable();
        let mut others: Vec<&str> = to_ipfs
            .values()
            .map(|v| v.as_str().unwrap())
            .filter(|n| *n != node)
            .collect();
        others.sort_unstable();
        assert_eq!(links, others, "{g}");
    }
    let dot = crate::get::cli_ok(&["health", "graph", "--host", &api], None).await;
    // Node-to-node edges are dashed: three nodes, each to the two others.
    let ipfs_edges = dot
        .lines()
        .filter(|l| l.trim_start().starts_with('I') && l.contains("[style=dashed]"))
        .count();
    assert_eq!(ipfs_edges, 6, "{dot}");
}
