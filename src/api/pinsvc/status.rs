//! A request's `PinStatus`: its status mapped from the cluster's per-peer
//! statuses (`pinset_status::classify`: pinned once the replication
//! minimum is met), and its `delegates`, the IPFS nodes of the peers that
//! hold or will hold the pin (never empty).

use std::collections::BTreeMap;
use std::time::Instant;

use super::{Failure, PinSvcState};
use crate::api::pinset_status::{Bucket, classify};
use crate::manifest::CidKey;
use crate::state::StatePin;
use crate::state::pinsvc::PinSvcRequest;
use crate::wire::{GlobalPinInfo, PinSvcPin, PinSvcStatus};

/// Most delegates listed (the spec's bound).
const MAX_DELEGATES: usize = 20;

/// The spec's statuses.
pub(super) const STATUSES: [&str; 4] = ["queued", "pinning", "pinned", "failed"];

/// A request's `created` as the spec writes it: RFC 3339 in UTC with
/// nanoseconds, so no two requests show the same value.
pub(super) fn format_created(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%dT%H:%M:%S%.9fZ")
        .to_string()
}

/// The pins of these CIDs in the state, their statuses across the
/// cluster (one fan-out for all), and where each CID's are (a CID not in
/// the state has none).
async fn lookup(
    state: &PinSvcState,
    cids: impl Iterator<Item = CidKey>,
) -> Result<(Vec<StatePin>, Vec<GlobalPinInfo>, BTreeMap<CidKey, usize>), Failure> {
    let mut pins: Vec<StatePin> = Vec::new();
    let mut at: BTreeMap<CidKey, usize> = BTreeMap::new();
    for cid in cids {
        if at.contains_key(&cid) {
            continue;
        }
        if let Some(p) = state.node.store().get(&cid).map_err(super::storage)? {
            at.insert(cid, pins.len());
            pins.push(p);
        }
    }
    let infos = if pins.is_empty() {
        Vec::new()
    } else {
        state
            .status
            .global(&pins)
            .await
            .map_err(|e| Failure::internal(format!("cannot read pin statuses: {e}")))?
    };
    Ok((pins, infos, at))
}

/// The status of each record, in order: one status fan-out for all; each
/// is recorded in [`super::recent`].
pub(super) async fn of(
    state: &PinSvcState,
    records: Vec<PinSvcRequest>,
) -> Result<Vec<PinSvcStatus>, Failure> {
    let (pins, infos, at) = lookup(state, records.iter().map(|r| r.cid)).await?;
    let fallback = fallback_delegates(state).await;
    let default = state.status.default_replication();
    let mut seen = Vec::with_capacity(records.len());
    let shown: Vec<PinSvcStatus> = records
        .into_iter()
        .map(|r| {
            let found = at.get(&r.cid).map(|i| (&pins[*i], &infos[*i]));
            let (status, info, delegates) = match found {
                Some((pin, gpi)) => {
                    let (status, info) = summary(classify(pin, gpi, default), gpi);
                    (status, info, delegates_of(pin, gpi))
                }
                None => (
                    "failed",
                    BTreeMap::from([("status_details".to_string(), REMOVED_BY_ADMIN.to_string())]),
                    Vec::new(),
                ),
            };
            let delegates = if delegates.is_empty() {
                fallback.clone()
            } else {
                delegates
            };
            seen.push((r.cid, status));
            PinSvcStatus {
                requestid: r.requestid,
                status: status.to_string(),
                created: format_created(r.created_ns),
                pin: PinSvcPin {
                    cid: r.cid_as_sent,
                    name: r.name,
                    origins: r.origins,
                    meta: r.meta,
                },
                delegates,
                info,
            }
        })
        .collect();
    state.recent.put(seen, Instant::now());
    Ok(shown)
}

/// Why a request whose pin left the state is `failed`: only an admin's
/// forced unpin removes a pin a request still holds.
const REMOVED_BY_ADMIN: &str = "the pin was removed from the cluster by an admin";

