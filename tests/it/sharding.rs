//! Sharding (issue 18, docs/sharding.md): content larger than any one peer
//! split across peers and read back whole.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use pinfleet::ipfs::unixfs::{AddOptions, add_reader};
use pinfleet::ipfs::{IpfsBackend, IpfsError};

/// Bytes that differ at every offset.
fn varied(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// An in-process embedded node in `dir`.
async fn start_node(dir: &Path) -> crate::support::InProcessNode {
    let config = pinfleet::ipfs::embedded::EmbeddedConfig::new(dir, [11; 32]);
    crate::support::InProcessNode::start_with(config).await
}

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
