//! The GitOps controller (DESIGN §4–§6): one reconcile engine, independent of
//! where manifests come from, that applies a source's PinSets to a cluster
//! through its REST API, releases the PinSets that left the source (under the
//! prune guard) and keeps a status per PinSet.
//!
//! Sources ([`crate::source`]): a directory, watched with `notify`, a
//! git repository, polled and triggered by webhooks, and Kubernetes PinSet
//! objects, one engine per object; [`run_dir`], [`run_git`] and
//! [`run_kube`] drive the engine for each. The engine's
//! state lives in memory ([`ControllerState`]); which PinSets belong to a
//! source is read back from the cluster (`GET /pinsets`, the `source` each
//! PinSet was applied with).

pub mod daemon;
pub mod kube;
pub mod lease;
mod patch;
mod record;
pub mod reporter;
pub mod requests;
mod run;

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

pub use self::kube::{DEFAULT_CONCURRENCY, KubeError, KubeOptions, run_kube};
pub use lease::{Elector, LeaseOptions};
pub use requests::{ReconcileRequests, Reconcilers};
pub use run::{DRIFT_POLLS, poll, run_dir, run_git};

use crate::client::{Client, ClientError};
use crate::manifest::model::Condition;
use crate::manifest::{
    DEFAULT_NAMESPACE, Diagnostics, LoadError, Loaded, PinSetId, check_dns_label,
};
use crate::manifest::{MAX_STORED_MESSAGE_BYTES, capped};
use crate::wire::{ApplyReport, PinSetInfo};

/// Kind of the condition a PinSet is in (Kubernetes conventions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ConditionType {
    /// The revision is applied.
    Ready,
    /// Work is under way.
    Reconciling,
    /// Reconciling cannot progress without a change (manifest, guard, cluster).
    Stalled,
}

/// Why a PinSet is in its condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Reason {
    /// The source's revision does not load (file:line:col in the message).
    ManifestInvalid,
    /// The prune guard refused an apply or a release (counts in the message).
    PruneGuard,
    /// The cluster could not be reached or is unavailable.
    ClusterUnavailable,
    /// Applying is under way.
    Progressing,
    /// The revision is applied.
    Succeeded,
    /// `spec.suspend`: not reconciled.
    Suspended,
    /// The PinSet left the source and its pins were released.
    Released,
    /// The source could not be read at all.
    SourceUnavailable,
    /// The cluster refused the apply for another reason.
    ApplyFailed,
    /// Another writer changed the PinSet while this reconcile planned it
    /// (sent again at once, it changed again): nothing was applied; the
    /// next reconcile plans it again.
    Conflict,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The outcome of reconciling one PinSet.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PinSetOutcome {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Condition.
    #[serde(rename = "type")]
    pub condition: ConditionType,
    /// Reason of the condition.
    pub reason: Reason,
    /// Human-readable detail (file:line:col, guard counts, cause chain).
    pub message: String,
    /// The source revision this outcome is about.
    pub revision: String,
    /// Pins added.
    pub add: u64,
    /// Pins updated.
    pub update: u64,
    /// Pins released.
    pub release: u64,
}

impl PinSetOutcome {
    fn new(id: &PinSetId, condition: ConditionType, reason: Reason, revision: &str) -> Self {
        Self {
            namespace: id.namespace.clone(),
            name: id.name.clone(),
            condition,
            reason,
            message: String::new(),
            revision: revision.to_string(),
            add: 0,
            update: 0,
            release: 0,
        }
    }

    fn with_report(mut self, r: &ApplyReport) -> Self {
        self.add = r.add;
        self.update = r.update;
        self.release = r.release;
        self
    }

    /// The detail, capped at [`MAX_STORED_MESSAGE_BYTES`]: it becomes a
    /// condition stored in the cluster state.
    fn with_message(mut self, m: impl Into<String>) -> Self {
        self.message = capped(m.into(), MAX_STORED_MESSAGE_BYTES);
        self
    }

    /// `namespace/name`.
    pub fn id(&self) -> PinSetId {
        PinSetId::new(self.namespace.clone(), self.name.clone())
    }

