//! Reading manifests from disk: files, directories, multi-document YAML and
//! `pinsFrom` lists, with every problem collected as a located diagnostic.
//!
//! Loading is all-or-nothing: if any file has a problem the caller gets the
//! whole list of diagnostics and no PinSets, so a broken revision can never
//! be half applied.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::cidkey::CidKey;
use super::desired::{DesiredPin, DesiredPinSet, PinOptions, PinSetId, PinSpec};
use super::diag::{Diagnostic, Diagnostics, shown, yaml_message};
use super::incremental::PinSetChanges;
use super::located::Pos;
use super::model::PinSetDocument;
use super::validate::{DocumentChecker, ListTarget, PinSource};

/// Leads every source digest: a change of what is hashed changes the tag.
const SOURCE_DIGEST_TAG: &[u8] = b"pinfleet-source-v1\0";

/// Bounds that turn hostile or runaway input into an error instead of an
/// out-of-memory kill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest YAML manifest file, in bytes.
    pub max_manifest_bytes: u64,
    /// Largest `pinsFrom` list file, in bytes.
    pub max_list_bytes: u64,
    /// Most pins in one load, summed over every PinSet.
    pub max_pins: usize,
    /// Most diagnostics reported for one list file before the rest are
    /// summarised (a binary file would otherwise give one per line).
    pub max_errors_per_file: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_manifest_bytes: 64 << 20,
            max_list_bytes: 1 << 30,
            max_pins: 10_000_000,
            max_errors_per_file: 50,
        }
    }
}

/// A successful load.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// PinSets, ordered by `namespace/name`.
    pub pinsets: Vec<DesiredPinSet>,
    /// `sha256:<hex>` over every file read (manifests and lists, with their
    /// paths): the revision of a directory source.
    pub digest: String,
    /// Manifest files read.
    pub manifest_files: usize,
    /// The `pinsFrom` lists read, in reading order.
    pub lists: Vec<ListFile>,
    /// CIDs declared more than once (identically) within a PinSet, summed
    /// over PinSets.
    pub duplicates: usize,
    /// Set by an incremental reload: what changed in each PinSet since the
    /// load whose digest is `.0`.
    pub changes: Option<(String, BTreeMap<PinSetId, PinSetChanges>)>,
    /// Per PinSet, `sha256:<hex>` over the files it comes from: its
    /// manifest file and its `pinsFrom` lists, with the list paths as the
    /// manifest writes them (so the digest does not depend on where the
    /// files sit). The same files give the same digest whether loaded or
    /// only [scanned](scan_paths): what `pinfleet apply` compares with the
    /// revision the cluster holds before reading any list.
    pub source_digests: BTreeMap<PinSetId, String>,
}

/// A `pinsFrom` list a load read.
#[derive(Clone, Debug, PartialEq)]
pub struct ListFile {
    /// The PinSet it belongs to.
    pub pinset: PinSetId,
    /// The file, as resolved (relative to the manifest's directory).
    pub path: PathBuf,
    /// The options every CID of the list gets.
    pub options: Arc<PinOptions>,
}

impl Loaded {
    /// Total pins over all PinSets.
    pub fn pin_count(&self) -> usize {
        self.pinsets.iter().map(|p| p.pins.len()).sum()
    }
}

