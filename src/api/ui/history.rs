//! The last hour of every peer's informer metrics, kept in memory on the
//! serving peer for the peer page's charts: one sample each time a peer's
//! readings change (the informer's interval), at most [`MAX_SAMPLES`] per
//! peer, nothing older than [`WINDOW_MS`]. Fed by [`run`], which the API's
//! listener runs beside itself, and by each peer page.
//!
//! Owns the samples only: it reads the monitor's view and must never
//! change it nor decide anything from it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::allocator::PeerMetrics;

/// How far back the charts reach.
pub const WINDOW_MS: i64 = 60 * 60 * 1000;

/// Most samples kept per peer (one hour at one every 5 s).
pub const MAX_SAMPLES: usize = 720;

/// How often [`run`] looks for new readings.
const LOOK_EVERY: Duration = Duration::from_secs(2);

/// One reading of a peer's numeric metrics.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    at_ms: i64,
    values: BTreeMap<String, f64>,
}

#[derive(Debug, Default)]
struct Series {
    /// The newest `received_ms` sampled: a new sample needs a newer one.
    last_received_ms: i64,
    samples: VecDeque<Sample>,
}

/// Every peer's samples. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct MetricHistory {
    peers: Mutex<HashMap<String, Series>>,
}

impl MetricHistory {
    /// Samples each of `members` whose readings in `metrics` are newer
    /// than its last sample; forgets peers that are no longer members and
    /// samples older than the window.
    pub fn observe(&self, metrics: &PeerMetrics, members: &BTreeSet<String>, now_ms: i64) {
        let mut peers = self.lock();
        peers.retain(|p, _| members.contains(p));
        for peer in members {
            let Some(names) = metrics.peer(peer) else {
                continue;
            };
            let newest = names.values().map(|m| m.received_ms).max().unwrap_or(0);
            let series = peers.entry(peer.clone()).or_default();
            if newest > series.last_received_ms {
                series.last_received_ms = newest;
                let values = names
                    .values()
                    .filter(|m| !m.is_expired(now_ms) && !m.partitionable)
                    .filter_map(|m| Some((m.name.clone(), m.value.parse::<f64>().ok()?)))
                    .collect();
                series.samples.push_back(Sample {
                    at_ms: newest,
                    values,
                });
            }
            while series.samples.len() > MAX_SAMPLES
                || series
                    .samples
                    .front()
                    .is_some_and(|s| s.at_ms < now_ms - WINDOW_MS)
            {
                series.samples.pop_front();
            }
        }
    }

    /// The names of the metrics sampled for `peer`.
    pub fn names(&self, peer: &str) -> BTreeSet<String> {
        let peers = self.lock();
        peers
            .get(peer)
            .map(|s| {
                s.samples
                    .iter()
                    .flat_map(|x| x.values.keys().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `(Unix ms, value)` of `metric` of `peer`, oldest first.
    pub fn series(&self, peer: &str, metric: &str) -> Vec<(i64, f64)> {
        let peers = self.lock();
        peers
            .get(peer)
            .map(|s| {
                s.samples
                    .iter()
                    .filter_map(|x| Some((x.at_ms, *x.values.get(metric)?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Series>> {
        // Plain data: a panic while holding the lock leaves it usable.
        self.peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Samples `monitor` into `history` every [`LOOK_EVERY`] until `cancel`.
pub async fn run(
    history: std::sync::Arc<MetricHistory>,
    monitor: crate::api::MonitorView,
    node: crate::consensus::ClusterNode,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(LOOK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        observe(&history, &monitor, &node);
    }
}

/// One look at `monitor` for new readings of the current members.
pub fn observe(
    history: &MetricHistory,
    monitor: &crate::api::MonitorView,
    node: &crate::consensus::ClusterNode,
) {
    let members: BTreeSet<String> = node.members().into_iter().map(|(_, n)| n.peer_id).collect();
    let now = chrono::Utc::now().timestamp_millis();
    let m = monitor
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    history.observe(&m, &members, now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::Metric;

    /// `m` received at `received_ms`, expiring an hour later (a newer
    /// reading expires later: the view keeps the one that expires last).
    fn at(m: Metric, received_ms: i64) -> Metric {
        Metric {
            received_ms,
            expire_ms: received_ms + WINDOW_MS,
            ..m
        }
    }

    #[test]
    fn one_sample_per_new_reading_within_the_window() {
        let h = MetricHistory::default();
        let members: BTreeSet<String> = ["a".to_string()].into();
        let mut m = PeerMetrics::new();
        let hour = WINDOW_MS;
        m.insert(at(Metric::freespace("a", 100, 10 * hour), 1_000));
        m.insert(at(Metric::tag("a", "region", "eu", 10 * hour), 1_000));
        h.observe(&m, &members, 1_000);
        h.observe(&m, &members, 1_500);
        assert_eq!(
            h.series("a", "freespace"),
            [(1_000, 100.0)],
            "same reading once"
        );
        m.insert(at(Metric::freespace("a", 90, 10 * hour), 2_000));
        h.observe(&m, &members, 2_000);
        assert_eq!(h.series("a", "freespace"), [(1_000, 100.0), (2_000, 90.0)]);
        assert_eq!(
            h.names("a"),
            ["freespace".to_string()].into(),
            "tags are not charted"
        );
        m.insert(at(Metric::freespace("a", 80, 10 * hour), 2_000 + hour));
        h.observe(&m, &members, 2_000 + hour);
        assert_eq!(
            h.series("a", "freespace"),
            [(2_000, 90.0), (2_000 + hour, 80.0)],
            "older than an hour is dropped"
        );
        h.observe(&m, &BTreeSet::new(), 3 * hour);
        assert!(
            h.series("a", "freespace").is_empty(),
            "a peer that left is forgotten"
        );
    }
}
