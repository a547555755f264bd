//! `testbed up --followers N`: once the peers (the cluster's trusted peers)
//! formed the cluster, the testbed publishes the follower config
//! `<dir>/follow.json` and starts N followers as `pinfleet follow
//! <dir>/follow.json --dir <dir>/follower-<i>`, the command a user runs;
//! the testbed only prepares each follower's directory first (identity,
//! loopback ports, IPFS backend, API users), as it does for peers.
//!
//! A follower counts as up when its REST API answers and it holds as many
//! allocations as peer 0: it has applied the state the peers sign.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use super::{
    PeerSetup, Testbed, TestbedError, TestbedIpfs, TestbedOptions, fresh_ports, io, set_peer_config,
};
use crate::auth::Credential;
use crate::config::{FOLLOW_FILE, FollowConfig, IDENTITY_FILE, SERVICE_FILE, ServiceConfig};
use crate::daemon::read_run_file;

/// One follower in `testbed.json`. Fields are stable; later versions only
/// add.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestbedFollower {
    /// libp2p peer id.
    pub id: String,
    /// Process id of the follower's daemon.
    pub pid: u32,
    /// Follower directory.
    pub dir: PathBuf,
    /// REST API base URL (read-only: a follower refuses writes).
    pub api: String,
    /// argv that starts this follower again.
    pub cmd: Vec<String>,
}

impl TestbedIpfs {
    /// The followers' IPFS nodes: embedded as the peers', none otherwise
    /// (the Kubo URLs are the peers').
    fn for_followers(&self) -> TestbedIpfs {
        match self {
            TestbedIpfs::Kubo(_) => TestbedIpfs::None,
            other => other.clone(),
        }
    }
}

/// Creates identity and follower config (fresh loopback ports) for a
/// follower that has none yet.
fn prepare_follower(
    who: &str,
    index: usize,
    dir: &Path,
    follow: &FollowConfig,
) -> Result<(), TestbedError> {
    if dir.join(IDENTITY_FILE).exists() && dir.join(SERVICE_FILE).exists() {
        return Ok(());
    }
    let prep = |message: String| TestbedError::Prepare {
        who: who.to_string(),
        message,
    };
    let report =
        crate::config::init_follower(dir, true, follow, Some(&format!("follower-{index}")))
            .map_err(|e| prep(e.to_string()))?;
    let mut config =
        ServiceConfig::load_with_env(&report.service_path, &[]).map_err(|e| prep(e.to_string()))?;
    fresh_ports(&mut config).map_err(prep)?;
    crate::config::write_private_file(&report.service_path, config.to_toml().as_bytes(), true)
        .map_err(io("cannot write", &report.service_path))
}

/// A follower's `[cluster]` as `follow` has it (the peers' addresses and
/// the secret may have changed since the follower was created).
fn follow_cluster(config: &mut ServiceConfig, follow: &FollowConfig) {
    let published = follow.service_config().cluster;
    config.cluster.follower = true;
    config.cluster.name = published.name;
    config.cluster.secret = published.secret;
    config.cluster.bootstrap = published.bootstrap;
    config.cluster.replication_factor_min = published.replication_factor_min;
    config.cluster.replication_factor_max = published.replication_factor_max;
    config.cluster.trusted_peers = published.trusted_peers;
}

impl Testbed {
    /// Publishes `follow.json` and starts `opts.followers` followers of it;
    /// returns once each has applied the state.
    pub(super) async fn start_followers(
        &mut self,
        opts: &TestbedOptions,
        users: &BTreeMap<String, Credential>,
        deadline: tokio::time::Instant,
    ) -> Result<(), TestbedError> {
        let follow = self.publish(&opts.dir)?;
        let follow_path = opts.dir.join(FOLLOW_FILE);
        let ipfs = opts.ipfs.for_followers();
        for i in 0..opts.followers {
            let who = format!("follower {i}");
            let dir = opts.dir.join(format!("follower-{i}"));
            prepare_follower(&who, i, &dir, &follow)?;
            let setup = PeerSetup {
                who: who.clone(),
                backend: ipfs.for_peer(i),
                ipfs: &ipfs,
                users,
                pinsvc_token: None,
            };
            set_peer_config(&dir, &setup, |c| follow_cluster(c, &follow))?;
            let args = vec![
                "follow".to_string(),
                follow_path.display().to_string(),
                "--dir".to_string(),
                dir.display().to_string(),
            ];
            let (pid, info) = self.spawn(&who, &dir, &opts.exe, &args, deadline).await?;
            let mut cmd = vec![opts.exe.display().to_string()];
            cmd.extend(args);
            self.file.followers.push(TestbedFollower {
                id: info.id,
                pid,
                dir,
                api: info.api,
                cmd,
            });
        }
        self.wait_followers_applied(deadline, opts.timeout).await
    }

