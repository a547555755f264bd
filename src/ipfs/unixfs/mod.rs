//! A UnixFS importer that produces the same CIDs as Kubo's `ipfs add`, and a
//! reader that reassembles file bytes from blocks.
//!
//! This module owns turning bytes and filesystem trees into UnixFS blocks
//! (fixed-size chunker, balanced layout of at most [`MAX_LINKS`] links per
//! node, basic directories, symlinks) and the reverse for files
//! ([`read_file`]). Blocks leave through a caller-supplied sink and come back
//! through a caller-supplied getter: this module must not store, pin,
//! announce or fetch blocks itself (that is the embedded node's job), and
//! it never holds a whole file in memory while importing: a file costs one
//! chunk buffer plus at most [`MAX_LINKS`] pending links per tree level.
//!
//! # Kubo compatibility
//!
//! With [`AddOptions::default`] the CIDs are those of `ipfs add` with
//! default options (CIDv0, `size-262144` chunker, balanced layout, dag-pb
//! leaves); with `cid_version: V1` those of `ipfs add --cid-version 1`
//! (raw leaves, CIDv1 dag-pb nodes). Known limits:
//!
//! - HAMT sharding as Kubo 0.22 does it (`hamt`): a directory whose
//!   estimated size (names plus CID bytes) reaches Kubo's default
//!   `Import.UnixFSHAMTDirectorySizeThreshold` (256 KiB) is written as a
//!   HAMT shard tree (fanout 256, murmur3); checked against CIDs from real
//!   Kubo (`tests/vectors/kubo_hamt.json`). The threshold is not
//!   configurable.
//! - No trickle layout, rabin/buzhash chunkers, inlining, `--wrap-with-directory`,
//!   mode/mtime metadata, or hash functions other than sha2-256.
//! - Like `ipfs add -r`, [`add_path`] skips hidden entries (names starting
//!   with `.`) inside directories unless [`AddOptions::hidden`] is set (Kubo's
//!   `--hidden`); the path given is always added, hidden or not. Symlinks
//!   are not followed: they become UnixFS symlink nodes, as Kubo does by
//!   default (including for the path given itself).
//!
//! Layout: this file holds the options, results, errors and node types;
//! `data` the UnixFS `Data` protobuf message, `import` the importer
//! ([`add_reader`], [`add_path`]), `tree` the importer of entries in
//! arrival order ([`TreeImport`], an upload's parts), `read` the reader
//! ([`read_file_to`], [`read_file`]) and `node` single blocks as a reader
//! walking a DAG sees them ([`decode_node`], [`hamt_step`]).

use std::io;
use std::path::PathBuf;

use cid::{Cid, Version};

use super::dagpb::DagPbError;

mod data;
#[cfg(test)]
mod fuzz_tests;
mod hamt;
mod import;
mod node;
mod read;
#[cfg(test)]
mod tests;
mod tree;
#[cfg(test)]
mod tree_tests;

pub use data::{UnixfsData, UnixfsDataError};
pub use import::{Events, PROGRESS_INCREMENT, add_path, add_path_with, add_reader};
pub use node::{HamtStep, UnixfsNode, decode_node, hamt_split, hamt_step};
pub use read::{read_file, read_file_to};
pub use tree::TreeImport;

/// Kubo's default chunk size (`size-262144`).
pub const DEFAULT_CHUNK_SIZE: usize = 262_144;
/// The largest chunk size Kubo accepts (1 MiB).
pub const MAX_CHUNK_SIZE: usize = 1 << 20;
/// The most links a balanced-layout file node gets (Kubo's default).
pub const MAX_LINKS: usize = 174;

/// How to import; [`Default`] is Kubo's `ipfs add` defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddOptions {
    /// CID version of the dag-pb nodes (`--cid-version`).
    pub cid_version: Version,
    /// Leaves as raw blocks (codec 0x55, always CIDv1) instead of dag-pb
    /// UnixFS `File` nodes (`--raw-leaves`). `None` is Kubo's default:
    /// raw leaves exactly when `cid_version` is V1.
    pub raw_leaves: Option<bool>,
    /// Fixed chunk size in bytes, 1 ..= [`MAX_CHUNK_SIZE`].
    pub chunk_size: usize,
    /// Include hidden entries (names starting with `.`) of directories
    /// (`--hidden`).
    pub hidden: bool,
}

impl Default for AddOptions {
    fn default() -> Self {
        AddOptions {
            cid_version: Version::V0,
            raw_leaves: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            hidden: false,
        }
    }
}

impl AddOptions {
    /// Whether leaves are raw blocks, resolving `raw_leaves: None` as Kubo.
    pub fn uses_raw_leaves(&self) -> bool {
        self.raw_leaves.unwrap_or(self.cid_version == Version::V1)
    }
}

/// One imported entry, as `ipfs add` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// The root CID of the entry.
    pub cid: Cid,
    /// Cumulative size: the encoded length of every block of the DAG
    /// (the Tsize a parent's link to it carries).
    pub size: u64,
    /// `/`-separated path relative to the parent of the added path (Kubo's
    /// naming); for [`add_reader`], the CID string (as Kubo names stdin).
    pub name: String,
    /// File bytes: the file's length, the total of the files beneath a
    /// directory, 0 for a symlink.
    pub bytes: u64,
}

