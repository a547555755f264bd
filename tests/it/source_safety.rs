//! Hostile sources (issue 13, item 8) and credentials in source URLs (item
//! 9): a crafted git commit whose tree names would climb out of the
//! checkout, symbolic links that lead out of a `dir:` source or loop, and a
//! git URL with a token that must not reach an error or `Debug` output.

use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, Signature};
use pinfleet::manifest::{Limits, LoadError};
use pinfleet::source::{Credentials, DirSource, GitSource};

use crate::support::{cid_v1, pinset_yaml, write_tree};

/// A bare repository served over `file://`, with commits written object by
/// object so that a tree may hold names `git add` refuses to create.
struct Crafted {
    dir: tempfile::TempDir,
    repo: Repository,
}

impl Crafted {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path().join("remote.git")).unwrap();
        repo.set_head("refs/heads/main").unwrap();
        Self { dir, repo }
    }

    fn url(&self) -> String {
        format!("file://{}", self.dir.path().join("remote.git").display())
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn blob(&self, content: &str) -> Oid {
        self.repo.blob(content.as_bytes()).unwrap()
    }

    /// A raw tree object: entries `(mode, name, id)` in the order given,
    /// written to the object database unchecked (the tree builder refuses
    /// `..`, `.git` and names holding `/`).
    fn tree(&self, entries: &[(&str, &[u8], Oid)]) -> Oid {
        let mut raw = Vec::new();
        for (mode, name, id) in entries {
            raw.extend_from_slice(mode.as_bytes());
            raw.push(b' ');
            raw.extend_from_slice(name);
            raw.push(0);
            raw.extend_from_slice(id.as_bytes());
        }
        self.repo
            .odb()
            .unwrap()
            .write(ObjectType::Tree, &raw)
            .unwrap()
    }

    /// Commits `tree` on main (parent: the current main, if any).
    fn commit(&self, tree: Oid) -> String {
        let tree = self.repo.find_tree(tree).unwrap();
        let sig = Signature::now("it", "it@example.org").unwrap();
        let parent = self
            .repo
            .find_reference("refs/heads/main")
            .ok()
            .and_then(|r| r.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        self.repo
            .commit(
                Some("refs/heads/main"),
                &sig,
                &sig,
                "crafted",
                &tree,
                &parents,
            )
            .unwrap()
            .to_string()
    }

    fn source(&self, query: &str, share_local_objects: bool) -> GitSource {
        let mut s = GitSource::parse(
            &format!("{}#{query}", self.url()),
            &self.cache(),
            Credentials::default(),
            Limits::default(),
        )
        .unwrap();
        s.share_local_objects = share_local_objects;
        s
    }
}

/// Every file below `dir` (links not followed), relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out.sort();
    out
}

fn io_message(e: &LoadError) -> String {
    match e {
        LoadError::Io { path, source } => format!("{}: {source}", path.display()),
        other => panic!("expected a source error, got {other:?}"),
    }
}

#[test]
fn crafted_trees_with_hostile_names_are_refused_and_nothing_is_written() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let yaml = pinset_yaml("crafted", "evil", &[cid_v1("crafted-evil")]);
    // (entry name in the root tree, or a name inside `pins/`, and the
    // path the error must show)
    let cases: &[(&[u8], bool, &str)] = &[
        (b"..", false, "\"..\""),
        (b".", false, "\".\""),
        (b".git", false, "\".git\""),
        (b".GIT", false, "\".GIT\""),
        (b".git. ", false, "\".git. \""),
        (b"a/../../escaped.yaml", false, "\"a/../../escaped.yaml\""),
        (
            b"/tmp/pinfleet-abs.yaml",
            false,
            "\"/tmp/pinfleet-abs.yaml\"",
        ),
        (b"x\\..\\y.yaml", false, "\"x\\\\..\\\\y.yaml\""),
        (b"..", true, "\"pins/..\""),
        (b".Git", true, "\"pins/.Git\""),
    ];
    for (name, nested, shown) in cases {
        let remote = Crafted::new();
        let good = remote.blob(&yaml);
        // A tree of one manifest, used as the hostile entry's content when
        // it is a tree, so a checkout would write `m.yaml` under it.
        let sub = remote.tree(&[("100644", b"m.yaml", good)]);
        let hostile = if name.ends_with(b".yaml") {
            ("100644", *name, good)
        } else {
            ("40000", *name, sub)
        };
        let pins = if *nested {
            remote.tree(&[hostile, ("100644", b"ok.yaml", good)])
        } else {
            sub
        };
        let root = if *nested {
            remote.tree(&[("40000", b"pins", pins)])
        } else {
            remote.tree(&[hostile, ("40000", b"pins", pins)])
        };
        remote.commit(root);
        for share in [true, false] {
            let src = remote.source("ref=main", share);
            let fetched = rt.block_on(src.fetch()).unwrap();
            let err = rt.block_on(src.load(&fetched)).unwrap_err();
            let msg = io_message(&err);
            assert!(
                msg.contains("unsafe commit") && msg.contains(shown),
                "{}: {msg}",
                String::from_utf8_lossy(name)
            );
            // Only the cache repository: no revision directory, no
            // temporary checkout, nothing next to the cache.
            let cache = files_under(&src.cache_dir);
            assert!(cache.iter().all(|p| p.starts_with("repo.git")), "{cache:?}");
            let top: Vec<_> = std::fs::read_dir(remote.dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(top.len(), 2, "{top:?}"); // remote.git and cache
            assert!(!Path::new("/tmp/pinfleet-abs.yaml").exists());
            std::fs::remove_dir_all(&src.cache_dir).unwrap();
        }
    }
}

