//! `add` on Kubo: the upload is proxied to Kubo's `/api/v0/add` as the
//! multipart body Kubo's own clients send (same import parameters), and a
//! CAR to `/api/v0/dag/import`; Kubo's NDJSON answer is read back as
//! entries. It must not pin in the cluster (the API does) nor import
//! anything itself: a CAR is only read here to check it and learn its root.

use std::path::{Path, PathBuf};

use cid::Cid;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use tokio::time::Instant;

use super::KuboClient;
use super::wire::decode;
use crate::ipfs::unixfs::Added;
use crate::ipfs::{AddEvent, AddInput, AddOpts, AddedContent, IpfsError, car};
use crate::manifest::CidKey;

/// Escaped in multipart file names (Go's clients escape names; Kubo
/// unescapes them with `url.QueryUnescape`).
const NAME_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// One line of Kubo's `add` answer: an entry (`Hash` set), a progress
/// report (`Bytes` only), or an error object.
#[derive(Deserialize)]
struct AddLine {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Hash", default)]
    hash: Option<String>,
    #[serde(rename = "Bytes", default)]
    bytes: Option<u64>,
    /// A string in Kubo's answer; a number is taken too.
    #[serde(rename = "Size", default)]
    size: Option<serde_json::Value>,
    #[serde(rename = "Message", default)]
    message: Option<String>,
    #[serde(rename = "Type", default)]
    kind: Option<String>,
}

fn garbage(what: String) -> IpfsError {
    IpfsError::Garbage { what }
}

fn io_error(path: &Path, e: &std::io::Error) -> IpfsError {
    IpfsError::InvalidInput {
        what: format!("cannot read {}: {e}", path.display()),
    }
}

