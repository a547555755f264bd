//! [`IpfsBackend`] over Kubo's HTTP RPC API (`POST /api/v0/...`).
//!
//! Shapes follow Kubo's command definitions (`core/commands/pin/pin.go`,
//! `repo.go`, `id.go`, `block.go`) and go-ipfs-cmds' HTTP transport:
//!
//! - Errors before any output: status 500 (400 for client errors) with the
//!   body `{"Message":…,"Code":…,"Type":"error"}`.
//! - Errors after streamed output has begun: status 200 and an
//!   `X-Stream-Error` HTTP trailer; older versions instead end the stream
//!   with the error object as a last line. Both are handled.
//! - `pin/add?progress=true` emits `{"Progress":nodes,"Bytes":n}` every 500ms
//!   *whether or not anything moved* (`{}` while nothing is fetched yet), then
//!   `{"Pins":[…]}`. So progress means the counters grew, not that a line
//!   arrived; the stall timer resets only on growth.
//!
//! CIDs are always sent in canonical v1 form. Kubo keys pins by the exact
//! CID bytes, so a `Qm…` pin made by hand and pinfleet's `bafy…` pin of the
//! same content are two pins; listing normalises both to one [`CidKey`].

//!
//! Layout: this file holds the client and its calls; `lines` reads NDJSON
//! bodies and their error trailer, `wire` holds Kubo's JSON shapes and
//! error bodies, `read` reads content back (`files/stat`, `ls`, `cat`).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

use super::{
    AddInput, AddOpts, AddedContent, GcReport, IpfsBackend, IpfsError, IpfsId, PinLsFilter,
    PinOpts, PinnedCid, RepoStat,
};
use crate::manifest::CidKey;

mod add;
mod depth;
#[cfg(test)]
mod fuzz_tests;
mod lines;
mod read;
#[cfg(test)]
mod tests;
mod wire;

use lines::{LineError, LineReader, MAX_LINE};
use wire::{
    AddPinLine, BlockStatOut, GcLine, IdOut, PinsOut, RepoStatOut, ResolveOut, SwarmPeersOut,
    decode, http_error, parse_ls_line, says_not_pinned,
};

/// Kubo's `StorageMax` when no limit is configured (Go's `math.MaxUint64`).
const NO_STORAGE_LIMIT: u64 = u64::MAX;

/// A client for one Kubo node's RPC API. Cheap to clone. `Debug` shows the
/// URL without user-info.
#[derive(Clone)]
pub struct KuboClient {
    http: reqwest::Client,
    base: reqwest::Url,
    shown: String,
    call_timeout: Duration,
    stream_idle: Duration,
    gc_idle: Duration,
}

impl std::fmt::Debug for KuboClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KuboClient")
            .field("url", &self.shown)
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

impl KuboClient {
    /// A client for the API at `base_url`: `http://127.0.0.1:5001`, or the
    /// multiaddr form Kubo's config uses (`/ip4/127.0.0.1/tcp/5001`).
    ///
    /// `call_timeout` bounds calls that answer in one piece (id, unpin, stat,
    /// connect) and connection set-up; it is also the longest silence
    /// tolerated inside a streamed listing. Pins are bounded by progress
    /// instead ([`PinOpts::progress_timeout`]).
    pub fn new(base_url: &str, call_timeout: Duration) -> Result<Self, IpfsError> {
        Self::with_ca(base_url, call_timeout, None)
    }

