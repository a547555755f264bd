//! The `embedded` backend: a minimal IPFS node inside the peer process, so
//! a fresh machine runs the whole system without Kubo
//! (docs/design/embedded-ipfs.md).
//!
//! It owns the node's directory (`<peer dir>/ipfs/`: `identity.key`, its
//! libp2p identity, and `blocks.redb`, blocks and pins), its own libp2p
//! swarm (separate from the cluster's), Bitswap, the DAG walk that pins,
//! and gc. It must not know about the cluster: the daemon tells it whom to
//! connect to.

mod add;
mod bitswap;
mod dht;
mod identity_file;
mod inbound;
mod layout;
pub mod peering;
mod push;
mod read;
mod routing;
mod sharding;
mod store;
mod swarm;
mod walk;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cid::Cid;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::bitswap::Bitswap;
use self::push::Push;
pub use self::push::lossless::AckedSession;
pub use self::store::StoreError;
use self::store::{BlockStore, StoredPin};
pub use self::swarm::PublicOptions;
use self::swarm::{SwarmHandle, SwarmOptions};
use super::{
    AddInput, AddOpts, AddSink, AddedContent, GcReport, IpfsBackend, IpfsError, IpfsId, PinKind,
    PinLsFilter, PinOpts, PinnedCid, RepoStat,
};
use crate::manifest::CidKey;

/// Subdirectory of a peer directory that holds the embedded node.
pub const IPFS_DIR: &str = "ipfs";
/// The node's libp2p key (protobuf encoding), inside [`IPFS_DIR`].
pub const IDENTITY_FILE: &str = "identity.key";
/// Blocks and pins, inside [`IPFS_DIR`].
pub const BLOCKS_FILE: &str = "blocks.redb";

/// Blocks written per redb transaction (and the byte bound).
const WRITE_BATCH_BLOCKS: usize = 64;
const WRITE_BATCH_BYTES: usize = 8 << 20;
/// Pins listed per read transaction by `pin_ls`.
const PIN_LS_PAGE: usize = 1000;
/// How long connecting to a pin's origin may take before pinning goes on.
const ORIGIN_DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// The agent string of embedded nodes.
pub fn agent_version() -> String {
    format!("pinfleet-embedded/{}", env!("CARGO_PKG_VERSION"))
}

/// How to run an embedded node.
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// The node's directory (`<peer dir>/ipfs`); created when missing.
    pub dir: PathBuf,
    /// The cluster secret: the node's swarm is a private network with it.
    pub secret: [u8; 32],
    /// Where its swarm listens.
    pub listen: Vec<Multiaddr>,
    /// On the public IPFS network with these options; `None`: the private
    /// swarm of the cluster's nodes.
    pub public: Option<PublicOptions>,
    /// A delegated routing endpoint (`/routing/v1`) asked for providers
    /// besides the DHT (public mode).
    pub delegated_routing: Option<String>,
    /// Most bytes the store holds (`[ipfs] storage_max`): reported by
    /// `repo_stat`; pushed blocks past it are refused. `None`: no limit.
    pub storage_max: Option<u64>,
}

impl EmbeddedConfig {
    /// A node under `peer_dir/ipfs` listening on a free loopback port.
    pub fn new(peer_dir: &Path, secret: [u8; 32]) -> Self {
        Self {
            dir: peer_dir.join(IPFS_DIR),
            secret,
            listen: vec![default_listen()],
            public: None,
            delegated_routing: None,
            storage_max: None,
        }
    }
}

/// `/ip4/127.0.0.1/tcp/0`.
pub fn default_listen() -> Multiaddr {
    Multiaddr::from(std::net::Ipv4Addr::LOCALHOST).with(libp2p::multiaddr::Protocol::Tcp(0))
}

