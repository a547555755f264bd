//! The kube source's loop (DESIGN §11): a kube-runtime `Controller` over
//! `PinSet` objects (every namespace, or one) drives the reconcile engine
//! ([`Controller`]) once per object, exactly as the dir and git loops drive
//! it once per revision: each object is a source of its own
//! (`kube:<namespace>/<name>`, owner `pinset:<namespace>/<name>`), so an
//! object only ever applies and releases its own PinSet.
//!
//! An object's `pinsFrom` may name ConfigMap keys of its namespace: they are
//! read with the object, and ConfigMaps are watched (in the watched
//! namespaces) so that a change to one reconciles the objects naming it.
//!
//! Per object: the finalizer `pinfleet.io/cleanup` is added before the first
//! apply; a deleted object's PinSet is released under the prune guard (as a
//! removed file's), the finalizer removed once released; the status
//! subresource is written by server-side apply with what the engine decided
//! and what the cluster reports (`GET /pinsets/{ns}/{name}/status`),
//! refreshed every [`KubeOptions::refresh`] while the PinSet is not Ready.
//! Failures back off exponentially with jitter. Kubernetes I/O on the object
//! itself is `crate::source::kube`'s; nothing here talks to the cluster
//! except through the engine and `crate::client`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::kube::api::Api;
use ::kube::runtime::controller::{
    Action, Config as ControllerConfig, Controller as KubeController,
};
use ::kube::runtime::events::{Event, EventType, Recorder, Reporter};
use ::kube::runtime::reflector::{self, ObjectRef};
use ::kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use ::kube::{Resource, ResourceExt};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::lease::{Elector, LeaseOptions};
use super::{
    ConditionType, Controller, ControllerOptions, PinSetOutcome, Reason, ReconcileRequests,
    conditions_of, error_chain,
};
use crate::client::{Client, ClientError};
use crate::manifest::model::{Condition, PinSet, PinSetStatus};
use crate::manifest::{Limits, Loaded, PinSetId, plural};
use crate::source::kube::{self as source, KubeWriteError};

/// Objects reconciled at once unless [`KubeOptions::concurrency`] says
/// otherwise.
pub const DEFAULT_CONCURRENCY: u16 = 16;

/// Settings of the kube source.
#[derive(Clone, Debug)]
pub struct KubeOptions {
    /// Watch this namespace only (`None`: every namespace).
    pub namespace: Option<String>,
    /// Lift the prune guard for every apply and release.
    pub force: bool,
    /// How soon a PinSet that is not Ready has its status refreshed; the
    /// delay doubles on each refresh that finds it still not Ready, up to
    /// `refresh_max` (a thousand PinSets pinning at once are not all asked
    /// for their status every few seconds).
    pub refresh: Duration,
    /// Longest delay between refreshes of a PinSet that is not Ready.
    pub refresh_max: Duration,
    /// How often a Ready PinSet is reconciled again (its status refreshed,
    /// and its revision re-applied whole to repair drift).
    pub interval: Duration,
    /// First delay after a failed reconcile; it doubles on each failure.
    pub backoff_min: Duration,
    /// Longest delay after failed reconciles.
    pub backoff_max: Duration,
    /// Bounds on what one object may load.
    pub limits: Limits,
    /// Most objects reconciled at once. Each reconcile may send a whole
    /// PinSet and computes its status across the cluster; without a bound,
    /// a thousand PinSets created together would all ask at once.
    pub concurrency: u16,
    /// Act only while holding this Lease (several replicas); `None`: act
    /// at once (a single replica, or the daemon, whose Raft leader acts).
    pub lease: Option<LeaseOptions>,
    /// Reconcile-now requests for this source's objects
    /// ([`ReconcileRequests::object`]): a requested object is reconciled at
    /// once and its revision re-applied whole.
    pub requests: ReconcileRequests,
}

impl Default for KubeOptions {
    fn default() -> Self {
        Self {
            namespace: None,
            force: false,
            refresh: Duration::from_secs(5),
            refresh_max: Duration::from_secs(30),
            interval: Duration::from_secs(300),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            limits: Limits::default(),
            concurrency: DEFAULT_CONCURRENCY,
            lease: None,
            requests: ReconcileRequests::default(),
        }
    }
}

