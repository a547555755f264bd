//! The kube source end to end: `run_kube` watching an in-process fake
//! Kubernetes API server (`fake_kube`) and applying PinSet objects to a real
//! one-peer cluster with a tracker and a mock Kubo (`status::Fleet`). Each
//! test owns its fake server, cluster and namespaces; every wait has a
//! deadline.

use std::time::Duration;

use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use pinfleet::client::Client;
use pinfleet::controller::{KubeOptions, run_kube};
use pinfleet::manifest::{CidKey, PinSet};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::fake_kube::FakeKube;
use crate::status::{Fleet, eventually};
use crate::support::{cid_v1, owners_at, recorded_at};

pub(crate) struct Rig {
    pub(crate) fake: FakeKube,
    pub(crate) fleet: Fleet,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

pub(crate) fn options() -> KubeOptions {
    KubeOptions {
        refresh: Duration::from_millis(200),
        refresh_max: Duration::from_secs(1),
        interval: Duration::from_secs(60),
        backoff_min: Duration::from_millis(200),
        backoff_max: Duration::from_secs(2),
        ..KubeOptions::default()
    }
}

impl Rig {
    /// A cluster, a fake API server and the kube source between them; the
    /// controller reaches the cluster at `via` when given (a proxy).
    pub(crate) async fn start_with(opts: KubeOptions, via: Option<&dyn Fn(&str) -> String>) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let fleet = Fleet::start(1, dir.path(), Duration::from_millis(200)).await;
        let fake = FakeKube::start().await.unwrap();
        let cancel = CancellationToken::new();
        let url = via.map_or_else(|| fleet.url.clone(), |v| v(&fleet.url));
        tokio::spawn(run_kube(
            Client::new(&url).unwrap(),
            fake.client(),
            opts,
            cancel.clone(),
        ));
        Rig {
            fake,
            fleet,
            cancel,
            _dir: dir,
        }
    }

    pub(crate) async fn start() -> Rig {
        Self::start_with(options(), None).await
    }

    fn api(&self, ns: &str) -> Api<PinSet> {
        Api::namespaced(self.fake.client(), ns)
    }

