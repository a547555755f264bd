//! The PinSet apply service (DESIGN §4–§5): plans a PinSet (whole, or as
//! a patch of the pins that changed) against what its owner holds in the
//! shared state, applies the prune guard ([`plan::check_guard`], the one
//! implementation), and commits the result as one atomic revision — staged
//! chunks of at most `consensus.batch_max_pins` ops and at most one log
//! entry's bytes ([`MAX_ENTRY_BYTES`](crate::consensus::MAX_ENTRY_BYTES)), then a commit — so readers see
//! revision R or R+1, never a mix. A pin or a PinSet record too large for
//! an entry is refused before anything is written.
//!
//! Writes are conditional (DESIGN §9): after the read barrier the owner's
//! generation is read *before* anything the plan looks at, and the commit
//! names it as its base; the state machine refuses the commit if any other
//! commit for the owner landed since, so concurrent applies (controller and
//! CLI, an old and a new leader) never interleave. The refusal comes back as
//! [`ClusterError::Refused`] ("… changed since this apply was planned …");
//! planning again is the caller's choice.
//!
//! It sits above consensus and calls it only to read the local state (after
//! a read barrier) and to write commands; what a command does to the state
//! is `state`'s business, what to plan is `plan`'s.

// The state store answers with openraft's storage error (~224 bytes), as in
// `consensus`; boxing it at every read would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;

use crate::consensus::{ClusterError, ClusterNode};
use crate::manifest::{CidKey, DesiredPin, DesiredPinSet, Owner, PinSetId};
use crate::plan::{self, OwnedPins, Plan, PruneGuard, plan_pinset, plan_release_all};

mod staged;
use crate::state::{Op, Outcome, PinSetRecord, plan_ops};
use crate::wire::ApplyReport;
pub use staged::StagedWrite;

/// Most CIDs of each kind listed in a report's `sample`.
const SAMPLE: usize = 10;

/// A PinSet to apply.
#[derive(Clone, Debug)]
pub struct PinSetApply {
    /// The validated, resolved PinSet.
    pub pinset: DesiredPinSet,
    /// Revision label (content digest, git revision).
    pub revision: String,
    /// Where it came from.
    pub source: String,
    /// Prune guard (the PinSet's force-prune annotation is honoured too).
    pub guard: PruneGuard,
    /// Plan only.
    pub dry_run: bool,
}

/// A new revision of an applied PinSet, given as the pins that differ from
/// the revision the cluster holds (`base_revision`): what a controller that
/// remembers its last apply sends instead of the whole PinSet.
#[derive(Clone, Debug)]
pub struct PinSetPatch {
    /// `namespace/name`.
    pub id: PinSetId,
    /// The revision the cluster must hold for the patch to apply.
    pub base_revision: String,
    /// The revision the patch brings the PinSet to.
    pub revision: String,
    /// Where it came from.
    pub source: String,
    /// Labels of the new revision.
    pub labels: BTreeMap<String, String>,
    /// Prune enabled in the new revision.
    pub prune: bool,
    /// Reconciling suspended in the new revision (nothing is written).
    pub suspend: bool,
    /// Pins the PinSet declares in the new revision.
    pub pins: u64,
    /// Pins to add or whose name or options change.
    pub set: Vec<(CidKey, DesiredPin)>,
    /// Pins that left the PinSet.
    pub release: Vec<CidKey>,
    /// Prune guard.
    pub guard: PruneGuard,
    /// Plan only.
    pub dry_run: bool,
}

/// The pins `owner` holds in this peer's state.
async fn owned_by(node: &ClusterNode, owner: &Owner) -> Result<OwnedPins, ClusterError> {
    let store = node.store().clone();
    let owner = owner.clone();
    tokio::task::spawn_blocking(move || store.owned_by(&owner))
        .await
        .map_err(|e| ClusterError::Storage(e.to_string()))?
        .map_err(|e| ClusterError::Storage(e.to_string()))
}

/// `owner`'s generation in this peer's state: the base of a commit planned
/// from what is read after it. Read first, so that a commit landing while
/// the plan reads makes the plan's commit refused, never half-seen.
fn generation_of(node: &ClusterNode, owner: &Owner) -> Result<u64, ClusterError> {
    node.store()
        .generation(owner)
        .map_err(|e| ClusterError::Storage(e.to_string()))
}

/// `owner`'s PinSet record in this peer's state.
fn record_of(node: &ClusterNode, owner: &Owner) -> Result<Option<PinSetRecord>, ClusterError> {
    node.store()
        .pinset(owner)
        .map_err(|e| ClusterError::Storage(e.to_string()))
}

