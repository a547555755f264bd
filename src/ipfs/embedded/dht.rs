//! The public node's content routing: a dual Kademlia DHT as Kubo runs it
//! (`/ipfs/kad/1.0.0` among peers on global addresses, `/ipfs/lan/kad/1.0.0`
//! among peers on private and loopback ones), provider records for pinned
//! roots published through a bounded queue, and provider lookups that dial
//! what they find.
//!
//! It lives inside the swarm task ([`super::swarm`]) and only ever touches
//! the swarm it is handed; it must not know about blocks, pins or Bitswap.

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroUsize;
use std::time::Duration;

use libp2p::kad::{self, GetProvidersOk, QueryId, QueryResult, RecordKey};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm};
use tokio::sync::oneshot;

use super::swarm::Behaviour;

/// The public DHT's protocol (Kubo's WAN DHT).
pub(super) const WAN_PROTOCOL: StreamProtocol = StreamProtocol::new("/ipfs/kad/1.0.0");
/// The DHT among peers on private and loopback addresses (Kubo's LAN DHT).
pub(super) const LAN_PROTOCOL: StreamProtocol = StreamProtocol::new("/ipfs/lan/kad/1.0.0");

/// Provider records held, ours and others' (each key up to
/// [`PROVIDERS_PER_KEY`] providers): the DHT's memory is bounded.
pub(super) const MAX_PROVIDER_KEYS: usize = 65_536;
/// Providers kept per key (the DHT's replication factor).
const PROVIDERS_PER_KEY: usize = 20;
/// Provide queries running at once; the rest wait in the queue.
const PROVIDE_CONCURRENCY: usize = 8;
/// Roots waiting to be provided; beyond it the oldest waiting are dropped
/// (they are provided again at the next republish).
const PROVIDE_QUEUE_MAX: usize = MAX_PROVIDER_KEYS;
/// How often every provided root is announced again (Kubo: 22 h; records
/// live 48 h).
pub(super) const REPROVIDE_INTERVAL: Duration = Duration::from_secs(12 * 3600);
/// Providers dialled per lookup.
const DIAL_PER_LOOKUP: usize = 8;
/// How often the routing tables are refreshed (kad's default).
pub(super) const REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// How long one DHT query may run.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A configured Kademlia behaviour for `protocol`.
pub(super) fn behaviour(
    me: PeerId,
    protocol: StreamProtocol,
    server: bool,
) -> kad::Behaviour<kad::store::MemoryStore> {
    let store = kad::store::MemoryStore::with_config(
        me,
        kad::store::MemoryStoreConfig {
            max_records: 1024,
            max_value_bytes: 10 * 1024,
            max_providers_per_key: PROVIDERS_PER_KEY,
            max_provided_keys: MAX_PROVIDER_KEYS,
        },
    );
    let mut config = kad::Config::new(protocol);
    config
        .set_query_timeout(QUERY_TIMEOUT)
        // Republishing is ours (bounded): kad's job would start a query
        // per provided key at once.
        .set_provider_publication_interval(None)
        // So is the periodic refresh ([`Routing::refresh`]): kad's warns
        // every time the table is empty (a node with no bootstrap peers).
        .set_periodic_bootstrap_interval(None)
        .set_replication_factor(NonZeroUsize::new(PROVIDERS_PER_KEY).unwrap_or(NonZeroUsize::MIN));
    let mut kad = kad::Behaviour::with_config(me, store, config);
    // A cluster's nodes serve the DHT as Kubo's `dhtserver` does (the
    // node's whole point is to hold and announce content) unless they
    // cannot be dialled.
    kad.set_mode(Some(if server {
        kad::Mode::Server
    } else {
        kad::Mode::Client
    }));
    kad
}

/// Whether `addr` is on a loopback, private or link-local network (the
/// LAN DHT's addresses) rather than a global one.
pub(super) fn is_lan(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
        Some(Protocol::Ip6(ip)) => {
            ip.is_loopback() || ip.is_unique_local() || ip.is_unicast_link_local()
        }
        _ => false,
    }
}

/// The DHT key of a CID: its multihash, as Kubo keys provider records.
pub(super) fn key_of(cid: &cid::Cid) -> RecordKey {
    RecordKey::new(&cid.hash().to_bytes())
}

/// A provider lookup in progress.
struct Lookup {
    found: Vec<PeerId>,
    /// Queries (one per DHT) still running.
    running: usize,
    reply: Option<oneshot::Sender<Vec<PeerId>>>,
}

