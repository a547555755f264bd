//! `GET /pins`: the query's filters, checked as the spec says (an invalid
//! or empty value is 400), and the listing, paged from the store's
//! indexes of the token's requests, newest first: `count` is the number
//! of all matches, `results` the first `limit` of them.
//!
//! - No filter beyond `before`/`after` and every status asked: `count` is
//!   the token's count (or a key count of the range), and only the page's
//!   requests are read.
//! - `cid`, `name` and `meta` filters: the store intersects their indexes
//!   ([`StateStore::pinsvc_walk`]); `count` walks the matches' index keys.
//! - A `status` filter other than all four: no index holds the cluster's
//!   statuses, so the first page asks for the status of every request that
//!   passes the other filters, a chunk at a time (reusing those known
//!   lately); the matches are kept ([`super::listings`]) and the next pages
//!   of the same listing are read from them.
//!
//! The page itself is always shown with statuses computed afresh.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};

use super::status::{self, STATUSES};
use super::{Caller, Failure, MAX_NAME_CHARS, PinSvcState, storage, string_map};
use crate::consensus::{CreatedRange, NameMatch, PinSvcFilter, StateStore};
use crate::manifest::CidKey;
use crate::wire::PinSvcResults;

/// Most CIDs in a `cid` filter.
pub const MAX_CIDS: usize = 10;
/// Largest `limit`.
pub const MAX_LIMIT: usize = 1000;
/// `limit` when not given.
pub const DEFAULT_LIMIT: usize = 10;
/// Statuses asked of the cluster per fan-out in a status-filtered walk.
const CHUNK: usize = 1000;

/// The checked query of a listing.
#[derive(Debug)]
struct Filters {
    filter: PinSvcFilter,
    statuses: BTreeSet<&'static str>,
    range: CreatedRange,
    limit: usize,
}

impl Filters {
    fn every_status(&self) -> bool {
        self.statuses.len() == STATUSES.len()
    }
}

/// `k=v` pairs of a query string, form-decoded (`+` is a space).
fn pairs(raw: &str) -> Result<Vec<(String, String)>, Failure> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| Failure::bad("the query is not valid UTF-8 once decoded"))
    };
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

fn parse_time(key: &str, v: &str) -> Result<i64, Failure> {
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| {
            Failure::bad(format!(
                "{key}: expected an RFC 3339 timestamp such as 2020-07-27T17:32:28.276Z"
            ))
        })
}

/// A comma-separated list without empty or repeated items.
fn list_of<'a>(key: &str, v: &'a str) -> Result<Vec<&'a str>, Failure> {
    let items: Vec<&str> = v.split(',').map(str::trim).collect();
    if items.iter().any(|i| i.is_empty()) {
        return Err(Failure::bad(format!("{key}: empty item")));
    }
    let unique: BTreeSet<&str> = items.iter().copied().collect();
    if unique.len() != items.len() {
        return Err(Failure::bad(format!("{key}: repeated item")));
    }
    Ok(items)
}

