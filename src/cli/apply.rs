//! `pinfleet apply`, `pinfleet diff` and `pinfleet delete`: PinSet manifests
//! against a running cluster.
//!
//! Manifests are loaded and validated here, with `pinsFrom` lists read from
//! local disk; each PinSet is then sent as one self-contained JSON document
//! (lists inlined) to `PUT /pinsets/{ns}/{name}`, which plans it against the
//! cluster's state and applies it atomically. `diff` sends the same requests
//! as dry runs.
//!
//! Unchanged PinSets cost a hash, not a send: the manifests are first only
//! scanned (lists hashed, not parsed), each PinSet's source digest is
//! compared with the revision the cluster recorded for it (an apply from
//! here records that digest as the revision), and only PinSets that differ
//! are loaded whole and sent. `--force` sends everything.
//!
//! Writes are conditional: when another writer (a controller, another
//! `apply`) changes a PinSet between the cluster planning this apply and
//! committing it, the cluster refuses it (409, nothing applied). `apply`
//! then sends it once more — the cluster plans it again against what it
//! holds now, under the same prune guard, exactly what running `apply`
//! again would do — and says so on stderr; a second conflict means the
//! PinSet is being written right now by someone else, which the user
//! should see: it is an error (exit 2) with the cluster's message.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use pinfleet::manifest::duration::parse_duration;
use pinfleet::manifest::{
    DEFAULT_NAMESPACE, DesiredPinSet, LoadError, Loaded, PinSetId, load_paths, scan_paths,
};
use pinfleet::plan::DEFAULT_MAX_PRUNE_FRACTION;
use pinfleet::wire::{ApplyReport, ManifestDocument, PinSetInfo};
use serde_json::json;

use super::remote::{HostArgs, block_on};
use super::{NO, PathArgs, status};
use pinfleet::client::{ApplyOptions, Client, ClientError};

/// Arguments of `pinfleet apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    paths: PathArgs,
    /// Only show what would change; write nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    guard: GuardArgs,
    #[command(flatten)]
    host: HostArgs,
    /// Print the reports as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// After applying, wait until every applied PinSet is Ready (all its
    /// pins pinned); exit 1 if one is not by --wait-timeout.
    #[arg(long, conflicts_with = "dry_run")]
    wait: bool,
    /// How long --wait waits (Go duration: 90s, 5m, 1h).
    #[arg(long, value_name = "DURATION", default_value = "5m", requires = "wait")]
    wait_timeout: String,
}

/// Arguments of `pinfleet diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    paths: PathArgs,
    #[command(flatten)]
    guard: GuardArgs,
    #[command(flatten)]
    host: HostArgs,
    /// Print the reports as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// The prune guard's knobs.
#[derive(Debug, Args)]
pub struct GuardArgs {
    /// Let an apply release more than --max-prune-fraction of a PinSet's
    /// pins, or all of them.
    #[arg(long)]
    force: bool,
    /// Largest fraction of a PinSet's pins one apply may release.
    #[arg(long, value_name = "F", default_value_t = DEFAULT_MAX_PRUNE_FRACTION)]
    max_prune_fraction: f64,
}

/// Arguments of `pinfleet delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// What to delete: `pinset/NAMESPACE/NAME`, or `pinset/NAME` in the
    /// `default` namespace.
    #[arg(value_name = "pinset/NS/NAME")]
    target: String,
    /// Release the PinSet's pins even though that is all of them (the prune
    /// guard refuses otherwise).
    #[arg(long)]
    force: bool,
    /// Only show what would be released.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    host: HostArgs,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// One PinSet's answer.
enum Row {
    Report(ApplyReport),
    /// `spec.suspend: true`: not sent (the cluster keeps what it has).
    Suspended(PinSetId),
}

impl Row {
    fn changes(&self) -> bool {
        match self {
            Row::Report(r) => r.refused.is_some() || r.add + r.update + r.release > 0,
            Row::Suspended(_) => false,
        }
    }

    fn refused(&self) -> bool {
        matches!(self, Row::Report(r) if r.refused.is_some())
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            Row::Report(r) => serde_json::to_value(r).unwrap_or_default(),
            Row::Suspended(id) => json!({"pinset": id.to_string(), "suspended": true}),
        }
    }
}

