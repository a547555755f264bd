//! The git source: `git:URL#ref=REF&path=SUBDIR`, fetched with git2 into a
//! cache repository, the selected commit's tree checked out into a revision
//! directory and loaded with `load_paths`.
//!
//! The reference is selected as Flux does: `commit` > `name` > `semver` >
//! `tag` > `branch`; without any, the remote's default branch. The revision
//! is `<ref>@sha1:<sha>` (`main@sha1:…`, `v1.2.0@sha1:…`; `sha1:…` for a bare
//! commit).
//!
//! The checkout is this module's own (not libgit2's): every entry name of
//! the tree it writes is checked first ([`super::tree_names`]: no `..`,
//! `.`, `.git` in any case, `/`, `\`, NUL or empty name), so a crafted
//! commit is a source error and writes nothing. Only regular files and
//! directories are written: symbolic links (mode `120000`) and submodules
//! are left out, so no manifest or list is ever read through a link. User
//! info in the URL (`https://user:token@…`) never reaches a name, an error
//! or `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use git2::{Cred, CredentialType, Direction, FetchOptions, Oid, RemoteCallbacks, Repository};
use sha2::Digest;

use crate::manifest::incremental::{
    LineIndex, ListChange, MAX_INDEXED_BYTES, PinSetChanges, apply_change, check_change, diff_lines,
};
use crate::manifest::{Limits, LoadError, Loaded, PinOptions, PinSetId, load_paths};
use crate::source::tree_names::{check_tree, escape, refuse_name};

/// Environment variable holding an HTTPS token.
pub const TOKEN_ENV: &str = "PINFLEET_GIT_TOKEN";
/// Environment variable holding the path of an SSH private key.
pub const SSH_KEY_ENV: &str = "PINFLEET_GIT_SSH_KEY";

/// Which commit of the repository to apply (Flux `GitRepositoryRef`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefSpec {
    /// A branch name (`ref=` and `branch=`).
    pub branch: Option<String>,
    /// A tag name.
    pub tag: Option<String>,
    /// A semver range over tags (`v1.2.3` or `1.2.3`).
    pub semver: Option<String>,
    /// An exact reference name (`refs/heads/x`, `refs/tags/v1`).
    pub name: Option<String>,
    /// A full commit SHA-1.
    pub commit: Option<String>,
}

/// Credentials for the remote. Never logged: `Debug` shows only which kinds
/// are set.
#[derive(Clone, Default)]
pub struct Credentials {
    /// HTTPS token, sent as the password.
    pub token: Option<String>,
    /// SSH private key file.
    pub ssh_key: Option<PathBuf>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ssh_key", &self.ssh_key)
            .finish()
    }
}

impl Credentials {
    /// From `PINFLEET_GIT_TOKEN` (or, when given, the file `token_file`) and
    /// `PINFLEET_GIT_SSH_KEY`.
    pub fn from_env(token_file: Option<&Path>) -> std::io::Result<Self> {
        let token = match token_file {
            Some(p) => Some(std::fs::read_to_string(p)?.trim().to_string()),
            None => std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()),
        };
        let ssh_key = std::env::var_os(SSH_KEY_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        Ok(Self { token, ssh_key })
    }
}

/// Why a `git:` source specification is not valid.
#[derive(Debug, thiserror::Error)]
#[error("invalid git source {}: {why}", crate::manifest::shown(spec))]
pub struct GitSpecError {
    spec: String,
    why: String,
}

/// A git repository of manifests. `Debug` shows the URL without its
/// user-info (`https://user:token@host/…` is shown as `https://host/…`).
#[derive(Clone)]
pub struct GitSource {
    /// The remote's URL (`file://`, `https://`, `ssh://`).
    pub url: String,
    /// Which commit to apply.
    pub reference: RefSpec,
    /// The directory inside the repository to load (the root when `None`).
    pub path: Option<PathBuf>,
    /// Where this source keeps its cache repository and revision directories.
    pub cache_dir: PathBuf,
    /// Credentials for the remote.
    pub credentials: Credentials,
    /// Bounds on what a load may read.
    pub limits: Limits,
    /// For a remote on this machine (`file://` or a path): read its objects
    /// where they are (as a git alternate, never written down) instead of
    /// copying them through a pack, which for a 64 MiB list file costs
    /// most of a second of compression. On by default.
    pub share_local_objects: bool,
    /// What the last full or incremental load read, for the next
    /// incremental one (shared by clones).
    memo: Arc<Mutex<Option<Memo>>>,
}

