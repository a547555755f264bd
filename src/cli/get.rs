//! `pinfleet get CID[/PATH] [-o PATH]`: reads content back through a
//! peer's IPFS node (`GET /ipfs/…`) and writes it: a file (or stdout), or
//! a directory tree walked entry by entry, each file fetched on its own.
//!
//! It writes only under the output path it names: entry names that could
//! leave it (`..`, `/`) are refused.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use pinfleet::client::{Client, FileBody, IpfsContent};
use pinfleet::manifest::CidKey;
use pinfleet::wire::IpfsEntryType;
use tokio::io::AsyncWriteExt;

use super::remote::{HostArgs, block_on};

/// Arguments of `pinfleet get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// What to read: a CID, a path in it (`CID/dir/file`), or `/ipfs/CID/…`.
    #[arg(value_name = "CID[/PATH]")]
    target: String,
    /// Where to write it (default: the path's last name, or the CID, in
    /// the current directory); `-` writes a file to stdout.
    #[arg(long, short = 'o', value_name = "PATH")]
    output: Option<PathBuf>,
    /// Print nothing on success.
    #[arg(long, short = 'q')]
    quiet: bool,
    #[command(flatten)]
    host: HostArgs,
}

/// What a get wrote.
#[derive(Debug, Default)]
struct Saved {
    files: u64,
    dirs: u64,
    bytes: u64,
}

/// `target` as `CID[/name…]`, checked: the root must be a CID and no name
/// may be `.` or `..`.
fn parse_target(target: &str) -> anyhow::Result<(String, Vec<String>)> {
    let rest = target.strip_prefix("/ipfs/").unwrap_or(target);
    let mut parts = rest.split('/').filter(|s| !s.is_empty());
    let Some(root) = parts.next() else {
        bail!("no CID given: expected CID[/PATH]");
    };
    CidKey::parse(root).with_context(|| format!("{target}: expected CID[/PATH]"))?;
    let names: Vec<String> = parts.map(str::to_string).collect();
    if names.iter().any(|n| n == "." || n == "..") {
        bail!("{target}: . and .. are not names in IPFS paths");
    }
    Ok((root.to_string(), names))
}

