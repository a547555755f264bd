//! `GET /ui/pinsets/{ns}/{name}`: a PinSet's conditions, source and
//! revision, per-peer counts, first errors and recent reconciles; and
//! `POST .../reconcile` ("reconcile now", writers): the controller that
//! runs its source reconciles it (forwarded to the leader as the REST
//! route does); a PinSet no controller runs (applied with `pinfleet
//! apply`) is re-checked instead: its status is counted afresh and
//! recorded as a reconcile.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::html::{self, Viewer, esc};
use super::overview::{progress, readiness, short};
use super::{SESSION_COOKIE, cookie, error_page, same_origin, see_other};
use crate::api::Shared;
use crate::api::pins::storage;
use crate::api::{ApiError, ApiState};
use crate::auth::Role;
use crate::manifest::{Owner, PinSetId};
use crate::state::{Command, ConditionsRecord, PinSetRecord, ReconcileEntry};
use crate::wire::ReconcileQuery;

/// How long the page waits for the PinSet's count.
const COUNT_WAIT: Duration = Duration::from_millis(800);

/// How long "reconcile now" waits for the controller.
const RECONCILE_WAIT: &str = "30s";

/// The PinSet page's path.
pub(super) fn href(id: &PinSetId) -> String {
    format!(
        "/ui/pinsets/{}/{}",
        html::url(&id.namespace),
        html::url(&id.name)
    )
}

async fn read(
    state: &ApiState,
    id: &PinSetId,
) -> Result<(Option<PinSetRecord>, Option<ConditionsRecord>), ApiError> {
    let store = state.node.store().clone();
    let owner = Owner::pinset(id.clone());
    crate::api::blocking(move || {
        Ok((
            store.pinset(&owner).map_err(storage)?,
            store.conditions(&owner).map_err(storage)?,
        ))
    })
    .await
}

pub(super) async fn get(
    State(state): State<Shared>,
    Extension(viewer): Extension<Viewer>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let id = match crate::api::pinsets::pinset_id(namespace, name) {
        Ok(id) => id,
        Err(e) => return error_page(e.status(), Some(&viewer), &e.body().message),
    };
    let (record, reported) = match read(&state, &id).await {
        Ok(r) => r,
        Err(e) => return error_page(e.status(), Some(&viewer), &e.body().message),
    };
    // A PinSet that never applied is known by a controller's report only.
    let record = match (record, &reported) {
        (Some(r), _) => r,
        (None, Some(rep)) if !rep.conditions.is_empty() => PinSetRecord {
            namespace: id.namespace.clone(),
            name: id.name.clone(),
            revision: rep.revision.clone().unwrap_or_default(),
            labels: Default::default(),
            source: rep.source.clone(),
            pins: 0,
            prune: false,
            suspend: false,
            applied_at_ms: rep.reported_at_ms,
        },
        _ => {
            return error_page(
                StatusCode::NOT_FOUND,
                Some(&viewer),
                &format!("pinset {id} not found"),
            );
        }
    };
    let counted = match &state.ui {
        Some(ui) => ui
            .counts
            .get(&state, std::slice::from_ref(&id), COUNT_WAIT)
            .await
            .remove(&id),
        None => None,
    };
    let writer = viewer.identity.role >= Role::Writer && !state.node.is_follower();
    let main = render(&id, &record, reported.as_ref(), counted.as_ref(), writer);
    html::live(format!("PinSet {id}"), main, &viewer, &headers)
}

