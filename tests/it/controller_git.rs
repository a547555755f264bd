//! The GitOps controller's git source against one real in-process peer: bare
//! repositories created with git2 in a temp directory, commits made in a
//! working clone and pushed, served over `file://`. No fixed sleeps.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use git2::{Oid, Repository, Signature};
use pinfleet::client::Client;
use pinfleet::controller::{ConditionType, Controller, ControllerOptions, Reason, poll, run_git};
use pinfleet::manifest::Limits;
use pinfleet::source::git::{Credentials, GitSource, redact};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::support::{cid_v1, outcome, pinset_yaml, write_tree};

const DEADLINE: Duration = Duration::from_secs(30);

/// The URL of this module's peer, started on first use on its own runtime.
fn peer() -> &'static str {
    static PEER: OnceLock<String> = OnceLock::new();
    PEER.get_or_init(|| crate::support::spawn_api_peer("it-controller-git", 11))
}

fn seeds(test: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| cid_v1(&format!("git-{test}-{i}"))).collect()
}

async fn owners(cid: &str) -> Option<Vec<String>> {
    crate::support::owners_at(peer(), cid).await
}

async fn recorded(ns: &str, name: &str) -> Option<Value> {
    crate::support::recorded_at(peer(), ns, name).await
}

/// A bare "remote" repository (HEAD → main) and a working clone that pushes
/// to it over `file://`.
struct Remote {
    dir: tempfile::TempDir,
    work: Repository,
}

impl Remote {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bare = Repository::init_bare(dir.path().join("remote.git")).unwrap();
        bare.set_head("refs/heads/main").unwrap();
        let work = Repository::init(dir.path().join("work")).unwrap();
        work.set_head("refs/heads/main").unwrap();
        Self { dir, work }
    }

    fn url(&self) -> String {
        format!("file://{}", self.dir.path().join("remote.git").display())
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn workdir(&self) -> &Path {
        self.work.workdir().unwrap()
    }

    /// Writes `files`, removes `remove`, commits everything on main and
    /// pushes; returns the commit's SHA-1.
    fn commit(&self, files: &[(&str, &str)], remove: &[&str]) -> String {
        write_tree(self.workdir(), files);
        for r in remove {
            std::fs::remove_file(self.workdir().join(r)).unwrap();
        }
        let mut index = self.work.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index.update_all(["*"], None).unwrap();
        index.write().unwrap();
        let tree = self.work.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = Signature::now("it", "it@example.org").unwrap();
        let parent = self.work.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let oid = self
            .work
            .commit(Some("HEAD"), &sig, &sig, "change", &tree, &parents)
            .unwrap();
        self.push(&["+refs/heads/main:refs/heads/main"]);
        oid.to_string()
    }

    /// Tags `sha` (annotated when `annotated`) and pushes the tag.
    fn tag(&self, name: &str, sha: &str, annotated: bool) {
        let obj = self
            .work
            .find_object(Oid::from_str(sha).unwrap(), None)
            .unwrap();
        if annotated {
            let sig = Signature::now("it", "it@example.org").unwrap();
            self.work.tag(name, &obj, &sig, name, true).unwrap();
        } else {
            self.work.tag_lightweight(name, &obj, true).unwrap();
        }
        self.push(&[&format!("+refs/tags/{name}:refs/tags/{name}")]);
    }

    fn push(&self, specs: &[&str]) {
        let mut remote = self.work.remote_anonymous(&self.url()).unwrap();
        remote.push(specs, None).unwrap();
    }

    fn source(&self, query: &str) -> GitSource {
        let spec = if query.is_empty() {
            self.url()
        } else {
            format!("{}#{query}", self.url())
        };
        GitSource::parse(
            &spec,
            &self.cache(),
            Credentials::default(),
            Limits::default(),
        )
        .unwrap()
    }
}

fn controller(source: &GitSource, force: bool) -> Controller {
    Controller::new(
        Client::new(peer()).unwrap(),
        ControllerOptions {
            source: source.name(),
            force,
            requests: Default::default(),
        },
    )
}

