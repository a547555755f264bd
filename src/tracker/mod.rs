//! The per-peer pin tracker: makes this peer's IPFS node hold exactly the
//! pins the shared state allocates to it, and says how that is going
//! (DESIGN §6).
//!
//! Its costs follow the change, not the archive:
//! - after the state applies entries, only the pins that changed are
//!   compared (the state's change feed, `StateStore::changes_since`);
//! - a full comparison with the node — at start, every `recheck_interval`
//!   (stretched so that comparing takes at most a tenth of the time), and
//!   when the change feed was trimmed past the tracker's position — is one
//!   merge walk in CID order over the state, the node's pin list and the
//!   managed set (`walk.rs`), run off the actor; it holds the node's list,
//!   nothing per wanted pin;
//! - status is answered for a batch of pins (a page) by lookups, never by
//!   copying the tracker's books.
//!
//! The pins this peer pinned for the cluster ("managed", the only ones it
//! ever unpins) are persisted (`managed.rs`), so a pin released while the
//! peer was down is unpinned after it restarts; a pin is reported `pinned`
//! only once that record is on disk (until then: `pinning`), so what a
//! user saw pinned is released even after a crash (kill -9). Pins go
//! before retries; failures retry with exponential backoff; a pin that
//! vanished from IPFS behind our back is reported `unexpectedly_unpinned`
//! and pinned again (drift repair). The rules live in `book.rs`, the
//! comparisons that run in the background in `jobs.rs`; this file is the
//! actor: it owns the books, starts operations and answers requests.
//!
//! It must not write to the shared state and must never crash on what the
//! backend says: a backend error only ever becomes a status.

mod book;
pub mod global;
pub mod identity;
mod jobs;
mod managed;
pub mod rpc;
mod walk;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use global::StatusService;
pub use managed::ManagedError;

use crate::consensus::StateStore;
use crate::ipfs::{IpfsBackend, IpfsError, PinOpts};
use crate::manifest::{CidKey, PinMode, PinOptions, ReplicationFactors, ShardKind};
use crate::state::StatePin;
use crate::wire::TrackerStatus;
use book::{Book, Managing, OpKind};
use jobs::{FullWalk, JobMsg, Reader};
use managed::Managed;
use walk::Wanted;

/// Tracker settings.
#[derive(Clone, Debug)]
pub struct TrackerConfig {
    /// Pins and unpins in flight at once.
    pub concurrency: usize,
    /// A pin fails when IPFS reports no progress for this long.
    pub progress_timeout: Duration,
    /// First retry delay; doubles per attempt.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Full comparison with the node's pin list this often, or less often
    /// when one takes longer than a tenth of it.
    pub recheck_interval: Duration,
    /// Re-pin what disappeared from IPFS behind our back.
    pub repair_drift: bool,
    /// The cluster's default replication (for pins with 0/0).
    pub default_replication: ReplicationFactors,
    /// Where the tracker keeps the CIDs it pinned for the cluster (see
    /// [`managed_path`]); `None`: in memory only, forgotten on restart.
    pub managed_path: Option<PathBuf>,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            concurrency: 10,
            progress_timeout: Duration::from_secs(120),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            recheck_interval: Duration::from_secs(30),
            repair_drift: true,
            default_replication: ReplicationFactors { min: -1, max: -1 },
            managed_path: None,
        }
    }
}

/// The tracker's managed-pins file under a peer directory.
pub fn managed_path(peer_dir: &Path) -> PathBuf {
    Managed::default_path(peer_dir)
}

/// How a node pins a pin of `options`: `(recursive, max_depth)`, or `None`
/// for a sharded DAG's meta pin, which no node pins (its shards hold the
/// content). A shard pin is recursive to its `max_depth` (at least 1); a
/// cluster DAG pin is direct; any other pin follows its mode.
pub fn node_pin(options: &PinOptions) -> Option<(bool, Option<u32>)> {
    match options.shard_role.as_ref().map(|r| (r.kind, r.max_depth)) {
        Some((ShardKind::Meta, _)) => None,
        Some((ShardKind::ClusterDag, _)) => Some((false, None)),
        Some((ShardKind::Shard, depth)) => {
            Some((true, Some(u32::try_from(depth).unwrap_or(1).max(1))))
        }
        None => Some((options.mode == PinMode::Recursive, None)),
    }
}

