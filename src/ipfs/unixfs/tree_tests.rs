//! Tests of [`TreeImport`]: the same tree given as entries in arrival order
//! (sorted or shuffled, parents implicit or not) gives exactly what
//! [`add_path_with`] gives on that tree written to disk: root CIDs, sizes,
//! names, bytes, blocks and events, HAMT-sharded and nested directories,
//! empty files and directories included; and the entries that cannot form a
//! tree are refused.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::path::Path;

use cid::{Cid, Version};
use proptest::prelude::*;

use super::*;

/// One entry of a test tree: a directory (`None`) or a file's bytes.
type Entry = (String, Option<Vec<u8>>);

fn small_chunks() -> AddOptions {
    AddOptions {
        chunk_size: 1024,
        ..AddOptions::default()
    }
}

/// `entries` written under `root` (parents created as needed).
fn write_tree(root: &Path, entries: &[Entry]) {
    std::fs::create_dir_all(root).unwrap();
    for (path, content) in entries {
        let at = root.join(path);
        match content {
            None => std::fs::create_dir_all(&at).unwrap(),
            Some(bytes) => {
                std::fs::create_dir_all(at.parent().unwrap()).unwrap();
                std::fs::write(&at, bytes).unwrap();
            }
        }
    }
}

/// What an import produced: its entries, events and blocks.
struct Outcome {
    entries: Vec<Added>,
    events: Vec<ImportEvent>,
    blocks: BTreeSet<Cid>,
}

/// `add_path_with` on `path`.
fn on_disk(path: &Path, opts: &AddOptions, progress: bool) -> Outcome {
    let (mut blocks, mut events) = (BTreeSet::new(), Vec::new());
    let entries = add_path_with(
        path,
        opts,
        &mut |cid, _| {
            blocks.insert(cid);
            Ok::<_, Infallible>(())
        },
        progress,
        &mut |e| events.push(e),
    )
    .unwrap();
    Outcome {
        entries,
        events,
        blocks,
    }
}

/// `entries` given to a [`TreeImport`] in this order.
fn streamed(
    entries: &[Entry],
    opts: &AddOptions,
    wrap: bool,
    progress: bool,
) -> Result<Outcome, UnixfsError<Infallible>> {
    let (mut blocks, mut events) = (BTreeSet::new(), Vec::new());
    let mut sink = |cid, _| {
        blocks.insert(cid);
        Ok::<_, Infallible>(())
    };
    let mut report = |e| events.push(e);
    let mut tree = TreeImport::new(opts, wrap, &mut sink, progress, &mut report)?;
    for (path, content) in entries {
        match content {
            None => tree.dir(path)?,
            // Read in small pieces, as an upload's chunks arrive.
            Some(bytes) => tree.file(path, std::io::BufReader::with_capacity(7, &bytes[..]))?,
        }
    }
    let entries = tree.finish()?;
    Ok(Outcome {
        entries,
        events,
        blocks,
    })
}

/// Sorted as `ipfs add -r` walks a tree: by path components.
fn walk_order(entries: &[Entry]) -> Vec<Entry> {
    let mut sorted = entries.to_vec();
    sorted.sort_by(|a, b| a.0.split('/').cmp(b.0.split('/')));
    sorted
}

fn as_set(entries: &[Added]) -> BTreeSet<(String, String, u64, u64)> {
    entries
        .iter()
        .map(|a| (a.name.clone(), a.cid.to_string(), a.size, a.bytes))
        .collect()
}

