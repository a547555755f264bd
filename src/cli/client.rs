//! A small client of a peer's REST API (DESIGN §7): one typed method per
//! route, streams read line by line, errors carrying the server's message.

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use pinfleet::manifest::{PinSetId, PinSetStatus};
use pinfleet::wire::{
    AddedOutput, ApplyReport, ErrorBody, GlobalPinInfo, PeerInfo, PinRecord, PinSetInfo, Problem,
    ReconcileAnswer, VersionInfo,
};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
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
    /// The answer is not what the route sends.
    #[error("invalid answer from {url}")]
    Decode {
        /// The URL asked.
        url: String,
        /// Why.
        #[source]
        source: serde_json::Error,
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

/// A client of one peer's REST API.
#[derive(Clone, Debug)]
pub struct ApiClient {
    base: Url,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the API at `base_url` (`http://host:port`, optionally with
    /// a path prefix).
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        let bad = |reason: String| ClientError::BadUrl {
            url: base_url.to_string(),
            reason,
        };
        let base = Url::parse(base_url).map_err(|e| bad(e.to_string()))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(bad("expected an http:// url".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self { base, http })
    }

    /// The base URL.
    pub fn base(&self) -> &Url {
        &self.base
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

    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut req = self.http.request(method, url.clone());
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.map_err(|source| {
            if source.is_connect() {
                ClientError::Unreachable {
                    url: self.base.to_string(),
                    source,
                }
            } else {
                ClientError::Http {
                    url: url.to_string(),
                    source,
                }
            }
        })?;
        Ok(resp)
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

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        accept: &[StatusCode],
    ) -> Result<T, ClientError> {
        let resp = Self::check(self.send(method, url.clone(), body).await?, accept).await?;
        let bytes = resp.bytes().await.map_err(|source| ClientError::Http {
            url: url.to_string(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
            url: url.to_string(),
            source,
        })
    }

    async fn lines<T: DeserializeOwned>(&self, url: Url) -> Result<Lines<T>, ClientError> {
        let resp = Self::check(self.send(Method::GET, url.clone(), None).await?, &[]).await?;
        Ok(Lines::new(url.to_string(), resp))
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
        let resp = self
            .send(Method::GET, self.url(&["health"], &[]), None)
            .await?;
        Self::check(resp, &[]).await.map(|_| ())
    }

    /// `GET /peers`, one peer per item.
    pub async fn peers(&self) -> Result<Lines<PeerInfo>, ClientError> {
        self.lines(self.url(&["peers"], &[])).await
    }

    /// `DELETE /peers/{peer}`.
    pub async fn remove_peer(&self, peer: &str) -> Result<(), ClientError> {
        let resp = self
            .send(Method::DELETE, self.url(&["peers", peer], &[]), None)
            .await?;
        Self::check(resp, &[]).await.map(|_| ())
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
        self.json(Method::POST, self.url(&["pins", cid], &query), None, &[])
            .await
    }

    /// `DELETE /pins/{cid}`: releases owner `api`.
    pub async fn unpin(&self, cid: &str) -> Result<PinRecord, ClientError> {
        self.json(Method::DELETE, self.url(&["pins", cid], &[]), None, &[])
            .await
    }

    /// `GET /allocations?filter=`, one pin per item.
    pub async fn allocations(&self, filter: Option<&str>) -> Result<Lines<PinRecord>, ClientError> {
        let query: Vec<(&str, String)> = filter
            .map(|f| ("filter", f.to_string()))
            .into_iter()
            .collect();
        self.lines(self.url(&["allocations"], &query)).await
    }

    /// `GET /allocations/{cid}`.
    pub async fn allocation(&self, cid: &str) -> Result<PinRecord, ClientError> {
        self.json(Method::GET, self.url(&["allocations", cid], &[]), None, &[])
            .await
    }

    /// `GET /pinsets`.
    pub async fn pinsets(&self) -> Result<Vec<PinSetInfo>, ClientError> {
        self.json(Method::GET, self.url(&["pinsets"], &[]), None, &[])
            .await
    }

    /// `PUT /pinsets/{ns}/{name}` with a PinSet document. A prune guard
    /// refusal (409) is a report with `refused` set, not an error.
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
        let url = self.url(&["pinsets", &id.namespace, &id.name], &query);
        self.json(Method::PUT, url, Some(document), &[StatusCode::CONFLICT])
            .await
    }

    /// `DELETE /pinsets/{ns}/{name}`. A prune guard refusal (409) is a
    /// report with `refused` set.
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
        self.json(Method::DELETE, url, None, &[StatusCode::CONFLICT])
            .await
    }

    /// `GET /pins?filter=&local=` (or `POST /pins/recover` when `recover`):
    /// every pin's status, as raw NDJSON chunks (`--json` passes them on
    /// untouched).
    pub async fn statuses_raw(&self, query: &StatusQuery) -> Result<RawStream, ClientError> {
        let (method, url) = self.status_request(query);
        let resp = Self::check(self.send(method, url.clone(), None).await?, &[]).await?;
        Ok(RawStream::new(url.to_string(), resp))
    }

    /// `GET /pins?filter=&local=` (or `POST /pins/recover` when `recover`):
    /// every pin's status, one `GlobalPinInfo` per item.
    pub async fn statuses(&self, query: &StatusQuery) -> Result<Lines<GlobalPinInfo>, ClientError> {
        let (method, url) = self.status_request(query);
        let resp = Self::check(self.send(method, url.clone(), None).await?, &[]).await?;
        Ok(Lines::new(url.to_string(), resp))
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

    /// `GET /pinsets/{ns}/{name}/status`.
    pub async fn pinset_status(&self, id: &PinSetId) -> Result<PinSetStatus, ClientError> {
        let url = self.url(&["pinsets", &id.namespace, &id.name, "status"], &[]);
        self.json(Method::GET, url, None, &[]).await
    }

    /// `POST /add` with a multipart `form`; the added entries (NDJSON),
    /// root last.
    pub async fn add(
        &self,
        form: reqwest::multipart::Form,
        query: &[(&str, String)],
    ) -> Result<Vec<AddedOutput>, ClientError> {
        let url = self.url(&["add"], query);
        let resp = self
            .http
            .post(url.clone())
            .multipart(form)
            .send()
            .await
            .map_err(|source| {
                if source.is_connect() {
                    ClientError::Unreachable {
                        url: self.base.to_string(),
                        source,
                    }
                } else {
                    ClientError::Http {
                        url: url.to_string(),
                        source,
                    }
                }
            })?;
        let resp = Self::check(resp, &[]).await?;
        let text = resp.text().await.map_err(|source| ClientError::Http {
            url: url.to_string(),
            source,
        })?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).map_err(|source| ClientError::Decode {
                    url: url.to_string(),
                    source,
                })
            })
            .collect()
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

    /// `GET /state/export` as raw NDJSON chunks (empty for an empty state).
    pub async fn export(&self) -> Result<RawStream, ClientError> {
        let url = self.url(&["state", "export"], &[]);
        let resp = Self::check(self.send(Method::GET, url.clone(), None).await?, &[]).await?;
        Ok(RawStream::new(url.to_string(), resp))
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Raw body chunks of a stream answer.
pub struct RawStream {
    url: String,
    inner: ByteStream,
}

impl std::fmt::Debug for RawStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawStream").field("url", &self.url).finish()
    }
}

