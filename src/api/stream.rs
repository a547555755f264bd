//! NDJSON streams as IPFS Cluster sends them: `Content-Type:
//! application/json`, `Trailer: X-Stream-Error`, one JSON value per line,
//! and `204 No Content` without a body when there is nothing to send.
//!
//! A stream that started ends with the `X-Stream-Error` trailer: empty when
//! every item was sent, the error when it failed halfway. hyper sends
//! trailers only to a client that asked for them (`TE: trailers`); to any
//! other client a failed stream is cut (no last chunk), never ended as if
//! it were complete. This module owns the body and its trailer; it must not
//! know what the items are.
//!
//! Lines are produced on a blocking thread (storage reads are blocking) into
//! a bounded channel, so a million-pin answer starts at once, is never held
//! in memory, and stops being produced when the client goes away.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::Frame;
use tokio::sync::mpsc;

use super::ApiError;

/// Lines are sent in chunks of about this many bytes (the first line alone,
/// so that an answer starts as soon as it can).
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks in flight between the producer and the connection.
const CHANNEL_CHUNKS: usize = 8;
/// The trailer that ends every stream that started.
const STREAM_ERROR: HeaderName = HeaderName::from_static("x-stream-error");
/// Longest error message sent in the trailer (clients cap header sizes).
const MAX_ERROR_BYTES: usize = 1024;

tokio::task_local! {
    /// Whether the request being answered accepts trailers (`TE: trailers`).
    static ACCEPTS_TRAILERS: bool;
}

/// Middleware: remembers whether the request accepts trailers, for the
/// stream answers built while handling it.
pub(crate) async fn remember_te(req: Request, next: Next) -> Response {
    let accepts = req
        .headers()
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    ACCEPTS_TRAILERS.scope(accepts, next.run(req)).await
}

enum Msg {
    Data(Bytes),
    Done,
    Failed(ApiError),
}

/// Where a producer writes its lines.
pub(crate) struct LineSink {
    tx: mpsc::Sender<Msg>,
    buf: Vec<u8>,
    sent_any: bool,
    closed: bool,
}

impl LineSink {
    /// Appends one line written by `write` (without its newline). Returns
    /// false once the client has gone: the producer should stop.
    pub fn line(&mut self, write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> bool {
        if self.closed {
            return false;
        }
        let start = self.buf.len();
        if let Err(e) = write(&mut self.buf) {
            self.buf.truncate(start);
            self.fail(ApiError::internal(format!("cannot encode an item: {e}")));
            return false;
        }
        if self.buf.len() == start || self.buf.last() != Some(&b'\n') {
            self.buf.push(b'\n');
        }
        if !self.sent_any || self.buf.len() >= CHUNK_BYTES {
            self.sent_any = true;
            self.flush();
        }
        !self.closed
    }

    /// Sends the lines written so far at once, as their own chunk (an
    /// answer whose items arrive slowly, such as `/add`'s entries).
    pub fn flush_now(&mut self) -> bool {
        self.sent_any = true;
        self.flush();
        !self.closed
    }

    /// Appends one JSON value as a line.
    pub fn json<T: serde::Serialize>(&mut self, item: &T) -> bool {
        self.line(|buf| serde_json::to_writer(&mut *buf, item).map_err(std::io::Error::other))
    }

    fn flush(&mut self) {
        if self.buf.is_empty() || self.closed {
            return;
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        if self.tx.blocking_send(Msg::Data(chunk)).is_err() {
            self.closed = true;
        }
    }

    fn fail(&mut self, message: ApiError) {
        if !self.closed {
            self.flush();
            let _ = self.tx.blocking_send(Msg::Failed(message));
            self.closed = true;
        }
    }

    fn finish(mut self) {
        self.flush();
        if !self.closed {
            let _ = self.tx.blocking_send(Msg::Done);
        }
    }
}

/// Answers with the lines `produce` writes, run on a blocking thread.
///
/// An error before the first line becomes an ordinary error answer. An error
/// after it (or a producer that dies) ends the body with the error in the
/// `X-Stream-Error` trailer when the client accepts trailers, and otherwise
/// aborts it, so a client can never take a truncated stream for a complete
/// one.
pub(crate) async fn ndjson<F>(produce: F) -> Response
where
    F: FnOnce(&mut LineSink) -> Result<(), ApiError> + Send + 'static,
{
    ndjson_inner(produce, false).await
}

/// [`ndjson`], except that an error before the first line is answered with
/// its own status (a 400 stays a 400) rather than as a 500.
pub(crate) async fn ndjson_answer<F>(produce: F) -> Response
where
    F: FnOnce(&mut LineSink) -> Result<(), ApiError> + Send + 'static,
{
    ndjson_inner(produce, true).await
}

async fn ndjson_inner<F>(produce: F, keep_status: bool) -> Response
where
    F: FnOnce(&mut LineSink) -> Result<(), ApiError> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(CHANNEL_CHUNKS);
    // Not tracked: it ends on its own when the items run out or when the
    // receiver (the response body) is dropped, and its failures travel
    // through the channel.
    tokio::task::spawn_blocking(move || {
        let mut sink = LineSink {
            tx,
            buf: Vec::new(),
            sent_any: false,
            closed: false,
        };
        match produce(&mut sink) {
            Ok(()) => sink.finish(),
            Err(e) => sink.fail(e),
        }
    });
    let first = match rx.recv().await {
        Some(Msg::Data(b)) => b,
        Some(Msg::Done) => return no_content(),
        Some(Msg::Failed(e)) if keep_status => return e.into_response(),
        Some(Msg::Failed(e)) => return ApiError::internal(e.to_string()).into_response(),
        None => return ApiError::internal("stream producer stopped").into_response(),
    };
    let body = NdjsonBody {
        first: Some(first),
        rx,
        trailers_sent: false,
        cut_on_error: !ACCEPTS_TRAILERS.try_with(|t| *t).unwrap_or(false),
    };
    let mut resp = Response::new(Body::new(body));
    stream_headers(&mut resp);
    resp
}

/// The body of a stream that started: its chunks, then the trailer.
struct NdjsonBody {
    first: Option<Bytes>,
    rx: mpsc::Receiver<Msg>,
    trailers_sent: bool,
    /// The client does not take trailers: a failure aborts the body.
    cut_on_error: bool,
}

impl NdjsonBody {
    fn end(&mut self, error: Option<String>) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        self.trailers_sent = true;
        self.rx.close();
        let value = match error {
            None => HeaderValue::from_static(""),
            Some(m) => {
                tracing::warn!(error = %m, "stream answer failed halfway");
                if self.cut_on_error {
                    return Poll::Ready(Some(Err(StreamError(m))));
                }
                trailer_value(&m)
            }
        };
        let mut trailers = HeaderMap::new();
        trailers.insert(STREAM_ERROR, value);
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }
}