/// Provide queue and lookups; the behaviours themselves are in the swarm.
#[derive(Default)]
pub(super) struct Routing {
    /// Roots to provide, oldest first.
    queue: VecDeque<RecordKey>,
    queued: HashSet<RecordKey>,
    /// Provide queries running.
    providing: HashSet<QueryId>,
    /// Keys we provide (announced again every [`REPROVIDE_INTERVAL`]).
    provided: HashSet<RecordKey>,
    lookups: HashMap<u64, Lookup>,
    next_lookup: u64,
    by_query: HashMap<QueryId, u64>,
}

impl Routing {
    /// Whether either DHT runs.
    fn active(swarm: &Swarm<Behaviour>) -> bool {
        let b = swarm.behaviour();
        b.wan.is_enabled() || b.lan.is_enabled()
    }

    /// Remembers `addrs` of `peer` in the DHT whose protocol it speaks and
    /// whose kind of address each is.
    pub(super) fn learn(
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        protocols: &[StreamProtocol],
        addrs: &[Multiaddr],
    ) {
        let b = swarm.behaviour_mut();
        for addr in addrs {
            let lan = is_lan(addr);
            if lan && protocols.contains(&LAN_PROTOCOL) {
                if let Some(k) = b.lan.as_mut() {
                    k.add_address(&peer, addr.clone());
                }
            } else if !lan
                && protocols.contains(&WAN_PROTOCOL)
                && let Some(k) = b.wan.as_mut()
            {
                k.add_address(&peer, addr.clone());
            }
        }
    }

    /// Adds the bootstrap peers and starts a bootstrap of each DHT that
    /// has one.
    pub(super) fn bootstrap(swarm: &mut Swarm<Behaviour>, peers: &[Multiaddr]) {
        let b = swarm.behaviour_mut();
        for addr in peers {
            let Some(Protocol::P2p(peer)) = addr.iter().last() else {
                tracing::warn!(%addr, "bootstrap address without /p2p/: ignored");
                continue;
            };
            let dht = if is_lan(addr) {
                b.lan.as_mut()
            } else {
                b.wan.as_mut()
            };
            if let Some(k) = dht {
                k.add_address(&peer, addr.clone());
            }
        }
        Self::refresh(swarm);
    }

    /// Refreshes each DHT's routing table that has peers (a bootstrap
    /// query); nothing when it has none.
    pub(super) fn refresh(swarm: &mut Swarm<Behaviour>) {
        let b = swarm.behaviour_mut();
        for k in [b.wan.as_mut(), b.lan.as_mut()].into_iter().flatten() {
            let _ = k.bootstrap();
        }
    }

    /// Queues `key` to be provided (now, and at every republish).
    pub(super) fn provide(&mut self, swarm: &mut Swarm<Behaviour>, key: RecordKey) {
        if !Self::active(swarm) {
            return;
        }
        if self.provided.len() >= MAX_PROVIDER_KEYS && !self.provided.contains(&key) {
            tracing::debug!("already announcing as many roots as the dht holds; not this one");
            return;
        }
        self.provided.insert(key.clone());
        self.enqueue(key);
        self.pump(swarm);
    }

    fn enqueue(&mut self, key: RecordKey) {
        if !self.queued.insert(key.clone()) {
            return;
        }
        self.queue.push_back(key);
        while self.queue.len() > PROVIDE_QUEUE_MAX {
            if let Some(old) = self.queue.pop_front() {
                self.queued.remove(&old);
            }
        }
    }

    /// Stops providing `key` (unpinned).
    pub(super) fn unprovide(&mut self, swarm: &mut Swarm<Behaviour>, key: &RecordKey) {
        self.provided.remove(key);
        if self.queued.remove(key) {
            self.queue.retain(|k| k != key);
        }
        let b = swarm.behaviour_mut();
        for k in [b.wan.as_mut(), b.lan.as_mut()].into_iter().flatten() {
            k.stop_providing(key);
        }
    }

    /// Queues every provided key again.
    pub(super) fn reprovide(&mut self, swarm: &mut Swarm<Behaviour>) {
        let keys: Vec<RecordKey> = self.provided.iter().cloned().collect();
        for key in keys {
            self.enqueue(key);
        }
        self.pump(swarm);
    }