#[tokio::test]
async fn a_commit_is_applied_and_an_unchanged_sha_is_skipped() {
    let remote = Remote::new();
    let cids = seeds("apply", 3);
    let sha = remote.commit(
        &[
            ("pins/a.yaml", &pinset_yaml("git", "apply", &cids)),
            // Outside `path`: never loaded.
            ("other/broken.yaml", "kind: [\n"),
        ],
        &[],
    );
    let src = remote.source("ref=main&path=pins");
    let mut ctl = controller(&src, false);
    let mut last = None;
    let out = poll(&mut ctl, &src, &mut last).await;
    assert!(out.healthy(), "{out:?}");
    let rev = format!("main@sha1:{sha}");
    assert_eq!(out.revision.as_deref(), Some(rev.as_str()));
    let o = outcome(&out.pinsets, "apply");
    assert_eq!(
        (o.condition, o.reason, o.add),
        (ConditionType::Ready, Reason::Succeeded, 3)
    );
    let rec = recorded("git", "apply").await.unwrap();
    assert_eq!(rec["revision"], rev.as_str());
    assert_eq!(rec["source"], src.name().as_str());
    for c in &cids {
        assert!(owners(c).await.is_some());
    }
    assert!(src.cache_dir.join(format!("rev-{sha}")).is_dir());

    // Same commit: skipped before checkout and loading.
    let again = poll(&mut ctl, &src, &mut last).await;
    assert!(again.skipped && again.pinsets.is_empty(), "{again:?}");
    assert_eq!(again.revision.as_deref(), Some(rev.as_str()));

    // The default branch (HEAD) is used without a ref.
    let dflt = remote.source("path=pins");
    assert_eq!(dflt.fetch().await.unwrap().revision, rev);
}

#[tokio::test]
async fn removed_cids_are_released_and_a_truncation_stalls_on_the_guard() {
    let remote = Remote::new();
    let cids = seeds("prune", 4);
    remote.commit(&[("p.yaml", &pinset_yaml("git", "prune", &cids))], &[]);
    let src = remote.source("ref=main");
    let mut ctl = controller(&src, false);
    let mut last = None;
    assert!(poll(&mut ctl, &src, &mut last).await.healthy());

    // One of four removed: released.
    let cache_dir = src.cache_dir.clone();
    let sha = remote.commit(&[("p.yaml", &pinset_yaml("git", "prune", &cids[..3]))], &[]);
    let out = poll(&mut ctl, &src, &mut last).await;
    let o = outcome(&out.pinsets, "prune");
    assert_eq!((o.reason, o.release), (Reason::Succeeded, 1), "{o:?}");
    assert!(owners(&cids[3]).await.is_none());
    assert_eq!(
        recorded("git", "prune").await.unwrap()["revision"],
        format!("main@sha1:{sha}").as_str()
    );
    // Only the current revision directory is kept.
    let revs: Vec<_> = std::fs::read_dir(&cache_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("rev-"))
        .collect();
    assert_eq!(revs.len(), 1);

    // Truncated to one: nothing is unpinned, Stalled/PruneGuard.
    remote.commit(&[("p.yaml", &pinset_yaml("git", "prune", &cids[..1]))], &[]);
    let out = poll(&mut ctl, &src, &mut last).await;
    let o = outcome(&out.pinsets, "prune");
    assert_eq!(
        (o.condition, o.reason),
        (ConditionType::Stalled, Reason::PruneGuard),
        "{o:?}"
    );
    for c in &cids[..3] {
        assert!(owners(c).await.is_some(), "the guard let {c} go");
    }
    // Stalled: the same commit is tried again, not skipped.
    assert!(!poll(&mut ctl, &src, &mut last).await.skipped);
}

