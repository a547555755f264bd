//! Requests over long-lived streams. A request-response exchange opens a
//! new yamux stream for every request (with its own protocol negotiation
//! and request timer), which under a steady flow of Raft and forwarding
//! messages costs more than the messages themselves. Here a request goes
//! over a stream kept open between requests: one request at a time per
//! stream, a new stream only while every open one is busy.
//!
//! Only for connected peers whose identify says they accept [`protocol`]: a
//! peer of an older version is asked the request-response way, as before.
//! The answering side greets every new stream with one byte before it reads
//! anything; a request whose new stream fails before that greeting was
//! never read (the peer refused the protocol, or dropped the stream because
//! it could not take it at once) and goes the request-response way. A
//! request on a kept stream whose bytes could not all be written was not
//! read either and is tried on the next stream. Any other failure once a
//! request is sent fails it (it may have been executed), and its stream is
//! dropped. Kept streams unused for a while are closed on both sides (an
//! open one keeps its connection up, as any stream does).
//!
//! Frames: a request is its CBOR length (u32, big-endian) and CBOR; an
//! answer is a status byte (0 answered, 1 no answer: shed, or not answered
//! in time), then for 0 the response framed the same way.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{InboundRequest, P2pError, RpcMessage};

/// Idle streams kept per peer; more are closed when they come back.
const IDLE_PER_PEER: usize = 8;

/// How long a requester keeps a stream nobody uses.
const IDLE_KEPT: Duration = Duration::from_secs(60);

/// How long the answering side waits for the next request on a stream
/// (longer than [`IDLE_KEPT`], so the requester lets go first).
const SERVED_IDLE: Duration = Duration::from_secs(180);

/// Longest wait for a new stream and its greeting.
const OPEN_LIMIT: Duration = Duration::from_secs(5);

/// What the answering side sends first on a new stream.
const GREETING: u8 = 0x70;

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
    idle: Mutex<HashMap<PeerId, Vec<(Stream, Instant)>>>,
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

    /// The last connection to `peer` closed: its streams are gone, and
    /// what it accepts is known again once it identifies anew (it may come
    /// back as another version).
    pub(super) fn disconnected(&self, peer: &PeerId) {
        lock(&self.connected).remove(peer);
        lock(&self.speakers).remove(peer);
        lock(&self.idle).remove(peer);
    }

    /// A kept stream to `peer` used within [`IDLE_KEPT`], if any.
    fn take_idle(&self, peer: &PeerId) -> Option<Stream> {
        let mut idle = lock(&self.idle);
        let kept = idle.get_mut(peer)?;
        kept.retain(|(_, since)| since.elapsed() < IDLE_KEPT);
        kept.pop().map(|(s, _)| s)
    }

    /// A new stream to `peer`, greeted by its answering side; `None` when
    /// none could be opened or the peer did not greet it (nothing was sent
    /// on it).
    async fn open(&self, peer: PeerId, timeout: Duration) -> Option<Stream> {
        // A control of its own: opening a stream to one peer does not wait
        // for another's.
        let mut control = lock(&self.control).clone();
        let protocol = self.protocol.clone();
        let opened = async move {
            let mut stream = control
                .open_stream(peer, protocol)
                .await
                .map_err(io::Error::other)?;
            // Reading drives the (lazy) protocol negotiation first.
            let mut greeting = [0u8; 1];
            stream.read_exact(&mut greeting).await?;
            if greeting[0] != GREETING {
                return Err(io::Error::other("unexpected greeting"));
            }
            Ok::<_, io::Error>(stream)
        };
        match tokio::time::timeout(timeout.min(OPEN_LIMIT), opened).await {
            Ok(Ok(stream)) => {
                self.opened
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // It keeps the connection up like any stream: Raft's
                // heartbeats travel on kept streams, and libp2p does not
                // count traffic on a stream it is told to ignore.
                Some(stream)
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "no request stream; asking the request-response way");
                None
            }
            Err(_) => None,
        }
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
        let max = self.max_message_bytes;
        let mut stream = loop {
            let (mut stream, kept) = match self.take_idle(&peer) {
                Some(s) => (s, true),
                None => (self.open(peer, timeout).await?, false),
            };
            // Whole frames only: a request not written whole was not read.
            match write_frame(&mut stream, &[], &body).await {
                Ok(()) => break stream,
                // A kept stream gone stale (its connection closed): the next.
                Err(e) if kept => {
                    tracing::debug!(%peer, error = %e, "a kept request stream failed; trying another");
                }
                Err(e) => return Some(Err(P2pError::Io(e))),
            }
        };
        let exchange = async {
            stream.flush().await?;
            read_answer(&mut stream, max).await
        };
        let answer = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(answer)) => answer,
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
            kept.push((stream, Instant::now()));
        }
        Some(result)
    }
}

/// Writes `head` then `body` framed by its length (not flushed).
async fn write_frame(stream: &mut Stream, head: &[u8], body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| io::Error::other("message too large"))?;
    stream.write_all(head).await?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(body).await
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
    // Grown as bytes arrive: a length alone reserves nothing.
    let mut body = Vec::with_capacity(len.min(64 * 1024));
    let read = (&mut *stream)
        .take(len as u64)
        .read_to_end(&mut body)
        .await?;
    if read < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
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
        // The requester sends nothing before this: a stream refused or
        // dropped before it was surely not read.
        let greeted = match stream.write_all(&[GREETING]).await {
            Ok(()) => stream.flush().await,
            Err(e) => Err(e),
        };
        if greeted.is_err() {
            return;
        }
        loop {
            let read = tokio::select! {
                () = cancel.cancelled() => return,
                // Unused for long: closed (the requester let go already).
                () = tokio::time::sleep(SERVED_IDLE) => return,
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
                _ => stream.write_all(&[NO_ANSWER]).await,
            };
            let written = match written {
                Ok(()) => stream.flush().await,
                Err(e) => Err(e),
            };
            if written.is_err() {
                return;
            }
        }
    }

    /// The application's response, or `None` when it is shed or does not
    /// answer in time (as for request-response requests).
    async fn answer(&self, request: Req) -> Option<Resp> {
        match super::hand_over(&self.inbound, self.peer, request, self.reply_timeout) {
            Ok(response) => response.await,
            Err(TrySendError::Full(())) => {
                tracing::warn!(peer = %self.peer, "inbound rpc queue full, shedding a request on a stream");
                None
            }
            Err(TrySendError::Closed(())) => {
                tracing::debug!(peer = %self.peer, "no consumer for inbound rpc, dropping a request on a stream");
                None
            }
        }
    }
}
