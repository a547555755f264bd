//! The task that owns the swarm: turns commands into swarm calls and swarm
//! events into replies, inbound requests and gossip.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, InboundRequestId, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, gossipsub, identify};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::streams::Streams;
use super::swarm::{BehaviourEvent, P2pSwarm};
use super::{Command, FEED_TOPIC, InboundRequest, METRICS_TOPIC, P2pError, PeerEvent, RpcMessage};

/// Addresses kept per peer; the newest win.
const MAX_ADDRS_PER_PEER: usize = 8;
/// Peers kept in the address book; far above any expected cluster size, it
/// only bounds memory if something floods us with identities.
const MAX_KNOWN_PEERS: usize = 4096;

/// A dial started by `P2pHandle::dial` (with a reply) or by bootstrap.
struct PendingDial {
    addr: Multiaddr,
    reply: Option<oneshot::Sender<Result<PeerId, P2pError>>>,
}

/// An inbound request whose reply the application has not sent yet.
type PendingReply<Resp> = BoxFuture<
    'static,
    (
        PeerId,
        InboundRequestId,
        ResponseChannel<Resp>,
        Option<Resp>,
    ),
>;

/// Where each peer can be dialed, learned from our dials, `add_address` and
/// identify.
///
/// The swarm has its own cache, but it forgets an address as soon as one
/// dial to it fails, so a peer that restarts would become unreachable by id.
/// This book keeps addresses until newer ones push them out.
#[derive(Default)]
struct AddressBook {
    peers: HashMap<PeerId, Vec<Multiaddr>>,
}

impl AddressBook {
    fn add(&mut self, peer: PeerId, addr: Multiaddr) {
        // Stored with the `/p2p/<id>` suffix, the form the swarm and the
        // behaviours use, so the swarm's dedup of dial addresses sees equal
        // addresses as equal and does not dial the same socket twice.
        let Ok(addr) = addr.with_p2p(peer) else {
            return; // the address names another peer
        };
        let unspecified = addr.iter().any(|p| match p {
            Protocol::Ip4(ip) => ip.is_unspecified(),
            Protocol::Ip6(ip) => ip.is_unspecified(),
            _ => false,
        });
        if unspecified {
            return;
        }
        let known = self.peers.len();
        let addrs = match self.peers.entry(peer) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(_) if known >= MAX_KNOWN_PEERS => return,
            Entry::Vacant(e) => e.insert(Vec::new()),
        };
        addrs.retain(|a| *a != addr);
        addrs.insert(0, addr);
        addrs.truncate(MAX_ADDRS_PER_PEER);
    }

    fn get(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.peers.get(peer).cloned().unwrap_or_default()
    }
}

/// The peer id at the end of an address, if it names one.
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

/// Where gossip of one topic goes: (original author, payload).
type GossipQueue = mpsc::Sender<(PeerId, Vec<u8>)>;

pub(super) struct EventLoop<Req: RpcMessage, Resp: RpcMessage> {
    swarm: P2pSwarm<Req, Resp>,
    commands: mpsc::Receiver<Command<Req, Resp>>,
    inbound: mpsc::Sender<InboundRequest<Req, Resp>>,
    gossip: mpsc::Sender<(PeerId, Vec<u8>)>,
    feed: mpsc::Sender<(PeerId, Vec<u8>)>,
    peer_events: broadcast::Sender<PeerEvent>,
    topic: gossipsub::IdentTopic,
    feed_topic: gossipsub::IdentTopic,
    pending_dials: HashMap<ConnectionId, PendingDial>,
    pending_requests: HashMap<OutboundRequestId, oneshot::Sender<Result<Resp, P2pError>>>,
    pending_replies: FuturesUnordered<PendingReply<Resp>>,
    addresses: AddressBook,
    /// How long the application has to answer an inbound request; past it
    /// the remote has given up anyway.
    reply_timeout: Duration,
    /// Who takes requests over kept streams, and those streams.
    streams: Arc<Streams>,
}

impl<Req: RpcMessage, Resp: RpcMessage> EventLoop<Req, Resp> {
    pub(super) fn new(
        swarm: P2pSwarm<Req, Resp>,
        commands: mpsc::Receiver<Command<Req, Resp>>,
        inbound: mpsc::Sender<InboundRequest<Req, Resp>>,
        (gossip, feed): (GossipQueue, GossipQueue),
        peer_events: broadcast::Sender<PeerEvent>,
        reply_timeout: Duration,
        streams: Arc<Streams>,
    ) -> Self {
        Self {
            swarm,
            commands,
            inbound,
            gossip,
            feed,
            peer_events,
            topic: gossipsub::IdentTopic::new(METRICS_TOPIC),
            feed_topic: gossipsub::IdentTopic::new(FEED_TOPIC),
            pending_dials: HashMap::new(),
            pending_requests: HashMap::new(),
            pending_replies: FuturesUnordered::new(),
            addresses: AddressBook::default(),
            reply_timeout,
            streams,
        }
    }

