//! The OpenAPI 3.1 document of the REST API, built from the route table
//! (`routes::routes()`: paths, methods, roles) and the documentation table
//! (`table::docs()`: summaries, parameters, bodies, answers), with the JSON
//! schemas derived from the `wire` types (schemars, JSON Schema 2020-12,
//! which is OpenAPI 3.1's dialect). Served at `GET /openapi.json`, printed
//! by `pinfleet openapi` (committed as `docs/openapi.json`) and rendered as
//! Markdown by `pinfleet openapi --markdown` (`docs/api.md`).
//!
//! This module owns the document and its rendering; it must not change how
//! any route behaves.

mod markdown;
mod table;

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::access::Access;
use super::routes::routes;
use axum::http::Method;
use table::{Body, Content, Param, RouteDoc, Ty};

pub(crate) use table::docs;

/// The document, as `pinfleet openapi` prints it and `GET /openapi.json`
/// serves it: pretty JSON ending in a newline.
pub fn openapi_json() -> String {
    static TEXT: LazyLock<String> = LazyLock::new(|| {
        // Serialising a `Value` cannot fail.
        let mut s = serde_json::to_string_pretty(&document()).unwrap_or_default();
        s.push('\n');
        s
    });
    TEXT.clone()
}

/// The document rendered as a Markdown reference (`docs/api.md`).
pub fn openapi_markdown() -> String {
    markdown::render(&document())
}

/// `GET /openapi.json`.
pub(super) async fn get() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

/// Routes of the table without documentation, and documented routes
/// not in the table, as `METHOD path` (both empty when they agree).
pub fn undocumented_routes() -> (Vec<String>, Vec<String>) {
    let table: Vec<String> = routes()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let documented: Vec<String> = docs()
        .iter()
        .map(|d| format!("{} {}", d.method, d.path))
        .collect();
    let missing = table
        .iter()
        .filter(|t| !documented.contains(t))
        .cloned()
        .collect();
    let extra = documented
        .iter()
        .filter(|d| !table.contains(d))
        .cloned()
        .collect();
    (missing, extra)
}

/// The whole OpenAPI document. Routes without documentation still appear
/// (with a summary saying so), so the document always lists every route.
pub fn document() -> Value {
    let mut out = SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .for_serialize()
        .into_generator();
    let mut inp = SchemaSettings::draft2020_12()
        .with(|s| {
            s.meta_schema = None;
            s.inline_subschemas = true;
        })
        .for_deserialize()
        .into_generator();
    let error = table::schema::<crate::wire::ErrorBody>(&mut out).to_value();
    let docs = docs();
    let mut paths = Map::new();
    let table = routes().into_iter().map(|r| {
        let doc = docs
            .iter()
            .find(|d| d.method == r.method && d.path == r.path);
        (r.method, r.path, Who::Table(r.access), doc.cloned())
    });
    // The webhook receivers are merged beside the table (they check their
    // own signatures); documented here so that clients and the fuzzer know
    // them.
    let beside = table::beside()
        .into_iter()
        .map(|d| (d.method.clone(), d.path, Who::Signature, Some(d)));
    for (method, path, who, doc) in table.chain(beside) {
        let op = operation(&method, path, who, doc.as_ref(), &mut out, &mut inp, &error);
        let item = paths
            .entry(openapi_path(path))
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = item {
            item.insert(method.as_str().to_ascii_lowercase(), op);
        }
    }
    let mut schemas = out.take_definitions(true);
    schemas.insert("PinSetDocument".into(), manifest_schema(&mut inp));
    let schemas = Value::Object(schemas);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "pinfleet REST API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "IPFS Cluster's REST API (same routes, query parameters and JSON) plus \
                pinfleet's `/pinsets`. Streams are NDJSON: `Content-Type: application/json`, one \
                JSON value per line (its schema in `x-stream-item`), ended by the \
                `X-Stream-Error` trailer. Every error answer is `{\"code\", \"message\"}`. A query \
                parameter with an empty value counts as absent, as in IPFS Cluster.",
            "license": {"name": "MIT OR Apache-2.0", "identifier": "MIT OR Apache-2.0"}
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "basic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "A user of `[api] basic_auth_credentials`."
                },
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A token from `POST /token`."
                }
            }
        }
    })
}

/// Who may call a route.
#[derive(Clone, Copy, Debug)]
enum Who {
    /// As the route table says.
    Table(Access),
    /// Whoever signs the request with the receiver's secret.
    Signature,
}

