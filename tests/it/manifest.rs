//! Manifest loading end to end (DESIGN §4): the committed examples, the invalid
//! fixtures with their exact `file:line:col` diagnostics, directory walking,
//! limits, the revision digest, and a fuzz-style property that no input makes
//! the loader panic or lose track of where the problem is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pinfleet::manifest::{
    CidKey, DesiredPin, DesiredPinSet, Diagnostic, Limits, LoadError, Loaded, PinMode, PinSetId,
    ReplicationFactors, load_paths, load_str, scan_paths,
};
use proptest::prelude::*;

use crate::support::{cid_v0, cid_v1, repo_path, write_tree};

// ---------------------------------------------------------------- helpers

fn load(paths: &[&Path]) -> Result<Loaded, LoadError> {
    load_paths(paths, &Limits::default())
}

fn load_ok(paths: &[&Path]) -> Loaded {
    match load(paths) {
        Ok(l) => l,
        Err(e) => panic!("expected {paths:?} to load, got:\n{e}"),
    }
}

fn diagnostics(result: Result<Loaded, LoadError>) -> Vec<Diagnostic> {
    match result {
        Err(LoadError::Invalid(d)) => {
            assert!(!d.0.is_empty(), "Invalid without diagnostics");
            d.0
        }
        Err(other) => panic!("expected LoadError::Invalid, got {other:?}"),
        Ok(l) => panic!(
            "expected LoadError::Invalid, loaded {} pinsets",
            l.pinsets.len()
        ),
    }
}

fn render(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| format!("  {d}\n")).collect()
}

/// Asserts that `diags` are exactly `want` (file, line, col, phrase), in
/// order, and that each displays as `file:line:col: message`.
fn assert_diags(diags: &[Diagnostic], want: &[(&Path, u32, u32, &str)]) {
    assert_eq!(
        diags.len(),
        want.len(),
        "wrong number of diagnostics:\n{}",
        render(diags)
    );
    for (d, (file, line, col, phrase)) in diags.iter().zip(want) {
        assert_eq!(
            (d.file.as_path(), d.line, d.col),
            (*file, *line, *col),
            "wrong place for {d}"
        );
        assert!(
            d.message.contains(phrase),
            "{d}\n  does not contain {phrase:?}"
        );
        let shown = d.to_string();
        let prefix = if *line == 0 {
            format!("{}: ", file.display())
        } else {
            format!("{}:{line}:{col}: ", file.display())
        };
        assert!(
            shown.starts_with(&prefix),
            "{shown:?} does not start with {prefix:?}"
        );
    }
}

fn fixture(name: &str) -> PathBuf {
    repo_path("tests/fixtures/invalid").join(name)
}

/// Loads one invalid fixture and checks its diagnostics; positions are in
/// `name` unless a tuple names another file (relative to the fixture dir).
fn assert_fixture(name: &str, want: &[(Option<&str>, u32, u32, &str)]) {
    let path = fixture(name);
    let diags = diagnostics(load(&[&path]));
    let files: Vec<PathBuf> = want
        .iter()
        .map(|(f, ..)| f.map_or_else(|| path.clone(), fixture))
        .collect();
    let want: Vec<_> = want
        .iter()
        .zip(&files)
        .map(|((_, l, c, p), f)| (f.as_path(), *l, *c, *p))
        .collect();
    assert_diags(&diags, &want);
}

fn pinset<'a>(loaded: &'a Loaded, ns: &str, name: &str) -> &'a DesiredPinSet {
    let id = PinSetId::new(ns, name);
    loaded
        .pinsets
        .iter()
        .find(|p| p.id == id)
        .unwrap_or_else(|| panic!("no pinset {id}"))
}

fn pin<'a>(set: &'a DesiredPinSet, cid: &str) -> &'a DesiredPin {
    let key = CidKey::parse(cid).unwrap();
    set.pins
        .get(&key)
        .unwrap_or_else(|| panic!("{cid} not in {}", set.id))
}

fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn manifest(name: &str, body: &str) -> String {
    format!(
        "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: {name}\nspec:\n{body}"
    )
}

// ---------------------------------------------------------------- examples

#[test]
fn small_example_loads_with_v0_cids_normalised() {
    let path = repo_path("examples/small.yaml");
    let loaded = load_ok(&[&path]);
    assert_eq!(loaded.manifest_files, 1);
    assert_eq!(loaded.pinsets.len(), 1);
    assert_eq!(loaded.pin_count(), 4);
    let set = pinset(&loaded, "default", "small-site");
    assert_eq!(set.source.file, path);
    assert!(set.prune, "prune defaults to true");
    assert!(!set.suspend);

    // The v0 and the v1 spelling are one key; the v0 spelling is kept.
    let v0 = "QmVxA7HQNcDfk9Ncm5LcPShjqFGSzFdRV4wMb3Y8jkTsx1";
    let v1 = "bafybeidrdjqqrorm43fjhxkh22ax6i3b3minrk3o5seumczn7qwdexx2xy";
    assert_eq!(CidKey::parse(v0).unwrap(), CidKey::parse(v1).unwrap());
    let readme = pin(set, v1);
    assert_eq!(readme.written_as.as_deref(), Some(v0));
    assert_eq!(readme.spec.name, "readme");
    assert!(set.pins.keys().any(|k| k.to_string() == v1));
    assert!(!set.pins.keys().any(|k| k.to_string() == v0));

    let website = pin(
        set,
        "bafybeidupkhtta4v3xuokjgz7gbxqs6yiqofz7sda622a6n6kqjo4zodcq",
    );
    assert_eq!(website.written_as, None, "canonical spelling is not stored");
    assert_eq!(website.spec.options.mode, PinMode::Recursive);
    assert_eq!(
        website.spec.options.replication,
        ReplicationFactors { min: 0, max: 0 },
        "no replication given: the cluster default (0/0)"
    );
    let logo = pin(
        set,
        "bafkreibvtdhg7fs3esa74jrrnqdlgckqyrvmp6hhekprasvhr5lztf3gru",
    );
    assert_eq!(logo.spec.options.mode, PinMode::Direct);
    let unnamed = pin(
        set,
        "bafybeicgwqvuekonpi44kzhhqc5wmwul3zh564raa7ueopywp7st5vfzsu",
    );
    assert_eq!(unnamed.spec.name, "");
}

