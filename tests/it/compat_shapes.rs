//! IPFS Cluster 1.1's JSON types (api/types.go, api/add.go), field by
//! field, as Go's encoder writes them: which JSON types each field may
//! take (a nil slice or map is `null`, an empty one `[]`/`{}`), and which
//! fields `omitempty` may leave out. [`check`] holds an answer against one
//! of them; fields pinfleet adds must be declared in the type's `extras`
//! (and documented in docs/compat.md), so a new one cannot slip in.

use serde_json::Value;

/// JSON types, as a bit set.
#[derive(Clone, Copy, Debug)]
pub struct Json(u8);

pub const NULL: Json = Json(1);
pub const BOOL: Json = Json(2);
pub const INT: Json = Json(4);
pub const NUMBER: Json = Json(8);
pub const STRING: Json = Json(16);
pub const ARRAY: Json = Json(32);
pub const OBJECT: Json = Json(64);

impl std::ops::BitOr for Json {
    type Output = Json;
    fn bitor(self, o: Json) -> Json {
        Json(self.0 | o.0)
    }
}

fn kind(v: &Value) -> Json {
    match v {
        Value::Null => NULL,
        Value::Bool(_) => BOOL,
        Value::Number(n) if n.is_i64() || n.is_u64() => INT,
        Value::Number(_) => NUMBER,
        Value::String(_) => STRING,
        Value::Array(_) => ARRAY,
        Value::Object(_) => OBJECT,
    }
}

/// One field: its JSON name, the types it may take, whether Go's
/// `omitempty` may leave it out.
pub struct Field {
    pub name: &'static str,
    pub json: Json,
    pub optional: bool,
}

const fn f(name: &'static str, json: Json) -> Field {
    Field {
        name,
        json,
        optional: false,
    }
}

const fn omit(name: &'static str, json: Json) -> Field {
    Field {
        name,
        json,
        optional: true,
    }
}

/// A Go type's JSON shape.
pub struct Shape {
    pub name: &'static str,
    /// A struct it embeds (Go inlines the embedded struct's fields).
    pub embeds: Option<&'static Shape>,
    pub fields: &'static [Field],
    /// Fields pinfleet sends beyond IPFS Cluster's (see docs/compat.md).
    pub extras: &'static [&'static str],
}

// A Go `[]T` or `map[K]V` field: `null` when nil.
const LIST: Json = Json(32 | 1);
const MAP: Json = Json(64 | 1);
// `time.Time`: RFC 3339 text. `Cid`, `peer.ID`: text (a Cid that is not
// defined is `null`).
const TIME: Json = STRING;
const CID: Json = Json(16 | 1);
#[allow(dead_code)]
const NUM: Json = Json(4 | 8);

/// `api.ID` (`GET /id`, `GET /peers` items).
pub const ID: Shape = Shape {
    embeds: None,
    name: "ID",
    fields: &[
        f("id", STRING),
        f("addresses", LIST),
        f("cluster_peers", LIST),
        f("cluster_peers_addresses", LIST),
        f("version", STRING),
        f("commit", STRING),
        f("rpc_protocol_version", STRING),
        f("error", STRING),
        // `omitempty` on a struct never omits it.
        f("ipfs", OBJECT),
        f("peername", STRING),
    ],
    extras: &[],
};

/// `api.IPFSID` (`ID.ipfs`).
pub const IPFS_ID: Shape = Shape {
    embeds: None,
    name: "IPFSID",
    fields: &[omit("id", STRING), f("addresses", LIST), f("error", STRING)],
    extras: &[],
};

/// `api.Version`.
pub const VERSION: Shape = Shape {
    embeds: None,
    name: "Version",
    fields: &[f("version", STRING)],
    extras: &[],
};

/// `api.Pin` (`POST`/`DELETE /pins/…`, `/allocations`).
pub const PIN: Shape = Shape {
    embeds: None,
    name: "Pin",
    fields: &[
        f("replication_factor_min", INT),
        f("replication_factor_max", INT),
        f("name", STRING),
        f("mode", STRING),
        f("shard_size", INT),
        f("user_allocations", LIST),
        f("expire_at", TIME),
        f("metadata", MAP),
        omit("pin_update", CID),
        f("origins", LIST),
        f("cid", CID),
        f("type", STRING),
        f("allocations", LIST),
        f("max_depth", INT),
        f("reference", CID),
        f("timestamp", TIME),
    ],
    extras: &["owners"],
};

/// `api.GlobalPinInfo` (`GET /pins[/{cid}]`, recover).
pub const GLOBAL_PIN_INFO: Shape = Shape {
    embeds: None,
    name: "GlobalPinInfo",
    fields: &[
        f("cid", CID),
        f("name", STRING),
        f("allocations", LIST),
        f("origins", LIST),
        f("created", TIME),
        f("metadata", MAP),
        f("peer_map", MAP),
    ],
    extras: &[],
};

/// `api.PinInfoShort` (`GlobalPinInfo.peer_map` values).
pub const PIN_INFO_SHORT: Shape = Shape {
    embeds: None,
    name: "PinInfoShort",
    fields: &[
        f("peername", STRING),
        omit("ipfs_peer_id", STRING),
        omit("ipfs_peer_addresses", LIST),
        f("status", STRING),
        f("timestamp", TIME),
        f("error", STRING),
        f("attempt_count", INT),
        f("priority_pin", BOOL),
    ],
    extras: &[],
};

/// `api.Metric` (`GET /monitor/metrics/{name}`).
pub const METRIC: Shape = Shape {
    embeds: None,
    name: "Metric",
    fields: &[
        f("name", STRING),
        f("peer", STRING),
        f("value", STRING),
        f("expire", INT),
        f("valid", BOOL),
        f("weight", INT),
        f("partitionable", BOOL),
        f("received_at", INT),
    ],
    extras: &[],
};

