//! This peer's IPFS node on the cluster RPC: other members ask for its id
//! and addresses (so their embedded nodes can connect to it, see
//! `embedded::peering`) and run its garbage collection (`POST /ipfs/gc`).
//! Served by [`serve`] once the backend is up. The backends themselves know
//! nothing of the cluster; this module is the glue.

use std::sync::Arc;

use super::{IpfsBackend, IpfsId};
use crate::consensus::{ClusterNode, Method, Permission};

/// This peer's IPFS node: who it is and where it listens; `None` when the
/// peer has no IPFS node.
#[derive(Debug)]
pub struct Id;

impl Method for Id {
    const NAME: &'static str = "ipfs.id";
    // Followers' embedded nodes connect to members too.
    const PERMISSION: Permission = Permission::Follower;
    type Request = ();
    type Reply = Option<IpfsId>;
}

/// Run garbage collection on this peer's IPFS node; answers the blocks
/// removed.
#[derive(Debug)]
pub struct Gc;

impl Method for Gc {
    // Renamed when the reply gained `keys`: a peer of an older version
    // answers "unknown method" rather than a reply that does not decode.
    const NAME: &'static str = "ipfs.gc.keys";
    type Request = ();
    type Reply = GcReply;
}

/// What a member's gc did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GcReply {
    /// Blocks removed.
    pub removed: u64,
    /// The removed blocks' CIDs (see [`super::GcReport::keys`]).
    pub keys: Vec<String>,
}

impl From<super::GcReport> for GcReply {
    fn from(r: super::GcReport) -> Self {
        Self {
            removed: r.removed,
            keys: r.keys,
        }
    }
}

/// Why a peer cannot run gc.
pub const NO_IPFS_NODE: &str = "this peer has no ipfs node";

/// Serves [`Id`] and [`Gc`] from `backend` (a `none` backend answers that
/// it has no node).
pub fn serve(node: &ClusterNode, backend: Arc<dyn IpfsBackend>) {
    let b = Arc::clone(&backend);
    node.serve::<Id, _, _>(move |()| {
        let b = Arc::clone(&b);
        async move {
            if b.kind() == "none" {
                return Ok(None);
            }
            b.id().await.map(Some).map_err(|e| e.to_string())
        }
    });
    node.serve::<Gc, _, _>(move |()| {
        let b = Arc::clone(&backend);
        async move {
            if b.kind() == "none" {
                return Err(NO_IPFS_NODE.to_string());
            }
            b.gc().await.map(GcReply::from).map_err(|e| e.to_string())
        }
    });
}
