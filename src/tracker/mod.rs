//! The per-peer stateless pin tracker: makes this peer's IPFS node hold
//! exactly the pins the shared state allocates to it, and says how that is
//! going (DESIGN §6).
//!
//! "Stateless": nothing is persisted. Each sync compares the allocations in
//! the replicated state with the node's own pin list and queues the
//! difference; statuses are derived from that comparison and from the
//! operations in flight. Pins go before retries; failures retry with
//! exponential backoff; a pin that vanished from IPFS behind our back is
//! reported `unexpectedly_unpinned` and pinned again (drift repair).
//!
//! It must not write to the shared state and must never crash on what the
//! backend says: a backend error only ever becomes a status.

pub mod global;
pub mod rpc;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::wire::TrackerStatus;
pub use global::StatusService;

use crate::consensus::StateStore;
use crate::ipfs::{IpfsBackend, IpfsError, PinLsFilter, PinOpts};
use crate::manifest::{CidKey, PinMode, ReplicationFactors};
use crate::state::StatePin;

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
    /// Full comparison with the node's pin list at least this often.
    pub recheck_interval: Duration,
    /// Re-pin what disappeared from IPFS behind our back.
    pub repair_drift: bool,
    /// The cluster's default replication (for pins with 0/0).
    pub default_replication: ReplicationFactors,
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
        }
    }
}

/// Whether `me` must pin `pin`: every peer for replication -1 (explicitly
/// or through the cluster default), otherwise the allocated peers.
pub fn allocated_here(pin: &StatePin, me: &str, default: ReplicationFactors) -> bool {
    let eff = pin.effective();
    let r = eff.options.replication;
    let r = if r.min == 0 && r.max == 0 { default } else { r };
    if r.min == -1 || (r.max == -1 && pin.allocations.is_empty()) {
        return true;
    }
    pin.allocations.iter().any(|p| p == me)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    Pin,
    Unpin,
}

#[derive(Clone, Debug)]
enum Phase {
    Queued,
    InFlight,
    Failed { error: String, next_at_ms: i64 },
}

#[derive(Clone, Debug)]
struct Op {
    kind: OpKind,
    phase: Phase,
    attempts: u32,
    since_ms: i64,
    priority: bool,
    recursive: bool,
    origins: Vec<String>,
}

/// What the tracker knows right now, for status answers. Cheap to share.
#[derive(Clone, Debug, Default)]
pub struct TrackerView {
    ops: HashMap<CidKey, OpSummary>,
    pinned: Arc<HashSet<CidKey>>,
    unexpected: HashSet<CidKey>,
    backend_error: Option<String>,
    synced_ms: i64,
}

#[derive(Clone, Debug)]
struct OpSummary {
    status: TrackerStatus,
    error: String,
    attempts: u32,
    since_ms: i64,
    priority: bool,
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

impl TrackerView {
    /// Pin operations waiting or in flight (the `pinqueue` metric).
    pub fn pin_queue(&self) -> u64 {
        self.ops
            .values()
            .filter(|o| matches!(o.status, TrackerStatus::PinQueued | TrackerStatus::Pinning))
            .count() as u64
    }

    /// CIDs pinned on this peer's IPFS node (the `numpin` metric).
    pub fn pinned_count(&self) -> u64 {
        self.pinned.len() as u64
    }

    /// This peer's status for `pin`.
    pub fn status_of(
        &self,
        pin: &StatePin,
        me: &str,
        default: ReplicationFactors,
        now_ms: i64,
    ) -> LocalStatus {
        let base = |status| LocalStatus {
            status,
            error: String::new(),
            attempt_count: 0,
            timestamp_ms: self.synced_ms,
            priority_pin: false,
        };
        if let Some(op) = self.ops.get(&pin.cid) {
            return LocalStatus {
                status: op.status,
                error: op.error.clone(),
                attempt_count: op.attempts,
                timestamp_ms: op.since_ms,
                priority_pin: op.priority,
            };
        }
        let expired = pin.expire_at_ms().is_some_and(|at| at <= now_ms);
        if !allocated_here(pin, me, default) || expired {
            return if self.pinned.contains(&pin.cid) && !expired {
                base(TrackerStatus::Remote)
            } else if expired {
                base(TrackerStatus::Unpinned)
            } else {
                base(TrackerStatus::Remote)
            };
        }
        if self.pinned.contains(&pin.cid) {
            base(TrackerStatus::Pinned)
        } else if self.unexpected.contains(&pin.cid) {
            base(TrackerStatus::UnexpectedlyUnpinned)
        } else if let Some(e) = &self.backend_error {
            LocalStatus {
                error: e.clone(),
                ..base(TrackerStatus::PinError)
            }
        } else {
            base(TrackerStatus::PinQueued)
        }
    }
}

enum Command {
    View(oneshot::Sender<TrackerView>),
    Recover {
        cid: Option<CidKey>,
        reply: oneshot::Sender<usize>,
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
    /// A snapshot of what the tracker knows.
    pub async fn view(&self) -> Result<TrackerView, TrackerStopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::View(reply))
            .await
            .map_err(|_| TrackerStopped)?;
        rx.await.map_err(|_| TrackerStopped)
    }

