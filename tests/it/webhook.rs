//! Webhook receivers (`POST /hooks/{name}`) and the commit-status reporter,
//! against a local mock forge.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use hmac::{Hmac, Mac};
use pinfleet::controller::reporter::{Forge, Reporter, ReporterError, sha_of_revision};
use pinfleet::controller::{ConditionType, PinSetOutcome, Reason, ReconcileOutcome};
use pinfleet::source::webhook::{Receiver, ReceiverKind, router};
use sha2::Sha256;
use tokio::sync::mpsc;

const SECRET: &[u8] = b"s3cret-for-tests";
const BODY: &str = r#"{"ref":"refs/heads/main","after":"0123456789abcdef"}"#;

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

/// The hook server with one receiver of each kind, and its trigger channel.
async fn hooks() -> (String, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel(1);
    let app = router(
        vec![
            Receiver::new("gh", ReceiverKind::GitHub, SECRET),
            Receiver::new("gl", ReceiverKind::GitLab, SECRET),
            Receiver::new("any", ReceiverKind::Generic, SECRET),
        ],
        tx,
    );
    (serve(app).await, rx)
}

pub(crate) fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post_hook(
    base: &str,
    name: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (u16, serde_json::Value) {
    let mut req = crate::support::http()
        .post(format!("{base}/hooks/{name}"))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_default())
}

async fn expect_trigger(rx: &mut mpsc::Receiver<String>, name: &str) {
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a trigger within 5s")
        .expect("channel open");
    assert_eq!(got, name);
    assert!(rx.try_recv().is_err(), "exactly one trigger");
}

fn assert_no_trigger(rx: &mut mpsc::Receiver<String>) {
    assert!(rx.try_recv().is_err(), "nothing may be triggered");
}

fn assert_invalid_signature(status: u16, body: &serde_json::Value) {
    assert_eq!(status, 401);
    assert_eq!(
        body,
        &serde_json::json!({"code": 401, "message": "invalid signature"})
    );
}

#[tokio::test]
async fn github_hook_with_valid_signature_triggers_once() {
    let (base, mut rx) = hooks().await;
    let sig = sign(SECRET, BODY.as_bytes());
    let (status, _) = post_hook(
        &base,
        "gh",
        &[("x-hub-signature-256", &sig), ("x-github-event", "push")],
        BODY,
    )
    .await;
    assert_eq!(status, 202);
    expect_trigger(&mut rx, "gh").await;
}

#[tokio::test]
async fn github_hook_with_wrong_or_missing_signature_is_refused() {
    let (base, mut rx) = hooks().await;
    let wrong = sign(b"not-the-secret", BODY.as_bytes());
    let (status, body) = post_hook(&base, "gh", &[("x-hub-signature-256", &wrong)], BODY).await;
    assert_invalid_signature(status, &body);
    assert_no_trigger(&mut rx);

    // Signed over another body.
    let other = sign(SECRET, b"{}");
    let (status, body) = post_hook(&base, "gh", &[("x-hub-signature-256", &other)], BODY).await;
    assert_invalid_signature(status, &body);
    assert_no_trigger(&mut rx);

    let (status, body) = post_hook(&base, "gh", &[("x-hub-signature-256", "garbage")], BODY).await;
    assert_invalid_signature(status, &body);
    assert_no_trigger(&mut rx);

    let (status, body) = post_hook(&base, "gh", &[], BODY).await;
    assert_invalid_signature(status, &body);
    assert_no_trigger(&mut rx);
}

#[tokio::test]
async fn github_ping_is_answered_without_trigger() {
    let (base, mut rx) = hooks().await;
    let sig = sign(SECRET, BODY.as_bytes());
    let (status, _) = post_hook(
        &base,
        "gh",
        &[("x-hub-signature-256", &sig), ("x-github-event", "ping")],
        BODY,
    )
    .await;
    assert_eq!(status, 200);
    assert_no_trigger(&mut rx);
}

#[tokio::test]
async fn gitlab_token_right_and_wrong() {
    let (base, mut rx) = hooks().await;
    let secret = std::str::from_utf8(SECRET).unwrap();
    let (status, body) = post_hook(&base, "gl", &[("x-gitlab-token", "wrong")], BODY).await;
    assert_invalid_signature(status, &body);
    assert_no_trigger(&mut rx);
    let (status, body) = post_hook(&base, "gl", &[], BODY).await;
    assert_invalid_signature(status, &body);
    assert_no_trigger(&mut rx);
    // A GitHub signature header does not authenticate a GitLab receiver.
    let sig = sign(SECRET, BODY.as_bytes());
    let (status, _) = post_hook(&base, "gl", &[("x-hub-signature-256", &sig)], BODY).await;
    assert_eq!(status, 401);
    assert_no_trigger(&mut rx);

    let (status, _) = post_hook(&base, "gl", &[("x-gitlab-token", secret)], BODY).await;
    assert_eq!(status, 202);
    expect_trigger(&mut rx, "gl").await;
}

