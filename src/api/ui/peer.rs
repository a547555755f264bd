//! `GET /ui/peers/{peer}`: one peer's informer metrics now and over the
//! last hour (inline SVG charts from [`super::history`]), and its pins in
//! error as the PinSet counts know them.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::html::{self, Viewer, esc};
use super::{error_page, history};
use crate::allocator::FREESPACE;
use crate::api::ApiState;
use crate::api::Shared;

/// How long the page waits for the PinSets' counts.
const COUNT_WAIT: std::time::Duration = std::time::Duration::from_millis(600);

/// Most errors listed on a peer page.
const MAX_ERRORS: usize = 20;

/// The metrics charted first, in this order; any other numeric metric
/// follows.
const CHARTED: [&str; 3] = [FREESPACE, "pinqueue", "numpin"];

/// What the monitor knows of one peer now.
#[derive(Clone, Debug, Default)]
pub(super) struct Reading {
    /// Heard from, and its readings have not expired.
    pub alive: bool,
    /// Its latest metrics that have not expired: name → (value, valid).
    pub values: HashMap<String, (String, bool)>,
    /// Whether this peer runs a monitor at all.
    pub monitored: bool,
}

impl Reading {
    pub(super) fn health(&self) -> &'static str {
        match (self.monitored, self.alive) {
            (false, _) => "unknown",
            (true, true) => "ok",
            (true, false) => "no recent metrics",
        }
    }

    pub(super) fn value_text(&self, name: &str) -> String {
        match self.values.get(name) {
            Some((v, _)) => esc(v),
            None => "–".into(),
        }
    }

    pub(super) fn freespace_text(&self) -> String {
        match self.values.get(FREESPACE) {
            Some((v, valid)) => {
                let shown = v.parse::<f64>().map_or_else(|_| esc(v), html::bytes);
                if *valid {
                    shown
                } else {
                    format!("<span class=\"bad\">{shown} (full)</span>")
                }
            }
            None => "–".into(),
        }
    }
}

/// What the monitor knows of every member now, by peer id.
pub(super) fn readings(state: &ApiState) -> HashMap<String, Reading> {
    let read = crate::api::monitor::with_view(state, |metrics, members, now| {
        members
            .iter()
            .map(|peer| {
                let mut r = Reading {
                    monitored: true,
                    ..Reading::default()
                };
                if let Some(names) = metrics.peer(peer) {
                    for m in names.values().filter(|m| !m.is_expired(now)) {
                        r.alive = true;
                        r.values.insert(m.name.clone(), (m.value.clone(), m.valid));
                    }
                }
                (peer.clone(), r)
            })
            .collect()
    });
    read.unwrap_or_default()
}

pub(super) async fn get(
    State(state): State<Shared>,
    Extension(viewer): Extension<Viewer>,
    Path(peer): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some((_, node)) = state
        .node
        .members()
        .into_iter()
        .find(|(_, n)| n.peer_id == peer)
    else {
        return error_page(
            StatusCode::NOT_FOUND,
            Some(&viewer),
            &format!("{peer} is not a member of this cluster"),
        );
    };
    let Some(ui) = &state.ui else {
        return error_page(StatusCode::NOT_FOUND, Some(&viewer), "the dashboard is off");
    };
    if let Some(monitor) = &state.monitor {
        history::observe(&ui.history, monitor, &state.node);
    }
    let reading = readings(&state).remove(&peer).unwrap_or_default();
    let is_leader = state.node.leader().is_some_and(|l| {
        state
            .node
            .members()
            .iter()
            .any(|(id, n)| *id == l && n.peer_id == peer)
    });
    let mut main = format!(
        "<h1>Peer <span class=\"cid\">{}</span></h1>\
         <p>{} · API <code>{}</code> · health <span class=\"{}\">{}</span></p>",
        esc(&peer),
        if is_leader { "leader" } else { "member" },
        esc(&node.api),
        if reading.alive { "ok" } else { "bad" },
        reading.health(),
    );
    main.push_str("<section id=\"peer-metrics\"><h2>Metrics, last hour</h2><div class=\"cards\">");
    let now = chrono::Utc::now().timestamp_millis();
    let mut names: Vec<String> = CHARTED.iter().map(|s| s.to_string()).collect();
    let sampled: BTreeSet<String> = ui.history.names(&peer);
    names.extend(
        sampled
            .into_iter()
            .filter(|n| !CHARTED.contains(&n.as_str())),
    );
    for name in &names {
        let points = ui.history.series(&peer, name);
        let now_text = if name == FREESPACE {
            reading.freespace_text()
        } else {
            reading.value_text(name)
        };
        let _ = write!(
            main,
            "<div class=\"card\"><h3>{}</h3><p>now: {now_text}</p>{}</div>",
            esc(name),
            html::chart(name, &points, now - history::WINDOW_MS, now)
        );
    }
    main.push_str("</div></section>");
    // The errors come from the PinSets' counts: count those not fresh.
    let store = state.node.store().clone();
    let ids: Vec<crate::manifest::PinSetId> =
        crate::api::blocking(move || store.pinsets().map_err(crate::api::pins::storage))
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(o, _)| match o {
                crate::manifest::Owner::PinSet(id) => Some((*id).clone()),
                _ => None,
            })
            .collect();
    let counted = ui.counts.get(&state, &ids, COUNT_WAIT).await;
    let known: Vec<_> = counted.into_values().map(|c| c.status).collect();
    errors(&known, &peer, &mut main);
    html::live(format!("Peer {peer}"), main, &viewer, &headers)
}

fn errors(known: &[std::sync::Arc<crate::manifest::PinSetStatus>], peer: &str, out: &mut String) {
    let mut rows = String::new();
    let mut n = 0;
    for e in known
        .iter()
        .flat_map(|s| s.errors.iter())
        .filter(|e| e.peer == peer)
    {
        if n == MAX_ERRORS {
            break;
        }
        n += 1;
        let _ = write!(
            rows,
            "<tr class=\"error-row\" data-cid=\"{c}\"><td><a class=\"cid\" href=\"/ui/pins?q={u}\">{c}</a></td><td>{}</td></tr>",
            esc(&e.error),
            c = esc(&e.cid),
            u = html::url(&e.cid),
        );
    }
    let _ = write!(
        out,
        "<h2 id=\"peer-errors-title\">Pins in error on this peer</h2>\
         <div class=\"scroll\"><table id=\"peer-errors\" aria-labelledby=\"peer-errors-title\">\
         <thead><tr><th>CID</th><th>Error</th></tr></thead><tbody>{rows}</tbody></table></div>\
         <p class=\"note\">{}</p>",
        if n == 0 {
            "None known: the first errors of each PinSet's last count are listed here.".to_string()
        } else {
            format!("The first {n}, from each PinSet's last count.")
        }
    );
}
