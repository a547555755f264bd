//! The one typed client of a peer's REST API (DESIGN §7): one method per
//! route, JSON decoded into the `wire` types, NDJSON streams read one line
//! at a time, and errors that carry the server's message and located
//! problems. Every CLI command and the controller talk to the cluster
//! through it.
//!
//! It knows URLs and shapes only: it must not decide what to apply (the
//! controller does) or how to print an answer (the CLI does).

mod content;
mod stream;

use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;

pub use content::{FileBody, IpfsContent};
pub use stream::{Lines, MAX_LINE_BYTES, RawStream};

use crate::manifest::PinSetId;
use crate::wire::{
    AddedOutput, Alert, ApplyReport, Bandwidth, BatchPinReport, Condition, ConditionsReport,
    ConnectGraph, ErrorBody, GlobalPinInfo, GlobalRepoGc, MonitorMetric, PatchDocument, PeerInfo,
    PinRecord, PinSetInfo, PinSetStatus, Problem, ReconcileAnswer, VersionInfo,
};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The extra CA file could not be used.
    #[error("invalid tls settings")]
    Tls(#[source] crate::tls::TlsError),
    /// Nothing answers at the URL.
    #[error("cannot reach pinfleet at {url}")]
    Unreachable {
        /// The base URL.
        url: String,
        /// The connection error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error.
    #[error("{message} (http {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
        /// Located problems (invalid manifest).
        errors: Vec<Problem>,
    },
    /// The request or its answer broke off.
    #[error("request to {url} failed")]
    Http {
        /// The URL asked.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// A stream answer broke off (or is not text).
    #[error("the answer from {url} broke off")]
    BrokenOff {
        /// The URL asked.
        url: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A stream answer ended with an error in its `X-Stream-Error` trailer:
    /// the server failed after it had sent some items.
    #[error("the answer from {url} failed halfway: {message}")]
    StreamFailed {
        /// The URL asked.
        url: String,
        /// The server's error.
        message: String,
    },
    /// No answer within the client's timeout (`--timeout`).
    #[error("no answer from {url} within {after:?} (--timeout)")]
    TimedOut {
        /// The URL asked.
        url: String,
        /// The timeout.
        after: std::time::Duration,
    },
    /// The answer is not what the route sends.
    #[error("invalid answer from {url}")]
    Decode {
        /// The URL asked.
        url: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A line of a stream answer is longer than [`MAX_LINE_BYTES`].
    #[error("invalid answer from {url}: a line is longer than {max} bytes")]
    LineTooLong {
        /// The URL asked.
        url: String,
        /// The limit.
        max: usize,
    },
    /// The cluster refused a PinSet write (409 without a report): the
    /// PinSet changed since the write was planned (or its staged chunks
    /// were lost). Nothing was applied; sending it again re-plans it.
    #[error("{message} (http 409)")]
    Conflict {
        /// The server's message.
        message: String,
    },
    /// The base URL is not usable.
    #[error("invalid pinfleet url {url:?}: {reason}")]
    BadUrl {
        /// What was given.
        url: String,
        /// Why it does not work.
        reason: String,
    },
}

impl ClientError {
    /// True when the cluster could not be reached, the exchange broke off,
    /// or the server said it is unavailable (502, 503, 504): worth a retry.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unreachable { .. }
            | Self::Http { .. }
            | Self::BrokenOff { .. }
            | Self::TimedOut { .. } => true,
            Self::Api { status, .. } => matches!(*status, 502..=504),
            _ => false,
        }
    }

    /// True when a PinSet write was refused because the PinSet changed
    /// since it was planned: nothing was applied, and sending it again
    /// plans it against what the cluster holds now.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }
}

/// Options of `PUT /pinsets/{ns}/{name}`.
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    /// Plan only.
    pub dry_run: bool,
    /// Lift the prune guard.
    pub force: bool,
    /// Largest fraction of the PinSet's pins one apply may release.
    pub max_prune_fraction: Option<f64>,
    /// Where the document came from (recorded with the revision).
    pub source: Option<String>,
    /// The revision's label (default: the server's digest of the body).
    pub revision: Option<String>,
}

/// Which pin statuses `GET /pins` (or `POST /pins/recover`) answers.
#[derive(Clone, Debug, Default)]
pub struct StatusQuery {
    /// `filter=`: comma-separated statuses (`pin_error`, `error`, `queued`, …).
    pub filter: Option<String>,
    /// `local=true`: the asked peer's own status only.
    pub local: bool,
    /// `cids=`: only these CIDs.
    pub cids: Vec<String>,
    /// `POST /pins/recover` first: retry every failed operation.
    pub recover: bool,
}

