//! The replicated state machine's commands and their deterministic apply.
//!
//! A command is what travels in one Raft log entry. Applying it reads and
//! writes a `PinStore` (in memory for tests, redb tables in a peer) and never
//! reads a clock: the proposer stamps `now_ms` into the request, so every peer
//! computes the same result from the same log.
//!
//! A PinSet revision is atomic: large revisions are sent as `Stage` chunks
//! that change nothing visible, then one `Commit` applies every staged chunk
//! and its own ops together in one store transaction.
//!
//! Writes are conditional (DESIGN §9): every owner has a generation, counted
//! up by each commit for it; a `Commit` names the generation its ops were
//! planned against and is refused when that changed, so two concurrent
//! applies of one PinSet never interleave. Commits are idempotent: the owner's
//! last committed attempt and its outcome are remembered, and a retry of that
//! attempt (its reply was lost) answers the same outcome again.

use std::collections::{BTreeMap, HashMap};

use super::StatePin;
pub use super::command::{
    Command, CommitRecord, ConditionsRecord, MAX_RECONCILES, Op, Outcome, PinSetRecord,
    ReconcileEntry, Request,
};
use super::pinsvc::PinSvcRequest;
use super::sharded::{is_meta, part_refusal};
use crate::manifest::{CidKey, Owner, ShardKind};

/// Staged chunks older than this are dropped when any later revision commits.
pub const STAGING_TTL_MS: i64 = 60 * 60 * 1000;

/// Storage the state machine applies to.
pub trait PinStore {
    /// Storage failure.
    type Error;
    /// One pin.
    fn get(&self, cid: &CidKey) -> Result<Option<StatePin>, Self::Error>;
    /// Inserts or replaces a pin; `before` is its previous value (for indexes).
    fn put(&mut self, pin: &StatePin, before: Option<&StatePin>) -> Result<(), Self::Error>;
    /// Deletes a pin.
    fn remove(&mut self, before: &StatePin) -> Result<(), Self::Error>;
    /// The pins that are a cluster DAG or a shard of the sharded pin
    /// `meta` ([`StatePin::shard_metas`]), in CID-bytes order; kept as an
    /// index by `put` and `remove`.
    fn shard_members(&self, meta: &CidKey) -> Result<Vec<CidKey>, Self::Error>;
    /// Saves a chunk of a revision.
    fn stage(
        &mut self,
        owner: &Owner,
        revision: u64,
        seq: u32,
        now_ms: i64,
        ops: &[Op],
    ) -> Result<(), Self::Error>;
    /// Removes and returns the staged chunks of a revision, in order.
    fn take_staged(&mut self, owner: &Owner, revision: u64) -> Result<Vec<Vec<Op>>, Self::Error>;
    /// Drops staged chunks written before `older_than_ms`.
    fn expire_staged(&mut self, older_than_ms: i64) -> Result<(), Self::Error>;
    /// Records (or with `None` forgets) a PinSet.
    fn set_pinset(
        &mut self,
        owner: &Owner,
        record: Option<&PinSetRecord>,
    ) -> Result<(), Self::Error>;
    /// Records (or with `None` forgets) a controller's conditions report.
    fn set_conditions(
        &mut self,
        owner: &Owner,
        record: Option<&ConditionsRecord>,
    ) -> Result<(), Self::Error>;
    /// The recorded PinSet of `owner`, if any.
    fn pinset(&self, owner: &Owner) -> Result<Option<PinSetRecord>, Self::Error>;
    /// The controller's conditions report of `owner`, if any.
    fn conditions(&self, owner: &Owner) -> Result<Option<ConditionsRecord>, Self::Error>;
    /// The owner's commit record, if it ever committed.
    fn commits(&self, owner: &Owner) -> Result<Option<CommitRecord>, Self::Error>;
    /// Replaces the owner's commit record.
    fn set_commits(&mut self, owner: &Owner, record: &CommitRecord) -> Result<(), Self::Error>;
    /// A Pinning Service request by id.
    fn pinsvc_get(&self, requestid: &str) -> Result<Option<PinSvcRequest>, Self::Error>;
    /// Stores a new Pinning Service request (its id and `created_ns` are
    /// not in use).
    fn pinsvc_put(&mut self, request: &PinSvcRequest) -> Result<(), Self::Error>;
    /// Forgets a stored Pinning Service request.
    fn pinsvc_remove(&mut self, request: &PinSvcRequest) -> Result<(), Self::Error>;
    /// Whether any request of `token` is for `cid`.
    fn pinsvc_holds(&self, token: &str, cid: &CidKey) -> Result<bool, Self::Error>;
    /// The latest `created_ns` of any stored request (0 when none).
    fn pinsvc_last_created(&self) -> Result<i64, Self::Error>;
}