/// Why reconciling one object failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The engine could not apply or release the PinSet.
    #[error("pinset {id} is stalled ({reason}): {message}")]
    Stalled {
        /// The object.
        id: PinSetId,
        /// Why.
        reason: Reason,
        /// Detail.
        message: String,
    },
    /// The object could not be written (finalizer, status).
    #[error(transparent)]
    Write(#[from] KubeWriteError),
}

/// The engine of one object, and when it last repaired drift.
struct Entry {
    engine: Controller,
    last_drift: Option<Instant>,
    /// Refreshes in a row that found the PinSet not Ready (since its
    /// last new generation).
    refreshes: u32,
    /// The generation those refreshes are about.
    generation: Option<i64>,
}

struct Context {
    client: Client,
    kube: ::kube::Client,
    opts: KubeOptions,
    entries: Mutex<HashMap<PinSetId, Arc<tokio::sync::Mutex<Entry>>>>,
    failures: Mutex<HashMap<PinSetId, u32>>,
    recorder: Recorder,
}

impl Context {
    fn entry(&self, id: &PinSetId) -> Arc<tokio::sync::Mutex<Entry>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(entries.entry(id.clone()).or_insert_with(|| {
            Arc::new(tokio::sync::Mutex::new(Entry {
                engine: Controller::new(
                    self.client.clone(),
                    ControllerOptions {
                        source: source::source_name(id),
                        force: self.opts.force,
                        requests: self.opts.requests.object(id),
                    },
                )
                .holding_only(id.clone()),
                last_drift: None,
                refreshes: 0,
                generation: None,
            }))
        }))
    }

    fn forget(&self, id: &PinSetId) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(id);
        self.opts.requests.forget_object(id);
    }

    fn backoff(&self, id: &PinSetId) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(id.clone()).or_default();
        *n = n.saturating_add(1);
        let jitter = rand::rng().random_range(0.8..=1.0);
        backoff_delay(*n, self.opts.backoff_min, self.opts.backoff_max, jitter)
    }

    fn succeeded(&self, id: &PinSetId) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(id);
    }
}

/// The delay after the `failures`-th failure in a row: `min` doubled each
/// time, at most `max`, scaled by `jitter` (0.8 to 1: retries of many
/// objects spread out instead of hitting the cluster together).
fn backoff_delay(failures: u32, min: Duration, max: Duration, jitter: f64) -> Duration {
    let doubled = min.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    doubled.min(max).mul_f64(jitter)
}

/// Runs the kube source until `cancel`: watches PinSet objects through
/// `kube` and applies them to the cluster behind `client`. With
/// [`KubeOptions::lease`], only while this replica holds the lease: a lost
/// lease stops the controller (reconciles under way are given up to one
/// renew period to finish), and it waits to take the lease again; on
/// `cancel` it stops acting, then releases the lease for the next replica.
pub async fn run_kube(
    client: Client,
    kube: ::kube::Client,
    opts: KubeOptions,
    cancel: CancellationToken,
) {
    let Some(lease) = opts.lease.clone() else {
        return run_controller(client, kube, opts, cancel).await;
    };
    let grace = lease.renew;
    let mut elector = Elector::new(kube.clone(), lease);
    loop {
        if !elector.acquire(&cancel).await {
            return;
        }
        tracing::info!(identity = %elector.identity(), "kube: lease taken: controller starting");
        let term = cancel.child_token();
        let run = run_controller(client.clone(), kube.clone(), opts.clone(), term.clone());
        tokio::pin!(run);
        tokio::select! {
            () = &mut run => {}
            () = elector.hold(&cancel) => {
                if !cancel.is_cancelled() {
                    tracing::warn!(identity = %elector.identity(), "kube: lease lost: controller stopping");
                }
                term.cancel();
                let _ = tokio::time::timeout(grace, run).await;
            }
        }
        if cancel.is_cancelled() {
            // Clean shutdown: this replica stopped acting; hand over now.
            match tokio::time::timeout(grace, elector.release()).await {
                Ok(Ok(())) => {
                    tracing::info!(identity = %elector.identity(), "kube: lease released");
                }
                Ok(Err(e)) => {
                    tracing::warn!(identity = %elector.identity(), error = %error_chain(&e), "kube: cannot release the lease");
                }
                Err(_) => {
                    tracing::warn!(identity = %elector.identity(), "kube: the lease was not released in time");
                }
            }
            return;
        }
    }
}

