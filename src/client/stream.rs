//! Stream answers (`GET /pins`, `/peers`, `/allocations`, `/state/export`,
//! `POST /add`): NDJSON bodies read as they arrive, never whole. An empty
//! collection may be answered 204 with no body; an answer that breaks off
//! is an error, never a silent end, and so is one whose `X-Stream-Error`
//! trailer carries an error (the server failed halfway).

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use hyper::body::Body as _;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::io::StreamReader;

use super::ClientError;

/// Longest line of a stream answer accepted (one item: a pin's status on
/// every peer stays far below it).
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Why a stream answer's body stopped short.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    /// The transfer failed.
    #[error(transparent)]
    Http(reqwest::Error),
    /// The server ended the body with an `X-Stream-Error` trailer.
    #[error("the server failed halfway: {0}")]
    Server(String),
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, BodyError>> + Send>>;

/// The data of a stream answer, then an error if its `X-Stream-Error`
/// trailer (sent when the request said `TE: trailers`) is not empty.
fn body(resp: reqwest::Response) -> ByteStream {
    if resp.status() == StatusCode::NO_CONTENT {
        return Box::pin(futures::stream::empty());
    }
    let mut body = Some(axum::http::Response::<reqwest::Body>::from(resp).into_body());
    Box::pin(futures::stream::poll_fn(move |cx| {
        loop {
            let Some(b) = body.as_mut() else {
                return std::task::Poll::Ready(None);
            };
            let frame = match std::task::ready!(Pin::new(b).poll_frame(cx)) {
                None => {
                    body = None;
                    return std::task::Poll::Ready(None);
                }
                Some(Err(e)) => {
                    body = None;
                    return std::task::Poll::Ready(Some(Err(BodyError::Http(e))));
                }
                Some(Ok(frame)) => frame,
            };
            let trailers = match frame.into_data() {
                Ok(data) if data.is_empty() => continue,
                Ok(data) => return std::task::Poll::Ready(Some(Ok(data))),
                Err(frame) => match frame.into_trailers() {
                    Ok(t) => t,
                    Err(_) => continue,
                },
            };
            body = None;
            let errors: Vec<String> = trailers
                .get_all("x-stream-error")
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            return std::task::Poll::Ready(if errors.is_empty() {
                None
            } else {
                Some(Err(BodyError::Server(errors.join("; "))))
            });
        }
    }))
}

/// The client error for a body that stopped short.
fn body_error(url: &str, e: BodyError) -> ClientError {
    match e {
        BodyError::Http(source) => ClientError::Http {
            url: url.to_string(),
            source,
        },
        BodyError::Server(message) => ClientError::StreamFailed {
            url: url.to_string(),
            message,
        },
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
        self.inner
            .next()
            .await
            .map(|r| r.map_err(|e| body_error(url, e)))
    }
}

type LineReader = FramedRead<
    StreamReader<Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>, Bytes>,
    LinesCodec,
>;

/// True for a line of JSON whitespace only (space, tab, carriage return):
/// no item. Any other character, Unicode space included, makes the line an
/// item that must decode.
fn blank(line: &[u8]) -> bool {
    line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'))
}