/// Why a load failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The manifests have problems; nothing was loaded.
    #[error("{0}")]
    Invalid(Diagnostics),
    /// A path given by the caller cannot be read at all.
    #[error("cannot read {}", path.display())]
    Io {
        /// The path given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Loads every PinSet under `paths` (files or directories).
///
/// Directories are walked recursively in name order, reading `*.yaml` and
/// `*.yml` and skipping entries whose name starts with `.` (so `.github/`
/// workflows in a manifest repository are not mistaken for PinSets).
/// Symbolic links are followed only while they stay inside the directory
/// given: a link to a directory or manifest outside it is a diagnostic, as
/// is a link that loops.
pub fn load_paths<P: AsRef<Path>>(paths: &[P], limits: &Limits) -> Result<Loaded, LoadError> {
    load_with(paths, limits, Lists::Parse)
}

/// Reads the manifests under `paths` and checks them like [`load_paths`],
/// but only hashes their `pinsFrom` lists: the PinSets come back without the
/// pins of their lists (inline pins are there), with their
/// [`source_digests`](Loaded::source_digests). A million-pin list costs a
/// hash, not a parse: enough to tell whether anything changed.
pub fn scan_paths<P: AsRef<Path>>(paths: &[P], limits: &Limits) -> Result<Loaded, LoadError> {
    load_with(paths, limits, Lists::HashOnly)
}

/// What a load does with `pinsFrom` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lists {
    /// Read every CID.
    Parse,
    /// Hash the file into the source digest only.
    HashOnly,
}

fn load_with<P: AsRef<Path>>(
    paths: &[P],
    limits: &Limits,
    lists: Lists,
) -> Result<Loaded, LoadError> {
    let mut files: Vec<(PathBuf, PathBuf)> = Vec::new(); // (root, file)
    let mut walk_diags = Vec::new();
    for p in paths {
        let p = p.as_ref();
        let meta = fs::metadata(p).map_err(|source| LoadError::Io {
            path: p.to_path_buf(),
            source,
        })?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found, &mut walk_diags).map_err(|source| LoadError::Io {
                path: p.to_path_buf(),
                source,
            })?;
            files.extend(found.into_iter().map(|f| (p.to_path_buf(), f)));
        } else {
            let root = p.parent().map(Path::to_path_buf).unwrap_or_default();
            files.push((root, p.to_path_buf()));
        }
    }
    // The same file named twice (a file and its directory) is read once.
    let mut seen = std::collections::BTreeSet::new();
    files.retain(|(_, f)| seen.insert(fs::canonicalize(f).unwrap_or_else(|_| f.clone())));

    let mut loader = Loader::new(limits);
    loader.lists_mode = lists;
    loader.diags = walk_diags;
    let mut pinsets: BTreeMap<_, DesiredPinSet> = BTreeMap::new();
    for (root, file) in &files {
        for ps in loader.load_file(root, file) {
            if let Some(first) = pinsets.get(&ps.id) {
                loader.diags.push(Diagnostic::at(
                    &ps.source.file,
                    ps.source.pos,
                    format!(
                        "duplicate PinSet {}: already declared at {}",
                        ps.id, first.source
                    ),
                ));
            } else {
                pinsets.insert(ps.id.clone(), ps);
            }
        }
    }
    let Loader {
        mut diags,
        hasher,
        lists,
        duplicates,
        source_digests,
        ..
    } = loader;
    if !diags.is_empty() {
        diags.sort();
        diags.dedup();
        return Err(LoadError::Invalid(Diagnostics(diags)));
    }
    Ok(Loaded {
        pinsets: pinsets.into_values().collect(),
        digest: format!("sha256:{}", hex::encode(hasher.finalize())),
        manifest_files: files.len(),
        lists,
        duplicates,
        changes: None,
        source_digests,
    })
}

/// `pinsFrom` ConfigMap keys a caller has read (the kube source), by
/// `(configmap name, key)` in the namespace of the PinSet being loaded:
/// the key's text, or why it cannot be had (`configmap ns/x not found`).
pub type ConfigMapLists = BTreeMap<(String, String), Result<String, String>>;

/// Parses manifests held in memory (for example a request body), as if read
/// from `name`. `pinsFrom` is refused: the caller must resolve lists first.
pub fn load_str(
    name: &Path,
    text: &str,
    limits: &Limits,
) -> Result<Vec<DesiredPinSet>, Diagnostics> {
    load_str_with(name, text, limits, None)
}