    pub(crate) async fn create(&self, ns: &str, name: &str, spec: Value, annotations: Value) {
        let ps: PinSet = serde_json::from_value(json!({
            "apiVersion": "pinfleet.io/v1alpha1",
            "kind": "PinSet",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations},
            "spec": spec,
        }))
        .unwrap();
        self.api(ns)
            .create(&PostParams::default(), &ps)
            .await
            .unwrap();
    }

    pub(crate) async fn merge(&self, ns: &str, name: &str, patch: Value) {
        self.api(ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    async fn delete(&self, ns: &str, name: &str) {
        self.api(ns)
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    /// Waits until the object's condition `type_` has `status` and
    /// `reason` for generation `generation`; returns the object.
    pub(crate) async fn until_condition(
        &self,
        ns: &str,
        name: &str,
        generation: i64,
        type_: &str,
        want: (&str, &str),
    ) -> Value {
        eventually(
            &format!("{ns}/{name}: {type_} {want:?} at generation {generation}"),
            || async {
                let o = self.fake.object(ns, name)?;
                let st = &o["status"];
                (st["observedGeneration"] == generation
                    && condition(st, type_) == Some((want.0.to_string(), want.1.to_string())))
                .then_some(o)
            },
        )
        .await
    }

    pub(crate) async fn owners(&self, cid: &str) -> Option<Vec<String>> {
        owners_at(&self.fleet.url, cid).await
    }

    pub(crate) async fn stop(self) {
        self.cancel.cancel();
        self.fleet.stop().await;
    }
}

/// `(status, reason)` of condition `type_` in a status.
pub(crate) fn condition(status: &Value, type_: &str) -> Option<(String, String)> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
}

pub(crate) fn message(status: &Value, type_: &str) -> String {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

pub(crate) fn seeds(test: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| cid_v1(&format!("kube-{test}-{i}")))
        .collect()
}

fn pins(cids: &[String]) -> Value {
    json!({"pins": cids.iter().map(|c| json!({"cid": c})).collect::<Vec<_>>()})
}

fn finalizers(o: &Value) -> Vec<String> {
    o["metadata"]["finalizers"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_created_pinset_is_reconciling_then_ready_with_its_generation() {
    let rig = Rig::start().await;
    let cids = seeds("create", 3);
    // One pin takes a while, so the PinSet is seen still reconciling.
    rig.fleet.nodes[0].kubo.slow_progress(
        CidKey::parse(&cids[0]).unwrap(),
        10,
        Duration::from_millis(100),
    );
    rig.create("team-a", "web", pins(&cids), json!({})).await;
    let o = rig
        .until_condition("team-a", "web", 1, "Ready", ("True", "Succeeded"))
        .await;
    assert_eq!(finalizers(&o), ["pinfleet.io/cleanup"]);
    let st = &o["status"];
    assert_eq!(st["summary"]["total"], 3);
    assert_eq!(st["summary"]["pinned"], 3);
    assert_eq!(condition(st, "Reconciling").unwrap().0, "False");
    assert_eq!(condition(st, "Stalled").unwrap().0, "False");
    for c in st["conditions"].as_array().unwrap() {
        assert_eq!(c["observedGeneration"], 1, "{c}");
    }
    assert_eq!(st["peers"].as_object().unwrap().len(), 1, "{st}");
    // Before Ready, the status said the pins were still progressing.
    let history = rig.fake.statuses("team-a", "web");
    assert!(
        history
            .iter()
            .any(|s| condition(s, "Reconciling") == Some(("True".into(), "Progressing".into()))),
        "{history:#?}"
    );
    for c in &cids {
        assert_eq!(
            rig.owners(c).await.unwrap(),
            ["pinset:team-a/web"],
            "owner of {c}"
        );
    }
    // One Event for the apply, however often the status was refreshed.
    let events = rig.fake.events("team-a", "web");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].0.as_str(), events[0].1.as_str()),
        ("Normal", "Applied")
    );
    assert!(events[0].2.contains("+3"), "{events:?}");
    rig.stop().await;
}

#[tokio::test]
async fn a_spec_change_is_a_new_generation_and_only_the_difference_is_applied() {
    let rig = Rig::start().await;
    let cids = seeds("change", 4);
    rig.create("team-a", "web", pins(&cids[..3]), json!({}))
        .await;
    rig.until_condition("team-a", "web", 1, "Ready", ("True", "Succeeded"))
        .await;
    let kubo = &rig.fleet.nodes[0].kubo;
    let adds = |cid: &str| {
        kubo.calls()
            .iter()
            .filter(|c| c.endpoint == "pin/add" && c.args.first().map(String::as_str) == Some(cid))
            .count()
    };
    assert_eq!(adds(&cids[1]), 1);

    // a, b, c → b, c, d (prune on: a's ownership goes).
    rig.merge("team-a", "web", json!({"spec": pins(&cids[1..])}))
        .await;
    let o = rig
        .until_condition("team-a", "web", 2, "Ready", ("True", "Succeeded"))
        .await;
    assert_eq!(o["status"]["summary"]["total"], 3);
    assert!(rig.owners(&cids[0]).await.is_none(), "a stays pinned");
    assert!(rig.owners(&cids[3]).await.is_some(), "d is not pinned");
    // b and c were not pinned again.
    assert_eq!(adds(&cids[1]), 1);
    assert_eq!(adds(&cids[2]), 1);
    rig.stop().await;
}

#[tokio::test]
async fn a_deleted_pinset_releases_its_pins_then_its_finalizer() {
    let rig = Rig::start().await;
    let cids = seeds("delete", 2);
    rig.create(
        "team-a",
        "gone",
        pins(&cids),
        json!({"pinfleet.io/force-prune": "true"}),
    )
    .await;
    rig.until_condition("team-a", "gone", 1, "Ready", ("True", "Succeeded"))
        .await;
    rig.delete("team-a", "gone").await;
    eventually("the object to be gone", || async {
        rig.fake.object("team-a", "gone").is_none().then_some(())
    })
    .await;
    for c in &cids {
        assert!(rig.owners(c).await.is_none(), "{c} is still pinned");
    }
    assert!(
        recorded_at(&rig.fleet.url, "team-a", "gone")
            .await
            .is_none()
    );
    rig.stop().await;
}

