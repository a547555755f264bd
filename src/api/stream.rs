//! NDJSON streams as IPFS Cluster sends them: `Content-Type:
//! application/json`, `Trailer: X-Stream-Error`, one JSON value per line,
//! and `204 No Content` without a body when there is nothing to send.
//!
//! Lines are produced on a blocking thread (storage reads are blocking) into
//! a bounded channel, so a million-pin answer starts at once, is never held
//! in memory, and stops being produced when the client goes away.

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::ApiError;

/// Lines are sent in chunks of about this many bytes (the first line alone,
/// so that an answer starts as soon as it can).
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks in flight between the producer and the connection.
const CHANNEL_CHUNKS: usize = 8;

enum Msg {
    Data(Bytes),
    Done,
    Failed(String),
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
            self.fail(format!("cannot encode an item: {e}"));
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

    fn fail(&mut self, message: String) {
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
/// after it (or a producer that dies) aborts the body, so a client can never
/// take a truncated stream for a complete one.
pub(crate) async fn ndjson<F>(produce: F) -> Response
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
            Err(e) => sink.fail(e.to_string()),
        }
    });
    let first = match rx.recv().await {
        Some(Msg::Data(b)) => b,
        Some(Msg::Done) => return no_content(),
        Some(Msg::Failed(m)) => return ApiError::internal(m).into_response(),
        None => return ApiError::internal("stream producer stopped").into_response(),
    };
    let rest = futures::stream::unfold((rx, false), |(mut rx, done)| async move {
        if done {
            return None;
        }
        match rx.recv().await {
            Some(Msg::Data(b)) => Some((Ok(b), (rx, false))),
            Some(Msg::Done) => None,
            Some(Msg::Failed(m)) => Some((Err(StreamError(m)), (rx, true))),
            None => Some((
                Err(StreamError("stream producer stopped".into())),
                (rx, true),
            )),
        }
    });
    let body = futures::StreamExt::chain(
        futures::stream::once(async move { Ok::<_, StreamError>(first) }),
        rest,
    );
    let mut resp = Response::new(Body::from_stream(body));
    stream_headers(&mut resp);
    resp
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
