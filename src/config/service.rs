//! `service.toml`: the settings every peer of a cluster shares.
//!
//! Loading is parse, override, validate, build: the file is parsed into a
//! plain TOML table, `PINFLEET_<SECTION>_<KEY>` environment variables replace
//! keys, and the table is walked against [`SCHEMA`], converting each key on
//! its own so that one load reports every problem at once, each named by its
//! key path. Nothing here starts anything; the daemon builds its components
//! from the validated [`ServiceConfig`].
//!
//! Every key except `cluster.secret` has a default; [`SCHEMA`] documents
//! each one and [`ServiceConfig::default_toml`] writes them all out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::Multiaddr;
use toml::{Table, Value};

use crate::manifest::duration::{format_duration, parse_duration};
use crate::manifest::suggest;
use crate::source::git::{Credentials, GitSource};
use crate::source::webhook::ReceiverKind;

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "PINFLEET_";

/// Every problem found while loading a service config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file being loaded.
    pub file: PathBuf,
    /// One lower-case message per problem, each starting with the key path
    /// (`consensus.heartbeat_interval: …`) or the environment variable.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    /// One line per problem, each prefixed with the file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.problems.is_empty() {
            return write!(f, "{}: invalid service config", self.file.display());
        }
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {problem}", self.file.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

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

/// The whole validated `service.toml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    /// `[cluster]`: membership, transport and replication defaults.
    pub cluster: ClusterConfig,
    /// `[consensus]`: Raft timing, snapshots and batching.
    pub consensus: ConsensusConfig,
    /// `[api]`: the REST API.
    pub api: ApiConfig,
    /// `[ipfs]`: the IPFS node this peer pins on.
    pub ipfs: IpfsConfig,
    /// `[informer]`: metrics reported for allocation.
    pub informer: InformerConfig,
    /// `[controller]`: the GitOps controller run by the Raft leader.
    pub controller: ControllerConfig,
}

/// `[cluster]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Human-readable peer name; empty when not set.
    pub peername: String,
    /// Private network key; required.
    pub secret: ClusterSecret,
    /// libp2p listen addresses; never empty.
    pub listen_multiaddress: Vec<Multiaddr>,
    /// Peers to join on start.
    pub bootstrap: Vec<Multiaddr>,
    /// Default fewest replicas per pin; -1 is every peer.
    pub replication_factor_min: i32,
    /// Default most replicas per pin; -1 is every peer.
    pub replication_factor_max: i32,
    /// How often a peer reconciles its pins with the shared state.
    pub state_sync_interval: Duration,
}

impl ClusterConfig {
    /// Defaults, with the one setting that has none.
    pub fn new(secret: ClusterSecret) -> Self {
        Self {
            peername: String::new(),
            secret,
            listen_multiaddress: vec![default_listen_multiaddress()],
            bootstrap: Vec::new(),
            replication_factor_min: -1,
            replication_factor_max: -1,
            state_sync_interval: Duration::from_secs(5 * 60),
        }
    }
}

fn default_listen_multiaddress() -> Multiaddr {
    Multiaddr::empty()
        .with(libp2p::multiaddr::Protocol::Ip4([0, 0, 0, 0].into()))
        .with(libp2p::multiaddr::Protocol::Tcp(9096))
}

/// `[consensus]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsensusConfig {
    /// Time between leader heartbeats; below `election_timeout_min`.
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomised election timeout.
    pub election_timeout_min: Duration,
    /// Upper bound of the randomised election timeout; above the minimum.
    pub election_timeout_max: Duration,
    /// Log entries since the last snapshot that trigger a new one; at least 1.
    pub snapshot_logs_since_last: u64,
    /// Log entries kept after a snapshot for lagging followers.
    pub max_in_snapshot_log_to_keep: u64,
    /// How long a write waits for commit before failing.
    pub write_timeout: Duration,
    /// Most pins in one log entry; at least 1.
    pub batch_max_pins: usize,
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
        }
    }
}

/// `[api]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiConfig {
    /// Where the REST API listens; port 0 picks a free port.
    pub listen: SocketAddr,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9094)),
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

/// `[ipfs]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpfsConfig {
    /// Which backend to use.
    pub backend: IpfsBackendKind,
    /// Base URL of the Kubo RPC API: a checked `http` or `https` URL with a
    /// host and no trailing `/`, so `format!("{kubo_url}/api/v0/id")` works.
    pub kubo_url: String,
    /// Where the embedded node's swarm listens (at least one address).
    pub embedded_listen: Vec<Multiaddr>,
}

impl Default for IpfsConfig {
    fn default() -> Self {
        Self {
            backend: IpfsBackendKind::default(),
            kubo_url: DEFAULT_KUBO_URL.to_owned(),
            embedded_listen: vec![crate::ipfs::embedded::default_listen()],
        }
    }
}

const DEFAULT_KUBO_URL: &str = "http://127.0.0.1:5001";

/// `[informer]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InformerConfig {
    /// Free-form tags (`region = "eu"`) used by tag-based allocation.
    pub tags: BTreeMap<String, String>,
}

/// `[controller]`: the GitOps controller inside the daemon. With no
/// `sources` no controller runs; otherwise only the Raft leader's acts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerConfig {
    /// Sources, each `dir:PATH` or `git:URL[#ref=REF&path=SUBDIR]` (checked).
    pub sources: Vec<String>,
    /// How often each source is re-reconciled (drift repair, git polls).
    pub interval: Duration,
    /// Lift the prune guard.
    pub force: bool,
    /// Cache directory of git sources; relative paths are under the peer
    /// directory.
    pub git_cache: PathBuf,
    /// Webhook receivers `POST /hooks/{name}`: kind and name. The shared
    /// secret comes from `PINFLEET_WEBHOOK_SECRET` when the daemon starts.
    pub webhooks: Vec<(ReceiverKind, String)>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            interval: Duration::from_secs(60),
            force: false,
            git_cache: PathBuf::from("git-cache"),
            webhooks: Vec::new(),
        }
    }
}

/// How an environment variable's text becomes a TOML value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvKind {
    /// Taken as a string.
    Text,
    /// An integer if it parses as one, otherwise a string (then reported as
    /// the wrong type).
    Integer,
    /// Comma-separated list of strings; empty means an empty list.
    List,
    /// Comma-separated `key=value` pairs.
    Tags,
    /// `true` or `false` (anything else is kept as a string, then reported
    /// as the wrong type).
    Bool,
}

/// One known key of `service.toml`.
#[derive(Clone, Copy, Debug)]
pub struct KeySpec {
    /// Name in the file (snake_case).
    pub name: &'static str,
    /// How an environment override is read.
    pub env: EnvKind,
    /// One-line description, written above the key by `default_toml`.
    pub doc: &'static str,
}

/// One known section of `service.toml`.
#[derive(Clone, Copy, Debug)]
pub struct SectionSpec {
    /// Name of the table.
    pub name: &'static str,
    /// One-line description, written above the section by `default_toml`.
    pub doc: &'static str,
    /// Its keys, in file order.
    pub keys: &'static [KeySpec],
}

const fn key(name: &'static str, env: EnvKind, doc: &'static str) -> KeySpec {
    KeySpec { name, env, doc }
}