/// [`load_str`] whose `pinsFrom` may name ConfigMap keys, read from
/// `config_maps` (a key it does not hold is an error); a list's problems
/// are reported in `configmap <ns>/<name> key <key>` at line:col.
pub fn load_str_with(
    name: &Path,
    text: &str,
    limits: &Limits,
    config_maps: Option<&ConfigMapLists>,
) -> Result<Vec<DesiredPinSet>, Diagnostics> {
    // A JSON body (what the CLI and the controller send) is parsed by
    // serde_json, many times faster than the YAML parser on a large PinSet.
    // Positions are then unknown, so a body with any error is read again as
    // YAML below, which points at line:col.
    if text.trim_start().starts_with('{')
        && let Ok(doc) = serde_json::from_str::<PinSetDocument>(text)
    {
        let mut loader = Loader::new(limits);
        loader.config_maps = config_maps;
        let sets = loader.check_documents(None, name, vec![doc]);
        if loader.diags.is_empty() {
            return Ok(sets);
        }
    }
    let mut loader = Loader::new(limits);
    loader.config_maps = config_maps;
    let sets = loader.parse_documents(None, name, text);
    if loader.diags.is_empty() {
        Ok(sets)
    } else {
        let mut d = loader.diags;
        d.sort();
        // A bad default is checked again for every pin that overrides
        // something; report it once, as `load_paths` does.
        d.dedup();
        Err(Diagnostics(d))
    }
}

/// Collects the manifest files under `dir`. A symbolic link to a directory
/// or a manifest file is followed only when its target resolves inside
/// `dir`: one that leads out of the source, or any link that cannot be
/// resolved because it loops, is refused with a diagnostic naming the link
/// and its target.
fn walk(dir: &Path, out: &mut Vec<PathBuf>, diags: &mut Vec<Diagnostic>) -> std::io::Result<()> {
    let root = fs::canonicalize(dir)?;
    walk_dir(
        &root,
        dir,
        out,
        diags,
        &mut std::collections::BTreeSet::new(),
    )
}

/// `visited` holds the real path of every directory walked so far: each one
/// is read once, so symlink cycles (`a -> .`) end instead of recursing until
/// ELOOP, which takes exponential time with two or more such links.
fn walk_dir(
    root: &Path,
    dir: &Path,
    out: &mut Vec<PathBuf>,
    diags: &mut Vec<Diagnostic>,
    visited: &mut std::collections::BTreeSet<PathBuf>,
) -> std::io::Result<()> {
    if !visited.insert(fs::canonicalize(dir)?) {
        return Ok(());
    }
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = e.path();
        let ft = e.file_type()?;
        let manifest = matches!(
            path.extension().and_then(|x| x.to_str()),
            Some("yaml" | "yml")
        );
        let is_dir = if ft.is_symlink() {
            let target = fs::read_link(&path).unwrap_or_default();
            match fs::canonicalize(&path) {
                Ok(real) if real.starts_with(root) => real.is_dir(),
                // Outside, but neither a directory nor a manifest: not read.
                Ok(real) if !manifest && !real.is_dir() => continue,
                Ok(real) => {
                    diags.push(Diagnostic::file(
                        &path,
                        format!(
                            "symbolic link to {} leaves the source directory {} (resolves to {})",
                            target.display(),
                            root.display(),
                            real.display()
                        ),
                    ));
                    continue;
                }
                // Dangling: a manifest name is reported when read; anything
                // else is not part of the load.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
                Err(err) => {
                    diags.push(Diagnostic::file(
                        &path,
                        format!(
                            "cannot resolve symbolic link to {}: {err}",
                            target.display()
                        ),
                    ));
                    continue;
                }
            }
        } else {
            ft.is_dir()
        };
        if is_dir {
            walk_dir(root, &path, out, diags, visited)?;
        } else if manifest {
            out.push(path);
        }
    }
    Ok(())
}

struct Loader<'a> {
    limits: &'a Limits,
    diags: Vec<Diagnostic>,
    hasher: Sha256,
    pins_total: usize,
    pin_limit_reported: bool,
    lists: Vec<ListFile>,
    duplicates: usize,
    lists_mode: Lists,
    source_digests: BTreeMap<PinSetId, String>,
    config_maps: Option<&'a ConfigMapLists>,
}

