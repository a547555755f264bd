//! `GET /monitor/metrics` and `GET /monitor/metrics/{name}`: what this
//! peer's monitor knows of every member's informer metrics, in IPFS
//! Cluster's shapes (a list of names; one `Metric` per peer).
//!
//! Reads the metrics the informer gossips (`freespace`, `pinqueue`,
//! `numpin`, `tag:<key>`) and derives `ping` (the peer was heard from and
//! its readings have not expired). As in IPFS Cluster, only valid readings
//! that have not expired, of current members, are listed. This module must
//! not change the metrics nor decide allocations.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::{Path, State};

use super::{ApiError, ApiState, Shared};
use crate::allocator::{Metric, PeerMetrics};
use crate::wire::MonitorMetric;

/// The metric derived from a peer's liveness.
pub const PING: &str = "ping";

/// Where the API reads the monitor's metrics from (the informer's view).
pub type MonitorView = std::sync::Arc<std::sync::Mutex<PeerMetrics>>;

const NANOS_PER_MILLI: i64 = 1_000_000;

fn nanos(ms: i64) -> i64 {
    ms.saturating_mul(NANOS_PER_MILLI)
}

pub(super) fn to_wire(m: &Metric) -> MonitorMetric {
    MonitorMetric {
        name: m.name.clone(),
        peer: m.peer.clone(),
        value: m.value.clone(),
        expire: nanos(m.expire_ms),
        valid: m.valid,
        weight: m.weight,
        partitionable: m.partitionable,
        received_at: nanos(m.received_ms),
    }
}

/// The latest usable metric of each name of each of `members` at `now_ms`,
/// with a `ping` per peer heard from (its latest reading's times).
fn latest(metrics: &PeerMetrics, members: &BTreeSet<String>, now_ms: i64) -> Vec<MonitorMetric> {
    let mut out = Vec::new();
    for peer in metrics.peers().filter(|p| members.contains(*p)) {
        let Some(names) = metrics.peer(peer) else {
            continue;
        };
        let live = names.values().filter(|m| !m.is_expired(now_ms));
        if let Some(last) = live.max_by_key(|m| (m.received_ms, m.expire_ms)) {
            out.push(MonitorMetric {
                name: PING.to_owned(),
                peer: peer.to_owned(),
                value: String::new(),
                expire: nanos(last.expire_ms),
                valid: true,
                weight: 0,
                partitionable: false,
                received_at: nanos(last.received_ms),
            });
        }
        out.extend(names.values().filter(|m| m.is_usable(now_ms)).map(to_wire));
    }
    out
}

/// `read` of this peer's monitor view, the current members' peer ids and
/// the time now (Unix ms); 503 when this peer runs no monitor.
pub(super) fn with_view<T>(
    state: &ApiState,
    read: impl FnOnce(&PeerMetrics, &BTreeSet<String>, i64) -> T,
) -> Result<T, ApiError> {
    let Some(view) = &state.monitor else {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "this peer runs no monitor",
        ));
    };
    let members: BTreeSet<String> = state
        .node
        .members()
        .into_iter()
        .map(|(_, n)| n.peer_id)
        .collect();
    let now = chrono::Utc::now().timestamp_millis();
    // A panic while holding this lock leaves plain data behind.
    let m = view
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Ok(read(&m, &members, now))
}

/// Every current metric known to this peer, by name.
fn by_name(state: &ApiState) -> Result<BTreeMap<String, Vec<MonitorMetric>>, ApiError> {
    let list = with_view(state, latest)?;
    let mut out: BTreeMap<String, Vec<MonitorMetric>> = BTreeMap::new();
    for m in list {
        out.entry(m.name.clone()).or_default().push(m);
    }
    Ok(out)
}

/// `GET /monitor/metrics`: the names of the metrics known now, sorted.
pub(super) async fn names(State(state): State<Shared>) -> Result<Json<Vec<String>>, ApiError> {
    Ok(Json(by_name(&state)?.into_keys().collect()))
}

/// `GET /monitor/metrics/{name}`: that metric's latest reading from every
/// member that sent one (`[]` for a name nobody sends, as IPFS Cluster).
pub(super) async fn get(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Vec<MonitorMetric>>, ApiError> {
    Ok(Json(by_name(&state)?.remove(&name).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(m: Metric, received_ms: i64) -> Metric {
        Metric { received_ms, ..m }
    }

    #[test]
    fn lists_usable_metrics_of_members_and_a_ping_per_live_peer() {
        let mut m = PeerMetrics::new();
        m.insert(reading(Metric::freespace("a", 100, 2_000), 1_000));
        m.insert(reading(Metric::numpin("a", 3, 2_000), 1_100));
        m.insert(reading(Metric::tag("a", "region", "eu", 2_000), 1_000));
        // Full disk: invalid, not listed; the peer still pings.
        m.insert(reading(Metric::freespace("b", 0, 2_000), 1_000));
        // Expired: neither its metric nor a ping.
        m.insert(reading(Metric::numpin("c", 1, 500), 100));
        // Not a member.
        m.insert(reading(Metric::numpin("gone", 1, 2_000), 1_000));
        let members: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
        let got = latest(&m, &members, 1_500);
        let names: Vec<(&str, &str)> = got
            .iter()
            .map(|x| (x.peer.as_str(), x.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("a", "ping"),
                ("a", "freespace"),
                ("a", "numpin"),
                ("a", "tag:region"),
                ("b", "ping"),
            ]
        );
        let ping = &got[0];
        assert_eq!(ping.received_at, 1_100 * NANOS_PER_MILLI);
        assert_eq!(ping.expire, 2_000 * NANOS_PER_MILLI);
        assert!(ping.valid);
        assert_eq!(got[1].value, "100");
        assert!(got[3].partitionable);
    }
}
