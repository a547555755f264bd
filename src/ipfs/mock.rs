//! A scripted stand-in for Kubo's RPC API, for tests and benchmarks only.
//!
//! Production code must not use it. It is compiled into the library, not
//! kept under `tests/`, because integration tests *and* benchmarks need it
//! and a Cargo feature to hide it would mean touching the shared manifest;
//! it is small and uses only axum, which the binary already links. A
//! `mock-kubo` feature can fence it off later without changing its API.
//!
//! It answers the endpoints [`KuboClient`](super::KuboClient) calls with
//! Kubo's JSON shapes (see `kubo.rs`), keeps pins the way Kubo does (keyed
//! by exact CID, so `Qm…` and `bafy…` spellings are distinct pins), and has
//! knobs for what real nodes do to you: latency, errors, downtime, content
//! that never arrives or arrives slowly, pins removed behind your back, and
//! undecodable answers.
//!
//! One gap: axum alone cannot send HTTP trailers, so a mid-stream failure
//! ([`MockKubo::fail_midstream`]) ends with Kubo's older in-band error object
//! rather than the `X-Stream-Error` trailer current Kubo sends.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cid::Cid;
use futures::{Stream, StreamExt};
use serde_json::json;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::PinKind;
use crate::manifest::CidKey;

/// Block size block/stat reports for a pinned CID with no size set.
const DEFAULT_BLOCK_SIZE: u64 = 1024;
/// Bytes per fetched node in scripted progress lines.
const BYTES_PER_NODE: u64 = 262_144;

/// One request the mock received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockCall {
    /// The command, e.g. `pin/add`.
    pub endpoint: String,
    /// The `arg` values, in order.
    pub args: Vec<String>,
    /// Every query parameter, `arg` included.
    pub query: Vec<(String, String)>,
}

/// A running mock Kubo on `127.0.0.1`. Stops when dropped.
#[derive(Debug)]
pub struct MockKubo {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    addr: SocketAddr,
    url: String,
    state: Mutex<MockState>,
    server: Mutex<Option<Server>>,
}

#[derive(Debug)]
struct Server {
    kill: CancellationToken,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct MockState {
    pins: BTreeMap<Cid, PinKind>,
    collectable: BTreeSet<Cid>,
    block_sizes: HashMap<CidKey, u64>,
    connected: Vec<String>,
    calls: Vec<MockCall>,
    latency: Duration,
    failures: VecDeque<(StatusCode, String)>,
    down: bool,
    garbage: bool,
    never: HashSet<CidKey>,
    slow: HashMap<CidKey, (u64, Duration)>,
    midstream: HashMap<CidKey, String>,
    heartbeat: Duration,
    repo_size: u64,
    storage_max: u64,
    num_objects: u64,
    peer_id: String,
}

impl MockKubo {
    /// Starts a mock on `127.0.0.1` and an ephemeral port; returns it and
    /// its base URL (`http://127.0.0.1:<port>`).
    pub async fn start() -> io::Result<(MockKubo, String)> {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = listener.local_addr()?;
        let url = format!("http://{addr}");
        let state = MockState {
            pins: BTreeMap::new(),
            collectable: BTreeSet::new(),
            block_sizes: HashMap::new(),
            connected: Vec::new(),
            calls: Vec::new(),
            latency: Duration::ZERO,
            failures: VecDeque::new(),
            down: false,
            garbage: false,
            never: HashSet::new(),
            slow: HashMap::new(),
            midstream: HashMap::new(),
            heartbeat: Duration::from_millis(100),
            repo_size: 0,
            storage_max: 10_000_000_000, // Kubo's default Datastore.StorageMax, 10GB
            num_objects: 0,
            peer_id: mock_peer_id(addr.port()),
        };
        let shared = Arc::new(Shared {
            addr,
            url: url.clone(),
            state: Mutex::new(state),
            server: Mutex::new(None),
        });
        let server = serve(shared.clone(), listener);
        *lock(&shared.server) = Some(server);
        Ok((MockKubo { shared }, url))
    }

