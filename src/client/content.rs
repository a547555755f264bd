//! `GET /ipfs/{cid}[/{path…}]` for the client: a file's bytes as they
//! arrive ([`FileBody`]), or a directory's entries.
//!
//! It knows the route's shapes only: writing files and walking
//! directories belong to `pinfleet get`.

use bytes::Bytes;
use reqwest::{Method, header};

use super::{Client, ClientError, decode, shown};
use crate::wire::IpfsDirEntry;

/// What `GET /ipfs/…` answered.
#[derive(Debug)]
pub enum IpfsContent {
    /// A file, its bytes still to read.
    File(FileBody),
    /// A directory's entries.
    Directory(Vec<IpfsDirEntry>),
}

/// A file's bytes as they arrive.
#[derive(Debug)]
pub struct FileBody {
    url: String,
    resp: reqwest::Response,
    size: Option<u64>,
}

impl FileBody {
    /// The file's length (its `Content-Length`), when the peer sent one.
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// The next piece of the file; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        self.resp.chunk().await.map_err(|source| ClientError::Http {
            url: self.url.clone(),
            source,
        })
    }
}

impl Client {
    /// `GET /ipfs/{path}`: `path` is `CID[/name…]` (or `/ipfs/CID[/name…]`).
    pub async fn ipfs_get(&self, path: &str) -> Result<IpfsContent, ClientError> {
        let rest = path.strip_prefix("/ipfs/").unwrap_or(path);
        let mut segments = vec!["ipfs"];
        segments.extend(rest.split('/').filter(|s| !s.is_empty()));
        let url = self.url(&segments, &[]);
        let resp = self.exchange(Method::GET, &url, None, &[]).await?;
        let json = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/json"));
        if json {
            let bytes = resp
                .bytes()
                .await
                .map_err(|source| self.transport_error(&url, source))?;
            return Ok(IpfsContent::Directory(decode(&url, &bytes)?));
        }
        Ok(IpfsContent::File(FileBody {
            url: shown(&url),
            size: resp.content_length(),
            resp,
        }))
    }
}