    pub(super) async fn run(mut self, bootstrap: Vec<Multiaddr>, cancel: CancellationToken) {
        for addr in bootstrap {
            self.start_dial(addr, None);
        }
        // With every handle dropped the peer still serves inbound requests
        // and gossip until cancelled.
        let mut commands_open = true;
        loop {
            // Unbiased on purpose: a busy swarm must not starve commands.
            tokio::select! {
                () = cancel.cancelled() => break,
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv(), if commands_open => match command {
                    Some(command) => self.on_command(command),
                    None => commands_open = false,
                },
                Some((peer, id, channel, response)) = self.pending_replies.next(),
                    if !self.pending_replies.is_empty() =>
                {
                    self.on_reply(peer, id, channel, response);
                }
            }
        }
        tracing::debug!(peer = %self.swarm.local_peer_id(), "p2p event loop stopped");
        // Dropping the swarm closes every connection and listener; dropping
        // the pending maps fails every waiting caller with `Stopped`.
    }

    fn on_command(&mut self, command: Command<Req, Resp>) {
        match command {
            Command::ListenAddrs { reply } => {
                let local = *self.swarm.local_peer_id();
                let addrs = self
                    .swarm
                    .listeners()
                    .map(|a| a.clone().with_p2p(local).unwrap_or_else(|a| a))
                    .collect();
                let _ = reply.send(addrs);
            }
            Command::Dial { addr, reply } => self.start_dial(addr, Some(reply)),
            Command::AddAddress { peer, addr, reply } => {
                if peer_of(&addr).is_some_and(|named| named != peer) {
                    let _ = reply.send(Err(P2pError::PeerMismatch { peer, addr }));
                    return;
                }
                self.addresses.add(peer, addr.clone());
                self.swarm.add_peer_address(peer, addr);
                let _ = reply.send(Ok(()));
            }
            Command::Request {
                peer,
                request,
                reply,
            } => {
                let addrs = self.addresses.get(&peer);
                let id = self
                    .swarm
                    .behaviour_mut()
                    .rpc
                    .send_request_with_addresses(&peer, request, addrs);
                tracing::trace!(%peer, request = %id, "rpc request sent");
                self.pending_requests.insert(id, reply);
            }
            Command::ConnectedPeers { reply } => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::Publish { feed, data, reply } => {
                let topic = if feed {
                    self.feed_topic.clone()
                } else {
                    self.topic.clone()
                };
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(topic, data)
                    .map(|_| ())
                    .map_err(P2pError::Publish);
                let _ = reply.send(result);
            }
        }
    }

