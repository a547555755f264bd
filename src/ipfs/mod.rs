//! IPFS backends: the one place pinfleet talks to an IPFS node.
//!
//! This module owns the [`IpfsBackend`] trait (pin, unpin, list, stat, gc,
//! connect, add, resolve, get and cat), its error type, and the implementations:
//! [`kubo::KuboClient`] (Kubo's HTTP RPC API), [`embedded::EmbeddedNode`]
//! (an IPFS node inside the peer) and [`NoBackend`] (a peer that runs
//! consensus only). A scripted Kubo server for tests and benchmarks is
//! `testkit::mock_kubo`, outside the default build.
//!
//! It must not decide *what* to pin, retry, or keep state: callers (the pin
//! tracker) own policy; a backend reports what the node said, precisely.

pub mod car;
pub mod content;
pub mod dagcbor;
pub mod dagpb;
pub mod embedded;
pub mod kubo;
pub mod parts;
pub mod path;
pub mod rpc;
pub mod unixfs;

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

use crate::manifest::CidKey;
use crate::manifest::duration::format_duration;

pub use embedded::EmbeddedNode;
pub use kubo::KuboClient;

/// A boxed error from a lower layer (HTTP client, socket).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A backend shows as its kind (`kubo`, `embedded`, `none`).
impl std::fmt::Debug for dyn IpfsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IpfsBackend({})", self.kind())
    }
}