impl<'a> Loader<'a> {
    fn new(limits: &'a Limits) -> Self {
        Loader {
            limits,
            diags: Vec::new(),
            hasher: Sha256::new(),
            pins_total: 0,
            pin_limit_reported: false,
            lists: Vec::new(),
            duplicates: 0,
            lists_mode: Lists::Parse,
            source_digests: BTreeMap::new(),
            config_maps: None,
        }
    }

    fn load_file(&mut self, root: &Path, file: &Path) -> Vec<DesiredPinSet> {
        let Some(bytes) = self.read_limited(file, self.limits.max_manifest_bytes, "manifest")
        else {
            return Vec::new();
        };
        let text = match std::str::from_utf8(&bytes) {
            Ok(t) => t,
            Err(e) => {
                let pos = pos_of_offset(&bytes, e.valid_up_to());
                self.diags.push(Diagnostic::at(
                    file,
                    pos,
                    "file is not valid UTF-8 text (is it binary?)",
                ));
                return Vec::new();
            }
        };
        let mut source = Sha256::new();
        source.update(SOURCE_DIGEST_TAG);
        source.update((bytes.len() as u64).to_le_bytes());
        source.update(&bytes);
        self.parse_documents(Some((root, source)), file, text)
    }

    /// Reads a whole file, refusing it when larger than `limit`. Hashes the
    /// path and content into the revision digest.
    fn read_limited(&mut self, file: &Path, limit: u64, what: &str) -> Option<Vec<u8>> {
        let mut f = match fs::File::open(file) {
            Ok(f) => f,
            Err(e) => {
                self.diags
                    .push(Diagnostic::file(file, format!("cannot read {what}: {e}")));
                return None;
            }
        };
        let mut bytes = Vec::new();
        // Read one byte past the limit to tell "at the limit" from "over".
        if let Err(e) = (&mut f).take(limit + 1).read_to_end(&mut bytes) {
            self.diags
                .push(Diagnostic::file(file, format!("cannot read {what}: {e}")));
            return None;
        }
        if bytes.len() as u64 > limit {
            self.diags.push(Diagnostic::file(
                file,
                format!("{what} file is larger than the limit of {limit} bytes"),
            ));
            return None;
        }
        self.hash_file(file, &bytes);
        Some(bytes)
    }

