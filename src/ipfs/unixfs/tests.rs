//! Tests of the importer and reader: Kubo and go-ipfs vectors, tree
//! structure, directories, and reading back.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{self, Read};
use std::path::Path;

use multihash::Multihash;
use proptest::prelude::*;

use super::import::block_cid;
use super::*;
use crate::ipfs::dagpb::{self, DAG_PB, IDENTITY, PbLink, PbNode, RAW};

type Blocks = Vec<(Cid, Vec<u8>)>;

fn add(content: &[u8], opts: &AddOptions) -> (Added, Blocks) {
    let mut blocks = Vec::new();
    let added = add_reader(content, opts, &mut |cid, block| {
        blocks.push((cid, block));
        Ok::<_, Infallible>(())
    })
    .unwrap();
    (added, blocks)
}

fn chunked(chunk_size: usize) -> AddOptions {
    AddOptions {
        chunk_size,
        ..AddOptions::default()
    }
}

fn v1() -> AddOptions {
    AddOptions {
        cid_version: Version::V1,
        ..AddOptions::default()
    }
}

fn read_back(root: &Cid, blocks: &Blocks) -> Vec<u8> {
    let store: HashMap<Cid, Vec<u8>> = blocks.iter().cloned().collect();
    read_file(root, &mut |cid: &Cid| {
        store
            .get(cid)
            .cloned()
            .ok_or_else(|| format!("missing {cid}"))
    })
    .unwrap()
}

fn node(blocks: &Blocks, cid: &Cid) -> (PbNode, UnixfsData) {
    decode_node(&blocks.iter().find(|(c, _)| c == cid).unwrap().1)
}

fn decode_node(block: &[u8]) -> (PbNode, UnixfsData) {
    let node = dagpb::decode(block).unwrap();
    let data = UnixfsData::decode(node.data.as_ref().unwrap()).unwrap();
    (node, data)
}

fn strs(cids: impl IntoIterator<Item = Cid>) -> Vec<String> {
    cids.into_iter().map(|c| c.to_string()).collect()
}

const LOREM: &[u8] = b"Lorem ipsum dolor sit amet, sit enim montes aliquam. Cras non lorem, \
    rhoncus condimentum, irure et ante. Pulvinar suscipit odio ante, et tellus a enim, \
    wisi ipsum, vel rhoncus eget faucibus varius, luctus turpis nibh vel odio nulla pede.";

// --- Kubo vectors (real `ipfs add` outputs) ---

#[test]
fn hello_world_matches_kubo() {
    let (added, blocks) = add(b"hello world\n", &AddOptions::default());
    assert_eq!(
        added.cid.to_string(),
        "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
    );
    assert_eq!(blocks.len(), 1, "a one-chunk file is its leaf");
    assert_eq!(added.bytes, 12);
    assert_eq!(added.size, blocks[0].1.len() as u64);
    assert_eq!(added.name, added.cid.to_string());
}

#[test]
fn hello_world_cid_v1_is_one_raw_block() {
    let (added, blocks) = add(b"hello world\n", &v1());
    assert_eq!(
        added.cid.to_string(),
        "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
    );
    assert_eq!(blocks, vec![(added.cid, b"hello world\n".to_vec())]);
    assert_eq!(added.size, 12);
}

#[test]
fn empty_file_matches_kubo() {
    let (added, blocks) = add(b"", &AddOptions::default());
    assert_eq!(
        added.cid.to_string(),
        "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
    );
    // Type=File, filesize=0, no Data field.
    assert_eq!(blocks[0].1, [0x0a, 0x04, 0x08, 0x02, 0x18, 0x00]);
    assert_eq!((added.bytes, added.size), (0, 6));
    assert_eq!(read_back(&added.cid, &blocks), b"");
}

#[test]
fn empty_file_cid_v1_is_the_empty_raw_block() {
    let (added, _) = add(b"", &v1());
    // The DAG-PB spec gives the sha2-256 of the empty block as a dag-pb
    // CIDv1; the raw leaf has the same multihash under codec raw.
    let spec: Cid = "bafybeihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        .parse()
        .unwrap();
    assert_eq!(added.cid, Cid::new_v1(RAW, *spec.hash()));
}

