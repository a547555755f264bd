//! `POST /add`: IPFS Cluster's adder. A multipart body of files (and
//! directories, as `ipfs add -r` sends them) is imported into this peer's
//! IPFS node (UnixFS on the embedded node, proxied to Kubo's `add` on a
//! Kubo peer; `format=car`: a CAR's blocks), then the root is pinned in the
//! cluster (owner `api`) with the query's pin options; the cluster's
//! allocations fetch the blocks from this peer.
//!
//! On a backend that streams the import
//! ([`IpfsBackend::streams_add`]: the embedded node) the body goes straight
//! into the importer as it arrives (`parts`): no temporary directory, no
//! file on disk, and the bounded hand-over slows the upload down to the
//! import's pace instead of buffering it. On the Kubo backend, which
//! re-uploads to Kubo from files, the body is received into a temporary
//! directory (never held in memory), removed afterwards however the
//! request ends. Either way each top-level entry is imported while the
//! rest still uploads (streamed: from its first part; spooled: once its
//! last part arrived), and several top-level entries without
//! `wrap-with-directory` are added one after another with only the last
//! root pinned (IPFS Cluster's behaviour). A body over `max_upload_bytes`
//! is refused with 413 (before reading it when its `Content-Length` says
//! so), one that stalls for `read_timeout` with 408. The answer follows IPFS Cluster: one
//! `AddedOutput` per file and directory as NDJSON, each sent as soon as it
//! is imported (`stream-channels`, the default), or one JSON array with
//! `stream-channels=false`; with `progress=true` also progress objects; the
//! pinned root comes last, with its allocations. An error after the first
//! entry ends the stream with the `X-Stream-Error` trailer and pins
//! nothing. `no-pin=true` (IPFS Cluster's spelling) or `pin=false` (Kubo's)
//! only imports. `shard=true` (IPFS Cluster's sharded add, see `shard`)
//! sends the blocks to chosen peers instead of this node's store and pins
//! the shards, cluster DAG and content root. This module must not decide
//! what to pin beyond the root the client asked for (and, sharded, its
//! shards).

use std::path::{Component, Path, PathBuf};

use std::sync::Arc;

use axum::Json;
use axum::extract::multipart::MultipartError;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

mod parts;
pub(super) mod shard;