/// Whether `me` must pin `pin`: every peer for replication -1 (explicitly
/// or through the cluster default), otherwise the allocated peers; no peer
/// for a meta pin ([`node_pin`]).
pub fn allocated_here(pin: &StatePin, me: &str, default: ReplicationFactors) -> bool {
    let eff = pin.effective();
    if node_pin(&eff.options).is_none() {
        return false;
    }
    let r = eff.options.replication;
    let r = if r.min == 0 && r.max == 0 { default } else { r };
    if r.min == -1 || (r.max == -1 && pin.allocations.is_empty()) {
        return true;
    }
    pin.allocations.iter().any(|p| p == me)
}

/// What the state wants of `pin` on peer `me` at `now`: `None` when it is
/// not allocated here or has expired.
fn wanted_here(pin: &StatePin, me: &str, default: ReplicationFactors, now: i64) -> Option<Wanted> {
    let expired = pin.expire_at_ms().is_some_and(|at| at <= now);
    if expired || !allocated_here(pin, me, default) {
        return None;
    }
    let eff = pin.effective();
    let (recursive, max_depth) = node_pin(&eff.options)?;
    Some(Wanted {
        recursive,
        max_depth,
        origins: eff.options.origins.clone(),
    })
}

/// What the tracker needs to know of a pin in the state to give its
/// status (the state is read by the asker, not the tracker).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusQuery {
    /// The pin.
    pub cid: CidKey,
    /// Allocated to this peer ([`allocated_here`]).
    pub here: bool,
    /// Its expiry has passed.
    pub expired: bool,
    /// Not in the state at all (released, or never pinned): `unpinned`,
    /// unless this peer's node still holds it for an unpin to come.
    pub gone: bool,
}

impl StatusQuery {
    /// The query for `pin` on peer `me` at `now_ms`.
    pub fn of(pin: &StatePin, me: &str, default: ReplicationFactors, now_ms: i64) -> Self {
        Self {
            cid: pin.cid,
            here: allocated_here(pin, me, default),
            expired: pin.expire_at_ms().is_some_and(|at| at <= now_ms),
            gone: false,
        }
    }

    /// The query for `cid`, which is not in the state.
    pub fn gone(cid: CidKey) -> Self {
        Self {
            cid,
            here: false,
            expired: false,
            gone: true,
        }
    }
}

/// One peer's status for one pin, before it is dressed as JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalStatus {
    /// The status.
    pub status: TrackerStatus,
    /// Last error.
    pub error: String,
    /// Attempts so far.
    pub attempt_count: u32,
    /// When it last changed (Unix ms).
    pub timestamp_ms: i64,
    /// Queued ahead of retries.
    pub priority_pin: bool,
}

/// The tracker's counters (cheap: no per-pin data).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerView {
    pin_queue: u64,
    pinned: u64,
}

impl TrackerView {
    /// Pin operations waiting or in flight (the `pinqueue` metric).
    pub fn pin_queue(&self) -> u64 {
        self.pin_queue
    }

    /// CIDs pinned on this peer's IPFS node (the `numpin` metric): exact
    /// after each full comparison, adjusted by the operations that ended
    /// since.
    pub fn pinned_count(&self) -> u64 {
        self.pinned
    }
}

enum Command {
    View(oneshot::Sender<TrackerView>),
    Statuses {
        queries: Vec<StatusQuery>,
        reply: oneshot::Sender<Vec<LocalStatus>>,
    },
    Recover {
        cid: Option<CidKey>,
        reply: oneshot::Sender<Vec<CidKey>>,
    },
    Sync,
}

