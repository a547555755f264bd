//! Sharded adds (`POST /add?shard=true&shard-size=N`, IPFS Cluster's
//! sharding; docs/sharding.md): the importer's blocks never reach this
//! peer's store as a whole. They are grouped, in import order, into shards
//! of at most `shard-size` bytes; each shard is allocated when it starts
//! (the peers with the most free space, as the informer reports it, minus
//! what this add already sent them) and its blocks are sent to those peers
//! as they are produced, losslessly and acknowledged (the embedded node's
//! `block-push-acked`), or stored here when this peer is one of them.
//! When a shard is full its DAG-CBOR node(s) go the same way.
//!
//! Each shard's pin (`user_allocations` = its peers) is written once its
//! peers confirmed its blocks, so they pin it while the add goes on; it
//! names no meta pin yet (the content's root is known only at the end).
//! Once the root is known, one consensus write gives every shard pin its
//! meta pin and creates the cluster DAG pin and the meta pin (owner `api`,
//! or the PinSet for content already in IPFS). An add that does not
//! finish releases the shard pins it wrote (`Drop`).
//!
//! Before anything is read, [`context`] refuses what cannot shard: no
//! embedded node here (400), every-peer replication (400), a declared
//! upload larger than the cluster's free space times the replication
//! minimum (507).
//!
//! This module decides shard boundaries and their peers; it must not pin
//! on the node nor speak the push protocol itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use cid::Cid;
use libp2p::PeerId;

use crate::allocator::{FREESPACE, PeerMetrics};
use crate::api::pins::Params;
use crate::api::{ApiError, ApiState};
use crate::consensus::ClusterNode;
use crate::ipfs::embedded::{AckedSession, peering};
use crate::ipfs::{BlockSink, EmbeddedNode, IpfsBackend, IpfsError};
use crate::manifest::{
    CidKey, Owner, PinMode, PinSpec, ReplicationFactors, ShardKind, ShardRole, written_as_of,
};
use crate::state::{Command, Op};

/// IPFS Cluster's shard size when `shard-size` is absent or 0 (100 MiB).
pub const DEFAULT_SHARD_SIZE: u64 = 100 << 20;
/// Pins per consensus write when an add has many shards.
const PINS_PER_WRITE: usize = 500;
/// Bytes stored here per write when this peer holds a shard.
const LOCAL_BATCH_BYTES: usize = 8 << 20;

/// What a sharded add was asked for, checked before anything is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardPlan {
    /// Most bytes of block data per shard.
    pub limit: u64,
    /// Peers per shard wanted (the replication maximum).
    pub wanted: usize,
    /// Peers per shard at least (the replication minimum).
    pub min: usize,
}

impl ShardPlan {
    /// The plan for `shard-size` `size` (0: [`DEFAULT_SHARD_SIZE`]) and
    /// the pin's factors, 0 meaning the cluster's `default`. Every-peer
    /// replication (-1) is refused: a shard lives on chosen peers.
    pub fn new(
        size: u64,
        asked: ReplicationFactors,
        default: ReplicationFactors,
    ) -> Result<Self, String> {
        let every = "sharded adds need a replication factor (replication-min/max of 1 or \
                     more): every-peer replication (-1) would store the whole content on \
                     every peer";
        let max = match asked.max {
            0 => default.max,
            m => m,
        };
        let min = match asked.min {
            0 if default.min > 0 => default.min.min(max.max(1)),
            0 => 1,
            m => m,
        };
        if max < 0 || min < 0 {
            return Err(every.into());
        }
        let (Ok(wanted), Ok(min)) = (usize::try_from(max), usize::try_from(min)) else {
            return Err(every.into());
        };
        Ok(Self {
            limit: if size == 0 { DEFAULT_SHARD_SIZE } else { size },
            wanted: wanted.max(1),
            min: min.clamp(1, wanted.max(1)),
        })
    }

    /// [`ShardPlan::new`] with the cluster default of the peer serving
    /// `state`.
    pub fn on(state: &ApiState, size: u64, asked: ReplicationFactors) -> Result<Self, String> {
        let default = state
            .status
            .as_ref()
            .map_or(ReplicationFactors { min: -1, max: -1 }, |s| {
                s.default_replication()
            });
        Self::new(size, asked, default)
    }
}

