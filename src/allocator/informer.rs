//! Informers, the allocation loop and the write-time allocator (DESIGN §9,
//! docs/design/allocation.md).
//!
//! Every peer publishes its metrics (free space, pin queue length, number of
//! pins, configured tags) over gossip with a TTL, and keeps everyone's latest
//! metrics. The leader periodically checks the pins that are not replicated
//! everywhere, asks the pure allocator where they should live, and writes
//! its decisions into the log (`Command::Allocate`); followers apply the
//! recorded result and never recompute. A round reads only the pins changed
//! since the last one (the state's change feed) unless what the allocator
//! knows of the peers changed ([`Rounds`]). The leader also allocates at pin
//! time: the informer registers a [`PinAllocator`] on the node, which the
//! group commit calls with the pins a batch creates or re-places, so their
//! allocations travel in the same log entry.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{
    AllocError, AllocationRequest, AllocatorConfig, Metric, PeerMetrics, PeerState, TAG_PREFIX,
    peer_states, reallocate,
};
use crate::consensus::{ClusterNode, MAX_ENTRY_BYTES, PinAllocator, StateStore, entry_bytes};
use crate::ipfs::IpfsBackend;
use crate::manifest::CidKey;
use crate::manifest::{ReplicationFactors, ShardKind};
use crate::state::{Command, StatePin};
use crate::tracker::TrackerHandle;

/// Informer and allocation settings.
#[derive(Clone, Debug)]
pub struct InformerConfig {
    /// How often metrics are published.
    pub interval: Duration,
    /// This peer's tags (`tag:<key>` metrics).
    pub tags: BTreeMap<String, String>,
    /// How long after its metrics expire a peer keeps its allocations.
    pub grace: Duration,
    /// How often the leader checks allocations.
    pub check_interval: Duration,
    /// Allocator settings (defaults from the cluster's replication).
    pub allocator: AllocatorConfig,
    /// Most CIDs per `Allocate` log entry.
    pub batch: usize,
}

impl InformerConfig {
    /// How often a peer reports its metrics unless configured.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);

    /// Defaults for a cluster whose default replication is `default`.
    pub fn new(default: ReplicationFactors) -> Self {
        Self {
            interval: Self::DEFAULT_INTERVAL,
            tags: BTreeMap::new(),
            grace: Duration::from_secs(60),
            check_interval: Duration::from_secs(5),
            allocator: AllocatorConfig {
                default_min: default.min,
                default_max: default.max,
                ..AllocatorConfig::default()
            },
            batch: 10_000,
        }
    }
}

/// The tag (`tag:follower = "true"`) a follower's informer adds to its
/// metrics: the leader may then allocate pins to it.
pub const FOLLOWER_TAG: &str = "follower";

/// The metric a follower reports with the last index it applied.
pub const APPLIED: &str = "applied";

/// Most peers whose metrics are kept: members and followers together.
/// Past it, metrics of peers never heard before are dropped.
pub const MAX_REPORTING_PEERS: usize = 4096;

/// Gossip messages a peer may send in a burst; then one per
/// `interval / 4`. Members publish once an interval (and once more when
/// they see a newcomer); a follower flooding metrics is cut off here.
const REPORT_BURST: f64 = 4.0;

/// The peers allocation chooses from: the members, then the followers
/// that report metrics (`tag:follower = "true"`) and have not been silent
/// for longer than their metrics' lifetime plus `grace_ms`. A follower's
/// report is an allocation hint and nothing else: it never makes the
/// follower a member, nor lets it change the state.
pub fn candidates(
    view: &PeerMetrics,
    members: &[String],
    now_ms: i64,
    grace_ms: i64,
) -> Vec<String> {
    let tag = format!("{TAG_PREFIX}{FOLLOWER_TAG}");
    let mut out = members.to_vec();
    for peer in view.peers() {
        if members.iter().any(|m| m == peer) {
            continue;
        }
        let follower = view
            .get(peer, &tag)
            .is_some_and(|m| m.value == "true" && m.expire_ms.saturating_add(grace_ms) > now_ms);
        if follower {
            out.push(peer.to_owned());
        }
    }
    out
}