#[test]
fn mirror_defaults_example_resolves_defaults_and_overrides() {
    let loaded = load_ok(&[&repo_path("examples/mirror-defaults.yaml")]);
    assert_eq!(loaded.pin_count(), 7);
    let ids: Vec<String> = loaded.pinsets.iter().map(|p| p.id.to_string()).collect();
    assert_eq!(ids, ["mirrors/archlinux-core", "mirrors/debian-security"]);

    let arch = pinset(&loaded, "mirrors", "archlinux-core");
    assert_eq!(arch.labels, meta(&[("team", "arch"), ("tier", "core")]));
    assert_eq!(arch.pins.len(), 4);
    assert!(arch.prune);
    assert!(!arch.force_prune());
    let days30 = Some(Duration::from_secs(720 * 3600));

    // Only defaults.
    let core = pin(
        arch,
        "bafybeif6hpypoymvpp3cp6h25k3mljx4hgpjcdwj63vde6q5umfa5dmzum",
    );
    let o = &core.spec.options;
    assert_eq!(core.spec.name, "core-2026-11-25");
    assert_eq!(o.replication, ReplicationFactors { min: 2, max: 3 });
    assert_eq!(o.allocate_tags, meta(&[("region", "eu")]));
    assert_eq!(o.mode, PinMode::Recursive);
    assert_eq!(o.expire_after, days30);
    assert_eq!(
        o.metadata,
        meta(&[("source", "arch"), ("channel", "stable")])
    );
    assert!(o.origins.is_empty());

    // Own replication and origins; metadata merged over the defaults'.
    let extra = pin(
        arch,
        "bafybeib5gh7d35lpxutlticcixkoy3olofh2pja6pzznkirdwyeacodvbm",
    );
    let o = &extra.spec.options;
    assert_eq!(o.replication, ReplicationFactors { min: 1, max: 2 });
    assert_eq!(o.allocate_tags, meta(&[("region", "eu")]));
    assert_eq!(o.expire_after, days30);
    assert_eq!(
        o.metadata,
        meta(&[
            ("source", "arch"),
            ("channel", "stable"),
            ("release", "2026.11.25")
        ])
    );
    assert_eq!(
        o.origins,
        [
            "/dns4/mirror.example/tcp/4001/p2p/12D3KooWD3gJQfDJ8nCHNMFikDWUERpH7vVkQLkArTg2vxKWKauM",
            "/ip4/203.0.113.7/tcp/4001"
        ]
    );

    // Direct, shorter expiry, a default metadata value overridden.
    let iso = pin(
        arch,
        "bafybeibumzfj3fmr3zljd4ncgobiqyszknlh225lg3prgyffthb2zfbmhm",
    );
    let o = &iso.spec.options;
    assert_eq!(o.mode, PinMode::Direct);
    assert_eq!(o.expire_after, Some(Duration::from_secs(24 * 3600)));
    assert_eq!(o.replication, ReplicationFactors { min: 2, max: 3 });
    assert_eq!(
        o.metadata,
        meta(&[("source", "arch"), ("channel", "testing")])
    );

    // Written as v0, own allocation tags (they replace, not merge).
    let keyring = pin(
        arch,
        "bafybeiek4wn5sxkn6n52np564jjhd74engtcqmdutnoox3cjnxy2nairme",
    );
    assert_eq!(
        keyring.written_as.as_deref(),
        Some("QmXgr3DTYgL4JmTEjVYpmrf7JCr4DUPwntMh7gkYsfdWNC")
    );
    assert_eq!(
        keyring.spec.options.allocate_tags,
        meta(&[("region", "us")])
    );
    assert_eq!(
        keyring.spec.options.replication,
        ReplicationFactors { min: 2, max: 3 }
    );

    let deb = pinset(&loaded, "mirrors", "debian-security");
    assert!(!deb.prune);
    assert!(deb.force_prune());
    assert_eq!(deb.pins.len(), 3);
    for p in deb.pins.values() {
        assert_eq!(
            p.spec.options.replication,
            ReplicationFactors { min: -1, max: -1 }
        );
        assert_eq!(p.spec.options.metadata, meta(&[("source", "debian")]));
        assert_eq!(p.spec.options.expire_after, None);
    }
    // Pins without overrides share one copy of the defaults.
    let s1 = pin(
        deb,
        "bafybeig7cnz2wwar7x5ykjjnxsklazas6fwqxchwvk4ykklkv67jbg4s6a",
    );
    let s2 = pin(deb, "QmfDzvAQA4foJbCq5npXrcd3cBs1wstnqdjbgj4wgQwyNE");
    assert!(Arc::ptr_eq(&s1.spec.options, &s2.spec.options));
    let s3 = pin(
        deb,
        "bafkreicfp46hfsy6xbthzznjkziqjrsuxxnf5zyix2m7fma4voky5dgchm",
    );
    assert_eq!(s3.spec.options.mode, PinMode::Direct);
}