/// Whether a block of `size` bytes starts a new shard after `current`
/// bytes: when it would take a non-empty shard past `limit`. A block
/// larger than the limit gets a shard of its own.
pub fn starts_new_shard(current: u64, size: u64, limit: u64) -> bool {
    current > 0 && current.saturating_add(size) > limit
}

/// The peers with room for `need` more bytes: each of `free` (peer, free
/// bytes) minus what this add already `sent` it, most room first (ties on
/// the id), at most `wanted`; an error naming the sizes when fewer than
/// `min` have room.
pub fn choose_peers(
    free: &[(String, u64)],
    sent: &HashMap<String, u64>,
    need: u64,
    wanted: usize,
    min: usize,
) -> Result<Vec<String>, String> {
    let mut room: Vec<(u64, &str)> = free
        .iter()
        .map(|(p, f)| {
            (
                f.saturating_sub(sent.get(p).copied().unwrap_or(0)),
                p.as_str(),
            )
        })
        .collect();
    room.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let fit: Vec<String> = room
        .iter()
        .filter(|(r, _)| *r >= need)
        .take(wanted)
        .map(|(_, p)| (*p).to_owned())
        .collect();
    if fit.len() < min {
        let shown: Vec<String> = room.iter().map(|(r, p)| format!("{p}: {r}")).collect();
        return Err(format!(
            "no {min} peer(s) have room for a shard of {need} bytes (free bytes left per \
             peer: {})",
            if shown.is_empty() {
                "none reported".to_string()
            } else {
                shown.join(", ")
            }
        ));
    }
    Ok(fit)
}

/// Free space (bytes) of each live member, from the informer's metrics at
/// `now_ms`; members without a usable `freespace` metric are left out.
pub fn free_space(metrics: &PeerMetrics, members: &[String], now_ms: i64) -> Vec<(String, u64)> {
    members
        .iter()
        .filter_map(|p| {
            let m = metrics.get(p, FREESPACE)?;
            let v = m.value.parse::<u64>().ok()?;
            m.is_usable(now_ms).then(|| (p.clone(), v))
        })
        .collect()
}

/// What a sharded add needs from this peer.
#[derive(Clone)]
pub struct ShardContext {
    /// The cluster (RPC to members, consensus writes).
    pub node: ClusterNode,
    /// This peer's node: sends and stores the blocks.
    pub embedded: EmbeddedNode,
    /// The informer's metrics.
    pub metrics: Arc<Mutex<PeerMetrics>>,
    /// The runtime (the writer runs on blocking threads).
    pub handle: tokio::runtime::Handle,
    /// The plan.
    pub plan: ShardPlan,
    /// The add's pin name and options.
    pub spec: PinSpec,
    /// The upload's declared size, when known: a shard never asks for
    /// more room than is left to come.
    pub declared: Option<u64>,
    /// Who holds the pins written: `api` for an add, the PinSet that
    /// declared a sharded pin for content already in IPFS.
    pub owner: Owner,
    /// The blocks are not sent: the shards' peers fetch them when they
    /// pin (content already in IPFS, grouped with
    /// [`ShardWriter::put_ref`]); only the shard nodes are kept here.
    pub fetched: bool,
}

impl std::fmt::Debug for ShardContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardContext")
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

/// The shard being filled.
struct OpenShard {
    /// Cluster peer ids.
    peers: Vec<String>,
    /// None when the peers fetch the blocks themselves.
    session: Option<AckedSession>,
    /// This peer is one of `peers`: blocks stored here in batches.
    local: Option<Vec<(Cid, Vec<u8>)>>,
    local_bytes: usize,
    links: Vec<Cid>,
    bytes: u64,
}

/// A filled shard.
#[derive(Clone, Debug)]
struct ClosedShard {
    root: Cid,
    peers: Vec<String>,
    bytes: u64,
    max_depth: i32,
}

