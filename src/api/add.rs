//! `POST /add`: IPFS Cluster's adder. A multipart body of files (and
//! directories, as `ipfs add -r` sends them) is imported as UnixFS into
//! this peer's IPFS node, then the root is pinned in the cluster (owner
//! `api`) with the query's pin options; the cluster's allocations fetch the
//! blocks from this peer.
//!
//! The body is received into a temporary directory (never held in memory)
//! and removed afterwards, however the request ends. A body over
//! `max_upload_bytes` is refused with 413 (before reading it when its
//! `Content-Length` says so), one that stalls for `read_timeout` with 408:
//! then nothing is imported or pinned. The answer follows IPFS Cluster: one
//! `AddedOutput` per file and directory as NDJSON (`stream-channels`, the
//! default), or one JSON array with `stream-channels=false`; the root comes
//! last, with its allocations. `no-pin=true` (IPFS Cluster's spelling) or
//! `pin=false` (Kubo's) only imports. This module must not decide what to pin
//! beyond the root the client asked for.

use std::path::{Component, Path, PathBuf};

use axum::Json;
use axum::body::Body;
use axum::extract::multipart::MultipartError;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::AsyncWriteExt;

use super::pins::{Params, RawParams, catch_up, get_pin, pin_spec};
use super::{ApiError, ApiState};
use crate::ipfs::unixfs::{AddOptions, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE};
use crate::ipfs::{AddInput, AddOpts};
use crate::manifest::shown;
use crate::manifest::{CidKey, written_as_of};
use crate::wire::AddedOutput;

/// The import options of a query (`cid-version`, `raw-leaves`, `chunker`,
/// `hidden`, `layout`, `hash`, `shard`, `trickle`), refusing what pinfleet
/// cannot produce identically to Kubo.
pub fn import_options(p: &Params) -> Result<AddOptions, ApiError> {
    let bad = ApiError::bad_request;
    let mut opts = AddOptions::default();
    match p.get("cid-version") {
        None | Some("0") => {}
        Some("1") => opts.cid_version = cid::Version::V1,
        Some(v) => {
            return Err(bad(format!(
                "invalid cid-version {}: expected 0 or 1",
                shown(v)
            )));
        }
    }
    if p.get("raw-leaves").is_some() {
        opts.raw_leaves = Some(p.flag("raw-leaves")?);
    }
    // Clients filter hidden files (`hidden` is theirs, as in IPFS Cluster):
    // whatever was sent is imported.
    let _ = p.flag("hidden")?;
    opts.hidden = true;
    if p.get("format").is_some_and(|f| f != "unixfs") {
        return Err(bad(
            "unsupported format: only unixfs (CAR imports are not supported yet)".into(),
        ));
    }
    if p.flag("nocopy")? {
        return Err(bad("nocopy (filestore) is not supported".into()));
    }
    match p.get("chunker") {
        None => {}
        Some(c) => {
            let size = c
                .strip_prefix("size-")
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| (1..=MAX_CHUNK_SIZE).contains(n))
                .ok_or_else(|| {
                    bad(format!(
                        "unsupported chunker {}: only size-N (1 to {MAX_CHUNK_SIZE}; default size-{DEFAULT_CHUNK_SIZE})", shown(c)
                    ))
                })?;
            opts.chunk_size = size;
        }
    }
    match p.get("layout") {
        None | Some("balanced") => {}
        Some(l) => {
            return Err(bad(format!(
                "unsupported layout {}: only balanced",
                shown(l)
            )));
        }
    }
    if p.flag("trickle")? {
        return Err(bad("unsupported layout trickle: only balanced".into()));
    }
    match p.get("hash") {
        None | Some("sha2-256") => {}
        Some(h) => {
            return Err(bad(format!("unsupported hash {}: only sha2-256", shown(h))));
        }
    }
    if p.flag("shard")? {
        return Err(bad("sharded adds are not supported yet".into()));
    }
    Ok(opts)
}

