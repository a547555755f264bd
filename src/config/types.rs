//! The typed `service.toml`: one struct per section with its defaults,
//! each key naming the codec (`codec`) that reads and writes its value.
//!
//! This module owns the shape of the file: its sections, keys, defaults,
//! and the codecs of its own types (`ClusterSecret`, `IpfsBackendKind`).
//! It reads no files and checks no rule
//! that spans keys (`load` does), knows nothing of environment variables
//! (`env`) and writes no comments (`render`).
//!
//! The serde derives here are the file format: `Deserialize` fills every
//! missing key with its default and ignores unknown keys, so use
//! [`ServiceConfig::from_toml_str`] or [`ServiceConfig::load`], which also
//! report unknown keys, require `cluster.secret` and check cross-key rules.
//! `Serialize` writes `cluster.secret` as an empty string so that no
//! serialized config can leak it; only [`ServiceConfig::to_toml`] writes it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use toml::Value;

use super::access;
use super::codec::{
    Addrs, AtLeastOne, CacheDir, Codec, Flag, Integer, Interval, KuboUrl, OptionalPath,
    OptionalSocketAddress, OptionalUrl, PeerIds, RaftTiming, ReceiverKind, SocketAddress, Sources,
    Tags, Text, Webhooks, as_str, unknown_message,
};
use super::size::OptionalSize;

/// The 32-byte private network key (libp2p pnet) all peers share.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ClusterSecret([u8; 32]);

impl ClusterSecret {
    /// A secret from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh secret from the operating system's CSPRNG (via `rand`).
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// Parses 64 hex characters. Errors never repeat the input, which may be
    /// a nearly-right secret.
    pub fn parse_hex(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(format!(
                "expected 64 hex characters (32 bytes), found {} characters",
                text.chars().count()
            ));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|_| "expected 64 hex characters (32 bytes), found non-hex characters")?;
        Ok(Self(bytes))
    }

    /// The raw key, for `libp2p::pnet::PreSharedKey::new`.
    pub fn bytes(&self) -> [u8; 32] {
        self.0
    }

    /// Lower-case hex, as written in `service.toml`.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Redacted: the secret must never reach a log.
impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

/// `cluster.secret`: messages never repeat a string value. Written as an
/// empty string (see the module comment).
struct Secret;

impl Codec for Secret {
    type Field = ClusterSecret;

    fn read(value: &Value) -> Result<ClusterSecret, String> {
        ClusterSecret::parse_hex(as_str(value)?)
    }

    fn write(_: &ClusterSecret) -> Value {
        Value::String(String::new())
    }
}

/// The whole validated `service.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default = "ServiceConfig::unset")]
pub struct ServiceConfig {
    /// `[cluster]`: membership, transport and replication defaults.
    pub cluster: ClusterConfig,
    /// `[consensus]`: Raft timing, snapshots and batching.
    pub consensus: ConsensusConfig,
    /// `[api]`: the REST API.
    pub api: ApiConfig,
    /// `[pinsvc]`: the IPFS Pinning Service API.
    pub pinsvc: super::pinsvc::PinSvcConfig,
    /// `[ipfs]`: the IPFS node this peer pins on.
    pub ipfs: IpfsConfig,
    /// `[informer]`: metrics reported for allocation.
    pub informer: InformerConfig,
    /// `[controller]`: the GitOps controller run by the Raft leader.
    pub controller: ControllerConfig,
    /// `[tls]`: what the daemon's outgoing HTTPS clients trust.
    pub tls: TlsConfig,
}

impl ServiceConfig {
    /// Every default, with the one setting that has none.
    pub fn new(secret: ClusterSecret) -> Self {
        Self {
            cluster: ClusterConfig::new(secret),
            consensus: ConsensusConfig::default(),
            api: ApiConfig::default(),
            pinsvc: super::pinsvc::PinSvcConfig::default(),
            ipfs: IpfsConfig::default(),
            informer: InformerConfig::default(),
            controller: ControllerConfig::default(),
            tls: TlsConfig::default(),
        }
    }

    /// Every default with an all-zero secret: what deserializing starts
    /// from; a load without a secret is refused before this escapes.
    pub(super) fn unset() -> Self {
        Self::new(ClusterSecret::from_bytes([0; 32]))
    }
}

