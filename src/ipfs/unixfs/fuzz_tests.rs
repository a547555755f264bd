//! Property tests that feed the dag-pb and UnixFS decoders, and the file
//! reader walking a DAG, hostile blocks: arbitrary bytes and mutations of
//! the blocks of real imports. Each must answer a value or an error (never
//! panic), and a decoded value is never larger than the bytes it came from.
//!
//! Bounded for CI: blocks of a few KiB at most; the case counts keep each
//! test to a few seconds in a debug build.

use std::collections::HashMap;
use std::convert::Infallible;

use cid::{Cid, Version};
use proptest::prelude::*;

use super::import::block_cid;
use super::{AddOptions, UnixfsData, add_reader, read_file};
use crate::ipfs::dagpb::{self, DAG_PB, PbLink, PbNode, RAW};
use crate::testkit::fuzz::{bytes, mutated};

/// Varints, tags and lengths of the protobuf wire format, and field tags of
/// dag-pb (`Links` 2, `Data` 1) and UnixFS (`Type`, `Data`, `filesize`,
/// `blocksizes`).
const PB_TOKENS: &[&[u8]] = &[
    b"\x12",
    b"\x0a",
    b"\x08",
    b"\x18",
    b"\x20",
    b"\x22",
    b"\x80",
    b"\xff\xff\xff\xff\x0f",
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    b"\x00",
    b"\x12\x00",
    b"\x0a\x00",
    b"\x01\x70",
    b"\x12\x20",
    b"\x4b",
    b"\x0f",
];

type Blocks = Vec<(Cid, Vec<u8>)>;

fn import(content: &[u8], opts: &AddOptions) -> (Cid, Blocks) {
    let mut blocks = Vec::new();
    let added = add_reader(content, opts, &mut |cid, block| {
        blocks.push((cid, block));
        Ok::<_, Infallible>(())
    })
    .unwrap();
    (added.cid, blocks)
}

/// Real blocks: the nodes and leaves of a few imports (one leaf, one level
/// of links, two levels), and a directory node.
fn corpus() -> Vec<Vec<u8>> {
    let content: Vec<u8> = (0..600u32).map(|i| (i * 7) as u8).collect();
    let mut out = Vec::new();
    for (len, chunk, v1) in [
        (5, 8, false),
        (100, 7, false),
        (600, 2, true),
        (600, 3, false),
    ] {
        let opts = AddOptions {
            cid_version: if v1 { Version::V1 } else { Version::V0 },
            raw_leaves: Some(false),
            chunk_size: chunk,
            hidden: false,
        };
        let (_, blocks) = import(&content[..len], &opts);
        // The root and a few inner nodes and leaves.
        out.extend(blocks.iter().rev().take(3).map(|b| b.1.clone()));
    }
    let (leaf, _) = import(b"x", &AddOptions::default());
    out.push(dagpb::encode(&PbNode {
        links: vec![PbLink {
            hash: leaf,
            name: Some("x".into()),
            tsize: Some(9),
        }],
        data: Some(UnixfsData::decode(&[0x08, 0x01]).unwrap().encode()),
    }));
    out
}

fn unixfs_corpus() -> Vec<Vec<u8>> {
    corpus()
        .iter()
        .filter_map(|b| dagpb::decode(b).ok()?.data)
        .collect()
}

fn check_node(block: &[u8]) {
    if let Ok(node) = dagpb::decode(block) {
        // A link takes at least its tag, length and a CID's bytes.
        assert!(
            node.links.len() <= block.len() / 2,
            "{} links",
            node.links.len()
        );
        assert!(node.data.as_ref().map_or(0, Vec::len) <= block.len());
        // Whatever decodes re-encodes to the same node.
        assert_eq!(dagpb::decode(&dagpb::encode(&node)).unwrap(), node);
    }
    let cid = block_cid(Version::V1, DAG_PB, block);
    if let Ok(links) = dagpb::links(&cid, block) {
        assert!(links.len() <= block.len() / 2);
    }
}

fn check_data(bytes: &[u8]) {
    if let Ok(d) = UnixfsData::decode(bytes) {
        assert!(d.blocksizes.len() <= bytes.len());
        assert!(d.data.as_ref().map_or(0, |x| x.len()) <= bytes.len());
    }
}

/// Reads the file whose root block is `root` (stored under its own CID,
/// dag-pb or raw) from `store` plus that block; the answer is a value or an
/// error, and never more bytes than the links it makes can reach.
fn check_read(root: Vec<u8>, codec: u64, store: &Blocks) {
    let cid = block_cid(Version::V1, codec, &root);
    let mut map: HashMap<Cid, Vec<u8>> = store.iter().cloned().collect();
    let stored: usize = map.values().map(Vec::len).sum();
    let root_len = root.len();
    map.insert(cid, root);
    let mut gets = 0usize;
    let r = read_file(&cid, &mut |c: &Cid| {
        gets += 1;
        map.get(c).cloned().ok_or("missing block")
    });
    if let Ok(out) = r {
        // Each link of the root reaches at most the whole stored DAG.
        assert!(
            out.len() <= (root_len + 1) * (stored + root_len),
            "{} bytes",
            out.len()
        );
    }
    assert!(
        gets <= (root_len + 1) * (map.len() + 1),
        "{gets} block reads"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn dag_pb_decoder_answers_mutated_blocks_with_a_node_or_an_error(
        block in mutated(corpus(), PB_TOKENS, 6),
    ) {
        check_node(&block);
    }

    #[test]
    fn dag_pb_decoder_answers_arbitrary_bytes_with_a_node_or_an_error(block in bytes(1024)) {
        check_node(&block);
    }

    #[test]
    fn unixfs_data_decoder_answers_mutated_data_with_a_value_or_an_error(
        data in mutated(unixfs_corpus(), PB_TOKENS, 6),
    ) {
        check_data(&data);
    }

    #[test]
    fn unixfs_data_decoder_answers_arbitrary_bytes_with_a_value_or_an_error(data in bytes(1024)) {
        check_data(&data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// A hostile root over an honest DAG: the root node of an import,
    /// mutated and stored under the CID of its new bytes.
    #[test]
    fn file_reader_answers_a_mutated_root_with_bytes_or_an_error(
        (content_len, chunk) in (0usize..700, 1usize..9),
        edits in proptest::collection::vec(crate::testkit::fuzz::edit(PB_TOKENS), 1..6),
        raw in any::<bool>(),
    ) {
        let content: Vec<u8> = (0..content_len).map(|i| (i % 251) as u8).collect();
        let opts = AddOptions { chunk_size: chunk, ..AddOptions::default() };
        let (root, blocks) = import(&content, &opts);
        let root_block = blocks.iter().find(|b| b.0 == root).unwrap().1.clone();
        let mutated = crate::testkit::fuzz::apply(&root_block, &edits);
        check_read(mutated, if raw { RAW } else { DAG_PB }, &blocks);
    }

    #[test]
    fn file_reader_answers_an_arbitrary_root_block_with_bytes_or_an_error(block in bytes(512)) {
        check_read(block, DAG_PB, &Vec::new());
    }
}