/// An IPFS node pinfleet can pin content on.
///
/// Object safe: peers hold an `Arc<dyn IpfsBackend>` and pick the
/// implementation from configuration. Futures borrow the backend; the
/// [`pin_ls`](IpfsBackend::pin_ls) stream does not, so an actor can own it.
pub trait IpfsBackend: Send + Sync + 'static {
    /// A short name for logs and status (`kubo`, `none`).
    fn kind(&self) -> &'static str;

    /// The node's identity and the addresses it listens on.
    fn id(&self) -> BoxFuture<'_, Result<IpfsId, IpfsError>>;

    /// The peer ids of the nodes this node is connected to (IPFS
    /// Cluster's `ipfs_links` in `/health/graph`). None by default.
    fn swarm_peers(&self) -> BoxFuture<'_, Result<Vec<String>, IpfsError>> {
        Box::pin(futures::future::ready(Ok(Vec::new())))
    }

    /// Pins `cid`, fetching whatever is missing. Resolves once the node holds
    /// the pin. Fails with [`IpfsError::Timeout`] when the node reports no
    /// progress for `opts.progress_timeout`; there is no limit on total time
    /// while progress continues. Each time the number of fetched blocks grows
    /// it is offered on `progress` (dropped if the receiver is behind: the
    /// values are cumulative, so a later one supersedes it).
    fn pin(
        &self,
        cid: CidKey,
        opts: PinOpts,
        progress: Option<mpsc::Sender<u64>>,
    ) -> BoxFuture<'_, Result<(), IpfsError>>;

    /// Removes the pin on `cid` (`recursive = false` removes a direct pin
    /// only). Fails with [`IpfsError::NotPinned`] when there is no such pin.
    fn unpin(&self, cid: CidKey, recursive: bool) -> BoxFuture<'_, Result<(), IpfsError>>;

    /// Every pin of the kinds `filter` selects, one at a time as the node
    /// reports them; the whole list is never held in memory. The stream ends
    /// after the first error.
    fn pin_ls(&self, filter: PinLsFilter) -> BoxStream<'static, Result<PinnedCid, IpfsError>>;

    /// Replaces the recursive pin on `from` with one on `to`, fetching only
    /// what differs. Kubo reports no progress for this call, so `timeout`
    /// bounds its total time. Fails with [`IpfsError::NotPinned`] when `from`
    /// is not pinned recursively.
    fn pin_update(
        &self,
        from: CidKey,
        to: CidKey,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(), IpfsError>>;

    /// How much the node stores and may store.
    fn repo_stat(&self) -> BoxFuture<'_, Result<RepoStat, IpfsError>>;

    /// Runs garbage collection and reports how many blocks it removed.
    fn gc(&self) -> BoxFuture<'_, Result<GcReport, IpfsError>>;

    /// Connects the node to a peer (`/ip4/…/tcp/…/p2p/<peer id>`).
    fn swarm_connect(&self, addr: String) -> BoxFuture<'_, Result<(), IpfsError>>;

    /// The CID `path` leads to (`/ipfs/<cid>/a/b` → the CID of `b`),
    /// fetching blocks on the way as the node does. Fails with
    /// [`IpfsError::Resolve`] when there is no such link or name.
    fn resolve(&self, path: path::IpfsPath) -> BoxFuture<'_, Result<CidKey, IpfsError>>;

    /// The size in bytes of the block `cid`, when the node holds it locally.
    /// Never fetches from the network: fails with [`IpfsError::NotFound`].
    fn block_stat(&self, cid: CidKey) -> BoxFuture<'_, Result<u64, IpfsError>>;

    /// The embedded node behind this backend (a sharded add sends blocks
    /// through it); `None` for other backends.
    fn embedded(&self) -> Option<&EmbeddedNode> {
        None
    }

    /// Whether [`add`](IpfsBackend::add) imports content (false: it
    /// answers `Unsupported`), so a caller can refuse before receiving it.
    fn can_add(&self) -> bool {
        false
    }

    /// Whether [`add`](IpfsBackend::add) takes an upload as it arrives
    /// ([`AddInput::Parts`], [`AddInput::CarReader`]); false: it needs it
    /// on disk first ([`AddInput::Path`], [`AddInput::Car`]).
    fn streams_add(&self) -> bool {
        false
    }

    /// Imports `input` as UnixFS (or a CAR's blocks), storing its blocks on
    /// the node (and pinning the root when `opts.pin`), reporting each entry
    /// on `opts.events` as it is imported. Backends that cannot add keep
    /// this default, which fails with [`IpfsError::Unsupported`].
    fn add(
        &self,
        input: AddInput,
        opts: AddOpts,
    ) -> BoxFuture<'_, Result<AddedContent, IpfsError>> {
        let _ = (input, opts);
        let what = format!("add on the {} backend", self.kind());
        Box::pin(futures::future::ready(Err(IpfsError::Unsupported { what })))
    }

    /// What `path` names: a file and its size, a directory and its
    /// entries, or a symlink, fetching blocks on the way as the node does.
    /// Fails with [`IpfsError::NotFound`] when neither the node nor (for
    /// the embedded node) any node it is connected to has the root, with
    /// [`IpfsError::Resolve`] when a name is missing on the way. Backends
    /// that cannot read keep this default ([`IpfsError::Unsupported`]).
    fn get(&self, path: path::IpfsPath) -> BoxFuture<'_, Result<content::Content, IpfsError>> {
        let _ = path;
        let what = format!("reading content on the {} backend", self.kind());
        Box::pin(futures::future::ready(Err(IpfsError::Unsupported { what })))
    }

    /// The bytes `offset .. offset + len` of the file `cid` (as
    /// [`get`](IpfsBackend::get) sized it), streamed as they are read,
    /// never the whole file in memory. The stream ends after the first
    /// error; a stream that ends early without one is an error too for
    /// the caller (it asked for `len` bytes).
    fn cat(
        &self,
        cid: CidKey,
        offset: u64,
        len: u64,
    ) -> BoxStream<'static, Result<bytes::Bytes, IpfsError>> {
        let _ = (cid, offset, len);
        let what = format!("reading content on the {} backend", self.kind());
        Box::pin(futures::stream::once(futures::future::ready(Err(
            IpfsError::Unsupported { what },
        ))))
    }

    /// Every block of the DAG under `root` once, with its size in bytes,
    /// parents before children (what sharding content already in IPFS
    /// groups), fetching blocks that can have links as a read does and
    /// storing nothing. Backends that cannot keep this default
    /// ([`IpfsError::Unsupported`]).
    fn dag_layout(&self, root: CidKey) -> BoxStream<'static, Result<(cid::Cid, u64), IpfsError>> {
        let _ = root;
        let what = format!("listing a DAG's blocks on the {} backend", self.kind());
        Box::pin(futures::stream::once(futures::future::ready(Err(
            IpfsError::Unsupported { what },
        ))))
    }
}

