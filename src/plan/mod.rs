//! The plan engine: what must change so that one owner holds exactly its
//! desired pins (DESIGN §5), and the prune guard that refuses dangerous plans.
//!
//! Pure and deterministic: two calls with the same input give the same plan,
//! in CID order. No I/O, no clock, no tokio.

use std::collections::BTreeMap;
use std::fmt;

pub use crate::manifest::OwnedPins;
use crate::manifest::{CidKey, DesiredPin, DesiredPinSet, Owner, PinSpec, ShardKind};

/// Limits on how much one plan may release.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PruneGuard {
    /// Largest fraction of the owner's pins one plan may release (0.0–1.0).
    pub max_fraction: f64,
    /// Skip the guard (`--force`, or the `pinfleet.io/force-prune` annotation).
    pub force: bool,
}

/// Default of `controller.maxPruneFraction`.
pub const DEFAULT_MAX_PRUNE_FRACTION: f64 = 0.5;

impl Default for PruneGuard {
    fn default() -> Self {
        Self {
            max_fraction: DEFAULT_MAX_PRUNE_FRACTION,
            force: false,
        }
    }
}

/// A pin whose spec changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    /// The pin.
    pub cid: CidKey,
    /// What the owner recorded before.
    pub from: PinSpec,
    /// What it wants now.
    pub to: DesiredPin,
}

/// What one owner must do: add these, change those, release the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Who acts.
    pub owner: Owner,
    /// New pins for this owner, in CID order.
    pub add: Vec<(CidKey, DesiredPin)>,
    /// Pins whose name or options change, in CID order.
    pub update: Vec<Update>,
    /// Pins this owner no longer wants, in CID order.
    pub release: Vec<CidKey>,
    /// Pins already as desired.
    pub unchanged: usize,
}

impl Plan {
    /// True when applying the plan would change nothing.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.update.is_empty() && self.release.is_empty()
    }
}

/// The prune guard refused a plan; the counts say why.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}", describe_guard(self))]
pub struct PruneGuardTripped {
    /// Whose plan.
    pub owner: Owner,
    /// Pins the plan would release.
    pub release: usize,
    /// Pins the owner holds now.
    pub owned: usize,
    /// Pins it would hold after the plan.
    pub desired: usize,
    /// The guard's limit.
    pub max_fraction: f64,
}

fn describe_guard(g: &PruneGuardTripped) -> String {
    if g.desired == 0 {
        format!(
            "prune guard: {} would release all {} of its pins (empty desired set); use --force or the pinfleet.io/force-prune annotation if intended",
            g.owner, g.owned
        )
    } else {
        format!(
            "prune guard: {} would release {} of its {} pins ({:.0}%, limit {:.0}%); use --force or the pinfleet.io/force-prune annotation if intended",
            g.owner,
            g.release,
            g.owned,
            100.0 * g.release as f64 / g.owned.max(1) as f64,
            100.0 * g.max_fraction
        )
    }
}

/// Plans `owner` towards `desired`. With `prune`, pins it holds that are not
/// desired are released; the guard may refuse that.
pub fn plan(
    owner: &Owner,
    desired: &BTreeMap<CidKey, DesiredPin>,
    prune: bool,
    current: &OwnedPins,
    guard: PruneGuard,
) -> Result<Plan, PruneGuardTripped> {
    let mut out = Plan {
        owner: owner.clone(),
        add: Vec::new(),
        update: Vec::new(),
        release: Vec::new(),
        unchanged: 0,
    };
    let mut want = desired.iter().peekable();
    let mut have = current.iter().peekable();
    // Merge-walk two CID-ordered maps: linear, and the output is CID-ordered.
    loop {
        let step = match (want.peek(), have.peek()) {
            (None, None) => break,
            (Some((w, _)), Some((h, _))) => w.cmp(h),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
        };
        match step {
            std::cmp::Ordering::Less => {
                if let Some((cid, pin)) = want.next() {
                    out.add.push((*cid, pin.clone()));
                }
            }
            std::cmp::Ordering::Greater => {
                if let Some((cid, spec)) = have.next() {
                    if derived(spec) {
                        // A shard or cluster DAG goes with its meta pin.
                        continue;
                    }
                    if prune {
                        out.release.push(*cid);
                    } else {
                        out.unchanged += 1;
                    }
                }
            }
            std::cmp::Ordering::Equal => {
                if let (Some((cid, pin)), Some((_, spec))) = (want.next(), have.next()) {
                    if asks_for(&pin.spec, spec) {
                        out.unchanged += 1;
                    } else {
                        out.update.push(Update {
                            cid: *cid,
                            from: spec.clone(),
                            to: pin.clone(),
                        });
                    }
                }
            }
        }
    }
    check_guard(&out, current.len(), desired.len(), guard)?;
    Ok(out)
}

/// Whether a pin an owner holds was written for one of its sharded pins
/// (a shard or the cluster DAG, docs/sharding.md): no manifest lists it,
/// and it is released with its meta pin, never on its own.
fn derived(spec: &PinSpec) -> bool {
    spec.options
        .shard_role
        .as_ref()
        .is_some_and(|r| r.kind != ShardKind::Meta)
}

/// Whether what an owner holds is what it asks for. A meta pin's
/// `reference` (its cluster DAG) is filled in by the cluster when it shards
/// the content, never by a manifest, so it is not compared.
pub fn asks_for(want: &PinSpec, have: &PinSpec) -> bool {
    if want.same_as(have) {
        return true;
    }
    match (&want.options.shard_role, &have.options.shard_role) {
        (Some(w), Some(h)) if w.kind == ShardKind::Meta && h.kind == ShardKind::Meta => {
            let mut held = (*have.options).clone();
            if let Some(r) = held.shard_role.as_mut() {
                r.reference.clone_from(&w.reference);
            }
            want.name == have.name && *want.options == held
        }
        _ => false,
    }
}

/// Plans a loaded PinSet; its `pinfleet.io/force-prune` annotation forces the guard.
pub fn plan_pinset(
    pinset: &DesiredPinSet,
    current: &OwnedPins,
    mut guard: PruneGuard,
) -> Result<Plan, PruneGuardTripped> {
    guard.force |= pinset.force_prune();
    plan(&pinset.owner(), &pinset.pins, pinset.prune, current, guard)
}

/// Plans the removal of an owner (its PinSet was deleted): release everything,
/// under the same guard as a prune to an empty set.
pub fn plan_release_all(
    owner: &Owner,
    current: &OwnedPins,
    guard: PruneGuard,
) -> Result<Plan, PruneGuardTripped> {
    plan(owner, &BTreeMap::new(), true, current, guard)
}

/// The prune guard: refuses `plan` when it would release more than the
/// guard's fraction of the `owned` pins, or any pin when `desired` is empty
/// (unless forced). `owned` and `desired` are the owner's pin counts before
/// and after the plan.
pub fn check_guard(
    plan: &Plan,
    owned: usize,
    desired: usize,
    guard: PruneGuard,
) -> Result<(), PruneGuardTripped> {
    let release = plan.release.len();
    if guard.force || release == 0 {
        return Ok(());
    }
    let too_many = desired == 0 || (release as f64) > guard.max_fraction * owned as f64;
    if too_many {
        return Err(PruneGuardTripped {
            owner: plan.owner.clone(),
            release,
            owned,
            desired,
            max_fraction: guard.max_fraction,
        });
    }
    Ok(())
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: +{} ~{} -{} ={}",
            self.owner,
            self.add.len(),
            self.update.len(),
            self.release.len(),
            self.unchanged
        )
    }
}

#[cfg(test)]
mod tests;