#[tokio::test]
async fn generic_hmac_right_and_wrong() {
    let (base, mut rx) = hooks().await;
    let wrong = sign(b"nope", BODY.as_bytes());
    let (status, body) = post_hook(&base, "any", &[("x-signature-256", &wrong)], BODY).await;
    assert_invalid_signature(status, &body);
    assert_no_trigger(&mut rx);

    let sig = sign(SECRET, BODY.as_bytes());
    let (status, _) = post_hook(&base, "any", &[("x-signature-256", &sig)], BODY).await;
    assert_eq!(status, 202);
    expect_trigger(&mut rx, "any").await;
}

#[tokio::test]
async fn burst_of_hooks_coalesces_in_a_full_channel() {
    let (base, mut rx) = hooks().await; // capacity 1
    let sig = sign(SECRET, BODY.as_bytes());
    for _ in 0..5 {
        let (status, _) = post_hook(&base, "any", &[("x-signature-256", &sig)], BODY).await;
        assert_eq!(status, 202);
    }
    expect_trigger(&mut rx, "any").await;
}

#[tokio::test]
async fn unknown_receiver_is_404() {
    let (base, mut rx) = hooks().await;
    let sig = sign(SECRET, BODY.as_bytes());
    let (status, body) = post_hook(&base, "nope", &[("x-hub-signature-256", &sig)], BODY).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], 404);
    assert_no_trigger(&mut rx);
}

#[tokio::test]
async fn other_methods_get_a_json_405_with_allow() {
    let (base, mut rx) = hooks().await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let resp = crate::support::http()
            .request(method.clone(), format!("{base}/hooks/gh"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method}");
        assert_eq!(resp.headers()["allow"], "POST", "{method}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["code"], 405, "{method}");
        assert_eq!(body["message"], "method not allowed", "{method}");
    }
    assert_no_trigger(&mut rx);
}

#[tokio::test]
async fn oversized_body_is_413() {
    let (base, mut rx) = hooks().await;
    let big = vec![b'x'; 1024 * 1024 + 1];
    let sig = sign(SECRET, &big);
    let (status, _) = post_hook(&base, "gh", &[("x-hub-signature-256", &sig)], big).await;
    assert_eq!(status, 413);
    assert_no_trigger(&mut rx);
}

#[tokio::test]
async fn empty_secret_refuses_every_hook() {
    let (tx, mut rx) = mpsc::channel(1);
    let base = serve(router(
        vec![Receiver::new("gl", ReceiverKind::GitLab, Vec::new())],
        tx,
    ))
    .await;
    let (status, _) = post_hook(&base, "gl", &[("x-gitlab-token", "")], BODY).await;
    assert_eq!(status, 401);
    assert_no_trigger(&mut rx);
}

#[test]
fn receiver_debug_hides_the_secret() {
    let r = Receiver::new("gh", ReceiverKind::GitHub, SECRET);
    let shown = format!("{r:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
}

// --- commit-status reporter ---------------------------------------------

#[derive(Clone, Debug)]
struct Recorded {
    path: String,
    auth: String,
    body: serde_json::Value,
}

#[derive(Clone, Default)]
struct Forged {
    requests: Arc<Mutex<Vec<Recorded>>>,
    fail: bool,
}

async fn record(State(f): State<Forged>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    f.requests.lock().unwrap().push(Recorded {
        path: uri.path().to_string(),
        auth,
        body: serde_json::from_slice(&body).unwrap_or_default(),
    });
    if f.fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::CREATED
    }
}

async fn mock_forge(fail: bool) -> (String, Forged) {
    let forged = Forged {
        fail,
        ..Forged::default()
    };
    let app = Router::new()
        .fallback(post(record))
        .with_state(forged.clone());
    (serve(app).await, forged)
}

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn pinset(name: &str, condition: ConditionType, reason: Reason, message: &str) -> PinSetOutcome {
    PinSetOutcome {
        namespace: "mirrors".into(),
        name: name.into(),
        condition,
        reason,
        message: message.into(),
        revision: format!("main@sha1:{SHA}"),
        add: 3,
        update: 1,
        release: 2,
    }
}

fn healthy() -> ReconcileOutcome {
    ReconcileOutcome {
        revision: Some(format!("main@sha1:{SHA}")),
        skipped: false,
        source_error: None,
        pinsets: vec![
            pinset("debian", ConditionType::Ready, Reason::Succeeded, ""),
            pinset("alpine", ConditionType::Ready, Reason::Succeeded, ""),
        ],
    }
}

fn stalled() -> ReconcileOutcome {
    let long = "x".repeat(500);
    ReconcileOutcome {
        revision: Some(format!("main@sha1:{SHA}")),
        skipped: false,
        source_error: None,
        pinsets: vec![
            pinset("debian", ConditionType::Ready, Reason::Succeeded, ""),
            pinset(
                "alpine",
                ConditionType::Stalled,
                Reason::PruneGuard,
                &format!("apply refused: would release 900 of 1000 pins {long}"),
            ),
        ],
    }
}

#[tokio::test]
async fn reporter_posts_github_statuses() {
    let (base, forged) = mock_forge(false).await;
    let r = Reporter::new(Forge::GitHub, &base, "acme/mirrors", "gh-token").unwrap();
    r.report(SHA, &healthy()).await.unwrap();
    r.report(SHA, &stalled()).await.unwrap();

    let reqs = forged.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2);
    for q in &reqs {
        assert_eq!(q.path, format!("/repos/acme/mirrors/statuses/{SHA}"));
        assert_eq!(q.auth, "Bearer gh-token");
        assert_eq!(q.body["context"], "pinfleet");
    }
    assert_eq!(reqs[0].body["state"], "success");
    let d = reqs[0].body["description"].as_str().unwrap();
    assert!(d.contains("+6 ~2 -4"), "{d}");
    assert_eq!(reqs[1].body["state"], "failure");
    let d = reqs[1].body["description"].as_str().unwrap();
    assert!(
        d.starts_with("mirrors/alpine PruneGuard: apply refused"),
        "{d}"
    );
    assert!(d.chars().count() <= 140, "{}", d.chars().count());
}

