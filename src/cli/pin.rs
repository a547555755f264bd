//! `pinfleet pin add|rm|ls`: pins by hand (owner `api`) and the pin list.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use pinfleet::manifest::Owner;
use pinfleet::wire::PinRecord;

use super::NO;
use super::remote::{HostArgs, Out, block_on};
use pinfleet::client::ClientError;

/// Manual pin commands.
#[derive(Debug, Subcommand)]
pub enum PinCommand {
    /// Pin a CID by hand (owner `api`); PinSets never remove it.
    Add(PinAddArgs),
    /// Release the `api` owner of a CID; it stays pinned while a PinSet owns it.
    Rm(PinRmArgs),
    /// List every pin of the shared state with its owners.
    Ls(PinLsArgs),
}

/// Arguments of `pinfleet pin add`.
#[derive(Debug, Args)]
pub struct PinAddArgs {
    /// CID to pin (v0 `Qm…` or v1); it is reported as written.
    #[arg(value_name = "CID")]
    cid: String,
    /// Pin name.
    #[arg(long)]
    name: Option<String>,
    /// Fewest peers that must pin it (-1: every peer; 0: cluster default).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    replication_min: Option<i32>,
    /// Most peers that may pin it (-1: every peer; 0: cluster default).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    replication_max: Option<i32>,
    /// `recursive` (default) or `direct`.
    #[arg(long, value_name = "MODE")]
    mode: Option<String>,
    /// Unpin at this time (RFC 3339, e.g. 2030-01-01T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    expire_at: Option<String>,
    /// Metadata key=value (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    /// Multiaddress of a peer that has the content (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    origin: Vec<String>,
    #[command(flatten)]
    host: HostArgs,
    /// Print the pin's JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Arguments of `pinfleet pin rm`.
#[derive(Debug, Args)]
pub struct PinRmArgs {
    /// CID to release.
    #[arg(value_name = "CID")]
    cid: String,
    #[command(flatten)]
    host: HostArgs,
    /// Print the pin's JSON (with its remaining owners) on stdout.
    #[arg(long)]
    json: bool,
}

/// Arguments of `pinfleet pin ls`.
#[derive(Debug, Args)]
pub struct PinLsArgs {
    /// Show only this CID (exit 1 when it is not pinned).
    #[arg(value_name = "CID")]
    cid: Option<String>,
    /// IPFS Cluster pin type filter (`pin`, `meta-pin`, …, `all`).
    #[arg(long, value_name = "TYPES")]
    filter: Option<String>,
    #[command(flatten)]
    host: HostArgs,
    /// Print one Pin JSON object per line on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `pinfleet pin ...`.
pub fn run(cmd: PinCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PinCommand::Add(args) => add(args),
        PinCommand::Rm(args) => {
            let client = args.host.client()?;
            let pin = block_on(client.unpin(&args.cid))??;
            if args.json {
                println!("{}", serde_json::to_string(&pin)?);
            } else if pin.owners.is_empty() {
                println!("unpinned {}", pin.cid);
            } else {
                println!("released {} (still pinned for {})", pin.cid, owners(&pin));
            }
            Ok(ExitCode::SUCCESS)
        }
        PinCommand::Ls(args) => {
            let client = args.host.client()?;
            if let Some(cid) = &args.cid {
                return match block_on(client.allocation(cid))? {
                    Ok(pin) => {
                        if args.json {
                            println!("{}", serde_json::to_string(&pin)?);
                        } else {
                            println!("{}", pin_line(&pin));
                        }
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(ClientError::Api { status: 404, .. }) => {
                        eprintln!("{cid} is not pinned");
                        Ok(ExitCode::from(NO))
                    }
                    Err(e) => Err(e.into()),
                };
            }
            block_on(async move {
                let mut pins = client.allocations(args.filter.as_deref()).await?;
                let mut out = Out::new();
                while let Some(pin) = pins.next().await {
                    let pin = pin?;
                    let line = if args.json {
                        serde_json::to_string(&pin)?
                    } else {
                        pin_line(&pin)
                    };
                    if !out.line(&line)? {
                        break;
                    }
                }
                out.finish()
            })??;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn add(args: PinAddArgs) -> anyhow::Result<ExitCode> {
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(n) = &args.name {
        query.push(("name", n.clone()));
    }
    if let Some(n) = args.replication_min {
        query.push(("replication-min", n.to_string()));
    }
    if let Some(n) = args.replication_max {
        query.push(("replication-max", n.to_string()));
    }
    if let Some(m) = &args.mode {
        query.push(("mode", m.clone()));
    }
    if let Some(t) = &args.expire_at {
        query.push(("expire-at", t.clone()));
    }
    let mut meta_keys = Vec::new();
    for kv in &args.metadata {
        let Some((k, v)) = kv.split_once('=') else {
            anyhow::bail!(
                "--metadata {}: expected KEY=VALUE",
                pinfleet::manifest::shown(kv)
            );
        };
        if k.is_empty() {
            anyhow::bail!(
                "--metadata {}: the key is empty",
                pinfleet::manifest::shown(kv)
            );
        }
        meta_keys.push((format!("meta-{k}"), v.to_string()));
    }
    if !args.origin.is_empty() {
        query.push(("origins", args.origin.join(",")));
    }
    query.extend(meta_keys.iter().map(|(k, v)| (k.as_str(), v.clone())));
    let client = args.host.client()?;
    let pin = block_on(client.pin(&args.cid, &query))??;
    if args.json {
        println!("{}", serde_json::to_string(&pin)?);
    } else {
        println!("pinned {}", pin_line(&pin));
    }
    Ok(ExitCode::SUCCESS)
}

fn owners(pin: &PinRecord) -> String {
    pin.owners
        .keys()
        .map(Owner::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `CID | name | replication | mode | owners`.
fn pin_line(pin: &PinRecord) -> String {
    let name = if pin.name.is_empty() { "-" } else { &pin.name };
    format!(
        "{} | {} | replication {}/{} | {} | {}",
        pin.cid,
        name,
        pin.replication_factor_min,
        pin.replication_factor_max,
        pin.mode.as_str(),
        owners(pin)
    )
}
