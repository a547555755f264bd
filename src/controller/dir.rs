//! The directory source: `dir:PATH`, loaded with `load_paths`, watched with
//! `notify` through a debouncer, and re-reconciled on an interval.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify_debouncer_full::notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tokio_util::sync::CancellationToken;

use super::{Controller, ReconcileOutcome};
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
}

/// Runs `controller` on `source` until `cancel`: reconciles at once, then
/// after every (debounced) change in the directory and every `interval`
/// (drift repair). Each outcome is handed to `report`.
pub async fn run_dir(
    mut controller: Controller,
    source: DirSource,
    interval: Duration,
    cancel: CancellationToken,
    mut report: impl FnMut(&ReconcileOutcome),
) -> Result<Controller, notify_debouncer_full::notify::Error> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |res: DebounceEventResult| match res {
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
    debouncer.watch(&source.path, RecursiveMode::Recursive)?;

    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate: reconcile below instead
    controller.begin();
    let out = controller.reconcile(source.load().await, false).await;
    report(&out);
    loop {
        let requests = controller.requests().clone();
        let drift = tokio::select! {
            _ = cancel.cancelled() => break,
            () = requests.wait_pending() => true,
            msg = rx.recv() => {
                if msg.is_none() {
                    break;
                }
                while rx.try_recv().is_ok() {}
                false
            }
            _ = ticker.tick() => true,
        };
        controller.begin();
        let out = controller.reconcile(source.load().await, drift).await;
        report(&out);
    }
    drop(debouncer);
    Ok(controller)
}
