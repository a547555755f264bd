//! The embedded node's own libp2p swarm, in one of two modes:
//!
//! - **private**: TCP + pnet (the cluster secret, so only cluster members'
//!   nodes connect) + noise + yamux;
//! - **public** (the IPFS network): TCP and QUIC, noise or TLS, yamux, DNS,
//!   ping, AutoNAT, the dual DHT ([`super::dht`]), optionally a relay
//!   client with hole punching.
//!
//! Both run identify, connection and memory limits, and Bitswap and block
//! push streams via `libp2p-stream`. One task owns the swarm;
//! [`SwarmHandle`] sends it commands. It reports connections to
//! [`Bitswap`] and must not know about blocks or pins.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::Transport;
use libp2p::core::upgrade::Version;
use libp2p::kad::RecordKey;
use libp2p::multiaddr::Protocol;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, SwarmBuilder, autonat, connection_limits, dcutr, identify, identity,
    kad, memory_connection_limits, noise, ping, relay, tcp, tls, yamux,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::EmbeddedError;
use super::bitswap::Bitswap;
use super::dht::{self, Routing};

/// Connections between cluster members' nodes stay open.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);
/// Connections to other IPFS nodes close after this long unused.
const PUBLIC_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a dial may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Incoming connections still in their handshake, at most.
const MAX_PENDING_INCOMING: u32 = 128;
/// Connections to one peer, at most.
const MAX_PER_PEER: u32 = 8;
/// No new connection while the process uses more than this share of the
/// machine's memory.
const MAX_MEMORY_FRACTION: f64 = 0.9;

#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    limits: connection_limits::Behaviour,
    memory: memory_connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: Toggle<ping::Behaviour>,
    autonat: Toggle<autonat::Behaviour>,
    pub(super) wan: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    pub(super) lan: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    relay: Toggle<relay::client::Behaviour>,
    dcutr: Toggle<dcutr::Behaviour>,
    bitswap: super::inbound::Inbound,
    stream: libp2p_stream::Behaviour,
}

/// How the public node runs (absent: the private swarm).
#[derive(Clone, Debug, Default)]
pub struct PublicOptions {
    /// DHT bootstrap peers.
    pub bootstrap: Vec<Multiaddr>,
    /// Relay client and hole punching.
    pub relay_client: bool,
    /// Query the DHT only, never answer it.
    pub dht_client: bool,
    /// Most connections held at once.
    pub max_connections: u32,
}

/// Where and how the swarm runs.
pub(super) struct SwarmOptions<'a> {
    pub secret: [u8; 32],
    pub listen: &'a [Multiaddr],
    pub public: Option<&'a PublicOptions>,
}

fn behaviour(
    keypair: &identity::Keypair,
    public: Option<&PublicOptions>,
    relay: Option<relay::client::Behaviour>,
    bitswap: super::inbound::Inbound,
) -> Behaviour {
    let me = keypair.public().to_peer_id();
    let max = public.map_or(1024, |p| p.max_connections.max(1));
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(max))
        .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
        .with_max_established_per_peer(Some(MAX_PER_PEER));
    let on = public.is_some();
    let server = public.is_some_and(|p| !p.dht_client);
    Behaviour {
        limits: connection_limits::Behaviour::new(limits),
        memory: memory_connection_limits::Behaviour::with_max_percentage(MAX_MEMORY_FRACTION),
        identify: identify::Behaviour::new(
            identify::Config::new("ipfs/0.1.0".to_owned(), keypair.public())
                .with_agent_version(super::agent_version()),
        ),
        ping: Toggle::from(on.then(|| ping::Behaviour::new(ping::Config::new()))),
        autonat: Toggle::from(on.then(|| autonat::Behaviour::new(me, autonat::Config::default()))),
        wan: Toggle::from(on.then(|| dht::behaviour(me, dht::WAN_PROTOCOL, server))),
        lan: Toggle::from(on.then(|| dht::behaviour(me, dht::LAN_PROTOCOL, server))),
        dcutr: Toggle::from(relay.is_some().then(|| dcutr::Behaviour::new(me))),
        relay: Toggle::from(relay),
        bitswap,
        stream: libp2p_stream::Behaviour::new(),
    }
}

