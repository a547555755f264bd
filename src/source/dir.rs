//! The directory source: `dir:PATH`, loaded with `load_paths`, watched with
//! `notify` through a debouncer, and re-reconciled on an interval.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify_debouncer_full::notify::{self, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

use crate::manifest::{Limits, LoadError, Loaded, load_paths};

/// Quiet time after the last change before a directory is reloaded.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// A directory of manifests.
#[derive(Clone, Debug)]
pub struct DirSource {
    /// The directory (absolute once built by [`DirSource::new`]).
    pub path: PathBuf,
    /// Bounds on what a load may read.
    pub limits: Limits,
}

impl DirSource {
    /// A source for `path`, made absolute (it must exist).
    pub fn new(path: &Path, limits: Limits) -> std::io::Result<Self> {
        Ok(Self {
            path: std::fs::canonicalize(path)?,
            limits,
        })
    }

    /// The name recorded with each PinSet: `dir:/abs/path`.
    pub fn name(&self) -> String {
        format!("dir:{}", self.path.display())
    }

    /// Loads the directory now (blocking I/O on a blocking thread).
    pub async fn load(&self) -> Result<Loaded, LoadError> {
        let path = self.path.clone();
        let limits = self.limits;
        let fallback = path.clone();
        match tokio::task::spawn_blocking(move || load_paths(&[path], &limits)).await {
            Ok(r) => r,
            Err(e) => Err(LoadError::Io {
                path: fallback,
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }

    /// Starts watching the directory: the receiver gets a message after
    /// every (debounced) change, and after a watch error (logged), so that
    /// the caller reloads. Watching stops when the [`DirWatch`] is dropped.
    pub fn watch(&self) -> Result<DirWatch, notify::Error> {
        let (tx, changes) = mpsc::unbounded_channel::<()>();
        let mut debouncer =
            new_debouncer(DEBOUNCE, None, move |res: DebounceEventResult| match res {
                Ok(events) if events.is_empty() => {}
                Ok(_) => {
                    let _ = tx.send(());
                }
                Err(errors) => {
                    for e in errors {
                        tracing::warn!(error = %e, "watching the source directory");
                    }
                    let _ = tx.send(());
                }
            })?;
        debouncer.watch(&self.path, RecursiveMode::Recursive)?;
        Ok(DirWatch {
            _debouncer: debouncer,
            changes,
        })
    }
}

/// A running watch of a [`DirSource`]'s directory.
pub struct DirWatch {
    _debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
    /// One message per debounced change (several may queue up: drain them).
    pub changes: mpsc::UnboundedReceiver<()>,
}

impl std::fmt::Debug for DirWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirWatch").finish_non_exhaustive()
    }
}
