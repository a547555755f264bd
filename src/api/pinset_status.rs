//! `GET /pinsets/{ns}/{name}/status`: a PinSet's status (DESIGN §6) in
//! Kubernetes conventions, computed on request from the shared state and
//! every member's pin statuses.
//!
//! Computed conditions are stamped with the time of the answer; the
//! conditions a controller recorded (`PUT .../conditions`, see
//! [`merge_reported`]) override them when it is stalled, and make a PinSet
//! that never applied (an invalid manifest) answer with total 0.
//!
//! The owner's pins are walked a page (`PAGE`) at a time through
//! `StatusService::global`, so at most one page of statuses is held at once.
//! The counting rules live in `StatusTally`, a pure accumulator (no I/O, no
//! clock) that the Kubernetes controller can reuse for the CRD `.status`.
//! This module must not write to the state nor decide what to pin.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::pins::storage;
use super::{ApiError, Shared, blocking};
use crate::manifest::model::{Condition, PinErrorStatus, StatusSummary};
use crate::manifest::{
    CidKey, MAX_STORED_MESSAGE_BYTES, Owner, PinSetId, PinSetStatus, ReplicationFactors, capped,
    plural,
};
use crate::state::{StatePin, format_time};
use crate::tracker::{StatusService, global::PAGE};
use crate::wire::{GlobalPinInfo, TrackerStatus};

/// Most `(cid, peer, error)` entries a status lists.
pub const MAX_ERRORS: usize = 20;

/// Where one peer status (or one pin, as a whole) is counted in a summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    /// `pinned`.
    Pinned,
    /// `pinning`.
    Pinning,
    /// Waiting: `pin_queued`, `queued`, and `undefined` (a member that has
    /// not applied the pin yet will queue it when it does).
    Queued,
    /// Any error: `pin_error`, `unpin_error`, `cluster_error`,
    /// `unexpectedly_unpinned`, `error`.
    Error,
    /// Everything else: not pinned and not on its way.
    Unpinned,
}

impl Bucket {
    /// The bucket of one peer's status.
    pub fn of(status: TrackerStatus) -> Bucket {
        match status {
            TrackerStatus::Pinned => Bucket::Pinned,
            TrackerStatus::Pinning => Bucket::Pinning,
            TrackerStatus::PinQueued | TrackerStatus::Queued | TrackerStatus::Undefined => {
                Bucket::Queued
            }
            s if s.matches(TrackerStatus::Error) => Bucket::Error,
            _ => Bucket::Unpinned,
        }
    }

    fn count(self, summary: &mut StatusSummary) {
        summary.total += 1;
        match self {
            Bucket::Pinned => summary.pinned += 1,
            Bucket::Pinning => summary.pinning += 1,
            Bucket::Queued => summary.queued += 1,
            Bucket::Error => summary.error += 1,
            Bucket::Unpinned => summary.unpinned += 1,
        }
    }
}

/// Which peers must pin a pin, and how many of them must report `pinned`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    /// Every member that answers (replication -1, explicit or through the
    /// cluster default; or max -1 before any allocation, as the tracker
    /// does): members that cannot be asked (`cluster_error`) do not block.
    EveryMember,
    /// At least `min` of the allocated peers.
    Allocated {
        /// `replication.min`, at least 1.
        min: usize,
    },
}

fn requirement(pin: &StatePin, default: ReplicationFactors) -> Requirement {
    let r = pin.effective().options.replication;
    let r = if r.min == 0 && r.max == 0 { default } else { r };
    // The same rule as `tracker::allocated_here`.
    if r.min == -1 || (r.max == -1 && pin.allocations.is_empty()) {
        Requirement::EveryMember
    } else {
        Requirement::Allocated {
            min: usize::try_from(r.min).unwrap_or(0).max(1),
        }
    }
}

