//! `pinfleet reconcile pinset/NS/NAME`: ask the controller that runs a
//! PinSet's source to reconcile it now, wait for it, and show the result.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::NO;
use super::apply::parse_target;
use super::remote::{HostArgs, block_on};
use super::status::pinset_table;
use pinfleet::client::ClientError;

/// Arguments of `pinfleet reconcile`.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// The PinSet: `pinset/NAMESPACE/NAME` or `pinset/NAME` (namespace
    /// `default`).
    #[arg(value_name = "pinset/NS/NAME")]
    target: String,
    /// Return once the request is queued instead of when it is done.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for the reconcile (e.g. 30s, 2m; at most 10m).
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_timeout)]
    wait_timeout: Duration,
    #[command(flatten)]
    host: HostArgs,
    /// JSON on stdout: the request's answer, then (when waiting) the
    /// PinSet's status object.
    #[arg(long)]
    json: bool,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    pinfleet::manifest::duration::parse_duration(s)
}

/// Runs `pinfleet reconcile`: exit 0 when the reconcile ran, succeeded and
/// the PinSet is not Stalled (or, with --no-wait, when it is queued); 1 when
/// the PinSet is unknown, its source is run by no controller there, the wait
/// timed out, the reconcile failed (e.g. the source could not be fetched) or
/// the PinSet is Stalled; 2 on other errors.
pub fn run(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let client = args.host.client()?;
    let id = parse_target(&args.target)?;
    let wait = (!args.no_wait).then_some(args.wait_timeout);
    let answer = match block_on(client.reconcile(&id, wait))? {
        Ok(a) => a,
        Err(ClientError::Api {
            status: status @ (404 | 409 | 504),
            message,
            ..
        }) => {
            match status {
                404 => eprintln!("pinset {id} is not in the cluster"),
                _ => eprintln!("{message}"),
            }
            return Ok(ExitCode::from(NO));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot request a reconcile of {id}")),
    };
    if args.json {
        println!("{}", serde_json::to_string(&answer)?);
    }
    if !answer.handled {
        if !args.json {
            println!(
                "reconcile of pinset {id} queued (source {}, request {})",
                answer.source, answer.ticket
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let status = match block_on(client.pinset_status(&id))? {
        Ok(s) => s,
        // A standalone controller's listener serves no status: the
        // reconcile is done, the status lives on the cluster's API.
        Err(ClientError::Api { status: 404, .. }) => {
            println!(
                "reconciled pinset {id} from {}; see `pinfleet status pinset/{}/{} --host <cluster api>`",
                answer.source, id.namespace, id.name
            );
            if let Some(o) = answer.outcome.as_ref().filter(|o| !o.healthy) {
                eprintln!(
                    "the reconcile did not succeed: {}",
                    o.error.as_deref().unwrap_or("unknown error")
                );
                return Ok(ExitCode::from(NO));
            }
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("reconciled, but cannot read the status of pinset {id}"));
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&status)?);
    } else {
        println!("reconciled pinset {id} from {}", answer.source);
        print!("{}", pinset_table(&id, &status));
    }
    let stalled = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Stalled" && c.status == "True");
    let failed = answer.outcome.as_ref().filter(|o| !o.healthy);
    if let Some(o) = failed {
        eprintln!(
            "the reconcile did not succeed: {}",
            o.error.as_deref().unwrap_or("unknown error")
        );
    }
    Ok(if stalled || failed.is_some() {
        ExitCode::from(NO)
    } else {
        ExitCode::SUCCESS
    })
}