    /// The base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    fn state(&self) -> MutexGuard<'_, MockState> {
        lock(&self.shared.state)
    }

    /// Stops listening and breaks open connections, like a killed daemon:
    /// new connections are refused. In-flight streams end with an error.
    pub async fn stop(&self) {
        let server = lock(&self.shared.server).take();
        if let Some(server) = server {
            server.kill.cancel();
            if tokio::time::timeout(Duration::from_secs(5), server.task)
                .await
                .is_err()
            {
                tracing::warn!(url = %self.shared.url, "mock kubo did not stop within 5s");
            }
        }
    }

    /// Listens again on the same port after [`stop`](Self::stop); state
    /// (pins, knobs, call log) is kept.
    pub async fn restart(&self) -> io::Result<()> {
        if lock(&self.shared.server).is_some() {
            return Ok(());
        }
        let listener = bind(self.shared.addr)?;
        let server = serve(self.shared.clone(), listener);
        *lock(&self.shared.server) = Some(server);
        Ok(())
    }

    /// Delays every answer by `latency`.
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    /// Answers the next `n` requests, whatever they are, with `status` and
    /// Kubo's error body carrying `message`.
    pub fn fail_next(&self, n: usize, status: u16, message: &str) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut state = self.state();
        for _ in 0..n {
            state.failures.push_back((status, message.to_string()));
        }
    }

    /// While `down`, answers everything with 503 and a Kubo error body (a
    /// daemon that is up but broken). See [`stop`](Self::stop) for one that
    /// is gone.
    pub fn set_down(&self, down: bool) {
        self.state().down = down;
    }

    /// While on, answers every request with 200 and an undecodable body.
    pub fn garbage(&self, on: bool) {
        self.state().garbage = on;
    }

    /// `pin/add` of `cid` never finishes: with `progress=true` it streams
    /// Kubo's zero-progress heartbeat (`{}`) forever, otherwise it never
    /// answers.
    pub fn never_arrives(&self, cid: CidKey) {
        self.state().never.insert(cid);
    }

    /// `pin/add` of `cid` reports `steps` progress lines, one every
    /// `interval`, then succeeds.
    pub fn slow_progress(&self, cid: CidKey, steps: u64, interval: Duration) {
        self.state().slow.insert(cid, (steps, interval));
    }

    /// `pin/add` of `cid` reports some progress, then fails with `message`
    /// as an in-band error object.
    pub fn fail_midstream(&self, cid: CidKey, message: &str) {
        self.state().midstream.insert(cid, message.to_string());
    }

    /// Sets how often never-arriving pins repeat their heartbeat (default
    /// 100ms; real Kubo: 500ms).
    pub fn set_heartbeat(&self, every: Duration) {
        self.state().heartbeat = every.max(Duration::from_millis(1));
    }

    /// Drops every pin on `cid` as if an operator ran `ipfs pin rm`; the
    /// call is not logged.
    pub fn remove_behind_back(&self, cid: CidKey) {
        let mut state = self.state();
        for c in spellings(cid) {
            if state.pins.remove(&c).is_some() {
                state.collectable.insert(c);
            }
        }
    }

    /// Adds pins (canonical v1 spelling) without a request.
    pub fn add_pins(&self, pins: impl IntoIterator<Item = (CidKey, PinKind)>) {
        let mut state = self.state();
        for (cid, kind) in pins {
            state.pins.insert(*cid.cid(), kind);
        }
    }

    /// Adds a pin under exactly this CID spelling (e.g. a `Qm…` v0 CID, as
    /// Kubo keeps it when someone pins it by hand).
    pub fn add_pin_exact(&self, cid: Cid, kind: PinKind) {
        self.state().pins.insert(cid, kind);
    }

    /// How `cid` is pinned under any spelling (recursive wins).
    pub fn pinned(&self, cid: CidKey) -> Option<PinKind> {
        let state = self.state();
        spellings(cid)
            .iter()
            .filter_map(|c| state.pins.get(c).copied())
            .min()
    }

    /// How many pins the node holds (cheap, for polling).
    pub fn pin_count(&self) -> usize {
        self.state().pins.len()
    }

    /// Every pin, as Kubo would spell it, with its kind.
    pub fn pins(&self) -> Vec<(String, PinKind)> {
        self.state()
            .pins
            .iter()
            .map(|(c, k)| (c.to_string(), *k))
            .collect()
    }

    /// Sets the size `block/stat` reports for `cid` (and makes it local).
    pub fn put_block(&self, cid: CidKey, size: u64) {
        self.state().block_sizes.insert(cid, size);
    }

    /// Sets `RepoSize` and `StorageMax` (`u64::MAX` is Kubo's "no limit").
    pub fn set_repo(&self, size: u64, max: u64) {
        let mut state = self.state();
        state.repo_size = size;
        state.storage_max = max;
    }

    /// Sets `NumObjects` reported by a full (not size-only) `repo/stat`.
    pub fn set_num_objects(&self, n: u64) {
        self.state().num_objects = n;
    }

    /// Sets the peer ID `id` reports (default: derived from the port).
    pub fn set_peer_id(&self, id: &str) {
        self.state().peer_id = id.to_string();
    }

    /// Addresses passed to `swarm/connect`, in order.
    pub fn connected(&self) -> Vec<String> {
        self.state().connected.clone()
    }

    /// Every request received so far, in order.
    pub fn calls(&self) -> Vec<MockCall> {
        self.state().calls.clone()
    }

    /// How many requests hit `endpoint` (e.g. `pin/add`).
    pub fn count_calls(&self, endpoint: &str) -> usize {
        self.state()
            .calls
            .iter()
            .filter(|c| c.endpoint == endpoint)
            .count()
    }

    /// Forgets the call log.
    pub fn clear_calls(&self) {
        self.state().calls.clear();
    }
}

