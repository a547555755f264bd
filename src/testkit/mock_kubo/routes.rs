//! The mock's answers: one handler per Kubo RPC endpoint, in Kubo's JSON
//! shapes, after the scripted latency, failures, downtime and garbage of
//! [`MockKubo`](super::MockKubo). Must not be reachable but through the
//! mock's server.

use std::io;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cid::Cid;
use futures::{Stream, StreamExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{BYTES_PER_NODE, Ctx, DEFAULT_BLOCK_SIZE, MockCall, spellings};
use crate::ipfs::PinKind;
use crate::manifest::CidKey;

/// A parsed request: the command and its query.
struct Req {
    endpoint: String,
    query: Vec<(String, String)>,
}

impl Req {
    fn args(&self) -> Vec<String> {
        self.query
            .iter()
            .filter(|(k, _)| k == "arg")
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A boolean option the way Go's `strconv.ParseBool` reads it.
    fn flag(&self, name: &str, default: bool) -> Result<bool, Refusal> {
        match self.query.iter().rev().find(|(k, _)| k == name) {
            None => Ok(default),
            Some((_, v)) => match v.as_str() {
                "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
                "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
                other => Err(refuse(
                    StatusCode::BAD_REQUEST,
                    1,
                    &format!(
                        "could not convert value {other:?} to type \"bool\" (for option \"-{name}\")"
                    ),
                )),
            },
        }
    }

    fn option(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(super) async fn dispatch(State(ctx): State<Ctx>, request: axum::extract::Request) -> Response {
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let Some(endpoint) = uri.path().strip_prefix("/api/v0/") else {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    let req = Req {
        endpoint: endpoint.trim_end_matches('/').to_string(),
        query: query_pairs(&uri),
    };
    let (latency, failure, down, garbage) = {
        let mut state = ctx.state();
        state.calls.push(MockCall {
            endpoint: req.endpoint.clone(),
            args: req.args(),
            query: req.query.clone(),
        });
        (
            state.latency,
            state.failures.pop_front(),
            state.down,
            state.garbage,
        )
    };
    if !latency.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(latency) => {}
            () = ctx.kill.cancelled() => return stopping(),
        }
    }
    if method != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "405 - Method Not Allowed\n");
    }
    if down {
        return kubo_error(StatusCode::SERVICE_UNAVAILABLE, 0, "mock kubo is down");
    }
    if let Some((status, message)) = failure {
        return kubo_error(status, 0, &message);
    }
    if garbage {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            Bytes::from_static(b"\x00\x9f<html>definitely {not json\n"),
        )
            .into_response();
    }
    let result = match req.endpoint.as_str() {
        "id" => Ok(id(&ctx)),
        "pin/add" => pin_add(&ctx, &req).await,
        "pin/rm" => pin_rm(&ctx, &req),
        "pin/ls" => pin_ls(&ctx, &req),
        "pin/update" => pin_update(&ctx, &req),
        "repo/stat" => repo_stat(&ctx, &req),
        "repo/gc" => Ok(repo_gc(&ctx)),
        "swarm/connect" => swarm_connect(&ctx, &req),
        "block/stat" => block_stat(&ctx, &req),
        "block/get" => block_get(&ctx, &req),
        "resolve" => resolve(&ctx, &req),
        "files/stat" => files_stat(&ctx, &req),
        "ls" => ls(&ctx, &req),
        "cat" => cat(&ctx, &req),
        "add" => Ok(super::add::add(&ctx, &req.query, request).await),
        "dag/import" => Ok(super::add::dag_import(&ctx, &req.query, request).await),
        _ => Ok(text(StatusCode::NOT_FOUND, "404 page not found\n")),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    let Some(q) = uri.query() else {
        return Vec::new();
    };
    reqwest::Url::parse(&format!("http://mock/?{q}"))
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn stopping() -> Response {
    kubo_error(StatusCode::SERVICE_UNAVAILABLE, 0, "mock kubo is stopping")
}

/// A request the mock turns down, answered as Kubo's error object.
struct Refusal {
    status: StatusCode,
    code: u32,
    message: String,
}

fn refuse(status: StatusCode, code: u32, message: &str) -> Refusal {
    Refusal {
        status,
        code,
        message: message.to_string(),
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        kubo_error(self.status, self.code, &self.message)
    }
}

/// Kubo's error answer: `{"Message":…,"Code":…,"Type":"error"}`.
pub(super) fn kubo_error(status: StatusCode, code: u32, message: &str) -> Response {
    json_response(
        status,
        &json!({"Message": message, "Code": code, "Type": "error"}),
    )
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut body = value.to_string();
    body.push('\n'); // Go's json.Encoder ends every value with a newline
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn json_ok(value: &serde_json::Value) -> Response {
    json_response(StatusCode::OK, value)
}

pub(super) fn line(value: &serde_json::Value) -> Bytes {
    let mut s = value.to_string();
    s.push('\n');
    Bytes::from(s)
}

/// A streamed (channel) answer, headers as go-ipfs-cmds sets them. Ends
/// with an error, breaking the connection, when the mock is stopped.
pub(super) fn streamed<S>(ctx: &Ctx, lines: S) -> Response
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    let body = Body::from_stream(killable(lines, ctx.kill.clone()));
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert("X-Chunked-Output", HeaderValue::from_static("1"));
    h.insert(header::TRAILER, HeaderValue::from_static("X-Stream-Error"));
    resp
}

fn killable<S>(lines: S, kill: CancellationToken) -> impl Stream<Item = io::Result<Bytes>> + Send
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    futures::stream::unfold(
        (Box::pin(lines), kill, false),
        |(mut lines, kill, over)| async move {
            if over {
                return None;
            }
            tokio::select! {
                biased;
                () = kill.cancelled() => {
                    Some((Err(io::Error::other("mock kubo stopped")), (lines, kill, true)))
                }
                item = lines.next() => item.map(|b| (Ok(b), (lines, kill, false))),
            }
        },
    )
}

fn required_cid(req: &Req, name: &str) -> Result<Cid, Refusal> {
    let Some(arg) = req.args().into_iter().next() else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            1,
            &format!("argument {name:?} is required"),
        ));
    };
    parse_cid(&arg)
}

