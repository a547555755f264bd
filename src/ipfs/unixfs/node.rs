//! One block of a UnixFS DAG as a reader walking it sees it
//! ([`decode_node`]), and one step down a HAMT-sharded directory by name
//! ([`hamt_step`], [`hamt_split`]).
//!
//! It decodes single blocks only: fetching them, walking whole DAGs and
//! byte ranges belong to the backend that reads (the embedded node).

use bytes::Bytes;
use cid::Cid;

use super::hamt::murmur3_64;
use super::{DataType, UnixfsData};
use crate::ipfs::dagpb::{self, DAG_PB, RAW};

/// What one block of a UnixFS DAG is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnixfsNode {
    /// A file or a chunk of one: `inline` bytes first, then the children
    /// (CID and file bytes under each, from the node's blocksizes). A raw
    /// block is a file of its bytes with no children.
    File {
        /// File bytes under this node.
        size: u64,
        /// Bytes held in the node itself.
        inline: Bytes,
        /// The children and the bytes each holds.
        children: Vec<(Cid, u64)>,
    },
    /// A basic directory: its named links, in order.
    Directory {
        /// Name and target of each entry.
        links: Vec<(String, Cid)>,
    },
    /// A node of a HAMT-sharded directory: links named by slot (two hex
    /// digits) for sub-shards, slot and name for entries.
    HamtShard {
        /// The links as named in the node.
        links: Vec<(String, Cid)>,
    },
    /// A symlink.
    Symlink {
        /// Where it points.
        target: String,
    },
}

/// Decodes block `block` of CID `cid` as a UnixFS node; the reason when it
/// is not one this reader can walk (another codec, plain dag-pb, metadata,
/// sizes that disagree).
pub fn decode_node(cid: &Cid, block: &[u8]) -> Result<UnixfsNode, String> {
    match cid.codec() {
        RAW => Ok(UnixfsNode::File {
            size: block.len() as u64,
            inline: Bytes::copy_from_slice(block),
            children: Vec::new(),
        }),
        DAG_PB => {
            let node = dagpb::decode(block).map_err(|e| e.to_string())?;
            let data = node
                .data
                .ok_or("a dag-pb node without UnixFS Data (not UnixFS)")?;
            let fs = UnixfsData::decode(&data).map_err(|e| e.to_string())?;
            let named = || {
                node.links
                    .iter()
                    .map(|l| (l.name.clone().unwrap_or_default(), l.hash))
                    .collect()
            };
            match fs.kind {
                DataType::File | DataType::Raw => {
                    if fs.blocksizes.len() != node.links.len() {
                        return Err(format!(
                            "{} links but {} blocksizes",
                            node.links.len(),
                            fs.blocksizes.len()
                        ));
                    }
                    let inline = fs.data.unwrap_or_default();
                    let total = fs
                        .blocksizes
                        .iter()
                        .try_fold(inline.len() as u64, |a, b| a.checked_add(*b))
                        .ok_or("blocksizes overflow")?;
                    if let Some(size) = fs.filesize.filter(|s| *s != total) {
                        return Err(format!(
                            "filesize says {size} bytes, its data and blocksizes {total}"
                        ));
                    }
                    let children = node
                        .links
                        .iter()
                        .zip(fs.blocksizes)
                        .map(|(l, s)| (l.hash, s))
                        .collect();
                    Ok(UnixfsNode::File {
                        size: total,
                        inline,
                        children,
                    })
                }
                DataType::Directory => Ok(UnixfsNode::Directory { links: named() }),
                DataType::HamtShard => Ok(UnixfsNode::HamtShard { links: named() }),
                DataType::Symlink => {
                    let target = fs.data.unwrap_or_default();
                    let target = String::from_utf8(target.to_vec())
                        .map_err(|_| "a symlink target that is not UTF-8".to_string())?;
                    Ok(UnixfsNode::Symlink { target })
                }
                DataType::Metadata => Err("a UnixFS metadata node".into()),
            }
        }
        codec => Err(format!(
            "codec 0x{codec:x}: only UnixFS (dag-pb and raw) can be read"
        )),
    }
}

/// Where looking up a name in a HAMT shard node leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HamtStep {
    /// The entry itself.
    Entry(Cid),
    /// A sub-shard to look in at the next depth.
    Shard(Cid),
    /// No such name.
    Missing,
}

