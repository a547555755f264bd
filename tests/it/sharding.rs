//! Sharding (issue 18, docs/sharding.md): content larger than any one peer
//! split across peers and read back whole.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use pinfleet::ipfs::unixfs::{AddOptions, add_reader};
use pinfleet::ipfs::{IpfsBackend, IpfsError};

use crate::get::{cli_ok, start_node, varied};

/// What sharding content already in IPFS starts from: a node lists every
/// block of a DAG another node holds, once, with its exact size (a raw
/// leaf's from its parent's link), root first, storing none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lists_every_block_of_a_dag_another_holds_with_its_size_storing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        start_node(&dir.path().join("a")).await,
        start_node(&dir.path().join("b")).await,
    );
    let addr = a.node.listen_addrs().await.remove(0);
    b.node.connect(addr).await.unwrap();
    // CIDv1 with raw leaves (leaves never fetched), and CIDv0 (dag-pb
    // leaves: each read), both several levels deep with small chunks.
    for (v1, seed) in [(true, 1u32), (false, 2)] {
        let bytes = varied(300 * 1024 + 17, seed);
        // By multihash: the importer may hand the root over as CIDv1.
        let blocks: Arc<Mutex<BTreeMap<Vec<u8>, u64>>> = Arc::default();
        let seen = Arc::clone(&blocks);
        let added = a
            .node
            .import(false, move |sink| {
                let mut opts = AddOptions {
                    chunk_size: 1024,
                    ..AddOptions::default()
                };
                if v1 {
                    opts.cid_version = cid::Version::V1;
                    opts.raw_leaves = Some(true);
                }
                let mut record = |cid: cid::Cid, data: Vec<u8>| {
                    seen.lock()
                        .unwrap()
                        .insert(cid.hash().to_bytes(), data.len() as u64);
                    sink(cid, data)
                };
                let added = add_reader(&bytes[..], &opts, &mut record).map_err(|e| {
                    IpfsError::InvalidInput {
                        what: e.to_string(),
                    }
                })?;
                Ok(added.cid)
            })
            .await
            .unwrap();
        let want = blocks.lock().unwrap().clone();
        assert!(want.len() > 300, "a deep DAG: {} blocks", want.len());
        let mut listed = Vec::new();
        let mut layout = b.node.dag_layout(added.root);
        while let Some(item) = tokio::time::timeout(Duration::from_secs(30), layout.next())
            .await
            .unwrap()
        {
            listed.push(item.unwrap());
        }
        assert_eq!(listed[0].0, *added.root.cid(), "the root comes first");
        let got: BTreeMap<Vec<u8>, u64> = listed
            .iter()
            .map(|(c, n)| (c.hash().to_bytes(), *n))
            .collect();
        assert_eq!(got.len(), listed.len(), "a block listed twice");
        assert_eq!(got.len(), want.len(), "every block (v1 = {v1})");
        assert!(got == want, "each with its size (v1 = {v1})");
        // Listed, not kept.
        assert!(b.node.get_block(added.root.cid()).await.unwrap().is_none());
    }
    // A root nobody has: not found, not a hang.
    let missing = pinfleet::manifest::CidKey::parse(&crate::support::cid_v1("nobody")).unwrap();
    let first = tokio::time::timeout(Duration::from_secs(90), b.node.dag_layout(missing).next())
        .await
        .unwrap();
    assert!(matches!(first, Some(Err(_))), "{first:?}");
    a.stop().await;
    b.stop().await;
}

// ------------------------------------------------- a 3-peer testbed, end to end

const MIB: u64 = 1 << 20;
/// Each peer's `[ipfs] storage_max`.
const LIMIT: u64 = 100 * MIB;

/// Writes `len` pseudo-random bytes (splitmix64 from `seed`) to `path`.
fn write_random(path: &Path, len: u64, seed: u64) {
    use std::io::Write;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut state = seed;
    let mut buf = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(MIB) as usize;
        w.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    w.flush().unwrap();
}

/// SHA-256 of the file at `path`, read in pieces.
fn file_digest(path: &Path) -> Vec<u8> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(path).unwrap(), &mut h).unwrap();
    h.finalize().to_vec()
}

/// A file's digest (under the empty path), or every file under a
/// directory with its digest and every directory (`None`).
fn digest_tree(root: &Path) -> BTreeMap<std::path::PathBuf, Option<Vec<u8>>> {
    if root.is_file() {
        return BTreeMap::from([(std::path::PathBuf::new(), Some(file_digest(root)))]);
    }
    crate::get::tree_with(root, file_digest)
}

