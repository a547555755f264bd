//! The `pinfleet` binary as users run it: output, exit codes, error chains.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pinfleet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pinfleet"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run pinfleet")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn validate_accepts_the_examples() {
    let o = pinfleet(&["validate", "examples/"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("ok mirrors/archlinux-core-list (21 pins)"),
        "{out}"
    );
    assert!(out.contains("valid: 5 PinSets"), "{out}");
    assert!(out.contains("ok default/quickstart (3 pins)"), "{out}");
}

#[test]
fn validate_reports_every_problem_located_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(
        &f,
        "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata: {name: x}\nspec:\n  pins:\n    - cid: nope\n    - cid: QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG\n      replication: {min: 3, max: 2}\n",
    )
    .unwrap();
    let o = pinfleet(&["validate", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let lines: Vec<String> = stdout(&o).lines().map(String::from).collect();
    let file = f.display().to_string();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!("{file}:6:12: invalid CID \"nope\"")),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{file}:8:20: replication min 3 is greater than max 2"
        )),
        "{lines:?}"
    );
    assert!(stderr(&o).contains("invalid: 2 problems"));
}

#[test]
fn validate_json_lists_errors_with_positions() {
    let o = pinfleet(&[
        "validate",
        "--json",
        "tests/fixtures/invalid/unknown-field-nmae.yaml",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["valid"], false);
    let e = &v["errors"][0];
    assert!(
        e["line"].as_u64().unwrap() > 0 && e["col"].as_u64().unwrap() > 0,
        "{v}"
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("did you mean \"name\""),
        "{v}"
    );

    let o = pinfleet(&["validate", "--json", "examples/small.yaml"]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["pinsets"][0]["pinset"], "default/small-site");
    assert!(v["digest"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn unreadable_paths_exit_2_with_the_cause_chain() {
    let o = pinfleet(&["validate", "does/not/exist.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.starts_with(
            "error: cannot validate\n  caused by: cannot read does/not/exist.yaml\n  caused by: "
        ),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2_and_every_command_has_help() {
    assert_eq!(pinfleet(&["validate"]).status.code(), Some(2));
    assert_eq!(pinfleet(&["frobnicate"]).status.code(), Some(2));
    for cmd in ["validate", "plan", "crd", "schema"] {
        let o = pinfleet(&[cmd, "--help"]);
        assert_eq!(o.status.code(), Some(0), "{cmd}");
        assert!(stdout(&o).contains("Usage: pinfleet"), "{cmd}");
    }
}

fn plan_json(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["plan", "--json"];
    all.extend_from_slice(args);
    let o = pinfleet(&all);
    let v = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&o), stderr(&o)));
    (o.status.code().unwrap(), v)
}

fn row<'a>(v: &'a Value, pinset: &str) -> &'a Value {
    v["pinsets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pinset"] == pinset)
        .unwrap()
}

#[test]
fn plan_against_the_example_state_counts_changes_per_pinset() {
    let (code, v) = plan_json(&["examples/", "--state", "examples/state.ndjson"]);
    assert_eq!(code, 0);
    let small = row(&v, "default/small-site");
    assert_eq!(
        (
            small["add"].as_u64(),
            small["update"].as_u64(),
            small["release"].as_u64(),
            small["unchanged"].as_u64()
        ),
        (Some(1), Some(1), Some(1), Some(2))
    );
    let list = row(&v, "mirrors/archlinux-core-list");
    assert_eq!(
        (list["add"].as_u64(), list["unchanged"].as_u64()),
        (Some(1), Some(20))
    );
    assert_eq!(v["notInManifests"][0], "pinset:mirrors/retired-snapshot");

    // Without a state everything is an add.
    let (code, v) = plan_json(&["examples/"]);
    assert_eq!(code, 0);
    assert_eq!(row(&v, "default/small-site")["add"], 4);
}

