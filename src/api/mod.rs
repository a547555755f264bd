//! The REST API (DESIGN §7): IPFS Cluster's routes and JSON over one peer's
//! `ClusterNode`, plus pinfleet's own `/pinsets` and `/state/export`.
//!
//! Owns HTTP concerns only: parsing requests into domain values, mapping
//! errors to status codes, streaming NDJSON. It must not decide what to pin
//! (that is `plan` and `consensus`) and must never build a collection of pins
//! in memory: every pin listing streams from one read transaction.

mod access;
mod add;
mod batch;
mod error;
mod followers;
mod gateway;
mod gc;
mod health;
mod metrics;
mod monitor;
mod openapi;
mod paths;
mod peers;
mod pins;
mod pinset_patch;
mod pinset_status;
mod pinsets;
pub mod pinsvc;
mod reconcile;
mod routes;
mod sharded_status;
mod sharder;
mod status;
mod stream;
mod token;
pub mod ui;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::consensus::ClusterNode;
use crate::manifest::Limits;
use crate::tls::{ServerTls, TlsListener};

pub use access::{Access, AccessPolicy, Caller};
pub use error::ApiError;
pub use metrics::{METRICS, MetricDoc, MetricKind};
pub use monitor::MonitorView;
pub use openapi::{
    document as openapi_document, openapi_json, openapi_markdown, undocumented_routes,
};
pub use routes::{Bound, Route, routes};

/// Largest PinSet document `PUT /pinsets/{ns}/{name}` accepts by default.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 30;

/// Largest `POST /add` upload accepted by default (1 GiB).
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 1 << 30;

/// Largest `PUT /pinsets/{ns}/{name}/conditions` body (64 KiB): a handful
/// of conditions, never a document.
pub const MAX_CONDITIONS_BODY_BYTES: u64 = 64 * 1024;

/// Default number of `PUT`/`PATCH /pinsets/{ns}/{name}` served at once.
pub const DEFAULT_MAX_CONCURRENT_PINSET_WRITES: usize = 2;

/// How long a `PUT`/`PATCH /pinsets/{ns}/{name}` waits for a free slot
/// before it is answered 503 by default.
pub const DEFAULT_PINSET_WRITE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Default of how long a client may take to send its headers, and between
/// two pieces of a request body.
pub const DEFAULT_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Default of how many connections one listener serves at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// How long a connection over the limit waits for a free one before it is
/// answered 503 and closed.
pub const CONNECTION_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// Longest time spent refusing one connection (writing the 503, then
/// reading what the client sent meanwhile so that closing does not reset
/// the connection before the client reads the answer).
const REFUSE_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// Most bytes read from a refused connection before it is closed.
const REFUSE_DRAIN_BYTES: usize = 64 * 1024;

