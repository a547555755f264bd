//! NDJSON response bodies, line by line, for the streamed calls (`pin/add`
//! progress, `pin/ls`, `repo/gc`), with go-ipfs-cmds' `X-Stream-Error`
//! trailer kept aside.
//!
//! It owns framing only: it must not parse the JSON of a line nor decide
//! what an error means for the call (the client does both).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

// `http_body::Body`, re-exported by axum: reqwest has no API for reading the
// HTTP trailers Kubo uses to report mid-stream errors, but its body type
// implements this trait, which yields them as a final frame.
use axum::body::HttpBody as _;
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::io::StreamReader;

/// The trailer go-ipfs-cmds sets when a command fails after its output began.
const STREAM_ERROR_TRAILER: &str = "X-Stream-Error";
/// A single NDJSON line longer than this is not something Kubo sends.
pub(super) const MAX_LINE: usize = 1 << 20;

/// Reads an NDJSON body line by line (tokio-util's [`LinesCodec`], at most
/// [`MAX_LINE`] bytes a line), keeping the `X-Stream-Error` trailer.
pub(super) struct LineReader {
    lines: FramedRead<StreamReader<BodyData, Bytes>, LinesCodec>,
}

pub(super) enum LineError {
    Transport(reqwest::Error),
    TooLong,
    NotUtf8,
}

impl LineReader {
    pub(super) fn new(resp: reqwest::Response) -> Self {
        let resp: axum::http::Response<reqwest::Body> = resp.into();
        let body = BodyData {
            body: resp.into_body(),
            trailer_error: None,
        };
        Self {
            lines: FramedRead::new(
                StreamReader::new(body),
                LinesCodec::new_with_max_length(MAX_LINE),
            ),
        }
    }

    /// The next line that is not blank, without its newline (and a `\r`
    /// before it); the last line needs no newline; `None` at the end.
    /// Cancel safe: bytes received are kept in the reader's buffer.
    pub(super) async fn next_line(&mut self) -> Result<Option<String>, LineError> {
        while let Some(line) = self.lines.next().await {
            match line {
                Ok(line) if line.bytes().all(|b| b.is_ascii_whitespace()) => {}
                Ok(line) => return Ok(Some(line)),
                Err(LinesCodecError::MaxLineLengthExceeded) => return Err(LineError::TooLong),
                Err(LinesCodecError::Io(e)) => {
                    // The body's own errors come back as they went in (see
                    // `BodyData`); the codec's is invalid UTF-8.
                    return Err(
                        match e.into_inner().map(|i| i.downcast::<reqwest::Error>()) {
                            Some(Ok(e)) => LineError::Transport(*e),
                            _ => LineError::NotUtf8,
                        },
                    );
                }
            }
        }
        Ok(None)
    }

    /// The `X-Stream-Error` trailer's message, once the body has ended.
    pub(super) fn take_trailer_error(&mut self) -> Option<String> {
        self.lines.get_mut().get_mut().trailer_error.take()
    }
}

/// The data frames of a response body as a byte stream for [`StreamReader`]
/// (or a raw body such as `cat`'s); keeps the `X-Stream-Error` trailer,
/// which reqwest's own byte stream drops.
pub(super) struct BodyData {
    body: reqwest::Body,
    trailer_error: Option<String>,
}

impl BodyData {
    /// The body of `resp`.
    pub(super) fn new(resp: reqwest::Response) -> Self {
        let resp: axum::http::Response<reqwest::Body> = resp.into();
        Self {
            body: resp.into_body(),
            trailer_error: None,
        }
    }

    /// The `X-Stream-Error` trailer's message, once the body has ended.
    pub(super) fn take_trailer_error(&mut self) -> Option<String> {
        self.trailer_error.take()
    }
}

impl futures::Stream for BodyData {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let frame = match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(std::io::Error::other(e)))),
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(data) => return Poll::Ready(Some(Ok(data))),
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers()
                        && let Some(v) = trailers.get(STREAM_ERROR_TRAILER)
                    {
                        self.trailer_error = Some(String::from_utf8_lossy(v.as_bytes()).into());
                    }
                }
            }
        }
    }
}
