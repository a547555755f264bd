//! `pinfleet status [CID | pinset/NS/NAME]`, `pinfleet recover [CID]`, and
//! the wait behind `pinfleet apply --wait`: pin statuses read from a
//! running peer's REST API (DESIGN §6, §8).
//!
//! Listings stream: a table (one block per pin) or, with `--json`, the
//! server's NDJSON passed through untouched. Nothing here computes a
//! status; the peer does (`GET /pinsets/{ns}/{name}/status`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use pinfleet::manifest::{PinSetId, PinSetStatus};
use pinfleet::wire::GlobalPinInfo;
use serde_json::json;

use super::NO;
use super::apply::parse_target;
use super::remote::{HostArgs, Out, block_on};
use pinfleet::client::{Client, ClientError, StatusQuery};

/// Arguments of `pinfleet status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// CIDs (shown as written), or one `pinset/NAMESPACE/NAME` or
    /// `pinset/NAME` (namespace `default`); none: every pin of the cluster.
    #[arg(value_name = "CID…|pinset/NS/NAME")]
    targets: Vec<String>,
    /// Only pins that some peer reports in one of these statuses
    /// (comma-separated: pinned, pinning, pin_queued, pin_error, unpinned,
    /// cluster_error, …, or the aliases error and queued).
    #[arg(long, value_name = "STATUSES")]
    filter: Option<String>,
    /// Only the asked peer's own status (no fan-out to the other members).
    #[arg(long)]
    local: bool,
    #[command(flatten)]
    host: HostArgs,
    /// JSON on stdout: one IPFS Cluster `GlobalPinInfo` per line, or the
    /// PinSet status object.
    #[arg(long)]
    json: bool,
    /// Wait first: until a PinSet is Ready, or until every peer a CID is
    /// allocated to reports it pinned; then show the status. Exit 1 when a
    /// peer reports an error on the CID or --wait-timeout passes.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits (seconds, or e.g. 90s, 5m).
    #[arg(long, value_name = "DURATION", default_value = "5m", requires = "wait", value_parser = super::remote::parse_timeout)]
    wait_timeout: Duration,
}

/// Arguments of `pinfleet recover`.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Retry this CID only; none: every failed operation of the cluster.
    #[arg(value_name = "CID")]
    cid: Option<String>,
    /// Only on the asked peer (with no CID).
    #[arg(long)]
    local: bool,
    #[command(flatten)]
    host: HostArgs,
    /// JSON on stdout: one `GlobalPinInfo` per line.
    #[arg(long)]
    json: bool,
}

