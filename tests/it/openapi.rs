//! The OpenAPI document (issue 14 item 9): generated from the route table,
//! committed as docs/openapi.json and docs/api.md (drift fails here and in
//! CI), served at `GET /openapi.json`, complete (every route of the table,
//! every method of the router), and true: real answers of a running daemon
//! validate against the schemas it documents for them.

use std::collections::BTreeSet;

use pinfleet::api::{openapi_document, openapi_json, openapi_markdown, routes};
use serde_json::{Value, json};

use crate::support::{cid_v1, http, init_peer, pinset_yaml, spawn_daemon, stop_daemon};

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

#[test]
fn committed_openapi_json_is_what_the_code_generates() {
    let committed =
        std::fs::read_to_string(crate::support::repo_path("docs/openapi.json")).unwrap_or_default();
    assert!(
        committed == openapi_json(),
        "docs/openapi.json is stale: run `cargo run -- openapi > docs/openapi.json`"
    );
}

#[test]
fn committed_api_md_is_what_the_code_generates() {
    let committed =
        std::fs::read_to_string(crate::support::repo_path("docs/api.md")).unwrap_or_default();
    assert!(
        committed == openapi_markdown(),
        "docs/api.md is stale: run `cargo run -- openapi --markdown > docs/api.md`"
    );
}

#[test]
fn every_route_of_the_table_is_documented_and_no_other() {
    let (missing, extra) = pinfleet::api::undocumented_routes();
    assert!(
        missing.is_empty(),
        "routes without documentation (add an entry to src/api/openapi/table.rs): {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "documented routes that the route table lacks: {extra:?}"
    );
}

#[test]
fn document_is_openapi_3_1_with_every_route_method_and_role() {
    let doc = openapi_document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(METHODS.contains(&method.as_str()), "{method} {path}");
            documented.insert((method.to_uppercase(), path.clone()));
            assert!(op["responses"]["default"].is_object(), "{method} {path}");
            assert!(op["operationId"].is_string(), "{method} {path}");
            // Every {param} of the path is declared as a path parameter.
            for part in path.split('/').filter(|p| p.starts_with('{')) {
                let name = part.trim_matches(['{', '}']);
                assert!(
                    op["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path"),
                    "{method} {path}: {name}"
                );
            }
        }
    }
    let mut table: BTreeSet<(String, String)> = routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path.replace("{*", "{")))
        .collect();
    // The webhook receivers, served beside the table, are documented too.
    table.insert(("POST".into(), "/hooks/{name}".into()));
    assert_eq!(documented, table);
    let hook = &doc["paths"]["/hooks/{name}"]["post"];
    assert_eq!(hook["x-pinfleet-role"], "signature");
    assert_eq!(hook["security"], json!([]));
    for r in routes() {
        let op = &doc["paths"][r.path.replace("{*", "{")][r.method.as_str().to_lowercase()];
        match r.access {
            pinfleet::api::Access::Open => {
                assert_eq!(op["x-pinfleet-role"], "open");
                assert_eq!(op["security"], json!([]));
            }
            pinfleet::api::Access::Role(role) => {
                assert_eq!(op["x-pinfleet-role"], role.as_str());
                assert!(
                    op["responses"]["401"].is_object(),
                    "{} {}",
                    r.method,
                    r.path
                );
                assert!(
                    op["responses"]["403"].is_object(),
                    "{} {}",
                    r.method,
                    r.path
                );
            }
        }
    }
    // Every $ref resolves and every schema compiles.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    for r in refs {
        let pointer = r.strip_prefix('#').unwrap();
        assert!(doc.pointer(pointer).is_some(), "dangling {r}");
    }
    for (name, _) in doc["components"]["schemas"].as_object().unwrap() {
        validator(
            &doc,
            &json!({"$ref": format!("#/components/schemas/{name}")}),
        );
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// A validator for `schema` (which may refer to the document's components).
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let root = json!({"allOf": [schema], "components": doc["components"]});
    jsonschema::draft202012::new(&root).unwrap()
}

