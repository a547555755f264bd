//! The importer: bytes and filesystem trees into UnixFS blocks, as Kubo's
//! `ipfs add` builds them (fixed-size chunker, balanced layout, basic
//! directories, symlinks).
//!
//! Blocks leave through the caller's [`Sink`], children first; it must not
//! store or pin them itself, nor hold a whole file in memory (one chunk
//! plus the pending links per tree level).

use std::io::{self, Read};
use std::path::Path;

use bytes::Bytes;
use cid::{Cid, Version};
use multihash::Multihash;
use sha2::{Digest, Sha256};

use super::hamt;
use super::{
    AddOptions, Added, DataType, ImportEvent, MAX_CHUNK_SIZE, MAX_LINKS, Sink, UnixfsData,
    UnixfsError,
};
use crate::ipfs::dagpb::{self, DAG_PB, PbLink, PbNode, RAW, SHA2_256};

/// Validated options.
#[derive(Debug, Clone, Copy)]
pub(super) struct Config {
    version: Version,
    raw_leaves: bool,
    chunk_size: usize,
    hidden: bool,
}

impl Config {
    pub(super) fn new<E>(opts: &AddOptions) -> Result<Self, UnixfsError<E>> {
        if opts.chunk_size == 0 || opts.chunk_size > MAX_CHUNK_SIZE {
            return Err(UnixfsError::InvalidOptions(format!(
                "chunk_size {} is outside 1..={MAX_CHUNK_SIZE}",
                opts.chunk_size
            )));
        }
        Ok(Config {
            version: opts.cid_version,
            raw_leaves: opts.uses_raw_leaves(),
            chunk_size: opts.chunk_size,
            hidden: opts.hidden,
        })
    }

    /// Whether a directory entry called `name` is imported (hidden names,
    /// starting with `.`, only with [`AddOptions::hidden`]).
    pub(super) fn includes(&self, name: &str) -> bool {
        self.hidden || !name.starts_with('.')
    }
}

/// The sha2-256 CID of `block`. CIDv0 only exists for dag-pb, so any other
/// codec gets CIDv1 whatever `version` says (as Kubo does for raw leaves).
pub(super) fn block_cid(version: Version, codec: u64, block: &[u8]) -> Cid {
    let digest = Sha256::digest(block);
    // Infallible: a 32-byte digest always fits the 64-byte multihash.
    let mh = Multihash::wrap(SHA2_256, &digest).expect("32-byte digest fits a Multihash<64>");
    if version == Version::V0 && codec == DAG_PB {
        // Infallible: new_v0 only rejects non-sha2-256 or non-32-byte hashes.
        Cid::new_v0(mh).expect("sha2-256 dag-pb is a valid CIDv0")
    } else {
        Cid::new_v1(codec, mh)
    }
}

/// A finished subtree, as its parent links to it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Child {
    pub(super) cid: Cid,
    /// Cumulative size (Tsize).
    pub(super) tsize: u64,
    /// File bytes under it.
    pub(super) filesize: u64,
}

fn emit<E>(sink: &mut Sink<'_, E>, cid: Cid, block: Vec<u8>) -> Result<(), UnixfsError<E>> {
    sink(cid, block).map_err(|source| UnixfsError::Sink { cid, source })
}

/// Streaming balanced-layout builder: `levels[0]` holds leaves not yet
/// under a parent, `levels[i]` nodes of height `i`. A level is turned into
/// a parent only when it is full and another entry arrives, or at the end;
/// this yields the same tree as go-unixfs' balanced builder (every subtree
/// but the rightmost full, all leaves at one depth).
struct FileBuilder<'s, 'a, E> {
    cfg: Config,
    sink: &'s mut Sink<'a, E>,
    levels: Vec<Vec<Child>>,
}