/// Runs `pinfleet status`.
pub fn run_status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = args.host.client()?;
    let is_pinset = |t: &String| t.starts_with("pinset/") || t.starts_with("pinsets/");
    if args.wait && args.targets.len() != 1 {
        anyhow::bail!("--wait needs one CID or one pinset/NS/NAME");
    }
    if args.targets.len() > 1 {
        if args.targets.iter().any(is_pinset) {
            anyhow::bail!("give one pinset/NS/NAME, or CIDs only");
        }
        let query = StatusQuery {
            filter: args.filter.clone(),
            local: args.local,
            cids: args.targets.clone(),
            recover: false,
        };
        let shown = block_on(list(&client, &query, args.json))??;
        if shown == 0 {
            eprintln!("no matching status");
            return Ok(ExitCode::from(NO));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let target = args.targets.first().map(String::as_str);
    if let Some(t) = target.filter(|t| t.starts_with("pinset/") || t.starts_with("pinsets/")) {
        if args.filter.is_some() || args.local {
            anyhow::bail!("--filter and --local select pin statuses; a pinset status has neither");
        }
        let id = parse_target(t)?;
        if args.wait {
            return wait_pinset(&client, id, args.wait_timeout, args.json);
        }
        return match block_on(client.pinset_status(&id))? {
            Ok(status) => {
                if args.json {
                    println!("{}", serde_json::to_string(&status)?);
                } else {
                    print!("{}", pinset_table(&id, &status));
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(ClientError::Api { status: 404, .. }) => {
                eprintln!("pinset {id} is not in the cluster");
                Ok(ExitCode::from(NO))
            }
            Err(e) => Err(e).with_context(|| format!("cannot read the status of pinset {id}")),
        };
    }
    let query = StatusQuery {
        filter: args.filter.clone(),
        local: args.local,
        cids: target.map(|c| vec![c.to_string()]).unwrap_or_default(),
        recover: false,
    };
    match target {
        Some(cid) if args.wait && (args.local || args.filter.is_some()) => {
            anyhow::bail!(
                "--wait follows a CID across the cluster: not with --local or --filter ({cid})"
            )
        }
        Some(cid) if args.wait => {
            // Every allocated peer, not only the minimum: a status wait
            // ends when the cluster is done (none allocated: -1, every
            // peer the pin is not remote on, the wait's own default).
            let allocated = block_on(client.allocation(cid))?
                .ok()
                .map(|p| p.allocations.len())
                .filter(|n| *n > 0);
            let wait = super::wait::WaitArgs {
                wait: true,
                wait_limit: allocated,
                wait_timeout: Some(args.wait_timeout),
            };
            let code = super::pin::finish_wait(
                &client,
                cid,
                super::wait::Goal::Pinned,
                None,
                &wait,
                args.json,
            )?;
            if args.json && code == ExitCode::SUCCESS {
                let info = block_on(client.status(cid))??;
                println!("{}", serde_json::to_string(&info)?);
            }
            Ok(code)
        }
        // One CID across the cluster: `GET /pins/{cid}` echoes it as written.
        Some(cid) if !args.local && args.filter.is_none() => match block_on(client.status(cid))? {
            Ok(info) => {
                if args.json {
                    println!("{}", serde_json::to_string(&info)?);
                } else {
                    print!("{}", pin_block(&info));
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(ClientError::Api { status: 404, .. }) => {
                eprintln!("{cid} is not in the shared state");
                Ok(ExitCode::from(NO))
            }
            Err(e) => Err(e.into()),
        },
        Some(cid) => {
            let shown = block_on(list(&client, &query, args.json))??;
            if shown == 0 {
                eprintln!("{cid}: no matching status");
                return Ok(ExitCode::from(NO));
            }
            Ok(ExitCode::SUCCESS)
        }
        None => {
            block_on(list(&client, &query, args.json))??;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs `pinfleet recover`.
pub fn run_recover(args: RecoverArgs) -> anyhow::Result<ExitCode> {
    let client = args.host.client()?;
    match &args.cid {
        Some(cid) => {
            if args.local {
                anyhow::bail!("--local applies to recovering every pin, not one CID");
            }
            let info =
                block_on(client.recover(cid))?.with_context(|| format!("cannot recover {cid}"))?;
            if args.json {
                println!("{}", serde_json::to_string(&info)?);
            } else {
                print!("{}", pin_block(&info));
            }
        }
        None => {
            let query = StatusQuery {
                local: args.local,
                recover: true,
                ..StatusQuery::default()
            };
            block_on(list(&client, &query, args.json))??;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Streams statuses to stdout; returns how many pins were shown (JSON
/// output counts chunks, not pins: it is passed through).
async fn list(client: &Client, query: &StatusQuery, json: bool) -> anyhow::Result<u64> {
    let mut out = Out::new();
    let mut shown = 0u64;
    if json {
        let mut raw = client.statuses_raw(query).await?;
        while let Some(chunk) = raw.next().await {
            shown += 1;
            if !out.write(&chunk?)? {
                break;
            }
        }
    } else {
        let mut items = client.statuses(query).await?;
        while let Some(info) = items.next().await {
            shown += 1;
            if !out.write(pin_block(&info?).as_bytes())? {
                break;
            }
        }
    }
    out.finish()?;
    Ok(shown)
}

/// One pin: `CID | name`, then one line per peer, as `ipfs-cluster-ctl
/// status` prints it.
pub(super) fn pin_block(info: &GlobalPinInfo) -> String {
    let mut s = if info.name.is_empty() {
        format!("{}:\n", info.cid)
    } else {
        format!("{} | {}:\n", info.cid, info.name)
    };
    for (peer, p) in &info.peer_map {
        let who = if p.peername.is_empty() {
            peer.clone()
        } else {
            format!("{peer} ({})", p.peername)
        };
        s.push_str(&format!(
            "    > {who} : {} | {} | attempts {}",
            p.status.as_str().to_uppercase(),
            p.timestamp,
            p.attempt_count
        ));
        if !p.error.is_empty() {
            s.push_str(&format!(" | {}", p.error));
        }
        s.push('\n');
    }
    s
}

/// A PinSet's status: conditions, summary, per-peer counts, errors.
pub(super) fn pinset_table(id: &PinSetId, st: &PinSetStatus) -> String {
    let mut s = format!("pinset {id}");
    if let Some(r) = &st.revision {
        s.push_str(&format!(" (revision {r})"));
    }
    s.push('\n');
    let reason_w = st
        .conditions
        .iter()
        .map(|c| c.reason.len())
        .max()
        .unwrap_or(0);
    for c in &st.conditions {
        s.push_str(&format!(
            "  {:<11}  {:<5}  {:<reason_w$}  {}\n",
            c.type_,
            c.status,
            c.reason,
            c.message.replace('\n', "; ")
        ));
    }
    let w = st
        .peers
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(0)
        .max("PEER".len());
    s.push_str(&format!(
        "\n{:<w$}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}\n",
        "PEER", "TOTAL", "PINNED", "PINNING", "QUEUED", "ERROR", "UNPINNED"
    ));
    let row = |name: &str, c: &pinfleet::manifest::model::StatusSummary| {
        format!(
            "{name:<w$}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}\n",
            c.total, c.pinned, c.pinning, c.queued, c.error, c.unpinned
        )
    };
    s.push_str(&row("(pins)", &st.summary));
    for (peer, c) in &st.peers {
        s.push_str(&row(peer, c));
    }
    if !st.errors.is_empty() {
        s.push_str(&format!("\nerrors (first {}):\n", st.errors.len()));
        for e in &st.errors {
            s.push_str(&format!("  {} on {}: {}\n", e.cid, e.peer, e.error));
        }
    }
    s
}

fn is_ready(st: &PinSetStatus) -> bool {
    st.conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// A one-line progress display on stderr, redrawn in place; silent when
/// stderr is not a terminal.
struct Progress {
    tty: bool,
    drawn: bool,
}

impl Progress {
    fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    fn show(&mut self, line: &str) {
        if self.tty {
            eprint!("\r\x1b[2K{line}");
            self.drawn = true;
        }
    }

    fn done(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}

/// `status pinset/… --wait`: waits until the PinSet is Ready (or `timeout`
/// passes), then shows its status; exit 1 when it is not Ready.
fn wait_pinset(
    client: &Client,
    id: PinSetId,
    timeout: Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let waited = block_on(wait_ready(client, vec![id.clone()], timeout))??;
    let ready = note_timeout(&waited, timeout);
    match waited.into_iter().next().and_then(|w| w.status) {
        Some(status) if json => println!("{}", serde_json::to_string(&status)?),
        Some(status) => print!("{}", pinset_table(&id, &status)),
        None => eprintln!("pinset {id} is not in the cluster"),
    }
    Ok(if ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NO)
    })
}

/// What `apply --wait` saw last of one PinSet.
#[derive(Debug)]
pub struct Waited {
    /// The PinSet.
    pub id: PinSetId,
    /// Its last status (`None`: the asked peer has not seen it yet).
    pub status: Option<PinSetStatus>,
}

impl Waited {
    /// Whether its last status says Ready.
    pub fn ready(&self) -> bool {
        self.status.as_ref().is_some_and(is_ready)
    }
}

/// Polls the status of every PinSet in `ids` until all are Ready or
/// `timeout` has passed, showing pinned/total on stderr when it is a
/// terminal. Pin errors do not end the wait early: the tracker retries them.
/// Returns the last status seen of each PinSet.
pub async fn wait_ready(
    client: &Client,
    ids: Vec<PinSetId>,
    timeout: Duration,
) -> anyhow::Result<Vec<Waited>> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut waited: Vec<Waited> = ids
        .into_iter()
        .map(|id| Waited { id, status: None })
        .collect();
    let mut progress = Progress::new();
    loop {
        let round = Instant::now();
        for w in waited.iter_mut().filter(|w| !w.ready()) {
            match client.pinset_status(&w.id).await {
                Ok(st) => w.status = Some(st),
                // Applied through the leader, not yet applied on the asked
                // peer: it will be.
                Err(ClientError::Api { status: 404, .. }) => {}
                Err(e) => {
                    progress.done();
                    return Err(e).with_context(|| format!("cannot read the status of {}", w.id));
                }
            }
        }
        let ready = waited.iter().filter(|w| w.ready()).count();
        let (pinned, total, errors) =
            waited
                .iter()
                .filter_map(|w| w.status.as_ref())
                .fold((0, 0, 0), |(p, t, e), st| {
                    (
                        p + st.summary.pinned,
                        t + st.summary.total,
                        e + st.summary.error,
                    )
                });
        let errors = if errors > 0 {
            format!(", {errors} with errors")
        } else {
            String::new()
        };
        progress.show(&format!(
            "waiting: {ready}/{} pinsets ready, {pinned}/{total} pins pinned{errors} ({}s)",
            waited.len(),
            start.elapsed().as_secs()
        ));
        let now = Instant::now();
        if ready == waited.len() || now >= deadline {
            progress.done();
            return Ok(waited);
        }
        // Poll at twice the cost of a round (a huge set's status walks every
        // pin), between 250 ms and 5 s, and never past the deadline.
        let pause = (round.elapsed() * 2)
            .clamp(Duration::from_millis(250), Duration::from_secs(5))
            .min(deadline - now);
        tokio::time::sleep(pause).await;
    }
}

/// Prints the outcome of `apply --wait` as text on stdout.
pub fn print_waited(waited: &[Waited]) {
    for w in waited {
        match &w.status {
            Some(st) => {
                let word = if w.ready() { "ready" } else { "not ready" };
                println!(
                    "{word}: pinset {} {}/{} pins pinned",
                    w.id, st.summary.pinned, st.summary.total
                );
                if !w.ready() {
                    for e in &st.errors {
                        println!("  {} on {}: {}", e.cid, e.peer, e.error);
                    }
                }
            }
            None => println!("not ready: pinset {} not seen by the asked peer", w.id),
        }
    }
}

/// Says on stderr that `apply --wait` gave up, when it did; returns whether
/// every PinSet is Ready.
pub fn note_timeout(waited: &[Waited], timeout: Duration) -> bool {
    let left = waited.iter().filter(|w| !w.ready()).count();
    if left > 0 {
        eprintln!(
            "timed out after {}: {left} of {} pinsets not ready",
            pinfleet::manifest::duration::format_duration(timeout),
            waited.len()
        );
    }
    left == 0
}

/// The outcome of `apply --wait` as JSON: `{"ready", "pinsets": [{"pinset",
/// "ready", "status"}]}`.
pub fn waited_json(waited: &[Waited]) -> serde_json::Value {
    json!({
        "ready": waited.iter().all(Waited::ready),
        "pinsets": waited
            .iter()
            .map(|w| json!({"pinset": w.id.to_string(), "ready": w.ready(), "status": w.status}))
            .collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use pinfleet::manifest::model::{Condition, PinErrorStatus, StatusSummary};
    use pinfleet::wire::{PinInfoShort, TrackerStatus};

    use super::*;

    #[test]
    fn a_pin_block_has_one_line_per_peer() {
        let info = GlobalPinInfo {
            cid: "QmX".into(),
            name: "n".into(),
            allocations: vec![],
            origins: vec![],
            created: String::new(),
            metadata: BTreeMap::new(),
            peer_map: BTreeMap::from([(
                "12D3a".to_string(),
                PinInfoShort {
                    peername: "p0".into(),
                    ipfs_peer_id: String::new(),
                    ipfs_peer_addresses: vec![],
                    status: TrackerStatus::PinError,
                    timestamp: "2026-01-01T00:00:00Z".into(),
                    error: "ipfs down".into(),
                    attempt_count: 2,
                    priority_pin: false,
                },
            )]),
        };
        assert_eq!(
            pin_block(&info),
            "QmX | n:\n    > 12D3a (p0) : PIN_ERROR | 2026-01-01T00:00:00Z | attempts 2 | ipfs down\n"
        );
    }

    #[test]
    fn a_pinset_table_shows_conditions_counts_and_errors() {
        let counts = StatusSummary {
            total: 2,
            pinned: 1,
            error: 1,
            ..StatusSummary::default()
        };
        let st = PinSetStatus {
            revision: Some("r1".into()),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: "PinErrors".into(),
                message: "1 of 2 pins pinned".into(),
                last_transition_time: String::new(),
                observed_generation: None,
            }],
            summary: counts,
            peers: BTreeMap::from([("12D3a".to_string(), counts)]),
            errors: vec![PinErrorStatus {
                cid: "bafy1".into(),
                peer: "12D3a".into(),
                error: "ipfs down".into(),
            }],
            ..PinSetStatus::default()
        };
        let t = pinset_table(&PinSetId::new("default", "web"), &st);
        assert!(t.starts_with("pinset default/web (revision r1)\n"), "{t}");
        assert!(
            t.contains("  Ready        False  PinErrors  1 of 2 pins pinned\n"),
            "{t}"
        );
        assert!(t.contains("(pins)         2         1"), "{t}");
        assert!(t.contains("  bafy1 on 12D3a: ipfs down\n"), "{t}");
        assert!(!is_ready(&st));
    }
}
