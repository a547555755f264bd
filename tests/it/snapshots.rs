//! Snapshots (insta) of what users and clients read: the status, headers
//! and body of every REST route, and the CLI's tables and JSON. Any change
//! of a field name, field order, JSON type, status code, header or table
//! layout fails here; `INSTA_UPDATE=always cargo test --locked --test it
//! snapshots::` rewrites the files under `tests/it/snapshots/` for review.
//!
//! Bodies are kept verbatim (JSON is only re-indented, never re-ordered;
//! metric samples are sorted within their family, whose order follows a
//! hash map); what differs between runs is replaced before comparing: peer
//! ids (by stand-ins of the same width, so tables keep their layout), URLs
//! and ports, temporary paths, timestamps, and the revisions of a `dir:`
//! source (they digest its absolute path). Each test works on a peer of its
//! own and waits on conditions (pins pinned, unpins done), never a sleep,
//! so the state it snapshots is the same on every run.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use pinfleet::allocator::informer::InformerConfig;
use pinfleet::api::ApiState;
use pinfleet::controller::ReconcileRequests;
use pinfleet::ipfs::embedded::{EmbeddedConfig, EmbeddedNode};
use pinfleet::ipfs::{IpfsBackend, KuboClient};
use pinfleet::manifest::ReplicationFactors;
use pinfleet::source::webhook::{Receiver, ReceiverKind};
use pinfleet::tracker::{StatusService, TrackerConfig};
use pinfleet::wire::{GlobalPinInfo, TrackerStatus};
use reqwest::Method;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::status::{Fleet, eventually};
use crate::support::{cid_v0, cid_v1, pinset_yaml, write_tree};

/// The source a fake controller of the REST fleet runs.
const CONTROLLER_SOURCE: &str = "dir:/srv/snapshots";
const HOOK_SECRET: &[u8] = b"snapshot-secret";

/// Replaces what varies between runs. `literals` are exact strings (peer
/// ids, URLs, paths) with their stand-ins, longest first; then insta's
/// regex filters take timestamps, other peer ids and ports.
#[derive(Clone)]
struct Scrub {
    literals: Vec<(String, String)>,
    /// Regex filters of this snapshot only (pattern, replacement).
    extra: Vec<(&'static str, &'static str)>,
}

impl Scrub {
    fn new() -> Self {
        Self {
            literals: Vec::new(),
            extra: Vec::new(),
        }
    }

    fn literal(&mut self, value: impl Into<String>, stand_in: &str) {
        let value = value.into();
        if !value.is_empty() {
            self.literals.push((value, stand_in.to_string()));
            self.literals
                .sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
        }
    }

    /// A stand-in as wide as `value` (a peer id: fixed width), so that
    /// table columns stay aligned as printed.
    fn peer(&mut self, value: impl Into<String>, label: &str) {
        let value = value.into();
        let stand_in = format!("{label:_<width$}", width = value.len());
        self.literal(value, &stand_in);
    }

    fn apply(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (value, stand_in) in &self.literals {
            out = out.replace(value, stand_in);
        }
        out
    }

    /// insta settings with the filters every snapshot of this module uses.
    fn settings(&self) -> insta::Settings {
        let mut s = insta::Settings::clone_current();
        s.set_prepend_module_to_snapshot(false);
        s.set_snapshot_path("snapshots");
        s.add_filter(
            r"20\d\d-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)",
            "[TIME]",
        );
        s.add_filter(r"12D3KooW[1-9A-HJ-NP-Za-km-z]{44}", "[PEER-ID]");
        s.add_filter(r"/tcp/\d+", "/tcp/[PORT]");
        s.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
        for (pattern, replacement) in &self.extra {
            s.add_filter(pattern, *replacement);
        }
        s
    }

    fn check(&self, name: &str, text: &str) {
        let text = self.apply(text);
        self.settings().bind(|| insta::assert_snapshot!(name, text));
    }
}

