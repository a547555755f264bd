//! `pinfleet daemon`: one peer — identity and config from its directory,
//! its IPFS backend (the embedded node under `<dir>/ipfs/` by default,
//! connected to the other members' nodes), consensus, and the REST API —
//! until SIGINT or SIGTERM.
//!
//! Once serving, the daemon writes `<dir>/run.json` with its actual
//! addresses (ports may be 0 in the config), which the testbed and scripts
//! read; it is removed on a clean shutdown.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::StatusCode;
use futures::future::BoxFuture;
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{ApiState, serve_with};
use crate::config::{IDENTITY_FILE, Identity, SERVICE_FILE, ServiceConfig};
use crate::consensus::{ClusterNode, NodeOptions};
use crate::controller::ReconcileRequests;
use crate::manifest::PinSetId;
use crate::wire::{ErrorBody, ReconcileAnswer, ReconcileQuery};

/// The daemon's controller answers the REST API's reconcile-now route: the
/// one place where `api` and `controller` meet.
impl crate::api::ReconcileNow for std::collections::BTreeMap<String, ReconcileRequests> {
    fn reconcile<'a>(
        &'a self,
        id: &'a PinSetId,
        source: &'a str,
        query: &'a ReconcileQuery,
    ) -> BoxFuture<'a, Result<(StatusCode, ReconcileAnswer), ErrorBody>> {
        Box::pin(crate::controller::requests::request(
            self, id, source, query,
        ))
    }
}

/// Name of the file a running daemon writes into its directory.
pub const RUN_FILE: &str = "run.json";