fn parse_cid(arg: &str) -> Result<Cid, Refusal> {
    let raw = arg.strip_prefix("/ipfs/").unwrap_or(arg);
    Cid::try_from(raw).map_err(|e| {
        refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            0,
            &format!("invalid path {arg:?}: {e}"),
        )
    })
}

fn id(ctx: &Ctx) -> Response {
    let peer = ctx.state().peer_id.clone();
    let port = ctx.shared.addr.port();
    json_ok(&json!({
        "ID": peer,
        "PublicKey": "CAESIMockMockMockMockMockMockMockMockMockMockMo=",
        "Addresses": [format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}")],
        "AgentVersion": "kubo/0.39.0/pinfleet-mock",
        "Protocols": ["/ipfs/bitswap/1.2.0", "/ipfs/id/1.0.0", "/ipfs/kad/1.0.0"],
    }))
}

enum AddPlan {
    Now,
    Never,
    Slow(u64, Duration),
    Midstream(String),
}

async fn pin_add(ctx: &Ctx, req: &Req) -> Result<Response, Refusal> {
    let cid = required_cid(req, "ipfs-path")?;
    let recursive = req.flag("recursive", true)?;
    let progress = req.flag("progress", false)?;
    let args = req.args();
    if args.len() > 1 && !progress {
        // Several at once, as Kubo: each in turn, the first failure ends it.
        let kind = if recursive {
            PinKind::Recursive
        } else {
            PinKind::Direct
        };
        let mut pinned = Vec::new();
        for arg in &args {
            let c = parse_cid(arg)?;
            record_pin(ctx, c, kind)?;
            pinned.push(c.to_string());
        }
        return Ok(json_ok(&json!({ "Pins": pinned })));
    }
    let key = CidKey::from_cid(cid)
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, 0, &e.to_string()))?;
    let (plan, heartbeat) = {
        let state = ctx.state();
        let plan = if state.never.contains(&key) {
            AddPlan::Never
        } else if let Some(&(steps, every)) = state.slow.get(&key) {
            AddPlan::Slow(steps, every)
        } else if let Some(message) = state.midstream.get(&key) {
            AddPlan::Midstream(message.clone())
        } else {
            AddPlan::Now
        };
        (plan, state.heartbeat)
    };
    let kind = if recursive {
        PinKind::Recursive
    } else {
        PinKind::Direct
    };
    let done = line(&json!({"Pins": [cid.to_string()]}));
    match plan {
        AddPlan::Now => {
            record_pin(ctx, cid, kind)?;
            if progress {
                Ok(streamed(ctx, futures::stream::iter([done])))
            } else {
                Ok(json_ok(&json!({"Pins": [cid.to_string()]})))
            }
        }
        AddPlan::Never if progress => {
            let beats =
                tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(heartbeat))
                    .map(|_| Bytes::from_static(b"{}\n"));
            Ok(streamed(ctx, beats))
        }
        AddPlan::Never => {
            // Kubo sends nothing, not even headers, until the pin is done.
            ctx.kill.cancelled().await;
            Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                0,
                "mock kubo is stopping",
            ))
        }
        AddPlan::Slow(steps, every) if progress => {
            let ctx2 = ctx.clone();
            let steps = futures::stream::unfold(1u64, move |i| async move {
                if i > steps {
                    return None;
                }
                tokio::time::sleep(every).await;
                let l = line(&json!({"Progress": i, "Bytes": i * BYTES_PER_NODE}));
                Some((l, i + 1))
            });
            let finish = futures::stream::once(async move {
                match record_pin(&ctx2, cid, kind) {
                    Ok(()) => done,
                    Err(_) => line(&json!({
                        "Message": format!("{cid} already pinned recursively"),
                        "Code": 0,
                        "Type": "error",
                    })),
                }
            });
            Ok(streamed(ctx, steps.chain(finish)))
        }
        AddPlan::Slow(steps, every) => {
            let total = every.saturating_mul(u32::try_from(steps).unwrap_or(u32::MAX));
            tokio::select! {
                () = tokio::time::sleep(total) => {}
                () = ctx.kill.cancelled() => return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, 0, "mock kubo is stopping")),
            }
            record_pin(ctx, cid, kind)?;
            Ok(json_ok(&json!({"Pins": [cid.to_string()]})))
        }
        AddPlan::Midstream(message) => {
            let lines = [
                line(&json!({"Progress": 1, "Bytes": BYTES_PER_NODE})),
                line(&json!({"Message": message, "Code": 0, "Type": "error"})),
            ];
            Ok(streamed(ctx, futures::stream::iter(lines)))
        }
    }
}