/// A client of one peer's REST API. Cheap to clone. `Debug` shows the base
/// URL without user-info.
#[derive(Clone)]
pub struct Client {
    base: Url,
    http: reqwest::Client,
    auth: Option<Auth>,
    timeout: Option<std::time::Duration>,
}

/// How a client proves who it is (`[api] basic_auth_credentials` users).
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Basic`.
    Basic {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// `Authorization: Bearer`, a token from `POST /token`.
    Bearer(String),
}

impl Auth {
    /// Reads `user:password` (the password may hold `:`).
    pub fn basic(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok(Self::Basic {
                user: user.to_owned(),
                password: password.to_owned(),
            }),
            _ => Err("expected USER:PASSWORD".into()),
        }
    }
}

/// Redacted: credentials never reach a log.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { user, .. } => write!(f, "Basic({user}, ..)"),
            Self::Bearer(_) => f.write_str("Bearer(..)"),
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &shown(&self.base))
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the API at `base_url` (`http://host:port`, optionally with
    /// a path prefix).
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Self::with_ca(base_url, None)
    }

    /// [`Client::new`], trusting the CA certificates in the PEM file
    /// `extra_ca` too (for an `https://` API with a private CA).
    pub fn with_ca(
        base_url: &str,
        extra_ca: Option<&std::path::Path>,
    ) -> Result<Self, ClientError> {
        let bad = |reason: String| ClientError::BadUrl {
            url: redact_text(base_url),
            reason,
        };
        let base = Url::parse(base_url).map_err(|e| bad(e.to_string()))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(bad("expected an http:// or https:// url".into()));
        }
        let http = crate::tls::client(extra_ca)
            .map_err(ClientError::Tls)?
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            base,
            http,
            auth: None,
            timeout: None,
        })
    }

    /// This client, sending `auth` with every request.
    pub fn with_auth(mut self, auth: Option<Auth>) -> Self {
        self.auth = auth;
        self
    }

    /// This client, giving up on each request (answer included) after
    /// `timeout`; `None` or zero: never.
    pub fn with_timeout(mut self, timeout: Option<std::time::Duration>) -> Self {
        self.timeout = timeout.filter(|t| !t.is_zero());
        self
    }

    /// `req` with this client's credentials and timeout: every request
    /// is built through here.
    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let req = match self.timeout {
            Some(t) => req.timeout(t),
            None => req,
        };
        match &self.auth {
            None => req,
            Some(Auth::Basic { user, password }) => req.basic_auth(user, Some(password)),
            Some(Auth::Bearer(token)) => req.bearer_auth(token),
        }
    }

    /// The base URL (with its user-info, if it has one).
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The base URL as it may be printed: without user-info.
    pub fn base_shown(&self) -> String {
        shown(&self.base)
    }

    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        url
    }

    fn transport_error(&self, url: &Url, source: reqwest::Error) -> ClientError {
        if let (true, Some(after)) = (source.is_timeout(), self.timeout) {
            return ClientError::TimedOut {
                url: shown(url),
                after,
            };
        }
        if source.is_connect() {
            ClientError::Unreachable {
                url: shown(&self.base),
                source,
            }
        } else {
            ClientError::Http {
                url: shown(url),
                source,
            }
        }
    }

    /// Sends a request; a JSON `body` goes with its content type.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut req = self
            .authorize(self.http.request(method, url.clone()))
            // Stream answers then end with their `X-Stream-Error` trailer.
            .header(reqwest::header::TE, "trailers");
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        req.send()
            .await
            .map_err(|source| self.transport_error(&url, source))
    }

    /// Turns an error answer into `ClientError::Api`; `accept` lists error
    /// statuses whose body the caller reads itself.
    async fn check(
        resp: reqwest::Response,
        accept: &[StatusCode],
    ) -> Result<reqwest::Response, ClientError> {
        let status = resp.status();
        if status.is_success() || accept.contains(&status) {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let (message, errors) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => (b.message, b.errors),
            Err(_) if text.trim().is_empty() => (
                status.canonical_reason().unwrap_or("error").to_lowercase(),
                Vec::new(),
            ),
            Err(_) => (text.trim().to_string(), Vec::new()),
        };
        Err(ClientError::Api {
            status: status.as_u16(),
            message,
            errors,
        })
    }

    /// Sends a request and checks its status; the answer and its status.
    async fn exchange(
        &self,
        method: Method,
        url: &Url,
        body: Option<Vec<u8>>,
        accept: &[StatusCode],
    ) -> Result<reqwest::Response, ClientError> {
        Self::check(self.send(method, url.clone(), body).await?, accept).await
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        accept: &[StatusCode],
    ) -> Result<T, ClientError> {
        let resp = self.exchange(method, &url, body, accept).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| self.transport_error(&url, source))?;
        decode(&url, &bytes)
    }

    /// A PinSet write (`PUT`, `PATCH`, `DELETE /pinsets/{ns}/{name}`): its
    /// report, also on 409 when the prune guard refused (an error body that
    /// carries the report, `refused` set). A 409 with a plain error body is
    /// a conflict.
    async fn pinset_write(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<ApplyReport, ClientError> {
        let resp = self
            .exchange(method, &url, body, &[StatusCode::CONFLICT])
            .await?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| self.transport_error(&url, source))?;
        if status == StatusCode::CONFLICT {
            if let Ok(r) = serde_json::from_slice::<ApplyReport>(&bytes)
                && r.refused.is_some()
            {
                return Ok(r);
            }
            if let Ok(e) = serde_json::from_slice::<ErrorBody>(&bytes) {
                return Err(ClientError::Conflict { message: e.message });
            }
        }
        decode(&url, &bytes)
    }

    /// A request whose success answer has no body worth reading.
    async fn no_content(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<(), ClientError> {
        self.exchange(method, &url, body, &[]).await.map(|_| ())
    }

    async fn lines<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
    ) -> Result<Lines<T>, ClientError> {
        let resp = self.exchange(method, &url, None, &[]).await?;
        Ok(Lines::new(shown(&url), resp))
    }

    /// `POST /token[?role=&ttl=&user=]`: a token for the caller (or, for an
    /// admin, for `user`).
    pub async fn token(
        &self,
        role: Option<&str>,
        ttl: Option<&str>,
        user: Option<&str>,
    ) -> Result<String, ClientError> {
        #[derive(serde::Deserialize)]
        struct Answer {
            token: String,
        }
        let query: Vec<(&str, String)> = [("role", role), ("ttl", ttl), ("user", user)]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?.to_owned())))
            .collect();
        let url = self.url(&["token"], &query);
        let answer: Answer = self.json(Method::POST, url, None, &[]).await?;
        Ok(answer.token)
    }

    /// `GET /id`.
    pub async fn id(&self) -> Result<PeerInfo, ClientError> {
        self.json(Method::GET, self.url(&["id"], &[]), None, &[])
            .await
    }

    /// `GET /version`.
    pub async fn version(&self) -> Result<VersionInfo, ClientError> {
        self.json(Method::GET, self.url(&["version"], &[]), None, &[])
            .await
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<(), ClientError> {
        self.no_content(Method::GET, self.url(&["health"], &[]), None)
            .await
    }

    /// `GET /peers`, one peer per item.
    pub async fn peers(&self) -> Result<Lines<PeerInfo>, ClientError> {
        self.lines(Method::GET, self.url(&["peers"], &[])).await
    }

    /// `GET /followers`: the followers the peer knows of.
    pub async fn followers(&self) -> Result<Vec<crate::wire::FollowerInfo>, ClientError> {
        self.json(Method::GET, self.url(&["followers"], &[]), None, &[])
            .await
    }

    /// `DELETE /peers/{peer}`.
    pub async fn remove_peer(&self, peer: &str) -> Result<(), ClientError> {
        self.no_content(Method::DELETE, self.url(&["peers", peer], &[]), None)
            .await
    }

    /// `POST /pins/{cid}` with IPFS Cluster query options (`name`,
    /// `replication-min`, `meta-<key>`, …).
    pub async fn pin<K: AsRef<str>>(
        &self,
        cid: &str,
        options: &[(K, String)],
    ) -> Result<PinRecord, ClientError> {
        let query: Vec<(&str, String)> = options
            .iter()
            .map(|(k, v)| (k.as_ref(), v.clone()))
            .collect();
        self.json(Method::POST, pin_url(self, cid, &query), None, &[])
            .await
    }

    /// `POST /pins/batch` with an NDJSON body sent as it is produced: the
    /// whole stream is one request, so the cluster writes it as one
    /// atomic revision (`state import`).
    pub async fn pin_batch_stream(
        &self,
        ndjson: reqwest::Body,
    ) -> Result<BatchPinReport, ClientError> {
        let url = self.url(&["pins", "batch"], &[]);
        let resp = self
            .authorize(self.http.post(url.clone()))
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .body(ndjson)
            .send()
            .await
            .map_err(|source| self.transport_error(&url, source))?;
        let resp = Self::check(resp, &[]).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| self.transport_error(&url, source))?;
        decode(&url, &bytes)
    }

    /// `DELETE /pins/{cid}[?force=true]`: releases owner `api`; with
    /// `force` (admin) every owner, PinSets included.
    pub async fn unpin(&self, cid: &str, force: bool) -> Result<PinRecord, ClientError> {
        let query = if force {
            vec![("force", "true".to_string())]
        } else {
            Vec::new()
        };
        self.json(Method::DELETE, pin_url(self, cid, &query), None, &[])
            .await
    }

    /// `GET /allocations?filter=`, one pin per item.
    pub async fn allocations(&self, filter: Option<&str>) -> Result<Lines<PinRecord>, ClientError> {
        let query: Vec<(&str, String)> = filter
            .map(|f| ("filter", f.to_string()))
            .into_iter()
            .collect();
        self.lines(Method::GET, self.url(&["allocations"], &query))
            .await
    }

    /// `GET /allocations/{cid}`.
    pub async fn allocation(&self, cid: &str) -> Result<PinRecord, ClientError> {
        self.json(Method::GET, self.url(&["allocations", cid], &[]), None, &[])
            .await
    }

    /// `GET /pinsets`: every recorded PinSet (an empty collection may be 204).
    pub async fn pinsets(&self) -> Result<Vec<PinSetInfo>, ClientError> {
        let url = self.url(&["pinsets"], &[]);
        let resp = self.exchange(Method::GET, &url, None, &[]).await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(Vec::new());
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| self.transport_error(&url, source))?;
        decode(&url, &bytes)
    }

    /// `GET /pinsets/{ns}/{name}`: the PinSet's record, `None` when the
    /// cluster has none.
    pub async fn pinset(&self, id: &PinSetId) -> Result<Option<PinSetInfo>, ClientError> {
        let url = self.url(&["pinsets", &id.namespace, &id.name], &[]);
        match self.json(Method::GET, url, None, &[]).await {
            Ok(info) => Ok(Some(info)),
            Err(ClientError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PUT /pinsets/{ns}/{name}` with a PinSet document (JSON). A prune
    /// guard refusal (409) is a report with `refused` set, not an error; a
    /// concurrent change of the PinSet is [`ClientError::Conflict`].
    pub async fn put_pinset(
        &self,
        id: &PinSetId,
        document: Vec<u8>,
        opts: &ApplyOptions,
    ) -> Result<ApplyReport, ClientError> {
        let mut query = vec![];
        if opts.dry_run {
            query.push(("dryRun", "true".to_string()));
        }
        if opts.force {
            query.push(("force", "true".to_string()));
        }
        if let Some(f) = opts.max_prune_fraction {
            query.push(("maxPruneFraction", f.to_string()));
        }
        if let Some(s) = &opts.source {
            query.push(("source", s.clone()));
        }
        if let Some(r) = &opts.revision {
            query.push(("revision", r.clone()));
        }
        let url = self.url(&["pinsets", &id.namespace, &id.name], &query);
        self.pinset_write(Method::PUT, url, Some(document)).await
    }

    /// `PATCH /pinsets/{ns}/{name}`: only the pins that changed since
    /// `document.base_revision`. `None` when the cluster does not hold that
    /// revision (412): send the whole PinSet instead. A prune guard refusal
    /// (409) is a report with `refused` set; a concurrent change of the
    /// PinSet is [`ClientError::Conflict`].
    pub async fn patch_pinset(
        &self,
        id: &PinSetId,
        document: &PatchDocument,
        force: bool,
        source: &str,
    ) -> Result<Option<ApplyReport>, ClientError> {
        let mut query = vec![("source", source.to_string())];
        if force {
            query.push(("force", "true".to_string()));
        }
        let url = self.url(&["pinsets", &id.namespace, &id.name], &query);
        let body = serde_json::to_vec(document).map_err(|source| ClientError::Decode {
            url: shown(&url),
            source,
        })?;
        match self.pinset_write(Method::PATCH, url, Some(body)).await {
            Ok(r) => Ok(Some(r)),
            Err(ClientError::Api { status: 412, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `DELETE /pinsets/{ns}/{name}`: releases the PinSet's pins and forgets
    /// it. A prune guard refusal (409) is a report with `refused` set; a
    /// concurrent change of the PinSet is [`ClientError::Conflict`].
    pub async fn delete_pinset(
        &self,
        id: &PinSetId,
        force: bool,
        dry_run: bool,
    ) -> Result<ApplyReport, ClientError> {
        let mut query = vec![];
        if dry_run {
            query.push(("dryRun", "true".to_string()));
        }
        if force {
            query.push(("force", "true".to_string()));
        }
        let url = self.url(&["pinsets", &id.namespace, &id.name], &query);
        self.pinset_write(Method::DELETE, url, None).await
    }

    /// `PUT /pinsets/{ns}/{name}/conditions`: records the conditions a
    /// controller computed for a PinSet.
    pub async fn put_conditions(
        &self,
        id: &PinSetId,
        source: &str,
        revision: Option<&str>,
        conditions: &[Condition],
        reconcile: Option<&crate::state::ReconcileEntry>,
    ) -> Result<(), ClientError> {
        let url = self.url(&["pinsets", &id.namespace, &id.name, "conditions"], &[]);
        let report = ConditionsReport {
            source: source.to_string(),
            revision: revision.map(str::to_string),
            conditions: conditions.to_vec(),
            reconcile: reconcile.cloned(),
        };
        let body = serde_json::to_vec(&report).map_err(|source| ClientError::Decode {
            url: shown(&url),
            source,
        })?;
        self.no_content(Method::PUT, url, Some(body)).await
    }

    /// `GET /pinsets/{ns}/{name}/status`.
    pub async fn pinset_status(&self, id: &PinSetId) -> Result<PinSetStatus, ClientError> {
        let url = self.url(&["pinsets", &id.namespace, &id.name, "status"], &[]);
        self.json(Method::GET, url, None, &[]).await
    }

    /// `POST /pinsets/{ns}/{name}/reconcile`; with `wait`, the answer comes
    /// when the reconcile is done (or the server's `timeout` passed: 504).
    pub async fn reconcile(
        &self,
        id: &PinSetId,
        wait: Option<std::time::Duration>,
    ) -> Result<ReconcileAnswer, ClientError> {
        let query = match wait {
            Some(t) => vec![
                ("wait", "true".to_string()),
                ("timeout", format!("{}ms", t.as_millis())),
            ],
            None => Vec::new(),
        };
        let url = self.url(&["pinsets", &id.namespace, &id.name, "reconcile"], &query);
        self.json(Method::POST, url, None, &[]).await
    }

    /// `GET /pins?filter=&local=` (or `POST /pins/recover` when `recover`):
    /// every pin's status, as raw NDJSON chunks (`--json` passes them on
    /// untouched).
    pub async fn statuses_raw(&self, query: &StatusQuery) -> Result<RawStream, ClientError> {
        let (method, url) = self.status_request(query);
        let resp = self.exchange(method, &url, None, &[]).await?;
        Ok(RawStream::new(shown(&url), resp))
    }

    /// `GET /pins?filter=&local=` (or `POST /pins/recover` when `recover`):
    /// every pin's status, one `GlobalPinInfo` per item.
    pub async fn statuses(&self, query: &StatusQuery) -> Result<Lines<GlobalPinInfo>, ClientError> {
        let (method, url) = self.status_request(query);
        self.lines(method, url).await
    }

    fn status_request(&self, query: &StatusQuery) -> (Method, Url) {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(f) = &query.filter {
            q.push(("filter", f.clone()));
        }
        if query.local {
            q.push(("local", "true".to_string()));
        }
        if !query.cids.is_empty() {
            q.push(("cids", query.cids.join(",")));
        }
        if query.recover {
            (Method::POST, self.url(&["pins", "recover"], &q))
        } else {
            (Method::GET, self.url(&["pins"], &q))
        }
    }

    /// `GET /pins/{cid}`: one pin's status on every member; the CID is
    /// echoed as written.
    pub async fn status(&self, cid: &str) -> Result<GlobalPinInfo, ClientError> {
        self.json(Method::GET, self.url(&["pins", cid], &[]), None, &[])
            .await
    }

    /// `POST /pins/{cid}/recover`: retries the CID's failed operations on
    /// every member, then answers its status.
    pub async fn recover(&self, cid: &str) -> Result<GlobalPinInfo, ClientError> {
        let url = self.url(&["pins", cid, "recover"], &[]);
        self.json(Method::POST, url, None, &[]).await
    }

    /// `POST /add` with a multipart `upload`; the added entries (NDJSON),
    /// root last.
    pub async fn add(
        &self,
        upload: crate::multipart::Upload,
        query: &[(&str, String)],
    ) -> Result<Vec<AddedOutput>, ClientError> {
        let url = self.url(&["add"], query);
        let resp = self
            .authorize(self.http.post(url.clone()))
            .header(reqwest::header::TE, "trailers")
            .header(reqwest::header::CONTENT_TYPE, upload.content_type())
            .header(reqwest::header::CONTENT_LENGTH, upload.content_length())
            .body(upload.into_body())
            .send()
            .await
            .map_err(|source| self.transport_error(&url, source))?;
        let resp = Self::check(resp, &[]).await?;
        let mut lines = Lines::new(shown(&url), resp);
        let mut added = Vec::new();
        while let Some(entry) = lines.next().await {
            added.push(entry?);
        }
        Ok(added)
    }

    /// `GET /monitor/metrics`: the names of the metrics the peer holds.
    pub async fn metric_names(&self) -> Result<Vec<String>, ClientError> {
        let url = self.url(&["monitor", "metrics"], &[]);
        self.json(Method::GET, url, None, &[]).await
    }

    /// `GET /monitor/metrics/{name}`: the latest metric `name` of every peer.
    pub async fn metrics(&self, name: &str) -> Result<Vec<MonitorMetric>, ClientError> {
        let url = self.url(&["monitor", "metrics", name], &[]);
        self.json(Method::GET, url, None, &[]).await
    }

    /// `GET /health/graph`: who is connected to whom.
    pub async fn health_graph(&self) -> Result<ConnectGraph, ClientError> {
        let url = self.url(&["health", "graph"], &[]);
        self.json(Method::GET, url, None, &[]).await
    }

    /// `GET /health/alerts`: members whose metrics expired.
    pub async fn alerts(&self) -> Result<Vec<Alert>, ClientError> {
        let url = self.url(&["health", "alerts"], &[]);
        self.json(Method::GET, url, None, &[]).await
    }

    /// `GET /health/bandwidth`: libp2p bandwidth by protocol.
    pub async fn bandwidth(
        &self,
    ) -> Result<std::collections::BTreeMap<String, Bandwidth>, ClientError> {
        let url = self.url(&["health", "bandwidth"], &[]);
        self.json(Method::GET, url, None, &[]).await
    }

    /// `POST /ipfs/gc[?local=true]`: runs the IPFS nodes' garbage
    /// collection (every peer's, or only the asked one's).
    pub async fn ipfs_gc(&self, local: bool) -> Result<GlobalRepoGc, ClientError> {
        let query = if local {
            vec![("local", "true".to_string())]
        } else {
            Vec::new()
        };
        let url = self.url(&["ipfs", "gc"], &query);
        self.json(Method::POST, url, None, &[]).await
    }

    /// `GET /state/export` as raw NDJSON chunks (empty for an empty state).
    pub async fn export(&self) -> Result<RawStream, ClientError> {
        let url = self.url(&["state", "export"], &[]);
        let resp = self.exchange(Method::GET, &url, None, &[]).await?;
        Ok(RawStream::new(shown(&url), resp))
    }
}

/// `/pins/{cid}`, or for an IPFS path (`/ipfs/CID/a/b`, `/ipns/NAME`,
/// `/ipld/…`) `/pins/ipfs/CID/a/b`: each path segment its own.
fn pin_url(client: &Client, cid: &str, query: &[(&str, String)]) -> Url {
    let mut segments = vec!["pins"];
    if ["/ipfs/", "/ipns/", "/ipld/"]
        .iter()
        .any(|p| cid.starts_with(p))
    {
        segments.extend(cid.split('/').filter(|s| !s.is_empty()));
    } else {
        segments.push(cid);
    }
    client.url(&segments, query)
}

/// Decodes a JSON answer from `url`.
fn decode<T: DeserializeOwned>(url: &Url, bytes: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(bytes).map_err(|source| ClientError::Decode {
        url: shown(url),
        source,
    })
}

/// `url` as errors show it: without a user name or password (a `--host`
/// of `https://user:pass@host` authenticates, but is never printed so).
fn shown(url: &Url) -> String {
    let mut u = url.clone();
    // Fails only for URLs that cannot have user-info, which then have none.
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// `text`, a URL that did not parse, with anything before an `@` in its
/// authority replaced by `***`.
fn redact_text(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    match rest.rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => text.to_string(),
    }
}