/// Runs `pinfleet apply`.
pub fn run_apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let timeout =
        parse_duration(&args.wait_timeout).map_err(|e| anyhow::anyhow!("--wait-timeout: {e}"))?;
    let client = args.host.client()?;
    let opts = args.guard.options(args.dry_run)?;
    let Some((loaded, rows)) = block_on(apply_changed(&client, &args.paths, &opts))?? else {
        return Ok(ExitCode::from(NO));
    };
    let refused = rows.iter().filter(|r| r.refused()).count();
    // Wait for what was applied; a refusal already makes the answer "no".
    let waited = if args.wait && refused == 0 {
        if !args.json {
            print_rows(&rows, args.dry_run, false);
        }
        // `send_all` answers one row per PinSet, in order.
        let ids = rows
            .iter()
            .zip(&loaded.pinsets)
            .filter(|(r, _)| matches!(r, Row::Report(r) if !r.suspended))
            .map(|(_, p)| p.id.clone())
            .collect();
        Some(block_on(status::wait_ready(&client, ids, timeout))??)
    } else {
        None
    };
    if args.json {
        let reports: Vec<_> = rows.iter().map(Row::to_json).collect();
        let mut doc = json!({"pinsets": reports, "refused": refused, "dryRun": args.dry_run,
                             "revision": loaded.digest});
        if let Some(w) = &waited {
            doc["wait"] = status::waited_json(w);
        }
        println!("{doc}");
    } else if let Some(w) = &waited {
        status::print_waited(w);
    } else {
        print_rows(&rows, args.dry_run, false);
    }
    let ready = waited
        .as_deref()
        .is_none_or(|w| status::note_timeout(w, timeout));
    Ok(if refused > 0 || !ready {
        ExitCode::from(NO)
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs `pinfleet diff`: exit 0 when nothing would change, 1 when something
/// would (including a prune guard refusal), 2 on errors.
pub fn run_diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let client = args.host.client()?;
    let opts = args.guard.options(true)?;
    let Some((loaded, rows, recorded)) = block_on(async {
        let Some((loaded, rows)) = apply_changed(&client, &args.paths, &opts).await? else {
            return anyhow::Ok(None);
        };
        let recorded = client
            .pinsets()
            .await
            .context("cannot list the cluster's PinSets")?;
        anyhow::Ok(Some((loaded, rows, recorded)))
    })??
    else {
        // Invalid manifests: the answer cannot be "no change".
        return Ok(ExitCode::from(NO));
    };
    let loaded_ids: BTreeSet<String> = loaded.pinsets.iter().map(|p| p.id.to_string()).collect();
    let others: Vec<String> = recorded
        .iter()
        .map(|r| format!("{}/{}", r.namespace, r.name))
        .filter(|id| !loaded_ids.contains(id))
        .collect();
    let changes = rows.iter().any(Row::changes);
    if args.json {
        let reports: Vec<_> = rows.iter().map(Row::to_json).collect();
        println!(
            "{}",
            json!({"pinsets": reports, "changes": changes, "notInManifests": others,
                   "revision": loaded.digest})
        );
    } else {
        print_rows(&rows, true, true);
        for o in &others {
            println!(
                "note: pinset {o} is in the cluster but not in these manifests (not compared)"
            );
        }
    }
    Ok(if changes {
        ExitCode::from(NO)
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs `pinfleet delete`.
pub fn run_delete(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let id = parse_target(&args.target)?;
    let client = args.host.client()?;
    let report = block_on(client.delete_pinset(&id, args.force, args.dry_run))?
        .with_context(|| format!("cannot delete pinset {id}"))?;
    let refused = report.refused.is_some();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else if let Some(why) = &report.refused {
        println!("refused: {why}");
    } else if args.dry_run {
        println!(
            "would delete pinset {id}, releasing {}",
            pinfleet::manifest::plural(report.release, "pin")
        );
    } else {
        println!(
            "deleted pinset {id}: released {}, {} left the cluster",
            pinfleet::manifest::plural(report.release, "pin"),
            report.removed
        );
    }
    Ok(if refused {
        ExitCode::from(NO)
    } else {
        ExitCode::SUCCESS
    })
}

impl GuardArgs {
    fn options(&self, dry_run: bool) -> anyhow::Result<ApplyOptions> {
        if !(0.0..=1.0).contains(&self.max_prune_fraction) {
            anyhow::bail!(
                "--max-prune-fraction must be between 0 and 1, got {}",
                self.max_prune_fraction
            );
        }
        Ok(ApplyOptions {
            dry_run,
            force: self.force,
            max_prune_fraction: Some(self.max_prune_fraction),
            ..ApplyOptions::default()
        })
    }
}

/// Loads the manifests; invalid ones are printed (file:line:col) and give
/// `None`.
/// Loads (or scans) the manifests with `how`; invalid ones are printed
/// (file:line:col) and give `None`.
fn load_with(
    paths: &PathArgs,
    how: fn(&[std::path::PathBuf], &pinfleet::manifest::Limits) -> Result<Loaded, LoadError>,
) -> anyhow::Result<Option<Loaded>> {
    match how(&paths.paths, &paths.limits.limits()) {
        Ok(l) => Ok(Some(l)),
        Err(LoadError::Invalid(diags)) => {
            println!("{diags}");
            eprintln!(
                "invalid: {}; nothing sent",
                pinfleet::manifest::plural(diags.0.len(), "problem")
            );
            Ok(None)
        }
        Err(e) => Err(e).context("cannot load manifests"),
    }
}

/// Scans the manifests, then loads and sends (in order) only the PinSets
/// whose source digest differs from the revision the cluster holds for
/// them (every PinSet with `--force`); unchanged ones get an `unchanged`
/// row without being read or sent. `None` when the manifests are invalid
/// (the problems are printed).
async fn apply_changed(
    client: &Client,
    paths: &PathArgs,
    opts: &ApplyOptions,
) -> anyhow::Result<Option<(Loaded, Vec<Row>)>> {
    let Some(scanned) = load_with(paths, scan_paths)? else {
        return Ok(None);
    };
    let recorded: Vec<PinSetInfo> = if opts.force {
        Vec::new()
    } else {
        client
            .pinsets()
            .await
            .context("cannot list the cluster's PinSets")?
    };
    let unchanged = |ps: &DesiredPinSet| -> Option<ApplyReport> {
        let digest = scanned.source_digests.get(&ps.id)?;
        let r = recorded
            .iter()
            .find(|r| r.namespace == ps.id.namespace && r.name == ps.id.name)?;
        (r.revision == *digest && r.suspend == ps.suspend).then(|| ApplyReport {
            pinset: ps.id.to_string(),
            unchanged: r.pins,
            dry_run: opts.dry_run,
            // The shape the server's report has: every kind, empty.
            sample: ["add", "update", "release"]
                .into_iter()
                .map(|k| (k.to_string(), Vec::new()))
                .collect(),
            ..ApplyReport::default()
        })
    };
    let quiet: Option<Vec<Row>> = scanned
        .pinsets
        .iter()
        .map(|ps| {
            if ps.suspend {
                Some(Row::Suspended(ps.id.clone()))
            } else {
                unchanged(ps).map(Row::Report)
            }
        })
        .collect();
    if let Some(rows) = quiet {
        return Ok(Some((scanned, rows)));
    }
    let Some(loaded) = load_with(paths, load_paths)? else {
        return Ok(None);
    };
    let mut rows = Vec::with_capacity(loaded.pinsets.len());
    for ps in &loaded.pinsets {
        match unchanged(ps) {
            _ if ps.suspend => rows.push(Row::Suspended(ps.id.clone())),
            Some(r) => rows.push(Row::Report(r)),
            None => rows.push(send(client, ps, &loaded, opts).await?),
        }
    }
    Ok(Some((loaded, rows)))
}

/// Sends one PinSet whole, its source digest as the revision.
async fn send(
    client: &Client,
    ps: &DesiredPinSet,
    loaded: &Loaded,
    opts: &ApplyOptions,
) -> anyhow::Result<Row> {
    {
        // Serialised per request: a large PinSet's body is not kept twice.
        let body = || serde_json::to_vec(&ManifestDocument::new(ps));
        let opts = ApplyOptions {
            source: Some(ps.source.to_string()),
            revision: loaded.source_digests.get(&ps.id).cloned(),
            ..opts.clone()
        };
        let report = match client.put_pinset(&ps.id, body()?, &opts).await {
            Err(e) if e.is_conflict() => {
                eprintln!(
                    "note: pinset {} changed while this apply was planned; planning it again",
                    ps.id
                );
                client.put_pinset(&ps.id, body()?, &opts).await
            }
            other => other,
        }
        .map_err(|e| with_problems(e, &ps.id))?;
        Ok(Row::Report(report))
    }
}

/// Keeps the server's located problems (422) in the error chain.
fn with_problems(e: ClientError, id: &PinSetId) -> anyhow::Error {
    let problems: Vec<String> = match &e {
        ClientError::Api { errors, .. } => errors
            .iter()
            .map(|p| format!("{}:{}:{}: {}", p.file, p.line, p.col, p.message))
            .collect(),
        _ => Vec::new(),
    };
    let mut err = anyhow::Error::new(e);
    if !problems.is_empty() {
        err = err.context(problems.join("; "));
    }
    err.context(format!("cannot apply pinset {id}"))
}

pub(super) fn parse_target(target: &str) -> anyhow::Result<PinSetId> {
    let rest = target
        .strip_prefix("pinset/")
        .or_else(|| target.strip_prefix("pinsets/"))
        .with_context(|| {
            format!(
                "{}: expected pinset/NAMESPACE/NAME or pinset/NAME",
                pinfleet::manifest::shown(target)
            )
        })?;
    let (ns, name) = match rest.split_once('/') {
        Some((ns, name)) => (ns, name),
        None => (DEFAULT_NAMESPACE, rest),
    };
    for part in [ns, name] {
        pinfleet::manifest::check_dns_label(part).map_err(|e| {
            anyhow::anyhow!(
                "{}: {} {e}",
                pinfleet::manifest::shown(target),
                pinfleet::manifest::shown(part)
            )
        })?;
    }
    Ok(PinSetId::new(ns, name))
}

fn print_rows(rows: &[Row], dry_run: bool, samples: bool) {
    let name = |r: &Row| match r {
        Row::Report(r) => r.pinset.clone(),
        Row::Suspended(id) => id.to_string(),
    };
    let width = rows.iter().map(|r| name(r).len()).max().unwrap_or(6).max(6);
    println!(
        "{:<width$}  {:>8}  {:>8}  {:>8}  {:>9}  STATUS",
        "PINSET", "ADD", "UPDATE", "RELEASE", "UNCHANGED"
    );
    for row in rows {
        let Row::Report(r) = row else {
            println!(
                "{:<width$}  {:>8}  {:>8}  {:>8}  {:>9}  suspended (not sent)",
                name(row),
                "-",
                "-",
                "-",
                "-"
            );
            continue;
        };
        let status = match (&r.refused, dry_run, row.changes()) {
            (Some(why), _, _) => format!("refused: {why}"),
            (None, true, true) => "changes".to_string(),
            (None, false, true) => "applied".to_string(),
            (None, _, false) => "unchanged".to_string(),
        };
        println!(
            "{:<width$}  {:>8}  {:>8}  {:>8}  {:>9}  {}",
            r.pinset, r.add, r.update, r.release, r.unchanged, status
        );
        if samples {
            for (kind, mark, total) in [
                ("add", '+', r.add),
                ("update", '~', r.update),
                ("release", '-', r.release),
            ] {
                let sample = r.sample.get(kind).map(Vec::as_slice).unwrap_or_default();
                for cid in sample {
                    println!("  {mark} {cid}");
                }
                let more = total.saturating_sub(sample.len() as u64);
                if more > 0 && !sample.is_empty() {
                    println!("  {mark} … {more} more");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("pinset/mirrors/arch").unwrap(),
            PinSetId::new("mirrors", "arch")
        );
        assert_eq!(
            parse_target("pinset/arch").unwrap(),
            PinSetId::new("default", "arch")
        );
        assert!(parse_target("arch").is_err());
        assert!(parse_target("pinset/Bad/x").is_err());
        assert!(parse_target("pinset/a/b/c").is_err());
    }
}
