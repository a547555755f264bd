//! Hostile and careless input gets small, located errors in pinfleet's
//! words (issue 23, item 1): values are quoted cut with their length, the
//! YAML and JSON libraries' own wording never reaches the user, counts agree
//! with their nouns, and error answers are capped in bytes.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

use pinfleet::manifest::{Limits, load_str};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::cid_v1;

/// Words only a library would say: option and type names, Rust types.
const LIBRARY_WORDS: &[&str] = &[
    "DuplicateKeyPolicy",
    "Options",
    "scalar",
    "i32",
    "u64",
    "Option<",
    "serde",
    "`",
    "mapping start",
    "sequence start",
];

fn peer() -> &'static str {
    static PEER: OnceLock<String> = OnceLock::new();
    PEER.get_or_init(|| crate::support::spawn_api_peer("it-diagnostics", 23))
}

fn pinfleet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pinfleet"))
        .args(args)
        .output()
        .expect("run pinfleet")
}

fn header(name: &str) -> String {
    format!("apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: {name}\n")
}

/// The one problem `text` has, as `line:col: message`.
fn only_problem(text: &str) -> String {
    let diags = load_str(Path::new("m.yaml"), text, &Limits::default())
        .expect_err("the manifest should be invalid");
    assert_eq!(diags.0.len(), 1, "{diags}");
    let d = &diags.0[0];
    format!("{}:{}: {}", d.line, d.col, d.message)
}

fn assert_ours(message: &str) {
    for w in LIBRARY_WORDS {
        assert!(!message.contains(w), "{w:?} leaks into {message:?}");
    }
}

#[test]
fn a_5_mb_metadata_name_gives_an_error_under_1_kib_with_its_place_and_length() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("big.yaml");
    let name = "a".repeat(5_000_000);
    std::fs::write(&f, format!("{}spec:\n  pins: []\n", header(&name))).unwrap();
    let o = pinfleet(&["validate", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.len() < 1024, "{} bytes of error", out.len());
    assert!(
        out.starts_with(&format!("{}:4:9: metadata.name \"aaaa", f.display())),
        "{out}"
    );
    assert!(out.contains("… (5000000 bytes)"), "{out}");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "invalid: 1 problem\n");
}

#[test]
fn a_duplicate_key_is_named_in_our_words_and_counted_in_the_singular() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("dup.yaml");
    std::fs::write(&f, format!("{}  name: b\nspec:\n  pins: []\n", header("a"))).unwrap();
    let o = pinfleet(&["validate", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim_end(),
        format!("{}:5:3: duplicate key \"name\"", f.display())
    );
    assert_eq!(String::from_utf8_lossy(&o.stderr), "invalid: 1 problem\n");
}

#[test]
fn a_valid_manifest_summary_agrees_with_its_counts() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("one.yaml");
    std::fs::write(
        &f,
        format!(
            "{}spec:\n  pins:\n    - cid: {}\n",
            header("one"),
            cid_v1("diag-one")
        ),
    )
    .unwrap();
    let o = pinfleet(&["validate", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("ok default/one (1 pin) "), "{out}");
    assert!(out.contains("valid: 1 PinSet, 1 pin in 1 file"), "{out}");
}

#[test]
fn library_errors_reach_the_user_in_pinfleet_words() {
    let cid = cid_v1("diag-words");
    let pin = |extra: &str| format!("{}spec:\n  pins:\n    - cid: {cid}\n{extra}", header("w"));
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{}  name: b\nspec:\n  pins: []\n", header("a")),
            "5:3: duplicate key \"name\"",
        ),
        (
            pin("      cid: x\n"),
            "8:7: duplicate key \"cid\"",
        ),
        (
            format!("{}spec:\n  pins: 5\n", header("w")),
            "6:9: expected a list",
        ),
        (
            pin("      replication: [1]\n"),
            "8:20: expected a mapping (key: value)",
        ),
        (
            pin("      replication: {min: abc, max: 2}\n"),
            "8:26: expected a whole number",
        ),
        (
            format!("{}spec:\n  suspend: maybe\n  pins: []\n", header("w")),
            "6:12: expected true or false",
        ),
        (
            pin("      mode: sometimes\n"),
            "8:13: unknown value \"sometimes\", expected one of: recursive, direct",
        ),
        (
            pin("      metadata: {a: [1]}\n"),
            "8:21: expected a string",
        ),
        (
            format!("{}spec:\n\tpins: []\n", header("w")),
            "6:2: tabs cannot indent YAML; indent with spaces",
        ),
        (
            "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: ~\nspec:\n  pins: []\n"
                .to_string(),
            "4:9: expected a string, found null",
        ),
        (header("w"), "3:1: missing field \"spec\""),
        (
            pin("      replication: {min: 1}\n"),
            "8:21: missing field \"max\"",
        ),
        (
            format!(
                "{}spec:\n  pins:\n    - cid: {cid}\n      mode: {}\n",
                header("w"),
                "x".repeat(10_000)
            ),
            "8:13: unknown value \"xxxx",
        ),
    ];
    for (text, want) in cases {
        let got = only_problem(&text);
        assert!(got.starts_with(want), "want {want:?}, got {got:?}");
        assert!(got.len() < 512, "{} bytes: {got:?}", got.len());
        assert_ours(&got);
    }
}

