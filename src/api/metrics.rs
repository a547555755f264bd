//! `GET /metrics`: Prometheus metrics of this peer, per PinSet (DESIGN §6).
//!
//! Computed from the local copy of the shared state and this peer's pin
//! tracker: no fan-out to other peers (every peer is scraped; sum over
//! `peer` in PromQL for cluster totals). The per-status counts come from a
//! count over the pins that is reused for nine times as long as it took
//! ([`MetricsCache`]); everything else is read per scrape, one read per
//! PinSet.
//! Gauges per PinSet: pins declared, suspended, when applied, the conditions
//! a controller recorded (Flux's `status` label convention: the current
//! status is 1, the others 0), and this peer's own statuses of the PinSet's
//! pins allocated to it. This module must not write to the state.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::pins::storage;
use super::pinset_status::Bucket;
use super::{ApiError, ApiState, blocking};
use crate::manifest::{Owner, PinSetId};
use crate::tracker::StatusQuery;
use crate::tracker::global::PAGE;
use crate::wire::TrackerStatus;

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

/// The label of a summary bucket.
fn bucket_label(b: Bucket) -> &'static str {
    match b {
        Bucket::Pinned => "pinned",
        Bucket::Pinning => "pinning",
        Bucket::Queued => "queued",
        Bucket::Error => "error",
        Bucket::Unpinned => "unpinned",
    }
}

const BUCKETS: [Bucket; 5] = [
    Bucket::Pinned,
    Bucket::Pinning,
    Bucket::Queued,
    Bucket::Error,
    Bucket::Unpinned,
];

/// This peer's statuses of the pins allocated to it: per PinSet, and in
/// all (indexed like [`BUCKETS`]).
#[derive(Debug, Default)]
struct LocalTally {
    here: [u64; 5],
    local: HashMap<Owner, [u64; 5]>,
}

/// The last [`LocalTally`], shared by scrapes. Counting walks every pin (a
/// page at a time, no read transaction held between pages), so a tally is
/// kept for nine times as long as it took: however often Prometheus
/// scrapes, counting takes at most a tenth of the time, and a scrape
/// otherwise costs one read per PinSet. On a small state that is a few
/// milliseconds: every scrape is fresh.
#[derive(Debug, Default)]
pub struct MetricsCache {
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, std::sync::Arc<LocalTally>)>>,
}

impl MetricsCache {
    async fn tally(
        &self,
        store: &crate::consensus::StateStore,
        svc: &crate::tracker::StatusService,
        me: &str,
    ) -> Result<std::sync::Arc<LocalTally>, ApiError> {
        // Held while counting: concurrent scrapes wait for one count.
        let mut last = self.last.lock().await;
        if let Some((until, tally)) = last.as_ref()
            && tokio::time::Instant::now() < *until
        {
            return Ok(std::sync::Arc::clone(tally));
        }
        let started = tokio::time::Instant::now();
        let tally = std::sync::Arc::new(count(store, svc, me).await?);
        let now = tokio::time::Instant::now();
        *last = Some((now + (now - started) * 9, std::sync::Arc::clone(&tally)));
        Ok(tally)
    }
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
            if s.status == TrackerStatus::Remote {
                continue;
            }
            let bucket = Bucket::of(s.status);
            let i = BUCKETS.iter().position(|b| *b == bucket).unwrap_or(4);
            tally.here[i] += 1;
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

/// `GET /metrics`.
pub(super) async fn get(State(state): State<ApiState>) -> Result<Response, ApiError> {
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
    let log_index = node.metrics().last_log_index.unwrap_or(0);
    let follower = node.is_follower();
    let followers = node.followers().len();
    let (feed_sent, feed_received) = node.feed_traffic();
    let feed_refused = node.feed_refused();
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

        let mut registry = Registry::with_prefix("pinfleet");
        let gauge = |registry: &mut Registry, name: &str, help: &str, v: i64| {
            let g = Gauge::<i64>::default();
            g.set(v);
            registry.register(name, help, g);
        };
        gauge(
            &mut registry,
            "peers",
            "Members of the cluster as this peer sees them",
            i64::try_from(members).unwrap_or(i64::MAX),
        );
        gauge(
            &mut registry,
            "leader",
            "1 when this peer is the Raft leader",
            i64::from(leader),
        );
        gauge(
            &mut registry,
            "follower",
            "1 when this peer is a follower (it holds the signed state feed, never writes)",
            i64::from(follower),
        );
        gauge(
            &mut registry,
            "feed_followers",
            "Followers that pulled the state feed from this peer in the last minute",
            i64::try_from(followers).unwrap_or(i64::MAX),
        );
        gauge(
            &mut registry,
            "feed_sent_bytes",
            "State feed bytes (signed entries, snapshot chunks) this peer sent to followers since it started",
            i64::try_from(feed_sent).unwrap_or(i64::MAX),
        );
        gauge(
            &mut registry,
            "feed_received_bytes",
            "State feed bytes this follower received and applied since it started",
            i64::try_from(feed_received).unwrap_or(i64::MAX),
        );
        gauge(
            &mut registry,
            "feed_refused_pieces",
            "Pieces of the state feed this follower refused (forged, replayed, out of order, cut short) since it started",
            i64::try_from(feed_refused).unwrap_or(i64::MAX),
        );
        gauge(
            &mut registry,
            "raft_last_log_index",
            "Index of the last entry in this peer's Raft log (entries written so far: a group commit writes many pins in one)",
            i64::try_from(log_index).unwrap_or(i64::MAX),
        );
        gauge(
            &mut registry,
            "pins",
            "Pins in the shared state",
            i64::try_from(total).unwrap_or(i64::MAX),
        );
        if let Some((view, _)) = &view {
            gauge(
                &mut registry,
                "local_pin_queue",
                "Pin operations queued or in flight on this peer",
                i64::try_from(view.pin_queue()).unwrap_or(i64::MAX),
            );
            gauge(
                &mut registry,
                "local_pinned",
                "CIDs pinned on this peer's IPFS node",
                i64::try_from(view.pinned_count()).unwrap_or(i64::MAX),
            );
            let by_status = Family::<BucketLabel, Gauge>::default();
            for (b, n) in BUCKETS.iter().zip(here) {
                by_status
                    .get_or_create(&BucketLabel {
                        status: bucket_label(*b),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            registry.register(
                "local_pins",
                "Pins of any owner allocated to this peer, by this peer's status",
                by_status,
            );
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
        registry.register(
            "pinset_pins",
            "Pins the PinSet's applied revision declares",
            pins,
        );
        registry.register("pinset_suspended", "1 when spec.suspend is set", suspended);
        registry.register(
            "pinset_applied_timestamp_seconds",
            "When the PinSet's revision was committed (Unix seconds)",
            applied,
        );
        registry.register(
            "pinset_local_pins",
            "The PinSet's pins allocated to this peer, by this peer's status",
            statuses,
        );
        registry.register(
            "pinset_condition",
            "Conditions a controller recorded: 1 for the current status",
            conds,
        );
        let mut body = String::new();
        encode(&mut body, &registry).map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(body)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response())
}
