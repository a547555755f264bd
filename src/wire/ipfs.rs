//! What crosses the REST boundary about IPFS content: `POST /add`'s
//! `AddedOutput` and `POST /ipfs/gc`'s `GlobalRepoGC`, in IPFS Cluster's
//! shapes, and the directory listing of `GET /ipfs/{cid}`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One added file or directory (IPFS Cluster's `AddedOutput`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AddedOutput {
    /// Path of the entry as sent (the root of a wrapped add is `""`).
    pub name: String,
    /// Its CID, in the version asked for (`Qm…` by default).
    pub cid: String,
    /// Bytes of file content (for a directory, of the files under it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes: u64,
    /// Cumulative DAG size, as `ipfs add` reports it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Peers the root was allocated to (root only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allocations: Vec<String>,
}

// serde's skip_serializing_if takes a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One peer's gc (IPFS Cluster's `RepoGC`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RepoGc {
    /// Peer id.
    pub peer: String,
    /// Peer name (empty for other members: it is not in the membership).
    pub peername: String,
    /// The removed blocks.
    pub keys: Vec<RepoGcKey>,
    /// Blocks removed.
    pub removed: u64,
    /// Why it failed, or empty.
    pub error: String,
}

/// One removed block (IPFS Cluster's `IPFSRepoGC`): `{"key": {"/": cid}}`,
/// with `error` only when set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RepoGcKey {
    /// The block's CID as a link.
    pub key: CidLink,
    /// Why it could not be removed (IPFS Cluster omits it when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

impl RepoGcKey {
    /// The removed block `cid`.
    pub fn new(cid: String) -> Self {
        Self {
            key: CidLink { cid },
            error: String::new(),
        }
    }
}

/// A CID in IPLD's JSON link form, `{"/": "bafy…"}` (IPFS Cluster's `Cid`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CidLink {
    /// The CID's text.
    #[serde(rename = "/")]
    pub cid: String,
}

/// Every peer's gc (IPFS Cluster's `GlobalRepoGC`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GlobalRepoGc {
    /// By peer id.
    pub peer_map: BTreeMap<String, RepoGc>,
}

/// One entry of a directory, as `GET /ipfs/{cid}` lists a directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IpfsDirEntry {
    /// Its name in the directory.
    pub name: String,
    /// Its CID, as the directory links it.
    pub cid: String,
    /// File bytes for a file; 0 for a directory or a symlink.
    pub size: u64,
    /// What it is.
    #[serde(rename = "type")]
    pub kind: IpfsEntryType,
    /// A symlink's target (symlinks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// What a directory entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IpfsEntryType {
    /// A file.
    File,
    /// A directory.
    Directory,
    /// A symlink (see `target`).
    Symlink,
}