/// `api.Alert` (`GET /health/alerts`): a Metric plus when it fired.
pub const ALERT: Shape = Shape {
    embeds: Some(&METRIC),
    name: "Alert",
    fields: &[f("triggered_at", TIME)],
    extras: &[],
};

/// `api.ConnectGraph` (`GET /health/graph`).
pub const CONNECT_GRAPH: Shape = Shape {
    embeds: None,
    name: "ConnectGraph",
    fields: &[
        f("cluster_id", STRING),
        f("id_to_peername", MAP),
        f("ipfs_links", MAP),
        f("cluster_links", MAP),
        f("cluster_trust_links", MAP),
        f("cluster_to_ipfs", MAP),
    ],
    extras: &[],
};

/// `api.Bandwidth` (`GET /health/bandwidth` values, by protocol).
/// (pinfleet answers an empty map: nothing to hold against it yet.)
#[allow(dead_code)]
pub const BANDWIDTH: Shape = Shape {
    embeds: None,
    name: "Bandwidth",
    fields: &[
        f("total_in", INT),
        f("total_out", INT),
        f("rate_in", NUM),
        f("rate_out", NUM),
    ],
    extras: &[],
};

/// `api.AddedOutput` (`POST /add` items).
pub const ADDED_OUTPUT: Shape = Shape {
    embeds: None,
    name: "AddedOutput",
    fields: &[
        f("name", STRING),
        f("cid", CID),
        omit("bytes", INT),
        omit("size", INT),
        omit("allocations", LIST),
    ],
    extras: &[],
};

/// `api.GlobalRepoGC` (`POST /ipfs/gc`).
pub const GLOBAL_REPO_GC: Shape = Shape {
    embeds: None,
    name: "GlobalRepoGC",
    fields: &[f("peer_map", MAP)],
    extras: &[],
};

/// `api.RepoGC` (`GlobalRepoGC.peer_map` values).
pub const REPO_GC: Shape = Shape {
    embeds: None,
    name: "RepoGC",
    fields: &[
        f("peer", STRING),
        f("peername", STRING),
        f("keys", LIST),
        omit("error", STRING),
    ],
    extras: &["removed"],
};

/// `api.Error`: every error answer's body.
pub const ERROR: Shape = Shape {
    embeds: None,
    name: "Error",
    fields: &[f("code", INT), f("message", STRING)],
    extras: &["errors"],
};

/// `POST /token`'s answer.
pub const TOKEN: Shape = Shape {
    embeds: None,
    name: "Token",
    fields: &[f("token", STRING)],
    extras: &[],
};

/// Holds `v` against `shape`; `at` names the answer in failures. Nested
/// IPFS Cluster types are checked too (`ID.ipfs`, `peer_map` values).
pub fn check(v: &Value, shape: &Shape, at: &str) {
    let Value::Object(obj) = v else {
        panic!("{at}: a {} is a JSON object, got {v}", shape.name);
    };
    let fields = || {
        shape
            .fields
            .iter()
            .chain(shape.embeds.into_iter().flat_map(|e| e.fields))
    };
    for field in fields() {
        match obj.get(field.name) {
            None => assert!(
                field.optional,
                "{at}: {} lacks `{}` (Go always sends it): {v}",
                shape.name, field.name
            ),
            Some(x) => assert!(
                kind(x).0 & field.json.0 != 0,
                "{at}: {}.{} is {x}, not a JSON type Go sends there: {v}",
                shape.name,
                field.name
            ),
        }
    }
    for key in obj.keys() {
        assert!(
            fields().any(|f| f.name == key) || shape.extras.contains(&key.as_str()),
            "{at}: {}.{key} is not IPFS Cluster's, nor a declared pinfleet extra: {v}",
            shape.name
        );
    }
    let nested = |field: &str, inner: &Shape| {
        if let Some(Value::Object(map)) = obj.get(field) {
            for (k, x) in map {
                check(x, inner, &format!("{at}.{field}[{k}]"));
            }
        }
    };
    match shape.name {
        "ID" => {
            if let Some(ipfs) = obj.get("ipfs") {
                check(ipfs, &IPFS_ID, &format!("{at}.ipfs"));
            }
        }
        "GlobalPinInfo" => nested("peer_map", &PIN_INFO_SHORT),
        "GlobalRepoGC" => nested("peer_map", &REPO_GC),
        _ => {}
    }
}

/// Holds each line of an NDJSON body against `shape`; returns the items.
pub fn check_lines(body: &str, shape: &Shape, at: &str) -> Vec<Value> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{at} line {}: not JSON ({e}): {l}", i + 1));
            check(&v, shape, &format!("{at} line {}", i + 1));
            v
        })
        .collect()
}

#[test]
fn the_checker_refuses_what_go_would_not_send() {
    let ok = serde_json::json!({"code": 404, "message": "not found"});
    check(&ok, &ERROR, "ok");
    for bad in [
        serde_json::json!({"code": "404", "message": "x"}),
        serde_json::json!({"message": "x"}),
        serde_json::json!({"code": 404, "message": "x", "hint": "y"}),
    ] {
        let r = std::panic::catch_unwind(|| check(&bad, &ERROR, "bad"));
        assert!(r.is_err(), "{bad} passed");
    }
    // Nested: a peer_map entry without its status.
    let gpi = serde_json::json!({
        "cid": "Qm", "name": "", "allocations": null, "origins": [], "created": "x",
        "metadata": null, "peer_map": {"p": {"peername": "a", "timestamp": "t", "error": "",
        "attempt_count": 0, "priority_pin": false}}
    });
    assert!(std::panic::catch_unwind(|| check(&gpi, &GLOBAL_PIN_INFO, "gpi")).is_err());
}