/// A relative path from a multipart filename (percent-encoded, `/`
/// separated, as Kubo's clients send it); refuses absolute paths and `..`.
fn entry_path(filename: &str) -> Result<PathBuf, ApiError> {
    let decoded = percent_decode(filename);
    let path = Path::new(&decoded);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => {
                return Err(ApiError::bad_request(format!(
                    "invalid file name {}: must be a relative path without `..`",
                    shown(filename)
                )));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(ApiError::bad_request(format!(
            "invalid file name {}: empty",
            shown(filename)
        )));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> String {
    // Go clients escape names with url.QueryEscape: `+` is a space. A `%`
    // not followed by two hex digits is kept as is.
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// Removes the upload directory when the request ends, however it ends.
struct Upload(PathBuf);

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// 413 for an upload over `cap` bytes.
fn too_large(cap: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the upload is larger than the limit of {cap} bytes (api.max_upload_bytes)"),
    )
}

/// A multipart error as an answer: 413 when the body went over the route's
/// limit (see `router`), else 400 with `what`.
fn multipart_error(e: MultipartError, cap: u64, what: &str) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(cap)
    } else {
        ApiError::bad_request(format!("{what}: {e}"))
    }
}

/// Receives the multipart body under `dir`; returns the top-level entries
/// in the order they arrived. The body is cut off (413) past `cap` bytes
/// and (408) when nothing arrives for `idle`.
async fn receive(
    mut form: Multipart,
    dir: &Path,
    cap: u64,
    idle: std::time::Duration,
) -> Result<Vec<PathBuf>, ApiError> {
    let mut top: Vec<PathBuf> = Vec::new();
    while let Some(mut field) = tokio::time::timeout(idle, form.next_field())
        .await
        .map_err(|_| super::body_timeout(idle))?
        .map_err(|e| multipart_error(e, cap, "invalid multipart body"))?
    {
        let Some(name) = field.file_name().map(str::to_string) else {
            return Err(ApiError::bad_request(
                "every multipart part needs a filename",
            ));
        };
        let rel = entry_path(&name)?;
        if let Some(Component::Normal(first)) = rel.components().next() {
            let first = PathBuf::from(first);
            if !top.contains(&first) {
                top.push(first);
            }
        }
        let target = dir.join(&rel);
        if field
            .content_type()
            .is_some_and(|t| t.starts_with("application/symlink"))
        {
            return Err(ApiError::bad_request(format!(
                "{name}: symbolic links are not supported by /add yet"
            )));
        }
        let is_dir = field
            .content_type()
            .is_some_and(|t| t.starts_with("application/x-directory"));
        let io = |e: std::io::Error| ApiError::internal(format!("cannot store the upload: {e}"));
        if is_dir {
            tokio::fs::create_dir_all(&target).await.map_err(io)?;
            continue;
        }
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        let mut file = tokio::fs::File::create(&target).await.map_err(io)?;
        while let Some(chunk) = tokio::time::timeout(idle, field.chunk())
            .await
            .map_err(|_| super::body_timeout(idle))?
            .map_err(|e| multipart_error(e, cap, "the upload broke off"))?
        {
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
    }
    Ok(top)
}

/// `POST /add`.
pub(super) async fn add(
    State(state): State<ApiState>,
    query: RawParams,
    headers: HeaderMap,
    form: Multipart,
) -> Result<Response, ApiError> {
    // A declared length over the cap is refused before anything is read
    // or stored; a body that grows past it is cut off by the route's limit.
    let cap = state.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap) {
        return Err(too_large(cap));
    }
    let params = Params::from_query(query)?;
    let import = import_options(&params)?;
    let wrap = params.flag("wrap-with-directory")?;
    let stream = params.get("stream-channels") != Some("false");
    // Kubo's `pin=false`: import only, into this peer's node (unpinned
    // there, so its gc may remove it); nothing is pinned in the cluster.
    let cluster_pin = params.get("pin") != Some("false") && !params.flag("no-pin")?;
    let spec = pin_spec(&params, chrono::Utc::now().timestamp_millis())?;
    let backend = state
        .ipfs
        .clone()
        .filter(|b| b.kind() != "none")
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "this peer has no IPFS node to add to (ipfs.backend = none)",
            )
        })?;
    if !backend.can_add() {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "the {} backend cannot import content: add through a peer with the embedded backend",
                backend.kind()
            ),
        ));
    }

    let dir = state
        .upload_dir
        .join(format!("add-{:016x}", rand::random::<u64>()));
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::internal(format!("cannot create {}: {e}", dir.display())))?;
    let _cleanup = Upload(dir.clone());
    let top = receive(form, &dir, cap, state.read_timeout).await?;
    let input = match (top.as_slice(), wrap) {
        ([], _) => {
            return Err(ApiError::bad_request(
                "nothing to add: the body has no file",
            ));
        }
        ([one], false) => dir.join(one),
        (_, false) => {
            return Err(ApiError::bad_request(
                "several files or directories: add them with wrap-with-directory=true",
            ));
        }
        (_, true) => dir.clone(),
    };
    let added = backend
        .add(AddInput::Path(input), AddOpts { pin: false, import })
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("add failed: {e}")))?;

    // Pin the root in the cluster, echoing it as the importer wrote it.
    let key: CidKey = added.root;
    let root_text = added
        .entries
        .last()
        .map_or_else(|| key.to_string(), |e| e.cid.to_string());
    let mut allocations = Vec::new();
    if cluster_pin {
        let out = state
            .node
            .pin(key, written_as_of(&key, &root_text), spec)
            .await?;
        if let Some(r) = out.refused {
            return Err(ApiError::new(StatusCode::CONFLICT, r));
        }
        catch_up(&state.node).await;
        allocations = get_pin(&state.node, key)
            .await?
            .map(|p| p.allocations)
            .unwrap_or_default();
    }

    // A wrapped add imports the upload directory itself: its name is the
    // root's (empty, as in IPFS Cluster), not a prefix of every entry.
    let wrapper = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|_| wrap);
    let display = |name: &str| match &wrapper {
        Some(w) if name == w => String::new(),
        Some(w) => name
            .strip_prefix(w.as_str())
            .and_then(|n| n.strip_prefix('/'))
            .unwrap_or(name)
            .to_string(),
        None => name.to_string(),
    };
    let mut outputs: Vec<AddedOutput> = added
        .entries
        .iter()
        .map(|e| AddedOutput {
            name: display(&e.name),
            cid: e.cid.to_string(),
            bytes: e.bytes,
            size: e.size,
            allocations: Vec::new(),
        })
        .collect();
    match outputs.last_mut() {
        Some(last) if last.cid == root_text => last.allocations = allocations,
        _ => outputs.push(AddedOutput {
            name: String::new(),
            cid: root_text,
            bytes: 0,
            size: 0,
            allocations,
        }),
    }
    if !stream {
        return Ok(Json(outputs).into_response());
    }
    let mut body = String::new();
    for o in &outputs {
        body.push_str(&serde_json::to_string(o).map_err(|e| ApiError::internal(e.to_string()))?);
        body.push('\n');
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::HeaderName::from_static("x-chunked-output"), "1"),
        ],
        Body::from(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_are_relative_paths_percent_decoded() {
        assert_eq!(
            entry_path("dir%2Fsub%2Fa%20b.txt").unwrap(),
            PathBuf::from("dir/sub/a b.txt")
        );
        assert_eq!(entry_path("./x").unwrap(), PathBuf::from("x"));
        for bad in ["/etc/passwd", "../x", "a/../../b", "", "%2F"] {
            assert!(entry_path(bad).is_err(), "{bad}");
        }
        assert_eq!(percent_decode("a+b%2Bc"), "a b+c");
        // A stray % is kept as is.
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