#[test]
fn empty_directory_matches_kubo() {
    let dir = tempfile::tempdir().unwrap();
    let (entries, _) = add_tree(dir.path(), &AddOptions::default());
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0].cid.to_string(),
        "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
    );
    assert_eq!(entries[0].size, 4);
}

// --- go-ipfs vectors recorded by rust-ipfs's test suite (ipfs-unixfs
// crate, file/adder.rs), produced by go-ipfs with `--chunker size-N` ---

#[test]
fn foobar_matches_go_ipfs() {
    let (added, _) = add(b"foobar\n", &AddOptions::default());
    assert_eq!(
        added.cid.to_string(),
        "QmRgutAxd8t7oGkSm4wmeuByG6M51wcTso6cubDdQtuEfL"
    );
    // "matches cid from go-ipfs 0.6.0"
    let content = b"\x08\x02\x12\x12Here is some data\n\x18\x12";
    assert_eq!(
        add(content, &AddOptions::default()).0.cid.to_string(),
        "QmQZE72h2Vdm3F5gWr9RLuzSw3rUJEkKedWEa8t8XVygT5"
    );
}

#[test]
fn foobar_in_two_byte_chunks_matches_go_ipfs_block_by_block() {
    let (added, blocks) = add(b"foobar\n", &chunked(2));
    assert_eq!(
        strs(blocks.iter().map(|b| b.0)),
        [
            "QmfVyMoStzTvdnUR7Uotzh82gmL427q9z3xW5Y8fUoszi4", // "fo"
            "QmdPyW4CWE3QBkgjWfjM5f7Tjb3HukxVuBXZtkqAGwsMnm", // "ob"
            "QmNhDQpphvMWhdCzP74taRzXDaEfPGq8vWfFRzD7mEgePM", // "ar"
            "Qmc5m94Gu7z62RC8waSKkZUrCCBJPyHbkpmGzEePxy2oXJ", // "\n"
            "QmRJHYTNvC3hmd9gJQARxLR1QMEincccBV53bBw524yyq6", // root
        ]
    );
    assert_eq!(added.cid, blocks[4].0);
    assert_eq!(read_back(&added.cid, &blocks), b"foobar\n");
}

#[test]
fn three_level_tree_matches_go_ipfs() {
    assert_eq!(LOREM.len(), 237);
    let (added, blocks) = add(LOREM, &chunked(1));
    // go-ipfs 0.5: 237 leaves, two internal nodes, the root.
    assert_eq!(blocks.len(), 240);
    assert_eq!(
        added.cid.to_string(),
        "QmRQ6NZNUs4JrCT2y7tmCC1wUhjqYuTssB8VXbbN3rMffg"
    );
    let (root, data) = node(&blocks, &added.cid);
    assert_eq!(
        strs(root.links.iter().map(|l| l.hash)),
        [
            "QmXUcuLGKc8SCMEqG4wgct6NKsSRZQfvB2FCfjDow1PfpB",
            "QmeEn8dxWTzGAFKvyXoLj4oWbh9putL4vSw4uhLXJrSZhs"
        ]
    );
    assert_eq!(data.blocksizes, [174, 63]);
    assert_eq!(data.filesize, Some(237));
    assert_eq!(node(&blocks, &root.links[1].hash).0.links.len(), 63);
    assert_eq!(read_back(&added.cid, &blocks), LOREM);
}

/// A reader that hands out at most `step` bytes per read.
struct Dribble<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Dribble<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn short_reads_do_not_change_the_chunking() {
    for step in 1..32 {
        let reader = Dribble { data: LOREM, step };
        let added = add_reader(reader, &chunked(32), &mut |_, _| Ok::<_, Infallible>(())).unwrap();
        assert_eq!(
            added.cid.to_string(),
            "QmYSLcVQqxKygiq7x9w1XGYxU29EShB8ZemiaQ8GAAw17h",
            "step {step}"
        );
    }
}

