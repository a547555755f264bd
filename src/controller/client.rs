//! The few REST calls the controller makes (DESIGN §7): apply (whole or
//! as a patch), delete and list PinSets.

use reqwest::{Method, StatusCode, Url};

use crate::manifest::PinSetId;
use crate::manifest::model::Condition;
use crate::wire::{ApplyReport, ErrorBody, PinSetInfo};

/// Why a call to the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers at the URL, or the request broke off.
    #[error("cannot reach pinfleet at {url}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error.
    #[error("{message} (http {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The server's message (and located problems, one per line).
        message: String,
    },
    /// The answer is not what the route sends.
    #[error("invalid answer from {url}: {reason}")]
    Decode {
        /// The URL asked.
        url: String,
        /// Why.
        reason: String,
    },
    /// The base URL is not usable.
    #[error("invalid pinfleet url {url:?}: {reason}")]
    BadUrl {
        /// What was given.
        url: String,
        /// Why.
        reason: String,
    },
}

impl ClientError {
    /// True when the cluster could not be reached or said it is unavailable.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Api { status, .. } => *status == 503 || *status == 502 || *status == 504,
            _ => false,
        }
    }
}

/// A minimal client of one peer's REST API.
#[derive(Clone, Debug)]
pub struct Client {
    base: Url,
    http: reqwest::Client,
}

impl Client {
    /// A client of the API at `base_url` (`http://host:port`).
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

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        accept: &[StatusCode],
    ) -> Result<T, ClientError> {
        let (_, bytes) = self.fetch(method, url.clone(), body, accept).await?;
        decode(&url, &bytes)
    }

    /// Sends a request; an answer that is neither a success nor in
    /// `accept` is `ClientError::Api`. The status and the whole body.
    async fn fetch(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        accept: &[StatusCode],
    ) -> Result<(StatusCode, bytes::Bytes), ClientError> {
        let mut req = self.http.request(method, url.clone());
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        let unreachable = |source| ClientError::Unreachable {
            url: url.to_string(),
            source,
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(unreachable)?;
        if !status.is_success() && !accept.contains(&status) {
            let message = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(b) => {
                    let mut m = b.message;
                    for p in b.errors {
                        m.push('\n');
                        m.push_str(&serde_json::to_string(&p).unwrap_or_default());
                    }
                    m
                }
                Err(_) => String::from_utf8_lossy(&bytes).trim().to_string(),
            };
            return Err(ClientError::Api {
                status: status.as_u16(),
                message,
            });
        }
        Ok((status, bytes))
    }

    /// `GET /pinsets`: every recorded PinSet (an empty collection may be 204).
    pub async fn pinsets(&self) -> Result<Vec<PinSetInfo>, ClientError> {
        let url = self.url(&["pinsets"], &[]);
        match self.fetch(Method::GET, url.clone(), None, &[]).await? {
            (StatusCode::NO_CONTENT, _) => Ok(Vec::new()),
            (_, bytes) => decode(&url, &bytes),
        }
    }

    /// `GET /pinsets/{ns}/{name}`: the PinSet's record, `None` when the
    /// cluster has none.
    pub async fn pinset(&self, id: &PinSetId) -> Result<Option<PinSetInfo>, ClientError> {
        let url = self.url(&["pinsets", &id.namespace, &id.name], &[]);
        match self
            .fetch(Method::GET, url.clone(), None, &[StatusCode::NOT_FOUND])
            .await?
        {
            (StatusCode::NOT_FOUND, _) => Ok(None),
            (_, bytes) => decode(&url, &bytes).map(Some),
        }
    }

    /// `PUT /pinsets/{ns}/{name}` with a JSON document; a prune guard refusal
    /// (409) is a report with `refused` set.
    pub async fn put_pinset(
        &self,
        id: &PinSetId,
        document: Vec<u8>,
        force: bool,
        source: &str,
        revision: &str,
    ) -> Result<ApplyReport, ClientError> {
        let mut query = vec![
            ("source", source.to_string()),
            ("revision", revision.to_string()),
        ];
        if force {
            query.push(("force", "true".to_string()));
        }
        let url = self.url(&["pinsets", &id.namespace, &id.name], &query);
        self.call(Method::PUT, url, Some(document), &[StatusCode::CONFLICT])
            .await
    }

    /// `PATCH /pinsets/{ns}/{name}`: only the pins that changed since
    /// `document.base_revision`. `None` when the cluster does not hold that
    /// revision (412): send the whole PinSet instead. A prune guard refusal
    /// (409) is a report with `refused` set.
    pub async fn patch_pinset(
        &self,
        id: &PinSetId,
        document: &crate::wire::PatchDocument,
        force: bool,
        source: &str,
    ) -> Result<Option<ApplyReport>, ClientError> {
        let mut query = vec![("source", source.to_string())];
        if force {
            query.push(("force", "true".to_string()));
        }
        let url = self.url(&["pinsets", &id.namespace, &id.name], &query);
        let body = serde_json::to_vec(document).map_err(|e| ClientError::Decode {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        match self
            .call(Method::PATCH, url, Some(body), &[StatusCode::CONFLICT])
            .await
        {
            Ok(r) => Ok(Some(r)),
            Err(ClientError::Api { status: 412, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `DELETE /pinsets/{ns}/{name}`; a prune guard refusal (409) is a report
    /// with `refused` set.
    pub async fn delete_pinset(
        &self,
        id: &PinSetId,
        force: bool,
    ) -> Result<ApplyReport, ClientError> {
        let mut query = vec![];
        if force {
            query.push(("force", "true".to_string()));
        }
        let url = self.url(&["pinsets", &id.namespace, &id.name], &query);
        self.call(Method::DELETE, url, None, &[StatusCode::CONFLICT])
            .await
    }

    /// `PUT /pinsets/{ns}/{name}/conditions`: records the conditions this
    /// controller computed for a PinSet.
    pub async fn put_conditions(
        &self,
        id: &PinSetId,
        source: &str,
        revision: Option<&str>,
        conditions: &[Condition],
    ) -> Result<(), ClientError> {
        let url = self.url(&["pinsets", &id.namespace, &id.name, "conditions"], &[]);
        let report = serde_json::json!({
            "source": source,
            "revision": revision,
            "conditions": conditions,
        });
        let body = serde_json::to_vec(&report).map_err(|e| ClientError::Decode {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let unreachable = |source| ClientError::Unreachable {
            url: url.to_string(),
            source,
        };
        let resp = self
            .http
            .put(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let bytes = resp.bytes().await.map_err(unreachable)?;
        let message = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => b.message,
            Err(_) => String::from_utf8_lossy(&bytes).trim().to_string(),
        };
        Err(ClientError::Api {
            status: status.as_u16(),
            message,
        })
    }
}

/// Decodes a JSON answer from `url`.
fn decode<T: serde::de::DeserializeOwned>(url: &Url, bytes: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| ClientError::Decode {
        url: url.to_string(),
        reason: e.to_string(),
    })
}
