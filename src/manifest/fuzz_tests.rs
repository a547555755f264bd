//! Property tests that feed the manifest loader, the `pinsFrom` list reader
//! and the incremental list reload hostile input: arbitrary bytes, and
//! mutations of valid documents and lists. Each must answer a value or
//! located diagnostics (never panic), with output bounded by the input.
//!
//! Bounded for CI: every input is a few KiB at most, and the case counts
//! keep each test to a few seconds in a debug build.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::incremental::{LineIndex, ListChange, apply_change, check_change, diff_lines};
use super::{Diagnostics, Limits, LoadError, Loaded, load_paths, load_str};
use crate::testkit::fuzz::{bytes, mutated};
use crate::testkit::seq_cid;

const SMALL: &str = include_str!("../../examples/small.yaml");
const DEFAULTS: &str = include_str!("../../examples/mirror-defaults.yaml");
const PINSFROM: &str = include_str!("../../examples/pinsfrom.yaml");
const JSON: &str = r#"{"apiVersion":"pinfleet.io/v1alpha1","kind":"PinSet",
"metadata":{"name":"site","namespace":"web","labels":{"a":"b"}},
"spec":{"defaults":{"replication":{"min":1,"max":2}},"pins":[
{"cid":"QmVxA7HQNcDfk9Ncm5LcPShjqFGSzFdRV4wMb3Y8jkTsx1","name":"readme"},
{"cid":"bafkreibvtdhg7fs3esa74jrrnqdlgckqyrvmp6hhekprasvhr5lztf3gru","mode":"direct",
"expireAfter":"24h","metadata":{"k":"v"}}]}}"#;

const YAML_TOKENS: &[&[u8]] = &[
    b": ",
    b"\n",
    b"\n  ",
    b"- ",
    b"&a ",
    b"*a",
    b"[",
    b"]",
    b"{",
    b"}",
    b"\"",
    b"'",
    b"!!str ",
    b"<<: *a",
    b"\t",
    b"#",
    b"\n---\n",
    b"\0",
    b"\xff",
    b"|\n",
    b"? ",
    b"%YAML 1.2\n",
    b"~",
    b"name: x\n",
    b"cid: QmVxA7HQNcDfk9Ncm5LcPShjqFGSzFdRV4wMb3Y8jkTsx1\n",
];
const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"\\u0000",
    b"\\ud800",
    b"null",
    b"1e999",
    b"-0",
    b"\xff",
    b"\"pins\":[]",
    b"\"x\":1,",
];

/// Bounds every answer of a load of `input_len` bytes must keep: no more
/// pins than bytes, and no diagnostic longer than the input could explain
/// (an echoed value is escaped, at most six characters a byte).
fn assert_bounded(input_len: usize, result: &Result<Vec<super::DesiredPinSet>, Diagnostics>) {
    match result {
        Ok(sets) => {
            let pins: usize = sets.iter().map(|s| s.pins.len()).sum();
            assert!(pins <= input_len, "{pins} pins from {input_len} bytes");
        }
        Err(d) => {
            assert!(!d.0.is_empty(), "an error names at least one problem");
            assert!(d.0.len() <= input_len + 16, "{} diagnostics", d.0.len());
            for diag in &d.0 {
                assert!(
                    diag.message.len() <= 6 * input_len + 512,
                    "a {}-byte message from {input_len} bytes",
                    diag.message.len()
                );
            }
        }
    }
}

fn load_text(bytes: &[u8], limits: &Limits) -> Result<Vec<super::DesiredPinSet>, Diagnostics> {
    let text = String::from_utf8_lossy(bytes);
    let r = load_str(Path::new("fuzz.yaml"), &text, limits);
    assert_bounded(text.len(), &r);
    r
}

fn small_limits() -> Limits {
    Limits {
        max_pins: 3,
        max_errors_per_file: 5,
        ..Limits::default()
    }
}

