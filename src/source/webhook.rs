//! Webhook receivers (issue 6 item 3): `POST /hooks/{name}` asks the source
//! named by the receiver for an immediate fetch.
//!
//! Three kinds of receiver, each authenticated with a shared secret:
//!
//! - [`ReceiverKind::GitHub`]: `X-Hub-Signature-256: sha256=<hex>`, the
//!   HMAC-SHA256 of the raw body keyed with the secret. A signed
//!   `X-GitHub-Event: ping` is answered `200` and triggers nothing.
//! - [`ReceiverKind::GitLab`]: `X-Gitlab-Token: <secret>`.
//! - [`ReceiverKind::Generic`]: `X-Signature-256: sha256=<hex>`, the same
//!   HMAC-SHA256 as GitHub's, for any other sender (`curl`, CI jobs).
//!
//! A valid hook is handed to a [`HookSink`] (by default the trigger channel,
//! with `try_send`: when the channel is full a fetch is already pending, so
//! a burst of hooks coalesces into one fetch) and answered `202 Accepted`
//! once delivered. A missing
//! or wrong signature or token is answered `401` and triggers nothing; an
//! unknown receiver `404`; a body over 1 MiB `413`; a sink that cannot act
//! (no controller running, no leader to forward to) `503`. Secrets, signatures and
//! tokens are never logged. A receiver with an empty secret refuses every
//! hook.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};

use crate::manifest::shown;
use sha2::Sha256;
use tokio::sync::mpsc;

type HmacSha256 = Hmac<Sha256>;

/// Largest hook body accepted (1 MiB); larger bodies get `413`.
pub const MAX_BODY: usize = 1024 * 1024;

/// GitHub's signature header.
pub const GITHUB_SIGNATURE: &str = "x-hub-signature-256";
/// GitHub's event header (`ping`, `push`, …).
pub const GITHUB_EVENT: &str = "x-github-event";
/// GitLab's token header.
pub const GITLAB_TOKEN: &str = "x-gitlab-token";
/// The generic receiver's signature header: `sha256=<hex HMAC-SHA256>`.
pub const GENERIC_SIGNATURE: &str = "x-signature-256";

/// Which forge's conventions a receiver follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiverKind {
    /// GitHub: `X-Hub-Signature-256`.
    GitHub,
    /// GitLab: `X-Gitlab-Token`.
    GitLab,
    /// Any sender: `X-Signature-256`.
    Generic,
}

impl ReceiverKind {
    /// Every kind, with its name in a `KIND:NAME` receiver spec.
    pub const ALL: [(&'static str, ReceiverKind); 3] = [
        ("github", ReceiverKind::GitHub),
        ("gitlab", ReceiverKind::GitLab),
        ("generic", ReceiverKind::Generic),
    ];

    /// The kind's name in a receiver spec (`github`, `gitlab`, `generic`).
    pub fn name(self) -> &'static str {
        match self {
            ReceiverKind::GitHub => "github",
            ReceiverKind::GitLab => "gitlab",
            ReceiverKind::Generic => "generic",
        }
    }
}

/// Why a receiver spec `KIND:NAME` does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReceiverSpecError {
    /// No `:`.
    #[error("expected KIND:NAME, got {}", shown(.0))]
    Shape(String),
    /// KIND is not a known kind.
    #[error("unknown webhook kind {}: expected github, gitlab or generic", shown(.0))]
    UnknownKind(String),
    /// NAME is empty or has other characters.
    #[error("invalid webhook name {}: letters, digits, '-' and '_'", shown(.0))]
    Name(String),
}

/// Parses a receiver spec `KIND:NAME` (`controller.webhooks`, `pinfleet
/// controller --webhook`): KIND one of github, gitlab, generic; NAME of
/// letters, digits, `-` and `_` (it is a URL path segment).
pub fn parse_receiver_spec(spec: &str) -> Result<(ReceiverKind, String), ReceiverSpecError> {
    let (kind, name) = spec
        .split_once(':')
        .ok_or_else(|| ReceiverSpecError::Shape(spec.to_string()))?;
    let (_, kind) = ReceiverKind::ALL
        .iter()
        .find(|(n, _)| *n == kind)
        .ok_or_else(|| ReceiverSpecError::UnknownKind(kind.to_string()))?;
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if name.is_empty() || !name.chars().all(valid) {
        return Err(ReceiverSpecError::Name(name.to_string()));
    }
    Ok((*kind, name.to_string()))
}