/// Handle to a running tracker. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TrackerHandle {
    tx: mpsc::Sender<Command>,
}

/// The tracker stopped (its peer is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the pin tracker has stopped")]
pub struct TrackerStopped;

impl TrackerHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, TrackerStopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| TrackerStopped)?;
        rx.await.map_err(|_| TrackerStopped)
    }

    /// The tracker's counters.
    pub async fn view(&self) -> Result<TrackerView, TrackerStopped> {
        self.ask(Command::View).await
    }

    /// This peer's status for each query, in order. Costs one lookup per
    /// query (ask a page at a time).
    pub async fn statuses(
        &self,
        queries: Vec<StatusQuery>,
    ) -> Result<Vec<LocalStatus>, TrackerStopped> {
        self.ask(|reply| Command::Statuses { queries, reply }).await
    }

    /// Retries failed operations now (one CID, or all); returns the CIDs
    /// re-queued.
    pub async fn recover(&self, cid: Option<CidKey>) -> Result<Vec<CidKey>, TrackerStopped> {
        self.ask(|reply| Command::Recover { cid, reply }).await
    }

    /// Asks for a full comparison with the node soon.
    pub async fn sync(&self) -> Result<(), TrackerStopped> {
        self.tx
            .send(Command::Sync)
            .await
            .map_err(|_| TrackerStopped)
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Unwritten managed-set changes before findings wait for a flush.
const MAX_UNWRITTEN: usize = 65_536;
/// Periodic full comparisons take at most 1/`FULL_DUTY` of the time.
const FULL_DUTY: i64 = 10;

/// Starts the tracker for peer `me`. `applied` changes whenever the local
/// state applies log entries (the changed pins are compared shortly).
/// Fails only when the managed-pins file cannot be opened.
pub fn spawn(
    me: String,
    store: StateStore,
    backend: Arc<dyn IpfsBackend>,
    config: TrackerConfig,
    applied: watch::Receiver<u64>,
    cancel: CancellationToken,
    tasks: &TaskTracker,
) -> Result<TrackerHandle, ManagedError> {
    let managed = Managed::open(config.managed_path.as_deref())?;
    // A peer without an IPFS node (`ipfs.backend = none`) runs consensus
    // only: it owes the node nothing, so it keeps no operation per pin
    // (which would all fail and retry forever); pins allocated to it report
    // `pin_error` with the reason, computed when asked.
    let consensus_only = backend.kind() == crate::ipfs::NoBackend.kind();
    let backend_error = consensus_only.then(|| IpfsError::NotConfigured.to_string());
    let (tx, rx) = mpsc::channel(64);
    let (job_tx, job_rx) = mpsc::channel(4);
    let actor = Tracker {
        me,
        store,
        backend,
        config,
        book: Book::default(),
        managed,
        inflight: JoinSet::new(),
        consensus_only,
        backend_error,
        synced_ms: 0,
        held: 0,
        jobs: JoinSet::new(),
        job_tx,
        job_rx,
        job: None,
        cursor: None,
        dirty: false,
        recheck: HashSet::new(),
        next_full_ms: 0,
        walk: 0,
        flush: None,
    };
    tasks.spawn(actor.run(rx, applied, cancel));
    Ok(TrackerHandle { tx })
}

/// The comparison running in the background.
enum Job {
    Incremental,
    Full(Full),
}

struct Full {
    /// Marks the ops of pins this comparison found wanted.
    seen: u64,
    /// CIDs whose managed state changed since the walk's snapshot: their
    /// findings are stale; they are compared again afterwards.
    touched: HashSet<CidKey>,
    backend_ok: bool,
    started: std::time::Instant,
}

struct Tracker {
    me: String,
    store: StateStore,
    backend: Arc<dyn IpfsBackend>,
    config: TrackerConfig,
    book: Book,
    managed: Managed,
    inflight: JoinSet<(CidKey, OpKind, Result<(), IpfsError>)>,
    /// No IPFS node: no comparisons, no operations.
    consensus_only: bool,
    backend_error: Option<String>,
    synced_ms: i64,
    /// Pins on the node at the last listing, adjusted by ops since.
    held: u64,
    jobs: JoinSet<()>,
    job_tx: mpsc::Sender<JobMsg>,
    job_rx: mpsc::Receiver<JobMsg>,
    job: Option<Job>,
    /// Position in the state's change feed (`None` before the first full
    /// comparison).
    cursor: Option<u64>,
    /// The state applied entries since the last incremental sync.
    dirty: bool,
    /// CIDs to compare at the next incremental sync.
    recheck: HashSet<CidKey>,
    next_full_ms: i64,
    walk: u64,
    flush: Option<JoinHandle<Result<(), redb::Error>>>,
}

async fn flushed(f: &mut Option<JoinHandle<Result<(), redb::Error>>>) -> bool {
    match f {
        Some(h) => matches!(h.await, Ok(Ok(()))),
        None => std::future::pending().await,
    }
}

impl Tracker {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        mut applied: watch::Receiver<u64>,
        cancel: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Findings wait while too many managed changes are unwritten.
            let accepting = self.managed.unwritten_len() < MAX_UNWRITTEN;
            tokio::select! {
                _ = cancel.cancelled() => break,
                cmd = rx.recv() => match cmd {
                    None => break,
                    Some(c) => self.command(c),
                },
                Some(done) = self.inflight.join_next(), if !self.inflight.is_empty() => {
                    if let Ok((cid, kind, result)) = done {
                        self.finished(cid, kind, result);
                    }
                    self.schedule();
                }
                Some(msg) = self.job_rx.recv(), if accepting => {
                    self.job_msg(msg);
                    self.schedule();
                }
                ok = flushed(&mut self.flush), if self.flush.is_some() => {
                    self.flush = None;
                    if !ok {
                        tracing::warn!("cannot write the tracker's managed-pins file; retrying");
                    }
                    self.managed.flushed(ok);
                }
                changed = applied.changed() => {
                    if changed.is_err() {
                        // The state went away: keep serving statuses, stop syncing on changes.
                        applied = watch::channel(0).1;
                    }
                    self.dirty = true;
                }
                _ = tick.tick() => {
                    let now = now_ms();
                    self.start_job(now, &cancel);
                    self.book.requeue_due(now);
                    self.schedule();
                }
            }
            if self.flush.is_none()
                && let Some(f) = self.managed.start_flush()
            {
                self.flush = Some(tokio::task::spawn_blocking(move || f.run()));
            }
        }
        self.shutdown().await;
    }

    /// Stops operations and comparisons and writes the managed set, so the
    /// file is closed when the tracker's task ends.
    async fn shutdown(mut self) {
        self.inflight.abort_all();
        self.job_rx.close();
        while self.jobs.join_next().await.is_some() {}
        if self.flush.is_some() {
            let ok = flushed(&mut self.flush).await;
            self.managed.flushed(ok);
        }
        if let Some(f) = self.managed.start_flush() {
            let ok = matches!(
                tokio::task::spawn_blocking(move || f.run()).await,
                Ok(Ok(()))
            );
            if !ok {
                tracing::warn!("cannot write the tracker's managed-pins file at shutdown");
            }
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::View(reply) => {
                let _ = reply.send(TrackerView {
                    pin_queue: self.book.pin_queue(),
                    pinned: self.held,
                });
            }
            Command::Statuses { queries, reply } => {
                let _ = reply.send(self.statuses(&queries));
            }
            Command::Recover { cid, reply } => {
                let n = self.book.recover(cid, now_ms());
                self.schedule();
                let _ = reply.send(n);
            }
            Command::Sync => self.next_full_ms = 0,
        }
    }

    fn statuses(&self, queries: &[StatusQuery]) -> Vec<LocalStatus> {
        // Only pins wanted here without an operation need the managed set.
        let asks = |q: &StatusQuery| {
            (q.gone || q.here && !q.expired) && !self.book.ops.contains_key(&q.cid)
        };
        let managed = self
            .managed
            .contains_all(queries.iter().filter(|q| asks(q)).map(|q| &q.cid))
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the tracker's managed-pins file");
                Vec::new()
            });
        let mut managed = managed.into_iter();
        queries
            .iter()
            .map(|q| {
                let m = asks(q) && managed.next().unwrap_or(false);
                let mut s = self
                    .book
                    .status(q, m, self.backend_error.as_deref(), self.synced_ms);
                // Pinned once this peer would remember, after a crash, that
                // the pin is its own to release.
                if s.status == TrackerStatus::Pinned && self.managed.recording(&q.cid) {
                    s.status = TrackerStatus::Pinning;
                }
                s
            })
            .collect()
    }

    /// Starts a comparison unless one runs: a full one when due, else the
    /// changed pins.
    fn start_job(&mut self, now: i64, cancel: &CancellationToken) {
        if self.job.is_some() || self.consensus_only {
            return;
        }
        if now >= self.next_full_ms {
            self.start_full(now, cancel);
        } else if self.cursor.is_some() && (self.dirty || !self.recheck.is_empty()) {
            self.start_incremental(now);
        }
    }

    fn start_full(&mut self, now: i64, cancel: &CancellationToken) {
        self.next_full_ms = now + self.config.recheck_interval.as_millis() as i64;
        let snapshot = match self.managed.snapshot() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the tracker's managed-pins file");
                return;
            }
        };
        self.walk += 1;
        self.job = Some(Job::Full(Full {
            seen: self.walk,
            touched: self.managed.unwritten_cids().copied().collect(),
            backend_ok: false,
            started: std::time::Instant::now(),
        }));
        let walk = FullWalk {
            reader: self.reader(now),
            backend: Arc::clone(&self.backend),
            tx: self.job_tx.clone(),
            cancel: cancel.clone(),
        };
        self.jobs.spawn(walk.run(snapshot));
    }

    fn start_incremental(&mut self, now: i64) {
        let Some(cursor) = self.cursor else { return };
        self.dirty = false;
        self.job = Some(Job::Incremental);
        let recheck: Vec<CidKey> = self.recheck.drain().collect();
        let (reader, tx) = (self.reader(now), self.job_tx.clone());
        self.jobs
            .spawn(jobs::read_changes(reader, cursor, recheck, tx));
    }

    fn reader(&self, now: i64) -> Reader {
        Reader {
            store: self.store.clone(),
            me: self.me.clone(),
            default: self.config.default_replication,
            now,
        }
    }

    fn manage(&mut self, cid: CidKey, m: Managing) {
        match m {
            Managing::Keep => {}
            Managing::Adopt => self.managed.insert(cid),
            Managing::Forget => self.managed.remove(cid),
        }
    }

    fn job_msg(&mut self, msg: JobMsg) {
        let now = now_ms();
        let repair = self.config.repair_drift;
        match msg {
            JobMsg::Listed(r) => {
                match r {
                    Ok(n) => {
                        self.held = n;
                        self.backend_error = None;
                        if let Some(Job::Full(full)) = &mut self.job {
                            full.backend_ok = true;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "pin ls failed; comparing with the managed pins");
                        self.backend_error = Some(e);
                    }
                }
                self.synced_ms = now;
            }
            JobMsg::Findings(list) => {
                let Some(Job::Full(full)) = &self.job else {
                    return;
                };
                let (seen, backend_ok) = (full.seen, full.backend_ok);
                for f in list {
                    if let Some(Job::Full(full)) = &self.job
                        && full.touched.contains(&f.cid)
                    {
                        self.recheck.insert(f.cid);
                        continue;
                    }
                    let m = self.book.compare(
                        f.cid,
                        f.wanted.as_ref(),
                        Some(f.held),
                        f.managed,
                        backend_ok,
                        repair,
                        seen,
                        now,
                    );
                    self.manage(f.cid, m);
                }
            }
            JobMsg::Walked { cursor } => {
                if let Some(Job::Full(full)) = self.job.take() {
                    self.book.drop_unwanted(full.seen, &full.touched);
                    let took = full.started.elapsed().as_millis() as i64;
                    // Unless one was asked for meanwhile (`Sync`).
                    if self.next_full_ms > 0 {
                        self.next_full_ms = self.next_full_ms.max(now + took * (FULL_DUTY - 1));
                    }
                    tracing::debug!(
                        took_ms = took,
                        next_in_ms = self.next_full_ms - now,
                        held = self.held,
                        ops = self.book.ops.len(),
                        "full comparison with the node done"
                    );
                    self.recheck.extend(full.touched);
                }
                // Catch up with what the state applied since the walk began.
                self.cursor = Some(cursor);
                self.dirty = true;
            }
            JobMsg::Changed { facts, next, more } => {
                self.job = None;
                let managed = match self.managed.contains_all(facts.iter().map(|(c, _)| c)) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the tracker's managed-pins file");
                        self.next_full_ms = now + 1000;
                        return;
                    }
                };
                let backend_ok = self.backend_error.is_none();
                for ((cid, w), m) in facts.iter().zip(managed) {
                    let r = self.book.compare(
                        *cid,
                        w.as_ref(),
                        None,
                        m,
                        backend_ok,
                        repair,
                        self.walk,
                        now,
                    );
                    self.manage(*cid, r);
                }
                self.cursor = Some(next);
                self.dirty |= more;
            }
            JobMsg::Truncated => {
                self.job = None;
                self.next_full_ms = now;
            }
            JobMsg::Failed(e) => {
                tracing::warn!(error = %e, "tracker comparison failed; comparing everything again soon");
                if let Some(Job::Full(full)) = self.job.take() {
                    self.recheck.extend(full.touched);
                }
                self.next_full_ms = now + 1000;
            }
        }
    }

    fn schedule(&mut self) {
        while self.inflight.len() < self.config.concurrency.max(1) {
            let Some((cid, op)) = self.book.next_to_start(now_ms()) else {
                return;
            };
            let backend = Arc::clone(&self.backend);
            let kind = op.kind;
            let opts = PinOpts {
                recursive: op.recursive,
                max_depth: op.max_depth,
                progress_timeout: self.config.progress_timeout,
                origins: op.origins,
            };
            self.inflight.spawn(async move {
                let r = match kind {
                    OpKind::Pin => backend.pin(cid, opts, None).await,
                    OpKind::Unpin => match backend.unpin(cid, opts.recursive).await {
                        Err(IpfsError::NotPinned { .. }) => Ok(()),
                        other => other,
                    },
                };
                (cid, kind, r)
            });
        }
    }

    fn finished(&mut self, cid: CidKey, kind: OpKind, result: Result<(), IpfsError>) {
        let now = now_ms();
        let error = match result {
            Ok(()) => {
                match kind {
                    OpKind::Pin => {
                        self.managed.insert(cid);
                        self.book.unexpected.remove(&cid);
                        self.held += 1;
                    }
                    OpKind::Unpin => {
                        self.managed.remove(cid);
                        self.held = self.held.saturating_sub(1);
                    }
                }
                self.synced_ms = now;
                None
            }
            Err(e) => {
                tracing::debug!(cid = %cid, error = %e, ?kind, "ipfs operation failed");
                Some(e.to_string())
            }
        };
        let retry = (self.config.retry_base, self.config.retry_max);
        if self.book.finished(cid, kind, error, retry, now) {
            self.recheck.insert(cid);
        }
        if let Some(Job::Full(full)) = &mut self.job {
            full.touched.insert(cid);
        }
    }
}

#[cfg(test)]
mod actor_tests;
#[cfg(test)]
mod tests;
