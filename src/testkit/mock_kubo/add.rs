//! The mock's `add` and `dag/import`: the multipart body is written to a
//! scratch directory and imported with pinfleet's own UnixFS importer (so
//! the CIDs are Kubo's for what that importer supports), answering Kubo's
//! NDJSON (`{"Name","Hash","Size"}`, with `progress` also
//! `{"Name","Bytes"}`). Blocks are not kept: the mock only remembers the
//! roots (and makes them "local" for `block/stat`).

use std::path::{Component, Path, PathBuf};

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::Ctx;
use super::routes::{kubo_error, line, streamed};
use crate::ipfs::unixfs::{self, AddOptions, ImportEvent};
use crate::ipfs::{car, unwrapped_name};
use crate::manifest::CidKey;

fn option<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn flag(query: &[(String, String)], name: &str) -> bool {
    matches!(option(query, name), Some("" | "1" | "true"))
}

/// Removes the scratch directory however the request ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes the parts under a new scratch directory; returns it and the
/// top-level names in order.
async fn receive(request: Request) -> Result<(Scratch, Vec<String>), String> {
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("mock-kubo-add-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let scratch = Scratch(dir.clone());
    let mut tops: Vec<String> = Vec::new();
    while let Some(field) = form.next_field().await.map_err(|e| e.to_string())? {
        let raw = field.file_name().unwrap_or("").to_string();
        let name = percent_encoding::percent_decode_str(&raw.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned();
        let rel = Path::new(&name);
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) || name.is_empty() {
            return Err(format!("invalid file name {name:?}"));
        }
        let top = rel
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        if !tops.contains(&top) {
            tops.push(top);
        }
        let is_dir = field
            .content_type()
            .is_some_and(|t| t.starts_with("application/x-directory"));
        let target = dir.join(rel);
        let data = field.bytes().await.map_err(|e| e.to_string())?;
        if is_dir {
            std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
        } else {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(&target, &data).map_err(|e| e.to_string())?;
        }
    }
    Ok((scratch, tops))
}

fn import_options(query: &[(String, String)]) -> Result<AddOptions, String> {
    let mut opts = AddOptions {
        hidden: flag(query, "hidden"),
        ..AddOptions::default()
    };
    if option(query, "cid-version") == Some("1") {
        opts.cid_version = cid::Version::V1;
    }
    if let Some(raw) = option(query, "raw-leaves") {
        opts.raw_leaves = Some(raw == "true");
    }
    if let Some(c) = option(query, "chunker") {
        opts.chunk_size = c
            .strip_prefix("size-")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("unrecognized chunker option: {c}"))?;
    }
    Ok(opts)
}

/// `add`.
pub(super) async fn add(ctx: &Ctx, query: &[(String, String)], request: Request) -> Response {
    let bad = |m: String| kubo_error(StatusCode::BAD_REQUEST, 1, &m);
    let opts = match import_options(query) {
        Ok(o) => o,
        Err(m) => return bad(m),
    };
    let (scratch, tops) = match receive(request).await {
        Ok(r) => r,
        Err(m) => return bad(m),
    };
    let (wrap, progress) = (flag(query, "wrap-with-directory"), flag(query, "progress"));
    let imported = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        let mut report = |event: ImportEvent| match event {
            ImportEvent::Added(a) => {
                let name = if wrap {
                    unwrapped_name(&a.name)
                } else {
                    a.name
                };
                lines.push(
                    json!({"Name": name, "Hash": a.cid.to_string(), "Size": a.size.to_string()}),
                );
            }
            ImportEvent::Progress { name, bytes } if progress => {
                let name = if wrap { unwrapped_name(&name) } else { name };
                lines.push(json!({"Name": name, "Bytes": bytes}));
            }
            ImportEvent::Progress { .. } => {}
        };
        let mut sink = |_, _| Ok::<(), std::convert::Infallible>(());
        let mut root = None;
        let inputs = if wrap {
            vec![scratch.0.clone()]
        } else {
            tops.iter().map(|t| scratch.0.join(t)).collect()
        };
        for input in inputs {
            let list = unixfs::add_path_with(&input, &opts, &mut sink, progress, &mut report)
                .map_err(|e| e.to_string())?;
            root = list.last().map(|a| a.cid);
        }
        drop(scratch);
        Ok::<_, String>((lines, root))
    })
    .await;
    match imported {
        Ok(Ok((lines, Some(root)))) => {
            {
                let mut state = ctx.state();
                state.added.push(root.to_string());
                if let Ok(key) = CidKey::from_cid(root) {
                    state.block_sizes.insert(key, 1024);
                }
            }
            let body: Vec<_> = lines.iter().map(line).collect();
            streamed(ctx, futures::stream::iter(body))
        }
        Ok(Ok((_, None))) => bad("no files given".into()),
        Ok(Err(m)) => bad(m),
        Err(e) => kubo_error(StatusCode::INTERNAL_SERVER_ERROR, 0, &e.to_string()),
    }
}

/// `dag/import`: checks the CAR (one root, blocks verified) and remembers
/// its root; with `pin-roots` (Kubo's default) answers `{"Root":…}`.
pub(super) async fn dag_import(
    ctx: &Ctx,
    query: &[(String, String)],
    request: Request,
) -> Response {
    let bad = |m: String| kubo_error(StatusCode::BAD_REQUEST, 1, &m);
    let (scratch, tops) = match receive(request).await {
        Ok(r) => r,
        Err(m) => return bad(m),
    };
    let Some(first) = tops.first() else {
        return bad("no car given".into());
    };
    let path = scratch.0.join(first);
    let read = std::fs::File::open(&path)
        .map_err(|e| e.to_string())
        .and_then(|f| {
            car::read(f, &mut |_, _| Ok::<(), std::convert::Infallible>(()))
                .map_err(|e| e.to_string())
        });
    drop(scratch);
    let summary = match read {
        Ok(s) => s,
        Err(m) => return bad(m),
    };
    {
        let mut state = ctx.state();
        state.added.push(summary.root.to_string());
        if let Ok(key) = CidKey::from_cid(summary.root) {
            state.block_sizes.insert(key, 1024);
        }
    }
    let pin_roots = option(query, "pin-roots") != Some("false");
    let lines = if pin_roots {
        vec![line(
            &json!({"Root": {"Cid": {"/": summary.root.to_string()}, "PinErrorMsg": ""}}),
        )]
    } else {
        Vec::new()
    };
    streamed(ctx, futures::stream::iter(lines))
}