/// One webhook endpoint, `POST /hooks/{name}`.
#[derive(Clone)]
pub struct Receiver {
    /// The name in the path, sent on the trigger channel.
    pub name: String,
    /// How hooks are authenticated.
    pub kind: ReceiverKind,
    /// The shared secret (never logged or printed).
    pub secret: Vec<u8>,
}

impl Receiver {
    /// A receiver named `name`.
    pub fn new(name: impl Into<String>, kind: ReceiverKind, secret: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            kind,
            secret: secret.into(),
        }
    }

    /// Whether `headers` and `body` authenticate a hook for this receiver.
    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> bool {
        if self.secret.is_empty() {
            return false;
        }
        match self.kind {
            ReceiverKind::GitHub => {
                verify_hmac(&self.secret, header(headers, GITHUB_SIGNATURE), body)
            }
            ReceiverKind::Generic => {
                verify_hmac(&self.secret, header(headers, GENERIC_SIGNATURE), body)
            }
            ReceiverKind::GitLab => match header(headers, GITLAB_TOKEN) {
                Some(token) => verify_token(&self.secret, token.as_bytes()),
                None => false,
            },
        }
    }
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("secret", &"<redacted>")
            .finish()
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `sha256=<hex>` against HMAC-SHA256(secret, body), in constant time.
fn verify_hmac(secret: &[u8], signature: Option<&str>, body: &[u8]) -> bool {
    let Some(hex_sig) = signature.and_then(|s| s.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// `token == secret` in constant time: both are reduced to
/// HMAC-SHA256(secret, ·) and the MACs compared with `verify_slice`.
fn verify_token(secret: &[u8], token: &[u8]) -> bool {
    let (Ok(mut expected), Ok(mut given)) = (
        HmacSha256::new_from_slice(secret),
        HmacSha256::new_from_slice(secret),
    ) else {
        return false;
    };
    expected.update(secret);
    given.update(token);
    let expected = expected.finalize().into_bytes();
    given.verify_slice(&expected).is_ok()
}

/// What became of a valid hook handed to a [`HookSink`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// A fetch was triggered.
    Triggered,
    /// A fetch was already pending: this hook coalesced into it.
    Pending,
    /// Nobody can act on it now (no controller, no leader, forwarding
    /// failed): answered `503` with this message so the sender retries.
    Unavailable(String),
}

/// Where valid hooks go: the receiver's name is handed over, and the
/// answer depends on what became of it.
pub trait HookSink: Send + Sync + 'static {
    /// Asks for a fetch on behalf of receiver `name`.
    fn deliver<'a>(&'a self, name: &'a str) -> futures::future::BoxFuture<'a, Delivery>;
}

/// The trigger channel itself: `try_send`, so a full channel (a fetch is
/// already pending) coalesces and a closed one (no controller) is
/// unavailable.
impl HookSink for mpsc::Sender<String> {
    fn deliver<'a>(&'a self, name: &'a str) -> futures::future::BoxFuture<'a, Delivery> {
        Box::pin(async move { try_trigger(self, name) })
    }
}

/// Sends `name` on `trigger` without waiting (see [`HookSink`] for the
/// channel).
pub fn try_trigger(trigger: &mpsc::Sender<String>, name: &str) -> Delivery {
    match trigger.try_send(name.to_string()) {
        Ok(()) => Delivery::Triggered,
        Err(mpsc::error::TrySendError::Full(_)) => Delivery::Pending,
        Err(mpsc::error::TrySendError::Closed(_)) => {
            Delivery::Unavailable("controller not running".into())
        }
    }
}

#[derive(Clone)]
struct Hooks {
    receivers: Arc<HashMap<String, Receiver>>,
    sink: Arc<dyn HookSink>,
}

