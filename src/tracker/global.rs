//! Status across the cluster: this peer answers for itself from its
//! tracker, and asks every other member for theirs (one RPC per page of
//! CIDs), merging per CID into IPFS Cluster's `GlobalPinInfo`. A member that
//! does not answer shows as `cluster_error`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;

use super::identity::{Identities, PeerIdentity};
use super::rpc::{self, PeerPinStatus, RangeRequest, RangeStatus};
use super::{LocalStatus, StatusQuery, TrackerHandle, TrackerStatus};
use crate::consensus::{CallError, ClusterNode};
use crate::manifest::{CidKey, ReplicationFactors};
use crate::state::{StatePin, format_time};
use crate::wire::{GlobalPinInfo, PinInfoShort};

/// Pins per status RPC.
pub const PAGE: usize = 2000;

/// Computes local and global pin status for one peer.
#[derive(Clone, Debug)]
pub struct StatusService {
    node: ClusterNode,
    tracker: TrackerHandle,
    default: ReplicationFactors,
    peername: String,
    timeout: Duration,
    identities: Identities,
}

impl StatusService {
    /// A service for `node`'s tracker.
    pub fn new(
        node: ClusterNode,
        tracker: TrackerHandle,
        default: ReplicationFactors,
        peername: String,
    ) -> Self {
        let identities = Identities::new(node.clone(), peername.clone(), None);
        Self {
            node,
            tracker,
            default,
            peername,
            timeout: Duration::from_secs(10),
            identities,
        }
    }

    /// The same service, naming this peer's IPFS node `ipfs` in statuses.
    pub fn with_ipfs(mut self, ipfs: Arc<dyn crate::ipfs::IpfsBackend>) -> Self {
        self.identities = Identities::new(self.node.clone(), self.peername.clone(), Some(ipfs));
        self
    }

    /// Who the members are, for statuses.
    pub fn identities(&self) -> &Identities {
        &self.identities
    }

    /// Names every entry of each info's `peer_map` by its member's
    /// identity (when known).
    fn dress(infos: &mut [GlobalPinInfo], ids: &HashMap<String, PeerIdentity>) {
        for info in infos {
            for (peer, short) in &mut info.peer_map {
                if let Some(id) = ids.get(peer) {
                    short.peername.clone_from(&id.peername);
                    short.ipfs_peer_id.clone_from(&id.ipfs_peer_id);
                    short
                        .ipfs_peer_addresses
                        .clone_from(&id.ipfs_peer_addresses);
                }
            }
        }
    }

    /// The status of `cid` (written `written` by the client) when it is not
    /// in this peer's state, as IPFS Cluster answers it: each member's own
    /// (only this peer's with `local`), `unpinned` where nothing is left,
    /// an unpin still queued or running where the node holds it yet, and a
    /// member that lags reports the pin it still has.
    pub async fn unknown(&self, cid: CidKey, written: &str, local: bool) -> GlobalPinInfo {
        let me = self.node.peer_id();
        let others = if local {
            Vec::new()
        } else {
            self.node.other_members()
        };
        let asks = others.iter().map(|peer| async move {
            let call = self.node.call::<rpc::StatusAny>(*peer, &cid);
            (
                *peer,
                self.timed(tokio::time::timeout(self.timeout, call).await),
            )
        });
        let ids = async {
            if local {
                HashMap::from([(me.to_string(), self.identities.own().await)])
            } else {
                self.identities.members().await
            }
        };
        let (own, remote, ids) =
            tokio::join!(self.status_any(cid), futures::future::join_all(asks), ids);
        let now = chrono::Utc::now().timestamp_millis();
        let failed = |e: String| PeerPinStatus {
            cid,
            status: TrackerStatus::ClusterError.as_str().to_string(),
            error: e,
            attempt_count: 0,
            timestamp_ms: now,
            priority_pin: false,
        };
        let peer_map = std::iter::once((me, own))
            .chain(remote)
            .map(|(peer, s)| {
                let s = s.unwrap_or_else(failed);
                (peer.to_string(), wire_to_short(&s))
            })
            .collect();
        let mut info = [GlobalPinInfo {
            cid: written.to_string(),
            name: String::new(),
            allocations: Vec::new(),
            origins: Vec::new(),
            created: format_time(now),
            metadata: BTreeMap::new(),
            peer_map,
        }];
        Self::dress(&mut info, &ids);
        let [info] = info;
        info
    }

