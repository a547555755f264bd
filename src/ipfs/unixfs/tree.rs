//! The importer of a tree whose entries arrive one after another (the parts
//! of an upload) instead of being walked on disk: [`TreeImport`].
//!
//! Each file is imported as it arrives, streamed through the same file
//! importer as [`add_reader`](super::add_reader) (one chunk plus pending
//! links in memory); only the finished files' roots are kept, per
//! directory, and the directories are built at [`TreeImport::finish`] with
//! the same code as [`add_path`](super::add_path) (links sorted by name
//! bytes, HAMT sharding past the threshold), so the same tree gives the same
//! CIDs. It must not store, pin or read anything but the readers it is
//! given.

use std::collections::BTreeMap;
use std::io::Read;

use cid::Cid;

use super::import::{Child, Config, Events, dir_node, import_file};
use super::{AddOptions, Added, ImportEvent, Sink, UnixfsError};
use crate::ipfs::dagpb::PbLink;

/// A node of the tree being imported: a finished file, or a directory
/// whose entries (by name; `BTreeMap` orders `String`s by their bytes, as
/// go-merkledag sorts links) are still open.
enum Node {
    File(Child),
    Dir(BTreeMap<String, Node>),
}

/// Imports a tree from entries given in arrival order, as `ipfs add -r` of
/// the same tree would.
///
/// Paths are `/`-separated and relative; a directory an entry lies in
/// exists from then on, whether or not it was given with
/// [`dir`](Self::dir) (as a multipart upload's implicit parents). Without
/// `wrap` every entry must lie under one top-level entry, which is the
/// root (a file or a directory, named by its path as in
/// [`add_path`](super::add_path)); with `wrap` the top-level entries are
/// put in one directory named `""`, the root.
///
/// Files are reported to `events` as they finish (with read progress when
/// `progress`), directories at [`finish`](Self::finish) children first, the
/// root last. Blocks go to `sink` as with [`add_path`](super::add_path).
pub struct TreeImport<'s, 'a, 'v, 'e, E> {
    cfg: Config,
    sink: &'s mut Sink<'a, E>,
    events: &'v mut Events<'e>,
    progress: bool,
    wrap: bool,
    /// The top-level entries.
    top: BTreeMap<String, Node>,
    /// Files in the order they finished.
    files: Vec<Added>,
}

impl<E> std::fmt::Debug for TreeImport<'_, '_, '_, '_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeImport")
            .field("cfg", &self.cfg)
            .field("wrap", &self.wrap)
            .field("files", &self.files.len())
            .finish_non_exhaustive()
    }
}

impl<'s, 'a, 'v, 'e, E> TreeImport<'s, 'a, 'v, 'e, E> {
    /// An import with `opts` into `sink`, reporting to `events`.
    pub fn new(
        opts: &AddOptions,
        wrap: bool,
        sink: &'s mut Sink<'a, E>,
        progress: bool,
        events: &'v mut Events<'e>,
    ) -> Result<Self, UnixfsError<E>> {
        Ok(TreeImport {
            cfg: Config::new(opts)?,
            sink,
            events,
            progress,
            wrap,
            top: BTreeMap::new(),
            files: Vec::new(),
        })
    }

    /// Adds the directory `path` (and its parents); one that exists
    /// already is kept as it is.
    pub fn dir(&mut self, path: &str) -> Result<(), UnixfsError<E>> {
        let names = self.components(path)?;
        if self.hidden(&names) {
            return Ok(());
        }
        self.parent_of(path, &names, names.len())?;
        Ok(())
    }

    /// Imports the file `path` from `reader` (read to its end) and reports
    /// it; its parent directories are created as needed. A hidden entry
    /// (without [`AddOptions::hidden`]) is read and left out, as
    /// [`add_path`](super::add_path) skips it.
    pub fn file(&mut self, path: &str, mut reader: impl Read) -> Result<(), UnixfsError<E>> {
        let names = self.components(path)?;
        if self.hidden(&names) {
            std::io::copy(&mut reader, &mut std::io::sink()).map_err(UnixfsError::Read)?;
            return Ok(());
        }
        let last = names.len() - 1;
        if self
            .parent_of(path, &names, last)?
            .contains_key(names[last])
        {
            return Err(entry_error(path, "sent twice"));
        }
        let progress = self.progress.then_some((path, &mut *self.events));
        let (root, bytes) = import_file(reader, self.cfg, self.sink, progress)?;
        let added = Added {
            cid: root.cid,
            size: root.tsize,
            name: path.to_string(),
            bytes,
        };
        // The parent was there before the import; it still is.
        self.parent_of(path, &names, last)?
            .insert(names[last].to_string(), Node::File(root));
        (self.events)(ImportEvent::Added(added.clone()));
        self.files.push(added);
        Ok(())
    }

