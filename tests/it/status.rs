//! Status end to end: real peers, each with its own mock Kubo and tracker,
//! the REST API of the first peer served on 127.0.0.1:0, and the `pinfleet`
//! binary talking to it. Every wait has a deadline; none is a fixed sleep.

use std::collections::BTreeSet;
use std::future::Future;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use pinfleet::api::{ApiState, serve_with};
use pinfleet::ipfs::KuboClient;
use pinfleet::manifest::{PinOptions, PinSetStatus, PinSpec, ReplicationFactors};
use pinfleet::pinsets;
use pinfleet::testkit::MockKubo;
use pinfleet::tracker::StatusService;
use pinfleet::wire::{GlobalPinInfo, TrackerStatus};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{Peer, apply, cid, cluster, pinset};
use crate::support::{cid_v0, write_tree};

const DEADLINE: Duration = Duration::from_secs(30);

pub(crate) struct Node {
    pub(crate) peer: Peer,
    pub(crate) kubo: MockKubo,
    /// Kept: other peers' status RPCs are answered through it.
    _status: Arc<StatusService>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// Peers with trackers, and the first peer's REST API.
pub(crate) struct Fleet {
    pub(crate) nodes: Vec<Node>,
    pub(crate) url: String,
    api_cancel: CancellationToken,
}

impl Fleet {
    /// `n` peers; failed pins are retried after `retry` (make it long to
    /// see that only a recover brings them back).
    pub(crate) async fn start(n: usize, root: &std::path::Path, retry: Duration) -> Fleet {
        Self::start_with(n, root, retry, |_| {}, None).await
    }

