//! Building the swarm: transport, behaviours, listeners.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::Transport;
use libp2p::core::upgrade::Version;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, StreamProtocol, Swarm, SwarmBuilder, gossipsub, identify, noise, tcp, yamux,
};

use super::{FEED_TOPIC, MAX_GOSSIP_BYTES, METRICS_TOPIC, P2pConfig, P2pError, RpcMessage};

/// RPC streams open at once per connection (libp2p's default is 100). A
/// follower forwards each client's write and read barrier to the leader
/// as its own request, so a few dozen concurrent clients on one follower
/// already take a hundred; a stream over the limit is reset. Yamux allows
/// 512 streams per connection.
const MAX_CONCURRENT_RPC_STREAMS: usize = 512;
/// Peers stay connected: consensus heartbeats and gossip are frequent, and a
/// reconnect costs three handshakes.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long binding the listeners may take before `spawn` gives up.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Identify's application protocol family.
const IDENTIFY_PROTOCOL: &str = "/pinfleet/id/1";

/// The swarm's behaviours.
#[derive(NetworkBehaviour)]
pub(super) struct Behaviour<Req: RpcMessage, Resp: RpcMessage> {
    pub(super) identify: identify::Behaviour,
    pub(super) rpc: request_response::cbor::Behaviour<Req, Resp>,
    pub(super) gossipsub: gossipsub::Behaviour,
    /// Requests over kept streams (`streams.rs`).
    pub(super) stream: libp2p_stream::Behaviour,
}

/// The swarm type the event loop drives.
pub(super) type P2pSwarm<Req, Resp> = Swarm<Behaviour<Req, Resp>>;

fn build_error(error: impl std::error::Error + Send + Sync + 'static) -> P2pError {
    P2pError::Build(Box::new(error))
}

/// Build the swarm from a config; nothing is bound or dialed yet.
pub(super) fn build<Req: RpcMessage, Resp: RpcMessage>(
    config: &P2pConfig,
) -> Result<P2pSwarm<Req, Resp>, P2pError> {
    let protocol = StreamProtocol::try_from_owned(config.protocol.to_owned()).map_err(|e| {
        P2pError::InvalidConfig {
            reason: format!("protocol {:?}: {e}", config.protocol),
        }
    })?;
    let max_message_bytes = u64::try_from(config.max_message_bytes).unwrap_or(u64::MAX);
    let psk = PreSharedKey::new(config.secret);
    let request_timeout = config.request_timeout;

    let swarm = SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        // pnet must wrap the raw TCP stream, before multistream-select and
        // noise, so the builder's `with_tcp` (which upgrades immediately)
        // cannot be used.
        .with_other_transport(|keypair| {
            let noise = noise::Config::new(keypair)?;
            let transport = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                .upgrade(Version::V1)
                .authenticate(noise)
                .multiplex(yamux::Config::default());
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(transport)
        })
        .map_err(build_error)?
        .with_behaviour(|keypair| {
            let identify = identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), keypair.public())
                    .with_agent_version(format!("pinfleet/{}", env!("CARGO_PKG_VERSION")))
                    .with_push_listen_addr_updates(true),
            );

            let codec = request_response::cbor::codec::Codec::<Req, Resp>::default()
                .set_request_size_maximum(max_message_bytes)
                .set_response_size_maximum(max_message_bytes);
            let rpc = request_response::Behaviour::with_codec(
                codec,
                [(protocol, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(request_timeout)
                    .with_max_concurrent_streams(MAX_CONCURRENT_RPC_STREAMS),
            );

            // Clusters are small (a handful to a few dozen peers): flood
            // publishing reaches every subscribed peer at once, and a low
            // mesh size lets two or three peers form a mesh at all.
            let gossip_config = gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::Strict)
                .flood_publish(true)
                .mesh_n_low(1)
                .mesh_n(3)
                .mesh_n_high(6)
                .mesh_outbound_min(1)
                .max_transmit_size(MAX_GOSSIP_BYTES)
                .build()?;
            let mut gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(keypair.clone()),
                gossip_config,
            )?;
            gossipsub.subscribe(&gossipsub::IdentTopic::new(METRICS_TOPIC))?;
            gossipsub.subscribe(&gossipsub::IdentTopic::new(FEED_TOPIC))?;

            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Behaviour {
                identify,
                rpc,
                gossipsub,
                stream: libp2p_stream::Behaviour::new(),
            })
        })
        .map_err(build_error)?
        .with_swarm_config(|c| {
            // Every peer speaks the protocols this one opens streams for,
            // so an outbound stream sends its first message along with the
            // protocol it proposes instead of waiting a round trip for the
            // answer (a peer that refuses fails the stream the same way).
            c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT)
                .with_substream_upgrade_protocol_override(Version::V1Lazy)
        })
        .with_connection_timeout(config.dial_timeout())
        .build();
    Ok(swarm)
}

/// Bind every address and wait until each listener reports one bound
/// address, so callers can read real ports right after `spawn`.
pub(super) async fn listen<Req: RpcMessage, Resp: RpcMessage>(
    swarm: &mut P2pSwarm<Req, Resp>,
    addrs: &[Multiaddr],
) -> Result<(), P2pError> {
    let mut pending = HashSet::new();
    for addr in addrs {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|source| P2pError::Listen {
                addr: addr.clone(),
                source,
            })?;
        pending.insert((id, addr.clone()));
    }
    let wait = async {
        while !pending.is_empty() {
            // Nothing is dialed yet, so listener events are all there is.
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { listener_id, .. } => {
                    pending.retain(|(id, _)| *id != listener_id);
                }
                SwarmEvent::ListenerClosed {
                    listener_id,
                    reason,
                    ..
                } => {
                    if let Some((_, addr)) = pending.iter().find(|(id, _)| *id == listener_id) {
                        let error = match reason {
                            Err(error) => error,
                            Ok(()) => std::io::Error::other("listener closed"),
                        };
                        return Err(P2pError::Listen {
                            addr: addr.clone(),
                            source: libp2p::TransportError::Other(error),
                        });
                    }
                }
                SwarmEvent::ListenerError { listener_id, error } => {
                    if let Some((_, addr)) = pending.iter().find(|(id, _)| *id == listener_id) {
                        return Err(P2pError::Listen {
                            addr: addr.clone(),
                            source: libp2p::TransportError::Other(error),
                        });
                    }
                }
                other => tracing::trace!(event = ?other, "swarm event while binding"),
            }
        }
        Ok(())
    };
    tokio::time::timeout(LISTEN_TIMEOUT, wait)
        .await
        .map_err(|_| P2pError::ListenTimeout)?
}