/// How often, at most, reaching the connection limit is logged.
const FULL_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// How one listener bounds its connections (see [`serve_router_limited`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a client may take to send a request's headers, and how
    /// long a kept-alive connection may stay idle between two requests;
    /// then the connection is closed.
    pub header_read_timeout: std::time::Duration,
    /// Most connections served at once (at least 1).
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// `header_read_timeout` and [`DEFAULT_MAX_CONNECTIONS`].
    pub fn new(header_read_timeout: std::time::Duration) -> Self {
        Self {
            header_read_timeout,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

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
    /// Where `POST /add` keeps an upload while importing it (removed
    /// after), on a backend that does not stream it (Kubo).
    pub upload_dir: std::path::PathBuf,
    /// The last count of this peer's statuses for `GET /metrics`.
    pub metrics: std::sync::Arc<metrics::MetricsCache>,
    /// Who may call which route (`[api]` users, host names, CORS).
    pub access: AccessPolicy,
    /// Largest `POST /add` upload (413 beyond, nothing kept).
    pub max_upload_bytes: u64,
    /// Longest wait for the next piece of a request body (408 beyond);
    /// also the server's header read timeout (see [`serve_router`]).
    pub read_timeout: std::time::Duration,
    /// Slots for `PUT`/`PATCH /pinsets/{ns}/{name}` (large bodies, parsed
    /// in memory): see [`ApiState::with_pinset_writes`].
    pub pinset_writes: std::sync::Arc<tokio::sync::Semaphore>,
    /// How long such a write waits for a slot before 503.
    pub pinset_write_wait: std::time::Duration,
    /// How long a path pin (`/pins/ipfs/…`) waits for the IPFS node to
    /// resolve its path (fetching the blocks it walks) before answering 500.
    pub resolve_timeout: std::time::Duration,
    /// Most connections served at once (see [`serve_router_limited`]).
    pub max_connections: usize,
    /// Extra CA file trusted when forwarding to another peer's API (the
    /// daemon's `[tls] ca_file`).
    pub tls_ca: Option<std::path::PathBuf>,
    /// The informer's metrics of every peer, for `GET /monitor/metrics`
    /// (absent on a peer without an informer: those routes 503).
    pub monitor: Option<MonitorView>,
    /// The web dashboard under `/ui/` (`[api] ui`); `None`: off (404).
    pub ui: Option<ui::Dashboard>,
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
            access: AccessPolicy::default(),
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            read_timeout: DEFAULT_READ_TIMEOUT,
            pinset_writes: std::sync::Arc::new(tokio::sync::Semaphore::new(
                DEFAULT_MAX_CONCURRENT_PINSET_WRITES,
            )),
            pinset_write_wait: DEFAULT_PINSET_WRITE_WAIT,
            resolve_timeout: paths::RESOLVE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tls_ca: None,
            monitor: None,
            ui: Some(ui::Dashboard::default()),
        }
    }

    /// At most `n` (at least 1) `PUT`/`PATCH /pinsets/{ns}/{name}` served
    /// at once; the others wait up to `pinset_write_wait`, then get 503.
    pub fn with_pinset_writes(mut self, n: usize) -> Self {
        self.pinset_writes = std::sync::Arc::new(tokio::sync::Semaphore::new(n.max(1)));
        self
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

/// The API's state as its handlers get it: one allocation shared by every
/// request (axum clones the state for each extractor and middleware).
pub type Shared = std::sync::Arc<ApiState>;

/// Every route of the API, each behind the access its entry in
/// [`routes`] declares, all behind the `Host` and CORS checks.
pub fn router(state: ApiState) -> Router {
    let state: Shared = std::sync::Arc::new(state);
    let mut router = Router::new();
    let table = routes();
    let paths: std::sync::Arc<[&'static str]> = table.iter().map(|r| r.path).collect();
    for r in table {
        let endpoint = match r.bound {
            Bound::Default => r.endpoint,
            Bound::PinSetWrite => r.endpoint.layer(axum::middleware::from_fn_with_state(
                state.clone(),
                limit_pinset_writes,
            )),
            // Uploads stream to disk: their cap is max_upload_bytes, not
            // the default 2 MB (the handler maps going over it to 413).
            Bound::Upload => r.endpoint.layer(axum::extract::DefaultBodyLimit::max(
                usize::try_from(state.max_upload_bytes).unwrap_or(usize::MAX),
            )),
            Bound::PinBatch => {
                let slot: axum::routing::MethodRouter<Shared> = r.endpoint.layer(
                    axum::middleware::from_fn_with_state(state.clone(), limit_pinset_writes),
                );
                // NDJSON streams (the handler bounds an array itself).
                slot.layer(axum::extract::DefaultBodyLimit::max(
                    batch::MAX_STREAM_BYTES,
                ))
            }
        };
        // The role check wraps the bounds: a refused request takes no
        // write slot and sends no body.
        let check =
            axum::middleware::from_fn_with_state((state.access.clone(), r.access), access::require);
        router = router.route(r.path, endpoint.layer(check));
    }
    router
        .merge(ui::router(&state))
        .fallback(move |req: Request| {
            let paths = std::sync::Arc::clone(&paths);
            async move { unknown_route(&paths, &req) }
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed",
            )
        })
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn(stream::remember_te))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refuse_follower_writes,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            mark_stale_reads,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.access.clone(),
            access::guard,
        ))
        .with_state(state)
}

/// A request to no route: a known route's path with a trailing slash is
/// answered 307 to the path without it (query kept; unlike a 301, clients
/// repeat the method and body, as IPFS Cluster's `strictSlashHandler`),
/// anything else 404.
fn unknown_route(paths: &[&'static str], req: &Request) -> Response {
    let uri = req.uri();
    let Some(bare) = uri.path().strip_suffix('/').filter(|p| !p.is_empty()) else {
        return ApiError::not_found("no such route").into_response();
    };
    if !paths.iter().any(|p| route_matches(p, bare)) {
        return ApiError::not_found("no such route").into_response();
    }
    let location = match uri.query() {
        Some(q) => format!("{bare}?{q}"),
        None => bare.to_owned(),
    };
    match HeaderValue::from_str(&location) {
        Ok(v) => (
            axum::http::StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, v)],
        )
            .into_response(),
        Err(_) => ApiError::not_found("no such route").into_response(),
    }
}

