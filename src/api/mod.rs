//! The REST API (DESIGN §7): IPFS Cluster's routes and JSON over one peer's
//! `ClusterNode`, plus pinfleet's own `/pinsets` and `/state/export`.
//!
//! Owns HTTP concerns only: parsing requests into domain values, mapping
//! errors to status codes, streaming NDJSON. It must not decide what to pin
//! (that is `plan` and `consensus`) and must never build a collection of pins
//! in memory: every pin listing streams from one read transaction.

mod add;
mod error;
mod gc;
mod metrics;
mod peers;
mod pins;
mod pinset_patch;
mod pinset_status;
mod pinsets;
mod reconcile;
mod status;
mod stream;

use std::future::IntoFuture;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::consensus::ClusterNode;
use crate::manifest::Limits;
use crate::tls::{ServerTls, TlsListener};

pub use error::ApiError;

/// Largest PinSet document `PUT /pinsets/{ns}/{name}` accepts by default.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 30;

/// Header added to reads answered while no leader is known: the local state
/// may be behind the cluster's.
pub const STALE_HEADER: &str = "x-pinfleet-stale";

/// What every handler shares. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// The local peer.
    pub node: ClusterNode,
    /// pinfleet's version, reported by `/id` and `/version`.
    pub version: &'static str,
    /// Human-readable name of this peer (`peername` in `/id`).
    pub peername: String,
    /// Largest request body accepted by `PUT /pinsets/{ns}/{name}`.
    pub max_body_bytes: u64,
    /// Bounds on PinSet documents sent to `PUT /pinsets/{ns}/{name}`.
    pub limits: Limits,
    /// This peer's IPFS node (`/id`'s `ipfs`, `POST /add`, this peer's part
    /// of `POST /ipfs/gc`); absent on a peer without one.
    pub ipfs: Option<std::sync::Arc<dyn crate::ipfs::IpfsBackend>>,
    /// Pin status (absent on a peer without a tracker: status routes 503).
    pub status: Option<std::sync::Arc<crate::tracker::StatusService>>,
    /// The controller that runs on this peer, for `POST
    /// /pinsets/{ns}/{name}/reconcile`; `None` without a controller.
    pub reconcile_now: Option<std::sync::Arc<dyn ReconcileNow>>,
    /// Where `POST /add` keeps an upload while importing it (removed after).
    pub upload_dir: std::path::PathBuf,
    /// The last count of this peer's statuses for `GET /metrics`.
    pub metrics: std::sync::Arc<metrics::MetricsCache>,
    /// Extra CA file trusted when forwarding to another peer's API (the
    /// daemon's `[tls] ca_file`).
    pub tls_ca: Option<std::path::PathBuf>,
}

impl ApiState {
    /// State with the default body cap and manifest limits.
    pub fn new(node: ClusterNode, version: &'static str, peername: impl Into<String>) -> Self {
        Self {
            node,
            version,
            peername: peername.into(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            limits: Limits::default(),
            ipfs: None,
            status: None,
            reconcile_now: None,
            upload_dir: std::env::temp_dir(),
            metrics: std::sync::Arc::default(),
            tls_ca: None,
        }
    }
}

/// Reconcile-now as the API needs it from a controller: ask the one that
/// runs `source` (the source PinSet `id` was applied from) to reconcile
/// now, and with `query.wait` wait until it did. Implemented where the
/// daemon wires its controller in; the API knows nothing else of it.
pub trait ReconcileNow: Send + Sync + 'static {
    /// 202 (queued) or 200 (done, with `wait`) and the answer; an error
    /// answer (409 when no source of that name runs here, 504 when the wait
    /// timed out, 400 for a bad timeout).
    fn reconcile<'a>(
        &'a self,
        id: &'a crate::manifest::PinSetId,
        source: &'a str,
        query: &'a crate::wire::ReconcileQuery,
    ) -> futures::future::BoxFuture<
        'a,
        Result<(axum::http::StatusCode, crate::wire::ReconcileAnswer), crate::wire::ErrorBody>,
    >;
}

impl std::fmt::Debug for dyn ReconcileNow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReconcileNow")
    }
}

