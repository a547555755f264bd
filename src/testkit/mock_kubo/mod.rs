//! A scripted stand-in for Kubo's RPC API, for tests and benchmarks only
//! (compiled with the `testkit` feature or in unit tests, never into the
//! default build). Production code must not use it.
//!
//! It answers the endpoints [`KuboClient`](crate::ipfs::KuboClient) calls
//! with Kubo's JSON shapes (see `ipfs/kubo/`), keeps pins the way Kubo does
//! (keyed by exact CID, so `Qm…` and `bafy…` spellings are distinct pins),
//! and has knobs for what real nodes do to you: latency, errors, downtime,
//! content that never arrives or arrives slowly, pins removed behind your
//! back, and undecodable answers. This file owns the handle, its knobs and
//! the server; `routes.rs` answers the requests.
//!
//! One gap: axum alone cannot send HTTP trailers, so a mid-stream failure
//! ([`MockKubo::fail_midstream`]) ends with Kubo's older in-band error object
//! rather than the `X-Stream-Error` trailer current Kubo sends.

mod add;
mod routes;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use cid::Cid;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ipfs::PinKind;
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
    /// Named links for `resolve`: (parent, name) → child.
    links: HashMap<(CidKey, String), Cid>,
    added: Vec<String>,
    /// Files `cat` and `files/stat` answer.
    files: HashMap<CidKey, bytes::Bytes>,
    /// Directories `ls` and `files/stat` answer: their entries in order.
    dirs: HashMap<CidKey, Vec<(String, Cid)>>,
    /// Blocks `block/get` answers, by CID.
    raw_blocks: HashMap<Cid, bytes::Bytes>,
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
            links: HashMap::new(),
            added: Vec::new(),
            files: HashMap::new(),
            dirs: HashMap::new(),
            raw_blocks: HashMap::new(),
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

    /// Makes `block/get` answer `data` for `cid`.
    pub fn put_raw_block(&self, cid: Cid, data: Vec<u8>) {
        self.state().raw_blocks.insert(cid, data.into());
    }

    /// Sets the size `block/stat` reports for `cid` (and makes it local).
    pub fn put_block(&self, cid: CidKey, size: u64) {
        self.state().block_sizes.insert(cid, size);
    }

    /// Adds a named link `parent/name → child` that `resolve` follows (a
    /// directory entry, without the blocks).
    pub fn put_link(&self, parent: CidKey, name: &str, child: Cid) {
        self.state().links.insert((parent, name.to_string()), child);
    }

    /// Makes `cid` a file of `bytes` for `files/stat` and `cat`.
    pub fn put_file(&self, cid: CidKey, bytes: Vec<u8>) {
        self.state().files.insert(cid, bytes.into());
    }

    /// Makes `cid` a directory of `entries` (name and CID, each a file or
    /// directory put here too) for `files/stat`, `ls` and paths through it.
    pub fn put_dir(&self, cid: CidKey, entries: Vec<(String, Cid)>) {
        let mut state = self.state();
        for (name, child) in &entries {
            state.links.insert((cid, name.clone()), *child);
        }
        state.dirs.insert(cid, entries);
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

    /// The roots `add` and `dag/import` produced, in order.
    pub fn added(&self) -> Vec<String> {
        self.state().added.clone()
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
    let app = Router::new().fallback(routes::dispatch).with_state(ctx);
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
