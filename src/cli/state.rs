//! `pinfleet state export|import`: the shared state as a state file (NDJSON,
//! one `PinRecord` per line).
//!
//! Import reads two formats, told apart by the first record: pinfleet's
//! own (`state export`: IPFS Cluster's Pin JSON plus `owners`) and IPFS
//! Cluster's (`ipfs-cluster-service state export`: Pin JSON, one per line,
//! no `owners`; CIDs as strings or, before 1.0, as `{"/": …}`). The whole
//! file is checked first: a bad line stops the import with `FILE:LINE` and
//! nothing is written. Lines that are not data pins (sharding metadata) are
//! skipped and counted.
//!
//! Import is additive and goes through the ordinary write paths, so it obeys
//! the same rules as any other write:
//! - owner `api`'s pins (every pin of an IPFS Cluster export) stream as one
//!   NDJSON body to `POST /pins/batch` (name, mode, replication, metadata,
//!   origins, user allocations and expiry; allocation tags have no IPFS
//!   Cluster field and are dropped): the cluster writes them as one
//!   revision, all or nothing;
//! - the pins of each `pinset:<ns>/<name>` owner are grouped and sent as one
//!   PinSet document to `PUT /pinsets/{ns}/{name}` with `prune: false`, so
//!   an import adds to a PinSet and never releases anything. Every pin of a
//!   PinSet is held in memory until it is sent.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use pinfleet::manifest::{DesiredPin, DesiredPinSet, Owner, Pos, SourceRef, plural};
use pinfleet::state::StatePin;
use pinfleet::wire::{ManifestDocument, PinRecord};

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
    let path = args.file.display().to_string();
    let open = || File::open(&args.file).with_context(|| format!("cannot open state file {path}"));
    // Every line is checked before anything is written.
    let checked = check_file(BufReader::new(open()?), &path)?;
    match checked.format {
        Format::Cluster => eprintln!(
            "{path}: IPFS Cluster state export, {}",
            plural(checked.pins, "pin")
        ),
        Format::Pinfleet => eprintln!(
            "{path}: pinfleet state file, {}",
            plural(checked.pins, "pin")
        ),
    }
    if checked.skipped > 0 {
        eprintln!(
            "skipping {} that are not data pins (sharding metadata is not imported)",
            plural(checked.skipped, "line")
        );
    }
    let client = args.host.client()?;
    let source = format!("import:{path}");
    let refused = block_on(import_pins(
        &client,
        BufReader::new(open()?),
        &args,
        &source,
        &checked,
    ))??;
    Ok(if refused > 0 {
        ExitCode::from(NO)
    } else {
        ExitCode::SUCCESS
    })
}

/// Which kind of state file an import reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// `pinfleet state export`: records with `owners`.
    Pinfleet,
    /// `ipfs-cluster-service state export`: IPFS Cluster `Pin` JSON, one
    /// per line, no `owners`.
    Cluster,
}

/// What the check of a state file found.
#[derive(Debug)]
struct Checked {
    format: Format,
    pins: u64,
    skipped: u64,
    /// Per line (0-based): whether it is an IPFS Cluster pin to send on
    /// as it is (the others are skipped or read again).
    cluster_lines: Vec<bool>,
}

/// One line of a state file: a pin (its record, and whether it came as
/// IPFS Cluster's own JSON), or a pin that is not a data pin (skipped).
enum Line {
    Pin(Box<PinRecord>, bool),
    NotData,
}

fn parse_line(line: &str) -> Result<Line, String> {
    // pinfleet's own records always name their owners.
    let record = PinRecord::from_cluster_line(line)?;
    let cluster = record.owners.is_empty();
    if record.type_ != "pin" {
        return Ok(Line::NotData);
    }
    pinfleet::manifest::CidKey::parse(&record.cid).map_err(|e| {
        format!(
            "invalid cid {}: {e}",
            pinfleet::manifest::shown(&record.cid)
        )
    })?;
    Ok(Line::Pin(Box::new(record), cluster))
}