    fn hash_file(&mut self, file: &Path, bytes: &[u8]) {
        let name = file.to_string_lossy();
        self.hasher.update((name.len() as u64).to_le_bytes());
        self.hasher.update(name.as_bytes());
        self.hasher.update((bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
    }

    /// Parses the documents of `file`. `from_disk` is the source root and
    /// the source digest of the file so far, for a file read from disk (its
    /// `pinsFrom` lists are then read); `None` for text held in memory.
    fn parse_documents(
        &mut self,
        from_disk: Option<(&Path, Sha256)>,
        file: &Path,
        text: &str,
    ) -> Vec<DesiredPinSet> {
        let options = yaml_options(self.limits);
        let docs: Vec<PinSetDocument> =
            match serde_saphyr::from_multiple_with_options(text, options) {
                Ok(d) => d,
                Err(e) => {
                    self.diags.push(yaml_diagnostic(file, &e));
                    return Vec::new();
                }
            };
        self.check_documents(from_disk, file, docs)
    }

    /// Checks parsed documents (and, from disk, reads their lists).
    fn check_documents(
        &mut self,
        from_disk: Option<(&Path, Sha256)>,
        file: &Path,
        docs: Vec<PinSetDocument>,
    ) -> Vec<DesiredPinSet> {
        let mut out = Vec::with_capacity(docs.len());
        for doc in docs {
            let before = self.diags.len();
            let checker = DocumentChecker::new(file, &mut self.diags);
            let Some(mut checked) = checker.check(doc) else {
                continue;
            };
            let mut source = from_disk.as_ref().map(|(_, s)| s.clone());
            for list in std::mem::take(&mut checked.lists) {
                let target = (list.target, &from_disk, source.as_mut(), self.config_maps);
                let (rel, root, source) = match target {
                    (ListTarget::Path(rel), Some((root, _)), Some(source), _) => {
                        (rel, *root, source)
                    }
                    (ListTarget::ConfigMap(name, key), None, _, Some(maps)) => {
                        self.read_config_map(file, list.pos, maps, (name, key), &mut checked);
                        continue;
                    }
                    (ListTarget::ConfigMap(..), Some(_), _, _) => {
                        self.diags.push(Diagnostic::at(
                            file,
                            list.pos,
                            "pinsFrom configMapKeyRef is read by the kube source only; a file lists CIDs with path",
                        ));
                        continue;
                    }
                    _ => {
                        self.diags.push(Diagnostic::at(
                            file,
                            list.pos,
                            "pinsFrom must be resolved before the manifest is sent",
                        ));
                        continue;
                    }
                };
                let Some(path) = self.resolve_list_path(root, file, &rel, list.pos) else {
                    continue;
                };
                let Some(bytes) = self.read_limited_at(file, list.pos, &path) else {
                    continue;
                };
                source.update((rel.len() as u64).to_le_bytes());
                source.update(rel.as_bytes());
                source.update((bytes.len() as u64).to_le_bytes());
                source.update(&bytes);
                if self.lists_mode == Lists::Parse {
                    self.read_list(&path, &bytes, &mut checked);
                }
                self.lists.push(ListFile {
                    pinset: checked.pinset.id.clone(),
                    path,
                    options: Arc::clone(&checked.list_options),
                });
            }
            if let Some(source) = source {
                self.source_digests.insert(
                    checked.pinset.id.clone(),
                    format!("sha256:{}", hex::encode(source.finalize())),
                );
            }
            self.count_pins(file, checked.pinset.source.pos, checked.pinset.pins.len());
            if self.diags.len() == before {
                self.duplicates += checked.duplicates;
                out.push(checked.pinset);
            }
        }
        out
    }

    fn count_pins(&mut self, file: &Path, pos: Pos, n: usize) {
        self.pins_total += n;
        if self.pins_total > self.limits.max_pins && !self.pin_limit_reported {
            self.pin_limit_reported = true;
            self.diags.push(Diagnostic::at(
                file,
                pos,
                format!(
                    "more than {} pins in this load (raise the limit with --max-pins)",
                    self.limits.max_pins
                ),
            ));
        }
    }

    /// Adds the CIDs of the list at `path` (read as `bytes`) to `checked`.
    fn read_list(
        &mut self,
        path: &Path,
        bytes: &[u8],
        checked: &mut super::validate::CheckedDocument,
    ) {
        let path = path.to_path_buf();
        let options = checked.list_options.clone();
        let mut errors = 0usize;
        let mut push = |diags: &mut Vec<Diagnostic>, d: Diagnostic| {
            errors += 1;
            if errors <= self.limits.max_errors_per_file {
                diags.push(d);
            }
        };
        let reader = BufReader::new(bytes);
        for (i, line) in reader.split(b'\n').enumerate() {
            let lineno = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let Ok(line) = line else { break }; // reading from a slice cannot fail
            let line = match std::str::from_utf8(&line) {
                Ok(l) => l,
                Err(e) => {
                    let col = u32::try_from(e.valid_up_to() + 1).unwrap_or(u32::MAX);
                    push(
                        &mut self.diags,
                        Diagnostic::at(&path, Pos::new(lineno, col), "line is not valid UTF-8"),
                    );
                    continue;
                }
            };
            let Some(entry) = parse_list_line(line) else {
                continue;
            };
            let cid_pos = Pos::new(lineno, entry.col);
            let key = match CidKey::parse(entry.cid) {
                Ok(k) => k,
                Err(e) => {
                    push(
                        &mut self.diags,
                        Diagnostic::at(&path, cid_pos, e.to_string()),
                    );
                    continue;
                }
            };
            let pin = DesiredPin {
                spec: PinSpec {
                    name: entry.name.to_string(),
                    options: Arc::clone(&options),
                },
                written_as: written_as(&key, entry.cid),
            };
            let source = PinSource {
                file: &path,
                pos: cid_pos,
            };
            if let Err(d) = checked.insert(key, pin, source) {
                push(&mut self.diags, d);
            }
        }
        if errors > self.limits.max_errors_per_file {
            self.diags.push(Diagnostic::file(
                &path,
                format!(
                    "{} in this file not shown",
                    super::diag::plural(errors - self.limits.max_errors_per_file, "more error")
                ),
            ));
        }
    }

    /// Adds the CIDs of ConfigMap key `(name, key)` of the PinSet's
    /// namespace, as `maps` holds it, to `checked`.
    fn read_config_map(
        &mut self,
        manifest: &Path,
        pos: Pos,
        maps: &ConfigMapLists,
        (name, key): (String, String),
        checked: &mut super::validate::CheckedDocument,
    ) {
        let ns = &checked.pinset.id.namespace;
        let list = PathBuf::from(format!("configmap {ns}/{name} key {key}"));
        let problem = match maps.get(&(name, key)) {
            Some(Ok(text)) if text.len() as u64 <= self.limits.max_list_bytes => {
                return self.read_list(&list, text.as_bytes(), checked);
            }
            Some(Ok(_)) => format!(
                "larger than the limit of {} bytes",
                self.limits.max_list_bytes
            ),
            Some(Err(why)) => why.clone(),
            None => "not read".to_string(),
        };
        let message = format!("pinsFrom {}: {problem}", list.display());
        self.diags.push(Diagnostic::at(manifest, pos, message));
    }

    fn read_limited_at(&mut self, manifest: &Path, pos: Pos, path: &Path) -> Option<Vec<u8>> {
        let before = self.diags.len();
        let bytes = self.read_limited(path, self.limits.max_list_bytes, "list");
        // Point at the manifest line that names the list, too: that is where
        // the user has to look to fix a missing or oversized file.
        if self.diags.len() > before {
            let d = self.diags.pop()?;
            self.diags.push(Diagnostic::at(
                manifest,
                pos,
                format!("pinsFrom {}: {}", path.display(), d.message),
            ));
        }
        bytes
    }

    fn resolve_list_path(
        &mut self,
        root: &Path,
        manifest: &Path,
        rel: &str,
        pos: Pos,
    ) -> Option<PathBuf> {
        let rel_path = Path::new(rel);
        if rel.is_empty() || rel_path.is_absolute() {
            self.diags.push(Diagnostic::at(
                manifest,
                pos,
                format!("pinsFrom path {} must be a relative path", shown(rel)),
            ));
            return None;
        }
        let dir = manifest.parent().unwrap_or(Path::new(""));
        let leaves = || {
            format!(
                "pinsFrom path {} leaves the source directory {}",
                shown(rel),
                root.display()
            )
        };
        // Refuse a `..` that climbs out of the root before touching the file
        // system: whether a file outside the source exists is none of the
        // manifest author's business. Symlinks are caught below.
        if climbs_out(root, dir, rel_path) {
            self.diags.push(Diagnostic::at(manifest, pos, leaves()));
            return None;
        }
        let joined = dir.join(rel_path);
        let missing =
            |e: std::io::Error| format!("pinsFrom {}: cannot read list: {e}", joined.display());
        let real = match fs::canonicalize(&joined) {
            Ok(r) => r,
            Err(e) => {
                self.diags.push(Diagnostic::at(manifest, pos, missing(e)));
                return None;
            }
        };
        let root_real = fs::canonicalize(if root.as_os_str().is_empty() {
            Path::new(".")
        } else {
            root
        })
        .unwrap_or_else(|_| root.to_path_buf());
        if !real.starts_with(&root_real) {
            self.diags.push(Diagnostic::at(manifest, pos, leaves()));
            return None;
        }
        Some(joined)
    }
}

/// True when `rel`, taken from `dir` (a directory under `root`), names a path
/// outside `root` by its `..` components alone.
fn climbs_out(root: &Path, dir: &Path, rel: &Path) -> bool {
    use std::path::Component;
    let Ok(below_root) = dir.strip_prefix(root) else {
        return false; // not expected; the canonical check still applies
    };
    let mut depth = below_root.components().count();
    for c in rel.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(_) => depth += 1,
            Component::ParentDir if depth == 0 => return true,
            Component::ParentDir => depth -= 1,
            Component::RootDir | Component::Prefix(_) => return true,
        }
    }
    false
}

