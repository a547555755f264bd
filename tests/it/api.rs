//! The REST API and the CLI against one real in-process peer: a one-peer
//! Raft cluster on disk, served on 127.0.0.1:0.
//!
//! Tests share the peer, so each one works on its own CIDs (seeded by the
//! test's name) and its own PinSets; none waits with a fixed sleep.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use libp2p::identity::Keypair;
use pinfleet::api::{ApiState, serve};
use pinfleet::consensus::{ClusterNode, NodeOptions};
use pinfleet::state::read_state;
use pinfleet::wire::PinRecord;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::support::{cid_v0, cid_v1, repo_path};

const DEADLINE: Duration = Duration::from_secs(30);
/// A small body cap, so that the 413 path is cheap to test.
const MAX_BODY: u64 = 1024 * 1024;

struct Peer {
    url: String,
    /// The first `GET /allocations`, sent before anything was pinned.
    first_allocations: (StatusCode, Option<String>, Option<String>, usize),
}

/// The peer every test of this module talks to, started on first use on a
/// runtime of its own (so it outlives each test's runtime).
fn peer() -> &'static Peer {
    static PEER: OnceLock<Peer> = OnceLock::new();
    PEER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                // Under target/: the process never drops this static peer.
                let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
                let tasks = TaskTracker::new();
                let cancel = CancellationToken::new();
                let opts = NodeOptions::new(
                    dir.path().to_path_buf(),
                    Keypair::generate_ed25519(),
                    [7u8; 32],
                );
                let node = ClusterNode::start(opts, cancel.clone(), &tasks)
                    .await
                    .unwrap();
                node.wait_ready(DEADLINE).await.unwrap();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let url = format!("http://{}", listener.local_addr().unwrap());
                let mut state = ApiState::new(node, "0.0.0-it", "it-peer");
                state.max_body_bytes = MAX_BODY;
                let server = tokio::spawn(serve(listener, state, cancel.clone()));
                let resp = crate::support::http()
                    .get(format!("{url}/allocations"))
                    .send()
                    .await
                    .unwrap();
                let status = resp.status();
                let ctype = header(&resp, "content-type");
                let trailer = header(&resp, "trailer");
                let len = resp.bytes().await.unwrap().len();
                tx.send(Peer {
                    url,
                    first_allocations: (status, ctype, trailer, len),
                })
                .unwrap();
                server.await.unwrap().unwrap();
                drop(dir);
            });
        });
        rx.recv_timeout(DEADLINE * 2)
            .expect("the peer did not start")
    })
}

fn url(path: &str) -> String {
    format!("{}{}", peer().url, path)
}

fn http() -> reqwest::Client {
    crate::support::http()
}

async fn json_of(resp: reqwest::Response) -> Value {
    let text = resp.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"))
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

fn pinset_yaml(ns: &str, name: &str, cids: &[String]) -> String {
    let mut s = format!(
        "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{team: it}}\nspec:\n"
    );
    if cids.is_empty() {
        s.push_str("  pins: []\n");
    } else {
        s.push_str("  pins:\n");
        for (i, c) in cids.iter().enumerate() {
            s.push_str(&format!("    - cid: {c}\n      name: pin-{i}\n"));
        }
    }
    s
}

async fn put_pinset(ns: &str, name: &str, query: &str, body: String) -> reqwest::Response {
    http()
        .put(url(&format!("/pinsets/{ns}/{name}{query}")))
        .body(body)
        .send()
        .await
        .unwrap()
}

fn seeds(test: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| cid_v1(&format!("{test}-{i}"))).collect()
}