/// Every section and key `service.toml` accepts, with its documentation.
pub const SCHEMA: &[SectionSpec] = &[
    SectionSpec {
        name: "cluster",
        doc: "Cluster membership, transport and replication defaults.",
        keys: &[
            key(
                "peername",
                EnvKind::Text,
                "Human-readable name of this peer; per peer, so usually set with PINFLEET_CLUSTER_PEERNAME.",
            ),
            key(
                "secret",
                EnvKind::Text,
                "Private network key shared by every peer: 64 hex characters (32 bytes). Required.",
            ),
            key(
                "listen_multiaddress",
                EnvKind::List,
                "libp2p multiaddrs to listen on for cluster traffic (at least one).",
            ),
            key(
                "bootstrap",
                EnvKind::List,
                "Multiaddrs of peers to join on start, usually ending in /p2p/<peer id>.",
            ),
            key(
                "replication_factor_min",
                EnvKind::Integer,
                "Default fewest peers that pin each CID: -1 (every peer) or at least 1.",
            ),
            key(
                "replication_factor_max",
                EnvKind::Integer,
                "Default most peers that pin each CID: -1 (every peer) or at least replication_factor_min.",
            ),
            key(
                "state_sync_interval",
                EnvKind::Text,
                "How often each peer checks its pins against the shared state.",
            ),
        ],
    },
    SectionSpec {
        name: "consensus",
        doc: "Raft consensus.",
        keys: &[
            key(
                "heartbeat_interval",
                EnvKind::Text,
                "Time between leader heartbeats; must be below election_timeout_min.",
            ),
            key(
                "election_timeout_min",
                EnvKind::Text,
                "Shortest wait without a heartbeat before a follower calls an election.",
            ),
            key(
                "election_timeout_max",
                EnvKind::Text,
                "Longest such wait (each wait is random between min and max); above election_timeout_min.",
            ),
            key(
                "snapshot_logs_since_last",
                EnvKind::Integer,
                "Take a state snapshot after this many log entries since the last one (at least 1).",
            ),
            key(
                "max_in_snapshot_log_to_keep",
                EnvKind::Integer,
                "Log entries kept after a snapshot so that lagging peers can catch up from the log.",
            ),
            key(
                "write_timeout",
                EnvKind::Text,
                "How long a write waits to be committed before it fails.",
            ),
            key(
                "batch_max_pins",
                EnvKind::Integer,
                "Most pins in one log entry (at least 1); larger batches ingest faster.",
            ),
        ],
    },
    SectionSpec {
        name: "api",
        doc: "REST API (IPFS Cluster compatible).",
        keys: &[key(
            "listen",
            EnvKind::Text,
            "Socket address the REST API listens on (ip:port; port 0 picks a free port).",
        )],
    },
    SectionSpec {
        name: "ipfs",
        doc: "The IPFS node this peer pins on.",
        keys: &[
            key(
                "backend",
                EnvKind::Text,
                "\"embedded\" (an IPFS node inside this peer, data under <peer dir>/ipfs), \"kubo\" (Kubo HTTP RPC at kubo_url) or \"none\" (track pins without an IPFS node).",
            ),
            key(
                "kubo_url",
                EnvKind::Text,
                "Base URL of the Kubo RPC API, used when backend = \"kubo\".",
            ),
            key(
                "embedded_listen",
                EnvKind::List,
                "Multiaddrs the embedded node's swarm listens on, used when backend = \"embedded\"; other peers' nodes must reach one (e.g. /ip4/0.0.0.0/tcp/4001 across machines).",
            ),
        ],
    },
    SectionSpec {
        name: "informer",
        doc: "Metrics this peer reports for allocation.",
        keys: &[key(
            "tags",
            EnvKind::Tags,
            "Free-form string tags for tag-based allocation, e.g. { region = \"eu\", group = \"a\" }.",
        )],
    },
    SectionSpec {
        name: "controller",
        doc: "GitOps controller; runs when sources are listed, and only the Raft leader's acts.",
        keys: &[
            key(
                "sources",
                EnvKind::List,
                "Manifest sources: \"dir:PATH\" or \"git:URL#ref=REF&path=SUBDIR\"; empty runs no controller.",
            ),
            key(
                "interval",
                EnvKind::Text,
                "How often each source is re-reconciled (drift repair) and git sources polled.",
            ),
            key(
                "force",
                EnvKind::Bool,
                "Lift the prune guard (releasing more than half a PinSet, or a whole one).",
            ),
            key(
                "git_cache",
                EnvKind::Text,
                "Cache directory of git sources; a relative path is under the peer directory.",
            ),
            key(
                "webhooks",
                EnvKind::List,
                "Webhook receivers \"KIND:NAME\" (github, gitlab, generic) at POST /hooks/NAME; secret from PINFLEET_WEBHOOK_SECRET.",
            ),
        ],
    },
];

impl ServiceConfig {
    /// Every default, with the one setting that has none.
    pub fn new(secret: ClusterSecret) -> Self {
        Self {
            cluster: ClusterConfig::new(secret),
            consensus: ConsensusConfig::default(),
            api: ApiConfig::default(),
            ipfs: IpfsConfig::default(),
            informer: InformerConfig::default(),
            controller: ControllerConfig::default(),
        }
    }

