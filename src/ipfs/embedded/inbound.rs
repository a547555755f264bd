//! Inbound streams of the Bitswap protocols, handed to Bitswap through a
//! bounded queue.
//!
//! Not `libp2p-stream`'s `accept`: its queue holds one stream for all
//! peers, and Kubo opens a new stream for every message it sends (each
//! block it answers), so a burst of them was dropped in the connection
//! handler and the blocks asked again only after the re-ask delay (Kubo to
//! pinfleet ran at 2–3 MiB/s). Here the queue holds [`QUEUE`] streams;
//! beyond it (a peer opening streams faster than Bitswap takes them) they
//! are dropped and counted. Bitswap's own per-peer stream cap still holds.
//!
//! It must not read the streams: only negotiate and hand them over.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use libp2p::core::upgrade::{InboundUpgrade, UpgradeInfo};
use libp2p::core::{Endpoint, transport::PortUse};
use libp2p::swarm::handler::{ConnectionEvent, FullyNegotiatedInbound};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use tokio::sync::mpsc;

/// Streams waiting for Bitswap, across all peers.
const QUEUE: usize = 1024;

/// An inbound stream: who opened it, and on which protocol.
pub(super) type Incoming = (PeerId, Stream, StreamProtocol);

/// The receiving end: Bitswap takes streams from it.
pub(super) type IncomingRx = mpsc::Receiver<Incoming>;

/// Listens for `protocols` on every connection.
pub(super) struct Inbound {
    protocols: Vec<StreamProtocol>,
    tx: mpsc::Sender<Incoming>,
    dropped: Arc<AtomicU64>,
}

impl Inbound {
    /// The behaviour and the queue its streams arrive on.
    pub(super) fn new(protocols: Vec<StreamProtocol>) -> (Self, IncomingRx) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let this = Self {
            protocols,
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (this, rx)
    }

    fn handler(&self, peer: PeerId) -> Handler {
        Handler {
            peer,
            protocols: self.protocols.clone(),
            tx: self.tx.clone(),
            dropped: Arc::clone(&self.dropped),
        }
    }
}

impl NetworkBehaviour for Inbound {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _connection: ConnectionId,
        peer: PeerId,
        _local: &Multiaddr,
        _remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection: ConnectionId,
        peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn on_swarm_event(&mut self, _event: FromSwarm<'_>) {}

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// One connection's listener.
pub(super) struct Handler {
    peer: PeerId,
    protocols: Vec<StreamProtocol>,
    tx: mpsc::Sender<Incoming>,
    dropped: Arc<AtomicU64>,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = Protocols;
    type OutboundProtocol = libp2p::core::upgrade::DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = Infallible;

    fn listen_protocol(&self) -> SubstreamProtocol<Protocols, ()> {
        SubstreamProtocol::new(Protocols(self.protocols.clone()), ())
    }

    fn poll(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, Infallible, Infallible>> {
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, event: Infallible) {
        match event {}
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<'_, Protocols, Self::OutboundProtocol, (), Infallible>,
    ) {
        if let ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
            protocol: (stream, protocol),
            ..
        }) = event
            && self.tx.try_send((self.peer, stream, protocol)).is_err()
        {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::debug!(peer = %self.peer, dropped = n + 1, "bitswap stream queue full; dropping inbound streams");
            }
        }
    }
}

/// The protocols listened for; the stream and the one negotiated.
#[derive(Clone)]
pub(super) struct Protocols(Vec<StreamProtocol>);

impl UpgradeInfo for Protocols {
    type Info = StreamProtocol;
    type InfoIter = std::vec::IntoIter<StreamProtocol>;

    fn protocol_info(&self) -> Self::InfoIter {
        self.0.clone().into_iter()
    }
}

impl InboundUpgrade<Stream> for Protocols {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Output, Infallible>>;

    fn upgrade_inbound(self, stream: Stream, protocol: StreamProtocol) -> Self::Future {
        std::future::ready(Ok((stream, protocol)))
    }
}