#[tokio::test]
async fn a_guarded_delete_stalls_and_keeps_the_finalizer_until_forced() {
    let rig = Rig::start().await;
    let cids = seeds("guarded", 2);
    rig.create("team-a", "kept", pins(&cids), json!({})).await;
    rig.until_condition("team-a", "kept", 1, "Ready", ("True", "Succeeded"))
        .await;
    rig.delete("team-a", "kept").await;
    let o = rig
        .until_condition("team-a", "kept", 1, "Stalled", ("True", "PruneGuard"))
        .await;
    assert!(o["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(finalizers(&o), ["pinfleet.io/cleanup"]);
    assert_eq!(
        condition(&o["status"], "Ready"),
        Some(("False".into(), "PruneGuard".into()))
    );
    assert!(
        message(&o["status"], "Stalled").contains("refused"),
        "{}",
        o["status"]
    );
    for c in &cids {
        assert!(rig.owners(c).await.is_some(), "the guard let {c} go");
    }
    let reasons = |evs: Vec<(String, String, String)>| {
        evs.into_iter()
            .map(|e| format!("{}/{}", e.0, e.1))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        reasons(rig.fake.events("team-a", "kept")),
        ["Normal/Applied", "Warning/PruneGuard"]
    );
    // The annotation forces the release; then the object goes.
    rig.merge(
        "team-a",
        "kept",
        json!({"metadata": {"annotations": {"pinfleet.io/force-prune": "true"}}}),
    )
    .await;
    eventually("the object to be gone", || async {
        rig.fake.object("team-a", "kept").is_none().then_some(())
    })
    .await;
    for c in &cids {
        assert!(rig.owners(c).await.is_none(), "{c} is still pinned");
    }
    assert_eq!(
        reasons(rig.fake.events("team-a", "kept")),
        ["Normal/Applied", "Warning/PruneGuard", "Normal/Released"]
    );
    rig.stop().await;
}

#[tokio::test]
async fn an_invalid_spec_stalls_with_its_field_path_and_applies_nothing() {
    let rig = Rig::start().await;
    let cids = seeds("invalid", 3);
    rig.create("team-a", "good", pins(&cids[..2]), json!({}))
        .await;
    rig.until_condition("team-a", "good", 1, "Ready", ("True", "Succeeded"))
        .await;
    // A CID the schema takes (a string) but pinfleet does not.
    let mut bad = cids.clone();
    bad.push("not-a-cid".into());
    rig.merge("team-a", "good", json!({"spec": pins(&bad)}))
        .await;
    let o = rig
        .until_condition("team-a", "good", 2, "Stalled", ("True", "ManifestInvalid"))
        .await;
    let m = message(&o["status"], "Stalled");
    assert!(m.contains("spec.pins[3].cid"), "{m}");
    assert_eq!(
        condition(&o["status"], "Ready"),
        Some(("False".into(), "ManifestInvalid".into()))
    );
    // The last good generation's pins stay; the new one is not applied.
    for c in &cids[..2] {
        assert_eq!(rig.owners(c).await.unwrap(), ["pinset:team-a/good"]);
    }
    assert!(rig.owners(&cids[2]).await.is_none());
    let events = rig.fake.events("team-a", "good");
    let last = events.last().unwrap();
    assert_eq!(
        (last.0.as_str(), last.1.as_str()),
        ("Warning", "ManifestInvalid")
    );
    assert!(last.2.contains("spec.pins[3].cid"), "{last:?}");

    // Never valid: nothing reaches the cluster.
    rig.create(
        "team-a",
        "never",
        pins(&["bafy-nope".to_string()]),
        json!({}),
    )
    .await;
    let o = rig
        .until_condition("team-a", "never", 1, "Stalled", ("True", "ManifestInvalid"))
        .await;
    assert!(message(&o["status"], "Stalled").contains("spec.pins[0].cid"));
    assert!(
        recorded_at(&rig.fleet.url, "team-a", "never")
            .await
            .is_none()
    );
    rig.stop().await;
}

#[tokio::test]
async fn a_suspended_pinset_applies_nothing() {
    let rig = Rig::start().await;
    let cids = seeds("suspended", 2);
    let mut spec = pins(&cids);
    spec["suspend"] = json!(true);
    rig.create("team-a", "paused", spec, json!({})).await;
    let o = rig
        .until_condition("team-a", "paused", 1, "Ready", ("True", "Suspended"))
        .await;
    assert!(message(&o["status"], "Ready").contains("suspend"));
    assert!(
        recorded_at(&rig.fleet.url, "team-a", "paused")
            .await
            .is_none()
    );
    for c in &cids {
        assert!(rig.owners(c).await.is_none());
    }
    rig.stop().await;
}

/// A TCP forwarder to `upstream` that refuses connections while down, and
/// counts the connections it forwarded.
struct Proxy {
    url: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    forwarded: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        use std::sync::atomic::Ordering;
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", std_listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_string();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let forwarded = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (flag, count) = (up.clone(), forwarded.clone());
        tokio::spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                if !flag.load(Ordering::SeqCst) {
                    drop(conn);
                    continue;
                }
                count.fetch_add(1, Ordering::SeqCst);
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut conn, &mut out).await;
                    }
                });
            }
        });
        Proxy { url, up, forwarded }
    }
}