impl RawStream {
    fn new(url: String, resp: reqwest::Response) -> Self {
        let inner: ByteStream = if resp.status() == StatusCode::NO_CONTENT {
            Box::pin(futures::stream::empty())
        } else {
            Box::pin(resp.bytes_stream())
        };
        Self { url, inner }
    }

    /// The next chunk; an answer that breaks off is an error, never a
    /// silent end.
    pub async fn next(&mut self) -> Option<Result<Bytes, ClientError>> {
        let url = &self.url;
        self.inner.next().await.map(|r| {
            r.map_err(|source| ClientError::Http {
                url: url.clone(),
                source,
            })
        })
    }
}

/// The items of an NDJSON stream answer, decoded one line at a time.
pub struct Lines<T> {
    raw: RawStream,
    buf: Vec<u8>,
    done: bool,
    _item: std::marker::PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Lines<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines").field("url", &self.raw.url).finish()
    }
}

impl<T: DeserializeOwned> Lines<T> {
    fn new(url: String, resp: reqwest::Response) -> Self {
        Self {
            raw: RawStream::new(url, resp),
            buf: Vec::new(),
            done: false,
            _item: std::marker::PhantomData,
        }
    }

    /// The next item, `None` at the end.
    pub async fn next(&mut self) -> Option<Result<T, ClientError>> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(self.decode(&line));
            }
            if self.done {
                if self.buf.iter().all(u8::is_ascii_whitespace) {
                    return None;
                }
                let line = std::mem::take(&mut self.buf);
                return Some(self.decode(&line));
            }
            match self.raw.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    self.done = true;
                    self.buf.clear();
                    return Some(Err(e));
                }
                None => self.done = true,
            }
        }
    }

    fn decode(&self, line: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(line).map_err(|source| ClientError::Decode {
            url: self.raw.url.clone(),
            source,
        })
    }
}