/// `[cluster]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default = "ClusterConfig::unset")]
pub struct ClusterConfig {
    /// The cluster's name: what the follower feed is signed for.
    #[serde(with = "Text")]
    pub name: String,
    /// Run as a follower: hold and pin the state the trusted peers sign,
    /// never write.
    #[serde(with = "Flag")]
    pub follower: bool,
    /// Human-readable peer name; empty when not set.
    #[serde(with = "Text")]
    pub peername: String,
    /// Private network key; required.
    #[serde(with = "Secret")]
    pub secret: ClusterSecret,
    /// libp2p listen addresses; never empty.
    #[serde(with = "Addrs::<1>")]
    pub listen_multiaddress: Vec<Multiaddr>,
    /// Peers to join on start.
    #[serde(with = "Addrs::<0>")]
    pub bootstrap: Vec<Multiaddr>,
    /// Peers trusted to write and vote (Raft voters); empty: every peer
    /// holding the secret.
    #[serde(with = "PeerIds")]
    pub trusted_peers: Vec<PeerId>,
    /// Default fewest replicas per pin; -1 is every peer.
    #[serde(with = "Integer::<i32>")]
    pub replication_factor_min: i32,
    /// Default most replicas per pin; -1 is every peer.
    #[serde(with = "Integer::<i32>")]
    pub replication_factor_max: i32,
    /// How often a peer reconciles its pins with the shared state.
    #[serde(with = "Interval")]
    pub state_sync_interval: Duration,
}

impl ClusterConfig {
    /// Defaults, with the one setting that has none.
    pub fn new(secret: ClusterSecret) -> Self {
        Self {
            name: "pinfleet".to_string(),
            follower: false,
            peername: String::new(),
            secret,
            listen_multiaddress: vec![default_listen_multiaddress()],
            bootstrap: Vec::new(),
            trusted_peers: Vec::new(),
            replication_factor_min: -1,
            replication_factor_max: -1,
            state_sync_interval: Duration::from_secs(30),
        }
    }

    fn unset() -> Self {
        Self::new(ClusterSecret::from_bytes([0; 32]))
    }
}

fn default_listen_multiaddress() -> Multiaddr {
    Multiaddr::empty()
        .with(libp2p::multiaddr::Protocol::Ip4([0, 0, 0, 0].into()))
        .with(libp2p::multiaddr::Protocol::Tcp(9096))
}

/// `[consensus]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsensusConfig {
    /// Time between leader heartbeats; below `election_timeout_min`.
    #[serde(with = "RaftTiming")]
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomised election timeout.
    #[serde(with = "RaftTiming")]
    pub election_timeout_min: Duration,
    /// Upper bound of the randomised election timeout; above the minimum.
    #[serde(with = "RaftTiming")]
    pub election_timeout_max: Duration,
    /// Log entries since the last snapshot that trigger a new one; at least 1.
    #[serde(with = "AtLeastOne::<u64>")]
    pub snapshot_logs_since_last: u64,
    /// Log entries kept after a snapshot for lagging followers.
    #[serde(with = "Integer::<u64>")]
    pub max_in_snapshot_log_to_keep: u64,
    /// How long a write waits for commit before failing.
    #[serde(with = "Interval")]
    pub write_timeout: Duration,
    /// Most pins in one log entry; at least 1.
    #[serde(with = "AtLeastOne::<usize>")]
    pub batch_max_pins: usize,
    /// Most bytes of log entries in one replication message; at least 1
    /// (an entry larger than this still goes, alone).
    #[serde(with = "AtLeastOne::<usize>")]
    pub append_max_bytes: usize,
    /// Most log entries in one replication message; at least 1.
    #[serde(with = "AtLeastOne::<u64>")]
    pub append_max_entries: u64,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(250),
            election_timeout_min: Duration::from_secs(1),
            election_timeout_max: Duration::from_secs(2),
            snapshot_logs_since_last: 5000,
            max_in_snapshot_log_to_keep: 1000,
            write_timeout: Duration::from_secs(30),
            batch_max_pins: 10_000,
            append_max_bytes: 2 << 20,
            append_max_entries: 32,
        }
    }
}

