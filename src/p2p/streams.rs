//! Requests over long-lived streams. A request-response exchange opens a
//! new yamux stream for every request (with its own protocol negotiation
//! and request timer), which under a steady flow of Raft and forwarding
//! messages costs more than the messages themselves. Here a request goes
//! over a stream kept open between requests: one request at a time per
//! stream, a new stream only while every open one is busy.
//!
//! Only for peers whose identify says they accept [`protocol`]: a peer of
//! an older version is asked the request-response way, as before. A
//! request whose stream cannot be opened goes the request-response way
//! too (which dials and reports why it failed), and so does one whose new
//! stream the peer closed before answering anything (its acceptor was busy
//! and dropped the stream unread); one that fails otherwise once sent
//! fails (it may have been executed), and its stream is dropped.
//!
//! Frames: a request is its CBOR length (u32, big-endian) and CBOR; an
//! answer is a status byte (0 answered, 1 no answer: shed, or not answered
//! in time), then for 0 the response framed the same way.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{InboundRequest, P2pError, RpcMessage};

/// Idle streams kept per peer; more are closed when they come back.
const IDLE_PER_PEER: usize = 8;

/// Streams served at once, from all peers together; more are refused.
const MAX_SERVED: usize = 256;

const ANSWERED: u8 = 0;
const NO_ANSWER: u8 = 1;

/// The stream protocol of the request-response protocol `rpc`.
pub(super) fn protocol(rpc: &str) -> Result<StreamProtocol, P2pError> {
    StreamProtocol::try_from_owned(format!("{rpc}/stream")).map_err(|e| P2pError::InvalidConfig {
        reason: format!("protocol {rpc:?}: {e}"),
    })
}

/// The requesting side: who accepts streams, and the streams kept open.
pub(super) struct Streams {
    control: Mutex<libp2p_stream::Control>,
    protocol: StreamProtocol,
    max_message_bytes: usize,
    speakers: Mutex<HashSet<PeerId>>,
    /// Peers with a connection: a stream is opened only on one (the
    /// request-response way dials, and says why it cannot).
    connected: Mutex<HashSet<PeerId>>,
    idle: Mutex<HashMap<PeerId, Vec<Stream>>>,
    /// Streams opened so far (tests read it).
    opened: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

/// The guarded value; a poisoned lock still holds usable sets.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Streams {
    pub(super) fn new(
        control: libp2p_stream::Control,
        protocol: StreamProtocol,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            control: Mutex::new(control),
            protocol,
            max_message_bytes,
            speakers: Mutex::default(),
            connected: Mutex::default(),
            idle: Mutex::default(),
            opened: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether `peer` takes requests over kept streams.
    #[cfg(test)]
    pub(super) fn speaks(&self, peer: &PeerId) -> bool {
        lock(&self.speakers).contains(peer)
    }

    /// How many streams this peer has opened.
    #[cfg(test)]
    pub(super) fn opened(&self) -> u64 {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What `peer`'s identify listed: whether it accepts our streams.
    pub(super) fn identified(&self, peer: PeerId, protocols: &[StreamProtocol]) {
        let mut speakers = lock(&self.speakers);
        if protocols.contains(&self.protocol) {
            speakers.insert(peer);
        } else {
            speakers.remove(&peer);
        }
    }

    /// The first connection to `peer` is up.
    pub(super) fn connected(&self, peer: PeerId) {
        lock(&self.connected).insert(peer);
    }

    /// The last connection to `peer` closed: its streams are gone.
    pub(super) fn disconnected(&self, peer: &PeerId) {
        lock(&self.connected).remove(peer);
        lock(&self.idle).remove(peer);
    }

    /// Asks `peer` over a kept stream; `None` when it cannot be asked this
    /// way (it does not accept our streams, or none could be opened), so
    /// the caller asks the request-response way.
    pub(super) async fn request<Req: RpcMessage, Resp: RpcMessage>(
        &self,
        peer: PeerId,
        request: &Req,
        timeout: Duration,
    ) -> Option<Result<Resp, P2pError>> {
        if !lock(&self.speakers).contains(&peer) || !lock(&self.connected).contains(&peer) {
            return None;
        }
        let body = match cbor4ii::serde::to_vec(Vec::new(), request) {
            Ok(b) => b,
            Err(e) => return Some(Err(P2pError::Io(io::Error::other(e.to_string())))),
        };
        let idle = lock(&self.idle).get_mut(&peer).and_then(Vec::pop);
        let fresh = idle.is_none();
        let mut stream = match idle {
            Some(s) => s,
            None => {
                // A control of its own: opening a stream to one peer does
                // not wait for another's.
                let mut control = lock(&self.control).clone();
                let opened = control.open_stream(peer, self.protocol.clone());
                match tokio::time::timeout(timeout, opened).await {
                    Ok(Ok(s)) => {
                        self.opened
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        s
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "no request stream; asking the request-response way");
                        return None;
                    }
                    Err(_) => return None,
                }
            }
        };
        let max = self.max_message_bytes;
        let exchange = async {
            write_frame(&mut stream, &[], &body).await?;
            read_answer(&mut stream, max).await
        };
        let answer = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            // A new stream the peer closed before answering anything: its
            // acceptor was busy and dropped it unread (libp2p-stream drops
            // an inbound stream it cannot hand over at once).
            Ok(Err(e)) if fresh && e.kind() == io::ErrorKind::UnexpectedEof => {
                tracing::debug!(%peer, "a new request stream was dropped unread; asking the request-response way");
                return None;
            }
            // The stream is out of step or gone: dropped.
            Ok(Err(e)) => return Some(Err(P2pError::Io(e))),
            Err(_) => return Some(Err(P2pError::Timeout)),
        };
        let result = match answer {
            Some(bytes) => match cbor4ii::serde::from_slice::<Resp>(&bytes) {
                Ok(resp) => Ok(resp),
                Err(e) => return Some(Err(P2pError::Io(io::Error::other(e.to_string())))),
            },
            None => Err(P2pError::Io(io::Error::other("the peer gave no answer"))),
        };
        // Answered in step: the stream serves the next request.
        let mut idle = lock(&self.idle);
        let kept = idle.entry(peer).or_default();
        if kept.len() < IDLE_PER_PEER {
            kept.push(stream);
        }
        Some(result)
    }
}