    /// [`Fleet::start`] with the first peer's `ApiState` adjusted by
    /// `configure` and `extra` routes (webhook receivers) merged into its API.
    pub(crate) async fn start_with(
        n: usize,
        root: &std::path::Path,
        retry: Duration,
        configure: impl FnOnce(&mut ApiState),
        extra: Option<axum::Router>,
    ) -> Fleet {
        let peers = cluster(n, root, 10_000).await;
        let mut nodes = Vec::new();
        let mut first_status: Option<Arc<StatusService>> = None;
        let mut first_ipfs: Option<Arc<dyn pinfleet::ipfs::IpfsBackend>> = None;
        for (i, peer) in peers.into_iter().enumerate() {
            let (kubo, url) = MockKubo::start().await.unwrap();
            let backend: Arc<dyn pinfleet::ipfs::IpfsBackend> =
                Arc::new(KuboClient::new(&url, Duration::from_secs(5)).unwrap());
            first_ipfs.get_or_insert_with(|| Arc::clone(&backend));
            let config = crate::support::tracker_config(Duration::from_secs(2), retry, retry);
            let cancel = CancellationToken::new();
            let tasks = TaskTracker::new();
            let status = pinfleet::daemon::start_tracking(
                &peer.node,
                backend,
                config,
                format!("p{i}"),
                &cancel,
                &tasks,
            )
            .unwrap();
            first_status.get_or_insert_with(|| Arc::clone(&status));
            nodes.push(Node {
                peer,
                kubo,
                _status: status,
                cancel,
                tasks,
            });
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut state = ApiState::new(nodes[0].peer.node.clone(), "0.0.0-it", "p0");
        state.status = first_status;
        // The API's IPFS node, as a daemon's: peer 0's mock Kubo.
        state.ipfs = first_ipfs;
        configure(&mut state);
        let api_cancel = CancellationToken::new();
        tokio::spawn(serve_with(listener, state, extra, None, api_cancel.clone()));
        Fleet {
            nodes,
            url,
            api_cancel,
        }
    }

    pub(crate) fn id(&self, i: usize) -> String {
        self.nodes[i].peer.node.peer_id().to_string()
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, String) {
        let resp = crate::support::http()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    async fn pinset_status(&self, name: &str) -> PinSetStatus {
        let (code, body) = self.get(&format!("/pinsets/default/{name}/status")).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Runs the `pinfleet` binary against this fleet's API, off the runtime.
    pub(crate) async fn cli(&self, args: &[&str]) -> Output {
        self.cli_in(std::path::Path::new("."), args).await
    }

    /// [`Fleet::cli`] in the working directory `dir`.
    pub(crate) async fn cli_in(&self, dir: &std::path::Path, args: &[&str]) -> Output {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pinfleet"));
        cmd.current_dir(dir)
            .args(args)
            .args(["--host", &self.url])
            .env_remove("PINFLEET_HOST");
        tokio::task::spawn_blocking(move || cmd.output().expect("run pinfleet"))
            .await
            .unwrap()
    }

    /// Stops member `i` (its tracker and its peer): it stays in the
    /// membership but answers nothing.
    pub(crate) async fn stop_node(&mut self, i: usize) {
        let n = self.nodes.remove(i);
        n.cancel.cancel();
        n.tasks.close();
        n.tasks.wait().await;
        n.peer.stop().await;
    }

    pub(crate) async fn stop(self) {
        self.api_cancel.cancel();
        for n in self.nodes {
            n.cancel.cancel();
            n.tasks.close();
            n.tasks.wait().await;
            n.peer.stop().await;
        }
    }
}

/// Polls `f` until it gives a value; fails the test at the deadline.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn condition<'a>(st: &'a PinSetStatus, type_: &str) -> (&'a str, &'a str) {
    let c = st
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {st:?}"));
    (c.status.as_str(), c.reason.as_str())
}

fn every_peer(range: std::ops::Range<u64>, name: &str) -> pinfleet::pinsets::PinSetApply {
    let mut ps = pinset(name, range);
    let opts = Arc::new(PinOptions {
        replication: ReplicationFactors { min: -1, max: -1 },
        ..PinOptions::default()
    });
    for pin in ps.pins.values_mut() {
        pin.spec = PinSpec {
            name: pin.spec.name.clone(),
            options: Arc::clone(&opts),
        };
    }
    apply(ps, "r1")
}

fn out(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ndjson(body: &str) -> Vec<GlobalPinInfo> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pinset_status_counts_pins_pinned_on_every_peer() {
    let root = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(2, root.path(), Duration::from_millis(200)).await;
    pinsets::apply(
        &fleet.nodes[0].peer.node,
        apply(pinset("counts", 0..5), "r1"),
    )
    .await
    .unwrap();
    let st = eventually("5 of 5 pinned", || async {
        let st = fleet.pinset_status("counts").await;
        (st.summary.pinned == 5).then_some(st)
    })
    .await;
    assert_eq!(st.summary.total, 5);
    assert_eq!(
        (
            st.summary.pinning,
            st.summary.queued,
            st.summary.error,
            st.summary.unpinned
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(st.revision.as_deref(), Some("r1"));
    assert_eq!(condition(&st, "Ready"), ("True", "Succeeded"));
    assert_eq!(condition(&st, "Reconciling"), ("False", "Succeeded"));
    assert_eq!(condition(&st, "Stalled").0, "False");
    assert!(st.errors.is_empty(), "{:?}", st.errors);
    for i in 0..2 {
        let c = st.peers[&fleet.id(i)];
        assert_eq!((c.total, c.pinned), (5, 5), "peer {i}: {c:?}");
    }

    // Kubernetes conventions on the wire.
    let (_, body) = fleet.get("/pinsets/default/counts/status").await;
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["conditions"][0]["type"], "Ready");
    assert!(json["conditions"][0]["lastTransitionTime"].is_string());
    assert_eq!(json["summary"]["total"], 5);

    let (code, body) = fleet.get("/pinsets/default/nope/status").await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["code"], 404);
    assert_eq!(err["message"], "pinset default/nope not found");
    let (code, _) = fleet.get("/pinsets/default/Not_A_Label/status").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);

    // The CLI: JSON, and the table.
    let o = fleet
        .cli(&["status", "pinset/default/counts", "--json"])
        .await;
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let cli: PinSetStatus = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(cli.summary, st.summary);
    let o = fleet.cli(&["status", "pinset/counts"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.starts_with("pinset default/counts (revision r1)"),
        "{table}"
    );
    assert!(table.contains("Ready        True   Succeeded"), "{table}");
    assert!(table.contains(&fleet.id(1)), "{table}");
    let o = fleet.cli(&["status", "pinset/nope"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));

    // Every pin, as NDJSON and as a table.
    let o = fleet.cli(&["status", "--json"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let all = ndjson(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(all.len(), 5);
    let o = fleet.cli(&["status"]).await;
    let table = String::from_utf8_lossy(&o.stdout);
    assert_eq!(table.matches(": PINNED |").count(), 10, "{table}");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ipfs_down_lists_errors_by_peer_until_recovered() {
    let root = tempfile::tempdir().unwrap();
    // Failed pins are retried only after a minute: what brings them back
    // within the deadline is the recover.
    let fleet = Fleet::start(2, root.path(), Duration::from_secs(60)).await;
    let node = &fleet.nodes[0].peer.node;
    pinsets::apply(node, every_peer(0..2, "fine"))
        .await
        .unwrap();
    eventually("the fine set is ready", || async {
        let st = fleet.pinset_status("fine").await;
        (condition(&st, "Ready").0 == "True").then_some(())
    })
    .await;

    fleet.nodes[1].kubo.set_down(true);
    pinsets::apply(node, every_peer(10..13, "down"))
        .await
        .unwrap();
    let down = fleet.id(1);
    let up = fleet.id(0);
    let st = eventually("3 pins in error, pinned on the other peer", || async {
        let st = fleet.pinset_status("down").await;
        (st.summary.error == 3 && st.peers.get(&up).is_some_and(|c| c.pinned == 3)).then_some(st)
    })
    .await;
    assert_eq!(st.summary.total, 3);
    assert_eq!(condition(&st, "Ready"), ("False", "PinErrors"));
    assert_eq!(condition(&st, "Reconciling"), ("True", "Progressing"));
    assert_eq!(st.errors.len(), 3, "{:?}", st.errors);
    for e in &st.errors {
        assert_eq!(e.peer, down);
        assert!(!e.error.is_empty());
    }
    let errored: BTreeSet<String> = st.errors.iter().map(|e| e.cid.clone()).collect();
    let want: BTreeSet<String> = (10..13).map(|i| cid(i).to_string()).collect();
    assert_eq!(errored, want);
    assert_eq!(st.peers[&down].error, 3);
    // Pins pinned before the outage are not reported pinned from the last
    // list once the node cannot list them: `cluster_error` with the cause.
    let fine = cid(0).to_string();
    let info: GlobalPinInfo = eventually("the down peer's pinned pins in cluster_error", || {
        let fine = fine.clone();
        let (fleet, down) = (&fleet, &down);
        async move {
            let (_, body) = fleet.get(&format!("/pins/{fine}")).await;
            let info: GlobalPinInfo = serde_json::from_str(&body).ok()?;
            (info.peer_map[down].status == TrackerStatus::ClusterError).then_some(info)
        }
    })
    .await;
    assert!(!info.peer_map[&down].error.is_empty(), "{info:?}");
    assert_eq!(info.peer_map[&up].status, TrackerStatus::Pinned);

    // `filter=pin_error` answers the erroring pins and only them.
    let (code, body) = fleet.get("/pins?filter=pin_error").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let listed = ndjson(&body);
    let cids: BTreeSet<String> = listed.iter().map(|i| i.cid.clone()).collect();
    assert_eq!(cids, want);
    for info in &listed {
        assert_eq!(info.peer_map[&down].status, TrackerStatus::PinError);
    }
    let o = fleet.cli(&["status", "--filter", "error", "--json"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    // `error` matches pin_error and cluster_error: the 3 failed pins and
    // the 2 the down node cannot list.
    assert_eq!(ndjson(&String::from_utf8_lossy(&o.stdout)).len(), 5);

    fleet.nodes[1].kubo.set_down(false);
    let resp = crate::support::http()
        .post(format!("{}/pins/recover", fleet.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Only what was re-queued, and only on the peer that re-queued it.
    let recovered = ndjson(&resp.text().await.unwrap());
    let cids: BTreeSet<String> = recovered.iter().map(|i| i.cid.clone()).collect();
    assert_eq!(cids, want);
    for info in &recovered {
        assert_eq!(
            info.peer_map.keys().collect::<Vec<_>>(),
            [&down],
            "{info:?}"
        );
    }
    // Until the node lists its pins again, its pins show its last error.
    let st = eventually("recovered", || async {
        let st = fleet.pinset_status("down").await;
        (st.summary.pinned == 3 && st.errors.is_empty()).then_some(st)
    })
    .await;
    assert_eq!(condition(&st, "Ready"), ("True", "Succeeded"));
    assert!(st.errors.is_empty(), "{:?}", st.errors);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_v0_pin_is_reported_as_written() {
    let root = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(1, root.path(), Duration::from_millis(200)).await;
    let v0 = cid_v0("status-v0");
    let resp = crate::support::http()
        .post(format!("{}/pins/{v0}", fleet.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let info: GlobalPinInfo = eventually("pinned", || async {
        let (code, body) = fleet.get(&format!("/pins/{v0}")).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let info: GlobalPinInfo = serde_json::from_str(&body).unwrap();
        (info.peer_map[&fleet.id(0)].status == TrackerStatus::Pinned).then_some(info)
    })
    .await;
    assert_eq!(info.cid, v0);
    let o = fleet.cli(&["status", &v0]).await;
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.starts_with(&format!("{v0}:\n")), "{text}");
    assert!(text.contains(": PINNED |"), "{text}");
    let o = fleet.cli(&["recover", &v0, "--json"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let again: GlobalPinInfo = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(again.cid, v0);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apply_wait_exits_0_when_pinned_and_1_on_timeout() {
    let root = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(2, root.path(), Duration::from_secs(60)).await;
    let manifests = tempfile::tempdir().unwrap();
    let doc = |name: &str, range: std::ops::Range<u64>| {
        let pins: String = range.map(|i| format!("    - cid: {}\n", cid(i))).collect();
        format!(
            "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata: {{name: {name}}}\nspec:\n  pins:\n{pins}"
        )
    };
    write_tree(
        manifests.path(),
        &[("waited.yaml", &doc("waited", 100..104))],
    );
    let dir = manifests.path().to_str().unwrap();
    let o = fleet
        .cli(&["apply", dir, "--wait", "--wait-timeout", "60s"])
        .await;
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("ready: pinset default/waited 4/4 pins pinned"),
        "{}",
        out(&o)
    );
    let st = fleet.pinset_status("waited").await;
    assert_eq!(condition(&st, "Ready").0, "True");

    // A peer whose IPFS is down: never Ready, so the wait times out (exit 1)
    // and prints the errors.
    fleet.nodes[1].kubo.set_down(true);
    let stuck = tempfile::tempdir().unwrap();
    write_tree(stuck.path(), &[("stuck.yaml", &doc("stuck", 200..202))]);
    let o = fleet
        .cli(&[
            "apply",
            stuck.path().to_str().unwrap(),
            "--wait",
            "--wait-timeout",
            "3s",
            "--json",
        ])
        .await;
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["wait"]["ready"], false, "{report}");
    assert_eq!(report["wait"]["pinsets"][0]["pinset"], "default/stuck");
    assert!(String::from_utf8_lossy(&o.stderr).contains("timed out after 3s"));
    // The text form lists the errors once they are there.
    let st = eventually("errors on the down peer", || async {
        let st = fleet.pinset_status("stuck").await;
        (st.summary.error == 2).then_some(st)
    })
    .await;
    assert!(st.errors.iter().all(|e| e.peer == fleet.id(1)));
    let o = fleet
        .cli(&[
            "apply",
            stuck.path().to_str().unwrap(),
            "--wait",
            "--wait-timeout",
            "1s",
        ])
        .await;
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("not ready: pinset default/stuck 0/2"),
        "{}",
        out(&o)
    );
    assert!(
        text.contains(&format!("on {}: ", fleet.id(1))),
        "{}",
        out(&o)
    );
    fleet.stop().await;
}

/// The value of the sample `name{labels}` in an OpenMetrics text body.
fn sample(body: &str, name_and_labels: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_this_peers_statuses_per_pinset() {
    let root = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(2, root.path(), Duration::from_secs(60)).await;
    let node = &fleet.nodes[0].peer.node;
    pinsets::apply(node, every_peer(20..23, "metric-ok"))
        .await
        .unwrap();
    let ok = r#"pinfleet_pinset_local_pins{namespace="default",name="metric-ok",status="pinned"}"#;
    eventually("3 pins pinned here, in the metrics", || async {
        let (_, body) = fleet.get("/metrics").await;
        (sample(&body, ok) == Some(3.0)).then_some(())
    })
    .await;

    // This peer's IPFS goes down: its errors show per PinSet.
    fleet.nodes[0].kubo.set_down(true);
    pinsets::apply(node, every_peer(30..32, "metric-down"))
        .await
        .unwrap();
    let err =
        r#"pinfleet_pinset_local_pins{namespace="default",name="metric-down",status="error"}"#;
    // The pins it held are not reported pinned while the node cannot list
    // them: they count as errors too (cluster_error) once it tried.
    let ok_err =
        r#"pinfleet_pinset_local_pins{namespace="default",name="metric-ok",status="error"}"#;
    let body = eventually("2 pins in error here, and the 3 it cannot list", || async {
        let (_, body) = fleet.get("/metrics").await;
        (sample(&body, err) == Some(2.0) && sample(&body, ok_err) == Some(3.0)).then_some(body)
    })
    .await;
    assert_eq!(sample(&body, ok), Some(0.0), "{body}");
    assert_eq!(sample(&body, "pinfleet_pins"), Some(5.0), "{body}");
    assert_eq!(
        sample(&body, r#"pinfleet_local_pins{status="error"}"#),
        Some(5.0),
        "{body}"
    );
    assert_eq!(sample(&body, "pinfleet_peers"), Some(2.0), "{body}");
    assert_eq!(
        sample(
            &body,
            r#"pinfleet_pinset_pins{namespace="default",name="metric-down"}"#
        ),
        Some(2.0),
        "{body}"
    );
    assert!(body.trim_end().ends_with("# EOF"), "{body}");

    // Conditions a controller recorded are exported, Flux-style.
    let report = serde_json::json!({
        "source": "dir:/srv/m",
        "revision": "r1",
        "conditions": [{
            "type": "Stalled", "status": "True", "reason": "PruneGuard",
            "message": "refused", "lastTransitionTime": "2026-11-25T00:00:00Z"
        }],
    });
    let resp = crate::support::http()
        .put(format!(
            "{}/pinsets/default/metric-ok/conditions",
            fleet.url
        ))
        .json(&report)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{resp:?}");
    let stalled = |status: &str| {
        format!(
            r#"pinfleet_pinset_condition{{namespace="default",name="metric-ok",type="Stalled",status="{status}"}}"#
        )
    };
    let body = eventually("the recorded condition", || async {
        let (_, body) = fleet.get("/metrics").await;
        (sample(&body, &stalled("True")) == Some(1.0)).then_some(body)
    })
    .await;
    assert_eq!(sample(&body, &stalled("False")), Some(0.0), "{body}");
    fleet.nodes[0].kubo.set_down(false);
    fleet.stop().await;
}

/// Re-applying unchanged manifests sends nothing: `pinfleet apply` scans
/// them, finds the cluster's revision equal to their source digest and
/// answers `unchanged` — the PinSet record keeps the source and time of the
/// first apply, although this run names the files differently. A changed
/// list is then sent and applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reapplying_unchanged_manifests_sends_nothing() {
    let root = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(1, root.path(), Duration::from_secs(60)).await;
    let repo = root.path().join("repo");
    std::fs::create_dir_all(repo.join("lists")).unwrap();
    std::fs::write(
        repo.join("m.yaml"),
        "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: mirror\nspec:\n  pinsFrom:\n    - path: lists/core.txt\n",
    )
    .unwrap();
    let list: String = (0..50).map(|i| format!("{}\n", cid(i))).collect();
    std::fs::write(repo.join("lists/core.txt"), &list).unwrap();
    let record = || async {
        let (code, body) = fleet.get("/pinsets/default/mirror").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };

    let first = fleet.cli_in(&repo, &["apply", "m.yaml"]).await;
    assert!(first.status.success(), "{first:?}");
    let applied = record().await;
    assert_eq!(applied["pins"], 50);

    // Another working directory, another spelling of the same file.
    let again = fleet
        .cli_in(root.path(), &["apply", "repo/m.yaml", "--json"])
        .await;
    assert!(again.status.success(), "{again:?}");
    let report: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(report["pinsets"][0]["unchanged"], 50);
    assert_eq!(report["pinsets"][0]["entries"], 0);
    let after = record().await;
    assert_eq!(after["source"], applied["source"], "nothing was sent");
    assert_eq!(after["appliedAt"], applied["appliedAt"]);
    assert_eq!(after["revision"], applied["revision"]);

    // `diff` agrees: no change, exit 0.
    let diff = fleet.cli_in(&repo, &["diff", "m.yaml"]).await;
    assert_eq!(diff.status.code(), Some(0), "{diff:?}");

    // One more CID: the list is sent and applied under a new revision.
    std::fs::write(repo.join("lists/core.txt"), format!("{list}{}\n", cid(50))).unwrap();
    let changed = fleet.cli_in(&repo, &["apply", "m.yaml", "--json"]).await;
    assert!(changed.status.success(), "{changed:?}");
    let report: Value = serde_json::from_slice(&changed.stdout).unwrap();
    assert_eq!(report["pinsets"][0]["add"], 1);
    let last = record().await;
    assert_eq!(last["pins"], 51);
    assert_ne!(last["revision"], applied["revision"]);
    fleet.stop().await;
}
