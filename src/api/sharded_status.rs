//! The status of a sharded pin's meta pin (IPFS Cluster's `meta-pin`),
//! which no peer pins: it is made of its shards' statuses.
//!
//! The rule ([`aggregate`]):
//! - a peer that holds none of the shards shows `remote`;
//! - a peer that holds shards shows the least advanced of their statuses
//!   on it (an error first — `cluster_error`, `pin_error`,
//!   `unexpectedly_unpinned`, `unpin_error` —, then `pin_queued`,
//!   `pinning`, then the unpin states, then `pinned`);
//! - a meta pin without shards yet (a PinSet's `shard:` for content the
//!   cluster has still to shard) is `pin_queued` on every peer;
//! - the meta pin is `pinned` only when every shard is pinned on at least
//!   its replication minimum of peers (every peer it is allocated to for
//!   -1 or 0/0); until then no peer shows `pinned`: a peer whose own
//!   shards are all pinned shows the least advanced status of the shards
//!   still short of their minimum (`pinning` when none has a peer at
//!   work), so a client waiting for `pinned` waits for the whole content.
//!
//! Only meta pins pay for this: data pins are answered as before, without
//! looking at shards (the state's shard index finds a meta pin's parts).

use std::collections::BTreeMap;

use crate::manifest::ShardKind;
use crate::state::StatePin;
use crate::tracker::StatusService;
use crate::wire::{GlobalPinInfo, PinInfoShort, TrackerStatus};

/// How far along a status is: lower is less advanced.
fn progress(s: TrackerStatus) -> u8 {
    use TrackerStatus as T;
    match s {
        T::ClusterError | T::PinError | T::Error | T::UnexpectedlyUnpinned | T::UnpinError => 0,
        T::PinQueued | T::Queued => 1,
        T::Pinning | T::Undefined => 2,
        T::UnpinQueued | T::Unpinning | T::Unpinned => 3,
        T::Pinned | T::Sharded => 4,
        T::Remote => 5,
    }
}

/// Whether the peer is asked to hold the shard (any status but `remote`).
fn holds(s: &PinInfoShort) -> bool {
    s.status != TrackerStatus::Remote
}

/// Replaces `meta`'s peer statuses by its shards' (see the module docs);
/// `shards` are each shard's replication minimum and status.
pub(super) fn aggregate(meta: &mut GlobalPinInfo, shards: &[(i32, GlobalPinInfo)]) {
    let mut short: Option<TrackerStatus> = None;
    let mut peers: BTreeMap<String, PinInfoShort> = BTreeMap::new();
    for (min, info) in shards {
        let holding = info.peer_map.values().filter(|s| holds(s)).count();
        let needed = usize::try_from(*min)
            .ok()
            .filter(|m| *m >= 1)
            .unwrap_or(holding)
            .max(1);
        let pinned = info
            .peer_map
            .values()
            .filter(|s| s.status == TrackerStatus::Pinned)
            .count();
        if pinned < needed {
            let least = info
                .peer_map
                .values()
                .filter(|s| holds(s) && s.status != TrackerStatus::Pinned)
                .map(|s| s.status)
                .min_by_key(|s| progress(*s))
                .unwrap_or(TrackerStatus::Pinning);
            if short.is_none_or(|s| progress(least) < progress(s)) {
                short = Some(least);
            }
        }
        for (peer, s) in &info.peer_map {
            let entry = peers.entry(peer.clone()).or_insert_with(|| PinInfoShort {
                status: TrackerStatus::Remote,
                ..s.clone()
            });
            if progress(s.status) < progress(entry.status) {
                *entry = s.clone();
            }
        }
    }
    if let Some(least) = short {
        for s in peers.values_mut() {
            if s.status == TrackerStatus::Pinned {
                s.status = least;
            }
        }
    }
    // A peer no shard answered for (none yet): keep what it said.
    for (peer, s) in std::mem::take(&mut meta.peer_map) {
        peers.entry(peer).or_insert(s);
    }
    meta.peer_map = peers;
}

/// Whether `pin` is a meta pin.
fn is_meta(pin: &StatePin) -> bool {
    pin.effective().options.shard_role.as_ref().map(|r| r.kind) == Some(ShardKind::Meta)
}