impl Drop for MockKubo {
    fn drop(&mut self) {
        // The server task holds the state, so it must be told to end.
        if let Some(server) = lock(&self.shared.server).take() {
            server.kill.cancel();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Binds with `SO_REUSEADDR` so a restart can take the same port at once.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn serve(shared: Arc<Shared>, listener: TcpListener) -> Server {
    let kill = CancellationToken::new();
    let ctx = Ctx {
        shared,
        kill: kill.clone(),
    };
    let app = Router::new().fallback(dispatch).with_state(ctx);
    let shutdown = kill.clone().cancelled_owned();
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "mock kubo server failed");
        }
    });
    Server { kill, task }
}

/// A syntactically valid peer ID (base58 sha2-256 multihash) per port, so
/// several mocks in one test are told apart.
fn mock_peer_id(port: u16) -> String {
    let mut digest = [0x5au8; 32];
    digest[..2].copy_from_slice(&port.to_be_bytes());
    cid::multihash::Multihash::<64>::wrap(0x12, &digest)
        .ok()
        .and_then(|mh| Cid::new_v0(mh).ok())
        .map_or_else(
            || "QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN".to_string(),
            |c| c.to_string(),
        )
}

/// The spellings Kubo could hold a pin of `cid` under: v1, and v0 when the
/// CID has one.
fn spellings(cid: CidKey) -> Vec<Cid> {
    let mut all = vec![*cid.cid()];
    if let Some(v0) = cid
        .to_v0_string()
        .and_then(|s| Cid::try_from(s.as_str()).ok())
    {
        all.push(v0);
    }
    all
}

#[derive(Clone)]
struct Ctx {
    shared: Arc<Shared>,
    kill: CancellationToken,
}

impl Ctx {
    fn state(&self) -> MutexGuard<'_, MockState> {
        lock(&self.shared.state)
    }
}

/// A parsed request: the command and its query.
struct Req {
    endpoint: String,
    query: Vec<(String, String)>,
}

