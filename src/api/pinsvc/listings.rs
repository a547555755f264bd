//! Status-filtered listings computed lately: what lets a client page
//! through `GET /pins?status=…` (the default lists `pinned` only) without
//! the walk of every candidate each page costs. `count` is the number of
//! all matches, and whether a request matches a status filter depends on
//! its status in the cluster, which no index holds: the first page walks
//! the candidates from the indexes and asks for their statuses
//! ([`super::recent`] reuses those known lately). The `created` times of
//! the matches are kept here, newest first; a later page of the same
//! listing (any `before`/`after`/`limit`) is two binary searches.
//!
//! A listing is reused while the token's requests did not change (the
//! store's change count) and every status it was computed from would
//! still be reused. At most [`MAX_HELD`] `created` times are held over
//! all listings (the least recently used go first).

use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Most `created` times held over every listing (8 bytes each).
pub(super) const MAX_HELD: usize = 4_000_000;

/// One listing's matches.
#[derive(Debug)]
struct Listing {
    token: String,
    /// The filters other than time and `limit`, written out.
    query: String,
    /// The token's change count when it was computed.
    changes: u64,
    /// When the first status it used stops being reused.
    until: Instant,
    /// The matches' `created_ns`, newest first.
    created: Arc<Vec<i64>>,
    used: Instant,
}

/// The cache.
#[derive(Debug, Default)]
pub(super) struct Listings {
    held: Mutex<Vec<Listing>>,
}

impl Listings {
    /// The matches of `query` for `token`, when still valid.
    pub(super) fn get(
        &self,
        token: &str,
        query: &str,
        changes: u64,
        now: Instant,
    ) -> Option<Arc<Vec<i64>>> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|l| now < l.until);
        let l = held
            .iter_mut()
            .find(|l| l.token == token && l.query == query && l.changes == changes)?;
        l.used = now;
        Some(Arc::clone(&l.created))
    }

    /// Records the matches of `query` for `token`, computed when its
    /// change count was `changes` from statuses reused until `until`.
    pub(super) fn put(
        &self,
        token: &str,
        query: String,
        changes: u64,
        until: Instant,
        created: Arc<Vec<i64>>,
        now: Instant,
    ) {
        if created.len() > MAX_HELD || now >= until {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|l| now < l.until && !(l.token == token && l.query == query));
        while held.iter().map(|l| l.created.len()).sum::<usize>() + created.len() > MAX_HELD {
            let Some(oldest) = held
                .iter()
                .enumerate()
                .min_by_key(|(_, l)| l.used)
                .map(|(i, _)| i)
            else {
                break;
            };
            held.swap_remove(oldest);
        }
        held.push(Listing {
            token: token.to_string(),
            query,
            changes,
            until,
            created,
            used: now,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_listing_is_reused_only_while_its_token_and_statuses_did_not_change() {
        let l = Listings::default();
        let t0 = Instant::now();
        let until = t0 + Duration::from_secs(2);
        l.put("t", "q".into(), 7, until, Arc::new(vec![3, 2, 1]), t0);
        assert_eq!(l.get("t", "q", 7, t0).as_deref(), Some(&vec![3, 2, 1]));
        // Another token, query or change count: not this listing.
        assert!(l.get("u", "q", 7, t0).is_none());
        assert!(l.get("t", "r", 7, t0).is_none());
        assert!(l.get("t", "q", 8, t0).is_none());
        // Its statuses would be computed again by now.
        assert!(l.get("t", "q", 7, until).is_none());
    }

    #[test]
    fn the_least_recently_used_listing_goes_first_when_full() {
        let l = Listings::default();
        let t0 = Instant::now();
        let until = t0 + Duration::from_secs(30);
        let half = Arc::new(vec![0; MAX_HELD / 2]);
        l.put("t", "a".into(), 1, until, Arc::clone(&half), t0);
        l.put(
            "t",
            "b".into(),
            1,
            until,
            Arc::clone(&half),
            t0 + Duration::from_millis(1),
        );
        assert!(l.get("t", "a", 1, t0 + Duration::from_millis(2)).is_some());
        l.put(
            "t",
            "c".into(),
            1,
            until,
            half,
            t0 + Duration::from_millis(3),
        );
        let now = t0 + Duration::from_millis(4);
        assert!(l.get("t", "a", 1, now).is_some());
        assert!(l.get("t", "b", 1, now).is_none(), "b was used least lately");
        assert!(l.get("t", "c", 1, now).is_some());
    }
}