/// Applies one request to a store. Deterministic; applying the same
/// `Apply` twice changes nothing the second time, and a `Commit` (or
/// `Stage`) repeated after its commit answers the first outcome.
pub fn apply<S: PinStore>(store: &mut S, req: &Request) -> Result<Outcome, S::Error> {
    apply_command(store, req.now_ms, &req.command)
}

fn apply_command<S: PinStore>(
    store: &mut S,
    now_ms: i64,
    command: &Command,
) -> Result<Outcome, S::Error> {
    let mut out = Outcome::default();
    match command {
        Command::Apply { owner, ops } => {
            apply_ops(store, owner, ops, now_ms, &mut out)?;
            // A PinSet's pins changed outside a commit: plans made before
            // are stale too. (The `api` owner never commits: no record.)
            if matches!(owner, Owner::PinSet(_)) {
                let mut head = store.commits(owner)?.unwrap_or_default();
                head.generation += 1;
                store.set_commits(owner, &head)?;
            }
        }
        Command::Stage {
            owner,
            revision,
            seq,
            ops,
        } => {
            // A retried chunk of the revision committed last: already in.
            if !committed_last(store, owner, *revision)? {
                store.stage(owner, *revision, *seq, now_ms, ops)?;
            }
            out.staged = ops.len() as u64;
        }
        Command::Commit {
            owner,
            revision,
            base,
            staged,
            ops,
            record,
        } => {
            let mut head = store.commits(owner)?.unwrap_or_default();
            if head.last_attempt == Some(*revision) {
                // A retry of the commit applied last (its reply was lost).
                return Ok(head.last_outcome);
            }
            if let Some(base) = base
                && *base != head.generation
            {
                store.take_staged(owner, *revision)?;
                out.refused = Some(format!(
                    "{} changed since this apply was planned (generation {base}, now {}): nothing applied; apply again",
                    describe(owner),
                    head.generation
                ));
                return Ok(out);
            }
            let chunks = store.take_staged(owner, *revision)?;
            if chunks.len() != *staged as usize {
                out.refused = Some(format!(
                    "revision {revision} of {owner}: {} of {staged} chunks staged (expired or lost); nothing applied",
                    chunks.len()
                ));
                return Ok(out);
            }
            apply_revision(store, owner, chunks, ops, now_ms, &mut out)?;
            // Other owners (a bulk `api` import) have no PinSet record.
            if matches!(owner, Owner::PinSet(_)) {
                store.set_pinset(owner, record.as_ref())?;
                if record.is_none() {
                    store.set_conditions(owner, None)?;
                }
            }
            store.expire_staged(now_ms - STAGING_TTL_MS)?;
            head.generation += 1;
            head.last_attempt = Some(*revision);
            head.last_outcome = out.clone();
            store.set_commits(owner, &head)?;
        }
        Command::Allocate { allocations } => {
            for (cid, peers) in allocations {
                let Some(before) = store.get(cid)? else {
                    continue;
                };
                if &before.allocations == peers {
                    continue;
                }
                let mut pin = before.clone();
                pin.allocations = peers.clone();
                store.put(&pin, Some(&before))?;
                out.changed += 1;
            }
        }
        Command::SetConditions {
            owner,
            source,
            revision,
            conditions,
        } => {
            let reconciles = store
                .conditions(owner)?
                .map(|r| r.reconciles)
                .unwrap_or_default();
            let record =
                (!conditions.is_empty() || !reconciles.is_empty()).then(|| ConditionsRecord {
                    source: source.clone(),
                    revision: revision.clone(),
                    conditions: conditions.clone(),
                    reported_at_ms: now_ms,
                    reconciles,
                });
            store.set_conditions(owner, record.as_ref())?;
            out.changed += 1;
        }
        Command::RecordReconcile { owner, entry } => {
            // Only for a recorded PinSet: a delete forgets its history.
            if store.pinset(owner)?.is_none() {
                return Ok(out);
            }
            let mut record = store.conditions(owner)?.unwrap_or(ConditionsRecord {
                source: String::new(),
                revision: None,
                conditions: Vec::new(),
                reported_at_ms: now_ms,
                reconciles: Vec::new(),
            });
            let entry = ReconcileEntry {
                at_ms: now_ms,
                ..entry.clone()
            };
            record.reconciles.insert(0, entry);
            record.reconciles.truncate(MAX_RECONCILES);
            store.set_conditions(owner, Some(&record))?;
            out.changed += 1;
        }
        Command::Unpin { cid, force } => {
            if let Some(before) = store.get(cid)? {
                if let Some(refusal) = part_refusal(store, &before)? {
                    out.refused = Some(refusal);
                    return Ok(out);
                }
                let pinsets: Vec<Owner> = before
                    .owners
                    .keys()
                    .filter(|o| **o != Owner::Api)
                    .cloned()
                    .collect();
                if pinsets.is_empty() {
                    let release = [Op::Release { cid: *cid }];
                    apply_ops(store, &Owner::Api, &release, now_ms, &mut out)?;
                } else if !force {
                    out.refused = unpin_refusal(&cid.to_string(), &before);
                } else {
                    store.remove(&before)?;
                    out.removed += 1;
                    if is_meta(&before) {
                        for member in store.shard_members(cid)? {
                            if let Some(m) = store.get(&member)? {
                                store.remove(&m)?;
                                out.removed += 1;
                            }
                        }
                    }
                    for owner in &pinsets {
                        let mut head = store.commits(owner)?.unwrap_or_default();
                        head.generation += 1;
                        store.set_commits(owner, &head)?;
                    }
                }
            }
        }
        Command::Abort { owner, revision } => {
            store.take_staged(owner, *revision)?;
        }
        Command::PinSvc(change) => {
            super::pinsvc::apply_change(store, now_ms, change, &mut out, apply_ops::<S>)?;
        }
        Command::Batch(members) => {
            for command in members {
                let one = apply_command(store, now_ms, command)?;
                out.created += one.created;
                out.changed += one.changed;
                out.removed += one.removed;
                out.staged += one.staged;
                out.members.push(one);
            }
        }
    }
    Ok(out)
}

