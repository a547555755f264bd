//! `GET /followers`: the followers this peer knows of (issue 17) — those
//! that pulled the signed feed from it in the last minute, and those whose
//! informer metrics (tagged `follower = "true"`) have not expired — with
//! how far behind they are and what they report. Followers that fetch from
//! each other may never pull from a given trusted peer; their metrics
//! still reach it by gossip.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;

use super::Shared;
use crate::allocator::informer::{APPLIED, FOLLOWER_TAG};
use crate::allocator::{FREESPACE, NUMPIN, PINQUEUE, TAG_PREFIX};
use crate::wire::FollowerInfo;

/// `GET /followers`, most recently heard first.
pub(super) async fn list(State(state): State<Shared>) -> Json<Vec<FollowerInfo>> {
    let mine = state.node.metrics().last_applied.map_or(0, |l| l.index);
    let now = chrono::Utc::now().timestamp_millis();
    let mut out: BTreeMap<String, FollowerInfo> = BTreeMap::new();
    for f in state.node.followers() {
        out.insert(
            f.peer.to_string(),
            FollowerInfo {
                id: f.peer.to_string(),
                addresses: f.addrs,
                applied: Some(f.applied),
                last_seen_ms: f.ago.as_millis() as u64,
                ..FollowerInfo::default()
            },
        );
    }
    if let Some(view) = &state.monitor {
        let view = view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tag = format!("{TAG_PREFIX}{FOLLOWER_TAG}");
        for peer in view.peers() {
            let reports = view.peer(peer).into_iter().flat_map(|m| m.values());
            let live: Vec<_> = reports.filter(|m| !m.is_expired(now)).collect();
            if !live.iter().any(|m| m.name == tag && m.value == "true") {
                continue;
            }
            let info = out.entry(peer.to_owned()).or_insert_with(|| FollowerInfo {
                id: peer.to_owned(),
                last_seen_ms: u64::MAX,
                ..FollowerInfo::default()
            });
            for m in &live {
                let number = m.value.parse::<u64>().ok();
                match m.name.as_str() {
                    FREESPACE => info.freespace = number,
                    PINQUEUE => info.pinqueue = number,
                    NUMPIN => info.numpin = number,
                    APPLIED => info.applied = info.applied.max(number),
                    name => {
                        if let Some(key) = name.strip_prefix(TAG_PREFIX) {
                            info.tags.insert(key.to_owned(), m.value.clone());
                        }
                    }
                }
                let ago = (now - m.received_ms).max(0) as u64;
                info.last_seen_ms = info.last_seen_ms.min(ago);
            }
        }
    }
    let mut list: Vec<FollowerInfo> = out
        .into_values()
        .map(|mut f| {
            f.behind = f.applied.map(|a| mine.saturating_sub(a));
            f
        })
        .collect();
    list.sort_by_key(|f| f.last_seen_ms);
    Json(list)
}
