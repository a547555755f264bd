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

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

// `http_body::Body`, re-exported by axum: reqwest has no API for reading the
// HTTP trailers Kubo uses to report mid-stream errors, but its body type
// implements this trait, which yields them as a final frame.
use axum::body::HttpBody as _;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::io::StreamReader;

use super::{
    GcReport, IpfsBackend, IpfsError, IpfsId, PinKind, PinLsFilter, PinOpts, PinnedCid, RepoStat,
};
use crate::manifest::CidKey;

/// The trailer go-ipfs-cmds sets when a command fails after its output began.
const STREAM_ERROR_TRAILER: &str = "X-Stream-Error";
/// A single NDJSON line longer than this is not something Kubo sends.
const MAX_LINE: usize = 1 << 20;
/// Kubo's `StorageMax` when no limit is configured (Go's `math.MaxUint64`).
const NO_STORAGE_LIMIT: u64 = u64::MAX;

/// A client for one Kubo node's RPC API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct KuboClient {
    http: reqwest::Client,
    base: reqwest::Url,
    shown: String,
    call_timeout: Duration,
    stream_idle: Duration,
    gc_idle: Duration,
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
        let text = base_url.trim();
        let invalid = |reason: String| IpfsError::InvalidUrl {
            url: text.to_string(),
            reason,
        };
        let url_text = if text.starts_with('/') {
            multiaddr_to_url(text).map_err(invalid)?
        } else {
            text.to_string()
        };
        let mut base = reqwest::Url::parse(&url_text).map_err(|e| invalid(e.to_string()))?;
        match base.scheme() {
            "http" => {}
            "https" => {
                return Err(invalid(
                    "https is not supported (this build has no tls); \
                     reach kubo's api over a local http address"
                        .into(),
                ));
            }
            other => return Err(invalid(format!("unsupported scheme {other:?}, want http"))),
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
        let shown = base.as_str().trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
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
        let operation = self.call_operation(endpoint);
        let resp = self
            .post(endpoint, params)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.transport(&operation, e, timeout))?;
        let resp = self.check_status(resp).await?;
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.transport(&operation, e, timeout))?;
        decode(endpoint, &body)
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
                        what: format!("pin/add of {cid} confirmed other pins: {pins:?}"),
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
            if event.key.is_some() {
                report.removed += 1;
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
            let pinning = self.pin_streamed(cid, &opts, progress);
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

/// One `pin/ls?stream=true` line: `{"Cid":…,"Type":…}`; a `{"Keys":{…}}`
/// object when the server ignored `stream`; or an error object.
fn parse_ls_line(line: &[u8]) -> Result<Vec<PinnedCid>, IpfsError> {
    let out: PinLsLine = decode("pin/ls", line)?;
    if out.kind.as_deref() == Some("error")
        && let Some(message) = out.message
    {
        return Err(IpfsError::Aborted { message });
    }
    let one = |cid: &str, kind: &str| -> Result<PinnedCid, IpfsError> {
        let cid = CidKey::parse(cid).map_err(|e| IpfsError::Garbage {
            what: format!("pin/ls: {e}"),
        })?;
        let kind = PinKind::parse(kind).ok_or_else(|| IpfsError::Garbage {
            what: format!("pin/ls: unknown pin type {kind:?}"),
        })?;
        Ok(PinnedCid { cid, kind })
    };
    if let Some(keys) = out.keys {
        return keys.iter().map(|(cid, t)| one(cid, &t.kind)).collect();
    }
    match (out.cid, out.kind) {
        (Some(cid), Some(kind)) => Ok(vec![one(&cid, &kind)?]),
        _ => Err(IpfsError::Garbage {
            what: format!("pin/ls: a line without Cid and Type: {}", preview(line)),
        }),
    }
}

/// Reads an NDJSON body line by line (tokio-util's [`LinesCodec`], at most
/// [`MAX_LINE`] bytes a line), keeping the `X-Stream-Error` trailer.
struct LineReader {
    lines: FramedRead<StreamReader<BodyData, Bytes>, LinesCodec>,
}

enum LineError {
    Transport(reqwest::Error),
    TooLong,
    NotUtf8,
}

impl LineReader {
    fn new(resp: reqwest::Response) -> Self {
        let resp: axum::http::Response<reqwest::Body> = resp.into();
        let body = BodyData {
            body: resp.into_body(),
            trailer_error: None,
        };
        Self {
            lines: FramedRead::new(
                StreamReader::new(body),
                LinesCodec::new_with_max_length(MAX_LINE),
            ),
        }
    }

    /// The next line that is not blank, without its newline (and a `\r`
    /// before it); the last line needs no newline; `None` at the end.
    /// Cancel safe: bytes received are kept in the reader's buffer.
    async fn next_line(&mut self) -> Result<Option<String>, LineError> {
        while let Some(line) = self.lines.next().await {
            match line {
                Ok(line) if line.bytes().all(|b| b.is_ascii_whitespace()) => {}
                Ok(line) => return Ok(Some(line)),
                Err(LinesCodecError::MaxLineLengthExceeded) => return Err(LineError::TooLong),
                Err(LinesCodecError::Io(e)) => {
                    // The body's own errors come back as they went in (see
                    // `BodyData`); the codec's is invalid UTF-8.
                    return Err(
                        match e.into_inner().map(|i| i.downcast::<reqwest::Error>()) {
                            Some(Ok(e)) => LineError::Transport(*e),
                            _ => LineError::NotUtf8,
                        },
                    );
                }
            }
        }
        Ok(None)
    }

    /// The `X-Stream-Error` trailer's message, once the body has ended.
    fn take_trailer_error(&mut self) -> Option<String> {
        self.lines.get_mut().get_mut().trailer_error.take()
    }
}

/// The data frames of a response body as a byte stream for [`StreamReader`];
/// keeps the `X-Stream-Error` trailer, which reqwest's own byte stream drops.
struct BodyData {
    body: reqwest::Body,
    trailer_error: Option<String>,
}

impl futures::Stream for BodyData {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let frame = match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(std::io::Error::other(e)))),
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(data) => return Poll::Ready(Some(Ok(data))),
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers()
                        && let Some(v) = trailers.get(STREAM_ERROR_TRAILER)
                    {
                        self.trailer_error = Some(String::from_utf8_lossy(v.as_bytes()).into());
                    }
                }
            }
        }
    }
}