/// The swarm of `opts`' mode.
fn build(
    keypair: identity::Keypair,
    opts: &SwarmOptions<'_>,
    bitswap: super::inbound::Inbound,
) -> Result<Swarm<Behaviour>, EmbeddedError> {
    let err = |e: &dyn std::fmt::Display| EmbeddedError::Swarm(e.to_string());
    let Some(public) = opts.public else {
        let psk = PreSharedKey::new(opts.secret);
        return Ok(SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            // pnet wraps the raw TCP stream, before multistream-select.
            .with_other_transport(|keypair| {
                let noise = noise::Config::new(keypair)?;
                let transport = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                    .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                    .upgrade(Version::V1)
                    .authenticate(noise)
                    .multiplex(yamux::Config::default());
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(transport)
            })
            .map_err(|e| err(&e))?
            .with_behaviour(|keypair| behaviour(keypair, None, None, bitswap))
            .map_err(|e| err(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
            .with_connection_timeout(DIAL_TIMEOUT)
            .build());
    };
    let transports = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            (tls::Config::new, noise::Config::new),
            yamux::Config::default,
        )
        .map_err(|e| err(&e))?
        .with_quic()
        .with_dns()
        .map_err(|e| err(&e))?;
    let swarm = if public.relay_client {
        transports
            .with_relay_client(
                (tls::Config::new, noise::Config::new),
                yamux::Config::default,
            )
            .map_err(|e| err(&e))?
            .with_behaviour(|keypair, relay| behaviour(keypair, Some(public), Some(relay), bitswap))
            .map_err(|e| err(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(PUBLIC_IDLE_TIMEOUT))
            .with_connection_timeout(DIAL_TIMEOUT)
            .build()
    } else {
        transports
            .with_behaviour(|keypair| behaviour(keypair, Some(public), None, bitswap))
            .map_err(|e| err(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(PUBLIC_IDLE_TIMEOUT))
            .with_connection_timeout(DIAL_TIMEOUT)
            .build()
    };
    Ok(swarm)
}

enum Command {
    Dial(Multiaddr, oneshot::Sender<Result<PeerId, String>>),
    Peers(oneshot::Sender<Vec<PeerId>>),
    Addrs(oneshot::Sender<Vec<Multiaddr>>),
    Provide(RecordKey),
    Unprovide(RecordKey),
    FindProviders(RecordKey, oneshot::Sender<Vec<PeerId>>),
}

/// Talks to the swarm task.
#[derive(Clone, Debug)]
pub(crate) struct SwarmHandle {
    tx: mpsc::Sender<Command>,
    peer_id: PeerId,
    public: bool,
}

impl SwarmHandle {
    /// This node's peer id.
    pub(crate) fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Connects to `addr`; resolves once connected (or already connected).
    pub(crate) async fn dial(&self, addr: Multiaddr) -> Result<PeerId, String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Dial(addr, tx))
            .await
            .map_err(|_| "node stopped".to_string())?;
        rx.await.map_err(|_| "node stopped".to_string())?
    }

    /// Peers with an open connection.
    pub(crate) async fn peers(&self) -> Vec<PeerId> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Peers(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Listen addresses, each ending in `/p2p/<peer id>`.
    pub(crate) async fn addrs(&self) -> Vec<Multiaddr> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Addrs(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Whether the node is on the public network (runs the DHT).
    pub(crate) fn is_public(&self) -> bool {
        self.public
    }

    /// Announces (now and at every republish) that this node provides
    /// `cid`; nothing in the private swarm.
    pub(crate) async fn provide(&self, cid: &cid::Cid) {
        if self.public {
            let _ = self.tx.send(Command::Provide(dht::key_of(cid))).await;
        }
    }

    /// Stops announcing `cid`.
    pub(crate) async fn unprovide(&self, cid: &cid::Cid) {
        if self.public {
            let _ = self.tx.send(Command::Unprovide(dht::key_of(cid))).await;
        }
    }

    /// Looks up providers of `cid` in the DHT and dials them (Bitswap then
    /// asks them for what it wants); the providers found.
    pub(crate) async fn find_providers(&self, cid: &cid::Cid) -> Vec<PeerId> {
        if !self.public {
            return Vec::new();
        }
        let (tx, rx) = oneshot::channel();
        if self
            .tx
            .send(Command::FindProviders(dht::key_of(cid), tx))
            .await
            .is_err()
        {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

/// Builds the swarm, binds `listen` (waiting for the real ports), lets
/// `make_bitswap` start Bitswap on the swarm's stream control, and starts
/// the swarm task, which reports connections to that Bitswap.
pub(super) async fn spawn(
    keypair: identity::Keypair,
    opts: SwarmOptions<'_>,
    make_bitswap: impl FnOnce(
        libp2p_stream::Control,
        super::inbound::IncomingRx,
    ) -> Result<Arc<Bitswap>, EmbeddedError>,
    cancel: CancellationToken,
    tasks: &TaskTracker,
) -> Result<(SwarmHandle, Arc<Bitswap>), EmbeddedError> {
    let (inbound, incoming) = super::inbound::Inbound::new(
        super::bitswap::PROTOCOLS
            .iter()
            .map(|(p, _)| p.clone())
            .collect(),
    );
    let mut swarm = build(keypair, &opts, inbound)?;
    let listen = opts.listen;
    let control = swarm.behaviour().stream.new_control();
    let mut pending = HashSet::new();
    for addr in listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| EmbeddedError::Listen {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
        pending.insert(id);
    }
    let mut addrs = Vec::new();
    let bind = async {
        while !pending.is_empty() {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                } => {
                    pending.remove(&listener_id);
                    addrs.push(address);
                }
                SwarmEvent::ListenerClosed { reason, .. } => {
                    return Err(EmbeddedError::Listen {
                        addr: format!("{listen:?}"),
                        reason: match reason {
                            Err(e) => e.to_string(),
                            Ok(()) => "listener closed".into(),
                        },
                    });
                }
                _ => {}
            }
        }
        Ok(())
    };
    tokio::time::timeout(DIAL_TIMEOUT, bind)
        .await
        .map_err(|_| EmbeddedError::Listen {
            addr: format!("{listen:?}"),
            reason: "timed out".into(),
        })??;
    let peer_id = *swarm.local_peer_id();
    let bitswap = make_bitswap(control, incoming)?;
    let public = opts.public.is_some();
    if let Some(p) = opts.public {
        // Announced as they are (provider records, identify), as Kubo
        // announces its listen addresses.
        for a in &addrs {
            swarm.add_external_address(a.clone());
        }
        Routing::bootstrap(&mut swarm, &p.bootstrap);
    }
    let (tx, rx) = mpsc::channel(64);
    tasks.spawn(
        EventLoop {
            swarm,
            rx,
            addrs,
            bitswap: Arc::clone(&bitswap),
            dials: HashMap::new(),
            routing: Routing::default(),
            public,
        }
        .run(cancel),
    );
    Ok((
        SwarmHandle {
            tx,
            peer_id,
            public,
        },
        bitswap,
    ))
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    rx: mpsc::Receiver<Command>,
    addrs: Vec<Multiaddr>,
    bitswap: Arc<Bitswap>,
    dials: HashMap<ConnectionId, oneshot::Sender<Result<PeerId, String>>>,
    routing: Routing,
    public: bool,
}

impl EventLoop {
    async fn run(mut self, cancel: CancellationToken) {
        let mut reprovide = tokio::time::interval_at(
            tokio::time::Instant::now() + dht::REPROVIDE_INTERVAL,
            dht::REPROVIDE_INTERVAL,
        );
        let mut refresh = tokio::time::interval_at(
            tokio::time::Instant::now() + dht::REFRESH_INTERVAL,
            dht::REFRESH_INTERVAL,
        );
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                c = self.rx.recv() => match c {
                    Some(c) => self.command(c),
                    None => return,
                },
                e = self.swarm.select_next_some() => self.event(e),
                _ = reprovide.tick() => self.routing.reprovide(&mut self.swarm),
                _ = refresh.tick(), if self.public => Routing::refresh(&mut self.swarm),
            }
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Dial(addr, reply) => {
                let peer = addr.iter().find_map(|p| match p {
                    Protocol::P2p(id) => Some(id),
                    _ => None,
                });
                if let Some(peer) = peer
                    && self.swarm.is_connected(&peer)
                {
                    let _ = reply.send(Ok(peer));
                    return;
                }
                let opts = match peer {
                    Some(peer) => DialOpts::peer_id(peer).addresses(vec![addr]).build(),
                    None => DialOpts::unknown_peer_id().address(addr).build(),
                };
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.dials.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::Addrs(reply) => {
                let me = *self.swarm.local_peer_id();
                let addrs = self
                    .addrs
                    .iter()
                    .map(|a| a.clone().with(Protocol::P2p(me)))
                    .collect();
                let _ = reply.send(addrs);
            }
            Command::Provide(key) => self.routing.provide(&mut self.swarm, key),
            Command::Unprovide(key) => self.routing.unprovide(&mut self.swarm, &key),
            Command::FindProviders(key, reply) => self.routing.find(&mut self.swarm, key, reply),
        }
    }

    fn event(&mut self, e: SwarmEvent<BehaviourEvent>) {
        match e {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                // Bitswap first: whoever awaits the dial may read at once,
                // and must find the peer there to ask.
                if num_established.get() == 1 {
                    tracing::debug!(peer = %peer_id, "embedded node connected");
                    self.bitswap.peer_connected(peer_id);
                }
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => self.bitswap.peer_disconnected(&peer_id),
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            SwarmEvent::NewListenAddr { address, .. } if !self.addrs.contains(&address) => {
                if self.public {
                    self.swarm.add_external_address(address.clone());
                }
                self.addrs.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                if self.public {
                    self.swarm.remove_external_address(&address);
                }
                self.addrs.retain(|a| *a != address);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => Routing::learn(
                &mut self.swarm,
                peer_id,
                &info.protocols,
                &info.listen_addrs,
            ),
            SwarmEvent::Behaviour(BehaviourEvent::Wan(e) | BehaviourEvent::Lan(e)) => {
                self.routing.event(&mut self.swarm, e);
            }
            _ => {}
        }
    }
}
