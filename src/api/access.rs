//! Who may call which route (issue 13): the `Host` check against DNS
//! rebinding, cross-origin refusal and CORS, and the per-route role check
//! over basic auth, `POST /token` tokens and the peer's own controller.
//!
//! This module owns the HTTP side of access only: reading `Host`, `Origin`
//! and `Authorization`, answering 401/403 and preflights. Users, password
//! hashes and tokens are `crate::auth`'s; which role a route needs is
//! declared beside the route in `routes`. A refused request never reaches
//! its handler, so nothing is written on refusal.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::sync::Semaphore;

use super::ApiError;
use crate::auth::{Identity, Role, TokenKey, Users};
use crate::config::{ApiConfig, ClusterSecret};
use crate::manifest::shown;

/// What a route asks of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone who reaches the API (`GET /health`, as in IPFS Cluster).
    Open,
    /// An identity with at least this role; a write with `force=true`
    /// needs admin.
    Role(Role),
}

/// Prefix of the bearer token the peer's own controller sends.
const INTERNAL_PREFIX: &str = "pinfleet-internal.";

/// Most argon2 checks running at once: each takes tens of milliseconds and
/// ~19 MiB, so a flood of bad passwords queues instead of eating memory.
const VERIFY_SLOTS: usize = 4;

/// An API's access rules, built once from `[api]`. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AccessPolicy {
    users: Users,
    token_key: TokenKey,
    token_ttl: Duration,
    internal: Arc<String>,
    public_names: Arc<Vec<String>>,
    cors: Arc<Cors>,
    verify_slots: Arc<Semaphore>,
}

#[derive(Debug, Default)]
struct Cors {
    origins: Vec<String>,
    methods: Vec<String>,
    credentials: bool,
    max_age: Duration,
}

impl Default for AccessPolicy {
    /// No users (every request is the anonymous admin), loopback names and
    /// IP addresses only, no cross-origin requests.
    fn default() -> Self {
        Self::from_config(&ApiConfig::default(), &ClusterSecret::random())
    }
}

impl AccessPolicy {
    /// The rules of `api`; tokens are keyed by the cluster's `secret`, so a
    /// token from one peer is good on every peer of the cluster.
    pub fn from_config(api: &ApiConfig, secret: &ClusterSecret) -> Self {
        let internal: [u8; 32] = rand::random();
        Self {
            users: Users::new(api.basic_auth_credentials.clone()),
            token_key: TokenKey::from_cluster_secret(&secret.bytes()),
            token_ttl: api.token_ttl,
            internal: Arc::new(format!("{INTERNAL_PREFIX}{}", hex::encode(internal))),
            public_names: Arc::new(api.public_names.clone()),
            cors: Arc::new(Cors {
                origins: api.cors_allowed_origins.clone(),
                methods: api.cors_allowed_methods.clone(),
                credentials: api.cors_allow_credentials,
                max_age: api.cors_max_age,
            }),
            verify_slots: Arc::new(Semaphore::new(VERIFY_SLOTS)),
        }
    }

    /// Whether requests must prove who they are.
    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// The bearer token this peer's own controller sends to this API (a
    /// fresh random one per process; admin, never written anywhere).
    pub fn internal_token(&self) -> &str {
        &self.internal
    }

    /// The users, for `POST /token`.
    pub(super) fn users(&self) -> &Users {
        &self.users
    }

    /// A token for `user` with `role`, valid for `ttl` (or `token_ttl`).
    pub(super) fn issue(
        &self,
        user: &str,
        role: Role,
        ttl: Option<Duration>,
    ) -> Result<String, crate::auth::TokenError> {
        let ttl = ttl.unwrap_or(self.token_ttl);
        self.token_key
            .issue(&self.users, user, role, unix_now(), ttl.as_secs().max(1))
    }

    /// The longest a token may live.
    pub(super) fn token_ttl(&self) -> Duration {
        self.token_ttl
    }

