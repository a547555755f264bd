//! `pinfleet plan`: what applying manifests would change against a state
//! export, per PinSet, without touching anything.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use pinfleet::manifest::{LoadError, Owner, load_paths};
use pinfleet::plan::{DEFAULT_MAX_PRUNE_FRACTION, PruneGuard, plan_pinset};
use pinfleet::state::{PinState, read_state};
use serde_json::json;

use super::{NO, PathArgs};

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    paths: PathArgs,
    /// State export to plan against (NDJSON, as written by `state export`;
    /// `-` reads stdin). Without it, the plan is against an empty cluster.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Let a plan release more than --max-prune-fraction of a PinSet's pins.
    #[arg(long)]
    force: bool,
    /// Largest fraction of a PinSet's pins one apply may release.
    #[arg(long, value_name = "F", default_value_t = DEFAULT_MAX_PRUNE_FRACTION)]
    max_prune_fraction: f64,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: PlanArgs) -> anyhow::Result<ExitCode> {
    if !(0.0..=1.0).contains(&args.max_prune_fraction) {
        anyhow::bail!(
            "--max-prune-fraction must be between 0 and 1, got {}",
            args.max_prune_fraction
        );
    }
    let loaded = match load_paths(&args.paths.paths, &args.paths.limits.limits()) {
        Ok(l) => l,
        Err(LoadError::Invalid(diags)) => {
            println!("{diags}");
            eprintln!(
                "invalid: {}; nothing planned",
                pinfleet::manifest::plural(diags.0.len(), "problem")
            );
            return Ok(ExitCode::from(NO));
        }
        Err(e) => return Err(e).context("cannot load manifests"),
    };
    let state = match &args.state {
        Some(path) => read_state_file(path)?,
        None => PinState::new(),
    };
    let guard = PruneGuard {
        max_fraction: args.max_prune_fraction,
        force: args.force,
    };

    let mut rows = Vec::new();
    let mut refused = 0;
    for ps in &loaded.pinsets {
        let current = state.owned_by(&ps.owner());
        let row = if ps.suspend {
            json!({"pinset": ps.id.to_string(), "status": "suspended", "add": 0, "update": 0,
                   "release": 0, "unchanged": current.len()})
        } else {
            match plan_pinset(ps, &current, guard) {
                Ok(p) => json!({"pinset": ps.id.to_string(),
                    "status": if p.is_empty() { "unchanged" } else { "changes" },
                    "add": p.add.len(), "update": p.update.len(),
                    "release": p.release.len(), "unchanged": p.unchanged}),
                Err(e) => {
                    refused += 1;
                    json!({"pinset": ps.id.to_string(), "status": "refused", "reason": "PruneGuard",
                           "message": e.to_string(), "add": 0, "update": 0,
                           "release": e.release, "unchanged": current.len()})
                }
            }
        };
        rows.push(row);
    }
    let loaded_owners: BTreeSet<Owner> = loaded.pinsets.iter().map(|p| p.owner()).collect();
    let others: Vec<String> = state
        .owners()
        .into_iter()
        .filter(|o| matches!(o, Owner::PinSet(_)) && !loaded_owners.contains(o))
        .map(|o| o.to_string())
        .collect();

    if args.json {
        println!(
            "{}",
            json!({"pinsets": rows, "refused": refused, "notInManifests": others,
                   "revision": loaded.digest})
        );
    } else {
        print_table(&rows, std::io::stdout().is_terminal());
        for o in &others {
            println!(
                "note: {o} owns pins in the state but is not in these manifests (not planned)"
            );
        }
    }
    Ok(if refused > 0 {
        ExitCode::from(NO)
    } else {
        ExitCode::SUCCESS
    })
}

fn read_state_file(path: &PathBuf) -> anyhow::Result<PinState> {
    let mut state = PinState::new();
    let reader: Box<dyn std::io::BufRead> = if path.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin().lock()))
    } else {
        let f = File::open(path)
            .with_context(|| format!("cannot open state file {}", path.display()))?;
        Box::new(BufReader::new(f))
    };
    for pin in read_state(reader) {
        state.insert(pin.with_context(|| format!("invalid state file {}", path.display()))?);
    }
    Ok(state)
}

fn print_table(rows: &[serde_json::Value], color: bool) {
    let width = rows
        .iter()
        .filter_map(|r| r["pinset"].as_str().map(str::len))
        .max()
        .unwrap_or(6)
        .max(6);
    println!(
        "{:<width$}  {:>8}  {:>8}  {:>8}  {:>9}  STATUS",
        "PINSET", "ADD", "UPDATE", "RELEASE", "UNCHANGED"
    );
    for r in rows {
        let status = r["status"].as_str().unwrap_or_default();
        let shown = match (status, color) {
            ("refused", true) => format!(
                "\x1b[31mrefused\x1b[0m: {}",
                r["message"].as_str().unwrap_or_default()
            ),
            ("refused", false) => format!("refused: {}", r["message"].as_str().unwrap_or_default()),
            ("changes", true) => "\x1b[33mchanges\x1b[0m".to_string(),
            (s, _) => s.to_string(),
        };
        println!(
            "{:<width$}  {:>8}  {:>8}  {:>8}  {:>9}  {}",
            r["pinset"].as_str().unwrap_or_default(),
            count(&r["add"]),
            count(&r["update"]),
            count(&r["release"]),
            count(&r["unchanged"]),
            shown
        );
    }
}

fn count(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_default()
}