    /// Loads `path` with overrides from the process environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, &process_env())
    }

    /// Loads `path` with overrides from `env` (name, value) pairs; only
    /// names starting with `PINFLEET_` are looked at.
    pub fn load_with_env(path: &Path, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            problems: vec![format!("cannot read file: {e}")],
        })?;
        Self::from_toml_str(&text, path, env)
    }

    /// Parses `text` as the contents of `file` (used in errors only), applies
    /// `env` overrides and validates everything, reporting every problem.
    pub fn from_toml_str(
        text: &str,
        file: &Path,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let fail = |problems| ConfigError {
            file: file.to_path_buf(),
            problems,
        };
        let mut table: Table = text
            .parse()
            .map_err(|e| fail(vec![toml_problem(text, &e)]))?;
        let mut walk = Walk::default();
        walk.check_names(&table);
        walk.apply_env(&mut table, env);
        let config = walk.build(&table);
        if walk.problems.is_empty() {
            Ok(config)
        } else {
            Err(fail(walk.problems))
        }
    }

    /// The full file with every key set to its default and `secret_hex`
    /// written as is (not checked here), each key with a comment above it.
    /// Loading it back gives `ServiceConfig::new(secret)`.
    pub fn default_toml(secret_hex: &str) -> String {
        Self::new(ClusterSecret::from_bytes([0; 32])).render(secret_hex)
    }

    /// This config as a commented file, every key written out.
    pub fn to_toml(&self) -> String {
        self.render(&self.cluster.secret.to_hex())
    }

    fn render(&self, secret_hex: &str) -> String {
        let c = &self.cluster;
        let k = &self.consensus;
        let values: BTreeMap<(&str, &str), String> = [
            (("cluster", "peername"), toml_string(&c.peername)),
            (("cluster", "secret"), toml_string(secret_hex)),
            (
                ("cluster", "listen_multiaddress"),
                toml_list(&c.listen_multiaddress),
            ),
            (("cluster", "bootstrap"), toml_list(&c.bootstrap)),
            (
                ("cluster", "replication_factor_min"),
                c.replication_factor_min.to_string(),
            ),
            (
                ("cluster", "replication_factor_max"),
                c.replication_factor_max.to_string(),
            ),
            (
                ("cluster", "state_sync_interval"),
                toml_duration(c.state_sync_interval),
            ),
            (
                ("consensus", "heartbeat_interval"),
                toml_duration(k.heartbeat_interval),
            ),
            (
                ("consensus", "election_timeout_min"),
                toml_duration(k.election_timeout_min),
            ),
            (
                ("consensus", "election_timeout_max"),
                toml_duration(k.election_timeout_max),
            ),
            (
                ("consensus", "snapshot_logs_since_last"),
                k.snapshot_logs_since_last.to_string(),
            ),
            (
                ("consensus", "max_in_snapshot_log_to_keep"),
                k.max_in_snapshot_log_to_keep.to_string(),
            ),
            (
                ("consensus", "write_timeout"),
                toml_duration(k.write_timeout),
            ),
            (
                ("consensus", "batch_max_pins"),
                k.batch_max_pins.to_string(),
            ),
            (("api", "listen"), toml_string(&self.api.listen.to_string())),
            (("ipfs", "backend"), toml_string(self.ipfs.backend.as_str())),
            (("ipfs", "kubo_url"), toml_string(&self.ipfs.kubo_url)),
            (
                ("ipfs", "embedded_listen"),
                toml_list(&self.ipfs.embedded_listen),
            ),
            (("informer", "tags"), toml_tags(&self.informer.tags)),
            (
                ("controller", "sources"),
                toml_strings(self.controller.sources.iter().map(String::as_str)),
            ),
            (
                ("controller", "interval"),
                toml_duration(self.controller.interval),
            ),
            (("controller", "force"), self.controller.force.to_string()),
            (
                ("controller", "git_cache"),
                toml_string(&self.controller.git_cache.to_string_lossy()),
            ),
            (
                ("controller", "webhooks"),
                toml_strings(
                    self.controller
                        .webhooks
                        .iter()
                        .map(|(k, n)| format!("{}:{n}", receiver_kind_name(*k)))
                        .collect::<Vec<_>>()
                        .iter()
                        .map(String::as_str),
                ),
            ),
        ]
        .into_iter()
        .collect();

        let mut out = String::from(
            "# pinfleet service configuration, shared by every peer of a cluster.\n\
             # Every key but cluster.secret is optional; the values below are the defaults.\n\
             # Any key can be overridden by an environment variable PINFLEET_<SECTION>_<KEY>,\n\
             # e.g. PINFLEET_API_LISTEN=127.0.0.1:0 (lists comma-separated, tags as k=v,k=v).\n\
             # Durations are Go-style: 250ms, 30s, 5m, 1h30m.\n",
        );
        for section in SCHEMA {
            out.push_str(&format!("\n# {}\n[{}]\n", section.doc, section.name));
            for key in section.keys {
                let value = values
                    .get(&(section.name, key.name))
                    .map_or("\"\"", String::as_str);
                out.push_str(&format!("# {}\n{} = {value}\n", key.doc, key.name));
            }
        }
        out
    }
}

/// The `PINFLEET_*` variables of this process (others, and any that are not
/// valid UTF-8, are left out).
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect()
}

/// The environment variable that overrides `section.key`.
pub fn env_var_name(section: &str, key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}_{}",
        section.to_ascii_uppercase(),
        key.to_ascii_uppercase()
    )
}

fn toml_problem(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', "; ");
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("invalid toml at line {line}, column {col}: {message}")
        }
        None => format!("invalid toml: {message}"),
    }
}

fn toml_string(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

fn toml_strings<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<String> = items.map(toml_string).collect();
    format!("[{}]", items.join(", "))
}

fn toml_list(addrs: &[Multiaddr]) -> String {
    let items: Vec<String> = addrs.iter().map(|a| toml_string(&a.to_string())).collect();
    format!("[{}]", items.join(", "))
}

/// Durations written the short way users write them (`5m`, not `5m0s`).
fn toml_duration(d: Duration) -> String {
    let mut s = format_duration(d);
    if s.ends_with("m0s") {
        s.truncate(s.len() - 2);
    }
    if s.ends_with("h0m") {
        s.truncate(s.len() - 2);
    }
    toml_string(&s)
}

fn toml_tags(tags: &BTreeMap<String, String>) -> String {
    if tags.is_empty() {
        return "{}".into();
    }
    let items: Vec<String> = tags
        .iter()
        .map(|(k, v)| format!("{} = {}", toml_key(k), toml_string(v)))
        .collect();
    format!("{{ {} }}", items.join(", "))
}

fn toml_key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare { k.to_owned() } else { toml_string(k) }
}

/// One load's bookkeeping: problems so far, keys that failed to convert (so
/// that cross-key checks stay quiet about them) and keys set by environment
/// variables (so that problems name the variable).
#[derive(Default)]
struct Walk {
    problems: Vec<String>,
    failed: BTreeSet<String>,
    from_env: BTreeMap<String, String>,
}

impl Walk {
    /// Unknown sections and keys, and sections that are not tables.
    fn check_names(&mut self, table: &Table) {
        let section_names: Vec<&str> = SCHEMA.iter().map(|s| s.name).collect();
        for (name, value) in table {
            let Some(section) = SCHEMA.iter().find(|s| s.name == name) else {
                // A key written above every section header lands at the top.
                let owner = SCHEMA
                    .iter()
                    .find(|s| s.keys.iter().any(|k| k.name == name));
                let message = match owner {
                    Some(s) if !value.is_table() => format!(
                        "{name}: keys belong in a section, did you mean {}.{name} (under [{}])?",
                        s.name, s.name
                    ),
                    _ => format!(
                        "{name}: {}",
                        unknown_message("section", name, &section_names)
                    ),
                };
                self.problems.push(message);
                continue;
            };
            let Some(keys) = value.as_table() else {
                self.problems.push(format!(
                    "{name}: expected a table ([{name}]), found {}",
                    describe(value)
                ));
                self.failed.insert(name.clone());
                continue;
            };
            let key_names: Vec<&str> = section.keys.iter().map(|k| k.name).collect();
            for key in keys.keys() {
                if !key_names.contains(&key.as_str()) {
                    let message = unknown_message("key", key, &key_names);
                    self.problems.push(format!("{name}.{key}: {message}"));
                }
            }
        }
    }