/// How one pin counts in a PinSet's summary, given every member's status:
/// pinned when enough of the peers that must pin it report `pinned`;
/// otherwise the first of error, pinning, queued reported by one of those
/// peers; otherwise unpinned.
pub fn classify(pin: &StatePin, info: &GlobalPinInfo, default: ReplicationFactors) -> Bucket {
    let req = requirement(pin, default);
    let considered: Vec<TrackerStatus> = info
        .peer_map
        .iter()
        .filter(|(peer, s)| match req {
            Requirement::EveryMember => s.status != TrackerStatus::ClusterError,
            Requirement::Allocated { .. } => pin.allocations.iter().any(|a| a == *peer),
        })
        .map(|(_, s)| s.status)
        .collect();
    let required = match req {
        Requirement::EveryMember => considered.len().max(1),
        Requirement::Allocated { min } => min,
    };
    let buckets: Vec<Bucket> = considered.into_iter().map(Bucket::of).collect();
    let pinned = buckets.iter().filter(|b| **b == Bucket::Pinned).count();
    if pinned >= required {
        return Bucket::Pinned;
    }
    [Bucket::Error, Bucket::Pinning, Bucket::Queued]
        .into_iter()
        .find(|b| buckets.contains(b))
        .unwrap_or(Bucket::Unpinned)
}

/// Running counts over a PinSet's pins: feed each pin with its global
/// status (`add`), then build the status (`finish`). Holds the counts and
/// at most `MAX_ERRORS` errors, never the statuses themselves.
#[derive(Clone, Debug)]
pub struct StatusTally {
    default: ReplicationFactors,
    summary: StatusSummary,
    peers: BTreeMap<String, StatusSummary>,
    errors: Vec<PinErrorStatus>,
}

impl StatusTally {
    /// An empty tally; `default` is the cluster's replication for pins that
    /// ask for 0/0.
    pub fn new(default: ReplicationFactors) -> Self {
        Self {
            default,
            summary: StatusSummary::default(),
            peers: BTreeMap::new(),
            errors: Vec::new(),
        }
    }

    /// Counts one pin. Per peer, only peers that must pin it count it (a
    /// member that cannot be asked counts an error for every-peer pins);
    /// errors are listed in the order pins are added.
    pub fn add(&mut self, pin: &StatePin, info: &GlobalPinInfo) {
        classify(pin, info, self.default).count(&mut self.summary);
        let every = requirement(pin, self.default) == Requirement::EveryMember;
        for (peer, s) in &info.peer_map {
            if !(every || pin.allocations.iter().any(|a| a == peer)) {
                continue;
            }
            let bucket = Bucket::of(s.status);
            bucket.count(self.peers.entry(peer.clone()).or_default());
            if bucket == Bucket::Error && self.errors.len() < MAX_ERRORS {
                self.errors.push(PinErrorStatus {
                    cid: info.cid.clone(),
                    peer: peer.clone(),
                    error: if s.error.is_empty() {
                        s.status.as_str().to_string()
                    } else {
                        capped(s.error.clone(), MAX_STORED_MESSAGE_BYTES)
                    },
                });
            }
        }
    }

    /// The status: `revision` as recorded, conditions `Ready`,
    /// `Reconciling` and `Stalled` computed from the counts, each stamped
    /// `now` (RFC 3339).
    pub fn finish(self, revision: Option<String>, suspended: bool, now: &str) -> PinSetStatus {
        let s = self.summary;
        let condition = |type_: &str, status: bool, reason: &str, message: String| Condition {
            type_: type_.to_string(),
            status: if status { "True" } else { "False" }.to_string(),
            reason: reason.to_string(),
            message: capped(message, MAX_STORED_MESSAGE_BYTES),
            last_transition_time: now.to_string(),
            observed_generation: None,
        };
        let done = s.pinned == s.total;
        let ready = if done {
            condition(
                "Ready",
                true,
                "Succeeded",
                if s.total == 1 {
                    "1 pin pinned".to_string()
                } else {
                    format!("all {} pins pinned", s.total)
                },
            )
        } else if s.error > 0 {
            let first = self
                .errors
                .first()
                .map(|e| format!(" (first: {} on {}: {})", e.cid, e.peer, e.error))
                .unwrap_or_default();
            condition(
                "Ready",
                false,
                "PinErrors",
                format!(
                    "{} of {} pinned; {} with errors{first}",
                    s.pinned,
                    plural(s.total, "pin"),
                    s.error
                ),
            )
        } else {
            condition(
                "Ready",
                false,
                "Progressing",
                format!("{} of {} pinned", s.pinned, plural(s.total, "pin")),
            )
        };
        let reconciling = if suspended {
            condition(
                "Reconciling",
                false,
                "Suspended",
                "spec.suspend is true: manifest changes are not applied; applied pins are kept"
                    .to_string(),
            )
        } else if done {
            condition(
                "Reconciling",
                false,
                "Succeeded",
                "every pin is pinned".to_string(),
            )
        } else {
            condition(
                "Reconciling",
                true,
                "Progressing",
                format!(
                    "{} not pinned yet (failed pins are retried)",
                    plural(s.total - s.pinned, "pin")
                ),
            )
        };
        let stalled = condition(
            "Stalled",
            false,
            "NotStalled",
            "nothing blocks reconciliation".to_string(),
        );
        PinSetStatus {
            observed_generation: None,
            revision,
            conditions: vec![ready, reconciling, stalled],
            summary: s,
            peers: self.peers,
            errors: self.errors,
        }
    }
}

