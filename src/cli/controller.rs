//! `pinfleet controller`: runs a source's reconcile loop against a cluster.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use pinfleet::controller::reporter::{Forge, Reporter, sha_of_revision};
use pinfleet::controller::{
    Controller, ControllerOptions, ReconcileOutcome, ReconcileRequests, Reconcilers, poll,
    requests, run_dir, run_git,
};
use pinfleet::source::git::Credentials;
use pinfleet::source::webhook::{self, Receiver, ReceiverKind};
use pinfleet::source::{DirSource, GitSource};
use tokio_util::sync::CancellationToken;

use super::LimitArgs;
use super::remote::{HostArgs, block_on};

/// Arguments of `pinfleet controller`.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Where manifests come from: `dir:PATH`,
    /// `git:URL[#ref=BRANCH|tag=T|semver=RANGE|commit=SHA|name=REF][&path=SUBDIR]`
    /// or `kube` (PinSet objects of Kubernetes, in-cluster or kubeconfig
    /// credentials).
    #[arg(long, value_name = "SOURCE")]
    source: String,
    /// With `--source kube`: watch this namespace only (default: every
    /// namespace).
    #[arg(long, value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// With `--source kube`: act only while holding the Lease
    /// `pinfleet-controller` (coordination.k8s.io/v1), so that of several
    /// replicas one acts at a time.
    #[arg(long)]
    leader_elect: bool,
    /// Namespace of that Lease (default: --namespace, else POD_NAMESPACE,
    /// else `default`).
    #[arg(long, value_name = "NAMESPACE", requires = "leader_elect")]
    lease_namespace: Option<String>,
    /// With `--source kube`: most PinSet objects reconciled at once
    /// (default 16).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: Option<u16>,
    /// Cache directory of git sources (cache repository and checkouts).
    #[arg(long, value_name = "DIR", default_value = ".pinfleet-git")]
    cache: PathBuf,
    /// File holding an HTTPS token for git sources (default: the
    /// PINFLEET_GIT_TOKEN environment variable). An SSH key is read from the
    /// file named by PINFLEET_GIT_SSH_KEY.
    #[arg(long, value_name = "PATH")]
    git_token_file: Option<PathBuf>,
    #[command(flatten)]
    host: HostArgs,
    /// Re-reconcile this often to repair drift (e.g. 30s, 1m, 1h).
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = parse_interval)]
    interval: Duration,
    /// Reconcile once and exit: 0 when every PinSet was applied (without
    /// waiting for its pins: `status pinset/NS/NAME --wait` does), 1 when
    /// any is Stalled or the source does not load.
    #[arg(long)]
    once: bool,
    /// Lift the prune guard (releases more than half a PinSet, or a whole one).
    #[arg(long)]
    force: bool,
    /// One JSON object per reconcile instead of one line per PinSet.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    limits: LimitArgs,
    /// Serve HTTP on this address: reconcile-now (`POST
    /// /pinsets/{ns}/{name}/reconcile`, what `pinfleet reconcile --host`
    /// calls) and, with --webhook, git webhooks (`POST /hooks/{name}`).
    #[arg(long = "listen", visible_alias = "webhook-listen", value_name = "ADDR")]
    webhook_listen: Option<std::net::SocketAddr>,
    /// A webhook receiver `KIND:NAME` (KIND: github, gitlab or generic);
    /// repeatable; a valid hook triggers an immediate fetch (git sources).
    /// The secret comes from PINFLEET_WEBHOOK_SECRET.
    #[arg(long, value_name = "KIND:NAME", value_parser = parse_webhook, requires = "webhook_listen")]
    webhook: Vec<(ReceiverKind, String)>,
    /// Report each reconcile as a commit status: `github` or `gitea`
    /// (Gitea and Forgejo). The token comes from PINFLEET_REPORT_TOKEN.
    #[arg(long, value_name = "FORGE", value_parser = parse_forge, requires_all = ["report_api", "report_repo"])]
    report: Option<Forge>,
    /// The forge's API base URL (e.g. https://api.github.com).
    #[arg(long, value_name = "URL")]
    report_api: Option<String>,
    /// The repository to report on, `owner/name`.
    #[arg(long, value_name = "OWNER/NAME")]
    report_repo: Option<String>,
}

fn parse_webhook(s: &str) -> Result<(ReceiverKind, String), String> {
    webhook::parse_receiver_spec(s).map_err(|e| e.to_string())
}

fn parse_forge(s: &str) -> Result<Forge, String> {
    match s {
        "github" => Ok(Forge::GitHub),
        "gitea" | "forgejo" => Ok(Forge::Gitea),
        other => Err(format!(
            "unknown forge {}: expected github or gitea",
            pinfleet::manifest::shown(other)
        )),
    }
}

/// Builds the commit-status reporter from the flags and PINFLEET_REPORT_TOKEN.
fn reporter(args: &ControllerArgs) -> anyhow::Result<Option<Arc<Reporter>>> {
    let Some(forge) = args.report else {
        return Ok(None);
    };
    let token = std::env::var("PINFLEET_REPORT_TOKEN")
        .context("--report needs the forge token in PINFLEET_REPORT_TOKEN")?;
    let api = args.report_api.clone().unwrap_or_default();
    let repo = args.report_repo.clone().unwrap_or_default();
    Ok(Some(Arc::new(Reporter::with_ca(
        forge,
        api,
        &repo,
        token,
        args.host.ca_file.as_deref(),
    )?)))
}