/// Reads the whole file: every line must be a pin record; the format is
/// the first record's.
fn check_file(reader: impl BufRead, path: &str) -> anyhow::Result<Checked> {
    let mut checked = Checked {
        format: Format::Pinfleet,
        pins: 0,
        skipped: 0,
        cluster_lines: Vec::new(),
    };
    let mut first = true;
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {path}"))?;
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line) {
            Ok(Line::Pin(_, cluster)) => {
                checked.cluster_lines.resize(i, false);
                checked.cluster_lines.push(cluster);
                if first {
                    checked.format = if cluster {
                        Format::Cluster
                    } else {
                        Format::Pinfleet
                    };
                    first = false;
                }
                checked.pins += 1;
            }
            Ok(Line::NotData) => {
                checked.skipped += 1;
            }
            Err(e) => anyhow::bail!("{path}:{}: {e}; nothing imported", i + 1),
        }
    }
    Ok(checked)
}

/// Body bytes gathered before they are sent on.
const SEND_BYTES: usize = 256 << 10;

/// Streams owner `api`'s pins as they are read, as one `POST /pins/batch`
/// body, and sends each PinSet owner's pins at the end. Returns the number
/// of PinSets refused. `checked` is what [`check_file`] found: an IPFS
/// Cluster export's data lines go on as they are, without parsing again.
async fn import_pins(
    client: &Client,
    reader: BufReader<File>,
    args: &ImportArgs,
    source: &str,
    checked: &Checked,
) -> anyhow::Result<usize> {
    let path = args.file.display().to_string();
    let mut sets: BTreeMap<Owner, DesiredPinSet> = BTreeMap::new();
    let mut manual = 0u64;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(8);
    let request = (!args.dry_run).then(|| {
        let client = client.clone();
        let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        tokio::spawn(async move { client.pin_batch_stream(body).await })
    });
    let mut body: Vec<u8> = Vec::new();
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr()) && checked.pins >= 100_000;
    let step = (checked.pins / 10).max(1);
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {path}"))?;
        if line.trim().is_empty() {
            continue;
        }
        if checked.cluster_lines.get(i).copied().unwrap_or(false) {
            manual += 1;
            if !args.dry_run {
                body.extend_from_slice(line.as_bytes());
                body.push(b'\n');
            }
        } else {
            let record = match parse_line(&line) {
                Ok(Line::Pin(r, _)) => r,
                Ok(Line::NotData) => continue,
                Err(e) => anyhow::bail!("{path}:{}: {e}", i + 1),
            };
            let pin = record
                .into_pin()
                .map_err(|e| anyhow::anyhow!("{path}:{}: {e}", i + 1))?;
            for (owner, spec) in &pin.owners {
                match owner {
                    // Pinning Service requests are not in the export (only
                    // their pins): nothing to import for them.
                    Owner::PinSvc(_) => {}
                    Owner::Api => {
                        manual += 1;
                        if args.dry_run {
                            continue;
                        }
                        let only = StatePin {
                            owners: BTreeMap::from([(Owner::Api, spec.clone())]),
                            ..pin.clone()
                        };
                        let mut rec = PinRecord::from_pin(&only);
                        rec.owners.clear();
                        rec.allocations.clear();
                        serde_json::to_writer(&mut body, &rec)?;
                        body.push(b'\n');
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
        if progress && manual.is_multiple_of(step) {
            eprintln!("read {manual} of {} pins", checked.pins);
        }
        // A send fails only once the request ended: its answer says why.
        if body.len() >= SEND_BYTES
            && tx
                .send(Ok(bytes::Bytes::from(std::mem::take(&mut body))))
                .await
                .is_err()
        {
            break;
        }
    }
    if !body.is_empty() {
        let _ = tx.send(Ok(bytes::Bytes::from(body))).await;
    }
    drop(tx);
    let created = match request {
        Some(task) => {
            task.await
                .context("the import request stopped")?
                .context("cannot import the pins of owner api")?
                .created
        }
        None => 0,
    };
    if args.dry_run {
        eprintln!("would pin {} by hand (owner api)", plural(manual, "pin"));
    } else {
        eprintln!(
            "pinned {} by hand (owner api), {created} new",
            plural(manual, "pin")
        );
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