#[test]
fn a_hostile_name_outside_the_loaded_path_is_not_checked_out_or_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let remote = Crafted::new();
    let good = remote.blob(&pinset_yaml("crafted", "fine", &[cid_v1("crafted-fine")]));
    let pins = remote.tree(&[("100644", b"m.yaml", good)]);
    let evil = remote.tree(&[("100644", b"m.yaml", good)]);
    let root = remote.tree(&[("40000", b"..", evil), ("40000", b"pins", pins)]);
    remote.commit(root);
    let src = remote.source("ref=main&path=pins", true);
    let fetched = rt.block_on(src.fetch()).unwrap();
    let loaded = rt.block_on(src.load(&fetched)).unwrap();
    assert_eq!(loaded.pin_count(), 1);
}

#[cfg(unix)]
#[test]
fn symlink_entries_of_a_commit_are_not_checked_out() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outside = tempfile::tempdir().unwrap();
    write_tree(
        outside.path(),
        &[(
            "secret.yaml",
            &pinset_yaml("crafted", "outside", &[cid_v1("outside")]),
        )],
    );
    let remote = Crafted::new();
    let good = remote.blob(&pinset_yaml("crafted", "inside", &[cid_v1("inside")]));
    let target = outside.path().to_string_lossy().into_owned();
    let link_dir = remote.blob(&target);
    let link_file = remote.blob(&format!("{target}/secret.yaml"));
    let root = remote.tree(&[
        ("120000", b"linked", link_dir),
        ("120000", b"linked.yaml", link_file),
        ("100644", b"m.yaml", good),
    ]);
    let sha = remote.commit(root);
    let src = remote.source("ref=main", true);
    let fetched = rt.block_on(src.fetch()).unwrap();
    let loaded = rt.block_on(src.load(&fetched)).unwrap();
    let names: Vec<_> = loaded.pinsets.iter().map(|p| p.id.to_string()).collect();
    assert_eq!(names, ["crafted/inside"]);
    let rev = src.cache_dir.join(format!("rev-{sha}"));
    assert_eq!(files_under(&rev), [PathBuf::from("m.yaml")]);
}

fn dir_load(path: &Path) -> Result<pinfleet::manifest::Loaded, LoadError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let src = DirSource::new(path, Limits::default()).unwrap();
    rt.block_on(src.load())
}

fn invalid(r: Result<pinfleet::manifest::Loaded, LoadError>) -> String {
    match r {
        Err(LoadError::Invalid(d)) => d.to_string(),
        Err(e) => panic!("expected diagnostics, got {e:?}"),
        Ok(l) => panic!("expected diagnostics, loaded {} pinsets", l.pinsets.len()),
    }
}