/// Every route of the API.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/id", get(peers::id))
        .route("/version", get(peers::version))
        .route("/health", get(peers::health))
        .route("/peers", get(peers::list))
        .route("/peers/{peer}", delete(peers::remove))
        .route("/allocations", get(pins::allocations))
        .route("/allocations/{cid}", get(pins::allocation))
        .route("/pins", get(status::list))
        .route("/pins/recover", axum::routing::post(status::recover_all))
        .route(
            "/pins/{cid}",
            get(status::get).post(pins::pin).delete(pins::unpin),
        )
        .route(
            "/pins/{cid}/recover",
            axum::routing::post(status::recover_one),
        )
        .route("/pinsets", get(pinsets::list))
        .route(
            "/pinsets/{namespace}/{name}",
            get(pinsets::get_one)
                .put(pinsets::put)
                .patch(pinset_patch::patch)
                .delete(pinsets::remove),
        )
        .route(
            "/pinsets/{namespace}/{name}/conditions",
            axum::routing::put(pinsets::put_conditions),
        )
        .route(
            "/pinsets/{namespace}/{name}/status",
            get(pinset_status::get),
        )
        .route(
            "/pinsets/{namespace}/{name}/reconcile",
            axum::routing::post(reconcile::post),
        )
        .route("/state/export", get(pins::export))
        .route("/metrics", get(metrics::get))
        .route("/ipfs/gc", axum::routing::post(gc::gc))
        // Uploads stream to disk, so the default 2 MB body cap does not apply.
        .route(
            "/add",
            axum::routing::post(add::add).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed",
            )
        })
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            mark_stale_reads,
        ))
        .with_state(state)
}

/// Every route of the API plus `extra`'s (e.g. the controller's webhook
/// receivers `POST /hooks/{name}`), which must not overlap them.
pub fn router_with(state: ApiState, extra: Option<Router>) -> Router {
    match extra {
        Some(extra) => router(state).merge(extra),
        None => router(state),
    }
}

/// Serves `router(state)` on `listener` until `cancel` fires, then lets
/// requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, state, None, None, cancel).await
}

/// [`serve`] with `extra` routes merged in (see [`router_with`]), over TLS
/// when `tls` is given.
pub async fn serve_with(
    listener: TcpListener,
    state: ApiState,
    extra: Option<Router>,
    tls: Option<ServerTls>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, scheme, "rest api listening");
    }
    serve_router(listener, router_with(state, extra), tls, cancel).await
}

/// Serves `router` on `listener` (over TLS when `tls` is given, reloading
/// its certificate on SIGHUP or file change while serving) until `cancel`
/// fires, then lets requests in flight finish for up to
/// [`SHUTDOWN_GRACE`]. The one serving path of every HTTP listener.
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    tls: Option<ServerTls>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    match tls {
        None => graceful(axum::serve(listener, router), cancel).await,
        Some(tls) => {
            let stop = cancel.child_token();
            // The reload watch ends with this listener.
            let _stop = stop.clone().drop_guard();
            tls.watch(stop);
            let listener = TlsListener::new(listener, tls)?;
            graceful(axum::serve(listener, router), cancel).await
        }
    }
}

async fn graceful<L>(
    serve: axum::serve::Serve<L, Router, Router>,
    cancel: CancellationToken,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let server = serve
        .with_graceful_shutdown(cancel.clone().cancelled_owned())
        .into_future();
    // Requests in flight get SHUTDOWN_GRACE to finish; a stalled upload or
    // a long wait must not keep the process alive after Ctrl-C.
    let deadline = async {
        cancel.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = server => served,
        () = deadline => {
            tracing::warn!(
                grace = ?SHUTDOWN_GRACE,
                "requests still in flight after shutdown began: dropped"
            );
            Ok(())
        }
    }
}

/// How long requests in flight may run once shutdown begins.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads are served from the local state; without a leader that state may
/// lag the cluster, and clients deserve to know.
async fn mark_stale_reads(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let stale = req.method() == Method::GET && state.node.leader().is_none();
    let mut resp = next.run(req).await;
    if stale {
        resp.headers_mut()
            .insert(STALE_HEADER, HeaderValue::from_static("true"));
    }
    resp
}

/// Errors are `{"code", "message"}` everywhere, including the plain-text
/// rejections of axum's extractors (a path that does not decode, …).
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    // Rejection texts are short; anything longer is cut, not buffered.
    let text = match axum::body::to_bytes(resp.into_body(), 16 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        lower_first(&text)
    };
    ApiError::new(status, message).into_response()
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Runs a blocking storage read off the runtime.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("storage task failed: {e}")))?
}
