//! IPFS Cluster compatibility of path pins (`POST`/`DELETE
//! /pins/{ipfs|ipns|ipld}/{path…}`), status semantics (`GET /pins/{cid}`
//! of unknown CIDs, `local=true`, recover) and the `/health/*` and `POST
//! /peers` routes, against in-process peers (embedded IPFS node or mock
//! Kubo per peer). Answers are compared with the JSON IPFS Cluster's types
//! encode (api/types.go): field names, JSON types, nulls vs empty arrays,
//! status codes.

use std::time::Duration;

use pinfleet::ipfs::{AddInput, AddOpts};
use reqwest::StatusCode;
use serde_json::Value;

use crate::inproc::Api;
use crate::status::Fleet;
use crate::support::{cid_v1, http, write_tree};

/// IPFS Cluster's `api.Pin` JSON (PinOptions embedded): every field and
/// the JSON type Go encodes it as (`pin_update` is `omitempty`).
const PIN_FIELDS: [(&str, &str); 15] = [
    ("replication_factor_min", "integer"),
    ("replication_factor_max", "integer"),
    ("name", "string"),
    ("mode", "string"),
    ("shard_size", "integer"),
    ("user_allocations", "array|null"),
    ("expire_at", "string"),
    ("metadata", "object|null"),
    ("origins", "array|null"),
    ("cid", "string"),
    ("type", "string"),
    ("allocations", "array|null"),
    ("max_depth", "integer"),
    ("reference", "string|null"),
    ("timestamp", "string"),
];

pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "float",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every field of `fields` is in `v` with one of its allowed JSON types.
pub(crate) fn assert_shape(v: &Value, fields: &[(&str, &str)]) {
    for (name, types) in fields {
        let got = v.get(*name).unwrap_or_else(|| panic!("no {name} in {v}"));
        assert!(
            types.split('|').any(|t| t == json_type(got)),
            "{name}: {} is not {types} in {v}",
            json_type(got)
        );
    }
}

