//! Finding who holds a CID nobody connected has: the DHT (through the
//! swarm, [`super::dht`]) and, when configured, a delegated routing
//! endpoint over HTTP (`GET /routing/v1/providers/{cid}`, IPIP-337). Found
//! providers are dialled; Bitswap then sends them its open wants.
//!
//! It owns the HTTP client for the endpoint and the node's public-network
//! hooks (announcing pinned roots on start, the members' node ids for block
//! push); it must not fetch blocks.

use std::collections::HashSet;
use std::time::Duration;

use cid::Cid;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::Deserialize;

use super::swarm::SwarmHandle;
use super::{PIN_LS_PAGE, dht};
use crate::ipfs::PinKind;

/// How long the delegated endpoint may take to answer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read from the delegated endpoint.
const HTTP_MAX_BYTES: usize = 1 << 20;
/// Providers from the delegated endpoint dialled per lookup.
const DIAL_MAX: usize = 8;
/// How long one dial of a provider may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Lookups running at once; a stalled pin that finds no free slot tries
/// again at its next lookup time.
const LOOKUPS_MAX: usize = 16;

/// Provider lookups for one node.
#[derive(Debug)]
pub(super) struct Router {
    swarm: SwarmHandle,
    delegated: Option<(String, reqwest::Client)>,
    slots: tokio::sync::Semaphore,
}

/// `{"Providers": [...]}` of `/routing/v1/providers`.
#[derive(Debug, Deserialize)]
struct Providers {
    #[serde(rename = "Providers", default)]
    providers: Option<Vec<Provider>>,
}

/// One provider record; records of other schemas have no `ID`/`Addrs`.
#[derive(Debug, Deserialize)]
struct Provider {
    #[serde(rename = "ID", default)]
    id: Option<String>,
    #[serde(rename = "Addrs", default)]
    addrs: Option<Vec<String>>,
}

/// The dialable `/p2p/` addresses of a `/routing/v1/providers` answer.
fn provider_addrs(body: &[u8], me: PeerId) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, String> {
    let parsed: Providers = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut out: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
    for p in parsed.providers.unwrap_or_default() {
        let Some(peer) = p.id.and_then(|id| id.parse::<PeerId>().ok()) else {
            continue;
        };
        if peer == me || out.iter().any(|(q, _)| *q == peer) {
            continue;
        }
        let addrs: Vec<Multiaddr> = p
            .addrs
            .unwrap_or_default()
            .iter()
            .filter_map(|a| a.parse::<Multiaddr>().ok())
            .map(|a| match a.iter().last() {
                Some(Protocol::P2p(_)) => a,
                _ => a.with(Protocol::P2p(peer)),
            })
            .collect();
        if !addrs.is_empty() {
            out.push((peer, addrs));
        }
    }
    Ok(out)
}

impl Router {
    /// Lookups through `swarm`'s DHT and, when `delegated` is a base URL,
    /// that endpoint.
    pub(super) fn new(swarm: SwarmHandle, delegated: Option<String>) -> Result<Self, String> {
        let delegated = match delegated {
            None => None,
            Some(url) => {
                let client = crate::tls::client(None)
                    .map_err(|e| e.to_string())?
                    .timeout(HTTP_TIMEOUT)
                    .build()
                    .map_err(|e| e.to_string())?;
                Some((url.trim_end_matches('/').to_owned(), client))
            }
        };
        Ok(Self {
            swarm,
            delegated,
            slots: tokio::sync::Semaphore::new(LOOKUPS_MAX),
        })
    }

    /// Finds providers of `cid` and dials them; how many were found (0
    /// at once when [`LOOKUPS_MAX`] lookups are running).
    pub(super) async fn find_and_dial(&self, cid: Cid) -> usize {
        let Ok(_slot) = self.slots.try_acquire() else {
            tracing::debug!(%cid, "provider lookups are all busy; later");
            return 0;
        };
        let dht = self.swarm.find_providers(&cid);
        let delegated = self.delegated(cid);
        let (dht, delegated) = futures::future::join(dht, delegated).await;
        tracing::debug!(%cid, dht = dht.len(), delegated, "looked up providers");
        dht.len() + delegated
    }