    /// Replaces keys from `PINFLEET_<SECTION>_<KEY>` variables.
    fn apply_env(&mut self, table: &mut Table, env: &[(String, String)]) {
        let mut env: Vec<&(String, String)> = env.iter().collect();
        env.sort();
        for (var, text) in env {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            // Other PINFLEET_* variables (PINFLEET_BENCH_PINS, CLI options)
            // are not ours; only a known section prefix claims a variable.
            let Some((section, key_upper)) = SCHEMA.iter().find_map(|s| {
                let upper = s.name.to_ascii_uppercase();
                let key = rest.strip_prefix(&upper)?.strip_prefix('_')?;
                Some((s, key))
            }) else {
                continue;
            };
            let key_name = key_upper.to_ascii_lowercase();
            let Some(spec) = section.keys.iter().find(|k| k.name == key_name) else {
                let names: Vec<&str> = section.keys.iter().map(|k| k.name).collect();
                let hint = match suggest(&key_name, &names) {
                    Some(s) => format!(", did you mean {}?", env_var_name(section.name, s)),
                    None => format!(
                        ", expected one of: {}",
                        names
                            .iter()
                            .map(|k| env_var_name(section.name, k))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                self.problems.push(format!(
                    "{var}: unknown key {key_name:?} in [{}]{hint}",
                    section.name
                ));
                continue;
            };
            let value = match env_value(spec.env, text) {
                Ok(v) => v,
                Err(e) => {
                    self.problems.push(format!("{var}: {e}"));
                    self.failed
                        .insert(format!("{}.{}", section.name, spec.name));
                    continue;
                }
            };
            let slot = table
                .entry(section.name)
                .or_insert_with(|| Value::Table(Table::new()));
            // A section that is not a table was reported already.
            if let Some(keys) = slot.as_table_mut() {
                keys.insert(spec.name.to_owned(), value);
                self.from_env
                    .insert(format!("{}.{}", section.name, spec.name), var.clone());
            }
        }
    }

    fn section<'t>(&mut self, table: &'t Table, name: &'static str) -> Section<'_, 't> {
        Section {
            name,
            table: table.get(name).and_then(Value::as_table),
            walk: self,
        }
    }

    fn build(&mut self, table: &Table) -> ServiceConfig {
        let mut cfg = ServiceConfig::new(ClusterSecret::from_bytes([0; 32]));

        let mut s = self.section(table, "cluster");
        let c = &mut cfg.cluster;
        s.set("peername", &mut c.peername, string);
        let mut secret = None;
        s.set("secret", &mut secret, |v| {
            ClusterSecret::parse_hex(as_str(v)?).map(Some)
        });
        match secret {
            Some(secret) => c.secret = secret,
            None if !s.failed("secret") => s.problem(
                "secret",
                "missing: set it to 64 hex characters (32 bytes), the same on every peer \
                 (`pinfleet init` writes a fresh one), or set PINFLEET_CLUSTER_SECRET"
                    .into(),
            ),
            None => {}
        }
        s.set("listen_multiaddress", &mut c.listen_multiaddress, |v| {
            let addrs = multiaddrs(v)?;
            if addrs.is_empty() {
                return Err("must list at least one address".into());
            }
            Ok(addrs)
        });
        s.set("bootstrap", &mut c.bootstrap, multiaddrs);
        s.set(
            "replication_factor_min",
            &mut c.replication_factor_min,
            integer,
        );
        s.set(
            "replication_factor_max",
            &mut c.replication_factor_max,
            integer,
        );
        s.set("state_sync_interval", &mut c.state_sync_interval, |v| {
            positive(duration(v)?)
        });
        if !s.failed("replication_factor_min") && !s.failed("replication_factor_max") {
            let (min, max) = (c.replication_factor_min, c.replication_factor_max);
            if let Some(p) = replication_problem(min, max) {
                s.problem("replication_factor_min", p);
            }
        }

        let mut s = self.section(table, "consensus");
        let k = &mut cfg.consensus;
        s.set("heartbeat_interval", &mut k.heartbeat_interval, |v| {
            at_least_a_millisecond(duration(v)?)
        });
        s.set("election_timeout_min", &mut k.election_timeout_min, |v| {
            at_least_a_millisecond(duration(v)?)
        });
        s.set("election_timeout_max", &mut k.election_timeout_max, |v| {
            at_least_a_millisecond(duration(v)?)
        });
        s.set(
            "snapshot_logs_since_last",
            &mut k.snapshot_logs_since_last,
            |v| at_least_one(integer(v)?),
        );
        s.set(
            "max_in_snapshot_log_to_keep",
            &mut k.max_in_snapshot_log_to_keep,
            integer,
        );
        s.set("write_timeout", &mut k.write_timeout, |v| {
            positive(duration(v)?)
        });
        s.set("batch_max_pins", &mut k.batch_max_pins, |v| {
            at_least_one(integer(v)?)
        });
        if !s.failed("heartbeat_interval")
            && !s.failed("election_timeout_min")
            && k.heartbeat_interval >= k.election_timeout_min
        {
            s.problem(
                "heartbeat_interval",
                format!(
                    "{} must be below election_timeout_min ({})",
                    format_duration(k.heartbeat_interval),
                    format_duration(k.election_timeout_min)
                ),
            );
        }
        if !s.failed("election_timeout_min")
            && !s.failed("election_timeout_max")
            && k.election_timeout_min >= k.election_timeout_max
        {
            s.problem(
                "election_timeout_max",
                format!(
                    "{} must be above election_timeout_min ({})",
                    format_duration(k.election_timeout_max),
                    format_duration(k.election_timeout_min)
                ),
            );
        }

        let mut s = self.section(table, "api");
        s.set("listen", &mut cfg.api.listen, |v| {
            let text = as_str(v)?;
            text.trim().parse::<SocketAddr>().map_err(|_| {
                format!("invalid socket address {text:?}: expected ip:port, e.g. 127.0.0.1:9094")
            })
        });

        let mut s = self.section(table, "ipfs");
        s.set("backend", &mut cfg.ipfs.backend, |v| {
            let text = as_str(v)?;
            match text {
                "none" => Ok(IpfsBackendKind::None),
                "kubo" => Ok(IpfsBackendKind::Kubo),
                "embedded" => Ok(IpfsBackendKind::Embedded),
                other => Err(unknown_message("backend", other, &IpfsBackendKind::NAMES)),
            }
        });
        s.set("kubo_url", &mut cfg.ipfs.kubo_url, kubo_url);
        s.set("embedded_listen", &mut cfg.ipfs.embedded_listen, |v| {
            let addrs = multiaddrs(v)?;
            if addrs.is_empty() {
                return Err("must list at least one address".into());
            }
            Ok(addrs)
        });

        let mut s = self.section(table, "informer");
        s.set("tags", &mut cfg.informer.tags, tags);

        let mut s = self.section(table, "controller");
        let c = &mut cfg.controller;
        s.set("sources", &mut c.sources, |v| {
            each_string(v, "source strings", check_source)
        });
        s.set("interval", &mut c.interval, |v| positive(duration(v)?));
        s.set("force", &mut c.force, |v| {
            v.as_bool()
                .ok_or_else(|| format!("expected a boolean, found {}", describe(v)))
        });
        s.set("git_cache", &mut c.git_cache, |v| {
            let text = as_str(v)?;
            if text.trim().is_empty() {
                return Err("must not be empty".into());
            }
            Ok(PathBuf::from(text))
        });
        s.set("webhooks", &mut c.webhooks, |v| {
            each_string(v, "\"KIND:NAME\" strings", parse_webhook)
        });

        cfg
    }
}

/// One section being read.
struct Section<'w, 't> {
    name: &'static str,
    table: Option<&'t Table>,
    walk: &'w mut Walk,
}

impl Section<'_, '_> {
    fn path(&self, key: &str) -> String {
        format!("{}.{key}", self.name)
    }