    /// [`KuboClient::new`], trusting the CA certificates in the PEM file
    /// `extra_ca` too (an `https://` API behind a proxy with a private CA).
    pub fn with_ca(
        base_url: &str,
        call_timeout: Duration,
        extra_ca: Option<&std::path::Path>,
    ) -> Result<Self, IpfsError> {
        let text = base_url.trim();
        let invalid = |reason: String| IpfsError::InvalidUrl {
            url: without_userinfo(text),
            reason,
        };
        let url_text = if text.starts_with('/') {
            multiaddr_to_url(text).map_err(invalid)?
        } else {
            text.to_string()
        };
        let mut base = reqwest::Url::parse(&url_text).map_err(|e| invalid(e.to_string()))?;
        match base.scheme() {
            "http" | "https" => {}
            other => {
                return Err(invalid(format!(
                    "unsupported scheme {other:?}, want http or https"
                )));
            }
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(invalid("no host".into()));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("must not have a query or fragment".into()));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        // Shown in messages and logs: without user-info (a password).
        let shown = {
            let mut u = base.clone();
            let _ = (u.set_username(""), u.set_password(None));
            u.as_str().trim_end_matches('/').to_string()
        };
        let http = crate::tls::client(extra_ca)
            .map_err(|e| invalid(e.to_string()))?
            .connect_timeout(call_timeout)
            // The RPC API is admin access to a local daemon: never via a proxy.
            .no_proxy()
            .build()
            .map_err(|e| invalid(format!("cannot build an http client: {e}")))?;
        Ok(Self {
            http,
            base,
            shown,
            call_timeout,
            stream_idle: call_timeout,
            gc_idle: Duration::from_secs(600),
        })
    }

    /// Sets the longest silence tolerated inside a streamed pin listing
    /// (default: the call timeout).
    pub fn with_stream_idle_timeout(mut self, idle: Duration) -> Self {
        self.stream_idle = idle;
        self
    }

    /// Sets the longest silence tolerated during garbage collection, whose
    /// mark phase reports nothing (default: 10 minutes).
    pub fn with_gc_idle_timeout(mut self, idle: Duration) -> Self {
        self.gc_idle = idle;
        self
    }

    /// The API base URL, as shown in messages (`http://127.0.0.1:5001`).
    pub fn base_url(&self) -> &str {
        &self.shown
    }