impl Req {
    fn args(&self) -> Vec<String> {
        self.query
            .iter()
            .filter(|(k, _)| k == "arg")
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A boolean option the way Go's `strconv.ParseBool` reads it.
    fn flag(&self, name: &str, default: bool) -> Result<bool, Refusal> {
        match self.query.iter().rev().find(|(k, _)| k == name) {
            None => Ok(default),
            Some((_, v)) => match v.as_str() {
                "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
                "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
                other => Err(refuse(
                    StatusCode::BAD_REQUEST,
                    1,
                    &format!(
                        "could not convert value {other:?} to type \"bool\" (for option \"-{name}\")"
                    ),
                )),
            },
        }
    }

    fn option(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn dispatch(State(ctx): State<Ctx>, method: Method, uri: Uri) -> Response {
    let Some(endpoint) = uri.path().strip_prefix("/api/v0/") else {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    let req = Req {
        endpoint: endpoint.trim_end_matches('/').to_string(),
        query: query_pairs(&uri),
    };
    let (latency, failure, down, garbage) = {
        let mut state = ctx.state();
        state.calls.push(MockCall {
            endpoint: req.endpoint.clone(),
            args: req.args(),
            query: req.query.clone(),
        });
        (
            state.latency,
            state.failures.pop_front(),
            state.down,
            state.garbage,
        )
    };
    if !latency.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(latency) => {}
            () = ctx.kill.cancelled() => return stopping(),
        }
    }
    if method != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "405 - Method Not Allowed\n");
    }
    if down {
        return kubo_error(StatusCode::SERVICE_UNAVAILABLE, 0, "mock kubo is down");
    }
    if let Some((status, message)) = failure {
        return kubo_error(status, 0, &message);
    }
    if garbage {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            Bytes::from_static(b"\x00\x9f<html>definitely {not json\n"),
        )
            .into_response();
    }
    let result = match req.endpoint.as_str() {
        "id" => Ok(id(&ctx)),
        "pin/add" => pin_add(&ctx, &req).await,
        "pin/rm" => pin_rm(&ctx, &req),
        "pin/ls" => pin_ls(&ctx, &req),
        "pin/update" => pin_update(&ctx, &req),
        "repo/stat" => repo_stat(&ctx, &req),
        "repo/gc" => Ok(repo_gc(&ctx)),
        "swarm/connect" => swarm_connect(&ctx, &req),
        "block/stat" => block_stat(&ctx, &req),
        _ => Ok(text(StatusCode::NOT_FOUND, "404 page not found\n")),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    let Some(q) = uri.query() else {
        return Vec::new();
    };
    reqwest::Url::parse(&format!("http://mock/?{q}"))
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn stopping() -> Response {
    kubo_error(StatusCode::SERVICE_UNAVAILABLE, 0, "mock kubo is stopping")
}

/// A request the mock turns down, answered as Kubo's error object.
struct Refusal {
    status: StatusCode,
    code: u32,
    message: String,
}

fn refuse(status: StatusCode, code: u32, message: &str) -> Refusal {
    Refusal {
        status,
        code,
        message: message.to_string(),
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        kubo_error(self.status, self.code, &self.message)
    }
}

/// Kubo's error answer: `{"Message":…,"Code":…,"Type":"error"}`.
fn kubo_error(status: StatusCode, code: u32, message: &str) -> Response {
    json_response(
        status,
        &json!({"Message": message, "Code": code, "Type": "error"}),
    )
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut body = value.to_string();
    body.push('\n'); // Go's json.Encoder ends every value with a newline
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn json_ok(value: &serde_json::Value) -> Response {
    json_response(StatusCode::OK, value)
}

fn line(value: &serde_json::Value) -> Bytes {
    let mut s = value.to_string();
    s.push('\n');
    Bytes::from(s)
}

/// A streamed (channel) answer, headers as go-ipfs-cmds sets them. Ends
/// with an error, breaking the connection, when the mock is stopped.
fn streamed<S>(ctx: &Ctx, lines: S) -> Response
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    let body = Body::from_stream(killable(lines, ctx.kill.clone()));
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert("X-Chunked-Output", HeaderValue::from_static("1"));
    h.insert(header::TRAILER, HeaderValue::from_static("X-Stream-Error"));
    resp
}

fn killable<S>(lines: S, kill: CancellationToken) -> impl Stream<Item = io::Result<Bytes>> + Send
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    futures::stream::unfold(
        (Box::pin(lines), kill, false),
        |(mut lines, kill, over)| async move {
            if over {
                return None;
            }
            tokio::select! {
                biased;
                () = kill.cancelled() => {
                    Some((Err(io::Error::other("mock kubo stopped")), (lines, kill, true)))
                }
                item = lines.next() => item.map(|b| (Ok(b), (lines, kill, false))),
            }
        },
    )
}