/// What [`add_path_with`] (and [`TreeImport`]) report while importing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportEvent {
    /// An entry (file, symlink or directory) was imported.
    Added(Added),
    /// `bytes` of the file `name` have been read so far.
    Progress {
        /// The file, named as in [`Added::name`].
        name: String,
        /// Bytes read so far.
        bytes: u64,
    },
}

/// Why importing or reading failed. `E` is the error type of the caller's
/// block sink or getter, passed through unchanged.
#[derive(Debug, thiserror::Error)]
pub enum UnixfsError<E> {
    /// The options cannot be honoured.
    #[error("invalid add options: {0}")]
    InvalidOptions(String),
    /// Reading the input of [`add_reader`] failed.
    #[error("reading the input failed: {0}")]
    Read(#[source] io::Error),
    /// Reading a file or directory of [`add_path`] failed.
    #[error("reading {} failed: {source}", path.display())]
    Fs {
        /// The path that failed.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file type UnixFS cannot hold (socket, FIFO, device).
    #[error("{} is not a regular file, directory or symlink", path.display())]
    UnsupportedFileType {
        /// The offending path.
        path: PathBuf,
    },
    /// A file name or symlink target that is not UTF-8 (dag-pb names are
    /// strings).
    #[error("{} has a name or target that is not valid UTF-8", path.display())]
    NonUtf8 {
        /// The offending path.
        path: PathBuf,
    },
    /// The sink refused a block; importing stopped there.
    #[error("storing block {cid} failed: {source}")]
    Sink {
        /// The block that was being stored.
        cid: Cid,
        /// The sink's error.
        #[source]
        source: E,
    },
    /// The getter could not produce a block.
    #[error("getting block {cid} failed: {source}")]
    Get {
        /// The block asked for.
        cid: Cid,
        /// The getter's error.
        #[source]
        source: E,
    },
    /// An entry given to [`TreeImport`] that does not fit the tree (a bad
    /// path, a file sent twice, an entry under a file).
    #[error("invalid entry {path:?}: {reason}")]
    Entry {
        /// The entry's path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing the file's bytes out failed ([`read_file_to`]).
    #[error("writing the file out failed: {0}")]
    Write(#[source] io::Error),
    /// A block's bytes do not hash to its CID.
    #[error("block {cid} does not match its hash")]
    HashMismatch {
        /// The CID the bytes were supposed to have.
        cid: Cid,
    },
    /// A CID whose hash function this module cannot verify.
    #[error("block {cid} uses multihash 0x{code:x}; only sha2-256 and identity are verified")]
    UnsupportedHash {
        /// The CID.
        cid: Cid,
        /// Its multihash code.
        code: u64,
    },
    /// A block of a codec that cannot be part of a UnixFS file.
    #[error("block {cid} has codec 0x{codec:x}; a UnixFS file is made of dag-pb and raw blocks")]
    UnsupportedCodec {
        /// The CID.
        cid: Cid,
        /// Its codec.
        codec: u64,
    },
    /// A dag-pb block that does not decode.
    #[error("block {cid} is not valid dag-pb: {source}")]
    DagPb {
        /// The CID.
        cid: Cid,
        /// The codec error (boxed: it keeps every `Result` of this
        /// module small).
        #[source]
        source: Box<DagPbError>,
    },
    /// A dag-pb block whose UnixFS content is invalid or inconsistent.
    #[error("block {cid} is not a valid UnixFS file node: {reason}")]
    Malformed {
        /// The CID.
        cid: Cid,
        /// What is wrong.
        reason: String,
    },
    /// The DAG is UnixFS, but not a file.
    #[error("{cid} is a UnixFS {kind}, not a file")]
    NotAFile {
        /// The offending node.
        cid: Cid,
        /// Its UnixFS type name.
        kind: &'static str,
    },
}

/// The UnixFS node type (field `Type` of the `Data` message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// Legacy leaf type: `Data` holds file bytes.
    Raw,
    /// A basic directory: entries are the named links.
    Directory,
    /// A file, or a chunk of one.
    File,
    /// Metadata (unused by Kubo).
    Metadata,
    /// A symlink: `Data` holds the target path.
    Symlink,
    /// A HAMT-sharded directory.
    HamtShard,
}

impl DataType {
    /// The protobuf enum value.
    pub fn code(self) -> u64 {
        match self {
            DataType::Raw => 0,
            DataType::Directory => 1,
            DataType::File => 2,
            DataType::Metadata => 3,
            DataType::Symlink => 4,
            DataType::HamtShard => 5,
        }
    }

    /// The type for a protobuf enum value, if it is one.
    pub fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            0 => DataType::Raw,
            1 => DataType::Directory,
            2 => DataType::File,
            3 => DataType::Metadata,
            4 => DataType::Symlink,
            5 => DataType::HamtShard,
            _ => return None,
        })
    }

    /// A lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            DataType::Raw => "raw node",
            DataType::Directory => "directory",
            DataType::File => "file",
            DataType::Metadata => "metadata node",
            DataType::Symlink => "symlink",
            DataType::HamtShard => "HAMT-sharded directory",
        }
    }
}

/// The caller's block sink: receives every block once, children first.
pub type Sink<'a, E> = dyn FnMut(Cid, Vec<u8>) -> Result<(), E> + 'a;
/// The caller's block getter.
pub type Getter<'a, E> = dyn FnMut(&Cid) -> Result<Vec<u8>, E> + 'a;
