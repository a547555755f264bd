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
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Effective origins.
    #[serde(default)]
    pub origins: Vec<String>,
    /// The CID as users see it.
    pub cid: String,
    /// `pin` for data pins.
    #[serde(default = "pin_type", rename = "type")]
    pub type_: String,
    /// Peers chosen to pin it.
    #[serde(default)]
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

fn zero_time() -> String {
    ZERO_TIME.to_string()
}
fn pin_type() -> String {
    "pin".to_string()
}
fn minus_one() -> i32 {
    -1
}
