//! `pinfleet id` and `pinfleet peers ls|rm`: who the peer is and who its
//! fellow members are.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use pinfleet::wire::PeerInfo;

use super::remote::{HostArgs, Out, block_on};

/// Arguments of `pinfleet id`.
#[derive(Debug, Args)]
pub struct IdArgs {
    #[command(flatten)]
    host: HostArgs,
    /// Print IPFS Cluster's ID JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Cluster membership commands.
#[derive(Debug, Subcommand)]
pub enum PeersCommand {
    /// List the cluster's members (this peer first).
    Ls(PeersLsArgs),
    /// Remove a member from the cluster.
    Rm(PeersRmArgs),
}

/// Arguments of `pinfleet peers ls`.
#[derive(Debug, Args)]
pub struct PeersLsArgs {
    #[command(flatten)]
    host: HostArgs,
    /// Print one ID JSON object per line on stdout.
    #[arg(long)]
    json: bool,
    /// List the followers this peer knows of instead of the members: how
    /// far behind the state each is, and what it reports.
    #[arg(long)]
    followers: bool,
}

/// Arguments of `pinfleet peers rm`.
#[derive(Debug, Args)]
pub struct PeersRmArgs {
    /// libp2p peer id of the member to remove.
    #[arg(value_name = "PEERID")]
    peer: String,
    #[command(flatten)]
    host: HostArgs,
}

/// Runs `pinfleet id`.
pub fn run_id(args: IdArgs) -> anyhow::Result<ExitCode> {
    let client = args.host.client()?;
    let id = block_on(client.id())??;
    if args.json {
        println!("{}", serde_json::to_string(&id)?);
    } else {
        println!("{}", peer_text(&id));
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `pinfleet peers ...`.
pub fn run(cmd: PeersCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PeersCommand::Ls(args) if args.followers => {
            let client = args.host.client()?;
            let list = block_on(client.followers())??;
            let mut out = Out::new();
            for f in &list {
                let text = if args.json {
                    serde_json::to_string(f)?
                } else {
                    follower_text(f)
                };
                if !out.line(&text)? {
                    break;
                }
            }
            if list.is_empty() && !args.json {
                eprintln!("no followers known to this peer");
            }
            out.finish()?;
            Ok(ExitCode::SUCCESS)
        }
        PeersCommand::Ls(args) => {
            let client = args.host.client()?;
            block_on(async move {
                let mut peers = client.peers().await?;
                let mut out = Out::new();
                while let Some(p) = peers.next().await {
                    let p = p?;
                    let text = if args.json {
                        serde_json::to_string(&p)?
                    } else {
                        peer_text(&p)
                    };
                    if !out.line(&text)? {
                        break;
                    }
                }
                out.finish()
            })??;
            Ok(ExitCode::SUCCESS)
        }
        PeersCommand::Rm(args) => {
            let client = args.host.client()?;
            block_on(client.remove_peer(&args.peer))??;
            println!("removed peer {}", args.peer);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// IPFS Cluster's `ipfs-cluster-ctl id` layout.
fn follower_text(f: &pinfleet::wire::FollowerInfo) -> String {
    let num = |v: Option<u64>| v.map_or("-".to_string(), |n| n.to_string());
    let state = match f.behind {
        Some(0) => "up to date".to_string(),
        Some(n) => format!("{n} entries behind"),
        None => "state unknown".to_string(),
    };
    format!(
        "{} | follower | {} | {} pinned, {} queued, {} free | seen {} ms ago",
        f.id,
        state,
        num(f.numpin),
        num(f.pinqueue),
        f.freespace.map_or("-".to_string(), |b| format!("{b} B")),
        f.last_seen_ms
    )
}

fn peer_text(p: &PeerInfo) -> String {
    use std::fmt::Write;
    let name = if p.peername.is_empty() {
        "-"
    } else {
        &p.peername
    };
    let others = p.cluster_peers.iter().filter(|c| **c != p.id).count();
    // Writing to a String cannot fail.
    let mut s = String::new();
    if p.error.is_empty() {
        let _ = write!(s, "{} | {} | sees {} other peers", p.id, name, others);
    } else {
        let _ = write!(s, "{} | {} | error: {}", p.id, name, p.error);
    }
    if !p.addresses.is_empty() {
        s.push_str("\n  > addresses:");
        for a in &p.addresses {
            let _ = write!(s, "\n    - {a}");
        }
    }
    if !p.version.is_empty() {
        let _ = write!(s, "\n  > version: {}", p.version);
    }
    if !p.ipfs.error.is_empty() {
        let _ = write!(s, "\n  > ipfs: error: {}", p.ipfs.error);
    } else if !p.ipfs.id.is_empty() {
        let _ = write!(s, "\n  > ipfs: {}", p.ipfs.id);
        for a in &p.ipfs.addresses {
            let _ = write!(s, "\n    - {a}");
        }
    }
    s
}
