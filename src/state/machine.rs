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
mod tests {
    use super::*;
    use crate::manifest::PinSetId;
    use crate::manifest::PinSpec;
    use crate::manifest::model::Condition;
    use crate::state::PinState;

    fn stalled(reason: &str) -> Condition {
        Condition {
            type_: "Stalled".into(),
            status: "True".into(),
            reason: reason.into(),
            message: "c.yaml:6:9: unexpected end".into(),
            last_transition_time: "2026-01-01T00:00:00Z".into(),
            observed_generation: None,
        }
    }

    fn set(owner: &Owner, now_ms: i64, conditions: Vec<Condition>) -> Request {
        Request {
            now_ms,
            command: Command::SetConditions {
                owner: owner.clone(),
                source: "dir:/m".into(),
                revision: Some("r1".into()),
                conditions,
            },
        }
    }

    #[test]
    fn conditions_are_stored_for_a_pinset_never_applied_and_replaced() {
        let owner = Owner::pinset(PinSetId::new("ns", "never"));
        let mut a = PinState::new();
        let mut b = PinState::new();
        for s in [&mut a, &mut b] {
            s.apply_request(&set(&owner, 5, vec![stalled("ManifestInvalid")]));
        }
        assert_eq!(a, b);
        assert_eq!(a.pinsets().count(), 0);
        let (o, r) = a.conditions().next().unwrap();
        assert_eq!(o, &owner);
        assert_eq!(r.reported_at_ms, 5);
        assert_eq!(r.revision.as_deref(), Some("r1"));
        assert_eq!(r.conditions[0].reason, "ManifestInvalid");

        a.apply_request(&set(&owner, 6, vec![stalled("PruneGuard")]));
        assert_eq!(a.conditions().count(), 1);
        assert_eq!(
            a.conditions().next().unwrap().1.conditions[0].reason,
            "PruneGuard"
        );

        // An empty report forgets.
        a.apply_request(&set(&owner, 7, Vec::new()));
        assert_eq!(a.conditions().count(), 0);
    }

    #[test]
    fn deleting_a_pinset_forgets_its_conditions() {
        let owner = Owner::pinset(PinSetId::new("ns", "gone"));
        let mut s = PinState::new();
        s.apply_request(&set(&owner, 1, vec![stalled("PruneGuard")]));
        s.apply_request(&Request {
            now_ms: 2,
            command: Command::Commit {
                owner: owner.clone(),
                revision: 1,
                base: None,
                staged: 0,
                ops: Vec::new(),
                record: None,
            },
        });
        assert_eq!(s.conditions().count(), 0);
    }

    fn set_op(i: u64, name: &str) -> Op {
        Op::Set {
            cid: crate::testkit::seq_cid(i),
            written_as: None,
            spec: PinSpec {
                name: name.into(),
                options: std::sync::Arc::new(crate::manifest::PinOptions::default()),
            },
        }
    }

    fn record(revision: &str) -> PinSetRecord {
        PinSetRecord {
            namespace: "ns".into(),
            name: "site".into(),
            revision: revision.into(),
            labels: BTreeMap::new(),
            source: "test".into(),
            pins: 1,
            prune: true,
            suspend: false,
            applied_at_ms: 0,
        }
    }

    /// A commit of attempt `attempt` planned at generation `base`.
    fn commit(owner: &Owner, attempt: u64, base: u64, staged: u32, ops: Vec<Op>) -> Request {
        Request {
            now_ms: 10,
            command: Command::Commit {
                owner: owner.clone(),
                revision: attempt,
                base: Some(base),
                staged,
                ops,
                record: Some(record(&format!("r{attempt}"))),
            },
        }
    }

    fn stage(owner: &Owner, attempt: u64, seq: u32, ops: Vec<Op>) -> Request {
        Request {
            now_ms: 10,
            command: Command::Stage {
                owner: owner.clone(),
                revision: attempt,
                seq,
                ops,
            },
        }
    }