/// What [`IpfsBackend::add`] imports.
pub enum AddInput {
    /// A file or directory on the local file system.
    Path(std::path::PathBuf),
    /// A byte stream (one file), read on a blocking thread.
    Reader(Box<dyn std::io::Read + Send>),
    /// A CAR v1 file with exactly one root: its blocks are stored as they
    /// are (each verified against its CID); the root is reported as one
    /// entry named `""`.
    Car(std::path::PathBuf),
    /// The entries of an upload as they arrive (files streamed into the
    /// importer, directories built at the end, as
    /// [`unixfs::TreeImport`]): one top-level entry, or with
    /// [`AddOpts::wrap`] any number, wrapped in a directory named `""`.
    /// Only where [`IpfsBackend::streams_add`].
    Parts(parts::Parts),
    /// A CAR v1 byte stream, as [`AddInput::Car`], read as it arrives.
    /// Only where [`IpfsBackend::streams_add`].
    CarReader(Box<dyn std::io::Read + Send>),
}

impl fmt::Debug for AddInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddInput::Path(p) => f.debug_tuple("Path").field(p).finish(),
            AddInput::Reader(_) => f.write_str("Reader(..)"),
            AddInput::Car(p) => f.debug_tuple("Car").field(p).finish(),
            AddInput::Parts(_) => f.write_str("Parts(..)"),
            AddInput::CarReader(_) => f.write_str("CarReader(..)"),
        }
    }
}

/// What an add reports while it runs: each imported entry, and (with
/// [`AddOpts::progress`]) the bytes of a file read so far.
pub type AddEvent = unixfs::ImportEvent;

/// How to add.
#[derive(Debug, Clone)]
pub struct AddOpts {
    /// Pin the root recursively once every block is stored (Kubo's default).
    pub pin: bool,
    /// How to import (CID version, leaves, chunk size, hidden files);
    /// the default gives `ipfs add`'s CIDs.
    pub import: unixfs::AddOptions,
    /// `wrap-with-directory`: the [`AddInput::Path`] is a directory whose
    /// entries are added inside one new directory (the top-level entries
    /// of [`AddInput::Parts`] are); entries are named relative to it and
    /// the wrapping root is named `""`.
    pub wrap: bool,
    /// Report files' read progress on `events` too.
    pub progress: bool,
    /// Where entries (and progress) are reported as they are imported, in
    /// the order of [`AddedContent::entries`]; the sender is dropped when
    /// the add ends.
    pub events: Option<std::sync::mpsc::Sender<AddEvent>>,
    /// Send the blocks to the other nodes of the embedded node's swarm as
    /// they are imported, so that a pin of the root on every peer finds
    /// them there (bounded, best effort; see docs/ipfs.md). Other backends
    /// ignore it.
    pub push: bool,
    /// Where every block goes instead of the node's store, in import order
    /// (a sharded add: `api::add`'s shard writer); the node then stores
    /// nothing and pins nothing. Only the embedded node honours it.
    pub blocks: Option<AddSink>,
}

/// Receives an add's blocks instead of the node's store
/// ([`AddOpts::blocks`]), on the importer's blocking thread.
pub trait BlockSink: Send + fmt::Debug {
    /// One block (`data` hashes to `cid`); an error ends the add with it.
    fn put(&mut self, cid: cid::Cid, data: Vec<u8>) -> Result<(), IpfsError>;
}

/// A [`BlockSink`] shared between the add and whoever made it.
pub type AddSink = std::sync::Arc<std::sync::Mutex<dyn BlockSink>>;

impl Default for AddOpts {
    fn default() -> Self {
        Self {
            pin: true,
            import: unixfs::AddOptions::default(),
            wrap: false,
            progress: false,
            events: None,
            push: false,
            blocks: None,
        }
    }
}

/// The name of an entry of a wrapped add ([`AddOpts::wrap`]): `name`
/// without its first component (the wrapped directory), `""` for that
/// directory itself.
pub fn unwrapped_name(name: &str) -> String {
    name.split_once('/')
        .map_or_else(String::new, |(_, rest)| rest.to_string())
}

/// What an add stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedContent {
    /// The root CID.
    pub root: CidKey,
    /// Blocks emitted by the importer (identity blocks excluded).
    pub blocks: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Every file and directory imported, as `ipfs add` lists them (root
    /// last); empty when the caller produced the blocks itself.
    pub entries: Vec<unixfs::Added>,
}