    /// Writes `<dir>/follow.json`: peer 0's cluster, every peer trusted,
    /// at the p2p addresses the running peers listen on.
    fn publish(&self, dir: &Path) -> Result<FollowConfig, TestbedError> {
        let prep = |message: String| TestbedError::Prepare {
            who: "follow.json".into(),
            message,
        };
        let first = self
            .file
            .peers
            .first()
            .ok_or_else(|| prep("no peers".into()))?;
        let config = ServiceConfig::load_with_env(&first.dir.join(SERVICE_FILE), &[])
            .map_err(|e| prep(e.to_string()))?;
        let mut trusted = Vec::new();
        let mut addrs: BTreeMap<PeerId, Vec<Multiaddr>> = BTreeMap::new();
        for p in &self.file.peers {
            let id: PeerId = p.id.parse().map_err(|_| prep(format!("bad id {}", p.id)))?;
            let listed = read_run_file(&p.dir)
                .map(|info| info.p2p.iter().filter_map(|a| a.parse().ok()).collect())
                .unwrap_or_default();
            addrs.insert(id, listed);
            trusted.push(id);
        }
        let follow = FollowConfig::publish(&config, &trusted, |id| {
            addrs.get(id).cloned().unwrap_or_default()
        })
        .map_err(|e| prep(e.to_string()))?;
        let path = dir.join(FOLLOW_FILE);
        // It holds the cluster secret.
        crate::config::write_private_file(&path, follow.to_json().as_bytes(), true)
            .map_err(io("cannot write", &path))?;
        Ok(follow)
    }

    /// Waits until every follower's API answers and it holds as many
    /// allocations as peer 0.
    async fn wait_followers_applied(
        &mut self,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<(), TestbedError> {
        let auth = self
            .file
            .credentials("reader")
            .and_then(|c| crate::client::Auth::basic(c).ok());
        let client = |api: &str| {
            crate::client::Client::new(api)
                .map(|c| {
                    c.with_auth(auth.clone())
                        .with_timeout(Some(Duration::from_secs(10)))
                })
                .ok()
        };
        let peer0 = self.file.peers.first().and_then(|p| client(&p.api));
        let followers: Vec<_> = self
            .file
            .followers
            .iter()
            .map(|f| (f.api.clone(), client(&f.api)))
            .collect();
        let mut waiting: Vec<String> = Vec::new();
        loop {
            if !self.all_running() {
                return Err(TestbedError::FollowersBehind {
                    timeout,
                    waiting: "a peer or follower exited".into(),
                });
            }
            let want = match &peer0 {
                Some(c) => allocation_count(c).await,
                None => None,
            };
            waiting.clear();
            for (api, c) in &followers {
                let applied = match (c, want) {
                    (Some(c), Some(want)) => {
                        c.id().await.is_ok() && allocation_count(c).await == Some(want)
                    }
                    _ => false,
                };
                if !applied {
                    waiting.push(api.clone());
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(TestbedError::FollowersBehind {
                    timeout,
                    waiting: waiting.join(", "),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// How many allocations the peer at `client` lists (`GET /allocations`).
async fn allocation_count(client: &crate::client::Client) -> Option<usize> {
    let mut lines = client.allocations(None).await.ok()?;
    let mut n = 0;
    while let Some(line) = lines.next().await {
        line.ok()?;
        n += 1;
    }
    Some(n)
}