    /// This peer's status for `cid` whether or not it is in its state (what
    /// a member whose state lacks `cid` asks with [`rpc::StatusAny`]): as
    /// [`Self::statuses`] when it is, else as a released pin
    /// ([`StatusQuery::gone`]).
    pub async fn status_any(&self, cid: CidKey) -> Result<PeerPinStatus, String> {
        if let Some(known) = self.statuses(vec![cid]).await?.pop() {
            return Ok(known);
        }
        let s = self
            .tracker
            .statuses(vec![StatusQuery::gone(cid)])
            .await
            .map_err(|e| e.to_string())?
            .pop()
            .ok_or_else(|| "the tracker gave no status".to_string())?;
        Ok(PeerPinStatus {
            cid,
            status: s.status.as_str().to_string(),
            error: s.error,
            attempt_count: s.attempt_count,
            timestamp_ms: s.timestamp_ms,
            priority_pin: s.priority_pin,
        })
    }

    /// The cluster's default replication (what 0/0 means).
    pub fn default_replication(&self) -> ReplicationFactors {
        self.default
    }

    /// The tracker.
    pub fn tracker(&self) -> &TrackerHandle {
        &self.tracker
    }

    /// This peer's status for each pin: one tracker request for the batch,
    /// one lookup per pin (never a copy of the tracker's books).
    pub async fn local(&self, pins: &[StatePin]) -> Result<Vec<LocalStatus>, String> {
        let me = self.node.peer_id().to_string();
        let now = chrono::Utc::now().timestamp_millis();
        let queries = pins
            .iter()
            .map(|p| StatusQuery::of(p, &me, self.default, now))
            .collect();
        self.tracker
            .statuses(queries)
            .await
            .map_err(|e| e.to_string())
    }

    fn short(&self, s: &LocalStatus, peername: &str) -> PinInfoShort {
        PinInfoShort {
            peername: peername.to_string(),
            ipfs_peer_id: String::new(),
            ipfs_peer_addresses: Vec::new(),
            status: s.status,
            timestamp: format_time(s.timestamp_ms),
            error: s.error.clone(),
            attempt_count: s.attempt_count,
            priority_pin: s.priority_pin,
        }
    }

    fn info(pin: &StatePin, peer_map: BTreeMap<String, PinInfoShort>) -> GlobalPinInfo {
        let eff = pin.effective();
        GlobalPinInfo {
            cid: pin.display_cid(),
            name: eff.name.clone(),
            allocations: pin.allocations.clone(),
            origins: eff.options.origins.clone(),
            created: format_time(pin.timestamp_ms),
            metadata: eff.options.metadata.clone(),
            peer_map,
        }
    }

    /// Status of these pins on this peer only, as `GlobalPinInfo`.
    pub async fn local_infos(&self, pins: &[StatePin]) -> Result<Vec<GlobalPinInfo>, String> {
        let (local, own) = tokio::join!(self.local(pins), self.identities.own());
        let local = local?;
        let me = self.node.peer_id().to_string();
        let mut infos: Vec<GlobalPinInfo> = pins
            .iter()
            .zip(local)
            .map(|(p, s)| {
                Self::info(
                    p,
                    BTreeMap::from([(me.clone(), self.short(&s, &self.peername))]),
                )
            })
            .collect();
        Self::dress(&mut infos, &HashMap::from([(me, own)]));
        Ok(infos)
    }

