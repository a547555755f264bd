//! JSON shapes of the IPFS Pinning Service API (v1.0.0): `Pin`,
//! `PinStatus`, `PinResults` and `Failure`, written from the spec's
//! schemas. Data only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A pin request as the client sent it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinSvcPin {
    /// The CID, as sent.
    pub cid: String,
    /// Optional name (at most 255 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Multiaddrs known to provide the data.
    #[serde(default)]
    pub origins: Vec<String>,
    /// Client metadata (string values).
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
}

/// A pin request and its current status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinSvcStatus {
    /// Opaque, unique id of the request.
    pub requestid: String,
    /// `queued`, `pinning`, `pinned` or `failed`.
    pub status: String,
    /// When the request was taken (RFC 3339, nanoseconds, UTC); unique.
    pub created: String,
    /// The request.
    pub pin: PinSvcPin,
    /// Multiaddrs (with `/p2p/<id>`) of the IPFS nodes that hold or will
    /// hold the pin; never empty.
    pub delegates: Vec<String>,
    /// Extra information (string values).
    #[serde(default)]
    pub info: BTreeMap<String, String>,
}

/// A page of a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinSvcResults {
    /// How many requests match the filters in all (not the page length).
    pub count: u64,
    /// The page, newest first.
    pub results: Vec<PinSvcStatus>,
}

/// Every error body: `{"error":{"reason":…,"details":…}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinSvcFailure {
    /// The error.
    pub error: PinSvcError,
}

/// The error of a [`PinSvcFailure`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinSvcError {
    /// Machine-readable kind, e.g. `BAD_REQUEST`, `NOT_FOUND`.
    pub reason: String,
    /// For humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}