#[test]
fn pinsfrom_example_reads_its_list() {
    let loaded = load_ok(&[&repo_path("examples/pinsfrom.yaml")]);
    let set = pinset(&loaded, "mirrors", "archlinux-core-list");
    // 20 listed CIDs (one of them twice, identically) plus one inline pin.
    assert_eq!(set.pins.len(), 21);
    assert_eq!(loaded.pin_count(), 21);

    let listed = pin(set, "QmYcC9As6BdcKj5GhVWGz1KBUWgG2qNi7N94pb7YH7yHqT");
    assert_eq!(listed.spec.name, "pkg-1");
    // First spelling wins; the identical v1 repeat at the end is accepted.
    assert_eq!(
        listed.written_as.as_deref(),
        Some("QmYcC9As6BdcKj5GhVWGz1KBUWgG2qNi7N94pb7YH7yHqT")
    );
    assert_eq!(
        CidKey::parse("bafybeieysaptbjbttcj2cs4dfr4d5vuz2a7p4qcqvn5pl57ogyrc3ctddi").unwrap(),
        CidKey::parse("QmYcC9As6BdcKj5GhVWGz1KBUWgG2qNi7N94pb7YH7yHqT").unwrap()
    );
    let o = &listed.spec.options;
    assert_eq!(o.replication, ReplicationFactors { min: 1, max: 2 });
    assert_eq!(o.metadata, meta(&[("source", "arch-sync")]));

    // Indented line with a multi-word name and a trailing comment.
    let indented = pin(
        set,
        "bafkreibqyuppyr3qxrisnnokiwkzcm5s75xxnikucvsurvmvj3oqcfmiyy",
    );
    assert_eq!(indented.spec.name, "pkg-8 (indented)");
    // A line with no name.
    let bare = pin(
        set,
        "bafkreicj6mqa3onajnsmzfzv45kqfyodqttzmg35se3rtytspfrcgpeoky",
    );
    assert_eq!(bare.spec.name, "");

    let inline = pin(
        set,
        "bafybeif6hpypoymvpp3cp6h25k3mljx4hgpjcdwj63vde6q5umfa5dmzum",
    );
    assert_eq!(inline.spec.name, "core-db");
    // Every pin has the defaults and shares one copy of them.
    for p in set.pins.values() {
        assert!(Arc::ptr_eq(&p.spec.options, &inline.spec.options));
    }
}

#[test]
fn examples_directory_loads_as_a_whole() {
    let loaded = load_ok(&[&repo_path("examples")]);
    assert!(loaded.manifest_files >= 3);
    for (ns, name) in [
        ("default", "small-site"),
        ("mirrors", "archlinux-core"),
        ("mirrors", "debian-security"),
        ("mirrors", "archlinux-core-list"),
    ] {
        pinset(&loaded, ns, name);
    }
    let ids: Vec<_> = loaded.pinsets.iter().map(|p| p.id.clone()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "pinsets are ordered by namespace/name");
    // Two PinSets may share a CID (archlinux-core and archlinux-core-list).
    let shared =
        CidKey::parse("bafybeif6hpypoymvpp3cp6h25k3mljx4hgpjcdwj63vde6q5umfa5dmzum").unwrap();
    let holders = loaded
        .pinsets
        .iter()
        .filter(|p| p.pins.contains_key(&shared))
        .count();
    assert_eq!(holders, 2);
}

// ---------------------------------------------------------------- invalid fixtures

#[test]
fn bad_yaml_syntax() {
    assert_fixture(
        "bad-yaml-syntax.yaml",
        &[(None, 8, 6, "did not find expected '-' indicator")],
    );
}

#[test]
fn wrong_type() {
    // `min: two` where an integer is expected; the column is the value's.
    assert_fixture(
        "wrong-type.yaml",
        &[(None, 8, 26, "expected a whole number")],
    );
}