    /// Status of these pins on every member.
    pub async fn global(&self, pins: &[StatePin]) -> Result<Vec<GlobalPinInfo>, String> {
        let me = self.node.peer_id();
        let cids: Vec<CidKey> = pins.iter().map(|p| p.cid).collect();
        let others = self.node.other_members();
        // A page read from the store is a contiguous range: peers answer
        // for the range in order, without one lookup (or CID) per pin.
        let ordered = pins
            .windows(2)
            .all(|w| w[0].cid.cid().to_bytes() < w[1].cid.cid().to_bytes());
        let asks = others.iter().map(|peer| {
            let cids = cids.clone();
            async move { (*peer, self.ask_peer(*peer, cids, ordered).await) }
        });
        let (local, remote, ids) = tokio::join!(
            self.local(pins),
            futures::future::join_all(asks),
            self.identities.members()
        );
        let local = local?;
        let me_key = me.to_string();
        let mut maps: Vec<BTreeMap<String, PinInfoShort>> = local
            .iter()
            .map(|s| BTreeMap::from([(me_key.clone(), self.short(s, &self.peername))]))
            .collect();
        let index: BTreeMap<CidKey, usize> =
            cids.iter().enumerate().map(|(i, c)| (*c, i)).collect();
        let now = format_time(chrono::Utc::now().timestamp_millis());
        for (peer, result) in remote {
            let key = peer.to_string();
            match result {
                Ok(Answer::Aligned(list)) => {
                    for (m, s) in maps.iter_mut().zip(list) {
                        m.insert(key.clone(), range_to_short(s));
                    }
                }
                Ok(Answer::ByCid(list)) => {
                    for s in list {
                        if let Some(i) = index.get(&s.cid) {
                            maps[*i].insert(key.clone(), wire_to_short(&s));
                        }
                    }
                    // A member that has not applied the pin yet says nothing
                    // about it: undefined until its state catches up.
                    for m in &mut maps {
                        m.entry(key.clone()).or_insert_with(|| PinInfoShort {
                            peername: String::new(),
                            ipfs_peer_id: String::new(),
                            ipfs_peer_addresses: Vec::new(),
                            status: TrackerStatus::Undefined,
                            timestamp: now.clone(),
                            error: String::new(),
                            attempt_count: 0,
                            priority_pin: false,
                        });
                    }
                }
                Err(e) => {
                    for m in &mut maps {
                        m.insert(
                            key.clone(),
                            PinInfoShort {
                                peername: String::new(),
                                ipfs_peer_id: String::new(),
                                ipfs_peer_addresses: Vec::new(),
                                status: TrackerStatus::ClusterError,
                                timestamp: now.clone(),
                                error: e.clone(),
                                attempt_count: 0,
                                priority_pin: false,
                            },
                        );
                    }
                }
            }
        }
        let mut infos: Vec<GlobalPinInfo> = pins
            .iter()
            .zip(maps)
            .map(|(p, m)| Self::info(p, m))
            .collect();
        Self::dress(&mut infos, &ids);
        Ok(infos)
    }

    /// One member's statuses for a page: by range when the page is
    /// ordered (falling back to CIDs when the member's range differs).
    async fn ask_peer(
        &self,
        peer: PeerId,
        cids: Vec<CidKey>,
        ordered: bool,
    ) -> Result<Answer, String> {
        if let (true, Some(first), Some(last)) = (ordered, cids.first(), cids.last()) {
            let page = RangeRequest {
                first: *first,
                last: *last,
                count: cids.len() as u32,
            };
            let call = self.node.call::<rpc::StatusRange>(peer, &page);
            if let Some(list) = self.timed(tokio::time::timeout(self.timeout, call).await)? {
                return Ok(Answer::Aligned(list));
            }
        }
        let call = self.node.call::<rpc::Status>(peer, &cids);
        self.timed(tokio::time::timeout(self.timeout, call).await)
            .map(Answer::ByCid)
    }