fn record_pin(ctx: &Ctx, cid: Cid, kind: PinKind) -> Result<(), Refusal> {
    let mut state = ctx.state();
    match (state.pins.get(&cid), kind) {
        (Some(PinKind::Recursive), PinKind::Direct) => Err(refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            0,
            &format!("{cid} already pinned recursively"),
        )),
        _ => {
            state.pins.insert(cid, kind);
            state.collectable.remove(&cid);
            Ok(())
        }
    }
}

fn pin_rm(ctx: &Ctx, req: &Req) -> Result<Response, Refusal> {
    let recursive = req.flag("recursive", true)?;
    let args = req.args();
    if args.is_empty() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            1,
            "argument \"ipfs-path\" is required",
        ));
    }
    let cids = args
        .iter()
        .map(|a| parse_cid(a))
        .collect::<Result<Vec<_>, _>>()?;
    let mut state = ctx.state();
    let mut removed = Vec::new();
    for cid in cids {
        // boxo's pinner: a recursive pin needs recursive=true; a direct pin
        // goes either way; anything else is ErrNotPinned.
        match state.pins.get(&cid) {
            Some(PinKind::Recursive) if !recursive => {
                return Err(refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    0,
                    &format!("{cid} is pinned recursively"),
                ));
            }
            Some(PinKind::Recursive | PinKind::Direct) => {
                state.pins.remove(&cid);
                state.collectable.insert(cid);
                removed.push(cid.to_string());
            }
            Some(PinKind::Indirect) | None => {
                return Err(refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    0,
                    "not pinned or pinned indirectly",
                ));
            }
        }
    }
    Ok(json_ok(&json!({ "Pins": removed })))
}