/// The kube-runtime controller, until `cancel`.
async fn run_controller(
    client: Client,
    kube: ::kube::Client,
    opts: KubeOptions,
    cancel: CancellationToken,
) {
    let api: Api<PinSet> = match &opts.namespace {
        Some(ns) => Api::namespaced(kube.clone(), ns),
        None => Api::all(kube.clone()),
    };
    let recorder = Recorder::new(
        kube.clone(),
        Reporter {
            controller: "pinfleet".to_string(),
            instance: opts
                .lease
                .as_ref()
                .map(|l| l.identity.clone())
                .or_else(|| std::env::var("POD_NAME").ok()),
        },
    );
    let ctx = Arc::new(Context {
        client,
        kube,
        opts,
        entries: Mutex::new(HashMap::new()),
        failures: Mutex::new(HashMap::new()),
        recorder,
    });
    // Reconcile-now: the objects requested, as they are asked for.
    let requested = futures::stream::unfold(ctx.opts.requests.clone(), |r| async move {
        r.wait_pending().await;
        let ids = r.pending_objects();
        Some((futures::stream::iter(ids), r))
    })
    .flatten()
    .map(|id: PinSetId| ObjectRef::new(&id.name).within(&id.namespace));
    let config_maps: Api<ConfigMap> = match &ctx.opts.namespace {
        Some(ns) => Api::namespaced(ctx.kube.clone(), ns),
        None => Api::all(ctx.kube.clone()),
    };
    // Only a change worth acting on triggers a reconcile: not the status
    // writes (ours included: each would trigger another status
    // computation at once), nor the finalizer the controller adds. The
    // refresh requeue brings a PinSet's status up to date.
    let (reader, writer) = reflector::store();
    let objects = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .applied_objects()
        .predicate_filter(acted_on, PredicateConfig::default());
    let controller = KubeController::for_stream(objects, reader)
        .with_config(ControllerConfig::default().concurrency(ctx.opts.concurrency.max(1)));
    // A ConfigMap change (or its deletion) reconciles the PinSets of its
    // namespace whose `pinsFrom` names it, as the PinSet cache holds them.
    // (The controller's trigger backoff covers this watch too.)
    let pinsets = controller.store();
    controller
        .watches(
            config_maps,
            watcher::Config::default(),
            move |cm: ConfigMap| {
                let (ns, name) = (cm.namespace().unwrap_or_default(), cm.name_any());
                pinsets
                    .state()
                    .into_iter()
                    .filter(|ps| source::references(ps, &ns, &name))
                    .map(|ps| ObjectRef::from_obj(&*ps))
                    .collect::<Vec<_>>()
            },
        )
        .reconcile_on(requested)
        .graceful_shutdown_on(cancel.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            match r {
                Ok((obj, _)) => tracing::debug!(pinset = %obj, "kube: reconciled"),
                Err(e) => tracing::warn!(error = %error_chain(&e), "kube: reconcile failed"),
            }
        })
        .await;
}

/// What a reconcile acts on: the spec (its generation), deletion, and
/// the annotations (the forced-delete one); a status or finalizer change
/// alone hashes the same.
fn acted_on(obj: &PinSet) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = obj.meta();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.uid.hash(&mut h);
    meta.generation.hash(&mut h);
    meta.deletion_timestamp.is_some().hash(&mut h);
    meta.annotations.hash(&mut h);
    Some(h.finish())
}

fn error_policy(obj: Arc<PinSet>, err: &KubeError, ctx: Arc<Context>) -> Action {
    let id = source::id_of(&obj);
    let delay = ctx.backoff(&id);
    tracing::warn!(pinset = %id, error = %error_chain(err), retry_in = ?delay, "kube: pinset not reconciled");
    Action::requeue(delay)
}