fn operation(
    method: &Method,
    path: &str,
    who: Who,
    doc: Option<&RouteDoc>,
    out: &mut SchemaGenerator,
    inp: &mut SchemaGenerator,
    error: &Value,
) -> Value {
    let role = match who {
        Who::Table(Access::Open) => "open",
        Who::Table(Access::Role(r)) => r.as_str(),
        Who::Signature => "signature",
    };
    let mut op = Map::new();
    op.insert("operationId".into(), json!(operation_id(method, path)));
    let summary = doc.map_or("Undocumented.", |d| d.summary);
    op.insert("summary".into(), json!(summary));
    let mut description = doc.map_or("", |d| d.description).to_string();
    if !description.is_empty() {
        description.push_str("\n\n");
    }
    description.push_str(&match who {
        Who::Table(Access::Open) => "Open to anyone who reaches the API.".to_string(),
        Who::Table(Access::Role(r)) => format!("Needs the `{}` role.", r.as_str()),
        Who::Signature => {
            "Authenticated by the receiver's signature or token, not by a role.".into()
        }
    });
    op.insert("description".into(), json!(description));
    op.insert("x-pinfleet-role".into(), json!(role));
    let security = match who {
        Who::Table(Access::Role(_)) => json!([{"basic": []}, {"bearer": []}]),
        Who::Table(Access::Open) | Who::Signature => json!([]),
    };
    op.insert("security".into(), security);
    let mut params: Vec<Value> = path_params(path)
        .into_iter()
        .map(|name| path_param(path, name))
        .collect();
    params.extend(doc.iter().flat_map(|d| d.params.iter()).map(query_param));
    let takes_input = !params.is_empty() || doc.is_some_and(|d| d.body.is_some());
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    if let Some(body) = doc.and_then(|d| d.body) {
        op.insert("requestBody".into(), request_body(body, inp));
    }
    let mut responses = Map::new();
    for reply in doc.iter().flat_map(|d| d.replies.iter()) {
        let mut r = Map::new();
        r.insert("description".into(), json!(reply.description));
        let content = match reply.content {
            Content::Empty if reply.status >= 400 => Some(json!({
                "application/json": {"schema": error}
            })),
            Content::Empty => None,
            Content::Json(f) => Some(json!({
                "application/json": {"schema": f(out).to_value()}
            })),
            Content::Stream(f) => Some(json!({
                "application/json": {"x-stream-item": f(out).to_value()}
            })),
            Content::Text(mime) => Some(json!({ mime: {} })),
            Content::FileOrJson(f) => Some(json!({
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": f(out).to_value()}
            })),
        };
        if let Some(c) = content {
            r.insert("content".into(), c);
        }
        responses.insert(reply.status.to_string(), Value::Object(r));
    }
    let err = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": error}}
        })
    };
    if takes_input {
        responses
            .entry("400")
            .or_insert_with(|| err("Malformed request: a bad parameter or body; nothing done."));
    }
    if let Who::Table(Access::Role(_)) = who {
        let mut unauthorized = err("No credentials, or bad ones.");
        unauthorized["headers"] = json!({
            "WWW-Authenticate": {
                "description": "`Basic realm=\"pinfleet\"`",
                "schema": {"type": "string"}
            }
        });
        responses.entry("401").or_insert(unauthorized);
        responses
            .entry("403")
            .or_insert_with(|| err("The identity lacks the role this route (or `force`) needs."));
    }
    responses.insert(
        "default".into(),
        err("Any other error (e.g. 500, 503 without quorum, 405, 408 for a stalled body)."),
    );
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

fn operation_id(method: &Method, path: &str) -> String {
    let mut id = method.as_str().to_ascii_lowercase();
    for part in path.split(['/', '.', '{', '}', '-', '*']) {
        if !part.is_empty() {
            id.push('_');
            id.push_str(part);
        }
    }
    id
}

/// A route table path as OpenAPI writes it: axum's catch-all `{*rest}`
/// (one parameter over several segments) becomes `{rest}`.
pub(crate) fn openapi_path(path: &str) -> String {
    path.replace("{*", "{")
}

/// The `{name}`s (and catch-all `{*name}`s) of a path, in order.
fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|s| s.trim_start_matches('*'))
        .collect()
}

