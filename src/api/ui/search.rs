//! `GET /ui/pins?q=&page=&after=`: pins by CID (one lookup) or by name
//! (a bounded, paged walk of the state: there is no name index), 50 a
//! page, each with its status per peer, owners and allocations. Without
//! `q`, every pin in CID order, paged.

use std::fmt::Write as _;

use axum::extract::{Extension, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::error_page;
use super::html::{self, Viewer, esc};
use crate::api::Shared;
use crate::api::pins::storage;
use crate::api::{ApiError, ApiState};
use crate::manifest::CidKey;
use crate::state::StatePin;

/// Pins on a page.
const PER_PAGE: usize = 50;

/// Pins read from the state per step of a name search.
const STEP: usize = 2_000;

/// Longest a name search request reads the state before it answers with
/// what it found (and a link to go on from there): pages stay well under
/// a second on any state.
const SCAN_BUDGET: std::time::Duration = std::time::Duration::from_millis(400);

#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct SearchQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<usize>,
    /// The last CID of the previous page: the next page starts after it.
    #[serde(default)]
    after: Option<String>,
    /// Matches still to pass over after `after` before this page starts
    /// (a search for a deep page that ran out of time goes on from there).
    #[serde(default)]
    skip: Option<usize>,
}

/// One page of results.
struct Found {
    pins: Vec<StatePin>,
    /// Where the next page starts, when there may be one.
    next_after: Option<CidKey>,
    /// Pins read to find them.
    scanned: usize,
    /// The scan stopped at its budget, not at the end of the state.
    cut: bool,
    /// Matches before this page still to pass over (when `cut`).
    skip_left: usize,
}

pub(super) async fn get(
    State(state): State<Shared>,
    Extension(viewer): Extension<Viewer>,
    Query(query): Query<SearchQuery>,
    headers: HeaderMap,
) -> Response {
    match render(&state, &query).await {
        Ok(main) => html::live("Pins".into(), main, &viewer, &headers),
        Err(e) => error_page(e.status(), Some(&viewer), &e.body().message),
    }
}

async fn render(state: &ApiState, query: &SearchQuery) -> Result<String, ApiError> {
    let q = query.q.trim().to_string();
    let page = query.page.unwrap_or(1).max(1);
    let after = match query.after.as_deref().filter(|a| !a.is_empty()) {
        Some(a) => Some(crate::api::pins::parse_cid(a)?),
        None => None,
    };
    let mut out = format!(
        "<h1>Pins</h1><form id=\"search\" method=\"get\" action=\"/ui/pins\" role=\"search\">\
         <label for=\"q\">CID or name</label><input id=\"q\" name=\"q\" value=\"{}\" size=\"40\">\
         <button type=\"submit\">Search</button></form>",
        esc(&q)
    );
    let found = find(state, &q, page, after, query.skip).await?;
    let infos = match (&state.status, found.pins.is_empty()) {
        (Some(svc), false) => svc.global(&found.pins).await.map_err(ApiError::internal)?,
        _ => Vec::new(),
    };
    out.push_str(
        "<div class=\"scroll\"><table id=\"pins\"><thead><tr><th>CID</th><th>Name</th>\
         <th>Status per peer</th><th>Owners</th><th>Allocations</th></tr></thead><tbody>",
    );
    for (i, pin) in found.pins.iter().enumerate() {
        let cid = pin.display_cid();
        let mut peers = String::new();
        if let Some(info) = infos.get(i) {
            for (peer, s) in &info.peer_map {
                let class = if s.status.matches(crate::wire::TrackerStatus::Error) {
                    "bad"
                } else {
                    ""
                };
                let _ = write!(
                    peers,
                    "<li data-peer=\"{p}\"><a href=\"/ui/peers/{u}\" class=\"cid\">{}</a>: \
                     <span class=\"{class}\">{}</span>{}</li>",
                    esc(&abbrev(peer)),
                    esc(s.status.as_str()),
                    if s.error.is_empty() {
                        String::new()
                    } else {
                        format!(" <span class=\"note\">{}</span>", esc(&s.error))
                    },
                    p = esc(peer),
                    u = html::url(peer),
                );
            }
        }
        let owners: Vec<String> = pin
            .owners
            .keys()
            .map(|o| match o {
                crate::manifest::Owner::PinSet(id) => format!(
                    "<a href=\"{}\">{}</a>",
                    super::pinset::href(id),
                    esc(&id.to_string())
                ),
                other => esc(&other.to_string()),
            })
            .collect();
        let allocations: Vec<String> = pin.allocations.iter().map(|a| esc(&abbrev(a))).collect();
        let _ = write!(
            out,
            "<tr class=\"pin\" data-cid=\"{c}\"><td class=\"cid\">{c}</td><td>{}</td>\
             <td><ul>{peers}</ul></td><td>{}</td><td>{}</td></tr>",
            esc(&pin.effective().name),
            owners.join(", "),
            if allocations.is_empty() {
                "every peer".to_string()
            } else {
                allocations.join(", ")
            },
            c = esc(&cid),
        );
    }
    out.push_str("</tbody></table></div>");
    if found.pins.is_empty() {
        out.push_str("<p class=\"note\">No pin found.</p>");
    }
    if found.cut {
        let _ = write!(
            out,
            "<p class=\"note\">Searched {} pins for this page (names are not indexed); \
             the next page goes on from there.</p>",
            found.scanned
        );
    }
    out.push_str("<div class=\"pager\">");
    if page > 1 {
        let _ = write!(
            out,
            "<a id=\"prev-page\" rel=\"prev\" href=\"/ui/pins?q={}&amp;page={}\">Previous page</a>",
            html::url(&q),
            page - 1
        );
    }
    match &found.next_after {
        // Out of time before the page was full: go on from where it stopped.
        Some(next) if found.cut => {
            let _ = write!(
                out,
                "<a id=\"search-on\" href=\"/ui/pins?q={}&amp;page={page}&amp;after={}&amp;skip={}\">Search on</a>",
                html::url(&q),
                html::url(&next.to_string()),
                found.skip_left
            );
        }
        Some(next) => {
            let _ = write!(
                out,
                "<a id=\"next-page\" rel=\"next\" href=\"/ui/pins?q={}&amp;page={}&amp;after={}\">Next page</a>",
                html::url(&q),
                page + 1,
                html::url(&next.to_string())
            );
        }
        None => {}
    }
    let _ = write!(out, "<span class=\"note\">page {page}</span></div>");
    Ok(out)
}