async fn reconcile(obj: Arc<PinSet>, ctx: Arc<Context>) -> Result<Action, KubeError> {
    let id = source::id_of(&obj);
    let entry = ctx.entry(&id);
    let mut entry = entry.lock().await;
    // A new generation is followed closely again.
    if entry.generation != obj.meta().generation {
        entry.generation = obj.meta().generation;
        entry.refreshes = 0;
    }
    let result = if obj.meta().deletion_timestamp.is_some() {
        cleanup(&obj, &id, &ctx, &mut entry).await
    } else {
        apply(&obj, &id, &ctx, &mut entry).await
    };
    let after = match result? {
        Next::Progressing => {
            let after = refresh_delay(entry.refreshes, ctx.opts.refresh, ctx.opts.refresh_max);
            entry.refreshes = entry.refreshes.saturating_add(1);
            Some(after)
        }
        Next::Requeue(after) => {
            entry.refreshes = 0;
            after
        }
        Next::Gone => {
            drop(entry);
            ctx.succeeded(&id);
            ctx.forget(&id);
            return Ok(Action::await_change());
        }
    };
    drop(entry);
    ctx.succeeded(&id);
    Ok(after.map_or_else(Action::await_change, Action::requeue))
}

/// The delay before the next status refresh of a PinSet that `refreshes`
/// refreshes in a row found not Ready: `refresh`, doubled each time, at
/// most `max`.
fn refresh_delay(refreshes: u32, refresh: Duration, max: Duration) -> Duration {
    refresh
        .saturating_mul(1u32.checked_shl(refreshes.min(16)).unwrap_or(u32::MAX))
        .min(max.max(refresh))
}

/// What a reconcile wants next.
enum Next {
    /// Reconcile again after this long (`None`: on the next change).
    Requeue(Option<Duration>),
    /// The object is let go (its finalizer removed).
    Gone,
    /// Not Ready yet: refresh its status later.
    Progressing,
}

/// Applies a live object: finalizer first, then the engine, then status.
async fn apply(
    obj: &PinSet,
    id: &PinSetId,
    ctx: &Context,
    entry: &mut Entry,
) -> Result<Next, KubeError> {
    if !source::has_finalizer(obj) {
        source::add_finalizer(&ctx.kube, obj).await?;
    }
    let loaded = source::load(&ctx.kube, obj, &ctx.opts.limits).await;
    // A list from a ConfigMap that cannot be read (or does not load) is
    // retried with backoff, besides the reconcile a change of it triggers.
    let list_failed = loaded.is_err() && !source::config_map_names(obj).is_empty();
    // The first reconcile of an object trusts what the cluster holds
    // (the engine sends nothing for a revision it already has); a
    // drift repair re-applies it whole every `interval`.
    let drift = entry
        .last_drift
        .is_some_and(|t| t.elapsed() >= ctx.opts.interval);
    if entry.last_drift.is_none() || drift {
        entry.last_drift = Some(Instant::now());
    }
    entry.engine.set_force(ctx.opts.force);
    let out = entry.engine.reconcile(loaded, drift).await;
    // A skipped reconcile (unchanged and healthy) keeps the last outcome.
    let outcome = out
        .pinsets
        .iter()
        .find(|o| o.id() == *id)
        .or_else(|| {
            out.skipped
                .then(|| entry.engine.state().statuses.get(id))
                .flatten()
        })
        .cloned()
        .or_else(|| {
            out.source_error.as_ref().map(|m| {
                outcome(
                    id,
                    ConditionType::Stalled,
                    Reason::ManifestInvalid,
                    m.clone(),
                )
            })
        });
    let fresh = !out.skipped;
    if let Some(o) = outcome.as_ref().filter(|_| fresh) {
        log(o);
    }
    let failed = list_failed.then(|| outcome.clone()).flatten();
    let next = finish(obj, id, ctx, outcome, fresh).await?;
    match failed {
        Some(o) => Err(KubeError::Stalled {
            id: id.clone(),
            reason: o.reason,
            message: o.message,
        }),
        None => Ok(next),
    }
}