/// Prints an outcome and, with a reporter, posts it as the commit's status
/// (in the background: a slow forge never delays reconciling).
fn outcome_sink(json: bool, reporter: Option<Arc<Reporter>>) -> impl FnMut(&ReconcileOutcome) {
    move |o: &ReconcileOutcome| {
        print_outcome(o, json);
        let Some(r) = reporter.clone() else { return };
        let Some(sha) = o
            .revision
            .as_deref()
            .and_then(sha_of_revision)
            .map(str::to_string)
        else {
            return;
        };
        let outcome = o.clone();
        tokio::spawn(async move {
            if let Err(e) = r.report(&sha, &outcome).await {
                eprintln!("warning: cannot report the commit status: {e}");
            }
        });
    }
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = pinfleet::manifest::duration::parse_duration(s)?;
    if d.is_zero() {
        return Err("the interval must be greater than zero".into());
    }
    Ok(d)
}

enum Source {
    Dir(DirSource),
    Git(Box<GitSource>),
}

/// Runs the kube source: a kube-runtime controller over PinSet objects,
/// until a shutdown signal.
fn run_kube(args: ControllerArgs, namespace: Option<String>) -> anyhow::Result<ExitCode> {
    if args.once || !args.webhook.is_empty() || args.report.is_some() {
        bail!("--once, --webhook and --report are not for the kube source");
    }
    let client = args.host.client()?;
    let requests = ReconcileRequests::default();
    let lease = args.leader_elect.then(|| {
        let ns = args
            .lease_namespace
            .clone()
            .or_else(|| namespace.clone())
            .or_else(|| {
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| "default".to_string());
        pinfleet::controller::LeaseOptions::new(ns)
    });
    let opts = pinfleet::controller::KubeOptions {
        lease,
        namespace,
        force: args.force,
        interval: args.interval,
        limits: args.limits.limits(),
        concurrency: args
            .concurrency
            .unwrap_or(pinfleet::controller::DEFAULT_CONCURRENCY),
        requests: requests.clone(),
        ..Default::default()
    };
    let listen = args.webhook_listen;
    block_on(async move {
        // In-cluster configuration, else the kubeconfig.
        let kube = kube::Client::try_default()
            .await
            .context("cannot build a kubernetes client (in-cluster or kubeconfig)")?;
        client
            .pinsets()
            .await
            .with_context(|| format!("cannot talk to the cluster at {}", client.base_shown()))?;
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            pinfleet::daemon::shutdown_signal().await;
            stop.cancel();
        });
        if let Some(addr) = listen {
            // Reconcile-now of a PinSet object, on loopback only (it has no
            // authentication); elsewhere the port only answers connects (a
            // liveness probe).
            let app = if addr.ip().is_loopback() {
                let reconcilers: Reconcilers = Arc::new(std::collections::BTreeMap::from([(
                    "kube".to_string(),
                    requests,
                )]));
                requests::router(client.clone(), reconcilers)
            } else {
                axum::Router::new()
            };
            serve_listen(addr, app, false, cancel.clone()).await?;
        }
        pinfleet::controller::run_kube(client, kube, opts, cancel).await;
        Ok(ExitCode::SUCCESS)
    })?
}

/// Serves `app` on `--listen ADDR` until `cancel`, and says on stderr
/// where reconcile-now (on loopback only) and, with `webhooks`, the hooks
/// are.
async fn serve_listen(
    addr: std::net::SocketAddr,
    app: axum::Router,
    webhooks: bool,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    if addr.ip().is_loopback() {
        eprintln!("reconcile-now on http://{local}/pinsets/{{ns}}/{{name}}/reconcile");
    }
    if webhooks {
        eprintln!("webhooks on http://{local}/hooks/{{name}}");
    }
    tokio::spawn(pinfleet::api::serve_router(
        listener,
        app,
        None,
        pinfleet::api::DEFAULT_READ_TIMEOUT,
        cancel,
    ));
    Ok(())
}