    /// `section.key`, plus the variable that set it, if one did.
    fn label(&self, key: &str) -> String {
        let path = self.path(key);
        match self.walk.from_env.get(&path) {
            Some(var) => format!("{path} (from {var})"),
            None => path,
        }
    }

    fn problem(&mut self, key: &str, message: String) {
        let label = self.label(key);
        self.walk.problems.push(format!("{label}: {message}"));
        self.walk.failed.insert(self.path(key));
    }

    fn failed(&self, key: &str) -> bool {
        self.walk.failed.contains(&self.path(key)) || self.walk.failed.contains(self.name)
    }

    /// Converts `key` into `slot` if present; a bad value is reported and
    /// leaves the default in place.
    fn set<T>(
        &mut self,
        key: &str,
        slot: &mut T,
        convert: impl FnOnce(&Value) -> Result<T, String>,
    ) {
        let Some(value) = self.table.and_then(|t| t.get(key)) else {
            return;
        };
        match convert(value) {
            Ok(v) => *slot = v,
            Err(message) => self.problem(key, message),
        }
    }
}

fn unknown_message(what: &str, got: &str, expected: &[&str]) -> String {
    match suggest(got, expected) {
        Some(s) => format!("unknown {what} {got:?}, did you mean {s:?}?"),
        None => format!(
            "unknown {what} {got:?}, expected one of: {}",
            expected.join(", ")
        ),
    }
}

/// The type of a value, and the value itself when it is short and scalar.
fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("string {s:?}"),
        Value::Integer(i) => format!("integer {i}"),
        Value::Float(f) => format!("float {f}"),
        Value::Boolean(b) => format!("boolean {b}"),
        Value::Datetime(d) => format!("datetime {d}"),
        Value::Array(_) => "an array".into(),
        Value::Table(_) => "a table".into(),
    }
}

/// Type errors for `secret` must not echo it; strings are never a type error
/// for it, so `describe` is only reached for other types.
fn as_str(v: &Value) -> Result<&str, String> {
    v.as_str()
        .ok_or_else(|| format!("expected a string, found {}", describe(v)))
}

fn string(v: &Value) -> Result<String, String> {
    as_str(v).map(str::to_owned)
}

fn integer<T: TryFrom<i64>>(v: &Value) -> Result<T, String> {
    let Some(i) = v.as_integer() else {
        return Err(format!("expected an integer, found {}", describe(v)));
    };
    T::try_from(i).map_err(|_| {
        let unsigned = T::try_from(-1).is_err();
        if unsigned && i < 0 {
            format!("{i} is negative; expected 0 or more")
        } else {
            format!("{i} is out of range")
        }
    })
}

fn at_least_one<T: PartialOrd + From<u8> + fmt::Display>(n: T) -> Result<T, String> {
    if n < T::from(1) {
        return Err(format!("{n} is too small; expected at least 1"));
    }
    Ok(n)
}

fn duration(v: &Value) -> Result<Duration, String> {
    let Some(text) = v.as_str() else {
        return Err(format!(
            "expected a duration string like \"30s\", found {}",
            describe(v)
        ));
    };
    parse_duration(text)
}

fn positive(d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        return Err("must be longer than 0s".into());
    }
    Ok(d)
}

/// Raft timings are whole milliseconds in openraft.
fn at_least_a_millisecond(d: Duration) -> Result<Duration, String> {
    if d < Duration::from_millis(1) {
        return Err(format!(
            "{} is too short; expected at least 1ms",
            format_duration(d)
        ));
    }
    Ok(d)
}

/// One string or a list of strings, each a multiaddr; every bad item is
/// named in the one message.
fn multiaddrs(v: &Value) -> Result<Vec<Multiaddr>, String> {
    let items: Vec<&Value> = match v {
        Value::String(_) => vec![v],
        Value::Array(a) => a.iter().collect(),
        other => {
            return Err(format!(
                "expected a list of multiaddr strings, found {}",
                describe(other)
            ));
        }
    };
    let mut addrs = Vec::with_capacity(items.len());
    let mut bad = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match item.as_str() {
            Some(text) => match text.trim().parse::<Multiaddr>() {
                Ok(a) => addrs.push(a),
                Err(e) => bad.push(format!("[{i}]: invalid multiaddr {text:?}: {e}")),
            },
            None => bad.push(format!(
                "[{i}]: expected a string, found {}",
                describe(item)
            )),
        }
    }
    if bad.is_empty() {
        Ok(addrs)
    } else {
        Err(bad.join("; "))
    }
}

/// A list of strings (or one string), each converted by `convert`; every
/// bad item is named in the one message.
fn each_string<T>(
    v: &Value,
    what: &str,
    convert: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let items: Vec<&Value> = match v {
        Value::String(_) => vec![v],
        Value::Array(a) => a.iter().collect(),
        other => {
            return Err(format!(
                "expected a list of {what}, found {}",
                describe(other)
            ));
        }
    };
    let mut out = Vec::with_capacity(items.len());
    let mut bad = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match item.as_str() {
            Some(text) => match convert(text.trim()) {
                Ok(t) => out.push(t),
                Err(e) => bad.push(format!("[{i}]: {e}")),
            },
            None => bad.push(format!(
                "[{i}]: expected a string, found {}",
                describe(item)
            )),
        }
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(bad.join("; "))
    }
}

/// `dir:PATH` (non-empty) or `git:SPEC` (parsed as the controller does, so
/// a bad query key is caught at load). Credentials never reach the message.
fn check_source(text: &str) -> Result<String, String> {
    if let Some(path) = text.strip_prefix("dir:") {
        if path.is_empty() {
            return Err("dir: source has an empty path".into());
        }
    } else if let Some(spec) = text.strip_prefix("git:") {
        GitSource::parse(
            spec,
            Path::new(""),
            Credentials::default(),
            crate::manifest::Limits::default(),
        )
        .map_err(|e| e.to_string())?;
    } else {
        return Err(format!(
            "unsupported source {:?}: expected dir:PATH or git:URL[#ref=REF&path=SUBDIR]",
            crate::source::git::redact(text)
        ));
    }
    Ok(text.to_owned())
}

/// `KIND:NAME`, KIND one of github, gitlab, generic; NAME of letters,
/// digits, `-` and `_`.
fn parse_webhook(text: &str) -> Result<(ReceiverKind, String), String> {
    let (kind, name) = text
        .split_once(':')
        .ok_or_else(|| format!("expected KIND:NAME, got {text:?}"))?;
    let kind = match kind {
        "github" => ReceiverKind::GitHub,
        "gitlab" => ReceiverKind::GitLab,
        "generic" => ReceiverKind::Generic,
        other => {
            return Err(unknown_message(
                "webhook kind",
                other,
                &["github", "gitlab", "generic"],
            ));
        }
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "invalid webhook name {name:?}: letters, digits, '-' and '_'"
        ));
    }
    Ok((kind, name.to_owned()))
}

