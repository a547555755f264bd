//! The engine's loops, one per kind of source: when to reconcile (at start,
//! on a change, on an interval, on a webhook trigger, on a reconcile-now
//! request) and with what. Reading a source is the source's business
//! (`crate::source`); deciding what to apply is the engine's
//! ([`Controller::reconcile`]). Nothing here talks to the cluster directly.

use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc::Receiver;
use tokio_util::sync::CancellationToken;

use super::{Controller, ReconcileOutcome};
use crate::source::{DirSource, GitSource};

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
    let mut watch = source.watch()?;
    let rx = &mut watch.changes;

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
    drop(watch);
    Ok(controller)
}

/// Every this many polls on the interval, the revision is re-applied whole
/// even when unchanged, to repair drift in the cluster (a no-op poll stays
/// cheap the other times: 1M pins re-planned is seconds of work).
pub const DRIFT_POLLS: u32 = 10;

/// `interval` ±10%.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::rng().random_range(0.9..=1.1))
}

/// Runs `controller` on `source` until `cancel`: fetches and reconciles at
/// once, then on every `interval` (±10% jitter), every `trigger` message
/// (webhooks) and every reconcile-now request. A poll whose commit is
/// unchanged while the last outcome was healthy is skipped without checkout
/// or loading, except every [`DRIFT_POLLS`]-th interval, which re-applies it
/// whole to repair drift. Each outcome is handed to `report`.
pub async fn run_git(
    mut controller: Controller,
    source: GitSource,
    interval: Duration,
    mut trigger: Receiver<()>,
    cancel: CancellationToken,
    mut report: impl FnMut(&ReconcileOutcome),
) -> Controller {
    let mut last_sha: Option<String> = None;
    let mut triggers_open = true;
    let mut polls_since_drift = 0u32;
    loop {
        let out = poll(&mut controller, &source, &mut last_sha).await;
        report(&out);
        let sleep = tokio::time::sleep(jittered(interval));
        let requests = controller.requests().clone();
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = sleep => {
                // Every DRIFT_POLLS-th interval the unchanged revision is
                // re-applied whole, as a reconcile-now request would.
                polls_since_drift += 1;
                if polls_since_drift >= DRIFT_POLLS {
                    polls_since_drift = 0;
                    requests.request();
                }
            }
            () = requests.wait_pending() => {}
            msg = trigger.recv(), if triggers_open => {
                if msg.is_none() {
                    triggers_open = false;
                }
                while trigger.try_recv().is_ok() {}
            }
        }
    }
    controller
}

/// One fetch and reconcile; `last_sha` is the commit last loaded.
pub async fn poll(
    controller: &mut Controller,
    source: &GitSource,
    last_sha: &mut Option<String>,
) -> ReconcileOutcome {
    controller.keep_loads();
    controller.begin();
    let fetched = match source.fetch().await {
        Ok(f) => f,
        Err(e) => return controller.reconcile(Err(e), false).await,
    };
    if last_sha.as_deref() == Some(&fetched.sha)
        && !controller.requests().pending()
        && controller.state().last_healthy
        && controller.state().last_applied_revision.as_deref() == Some(&fetched.revision)
    {
        return ReconcileOutcome {
            revision: Some(fetched.revision),
            skipped: true,
            ..ReconcileOutcome::default()
        };
    }
    let loaded = source
        .load_after(&fetched, controller.take_previous())
        .await;
    *last_sha = Some(fetched.sha);
    let mut out = controller.reconcile(loaded, false).await;
    // A commit that does not load is still the commit the author pushed:
    // name it, so its commit status reports the failure.
    if out.revision.is_none() {
        out.revision = Some(fetched.revision);
    }
    out
}
