//! `pinfleet controller`: runs a source's reconcile loop against a cluster.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use pinfleet::controller::{
    Client, Controller, ControllerOptions, DirSource, ReconcileOutcome, run_dir,
};
use tokio_util::sync::CancellationToken;

use super::LimitArgs;
use super::remote::{HostArgs, block_on};

/// Arguments of `pinfleet controller`.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Where manifests come from: `dir:PATH`.
    #[arg(long, value_name = "SOURCE")]
    source: String,
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

/// Runs the controller.
pub fn run(args: ControllerArgs) -> anyhow::Result<ExitCode> {
    let Some(path) = args.source.strip_prefix("dir:") else {
        bail!("unsupported source {:?}: expected dir:PATH", args.source);
    };
    let source = DirSource::new(&PathBuf::from(path), args.limits.limits())
        .with_context(|| format!("cannot open source directory {path}"))?;
    let client = Client::new(&args.host.host)?;
    let controller = Controller::new(
        client.clone(),
        ControllerOptions {
            source: source.name(),
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
            let out = controller.reconcile(source.load().await, false).await;
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
        run_dir(controller, source, args.interval, cancel, |o| {
            print_outcome(o, json)
        })
        .await
        .context("cannot watch the source directory")?;
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