/// PinSets an unpin refusal names before it says "and N more".
const UNPIN_OWNERS_SHOWN: usize = 5;

/// Why `DELETE /pins/{cid}` without `force` must leave `pin` alone: the
/// PinSets that own it, or `None` when only owner `api` does. `cid` is the
/// CID as the caller wrote it.
pub fn unpin_refusal(cid: &str, pin: &StatePin) -> Option<String> {
    let pinsets: Vec<String> = pin
        .owners
        .keys()
        .filter_map(|o| match o {
            Owner::PinSet(id) => Some(id.to_string()),
            Owner::PinSvc(token) => Some(format!("pinsvc:{token}")),
            Owner::Api => None,
        })
        .collect();
    if pinsets.is_empty() {
        return None;
    }
    let also = if pin.owners.contains_key(&Owner::Api) {
        "also "
    } else {
        ""
    };
    let mut names = pinsets
        .iter()
        .take(UNPIN_OWNERS_SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if pinsets.len() > UNPIN_OWNERS_SHOWN {
        names.push_str(&format!(" and {} more", pinsets.len() - UNPIN_OWNERS_SHOWN));
    }
    // Pinning Service requests are named `pinsvc:<token>`, PinSets by id.
    let (kind, those) = if pin.owners.keys().any(|o| matches!(o, Owner::PinSvc(_))) {
        ("owners", "owners")
    } else {
        ("pinset", "PinSets")
    };
    Some(format!(
        "{} is {also}owned by {kind} {names}: it stays pinned; remove it from those {those}, \
         or unpin with force=true as an admin (force removes it from every owner; a PinSet \
         that still declares it pins it again on its next apply)",
        crate::manifest::shown(cid)
    ))
}

/// True when `revision` is the attempt `owner` committed last.
fn committed_last<S: PinStore>(store: &S, owner: &Owner, revision: u64) -> Result<bool, S::Error> {
    Ok(store
        .commits(owner)?
        .is_some_and(|h| h.last_attempt == Some(revision)))
}

/// How a refusal names an owner.
fn describe(owner: &Owner) -> String {
    match owner {
        Owner::PinSet(id) => format!("pinset {id}"),
        Owner::Api => "owner api".to_string(),
        Owner::PinSvc(token) => format!("owner pinsvc:{token}"),
    }
}

fn apply_ops<S: PinStore>(
    store: &mut S,
    owner: &Owner,
    ops: &[Op],
    now_ms: i64,
    out: &mut Outcome,
) -> Result<(), S::Error> {
    // A new pin placed by a later op of the batch is written once, with
    // its peers, and that `Place` is then skipped.
    let mut placed: HashMap<&CidKey, &Vec<String>> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Place { cid, peers } => Some((cid, peers)),
            _ => None,
        })
        .collect();
    for op in ops {
        match op {
            Op::Set {
                cid,
                written_as,
                spec,
            } => match store.get(cid)? {
                None => {
                    let pin = StatePin {
                        cid: *cid,
                        written_as: written_as.clone(),
                        owners: BTreeMap::from([(owner.clone(), spec.clone())]),
                        allocations: placed.remove(cid).cloned().unwrap_or_default(),
                        timestamp_ms: now_ms,
                    };
                    store.put(&pin, None)?;
                    out.created += 1;
                }
                Some(before) => {
                    if before.owners.get(owner).is_some_and(|s| s.same_as(spec)) {
                        continue;
                    }
                    let mut pin = before.clone();
                    pin.owners.insert(owner.clone(), spec.clone());
                    store.put(&pin, Some(&before))?;
                    out.changed += 1;
                }
            },
            Op::Release { cid } => {
                let Some(before) = store.get(cid)? else {
                    continue;
                };
                let meta = before
                    .owners
                    .get(owner)
                    .and_then(|s| s.options.shard_role.as_ref())
                    .is_some_and(|r| r.kind == ShardKind::Meta);
                release(store, owner, before, out)?;
                // Releasing a sharded pin releases its cluster DAG and
                // shards for the same owner, on every path (REST, plans);
                // once the meta pin has left the state they all go, whoever
                // wrote them.
                if meta {
                    let gone = store.get(cid)?.is_none();
                    for member in store.shard_members(cid)? {
                        match store.get(&member)? {
                            Some(m) if gone => {
                                store.remove(&m)?;
                                out.removed += 1;
                            }
                            Some(m) => release(store, owner, m, out)?,
                            None => {}
                        }
                    }
                }
            }
            Op::Place { cid, peers } => {
                // Taken by the pin's creation above: already written.
                if !placed.contains_key(cid) {
                    continue;
                }
                let Some(before) = store.get(cid)? else {
                    continue;
                };
                if &before.allocations != peers {
                    let mut pin = before.clone();
                    pin.allocations = peers.clone();
                    store.put(&pin, Some(&before))?;
                }
            }
        }
    }
    Ok(())
}