fn render(
    id: &PinSetId,
    record: &PinSetRecord,
    reported: Option<&ConditionsRecord>,
    counted: Option<&super::counts::Counted>,
    writer: bool,
) -> String {
    let mut out = format!("<h1>PinSet {}</h1>", esc(&id.to_string()));
    match counted {
        Some(c) => {
            let _ = write!(
                out,
                "<p><span class=\"ready {r}\">{r}</span> · <span class=\"progress\">{}</span> \
                 <span class=\"note\">(counted {}s ago)</span></p>",
                progress(&c.status),
                c.at.elapsed().as_secs(),
                r = readiness(&c.status),
            );
        }
        None => {
            let _ = write!(
                out,
                "<p class=\"note\">Counting {} pins… this page refreshes when the count is done.</p>",
                record.pins
            );
        }
    }
    if writer {
        let _ = write!(
            out,
            "<form id=\"reconcile-form\" method=\"post\" action=\"{}/reconcile\">\
             <button id=\"reconcile-now\" type=\"submit\">Reconcile now</button></form>",
            href(id)
        );
    }
    // Conditions: the count's (with the controller's merged in), else
    // what a controller reported.
    let conditions = counted
        .map(|c| c.status.conditions.clone())
        .or_else(|| reported.map(|r| r.conditions.clone()))
        .unwrap_or_default();
    out.push_str(
        "<section id=\"conditions\"><h2>Conditions</h2><div class=\"scroll\"><table>\
         <thead><tr><th>Type</th><th>Status</th><th>Reason</th><th>Message</th><th>Since</th></tr></thead><tbody>",
    );
    for c in &conditions {
        let _ = write!(
            out,
            "<tr class=\"condition\" data-type=\"{t}\"><td>{t}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.status),
            esc(&c.reason),
            esc(&c.message),
            esc(&c.last_transition_time),
            t = esc(&c.type_),
        );
    }
    out.push_str("</tbody></table></div></section>");
    let _ = write!(
        out,
        "<section id=\"source\"><h2>Source</h2><dl>\
         <dt>Source</dt><dd><code>{}</code></dd><dt>Revision</dt><dd><code title=\"{rev}\">{}</code></dd>\
         <dt>Applied</dt><dd>{}</dd><dt>Pins declared</dt><dd>{}</dd><dt>Prune</dt><dd>{}</dd>\
         <dt>Suspended</dt><dd>{}</dd></dl></section>",
        esc(&record.source),
        esc(&short(&record.revision)),
        html::time(record.applied_at_ms),
        record.pins,
        record.prune,
        record.suspend,
        rev = esc(&record.revision),
    );
    peer_counts(counted, &mut out);
    errors(counted, &mut out);
    reconciles(reported.map_or(&[][..], |r| &r.reconciles[..]), &mut out);
    out
}

fn peer_counts(counted: Option<&super::counts::Counted>, out: &mut String) {
    out.push_str(
        "<h2 id=\"peer-counts-title\">Per peer</h2><div class=\"scroll\">\
         <table id=\"peer-counts\" aria-labelledby=\"peer-counts-title\"><thead><tr><th>Peer</th>\
         <th>Pinned</th><th>Pinning</th><th>Queued</th><th>Error</th><th>Unpinned</th><th>Total</th></tr></thead><tbody>",
    );
    for (peer, s) in counted.map(|c| c.status.peers.iter()).into_iter().flatten() {
        let _ = write!(
            out,
            "<tr data-peer=\"{p}\"><td><a class=\"cid\" href=\"/ui/peers/{u}\">{p}</a></td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            s.pinned,
            s.pinning,
            s.queued,
            s.error,
            s.unpinned,
            s.total,
            p = esc(peer),
            u = html::url(peer),
        );
    }
    out.push_str("</tbody></table></div>");
}

fn errors(counted: Option<&super::counts::Counted>, out: &mut String) {
    out.push_str(
        "<h2 id=\"errors-title\">First errors</h2><div class=\"scroll\">\
         <table id=\"errors\" aria-labelledby=\"errors-title\"><thead><tr><th>CID</th><th>Peer</th>\
         <th>Error</th></tr></thead><tbody>",
    );
    for e in counted
        .map(|c| c.status.errors.iter())
        .into_iter()
        .flatten()
    {
        let _ = write!(
            out,
            "<tr class=\"error-row\" data-cid=\"{c}\"><td><a class=\"cid\" href=\"/ui/pins?q={u}\">{c}</a></td>\
             <td class=\"cid\">{}</td><td>{}</td></tr>",
            esc(&e.peer),
            esc(&e.error),
            c = esc(&e.cid),
            u = html::url(&e.cid),
        );
    }
    out.push_str("</tbody></table></div>");
}