/// Plans a PinSet against the current state (after a read barrier) and,
/// unless a dry run, commits it atomically. Re-applying an unchanged
/// revision writes nothing.
pub async fn apply(node: &ClusterNode, req: PinSetApply) -> Result<ApplyReport, ClusterError> {
    node.read_barrier().await?;
    let ps = &req.pinset;
    let owner = ps.owner();
    let base = generation_of(node, &owner)?;
    let current = owned_by(node, &owner).await?;
    let mut report = ApplyReport {
        pinset: ps.id.to_string(),
        dry_run: req.dry_run,
        ..ApplyReport::default()
    };
    let plan = match plan_pinset(ps, &current, req.guard) {
        Ok(p) => p,
        Err(e) => {
            report.release = e.release as u64;
            report.unchanged = current.len() as u64;
            report.refused = Some(e.to_string());
            return Ok(report);
        }
    };
    report.add = plan.add.len() as u64;
    report.update = plan.update.len() as u64;
    report.release = plan.release.len() as u64;
    report.unchanged = plan.unchanged as u64;
    report.sample = sample(&plan);
    let record = PinSetRecord {
        namespace: ps.id.namespace.clone(),
        name: ps.id.name.clone(),
        revision: req.revision.clone(),
        labels: ps.labels.clone(),
        source: req.source.clone(),
        pins: ps.pins.len() as u64,
        prune: ps.prune,
        suspend: ps.suspend,
        applied_at_ms: 0,
    };
    let same_record = record_of(node, &owner)?.is_some_and(|r| {
        PinSetRecord {
            applied_at_ms: 0,
            ..r
        } == record
    });
    report.suspended = ps.suspend;
    // Suspended: keep the state as it is (DESIGN §4), report what would change.
    if req.dry_run || ps.suspend || (plan.is_empty() && same_record) {
        return Ok(report);
    }
    commit_revision(node, owner, base, &plan, record, report).await
}

/// Applies a patch atomically (one revision: staged chunks and one
/// commit, as [`apply`]) after a read
/// barrier, or returns `None` without writing when the PinSet is not
/// recorded at `base_revision` (the caller then sends the whole PinSet).
///
/// Only the patched pins are read: ops that change nothing are dropped
/// (re-sending a patch writes no log entry once its revision is
/// recorded), releases of pins the owner does not hold are ignored, and
/// the prune guard counts the releases against the pins the base
/// revision declared (what the owner holds when it prunes).
pub async fn apply_patch(
    node: &ClusterNode,
    patch: PinSetPatch,
) -> Result<Option<ApplyReport>, ClusterError> {
    node.read_barrier().await?;
    let owner = Owner::pinset(patch.id.clone());
    let generation = generation_of(node, &owner)?;
    let Some(base) = record_of(node, &owner)? else {
        return Ok(None);
    };
    let mut report = ApplyReport {
        pinset: patch.id.to_string(),
        dry_run: patch.dry_run,
        suspended: patch.suspend,
        ..ApplyReport::default()
    };
    if base.revision != patch.revision && base.revision != patch.base_revision {
        return Ok(None);
    }
    let mut cids: Vec<CidKey> = patch.set.iter().map(|(c, _)| *c).collect();
    cids.extend(patch.release.iter().copied());
    let store = node.store().clone();
    let probe = owner.clone();
    let held = tokio::task::spawn_blocking(move || store.owner_specs(&probe, &cids))
        .await
        .map_err(|e| ClusterError::Storage(e.to_string()))?
        .map_err(|e| ClusterError::Storage(e.to_string()))?;
    let (held_set, held_release) = held.split_at(patch.set.len());
    let mut plan = Plan {
        owner: owner.clone(),
        add: Vec::new(),
        update: Vec::new(),
        release: Vec::new(),
        unchanged: 0,
    };
    for ((cid, pin), before) in patch.set.into_iter().zip(held_set) {
        match before {
            None => plan.add.push((cid, pin)),
            Some(spec) if plan::asks_for(&pin.spec, spec) => plan.unchanged += 1,
            Some(spec) => plan.update.push(plan::Update {
                cid,
                from: spec.clone(),
                to: pin,
            }),
        }
    }
    for (cid, before) in patch.release.into_iter().zip(held_release) {
        if before.is_some() {
            plan.release.push(cid);
        }
    }
    report.add = plan.add.len() as u64;
    report.update = plan.update.len() as u64;
    report.release = plan.release.len() as u64;
    report.unchanged = base.pins.saturating_sub(report.update + report.release);
    report.sample = sample(&plan);
    // The owner holds what the base revision declared; the guard counts the
    // releases against that, as a whole apply would.
    let owned = usize::try_from(base.pins).unwrap_or(usize::MAX);
    let desired = usize::try_from(patch.pins).unwrap_or(usize::MAX);
    if let Err(tripped) = plan::check_guard(&plan, owned, desired, patch.guard) {
        report.refused = Some(tripped.to_string());
        return Ok(Some(report));
    }
    let record = PinSetRecord {
        namespace: patch.id.namespace.clone(),
        name: patch.id.name.clone(),
        revision: patch.revision,
        labels: patch.labels,
        source: patch.source,
        pins: patch.pins,
        prune: patch.prune,
        suspend: patch.suspend,
        applied_at_ms: 0,
    };
    let same_record = PinSetRecord {
        applied_at_ms: 0,
        ..base
    } == record;
    if patch.dry_run || patch.suspend || (plan.is_empty() && same_record) {
        return Ok(Some(report));
    }
    commit_revision(node, owner, generation, &plan, record, report)
        .await
        .map(Some)
}

