//! Statuses computed lately, by CID: what lets a status-filtered listing
//! (`GET /pins?status=pinned`, the default) not ask the cluster again for
//! the status of every request that passes the other filters. The total
//! `count` of such a listing needs all of them; within [`SETTLED_TTL`]
//! (`pinned`, `failed`) or [`MOVING_TTL`] (`queued`, `pinning`, which
//! change as trackers work) a listing reuses the status the last one
//! computed (and [`super::listings`] keeps its matches that long).
//!
//! Every status computed is recorded; only listings read it:
//! `GET /pins/{requestid}` and the answers to writes always ask the
//! cluster (and so refresh it). It holds at most [`MAX_ENTRIES`] entries (all
//! are dropped when it is full, the next listing computes them again).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::manifest::CidKey;

/// How long a `pinned` or `failed` status is reused.
pub(super) const SETTLED_TTL: Duration = Duration::from_secs(30);
/// How long a `queued` or `pinning` status is reused.
pub(super) const MOVING_TTL: Duration = Duration::from_secs(2);
/// Most statuses held.
pub(super) const MAX_ENTRIES: usize = 2_000_000;

/// How long a status is reused.
pub(super) fn ttl(status: &str) -> Duration {
    match status {
        "pinned" | "failed" => SETTLED_TTL,
        _ => MOVING_TTL,
    }
}

/// The cache.
#[derive(Debug, Default)]
pub(super) struct RecentStatuses {
    entries: Mutex<HashMap<CidKey, (&'static str, Instant)>>,
}

impl RecentStatuses {
    /// The status of `cid` computed within its time to live, if any, and
    /// when that time ends.
    pub(super) fn get(&self, cid: &CidKey, now: Instant) -> Option<(&'static str, Instant)> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (status, at) = entries.get(cid)?;
        let until = *at + ttl(status);
        (now < until).then_some((*status, until))
    }

    /// Records statuses computed at `now`.
    pub(super) fn put(
        &self,
        computed: impl IntoIterator<Item = (CidKey, &'static str)>,
        now: Instant,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for (cid, status) in computed {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(cid, (status, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::seq_cid;

    #[test]
    fn a_status_is_reused_only_within_its_time_to_live() {
        let r = RecentStatuses::default();
        let t0 = Instant::now();
        let (a, b) = (seq_cid(1), seq_cid(2));
        r.put([(a, "pinned"), (b, "queued")], t0);
        let status = |cid, at| r.get(cid, at).map(|(s, _)| s);
        assert_eq!(status(&a, t0 + Duration::from_secs(29)), Some("pinned"));
        assert_eq!(
            r.get(&a, t0).map(|(_, until)| until),
            Some(t0 + SETTLED_TTL)
        );
        assert_eq!(status(&a, t0 + SETTLED_TTL), None);
        assert_eq!(status(&b, t0 + Duration::from_secs(1)), Some("queued"));
        assert_eq!(status(&b, t0 + MOVING_TTL), None);
        // A newer computation replaces the older.
        r.put([(a, "failed")], t0 + Duration::from_secs(40));
        assert_eq!(status(&a, t0 + Duration::from_secs(41)), Some("failed"));
        assert_eq!(r.get(&seq_cid(3), t0), None);
    }
}
