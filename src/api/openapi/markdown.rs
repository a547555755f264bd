//! Renders the OpenAPI document as a Markdown reference (`docs/api.md`):
//! every route with its role, parameters, body and answers, an example of
//! each JSON answer (made up from its schema), then every schema. Reads the
//! document only; knows nothing of routes or handlers.

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

/// Most nesting followed when making up an example.
const MAX_DEPTH: usize = 12;

/// The reference of `doc`.
pub(super) fn render(doc: &Value) -> String {
    let schemas = doc["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut md = String::new();
    let _ = writeln!(md, "# REST API reference\n");
    let _ = writeln!(
        md,
        "Generated from the code by `pinfleet openapi --markdown` (the same document as \
         `docs/openapi.json`, served at `GET /openapi.json`); do not edit. CI fails when it \
         drifts.\n"
    );
    let _ = writeln!(md, "{}\n", text(&doc["info"]["description"]));
    let _ = writeln!(
        md,
        "Authentication: HTTP basic (`[api] basic_auth_credentials`) or `Authorization: Bearer` \
         with a token from `POST /token`; each route needs the role shown (see \
         [security.md](security.md#roles)). Without credentials the answer is 401, with too \
         low a role 403.\n"
    );
    let _ = writeln!(md, "| method | path | role | summary |\n|---|---|---|---|");
    let ops = operations(doc);
    for (method, path, op) in &ops {
        let _ = writeln!(
            md,
            "| {method} | [`{path}`](#{}) | {} | {} |",
            crate::markdown::anchor(&format!("{method} {path}")),
            text(&op["x-pinfleet-role"]),
            cell(&text(&op["summary"]))
        );
    }
    for (method, path, op) in &ops {
        operation(&mut md, method, path, op, &schemas);
    }
    let _ = writeln!(md, "\n## Schemas");
    for (name, schema) in &schemas {
        schema_section(&mut md, name, schema, &schemas);
    }
    md
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            out.push((method.to_ascii_uppercase(), path.clone(), op.clone()));
        }
    }
    out
}