/// Kubo's error body (`cmds.Error`).
#[derive(Deserialize)]
struct KuboErrorBody {
    #[serde(rename = "Message")]
    message: String,
    #[serde(rename = "Code", default)]
    code: Option<u64>,
}

fn http_error(status: reqwest::StatusCode, body: &[u8]) -> IpfsError {
    let (message, code) = match serde_json::from_slice::<KuboErrorBody>(body) {
        Ok(e) => (e.message, e.code),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let message = if text.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("no message")
                    .to_lowercase()
            } else {
                truncate(text, 300)
            };
            (message, None)
        }
    };
    IpfsError::Http {
        status: status.as_u16(),
        code,
        message,
    }
}

/// Kubo's messages for "nothing to unpin" (boxo pinner `ErrNotPinned`, older
/// "not pinned"), and `pin update`'s "'from' cid was not recursively pinned".
fn says_not_pinned(e: &IpfsError) -> bool {
    match e {
        IpfsError::Http { message, .. } | IpfsError::Aborted { message } => {
            message.starts_with("not pinned") || message.contains("not recursively pinned")
        }
        _ => false,
    }
}

fn decode<T: DeserializeOwned>(endpoint: &str, body: &[u8]) -> Result<T, IpfsError> {
    serde_json::from_slice(body).map_err(|e| IpfsError::Garbage {
        what: format!("{endpoint}: {e} in {}", preview(body)),
    })
}

/// The start of a body, printable whatever its bytes.
fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(80)]);
    let mut shown = format!("{text:?}");
    if body.len() > 80 {
        shown.push('…');
    }
    shown
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut t: String = text.chars().take(max_chars).collect();
    t.push('…');
    t
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

#[derive(Deserialize)]
struct IdOut {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Addresses", default)]
    addresses: Option<Vec<String>>,
    #[serde(rename = "AgentVersion", default)]
    agent_version: Option<String>,
}

#[derive(Deserialize)]
struct PinsOut {
    #[serde(rename = "Pins", default)]
    _pins: Option<Vec<String>>,
}

/// A `pin/add?progress=true` line (`AddPinOutput`, fields omitted when
/// zero), or an error object.
#[derive(Deserialize)]
struct AddPinLine {
    #[serde(rename = "Pins", default)]
    pins: Option<Vec<String>>,
    #[serde(rename = "Progress", default)]
    progress: Option<u64>,
    #[serde(rename = "Bytes", default)]
    bytes: Option<u64>,
    #[serde(rename = "Message", default)]
    message: Option<String>,
    #[serde(rename = "Type", default)]
    kind: Option<String>,
}

impl AddPinLine {
    fn error_message(&self) -> Option<String> {
        error_object(self.kind.as_deref(), self.message.as_deref())
    }
}

#[derive(Deserialize)]
struct PinLsLine {
    #[serde(rename = "Cid", default)]
    cid: Option<String>,
    #[serde(rename = "Type", default)]
    kind: Option<String>,
    #[serde(rename = "Keys", default)]
    keys: Option<BTreeMap<String, PinLsType>>,
    #[serde(rename = "Message", default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct PinLsType {
    #[serde(rename = "Type")]
    kind: String,
}

/// A `repo/gc` line: `{"Key":{"/":"bafy…"}}`, `{"Error":"…"}` (with
/// `stream-errors`), or an error object.
#[derive(Deserialize)]
struct GcLine {
    #[serde(rename = "Key", default)]
    key: Option<serde_json::Value>,
    #[serde(rename = "Error", default)]
    error: Option<String>,
    #[serde(rename = "Message", default)]
    message: Option<String>,
    #[serde(rename = "Type", default)]
    kind: Option<String>,
}

