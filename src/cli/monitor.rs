//! `pinfleet health [graph|metrics|alerts|bandwidth]`, `pinfleet version`
//! and `pinfleet ipfs gc`:
//! ipfs-cluster-ctl's monitoring commands, in its text layout (or the
//! server's JSON with `--json`).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use pinfleet::wire::{ConnectGraph, GlobalRepoGc, MonitorMetric};

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
    /// Draw who is connected to whom as a Graphviz DOT graph (render it
    /// with `dot -Tsvg`).
    Graph(GraphArgs),
    /// List the metric names this peer holds, or with a NAME the latest
    /// value of that metric from every peer (freespace, ping, tags…).
    Metrics(MetricsArgs),
    /// List the members whose metrics expired (they stopped reporting).
    Alerts(JsonHostArgs),
    /// List libp2p bandwidth by protocol.
    Bandwidth(JsonHostArgs),
}

/// Arguments of `pinfleet health graph`.
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Write the graph to this file instead of stdout.
    #[arg(long, short = 'f', value_name = "FILE")]
    file: Option<std::path::PathBuf>,
    /// Also draw IPFS peers that are not a member's node.
    #[arg(long)]
    all_ipfs_peers: bool,
    #[command(flatten)]
    host: HostArgs,
    /// The server's `ConnectGraph` JSON instead of DOT.
    #[arg(long)]
    json: bool,
}

