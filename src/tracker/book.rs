//! The tracker's books: the pin and unpin operations it owes the node
//! (queued, in flight, failed and waiting to retry), the pins it knows
//! went missing, and the rules that turn one CID's facts — wanted here?
//! held by the node? managed by this peer? — into operations, and its
//! state into a status.
//!
//! Plain data, no I/O, no clock (time is a parameter): the actor in
//! `mod.rs` owns a `Book` and does the I/O; tests drive it directly.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use super::walk::Wanted;
use super::{LocalStatus, StatusQuery};
use crate::manifest::CidKey;
use crate::wire::TrackerStatus;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OpKind {
    Pin,
    Unpin,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Queued,
    InFlight,
    Failed { error: String, next_at_ms: i64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Op {
    pub kind: OpKind,
    pub phase: Phase,
    pub attempts: u32,
    pub since_ms: i64,
    pub priority: bool,
    pub recursive: bool,
    pub max_depth: Option<u32>,
    pub origins: Vec<String>,
    /// The last full comparison that found this pin wanted: one that did
    /// not drops it when queued (see [`Book::drop_unwanted`]).
    pub seen: u64,
    /// A comparison wanted something else while it was in flight: compare
    /// the CID again when it ends.
    pub stale: bool,
}

impl Op {
    fn pin(w: &Wanted, priority: bool, now: i64, seen: u64) -> Self {
        Op {
            kind: OpKind::Pin,
            phase: Phase::Queued,
            attempts: 0,
            since_ms: now,
            priority,
            recursive: w.recursive,
            max_depth: w.max_depth,
            origins: w.origins.clone(),
            seen,
            stale: false,
        }
    }

    fn unpin(now: i64, seen: u64) -> Self {
        Op {
            kind: OpKind::Unpin,
            phase: Phase::Queued,
            attempts: 0,
            since_ms: now,
            priority: true,
            recursive: true,
            max_depth: None,
            origins: Vec::new(),
            seen,
            stale: false,
        }
    }

    pub(super) fn in_flight(&self) -> bool {
        matches!(self.phase, Phase::InFlight)
    }
}

/// What a comparison decided about the managed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Managing {
    /// No change.
    Keep,
    /// The node holds a pin wanted here: manage it.
    Adopt,
    /// Released and gone from the node: forget it.
    Forget,
}

/// Operations and missing pins.
#[derive(Debug, Default)]
pub(super) struct Book {
    pub ops: HashMap<CidKey, Op>,
    /// Managed pins that vanished from the node behind our back.
    pub unexpected: HashSet<CidKey>,
    pub queue_new: VecDeque<CidKey>,
    pub queue_retry: VecDeque<CidKey>,
    /// Failed operations by retry time; entries whose op moved on are
    /// skipped when they come up.
    retries: BinaryHeap<Reverse<(i64, CidKey)>>,
}

impl Book {
    /// Applies one CID's facts: `wanted` here (with options), `held` by the
    /// node (`None`: not listed, as between full comparisons — a managed
    /// pin not known missing counts as held), `managed` by this peer.
    /// `backend_ok`: the node's list is current. `seen` marks the ops of
    /// wanted pins (the running full comparison).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn compare(
        &mut self,
        cid: CidKey,
        wanted: Option<&Wanted>,
        held: Option<bool>,
        managed: bool,
        backend_ok: bool,
        repair_drift: bool,
        seen: u64,
        now: i64,
    ) -> Managing {
        let Some(w) = wanted else {
            return self.not_wanted(cid, held, managed, now, seen);
        };
        let held = held.unwrap_or(managed && !self.unexpected.contains(&cid));
        if held {
            self.unexpected.remove(&cid);
            if let Some(op) = self.ops.get_mut(&cid) {
                if op.kind == OpKind::Unpin && !op.in_flight() {
                    self.ops.remove(&cid);
                } else {
                    op.seen = seen;
                    op.stale |= op.kind == OpKind::Unpin;
                }
            }
            return if managed {
                Managing::Keep
            } else {
                Managing::Adopt
            };
        }
        let lost = managed && backend_ok;
        if lost && self.unexpected.insert(cid) {
            tracing::warn!(cid = %cid, "pin disappeared from ipfs behind our back");
        }
        match self.ops.get_mut(&cid) {
            Some(op) if op.kind == OpKind::Pin => {
                op.seen = seen;
                return Managing::Keep;
            }
            Some(op) if op.in_flight() => {
                op.stale = true;
                return Managing::Keep;
            }
            _ => {}
        }
        if lost && !repair_drift {
            return Managing::Keep;
        }
        self.ops.insert(cid, Op::pin(w, !lost, now, seen));
        if lost {
            self.queue_retry.push_back(cid);
        } else {
            self.queue_new.push_back(cid);
        }
        Managing::Keep
    }

    fn not_wanted(
        &mut self,
        cid: CidKey,
        held: Option<bool>,
        managed: bool,
        now: i64,
        seen: u64,
    ) -> Managing {
        // Between full comparisons a managed pin counts as held unless it
        // is known missing.
        let held = held.unwrap_or(!self.unexpected.contains(&cid));
        self.unexpected.remove(&cid);
        let op = self.ops.get_mut(&cid);
        let in_flight = op.as_ref().is_some_and(|op| op.in_flight());
        if let Some(op) = op
            && op.in_flight()
        {
            op.stale = true;
        }
        if !managed {
            // Not ours: a pin queued for it is no longer wanted.
            if self
                .ops
                .get(&cid)
                .is_some_and(|op| op.kind == OpKind::Pin && !in_flight)
            {
                self.ops.remove(&cid);
            }
            return Managing::Keep;
        }
        // Released: unpin what this peer pinned for the cluster.
        if !held {
            if in_flight {
                return Managing::Keep;
            }
            self.ops.remove(&cid);
            return Managing::Forget;
        }
        let busy = in_flight
            || self
                .ops
                .get(&cid)
                .is_some_and(|op| op.kind == OpKind::Unpin);
        if !busy {
            self.ops.insert(cid, Op::unpin(now, seen));
            self.queue_new.push_back(cid);
        }
        Managing::Keep
    }

    /// After a full comparison `seen`: drops queued and failed pins it did
    /// not find wanted, except for CIDs in `skip` (changed meanwhile).
    pub(super) fn drop_unwanted(&mut self, seen: u64, skip: &HashSet<CidKey>) {
        self.ops.retain(|cid, op| {
            op.kind == OpKind::Unpin || op.in_flight() || op.seen == seen || skip.contains(cid)
        });
    }

    /// Moves failed operations whose retry time came to the retry queue.
    pub(super) fn requeue_due(&mut self, now: i64) {
        while let Some(Reverse((at, cid))) = self.retries.peek().copied() {
            if at > now {
                return;
            }
            self.retries.pop();
            if let Some(op) = self.ops.get_mut(&cid)
                && matches!(op.phase, Phase::Failed { next_at_ms, .. } if next_at_ms == at)
            {
                op.phase = Phase::Queued;
                self.queue_retry.push_back(cid);
            }
        }
    }

    /// Makes failed operations (one CID's, or all) due now; returns their
    /// CIDs.
    pub(super) fn recover(&mut self, cid: Option<CidKey>, now: i64) -> Vec<CidKey> {
        let mut due = Vec::new();
        let mut retry = |c: CidKey, op: &mut Op| {
            if let Phase::Failed { next_at_ms, .. } = &mut op.phase {
                *next_at_ms = now;
                due.push(c);
            }
        };
        match cid {
            Some(c) => {
                if let Some(op) = self.ops.get_mut(&c) {
                    retry(c, op);
                }
            }
            None => {
                for (c, op) in self.ops.iter_mut() {
                    retry(*c, op);
                }
            }
        }
        for c in &due {
            self.retries.push(Reverse((now, *c)));
        }
        self.requeue_due(now);
        due
    }

    /// The next queued operation to start (pins and unpins first, retries
    /// after), now in flight.
    pub(super) fn next_to_start(&mut self, now: i64) -> Option<(CidKey, Op)> {
        loop {
            let cid = self
                .queue_new
                .pop_front()
                .or_else(|| self.queue_retry.pop_front())?;
            let Some(op) = self.ops.get_mut(&cid) else {
                continue;
            };
            if !matches!(op.phase, Phase::Queued) {
                continue;
            }
            op.phase = Phase::InFlight;
            op.since_ms = now;
            return Some((cid, op.clone()));
        }
    }

    /// An operation ended (`error`: how it failed; failures retry after
    /// `retry` = (base, max) backoff). Returns whether its CID must be
    /// compared again (a comparison wanted something else while it was in
    /// flight).
    pub(super) fn finished(
        &mut self,
        cid: CidKey,
        kind: OpKind,
        error: Option<String>,
        retry: (Duration, Duration),
        now: i64,
    ) -> bool {
        let Some(op) = self.ops.get_mut(&cid).filter(|op| op.kind == kind) else {
            return false;
        };
        let stale = std::mem::take(&mut op.stale);
        match error {
            None => {
                self.ops.remove(&cid);
            }
            Some(error) => {
                op.attempts += 1;
                let factor = 2u32.saturating_pow(op.attempts.saturating_sub(1).min(20));
                let (base, max) = retry;
                let delay = base.saturating_mul(factor).min(max);
                let at = now + delay.as_millis() as i64;
                op.phase = Phase::Failed {
                    error,
                    next_at_ms: at,
                };
                op.since_ms = now;
                self.retries.push(Reverse((at, cid)));
            }
        }
        stale
    }

    /// Pin operations waiting or in flight (the `pinqueue` metric).
    pub(super) fn pin_queue(&self) -> u64 {
        self.ops
            .iter()
            .filter(|(cid, o)| {
                o.kind == OpKind::Pin
                    && match o.phase {
                        Phase::Queued => !self.unexpected.contains(cid),
                        Phase::InFlight => true,
                        Phase::Failed { .. } => false,
                    }
            })
            .count() as u64
    }

    /// This peer's status for one pin; `managed` says whether this peer
    /// manages it.
    pub(super) fn status(
        &self,
        q: &StatusQuery,
        managed: bool,
        backend_error: Option<&str>,
        synced_ms: i64,
    ) -> LocalStatus {
        let base = |status| LocalStatus {
            status,
            error: String::new(),
            attempt_count: 0,
            timestamp_ms: synced_ms,
            priority_pin: false,
        };
        if let Some(op) = self.ops.get(&q.cid) {
            let (status, error) = match (&op.phase, op.kind) {
                (Phase::Queued, OpKind::Pin) if self.unexpected.contains(&q.cid) => {
                    (TrackerStatus::UnexpectedlyUnpinned, String::new())
                }
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
            return LocalStatus {
                status,
                error,
                attempt_count: op.attempts,
                timestamp_ms: op.since_ms,
                priority_pin: op.priority,
            };
        }
        if q.gone {
            // Still on the node: its unpin is about to be queued.
            return base(if managed {
                TrackerStatus::UnpinQueued
            } else {
                TrackerStatus::Unpinned
            });
        }
        if q.expired {
            return base(TrackerStatus::Unpinned);
        }
        if !q.here {
            return base(TrackerStatus::Remote);
        }
        let missing = self.unexpected.contains(&q.cid);
        if managed && !missing {
            // The node could not list its pins: what it holds is unknown,
            // so the last known list is not reported as pinned.
            match backend_error {
                Some(e) => LocalStatus {
                    error: e.to_string(),
                    ..base(TrackerStatus::ClusterError)
                },
                None => base(TrackerStatus::Pinned),
            }
        } else if missing {
            base(TrackerStatus::UnexpectedlyUnpinned)
        } else if let Some(e) = backend_error {
            LocalStatus {
                error: e.to_string(),
                ..base(TrackerStatus::PinError)
            }
        } else {
            base(TrackerStatus::PinQueued)
        }
    }
}
