//! The GitOps controller (dir source) against one real in-process peer: a
//! one-peer Raft cluster served on 127.0.0.1:0. Each test owns its own temp
//! directory (hence its own source), CIDs and PinSets; none waits with a
//! fixed sleep.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pinfleet::client::Client;
use pinfleet::controller::{ConditionType, Controller, ControllerOptions, Reason, run_dir};
use pinfleet::manifest::Limits;
use pinfleet::source::DirSource;
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::support::{cid_v1, outcome, pinset_yaml, write_tree};

const DEADLINE: Duration = Duration::from_secs(30);

/// The URL of the peer every test of this module talks to, started on first
/// use on a runtime of its own.
fn peer() -> &'static str {
    static PEER: OnceLock<String> = OnceLock::new();
    PEER.get_or_init(|| crate::support::spawn_api_peer("it-controller", 9))
}

fn url(path: &str) -> String {
    format!("{}{path}", peer())
}

fn seeds(test: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| cid_v1(&format!("ctl-{test}-{i}"))).collect()
}

fn controller(source: &DirSource, force: bool) -> Controller {
    Controller::new(
        Client::new(peer()).unwrap(),
        ControllerOptions {
            source: source.name(),
            force,
            requests: Default::default(),
        },
    )
}

fn source(dir: &Path) -> DirSource {
    DirSource::new(dir, Limits::default()).unwrap()
}

async fn owners(cid: &str) -> Option<Vec<String>> {
    crate::support::owners_at(peer(), cid).await
}

async fn recorded(ns: &str, name: &str) -> Option<Value> {
    crate::support::recorded_at(peer(), ns, name).await
}

#[tokio::test]
async fn a_directory_is_applied_and_an_unchanged_revision_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let a = seeds("apply-a", 3);
    let b = seeds("apply-b", 2);
    write_tree(
        dir.path(),
        &[
            ("a.yaml", &pinset_yaml("ctl", "apply-a", &a)),
            ("sub/b.yml", &pinset_yaml("ctl", "apply-b", &b)),
        ],
    );
    let src = source(dir.path());
    let mut ctl = controller(&src, false);
    let out = ctl.reconcile(src.load().await, false).await;
    assert!(out.healthy(), "{out:?}");
    let oa = outcome(&out.pinsets, "apply-a");
    assert_eq!(
        (oa.condition, oa.reason, oa.add),
        (ConditionType::Ready, Reason::Succeeded, 3)
    );
    assert_eq!(outcome(&out.pinsets, "apply-b").add, 2);
    let rev = out.revision.clone().unwrap();
    assert!(rev.starts_with("sha256:"));
    assert!(
        oa.to_string()
            .starts_with("ctl/apply-a  Succeeded  +3 ~0 -0  sha256:")
    );

    let rec = recorded("ctl", "apply-a").await.unwrap();
    assert_eq!(rec["revision"], rev.as_str());
    assert_eq!(rec["source"], src.name().as_str());
    for c in a.iter().chain(&b) {
        assert!(owners(c).await.is_some());
    }

    let again = ctl.reconcile(src.load().await, false).await;
    assert!(again.skipped && again.pinsets.is_empty(), "{again:?}");
    // The interval re-applies (drift repair) and changes nothing.
    let drift = ctl.reconcile(src.load().await, true).await;
    assert!(!drift.skipped);
    let od = outcome(&drift.pinsets, "apply-a");
    assert_eq!(
        (od.add, od.update, od.release, od.reason),
        (0, 0, 0, Reason::Succeeded)
    );
}

