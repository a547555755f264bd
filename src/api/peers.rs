//! `/id`, `/version`, `/health` and `/peers`: who this peer is and who its
//! fellow members are, in IPFS Cluster's `ID` JSON.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use libp2p::PeerId;

use super::{ApiError, ApiState, stream};
use crate::consensus::{PeerNode, node_id};
use crate::manifest::shown;
use crate::wire::{IpfsInfo, PeerInfo, VersionInfo};

/// Why `/id` has no IPFS identity: the peer runs without an IPFS node.
const NO_IPFS: &str = "no ipfs backend configured";

/// How long `/id` waits for the IPFS node's identity.
const IPFS_ID_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `GET /id`.
pub(super) async fn id(State(state): State<ApiState>) -> Json<PeerInfo> {
    Json(self_info(&state).await)
}

/// `GET /version`.
pub(super) async fn version(State(state): State<ApiState>) -> Json<VersionInfo> {
    Json(VersionInfo {
        version: state.version.to_string(),
    })
}

/// `GET /health`: the peer answers (IPFS Cluster's liveness probe).
pub(super) async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// `GET /peers`: this peer with everything it knows, then every other member
/// with what the membership records (id and addresses).
pub(super) async fn list(State(state): State<ApiState>) -> Response {
    let me = self_info(&state).await;
    let mut items = vec![me.clone()];
    for (_, node) in state.node.members() {
        if node.peer_id == me.id {
            continue;
        }
        items.push(PeerInfo {
            addresses: p2p_addrs(&node),
            id: node.peer_id,
            ..PeerInfo::default()
        });
    }
    stream::ndjson_items(items).await
}

/// `DELETE /peers/{peer}`: removes a member from the cluster.
pub(super) async fn remove(
    State(state): State<ApiState>,
    Path(peer): Path<String>,
) -> Result<Response, ApiError> {
    let pid: PeerId = peer
        .parse()
        .map_err(|e| ApiError::bad_request(format!("invalid peer id {}: {e}", shown(&peer))))?;
    let id = node_id(&pid);
    if !state.node.members().iter().any(|(n, _)| *n == id) {
        return Err(ApiError::not_found(format!(
            "peer {peer} is not a cluster member"
        )));
    }
    state.node.remove_peer(id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The peer's IPFS node as IPFS Cluster's `IPFSID` shows it.
async fn ipfs_info(state: &ApiState) -> IpfsInfo {
    let Some(backend) = state.ipfs.as_ref().filter(|b| b.kind() != "none") else {
        return IpfsInfo {
            error: NO_IPFS.to_string(),
            ..IpfsInfo::default()
        };
    };
    match tokio::time::timeout(IPFS_ID_TIMEOUT, backend.id()).await {
        Ok(Ok(id)) => IpfsInfo {
            id: id.id,
            addresses: id.addresses,
            error: String::new(),
        },
        Ok(Err(e)) => IpfsInfo {
            error: e.to_string(),
            ..IpfsInfo::default()
        },
        Err(_) => IpfsInfo {
            error: "the ipfs node did not answer in time".into(),
            ..IpfsInfo::default()
        },
    }
}

async fn self_info(state: &ApiState) -> PeerInfo {
    let me = state.node.node();
    let members = state.node.members();
    PeerInfo {
        id: me.peer_id.clone(),
        addresses: p2p_addrs(me),
        cluster_peers: members.iter().map(|(_, n)| n.peer_id.clone()).collect(),
        cluster_peers_addresses: members
            .iter()
            .filter(|(_, n)| n.peer_id != me.peer_id)
            .flat_map(|(_, n)| p2p_addrs(n))
            .collect(),
        version: state.version.to_string(),
        commit: String::new(),
        rpc_protocol_version: crate::p2p::DEFAULT_PROTOCOL.to_string(),
        error: String::new(),
        ipfs: ipfs_info(state).await,
        peername: state.peername.clone(),
    }
}

/// A member's addresses as IPFS Cluster shows them: ending in `/p2p/<id>`.
fn p2p_addrs(node: &PeerNode) -> Vec<String> {
    let suffix = format!("/p2p/{}", node.peer_id);
    node.addrs
        .iter()
        .map(|a| {
            if a.ends_with(&suffix) {
                a.clone()
            } else {
                format!("{a}{suffix}")
            }
        })
        .collect()
}