/// Who an IPFS node is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IpfsId {
    /// The node's libp2p peer ID.
    pub id: String,
    /// The multiaddrs it announces (empty when it is offline).
    pub addresses: Vec<String>,
    /// Its agent string, e.g. `kubo/0.39.0/`.
    pub agent_version: String,
}

/// How to pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinOpts {
    /// Pin the whole DAG (`true`) or the root block only (`false`, direct).
    pub recursive: bool,
    /// With `recursive`: pin the root and only the blocks at most this many
    /// links below it (a shard of a sharded DAG, IPFS Cluster's
    /// `max_depth`); `None`: the whole DAG. Below a DAG-CBOR root only
    /// DAG-CBOR blocks are followed further than one link: a shard node's
    /// links to content nodes end there (their children are in other
    /// shards). Kubo has no such pin: its backend pins each block direct.
    pub max_depth: Option<u32>,
    /// Give up when no progress is reported for this long. Kubo reports
    /// progress every 500ms, so values of a few seconds or less are noise.
    pub progress_timeout: Duration,
    /// Multiaddrs of peers known to hold the content; the backend connects to
    /// them while pinning, on a best-effort basis.
    pub origins: Vec<String>,
}

/// Whether a pin reaching `limit` links below a root of codec `root_codec`
/// (`None`: the whole DAG, `Some(0)`: the root only) keeps the children of
/// `cid`, met `depth` links below the root. A depth-limited pin follows
/// only blocks of its root's codec past the root: a shard node's links to
/// a content DAG's internal nodes end there, their children being in
/// other shards (for a DAG-CBOR shard node, only its leaf shard nodes are
/// followed).
pub fn pin_follows(limit: Option<u32>, root_codec: u64, cid: &cid::Cid, depth: u32) -> bool {
    match limit {
        None => true,
        Some(max) => depth < max && (depth == 0 || cid.codec() == root_codec),
    }
}

impl PinOpts {
    /// How many links below the root this pin reaches: `Some(0)` direct,
    /// `None` the whole DAG.
    pub fn limit(&self) -> Option<u32> {
        if self.recursive {
            self.max_depth
        } else {
            Some(0)
        }
    }
}

impl Default for PinOpts {
    /// Recursive, two minutes without progress (IPFS Cluster's default pin
    /// timeout), no origins.
    fn default() -> Self {
        Self {
            recursive: true,
            max_depth: None,
            progress_timeout: Duration::from_secs(120),
            origins: Vec::new(),
        }
    }
}

/// How a CID is pinned on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PinKind {
    /// Pinned with its whole DAG.
    Recursive,
    /// Only this block is pinned.
    Direct,
    /// Kept because a recursive pin's DAG contains it.
    Indirect,
}

impl PinKind {
    /// Kubo's spelling (`recursive`, `direct`, `indirect`).
    pub fn as_str(self) -> &'static str {
        match self {
            PinKind::Recursive => "recursive",
            PinKind::Direct => "direct",
            PinKind::Indirect => "indirect",
        }
    }

    /// Parses Kubo's spelling; `indirect through <cid>` counts as indirect.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "recursive" => Some(PinKind::Recursive),
            "direct" => Some(PinKind::Direct),
            s if s == "indirect" || s.starts_with("indirect through ") => Some(PinKind::Indirect),
            _ => None,
        }
    }
}

impl fmt::Display for PinKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which pins [`IpfsBackend::pin_ls`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PinLsFilter {
    /// Recursive pins only: the roots pinfleet creates, and fast to list.
    #[default]
    Recursive,
    /// Direct pins only.
    Direct,
    /// Indirectly pinned blocks only (walks every recursive DAG: slow).
    Indirect,
    /// Everything (walks every recursive DAG: slow).
    All,
}

impl PinLsFilter {
    /// Kubo's `type` argument.
    pub fn as_str(self) -> &'static str {
        match self {
            PinLsFilter::Recursive => "recursive",
            PinLsFilter::Direct => "direct",
            PinLsFilter::Indirect => "indirect",
            PinLsFilter::All => "all",
        }
    }
}