/// A peer id short enough for a list (`12D3Ko…abcdef`).
fn abbrev(peer: &str) -> String {
    if peer.len() <= 16 {
        return peer.to_string();
    }
    let head: String = peer.chars().take(6).collect();
    let tail: String = peer
        .chars()
        .rev()
        .take(6)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{head}…{tail}")
}

/// Whether `pin` is named like `q` (case-insensitive substring of one of
/// its owners' names).
fn named(pin: &StatePin, q: &str) -> bool {
    pin.owners
        .values()
        .any(|spec| spec.name.to_lowercase().contains(q))
}

/// Page `page` of what `q` finds: a CID is looked up; a name walks the
/// state from `after` (or from the start, skipping earlier pages) for at
/// most [`SCAN_BUDGET`] per request.
async fn find(
    state: &ApiState,
    q: &str,
    page: usize,
    after: Option<CidKey>,
    skip: Option<usize>,
) -> Result<Found, ApiError> {
    let store = state.node.store().clone();
    if let Ok(cid) = CidKey::parse(q) {
        let pin = crate::api::blocking(move || store.get(&cid).map_err(storage)).await?;
        return Ok(Found {
            pins: pin.into_iter().collect(),
            next_after: None,
            scanned: 1,
            cut: false,
            skip_left: 0,
        });
    }
    let needle = q.to_lowercase();
    // Without a cursor, earlier pages are skipped by walking them.
    let mut skip = match (&after, skip) {
        (Some(_), skip) => skip.unwrap_or(0),
        (None, _) => (page - 1) * PER_PAGE,
    };
    let mut from = after;
    let mut pins = Vec::new();
    let mut scanned = 0;
    let started = std::time::Instant::now();
    loop {
        let batch = {
            let (store, start) = (store.clone(), from);
            crate::api::blocking(move || store.pins_after(start.as_ref(), STEP).map_err(storage))
                .await?
        };
        let end = batch.len() < STEP;
        for pin in batch {
            scanned += 1;
            from = Some(pin.cid);
            if !needle.is_empty() && !named(&pin, &needle) {
                continue;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            pins.push(pin);
            if pins.len() == PER_PAGE {
                let next = pins.last().map(|p| p.cid);
                return Ok(Found {
                    pins,
                    next_after: next,
                    scanned,
                    cut: false,
                    skip_left: 0,
                });
            }
        }
        if end {
            return Ok(Found {
                pins,
                next_after: None,
                scanned,
                cut: false,
                skip_left: 0,
            });
        }
        if started.elapsed() >= SCAN_BUDGET {
            return Ok(Found {
                pins,
                next_after: from,
                scanned,
                cut: true,
                skip_left: skip,
            });
        }
    }
}