impl fmt::Debug for GitSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitSource")
            .field("url", &redact(&self.url))
            .field("reference", &self.reference)
            .field("path", &self.path)
            .field("cache_dir", &self.cache_dir)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// The last load of a git source: its commit and the `pinsFrom` lists it
/// read, with their content and line index.
struct Memo {
    sha: String,
    revision: String,
    lists: Vec<ListMemo>,
}

struct ListMemo {
    /// Path of the file in the repository.
    repo_path: PathBuf,
    pinset: PinSetId,
    options: Arc<PinOptions>,
    blob: Oid,
    bytes: Vec<u8>,
    index: LineIndex,
}

impl fmt::Debug for Memo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memo")
            .field("sha", &self.sha)
            .field("lists", &self.lists.len())
            .finish()
    }
}

/// Why an incremental load gave way to a full one (logged at debug level).
#[derive(Debug)]
struct Fallback(&'static str);

/// The commit a fetch selected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The commit's SHA-1 (hex).
    pub sha: String,
    /// `<ref>@sha1:<sha>`.
    pub revision: String,
}

impl GitSource {
    /// Parses `URL#ref=REF&path=SUBDIR` (the part after `git:`); query keys:
    /// `ref`/`branch`, `tag`, `semver`, `commit`, `name`, `path`. The cache
    /// lives in a directory of `cache_root` named after the URL and path.
    pub fn parse(
        spec: &str,
        cache_root: &Path,
        credentials: Credentials,
        limits: Limits,
    ) -> Result<Self, GitSpecError> {
        let err = |why: String| GitSpecError {
            spec: redact(spec),
            why,
        };
        let (url, query) = match spec.split_once('#') {
            Some((u, q)) => (u, q),
            None => (spec, ""),
        };
        if url.is_empty() {
            return Err(err("the URL is empty".into()));
        }
        let mut reference = RefSpec::default();
        let mut path = None;
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err(err(format!(
                    "expected key=value, got {}",
                    crate::manifest::shown(part)
                )));
            };
            if v.is_empty() {
                return Err(err(format!("{k} is empty")));
            }
            let v = v.to_string();
            match k {
                "ref" | "branch" => reference.branch = Some(v),
                "tag" => reference.tag = Some(v),
                "semver" => {
                    semver::VersionReq::parse(&v).map_err(|e| {
                        err(format!("semver range {}: {e}", crate::manifest::shown(&v)))
                    })?;
                    reference.semver = Some(v);
                }
                "commit" => {
                    if v.len() != 40 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(err("commit must be a full 40-digit SHA-1".into()));
                    }
                    reference.commit = Some(v.to_ascii_lowercase());
                }
                "name" => {
                    if !v.starts_with("refs/") {
                        return Err(err("name must be a full reference (refs/…)".into()));
                    }
                    reference.name = Some(v);
                }
                "path" => {
                    let p = PathBuf::from(&v);
                    if !p.components().all(|c| matches!(c, Component::Normal(_))) {
                        return Err(err(
                            "path must be relative, without `..` or `.` segments".into()
                        ));
                    }
                    path = Some(p);
                }
                other => {
                    return Err(err(format!(
                        "unknown key {} (expected ref, branch, tag, semver, commit, name, path)",
                        crate::manifest::shown(other)
                    )));
                }
            }
        }
        let mut key = sha2::Sha256::new();
        key.update(url.as_bytes());
        key.update([0]);
        if let Some(p) = &path {
            key.update(p.to_string_lossy().as_bytes());
        }
        let key = hex::encode(key.finalize());
        Ok(Self {
            url: url.to_string(),
            reference,
            path,
            cache_dir: cache_root.join(&key[..16]),
            credentials,
            limits,
            share_local_objects: true,
            memo: Arc::default(),
        })
    }

    /// The name recorded with each PinSet: `git:URL` (credentials removed),
    /// with `#path=SUBDIR` when a path is set.
    pub fn name(&self) -> String {
        match &self.path {
            Some(p) => format!("git:{}#path={}", redact(&self.url), p.display()),
            None => format!("git:{}", redact(&self.url)),
        }
    }

    /// Asks the remote which commit the reference points at and fetches it
    /// unless the cache already holds it (blocking I/O on a blocking thread).
    pub async fn fetch(&self) -> Result<Fetched, LoadError> {
        let this = self.clone();
        join(
            tokio::task::spawn_blocking(move || this.fetch_blocking()),
            &self.url,
        )
        .await
    }

    /// Checks out `fetched` into its revision directory (reused when present,
    /// older ones removed) and loads it; the digest is the revision.
    pub async fn load(&self, fetched: &Fetched) -> Result<Loaded, LoadError> {
        self.load_after(fetched, None).await
    }

    /// Loads `fetched` from `previous`, the result of this source's last
    /// load, when it can: if only `pinsFrom` lists changed between the two
    /// commits, the lines that differ are parsed and `previous` is updated
    /// in place, with `changes` saying what changed in each PinSet (see
    /// [`crate::manifest::incremental`]); no checkout is made. Otherwise (a
    /// manifest changed, a line does not parse, no previous load) this is
    /// [`load`](Self::load).
    pub async fn load_after(
        &self,
        fetched: &Fetched,
        previous: Option<Loaded>,
    ) -> Result<Loaded, LoadError> {
        let this = self.clone();
        let f = fetched.clone();
        join(
            tokio::task::spawn_blocking(move || {
                if let Some(prev) = previous {
                    match this.load_incremental(&f, prev) {
                        Ok(loaded) => return Ok(loaded),
                        Err(Fallback(why)) => {
                            tracing::debug!(revision = %f.revision, why, "full load");
                        }
                    }
                }
                this.load_blocking(&f)
            }),
            &self.url,
        )
        .await
    }

    fn load_incremental(&self, fetched: &Fetched, mut prev: Loaded) -> Result<Loaded, Fallback> {
        let mut guard = self.memo.lock().map_err(|_| Fallback("memo poisoned"))?;
        let memo = guard.take().ok_or(Fallback("nothing remembered"))?;
        if memo.revision != prev.digest || prev.duplicates != 0 {
            return Err(Fallback("the previous load does not match the memo"));
        }
        let repo = self.open().map_err(|_| Fallback("cannot open the cache"))?;
        let tree = |sha: &str| {
            Oid::from_str(sha)
                .and_then(|o| repo.find_commit(o))
                .and_then(|c| c.tree())
                .map_err(|_| Fallback("commit not found"))
        };
        let (old_tree, new_tree) = (tree(&memo.sha)?, tree(&fetched.sha)?);
        if self.refused(&repo, &new_tree) {
            // The full load reports it (and writes nothing).
            return Err(Fallback("a tree entry name is refused"));
        }
        let diff = repo
            .diff_tree_to_tree(Some(&old_tree), Some(&new_tree), None)
            .map_err(|_| Fallback("cannot diff the trees"))?;
        // (index in memo.lists, new blob)
        let mut changed: Vec<(usize, Oid)> = Vec::new();
        for delta in diff.deltas() {
            let (old, new) = (delta.old_file(), delta.new_file());
            let regular = |m: git2::FileMode| {
                matches!(m, git2::FileMode::Blob | git2::FileMode::BlobExecutable)
            };
            for f in [&old, &new] {
                if f.id().is_zero() {
                    continue;
                }
                if !regular(f.mode()) {
                    return Err(Fallback("a link or submodule changed"));
                }
            }
            let Some(path) = new.path().or(old.path()) else {
                return Err(Fallback("a changed path is not utf-8"));
            };
            // A list read by several PinSets (or twice) is reloaded whole:
            // the shortcut updates one reader per list.
            if memo.lists.iter().filter(|l| l.repo_path == path).count() > 1 {
                return Err(Fallback("a changed list is read by several pinsets"));
            }
            if let Some(i) = memo.lists.iter().position(|l| l.repo_path == path) {
                if delta.status() != git2::Delta::Modified || old.id() != memo.lists[i].blob {
                    return Err(Fallback("a list was added, removed or replaced"));
                }
                changed.push((i, new.id()));
                continue;
            }
            let inside = self.path.as_ref().is_none_or(|p| path.starts_with(p));
            let manifest = matches!(
                path.extension().and_then(|x| x.to_str()),
                Some("yaml" | "yml")
            );
            if inside && manifest {
                return Err(Fallback("a manifest changed"));
            }
            // Anything else (outside `path`, not a manifest, not a list read
            // by the manifests): not part of the load.
        }

        let mut memo = memo;
        // Per PinSet: the changed lists, parsed.
        let mut per_pinset: BTreeMap<PinSetId, ListChange> = BTreeMap::new();
        let mut new_lists: Vec<(usize, Oid, git2::Blob<'_>, LineIndex)> = Vec::new();
        for (i, blob) in changed {
            let list = &memo.lists[i];
            let content = repo
                .find_blob(blob)
                .map_err(|_| Fallback("blob not found"))?;
            if content.size() as u64 > self.limits.max_list_bytes
                || content.size() > MAX_INDEXED_BYTES
            {
                return Err(Fallback("a list is over the limit"));
            }
            let new = content.content();
            let index = LineIndex::new(new);
            let diff = diff_lines(&list.index, &index);
            let change = ListChange::parse(&list.bytes, new, &diff, &list.options)
                .ok_or(Fallback("a changed line does not parse"))?;
            let entry = per_pinset.entry(list.pinset.clone()).or_default();
            entry.removed.extend(change.removed);
            entry.added.extend(change.added);
            new_lists.push((i, blob, content, index));
        }
        let total_before = prev.pin_count();
        for (id, change) in &per_pinset {
            let ps = prev
                .pinsets
                .iter()
                .find(|p| p.id == *id)
                .ok_or(Fallback("a list's PinSet is gone"))?;
            let others = total_before - ps.pins.len();
            let room = self.limits.max_pins.saturating_sub(others);
            check_change(ps, change, room).ok_or(Fallback("the change needs a full load"))?;
        }
        // Checked: from here on nothing fails.
        let mut changes = BTreeMap::new();
        for ps in &mut prev.pinsets {
            let c = match per_pinset.remove(&ps.id) {
                Some(change) => apply_change(ps, change),
                None => PinSetChanges::default(),
            };
            changes.insert(ps.id.clone(), c);
        }
        for (i, blob, content, index) in new_lists {
            let l = &mut memo.lists[i];
            // The old buffer is reused: no fresh pages to fault in.
            l.bytes.clear();
            l.bytes.extend_from_slice(content.content());
            (l.blob, l.index) = (blob, index);
        }
        memo.sha = fetched.sha.clone();
        memo.revision = fetched.revision.clone();
        *guard = Some(memo);
        // Files were not hashed again: the per-PinSet source digests are
        // unknown (the controller compares revisions, not these).
        prev.source_digests.clear();
        let base = std::mem::replace(&mut prev.digest, fetched.revision.clone());
        prev.changes = Some((base, changes));
        Ok(prev)
    }

    /// True when the part of `tree` a load reads (`path`, or all of it)
    /// holds a name [`check_tree`] refuses, or cannot be read.
    fn refused(&self, repo: &Repository, tree: &git2::Tree<'_>) -> bool {
        let Some(p) = &self.path else {
            return check_tree(repo, tree, b"").is_err();
        };
        match tree
            .get_path(p)
            .and_then(|e| e.to_object(repo))
            .and_then(|o| o.peel_to_tree())
        {
            Ok(sub) => check_tree(repo, &sub, p.to_string_lossy().as_bytes()).is_err(),
            Err(_) => true,
        }
    }

    /// Remembers the lists a full load of `fetched` (checked out at `root`)
    /// read; nothing is remembered when a list's path goes through a link
    /// (a change of the file would not show under that path).
    fn remember(&self, fetched: &Fetched, root: &Path, loaded: &Loaded) {
        let memo = (|| -> Option<Memo> {
            let repo = self.open().ok()?;
            let tree = repo
                .find_commit(Oid::from_str(&fetched.sha).ok()?)
                .ok()?
                .tree()
                .ok()?;
            let root = std::fs::canonicalize(root).ok()?;
            let mut lists = Vec::with_capacity(loaded.lists.len());
            for l in &loaded.lists {
                let real = std::fs::canonicalize(&l.path).ok()?;
                let repo_path = real.strip_prefix(&root).ok()?.to_path_buf();
                let entry = tree.get_path(&repo_path).ok()?;
                let bytes = std::fs::read(&real).ok()?;
                if bytes.len() > MAX_INDEXED_BYTES {
                    return None;
                }
                let blob = entry.id();
                if Oid::hash_object(git2::ObjectType::Blob, &bytes).ok()? != blob {
                    return None;
                }
                let index = LineIndex::new(&bytes);
                lists.push(ListMemo {
                    repo_path,
                    pinset: l.pinset.clone(),
                    options: Arc::clone(&l.options),
                    blob,
                    bytes,
                    index,
                });
            }
            Some(Memo {
                sha: fetched.sha.clone(),
                revision: fetched.revision.clone(),
                lists,
            })
        })();
        if let Ok(mut m) = self.memo.lock() {
            *m = memo;
        }
    }

    /// A source error naming the URL without its user-info; the message is
    /// scrubbed of it too (libgit2 may quote the URL it was given).
    fn source_error(&self, what: &str, e: impl fmt::Display) -> LoadError {
        LoadError::Io {
            path: PathBuf::from(redact(&self.url)),
            source: std::io::Error::other(scrub(&format!("{what}: {e}"), &self.url)),
        }
    }

    fn open(&self) -> Result<Repository, LoadError> {
        let dir = self.cache_dir.join("repo.git");
        let repo = if dir.join("HEAD").exists() {
            Repository::open_bare(&dir)
        } else {
            std::fs::create_dir_all(&dir)
                .map_err(|e| self.source_error("cannot create the git cache", e))?;
            Repository::init_bare(&dir)
        }
        .map_err(|e| self.source_error("cannot open the git cache", e.message()))?;
        if let Some(objects) = self.local_objects() {
            // Best effort: without it, the objects are fetched as usual.
            if let Err(e) = repo
                .odb()
                .and_then(|odb| odb.add_disk_alternate(&objects.to_string_lossy()))
            {
                tracing::debug!(error = %e.message(), "cannot share the local remote's objects");
            }
        }
        Ok(repo)
    }

    /// The object directory of a remote on this machine, when shared.
    fn local_objects(&self) -> Option<PathBuf> {
        if !self.share_local_objects {
            return None;
        }
        let path = match self.url.strip_prefix("file://") {
            Some(p) => PathBuf::from(p),
            None if Path::new(&self.url).is_absolute() => PathBuf::from(&self.url),
            None => return None,
        };
        let remote = Repository::open(&path).ok()?;
        let objects = remote.path().join("objects");
        objects.is_dir().then_some(objects)
    }

    fn callbacks(&self) -> RemoteCallbacks<'static> {
        let creds = self.credentials.clone();
        let mut attempts = 0u32;
        let mut cb = RemoteCallbacks::new();
        cb.credentials(move |_url, user, allowed| {
            attempts += 1;
            if attempts > 3 {
                return Err(git2::Error::from_str("authentication failed"));
            }
            if allowed.contains(CredentialType::SSH_KEY)
                && let Some(key) = &creds.ssh_key
            {
                return Cred::ssh_key(user.unwrap_or("git"), None, key, None);
            }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
                && let Some(token) = &creds.token
            {
                return Cred::userpass_plaintext(user.unwrap_or("x-access-token"), token);
            }
            if allowed.contains(CredentialType::USERNAME) {
                return Cred::username(user.unwrap_or("git"));
            }
            Err(git2::Error::from_str("no usable credentials"))
        });
        cb
    }

    fn fetch_blocking(&self) -> Result<Fetched, LoadError> {
        let repo = self.open()?;
        let mut remote = repo
            .remote_anonymous(&self.url)
            .map_err(|e| self.source_error("invalid remote", e.message()))?;
        // One connection to read the advertised references.
        let (heads, default_branch) = {
            let conn = remote
                .connect_auth(Direction::Fetch, Some(self.callbacks()), None)
                .map_err(|e| self.source_error("cannot connect", e.message()))?;
            let heads: Vec<(String, Oid)> = conn
                .list()
                .map_err(|e| self.source_error("cannot list references", e.message()))?
                .iter()
                .map(|h| (h.name().to_string(), h.oid()))
                .collect();
            let default = conn
                .default_branch()
                .ok()
                .and_then(|b| b.as_str().ok().map(str::to_string));
            (heads, default)
        };
        let (label, refname, mut oid) = self.select(&heads, default_branch.as_deref())?;
        let sha = self
            .reference
            .commit
            .as_deref()
            .and_then(|c| Oid::from_str(c).ok());
        if let Some(c) = sha {
            oid = c;
        }
        if repo.find_commit(oid).is_err() {
            let mut opts = FetchOptions::new();
            opts.remote_callbacks(self.callbacks());
            opts.download_tags(git2::AutotagOption::None);
            let specs: Vec<String> = match &refname {
                Some(r) => vec![format!(
                    "+{r}:refs/pinfleet/{}",
                    r.trim_start_matches("refs/")
                )],
                None => vec![
                    "+refs/heads/*:refs/pinfleet/heads/*".into(),
                    "+refs/tags/*:refs/pinfleet/tags/*".into(),
                ],
            };
            remote
                .fetch(&specs, Some(&mut opts), None)
                .map_err(|e| self.source_error("fetch failed", e.message()))?;
        }
        let commit = repo
            .find_object(oid, None)
            .and_then(|o| o.peel_to_commit())
            .map_err(|e| self.source_error("the selected commit is not available", e.message()))?;
        let sha = commit.id().to_string();
        let revision = match label {
            Some(l) => format!("{l}@sha1:{sha}"),
            None => format!("sha1:{sha}"),
        };
        Ok(Fetched { sha, revision })
    }

    /// Picks the reference: (label for the revision, remote ref to fetch,
    /// the commit it advertises).
    fn select(
        &self,
        heads: &[(String, Oid)],
        default_branch: Option<&str>,
    ) -> Result<(Option<String>, Option<String>, Oid), LoadError> {
        // An annotated tag is advertised twice; the `^{}` entry is the commit.
        let find = |name: &str| -> Option<Oid> {
            let peeled = format!("{name}^{{}}");
            heads
                .iter()
                .find(|(n, _)| *n == peeled)
                .or_else(|| heads.iter().find(|(n, _)| n == name))
                .map(|(_, o)| *o)
        };
        let missing = |what: String| self.source_error("reference not found", what);
        let r = &self.reference;
        if let Some(c) = &r.commit {
            let oid = Oid::from_str(c).map_err(|e| self.source_error("invalid commit", e))?;
            // With a branch, fetch only that branch; otherwise every branch and tag.
            let (label, refname) = match &r.branch {
                Some(b) => (Some(b.clone()), Some(format!("refs/heads/{b}"))),
                None => (None, None),
            };
            return Ok((label, refname, oid));
        }
        if let Some(n) = &r.name {
            let oid = find(n).ok_or_else(|| missing(n.clone()))?;
            return Ok((Some(n.clone()), Some(n.clone()), oid));
        }
        if let Some(range) = &r.semver {
            let req = semver::VersionReq::parse(range)
                .map_err(|e| self.source_error("invalid semver range", e))?;
            let best = heads
                .iter()
                .filter_map(|(n, _)| n.strip_prefix("refs/tags/"))
                .filter(|t| !t.ends_with("^{}"))
                .filter_map(|t| {
                    semver::Version::parse(t.strip_prefix('v').unwrap_or(t))
                        .ok()
                        .filter(|v| req.matches(v))
                        .map(|v| (v, t.to_string()))
                })
                .max_by(|a, b| a.0.cmp(&b.0));
            let Some((_, tag)) = best else {
                return Err(missing(format!("no tag matches semver {range}")));
            };
            let refname = format!("refs/tags/{tag}");
            let oid = find(&refname).ok_or_else(|| missing(refname.clone()))?;
            return Ok((Some(tag), Some(refname), oid));
        }
        if let Some(t) = &r.tag {
            let refname = format!("refs/tags/{t}");
            let oid = find(&refname).ok_or_else(|| missing(format!("tag {t}")))?;
            return Ok((Some(t.clone()), Some(refname), oid));
        }
        let refname = match &r.branch {
            Some(b) => format!("refs/heads/{b}"),
            None => default_branch
                .map(str::to_string)
                .or_else(|| {
                    // Without the symref capability: the branch HEAD points at.
                    let head = find("HEAD")?;
                    heads
                        .iter()
                        .find(|(n, o)| n.starts_with("refs/heads/") && *o == head)
                        .map(|(n, _)| n.clone())
                })
                .ok_or_else(|| missing("the remote has no default branch".into()))?,
        };
        let oid = find(&refname).ok_or_else(|| missing(refname.clone()))?;
        let label = refname
            .strip_prefix("refs/heads/")
            .unwrap_or(&refname)
            .to_string();
        Ok((Some(label), Some(refname), oid))
    }

    fn load_blocking(&self, fetched: &Fetched) -> Result<Loaded, LoadError> {
        let root = self.cache_dir.join(format!("rev-{}", fetched.sha));
        if !root.exists() {
            let tmp = self.cache_dir.join(format!(".rev-{}.tmp", fetched.sha));
            let _ = std::fs::remove_dir_all(&tmp);
            if let Err(e) = self.checkout(&fetched.sha, &tmp) {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
            std::fs::rename(&tmp, &root)
                .map_err(|e| self.source_error("cannot store the checkout", e))?;
        }
        self.prune_revisions(&root);
        let dir = match &self.path {
            Some(p) => root.join(p),
            None => root.clone(),
        };
        let loaded = load_paths(&[dir], &self.limits);
        if let Ok(mut m) = self.memo.lock() {
            *m = None;
        }
        let mut loaded = loaded?;
        loaded.digest = fetched.revision.clone();
        self.remember(fetched, &root, &loaded);
        Ok(loaded)
    }

    /// Writes the commit's tree (only `path` when set) under `dest`.
    fn checkout(&self, sha: &str, dest: &Path) -> Result<(), LoadError> {
        let repo = self.open()?;
        let fail = |e: git2::Error| self.source_error("checkout failed", e.message().to_string());
        let oid = Oid::from_str(sha).map_err(fail)?;
        let tree = repo.find_commit(oid).and_then(|c| c.tree()).map_err(fail)?;
        let (tree, base) = match &self.path {
            Some(p) => {
                let entry = tree
                    .get_path(p)
                    .map_err(|_| self.source_error("path not found in the commit", p.display()))?;
                let sub = entry
                    .to_object(&repo)
                    .and_then(|o| o.peel_to_tree())
                    .map_err(fail)?;
                (sub, dest.join(p))
            }
            None => (tree, dest.to_path_buf()),
        };
        // Every name is checked before anything is written: a refused tree
        // leaves no file behind, not even inside the cache.
        let prefix = self
            .path
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        check_tree(&repo, &tree, prefix.as_bytes())
            .map_err(|e| self.source_error("unsafe commit", e))?;
        write_tree(&repo, &tree, &base).map_err(|e| self.source_error("checkout failed", e))
    }

    fn prune_revisions(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.cache_dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name();
            if p != keep
                && name.to_string_lossy().starts_with("rev-")
                && let Err(err) = std::fs::remove_dir_all(&p)
            {
                tracing::warn!(path = %p.display(), error = %err, "removing an old revision");
            }
        }
    }
}