/// Compact JSON re-indented, keys in the order they were sent.
fn indent_json(json: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    let raw: Vec<char> = json.chars().collect();
    let mut i = 0;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    while i < raw.len() {
        let c = raw[i];
        i += 1;
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        match c {
            c if c.is_ascii_whitespace() => {}
            '"' => {
                in_str = true;
                out.push(c);
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                let mut j = i;
                while j < raw.len() && raw[j].is_ascii_whitespace() {
                    j += 1;
                }
                if raw.get(j) == Some(&close) {
                    out.push(c);
                    out.push(close);
                    i = j + 1;
                } else {
                    out.push(c);
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c => out.push(c),
        }
    }
    out
}

/// A body for a snapshot: one JSON document re-indented, NDJSON line by
/// line, anything else as it came.
fn show_body(body: &str) -> String {
    if body.is_empty() {
        return "(empty body)".into();
    }
    let is_json = |s: &str| serde_json::from_str::<serde_json::Value>(s).is_ok();
    if body.ends_with('\n') && body.lines().all(|l| !l.is_empty() && is_json(l)) {
        let lines: Vec<String> = body
            .lines()
            .enumerate()
            .map(|(n, l)| format!("--- ndjson line {}\n{}", n + 1, indent_json(l)))
            .collect();
        return lines.join("\n");
    }
    if is_json(body) {
        return format!("--- json\n{}", indent_json(body));
    }
    format!("--- text\n{body}")
}

/// Status line, the headers clients rely on, and the body.
async fn show(resp: reqwest::Response) -> String {
    let mut out = format!("{}\n", resp.status());
    for name in [
        "content-type",
        "trailer",
        "x-pinfleet-stale",
        "allow",
        "location",
    ] {
        if let Some(v) = resp.headers().get(name) {
            out.push_str(&format!("{name}: {}\n", v.to_str().unwrap()));
        }
    }
    let body = resp.text().await.unwrap();
    out.push_str(&show_body(&body));
    out
}

/// `pinfleet args…` as the snapshot shows it: the command, exit code,
/// stdout and stderr.
fn show_cli(args: &[&str], o: &Output) -> String {
    format!(
        "$ pinfleet {}\nexit: {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        o.status.code().map_or("signal".into(), |c| c.to_string()),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The metrics body with the samples of each family sorted (their order
/// follows a hash map) and the values that depend on timing (applied
/// timestamps, Raft indexes and terms, reconcile durations) replaced.
fn sorted_metrics(body: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut samples: Vec<String> = Vec::new();
    for line in body.lines() {
        if line.starts_with('#') {
            samples.sort();
            out.append(&mut samples);
            out.push(line.to_string());
        } else if let Some(name) = [
            "pinfleet_raft_last_log_index",
            "pinfleet_raft_applied_index",
            "pinfleet_raft_term",
            "pinfleet_raft_leader_changes_total",
        ]
        .into_iter()
        .find(|n| line.starts_with(&format!("{n} ")))
        {
            // How many entries the setup took depends on group commit; the
            // term and elections on timing.
            samples.push(format!("{name} [INDEX]"));
        } else if line.starts_with("pinfleet_reconcile_duration_seconds") {
            // Which buckets a reconcile falls in depends on how long it took.
            let (series, _) = line.rsplit_once(' ').unwrap();
            samples.push(format!("{series} [OBSERVED]"));
        } else if line.starts_with("pinfleet_pinset_applied_timestamp_seconds") {
            let (series, _) = line.rsplit_once(' ').unwrap();
            samples.push(format!("{series} [TIMESTAMP]"));
        } else {
            samples.push(line.to_string());
        }
    }
    samples.sort();
    out.append(&mut samples);
    out.join("\n")
}

struct Rest<'a> {
    fleet: &'a Fleet,
    scrub: &'a Scrub,
    http: reqwest::Client,
}

impl Rest<'_> {
    async fn send(&self, method: Method, path: &str, body: Option<String>) -> reqwest::Response {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.fleet.url));
        if let Some(b) = body {
            req = req.body(b);
        }
        req.send().await.unwrap()
    }

    /// Snapshots `method path` (with `body`) under `name`.
    async fn snap(&self, name: &str, method: Method, path: &str, body: Option<String>) {
        let shown = format!(
            "{method} {path}\n{}",
            show(self.send(method.clone(), path, body).await).await
        );
        self.scrub.check(name, &shown);
    }

    async fn get(&self, name: &str, path: &str) {
        self.snap(name, Method::GET, path, None).await;
    }
}

/// Waits until every pin of the fleet's state is pinned on every peer.
async fn all_pinned(fleet: &Fleet, n: usize) {
    eventually("every pin pinned", || async {
        let (code, body) = fleet.get("/pins").await;
        if code == reqwest::StatusCode::NO_CONTENT {
            return (n == 0).then_some(());
        }
        let infos: Vec<GlobalPinInfo> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (infos.len() == n
            && infos.iter().all(|i| {
                i.peer_map
                    .values()
                    .all(|p| p.status == TrackerStatus::Pinned)
            }))
        .then_some(())
    })
    .await;
}

fn fleet_scrub(fleet: &Fleet) -> Scrub {
    let mut scrub = Scrub::new();
    scrub.peer(fleet.id(0), "[PEER0]");
    scrub.literal(fleet.url.clone(), "[API]");
    scrub.literal(fleet.nodes[0].kubo.url(), "[KUBO]");
    scrub
}