/// Whether `path` (already percent-encoded, as received) is one `pattern`
/// of the route table serves: literal segments equal, `{x}` any non-empty
/// segment.
fn route_matches(pattern: &str, path: &str) -> bool {
    let mut want = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') => {
                if g.is_empty() {
                    return false;
                }
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return false,
        }
    }
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
    let limits = ConnectionLimits {
        header_read_timeout: state.read_timeout,
        max_connections: state.max_connections,
    };
    let sampler = ui::sampler(&state, cancel.clone());
    let served = serve_router_limited(listener, router_with(state, extra), tls, limits, cancel);
    match sampler {
        // The sampler ends with `cancel`, as the listener does.
        Some(sampler) => tokio::join!(served, sampler).0,
        None => served.await,
    }
}

/// Serves `router` on `listener` (over TLS when `tls` is given, reloading
/// its certificate on SIGHUP or file change while serving) until `cancel`
/// fires, then lets requests in flight finish for up to
/// [`SHUTDOWN_GRACE`]. The one serve path of every HTTP listener (REST
/// API, webhooks).
///
/// A client gets `header_read_timeout` to send each request's headers (a
/// trickling client is disconnected), and a kept-alive connection may stay
/// idle that long between requests; nothing bounds how long an answer
/// takes to stream out. At most [`DEFAULT_MAX_CONNECTIONS`] connections
/// are served at once (see [`serve_router_limited`]).
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    tls: Option<ServerTls>,
    header_read_timeout: std::time::Duration,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let limits = ConnectionLimits::new(header_read_timeout);
    serve_router_limited(listener, router, tls, limits, cancel).await
}

/// [`serve_router`] with its connection limits given. A connection
/// accepted while `limits.max_connections` are served waits up to
/// [`CONNECTION_WAIT`] for one of them to end; if none does it is answered
/// `503` (JSON body, `Retry-After: 1`) and closed. As many connections as
/// are served may wait so; one more is closed at once without an answer,
/// so a flood holds at most twice `max_connections` sockets.
pub async fn serve_router_limited(
    listener: TcpListener,
    router: Router,
    tls: Option<ServerTls>,
    limits: ConnectionLimits,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    match tls {
        None => serve_connections(listener, router, limits, cancel).await,
        Some(tls) => {
            let stop = cancel.child_token();
            // The reload watch ends with this listener.
            let _stop = stop.clone().drop_guard();
            tls.watch(stop);
            let listener = TlsListener::new(listener, tls)?;
            serve_connections(listener, router, limits, cancel).await
        }
    }
}

/// HTTP/1.1 over each connection `listener` accepts, at most
/// `limits.max_connections` at once (axum's `Listener` backs off on accept
/// errors such as running out of file descriptors).
async fn serve_connections<L: axum::serve::Listener>(
    mut listener: L,
    router: Router,
    limits: ConnectionLimits,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    use std::sync::Arc;
    use tokio::sync::Semaphore;
    let connections = tokio_util::task::TaskTracker::new();
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let waiting = Arc::new(Semaphore::new(max));
    let mut logged_full: Option<tokio::time::Instant> = None;
    loop {
        let (stream, _) = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (router, stop) = (router.clone(), cancel.clone());
        let timeout = limits.header_read_timeout;
        if let Ok(slot) = Arc::clone(&slots).try_acquire_owned() {
            connections.spawn(serve_connection(stream, router, timeout, stop, slot));
            continue;
        }
        if logged_full.is_none_or(|at| at.elapsed() >= FULL_LOG_EVERY) {
            logged_full = Some(tokio::time::Instant::now());
            tracing::warn!(
                max_connections = max,
                "connection limit reached: new connections wait briefly, then get 503 \
                 (api.max_connections)"
            );
        }
        let Ok(waiter) = Arc::clone(&waiting).try_acquire_owned() else {
            tracing::debug!("too many connections waiting: closed at once");
            continue;
        };
        let slots = Arc::clone(&slots);
        connections.spawn(async move {
            let slot = tokio::time::timeout(CONNECTION_WAIT, slots.acquire_owned()).await;
            drop(waiter);
            match slot {
                Ok(Ok(slot)) => serve_connection(stream, router, timeout, stop, slot).await,
                _ => refuse(stream).await,
            }
        });
    }
    drop(listener);
    connections.close();
    // Requests in flight get SHUTDOWN_GRACE to finish; a stalled upload or
    // a long wait must not keep the process alive after Ctrl-C.
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?SHUTDOWN_GRACE,
            "requests still in flight after shutdown began: dropped"
        );
    }
    Ok(())
}

