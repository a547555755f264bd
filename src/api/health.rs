//! `GET /health/graph`, `GET /health/alerts` and `GET /health/bandwidth`
//! in IPFS Cluster's shapes (`ConnectGraph`, `[]Alert`,
//! `BandwidthByProtocol`).
//!
//! The graph is drawn from what each member says of itself (its peer name,
//! IPFS node and cluster connections); alerts are the members' metrics that
//! expired; pinfleet counts no libp2p bandwidth, so that map is empty. This
//! module reads only: it must not change the monitor or the membership.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;

use super::{ApiError, Shared};
use crate::state::format_time;
use crate::wire::{Alert, Bandwidth, ConnectGraph};

/// `GET /health/graph`: every member, its peer name, its IPFS node and the
/// members its cluster swarm is connected to, and the other members' IPFS
/// nodes its IPFS node is connected to, as of now. A member that does not
/// answer has no links (as in IPFS Cluster).
pub(super) async fn graph(State(state): State<Shared>) -> Json<ConnectGraph> {
    let me = state.node.peer_id();
    let members: Vec<libp2p::PeerId> = state
        .node
        .members()
        .iter()
        .filter_map(|(_, n)| n.peer_id.parse().ok())
        .collect();
    let mut g = ConnectGraph {
        cluster_id: me.to_string(),
        ..ConnectGraph::default()
    };
    for p in &members {
        g.cluster_trust_links.insert(p.to_string(), true);
        g.cluster_links.insert(p.to_string(), Vec::new());
    }
    let Some(status) = &state.status else {
        g.id_to_peername
            .insert(me.to_string(), state.peername.clone());
        return Json(g);
    };
    let ids = status.identities();
    let answers = futures::future::join_all(
        members
            .iter()
            .map(|p| async move { (*p, ids.ask(*p).await) }),
    )
    .await;
    let nodes: std::collections::HashSet<String> = answers
        .iter()
        .filter_map(|(_, a)| a.as_ref().ok())
        .map(|id| id.ipfs_peer_id.clone())
        .filter(|n| !n.is_empty())
        .collect();
    for (peer, answer) in answers {
        let Ok(id) = answer else {
            continue;
        };
        let key = peer.to_string();
        g.id_to_peername.insert(key.clone(), id.peername);
        g.cluster_links.insert(key.clone(), id.connected);
        if !id.ipfs_peer_id.is_empty() {
            // As IPFS Cluster: links to the other members' nodes only.
            let mut links: Vec<String> = id
                .ipfs_connected
                .into_iter()
                .filter(|n| nodes.contains(n))
                .collect();
            links.sort();
            g.ipfs_links.insert(id.ipfs_peer_id.clone(), links);
            g.cluster_to_ipfs.insert(key, id.ipfs_peer_id);
        }
    }
    Json(g)
}

/// `GET /health/alerts`: each member's metrics whose last reading expired,
/// newest first, `triggered_at` being when it expired.
pub(super) async fn alerts(State(state): State<Shared>) -> Result<Json<Vec<Alert>>, ApiError> {
    let mut out = super::monitor::with_view(&state, |m, members, now| {
        let mut out: Vec<(i64, Alert)> = Vec::new();
        for peer in m.peers().filter(|p| members.contains(*p)) {
            for metric in m.peer(peer).into_iter().flat_map(|names| names.values()) {
                if metric.is_expired(now) {
                    out.push((
                        metric.expire_ms,
                        Alert {
                            metric: super::monitor::to_wire(metric),
                            triggered_at: format_time(metric.expire_ms),
                        },
                    ));
                }
            }
        }
        out
    })?;
    out.sort_by_key(|a| std::cmp::Reverse(a.0));
    Ok(Json(out.into_iter().map(|(_, a)| a).collect()))
}

/// `GET /health/bandwidth`: bandwidth by libp2p protocol. pinfleet keeps
/// no bandwidth counters, so the map is empty (IPFS Cluster without a
/// bandwidth reporter answers `null`; an empty map decodes the same way
/// into Go's map type).
pub(super) async fn bandwidth() -> Json<BTreeMap<String, Bandwidth>> {
    Json(BTreeMap::new())
}