    #[test]
    fn a_commit_planned_against_a_stale_generation_is_refused_and_changes_nothing() {
        let owner = Owner::pinset(PinSetId::new("ns", "site"));
        let mut s = PinState::new();
        // Two applies plan against generation 0; the first commits.
        s.apply_request(&commit(&owner, 1, 0, 0, vec![set_op(1, "a")]));
        assert_eq!(s.generation(&owner), 1);
        let before = s.clone();
        // The second staged a chunk and now commits against generation 0.
        s.apply_request(&stage(&owner, 2, 0, vec![set_op(2, "b")]));
        let out = s.apply_request(&commit(&owner, 2, 0, 1, vec![set_op(3, "b")]));
        assert_eq!(
            out.refused.as_deref(),
            Some(
                "pinset ns/site changed since this apply was planned (generation 0, now 1): nothing applied; apply again"
            )
        );
        assert_eq!((out.created, out.changed, out.removed), (0, 0, 0));
        // Nothing applied, the staged chunk dropped, the generation kept.
        assert_eq!(s, before);
        // Planned again at generation 1, it goes in.
        let out = s.apply_request(&commit(&owner, 3, 1, 0, vec![set_op(3, "b")]));
        assert_eq!((out.created, out.refused), (1, None));
        assert_eq!(s.generation(&owner), 2);
    }

    #[test]
    fn a_staged_import_lands_placed_at_commit_and_records_no_pinset() {
        let cid = crate::testkit::seq_cid;
        let place = |i: u64, peers: &[&str]| Op::Place {
            cid: cid(i),
            peers: peers.iter().map(|p| p.to_string()).collect(),
        };
        let mut s = PinState::new();
        // A chunk: two pins and their placements, one for a pin never set.
        let chunk = vec![
            set_op(1, "a"),
            set_op(2, "b"),
            place(1, &["p1", "p2"]),
            place(2, &["p3"]),
            place(9, &["p1"]),
        ];
        s.apply_request(&stage(&Owner::Api, 7, 0, chunk));
        assert!(s.is_empty(), "staged ops stay invisible until the commit");
        let out = s.apply_request(&Request {
            now_ms: 11,
            command: Command::Commit {
                owner: Owner::Api,
                revision: 7,
                base: None,
                staged: 1,
                ops: vec![set_op(3, "c"), place(3, &["p2"])],
                record: None,
            },
        });
        assert_eq!((out.created, out.changed, out.refused), (3, 0, None));
        let peers = |s: &PinState, i: u64| s.get(&cid(i)).unwrap().allocations.clone();
        assert_eq!(peers(&s, 1), ["p1", "p2"]);
        assert_eq!(peers(&s, 2), ["p3"]);
        assert_eq!(peers(&s, 3), ["p2"]);
        assert!(s.get(&cid(9)).is_none(), "a placement alone creates no pin");
        assert_eq!(s.pinsets().count(), 0);
        // A later placement moves an existing pin.
        s.apply_request(&Request {
            now_ms: 12,
            command: Command::Apply {
                owner: Owner::Api,
                ops: vec![place(1, &["p3"])],
            },
        });
        assert_eq!(peers(&s, 1), ["p3"]);
    }

    #[test]
    fn a_retried_commit_answers_the_first_outcome_and_applies_nothing_twice() {
        let owner = Owner::pinset(PinSetId::new("ns", "site"));
        let mut s = PinState::new();
        s.apply_request(&stage(&owner, 5, 0, vec![set_op(1, "a"), set_op(2, "a")]));
        let first = s.apply_request(&commit(&owner, 5, 0, 1, vec![set_op(3, "a")]));
        assert_eq!((first.created, first.refused.as_deref()), (3, None));
        let after = s.clone();
        // The reply was lost: the chunk and the commit are sent again.
        let restaged = s.apply_request(&stage(&owner, 5, 0, vec![set_op(1, "a"), set_op(2, "a")]));
        assert_eq!(restaged.staged, 2);
        let again = s.apply_request(&commit(&owner, 5, 0, 1, vec![set_op(3, "a")]));
        assert_eq!(
            again, first,
            "the first attempt's outcome, not \"chunks missing\""
        );
        assert_eq!(s, after, "nothing staged or applied twice");
        assert_eq!(s.generation(&owner), 1);
    }