/// The items of an NDJSON stream answer, decoded one line at a time (blank
/// lines, made of JSON's whitespace only, skipped; lines over
/// [`MAX_LINE_BYTES`] refused).
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
                        LinesCodecError::Io(source) => {
                            match source.get_ref().and_then(|e| e.downcast_ref::<BodyError>()) {
                                Some(BodyError::Server(message)) => ClientError::StreamFailed {
                                    url: self.url.clone(),
                                    message: message.clone(),
                                },
                                _ => ClientError::BrokenOff {
                                    url: self.url.clone(),
                                    source,
                                },
                            }
                        }
                    }));
                }
            };
            if blank(line.as_bytes()) {
                continue;
            }
            let item = serde_json::from_str(&line).map_err(|source| ClientError::Decode {
                url: self.url.clone(),
                source,
            });
            // An item that does not decode ends the stream too, as documented:
            // what follows it cannot be trusted to be the rest of the answer.
            self.failed = item.is_err();
            return Some(item);
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
        serve_ending(chunks, finish.then_some("0\r\n\r\n")).await
    }

    /// Serves one chunked answer (declaring the `X-Stream-Error` trailer)
    /// that ends with `end` (the last chunk and trailers), or is cut.
    async fn serve_ending(chunks: Vec<&'static str>, end: Option<&'static str>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/pins", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await.unwrap();
            let mut out = String::from(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntrailer: X-Stream-Error\r\ntransfer-encoding: chunked\r\n\r\n",
            );
            for c in chunks {
                out.push_str(&format!("{:x}\r\n{c}\r\n", c.len()));
            }
            if let Some(end) = end {
                out.push_str(end);
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
    async fn an_error_in_the_stream_error_trailer_ends_the_items_with_it() {
        let end = "0\r\nX-Stream-Error: cannot read the state\r\n\r\n";
        let url = serve_ending(vec!["{\"a\":1}\n{\"a\":2}\n"], Some(end)).await;
        let mut lines = Lines::<serde_json::Value>::new(url.clone(), get(&url).await);
        assert_eq!(lines.next().await.unwrap().unwrap()["a"], 1);
        assert_eq!(lines.next().await.unwrap().unwrap()["a"], 2);
        match lines.next().await.unwrap() {
            Err(ClientError::StreamFailed { message, .. }) => {
                assert_eq!(message, "cannot read the state")
            }
            other => panic!("expected StreamFailed, got {other:?}"),
        }
        assert!(lines.next().await.is_none(), "nothing after the error");

        let url = serve_ending(vec!["{\"a\":1}\n"], Some(end)).await;
        let mut raw = RawStream::new(url.clone(), get(&url).await);
        assert_eq!(raw.next().await.unwrap().unwrap(), "{\"a\":1}\n");
        let err = raw.next().await.unwrap().unwrap_err();
        assert!(matches!(err, ClientError::StreamFailed { .. }), "{err:?}");
        assert!(
            !err.is_unavailable(),
            "a server failure is not worth a retry"
        );
    }

    #[tokio::test]
    async fn an_empty_stream_error_trailer_is_a_complete_answer() {
        let end = "0\r\nX-Stream-Error: \r\n\r\n";
        let url = serve_ending(vec!["{\"a\":1}\n"], Some(end)).await;
        let mut lines = Lines::<serde_json::Value>::new(url.clone(), get(&url).await);
        assert_eq!(lines.next().await.unwrap().unwrap()["a"], 1);
        assert!(lines.next().await.is_none());
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

/// Property tests: any body, cut into any chunks, read by [`Lines`] gives
/// the items of its lines in order, then ends, or ends with one error after
/// the items before it; never a panic, never an item from nothing.
#[cfg(test)]
mod fuzz_tests {
    use std::error::Error as _;

    use proptest::prelude::*;

    use super::*;
    use crate::testkit::fuzz::{bytes, mutated};

    const ITEMS: &[&str] = &[
        r#"{"cid":"bafkreicj6mqa3onajnsmzfzv45kqfyodqttzmg35se3rtytspfrcgpeoky","peer_map":{}}"#,
        r#"{"a":[1,2,{"b":null}],"c":"d"}"#,
        "{}",
        "[1,2,3]",
    ];
    const TOKENS: &[&[u8]] = &[
        b"\n", b"\r\n", b"{", b"}", b"[", b"]", b"\"", b",", b":", b"null", b"\xff", b" ",
    ];

    /// What [`Lines`] answers for `body` delivered in chunks cut at `cuts`:
    /// the items read, and the error that ended them, if any.
    fn read<T: DeserializeOwned>(
        body: &[u8],
        cuts: &[usize],
        max: usize,
    ) -> (Vec<T>, Option<ClientError>) {
        let mut chunks = Vec::new();
        let mut rest = body;
        for c in cuts {
            let (a, b) = rest.split_at((*c).min(rest.len()));
            chunks.push(Ok::<_, std::io::Error>(Bytes::copy_from_slice(a)));
            rest = b;
        }
        chunks.push(Ok(Bytes::copy_from_slice(rest)));
        let resp =
            axum::http::Response::new(reqwest::Body::wrap_stream(futures::stream::iter(chunks)));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut lines = Lines::<T>::with_max_line("http://h/pins".into(), resp.into(), max);
            let mut items = Vec::new();
            while let Some(item) = lines.next().await {
                match item {
                    Ok(v) => items.push(v),
                    Err(e) => {
                        assert!(lines.next().await.is_none(), "nothing after an error");
                        return (items, Some(e));
                    }
                }
            }
            (items, None)
        })
    }

    /// Found by `stream_reader_refuses_mistyped_items_with_an_error`: after
    /// an item that did not decode, the reader went on with the next lines
    /// although `next` promises `None` after an error.
    #[test]
    fn a_line_that_does_not_decode_ends_the_stream() {
        let (items, err) = read::<Vec<u8>>(b"[1]\n{\"a\":1}\n[2]\n", &[3], MAX_LINE_BYTES);
        assert_eq!(items, vec![vec![1u8]]);
        assert!(matches!(err, Some(ClientError::Decode { .. })), "{err:?}");
    }

    /// Found by `stream_reader_answers_any_body_with_its_items_then_at_most_one_error`:
    /// a line holding only a vertical tab was skipped as blank (Unicode
    /// whitespace) though it is no JSON at all; only JSON's whitespace makes
    /// a line blank.
    #[test]
    fn only_json_whitespace_makes_a_line_blank() {
        let (items, err) = read::<serde_json::Value>(b"{}\n \t\r\n[1]\n", &[], MAX_LINE_BYTES);
        assert_eq!(items.len(), 2);
        assert!(err.is_none(), "{err:?}");
        let (items, err) = read::<serde_json::Value>(b"{}\n\x0b\n[1]\n", &[], MAX_LINE_BYTES);
        assert_eq!(items.len(), 1);
        assert!(matches!(err, Some(ClientError::Decode { .. })), "{err:?}");
    }

    /// The error and its causes, as the CLI prints them.
    fn chain(e: &ClientError) -> String {
        let mut text = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            text.push_str(&format!("\n  caused by: {c}"));
            cause = c.source();
        }
        text
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        #[test]
        fn stream_reader_answers_any_body_with_its_items_then_at_most_one_error(
            body in prop_oneof![
                bytes(2048),
                proptest::collection::vec(
                    mutated(ITEMS.iter().map(|l| format!("{l}\n").into_bytes()).collect(), TOKENS, 3),
                    0..6,
                )
                .prop_map(|l| l.concat()),
            ],
            cuts in proptest::collection::vec(0usize..64, 0..8),
            short in any::<bool>(),
        ) {
            let max = if short { 48 } else { MAX_LINE_BYTES };
            let (items, err) = read::<serde_json::Value>(&body, &cuts, max);
            let lines = body.split(|b| *b == b'\n').filter(|l| !blank(l)).count();
            prop_assert!(items.len() <= lines, "{} items from {} lines", items.len(), lines);
            match err {
                None => {
                    // Read to the end: every non-blank line was an item.
                    prop_assert_eq!(items.len(), lines);
                    let want: Vec<serde_json::Value> = std::str::from_utf8(&body)
                        .unwrap()
                        .lines()
                        .filter(|l| !blank(l.as_bytes()))
                        .map(|l| serde_json::from_str(l).unwrap())
                        .collect();
                    prop_assert_eq!(items, want);
                }
                Some(e) => {
                    let text = chain(&e);
                    prop_assert!(text.len() <= 6 * body.len() + 512, "{}", text);
                    if let ClientError::LineTooLong { max: m, .. } = e {
                        prop_assert!(short && m == 48);
                    }
                }
            }
        }

        #[test]
        fn stream_reader_refuses_mistyped_items_with_an_error(
            body in mutated(
                ITEMS.iter().map(|l| format!("{l}\n").into_bytes()).collect(),
                TOKENS,
                4,
            ),
        ) {
            let (items, err) =
                read::<crate::wire::GlobalPinInfo>(&body, &[], MAX_LINE_BYTES);
            let lines = body.split(|b| *b == b'\n').filter(|l| !blank(l)).count();
            prop_assert!(items.len() <= lines);
            if let Some(e) = err {
                prop_assert!(chain(&e).len() <= 6 * body.len() + 512);
            }
        }
    }
}