/// `[api]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiConfig {
    /// Where the REST API listens; port 0 picks a free port.
    #[serde(with = "SocketAddress")]
    pub listen: SocketAddr,
    /// Users of the API and their roles; none = no authentication (then
    /// only a loopback `listen` is allowed, see `allow_unauthenticated_remote`).
    #[serde(with = "access::Users")]
    pub basic_auth_credentials: BTreeMap<String, crate::auth::Credential>,
    /// How long a token from `POST /token` is valid.
    #[serde(with = "Interval")]
    pub token_ttl: Duration,
    /// Serve a non-loopback `listen` without users (anyone who reaches it
    /// is admin). Off: such a config refuses to load.
    #[serde(with = "Flag")]
    pub allow_unauthenticated_remote: bool,
    /// Host names (besides loopback names and IP addresses) accepted in
    /// the `Host` header.
    #[serde(with = "access::HostNames")]
    pub public_names: Vec<String>,
    /// Origins allowed to call the API from a browser (`*` for any).
    #[serde(with = "access::Origins")]
    pub cors_allowed_origins: Vec<String>,
    /// Methods allowed to those origins.
    #[serde(with = "access::Methods")]
    pub cors_allowed_methods: Vec<String>,
    /// Whether browsers may send credentials cross-origin.
    #[serde(with = "Flag")]
    pub cors_allow_credentials: bool,
    /// How long a browser may cache a preflight answer.
    #[serde(with = "Interval")]
    pub cors_max_age: Duration,
    /// Largest `POST /add` upload, in bytes; at least 1 (there is always a
    /// cap).
    #[serde(with = "AtLeastOne::<u64>")]
    pub max_upload_bytes: u64,
    /// Largest `PUT`/`PATCH /pinsets/{ns}/{name}` body, in bytes; at least 1.
    #[serde(with = "AtLeastOne::<u64>")]
    pub max_pinset_body_bytes: u64,
    /// Most `PUT`/`PATCH /pinsets/{ns}/{name}` requests served at once; at
    /// least 1 (others wait briefly, then get 503).
    #[serde(with = "AtLeastOne::<usize>")]
    pub max_concurrent_pinset_writes: usize,
    /// How long a client may take to send its request headers, and to send
    /// the next piece of an upload or document body.
    #[serde(with = "Interval")]
    pub read_timeout: Duration,
    /// Most connections served at once per listener; at least 1 (one over
    /// it waits briefly for a free one, then gets 503 and is closed).
    #[serde(with = "AtLeastOne::<usize>")]
    pub max_connections: usize,
    /// PEM certificate chain served over TLS; none serves plain HTTP. Set
    /// together with `tls_key_file`; relative to the peer directory.
    #[serde(with = "OptionalPath")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`; relative to the peer directory.
    #[serde(with = "OptionalPath")]
    pub tls_key_file: Option<PathBuf>,
    /// Serve the web dashboard under `/ui/` on this listener.
    #[serde(with = "Flag")]
    pub ui: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9094)),
            basic_auth_credentials: BTreeMap::new(),
            token_ttl: Duration::from_secs(12 * 3600),
            allow_unauthenticated_remote: false,
            public_names: Vec::new(),
            cors_allowed_origins: Vec::new(),
            cors_allowed_methods: ["GET", "POST", "PUT", "PATCH", "DELETE"]
                .map(str::to_owned)
                .to_vec(),
            cors_allow_credentials: false,
            cors_max_age: Duration::from_secs(600),
            max_upload_bytes: 16 << 30,
            max_pinset_body_bytes: 1 << 30,
            max_concurrent_pinset_writes: 2,
            read_timeout: Duration::from_secs(60),
            max_connections: 1024,
            tls_cert_file: None,
            tls_key_file: None,
            ui: true,
        }
    }
}

/// Which IPFS node a peer pins on (`ipfs.backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum IpfsBackendKind {
    /// No IPFS node: pins are tracked but never fetched (tests, dry runs).
    None,
    /// A Kubo daemon over its HTTP RPC API at `ipfs.kubo_url`.
    Kubo,
    /// An IPFS node inside the peer process (blocks under the peer
    /// directory, swarm on `ipfs.embedded_listen`): the default, so a fresh
    /// peer needs no other daemon.
    #[default]
    Embedded,
}

impl IpfsBackendKind {
    /// Every value, as written in the file.
    pub const NAMES: [&'static str; 3] = ["none", "kubo", "embedded"];

    /// The value as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Kubo => "kubo",
            Self::Embedded => "embedded",
        }
    }
}

impl fmt::Display for IpfsBackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `none`, `kubo` or `embedded`.
struct Backend;

impl Codec for Backend {
    type Field = IpfsBackendKind;