/// Groups an add's blocks into shards and sends them (see the module).
pub struct ShardWriter {
    ctx: ShardContext,
    open: Option<OpenShard>,
    closed: Vec<ClosedShard>,
    /// Bytes this add sent to each peer.
    sent: HashMap<String, u64>,
    sent_total: u64,
    /// Each member's free space when the add allocated its first shard:
    /// later reports already count what this add sent (counting it twice
    /// would leave room unused), so shards are placed against this minus
    /// `sent`.
    free_at_start: Option<Vec<(String, u64)>>,
    /// Shard pins written as their shards closed, released if the add
    /// does not finish (see `Drop`).
    written: Vec<Cid>,
    /// Cluster peer id → its IPFS node's id.
    nodes: HashMap<String, PeerId>,
}

impl std::fmt::Debug for ShardWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardWriter")
            .field("shards", &self.closed.len())
            .finish_non_exhaustive()
    }
}

fn failed(what: String) -> IpfsError {
    IpfsError::Delivery { what }
}

impl ShardWriter {
    /// A writer for one add.
    pub fn new(ctx: ShardContext) -> Self {
        Self {
            ctx,
            open: None,
            closed: Vec::new(),
            sent: HashMap::new(),
            sent_total: 0,
            free_at_start: None,
            written: Vec::new(),
            nodes: HashMap::new(),
        }
    }