#[tokio::test]
async fn broken_yaml_stalls_with_its_location_and_keeps_the_previous_revision() {
    let remote = Remote::new();
    let cids = seeds("broken", 2);
    let sha = remote.commit(&[("ok.yaml", &pinset_yaml("git", "broken", &cids))], &[]);
    let src = remote.source("branch=main");
    let mut ctl = controller(&src, false);
    let mut last = None;
    assert!(poll(&mut ctl, &src, &mut last).await.healthy());

    let bad_sha = remote.commit(
        &[(
            "bad.yaml",
            "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: bad\nspec:\n  pins: [\n",
        )],
        &[],
    );
    let out = poll(&mut ctl, &src, &mut last).await;
    assert!(!out.healthy());
    // The broken commit is named (its commit status reports the failure),
    // while the last good one stays recorded in the cluster (below).
    assert_eq!(
        out.revision.as_deref(),
        Some(format!("main@sha1:{bad_sha}").as_str())
    );
    let err = out.source_error.clone().unwrap();
    let at = err.find("bad.yaml:").unwrap_or_else(|| panic!("{err}"));
    let loc: Vec<&str> = err[at..].splitn(4, ':').collect();
    assert!(
        loc[1].parse::<u32>().is_ok() && loc[2].parse::<u32>().is_ok(),
        "{err}"
    );
    let o = outcome(&out.pinsets, "broken");
    assert_eq!(
        (o.condition, o.reason),
        (ConditionType::Stalled, Reason::ManifestInvalid)
    );
    assert_eq!(
        recorded("git", "broken").await.unwrap()["revision"],
        format!("main@sha1:{sha}").as_str()
    );
    for c in &cids {
        assert!(owners(c).await.is_some());
    }
    // Still broken and unhealthy: not skipped.
    assert!(!poll(&mut ctl, &src, &mut last).await.skipped);
}

#[tokio::test]
async fn tags_and_semver_ranges_select_the_commit() {
    let remote = Remote::new();
    let mut shas = Vec::new();
    for (i, tag) in ["v1.1.0", "v1.2.0", "1.2.3", "v1.2.5", "v1.3.0"]
        .iter()
        .enumerate()
    {
        let cids = seeds(&format!("sel-{i}"), i + 1);
        let sha = remote.commit(&[("s.yaml", &pinset_yaml("git", "sel", &cids))], &[]);
        remote.tag(tag, &sha, i % 2 == 0);
        shas.push(sha);
    }
    // A later commit on main that no selector below should pick.
    remote.commit(
        &[("s.yaml", &pinset_yaml("git", "sel", &seeds("head", 9)))],
        &[],
    );

    let f = remote.source("semver=~1.2").fetch().await.unwrap();
    assert_eq!(f.revision, format!("v1.2.5@sha1:{}", shas[3]));
    let f = remote.source("tag=v1.1.0").fetch().await.unwrap();
    assert_eq!(f.revision, format!("v1.1.0@sha1:{}", shas[0]));
    let f = remote
        .source("semver=>=1.0.0, <1.2.0")
        .fetch()
        .await
        .unwrap();
    assert_eq!(f.revision, format!("v1.1.0@sha1:{}", shas[0]));
    // Precedence: semver over tag over branch; commit over everything.
    let f = remote
        .source("ref=main&tag=v1.3.0&semver=~1.2")
        .fetch()
        .await
        .unwrap();
    assert_eq!(f.revision, format!("v1.2.5@sha1:{}", shas[3]));
    let f = remote.source("ref=main&tag=v1.3.0").fetch().await.unwrap();
    assert_eq!(f.revision, format!("v1.3.0@sha1:{}", shas[4]));
    let f = remote
        .source(&format!("commit={}&tag=v1.3.0", shas[1]))
        .fetch()
        .await
        .unwrap();
    assert_eq!(f.revision, format!("sha1:{}", shas[1]));
    let f = remote.source("name=refs/tags/1.2.3").fetch().await.unwrap();
    assert_eq!(f.revision, format!("refs/tags/1.2.3@sha1:{}", shas[2]));

    // The selected commit's tree is what loads.
    let src = remote.source("semver=~1.2");
    let f = src.fetch().await.unwrap();
    let loaded = src.load(&f).await.unwrap();
    assert_eq!(loaded.digest, f.revision);
    assert_eq!(loaded.pinsets[0].pins.len(), 4);

    // No matching tag: a source error.
    let e = remote.source("semver=~9").fetch().await.unwrap_err();
    assert!(e.to_string().contains("remote.git"), "{e}");
}