fn pin_ls(ctx: &Ctx, req: &Req) -> Result<Response, Refusal> {
    let stream = req.flag("stream", false)?;
    let wanted = match req.option("type").unwrap_or("all") {
        "all" => None,
        t => Some(PinKind::parse(t).ok_or_else(|| {
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                0,
                &format!("invalid type '{t}', must be one of {{direct, indirect, recursive, all}}"),
            )
        })?),
    };
    let filter: Vec<Cid> = req
        .args()
        .iter()
        .map(|a| parse_cid(a))
        .collect::<Result<_, _>>()?;
    let listed: Vec<(String, PinKind)> = {
        let state = ctx.state();
        if filter.is_empty() {
            state
                .pins
                .iter()
                .filter(|(_, k)| wanted.is_none_or(|w| w == **k))
                .map(|(c, k)| (c.to_string(), *k))
                .collect()
        } else {
            let mut out = Vec::new();
            for (cid, arg) in filter.iter().zip(req.args()) {
                match state.pins.get(cid) {
                    Some(k) if wanted.is_none_or(|w| w == *k) => out.push((cid.to_string(), *k)),
                    _ => {
                        return Err(refuse(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            0,
                            &format!("path '{arg}' is not pinned"),
                        ));
                    }
                }
            }
            out
        }
    };
    if stream {
        let chunks = futures::stream::iter(listed).chunks(1024).map(|chunk| {
            let mut buf = Vec::with_capacity(chunk.len() * 80);
            for (cid, kind) in chunk {
                buf.extend_from_slice(&line(&json!({"Cid": cid, "Type": kind.as_str()})));
            }
            Bytes::from(buf)
        });
        Ok(streamed(ctx, chunks))
    } else {
        let keys: serde_json::Map<String, serde_json::Value> = listed
            .into_iter()
            .map(|(cid, kind)| (cid, json!({"Type": kind.as_str(), "Name": ""})))
            .collect();
        Ok(json_ok(&json!({ "Keys": keys })))
    }
}

fn pin_update(ctx: &Ctx, req: &Req) -> Result<Response, Refusal> {
    let unpin = req.flag("unpin", true)?;
    let args = req.args();
    let (from, to) = match args.as_slice() {
        [from, to] => (parse_cid(from)?, parse_cid(to)?),
        [_] => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                1,
                "argument \"to-path\" is required",
            ));
        }
        _ => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                1,
                "argument \"from-path\" is required",
            ));
        }
    };
    let mut state = ctx.state();
    if state.pins.get(&from) != Some(&PinKind::Recursive) {
        return Err(refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            0,
            "'from' cid was not recursively pinned already",
        ));
    }
    if unpin && from != to {
        state.pins.remove(&from);
        state.collectable.insert(from);
    }
    state.pins.insert(to, PinKind::Recursive);
    state.collectable.remove(&to);
    Ok(json_ok(
        &json!({"Pins": [from.to_string(), to.to_string()]}),
    ))
}

fn repo_stat(ctx: &Ctx, req: &Req) -> Result<Response, Refusal> {
    let size_only = req.flag("size-only", false)?;
    let state = ctx.state();
    // Kubo emits the whole Stat struct either way; size-only leaves the
    // counted fields zero.
    let (objects, path, version) = if size_only {
        (0, "", "")
    } else {
        (state.num_objects, "/mock/.ipfs", "fs-repo@16")
    };
    Ok(json_ok(&json!({
        "RepoSize": state.repo_size,
        "StorageMax": state.storage_max,
        "NumObjects": objects,
        "RepoPath": path,
        "Version": version,
    })))
}

