//! `pinfleet pin add|rm|ls`: pins by hand (owner `api`) and the pin list.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use pinfleet::manifest::Owner;
use pinfleet::wire::PinRecord;

use super::NO;
use super::remote::{HostArgs, Out, block_on};
use super::wait::{Goal, WaitArgs, Waited, explain, wait_for};
use pinfleet::client::{Client, ClientError};

/// Manual pin commands.
#[derive(Debug, Subcommand)]
pub enum PinCommand {
    /// Pin a CID by hand (owner `api`); PinSets never remove it.
    Add(PinAddArgs),
    /// Pin a new CID with the options (and allocations) of a pinned one.
    Update(PinUpdateArgs),
    /// Release the `api` owner of a CID; while a PinSet owns it too, it
    /// stays pinned (409) unless --force.
    Rm(PinRmArgs),
    /// List every pin of the shared state with its owners.
    Ls(PinLsArgs),
}

/// The options of a pin (IPFS Cluster's `PinOptions`), as `pin add` and
/// `add` take them.
#[derive(Debug, Default, Args)]
pub struct PinOptionArgs {
    /// Pin name.
    #[arg(long, short = 'n')]
    pub name: Option<String>,
    /// Peers that must and may pin it (-1: every peer); sets both factors.
    #[arg(long, value_name = "N", allow_negative_numbers = true, conflicts_with_all = ["replication_min", "replication_max"])]
    pub replication: Option<i32>,
    /// Fewest peers that must pin it (-1: every peer; 0: cluster default).
    #[arg(
        long,
        visible_alias = "rmin",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub replication_min: Option<i32>,
    /// Most peers that may pin it (-1: every peer; 0: cluster default).
    #[arg(
        long,
        visible_alias = "rmax",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub replication_max: Option<i32>,
    /// Peers to pin it on first (comma-separated peer ids).
    #[arg(long, visible_alias = "allocs", value_name = "PEERS")]
    pub allocations: Option<String>,
    /// Unpin at this time (RFC 3339, e.g. 2030-01-01T00:00:00Z).
    #[arg(long, value_name = "TIME", conflicts_with = "expire_in")]
    pub expire_at: Option<String>,
    /// Unpin after this long (e.g. 24h, 90m).
    #[arg(long, value_name = "DURATION")]
    pub expire_in: Option<String>,
    /// Metadata key=value (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
}

impl PinOptionArgs {
    /// The options as the query of `POST /pins/{cid}` or `POST /add`.
    pub fn query(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut q: Vec<(String, String)> = Vec::new();
        let mut push = |k: &str, v: String| q.push((k.to_string(), v));
        if let Some(n) = &self.name {
            push("name", n.clone());
        }
        if let Some(r) = self.replication {
            push("replication-min", r.to_string());
            push("replication-max", r.to_string());
        }
        if let Some(n) = self.replication_min {
            push("replication-min", n.to_string());
        }
        if let Some(n) = self.replication_max {
            push("replication-max", n.to_string());
        }
        if let Some(a) = &self.allocations {
            let peers: Vec<&str> = a
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect();
            push("user-allocations", peers.join(","));
        }
        if let Some(t) = &self.expire_at {
            push("expire-at", t.clone());
        }
        if let Some(d) = &self.expire_in {
            push("expire-in", expire_in(d)?);
        }
        for kv in &self.metadata {
            let shown = pinfleet::manifest::shown(kv);
            let Some((k, v)) = kv.split_once('=') else {
                anyhow::bail!("--metadata {shown}: expected KEY=VALUE");
            };
            if k.is_empty() {
                anyhow::bail!("--metadata {shown}: the key is empty");
            }
            q.push((format!("meta-{k}"), v.to_string()));
        }
        Ok(q)
    }
}

/// `--expire-in`'s value, checked to be a duration before it is sent.
fn expire_in(d: &str) -> anyhow::Result<String> {
    pinfleet::manifest::duration::parse_duration(d)
        .map_err(|e| anyhow::anyhow!("--expire-in {}: {e}", pinfleet::manifest::shown(d)))?;
    Ok(d.to_string())
}