    #[test]
    fn a_delete_keeps_the_generation_so_a_racing_recreate_is_refused() {
        let owner = Owner::pinset(PinSetId::new("ns", "site"));
        let mut s = PinState::new();
        s.apply_request(&commit(&owner, 1, 0, 0, vec![set_op(1, "a")]));
        // Delete (planned at 1) and a re-create (also planned at 1) race.
        let delete = Request {
            now_ms: 11,
            command: Command::Commit {
                owner: owner.clone(),
                revision: 2,
                base: Some(1),
                staged: 0,
                ops: vec![Op::Release {
                    cid: crate::testkit::seq_cid(1),
                }],
                record: None,
            },
        };
        assert_eq!(s.apply_request(&delete).removed, 1);
        assert_eq!(s.pinsets().count(), 0);
        let recreate = s.apply_request(&commit(&owner, 3, 1, 0, vec![set_op(1, "b")]));
        assert!(recreate.refused.unwrap().contains("(generation 1, now 2)"));
        assert!(s.is_empty());
        assert_eq!(s.generation(&owner), 2);
    }

    #[test]
    fn two_stores_fed_the_same_log_count_the_same_generations() {
        let site = Owner::pinset(PinSetId::new("ns", "site"));
        let other = Owner::pinset(PinSetId::new("ns", "other"));
        // Two writers racing on `site`, one on `other`, a REST pin and an
        // outdated commit without a base (written before generations).
        let log = [
            stage(&site, 1, 0, vec![set_op(1, "a")]),
            commit(&site, 1, 0, 1, vec![set_op(2, "a")]),
            commit(&site, 2, 0, 0, vec![set_op(9, "b")]),
            commit(&other, 3, 0, 0, vec![set_op(2, "o")]),
            Request {
                now_ms: 12,
                command: Command::Apply {
                    owner: Owner::Api,
                    ops: vec![set_op(4, "api")],
                },
            },
            commit(&site, 1, 0, 1, vec![set_op(2, "a")]),
            commit(
                &site,
                4,
                1,
                0,
                vec![Op::Release {
                    cid: crate::testkit::seq_cid(1),
                }],
            ),
            Request {
                now_ms: 13,
                command: Command::Commit {
                    owner: other.clone(),
                    revision: 5,
                    base: None,
                    staged: 0,
                    ops: vec![set_op(5, "o")],
                    record: None,
                },
            },
        ];
        let mut a = PinState::new();
        let mut b = PinState::new();
        let outs_a: Vec<Outcome> = log.iter().map(|r| a.apply_request(r)).collect();
        let outs_b: Vec<Outcome> = log.iter().map(|r| b.apply_request(r)).collect();
        assert_eq!(outs_a, outs_b);
        assert_eq!(a, b);
        let refused: Vec<bool> = outs_a.iter().map(|o| o.refused.is_some()).collect();
        assert_eq!(
            refused,
            [false, false, true, false, false, false, false, false]
        );
        assert_eq!((a.generation(&site), a.generation(&other)), (2, 2));
        assert_eq!(a.generation(&Owner::Api), 0, "REST pins never commit");
    }

    fn apply_as(owner: &Owner, ops: Vec<Op>) -> Request {
        Request {
            now_ms: 20,
            command: Command::Apply {
                owner: owner.clone(),
                ops,
            },
        }
    }

    fn unpin(i: u64, force: bool) -> Request {
        Request {
            now_ms: 30,
            command: Command::Unpin {
                cid: crate::testkit::seq_cid(i),
                force,
            },
        }
    }

    #[test]
    fn unpin_of_a_pin_a_pinset_also_owns_is_refused_naming_it_and_changes_nothing() {
        let site = Owner::pinset(PinSetId::new("ns", "site"));
        let mut s = PinState::new();
        s.apply_request(&apply_as(&Owner::Api, vec![set_op(1, "api")]));
        s.apply_request(&commit(&site, 1, 0, 0, vec![set_op(1, "site")]));
        let before = s.clone();
        let out = s.apply_request(&unpin(1, false));
        let msg = out.refused.unwrap();
        let cid = crate::testkit::seq_cid(1).to_string();
        assert!(
            msg.starts_with(&format!(
                "\"{cid}\" is also owned by pinset ns/site: it stays pinned"
            )),
            "{msg}"
        );
        assert!(msg.contains("force=true as an admin"), "{msg}");
        assert_eq!((out.created, out.changed, out.removed), (0, 0, 0));
        assert_eq!(s, before);
    }

