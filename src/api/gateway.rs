//! Reading content back: `GET /ipfs/{cid}` and `GET /ipfs/{cid}/{path…}`
//! through this peer's IPFS node. A file is its bytes
//! (`application/octet-stream`, streamed as the node reads them, `ETag`
//! the CID, one `Range: bytes=…` answered 206 with `Content-Range`, 416
//! when it cannot be); a directory is a JSON listing of its entries
//! (`IpfsDirEntry`), which `pinfleet get` walks.
//!
//! It owns the HTTP side only (ranges, headers, error statuses); walking
//! DAGs belongs to the backend, and it must not write or pin anything.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::{ApiError, ApiState, Shared};
use crate::ipfs::content::{Content, EntryKind};
use crate::ipfs::path::IpfsPath;
use crate::ipfs::{IpfsBackend, IpfsError};
use crate::manifest::CidKey;
use crate::wire::{IpfsDirEntry, IpfsEntryType};

/// `GET /ipfs/{cid}`.
pub(super) async fn get_root(
    State(state): State<Shared>,
    Path(cid): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    read(&state, &format!("/ipfs/{cid}"), &headers).await
}

/// `GET /ipfs/{cid}/{path…}`.
pub(super) async fn get_path(
    State(state): State<Shared>,
    Path((cid, rest)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    read(&state, &format!("/ipfs/{cid}/{rest}"), &headers).await
}

async fn read(state: &ApiState, path: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    let path = IpfsPath::parse(path)
        .map_err(|e| ApiError::bad_request(format!("error parsing path: {e}")))?;
    let Some(backend) = state.ipfs.clone() else {
        return Err(read_error(IpfsError::NotConfigured));
    };
    let wait = state.resolve_timeout;
    let what = path.to_string();
    let content = match tokio::time::timeout(wait, backend.get(path)).await {
        Ok(r) => r.map_err(read_error)?,
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("cannot read {what}: no answer from the ipfs node within {wait:?}"),
            ));
        }
    };
    match content {
        Content::File { cid, size } => {
            let key = CidKey::from_cid(cid).map_err(|e| {
                read_error(IpfsError::Unsupported {
                    what: format!("reading {cid}: {e}"),
                })
            })?;
            Ok(file(backend, key, size, headers))
        }
        Content::Directory { cid, entries } => {
            let listing: Vec<IpfsDirEntry> = entries
                .into_iter()
                .map(|e| IpfsDirEntry {
                    name: e.name,
                    cid: e.cid.to_string(),
                    size: e.size,
                    kind: match e.kind {
                        EntryKind::File => IpfsEntryType::File,
                        EntryKind::Directory => IpfsEntryType::Directory,
                        EntryKind::Symlink => IpfsEntryType::Symlink,
                    },
                    target: e.target,
                })
                .collect();
            let mut resp = Json(listing).into_response();
            if let Some(tag) = CidKey::from_cid(cid).ok().and_then(|k| etag(&k)) {
                resp.headers_mut().insert(header::ETAG, tag);
            }
            Ok(resp)
        }
        Content::Symlink { cid, target } => Err(read_error(IpfsError::Unsupported {
            what: format!(
                "{cid} is a symlink to {}: it is not followed",
                crate::manifest::shown(&target)
            ),
        })),
    }
}

/// The `ETag` of content `key`: its CID, quoted.
fn etag(key: &CidKey) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("\"{key}\"")).ok()
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    /// The whole file (no range, or one this server ignores: several
    /// ranges, another unit, a malformed header).
    Whole,
    /// Bytes `start ..= last`.
    Part { start: u64, last: u64 },
    /// A range the file cannot satisfy (416).
    Unsatisfiable,
}