    fn read(value: &Value) -> Result<IpfsBackendKind, String> {
        match as_str(value)? {
            "none" => Ok(IpfsBackendKind::None),
            "kubo" => Ok(IpfsBackendKind::Kubo),
            "embedded" => Ok(IpfsBackendKind::Embedded),
            other => Err(unknown_message("backend", other, &IpfsBackendKind::NAMES)),
        }
    }

    fn write(field: &IpfsBackendKind) -> Value {
        Value::String(field.as_str().to_owned())
    }
}

/// `[ipfs]`. `Debug` shows `kubo_url` without its user-info (a password).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IpfsConfig {
    /// Which backend to use.
    #[serde(with = "Backend")]
    pub backend: IpfsBackendKind,
    /// Base URL of the Kubo RPC API: a checked `http` or `https` URL with a
    /// host and no trailing `/`, so `format!("{kubo_url}/api/v0/id")` works.
    #[serde(with = "KuboUrl")]
    pub kubo_url: String,
    /// Where the embedded node's swarm listens (at least one address).
    #[serde(with = "Addrs::<1>")]
    pub embedded_listen: Vec<Multiaddr>,
    /// Whether the embedded node is on the public IPFS network or in the
    /// cluster's private one. Absent from a file: private (what clusters
    /// made before it existed run); `pinfleet init` writes public.
    #[serde(with = "Swarm")]
    pub swarm: SwarmKind,
    /// Peers the public node joins the DHT through (`/p2p/` multiaddrs).
    #[serde(with = "Addrs::<0>")]
    pub bootstrap: Vec<Multiaddr>,
    /// A delegated routing endpoint (`/routing/v1`, e.g.
    /// `https://delegated-ipfs.dev`) asked for providers besides the DHT.
    #[serde(with = "OptionalUrl")]
    pub delegated_routing: Option<String>,
    /// Reserve a slot on relays and accept hole punching (public mode).
    #[serde(with = "Flag")]
    pub relay_client: bool,
    /// Only query the DHT, never answer it (Kubo's `dhtclient`): for a
    /// node others cannot dial.
    #[serde(with = "Flag")]
    pub dht_client: bool,
    /// Most connections the public node keeps (inbound plus outbound).
    #[serde(with = "AtLeastOne::<u32>")]
    pub max_connections: u32,
    /// Most bytes the embedded node stores (`None`: no limit): reported
    /// as its repo's `StorageMax` (free space = it minus what is stored),
    /// and blocks pushed to it past it are refused.
    #[serde(with = "OptionalSize")]
    pub storage_max: Option<u64>,
}

/// `ipfs.swarm`: which network the embedded node is on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SwarmKind {
    /// Only cluster members' nodes connect (the cluster secret as pnet
    /// key); content moves only inside the cluster.
    #[default]
    Private,
    /// The public IPFS network: Kubo and other nodes fetch from and serve
    /// to it, the DHT finds providers; cluster RPC stays private.
    Public,
}

impl SwarmKind {
    /// Every value, as written in the file.
    pub const NAMES: [&'static str; 2] = ["private", "public"];

    /// The value as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Public => "public",
        }
    }
}

/// `private` or `public`.
struct Swarm;

impl Codec for Swarm {
    type Field = SwarmKind;

    fn read(value: &Value) -> Result<SwarmKind, String> {
        match as_str(value)? {
            "private" => Ok(SwarmKind::Private),
            "public" => Ok(SwarmKind::Public),
            other => Err(unknown_message("swarm", other, &SwarmKind::NAMES)),
        }
    }

    fn write(field: &SwarmKind) -> Value {
        Value::String(field.as_str().to_owned())
    }
}

/// The public IPFS bootstrap peers (Kubo's default list), written by
/// `pinfleet init` for a public node.
pub const PUBLIC_BOOTSTRAP: [&str; 6] = [
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmQCU2EcMqAqQPR2i9bChDtGNJchTbq5TbXJJ16u19uLTa",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmbLHAnMoJPWSCR5Zhtx6BHJX9KiKNN6tpvbUcqanj75Nb",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmcZf59bWwK5XFi76CZX8cbJ4BhTzzA3gU1ZjYZcYW3dwt",
    "/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ",
    "/ip4/104.131.131.82/udp/4001/quic-v1/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ",
];