    /// Builds the directories (children first, the root last) and returns
    /// every entry: files in the order they were imported, then the
    /// directories. Fails when nothing was given (without `wrap`).
    pub fn finish(mut self) -> Result<Vec<Added>, UnixfsError<E>> {
        let top = std::mem::take(&mut self.top);
        let mut dirs = Vec::new();
        if self.wrap {
            self.build_dir(String::new(), top, &mut dirs)?;
        } else {
            let Some((name, node)) = top.into_iter().next() else {
                return Err(entry_error("", "nothing to import"));
            };
            if let Node::Dir(entries) = node {
                self.build_dir(name, entries, &mut dirs)?;
            }
        }
        for dir in &dirs {
            (self.events)(ImportEvent::Added(dir.clone()));
        }
        let mut out = self.files;
        out.append(&mut dirs);
        Ok(out)
    }

    /// The components of `path`, checked: relative, no empty, `.` or `..`
    /// component, and (without `wrap`) under the first entry's top level.
    fn components<'p>(&self, path: &'p str) -> Result<Vec<&'p str>, UnixfsError<E>> {
        let names: Vec<&str> = path.split('/').collect();
        if names
            .iter()
            .any(|n| n.is_empty() || *n == "." || *n == "..")
        {
            return Err(entry_error(
                path,
                "not a relative path of named entries (no empty, `.` or `..` component)",
            ));
        }
        if !self.wrap
            && let Some(first) = self.top.keys().next()
            && first != names[0]
        {
            return Err(entry_error(
                path,
                "a second top-level entry (only one without wrapping)",
            ));
        }
        Ok(names)
    }

    /// Whether an entry is left out as hidden: any component but the
    /// top-level one unwrapped (the path given is always added).
    fn hidden(&self, names: &[&str]) -> bool {
        let skip = usize::from(!self.wrap);
        names.iter().skip(skip).any(|n| !self.cfg.includes(n))
    }

    /// The directory made of the first `depth` components of `names`
    /// (the top when 0), created with its parents as needed.
    fn parent_of(
        &mut self,
        path: &str,
        names: &[&str],
        depth: usize,
    ) -> Result<&mut BTreeMap<String, Node>, UnixfsError<E>> {
        let mut at = &mut self.top;
        for name in &names[..depth] {
            let node = at
                .entry((*name).to_string())
                .or_insert_with(|| Node::Dir(BTreeMap::new()));
            at = match node {
                Node::Dir(entries) => entries,
                Node::File(_) => {
                    return Err(entry_error(path, "conflicts with a file sent before"));
                }
            };
        }
        Ok(at)
    }

    /// Builds the directory `name` over `entries`, its subdirectories first
    /// (each pushed on `dirs` after those beneath it, as
    /// [`add_path`](super::add_path) lists them); returns how its parent
    /// links to it.
    fn build_dir(
        &mut self,
        name: String,
        entries: BTreeMap<String, Node>,
        dirs: &mut Vec<Added>,
    ) -> Result<Child, UnixfsError<E>> {
        let mut links = Vec::with_capacity(entries.len());
        let mut bytes = 0u64;
        for (entry_name, node) in entries {
            let child = match node {
                Node::File(child) => child,
                Node::Dir(sub) => {
                    let path = if name.is_empty() {
                        entry_name.clone()
                    } else {
                        format!("{name}/{entry_name}")
                    };
                    self.build_dir(path, sub, dirs)?
                }
            };
            bytes += child.filesize;
            links.push(PbLink {
                hash: child.cid,
                name: Some(entry_name),
                tsize: Some(child.tsize),
            });
        }
        let (cid, size): (Cid, u64) = dir_node(self.cfg, self.sink, links)?;
        dirs.push(Added {
            cid,
            size,
            name,
            bytes,
        });
        Ok(Child {
            cid,
            tsize: size,
            filesize: bytes,
        })
    }
}

fn entry_error<E>(path: &str, reason: &str) -> UnixfsError<E> {
    UnixfsError::Entry {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}