fn parse_filters(raw: Option<&str>) -> Result<Filters, Failure> {
    let mut f = Filters {
        filter: PinSvcFilter::default(),
        // The spec: without a status filter, only pinned requests.
        statuses: BTreeSet::from(["pinned"]),
        range: CreatedRange::default(),
        limit: DEFAULT_LIMIT,
    };
    let (mut name, mut mode) = (None, NameMatch::Exact);
    let mut seen = BTreeSet::new();
    for (k, v) in pairs(raw.unwrap_or(""))? {
        let known = [
            "cid", "name", "match", "status", "before", "after", "limit", "meta",
        ];
        if !known.contains(&k.as_str()) {
            continue;
        }
        if !seen.insert(k.clone()) {
            return Err(Failure::bad(format!("{k}: given more than once")));
        }
        if v.is_empty() {
            return Err(Failure::bad(format!("{k}: empty value")));
        }
        match k.as_str() {
            "cid" => {
                let items = list_of("cid", &v)?;
                if items.len() > MAX_CIDS {
                    return Err(Failure::bad(format!("cid: at most {MAX_CIDS} CIDs")));
                }
                f.filter.cids = items
                    .into_iter()
                    .map(|c| CidKey::parse(c).map_err(|e| Failure::bad(format!("cid: {e}"))))
                    .collect::<Result<_, _>>()?;
            }
            "name" => {
                if v.chars().count() > MAX_NAME_CHARS {
                    return Err(Failure::bad(format!(
                        "name: more than {MAX_NAME_CHARS} characters"
                    )));
                }
                name = Some(v);
            }
            "match" => {
                mode = match v.as_str() {
                    "exact" => NameMatch::Exact,
                    "iexact" => NameMatch::IExact,
                    "partial" => NameMatch::Partial,
                    "ipartial" => NameMatch::IPartial,
                    _ => {
                        return Err(Failure::bad(
                            "match: expected exact, iexact, partial or ipartial",
                        ));
                    }
                }
            }
            "status" => {
                f.statuses = list_of("status", &v)?
                    .into_iter()
                    .map(|s| {
                        STATUSES.iter().copied().find(|x| *x == s).ok_or_else(|| {
                            Failure::bad("status: expected queued, pinning, pinned or failed")
                        })
                    })
                    .collect::<Result<_, _>>()?;
            }
            "before" => f.range.before = Some(parse_time("before", &v)?),
            "after" => f.range.after = Some(parse_time("after", &v)?),
            "limit" => {
                f.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        Failure::bad(format!("limit: expected an integer from 1 to {MAX_LIMIT}"))
                    })?;
            }
            "meta" => {
                let json: serde_json::Value = serde_json::from_str(&v)
                    .map_err(|e| Failure::bad(format!("meta: not a JSON object: {e}")))?;
                f.filter.meta = string_map(&json, "meta")?;
            }
            _ => {}
        }
    }
    f.filter.name = name.map(|n| (n, mode));
    Ok(f)
}

/// Runs `f` on the state store off the async threads.
async fn blocking<T, E>(
    state: &PinSvcState,
    f: impl FnOnce(&StateStore) -> Result<T, E> + Send + 'static,
) -> Result<T, Failure>
where
    T: Send + 'static,
    E: std::fmt::Display,
{
    let store = state.node.store().clone();
    tokio::task::spawn_blocking(move || f(&store).map_err(|e| e.to_string()))
        .await
        .map_err(|e| Failure::internal(e.to_string()))?
        .map_err(storage)
}