/// A one-peer fleet (one peer, so maps keyed by peer id have one key and a
/// stable order) on a mock Kubo with a fixed peer id, registered as the
/// peer's IPFS node; `configure` adjusts its API and `extra` routes go
/// beside it. Returns the peer's status service for [`start_informer`].
async fn snapshot_fleet(
    root: &Path,
    configure: impl FnOnce(&mut ApiState),
    extra: Option<axum::Router>,
) -> (Fleet, Arc<StatusService>) {
    let mut status = None;
    let fleet = Fleet::start_with(
        1,
        root,
        Duration::from_secs(60),
        |state| {
            status = state.status.clone();
            configure(state);
        },
        extra,
    )
    .await;
    // The API's IPFS node is peer 0's mock Kubo (see `Fleet::start_with`).
    fleet.nodes[0].kubo.set_peer_id("QmSnapshotMockKuboPeerId");
    (fleet, status.unwrap())
}

/// Starts the informer a daemon runs (so that pins with a replication
/// factor get allocated), until the returned token is cancelled. Tests
/// start it after their pins by hand are written, so that those answers
/// show the pins before allocation on every run.
fn start_informer(fleet: &Fleet, status: &StatusService) -> CancellationToken {
    let backend = KuboClient::new(fleet.nodes[0].kubo.url(), Duration::from_secs(5)).unwrap();
    let mut informer = InformerConfig::new(ReplicationFactors { min: -1, max: -1 });
    informer.interval = Duration::from_millis(200);
    informer.check_interval = Duration::from_millis(100);
    let cancel = CancellationToken::new();
    pinfleet::allocator::informer::spawn(
        fleet.nodes[0].peer.node.clone(),
        Arc::new(backend),
        status.tracker().clone(),
        informer,
        cancel.clone(),
        &TaskTracker::new(),
    );
    cancel
}

