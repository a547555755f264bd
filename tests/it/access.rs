//! Who may call what (issue 13): every route of the router × {no
//! credentials, bad credentials, reader, writer, admin} against a real
//! one-peer cluster with users, tokens from `POST /token`, `force=true`
//! needing admin, the `Host` check, cross-origin refusal and CORS, and the
//! daemon's refusal to listen beyond loopback without users.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use pinfleet::api::{Access, AccessPolicy, routes};
use pinfleet::auth::{Credential, Role, hash_password};
use pinfleet::config::{ApiConfig, ClusterSecret};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::support::{cid_v1, http, pinset_yaml};

/// The three users of the secured peer: (user, password, role).
const USERS: [(&str, &str, Role); 3] = [
    ("ada", "admin-pw", Role::Admin),
    ("wes", "writer-pw", Role::Writer),
    ("rita", "reader-pw", Role::Reader),
];

/// The API config of the secured peer: the three users, a public name and
/// one allowed origin.
fn secured_api() -> ApiConfig {
    let users: BTreeMap<String, Credential> = USERS
        .iter()
        .map(|(u, p, r)| {
            let c = Credential::parse(&format!("{r}:{}", hash_password(p).unwrap())).unwrap();
            ((*u).to_owned(), c)
        })
        .collect();
    ApiConfig {
        basic_auth_credentials: users,
        public_names: vec!["pins.example.org".into()],
        cors_allowed_origins: vec!["https://dash.example.org".into()],
        cors_allowed_methods: vec!["GET".into(), "POST".into()],
        ..ApiConfig::default()
    }
}

/// The cluster secret of the secured peer (tokens are keyed by it).
const SECRET: u8 = 31;