#[tokio::test]
async fn a_trigger_reconciles_well_before_the_interval() {
    let remote = Remote::new();
    let cids = seeds("trigger", 3);
    remote.commit(
        &[("t.yaml", &pinset_yaml("git", "trigger", &cids[..2]))],
        &[],
    );
    let src = remote.source("ref=main");
    let ctl = controller(&src, false);
    let cancel = CancellationToken::new();
    let (trigger, rx) = tokio::sync::mpsc::channel(4);
    let (tx, mut outs) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(run_git(
        ctl,
        src,
        Duration::from_secs(3600),
        rx,
        cancel.clone(),
        move |o| {
            let _ = tx.send(o.clone());
        },
    ));
    let first = tokio::time::timeout(DEADLINE, outs.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(first.healthy(), "{first:?}");
    assert!(owners(&cids[2]).await.is_none());

    let sha = remote.commit(&[("t.yaml", &pinset_yaml("git", "trigger", &cids))], &[]);
    let start = Instant::now();
    trigger.send(()).await.unwrap();
    let next = tokio::time::timeout(DEADLINE, outs.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(start.elapsed() < DEADLINE);
    assert_eq!(
        next.revision.as_deref(),
        Some(format!("main@sha1:{sha}").as_str())
    );
    assert_eq!(outcome(&next.pinsets, "trigger").add, 1);
    assert!(owners(&cids[2]).await.is_some());

    // A trigger without a new commit: skipped.
    trigger.send(()).await.unwrap();
    let same = tokio::time::timeout(DEADLINE, outs.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(same.skipped, "{same:?}");

    cancel.cancel();
    let ctl = tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
    assert!(ctl.state().last_healthy);
}

#[tokio::test]
async fn an_unreachable_remote_stalls_with_source_unavailable() {
    let remote = Remote::new();
    let cids = seeds("gone", 1);
    remote.commit(&[("g.yaml", &pinset_yaml("git", "gone", &cids))], &[]);
    let src = remote.source("ref=main");
    let mut ctl = controller(&src, false);
    let mut last = None;
    assert!(poll(&mut ctl, &src, &mut last).await.healthy());

    std::fs::remove_dir_all(remote.dir.path().join("remote.git")).unwrap();
    let out = poll(&mut ctl, &src, &mut last).await;
    let o = outcome(&out.pinsets, "gone");
    assert_eq!(
        (o.condition, o.reason),
        (ConditionType::Stalled, Reason::SourceUnavailable),
        "{o:?}"
    );
    assert!(owners(&cids[0]).await.is_some());
}

#[test]
fn git_specs_parse_and_reject() {
    let cache = Path::new("/tmp/cache");
    let parse = |s: &str| GitSource::parse(s, cache, Credentials::default(), Limits::default());
    let s = parse("https://host/repo.git#ref=main&path=pins/prod").unwrap();
    assert_eq!(s.url, "https://host/repo.git");
    assert_eq!(s.reference.branch.as_deref(), Some("main"));
    assert_eq!(s.path.as_deref(), Some(Path::new("pins/prod")));
    assert!(s.cache_dir.starts_with(cache));
    assert_eq!(s.name(), "git:https://host/repo.git#path=pins/prod");
    let s = parse("https://host/r#semver=~1.2&tag=v1").unwrap();
    assert_eq!(s.reference.semver.as_deref(), Some("~1.2"));
    assert_eq!(s.reference.tag.as_deref(), Some("v1"));
    assert!(parse("https://host/r").unwrap().reference == Default::default());
    for bad in [
        "https://h/r#ref=",
        "https://h/r#colour=red",
        "https://h/r#semver=not-a-range!",
        "https://h/r#commit=abc",
        "https://h/r#name=main",
        "https://h/r#path=../etc",
        "https://h/r#path=/abs",
        "#ref=main",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
    // Credentials in the URL never reach a name or an error.
    let s = parse("https://user:s3cret@host/r#ref=main").unwrap();
    assert!(!s.name().contains("s3cret"));
    let e = parse("https://user:s3cret@host/r#bogus=1").unwrap_err();
    assert!(!e.to_string().contains("s3cret"), "{e}");
    assert_eq!(redact("ssh://git@host/r"), "ssh://host/r");
    let creds = Credentials {
        token: Some("s3cret".into()),
        ssh_key: None,
    };
    assert!(!format!("{creds:?}").contains("s3cret"));
}

#[test]
fn cli_once_applies_a_git_source() {
    let remote = Remote::new();
    let cids = seeds("cli", 2);
    let sha = remote.commit(&[("pins/c.yaml", &pinset_yaml("git", "cli", &cids))], &[]);
    let source = format!("git:{}#ref=main&path=pins", remote.url());
    let cache = remote.cache();
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pinfleet"))
            .arg("controller")
            .args(["--source", &source, "--once", "--cache"])
            .arg(&cache)
            .args(extra)
            .args(["--host", peer()])
            .env_remove("PINFLEET_HOST")
            .env_remove("PINFLEET_GIT_TOKEN")
            .output()
            .expect("run pinfleet")
    };
    let o = run(&[]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.starts_with(&format!("git/cli  Succeeded  +2 ~0 -0  main@sha1:{sha}")),
        "{stdout}"
    );
    let o = run(&["--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["pinsets"][0]["reason"], "Succeeded");
    assert_eq!(v["revision"], format!("main@sha1:{sha}").as_str());
}

/// The CLI end to end: a signed GitHub webhook makes a controller with a
/// one-hour poll interval fetch a new commit at once, and each reconcile is
/// posted as a commit status to the forge.
#[tokio::test]
async fn cli_webhook_triggers_a_fetch_and_the_commit_status_is_reported() {
    use std::io::{BufRead, BufReader};
    use std::sync::{Arc, Mutex};

    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    // A forge that records commit statuses.
    let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let record = Arc::clone(&seen);
    let forge = axum::Router::new().route(
        "/repos/{owner}/{repo}/statuses/{sha}",
        axum::routing::post(
            move |axum::extract::Path((_, _, sha)): axum::extract::Path<(
                String,
                String,
                String,
            )>,
                  axum::Json(body): axum::Json<Value>| {
                let record = Arc::clone(&record);
                async move {
                    record.lock().unwrap().push((sha, body));
                    StatusCode::CREATED
                }
            },
        ),
    );
    let forge_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let forge_url = format!("http://{}", forge_listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(forge_listener, forge).await });

    let remote = Remote::new();
    let cids = seeds("hook", 3);
    let first = remote.commit(
        &[("pins/h.yaml", &pinset_yaml("git", "hook", &cids[..1]))],
        &[],
    );
    let source = format!("git:{}#ref=main&path=pins", remote.url());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pinfleet"))
        .arg("controller")
        .args(["--source", &source, "--interval", "1h", "--cache"])
        .arg(remote.cache())
        .args([
            "--webhook-listen",
            "127.0.0.1:0",
            "--webhook",
            "github:main",
        ])
        .args([
            "--report",
            "github",
            "--report-api",
            &forge_url,
            "--report-repo",
            "acme/pins",
        ])
        .args(["--host", peer()])
        .env("PINFLEET_WEBHOOK_SECRET", "s3cret")
        .env("PINFLEET_REPORT_TOKEN", "tok")
        .env_remove("PINFLEET_HOST")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The receiver's address is printed on stderr.
    let stderr = child.stderr.take().unwrap();
    let hooks = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| {
                l.strip_prefix("webhooks on ")
                    .map(|u| u.replace("{name}", "main"))
            })
    })
    .join()
    .unwrap()
    .expect("webhook address on stderr");

    let end = tokio::time::Instant::now() + DEADLINE;
    while owners(&cids[0]).await.is_none() {
        assert!(
            tokio::time::Instant::now() < end,
            "first commit not applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A new commit, then the hook: applied long before the 1 h poll.
    let second = remote.commit(&[("pins/h.yaml", &pinset_yaml("git", "hook", &cids))], &[]);
    let body = br#"{"ref":"refs/heads/main"}"#;
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(body);
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let resp = crate::support::http()
        .post(&hooks)
        .header("X-Hub-Signature-256", sig)
        .header("X-GitHub-Event", "push")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    while owners(&cids[2]).await.is_none() {
        assert!(
            tokio::time::Instant::now() < end,
            "webhook did not trigger a fetch"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(sha, _)| *sha == first || *sha == second)
        .count()
        < 2
    {
        assert!(
            tokio::time::Instant::now() < end,
            "commit statuses not reported: {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let statuses = seen.lock().unwrap().clone();
    let last = statuses
        .iter()
        .rev()
        .find(|(sha, _)| *sha == second)
        .unwrap();
    assert_eq!(last.1["state"], "success");
    assert_eq!(last.1["context"], "pinfleet");

    // The same listener serves reconcile-now for the standalone controller.
    let base = hooks.trim_end_matches("/hooks/main");
    let http = crate::support::http();
    let done: serde_json::Value = http
        .post(format!("{base}/pinsets/git/hook/reconcile?wait=true"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(done["handled"], true, "{done}");
    assert_eq!(done["outcome"]["healthy"], true, "{done}");
    let missing = http
        .post(format!("{base}/pinsets/git/nope/reconcile"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = child.wait();
}

/// https and ssh remotes are fetched with libgit2's own transports (a
/// closed loopback port fails to connect, it is not an unsupported
/// protocol); the token in the URL never reaches the error.
#[tokio::test]
async fn https_and_ssh_transports_are_built_in() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let cache = tempfile::tempdir().unwrap();
    for url in [
        format!("https://user:s3cret@127.0.0.1:{port}/r.git"),
        format!("ssh://git@127.0.0.1:{port}/r.git"),
    ] {
        let src = GitSource::parse(
            &format!("{url}#ref=main"),
            cache.path(),
            Credentials::default(),
            Limits::default(),
        )
        .unwrap();
        let err = src.fetch().await.unwrap_err().to_string();
        let chain = pinfleet::controller::error_chain(&src.fetch().await.unwrap_err());
        assert!(
            !chain.to_lowercase().contains("unsupported"),
            "{url}: {chain}"
        );
        assert!(
            !chain.contains("s3cret") && !err.contains("s3cret"),
            "{chain}"
        );
        assert!(chain.contains("failed to connect"), "{url}: {chain}");
    }
}

fn list_manifest(name: &str) -> String {
    format!(
        "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: {name}\n  namespace: git\nspec:\n  defaults:\n    replication: {{min: 1, max: 2}}\n  pinsFrom:\n    - path: lists/l.txt\n"
    )
}

fn list_text(cids: &[String]) -> String {
    let mut s = String::from("# generated\n");
    for (i, c) in cids.iter().enumerate() {
        s.push_str(&format!("{c} pin-{i}\n"));
    }
    s
}

#[tokio::test]
async fn a_changed_list_is_reloaded_incrementally_like_a_full_load() {
    let remote = Remote::new();
    let cids = seeds("incr", 60);
    remote.commit(
        &[
            ("m.yaml", &list_manifest("incr")),
            ("lists/l.txt", &list_text(&cids[..50])),
        ],
        &[],
    );
    let src = remote.source("ref=main");
    let first = src.load(&src.fetch().await.unwrap()).await.unwrap();
    assert!(first.changes.is_none());

    // Five lines replaced, one renamed, one moved, a README added.
    let mut next: Vec<String> = cids[..50].to_vec();
    for (i, c) in cids[50..55].iter().enumerate() {
        next[i * 7] = c.clone();
    }
    next.swap(3, 40);
    let mut text = list_text(&next);
    text = text.replace(
        &format!("{} pin-10\n", next[10]),
        &format!("{} renamed\n", next[10]),
    );
    let sha = remote.commit(&[("lists/l.txt", &text), ("README.md", "hello\n")], &[]);
    let f = src.fetch().await.unwrap();
    let base = first.digest.clone();
    let incr = src.load_after(&f, Some(first)).await.unwrap();
    assert_eq!(incr.digest, format!("main@sha1:{sha}"));
    let (from, changes) = incr.changes.clone().expect("an incremental load");
    assert_eq!(from, base);
    let c = &changes[&pinfleet::manifest::PinSetId::new("git", "incr")];
    // pin-3 and pin-40 swapped names with their lines: updates too.
    assert_eq!((c.set.len(), c.release.len()), (5 + 1 + 2, 5), "{c:?}");
    // A full load of the same commit, from a source without memory.
    let full = remote.source("ref=main");
    let full = full.load(&full.fetch().await.unwrap()).await.unwrap();
    assert_eq!(incr.pinsets.len(), 1);
    assert_eq!(incr.pinsets[0].pins, full.pinsets[0].pins);

    // A manifest change: a full load.
    remote.commit(
        &[("m.yaml", &list_manifest("incr").replace("max: 2", "max: 3"))],
        &[],
    );
    let f = src.fetch().await.unwrap();
    let again = src.load_after(&f, Some(incr)).await.unwrap();
    assert!(again.changes.is_none());
    assert_eq!(again.pinsets[0].pins.len(), 50);
}

#[tokio::test]
async fn a_list_change_is_applied_as_a_patch_and_a_broken_line_stalls() {
    let remote = Remote::new();
    let cids = seeds("patch", 30);
    remote.commit(
        &[
            ("m.yaml", &list_manifest("lpatch")),
            ("lists/l.txt", &list_text(&cids[..20])),
        ],
        &[],
    );
    let src = remote.source("ref=main");
    let mut ctl = controller(&src, false);
    let mut last = None;
    let out = poll(&mut ctl, &src, &mut last).await;
    assert_eq!(outcome(&out.pinsets, "lpatch").add, 20, "{out:?}");

    let mut next = cids[..20].to_vec();
    next[0] = cids[20].clone();
    next[19] = cids[21].clone();
    let sha = remote.commit(&[("lists/l.txt", &list_text(&next))], &[]);
    let out = poll(&mut ctl, &src, &mut last).await;
    let o = outcome(&out.pinsets, "lpatch");
    assert_eq!(
        (o.reason, o.add, o.release),
        (Reason::Succeeded, 2, 2),
        "{o:?}"
    );
    let rev = format!("main@sha1:{sha}");
    let rec = recorded("git", "lpatch").await.unwrap();
    assert_eq!(
        (rec["revision"].as_str(), rec["pins"].as_u64()),
        (Some(rev.as_str()), Some(20))
    );
    assert!(owners(&cids[0]).await.is_none());
    assert!(owners(&cids[20]).await.is_some());

    // A line that does not parse: located, nothing changes.
    let mut text = list_text(&next);
    text.push_str("bafy-not-a-cid pin-x\n");
    text = text.replace(
        &format!("{} pin-1\n", next[1]),
        &format!("{} pin-1\n", cids[22]),
    );
    remote.commit(&[("lists/l.txt", &text)], &[]);
    let out = poll(&mut ctl, &src, &mut last).await;
    let err = out
        .source_error
        .clone()
        .unwrap_or_else(|| panic!("{out:?}"));
    assert!(err.contains("l.txt:22:1"), "{err}");
    let o = outcome(&out.pinsets, "lpatch");
    assert_eq!(
        (o.condition, o.reason),
        (ConditionType::Stalled, Reason::ManifestInvalid)
    );
    assert!(owners(&cids[22]).await.is_none());
    assert!(owners(&next[1]).await.is_some());
    assert_eq!(
        recorded("git", "lpatch").await.unwrap()["revision"],
        rev.as_str()
    );
}

/// Drift in the cluster (someone replaced the PinSet) is not repaired by a
/// poll of the unchanged commit, but by a reconcile-now request — sent
/// whole, not as an (empty) patch — which the interval also makes every
/// `DRIFT_POLLS` polls.
#[tokio::test]
async fn a_reconcile_request_repairs_drift_of_an_unchanged_commit() {
    let remote = Remote::new();
    let cids = seeds("drift", 24);
    remote.commit(
        &[
            ("m.yaml", &list_manifest("ldrift")),
            ("lists/l.txt", &list_text(&cids[..20])),
        ],
        &[],
    );
    let src = remote.source("ref=main");
    let mut ctl = controller(&src, false);
    let mut last = None;
    assert!(poll(&mut ctl, &src, &mut last).await.healthy());
    // A second commit so the controller holds an incremental load.
    let mut next = cids[..20].to_vec();
    next[0] = cids[20].clone();
    remote.commit(&[("lists/l.txt", &list_text(&next))], &[]);
    assert!(poll(&mut ctl, &src, &mut last).await.healthy());
    let rev = recorded("git", "ldrift").await.unwrap()["revision"]
        .as_str()
        .unwrap()
        .to_string();

    // Drift: the PinSet replaced behind the controller's back, same
    // source and revision.
    let drifted = crate::support::http()
        .put(
            reqwest::Url::parse_with_params(
                &format!("{}/pinsets/git/ldrift", peer()),
                [
                    ("source", src.name().as_str()),
                    ("revision", rev.as_str()),
                    ("force", "true"),
                ],
            )
            .unwrap(),
        )
        .body(pinset_yaml(
            "git",
            "ldrift",
            &[&next[2..], &cids[21..22]].concat(),
        ))
        .send()
        .await
        .unwrap();
    assert!(drifted.status().is_success());
    assert!(owners(&next[1]).await.is_none());

    assert!(poll(&mut ctl, &src, &mut last).await.skipped);
    assert!(
        owners(&next[1]).await.is_none(),
        "a skipped poll repairs nothing"
    );

    ctl.requests().request();
    let out = poll(&mut ctl, &src, &mut last).await;
    assert!(!out.skipped && out.healthy(), "{out:?}");
    for c in &next {
        assert!(owners(c).await.is_some(), "{c} restored");
    }
    assert!(
        owners(&cids[21]).await.is_none(),
        "the drifted pins are released"
    );
    assert!(!ctl.requests().pending());
}

/// Two PinSets reading one list file both follow a change of that list.
#[tokio::test]
async fn a_list_shared_by_two_pinsets_updates_both() {
    let remote = Remote::new();
    let cids = seeds("shared-list", 12);
    let both = format!(
        "{}---\n{}",
        list_manifest("lshared-a"),
        list_manifest("lshared-b")
    );
    remote.commit(
        &[("m.yaml", &both), ("lists/l.txt", &list_text(&cids[..10]))],
        &[],
    );
    let src = remote.source("ref=main");
    let mut ctl = controller(&src, false);
    let mut last = None;
    assert!(poll(&mut ctl, &src, &mut last).await.healthy());
    let mut next = cids[..10].to_vec();
    next[0] = cids[10].clone();
    remote.commit(&[("lists/l.txt", &list_text(&next))], &[]);
    let out = poll(&mut ctl, &src, &mut last).await;
    assert!(out.healthy(), "{out:?}");
    for name in ["lshared-a", "lshared-b"] {
        let o = outcome(&out.pinsets, name);
        assert_eq!((o.add, o.release), (1, 1), "{name}: {o:?}");
    }
    assert!(owners(&cids[0]).await.is_none(), "released by both");
    assert_eq!(owners(&cids[10]).await.unwrap().len(), 2, "owned by both");
}

#[tokio::test]
async fn a_commit_with_a_hostile_tree_name_stalls_and_keeps_the_applied_revision() {
    let remote = Remote::new();
    let cids = seeds("hostile", 2);
    let sha = remote.commit(&[("h.yaml", &pinset_yaml("git", "hostile", &cids))], &[]);
    let src = remote.source("ref=main");
    let mut ctl = controller(&src, false);
    let mut last = None;
    assert!(poll(&mut ctl, &src, &mut last).await.healthy());

    // A commit written straight into the remote: the good tree plus an
    // entry `..` (a tree holding a manifest) that `git add` cannot make.
    let bare = Repository::open_bare(remote.dir.path().join("remote.git")).unwrap();
    let head = bare
        .find_reference("refs/heads/main")
        .unwrap()
        .peel_to_commit()
        .unwrap();
    let evil = bare
        .blob(pinset_yaml("git", "escaped", &seeds("hostile-x", 1)).as_bytes())
        .unwrap();
    let mut sub = b"100644 m.yaml\0".to_vec();
    sub.extend_from_slice(evil.as_bytes());
    let odb = bare.odb().unwrap();
    let sub = odb.write(git2::ObjectType::Tree, &sub).unwrap();
    let h = head.tree().unwrap().get_name("h.yaml").unwrap().id();
    let mut root = b"40000 ..\0".to_vec();
    root.extend_from_slice(sub.as_bytes());
    root.extend_from_slice(b"100644 h.yaml\0");
    root.extend_from_slice(h.as_bytes());
    let root = bare
        .find_tree(odb.write(git2::ObjectType::Tree, &root).unwrap())
        .unwrap();
    let sig = Signature::now("it", "it@example.org").unwrap();
    let bad_sha = bare
        .commit(Some("refs/heads/main"), &sig, &sig, "evil", &root, &[&head])
        .unwrap();

    let out = poll(&mut ctl, &src, &mut last).await;
    assert!(!out.healthy());
    assert_eq!(
        out.revision.as_deref(),
        Some(format!("main@sha1:{bad_sha}").as_str())
    );
    let err = out.source_error.clone().unwrap();
    assert!(err.contains(r#"refused tree entry "..""#), "{err}");
    // The applied revision stays, with its pins; nothing of the bad commit
    // was written next to the cache.
    assert_eq!(
        recorded("git", "hostile").await.unwrap()["revision"],
        format!("main@sha1:{sha}").as_str()
    );
    assert!(recorded("git", "escaped").await.is_none());
    for c in &cids {
        assert!(owners(c).await.is_some());
    }
    assert!(!src.cache_dir.join("m.yaml").exists());
    assert!(!src.cache_dir.join(format!("rev-{bad_sha}")).exists());
}