#[test]
fn one_chunk_past_a_full_node_matches_go_ipfs() {
    // 175 chunks: a full node of 174 leaves, then a node over 1 leaf.
    let (added, blocks) = add(&[0u8; 349], &chunked(2));
    assert_eq!(blocks.len(), 175 + 3);
    assert_eq!(
        added.cid.to_string(),
        "QmcHNWF1d56uCDSfJPA7t9fadZRV9we5HGSTGSmwuqmMP9"
    );
    let (root, data) = node(&blocks, &added.cid);
    assert_eq!(data.blocksizes, [348, 1]);
    let (last, last_data) = node(&blocks, &root.links[1].hash);
    assert_eq!((last.links.len(), last_data.blocksizes), (1, vec![1]));
}

// --- structure (no external vector) ---

/// Checks every node of the DAG: blocksizes sum to filesize, each link's
/// Tsize is the encoded size of the subtree, at most 174 links, all
/// leaves at one depth. Returns (filesize, tsize, depth).
fn check_tree(store: &HashMap<Cid, Vec<u8>>, cid: &Cid) -> (u64, u64, usize) {
    let block = &store[cid];
    if cid.codec() == RAW {
        return (block.len() as u64, block.len() as u64, 0);
    }
    let (pb, data) = decode_node(block);
    assert!(pb.links.len() <= MAX_LINKS);
    assert_eq!(data.kind, DataType::File);
    let mut tsize = block.len() as u64;
    let mut depths = Vec::new();
    for (link, &bs) in pb.links.iter().zip(&data.blocksizes) {
        let (fsize, child_tsize, depth) = check_tree(store, &link.hash);
        assert_eq!(fsize, bs, "blocksize of {}", link.hash);
        assert_eq!(link.tsize, Some(child_tsize), "Tsize of {}", link.hash);
        assert_eq!(link.name.as_deref(), Some(""));
        tsize += child_tsize;
        depths.push(depth + 1);
    }
    assert_eq!(pb.links.len(), data.blocksizes.len());
    depths.dedup();
    assert!(depths.len() <= 1, "unbalanced under {cid}");
    let own = data.data.as_ref().map_or(0, |d| d.len() as u64);
    let filesize = own + data.blocksizes.iter().sum::<u64>();
    assert_eq!(data.filesize, Some(filesize));
    (filesize, tsize, depths.first().copied().unwrap_or(0))
}

#[test]
fn fan_out_is_174_and_depth_grows_only_when_needed() {
    // (chunks, root links, depth)
    for (chunks, root_links, depth) in [
        (174, 174, 1),
        (175, 2, 2),
        (174 * 174, 174, 2),
        (174 * 174 + 1, 2, 3),
    ] {
        let content: Vec<u8> = (0..chunks).map(|i| (i % 251) as u8).collect();
        let (added, blocks) = add(&content, &chunked(1));
        let (pb, _) = node(&blocks, &added.cid);
        assert_eq!(pb.links.len(), root_links, "{chunks} chunks");
        let store: HashMap<Cid, Vec<u8>> = blocks.iter().cloned().collect();
        let (filesize, tsize, d) = check_tree(&store, &added.cid);
        assert_eq!((filesize, d), (chunks as u64, depth), "{chunks} chunks");
        assert_eq!(tsize, added.size);
        assert_eq!(read_back(&added.cid, &blocks), content);
    }
}

#[test]
fn default_chunker_splits_at_256_kib() {
    let content: Vec<u8> = (0..DEFAULT_CHUNK_SIZE * 2 + 10)
        .map(|i| (i % 256) as u8)
        .collect();
    let (added, blocks) = add(&content, &AddOptions::default());
    let (_, data) = node(&blocks, &added.cid);
    assert_eq!(data.blocksizes, [262_144, 262_144, 10]);
    assert_eq!(read_back(&added.cid, &blocks), content);
}

#[test]
fn blocks_leave_before_the_input_is_consumed() {
    use std::cell::Cell;
    struct Counting<'a>(&'a [u8], &'a Cell<usize>);
    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1.set(self.1.get() + n);
            Ok(n)
        }
    }
    let consumed = Cell::new(0);
    let content = vec![7u8; 64 * 1024];
    let mut seen = Vec::new();
    add_reader(
        Counting(&content, &consumed),
        &chunked(1024),
        &mut |_, _| {
            seen.push(consumed.get());
            Ok::<_, Infallible>(())
        },
    )
    .unwrap();
    assert_eq!(seen[0], 1024, "first leaf emitted after one chunk was read");
    assert_eq!(seen[10], 11 * 1024);
}