/// Writes `head` then `body` framed by its length.
async fn write_frame(stream: &mut Stream, head: &[u8], body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| io::Error::other("message too large"))?;
    stream.write_all(head).await?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await
}

/// Reads one length-framed message of at most `max` bytes; `None` at a
/// clean end of the stream before it.
async fn read_frame(stream: &mut Stream, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len > max {
        return Err(io::Error::other(format!(
            "message of {len} bytes over the limit of {max}"
        )));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// Reads an answer: the response's bytes, or `None` for "no answer".
async fn read_answer(stream: &mut Stream, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut status = [0u8; 1];
    stream.read_exact(&mut status).await?;
    match status[0] {
        ANSWERED => match read_frame(stream, max).await? {
            Some(body) => Ok(Some(body)),
            None => Err(io::ErrorKind::UnexpectedEof.into()),
        },
        NO_ANSWER => Ok(None),
        other => Err(io::Error::other(format!("unknown answer status {other}"))),
    }
}

/// The answering side: accepts streams from peers until `cancel` and
/// serves each on its own task, handing its requests to `inbound` like
/// the request-response ones (shed the same way when it is full).
pub(super) async fn serve<Req: RpcMessage, Resp: RpcMessage>(
    mut incoming: libp2p_stream::IncomingStreams,
    inbound: mpsc::Sender<InboundRequest<Req, Resp>>,
    (reply_timeout, max): (Duration, usize),
    cancel: CancellationToken,
    tasks: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(MAX_SERVED));
    loop {
        let (peer, stream) = tokio::select! {
            () = cancel.cancelled() => return,
            next = incoming.next() => match next {
                Some(s) => s,
                None => return,
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(%peer, "too many request streams; one refused");
            continue;
        };
        let served = Served {
            peer,
            inbound: inbound.clone(),
            reply_timeout,
            max,
        };
        tasks.spawn(served.run(stream, cancel.clone(), slot));
    }
}

/// One stream being served.
struct Served<Req, Resp> {
    peer: PeerId,
    inbound: mpsc::Sender<InboundRequest<Req, Resp>>,
    reply_timeout: Duration,
    max: usize,
}

impl<Req: RpcMessage, Resp: RpcMessage> Served<Req, Resp> {
    async fn run(self, mut stream: Stream, cancel: CancellationToken, _slot: OwnedSemaphorePermit) {
        loop {
            let read = tokio::select! {
                () = cancel.cancelled() => return,
                r = read_frame(&mut stream, self.max) => r,
            };
            let body = match read {
                Ok(Some(body)) => body,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(peer = %self.peer, error = %e, "request stream failed");
                    return;
                }
            };
            let Ok(request) = cbor4ii::serde::from_slice::<Req>(&body) else {
                tracing::debug!(peer = %self.peer, "a request on a stream did not decode");
                return;
            };
            let answer = tokio::select! {
                () = cancel.cancelled() => return,
                a = self.answer(request) => a,
            };
            let written = match answer.map(|r| cbor4ii::serde::to_vec(Vec::new(), &r)) {
                Some(Ok(bytes)) => write_frame(&mut stream, &[ANSWERED], &bytes).await,
                _ => match stream.write_all(&[NO_ANSWER]).await {
                    Ok(()) => stream.flush().await,
                    Err(e) => Err(e),
                },
            };
            if written.is_err() {
                return;
            }
        }
    }

    /// The application's response, or `None` when it is full or does not
    /// answer in time.
    async fn answer(&self, request: Req) -> Option<Resp> {
        let (reply, rx) = oneshot::channel();
        let request = InboundRequest {
            peer: self.peer,
            request,
            reply,
        };
        if self.inbound.try_send(request).is_err() {
            tracing::debug!(peer = %self.peer, "inbound requests full; a request shed");
            return None;
        }
        match tokio::time::timeout(self.reply_timeout, rx).await {
            Ok(Ok(resp)) => Some(resp),
            _ => None,
        }
    }
}