/// `depth` nested flow sequences or mappings, or block sequences, inside a
/// PinSet document.
fn nested(depth: usize, kind: u8) -> String {
    let head =
        "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata: {name: n}\nspec:\n  pins: ";
    match kind % 3 {
        0 => format!("{head}{}{}", "[".repeat(depth), "]".repeat(depth)),
        1 => format!("{head}{}1{}", "{a: ".repeat(depth), "}".repeat(depth)),
        _ => {
            let mut s = format!("{head}\n");
            for i in 0..depth.min(400) {
                s.push_str(&" ".repeat(i + 4));
                s.push_str("-\n");
            }
            s
        }
    }
}

/// A "billion laughs": `levels` anchors, each an alias list of the one
/// before repeated `width` times, used where pins go.
fn laughs(levels: usize, width: usize) -> String {
    let mut s = String::from(
        "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: n\n  labels:\n    l0: &a0 [\"lol\"]\n",
    );
    for l in 1..levels {
        let refs = vec![format!("*a{}", l - 1); width].join(", ");
        s.push_str(&format!("    l{l}: &a{l} [{refs}]\n"));
    }
    s.push_str(&format!("spec:\n  pins: *a{}\n", levels.saturating_sub(1)));
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn manifest_loader_answers_arbitrary_bytes_with_a_value_or_diagnostics(
        input in bytes(2048),
    ) {
        let _ = load_text(&input, &Limits::default());
    }

    #[test]
    fn manifest_loader_answers_mutated_yaml_with_a_value_or_diagnostics(
        input in mutated(
            vec![SMALL.into(), DEFAULTS.into(), PINSFROM.into(),
                 format!("{SMALL}\n---\n{DEFAULTS}").into_bytes()],
            YAML_TOKENS,
            6,
        ),
        small in any::<bool>(),
    ) {
        let limits = if small { small_limits() } else { Limits::default() };
        let _ = load_text(&input, &limits);
    }

    #[test]
    fn json_fast_path_answers_mutated_json_as_the_yaml_path_would(
        input in mutated(vec![JSON.into()], JSON_TOKENS, 4),
    ) {
        let fast = load_text(&input, &Limits::default());
        // The same text without its leading `{` test: a leading space keeps
        // the fast path; a leading comment line forces the YAML parser.
        let text = format!("#\n{}", String::from_utf8_lossy(&input));
        let slow = load_str(Path::new("fuzz.yaml"), &text, &Limits::default());
        // JSON is YAML: what one accepts the other accepts, with the same
        // pins (positions differ by the comment line, so only Ok is compared).
        if let (Ok(a), Ok(b)) = (&fast, &slow) {
            let pins = |s: &Vec<super::DesiredPinSet>| -> Vec<_> {
                s.iter().map(|p| (p.id.clone(), p.pins.clone())).collect()
            };
            prop_assert_eq!(pins(a), pins(b));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn deep_nesting_is_a_located_error_not_a_stack_overflow(
        depth in 1usize..20_000,
        kind in any::<u8>(),
    ) {
        let text = nested(depth, kind);
        let r = load_text(text.as_bytes(), &Limits::default());
        prop_assert!(r.is_err());
    }

    #[test]
    fn alias_heavy_documents_are_refused_within_budget(
        levels in 1usize..12,
        width in 1usize..12,
    ) {
        let text = laughs(levels, width);
        let r = load_text(text.as_bytes(), &Limits::default());
        prop_assert!(r.is_err(), "strings are not pins");
    }
}

// ---- pinsFrom lists ----

const MANIFEST: &str = "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: fuzz\nspec:\n  pinsFrom:\n    - path: list.txt\n";
const CORE: &str = include_str!("../../examples/lists/core.txt");
const LIST_TOKENS: &[&[u8]] = &[
    b"\n",
    b"\r\n",
    b" ",
    b"\t",
    b"#",
    b" # c",
    b"\xff",
    b"\0",
    b"QmYcC9As6BdcKj5GhVWGz1KBUWgG2qNi7N94pb7YH7yHqT",
    b"bafkreicj6mqa3onajnsmzfzv45kqfyodqttzmg35se3rtytspfrcgpeoky",
    b"BAFKREICJ6MQA3ONAJNSMZFZV45KQFYODQTTZMG35SE3RTYTSPFRCGPEOKY",
    b"bafkqaaa",
    b"f01551220",
];

/// A source directory holding [`MANIFEST`], whose list is rewritten by
/// [`load_list`].
fn source_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.yaml"), MANIFEST).unwrap();
    dir
}

fn load_list(dir: &Path, list: &[u8], limits: &Limits) -> Result<Loaded, LoadError> {
    std::fs::write(dir.join("list.txt"), list).unwrap();
    let paths: [PathBuf; 1] = [dir.to_path_buf()];
    load_paths(&paths, limits)
}

/// A valid list of the CIDs numbered `ids` (distinct), with names,
/// comments, blank lines and CRLF endings mixed in.
fn valid_list(ids: &[u64], style: u8) -> Vec<u8> {
    let mut s = String::from("# a list\n\n");
    for (i, id) in ids.iter().enumerate() {
        let cid = seq_cid(*id);
        match (style as usize + i) % 4 {
            0 => s.push_str(&format!("{cid}\n")),
            1 => s.push_str(&format!("  {cid}  pkg {i} # note\n")),
            2 => s.push_str(&format!("{cid} p{i}\r\n")),
            _ => s.push_str(&format!("{}\t\n", cid.to_string().to_uppercase())),
        }
    }
    s.into_bytes()
}

fn check_list_answer(list: &[u8], r: &Result<Loaded, LoadError>, limits: &Limits) {
    let text = String::from_utf8_lossy(list);
    match r {
        Ok(loaded) => {
            let lines = list.split(|b| *b == b'\n').count();
            assert!(loaded.pin_count() <= lines, "more pins than lines");
            for pin in loaded.pinsets.iter().flat_map(|p| p.pins.iter()) {
                let shown = pin
                    .1
                    .written_as
                    .as_deref()
                    .map_or(pin.0.to_string(), str::to_string);
                assert!(text.contains(&shown), "{shown} is not in the list");
            }
        }
        Err(LoadError::Invalid(d)) => {
            let in_list = d.0.iter().filter(|d| d.file.ends_with("list.txt")).count();
            assert!(
                in_list <= limits.max_errors_per_file + 1,
                "{in_list} list diagnostics"
            );
            for diag in &d.0 {
                assert!(
                    diag.message.len() <= 512,
                    "a {}-byte message",
                    diag.message.len()
                );
                assert!(!diag.message.is_empty());
            }
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn list_reader_answers_arbitrary_bytes_with_pins_or_few_short_diagnostics(
        list in bytes(2048),
    ) {
        let dir = source_dir();
        let limits = small_limits();
        let r = load_list(dir.path(), &list, &limits);
        check_list_answer(&list, &r, &limits);
    }

    #[test]
    fn list_reader_answers_mutated_lists_with_pins_or_few_short_diagnostics(
        list in mutated(
            vec![CORE.into(), valid_list(&[1, 2, 3, 4, 5, 6], 0), valid_list(&[7, 8], 1)],
            LIST_TOKENS,
            6,
        ),
    ) {
        let dir = source_dir();
        let limits = Limits { max_errors_per_file: 5, ..Limits::default() };
        let r = load_list(dir.path(), &list, &limits);
        check_list_answer(&list, &r, &limits);
    }
}

// ---- incremental reload ----

/// A list as a sync job rewrites it: CIDs added and dropped, lines
/// reordered, renamed, respelled (case, CRLF, blanks), one maybe doubled.
fn rewritten_list() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::sample::subsequence((0u64..40).collect::<Vec<_>>(), 0..20),
        any::<u8>(),
        proptest::option::of(any::<proptest::sample::Index>()),
        proptest::option::of(any::<proptest::sample::Index>()),
    )
        .prop_map(|(ids, style, dup, swap)| {
            let list = valid_list(&ids, style);
            let mut lines: Vec<&[u8]> = list.split_inclusive(|b| *b == b'\n').collect();
            if let Some(i) = dup {
                let l = *i.get(&lines);
                lines.push(l);
            }
            if let Some(i) = swap {
                let j = i.index(lines.len());
                lines.swap(0, j);
            }
            lines.concat()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// What the git source does on a new revision whose only change is a
    /// list: diff, parse the changed lines, check, apply. Whenever the
    /// shortcut goes through, the PinSet must be exactly what a full load of
    /// the new list gives; when a full load refuses the list, the shortcut
    /// must not go through.
    #[test]
    fn incremental_reload_of_an_edited_list_matches_a_full_load(
        (old, new) in (proptest::sample::subsequence((0u64..40).collect::<Vec<_>>(), 0..20), any::<u8>())
            .prop_flat_map(|(ids, style)| {
                let old = valid_list(&ids, style);
                (Just(old.clone()), prop_oneof![mutated(vec![old], LIST_TOKENS, 4), rewritten_list()])
            }),
    ) {
        let dir = source_dir();
        let limits = Limits::default();
        let before = load_list(dir.path(), &old, &limits).unwrap();
        let after = load_list(dir.path(), &new, &limits);
        let mut ps = before.pinsets[0].clone();
        let options = &before.lists[0].options;
        let diff = diff_lines(&LineIndex::new(&old), &LineIndex::new(&new));
        prop_assert!(diff.removed.len() <= old.len() + 1 && diff.added.len() <= new.len() + 1);
        let Some(change) = ListChange::parse(&old, &new, &diff, options) else {
            return Ok(());
        };
        if check_change(&ps, &change, limits.max_pins).is_none() {
            return Ok(());
        }
        let old_pins = ps.pins.clone();
        let changes = apply_change(&mut ps, change);
        let full = match after {
            Ok(l) => l,
            Err(e) => panic!("the shortcut accepted a list a full load refuses: {e}"),
        };
        prop_assert_eq!(&ps.pins, &full.pinsets[0].pins);
        // What it reports changed is exactly the difference.
        for (cid, pin) in &changes.set {
            prop_assert_eq!(ps.pins.get(cid), Some(pin));
            prop_assert_ne!(old_pins.get(cid), Some(pin));
        }
        for cid in &changes.release {
            prop_assert!(old_pins.contains_key(cid) && !ps.pins.contains_key(cid));
        }
        let touched = old_pins.iter().filter(|(c, p)| ps.pins.get(c) != Some(p)).count()
            + ps.pins.keys().filter(|c| !old_pins.contains_key(c)).count();
        prop_assert_eq!(touched, changes.set.len() + changes.release.len());
    }

    #[test]
    fn line_diff_of_arbitrary_bytes_is_the_multiset_difference(
        old in bytes(512),
        new in bytes(512),
    ) {
        let diff = diff_lines(&LineIndex::new(&old), &LineIndex::new(&new));
        let lines = |b: &[u8]| -> Vec<Vec<u8>> {
            let mut v: Vec<Vec<u8>> = Vec::new();
            let mut start = 0;
            while start < b.len() {
                let end = b[start..].iter().position(|x| *x == b'\n').map_or(b.len(), |i| start + i);
                v.push(b[start..end].to_vec());
                start = end + 1;
            }
            v.sort();
            v
        };
        let at = |b: &[u8], off: u32| -> Vec<u8> {
            let rest = &b[off as usize..];
            rest[..rest.iter().position(|x| *x == b'\n').unwrap_or(rest.len())].to_vec()
        };
        let mut left = lines(&old);
        for off in &diff.removed {
            let l = at(&old, *off);
            let i = left.iter().position(|x| *x == l).unwrap();
            left.remove(i);
        }
        let mut right = lines(&new);
        for off in &diff.added {
            let l = at(&new, *off);
            let i = right.iter().position(|x| *x == l).unwrap();
            right.remove(i);
        }
        prop_assert_eq!(left, right, "the lines in common");
        let options = std::sync::Arc::new(super::PinOptions::default());
        let _ = ListChange::parse(&old, &new, &diff, &options);
    }
}