/// A peer to ask, and whether to print its JSON.
#[derive(Debug, Args)]
pub struct JsonHostArgs {
    #[command(flatten)]
    host: HostArgs,
    /// The server's JSON on stdout.
    #[arg(long)]
    json: bool,
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
        Some(HealthCommand::Graph(g)) => graph(g),
        Some(HealthCommand::Alerts(a)) => {
            let alerts = block_on(a.host.client()?.alerts())??;
            if a.json {
                println!("{}", serde_json::to_string(&alerts)?);
            } else if alerts.is_empty() {
                println!("no alerts: every member reports its metrics");
            } else {
                for al in &alerts {
                    println!(
                        "{}: {} expired at {} (alert raised {})",
                        al.metric.peer,
                        al.metric.name,
                        time_of_ns(al.metric.expire),
                        al.triggered_at
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(HealthCommand::Bandwidth(a)) => {
            let bw = block_on(a.host.client()?.bandwidth())??;
            if a.json {
                println!("{}", serde_json::to_string(&bw)?);
            } else if bw.is_empty() {
                println!(
                    "no bandwidth figures: pinfleet does not count libp2p traffic by protocol"
                );
            } else {
                for (proto, b) in &bw {
                    println!(
                        "{proto:>25}: In: {:>8}. Out: {:>8}. RateIn: {:.2}B/s. RateOut: {:.2}B/s",
                        bytes(u64::try_from(b.total_in).unwrap_or(0)),
                        bytes(u64::try_from(b.total_out).unwrap_or(0)),
                        b.rate_in,
                        b.rate_out
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Unix nanoseconds as RFC 3339.
fn time_of_ns(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn graph(args: GraphArgs) -> anyhow::Result<ExitCode> {
    let g = block_on(args.host.client()?.health_graph())??;
    let text = if args.json {
        format!("{}\n", serde_json::to_string(&g)?)
    } else {
        dot(&g, args.all_ipfs_peers)
    };
    match &args.file {
        Some(f) => std::fs::write(f, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", f.display()))?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `id` shortened as IPFS Cluster draws it: two first characters, `*`,
/// six last.
fn short_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 8 {
        return id.to_string();
    }
    let head: String = chars[..2].iter().collect();
    let tail: String = chars[chars.len() - 6..].iter().collect();
    format!("{head}*{tail}")
}

/// `lines` as one quoted DOT label, one line each.
fn label(lines: &[&str]) -> String {
    let escaped: Vec<String> = lines
        .iter()
        .map(|l| l.replace('\\', "\\\\").replace('"', "\\\""))
        .collect();
    format!("\"{}\"", escaped.join("\\n"))
}

/// The graph in Graphviz DOT: members as boxes (this peer's doubled),
/// their IPFS nodes as cylinders, cluster links solid, a member to its
/// node dotted, IPFS links dashed. With `all_ipfs`, IPFS peers that are no
/// member's node are drawn too.
pub fn dot(g: &ConnectGraph, all_ipfs: bool) -> String {
    use std::collections::{BTreeMap, BTreeSet};
    use std::fmt::Write;
    let mut members: BTreeSet<&str> = g.cluster_links.keys().map(String::as_str).collect();
    members.extend(g.id_to_peername.keys().map(String::as_str));
    members.insert(g.cluster_id.as_str());
    let member_nodes: BTreeSet<&str> = g.cluster_to_ipfs.values().map(String::as_str).collect();
    let mut ipfs: BTreeSet<&str> = member_nodes.clone();
    if all_ipfs {
        for (from, to) in &g.ipfs_links {
            ipfs.insert(from);
            ipfs.extend(to.iter().map(String::as_str));
        }
    }
    let mut ids: BTreeMap<&str, String> = BTreeMap::new();
    let mut s = String::from("digraph cluster {\n");
    // Writing to a String cannot fail.
    let _ = writeln!(
        s,
        "  node [fontname=\"Arial\" style=\"filled\" fontcolor=\"black\"]"
    );
    for (i, m) in members.iter().enumerate() {
        let id = format!("C{i}");
        let name = g.id_to_peername.get(*m).map_or("", String::as_str);
        let extra = if *m == g.cluster_id {
            " peripheries=2"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "  {id} [label={} shape=box3d color=\"orange\"{extra}]",
            label(&[name, &short_id(m)])
        );
        ids.insert(m, id);
    }
    for (i, n) in ipfs.iter().enumerate() {
        let id = format!("I{i}");
        let _ = writeln!(
            s,
            "  {id} [label={} shape=cylinder color=\"turquoise3\"]",
            label(&["IPFS", &short_id(n)])
        );
        ids.insert(n, id);
    }
    for (from, tos) in &g.cluster_links {
        for to in tos {
            if let (Some(a), Some(b)) = (ids.get(from.as_str()), ids.get(to.as_str())) {
                let _ = writeln!(s, "  {a} -> {b}");
            }
        }
    }
    for (member, node) in &g.cluster_to_ipfs {
        if let (Some(a), Some(b)) = (ids.get(member.as_str()), ids.get(node.as_str())) {
            let _ = writeln!(s, "  {a} -> {b} [style=dotted]");
        }
    }
    for (from, tos) in &g.ipfs_links {
        for to in tos {
            if let (Some(a), Some(b)) = (ids.get(from.as_str()), ids.get(to.as_str())) {
                let _ = writeln!(s, "  {a} -> {b} [style=dashed]");
            }
        }
    }
    s.push_str("}\n");
    s
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
    fn the_graph_draws_members_their_nodes_and_links_in_dot() {
        let g: ConnectGraph = serde_json::from_value(serde_json::json!({
            "cluster_id": "12D3KooWAAAAAAAAself",
            "id_to_peername": {"12D3KooWAAAAAAAAself": "p0", "12D3KooWBBBBBBBBpeer1": "p1"},
            "ipfs_links": {"QmNode0aaaaaaaa": ["QmNode1bbbbbbbb", "QmStrangercccc"]},
            "cluster_links": {
                "12D3KooWAAAAAAAAself": ["12D3KooWBBBBBBBBpeer1"],
                "12D3KooWBBBBBBBBpeer1": ["12D3KooWAAAAAAAAself"]
            },
            "cluster_to_ipfs": {
                "12D3KooWAAAAAAAAself": "QmNode0aaaaaaaa",
                "12D3KooWBBBBBBBBpeer1": "QmNode1bbbbbbbb"
            },
            "cluster_trust_links": {}
        }))
        .unwrap();
        let d = dot(&g, false);
        assert!(
            d.starts_with("digraph cluster {\n") && d.ends_with("}\n"),
            "{d}"
        );
        assert!(
            d.contains("C0 [label=\"p0\\n12*AAself\" shape=box3d color=\"orange\" peripheries=2]"),
            "{d}"
        );
        assert!(d.contains("C0 -> C1\n") && d.contains("C1 -> C0\n"), "{d}");
        assert!(d.contains("C0 -> I0 [style=dotted]"), "{d}");
        assert!(d.contains("I0 -> I1 [style=dashed]"), "{d}");
        // A swarm peer that is no member's node only with --all-ipfs-peers.
        assert!(!d.contains("Stranger") && !d.contains("I2"), "{d}");
        assert!(
            dot(&g, true).contains("I2 [label=\"IPFS\\nQm*ercccc\""),
            "{}",
            dot(&g, true)
        );
    }

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