    /// True when the PinSet is Ready: applied (or deliberately not, when
    /// suspended or released). Stalled and still-reconciling PinSets are
    /// not, so the next reconcile does not skip their revision.
    pub fn healthy(&self) -> bool {
        self.condition == ConditionType::Ready
    }
}

impl fmt::Display for PinSetOutcome {
    /// `ns/name  Reason  +add ~update -release  revision[  message]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}  {}  +{} ~{} -{}  {}",
            self.namespace,
            self.name,
            self.reason,
            self.add,
            self.update,
            self.release,
            self.revision
        )?;
        if !self.message.is_empty() {
            write!(f, "  {}", self.message.replace('\n', "; "))?;
        }
        Ok(())
    }
}

/// What one reconcile did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileOutcome {
    /// The source's revision: the one applied, or for a revision that does
    /// not load the one that was tried when the source knows it (a git
    /// commit); `None` when the source could not be read at all.
    pub revision: Option<String>,
    /// Nothing was done: same revision as last time and healthy.
    pub skipped: bool,
    /// Why the source failed to load (file:line:col per problem).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_error: Option<String>,
    /// One outcome per PinSet touched (or marked) by this reconcile.
    pub pinsets: Vec<PinSetOutcome>,
}

impl ReconcileOutcome {
    /// True when the source loaded and every PinSet is Ready.
    pub fn healthy(&self) -> bool {
        self.source_error.is_none() && self.pinsets.iter().all(PinSetOutcome::healthy)
    }
}

/// The engine's memory: the last outcome per PinSet and the last revision
/// applied.
#[derive(Clone, Debug, Default)]
pub struct ControllerState {
    /// Last outcome per PinSet of this source.
    pub statuses: BTreeMap<PinSetId, PinSetOutcome>,
    /// The last revision that loaded and was applied.
    pub last_applied_revision: Option<String>,
    /// Whether the last reconcile was healthy.
    pub last_healthy: bool,
}

/// Settings of a controller.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// The source's name, recorded with each PinSet (`dir:/abs/path`).
    pub source: String,
    /// Lift the prune guard for every apply and release.
    pub force: bool,
    /// Reconcile-now requests for this source (`POST
    /// /pinsets/{ns}/{name}/reconcile`): a pending one turns the next
    /// reconcile into a full one, and the source loops wake on it.
    pub requests: ReconcileRequests,
}

/// The reconcile engine for one source.
#[derive(Debug)]
pub struct Controller {
    client: Client,
    opts: ControllerOptions,
    state: ControllerState,
    /// Conditions last written to the cluster, per PinSet.
    reported: BTreeMap<PinSetId, Vec<Condition>>,
    /// Keep the last load applied healthily, for an incremental reload.
    keep_loads: bool,
    /// That load (see [`Controller::take_previous`]).
    previous: Option<Loaded>,
    /// The newest reconcile-now ticket when the source started reading the
    /// revision being reconciled (see [`Controller::begin`]).
    begun: Option<u64>,
    /// The one PinSet this engine's source can hold (see
    /// [`Controller::holding_only`]).
    only: Option<PinSetId>,
    /// When the reconcile under way started and what started it, for the
    /// PinSets' recent reconciles.
    running: Option<(std::time::Instant, &'static str)>,
}

impl Controller {
    /// A controller applying through `client`.
    pub fn new(client: Client, opts: ControllerOptions) -> Self {
        Self {
            client,
            opts,
            state: ControllerState::default(),
            reported: BTreeMap::new(),
            keep_loads: false,
            previous: None,
            begun: None,
            only: None,
            running: None,
        }
    }

    /// Declares that this engine's source holds at most the PinSet `id`
    /// (the kube source: one engine per object, its source named after
    /// it): the engine then reads the cluster's record of just that PinSet
    /// (and of any other it loads or remembers) instead of listing every
    /// PinSet, which with many objects would be one full list per object.
    pub fn holding_only(mut self, id: PinSetId) -> Self {
        self.only = Some(id);
        self
    }

