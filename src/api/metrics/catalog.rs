//! Every metric `GET /metrics` exposes, in one table: the exposition takes
//! each family's help text from here, `docs/metrics.md` documents exactly
//! these names, and the alerts and dashboard in `manifests/monitoring/`
//! select only these (tests/it/metrics_docs.rs and tests/it/monitoring.rs
//! hold all three to it). Names are the ones PromQL selects: a counter's
//! ends in `_total`; a histogram's is its base name (`_bucket`, `_sum`,
//! `_count` follow it).

/// What kind of Prometheus metric a family is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// A value that goes up and down.
    Gauge,
    /// A count that only goes up (reset when the peer restarts).
    Counter,
    /// Observations in cumulative buckets.
    Histogram,
}

impl MetricKind {
    /// The word the exposition's `# TYPE` line uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gauge => "gauge",
            Self::Counter => "counter",
            Self::Histogram => "histogram",
        }
    }
}

/// One metric family: its name, kind, labels and meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricDoc {
    /// The name PromQL selects (`pinfleet_…`).
    pub name: &'static str,
    /// Gauge, counter or histogram.
    pub kind: MetricKind,
    /// The labels of its samples, besides those Prometheus adds.
    pub labels: &'static [&'static str],
    /// What it measures (the exposition's `# HELP`).
    pub help: &'static str,
}

impl MetricDoc {
    /// The family name the exposition registers: a counter's without its
    /// `_total`, which the encoder appends to the samples.
    pub fn family(&self) -> &'static str {
        match self.kind {
            MetricKind::Counter => self.name.strip_suffix("_total").unwrap_or(self.name),
            MetricKind::Gauge | MetricKind::Histogram => self.name,
        }
    }
}