#[test]
fn unknown_field_suggests_the_nearest_name() {
    assert_fixture(
        "unknown-field-nmae.yaml",
        &[(None, 8, 7, r#"unknown field "nmae", did you mean "name"?"#)],
    );
    assert_fixture(
        "unknown-field-pins-from.yaml",
        &[(
            None,
            6,
            3,
            r#"unknown field "pins_from", did you mean "pinsFrom"?"#,
        )],
    );
}

#[test]
fn bad_cids_are_all_reported() {
    assert_fixture(
        "bad-cid.yaml",
        &[
            (None, 9, 12, r#"invalid CID "bafy-not-a-cid""#),
            (
                None,
                11,
                12,
                r#"invalid CID "QmVxA7HQNcDfk9Ncm5LcPShjqFGSzFdRV4wMb3Y8jkTsx""#,
            ),
        ],
    );
}

#[test]
fn bad_replication_every_case() {
    assert_fixture(
        "bad-replication.yaml",
        &[
            (None, 8, 20, "replication min 0 / max 2: each must be -1"),
            (None, 10, 20, "replication min 3 is greater than max 2"),
            // A block mapping is located at its first key.
            (
                None,
                13,
                9,
                "min -1 (every peer) needs max -1 too, got max 3",
            ),
        ],
    );
}

#[test]
fn bad_durations() {
    assert_fixture(
        "bad-duration.yaml",
        &[
            (None, 7, 18, r#"invalid duration "30d": unknown unit "d""#),
            (None, 10, 20, r#"negative duration "-1h""#),
        ],
    );
}

#[test]
fn upper_case_name() {
    assert_fixture(
        "bad-name-uppercase.yaml",
        &[(
            None,
            4,
            9,
            r#"metadata.name "ArchLinux-Core": must be a DNS-1123 label"#,
        )],
    );
}

#[test]
fn duplicate_pinset_across_documents() {
    let path = fixture("duplicate-pinset.yaml");
    assert_fixture(
        "duplicate-pinset.yaml",
        &[(
            None,
            13,
            3,
            "duplicate PinSet mirrors/twice: already declared at",
        )],
    );
    let diags = diagnostics(load(&[&path]));
    let first = format!("{}:4:3", path.display());
    assert!(diags[0].message.ends_with(&first), "{}", diags[0]);
}

#[test]
fn duplicate_cid_with_different_options() {
    // The v0 spelling with another name, then the v1 with other replication.
    let msg = "duplicate CID bafybeidrdjqqrorm43fjhxkh22ax6i3b3minrk3o5seumczn7qwdexx2xy \
               in PinSet default/duplicate-cid with a different name or options";
    assert_fixture(
        "duplicate-cid.yaml",
        &[(None, 10, 12, msg), (None, 13, 12, msg)],
    );
}

#[test]
fn missing_list_file() {
    assert_fixture(
        "missing-list.yaml",
        &[(None, 7, 13, "lists/does-not-exist.txt: cannot read list")],
    );
}

#[test]
fn list_path_escaping_the_directory() {
    // `../x.txt` does not exist: the path is refused for where it points,
    // before the file system is asked.
    assert_fixture(
        "list-escapes.yaml",
        &[(
            None,
            7,
            13,
            r#"pinsFrom path "../x.txt" leaves the source directory"#,
        )],
    );
}

#[test]
fn list_file_with_bad_cids_points_into_the_list() {
    assert_fixture(
        "list-bad-cid.yaml",
        &[
            (
                Some("lists/bad-cid.txt"),
                5,
                3,
                r#"invalid CID "bafybeinotacidatall""#,
            ),
            (
                Some("lists/bad-cid.txt"),
                7,
                1,
                r#"invalid CID "Qm0OIl0OIl""#,
            ),
        ],
    );
}

#[test]
fn binary_garbage() {
    let bytes = std::fs::read(fixture("binary-garbage.yaml")).unwrap();
    assert!(bytes.contains(&0) && std::str::from_utf8(&bytes).is_err());
    // First invalid byte: line 2, after "name: " and three control bytes.
    assert_fixture(
        "binary-garbage.yaml",
        &[(None, 2, 10, "file is not valid UTF-8 text")],
    );
}

#[test]
fn wrong_api_version_and_kind() {
    assert_fixture(
        "wrong-api-version.yaml",
        &[(
            None,
            1,
            13,
            r#"apiVersion "pinfleet.io/v1" is not supported, expected "pinfleet.io/v1alpha1""#,
        )],
    );
    assert_fixture(
        "wrong-kind.yaml",
        &[(
            None,
            2,
            7,
            r#"kind "Pinset" is not supported, expected "PinSet""#,
        )],
    );
}

#[test]
fn bad_origin_multiaddrs() {
    assert_fixture(
        "bad-origin.yaml",
        &[
            (
                None,
                10,
                11,
                r#"invalid origin multiaddress "mirror.example:4001""#,
            ),
            (
                None,
                11,
                11,
                r#"invalid origin multiaddress "/ip4/203.0.113.7/tcp/not-a-port""#,
            ),
        ],
    );
}

#[test]
fn bad_labels() {
    // Label maps carry no positions per entry; errors point at `metadata`.
    assert_fixture(
        "bad-label.yaml",
        &[
            (None, 4, 3, r#"label "bad key": key name must be"#),
            (None, 4, 3, r#"label "tier": value must be"#),
        ],
    );
}

#[test]
fn invalid_directory_reports_every_file_sorted() {
    let dir = repo_path("tests/fixtures/invalid");
    let diags = diagnostics(load(&[&dir]));
    let mut sorted = diags.clone();
    sorted.sort();
    assert_eq!(diags, sorted);
    let yaml_files = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "yaml")
        })
        .count();
    // Every manifest in the directory is broken and says so.
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") && p != fixture("list-bad-cid.yaml") {
            assert!(
                diags.iter().any(|d| d.file == p),
                "no diagnostic for {}",
                p.display()
            );
        }
    }
    assert!(diags.len() > yaml_files, "{}", render(&diags));
    assert!(diags.iter().any(|d| d.file == fixture("lists/bad-cid.txt")));
}

// ---------------------------------------------------------------- generated cases

#[test]
fn identical_duplicates_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (v0, v1) = (cid_v0("dup"), cid_v1("dup"));
    let other = cid_v1("other");
    let body = format!(
        "  defaults:\n    replication: {{min: 1, max: 2}}\n  pinsFrom:\n    - path: list.txt\n  pins:\n    - cid: {v1}\n      name: dup\n    - cid: {v0}\n      name: dup\n    - cid: {other}\n    - cid: {other}\n"
    );
    write_tree(
        dir.path(),
        &[
            ("m.yaml", &manifest("dups", &body)),
            // Listed CIDs get the defaults, exactly like option-less inline pins.
            ("list.txt", &format!("{v0} dup\n{other}\n{v1} dup\n")),
        ],
    );
    let loaded = load_ok(&[dir.path()]);
    let set = pinset(&loaded, "default", "dups");
    assert_eq!(set.pins.len(), 2);
    assert_eq!(pin(set, &v0).spec.name, "dup");
    assert_eq!(
        pin(set, &v0).written_as,
        None,
        "first spelling (v1) is kept"
    );

    // The same CID listed with another name is a conflict, located in the list.
    std::fs::write(
        dir.path().join("list.txt"),
        format!("{other}\n{v0} renamed\n"),
    )
    .unwrap();
    let diags = diagnostics(load(&[dir.path()]));
    let list = dir.path().join("list.txt");
    assert_diags(
        &diags,
        &[(
            &list,
            2,
            1,
            &format!("duplicate CID {v1} in PinSet default/dups"),
        )],
    );
}

#[test]
fn list_lines_comments_names_and_positions() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c, d) = (cid_v1("a"), cid_v0("b"), cid_v1("c"), cid_v1("d"));
    // CRLF endings, tabs, a name with inner spaces, comments in three places.
    let good = format!(
        "# header\n\n{a}\r\n\t{b}\tname with  spaces  \r\n   # indented comment\n{c} # no name\n"
    );
    let list = format!("{good}{d}#glued\n  not-a-cid here\n");
    write_tree(
        dir.path(),
        &[
            (
                "m.yaml",
                &manifest("lines", "  pinsFrom:\n    - path: ./sub/../l.txt\n"),
            ),
            ("sub/.keep", ""),
            ("l.txt", &list),
        ],
    );
    let diags = diagnostics(load(&[dir.path()]));
    let list_path = dir.path().join("./sub/../l.txt");
    assert_diags(
        &diags,
        &[
            // '#' only starts a comment at the start or after whitespace.
            (&list_path, 7, 1, &format!("invalid CID \"{d}#glued\"")),
            (&list_path, 8, 3, "invalid CID \"not-a-cid\""),
        ],
    );

    // Without the two bad lines the rest loads, names trimmed.
    std::fs::write(dir.path().join("l.txt"), good).unwrap();
    let loaded = load_ok(&[dir.path()]);
    let set = pinset(&loaded, "default", "lines");
    assert_eq!(set.pins.len(), 3);
    assert_eq!(pin(set, &a).spec.name, "");
    assert_eq!(pin(set, &b).spec.name, "name with  spaces");
    assert_eq!(pin(set, &b).written_as.as_deref(), Some(b.as_str()));
    assert_eq!(pin(set, &c).spec.name, "");
}

