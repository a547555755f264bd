//! IPFS Cluster's `Pin` JSON (same fields, same order, every field present
//! as Go sends it) plus pinfleet's `owners`: the answer of `POST/DELETE
//! /pins/{cid}` and `/allocations`, and one line of the state file
//! (`crate::state` converts it to and from the state's own pins).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::manifest::{Owner, PinMode, PinOptions};

/// Go's zero `time.Time`, which IPFS Cluster writes for unset times.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// One line of the state file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PinRecord {
    /// Effective minimum replication.
    #[serde(default)]
    pub replication_factor_min: i32,
    /// Effective maximum replication.
    #[serde(default)]
    pub replication_factor_max: i32,
    /// Effective name.
    #[serde(default)]
    pub name: String,
    /// `recursive` or `direct`.
    #[serde(default)]
    pub mode: PinMode,
    /// Sharding is not used by pinfleet yet: always 0.
    #[serde(default)]
    pub shard_size: u64,
    /// Peers the user asked for (null when none, as Go sends a nil slice).
    #[serde(default)]
    pub user_allocations: Option<Vec<String>>,
    /// RFC 3339, or Go's zero time.
    #[serde(default = "zero_time")]
    pub expire_at: String,
    /// Effective metadata.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: BTreeMap<String, String>,
    /// The CID this pin replaced (`POST /pins/{cid}?pin-update=…`); only in
    /// that answer, as IPFS Cluster's `omitempty`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_update: Option<String>,
    /// Effective origins.
    #[serde(default, deserialize_with = "null_as_default")]
    pub origins: Vec<String>,
    /// The CID as users see it.
    pub cid: String,
    /// `pin` for data pins.
    #[serde(default = "pin_type", rename = "type")]
    pub type_: String,
    /// Peers chosen to pin it.
    #[serde(default, deserialize_with = "null_as_default")]
    pub allocations: Vec<String>,
    /// -1 for recursive, 0 for direct.
    #[serde(default = "minus_one")]
    pub max_depth: i32,
    /// Unused for data pins.
    #[serde(default)]
    pub reference: Option<String>,
    /// RFC 3339, or Go's zero time.
    #[serde(default = "zero_time")]
    pub timestamp: String,
    /// pinfleet: who wants this pin and what each asked for.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, OwnerRecord>")]
    pub owners: BTreeMap<Owner, OwnerRecord>,
}

/// What one owner asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OwnerRecord {
    /// Pin name.
    #[serde(default)]
    pub name: String,
    /// The owner's options.
    #[serde(flatten)]
    pub options: PinOptions,
}

/// What `POST /pins/batch` answers: how many pins the body held and what
/// writing them did (pins already there with the same options count in
/// neither `created` nor `changed`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BatchPinReport {
    /// Pins in the request.
    pub pins: u64,
    /// Pins that did not exist before.
    pub created: u64,
    /// Pins that existed with other options (or other owners).
    pub changed: u64,
}

impl PinRecord {
    /// Reads one IPFS Cluster `Pin` JSON object as IPFS Cluster writes it
    /// (`ipfs-cluster-service state export`, the REST API): the CID as a
    /// string or as `{"/": "..."}` (before 1.0), the type as a name or as
    /// its number (2 = `pin`), `null` for empty maps and lists, unknown
    /// fields (`pin_update`) ignored.
    pub fn from_cluster_json(mut value: serde_json::Value) -> Result<Self, String> {
        let Some(obj) = value.as_object_mut() else {
            return Err("not a JSON object".to_string());
        };
        if let Some(serde_json::Value::Object(link)) = obj.get("cid")
            && let Some(serde_json::Value::String(s)) = link.get("/")
        {
            let s = s.clone();
            obj.insert("cid".into(), serde_json::Value::String(s));
        }
        if let Some(n) = obj.get("type").and_then(serde_json::Value::as_u64) {
            let name = match n {
                2 => "pin",
                4 => "meta-pin",
                8 => "clusterdag-pin",
                16 => "shard-pin",
                _ => "bad-type",
            };
            obj.insert("type".into(), serde_json::Value::String(name.into()));
        }
        for key in ["metadata", "origins", "allocations"] {
            if obj.get(key).is_some_and(serde_json::Value::is_null) {
                obj.remove(key);
            }
        }
        if !obj.contains_key("cid") {
            return Err("missing field `cid`".to_string());
        }
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    /// [`Self::from_cluster_json`] of one line of JSON text: read straight
    /// into the record when the line is in IPFS Cluster's current form
    /// (what a million-line import is), else through a JSON value.
    pub fn from_cluster_line(line: &str) -> Result<Self, String> {
        if let Ok(r) = serde_json::from_str::<Self>(line) {
            return Ok(r);
        }
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        Self::from_cluster_json(value)
    }
}

/// A field Go may send as `null` (a nil map or slice): its default then.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn zero_time() -> String {
    ZERO_TIME.to_string()
}
fn pin_type() -> String {
    "pin".to_string()
}
fn minus_one() -> i32 {
    -1
}
