//! Streaming `multipart/form-data` upload bodies, as `ipfs add` and
//! `ipfs-cluster-ctl add` send files: one part per directory (empty,
//! `application/x-directory`), symlink (its target, `application/symlink`)
//! and file (its bytes, read from disk as the body is sent).
//!
//! reqwest's own `Form` nests one stream per part (polling part k walks
//! through every part before it: quadratic in the number of files, seconds
//! of CPU for 10,000 files) and, for files opened up front, holds a
//! descriptor per file. Here the parts are one flat stream, each file
//! opened when the body reaches it, and the length is known in advance.
//! This module must not decide what to upload (names and order are the
//! caller's).

use std::path::PathBuf;

use bytes::Bytes;
use futures::StreamExt;

/// Bytes read from a file per chunk of the body.
const READ_CHUNK: usize = 256 * 1024;

#[derive(Debug)]
enum Body {
    Empty,
    Text(Bytes),
    File { path: PathBuf, len: u64 },
}

#[derive(Debug)]
struct Part {
    head: Bytes,
    body: Body,
}

/// A multipart body being assembled; [`Upload::into_body`] sends it.
#[derive(Debug)]
pub struct Upload {
    boundary: String,
    parts: Vec<Part>,
}

impl Default for Upload {
    fn default() -> Self {
        Self::new()
    }
}

impl Upload {
    /// An empty body with a random boundary.
    pub fn new() -> Self {
        let boundary = format!("pinfleet-{:032x}", rand::random::<u128>());
        Self {
            boundary,
            parts: Vec::new(),
        }
    }

    fn head(&self, filename: &str, mime: &str) -> Bytes {
        // `filename` is percent-escaped by the callers: no quote or line
        // break can end the header early.
        Bytes::from(format!(
            "--{}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: {mime}\r\n\r\n",
            self.boundary
        ))
    }

    /// A directory part named `filename` (already escaped).
    pub fn directory(&mut self, filename: &str) {
        let head = self.head(filename, "application/x-directory");
        self.parts.push(Part {
            head,
            body: Body::Empty,
        });
    }

    /// A symlink part: its target as the body.
    pub fn symlink(&mut self, filename: &str, target: &str) {
        let head = self.head(filename, "application/symlink");
        self.parts.push(Part {
            head,
            body: Body::Text(Bytes::copy_from_slice(target.as_bytes())),
        });
    }

    /// A file part of `len` bytes read from `path` when the body reaches
    /// it (a file whose size changed meanwhile breaks the upload).
    pub fn file(&mut self, filename: &str, path: PathBuf, len: u64) {
        let head = self.head(filename, "application/octet-stream");
        self.parts.push(Part {
            head,
            body: Body::File { path, len },
        });
    }

    /// How many parts were added.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// Whether no part was added.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    fn end(&self) -> Bytes {
        Bytes::from(format!("--{}--\r\n", self.boundary))
    }

    /// The `Content-Type` header of the body.
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// The body's length in bytes.
    pub fn content_length(&self) -> u64 {
        let parts: u64 = self
            .parts
            .iter()
            .map(|p| {
                let body = match &p.body {
                    Body::Empty => 0,
                    Body::Text(t) => t.len() as u64,
                    Body::File { len, .. } => *len,
                };
                p.head.len() as u64 + body + 2
            })
            .sum();
        parts + self.end().len() as u64
    }

    /// The body as a stream of chunks, parts one after another.
    pub fn into_stream(self) -> futures::stream::BoxStream<'static, std::io::Result<Bytes>> {
        let end = self.end();
        futures::stream::iter(self.parts)
            .flat_map(|Part { head, body }| {
                let head = futures::stream::once(futures::future::ready(Ok(head)));
                let tail =
                    futures::stream::once(futures::future::ready(Ok(Bytes::from_static(b"\r\n"))));
                let body = match body {
                    Body::Empty => futures::stream::empty().boxed(),
                    Body::Text(t) => futures::stream::once(futures::future::ready(Ok(t))).boxed(),
                    Body::File { path, len } => file_chunks(path, len).boxed(),
                };
                head.chain(body).chain(tail)
            })
            .chain(futures::stream::once(futures::future::ready(Ok(end))))
            .boxed()
    }

    /// The body for reqwest, with its length.
    pub fn into_body(self) -> reqwest::Body {
        reqwest::Body::wrap_stream(self.into_stream())
    }
}