#[tokio::test]
async fn id_and_version_speak_ipfs_cluster_json() {
    let resp = http().get(url("/id")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "x-pinfleet-stale"), None);
    let id = json_of(resp).await;
    for field in [
        "id",
        "addresses",
        "cluster_peers",
        "cluster_peers_addresses",
        "version",
        "commit",
        "rpc_protocol_version",
        "error",
        "ipfs",
        "peername",
    ] {
        assert!(id.get(field).is_some(), "missing {field}: {id}");
    }
    let me = id["id"].as_str().unwrap();
    assert_eq!(id["peername"], "it-peer");
    assert_eq!(id["version"], "0.0.0-it");
    assert_eq!(id["error"], "");
    assert_eq!(id["ipfs"]["error"], "no ipfs backend configured");
    assert!(id["ipfs"]["addresses"].is_array());
    assert_eq!(id["cluster_peers"], json!([me]));
    let addrs = id["addresses"].as_array().unwrap();
    assert!(!addrs.is_empty());
    assert!(
        addrs
            .iter()
            .all(|a| a.as_str().unwrap().ends_with(&format!("/p2p/{me}"))),
        "{addrs:?}"
    );

    let resp = http().get(url("/version")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json_of(resp).await, json!({"version": "0.0.0-it"}));

    let resp = http().get(url("/health")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn peers_stream_with_ipfs_cluster_headers() {
    let resp = http().get(url("/peers")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(header(&resp, "trailer").as_deref(), Some("X-Stream-Error"));
    let body = resp.text().await.unwrap();
    let peers: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(peers.len(), 1, "{body}");
    assert_eq!(peers[0]["peername"], "it-peer");
}

#[tokio::test]
async fn empty_collections_answer_204_without_a_body() {
    let (status, ctype, trailer, len) = &peer().first_allocations;
    assert_eq!(*status, StatusCode::NO_CONTENT);
    assert_eq!(ctype.as_deref(), Some("application/json"));
    // hyper drops a `Trailer` header from a response without a body.
    assert_eq!(trailer.as_deref(), None);
    assert_eq!(*len, 0);

    // pinfleet has data pins only: any other type is an empty stream.
    let resp = http()
        .get(url("/allocations?filter=meta-pin"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(resp.bytes().await.unwrap().is_empty());

    let resp = http()
        .get(url("/allocations?filter=bogus"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(resp).await["code"], 400);
}

#[tokio::test]
async fn a_pin_answers_the_cid_as_the_client_wrote_it() {
    let v0 = cid_v0("pin-echo");
    let v1 = cid_v1("pin-echo");
    let resp = http()
        .post(url(&format!(
            "/pins/{v0}?name=echo&replication-min=1&replication-max=2&meta-team=it&mode=recursive"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let pin = json_of(resp).await;
    assert_eq!(pin["cid"], v0.as_str());
    assert_eq!(pin["name"], "echo");
    assert_eq!(pin["type"], "pin");
    assert_eq!(pin["max_depth"], -1);
    assert_eq!(pin["replication_factor_min"], 1);
    assert_eq!(pin["replication_factor_max"], 2);
    assert_eq!(pin["metadata"], json!({"team": "it"}));
    assert_eq!(pin["expire_at"], "0001-01-01T00:00:00Z");
    assert!(pin["owners"].get("api").is_some(), "{pin}");

    let resp = http()
        .get(url(&format!("/allocations/{v0}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json_of(resp).await["cid"], v0.as_str());
    // The same pin asked for by its v1 spelling answers with that spelling.
    let resp = http()
        .get(url(&format!("/allocations/{v1}")))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(resp).await["cid"], v1.as_str());

    // The stream reports it as first written.
    let body = http()
        .get(url("/allocations?filter=pin"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.lines().any(|l| l.contains(&v0)), "{body}");
}

#[tokio::test]
async fn malformed_requests_are_400_and_write_nothing() {
    let resp = http().post(url("/pins/not-a-cid")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let e = json_of(resp).await;
    assert_eq!(e["code"], 400);
    assert!(
        e["message"].as_str().unwrap().contains("invalid CID"),
        "{e}"
    );

    let cid = cid_v1("malformed");
    for query in [
        "replication-min=x",
        "replication-min=3&replication-max=2",
        "expire-at=tomorrow",
        "origins=nope",
    ] {
        let resp = http()
            .post(url(&format!("/pins/{cid}?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(json_of(resp).await["code"], 400);
    }
    let resp = http()
        .get(url(&format!("/allocations/{cid}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        json_of(resp).await,
        json!({"code": 404, "message": "cid not found"})
    );

    // A path that does not decode: axum's rejection, in the JSON shape too.
    let resp = http().post(url("/pins/%FF")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(resp).await["code"], 400);

    let resp = http().get(url("/no/such/route")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(resp).await["code"], 404);
}

#[tokio::test]
async fn pinset_apply_is_idempotent_dry_runs_and_guards_prunes() {
    let cids = seeds("lifecycle", 4);
    let three = cids[..3].to_vec();

    let resp = put_pinset(
        "it",
        "lifecycle",
        "",
        pinset_yaml("it", "lifecycle", &three),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let r = json_of(resp).await;
    assert_eq!(r["pinset"], "it/lifecycle");
    assert_eq!(r["add"], 3);
    assert!(r["entries"].as_u64().unwrap() >= 1, "{r}");

    // Same document again: nothing to do, nothing written.
    let resp = put_pinset(
        "it",
        "lifecycle",
        "",
        pinset_yaml("it", "lifecycle", &three),
    )
    .await;
    let r = json_of(resp).await;
    assert_eq!(
        (r["add"].as_u64(), r["entries"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
    assert_eq!(r["unchanged"], 3);

    // Dry run: reported, not written.
    let resp = put_pinset(
        "it",
        "lifecycle",
        "?dryRun=true",
        pinset_yaml("it", "lifecycle", &cids),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let r = json_of(resp).await;
    assert_eq!(
        (r["add"].as_u64(), r["dryRun"].as_bool()),
        (Some(1), Some(true))
    );
    assert_eq!(r["entries"], 0);
    let resp = http()
        .get(url(&format!("/allocations/{}", cids[3])))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Shrinking to nothing trips the prune guard.
    let resp = put_pinset("it", "lifecycle", "", pinset_yaml("it", "lifecycle", &[])).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let r = json_of(resp).await;
    assert!(
        r["refused"].as_str().unwrap().contains("prune guard"),
        "{r}"
    );
    assert_eq!(r["entries"], 0);
    let resp = http()
        .get(url(&format!("/allocations/{}", cids[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // Forced, it goes through.
    let resp = put_pinset(
        "it",
        "lifecycle",
        "?force=true",
        pinset_yaml("it", "lifecycle", &[]),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let r = json_of(resp).await;
    assert_eq!(
        (r["release"].as_u64(), r["removed"].as_u64()),
        (Some(3), Some(3))
    );
    let resp = http()
        .get(url(&format!("/allocations/{}", cids[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    let sets = json_of(http().get(url("/pinsets")).send().await.unwrap()).await;
    let me = sets
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["namespace"] == "it" && s["name"] == "lifecycle")
        .unwrap_or_else(|| panic!("{sets}"));
    assert_eq!(me["pins"], 0);
    assert_eq!(me["labels"], json!({"team": "it"}));
    assert_eq!(me["source"], "api");
    assert!(me["revision"].as_str().unwrap().starts_with("sha256:"));
    assert!(me["appliedAt"].as_str().unwrap().ends_with('Z'), "{me}");
    let resp = http()
        .get(url("/pinsets/it/lifecycle"))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(resp).await["name"], "lifecycle");
}

#[tokio::test]
async fn pinset_documents_are_checked_before_anything_is_written() {
    let cid = cid_v1("documents");
    // The document must name the PinSet of the path.
    let resp = put_pinset(
        "it",
        "other-name",
        "",
        pinset_yaml("it", "documents", std::slice::from_ref(&cid)),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(resp).await["code"], 400);

    // Invalid manifests: 422 with every problem located.
    let bad = "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata: {name: documents, namespace: it}\nspec:\n  pins:\n    - cid: nope\n";
    let resp = put_pinset("it", "documents", "", bad.to_string()).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let e = json_of(resp).await;
    assert_eq!(e["code"], 422);
    assert_eq!(e["message"], "invalid manifest");
    let first = &e["errors"][0];
    assert_eq!(
        (first["line"].as_u64(), first["col"].as_u64()),
        (Some(6), Some(12)),
        "{e}"
    );
    assert!(
        first["file"].as_str().unwrap().contains("it/documents"),
        "{e}"
    );
    assert!(
        first["message"].as_str().unwrap().contains("invalid CID"),
        "{e}"
    );

    // pinsFrom must be resolved by the client.
    let with_list = format!(
        "{}  pinsFrom:\n    - path: lists/core.txt\n",
        pinset_yaml("it", "documents", std::slice::from_ref(&cid))
    );
    let resp = put_pinset("it", "documents", "", with_list).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Bad options and oversized bodies.
    let resp = put_pinset(
        "it",
        "documents",
        "?maxPruneFraction=2",
        pinset_yaml("it", "documents", &[]),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = put_pinset("it", "documents", "", "#".repeat(MAX_BODY as usize + 1)).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json_of(resp).await["code"], 413);

    let resp = http()
        .get(url(&format!("/allocations/{cid}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = http()
        .get(url("/pinsets/it/documents"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

async fn owners_of(cid: &str) -> Option<Vec<String>> {
    let resp = http()
        .get(url(&format!("/allocations/{cid}")))
        .send()
        .await
        .unwrap();
    if resp.status() == StatusCode::NOT_FOUND {
        return None;
    }
    assert_eq!(resp.status(), StatusCode::OK);
    let pin = json_of(resp).await;
    Some(pin["owners"].as_object().unwrap().keys().cloned().collect())
}

#[tokio::test]
async fn unpin_of_a_cid_pinsets_also_own_is_a_409_naming_them_and_unpins_nothing() {
    let cid = cid_v1("shared");
    for name in ["shared", "shared-too"] {
        let yaml = pinset_yaml("it", name, std::slice::from_ref(&cid));
        let resp = put_pinset("it", name, "", yaml).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = http()
        .post(url(&format!("/pins/{cid}?name=by-hand")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let all = ["api", "pinset:it/shared", "pinset:it/shared-too"];
    assert_eq!(owners_of(&cid).await.unwrap(), all);

    let resp = http()
        .delete(url(&format!("/pins/{cid}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let err = json_of(resp).await;
    assert_eq!(err["code"], 409);
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!(
            "\"{cid}\" is also owned by pinset it/shared, it/shared-too: it stays pinned; \
             remove it from those PinSets, or unpin with force=true as an admin"
        )),
        "{msg}"
    );
    // Nothing written: every owner, the api one included, still holds it.
    assert_eq!(owners_of(&cid).await.unwrap(), all);

    // `force=false` is no force.
    let resp = http()
        .delete(url(&format!("/pins/{cid}?force=false")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);

    // A pin nobody holds is not found.
    let resp = http()
        .delete(url(&format!("/pins/{}", cid_v1("never-pinned"))))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn unpin_of_a_cid_only_a_pinset_owns_is_a_409_too() {
    let cid = cid_v1("pinset-only");
    let yaml = pinset_yaml("it", "only", std::slice::from_ref(&cid));
    assert_eq!(
        put_pinset("it", "only", "", yaml).await.status(),
        StatusCode::OK
    );
    let resp = http()
        .delete(url(&format!("/pins/{cid}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let msg = json_of(resp).await["message"].as_str().unwrap().to_owned();
    assert!(
        msg.starts_with(&format!(
            "\"{cid}\" is owned by pinset it/only: it stays pinned"
        )),
        "{msg}"
    );
    assert_eq!(owners_of(&cid).await.unwrap(), ["pinset:it/only"]);
}

#[tokio::test]
async fn forced_unpin_removes_the_pin_from_every_owner_until_the_pinset_applies_again() {
    let cid = cid_v1("forced");
    let yaml = pinset_yaml("it", "forced", std::slice::from_ref(&cid));
    assert_eq!(
        put_pinset("it", "forced", "", yaml.clone()).await.status(),
        StatusCode::OK
    );
    let resp = http()
        .post(url(&format!("/pins/{cid}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // This peer has no users: every caller is admin.
    let resp = http()
        .delete(url(&format!("/pins/{cid}?force=true")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let pin = json_of(resp).await;
    assert_eq!(pin["cid"], cid.as_str());
    assert_eq!(pin["owners"], json!({}), "no owner left");
    assert_eq!(owners_of(&cid).await, None, "the pin left the state");

    // The PinSet still declares it: its next apply pins it again.
    assert_eq!(
        put_pinset("it", "forced", "", yaml).await.status(),
        StatusCode::OK
    );
    assert_eq!(owners_of(&cid).await.unwrap(), ["pinset:it/forced"]);
}

#[tokio::test]
async fn unpin_of_a_pin_only_the_api_owns_still_unpins_it() {
    let cid = cid_v1("api-only");
    let resp = http()
        .post(url(&format!("/pins/{cid}?name=by-hand")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = http()
        .delete(url(&format!("/pins/{cid}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let pin = json_of(resp).await;
    assert_eq!(pin["cid"], cid.as_str());
    assert_eq!(owners_of(&cid).await, None);
}

#[tokio::test]
async fn deleting_a_pinset_is_guarded() {
    let cids = seeds("doomed", 2);
    let resp = put_pinset("it", "doomed", "", pinset_yaml("it", "doomed", &cids)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = http()
        .delete(url("/pinsets/it/doomed"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let resp = http()
        .delete(url("/pinsets/it/doomed?force=true&dryRun=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json_of(resp).await["release"], 2);
    let resp = http()
        .delete(url("/pinsets/it/doomed?force=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json_of(resp).await["removed"], 2);
    let resp = http()
        .delete(url("/pinsets/it/doomed?force=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn peers_are_removed_by_peer_id() {
    let resp = http().delete(url("/peers/nope")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let stranger = Keypair::generate_ed25519().public().to_peer_id();
    let resp = http()
        .delete(url(&format!("/peers/{stranger}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn state_export_lines_are_pin_records() {
    let cid = cid_v0("export");
    let resp = http()
        .post(url(&format!("/pins/{cid}?name=exported")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = http().get(url("/state/export")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "trailer").as_deref(), Some("X-Stream-Error"));
    let body = resp.text().await.unwrap();
    for line in body.lines() {
        let rec: PinRecord = serde_json::from_str(line).unwrap();
        rec.into_pin().unwrap();
    }
    let pins: Vec<_> = read_state(body.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(pins.iter().any(|p| p.display_cid() == cid));
}

#[tokio::test]
async fn large_pinsets_go_in_as_json_and_stream_out() {
    const N: usize = 5000;
    let cids = seeds("bulk", N);
    let pins: Vec<Value> = cids.iter().map(|c| json!({"cid": c})).collect();
    let doc = json!({
        "apiVersion": "pinfleet.io/v1alpha1",
        "kind": "PinSet",
        "metadata": {"name": "bulk", "namespace": "it"},
        "spec": {"defaults": {"replication": {"min": 1, "max": 2}}, "pins": pins},
    });
    let resp = put_pinset("it", "bulk", "?source=bulk-test", doc.to_string()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let r = json_of(resp).await;
    assert_eq!(r["add"], N as u64, "{r}");
    assert_eq!(r["sample"]["add"].as_array().unwrap().len(), 10);

    // Read the stream chunk by chunk, as it comes.
    let mut resp = http().get(url("/allocations")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        chunks += 1;
        body.extend_from_slice(&chunk);
    }
    assert!(chunks > 1, "the answer came in one piece");
    let text = String::from_utf8(body).unwrap();
    let bulk = text
        .lines()
        .filter(|l| l.contains("pinset:it/bulk"))
        .count();
    assert_eq!(bulk, N);
}

// ---- the CLI against the same peer ----

fn pinfleet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pinfleet"))
        .args(args)
        .args(["--host", &peer().url])
        .current_dir(repo_path(""))
        .env_remove("PINFLEET_HOST")
        .output()
        .expect("run pinfleet")
}

fn out(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn cli_id_json_is_the_peer_id() {
    let o = pinfleet(&["id", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let id: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(id["peername"], "it-peer");
    let o = pinfleet(&["peers", "ls"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(id["id"].as_str().unwrap()),
        "{}",
        out(&o)
    );
}

#[test]
fn cli_pins_by_hand() {
    let cid = cid_v0("cli-pin");
    let o = pinfleet(&[
        "pin",
        "add",
        &cid,
        "--name",
        "cli",
        "--replication-min",
        "-1",
        "--replication-max",
        "-1",
        "--metadata",
        "k=v",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let pin: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(pin["cid"], cid.as_str());
    assert_eq!(pin["replication_factor_min"], -1);
    assert_eq!(pin["metadata"], json!({"k": "v"}));

    let o = pinfleet(&["pin", "ls", &cid]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("| cli |"),
        "{}",
        out(&o)
    );

    let o = pinfleet(&["pin", "rm", &cid]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let o = pinfleet(&["pin", "ls", &cid]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));

    let o = pinfleet(&["pin", "add", "not-a-cid"]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("invalid CID"),
        "{}",
        out(&o)
    );
}

#[test]
fn cli_diff_apply_diff_on_the_examples() {
    let o = pinfleet(&["diff", "examples/"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("mirrors/archlinux-core-list"), "{text}");
    assert!(text.contains("  + "), "{text}");

    let o = pinfleet(&["apply", "examples/", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let list = v["pinsets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pinset"] == "mirrors/archlinux-core-list")
        .unwrap();
    assert_eq!(list["add"], 21, "{v}");

    let o = pinfleet(&["diff", "examples/"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let o = pinfleet(&["apply", "examples/"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("unchanged"),
        "{}",
        out(&o)
    );

    // Listed pins keep the CID spelling of the manifest.
    let o = pinfleet(&[
        "pin",
        "ls",
        "QmXgr3DTYgL4JmTEjVYpmrf7JCr4DUPwntMh7gkYsfdWNC",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let pin: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        pin["owners"].get("pinset:mirrors/archlinux-core").is_some(),
        "{pin}"
    );
}

#[test]
fn cli_deletes_pinsets_under_the_guard() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("doomed.yaml");
    std::fs::write(&f, pinset_yaml("it", "cli-doomed", &seeds("cli-doomed", 2))).unwrap();
    let o = pinfleet(&["apply", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let o = pinfleet(&["delete", "pinset/it/cli-doomed"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("prune guard"),
        "{}",
        out(&o)
    );
    let o = pinfleet(&["delete", "pinset/it/cli-doomed", "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let o = pinfleet(&["delete", "pinset/it/cli-doomed", "--force"]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
}

#[test]
fn cli_state_export_and_import() {
    let dir = tempfile::tempdir().unwrap();
    // Something to export, and a state file to import: one manual pin (in
    // IPFS Cluster's format, without owners) and two pins of a PinSet.
    let manual = cid_v0("cli-import-manual");
    let listed = seeds("cli-import-set", 2);
    let mut lines = vec![format!(
        r#"{{"cid":"{manual}","name":"manual","replication_factor_min":1,"replication_factor_max":1,"metadata":{{"k":"v"}}}}"#
    )];
    for (i, c) in listed.iter().enumerate() {
        lines.push(format!(
            r#"{{"cid":"{c}","owners":{{"pinset:it/imported":{{"name":"p{i}","mode":"recursive","replication":{{"min":0,"max":0}}}}}}}}"#
        ));
    }
    let input = dir.path().join("in.ndjson");
    std::fs::write(&input, lines.join("\n")).unwrap();
    let o = pinfleet(&["state", "import", input.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));

    let export = dir.path().join("out.ndjson");
    let o = pinfleet(&["state", "export", "-o", export.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let text = std::fs::read_to_string(&export).unwrap();
    let pins: Vec<_> = read_state(text.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let find = |cid: &str| {
        pins.iter()
            .find(|p| p.display_cid() == cid)
            .unwrap_or_else(|| panic!("{cid} not exported"))
    };
    let m = find(&manual);
    assert_eq!(
        m.owners.keys().map(ToString::to_string).collect::<Vec<_>>(),
        ["api"]
    );
    assert_eq!(m.owners.values().next().unwrap().name, "manual");
    for c in &listed {
        assert_eq!(
            find(c)
                .owners
                .keys()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["pinset:it/imported"]
        );
    }
    assert!(!Path::new(&format!("{}.partial", export.display())).exists());

    // The same export on stdout.
    let o = pinfleet(&["state", "export"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&manual));
}

#[test]
fn cli_reports_an_unreachable_peer_with_its_cause() {
    let o = Command::new(env!("CARGO_BIN_EXE_pinfleet"))
        .args(["id", "--host", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("error: cannot reach pinfleet at http://127.0.0.1:1"),
        "{err}"
    );
    assert!(err.contains("caused by:"), "{err}");
}