fn required_cid(req: &Req, name: &str) -> Result<Cid, Refusal> {
    let Some(arg) = req.args().into_iter().next() else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            1,
            &format!("argument {name:?} is required"),
        ));
    };
    parse_cid(&arg)
}

fn parse_cid(arg: &str) -> Result<Cid, Refusal> {
    let raw = arg.strip_prefix("/ipfs/").unwrap_or(arg);
    Cid::try_from(raw).map_err(|e| {
        refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            0,
            &format!("invalid path {arg:?}: {e}"),
        )
    })
}

fn id(ctx: &Ctx) -> Response {
    let peer = ctx.state().peer_id.clone();
    let port = ctx.shared.addr.port();
    json_ok(&json!({
        "ID": peer,
        "PublicKey": "CAESIMockMockMockMockMockMockMockMockMockMockMo=",
        "Addresses": [format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}")],
        "AgentVersion": "kubo/0.39.0/pinfleet-mock",
        "Protocols": ["/ipfs/bitswap/1.2.0", "/ipfs/id/1.0.0", "/ipfs/kad/1.0.0"],
    }))
}

enum AddPlan {
    Now,
    Never,
    Slow(u64, Duration),
    Midstream(String),
}

async fn pin_add(ctx: &Ctx, req: &Req) -> Result<Response, Refusal> {
    let cid = required_cid(req, "ipfs-path")?;
    let recursive = req.flag("recursive", true)?;
    let progress = req.flag("progress", false)?;
    let key = CidKey::from_cid(cid)
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, 0, &e.to_string()))?;
    let (plan, heartbeat) = {
        let state = ctx.state();
        let plan = if state.never.contains(&key) {
            AddPlan::Never
        } else if let Some(&(steps, every)) = state.slow.get(&key) {
            AddPlan::Slow(steps, every)
        } else if let Some(message) = state.midstream.get(&key) {
            AddPlan::Midstream(message.clone())
        } else {
            AddPlan::Now
        };
        (plan, state.heartbeat)
    };
    let kind = if recursive {
        PinKind::Recursive
    } else {
        PinKind::Direct
    };
    let done = line(&json!({"Pins": [cid.to_string()]}));
    match plan {
        AddPlan::Now => {
            record_pin(ctx, cid, kind)?;
            if progress {
                Ok(streamed(ctx, futures::stream::iter([done])))
            } else {
                Ok(json_ok(&json!({"Pins": [cid.to_string()]})))
            }
        }
        AddPlan::Never if progress => {
            let beats =
                tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(heartbeat))
                    .map(|_| Bytes::from_static(b"{}\n"));
            Ok(streamed(ctx, beats))
        }
        AddPlan::Never => {
            // Kubo sends nothing, not even headers, until the pin is done.
            ctx.kill.cancelled().await;
            Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                0,
                "mock kubo is stopping",
            ))
        }
        AddPlan::Slow(steps, every) if progress => {
            let ctx2 = ctx.clone();
            let steps = futures::stream::unfold(1u64, move |i| async move {
                if i > steps {
                    return None;
                }
                tokio::time::sleep(every).await;
                let l = line(&json!({"Progress": i, "Bytes": i * BYTES_PER_NODE}));
                Some((l, i + 1))
            });
            let finish = futures::stream::once(async move {
                match record_pin(&ctx2, cid, kind) {
                    Ok(()) => done,
                    Err(_) => line(&json!({
                        "Message": format!("{cid} already pinned recursively"),
                        "Code": 0,
                        "Type": "error",
                    })),
                }
            });
            Ok(streamed(ctx, steps.chain(finish)))
        }
        AddPlan::Slow(steps, every) => {
            let total = every.saturating_mul(u32::try_from(steps).unwrap_or(u32::MAX));
            tokio::select! {
                () = tokio::time::sleep(total) => {}
                () = ctx.kill.cancelled() => return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, 0, "mock kubo is stopping")),
            }
            record_pin(ctx, cid, kind)?;
            Ok(json_ok(&json!({"Pins": [cid.to_string()]})))
        }
        AddPlan::Midstream(message) => {
            let lines = [
                line(&json!({"Progress": 1, "Bytes": BYTES_PER_NODE})),
                line(&json!({"Message": message, "Code": 0, "Type": "error"})),
            ];
            Ok(streamed(ctx, futures::stream::iter(lines)))
        }
    }
}

