//! Pin statuses as IPFS Cluster names them (DESIGN §6), and the JSON shapes
//! of per-peer (`PinInfoShort`) and global (`GlobalPinInfo`) status.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What one peer knows about one pin.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TrackerStatus {
    /// Pinned on this peer's IPFS node.
    Pinned,
    /// Being pinned now.
    Pinning,
    /// Waiting for a pin slot.
    PinQueued,
    /// The last pin attempt failed; it will be retried.
    PinError,
    /// Not pinned here (and not wanted here).
    Unpinned,
    /// Being unpinned now.
    Unpinning,
    /// Waiting for an unpin slot.
    UnpinQueued,
    /// The last unpin attempt failed; it will be retried.
    UnpinError,
    /// Allocated to other peers.
    Remote,
    /// The peer could not be asked (unreachable, timed out).
    ClusterError,
    /// It was pinned, and IPFS no longer has it (someone unpinned it).
    UnexpectedlyUnpinned,
    /// Unknown.
    Undefined,
    /// IPFS Cluster's generic error (filter alias).
    Error,
    /// IPFS Cluster's generic queued (filter alias).
    Queued,
    /// Part of a sharded pin.
    Sharded,
}

impl TrackerStatus {
    /// Every status, in IPFS Cluster's order.
    pub const ALL: [TrackerStatus; 15] = [
        TrackerStatus::Pinned,
        TrackerStatus::Pinning,
        TrackerStatus::PinQueued,
        TrackerStatus::PinError,
        TrackerStatus::Unpinned,
        TrackerStatus::Unpinning,
        TrackerStatus::UnpinQueued,
        TrackerStatus::UnpinError,
        TrackerStatus::Remote,
        TrackerStatus::ClusterError,
        TrackerStatus::UnexpectedlyUnpinned,
        TrackerStatus::Undefined,
        TrackerStatus::Error,
        TrackerStatus::Queued,
        TrackerStatus::Sharded,
    ];

    /// The wire name (`pin_queued`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            TrackerStatus::Pinned => "pinned",
            TrackerStatus::Pinning => "pinning",
            TrackerStatus::PinQueued => "pin_queued",
            TrackerStatus::PinError => "pin_error",
            TrackerStatus::Unpinned => "unpinned",
            TrackerStatus::Unpinning => "unpinning",
            TrackerStatus::UnpinQueued => "unpin_queued",
            TrackerStatus::UnpinError => "unpin_error",
            TrackerStatus::Remote => "remote",
            TrackerStatus::ClusterError => "cluster_error",
            TrackerStatus::UnexpectedlyUnpinned => "unexpectedly_unpinned",
            TrackerStatus::Undefined => "undefined",
            TrackerStatus::Error => "error",
            TrackerStatus::Queued => "queued",
            TrackerStatus::Sharded => "sharded",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<TrackerStatus> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Whether `self` matches a `filter=` value: an exact name, or IPFS
    /// Cluster's aliases `error` (any error), `queued` (any queued).
    pub fn matches(self, filter: TrackerStatus) -> bool {
        match filter {
            TrackerStatus::Error => matches!(
                self,
                TrackerStatus::PinError
                    | TrackerStatus::UnpinError
                    | TrackerStatus::ClusterError
                    | TrackerStatus::UnexpectedlyUnpinned
                    | TrackerStatus::Error
            ),
            TrackerStatus::Queued => matches!(
                self,
                TrackerStatus::PinQueued | TrackerStatus::UnpinQueued | TrackerStatus::Queued
            ),
            other => self == other,
        }
    }
}

impl fmt::Display for TrackerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One peer's status for one pin (IPFS Cluster's `PinInfoShort`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PinInfoShort {
    /// Peer name.
    #[serde(default)]
    pub peername: String,
    /// The peer's IPFS node id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ipfs_peer_id: String,
    /// The peer's IPFS node addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipfs_peer_addresses: Vec<String>,
    /// The status.
    pub status: TrackerStatus,
    /// When the status last changed (RFC 3339).
    pub timestamp: String,
    /// The last error, if any.
    #[serde(default)]
    pub error: String,
    /// Attempts made so far for the current operation.
    #[serde(default)]
    pub attempt_count: u32,
    /// Whether the pin was queued ahead of retries.
    #[serde(default)]
    pub priority_pin: bool,
}

/// Every peer's status for one pin (IPFS Cluster's `GlobalPinInfo`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GlobalPinInfo {
    /// The CID as users wrote it.
    pub cid: String,
    /// Pin name.
    #[serde(default)]
    pub name: String,
    /// Allocated peers.
    #[serde(default)]
    pub allocations: Vec<String>,
    /// Origins.
    #[serde(default)]
    pub origins: Vec<String>,
    /// When the pin entered the state (RFC 3339).
    pub created: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Peer id → status.
    pub peer_map: BTreeMap<String, PinInfoShort>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip_and_match_serde() {
        for s in TrackerStatus::ALL {
            assert_eq!(TrackerStatus::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert!(TrackerStatus::PinError.matches(TrackerStatus::Error));
        assert!(TrackerStatus::ClusterError.matches(TrackerStatus::Error));
        assert!(TrackerStatus::UnpinQueued.matches(TrackerStatus::Queued));
        assert!(!TrackerStatus::Pinned.matches(TrackerStatus::Queued));
    }
}
