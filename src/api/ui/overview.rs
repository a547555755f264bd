//! `GET /ui/`: the peers (leader, health, free space, pin queue), pins by
//! status across the cluster, and every PinSet with its Ready state and
//! progress.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::counts::Counted;
use super::html::{self, Viewer, esc};
use super::peer::readings;
use super::{error_page, pinset};
use crate::api::ApiState;
use crate::api::Shared;
use crate::api::pins::storage;
use crate::manifest::model::StatusSummary;
use crate::manifest::{Owner, PinSetId};
use crate::state::{ConditionsRecord, PinSetRecord};

/// How long the overview waits for PinSet counts before it renders.
const COUNT_WAIT: Duration = Duration::from_millis(600);

pub(super) async fn get(
    State(state): State<Shared>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
) -> Response {
    match render(&state).await {
        Ok(main) => html::live("Overview".into(), main, &viewer, &headers),
        Err(e) => error_page(e.status(), Some(&viewer), &e.body().message),
    }
}

async fn render(state: &ApiState) -> Result<String, crate::api::ApiError> {
    let store = state.node.store().clone();
    let (pinsets, reported, pin_count) = crate::api::blocking(move || {
        let sets = store.pinsets().map_err(storage)?;
        let reported = store.reported().map_err(storage)?;
        let count = store.pin_count().map_err(storage)?;
        Ok((sets, reported, count))
    })
    .await?;
    let reported: HashMap<Owner, ConditionsRecord> = reported.into_iter().collect();
    let ids: Vec<PinSetId> = pinsets
        .iter()
        .filter_map(|(o, _)| match o {
            Owner::PinSet(id) => Some((**id).clone()),
            _ => None,
        })
        .collect();
    let counts = match &state.ui {
        Some(ui) => {
            ui.counts.keep_only(&ids);
            ui.counts.get(state, &ids, COUNT_WAIT).await
        }
        None => HashMap::new(),
    };
    let mut main = String::from("<h1>Cluster overview</h1>");
    peers_table(state, &mut main);
    pin_status(&counts, pin_count, ids.len(), &mut main);
    pinsets_table(&pinsets, &reported, &counts, &mut main);
    Ok(main)
}

fn peers_table(state: &ApiState, out: &mut String) {
    let leader = state.node.leader();
    let me = state.node.peer_id().to_string();
    let readings = readings(state);
    out.push_str(
        "<h2 id=\"peers-title\">Peers</h2><div class=\"scroll\"><table id=\"peers\" aria-labelledby=\"peers-title\">\
         <thead><tr><th>Peer</th><th>Role</th><th>Health</th><th>Free space</th>\
         <th>Pin queue</th><th>Pinned</th><th>API</th></tr></thead><tbody>",
    );
    for (id, node) in state.node.members() {
        let is_leader = leader == Some(id);
        let r = readings.get(&node.peer_id).cloned().unwrap_or_default();
        let _ = write!(
            out,
            "<tr class=\"peer{}\" data-peer=\"{p}\"><td><a href=\"/ui/peers/{u}\" class=\"cid\">{p}</a>{}</td>\
             <td>{}</td><td class=\"{}\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td><code>{}</code></td></tr>",
            if is_leader { " leader" } else { "" },
            if node.peer_id == me {
                " <span class=\"note\">(this peer)</span>"
            } else {
                ""
            },
            if is_leader { "leader" } else { "member" },
            if r.alive { "ok" } else { "bad" },
            r.health(),
            r.freespace_text(),
            r.value_text("pinqueue"),
            r.value_text("numpin"),
            esc(&node.api),
            p = esc(&node.peer_id),
            u = html::url(&node.peer_id),
        );
    }
    out.push_str("</tbody></table></div>");
}

fn pin_status(
    counts: &HashMap<PinSetId, Counted>,
    pin_count: u64,
    pinsets: usize,
    out: &mut String,
) {
    let mut sum = StatusSummary::default();
    for c in counts.values() {
        add(&mut sum, &copies(&c.status));
    }
    let _ = write!(
        out,
        "<h2>Pins by status</h2><dl id=\"pin-status\">\
         <div><dt>pinned</dt><dd>{}</dd></div><div><dt>pinning</dt><dd>{}</dd></div>\
         <div><dt>queued</dt><dd>{}</dd></div><div><dt>error</dt><dd>{}</dd></div>\
         <div><dt>unpinned</dt><dd>{}</dd></div><div><dt>in the state</dt><dd>{pin_count}</dd></div></dl>\
         <p class=\"note\">Each peer's status of each pin it must hold, over the pins of {} of {pinsets} PinSets \
         (a pin of two PinSets counts twice); the state holds {pin_count} pins in all.</p>",
        sum.pinned,
        sum.pinning,
        sum.queued,
        sum.error,
        sum.unpinned,
        counts.len(),
    );
}

fn add(sum: &mut StatusSummary, s: &StatusSummary) {
    sum.total += s.total;
    sum.pinned += s.pinned;
    sum.pinning += s.pinning;
    sum.queued += s.queued;
    sum.error += s.error;
    sum.unpinned += s.unpinned;
}