/// Whether a directory entry's name is one file name (nothing that walks
/// out of the directory it is written in).
fn safe_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// Runs `pinfleet get`.
pub fn run(args: GetArgs) -> anyhow::Result<ExitCode> {
    let (root, names) = parse_target(&args.target)?;
    let client = args.host.client()?;
    let path = std::iter::once(root.as_str())
        .chain(names.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("/");
    let default_name = names.last().cloned().unwrap_or_else(|| root.clone());
    if !safe_name(&default_name) {
        bail!("{default_name:?} cannot be a file name: give -o PATH");
    }
    let out = args.output.unwrap_or_else(|| PathBuf::from(default_name));
    let to_stdout = out.as_os_str() == "-";
    let saved = block_on(async {
        let content = client
            .ipfs_get(&path)
            .await
            .with_context(|| format!("cannot read /ipfs/{path}"))?;
        match content {
            IpfsContent::File(body) if to_stdout => {
                let mut stdout = tokio::io::stdout();
                let bytes = copy(body, &mut stdout, &path).await?;
                stdout.flush().await?;
                Ok(Saved {
                    files: 1,
                    bytes,
                    ..Saved::default()
                })
            }
            IpfsContent::File(body) => {
                let bytes = write_file(body, &out, &path).await?;
                Ok(Saved {
                    files: 1,
                    bytes,
                    ..Saved::default()
                })
            }
            IpfsContent::Directory(_) if to_stdout => {
                bail!("/ipfs/{path} is a directory: give -o DIR to write it")
            }
            IpfsContent::Directory(entries) => write_tree(&client, &path, entries, &out).await,
        }
    })??;
    if !args.quiet && !to_stdout {
        let what = if saved.dirs > 0 {
            format!(
                "{} in {}",
                plural(saved.files, "file"),
                plural(saved.dirs, "directory")
            )
        } else {
            plural(saved.files, "file")
        };
        println!("saved {} ({what}, {} bytes)", out.display(), saved.bytes);
    }
    Ok(ExitCode::SUCCESS)
}

fn plural(n: u64, word: &str) -> String {
    match (n, word) {
        (1, _) => format!("1 {word}"),
        (_, "directory") => format!("{n} directories"),
        _ => format!("{n} {word}s"),
    }
}

/// Copies `body` to `w`; the bytes copied, an error when fewer than the
/// peer announced arrived.
async fn copy<W: tokio::io::AsyncWrite + Unpin>(
    mut body: FileBody,
    w: &mut W,
    what: &str,
) -> anyhow::Result<u64> {
    let mut n = 0u64;
    while let Some(chunk) = body
        .chunk()
        .await
        .with_context(|| format!("reading /ipfs/{what} broke off after {n} bytes"))?
    {
        w.write_all(&chunk).await?;
        n += chunk.len() as u64;
    }
    if let Some(size) = body.size().filter(|s| *s != n) {
        bail!("reading /ipfs/{what} broke off after {n} of {size} bytes");
    }
    Ok(n)
}

/// Writes `body` to the file `dest` (created or replaced).
async fn write_file(body: FileBody, dest: &Path, what: &str) -> anyhow::Result<u64> {
    let mut f = tokio::fs::File::create(dest)
        .await
        .with_context(|| format!("cannot create {}", dest.display()))?;
    let n = copy(body, &mut f, what).await?;
    f.flush().await?;
    f.sync_all()
        .await
        .with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(n)
}

/// Writes the directory `entries` (of `/ipfs/{path}`) under `dest`,
/// walking subdirectories one listing at a time.
async fn write_tree(
    client: &Client,
    path: &str,
    entries: Vec<pinfleet::wire::IpfsDirEntry>,
    dest: &Path,
) -> anyhow::Result<Saved> {
    let mut saved = Saved::default();
    let mut todo = vec![(path.to_string(), entries, dest.to_path_buf())];
    while let Some((at, entries, dir)) = todo.pop() {
        tokio::fs::create_dir_all(&dir)
            .await
            .with_context(|| format!("cannot create {}", dir.display()))?;
        saved.dirs += 1;
        for e in entries {
            if !safe_name(&e.name) {
                bail!(
                    "/ipfs/{at} has an entry named {:?}, which cannot be a file name",
                    e.name
                );
            }
            let target = dir.join(&e.name);
            let shown = format!("{at}/{}", e.name);
            match e.kind {
                IpfsEntryType::Directory => match client.ipfs_get(&e.cid).await {
                    Ok(IpfsContent::Directory(more)) => todo.push((shown, more, target)),
                    Ok(IpfsContent::File(_)) => {
                        bail!("/ipfs/{shown} was listed as a directory but is a file")
                    }
                    Err(err) => {
                        return Err(err).with_context(|| format!("cannot read /ipfs/{shown}"));
                    }
                },
                IpfsEntryType::File => match client.ipfs_get(&e.cid).await {
                    Ok(IpfsContent::File(body)) => {
                        let n = write_file(body, &target, &shown).await?;
                        if n != e.size {
                            bail!("/ipfs/{shown} was listed with {} bytes but has {n}", e.size);
                        }
                        saved.files += 1;
                        saved.bytes += n;
                    }
                    Ok(IpfsContent::Directory(_)) => {
                        bail!("/ipfs/{shown} was listed as a file but is a directory")
                    }
                    Err(err) => {
                        return Err(err).with_context(|| format!("cannot read /ipfs/{shown}"));
                    }
                },
                IpfsEntryType::Symlink => {
                    let link_to = e.target.unwrap_or_default();
                    symlink(&link_to, &target)?;
                    saved.files += 1;
                }
            }
        }
    }
    Ok(saved)
}

#[cfg(unix)]
fn symlink(to: &str, at: &Path) -> anyhow::Result<()> {
    std::os::unix::fs::symlink(to, at)
        .with_context(|| format!("cannot create the symlink {}", at.display()))
}

#[cfg(not(unix))]
fn symlink(to: &str, at: &Path) -> anyhow::Result<()> {
    let _ = to;
    eprintln!("warning: skipped the symlink {} (unix only)", at.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";

    #[test]
    fn targets_are_a_cid_and_names() {
        let (root, names) = parse_target(&format!("/ipfs/{CID}/a//b/")).unwrap();
        assert_eq!(root, CID);
        assert_eq!(names, ["a", "b"]);
        assert!(parse_target(CID).unwrap().1.is_empty());
        for bad in ["", "/ipfs/", "not-a-cid/x", &format!("{CID}/../x")] {
            assert!(parse_target(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn entry_names_that_leave_the_directory_are_unsafe() {
        for bad in ["", ".", "..", "a/b", "..\\x", "a\0"] {
            assert!(!safe_name(bad), "{bad:?}");
        }
        assert!(safe_name("notes.txt"));
        assert!(safe_name("..hidden"));
    }
}
