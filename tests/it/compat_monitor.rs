//! IPFS Cluster compatibility of `GET /monitor/metrics[/{name}]` and of
//! trailing slashes (307 to the route without it), against a real
//! `pinfleet daemon` (embedded IPFS node, one peer).

use std::time::Duration;

use serde_json::Value;

/// A `pinfleet daemon` with the tag `region=eu`, killed when dropped.
pub(crate) struct Peer {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    pub(crate) url: String,
    pub(crate) id: String,
}

impl Peer {
    pub(crate) fn start() -> Peer {
        let dir = tempfile::tempdir().unwrap();
        crate::support::init_peer(dir.path());
        let log = dir.path().join("daemon.log");
        let mut child = crate::support::spawn_daemon_logged(
            dir.path(),
            &[],
            &[
                ("PINFLEET_INFORMER_TAGS", "region=eu"),
                ("PINFLEET_IPFS_EMBEDDED_LISTEN", "/ip4/127.0.0.1/tcp/0"),
            ],
            &log,
        );
        let info = crate::support::wait_running(dir.path(), &mut child);
        Peer {
            child,
            _dir: dir,
            url: info.api.trim_end_matches('/').to_string(),
            id: info.id,
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            crate::support::kill_daemon(&mut self.child);
        }
    }
}

/// `GET /monitor/metrics` until it lists every name in `want` (30 s).
async fn wait_names(client: &reqwest::Client, url: &str, want: &[&str]) -> Vec<String> {
    let start = tokio::time::Instant::now();
    loop {
        let resp = client
            .get(format!("{url}/monitor/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let names: Vec<String> = resp.json().await.unwrap();
        if want.iter().all(|w| names.iter().any(|n| n == w)) {
            return names;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "metric names {names:?} lack some of {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_metrics_answer_ipfs_cluster_metric_json_for_each_informer() {
    let peer = Peer::start();
    let client = crate::support::http();
    let want = ["freespace", "numpin", "pinqueue", "ping", "tag:region"];
    let names = wait_names(&client, &peer.url, &want).await;
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "names are sorted");

    let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    for name in want {
        let resp = client
            .get(format!("{}/monitor/metrics/{name}", peer.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{name}");
        let list: Vec<Value> = resp.json().await.unwrap();
        assert_eq!(list.len(), 1, "{name}: one peer, one metric: {list:?}");
        crate::compat_shapes::check(&list[0], &crate::compat_shapes::METRIC, name);
        let m = list[0].as_object().unwrap();
        assert_eq!(m["name"], name);
        assert_eq!(m["peer"], peer.id.as_str());
        assert_eq!(m["valid"], true, "{name}");
        let expire = m["expire"].as_i64().unwrap();
        let received = m["received_at"].as_i64().unwrap();
        // Unix nanoseconds: received within the last minute, expiring later.
        assert!(received <= now_ns + 1_000_000_000, "{name}: {m:?}");
        assert!(received > now_ns - 60_000_000_000, "{name}: {m:?}");
        assert!(expire > received, "{name}: {m:?}");
    }
    let tag: Vec<Value> = client
        .get(format!("{}/monitor/metrics/tag:region", peer.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tag[0]["value"], "eu");
    assert_eq!(tag[0]["partitionable"], true);
    let free: Vec<Value> = client
        .get(format!("{}/monitor/metrics/freespace", peer.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let value = free[0]["value"].as_str().unwrap();
    assert!(value.parse::<u64>().unwrap() > 0, "{value}");

    // A name nobody sends: an empty list, as IPFS Cluster answers.
    let resp = client
        .get(format!("{}/monitor/metrics/nosuch", peer.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_slash_on_a_known_route_redirects_307_keeping_method_and_query() {
    let peer = Peer::start();
    let client = crate::support::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cid = crate::support::cid_v1("slash");
    let cases = [
        (reqwest::Method::GET, "/pins/", "/pins"),
        (reqwest::Method::GET, "/peers/", "/peers"),
        (
            reqwest::Method::GET,
            "/pins/?filter=pinned&local=true",
            "/pins?filter=pinned&local=true",
        ),
        (
            reqwest::Method::POST,
            &format!("/pins/{cid}/?replication-min=1"),
            &format!("/pins/{cid}?replication-min=1"),
        ),
        (
            reqwest::Method::DELETE,
            &format!("/pins/{cid}/"),
            &format!("/pins/{cid}"),
        ),
        (
            reqwest::Method::GET,
            "/monitor/metrics/freespace/",
            "/monitor/metrics/freespace",
        ),
    ];
    for (method, path, location) in cases {
        let resp = client
            .request(method.clone(), format!("{}{path}", peer.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 307, "{method} {path}");
        assert_eq!(
            resp.headers()["location"].to_str().unwrap(),
            location,
            "{method} {path}"
        );
    }
    // Nothing was pinned by the redirected POST.
    let resp = client
        .get(format!("{}/allocations/{cid}", peer.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    for path in ["/nosuch/", "/pins/a/b/", "/pins//", "/"] {
        let resp = client
            .get(format!("{}{path}", peer.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], 404, "{path}: {body}");
    }

    // Followed, the redirect reaches the route with method and body kept.
    let follow = crate::support::http();
    let resp = follow
        .post(format!("{}/pins/{cid}/", peer.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let resp = follow
        .get(format!("{}/allocations/{cid}", peer.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