    /// The IPFS node of cluster peer `peer`.
    fn node_of(&mut self, peer: &str) -> Result<PeerId, IpfsError> {
        if let Some(id) = self.nodes.get(peer) {
            return Ok(*id);
        }
        let cluster_peer: PeerId = peer
            .parse()
            .map_err(|e| failed(format!("peer id {peer}: {e}")))?;
        let node = self.ctx.node.clone();
        let answer = self.ctx.handle.block_on(async move {
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                node.call::<crate::ipfs::rpc::Id>(cluster_peer, &()),
            )
            .await
        });
        let id = match answer {
            Ok(Ok(Some(id))) => {
                let node = id
                    .id
                    .parse::<PeerId>()
                    .map_err(|e| failed(format!("peer {peer}'s ipfs node id: {e}")))?;
                // The background peering may not have connected the nodes
                // yet (a peer just started): the push needs them connected.
                let embedded = self.ctx.embedded.clone();
                let reached = self.ctx.handle.block_on(async move {
                    peering::reach(&embedded, &id, std::time::Duration::from_secs(5)).await
                });
                if !reached {
                    return Err(failed(format!(
                        "cannot connect to peer {peer}'s ipfs node {node}"
                    )));
                }
                node
            }
            Ok(Ok(None)) => return Err(failed(format!("peer {peer} runs no ipfs node"))),
            Ok(Err(e)) => return Err(failed(format!("peer {peer} did not answer: {e}"))),
            Err(_) => return Err(failed(format!("peer {peer} did not answer in time"))),
        };
        self.nodes.insert(peer.to_owned(), id);
        Ok(id)
    }

    /// Allocates and opens the next shard.
    fn open_shard(&mut self) -> Result<(), IpfsError> {
        let plan = &self.ctx.plan;
        let left = self
            .ctx
            .declared
            .map_or(u64::MAX, |d| d.saturating_sub(self.sent_total).max(1));
        let need = plan.limit.min(left);
        let members: Vec<String> = self
            .ctx
            .node
            .members()
            .into_iter()
            .map(|(_, m)| m.peer_id)
            .collect();
        let free = self.free_at_start.get_or_insert_with(|| {
            let m = self
                .ctx
                .metrics
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            free_space(&m, &members, chrono::Utc::now().timestamp_millis())
        });
        let peers = choose_peers(free, &self.sent, need, plan.wanted, plan.min).map_err(|e| {
            IpfsError::NoRoom {
                what: format!(
                    "cannot allocate shard {} of this add: {e}",
                    self.closed.len()
                ),
            }
        })?;
        let me = self.ctx.node.peer_id().to_string();
        let mut remote = Vec::new();
        for p in peers.iter().filter(|p| **p != me) {
            remote.push(self.node_of(p)?);
        }
        let session = (!self.ctx.fetched).then(|| {
            let _runtime = self.ctx.handle.enter();
            self.ctx.embedded.acked_session(remote)
        });
        tracing::debug!(shard = self.closed.len(), peers = ?peers, "sharded add: shard allocated");
        self.open = Some(OpenShard {
            local: (peers.contains(&me) && !self.ctx.fetched).then(Vec::new),
            peers,
            session,
            local_bytes: 0,
            links: Vec::new(),
            bytes: 0,
        });
        Ok(())
    }

    /// Sends one block to the open shard's peers.
    fn deliver(&mut self, cid: Cid, data: Vec<u8>) -> Result<(), IpfsError> {
        let len = data.len() as u64;
        let Some(open) = self.open.as_mut() else {
            return Err(failed("no shard is open".into()));
        };
        if let Some(session) = open.session.as_mut() {
            session.send(&cid, &data)?;
        }
        if let Some(local) = open.local.as_mut() {
            open.local_bytes += data.len();
            local.push((cid, data));
            if open.local_bytes >= LOCAL_BATCH_BYTES {
                self.ctx.embedded.store_blocks_blocking(local)?;
                local.clear();
                open.local_bytes = 0;
            }
        }
        self.count_sent(len);
        Ok(())
    }

    /// Closes the open shard: its node(s) go to its peers, and every peer
    /// confirms it stored everything.
    fn close_shard(&mut self) -> Result<(), IpfsError> {
        let Some(open) = self.open.as_ref() else {
            return Ok(());
        };
        let nodes = crate::ipfs::dagcbor::shard_dag(&open.links);
        let (bytes, n) = (open.bytes, self.closed.len());
        let max_depth = if nodes.len() > 1 { 2 } else { 1 };
        let root = nodes
            .first()
            .map(|(c, _)| *c)
            .ok_or_else(|| failed("an empty shard node".into()))?;
        if self.ctx.fetched {
            // The peers fetch the shard node from here with the rest.
            self.ctx.embedded.store_blocks_blocking(&nodes)?;
        } else {
            for (cid, data) in nodes {
                self.deliver(cid, data)?;
            }
        }
        let Some(mut open) = self.open.take() else {
            return Ok(());
        };
        if let Some(local) = open.local.take() {
            self.ctx.embedded.store_blocks_blocking(&local)?;
        }
        if let Some(session) = open.session {
            session
                .finish()
                .map_err(|e| failed(format!("shard {n}: {e}")))?;
        }
        self.closed.push(ClosedShard {
            root,
            peers: open.peers,
            bytes,
            max_depth,
        });
        // Pinned on its peers now (they hold its blocks already): the
        // content's root, which the pin names, is only known at the end,
        // when the pin is written again with it.
        let op = self
            .shard_op(n, "")
            .map_err(|e| failed(format!("shard {n}: {e}")))?;
        self.ctx
            .handle
            .block_on(write_all(&self.ctx.node, &self.ctx.owner, vec![op]))
            .map_err(|e| failed(format!("pinning shard {n}: {e}")))?;
        self.written.push(root);
        Ok(())
    }

    /// Ends the add whose content root is `root` (written `text` by the
    /// importer): closes the last shard, stores the cluster DAG here and
    /// writes every pin.
    pub fn finish(&mut self, root: CidKey, text: &str) -> Result<(), ApiError> {
        self.close_shard().map_err(shard_error)?;
        let roots: Vec<Cid> = self.closed.iter().map(|s| s.root).collect();
        let dag = crate::ipfs::dagcbor::shard_dag(&roots);
        let dag_root = dag
            .first()
            .map(|(c, _)| *c)
            .ok_or_else(|| ApiError::internal("an empty cluster dag"))?;
        self.ctx
            .embedded
            .store_blocks_blocking(&dag)
            .map_err(shard_error)?;
        let ops = self.pins(root, text, dag_root)?;
        self.ctx
            .handle
            .block_on(write_all(&self.ctx.node, &self.ctx.owner, ops))?;
        self.written.clear();
        Ok(())
    }

    /// The pin of closed shard `n`, belonging to the meta pin `meta`
    /// (empty while the content's root is not known yet).
    fn shard_op(&self, n: usize, meta: &str) -> Result<Op, ApiError> {
        let base = &self.ctx.spec;
        let s = &self.closed[n];
        let cid = CidKey::from_cid(s.root)
            .map_err(|e| ApiError::internal(format!("shard cid {}: {e}", s.root)))?;
        let mut o = (*base.options).clone();
        o.mode = PinMode::Recursive;
        o.user_allocations = s.peers.clone();
        o.shard_role = Some(ShardRole {
            kind: ShardKind::Shard,
            reference: n.checked_sub(1).map(|p| self.closed[p].root.to_string()),
            meta: meta.to_string(),
            shard_size: s.bytes,
            max_depth: s.max_depth,
        });
        Ok(Op::Set {
            cid,
            written_as: written_as_of(&cid, &s.root.to_string()),
            spec: PinSpec {
                name: format!("{}-shard-{n}", base.name),
                options: Arc::new(o),
            },
        })
    }

    /// The shard pins, the cluster DAG pin and the meta pin, in that order.
    fn pins(&self, root: CidKey, text: &str, dag_root: Cid) -> Result<Vec<Op>, ApiError> {
        let meta = text.to_string();
        let base = &self.ctx.spec;
        let key = |c: Cid| {
            CidKey::from_cid(c).map_err(|e| ApiError::internal(format!("shard cid {c}: {e}")))
        };
        let set =
            |cid: CidKey, text: &str, name: String, options: crate::manifest::PinOptions| Op::Set {
                cid,
                written_as: written_as_of(&cid, text),
                spec: PinSpec {
                    name,
                    options: Arc::new(options),
                },
            };
        let mut ops = Vec::with_capacity(self.closed.len() + 2);
        for n in 0..self.closed.len() {
            ops.push(self.shard_op(n, &meta)?);
        }
        let mut o = (*base.options).clone();
        o.mode = PinMode::Direct;
        o.replication = ReplicationFactors { min: -1, max: -1 };
        o.user_allocations = Vec::new();
        o.shard_role = Some(ShardRole {
            kind: ShardKind::ClusterDag,
            reference: Some(meta.clone()),
            meta: meta.clone(),
            shard_size: self.ctx.plan.limit,
            max_depth: 0,
        });
        let dag_text = dag_root.to_string();
        ops.push(set(
            key(dag_root)?,
            &dag_text,
            format!("{}-clusterDAG", base.name),
            o,
        ));
        let mut o = (*base.options).clone();
        o.user_allocations = Vec::new();
        o.shard_role = Some(ShardRole {
            kind: ShardKind::Meta,
            reference: Some(dag_root.to_string()),
            meta,
            shard_size: self.ctx.plan.limit,
            max_depth: 0,
        });
        ops.push(set(root, text, base.name.clone(), o));
        Ok(ops)
    }
}

