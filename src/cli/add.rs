//! `pinfleet add FILE|DIR...`: adds content through a peer's IPFS node
//! (`POST /add`, multipart, as `ipfs-cluster-ctl add` sends it) and pins the
//! root in the cluster.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use pinfleet::manifest::size::parse_size;
use pinfleet::multipart::Upload;

use super::pin::PinOptionArgs;
use super::remote::{HostArgs, block_on};
use super::wait::{Goal, WaitArgs};

/// Arguments of `pinfleet add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// Files or directories to add (directories recursively).
    #[arg(required = true, value_name = "FILE|DIR")]
    paths: Vec<PathBuf>,
    /// The pin's options (its name defaults to the file or directory name).
    #[command(flatten)]
    options: PinOptionArgs,
    /// Directories are always added recursively; accepted for
    /// ipfs-cluster-ctl's `add -r`.
    #[arg(long, short = 'r', hide = true)]
    recursive: bool,
    /// Wrap everything in a directory and pin that (needed for several paths).
    #[arg(long, short = 'w')]
    wrap_with_directory: bool,
    /// CID version: 0 (`Qm…`, dag-pb leaves, the default) or 1 (raw leaves).
    #[arg(long, value_name = "0|1", default_value_t = 0)]
    cid_version: u8,
    /// Raw leaves (default: only with --cid-version 1).
    #[arg(long)]
    raw_leaves: bool,
    /// Chunker: `size-N` bytes (default size-262144).
    #[arg(long, value_name = "size-N")]
    chunker: Option<String>,
    /// Include files and directories whose name starts with `.`.
    #[arg(long)]
    hidden: bool,
    /// Only store the content in the peer's IPFS node; pin nothing in the
    /// cluster (the node's gc may remove it until something pins it).
    #[arg(long)]
    no_pin: bool,
    /// Shard the content across peers (IPFS Cluster's sharded add): the
    /// blocks are split into shards of at most --shard-size bytes, each
    /// sent to the peers with the most free space (as many as
    /// --replication-max) and pinned there; no peer holds the whole
    /// content. Needs the embedded IPFS node on the adding peer.
    #[arg(long)]
    shard: bool,
    /// Most bytes per shard with --shard: bytes, or with a unit (32MiB,
    /// 1GiB, 500MB). Default 100MiB (IPFS Cluster's).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "shard")]
    shard_size: Option<u64>,
    /// Print only the root CID.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// One JSON object per added entry (IPFS Cluster's `AddedOutput`).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    wait: WaitArgs,
    #[command(flatten)]
    host: HostArgs,
}