    /// Retries failed operations now (one CID, or all); returns how many.
    pub async fn recover(&self, cid: Option<CidKey>) -> Result<usize, TrackerStopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Recover { cid, reply })
            .await
            .map_err(|_| TrackerStopped)?;
        rx.await.map_err(|_| TrackerStopped)
    }

    /// Asks for a comparison with the node soon.
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

/// Starts the tracker for peer `me`. `applied` changes whenever the local
/// state applies log entries (a sync follows shortly).
pub fn spawn(
    me: String,
    store: StateStore,
    backend: Arc<dyn IpfsBackend>,
    config: TrackerConfig,
    applied: watch::Receiver<u64>,
    cancel: CancellationToken,
    tasks: &TaskTracker,
) -> TrackerHandle {
    let (tx, rx) = mpsc::channel(64);
    let actor = Tracker {
        me,
        store,
        backend,
        config,
        ops: HashMap::new(),
        pinned: Arc::new(HashSet::new()),
        managed: HashSet::new(),
        unexpected: HashSet::new(),
        queue_new: VecDeque::new(),
        queue_retry: VecDeque::new(),
        inflight: JoinSet::new(),
        backend_error: None,
        synced_ms: 0,
        dirty: true,
        next_full_ms: 0,
        next_sync_ms: 0,
        failed: 0,
    };
    tasks.spawn(actor.run(rx, applied, cancel));
    TrackerHandle { tx }
}

struct Tracker {
    me: String,
    store: StateStore,
    backend: Arc<dyn IpfsBackend>,
    config: TrackerConfig,
    ops: HashMap<CidKey, Op>,
    pinned: Arc<HashSet<CidKey>>,
    /// CIDs this peer pinned (or found pinned) while they were allocated
    /// here: the only ones it will ever unpin or call unexpectedly unpinned.
    managed: HashSet<CidKey>,
    unexpected: HashSet<CidKey>,
    queue_new: VecDeque<CidKey>,
    queue_retry: VecDeque<CidKey>,
    inflight: JoinSet<(CidKey, OpKind, Result<(), IpfsError>)>,
    backend_error: Option<String>,
    synced_ms: i64,
    dirty: bool,
    next_full_ms: i64,
    next_sync_ms: i64,
    /// Ops in `Phase::Failed` (so idle ticks skip the scan).
    failed: usize,
}