/// The fleet of [`rest_routes`]: a webhook receiver beside the API and a
/// controller that runs [`CONTROLLER_SOURCE`].
async fn rest_fleet(root: &Path) -> (Fleet, Arc<StatusService>, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel(1);
    let hooks = pinfleet::source::webhook::router(
        vec![Receiver::new("gh", ReceiverKind::GitHub, HOOK_SECRET)],
        tx,
    );
    let (fleet, status) = snapshot_fleet(
        root,
        |state| {
            state.reconcile_now = Some(Arc::new(BTreeMap::from([(
                CONTROLLER_SOURCE.to_string(),
                ReconcileRequests::default(),
            )])));
        },
        Some(hooks),
    )
    .await;
    (fleet, status, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rest_routes() {
    let root = tempfile::tempdir().unwrap();
    let (fleet, status, _hooks) = rest_fleet(root.path()).await;
    let stranger = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_string();
    let mut scrub = fleet_scrub(&fleet);
    scrub.peer(stranger.clone(), "[STRANGER]");
    let api = Rest {
        fleet: &fleet,
        scrub: &scrub,
        http: crate::support::http(),
    };

    // Identity and membership.
    api.get("get_id", "/id").await;
    api.get("get_version", "/version").await;
    api.get("get_health", "/health").await;
    api.get("get_peers", "/peers").await;
    api.snap("delete_peer_invalid", Method::DELETE, "/peers/nope", None)
        .await;
    api.snap(
        "delete_peer_unknown",
        Method::DELETE,
        &format!("/peers/{stranger}"),
        None,
    )
    .await;

    // Empty collections.
    api.get("get_allocations_empty", "/allocations").await;
    api.get("get_pins_empty", "/pins").await;
    api.get("get_pinsets_empty", "/pinsets").await;
    api.get("get_state_export_empty", "/state/export").await;

    // Pins by hand.
    let v0 = cid_v0("snap-by-hand");
    api.snap(
        "post_pin_with_options",
        Method::POST,
        &format!(
            "/pins/{v0}?name=by-hand&replication-min=1&replication-max=1&meta-team=snap&meta-tier=gold&mode=recursive"
        ),
        None,
    )
    .await;
    api.snap(
        "post_pin_invalid_cid",
        Method::POST,
        "/pins/not-a-cid",
        None,
    )
    .await;
    api.snap(
        "post_pin_bad_replication",
        Method::POST,
        &format!("/pins/{v0}?replication-min=3&replication-max=2"),
        None,
    )
    .await;

    let informer = start_informer(&fleet, &status);

    // A PinSet, applied, re-applied, dry-run and guarded.
    let cids: Vec<String> = (0..4).map(|i| cid_v1(&format!("snap-set-{i}"))).collect();
    let put = |query: &str, cids: &[String]| {
        (
            format!("/pinsets/snap/site{query}"),
            Some(pinset_yaml("snap", "site", cids)),
        )
    };
    let (path, body) = put("?revision=r1", &cids[..3]);
    api.snap("put_pinset_created", Method::PUT, &path, body)
        .await;
    let (path, body) = put("?revision=r1", &cids[..3]);
    api.snap("put_pinset_unchanged", Method::PUT, &path, body)
        .await;
    let (path, body) = put("?revision=r2&dryRun=true", &cids);
    api.snap("put_pinset_dry_run", Method::PUT, &path, body)
        .await;
    let (path, body) = put("?revision=r2", &[]);
    api.snap("put_pinset_prune_guard_409", Method::PUT, &path, body)
        .await;
    let bad = "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata: {name: site, namespace: snap}\nspec:\n  pins:\n    - cid: nope\n    - cid: QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG\n      replication: {min: 3, max: 2}\n";
    api.snap(
        "put_pinset_invalid_422",
        Method::PUT,
        "/pinsets/snap/site",
        Some(bad.to_string()),
    )
    .await;
    api.snap(
        "put_pinset_wrong_name_400",
        Method::PUT,
        "/pinsets/snap/other",
        Some(pinset_yaml("snap", "site", &cids[..1])),
    )
    .await;
    // Applied from the controller's source: reconcile-now is queued.
    api.snap(
        "put_pinset_from_source",
        Method::PUT,
        &format!("/pinsets/snap/controlled?source={CONTROLLER_SOURCE}&revision=c1"),
        Some(pinset_yaml("snap", "controlled", &cids[3..])),
    )
    .await;
    all_pinned(&fleet, 5).await;

    api.get("get_pinsets", "/pinsets").await;
    api.get("get_pinset", "/pinsets/snap/site").await;
    api.get("get_pinset_unknown", "/pinsets/snap/nope").await;
    api.get("get_pinset_invalid_name", "/pinsets/snap/Not_A_Name")
        .await;
    api.get("get_allocations", "/allocations").await;
    api.get("get_allocations_filter_pin", "/allocations?filter=pin")
        .await;
    api.get(
        "get_allocations_filter_meta_pin",
        "/allocations?filter=meta-pin",
    )
    .await;
    api.get("get_allocations_filter_bogus", "/allocations?filter=bogus")
        .await;
    api.get("get_allocation_v0", &format!("/allocations/{v0}"))
        .await;
    api.get(
        "get_allocation_unknown",
        &format!("/allocations/{}", cid_v1("snap-never")),
    )
    .await;

    // Statuses (every pin pinned on the one peer).
    api.get("get_pins", "/pins").await;
    api.get("get_pins_filter_pinned", "/pins?filter=pinned")
        .await;
    api.get("get_pins_filter_pin_error", "/pins?filter=pin_error")
        .await;
    api.get("get_pins_local", "/pins?local=true").await;
    api.get("get_pins_cids", &format!("/pins?cids={},{}", cids[0], v0))
        .await;
    api.get("get_pin_status", &format!("/pins/{v0}")).await;
    api.get(
        "get_pin_status_unknown",
        &format!("/pins/{}", cid_v1("snap-never")),
    )
    .await;
    api.snap("post_pins_recover", Method::POST, "/pins/recover", None)
        .await;
    api.snap(
        "post_pin_recover",
        Method::POST,
        &format!("/pins/{v0}/recover"),
        None,
    )
    .await;
    api.get("get_pinset_status", "/pinsets/snap/site/status")
        .await;
    api.get("get_pinset_status_unknown", "/pinsets/snap/nope/status")
        .await;

    // Conditions a controller records, and how they show.
    let report = serde_json::json!({
        "source": CONTROLLER_SOURCE,
        "revision": "c1",
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "Succeeded",
            "message": "applied revision c1", "lastTransitionTime": "2026-01-02T03:04:05Z"
        }],
    });
    api.snap(
        "put_pinset_conditions",
        Method::PUT,
        "/pinsets/snap/controlled/conditions",
        Some(report.to_string()),
    )
    .await;
    api.snap(
        "put_pinset_conditions_invalid",
        Method::PUT,
        "/pinsets/snap/controlled/conditions",
        Some("{\"conditions\": 3}".into()),
    )
    .await;
    api.get(
        "get_pinset_status_with_conditions",
        "/pinsets/snap/controlled/status",
    )
    .await;

    // Reconcile-now: queued for the controller's source, 409 for a PinSet
    // applied by hand, 404 for an unknown one.
    api.snap(
        "post_reconcile_queued_202",
        Method::POST,
        "/pinsets/snap/controlled/reconcile",
        None,
    )
    .await;
    api.snap(
        "post_reconcile_no_controller_409",
        Method::POST,
        "/pinsets/snap/site/reconcile",
        None,
    )
    .await;
    api.snap(
        "post_reconcile_unknown_404",
        Method::POST,
        "/pinsets/snap/nope/reconcile",
        None,
    )
    .await;

    // PATCH: a change, then a stale base revision.
    let patch = |base: &str, rev: &str| {
        serde_json::json!({
            "baseRevision": base,
            "revision": rev,
            "prune": true,
            "pins": 3,
            "options": [{"mode": "recursive", "replication": {"min": 0, "max": 0}}],
            "set": [{"cid": cids[3], "name": "added"}],
            "release": [cids[2]],
        })
        .to_string()
    };
    api.snap(
        "patch_pinset",
        Method::PATCH,
        "/pinsets/snap/site",
        Some(patch("r1", "r2")),
    )
    .await;
    api.snap(
        "patch_pinset_stale_base_412",
        Method::PATCH,
        "/pinsets/snap/site",
        Some(patch("r1", "r3")),
    )
    .await;
    api.snap(
        "patch_pinset_malformed_400",
        Method::PATCH,
        "/pinsets/snap/site",
        Some("{}".into()),
    )
    .await;
    all_pinned(&fleet, 4).await;

    // Unpinning by hand and deleting PinSets.
    api.snap("delete_pin", Method::DELETE, &format!("/pins/{v0}"), None)
        .await;
    api.snap(
        "delete_pin_unknown",
        Method::DELETE,
        &format!("/pins/{}", cid_v1("snap-never")),
        None,
    )
    .await;
    api.get("get_state_export", "/state/export").await;
    api.snap(
        "delete_pinset_prune_guard_409",
        Method::DELETE,
        "/pinsets/snap/site",
        None,
    )
    .await;
    api.snap(
        "delete_pinset_dry_run",
        Method::DELETE,
        "/pinsets/snap/site?force=true&dryRun=true",
        None,
    )
    .await;
    api.snap(
        "delete_pinset",
        Method::DELETE,
        "/pinsets/snap/site?force=true",
        None,
    )
    .await;
    api.snap(
        "delete_pinset_unknown",
        Method::DELETE,
        "/pinsets/snap/site?force=true",
        None,
    )
    .await;
    all_pinned(&fleet, 1).await;

    // Metrics, gc on the mock Kubo, the error shapes of the router itself.
    eventually("released pins unpinned from the mock kubo", || async {
        let (_, body) = fleet.get("/metrics").await;
        let done = body.lines().any(|l| l == "pinfleet_local_pinned 1")
            && body.lines().any(|l| l == "pinfleet_local_pin_queue 0");
        done.then_some(())
    })
    .await;
    let resp = api.send(Method::GET, "/metrics", None).await;
    let head = format!(
        "GET /metrics\n{}\ncontent-type: {}\n--- text\n",
        resp.status(),
        resp.headers()["content-type"].to_str().unwrap()
    );
    let body = resp.text().await.unwrap();
    scrub.check("get_metrics", &format!("{head}{}", sorted_metrics(&body)));
    api.snap("post_ipfs_gc", Method::POST, "/ipfs/gc", None)
        .await;
    api.snap(
        "post_ipfs_gc_local",
        Method::POST,
        "/ipfs/gc?local=true",
        None,
    )
    .await;
    api.get("unknown_route_404", "/no/such/route").await;
    api.snap("method_not_allowed_405", Method::PUT, "/peers", None)
        .await;
    api.snap(
        "post_add_not_multipart",
        Method::POST,
        "/add",
        Some("x".into()),
    )
    .await;

    // Webhook receivers served beside the API.
    let body = r#"{"ref":"refs/heads/main","after":"0123456789abcdef"}"#;
    let sig = crate::webhook::sign(HOOK_SECRET, body.as_bytes());
    for (name, path, signature) in [
        ("post_hook_accepted_202", "/hooks/gh", sig.as_str()),
        ("post_hook_bad_signature_401", "/hooks/gh", "sha256=00"),
        (
            "post_hook_unknown_receiver_404",
            "/hooks/nope",
            sig.as_str(),
        ),
    ] {
        let resp = api
            .http
            .post(format!("{}{path}", fleet.url))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
            .await
            .unwrap();
        scrub.check(name, &format!("POST {path}\n{}", show(resp).await));
    }
    informer.cancel();
    fleet.stop().await;
}