#[cfg(unix)]
#[test]
fn dir_source_refuses_links_out_of_its_root_and_follows_links_within() {
    use std::os::unix::fs::symlink;
    let outside = tempfile::tempdir().unwrap();
    write_tree(
        outside.path(),
        &[(
            "sets/o.yaml",
            &pinset_yaml("dirsrc", "outside", &[cid_v1("dir-outside")]),
        )],
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("src");
    write_tree(
        &root,
        &[
            (
                "real/in.yaml",
                &pinset_yaml("dirsrc", "inside", &[cid_v1("dir-inside")]),
            ),
            ("README", "not a manifest"),
        ],
    );
    // Links that stay inside: followed (each file read once).
    symlink("real", root.join("alias")).unwrap();
    symlink("real/in.yaml", root.join("same.yaml")).unwrap();
    // A non-manifest file outside: not part of the load, not refused.
    symlink(outside.path().join("sets/o.yaml"), root.join("notes.txt")).unwrap();
    let loaded = dir_load(&root).unwrap();
    let names: Vec<_> = loaded.pinsets.iter().map(|p| p.id.to_string()).collect();
    assert_eq!(names, ["dirsrc/inside"]);
    assert_eq!(loaded.manifest_files, 1);

    // A directory link out of the root: refused, naming link and target.
    symlink(outside.path().join("sets"), root.join("escape")).unwrap();
    let msg = invalid(dir_load(&root));
    assert!(
        msg.contains(&root.join("escape").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("leaves the source directory"), "{msg}");
    assert!(
        msg.contains(&outside.path().join("sets").display().to_string()),
        "{msg}"
    );
    assert!(!msg.contains("dirsrc/outside"), "{msg}");
    std::fs::remove_file(root.join("escape")).unwrap();

    // A manifest link out of the root, also through `..`: refused.
    symlink("../../outside.yaml", root.join("real/up.yaml")).unwrap();
    std::fs::write(
        dir.path().join("outside.yaml"),
        pinset_yaml("dirsrc", "up", &[cid_v1("dir-up")]),
    )
    .unwrap();
    let msg = invalid(dir_load(&root));
    // (Reached first through `alias`, which sorts before `real`.)
    assert!(msg.contains("/up.yaml: symbolic link to"), "{msg}");
    assert!(msg.contains("../../outside.yaml"), "{msg}");
    std::fs::remove_file(root.join("real/up.yaml")).unwrap();
    assert_eq!(dir_load(&root).unwrap().pin_count(), 1);
}

#[cfg(unix)]
#[test]
fn dir_source_symlink_loops_are_errors_not_hangs() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_tree(
        root,
        &[(
            "m.yaml",
            &pinset_yaml("dirsrc", "loop", &[cid_v1("dir-loop")]),
        )],
    );
    // A cycle through the root itself stays inside: walked once.
    symlink(".", root.join("self")).unwrap();
    assert_eq!(dir_load(root).unwrap().manifest_files, 1);
    // Two links naming each other never resolve.
    symlink("pong", root.join("ping")).unwrap();
    symlink("ping", root.join("pong")).unwrap();
    let started = std::time::Instant::now();
    let msg = invalid(dir_load(root));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(msg.contains("cannot resolve symbolic link"), "{msg}");
    assert!(msg.contains("ping"), "{msg}");
}

#[test]
fn a_token_in_a_git_url_never_reaches_an_error_or_debug_output() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    for url in [
        "https://user:s3cr3t-t0ken@127.0.0.1:1/x.git",
        "http://user:s3cr3t-t0ken@127.0.0.1:1/x.git",
    ] {
        let src = GitSource::parse(
            &format!("{url}#ref=main"),
            cache.path(),
            Credentials {
                token: Some("s3cr3t-t0ken".into()),
                ssh_key: None,
            },
            Limits::default(),
        )
        .unwrap();
        let shown = format!("{src:?} {}", src.name());
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("127.0.0.1:1/x.git"), "{shown}");
        let err = rt.block_on(src.fetch()).unwrap_err();
        let mut text = format!("{err} {err:?}");
        let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(&err);
        while let Some(c) = cause {
            text.push_str(&format!(" {c}"));
            cause = c.source();
        }
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("127.0.0.1:1/x.git"), "{text}");
    }
}

#[test]
fn controller_config_debug_hides_a_token_in_a_source_url() {
    let config = pinfleet::config::ControllerConfig {
        sources: vec![
            "git:https://x-access-token:s3cr3t-t0ken@git.example/r.git#ref=main".into(),
            "dir:/srv/pins".into(),
        ],
        ..Default::default()
    };
    let shown = format!("{config:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(
        shown.contains("git:https://git.example/r.git#ref=main"),
        "{shown}"
    );
    assert!(shown.contains("dir:/srv/pins"), "{shown}");
}