#[test]
fn errors_in_one_list_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let list: String = (0..60).map(|i| format!("bad-{i}\n")).collect();
    write_tree(
        dir.path(),
        &[
            (
                "m.yaml",
                &manifest("many", "  pinsFrom:\n    - path: l.txt\n"),
            ),
            ("l.txt", &list),
        ],
    );
    let limits = Limits {
        max_errors_per_file: 50,
        ..Limits::default()
    };
    let diags = diagnostics(load_paths(&[dir.path()], &limits));
    assert_eq!(diags.len(), 51, "{}", render(&diags));
    let summary = &diags[0]; // file-level diagnostics sort first (line 0)
    assert_eq!((summary.line, summary.col), (0, 0));
    assert!(
        summary
            .message
            .contains("10 more errors in this file not shown"),
        "{summary}"
    );
    assert_eq!((diags[1].line, diags[50].line), (1, 50));
}

#[test]
fn multi_error_file_reports_everything_across_documents() {
    let dir = tempfile::tempdir().unwrap();
    let doc1 = manifest(
        "first",
        "  defaults:\n    expireAfter: soon\n  pins:\n    - cid: nope\n      replication: {min: 5, max: 1}\n",
    );
    let doc2 = manifest("Second", "  pins: []\n");
    let doc3 = manifest(
        "third",
        "  pinsFrom:\n    - path: missing.txt\n  pins:\n    - cid: Qmnope\n",
    );
    let path = dir.path().join("m.yaml");
    std::fs::write(&path, format!("{doc1}---\n{doc2}---\n{doc3}")).unwrap();
    let diags = diagnostics(load(&[&path]));
    assert_diags(
        &diags,
        &[
            (&path, 7, 18, r#"invalid duration "soon""#),
            (&path, 9, 12, r#"invalid CID "nope""#),
            (&path, 10, 20, "min 5 is greater than max 1"),
            (&path, 15, 9, r#"metadata.name "Second""#),
            (&path, 25, 13, "missing.txt: cannot read list"),
            (&path, 27, 12, r#"invalid CID "Qmnope""#),
        ],
    );
}

#[test]
fn a_bad_default_is_reported_once() {
    // Every pin that overrides something re-resolves the defaults; the
    // problem with `defaults.expireAfter` must still be reported once.
    let body = format!(
        "  defaults:\n    expireAfter: soon\n  pins:\n    - cid: {}\n      mode: direct\n    - cid: {}\n      mode: direct\n",
        cid_v1("1"),
        cid_v1("2")
    );
    let text = manifest("once", &body);
    let name = Path::new("once.yaml");
    let want = [(name, 7, 18, r#"invalid duration "soon""#)];
    let diags = load_str(name, &text, &Limits::default()).unwrap_err();
    assert_diags(&diags.0, &want);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("once.yaml");
    std::fs::write(&path, &text).unwrap();
    let diags = diagnostics(load(&[&path]));
    assert_diags(&diags, &[(&path, 7, 18, r#"invalid duration "soon""#)]);
}

/// A JSON body (what the CLI sends) takes a faster parser; it must load
/// exactly as the same document read as YAML, and an error in it still
/// names line:col.
#[test]
fn a_json_body_loads_as_its_yaml_and_errors_keep_their_place() {
    let (a, b) = (cid_v1("1"), cid_v1("2"));
    let json = format!(
        r#"{{"apiVersion":"pinfleet.io/v1alpha1","kind":"PinSet","metadata":{{"name":"j","namespace":"ns","labels":{{"team":"x"}}}},
"spec":{{"defaults":{{"replication":{{"min":1,"max":2}}}},"pins":[{{"cid":"{a}","name":"one"}},{{"cid":"{b}","mode":"direct"}}]}}}}"#
    );
    let yaml = format!(
        "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: j\n  namespace: ns\n  labels:\n    team: x\nspec:\n  defaults:\n    replication:\n      min: 1\n      max: 2\n  pins:\n    - cid: {a}\n      name: one\n    - cid: {b}\n      mode: direct\n"
    );
    let name = Path::new("body");
    let from_json = load_str(name, &json, &Limits::default()).unwrap();
    let mut from_yaml = load_str(name, &yaml, &Limits::default()).unwrap();
    assert_eq!(from_json.len(), 1);
    // Only where the document began is unknown in JSON.
    assert_eq!(from_json[0].source.pos, Default::default());
    from_yaml[0].source.pos = Default::default();
    assert_eq!(format!("{from_json:?}"), format!("{from_yaml:?}"));

    let bad = json.replace(&b, "Qmnope");
    let diags = load_str(name, &bad, &Limits::default()).unwrap_err();
    assert_diags(&diags.0, &[(name, 2, 152, r#"invalid CID "Qmnope""#)]);
}

#[test]
fn directories_are_walked_recursively_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let files = [
        (
            "z.yaml",
            manifest("zeta", &format!("  pins:\n    - cid: {}\n", cid_v1("z"))),
        ),
        (
            "a/b/deep.yml",
            manifest("deep", &format!("  pins:\n    - cid: {}\n", cid_v1("d"))),
        ),
        (
            "a/top.yaml",
            manifest("alpha", &format!("  pins:\n    - cid: {}\n", cid_v1("a"))),
        ),
        // Same PinSet again, later in walk order than a/top.yaml.
        (
            "b/again.yaml",
            manifest("alpha", &format!("  pins:\n    - cid: {}\n", cid_v1("b"))),
        ),
        // Skipped: dot-directories, dot-files, other extensions.
        (".github/workflows/ci.yaml", "on: push\n".to_string()),
        (".hidden.yaml", "garbage: [".to_string()),
        ("notes.txt", "not yaml\n".to_string()),
        ("README.md", "# manifests\n".to_string()),
    ];
    // Created in reverse so that creation order cannot pass for name order.
    for (rel, content) in files.iter().rev() {
        write_tree(root, &[(rel, content)]);
    }
    let diags = diagnostics(load(&[root]));
    let again = root.join("b/again.yaml");
    assert_diags(
        &diags,
        &[(
            &again,
            4,
            3,
            "duplicate PinSet default/alpha: already declared at",
        )],
    );
    assert!(
        diags[0]
            .message
            .ends_with(&format!("{}:4:3", root.join("a/top.yaml").display())),
        "{}",
        diags[0]
    );

    std::fs::remove_file(&again).unwrap();
    let first = load_ok(&[root]);
    assert_eq!(first.manifest_files, 3);
    let ids: Vec<String> = first.pinsets.iter().map(|p| p.id.to_string()).collect();
    assert_eq!(ids, ["default/alpha", "default/deep", "default/zeta"]);
    assert_eq!(
        pinset(&first, "default", "deep").source.file,
        root.join("a/b/deep.yml")
    );

    // Rebuilt in the opposite order, the tree loads identically.
    std::fs::remove_dir_all(root.join("a")).unwrap();
    std::fs::remove_file(root.join("z.yaml")).unwrap();
    for (rel, content) in files.iter().take(3) {
        write_tree(root, &[(rel, content)]);
    }
    let second = load_ok(&[root]);
    assert_eq!(first.pinsets, second.pinsets);
    assert_eq!(first.digest, second.digest);

    // Naming a file and its directory reads the file once.
    let both = load_ok(&[root, &root.join("z.yaml")]);
    assert_eq!(both.manifest_files, 3);
    assert_eq!(both.pinsets, first.pinsets);
}

#[cfg(unix)]
#[test]
fn symlink_cycles_end() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_tree(
        root,
        &[(
            "m.yaml",
            &manifest("looped", &format!("  pins:\n    - cid: {}\n", cid_v1("l"))),
        )],
    );
    // Three links to the root: without cycle detection the walk visits 3^40
    // paths before the kernel's ELOOP stops it.
    for name in ["a", "b", "c"] {
        std::os::unix::fs::symlink(".", root.join(name)).unwrap();
    }
    let loaded = load_ok(&[root]);
    assert_eq!(loaded.manifest_files, 1);
    assert_eq!(loaded.pin_count(), 1);
}

#[cfg(unix)]
#[test]
fn list_symlink_out_of_the_source_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, format!("{}\n", cid_v1("s"))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.yaml");
    std::fs::write(&m, manifest("sneaky", "  pinsFrom:\n    - path: l.txt\n")).unwrap();
    std::os::unix::fs::symlink(&secret, dir.path().join("l.txt")).unwrap();
    let diags = diagnostics(load(&[dir.path()]));
    assert_diags(
        &diags,
        &[(
            &m,
            7,
            13,
            r#"pinsFrom path "l.txt" leaves the source directory"#,
        )],
    );
}

#[test]
fn list_path_may_climb_within_the_source() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[
            (
                "sets/core.yaml",
                &manifest("core", "  pinsFrom:\n    - path: ../lists/core.txt\n"),
            ),
            ("lists/core.txt", &format!("{}\n", cid_v1("core"))),
        ],
    );
    assert_eq!(load_ok(&[dir.path()]).pin_count(), 1);
    // The same manifest loaded alone has `sets/` as its root.
    let alone = dir.path().join("sets/core.yaml");
    let diags = diagnostics(load(&[&alone]));
    assert_diags(&diags, &[(&alone, 7, 13, "leaves the source directory")]);
}

// ---------------------------------------------------------------- limits

#[test]
fn manifest_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.yaml");
    let text = manifest("sized", &format!("  pins:\n    - cid: {}\n", cid_v1("x")));
    std::fs::write(&path, &text).unwrap();
    let len = text.len() as u64;
    let at = Limits {
        max_manifest_bytes: len,
        ..Limits::default()
    };
    assert_eq!(load_paths(&[&path], &at).unwrap().pin_count(), 1);
    let under = Limits {
        max_manifest_bytes: len - 1,
        ..Limits::default()
    };
    let diags = diagnostics(load_paths(&[&path], &under));
    assert_diags(
        &diags,
        &[(
            &path,
            0,
            0,
            &format!(
                "manifest file is larger than the limit of {} bytes",
                len - 1
            ),
        )],
    );
}

#[test]
fn list_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let list: String = (0..100)
        .map(|i| format!("{}\n", cid_v1(&i.to_string())))
        .collect();
    let m = dir.path().join("m.yaml");
    write_tree(
        dir.path(),
        &[
            (
                "m.yaml",
                &manifest("big-list", "  pinsFrom:\n    - path: big.txt\n"),
            ),
            ("big.txt", &list),
        ],
    );
    let len = list.len() as u64;
    let at = Limits {
        max_list_bytes: len,
        ..Limits::default()
    };
    assert_eq!(load_paths(&[&m], &at).unwrap().pin_count(), 100);
    let under = Limits {
        max_list_bytes: len - 1,
        ..Limits::default()
    };
    let diags = diagnostics(load_paths(&[&m], &under));
    assert_diags(
        &diags,
        &[(
            &m,
            7,
            13,
            &format!(
                "big.txt: list file is larger than the limit of {} bytes",
                len - 1
            ),
        )],
    );
}

#[test]
fn pin_count_limit_covers_the_whole_load() {
    let dir = tempfile::tempdir().unwrap();
    let pins = |prefix: &str, n: usize| -> String {
        (0..n)
            .map(|i| format!("    - cid: {}\n", cid_v1(&format!("{prefix}{i}"))))
            .collect()
    };
    write_tree(
        dir.path(),
        &[
            (
                "1.yaml",
                &manifest("one", &format!("  pins:\n{}", pins("a", 3))),
            ),
            (
                "2.yaml",
                &manifest(
                    "two",
                    &format!("  pinsFrom:\n    - path: l.txt\n  pins:\n{}", pins("b", 2)),
                ),
            ),
            (
                "3.yaml",
                &manifest("three", &format!("  pins:\n{}", pins("c", 4))),
            ),
            (
                "l.txt",
                &(0..3)
                    .map(|i| format!("{}\n", cid_v1(&format!("l{i}"))))
                    .collect::<String>(),
            ),
        ],
    );
    let limits = |max_pins| Limits {
        max_pins,
        ..Limits::default()
    };
    assert_eq!(
        load_paths(&[dir.path()], &limits(12)).unwrap().pin_count(),
        12
    );
    // 3 + 5 = 8 > 7 in 2.yaml; 3.yaml goes further but is not reported again.
    let diags = diagnostics(load_paths(&[dir.path()], &limits(7)));
    let two = dir.path().join("2.yaml");
    assert_diags(&diags, &[(&two, 4, 3, "more than 7 pins in this load")]);
}

// ---------------------------------------------------------------- digest

#[test]
fn digest_follows_content() {
    let dir = tempfile::tempdir().unwrap();
    let list = format!("{}\n{}\n", cid_v1("1"), cid_v1("2"));
    write_tree(
        dir.path(),
        &[
            (
                "m.yaml",
                &manifest("digest", "  pinsFrom:\n    - path: l.txt\n"),
            ),
            ("l.txt", &list),
            ("notes.txt", "not read\n"),
        ],
    );
    let d1 = load_ok(&[dir.path()]).digest;
    let hex = d1.strip_prefix("sha256:").unwrap();
    assert_eq!(hex.len(), 64);
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(load_ok(&[dir.path()]).digest, d1, "stable across loads");

    // A file that is not read does not count.
    std::fs::write(dir.path().join("notes.txt"), "changed\n").unwrap();
    assert_eq!(load_ok(&[dir.path()]).digest, d1);

    // A list change changes it, even when the pins stay the same.
    std::fs::write(dir.path().join("l.txt"), format!("{list}# a comment\n")).unwrap();
    let d2 = load_ok(&[dir.path()]).digest;
    assert_ne!(d2, d1);
    std::fs::write(dir.path().join("l.txt"), format!("{list}{}\n", cid_v1("3"))).unwrap();
    let d3 = load_ok(&[dir.path()]).digest;
    assert_ne!(d3, d1);
    assert_ne!(d3, d2);

    // Back to the original content, back to the original digest.
    std::fs::write(dir.path().join("l.txt"), &list).unwrap();
    assert_eq!(load_ok(&[dir.path()]).digest, d1);

    // A manifest change changes it too.
    let m = dir.path().join("m.yaml");
    let text = std::fs::read_to_string(&m).unwrap();
    std::fs::write(&m, format!("# comment\n{text}")).unwrap();
    assert_ne!(load_ok(&[dir.path()]).digest, d1);
}

// ---------------------------------------------------------------- properties

/// Loads `bytes` written to a fresh temp file. The loader must not panic,
/// and when it refuses the file it must say so about that file.
fn check_never_lost(bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.yaml");
    std::fs::write(&path, bytes).unwrap();
    match load_paths(&[&path], &Limits::default()) {
        Ok(_) => Ok(()),
        Err(LoadError::Invalid(d)) => {
            prop_assert!(
                d.0.iter().any(|x| x.file == path),
                "no diagnostic for the file itself:\n{}",
                render(&d.0)
            );
            Ok(())
        }
        Err(e) => Err(TestCaseError::fail(format!("unexpected error: {e:?}"))),
    }
}

#[derive(Clone, Debug)]
enum Edit {
    Delete(usize),
    Insert(usize, u8),
    Replace(usize, u8),
    Truncate(usize),
    DuplicateLine(usize),
}

fn yamlish_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        8 => prop::sample::select(b":-{}[],&*!|>'\"#%@` \t\n\r0".to_vec()),
        4 => b'a'..=b'z',
        1 => any::<u8>(),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), yamlish_byte()).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), yamlish_byte()).prop_map(|(i, b)| Edit::Replace(i, b)),
        any::<usize>().prop_map(Edit::Truncate),
        any::<usize>().prop_map(Edit::DuplicateLine),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let n = bytes.len();
        match *e {
            Edit::Delete(i) if n > 0 => {
                bytes.remove(i % n);
            }
            Edit::Insert(i, b) => bytes.insert(i % (n + 1), b),
            Edit::Replace(i, b) if n > 0 => bytes[i % n] = b,
            // Rare, or every case would end up empty.
            Edit::Truncate(i) if i % 8 == 0 => bytes.truncate(i / 8 % (n + 1)),
            Edit::DuplicateLine(i) => {
                let lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
                if !lines.is_empty() {
                    let k = i % lines.len();
                    let mut out = Vec::with_capacity(n + lines[k].len());
                    for (j, l) in lines.iter().enumerate() {
                        out.extend_from_slice(l);
                        if j == k {
                            out.extend_from_slice(l);
                        }
                    }
                    bytes = out;
                }
            }
            _ => {}
        }
    }
    bytes
}