/// A token bucket per reporting peer.
#[derive(Default)]
struct Reports {
    buckets: std::collections::HashMap<String, (f64, i64)>,
}

impl Reports {
    /// Whether a report from `peer` at `now_ms` is taken.
    fn take(&mut self, peer: &str, now_ms: i64, refill_ms: i64) -> bool {
        if !self.buckets.contains_key(peer) && self.buckets.len() >= MAX_REPORTING_PEERS {
            // Forget peers silent for long enough to have a full bucket
            // again: they lose nothing.
            let full_after = refill_ms.saturating_mul(REPORT_BURST as i64);
            self.buckets
                .retain(|_, (_, at)| now_ms.saturating_sub(*at) < full_after);
            if self.buckets.len() >= MAX_REPORTING_PEERS {
                return false;
            }
        }
        let (tokens, at) = self
            .buckets
            .entry(peer.to_owned())
            .or_insert((REPORT_BURST, now_ms));
        let refilled = (now_ms - *at).max(0) as f64 / refill_ms.max(1) as f64;
        *tokens = (*tokens + refilled).min(REPORT_BURST);
        *at = now_ms;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn lock(m: &Mutex<PeerMetrics>) -> std::sync::MutexGuard<'_, PeerMetrics> {
    // A panic while holding this lock leaves plain data behind: keep going.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts this peer's informer and (while it leads) the allocation loop.
/// Returns the shared metric view.
pub fn spawn(
    node: ClusterNode,
    backend: Arc<dyn IpfsBackend>,
    tracker: TrackerHandle,
    config: InformerConfig,
    cancel: CancellationToken,
    tasks: &TaskTracker,
) -> Arc<Mutex<PeerMetrics>> {
    let metrics = Arc::new(Mutex::new(PeerMetrics::new()));
    let sink_metrics = Arc::clone(&metrics);
    // A peer heard from for the first time (or again after its metrics
    // expired) may have missed ours, published before it subscribed:
    // publish again at once rather than an interval later, so a fresh
    // cluster's leader soon knows every peer (allocation at pin time).
    let newcomer = Arc::new(tokio::sync::Notify::new());
    let sink_newcomer = Arc::clone(&newcomer);
    let ttl = config.interval * 2;
    let refill_ms = (config.interval / 4).as_millis() as i64;
    let reports = Mutex::new(Reports::default());
    node.set_gossip_sink(Arc::new(move |peer, data| {
        // Expiry is counted on the receiver's clock: clocks differ.
        let now = chrono::Utc::now().timestamp_millis();
        let key = peer.to_string();
        let taken = reports
            .lock()
            .map(|mut r| r.take(&key, now, refill_ms))
            .unwrap_or(false);
        if !taken {
            return;
        }
        let Ok(list) = serde_json::from_slice::<Vec<Metric>>(&data) else {
            return;
        };
        let expire = now + ttl.as_millis() as i64;
        let mut m = lock(&sink_metrics);
        if m.peer(&key).is_none() && m.peers().count() >= MAX_REPORTING_PEERS {
            // Make room by forgetting peers whose every metric expired
            // longer ago than a metric lives.
            let ttl_ms = ttl.as_millis() as i64;
            let gone: Vec<String> = m
                .peers()
                .filter(|p| {
                    m.peer(p).is_some_and(|all| {
                        all.values()
                            .all(|x| x.expire_ms.saturating_add(ttl_ms) < now)
                    })
                })
                .map(str::to_owned)
                .collect();
            for p in gone {
                m.remove_peer(&p);
            }
            if m.peers().count() >= MAX_REPORTING_PEERS {
                return;
            }
        }
        let known = m
            .peer(&key)
            .is_some_and(|all| all.values().any(|x| !x.is_expired(now)));
        for mut metric in list.into_iter().filter(|x| x.peer == key) {
            metric.expire_ms = expire;
            metric.received_ms = now;
            m.insert(metric);
        }
        if !known {
            sink_newcomer.notify_one();
        }
    }));
    tasks.spawn(publish_loop(
        node.clone(),
        backend,
        tracker,
        config.clone(),
        Arc::clone(&metrics),
        newcomer,
        cancel.clone(),
    ));
    node.set_pin_allocator(pin_allocator(config.clone(), Arc::clone(&metrics)));
    tasks.spawn(allocation_loop(node, config, Arc::clone(&metrics), cancel));
    metrics
}

/// The write path's allocator (allocation at pin time): places the pins a
/// leader's write creates or re-places with the metrics this peer has now.
/// With fewer usable peers than a pin's minimum it takes every one there
/// is (the pin is never refused for it; the allocation loop completes it
/// when more peers report).
fn pin_allocator(config: InformerConfig, metrics: Arc<Mutex<PeerMetrics>>) -> PinAllocator {
    Arc::new(move |pins: &[StatePin], members: &[String]| {
        let view = lock(&metrics).clone();
        let now = chrono::Utc::now().timestamp_millis();
        let grace_ms = config.grace.as_millis() as i64;
        let mut round = Round {
            members: candidates(&view, members, now, grace_ms),
            view,
            config: config.allocator.clone(),
            now,
            grace_ms,
        };
        let mut changes = Vec::new();
        for pin in pins {
            round.place(pin, &mut changes);
        }
        changes
    })
}

async fn publish_loop(
    node: ClusterNode,
    backend: Arc<dyn IpfsBackend>,
    tracker: TrackerHandle,
    config: InformerConfig,
    metrics: Arc<Mutex<PeerMetrics>>,
    newcomer: Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
) {
    let me = node.peer_id().to_string();
    let ttl_ms = (config.interval * 2).as_millis() as i64;
    loop {
        let now = chrono::Utc::now().timestamp_millis();
        let expire = now + ttl_ms;
        let mut list = Vec::new();
        match backend.repo_stat().await {
            Ok(stat) => {
                let max = stat.storage_max.unwrap_or(u64::MAX);
                list.push(Metric::freespace(
                    me.clone(),
                    max.saturating_sub(stat.repo_size),
                    expire,
                ));
            }
            Err(e) => tracing::debug!(error = %e, "repo stat failed; no freespace metric"),
        }
        if let Ok(view) = tracker.view().await {
            list.push(Metric::pinqueue(me.clone(), view.pin_queue(), expire));
            list.push(Metric::numpin(me.clone(), view.pinned_count(), expire));
        }
        for (k, v) in &config.tags {
            list.push(Metric::tag(me.clone(), k, v, expire));
        }
        if node.is_follower() {
            let applied = *node.applied_watch().borrow();
            list.push(Metric {
                name: APPLIED.to_owned(),
                peer: me.clone(),
                value: applied.to_string(),
                weight: 0,
                partitionable: false,
                expire_ms: expire,
                valid: true,
                received_ms: 0,
            });
        }
        {
            let mut m = lock(&metrics);
            for metric in &list {
                m.insert(Metric {
                    received_ms: now,
                    ..metric.clone()
                });
            }
        }
        if let Ok(bytes) = serde_json::to_vec(&list) {
            // No subscriber yet is normal while peers connect.
            let _ = node.publish(bytes).await;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(config.interval) => {}
            _ = newcomer.notified() => {}
        }
    }
}

async fn allocation_loop(
    node: ClusterNode,
    config: InformerConfig,
    metrics: Arc<Mutex<PeerMetrics>>,
    cancel: CancellationToken,
) {
    let mut leading_since: Option<tokio::time::Instant> = None;
    // New log entries (a pin written) wake the loop early, so a pin is
    // allocated within a moment rather than the next check; rounds stay at
    // least twice their own duration apart, so a bulk ingest is read in
    // large pages rather than entry by entry.
    let mut applied = node.applied_watch();
    let mut applied_open = true;
    let mut gap = MIN_ROUND_GAP;
    let mut rounds = Rounds::default();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(config.check_interval) => {}
            changed = applied.changed(), if applied_open => {
                if changed.is_err() {
                    applied_open = false;
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(gap) => {}
                }
            }
        }
        if !node.is_leader() {
            leading_since = None;
            rounds = Rounds::default();
            continue;
        }
        let since = *leading_since.get_or_insert_with(tokio::time::Instant::now);
        // A new leader first hears everyone's metrics before moving pins
        // (for one publish interval, or until every member has reported,
        // as on a freshly formed cluster); what woke it is served after.
        let warm = since + config.interval;
        let mut waited = false;
        while tokio::time::Instant::now() < warm && !all_reported(&node, &metrics) {
            waited = true;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(WARM_POLL.min(warm - tokio::time::Instant::now())) => {}
            }
        }
        if waited && !node.is_leader() {
            leading_since = None;
            continue;
        }
        let started = tokio::time::Instant::now();
        if let Err(e) = rounds.run(&node, &config, &metrics).await {
            tracing::warn!(error = %e, "allocation round failed");
            rounds = Rounds::default();
        }
        gap = MIN_ROUND_GAP.max(started.elapsed() * 2);
    }
}

