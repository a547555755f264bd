//! The tracker's service methods on the cluster RPC: other peers ask this
//! peer for its pin statuses (by CID, or by a page of the state in store
//! order), who it is, and to retry its failed operations. Served by [`serve`] once the
//! tracker runs; called by the status fan-out ([`super::StatusService`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{StatusService, TrackerStopped};
use crate::consensus::{ClusterNode, Method};
use crate::manifest::CidKey;

/// This peer's status for these CIDs (only those in its state).
#[derive(Debug)]
pub struct Status;

impl Method for Status {
    const NAME: &'static str = "tracker.status";
    type Request = Vec<CidKey>;
    type Reply = Vec<PeerPinStatus>;
}

/// This peer's status for one CID whether or not it is in its state: a
/// member whose state lacks it asks (a released pin still being unpinned,
/// or one this member has not yet seen released).
#[derive(Debug)]
pub struct StatusAny;

impl Method for StatusAny {
    const NAME: &'static str = "tracker.status_any";
    type Request = CidKey;
    type Reply = PeerPinStatus;
}

/// This peer's status for the `count` pins from `first` to `last` in store
/// order (a status page), answered in that order without CIDs; `None` when
/// this peer does not hold exactly `count` pins there (it lags): ask by CID.
#[derive(Debug)]
pub struct StatusRange;

impl Method for StatusRange {
    const NAME: &'static str = "tracker.status_range";
    type Request = RangeRequest;
    type Reply = Option<Vec<RangeStatus>>;
}

/// Retry this peer's failed pin operations (one CID or all); answers how
/// many were re-queued.
#[derive(Debug)]
pub struct Recover;

impl Method for Recover {
    const NAME: &'static str = "tracker.recover";
    type Request = Option<CidKey>;
    type Reply = u64;
}

/// Retry this peer's failed pin operations (one CID or all); answers the
/// CIDs re-queued.
#[derive(Debug)]
pub struct RecoverCids;

impl Method for RecoverCids {
    const NAME: &'static str = "tracker.recover_cids";
    type Request = Option<CidKey>;
    type Reply = Vec<CidKey>;
}

/// This peer's name and IPFS identity, for the `peer_map` of statuses.
#[derive(Debug)]
pub struct Identity;

impl Method for Identity {
    const NAME: &'static str = "tracker.identity";
    type Request = ();
    type Reply = super::identity::PeerIdentity;
}

/// A status page: the asker's first and last CID and how many pins it has
/// between them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    /// First CID of the page.
    pub first: CidKey,
    /// Last CID of the page.
    pub last: CidKey,
    /// Pins the asker has in that range.
    pub count: u32,
}

/// One peer's status for one CID, as sent between peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerPinStatus {
    /// The pin.
    pub cid: CidKey,
    /// Tracker status name (`pinned`, `pin_error`, …).
    pub status: String,
    /// Last error.
    pub error: String,
    /// Attempts so far.
    pub attempt_count: u32,
    /// When the status last changed (Unix ms).
    pub timestamp_ms: i64,
    /// Queued ahead of retries.
    pub priority_pin: bool,
}

/// One peer's status for one pin of a status page (the CID is implied by
/// the position).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeStatus {
    /// Tracker status name.
    pub s: String,
    /// Last error (empty when none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub e: String,
    /// Attempts so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub a: u32,
    /// When the status last changed (Unix ms).
    pub t: i64,
    /// Queued ahead of retries.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub p: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Serves [`Status`], [`StatusAny`], [`StatusRange`], [`Recover`], [`RecoverCids`] and
/// [`Identity`] from `service`.
/// The handlers hold it weakly: the service holds the node, whose registry
/// holds the handlers, and that cycle would keep a stopped peer's state
/// open. Once every other holder dropped the service, they answer that the
/// tracker stopped.
pub fn serve(node: &ClusterNode, service: Arc<StatusService>) {
    let weak = Arc::downgrade(&service);
    let get = move || weak.upgrade().ok_or_else(|| TrackerStopped.to_string());
    let g = get.clone();
    node.serve::<Status, _, _>(move |cids| {
        let s = g();
        async move { s?.statuses(cids).await }
    });
    let g = get.clone();
    node.serve::<StatusAny, _, _>(move |cid| {
        let s = g();
        async move { s?.status_any(cid).await }
    });
    let g = get.clone();
    node.serve::<StatusRange, _, _>(move |r: RangeRequest| {
        let s = g();
        async move { s?.range_statuses(r.first, r.last, r.count).await }
    });
    let g = get.clone();
    node.serve::<Recover, _, _>(move |cid| {
        let s = g();
        async move {
            s?.tracker()
                .recover(cid)
                .await
                .map(|n| n.len() as u64)
                .map_err(|e| e.to_string())
        }
    });
    let g = get.clone();
    node.serve::<RecoverCids, _, _>(move |cid| {
        let s = g();
        async move { s?.tracker().recover(cid).await.map_err(|e| e.to_string()) }
    });
    node.serve::<Identity, _, _>(move |()| {
        let s = get();
        async move { Ok(s?.identities().own_now().await) }
    });
}
