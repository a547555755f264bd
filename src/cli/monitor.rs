//! `pinfleet health [metrics]`, `pinfleet version` and `pinfleet ipfs gc`:
//! ipfs-cluster-ctl's monitoring commands, in its text layout (or the
//! server's JSON with `--json`).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use pinfleet::wire::{GlobalRepoGc, MonitorMetric};

use super::remote::{HostArgs, Out, block_on};

/// Arguments of `pinfleet health`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HealthArgs {
    #[command(subcommand)]
    what: Option<HealthCommand>,
    #[command(flatten)]
    host: HostArgs,
}

/// What `pinfleet health` shows beyond "the peer answers".
#[derive(Debug, Subcommand)]
pub enum HealthCommand {
    /// List the metric names this peer holds, or with a NAME the latest
    /// value of that metric from every peer (freespace, ping, tags…).
    Metrics(MetricsArgs),
}

/// Arguments of `pinfleet health metrics`.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// The metric (none: list the names).
    #[arg(value_name = "NAME")]
    name: Option<String>,
    #[command(flatten)]
    host: HostArgs,
    /// The server's JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Arguments of `pinfleet version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    #[command(flatten)]
    host: HostArgs,
    /// The server's JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// `pinfleet ipfs ...`.
#[derive(Debug, Subcommand)]
pub enum IpfsCommand {
    /// Run garbage collection on the IPFS nodes of every peer (or only the
    /// asked one's with --local) and list what each removed.
    Gc(GcArgs),
}

/// Arguments of `pinfleet ipfs gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Only the asked peer's IPFS node.
    #[arg(long)]
    local: bool,
    #[command(flatten)]
    host: HostArgs,
    /// The server's JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `pinfleet health [...]`.
pub fn run_health(args: HealthArgs) -> anyhow::Result<ExitCode> {
    match args.what {
        None => {
            let client = args.host.client()?;
            let version = block_on(async {
                client.health().await?;
                client.version().await
            })??;
            println!(
                "ok: pinfleet {} at {}",
                version.version,
                client.base_shown()
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(HealthCommand::Metrics(m)) => metrics(m),
    }
}

fn metrics(args: MetricsArgs) -> anyhow::Result<ExitCode> {
    let client = args.host.client()?;
    let mut out = Out::new();
    match &args.name {
        None => {
            let names = block_on(client.metric_names())??;
            if args.json {
                out.line(&serde_json::to_string(&names)?)?;
            } else {
                for n in &names {
                    if !out.line(n)? {
                        break;
                    }
                }
            }
        }
        Some(name) => {
            let metrics = block_on(client.metrics(name))??;
            if args.json {
                out.line(&serde_json::to_string(&metrics)?)?;
            } else {
                let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
                for m in &metrics {
                    if !out.line(&metric_line(m, now_ns))? {
                        break;
                    }
                }
            }
        }
    }
    out.finish()?;
    Ok(ExitCode::SUCCESS)
}

/// `PEER | NAME: VALUE | Expires in: …`, as ipfs-cluster-ctl prints a
/// metric (freespace in bytes made readable).
fn metric_line(m: &MonitorMetric, now_ns: i64) -> String {
    let value = match (m.name.as_str(), u64::try_from(m.weight)) {
        ("freespace", Ok(w)) if w > 0 => bytes(w),
        _ => m.value.clone(),
    };
    let left = m.expire.saturating_sub(now_ns);
    let expires = if left <= 0 {
        "expired".to_string()
    } else {
        format!("{:.1}s", left as f64 / 1e9)
    };
    format!(
        "{} | {}: {} | Expires in: {}",
        m.peer, m.name, value, expires
    )
}

/// `n` bytes with a decimal unit (IPFS Cluster uses humanize.Bytes).
fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Runs `pinfleet version`: the peer's version.
pub fn run_version(args: VersionArgs) -> anyhow::Result<ExitCode> {
    let client = args.host.client()?;
    let v = block_on(client.version())??;
    if args.json {
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!("{}", v.version);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `pinfleet ipfs ...`.
pub fn run_ipfs(cmd: IpfsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        IpfsCommand::Gc(args) => {
            let client = args.host.client()?;
            let gc = block_on(client.ipfs_gc(args.local))??;
            if args.json {
                println!("{}", serde_json::to_string(&gc)?);
            } else {
                print!("{}", gc_text(&gc));
            }
            let failed = gc.peer_map.values().any(|r| !r.error.is_empty());
            Ok(if failed {
                ExitCode::from(super::NO)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// Each peer (by name when it has one), then the CIDs its node removed.
fn gc_text(gc: &GlobalRepoGc) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for (peer, r) in &gc.peer_map {
        let who = if r.peername.is_empty() {
            peer
        } else {
            &r.peername
        };
        // Writing to a String cannot fail.
        if r.error.is_empty() {
            let _ = writeln!(s, "{who:<15} | removed {}", r.removed);
        } else {
            let _ = writeln!(s, "{who:<15} | ERROR: {}", r.error);
        }
        if !r.keys.is_empty() {
            s.push_str("  > CIDs:\n");
        }
        for k in &r.keys {
            if k.error.is_empty() {
                let _ = writeln!(s, "    - {}", k.key.cid);
            } else {
                let _ = writeln!(s, "    - ERROR: {}", k.error);
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freespace_reads_in_decimal_units() {
        let m = MonitorMetric {
            name: "freespace".into(),
            peer: "12D3KooW".into(),
            value: "123456789".into(),
            expire: 2_000_000_000,
            valid: true,
            weight: 123_456_789,
            partitionable: false,
            received_at: 0,
        };
        assert_eq!(
            metric_line(&m, 1_000_000_000),
            "12D3KooW | freespace: 123.5 MB | Expires in: 1.0s"
        );
        assert_eq!(
            metric_line(&m, 3_000_000_000),
            "12D3KooW | freespace: 123.5 MB | Expires in: expired"
        );
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1_500), "1.5 kB");
    }
}
