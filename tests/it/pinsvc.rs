//! The IPFS Pinning Service API (issue 15) against real daemons: one peer
//! with three tokens for the spec's points, token and owner isolation; a
//! property test of pagination; a three-peer testbed for follower writes,
//! read-your-writes, `pinned` and `delegates`. Every response body any of
//! these tests receives is validated against our own JSON Schema of the
//! spec's `PinStatus`, `PinResults` and `Failure` (`pinsvc_schema.json`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{cid_v1, http, init_peer, pinset_yaml, spawn_daemon, wait_running};

const ALICE: &str = "alice-0123456789abcdef";
const BOB: &str = "bob-0123456789abcdef";
const CAROL: &str = "carol-0123456789abcdef";
const PAGER: &str = "pager-0123456789abcdef";

/// How long a test waits for any one condition.
const DEADLINE: Duration = Duration::from_secs(60);

/// Every status, as a filter.
const ALL: &str = "status=queued,pinning,pinned,failed";

/// The schema's validators, by definition name.
fn validators() -> BTreeMap<&'static str, jsonschema::Validator> {
    let text =
        std::fs::read_to_string(crate::support::repo_path("tests/it/pinsvc_schema.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    ["PinStatus", "PinResults", "Failure"]
        .into_iter()
        .map(|name| {
            let root = json!({"$ref": format!("#/$defs/{name}"), "$defs": doc["$defs"]});
            let v = jsonschema::options()
                .should_validate_formats(true)
                .build(&root)
                .unwrap();
            (name, v)
        })
        .collect()
}

/// A client of one peer's Pinning Service API that checks every answer
/// against the schema.
struct Svc {
    base: String,
    client: reqwest::Client,
    schema: BTreeMap<&'static str, jsonschema::Validator>,
}

/// One answer: status and JSON body (`Null` when empty).
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Svc {
    fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            client: http(),
            schema: validators(),
        }
    }

    /// Sends and validates: a 2xx list is `PinResults`, another 2xx with a
    /// body `PinStatus`, a 202 to `DELETE` has no body, any error is
    /// `Failure` JSON.
    async fn send(&self, req: reqwest::RequestBuilder, method: &Method, path: &str) -> Answer {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let text = resp.text().await.unwrap();
        let is_list = *method == Method::GET && path.split('?').next() == Some("/pins");
        let kind = if !status.is_success() {
            "Failure"
        } else if *method == Method::DELETE {
            assert_eq!(status, StatusCode::ACCEPTED, "{method} {path}");
            assert!(text.is_empty(), "DELETE answers 202 with no body: {text:?}");
            return Answer {
                status,
                body: Value::Null,
            };
        } else if is_list {
            "PinResults"
        } else {
            "PinStatus"
        };
        assert_eq!(
            ctype.as_deref(),
            Some("application/json"),
            "{method} {path} -> {status}: {text}"
        );
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path} -> {status}: not JSON ({e}): {text}"));
        let errors: Vec<String> = self.schema[kind]
            .iter_errors(&body)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} -> {status}: not a {kind}: {errors:?}\n{body:#}"
        );
        Answer { status, body }
    }

    fn req(&self, method: &Method, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let r = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn call(&self, method: Method, path: &str, token: Option<&str>) -> Answer {
        let r = self.req(&method, path, token);
        self.send(r, &method, path).await
    }

    async fn post(&self, path: &str, token: &str, body: &Value) -> Answer {
        let r = self.req(&Method::POST, path, Some(token)).json(body);
        self.send(r, &Method::POST, path).await
    }

    /// `POST` with a raw body and content type.
    async fn post_raw(&self, path: &str, token: &str, ctype: Option<&str>, body: &str) -> Answer {
        let mut r = self
            .req(&Method::POST, path, Some(token))
            .body(body.to_string());
        if let Some(c) = ctype {
            r = r.header("content-type", c);
        }
        self.send(r, &Method::POST, path).await
    }

    /// `POST /pins`, retried while the cluster has no leader yet (503).
    async fn create(&self, token: &str, pin: &Value) -> Value {
        let start = tokio::time::Instant::now();
        loop {
            let a = self.post("/pins", token, pin).await;
            if a.status == StatusCode::SERVICE_UNAVAILABLE && start.elapsed() < DEADLINE {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            assert_eq!(a.status, StatusCode::ACCEPTED, "{:#}", a.body);
            return a.body;
        }
    }

    async fn list(&self, token: &str, query: &str) -> Value {
        let a = self
            .call(Method::GET, &format!("/pins?{query}"), Some(token))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{query}: {:#}", a.body);
        a.body
    }

    /// Waits until request `id` reports `status`.
    async fn wait_status(&self, token: &str, id: &str, status: &str) -> Value {
        let start = tokio::time::Instant::now();
        loop {
            let a = self
                .call(Method::GET, &format!("/pins/{id}"), Some(token))
                .await;
            assert_eq!(a.status, StatusCode::OK, "{:#}", a.body);
            if a.body["status"] == status {
                return a.body;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{id} never became {status}: {:#}",
                a.body
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A daemon killed when the test ends, however it ends.
struct Daemon {
    child: std::process::Child,
    info: pinfleet::daemon::RunInfo,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One peer on the embedded IPFS node with these `[pinsvc] tokens`.
fn daemon(tokens: &str) -> Daemon {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    init_peer(dir.path());
    let mut child = spawn_daemon(
        dir.path(),
        &[
            ("PINFLEET_PINSVC_LISTEN", "127.0.0.1:0"),
            ("PINFLEET_PINSVC_TOKENS", tokens),
            ("PINFLEET_IPFS_BACKEND", "embedded"),
            ("PINFLEET_IPFS_EMBEDDED_LISTEN", "/ip4/127.0.0.1/tcp/0"),
        ],
    );
    let info = wait_running(dir.path(), &mut child);
    Daemon {
        child,
        info,
        _dir: dir,
    }
}

/// Adds `data` to the IPFS node of the peer whose REST API is `api`,
/// without pinning it; its CID.
async fn add_unpinned(api: &str, data: &str) -> String {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(data.as_bytes().to_vec()).file_name("f"),
    );
    let resp = http()
        .post(format!("{api}/add?no-pin=true&stream-channels=false"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let lines: Vec<Value> = resp.json().await.unwrap();
    lines.last().unwrap()["cid"].as_str().unwrap().to_string()
}

/// Owners of `cid` in the shared state (REST `GET /allocations/{cid}`).
async fn owners(api: &str, cid: &str) -> Vec<String> {
    crate::support::owners_at(api, cid)
        .await
        .unwrap_or_default()
}

fn ids(list: &Value) -> Vec<String> {
    list["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requestid"].as_str().unwrap().to_string())
        .collect()
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn nanos(created: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(created.as_str().unwrap())
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pinning_service_api_answers_every_point_of_the_spec() {
    let tokens = format!("alice={ALICE},bob={BOB},carol=reader:{CAROL}");
    let d = daemon(&tokens);
    let svc = Svc::new(
        d.info
            .pinsvc
            .as_deref()
            .expect("run.json names the listener"),
    );
    let api = d.info.api.clone();

    // 401 before anything is looked up, for every route and method.
    for (m, path) in [
        (Method::GET, "/pins"),
        (Method::POST, "/pins"),
        (Method::GET, "/pins/anything"),
        (Method::DELETE, "/pins/anything"),
        (Method::GET, "/no/such/route"),
    ] {
        for token in [None, Some("wrong-token-0123456789")] {
            let a = svc.call(m.clone(), path, token).await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{m} {path}");
            assert_eq!(a.body["error"]["reason"], "UNAUTHORIZED");
        }
    }
    let basic = svc
        .send(
            svc.req(&Method::GET, "/pins", None)
                .basic_auth("alice", Some(ALICE)),
            &Method::GET,
            "/pins",
        )
        .await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);

    // Create: 202, a PinStatus echoing the Pin, an opaque id.
    let content = add_unpinned(&api, "the pinning service's content").await;
    let origin =
        "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK";
    let pin = json!({
        "cid": content,
        "name": "Report.PDF",
        "origins": [origin],
        "meta": {"app": "a", "v": "1"},
    });
    let created = svc.create(ALICE, &pin).await;
    let first = created["requestid"].as_str().unwrap().to_string();
    assert_ne!(first, content, "the request id is not the CID");
    assert_eq!(created["pin"]["cid"], content);
    assert_eq!(created["pin"]["name"], "Report.PDF");
    assert_eq!(created["pin"]["origins"], json!([origin]));
    assert_eq!(created["pin"]["meta"], json!({"app": "a", "v": "1"}));
    // Origins are passed on to the cluster's pin.
    let allocation: Value = crate::support::get_json(&format!("{api}/allocations/{content}")).await;
    assert_eq!(allocation["origins"], json!([origin]), "{allocation:#}");
    assert_eq!(owners(&api, &content).await, ["pinsvc:alice"]);
    // Read-your-writes: the request is there at once.
    let got = svc
        .call(Method::GET, &format!("/pins/{first}"), Some(ALICE))
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["created"], created["created"]);
    // The content is on this node: it becomes pinned.
    svc.wait_status(ALICE, &first, "pinned").await;

    // Pending requests (CIDs nobody has), several in one go: each gets its
    // own id and a distinct created time.
    let names = ["alpha", "ALPHA-2", "beta"];
    let cids: Vec<String> = (0..3).map(|i| cid_v1(&format!("pinsvc-{i}"))).collect();
    let mut made = Vec::new();
    for (name, cid) in names.iter().zip(&cids) {
        let body = svc
            .create(
                ALICE,
                &json!({"cid": cid, "name": name, "meta": {"app": "b"}}),
            )
            .await;
        made.push(body);
    }
    let created_at: BTreeSet<i64> = made.iter().map(|m| nanos(&m["created"])).collect();
    assert_eq!(created_at.len(), 3, "created values are unique");
    let every = svc.list(ALICE, ALL).await;
    assert_eq!(every["count"], 4);
    let mut newest_first = made
        .iter()
        .rev()
        .map(|m| m["requestid"].as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    newest_first.push(first.clone());
    assert_eq!(ids(&every), newest_first, "newest first");
    let times: Vec<i64> = every["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| nanos(&r["created"]))
        .collect();
    assert!(times.windows(2).all(|w| w[0] > w[1]), "{times:?}");

    // Without a status filter only pinned requests are listed.
    let default = svc.list(ALICE, "").await;
    assert_eq!(ids(&default), [first.as_str()]);
    assert_eq!(default["count"], 1);
    let pending = svc.list(ALICE, "status=queued,pinning").await;
    assert_eq!(pending["count"], 3, "{pending:#}");

    // count is every match, the page is `limit` long.
    let one = svc.list(ALICE, &format!("{ALL}&limit=1")).await;
    assert_eq!((one["count"].as_u64(), ids(&one).len()), (Some(4), 1));
    let default_limit = svc.list(ALICE, ALL).await;
    assert_eq!(ids(&default_limit).len(), 4);

    // before / after are strict.
    let newest = &every["results"][0]["created"];
    let oldest = &every["results"][3]["created"];
    let before = svc
        .list(
            ALICE,
            &format!("{ALL}&before={}", enc(newest.as_str().unwrap())),
        )
        .await;
    assert_eq!(ids(&before), newest_first[1..].to_vec());
    assert_eq!(before["count"], 3);
    let after = svc
        .list(
            ALICE,
            &format!("{ALL}&after={}", enc(oldest.as_str().unwrap())),
        )
        .await;
    assert_eq!(ids(&after), newest_first[..3].to_vec());

    // Name match modes.
    let by_name = |q: &str| {
        let q = q.to_string();
        let svc = &svc;
        async move {
            let l = svc.list(ALICE, &format!("{ALL}&{q}")).await;
            let mut n: Vec<String> = l["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["pin"]["name"].as_str().unwrap().to_string())
                .collect();
            n.sort();
            n
        }
    };
    assert_eq!(by_name("name=alpha").await, ["alpha"]);
    assert_eq!(by_name("name=alpha&match=exact").await, ["alpha"]);
    assert_eq!(by_name("name=Alpha&match=iexact").await, ["alpha"]);
    assert_eq!(by_name("name=ALPHA&match=partial").await, ["ALPHA-2"]);
    assert_eq!(
        by_name("name=alpha&match=ipartial").await,
        ["ALPHA-2", "alpha"]
    );
    assert_eq!(
        by_name("name=report.pdf&match=iexact").await,
        ["Report.PDF"]
    );

    // cid filter, up to 10.
    let two = svc
        .list(ALICE, &format!("{ALL}&cid={},{}", cids[0], content))
        .await;
    let mut got: Vec<String> = two["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pin"]["cid"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    let mut want = vec![cids[0].clone(), content.clone()];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(two["count"], 2);
    let eleven: Vec<String> = (0..11).map(|i| cid_v1(&format!("eleven-{i}"))).collect();
    let a = svc
        .call(
            Method::GET,
            &format!("/pins?cid={}", eleven.join(",")),
            Some(ALICE),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    // meta filter: URL-encoded JSON, every pair must match.
    let app_b = svc
        .list(ALICE, &format!("{ALL}&meta={}", enc(r#"{"app":"b"}"#)))
        .await;
    assert_eq!(app_b["count"], 3);
    let both = svc
        .list(
            ALICE,
            &format!("{ALL}&meta={}", enc(r#"{"app":"a","v":"1"}"#)),
        )
        .await;
    assert_eq!(ids(&both), [first.as_str()]);
    let none = svc
        .list(
            ALICE,
            &format!("{ALL}&meta={}", enc(r#"{"app":"a","v":"2"}"#)),
        )
        .await;
    assert_eq!(none["count"], 0);

    // Invalid or empty filter values are 400.
    for q in [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "limit=",
        "status=",
        "status=done",
        "cid=",
        "cid=not-a-cid",
        "name=",
        "match=fuzzy",
        "match=",
        "before=yesterday",
        "before=",
        "after=2020-13-01T00:00:00Z",
        "meta=",
        "meta=%7Bnot%20json",
        "meta=%5B%5D",
        "meta=%7B%22n%22%3A1%7D",
    ] {
        let a = svc
            .call(Method::GET, &format!("/pins?{q}"), Some(ALICE))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{q}: {:#}", a.body);
        assert_eq!(a.body["error"]["reason"], "BAD_REQUEST");
    }
    let long_name = "n".repeat(256);
    let a = svc
        .call(Method::GET, &format!("/pins?name={long_name}"), Some(ALICE))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    // Bodies: limits and types.
    let meta_1001: serde_json::Map<String, Value> =
        (0..1001).map(|i| (format!("k{i}"), json!("v"))).collect();
    let meta_1000: serde_json::Map<String, Value> =
        (0..1000).map(|i| (format!("k{i}"), json!("v"))).collect();
    let c = cid_v1("pinsvc-bodies");
    for bad in [
        json!({"name": "no cid"}),
        json!({"cid": "not-a-cid"}),
        json!({"cid": 5}),
        json!({"cid": c, "name": "x".repeat(256)}),
        json!({"cid": c, "meta": meta_1001}),
        json!({"cid": c, "meta": {"n": 1}}),
        json!({"cid": c, "origins": ["not a multiaddr"]}),
        json!({"cid": c, "origins": "/ip4/1.2.3.4/tcp/1"}),
        json!([c]),
    ] {
        let a = svc.post("/pins", ALICE, &bad).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {:#}", a.body);
    }
    let edge = svc
        .create(
            ALICE,
            &json!({"cid": c, "name": "é".repeat(255), "meta": meta_1000}),
        )
        .await;
    assert_eq!(edge["pin"]["meta"].as_object().unwrap().len(), 1000);

    // The framework's own rejections, as Failure JSON.
    let a = svc
        .post_raw("/pins", ALICE, Some("application/json"), "{not json")
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let body = json!({"cid": c}).to_string();
    let a = svc
        .post_raw("/pins", ALICE, Some("text/plain"), &body)
        .await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let a = svc.post_raw("/pins", ALICE, None, &body).await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let a = svc.call(Method::GET, "/no/such/route", Some(ALICE)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.body["error"]["reason"], "NOT_FOUND");
    for (m, path) in [(Method::PUT, "/pins"), (Method::PATCH, "/pins/x")] {
        let a = svc.call(m.clone(), path, Some(ALICE)).await;
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{m} {path}");
    }

    // Unknown ids are 404, never 400.
    for id in ["unknown", "%25%25", &"z".repeat(300)] {
        for m in [Method::GET, Method::DELETE] {
            let a = svc
                .call(m.clone(), &format!("/pins/{id}"), Some(ALICE))
                .await;
            assert_eq!(a.status, StatusCode::NOT_FOUND, "{m} {id}");
        }
        let a = svc
            .post(&format!("/pins/{id}"), ALICE, &json!({"cid": c}))
            .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "replace {id}");
    }

    // Token isolation: bob sees and changes none of alice's requests.
    assert_eq!(svc.list(BOB, ALL).await["count"], 0);
    let path = format!("/pins/{first}");
    assert_eq!(
        svc.call(Method::GET, &path, Some(BOB)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        svc.call(Method::DELETE, &path, Some(BOB)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        svc.post(&path, BOB, &json!({"cid": c})).await.status,
        StatusCode::NOT_FOUND
    );
    let bobs = svc.create(BOB, &json!({"cid": cids[0]})).await;
    assert_eq!(
        ids(&svc.list(BOB, ALL).await),
        [bobs["requestid"].as_str().unwrap()]
    );
    let mut both = owners(&api, &cids[0]).await;
    both.sort();
    assert_eq!(both, ["pinsvc:alice", "pinsvc:bob"]);
    // A reader token lists but cannot write.
    assert_eq!(svc.list(CAROL, ALL).await["count"], 0);
    let a = svc.post("/pins", CAROL, &json!({"cid": c})).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(
        svc.call(Method::DELETE, &path, Some(CAROL)).await.status,
        StatusCode::NOT_FOUND
    );

    // Replace: a new id, the old one is gone, the new CID held.
    let old = made[2]["requestid"].as_str().unwrap().to_string();
    let new_cid = cid_v1("pinsvc-replacement");
    let a = svc
        .post(
            &format!("/pins/{old}"),
            ALICE,
            &json!({"cid": new_cid, "name": "beta-2"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    let replaced = a.body["requestid"].as_str().unwrap().to_string();
    assert_ne!(replaced, old);
    assert_eq!(
        svc.call(Method::GET, &format!("/pins/{old}"), Some(ALICE))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        svc.call(Method::GET, &format!("/pins/{replaced}"), Some(ALICE))
            .await
            .body["pin"]["name"],
        "beta-2"
    );
    assert!(owners(&api, &cids[2]).await.is_empty(), "old CID released");
    assert_eq!(owners(&api, &new_cid).await, ["pinsvc:alice"]);

    // Delete: 202 without a body, then 404.
    let a = svc
        .call(Method::DELETE, &format!("/pins/{replaced}"), Some(ALICE))
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    assert_eq!(
        svc.call(Method::GET, &format!("/pins/{replaced}"), Some(ALICE))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        svc.call(Method::DELETE, &format!("/pins/{replaced}"), Some(ALICE))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert!(owners(&api, &new_cid).await.is_empty());

    // Owner isolation: a CID a PinSet also owns stays pinned when the
    // service deletes its request, which is then gone.
    let shared = cids[1].clone();
    let put = http()
        .put(format!("{api}/pinsets/it/shared"))
        .body(pinset_yaml("it", "shared", std::slice::from_ref(&shared)))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());
    let mut held = owners(&api, &shared).await;
    held.sort();
    assert_eq!(held, ["pinset:it/shared", "pinsvc:alice"]);
    let shared_id = made[1]["requestid"].as_str().unwrap();
    let a = svc
        .call(Method::DELETE, &format!("/pins/{shared_id}"), Some(ALICE))
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    assert_eq!(owners(&api, &shared).await, ["pinset:it/shared"]);
    assert_eq!(
        svc.call(Method::GET, &format!("/pins/{shared_id}"), Some(ALICE))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // And the REST API's own unpin leaves the service's pin alone.
    let rest = http()
        .delete(format!("{api}/pins/{content}"))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), StatusCode::CONFLICT);
    assert_eq!(owners(&api, &content).await, ["pinsvc:alice"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_no_node_can_take_reports_failed_with_the_reason_in_info() {
    // Without an IPFS node every pin attempt errors.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    init_peer(dir.path());
    let mut child = spawn_daemon(
        dir.path(),
        &[
            ("PINFLEET_PINSVC_LISTEN", "127.0.0.1:0"),
            ("PINFLEET_PINSVC_TOKENS", &format!("alice={ALICE}")),
            ("PINFLEET_IPFS_BACKEND", "none"),
        ],
    );
    let info = wait_running(dir.path(), &mut child);
    let d = Daemon {
        child,
        info,
        _dir: dir,
    };
    let svc = Svc::new(d.info.pinsvc.as_deref().unwrap());
    let made = svc
        .create(ALICE, &json!({"cid": cid_v1("pinsvc-failed")}))
        .await;
    let id = made["requestid"].as_str().unwrap();
    let failed = svc.wait_status(ALICE, id, "failed").await;
    let details = failed["info"]["status_details"]
        .as_str()
        .unwrap_or_default();
    assert!(!details.is_empty(), "{failed:#}");
    // Delegates are never empty, even without an IPFS node to name.
    assert!(!failed["delegates"].as_array().unwrap().is_empty());
    let listed = svc.list(ALICE, "status=failed").await;
    assert_eq!(ids(&listed), [id]);
    assert_eq!(svc.list(ALICE, "").await["count"], 0, "not pinned");
}

/// The default listing (`pinned` only) pages from the matches its first
/// page found, and still counts a request created or deleted since, even
/// while the statuses it used are reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pinned_listing_pages_once_each_and_sees_creates_and_deletes() {
    let d = daemon(&format!("alice={ALICE}"));
    let svc = Svc::new(d.info.pinsvc.as_deref().unwrap());
    let api = d.info.api.clone();
    let mut made = Vec::new();
    for i in 0..7 {
        let cid = add_unpinned(&api, &format!("pinned listing {i}")).await;
        let r = svc
            .create(ALICE, &json!({"cid": cid, "name": format!("p{i}")}))
            .await;
        made.push(r["requestid"].as_str().unwrap().to_string());
    }
    for id in &made {
        svc.wait_status(ALICE, id, "pinned").await;
    }
    // Pages of 3 walked with `before`: every request once, newest first,
    // each page counting what is left from it.
    let mut seen: Vec<String> = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut q = "limit=3".to_string();
        if let Some(b) = &before {
            q.push_str(&format!("&before={}", enc(b)));
        }
        let page = svc.list(ALICE, &q).await;
        assert_eq!(
            page["count"].as_u64().unwrap(),
            (made.len() - seen.len()) as u64,
            "{q}: {page:#}"
        );
        let results = page["results"].as_array().unwrap();
        if results.is_empty() {
            break;
        }
        assert!(results.iter().all(|r| r["status"] == "pinned"));
        seen.extend(ids(&page));
        before = results
            .last()
            .map(|r| r["created"].as_str().unwrap().to_string());
        assert!(seen.len() <= made.len(), "{seen:?}");
    }
    let newest_first: Vec<String> = made.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    // None is queued or pinning.
    assert_eq!(svc.list(ALICE, "status=queued,pinning").await["count"], 0);

    // A new request counts as soon as it is pinned; a deleted one leaves.
    let cid = add_unpinned(&api, "pinned listing, later").await;
    let late = svc.create(ALICE, &json!({"cid": cid})).await;
    let late = late["requestid"].as_str().unwrap().to_string();
    svc.wait_status(ALICE, &late, "pinned").await;
    let page = svc.list(ALICE, "limit=1").await;
    assert_eq!(page["count"], 8, "{page:#}");
    assert_eq!(ids(&page), [late]);
    let gone = svc
        .call(Method::DELETE, &format!("/pins/{}", made[6]), Some(ALICE))
        .await;
    assert_eq!(gone.status, StatusCode::ACCEPTED);
    let page = svc.list(ALICE, "limit=1000").await;
    assert_eq!(page["count"], 7, "{page:#}");
    assert!(!ids(&page).contains(&made[6]));
    // A filter on top of the status: the name index, then the status.
    let page = svc.list(ALICE, "name=P3&match=iexact").await;
    assert_eq!(ids(&page), [made[3].clone()]);
}

/// Every request of `token` walked with `before` in pages of `limits`
/// (cycled), newest first.
async fn walk(svc: &Svc, token: &str, filter: &str, limits: &[usize]) -> Vec<(String, i64)> {
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    for step in 0.. {
        let limit = limits[step % limits.len()];
        let mut q = format!("{ALL}&limit={limit}{filter}");
        if let Some(b) = &before {
            q.push_str(&format!("&before={}", enc(b)));
        }
        let page = svc.list(token, &q).await;
        let results = page["results"].as_array().unwrap();
        assert!(results.len() <= limit);
        assert!(page["count"].as_u64().unwrap() >= results.len() as u64);
        if results.is_empty() {
            break;
        }
        for r in results {
            seen.push((
                r["requestid"].as_str().unwrap().to_string(),
                nanos(&r["created"]),
            ));
        }
        before = results
            .last()
            .map(|r| r["created"].as_str().unwrap().to_string());
        assert!(step < 1000, "the walk does not end");
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_with_before_sees_every_request_once_in_order() {
    use proptest::prelude::*;
    let d = daemon(&format!("pager={PAGER}"));
    let svc = Svc::new(d.info.pinsvc.as_deref().unwrap());
    let rt = tokio::runtime::Handle::current();
    // Every request created so far (the closure is `Fn`).
    let all: std::cell::RefCell<Vec<String>> = std::cell::RefCell::default();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 4,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (1usize..=12, prop::collection::vec(1usize..=5, 1..4));
    let case = std::cell::Cell::new(0);
    let result = runner.run(&strategy, |(n, limits)| {
        case.set(case.get() + 1);
        let tag = format!("case-{}", case.get());
        let (mine, walked_tag, walked_all) = tokio::task::block_in_place(|| {
            rt.block_on(async {
                let mut mine = Vec::new();
                for i in 0..n {
                    let cid = cid_v1(&format!("pager-{tag}-{i}"));
                    let r = svc
                        .create(PAGER, &json!({"cid": cid, "meta": {"case": tag}}))
                        .await;
                    mine.push(r["requestid"].as_str().unwrap().to_string());
                }
                let filter = format!("&meta={}", enc(&format!(r#"{{"case":"{tag}"}}"#)));
                (
                    mine,
                    walk(&svc, PAGER, &filter, &limits).await,
                    walk(&svc, PAGER, "", &limits).await,
                )
            })
        });
        all.borrow_mut().extend(mine.iter().cloned());
        // The filtered walk: exactly this case's requests, newest first.
        let got: Vec<String> = walked_tag.iter().map(|(id, _)| id.clone()).collect();
        let want: Vec<String> = mine.iter().rev().cloned().collect();
        prop_assert_eq!(got, want);
        // The whole walk: every request once, strictly newest first.
        prop_assert!(walked_all.windows(2).all(|w| w[0].1 > w[1].1));
        let got: Vec<String> = walked_all.iter().map(|(id, _)| id.clone()).collect();
        let want: Vec<String> = all.borrow().iter().rev().cloned().collect();
        prop_assert_eq!(got, want);
        Ok(())
    });
    result.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_testbed_takes_requests_on_followers_and_pins_them_on_its_nodes() {
    use pinfleet::testbed::{Testbed, TestbedFile, TestbedIpfs, TestbedOptions};
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let tb_dir = dir.path().join("tb");
    let tb = Testbed::up(&TestbedOptions {
        exe: env!("CARGO_BIN_EXE_pinfleet").into(),
        peers: 3,
        dir: tb_dir.clone(),
        timeout: DEADLINE,
        ipfs: TestbedIpfs::Embedded,
        auth: false,
        followers: 0,
        env: Vec::new(),
    })
    .await
    .unwrap();
    let file: TestbedFile =
        serde_json::from_slice(&std::fs::read(tb_dir.join("testbed.json")).unwrap()).unwrap();
    let token = file.pinsvc_token.clone().expect("testbed.json has a token");
    let urls: Vec<String> = file
        .peers
        .iter()
        .map(|p| p.pinsvc.clone().expect("each peer's listener"))
        .collect();
    assert!(
        urls.iter().all(|u| u.starts_with("http://127.0.0.1:")),
        "{urls:?}"
    );
    let peers: Vec<Svc> = urls.iter().map(|u| Svc::new(u)).collect();
    let ipfs_ids: BTreeSet<String> = file
        .peers
        .iter()
        .map(|p| p.ipfs.rsplit('/').next().unwrap().to_string())
        .collect();
    let leader = leader_index(&file).await;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;

    // A write on a follower is forwarded; the same peer reads it at once.
    let content = add_unpinned(&file.peers[leader].api, "testbed pinning service content").await;
    let created = peers[follower]
        .create(&token, &json!({"cid": content, "name": "tb"}))
        .await;
    let id = created["requestid"].as_str().unwrap().to_string();
    let got = peers[follower]
        .call(Method::GET, &format!("/pins/{id}"), Some(&token))
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        ids(&peers[follower].list(&token, ALL).await),
        [id.as_str()],
        "listed on the peer that took it"
    );

    // Pinned once the replication minimum is met; delegates are the
    // peers' IPFS nodes.
    let pinned = peers[other].wait_status(&token, &id, "pinned").await;
    let delegates = pinned["delegates"].as_array().unwrap();
    assert!(!delegates.is_empty());
    for d in delegates {
        let id = d.as_str().unwrap().rsplit('/').next().unwrap();
        assert!(ipfs_ids.contains(id), "{d} is not a testbed IPFS node");
    }
    assert!(
        file.peers
            .iter()
            .any(|p| delegates.iter().any(|d| d == p.ipfs.as_str())),
        "{delegates:?}"
    );

    // A delete on the other follower: gone there at once, and everywhere.
    let a = peers[other]
        .call(Method::DELETE, &format!("/pins/{id}"), Some(&token))
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    assert_eq!(
        peers[other]
            .call(Method::GET, &format!("/pins/{id}"), Some(&token))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(peers[other].list(&token, ALL).await["count"], 0);
    tb.stop().await;
}

/// The index of the testbed peer that leads (its `/metrics` say so).
async fn leader_index(file: &pinfleet::testbed::TestbedFile) -> usize {
    let start = tokio::time::Instant::now();
    loop {
        for (i, p) in file.peers.iter().enumerate() {
            if is_leader(&p.api).await {
                return i;
            }
        }
        assert!(start.elapsed() < DEADLINE, "no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn is_leader(api: &str) -> bool {
    let Ok(r) = http().get(format!("{api}/metrics")).send().await else {
        return false;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines().any(|l| l.trim() == "pinfleet_leader 1")
}