/// The CID string a user wrote, kept only when it differs from canonical.
pub fn written_as(key: &CidKey, written: &str) -> Option<Box<str>> {
    let canonical = key.to_string();
    (canonical != written).then(|| written.into())
}

pub(crate) struct ListLine<'a> {
    pub cid: &'a str,
    pub name: &'a str,
    pub col: u32,
}

/// One line of a CID list: `CID [name]`, `#` starts a comment (at the start of
/// the line or after whitespace), blank lines are skipped.
pub(crate) fn parse_list_line(line: &str) -> Option<ListLine<'_>> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let content = match line.find('#') {
        Some(0) => "",
        Some(i) if line[..i].ends_with(char::is_whitespace) => &line[..i],
        _ => line,
    };
    let trimmed = content.trim_start();
    if trimmed.trim_end().is_empty() {
        return None;
    }
    let col = content.len() - trimmed.len() + 1;
    let (cid, name) = match trimmed.split_once(char::is_whitespace) {
        Some((c, n)) => (c, n.trim()),
        None => (trimmed.trim_end(), ""),
    };
    Some(ListLine {
        cid,
        name,
        col: u32::try_from(col).unwrap_or(u32::MAX),
    })
}

fn pos_of_offset(bytes: &[u8], offset: usize) -> Pos {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let col = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    Pos::new(
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(col).unwrap_or(u32::MAX),
    )
}