/// The router serving `POST /hooks/{name}` for `receivers`; a valid hook
/// sends the receiver's name on `trigger` (without waiting: a full channel
/// means a fetch is already pending).
pub fn router(receivers: Vec<Receiver>, trigger: mpsc::Sender<String>) -> Router {
    router_to(receivers, Arc::new(trigger))
}

/// The router serving `POST /hooks/{name}` for `receivers`; a valid hook is
/// handed to `sink` and answered after it: `202` once delivered, `503` when
/// the sink says nobody can act on it.
pub fn router_to(receivers: Vec<Receiver>, sink: Arc<dyn HookSink>) -> Router {
    let receivers = receivers
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect::<HashMap<_, _>>();
    let state = Hooks {
        receivers: Arc::new(receivers),
        sink,
    };
    // Other methods get the API's JSON 405 (with `Allow`), not an empty one.
    let other_methods = || async {
        let mut resp = answer(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        resp.headers_mut().insert(
            axum::http::header::ALLOW,
            axum::http::HeaderValue::from_static("POST"),
        );
        resp
    };
    Router::new()
        .route("/hooks/{name}", post(hook).fallback(other_methods))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// `hooks` (from [`router`] or [`router_to`]) as the whole of a listener:
/// every other path is `404`.
pub fn standalone(hooks: Router) -> Router {
    hooks.fallback(|| async { answer(StatusCode::NOT_FOUND, "no such route") })
}

fn answer(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "code": status.as_u16(), "message": message });
    (status, axum::Json(body)).into_response()
}

async fn hook(
    State(hooks): State<Hooks>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(receiver) = hooks.receivers.get(&name) else {
        return answer(StatusCode::NOT_FOUND, "unknown receiver");
    };
    if !receiver.verify(&headers, &body) {
        tracing::warn!(receiver = %name, "webhook refused: invalid signature");
        return answer(StatusCode::UNAUTHORIZED, "invalid signature");
    }
    if receiver.kind == ReceiverKind::GitHub && header(&headers, GITHUB_EVENT) == Some("ping") {
        tracing::info!(receiver = %name, "webhook ping");
        return answer(StatusCode::OK, "pong");
    }
    match hooks.sink.deliver(&name).await {
        Delivery::Triggered => {
            tracing::info!(receiver = %name, "webhook accepted: fetch triggered")
        }
        Delivery::Pending => {
            tracing::debug!(receiver = %name, "webhook accepted: a fetch is already pending")
        }
        Delivery::Unavailable(why) => {
            tracing::warn!(receiver = %name, reason = %why, "webhook refused: cannot act on it now");
            return answer(StatusCode::SERVICE_UNAVAILABLE, &why);
        }
    }
    answer(StatusCode::ACCEPTED, "accepted")
}

/// Property tests: hooks with any body and any (or a mutated valid)
/// signature, token or receiver spec. A hook is let through exactly when it
/// carries the receiver's own signature or token; every answer is a small
/// JSON body whose code is the status; nothing panics.
#[cfg(test)]
mod fuzz_tests {
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    use super::*;
    use crate::testkit::fuzz::{Edit, apply, bytes, edit};

    const SECRET: &[u8] = b"s3cr3t-hook-key";
    const TOKENS: &[&[u8]] = &[
        b"sha256=", b"SHA256=", b" ", b"\t", b"0", b"f", b"F", b"g", b"=",
    ];

    struct Accept;

    impl HookSink for Accept {
        fn deliver<'a>(&'a self, _: &'a str) -> futures::future::BoxFuture<'a, Delivery> {
            Box::pin(async { Delivery::Triggered })
        }
    }