/// Runs `pinfleet args… --host <fleet>` in a working directory of its own
/// (manifests are named by relative paths: the revision digests and the
/// recorded sources name them as given) and snapshots each run.
struct Cli<'a> {
    fleet: &'a Fleet,
    scrub: &'a Scrub,
    dir: &'a Path,
}

impl Cli<'_> {
    async fn run(&self, name: &str, args: &[&str]) -> Output {
        let o = self.fleet.cli_in(self.dir, args).await;
        self.scrub.check(name, &show_cli(args, &o));
        o
    }

    /// A PinSet `snap/site` of `cids`, named `pin-<i>`, in
    /// `manifests/site.yaml`.
    fn write_site(&self, cids: &[String]) {
        let yaml = pinset_yaml("snap", "site", cids);
        write_tree(self.dir, &[("manifests/site.yaml", &yaml)]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_tables() {
    let root = tempfile::tempdir().unwrap();
    let (fleet, status) = snapshot_fleet(root.path(), |_| {}, None).await;
    let work = tempfile::tempdir().unwrap();
    let stranger = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_string();
    let mut scrub = fleet_scrub(&fleet);
    scrub.peer(stranger.clone(), "[STRANGER]");
    scrub.literal(work.path().to_str().unwrap(), "[WORK]");
    let cli = Cli {
        fleet: &fleet,
        scrub: &scrub,
        dir: work.path(),
    };

    cli.run("cli_health", &["health"]).await;
    cli.run("cli_id", &["id"]).await;
    cli.run("cli_id_json", &["id", "--json"]).await;
    cli.run("cli_peers_ls", &["peers", "ls"]).await;
    cli.run("cli_peers_ls_json", &["peers", "ls", "--json"])
        .await;
    cli.run("cli_peers_rm_unknown", &["peers", "rm", &stranger])
        .await;
    cli.run("cli_status_empty", &["status"]).await;
    cli.run("cli_pin_ls_empty", &["pin", "ls"]).await;

    // Pins by hand (answered before the informer allocates them).
    let v0 = cid_v0("snap-cli-by-hand");
    let v1 = cid_v1("snap-cli-by-hand-json");
    let by_hand = [
        "pin",
        "add",
        &v0,
        "--name",
        "by-hand",
        "--replication-min",
        "1",
        "--replication-max",
        "1",
        "--metadata",
        "team=snap",
    ];
    cli.run("cli_pin_add", &by_hand).await;
    cli.run("cli_pin_add_json", &["pin", "add", &v1, "--json"])
        .await;
    cli.run("cli_pin_add_invalid", &["pin", "add", "not-a-cid"])
        .await;
    let informer = start_informer(&fleet, &status);

    // A PinSet: diff, dry run, apply, unchanged, changed.
    let cids: Vec<String> = (0..4).map(|i| cid_v1(&format!("snap-cli-{i}"))).collect();
    cli.write_site(&cids[..3]);
    cli.run("cli_diff_new", &["diff", "manifests"]).await;
    cli.run("cli_apply_dry_run", &["apply", "manifests", "--dry-run"])
        .await;
    cli.run("cli_apply", &["apply", "manifests"]).await;
    all_pinned(&fleet, 5).await;
    cli.run("cli_apply_unchanged", &["apply", "manifests"])
        .await;
    cli.run("cli_diff_unchanged", &["diff", "manifests"]).await;
    cli.write_site(&cids[1..]);
    cli.run("cli_diff_changed", &["diff", "manifests"]).await;
    cli.run("cli_diff_changed_json", &["diff", "manifests", "--json"])
        .await;
    let wait = ["apply", "manifests", "--wait", "--wait-timeout", "30s"];
    cli.run("cli_apply_wait", &wait).await;
    all_pinned(&fleet, 5).await;
    cli.run("cli_apply_json", &["apply", "manifests", "--json"])
        .await;

    // Statuses, pins, recover, export.
    let never = cid_v1("snap-never");
    for (name, args) in [
        ("cli_status", &["status"][..]),
        ("cli_status_json", &["status", "--json"][..]),
        (
            "cli_status_filter_pinned",
            &["status", "--filter", "pinned"][..],
        ),
        (
            "cli_status_filter_error",
            &["status", "--filter", "error"][..],
        ),
        ("cli_status_local", &["status", "--local"][..]),
        ("cli_status_cid", &["status", &v0][..]),
        ("cli_status_cid_json", &["status", &v0, "--json"][..]),
        ("cli_status_cid_unknown", &["status", &never][..]),
        ("cli_status_pinset", &["status", "pinset/snap/site"][..]),
        (
            "cli_status_pinset_json",
            &["status", "pinset/snap/site", "--json"][..],
        ),
        (
            "cli_status_pinset_unknown",
            &["status", "pinset/snap/nope"][..],
        ),
        ("cli_pin_ls", &["pin", "ls"][..]),
        ("cli_pin_ls_cid", &["pin", "ls", &v0][..]),
        ("cli_pin_ls_json", &["pin", "ls", "--json"][..]),
        ("cli_recover_cid", &["recover", &v0][..]),
        ("cli_recover_all", &["recover"][..]),
        ("cli_recover_all_json", &["recover", "--json"][..]),
        (
            "cli_reconcile_no_controller",
            &["reconcile", "pinset/snap/site"][..],
        ),
        (
            "cli_reconcile_unknown",
            &["reconcile", "pinset/snap/nope"][..],
        ),
        ("cli_state_export", &["state", "export"][..]),
    ] {
        cli.run(name, args).await;
    }

    // Shrinking is guarded; so is deleting.
    cli.write_site(&[]);
    let delete = ["delete", "pinset/snap/site"];
    for (name, args) in [
        ("cli_apply_prune_guard", &["apply", "manifests"][..]),
        (
            "cli_apply_prune_guard_json",
            &["apply", "manifests", "--json"][..],
        ),
        ("cli_delete_prune_guard", &delete[..]),
        (
            "cli_delete_dry_run",
            &[&delete[..], &["--force", "--dry-run"]].concat(),
        ),
        (
            "cli_delete_json",
            &[&delete[..], &["--force", "--json"]].concat(),
        ),
        ("cli_delete_unknown", &[&delete[..], &["--force"]].concat()),
        ("cli_pin_rm", &["pin", "rm", &v0][..]),
        ("cli_pin_rm_json", &["pin", "rm", &v1, "--json"][..]),
        ("cli_pin_rm_unknown", &["pin", "rm", &v1][..]),
    ] {
        cli.run(name, args).await;
    }
    all_pinned(&fleet, 0).await;

    // A state file in, dry run first.
    let line = format!(
        "{{\"cid\":\"{}\",\"name\":\"imported\",\"replication_factor_min\":-1,\"replication_factor_max\":-1}}\n",
        cid_v0("snap-cli-imported")
    );
    write_tree(work.path(), &[("state.ndjson", &line)]);
    let import = ["state", "import", "state.ndjson"];
    cli.run(
        "cli_state_import_dry_run",
        &[&import[..], &["--dry-run"]].concat(),
    )
    .await;
    cli.run("cli_state_import", &import).await;

    // A controller over a directory, once: applied, then refused by the
    // prune guard. A dir source's revision digests its absolute path too.
    let mut scrub = scrub.clone();
    scrub
        .extra
        .push((r"sha256:[0-9a-f]{64}", "sha256:[DIR-REVISION]"));
    let cli = Cli {
        scrub: &scrub,
        ..cli
    };
    let ctl = |cids: &[String]| pinset_yaml("ctl", "once", cids);
    write_tree(work.path(), &[("source/ctl.yaml", &ctl(&cids))]);
    let once = ["controller", "--source", "dir:source", "--once"];
    cli.run("cli_controller_once", &once).await;
    write_tree(work.path(), &[("source/ctl.yaml", &ctl(&cids[..1]))]);
    cli.run(
        "cli_controller_once_refused_json",
        &[&once[..], &["--json"]].concat(),
    )
    .await;
    informer.cancel();
    fleet.stop().await;
}

/// One peer whose IPFS node is an embedded node, as a daemon with
/// `backend = "embedded"` runs it: `POST /add` imports into it and the
/// tracker pins the added roots on it.
struct EmbeddedPeer {
    peer: crate::cluster::Peer,
    url: String,
    ipfs_id: String,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl EmbeddedPeer {
    async fn start(root: &Path) -> EmbeddedPeer {
        let peer = crate::cluster::cluster(1, root, 10_000).await.remove(0);
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let ipfs = EmbeddedNode::start(
            EmbeddedConfig::new(&root.join("ipfs"), [3; 32]),
            cancel.clone(),
            &tasks,
        )
        .await
        .unwrap();
        let ipfs_id = ipfs.id().await.unwrap().id;
        let backend: Arc<dyn IpfsBackend> = Arc::new(ipfs);
        pinfleet::ipfs::rpc::serve(&peer.node, Arc::clone(&backend));
        let config = TrackerConfig {
            default_replication: ReplicationFactors { min: -1, max: -1 },
            ..TrackerConfig::default()
        };
        let status = pinfleet::daemon::start_tracking(
            &peer.node,
            Arc::clone(&backend),
            config,
            "p0".into(),
            &cancel,
            &tasks,
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut state = ApiState::new(peer.node.clone(), "0.0.0-it", "p0");
        state.status = Some(status);
        state.ipfs = Some(backend);
        state.upload_dir = root.join("uploads");
        tasks.spawn(pinfleet::api::serve(listener, state, cancel.clone()));
        EmbeddedPeer {
            peer,
            url,
            ipfs_id,
            cancel,
            tasks,
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.peer.stop().await;
    }

    /// Waits until every pin of the state is pinned here.
    async fn all_pinned(&self, n: usize) {
        eventually("every added root pinned", || async {
            let resp = crate::support::http()
                .get(format!("{}/pins", self.url))
                .send()
                .await
                .unwrap();
            let body = resp.text().await.unwrap();
            let pinned = body
                .lines()
                .filter(|l| l.contains("\"status\":\"pinned\""))
                .count();
            (body.lines().count() == n && pinned == n).then_some(())
        })
        .await;
    }
}

/// A file to upload: name and content.
type File<'a> = (&'a str, &'a str);

/// A multipart body of `files`, as Kubo's clients send it.
fn files_form(files: &[File]) -> reqwest::multipart::Form {
    let mut form = reqwest::multipart::Form::new();
    for (name, content) in files {
        let part = reqwest::multipart::Part::text(content.to_string())
            .file_name(name.to_string())
            .mime_str("application/octet-stream")
            .unwrap();
        form = form.part("file", part);
    }
    form
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_and_gc_on_an_embedded_node() {
    let root = tempfile::tempdir().unwrap();
    let peer = EmbeddedPeer::start(root.path()).await;
    let mut scrub = Scrub::new();
    scrub.peer(peer.peer.node.peer_id().to_string(), "[PEER0]");
    scrub.peer(peer.ipfs_id.clone(), "[IPFS0]");
    scrub.literal(peer.url.clone(), "[API]");
    let http = crate::support::http();
    let hello = [("hello.txt", "hello, snapshots\n")];
    let two = [("a.txt", "first file\n"), ("b.txt", "second file\n")];
    let adds: [(&str, &str, &[File]); 5] = [
        ("post_add", "?name=greeting", &hello),
        (
            "post_add_wrapped_v1_array",
            "?wrap-with-directory=true&cid-version=1&stream-channels=false",
            &two,
        ),
        (
            "post_add_no_pin",
            "?no-pin=true&chunker=size-4",
            &[("chunks.txt", "0123456789abcdef")],
        ),
        ("post_add_bad_chunker_400", "?chunker=rabin", &hello),
        ("post_add_two_without_wrap", "", &two),
    ];
    for (name, query, files) in adds {
        let resp = http
            .post(format!("{}/add{query}", peer.url))
            .multipart(files_form(files))
            .send()
            .await
            .unwrap();
        scrub.check(name, &format!("POST /add{query}\n{}", show(resp).await));
    }
    peer.all_pinned(3).await;

    // The CLI's adds: a directory tree, quiet, JSON.
    for (name, args) in [
        ("cli_add_dir", &["add", "examples/quickstart/content"][..]),
        ("cli_add_quiet", &["add", "-q", "examples/small.yaml"][..]),
        (
            "cli_add_json_v1",
            &["add", "--json", "--cid-version", "1", "examples/small.yaml"][..],
        ),
    ] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pinfleet"));
        cmd.args(args)
            .args(["--host", &peer.url])
            .env_remove("PINFLEET_HOST");
        let o = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        scrub.check(name, &show_cli(args, &o));
    }
    peer.all_pinned(6).await;

    // gc removes the blocks nothing pins: those of the no-pin add.
    for (name, path) in [
        ("post_ipfs_gc_embedded", "/ipfs/gc"),
        ("post_ipfs_gc_embedded_again", "/ipfs/gc?local=true"),
    ] {
        let resp = http
            .post(format!("{}{path}", peer.url))
            .send()
            .await
            .unwrap();
        scrub.check(name, &format!("POST {path}\n{}", show(resp).await));
    }
    let resp = crate::support::http()
        .get(format!("{}/id", peer.url))
        .send()
        .await
        .unwrap();
    scrub.check("get_id_embedded", &format!("GET /id\n{}", show(resp).await));
    peer.stop().await;
}

/// What the CLI prints without a cluster: validation, plans, the schema.
#[test]
fn cli_offline() {
    let dir = tempfile::tempdir().unwrap();
    let mut scrub = Scrub::new();
    scrub.literal(dir.path().to_str().unwrap(), "[TMP]");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata: {name: x}\nspec:\n  pins:\n    - cid: nope\n    - cid: QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG\n      replication: {min: 3, max: 2}\n",
    )
    .unwrap();
    let bad = bad.to_str().unwrap();
    let init = dir.path().join("peer");
    let init = init.to_str().unwrap();
    for (name, args) in [
        ("cli_validate_examples", &["validate", "examples/"][..]),
        (
            "cli_validate_examples_json",
            &["validate", "--json", "examples/small.yaml"][..],
        ),
        ("cli_validate_errors", &["validate", bad][..]),
        ("cli_validate_errors_json", &["validate", "--json", bad][..]),
        (
            "cli_validate_unknown_field_json",
            &[
                "validate",
                "--json",
                "tests/fixtures/invalid/unknown-field-nmae.yaml",
            ][..],
        ),
        (
            "cli_validate_unreadable",
            &["validate", "does/not/exist.yaml"][..],
        ),
        (
            "cli_plan",
            &["plan", "examples/", "--state", "examples/state.ndjson"][..],
        ),
        (
            "cli_plan_json",
            &[
                "plan",
                "examples/",
                "--state",
                "examples/state.ndjson",
                "--json",
            ][..],
        ),
        ("cli_plan_no_state", &["plan", "examples/small.yaml"][..]),
        (
            "cli_controller_bad_source",
            &["controller", "--source", "svn:x", "--once"][..],
        ),
        ("cli_init", &["init", "--dir", init][..]),
        ("cli_schema", &["schema"][..]),
    ] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_pinfleet"))
            .args(args)
            .env_remove("PINFLEET_HOST")
            .output()
            .unwrap();
        scrub.check(name, &show_cli(args, &o));
    }
}
