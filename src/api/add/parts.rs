//! `POST /add` on a backend that takes an upload as it arrives
//! ([`IpfsBackend::streams_add`](crate::ipfs::IpfsBackend::streams_add):
//! the embedded node): the multipart body goes straight into the importer,
//! nothing is written to disk.
//!
//! [`receive`] reads the parts and hands each import to the job as a
//! [`Unit`] as soon as its first part arrives: one per top-level entry (one
//! for everything when wrapping; for `format=car` the first part only, the
//! rest is read and dropped), whose entries and file chunks follow through
//! bounded channels. Those channels are the back-pressure: while the
//! importer is behind, the body is not read. This module must not import,
//! pin or answer itself; the job does.

use std::io;
use std::path::{Component, PathBuf};
use std::time::Duration;

use axum::extract::Multipart;
use tokio::sync::mpsc;

use super::{entry_path, multipart_error};
use crate::api::ApiError;
use crate::ipfs::AddInput;
use crate::ipfs::parts::{AddPart, ChunkReader, ChunkSender};
use crate::manifest::shown;

/// Entries in flight between the receiver and an import.
const PARTS_IN_FLIGHT: usize = 64;
/// Chunks of a file in flight between the receiver and the importer.
const CHUNKS_IN_FLIGHT: usize = 16;
/// What an aborted import reads instead of the rest of the upload.
const BROKE_OFF: &str = "the upload broke off";

/// One import of a streamed upload: its input (filled while the import
/// runs) and the name of its top-level entry.
pub(super) struct Unit {
    /// What the backend imports.
    pub input: AddInput,
    /// The top-level entry, as the upload named it.
    pub top: String,
}

/// The imports of an upload, in order; an error is why the upload failed
/// (sent before the open import is aborted, so the job finds it when that
/// import fails).
pub(super) type Units = mpsc::Receiver<Result<Unit, ApiError>>;

/// How the parts are grouped into imports.
#[derive(Debug, Clone, Copy)]
pub(super) struct Grouping {
    /// `wrap-with-directory`: one import of every part.
    pub wrap: bool,
    /// `format=car`: the first part only, a CAR.
    pub car: bool,
}

/// The channels of the import being filled.
#[derive(Default)]
struct Open {
    parts: Option<mpsc::Sender<io::Result<AddPart>>>,
    body: Option<ChunkSender>,
}

/// Why receiving stopped early.
enum Stop {
    /// The job or the import went away: nobody to tell.
    Gone,
    /// The upload is refused or broke off.
    Failed(ApiError),
}

/// Receives the multipart body into imports sent on `units`. The body is
/// cut off (413) past `cap` bytes and (408) when nothing arrives for
/// `idle`; such a failure is sent on `units`, then the open import is
/// aborted. Stops when the job or the import goes away.
pub(super) async fn receive(
    form: Multipart,
    cap: u64,
    idle: Duration,
    grouping: Grouping,
    units: mpsc::Sender<Result<Unit, ApiError>>,
) {
    let mut open = Open::default();
    if let Err(Stop::Failed(e)) = receive_parts(form, cap, idle, grouping, &units, &mut open).await
    {
        let _ = units.send(Err(e)).await;
        if let Some(body) = open.body.take() {
            let _ = body.fail(io::Error::other(BROKE_OFF)).await;
        }
        if let Some(parts) = open.parts.take() {
            let _ = parts.send(Err(io::Error::other(BROKE_OFF))).await;
        }
    }
}

