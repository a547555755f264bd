//! DAG-CBOR as far as sharding needs it: the links of any DAG-CBOR block
//! (for a walk), and IPFS Cluster's shard nodes (docs/sharding.md): a map
//! whose keys are `"0"`, `"1"`, … and whose values are links, at most
//! [`MAX_LINKS`] per node; more links go to leaf nodes under an indirect
//! root that links them the same way.
//!
//! Encoding is canonical DAG-CBOR (map keys shortest first, then bytewise,
//! which for decimal keys is numeric order), so the same links give the
//! same CIDs as IPFS Cluster's `cbor.WrapObject`. Pure: no I/O.

use cbor4ii::core::Value;
use cbor4ii::core::dec::Decode;
use cid::Cid;
use cid::multihash::Multihash;
use sha2::Digest;

/// The DAG-CBOR codec.
pub const DAG_CBOR: u64 = 0x71;
/// Links per shard node, IPFS Cluster's `MaxLinks` (a node stays well
/// under Bitswap's block size limit).
pub const MAX_LINKS: usize = 5984;
/// The CBOR tag of a link.
const LINK_TAG: u64 = 42;
/// Nesting deeper than this is refused rather than walked.
const MAX_NESTING: usize = 64;

/// Why a block is not DAG-CBOR this module can read.
#[derive(Debug, thiserror::Error)]
pub enum DagCborError {
    /// Not CBOR at all.
    #[error("not dag-cbor: {0}")]
    Decode(String),
    /// A tag-42 value that is not a CID.
    #[error("invalid dag-cbor link: {0}")]
    Link(String),
    /// Nested deeper than [`MAX_NESTING`].
    #[error("dag-cbor nested more than {MAX_NESTING} levels")]
    TooDeep,
}

/// Every link of a DAG-CBOR block, in the order they appear.
pub fn links(block: &[u8]) -> Result<Vec<Cid>, DagCborError> {
    let value = Value::decode(&mut cbor4ii::core::utils::SliceReader::new(block))
        .map_err(|e| DagCborError::Decode(e.to_string()))?;
    let mut out = Vec::new();
    // Depth-first, left to right: a stack of values still to look at, each
    // with its depth; pushed in reverse so they pop in order.
    let mut todo: Vec<(&Value, usize)> = vec![(&value, 0)];
    while let Some((v, depth)) = todo.pop() {
        if depth > MAX_NESTING {
            return Err(DagCborError::TooDeep);
        }
        match v {
            Value::Tag(LINK_TAG, inner) => out.push(link_of(inner)?),
            Value::Tag(_, inner) => todo.push((inner, depth + 1)),
            Value::Array(items) => todo.extend(items.iter().rev().map(|i| (i, depth + 1))),
            Value::Map(entries) => todo.extend(
                entries
                    .iter()
                    .rev()
                    .flat_map(|(k, v)| [(v, depth + 1), (k, depth + 1)]),
            ),
            _ => {}
        }
    }
    Ok(out)
}

fn link_of(inner: &Value) -> Result<Cid, DagCborError> {
    match inner {
        // A link is the CID's bytes behind a 0 (the identity multibase).
        Value::Bytes(b) if b.first() == Some(&0) => {
            Cid::try_from(&b[1..]).map_err(|e| DagCborError::Link(e.to_string()))
        }
        _ => Err(DagCborError::Link(
            "tag 42 over something else than bytes".into(),
        )),
    }
}

/// The shard node(s) linking `links`, root first: one node when there are
/// at most [`MAX_LINKS`], else an indirect root followed by the leaf nodes
/// it links (each of at most [`MAX_LINKS`] of `links`, in order).
pub fn shard_dag(links: &[Cid]) -> Vec<(Cid, Vec<u8>)> {
    if links.len() <= MAX_LINKS {
        return vec![node(links)];
    }
    let leaves: Vec<(Cid, Vec<u8>)> = links.chunks(MAX_LINKS).map(node).collect();
    let roots: Vec<Cid> = leaves.iter().map(|(c, _)| *c).collect();
    let mut out = Vec::with_capacity(leaves.len() + 1);
    out.push(node(&roots));
    out.extend(leaves);
    out
}

/// How many links deep a shard whose node(s) [`shard_dag`] built must be
/// pinned to hold its blocks: 1, or 2 under an indirect root.
pub fn shard_depth(links: usize) -> i32 {
    if links <= MAX_LINKS { 1 } else { 2 }
}