#[tokio::test]
async fn an_unreachable_cluster_is_cluster_unavailable_and_retried() {
    let proxy = std::sync::Mutex::new(None::<Proxy>);
    let via = |upstream: &str| {
        let p = Proxy::start(upstream);
        let url = p.url.clone();
        *proxy.lock().unwrap() = Some(p);
        url
    };
    let rig = Rig::start_with(options(), Some(&via)).await;
    let proxy = proxy.lock().unwrap().take().unwrap();
    let cids = seeds("unreachable", 2);
    rig.create("team-a", "later", pins(&cids), json!({})).await;
    let o = rig
        .until_condition(
            "team-a",
            "later",
            1,
            "Stalled",
            ("True", "ClusterUnavailable"),
        )
        .await;
    assert_eq!(finalizers(&o), ["pinfleet.io/cleanup"]);
    assert!(rig.owners(&cids[0]).await.is_none());
    eventually("a ClusterUnavailable event", || async {
        rig.fake
            .events("team-a", "later")
            .iter()
            .any(|e| e.0 == "Warning" && e.1 == "ClusterUnavailable")
            .then_some(())
    })
    .await;
    // Retried on its own (backoff), without any change to the object.
    proxy.up.store(true, std::sync::atomic::Ordering::SeqCst);
    rig.until_condition("team-a", "later", 1, "Ready", ("True", "Succeeded"))
        .await;
    for c in &cids {
        assert!(rig.owners(c).await.is_some());
    }
    rig.stop().await;
}