/// Computes the status of PinSet `id` as `node` sees it, or `None` when no
/// PinSet of that name is recorded. Pins released while the walk runs are
/// skipped.
pub(crate) async fn pinset_status(
    store: crate::consensus::StateStore,
    svc: &StatusService,
    id: PinSetId,
    default: ReplicationFactors,
) -> Result<Option<PinSetStatus>, ApiError> {
    let owner = Owner::pinset(id);
    let found = {
        let store = store.clone();
        let owner = owner.clone();
        blocking(move || {
            let record = store.pinset(&owner).map_err(storage)?;
            let reported = store.conditions(&owner).map_err(storage)?;
            Ok((record, reported))
        })
        .await?
    };
    let (record, reported) = found;
    if record.is_none() && reported.is_none() {
        return Ok(None);
    }
    // Page by page through the owner's index: memory follows the page,
    // not the PinSet, and no read transaction spans the walk.
    let mut tally = StatusTally::new(default);
    let mut after: Option<CidKey> = None;
    while record.is_some() {
        let page = {
            let (store, owner, from) = (store.clone(), owner.clone(), after);
            blocking(move || {
                store
                    .owned_pins_after(&owner, from.as_ref(), PAGE)
                    .map_err(storage)
            })
            .await?
        };
        let Some(last) = page.last() else { break };
        after = Some(last.cid);
        let infos = svc.global(&page).await.map_err(ApiError::internal)?;
        for (pin, info) in page.iter().zip(&infos) {
            tally.add(pin, info);
        }
        if page.len() < PAGE {
            break;
        }
    }
    let now = format_time(chrono::Utc::now().timestamp_millis());
    let suspended = record.as_ref().is_some_and(|r| r.suspend);
    let mut status = tally.finish(record.map(|r| r.revision), suspended, &now);
    if let Some(reported) = reported {
        merge_reported(&mut status, &reported.conditions);
    }
    Ok(Some(status))
}

/// Merges the conditions a controller reported into computed ones: a
/// reported `Stalled` True wins (and turns `Ready` False with its reason
/// and message); reported condition types the computation lacks are added.
pub fn merge_reported(status: &mut PinSetStatus, reported: &[Condition]) {
    let stalled = reported
        .iter()
        .find(|c| c.type_ == "Stalled" && c.status == "True");
    if let Some(stalled) = stalled {
        for c in &mut status.conditions {
            match c.type_.as_str() {
                "Stalled" => *c = stalled.clone(),
                "Ready" => {
                    c.status = "False".to_string();
                    c.reason = stalled.reason.clone();
                    c.message = stalled.message.clone();
                    c.last_transition_time = stalled.last_transition_time.clone();
                }
                "Reconciling" => {
                    if let Some(r) = reported.iter().find(|r| r.type_ == "Reconciling") {
                        *c = r.clone();
                    }
                }
                _ => {}
            }
        }
    }
    for r in reported {
        if !status.conditions.iter().any(|c| c.type_ == r.type_) {
            status.conditions.push(r.clone());
        }
    }
}