impl<E> FileBuilder<'_, '_, E> {
    fn leaf(&mut self, chunk: &[u8]) -> Result<(), UnixfsError<E>> {
        let filesize = chunk.len() as u64;
        let (cid, block) = if self.cfg.raw_leaves {
            (block_cid(Version::V1, RAW, chunk), chunk.to_vec())
        } else {
            let data = UnixfsData {
                kind: DataType::File,
                // Kubo omits Data for the empty file (0a 04 08 02 18 00).
                data: (!chunk.is_empty()).then(|| Bytes::copy_from_slice(chunk)),
                filesize: Some(filesize),
                blocksizes: Vec::new(),
            };
            let block = dagpb::encode(&PbNode {
                links: Vec::new(),
                data: Some(data.encode()),
            });
            (block_cid(self.cfg.version, DAG_PB, &block), block)
        };
        let tsize = block.len() as u64;
        emit(self.sink, cid, block)?;
        self.push(
            0,
            Child {
                cid,
                tsize,
                filesize,
            },
        )
    }

    fn push(&mut self, level: usize, child: Child) -> Result<(), UnixfsError<E>> {
        if self.levels.len() == level {
            self.levels.push(Vec::with_capacity(MAX_LINKS));
        }
        if self.levels[level].len() == MAX_LINKS {
            let full = std::mem::replace(&mut self.levels[level], Vec::with_capacity(MAX_LINKS));
            let parent = self.parent(&full)?;
            self.push(level + 1, parent)?;
        }
        self.levels[level].push(child);
        Ok(())
    }

    /// Encodes and emits an internal `File` node over `children`.
    fn parent(&mut self, children: &[Child]) -> Result<Child, UnixfsError<E>> {
        let filesize = children.iter().map(|c| c.filesize).sum();
        let data = UnixfsData {
            kind: DataType::File,
            data: None,
            filesize: Some(filesize),
            blocksizes: children.iter().map(|c| c.filesize).collect(),
        };
        let node = PbNode {
            links: children
                .iter()
                .map(|c| PbLink {
                    hash: c.cid,
                    // go-merkledag always writes Name, empty for chunks.
                    name: Some(String::new()),
                    tsize: Some(c.tsize),
                })
                .collect(),
            data: Some(data.encode()),
        };
        let block = dagpb::encode(&node);
        let cid = block_cid(self.cfg.version, DAG_PB, &block);
        let tsize = block.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>();
        emit(self.sink, cid, block)?;
        Ok(Child {
            cid,
            tsize,
            filesize,
        })
    }