/// `GET /pins`.
pub(super) async fn list(
    State(state): State<PinSvcState>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Failure> {
    let f = parse_filters(raw.as_deref())?;
    let token = caller.token.to_string();
    let (range, limit) = (f.range, f.limit);
    if f.every_status() {
        let filter = f.filter;
        let (count, page) = blocking(&state, move |store| {
            if filter.is_empty() {
                return Ok::<_, Box<openraft::StorageError<_>>>((
                    store.pinsvc_count(&token, range)?,
                    store.pinsvc_page(&token, &[], range, limit)?,
                ));
            }
            let (mut count, mut first) = (0u64, Vec::new());
            store.pinsvc_walk(&token, &filter, range, |at| {
                count += 1;
                if first.len() < limit {
                    first.push(at);
                }
                true
            })?;
            Ok((count, store.pinsvc_records(&token, &first)?))
        })
        .await?;
        let results = status::of(&state, page).await?;
        return Ok(axum::Json(PinSvcResults { count, results }).into_response());
    }
    let matches = matching(&state, &token, &f).await?;
    // The listing's range of the matches (newest first).
    let start = f
        .range
        .before
        .map_or(0, |b| matches.partition_point(|at| *at >= b));
    let end = f
        .range
        .after
        .map_or(matches.len(), |a| matches.partition_point(|at| *at > a));
    let in_range = &matches[start..end.max(start)];
    let first: Vec<i64> = in_range.iter().take(limit).copied().collect();
    let shown = first.len();
    let page = {
        let token = token.clone();
        blocking(&state, move |store| {
            store.pinsvc_records(&token, &first).map_err(Box::new)
        })
        .await?
    };
    // The page is shown as the cluster says now; one whose status moved
    // since it was last computed (or that is gone) leaves the page and
    // the count.
    let mut results = status::of(&state, page).await?;
    results.retain(|s| f.statuses.contains(s.status.as_str()));
    let count = (in_range.len() - (shown - results.len())) as u64;
    Ok(axum::Json(PinSvcResults { count, results }).into_response())
}

/// The `created` times of every request of `token` that passes the
/// filters, status included, newest first: kept from a recent listing of
/// the same filters when still valid, else walked from the indexes with
/// the statuses asked of the cluster a chunk at a time.
async fn matching(state: &PinSvcState, token: &str, f: &Filters) -> Result<Arc<Vec<i64>>, Failure> {
    let query = format!("{:?} {:?}", f.filter, f.statuses);
    let changes = {
        let token = token.to_string();
        blocking(state, move |store| {
            store.pinsvc_changes(&token).map_err(Box::new)
        })
        .await?
    };
    if let Some(kept) = state.listings.get(token, &query, changes, Instant::now()) {
        return Ok(kept);
    }
    // Every candidate's `created` (8 bytes each), then their CIDs and
    // statuses a chunk at a time: memory stays small for a token of
    // millions of requests.
    let (changes, candidates) = {
        let token = token.to_string();
        let filter = f.filter.clone();
        blocking(state, move |store| {
            let mut out: Vec<i64> = Vec::new();
            let changes = store.pinsvc_walk(&token, &filter, CreatedRange::default(), |at| {
                out.push(at);
                true
            })?;
            Ok::<_, Box<openraft::StorageError<_>>>((changes, out))
        })
        .await?
    };
    let mut kept = Vec::new();
    let mut until = Instant::now() + super::recent::SETTLED_TTL;
    for chunk in candidates.chunks(CHUNK) {
        let found = {
            let token = token.to_string();
            let chunk = chunk.to_vec();
            blocking(state, move |store| {
                store.pinsvc_cids(&token, &chunk).map_err(Box::new)
            })
            .await?
        };
        // A request gone since the walk is left out.
        let (ats, cids): (Vec<i64>, Vec<CidKey>) = chunk
            .iter()
            .zip(found)
            .filter_map(|(at, cid)| Some((*at, cid?)))
            .unzip();
        let (shown, valid) = status::statuses(state, &cids).await?;
        until = until.min(valid);
        kept.extend(
            ats.into_iter()
                .zip(shown)
                .filter(|(_, s)| f.statuses.contains(s))
                .map(|(at, _)| at),
        );
    }
    let kept = Arc::new(kept);
    state.listings.put(
        token,
        query,
        changes,
        until,
        Arc::clone(&kept),
        Instant::now(),
    );
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_reject_empty_repeated_and_out_of_range_values() {
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=x",
            "status=",
            "status=done",
            "status=pinned,pinned",
            "cid=",
            "cid=notacid",
            "name=",
            "match=fuzzy",
            "before=yesterday",
            "after=",
            "meta=%7B",
            "meta=%7B%22a%22%3A1%7D",
            "limit=5&limit=6",
        ] {
            assert!(parse_filters(Some(bad)).is_err(), "{bad}");
        }
        let f = parse_filters(None).unwrap();
        assert_eq!(f.limit, DEFAULT_LIMIT);
        assert_eq!(f.statuses, BTreeSet::from(["pinned"]));
        assert!(f.filter.is_empty());
        let f =
            parse_filters(Some("name=a+b&match=ipartial&meta=%7B%22k%22%3A%22v%22%7D")).unwrap();
        assert_eq!(
            f.filter.name,
            Some(("a b".to_string(), NameMatch::IPartial))
        );
        assert_eq!(f.filter.meta["k"], "v");
    }

    #[test]
    fn created_times_round_trip_with_nanoseconds() {
        let ns = 1_700_000_000_123_456_789;
        let shown = status::format_created(ns);
        assert_eq!(shown, "2023-11-14T22:13:20.123456789Z");
        assert_eq!(parse_time("before", &shown).unwrap(), ns);
    }
}