/// Releases a deleted object's PinSet under the prune guard, then lets
/// the object go.
async fn cleanup(
    obj: &PinSet,
    id: &PinSetId,
    ctx: &Context,
    entry: &mut Entry,
) -> Result<Next, KubeError> {
    if !source::has_finalizer(obj) {
        return Ok(Next::Gone);
    }
    let ours = match ctx.client.pinset(id).await {
        Ok(r) => r.is_some_and(|r| r.source == source::source_name(id)),
        Err(e) => {
            let o = outcome(id, ConditionType::Stalled, reason_of(&e), error_chain(&e));
            log(&o);
            return finish(obj, id, ctx, Some(o), true).await;
        }
    };
    if ours {
        entry
            .engine
            .set_force(ctx.opts.force || source::force_prune(obj));
        let deleted = Loaded {
            pinsets: Vec::new(),
            digest: format!("deleted@{}", obj.resource_version().unwrap_or_default()),
            manifest_files: 0,
            lists: Vec::new(),
            duplicates: 0,
            changes: None,
            source_digests: Default::default(),
        };
        let out = entry.engine.reconcile(Ok(deleted), false).await;
        let o = out.pinsets.into_iter().find(|o| o.id() == *id);
        match o {
            Some(o) if o.reason != Reason::Released => {
                log(&o);
                return finish(obj, id, ctx, Some(o), true).await;
            }
            released => {
                tracing::info!(pinset = %id, "kube: pinset deleted: its pins are released");
                let note = released.map_or_else(String::new, |o| {
                    format!(
                        "the PinSet was deleted: {} released",
                        plural(o.release, "pin")
                    )
                });
                publish(ctx, obj, EventType::Normal, "Released", note).await;
            }
        }
    }
    source::remove_finalizer(&ctx.kube, obj).await?;
    Ok(Next::Gone)
}

fn reason_of(e: &ClientError) -> Reason {
    if e.is_unavailable() {
        Reason::ClusterUnavailable
    } else {
        Reason::ApplyFailed
    }
}

fn outcome(
    id: &PinSetId,
    condition: ConditionType,
    reason: Reason,
    message: String,
) -> PinSetOutcome {
    PinSetOutcome {
        namespace: id.namespace.clone(),
        name: id.name.clone(),
        condition,
        reason,
        message: crate::manifest::capped(message, crate::manifest::MAX_STORED_MESSAGE_BYTES),
        revision: String::new(),
        add: 0,
        update: 0,
        release: 0,
    }
}

fn log(o: &PinSetOutcome) {
    let id = o.id();
    if o.condition == ConditionType::Stalled {
        tracing::warn!(pinset = %id, reason = %o.reason, outcome = %o, "kube: pinset stalled");
    } else {
        tracing::info!(pinset = %id, reason = %o.reason, outcome = %o, "kube: pinset reconciled");
    }
}

/// Writes the object's status from the engine's `outcome` (`None`: the
/// engine skipped an unchanged, healthy revision) and the cluster's
/// status of the PinSet, and says when to look again.
async fn finish(
    obj: &PinSet,
    id: &PinSetId,
    ctx: &Context,
    mut outcome: Option<PinSetOutcome>,
    fresh: bool,
) -> Result<Next, KubeError> {
    let previous = obj.status.clone().unwrap_or_default();
    let now = crate::state::format_time(chrono::Utc::now().timestamp_millis());
    let unavailable = |o: &Option<PinSetOutcome>| {
        o.as_ref()
            .is_some_and(|o| o.reason == Reason::ClusterUnavailable)
    };
    let mut status = if unavailable(&outcome) {
        previous.clone()
    } else {
        match ctx.client.pinset_status(id).await {
            Ok(s) => s,
            Err(ClientError::Api { status: 404, .. }) => PinSetStatus::default(),
            Err(e) => {
                if outcome
                    .as_ref()
                    .is_none_or(|o| o.condition != ConditionType::Stalled)
                {
                    outcome = Some(self::outcome(
                        id,
                        ConditionType::Stalled,
                        reason_of(&e),
                        error_chain(&e),
                    ));
                }
                previous.clone()
            }
        }
    };
    let decided = outcome
        .as_ref()
        .filter(|o| !(o.condition == ConditionType::Ready && o.reason == Reason::Succeeded));
    if let Some(o) = decided {
        status.conditions = conditions_of(o, Some(&previous.conditions), &now);
    } else if status.conditions.is_empty() {
        let ok = self::outcome(id, ConditionType::Ready, Reason::Succeeded, String::new());
        status.conditions = conditions_of(&ok, Some(&previous.conditions), &now);
    }
    let generation = obj.meta().generation;
    status.observed_generation = generation;
    for c in &mut status.conditions {
        c.observed_generation = generation;
        keep_transition_time(c, &previous.conditions);
    }
    if let Some((type_, reason, note)) = outcome
        .as_ref()
        .filter(|_| fresh)
        .and_then(|o| event_of(o, &previous))
    {
        publish(ctx, obj, type_, reason, note).await;
    }
    if obj.status.as_ref() != Some(&status) {
        source::apply_status(&ctx.kube, obj, &status).await?;
    }
    let condition = |t: &str| status.conditions.iter().find(|c| c.type_ == t);
    let stalled = condition("Stalled").is_some_and(|c| c.status == "True");
    let ready = condition("Ready").is_some_and(|c| c.status == "True");
    if let Some(o) = outcome.filter(|o| {
        o.condition == ConditionType::Stalled
            && matches!(o.reason, Reason::ClusterUnavailable | Reason::ApplyFailed)
    }) {
        return Err(KubeError::Stalled {
            id: id.clone(),
            reason: o.reason,
            message: o.message,
        });
    }
    Ok(if ready || stalled {
        Next::Requeue(Some(ctx.opts.interval))
    } else {
        Next::Progressing
    })
}