#[tokio::test]
async fn pinsets_of_two_namespaces_never_touch_each_others_pins() {
    let rig = Rig::start().await;
    let cids = seeds("tenants", 3);
    // Same name in both namespaces; one CID shared.
    rig.create(
        "tenant-a",
        "site",
        pins(&cids[..2]),
        json!({"pinfleet.io/force-prune": "true"}),
    )
    .await;
    rig.create("tenant-b", "site", pins(&cids[1..]), json!({}))
        .await;
    rig.until_condition("tenant-a", "site", 1, "Ready", ("True", "Succeeded"))
        .await;
    let b = rig
        .until_condition("tenant-b", "site", 1, "Ready", ("True", "Succeeded"))
        .await;
    assert_eq!(b["status"]["summary"]["total"], 2);
    assert_eq!(
        rig.owners(&cids[1]).await.unwrap(),
        ["pinset:tenant-a/site", "pinset:tenant-b/site"]
    );
    // Deleting tenant-a's PinSet leaves tenant-b's pins.
    rig.delete("tenant-a", "site").await;
    eventually("tenant-a's object to be gone", || async {
        rig.fake.object("tenant-a", "site").is_none().then_some(())
    })
    .await;
    assert!(rig.owners(&cids[0]).await.is_none());
    assert_eq!(
        rig.owners(&cids[1]).await.unwrap(),
        ["pinset:tenant-b/site"]
    );
    assert_eq!(
        rig.owners(&cids[2]).await.unwrap(),
        ["pinset:tenant-b/site"]
    );
    let b = rig.fake.object("tenant-b", "site").unwrap();
    assert_eq!(
        condition(&b["status"], "Ready"),
        Some(("True".into(), "Succeeded".into()))
    );
    rig.stop().await;
}

#[tokio::test]
async fn a_watch_restart_after_410_gone_loses_no_event() {
    let rig = Rig::start().await;
    let cids = seeds("gone", 3);
    rig.create("team-a", "first", pins(&cids[..1]), json!({}))
        .await;
    rig.until_condition("team-a", "first", 1, "Ready", ("True", "Succeeded"))
        .await;
    let (lists, _) = rig.fake.requests();
    // The watch ends with 410 and its resourceVersion is stale; the changes
    // made meanwhile must still be seen (relist, then watch again).
    rig.fake.expire_watches();
    rig.merge("team-a", "first", json!({"spec": pins(&cids[..2])}))
        .await;
    rig.create("team-a", "second", pins(&cids[2..]), json!({}))
        .await;
    rig.until_condition("team-a", "first", 2, "Ready", ("True", "Succeeded"))
        .await;
    rig.until_condition("team-a", "second", 1, "Ready", ("True", "Succeeded"))
        .await;
    assert!(rig.fake.requests().0 > lists, "no relist after 410");
    for c in &cids {
        assert!(rig.owners(c).await.is_some(), "{c} is not pinned");
    }
    // Watching goes on after the restart.
    rig.create("team-a", "third", pins(&cids[..1]), json!({}))
        .await;
    rig.until_condition("team-a", "third", 1, "Ready", ("True", "Succeeded"))
        .await;
    rig.stop().await;
}

fn controller_cli(args: &[&str], kubeconfig: &std::path::Path) -> (Option<i32>, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_pinfleet"))
        .arg("controller")
        .args(args)
        .args(["--host", "http://127.0.0.1:9"])
        .env_remove("PINFLEET_HOST")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("run pinfleet");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn the_cli_takes_the_kube_source_and_says_what_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-kubeconfig");
    let (code, err) = controller_cli(&["--source", "kube", "--once"], &missing);
    assert_eq!(code, Some(2));
    assert!(err.contains("not for the kube source"), "{err}");
    let (code, err) = controller_cli(&["--source", "kube:Not_A_Label"], &missing);
    assert_eq!(code, Some(2));
    assert!(err.contains("namespace"), "{err}");
    let source = format!("dir:{}", dir.path().display());
    let (code, err) = controller_cli(&["--source", &source, "--namespace", "a"], &missing);
    assert_eq!(code, Some(2));
    assert!(err.contains("are for the kube source"), "{err}");
    // No in-cluster configuration and no kubeconfig: said before anything runs.
    let (code, err) = controller_cli(&["--source", "kube", "--namespace", "a"], &missing);
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot build a kubernetes client"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_runs_the_kube_source_from_its_config() {
    let fake = FakeKube::start().await.unwrap();
    let (_tmp, mut child, info) = daemon_with_kube_source(&fake, "kube:daemon");
    let cids = seeds("daemon", 2);
    let api: Api<PinSet> = Api::namespaced(fake.client(), "daemon");
    for (ns, name) in [("daemon", "watched"), ("elsewhere", "ignored")] {
        let ps: PinSet = serde_json::from_value(json!({
            "apiVersion": "pinfleet.io/v1alpha1", "kind": "PinSet",
            "metadata": {"name": name, "namespace": ns},
            "spec": pins(&cids),
        }))
        .unwrap();
        Api::<PinSet>::namespaced(fake.client(), ns)
            .create(&PostParams::default(), &ps)
            .await
            .unwrap();
    }
    let recorded = eventually("the daemon to apply daemon/watched", || async {
        recorded_at(&info.api, "daemon", "watched").await
    })
    .await;
    assert_eq!(recorded["source"], "kube:daemon/watched");
    let o = eventually("the status of daemon/watched", || async {
        let o = fake.object("daemon", "watched")?;
        (o["status"]["observedGeneration"] == 1).then_some(o)
    })
    .await;
    assert_eq!(finalizers(&o), ["pinfleet.io/cleanup"]);
    assert!(api.get("watched").await.is_ok());
    // Only its namespace is watched.
    let other = fake.object("elsewhere", "ignored").unwrap();
    assert!(other["status"].is_null() && finalizers(&other).is_empty());
    assert!(
        recorded_at(&info.api, "elsewhere", "ignored")
            .await
            .is_none()
    );
    crate::support::stop_daemon(&mut child);
}