    /// The cluster's records of the PinSets this source may hold: every
    /// PinSet (`GET /pinsets`), or with [`holding_only`](Self::holding_only)
    /// the ones it names, loads or remembers, one `GET` each.
    async fn recorded(&self, loaded: &Loaded) -> Result<Vec<PinSetInfo>, ClientError> {
        let Some(only) = &self.only else {
            return self.client.pinsets().await;
        };
        let mut ids: Vec<&PinSetId> = vec![only];
        for id in loaded
            .pinsets
            .iter()
            .map(|p| &p.id)
            .chain(self.state.statuses.keys())
        {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let mut out = Vec::new();
        for id in ids {
            if let Some(info) = self.client.pinset(id).await? {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Marks the start of a cycle, before the source fetches or loads: the
    /// reconcile-now requests made until now are the ones the next
    /// [`reconcile`](Self::reconcile) serves. A request made while the
    /// source is still reading an older revision waits for the next cycle.
    pub fn begin(&mut self) {
        self.begun = Some(self.opts.requests.latest());
    }

    /// Keeps the last load that was applied healthily, for the source to
    /// reload incrementally from (see [`crate::source::GitSource::load_after`]).
    pub fn keep_loads(&mut self) {
        self.keep_loads = true;
    }

    /// The last load applied healthily (kept with [`keep_loads`](Self::keep_loads)).
    pub fn take_previous(&mut self) -> Option<Loaded> {
        self.previous.take()
    }

    /// Lifts (or restores) the prune guard for the next reconciles: a
    /// source whose objects say so one by one (the kube source's
    /// `pinfleet.io/force-prune` on a deleted PinSet) sets it per reconcile.
    pub fn set_force(&mut self, force: bool) {
        self.opts.force = force;
    }

    /// The engine's state.
    pub fn state(&self) -> &ControllerState {
        &self.state
    }

    /// This source's reconcile-now requests.
    pub fn requests(&self) -> &ReconcileRequests {
        &self.opts.requests
    }

    /// Reconciles the source's current state against the cluster. With
    /// `drift` false, an unchanged revision whose last outcome was healthy
    /// is skipped; with `drift` true (the interval), it is re-applied (an
    /// idempotent apply writes nothing when nothing drifted). A pending
    /// reconcile-now request counts as `drift` and is marked handled when
    /// this reconcile is done.
    pub async fn reconcile(
        &mut self,
        source: Result<Loaded, LoadError>,
        drift: bool,
    ) -> ReconcileOutcome {
        let ticket = self
            .begun
            .take()
            .unwrap_or_else(|| self.opts.requests.latest());
        let trigger = record::trigger(self.opts.requests.pending(), drift);
        self.running = Some((std::time::Instant::now(), trigger));
        let drift = drift || self.opts.requests.pending();
        let out = self.reconcile_inner(source, drift).await;
        let error = out.source_error.clone().or_else(|| {
            out.pinsets
                .iter()
                .find(|p| !p.healthy())
                .map(|p| format!("{}/{}: {}: {}", p.namespace, p.name, p.reason, p.message))
        });
        self.opts.requests.mark_handled_with(
            ticket,
            crate::wire::Handled {
                healthy: out.healthy(),
                revision: out.revision.clone(),
                error,
            },
        );
        out
    }

    async fn reconcile_inner(
        &mut self,
        source: Result<Loaded, LoadError>,
        drift: bool,
    ) -> ReconcileOutcome {
        let guessed = match &source {
            Err(LoadError::Invalid(d)) => guess_ids(d),
            _ => Vec::new(),
        };
        let out = match source {
            Err(e) => self.failed(e),
            Ok(loaded) => {
                if !drift
                    && self.state.last_healthy
                    && self.state.last_applied_revision.as_deref() == Some(&loaded.digest)
                {
                    let revision = Some(loaded.digest.clone());
                    if self.keep_loads {
                        self.previous = Some(loaded);
                    }
                    return ReconcileOutcome {
                        revision,
                        skipped: true,
                        ..ReconcileOutcome::default()
                    };
                }
                self.apply(loaded, drift).await
            }
        };
        self.state.last_healthy = out.healthy();
        self.report(&out, &guessed).await;
        out
    }

    /// Writes each outcome's conditions to the cluster (best effort: a
    /// failure is logged and retried on the next reconcile), skipping
    /// PinSets whose conditions did not change since the last write.
    /// `guessed` are PinSets named by a manifest that does not load and
    /// that no outcome covers: they are reported Stalled too.
    async fn report(&mut self, out: &ReconcileOutcome, guessed: &[PinSetId]) {
        let mut outcomes: Vec<PinSetOutcome> = out.pinsets.clone();
        if let Some(message) = &out.source_error {
            let revision = self.state.last_applied_revision.clone().unwrap_or_default();
            for id in guessed {
                if !outcomes.iter().any(|o| o.id() == *id) {
                    outcomes.push(
                        PinSetOutcome::new(
                            id,
                            ConditionType::Stalled,
                            Reason::ManifestInvalid,
                            &revision,
                        )
                        .with_message(message.clone()),
                    );
                }
            }
        }
        let now = crate::state::format_time(chrono::Utc::now().timestamp_millis());
        for o in &outcomes {
            let id = o.id();
            if o.reason == Reason::Released {
                self.reported.remove(&id);
                continue;
            }
            let conditions = conditions_of(o, self.reported.get(&id), &now);
            // Every reconcile that ran is recorded, so conditions that did
            // not change are written again with it.
            let entry = self.running.map(|run| record::entry(o, run));
            if entry.is_none() && self.reported.get(&id) == Some(&conditions) {
                continue;
            }
            let revision = (!o.revision.is_empty()).then_some(o.revision.as_str());
            match self
                .client
                .put_conditions(
                    &id,
                    &self.opts.source,
                    revision,
                    &conditions,
                    entry.as_ref(),
                )
                .await
            {
                Ok(()) => {
                    self.reported.insert(id, conditions);
                }
                Err(e) => {
                    tracing::warn!(pinset = %id, error = %error_chain(&e), "cannot record the pinset's conditions in the cluster");
                }
            }
        }
    }

    /// A revision that does not load: nothing changes in the cluster; every
    /// PinSet this source holds is marked Stalled.
    fn failed(&mut self, e: LoadError) -> ReconcileOutcome {
        let (reason, message) = match &e {
            LoadError::Invalid(d) => (Reason::ManifestInvalid, d.to_string()),
            other => (Reason::SourceUnavailable, error_chain(other)),
        };
        let revision = self.state.last_applied_revision.clone().unwrap_or_default();
        let mut pinsets = Vec::new();
        for (id, st) in self.state.statuses.iter_mut() {
            let o = PinSetOutcome::new(id, ConditionType::Stalled, reason, &revision)
                .with_message(message.clone());
            *st = o.clone();
            pinsets.push(o);
        }
        ReconcileOutcome {
            revision: None,
            skipped: false,
            source_error: Some(message),
            pinsets,
        }
    }

    /// Applies `loaded`; with `drift` every PinSet is sent whole, so the
    /// cluster re-plans it against what it holds (a patch only carries what
    /// changed between two loads, and would repair nothing).
    async fn apply(&mut self, mut loaded: Loaded, drift: bool) -> ReconcileOutcome {
        let revision = loaded.digest.clone();
        let mut out = ReconcileOutcome {
            revision: Some(revision.clone()),
            ..ReconcileOutcome::default()
        };
        // Which PinSets this source applied before, as the cluster records.
        let recorded = match self.recorded(&loaded).await {
            Ok(r) => r,
            Err(e) => {
                let msg = error_chain(&e);
                let reason = if e.is_unavailable() {
                    Reason::ClusterUnavailable
                } else {
                    Reason::ApplyFailed
                };
                for ps in &loaded.pinsets {
                    let o = PinSetOutcome::new(&ps.id, ConditionType::Stalled, reason, &revision)
                        .with_message(msg.clone());
                    self.state.statuses.insert(ps.id.clone(), o.clone());
                    out.pinsets.push(o);
                }
                return out;
            }
        };
        let mut owned: Vec<PinSetId> = recorded
            .iter()
            .filter(|p| p.source == self.opts.source)
            .map(|p| PinSetId::new(p.namespace.clone(), p.name.clone()))
            .collect();
        // PinSets a refused release left Stalled are still ours.
        for id in self.state.statuses.keys() {
            if !owned.contains(id)
                && recorded
                    .iter()
                    .any(|p| p.namespace == id.namespace && p.name == id.name)
            {
                owned.push(id.clone());
            }
        }

        for ps in &loaded.pinsets {
            // The cluster already holds this revision from this source: the
            // PinSet is as loaded (an apply is atomic), nothing to send. A
            // drift repair sends it anyway, to re-plan against the state.
            let held = recorded.iter().find(|r| {
                r.namespace == ps.id.namespace
                    && r.name == ps.id.name
                    && r.revision == revision
                    && r.source == self.opts.source
                    && r.suspend == ps.suspend
            });
            let o = if ps.suspend {
                PinSetOutcome::new(&ps.id, ConditionType::Ready, Reason::Suspended, &revision)
                    .with_message("spec.suspend is true: not reconciled")
            } else if let Some(r) = held.filter(|_| !drift) {
                let report = ApplyReport {
                    pinset: ps.id.to_string(),
                    unchanged: r.pins,
                    ..ApplyReport::default()
                };
                report_outcome(&ps.id, &report, &revision, false)
            } else {
                let force = self.opts.force || ps.force_prune();
                // What changed since the revision this controller applied last.
                let changes = loaded
                    .changes
                    .as_ref()
                    .filter(|_| !drift)
                    .filter(|(base, _)| self.state.last_applied_revision.as_ref() == Some(base))
                    .and_then(|(base, c)| Some((base.as_str(), c.get(&ps.id)?)));
                match patch::send(
                    &self.client,
                    ps,
                    changes,
                    force,
                    &self.opts.source,
                    &revision,
                )
                .await
                {
                    Ok(r) => report_outcome(&ps.id, &r, &revision, false),
                    Err(e) => error_outcome(&ps.id, &e, &revision),
                }
            };
            self.state.statuses.insert(ps.id.clone(), o.clone());
            out.pinsets.push(o);
        }

        let desired: Vec<&PinSetId> = loaded.pinsets.iter().map(|p| &p.id).collect();
        for id in owned.iter().filter(|id| !desired.contains(id)) {
            let o = match self.client.delete_pinset(id, self.opts.force, false).await {
                Ok(r) => report_outcome(id, &r, &revision, true),
                Err(ClientError::Api { status: 404, .. }) => {
                    PinSetOutcome::new(id, ConditionType::Ready, Reason::Released, &revision)
                }
                Err(e) => error_outcome(id, &e, &revision),
            };
            if o.reason == Reason::Released {
                self.state.statuses.remove(id);
            } else {
                self.state.statuses.insert(id.clone(), o.clone());
            }
            out.pinsets.push(o);
        }
        if out
            .pinsets
            .iter()
            .all(|o| o.reason != Reason::ClusterUnavailable)
        {
            self.state.last_applied_revision = Some(revision);
        }
        if self.keep_loads && out.healthy() {
            loaded.changes = None;
            self.previous = Some(loaded);
        }
        out
    }
}

/// The Kubernetes-style conditions of an outcome. A condition whose status
/// and reason match `previous` keeps its `lastTransitionTime`; others are
/// stamped `now`.
pub fn conditions_of(
    o: &PinSetOutcome,
    previous: Option<&Vec<Condition>>,
    now: &str,
) -> Vec<Condition> {
    let reason = o.reason.to_string();
    let (ready, reconciling, stalled) = match o.condition {
        ConditionType::Stalled => (
            ("False", reason.clone(), o.message.clone()),
            ("False", reason.clone(), String::new()),
            ("True", reason, o.message.clone()),
        ),
        ConditionType::Ready => (
            ("True", reason.clone(), o.message.clone()),
            ("False", reason, String::new()),
            ("False", "NotStalled".to_string(), String::new()),
        ),
        ConditionType::Reconciling => (
            ("False", reason.clone(), o.message.clone()),
            ("True", reason, o.message.clone()),
            ("False", "NotStalled".to_string(), String::new()),
        ),
    };
    [
        ("Ready", ready),
        ("Reconciling", reconciling),
        ("Stalled", stalled),
    ]
    .into_iter()
    .map(|(type_, (status, reason, message))| {
        let since = previous
            .and_then(|p| p.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == status && c.reason == reason)
            .map_or_else(|| now.to_string(), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason,
            message: capped(message, MAX_STORED_MESSAGE_BYTES),
            last_transition_time: since,
            observed_generation: None,
        }
    })
    .collect()
}

/// The PinSets a manifest that does not load names (best effort: a
/// line scan of each file with a problem for `metadata.name` and
/// `metadata.namespace`, per YAML document).
fn guess_ids(diags: &Diagnostics) -> Vec<PinSetId> {
    let mut files: Vec<&std::path::Path> = diags.0.iter().map(|d| d.file.as_path()).collect();
    files.dedup();
    let mut out = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for doc in text.split("\n---") {
            if let Some(id) = scan_metadata(doc)
                && !out.contains(&id)
            {
                out.push(id);
            }
        }
    }
    out
}

fn scan_metadata(doc: &str) -> Option<PinSetId> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut lines = doc.lines().skip_while(|l| l.trim_end() != "metadata:");
    lines.next()?;
    let (mut name, mut namespace, mut child) = (None, None, None);
    for l in lines {
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            continue;
        }
        if indent(l) == 0 {
            break;
        }
        if *child.get_or_insert(indent(l)) != indent(l) {
            continue;
        }
        let value = |key: &str| {
            l.trim()
                .strip_prefix(key)
                .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        };
        if let Some(v) = value("name:") {
            name = Some(v);
        } else if let Some(v) = value("namespace:") {
            namespace = Some(v);
        }
    }
    let name = name.filter(|n| check_dns_label(n).is_ok())?;
    let namespace = namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    check_dns_label(&namespace).ok()?;
    Some(PinSetId::new(namespace, name))
}

fn report_outcome(id: &PinSetId, r: &ApplyReport, revision: &str, release: bool) -> PinSetOutcome {
    if let Some(why) = &r.refused {
        let what = if release {
            "releasing the PinSet"
        } else {
            "apply"
        };
        return PinSetOutcome::new(id, ConditionType::Stalled, Reason::PruneGuard, revision)
            .with_report(r)
            .with_message(format!("{what} refused: {why}"));
    }
    let (cond, reason) = if release {
        (ConditionType::Ready, Reason::Released)
    } else if r.suspended {
        (ConditionType::Ready, Reason::Suspended)
    } else {
        (ConditionType::Ready, Reason::Succeeded)
    };
    PinSetOutcome::new(id, cond, reason, revision).with_report(r)
}

fn error_outcome(id: &PinSetId, e: &ClientError, revision: &str) -> PinSetOutcome {
    if e.is_conflict() {
        // Not stalled: nothing is wrong with the manifest or the cluster,
        // and the next reconcile plans the PinSet again.
        return PinSetOutcome::new(id, ConditionType::Reconciling, Reason::Conflict, revision)
            .with_message(error_chain(e));
    }
    let reason = match e {
        _ if e.is_unavailable() => Reason::ClusterUnavailable,
        ClientError::Api { status: 422, .. } => Reason::ManifestInvalid,
        _ => Reason::ApplyFailed,
    };
    let mut message = error_chain(e);
    if let ClientError::Api { errors, .. } = e {
        for p in errors {
            message.push_str(&format!("\n{}:{}:{}: {}", p.file, p.line, p.col, p.message));
        }
    }
    PinSetOutcome::new(id, ConditionType::Stalled, reason, revision).with_message(message)
}

/// `error: cause: cause…` on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_made_while_the_source_loads_waits_for_the_next_cycle() {
        let requests = ReconcileRequests::default();
        let mut ctl = Controller::new(
            Client::new("http://127.0.0.1:9").unwrap(),
            ControllerOptions {
                source: "dir:/nowhere".into(),
                force: false,
                requests: requests.clone(),
            },
        );
        let unreadable = || {
            Err(LoadError::Io {
                path: "/nowhere".into(),
                source: std::io::Error::other("gone"),
            })
        };
        ctl.begin();
        // The request arrives after the cycle began reading the source.
        let ticket = requests.request();
        ctl.reconcile(unreadable(), false).await;
        assert!(requests.pending(), "served by a load that predates it");
        ctl.begin();
        ctl.reconcile(unreadable(), false).await;
        assert!(!requests.pending());
        assert!(
            requests
                .wait_handled(ticket, std::time::Duration::ZERO)
                .await
        );
        // The caller learns that the reconcile that served it failed, and why.
        let outcome = requests.last_outcome().unwrap();
        assert!(!outcome.healthy);
        assert!(outcome.error.unwrap().contains("gone"));
    }