#[test]
fn cid_v1_uses_raw_leaves_and_v1_nodes() {
    let (added, blocks) = add(
        b"foobar\n",
        &AddOptions {
            chunk_size: 2,
            ..v1()
        },
    );
    assert!(blocks[..4].iter().all(|(c, _)| c.codec() == RAW));
    assert_eq!(blocks[0].1, b"fo");
    assert_eq!(added.cid.version(), Version::V1);
    assert_eq!(added.cid.codec(), DAG_PB);
    assert!(added.cid.to_string().starts_with("bafybei"));
    check_tree(&blocks.iter().cloned().collect(), &added.cid);
    assert_eq!(read_back(&added.cid, &blocks), b"foobar\n");
}

#[test]
fn raw_leaves_and_dag_pb_leaves_can_be_chosen_per_version() {
    // `--raw-leaves` with CIDv0: raw leaves are CIDv1, the root stays v0.
    let opts = AddOptions {
        raw_leaves: Some(true),
        chunk_size: 2,
        ..AddOptions::default()
    };
    let (added, blocks) = add(b"foobar\n", &opts);
    assert!(blocks[0].0.to_string().starts_with("bafkrei"));
    assert!(added.cid.to_string().starts_with("Qm"));
    // `--cid-version 1 --raw-leaves=false`: dag-pb leaves, all CIDv1.
    let opts = AddOptions {
        raw_leaves: Some(false),
        chunk_size: 2,
        ..v1()
    };
    let (_, blocks) = add(b"foobar\n", &opts);
    assert!(blocks.iter().all(|(c, _)| c.codec() == DAG_PB));
    assert!(blocks.iter().all(|(c, _)| c.version() == Version::V1));
    // Same leaf bytes as the CIDv0 "fo" leaf, so the same multihash.
    let v0_fo: Cid = "QmfVyMoStzTvdnUR7Uotzh82gmL427q9z3xW5Y8fUoszi4"
        .parse()
        .unwrap();
    assert_eq!(blocks[0].0.hash(), v0_fo.hash());
}