    /// Asks the delegated endpoint and dials what it names.
    async fn delegated(&self, cid: Cid) -> usize {
        let Some((base, client)) = &self.delegated else {
            return 0;
        };
        let url = format!("{base}/routing/v1/providers/{cid}");
        let body = match fetch(client, &url).await {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(%cid, error = %e, "delegated routing did not answer");
                return 0;
            }
        };
        let found = match provider_addrs(&body, self.swarm.peer_id()) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(%cid, error = %e, "delegated routing answered nonsense");
                return 0;
            }
        };
        let dials = found.iter().take(DIAL_MAX).map(|(_, addrs)| async move {
            for addr in addrs {
                if let Ok(Ok(_)) =
                    tokio::time::timeout(DIAL_TIMEOUT, self.swarm.dial(addr.clone())).await
                {
                    return;
                }
            }
        });
        futures::future::join_all(dials).await;
        found.len()
    }
}

impl super::EmbeddedNode {
    /// Announces the roots of the recursive pins held, on start (at most
    /// what the DHT's provider store holds; the swarm paces the queries).
    pub(super) async fn provide_pinned(self) {
        let mut after: Option<Vec<u8>> = None;
        let mut provided = 0usize;
        while provided < dht::MAX_PROVIDER_KEYS {
            let from = after.clone();
            let page = match self
                .blocking(move |s| s.pins_page(from.as_deref(), PIN_LS_PAGE))
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list pins to announce them");
                    return;
                }
            };
            let Some(last) = page.last() else { break };
            after = Some(last.0.clone());
            for (key, pin) in page {
                if pin.kind() == PinKind::Recursive
                    && let Ok(cid) = Cid::try_from(key.as_slice())
                {
                    self.inner.swarm.provide(&cid).await;
                    provided += 1;
                }
            }
        }
    }

    /// Tells the node which peers are the cluster members' nodes: on the
    /// public network only they push blocks to it or are pushed to.
    pub fn set_cluster_nodes(&self, peers: HashSet<PeerId>) {
        self.inner.push.set_members(peers);
    }

    /// Looks up providers of `cid` (DHT, delegated routing) and dials
    /// them; how many were found. Nothing in the private swarm.
    pub async fn find_providers(&self, cid: &Cid) -> usize {
        if !self.inner.swarm.is_public() {
            return 0;
        }
        self.inner.router.find_and_dial(*cid).await
    }
}

/// The body of `url` (a 200 answer), at most [`HTTP_MAX_BYTES`].
async fn fetch(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    use futures::StreamExt;
    let resp = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    if !resp.status().is_success() {
        // 404: nobody provides it.
        return Err(format!("status {}", resp.status()));
    }
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.without_url().to_string())?;
        if body.len() + chunk.len() > HTTP_MAX_BYTES {
            return Err("answer too large".into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delegated_routing_answer_gives_dialable_addresses_of_other_peers() {
        let me = PeerId::random();
        let a = PeerId::random();
        let body = format!(
            r#"{{"Providers":[
                {{"Schema":"peer","ID":"{a}","Addrs":["/ip4/127.0.0.1/tcp/4001","/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{a}","junk"],"Protocols":["transport-bitswap"]}},
                {{"Schema":"peer","ID":"{a}","Addrs":["/ip4/127.0.0.2/tcp/1"]}},
                {{"Schema":"peer","ID":"{me}","Addrs":["/ip4/127.0.0.1/tcp/9"]}},
                {{"Schema":"peer","ID":"not a peer","Addrs":["/ip4/127.0.0.1/tcp/9"]}},
                {{"Schema":"peer","ID":"{}","Addrs":[]}},
                {{"Schema":"unknown"}}
            ]}}"#,
            PeerId::random()
        );
        let found = provider_addrs(body.as_bytes(), me).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, a);
        assert_eq!(
            found[0].1,
            vec![
                format!("/ip4/127.0.0.1/tcp/4001/p2p/{a}")
                    .parse::<Multiaddr>()
                    .unwrap(),
                format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{a}")
                    .parse()
                    .unwrap(),
            ]
        );
        assert!(
            provider_addrs(br#"{"Providers":null}"#, me)
                .unwrap()
                .is_empty()
        );
        assert!(provider_addrs(b"<html>", me).is_err());
    }
}
