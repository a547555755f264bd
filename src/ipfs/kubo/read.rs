//! Reading content back through Kubo: `files/stat` for what a path names,
//! `ls` for a directory's entries, `cat?offset=&length=` for a file's
//! bytes, streamed as Kubo sends them (each piece within the stream idle
//! timeout; a mid-stream failure is Kubo's `X-Stream-Error` trailer).
//!
//! It maps Kubo's answers only: it must not walk DAGs itself.

use bytes::Bytes;
use cid::Cid;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Deserialize;

use super::KuboClient;
use super::lines::BodyData;
use crate::ipfs::IpfsError;
use crate::ipfs::content::{Content, DirEntry, EntryKind};
use crate::ipfs::path::IpfsPath;
use crate::manifest::CidKey;

#[derive(Deserialize)]
struct StatOut {
    #[serde(rename = "Hash")]
    hash: String,
    #[serde(rename = "Size", default)]
    size: u64,
    #[serde(rename = "Type")]
    kind: String,
}

#[derive(Deserialize)]
struct LsOut {
    #[serde(rename = "Objects", default)]
    objects: Vec<LsObject>,
}

#[derive(Deserialize)]
struct LsObject {
    #[serde(rename = "Links", default)]
    links: Vec<LsLink>,
}

#[derive(Deserialize)]
struct LsLink {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Hash")]
    hash: String,
    #[serde(rename = "Size", default)]
    size: u64,
    #[serde(rename = "Type", default)]
    kind: u64,
    #[serde(rename = "Target", default)]
    target: Option<String>,
}

fn cid_of(endpoint: &str, text: &str) -> Result<Cid, IpfsError> {
    Cid::try_from(text).map_err(|e| IpfsError::Garbage {
        what: format!("{endpoint}: {e}"),
    })
}

/// Where `cat` is in its answer.
enum Cat {
    Start {
        client: KuboClient,
        cid: CidKey,
        offset: u64,
        len: u64,
    },
    Reading {
        client: KuboClient,
        body: BodyData,
    },
    Done,
}

impl KuboClient {
    /// What `path` names (see [`IpfsBackend::get`](crate::ipfs::IpfsBackend::get)).
    pub(super) async fn get_content(&self, path: IpfsPath) -> Result<Content, IpfsError> {
        let arg = path.to_string();
        let stat: StatOut = match self
            .call("files/stat", &[("arg", arg.as_str())], self.call_timeout)
            .await
        {
            Ok(s) => s,
            Err(IpfsError::Http { message, .. }) if message.contains("no link named") => {
                return Err(IpfsError::Resolve {
                    path: arg,
                    reason: message,
                });
            }
            Err(IpfsError::Http { message, .. })
                if message.contains("not found") || message.contains("could not find") =>
            {
                return Err(match path.root_cid() {
                    Some(cid) if path.segments().is_empty() => IpfsError::NotFound { cid },
                    _ => IpfsError::Resolve {
                        path: arg,
                        reason: message,
                    },
                });
            }
            Err(e) => return Err(e),
        };
        let cid = cid_of("files/stat", &stat.hash)?;
        match stat.kind.as_str() {
            "file" => Ok(Content::File {
                cid,
                size: stat.size,
            }),
            "directory" => {
                let params = [
                    ("arg", stat.hash.as_str()),
                    ("resolve-type", "true"),
                    ("size", "true"),
                    ("stream", "false"),
                ];
                let out: LsOut = self.call("ls", &params, self.call_timeout).await?;
                let entries = out
                    .objects
                    .into_iter()
                    .flat_map(|o| o.links)
                    .map(|l| {
                        // UnixFS types: 1 directory, 5 HAMT shard, 4
                        // symlink; files (2) and raw leaves (0) are files.
                        let kind = match l.kind {
                            1 | 5 => EntryKind::Directory,
                            4 => EntryKind::Symlink,
                            _ => EntryKind::File,
                        };
                        Ok(DirEntry {
                            name: l.name,
                            cid: cid_of("ls", &l.hash)?,
                            size: if kind == EntryKind::File { l.size } else { 0 },
                            kind,
                            target: l.target.filter(|_| kind == EntryKind::Symlink),
                        })
                    })
                    .collect::<Result<_, IpfsError>>()?;
                Ok(Content::Directory { cid, entries })
            }
            other => Err(IpfsError::Unsupported {
                what: format!("reading {arg}: kubo says it is a {other}"),
            }),
        }
    }

    /// Bytes `offset .. offset + len` of `cid` from `cat`.
    pub(super) fn cat_stream(
        &self,
        cid: CidKey,
        offset: u64,
        len: u64,
    ) -> BoxStream<'static, Result<Bytes, IpfsError>> {
        if len == 0 {
            return futures::stream::empty().boxed();
        }
        let start = Cat::Start {
            client: self.clone(),
            cid,
            offset,
            len,
        };
        futures::stream::unfold(start, |state| async move {
            let (client, mut body) = match state {
                Cat::Done => return None,
                Cat::Reading { client, body } => (client, body),
                Cat::Start {
                    client,
                    cid,
                    offset,
                    len,
                } => {
                    let arg = cid.to_string();
                    let (offset, len) = (offset.to_string(), len.to_string());
                    let params = [
                        ("arg", arg.as_str()),
                        ("offset", offset.as_str()),
                        ("length", len.as_str()),
                    ];
                    match client.open_cat(&params).await {
                        Ok(body) => (client, body),
                        Err(e) => return Some((Err(e), Cat::Done)),
                    }
                }
            };
            let idle = client.stream_idle;
            match tokio::time::timeout(idle, body.next()).await {
                Err(_) => Some((
                    Err(IpfsError::Timeout {
                        operation: format!("cat from kubo at {}", client.shown),
                        stalled_for: idle,
                    }),
                    Cat::Done,
                )),
                Ok(Some(Ok(bytes))) => Some((Ok(bytes), Cat::Reading { client, body })),
                Ok(Some(Err(e))) => Some((
                    Err(IpfsError::Disconnected {
                        url: client.shown.clone(),
                        source: Box::new(e),
                    }),
                    Cat::Done,
                )),
                Ok(None) => body
                    .take_trailer_error()
                    .map(|message| (Err(IpfsError::Aborted { message }), Cat::Done)),
            }
        })
        .boxed()
    }

    /// Starts `cat`: its answer's headers within the call timeout.
    async fn open_cat(&self, params: &[(&str, &str)]) -> Result<BodyData, IpfsError> {
        let operation = self.call_operation("cat");
        let wait = self.call_timeout;
        let resp = tokio::time::timeout(wait, self.post("cat", params).send())
            .await
            .map_err(|_| IpfsError::Timeout {
                operation: operation.clone(),
                stalled_for: wait,
            })?
            .map_err(|e| self.transport(&operation, e, wait))?;
        let resp = self.check_status(resp).await?;
        Ok(BodyData::new(resp))
    }
}