/// What the state wants pinned here.
struct Wanted {
    recursive: bool,
    origins: Vec<String>,
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
                changed = applied.changed() => {
                    if changed.is_err() {
                        // The state went away: keep serving statuses, stop syncing on changes.
                        applied = watch::channel(0).1;
                    }
                    self.dirty = true;
                }
                _ = tick.tick() => {
                    let now = now_ms();
                    // A sync walks the whole state and pin list: while the
                    // state changes fast (a big revision arriving), run it
                    // at most every max(500 ms, 2 × its own duration).
                    if (self.dirty && now >= self.next_sync_ms) || now >= self.next_full_ms {
                        self.dirty = false;
                        self.next_full_ms = now + self.config.recheck_interval.as_millis() as i64;
                        let started = std::time::Instant::now();
                        self.sync().await;
                        let took = started.elapsed().as_millis() as i64;
                        self.next_sync_ms = now_ms() + (2 * took).max(500);
                    }
                    self.requeue_due(now);
                    self.schedule();
                }
            }
        }
        self.inflight.abort_all();
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::View(reply) => {
                let _ = reply.send(self.view());
            }
            Command::Recover { cid, reply } => {
                let mut n = 0;
                for (k, op) in self.ops.iter_mut() {
                    if cid.is_some_and(|c| c != *k) {
                        continue;
                    }
                    if let Phase::Failed { next_at_ms, .. } = &mut op.phase {
                        *next_at_ms = 0;
                        n += 1;
                    }
                }
                self.requeue_due(now_ms());
                self.schedule();
                let _ = reply.send(n);
            }
            Command::Sync => self.dirty = true,
        }
    }

    fn view(&self) -> TrackerView {
        let ops = self
            .ops
            .iter()
            .map(|(cid, op)| {
                let (status, error) = match (&op.phase, op.kind) {
                    (Phase::Queued, OpKind::Pin) => (TrackerStatus::PinQueued, String::new()),
                    (Phase::InFlight, OpKind::Pin) => (TrackerStatus::Pinning, String::new()),
                    (Phase::Failed { error, .. }, OpKind::Pin) => {
                        (TrackerStatus::PinError, error.clone())
                    }
                    (Phase::Queued, OpKind::Unpin) => (TrackerStatus::UnpinQueued, String::new()),
                    (Phase::InFlight, OpKind::Unpin) => (TrackerStatus::Unpinning, String::new()),
                    (Phase::Failed { error, .. }, OpKind::Unpin) => {
                        (TrackerStatus::UnpinError, error.clone())
                    }
                };
                let status = if op.kind == OpKind::Pin
                    && self.unexpected.contains(cid)
                    && status == TrackerStatus::PinQueued
                {
                    TrackerStatus::UnexpectedlyUnpinned
                } else {
                    status
                };
                (
                    *cid,
                    OpSummary {
                        status,
                        error,
                        attempts: op.attempts,
                        since_ms: op.since_ms,
                        priority: op.priority,
                    },
                )
            })
            .collect();
        TrackerView {
            ops,
            pinned: Arc::clone(&self.pinned),
            unexpected: self.unexpected.clone(),
            backend_error: self.backend_error.clone(),
            synced_ms: self.synced_ms,
        }
    }

    async fn wanted(&self) -> Result<HashMap<CidKey, Wanted>, String> {
        let store = self.store.clone();
        let me = self.me.clone();
        let default = self.config.default_replication;
        let now = now_ms();
        tokio::task::spawn_blocking(move || {
            let mut out = HashMap::new();
            store
                .for_each_pin(|pin| {
                    let expired = pin.expire_at_ms().is_some_and(|at| at <= now);
                    if !expired && allocated_here(&pin, &me, default) {
                        let eff = pin.effective();
                        out.insert(
                            pin.cid,
                            Wanted {
                                recursive: eff.options.mode == PinMode::Recursive,
                                origins: eff.options.origins.clone(),
                            },
                        );
                    }
                    true
                })
                .map(|()| out)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    async fn node_pins(&self) -> Result<HashSet<CidKey>, IpfsError> {
        use futures::StreamExt;
        // Recursive and direct only: `all` would walk every pinned DAG to
        // list indirect blocks, which the tracker never needs.
        let mut out = HashSet::new();
        for filter in [PinLsFilter::Recursive, PinLsFilter::Direct] {
            let mut stream = self.backend.pin_ls(filter);
            while let Some(item) = stream.next().await {
                out.insert(item?.cid);
            }
        }
        Ok(out)
    }

    /// Compares the state's wishes with the node and queues the difference.
    async fn sync(&mut self) {
        let wanted = match self.wanted().await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "tracker cannot read the local state");
                return;
            }
        };
        match self.node_pins().await {
            Ok(mut pins) => {
                // Operations finishing during the listing are authoritative.
                for (cid, op) in &self.ops {
                    if matches!(op.phase, Phase::InFlight) {
                        if self.pinned.contains(cid) {
                            pins.insert(*cid);
                        } else {
                            pins.remove(cid);
                        }
                    }
                }
                self.pinned = Arc::new(pins);
                self.backend_error = None;
            }
            Err(e) => {
                tracing::debug!(error = %e, "pin ls failed; using the last known list");
                self.backend_error = Some(e.to_string());
            }
        }
        self.synced_ms = now_ms();
        let now = self.synced_ms;

        for (cid, w) in &wanted {
            if self.pinned.contains(cid) {
                self.managed.insert(*cid);
                self.unexpected.remove(cid);
                if self.ops.get(cid).is_some_and(|op| {
                    op.kind == OpKind::Unpin && !matches!(op.phase, Phase::InFlight)
                }) {
                    self.ops.remove(cid);
                }
                continue;
            }
            let lost = self.managed.contains(cid) && self.backend_error.is_none();
            if lost && !self.unexpected.contains(cid) {
                tracing::warn!(cid = %cid, "pin disappeared from ipfs behind our back");
                self.unexpected.insert(*cid);
            }
            match self.ops.get_mut(cid) {
                Some(op) if op.kind == OpKind::Pin => {}
                Some(op) if matches!(op.phase, Phase::InFlight) => {}
                _ => {
                    if lost && !self.config.repair_drift {
                        continue;
                    }
                    self.ops.insert(
                        *cid,
                        Op {
                            kind: OpKind::Pin,
                            phase: Phase::Queued,
                            attempts: 0,
                            since_ms: now,
                            priority: !lost,
                            recursive: w.recursive,
                            origins: w.origins.clone(),
                        },
                    );
                    if lost {
                        self.queue_retry.push_back(*cid);
                    } else {
                        self.queue_new.push_back(*cid);
                    }
                }
            }
        }
        // Pins this peer holds for the cluster that are no longer wanted here.
        let release: Vec<CidKey> = self
            .managed
            .iter()
            .filter(|c| !wanted.contains_key(c))
            .copied()
            .collect();
        for cid in release {
            self.unexpected.remove(&cid);
            if !self.pinned.contains(&cid) {
                if !self
                    .ops
                    .get(&cid)
                    .is_some_and(|op| matches!(op.phase, Phase::InFlight))
                {
                    self.ops.remove(&cid);
                    self.managed.remove(&cid);
                }
                continue;
            }
            let busy = self
                .ops
                .get(&cid)
                .is_some_and(|op| op.kind == OpKind::Unpin || matches!(op.phase, Phase::InFlight));
            if !busy {
                self.ops.insert(
                    cid,
                    Op {
                        kind: OpKind::Unpin,
                        phase: Phase::Queued,
                        attempts: 0,
                        since_ms: now,
                        priority: true,
                        recursive: true,
                        origins: Vec::new(),
                    },
                );
                self.queue_new.push_back(cid);
            }
        }
        // Queued pins the state no longer wants are dropped.
        self.ops.retain(|cid, op| {
            op.kind == OpKind::Unpin
                || matches!(op.phase, Phase::InFlight)
                || wanted.contains_key(cid)
        });
        self.failed = self
            .ops
            .values()
            .filter(|op| matches!(op.phase, Phase::Failed { .. }))
            .count();
    }

    fn requeue_due(&mut self, now: i64) {
        // Scanning every op each tick would cost O(pins) while a large
        // revision is being pinned; only scan when something failed.
        if self.failed == 0 {
            return;
        }
        for (cid, op) in self.ops.iter_mut() {
            if let Phase::Failed { next_at_ms, .. } = op.phase
                && next_at_ms <= now
            {
                op.phase = Phase::Queued;
                self.queue_retry.push_back(*cid);
                self.failed = self.failed.saturating_sub(1);
            }
        }
    }

    fn schedule(&mut self) {
        while self.inflight.len() < self.config.concurrency.max(1) {
            let Some(cid) = self
                .queue_new
                .pop_front()
                .or_else(|| self.queue_retry.pop_front())
            else {
                return;
            };
            let Some(op) = self.ops.get_mut(&cid) else {
                continue;
            };
            if !matches!(op.phase, Phase::Queued) {
                continue;
            }
            op.phase = Phase::InFlight;
            op.since_ms = now_ms();
            let backend = Arc::clone(&self.backend);
            let kind = op.kind;
            let opts = PinOpts {
                recursive: op.recursive,
                progress_timeout: self.config.progress_timeout,
                origins: op.origins.clone(),
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
        match result {
            Ok(()) => {
                let pinned = Arc::make_mut(&mut self.pinned);
                match kind {
                    OpKind::Pin => {
                        pinned.insert(cid);
                        self.managed.insert(cid);
                        self.unexpected.remove(&cid);
                    }
                    OpKind::Unpin => {
                        pinned.remove(&cid);
                        self.managed.remove(&cid);
                    }
                }
                if self.ops.get(&cid).is_some_and(|op| op.kind == kind) {
                    self.ops.remove(&cid);
                }
                self.synced_ms = now;
            }
            Err(e) => {
                tracing::debug!(cid = %cid, error = %e, ?kind, "ipfs operation failed");
                if let Some(op) = self.ops.get_mut(&cid).filter(|op| op.kind == kind) {
                    op.attempts += 1;
                    let factor = 2u32.saturating_pow(op.attempts.saturating_sub(1).min(20));
                    let delay = self
                        .config
                        .retry_base
                        .saturating_mul(factor)
                        .min(self.config.retry_max);
                    op.phase = Phase::Failed {
                        error: e.to_string(),
                        next_at_ms: now + delay.as_millis() as i64,
                    };
                    self.failed += 1;
                    op.since_ms = now;
                }
            }
        }
    }
}
