//! `PATCH /pinsets/{ns}/{name}` against one real in-process peer: only the
//! changed pins are sent; the server checks the base revision, ownership
//! and the prune guard, and commits the revision atomically.

use std::sync::OnceLock;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{cid_v0, cid_v1, owners_at, pinset_yaml, recorded_at};

fn peer() -> &'static str {
    static PEER: OnceLock<String> = OnceLock::new();
    PEER.get_or_init(|| crate::support::spawn_api_peer("it-patch", 13))
}

fn seeds(test: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| cid_v1(&format!("patch-{test}-{i}")))
        .collect()
}

/// `PUT`s `cids` as `patch/name` at revision `r1`.
async fn put(name: &str, cids: &[String]) {
    let resp = crate::support::http()
        .put(format!(
            "{}/pinsets/patch/{name}?revision=r1&source=it",
            peer()
        ))
        .body(pinset_yaml("patch", name, cids))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.text().await);
}

async fn patch(name: &str, query: &str, body: Value) -> (StatusCode, Value) {
    let resp = crate::support::http()
        .patch(format!("{}/pinsets/patch/{name}?source=it{query}", peer()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

fn doc(base: &str, revision: &str, pins: u64, set: &[(&str, &str)], release: &[&str]) -> Value {
    json!({
        "baseRevision": base,
        "revision": revision,
        "prune": true,
        "pins": pins,
        "options": [{"mode": "recursive", "replication": {"min": 0, "max": 0}}],
        "set": set.iter().map(|(c, n)| json!({"cid": c, "name": n})).collect::<Vec<_>>(),
        "release": release,
    })
}

#[tokio::test]
async fn a_patch_applies_only_its_changes_and_is_idempotent() {
    let cids = seeds("apply", 5);
    put("apply", &cids[..4]).await;
    let body = doc(
        "r1",
        "r2",
        4,
        &[(&cids[4], "new"), (&cids[1], "renamed")],
        &[&cids[0]],
    );
    let (status, r) = patch("apply", "", body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(
        (
            r["add"].as_u64(),
            r["update"].as_u64(),
            r["release"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{r}"
    );
    assert!(r["entries"].as_u64().unwrap() >= 1);
    let rec = recorded_at(peer(), "patch", "apply").await.unwrap();
    assert_eq!(
        (rec["revision"].as_str(), rec["pins"].as_u64()),
        (Some("r2"), Some(4))
    );
    assert!(owners_at(peer(), &cids[0]).await.is_none());
    for c in &cids[1..] {
        assert!(owners_at(peer(), c).await.is_some(), "{c}");
    }
    // The same patch again: nothing to write.
    let (status, r) = patch("apply", "", body).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(
        (
            r["add"].as_u64(),
            r["update"].as_u64(),
            r["release"].as_u64(),
            r["entries"].as_u64()
        ),
        (Some(0), Some(0), Some(0), Some(0)),
        "{r}"
    );
}

#[tokio::test]
async fn a_patch_on_another_base_revision_is_412_and_changes_nothing() {
    let cids = seeds("stale", 3);
    put("stale", &cids[..2]).await;
    let (status, r) = patch(
        "stale",
        "",
        doc("r0", "r2", 2, &[(&cids[2], "")], &[&cids[0]]),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{r}");
    assert!(owners_at(peer(), &cids[2]).await.is_none());
    assert!(owners_at(peer(), &cids[0]).await.is_some());
    assert_eq!(
        recorded_at(peer(), "patch", "stale").await.unwrap()["revision"],
        "r1"
    );
    // A PinSet never applied: 412 too.
    let (status, _) = patch("never", "", doc("r1", "r2", 1, &[(&cids[2], "")], &[])).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn the_prune_guard_refuses_a_patch_unless_forced() {
    let cids = seeds("guard", 4);
    put("guard", &cids).await;
    let body = doc("r1", "r2", 1, &[], &[&cids[0], &cids[1], &cids[2]]);
    let (status, r) = patch("guard", "", body.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{r}");
    assert!(
        r["refused"].as_str().unwrap().contains("prune guard"),
        "{r}"
    );
    assert!(owners_at(peer(), &cids[0]).await.is_some());
    assert_eq!(
        recorded_at(peer(), "patch", "guard").await.unwrap()["revision"],
        "r1"
    );
    let (status, r) = patch("guard", "&force=true", body).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert!(owners_at(peer(), &cids[0]).await.is_none());
    assert!(owners_at(peer(), &cids[3]).await.is_some());
}

#[tokio::test]
async fn a_patch_never_touches_pins_its_pinset_does_not_own() {
    let cids = seeds("owner", 3);
    put("owner", &cids[..2]).await;
    let manual = &cids[2];
    let resp = crate::support::http()
        .post(format!("{}/pins/{manual}", peer()))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let (status, r) = patch("owner", "", doc("r1", "r2", 2, &[], &[manual])).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["release"].as_u64(), Some(0), "{r}");
    assert_eq!(
        owners_at(peer(), manual).await.unwrap(),
        vec!["api".to_string()]
    );
}

#[tokio::test]
async fn a_malformed_patch_is_400() {
    let cids = seeds("bad", 2);
    put("bad", &cids[..1]).await;
    let mut body = doc("r1", "r2", 2, &[(&cids[1], "")], &[]);
    body["set"][0]["writtenAs"] = json!(cid_v0("something else"));
    let (status, r) = patch("bad", "", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{r}");
    let mut body = doc("r1", "r2", 2, &[(&cids[1], "")], &[]);
    body["set"][0]["options"] = json!(7);
    assert_eq!(patch("bad", "", body).await.0, StatusCode::BAD_REQUEST);
    let mut body = doc("r1", "r2", 2, &[], &[]);
    body["unknown"] = json!(1);
    assert_eq!(patch("bad", "", body).await.0, StatusCode::BAD_REQUEST);
    assert!(owners_at(peer(), &cids[1]).await.is_none());
}