/// Aggregates the infos of the meta pins among `pins` (`infos[i]` is
/// `pins[i]`'s); nothing is read for other pins.
pub(super) async fn fill_meta(
    store: &crate::consensus::StateStore,
    svc: &StatusService,
    pins: &[StatePin],
    infos: &mut [GlobalPinInfo],
    local: bool,
) -> Result<(), String> {
    for (pin, info) in pins.iter().zip(infos.iter_mut()) {
        if !is_meta(pin) {
            continue;
        }
        let store = store.clone();
        let meta = pin.cid;
        let shards = tokio::task::spawn_blocking(move || -> Result<Vec<StatePin>, String> {
            let mut out = Vec::new();
            for cid in store.shard_members(&meta).map_err(|e| e.to_string())? {
                if let Some(p) = store.get(&cid).map_err(|e| e.to_string())?
                    && p.effective().options.shard_role.as_ref().map(|r| r.kind)
                        == Some(ShardKind::Shard)
                {
                    out.push(p);
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| e.to_string())??;
        if shards.is_empty() {
            // Declared by a PinSet for content not sharded yet: the
            // cluster is to shard it (see `sharder`).
            for p in info.peer_map.values_mut() {
                p.status = TrackerStatus::PinQueued;
            }
            continue;
        }
        let shard_infos = if local {
            svc.local_infos(&shards).await?
        } else {
            svc.global(&shards).await?
        };
        let parts: Vec<(i32, GlobalPinInfo)> = shards
            .iter()
            .map(|p| p.effective().options.replication.min)
            .zip(shard_infos)
            .collect();
        aggregate(info, &parts);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(statuses: &[(&str, TrackerStatus)]) -> GlobalPinInfo {
        GlobalPinInfo {
            cid: "x".into(),
            name: String::new(),
            allocations: Vec::new(),
            origins: Vec::new(),
            created: String::new(),
            metadata: BTreeMap::new(),
            peer_map: statuses
                .iter()
                .map(|(p, s)| {
                    (
                        p.to_string(),
                        PinInfoShort {
                            peername: p.to_string(),
                            ipfs_peer_id: String::new(),
                            ipfs_peer_addresses: Vec::new(),
                            status: *s,
                            timestamp: String::new(),
                            error: String::new(),
                            attempt_count: 0,
                            priority_pin: false,
                        },
                    )
                })
                .collect(),
        }
    }

    fn statuses(i: &GlobalPinInfo) -> Vec<(String, TrackerStatus)> {
        i.peer_map
            .iter()
            .map(|(p, s)| (p.clone(), s.status))
            .collect()
    }

    use TrackerStatus::{PinError, PinQueued, Pinned, Pinning, Remote, Sharded};

    #[test]
    fn a_meta_pin_is_pinned_where_its_shards_are_once_each_meets_its_minimum() {
        let mut meta = info(&[("a", Sharded), ("b", Sharded), ("c", Sharded)]);
        let shards = [
            (1, info(&[("a", Pinned), ("b", Remote), ("c", Remote)])),
            (1, info(&[("a", Remote), ("b", Pinned), ("c", Remote)])),
        ];
        aggregate(&mut meta, &shards);
        assert_eq!(
            statuses(&meta),
            [
                ("a".into(), Pinned),
                ("b".into(), Pinned),
                ("c".into(), Remote)
            ]
        );
    }

    #[test]
    fn until_every_shard_meets_its_minimum_no_peer_shows_pinned() {
        let mut meta = info(&[]);
        let shards = [
            (1, info(&[("a", Pinned), ("b", Remote), ("c", Remote)])),
            (2, info(&[("a", Remote), ("b", Pinned), ("c", PinQueued)])),
        ];
        aggregate(&mut meta, &shards);
        assert_eq!(
            statuses(&meta),
            [
                ("a".into(), PinQueued),
                ("b".into(), PinQueued),
                ("c".into(), PinQueued)
            ]
        );
        // An error anywhere short of its minimum is what every done peer shows.
        let mut meta = info(&[]);
        let shards = [
            (1, info(&[("a", Pinning), ("b", Remote)])),
            (1, info(&[("a", Remote), ("b", PinError)])),
            (1, info(&[("a", Pinned), ("b", Remote)])),
        ];
        aggregate(&mut meta, &shards);
        assert_eq!(
            statuses(&meta),
            [("a".into(), Pinning), ("b".into(), PinError)]
        );
    }

    #[test]
    fn an_every_peer_shard_needs_every_peer_it_is_allocated_to() {
        let mut meta = info(&[]);
        let shards = [(-1, info(&[("a", Pinned), ("b", Pinning)]))];
        aggregate(&mut meta, &shards);
        assert_eq!(
            statuses(&meta),
            [("a".into(), Pinning), ("b".into(), Pinning)]
        );
    }
}
