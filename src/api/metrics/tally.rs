//! The counts `GET /metrics` takes from a walk over every pin (this peer's
//! statuses, the pins not pinned here by age, the pins allocated below
//! their replication minimum), kept between scrapes ([`MetricsCache`]),
//! and the reconcile counters the conditions route feeds.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use super::super::pins::storage;
use super::super::pinset_status::Bucket;
use super::super::{ApiError, blocking};
use crate::manifest::{Owner, PinSetId, ReplicationFactors};
use crate::state::StatePin;
use crate::tracker::global::PAGE;
use crate::tracker::{StatusQuery, node_pin};
use crate::wire::TrackerStatus;

/// The label of a summary bucket.
pub(super) fn bucket_label(b: Bucket) -> &'static str {
    match b {
        Bucket::Pinned => "pinned",
        Bucket::Pinning => "pinning",
        Bucket::Queued => "queued",
        Bucket::Error => "error",
        Bucket::Unpinned => "unpinned",
    }
}

pub(super) const BUCKETS: [Bucket; 5] = [
    Bucket::Pinned,
    Bucket::Pinning,
    Bucket::Queued,
    Bucket::Error,
    Bucket::Unpinned,
];

/// The `age` label of `pinfleet_local_pins_not_pinned`, with the age (ms)
/// each bucket ends at.
pub(super) const AGES: [(&str, i64); 4] = [
    ("under_5m", 5 * 60 * 1000),
    ("5m_to_1h", 60 * 60 * 1000),
    ("1h_to_24h", 24 * 60 * 60 * 1000),
    ("over_24h", i64::MAX),
];

/// Bounds (seconds) of the reconcile duration buckets.
const DURATION_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// This peer's statuses of the pins allocated to it: per PinSet, and in
/// all (indexed like [`BUCKETS`]); the ones not pinned by age (indexed like
/// [`AGES`]) and when the oldest entered the state; and the pins of the
/// state allocated below their replication minimum.
#[derive(Debug, Default)]
pub(super) struct LocalTally {
    pub(super) here: [u64; 5],
    pub(super) local: HashMap<Owner, [u64; 5]>,
    pub(super) not_pinned: [u64; 4],
    pub(super) oldest_not_pinned_ms: Option<i64>,
    pub(super) below_min: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReconcileLabels {
    namespace: String,
    name: String,
    source: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SourceLabel {
    source: String,
}

type DurationFamily = Family<SourceLabel, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// What `GET /metrics` keeps between scrapes: the last [`LocalTally`], and
/// the reconciles controllers reported to this peer.
///
/// Counting walks every pin (a page at a time, no read transaction held
/// between pages), so a tally is kept for nineteen times as long as it
/// took: however often it is scraped (Prometheus, the testbed's summary
/// once a second), counting takes at most a twentieth of the time, and a
/// scrape otherwise costs one read per PinSet. On a small state that is a
/// few milliseconds: every scrape is fresh.
#[derive(Debug)]
pub struct MetricsCache {
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, Arc<LocalTally>)>>,
    pub(super) reconciles: Family<ReconcileLabels, Counter>,
    pub(super) durations: DurationFamily,
}

impl Default for MetricsCache {
    fn default() -> Self {
        Self {
            last: tokio::sync::Mutex::default(),
            reconciles: Family::default(),
            durations: Family::new_with_constructor(duration_histogram),
        }
    }
}

impl MetricsCache {
    /// Counts a reconcile of PinSet `id` from `source` that a controller
    /// reported: whether it came out healthy and how long it took.
    pub fn record_reconcile(&self, id: &PinSetId, source: &str, ok: bool, duration_ms: u64) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                namespace: id.namespace.clone(),
                name: id.name.clone(),
                source: source.to_string(),
                result: if ok { "ok" } else { "failed" },
            })
            .inc();
        // Milliseconds to seconds: exact enough for a histogram bucket.
        #[allow(clippy::cast_precision_loss)]
        let seconds = duration_ms as f64 / 1000.0;
        self.durations
            .get_or_create(&SourceLabel {
                source: source.to_string(),
            })
            .observe(seconds);
    }

    pub(super) async fn tally(
        &self,
        store: &crate::consensus::StateStore,
        svc: &crate::tracker::StatusService,
        me: &str,
    ) -> Result<Arc<LocalTally>, ApiError> {
        // Held while counting: concurrent scrapes wait for one count.
        let mut last = self.last.lock().await;
        if let Some((until, tally)) = last.as_ref()
            && tokio::time::Instant::now() < *until
        {
            return Ok(Arc::clone(tally));
        }
        let started = tokio::time::Instant::now();
        let tally = Arc::new(count(store, svc, me).await?);
        let now = tokio::time::Instant::now();
        *last = Some((now + (now - started) * 19, Arc::clone(&tally)));
        Ok(tally)
    }
}