impl hyper::body::Body for NdjsonBody {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if this.trailers_sent {
            return Poll::Ready(None);
        }
        match std::task::ready!(this.rx.poll_recv(cx)) {
            Some(Msg::Data(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Some(Msg::Done) => this.end(None),
            Some(Msg::Failed(e)) => this.end(Some(e.to_string())),
            None => this.end(Some("stream producer stopped".into())),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.trailers_sent && self.first.is_none()
    }
}

/// `message` as a header value: control characters (a line break would end
/// the trailer) become spaces, and it is cut to [`MAX_ERROR_BYTES`].
fn trailer_value(message: &str) -> HeaderValue {
    let mut text = String::with_capacity(message.len().min(MAX_ERROR_BYTES));
    for c in message.chars() {
        if text.len() + c.len_utf8() > MAX_ERROR_BYTES {
            break;
        }
        text.push(if c.is_control() { ' ' } else { c });
    }
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("stream failed"))
}

/// Streams every item of an in-memory list (small collections such as the
/// peer list).
pub(crate) async fn ndjson_items<T>(items: Vec<T>) -> Response
where
    T: serde::Serialize + Send + 'static,
{
    ndjson(move |sink| {
        for item in &items {
            if !sink.json(item) {
                break;
            }
        }
        Ok(())
    })
    .await
}

fn no_content() -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    stream_headers(&mut resp);
    resp
}

fn stream_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::TRAILER, HeaderValue::from_static("X-Stream-Error"));
}

/// A stream that failed after it started.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct StreamError(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_values_keep_one_line_and_a_bounded_length() {
        let v = trailer_value("bad\r\nX-Injected: 1\tthen\u{7f}é");
        assert_eq!(v.to_str().ok(), None, "non-ASCII is kept as bytes");
        assert_eq!(v.as_bytes(), "bad  X-Injected: 1 then é".as_bytes());
        let long = "é".repeat(MAX_ERROR_BYTES);
        let v = trailer_value(&long);
        assert!(v.len() <= MAX_ERROR_BYTES && v.len() >= MAX_ERROR_BYTES - 1);
        assert!(
            std::str::from_utf8(v.as_bytes()).is_ok(),
            "cut on a char boundary"
        );
        assert_eq!(trailer_value("").as_bytes(), b"");
    }
}