fn repo_gc(ctx: &Ctx) -> Response {
    let removed: Vec<Cid> = std::mem::take(&mut ctx.state().collectable)
        .into_iter()
        .collect();
    let lines = removed
        .into_iter()
        .map(|c| line(&json!({"Key": {"/": c.to_string()}})));
    streamed(ctx, futures::stream::iter(lines))
}

fn swarm_connect(ctx: &Ctx, req: &Req) -> Result<Response, Refusal> {
    let args = req.args();
    if args.is_empty() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            1,
            "argument \"address\" is required",
        ));
    }
    let mut out = Vec::new();
    for addr in &args {
        if !addr.starts_with('/') {
            return Err(refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                0,
                &format!("failed to parse multiaddr {addr:?}: must begin with /"),
            ));
        }
        let peer = addr
            .rsplit_once("/p2p/")
            .map_or("unknown", |(_, p)| p)
            .to_string();
        out.push(format!("connect {peer} success"));
    }
    ctx.state().connected.extend(args);
    Ok(json_ok(&json!({ "Strings": out })))
}

/// The block's bytes, for blocks put with `put_raw_block`.
fn block_get(ctx: &Ctx, req: &Req) -> Result<Response, Refusal> {
    let cid = required_cid(req, "cid")?;
    let state = ctx.state();
    match state.raw_blocks.get(&cid) {
        Some(data) => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            data.clone(),
        )
            .into_response()),
        None => Err(refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            0,
            &format!("block was not found locally (offline): ipld: could not find {cid}"),
        )),
    }
}

fn block_stat(ctx: &Ctx, req: &Req) -> Result<Response, Refusal> {
    let cid = required_cid(req, "cid")?;
    let key = CidKey::from_cid(cid)
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, 0, &e.to_string()))?;
    let state = ctx.state();
    let size = state.block_sizes.get(&key).copied().or_else(|| {
        spellings(key)
            .iter()
            .any(|c| state.pins.contains_key(c))
            .then_some(DEFAULT_BLOCK_SIZE)
    });
    match size {
        Some(size) => Ok(json_ok(&json!({"Key": cid.to_string(), "Size": size}))),
        None => Err(refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            0,
            &format!("block was not found locally (offline): ipld: could not find {cid}"),
        )),
    }
}

/// `resolve /ipfs/<cid>/a/b`: follows the links set with `put_link`, and
/// answers Kubo's `{"Path": "/ipfs/<cid>"}` or its 500 for a missing link.
fn resolve(ctx: &Ctx, req: &Req) -> Result<Response, Refusal> {
    let Some(arg) = req.args().into_iter().next() else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            1,
            "argument \"name\" is required",
        ));
    };
    let bad = |m: String| refuse(StatusCode::INTERNAL_SERVER_ERROR, 0, &m);
    let rest = arg
        .strip_prefix("/ipfs/")
        .or_else(|| arg.strip_prefix("/ipld/"))
        .ok_or_else(|| {
            bad(format!(
                "could not resolve name: {arg:?} is not a valid path"
            ))
        })?;
    let mut parts = rest.split('/').filter(|p| !p.is_empty());
    let root = parts.next().unwrap_or_default();
    let mut at = Cid::try_from(root).map_err(|e| bad(format!("invalid path {arg:?}: {e}")))?;
    let state = ctx.state();
    for name in parts {
        let key = CidKey::from_cid(at).map_err(|e| bad(e.to_string()))?;
        at = *state
            .links
            .get(&(key, name.to_string()))
            .ok_or_else(|| bad(format!("no link named {name:?} under {at}")))?;
    }
    Ok(json_ok(&json!({ "Path": format!("/ipfs/{at}") })))
}