    fn endpoint_url(&self, endpoint: &str, params: &[(&str, &str)]) -> reqwest::Url {
        let mut url = self.base.clone();
        let path = format!("{}api/v0/{endpoint}", self.base.path());
        url.set_path(&path);
        if !params.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
        }
        url
    }

    fn post(&self, endpoint: &str, params: &[(&str, &str)]) -> reqwest::RequestBuilder {
        self.http
            .post(self.endpoint_url(endpoint, params))
            // Go's server sends trailers regardless; hyper-based servers
            // (the mock, proxies) only when the client says it reads them.
            .header(reqwest::header::TE, "trailers")
    }

    /// Maps a transport error; `waited` is the bound that expired, if any.
    fn transport(&self, operation: &str, err: reqwest::Error, waited: Duration) -> IpfsError {
        if err.is_connect() {
            IpfsError::Unreachable {
                url: self.shown.clone(),
                source: Box::new(err),
            }
        } else if err.is_timeout() {
            IpfsError::Timeout {
                operation: operation.to_string(),
                stalled_for: waited,
            }
        } else {
            IpfsError::Disconnected {
                url: self.shown.clone(),
                source: Box::new(err),
            }
        }
    }

    fn call_operation(&self, endpoint: &str) -> String {
        format!("{endpoint} request to kubo at {}", self.shown)
    }

    /// Turns a non-2xx answer into [`IpfsError::Http`], reading Kubo's body.
    async fn check_status(&self, resp: reqwest::Response) -> Result<reqwest::Response, IpfsError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = match tokio::time::timeout(self.call_timeout, resp.bytes()).await {
            Ok(Ok(body)) => body,
            _ => Bytes::new(),
        };
        Err(http_error(status, &body))
    }

    /// A call that answers with one JSON value.
    async fn call<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        params: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<T, IpfsError> {
        let body = self.call_bytes(endpoint, params, timeout).await?;
        decode(endpoint, &body)
    }

    /// A call's whole answer body, as Kubo sent it.
    async fn call_bytes(
        &self,
        endpoint: &str,
        params: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<bytes::Bytes, IpfsError> {
        let operation = self.call_operation(endpoint);
        let resp = self
            .post(endpoint, params)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.transport(&operation, e, timeout))?;
        let resp = self.check_status(resp).await?;
        resp.bytes()
            .await
            .map_err(|e| self.transport(&operation, e, timeout))
    }

    /// Starts a streamed call; the answer's headers must arrive by `deadline`.
    async fn open_stream(
        &self,
        endpoint: &str,
        params: &[(&str, &str)],
        operation: &str,
        deadline: Instant,
        bound: Duration,
    ) -> Result<LineReader, IpfsError> {
        let stalled = || IpfsError::Timeout {
            operation: operation.to_string(),
            stalled_for: bound,
        };
        let resp = timeout_at(deadline, self.post(endpoint, params).send())
            .await
            .map_err(|_| stalled())?
            .map_err(|e| self.transport(operation, e, bound))?;
        let resp = timeout_at(deadline, self.check_status(resp))
            .await
            .map_err(|_| stalled())??;
        Ok(LineReader::new(resp))
    }

    /// The next NDJSON line, or `None` at the end; `Aborted` when the stream
    /// ended with an error trailer.
    async fn next_line(
        &self,
        lines: &mut LineReader,
        endpoint: &str,
        operation: &str,
        deadline: Instant,
        bound: Duration,
    ) -> Result<Option<String>, IpfsError> {
        match timeout_at(deadline, lines.next_line()).await {
            Err(_) => Err(IpfsError::Timeout {
                operation: operation.to_string(),
                stalled_for: bound,
            }),
            Ok(Err(LineError::Transport(e))) => Err(self.transport(operation, e, bound)),
            Ok(Err(LineError::TooLong)) => Err(IpfsError::Garbage {
                what: format!("{endpoint}: a line longer than {MAX_LINE} bytes"),
            }),
            Ok(Err(LineError::NotUtf8)) => Err(IpfsError::Garbage {
                what: format!("{endpoint}: a line that is not UTF-8"),
            }),
            Ok(Ok(Some(line))) => Ok(Some(line)),
            Ok(Ok(None)) => match lines.take_trailer_error() {
                Some(message) => Err(IpfsError::Aborted { message }),
                None => Ok(None),
            },
        }
    }

    async fn pin_streamed(
        &self,
        cid: CidKey,
        opts: &PinOpts,
        progress: Option<mpsc::Sender<u64>>,
    ) -> Result<(), IpfsError> {
        let arg = cid.to_string();
        let operation = format!("pin of {cid}");
        let limit = opts.progress_timeout;
        let params = [
            ("arg", arg.as_str()),
            ("recursive", bool_str(opts.recursive)),
            ("progress", "true"),
        ];
        let mut deadline = Instant::now() + limit;
        let mut lines = self
            .open_stream("pin/add", &params, &operation, deadline, limit)
            .await?;
        let (mut nodes, mut bytes) = (0u64, 0u64);
        let mut confirmed = false;
        while let Some(line) = self
            .next_line(&mut lines, "pin/add", &operation, deadline, limit)
            .await?
        {
            let event: AddPinLine = decode("pin/add", line.as_bytes())?;
            if let Some(message) = event.error_message() {
                return Err(IpfsError::Aborted { message });
            }
            if let Some(pins) = event.pins {
                if !pins
                    .iter()
                    .any(|p| CidKey::parse(p).is_ok_and(|k| k == cid))
                {
                    return Err(IpfsError::Garbage {
                        what: format!(
                            "pin/add of {cid} confirmed other pins: {}",
                            wire::truncate(&format!("{pins:?}"), wire::MAX_MESSAGE_CHARS)
                        ),
                    });
                }
                confirmed = true;
                deadline = Instant::now() + limit;
                continue;
            }
            let (n, b) = (event.progress.unwrap_or(0), event.bytes.unwrap_or(0));
            if n > nodes || b > bytes {
                nodes = nodes.max(n);
                bytes = bytes.max(b);
                deadline = Instant::now() + limit;
                tracing::trace!(cid = %cid, nodes, bytes, "pin progress");
                if let Some(tx) = &progress {
                    // Cumulative counts: a dropped value is superseded by the next.
                    let _ = tx.try_send(nodes);
                }
            }
        }
        if confirmed {
            Ok(())
        } else {
            Err(IpfsError::Garbage {
                what: format!("pin/add of {cid} ended without confirming the pin"),
            })
        }
    }

    /// Best effort: connects to each origin so bitswap finds providers sooner.
    async fn connect_origins(&self, cid: CidKey, origins: &[String]) {
        let attempts = origins.iter().map(|addr| async move {
            if let Err(e) = self.swarm_connect_inner(addr).await {
                tracing::debug!(cid = %cid, origin = %addr, error = %e, "cannot connect to pin origin");
            }
        });
        futures::future::join_all(attempts).await;
    }

    async fn swarm_connect_inner(&self, addr: &str) -> Result<(), IpfsError> {
        let _: serde_json::Value = self
            .call("swarm/connect", &[("arg", addr)], self.call_timeout)
            .await?;
        Ok(())
    }

    async fn gc_streamed(&self) -> Result<GcReport, IpfsError> {
        let operation = format!("garbage collection on kubo at {}", self.shown);
        let limit = self.gc_idle;
        let mut lines = self
            .open_stream("repo/gc", &[], &operation, Instant::now() + limit, limit)
            .await?;
        let mut report = GcReport::default();
        while let Some(line) = self
            .next_line(
                &mut lines,
                "repo/gc",
                &operation,
                Instant::now() + limit,
                limit,
            )
            .await?
        {
            let event: GcLine = decode("repo/gc", line.as_bytes())?;
            if let Some(message) = event.error_message() {
                return Err(IpfsError::Aborted { message });
            }
            if let Some(key) = event.key {
                report.removed += 1;
                // `{"/": "bafk…"}`; anything else is counted, not named.
                if let Some(cid) = key.get("/").and_then(serde_json::Value::as_str) {
                    report.keys.push(cid.to_owned());
                }
            }
        }
        Ok(report)
    }

    async fn repo_stat_inner(&self) -> Result<RepoStat, IpfsError> {
        let out: RepoStatOut = self
            .call("repo/stat", &[("size-only", "true")], self.call_timeout)
            .await?;
        Ok(RepoStat {
            repo_size: out.repo_size,
            storage_max: (out.storage_max != NO_STORAGE_LIMIT).then_some(out.storage_max),
            // size-only skips counting: Kubo's zero here means "not counted".
            num_objects: None,
        })
    }
}