fn yaml_options(limits: &Limits) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    // About ten parser events per inline pin; allow the pin limit's worth.
    budget.max_events = limits.max_pins.saturating_mul(12).max(budget.max_events);
    // A whole PinSet sent to `PUT /pinsets` as JSON has about four nodes
    // and 100 bytes of scalars per pin.
    budget.max_nodes = limits.max_pins.saturating_mul(6).max(budget.max_nodes);
    budget.max_total_scalar_bytes = limits
        .max_pins
        .saturating_mul(256)
        .max(budget.max_total_scalar_bytes);
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// Turns a serde-saphyr error into a diagnostic with its location and, for an
/// unknown field or variant, the nearest known name.
fn yaml_diagnostic(file: &Path, e: &serde_saphyr::Error) -> Diagnostic {
    let inner = e.without_snippet();
    let pos = e
        .location()
        .map(|l| {
            Pos::new(
                u32::try_from(l.line()).unwrap_or(u32::MAX),
                u32::try_from(l.column()).unwrap_or(u32::MAX),
            )
        })
        .unwrap_or_default();
    Diagnostic::at(file, pos, yaml_message(inner, pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_lines() {
        let l = parse_list_line("  QmX  core 2026 # note").unwrap();
        assert_eq!((l.cid, l.name, l.col), ("QmX", "core 2026", 3));
        assert!(parse_list_line("# only a comment").is_none());
        assert!(parse_list_line("   ").is_none());
        let l = parse_list_line("bafy#notcomment").unwrap();
        assert_eq!(l.cid, "bafy#notcomment");
        let l = parse_list_line("bafy\r").unwrap();
        assert_eq!(l.cid, "bafy");
    }

    #[test]
    fn offsets_become_positions() {
        assert_eq!(pos_of_offset(b"ab\ncd", 4), Pos::new(2, 2));
        assert_eq!(pos_of_offset(b"x", 0), Pos::new(1, 1));
    }
}