async fn send(method: reqwest::Method, url: String) -> (StatusCode, Value) {
    let resp = http().request(method, url).send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// An error answer is IPFS Cluster's `{"code", "message"}` with the status.
fn assert_error(status: StatusCode, body: &Value, want: StatusCode) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["code"], want.as_u16(), "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_pins_resolve_through_the_embedded_node_and_answer_the_resolved_pin() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), true, |s| s).await;
    let tree = dir.path().join("site");
    write_tree(&tree, &[("docs/a.txt", "path pins"), ("index.html", "<p>")]);
    let added = api
        .ipfs
        .as_ref()
        .unwrap()
        .add(AddInput::Path(tree), AddOpts::default())
        .await
        .unwrap();
    let cid_of = |name: &str| {
        added
            .entries
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", added.entries))
            .cid
    };
    let root = added.root.cid().to_string();
    let file = pinfleet::manifest::CidKey::from_cid(cid_of("site/docs/a.txt")).unwrap();
    let base = &api.url;

    // The Go client's `PinPath`: POST with the pin options in the query.
    let (status, pin) = send(
        reqwest::Method::POST,
        format!("{base}/pins/ipfs/{root}/docs/a.txt?name=doc&replication=1&meta-k=v"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{pin}");
    assert_shape(&pin, &PIN_FIELDS);
    assert_eq!(
        pin["cid"],
        file.to_string(),
        "the resolved CID, not the path"
    );
    assert_eq!(pin["name"], "doc");
    assert_eq!(pin["metadata"]["k"], "v");
    assert_eq!(pin["type"], "pin");
    let (status, _) = send(reqwest::Method::GET, format!("{base}/allocations/{file}")).await;
    assert_eq!(status, StatusCode::OK, "the resolved CID is in the pinset");

    // A trailing slash and /ipld resolve the same way.
    let (status, pin) = send(
        reqwest::Method::POST,
        format!("{base}/pins/ipld/{root}/docs/a.txt/"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{pin}");
    assert_eq!(pin["cid"], file.to_string());

    // UnpinPath answers the Pin as it now stands, and it is gone.
    let (status, pin) = send(
        reqwest::Method::DELETE,
        format!("{base}/pins/ipfs/{root}/docs/a.txt"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{pin}");
    assert_eq!(pin["cid"], file.to_string());
    let (status, _) = send(reqwest::Method::GET, format!("{base}/allocations/{file}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A bare root pins without asking the node, as the client wrote it.
    let (status, pin) = send(reqwest::Method::POST, format!("{base}/pins/ipfs/{root}")).await;
    assert_eq!(status, StatusCode::OK, "{pin}");
    assert_eq!(pin["cid"], root);

    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_unresolvable_paths_answer_400_and_500_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), true, |s| s).await;
    let tree = dir.path().join("d");
    write_tree(&tree, &[("f.txt", "x")]);
    let added = api
        .ipfs
        .as_ref()
        .unwrap()
        .add(AddInput::Path(tree), AddOpts::default())
        .await
        .unwrap();
    let root = added.root.to_string();
    let base = &api.url;
    // Malformed: 400, as IPFS Cluster's ParsePinPathOrFail.
    for path in [
        "/pins/ipfs/not-a-cid/x".to_string(),
        format!("/pins/ipfs/{root}/../f.txt"),
        format!("/pins/ipld/{}x", &root[..10]),
    ] {
        let (status, body) = send(reqwest::Method::POST, format!("{base}{path}")).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        let (status, body) = send(reqwest::Method::DELETE, format!("{base}{path}")).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
    }
    // Bad options: 400 before the node is asked.
    let (status, body) = send(
        reqwest::Method::POST,
        format!("{base}/pins/ipfs/{root}/f.txt?replication=x"),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);
    // Unresolvable: IPFS Cluster sends every resolve error as a 500.
    let (status, body) = send(
        reqwest::Method::POST,
        format!("{base}/pins/ipfs/{root}/missing.txt"),
    )
    .await;
    assert_error(status, &body, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no link named \"missing.txt\""),
        "{body}"
    );
    // Through a file (not a directory): no such link either.
    let (status, body) = send(
        reqwest::Method::POST,
        format!("{base}/pins/ipfs/{root}/f.txt/deeper"),
    )
    .await;
    assert_error(status, &body, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(api.allocations().await, 0, "nothing was pinned");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn path_pins_resolve_through_kubo_resolve_on_the_kubo_backend() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::start_with(1, dir.path(), Duration::from_secs(60), |_| {}, None).await;
    let kubo = &fleet.nodes[0].kubo;
    let root = pinfleet::manifest::CidKey::parse(&cid_v1("kubo-path-root")).unwrap();
    let child: cid::Cid = cid_v1("kubo-path-child").parse().unwrap();
    kubo.put_link(root, "sub", child);
    let (status, pin) = send(
        reqwest::Method::POST,
        format!("{}/pins/ipfs/{root}/sub?name=k", fleet.url),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{pin}");
    assert_eq!(pin["cid"], child.to_string());
    let resolves: Vec<_> = kubo
        .calls()
        .into_iter()
        .filter(|c| c.endpoint == "resolve")
        .collect();
    assert_eq!(resolves.len(), 1, "{resolves:?}");
    assert_eq!(resolves[0].args, [format!("/ipfs/{root}/sub")]);
    // Kubo's refusal is passed on as IPFS Cluster passes it: 500.
    let (status, body) = send(
        reqwest::Method::DELETE,
        format!("{}/pins/ipfs/{root}/nope", fleet.url),
    )
    .await;
    assert_error(status, &body, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        body["message"].as_str().unwrap().contains("no link named"),
        "{body}"
    );
    let (status, pin) = send(
        reqwest::Method::DELETE,
        format!("{}/pins/ipfs/{root}/sub", fleet.url),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{pin}");
    fleet.stop().await;
}