/// The status of each CID, in order, as [`of`] computes it but reusing
/// what a recent computation found ([`super::recent`]): one status fan-out
/// for the CIDs not known lately. Also answers until when every status
/// given would still be reused.
pub(super) async fn statuses(
    state: &PinSvcState,
    cids: &[CidKey],
) -> Result<(Vec<&'static str>, Instant), Failure> {
    let now = Instant::now();
    let known: Vec<Option<(&'static str, Instant)>> =
        cids.iter().map(|c| state.recent.get(c, now)).collect();
    let unknown: Vec<CidKey> = cids
        .iter()
        .zip(&known)
        .filter(|(_, s)| s.is_none())
        .map(|(c, _)| *c)
        .collect();
    let mut fresh = Vec::with_capacity(unknown.len());
    if !unknown.is_empty() {
        let (pins, infos, at) = lookup(state, unknown.iter().copied()).await?;
        let default = state.status.default_replication();
        for c in &unknown {
            fresh.push(match at.get(c) {
                Some(i) => summary(classify(&pins[*i], &infos[*i], default), &infos[*i]).0,
                None => "failed",
            });
        }
        state
            .recent
            .put(unknown.iter().copied().zip(fresh.iter().copied()), now);
    }
    let mut fresh = fresh.into_iter();
    let mut until = now + super::recent::SETTLED_TTL;
    let out = known
        .into_iter()
        .map(|k| {
            let (status, ends) = match k {
                Some(k) => k,
                // One fresh status per unknown CID, in order.
                None => {
                    let s = fresh.next().unwrap_or("failed");
                    (s, now + super::recent::ttl(s))
                }
            };
            until = until.min(ends);
            status
        })
        .collect();
    Ok((out, until))
}

/// The spec's status for a bucket, and what `info` says about it.
fn summary(bucket: Bucket, gpi: &GlobalPinInfo) -> (&'static str, BTreeMap<String, String>) {
    let mut info = BTreeMap::new();
    let status = match bucket {
        Bucket::Pinned => "pinned",
        Bucket::Pinning => "pinning",
        // Not yet placed, or waiting in a tracker's queue.
        Bucket::Queued | Bucket::Unpinned => "queued",
        Bucket::Error => {
            if let Some(e) = gpi
                .peer_map
                .values()
                .map(|s| &s.error)
                .find(|e| !e.is_empty())
            {
                info.insert("status_details".into(), e.clone());
            }
            "failed"
        }
    };
    (status, info)
}

/// `addr` ending in `/p2p/<id>` (the spec requires it).
fn with_peer(addr: &str, id: &str) -> Option<String> {
    if addr.contains("/p2p/") {
        Some(addr.to_string())
    } else if id.is_empty() {
        None
    } else {
        Some(format!("{addr}/p2p/{id}"))
    }
}

/// The IPFS addresses of the peers that hold or will hold `pin`: its
/// allocations, or every peer when it has none (replicated everywhere).
fn delegates_of(pin: &StatePin, gpi: &GlobalPinInfo) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (peer, s) in &gpi.peer_map {
        if !pin.allocations.is_empty() && !pin.allocations.iter().any(|a| a == peer) {
            continue;
        }
        for a in &s.ipfs_peer_addresses {
            if let Some(a) = with_peer(a, &s.ipfs_peer_id)
                && !out.contains(&a)
                && out.len() < MAX_DELEGATES
            {
                out.push(a);
            }
        }
    }
    out
}

/// Delegates when the peers' IPFS addresses are not known: this peer's own
/// IPFS node, else its cluster addresses (never empty).
async fn fallback_delegates(state: &PinSvcState) -> Vec<String> {
    let own = state.status.identities().own().await;
    let mut out: Vec<String> = own
        .ipfs_peer_addresses
        .iter()
        .filter_map(|a| with_peer(a, &own.ipfs_peer_id))
        .take(MAX_DELEGATES)
        .collect();
    if out.is_empty() {
        out = state
            .node
            .node()
            .addrs
            .iter()
            .take(MAX_DELEGATES)
            .cloned()
            .collect();
    }
    if out.is_empty() {
        out.push(format!("/p2p/{}", state.node.peer_id()));
    }
    out
}