/// Where the reading of one file stands.
enum Reading {
    Closed(PathBuf),
    Open {
        chunks: tokio_util::io::ReaderStream<tokio::fs::File>,
        sent: u64,
        path: PathBuf,
    },
    Done,
}

/// A file's bytes, checked to be exactly `len` long (the length was sent
/// ahead of them).
fn file_chunks(
    path: PathBuf,
    len: u64,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures::stream::unfold(Reading::Closed(path), move |state| async move {
        let (mut chunks, sent, path) = match state {
            Reading::Done => return None,
            Reading::Closed(path) => match tokio::fs::File::open(&path).await {
                Ok(f) => (
                    tokio_util::io::ReaderStream::with_capacity(f, READ_CHUNK),
                    0,
                    path,
                ),
                Err(e) => return Some((Err(e), Reading::Done)),
            },
            Reading::Open { chunks, sent, path } => (chunks, sent, path),
        };
        match chunks.next().await {
            Some(Ok(c)) => {
                let sent = sent + c.len() as u64;
                if sent > len {
                    return Some((Err(changed(&path)), Reading::Done));
                }
                Some((Ok(c), Reading::Open { chunks, sent, path }))
            }
            Some(Err(e)) => Some((Err(e), Reading::Done)),
            None if sent == len => None,
            None => Some((Err(changed(&path)), Reading::Done)),
        }
    })
}

fn changed(path: &std::path::Path) -> std::io::Error {
    std::io::Error::other(format!(
        "{} changed size while it was uploaded",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    async fn collect(upload: Upload) -> std::io::Result<Vec<u8>> {
        let chunks: Vec<Bytes> = upload.into_stream().try_collect().await?;
        Ok(chunks.concat())
    }

    #[tokio::test]
    async fn the_body_is_the_parts_in_order_with_the_announced_length() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, b"hello").unwrap();
        let mut up = Upload::new();
        up.directory("d");
        up.file("d/a.txt", file, 5);
        up.symlink("d/l", "a.txt");
        let b = up.boundary.clone();
        let len = up.content_length();
        let body = collect(up).await.unwrap();
        assert_eq!(body.len() as u64, len);
        let want = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d\"\r\nContent-Type: application/x-directory\r\n\r\n\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d/a.txt\"\r\nContent-Type: application/octet-stream\r\n\r\nhello\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d/l\"\r\nContent-Type: application/symlink\r\n\r\na.txt\r\n\
             --{b}--\r\n"
        );
        assert_eq!(String::from_utf8(body).unwrap(), want);
    }

    #[tokio::test]
    async fn a_file_that_changed_size_breaks_the_upload() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a");
        std::fs::write(&file, b"longer than said").unwrap();
        // Announced shorter, then longer, than the file is.
        for said in [4, 400] {
            let mut up = Upload::new();
            up.file("a", file.clone(), said);
            let err = collect(up).await.unwrap_err().to_string();
            assert!(err.contains("changed size"), "{said}: {err}");
        }
    }

    #[tokio::test]
    async fn ten_thousand_files_stream_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut up = Upload::new();
        for i in 0..10_000 {
            let p = dir.path().join(format!("f{i}"));
            std::fs::write(&p, i.to_string()).unwrap();
            up.file(&format!("f{i}"), p, i.to_string().len() as u64);
        }
        assert_eq!(up.len(), 10_000);
        let b = up.boundary.clone();
        let len = up.content_length();
        let body = String::from_utf8(collect(up).await.unwrap()).unwrap();
        assert_eq!(body.len() as u64, len);
        assert!(body.ends_with(&format!("\r\n\r\n9999\r\n--{b}--\r\n")));
        let at = |name: &str| body.find(&format!("filename=\"{name}\"")).unwrap();
        assert!(at("f0") < at("f1") && at("f1") < at("f5000") && at("f5000") < at("f9999"));
    }
}