fn example_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec!["examples/small.yaml", "examples/mirror-defaults.yaml"])
        .prop_map(|p| std::fs::read(repo_path(p)).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        check_never_lost(&bytes)?;
    }

    #[test]
    fn mutated_manifests_never_panic(
        base in example_bytes(),
        edits in prop::collection::vec(edit(), 1..8),
    ) {
        check_never_lost(&apply(base, &edits))?;
    }

    #[test]
    fn arbitrary_lists_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m.yaml");
        let list = dir.path().join("l.txt");
        std::fs::write(&m, manifest("fuzz", "  pinsFrom:\n    - path: l.txt\n")).unwrap();
        std::fs::write(&list, &bytes).unwrap();
        match load_paths(&[&m], &Limits::default()) {
            Ok(_) => {}
            Err(LoadError::Invalid(d)) => {
                prop_assert!(d.0.iter().all(|x| x.file == list), "{}", render(&d.0));
            }
            Err(e) => prop_assert!(false, "unexpected error: {e:?}"),
        }
    }
}

// ------------------------------------------------------- source digests

/// `pinfleet apply` decides from a scan whether a PinSet changed: the scan
/// must give the digest a full load gives, without parsing lists, and the
/// digest must follow the files' content, not where they sit.
#[test]
fn a_scan_gives_the_loads_source_digest_without_parsing_lists() {
    let write = |dir: &Path, list: &str| {
        std::fs::write(
            dir.join("m.yaml"),
            manifest("mirror", "  pinsFrom:\n    - path: lists/core.txt\n"),
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("lists")).unwrap();
        std::fs::write(dir.join("lists/core.txt"), list).unwrap();
    };
    let id = PinSetId::new("default", "mirror");
    let list = format!("{} a\n{} b\n", cid_v1("1"), cid_v1("2"));
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(a.path(), &list);
    write(b.path(), &list);
    let loaded = load_paths(&[a.path()], &Limits::default()).unwrap();
    let scanned = scan_paths(&[a.path()], &Limits::default()).unwrap();
    assert_eq!(loaded.pinsets[0].pins.len(), 2);
    assert!(scanned.pinsets[0].pins.is_empty(), "lists are not parsed");
    let digest = &loaded.source_digests[&id];
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert_eq!(&scanned.source_digests[&id], digest);
    let elsewhere = scan_paths(&[b.path()], &Limits::default()).unwrap();
    assert_eq!(
        &elsewhere.source_digests[&id], digest,
        "the same files in another directory"
    );

    // One more CID in the list: another digest.
    write(b.path(), &format!("{list}{} c\n", cid_v1("3")));
    let changed = scan_paths(&[b.path()], &Limits::default()).unwrap();
    assert_ne!(&changed.source_digests[&id], digest);

    // A broken list line is the load's business: the scan only hashes it.
    write(b.path(), &format!("{list}not-a-cid\n"));
    assert!(scan_paths(&[b.path()], &Limits::default()).is_ok());
    assert!(matches!(
        load_paths(&[b.path()], &Limits::default()),
        Err(LoadError::Invalid(_))
    ));
}

