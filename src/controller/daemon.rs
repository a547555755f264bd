//! The controller inside `pinfleet daemon` (`[controller]` in
//! `service.toml`): every source runs under a supervisor that starts the
//! source's loop ([`run_dir`] / [`run_git`] / [`run_kube`]) only while this peer is the Raft
//! leader, and stops it when leadership is lost, so exactly one controller in
//! the cluster acts. The controller talks to the cluster through this peer's
//! own REST API, like `pinfleet controller --host`.
//!
//! Webhooks: each receiver `KIND:NAME` of `controller.webhooks` is served at
//! `POST /hooks/NAME` (on the REST listener, or on `controller.webhook_listen`
//! alone, as the daemon decides); a valid hook triggers an immediate fetch
//! of **every** git source of the leader (receivers are not tied to one
//! source). A follower verifies the hook itself, then forwards it to the
//! leader over the cluster RPC ([`ForwardHook`]) and answers `202` once the
//! leader took it, `503` when there is no leader or it cannot be reached.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use futures::future::BoxFuture;
use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{
    ConditionType, Controller, ControllerOptions, KubeOptions, ReconcileOutcome, ReconcileRequests,
    Reconcilers, run_dir, run_git, run_kube,
};
use crate::client::{Client, ClientError};
use crate::config::ControllerConfig;
use crate::consensus::{ClusterNode, Method};
use crate::manifest::Limits;
use crate::source::git::{Credentials, GitSpecError, redact};
use crate::source::webhook::{self, Delivery, HookSink, Receiver};
use crate::source::{DirSource, GitSource};

/// How often a supervisor checks whether this peer leads.
pub const LEADER_POLL: Duration = Duration::from_millis(500);

/// How long a supervisor waits before restarting a source loop that failed.
const RETRY: Duration = Duration::from_secs(5);

/// How long a follower waits for the leader to take a forwarded hook.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// A valid hook a follower received, forwarded to the leader: the
/// receiver's name; the leader fetches its git sources now. Only cluster
/// peers (holding the network secret) can call it.
#[derive(Debug)]
pub struct ForwardHook;

impl Method for ForwardHook {
    const NAME: &'static str = "controller.hook";
    type Request = String;
    type Reply = ();
}

/// Where this peer's valid hooks go: the local controller when this peer
/// leads, else the leader's, through [`ForwardHook`].
struct LeaderSink {
    node: ClusterNode,
    local: mpsc::Sender<String>,
}

impl HookSink for LeaderSink {
    fn deliver<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Delivery> {
        Box::pin(async move {
            if self.node.is_leader() {
                return webhook::try_trigger(&self.local, name);
            }
            let Some(leader) = self.node.leader() else {
                return Delivery::Unavailable(
                    "no raft leader to forward the hook to: retry later".into(),
                );
            };
            let Some(peer) = self
                .node
                .members()
                .into_iter()
                .find(|(id, _)| *id == leader)
                .and_then(|(_, n)| n.peer_id.parse::<PeerId>().ok())
            else {
                return Delivery::Unavailable(
                    "the raft leader is not a known member: retry later".into(),
                );
            };
            let request = name.to_string();
            match tokio::time::timeout(
                FORWARD_TIMEOUT,
                self.node.call::<ForwardHook>(peer, &request),
            )
            .await
            {
                Ok(Ok(())) => {
                    tracing::info!(receiver = %name, leader = %peer, "webhook forwarded to the leader");
                    Delivery::Triggered
                }
                Ok(Err(e)) => {
                    Delivery::Unavailable(format!("cannot forward the hook to the leader: {e}"))
                }
                Err(_) => Delivery::Unavailable(
                    "cannot forward the hook to the leader: it did not answer in time".into(),
                ),
            }
        })
    }
}

/// Serves [`ForwardHook`] on `node`: while this peer leads, a forwarded hook
/// goes on `local` like one received here.
fn serve_forwarded(node: &ClusterNode, local: mpsc::Sender<String>) {
    let me = node.clone();
    node.serve::<ForwardHook, _, _>(move |name: String| {
        let (me, local) = (me.clone(), local.clone());
        async move {
            if !me.is_leader() {
                return Err("not the leader".to_string());
            }
            match webhook::try_trigger(&local, &name) {
                Delivery::Unavailable(why) => Err(why),
                _ => {
                    tracing::info!(receiver = %name, "webhook forwarded by a follower: accepted");
                    Ok(())
                }
            }
        }
    });
}

/// Environment variable holding the webhooks' shared secret.
pub const WEBHOOK_SECRET_ENV: &str = "PINFLEET_WEBHOOK_SECRET";