/// The CID `arg` (`/ipfs/<cid>/a/b` or a CID) leads to through the links
/// set with `put_link`/`put_dir`, or Kubo's 500 for a missing link.
fn walk(ctx: &Ctx, arg: &str) -> Result<CidKey, Refusal> {
    let bad = |m: String| refuse(StatusCode::INTERNAL_SERVER_ERROR, 0, &m);
    let rest = arg.strip_prefix("/ipfs/").unwrap_or(arg);
    let mut parts = rest.split('/').filter(|p| !p.is_empty());
    let root = parts.next().unwrap_or_default();
    let mut at = CidKey::parse(root).map_err(|e| bad(format!("invalid path {arg:?}: {e}")))?;
    let state = ctx.state();
    for name in parts {
        let child = state
            .links
            .get(&(at, name.to_string()))
            .ok_or_else(|| bad(format!("no link named {name:?} under {at}")))?;
        at = CidKey::from_cid(*child).map_err(|e| bad(e.to_string()))?;
    }
    Ok(at)
}

fn first_arg(req: &Req) -> Result<String, Refusal> {
    req.args().into_iter().next().ok_or_else(|| {
        refuse(
            StatusCode::BAD_REQUEST,
            1,
            "argument \"ipfs-path\" is required",
        )
    })
}

fn not_found(cid: CidKey) -> Refusal {
    refuse(
        StatusCode::INTERNAL_SERVER_ERROR,
        0,
        &format!("block was not found locally (offline): ipld: could not find {cid}"),
    )
}

/// `files/stat`: `{"Hash","Size","CumulativeSize","Blocks","Type"}` of a
/// file or directory put with `put_file`/`put_dir`.
fn files_stat(ctx: &Ctx, req: &Req) -> Result<Response, Refusal> {
    let cid = walk(ctx, &first_arg(req)?)?;
    let state = ctx.state();
    let (size, kind) = match (state.files.get(&cid), state.dirs.get(&cid)) {
        (Some(f), _) => (f.len() as u64, "file"),
        (None, Some(_)) => (0, "directory"),
        (None, None) => return Err(not_found(cid)),
    };
    Ok(json_ok(&json!({
        "Hash": cid.to_string(),
        "Size": size,
        "CumulativeSize": size,
        "Blocks": 0,
        "Type": kind,
    })))
}

/// `ls`: `{"Objects":[{"Hash","Links":[{"Name","Hash","Size","Type"}]}]}`
/// (Type 1 for a directory, 2 for a file).
fn ls(ctx: &Ctx, req: &Req) -> Result<Response, Refusal> {
    let cid = walk(ctx, &first_arg(req)?)?;
    let state = ctx.state();
    let entries = state.dirs.get(&cid).ok_or_else(|| not_found(cid))?;
    let links: Vec<serde_json::Value> = entries
        .iter()
        .map(|(name, child)| {
            let key = CidKey::from_cid(*child).ok();
            let file = key.and_then(|k| state.files.get(&k));
            json!({
                "Name": name,
                "Hash": child.to_string(),
                "Size": file.map_or(0, |f| f.len()),
                "Type": if file.is_some() { 2 } else { 1 },
                "Target": "",
            })
        })
        .collect();
    Ok(json_ok(&json!({
        "Objects": [{"Hash": cid.to_string(), "Links": links}]
    })))
}

/// `cat?offset=&length=`: the bytes of a file put with `put_file`, in
/// pieces of 64 KiB.
fn cat(ctx: &Ctx, req: &Req) -> Result<Response, Refusal> {
    let cid = walk(ctx, &first_arg(req)?)?;
    let number = |name: &str| -> Result<Option<usize>, Refusal> {
        req.option(name)
            .map(|v| {
                v.parse().map_err(|_| {
                    refuse(StatusCode::BAD_REQUEST, 1, &format!("invalid {name} {v:?}"))
                })
            })
            .transpose()
    };
    let (offset, length) = (number("offset")?, number("length")?);
    let file = ctx.state().files.get(&cid).cloned();
    let file = file.ok_or_else(|| not_found(cid))?;
    let start = offset.unwrap_or(0).min(file.len());
    let end = length.map_or(file.len(), |l| start.saturating_add(l).min(file.len()));
    let bytes = file.slice(start..end);
    let pieces: Vec<io::Result<Bytes>> = (0..bytes.len())
        .step_by(64 * 1024)
        .map(|at| Ok(bytes.slice(at..(at + 64 * 1024).min(bytes.len()))))
        .collect();
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(futures::stream::iter(pieces)),
    )
        .into_response())
}