/// What a sharded add (`shard=true`) needs, checked before anything is
/// read: an embedded node here, the informer's metrics, replication of
/// chosen peers, and (when the upload's size is declared) room for it
/// times the replication minimum in the live members' free space (507).
pub(super) fn context(
    state: &ApiState,
    params: &Params,
    backend: &Arc<dyn IpfsBackend>,
    spec: &PinSpec,
    declared: Option<u64>,
    cluster_pin: bool,
) -> Result<ShardContext, ApiError> {
    let bad = ApiError::bad_request;
    if !cluster_pin {
        return Err(bad("a sharded add pins: shard=true cannot go with no-pin"));
    }
    let embedded = backend
        .embedded()
        .cloned()
        .ok_or_else(|| bad("sharded adds need the embedded IPFS node on the adding peer"))?;
    let metrics = state.monitor.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "sharded adds need the informer's metrics, which this peer does not keep",
        )
    })?;
    let size = params
        .get("shard-size")
        .map_or(Ok(0), str::parse::<u64>)
        .map_err(|_| bad("invalid shard-size: expected an integer"))?;
    let plan =
        ShardPlan::on(state, size, spec.options.replication).map_err(ApiError::bad_request)?;
    if let Some(len) = declared {
        let members: Vec<String> = state
            .node
            .members()
            .into_iter()
            .map(|(_, m)| m.peer_id)
            .collect();
        let free: u64 = {
            let m = metrics
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            free_space(&m, &members, chrono::Utc::now().timestamp_millis())
                .iter()
                .map(|(_, f)| *f)
                .sum()
        };
        let needed = len.saturating_mul(plan.min as u64);
        if needed > free {
            return Err(ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                format!(
                    "the upload ({len} bytes, {needed} bytes at replication minimum {}) is \
                     larger than the cluster's free space ({free} bytes)",
                    plan.min
                ),
            ));
        }
    }
    Ok(ShardContext {
        node: state.node.clone(),
        embedded,
        metrics,
        handle: tokio::runtime::Handle::current(),
        plan,
        spec: spec.clone(),
        declared,
        owner: Owner::Api,
        fetched: false,
    })
}

