//! `/id`, `/version`, `/health` and `/peers` (`GET`, `POST` to add a
//! member, `DELETE`): who this peer is and who its fellow members are, in
//! IPFS Cluster's `ID` JSON.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use libp2p::PeerId;

use super::{ApiError, ApiState, Shared, stream};
use crate::consensus::{PeerNode, node_id};
use crate::manifest::shown;
use crate::wire::{IpfsInfo, PeerInfo, VersionInfo};

/// Why `/id` has no IPFS identity: the peer runs without an IPFS node.
const NO_IPFS: &str = "no ipfs backend configured";

/// How long `/id` waits for the IPFS node's identity.
const IPFS_ID_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `GET /id`.
pub(super) async fn id(State(state): State<Shared>) -> Json<PeerInfo> {
    Json(self_info(&state).await)
}

/// `GET /version`.
pub(super) async fn version(State(state): State<Shared>) -> Json<VersionInfo> {
    Json(VersionInfo {
        version: state.version.to_string(),
    })
}

/// `GET /health`: the peer answers (IPFS Cluster's liveness probe).
pub(super) async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// `GET /peers`: this peer with everything it knows, then every other
/// member as it describes itself (asked at once); a member that does not
/// answer is listed with its id, addresses and why in `error`, as IPFS
/// Cluster does.
pub(super) async fn list(State(state): State<Shared>) -> Response {
    let me = self_info(&state).await;
    let members = state.node.members();
    let others: Vec<PeerNode> = members
        .iter()
        .filter(|(_, n)| n.peer_id != me.id)
        .map(|(_, n)| n.clone())
        .collect();
    let asks = others
        .iter()
        .map(|n| member_info(&state, n, &me.cluster_peers));
    let mut items = vec![me.clone()];
    items.extend(futures::future::join_all(asks).await);
    stream::ndjson_items(items).await
}

/// What `/peers` shows of another member: what it says of itself, or why
/// it could not be asked.
async fn member_info(state: &ApiState, node: &PeerNode, cluster_peers: &[String]) -> PeerInfo {
    let mut info = PeerInfo {
        addresses: p2p_addrs(node),
        id: node.peer_id.clone(),
        ..PeerInfo::default()
    };
    let answer = match (&state.status, node.peer_id.parse::<PeerId>()) {
        (Some(status), Ok(pid)) => status.identities().ask(pid).await,
        (None, _) => Err("not asked: this peer runs no pin tracker".to_string()),
        (_, Err(e)) => Err(format!("invalid peer id: {e}")),
    };
    match answer {
        Ok(id) => {
            info.cluster_peers = cluster_peers.to_vec();
            info.cluster_peers_addresses = state
                .node
                .members()
                .iter()
                .filter(|(_, n)| n.peer_id != node.peer_id)
                .flat_map(|(_, n)| p2p_addrs(n))
                .collect();
            info.version = id.version;
            info.rpc_protocol_version = crate::p2p::DEFAULT_PROTOCOL.to_string();
            info.peername = id.peername;
            info.ipfs = if id.ipfs_peer_id.is_empty() {
                IpfsInfo {
                    error: "its ipfs node did not answer".into(),
                    ..IpfsInfo::default()
                }
            } else {
                IpfsInfo {
                    id: id.ipfs_peer_id,
                    addresses: id.ipfs_peer_addresses,
                    error: String::new(),
                }
            };
        }
        Err(e) => info.error = e,
    }
    info
}

/// `POST /peers` body: IPFS Cluster's `peerAddBody` plus pinfleet's
/// optional `addresses` (where to reach the peer).
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub(crate) struct PeerAddBody {
    /// The peer to add.
    peer_id: String,
    /// Its p2p addresses (`/ip4/…/tcp/…`, with or without `/p2p/<id>`).
    #[serde(default)]
    addresses: Vec<String>,
}

/// `POST /peers`: adds a peer as a member (IPFS Cluster's `PeerAdd`) and
/// answers its `ID`. The peer must be started with a bootstrap address (so
/// that it waits to be added rather than founding its own cluster) and be
/// reachable at one of `addresses`.
pub(super) async fn add(
    State(state): State<Shared>,
    body: axum::body::Bytes,
) -> Result<Json<PeerInfo>, ApiError> {
    let body: PeerAddBody = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("error decoding request body"))?;
    let pid: PeerId = body
        .peer_id
        .parse()
        .map_err(|_| ApiError::bad_request("error decoding peer_id"))?;
    let suffix = format!("/p2p/{pid}");
    let mut addrs = Vec::new();
    for a in &body.addresses {
        let bare = a.strip_suffix(&suffix).unwrap_or(a);
        let ma: libp2p::Multiaddr = bare
            .parse()
            .map_err(|e| ApiError::bad_request(format!("invalid address {}: {e}", shown(a))))?;
        addrs.push(ma);
    }
    let member = |state: &ApiState| {
        state
            .node
            .members()
            .into_iter()
            .find(|(_, n)| n.peer_id == body.peer_id)
    };
    if member(&state).is_none() {
        if addrs.is_empty() {
            return Err(ApiError::internal(format!(
                "cannot add peer {pid}: no address to reach it (give \"addresses\")"
            )));
        }
        let mut reached = None;
        for a in &addrs {
            let dial = a.clone().with(libp2p::multiaddr::Protocol::P2p(pid));
            match state.node.p2p().dial(dial).await {
                Ok(got) if got == pid => {
                    reached = Some(());
                    break;
                }
                Ok(got) => tracing::debug!(%a, %got, "another peer answered there"),
                Err(e) => tracing::debug!(%a, error = %e, "cannot dial the peer to add"),
            }
        }
        if reached.is_none() {
            return Err(ApiError::internal(format!(
                "cannot add peer {pid}: not reachable at any of its addresses"
            )));
        }
        state
            .node
            .add_peer(PeerNode {
                peer_id: pid.to_string(),
                addrs: addrs.iter().map(ToString::to_string).collect(),
                api: String::new(),
            })
            .await?;
        super::pins::catch_up(&state.node).await;
    }
    let node = member(&state).map_or_else(
        || PeerNode {
            peer_id: pid.to_string(),
            addrs: addrs.iter().map(ToString::to_string).collect(),
            api: String::new(),
        },
        |(_, n)| n,
    );
    let cluster_peers: Vec<String> = state
        .node
        .members()
        .into_iter()
        .map(|(_, n)| n.peer_id)
        .collect();
    Ok(Json(member_info(&state, &node, &cluster_peers).await))
}

/// `DELETE /peers/{peer}`: removes a member from the cluster.
pub(super) async fn remove(
    State(state): State<Shared>,
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
