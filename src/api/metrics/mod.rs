//! `GET /metrics`: Prometheus metrics of this peer, per PinSet (DESIGN §6).
//!
//! Computed from the local copy of the shared state and this peer's pin
//! tracker: no fan-out to other peers (every peer is scraped; sum over
//! `instance` in PromQL for cluster totals). The per-status counts come
//! from a count over the pins that is reused for nineteen times as long as it
//! took ([`MetricsCache`]); everything else is read per scrape, one read per
//! PinSet. Every family's name, kind and help come from [`catalog`].
//! Gauges per PinSet: pins declared, suspended, when applied, the conditions
//! a controller recorded (Flux's `status` label convention: the current
//! status is 1, the others 0), and this peer's own statuses of the PinSet's
//! pins allocated to it. This module must not write to the state.

mod catalog;
mod tally;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

use self::catalog as m;
pub use self::catalog::{METRICS, MetricDoc, MetricKind};
pub use self::tally::MetricsCache;
use self::tally::{AGES, BUCKETS, bucket_label};
use super::pins::storage;
use super::{ApiError, Shared, blocking};
use crate::manifest::{Owner, PinSetId};

/// The content type Prometheus negotiates for the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PinSetLabels {
    namespace: String,
    name: String,
}

impl From<&PinSetId> for PinSetLabels {
    fn from(id: &PinSetId) -> Self {
        Self {
            namespace: id.namespace.clone(),
            name: id.name.clone(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BucketLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    namespace: String,
    name: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    namespace: String,
    name: String,
    #[prometheus(flatten)]
    condition: ConditionKey,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionKey {
    r#type: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgeLabel {
    age: &'static str,
}

/// Registers `metric` as the family `doc` describes.
fn put(registry: &mut Registry, doc: &MetricDoc, metric: impl Metric) {
    registry.register(doc.family(), doc.help, metric);
}

/// Registers a gauge of `doc` set to `v` (saturating).
fn gauge(registry: &mut Registry, doc: &MetricDoc, v: impl TryInto<i64>) {
    let g = Gauge::<i64>::default();
    g.set(v.try_into().unwrap_or(i64::MAX));
    put(registry, doc, g);
}

/// `GET /metrics`.
pub(super) async fn get(State(state): State<Shared>) -> Result<Response, ApiError> {
    let node = state.node.clone();
    let me = node.peer_id().to_string();
    let store = node.store().clone();
    let view = match &state.status {
        Some(svc) => Some((
            svc.tracker()
                .view()
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?,
            state.metrics.tally(&store, svc, &me).await?,
        )),
        None => None,
    };
    let members = node.members().len();
    let leader = node.is_leader();
    let raft = node.metrics();
    let log_index = raft.last_log_index.unwrap_or(0);
    let applied_index = raft.last_applied.map_or(0, |l| l.index);
    let term = raft.current_term;
    let has_leader = raft.current_leader.is_some();
    let leader_changes = node.leader_changes();
    let follower = node.is_follower();
    let followers = node.followers().len();
    let (feed_sent, feed_received) = node.feed_traffic();
    let feed_refused = node.feed_refused();
    let cache = std::sync::Arc::clone(&state.metrics);
    let body = blocking(move || {
        let records = store.pinsets().map_err(storage)?;
        let mut conditions = Vec::new();
        for (owner, _) in &records {
            if let Some(c) = store.conditions(owner).map_err(storage)? {
                conditions.push((owner.clone(), c));
            }
        }
        let total = store.pin_count().map_err(storage)?;
        let empty = HashMap::new();
        let (here, local) = match &view {
            Some((_, t)) => (t.here, &t.local),
            None => ([0; 5], &empty),
        };

        let mut registry = Registry::default();
        let r = &mut registry;
        gauge(r, &m::PEERS, members);
        gauge(r, &m::LEADER, i64::from(leader));
        gauge(r, &m::FOLLOWER, i64::from(follower));
        gauge(r, &m::FEED_FOLLOWERS, followers);
        gauge(r, &m::FEED_SENT, feed_sent);
        gauge(r, &m::FEED_RECEIVED, feed_received);
        gauge(r, &m::FEED_REFUSED, feed_refused);
        gauge(r, &m::RAFT_LAST_LOG_INDEX, log_index);
        gauge(r, &m::RAFT_APPLIED_INDEX, applied_index);
        gauge(r, &m::RAFT_TERM, term);
        gauge(r, &m::RAFT_HAS_LEADER, i64::from(has_leader));
        put(
            r,
            &m::RAFT_LEADER_CHANGES,
            ConstCounter::new(leader_changes),
        );
        gauge(r, &m::PINS, total);
        put(r, &m::RECONCILES, cache.reconciles.clone());
        put(r, &m::RECONCILE_DURATION, cache.durations.clone());
        if let Some((view, tally)) = &view {
            gauge(r, &m::PINS_BELOW_MIN, tally.below_min);
            gauge(r, &m::LOCAL_PIN_QUEUE, view.pin_queue());
            gauge(r, &m::LOCAL_PINNED, view.pinned_count());
            let by_status = Family::<BucketLabel, Gauge>::default();
            for (b, n) in BUCKETS.iter().zip(here) {
                by_status
                    .get_or_create(&BucketLabel {
                        status: bucket_label(*b),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            put(r, &m::LOCAL_PINS, by_status);
            let by_age = Family::<AgeLabel, Gauge>::default();
            for ((age, _), n) in AGES.iter().zip(tally.not_pinned) {
                by_age
                    .get_or_create(&AgeLabel { age })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            put(r, &m::LOCAL_NOT_PINNED, by_age);
            let now = chrono::Utc::now().timestamp_millis();
            let oldest = tally
                .oldest_not_pinned_ms
                .map_or(0, |at| now.saturating_sub(at).max(0) / 1000);
            gauge(r, &m::LOCAL_OLDEST_NOT_PINNED, oldest);
        }

        let pins = Family::<PinSetLabels, Gauge>::default();
        let suspended = Family::<PinSetLabels, Gauge>::default();
        let applied = Family::<PinSetLabels, Gauge<f64, AtomicU64>>::default();
        let statuses = Family::<StatusLabels, Gauge>::default();
        let conds = Family::<ConditionLabels, Gauge>::default();
        let mut ids: BTreeMap<Owner, PinSetId> = BTreeMap::new();
        for (owner, r) in &records {
            let id = PinSetId::new(r.namespace.clone(), r.name.clone());
            let l = PinSetLabels::from(&id);
            pins.get_or_create(&l)
                .set(i64::try_from(r.pins).unwrap_or(i64::MAX));
            suspended.get_or_create(&l).set(i64::from(r.suspend));
            // Milliseconds to seconds: exact enough for a timestamp gauge.
            #[allow(clippy::cast_precision_loss)]
            applied
                .get_or_create(&l)
                .set(r.applied_at_ms as f64 / 1000.0);
            if view.is_some() {
                let counts = local.get(owner).copied().unwrap_or_default();
                for (b, n) in BUCKETS.iter().zip(counts) {
                    statuses
                        .get_or_create(&StatusLabels {
                            namespace: id.namespace.clone(),
                            name: id.name.clone(),
                            status: bucket_label(*b),
                        })
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
            }
            ids.insert(owner.clone(), id);
        }
        for (owner, rec) in &conditions {
            let Some(id) = ids.get(owner) else { continue };
            for c in &rec.conditions {
                for status in ["True", "False", "Unknown"] {
                    conds
                        .get_or_create(&ConditionLabels {
                            namespace: id.namespace.clone(),
                            name: id.name.clone(),
                            condition: ConditionKey {
                                r#type: c.type_.clone(),
                                status,
                            },
                        })
                        .set(i64::from(c.status == status));
                }
            }
        }
        put(r, &m::PINSET_PINS, pins);
        put(r, &m::PINSET_SUSPENDED, suspended);
        put(r, &m::PINSET_APPLIED, applied);
        put(r, &m::PINSET_LOCAL_PINS, statuses);
        put(r, &m::PINSET_CONDITION, conds);
        let mut body = String::new();
        encode(&mut body, &registry).map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(body)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response())
}