#[test]
fn sink_errors_stop_the_import_and_come_back() {
    let mut calls = 0;
    let err = add_reader(&b"foobar\n"[..], &chunked(2), &mut |cid, _| {
        calls += 1;
        if calls == 2 {
            Err(format!("disk full at {cid}"))
        } else {
            Ok(())
        }
    })
    .unwrap_err();
    assert_eq!(calls, 2, "nothing is offered after a failure");
    match err {
        UnixfsError::Sink { cid, source } => {
            assert_eq!(
                cid.to_string(),
                "QmdPyW4CWE3QBkgjWfjM5f7Tjb3HukxVuBXZtkqAGwsMnm"
            );
            assert_eq!(source, format!("disk full at {cid}"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn read_errors_come_back() {
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("cable cut"))
        }
    }
    let err = add_reader(Broken, &AddOptions::default(), &mut |_, _| {
        Ok::<_, Infallible>(())
    })
    .unwrap_err();
    assert!(matches!(err, UnixfsError::Read(_)), "{err}");
}

#[test]
fn chunk_size_must_be_within_kubo_limits() {
    for chunk_size in [0, MAX_CHUNK_SIZE + 1] {
        let err = add_reader(&b"x"[..], &chunked(chunk_size), &mut |_, _| {
            Ok::<_, Infallible>(())
        })
        .unwrap_err();
        assert!(matches!(err, UnixfsError::InvalidOptions(_)), "{err}");
    }
    add(b"x", &chunked(MAX_CHUNK_SIZE));
}

// --- directories ---

fn add_tree(path: &Path, opts: &AddOptions) -> (Vec<Added>, Blocks) {
    let mut blocks = Vec::new();
    let entries = add_path(path, opts, &mut |cid, block| {
        blocks.push((cid, block));
        Ok::<_, Infallible>(())
    })
    .unwrap();
    (entries, blocks)
}

fn write(root: &Path, rel: &str, content: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn by_name(entries: &[Added], name: &str) -> String {
    entries
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no {name} in {entries:?}"))
        .cid
        .to_string()
}

// Directory vectors from rust-ipfs's tests (dir/builder/buffered.rs),
// built over the go-ipfs "foobar\n" size-2 file above (Tsize 221).

#[test]
fn directories_match_reference_vectors() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = chunked(2);

    let one = tmp.path().join("one");
    write(&one, "a", b"foobar\n");
    let (entries, _) = add_tree(&one, &opts);
    assert_eq!(entries[0].size, 221);
    assert_eq!(
        by_name(&entries, "one"),
        "QmQBseoi3b2FBrYhjM2E4mCF4Q7C8MgCUbzAbGNfyVwgNk"
    );

    let two = tmp.path().join("two");
    write(&two, "b", b"foobar\n");
    write(&two, "a", b"foobar\n");
    let (entries, _) = add_tree(&two, &opts);
    assert_eq!(
        by_name(&entries, "two"),
        "QmdbWuhpVCX9weVMMqvVTMeGwKMqCNJDbx7ZK1zG36sea7"
    );

    let deep = tmp.path().join("a");
    for f in ["b/c/d/e/f/g.txt", "b/c/d/e/h.txt", "b/c/d/e/i.txt"] {
        write(&deep, f, b"foobar\n");
    }
    let (entries, blocks) = add_tree(&deep, &opts);
    for (name, cid) in [
        (
            "a/b/c/d/e/f",
            "Qmbgf44ztW9wLcGNRNYGinGQB6SQDQtbHVbkM5MrWms698",
        ),
        (
            "a/b/c/d/e",
            "Qma1hCr3CuPRAq2Gw4DCNMqsi42Bjs4Bt1MGSS57kNh144",
        ),
        ("a/b/c/d", "QmUqaYatcJqiSFdykHXGh4Nog1eMSfDJBeYzcG67KV5Ri4"),
        ("a/b/c", "QmYwaNBaGpDCNN9XpHmjxVPHmEXZMw9KDY3uikE2UU5fVB"),
        ("a/b", "QmeAzCPig4o4gBLh2LvP96Sr8MUBrsu2Scw9MTq1EvTDhY"),
        ("a", "QmSTUFaPwJW8xD4KNRLLQRqVTYtYC29xuhYTJoYPWdzvKp"),
    ] {
        assert_eq!(by_name(&entries, name), cid, "{name}");
    }
    // The three files share their five blocks; every one is offered.
    assert_eq!(blocks.len(), 3 * 5 + 6);
    assert_eq!(blocks.last().unwrap().0, entries.last().unwrap().cid);
}

#[test]
fn entries_are_reported_like_ipfs_add_r() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("site");
    write(&root, "z.txt", b"z");
    write(&root, "a/2.txt", b"2");
    write(&root, "a/1.txt", b"1");
    write(&root, "m/x/y.txt", b"y");
    std::fs::create_dir(root.join("empty")).unwrap();
    let (entries, blocks) = add_tree(&root, &AddOptions::default());
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "site/a/1.txt",
            "site/a/2.txt",
            "site/m/x/y.txt",
            "site/z.txt",
            "site/a",
            "site/empty",
            "site/m/x",
            "site/m",
            "site",
        ]
    );
    let site = entries.last().unwrap();
    assert_eq!(site.bytes, 4);
    assert_eq!(
        site.size,
        blocks.iter().map(|b| b.1.len() as u64).sum::<u64>()
    );
    let (pb, data) = node(&blocks, &site.cid);
    assert_eq!(data.kind, DataType::Directory);
    assert_eq!(pb.data.as_deref(), Some(&[0x08, 0x01][..]));
    let link_names: Vec<_> = pb.links.iter().map(|l| l.name.clone().unwrap()).collect();
    assert_eq!(link_names, ["a", "empty", "m", "z.txt"]);
    assert_eq!(
        by_name(&entries, "site/empty"),
        "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
    );
    // Every block of a child precedes its directory's block.
    let pos = |cid: &Cid| blocks.iter().position(|(c, _)| c == cid).unwrap();
    for link in &pb.links {
        assert!(pos(&link.hash) < pos(&site.cid));
    }
}

