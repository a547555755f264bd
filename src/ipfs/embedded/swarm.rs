//! The embedded node's own libp2p swarm: TCP + pnet (the cluster secret, so
//! only cluster members' nodes connect: a private IPFS network) + noise +
//! yamux, identify, and Bitswap streams via `libp2p-stream`.
//!
//! One task owns the swarm; [`SwarmHandle`] sends it commands. It reports
//! connections to [`Bitswap`] and must not know about blocks or pins.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::Transport;
use libp2p::core::upgrade::Version;
use libp2p::multiaddr::Protocol;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, SwarmBuilder, identify, identity, noise, tcp, yamux};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::EmbeddedError;
use super::bitswap::Bitswap;

/// Connections between cluster members' nodes stay open.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long a dial may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    identify: identify::Behaviour,
    stream: libp2p_stream::Behaviour,
}

enum Command {
    Dial(Multiaddr, oneshot::Sender<Result<PeerId, String>>),
    Peers(oneshot::Sender<Vec<PeerId>>),
    Addrs(oneshot::Sender<Vec<Multiaddr>>),
}

/// Talks to the swarm task.
#[derive(Clone, Debug)]
pub(crate) struct SwarmHandle {
    tx: mpsc::Sender<Command>,
    peer_id: PeerId,
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
}

/// Builds the swarm, binds `listen` (waiting for the real ports), lets
/// `make_bitswap` start Bitswap on the swarm's stream control, and starts
/// the swarm task, which reports connections to that Bitswap.
pub(super) async fn spawn(
    keypair: identity::Keypair,
    secret: [u8; 32],
    listen: &[Multiaddr],
    make_bitswap: impl FnOnce(libp2p_stream::Control) -> Result<Arc<Bitswap>, EmbeddedError>,
    cancel: CancellationToken,
    tasks: &TaskTracker,
) -> Result<(SwarmHandle, Arc<Bitswap>), EmbeddedError> {
    let psk = PreSharedKey::new(secret);
    let build = |e: &dyn std::fmt::Display| EmbeddedError::Swarm(e.to_string());
    let mut swarm: Swarm<Behaviour> = SwarmBuilder::with_existing_identity(keypair)
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
        .map_err(|e| build(&e))?
        .with_behaviour(|keypair| Behaviour {
            identify: identify::Behaviour::new(
                identify::Config::new("/ipfs/id/1.0.0".to_owned(), keypair.public())
                    .with_agent_version(super::agent_version()),
            ),
            stream: libp2p_stream::Behaviour::new(),
        })
        .map_err(|e| build(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .with_connection_timeout(DIAL_TIMEOUT)
        .build();
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
    let bitswap = make_bitswap(control)?;
    let (tx, rx) = mpsc::channel(64);
    tasks.spawn(
        EventLoop {
            swarm,
            rx,
            addrs,
            bitswap: Arc::clone(&bitswap),
            dials: HashMap::new(),
        }
        .run(cancel),
    );
    Ok((SwarmHandle { tx, peer_id }, bitswap))
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    rx: mpsc::Receiver<Command>,
    addrs: Vec<Multiaddr>,
    bitswap: Arc<Bitswap>,
    dials: HashMap<ConnectionId, oneshot::Sender<Result<PeerId, String>>>,
}

impl EventLoop {
    async fn run(mut self, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                c = self.rx.recv() => match c {
                    Some(c) => self.command(c),
                    None => return,
                },
                e = self.swarm.select_next_some() => self.event(e),
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
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                if num_established.get() == 1 {
                    tracing::debug!(peer = %peer_id, "embedded node connected");
                    self.bitswap.peer_connected(peer_id);
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
                self.addrs.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.addrs.retain(|a| *a != address);
            }
            _ => {}
        }
    }
}