    /// Starts provide queries while fewer than [`PROVIDE_CONCURRENCY`] run.
    fn pump(&mut self, swarm: &mut Swarm<Behaviour>) {
        while self.providing.len() < PROVIDE_CONCURRENCY {
            let Some(key) = self.queue.pop_front() else {
                return;
            };
            self.queued.remove(&key);
            let b = swarm.behaviour_mut();
            for k in [b.wan.as_mut(), b.lan.as_mut()].into_iter().flatten() {
                match k.start_providing(key.clone()) {
                    Ok(id) => {
                        self.providing.insert(id);
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot provide a root"),
                }
            }
        }
    }

    /// Looks up providers of `key` in every DHT, dialling those found;
    /// `reply` gets every provider found when the lookups end.
    pub(super) fn find(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        key: RecordKey,
        reply: oneshot::Sender<Vec<PeerId>>,
    ) {
        let index = self.next_lookup;
        self.next_lookup += 1;
        let mut lookup = Lookup {
            found: Vec::new(),
            running: 0,
            reply: Some(reply),
        };
        let me = *swarm.local_peer_id();
        let mut local: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
        let b = swarm.behaviour_mut();
        for k in [b.wan.as_mut(), b.lan.as_mut()].into_iter().flatten() {
            use kad::store::RecordStore;
            for p in k.store_mut().providers(&key) {
                if p.provider != me {
                    local.push((p.provider, p.addresses));
                }
            }
            let id = k.get_providers(key.clone());
            self.by_query.insert(id, index);
            lookup.running += 1;
        }
        for (peer, addrs) in local {
            Self::found(swarm, &mut lookup, peer, addrs);
        }
        if lookup.running == 0 {
            if let Some(r) = lookup.reply.take() {
                let _ = r.send(lookup.found);
            }
            return;
        }
        self.lookups.insert(index, lookup);
    }

    fn found(
        swarm: &mut Swarm<Behaviour>,
        lookup: &mut Lookup,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) {
        if lookup.found.contains(&peer) || peer == *swarm.local_peer_id() {
            return;
        }
        lookup.found.push(peer);
        if lookup.found.len() > DIAL_PER_LOOKUP || swarm.is_connected(&peer) {
            return;
        }
        // Kad adds the addresses it learnt in running queries to a dial
        // by peer id; `addrs` are those of our own store.
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .extend_addresses_through_behaviour()
            .build();
        if let Err(e) = swarm.dial(opts) {
            tracing::debug!(%peer, error = %e, "cannot dial a provider");
        }
    }

    /// Handles a Kademlia event of either DHT.
    pub(super) fn event(&mut self, swarm: &mut Swarm<Behaviour>, e: kad::Event) {
        let kad::Event::OutboundQueryProgressed {
            id, result, step, ..
        } = e
        else {
            return;
        };
        match result {
            QueryResult::StartProviding(r) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "providing a root did not reach the dht");
                }
                if self.providing.remove(&id) {
                    self.pump(swarm);
                }
            }
            QueryResult::GetProviders(r) => {
                let Some(&index) = self.by_query.get(&id) else {
                    return;
                };
                if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = r
                    && let Some(lookup) = self.lookups.get_mut(&index)
                {
                    for p in providers {
                        Self::found(swarm, lookup, p, Vec::new());
                    }
                }
                if step.last {
                    self.by_query.remove(&id);
                    self.finish(index);
                }
            }
            QueryResult::Bootstrap(Err(e)) => {
                tracing::debug!(error = %e, "dht bootstrap failed");
            }
            _ => {}
        }
    }

    /// One query of lookup `index` ended; answers and forgets the lookup
    /// when it was the last.
    fn finish(&mut self, index: u64) {
        if let Some(lookup) = self.lookups.get_mut(&index) {
            lookup.running = lookup.running.saturating_sub(1);
            if lookup.running == 0
                && let Some(mut done) = self.lookups.remove(&index)
                && let Some(r) = done.reply.take()
            {
                let _ = r.send(done.found);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_sorted_into_the_lan_or_the_public_dht() {
        for lan in [
            "/ip4/127.0.0.1/tcp/4001",
            "/ip4/10.1.2.3/udp/4001/quic-v1",
            "/ip4/192.168.1.5/tcp/1",
            "/ip4/169.254.0.1/tcp/1",
            "/ip6/::1/tcp/1",
            "/ip6/fd00::1/tcp/1",
        ] {
            assert!(is_lan(&lan.parse().unwrap()), "{lan}");
        }
        for wan in [
            "/ip4/104.131.131.82/tcp/4001",
            "/ip6/2604:a880:1:20::203:d001/tcp/4001",
            "/dnsaddr/bootstrap.libp2p.io",
            "/dns4/example.org/tcp/4001",
        ] {
            assert!(!is_lan(&wan.parse().unwrap()), "{wan}");
        }
    }

    #[test]
    fn a_provider_key_is_the_multihash_as_kubo_keys_it() {
        let cid: cid::Cid = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
            .parse()
            .unwrap();
        assert_eq!(key_of(&cid).as_ref(), cid.hash().to_bytes().as_slice());
        let v0 = cid::Cid::new_v0(*cid.hash()).unwrap();
        assert_eq!(
            key_of(&v0),
            key_of(&cid),
            "v0 and v1 of one block share a key"
        );
    }
}