/// A state where `default/guarded` holds `n` pins taken from the example list.
fn guarded_state(dir: &Path, n: usize) -> PathBuf {
    let cids: Vec<String> = std::fs::read_to_string(root().join("examples/lists/core.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .take(n)
        .collect();
    let lines: Vec<String> = cids
        .iter()
        .map(|c| serde_json::json!({"cid": c, "name": "", "owners": {"pinset:default/guarded": {"name": "", "mode": "recursive", "replication": {"min": 0, "max": 0}}}}).to_string())
        .collect();
    let state = dir.join("state.ndjson");
    std::fs::write(&state, lines.join("\n")).unwrap();
    let manifest = format!(
        "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata: {{name: guarded}}\nspec:\n  pins:\n    - cid: {}\n",
        cids[0]
    );
    std::fs::write(dir.join("guarded.yaml"), manifest).unwrap();
    state
}

#[test]
fn plan_refuses_a_mass_release_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let state = guarded_state(dir.path(), 4);
    let manifest = dir.path().join("guarded.yaml");
    let (m, s) = (manifest.to_str().unwrap(), state.to_str().unwrap());

    let (code, v) = plan_json(&[m, "--state", s]);
    assert_eq!(code, 1, "{v}");
    let r = row(&v, "default/guarded");
    assert_eq!(r["status"], "refused");
    assert_eq!(r["reason"], "PruneGuard");
    assert_eq!(r["release"], 3);

    let (code, v) = plan_json(&[m, "--state", s, "--force"]);
    assert_eq!(code, 0);
    assert_eq!(row(&v, "default/guarded")["release"], 3);

    let (code, _) = plan_json(&[m, "--state", s, "--max-prune-fraction", "0.8"]);
    assert_eq!(code, 0);
}

#[test]
fn plan_reports_a_bad_state_line() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.ndjson");
    std::fs::write(&state, "\n{\"cid\": \"not-a-cid\"}\n").unwrap();
    let o = pinfleet(&[
        "plan",
        "examples/small.yaml",
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("line 2: invalid CID \"not-a-cid\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn crd_command_prints_the_committed_crd() {
    let o = pinfleet(&["crd"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        std::fs::read_to_string(root().join("crds/pinset.yaml")).unwrap()
    );
}

#[test]
fn schema_command_prints_the_spec_schema() {
    let o = pinfleet(&["schema"]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["properties"]["pinsFrom"].is_object(), "{v}");
}

/// The quickstart PinSet pins exactly the CIDs `ipfs add` gives its content
/// (so the README's main job reaches `pinned`): a drift check, like the CRD's.
#[test]
fn quickstart_pinset_names_the_cids_of_its_content() {
    use pinfleet::ipfs::unixfs::{AddOptions, add_path, add_reader};
    let root = crate::support::repo_path("examples/quickstart/content");
    let mut want = std::collections::BTreeMap::new();
    let mut sink = |_: cid::Cid, _: Vec<u8>| Ok::<(), std::convert::Infallible>(());
    for file in ["hello.txt", "about.md"] {
        let f = std::fs::File::open(root.join(file)).unwrap();
        let added = add_reader(f, &AddOptions::default(), &mut sink).unwrap();
        want.insert(file.to_string(), added.cid.to_string());
    }
    let site = add_path(&root.join("site"), &AddOptions::default(), &mut sink).unwrap();
    want.insert("site".to_string(), site.last().unwrap().cid.to_string());

    let loaded = pinfleet::manifest::load_paths(
        &[crate::support::repo_path("examples/quickstart/pinset.yaml")],
        &Default::default(),
    )
    .unwrap();
    let ps = &loaded.pinsets[0];
    let got: std::collections::BTreeMap<String, String> = ps
        .pins
        .iter()
        .map(|(k, p)| {
            let written = p.written_as.as_deref().map(str::to_string);
            (
                p.spec.name.clone(),
                written.unwrap_or_else(|| k.to_string()),
            )
        })
        .collect();
    assert_eq!(got, want, "update examples/quickstart/pinset.yaml");
}

const SECRET_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// `pinfleet init --dir <tmp>/peer ARGS` with `stdin` fed in and
/// PINFLEET_SECRET unset; the output and the secret written to service.toml
/// (when init succeeded).
fn init_with(args: &[&str], stdin: &[u8]) -> (Output, Option<String>) {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let peer = dir.path().join("peer");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pinfleet"))
        .arg("init")
        .arg("--dir")
        .arg(&peer)
        .args(args)
        .current_dir(dir.path())
        .env_remove("PINFLEET_SECRET")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let secret = std::fs::read_to_string(peer.join("service.toml"))
        .ok()
        .and_then(|toml| {
            let v: toml::Value = toml::from_str(&toml).unwrap();
            v["cluster"]["secret"].as_str().map(str::to_owned)
        });
    (out, secret)
}

#[test]
fn init_reads_the_secret_from_a_file_or_stdin_without_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, format!("{SECRET_HEX}\n")).unwrap();
    let (o, secret) = init_with(&["--secret-file", file.to_str().unwrap()], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(secret.as_deref(), Some(SECRET_HEX));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));

    let (o, secret) = init_with(&["--secret", "-"], format!("{SECRET_HEX}\n").as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(secret.as_deref(), Some(SECRET_HEX));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    // PINFLEET_SECRET, without any flag: used, no warning.
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_pinfleet"))
        .args(["init", "--dir"])
        .arg(dir.path().join("peer"))
        .env("PINFLEET_SECRET", SECRET_HEX)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    let toml = std::fs::read_to_string(dir.path().join("peer/service.toml")).unwrap();
    assert!(toml.contains(SECRET_HEX));
    // Only the first line of stdin is the secret.
    let (o, secret) = init_with(
        &["--secret", "-"],
        format!("{SECRET_HEX}\nsomething else\n").as_bytes(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(secret.as_deref(), Some(SECRET_HEX));
}

#[test]
fn init_with_the_secret_on_argv_works_but_warns() {
    let (o, secret) = init_with(&["--secret", SECRET_HEX], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(secret.as_deref(), Some(SECRET_HEX));
    let err = stderr(&o);
    assert!(err.contains("warning:"), "{err}");
    assert!(err.contains("visible to other users"), "{err}");
    assert!(err.contains("--secret-file"), "{err}");
    assert!(!err.contains(SECRET_HEX), "{err}");
}

#[test]
fn init_refuses_a_bad_secret_source_without_showing_its_content() {
    let dir = tempfile::tempdir().unwrap();
    // 64 characters, not hex: the content must not be echoed.
    let wrong = "zz-not-the-secret-zz".repeat(4)[..64].to_string();
    let file = dir.path().join("wrong");
    std::fs::write(&file, format!("{wrong}\n")).unwrap();
    let (o, secret) = init_with(&["--secret-file", file.to_str().unwrap()], b"");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(secret, None);
    let err = stderr(&o);
    assert!(err.contains("invalid secret in"), "{err}");
    assert!(err.contains(file.to_str().unwrap()), "{err}");
    assert!(err.contains("non-hex"), "{err}");
    assert!(!err.contains("not-the-secret"), "{err}");

    // A short secret (a truncated copy) on stdin: its length, not its text.
    let (o, secret) = init_with(&["--secret", "-"], b"00112233\n");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(secret, None);
    let err = stderr(&o);
    assert!(err.contains("on standard input"), "{err}");
    assert!(err.contains("found 8 characters"), "{err}");
    assert!(!err.contains("00112233"), "{err}");

    let (o, _) = init_with(&["--secret", "-"], b"");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no secret on standard input"));

    let (o, _) = init_with(&["--secret-file", "/does/not/exist"], b"");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cannot read the secret file /does/not/exist"),
        "{}",
        stderr(&o)
    );

    // --secret and --secret-file together: a usage error, nothing written.
    let (o, secret) = init_with(
        &["--secret", "-", "--secret-file", file.to_str().unwrap()],
        b"",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    assert_eq!(secret, None);
}

#[test]
fn credentials_in_the_host_url_are_never_printed() {
    let host = "http://user:s3cr3t-pass@127.0.0.1:1";
    for args in [
        &["status", "--host", host][..],
        &[
            "controller",
            "--source",
            "dir:examples",
            "--once",
            "--host",
            host,
        ],
        &["status", "--host", "http://user:s3cr3t-pass@[::1"],
    ] {
        let o = pinfleet(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let text = format!("{}{}", stdout(&o), stderr(&o));
        assert!(
            text.contains("127.0.0.1:1") || text.contains("[::1"),
            "{text}"
        );
        assert!(!text.contains("s3cr3t"), "{args:?}: {text}");
    }
}