/// Looks `name` up among the `links` of a shard node at `depth` (0 for the
/// directory's root node): Kubo's fanout of 256, one byte of the name's
/// murmur3 hash per level.
pub fn hamt_step(links: &[(String, Cid)], name: &str, depth: usize) -> HamtStep {
    let hash = murmur3_64(name.as_bytes());
    let Some(slot) = hash.get(depth) else {
        return HamtStep::Missing;
    };
    let prefix = format!("{slot:02X}");
    for (link, cid) in links {
        let Some(rest) = link.strip_prefix(&prefix) else {
            continue;
        };
        if rest.is_empty() {
            return HamtStep::Shard(*cid);
        }
        if rest == name {
            return HamtStep::Entry(*cid);
        }
    }
    HamtStep::Missing
}

/// The `links` of a shard node split into its entries (the name without
/// the slot prefix) and its sub-shards.
pub fn hamt_split(links: Vec<(String, Cid)>) -> (Vec<(String, Cid)>, Vec<Cid>) {
    let mut entries = Vec::new();
    let mut shards = Vec::new();
    for (name, cid) in links {
        match name.get(2..) {
            Some("") | None => shards.push(cid),
            Some(rest) => entries.push((rest.to_string(), cid)),
        }
    }
    (entries, shards)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::unixfs::{AddOptions, add_path};

    fn blocks_of(dir: &std::path::Path) -> (Cid, std::collections::HashMap<Cid, Vec<u8>>) {
        let mut blocks = std::collections::HashMap::new();
        let added = add_path(dir, &AddOptions::default(), &mut |c, d| {
            blocks.insert(c, d);
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap();
        (added.last().unwrap().cid, blocks)
    }

    #[test]
    fn a_sharded_directory_is_walked_by_name_to_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("big");
        std::fs::create_dir(&root).unwrap();
        // Long names: over the 256 KiB estimate with few files.
        let names: Vec<String> = (0..2500).map(|i| format!("{i:0>100}")).collect();
        for n in &names {
            std::fs::write(root.join(n), n.as_bytes()).unwrap();
        }
        let (top, blocks) = blocks_of(&root);
        let top_links = match decode_node(&top, &blocks[&top]).unwrap() {
            UnixfsNode::HamtShard { links } => links,
            other => panic!("not sharded: {other:?}"),
        };
        let lookup = |n: &str| {
            let (mut links, mut depth) = (top_links.clone(), 0);
            loop {
                match hamt_step(&links, n, depth) {
                    HamtStep::Entry(c) => break Some(c),
                    HamtStep::Shard(c) => match decode_node(&c, &blocks[&c]).unwrap() {
                        UnixfsNode::HamtShard { links: l } => (links, depth) = (l, depth + 1),
                        other => panic!("{other:?}"),
                    },
                    HamtStep::Missing => break None,
                }
            }
        };
        for n in names.iter().step_by(97) {
            let found = lookup(n).unwrap_or_else(|| panic!("{n} not found"));
            match decode_node(&found, &blocks[&found]).unwrap() {
                UnixfsNode::File { inline, .. } => assert_eq!(inline, n.as_bytes()),
                other => panic!("{other:?}"),
            }
        }
        for absent in ["nope", "", &format!("{:0>99}", 1)] {
            assert_eq!(lookup(absent), None, "{absent}");
        }
        // Listing: every name once, over all shard nodes.
        let mut listed = Vec::new();
        let mut todo = vec![top];
        while let Some(c) = todo.pop() {
            let UnixfsNode::HamtShard { links } = decode_node(&c, &blocks[&c]).unwrap() else {
                panic!()
            };
            let (entries, shards) = hamt_split(links);
            listed.extend(entries.into_iter().map(|(n, _)| n));
            todo.extend(shards);
        }
        listed.sort();
        assert_eq!(listed, names);
    }

    #[test]
    fn file_nodes_report_their_children_and_sizes_and_lies_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, vec![7u8; 600 * 1024]).unwrap();
        let (root, blocks) = blocks_of(&f);
        let UnixfsNode::File { size, children, .. } = decode_node(&root, &blocks[&root]).unwrap()
        else {
            panic!()
        };
        assert_eq!(size, 600 * 1024);
        let sizes: Vec<u64> = children.iter().map(|c| c.1).collect();
        assert_eq!(sizes, [262_144, 262_144, 90_112]);
        // A filesize that disagrees with the blocksizes.
        let lie = UnixfsData {
            kind: DataType::File,
            data: None,
            filesize: Some(5),
            blocksizes: vec![3],
        };
        let block = dagpb::encode(&dagpb::PbNode {
            links: vec![dagpb::PbLink {
                hash: children[0].0,
                name: Some(String::new()),
                tsize: Some(3),
            }],
            data: Some(lie.encode()),
        });
        assert!(decode_node(&root, &block).is_err());
        let cbor = Cid::new_v1(0x71, *root.hash());
        assert!(decode_node(&cbor, b"x").unwrap_err().contains("0x71"));
    }
}