/// The answer for a sharded add that failed with `e`: 507 when no peer
/// had room, else 502.
pub fn shard_error(e: IpfsError) -> ApiError {
    let status = match e {
        IpfsError::NoRoom { .. } => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::BAD_GATEWAY,
    };
    ApiError::new(status, format!("sharded add failed: {e}"))
}

/// Writes `ops` (owner `api`) in chunks; when a chunk fails or is refused,
/// releases what the earlier ones wrote and fails.
async fn write_all(node: &ClusterNode, owner: &Owner, ops: Vec<Op>) -> Result<(), ApiError> {
    let mut written: Vec<CidKey> = Vec::new();
    for chunk in ops.chunks(PINS_PER_WRITE) {
        let cids: Vec<CidKey> = chunk
            .iter()
            .filter_map(|op| match op {
                Op::Set { cid, .. } => Some(*cid),
                Op::Release { .. } | Op::Place { .. } => None,
            })
            .collect();
        let out = node
            .write(Command::Apply {
                owner: owner.clone(),
                ops: chunk.to_vec(),
            })
            .await;
        let why = match out {
            Ok(o) => match o.refused {
                None => {
                    written.extend(cids);
                    continue;
                }
                Some(r) => ApiError::new(StatusCode::CONFLICT, r),
            },
            Err(e) => ApiError::from(e),
        };
        release(node, owner, written).await;
        return Err(why);
    }
    Ok(())
}

/// Releases `owner` of `cids` (best effort: the add already failed).
async fn release(node: &ClusterNode, owner: &Owner, cids: Vec<CidKey>) {
    if cids.is_empty() {
        return;
    }
    let ops = cids.into_iter().map(|cid| Op::Release { cid }).collect();
    if let Err(e) = node
        .write(Command::Apply {
            owner: owner.clone(),
            ops,
        })
        .await
    {
        tracing::warn!(error = %e, "cannot release the pins of a failed sharded add");
    }
}

impl Drop for ShardWriter {
    /// An add that did not finish leaves none of its shard pins.
    fn drop(&mut self) {
        let cids: Vec<CidKey> = self
            .written
            .drain(..)
            .filter_map(|c| CidKey::from_cid(c).ok())
            .collect();
        if cids.is_empty() {
            return;
        }
        let (node, owner) = (self.ctx.node.clone(), self.ctx.owner.clone());
        self.ctx
            .handle
            .spawn(async move { release(&node, &owner, cids).await });
    }
}

impl ShardWriter {
    /// Puts a block of `size` bytes in the open shard (or a new one).
    fn group(&mut self, cid: Cid, size: u64) -> Result<(), IpfsError> {
        let current = self.open.as_ref().map_or(0, |o| o.bytes);
        if self.open.is_some() && starts_new_shard(current, size, self.ctx.plan.limit) {
            self.close_shard()?;
        }
        if self.open.is_none() {
            self.open_shard()?;
        }
        if let Some(open) = self.open.as_mut() {
            open.links.push(cid);
            open.bytes += size;
        }
        Ok(())
    }

    /// Counts `size` bytes against each of the open shard's peers.
    fn count_sent(&mut self, size: u64) {
        if let Some(open) = self.open.as_ref() {
            for p in &open.peers {
                *self.sent.entry(p.clone()).or_insert(0) += size;
            }
        }
        self.sent_total += size;
    }