    /// Who `headers` prove to be, or why not (always a 401 answer).
    async fn identify(&self, headers: &HeaderMap) -> Result<Identity, Refused> {
        if !self.requires_auth() {
            return Ok(Identity::anonymous());
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(Refused::NoCredentials);
        };
        let value = value.to_str().unwrap_or_default();
        if let Some(token) = strip_scheme(value, "Bearer ") {
            return self.identify_token(token.trim());
        }
        if let Some(b64) = strip_scheme(value, "Basic ") {
            let decoded = B64
                .decode(b64.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
                return Err(Refused::Bad);
            };
            return self.verify(user, password).await.ok_or(Refused::Bad);
        }
        Err(Refused::Bad)
    }

    /// Who `user` is when `password` is theirs (argon2, at most
    /// [`VERIFY_SLOTS`] checks at once, off the runtime).
    pub(super) async fn verify(&self, user: &str, password: &str) -> Option<Identity> {
        let (user, password) = (user.to_owned(), password.to_owned());
        let users = self.users.clone();
        let _slot = self.verify_slots.acquire().await.ok()?;
        tokio::task::spawn_blocking(move || {
            users
                .verify(&user, &password)
                .map(|role| Identity { user, role })
        })
        .await
        .ok()
        .flatten()
    }

    /// Who a dashboard request is: its `Authorization` header when it has
    /// one, else the token of its session cookie; `None` when it proves
    /// nothing (the anonymous admin when the API has no users).
    pub(super) async fn identify_session(
        &self,
        headers: &HeaderMap,
        session: Option<&str>,
    ) -> Option<Identity> {
        if headers.contains_key(header::AUTHORIZATION) || !self.requires_auth() {
            return self.identify(headers).await.ok();
        }
        self.identify_token(session?).ok()
    }

    fn identify_token(&self, token: &str) -> Result<Identity, Refused> {
        if token.starts_with(INTERNAL_PREFIX) {
            return if constant_time_eq(token.as_bytes(), self.internal.as_bytes()) {
                Ok(Identity {
                    user: "pinfleet".into(),
                    role: Role::Admin,
                })
            } else {
                Err(Refused::Bad)
            };
        }
        self.token_key
            .verify(&self.users, token, unix_now())
            .map_err(|e| {
                tracing::debug!(reason = %e, "api token refused");
                Refused::Bad
            })
    }

    /// Whether `host` (a `Host` header) names this API: an IP address,
    /// `localhost` (or a name under it), or one of `public_names`.
    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        if name.parse::<std::net::IpAddr>().is_ok() {
            return true;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        name == "localhost" || name.ends_with(".localhost") || self.public_names.contains(&name)
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.cors.origins.iter().any(|o| o == "*" || *o == origin)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let head = value.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| &value[scheme.len()..])
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The name part of a `Host` value: `[::1]:80` → `::1`, `h:80` → `h`.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

const REALM: &str = "realm=\"pinfleet API\"";

/// 401, with the schemes a client may use (IPFS Cluster sends both).
fn unauthorized(message: &str, offer_both: bool) -> Response {
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    let h = resp.headers_mut();
    if offer_both {
        h.append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"pinfleet API\""),
        );
    }
    if let Ok(v) = HeaderValue::from_str(&format!("Basic {REALM}")) {
        h.append(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// Why a request proved no identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refused {
    /// No `Authorization` header.
    NoCredentials,
    /// An unknown user, a wrong password, a bad or expired token: one
    /// answer, nothing tells them apart.
    Bad,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::NoCredentials => unauthorized("unauthorized: no credentials given", true),
            Self::Bad => unauthorized("unauthorized: invalid credentials", false),
        }
    }
}

/// The identity a request proved; handlers read it from the extensions.
#[derive(Clone, Debug)]
pub struct Caller(pub Identity);

/// Per-route layer: the request proves an identity with the route's role
/// (admin for a write with `force=true`) or is refused.
pub(super) async fn require(
    State((policy, access)): State<(AccessPolicy, Access)>,
    mut req: Request,
    next: Next,
) -> Response {
    let Access::Role(mut role) = access else {
        return next.run(req).await;
    };
    let identity = match policy.identify(req.headers()).await {
        Ok(id) => id,
        Err(refused) => return refused.into_response(),
    };
    if req.method() != Method::GET && forces(req.uri().query()) {
        role = Role::Admin;
    }
    if identity.role < role {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "forbidden: {} has role {}, this needs {role}",
                identity.user, identity.role
            ),
        )
        .into_response();
    }
    req.extensions_mut().insert(Caller(identity));
    next.run(req).await
}