impl Default for IpfsConfig {
    fn default() -> Self {
        Self {
            backend: IpfsBackendKind::default(),
            kubo_url: DEFAULT_KUBO_URL.to_owned(),
            embedded_listen: vec![crate::ipfs::embedded::default_listen()],
            swarm: SwarmKind::default(),
            bootstrap: Vec::new(),
            delegated_routing: None,
            relay_client: false,
            dht_client: false,
            max_connections: 1024,
            storage_max: None,
        }
    }
}

impl fmt::Debug for IpfsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpfsConfig")
            .field("backend", &self.backend)
            .field("kubo_url", &crate::source::git::redact(&self.kubo_url))
            .field("embedded_listen", &self.embedded_listen)
            .field("swarm", &self.swarm)
            .field("bootstrap", &self.bootstrap)
            .field(
                "delegated_routing",
                &self
                    .delegated_routing
                    .as_deref()
                    .map(crate::source::git::redact),
            )
            .field("relay_client", &self.relay_client)
            .field("dht_client", &self.dht_client)
            .field("max_connections", &self.max_connections)
            .field("storage_max", &self.storage_max)
            .finish()
    }
}

const DEFAULT_KUBO_URL: &str = "http://127.0.0.1:5001";

/// `[informer]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InformerConfig {
    /// Free-form tags (`region = "eu"`) used by tag-based allocation.
    #[serde(with = "Tags")]
    pub tags: BTreeMap<String, String>,
    /// How often this peer reports its metrics (free space, pin queue,
    /// tags); they expire after two intervals.
    #[serde(with = "Interval")]
    pub interval: Duration,
}

impl Default for InformerConfig {
    fn default() -> Self {
        Self {
            tags: BTreeMap::new(),
            interval: crate::allocator::informer::InformerConfig::DEFAULT_INTERVAL,
        }
    }
}

/// `[controller]`: the GitOps controller inside the daemon. With no
/// `sources` no controller runs; otherwise only the Raft leader's acts.
/// `Debug` shows the sources without URL user-info (a git token).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControllerConfig {
    /// Sources, each `dir:PATH`, `git:URL[#ref=REF&path=SUBDIR]` or
    /// `kube[:NAMESPACE]` (PinSet objects of Kubernetes) (checked).
    #[serde(with = "Sources")]
    pub sources: Vec<String>,
    /// How often each source is re-reconciled (drift repair, git polls).
    #[serde(with = "Interval")]
    pub interval: Duration,
    /// Lift the prune guard.
    #[serde(with = "Flag")]
    pub force: bool,
    /// Cache directory of git sources; relative paths are under the peer
    /// directory.
    #[serde(with = "CacheDir")]
    pub git_cache: PathBuf,
    /// Webhook receivers `POST /hooks/{name}`: kind and name. The shared
    /// secret comes from `PINFLEET_WEBHOOK_SECRET` when the daemon starts.
    #[serde(with = "Webhooks")]
    pub webhooks: Vec<(ReceiverKind, String)>,
    /// Where the webhook receivers listen, apart from the REST API (which
    /// then serves no `/hooks/…`); `None`: on the REST listener.
    #[serde(with = "OptionalSocketAddress")]
    pub webhook_listen: Option<SocketAddr>,
}

impl fmt::Debug for ControllerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sources: Vec<String> = self
            .sources
            .iter()
            .map(|s| crate::source::redact(s))
            .collect();
        f.debug_struct("ControllerConfig")
            .field("sources", &sources)
            .field("interval", &self.interval)
            .field("force", &self.force)
            .field("git_cache", &self.git_cache)
            .field("webhooks", &self.webhooks)
            .finish()
    }
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            interval: Duration::from_secs(60),
            force: false,
            git_cache: PathBuf::from("git-cache"),
            webhooks: Vec::new(),
            webhook_listen: None,
        }
    }
}

/// `[tls]`: trust for the daemon's outgoing HTTPS (Kubo, forges, other
/// peers' APIs): the webpki roots, plus `ca_file`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    /// Extra PEM CA certificates to trust; relative to the peer directory.
    #[serde(with = "OptionalPath")]
    pub ca_file: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_password_in_the_kubo_url() {
        let ipfs = IpfsConfig {
            kubo_url: "https://pinner:s3cr3t@kubo.example:5001".into(),
            ..IpfsConfig::default()
        };
        let shown = format!("{ipfs:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("kubo.example:5001"), "{shown}");
    }
}