fn hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Escapes a relative path for a multipart filename (Kubo's clients send
/// them URL-escaped): everything but unreserved characters and `/`.
fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Adds `path` (named `name` in the upload) to `form`: a directory as an
/// `application/x-directory` part followed by its entries in name order.
async fn push(form: &mut Upload, path: &Path, name: &str, with_hidden: bool) -> anyhow::Result<()> {
    let meta = tokio::fs::symlink_metadata(path)
        .await
        .with_context(|| format!("cannot read {}", path.display()))?;
    if meta.file_type().is_symlink() {
        bail!(
            "{}: symbolic links are not supported by add yet (ipfs add would store the link itself)",
            path.display()
        );
    }
    if meta.is_dir() {
        form.directory(&escape(name));
        let mut entries = Vec::new();
        let mut dir = tokio::fs::read_dir(path)
            .await
            .with_context(|| format!("cannot list {}", path.display()))?;
        while let Some(e) = dir.next_entry().await? {
            entries.push(e.path());
        }
        entries.sort();
        for e in entries {
            if !with_hidden && hidden(&e) {
                continue;
            }
            let Some(child) = e.file_name().and_then(|n| n.to_str()) else {
                bail!("{}: file names must be UTF-8", e.display());
            };
            Box::pin(push(form, &e, &format!("{name}/{child}"), with_hidden)).await?;
        }
        Ok(())
    } else if meta.is_file() {
        // Opened when the body reaches this part, so a directory of many
        // files holds one descriptor at a time.
        form.file(&escape(name), path.to_path_buf(), meta.len());
        Ok(())
    } else {
        bail!("{}: not a file or directory", path.display())
    }
}

/// Runs `pinfleet add`.
pub fn run(args: AddArgs) -> anyhow::Result<ExitCode> {
    if args.paths.len() > 1 && !args.wrap_with_directory {
        bail!("several paths: add them in one directory with --wrap-with-directory");
    }
    if args.no_pin && args.wait.wait {
        bail!("--wait waits for the pin: it does not go with --no-pin");
    }
    let client = args.host.client()?;
    let mut query: Vec<(String, String)> = vec![
        ("cid-version".into(), args.cid_version.to_string()),
        ("stream-channels".into(), "true".into()),
    ];
    if args.options.name.is_none() {
        let name = args.paths[0]
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !name.is_empty() {
            query.push(("name".into(), name.to_string()));
        }
    }
    query.extend(args.options.query()?);
    if args.wrap_with_directory {
        query.push(("wrap-with-directory".into(), "true".into()));
    }
    if args.raw_leaves {
        query.push(("raw-leaves".into(), "true".into()));
    }
    if args.hidden {
        query.push(("hidden".into(), "true".into()));
    }
    if args.no_pin {
        query.push(("pin".into(), "false".into()));
    }
    if let Some(c) = &args.chunker {
        query.push(("chunker".into(), c.clone()));
    }
    if args.shard {
        if args.no_pin {
            bail!("--shard pins the shards: it does not go with --no-pin");
        }
        query.push(("shard".into(), "true".into()));
        let size = args.shard_size.unwrap_or(100 << 20);
        query.push(("shard-size".into(), size.to_string()));
    }
    let outputs = block_on(async {
        let mut form = Upload::new();
        for p in &args.paths {
            let Some(n) = p
                .canonicalize()
                .ok()
                .and_then(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()))
            else {
                bail!("{}: cannot name it (no file name)", p.display());
            };
            push(&mut form, p, &n, args.hidden).await?;
        }
        let query: Vec<(&str, String)> =
            query.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        client
            .add(form, &query)
            .await
            .context("cannot add the content")
    })??;
    let Some(root) = outputs.last() else {
        bail!("the peer answered no added entry");
    };
    if args.json {
        for o in &outputs {
            println!("{}", serde_json::to_string(o)?);
        }
    } else if args.quiet {
        println!("{}", root.cid);
    } else {
        for o in &outputs {
            println!("added {} {}", o.cid, o.name);
        }
        if !root.allocations.is_empty() {
            println!("pinned on {}", root.allocations.join(", "));
        }
    }
    if args.no_pin {
        return Ok(ExitCode::SUCCESS);
    }
    let root_cid = root.cid.clone();
    super::pin::finish_wait(
        &client,
        &root_cid,
        Goal::Pinned,
        None,
        &args.wait,
        args.json || args.quiet,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    impl AddArgs {
        /// `pinfleet add ARGS... f` as clap reads it; the error as text.
        fn try_parse_from_args(args: &[&str]) -> Result<AddArgs, String> {
            #[derive(clap::Parser)]
            struct Cli {
                #[command(flatten)]
                add: AddArgs,
            }
            let argv = std::iter::once("add")
                .chain(args.iter().copied())
                .chain(["f"]);
            <Cli as clap::Parser>::try_parse_from(argv)
                .map(|c| c.add)
                .map_err(|e| e.to_string())
        }
    }

    #[test]
    fn names_are_escaped_for_multipart_filenames() {
        assert_eq!(escape("dir/a b.txt"), "dir/a%20b.txt");
        assert_eq!(escape("ü\"%"), "%C3%BC%22%25");
        assert_eq!(escape("site/index.html"), "site/index.html");
    }

    #[test]
    fn shard_sizes_take_units() {
        let shard_size = |s: &str| {
            AddArgs::try_parse_from_args(&["--shard", "--shard-size", s]).map(|a| a.shard_size)
        };
        assert_eq!(shard_size("32MiB"), Ok(Some(32 << 20)));
        assert_eq!(shard_size("1GiB"), Ok(Some(1 << 30)));
        assert_eq!(shard_size("500MB"), Ok(Some(500_000_000)));
        assert_eq!(shard_size("4194304"), Ok(Some(4_194_304)));
        assert!(shard_size("0").is_err());
        assert!(shard_size("lots").is_err());
        // --shard-size goes with --shard.
        assert!(AddArgs::try_parse_from_args(&["--shard-size", "1MiB"]).is_err());
    }
}
