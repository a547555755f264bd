//! `pinfleet testbed up`: a local N-peer cluster of real daemon processes on
//! free loopback ports, for trying pinfleet and for end-to-end tests.
//!
//! Layout under the testbed directory: `peer-<i>/` per peer (identity,
//! config with fixed ports chosen on first start, Raft data, `daemon.log`),
//! with `--followers N` the published follower config `follow.json` and
//! `follower-<i>/` per follower (see `followers`), and `testbed.json`
//! describing the running peers and followers. Starting again on the same
//! directory restarts the same peers and followers with their state.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

mod control;
mod followers;

pub use control::{ControlError, kill_peer, read_testbed_file, start_peer};
pub use followers::TestbedFollower;

use crate::auth::Credential;
use crate::config::{ClusterSecret, IDENTITY_FILE, Identity, SERVICE_FILE, ServiceConfig};
use crate::daemon::{RunInfo, read_run_file};

/// Name of the file describing a running testbed.
pub const TESTBED_FILE: &str = "testbed.json";

/// `cluster.name` of every testbed.
pub const TESTBED_CLUSTER: &str = "testbed";

/// One peer in `testbed.json`. Fields are stable; later versions only add.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestbedPeer {
    /// libp2p peer id.
    pub id: String,
    /// Process id of the daemon.
    pub pid: u32,
    /// Peer directory.
    pub dir: PathBuf,
    /// REST API base URL.
    pub api: String,
    /// argv that starts this peer again.
    pub cmd: Vec<String>,
    /// The peer's IPFS node: the embedded node's swarm multiaddr (with
    /// `/p2p/<id>`), the Kubo RPC URL, or `none`.
    pub ipfs: String,
    /// Base URL of the peer's Pinning Service API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinsvc: Option<String>,
}

/// `testbed.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestbedFile {
    /// Running peers, in start order: the cluster's trusted peers.
    pub peers: Vec<TestbedPeer>,
    /// Running followers (`--followers N`), in start order; absent when
    /// there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub followers: Vec<TestbedFollower>,
    /// With `--auth`: `"admin"`, `"writer"` and `"reader"`, each
    /// `"user:password"` of a user with that role (the file is then
    /// readable by its owner only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BTreeMap<String, String>>,
    /// A bearer token (role writer, named `testbed`) of every peer's
    /// Pinning Service API (the file is then readable by its owner only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinsvc_token: Option<String>,
}

impl TestbedFile {
    /// `user:password` of the testbed's user with `role`, when it has users.
    pub fn credentials(&self, role: &str) -> Option<&str> {
        self.basic_auth.as_ref()?.get(role).map(String::as_str)
    }
}

/// Name of the file keeping a testbed's generated users between runs.
const CREDENTIALS_FILE: &str = "credentials.json";

