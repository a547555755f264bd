//! Reconcile-now: `POST /pinsets/{ns}/{name}/reconcile` and
//! `pinfleet reconcile pinset/NS/NAME` ask the controller that runs a
//! PinSet's source to reconcile it at once, even when the source's revision
//! is unchanged and the last outcome was healthy (the way Flux's
//! `reconcile.fluxcd.io/requestedAt` annotation does).
//!
//! This module owns the request bookkeeping ([`ReconcileRequests`]: a
//! ticket counter per source and the ticket last handled, so a caller can
//! wait for *its* request to be done) and the route's core shared by the
//! daemon's API and the standalone controller's listener. It must not
//! reconcile anything itself: the source loops ([`run_dir`](super::run_dir),
//! [`run_git`](super::run_git)) wake on a request and run the engine. The
//! kube source records each PinSet under its own source name
//! (`kube:NS/NAME`) and runs one engine per object: its requests are kept
//! per object ([`ReconcileRequests::object`]) under the kube source's
//! entry (`kube` or `kube:NS`), which [`request`] finds for such a name.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use crate::client::Client;
use crate::manifest::PinSetId;
use crate::wire::{DEFAULT_WAIT, ErrorBody, Handled, MAX_WAIT, ReconcileAnswer, ReconcileQuery};

/// Reconcile requests for one source: cheap to clone (shared counters).
///
/// Tickets are numbered from 1. A request takes the next ticket; the
/// source's loop, when it reconciles, reads the newest ticket first and
/// marks it handled when done, so every request made before a reconcile
/// started is served by it.
#[derive(Clone, Debug)]
pub struct ReconcileRequests {
    requested: Arc<watch::Sender<u64>>,
    handled: Arc<watch::Sender<u64>>,
    last: Arc<std::sync::Mutex<Option<Handled>>>,
    /// Requests per object of a source with one engine per object.
    objects: Arc<std::sync::Mutex<BTreeMap<PinSetId, ReconcileRequests>>>,
    /// For an object's requests: the source's `requested`, bumped with
    /// each request so the source's loop wakes.
    parent: Option<Arc<watch::Sender<u64>>>,
}

impl Default for ReconcileRequests {
    fn default() -> Self {
        Self {
            requested: Arc::new(watch::Sender::new(0)),
            handled: Arc::new(watch::Sender::new(0)),
            last: Arc::new(std::sync::Mutex::new(None)),
            objects: Arc::default(),
            parent: None,
        }
    }
}

impl ReconcileRequests {
    /// Asks for a reconcile; returns its ticket.
    pub fn request(&self) -> u64 {
        let mut ticket = 0;
        self.requested.send_modify(|v| {
            *v += 1;
            ticket = *v;
        });
        // After the object's own counter: a source loop woken by this
        // finds the object pending.
        if let Some(parent) = &self.parent {
            parent.send_modify(|v| *v += 1);
        }
        ticket
    }

    /// The requests of object `id` of this source (created on first use):
    /// a request for it also wakes [`wait_pending`](Self::wait_pending) on
    /// the source's requests, and [`pending_objects`](Self::pending_objects)
    /// then names it.
    pub fn object(&self, id: &PinSetId) -> ReconcileRequests {
        let mut objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        objects
            .entry(id.clone())
            .or_insert_with(|| ReconcileRequests {
                parent: Some(Arc::clone(&self.requested)),
                ..ReconcileRequests::default()
            })
            .clone()
    }

    /// Drops the requests of object `id` (the object is gone).
    pub fn forget_object(&self, id: &PinSetId) {
        let mut objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        objects.remove(id);
    }

    /// The objects with a pending request, and marks the source's own
    /// wake-ups up to now handled. Each object's request stays pending
    /// until its engine reconciles it.
    pub fn pending_objects(&self) -> Vec<PinSetId> {
        let woken = self.latest();
        let pending = {
            let objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
            objects
                .iter()
                .filter(|(_, r)| r.pending())
                .map(|(id, _)| id.clone())
                .collect()
        };
        self.mark_handled(woken);
        pending
    }

    /// The newest ticket handed out (0 when none).
    pub fn latest(&self) -> u64 {
        *self.requested.borrow()
    }

    /// Whether a request is waiting for a reconcile.
    pub fn pending(&self) -> bool {
        self.latest() > *self.handled.borrow()
    }