/// The peers' statuses of a PinSet's pins, summed over its peers (a pin
/// pinned on three peers counts three times).
pub(super) fn copies(status: &crate::manifest::PinSetStatus) -> StatusSummary {
    let mut sum = StatusSummary::default();
    for s in status.peers.values() {
        add(&mut sum, s);
    }
    sum
}

/// `Ready`, `Stalled` or `Reconciling`, from a status's conditions.
pub(super) fn readiness(status: &crate::manifest::PinSetStatus) -> &'static str {
    let is = |t: &str| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == t && c.status == "True")
    };
    if is("Stalled") {
        "Stalled"
    } else if is("Ready") {
        "Ready"
    } else {
        "Reconciling"
    }
}

/// The progress cell of a PinSet: `<pinned>/<total> pinned`, a bar, and
/// how many copies the peers pinned.
pub(super) fn progress(status: &crate::manifest::PinSetStatus) -> String {
    let s = &status.summary;
    // An empty PinSet is done: a full bar.
    let (value, max) = if s.total == 0 {
        (1, 1)
    } else {
        (s.pinned, s.total)
    };
    format!(
        "<progress max=\"{max}\" value=\"{value}\">{p}/{t}</progress> {p}/{t} pinned \
         <span class=\"note\">({} pinned across peers)</span>",
        copies(status).pinned,
        p = s.pinned,
        t = s.total
    )
}

/// `Stalled` when a controller reported the PinSet stalled, else
/// `Reconciling` (for a PinSet not counted yet).
fn reported_readiness(report: Option<&ConditionsRecord>) -> &'static str {
    let stalled = report.is_some_and(|r| {
        r.conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True")
    });
    if stalled { "Stalled" } else { "Reconciling" }
}

fn pinsets_table(
    pinsets: &[(Owner, PinSetRecord)],
    reported: &HashMap<Owner, ConditionsRecord>,
    counts: &HashMap<PinSetId, Counted>,
    out: &mut String,
) {
    // PinSets a controller reported but that never applied (an invalid
    // manifest): known by their conditions only.
    let unapplied: Vec<(&Owner, &ConditionsRecord)> = reported
        .iter()
        .filter(|(o, r)| {
            matches!(o, Owner::PinSet(_))
                && !r.conditions.is_empty()
                && !pinsets.iter().any(|(p, _)| p == *o)
        })
        .collect();
    let _ = write!(
        out,
        "<h2 id=\"pinsets-title\">PinSets ({})</h2><div class=\"scroll\">\
         <table id=\"pinsets\" aria-labelledby=\"pinsets-title\"><thead><tr><th>PinSet</th><th>State</th>\
         <th>Progress</th><th>Errors</th><th>Revision</th><th>Applied</th></tr></thead><tbody>",
        pinsets.len() + unapplied.len()
    );
    for (owner, r) in unapplied {
        let Owner::PinSet(id) = owner else { continue };
        let ready = reported_readiness(Some(r));
        let _ = write!(
            out,
            "<tr class=\"pinset\" data-pinset=\"{id}\"><td><a class=\"pinset-link\" href=\"{href}\">{id}</a></td>\
             <td class=\"ready {ready}\">{ready}</td><td class=\"progress\">not applied</td>\
             <td class=\"num\"></td><td><code>{}</code></td><td>–</td></tr>",
            esc(&short(r.revision.as_deref().unwrap_or_default())),
            id = esc(&id.to_string()),
            href = pinset::href(id),
        );
    }
    for (owner, r) in pinsets {
        let Owner::PinSet(id) = owner else { continue };
        let (ready, progress, errors) = match counts.get(&**id) {
            Some(c) => (
                readiness(&c.status),
                self::progress(&c.status),
                c.status.summary.error.to_string(),
            ),
            None => (
                reported_readiness(reported.get(owner)),
                format!("counting {} pins…", r.pins),
                String::new(),
            ),
        };
        let _ = write!(
            out,
            "<tr class=\"pinset\" data-pinset=\"{id}\"><td><a class=\"pinset-link\" href=\"{href}\">{id}</a>{}</td>\
             <td class=\"ready {ready}\">{ready}</td><td class=\"progress\">{progress}</td>\
             <td class=\"num\">{errors}</td><td><code>{}</code></td><td>{}</td></tr>",
            if r.suspend {
                " <span class=\"note\">(suspended)</span>"
            } else {
                ""
            },
            esc(&short(&r.revision)),
            html::time(r.applied_at_ms),
            id = esc(&id.to_string()),
            href = pinset::href(id),
        );
    }
    out.push_str("</tbody></table></div>");
}

/// A revision short enough for a table cell (a digest's first 12).
pub(super) fn short(revision: &str) -> String {
    let (scheme, rest) = revision.split_once(':').unwrap_or(("", revision));
    let cut: String = rest.chars().take(12).collect();
    match (scheme.is_empty(), cut.len() < rest.len()) {
        (true, true) => format!("{cut}…"),
        (true, false) => cut,
        (false, true) => format!("{scheme}:{cut}…"),
        (false, false) => format!("{scheme}:{cut}"),
    }
}