fn operation(md: &mut String, method: &str, path: &str, op: &Value, schemas: &Map<String, Value>) {
    let _ = writeln!(md, "\n## {method} {path}\n");
    let _ = writeln!(md, "{}\n", text(&op["summary"]));
    let _ = writeln!(md, "{}\n", text(&op["description"]));
    if let Some(params) = op["parameters"].as_array() {
        let _ = writeln!(
            md,
            "| parameter | in | type | description |\n|---|---|---|---|"
        );
        for p in params {
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} |",
                text(&p["name"]),
                text(&p["in"]),
                cell(&type_of(&p["schema"])),
                cell(&text(&p["description"]))
            );
        }
        md.push('\n');
    }
    if let Some(content) = op["requestBody"]["content"].as_object() {
        for (mime, media) in content {
            let _ = writeln!(
                md,
                "Request body (`{mime}`): {}\n",
                cell(&type_of(&media["schema"]))
            );
        }
    }
    let _ = writeln!(md, "| status | description | body |\n|---|---|---|");
    let responses = op["responses"].as_object().cloned().unwrap_or_default();
    for (status, r) in &responses {
        let body = r["content"]
            .as_object()
            .filter(|c| !c.is_empty())
            .map(|c| {
                c.iter()
                    .map(|(mime, media)| {
                        if let Some(item) = media.get("x-stream-item") {
                            format!("`{mime}`, one {} per line", type_of(item))
                        } else if let Some(s) = media.get("schema") {
                            format!("`{mime}` {}", type_of(s))
                        } else {
                            format!("`{mime}`")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" or ")
            })
            .unwrap_or_else(|| "none".into());
        let _ = writeln!(
            md,
            "| {status} | {} | {} |",
            cell(&text(&r["description"])),
            cell(&body)
        );
    }
    for (status, r) in &responses {
        if !status.starts_with('2') {
            continue;
        }
        let Some(media) = r["content"]["application/json"].as_object() else {
            continue;
        };
        let Some(schema) = media.get("schema").or_else(|| media.get("x-stream-item")) else {
            continue;
        };
        let example = example(schema, schemas, "", 0);
        let pretty = if media.contains_key("x-stream-item") {
            serde_json::to_string(&example)
        } else {
            serde_json::to_string_pretty(&example)
        }
        .unwrap_or_default();
        let _ = writeln!(md, "\nExample ({status}):\n\n```json\n{pretty}\n```");
    }
}

fn schema_section(md: &mut String, name: &str, schema: &Value, schemas: &Map<String, Value>) {
    let _ = writeln!(md, "\n### {name}\n");
    if let Some(d) = schema["description"].as_str() {
        let _ = writeln!(md, "{d}\n");
    }
    if let Some(values) = schema["enum"].as_array() {
        let words: Vec<String> = values.iter().map(|v| format!("`{}`", text(v))).collect();
        let _ = writeln!(md, "One of {}.", words.join(", "));
        return;
    }
    let Some(props) = schema["properties"].as_object() else {
        let _ = writeln!(md, "Type: {}.", type_of(schema));
        return;
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let _ = writeln!(
        md,
        "| field | type | always sent | description |\n|---|---|---|---|"
    );
    for (field, s) in props {
        let _ = writeln!(
            md,
            "| `{field}` | {} | {} | {} |",
            cell(&type_of(s)),
            if required.contains(&field.as_str()) {
                "yes"
            } else {
                "no"
            },
            cell(s["description"].as_str().unwrap_or(""))
        );
    }
    let _ = schemas;
}

/// A short type: `string`, `integer (int32)`, [`PinRecord`](#pinrecord),
/// `array of …`, `map of …`.
fn type_of(s: &Value) -> String {
    if let Some(r) = s["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("[`{name}`](#{})", crate::markdown::anchor(name));
    }
    if let Some(any) = s["anyOf"].as_array().or_else(|| s["oneOf"].as_array()) {
        let parts: Vec<String> = any.iter().map(type_of).collect();
        return parts.join(" or ");
    }
    if let Some(values) = s["enum"].as_array() {
        let words: Vec<String> = values.iter().map(|v| format!("`{}`", text(v))).collect();
        return words.join(", ");
    }
    if let Some(c) = s.get("const") {
        return format!("`{}`", text(c));
    }
    let (ty, nullable) = match &s["type"] {
        Value::String(t) => (t.as_str(), false),
        Value::Array(ts) => {
            let names: Vec<&str> = ts.iter().filter_map(Value::as_str).collect();
            let null = names.contains(&"null");
            match names.iter().find(|t| **t != "null") {
                Some(t) if names.len() <= 2 => (*t, null),
                _ => return names.join(" or "),
            }
        }
        _ => return "any".into(),
    };
    let shown = if ty == "array" {
        format!("array of {}", type_of(&s["items"]))
    } else if ty == "object" && s["additionalProperties"].is_object() {
        format!("map of {}", type_of(&s["additionalProperties"]))
    } else {
        match s["format"].as_str() {
            Some(f) => format!("{ty} ({f})"),
            None => ty.to_string(),
        }
    };
    if nullable {
        format!("{shown} or null")
    } else {
        shown
    }
}

/// A made-up value of `schema`; `field` (the property it is the value of)
/// picks a realistic string.
fn example(schema: &Value, schemas: &Map<String, Value>, field: &str, depth: usize) -> Value {
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap_or(r);
        return schemas
            .get(name)
            .map_or(Value::Null, |s| example(s, schemas, field, depth + 1));
    }
    if let Some(v) = schema.get("const") {
        return v.clone();
    }
    if let Some(v) = schema["enum"].as_array().and_then(|e| e.first()) {
        return v.clone();
    }
    if let Some(first) = schema["anyOf"]
        .as_array()
        .or_else(|| schema["oneOf"].as_array())
        .and_then(|a| a.iter().find(|s| s["type"] != "null").or_else(|| a.first()))
    {
        return example(first, schemas, field, depth + 1);
    }
    let ty = match &schema["type"] {
        Value::String(t) => t.as_str(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ => "",
    };
    match ty {
        "object" => {
            let mut out = Map::new();
            for (k, s) in schema["properties"].as_object().into_iter().flatten() {
                out.insert(k.clone(), example(s, schemas, k, depth + 1));
            }
            if out.is_empty()
                && let Some(add) = schema["additionalProperties"].as_object()
            {
                let key = match field {
                    "peer_map" => "12D3KooWBs5nKUd9aXZ3vmZcpqaSBqcHP2MnzJq6f6EztFt3HyWP",
                    "owners" => "api",
                    _ => "key",
                };
                let value = example(&Value::Object(add.clone()), schemas, key, depth + 1);
                out.insert(key.into(), value);
            }
            Value::Object(out)
        }
        "array" => {
            let item = example(&schema["items"], schemas, field, depth + 1);
            json!([item])
        }
        "string" => json!(string_for(field)),
        "integer" => json!(0),
        "number" => json!(0.5),
        "boolean" => json!(false),
        "null" => Value::Null,
        _ => json!({}),
    }
}

fn string_for(field: &str) -> &'static str {
    match field {
        "cid" | "/" | "release" => "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
        "id" | "peer" | "allocations" | "cluster_peers" | "user_allocations" | "ipfs_peer_id" => {
            "12D3KooWBs5nKUd9aXZ3vmZcpqaSBqcHP2MnzJq6f6EztFt3HyWP"
        }
        "addresses" | "cluster_peers_addresses" | "ipfs_peer_addresses" | "origins" => {
            "/ip4/127.0.0.1/tcp/9096"
        }
        "timestamp" | "created" | "expire_at" | "appliedAt" | "lastTransitionTime" => {
            "2026-01-01T00:00:00Z"
        }
        "status" => "pinned",
        "version" => "0.1.0",
        "peername" => "peer-0",
        "namespace" => "default",
        "name" => "my-pin",
        "mode" => "recursive",
        "type" => "pin",
        "pinset" => "default/my-pinset",
        "revision" | "baseRevision" => "sha256:9f86d081884c7d65",
        "source" => "api",
        "token" => "eyJhbGciOiJIUzI1NiJ9.e30.signature",
        _ => "text",
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Text safe in a table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}
