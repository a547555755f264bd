//! The IPFS Pinning Service API (spec v1.0.0) on a listener of its own
//! (`[pinsvc] listen`): `GET`/`POST /pins`, `GET`/`POST`/`DELETE
//! /pins/{requestid}`, bearer tokens from `[pinsvc] tokens`.
//!
//! Owns the routes, the token check (401 before anything is looked up; a
//! token sees and changes only its own requests) and the spec's error body
//! `{"error":{"reason":…,"details":…}}` for every error, the framework's
//! own included (body, content type, unknown route, method). Requests are
//! cluster state: each write is one consensus command (`Command::PinSvc`)
//! that the follower forwards to the leader and waits until applied here,
//! so a read that follows on this peer sees it. It must not register
//! anything on the REST router, nor build the token's whole listing in
//! memory (`list.rs` pages from the store's index).

mod list;
mod listings;
mod recent;
mod status;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::Role;
use crate::config::PinSvcToken;
use crate::consensus::{ClusterError, ClusterNode};
use crate::manifest::CidKey;
use crate::state::Command;
use crate::state::pinsvc::{NO_SUCH_REQUEST, PinSvcChange, PinSvcRequest};
use crate::tracker::StatusService;
use crate::wire::{PinSvcError, PinSvcFailure, PinSvcPin};

/// Largest request body (a `Pin` with 1,000 meta keys fits).
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// Longest `name`, in characters.
pub const MAX_NAME_CHARS: usize = 255;
/// Most `meta` keys.
pub const MAX_META_KEYS: usize = 1000;
/// Most `origins`.
pub const MAX_ORIGINS: usize = 20;

/// What the Pinning Service routes need.
#[derive(Clone)]
pub struct PinSvcState {
    node: ClusterNode,
    status: Arc<StatusService>,
    tokens: Arc<Vec<TokenEntry>>,
    /// Statuses computed lately, for status-filtered listings.
    recent: Arc<recent::RecentStatuses>,
    /// Status-filtered listings computed lately, for their next pages.
    listings: Arc<listings::Listings>,
}

/// Shows the token names, never their digests.
impl std::fmt::Debug for PinSvcState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|t| &*t.name).collect();
        f.debug_struct("PinSvcState")
            .field("tokens", &names)
            .finish()
    }
}

/// A configured token: its name, the digest of its secret, its role.
struct TokenEntry {
    name: Arc<str>,
    digest: [u8; 32],
    role: Role,
}

impl PinSvcState {
    /// The routes' state: this peer's node and status service, and the
    /// configured tokens.
    pub fn new(
        node: ClusterNode,
        status: Arc<StatusService>,
        tokens: &BTreeMap<String, PinSvcToken>,
    ) -> Self {
        let tokens = tokens
            .iter()
            .map(|(name, t)| TokenEntry {
                name: Arc::from(name.as_str()),
                digest: Sha256::digest(t.secret.as_bytes()).into(),
                role: t.role,
            })
            .collect();
        Self {
            node,
            status,
            tokens: Arc::new(tokens),
            recent: Arc::new(recent::RecentStatuses::default()),
            listings: Arc::new(listings::Listings::default()),
        }
    }

    /// The token a bearer secret names. Every entry is compared, in
    /// constant time, whichever matches.
    fn caller(&self, secret: &str) -> Option<Caller> {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut found = None;
        for t in self.tokens.iter() {
            if bool::from(t.digest.ct_eq(&digest)) {
                found = Some(Caller {
                    token: Arc::clone(&t.name),
                    role: t.role,
                });
            }
        }
        found
    }
}

/// Who sent a request, once its token was checked.
#[derive(Clone, Debug)]
struct Caller {
    token: Arc<str>,
    role: Role,
}

impl Caller {
    fn may_write(&self) -> Result<(), Failure> {
        if self.role >= Role::Writer {
            Ok(())
        } else {
            Err(Failure::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                "this token may only read (role reader)",
            ))
        }
    }
}