#[tokio::test]
async fn editing_a_file_in_the_watched_directory_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let cids = seeds("watch", 3);
    write_tree(
        dir.path(),
        &[("w.yaml", &pinset_yaml("ctl", "watch", &cids[..2]))],
    );
    let src = source(dir.path());
    let ctl = controller(&src, false);
    let cancel = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(run_dir(
        ctl,
        src,
        Duration::from_secs(3600),
        cancel.clone(),
        move |o| {
            let _ = tx.send(o.clone());
        },
    ));
    let first = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(first.healthy(), "{first:?}");
    assert!(owners(&cids[0]).await.is_some());
    assert!(owners(&cids[2]).await.is_none());

    write_tree(
        dir.path(),
        &[("w.yaml", &pinset_yaml("ctl", "watch", &cids))],
    );
    let start = Instant::now();
    while owners(&cids[2]).await.is_none() {
        assert!(start.elapsed() < DEADLINE, "the edit was not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    let ctl = tokio::time::timeout(DEADLINE, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let st = &ctl.state().statuses;
    assert_eq!(st.len(), 1);
    assert!(st.values().all(|o| o.reason == Reason::Succeeded));
}

#[tokio::test]
async fn broken_yaml_stalls_with_its_location_and_keeps_the_last_revision() {
    let dir = tempfile::tempdir().unwrap();
    let cids = seeds("broken", 2);
    write_tree(
        dir.path(),
        &[("ok.yaml", &pinset_yaml("ctl", "broken", &cids))],
    );
    let src = source(dir.path());
    let mut ctl = controller(&src, false);
    let good = ctl.reconcile(src.load().await, false).await;
    assert!(good.healthy());
    let rev = good.revision.unwrap();

    // The PinSet loses a pin and another file is broken: nothing changes.
    write_tree(
        dir.path(),
        &[
            ("ok.yaml", &pinset_yaml("ctl", "broken", &cids[..1])),
            (
                "bad.yaml",
                "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: bad\nspec:\n  pins: [\n",
            ),
        ],
    );
    let out = ctl.reconcile(src.load().await, false).await;
    assert!(!out.healthy());
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
    assert!(o.message.contains("bad.yaml:"));
    for c in &cids {
        assert!(owners(c).await.is_some(), "a broken revision released {c}");
    }
    assert_eq!(
        recorded("ctl", "broken").await.unwrap()["revision"],
        rev.as_str()
    );
    // Still broken: not skipped, still stalled.
    let again = ctl.reconcile(src.load().await, false).await;
    assert!(!again.healthy());
}

#[tokio::test]
async fn truncating_a_list_stalls_on_the_prune_guard() {
    let dir = tempfile::tempdir().unwrap();
    let cids = seeds("trunc", 4);
    write_tree(
        dir.path(),
        &[("t.yaml", &pinset_yaml("ctl", "trunc", &cids))],
    );
    let src = source(dir.path());
    let mut ctl = controller(&src, false);
    assert!(ctl.reconcile(src.load().await, false).await.healthy());

    write_tree(
        dir.path(),
        &[("t.yaml", &pinset_yaml("ctl", "trunc", &cids[..1]))],
    );
    let out = ctl.reconcile(src.load().await, false).await;
    let o = outcome(&out.pinsets, "trunc");
    assert_eq!(
        (o.condition, o.reason),
        (ConditionType::Stalled, Reason::PruneGuard),
        "{o:?}"
    );
    assert!(o.message.contains("3 of its 4"), "{}", o.message);
    for c in &cids {
        assert!(owners(c).await.is_some(), "the guard let {c} go");
    }
    // Stalled: the same revision is tried again, not skipped.
    assert!(!ctl.reconcile(src.load().await, false).await.skipped);
    // --force lifts the guard.
    let mut forced = controller(&src, true);
    let out = forced.reconcile(src.load().await, false).await;
    assert_eq!(outcome(&out.pinsets, "trunc").release, 3);
    assert!(owners(&cids[3]).await.is_none());
    assert!(owners(&cids[0]).await.is_some());
}

#[tokio::test]
async fn a_removed_file_releases_its_pinset_only_with_force() {
    let dir = tempfile::tempdir().unwrap();
    let keep = seeds("keep", 2);
    let gone = seeds("gone", 2);
    write_tree(
        dir.path(),
        &[
            ("keep.yaml", &pinset_yaml("ctl", "keep", &keep)),
            ("gone.yaml", &pinset_yaml("ctl", "gone", &gone)),
        ],
    );
    let src = source(dir.path());
    let mut ctl = controller(&src, false);
    assert!(ctl.reconcile(src.load().await, false).await.healthy());

    std::fs::remove_file(dir.path().join("gone.yaml")).unwrap();
    let out = ctl.reconcile(src.load().await, false).await;
    let o = outcome(&out.pinsets, "gone");
    assert_eq!(
        (o.condition, o.reason),
        (ConditionType::Stalled, Reason::PruneGuard),
        "{o:?}"
    );
    assert!(recorded("ctl", "gone").await.is_some());
    for c in &gone {
        assert!(owners(c).await.is_some());
    }

    let mut forced = controller(&src, true);
    let out = forced.reconcile(src.load().await, false).await;
    assert_eq!(outcome(&out.pinsets, "gone").reason, Reason::Released);
    assert_eq!(outcome(&out.pinsets, "keep").reason, Reason::Succeeded);
    assert!(recorded("ctl", "gone").await.is_none());
    for c in &gone {
        assert!(owners(c).await.is_none());
    }
    for c in &keep {
        assert!(owners(c).await.is_some());
    }
    // Released PinSets are forgotten; the next run does nothing to them.
    let next = forced.reconcile(src.load().await, true).await;
    assert!(next.pinsets.iter().all(|o| o.name != "gone"), "{next:?}");
}

#[tokio::test]
async fn manual_pins_are_never_touched() {
    let dir = tempfile::tempdir().unwrap();
    let cids = seeds("manual", 2);
    let by_hand = cid_v1("ctl-manual-by-hand");
    let http = crate::support::http();
    for c in [&cids[0], &by_hand] {
        let resp = http.post(url(&format!("/pins/{c}"))).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    write_tree(
        dir.path(),
        &[("m.yaml", &pinset_yaml("ctl", "manual", &cids))],
    );
    let src = source(dir.path());
    let mut ctl = controller(&src, true);
    assert!(ctl.reconcile(src.load().await, false).await.healthy());
    assert_eq!(
        owners(&cids[0]).await.unwrap(),
        ["api", "pinset:ctl/manual"]
    );

    std::fs::remove_file(dir.path().join("m.yaml")).unwrap();
    let out = ctl.reconcile(src.load().await, false).await;
    assert_eq!(outcome(&out.pinsets, "manual").reason, Reason::Released);
    assert_eq!(owners(&cids[0]).await.unwrap(), ["api"]);
    assert_eq!(owners(&by_hand).await.unwrap(), ["api"]);
    assert!(owners(&cids[1]).await.is_none());
}

#[tokio::test]
async fn an_unreachable_cluster_stalls_with_cluster_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[("u.yaml", &pinset_yaml("ctl", "down", &seeds("down", 1)))],
    );
    let src = source(dir.path());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let mut ctl = Controller::new(
        Client::new(&dead).unwrap(),
        ControllerOptions {
            source: src.name(),
            force: false,
            requests: Default::default(),
        },
    );
    let out = ctl.reconcile(src.load().await, false).await;
    let o = outcome(&out.pinsets, "down");
    assert_eq!(
        (o.condition, o.reason),
        (ConditionType::Stalled, Reason::ClusterUnavailable)
    );
    assert!(o.message.contains("cannot reach pinfleet"), "{}", o.message);
}