/// The parts of `path` named `name` (and, for a directory, of everything
/// beneath it, names sorted), as `ipfs add -r` sends them.
fn parts(path: &Path, name: &str, out: &mut Vec<(String, PathBuf, Kind)>) -> Result<(), IpfsError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| io_error(path, &e))?;
    if meta.file_type().is_symlink() {
        out.push((name.to_string(), path.to_owned(), Kind::Symlink));
    } else if meta.is_dir() {
        out.push((name.to_string(), path.to_owned(), Kind::Dir));
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| io_error(path, &e))? {
            let entry = entry.map_err(|e| io_error(path, &e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort_unstable();
        for n in names {
            parts(&path.join(&n), &format!("{name}/{n}"), out)?;
        }
    } else {
        out.push((name.to_string(), path.to_owned(), Kind::File(meta.len())));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Dir,
    Symlink,
    File(u64),
}

/// The multipart body of `parts`, one flat stream (each file opened when
/// the body reaches it).
fn form(parts: Vec<(String, PathBuf, Kind)>) -> Result<crate::multipart::Upload, IpfsError> {
    let mut form = crate::multipart::Upload::new();
    for (name, path, kind) in parts {
        let escaped = utf8_percent_encode(&name, NAME_ESCAPES).to_string();
        match kind {
            Kind::Dir => form.directory(&escaped),
            Kind::Symlink => {
                let target = std::fs::read_link(&path).map_err(|e| io_error(&path, &e))?;
                form.symlink(&escaped, &target.to_string_lossy());
            }
            Kind::File(len) => form.file(&escaped, path, len),
        }
    }
    Ok(form)
}

fn size_of(v: Option<&serde_json::Value>) -> u64 {
    match v {
        Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

impl KuboClient {
    /// [`IpfsBackend::add`](crate::ipfs::IpfsBackend::add) on Kubo.
    pub(super) async fn add_input(
        &self,
        input: AddInput,
        opts: AddOpts,
    ) -> Result<AddedContent, IpfsError> {
        match input {
            AddInput::Path(path) => self.add_path(&path, opts).await,
            AddInput::Car(path) => self.import_car(path, opts).await,
            AddInput::Reader(_) | AddInput::Parts(_) | AddInput::CarReader(_) => {
                Err(IpfsError::Unsupported {
                    what: "add of a byte stream on the kubo backend".into(),
                })
            }
        }
    }

    async fn add_path(&self, path: &Path, opts: AddOpts) -> Result<AddedContent, IpfsError> {
        let mut list = Vec::new();
        if opts.wrap {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(path).map_err(|e| io_error(path, &e))? {
                let entry = entry.map_err(|e| io_error(path, &e))?;
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
            names.sort_unstable();
            for n in names {
                parts(&path.join(&n), &n, &mut list)?;
            }
        } else {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            parts(path, &name, &mut list)?;
        }
        let form = form(list)?;
        let import = &opts.import;
        let version = if import.cid_version == cid::Version::V1 {
            "1"
        } else {
            "0"
        };
        let chunker = format!("size-{}", import.chunk_size);
        let mut params = vec![
            ("stream-channels", "true"),
            // Always: progress lines keep the answer alive while a large
            // file is chunked, so silence means Kubo is stuck.
            ("progress", "true"),
            ("cid-version", version),
            ("chunker", chunker.as_str()),
            ("hidden", bool_str(import.hidden)),
            ("wrap-with-directory", bool_str(opts.wrap)),
            ("pin", bool_str(opts.pin)),
        ];
        if let Some(raw) = import.raw_leaves {
            params.push(("raw-leaves", bool_str(raw)));
        }
        let operation = format!("add on kubo at {}", self.shown);
        let limit = self.stream_idle;
        let resp = self
            .post("add", &params)
            .header(reqwest::header::CONTENT_TYPE, form.content_type())
            .header(reqwest::header::CONTENT_LENGTH, form.content_length())
            .body(form.into_body())
            .send()
            .await
            .map_err(|e| self.transport(&operation, e, limit))?;
        let resp = self.check_status(resp).await?;
        let mut lines = super::LineReader::new(resp);
        let mut entries = Vec::new();
        while let Some(line) = self
            .next_line(&mut lines, "add", &operation, Instant::now() + limit, limit)
            .await?
        {
            let event: AddLine = decode("add", line.as_bytes())?;
            if let (Some("error"), Some(m)) = (event.kind.as_deref(), &event.message) {
                return Err(IpfsError::Aborted { message: m.clone() });
            }
            let Some(hash) = event.hash else {
                if let (Some(bytes), true, Some(tx)) = (event.bytes, opts.progress, &opts.events) {
                    let _ = tx.send(AddEvent::Progress {
                        name: event.name,
                        bytes,
                    });
                }
                continue;
            };
            let cid = Cid::try_from(hash.as_str())
                .map_err(|e| garbage(format!("add: invalid cid {hash:?}: {e}")))?;
            let added = Added {
                cid,
                size: size_of(event.size.as_ref()),
                name: event.name,
                bytes: event.bytes.unwrap_or(0),
            };
            if let Some(tx) = &opts.events {
                let _ = tx.send(AddEvent::Added(added.clone()));
            }
            entries.push(added);
        }
        let root = entries
            .last()
            .map(|a| a.cid)
            .ok_or_else(|| garbage("add: kubo reported no entry".into()))?;
        let root = CidKey::from_cid(root).map_err(|e| garbage(format!("add: root cid: {e}")))?;
        Ok(AddedContent {
            root,
            blocks: 0,
            bytes: entries
                .iter()
                .filter(|e| !e.name.contains('/'))
                .map(|e| e.bytes)
                .sum(),
            entries,
        })
    }

    async fn import_car(&self, path: PathBuf, opts: AddOpts) -> Result<AddedContent, IpfsError> {
        // Checked here first (one root, every block matching its CID), so
        // the answer names the root and refuses what IPFS Cluster refuses.
        let check = path.clone();
        let summary = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&check).map_err(|e| io_error(&check, &e))?;
            car::read(file, &mut |_, _| Ok::<(), std::convert::Infallible>(())).map_err(|e| {
                IpfsError::InvalidInput {
                    what: e.to_string(),
                }
            })
        })
        .await
        .map_err(|e| garbage(format!("car check: {e}")))??;
        let len = std::fs::metadata(&path)
            .map_err(|e| io_error(&path, &e))?
            .len();
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_error(&path, &e))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let part = reqwest::multipart::Part::stream_with_length(body, len)
            .file_name("upload.car")
            .mime_str("application/octet-stream")
            .map_err(|e| garbage(format!("multipart: {e}")))?;
        let form = reqwest::multipart::Form::new().part("file", part);
        let operation = format!("dag/import on kubo at {}", self.shown);
        let limit = self.stream_idle;
        let params = [
            ("pin-roots", bool_str(opts.pin)),
            ("stream-channels", "true"),
        ];
        let resp = self
            .post("dag/import", &params)
            .multipart(form)
            .send()
            .await
            .map_err(|e| self.transport(&operation, e, limit))?;
        let resp = self.check_status(resp).await?;
        let mut lines = super::LineReader::new(resp);
        while let Some(line) = self
            .next_line(
                &mut lines,
                "dag/import",
                &operation,
                Instant::now() + limit,
                limit,
            )
            .await?
        {
            let event: AddLine = decode("dag/import", line.as_bytes())?;
            if let (Some("error"), Some(m)) = (event.kind.as_deref(), event.message) {
                return Err(IpfsError::Aborted { message: m });
            }
        }
        let added = Added {
            cid: summary.root,
            size: summary.size,
            name: String::new(),
            bytes: summary.bytes,
        };
        if let Some(tx) = &opts.events {
            let _ = tx.send(AddEvent::Added(added.clone()));
        }
        let root = CidKey::from_cid(summary.root).map_err(|e| IpfsError::InvalidInput {
            what: format!("car root: {e}"),
        })?;
        Ok(AddedContent {
            root,
            blocks: summary.blocks,
            bytes: summary.bytes,
            entries: vec![added],
        })
    }
}

fn bool_str(b: bool) -> &'static str {
    super::bool_str(b)
}
