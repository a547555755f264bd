//! Shard pins (issue 18): an embedded node pins a shard node and the blocks
//! it links, not what those blocks link (they are in other shards); gc
//! keeps exactly those; unpin frees them. And a three-daemon cluster given
//! a sharded pin's records (meta pin, cluster DAG, shards) pins each shard
//! on its chosen peer only, shows the meta pin's status as its shards',
//! refuses to unpin a shard alone and releases everything with the meta pin.

use std::collections::BTreeSet;
use std::time::Duration;

use pinfleet::ipfs::dagcbor;
use pinfleet::ipfs::embedded::EmbeddedConfig;
use pinfleet::ipfs::{IpfsBackend, PinKind, PinLsFilter, PinOpts};
use pinfleet::manifest::CidKey;
use serde_json::Value;

use crate::support::InProcessNode as Running;
use crate::support::test_dag;

const SECRET: [u8; 32] = [7; 32];
const DEADLINE: Duration = Duration::from_secs(90);

fn key(c: &cid::Cid) -> CidKey {
    CidKey::from_cid(*c).unwrap()
}

/// Stores `blocks` on `node` without pinning anything.
async fn put(node: &Running, blocks: &[(cid::Cid, Vec<u8>)]) {
    let blocks = blocks.to_vec();
    let root = blocks[0].0;
    node.node
        .import(false, move |sink| {
            for (c, d) in blocks {
                sink(c, d)?;
            }
            Ok(root)
        })
        .await
        .unwrap();
}

async fn held(node: &Running, cids: &[cid::Cid]) -> Vec<bool> {
    let mut out = Vec::new();
    for c in cids {
        out.push(node.node.get_block(c).await.unwrap().is_some());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_pin_holds_its_node_and_linked_blocks_only_through_gc_until_unpinned() {
    let dir = tempfile::tempdir().unwrap();
    let a = Running::start_with(EmbeddedConfig::new(&dir.path().join("a"), SECRET)).await;
    let b = Running::start_with(EmbeddedConfig::new(&dir.path().join("b"), SECRET)).await;
    // root → 3 mids → 3 leaves each; blocks: root, then each mid's leaves and the mid.
    let (root, blocks) = test_dag("shard-depth", 3);
    put(&a, &blocks).await;
    // The shard groups the root and the first mid, not what they link.
    let mid0 = blocks[4].0;
    let shard = dagcbor::shard_dag(&[root, mid0]);
    let shard_root = shard[0].0;
    put(&a, &shard).await;
    let addr = a.node.listen_addrs().await.remove(0);
    b.node.connect(addr).await.unwrap();

    let opts = PinOpts {
        max_depth: Some(1),
        progress_timeout: Duration::from_secs(30),
        ..PinOpts::default()
    };
    tokio::time::timeout(DEADLINE, b.node.pin(key(&shard_root), opts, None))
        .await
        .unwrap()
        .unwrap();
    let others: Vec<cid::Cid> = blocks
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| *c != root && *c != mid0)
        .collect();
    let kept = [shard_root, root, mid0];
    assert_eq!(held(&b, &kept).await, [true; 3]);
    assert!(
        !held(&b, &others).await.contains(&true),
        "blocks outside the shard were fetched"
    );
    // Shown as a recursive root pin; its linked blocks as indirect.
    let mut recursive = b.node.pin_ls(PinLsFilter::Recursive);
    let listed = futures::StreamExt::next(&mut recursive)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (listed.cid, listed.kind),
        (key(&shard_root), PinKind::Recursive)
    );
    let indirect: BTreeSet<CidKey> =
        futures::StreamExt::collect::<Vec<_>>(b.node.pin_ls(PinLsFilter::Indirect))
            .await
            .into_iter()
            .map(|p| p.unwrap().cid)
            .collect();
    assert_eq!(indirect, BTreeSet::from([key(&root), key(&mid0)]));

    // Gc keeps the shard's blocks.
    b.node.gc().await.unwrap();
    assert_eq!(held(&b, &kept).await, [true; 3]);

    b.node.unpin(key(&shard_root), true).await.unwrap();
    let report = b.node.gc().await.unwrap();
    assert_eq!(report.removed, 3);
    assert_eq!(held(&b, &kept).await, [false; 3]);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_under_an_indirect_root_is_pinned_two_links_deep() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let a = Running::start_with(EmbeddedConfig::new(&dir.path().join("a"), SECRET)).await;
    let b = Running::start_with(EmbeddedConfig::new(&dir.path().join("b"), SECRET)).await;
    // More links than one shard node takes: an indirect root over two leaves.
    let leaves: Vec<(cid::Cid, Vec<u8>)> = (0..dagcbor::MAX_LINKS + 10)
        .map(|i| {
            let data = format!("tiny block {i}").into_bytes();
            let mh = cid::multihash::Multihash::wrap(0x12, &sha2::Sha256::digest(&data)).unwrap();
            (cid::Cid::new_v1(0x55, mh), data)
        })
        .collect();
    let links: Vec<cid::Cid> = leaves.iter().map(|(c, _)| *c).collect();
    let shard = dagcbor::shard_dag(&links);
    assert_eq!(shard.len(), 3);
    assert_eq!(dagcbor::shard_depth(links.len()), 2);
    let mut all = shard.clone();
    all.extend(leaves);
    put(&a, &all).await;
    let addr = a.node.listen_addrs().await.remove(0);
    b.node.connect(addr).await.unwrap();
    let root = shard[0].0;
    for (depth, held_blocks) in [(1, 3), (2, all.len())] {
        let opts = PinOpts {
            max_depth: Some(depth),
            progress_timeout: Duration::from_secs(30),
            ..PinOpts::default()
        };
        tokio::time::timeout(DEADLINE, b.node.pin(key(&root), opts, None))
            .await
            .unwrap()
            .unwrap();
        let cids: Vec<cid::Cid> = all.iter().map(|(c, _)| *c).collect();
        let n = held(&b, &cids).await.into_iter().filter(|h| *h).count();
        assert_eq!(n, held_blocks, "depth {depth}");
    }
    b.node.unpin(key(&root), true).await.unwrap();
    assert_eq!(b.node.gc().await.unwrap().removed, all.len() as u64);
    a.stop().await;
    b.stop().await;
}

