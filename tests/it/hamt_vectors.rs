//! Large directories get Kubo's CIDs: the embedded importer's HAMT
//! sharding against root CIDs computed by real Kubo 0.22
//! (`tests/vectors/kubo_hamt.json`, written by `tests/vectors/kubo_hamt.py`,
//! which says how to regenerate it).

use std::path::Path;

use pinfleet::ipfs::unixfs::{AddOptions, add_path};

/// One case's tree, as the script builds it.
fn build(case: &serde_json::Value, root: &Path) -> std::path::PathBuf {
    let s = |k: &str| case[k].as_str().unwrap().to_string();
    let n = |k: &str| case[k].as_u64().unwrap() as usize;
    let top = root.join(s("name"));
    std::fs::create_dir_all(&top).unwrap();
    let mut target = top.clone();
    if case["nested"].as_bool().unwrap() {
        std::fs::write(top.join("readme.txt"), "nested\n").unwrap();
        target = top.join("sub");
        std::fs::create_dir_all(&target).unwrap();
    }
    let (count, width, shorten) = (n("count"), n("width"), n("shorten_last"));
    let (prefix, suffix) = (s("prefix"), s("suffix"));
    for i in 0..count {
        let mut tail = suffix.as_str();
        if i == count - 1 {
            tail = &suffix[..suffix.len() - shorten];
        }
        let name = format!("{prefix}{i:0width$}{tail}");
        std::fs::write(target.join(name), format!("{i}\n")).unwrap();
    }
    top
}

#[test]
fn large_directories_get_the_root_cids_kubo_gives_them() {
    let text =
        std::fs::read_to_string(crate::support::repo_path("tests/vectors/kubo_hamt.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 4);
    // ~20,000 small files: in memory when the machine has a tmpfs (on a
    // disk-backed /tmp creating them takes most of a minute).
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    for case in cases {
        let top = build(case, dir.path());
        let added = add_path(&top, &AddOptions::default(), &mut |_, _| {
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap();
        assert_eq!(
            added.last().unwrap().cid.to_string(),
            case["root"].as_str().unwrap(),
            "{}",
            case["name"]
        );
    }
}