/// Applies a revision's staged `chunks` then its last `ops`, in order; a
/// revision that only sets and places pins (an import, a PinSet that only
/// grows) is applied in CID order instead, which is the state's key order:
/// the B-tree is then filled leaf after leaf rather than all over at once
/// (same result: ops on distinct CIDs commute, and a stable sort keeps the
/// order of ops on one CID).
fn apply_revision<S: PinStore>(
    store: &mut S,
    owner: &Owner,
    chunks: Vec<Vec<Op>>,
    ops: &[Op],
    now_ms: i64,
    out: &mut Outcome,
) -> Result<(), S::Error> {
    let cid_of = |op: &Op| match op {
        Op::Set { cid, .. } | Op::Release { cid } | Op::Place { cid, .. } => *cid,
    };
    let all = || chunks.iter().flatten().chain(ops);
    let adds_only = all().all(|op| !matches!(op, Op::Release { .. }));
    // A plan's ops come in CID order already (placements after them).
    let sets_in_order = all()
        .filter(|op| matches!(op, Op::Set { .. }))
        .map(cid_of)
        .is_sorted();
    if !adds_only || sets_in_order || chunks.is_empty() {
        for chunk in &chunks {
            apply_ops(store, owner, chunk, now_ms, out)?;
        }
        return apply_ops(store, owner, ops, now_ms, out);
    }
    let mut all: Vec<Op> = chunks.into_iter().flatten().collect();
    all.extend(ops.iter().cloned());
    all.sort_by_key(cid_of);
    apply_ops(store, owner, &all, now_ms, out)
}

/// Removes `owner` from `before` (the pin goes with its last owner).
fn release<S: PinStore>(
    store: &mut S,
    owner: &Owner,
    before: StatePin,
    out: &mut Outcome,
) -> Result<(), S::Error> {
    if !before.owners.contains_key(owner) {
        return Ok(());
    }
    let mut pin = before.clone();
    pin.owners.remove(owner);
    if pin.owners.is_empty() {
        store.remove(&before)?;
        out.removed += 1;
    } else {
        store.put(&pin, Some(&before))?;
        out.changed += 1;
    }
    Ok(())
}

/// The ops that carry out a plan.
pub fn plan_ops(plan: &crate::plan::Plan) -> Vec<Op> {
    let mut ops = Vec::with_capacity(plan.add.len() + plan.update.len() + plan.release.len());
    for (cid, pin) in &plan.add {
        ops.push(Op::Set {
            cid: *cid,
            written_as: pin.written_as.clone(),
            spec: pin.spec.clone(),
        });
    }
    for u in &plan.update {
        ops.push(Op::Set {
            cid: u.cid,
            written_as: u.to.written_as.clone(),
            spec: u.to.spec.clone(),
        });
    }
    for cid in &plan.release {
        ops.push(Op::Release { cid: *cid });
    }
    ops
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