#[tokio::test]
async fn reporter_posts_gitea_statuses() {
    let (base, forged) = mock_forge(false).await;
    let r = Reporter::new(Forge::Gitea, format!("{base}/"), "acme/mirrors", "tea").unwrap();
    r.report(SHA, &healthy()).await.unwrap();
    r.report(SHA, &stalled()).await.unwrap();

    let reqs = forged.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2);
    for q in &reqs {
        assert_eq!(q.path, format!("/api/v1/repos/acme/mirrors/statuses/{SHA}"));
        assert_eq!(q.auth, "token tea");
        assert_eq!(q.body["context"], "pinfleet");
    }
    assert_eq!(reqs[0].body["state"], "success");
    assert_eq!(reqs[1].body["state"], "failure");
}

#[tokio::test]
async fn reporter_maps_unavailable_and_progressing() {
    let (base, forged) = mock_forge(false).await;
    let r = Reporter::new(Forge::GitHub, &base, "acme/mirrors", "t").unwrap();
    let mut unavailable = healthy();
    unavailable.pinsets[0] = pinset(
        "debian",
        ConditionType::Stalled,
        Reason::ClusterUnavailable,
        "cannot reach pinfleet",
    );
    r.report(SHA, &unavailable).await.unwrap();
    let source_failed = ReconcileOutcome {
        source_error: Some("cannot read /x".into()),
        ..ReconcileOutcome::default()
    };
    r.report(SHA, &source_failed).await.unwrap();
    let mut progressing = healthy();
    progressing.pinsets[1] = pinset(
        "alpine",
        ConditionType::Reconciling,
        Reason::Progressing,
        "",
    );
    r.report(SHA, &progressing).await.unwrap();

    let states: Vec<_> = forged
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|q| q.body["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["error", "error", "pending"]);
}

#[tokio::test]
async fn reporter_surfaces_forge_errors() {
    let (base, _forged) = mock_forge(true).await;
    let r = Reporter::new(Forge::GitHub, &base, "acme/mirrors", "t").unwrap();
    let err = r.report(SHA, &healthy()).await.unwrap_err();
    match &err {
        ReporterError::Status { status, .. } => assert_eq!(*status, 500),
        other => panic!("expected a status error, got {other:?}"),
    }
    assert!(err.to_string().contains("500"), "{err}");
    assert!(!err.to_string().contains("Bearer"), "{err}");

    let bad = r.report("not-a-sha", &healthy()).await.unwrap_err();
    assert!(matches!(bad, ReporterError::BadSha(_)), "{bad:?}");
}

#[tokio::test]
async fn reporter_surfaces_unreachable_forge() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let r = Reporter::new(Forge::Gitea, &base, "acme/mirrors", "t").unwrap();
    let err = r.report(SHA, &healthy()).await.unwrap_err();
    assert!(matches!(err, ReporterError::Unreachable { .. }), "{err:?}");
}

#[test]
fn revision_sha_is_parsed() {
    assert_eq!(sha_of_revision(&format!("main@sha1:{SHA}")), Some(SHA));
    assert_eq!(sha_of_revision("sha256:0123abcd"), None);
}

#[test]
fn reporter_debug_hides_the_token() {
    let r = Reporter::new(Forge::GitHub, "http://x", "a/b", "super-token").unwrap();
    assert!(!format!("{r:?}").contains("super-token"));
}