    /// Groups a block the shards' peers will fetch themselves
    /// ([`ShardContext::fetched`]): only its CID and size are needed.
    pub fn put_ref(&mut self, cid: Cid, size: u64) -> Result<(), IpfsError> {
        self.group(cid, size)?;
        self.count_sent(size);
        Ok(())
    }
}

impl BlockSink for ShardWriter {
    fn put(&mut self, cid: Cid, data: Vec<u8>) -> Result<(), IpfsError> {
        self.group(cid, data.len() as u64)?;
        self.deliver(cid, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shard boundaries for blocks of `sizes`, as index ranges.
    fn group(sizes: &[u64], limit: u64) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let (mut start, mut current) = (0, 0u64);
        for (i, s) in sizes.iter().enumerate() {
            if starts_new_shard(current, *s, limit) {
                out.push(start..i);
                start = i;
                current = 0;
            }
            current += s;
        }
        if start < sizes.len() {
            out.push(start..sizes.len());
        }
        out
    }

    #[test]
    fn every_block_is_in_exactly_one_shard_in_order_and_no_shard_passes_the_limit() {
        let sizes: Vec<u64> = (0..500u64).map(|i| (i * 7919) % 300_000 + 1).collect();
        for limit in [1u64, 1000, 262_144, 1 << 20, 4 << 20] {
            let shards = group(&sizes, limit);
            // Contiguous, in order, covering every block once.
            let mut next = 0;
            for r in &shards {
                assert_eq!(r.start, next);
                assert!(r.end > r.start);
                next = r.end;
                let total: u64 = sizes[r.clone()].iter().sum();
                assert!(
                    total <= limit || r.len() == 1,
                    "a shard of {} blocks holds {total} > {limit}",
                    r.len()
                );
            }
            assert_eq!(next, sizes.len());
        }
        // A block larger than the limit is a shard of its own.
        assert_eq!(group(&[10, 50, 10, 10], 20), vec![0..1, 1..2, 2..4]);
    }

    #[test]
    fn shard_peers_are_those_with_the_most_room_left() {
        let free = vec![
            ("a".to_string(), 10u64 << 20),
            ("b".to_string(), 20 << 20),
            ("c".to_string(), 15 << 20),
        ];
        let mut sent = HashMap::new();
        assert_eq!(choose_peers(&free, &sent, 4 << 20, 1, 1).unwrap(), ["b"]);
        // What this add already sent counts against a peer.
        sent.insert("b".to_string(), 12 << 20);
        assert_eq!(
            choose_peers(&free, &sent, 4 << 20, 2, 1).unwrap(),
            ["c", "a"]
        );
        // Nobody has room for 16 MiB: the error names the sizes.
        let e = choose_peers(&free, &sent, 16 << 20, 1, 1).unwrap_err();
        assert!(e.contains("16777216") && e.contains("c: 15728640"), "{e}");
        // Two wanted, only one with room: enough for a minimum of one.
        assert_eq!(choose_peers(&free, &sent, 12 << 20, 2, 1).unwrap(), ["c"]);
        assert!(choose_peers(&free, &sent, 12 << 20, 2, 2).is_err());
    }

    #[test]
    fn a_plan_resolves_cluster_defaults_and_refuses_every_peer_replication() {
        let r = |min, max| ReplicationFactors { min, max };
        let p = ShardPlan::new(0, r(1, 1), r(-1, -1)).unwrap();
        assert_eq!((p.limit, p.wanted, p.min), (DEFAULT_SHARD_SIZE, 1, 1));
        let p = ShardPlan::new(4096, r(0, 0), r(2, 3)).unwrap();
        assert_eq!((p.limit, p.wanted, p.min), (4096, 3, 2));
        assert!(ShardPlan::new(0, r(-1, -1), r(1, 1)).is_err());
        assert!(ShardPlan::new(0, r(0, 0), r(-1, -1)).is_err());
        assert!(ShardPlan::new(0, r(1, -1), r(1, 1)).is_err());
    }
}
