//! Informer metrics as the allocator reads them: IPFS Cluster's `api.Metric`
//! with its time in Unix milliseconds, and the latest metric per peer and
//! name.
//!
//! Pure data: nothing here reads a clock. Whether a metric still counts is a
//! question asked with an explicit `now_ms`.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use serde::{Deserialize, Serialize};

/// Free space in the peer's IPFS repository, in bytes (weight = bytes free).
pub const FREESPACE: &str = "freespace";
/// Pins queued on the peer's tracker (weight = minus the queue length).
pub const PINQUEUE: &str = "pinqueue";
/// Pins held by the peer's IPFS node (weight = minus the count).
pub const NUMPIN: &str = "numpin";
/// Prefix of tag metrics: `tag:<key>` carries the peer's tag value.
pub const TAG_PREFIX: &str = "tag:";

/// One reading from one informer of one peer, as gossiped between peers
/// (IPFS Cluster's `api.Metric`, with the expiry in Unix milliseconds).
///
/// The allocator is agnostic of what a metric measures: it orders peers by
/// `weight`, higher first, and groups peers whose `partitionable` metrics
/// have the same `value`. Informers encode their meaning in those two
/// fields; the constructors below do it the way IPFS Cluster's do.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Metric {
    /// `freespace`, `pinqueue`, `numpin` or `tag:<key>`.
    pub name: String,
    /// Peer id of the peer the metric describes.
    pub peer: String,
    /// The reading, as text (a number, or a tag's value).
    pub value: String,
    /// Preference: among peers, a higher weight is allocated first.
    pub weight: i64,
    /// Peers with the same value form one partition (tags); otherwise
    /// every peer is a partition of its own (numbers).
    pub partitionable: bool,
    /// Unix milliseconds after which the metric no longer counts.
    pub expire_ms: i64,
    /// False when the informer could not take the reading (IPFS down) or
    /// the peer must not receive pins (disk full).
    pub valid: bool,
    /// Unix milliseconds when this peer took or received the reading (0
    /// until then); set by the receiver, never gossiped.
    #[serde(default, skip_serializing)]
    pub received_ms: i64,
}

impl Metric {
    /// Free space in bytes. A full repository yields an invalid metric, so
    /// the peer receives no new pins (as IPFS Cluster's disk informer does).
    pub fn freespace(peer: impl Into<String>, free_bytes: u64, expire_ms: i64) -> Self {
        Self {
            name: FREESPACE.to_owned(),
            peer: peer.into(),
            value: free_bytes.to_string(),
            weight: i64::try_from(free_bytes).unwrap_or(i64::MAX),
            partitionable: false,
            expire_ms,
            valid: free_bytes > 0,
            received_ms: 0,
        }
    }

    /// Length of the pin queue: shorter queues are preferred.
    pub fn pinqueue(peer: impl Into<String>, queued: u64, expire_ms: i64) -> Self {
        Self {
            name: PINQUEUE.to_owned(),
            peer: peer.into(),
            value: queued.to_string(),
            weight: negated(queued),
            partitionable: false,
            expire_ms,
            valid: true,
            received_ms: 0,
        }
    }

    /// Number of pins held: fewer pins are preferred.
    pub fn numpin(peer: impl Into<String>, pins: u64, expire_ms: i64) -> Self {
        Self {
            name: NUMPIN.to_owned(),
            peer: peer.into(),
            value: pins.to_string(),
            weight: negated(pins),
            partitionable: false,
            expire_ms,
            valid: true,
            received_ms: 0,
        }
    }

    /// The peer's tag `key` (metric `tag:<key>`): peers sharing a value form
    /// one group, and copies are spread across groups.
    pub fn tag(
        peer: impl Into<String>,
        key: &str,
        value: impl Into<String>,
        expire_ms: i64,
    ) -> Self {
        Self {
            name: format!("{TAG_PREFIX}{key}"),
            peer: peer.into(),
            value: value.into(),
            weight: 0,
            partitionable: true,
            expire_ms,
            valid: true,
            received_ms: 0,
        }
    }