/// The testbed's three users (`role` → `user:password`): those of an
/// earlier run in `dir`, or new ones with random passwords.
fn testbed_users(dir: &Path) -> Result<BTreeMap<String, String>, TestbedError> {
    let path = dir.join(CREDENTIALS_FILE);
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(users) = serde_json::from_slice::<BTreeMap<String, String>>(&bytes)
        && ROLES.iter().all(|r| users.contains_key(*r))
    {
        return Ok(users);
    }
    let users: BTreeMap<String, String> = ROLES
        .iter()
        .map(|role| {
            let password: String = rand::Rng::sample_iter(rand::rng(), &rand::distr::Alphanumeric)
                .take(24)
                .map(char::from)
                .collect();
            ((*role).to_owned(), format!("{role}:{password}"))
        })
        .collect();
    let json = serde_json::to_vec_pretty(&users).map_err(|e| TestbedError::Io {
        what: "cannot encode",
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    crate::config::write_private_file(&path, &json, true).map_err(io("cannot write", &path))?;
    Ok(users)
}

/// Name of the testbed's Pinning Service token in `[pinsvc] tokens`.
pub const PINSVC_TOKEN_NAME: &str = "testbed";

/// The testbed's Pinning Service token: peer 0's from an earlier run, or a
/// new random one.
fn testbed_pinsvc_token(dir: &Path) -> String {
    let first = dir.join("peer-0").join(SERVICE_FILE);
    if let Ok(c) = ServiceConfig::load_with_env(&first, &[])
        && let Some(t) = c.pinsvc.tokens.get(PINSVC_TOKEN_NAME)
    {
        return t.secret.clone();
    }
    rand::Rng::sample_iter(rand::rng(), &rand::distr::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// The testbed's users: one per role, named after it.
const ROLES: [&str; 3] = ["admin", "writer", "reader"];

/// `[api] basic_auth_credentials` for `users` (hashed once, shared by
/// every peer).
fn credentials_config(
    users: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, Credential>, String> {
    let mut out = BTreeMap::new();
    for (role, pair) in users {
        let (user, password) = pair.split_once(':').ok_or("malformed credentials file")?;
        let hash = crate::auth::hash_password(password)?;
        let cred = Credential::parse(&format!("{role}:{hash}")).map_err(|e| e.to_string())?;
        out.insert(user.to_owned(), cred);
    }
    Ok(out)
}

/// How to run a testbed.
#[derive(Clone, Debug)]
pub struct TestbedOptions {
    /// The `pinfleet` executable to start peers with.
    pub exe: PathBuf,
    /// Number of peers.
    pub peers: usize,
    /// Testbed directory.
    pub dir: PathBuf,
    /// How long to wait for the cluster to form.
    pub timeout: Duration,
    /// The peers' IPFS nodes.
    pub ipfs: TestbedIpfs,
    /// Give the API users (admin, writer, reader with random passwords,
    /// written to `testbed.json`); without it the API is open on loopback.
    pub auth: bool,
    /// Number of followers started once the peers formed the cluster
    /// (issue 17): `pinfleet follow` processes of the published config
    /// `<dir>/follow.json`.
    pub followers: usize,
    /// Variables set for every peer and follower process on top of this
    /// process's environment (`PINFLEET_<SECTION>_<KEY>` config overrides,
    /// e.g. `PINFLEET_IPFS_STORAGE_MAX`).
    pub env: Vec<(String, String)>,
}

/// The runtime threads each of `processes` daemons gets: its share of the
/// cores (at least one), unless `PINFLEET_WORKER_THREADS` is set (here or
/// in `env`) and says otherwise. Several daemons that each run one thread
/// per core on the same cores mostly wake each other's threads up.
fn worker_share(processes: usize, env: &[(String, String)]) -> Option<usize> {
    const VAR: &str = "PINFLEET_WORKER_THREADS";
    if std::env::var_os(VAR).is_some() || env.iter().any(|(k, _)| k == VAR) {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    Some((cores / processes.max(1)).max(1))
}

/// Which IPFS node each testbed peer pins on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TestbedIpfs {
    /// Consensus only.
    None,
    /// Each peer runs an embedded node; the nodes connect to each other.
    #[default]
    Embedded,
    /// Embedded nodes in public mode (`[ipfs] swarm = "public"`: any IPFS
    /// node such as Kubo may connect; DHT), on loopback TCP and QUIC with
    /// no bootstrap peers.
    EmbeddedPublic,
    /// Kubo RPC URL per peer, in order; peers beyond the list run without
    /// IPFS.
    Kubo(Vec<String>),
}

impl TestbedIpfs {
    /// Peer `index`'s backend and, for Kubo, its URL.
    fn for_peer(&self, index: usize) -> (crate::config::IpfsBackendKind, Option<&str>) {
        use crate::config::IpfsBackendKind as K;
        match self {
            TestbedIpfs::None => (K::None, None),
            TestbedIpfs::Embedded | TestbedIpfs::EmbeddedPublic => (K::Embedded, None),
            TestbedIpfs::Kubo(urls) => match urls.get(index) {
                Some(url) => (K::Kubo, Some(url.as_str())),
                None => (K::None, None),
            },
        }
    }
}

/// What a testbed start writes into a peer's or follower's `service.toml`
/// (rewritten each start, so `--ipfs` and `--auth` may change between runs).
struct PeerSetup<'a> {
    /// `peer 0`, `follower 1`: for errors.
    who: String,
    /// Its IPFS backend and, for Kubo, its URL.
    backend: (crate::config::IpfsBackendKind, Option<&'a str>),
    /// The testbed's IPFS setting (public or private swarm).
    ipfs: &'a TestbedIpfs,
    /// API users.
    users: &'a BTreeMap<String, Credential>,
    /// The Pinning Service API's token; `None`: not served.
    pinsvc_token: Option<&'a str>,
}

/// Sets a peer's IPFS backend, API users and Pinning Service API in its
/// `service.toml`, then whatever `cluster` changes.
fn set_peer_config(
    dir: &Path,
    setup: &PeerSetup<'_>,
    cluster: impl FnOnce(&mut ServiceConfig),
) -> Result<(), TestbedError> {
    let path = dir.join(SERVICE_FILE);
    let prep = |message: String| TestbedError::Prepare {
        who: setup.who.clone(),
        message,
    };
    let ipfs = setup.ipfs;
    let mut config = ServiceConfig::load_with_env(&path, &[]).map_err(|e| prep(e.to_string()))?;
    let (kind, url) = setup.backend;
    config.ipfs.backend = kind;
    if let Some(url) = url {
        config.ipfs.kubo_url = url.trim_end_matches('/').to_string();
    }
    // Loopback only, never the public bootstrap peers.
    config.ipfs.bootstrap = Vec::new();
    let loopback = |a: &str| {
        a.parse()
            .map_err(|e: libp2p::multiaddr::Error| prep(e.to_string()))
    };
    if *ipfs == TestbedIpfs::EmbeddedPublic {
        config.ipfs.swarm = crate::config::SwarmKind::Public;
        config.ipfs.embedded_listen = vec![
            loopback("/ip4/127.0.0.1/tcp/0")?,
            loopback("/ip4/127.0.0.1/udp/0/quic-v1")?,
        ];
    } else {
        config.ipfs.swarm = crate::config::SwarmKind::Private;
        config.ipfs.embedded_listen = vec![loopback("/ip4/127.0.0.1/tcp/0")?];
    }
    config.api.basic_auth_credentials = setup.users.clone();
    cluster(&mut config);
    let Some(pinsvc_token) = setup.pinsvc_token else {
        config.pinsvc.tokens = BTreeMap::new();
        config.pinsvc.listen = None;
        return crate::config::write_private_file(&path, config.to_toml().as_bytes(), true)
            .map_err(io("cannot write", &path));
    };
    let token =
        crate::config::PinSvcToken::parse(&format!("writer:{pinsvc_token}")).map_err(prep)?;
    config.pinsvc.tokens = BTreeMap::from([(PINSVC_TOKEN_NAME.to_string(), token)]);
    // A peer prepared before the testbed served the Pinning Service API has
    // the default port, the same for every peer.
    let default_port = crate::config::PinSvcConfig::default()
        .listen
        .map(|a| a.port());
    if config.pinsvc.listen.map(|a| a.port()) == default_port || config.pinsvc.listen.is_none() {
        let port = free_port().map_err(|e| prep(e.to_string()))?;
        config.pinsvc.listen = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    crate::config::write_private_file(&path, config.to_toml().as_bytes(), true)
        .map_err(io("cannot write", &path))
}

/// Why a testbed could not start.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// File system.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A peer or follower failed to start or exited.
    #[error("{who} did not come up: {reason} (see {})", log.display())]
    PeerFailed {
        /// Which one (`peer 0`, `follower 1`).
        who: String,
        /// What happened.
        reason: String,
        /// Its log file.
        log: PathBuf,
    },
    /// The cluster did not form in time.
    #[error("the cluster did not form within {0:?}")]
    Timeout(Duration),
    /// The followers did not all apply the state in time.
    #[error("the followers did not receive the state within {timeout:?}: {waiting}")]
    FollowersBehind {
        /// How long they had.
        timeout: Duration,
        /// The followers' APIs still behind, or what went wrong.
        waiting: String,
    },
    /// Preparing a peer's or follower's identity or config failed.
    #[error("cannot prepare {who}: {message}")]
    Prepare {
        /// Which one (`peer 0`, `follower 1`).
        who: String,
        /// What failed.
        message: String,
    },
}

/// Writes `testbed.json` in `dir`, readable by its owner only when it holds
/// credentials.
fn write_testbed_file(dir: &Path, file: &TestbedFile) -> Result<(), TestbedError> {
    let path = dir.join(TESTBED_FILE);
    let json = serde_json::to_vec_pretty(file).map_err(|e| TestbedError::Io {
        what: "cannot encode",
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    if file.basic_auth.is_some() || file.pinsvc_token.is_some() {
        crate::config::write_private_file(&path, &json, true).map_err(io("cannot write", &path))
    } else {
        std::fs::write(&path, json).map_err(io("cannot write", &path))
    }
}

/// A running testbed: its child processes are stopped by [`Testbed::stop`]
/// (and killed if the value is dropped without it).
#[derive(Debug)]
pub struct Testbed {
    /// What `testbed.json` says.
    pub file: TestbedFile,
    children: Vec<Child>,
    /// [`TestbedOptions::env`].
    env: Vec<(String, String)>,
}

/// Warnings and errors a failing test shows, per peer.
const LOG_LINES_ON_PANIC: usize = 25;

impl Drop for Testbed {
    /// When the testbed goes away with a panicking thread (a failed test),
    /// shows each peer's last warnings and errors, so the failure says what
    /// the peers saw (the directory is usually a temporary one, gone next).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for peer in &self.file.peers {
            let Ok(log) = std::fs::read_to_string(peer.dir.join("daemon.log")) else {
                continue;
            };
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .collect();
            let shown = &lines[lines.len().saturating_sub(LOG_LINES_ON_PANIC)..];
            eprintln!(
                "--- {} ({}): last {} of {} warnings and errors",
                peer.dir.display(),
                peer.id,
                shown.len(),
                lines.len()
            );
            for line in shown {
                eprintln!("{line}");
            }
        }
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TestbedError {
    let path = path.to_path_buf();
    move |source| TestbedError::Io { what, path, source }
}

/// How often a peer is started on fresh ports when its own were taken.
const PORT_ATTEMPTS: usize = 3;
/// What a bind error says (the OS's text).
const ADDRESS_IN_USE: &str = "Address already in use";

/// The last `n` non-empty lines of the log at `path`, joined by ` | `
/// (what a peer said before it exited).
/// `GET url` as the testbed's admin, when it has users.
fn get(
    client: &reqwest::Client,
    admin: Option<(&str, &str)>,
    url: String,
) -> reqwest::RequestBuilder {
    let request = client.get(url);
    match admin {
        Some((user, password)) => request.basic_auth(user, Some(password)),
        None => request,
    }
}

fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

pub(crate) fn free_port() -> std::io::Result<u16> {
    // The port is released before the daemon binds it; a collision in that
    // window is possible but rare, and shows up as a clear bind error.
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

/// Creates identity and config for a peer that has none yet.
fn prepare_peer(index: usize, dir: &Path, secret: &ClusterSecret) -> Result<(), TestbedError> {
    std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    let identity = dir.join(IDENTITY_FILE);
    let service = dir.join(SERVICE_FILE);
    if identity.exists() && service.exists() {
        return Ok(());
    }
    let prep = |message: String| TestbedError::Prepare {
        who: format!("peer {index}"),
        message,
    };
    let mut config = ServiceConfig::new(*secret);
    config.cluster.peername = format!("peer-{index}");
    fresh_ports(&mut config).map_err(prep)?;
    crate::config::write_private_file(&service, config.to_toml().as_bytes(), true)
        .map_err(io("cannot write", &service))?;
    Identity::generate()
        .save(&identity, true)
        .map_err(|e| prep(e.to_string()))?;
    Ok(())
}

/// Free loopback ports for `config`'s cluster and API listeners.
pub(crate) fn fresh_ports(config: &mut ServiceConfig) -> Result<(), String> {
    let p2p_port = free_port().map_err(|e| e.to_string())?;
    let api_port = free_port().map_err(|e| e.to_string())?;
    let pinsvc_port = free_port().map_err(|e| e.to_string())?;
    config.cluster.listen_multiaddress = vec![
        format!("/ip4/127.0.0.1/tcp/{p2p_port}")
            .parse()
            .map_err(|e: libp2p::multiaddr::Error| e.to_string())?,
    ];
    config.api.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, api_port));
    config.pinsvc.listen = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, pinsvc_port)));
    Ok(())
}

/// Gives the peer in `dir` fresh ports (its own were taken by another
/// process before it could bind them).
fn repick_ports(who: &str, dir: &Path) -> Result<(), TestbedError> {
    let path = dir.join(SERVICE_FILE);
    let prep = |message: String| TestbedError::Prepare {
        who: who.to_string(),
        message,
    };
    let mut config = ServiceConfig::load_with_env(&path, &[]).map_err(|e| prep(e.to_string()))?;
    fresh_ports(&mut config).map_err(prep)?;
    crate::config::write_private_file(&path, config.to_toml().as_bytes(), true)
        .map_err(io("cannot write", &path))
}

/// The secret shared by the testbed's peers: peer 0's, or a new one.
fn testbed_secret(dir: &Path) -> ClusterSecret {
    let first = dir.join("peer-0").join(SERVICE_FILE);
    ServiceConfig::load_with_env(&first, &[])
        .map(|c| c.cluster.secret)
        .unwrap_or_else(|_| ClusterSecret::random())
}

impl Testbed {
    /// Starts (or restarts) the peers and waits until they form one cluster.
    pub async fn up(opts: &TestbedOptions) -> Result<Testbed, TestbedError> {
        std::fs::create_dir_all(&opts.dir).map_err(io("cannot create", &opts.dir))?;
        let secret = testbed_secret(&opts.dir);
        let dirs: Vec<PathBuf> = (0..opts.peers)
            .map(|i| opts.dir.join(format!("peer-{i}")))
            .collect();
        let basic_auth = if opts.auth {
            Some(testbed_users(&opts.dir)?)
        } else {
            None
        };
        let users = match &basic_auth {
            Some(u) => credentials_config(u).map_err(|message| TestbedError::Prepare {
                who: "peer 0".into(),
                message,
            })?,
            None => BTreeMap::new(),
        };
        let pinsvc_token = testbed_pinsvc_token(&opts.dir);
        let mut trusted = Vec::new();
        for (i, d) in dirs.iter().enumerate() {
            prepare_peer(i, d, &secret)?;
            let identity =
                Identity::load(&d.join(IDENTITY_FILE)).map_err(|e| TestbedError::Prepare {
                    who: format!("peer {i}"),
                    message: e.to_string(),
                })?;
            trusted.push(identity.peer_id());
        }
        for (i, d) in dirs.iter().enumerate() {
            let setup = PeerSetup {
                who: format!("peer {i}"),
                backend: opts.ipfs.for_peer(i),
                ipfs: &opts.ipfs,
                users: &users,
                pinsvc_token: Some(&pinsvc_token),
            };
            // The testbed's peers are its trusted peers (issue 17).
            set_peer_config(d, &setup, |config| {
                config.cluster.name = TESTBED_CLUSTER.to_string();
                config.cluster.follower = false;
                config.cluster.trusted_peers = trusted.clone();
            })?;
        }
        let mut tb = Testbed {
            file: TestbedFile {
                peers: Vec::new(),
                followers: Vec::new(),
                basic_auth,
                pinsvc_token: Some(pinsvc_token),
            },
            children: Vec::new(),
            env: opts.env.clone(),
        };
        let deadline = tokio::time::Instant::now() + opts.timeout;
        let mut bootstrap: Vec<String> = Vec::new();
        let threads = worker_share(dirs.len() + opts.followers, &opts.env);
        for (i, d) in dirs.iter().enumerate() {
            let mut args = vec![
                "daemon".to_string(),
                "--dir".to_string(),
                d.display().to_string(),
            ];
            if let Some(n) = threads {
                args.extend(["--worker-threads".to_string(), n.to_string()]);
            }
            let restart_args = args.clone();
            for b in &bootstrap {
                args.push("--bootstrap".into());
                args.push(b.clone());
            }
            let (pid, info) = tb
                .spawn(&format!("peer {i}"), d, &opts.exe, &args, deadline)
                .await?;
            if bootstrap.is_empty() {
                bootstrap = info.p2p.clone();
            }
            let mut cmd = vec![opts.exe.display().to_string()];
            cmd.extend(restart_args);
            tb.file.peers.push(TestbedPeer {
                id: info.id,
                pid,
                dir: d.clone(),
                api: info.api,
                cmd,
                ipfs: match opts.ipfs.for_peer(i) {
                    (_, Some(url)) => url.to_string(),
                    (crate::config::IpfsBackendKind::Embedded, _) => {
                        info.ipfs.clone().unwrap_or_else(|| "embedded".into())
                    }
                    _ => "none".into(),
                },
                pinsvc: info.pinsvc.clone(),
            });
        }
        let embedded = matches!(
            opts.ipfs,
            TestbedIpfs::Embedded | TestbedIpfs::EmbeddedPublic
        );
        tb.wait_formed(opts.peers, embedded, deadline, opts.timeout)
            .await?;
        if opts.followers > 0 {
            tb.start_followers(opts, &users, deadline).await?;
        }
        write_testbed_file(&opts.dir, &tb.file)?;
        Ok(tb)
    }

    /// Starts `exe args` for the peer or follower in `dir` and waits for
    /// its `run.json`; on a port another process took meanwhile, again on
    /// fresh ports.
    async fn spawn(
        &mut self,
        who: &str,
        dir: &Path,
        exe: &Path,
        args: &[String],
        deadline: tokio::time::Instant,
    ) -> Result<(u32, RunInfo), TestbedError> {
        let log_path = dir.join("daemon.log");
        // A free port is released before the daemon binds it: another
        // process may take it meanwhile. Then new ports, and again.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let _ = std::fs::remove_file(dir.join(crate::daemon::RUN_FILE)); // stale from a crash
            let log = std::fs::File::create(&log_path).map_err(io("cannot create", &log_path))?;
            let err_log = log.try_clone().map_err(io("cannot open", &log_path))?;
            let child = Command::new(exe)
                .args(args)
                .envs(self.env.iter().cloned())
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err_log)
                .kill_on_drop(true)
                .spawn()
                .map_err(io("cannot start", exe))?;
            let pid = child.id().unwrap_or_default();
            self.children.push(child);
            match self.wait_run_file(who, dir, pid, &log_path, deadline).await {
                Ok(info) => return Ok((pid, info)),
                Err(TestbedError::PeerFailed { reason, .. })
                    if attempt < PORT_ATTEMPTS && reason.contains(ADDRESS_IN_USE) =>
                {
                    self.children.pop();
                    repick_ports(who, dir)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn wait_run_file(
        &mut self,
        who: &str,
        dir: &Path,
        pid: u32,
        log: &Path,
        deadline: tokio::time::Instant,
    ) -> Result<RunInfo, TestbedError> {
        loop {
            if let Some(info) = read_run_file(dir).filter(|i| i.pid == pid) {
                return Ok(info);
            }
            if let Some(child) = self.children.last_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let said = last_lines(log, 5);
                return Err(TestbedError::PeerFailed {
                    who: who.to_string(),
                    reason: format!("exited with {status}: {said}"),
                    log: log.to_path_buf(),
                });
            }
            if tokio::time::Instant::now() > deadline {
                return Err(TestbedError::PeerFailed {
                    who: who.to_string(),
                    reason: "no run.json in time".into(),
                    log: log.to_path_buf(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every peer's `/id` lists all peers as cluster members
    /// and every peer has live metrics of all of them, so a pin with
    /// replication = number of peers is allocated as it is written.
    async fn wait_formed(
        &self,
        n: usize,
        embedded: bool,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<(), TestbedError> {
        // The testbed's peers serve plain http on loopback.
        let client = crate::tls::client(None)
            .ok()
            .and_then(|b| b.build().ok())
            .unwrap_or_default();
        let admin = self
            .file
            .credentials("admin")
            .and_then(|c| c.split_once(':'));
        loop {
            let mut ready = 0;
            for p in &self.file.peers {
                let request = get(&client, admin, format!("{}/id", p.api));
                let peers = match request.send().await {
                    Ok(r) => r.json::<serde_json::Value>().await.ok(),
                    Err(_) => None,
                };
                let count = peers
                    .as_ref()
                    .and_then(|v| v["cluster_peers"].as_array().map(Vec::len))
                    .unwrap_or(0);
                if count == n {
                    ready += 1;
                }
            }
            if ready == n
                && self.metrics_of_all(&client, admin, n).await
                && (!embedded || self.nodes_linked(&client, admin, n).await)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(TestbedError::Timeout(timeout));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// True when every member's embedded IPFS node is connected to all the
    /// other members' nodes (`GET /health/graph`'s `ipfs_links`, as peer 0
    /// gathers them): content added on one peer can then be read and
    /// pinned on any other at once.
    async fn nodes_linked(
        &self,
        client: &reqwest::Client,
        admin: Option<(&str, &str)>,
        n: usize,
    ) -> bool {
        let Some(first) = self.file.peers.first() else {
            return true;
        };
        let request = get(client, admin, format!("{}/health/graph", first.api));
        let graph = match request.send().await {
            Ok(r) if r.status().is_success() => r.json::<crate::wire::ConnectGraph>().await.ok(),
            _ => None,
        };
        graph.is_some_and(|g| {
            g.ipfs_links.len() == n && g.ipfs_links.values().all(|links| links.len() + 1 >= n)
        })
    }

    /// True when every peer lists all `n` peers as live (`GET
    /// /monitor/metrics/ping`: it holds unexpired metrics of each, what
    /// the allocator needs): whichever leads can then allocate a pin with
    /// replication `n` as it is written.
    async fn metrics_of_all(
        &self,
        client: &reqwest::Client,
        admin: Option<(&str, &str)>,
        n: usize,
    ) -> bool {
        for p in &self.file.peers {
            let request = get(client, admin, format!("{}/monitor/metrics/ping", p.api));
            let listed = match request.send().await {
                Ok(r) if r.status().is_success() => r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v.as_array().map(Vec::len))
                    .unwrap_or(0),
                _ => 0,
            };
            if listed < n {
                return false;
            }
        }
        true
    }

    /// Sends SIGTERM to every peer and waits for them; those still running
    /// 15 s after the signal are killed (one deadline for all, so stopping
    /// never takes much longer than 15 s however many peers hang).
    pub async fn stop(mut self) {
        for child in &self.children {
            if let Some(pid) = child.id() {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        for child in &mut self.children {
            if tokio::time::timeout_at(deadline, child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }

    /// True while every peer process is alive.
    pub fn all_running(&mut self) -> bool {
        self.children
            .iter_mut()
            .all(|c| matches!(c.try_wait(), Ok(None)))
    }
}

#[cfg(test)]
mod tests {
    use super::worker_share;

    #[test]
    fn each_daemon_gets_its_share_of_the_cores_unless_told_otherwise() {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        assert_eq!(worker_share(1, &[]), Some(cores));
        // More daemons than cores: one thread each, never none.
        assert_eq!(worker_share(cores + 1, &[]), Some(1));
        assert_eq!(worker_share(0, &[]), Some(cores));
        // The testbed's caller set the variable for the daemons: theirs.
        let env = [("PINFLEET_WORKER_THREADS".to_string(), "3".to_string())];
        assert_eq!(worker_share(3, &env), None);
    }
}