async fn receive_parts(
    mut form: Multipart,
    cap: u64,
    idle: Duration,
    grouping: Grouping,
    units: &mpsc::Sender<Result<Unit, ApiError>>,
    open: &mut Open,
) -> Result<(), Stop> {
    let timed_out = |_| Stop::Failed(crate::api::body_timeout(idle));
    let mut seen: Vec<PathBuf> = Vec::new();
    while let Some(mut field) = tokio::time::timeout(idle, form.next_field())
        .await
        .map_err(timed_out)?
        .map_err(|e| Stop::Failed(multipart_error(e, cap, "invalid multipart body")))?
    {
        let Some(name) = field.file_name().map(str::to_string) else {
            return Err(Stop::Failed(ApiError::bad_request(
                "every multipart part needs a filename",
            )));
        };
        let rel = entry_path(&name).map_err(Stop::Failed)?;
        let names: Vec<String> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        // `entry_path` refuses an empty path.
        let Some(top) = names.first().cloned() else {
            return Err(Stop::Failed(ApiError::bad_request(
                "invalid file name: empty",
            )));
        };
        let first = PathBuf::from(&top);
        let new_top = seen.last() != Some(&first);
        if new_top {
            if seen.contains(&first) {
                return Err(Stop::Failed(ApiError::bad_request(format!(
                    "{}: the parts of a directory must be sent together",
                    shown(&top)
                ))));
            }
            seen.push(first);
        }
        if field
            .content_type()
            .is_some_and(|t| t.starts_with("application/symlink"))
        {
            return Err(Stop::Failed(ApiError::bad_request(format!(
                "{}: symbolic links are not supported by /add yet",
                shown(&name)
            ))));
        }
        let is_dir = field
            .content_type()
            .is_some_and(|t| t.starts_with("application/x-directory"));
        if new_top {
            start(
                grouping,
                seen.len(),
                is_dir || names.len() > 1,
                top,
                units,
                open,
            )
            .await?;
        }
        let path = names.join("/");
        if is_dir {
            if let Some(parts) = &open.parts {
                parts
                    .send(Ok(AddPart::Dir(path)))
                    .await
                    .map_err(|_| Stop::Gone)?;
            }
            continue;
        }
        if let Some(parts) = &open.parts {
            let (tx, reader) = ChunkReader::channel(CHUNKS_IN_FLIGHT);
            let body = Box::new(reader);
            parts
                .send(Ok(AddPart::File { path, body }))
                .await
                .map_err(|_| Stop::Gone)?;
            open.body = Some(tx);
        }
        // Without an open body (the rest of a CAR upload) the part is read
        // and dropped.
        while let Some(chunk) = tokio::time::timeout(idle, field.chunk())
            .await
            .map_err(timed_out)?
            .map_err(|e| Stop::Failed(multipart_error(e, cap, "the upload broke off")))?
        {
            if units.is_closed() {
                // The job gave up (the client went away or it failed).
                return Err(Stop::Gone);
            }
            if let Some(body) = &open.body {
                body.send(chunk).await.map_err(|_| Stop::Gone)?;
            }
        }
        if let Some(body) = open.body.take() {
            body.finish().await.map_err(|_| Stop::Gone)?;
        }
    }
    end_parts(open).await
}

/// Ends the entries of the open import (a sender dropped without it
/// makes the import fail).
async fn end_parts(open: &mut Open) -> Result<(), Stop> {
    match open.parts.take() {
        Some(parts) => parts.send(Ok(AddPart::End)).await.map_err(|_| Stop::Gone),
        None => Ok(()),
    }
}

/// Starts the import of the `nth` top-level entry `top` (1-based) when
/// `grouping` says it is one: closes the previous one (unless wrapping,
/// where the first holds everything) and sends the new one to the job.
/// `nested`: the entry's first part is a directory or lies in one.
async fn start(
    grouping: Grouping,
    nth: usize,
    nested: bool,
    top: String,
    units: &mpsc::Sender<Result<Unit, ApiError>>,
    open: &mut Open,
) -> Result<(), Stop> {
    let gone = |_| Stop::Gone;
    if grouping.car {
        // IPFS Cluster adds only the first part of a CAR upload.
        if nth > 1 {
            return Ok(());
        }
        if nested {
            return Err(Stop::Failed(ApiError::bad_request(
                "expected CAR file is not of type file",
            )));
        }
        let (tx, reader) = ChunkReader::channel(CHUNKS_IN_FLIGHT);
        let input = AddInput::CarReader(Box::new(reader));
        units.send(Ok(Unit { input, top })).await.map_err(gone)?;
        open.body = Some(tx);
        return Ok(());
    }
    if grouping.wrap && open.parts.is_some() {
        return Ok(());
    }
    end_parts(open).await?;
    let (tx, rx) = mpsc::channel(PARTS_IN_FLIGHT);
    let input = AddInput::Parts(rx);
    units.send(Ok(Unit { input, top })).await.map_err(gone)?;
    open.parts = Some(tx);
    Ok(())
}