impl GcLine {
    fn error_message(&self) -> Option<String> {
        self.error
            .clone()
            .filter(|e| !e.is_empty())
            .or_else(|| error_object(self.kind.as_deref(), self.message.as_deref()))
    }
}

fn error_object(kind: Option<&str>, message: Option<&str>) -> Option<String> {
    match (kind, message) {
        (Some("error"), Some(m)) => Some(m.to_string()),
        _ => None,
    }
}

#[derive(Deserialize)]
struct RepoStatOut {
    #[serde(rename = "RepoSize")]
    repo_size: u64,
    #[serde(rename = "StorageMax")]
    storage_max: u64,
}

#[derive(Deserialize)]
struct BlockStatOut {
    #[serde(rename = "Size")]
    size: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiaddrs_become_urls() {
        assert_eq!(
            multiaddr_to_url("/ip4/127.0.0.1/tcp/5001").unwrap(),
            "http://127.0.0.1:5001"
        );
        assert_eq!(
            multiaddr_to_url("/ip6/::1/tcp/5001/http").unwrap(),
            "http://[::1]:5001"
        );
        assert_eq!(
            multiaddr_to_url("/dns4/kubo/tcp/5001").unwrap(),
            "http://kubo:5001"
        );
        assert!(multiaddr_to_url("/ip4/127.0.0.1/udp/5001").is_err());
        assert!(multiaddr_to_url("/ip4/127.0.0.1/tcp/99999").is_err());
    }

    #[test]
    fn bad_addresses_are_refused_with_a_reason() {
        let t = Duration::from_secs(1);
        for (url, want) in [
            ("https://127.0.0.1:5001", "https is not supported"),
            ("ftp://127.0.0.1", "unsupported scheme"),
            ("http://127.0.0.1:5001/?x=1", "query"),
            ("not a url", "relative URL"),
        ] {
            let e = KuboClient::new(url, t).unwrap_err().to_string();
            assert!(e.contains(want), "{url}: {e}");
        }
        let c = KuboClient::new("http://127.0.0.1:5001/", t).unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:5001");
        assert_eq!(
            c.endpoint_url("pin/add", &[("arg", "x y")]).as_str(),
            "http://127.0.0.1:5001/api/v0/pin/add?arg=x+y"
        );
        let c = KuboClient::new("http://h:1/kubo", t).unwrap();
        assert_eq!(
            c.endpoint_url("id", &[]).as_str(),
            "http://h:1/kubo/api/v0/id"
        );
    }

    #[test]
    fn error_bodies_are_parsed_or_shown() {
        let e = http_error(
            reqwest::StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"Message":"not pinned or pinned indirectly","Code":0,"Type":"error"}"#,
        );
        assert_eq!(
            e.to_string(),
            "kubo answered 500: not pinned or pinned indirectly"
        );
        assert!(says_not_pinned(&e));
        let e = http_error(reqwest::StatusCode::NOT_FOUND, b"404 page not found\n");
        assert_eq!(e.to_string(), "kubo answered 404: 404 page not found");
        let e = http_error(reqwest::StatusCode::SERVICE_UNAVAILABLE, b"");
        assert_eq!(e.to_string(), "kubo answered 503: service unavailable");
    }

    #[test]
    fn ls_lines_in_every_shape() {
        let v0 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";
        let key = CidKey::parse(v0).unwrap();
        let one = parse_ls_line(format!(r#"{{"Cid":"{v0}","Type":"recursive"}}"#).as_bytes());
        assert_eq!(
            one.unwrap(),
            vec![PinnedCid {
                cid: key,
                kind: PinKind::Recursive
            }]
        );
        let through = format!(r#"{{"Cid":"{v0}","Type":"indirect through {key}"}}"#);
        assert_eq!(
            parse_ls_line(through.as_bytes()).unwrap()[0].kind,
            PinKind::Indirect
        );
        let keys = format!(r#"{{"Keys":{{"{v0}":{{"Type":"direct","Name":""}}}}}}"#);
        assert_eq!(
            parse_ls_line(keys.as_bytes()).unwrap()[0].kind,
            PinKind::Direct
        );
        let err = parse_ls_line(br#"{"Message":"boom","Code":0,"Type":"error"}"#).unwrap_err();
        assert!(matches!(err, IpfsError::Aborted { ref message } if message == "boom"));
        assert!(matches!(
            parse_ls_line(b"\xff\x00"),
            Err(IpfsError::Garbage { .. })
        ));
        assert!(matches!(
            parse_ls_line(br#"{"Cid":"nope","Type":"recursive"}"#),
            Err(IpfsError::Garbage { .. })
        ));
        assert!(matches!(
            parse_ls_line(format!(r#"{{"Cid":"{v0}","Type":"weird"}}"#).as_bytes()),
            Err(IpfsError::Garbage { .. })
        ));
    }

    #[test]
    fn heartbeats_carry_no_progress() {
        let beat: AddPinLine = decode("pin/add", b"{}").unwrap();
        assert_eq!(beat.error_message(), None);
        assert_eq!((beat.progress, beat.bytes, beat.pins), (None, None, None));
    }
}