impl IpfsBackend for KuboClient {
    fn kind(&self) -> &'static str {
        "kubo"
    }

    fn can_add(&self) -> bool {
        true
    }

    fn add(
        &self,
        input: AddInput,
        opts: AddOpts,
    ) -> BoxFuture<'_, Result<AddedContent, IpfsError>> {
        Box::pin(self.add_input(input, opts))
    }

    fn swarm_peers(&self) -> BoxFuture<'_, Result<Vec<String>, IpfsError>> {
        Box::pin(async move {
            let out: SwarmPeersOut = self.call("swarm/peers", &[], self.call_timeout).await?;
            Ok(out
                .peers
                .unwrap_or_default()
                .into_iter()
                .map(|p| p.peer)
                .collect())
        })
    }

    fn id(&self) -> BoxFuture<'_, Result<IpfsId, IpfsError>> {
        Box::pin(async move {
            let out: IdOut = self.call("id", &[], self.call_timeout).await?;
            Ok(IpfsId {
                id: out.id,
                addresses: out.addresses.unwrap_or_default(),
                agent_version: out.agent_version.unwrap_or_default(),
            })
        })
    }

    fn pin(
        &self,
        cid: CidKey,
        opts: PinOpts,
        progress: Option<mpsc::Sender<u64>>,
    ) -> BoxFuture<'_, Result<(), IpfsError>> {
        Box::pin(async move {
            let pinning = async {
                if opts.recursive && opts.max_depth.is_some() {
                    self.pin_depth(cid, &opts, progress).await
                } else {
                    self.pin_streamed(cid, &opts, progress).await
                }
            };
            if opts.origins.is_empty() {
                return pinning.await;
            }
            // Connect while pinning, as IPFS Cluster does; stop caring about
            // the connects once the pin is done.
            let connecting = self.connect_origins(cid, &opts.origins);
            tokio::pin!(pinning, connecting);
            tokio::select! {
                result = &mut pinning => result,
                () = &mut connecting => pinning.await,
            }
        })
    }

    fn unpin(&self, cid: CidKey, recursive: bool) -> BoxFuture<'_, Result<(), IpfsError>> {
        Box::pin(async move {
            // A shard's blocks first: while its root is pinned, a failure
            // here is retried with the whole unpin.
            if recursive && self.was_depth_pin(&cid).await {
                self.unpin_depth_blocks(&cid).await?;
            }
            let arg = cid.to_string();
            let params = [("arg", arg.as_str()), ("recursive", bool_str(recursive))];
            let result: Result<PinsOut, _> = self.call("pin/rm", &params, self.call_timeout).await;
            match result {
                Ok(_) => Ok(()),
                Err(e) if says_not_pinned(&e) => Err(IpfsError::NotPinned { cid }),
                Err(e) => Err(e),
            }
        })
    }

    fn pin_ls(&self, filter: PinLsFilter) -> BoxStream<'static, Result<PinnedCid, IpfsError>> {
        let state = LsState::Start {
            client: self.clone(),
            filter,
        };
        Box::pin(futures::stream::unfold(state, LsState::step))
    }

    fn pin_update(
        &self,
        from: CidKey,
        to: CidKey,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(), IpfsError>> {
        Box::pin(async move {
            let (a, b) = (from.to_string(), to.to_string());
            let params = [("arg", a.as_str()), ("arg", b.as_str()), ("unpin", "true")];
            let result: Result<PinsOut, _> = self.call("pin/update", &params, timeout).await;
            match result {
                Ok(_) => Ok(()),
                Err(e) if says_not_pinned(&e) => Err(IpfsError::NotPinned { cid: from }),
                Err(e) => Err(e),
            }
        })
    }

    fn repo_stat(&self) -> BoxFuture<'_, Result<RepoStat, IpfsError>> {
        Box::pin(self.repo_stat_inner())
    }

    fn gc(&self) -> BoxFuture<'_, Result<GcReport, IpfsError>> {
        Box::pin(self.gc_streamed())
    }

    fn swarm_connect(&self, addr: String) -> BoxFuture<'_, Result<(), IpfsError>> {
        Box::pin(async move { self.swarm_connect_inner(&addr).await })
    }

    fn resolve(
        &self,
        path: crate::ipfs::path::IpfsPath,
    ) -> BoxFuture<'_, Result<CidKey, IpfsError>> {
        Box::pin(async move {
            let arg = path.to_string();
            let params = [("arg", arg.as_str()), ("recursive", "true")];
            let out: ResolveOut = match self.call("resolve", &params, self.call_timeout).await {
                Ok(out) => out,
                // Kubo refuses a path it cannot follow with 400 or 500 and
                // its reason ("no link named …").
                Err(IpfsError::Http {
                    status: 400 | 500,
                    message,
                    ..
                }) => {
                    return Err(IpfsError::Resolve {
                        path: arg,
                        reason: message,
                    });
                }
                Err(e) => return Err(e),
            };
            let resolved = out.path.strip_prefix("/ipfs/").unwrap_or(&out.path);
            CidKey::parse(resolved).map_err(|e| IpfsError::Resolve {
                path: arg.clone(),
                reason: format!("kubo resolved it to {}, not a cid: {e}", out.path),
            })
        })
    }

    fn block_stat(&self, cid: CidKey) -> BoxFuture<'_, Result<u64, IpfsError>> {
        Box::pin(async move {
            let arg = cid.to_string();
            // offline: a missing block is an answer, not a network search.
            let params = [("arg", arg.as_str()), ("offline", "true")];
            let result: Result<BlockStatOut, _> =
                self.call("block/stat", &params, self.call_timeout).await;
            match result {
                Ok(out) => Ok(out.size),
                Err(IpfsError::Http { message, .. })
                    if message.contains("not found") || message.contains("could not find") =>
                {
                    Err(IpfsError::NotFound { cid })
                }
                Err(e) => Err(e),
            }
        })
    }

    fn get(
        &self,
        path: crate::ipfs::path::IpfsPath,
    ) -> BoxFuture<'_, Result<crate::ipfs::content::Content, IpfsError>> {
        Box::pin(self.get_content(path))
    }

    fn cat(
        &self,
        cid: CidKey,
        offset: u64,
        len: u64,
    ) -> BoxStream<'static, Result<Bytes, IpfsError>> {
        self.cat_stream(cid, offset, len)
    }
}