/// A one-peer cluster serving [`secured_api`], started once on a runtime
/// of its own; its URL.
fn peer() -> &'static str {
    static PEER: OnceLock<String> = OnceLock::new();
    PEER.get_or_init(|| {
        crate::support::spawn_api_peer_with("secured", SECRET, |mut state, dir| {
            let secret = ClusterSecret::from_bytes([SECRET; 32]);
            state.access = AccessPolicy::from_config(&secured_api(), &secret);
            state.upload_dir = dir.join("uploads");
            state
        })
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Nobody,
    BadPassword,
    UnknownUser,
    As(Role),
}

fn credentials(role: Role) -> (&'static str, &'static str) {
    USERS
        .iter()
        .find(|(_, _, r)| *r == role)
        .map(|(u, p, _)| (*u, *p))
        .unwrap()
}

fn request(method: Method, path: &str, who: Who) -> reqwest::RequestBuilder {
    let req = http().request(method, format!("{}{path}", peer()));
    match who {
        Who::Nobody => req,
        Who::BadPassword => req.basic_auth("wes", Some("wrong")),
        Who::UnknownUser => req.basic_auth("mallory", Some("writer-pw")),
        Who::As(role) => {
            let (u, p) = credentials(role);
            req.basic_auth(u, Some(p))
        }
    }
}

/// A concrete path for a route's pattern, on test-owned names.
fn concrete(pattern: &str) -> String {
    pattern
        .replace("{cid}", &cid_v1("access-walk"))
        .replace("{*path}", &format!("{}/walk", cid_v1("access-walk")))
        .replace("{peer}", &libp2p::PeerId::random().to_string())
        .replace("{namespace}", "access")
        .replace("{name}", "walk")
}

/// A body the route would accept, so that an allowed request gets past
/// parsing (a refused one must never get that far).
fn body(method: &Method, pattern: &str) -> Option<String> {
    match (method.as_str(), pattern) {
        ("PUT", "/pinsets/{namespace}/{name}") => Some(pinset_yaml(
            "access",
            "walk",
            &[cid_v1("access-walk-pinset")],
        )),
        ("PATCH", "/pinsets/{namespace}/{name}") => Some(r#"{"add":[]}"#.into()),
        ("PUT", "/pinsets/{namespace}/{name}/conditions") => Some("[]".into()),
        _ => None,
    }
}

/// Whether the walk's own pin or PinSet exists (other tests share the
/// peer, so only what the walk would write is looked at).
async fn walk_wrote_anything() -> bool {
    let mut found = false;
    for path in [
        format!("/allocations/{}", cid_v1("access-walk")),
        format!("/allocations/{}", cid_v1("access-walk-pinset")),
        "/pinsets/access/walk".to_owned(),
    ] {
        let resp = request(Method::GET, &path, Who::As(Role::Admin))
            .send()
            .await
            .unwrap();
        match resp.status() {
            StatusCode::NOT_FOUND => {}
            StatusCode::OK => found = true,
            other => panic!("{path}: {other}"),
        }
    }
    found
}

async fn send(method: &Method, pattern: &str, who: Who) -> (StatusCode, String) {
    let mut req = request(method.clone(), &concrete(pattern), who);
    if let Some(b) = body(method, pattern) {
        req = req.body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.text().await.unwrap_or_default())
}

/// The issue's walk: every route the router has, with every kind of
/// caller. A route added without an access declaration cannot exist (the
/// router is built from the same table), and one whose declaration is
/// wrong shows up here as a status the table does not predict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_callers_without_its_role_and_writes_nothing() {
    let table = routes();
    assert!(table.len() >= 25, "the table lost routes: {}", table.len());
    assert!(!walk_wrote_anything().await);
    let mut allowed = Vec::new();
    for r in &table {
        for who in [Who::Nobody, Who::BadPassword, Who::UnknownUser] {
            let (status, text) = send(&r.method, r.path, who).await;
            match r.access {
                Access::Open => assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{} {} as {who:?}: {status} {text}",
                    r.method,
                    r.path
                ),
                Access::Role(_) => {
                    assert_eq!(
                        status,
                        StatusCode::UNAUTHORIZED,
                        "{} {} as {who:?}: {text}",
                        r.method,
                        r.path
                    );
                    let error: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(error["code"], 401, "{text}");
                }
            }
        }
        for role in [Role::Reader, Role::Writer, Role::Admin] {
            match r.access {
                Access::Role(needed) if role < needed => {
                    let (status, text) = send(&r.method, r.path, Who::As(role)).await;
                    assert_eq!(
                        status,
                        StatusCode::FORBIDDEN,
                        "{} {} as {role}: {text}",
                        r.method,
                        r.path
                    );
                    assert!(text.contains(&format!("needs {needed}")), "{text}");
                }
                _ => allowed.push((r, role)),
            }
        }
    }
    // Wrong user and wrong password are told apart by nothing.
    let (_, unknown) = send(&Method::GET, "/id", Who::UnknownUser).await;
    let (_, wrong) = send(&Method::GET, "/id", Who::BadPassword).await;
    assert_eq!(unknown, wrong);
    assert!(
        !walk_wrote_anything().await,
        "a refused request changed the state"
    );
    // Now every allowed caller gets past the check (the handler may still
    // say no: 404 for a peer that is not a member, 503 without IPFS).
    for (r, role) in allowed {
        let (status, text) = send(&r.method, r.path, Who::As(role)).await;
        assert!(
            status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
            "{} {} as {role}: {status} {text}",
            r.method,
            r.path
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_post_token_stand_in_for_passwords_with_at_most_the_callers_role() {
    let token_of = |resp: Value| resp["token"].as_str().unwrap().to_owned();
    let resp = request(Method::POST, "/token", Who::As(Role::Writer))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let answer: Value = resp.json().await.unwrap();
    // IPFS Cluster's shape: one key.
    crate::compat_shapes::check(&answer, &crate::compat_shapes::TOKEN, "POST /token");
    let writer = token_of(answer);
    assert_eq!(writer.split('.').count(), 3, "a compact JWS: {writer}");

    let cid = cid_v1("access-token-pin");
    let bearer = |method: Method, path: &str, token: &str| {
        http()
            .request(method, format!("{}{path}", peer()))
            .bearer_auth(token)
    };
    let pinned = bearer(Method::POST, &format!("/pins/{cid}"), &writer)
        .send()
        .await
        .unwrap();
    assert!(
        pinned.status().is_success(),
        "{}",
        pinned.text().await.unwrap()
    );

    // A writer mints a reader token: it reads, it cannot write.
    let reader = token_of(
        request(
            Method::POST,
            "/token?role=reader&ttl=1m",
            Who::As(Role::Writer),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap(),
    );
    let got = bearer(Method::GET, &format!("/allocations/{cid}"), &reader)
        .send()
        .await
        .unwrap();
    assert!(got.status().is_success(), "{}", got.status());
    let refused = bearer(Method::DELETE, &format!("/pins/{cid}"), &reader)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // No more than the caller has, and others' tokens are admin-only.
    for (path, who) in [
        ("/token?role=admin", Who::As(Role::Writer)),
        ("/token?user=ada", Who::As(Role::Writer)),
    ] {
        let resp = request(Method::POST, path, who).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let for_rita = request(Method::POST, "/token?user=rita", Who::As(Role::Admin))
        .send()
        .await
        .unwrap();
    assert_eq!(for_rita.status(), StatusCode::OK);

    // A tampered or foreign token is one 401, as is a garbage one.
    let mut tampered = writer.clone();
    tampered.pop();
    tampered.push(if writer.ends_with('A') { 'B' } else { 'A' });
    for bad in [tampered.as_str(), "not.a.token", "x"] {
        let resp = bearer(Method::GET, "/id", bad).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{bad}");
    }
    // Still pinned: nothing the refused calls did stuck.
    let still = bearer(Method::GET, &format!("/allocations/{cid}"), &writer)
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_lifts_the_prune_guard_for_admins_only() {
    let cids = [cid_v1("access-force-a"), cid_v1("access-force-b")];
    let put = request(Method::PUT, "/pinsets/access/force", Who::As(Role::Writer))
        .body(pinset_yaml("access", "force", &cids))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let as_writer = request(
        Method::DELETE,
        "/pinsets/access/force?force=true",
        Who::As(Role::Writer),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(as_writer.status(), StatusCode::FORBIDDEN);
    let still = request(Method::GET, "/pinsets/access/force", Who::As(Role::Reader))
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), StatusCode::OK, "the refused delete deleted");
    let as_admin = request(
        Method::DELETE,
        "/pinsets/access/force?force=true",
        Who::As(Role::Admin),
    )
    .send()
    .await
    .unwrap();
    assert!(as_admin.status().is_success(), "{}", as_admin.status());
}

/// The owners `GET /allocations/{cid}` shows, or `None` when not pinned.
async fn owners(cid: &str) -> Option<Vec<String>> {
    let resp = request(
        Method::GET,
        &format!("/allocations/{cid}"),
        Who::As(Role::Reader),
    )
    .send()
    .await
    .unwrap();
    if resp.status() == StatusCode::NOT_FOUND {
        return None;
    }
    let pin: Value = resp.json().await.unwrap();
    Some(pin["owners"].as_object().unwrap().keys().cloned().collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_unpin_of_a_pinset_owned_cid_is_for_admins_only() {
    let cid = cid_v1("access-forced-unpin");
    let put = request(Method::PUT, "/pinsets/access/unpin", Who::As(Role::Writer))
        .body(pinset_yaml("access", "unpin", std::slice::from_ref(&cid)))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let pin = request(Method::POST, &format!("/pins/{cid}"), Who::As(Role::Writer))
        .send()
        .await
        .unwrap();
    assert_eq!(pin.status(), StatusCode::OK);
    let both = ["api", "pinset:access/unpin"];

    let plain = request(
        Method::DELETE,
        &format!("/pins/{cid}"),
        Who::As(Role::Writer),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(plain.status(), StatusCode::CONFLICT);
    let forced = format!("/pins/{cid}?force=true");
    let as_writer = request(Method::DELETE, &forced, Who::As(Role::Writer))
        .send()
        .await
        .unwrap();
    assert_eq!(as_writer.status(), StatusCode::FORBIDDEN);
    assert_eq!(owners(&cid).await.unwrap(), both, "a refused unpin wrote");

    let as_admin = request(Method::DELETE, &forced, Who::As(Role::Admin))
        .send()
        .await
        .unwrap();
    assert_eq!(as_admin.status(), StatusCode::OK);
    assert_eq!(
        owners(&cid).await,
        None,
        "still pinned after a forced unpin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_hosts_and_origins_are_refused_and_allowed_origins_get_cors() {
    let id =
        |host: &str| request(Method::GET, "/health", Who::Nobody).header("host", host.to_owned());
    // DNS rebinding: a name that is not ours.
    let rebound = id("evil.example:9094").send().await.unwrap();
    assert_eq!(rebound.status(), StatusCode::FORBIDDEN);
    for ok in ["localhost:9094", "127.0.0.1", "pins.example.org"] {
        let resp = id(ok).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT, "{ok}");
    }

    // A page elsewhere posting a pin (with a writer's credentials the
    // browser might hold): refused before anything is written.
    let cid = cid_v1("access-csrf");
    let csrf = request(Method::POST, &format!("/pins/{cid}"), Who::As(Role::Writer))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(csrf.status(), StatusCode::FORBIDDEN);
    let absent = request(
        Method::GET,
        &format!("/allocations/{cid}"),
        Who::As(Role::Reader),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(absent.status(), StatusCode::NOT_FOUND);

    // The allowed origin: preflight answered, the answer carries CORS.
    let preflight = http()
        .request(Method::OPTIONS, format!("{}/pins", peer()))
        .header("origin", "https://dash.example.org")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    let h = preflight.headers();
    assert_eq!(
        h["access-control-allow-origin"].to_str().unwrap(),
        "https://dash.example.org"
    );
    assert_eq!(
        h["access-control-allow-methods"].to_str().unwrap(),
        "GET, POST"
    );
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    assert!(h.contains_key("access-control-max-age"));
    let disallowed_method = http()
        .request(Method::OPTIONS, format!("{}/pins/{cid}", peer()))
        .header("origin", "https://dash.example.org")
        .header("access-control-request-method", "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(disallowed_method.status(), StatusCode::FORBIDDEN);
    let read = request(Method::GET, "/id", Who::As(Role::Reader))
        .header("origin", "https://dash.example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(
        read.headers()["access-control-allow-origin"]
            .to_str()
            .unwrap(),
        "https://dash.example.org"
    );
}

/// Safe default: a daemon told to listen beyond loopback without users
/// refuses to start and says what to do.
#[test]
fn a_daemon_without_users_refuses_a_non_loopback_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    crate::support::init_peer(dir.path());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pinfleet"))
        .args(["daemon", "--dir"])
        .arg(dir.path())
        .env("PINFLEET_API_LISTEN", "0.0.0.0:0")
        .env("PINFLEET_IPFS_BACKEND", "none")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("api.listen")
            && stderr.contains("basic_auth_credentials")
            && stderr.contains("allow_unauthenticated_remote"),
        "{stderr}"
    );
}

/// `pinfleet passwd` reads the password from stdin (never argv) and prints
/// a config line whose hash checks that password and no other.
#[test]
fn passwd_prints_a_config_line_the_api_accepts() {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pinfleet"))
        .args(["passwd", "--user", "ci", "--role", "writer"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"s3cret pass\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(!line.contains("s3cret"), "{line}");
    let table: toml::Table = toml::from_str(&line).unwrap();
    let value = table["ci"].as_str().unwrap();
    let cred = Credential::parse(value).unwrap();
    assert_eq!(cred.role, Role::Writer);
    let users = pinfleet::auth::Users::new([("ci".to_owned(), cred)].into());
    assert_eq!(users.verify("ci", "s3cret pass"), Some(Role::Writer));
    assert_eq!(users.verify("ci", "s3cret"), None);
}