/// How often a new leader's warm-up looks whether every member reported.
const WARM_POLL: Duration = Duration::from_millis(100);

/// True when every member of the cluster has a metric here that has not
/// expired: a new leader then knows every peer and may allocate.
fn all_reported(node: &ClusterNode, metrics: &Mutex<PeerMetrics>) -> bool {
    let now = chrono::Utc::now().timestamp_millis();
    let m = lock(metrics);
    node.members().iter().all(|(_, member)| {
        m.peer(&member.peer_id)
            .is_some_and(|all| all.values().any(|x| !x.is_expired(now)))
    })
}

/// The shortest pause between two allocation rounds woken by new entries.
const MIN_ROUND_GAP: Duration = Duration::from_millis(200);
/// Changed pins read from the state's change feed per page.
const CHANGES_PAGE: usize = 65_536;
/// How often the leader examines every pin even when no peer changed:
/// the safety net, not the mechanism.
const FULL_ROUND_EVERY: Duration = Duration::from_secs(600);

/// Where the leader's allocation rounds stand. A full round examines
/// every pin; it runs when this peer starts leading, when a member's
/// [`PeerState`] changes (a peer went away, came back, filled up, changed
/// tags, joined or left), when the change feed no longer reaches back, and
/// every [`FULL_ROUND_EVERY`]. Otherwise a round examines only the pins
/// changed since the last one, read from the state's change feed, so its
/// cost follows the change, not the state.
#[derive(Default)]
struct Rounds {
    /// The change feed position up to which every pin was examined.
    cursor: Option<u64>,
    /// The member states the last round saw.
    peers: Option<BTreeMap<String, PeerState>>,
    last_full: Option<tokio::time::Instant>,
}