    /// A member's answer, or why there is none, as the status shows it: the
    /// remote's own message, or why it could not be asked in time.
    fn timed<T>(
        &self,
        r: Result<Result<T, CallError>, tokio::time::error::Elapsed>,
    ) -> Result<T, String> {
        match r {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    /// This peer's status for each of `cids` that is in its state (what
    /// other peers ask with [`rpc::Status`]).
    pub async fn statuses(&self, cids: Vec<CidKey>) -> Result<Vec<PeerPinStatus>, String> {
        {
            let store = self.node.store().clone();
            let pins = tokio::task::spawn_blocking(move || {
                let mut out = Vec::with_capacity(cids.len());
                for c in cids {
                    if let Some(p) = store.get(&c).map_err(|e| e.to_string())? {
                        out.push(p);
                    }
                }
                Ok::<_, String>(out)
            })
            .await
            .map_err(|e| e.to_string())??;
            let local = self.local(&pins).await?;
            Ok(pins
                .iter()
                .zip(local)
                .map(|(p, s)| PeerPinStatus {
                    cid: p.cid,
                    status: s.status.as_str().to_string(),
                    error: s.error,
                    attempt_count: s.attempt_count,
                    timestamp_ms: s.timestamp_ms,
                    priority_pin: s.priority_pin,
                })
                .collect())
        }
    }

    /// This peer's status for its pins from `first` to `last` in store
    /// order, or `None` when it does not hold exactly `count` there (what
    /// other peers ask with [`rpc::StatusRange`]).
    pub async fn range_statuses(
        &self,
        first: CidKey,
        last: CidKey,
        count: u32,
    ) -> Result<Option<Vec<RangeStatus>>, String> {
        {
            let store = self.node.store().clone();
            // One more than asked: enough to tell a range that holds
            // other pins too, without reading all of them.
            let limit = (count as usize).saturating_add(1);
            let pins = tokio::task::spawn_blocking(move || {
                store
                    .pins_in_range(&first, &last, limit)
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())??;
            if pins.len() != count as usize {
                return Ok(None);
            }
            let local = self.local(&pins).await?;
            Ok(Some(
                local
                    .into_iter()
                    .map(|s| RangeStatus {
                        s: s.status.as_str().to_string(),
                        e: s.error,
                        a: s.attempt_count,
                        t: s.timestamp_ms,
                        p: s.priority_pin,
                    })
                    .collect(),
            ))
        }
    }

    /// Retries failed operations on every member (only this peer with
    /// `local`); returns each CID re-queued with the members that re-queued
    /// it.
    pub async fn recover(
        &self,
        cid: Option<CidKey>,
        local: bool,
    ) -> BTreeMap<CidKey, BTreeSet<String>> {
        let mut out: BTreeMap<CidKey, BTreeSet<String>> = BTreeMap::new();
        let me = self.node.peer_id().to_string();
        for c in self.tracker.recover(cid).await.unwrap_or_default() {
            out.entry(c).or_default().insert(me.clone());
        }
        if local {
            return out;
        }
        let others = self.node.other_members();
        let asks = others.iter().map(|peer| async move {
            let call = self.node.call::<rpc::RecoverCids>(*peer, &cid);
            (*peer, tokio::time::timeout(self.timeout, call).await)
        });
        for (peer, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(Ok(cids)) => {
                    for c in cids {
                        out.entry(c).or_default().insert(peer.to_string());
                    }
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "recover on a member failed"),
                Err(_) => tracing::debug!(%peer, "recover on a member timed out"),
            }
        }
        out
    }
}

/// A member's statuses for a page.
enum Answer {
    /// In page order.
    Aligned(Vec<RangeStatus>),
    /// Keyed by CID (only the pins the member has).
    ByCid(Vec<PeerPinStatus>),
}

fn range_to_short(s: RangeStatus) -> PinInfoShort {
    PinInfoShort {
        peername: String::new(),
        ipfs_peer_id: String::new(),
        ipfs_peer_addresses: Vec::new(),
        status: TrackerStatus::parse(&s.s).unwrap_or(TrackerStatus::Undefined),
        timestamp: format_time(s.t),
        error: s.e,
        attempt_count: s.a,
        priority_pin: s.p,
    }
}

fn wire_to_short(s: &PeerPinStatus) -> PinInfoShort {
    PinInfoShort {
        peername: String::new(),
        ipfs_peer_id: String::new(),
        ipfs_peer_addresses: Vec::new(),
        status: TrackerStatus::parse(&s.status).unwrap_or(TrackerStatus::Undefined),
        timestamp: format_time(s.timestamp_ms),
        error: s.error.clone(),
        attempt_count: s.attempt_count,
        priority_pin: s.priority_pin,
    }
}