    /// Marks every ticket up to `ticket` handled by a reconcile that ended
    /// as `outcome`.
    pub fn mark_handled_with(&self, ticket: u64, outcome: Handled) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(outcome);
        }
        self.mark_handled(ticket);
    }

    /// How the latest reconcile that handled requests ended.
    pub fn last_outcome(&self) -> Option<Handled> {
        self.last.lock().ok().and_then(|l| l.clone())
    }

    /// Marks every ticket up to `ticket` handled.
    pub fn mark_handled(&self, ticket: u64) {
        self.handled.send_if_modified(|v| {
            if ticket > *v {
                *v = ticket;
                true
            } else {
                false
            }
        });
    }

    /// Resolves once a request is pending (at once if one already is).
    pub async fn wait_pending(&self) {
        let mut rx = self.requested.subscribe();
        let handled = self.handled.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while we
        // borrow it; an error would only mean "never", hence pending().
        if rx.wait_for(|r| *r > *handled.borrow()).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Waits until `ticket` is handled; false after `timeout`.
    pub async fn wait_handled(&self, ticket: u64, timeout: Duration) -> bool {
        let mut rx = self.handled.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|h| *h >= ticket)).await,
            Ok(Ok(_))
        )
    }
}

/// The sources a controller runs, by the name recorded with their PinSets
/// (`dir:/abs/path`, `git:URL#ref=…`; the kube source by its own name,
/// `kube` or `kube:NS`), with their request counters.
pub type Reconcilers = Arc<BTreeMap<String, ReconcileRequests>>;

/// The requests of the source named `source` that PinSet `id` was applied
/// from: that source's, or for a kube object (`kube:NS/NAME`) the
/// object's requests under the kube source watching its namespace.
fn requests_for(
    reconcilers: &BTreeMap<String, ReconcileRequests>,
    id: &PinSetId,
    source: &str,
) -> Option<ReconcileRequests> {
    if let Some(r) = reconcilers.get(source) {
        return Some(r.clone());
    }
    if source != crate::source::kube::source_name(id) {
        return None;
    }
    reconcilers
        .get(&format!("kube:{}", id.namespace))
        .or_else(|| reconcilers.get("kube"))
        .map(|kube| kube.object(id))
}

/// An error answer of the route: its HTTP status and `{"code", "message"}`.
fn refusal(status: StatusCode, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(status.as_u16(), message)
}

/// Asks the controller running `source` (the source PinSet `id` was
/// applied from) to reconcile, and with `query.wait` waits for it. 409 when
/// no source of `reconcilers` has that name.
pub async fn request(
    reconcilers: &BTreeMap<String, ReconcileRequests>,
    id: &PinSetId,
    source: &str,
    query: &ReconcileQuery,
) -> Result<(StatusCode, ReconcileAnswer), ErrorBody> {
    let timeout = match &query.timeout {
        None => DEFAULT_WAIT,
        Some(t) => crate::manifest::duration::parse_duration(t)
            .map_err(|e| {
                refusal(
                    StatusCode::BAD_REQUEST,
                    format!("timeout {}: {e}", crate::manifest::shown(t)),
                )
            })?
            .min(MAX_WAIT),
    };
    let requests = requests_for(reconcilers, id, source)
        .ok_or_else(|| crate::wire::not_run_here(id, source))?;
    let ticket = requests.request();
    tracing::info!(pinset = %id, source, ticket, "reconcile requested");
    let mut answer = ReconcileAnswer {
        namespace: id.namespace.clone(),
        name: id.name.clone(),
        source: source.to_string(),
        ticket,
        handled: false,
        outcome: None,
    };
    if !query.wait {
        return Ok((StatusCode::ACCEPTED, answer));
    }
    if !requests.wait_handled(ticket, timeout).await {
        return Err(refusal(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "reconcile of {id} requested (ticket {ticket}) but not done within {}",
                crate::manifest::duration::format_duration(timeout)
            ),
        ));
    }
    answer.handled = true;
    answer.outcome = requests.last_outcome();
    Ok((StatusCode::OK, answer))
}

#[derive(Clone)]
struct Standalone {
    client: Client,
    reconcilers: Reconcilers,
}

/// `POST /pinsets/{ns}/{name}/reconcile` for a standalone `pinfleet
/// controller` (served on its `--listen` address): the PinSet's
/// source is read from the cluster through `client`.
pub fn router(client: Client, reconcilers: Reconcilers) -> Router {
    Router::new()
        .route(
            "/pinsets/{namespace}/{name}/reconcile",
            axum::routing::post(standalone),
        )
        .with_state(Standalone {
            client,
            reconcilers,
        })
}

/// An error answer of the standalone route.
struct Refusal(ErrorBody);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(status = status.as_u16(), error = %self.0.message, "request failed");
        }
        (status, Json(self.0)).into_response()
    }
}