/// The Pinning Service API's router (served on its own listener).
pub fn router(state: PinSvcState) -> Router {
    Router::new()
        .route("/pins", get(list::list).post(create))
        .route(
            "/pins/{requestid}",
            get(get_one).post(replace).delete(remove),
        )
        .fallback(|| async { Failure::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route") })
        .method_not_allowed_fallback(|| async {
            Failure::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "method not allowed on this route",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .with_state(state)
}

/// 401 unless the request carries a configured token; the caller goes
/// into the request's extensions.
async fn authenticate(State(state): State<PinSvcState>, mut req: Request, next: Next) -> Response {
    let secret = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match secret.and_then(|s| state.caller(s)) {
        Some(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        None => Failure::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "access token is missing or invalid",
        )
        .into_response(),
    }
}

/// An error as the spec answers it.
#[derive(Debug)]
pub(crate) struct Failure {
    status: StatusCode,
    reason: &'static str,
    details: String,
}

impl Failure {
    fn new(status: StatusCode, reason: &'static str, details: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            details: details.into(),
        }
    }

    fn bad(details: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", details)
    }

    fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "the specified resource was not found",
        )
    }

    fn internal(details: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_SERVER_ERROR",
            details,
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = PinSvcFailure {
            error: PinSvcError {
                reason: self.reason.to_string(),
                details: Some(self.details),
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<ClusterError> for Failure {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::NoLeader | ClusterError::Unavailable(_) | ClusterError::Stopped => {
                Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SERVICE_UNAVAILABLE",
                    format!("the cluster cannot take writes now: {e}"),
                )
            }
            ClusterError::TooLarge(m) => {
                Failure::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", m)
            }
            ClusterError::Forbidden(m) => Failure::new(StatusCode::FORBIDDEN, "FORBIDDEN", m),
            other => Failure::internal(other.to_string()),
        }
    }
}

/// A storage read failed.
fn storage(e: impl std::fmt::Display) -> Failure {
    Failure::internal(format!("cannot read the state: {e}"))
}

/// The caller the middleware put in; its absence is a bug answered 401.
fn caller_of(req: &Request) -> Result<Caller, Failure> {
    req.extensions().get::<Caller>().cloned().ok_or_else(|| {
        Failure::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "access token is missing or invalid",
        )
    })
}

/// A new opaque request id: a random UUID (version 4).
fn new_requestid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The `Pin` of a `POST` body, checked as the spec says.
fn parse_pin(headers: &HeaderMap, body: &[u8]) -> Result<PinSvcPin, Failure> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "expected a body of content type application/json",
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Failure::bad(format!("malformed JSON body: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| Failure::bad("the body must be a Pin object"))?;
    let present = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let cid = present("cid")
        .ok_or_else(|| Failure::bad("cid is required"))?
        .as_str()
        .ok_or_else(|| Failure::bad("cid must be a string"))?
        .to_string();
    let name = match present("name") {
        None => None,
        Some(v) => {
            let s = v
                .as_str()
                .ok_or_else(|| Failure::bad("name must be a string"))?;
            if s.chars().count() > MAX_NAME_CHARS {
                return Err(Failure::bad(format!(
                    "name has more than {MAX_NAME_CHARS} characters"
                )));
            }
            Some(s.to_string())
        }
    };
    let mut origins = Vec::new();
    if let Some(v) = present("origins") {
        let list = v
            .as_array()
            .ok_or_else(|| Failure::bad("origins must be an array of multiaddrs"))?;
        if list.len() > MAX_ORIGINS {
            return Err(Failure::bad(format!(
                "origins holds more than {MAX_ORIGINS} multiaddrs"
            )));
        }
        for o in list {
            let s = o
                .as_str()
                .ok_or_else(|| Failure::bad("origins must be an array of strings"))?;
            s.parse::<libp2p::Multiaddr>().map_err(|e| {
                Failure::bad(format!(
                    "origin {} is not a multiaddr: {e}",
                    crate::manifest::shown(s)
                ))
            })?;
            if origins.iter().any(|x| x == s) {
                return Err(Failure::bad("origins must not repeat a multiaddr"));
            }
            origins.push(s.to_string());
        }
    }
    let meta = match present("meta") {
        None => BTreeMap::new(),
        Some(v) => string_map(v, "meta")?,
    };
    Ok(PinSvcPin {
        cid,
        name,
        origins,
        meta,
    })
}

/// A JSON object of string values with at most [`MAX_META_KEYS`] keys.
fn string_map(v: &serde_json::Value, what: &str) -> Result<BTreeMap<String, String>, Failure> {
    let obj = v
        .as_object()
        .ok_or_else(|| Failure::bad(format!("{what} must be an object of strings")))?;
    if obj.len() > MAX_META_KEYS {
        return Err(Failure::bad(format!(
            "{what} has more than {MAX_META_KEYS} keys"
        )));
    }
    obj.iter()
        .map(|(k, v)| match v.as_str() {
            Some(s) => Ok((k.clone(), s.to_string())),
            None => Err(Failure::bad(format!(
                "{what}.{}: values must be strings",
                crate::manifest::shown(k)
            ))),
        })
        .collect()
}

/// The body of a `POST`, at most [`MAX_BODY_BYTES`].
async fn body_of(req: Request) -> Result<(HeaderMap, Bytes), Failure> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            Failure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!("the body is larger than {MAX_BODY_BYTES} bytes (or was cut short)"),
            )
        })?;
    Ok((parts.headers, bytes))
}