const fn gauge(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricDoc {
    MetricDoc {
        name,
        kind: MetricKind::Gauge,
        labels,
        help,
    }
}

const PINSET: &[&str] = &["namespace", "name"];

pub(super) const PEERS: MetricDoc = gauge(
    "pinfleet_peers",
    &[],
    "Members of the cluster as this peer sees them",
);
pub(super) const LEADER: MetricDoc = gauge(
    "pinfleet_leader",
    &[],
    "1 when this peer is the Raft leader",
);
pub(super) const FOLLOWER: MetricDoc = gauge(
    "pinfleet_follower",
    &[],
    "1 when this peer is a follower (it holds the signed state feed, never writes)",
);
pub(super) const FEED_FOLLOWERS: MetricDoc = gauge(
    "pinfleet_feed_followers",
    &[],
    "Followers that pulled the state feed from this peer in the last minute",
);
pub(super) const FEED_SENT: MetricDoc = gauge(
    "pinfleet_feed_sent_bytes",
    &[],
    "State feed bytes (signed entries, snapshot chunks) this peer sent to followers since it started",
);
pub(super) const FEED_RECEIVED: MetricDoc = gauge(
    "pinfleet_feed_received_bytes",
    &[],
    "State feed bytes this follower received and applied since it started",
);
pub(super) const FEED_REFUSED: MetricDoc = gauge(
    "pinfleet_feed_refused_pieces",
    &[],
    "Pieces of the state feed this follower refused (forged, replayed, out of order, cut short) since it started",
);
pub(super) const RAFT_LAST_LOG_INDEX: MetricDoc = gauge(
    "pinfleet_raft_last_log_index",
    &[],
    "Index of the last entry in this peer's Raft log (entries written so far: a group commit writes many pins in one)",
);
pub(super) const RAFT_APPLIED_INDEX: MetricDoc = gauge(
    "pinfleet_raft_applied_index",
    &[],
    "Index of the last committed Raft entry this peer applied to its state (a follower: the last feed entry)",
);
pub(super) const RAFT_TERM: MetricDoc = gauge(
    "pinfleet_raft_term",
    &[],
    "This peer's current Raft term (each election starts a new one)",
);
pub(super) const RAFT_HAS_LEADER: MetricDoc = gauge(
    "pinfleet_raft_has_leader",
    &[],
    "1 when this peer knows a Raft leader (writes can commit), 0 when it knows none",
);
pub(super) const RAFT_LEADER_CHANGES: MetricDoc = MetricDoc {
    name: "pinfleet_raft_leader_changes_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Leaders this peer has seen elected (a new leader, or a new term) since it started",
};
pub(super) const PINS: MetricDoc = gauge("pinfleet_pins", &[], "Pins in the shared state");
pub(super) const PINS_BELOW_MIN: MetricDoc = gauge(
    "pinfleet_pins_below_replication_min",
    &[],
    "Pins of the shared state allocated to fewer peers than their replication minimum (every peer counts its own copy of the state)",
);
pub(super) const LOCAL_PIN_QUEUE: MetricDoc = gauge(
    "pinfleet_local_pin_queue",
    &[],
    "Pin operations queued or in flight on this peer",
);
pub(super) const LOCAL_PINNED: MetricDoc = gauge(
    "pinfleet_local_pinned",
    &[],
    "CIDs pinned on this peer's IPFS node",
);
pub(super) const LOCAL_PINS: MetricDoc = gauge(
    "pinfleet_local_pins",
    &["status"],
    "Pins of any owner allocated to this peer, by this peer's status",
);
pub(super) const LOCAL_NOT_PINNED: MetricDoc = gauge(
    "pinfleet_local_pins_not_pinned",
    &["age"],
    "Pins allocated to this peer and not pinned on it (queued, pinning or in error), by how long ago they entered the state",
);
pub(super) const LOCAL_OLDEST_NOT_PINNED: MetricDoc = gauge(
    "pinfleet_local_oldest_not_pinned_age_seconds",
    &[],
    "Age of the oldest pin allocated to this peer and not pinned on it (0 when every one is pinned)",
);
pub(super) const PINSET_PINS: MetricDoc = gauge(
    "pinfleet_pinset_pins",
    PINSET,
    "Pins the PinSet's applied revision declares",
);
pub(super) const PINSET_SUSPENDED: MetricDoc = gauge(
    "pinfleet_pinset_suspended",
    PINSET,
    "1 when spec.suspend is set",
);
pub(super) const PINSET_APPLIED: MetricDoc = gauge(
    "pinfleet_pinset_applied_timestamp_seconds",
    PINSET,
    "When the PinSet's revision was committed (Unix seconds)",
);
pub(super) const PINSET_LOCAL_PINS: MetricDoc = gauge(
    "pinfleet_pinset_local_pins",
    &["namespace", "name", "status"],
    "The PinSet's pins allocated to this peer, by this peer's status",
);
pub(super) const PINSET_CONDITION: MetricDoc = gauge(
    "pinfleet_pinset_condition",
    &["namespace", "name", "type", "status"],
    "Conditions a controller recorded: 1 for the current status",
);
pub(super) const RECONCILES: MetricDoc = MetricDoc {
    name: "pinfleet_reconciles_total",
    kind: MetricKind::Counter,
    labels: &["namespace", "name", "source", "result"],
    help: "Reconciles a controller reported to this peer, per PinSet and source; result is ok or failed",
};
pub(super) const RECONCILE_DURATION: MetricDoc = MetricDoc {
    name: "pinfleet_reconcile_duration_seconds",
    kind: MetricKind::Histogram,
    labels: &["source"],
    help: "How long the reconciles a controller reported to this peer took, per source",
};

/// Every metric `GET /metrics` exposes.
pub const METRICS: &[MetricDoc] = &[
    PEERS,
    LEADER,
    FOLLOWER,
    FEED_FOLLOWERS,
    FEED_SENT,
    FEED_RECEIVED,
    FEED_REFUSED,
    RAFT_LAST_LOG_INDEX,
    RAFT_APPLIED_INDEX,
    RAFT_TERM,
    RAFT_HAS_LEADER,
    RAFT_LEADER_CHANGES,
    PINS,
    PINS_BELOW_MIN,
    LOCAL_PIN_QUEUE,
    LOCAL_PINNED,
    LOCAL_PINS,
    LOCAL_NOT_PINNED,
    LOCAL_OLDEST_NOT_PINNED,
    PINSET_PINS,
    PINSET_SUSPENDED,
    PINSET_APPLIED,
    PINSET_LOCAL_PINS,
    PINSET_CONDITION,
    RECONCILES,
    RECONCILE_DURATION,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_prefixed_and_counters_end_in_total() {
        let mut seen = std::collections::BTreeSet::new();
        for m in METRICS {
            assert!(seen.insert(m.name), "{} listed twice", m.name);
            assert!(m.name.starts_with("pinfleet_"), "{}", m.name);
            assert_eq!(
                m.kind == MetricKind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
            assert!(!m.help.is_empty(), "{} has no help", m.name);
        }
    }
}