impl Rounds {
    async fn run(
        &mut self,
        node: &ClusterNode,
        config: &InformerConfig,
        metrics: &Mutex<PeerMetrics>,
    ) -> Result<u64, String> {
        let members: Vec<String> = node.members().into_iter().map(|(_, n)| n.peer_id).collect();
        let view = lock(metrics).clone();
        let now = chrono::Utc::now().timestamp_millis();
        let grace_ms = config.grace.as_millis() as i64;
        let members = candidates(&view, &members, now, grace_ms);
        let states = peer_states(&view, &members, &config.allocator, now, grace_ms);
        let full_due = self
            .last_full
            .is_none_or(|t| t.elapsed() >= FULL_ROUND_EVERY);
        let mut round = Round {
            view,
            members,
            config: config.allocator.clone(),
            now,
            grace_ms,
        };
        let from = self
            .cursor
            .filter(|_| !full_due && self.peers.as_ref() == Some(&states));
        let store = node.store().clone();
        let (changes, next, full) = tokio::task::spawn_blocking(move || {
            if let Some(cursor) = from {
                match round.changed(&store, cursor)? {
                    Some((changes, next)) => return Ok((changes, next, false)),
                    None => tracing::debug!("change feed truncated: examining every pin"),
                }
            }
            round
                .every(&store)
                .map(|(changes, head)| (changes, head, true))
        })
        .await
        .map_err(|e| e.to_string())??;
        self.cursor = Some(next);
        if full {
            self.last_full = Some(tokio::time::Instant::now());
        }
        self.peers = Some(states);
        let n = changes.len() as u64;
        let mut iter = changes.into_iter();
        loop {
            let batch: Vec<_> = iter.by_ref().take(config.batch.max(1)).collect();
            if batch.is_empty() {
                break;
            }
            write_allocations(node, batch).await?;
        }
        Ok(n)
    }
}