#[test]
fn hidden_entries_are_skipped_unless_asked_for() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), ".git/config", b"secret");
    write(tmp.path(), ".env", b"secret");
    let (entries, _) = add_tree(tmp.path(), &AddOptions::default());
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0].cid.to_string(),
        "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn",
        "a directory of hidden files is empty by default"
    );
    let with_hidden = AddOptions {
        hidden: true,
        ..AddOptions::default()
    };
    let (entries, _) = add_tree(tmp.path(), &with_hidden);
    assert_eq!(entries.len(), 4);
    // A hidden path given explicitly is added.
    let (entries, _) = add_tree(&tmp.path().join(".env"), &AddOptions::default());
    assert_eq!((entries[0].name.as_str(), entries[0].bytes), (".env", 6));
}

#[test]
fn a_single_file_path_is_named_after_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "hello.txt", b"hello world\n");
    let (entries, _) = add_tree(&tmp.path().join("hello.txt"), &AddOptions::default());
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].name, "hello.txt");
    assert_eq!(
        entries[0].cid.to_string(),
        "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
    );
}

#[cfg(unix)]
#[test]
fn symlinks_are_stored_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "target.txt", b"data");
    std::os::unix::fs::symlink("target.txt", tmp.path().join("link")).unwrap();
    let (entries, blocks) = add_tree(tmp.path(), &AddOptions::default());
    let link = entries.iter().find(|e| e.name.ends_with("/link")).unwrap();
    let (_, data) = node(&blocks, &link.cid);
    assert_eq!(data.kind, DataType::Symlink);
    assert_eq!(data.data.as_deref(), Some(&b"target.txt"[..]));
    let store: HashMap<Cid, Vec<u8>> = blocks.into_iter().collect();
    let err = read_file(&link.cid, &mut |c: &Cid| {
        Ok::<_, Infallible>(store[c].clone())
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            UnixfsError::NotAFile {
                kind: "symlink",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn missing_paths_name_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let err = add_path(&missing, &AddOptions::default(), &mut |_, _| {
        Ok::<_, Infallible>(())
    })
    .unwrap_err();
    assert!(
        matches!(&err, UnixfsError::Fs { path, .. } if *path == missing),
        "{err}"
    );
}

// --- read_file ---

#[test]
fn read_file_rejects_blocks_that_do_not_match_their_cid() {
    let (added, blocks) = add(b"foobar\n", &chunked(2));
    let store: HashMap<Cid, Vec<u8>> = blocks.into_iter().collect();
    let bad = store.keys().find(|c| **c != added.cid).copied().unwrap();
    let err = read_file(&added.cid, &mut |c: &Cid| {
        Ok::<_, Infallible>(if *c == bad {
            b"evil".to_vec()
        } else {
            store[c].clone()
        })
    })
    .unwrap_err();
    assert!(matches!(err, UnixfsError::HashMismatch { cid } if cid == bad));
}

#[test]
fn read_file_reports_missing_blocks_and_directories() {
    let err = read_file(
        &"QmRJHYTNvC3hmd9gJQARxLR1QMEincccBV53bBw524yyq6"
            .parse()
            .unwrap(),
        &mut |c: &Cid| Err(format!("no {c}")),
    )
    .unwrap_err();
    assert!(err.to_string().contains("getting block QmRJHYTN"), "{err}");

    let empty_dir = dagpb::encode(&PbNode {
        links: vec![],
        data: Some(vec![8, 1]),
    });
    let cid = block_cid(Version::V0, DAG_PB, &empty_dir);
    let err = read_file(&cid, &mut |_: &Cid| Ok::<_, Infallible>(empty_dir.clone())).unwrap_err();
    assert!(matches!(
        err,
        UnixfsError::NotAFile {
            kind: "directory",
            ..
        }
    ));
}

#[test]
fn read_file_serves_identity_cids_without_asking() {
    let inline = Multihash::wrap(IDENTITY, b"tiny").unwrap();
    let cid = Cid::new_v1(RAW, inline);
    let out = read_file(&cid, &mut |_: &Cid| Err("must not be called")).unwrap();
    assert_eq!(out, b"tiny");
}

#[test]
fn read_file_checks_the_root_filesize() {
    // A root claiming 10 bytes over a 2-byte leaf.
    let leaf = b"ab".to_vec();
    let leaf_cid = block_cid(Version::V1, RAW, &leaf);
    let data = UnixfsData {
        kind: DataType::File,
        data: None,
        filesize: Some(10),
        blocksizes: vec![2],
    };
    let root = dagpb::encode(&PbNode {
        links: vec![PbLink {
            hash: leaf_cid,
            name: Some(String::new()),
            tsize: Some(2),
        }],
        data: Some(data.encode()),
    });
    let root_cid = block_cid(Version::V0, DAG_PB, &root);
    let err = read_file(&root_cid, &mut |c: &Cid| {
        Ok::<_, Infallible>(if *c == root_cid {
            root.clone()
        } else {
            leaf.clone()
        })
    })
    .unwrap_err();
    assert!(err.to_string().contains("filesize says 10"), "{err}");
}

#[test]
fn read_file_reports_a_node_whose_data_is_not_unixfs() {
    let node = dagpb::encode(&PbNode {
        links: vec![],
        data: Some(vec![0x12, 0x09, 0x01]),
    });
    let cid = block_cid(Version::V0, DAG_PB, &node);
    let err = read_file(&cid, &mut |_: &Cid| Ok::<_, Infallible>(node.clone())).unwrap_err();
    assert!(matches!(err, UnixfsError::Malformed { .. }), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_content_round_trips_with_consistent_sizes(
        content in proptest::collection::vec(any::<u8>(), 0..3000),
        chunk_size in 1usize..64,
        v1 in any::<bool>(),
        raw in proptest::option::of(any::<bool>()),
    ) {
        let opts = AddOptions {
            cid_version: if v1 { Version::V1 } else { Version::V0 },
            raw_leaves: raw,
            chunk_size,
            hidden: false,
        };
        let (added, blocks) = add(&content, &opts);
        prop_assert_eq!(read_back(&added.cid, &blocks), content.clone());
        prop_assert_eq!(added.bytes, content.len() as u64);
        // Every block is offered once per place in the DAG, so their
        // lengths add up to the root's cumulative size.
        prop_assert_eq!(added.size, blocks.iter().map(|b| b.1.len() as u64).sum::<u64>());
        prop_assert_eq!(blocks.last().map(|b| b.0), Some(added.cid));
        for (cid, block) in &blocks {
            prop_assert_eq!(*cid, block_cid(cid.version(), cid.codec(), block));
        }
    }
}

/// A root that links one leaf over and over (valid hashes, consistent
/// blocksizes) but says the file is 2 bytes: reading stops as soon as the
/// DAG goes past that, instead of walking every repetition.
#[test]
fn a_dag_that_repeats_past_its_filesize_is_refused_early() {
    let leaf = PbNode {
        links: Vec::new(),
        data: Some(
            UnixfsData {
                kind: DataType::File,
                data: Some(bytes::Bytes::from_static(b"a")),
                filesize: Some(1),
                blocksizes: Vec::new(),
            }
            .encode(),
        ),
    };
    let leaf_block = dagpb::encode(&leaf);
    let leaf_cid = block_cid(Version::V0, DAG_PB, &leaf_block);
    let repeats = 100_000;
    let root = PbNode {
        links: (0..repeats)
            .map(|_| PbLink {
                hash: leaf_cid,
                name: Some(String::new()),
                tsize: Some(leaf_block.len() as u64),
            })
            .collect(),
        data: Some(
            UnixfsData {
                kind: DataType::File,
                data: None,
                filesize: Some(2),
                blocksizes: vec![1; repeats],
            }
            .encode(),
        ),
    };
    let root_block = dagpb::encode(&root);
    let root_cid = block_cid(Version::V0, DAG_PB, &root_block);
    let mut fetched = 0usize;
    let err = read_file(&root_cid, &mut |cid: &Cid| {
        fetched += 1;
        if *cid == root_cid {
            Ok::<_, Infallible>(root_block.clone())
        } else {
            Ok(leaf_block.clone())
        }
    })
    .unwrap_err();
    assert!(fetched < 10, "{fetched} blocks fetched");
    assert!(err.to_string().contains("filesize says 2 bytes"), "{err}");
}