/// Whether a query sets `force` (as the handlers read it: `true` or `1`).
fn forces(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        url_pairs(q).any(|(k, v)| k == "force" && matches!(v.as_str(), "true" | "1"))
    })
}

fn url_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        (dec(k), dec(v))
    })
}

/// Headers a cross-origin request may send.
const ALLOWED_HEADERS: &str = "authorization, content-type";
/// Headers a cross-origin caller may read.
const EXPOSED_HEADERS: &str = "x-stream-error, x-pinfleet-stale, trailer";

/// Whole-router layer, outermost: the `Host` must name this API, and a
/// request from a browser page of another origin must be allowed by CORS
/// (preflights are answered here).
pub(super) async fn guard(
    State(policy): State<AccessPolicy>,
    req: Request,
    next: Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    if let Some(host) = &host
        && !policy.host_allowed(host)
    {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "host {} is not served here: add it to api.public_names",
                shown(host_name(host))
            ),
        )
        .into_response();
    }
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned)
    else {
        return next.run(req).await;
    };
    if same_origin(host.as_deref(), &origin) {
        return next.run(req).await;
    }
    if !policy.origin_allowed(&origin) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "cross-origin request from {} refused (see api.cors_allowed_origins)",
                shown(&origin)
            ),
        )
        .into_response();
    }
    let cors = &policy.cors;
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let asked = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| m.to_str().ok())
            .unwrap_or_default()
            .to_ascii_uppercase();
        if !cors.methods.contains(&asked) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "method {asked} is not allowed cross-origin (see api.cors_allowed_methods)"
                ),
            )
            .into_response();
        }
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        allow_origin(h, &policy, &origin);
        set(
            h,
            header::ACCESS_CONTROL_ALLOW_METHODS,
            &cors.methods.join(", "),
        );
        set(h, header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS);
        set(
            h,
            header::ACCESS_CONTROL_MAX_AGE,
            &cors.max_age.as_secs().to_string(),
        );
        return resp;
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    allow_origin(h, &policy, &origin);
    set(h, header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED_HEADERS);
    resp
}

/// Whether a browser's `Origin` is the page's own (`host`, the request's
/// `Host`), over http or https.
pub(super) fn same_origin(host: Option<&str>, origin: &str) -> bool {
    host.is_some_and(|h| {
        let o = origin.to_ascii_lowercase();
        let h = h.to_ascii_lowercase();
        o == format!("http://{h}") || o == format!("https://{h}")
    })
}

fn allow_origin(h: &mut HeaderMap, policy: &AccessPolicy, origin: &str) {
    let any = policy.cors.origins.iter().any(|o| o == "*");
    // With credentials the origin must be named, never `*` (the config
    // refuses `*` with credentials).
    set(
        h,
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        if any { "*" } else { origin },
    );
    if policy.cors.credentials {
        set(h, header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    }
    h.append(header::VARY, HeaderValue::from_static("origin"));
}

fn set(h: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_read_past_ports_and_brackets() {
        assert_eq!(host_name("127.0.0.1:9094"), "127.0.0.1");
        assert_eq!(host_name("[::1]:9094"), "::1");
        assert_eq!(host_name("localhost"), "localhost");
        assert_eq!(host_name("pins.example.org:443"), "pins.example.org");
    }

    #[test]
    fn only_ip_addresses_loopback_names_and_public_names_are_served() {
        let api = ApiConfig {
            public_names: vec!["pins.example.org".into()],
            ..ApiConfig::default()
        };
        let p = AccessPolicy::from_config(&api, &ClusterSecret::random());
        for ok in [
            "127.0.0.1:1",
            "10.1.2.3",
            "[::1]:80",
            "localhost:9094",
            "app.localhost",
            "PINS.example.org:8443",
        ] {
            assert!(p.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "localhost.evil.example",
            "pins.example.org.evil",
        ] {
            assert!(!p.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn force_is_read_as_the_handlers_read_it() {
        assert!(forces(Some("force=true")));
        assert!(forces(Some("dryRun=false&force=1")));
        assert!(!forces(Some("force=false")));
        assert!(!forces(Some("forced=true")));
        assert!(!forces(None));
    }
}