/// The Event an outcome is worth: an apply that changed pins, or a
/// transition to another reason (guarded, invalid, unavailable, failed,
/// suspended). A reason the status already shows is not repeated.
fn event_of(
    o: &PinSetOutcome,
    previous: &PinSetStatus,
) -> Option<(EventType, &'static str, String)> {
    let shown = previous
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled" && c.status == "True")
        .or_else(|| previous.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.reason.as_str());
    let reason = match o.reason {
        Reason::Succeeded => {
            return (o.add + o.update + o.release > 0).then(|| {
                (
                    EventType::Normal,
                    "Applied",
                    format!(
                        "applied revision {}: +{} ~{} -{} pins",
                        o.revision, o.add, o.update, o.release
                    ),
                )
            });
        }
        Reason::Progressing | Reason::Conflict | Reason::Released => return None,
        r => r,
    };
    let name = match reason {
        Reason::PruneGuard => "PruneGuard",
        Reason::ManifestInvalid => "ManifestInvalid",
        Reason::ClusterUnavailable => "ClusterUnavailable",
        Reason::ApplyFailed => "ApplyFailed",
        Reason::SourceUnavailable => "SourceUnavailable",
        _ => "Suspended",
    };
    if shown == Some(name) {
        return None;
    }
    let type_ = if o.condition == ConditionType::Stalled {
        EventType::Warning
    } else {
        EventType::Normal
    };
    Some((type_, name, o.message.clone()))
}

/// Publishes an Event about `obj` (best effort: a refusal is logged).
async fn publish(ctx: &Context, obj: &PinSet, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        // Events hold at most 1 kB of note.
        note: (!note.is_empty()).then(|| crate::manifest::capped(note, 1000)),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::debug!(pinset = %source::id_of(obj), error = %error_chain(&e), "kube: cannot publish an event");
    }
}

/// A condition whose status and reason did not change keeps the time it
/// last changed.
fn keep_transition_time(c: &mut Condition, previous: &[Condition]) {
    if let Some(p) = previous
        .iter()
        .find(|p| p.type_ == c.type_ && p.status == c.status && p.reason == c.reason)
    {
        c.last_transition_time = p.last_transition_time.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinset_not_ready_is_refreshed_less_often_up_to_the_bound() {
        let (refresh, max) = (Duration::from_secs(5), Duration::from_secs(30));
        let d = |n| refresh_delay(n, refresh, max);
        assert_eq!(d(0), Duration::from_secs(5));
        assert_eq!(d(1), Duration::from_secs(10));
        assert_eq!(d(2), Duration::from_secs(20));
        assert_eq!(d(3), max);
        assert_eq!(d(u32::MAX), max);
        // A bound below the first delay does not shorten it.
        assert_eq!(refresh_delay(4, refresh, Duration::from_secs(1)), refresh);
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_bound() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(300));
        let d = |n| backoff_delay(n, min, max, 1.0);
        assert_eq!(d(1), Duration::from_secs(1));
        assert_eq!(d(2), Duration::from_secs(2));
        assert_eq!(d(5), Duration::from_secs(16));
        assert_eq!(d(9), Duration::from_secs(256));
        assert_eq!(d(10), max);
        assert_eq!(d(u32::MAX), max);
        assert_eq!(backoff_delay(10, min, max, 0.8), max.mul_f64(0.8));
    }
}