    fn hmac_of(body: &[u8]) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(SECRET).unwrap();
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }

    /// The header a receiver of `kind` reads, and its valid value for `body`.
    fn valid(kind: ReceiverKind, body: &[u8]) -> (&'static str, Vec<u8>) {
        match kind {
            ReceiverKind::GitHub => (
                GITHUB_SIGNATURE,
                format!("sha256={}", hex::encode(hmac_of(body))).into_bytes(),
            ),
            ReceiverKind::Generic => (
                GENERIC_SIGNATURE,
                format!("sha256={}", hex::encode(hmac_of(body))).into_bytes(),
            ),
            ReceiverKind::GitLab => (GITLAB_TOKEN, SECRET.to_vec()),
        }
    }

    /// Whether `value` (as sent) says what [`valid`] says: the same MAC
    /// (hex in any case, `sha256=` prefix, surrounding blanks), or the
    /// very token.
    fn equivalent(kind: ReceiverKind, value: &str, body: &[u8]) -> bool {
        match kind {
            ReceiverKind::GitLab => value.as_bytes() == SECRET,
            _ => value
                .trim()
                .strip_prefix("sha256=")
                .and_then(|h| hex::decode(h).ok())
                .is_some_and(|sig| sig == hmac_of(body)),
        }
    }

    fn kind() -> impl Strategy<Value = ReceiverKind> {
        proptest::sample::select(ReceiverKind::ALL.map(|(_, k)| k).to_vec())
    }

    fn call(kind: ReceiverKind, name: &str, headers: HeaderMap, body: Vec<u8>) -> (u16, Vec<u8>) {
        let receivers = [Receiver::new("hook", kind, SECRET)];
        let hooks = Hooks {
            receivers: Arc::new(receivers.into_iter().map(|r| (r.name.clone(), r)).collect()),
            sink: Arc::new(Accept),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let resp = hook(State(hooks), Path(name.to_string()), headers, body.into()).await;
            let status = resp.status().as_u16();
            let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
            (status, body.to_vec())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        #[test]
        fn a_hook_goes_through_exactly_with_the_receivers_signature(
            kind in kind(),
            body in bytes(512),
            signature in prop_oneof![
                Just(None),
                Just(Some(vec![])),
                proptest::collection::vec(edit(TOKENS), 0..4).prop_map(Some),
            ],
            garbage in proptest::option::of(bytes(80)),
            ping in any::<bool>(),
            named in any::<bool>(),
        ) {
            let (name, good) = valid(kind, &body);
            let mut headers = HeaderMap::new();
            // No edits: the valid value; edits: a mutation of it; or bytes.
            let value: Option<Vec<u8>> = match (&signature, garbage) {
                (None, _) => None,
                (Some(_), Some(g)) => Some(g),
                (Some(edits), None) => Some(apply(&good, edits)),
            };
            let sent = value
                .and_then(|v| HeaderValue::from_bytes(&v).ok())
                .inspect(|v| {
                    headers.insert(name, v.clone());
                });
            if ping {
                headers.insert(GITHUB_EVENT, HeaderValue::from_static("ping"));
            }
            let target = if named { "hook" } else { "other" };
            let (status, answer) = call(kind, target, headers, body.clone());
            let accepted = sent
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| equivalent(kind, v, &body));
            let want = match (named, accepted) {
                (false, _) => 404,
                (true, false) => 401,
                (true, true) if ping && kind == ReceiverKind::GitHub => 200,
                (true, true) => 202,
            };
            prop_assert_eq!(status, want);
            let json: serde_json::Value = serde_json::from_slice(&answer).unwrap();
            prop_assert_eq!(json["code"].as_u64(), Some(u64::from(status)));
            prop_assert!(answer.len() < 256);
            // The answer never shows the secret or what was sent.
            let text = String::from_utf8_lossy(&answer);
            prop_assert!(!text.contains(std::str::from_utf8(SECRET).unwrap()));
        }

        #[test]
        fn receiver_specs_parse_or_fail_naming_the_input(
            spec in prop_oneof![
                ".{0,40}",
                proptest::collection::vec(edit(&[b":", b"-", b"_", b"/", b" "]), 1..4)
                    .prop_map(|e: Vec<Edit>| String::from_utf8_lossy(&apply(b"github:mirror-1", &e)).into_owned()),
            ],
        ) {
            match parse_receiver_spec(&spec) {
                Ok((kind, name)) => {
                    prop_assert_eq!(format!("{}:{name}", kind.name()), spec);
                }
                Err(e) => prop_assert!(e.to_string().len() <= 6 * spec.len() + 80),
            }
        }
    }
}