/// Runs the controller.
pub fn run(args: ControllerArgs) -> anyhow::Result<ExitCode> {
    if let Some(kube) = pinfleet::source::kube::parse_spec(&args.source) {
        let namespace = kube.map_err(|e| anyhow::anyhow!(e))?;
        if namespace.is_some() && args.namespace.is_some() {
            bail!("give the namespace once: --source kube:NAMESPACE or --namespace");
        }
        if let Some(ns) = &args.namespace {
            pinfleet::manifest::check_dns_label(ns)
                .map_err(|e| anyhow::anyhow!("--namespace: {e}"))?;
        }
        let namespace = namespace.or_else(|| args.namespace.clone());
        return run_kube(args, namespace);
    }
    if args.namespace.is_some() || args.leader_elect || args.concurrency.is_some() {
        bail!("--namespace, --leader-elect and --concurrency are for the kube source");
    }
    let source = if let Some(path) = args.source.strip_prefix("dir:") {
        Source::Dir(
            DirSource::new(&PathBuf::from(path), args.limits.limits())
                .with_context(|| format!("cannot open source directory {path}"))?,
        )
    } else if let Some(spec) = args.source.strip_prefix("git:") {
        let creds = Credentials::from_env(args.git_token_file.as_deref())
            .context("cannot read the git token file")?;
        Source::Git(Box::new(GitSource::parse(
            spec,
            &args.cache,
            creds,
            args.limits.limits(),
        )?))
    } else {
        bail!(
            "unsupported source {:?}: expected dir:PATH, git:URL[#ref=REF&path=SUBDIR] or kube",
            pinfleet::source::git::redact(&args.source)
        );
    };
    let name = match &source {
        Source::Dir(d) => d.name(),
        Source::Git(g) => g.name(),
    };
    let client = args.host.client()?;
    let requests = ReconcileRequests::default();
    let reconcilers: Reconcilers = Arc::new(std::collections::BTreeMap::from([(
        name.clone(),
        requests.clone(),
    )]));
    let controller = Controller::new(
        client.clone(),
        ControllerOptions {
            source: name,
            force: args.force,
            requests,
        },
    );
    let json = args.json;
    let reporter = reporter(&args)?;
    let webhook_listen = args.webhook_listen;
    let webhooks = args.webhook.clone();
    if !webhooks.is_empty() && matches!(source, Source::Dir(_)) {
        bail!("--webhook is for git sources (a dir source is watched already)");
    }
    let once_reporter = reporter.clone();
    block_on(async move {
        let sink = outcome_sink(json, reporter);
        // An unreachable host is an error, not a Stalled outcome, at start.
        client
            .pinsets()
            .await
            .with_context(|| format!("cannot talk to the cluster at {}", client.base_shown()))?;
        if args.once {
            let mut controller = controller;
            let out = match &source {
                Source::Dir(d) => controller.reconcile(d.load().await, false).await,
                Source::Git(g) => poll(&mut controller, g, &mut None).await,
            };
            print_outcome(&out, json);
            if let (Some(r), Some(sha)) = (
                &once_reporter,
                out.revision.as_deref().and_then(sha_of_revision),
            ) && let Err(e) = r.report(sha, &out).await
            {
                eprintln!("warning: cannot report the commit status: {e}");
            }
            return Ok(if out.healthy() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(super::NO)
            });
        }
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            pinfleet::daemon::shutdown_signal().await;
            stop.cancel();
        });
        // Git sources are fetched on every webhook; without webhooks the
        // sender stays here (unused), so the loop polls on the interval.
        let (trigger, rx) = tokio::sync::mpsc::channel(1);
        let mut idle_trigger = Some(trigger);
        if let Some(addr) = webhook_listen {
            // Reconcile-now has no authentication of its own: it is served
            // on loopback only. Hooks carry their own signatures, so a
            // forge may reach them on any address.
            let mut app = if addr.ip().is_loopback() {
                requests::router(client.clone(), reconcilers)
            } else {
                eprintln!(
                    "note: {addr} is not a loopback address: reconcile-now (unauthenticated) \
                     is not served there, only webhooks"
                );
                axum::Router::new()
            };
            if !webhooks.is_empty() {
                let secret = std::env::var("PINFLEET_WEBHOOK_SECRET")
                    .context("--webhook needs the shared secret in PINFLEET_WEBHOOK_SECRET")?;
                let receivers = webhooks
                    .iter()
                    .map(|(kind, name)| Receiver::new(name.clone(), *kind, secret.as_bytes()))
                    .collect();
                let (hook_tx, mut hook_rx) = tokio::sync::mpsc::channel::<String>(1);
                app = app.merge(webhook::router(receivers, hook_tx));
                if let Some(trigger) = idle_trigger.take() {
                    tokio::spawn(async move {
                        while let Some(name) = hook_rx.recv().await {
                            tracing::info!(receiver = %name, "webhook: fetching now");
                            // Full means a fetch is already due: coalesce.
                            let _ = trigger.try_send(());
                        }
                    });
                }
            }
            serve_listen(addr, app, !webhooks.is_empty(), cancel.clone()).await?;
        }
        match source {
            Source::Dir(d) => {
                run_dir(controller, d, args.interval, cancel, sink)
                    .await
                    .context("cannot watch the source directory")?;
            }
            Source::Git(g) => {
                run_git(controller, *g, args.interval, rx, cancel, sink).await;
            }
        }
        drop(idle_trigger);
        Ok(ExitCode::SUCCESS)
    })?
}

fn print_outcome(out: &ReconcileOutcome, json: bool) {
    if json {
        println!("{}", serde_json::to_string(out).unwrap_or_default());
        return;
    }
    if out.skipped {
        return;
    }
    if let Some(e) = &out.source_error {
        println!("source  Stalled  (the last good revision stays applied)");
        for line in e.lines() {
            println!("  {line}");
        }
    }
    for p in &out.pinsets {
        println!("{p}");
    }
}