/// A path parameter, described from its name.
fn path_param(path: &str, name: &str) -> Value {
    let (description, schema) = match name {
        "cid" => (
            "A CID, as written by the client (v0 `Qm…` or v1 `bafy…`); echoed as sent.",
            json!({"type": "string", "minLength": 1}),
        ),
        "peer" => (
            "A libp2p peer id (`12D3KooW…`).",
            json!({"type": "string", "minLength": 1}),
        ),
        "namespace" | "name" if path.starts_with("/pinsets/") => (
            "A DNS-1123 label.",
            json!({
                "type": "string",
                "minLength": 1,
                "maxLength": 63,
                "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
            }),
        ),
        "name" if path.starts_with("/hooks/") => (
            "A receiver's name (`[controller] webhooks`).",
            json!({"type": "string", "minLength": 1}),
        ),
        _ if path.contains(&format!("{{*{name}}}")) => (
            "The rest of the path (it may hold `/`).",
            json!({"type": "string", "minLength": 1}),
        ),
        _ => ("", json!({"type": "string", "minLength": 1})),
    };
    json!({
        "name": name,
        "in": "path",
        "required": true,
        "description": description,
        "schema": schema
    })
}

fn query_param(p: &Param) -> Value {
    let schema = match p.ty {
        Ty::Str | Ty::List => json!({"type": "string"}),
        Ty::Bool => json!({"type": "boolean"}),
        Ty::Int => json!({"type": "integer", "format": "int32", "minimum": -1}),
        Ty::Fraction => json!({"type": "number", "minimum": 0, "maximum": 1}),
        Ty::OneOf(words) => json!({"type": "string", "enum": words}),
        Ty::Duration => json!({"type": "string", "examples": ["30s", "2m", "1h30m"]}),
        Ty::Time => json!({"type": "string", "format": "date-time"}),
    };
    let mut param = json!({
        "name": p.name,
        "in": p.location,
        "required": false,
        "description": p.description,
        "schema": schema
    });
    if p.location == "query" {
        // As in IPFS Cluster, an empty value counts as absent.
        param["allowEmptyValue"] = json!(true);
    }
    param
}

/// A PinSet manifest document as `PUT /pinsets/{ns}/{name}` reads it.
fn manifest_schema(inp: &mut SchemaGenerator) -> Value {
    let spec = table::schema::<crate::manifest::model::PinSetSpec>(inp).to_value();
    let labels = json!({"type": "object", "additionalProperties": {"type": "string"}});
    json!({
        "type": "object",
        "description": "A PinSet manifest document (see docs/manifests.md), YAML or JSON.",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": false,
        "properties": {
            "apiVersion": {"const": crate::manifest::model::API_VERSION},
            "kind": {"const": crate::manifest::model::KIND},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": false,
                "properties": {
                    "name": {"type": "string"},
                    "namespace": {"type": "string"},
                    "labels": labels,
                    "annotations": labels
                }
            },
            "spec": spec
        }
    })
}

fn request_body(body: Body, inp: &mut SchemaGenerator) -> Value {
    match body {
        Body::Json(f) => json!({
            "required": true,
            "content": {"application/json": {"schema": f(inp).to_value()}}
        }),
        Body::Manifest => {
            let schema = json!({"$ref": "#/components/schemas/PinSetDocument"});
            json!({
                "required": true,
                "content": {
                    "application/yaml": {"schema": schema},
                    "application/json": {"schema": schema}
                }
            })
        }
        Body::AnyJson => json!({
            "required": false,
            "content": {"application/json": {"schema": {
                "description": "The forge's event (read as bytes, at most 1 MiB)."
            }}}
        }),
        Body::Multipart => json!({
            "required": true,
            "content": {"multipart/form-data": {"schema": {
                "type": "object",
                "description": "Files (and directories, as `ipfs add -r` sends them), one part each.",
                "additionalProperties": {"type": "string", "contentMediaType": "application/octet-stream"}
            }}}
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catch_all_segment_becomes_one_openapi_path_parameter() {
        assert_eq!(
            openapi_path("/pins/ipfs/{*path}"),
            "/pins/ipfs/{path}".to_string()
        );
        assert_eq!(path_params("/pins/{cid}/x/{*path}"), vec!["cid", "path"]);
        let p = path_param("/pins/ipfs/{*path}", "path");
        assert_eq!(p["name"], "path");
        assert!(p["description"].as_str().unwrap_or("").contains('/'));
        assert_eq!(
            operation_id(&Method::POST, "/pins/ipfs/{*path}"),
            "post_pins_ipfs_path"
        );
    }
}