use super::pins::{Params, RawParams, get_pin, pin_spec};
use super::{ApiError, Shared};
use crate::ipfs::unixfs::{AddOptions, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE};
use crate::ipfs::{AddEvent, AddInput, AddOpts, IpfsBackend, IpfsError};
use crate::manifest::shown;
use crate::manifest::{CidKey, PinMode, PinSpec, written_as_of};
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
    match p.get("format") {
        None | Some("unixfs" | "car") => {}
        Some(f) => {
            return Err(bad(format!(
                "unsupported format {}: unixfs or car",
                shown(f)
            )));
        }
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
    // `shard` is the add's, not the importer's (see `shard::context`).
    let _ = p.flag("shard")?;
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

/// Receives the multipart body under `dir`, sending each top-level entry
/// on `done` as soon as it is complete (when a part of another entry
/// starts: sent with `true`, more follows; or at the end: `false`), so it
/// can be imported while the rest arrives.
/// The body is cut off (413) past `cap` bytes and (408) when nothing
/// arrives for `idle`; a failure is sent on `done` too. Stops when `done`
/// is closed (the import gave up).
async fn receive(
    form: Multipart,
    dir: &Path,
    cap: u64,
    idle: std::time::Duration,
    done: &mpsc::Sender<Result<(PathBuf, bool), ApiError>>,
) {
    if let Err(e) = receive_parts(form, dir, cap, idle, done).await {
        let _ = done.send(Err(e)).await;
    }
}

async fn receive_parts(
    mut form: Multipart,
    dir: &Path,
    cap: u64,
    idle: std::time::Duration,
    done: &mpsc::Sender<Result<(PathBuf, bool), ApiError>>,
) -> Result<(), ApiError> {
    let mut seen: Vec<PathBuf> = Vec::new();
    let gone = || ApiError::internal("the import stopped");
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
            if seen.last() != Some(&first) {
                if seen.contains(&first) {
                    return Err(ApiError::bad_request(format!(
                        "{}: the parts of a directory must be sent together",
                        shown(&first.to_string_lossy())
                    )));
                }
                if let Some(previous) = seen.last() {
                    done.send(Ok((previous.clone(), true)))
                        .await
                        .map_err(|_| gone())?;
                }
                seen.push(first);
            }
        }
        let target = dir.join(&rel);
        if field
            .content_type()
            .is_some_and(|t| t.starts_with("application/symlink"))
        {
            return Err(ApiError::bad_request(format!(
                "{}: symbolic links are not supported by /add yet",
                shown(&name)
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
            if done.is_closed() {
                return Err(gone());
            }
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
    }
    if let Some(last) = seen.pop() {
        done.send(Ok((last, false))).await.map_err(|_| gone())?;
    }
    Ok(())
}

/// How the body reaches the job.
enum Arrivals {
    /// Spooled (a backend that imports from disk): each top-level entry
    /// under `dir` once its last part arrived, with whether more follow.
    Spooled {
        dir: PathBuf,
        arrived: mpsc::Receiver<Result<(PathBuf, bool), ApiError>>,
        /// Keeps the upload directory until the job and the receiver are
        /// done.
        _upload: Arc<Upload>,
    },
    /// Streamed: each import as soon as its first part arrives.
    Streamed(parts::Units),
}

/// One add, run on a blocking thread while the body is still arriving.
struct Job {
    state: Shared,
    backend: Arc<dyn IpfsBackend>,
    handle: tokio::runtime::Handle,
    import: AddOptions,
    wrap: bool,
    car: bool,
    progress: bool,
    cluster_pin: bool,
    spec: PinSpec,
    /// Push the blocks to the other peers while importing
    /// ([`pushes_to_every_peer`]).
    push: bool,
    /// A sharded add: every block goes to this writer instead of the
    /// node's store (see `shard`).
    shard: Option<Arc<std::sync::Mutex<shard::ShardWriter>>>,
}

/// One object of the answer: an entry, or a file's read progress (IPFS
/// Cluster's `AddedOutput` with only `name` and `bytes`; its undefined
/// `cid` is `null`).
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
enum Line {
    Entry(AddedOutput),
    Progress {
        name: String,
        cid: Option<String>,
        bytes: u64,
    },
}

/// What the job writes; false when the client has gone.
type Out<'a> = dyn FnMut(Line) -> bool + 'a;

fn entry_json(o: &AddedOutput) -> Line {
    Line::Entry(o.clone())
}

impl Job {
    /// Imports the upload as it arrives, writing entries as they are
    /// imported; pins the last root. Returns without pinning when the
    /// client goes away.
    fn run(self, arrivals: Arrivals, out: &mut Out<'_>) -> Result<(), ApiError> {
        match arrivals {
            Arrivals::Spooled {
                dir,
                arrived,
                _upload,
            } => self.run_spooled(&dir, arrived, out),
            Arrivals::Streamed(units) => self.run_streamed(units, out),
        }
    }

    /// Imports each import of a streamed upload while its parts arrive.
    /// An entry is written once the next import begins (the last one's
    /// after the pin, as the root); a failed import answers why the
    /// upload failed when it did, else the import's error.
    fn run_streamed(self, mut units: parts::Units, out: &mut Out<'_>) -> Result<(), ApiError> {
        let mut last: Option<(CidKey, AddedOutput)> = None;
        let mut next = self.handle.block_on(units.recv());
        while let Some(unit) = next.take() {
            let parts::Unit { input, top } = unit?;
            let (key, mut entry) = match self.import(input, self.wrap, out) {
                Ok(Some(imported)) => imported,
                Ok(None) => return Ok(()),
                Err(e) => {
                    while let Ok(queued) = units.try_recv() {
                        queued?;
                    }
                    return Err(e);
                }
            };
            if self.car {
                entry.name = top;
            }
            next = self.handle.block_on(units.recv());
            if matches!(next, Some(Ok(_))) {
                if !out(entry_json(&entry)) {
                    return Ok(());
                }
            } else {
                last = Some((key, entry));
            }
        }
        self.finish(last, out)
    }

    /// Pins the root `last` (when asked) and writes it with its
    /// allocations.
    fn finish(
        &self,
        last: Option<(CidKey, AddedOutput)>,
        out: &mut Out<'_>,
    ) -> Result<(), ApiError> {
        let Some((key, mut last)) = last else {
            return Err(ApiError::bad_request(
                "nothing to add: the body has no file",
            ));
        };
        if let Some(writer) = &self.shard {
            writer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .finish(key, &last.cid)?;
            last.allocations = self
                .handle
                .block_on(get_pin(&self.state.node, key))?
                .map(|p| p.allocations)
                .unwrap_or_default();
        } else if self.cluster_pin {
            last.allocations = self.handle.block_on(self.pin(key, &last.cid))?;
        }
        out(entry_json(&last));
        Ok(())
    }

    /// Imports each top-level entry of a spooled upload as it arrives
    /// (all of them at the end when wrapping).
    fn run_spooled(
        self,
        dir: &Path,
        mut arrived: mpsc::Receiver<Result<(PathBuf, bool), ApiError>>,
        out: &mut Out<'_>,
    ) -> Result<(), ApiError> {
        // The last input's root is written after the pin, with its
        // allocations; the others' as soon as they are imported.
        let mut pending: Option<AddedOutput> = None;
        let mut root: Option<CidKey> = None;
        let mut tops = 0usize;
        while let Some(top) = self.handle.block_on(arrived.recv()) {
            let (top, more) = top?;
            tops += 1;
            if self.wrap || (self.car && tops > 1) {
                // A wrapped add imports everything at the end; IPFS Cluster
                // adds only the first part of a CAR upload.
                continue;
            }
            let path = dir.join(&top);
            let input = if self.car {
                if path.is_dir() {
                    return Err(ApiError::bad_request(
                        "expected CAR file is not of type file",
                    ));
                }
                AddInput::Car(path)
            } else {
                AddInput::Path(path)
            };
            let Some((key, mut last)) = self.import(input, false, out)? else {
                return Ok(());
            };
            if self.car {
                last.name = top.to_string_lossy().into_owned();
            }
            if more && !self.car {
                if !out(entry_json(&last)) {
                    return Ok(());
                }
            } else {
                root = Some(key);
                pending = Some(last);
            }
        }
        if self.wrap && tops > 0 {
            match self.import(AddInput::Path(dir.to_path_buf()), true, out)? {
                Some((key, last)) => {
                    root = Some(key);
                    pending = Some(last);
                }
                None => return Ok(()),
            }
        }
        self.finish(root.zip(pending), out)
    }

    /// Imports one input, writing every entry but the last (its root),
    /// which is returned; `None` when the client has gone.
    fn import(
        &self,
        input: AddInput,
        wrap: bool,
        out: &mut Out<'_>,
    ) -> Result<Option<(CidKey, AddedOutput)>, ApiError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let opts = AddOpts {
            pin: false,
            import: self.import.clone(),
            wrap,
            progress: self.progress,
            events: Some(tx),
            push: self.push,
            blocks: self.shard.clone().map(|w| -> crate::ipfs::AddSink { w }),
        };
        let backend = Arc::clone(&self.backend);
        let task = self
            .handle
            .spawn(async move { backend.add(input, opts).await });
        let mut held: Option<AddedOutput> = None;
        // Ends when the add ends (it drops the sender).
        for event in rx {
            let line = match event {
                AddEvent::Added(a) => held
                    .replace(AddedOutput {
                        name: a.name,
                        cid: a.cid.to_string(),
                        bytes: a.bytes,
                        size: a.size,
                        allocations: Vec::new(),
                    })
                    .map(Line::Entry),
                AddEvent::Progress { name, bytes } => {
                    // Anything after a held entry means it was not the root.
                    if let Some(h) = held.take()
                        && !out(entry_json(&h))
                    {
                        task.abort();
                        return Ok(None);
                    }
                    Some(Line::Progress {
                        name,
                        cid: None,
                        bytes,
                    })
                }
            };
            if let Some(line) = line
                && !out(line)
            {
                task.abort();
                return Ok(None);
            }
        }
        let added = match self.handle.block_on(task) {
            Ok(Ok(added)) => added,
            Ok(Err(IpfsError::InvalidInput { what })) => {
                return Err(ApiError::bad_request(what));
            }
            Ok(Err(e @ (IpfsError::NoRoom { .. } | IpfsError::Delivery { .. }))) => {
                return Err(shard::shard_error(e));
            }
            Ok(Err(e)) => {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    format!("add failed: {e}"),
                ));
            }
            Err(e) => return Err(ApiError::internal(format!("add failed: {e}"))),
        };
        let last = held.unwrap_or_else(|| AddedOutput {
            name: String::new(),
            cid: added.root.to_string(),
            bytes: 0,
            size: 0,
            allocations: Vec::new(),
        });
        Ok(Some((added.root, last)))
    }

    /// Pins `key` in the cluster (echoing it as the importer wrote it);
    /// returns its allocations.
    async fn pin(&self, key: CidKey, text: &str) -> Result<Vec<String>, ApiError> {
        let out = self
            .state
            .node
            .pin(key, written_as_of(&key, text), self.spec.clone())
            .await?;
        if let Some(r) = out.refused {
            return Err(ApiError::new(StatusCode::CONFLICT, r));
        }
        Ok(get_pin(&self.state.node, key)
            .await?
            .map(|p| p.allocations)
            .unwrap_or_default())
    }
}