fn record_pin(ctx: &Ctx, cid: Cid, kind: PinKind) -> Result<(), Refusal> {
    let mut state = ctx.state();
    match (state.pins.get(&cid), kind) {
        (Some(PinKind::Recursive), PinKind::Direct) => Err(refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            0,
            &format!("{cid} already pinned recursively"),
        )),
        _ => {
            state.pins.insert(cid, kind);
            state.collectable.remove(&cid);
            Ok(())
        }
    }
}

fn pin_rm(ctx: &Ctx, req: &Req) -> Result<Response, Refusal> {
    let recursive = req.flag("recursive", true)?;
    let args = req.args();
    if args.is_empty() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            1,
            "argument \"ipfs-path\" is required",
        ));
    }
    let cids = args
        .iter()
        .map(|a| parse_cid(a))
        .collect::<Result<Vec<_>, _>>()?;
    let mut state = ctx.state();
    let mut removed = Vec::new();
    for cid in cids {
        // boxo's pinner: a recursive pin needs recursive=true; a direct pin
        // goes either way; anything else is ErrNotPinned.
        match state.pins.get(&cid) {
            Some(PinKind::Recursive) if !recursive => {
                return Err(refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    0,
                    &format!("{cid} is pinned recursively"),
                ));
            }
            Some(PinKind::Recursive | PinKind::Direct) => {
                state.pins.remove(&cid);
                state.collectable.insert(cid);
                removed.push(cid.to_string());
            }
            Some(PinKind::Indirect) | None => {
                return Err(refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    0,
                    "not pinned or pinned indirectly",
                ));
            }
        }
    }
    Ok(json_ok(&json!({ "Pins": removed })))
}

fn pin_ls(ctx: &Ctx, req: &Req) -> Result<Response, Refusal> {
    let stream = req.flag("stream", false)?;
    let wanted = match req.option("type").unwrap_or("all") {
        "all" => None,
        t => Some(PinKind::parse(t).ok_or_else(|| {
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                0,
                &format!("invalid type '{t}', must be one of {{direct, indirect, recursive, all}}"),
            )
        })?),
    };
    let filter: Vec<Cid> = req
        .args()
        .iter()
        .map(|a| parse_cid(a))
        .collect::<Result<_, _>>()?;
    let listed: Vec<(String, PinKind)> = {
        let state = ctx.state();
        if filter.is_empty() {
            state
                .pins
                .iter()
                .filter(|(_, k)| wanted.is_none_or(|w| w == **k))
                .map(|(c, k)| (c.to_string(), *k))
                .collect()
        } else {
            let mut out = Vec::new();
            for (cid, arg) in filter.iter().zip(req.args()) {
                match state.pins.get(cid) {
                    Some(k) if wanted.is_none_or(|w| w == *k) => out.push((cid.to_string(), *k)),
                    _ => {
                        return Err(refuse(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            0,
                            &format!("path '{arg}' is not pinned"),
                        ));
                    }
                }
            }
            out
        }
    };
    if stream {
        let chunks = futures::stream::iter(listed).chunks(1024).map(|chunk| {
            let mut buf = Vec::with_capacity(chunk.len() * 80);
            for (cid, kind) in chunk {
                buf.extend_from_slice(&line(&json!({"Cid": cid, "Type": kind.as_str()})));
            }
            Bytes::from(buf)
        });
        Ok(streamed(ctx, chunks))
    } else {
        let keys: serde_json::Map<String, serde_json::Value> = listed
            .into_iter()
            .map(|(cid, kind)| (cid, json!({"Type": kind.as_str(), "Name": ""})))
            .collect();
        Ok(json_ok(&json!({ "Keys": keys })))
    }
}

