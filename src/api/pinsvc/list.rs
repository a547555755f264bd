//! `GET /pins`: the query's filters, checked as the spec says (an invalid
//! or empty value is 400), and the listing, paged from the store's index
//! of the token's requests by `created` (newest first): `count` is the
//! number of all matches, `results` the first `limit` of them.
//!
//! With no filter beyond `before`/`after` and every status asked, the
//! count is a key count of the index range and only the page's requests
//! are read. Other filters walk the range in chunks (the `cid` filter
//! through the `(token, CID)` index), never holding more than a chunk and
//! the page; a `status` filter other than all four asks the cluster for
//! each candidate's status, a chunk at a time.

use std::collections::{BTreeMap, BTreeSet};

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};

use super::status::{self, STATUSES};
use super::{Caller, Failure, MAX_NAME_CHARS, PinSvcState, storage, string_map};
use crate::consensus::CreatedRange;
use crate::manifest::CidKey;
use crate::state::pinsvc::PinSvcRequest;
use crate::wire::{PinSvcResults, PinSvcStatus};

/// Most CIDs in a `cid` filter.
pub const MAX_CIDS: usize = 10;
/// Largest `limit`.
pub const MAX_LIMIT: usize = 1000;
/// `limit` when not given.
pub const DEFAULT_LIMIT: usize = 10;
/// Requests read from the index per step of a filtered walk.
const CHUNK: usize = 1000;

/// How `name` is compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Match {
    Exact,
    IExact,
    Partial,
    IPartial,
}

/// The checked query of a listing.
#[derive(Debug)]
struct Filters {
    cids: Vec<CidKey>,
    name: Option<String>,
    mode: Match,
    statuses: BTreeSet<&'static str>,
    range: CreatedRange,
    limit: usize,
    meta: BTreeMap<String, String>,
}

impl Filters {
    /// Whether a request passes the filters that need no cluster status.
    fn keeps(&self, r: &PinSvcRequest) -> bool {
        if let Some(want) = &self.name {
            let Some(have) = &r.name else { return false };
            let hit = match self.mode {
                Match::Exact => have == want,
                Match::IExact => have.to_lowercase() == want.to_lowercase(),
                Match::Partial => have.contains(want.as_str()),
                Match::IPartial => have.to_lowercase().contains(&want.to_lowercase()),
            };
            if !hit {
                return false;
            }
        }
        self.meta.iter().all(|(k, v)| r.meta.get(k) == Some(v))
    }

    fn every_status(&self) -> bool {
        self.statuses.len() == STATUSES.len()
    }

    fn only_time(&self) -> bool {
        self.cids.is_empty() && self.name.is_none() && self.meta.is_empty()
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
        cids: Vec::new(),
        name: None,
        mode: Match::Exact,
        // The spec: without a status filter, only pinned requests.
        statuses: BTreeSet::from(["pinned"]),
        range: CreatedRange::default(),
        limit: DEFAULT_LIMIT,
        meta: BTreeMap::new(),
    };
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
                f.cids = items
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
                f.name = Some(v);
            }
            "match" => {
                f.mode = match v.as_str() {
                    "exact" => Match::Exact,
                    "iexact" => Match::IExact,
                    "partial" => Match::Partial,
                    "ipartial" => Match::IPartial,
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
                f.meta = string_map(&json, "meta")?;
            }
            _ => {}
        }
    }
    Ok(f)
}

/// `GET /pins`.
pub(super) async fn list(
    State(state): State<PinSvcState>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Failure> {
    let f = parse_filters(raw.as_deref())?;
    let token = caller.token.to_string();
    let store = state.node.store().clone();
    if f.only_time() && f.every_status() {
        let (count, page) = {
            let token = token.clone();
            let range = f.range;
            let limit = f.limit;
            tokio::task::spawn_blocking(move || {
                Ok::<_, String>((
                    store
                        .pinsvc_count(&token, range)
                        .map_err(|e| e.to_string())?,
                    store
                        .pinsvc_page(&token, &[], range, limit)
                        .map_err(|e| e.to_string())?,
                ))
            })
            .await
            .map_err(|e| Failure::internal(e.to_string()))?
            .map_err(storage)?
        };
        let results = status::of(&state, page).await?;
        return Ok(axum::Json(PinSvcResults { count, results }).into_response());
    }
    let mut count = 0u64;
    let mut results: Vec<PinSvcStatus> = Vec::new();
    // The first `limit` matches, shown with the status computed at the end.
    let mut first: Vec<PinSvcRequest> = Vec::new();
    let mut range = f.range;
    loop {
        let chunk = {
            let store = store.clone();
            let token = token.clone();
            let cids = f.cids.clone();
            tokio::task::spawn_blocking(move || {
                store
                    .pinsvc_page(&token, &cids, range, CHUNK)
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| Failure::internal(e.to_string()))?
            .map_err(storage)?
        };
        let done = chunk.len() < CHUNK;
        if let Some(last) = chunk.last() {
            range.before = Some(last.created_ns);
        }
        let kept: Vec<PinSvcRequest> = chunk.into_iter().filter(|r| f.keeps(r)).collect();
        let kept: Vec<PinSvcRequest> = if f.every_status() || kept.is_empty() {
            kept
        } else {
            // Statuses computed lately are reused: a client paging through
            // this listing does not have every status computed again.
            let shown = status::statuses(&state, &kept).await?;
            kept.into_iter()
                .zip(shown)
                .filter(|(_, s)| f.statuses.contains(s))
                .map(|(r, _)| r)
                .collect()
        };
        count += kept.len() as u64;
        let room = f.limit.saturating_sub(first.len());
        first.extend(kept.into_iter().take(room));
        if done {
            break;
        }
    }
    if !first.is_empty() {
        // The page is shown as the cluster says now; one whose status
        // moved since it was last computed leaves the page and the count
        // (with every status asked for, none does).
        results = status::of(&state, first).await?;
        let before = results.len();
        results.retain(|s| f.statuses.contains(s.status.as_str()));
        count -= (before - results.len()) as u64;
    }
    Ok(axum::Json(PinSvcResults { count, results }).into_response())
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
        let f =
            parse_filters(Some("name=a+b&match=ipartial&meta=%7B%22k%22%3A%22v%22%7D")).unwrap();
        assert_eq!(f.name.as_deref(), Some("a b"));
        assert_eq!(f.mode, Match::IPartial);
        assert_eq!(f.meta["k"], "v");
    }

    #[test]
    fn created_times_round_trip_with_nanoseconds() {
        let ns = 1_700_000_000_123_456_789;
        let shown = status::format_created(ns);
        assert_eq!(shown, "2023-11-14T22:13:20.123456789Z");
        assert_eq!(parse_time("before", &shown).unwrap(), ns);
    }
}
