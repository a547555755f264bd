//! Controller conditions recorded in the cluster: one real peer with a mock
//! Kubo and a tracker, its REST API on 127.0.0.1:0, a `Controller` over a
//! temp directory, and the `pinfleet` binary. Every wait has a deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pinfleet::api::{ApiState, serve};
use pinfleet::client::Client;
use pinfleet::controller::{Controller, ControllerOptions};
use pinfleet::ipfs::KuboClient;
use pinfleet::manifest::{Limits, MAX_STORED_MESSAGE_BYTES, PinSetStatus};
use pinfleet::source::DirSource;
use pinfleet::testkit::MockKubo;
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::cluster;
use crate::support::{cid_v1, write_tree};

const DEADLINE: Duration = Duration::from_secs(30);

fn pinset_yaml(name: &str, cids: &[String]) -> String {
    let mut s = format!(
        "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: {name}\n  namespace: cond\nspec:\n  pins:\n"
    );
    for (i, c) in cids.iter().enumerate() {
        s.push_str(&format!("    - cid: {c}\n      name: pin-{i}\n"));
    }
    s
}

fn condition<'a>(st: &'a PinSetStatus, type_: &str) -> &'a pinfleet::manifest::model::Condition {
    st.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition: {st:?}"))
}

async fn status(url: &str, name: &str) -> (StatusCode, String) {
    let resp = crate::support::http()
        .get(format!("{url}/pinsets/cond/{name}/status"))
        .send()
        .await
        .unwrap();
    (resp.status(), resp.text().await.unwrap())
}

/// Polls the status route until `pred` holds.
async fn wait_status(url: &str, name: &str, pred: impl Fn(&PinSetStatus) -> bool) -> PinSetStatus {
    let start = Instant::now();
    loop {
        let (code, body) = status(url, name).await;
        if code == StatusCode::OK {
            let st: PinSetStatus = serde_json::from_str(&body).unwrap();
            if pred(&st) {
                return st;
            }
            assert!(start.elapsed() < DEADLINE, "status never matched: {st:?}");
        } else {
            assert!(start.elapsed() < DEADLINE, "status {code}: {body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn is(st: &PinSetStatus, type_: &str, status: &str, reason: &str) -> bool {
    st.conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == status && c.reason == reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_conditions_are_visible_through_the_cluster() {
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let peers = cluster(1, root.path(), 10_000).await;
    let (_kubo, kubo_url) = MockKubo::start().await.unwrap();
    let backend = Arc::new(KuboClient::new(&kubo_url, Duration::from_secs(5)).unwrap());
    let config = crate::support::tracker_config(
        Duration::from_secs(2),
        Duration::from_millis(200),
        Duration::from_millis(200),
    );
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let svc = pinfleet::daemon::start_tracking(
        &peers[0].node,
        backend,
        config,
        "p0".to_string(),
        &cancel,
        &tasks,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut state = ApiState::new(peers[0].node.clone(), "0.0.0-it", "p0");
    state.status = Some(svc);
    tokio::spawn(serve(listener, state, cancel.clone()));

    // A bad body is refused.
    let resp = crate::support::http()
        .put(format!("{url}/pinsets/cond/x/conditions"))
        .body("{\"conditions\": 3}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(status(&url, "x").await.0, StatusCode::NOT_FOUND);

    // A condition's text is stored capped: an error echoed whole cannot
    // grow the cluster state.
    let huge = serde_json::json!({
        "source": "it",
        "conditions": [{
            "type": "Stalled",
            "status": "True",
            "reason": "ManifestInvalid",
            "message": "é".repeat(20_000),
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }],
    });
    let resp = crate::support::http()
        .put(format!("{url}/pinsets/cond/huge/conditions"))
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let st = wait_status(&url, "huge", |s| {
        s.conditions.iter().any(|c| c.type_ == "Stalled")
    })
    .await;
    let message = &condition(&st, "Stalled").message;
    assert!(
        message.len() <= MAX_STORED_MESSAGE_BYTES,
        "{} bytes",
        message.len()
    );
    assert!(
        message.starts_with("éé") && message.ends_with('…'),
        "{message}"
    );

    // A manifest that never loaded: known only through the controller.
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[(
            "c.yaml",
            "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: cnd\n  namespace: cond\nspec:\n  pins: [\n",
        )],
    );
    let src = DirSource::new(dir.path(), Limits::default()).unwrap();
    let opts = |force| ControllerOptions {
        source: src.name(),
        force,
        requests: Default::default(),
    };
    let mut ctl = Controller::new(Client::new(&url).unwrap(), opts(false));
    assert!(!ctl.reconcile(src.load().await, false).await.healthy());
    let st = wait_status(&url, "cnd", |s| is(s, "Stalled", "True", "ManifestInvalid")).await;
    assert_eq!(st.summary.total, 0);
    let stalled = condition(&st, "Stalled");
    let at = stalled
        .message
        .find("c.yaml:")
        .unwrap_or_else(|| panic!("{}", stalled.message));
    let loc: Vec<&str> = stalled.message[at..].splitn(4, ':').collect();
    assert!(
        loc[1].parse::<u32>().is_ok() && loc[2].parse::<u32>().is_ok(),
        "{}",
        stalled.message
    );
    assert!(is(&st, "Ready", "False", "ManifestInvalid"), "{st:?}");

    // Fixed: applied, then Ready once every pin is pinned.
    let cids: Vec<String> = (0..4).map(|i| cid_v1(&format!("cond-{i}"))).collect();
    write_tree(dir.path(), &[("c.yaml", &pinset_yaml("cnd", &cids))]);
    assert!(ctl.reconcile(src.load().await, false).await.healthy());
    let st = wait_status(&url, "cnd", |s| {
        is(s, "Ready", "True", "Succeeded") && is(s, "Stalled", "False", "NotStalled")
    })
    .await;
    assert_eq!(st.summary.total, 4);
    assert!(st.revision.is_some());

    // A truncation: the prune guard stalls it.
    write_tree(dir.path(), &[("c.yaml", &pinset_yaml("cnd", &cids[..1]))]);
    assert!(!ctl.reconcile(src.load().await, false).await.healthy());
    let st = wait_status(&url, "cnd", |s| is(s, "Stalled", "True", "PruneGuard")).await;
    assert!(is(&st, "Ready", "False", "PruneGuard"), "{st:?}");
    assert!(
        condition(&st, "Stalled").message.contains("3 of its 4"),
        "{st:?}"
    );

    // The same through the CLI.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pinfleet"));
    cmd.args(["status", "pinset/cond/cnd", "--json", "--host", &url])
        .env_remove("PINFLEET_HOST");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let st: PinSetStatus = serde_json::from_slice(&out.stdout).unwrap();
    assert!(is(&st, "Stalled", "True", "PruneGuard"), "{st:?}");

    // --force lifts the guard: no longer stalled.
    let mut forced = Controller::new(Client::new(&url).unwrap(), opts(true));
    assert!(forced.reconcile(src.load().await, false).await.healthy());
    wait_status(&url, "cnd", |s| is(s, "Stalled", "False", "NotStalled")).await;

    cancel.cancel();
    tasks.close();
    for p in peers {
        p.stop().await;
    }
}