/// Reads one `Range: bytes=a-b | a- | -n` against a file of `size` bytes,
/// as RFC 9110 §14 says: an end past the file is cut to its last byte, a
/// suffix longer than the file is the whole file, a start at or past the
/// end cannot be satisfied. Anything else is ignored (the whole file).
fn wanted(range: Option<&str>, size: u64) -> Wanted {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Wanted::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        // Longer than u64: past any file.
        Some(s.parse().unwrap_or(u64::MAX))
    };
    match (a.trim().is_empty(), number(a), number(b)) {
        // `-n`: the last n bytes.
        (true, _, Some(n)) => {
            if n == 0 || size == 0 {
                Wanted::Unsatisfiable
            } else {
                Wanted::Part {
                    start: size.saturating_sub(n),
                    last: size - 1,
                }
            }
        }
        (false, Some(start), end) if b.trim().is_empty() || end.is_some() => {
            if end.is_some_and(|e| e < start) {
                return Wanted::Whole;
            }
            if start >= size {
                return Wanted::Unsatisfiable;
            }
            let last = end.map_or(size - 1, |e| e.min(size - 1));
            Wanted::Part { start, last }
        }
        _ => Wanted::Whole,
    }
}

/// The answer for the file `key` of `size` bytes.
fn file(
    backend: std::sync::Arc<dyn IpfsBackend>,
    key: CidKey,
    size: u64,
    h: &HeaderMap,
) -> Response {
    let tag = etag(&key);
    let header_text = |name| h.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    if let (Some(tag), Some(inm)) = (&tag, header_text(header::IF_NONE_MATCH))
        && inm
            .split(',')
            .any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == tag)
    {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        resp.headers_mut().insert(header::ETAG, tag.clone());
        return resp;
    }
    // An `If-Range` that is not this file's ETag asks for the whole file.
    let range_applies = match header_text(header::IF_RANGE) {
        None => true,
        Some(t) => tag.as_ref().is_some_and(|tag| t.trim() == tag),
    };
    let range = header_text(header::RANGE).filter(|_| range_applies);
    let (status, start, len) = match wanted(range, size) {
        Wanted::Whole => (StatusCode::OK, 0, size),
        Wanted::Part { start, last } => (StatusCode::PARTIAL_CONTENT, start, last - start + 1),
        Wanted::Unsatisfiable => {
            let mut resp = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!(
                    "the range {} is outside the file's {size} bytes",
                    shown_range(range)
                ),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return resp;
        }
    };
    let body = Body::from_stream(exactly(Some(backend.cat(key, start, len)), key, len));
    let mut resp = (status, body).into_response();
    let hs = resp.headers_mut();
    hs.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    hs.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    hs.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Some(tag) = tag {
        hs.insert(header::ETAG, tag);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + len - 1))
    {
        hs.insert(header::CONTENT_RANGE, v);
    }
    resp
}

fn shown_range(range: Option<&str>) -> String {
    crate::manifest::shown(range.unwrap_or_default()).to_string()
}

/// `stream` cut to `len` bytes, failing when it ends before (the answer
/// then breaks off: its `Content-Length` says more). Failures are logged:
/// the client sees only a body that ends early.
fn exactly(
    stream: Option<futures::stream::BoxStream<'static, Result<bytes::Bytes, IpfsError>>>,
    key: CidKey,
    len: u64,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    futures::stream::unfold(
        (stream, 0u64, false),
        move |(mut s, sent, done)| async move {
            if done || sent >= len {
                return None;
            }
            let failed = |e: std::io::Error| {
                tracing::warn!(cid = %key, error = %e, "reading content failed mid-answer");
                Some((Err(e), (None, sent, true)))
            };
            match s.as_mut()?.next().await {
                Some(Ok(mut b)) => {
                    let room = usize::try_from(len - sent).unwrap_or(usize::MAX);
                    b.truncate(room);
                    let sent = sent + b.len() as u64;
                    Some((Ok(b), (s, sent, false)))
                }
                Some(Err(e)) => failed(std::io::Error::other(e)),
                None => failed(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the node sent {sent} of {len} bytes of {key}"),
                )),
            }
        },
    )
}

