//! Stream answers (`GET /pins`, `/peers`, `/allocations`, `/state/export`,
//! `POST /add`): NDJSON bodies read as they arrive, never whole. An empty
//! collection may be answered 204 with no body; an answer that breaks off
//! is an error, never a silent end.

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::io::StreamReader;

use super::ClientError;

/// Longest line of a stream answer accepted (one item: a pin's status on
/// every peer stays far below it).
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

fn body(resp: reqwest::Response) -> ByteStream {
    if resp.status() == StatusCode::NO_CONTENT {
        Box::pin(futures::stream::empty())
    } else {
        Box::pin(resp.bytes_stream())
    }
}

/// Raw body chunks of a stream answer.
pub struct RawStream {
    url: String,
    inner: ByteStream,
}

impl std::fmt::Debug for RawStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawStream").field("url", &self.url).finish()
    }
}

impl RawStream {
    pub(super) fn new(url: String, resp: reqwest::Response) -> Self {
        Self {
            url,
            inner: body(resp),
        }
    }

    /// The next chunk, `None` at the end.
    pub async fn next(&mut self) -> Option<Result<Bytes, ClientError>> {
        let url = &self.url;
        self.inner.next().await.map(|r| {
            r.map_err(|source| ClientError::Http {
                url: url.clone(),
                source,
            })
        })
    }
}

type LineReader = FramedRead<
    StreamReader<Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>, Bytes>,
    LinesCodec,
>;

/// The items of an NDJSON stream answer, decoded one line at a time (blank
/// lines skipped, lines over [`MAX_LINE_BYTES`] refused).
pub struct Lines<T> {
    url: String,
    lines: LineReader,
    max: usize,
    failed: bool,
    _item: std::marker::PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Lines<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines").field("url", &self.url).finish()
    }
}

impl<T: DeserializeOwned> Lines<T> {
    pub(super) fn new(url: String, resp: reqwest::Response) -> Self {
        Self::with_max_line(url, resp, MAX_LINE_BYTES)
    }

    fn with_max_line(url: String, resp: reqwest::Response, max: usize) -> Self {
        let bytes: Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>> =
            Box::pin(body(resp).map_err(std::io::Error::other));
        Self {
            url,
            lines: FramedRead::new(
                StreamReader::new(bytes),
                LinesCodec::new_with_max_length(max),
            ),
            max,
            failed: false,
            _item: std::marker::PhantomData,
        }
    }

    /// The next item, `None` at the end (and after an error).
    pub async fn next(&mut self) -> Option<Result<T, ClientError>> {
        if self.failed {
            return None;
        }
        loop {
            let line = match self.lines.next().await? {
                Ok(line) => line,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(match e {
                        LinesCodecError::MaxLineLengthExceeded => ClientError::LineTooLong {
                            url: self.url.clone(),
                            max: self.max,
                        },
                        LinesCodecError::Io(source) => ClientError::BrokenOff {
                            url: self.url.clone(),
                            source,
                        },
                    }));
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            return Some(
                serde_json::from_str(&line).map_err(|source| ClientError::Decode {
                    url: self.url.clone(),
                    source,
                }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Serves one HTTP/1.1 answer whose chunked body is `chunks`, then
    /// closes the connection (`finish` false: without the last chunk, as a
    /// server that died mid-answer).
    async fn serve_once(chunks: Vec<&'static str>, finish: bool) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/pins", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await.unwrap();
            let mut out = String::from(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            );
            for c in chunks {
                out.push_str(&format!("{:x}\r\n{c}\r\n", c.len()));
            }
            if finish {
                out.push_str("0\r\n\r\n");
            }
            conn.write_all(out.as_bytes()).await.unwrap();
            conn.shutdown().await.unwrap();
        });
        url
    }

    async fn get(url: &str) -> reqwest::Response {
        crate::tls::client(None)
            .unwrap()
            .build()
            .unwrap()
            .get(url)
            .send()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn items_split_across_chunks_are_decoded_and_blank_lines_skipped() {
        let url = serve_once(vec!["{\"a\":", "1}\n\n{\"a\"", ":2}\r\n{\"a\":3}"], true).await;
        let mut lines = Lines::<serde_json::Value>::new(url.clone(), get(&url).await);
        let mut got = Vec::new();
        while let Some(item) = lines.next().await {
            got.push(item.unwrap()["a"].as_u64().unwrap());
        }
        assert_eq!(got, [1, 2, 3], "the last line needs no newline");
    }

    #[tokio::test]
    async fn an_answer_that_breaks_off_is_an_error_not_an_end() {
        let url = serve_once(vec!["{\"a\":1}\n{\"a\""], false).await;
        let mut lines = Lines::<serde_json::Value>::new(url.clone(), get(&url).await);
        assert_eq!(lines.next().await.unwrap().unwrap()["a"], 1);
        let err = lines.next().await.unwrap().unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(lines.next().await.is_none(), "nothing after the error");
    }

    #[tokio::test]
    async fn a_line_over_the_limit_is_refused() {
        let url = serve_once(vec!["{\"a\":1}\n", "{\"padding\":\"0123456789\"}\n"], true).await;
        let mut lines = Lines::<serde_json::Value>::with_max_line(url.clone(), get(&url).await, 16);
        assert_eq!(lines.next().await.unwrap().unwrap()["a"], 1);
        match lines.next().await.unwrap() {
            Err(ClientError::LineTooLong { max: 16, .. }) => {}
            other => panic!("expected LineTooLong, got {other:?}"),
        }
    }
}