fn write_tree(repo: &Repository, tree: &git2::Tree<'_>, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in tree.iter() {
        let Ok(name) = entry.name() else { continue };
        // Checked by `check_tree` already; again here so that no caller
        // can write a name that leaves `dir`.
        if let Some(why) = refuse_name(entry.name_bytes()) {
            return Err(std::io::Error::other(format!(
                "refused tree entry \"{}\": {why}",
                escape(entry.name_bytes())
            )));
        }
        let path = dir.join(name);
        match entry.kind() {
            Some(git2::ObjectType::Tree) => {
                let sub = repo
                    .find_tree(entry.id())
                    .map_err(|e| std::io::Error::other(e.message().to_string()))?;
                write_tree(repo, &sub, &path)?;
            }
            // Regular files only: links and submodules are not manifests.
            Some(git2::ObjectType::Blob) if entry.filemode() & 0o170000 == 0o100000 => {
                let blob = repo
                    .find_blob(entry.id())
                    .map_err(|e| std::io::Error::other(e.message().to_string()))?;
                std::fs::write(&path, blob.content())?;
            }
            _ => {}
        }
    }
    Ok(())
}

async fn join<T>(
    h: tokio::task::JoinHandle<Result<T, LoadError>>,
    url: &str,
) -> Result<T, LoadError> {
    match h.await {
        Ok(r) => r,
        Err(e) => Err(LoadError::Io {
            path: PathBuf::from(redact(url)),
            source: std::io::Error::other(e.to_string()),
        }),
    }
}

/// `text` with the user-info of `url` (and its password, when it is long
/// enough not to match by chance) replaced by `***`.
fn scrub(text: &str, url: &str) -> String {
    let Some((_, rest)) = url.split_once("://") else {
        return text.to_string();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..end].rfind('@') else {
        return text.to_string();
    };
    let userinfo = &rest[..at];
    let mut out = text.replace(userinfo, "***");
    if let Some((_, password)) = userinfo.split_once(':')
        && password.len() >= 4
    {
        out = out.replace(password, "***");
    }
    out
}

/// `url` without the user-info part (`https://user:token@host` → `https://host`).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}