/// What one round judges pins against.
struct Round {
    view: PeerMetrics,
    members: Vec<String>,
    config: AllocatorConfig,
    now: i64,
    grace_ms: i64,
}

type Changes = Vec<(CidKey, Vec<String>)>;

impl Round {
    /// Every pin; returns the changes and the change feed position read
    /// before the walk (changes after it are examined by the next round).
    fn every(&mut self, store: &StateStore) -> Result<(Changes, u64), String> {
        let head = store.changes_head().map_err(|e| e.to_string())?;
        let mut changes = Vec::new();
        store
            .for_each_pin(|pin| {
                self.examine(&pin, &mut changes);
                true
            })
            .map_err(|e| e.to_string())?;
        Ok((changes, head))
    }

    /// The pins changed from `cursor` on; `None` when the feed no longer
    /// reaches back that far.
    fn changed(
        &mut self,
        store: &StateStore,
        cursor: u64,
    ) -> Result<Option<(Changes, u64)>, String> {
        let mut changes = Vec::new();
        let mut cursor = cursor;
        loop {
            let page = store
                .changes_since(cursor, CHANGES_PAGE)
                .map_err(|e| e.to_string())?;
            if page.truncated {
                return Ok(None);
            }
            let mut seen = std::collections::HashSet::new();
            let cids: Vec<CidKey> = page
                .cids
                .iter()
                .copied()
                .filter(|c| seen.insert(*c))
                .collect();
            for pin in store
                .get_many(&cids)
                .map_err(|e| e.to_string())?
                .into_iter()
                .flatten()
            {
                self.examine(&pin, &mut changes);
            }
            let more = page.cids.len() >= CHANGES_PAGE;
            cursor = page.next_seq;
            if !more {
                return Ok(Some((changes, cursor)));
            }
        }
    }