/// Arguments of `pinfleet pin add`.
#[derive(Debug, Args)]
pub struct PinAddArgs {
    /// CID to pin (v0 `Qm…` or v1; reported as written), or an IPFS path
    /// (`/ipfs/CID/sub/path`, `/ipns/NAME`) the peer resolves first.
    #[arg(value_name = "CID|PATH")]
    cid: String,
    #[command(flatten)]
    options: PinOptionArgs,
    /// `recursive` (default) or `direct`.
    #[arg(long, value_name = "MODE")]
    mode: Option<String>,
    /// Multiaddress of a peer that has the content (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    origin: Vec<String>,
    #[command(flatten)]
    wait: WaitArgs,
    #[command(flatten)]
    host: HostArgs,
    /// Print the pin's JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Arguments of `pinfleet pin update`.
#[derive(Debug, Args)]
pub struct PinUpdateArgs {
    /// The pinned CID whose options (and allocations) the new pin takes.
    #[arg(value_name = "FROM")]
    from: String,
    /// The CID (or IPFS path) to pin in its place; FROM stays pinned until
    /// you remove it.
    #[arg(value_name = "TO")]
    to: String,
    /// Name of the new pin (default: FROM's).
    #[arg(long, short = 'n')]
    name: Option<String>,
    /// Unpin the new pin after this long (e.g. 24h).
    #[arg(long, value_name = "DURATION")]
    expire_in: Option<String>,
    #[command(flatten)]
    wait: WaitArgs,
    #[command(flatten)]
    host: HostArgs,
    /// Print the new pin's JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Arguments of `pinfleet pin rm`.
#[derive(Debug, Args)]
pub struct PinRmArgs {
    /// CID (or IPFS path) to release.
    #[arg(value_name = "CID|PATH")]
    cid: String,
    /// Also remove it from the PinSets that own it (admin only; their next
    /// apply pins it again unless their manifests drop it).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    wait: WaitArgs,
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
        PinCommand::Update(args) => update(args),
        PinCommand::Rm(args) => rm(args),
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
    let mut query = args.options.query()?;
    if let Some(m) = &args.mode {
        query.push(("mode".into(), m.clone()));
    }
    if !args.origin.is_empty() {
        query.push(("origins".into(), args.origin.join(",")));
    }
    let client = args.host.client()?;
    let pin = block_on(client.pin(&args.cid, &query))??;
    if args.json {
        println!("{}", serde_json::to_string(&pin)?);
    } else {
        println!("pinned {}", pin_line(&pin));
    }
    finish_wait(
        &client,
        &pin.cid,
        Goal::Pinned,
        Some(&pin),
        &args.wait,
        args.json,
    )
}

fn update(args: PinUpdateArgs) -> anyhow::Result<ExitCode> {
    let mut query = vec![("pin-update".to_string(), args.from.clone())];
    if let Some(n) = &args.name {
        query.push(("name".into(), n.clone()));
    }
    if let Some(d) = &args.expire_in {
        query.push(("expire-in".into(), expire_in(d)?));
    }
    let client = args.host.client()?;
    let pin = block_on(client.pin(&args.to, &query))??;
    if args.json {
        println!("{}", serde_json::to_string(&pin)?);
    } else {
        println!("pinned {} (options of {})", pin_line(&pin), args.from);
    }
    finish_wait(
        &client,
        &pin.cid,
        Goal::Pinned,
        Some(&pin),
        &args.wait,
        args.json,
    )
}

fn rm(args: PinRmArgs) -> anyhow::Result<ExitCode> {
    let client = args.host.client()?;
    let pin = match block_on(client.unpin(&args.cid, args.force))? {
        Ok(pin) => pin,
        // Still wanted by a PinSet (or another owner): the answer is "no".
        Err(ClientError::Api {
            status: 409,
            message,
            ..
        }) => {
            eprintln!(
                "refused: {}",
                message.replace("unpin with force=true", "run pin rm --force")
            );
            return Ok(ExitCode::from(NO));
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        println!("{}", serde_json::to_string(&pin)?);
    } else if pin.owners.is_empty() {
        println!("unpinned {}", pin.cid);
    } else {
        println!("released {} (still pinned for {})", pin.cid, owners(&pin));
        // Still pinned for a PinSet: there is no unpin to wait for.
        return Ok(ExitCode::SUCCESS);
    }
    finish_wait(
        &client,
        &pin.cid,
        Goal::Unpinned,
        None,
        &args.wait,
        args.json,
    )
}

/// With `--wait`, waits for `goal` (see [`wait_for`]) and, without
/// `json`, prints the status reached; exit 1 when a peer failed or the
/// wait timed out.
pub(super) fn finish_wait(
    client: &Client,
    cid: &str,
    goal: Goal,
    pin: Option<&PinRecord>,
    wait: &WaitArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if !wait.wait {
        return Ok(ExitCode::SUCCESS);
    }
    // `add` has no pin answer: its options (the minimum replication) are
    // read back.
    let fetched = match (pin, goal) {
        (None, Goal::Pinned) => block_on(client.allocation(cid))?.ok(),
        _ => None,
    };
    let pin = pin.or(fetched.as_ref());
    let waited = block_on(wait_for(client, cid, goal, pin, wait))??;
    if let Some(why) = explain(goal, &waited, wait.wait_timeout) {
        eprintln!("{why}");
        return Ok(ExitCode::from(NO));
    }
    if let (Waited::Done(Some(info)), false) = (&waited, json) {
        print!("{}", super::status::pin_block(info));
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
