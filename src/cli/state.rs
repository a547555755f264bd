//! `pinfleet state export|import`: the shared state as a state file (NDJSON,
//! one `PinRecord` per line).
//!
//! Import is additive and goes through the ordinary write paths, so it obeys
//! the same rules as any other write:
//! - an owner `api` holds its pins through `POST /pins/{cid}` (with the
//!   owner's name, mode, replication, metadata, origins, user allocations and
//!   expiry; allocation tags have no REST parameter and are dropped);
//! - the pins of each `pinset:<ns>/<name>` owner are grouped and sent as one
//!   PinSet document to `PUT /pinsets/{ns}/{name}` with `prune: false`, so
//!   an import adds to a PinSet and never releases anything. Every pin of a
//!   PinSet is held in memory until it is sent.
//!
//! A line without `owners` (an IPFS Cluster export) is owned by `api`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use pinfleet::manifest::{DesiredPin, DesiredPinSet, Owner, PinSpec, Pos, SourceRef, plural};
use pinfleet::state::{StatePin, read_state};
use pinfleet::wire::ManifestDocument;

use super::NO;
use super::remote::{HostArgs, Out, block_on};
use pinfleet::client::{ApplyOptions, Client};

/// State file commands.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Write every pin of the shared state, one JSON record per line.
    Export(ExportArgs),
    /// Add the pins of a state file to the cluster, each for its owners.
    ///
    /// `api` pins are pinned by hand; the pins of each PinSet owner are sent
    /// as that PinSet (without prune, so nothing is ever released).
    Import(ImportArgs),
}

/// Arguments of `pinfleet state export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to FILE (replaced only once the export is complete) instead of
    /// stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    host: HostArgs,
}

/// Arguments of `pinfleet state import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// State file (NDJSON) as written by `state export` or IPFS Cluster.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Only show what the PinSets would gain; pin nothing.
    #[arg(long)]
    dry_run: bool,
    /// Manual pins sent at once.
    #[arg(long, value_name = "N", default_value_t = 16)]
    concurrency: usize,
    #[command(flatten)]
    host: HostArgs,
}

/// Runs `pinfleet state ...`.
pub fn run(cmd: StateCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        StateCommand::Export(args) => export(args),
        StateCommand::Import(args) => import(args),
    }
}

fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let client = args.host.client()?;
    match &args.output {
        None => {
            let mut out = Out::new();
            block_on(async {
                let mut stream = client.export().await?;
                while let Some(chunk) = stream.next().await {
                    if !out.write(&chunk.context("the export broke off")?)? {
                        break;
                    }
                }
                anyhow::Ok(())
            })??;
            out.finish()?;
        }
        Some(path) => {
            let tmp = tmp_path(path);
            let mut f =
                File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
            let copied = block_on(copy_export(&client, &mut f))?
                .and_then(|n| f.sync_all().map(|()| n).context("cannot write the export"));
            match copied {
                Ok(n) => {
                    std::fs::rename(&tmp, path)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!("exported {n} bytes to {}", path.display());
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn copy_export(client: &Client, out: &mut impl Write) -> anyhow::Result<u64> {
    let mut stream = client.export().await?;
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("the export broke off")?;
        out.write_all(&chunk).context("cannot write the export")?;
        total += chunk.len() as u64;
    }
    Ok(total)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let file = File::open(&args.file)
        .with_context(|| format!("cannot open state file {}", args.file.display()))?;
    let client = args.host.client()?;
    let source = format!("import:{}", args.file.display());
    let refused = block_on(import_pins(&client, BufReader::new(file), &args, &source))??;
    Ok(if refused > 0 {
        ExitCode::from(NO)
    } else {
        ExitCode::SUCCESS
    })
}

/// Pins `api` pins as they are read (at most `concurrency` in flight) and
/// sends each PinSet owner's pins at the end. Returns the number of PinSets
/// refused.
async fn import_pins(
    client: &Client,
    reader: BufReader<File>,
    args: &ImportArgs,
    source: &str,
) -> anyhow::Result<usize> {
    let path = args.file.display().to_string();
    let mut sets: BTreeMap<Owner, DesiredPinSet> = BTreeMap::new();
    let mut in_flight = FuturesUnordered::new();
    let mut manual = 0u64;
    for pin in read_state(reader) {
        let pin = pin.with_context(|| format!("invalid state file {path}"))?;
        for (owner, spec) in &pin.owners {
            match owner {
                Owner::Api => {
                    manual += 1;
                    if args.dry_run {
                        continue;
                    }
                    let cid = pin.display_cid();
                    let query = pin_query(&pin, spec);
                    in_flight.push(async move {
                        client
                            .pin(&cid, &query)
                            .await
                            .with_context(|| format!("cannot pin {cid}"))
                    });
                    if in_flight.len() >= args.concurrency.max(1)
                        && let Some(done) = in_flight.next().await
                    {
                        done?;
                    }
                }
                Owner::PinSet(id) => {
                    let set = sets.entry(owner.clone()).or_insert_with(|| DesiredPinSet {
                        id: (**id).clone(),
                        labels: BTreeMap::new(),
                        annotations: BTreeMap::new(),
                        suspend: false,
                        prune: false,
                        source: SourceRef {
                            file: args.file.clone(),
                            pos: Pos::default(),
                        },
                        pins: BTreeMap::new(),
                    });
                    set.pins.insert(
                        pin.cid,
                        DesiredPin {
                            spec: spec.clone(),
                            written_as: pin.written_as.clone(),
                        },
                    );
                }
            }
        }
    }
    while let Some(done) = in_flight.next().await {
        done?;
    }
    if args.dry_run {
        eprintln!("would pin {} by hand (owner api)", plural(manual, "pin"));
    } else {
        eprintln!("pinned {} by hand (owner api)", plural(manual, "pin"));
    }
    let opts = ApplyOptions {
        dry_run: args.dry_run,
        source: Some(source.to_string()),
        ..ApplyOptions::default()
    };
    let mut refused = 0;
    for set in sets.values() {
        let body = serde_json::to_vec(&ManifestDocument::new(set))?;
        let report = client
            .put_pinset(&set.id, body, &opts)
            .await
            .with_context(|| format!("cannot import pinset {}", set.id))?;
        match &report.refused {
            Some(why) => {
                refused += 1;
                eprintln!("pinset {}: refused: {why}", set.id);
            }
            None if args.dry_run => eprintln!(
                "pinset {}: would add {} and update {}; {} unchanged",
                set.id,
                plural(report.add, "pin"),
                report.update,
                report.unchanged
            ),
            None => eprintln!(
                "pinset {}: added {}, updated {}; {} unchanged",
                set.id,
                plural(report.add, "pin"),
                report.update,
                report.unchanged
            ),
        }
    }
    Ok(refused)
}

/// IPFS Cluster's pin query parameters for what one owner asked for. A
/// relative expiry counts from when the pin entered the state.
fn pin_query(pin: &StatePin, spec: &PinSpec) -> Vec<(String, String)> {
    let o = &spec.options;
    let mut q: Vec<(String, String)> = Vec::new();
    let mut push = |k: &str, v: String| q.push((k.to_string(), v));
    push("mode", o.mode.as_str().to_string());
    if !spec.name.is_empty() {
        push("name", spec.name.clone());
    }
    if o.replication.min != 0 {
        push("replication-min", o.replication.min.to_string());
    }
    if o.replication.max != 0 {
        push("replication-max", o.replication.max.to_string());
    }
    if !o.user_allocations.is_empty() {
        push("user-allocations", o.user_allocations.join(","));
    }
    if !o.origins.is_empty() {
        push("origins", o.origins.join(","));
    }
    let expire_at = o.expire_at_ms.or_else(|| {
        o.expire_after.map(|d| {
            pin.timestamp_ms
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        })
    });
    if let Some(ms) = expire_at
        && let Some(t) = chrono::DateTime::from_timestamp_millis(ms)
    {
        push(
            "expire-at",
            t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        );
    }
    for (k, v) in &o.metadata {
        push(&format!("meta-{k}"), v.clone());
    }
    q
}