fn replica(identity: &str) -> KubeOptions {
    KubeOptions {
        lease: Some(pinfleet::controller::LeaseOptions {
            namespace: "pinfleet-system".into(),
            name: "pinfleet-controller".into(),
            identity: identity.into(),
            duration: Duration::from_secs(2),
            renew: Duration::from_millis(200),
            renew_deadline: Duration::from_secs(1),
            retry: Duration::from_millis(200),
        }),
        ..options()
    }
}

/// Runs `f` while another holder, `intruder`, renews the lease every 100 ms.
async fn while_intruding<T>(fake: &FakeKube, f: impl std::future::Future<Output = T>) -> T {
    tokio::pin!(f);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            out = &mut f => return out,
            _ = tick.tick() => {
                fake.renew_lease_as("pinfleet-system", "pinfleet-controller", "intruder");
            }
        }
    }
}

/// Waits until the fake served `n` more Lease reads than `since`.
async fn lease_reads_after(fake: &FakeKube, since: usize, n: usize) {
    eventually(&format!("{n} lease reads"), || async {
        (fake.lease_reads() >= since + n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn one_replica_acts_while_it_holds_the_lease_and_stops_when_it_is_lost() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(1, dir.path(), Duration::from_millis(200)).await;
    let fake = FakeKube::start().await.unwrap();
    let cancel = CancellationToken::new();
    let holder = || async {
        fake.lease("pinfleet-system", "pinfleet-controller")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
    };
    let mut proxies = Vec::new();
    for id in ["replica-a", "replica-b"] {
        let proxy = Proxy::start(&fleet.url);
        proxy.up.store(true, Ordering::SeqCst);
        tokio::spawn(run_kube(
            Client::new(&proxy.url).unwrap(),
            fake.client(),
            replica(id),
            cancel.clone(),
        ));
        proxies.push(proxy);
        if id == "replica-a" {
            eventually("replica-a to take the lease", || async {
                (holder().await? == "replica-a").then_some(())
            })
            .await;
        }
    }
    let cids = seeds("lease", 2);
    let api: Api<PinSet> = Api::namespaced(fake.client(), "team-a");
    let create = |name: &'static str| {
        let ps: PinSet = serde_json::from_value(json!({
            "apiVersion": "pinfleet.io/v1alpha1", "kind": "PinSet",
            "metadata": {"name": name, "namespace": "team-a"},
            "spec": pins(&cids),
        }))
        .unwrap();
        let api = api.clone();
        async move { api.create(&PostParams::default(), &ps).await.unwrap() }
    };
    create("first").await;
    let ready = |name: &'static str| {
        let fake = &fake;
        async move {
            eventually(&format!("{name} to be Ready"), || async {
                let o = fake.object("team-a", name)?;
                (condition(&o["status"], "Ready")? == ("True".into(), "Succeeded".into()))
                    .then_some(())
            })
            .await
        }
    };
    ready("first").await;
    // Replica b has looked at the lease many times meanwhile and never
    // reached the cluster.
    lease_reads_after(&fake, fake.lease_reads(), 10).await;
    assert_eq!(holder().await.unwrap(), "replica-a");
    assert!(proxies[0].forwarded.load(Ordering::SeqCst) > 0);
    assert_eq!(proxies[1].forwarded.load(Ordering::SeqCst), 0);

    // Another holder renews the lease: replica a stops acting, b does not
    // start; a PinSet created meanwhile is left alone.
    while_intruding(&fake, async {
        lease_reads_after(&fake, fake.lease_reads(), 15).await;
        create("late").await;
        lease_reads_after(&fake, fake.lease_reads(), 15).await;
    })
    .await;
    let late = fake.object("team-a", "late").unwrap();
    assert!(
        finalizers(&late).is_empty() && late["status"].is_null(),
        "{late}"
    );
    assert!(recorded_at(&fleet.url, "team-a", "late").await.is_none());

    // The intruder goes quiet: its lease expires and a replica takes over.
    ready("late").await;
    let lease = fake
        .lease("pinfleet-system", "pinfleet-controller")
        .unwrap();
    assert!(
        ["replica-a", "replica-b"].contains(&lease["spec"]["holderIdentity"].as_str().unwrap()),
        "{lease}"
    );
    assert!(
        lease["spec"]["leaseTransitions"].as_i64().unwrap() >= 1,
        "{lease}"
    );
    cancel.cancel();
    fleet.stop().await;
}

#[tokio::test]
async fn a_replica_that_shuts_down_releases_the_lease_to_the_next_at_once() {
    let fake = FakeKube::start().await.unwrap();
    let holder = || {
        fake.lease("pinfleet-system", "pinfleet-controller")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
    };
    // A lease far longer than the test: b may only take it if a gives it up.
    let long = |id: &str| {
        let mut o = replica(id);
        if let Some(l) = o.lease.as_mut() {
            l.duration = Duration::from_secs(120);
            l.renew_deadline = Duration::from_secs(60);
        }
        o
    };
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    // No PinSets: the replicas never reach the cluster.
    let a = tokio::spawn(run_kube(
        Client::new("http://127.0.0.1:9").unwrap(),
        fake.client(),
        long("replica-a"),
        stop_a.clone(),
    ));
    eventually("replica-a to take the lease", || async {
        (holder()? == "replica-a").then_some(())
    })
    .await;
    tokio::spawn(run_kube(
        Client::new("http://127.0.0.1:9").unwrap(),
        fake.client(),
        long("replica-b"),
        stop_b.clone(),
    ));
    lease_reads_after(&fake, fake.lease_reads(), 5).await;
    assert_eq!(holder().unwrap(), "replica-a", "b waits while a holds it");

    let asked = std::time::Instant::now();
    stop_a.cancel();
    tokio::time::timeout(Duration::from_secs(10), a)
        .await
        .expect("replica-a stops")
        .unwrap();
    eventually("replica-b to take the released lease", || async {
        (holder()? == "replica-b").then_some(())
    })
    .await;
    assert!(
        asked.elapsed() < Duration::from_secs(30),
        "taken long before the 120 s lease expired: {:?}",
        asked.elapsed()
    );
    let lease = fake
        .lease("pinfleet-system", "pinfleet-controller")
        .unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease}");
    stop_b.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_now_reaches_a_kube_pinset_through_the_daemon() {
    let fake = FakeKube::start().await.unwrap();
    let (_tmp, mut child, info) = daemon_with_kube_source(&fake, "kube:now");
    let ps: PinSet = serde_json::from_value(json!({
        "apiVersion": "pinfleet.io/v1alpha1", "kind": "PinSet",
        "metadata": {"name": "web", "namespace": "now"},
        "spec": pins(&seeds("now", 2)),
    }))
    .unwrap();
    Api::<PinSet>::namespaced(fake.client(), "now")
        .create(&PostParams::default(), &ps)
        .await
        .unwrap();
    eventually("the daemon to apply now/web", || async {
        recorded_at(&info.api, "now", "web").await
    })
    .await;
    let client = Client::new(&info.api).unwrap();
    let id = pinfleet::manifest::PinSetId::new("now", "web");
    let answer = client
        .reconcile(&id, Some(Duration::from_secs(20)))
        .await
        .expect("the kube source takes the request");
    assert_eq!(answer.source, "kube:now/web");
    assert!(answer.handled, "{answer:?}");
    let outcome = answer.outcome.expect("an outcome");
    assert!(outcome.healthy, "{outcome:?}");
    // A second request is served too (a new ticket, handled again).
    let again = client
        .reconcile(&id, Some(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(again.handled && again.ticket > answer.ticket, "{again:?}");
    crate::support::stop_daemon(&mut child);
}

/// The shipped Deployment runs `controller --source kube --listen ADDR`
/// (its probe port): the standalone kube controller takes `--listen`,
/// applies PinSet objects, and on loopback serves reconcile-now for them.
#[tokio::test(flavor = "multi_thread")]
async fn the_standalone_kube_controller_listens_and_serves_reconcile_now() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(1, dir.path(), Duration::from_millis(200)).await;
    let fake = FakeKube::start().await.unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pinfleet"))
        .args(["controller", "--source", "kube", "--namespace", "solo"])
        .args(["--listen", "127.0.0.1:0", "--concurrency", "4"])
        .args(["--host", &fleet.url])
        .env_remove("PINFLEET_HOST")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("KUBECONFIG", &kubeconfig)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Killed if the test fails before it is stopped.
    let mut child = crate::support::KillOnDrop(child);
    let stderr = child.0.stderr.take().unwrap();
    let url = tokio::task::spawn_blocking(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| {
                l.strip_prefix("reconcile-now on ")
                    .and_then(|u| u.split("/pinsets/").next().map(str::to_owned))
            })
    })
    .await
    .unwrap()
    .expect("the reconcile-now address on stderr");
    let cids = seeds("solo", 2);
    let ps: PinSet = serde_json::from_value(json!({
        "apiVersion": "pinfleet.io/v1alpha1", "kind": "PinSet",
        "metadata": {"name": "web", "namespace": "solo"},
        "spec": pins(&cids),
    }))
    .unwrap();
    Api::<PinSet>::namespaced(fake.client(), "solo")
        .create(&PostParams::default(), &ps)
        .await
        .unwrap();
    eventually("the controller to apply solo/web", || async {
        recorded_at(&fleet.url, "solo", "web").await
    })
    .await;
    let id = pinfleet::manifest::PinSetId::new("solo", "web");
    let answer = Client::new(&url)
        .unwrap()
        .reconcile(&id, Some(Duration::from_secs(20)))
        .await
        .expect("the controller takes the request");
    assert_eq!(answer.source, "kube:solo/web");
    assert!(answer.handled, "{answer:?}");
    assert!(answer.outcome.expect("an outcome").healthy);
    crate::support::stop_daemon(&mut child.0);
}

/// A daemon whose `[controller] sources` is `source`, with `KUBECONFIG`
/// pointing at `fake`; running when this returns (its directory lives as
/// long as the returned temporary directory).
fn daemon_with_kube_source(
    fake: &FakeKube,
    source: &str,
) -> (
    tempfile::TempDir,
    std::process::Child,
    pinfleet::daemon::RunInfo,
) {
    let tmp = tempfile::tempdir().unwrap();
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    let d = tmp.path().join("peer");
    crate::support::init_peer(&d);
    let mut child = crate::support::spawn_daemon(
        &d,
        &[
            ("PINFLEET_CONTROLLER_SOURCES", source),
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
        ],
    );
    let info = crate::support::wait_running(&d, &mut child);
    (tmp, child, info)
}
