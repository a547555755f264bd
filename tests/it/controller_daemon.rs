//! The controller inside `pinfleet daemon` (`[controller]` in service.toml):
//! a single peer is the Raft leader, so its controller applies a watched
//! directory through its own API, follows edits, and stops with the daemon.

use std::process::Command;
use std::time::{Duration, Instant};

use pinfleet::daemon::read_run_file;

use super::support::{cid_v1, init_peer, spawn_daemon, stop_daemon, wait_running};

const DEADLINE: Duration = Duration::from_secs(30);

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_pinfleet")
}

fn manifest(cids: &[String]) -> String {
    let mut s = String::from(
        "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: mirror\n  namespace: daemon\nspec:\n  pins:\n",
    );
    for (i, c) in cids.iter().enumerate() {
        s.push_str(&format!("    - cid: {c}\n      name: pin-{i}\n"));
    }
    s
}

/// Waits until the PinSet `daemon/mirror` is listed from `source` with
/// `pins` pins and every CID of `cids` is allocated.
async fn wait_applied(api: &str, source: &str, pins: u64, cids: &[String]) {
    let http = crate::support::http();
    let start = Instant::now();
    loop {
        let listed = match http.get(format!("{api}/pinsets")).send().await {
            Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().await.ok(),
            _ => None,
        };
        let found = listed.as_ref().and_then(|v| v.as_array()).is_some_and(|a| {
            a.iter().any(|p| {
                p["namespace"] == "daemon"
                    && p["name"] == "mirror"
                    && p["source"] == source
                    && p["pins"] == pins
            })
        });
        let mut allocated = found;
        if found {
            for c in cids {
                let ok = http
                    .get(format!("{api}/allocations/{c}"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                allocated &= ok;
            }
        }
        if allocated {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "not applied within {DEADLINE:?}: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_runs_the_leaders_controller_on_a_dir_source() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("peer");
    let manifests = tmp.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let manifests = std::fs::canonicalize(&manifests).unwrap();
    let cids: Vec<String> = (0..3).map(|i| cid_v1(&format!("ctl-daemon-{i}"))).collect();
    std::fs::write(manifests.join("mirror.yaml"), manifest(&cids[..2])).unwrap();
    init_peer(&d);
    let source = format!("dir:{}", manifests.display());
    let mut child = spawn_daemon(
        &d,
        &[
            ("PINFLEET_CONTROLLER_SOURCES", &source),
            ("PINFLEET_CONTROLLER_INTERVAL", "1h"),
        ],
    );
    let info = wait_running(&d, &mut child);

    wait_applied(&info.api, &source, 2, &cids[..2]).await;

    // An edit is picked up by the watcher (no interval within the test).
    std::fs::write(manifests.join("mirror.yaml"), manifest(&cids)).unwrap();
    wait_applied(&info.api, &source, 3, &cids).await;

    stop_daemon(&mut child);
    assert!(read_run_file(&d).is_none(), "run.json removed on shutdown");
}

#[test]
fn daemon_refuses_webhooks_without_the_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("peer");
    init_peer(&d);
    let child = spawn_daemon(
        &d,
        &[
            ("PINFLEET_CONTROLLER_SOURCES", "git:file:///nonexistent.git"),
            ("PINFLEET_CONTROLLER_WEBHOOKS", "github:main"),
        ],
    );
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PINFLEET_WEBHOOK_SECRET"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_serves_webhooks_on_its_api_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("peer");
    init_peer(&d);
    // The repository does not exist: fetches fail (logged), the daemon runs.
    let source = format!("git:file://{}/missing.git", tmp.path().display());
    let mut child = spawn_daemon(
        &d,
        &[
            ("PINFLEET_CONTROLLER_SOURCES", &source),
            ("PINFLEET_CONTROLLER_WEBHOOKS", "generic:main"),
            ("PINFLEET_WEBHOOK_SECRET", "s3cret"),
        ],
    );
    let info = wait_running(&d, &mut child);
    let http = crate::support::http();
    let bad = http
        .post(format!("{}/hooks/main", info.api))
        .header("x-signature-256", "sha256=00")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);
    let unknown = http
        .post(format!("{}/hooks/other", info.api))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    // The API's own routes are still served next to the hooks.
    let id = http.get(format!("{}/id", info.api)).send().await.unwrap();
    assert!(id.status().is_success());
    stop_daemon(&mut child);
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(exe()).args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_now_repairs_drift_at_once_and_names_what_it_cannot_reconcile() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("peer");
    let manifests = tmp.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let manifests = std::fs::canonicalize(&manifests).unwrap();
    let cids: Vec<String> = (0..2).map(|i| cid_v1(&format!("ctl-now-{i}"))).collect();
    std::fs::write(manifests.join("mirror.yaml"), manifest(&cids)).unwrap();
    init_peer(&d);
    let source = format!("dir:{}", manifests.display());
    let mut child = spawn_daemon(
        &d,
        &[
            ("PINFLEET_CONTROLLER_SOURCES", &source),
            ("PINFLEET_CONTROLLER_INTERVAL", "1h"),
        ],
    );
    let info = wait_running(&d, &mut child);
    wait_applied(&info.api, &source, 2, &cids).await;

    // Drift: another writer replaces the PinSet under the same source; the
    // directory did not change and the interval is an hour away.
    let http = crate::support::http();
    let drifted = http
        .put(
            reqwest::Url::parse_with_params(
                &format!("{}/pinsets/daemon/mirror", info.api),
                [
                    ("source", source.as_str()),
                    ("revision", "drift"),
                    ("force", "true"),
                ],
            )
            .unwrap(),
        )
        .body(manifest(&cids[..1]))
        .send()
        .await
        .unwrap();
    assert!(drifted.status().is_success(), "{drifted:?}");
    wait_applied(&info.api, &source, 1, &cids[..1]).await;

    // Reconcile-now waits for the controller and shows the status.
    let out = cli(&["reconcile", "pinset/daemon/mirror", "--host", &info.api]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("reconciled pinset daemon/mirror"),
        "{stdout}"
    );
    // Done means committed: no waiting needed for the repaired PinSet.
    let listed: serde_json::Value = http
        .get(format!("{}/pinsets", info.api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mirror = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "mirror")
        .unwrap();
    assert_eq!(mirror["pins"], 2, "{mirror}");
    assert!(
        mirror["revision"].as_str().unwrap().starts_with("sha256:"),
        "{mirror}"
    );

    // Queued only, through the route.
    let queued = http
        .post(format!("{}/pinsets/daemon/mirror/reconcile", info.api))
        .send()
        .await
        .unwrap();
    assert_eq!(queued.status().as_u16(), 202);
    let answer: serde_json::Value = queued.json().await.unwrap();
    assert_eq!(answer["source"], source.as_str());
    assert_eq!(answer["handled"], false);

    // Unknown PinSet: exit 1, named.
    let unknown = cli(&["reconcile", "pinset/daemon/nope", "--host", &info.api]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("daemon/nope"));

    // A PinSet applied by hand is not the controller's to reconcile: 409.
    let by_hand = http
        .put(format!("{}/pinsets/daemon/by-hand", info.api))
        .body(manifest(&cids[..1]).replace("name: mirror", "name: by-hand"))
        .send()
        .await
        .unwrap();
    assert!(by_hand.status().is_success());
    let refused = cli(&["reconcile", "pinset/daemon/by-hand", "--host", &info.api]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("no controller here runs"), "{stderr}");

    stop_daemon(&mut child);
}