/// Why the daemon's controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A `dir:` source's directory cannot be opened.
    #[error("cannot open source directory {path}")]
    Dir {
        /// The directory as configured.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A `git:` source does not parse.
    #[error("invalid git source")]
    Git(#[source] GitSpecError),
    /// The git credentials cannot be read.
    #[error("cannot read the git credentials")]
    Credentials(#[source] std::io::Error),
    /// A source is neither `dir:`, `git:` nor `kube[:NAMESPACE]`.
    #[error(
        "unsupported source {}: expected dir:PATH, git:URL[#ref=REF&path=SUBDIR] or kube[:NAMESPACE]",
        crate::manifest::shown(.0)
    )]
    Unsupported(String),
    /// Webhooks are listed but the secret is not set.
    #[error("controller.webhooks needs the shared secret in {WEBHOOK_SECRET_ENV}")]
    WebhookSecret,
    /// Webhooks are listed but no source is a git source.
    #[error("controller.webhooks lists receivers but controller.sources has no git source")]
    WebhooksWithoutGit,
    /// The API URL is not usable.
    #[error("cannot build a client of the local api")]
    Client(#[source] ClientError),
}

enum Source {
    Dir(DirSource),
    Git(Box<GitSource>, mpsc::Receiver<()>),
    /// PinSet objects of Kubernetes (in one namespace, or all).
    Kube(Option<String>),
}

impl Source {
    fn name(&self) -> String {
        match self {
            Self::Dir(d) => d.name(),
            Self::Git(g, _) => g.name(),
            Self::Kube(None) => "kube".to_string(),
            Self::Kube(Some(ns)) => format!("kube:{ns}"),
        }
    }
}

/// What [`spawn`] started, for the REST listener to serve.
#[derive(Debug, Default)]
pub struct Started {
    /// The webhook router (`POST /hooks/{name}`), when webhooks are
    /// configured.
    pub hooks: Option<Router>,
    /// Reconcile-now requests per source (for `POST
    /// /pinsets/{ns}/{name}/reconcile`); empty without sources.
    pub reconcilers: Reconcilers,
}

/// Starts the controller of `config` on this peer: one supervised task per
/// source on `tasks`, all stopped by `cancel`. `api` is a client of this
/// peer's REST API (with its CA and the credentials this peer takes from
/// its own controller); `peer_dir` anchors a relative `git_cache`. Nothing
/// is started when `config.sources` is empty.
pub fn spawn(
    node: ClusterNode,
    api: Client,
    config: &ControllerConfig,
    peer_dir: &Path,
    cancel: &CancellationToken,
    tasks: &TaskTracker,
) -> Result<Started, StartError> {
    if config.sources.is_empty() {
        return Ok(Started::default());
    }
    let client = api;
    let limits = Limits::default();
    let cache = peer_dir.join(&config.git_cache);
    let mut sources = Vec::new();
    let mut git_triggers = Vec::new();
    for text in &config.sources {
        if let Some(path) = text.strip_prefix("dir:") {
            let path = PathBuf::from(path);
            let dir =
                DirSource::new(&path, limits).map_err(|source| StartError::Dir { path, source })?;
            sources.push(Source::Dir(dir));
        } else if let Some(spec) = text.strip_prefix("git:") {
            let creds = Credentials::from_env(None).map_err(StartError::Credentials)?;
            let git = GitSource::parse(spec, &cache, creds, limits).map_err(StartError::Git)?;
            let (tx, rx) = mpsc::channel(1);
            git_triggers.push(tx);
            sources.push(Source::Git(Box::new(git), rx));
        } else if let Some(kube) = crate::source::kube::parse_spec(text) {
            sources.push(Source::Kube(
                kube.map_err(|_| StartError::Unsupported(text.clone()))?,
            ));
        } else {
            return Err(StartError::Unsupported(redact(text)));
        }
    }
    let hooks = if config.webhooks.is_empty() {
        None
    } else {
        if git_triggers.is_empty() {
            return Err(StartError::WebhooksWithoutGit);
        }
        let secret = std::env::var(WEBHOOK_SECRET_ENV)
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or(StartError::WebhookSecret)?;
        let receivers = config
            .webhooks
            .iter()
            .map(|(kind, name)| Receiver::new(name.clone(), *kind, secret.as_bytes()))
            .collect();
        let (hook_tx, mut hook_rx) = mpsc::channel::<String>(16);
        let stop = cancel.clone();
        tasks.spawn(async move {
            loop {
                let name = tokio::select! {
                    _ = stop.cancelled() => break,
                    name = hook_rx.recv() => match name {
                        Some(n) => n,
                        None => break,
                    },
                };
                tracing::info!(receiver = %name, "webhook: fetching every git source now");
                for tx in &git_triggers {
                    // Full means a fetch is already due: coalesce.
                    let _ = tx.try_send(());
                }
            }
        });
        serve_forwarded(&node, hook_tx.clone());
        let sink = LeaderSink {
            node: node.clone(),
            local: hook_tx,
        };
        Some(webhook::router_to(receivers, std::sync::Arc::new(sink)))
    };
    let mut reconcilers = std::collections::BTreeMap::new();
    for source in sources {
        let opts = ControllerOptions {
            source: source.name(),
            force: config.force,
            requests: ReconcileRequests::default(),
        };
        reconcilers.insert(opts.source.clone(), opts.requests.clone());
        tasks.spawn(supervise(
            node.clone(),
            client.clone(),
            opts,
            source,
            config.interval,
            cancel.clone(),
        ));
    }
    Ok(Started {
        hooks,
        reconcilers: std::sync::Arc::new(reconcilers),
    })
}

/// Runs `source` while this peer leads, until `cancel`.
async fn supervise(
    node: ClusterNode,
    client: Client,
    opts: ControllerOptions,
    mut source: Source,
    interval: Duration,
    cancel: CancellationToken,
) {
    let name = opts.source.clone();
    loop {
        // Wait for leadership; hooks received meanwhile (none are sent
        // here while a follower: they are forwarded) are dropped.
        while !node.is_leader() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(LEADER_POLL) => {}
            }
            if let Source::Git(_, hooks) = &mut source {
                while hooks.try_recv().is_ok() {}
            }
        }
        tracing::info!(source = %name, "leader: controller starting");
        let term = cancel.child_token();
        let controller = Controller::new(client.clone(), opts.clone());
        let (term_tx, term_rx) = mpsc::channel::<()>(1);
        let sink = {
            let name = name.clone();
            move |o: &ReconcileOutcome| log_outcome(&name, o)
        };
        let (run, mut hooks): (Pin<Box<dyn Future<Output = bool> + Send>>, _) = match &mut source {
            Source::Dir(d) => {
                let d = d.clone();
                let term = term.clone();
                let name = name.clone();
                (
                    Box::pin(async move {
                        match run_dir(controller, d, interval, term, sink).await {
                            Ok(_) => true,
                            Err(e) => {
                                tracing::warn!(source = %name, error = %e, "cannot watch the source directory");
                                false
                            }
                        }
                    }),
                    None,
                )
            }
            Source::Git(g, hooks) => {
                let g = (**g).clone();
                let term = term.clone();
                (
                    Box::pin(async move {
                        run_git(controller, g, interval, term_rx, term, sink).await;
                        true
                    }),
                    Some(hooks),
                )
            }
            Source::Kube(namespace) => {
                let opts = KubeOptions {
                    namespace: namespace.clone(),
                    force: opts.force,
                    interval,
                    requests: opts.requests.clone(),
                    ..KubeOptions::default()
                };
                let (client, term, name) = (client.clone(), term.clone(), name.clone());
                drop(controller);
                (
                    Box::pin(async move {
                        // In-cluster configuration, else the kubeconfig
                        // (rustls needs its provider: a daemon embedded in
                        // another program may not have installed one).
                        crate::tls::install_crypto_provider();
                        match ::kube::Client::try_default().await {
                            Ok(kube) => {
                                run_kube(client, kube, opts, term).await;
                                true
                            }
                            Err(e) => {
                                tracing::warn!(source = %name, error = %super::error_chain(&e), "cannot build a kubernetes client");
                                false
                            }
                        }
                    }),
                    None,
                )
            }
        };
        let mut check = tokio::time::interval(LEADER_POLL);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut run = run;
        let clean = loop {
            tokio::select! {
                clean = &mut run => break clean,
                _ = check.tick() => {
                    if !term.is_cancelled() && !node.is_leader() {
                        tracing::info!(source = %name, "leadership lost: controller stopping");
                        term.cancel();
                    }
                }
                Some(()) = async {
                    match hooks.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let _ = term_tx.try_send(());
                }
            }
        };
        term.cancel();
        if cancel.is_cancelled() {
            return;
        }
        if !clean {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }
}

/// One line per PinSet outcome: info, or warn when Stalled.
fn log_outcome(source: &str, out: &ReconcileOutcome) {
    if out.skipped {
        tracing::debug!(source, revision = ?out.revision, "reconcile skipped: unchanged");
        return;
    }
    if let Some(e) = &out.source_error {
        tracing::warn!(source, error = %e, "source does not load; the last good revision stays applied");
    }
    for p in &out.pinsets {
        if p.condition == ConditionType::Stalled {
            tracing::warn!(source, pinset = %format!("{}/{}", p.namespace, p.name), reason = %p.reason, outcome = %p, "pinset stalled");
        } else {
            tracing::info!(source, pinset = %format!("{}/{}", p.namespace, p.name), reason = %p.reason, outcome = %p, "pinset reconciled");
        }
    }
}