    /// Closes every level bottom-up; returns the root. Needs at least one
    /// leaf.
    fn finish(mut self) -> Result<Child, UnixfsError<E>> {
        let mut level = 0;
        // `push` may add a level while closing, hence the re-read of len().
        while level + 1 < self.levels.len() {
            let children = std::mem::take(&mut self.levels[level]);
            let parent = self.parent(&children)?;
            self.push(level + 1, parent)?;
            level += 1;
        }
        let top = self.levels.pop().unwrap_or_default();
        match top.as_slice() {
            // A single leaf is the whole file.
            [only] => Ok(*only),
            children => self.parent(children),
        }
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_chunk(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// How often a file's read progress is reported: every this many bytes
/// (IPFS Cluster's and Kubo's increment), and once at its end.
pub const PROGRESS_INCREMENT: u64 = 256 * 1024;

/// Where read progress of a file goes: its name and the callback.
pub(super) type Progress<'p, 'e> = Option<(&'p str, &'p mut Events<'e>)>;

/// The caller's event callback.
pub type Events<'e> = dyn FnMut(ImportEvent) + 'e;

/// Imports one file from `reader` (one chunk in memory plus the pending
/// links), reporting its read progress; returns its root and its length.
pub(super) fn import_file<R: Read, E>(
    mut reader: R,
    cfg: Config,
    sink: &mut Sink<'_, E>,
    mut progress: Progress<'_, '_>,
) -> Result<(Child, u64), UnixfsError<E>> {
    let mut builder = FileBuilder {
        cfg,
        sink,
        levels: Vec::new(),
    };
    let mut buf = vec![0u8; cfg.chunk_size];
    let mut total = 0u64;
    let mut reported = 0u64;
    loop {
        let n = read_chunk(&mut reader, &mut buf).map_err(UnixfsError::Read)?;
        if n == 0 {
            break;
        }
        builder.leaf(&buf[..n])?;
        total += n as u64;
        if n < buf.len() {
            break;
        }
        if let Some((name, events)) = progress.as_mut()
            && total - reported >= PROGRESS_INCREMENT
        {
            reported = total;
            events(ImportEvent::Progress {
                name: (*name).to_string(),
                bytes: total,
            });
        }
    }
    if let Some((name, events)) = progress {
        events(ImportEvent::Progress {
            name: name.to_string(),
            bytes: total,
        });
    }
    if total == 0 {
        builder.leaf(&[])?;
    }
    Ok((builder.finish()?, total))
}

/// Imports one file from `reader` as `ipfs add` would, streaming: memory is
/// one chunk plus the pending links, whatever the file size.
///
/// Every block goes to `sink` exactly once in creation order (leaves before
/// the nodes that link them, the root last); a sink error stops the import
/// and is returned as [`UnixfsError::Sink`]. A file of one chunk is that
/// leaf; the empty file is one leaf holding no bytes.
pub fn add_reader<R: Read, E>(
    reader: R,
    opts: &AddOptions,
    sink: &mut Sink<'_, E>,
) -> Result<Added, UnixfsError<E>> {
    let cfg = Config::new(opts)?;
    let (root, bytes) = import_file(reader, cfg, sink, None)?;
    Ok(Added {
        cid: root.cid,
        size: root.tsize,
        name: root.cid.to_string(),
        bytes,
    })
}

/// Imports a file, symlink or directory tree as `ipfs add -r` would.
///
/// Returns every entry the way Kubo lists them: files and symlinks in walk
/// order (directory entries sorted by name), then directories children
/// first, the root last. Names are `/`-separated and start with the last
/// component of `path`. Blocks go to `sink` as in [`add_reader`], each
/// directory after everything beneath it. See the module docs for hidden
/// files, symlinks and the missing HAMT sharding.
pub fn add_path<E>(
    path: &Path,
    opts: &AddOptions,
    sink: &mut Sink<'_, E>,
) -> Result<Vec<Added>, UnixfsError<E>> {
    add_path_with(path, opts, sink, false, &mut |_| {})
}

/// [`add_path`], reporting each entry to `events` as soon as it is
/// imported (files and symlinks as they finish, directories at the end,
/// in the order of the returned list) and, when `progress`, each file's
/// bytes read so far every [`PROGRESS_INCREMENT`] bytes and at its end.
pub fn add_path_with<E>(
    path: &Path,
    opts: &AddOptions,
    sink: &mut Sink<'_, E>,
    progress: bool,
    events: &mut Events<'_>,
) -> Result<Vec<Added>, UnixfsError<E>> {
    let cfg = Config::new(opts)?;
    let name = match path.file_name() {
        Some(n) => n
            .to_str()
            .ok_or_else(|| UnixfsError::NonUtf8 {
                path: path.to_owned(),
            })?
            .to_owned(),
        // `.`, `..` or `/`: Kubo names the entry after the path as given.
        None => path.to_string_lossy().into_owned(),
    };
    let mut walk = Walk {
        cfg,
        sink,
        files: Vec::new(),
        dirs: Vec::new(),
        progress,
        events,
    };
    walk.entry(path, name)?;
    for dir in &walk.dirs {
        (walk.events)(ImportEvent::Added(dir.clone()));
    }
    let mut out = walk.files;
    out.append(&mut walk.dirs);
    Ok(out)
}

struct Walk<'s, 'a, 'v, 'e, E> {
    cfg: Config,
    sink: &'s mut Sink<'a, E>,
    files: Vec<Added>,
    dirs: Vec<Added>,
    progress: bool,
    events: &'v mut Events<'e>,
}

impl<E> Walk<'_, '_, '_, '_, E> {
    /// Adds one entry; returns (cid, cumulative size, file bytes).
    fn entry(&mut self, path: &Path, name: String) -> Result<(Cid, u64, u64), UnixfsError<E>> {
        let fs_err = |source| UnixfsError::Fs {
            path: path.to_owned(),
            source,
        };
        let kind = std::fs::symlink_metadata(path).map_err(fs_err)?.file_type();
        let (list, added) = if kind.is_symlink() {
            let target = std::fs::read_link(path).map_err(fs_err)?;
            let target = target.to_str().ok_or_else(|| UnixfsError::NonUtf8 {
                path: path.to_owned(),
            })?;
            let data = UnixfsData {
                kind: DataType::Symlink,
                data: Some(Bytes::copy_from_slice(target.as_bytes())),
                filesize: None,
                blocksizes: Vec::new(),
            };
            let block = dagpb::encode(&PbNode {
                links: Vec::new(),
                data: Some(data.encode()),
            });
            let cid = block_cid(self.cfg.version, DAG_PB, &block);
            let size = block.len() as u64;
            emit(self.sink, cid, block)?;
            let added = Added {
                cid,
                size,
                name,
                bytes: 0,
            };
            (&mut self.files, added)
        } else if kind.is_file() {
            let file = std::fs::File::open(path).map_err(fs_err)?;
            let progress = self.progress.then_some((name.as_str(), &mut *self.events));
            let (root, bytes) =
                import_file(io::BufReader::new(file), self.cfg, self.sink, progress).map_err(
                    |e| match e {
                        UnixfsError::Read(source) => fs_err(source),
                        other => other,
                    },
                )?;
            let added = Added {
                cid: root.cid,
                size: root.tsize,
                name,
                bytes,
            };
            (&mut self.files, added)
        } else if kind.is_dir() {
            let added = self.dir(path, name)?;
            (&mut self.dirs, added)
        } else {
            return Err(UnixfsError::UnsupportedFileType {
                path: path.to_owned(),
            });
        };
        let result = (added.cid, added.size, added.bytes);
        if !kind.is_dir() {
            (self.events)(ImportEvent::Added(added.clone()));
        }
        list.push(added);
        Ok(result)
    }

    fn dir(&mut self, path: &Path, name: String) -> Result<Added, UnixfsError<E>> {
        let fs_err = |source| UnixfsError::Fs {
            path: path.to_owned(),
            source,
        };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path).map_err(fs_err)? {
            let entry_name = entry.map_err(fs_err)?.file_name();
            let entry_name = entry_name
                .to_str()
                .ok_or_else(|| UnixfsError::NonUtf8 {
                    path: path.join(&entry_name),
                })?
                .to_owned();
            if self.cfg.includes(&entry_name) {
                names.push(entry_name);
            }
        }
        // Byte order, as go-merkledag sorts directory links.
        names.sort_unstable();
        let mut links = Vec::with_capacity(names.len());
        let mut bytes = 0u64;
        for entry_name in names {
            let (cid, size, entry_bytes) =
                self.entry(&path.join(&entry_name), format!("{name}/{entry_name}"))?;
            bytes += entry_bytes;
            links.push(PbLink {
                hash: cid,
                name: Some(entry_name),
                tsize: Some(size),
            });
        }
        let (cid, size) = dir_node(self.cfg, self.sink, links)?;
        Ok(Added {
            cid,
            size,
            name,
            bytes,
        })
    }
}

/// Encodes and emits the directory over `links` (sorted by name bytes): a
/// basic directory, or a HAMT shard tree once its estimated size reaches
/// the sharding threshold. Returns its CID and cumulative size.
pub(super) fn dir_node<E>(
    cfg: Config,
    sink: &mut Sink<'_, E>,
    links: Vec<PbLink>,
) -> Result<(Cid, u64), UnixfsError<E>> {
    let entries: Vec<hamt::Entry> = links
        .iter()
        .map(|l| hamt::Entry {
            name: l.name.clone().unwrap_or_default(),
            cid: l.hash,
            tsize: l.tsize.unwrap_or(0),
        })
        .collect();
    if hamt::estimated_size(&entries) >= hamt::SHARDING_THRESHOLD {
        return hamt::build(entries, cfg.version, sink);
    }
    let data = UnixfsData {
        kind: DataType::Directory,
        data: None,
        filesize: None,
        blocksizes: Vec::new(),
    };
    let children: u64 = links.iter().filter_map(|l| l.tsize).sum();
    let block = dagpb::encode(&PbNode {
        links,
        data: Some(data.encode()),
    });
    let cid = block_cid(cfg.version, DAG_PB, &block);
    let size = block.len() as u64 + children;
    emit(sink, cid, block)?;
    Ok((cid, size))
}