/// What a running daemon tells the world about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    /// libp2p peer id.
    pub id: String,
    /// Process id.
    pub pid: u32,
    /// REST API base URL (on loopback when the API listens on every
    /// address).
    pub api: String,
    /// p2p addresses (with `/p2p/<id>`).
    pub p2p: Vec<String>,
    /// The embedded IPFS node's first swarm address (with `/p2p/<id>`);
    /// absent with other backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipfs: Option<String>,
    /// Base URL of the webhook listener (`controller.webhook_listen`);
    /// absent when the hooks are on the REST API or there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Base URL of the Pinning Service API (`[pinsvc]`); absent when it is
    /// not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinsvc: Option<String>,
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Identity missing or unreadable.
    #[error("cannot load the identity (run `pinfleet init --dir {dir}` first?)")]
    Identity {
        /// Peer directory.
        dir: String,
        /// Cause.
        #[source]
        source: crate::config::IdentityError,
    },
    /// Config invalid.
    #[error("invalid configuration")]
    Config(#[source] crate::config::ConfigError),
    /// A TLS certificate, key or CA file cannot be used.
    #[error("invalid tls files")]
    Tls(#[source] crate::tls::TlsError),
    /// The API port could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// Address.
        addr: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Consensus did not start.
    #[error("cannot start the cluster peer")]
    Cluster(#[source] crate::consensus::ClusterError),
    /// Writing run.json failed.
    #[error("cannot write {path}")]
    RunFile {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The API server failed.
    #[error("rest api failed")]
    Api(#[source] std::io::Error),
    /// The IPFS backend is misconfigured.
    #[error("invalid ipfs backend")]
    Ipfs(#[source] crate::ipfs::IpfsError),
    /// The embedded IPFS node could not start.
    #[error("cannot start the embedded ipfs node")]
    Embedded(#[source] crate::ipfs::embedded::EmbeddedError),
    /// The `[controller]` could not start.
    #[error("cannot start the controller")]
    Controller(#[source] crate::controller::daemon::StartError),
    /// The pin tracker could not start.
    #[error("cannot start the pin tracker")]
    Tracker(#[source] crate::tracker::ManagedError),
}

/// Starts the pin tracker for `node` on `backend` and registers its status
/// service for other peers' status RPCs. Keep the returned service while
/// the peer runs: the RPCs hold it weakly and answer that the tracker
/// stopped once it is dropped. Fails when the tracker's managed-pins file
/// (`config.managed_path`) cannot be opened.
pub fn start_tracking(
    node: &ClusterNode,
    backend: std::sync::Arc<dyn crate::ipfs::IpfsBackend>,
    config: crate::tracker::TrackerConfig,
    peername: String,
    cancel: &CancellationToken,
    tasks: &TaskTracker,
) -> Result<std::sync::Arc<crate::tracker::StatusService>, crate::tracker::ManagedError> {
    let default = config.default_replication;
    let tracker = crate::tracker::spawn(
        node.peer_id().to_string(),
        node.store().clone(),
        std::sync::Arc::clone(&backend),
        config,
        node.applied_watch(),
        cancel.clone(),
        tasks,
    )?;
    let status = std::sync::Arc::new(
        crate::tracker::StatusService::new(node.clone(), tracker, default, peername)
            .with_ipfs(backend),
    );
    crate::tracker::rpc::serve(node, std::sync::Arc::clone(&status));
    Ok(status)
}

/// Options from the command line.
#[derive(Clone, Debug, Default)]
pub struct DaemonOptions {
    /// Peer directory (identity.json, service.toml, raft/).
    pub dir: PathBuf,
    /// Extra bootstrap addresses (added to the config's).
    pub bootstrap: Vec<Multiaddr>,
}

/// File descriptors a peer needs besides its API connections: storage,
/// libp2p, the IPFS node, outgoing clients.
const OTHER_FILES: u64 = 1024;

/// Raises the soft open-file limit towards the hard one, so that the API's
/// `max_connections` (twice that, counting connections waiting to be
/// refused; the REST and webhook listeners each) and everything else fit
/// under it: the usual soft limit of 1024 would stop accepting first. A
/// limit that cannot be raised is logged, not fatal.
fn raise_open_file_limit(max_connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let want = (max_connections as u64)
        .saturating_mul(4)
        .saturating_add(OTHER_FILES);
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < want => {
            let target = want.min(hard);
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
                tracing::warn!(error = %e, soft, "cannot raise the open-file limit");
            } else if target < want {
                tracing::warn!(
                    limit = target,
                    wanted = want,
                    "the open-file hard limit is below what api.max_connections needs"
                );
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

/// Where this peer reaches its own API listening on `addr`: loopback of
/// the same family when `addr` is every address (`0.0.0.0`, `[::]`).
fn self_address(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if !addr.ip().is_unspecified() {
        return addr;
    }
    let loopback: std::net::IpAddr = if addr.is_ipv4() {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        std::net::Ipv6Addr::LOCALHOST.into()
    };
    std::net::SocketAddr::new(loopback, addr.port())
}

/// Runs a peer until `cancel` fires.
pub async fn run(opts: DaemonOptions, cancel: CancellationToken) -> Result<(), DaemonError> {
    let dir = &opts.dir;
    let identity =
        Identity::load(&dir.join(IDENTITY_FILE)).map_err(|source| DaemonError::Identity {
            dir: dir.display().to_string(),
            source,
        })?;
    let config = ServiceConfig::load(&dir.join(SERVICE_FILE)).map_err(DaemonError::Config)?;
    raise_open_file_limit(config.api.max_connections);
    // Relative TLS paths are under the peer directory; a file that cannot
    // be used refuses the start.
    let server_tls = match (&config.api.tls_cert_file, &config.api.tls_key_file) {
        (Some(cert), Some(key)) => Some(
            crate::tls::ServerTls::load(&dir.join(cert), &dir.join(key))
                .map_err(DaemonError::Tls)?,
        ),
        _ => None,
    };
    let tls_ca = config.tls.ca_file.as_ref().map(|p| dir.join(p));
    let _ = crate::tls::client(tls_ca.as_deref()).map_err(DaemonError::Tls)?;
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: config.api.listen.to_string(),
            source,
        })?;
    let api_addr = listener
        .local_addr()
        .map_err(|source| DaemonError::Listen {
            addr: config.api.listen.to_string(),
            source,
        })?;
    let scheme = if server_tls.is_some() {
        "https"
    } else {
        "http"
    };
    let api_url = format!("{scheme}://{api_addr}");
    // This peer's own calls (its controller, run.json for local tools) go
    // to loopback when the API listens on every address: `0.0.0.0` names
    // no host a certificate can match.
    let self_url = format!("{scheme}://{}", self_address(api_addr));
    // The webhook receivers' own listener, when configured (and there are
    // receivers to serve on it).
    let webhook_listener = match config.controller.webhook_listen {
        Some(addr) if !config.controller.webhooks.is_empty() => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::Listen {
                    addr: addr.to_string(),
                    source,
                })?,
        ),
        Some(_) => {
            tracing::warn!(
                "controller.webhook_listen is set but controller.webhooks is empty: not listening"
            );
            None
        }
        None => None,
    };
    // The webhook listener serves https with the API's certificate.
    let webhook_tls = server_tls.clone();
    let webhook_url = match &webhook_listener {
        Some(l) => Some(format!(
            "{scheme}://{}",
            l.local_addr().map_err(|source| DaemonError::Listen {
                addr: format!("{:?}", config.controller.webhook_listen),
                source,
            })?
        )),
        None => None,
    };
    // The Pinning Service API's listener: only with tokens (nothing could
    // authenticate without), https with the API's certificate.
    let pinsvc_listener = match config.pinsvc.listen {
        Some(addr) if !config.pinsvc.tokens.is_empty() => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::Listen {
                    addr: addr.to_string(),
                    source,
                })?;
            let bound = l.local_addr().map_err(|source| DaemonError::Listen {
                addr: addr.to_string(),
                source,
            })?;
            Some((l, format!("{scheme}://{}", self_address(bound))))
        }
        Some(_) => {
            tracing::info!("pinsvc.tokens is empty: the pinning service api is not served");
            None
        }
        None => None,
    };

    let mut node_opts = NodeOptions::new(
        dir.clone(),
        identity.keypair.clone(),
        config.cluster.secret.bytes(),
    );
    node_opts.listen = config.cluster.listen_multiaddress.clone();
    node_opts.bootstrap = config.cluster.bootstrap.clone();
    node_opts.bootstrap.extend(opts.bootstrap.iter().cloned());
    node_opts.trusted = config.cluster.trusted_peers.clone();
    node_opts.api_url = api_url.clone();
    node_opts.heartbeat_interval = config.consensus.heartbeat_interval;
    node_opts.election_timeout_min = config.consensus.election_timeout_min;
    node_opts.election_timeout_max = config.consensus.election_timeout_max;
    node_opts.snapshot_logs_since_last = config.consensus.snapshot_logs_since_last;
    node_opts.max_in_snapshot_log_to_keep = config.consensus.max_in_snapshot_log_to_keep;
    node_opts.write_timeout = config.consensus.write_timeout;
    node_opts.batch_max_pins = config.consensus.batch_max_pins;
    node_opts.append_max_bytes = config.consensus.append_max_bytes;
    node_opts.append_max_entries = config.consensus.append_max_entries;
    node_opts.cluster_name = config.cluster.name.clone();

    let tasks = TaskTracker::new();
    let mut embedded = None;
    let backend: std::sync::Arc<dyn crate::ipfs::IpfsBackend> = match config.ipfs.backend {
        crate::config::IpfsBackendKind::None => std::sync::Arc::new(crate::ipfs::NoBackend),
        crate::config::IpfsBackendKind::Kubo => std::sync::Arc::new(
            crate::ipfs::KuboClient::with_ca(
                &config.ipfs.kubo_url,
                Duration::from_secs(60),
                tls_ca.as_deref(),
            )
            .map_err(DaemonError::Ipfs)?,
        ),
        crate::config::IpfsBackendKind::Embedded => {
            let mut ipfs_config =
                crate::ipfs::embedded::EmbeddedConfig::new(dir, config.cluster.secret.bytes());
            ipfs_config.listen = config.ipfs.embedded_listen.clone();
            ipfs_config.storage_max = config.ipfs.storage_max;
            if config.ipfs.swarm == crate::config::SwarmKind::Public {
                ipfs_config.public = Some(crate::ipfs::embedded::PublicOptions {
                    bootstrap: config.ipfs.bootstrap.clone(),
                    relay_client: config.ipfs.relay_client,
                    dht_client: config.ipfs.dht_client,
                    max_connections: config.ipfs.max_connections,
                });
                ipfs_config.delegated_routing = config.ipfs.delegated_routing.clone();
            }
            let started = crate::ipfs::EmbeddedNode::start(ipfs_config, cancel.clone(), &tasks)
                .await
                .map_err(DaemonError::Embedded)?;
            embedded = Some(started.clone());
            std::sync::Arc::new(started)
        }
    };
    let ipfs_addr = match &embedded {
        Some(e) => e.listen_addrs().await.first().map(ToString::to_string),
        None => None,
    };
    let started = if config.cluster.follower {
        ClusterNode::start_follower(node_opts, cancel.clone(), &tasks).await
    } else {
        ClusterNode::start(node_opts, cancel.clone(), &tasks).await
    };
    let node = match started {
        Ok(node) => node,
        Err(e) => {
            // The embedded node is running: stop it (and close its store).
            cancel.cancel();
            tasks.close();
            let _ = tokio::time::timeout(Duration::from_secs(10), tasks.wait()).await;
            return Err(DaemonError::Cluster(e));
        }
    };
    crate::ipfs::rpc::serve(&node, std::sync::Arc::clone(&backend));

    if let Some(e) = embedded {
        crate::ipfs::embedded::peering::spawn(
            node.clone(),
            e,
            crate::ipfs::embedded::peering::PeeringConfig::default(),
            cancel.clone(),
            &tasks,
        );
    }
    let info = RunInfo {
        id: node.peer_id().to_string(),
        pid: std::process::id(),
        api: self_url.clone(),
        p2p: node.node().addrs.clone(),
        ipfs: ipfs_addr,
        webhook: webhook_url,
        pinsvc: pinsvc_listener.as_ref().map(|(_, url)| url.clone()),
    };
    let run_path = dir.join(RUN_FILE);
    write_run_file(&run_path, &info).map_err(|source| DaemonError::RunFile {
        path: run_path.clone(),
        source,
    })?;
    tracing::info!(peer = %info.id, api = %api_url, ipfs = config.ipfs.backend.as_str(), "peer running");

    let tracker_config = crate::tracker::TrackerConfig {
        default_replication: crate::manifest::ReplicationFactors {
            min: config.cluster.replication_factor_min,
            max: config.cluster.replication_factor_max,
        },
        // Pins released while this peer is down are unpinned after restart.
        managed_path: Some(crate::tracker::managed_path(dir)),
        recheck_interval: config.cluster.state_sync_interval,
        ..crate::tracker::TrackerConfig::default()
    };
    let peername = config.cluster.peername.clone();
    let default = tracker_config.default_replication;
    let status = match start_tracking(
        &node,
        std::sync::Arc::clone(&backend),
        tracker_config,
        peername,
        &cancel,
        &tasks,
    ) {
        Ok(status) => status,
        Err(e) => {
            cancel.cancel();
            tasks.close();
            let _ = tokio::time::timeout(Duration::from_secs(10), tasks.wait()).await;
            let _ = std::fs::remove_file(&run_path);
            return Err(DaemonError::Tracker(e));
        }
    };
    let mut informer = crate::allocator::informer::InformerConfig::new(default);
    informer.tags = config.informer.tags.clone();
    informer.interval = config.informer.interval;
    if node.is_follower() {
        // The leader may allocate pins to a follower that says it is one.
        informer.tags.insert(
            crate::allocator::informer::FOLLOWER_TAG.to_string(),
            "true".to_string(),
        );
    }
    let monitor = crate::allocator::informer::spawn(
        node.clone(),
        std::sync::Arc::clone(&backend),
        status.tracker().clone(),
        informer,
        cancel.clone(),
        &tasks,
    );

    // The controller reaches the cluster through this peer's API (bound
    // above, served below); only the Raft leader's acts.
    let access = crate::api::AccessPolicy::from_config(&config.api, &config.cluster.secret);
    let own_api = crate::client::Client::with_ca(&self_url, tls_ca.as_deref())
        .map(|c| {
            c.with_auth(Some(crate::client::Auth::Bearer(
                access.internal_token().to_owned(),
            )))
        })
        .map_err(crate::controller::daemon::StartError::Client);
    let started = match own_api.and_then(|api| {
        crate::controller::daemon::spawn(
            node.clone(),
            api,
            &config.controller,
            dir,
            &cancel,
            &tasks,
        )
    }) {
        Ok(h) => h,
        Err(e) => {
            cancel.cancel();
            tasks.close();
            let _ = tokio::time::timeout(Duration::from_secs(10), tasks.wait()).await;
            let _ = std::fs::remove_file(&run_path);
            return Err(DaemonError::Controller(e));
        }
    };
    if !config.controller.sources.is_empty() {
        tracing::info!(
            sources = config.controller.sources.len(),
            "controller configured (acts while this peer is the raft leader)"
        );
    }

    if let Some((listener, url)) = pinsvc_listener {
        tracing::info!(%url, "pinning service api listening");
        let router = crate::api::pinsvc::router(crate::api::pinsvc::PinSvcState::new(
            node.clone(),
            status.clone(),
            &config.pinsvc.tokens,
        ));
        let limits = crate::api::ConnectionLimits {
            header_read_timeout: config.api.read_timeout,
            max_connections: config.api.max_connections,
        };
        let served = crate::api::serve_router_limited(
            listener,
            router,
            server_tls.clone(),
            limits,
            cancel.clone(),
        );
        tasks.spawn(async move {
            if let Err(e) = served.await {
                tracing::warn!(error = %e, "pinning service listener failed");
            }
        });
    }
    let mut state = ApiState::new(
        node,
        env!("CARGO_PKG_VERSION"),
        config.cluster.peername.clone(),
    );
    state.status = Some(status);
    state.ipfs = Some(std::sync::Arc::clone(&backend));
    state.reconcile_now = Some(started.reconcilers);
    state.upload_dir = dir.join("uploads");
    state.access = access;
    state.tls_ca = tls_ca;
    state.monitor = Some(monitor);
    if !config.api.ui {
        state.ui = None;
    }
    state.max_body_bytes = config.api.max_pinset_body_bytes;
    state.max_upload_bytes = config.api.max_upload_bytes;
    state.read_timeout = config.api.read_timeout;
    state.max_connections = config.api.max_connections;
    let state = state.with_pinset_writes(config.api.max_concurrent_pinset_writes);
    // Uploads left by a crash mid-`POST /add` are garbage.
    let _ = std::fs::remove_dir_all(&state.upload_dir);
    // With their own listener the hooks are served there only, never on
    // the REST API.
    let rest_hooks = match (webhook_listener, started.hooks) {
        (Some(hook_listener), Some(hooks)) => {
            if let Ok(addr) = hook_listener.local_addr() {
                tracing::info!(%addr, "webhooks listening");
            }
            let limits = crate::api::ConnectionLimits {
                header_read_timeout: config.api.read_timeout,
                max_connections: config.api.max_connections,
            };
            let served = crate::api::serve_router_limited(
                hook_listener,
                crate::source::webhook::standalone(hooks),
                webhook_tls,
                limits,
                cancel.clone(),
            );
            tasks.spawn(async move {
                if let Err(e) = served.await {
                    tracing::warn!(error = %e, "webhook listener failed");
                }
            });
            None
        }
        (_, hooks) => hooks,
    };
    let served = serve_with(listener, state, rest_hooks, server_tls, cancel.clone()).await;
    cancel.cancel();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(10), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop within 10 s");
    }
    // A stale run.json would point at a dead process.
    let _ = std::fs::remove_file(&run_path);
    served.map_err(DaemonError::Api)
}

fn write_run_file(path: &Path, info: &RunInfo) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(info).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, path)
}

/// Reads a daemon's `run.json`, if it is running.
pub fn read_run_file(dir: &Path) -> Option<RunInfo> {
    let bytes = std::fs::read(dir.join(RUN_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Resolves when the process receives SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_listening_everywhere_calls_itself_on_loopback() {
        let cases = [
            ("0.0.0.0:9094", "127.0.0.1:9094"),
            ("[::]:9094", "[::1]:9094"),
            ("10.0.0.5:9094", "10.0.0.5:9094"),
            ("127.0.0.1:0", "127.0.0.1:0"),
        ];
        for (listen, own) in cases {
            let got = self_address(listen.parse().unwrap());
            assert_eq!(got, own.parse().unwrap(), "{listen}");
        }
    }
}