/// One pin a node reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PinnedCid {
    /// The pinned CID, normalised (a `Qm…` answer compares equal to `bafy…`).
    pub cid: CidKey,
    /// How it is pinned.
    pub kind: PinKind,
}

/// Repository usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RepoStat {
    /// Bytes the repository takes now.
    pub repo_size: u64,
    /// The configured limit in bytes; `None` when there is none.
    pub storage_max: Option<u64>,
    /// Blocks stored, when the backend counted them (Kubo counts only on a
    /// full stat, which walks the whole datastore; pinfleet asks for sizes
    /// only, so Kubo leaves this `None`).
    pub num_objects: Option<u64>,
}

/// What a garbage collection run did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GcReport {
    /// Blocks removed.
    pub removed: u64,
    /// The removed blocks, as their backend names them (Kubo and the
    /// embedded node: CIDv1 `raw` of each block's multihash, since blocks
    /// are stored by multihash).
    pub keys: Vec<String>,
}

/// Why a call to an IPFS node failed.
#[derive(Debug, thiserror::Error)]
pub enum IpfsError {
    /// This peer has no IPFS node configured.
    #[error("no ipfs backend is configured: this peer runs consensus only")]
    NotConfigured,

    /// The backend's address is not usable.
    #[error("invalid ipfs api address {url:?}: {reason}")]
    InvalidUrl {
        /// The address as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Nothing answered: connection refused, no route, or a name that does
    /// not resolve.
    #[error("kubo at {url} is unreachable")]
    Unreachable {
        /// The API base URL.
        url: String,
        /// The transport error.
        #[source]
        source: BoxError,
    },

    /// The connection broke while a response was arriving.
    #[error("connection to kubo at {url} broke mid-response")]
    Disconnected {
        /// The API base URL.
        url: String,
        /// The transport error.
        #[source]
        source: BoxError,
    },

    /// The node stopped making progress (or never answered) for too long.
    #[error("{operation} stalled: no progress for {}", format_duration(*.stalled_for))]
    Timeout {
        /// What was waited for, e.g. `pin of bafy…`.
        operation: String,
        /// How long nothing happened.
        stalled_for: Duration,
    },

    /// The node answered with an error status (Kubo's
    /// `{"Message":…,"Code":…,"Type":"error"}` body, parsed).
    #[error("kubo answered {status}: {message}")]
    Http {
        /// The HTTP status.
        status: u16,
        /// Kubo's error code (0 normal, 1 client, 2 implementation, 3 rate
        /// limited, 4 forbidden, 5 blocked), when the body carried one.
        code: Option<u64>,
        /// Kubo's message, or the body text when it was not Kubo's shape.
        message: String,
    },

    /// The node started a streamed answer and then reported an error (an
    /// `X-Stream-Error` trailer or a final error object).
    #[error("kubo aborted the response: {message}")]
    Aborted {
        /// Kubo's message.
        message: String,
    },

    /// The answer could not be decoded.
    #[error("kubo sent an undecodable response: {what}")]
    Garbage {
        /// What was wrong with it.
        what: String,
    },

    /// The CID has no pin of the kind the call needed.
    #[error("{cid} is not pinned")]
    NotPinned {
        /// The CID.
        cid: CidKey,
    },

    /// The node does not hold the block locally.
    #[error("block {cid} is not in the local repository")]
    NotFound {
        /// The CID.
        cid: CidKey,
    },

    /// The backend cannot do this (an operation it lacks, a codec it
    /// cannot traverse).
    #[error("unsupported: {what}")]
    Unsupported {
        /// What was asked.
        what: String,
    },

    /// The content to add is invalid (a malformed CAR, a CAR with several
    /// roots): the same input will be refused again.
    #[error("{what}")]
    InvalidInput {
        /// What is wrong with it.
        what: String,
    },

    /// The embedded node's blockstore failed.
    /// Blocks could not be delivered to (or stored on) the nodes that
    /// must hold them: a peer's stream failed or stalled, or it refused
    /// them (a sharded add).
    #[error("{what}")]
    Delivery {
        /// What failed, and where.
        what: String,
    },
    /// No node has room for what must be stored (`storage_max`, a sharded
    /// add's shard).
    #[error("{what}")]
    NoRoom {
        /// The sizes involved.
        what: String,
    },
    #[error("the embedded node's blockstore failed")]
    Storage(#[source] BoxError),

    /// The embedded node is shutting down.
    #[error("the embedded ipfs node is shutting down")]
    Stopped,

    /// Connecting to a peer failed.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The multiaddr.
        addr: String,
        /// Why.
        reason: String,
    },

    /// A path does not lead to a CID (a missing link, a codec the backend
    /// cannot walk, a name that does not resolve).
    #[error("cannot resolve {path}: {reason}")]
    Resolve {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
}

impl IpfsError {
    /// Whether trying again later may succeed (the node was down, slow, or
    /// briefly broken) as opposed to a refusal that will repeat.
    pub fn is_transient(&self) -> bool {
        match self {
            IpfsError::Unreachable { .. }
            | IpfsError::Disconnected { .. }
            | IpfsError::Timeout { .. }
            | IpfsError::Aborted { .. }
            | IpfsError::Storage(_)
            | IpfsError::Stopped
            | IpfsError::Connect { .. }
            | IpfsError::Delivery { .. } => true,
            IpfsError::Http { status, .. } => *status >= 500 || *status == 429,
            IpfsError::NotConfigured
            | IpfsError::InvalidUrl { .. }
            | IpfsError::Garbage { .. }
            | IpfsError::NotPinned { .. }
            | IpfsError::NotFound { .. }
            | IpfsError::Resolve { .. }
            | IpfsError::InvalidInput { .. }
            | IpfsError::Unsupported { .. }
            | IpfsError::NoRoom { .. } => false,
        }
    }
}

/// The backend for a peer without an IPFS node (`ipfs: none`): consensus
/// only. Every call fails with [`IpfsError::NotConfigured`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBackend;

impl NoBackend {
    fn refuse<T: Send + 'static>() -> BoxFuture<'static, Result<T, IpfsError>> {
        Box::pin(futures::future::ready(Err(IpfsError::NotConfigured)))
    }
}

impl IpfsBackend for NoBackend {
    fn kind(&self) -> &'static str {
        "none"
    }

    fn id(&self) -> BoxFuture<'_, Result<IpfsId, IpfsError>> {
        Self::refuse()
    }

