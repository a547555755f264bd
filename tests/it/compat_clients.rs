//! IPFS Cluster's clients against pinfleet: the exact requests of the Go
//! client (api/rest/client/methods.go, with `PinOptions.ToQuery` and
//! `AddParams.ToQueryString` as it encodes them), `ipfs-cluster-ctl`
//! (which uses that client), the JavaScript client `@nftstorage/ipfs-cluster`
//! (src/index.js: `pins/` + path, `stream-channels=false` adds with
//! `cid-version=1&raw-leaves=true`) and plain Python `requests` scripts,
//! sent to a 3-peer cluster, every answer held against IPFS Cluster's JSON
//! types (compat_shapes), status codes and headers.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::cluster::cid;
use crate::compat_shapes::{self as shapes, check, check_lines};
use crate::status::Fleet;

/// One request as a client sends it, and its answer.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    async fn read(resp: reqwest::Response) -> Answer {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap();
        Answer {
            status,
            headers,
            body,
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

async fn send(fleet: &Fleet, method: Method, path_and_query: &str) -> Answer {
    let resp = crate::support::http()
        .request(method, format!("{}{path_and_query}", fleet.url))
        .send()
        .await
        .unwrap();
    Answer::read(resp).await
}

/// The Go client's `PinOptions.ToQuery()` for default options plus `name`
/// (url.Values.Encode: keys sorted).
fn go_pin_query(name: &str, rmin: i32, rmax: i32) -> String {
    format!(
        "mode=recursive&name={name}&replication-max={rmax}&replication-min={rmin}&shard-size=0&user-allocations="
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn go_client_and_ctl_requests_get_ipfs_cluster_shapes() {
    let root = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(3, root.path(), Duration::from_secs(60)).await;

    // ID, Version, Peers (stream), Health.
    let a = send(&fleet, Method::GET, "/id").await;
    assert_eq!(a.status, 200, "{}", a.body);
    check(&a.json(), &shapes::ID, "GET /id");
    let a = send(&fleet, Method::GET, "/version").await;
    check(&a.json(), &shapes::VERSION, "GET /version");
    let a = send(&fleet, Method::GET, "/peers").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.headers["content-type"], "application/json");
    let peers = check_lines(&a.body, &shapes::ID, "GET /peers");
    assert_eq!(peers.len(), 3, "{}", a.body);
    let a = send(&fleet, Method::GET, "/health").await;
    assert_eq!(a.status, 204, "{}", a.body);

    // Pin (client.Pin → POST /pins/{cid}?<ToQuery>): the Pin, echoed.
    let c = cid(8001).to_string();
    let q = go_pin_query("compat", 2, 3);
    let a = send(&fleet, Method::POST, &format!("/pins/{c}?{q}")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let pin = a.json();
    check(&pin, &shapes::PIN, "POST /pins/{cid}");
    assert_eq!(pin["cid"], c.as_str());
    assert_eq!(pin["name"], "compat");
    assert_eq!(pin["replication_factor_min"], 2);
    assert_eq!(pin["type"], "pin");
    assert_eq!(pin["max_depth"], -1);

    // Allocations (stream with ?filter=pin, as `pin ls` asks) and one.
    let a = send(&fleet, Method::GET, "/allocations?filter=pin").await;
    let pins = check_lines(&a.body, &shapes::PIN, "GET /allocations");
    assert!(pins.iter().any(|p| p["cid"] == c.as_str()), "{}", a.body);
    let a = send(&fleet, Method::GET, &format!("/allocations/{c}")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    check(&a.json(), &shapes::PIN, "GET /allocations/{cid}");

    // Status (client.Status → ?local=false), StatusAll (the three keys
    // always present, empty when unset), Recover.
    let a = send(&fleet, Method::GET, &format!("/pins/{c}?local=false")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let gpi = a.json();
    check(&gpi, &shapes::GLOBAL_PIN_INFO, "GET /pins/{cid}");
    assert_eq!(gpi["peer_map"].as_object().unwrap().len(), 3, "{gpi}");
    let a = send(&fleet, Method::GET, "/pins?local=false&filter=&cids=").await;
    assert_eq!(a.status, 200, "{}", a.body);
    check_lines(&a.body, &shapes::GLOBAL_PIN_INFO, "GET /pins");
    let a = send(
        &fleet,
        Method::GET,
        &format!("/pins?local=false&filter=&cids={c}"),
    )
    .await;
    let only = check_lines(&a.body, &shapes::GLOBAL_PIN_INFO, "GET /pins?cids=");
    assert_eq!(only.len(), 1, "{}", a.body);
    let a = send(
        &fleet,
        Method::POST,
        &format!("/pins/{c}/recover?local=false"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    check(
        &a.json(),
        &shapes::GLOBAL_PIN_INFO,
        "POST /pins/{cid}/recover",
    );

    // Errors: a malformed CID, an unknown route, a bad query value: each
    // `{code,message}` with its status, nothing written.
    for (method, path, code) in [
        (Method::POST, "/pins/not-a-cid?".to_string() + &q, 400),
        (Method::GET, "/allocations/not-a-cid".to_string(), 400),
        (
            Method::POST,
            format!("/pins/{}?replication-min=x", cid(8002)),
            400,
        ),
        (Method::GET, "/no/such/route".to_string(), 404),
    ] {
        let a = send(&fleet, method.clone(), &path).await;
        assert_eq!(a.status.as_u16(), code, "{method} {path}: {}", a.body);
        let e = a.json();
        check(&e, &shapes::ERROR, &format!("{method} {path}"));
        assert_eq!(e["code"], code, "{e}");
    }
    let a = send(&fleet, Method::GET, &format!("/allocations/{}", cid(8002))).await;
    assert_eq!(a.status, 404, "the refused pin was written: {}", a.body);

    // Unpin (client.Unpin → DELETE /pins/{cid}): the Pin as it was.
    let a = send(&fleet, Method::DELETE, &format!("/pins/{c}")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    check(&a.json(), &shapes::PIN, "DELETE /pins/{cid}");
    fleet.stop().await;
}

/// `POST /add` with one file part named as the Go client and the JS
/// client name it (`file`, the file name as filename).
async fn add(fleet: &Fleet, query: &str, name: &str, content: &str) -> Answer {
    let part = reqwest::multipart::Part::bytes(content.as_bytes().to_vec())
        .file_name(name.to_string())
        .mime_str("application/octet-stream")
        .unwrap();
    let form = reqwest::multipart::Form::new().part("file", part);
    let resp = crate::support::http()
        .post(format!("{}/add?{query}", fleet.url))
        .multipart(form)
        .send()
        .await
        .unwrap();
    Answer::read(resp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn go_and_javascript_adds_get_ipfs_cluster_added_outputs() {
    let root = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(3, root.path(), Duration::from_secs(60)).await;
    // The Go client's `Add` with `DefaultAddParams()`: every key present,
    // empty `layout` and `user-allocations` (url.Values.Encode: sorted).
    let go = "chunker=size-262144&cid-version=0&format=unixfs&hash=sha2-256&hidden=false&layout=\
              &local=false&mode=recursive&name=&no-pin=false&nocopy=false&progress=false\
              &raw-leaves=false&recursive=false&replication-max=0&replication-min=0&shard=false\
              &shard-size=104857600&stream-channels=true&user-allocations=&wrap-with-directory=false";
    let a = add(&fleet, go, "go.txt", "added by the Go client").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.headers["content-type"], "application/json");
    let out = check_lines(&a.body, &shapes::ADDED_OUTPUT, "go add");
    let root_cid = out.last().unwrap()["cid"].as_str().unwrap().to_string();
    assert!(root_cid.starts_with("Qm"), "CIDv0 by default: {}", a.body);
    let a = send(&fleet, Method::GET, &format!("/allocations/{root_cid}")).await;
    assert_eq!(a.status, 200, "the root is pinned: {}", a.body);

    // @nftstorage/ipfs-cluster's `add(file)`: `stream-channels=false`, CIDv1
    // raw leaves; it reads `result[0]`.
    let a = add(
        &fleet,
        "stream-channels=false&raw-leaves=true&cid-version=1",
        "js.txt",
        "added by the JS client",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let list = a.json();
    let list = list
        .as_array()
        .unwrap_or_else(|| panic!("an array: {}", a.body));
    assert_eq!(list.len(), 1, "{}", a.body);
    check(&list[0], &shapes::ADDED_OUTPUT, "js add");
    assert!(
        list[0]["cid"].as_str().unwrap().starts_with("bafk"),
        "{}",
        a.body
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn javascript_and_python_client_requests_get_ipfs_cluster_shapes() {
    let root = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(3, root.path(), Duration::from_secs(60)).await;
    let c = cid(8101).to_string();

    // nftstorage's `pin(cid, {name, metadata})`: only the options set,
    // `meta-` keys (replication: the cluster's default, every peer here).
    let a = send(
        &fleet,
        Method::POST,
        &format!("/pins/{c}?name=js&meta-app=web"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let pin = a.json();
    check(&pin, &shapes::PIN, "js pin");
    assert_eq!(pin["metadata"]["app"], "web", "{pin}");
    // `status(cid, {local: true})` and `allocation(cid)`: encodeURIComponent'd CID.
    let a = send(&fleet, Method::GET, &format!("/pins/{c}?local=true")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // A client polls until it is pinned somewhere.
    crate::status::eventually("pinned on a peer", || async {
        let a = send(&fleet, Method::GET, &format!("/pins/{c}")).await;
        a.body.contains("\"status\":\"pinned\"").then_some(())
    })
    .await;
    check(&a.json(), &shapes::GLOBAL_PIN_INFO, "js status local");
    // `statusAll({filter: ['pinned','pin_error'], cids: [c]})`: String(array)
    // is comma-joined.
    let a = send(
        &fleet,
        Method::GET,
        &format!("/pins?filter=pinned,pin_error&cids={c}"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let all = check_lines(&a.body, &shapes::GLOBAL_PIN_INFO, "js statusAll");
    assert_eq!(all.len(), 1, "{}", a.body);
    // A Python `requests` script: pin with `replication=…` (IPFS Cluster's
    // override of both factors), then DELETE.
    let a = send(
        &fleet,
        Method::POST,
        &format!("/pins/{}?replication=2", cid(8102)),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let pin = a.json();
    assert_eq!(pin["replication_factor_min"], 2, "{pin}");
    assert_eq!(pin["replication_factor_max"], 2, "{pin}");
    let a = send(&fleet, Method::DELETE, &format!("/pins/{}", cid(8102))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    fleet.stop().await;
}
