//! Kubo's JSON shapes (go-ipfs-cmds' error body, the answers of `id`,
//! `pin/*`, `repo/*`, `block/stat`, and the lines of the streamed calls)
//! and their decoding into [`IpfsError`] on failure.
//!
//! It must not make requests or hold connections: it turns bytes into
//! values.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::ipfs::{IpfsError, PinKind, PinnedCid};
use crate::manifest::CidKey;

/// One `pin/ls?stream=true` line: `{"Cid":…,"Type":…}`; a `{"Keys":{…}}`
/// object when the server ignored `stream`; or an error object.
pub(super) fn parse_ls_line(line: &[u8]) -> Result<Vec<PinnedCid>, IpfsError> {
    let out: PinLsLine = decode("pin/ls", line)?;
    if out.kind.as_deref() == Some("error")
        && let Some(message) = out.message
    {
        return Err(IpfsError::Aborted {
            message: truncate(&message, MAX_MESSAGE_CHARS),
        });
    }
    let one = |cid: &str, kind: &str| -> Result<PinnedCid, IpfsError> {
        let cid = CidKey::parse(cid).map_err(|e| IpfsError::Garbage {
            what: format!("pin/ls: {e}"),
        })?;
        let kind = PinKind::parse(kind).ok_or_else(|| IpfsError::Garbage {
            what: format!(
                "pin/ls: unknown pin type {:?}",
                truncate(kind, MAX_MESSAGE_CHARS)
            ),
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

/// Kubo's error body (`cmds.Error`).
#[derive(Deserialize)]
struct KuboErrorBody {
    #[serde(rename = "Message")]
    message: String,
    #[serde(rename = "Code", default)]
    code: Option<u64>,
}

pub(super) fn http_error(status: reqwest::StatusCode, body: &[u8]) -> IpfsError {
    let (message, code) = match serde_json::from_slice::<KuboErrorBody>(body) {
        Ok(e) => (truncate(&e.message, MAX_MESSAGE_CHARS), e.code),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let message = if text.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("no message")
                    .to_lowercase()
            } else {
                truncate(text, MAX_MESSAGE_CHARS)
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
pub(super) fn says_not_pinned(e: &IpfsError) -> bool {
    match e {
        IpfsError::Http { message, .. } | IpfsError::Aborted { message } => {
            message.starts_with("not pinned") || message.contains("not recursively pinned")
        }
        _ => false,
    }
}

pub(super) fn decode<T: DeserializeOwned>(endpoint: &str, body: &[u8]) -> Result<T, IpfsError> {
    serde_json::from_slice(body).map_err(|e| IpfsError::Garbage {
        // serde echoes a mistyped string whole: keep the start of it.
        what: format!(
            "{endpoint}: {} in {}",
            truncate(&e.to_string(), MAX_MESSAGE_CHARS),
            preview(body)
        ),
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

/// Most characters of a message Kubo sent (or of a value it sent that an
/// error quotes) kept in an [`IpfsError`]: a line may be a megabyte.
pub(super) const MAX_MESSAGE_CHARS: usize = 300;

/// `text` cut to `max_chars` characters, with `…` when cut.
pub(super) fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut t: String = text.chars().take(max_chars).collect();
    t.push('…');
    t
}

#[derive(Deserialize)]
pub(super) struct IdOut {
    #[serde(rename = "ID")]
    pub(super) id: String,
    #[serde(rename = "Addresses", default)]
    pub(super) addresses: Option<Vec<String>>,
    #[serde(rename = "AgentVersion", default)]
    pub(super) agent_version: Option<String>,
}

/// `swarm/peers`: `{"Peers": [{"Addr": …, "Peer": …}]}` (`null` when none).
#[derive(Deserialize)]
pub(super) struct SwarmPeersOut {
    #[serde(rename = "Peers", default)]
    pub(super) peers: Option<Vec<SwarmPeerOut>>,
}

#[derive(Deserialize)]
pub(super) struct SwarmPeerOut {
    #[serde(rename = "Peer")]
    pub(super) peer: String,
}

#[derive(Deserialize)]
pub(super) struct PinsOut {
    #[serde(rename = "Pins", default)]
    _pins: Option<Vec<String>>,
}

/// A `pin/add?progress=true` line (`AddPinOutput`, fields omitted when
/// zero), or an error object.
#[derive(Deserialize)]
pub(super) struct AddPinLine {
    #[serde(rename = "Pins", default)]
    pub(super) pins: Option<Vec<String>>,
    #[serde(rename = "Progress", default)]
    pub(super) progress: Option<u64>,
    #[serde(rename = "Bytes", default)]
    pub(super) bytes: Option<u64>,
    #[serde(rename = "Message", default)]
    pub(super) message: Option<String>,
    #[serde(rename = "Type", default)]
    pub(super) kind: Option<String>,
}

impl AddPinLine {
    pub(super) fn error_message(&self) -> Option<String> {
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
pub(super) struct GcLine {
    #[serde(rename = "Key", default)]
    pub(super) key: Option<serde_json::Value>,
    #[serde(rename = "Error", default)]
    pub(super) error: Option<String>,
    #[serde(rename = "Message", default)]
    pub(super) message: Option<String>,
    #[serde(rename = "Type", default)]
    pub(super) kind: Option<String>,
}

impl GcLine {
    pub(super) fn error_message(&self) -> Option<String> {
        self.error
            .clone()
            .filter(|e| !e.is_empty())
            .map(|e| truncate(&e, MAX_MESSAGE_CHARS))
            .or_else(|| error_object(self.kind.as_deref(), self.message.as_deref()))
    }
}

fn error_object(kind: Option<&str>, message: Option<&str>) -> Option<String> {
    match (kind, message) {
        (Some("error"), Some(m)) => Some(truncate(m, MAX_MESSAGE_CHARS)),
        _ => None,
    }
}

#[derive(Deserialize)]
pub(super) struct RepoStatOut {
    #[serde(rename = "RepoSize")]
    pub(super) repo_size: u64,
    #[serde(rename = "StorageMax")]
    pub(super) storage_max: u64,
}

#[derive(Deserialize)]
pub(super) struct BlockStatOut {
    #[serde(rename = "Size")]
    pub(super) size: u64,
}

#[derive(Deserialize)]
pub(super) struct ResolveOut {
    #[serde(rename = "Path")]
    pub(super) path: String,
}