    /// Adds `pin`'s new allocation to `changes` when it should move.
    fn examine(&mut self, pin: &StatePin, changes: &mut Changes) {
        let Some(req) = self.request(pin) else {
            return;
        };
        match reallocate(&req, &self.view, &self.members, &self.config, self.grace_ms) {
            Ok(Some(a)) if a.peers != pin.allocations => {
                self.view.charge_pinqueue(&a.peers);
                changes.push((pin.cid, a.peers));
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(cid = %pin.cid, error = %e, "cannot allocate yet"),
        }
    }

    /// As [`Round::examine`], for a pin being written: short of peers for
    /// its minimum, it goes to every usable peer there is.
    fn place(&mut self, pin: &StatePin, changes: &mut Changes) {
        let Some(mut req) = self.request(pin) else {
            return;
        };
        let mut chosen = reallocate(&req, &self.view, &self.members, &self.config, self.grace_ms);
        if let Err(AllocError::NotEnoughPeers { available, .. }) = chosen
            && available > 0
        {
            req.replication_min = i32::try_from(available).unwrap_or(i32::MAX);
            if req.replication_max != -1 && req.replication_max < req.replication_min {
                req.replication_max = req.replication_min;
            }
            chosen = reallocate(&req, &self.view, &self.members, &self.config, self.grace_ms);
        }
        match chosen {
            Ok(Some(a)) if a.peers != pin.allocations => {
                self.view.charge_pinqueue(&a.peers);
                changes.push((pin.cid, a.peers));
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(cid = %pin.cid, error = %e, "cannot allocate at pin time"),
        }
    }

    /// The allocator's question for `pin`; `None` for an every-peer pin
    /// (nothing to allocate) and for a sharded DAG's meta pin, which no
    /// peer pins (its shards are allocated instead).
    fn request(&self, pin: &StatePin) -> Option<AllocationRequest> {
        let eff = pin.effective();
        if eff.options.shard_role.as_ref().map(|r| r.kind) == Some(ShardKind::Meta) {
            return None;
        }
        let r = eff.options.replication;
        let (min, max) = if r.min == 0 && r.max == 0 {
            (self.config.default_min, self.config.default_max)
        } else {
            (r.min, r.max)
        };
        if min == -1 {
            return None; // every peer pins it; nothing to allocate
        }
        Some(AllocationRequest {
            cid: pin.cid.to_string(),
            replication_min: min,
            replication_max: max,
            current: pin.allocations.clone(),
            user_allocations: eff.options.user_allocations.clone(),
            allocate_tags: eff.options.allocate_tags.clone(),
            now_ms: self.now,
        })
    }
}

/// Writes `allocations` in as few `Allocate` entries as fit.
async fn write_allocations(
    node: &ClusterNode,
    allocations: Vec<(CidKey, Vec<String>)>,
) -> Result<(), String> {
    for command in allocation_entries(allocations) {
        node.write(command).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `allocations` as one `Allocate` command, or halved (again and again)
/// while one would exceed [`MAX_ENTRY_BYTES`]: many peers per CID make a
/// batch of `config.batch` CIDs large. Order is kept.
fn allocation_entries(allocations: Vec<(CidKey, Vec<String>)>) -> Vec<Command> {
    let mut out = Vec::new();
    let mut todo = vec![allocations];
    while let Some(allocations) = todo.pop() {
        let n = allocations.len();
        let command = Command::Allocate { allocations };
        let split = n > 1 && entry_bytes(&command) > MAX_ENTRY_BYTES;
        match command {
            Command::Allocate { mut allocations } if split => {
                let back = allocations.split_off(n / 2);
                // Popped next: the front half goes first.
                todo.push(back);
                todo.push(allocations);
            }
            command => out.push(command),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn followers_that_report_metrics_are_candidates_after_the_members_until_they_go_quiet() {
        let mut view = PeerMetrics::new();
        view.insert(Metric::freespace("m1", 10, 1_000));
        view.insert(Metric::tag("f1", FOLLOWER_TAG, "true", 1_000));
        view.insert(Metric::freespace("f1", 99, 1_000));
        // Says nothing of being a follower: not a candidate.
        view.insert(Metric::freespace("stranger", 99, 1_000));
        view.insert(Metric::tag("f2", FOLLOWER_TAG, "false", 1_000));
        let members = vec!["m1".to_string(), "m2".to_string()];
        assert_eq!(
            candidates(&view, &members, 500, 100),
            vec!["m1", "m2", "f1"]
        );
        // Its metrics expired at 1,000; with 100 ms of grace it is gone at 1,100.
        assert_eq!(
            candidates(&view, &members, 1_050, 100),
            vec!["m1", "m2", "f1"]
        );
        assert_eq!(candidates(&view, &members, 1_100, 100), vec!["m1", "m2"]);
    }

    #[test]
    fn a_peer_flooding_metrics_is_cut_off_and_refills_over_time() {
        let mut r = Reports::default();
        let taken = (0..10).filter(|_| r.take("f", 0, 1_000)).count();
        assert_eq!(taken, REPORT_BURST as usize);
        assert!(!r.take("f", 500, 1_000));
        assert!(r.take("f", 1_600, 1_000));
        // Another peer has its own bucket.
        assert!(r.take("g", 1_600, 1_000));
    }

    #[test]
    fn metrics_of_more_peers_than_the_bound_are_dropped_for_new_peers_only() {
        let mut r = Reports::default();
        for i in 0..MAX_REPORTING_PEERS {
            assert!(r.take(&format!("p{i}"), 0, 1_000));
        }
        assert!(!r.take("one-too-many", 0, 1_000));
        assert!(r.take("p0", 0, 1_000));
        // Once the others have been silent long enough to be full again,
        // a new peer gets in.
        assert!(r.take("p0", 4_000, 1_000));
        assert!(r.take("newcomer", 4_500, 1_000));
    }

    use super::*;
    use crate::testkit::seq_cid;

    fn sharded(kind: ShardKind, min: i32, max: i32, user: &[&str]) -> StatePin {
        let options = crate::manifest::PinOptions {
            replication: ReplicationFactors { min, max },
            user_allocations: user.iter().map(|p| p.to_string()).collect(),
            shard_role: Some(crate::manifest::ShardRole {
                kind,
                reference: None,
                meta: seq_cid(0).to_string(),
                shard_size: 10,
                max_depth: 1,
            }),
            ..crate::manifest::PinOptions::default()
        };
        StatePin {
            cid: seq_cid(1),
            written_as: None,
            owners: [(
                crate::manifest::Owner::Api,
                crate::manifest::PinSpec {
                    name: String::new(),
                    options: std::sync::Arc::new(options),
                },
            )]
            .into(),
            allocations: Vec::new(),
            timestamp_ms: 0,
        }
    }

    #[test]
    fn a_meta_pin_is_never_allocated_and_a_shard_goes_to_its_chosen_peers_first() {
        let mut view = PeerMetrics::new();
        for (p, free) in [("a", 10), ("b", 50), ("c", 99)] {
            view.insert(Metric::freespace(p, free, 10_000));
        }
        let mut round = Round {
            view,
            members: vec!["a".into(), "b".into(), "c".into()],
            config: AllocatorConfig::default(),
            now: 0,
            grace_ms: 0,
        };
        let mut changes = Vec::new();
        round.place(&sharded(ShardKind::Meta, 1, 1, &[]), &mut changes);
        round.examine(&sharded(ShardKind::Meta, 1, 1, &[]), &mut changes);
        assert!(changes.is_empty(), "{changes:?}");
        round.place(&sharded(ShardKind::Shard, 1, 1, &["a"]), &mut changes);
        assert_eq!(changes, vec![(seq_cid(1), vec!["a".to_string()])]);
        // The cluster DAG is every peer's: nothing to allocate.
        changes.clear();
        round.place(&sharded(ShardKind::ClusterDag, -1, -1, &[]), &mut changes);
        assert!(changes.is_empty(), "{changes:?}");
    }

    fn allocations_of(entries: &[Command]) -> Vec<(CidKey, Vec<String>)> {
        let mut all = Vec::new();
        for e in entries {
            let Command::Allocate { allocations } = e else {
                panic!("not an allocation: {e:?}");
            };
            all.extend(allocations.iter().cloned());
        }
        all
    }

    #[test]
    fn an_allocation_batch_too_large_for_one_entry_is_split_in_order() {
        // 20 peers a CID: ~1.1 KB each, 10,000 CIDs ≈ 11 MB.
        let peers: Vec<String> = (0..20).map(|p| format!("12D3KooW{p:044}")).collect();
        let all: Vec<(CidKey, Vec<String>)> =
            (0..10_000).map(|i| (seq_cid(i), peers.clone())).collect();
        let entries = allocation_entries(all.clone());
        assert!(entries.len() > 8, "{} entries", entries.len());
        for e in &entries {
            assert!(entry_bytes(e) <= MAX_ENTRY_BYTES);
        }
        assert_eq!(allocations_of(&entries), all, "every CID once, in order");
        // A batch that fits stays one entry.
        let few = allocation_entries(all[..100].to_vec());
        assert_eq!(few.len(), 1);
        assert_eq!(allocations_of(&few), all[..100]);
    }
}