#[test]
fn a_sharded_pin_declares_its_shard_size_and_bad_ones_name_their_place() {
    let (a, b) = (cid_v1("sharded-a"), cid_v1("sharded-b"));
    let body = format!(
        "  pins:\n    - cid: {a}\n      shard:\n        size: 64MiB\n    - cid: {b}\n      shard: {{size: 2097152}}\n"
    );
    let text = manifest("big", &body);
    let name = Path::new("big.yaml");
    let loaded = load_str(name, &text, &Limits::default()).unwrap();
    let set = &loaded[0];
    for (cid, size) in [(&a, 64u64 << 20), (&b, 2 << 20)] {
        let role = pin(set, cid).spec.options.shard_role.clone().unwrap();
        assert_eq!(role.kind, pinfleet::manifest::ShardKind::Meta);
        assert_eq!(role.shard_size, size);
        assert_eq!(role.meta, CidKey::parse(cid).unwrap().to_string());
        assert_eq!(role.reference, None, "no cluster DAG until it is sharded");
    }
    // A pin without `shard` stays an ordinary data pin.
    let plain = manifest("plain", &format!("  pins:\n    - cid: {a}\n"));
    let loaded = load_str(name, &plain, &Limits::default()).unwrap();
    assert_eq!(pin(&loaded[0], &a).spec.options.shard_role, None);

    let bad = |shard: &str, extra: &str| {
        let body = format!("  pins:\n    - cid: {a}\n{extra}      shard: {shard}\n");
        load_str(name, &manifest("bad", &body), &Limits::default()).unwrap_err()
    };
    assert_diags(
        &bad("{size: 12 parsecs}", "").0,
        &[(
            name,
            8,
            14,
            "shard.size: invalid size \"12 parsecs\": unknown unit",
        )],
    );
    assert_diags(
        &bad("{size: 1000}", "").0,
        &[(
            name,
            8,
            14,
            "shard.size 1000 is below the smallest shard, 1MiB",
        )],
    );
    assert_diags(
        &bad("{size: 8MiB}", "      mode: direct\n").0,
        &[(name, 9, 14, "shard needs mode recursive")],
    );
    assert_diags(
        &bad("{size: 8MiB}", "      replication: {min: -1, max: -1}\n").0,
        &[(name, 9, 14, "shard with replication -1")],
    );
    assert_diags(
        &bad("{size: 8MiB, count: 3}", "").0,
        &[(name, 8, 27, "unknown field \"count\"")],
    );
}