/// Checks `entries` (all under one top-level entry) streamed in walk order and in the
/// given order against `add_path_with`, unwrapped and wrapped.
fn same_as_on_disk(entries: &[Entry], opts: &AddOptions) {
    let tmp = tempfile::tempdir().unwrap();
    let wrapper = tmp.path().join("upload");
    write_tree(&wrapper, entries);
    let top = entries[0].0.split('/').next().unwrap();
    let expected = on_disk(&wrapper.join(top), opts, true);
    let sorted = walk_order(entries);
    let got = streamed(&sorted, opts, false, true).unwrap();
    assert_eq!(got.entries, expected.entries, "walk order: same list");
    assert_eq!(got.events, expected.events, "walk order: same events");
    assert_eq!(got.blocks, expected.blocks, "walk order: same blocks");
    let got = streamed(entries, opts, false, false).unwrap();
    assert_eq!(got.entries.last(), expected.entries.last(), "same root");
    assert_eq!(as_set(&got.entries), as_set(&expected.entries));
    assert_eq!(got.blocks, expected.blocks);

    // Wrapped: the upload directory is the wrapper, named "" and its
    // entries relative to it.
    let wrapped_on_disk = on_disk(&wrapper, opts, false);
    let unwrapped: Vec<Added> = wrapped_on_disk
        .entries
        .iter()
        .map(|a| Added {
            name: a
                .name
                .split_once('/')
                .map_or_else(String::new, |(_, rest)| rest.to_string()),
            ..a.clone()
        })
        .collect();
    let got = streamed(&sorted, opts, true, false).unwrap();
    assert_eq!(got.entries, unwrapped, "wrapped: same list");
    assert_eq!(got.blocks, wrapped_on_disk.blocks);
}

fn file(path: &str, bytes: &[u8]) -> Entry {
    (path.to_string(), Some(bytes.to_vec()))
}

fn dir(path: &str) -> Entry {
    (path.to_string(), None)
}

#[test]
fn nested_directories_with_empty_files_and_dirs_match_add_path() {
    let big: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let entries = vec![
        dir("top"),
        file("top/z.bin", &big),
        dir("top/empty"),
        file("top/sub/deeper/b.txt", b"b"),
        file("top/sub/a.txt", b""),
        dir("top/sub/deeper/void"),
        file("top/A", b"upper case sorts first"),
        file("top/sub/deeper/a", &big[..1024]),
    ];
    for opts in [
        small_chunks(),
        AddOptions::default(),
        AddOptions {
            cid_version: Version::V1,
            chunk_size: 1000,
            ..AddOptions::default()
        },
    ] {
        same_as_on_disk(&entries, &opts);
    }
}

#[test]
fn a_directory_over_the_sharding_threshold_matches_add_path() {
    // Names of 200 bytes: some 1,100 entries pass the 256 KiB estimate.
    let mut entries = vec![file("top/readme", b"sharded below")];
    for i in 0..1400 {
        let name = format!("top/shard/{i:04}-{}", "n".repeat(195));
        entries.push(file(&name, format!("{i}").as_bytes()));
    }
    entries.push(file("top/shard/empty", b""));
    let tmp = tempfile::tempdir().unwrap();
    write_tree(&tmp.path().join("upload"), &entries);
    let expected = on_disk(&tmp.path().join("upload/top"), &small_chunks(), false);
    let shard = expected.entries.iter().find(|a| a.name == "top/shard");
    let block_count = expected.blocks.len();
    assert!(
        block_count > 1400 + 3,
        "the shard is several nodes: {block_count} blocks"
    );
    assert!(shard.is_some());
    same_as_on_disk(&entries, &small_chunks());
}

#[test]
fn a_single_file_is_the_root_named_by_its_path() {
    same_as_on_disk(&[file("top", b"just a file")], &AddOptions::default());
    same_as_on_disk(&[file("top", b"")], &small_chunks());
}

#[test]
fn implicit_parents_are_the_same_directories_as_given_ones() {
    let implicit = vec![file("top/a/b/c.txt", b"c"), file("top/a/d.txt", b"d")];
    let mut explicit = vec![dir("top"), dir("top/a"), dir("top/a/b")];
    explicit.extend(implicit.clone());
    let a = streamed(&implicit, &small_chunks(), false, false).unwrap();
    let b = streamed(&explicit, &small_chunks(), false, false).unwrap();
    assert_eq!(a.entries, b.entries);
    let names: Vec<&str> = a.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["top/a/b/c.txt", "top/a/d.txt", "top/a/b", "top/a", "top"]
    );
    same_as_on_disk(&implicit, &small_chunks());
}

#[test]
fn hidden_entries_are_left_out_as_add_path_does_unless_asked_for() {
    let entries = vec![
        file("top/.hidden", b"h"),
        file("top/.dot/inside", b"i"),
        file("top/seen", b"s"),
    ];
    for hidden in [false, true] {
        let opts = AddOptions {
            hidden,
            ..small_chunks()
        };
        same_as_on_disk(&entries, &opts);
    }
    let skipped = streamed(&entries, &small_chunks(), false, false).unwrap();
    let names: Vec<&str> = skipped.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["top/seen", "top"]);
    // The path given is always added, hidden or not.
    same_as_on_disk(&[file(".top", b"x")], &small_chunks());
}