/// Whether `pin` is allocated to fewer peers than its replication minimum
/// (a pin for every peer, or a meta pin no node pins, never is).
fn below_min(pin: &StatePin, default: ReplicationFactors) -> bool {
    let eff = pin.effective();
    if node_pin(&eff.options).is_none() {
        return false;
    }
    let r = eff.options.replication;
    let r = if r.min == 0 && r.max == 0 { default } else { r };
    if r.min <= 0 || (r.max == -1 && pin.allocations.is_empty()) {
        return false;
    }
    pin.allocations.len() < usize::try_from(r.min).unwrap_or(usize::MAX)
}

/// Counts this peer's statuses, a page of the state at a time.
async fn count(
    store: &crate::consensus::StateStore,
    svc: &crate::tracker::StatusService,
    me: &str,
) -> Result<LocalTally, ApiError> {
    let default = svc.default_replication();
    let mut tally = LocalTally::default();
    let mut after = None;
    loop {
        let page = {
            let (store, from) = (store.clone(), after);
            blocking(move || store.pins_after(from.as_ref(), PAGE).map_err(storage)).await?
        };
        let Some(last) = page.last() else { break };
        after = Some(last.cid);
        let now = chrono::Utc::now().timestamp_millis();
        let queries = page
            .iter()
            .map(|pin| StatusQuery::of(pin, me, default, now))
            .collect();
        let statuses = svc
            .tracker()
            .statuses(queries)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        for (pin, s) in page.iter().zip(statuses) {
            if below_min(pin, default) {
                tally.below_min += 1;
            }
            if s.status == TrackerStatus::Remote {
                continue;
            }
            let bucket = Bucket::of(s.status);
            let i = BUCKETS.iter().position(|b| *b == bucket).unwrap_or(4);
            tally.here[i] += 1;
            if matches!(bucket, Bucket::Queued | Bucket::Pinning | Bucket::Error) {
                let age = now.saturating_sub(pin.timestamp_ms);
                let a = AGES.iter().position(|(_, end)| age < *end).unwrap_or(3);
                tally.not_pinned[a] += 1;
                let oldest = tally.oldest_not_pinned_ms.get_or_insert(pin.timestamp_ms);
                *oldest = (*oldest).min(pin.timestamp_ms);
            }
            for owner in pin.owners.keys() {
                if matches!(owner, Owner::PinSet(_)) {
                    tally.local.entry(owner.clone()).or_default()[i] += 1;
                }
            }
        }
        if page.len() < PAGE {
            break;
        }
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{PinOptions, PinSpec};

    fn pin(min: i32, max: i32, allocations: &[&str]) -> StatePin {
        StatePin {
            cid: crate::testkit::seq_cid(1),
            written_as: None,
            owners: [(
                Owner::Api,
                PinSpec {
                    name: String::new(),
                    options: Arc::new(PinOptions {
                        replication: ReplicationFactors { min, max },
                        ..PinOptions::default()
                    }),
                },
            )]
            .into(),
            allocations: allocations.iter().map(ToString::to_string).collect(),
            timestamp_ms: 0,
        }
    }

    #[test]
    fn a_pin_is_below_its_minimum_only_with_fewer_allocations_than_min() {
        let default = ReplicationFactors { min: 2, max: 3 };
        assert!(below_min(&pin(2, 3, &["a"]), default));
        assert!(!below_min(&pin(2, 3, &["a", "b"]), default));
        // Unset factors take the cluster default.
        assert!(below_min(&pin(0, 0, &["a"]), default));
        assert!(!below_min(&pin(0, 0, &["a", "b", "c"]), default));
        // Everywhere (-1) is never below a minimum.
        assert!(!below_min(&pin(-1, -1, &[]), default));
        assert!(!below_min(&pin(1, -1, &[]), default));
    }

    #[test]
    fn ages_end_in_order_and_the_last_bucket_takes_everything() {
        assert!(AGES.windows(2).all(|w| w[0].1 < w[1].1));
        assert_eq!(AGES[3].1, i64::MAX);
    }
}