#[test]
fn invalid_utf8_is_located_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bin.yaml");
    let mut bytes = format!("{}spec:\n  pins:\n    - cid: ", header("u")).into_bytes();
    bytes.extend_from_slice(b"\xff\xfe\n");
    std::fs::write(&f, bytes).unwrap();
    let o = pinfleet(&["validate", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim_end(),
        format!(
            "{}:7:12: file is not valid UTF-8 text (is it binary?)",
            f.display()
        )
    );
}

async fn put_pinset(name: &str, body: String) -> (StatusCode, Value, usize) {
    let resp = crate::support::http()
        .put(format!("{}/pinsets/diag/{name}", peer()))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap(), bytes.len())
}

#[tokio::test]
async fn put_pinsets_answers_json_and_yaml_mistakes_located_in_our_words() {
    let cid = cid_v1("diag-api");
    let yaml_dup = "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: d\n  namespace: diag\n  name: d\nspec:\n  pins: []\n".to_string();
    let json_dup = format!(
        r#"{{"apiVersion": "pinfleet.io/v1alpha1", "kind": "PinSet", "metadata": {{"name": "d", "namespace": "diag", "name": "d"}}, "spec": {{"pins": [{{"cid": "{cid}"}}]}}}}"#
    );
    let json_type = r#"{"apiVersion": "pinfleet.io/v1alpha1", "kind": "PinSet", "metadata": {"name": "d", "namespace": "diag"}, "spec": {"pins": 3}}"#.to_string();
    let json_mode = format!(
        r#"{{"apiVersion": "pinfleet.io/v1alpha1", "kind": "PinSet", "metadata": {{"name": "d", "namespace": "diag"}}, "spec": {{"pins": [{{"cid": "{cid}", "mode": "often"}}]}}}}"#
    );
    for (body, want) in [
        (yaml_dup, "duplicate key \"name\""),
        (json_dup, "duplicate key \"name\""),
        (json_type, "expected a list"),
        (
            json_mode,
            "unknown value \"often\", expected one of: recursive, direct",
        ),
    ] {
        let (status, v, _) = put_pinset("d", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["message"], "invalid manifest", "{v}");
        let errors = v["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{v}");
        let message = errors[0]["message"].as_str().unwrap();
        assert_eq!(message, want, "{v}");
        assert!(errors[0]["line"].as_u64().unwrap() >= 1, "{v}");
        assert_ours(message);
    }
}

#[tokio::test]
async fn put_pinsets_with_a_huge_name_answers_under_1_kib() {
    let name = "n".repeat(1_000_000);
    let body = format!(
        "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  namespace: diag\n  name: {name}\nspec:\n  pins: []\n"
    );
    let (status, v, len) = put_pinset("huge", body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(len < 1024, "{len} bytes of answer");
    let message = v["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("… (1000000 bytes)"), "{message}");
    assert_eq!(v["errors"][0]["line"], 5, "{v}");
}

#[tokio::test]
async fn a_bad_conditions_body_is_answered_in_our_words() {
    let resp = crate::support::http()
        .put(format!("{}/pinsets/diag/c/conditions", peer()))
        .body(format!(
            r#"{{"conditions": [{{"type": 3, "x": "{}"}}]}}"#,
            "y".repeat(500)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    let message = v["message"].as_str().unwrap();
    assert_eq!(
        message,
        "invalid conditions body at line 1, column 26: expected a string, found integer \"3\"",
    );
    assert_ours(message);
}

#[tokio::test]
async fn a_bad_query_parameter_is_quoted_cut() {
    let cid = cid_v1("diag-query");
    let resp = crate::support::http()
        .post(format!(
            "{}/pins/{cid}?replication={}",
            peer(),
            "9".repeat(5_000)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    let message = v["message"].as_str().unwrap();
    assert!(message.len() < 256, "{message}");
    assert!(
        message.starts_with("invalid replication \"9999"),
        "{message}"
    );
    assert!(
        message.ends_with("… (5000 bytes): expected an integer"),
        "{message}"
    );
}