/// The `pin/ls` stream, one step per item.
enum LsState {
    Start {
        client: KuboClient,
        filter: PinLsFilter,
    },
    Reading {
        client: KuboClient,
        lines: LineReader,
        queued: VecDeque<PinnedCid>,
    },
    Done,
}

impl LsState {
    const OPERATION: &'static str = "pin listing";

    async fn step(self) -> Option<(Result<PinnedCid, IpfsError>, LsState)> {
        let (client, mut lines, mut queued) = match self {
            LsState::Done => return None,
            LsState::Start { client, filter } => {
                let idle = client.stream_idle;
                let params = [("type", filter.as_str()), ("stream", "true")];
                let opened = client
                    .open_stream(
                        "pin/ls",
                        &params,
                        Self::OPERATION,
                        Instant::now() + idle,
                        idle,
                    )
                    .await;
                match opened {
                    Ok(lines) => (client, lines, VecDeque::new()),
                    Err(e) => return Some((Err(e), LsState::Done)),
                }
            }
            LsState::Reading {
                client,
                lines,
                queued,
            } => (client, lines, queued),
        };
        loop {
            if let Some(pin) = queued.pop_front() {
                let next = LsState::Reading {
                    client,
                    lines,
                    queued,
                };
                return Some((Ok(pin), next));
            }
            let idle = client.stream_idle;
            let line = client
                .next_line(
                    &mut lines,
                    "pin/ls",
                    Self::OPERATION,
                    Instant::now() + idle,
                    idle,
                )
                .await;
            match line.and_then(|l| l.map(|l| parse_ls_line(l.as_bytes())).transpose()) {
                Ok(None) => return None,
                Ok(Some(pins)) => queued.extend(pins),
                Err(e) => return Some((Err(e), LsState::Done)),
            }
        }
    }
}

fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// `/ip4/127.0.0.1/tcp/5001` (Kubo's `Addresses.API` form) to an http URL.
fn multiaddr_to_url(addr: &str) -> Result<String, String> {
    let parts: Vec<&str> = addr.trim_end_matches('/').split('/').skip(1).collect();
    let (host, port) = match parts.as_slice() {
        [
            "ip4" | "dns" | "dns4" | "dns6",
            host,
            "tcp",
            port,
            rest @ ..,
        ] if valid_tail(rest) => ((*host).to_string(), *port),
        ["ip6", host, "tcp", port, rest @ ..] if valid_tail(rest) => (format!("[{host}]"), *port),
        _ => {
            return Err(
                "unsupported multiaddr: want /ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>".into(),
            );
        }
    };
    let port: u16 = port.parse().map_err(|_| format!("invalid port {port:?}"))?;
    Ok(format!("http://{host}:{port}"))
}

fn valid_tail(rest: &[&str]) -> bool {
    matches!(rest, [] | ["http"])
}

/// `text` with anything before an `@` in a URL's authority replaced by
/// `***`, for errors about a URL that may not parse.
fn without_userinfo(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => text.to_string(),
    }
}