/// HTTP/1.1 over one connection, holding `_slot` until it ends or, once
/// `stop` fires, its request in flight is answered.
async fn serve_connection<S>(
    stream: S,
    router: Router,
    header_read_timeout: std::time::Duration,
    stop: CancellationToken,
    _slot: tokio::sync::OwnedSemaphorePermit,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(router);
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper restarts the header timer whenever a kept-alive connection
    // goes idle: it also bounds the wait for the next request.
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let conn = builder
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        served = conn.as_mut() => {
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended");
            }
        }
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Answers a connection over the limit with 503 and closes it, within
/// [`REFUSE_TIME`].
async fn refuse<S>(mut stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BODY: &str =
        r#"{"code":503,"message":"too many connections: retry later (api.max_connections)"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let refused = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut read = 0;
        while read < REFUSE_DRAIN_BYTES {
            match stream.read(&mut sink).await? {
                0 => break,
                n => read += n,
            }
        }
        Ok::<_, std::io::Error>(())
    };
    if let Ok(Err(e)) = tokio::time::timeout(REFUSE_TIME, refused).await {
        tracing::debug!(error = %e, "refused connection ended");
    }
}

/// How long requests in flight may run once shutdown begins.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// `PUT`/`PATCH /pinsets/{ns}/{name}` and `POST /pins/batch` take a slot of
/// [`ApiState::pinset_writes`] for the whole request: when none frees up
/// within `pinset_write_wait` the answer is 503 with `Retry-After`, so
/// large bodies never queue without bound.
async fn limit_pinset_writes(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if !matches!(*req.method(), Method::PUT | Method::PATCH | Method::POST) {
        return next.run(req).await;
    }
    let permit = tokio::time::timeout(
        state.pinset_write_wait,
        std::sync::Arc::clone(&state.pinset_writes).acquire_owned(),
    )
    .await;
    match permit {
        Ok(Ok(_permit)) => next.run(req).await,
        _ => {
            let mut resp = ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "too many pinset writes in progress: retry later",
            )
            .into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
    }
}

/// A follower's API is read-only: every request that could change the
/// cluster (pins, PinSets, add, peers, gc) answers 403 saying why. Asking
/// for a token and re-queueing this peer's own failed pins stay allowed.
async fn refuse_follower_writes(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let read = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let path = req.uri().path();
    // `/pins/{cid}/recover` exactly: one segment between (a path pin such
    // as `/pins/ipfs/<cid>/recover` is a write).
    let recover_one = path
        .strip_prefix("/pins/")
        .and_then(|p| p.strip_suffix("/recover"))
        .is_some_and(|cid| !cid.is_empty() && !cid.contains('/'));
    // Logging in to or out of the dashboard writes nothing.
    let local = path == "/token"
        || path == "/pins/recover"
        || path == "/ui/login"
        || path == "/ui/logout"
        || recover_one;
    if state.node.is_follower() && !read && !local {
        return ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            crate::consensus::FOLLOWER_WRITE,
        )
        .into_response();
    }
    next.run(req).await
}

/// Reads are served from the local state; without a leader that state may
/// lag the cluster, and clients deserve to know. (A follower never has a
/// leader: its state is what the feed brought, and says so in `/id`.)
async fn mark_stale_reads(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let stale =
        req.method() == Method::GET && state.node.leader().is_none() && !state.node.is_follower();
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
    // The dashboard's error pages are HTML, and stay so.
    let is_json = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/html")
    });
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

/// 408: a request body stalled for longer than `idle`.
pub(crate) fn body_timeout(idle: std::time::Duration) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        format!("the request body stalled: nothing arrived for {idle:?}"),
    )
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

#[cfg(test)]
mod tests {
    use super::route_matches;

    #[test]
    fn route_patterns_match_whole_segments_only() {
        assert!(route_matches("/pins", "/pins"));
        assert!(route_matches("/pins/{cid}", "/pins/bafy"));
        assert!(route_matches("/pins/{cid}/recover", "/pins/bafy/recover"));
        assert!(!route_matches("/pins/{cid}", "/pins/"));
        assert!(!route_matches("/pins/{cid}", "/pins"));
        assert!(!route_matches("/pins/{cid}", "/pins/a/b"));
        assert!(!route_matches("/pins", "/pinsx"));
        assert!(!route_matches("/peers", "/"));
    }
}