/// Why the embedded node could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// File system.
    #[error("cannot {what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The identity file is not a key.
    #[error("invalid node identity in {}", path.display())]
    Identity {
        /// The file.
        path: PathBuf,
    },
    /// The blockstore could not be opened.
    #[error("cannot open the blockstore")]
    Store(#[from] StoreError),
    /// Building the swarm failed.
    #[error("cannot build the swarm: {0}")]
    Swarm(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
}

/// Multihashes that pins and adds in progress are about to store or read:
/// gc keeps them although no pin references them yet.
#[derive(Default, Debug)]
struct Protected(Mutex<HashMap<Vec<u8>, u32>>);

impl Protected {
    fn lock(&self) -> MutexGuard<'_, HashMap<Vec<u8>, u32>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One operation's protected multihashes, released on drop.
struct Protection {
    set: Arc<Protected>,
    held: Vec<Vec<u8>>,
}

impl Protection {
    fn add(&mut self, mh: Vec<u8>) {
        *self.set.lock().entry(mh.clone()).or_insert(0) += 1;
        self.held.push(mh);
    }
}

impl Drop for Protection {
    fn drop(&mut self) {
        let mut set = self.set.lock();
        for mh in self.held.drain(..) {
            if let Some(n) = set.get_mut(&mh) {
                *n -= 1;
                if *n == 0 {
                    set.remove(&mh);
                }
            }
        }
    }
}

#[derive(Debug)]
struct Inner {
    store: BlockStore,
    bitswap: Arc<Bitswap>,
    push: Arc<Push>,
    swarm: SwarmHandle,
    router: routing::Router,
    protected: Arc<Protected>,
    gc: tokio::sync::Mutex<()>,
    /// `[ipfs] storage_max`.
    storage_max: Option<u64>,
}

/// A running embedded IPFS node. Cheap to clone; stops when the
/// cancellation token given to [`EmbeddedNode::start`] fires (its tasks are
/// on the given tracker). The blockstore closes when the last clone drops.
#[derive(Clone, Debug)]
pub struct EmbeddedNode {
    inner: Arc<Inner>,
}

/// How long resolving a path waits for one block it does not hold.
const RESOLVE_FETCH_TIMEOUT: Duration = Duration::from_secs(60);

fn storage(e: impl std::error::Error + Send + Sync + 'static) -> IpfsError {
    IpfsError::Storage(Box::new(e))
}

fn mh_of(cid: &Cid) -> Vec<u8> {
    cid.hash().to_bytes()
}

impl EmbeddedNode {
    /// Opens (or creates) the node in `config.dir` and starts its swarm.
    pub async fn start(
        config: EmbeddedConfig,
        cancel: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Self, EmbeddedError> {
        std::fs::create_dir_all(&config.dir).map_err(|source| EmbeddedError::Io {
            what: "create",
            path: config.dir.clone(),
            source,
        })?;
        let keypair = identity_file::load_or_create(&config.dir.join(IDENTITY_FILE))?;
        let path = config.dir.join(BLOCKS_FILE);
        let open_path = path.clone();
        let store = tokio::task::spawn_blocking(move || BlockStore::open(&open_path))
            .await
            .map_err(|e| EmbeddedError::Io {
                what: "open",
                path,
                source: std::io::Error::other(e),
            })??;
        let bs_store = store.clone();
        let bs_cancel = cancel.clone();
        let mut push = None;
        let public = config.public.is_some();
        let (swarm, bitswap) = swarm::spawn(
            keypair,
            SwarmOptions {
                secret: config.secret,
                listen: &config.listen,
                public: config.public.as_ref(),
            },
            |control, incoming| {
                let swarm_err =
                    |e: libp2p_stream::AlreadyRegistered| EmbeddedError::Swarm(e.to_string());
                push = Some(
                    Push::start(
                        bs_store.clone(),
                        control.clone(),
                        public,
                        config.storage_max,
                        bs_cancel.clone(),
                        tasks,
                    )
                    .map_err(swarm_err)?,
                );
                Ok(Bitswap::start(
                    bs_store, control, incoming, bs_cancel, tasks,
                ))
            },
            cancel,
            tasks,
        )
        .await?;
        // `spawn` calls the closure above before it returns.
        let push = push.ok_or_else(|| EmbeddedError::Swarm("block push did not start".into()))?;
        let router = routing::Router::new(swarm.clone(), config.delegated_routing)
            .map_err(EmbeddedError::Swarm)?;
        tracing::info!(
            peer = %swarm.peer_id(),
            swarm = if public { "public" } else { "private" },
            "embedded ipfs node running"
        );
        let node = Self {
            inner: Arc::new(Inner {
                store,
                bitswap,
                push,
                swarm,
                router,
                protected: Arc::new(Protected::default()),
                gc: tokio::sync::Mutex::new(()),
                storage_max: config.storage_max,
            }),
        };
        if public {
            tasks.spawn(node.clone().provide_pinned());
        }
        Ok(node)
    }

    /// The node's libp2p peer id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.swarm.peer_id()
    }

    /// Where the node listens, each address ending in `/p2p/<peer id>`.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.inner.swarm.addrs().await
    }

    /// Peers the node is connected to.
    pub async fn connected_peers(&self) -> Vec<PeerId> {
        self.inner.swarm.peers().await
    }

    /// Connects to `addr` (with or without `/p2p/<id>`); the peer's id.
    pub async fn connect(&self, addr: Multiaddr) -> Result<PeerId, IpfsError> {
        let text = addr.to_string();
        self.inner
            .swarm
            .dial(addr)
            .await
            .map_err(|reason| IpfsError::Connect { addr: text, reason })
    }

    /// The block `cid`, if it is stored locally (never fetches).
    pub async fn get_block(&self, cid: &Cid) -> Result<Option<Vec<u8>>, IpfsError> {
        let mh = mh_of(cid);
        self.blocking(move |s| s.get(&mh)).await
    }

    /// How many received blocks were dropped because nobody wanted them or
    /// their bytes did not hash to their CID.
    pub fn rejected_blocks(&self) -> u64 {
        self.inner.bitswap.rejected()
    }

    /// Blocks other nodes pushed to this one during their adds that
    /// verified (stored, or already held).
    pub fn pushed_blocks_received(&self) -> u64 {
        self.inner.push.received()
    }

    /// Pushed blocks dropped because their bytes could not be verified
    /// against the CID prefix they came with.
    pub fn pushed_blocks_rejected(&self) -> u64 {
        self.inner.push.rejected()
    }

    /// Frames of blocks this node's adds did not queue to a peer (its
    /// queue was full, or its stream had ended): that peer fetches those
    /// blocks with Bitswap when the pin arrives.
    pub fn push_frames_dropped(&self) -> u64 {
        self.inner.push.dropped()
    }

    /// Block push streams refused: on the public network, from nodes that
    /// are not cluster members' (see [`Self::set_cluster_nodes`]).
    pub fn push_streams_refused(&self) -> u64 {
        self.inner.push.refused()
    }

    /// Overwrites a stored block with `data`, unchecked, to simulate disk
    /// corruption in tests (peers must reject what this node then serves).
    /// Only with the `testkit` feature.
    #[cfg(any(test, feature = "testkit"))]
    pub async fn corrupt_block_for_tests(&self, cid: &Cid, data: Vec<u8>) -> Result<(), IpfsError> {
        let mh = mh_of(cid);
        self.blocking(move |s| s.put_unchecked(&mh, &data)).await
    }

    /// Stores the blocks `produce` emits through its sink (each verified
    /// against its CID, written in batches of `WRITE_BATCH_BLOCKS` per
    /// transaction, durable when this returns) and, when `pin`, pins the
    /// root it returns recursively. `produce` runs on a blocking thread.
    pub async fn import<F>(&self, pin: bool, produce: F) -> Result<AddedContent, IpfsError>
    where
        F: FnOnce(&mut dyn FnMut(Cid, Vec<u8>) -> Result<(), IpfsError>) -> Result<Cid, IpfsError>
            + Send
            + 'static,
    {
        self.import_blocks(pin, true, false, None, produce).await
    }

    /// [`Self::import`], hashing each block only when `verify`: blocks
    /// known to hash to their CIDs (the UnixFS importer computed them, the
    /// CAR reader checked them) are hashed once. With `push`, the blocks
    /// are also pushed to every connected node as they are produced (see
    /// `push`). With `sink`, every block goes to it instead, in import
    /// order, and nothing is stored here (a sharded add).
    pub(super) async fn import_blocks<F>(
        &self,
        pin: bool,
        verify: bool,
        push: bool,
        sink: Option<AddSink>,
        produce: F,
    ) -> Result<AddedContent, IpfsError>
    where
        F: FnOnce(&mut dyn FnMut(Cid, Vec<u8>) -> Result<(), IpfsError>) -> Result<Cid, IpfsError>
            + Send
            + 'static,
    {
        let store = self.inner.store.clone();
        let mut protection = self.protection();
        let mut session = if push {
            let peers = self.inner.swarm.peers().await;
            Some(self.inner.push.session(peers))
        } else {
            None
        };
        let (root, blocks, bytes) = tokio::task::spawn_blocking(move || {
            let mut batch: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            let (mut blocks, mut bytes, mut batch_bytes) = (0u64, 0u64, 0usize);
            let root = {
                let mut sink = |cid: Cid, data: Vec<u8>| -> Result<(), IpfsError> {
                    if verify {
                        match bitswap::digest(cid.hash().code(), &data) {
                            Ok(d) if d == cid.hash().digest() => {}
                            Ok(_) => {
                                return Err(IpfsError::Unsupported {
                                    what: format!(
                                        "storing block {cid}: its bytes do not hash to it"
                                    ),
                                });
                            }
                            Err(e) => {
                                return Err(IpfsError::Unsupported {
                                    what: format!("storing block {cid}: {e}"),
                                });
                            }
                        }
                    }
                    if cid.hash().code() == 0 {
                        return Ok(());
                    }
                    if let Some(sink) = &sink {
                        blocks += 1;
                        bytes += data.len() as u64;
                        return sink
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .put(cid, data);
                    }
                    if let Some(s) = session.as_mut() {
                        s.offer(&cid, &data);
                    }
                    let mh = mh_of(&cid);
                    protection.add(mh.clone());
                    blocks += 1;
                    bytes += data.len() as u64;
                    batch_bytes += data.len();
                    batch.push((mh, data));
                    if batch.len() >= WRITE_BATCH_BLOCKS || batch_bytes >= WRITE_BATCH_BYTES {
                        store.put_many_lazy(&batch).map_err(storage)?;
                        batch.clear();
                        batch_bytes = 0;
                    }
                    Ok(())
                };
                produce(&mut sink)?
            };
            // The last frame goes out now; the streams end once written.
            drop(session);
            // Durable before the add answers (the pin's or an empty
            // commit): the batches above were written without an fsync.
            store.put_many_lazy(&batch).map_err(storage)?;
            if !pin {
                store.sync().map_err(storage)?;
            }
            if pin {
                store
                    .pin(
                        &root.into_v1().unwrap_or(root).to_bytes(),
                        PinKind::Recursive,
                    )
                    .map_err(storage)?;
            }
            drop(protection);
            Ok::<_, IpfsError>((root, blocks, bytes))
        })
        .await
        .map_err(storage)??;
        if pin {
            self.inner.swarm.provide(&root).await;
        }
        let root = CidKey::from_cid(root).map_err(|e| IpfsError::Unsupported {
            what: format!("root cid: {e}"),
        })?;
        Ok(AddedContent {
            root,
            blocks,
            bytes,
            entries: Vec::new(),
        })
    }

    fn protection(&self) -> Protection {
        Protection {
            set: Arc::clone(&self.inner.protected),
            held: Vec::new(),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&BlockStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, IpfsError> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(storage)?
            .map_err(storage)
    }

    /// The block `cid` from the store or, when missing, from peers; `true`
    /// when it was fetched (and still has to be written).
    async fn obtain(&self, cid: Cid) -> Result<(Cid, Vec<u8>, bool), IpfsError> {
        if let Some(data) = self.get_block(&cid).await? {
            return Ok((cid, data, false));
        }
        match self.inner.bitswap.fetch(cid).await {
            Some(data) => Ok((cid, data, true)),
            None => Err(IpfsError::Stopped),
        }
    }

    /// Marks every block reachable from a pin, then sweeps the rest.
    async fn collect_garbage(&self) -> Result<GcReport, IpfsError> {
        let _one_at_a_time = self.inner.gc.lock().await;
        let protected = Arc::clone(&self.inner.protected);
        let removed = self
            .blocking(move |s| {
                let live = walk::live_blocks(s, &mut |_| {})?;
                // Pins in progress register blocks before touching them;
                // holding the set during the sweep closes the race.
                let protected = protected.lock();
                s.sweep(|mh| live.contains_key(mh) || protected.contains_key(mh))
            })
            .await?;
        // Blocks are kept by multihash: name each as Kubo's gc does, a
        // CIDv1 `raw` of it.
        let keys: Vec<String> = removed
            .iter()
            .filter_map(|mh| cid::multihash::Multihash::<64>::from_bytes(mh).ok())
            .map(|mh| Cid::new_v1(crate::ipfs::dagpb::RAW, mh).to_string())
            .collect();
        Ok(GcReport {
            removed: removed.len() as u64,
            keys,
        })
    }
}

impl IpfsBackend for EmbeddedNode {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn swarm_peers(&self) -> BoxFuture<'_, Result<Vec<String>, IpfsError>> {
        Box::pin(async move {
            Ok(self
                .connected_peers()
                .await
                .iter()
                .map(ToString::to_string)
                .collect())
        })
    }

    fn id(&self) -> BoxFuture<'_, Result<IpfsId, IpfsError>> {
        Box::pin(async move {
            Ok(IpfsId {
                id: self.peer_id().to_string(),
                addresses: self
                    .listen_addrs()
                    .await
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                agent_version: agent_version(),
            })
        })
    }

    fn pin(
        &self,
        cid: CidKey,
        opts: PinOpts,
        progress: Option<mpsc::Sender<u64>>,
    ) -> BoxFuture<'_, Result<(), IpfsError>> {
        Box::pin(self.pin_dag(cid, opts, progress))
    }

    fn unpin(&self, cid: CidKey, recursive: bool) -> BoxFuture<'_, Result<(), IpfsError>> {
        Box::pin(async move {
            let key = cid.cid().to_bytes();
            let k = key.clone();
            if self.blocking(move |s| s.unpin(&k, recursive)).await? {
                // Only a public node announces roots: no second read
                // transaction in the private swarm.
                if self.inner.swarm.is_public()
                    && self.blocking(move |s| s.pin_kind(&key)).await?.is_none()
                {
                    self.inner.swarm.unprovide(cid.cid()).await;
                }
                Ok(())
            } else {
                Err(IpfsError::NotPinned { cid })
            }
        })
    }

    fn pin_ls(&self, filter: PinLsFilter) -> BoxStream<'static, Result<PinnedCid, IpfsError>> {
        let store = self.inner.store.clone();
        let roots = matches!(
            filter,
            PinLsFilter::Recursive | PinLsFilter::Direct | PinLsFilter::All
        );
        let indirect = matches!(filter, PinLsFilter::Indirect | PinLsFilter::All);
        let wanted = move |k: PinKind| match filter {
            PinLsFilter::Recursive => k == PinKind::Recursive,
            PinLsFilter::Direct => k == PinKind::Direct,
            PinLsFilter::Indirect => false,
            PinLsFilter::All => true,
        };
        // (cursor, done): pages of one read transaction each.
        let pages = futures::stream::unfold(
            (store.clone(), None::<Vec<u8>>, !roots),
            move |(store, after, done)| async move {
                if done {
                    return None;
                }
                let s = store.clone();
                let a = after.clone();
                let page =
                    tokio::task::spawn_blocking(move || s.pins_page(a.as_deref(), PIN_LS_PAGE))
                        .await
                        .map_err(storage)
                        .and_then(|r| r.map_err(storage));
                match page {
                    Err(e) => Some((vec![Err(e)], (store, after, true))),
                    Ok(page) => {
                        let next = page.last().map(|(k, _)| k.clone());
                        let done = next.is_none();
                        let items = page
                            .into_iter()
                            .filter(|(_, p)| wanted(p.kind()))
                            .filter_map(|(key, pin)| {
                                let cid = Cid::try_from(key.as_slice()).ok()?;
                                Some(Ok(PinnedCid {
                                    cid: CidKey::from_cid(cid).ok()?,
                                    kind: pin.kind(),
                                }))
                            })
                            .collect::<Vec<_>>();
                        Some((items, (store, next, done)))
                    }
                }
            },
        )
        .flat_map(futures::stream::iter);
        let indirect_stream = async move {
            if !indirect {
                return Vec::new();
            }
            match tokio::task::spawn_blocking(move || walk::indirect_pins(&store)).await {
                Ok(Ok(list)) => list.into_iter().map(Ok).collect(),
                Ok(Err(e)) => vec![Err(storage(e))],
                Err(e) => vec![Err(storage(e))],
            }
        }
        .into_stream()
        .flat_map(futures::stream::iter);
        // The stream ends after the first error.
        let mut failed = false;
        pages
            .chain(indirect_stream)
            .take_while(move |r| {
                let go = !failed;
                failed |= r.is_err();
                futures::future::ready(go)
            })
            .boxed()
    }

    fn pin_update(
        &self,
        from: CidKey,
        to: CidKey,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(), IpfsError>> {
        Box::pin(async move {
            let key = from.cid().to_bytes();
            if self.blocking(move |s| s.stored_pin(&key)).await? != Some(StoredPin::Recursive) {
                return Err(IpfsError::NotPinned { cid: from });
            }
            let opts = PinOpts {
                recursive: true,
                max_depth: None,
                progress_timeout: timeout,
                origins: Vec::new(),
            };
            self.pin_dag(to, opts, None).await?;
            if from != to {
                let key = from.cid().to_bytes();
                self.blocking(move |s| s.unpin(&key, true)).await?;
            }
            Ok(())
        })
    }

    fn repo_stat(&self) -> BoxFuture<'_, Result<RepoStat, IpfsError>> {
        Box::pin(async move {
            let (bytes, count) = self.blocking(|s| s.stat()).await?;
            Ok(RepoStat {
                repo_size: bytes,
                storage_max: self.inner.storage_max,
                num_objects: Some(count),
            })
        })
    }

    fn gc(&self) -> BoxFuture<'_, Result<GcReport, IpfsError>> {
        Box::pin(self.collect_garbage())
    }

    fn swarm_connect(&self, addr: String) -> BoxFuture<'_, Result<(), IpfsError>> {
        Box::pin(async move {
            let parsed: Multiaddr =
                addr.parse()
                    .map_err(|e: libp2p::multiaddr::Error| IpfsError::Connect {
                        addr: addr.clone(),
                        reason: e.to_string(),
                    })?;
            self.connect(parsed).await.map(|_| ())
        })
    }

    fn block_stat(&self, cid: CidKey) -> BoxFuture<'_, Result<u64, IpfsError>> {
        Box::pin(async move {
            let mh = mh_of(cid.cid());
            self.blocking(move |s| s.size(&mh))
                .await?
                .ok_or(IpfsError::NotFound { cid })
        })
    }

    fn resolve(
        &self,
        path: crate::ipfs::path::IpfsPath,
    ) -> BoxFuture<'_, Result<CidKey, IpfsError>> {
        Box::pin(async move {
            let Some(root) = path.root_cid() else {
                return Err(IpfsError::Unsupported {
                    what: format!("resolving {path} (ipns) on the embedded node"),
                });
            };
            let mut at = *root.cid();
            for name in path.segments() {
                let (_, block, _) = tokio::time::timeout(RESOLVE_FETCH_TIMEOUT, self.obtain(at))
                    .await
                    .map_err(|_| IpfsError::Timeout {
                        operation: format!("fetch of {at} to resolve {path}"),
                        stalled_for: RESOLVE_FETCH_TIMEOUT,
                    })??;
                at = crate::ipfs::path::child_by_name(&path, &at, &block, name)?;
            }
            CidKey::from_cid(at).map_err(|e| IpfsError::Resolve {
                path: path.to_string(),
                reason: e.to_string(),
            })
        })
    }

    fn can_add(&self) -> bool {
        true
    }

    fn embedded(&self) -> Option<&EmbeddedNode> {
        Some(self)
    }

    fn streams_add(&self) -> bool {
        true
    }

    fn add(
        &self,
        input: AddInput,
        opts: AddOpts,
    ) -> BoxFuture<'_, Result<AddedContent, IpfsError>> {
        Box::pin(self.add_input(input, opts))
    }

    fn get(
        &self,
        path: crate::ipfs::path::IpfsPath,
    ) -> BoxFuture<'_, Result<crate::ipfs::content::Content, IpfsError>> {
        Box::pin(self.get_content(path))
    }

    fn cat(
        &self,
        cid: CidKey,
        offset: u64,
        len: u64,
    ) -> BoxStream<'static, Result<bytes::Bytes, IpfsError>> {
        self.cat_stream(cid, offset, len)
    }

    fn dag_layout(&self, root: CidKey) -> BoxStream<'static, Result<(Cid, u64), IpfsError>> {
        self.layout_stream(*root.cid())
    }
}