/// Releases everything a PinSet owns and forgets it, under the guard.
pub async fn delete(
    node: &ClusterNode,
    owner: Owner,
    guard: PruneGuard,
    dry_run: bool,
) -> Result<ApplyReport, ClusterError> {
    node.read_barrier().await?;
    let base = generation_of(node, &owner)?;
    let current = owned_by(node, &owner).await?;
    let mut report = ApplyReport {
        pinset: match &owner {
            Owner::PinSet(id) => id.to_string(),
            other => other.to_string(),
        },
        dry_run,
        ..ApplyReport::default()
    };
    let plan = match plan_release_all(&owner, &current, guard) {
        Ok(p) => p,
        Err(e) => {
            report.release = e.release as u64;
            report.refused = Some(e.to_string());
            return Ok(report);
        }
    };
    report.release = plan.release.len() as u64;
    report.sample = sample(&plan);
    let known = record_of(node, &owner)?.is_some();
    if dry_run || (plan.is_empty() && !known) {
        return Ok(report);
    }
    let (out, entries) = commit_ops(node, owner, base, plan_ops(&plan), None).await?;
    report.entries = entries;
    report.removed = out.removed;
    Ok(report)
}

/// Commits `plan` (made at generation `base`) as the revision `record`
/// (stamped with the time now) and adds what the commit did to `report`.
async fn commit_revision(
    node: &ClusterNode,
    owner: Owner,
    base: u64,
    plan: &Plan,
    record: PinSetRecord,
    mut report: ApplyReport,
) -> Result<ApplyReport, ClusterError> {
    let record = PinSetRecord {
        applied_at_ms: chrono::Utc::now().timestamp_millis(),
        ..record
    };
    let (out, entries) = commit_ops(node, owner, base, plan_ops(plan), Some(record)).await?;
    report.entries = entries;
    report.created = out.created;
    report.removed = out.removed;
    Ok(report)
}

/// Writes `ops` as one atomic revision ([`StagedWrite`]): `Stage` chunks,
/// then a `Commit` conditional on the owner still being at generation
/// `base`. A write retried after its first attempt was committed (lost
/// reply, new leader) answers the first attempt's outcome: the attempt id
/// is the same. A pin or a record that cannot fit an entry is refused
/// (`TooLarge`) before anything is written.
async fn commit_ops(
    node: &ClusterNode,
    owner: Owner,
    base: u64,
    ops: Vec<Op>,
    record: Option<PinSetRecord>,
) -> Result<(Outcome, u64), ClusterError> {
    let mut write = StagedWrite::new(node, owner, &record)?;
    for op in ops {
        if let Err(e) = write.push(op).await {
            write.abort().await;
            return Err(e);
        }
    }
    let (out, entries) = write.commit(Some(base), record).await?;
    if let Some(r) = out.refused {
        return Err(ClusterError::Refused(r));
    }
    Ok((out, entries))
}

fn sample(plan: &Plan) -> BTreeMap<String, Vec<String>> {
    let mut s = BTreeMap::new();
    s.insert(
        "add".to_string(),
        plan.add
            .iter()
            .take(SAMPLE)
            .map(|(c, p)| display(c, &p.written_as))
            .collect(),
    );
    s.insert(
        "update".to_string(),
        plan.update
            .iter()
            .take(SAMPLE)
            .map(|u| display(&u.cid, &u.to.written_as))
            .collect(),
    );
    s.insert(
        "release".to_string(),
        plan.release
            .iter()
            .take(SAMPLE)
            .map(ToString::to_string)
            .collect(),
    );
    s
}

fn display(cid: &CidKey, written: &Option<Box<str>>) -> String {
    written
        .as_deref()
        .map(str::to_string)
        .unwrap_or_else(|| cid.to_string())
}