    #[test]
    fn forced_unpin_removes_the_pin_from_every_owner_and_stales_their_plans() {
        let a = Owner::pinset(PinSetId::new("ns", "a"));
        let b = Owner::pinset(PinSetId::new("ns", "b"));
        let mut s = PinState::new();
        s.apply_request(&apply_as(&Owner::Api, vec![set_op(1, "api")]));
        s.apply_request(&commit(&a, 1, 0, 0, vec![set_op(1, "a"), set_op(2, "a")]));
        s.apply_request(&commit(&b, 2, 0, 0, vec![set_op(1, "b")]));
        let out = s.apply_request(&unpin(1, true));
        assert_eq!((out.removed, out.refused), (1, None));
        assert!(s.get(&crate::testkit::seq_cid(1)).is_none());
        assert!(
            s.get(&crate::testkit::seq_cid(2)).is_some(),
            "other pins stay"
        );
        assert_eq!((s.generation(&a), s.generation(&b)), (2, 2));
        // A plan made before the forced unpin is refused.
        let stale = s.apply_request(&commit(&a, 3, 1, 0, vec![set_op(3, "a")]));
        assert!(stale.refused.is_some());
    }

    #[test]
    fn unpin_of_an_api_only_pin_releases_it_and_of_an_unknown_cid_does_nothing() {
        let mut s = PinState::new();
        s.apply_request(&apply_as(&Owner::Api, vec![set_op(1, "api")]));
        let out = s.apply_request(&unpin(1, false));
        assert_eq!((out.removed, out.refused), (1, None));
        assert!(s.is_empty());
        assert_eq!(s.apply_request(&unpin(1, false)), Outcome::default());
    }

    #[test]
    fn unpin_refusal_caps_the_owners_it_names() {
        let mut pin = StatePin {
            cid: crate::testkit::seq_cid(1),
            written_as: None,
            owners: BTreeMap::new(),
            allocations: Vec::new(),
            timestamp_ms: 0,
        };
        let spec = PinSpec {
            name: String::new(),
            options: std::sync::Arc::new(crate::manifest::PinOptions::default()),
        };
        assert_eq!(unpin_refusal("x", &pin), None);
        pin.owners.insert(Owner::Api, spec.clone());
        assert_eq!(unpin_refusal("x", &pin), None);
        pin.owners.remove(&Owner::Api);
        for i in 0..8 {
            let id = PinSetId::new("ns", format!("p{i}"));
            pin.owners.insert(Owner::pinset(id), spec.clone());
        }
        let msg = unpin_refusal("x", &pin).unwrap();
        assert!(
            msg.starts_with(
                "\"x\" is owned by pinset ns/p0, ns/p1, ns/p2, ns/p3, ns/p4 and 3 more: it stays pinned"
            ),
            "{msg}"
        );
    }

    #[test]
    fn a_batch_answers_each_member_as_if_it_were_written_alone() {
        let site = Owner::pinset(PinSetId::new("ns", "site"));
        let members = vec![
            apply_as(&Owner::Api, vec![set_op(1, "api")]).command,
            apply_as(&Owner::Api, vec![set_op(1, "api")]).command,
            apply_as(&Owner::Api, vec![set_op(2, "api")]).command,
            unpin(2, false).command,
            unpin(3, false).command,
            apply_as(&Owner::Api, vec![set_op(3, "renamed")]).command,
        ];
        let mut alone = PinState::new();
        alone.apply_request(&commit(&site, 1, 0, 0, vec![set_op(3, "site")]));
        let mut batched = alone.clone();
        let expected: Vec<Outcome> = members
            .iter()
            .map(|c| {
                alone.apply_request(&Request {
                    now_ms: 40,
                    command: c.clone(),
                })
            })
            .collect();
        let out = batched.apply_request(&Request {
            now_ms: 40,
            command: Command::Batch(members),
        });
        assert_eq!(out.members, expected);
        assert!(expected[3].removed == 1 && expected[4].refused.is_some());
        assert_eq!(
            expected[1],
            Outcome::default(),
            "a repeated pin changes nothing"
        );
        assert_eq!((out.created, out.changed, out.removed), (2, 1, 1));
        assert_eq!(out.refused, None, "one member's refusal is its own");
        assert_eq!(batched, alone);
    }

    #[test]
    fn outcomes_written_before_batches_still_decode() {
        let old = serde_json::json!({
            "created": 1, "changed": 0, "removed": 0, "staged": 0, "refused": null
        });
        let out: Outcome = serde_json::from_value(old).unwrap();
        assert_eq!(out.created, 1);
        assert!(out.members.is_empty());
        let json = serde_json::to_value(&out).unwrap();
        assert!(json.get("members").is_none(), "{json}");
    }
}