/// One node: `{"0": links[0], "1": links[1], …}`, and its CIDv1.
fn node(links: &[Cid]) -> (Cid, Vec<u8>) {
    let mut out = Vec::with_capacity(links.len() * 44 + 9);
    head(&mut out, 5, links.len() as u64);
    for (i, link) in links.iter().enumerate() {
        let key = i.to_string();
        head(&mut out, 3, key.len() as u64);
        out.extend_from_slice(key.as_bytes());
        head(&mut out, 6, LINK_TAG);
        let bytes = link.to_bytes();
        head(&mut out, 2, bytes.len() as u64 + 1);
        out.push(0);
        out.extend_from_slice(&bytes);
    }
    (cid_of(&out), out)
}

/// The CIDv1 (dag-cbor, sha2-256) of `block`.
pub fn cid_of(block: &[u8]) -> Cid {
    let digest = sha2::Sha256::digest(block);
    // A 32-byte digest always fits a 64-byte multihash: infallible.
    let mh = Multihash::<64>::wrap(0x12, &digest).expect("32 bytes fit in 64");
    Cid::new_v1(DAG_CBOR, mh)
}

/// A CBOR head: major type and argument, in the shortest form.
fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(i: u32) -> Cid {
        let mh = Multihash::<64>::wrap(0x12, &sha2::Sha256::digest(i.to_be_bytes())).unwrap();
        Cid::new_v1(0x55, mh)
    }

    #[test]
    fn a_shard_node_links_its_blocks_in_order_and_reads_back() {
        let links: Vec<Cid> = (0..30).map(raw).collect();
        let nodes = shard_dag(&links);
        assert_eq!(nodes.len(), 1);
        let (cid, block) = &nodes[0];
        assert_eq!(*cid, cid_of(block));
        assert_eq!(cid.codec(), DAG_CBOR);
        assert_eq!(super::links(block).unwrap(), links);
        assert_eq!(shard_depth(links.len()), 1);
    }

    #[test]
    fn a_shard_node_is_canonical_dag_cbor_with_decimal_keys() {
        // {"0": link} — a map of 1, text "0", tag 42, bytes 0x00 ‖ cid.
        let link = raw(7);
        let (_, block) = &shard_dag(&[link])[0];
        let mut want = vec![0xa1, 0x61, b'0', 0xd8, 0x2a, 0x58, 37, 0];
        want.extend_from_slice(&link.to_bytes());
        assert_eq!(block, &want);
        // Keys sort shortest first: "9" before "10", as a decoder sees them.
        let links: Vec<Cid> = (0..11).map(raw).collect();
        let (_, block) = &shard_dag(&links)[0];
        let value = Value::decode(&mut cbor4ii::core::utils::SliceReader::new(block)).unwrap();
        let Value::Map(entries) = value else {
            panic!("not a map")
        };
        let keys: Vec<String> = entries
            .iter()
            .map(|(k, _)| match k {
                Value::Text(t) => t.clone(),
                other => panic!("key {other:?}"),
            })
            .collect();
        let want: Vec<String> = (0..11).map(|i| i.to_string()).collect();
        assert_eq!(keys, want);
    }

    #[test]
    fn more_links_than_a_node_holds_go_under_an_indirect_root() {
        let links: Vec<Cid> = (0..(MAX_LINKS as u32 * 2 + 5)).map(raw).collect();
        let nodes = shard_dag(&links);
        assert_eq!(nodes.len(), 4, "root and three leaves");
        let leaves: Vec<Cid> = nodes[1..].iter().map(|(c, _)| *c).collect();
        assert_eq!(super::links(&nodes[0].1).unwrap(), leaves);
        let mut all = Vec::new();
        for (_, block) in &nodes[1..] {
            let l = super::links(block).unwrap();
            assert!(l.len() <= MAX_LINKS);
            all.extend(l);
        }
        assert_eq!(all, links);
        assert_eq!(shard_depth(links.len()), 2);
    }

    #[test]
    fn links_are_found_anywhere_in_a_block_and_garbage_is_an_error() {
        // [ {"a": link1}, 5, link2 ]
        let (l1, l2) = (raw(1), raw(2));
        let mut block = vec![0x83, 0xa1, 0x61, b'a', 0xd8, 0x2a, 0x58, 37, 0];
        block.extend_from_slice(&l1.to_bytes());
        block.extend_from_slice(&[0x05, 0xd8, 0x2a, 0x58, 37, 0]);
        block.extend_from_slice(&l2.to_bytes());
        assert_eq!(links(&block).unwrap(), vec![l1, l2]);
        assert!(links(&[0xff, 0x00]).is_err());
        // Tag 42 over an integer is not a link.
        assert!(matches!(
            links(&[0xd8, 0x2a, 0x01]),
            Err(DagCborError::Link(_))
        ));
        // 100 nested arrays: refused, not walked.
        let mut deep = vec![0x81; 100];
        deep.push(0x01);
        assert!(links(&deep).is_err());
    }
}