/// `pinfleet ARGS…`; fails the test on a non-zero exit.
async fn cli(args: &[&str]) -> String {
    cli_ok(args, None).await
}

/// `GET url` as JSON.
async fn json(url: &str) -> serde_json::Value {
    crate::support::http()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits (at most `secs`) until `check` holds for `GET url`; its last answer.
async fn until(
    url: &str,
    secs: u64,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let v = json(url).await;
        if check(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not after {secs} s; last answer {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Bytes each peer stores (`storage_max` − its `freespace` metric), once
/// every peer reported and `check` holds for the figures.
async fn used(api: &str, peers: &[String], check: impl Fn(&[u64]) -> bool) -> Vec<u64> {
    let figures = |v: &serde_json::Value| -> Option<Vec<u64>> {
        peers
            .iter()
            .map(|id| {
                v.as_array()?
                    .iter()
                    .find(|m| m["peer"] == id.as_str())
                    .and_then(|m| m["value"].as_str()?.parse::<u64>().ok())
                    .map(|free| LIMIT.saturating_sub(free))
            })
            .collect()
    };
    let v = until(
        &format!("{api}/monitor/metrics/freespace"),
        120,
        "every peer's freespace",
        |v| figures(v).is_some_and(|f| check(&f)),
    )
    .await;
    figures(&v).unwrap()
}

/// Three embedded peers of [`LIMIT`] bytes each reporting metrics every
/// second, once every peer's free space is known: the testbed, its API
/// URLs and peer ids.
async fn limited_testbed(dir: &Path) -> (pinfleet::testbed::Testbed, Vec<String>, Vec<String>) {
    let limit = LIMIT.to_string();
    let tb = crate::support::embedded_testbed_with(
        &dir.join("tb"),
        false,
        &[
            ("PINFLEET_IPFS_STORAGE_MAX", &limit),
            ("PINFLEET_INFORMER_INTERVAL", "1s"),
        ],
    )
    .await;
    let api: Vec<String> = tb.file.peers.iter().map(|p| p.api.clone()).collect();
    let ids: Vec<String> = tb.file.peers.iter().map(|p| p.id.clone()).collect();
    let _ = used(&api[0], &ids, |_| true).await;
    (tb, api, ids)
}

/// Whether the meta pin `cid` reports every peer pinned or remote, at
/// least one pinned (its shards all stored at their replication).
fn all_pinned(v: &serde_json::Value) -> bool {
    let Some(map) = v["peer_map"].as_object() else {
        return false;
    };
    let statuses: Vec<&str> = map.values().filter_map(|p| p["status"].as_str()).collect();
    statuses.contains(&"pinned") && statuses.iter().all(|s| *s == "pinned" || *s == "remote")
}

/// The shard pins of the meta pin `meta`.
async fn shards_of(api: &str, meta: &str) -> Vec<serde_json::Value> {
    let text = crate::support::http()
        .get(format!("{api}/allocations?filter=shard-pin"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let all: Vec<serde_json::Value> = match serde_json::from_str(&text) {
        Ok(serde_json::Value::Array(a)) => a,
        _ => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    };
    all.into_iter()
        .filter(|p| {
            p["owners"]
                .as_object()
                .into_iter()
                .flat_map(|o| o.values())
                .any(|o| o["shard_role"]["meta"] == meta)
        })
        .collect()
}

/// Adds `path` sharded on `api`, checks the shards fit every peer's limit
/// and that every peer reads the content back whole, then unpins it and
/// checks gc frees every peer.
async fn add_read_back_and_free(api: &[String], ids: &[String], path: &Path, out: &Path) {
    let added = cli(&[
        "add",
        path.to_str().unwrap(),
        "--shard",
        "--shard-size",
        "32MiB",
        "--replication",
        "1",
        "-q",
        "--host",
        &api[0],
    ])
    .await;
    let meta = added.lines().last().unwrap().trim().to_string();
    let status = until(
        &format!("{}/pins/{meta}", api[0]),
        300,
        "the sharded pin pinned",
        all_pinned,
    )
    .await;
    assert_eq!(status["cid"], meta.as_str(), "{status}");
    let pin = json(&format!("{}/allocations/{meta}", api[0])).await;
    assert_eq!(pin["type"], "meta-pin", "{pin}");
    let shards = shards_of(&api[0], &meta).await;
    assert!(
        shards.len() >= 8,
        "256 MiB in shards of 32 MiB: {}",
        shards.len()
    );
    // Spread over the peers, each within its limit.
    let figures = used(&api[0], ids, |f| f.iter().sum::<u64>() >= 256 * MIB).await;
    for (i, u) in figures.iter().enumerate() {
        assert!(
            *u <= LIMIT,
            "peer {i} stores {u} bytes, over its limit: {figures:?}"
        );
        assert!(*u > 0, "peer {i} holds nothing: {figures:?}");
    }
    // Read back whole from every peer (each fetches what it lacks).
    let want = digest_tree(path);
    for (i, a) in api.iter().enumerate() {
        let dest = out.join(format!("from-{i}"));
        cli(&["get", &meta, "-o", dest.to_str().unwrap(), "--host", a]).await;
        assert!(
            digest_tree(&dest) == want,
            "peer {i} read it back different"
        );
        std::fs::remove_dir_all(&dest)
            .or_else(|_| std::fs::remove_file(&dest))
            .unwrap();
    }
    // Unpinning the meta pin releases every shard; gc frees the space.
    let resp = crate::support::http()
        .delete(format!("{}/pins/{meta}", api[0]))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !shards_of(&api[0], &meta).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "shards still pinned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for a in api {
        // Until every node unpinned (its tracker catches up), gc keeps
        // some blocks: again until all is freed.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let r = crate::support::http()
                .post(format!("{a}/ipfs/gc"))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            let figures = used(&api[0], ids, |_| true).await;
            if figures.iter().all(|u| *u < MIB) || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let figures = used(&api[0], ids, |f| f.iter().all(|u| *u < MIB)).await;
    assert!(figures.iter().all(|u| *u < MIB), "{figures:?}");
}

/// The scenario: three embedded peers of 100 MiB each; a 256 MiB
/// file, then a 256 MiB directory tree, added with `--shard --shard-size
/// 32MiB --replication 1`: no peer holds more than its limit, every peer
/// reads the content back byte-identical, and unpinning the meta pin frees
/// the space on every peer after `ipfs gc`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_larger_than_any_peer_is_spread_within_limits_read_back_whole_and_freed() {
    let dir = tempfile::tempdir().unwrap();
    let (_tb, api, ids) = limited_testbed(dir.path()).await;

    let file = dir.path().join("big.bin");
    write_random(&file, 256 * MIB, 1);
    add_read_back_and_free(&api, &ids, &file, dir.path()).await;
    std::fs::remove_file(&file).unwrap();

    let tree = dir.path().join("tree");
    for d in 0..4u64 {
        let sub = tree.join(format!("d{d}")).join("inner");
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..8u64 {
            write_random(&sub.join(format!("f{f}.bin")), 8 * MIB, 100 + d * 8 + f);
        }
    }
    add_read_back_and_free(&api, &ids, &tree, dir.path()).await;
}

/// Re-allocation (issue 18 item 6): with replication 2, the peer holding
/// the most shards is removed from the cluster and killed; its shards are
/// re-allocated to the remaining peers, fetched from the other replica,
/// and the content still reads back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_pin_stays_readable_after_a_peer_holding_shards_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (tb, api, ids) = limited_testbed(dir.path()).await;
    let file = dir.path().join("doubled.bin");
    write_random(&file, 64 * MIB, 7);
    let added = cli(&[
        "add",
        file.to_str().unwrap(),
        "--shard",
        "--shard-size",
        "16MiB",
        "--replication",
        "2",
        "-q",
        "--host",
        &api[0],
    ])
    .await;
    let meta = added.lines().last().unwrap().trim().to_string();
    until(
        &format!("{}/pins/{meta}", api[0]),
        300,
        "the sharded pin pinned",
        all_pinned,
    )
    .await;
    let shards = shards_of(&api[0], &meta).await;
    assert!(shards.len() >= 4, "{} shards", shards.len());
    for s in &shards {
        assert_eq!(s["allocations"].as_array().unwrap().len(), 2, "{s}");
    }
    // The peer (other than peer 0, whose API we use) holding most shards.
    let holding = |id: &str| {
        shards
            .iter()
            .filter(|s| s["allocations"].as_array().unwrap().iter().any(|a| a == id))
            .count()
    };
    let gone = if holding(&ids[1]) >= holding(&ids[2]) {
        1
    } else {
        2
    };
    assert!(holding(&ids[gone]) > 0);
    let resp = crate::support::http()
        .delete(format!("{}/peers/{}", api[0], ids[gone]))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    // Gone for good: its node can serve nothing any more.
    let _ = std::process::Command::new("kill")
        .args(["-9", &tb.file.peers[gone].pid.to_string()])
        .status();
    let stay = 3 - gone; // the other of peers 1 and 2
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let now = shards_of(&api[0], &meta).await;
        let moved = now.iter().all(|s| {
            let allocs = s["allocations"].as_array().unwrap();
            allocs.len() == 2 && allocs.iter().all(|a| a != ids[gone].as_str())
        });
        let status = json(&format!("{}/pins/{meta}", api[0])).await;
        if moved && all_pinned(&status) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "shards not re-allocated and pinned: {status}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let dest = dir.path().join("back.bin");
    cli(&[
        "get",
        &meta,
        "-o",
        dest.to_str().unwrap(),
        "--host",
        &api[stay],
    ])
    .await;
    assert!(
        digest_tree(&dest) == digest_tree(&file),
        "read back different"
    );
}

/// A PinSet declares `shard: {size}` for content already in IPFS (added to
/// one peer's node without a pin): the cluster shards it across the peers
/// (their nodes fetch the blocks), the meta pin reports `pinned`, any peer
/// reads it back whole, and deleting the PinSet releases every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinset_shards_content_already_in_ipfs_and_releases_it_with_the_pinset() {
    let dir = tempfile::tempdir().unwrap();
    let (_tb, api, _) = limited_testbed(dir.path()).await;
    let file = dir.path().join("mirror.bin");
    write_random(&file, 48 * MIB, 9);
    let added = cli(&[
        "add",
        file.to_str().unwrap(),
        "--no-pin",
        "--cid-version",
        "1",
        "-q",
        "--host",
        &api[0],
    ])
    .await;
    let root = added.lines().last().unwrap().trim().to_string();
    let yaml = format!(
        "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: mirror\n  namespace: big\n\
         spec:\n  pins:\n    - cid: {root}\n      name: mirror\n      replication: {{min: 1, max: 1}}\n      shard:\n        size: 16MiB\n"
    );
    let apply = |at: &str| {
        crate::support::http()
            .put(format!("{at}/pinsets/big/mirror"))
            .body(yaml.clone())
            .send()
    };
    let resp = apply(&api[1]).await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let status = until(
        &format!("{}/pins/{root}", api[2]),
        300,
        "the PinSet's sharded pin pinned",
        all_pinned,
    )
    .await;
    assert_eq!(status["cid"], root.as_str());
    let shards = shards_of(&api[0], &root).await;
    assert!(
        shards.len() >= 3,
        "48 MiB in shards of 16 MiB: {}",
        shards.len()
    );
    for s in &shards {
        let owners: Vec<&String> = s["owners"].as_object().unwrap().keys().collect();
        assert_eq!(owners, ["pinset:big/mirror"], "{s}");
    }
    let pin = json(&format!("{}/allocations/{root}", api[0])).await;
    assert_eq!(pin["type"], "meta-pin", "{pin}");
    assert!(
        pin["reference"].is_string(),
        "the cluster DAG is recorded: {pin}"
    );
    // Read back from a peer that did not have the content.
    let dest = dir.path().join("back.bin");
    cli(&[
        "get",
        &root,
        "-o",
        dest.to_str().unwrap(),
        "--host",
        &api[2],
    ])
    .await;
    assert!(
        digest_tree(&dest) == digest_tree(&file),
        "read back different"
    );
    // Re-applying the same manifest changes nothing.
    let report = apply(&api[0]).await.unwrap();
    let report: serde_json::Value = report.json().await.unwrap();
    assert_eq!(
        (&report["add"], &report["update"], &report["release"]),
        (
            &serde_json::json!(0),
            &serde_json::json!(0),
            &serde_json::json!(0)
        ),
        "{report}"
    );
    // Deleting the PinSet releases the meta pin and with it every shard.
    let resp = crate::support::http()
        .delete(format!("{}/pinsets/big/mirror?force=true", api[0]))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !shards_of(&api[0], &root).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "shards still pinned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