/// Whether an add whose root is then pinned with `spec` pushes its blocks
/// to the other peers while it imports: only when every one of the
/// `members` will be allocated the pin (recursive, replication max -1 or at
/// least `members`, no tags or user allocations to narrow it). Allocations
/// are decided at pin time: pushing to a peer that is not allocated would
/// fill its disk for nothing. A max of 0 is the cluster's default
/// (`default_max`; unknown without a tracker: no push).
fn pushes_to_every_peer(spec: &PinSpec, default_max: Option<i32>, members: usize) -> bool {
    let o = &spec.options;
    if o.mode != PinMode::Recursive || !o.allocate_tags.is_empty() || !o.user_allocations.is_empty()
    {
        return false;
    }
    let max = match o.replication.max {
        0 => match default_max {
            Some(m) => m,
            None => return false,
        },
        m => m,
    };
    max == -1 || usize::try_from(max).is_ok_and(|m| m >= members)
}

/// `POST /add`.
pub(super) async fn add(
    State(state): State<Shared>,
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
    let car = params.get("format") == Some("car");
    if car && wrap {
        return Err(ApiError::bad_request("cannot wrap a CAR file upload"));
    }
    let progress = params.flag("progress")?;
    // IPFS Cluster's `local`: add to this peer's node only, then pin
    // normally. pinfleet's add always imports into this peer's node only.
    let _ = params.flag("local")?;
    let stream = params.get("stream-channels") != Some("false");
    // Kubo's `pin=false`: import only, into this peer's node (unpinned
    // there, so its gc may remove it); nothing is pinned in the cluster.
    let cluster_pin = params.get("pin") != Some("false") && !params.flag("no-pin")?;
    let spec = pin_spec(&params, chrono::Utc::now().timestamp_millis())?;
    let sharded = params.flag("shard")?;
    let push = !sharded
        && cluster_pin
        && pushes_to_every_peer(
            &spec,
            state.status.as_ref().map(|s| s.default_replication().max),
            state.node.members().len(),
        );
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
            format!("the {} backend cannot import content", backend.kind()),
        ));
    }

    let shard = if sharded {
        let ctx = shard::context(&state, &params, &backend, &spec, declared, cluster_pin)?;
        Some(Arc::new(std::sync::Mutex::new(shard::ShardWriter::new(
            ctx,
        ))))
    } else {
        None
    };
    let idle = state.read_timeout;
    let arrivals = if backend.streams_add() {
        let (units_tx, units) = mpsc::channel(16);
        let grouping = parts::Grouping { wrap, car };
        // Not tracked: it ends with the body (or when the job gives up).
        tokio::spawn(parts::receive(form, cap, idle, grouping, units_tx));
        Arrivals::Streamed(units)
    } else {
        let dir = state
            .upload_dir
            .join(format!("add-{:016x}", rand::random::<u64>()));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| ApiError::internal(format!("cannot create {}: {e}", dir.display())))?;
        let upload = Arc::new(Upload(dir.clone()));
        let (done, arrived) = mpsc::channel(16);
        {
            let (dir, upload) = (dir.clone(), Arc::clone(&upload));
            // Not tracked: it ends with the body (or when the job gives up).
            tokio::spawn(async move {
                receive(form, &dir, cap, idle, &done).await;
                drop(upload);
            });
        }
        Arrivals::Spooled {
            dir,
            arrived,
            _upload: upload,
        }
    };
    let job = Job {
        backend,
        handle: tokio::runtime::Handle::current(),
        import,
        wrap,
        car,
        progress,
        cluster_pin,
        spec,
        push,
        shard,
        state,
    };
    if stream {
        let mut resp = super::stream::ndjson_answer(move |sink| {
            job.run(arrivals, &mut |line| sink.json(&line) && sink.flush_now())
        })
        .await;
        if resp.status() == StatusCode::OK {
            // As IPFS Cluster's and Kubo's streamed adds.
            resp.headers_mut().insert(
                header::HeaderName::from_static("x-chunked-output"),
                header::HeaderValue::from_static("1"),
            );
        }
        return Ok(resp);
    }
    let outputs = tokio::task::spawn_blocking(move || {
        let mut all = Vec::new();
        job.run(arrivals, &mut |line| {
            all.push(line);
            true
        })
        .map(|()| all)
    })
    .await
    .map_err(|e| ApiError::internal(format!("add failed: {e}")))??;
    Ok(Json(outputs).into_response())
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

    fn spec(f: impl FnOnce(&mut crate::manifest::PinOptions)) -> PinSpec {
        let mut o = crate::manifest::PinOptions::default();
        f(&mut o);
        PinSpec {
            name: String::new(),
            options: Arc::new(o),
        }
    }

    fn rmax(max: i32) -> PinSpec {
        spec(|o| o.replication = crate::manifest::ReplicationFactors { min: 0, max })
    }

    #[test]
    fn an_add_pushes_only_when_every_peer_will_be_allocated() {
        // Every peer, or at least as many as there are members.
        assert!(pushes_to_every_peer(&rmax(-1), Some(2), 3));
        assert!(pushes_to_every_peer(&rmax(3), Some(-1), 3));
        assert!(pushes_to_every_peer(&rmax(5), None, 3));
        // Fewer than the members: who gets it is decided at pin time.
        assert!(!pushes_to_every_peer(&rmax(2), Some(-1), 3));
        // 0 is the cluster's default.
        assert!(pushes_to_every_peer(&rmax(0), Some(-1), 3));
        assert!(!pushes_to_every_peer(&rmax(0), Some(2), 3));
        assert!(!pushes_to_every_peer(&rmax(0), None, 3));
        // Tags, chosen peers or a direct pin narrow what is needed where.
        let tagged = spec(|o| {
            o.replication.max = -1;
            o.allocate_tags.insert("region".into(), "eu".into());
        });
        assert!(!pushes_to_every_peer(&tagged, Some(-1), 3));
        let chosen = spec(|o| {
            o.replication.max = -1;
            o.user_allocations.push("12D3KooWchosen".into());
        });
        assert!(!pushes_to_every_peer(&chosen, Some(-1), 3));
        let direct = spec(|o| {
            o.replication.max = -1;
            o.mode = PinMode::Direct;
        });
        assert!(!pushes_to_every_peer(&direct, Some(-1), 3));
    }
}