    /// True once `now_ms` is past the expiry (a metric is still good at
    /// exactly `expire_ms`, as in IPFS Cluster).
    pub fn is_expired(&self, now_ms: i64) -> bool {
        now_ms > self.expire_ms
    }

    /// Valid and not expired: the metric counts for ordering and for
    /// choosing new peers.
    pub fn is_usable(&self, now_ms: i64) -> bool {
        self.valid && !self.is_expired(now_ms)
    }

    /// A total order used only to make `PeerMetrics::insert` independent
    /// of arrival order when two readings expire at the same instant.
    fn rank(&self) -> (i64, bool, i64, &str, bool, i64) {
        (
            self.expire_ms,
            self.valid,
            self.weight,
            &self.value,
            self.partitionable,
            self.received_ms,
        )
    }
}

fn negated(n: u64) -> i64 {
    i64::try_from(n).map_or(i64::MIN + 1, |n| -n)
}

/// The latest metric of each name for each peer: what a peer's monitor
/// knows from gossip, and the allocator's whole view of the cluster.
///
/// Keys always agree with the metrics' own `peer` and `name`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerMetrics {
    by_peer: BTreeMap<String, BTreeMap<String, Metric>>,
}

impl PeerMetrics {
    /// No metrics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `metric` unless a reading of the same peer and name that
    /// expires later is already known (gossip can deliver out of order).
    /// The outcome does not depend on the order of insertions. Returns
    /// whether `metric` was kept.
    pub fn insert(&mut self, metric: Metric) -> bool {
        let names = self.by_peer.entry(metric.peer.clone()).or_default();
        match names.entry(metric.name.clone()) {
            Entry::Vacant(e) => {
                e.insert(metric);
                true
            }
            Entry::Occupied(mut e) => {
                if metric.rank() > e.get().rank() {
                    e.insert(metric);
                    true
                } else {
                    false
                }
            }
        }
    }

    /// The metric `name` of `peer`, whatever its age.
    pub fn get(&self, peer: &str, name: &str) -> Option<&Metric> {
        self.by_peer.get(peer)?.get(name)
    }

    /// Every metric of `peer`, by name.
    pub fn peer(&self, peer: &str) -> Option<&BTreeMap<String, Metric>> {
        self.by_peer.get(peer)
    }

    /// Peers with at least one metric, in id order.
    pub fn peers(&self) -> impl Iterator<Item = &str> {
        self.by_peer.keys().map(String::as_str)
    }

    /// Every metric, by peer then name.
    pub fn iter(&self) -> impl Iterator<Item = &Metric> {
        self.by_peer.values().flat_map(BTreeMap::values)
    }

    /// Number of metrics.
    pub fn len(&self) -> usize {
        self.by_peer.values().map(BTreeMap::len).sum()
    }

    /// True when no metric is known.
    pub fn is_empty(&self) -> bool {
        self.by_peer.is_empty()
    }

    /// Forgets a peer (removed from the cluster).
    pub fn remove_peer(&mut self, peer: &str) -> bool {
        self.by_peer.remove(peer).is_some()
    }

    /// Counts one more queued pin on each of `peers`.
    ///
    /// The leader calls this after each allocation of a batch, so the next
    /// pin of the same batch sees the queues it has just filled instead of
    /// sending every pin of a million-pin batch to the same peers. The
    /// peer's next real reading (which expires later) replaces the estimate.
    pub fn charge_pinqueue(&mut self, peers: &[String]) {
        for peer in peers {
            let Some(m) = self
                .by_peer
                .get_mut(peer)
                .and_then(|names| names.get_mut(PINQUEUE))
            else {
                continue;
            };
            m.weight = m.weight.saturating_sub(1);
            if let Ok(queued) = m.value.parse::<u64>() {
                m.value = queued.saturating_add(1).to_string();
            }
        }
    }
}

impl FromIterator<Metric> for PeerMetrics {
    fn from_iter<I: IntoIterator<Item = Metric>>(iter: I) -> Self {
        let mut out = Self::new();
        out.extend(iter);
        out
    }
}

impl Extend<Metric> for PeerMetrics {
    fn extend<I: IntoIterator<Item = Metric>>(&mut self, iter: I) {
        for m in iter {
            self.insert(m);
        }
    }
}
