//! The web dashboard (issue 21): one in-process peer with a mock Kubo, a
//! tracker and a monitor view, its REST API on 127.0.0.1:0; PinSets are
//! applied over HTTP and each page's HTML is checked for the facts of that
//! state. Every wait has a deadline.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pinfleet::allocator::{Metric, PeerMetrics};
use pinfleet::api::{AccessPolicy, ApiState, serve};
use pinfleet::config::{ApiConfig, ClusterSecret};
use pinfleet::ipfs::KuboClient;
use pinfleet::testkit::MockKubo;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{Peer, cluster};
use crate::support::{cid_v1, pinset_yaml};

const DEADLINE: Duration = Duration::from_secs(30);
const PASSWORD: &str = "s3cret pass";

/// One peer serving the API and the dashboard.
struct Dash {
    url: String,
    peer_id: String,
    kubo: MockKubo,
    peer: Peer,
    cancel: CancellationToken,
    tasks: TaskTracker,
    _root: tempfile::TempDir,
}

impl Dash {
    /// A peer whose API has `users` (name, role) when given, and whose
    /// state is adjusted by `tune`.
    async fn start(users: &[(&str, &str)], tune: impl FnOnce(ApiState) -> ApiState) -> Dash {
        let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let peer = cluster(1, root.path(), 10_000).await.remove(0);
        let (kubo, kubo_url) = MockKubo::start().await.unwrap();
        let backend = Arc::new(KuboClient::new(&kubo_url, Duration::from_secs(5)).unwrap());
        let config = crate::support::tracker_config(
            Duration::from_secs(2),
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let svc = pinfleet::daemon::start_tracking(
            &peer.node,
            backend,
            config,
            "p0".to_string(),
            &cancel,
            &tasks,
        )
        .unwrap();
        let peer_id = peer.node.peer_id().to_string();
        // The informer's view: this peer is out of space, its queue holds 3.
        let now = chrono::Utc::now().timestamp_millis();
        let mut metrics = PeerMetrics::new();
        for m in [
            Metric::freespace(&peer_id, 0, now + 3_600_000),
            Metric::pinqueue(&peer_id, 3, now + 3_600_000),
            Metric::numpin(&peer_id, 7, now + 3_600_000),
        ] {
            metrics.insert(Metric {
                received_ms: now,
                ..m
            });
        }
        let mut state = ApiState::new(peer.node.clone(), "0.0.0-it", "p0");
        state.status = Some(svc);
        state.monitor = Some(Arc::new(Mutex::new(metrics)));
        if !users.is_empty() {
            let hash = pinfleet::auth::hash_password(PASSWORD).unwrap();
            let api = ApiConfig {
                basic_auth_credentials: users
                    .iter()
                    .map(|(u, role)| {
                        let c = pinfleet::auth::Credential::parse(&format!("{role}:{hash}"));
                        (u.to_string(), c.unwrap())
                    })
                    .collect(),
                ..ApiConfig::default()
            };
            state.access = AccessPolicy::from_config(&api, &ClusterSecret::random());
        }
        let state = tune(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tasks.spawn(serve(listener, state, cancel.clone()));
        Dash {
            url,
            peer_id,
            kubo,
            peer,
            cancel,
            tasks,
            _root: root,
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.tasks.close();
        tokio::time::timeout(DEADLINE, self.tasks.wait())
            .await
            .expect("tasks stop");
        self.peer.stop().await;
    }

    /// Applies `yaml` as PinSet `ns/name` (as `auth`, basic).
    async fn apply(&self, ns: &str, name: &str, yaml: String, auth: Option<&str>) {
        let mut req = client()
            .put(format!("{}/pinsets/{ns}/{name}", self.url))
            .body(yaml);
        if let Some(user) = auth {
            req = req.basic_auth(user, Some(PASSWORD));
        }
        let resp = req.send().await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{}",
            resp.text().await.unwrap()
        );
    }

    /// GET `path` with `cookie`; status and body.
    async fn get(&self, path: &str, cookie: Option<&str>) -> (StatusCode, String) {
        let mut req = client().get(format!("{}{path}", self.url));
        if let Some(c) = cookie {
            req = req.header(COOKIE, c);
        }
        let resp = req.send().await.unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    /// GETs `path` until its HTML satisfies `ok`.
    async fn wait_page(
        &self,
        path: &str,
        cookie: Option<&str>,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        let start = Instant::now();
        loop {
            let (status, body) = self.get(path, cookie).await;
            if status == StatusCode::OK && ok(&body) {
                return body;
            }
            assert!(start.elapsed() < DEADLINE, "{path} never matched:\n{body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Logs `user` in; the session cookie (`name=value`).
    async fn login(&self, user: &str) -> String {
        let resp = client()
            .post(format!("{}/ui/login", self.url))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form(&[
                ("username", user),
                ("password", PASSWORD),
                ("next", "/ui/pins"),
            ]))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(resp.headers()[LOCATION], "/ui/pins");
        let set = resp.headers()[SET_COOKIE].to_str().unwrap().to_string();
        for part in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
            assert!(set.contains(part), "{set}");
        }
        set.split(';').next().unwrap().to_string()
    }
}

/// `pairs` as an `application/x-www-form-urlencoded` body.
fn form(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A client that does not follow redirects (they are what is checked).
fn client() -> reqwest::Client {
    crate::support::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(DEADLINE)
        .build()
        .unwrap()
}

/// The text of the first element that starts with `open` (e.g.
/// `<tr class="pinset" data-pinset="a/b"`), up to its closing `close`.
fn element<'a>(html: &'a str, open: &str, close: &str) -> &'a str {
    let at = html
        .find(open)
        .unwrap_or_else(|| panic!("no {open} in:\n{html}"));
    let rest = &html[at..];
    let end = rest.find(close).map_or(rest.len(), |e| e + close.len());
    &rest[..end]
}

fn count(html: &str, needle: &str) -> usize {
    html.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_shows_the_facts_of_a_seeded_cluster() {
    let d = Dash::start(&[], |s| s).await;
    let good: Vec<String> = (0..3).map(|i| cid_v1(&format!("ui-good-{i}"))).collect();
    let bad = cid_v1("ui-bad");
    d.kubo.fail_midstream(
        pinfleet::manifest::CidKey::parse(&bad).unwrap(),
        "disk on fire",
    );
    d.apply(
        "mirrors",
        "good",
        pinset_yaml("mirrors", "good", &good),
        None,
    )
    .await;
    d.apply(
        "mirrors",
        "bad",
        pinset_yaml("mirrors", "bad", &[bad.clone(), cid_v1("ui-bad-ok")]),
        None,
    )
    .await;
    let many: Vec<String> = (0..120).map(|i| cid_v1(&format!("ui-many-{i}"))).collect();
    d.apply("bulk", "many", pinset_yaml("bulk", "many", &many), None)
        .await;
    let xss = cid_v1("ui-xss");
    d.apply(
        "esc",
        "names",
        format!(
            "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: names\n  namespace: esc\n\
             spec:\n  pins:\n    - cid: {xss}\n      name: \"<script>alert(1)</script>\"\n"
        ),
        None,
    )
    .await;

    // Overview: peers with the leader, PinSets Ready with their progress,
    // pins by status (once the last PinSet's one pin is pinned too: the
    // status counts below include it).
    let html = d
        .wait_page("/ui/", None, |h| {
            h.contains("3/3 pinned")
                && h.contains("120/120 pinned")
                && h.contains("1/2 pinned")
                && h.contains("<dt>pinned</dt><dd>125</dd>")
        })
        .await;
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("<nav id=\"nav\""));
    assert!(!html.contains("id=\"logout\""), "no users: no logout");
    let peer_row = element(
        &html,
        &format!("<tr class=\"peer leader\" data-peer=\"{}\"", d.peer_id),
        "</tr>",
    );
    assert!(peer_row.contains("0 B (full)"), "{peer_row}");
    assert!(peer_row.contains(">3<"), "pin queue: {peer_row}");
    let good_row = element(
        &html,
        "<tr class=\"pinset\" data-pinset=\"mirrors/good\"",
        "</tr>",
    );
    assert!(
        good_row.contains("<td class=\"ready Ready\">Ready</td>"),
        "{good_row}"
    );
    assert!(
        good_row.contains("<progress max=\"3\" value=\"3\">"),
        "{good_row}"
    );
    assert!(good_row.contains("(3 pinned across peers)"), "{good_row}");
    assert!(good_row.contains("class=\"pinset-link\" href=\"/ui/pinsets/mirrors/good\""));
    let bad_row = element(
        &html,
        "<tr class=\"pinset\" data-pinset=\"mirrors/bad\"",
        "</tr>",
    );
    assert!(bad_row.contains(">Reconciling</td>"), "{bad_row}");
    let status = element(&html, "<dl id=\"pin-status\"", "</dl>");
    assert!(status.contains("<dt>pinned</dt><dd>125</dd>"), "{status}");
    assert!(status.contains("<dt>error</dt><dd>1</dd>"), "{status}");
    assert!(
        status.contains("<dt>in the state</dt><dd>126</dd>"),
        "{status}"
    );

    // A PinSet a controller reported but that never applied is listed
    // Stalled, with its page.
    let body = serde_json::json!({
        "source": "dir:/src",
        "conditions": [{"type": "Stalled", "status": "True", "reason": "ManifestInvalid",
                        "message": "set.yaml:3:1: bad", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    });
    let resp = client()
        .put(format!("{}/pinsets/broken/set/conditions", d.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let html = d.get("/ui/", None).await.1;
    let row = element(
        &html,
        "<tr class=\"pinset\" data-pinset=\"broken/set\"",
        "</tr>",
    );
    assert!(
        row.contains(">Stalled</td>") && row.contains("not applied"),
        "{row}"
    );
    let html = d.get("/ui/pinsets/broken/set", None).await.1;
    let stalled = element(
        &html,
        "<tr class=\"condition\" data-type=\"Stalled\"",
        "</tr>",
    );
    assert!(
        stalled.contains("ManifestInvalid") && stalled.contains("set.yaml:3:1: bad"),
        "{stalled}"
    );

    // The polling script's partial answer is main's content only.
    let partial = client()
        .get(format!("{}/ui/", d.url))
        .header("X-Pinfleet-Partial", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(partial.headers()["x-pinfleet-partial"], "1");
    let partial = partial.text().await.unwrap();
    assert!(partial.starts_with("<h1>") && !partial.contains("<html"));
    assert!(partial.contains("<table id=\"peers\""));

    // PinSet page: conditions with reasons, source, per-peer counts, the
    // first error.
    let html = d
        .wait_page("/ui/pinsets/mirrors/bad", None, |h| {
            h.contains("disk on fire")
        })
        .await;
    let ready = element(
        &html,
        "<tr class=\"condition\" data-type=\"Ready\"",
        "</tr>",
    );
    assert!(
        ready.contains("PinErrors") && ready.contains("1 of 2 pins pinned"),
        "{ready}"
    );
    let source = element(&html, "<section id=\"source\"", "</section>");
    assert!(source.contains("<code>api</code>"), "{source}");
    let errors = element(&html, "<table id=\"errors\"", "</table>");
    assert!(errors.contains(&format!("data-cid=\"{bad}\"")), "{errors}");
    let counts = element(&html, "<table id=\"peer-counts\"", "</table>");
    assert!(
        counts.contains(&format!("data-peer=\"{}\"", d.peer_id)),
        "{counts}"
    );
    assert!(html.contains("<table id=\"reconciles\""));
    assert!(
        html.contains("button id=\"reconcile-now\""),
        "the anonymous admin may reconcile"
    );
    let (missing, _) = d.get("/ui/pinsets/mirrors/nope", None).await;
    assert_eq!(missing, StatusCode::NOT_FOUND);

    // Reconcile now, for a PinSet no controller runs: re-checked and
    // recorded.
    let resp = client()
        .post(format!("{}/ui/pinsets/mirrors/good/reconcile", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], "/ui/pinsets/mirrors/good");
    let html = d
        .wait_page("/ui/pinsets/mirrors/good", None, |h| {
            h.contains("<tr class=\"reconcile\">")
        })
        .await;
    let row = element(&html, "<tr class=\"reconcile\">", "</tr>");
    assert!(row.contains("dashboard") && row.contains(">ok<"), "{row}");

    // Pin search: by CID, by name, paged.
    let html = d.get(&format!("/ui/pins?q={bad}"), None).await.1;
    let row = element(
        &html,
        &format!("<tr class=\"pin\" data-cid=\"{bad}\""),
        "</tr>",
    );
    assert!(
        row.contains("pin_error") && row.contains("disk on fire"),
        "{row}"
    );
    assert!(
        row.contains("href=\"/ui/pinsets/mirrors/bad\""),
        "owners: {row}"
    );
    assert_eq!(count(&html, "<tr class=\"pin\""), 1);
    let html = d.get("/ui/pins?q=pin-119", None).await.1;
    assert_eq!(count(&html, "<tr class=\"pin\""), 1, "{html}");
    assert!(html.contains(&format!("data-cid=\"{}\"", many[119])));
    let page1 = d.get("/ui/pins?q=pin-", None).await.1;
    assert_eq!(count(&page1, "<tr class=\"pin\""), 50);
    assert!(!page1.contains("id=\"prev-page\""));
    let next = element(&page1, "<a id=\"next-page\"", ">");
    let href = next
        .split("href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    let page2 = d.get(&href, None).await.1;
    assert_eq!(count(&page2, "<tr class=\"pin\""), 50);
    assert!(page2.contains("id=\"prev-page\"") && page2.contains("id=\"next-page\""));
    let page3 = d.get("/ui/pins?q=pin-&page=3", None).await.1;
    assert_eq!(
        count(&page3, "<tr class=\"pin\""),
        25,
        "125 pins are named pin-…"
    );
    assert!(!page3.contains("id=\"next-page\""));

    // Escaping: a pin name with markup is shown as text.
    let html = d.get(&format!("/ui/pins?q={xss}"), None).await.1;
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(!html.contains("<script>alert"), "{html}");
    let html = d.get("/ui/pins?q=%3Cscript%3E", None).await.1;
    assert!(
        html.contains("value=\"&lt;script&gt;\""),
        "the query is escaped too"
    );
    assert!(!html.contains("<script>alert"));

    // Peer page: charts of its metrics, its errors.
    let html = d.get(&format!("/ui/peers/{}", d.peer_id), None).await.1;
    let metrics = element(&html, "<section id=\"peer-metrics\"", "</section>");
    for name in ["freespace", "pinqueue", "numpin"] {
        assert!(
            metrics.contains(&format!("<svg class=\"chart\" data-metric=\"{name}\"")),
            "{metrics}"
        );
    }
    assert!(metrics.contains("<polyline"), "{metrics}");
    let errors = element(&html, "<table id=\"peer-errors\"", "</table>");
    assert!(errors.contains(&format!("data-cid=\"{bad}\"")), "{errors}");
    let (unknown, _) = d.get("/ui/peers/12D3KooWnotamember", None).await;
    assert_eq!(unknown, StatusCode::NOT_FOUND);

    // Assets are served from the binary.
    let (st, css) = d.get("/ui/assets/ui.css", None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(css.contains("dl#pin-status"));
    let (st, js) = d.get("/ui/assets/ui.js", None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(js.contains("X-Pinfleet-Partial"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_has_the_api_users_and_roles() {
    let d = Dash::start(
        &[("ann", "admin"), ("wes", "writer"), ("rita", "reader")],
        |s| s,
    )
    .await;
    d.apply(
        "auth",
        "set",
        pinset_yaml("auth", "set", &[cid_v1("ui-auth")]),
        Some("wes"),
    )
    .await;

    // No credentials: to the login page, nothing else.
    let (status, body) = {
        let resp = client().get(format!("{}/ui/", d.url)).send().await.unwrap();
        assert_eq!(resp.headers()[LOCATION], "/ui/login?next=%2Fui%2F");
        (resp.status(), resp.text().await.unwrap())
    };
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(!body.contains("auth/set"));
    for path in ["/ui/pinsets/auth/set", "/ui/pins?q=x", "/ui/peers/x"] {
        let (status, body) = d.get(path, None).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{path}");
        assert!(body.is_empty(), "{path}: {body}");
    }
    let (status, login) = d.get("/ui/login?next=/ui/pins", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(login.contains("<form id=\"login\"") && login.contains("id=\"login-submit\""));
    assert!(login.contains("name=\"next\" value=\"/ui/pins\""));
    let (status, _) = d.get("/ui/assets/ui.css", None).await;
    assert_eq!(status, StatusCode::OK, "assets are open");

    // A wrong password: 401 and the form again, saying so.
    let resp = client()
        .post(format!("{}/ui/login", d.url))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form(&[("username", "rita"), ("password", "wrong")]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get(SET_COOKIE).is_none());
    assert!(resp.text().await.unwrap().contains("<p id=\"login-error\""));

    // A reader sees everything, with no reconcile button, and may not post.
    let reader = d.login("rita").await;
    let html = d
        .wait_page("/ui/pinsets/auth/set", Some(&reader), |h| {
            h.contains("1/1 pinned")
        })
        .await;
    assert!(!html.contains("reconcile-now"), "{html}");
    assert!(html.contains("id=\"logout\"") && html.contains("rita (reader)"));
    let resp = client()
        .post(format!("{}/ui/pinsets/auth/set/reconcile", d.url))
        .header(COOKIE, &reader)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // A writer's "reconcile now" is recorded.
    let writer = d.login("wes").await;
    let html = d.get("/ui/pinsets/auth/set", Some(&writer)).await.1;
    assert!(html.contains("<form id=\"reconcile-form\""));
    assert!(!html.contains("<tr class=\"reconcile\">"));
    // A post from another site is refused, even with the cookie.
    let resp = client()
        .post(format!("{}/ui/pinsets/auth/set/reconcile", d.url))
        .header(COOKIE, &writer)
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let host = d.url.trim_start_matches("http://").to_string();
    let resp = client()
        .post(format!("{}/ui/pinsets/auth/set/reconcile", d.url))
        .header(COOKIE, &writer)
        .header("Origin", format!("http://{host}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    d.wait_page("/ui/pinsets/auth/set", Some(&writer), |h| {
        h.contains("<tr class=\"reconcile\">")
    })
    .await;

    // Basic auth works as for the API (curl); a bad session does not.
    let resp = client()
        .get(format!("{}/ui/", d.url))
        .basic_auth("ann", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (status, _) = d
        .get("/ui/", Some("pinfleet_session=forged.token.here"))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    // Logging out forgets the cookie.
    let resp = client()
        .post(format!("{}/ui/logout", d.url))
        .header(COOKIE, &writer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], "/ui/login");
    assert!(
        resp.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_off_answers_404_and_reconciles_are_kept_ten_newest_first() {
    let d = Dash::start(&[], |mut s| {
        s.ui = None;
        s
    })
    .await;
    for path in ["/ui/", "/ui/login", "/ui/assets/ui.css"] {
        let (status, _) = d.get(path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    // What a controller sends with its conditions: each reconcile is kept,
    // the last ten, newest first, in the cluster state.
    d.apply("hist", "set", pinset_yaml("hist", "set", &[]), None)
        .await;
    for i in 0..12 {
        let body = serde_json::json!({
            "source": "dir:/x",
            "conditions": [],
            "reconcile": {"trigger": "interval", "ok": i % 2 == 0, "message": format!("run {i}"),
                          "durationMs": i, "added": i, "removed": 0, "revision": "r"},
        });
        let resp = client()
            .put(format!("{}/pinsets/hist/set/conditions", d.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    }
    let owner = pinfleet::manifest::Owner::pinset(pinfleet::manifest::PinSetId::new("hist", "set"));
    let record = d.peer.node.store().conditions(&owner).unwrap().unwrap();
    let messages: Vec<&str> = record
        .reconciles
        .iter()
        .map(|r| r.message.as_str())
        .collect();
    assert_eq!(
        messages,
        (2..12)
            .rev()
            .map(|i| format!("run {i}"))
            .collect::<Vec<_>>()
    );
    assert!(
        record.reconciles.iter().all(|r| r.at_ms > 0),
        "timed by the state machine"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controllers_reconciles_are_recorded_with_their_trigger() {
    use pinfleet::client::Client;
    use pinfleet::controller::{Controller, ControllerOptions};
    use pinfleet::source::DirSource;
    let d = Dash::start(&[], |s| s).await;
    let dir = tempfile::tempdir().unwrap();
    crate::support::write_tree(
        dir.path(),
        &[(
            "set.yaml",
            &pinset_yaml("ctl", "set", &[cid_v1("ui-ctl-0"), cid_v1("ui-ctl-1")]),
        )],
    );
    let src = DirSource::new(dir.path(), pinfleet::manifest::Limits::default()).unwrap();
    let mut ctl = Controller::new(
        Client::new(&d.url).unwrap(),
        ControllerOptions {
            source: src.name(),
            force: false,
            requests: Default::default(),
        },
    );
    assert!(ctl.reconcile(src.load().await, false).await.healthy());
    // The same revision again: skipped, nothing recorded.
    assert!(ctl.reconcile(src.load().await, false).await.skipped);
    // The interval's drift repair runs, and is recorded.
    assert!(ctl.reconcile(src.load().await, true).await.healthy());
    let html = d
        .wait_page("/ui/pinsets/ctl/set", None, |h| {
            count(h, "<tr class=\"reconcile\">") == 2
        })
        .await;
    let table = element(&html, "<table id=\"reconciles\"", "</table>");
    let rows: Vec<&str> = table.split("<tr class=\"reconcile\">").skip(1).collect();
    assert!(
        rows[0].contains(">interval<") && rows[0].contains(">ok<"),
        "{}",
        rows[0]
    );
    assert!(rows[1].contains(">change<"), "{}", rows[1]);
    assert!(
        rows[1].contains("<td class=\"num\">2</td>"),
        "two pins added: {}",
        rows[1]
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_pinsets_are_listed_then_counted_and_their_pins_searched_by_page() {
    let d = Dash::start(&[], |s| s).await;
    for i in 0..100 {
        let name = format!("set-{i:03}");
        let cids: Vec<String> = (0..5).map(|j| cid_v1(&format!("ui-100-{i}-{j}"))).collect();
        d.apply("many", &name, pinset_yaml("many", &name, &cids), None)
            .await;
    }
    // Every view lists every PinSet, counted or not yet (how long a view
    // takes is `cargo bench --bench dashboard`'s to measure, not a test's).
    for _ in 0..3 {
        let (status, html) = d.get("/ui/", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(count(&html, "<tr class=\"pinset\""), 100);
    }
    let html = d
        .wait_page("/ui/", None, |h| count(h, "5/5 pinned") == 100)
        .await;
    assert_eq!(count(&html, ">Ready</td>"), 100);
    let (status, html) = d.get("/ui/pins?q=pin-4&page=2", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<table id=\"pins\""), "{html}");
    d.stop().await;
}