fn receiver_kind_name(kind: ReceiverKind) -> &'static str {
    match kind {
        ReceiverKind::GitHub => "github",
        ReceiverKind::GitLab => "gitlab",
        ReceiverKind::Generic => "generic",
    }
}

fn kubo_url(v: &Value) -> Result<String, String> {
    let text = as_str(v)?;
    let url = reqwest::Url::parse(text.trim()).map_err(|e| format!("invalid url {text:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(format!(
            "invalid url {text:?}: expected http://host:port or https://host:port"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "invalid url {text:?}: a base url has no query or fragment"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn tags(v: &Value) -> Result<BTreeMap<String, String>, String> {
    let Some(table) = v.as_table() else {
        return Err(format!(
            "expected a table of strings like {{ region = \"eu\" }}, found {}",
            describe(v)
        ));
    };
    let mut tags = BTreeMap::new();
    let mut bad = Vec::new();
    for (k, v) in table {
        match v.as_str() {
            Some(s) => {
                tags.insert(k.clone(), s.to_owned());
            }
            None => bad.push(format!("{k}: expected a string, found {}", describe(v))),
        }
    }
    if bad.is_empty() {
        Ok(tags)
    } else {
        Err(bad.join("; "))
    }
}

/// The manifest's rule (DESIGN §5), so a cluster default is always a valid
/// pin option: each is -1 or at least 1, min -1 needs max -1, min ≤ max.
fn replication_problem(min: i32, max: i32) -> Option<String> {
    let valid = |n: i32| n == -1 || n >= 1;
    if !valid(min) || !valid(max) {
        Some(format!(
            "min {min} / max {max}: each must be -1 (every peer) or at least 1"
        ))
    } else if min == -1 && max != -1 {
        Some(format!(
            "min -1 (every peer) needs replication_factor_max -1 too, found {max}"
        ))
    } else if max != -1 && min > max {
        Some(format!(
            "{min} is greater than replication_factor_max ({max})"
        ))
    } else {
        None
    }
}

/// Turns an environment variable's text into the TOML value it stands for.
fn env_value(kind: EnvKind, text: &str) -> Result<Value, String> {
    let items = || {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Ok(match kind {
        EnvKind::Text => Value::String(text.to_owned()),
        EnvKind::Integer => match text.trim().parse::<i64>() {
            Ok(i) => Value::Integer(i),
            Err(_) => Value::String(text.to_owned()),
        },
        EnvKind::List => Value::Array(items().map(Value::String).collect()),
        EnvKind::Bool => match text.trim() {
            "true" => Value::Boolean(true),
            "false" => Value::Boolean(false),
            other => Value::String(other.to_owned()),
        },
        EnvKind::Tags => {
            let mut table = Table::new();
            for item in items() {
                match item.split_once('=') {
                    Some((k, v)) if !k.trim().is_empty() => {
                        table.insert(k.trim().to_owned(), Value::String(v.trim().to_owned()));
                    }
                    _ => return Err(format!("invalid tag {item:?}: expected key=value")),
                }
            }
            Value::Table(table)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn file() -> &'static Path {
        Path::new("service.toml")
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn parse(text: &str) -> Result<ServiceConfig, ConfigError> {
        ServiceConfig::from_toml_str(text, file(), &[])
    }

    fn minimal() -> String {
        format!("[cluster]\nsecret = \"{SECRET}\"\n")
    }

    fn problems(text: &str, vars: &[(&str, &str)]) -> Vec<String> {
        ServiceConfig::from_toml_str(text, file(), &env(vars))
            .unwrap_err()
            .problems
    }

    fn secret() -> ClusterSecret {
        ClusterSecret::parse_hex(SECRET).unwrap()
    }

    #[test]
    fn default_toml_parses_back_to_the_defaults() {
        let text = ServiceConfig::default_toml(SECRET);
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed, ServiceConfig::new(secret()));
        // And the documented defaults are what the brief promises.
        assert_eq!(parsed.cluster.state_sync_interval, Duration::from_secs(300));
        assert_eq!(
            parsed.cluster.listen_multiaddress,
            vec!["/ip4/0.0.0.0/tcp/9096".parse::<Multiaddr>().unwrap()]
        );
        assert_eq!(parsed.api.listen, "127.0.0.1:9094".parse().unwrap());
        assert_eq!(parsed.ipfs.kubo_url, "http://127.0.0.1:5001");
        assert_eq!(parsed.cluster.secret.bytes()[..2], [0x00, 0x11]);
        assert!(text.contains("state_sync_interval = \"5m\""), "{text}");
        assert!(text.contains("heartbeat_interval = \"250ms\""), "{text}");
    }

    #[test]
    fn every_key_is_written_with_a_comment_above_it() {
        let text = ServiceConfig::default_toml(SECRET);
        let lines: Vec<&str> = text.lines().collect();
        for section in SCHEMA {
            assert!(lines.contains(&format!("[{}]", section.name).as_str()));
            for key in section.keys {
                let at = lines
                    .iter()
                    .position(|l| l.starts_with(&format!("{} = ", key.name)))
                    .unwrap_or_else(|| panic!("{} missing", key.name));
                assert!(lines[at - 1].starts_with("# "), "{}", key.name);
            }
        }
    }

    #[test]
    fn minimal_file_gets_every_default() {
        assert_eq!(parse(&minimal()).unwrap(), ServiceConfig::new(secret()));
    }

    #[test]
    fn a_changed_config_round_trips_through_to_toml() {
        let mut cfg = ServiceConfig::new(ClusterSecret::random());
        cfg.cluster.peername = "peer \"one\"".into();
        cfg.cluster.bootstrap = vec![
            "/ip4/10.0.0.1/tcp/9096".parse().unwrap(),
            "/dns4/a.example/tcp/9096".parse().unwrap(),
        ];
        cfg.cluster.replication_factor_min = 2;
        cfg.cluster.replication_factor_max = 3;
        cfg.cluster.state_sync_interval = Duration::from_secs(5400);
        cfg.consensus.write_timeout = Duration::from_millis(1500);
        cfg.api.listen = "[::1]:0".parse().unwrap();
        cfg.ipfs.backend = IpfsBackendKind::Kubo;
        cfg.ipfs.kubo_url = "https://kubo.example:5001/prefix".into();
        cfg.informer.tags = [("region", "eu"), ("odd key", "x=y")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(parse(&cfg.to_toml()).unwrap(), cfg);
    }

    #[test]
    fn reports_every_problem_at_once() {
        let text = format!(
            "{}listen_multiaddress = [\"/ip4/0.0.0.0/tcp/9096\", \"nope\"]\n\
             [consensus]\nheartbeat_interval = \"x\"\n\
             [api]\nlisten = \"localhost\"\n",
            minimal()
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
        assert_eq!(err.to_string().lines().count(), 3);
        let text = err.to_string();
        assert!(
            text.contains(
                "service.toml: cluster.listen_multiaddress: [1]: invalid multiaddr \"nope\""
            ),
            "{text}"
        );
        assert!(
            text.contains("service.toml: consensus.heartbeat_interval: invalid duration \"x\""),
            "{text}"
        );
        assert!(
            text.contains("service.toml: api.listen: invalid socket address \"localhost\""),
            "{text}"
        );
    }

    #[test]
    fn unknown_keys_and_sections_get_a_suggestion() {
        let text = format!(
            "peername = \"a\"\n{}listen_multiadress = []\n[consensos]\n[api]\nlisen = \"x\"\n",
            minimal()
        );
        let p = problems(&text, &[]);
        assert_eq!(p.len(), 4, "{p:#?}");
        assert!(p.contains(&"peername: keys belong in a section, did you mean cluster.peername (under [cluster])?".to_owned()), "{p:#?}");
        assert!(p.contains(&"cluster.listen_multiadress: unknown key \"listen_multiadress\", did you mean \"listen_multiaddress\"?".to_owned()), "{p:#?}");
        assert!(
            p.contains(
                &"consensos: unknown section \"consensos\", did you mean \"consensus\"?".to_owned()
            ),
            "{p:#?}"
        );
        assert!(
            p.contains(&"api.lisen: unknown key \"lisen\", did you mean \"listen\"?".to_owned()),
            "{p:#?}"
        );
    }

    #[test]
    fn wrong_types_are_named() {
        let text = "cluster = 3\n\
                    [consensus]\n\
                    batch_max_pins = \"many\"\n\
                    snapshot_logs_since_last = -1\n\
                    write_timeout = 30\n\
                    [informer]\n\
                    tags = { region = 1 }\n";
        let p = problems(text, &[]);
        assert_eq!(
            p,
            [
                "cluster: expected a table ([cluster]), found integer 3",
                "consensus.snapshot_logs_since_last: -1 is negative; expected 0 or more",
                "consensus.write_timeout: expected a duration string like \"30s\", found integer 30",
                "consensus.batch_max_pins: expected an integer, found string \"many\"",
                "informer.tags: region: expected a string, found integer 1",
            ]
        );
    }

    #[test]
    fn missing_secret_is_an_error() {
        let p = problems("", &[]);
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("cluster.secret: missing"), "{p:?}");
    }

    #[test]
    fn bad_secrets_are_rejected_without_echoing_them() {
        for (bad, why) in [
            ("abc123", "found 6 characters"),
            (&"zz".repeat(32), "non-hex"),
            (&"0".repeat(66), "found 66 characters"),
        ] {
            let p = problems(&format!("[cluster]\nsecret = \"{bad}\"\n"), &[]);
            assert_eq!(p.len(), 1);
            assert!(p[0].starts_with("cluster.secret: expected 64 hex"), "{p:?}");
            assert!(p[0].contains(why), "{p:?}");
            assert!(!p[0].contains(bad), "{p:?}");
        }
        let p = problems("[cluster]\nsecret = 7\n", &[]);
        assert_eq!(p, ["cluster.secret: expected a string, found integer 7"]);
        assert_eq!(format!("{:?}", secret()), "ClusterSecret(..)");
    }

    #[test]
    fn cross_key_rules() {
        let text = format!(
            "{}replication_factor_min = 3\nreplication_factor_max = 2\n\
             [consensus]\nheartbeat_interval = \"1s\"\nelection_timeout_min = \"1s\"\nelection_timeout_max = \"500ms\"\n",
            minimal()
        );
        let p = problems(&text, &[]);
        assert_eq!(
            p,
            [
                "cluster.replication_factor_min: 3 is greater than replication_factor_max (2)",
                "consensus.heartbeat_interval: 1s must be below election_timeout_min (1s)",
                "consensus.election_timeout_max: 500ms must be above election_timeout_min (1s)",
            ]
        );
        // A broken key does not also trip the rules that depend on it.
        let text = format!(
            "{}[consensus]\nelection_timeout_min = \"soon\"\n",
            minimal()
        );
        assert_eq!(problems(&text, &[]).len(), 1);
        for (min, max, ok) in [
            (-1, -1, true),
            (2, -1, true),
            (1, 1, true),
            (-1, 2, false),
            (0, 0, false),
        ] {
            let text = format!(
                "{}replication_factor_min = {min}\nreplication_factor_max = {max}\n",
                minimal()
            );
            assert_eq!(parse(&text).is_ok(), ok, "{min}/{max}");
        }
    }

    #[test]
    fn env_overrides_are_applied() {
        let vars = [
            ("PINFLEET_API_LISTEN", "127.0.0.1:0"),
            (
                "PINFLEET_CLUSTER_BOOTSTRAP",
                "/ip4/10.0.0.1/tcp/9096, /ip4/10.0.0.2/tcp/9096",
            ),
            ("PINFLEET_CLUSTER_REPLICATION_FACTOR_MIN", "2"),
            ("PINFLEET_CLUSTER_REPLICATION_FACTOR_MAX", "3"),
            ("PINFLEET_CLUSTER_PEERNAME", "peer-1"),
            ("PINFLEET_CONSENSUS_WRITE_TIMEOUT", "1m"),
            ("PINFLEET_INFORMER_TAGS", "region=eu,group=a"),
            ("PINFLEET_IPFS_BACKEND", "kubo"),
            // Not ours: no known section.
            ("PINFLEET_BENCH_PINS", "10"),
            ("HOME", "/root"),
        ];
        let text = format!("{}[api]\nlisten = \"127.0.0.1:9999\"\n", minimal());
        let cfg = ServiceConfig::from_toml_str(&text, file(), &env(&vars)).unwrap();
        assert_eq!(cfg.api.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(cfg.cluster.bootstrap.len(), 2);
        assert_eq!(cfg.cluster.replication_factor_min, 2);
        assert_eq!(cfg.cluster.replication_factor_max, 3);
        assert_eq!(cfg.cluster.peername, "peer-1");
        assert_eq!(cfg.consensus.write_timeout, Duration::from_secs(60));
        assert_eq!(
            cfg.informer.tags.get("region").map(String::as_str),
            Some("eu")
        );
        assert_eq!(
            cfg.informer.tags.get("group").map(String::as_str),
            Some("a")
        );
        assert_eq!(cfg.ipfs.backend, IpfsBackendKind::Kubo);

        // The secret itself can come from the environment.
        let cfg =
            ServiceConfig::from_toml_str("", file(), &env(&[("PINFLEET_CLUSTER_SECRET", SECRET)]))
                .unwrap();
        assert_eq!(cfg.cluster.secret, secret());
    }

    #[test]
    fn env_overrides_are_validated() {
        let vars = [
            ("PINFLEET_API_LISTEN", "nowhere"),
            ("PINFLEET_CLUSTER_LISTEN_MULTIADRESS", "/ip4/1.2.3.4/tcp/1"),
            ("PINFLEET_CONSENSUS_BATCH_MAX_PINS", "lots"),
            ("PINFLEET_INFORMER_TAGS", "region"),
            ("PINFLEET_CLUSTER_LISTEN_MULTIADDRESS", ""),
            ("PINFLEET_IPFS_BACKEND", "kubbo"),
        ];
        let mut p = problems(&minimal(), &vars);
        p.sort();
        assert_eq!(
            p,
            [
                "PINFLEET_CLUSTER_LISTEN_MULTIADRESS: unknown key \"listen_multiadress\" in [cluster], did you mean PINFLEET_CLUSTER_LISTEN_MULTIADDRESS?",
                "PINFLEET_INFORMER_TAGS: invalid tag \"region\": expected key=value",
                "api.listen (from PINFLEET_API_LISTEN): invalid socket address \"nowhere\": expected ip:port, e.g. 127.0.0.1:9094",
                "cluster.listen_multiaddress (from PINFLEET_CLUSTER_LISTEN_MULTIADDRESS): must list at least one address",
                "consensus.batch_max_pins (from PINFLEET_CONSENSUS_BATCH_MAX_PINS): expected an integer, found string \"lots\"",
                "ipfs.backend (from PINFLEET_IPFS_BACKEND): unknown backend \"kubbo\", did you mean \"kubo\"?",
            ]
        );
    }

    #[test]
    fn the_embedded_node_is_the_default_backend_and_its_listen_is_checked() {
        let cfg = parse(&minimal()).unwrap();
        assert_eq!(cfg.ipfs.backend, IpfsBackendKind::Embedded);
        assert_eq!(
            cfg.ipfs.embedded_listen,
            vec!["/ip4/127.0.0.1/tcp/0".parse::<Multiaddr>().unwrap()]
        );
        let toml = ServiceConfig::default_toml(SECRET);
        assert!(toml.contains("backend = \"embedded\""), "{toml}");
        assert!(
            toml.contains("embedded_listen = [\"/ip4/127.0.0.1/tcp/0\"]"),
            "{toml}"
        );

        let vars = [
            ("PINFLEET_IPFS_BACKEND", "none"),
            (
                "PINFLEET_IPFS_EMBEDDED_LISTEN",
                "/ip4/0.0.0.0/tcp/4001,/ip6/::/tcp/4001",
            ),
        ];
        let cfg = ServiceConfig::from_toml_str(&minimal(), file(), &env(&vars)).unwrap();
        assert_eq!(cfg.ipfs.backend, IpfsBackendKind::None);
        assert_eq!(cfg.ipfs.embedded_listen.len(), 2);

        let text = format!(
            "{}[ipfs]\nbackend = \"embeded\"\nembedded_listen = [\"nope\"]\n",
            minimal()
        );
        let mut p = problems(&text, &[]);
        p.sort();
        assert_eq!(
            p,
            [
                "ipfs.backend: unknown backend \"embeded\", did you mean \"embedded\"?",
                "ipfs.embedded_listen: [0]: invalid multiaddr \"nope\": invalid multiaddr",
            ]
        );
        assert_eq!(
            problems(&format!("{}[ipfs]\nembedded_listen = []\n", minimal()), &[]),
            ["ipfs.embedded_listen: must list at least one address"]
        );
    }

    #[test]
    fn kubo_url_is_checked_and_normalised() {
        let with = |url: &str| parse(&format!("{}[ipfs]\nkubo_url = \"{url}\"\n", minimal()));
        assert_eq!(
            with("http://10.0.0.1:5001/").unwrap().ipfs.kubo_url,
            "http://10.0.0.1:5001"
        );
        assert_eq!(
            with("https://k.example/base/").unwrap().ipfs.kubo_url,
            "https://k.example/base"
        );
        for bad in [
            "127.0.0.1:5001",
            "ftp://x:5001",
            "http://x:5001/?a=b",
            "not a url",
        ] {
            assert!(with(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn syntax_errors_have_a_place() {
        let p = problems("[cluster]\nsecret = \"abc\n", &[]);
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("invalid toml at line 2, column"), "{p:?}");
        assert!(!p[0].contains('\n'));
    }

    #[test]
    fn load_reads_the_file_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("service.toml");
        std::fs::write(&path, ServiceConfig::default_toml(SECRET)).unwrap();
        let cfg =
            ServiceConfig::load_with_env(&path, &env(&[("PINFLEET_API_LISTEN", "127.0.0.1:0")]))
                .unwrap();
        assert_eq!(cfg.api.listen.port(), 0);

        let missing = dir.path().join("missing.toml");
        let err = ServiceConfig::load_with_env(&missing, &[]).unwrap_err();
        assert_eq!(err.file, missing);
        assert!(err.to_string().starts_with(&missing.display().to_string()));
        assert!(err.problems[0].starts_with("cannot read file"));
    }

    #[test]
    fn controller_section_is_parsed_and_checked() {
        let ok = parse(&format!(
            "{}[controller]\nsources = [\"dir:/srv/m\", \"git:file:///r.git#tag=v1&path=a\"]\n\
             interval = \"30s\"\nforce = true\nwebhooks = [\"github:main\"]\n",
            minimal()
        ))
        .unwrap();
        assert_eq!(ok.controller.sources.len(), 2);
        assert_eq!(ok.controller.interval, Duration::from_secs(30));
        assert!(ok.controller.force);
        assert_eq!(
            ok.controller.webhooks,
            vec![(ReceiverKind::GitHub, "main".to_string())]
        );
        assert_eq!(ok.controller.git_cache, PathBuf::from("git-cache"));
        // Round trip through the rendered file.
        assert_eq!(parse(&ok.to_toml()).unwrap(), ok);

        let p = problems(
            &format!(
                "{}[controller]\nsources = [\"ftp:x\", \"git:file:///r#bogus=1\", \"dir:\"]\n\
                 webhooks = [\"bitbucket:x\", \"github:bad name\"]\ninterval = \"0s\"\n",
                minimal()
            ),
            &[],
        );
        assert_eq!(p.len(), 3, "{p:?}");
        let sources = p
            .iter()
            .find(|m| m.starts_with("controller.sources:"))
            .unwrap();
        assert!(sources.contains("[0]: unsupported source"), "{sources}");
        assert!(
            sources.contains("[1]:") && sources.contains("bogus"),
            "{sources}"
        );
        assert!(
            sources.contains("[2]: dir: source has an empty path"),
            "{sources}"
        );
        let hooks = p
            .iter()
            .find(|m| m.starts_with("controller.webhooks:"))
            .unwrap();
        assert!(
            hooks.contains("unknown webhook kind \"bitbucket\""),
            "{hooks}"
        );
        assert!(hooks.contains("invalid webhook name"), "{hooks}");
        assert!(
            p.iter().any(|m| m.starts_with("controller.interval:")),
            "{p:?}"
        );

        let from_env = ServiceConfig::from_toml_str(
            &minimal(),
            file(),
            &env(&[
                ("PINFLEET_CONTROLLER_SOURCES", "dir:/a,dir:/b"),
                ("PINFLEET_CONTROLLER_FORCE", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(from_env.controller.sources, vec!["dir:/a", "dir:/b"]);
        assert!(from_env.controller.force);
        let p = problems(&minimal(), &[("PINFLEET_CONTROLLER_SOURCES", "nope")]);
        assert!(
            p[0].starts_with("controller.sources (from PINFLEET_CONTROLLER_SOURCES): [0]:"),
            "{p:?}"
        );
    }

    #[test]
    fn env_var_names() {
        assert_eq!(
            env_var_name("cluster", "replication_factor_min"),
            "PINFLEET_CLUSTER_REPLICATION_FACTOR_MIN"
        );
    }
}