async fn standalone(
    State(st): State<Standalone>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<ReconcileQuery>,
) -> Result<(StatusCode, Json<ReconcileAnswer>), Refusal> {
    let id = crate::manifest::pinset_id(namespace, name)
        .map_err(|e| Refusal(refusal(StatusCode::BAD_REQUEST, e)))?;
    let source = st
        .client
        .pinset(&id)
        .await
        .map_err(|e| {
            Refusal(refusal(
                StatusCode::BAD_GATEWAY,
                format!("cannot read pinset {id}: {}", super::error_chain(&e)),
            ))
        })?
        .map(|p| p.source)
        .ok_or_else(|| {
            Refusal(refusal(
                StatusCode::NOT_FOUND,
                format!("pinset {id} not found"),
            ))
        })?;
    let (status, answer) = request(&st.reconcilers, &id, &source, &query)
        .await
        .map_err(Refusal)?;
    Ok((status, Json(answer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_is_pending_until_a_reconcile_marks_its_ticket() {
        let r = ReconcileRequests::default();
        assert!(!r.pending());
        let t1 = r.request();
        let t2 = r.request();
        assert_eq!((t1, t2), (1, 2));
        assert!(r.pending());
        // A reconcile that started after ticket 1 only.
        r.mark_handled(1);
        assert!(r.pending(), "ticket 2 is still waiting");
        assert!(!r.wait_handled(2, Duration::from_millis(20)).await);
        r.mark_handled(r.latest());
        assert!(!r.pending());
        assert!(r.wait_handled(2, Duration::from_millis(20)).await);
        // Marking an older ticket never moves the counter back.
        r.mark_handled(1);
        assert!(r.wait_handled(2, Duration::from_millis(20)).await);
    }

    #[tokio::test]
    async fn wait_pending_wakes_on_a_request_from_another_task() {
        let r = ReconcileRequests::default();
        let waiter = {
            let r = r.clone();
            tokio::spawn(async move { r.wait_pending().await })
        };
        r.request();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("task");
    }

    #[tokio::test]
    async fn an_unknown_source_is_refused_with_409_and_named() {
        let reconcilers: Reconcilers = Arc::new(BTreeMap::from([(
            "dir:/srv/a".to_string(),
            ReconcileRequests::default(),
        )]));
        let id = PinSetId::new("default", "web");
        let err = request(&reconcilers, &id, "api", &ReconcileQuery::default())
            .await
            .unwrap_err();
        assert_eq!(err.code, StatusCode::CONFLICT.as_u16());
        assert!(err.message.contains("\"api\""), "{}", err.message);
        let (status, answer) = request(&reconcilers, &id, "dir:/srv/a", &ReconcileQuery::default())
            .await
            .unwrap();
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(answer.ticket, 1);
        assert!(!answer.handled);
        assert!(reconcilers["dir:/srv/a"].pending());
    }

    #[tokio::test]
    async fn a_kube_object_is_reconciled_by_the_kube_source_of_its_namespace() {
        let kube = ReconcileRequests::default();
        let reconcilers: Reconcilers = Arc::new(BTreeMap::from([
            ("kube:team-a".to_string(), kube.clone()),
            ("dir:/srv/a".to_string(), ReconcileRequests::default()),
        ]));
        let id = PinSetId::new("team-a", "web");
        let waker = {
            let kube = kube.clone();
            tokio::spawn(async move { kube.wait_pending().await })
        };
        let (status, answer) = request(
            &reconcilers,
            &id,
            "kube:team-a/web",
            &ReconcileQuery::default(),
        )
        .await
        .unwrap();
        assert_eq!((status, answer.ticket), (StatusCode::ACCEPTED, 1));
        tokio::time::timeout(Duration::from_secs(5), waker)
            .await
            .expect("the kube source's loop wakes")
            .expect("task");
        assert_eq!(kube.pending_objects(), std::slice::from_ref(&id));
        assert!(!kube.pending(), "the wake-up is taken");
        let object = kube.object(&id);
        assert!(object.pending(), "until the object's engine reconciles it");
        object.mark_handled(1);
        assert!(kube.pending_objects().is_empty());
        // Another namespace's object, or a name that is not the object's.
        let other = PinSetId::new("team-b", "web");
        for (id, source) in [(&other, "kube:team-b/web"), (&id, "kube:team-a/api")] {
            let err = request(&reconcilers, id, source, &ReconcileQuery::default())
                .await
                .unwrap_err();
            assert_eq!(err.code, StatusCode::CONFLICT.as_u16(), "{source}");
        }
    }
}