/// `GET /pinsets/{namespace}/{name}/status`.
pub(super) async fn get(
    State(state): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<PinSetStatus>, ApiError> {
    let id = super::pinsets::pinset_id(namespace, name)?;
    let svc = state.status.clone().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "this peer tracks no pins")
    })?;
    let default = svc.default_replication();
    let label = id.to_string();
    pinset_status(state.node.store().clone(), &svc, id, default)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("pinset {label} not found")))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::manifest::{PinOptions, PinSpec};
    use crate::testkit::seq_cid;
    use crate::wire::PinInfoShort;

    const EVERY: ReplicationFactors = ReplicationFactors { min: -1, max: -1 };

    fn pin(i: u64, min: i32, max: i32, allocations: &[&str]) -> StatePin {
        let owner = Owner::pinset(PinSetId::new("default", "t"));
        let spec = PinSpec {
            name: format!("p{i}"),
            options: Arc::new(PinOptions {
                replication: ReplicationFactors { min, max },
                ..PinOptions::default()
            }),
        };
        StatePin {
            cid: seq_cid(i),
            written_as: None,
            owners: BTreeMap::from([(owner, spec)]),
            allocations: allocations.iter().map(|s| s.to_string()).collect(),
            timestamp_ms: 0,
        }
    }

    fn info(pin: &StatePin, peers: &[(&str, TrackerStatus, &str)]) -> GlobalPinInfo {
        GlobalPinInfo {
            cid: pin.display_cid(),
            name: String::new(),
            allocations: pin.allocations.clone(),
            origins: Vec::new(),
            created: String::new(),
            metadata: BTreeMap::new(),
            peer_map: peers
                .iter()
                .map(|(p, s, e)| {
                    (
                        p.to_string(),
                        PinInfoShort {
                            peername: String::new(),
                            ipfs_peer_id: String::new(),
                            ipfs_peer_addresses: Vec::new(),
                            status: *s,
                            timestamp: String::new(),
                            error: e.to_string(),
                            attempt_count: 0,
                            priority_pin: false,
                        },
                    )
                })
                .collect(),
        }
    }

    use TrackerStatus::{ClusterError, PinError, PinQueued, Pinned, Pinning, Remote, Undefined};

    #[test]
    fn every_member_pins_need_every_member_that_answers() {
        let p = pin(1, -1, -1, &[]);
        let all = info(&p, &[("a", Pinned, ""), ("b", Pinned, "")]);
        assert_eq!(classify(&p, &all, EVERY), Bucket::Pinned);
        let one = info(&p, &[("a", Pinned, ""), ("b", Pinning, "")]);
        assert_eq!(classify(&p, &one, EVERY), Bucket::Pinning);
        let err = info(&p, &[("a", Pinned, ""), ("b", PinError, "down")]);
        assert_eq!(classify(&p, &err, EVERY), Bucket::Error);
        let gone = info(&p, &[("a", Pinned, ""), ("b", ClusterError, "no answer")]);
        assert_eq!(classify(&p, &gone, EVERY), Bucket::Pinned);
        let lagging = info(&p, &[("a", Pinned, ""), ("b", Undefined, "")]);
        assert_eq!(classify(&p, &lagging, EVERY), Bucket::Queued);
        // 0/0 takes the cluster default.
        let d = pin(2, 0, 0, &[]);
        let half = info(&d, &[("a", Pinned, ""), ("b", PinQueued, "")]);
        assert_eq!(classify(&d, &half, EVERY), Bucket::Queued);
    }

    #[test]
    fn allocated_pins_need_min_of_their_allocations() {
        let p = pin(1, 1, 2, &["a", "b"]);
        let one = info(
            &p,
            &[("a", Pinned, ""), ("b", PinError, "x"), ("c", Remote, "")],
        );
        assert_eq!(classify(&p, &one, EVERY), Bucket::Pinned);
        let p2 = pin(2, 2, 2, &["a", "b"]);
        let short = info(
            &p2,
            &[
                ("a", Pinned, ""),
                ("b", ClusterError, "x"),
                ("c", Pinned, ""),
            ],
        );
        assert_eq!(
            classify(&p2, &short, EVERY),
            Bucket::Error,
            "an unreachable allocated peer blocks, a non-allocated pinned one does not help"
        );
        let none = pin(3, 2, 3, &[]);
        let unallocated = info(&none, &[("a", Remote, ""), ("b", Remote, "")]);
        assert_eq!(classify(&none, &unallocated, EVERY), Bucket::Unpinned);
    }

    #[test]
    fn tally_counts_pins_peers_errors_and_conditions() {
        let mut t = StatusTally::new(EVERY);
        for i in 0..3 {
            let p = pin(i, -1, -1, &[]);
            t.add(&p, &info(&p, &[("a", Pinned, ""), ("b", Pinned, "")]));
        }
        let p = pin(3, -1, -1, &[]);
        t.add(
            &p,
            &info(&p, &[("a", Pinned, ""), ("b", PinError, "ipfs down")]),
        );
        let p = pin(4, 1, 1, &["a"]);
        t.add(&p, &info(&p, &[("a", Pinning, ""), ("b", Remote, "")]));
        let st = t.finish(Some("r1".into()), false, "2026-01-01T00:00:00Z");
        assert_eq!(
            st.summary,
            StatusSummary {
                total: 5,
                pinned: 3,
                pinning: 1,
                queued: 0,
                error: 1,
                unpinned: 0
            }
        );
        assert_eq!(st.peers["a"].total, 5);
        assert_eq!(st.peers["a"].pinned, 4);
        assert_eq!(st.peers["b"].total, 4, "b is not allocated pin 4");
        assert_eq!(st.peers["b"].error, 1);
        assert_eq!(st.errors.len(), 1);
        assert_eq!(st.errors[0].peer, "b");
        assert_eq!(st.errors[0].error, "ipfs down");
        assert_eq!(st.revision.as_deref(), Some("r1"));
        let ready = &st.conditions[0];
        assert_eq!(
            (
                ready.type_.as_str(),
                ready.status.as_str(),
                ready.reason.as_str()
            ),
            ("Ready", "False", "PinErrors")
        );
        assert!(ready.message.contains("3 of 5"), "{}", ready.message);
        assert_eq!(st.conditions[1].status, "True");
        assert_eq!(
            (
                st.conditions[2].type_.as_str(),
                st.conditions[2].status.as_str()
            ),
            ("Stalled", "False")
        );
        let json = serde_json::to_value(&st).unwrap();
        assert!(json["conditions"][0]["lastTransitionTime"].is_string());
        assert!(json.get("observedGeneration").is_none());
    }

    #[test]
    fn errors_are_capped_and_an_empty_set_is_ready() {
        let mut t = StatusTally::new(EVERY);
        for i in 0..30 {
            let p = pin(i, -1, -1, &[]);
            t.add(&p, &info(&p, &[("a", PinError, "")]));
        }
        let st = t.finish(None, false, "now");
        assert_eq!(st.errors.len(), MAX_ERRORS);
        assert_eq!(st.errors[0].error, "pin_error");
        assert_eq!(st.summary.error, 30);

        let st = StatusTally::new(EVERY).finish(None, true, "now");
        assert_eq!(st.conditions[0].status, "True");
        assert_eq!(st.conditions[1].reason, "Suspended");
    }

    #[test]
    fn a_reported_stall_overrides_the_computed_conditions() {
        let mut st = StatusTally::new(EVERY).finish(Some("r".into()), false, "t0");
        let c = |type_: &str, status: &str, reason: &str| Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: format!("{reason} detail"),
            last_transition_time: "t1".into(),
            observed_generation: None,
        };
        // Not stalled: the computed conditions stand.
        let mut calm = st.clone();
        merge_reported(&mut calm, &[c("Ready", "True", "Succeeded")]);
        assert_eq!(calm, st);

        merge_reported(
            &mut st,
            &[
                c("Ready", "False", "PruneGuard"),
                c("Reconciling", "False", "PruneGuard"),
                c("Stalled", "True", "PruneGuard"),
                c("Extra", "True", "Custom"),
            ],
        );
        let get = |t: &str| st.conditions.iter().find(|x| x.type_ == t).unwrap();
        assert_eq!(get("Stalled"), &c("Stalled", "True", "PruneGuard"));
        let ready = get("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "PruneGuard")
        );
        assert_eq!(ready.message, "PruneGuard detail");
        assert_eq!(get("Reconciling").reason, "PruneGuard");
        assert_eq!(get("Extra").reason, "Custom");
        assert_eq!(st.revision.as_deref(), Some("r"));
    }
}
