//! The CRD is generated from the Rust types, committed, and accepts every
//! example manifest.

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use pinfleet::manifest::{PinSet, crd_yaml};
use serde_json::Value;

fn committed() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/pinset.yaml")).unwrap()
}

#[test]
fn committed_crd_matches_the_generated_one() {
    assert!(
        committed() == crd_yaml().unwrap(),
        "crds/pinset.yaml is stale: run `cargo run -- crd > crds/pinset.yaml`"
    );
}

fn parsed_crd() -> CustomResourceDefinition {
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&committed()).unwrap();
    crd
}

#[test]
fn committed_crd_is_a_valid_custom_resource_definition() {
    let crd = parsed_crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("pinsets.pinfleet.io"));
    assert_eq!(crd.spec.group, "pinfleet.io");
    assert_eq!(crd.spec.scope, "Namespaced");
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    assert!(v.served && v.storage);
    assert!(
        v.subresources.as_ref().unwrap().status.is_some(),
        "status subresource"
    );
    let cols: Vec<_> = v
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(cols, ["Ready", "Pinned", "Total", "Age"]);
}

fn example_documents() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        if f.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        for (i, d) in docs.into_iter().enumerate() {
            out.push((format!("{}#{i}", f.display()), d));
        }
    }
    assert!(out.len() >= 3, "expected at least three example documents");
    out
}

/// The committed CRD's openAPIV3Schema, as JSON.
fn open_api_schema() -> Value {
    let crd = parsed_crd();
    let schema = crd.spec.versions[0].schema.as_ref().unwrap();
    serde_json::to_value(schema.open_api_v3_schema.as_ref().unwrap()).unwrap()
}

#[test]
fn every_example_passes_the_crd_schema_and_deserialises_as_a_pinset() {
    let schema = open_api_schema();
    for (name, doc) in example_documents() {
        let mut errors = Vec::new();
        check(&schema, &doc, "", &mut errors);
        assert!(errors.is_empty(), "{name}: {errors:?}");
        let ps: PinSet = serde_json::from_value(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(ps.metadata.name.is_some());
    }
}

#[test]
fn the_schema_check_rejects_what_the_crd_forbids() {
    let schema = open_api_schema();
    let bad = serde_json::json!({
        "apiVersion": "pinfleet.io/v1alpha1", "kind": "PinSet", "metadata": {"name": "x"},
        "spec": {"pins": [{"cid": 5, "nmae": "typo"}], "defaults": {"mode": "sideways"}}
    });
    let mut errors = Vec::new();
    check(&schema, &bad, "", &mut errors);
    let text = errors.join("\n");
    assert!(text.contains(".spec.pins[0].cid"), "{text}");
    assert!(text.contains(".spec.pins[0].nmae"), "{text}");
    assert!(text.contains(".spec.defaults.mode"), "{text}");
}

/// A structural-schema check for the subset of OpenAPI v3 the CRD uses.
/// Unlike the API server (which prunes), unknown fields are reported, so the
/// examples must match the schema exactly.
fn check(schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    if v.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) && schema.get("type").is_some() {
            errors.push(format!("{path}: null not allowed"));
        }
        return;
    }
    if let Some(alts) = schema
        .get("anyOf")
        .or_else(|| schema.get("oneOf"))
        .and_then(Value::as_array)
    {
        let ok = alts.iter().any(|a| {
            let mut e = Vec::new();
            check(a, v, path, &mut e);
            e.is_empty()
        });
        if !ok {
            errors.push(format!("{path}: matches no alternative"));
        }
    }
    if let Some(en) = schema.get("enum").and_then(Value::as_array)
        && !en.contains(v)
    {
        errors.push(format!("{path}: {v} not in {en:?}"));
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let type_ok = match ty {
        None => true,
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some(other) => panic!("unsupported schema type {other}"),
    };
    if !type_ok {
        errors.push(format!("{path}: expected {}, got {v}", ty.unwrap_or("?")));
        return;
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            for r in req {
                let r = r.as_str().unwrap();
                if !obj.contains_key(r) {
                    errors.push(format!("{path}: missing {r}"));
                }
            }
        }
        for (k, val) in obj {
            let sub = format!("{path}.{k}");
            match (props.and_then(|p| p.get(k)), additional) {
                (Some(s), _) => check(s, val, &sub, errors),
                (None, Some(s)) if s.is_object() => check(s, val, &sub, errors),
                (None, _)
                    if schema.get("x-kubernetes-preserve-unknown-fields")
                        == Some(&Value::Bool(true)) => {}
                // The API server types these itself; CRD schemas leave them out.
                (None, _)
                    if path.is_empty()
                        && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") => {}
                (None, _) => errors.push(format!("{sub}: unknown field")),
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            check(items, x, &format!("{path}[{i}]"), errors);
        }
    }
}