#[test]
fn files_are_reported_as_they_finish_before_the_tree_is_finished() {
    let mut events = Vec::new();
    let mut sink = |_, _| Ok::<_, Infallible>(());
    let mut report = |e: ImportEvent| events.push(e);
    let mut tree = TreeImport::new(&small_chunks(), false, &mut sink, true, &mut report).unwrap();
    tree.file("d/one", &[1u8; 300 * 1024][..]).unwrap();
    tree.file("d/two", &b"2"[..]).unwrap();
    drop(tree);
    let added: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            ImportEvent::Added(a) => Some(a.name.as_str()),
            ImportEvent::Progress { .. } => None,
        })
        .collect();
    assert_eq!(added, ["d/one", "d/two"], "no directory before finish");
    let progress: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            ImportEvent::Progress { name, bytes } if name == "d/one" => Some(*bytes),
            _ => None,
        })
        .collect();
    assert_eq!(progress, [262_144, 300 * 1024]);
}

#[test]
fn entries_that_do_not_form_one_tree_are_refused() {
    let cases: [(&[Entry], &str); 7] = [
        (&[file("a", b"1"), file("a", b"2")], "sent twice"),
        (&[file("a/b", b"1"), dir("a/b")], "conflicts with a file"),
        (
            &[file("a", b"1"), file("a/b", b"2")],
            "conflicts with a file",
        ),
        (
            &[file("a/x", b"1"), file("b", b"2")],
            "second top-level entry",
        ),
        (&[file("a/../b", b"1")], "relative path"),
        (&[file("/a", b"1")], "relative path"),
        (&[], "nothing to import"),
    ];
    for (entries, message) in cases {
        let err = match streamed(entries, &small_chunks(), false, false) {
            Ok(o) => panic!("{entries:?} gave {:?}", o.entries),
            Err(e) => e,
        };
        assert!(matches!(err, UnixfsError::Entry { .. }), "{err}");
        assert!(err.to_string().contains(message), "{entries:?}: {err}");
    }
    // Wrapped, several top-level entries are the point; nothing at all is
    // an empty directory.
    let two = streamed(
        &[file("a", b"1"), file("b", b"2")],
        &small_chunks(),
        true,
        false,
    );
    assert_eq!(two.unwrap().entries.len(), 3);
    let empty = streamed(&[], &AddOptions::default(), true, false).unwrap();
    assert_eq!(
        empty.entries.last().unwrap().cid.to_string(),
        "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn",
        "the empty directory"
    );
}

/// A tree of up to 24 entries, up to three levels under `top`, names from
/// a small alphabet (so they collide into shared directories); entries that
/// would conflict with an earlier one (a file where a directory is, or
/// under a file) are dropped.
fn trees() -> impl Strategy<Value = Vec<Entry>> {
    let name = prop::sample::select(vec!["a", "b", "B", "c.txt", "dd", "e-f", "Z"]);
    let path = prop::collection::vec(name, 1..4);
    let content = prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..3000));
    prop::collection::vec((path, content), 1..24).prop_map(|raw| {
        let mut kinds: BTreeMap<Vec<&str>, bool> = BTreeMap::new();
        let mut out = Vec::new();
        for (names, content) in raw {
            let conflicts = (1..names.len()).any(|n| kinds.get(&names[..n]) == Some(&true))
                || match kinds.get(&names) {
                    Some(is_file) => *is_file || content.is_some(),
                    None => false,
                }
                || (content.is_some() && kinds.keys().any(|k| k.starts_with(&names)));
            if conflicts {
                continue;
            }
            for n in 1..names.len() {
                kinds.entry(names[..n].to_vec()).or_insert(false);
            }
            kinds.insert(names.clone(), content.is_some());
            out.push((format!("top/{}", names.join("/")), content));
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_tree_in_any_order_matches_add_path(entries in trees(), v1 in any::<bool>()) {
        let opts = AddOptions {
            cid_version: if v1 { Version::V1 } else { Version::V0 },
            ..small_chunks()
        };
        same_as_on_disk(&entries, &opts);
    }
}