fn pin_update(ctx: &Ctx, req: &Req) -> Result<Response, Refusal> {
    let unpin = req.flag("unpin", true)?;
    let args = req.args();
    let (from, to) = match args.as_slice() {
        [from, to] => (parse_cid(from)?, parse_cid(to)?),
        [_] => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                1,
                "argument \"to-path\" is required",
            ));
        }
        _ => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                1,
                "argument \"from-path\" is required",
            ));
        }
    };
    let mut state = ctx.state();
    if state.pins.get(&from) != Some(&PinKind::Recursive) {
        return Err(refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            0,
            "'from' cid was not recursively pinned already",
        ));
    }
    if unpin && from != to {
        state.pins.remove(&from);
        state.collectable.insert(from);
    }
    state.pins.insert(to, PinKind::Recursive);
    state.collectable.remove(&to);
    Ok(json_ok(
        &json!({"Pins": [from.to_string(), to.to_string()]}),
    ))
}

fn repo_stat(ctx: &Ctx, req: &Req) -> Result<Response, Refusal> {
    let size_only = req.flag("size-only", false)?;
    let state = ctx.state();
    // Kubo emits the whole Stat struct either way; size-only leaves the
    // counted fields zero.
    let (objects, path, version) = if size_only {
        (0, "", "")
    } else {
        (state.num_objects, "/mock/.ipfs", "fs-repo@16")
    };
    Ok(json_ok(&json!({
        "RepoSize": state.repo_size,
        "StorageMax": state.storage_max,
        "NumObjects": objects,
        "RepoPath": path,
        "Version": version,
    })))
}

fn repo_gc(ctx: &Ctx) -> Response {
    let removed: Vec<Cid> = std::mem::take(&mut ctx.state().collectable)
        .into_iter()
        .collect();
    let lines = removed
        .into_iter()
        .map(|c| line(&json!({"Key": {"/": c.to_string()}})));
    streamed(ctx, futures::stream::iter(lines))
}

fn swarm_connect(ctx: &Ctx, req: &Req) -> Result<Response, Refusal> {
    let args = req.args();
    if args.is_empty() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            1,
            "argument \"address\" is required",
        ));
    }
    let mut out = Vec::new();
    for addr in &args {
        if !addr.starts_with('/') {
            return Err(refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                0,
                &format!("failed to parse multiaddr {addr:?}: must begin with /"),
            ));
        }
        let peer = addr
            .rsplit_once("/p2p/")
            .map_or("unknown", |(_, p)| p)
            .to_string();
        out.push(format!("connect {peer} success"));
    }
    ctx.state().connected.extend(args);
    Ok(json_ok(&json!({ "Strings": out })))
}

fn block_stat(ctx: &Ctx, req: &Req) -> Result<Response, Refusal> {
    let cid = required_cid(req, "cid")?;
    let key = CidKey::from_cid(cid)
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, 0, &e.to_string()))?;
    let state = ctx.state();
    let size = state.block_sizes.get(&key).copied().or_else(|| {
        spellings(key)
            .iter()
            .any(|c| state.pins.contains_key(c))
            .then_some(DEFAULT_BLOCK_SIZE)
    });
    match size {
        Some(size) => Ok(json_ok(&json!({"Key": cid.to_string(), "Size": size}))),
        None => Err(refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            0,
            &format!("block was not found locally (offline): ipld: could not find {cid}"),
        )),
    }
}
