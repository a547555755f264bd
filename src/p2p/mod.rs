//! The libp2p swarm as an actor: RPC between peers, gossip of metrics, and
//! the private network that keeps strangers out.
//!
//! This module owns the [`libp2p::Swarm`] and everything that touches it: the
//! transport (TCP, then the pnet pre-shared-key handshake, then noise, then
//! yamux), the behaviours (identify, request-response with CBOR and requests
//! over kept streams (`streams.rs`), gossipsub on [`METRICS_TOPIC`]), the
//! peer address book, and the bookkeeping that turns libp2p events into
//! replies on oneshot channels. Callers talk to it through a cloneable
//! [`P2pHandle`] and read what peers send from [`P2pEvents`].
//!
//! It is generic over the RPC request and response types, so it must not know
//! what they mean: no consensus, no allocation, no permission checks (the
//! consensus layer decides who may call what). It never blocks its event loop
//! on a caller: inbound requests and gossip go out on bounded channels with
//! `try_send`, and are shed (the remote sees an error) when a consumer falls
//! behind. It never logs the cluster secret, only its fingerprint.

mod event_loop;
mod streams;
mod swarm;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::DialError;
use libp2p::{Multiaddr, PeerId, TransportError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The gossipsub topic that carries informer metrics.
pub const METRICS_TOPIC: &str = "pinfleet/metrics/1";

/// The gossipsub topic on which trusted peers announce the newest state
/// (the signed feed followers fetch).
pub const FEED_TOPIC: &str = "pinfleet/feed/1";

/// The RPC protocol name used when a config does not say otherwise.
pub const DEFAULT_PROTOCOL: &str = "/pinfleet/rpc/1";

/// The largest RPC request or response accepted by default (64 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The RPC timeout used when a config does not say otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a dial (TCP connect plus the pnet, noise and yamux
/// handshakes) may take, whatever `request_timeout` is.
pub const MAX_DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest gossip message: metrics are small, and gossip is forwarded to
/// every peer, so it gets a much lower bound than RPC.
pub const MAX_GOSSIP_BYTES: usize = 1024 * 1024;

/// What an RPC request or response type must be for the CBOR codec and the
/// actor: serde both ways, sendable across tasks, printable in logs.
///
/// Implemented for every type that qualifies; never implement it by hand.
pub trait RpcMessage: Serialize + DeserializeOwned + fmt::Debug + Send + 'static {}

impl<T> RpcMessage for T where T: Serialize + DeserializeOwned + fmt::Debug + Send + 'static {}

/// How to run the swarm: who we are, which network we belong to, where we
/// listen and whom we join.
#[derive(Clone)]
pub struct P2pConfig {
    /// The peer's identity; its public key is the peer id.
    pub keypair: Keypair,
    /// The cluster secret: the pnet pre-shared key. Peers with a different
    /// secret cannot complete a connection.
    pub secret: [u8; 32],
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/tcp/9096`.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start (best effort; failures are logged).
    pub bootstrap: Vec<Multiaddr>,
    /// How long an RPC may take, including connecting to the peer. Dials
    /// time out after this or [`MAX_DIAL_TIMEOUT`], whichever is shorter.
    pub request_timeout: Duration,
    /// The largest RPC request or response, in bytes.
    pub max_message_bytes: usize,
    /// The request-response protocol name; must start with `/`.
    pub protocol: &'static str,
}

impl P2pConfig {
    /// A config with the defaults for everything but identity and secret:
    /// no listen addresses, no bootstrap peers.
    pub fn new(keypair: Keypair, secret: [u8; 32]) -> Self {
        Self {
            keypair,
            secret,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            protocol: DEFAULT_PROTOCOL,
        }
    }

    /// How long a dial may take.
    fn dial_timeout(&self) -> Duration {
        self.request_timeout.min(MAX_DIAL_TIMEOUT)
    }
}

impl fmt::Debug for P2pConfig {
    // The secret must never reach a log: show its fingerprint only, the way
    // go-libp2p does, so operators can still compare configs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fingerprint = libp2p::pnet::PreSharedKey::new(self.secret).fingerprint();
        f.debug_struct("P2pConfig")
            .field("peer_id", &self.keypair.public().to_peer_id())
            .field("secret_fingerprint", &fingerprint.to_string())
            .field("listen", &self.listen)
            .field("bootstrap", &self.bootstrap)
            .field("request_timeout", &self.request_timeout)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("protocol", &self.protocol)
            .finish()
    }
}

/// Why a p2p operation failed.
#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    /// The actor has stopped (cancelled, or its task ended).
    #[error("p2p service stopped")]
    Stopped,
    /// The peer did not answer in time.
    #[error("request timed out")]
    Timeout,
    /// No connection to the peer could be made for a request.
    #[error("peer {peer} is unreachable")]
    Unreachable {
        /// The peer the request was for.
        peer: PeerId,
    },
    /// Dialing an address failed (refused, wrong secret, wrong peer id…).
    #[error("failed to dial {addr}")]
    Dial {
        /// The address dialed.
        addr: Multiaddr,
        /// What libp2p reported (boxed: it is large, and errors travel in
        /// every `Result` of this module).
        #[source]
        source: Box<DialError>,
    },
    /// An address given for one peer ends in another peer's id.
    #[error("address {addr} does not belong to peer {peer}")]
    PeerMismatch {
        /// The peer the address was given for.
        peer: PeerId,
        /// The address, naming another peer.
        addr: Multiaddr,
    },
    /// The connection closed before the response arrived.
    #[error("connection closed before a response arrived")]
    ConnectionClosed,
    /// The peer does not speak our RPC protocol.
    #[error("peer does not support the rpc protocol")]
    UnsupportedProtocol,
    /// Reading or writing the RPC stream failed (includes messages that do
    /// not decode or exceed `max_message_bytes`).
    #[error("rpc stream failed")]
    Io(#[source] std::io::Error),
    /// Gossip could not be published (no subscribed peers, too large…).
    #[error("failed to publish gossip")]
    Publish(#[source] libp2p::gossipsub::PublishError),
    /// A listen address could not be bound.
    #[error("failed to listen on {addr}")]
    Listen {
        /// The address from the config.
        addr: Multiaddr,
        /// What the transport reported.
        #[source]
        source: TransportError<std::io::Error>,
    },
    /// The listeners did not report a bound address in time.
    #[error("listeners did not come up in time")]
    ListenTimeout,
    /// The config cannot be turned into a swarm.
    #[error("invalid p2p config: {reason}")]
    InvalidConfig {
        /// What is wrong, in words.
        reason: String,
    },
    /// Building the transport or behaviours failed.
    #[error("failed to build the swarm")]
    Build(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A change in what we know about a peer, for components that track which
/// peers are up (subscribe with [`P2pHandle::peer_events`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    /// The first connection to the peer was established.
    Connected(PeerId),
    /// The last connection to the peer closed.
    Disconnected(PeerId),
    /// The peer told us its listen addresses (identify), so requests can
    /// reach it again after either side restarts.
    Identified(PeerId),
    /// The peer subscribed to [`METRICS_TOPIC`], so gossip now reaches it.
    Subscribed(PeerId),
}

/// A request from a peer, waiting for its reply.
///
/// Send the response on `reply`; dropping it instead makes the request fail
/// on the remote side. The reply must come within the config's
/// `request_timeout`, or the remote gives up.
#[derive(Debug)]
pub struct InboundRequest<Req, Resp> {
    /// Who sent it (authenticated by noise).
    pub peer: PeerId,
    /// The decoded request.
    pub request: Req,
    /// Where the response goes.
    pub reply: oneshot::Sender<Resp>,
}

/// Hands `request` from `peer` to the application without waiting: it is
/// shed (the error says whether the queue is full or has no consumer) when
/// it cannot be queued at once, so a busy application never stalls the
/// swarm. The future answers the response, `None` when none comes within
/// `timeout` (past it the remote has given up anyway).
fn hand_over<Req, Resp: Send + 'static>(
    inbound: &mpsc::Sender<InboundRequest<Req, Resp>>,
    peer: PeerId,
    request: Req,
    timeout: Duration,
) -> Result<
    impl std::future::Future<Output = Option<Resp>> + Send + 'static,
    mpsc::error::TrySendError<()>,
> {
    let (reply, rx) = oneshot::channel();
    inbound
        .try_send(InboundRequest {
            peer,
            request,
            reply,
        })
        .map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => mpsc::error::TrySendError::Full(()),
            mpsc::error::TrySendError::Closed(_) => mpsc::error::TrySendError::Closed(()),
        })?;
    Ok(async move {
        tokio::time::timeout(timeout, rx)
            .await
            .ok()
            .and_then(Result::ok)
    })
}

/// What peers send us, for the layer above to consume.
#[derive(Debug)]
pub struct P2pEvents<Req, Resp> {
    /// RPC requests from peers. If this is not drained, new requests are
    /// shed once it is full.
    pub inbound: mpsc::Receiver<InboundRequest<Req, Resp>>,
    /// Gossip on [`METRICS_TOPIC`]: (original author, payload). Shed when
    /// full; metrics are periodic, so the next round replaces a lost one.
    pub gossip: mpsc::Receiver<(PeerId, Vec<u8>)>,
    /// Gossip on [`FEED_TOPIC`]: (original author, payload). Shed when
    /// full; announcements repeat.
    pub feed: mpsc::Receiver<(PeerId, Vec<u8>)>,
}

/// A command for the event loop; each carries its reply channel.
enum Command<Req, Resp> {
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, P2pError>>,
    },
    AddAddress {
        peer: PeerId,
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), P2pError>>,
    },
    Request {
        peer: PeerId,
        request: Req,
        reply: oneshot::Sender<Result<Resp, P2pError>>,
    },
    ConnectedPeers {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Publish {
        /// On [`FEED_TOPIC`] rather than [`METRICS_TOPIC`].
        feed: bool,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), P2pError>>,
    },
}

const COMMAND_CAPACITY: usize = 256;
const INBOUND_CAPACITY: usize = 1024;
const GOSSIP_CAPACITY: usize = 1024;
const PEER_EVENT_CAPACITY: usize = 256;
/// Slack on top of libp2p's own timeouts before a handle gives up waiting
/// for the event loop; libp2p should always answer first.
const REPLY_SLACK: Duration = Duration::from_secs(2);

/// The cloneable client of the p2p actor.
#[derive(Debug)]
pub struct P2pHandle<Req, Resp> {
    tx: mpsc::Sender<Command<Req, Resp>>,
    local_peer_id: PeerId,
    peer_events: broadcast::Sender<PeerEvent>,
    request_timeout: Duration,
    dial_timeout: Duration,
    streams: std::sync::Arc<streams::Streams>,
}

// Derived Clone would demand `Req: Clone, Resp: Clone`.
impl<Req, Resp> Clone for P2pHandle<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            local_peer_id: self.local_peer_id,
            peer_events: self.peer_events.clone(),
            request_timeout: self.request_timeout,
            dial_timeout: self.dial_timeout,
            streams: std::sync::Arc::clone(&self.streams),
        }
    }
}

impl<Req: RpcMessage, Resp: RpcMessage> P2pHandle<Req, Resp> {
    /// This peer's id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// Subscribe to connection changes from now on.
    pub fn peer_events(&self) -> broadcast::Receiver<PeerEvent> {
        self.peer_events.subscribe()
    }

    /// The addresses actually bound (port 0 resolved, `0.0.0.0` expanded to
    /// interfaces), each ending in `/p2p/<local peer id>` so it can be handed
    /// to another peer as a bootstrap address.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, P2pError> {
        self.call(|reply| Command::ListenAddrs { reply }, None)
            .await
    }

    /// Connect to `addr` and wait until the connection is up; returns the
    /// peer id it turned out to have. If the address names a peer
    /// (`/p2p/<id>`) that is already connected, returns at once.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, P2pError> {
        let limit = self.dial_timeout + REPLY_SLACK;
        self.call(|reply| Command::Dial { addr, reply }, Some(limit))
            .await?
    }

    /// Remember an address for `peer`, used when a request has to (re)connect.
    /// The address may end in `/p2p/<peer>`, but not name another peer.
    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), P2pError> {
        self.call(|reply| Command::AddAddress { peer, addr, reply }, None)
            .await?
    }

    /// Send `request` to `peer` and wait for its response, connecting first
    /// if needed (from known addresses: dialed, added, or learned through
    /// identify).
    pub async fn request(&self, peer: PeerId, request: Req) -> Result<Resp, P2pError> {
        // Over a kept stream when the peer takes them (`streams.rs`).
        if let Some(answer) = self
            .streams
            .request(peer, &request, self.request_timeout)
            .await
        {
            return answer;
        }
        // libp2p's request timeout starts once the connection is up, so a
        // request may legitimately take a dial plus a request timeout.
        let limit = self.dial_timeout + self.request_timeout + REPLY_SLACK;
        self.call(
            |reply| Command::Request {
                peer,
                request,
                reply,
            },
            Some(limit),
        )
        .await?
    }

    /// The peers with at least one open connection.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, P2pError> {
        self.call(|reply| Command::ConnectedPeers { reply }, None)
            .await
    }

    /// Publish `data` on [`METRICS_TOPIC`] (signed with our key), at most
    /// [`MAX_GOSSIP_BYTES`]. Fails with [`P2pError::Publish`] when no
    /// connected peer has subscribed yet; periodic publishers can ignore
    /// that.
    pub async fn publish(&self, data: Vec<u8>) -> Result<(), P2pError> {
        self.call(
            |reply| Command::Publish {
                feed: false,
                data,
                reply,
            },
            None,
        )
        .await?
    }

    /// Publish `data` on [`FEED_TOPIC`], as [`publish`](Self::publish)
    /// does on the metrics topic.
    pub async fn publish_feed(&self, data: Vec<u8>) -> Result<(), P2pError> {
        self.call(
            |reply| Command::Publish {
                feed: true,
                data,
                reply,
            },
            None,
        )
        .await?
    }

    async fn call<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command<Req, Resp>,
        limit: Option<Duration>,
    ) -> Result<T, P2pError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(command(reply))
            .await
            .map_err(|_| P2pError::Stopped)?;
        match limit {
            None => rx.await.map_err(|_| P2pError::Stopped),
            Some(limit) => match tokio::time::timeout(limit, rx).await {
                Ok(answer) => answer.map_err(|_| P2pError::Stopped),
                Err(_) => Err(P2pError::Timeout),
            },
        }
    }
}

/// Build the swarm, bind every listen address, start the event loop on
/// `tasks`, and dial the bootstrap peers.
///
/// Returns once the listeners are bound, so [`P2pHandle::listen_addrs`]
/// answers with real ports. The loop runs until `cancel` fires; then the
/// swarm is dropped, which closes every connection, and every waiting call
/// fails with [`P2pError::Stopped`].
pub async fn spawn<Req: RpcMessage, Resp: RpcMessage>(
    config: P2pConfig,
    cancel: CancellationToken,
    tasks: &TaskTracker,
) -> Result<(P2pHandle<Req, Resp>, P2pEvents<Req, Resp>), P2pError> {
    let mut swarm = swarm::build::<Req, Resp>(&config)?;
    let stream_protocol = streams::protocol(config.protocol)?;
    let mut control = swarm.behaviour().stream.new_control();
    let incoming = control
        .accept(stream_protocol.clone())
        .map_err(|e| P2pError::Build(Box::new(e)))?;
    let streams = std::sync::Arc::new(streams::Streams::new(
        control,
        stream_protocol,
        config.max_message_bytes,
    ));
    swarm::listen(&mut swarm, &config.listen).await?;
    let local_peer_id = *swarm.local_peer_id();
    tracing::info!(
        peer = %local_peer_id,
        addrs = ?swarm.listeners().collect::<Vec<_>>(),
        secret_fingerprint = %libp2p::pnet::PreSharedKey::new(config.secret).fingerprint(),
        "p2p listening"
    );

    let (tx, commands) = mpsc::channel(COMMAND_CAPACITY);
    let (inbound_tx, inbound) = mpsc::channel(INBOUND_CAPACITY);
    let (gossip_tx, gossip) = mpsc::channel(GOSSIP_CAPACITY);
    let (feed_tx, feed) = mpsc::channel(GOSSIP_CAPACITY);
    let (peer_events, _) = broadcast::channel(PEER_EVENT_CAPACITY);

    tasks.spawn(streams::serve(
        incoming,
        inbound_tx.clone(),
        (config.request_timeout, config.max_message_bytes),
        cancel.clone(),
        tasks.clone(),
    ));
    let event_loop = event_loop::EventLoop::new(
        swarm,
        commands,
        inbound_tx,
        (gossip_tx, feed_tx),
        peer_events.clone(),
        config.request_timeout,
        std::sync::Arc::clone(&streams),
    );
    let bootstrap = config.bootstrap.clone();
    tasks.spawn(event_loop.run(bootstrap, cancel));

    let handle = P2pHandle {
        tx,
        local_peer_id,
        peer_events,
        request_timeout: config.request_timeout,
        dial_timeout: config.dial_timeout(),
        streams,
    };
    Ok((
        handle,
        P2pEvents {
            inbound,
            gossip,
            feed,
        },
    ))
}