/// The answer for a read the node could not do.
fn read_error(e: IpfsError) -> ApiError {
    let status = match &e {
        IpfsError::NotFound { .. } | IpfsError::Resolve { .. } => StatusCode::NOT_FOUND,
        IpfsError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        IpfsError::NotConfigured | IpfsError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        IpfsError::Unsupported { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::BAD_GATEWAY,
    };
    let message = match &e {
        IpfsError::NotFound { cid } => format!(
            "{cid} not found: neither this peer's ipfs node nor a node connected to it has it"
        ),
        other => format!("cannot read: {other}"),
    };
    ApiError::new(status, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(start: u64, last: u64) -> Wanted {
        Wanted::Part { start, last }
    }

    #[test]
    fn single_ranges_are_cut_to_the_file() {
        let w = |r: &str| wanted(Some(r), 1000);
        assert_eq!(w("bytes=0-0"), part(0, 0));
        assert_eq!(w("bytes=10-19"), part(10, 19));
        assert_eq!(w("bytes=990-5000"), part(990, 999));
        assert_eq!(w("bytes=500-"), part(500, 999));
        assert_eq!(w("bytes=-1"), part(999, 999));
        assert_eq!(w("bytes=-300"), part(700, 999));
        assert_eq!(w("bytes=-5000"), part(0, 999));
        assert_eq!(w("bytes=999-999"), part(999, 999));
        assert_eq!(w(" bytes= 3 - 4 "), part(3, 4));
        assert_eq!(w("bytes=0-99999999999999999999999"), part(0, 999));
    }

    #[test]
    fn ranges_past_the_end_are_unsatisfiable() {
        let w = |r: &str| wanted(Some(r), 1000);
        assert_eq!(w("bytes=1000-"), Wanted::Unsatisfiable);
        assert_eq!(w("bytes=1000-2000"), Wanted::Unsatisfiable);
        assert_eq!(w("bytes=-0"), Wanted::Unsatisfiable);
        assert_eq!(w("bytes=99999999999999999999999-"), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=0-"), 0), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=-5"), 0), Wanted::Unsatisfiable);
    }

    #[test]
    fn other_ranges_are_ignored_for_the_whole_file() {
        for r in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=5-2",
            "bytes=+1-2",
            "bytes=1",
        ] {
            assert_eq!(wanted(Some(r), 1000), Wanted::Whole, "{r}");
        }
        assert_eq!(wanted(None, 1000), Wanted::Whole);
    }

    async fn body_of(pieces: &[&'static [u8]], len: u64) -> (Vec<u8>, Option<std::io::Error>) {
        let items: Vec<Result<bytes::Bytes, IpfsError>> = pieces
            .iter()
            .map(|p| Ok(bytes::Bytes::from_static(p)))
            .collect();
        let key = CidKey::parse("bafkqaaa").unwrap();
        let mut s = std::pin::pin!(exactly(
            Some(futures::stream::iter(items).boxed()),
            key,
            len
        ));
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn a_body_is_cut_to_its_length_and_fails_when_it_ends_short() {
        let (out, err) = body_of(&[b"abc", b"def"], 4).await;
        assert_eq!((out.as_slice(), err.is_none()), (&b"abcd"[..], true));
        let (out, err) = body_of(&[b"abc"], 6).await;
        assert_eq!(out, b"abc");
        assert_eq!(err.unwrap().kind(), std::io::ErrorKind::UnexpectedEof);
        let (out, err) = body_of(&[b"abc"], 3).await;
        assert_eq!((out.as_slice(), err.is_none()), (&b"abc"[..], true));
    }

    #[test]
    fn read_errors_answer_the_statuses_the_api_documents() {
        let key = CidKey::parse("bafkqaaa").unwrap();
        let status = |e| read_error(e).status().as_u16();
        assert_eq!(status(IpfsError::NotFound { cid: key }), 404);
        let resolve = IpfsError::Resolve {
            path: "/ipfs/x/y".into(),
            reason: "no link".into(),
        };
        assert_eq!(status(resolve), 404);
        assert_eq!(status(IpfsError::NotConfigured), 503);
        let slow = IpfsError::Timeout {
            operation: "x".into(),
            stalled_for: std::time::Duration::from_secs(1),
        };
        assert_eq!(status(slow), 504);
        let what = "x".to_string();
        assert_eq!(status(IpfsError::Unsupported { what }), 422);
        let garbage = IpfsError::Garbage { what: "x".into() };
        assert_eq!(status(garbage), 502);
    }
}