    fn pin(
        &self,
        _cid: CidKey,
        _opts: PinOpts,
        _progress: Option<mpsc::Sender<u64>>,
    ) -> BoxFuture<'_, Result<(), IpfsError>> {
        Self::refuse()
    }

    fn unpin(&self, _cid: CidKey, _recursive: bool) -> BoxFuture<'_, Result<(), IpfsError>> {
        Self::refuse()
    }

    fn pin_ls(&self, _filter: PinLsFilter) -> BoxStream<'static, Result<PinnedCid, IpfsError>> {
        Box::pin(futures::stream::once(futures::future::ready(Err(
            IpfsError::NotConfigured,
        ))))
    }

    fn pin_update(
        &self,
        _from: CidKey,
        _to: CidKey,
        _timeout: Duration,
    ) -> BoxFuture<'_, Result<(), IpfsError>> {
        Self::refuse()
    }

    fn repo_stat(&self) -> BoxFuture<'_, Result<RepoStat, IpfsError>> {
        Self::refuse()
    }

    fn gc(&self) -> BoxFuture<'_, Result<GcReport, IpfsError>> {
        Self::refuse()
    }

    fn swarm_connect(&self, _addr: String) -> BoxFuture<'_, Result<(), IpfsError>> {
        Self::refuse()
    }

    fn block_stat(&self, _cid: CidKey) -> BoxFuture<'_, Result<u64, IpfsError>> {
        Self::refuse()
    }

    fn resolve(&self, _path: path::IpfsPath) -> BoxFuture<'_, Result<CidKey, IpfsError>> {
        Self::refuse()
    }

    fn get(&self, _path: path::IpfsPath) -> BoxFuture<'_, Result<content::Content, IpfsError>> {
        Self::refuse()
    }

    fn cat(
        &self,
        _cid: CidKey,
        _offset: u64,
        _len: u64,
    ) -> BoxStream<'static, Result<bytes::Bytes, IpfsError>> {
        Box::pin(futures::stream::once(futures::future::ready(Err(
            IpfsError::NotConfigured,
        ))))
    }
}