/// Checks an answer against what the document says of `method path`
/// for its status: JSON against its schema, a stream line by line, an
/// error as `ErrorBody`. Returns the body.
async fn check(doc: &Value, method: &str, path: &str, resp: reqwest::Response) -> String {
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.text().await.unwrap();
    let op = &doc["paths"][path][method.to_lowercase()];
    assert!(op.is_object(), "{method} {path} is not documented");
    let responses = &op["responses"];
    let reply = if responses[status.to_string()].is_object() {
        &responses[status.to_string()]
    } else {
        &responses["default"]
    };
    let what = format!("{method} {path} -> {status}: {body}");
    let Some(media) = reply["content"]["application/json"].as_object() else {
        assert!(
            body.is_empty() || reply["content"].is_object(),
            "undocumented body of {what}"
        );
        return body;
    };
    assert!(
        ctype
            .as_deref()
            .unwrap_or("")
            .starts_with("application/json"),
        "content type {ctype:?} of {what}"
    );
    let (schema, lines): (&Value, Vec<&str>) = match media.get("x-stream-item") {
        Some(item) => (item, body.lines().filter(|l| !l.is_empty()).collect()),
        None => (&media["schema"], vec![body.as_str()]),
    };
    let v = validator(doc, schema);
    for line in lines {
        let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: {e}"));
        let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{what}: {errors:?}");
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_document_is_the_committed_one_and_real_answers_match_their_schemas() {
    let dir = tempfile::tempdir().unwrap();
    init_peer(dir.path());
    let mut child = spawn_daemon(dir.path(), &[]);
    let info = crate::support::wait_running(dir.path(), &mut child);
    let base = info.api.trim_end_matches('/').to_string();
    let c = http();
    let served = c.get(format!("{base}/openapi.json")).send().await.unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["content-type"], "application/json");
    assert_eq!(served.text().await.unwrap(), openapi_json());
    let doc = openapi_document();

    let cid = cid_v1("openapi-pin");
    let owned = cid_v1("openapi-owned");
    let get = |p: &str| c.get(format!("{base}{p}")).send();
    check(&doc, "GET", "/id", get("/id").await.unwrap()).await;
    check(&doc, "GET", "/version", get("/version").await.unwrap()).await;
    check(&doc, "GET", "/peers", get("/peers").await.unwrap()).await;
    let pinned = c
        .post(format!("{base}/pins/{cid}?name=doc&replication=1&meta-k=v"))
        .send()
        .await
        .unwrap();
    assert_eq!(pinned.status(), 200);
    check(&doc, "POST", "/pins/{cid}", pinned).await;
    let put = c
        .put(format!("{base}/pinsets/default/docs"))
        .body(pinset_yaml("default", "docs", std::slice::from_ref(&owned)))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    check(&doc, "PUT", "/pinsets/{namespace}/{name}", put).await;
    for (path, template) in [
        (format!("/pins/{cid}"), "/pins/{cid}"),
        (format!("/allocations/{cid}"), "/allocations/{cid}"),
        ("/pins".to_string(), "/pins"),
        ("/allocations".to_string(), "/allocations"),
        ("/state/export".to_string(), "/state/export"),
        ("/pinsets".to_string(), "/pinsets"),
        (
            "/pinsets/default/docs".to_string(),
            "/pinsets/{namespace}/{name}",
        ),
        (
            "/pinsets/default/docs/status".to_string(),
            "/pinsets/{namespace}/{name}/status",
        ),
        ("/monitor/metrics".to_string(), "/monitor/metrics"),
        (
            "/monitor/metrics/freespace".to_string(),
            "/monitor/metrics/{name}",
        ),
    ] {
        let resp = get(&path).await.unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        check(&doc, "GET", template, resp).await;
    }
    // Errors: 400, 404, 409, each an ErrorBody with its status.
    let bad = get("/pins/not-a-cid").await.unwrap();
    assert_eq!(bad.status(), 400);
    check(&doc, "GET", "/pins/{cid}", bad).await;
    let missing = get("/pinsets/default/nope").await.unwrap();
    assert_eq!(missing.status(), 404);
    check(&doc, "GET", "/pinsets/{namespace}/{name}", missing).await;
    let refused = c
        .delete(format!("{base}/pins/{owned}"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    let body = check(&doc, "DELETE", "/pins/{cid}", refused).await;
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["code"], 409);
    let invalid = c
        .put(format!("{base}/pinsets/default/docs"))
        .body("apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata: {name: docs}\nspec: {pins: 7}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 422);
    check(&doc, "PUT", "/pinsets/{namespace}/{name}", invalid).await;
    stop_daemon(&mut child);
}