async fn get(client: &reqwest::Client, url: String) -> (u16, String) {
    let r = client.get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Each peer's status in `GET /pins/{cid}`.
async fn statuses(client: &reqwest::Client, api: &str, cid: &str) -> Vec<(String, String)> {
    let (_, body) = get(client, format!("{api}/pins/{cid}")).await;
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["peer_map"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(p, s)| (p.clone(), s["status"].as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The multihashes `POST /ipfs/gc?local=true` removed on the peer at `api`.
async fn gc_removed(client: &reqwest::Client, api: &str) -> BTreeSet<Vec<u8>> {
    let v: Value = client
        .post(format!("{api}/ipfs/gc?local=true"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut out = BTreeSet::new();
    for peer in v["peer_map"].as_object().unwrap().values() {
        assert!(peer["error"].as_str().unwrap_or("").is_empty(), "{peer}");
        for k in peer["keys"].as_array().into_iter().flatten() {
            let c: cid::Cid = k["key"]["/"].as_str().unwrap().parse().unwrap();
            out.insert(c.hash().to_bytes());
        }
    }
    out
}

fn mhs(cids: &[cid::Cid]) -> BTreeSet<Vec<u8>> {
    cids.iter().map(|c| c.hash().to_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_pin_is_held_shard_by_shard_reports_its_shards_and_goes_with_its_meta_pin() {
    let dir = tempfile::tempdir().unwrap();
    let tb = dir.path().join("tb");
    // The content and the shard nodes are on peer 0 (unpinned) before its
    // daemon starts; peers 1 and 2 have nothing.
    let (root, blocks) = test_dag("sharded", 3);
    let all: Vec<cid::Cid> = blocks.iter().map(|(c, _)| *c).collect();
    // Import order (leaves, then their parent) as the sharded adder groups.
    let first: Vec<cid::Cid> = all[1..5].to_vec();
    let mut second: Vec<cid::Cid> = all[5..].to_vec();
    second.push(root);
    let shard0 = dagcbor::shard_dag(&first);
    let shard1 = dagcbor::shard_dag(&second);
    let (s0, s1) = (shard0[0].0, shard1[0].0);
    let dag = dagcbor::shard_dag(&[s0, s1]);
    let cluster_dag = dag[0].0;
    let origin = Running::start_with(EmbeddedConfig::new(&tb.join("peer-0"), SECRET)).await;
    for b in [&blocks, &shard0, &shard1, &dag] {
        put(&origin, b).await;
    }
    origin.stop().await;

    let testbed = crate::support::embedded_testbed(&tb, false).await;
    let peers = testbed.file.peers.clone();
    let api = peers[0].api.clone();
    let client = crate::support::http();
    let (meta, cdag, s0s, s1s) = (
        root.to_string(),
        cluster_dag.to_string(),
        s0.to_string(),
        s1.to_string(),
    );
    let record = |cid: &str, ty: &str, name: &str, extra: &str| {
        format!(r#"{{"cid":"{cid}","type":"{ty}","name":"{name}"{extra}}}"#)
    };
    let body = [
        record(
            &meta,
            "meta-pin",
            "f",
            &format!(r#","reference":"{cdag}","shard_size":100000"#),
        ),
        record(
            &cdag,
            "clusterdag-pin",
            "f-clusterDAG",
            &format!(
                r#","reference":"{meta}","mode":"direct","replication_factor_min":-1,"replication_factor_max":-1"#
            ),
        ),
        record(
            &s0s,
            "shard-pin",
            "f-shard-0",
            &format!(
                r#","max_depth":1,"replication_factor_min":1,"replication_factor_max":1,"user_allocations":["{}"]"#,
                peers[1].id
            ),
        ),
        record(
            &s1s,
            "shard-pin",
            "f-shard-1",
            &format!(
                r#","reference":"{s0s}","max_depth":1,"replication_factor_min":1,"replication_factor_max":1,"user_allocations":["{}"]"#,
                peers[2].id
            ),
        ),
    ]
    .join("\n");
    let r = client
        .post(format!("{api}/pins/batch"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());

    // Each shard on its chosen peer; the meta pin pinned where they are.
    let want = |s: &str| {
        let mut v: Vec<(String, String)> = vec![
            (peers[0].id.clone(), "remote".to_string()),
            (peers[1].id.clone(), s.to_string()),
            (peers[2].id.clone(), s.to_string()),
        ];
        v.sort();
        v
    };
    wait_until("the meta pin pinned", || async {
        statuses(&client, &api, &meta).await == want("pinned")
    })
    .await;
    let s0_status = statuses(&client, &api, &s0s).await;
    assert!(
        s0_status.contains(&(peers[1].id.clone(), "pinned".into()))
            && s0_status.iter().filter(|(_, s)| s == "pinned").count() == 1,
        "{s0_status:?}"
    );
    wait_until("the cluster DAG pinned everywhere", || async {
        statuses(&client, &api, &cdag)
            .await
            .iter()
            .filter(|(_, s)| s == "pinned")
            .count()
            == 3
    })
    .await;
    // The same aggregate in GET /pins?cids= and the stream.
    let (_, by_cids) = get(&client, format!("{api}/pins?cids={meta}")).await;
    let line: Value = serde_json::from_str(by_cids.lines().next().unwrap()).unwrap();
    assert_eq!(line["peer_map"][&peers[1].id]["status"], "pinned", "{line}");
    let (_, stream) = get(&client, format!("{api}/pins")).await;
    let listed: Value = stream
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["cid"] == meta.as_str())
        .unwrap();
    assert_eq!(
        listed["peer_map"][&peers[0].id]["status"], "remote",
        "{listed}"
    );

    // Filters by IPFS Cluster's types.
    let (_, shards) = get(&client, format!("{api}/allocations?filter=shard-pin")).await;
    let shard_cids: BTreeSet<String> = shards
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["cid"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(shard_cids, BTreeSet::from([s0s.clone(), s1s.clone()]));
    let (_, metas) = get(
        &client,
        format!("{api}/allocations?filter=meta-pin,clusterdag-pin"),
    )
    .await;
    assert_eq!(metas.lines().count(), 2, "{metas}");

    // Nothing else held: gc on peers 1 and 2 removes nothing.
    assert!(gc_removed(&client, &peers[1].api).await.is_empty());
    assert!(gc_removed(&client, &peers[2].api).await.is_empty());

    // A shard alone cannot be unpinned.
    let r = client
        .delete(format!("{api}/pins/{s0s}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    let why = r.text().await.unwrap();
    assert!(why.contains(&meta), "{why}");

    // The meta pin takes everything with it.
    let r = client
        .delete(format!("{api}/pins/{meta}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let (_, left) = get(&client, format!("{api}/allocations")).await;
    assert_eq!(left.trim(), "", "{left}");
    // Each peer held its shard's node and blocks and the cluster DAG, and
    // nothing of the other shard: once unpinned, gc frees exactly those.
    let mut first_held = mhs(&first);
    first_held.extend(mhs(&[s0, cluster_dag]));
    let mut second_held = mhs(&second);
    second_held.extend(mhs(&[s1, cluster_dag]));
    for (peer, expected) in [(&peers[1], first_held), (&peers[2], second_held)] {
        let end = tokio::time::Instant::now() + DEADLINE;
        let mut freed = BTreeSet::new();
        while freed != expected {
            assert!(
                tokio::time::Instant::now() < end,
                "{}: freed {} blocks, expected {}",
                peer.id,
                freed.len(),
                expected.len()
            );
            freed.extend(gc_removed(&client, &peer.api).await);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    testbed.stop().await;
}

#[tokio::test]
async fn kubo_holds_a_shard_pin_as_direct_pins_of_its_node_and_blocks_and_releases_them_together() {
    use pinfleet::ipfs::KuboClient;
    use pinfleet::testkit::MockKubo;
    let (mock, url) = MockKubo::start().await.unwrap();
    let kubo = KuboClient::new(&url, Duration::from_secs(10)).unwrap();
    let (root, blocks) = test_dag("kubo-shard", 3);
    let mid0 = blocks[4].0;
    let shard = dagcbor::shard_dag(&[root, mid0]);
    let shard_root = shard[0].0;
    // Kubo reads only the shard node (its links are not followed further).
    mock.put_raw_block(shard_root, shard[0].1.clone());
    let other = blocks[1].0;
    mock.add_pin_exact(other, PinKind::Recursive);

    let opts = PinOpts {
        max_depth: Some(1),
        progress_timeout: Duration::from_secs(10),
        ..PinOpts::default()
    };
    kubo.pin(key(&shard_root), opts, None).await.unwrap();
    for c in [shard_root, root, mid0] {
        assert_eq!(mock.pinned(key(&c)), Some(PinKind::Direct), "{c}");
    }
    assert_eq!(mock.pin_count(), 4, "{:?}", mock.pins());

    kubo.unpin(key(&shard_root), true).await.unwrap();
    for c in [shard_root, root, mid0] {
        assert_eq!(mock.pinned(key(&c)), None, "{c}");
    }
    assert_eq!(mock.pinned(key(&other)), Some(PinKind::Recursive));
    // A data pin's unpin touches nothing else.
    kubo.unpin(key(&other), true).await.unwrap();
    assert_eq!(mock.pin_count(), 0);
    mock.stop().await;
}