/// The request a checked `Pin` makes for `caller`.
fn request_of(caller: &Caller, pin: PinSvcPin) -> Result<PinSvcRequest, Failure> {
    let cid = CidKey::parse(&pin.cid).map_err(|e| Failure::bad(e.to_string()))?;
    Ok(PinSvcRequest {
        requestid: new_requestid(),
        token: caller.token.to_string(),
        created_ns: 0,
        cid,
        cid_as_sent: pin.cid,
        name: pin.name,
        origins: pin.origins,
        meta: pin.meta,
    })
}

/// Commits `change`; a refusal naming an unknown request is 404.
async fn commit(state: &PinSvcState, change: PinSvcChange) -> Result<(), Failure> {
    let out = state.node.write(Command::PinSvc(change)).await?;
    match out.refused {
        None => Ok(()),
        Some(r) if r == NO_SUCH_REQUEST => Err(Failure::not_found()),
        Some(r) => Err(Failure::new(StatusCode::CONFLICT, "CONFLICT", r)),
    }
}

/// 202 with the new request's status (read back here: the write is
/// applied on this peer when `write` returns).
async fn accepted(state: &PinSvcState, requestid: &str) -> Result<Response, Failure> {
    let record = state
        .node
        .store()
        .pinsvc_request(requestid)
        .map_err(storage)?
        .ok_or_else(Failure::not_found)?;
    let mut shown = status::of(state, vec![record]).await?;
    let one = shown.pop().ok_or_else(|| Failure::internal("no status"))?;
    Ok((StatusCode::ACCEPTED, axum::Json(one)).into_response())
}

/// `POST /pins`.
async fn create(State(state): State<PinSvcState>, req: Request) -> Result<Response, Failure> {
    let caller = caller_of(&req)?;
    caller.may_write()?;
    let (headers, body) = body_of(req).await?;
    let request = request_of(&caller, parse_pin(&headers, &body)?)?;
    let id = request.requestid.clone();
    commit(&state, PinSvcChange::Add { request }).await?;
    accepted(&state, &id).await
}

/// The request `id` of `caller`, or 404 (another token's is 404 too).
fn own_request(state: &PinSvcState, caller: &Caller, id: &str) -> Result<PinSvcRequest, Failure> {
    state
        .node
        .store()
        .pinsvc_request(id)
        .map_err(storage)?
        .filter(|r| *r.token == *caller.token)
        .ok_or_else(Failure::not_found)
}

fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, Failure> {
    path.map(|Path(id)| id).map_err(|_| Failure::not_found())
}

/// `GET /pins/{requestid}`.
async fn get_one(
    State(state): State<PinSvcState>,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, Failure> {
    let caller = caller_of(&req)?;
    let id = path_id(path)?;
    let record = own_request(&state, &caller, &id)?;
    let mut shown = status::of(&state, vec![record]).await?;
    let one = shown.pop().ok_or_else(|| Failure::internal("no status"))?;
    Ok(axum::Json(one).into_response())
}

/// `POST /pins/{requestid}`: replace (a new request id; the old one is
/// gone).
async fn replace(
    State(state): State<PinSvcState>,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, Failure> {
    let caller = caller_of(&req)?;
    let old = path_id(path)?;
    // Another token's request is 404 even to a reader: none is shown.
    own_request(&state, &caller, &old)?;
    caller.may_write()?;
    let (headers, body) = body_of(req).await?;
    let request = request_of(&caller, parse_pin(&headers, &body)?)?;
    let id = request.requestid.clone();
    commit(&state, PinSvcChange::Replace { old, request }).await?;
    accepted(&state, &id).await
}

/// `DELETE /pins/{requestid}`: 202, no body.
async fn remove(
    State(state): State<PinSvcState>,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, Failure> {
    let caller = caller_of(&req)?;
    let id = path_id(path)?;
    own_request(&state, &caller, &id)?;
    caller.may_write()?;
    commit(
        &state,
        PinSvcChange::Remove {
            token: caller.token.to_string(),
            requestid: id,
        },
    )
    .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}