    #[test]
    fn an_invalid_manifest_names_its_pinsets() {
        let doc = "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: a\n  labels:\n    name: not-this\n  namespace: ns\nspec:\n  pins: [\n";
        assert_eq!(scan_metadata(doc), Some(PinSetId::new("ns", "a")));
        let doc = "kind: PinSet\nmetadata:\n  name: \"b\"\nspec: {\n";
        assert_eq!(
            scan_metadata(doc),
            Some(PinSetId::new(DEFAULT_NAMESPACE, "b"))
        );
        assert_eq!(scan_metadata("kind: PinSet\nspec: [\n"), None);
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let id = PinSetId::new("ns", "a");
        let o = PinSetOutcome::new(&id, ConditionType::Stalled, Reason::PruneGuard, "r1")
            .with_message("3 of its 4");
        let first = conditions_of(&o, None, "t0");
        let stalled = first.iter().find(|c| c.type_ == "Stalled").unwrap();
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "PruneGuard")
        );
        assert_eq!(conditions_of(&o, Some(&first), "t1"), first);
        let ok = PinSetOutcome::new(&id, ConditionType::Ready, Reason::Succeeded, "r2");
        let next = conditions_of(&ok, Some(&first), "t2");
        let ready = next.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.last_transition_time.as_str()),
            ("True", "t2")
        );
    }

    #[tokio::test]
    async fn an_engine_holding_one_pinset_reads_its_record_instead_of_listing_all() {
        use std::sync::{Arc, Mutex};
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = Arc::clone(&seen);
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let log = Arc::clone(&log);
            async move {
                let line = format!("{} {}", req.method(), req.uri().path());
                log.lock().unwrap().push(line.clone());
                if line == "GET /pinsets" {
                    return (axum::http::StatusCode::OK, "[]");
                }
                (
                    axum::http::StatusCode::NOT_FOUND,
                    r#"{"code":404,"message":"no"}"#,
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        // A suspended PinSet: the engine reads what it owns, sends nothing.
        let mut ps = crate::testkit::seq_pinset("ns", "a", 0..2);
        ps.suspend = true;
        let loaded = || Loaded {
            pinsets: vec![ps.clone()],
            digest: "r1".into(),
            manifest_files: 1,
            lists: Vec::new(),
            duplicates: 0,
            changes: None,
            source_digests: BTreeMap::new(),
        };
        let engine = |source: &str| {
            let opts = ControllerOptions {
                source: source.into(),
                force: false,
                requests: ReconcileRequests::default(),
            };
            Controller::new(Client::new(&url).unwrap(), opts)
        };
        let reads = |seen: &Mutex<Vec<String>>| -> Vec<String> {
            let mut s = seen.lock().unwrap();
            let out = s.iter().filter(|l| l.starts_with("GET")).cloned().collect();
            s.clear();
            out
        };
        let mut one = engine("kube:ns/a").holding_only(PinSetId::new("ns", "a"));
        let out = one.reconcile(Ok(loaded()), true).await;
        assert_eq!(out.pinsets[0].reason, Reason::Suspended, "{out:?}");
        assert_eq!(reads(&seen), ["GET /pinsets/ns/a"]);
        // Any other source lists every PinSet, as before.
        let mut dir = engine("dir:/srv");
        dir.reconcile(Ok(loaded()), true).await;
        assert_eq!(reads(&seen), ["GET /pinsets"]);
    }
}
