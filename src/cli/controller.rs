//! `pinfleet controller`: runs a source's reconcile loop against a cluster.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use pinfleet::controller::git::{Credentials, poll};
use pinfleet::controller::{
    Client, Controller, ControllerOptions, DirSource, GitSource, ReconcileOutcome, run_dir, run_git,
};
use tokio_util::sync::CancellationToken;

use super::LimitArgs;
use super::remote::{HostArgs, block_on};

/// Arguments of `pinfleet controller`.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Where manifests come from: `dir:PATH` or
    /// `git:URL[#ref=BRANCH|tag=T|semver=RANGE|commit=SHA|name=REF][&path=SUBDIR]`.
    #[arg(long, value_name = "SOURCE")]
    source: String,
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
    /// Reconcile once and exit: 0 when every PinSet is Ready, 1 when any is
    /// Stalled or the source does not load.
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

/// Runs the controller.
pub fn run(args: ControllerArgs) -> anyhow::Result<ExitCode> {
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
            "unsupported source {:?}: expected dir:PATH or git:URL[#ref=REF&path=SUBDIR]",
            pinfleet::controller::git::redact(&args.source)
        );
    };
    let name = match &source {
        Source::Dir(d) => d.name(),
        Source::Git(g) => g.name(),
    };
    let client = Client::new(&args.host.host)?;
    let controller = Controller::new(
        client.clone(),
        ControllerOptions {
            source: name,
            force: args.force,
        },
    );
    let json = args.json;
    block_on(async move {
        // An unreachable host is an error, not a Stalled outcome, at start.
        client
            .pinsets()
            .await
            .with_context(|| format!("cannot talk to the cluster at {}", args.host.host))?;
        if args.once {
            let mut controller = controller;
            let out = match &source {
                Source::Dir(d) => controller.reconcile(d.load().await, false).await,
                Source::Git(g) => poll(&mut controller, g, &mut None).await,
            };
            print_outcome(&out, json);
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
        match source {
            Source::Dir(d) => {
                run_dir(controller, d, args.interval, cancel, |o| {
                    print_outcome(o, json)
                })
                .await
                .context("cannot watch the source directory")?;
            }
            Source::Git(g) => {
                // No webhook receiver here yet: the sender stays open so the
                // loop polls on the interval only.
                let (_trigger, rx) = tokio::sync::mpsc::channel(1);
                run_git(controller, *g, args.interval, rx, cancel, |o| {
                    print_outcome(o, json)
                })
                .await;
            }
        }
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