fn pinfleet(args: &[&str], host: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pinfleet"))
        .arg("controller")
        .args(args)
        .args(["--host", host])
        .env_remove("PINFLEET_HOST")
        .output()
        .expect("run pinfleet")
}

#[test]
fn cli_once_prints_outcomes_and_exits_by_health() {
    let dir = tempfile::tempdir().unwrap();
    let cids = seeds("cli", 4);
    write_tree(dir.path(), &[("c.yaml", &pinset_yaml("ctl", "cli", &cids))]);
    let source = format!("dir:{}", dir.path().display());
    let o = pinfleet(&["--source", &source, "--once"], peer());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.starts_with("ctl/cli  Succeeded  +4 ~0 -0  sha256:"),
        "{stdout}"
    );

    write_tree(
        dir.path(),
        &[("c.yaml", &pinset_yaml("ctl", "cli", &cids[..1]))],
    );
    let o = pinfleet(&["--source", &source, "--once", "--json"], peer());
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["pinsets"][0]["type"], "Stalled");
    assert_eq!(v["pinsets"][0]["reason"], "PruneGuard");

    let o = pinfleet(&["--source", &source, "--once", "--force"], peer());
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("+0 ~0 -3"));
}

#[test]
fn cli_reports_an_unreachable_host() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let source = format!("dir:{}", dir.path().display());
    let o = pinfleet(&["--source", &source, "--once"], &dead);
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("cannot talk to the cluster"), "{stderr}");
    assert!(stderr.contains("cannot reach pinfleet"), "{stderr}");
    let o = pinfleet(&["--source", "svn:https://x", "--once"], &dead);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected dir:PATH"));
}

/// A controller that starts again (a restart, a new leader) does not send
/// a PinSet the cluster already holds at the source's revision: the check
/// is the recorded revision, not a re-plan of every pin. Shown by handing
/// the new controller a load whose pins were tampered with under the same
/// revision: the cluster keeps what the revision says. A drift repair
/// still sends it whole.
#[tokio::test]
async fn a_restarted_controller_skips_pinsets_the_cluster_holds_at_the_revision() {
    let dir = tempfile::tempdir().unwrap();
    let cids = seeds("held", 3);
    write_tree(
        dir.path(),
        &[("h.yaml", &pinset_yaml("ctl", "held", &cids[..2]))],
    );
    let src = source(dir.path());
    let first = controller(&src, false)
        .reconcile(src.load().await, false)
        .await;
    assert!(first.healthy(), "{first:?}");

    // Same files, same revision; the load is altered behind the revision.
    let mut tampered = src.load().await.unwrap();
    let extra = pinfleet::manifest::CidKey::parse(&cids[2]).unwrap();
    let some_pin = tampered.pinsets[0].pins.values().next().unwrap().clone();
    tampered.pinsets[0].pins.insert(extra, some_pin);
    let mut restarted = controller(&src, false);
    let out = restarted.reconcile(Ok(tampered.clone()), false).await;
    let o = outcome(&out.pinsets, "held");
    assert_eq!(
        (o.reason, o.add, o.update, o.release),
        (Reason::Succeeded, 0, 0, 0),
        "{out:?}"
    );
    assert!(owners(&cids[2]).await.is_none(), "nothing was sent");

    // Drift repair re-plans whole: now the (tampered) load is sent.
    let drift = restarted.reconcile(Ok(tampered), true).await;
    assert_eq!(outcome(&drift.pinsets, "held").add, 1, "{drift:?}");
    assert!(owners(&cids[2]).await.is_some());
}