    fn start_dial(
        &mut self,
        addr: Multiaddr,
        reply: Option<oneshot::Sender<Result<PeerId, P2pError>>>,
    ) {
        let peer = peer_of(&addr);
        if let Some(peer) = peer
            && self.swarm.is_connected(&peer)
        {
            if let Some(reply) = reply {
                let _ = reply.send(Ok(peer));
            }
            return;
        }
        let opts = match peer {
            // `Always`: an explicit dial must produce a connection (or an
            // error) of its own, even if a request is dialing the peer too.
            Some(peer) => DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .condition(PeerCondition::Always)
                .build(),
            None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
        };
        let connection_id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                tracing::debug!(%addr, "dialing");
                self.pending_dials
                    .insert(connection_id, PendingDial { addr, reply });
            }
            Err(source) => self.dial_failed(PendingDial { addr, reply }, source),
        }
    }

    fn dial_failed(&mut self, dial: PendingDial, source: libp2p::swarm::DialError) {
        match dial.reply {
            Some(reply) => {
                tracing::debug!(addr = %dial.addr, error = %source, "dial failed");
                let _ = reply.send(Err(P2pError::Dial {
                    addr: dial.addr,
                    source: Box::new(source),
                }));
            }
            None => {
                // A peer with another cluster secret cannot be told apart
                // from a dead one: its handshake just times out.
                tracing::warn!(
                    addr = %dial.addr,
                    error = %source,
                    "failed to reach bootstrap peer; check the address and the cluster secret"
                );
            }
        }
    }

    fn on_reply(
        &mut self,
        peer: PeerId,
        id: InboundRequestId,
        channel: ResponseChannel<Resp>,
        response: Option<Resp>,
    ) {
        let Some(response) = response else {
            // Dropping the channel tells the remote there is no answer.
            tracing::debug!(%peer, request = %id, "no reply for inbound rpc request");
            return;
        };
        if self
            .swarm
            .behaviour_mut()
            .rpc
            .send_response(channel, response)
            .is_err()
        {
            tracing::debug!(%peer, request = %id, "rpc reply too late, remote gave up");
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent<Req, Resp>>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(event)) => self.on_rpc_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => {
                self.on_gossipsub_event(event);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => {
                self.on_identify_event(event);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                if endpoint.is_dialer() {
                    self.addresses
                        .add(peer_id, endpoint.get_remote_address().clone());
                }
                if let Some(dial) = self.pending_dials.remove(&connection_id) {
                    match dial.reply {
                        Some(reply) => {
                            let _ = reply.send(Ok(peer_id));
                        }
                        None => {
                            tracing::info!(peer = %peer_id, addr = %dial.addr, "joined bootstrap peer");
                        }
                    }
                }
                if num_established.get() == 1 {
                    tracing::debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "peer connected");
                    self.streams.connected(peer_id);
                    let _ = self.peer_events.send(PeerEvent::Connected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } => {
                tracing::debug!(peer = %peer_id, cause = ?cause, "peer disconnected");
                self.streams.disconnected(&peer_id);
                let _ = self.peer_events.send(PeerEvent::Disconnected(peer_id));
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => match self.pending_dials.remove(&connection_id) {
                Some(dial) => self.dial_failed(dial, error),
                None => {
                    tracing::debug!(peer = ?peer_id, error = %error, "outgoing connection failed");
                }
            },
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                // Also what a peer with a different cluster secret looks
                // like: its handshake fails after pnet.
                tracing::debug!(addr = %send_back_addr, error = %error, "incoming connection failed");
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::debug!(%address, "listening");
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                tracing::debug!(%address, "listen address expired");
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!(error = %error, "listener failed");
            }
            SwarmEvent::ListenerClosed {
                addresses,
                reason: Err(error),
                ..
            } => {
                tracing::warn!(addrs = ?addresses, error = %error, "listener closed");
            }
            _ => {}
        }
    }

    fn on_rpc_event(&mut self, event: request_response::Event<Req, Resp>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request_id,
                    request,
                    channel,
                } => self.on_inbound_request(peer, request_id, request, channel),
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.pending_requests.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, request = %request_id, error = %error, "rpc request failed");
                if let Some(reply) = self.pending_requests.remove(&request_id) {
                    let error = match error {
                        request_response::OutboundFailure::DialFailure => {
                            P2pError::Unreachable { peer }
                        }
                        request_response::OutboundFailure::Timeout => P2pError::Timeout,
                        request_response::OutboundFailure::ConnectionClosed => {
                            P2pError::ConnectionClosed
                        }
                        request_response::OutboundFailure::UnsupportedProtocols => {
                            P2pError::UnsupportedProtocol
                        }
                        request_response::OutboundFailure::Io(e) => P2pError::Io(e),
                    };
                    let _ = reply.send(Err(error));
                }
            }
            request_response::Event::InboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, request = %request_id, error = %error, "inbound rpc failed");
            }
            request_response::Event::ResponseSent {
                peer, request_id, ..
            } => {
                tracing::trace!(%peer, request = %request_id, "rpc reply sent");
            }
        }
    }

    fn on_inbound_request(
        &mut self,
        peer: PeerId,
        id: InboundRequestId,
        request: Req,
        channel: ResponseChannel<Resp>,
    ) {
        match super::hand_over(&self.inbound, peer, request, self.reply_timeout) {
            Ok(response) => {
                self.pending_replies
                    .push(Box::pin(async move { (peer, id, channel, response.await) }));
            }
            // Awaiting here would stall the whole swarm; shedding makes the
            // remote see an error it can retry.
            Err(TrySendError::Full(_)) => {
                tracing::warn!(%peer, request = %id, "inbound rpc queue full, shedding request");
            }
            Err(TrySendError::Closed(_)) => {
                tracing::debug!(%peer, request = %id, "no consumer for inbound rpc, dropping request");
            }
        }
    }

    fn on_gossipsub_event(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message,
                ..
            } => {
                let queue = if message.topic == self.topic.hash() {
                    &self.gossip
                } else if message.topic == self.feed_topic.hash() {
                    &self.feed
                } else {
                    return;
                };
                let author = message.source.unwrap_or(propagation_source);
                match queue.try_send((author, message.data)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        tracing::debug!(peer = %author, "gossip queue full, dropping message");
                    }
                    Err(TrySendError::Closed(_)) => {}
                }
            }
            gossipsub::Event::Subscribed { peer_id, topic, .. } => {
                if topic == self.topic.hash() {
                    tracing::debug!(peer = %peer_id, "peer subscribed to metrics");
                    let _ = self.peer_events.send(PeerEvent::Subscribed(peer_id));
                }
            }
            gossipsub::Event::GossipsubNotSupported { peer_id } => {
                tracing::debug!(peer = %peer_id, "peer does not support gossipsub");
            }
            other => tracing::trace!(event = ?other, "gossipsub event"),
        }
    }

    fn on_identify_event(&mut self, event: identify::Event) {
        match event {
            identify::Event::Received { peer_id, info, .. } => {
                tracing::debug!(
                    peer = %peer_id,
                    agent = %info.agent_version,
                    addrs = ?info.listen_addrs,
                    "peer identified"
                );
                // identify also hands these to the swarm's own cache
                // (`NewExternalAddrOfPeer`); ours survives failed dials.
                for addr in info.listen_addrs {
                    self.addresses.add(peer_id, addr);
                }
                self.streams.identified(peer_id, &info.protocols);
                let _ = self.peer_events.send(PeerEvent::Identified(peer_id));
            }
            identify::Event::Error { peer_id, error, .. } => {
                tracing::debug!(peer = %peer_id, error = %error, "identify failed");
            }
            _ => {}
        }
    }
}
