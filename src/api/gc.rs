//! `POST /ipfs/gc[?local=true]`: garbage collection on every member's IPFS
//! node (or only this peer's), answered in IPFS Cluster's `GlobalRepoGC`
//! shape: `{"peer_map": {peer id: {"peer", "peername", "keys", "error"}}}`.
//!
//! `keys` lists the removed blocks as IPFS Cluster does (`{"key": {"/":
//! cid}}`, CIDv1 `raw` of each block's multihash, as Kubo names them); the
//! count is also in the extra field `removed`. A member that cannot be
//! reached or has no IPFS node answers with its `error`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;

use super::pins::{Params, RawParams};
use super::{ApiError, Shared};
use crate::ipfs::rpc::GcReply;
use crate::wire::{GlobalRepoGc, RepoGc, RepoGcKey};

/// How long one member's gc may take.
const GC_TIMEOUT: Duration = Duration::from_secs(600);

/// `POST /ipfs/gc`.
pub(super) async fn gc(
    State(state): State<Shared>,
    query: RawParams,
) -> Result<Json<GlobalRepoGc>, ApiError> {
    let params = Params::from_query(query)?;
    let local = params.flag("local")?;
    let node = &state.node;
    let me = node.peer_id();
    let mut out = GlobalRepoGc::default();
    let entry = |peer: String, peername: String, r: Result<GcReply, String>| {
        let (reply, error) = match r {
            Ok(reply) => (reply, String::new()),
            Err(e) => (GcReply::default(), e),
        };
        RepoGc {
            peer,
            peername,
            keys: reply.keys.into_iter().map(RepoGcKey::new).collect(),
            removed: reply.removed,
            error,
        }
    };
    let mine = match state.ipfs.as_ref().filter(|b| b.kind() != "none") {
        Some(b) => b.gc().await.map(GcReply::from).map_err(|e| e.to_string()),
        None => Err(crate::ipfs::rpc::NO_IPFS_NODE.to_string()),
    };
    out.peer_map.insert(
        me.to_string(),
        entry(me.to_string(), state.peername.clone(), mine),
    );
    if local {
        return Ok(Json(out));
    }
    let others = node.other_members();
    let asks = others.into_iter().map(|peer| async move {
        let call = node.call::<crate::ipfs::rpc::Gc>(peer, &());
        let r = match tokio::time::timeout(GC_TIMEOUT, call).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_string()),
        };
        (peer, r)
    });
    for (peer, r) in futures::future::join_all(asks).await {
        out.peer_map
            .insert(peer.to_string(), entry(peer.to_string(), String::new(), r));
    }
    Ok(Json(out))
}