fn reconciles(entries: &[ReconcileEntry], out: &mut String) {
    out.push_str(
        "<h2 id=\"reconciles-title\">Recent reconciles</h2><div class=\"scroll\">\
         <table id=\"reconciles\" aria-labelledby=\"reconciles-title\"><thead><tr><th>Time</th>\
         <th>Trigger</th><th>Outcome</th><th>Duration</th><th>Added</th><th>Removed</th>\
         <th>Revision</th><th>Message</th></tr></thead><tbody>",
    );
    for e in entries {
        let outcome = if e.ok { "ok" } else { "error" };
        let _ = write!(
            out,
            "<tr class=\"reconcile\"><td>{}</td><td>{}</td><td class=\"outcome {outcome}\">{outcome}</td>\
             <td class=\"num\">{} ms</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td><code>{}</code></td><td>{}</td></tr>",
            html::time(e.at_ms),
            esc(&e.trigger),
            e.duration_ms,
            e.added,
            e.removed,
            esc(&short(&e.revision)),
            esc(&e.message),
        );
    }
    out.push_str("</tbody></table></div>");
    if entries.is_empty() {
        out.push_str("<p class=\"note\">No reconcile recorded yet.</p>");
    }
}

/// `POST /ui/pinsets/{ns}/{name}/reconcile`: writers only; 303 back to
/// the PinSet page when done.
pub(super) async fn reconcile(
    State(state): State<Shared>,
    Extension(viewer): Extension<Viewer>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !same_origin(&headers) {
        return error_page(
            StatusCode::FORBIDDEN,
            Some(&viewer),
            "cross-origin request refused",
        );
    }
    if viewer.identity.role < Role::Writer {
        return error_page(
            StatusCode::FORBIDDEN,
            Some(&viewer),
            &format!(
                "forbidden: {} has role {}, this needs writer",
                viewer.identity.user, viewer.identity.role
            ),
        );
    }
    let id = match crate::api::pinsets::pinset_id(namespace, name) {
        Ok(id) => id,
        Err(e) => return error_page(e.status(), Some(&viewer), &e.body().message),
    };
    match reconcile_now(&state, &id, &headers).await {
        Ok(()) => {
            if let Some(ui) = &state.ui {
                ui.counts.forget(&id);
            }
            see_other(&href(&id))
        }
        Err(e) => error_page(e.status(), Some(&viewer), &e.body().message),
    }
}

/// Asks the controller running the PinSet's source (as `POST
/// /pinsets/../reconcile?wait=true`); when none runs it, re-checks.
async fn reconcile_now(
    state: &ApiState,
    id: &PinSetId,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let query = ReconcileQuery {
        wait: true,
        timeout: Some(RECONCILE_WAIT.into()),
    };
    // A forwarded request carries the caller's credentials: its header, or
    // its session token as a bearer token (valid on every peer).
    let auth = headers.get(header::AUTHORIZATION).cloned().or_else(|| {
        cookie(headers, SESSION_COOKIE)
            .and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok())
    });
    let raw = format!("wait=true&timeout={RECONCILE_WAIT}");
    let answer =
        crate::api::reconcile::reconcile_now(state, id, &query, Some(&raw), auth.as_ref(), false)
            .await;
    let status = match &answer {
        Ok(resp) => resp.status(),
        Err(e) => e.status(),
    };
    if status == StatusCode::CONFLICT {
        return recheck(state, id).await;
    }
    match answer {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => {
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
                .await
                .unwrap_or_default();
            let message = serde_json::from_slice::<crate::wire::ErrorBody>(&body)
                .map(|b| b.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            Err(ApiError::new(status, message))
        }
        Err(e) => Err(e),
    }
}

/// A PinSet no controller runs: counts its status now and records that
/// as a reconcile (`dashboard`), ok when it is Ready.
async fn recheck(state: &ApiState, id: &PinSetId) -> Result<(), ApiError> {
    let started = Instant::now();
    let svc = state.status.clone().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "this peer tracks no pins")
    })?;
    let default = svc.default_replication();
    let store = state.node.store().clone();
    let status = crate::api::pinset_status::pinset_status(store, &svc, id.clone(), default)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("pinset {id} not found")))?;
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    let entry = ReconcileEntry {
        at_ms: 0,
        trigger: "dashboard".into(),
        ok: ready.is_some_and(|c| c.status == "True"),
        message: crate::manifest::capped(
            format!(
                "re-checked (no controller runs its source): {}",
                ready.map_or("", |c| c.message.as_str())
            ),
            crate::manifest::MAX_STORED_MESSAGE_BYTES,
        ),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        added: 0,
        removed: 0,
        revision: status.revision.clone().unwrap_or_default(),
    };
    state
        .node
        .write(Command::RecordReconcile {
            owner: Owner::pinset(id.clone()),
            entry,
        })
        .await?;
    Ok(())
}
