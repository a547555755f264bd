//! The shared pinset: every pin with the owners that want it (DESIGN §5).
//!
//! Pure: applying a plan is a deterministic function of the state and the
//! plan. The consensus layer replicates the inputs; this module only
//! computes. The NDJSON export format lives in `file`.

pub mod codec;
mod command;
mod file;
mod machine;
pub mod pinsvc;
mod sharded;
#[cfg(test)]
mod sharded_tests;

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::Arc;

pub use file::{StateFileError, format_time, parse_time, read_state, write_pin_record};
pub use machine::{
    Command, CommitRecord, ConditionsRecord, MAX_RECONCILES, Op, Outcome, PinSetRecord, PinStore,
    ReconcileEntry, Request, STAGING_TTL_MS, apply, plan_ops, unpin_refusal,
};

use crate::manifest::{CidKey, Owner, PinMode, PinOptions, PinSpec, ReplicationFactors, ShardRole};
use crate::plan::{OwnedPins, Plan};

/// One pin of the shared state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatePin {
    /// Identity (normalised CID).
    pub cid: CidKey,
    /// The CID as first written by a user, when not canonical (`Qm…`).
    pub written_as: Option<Box<str>>,
    /// Everyone who wants this pin, with what each asked for.
    pub owners: BTreeMap<Owner, PinSpec>,
    /// Peer ids chosen to pin it.
    pub allocations: Vec<String>,
    /// When the pin entered the state (Unix ms, from the log entry).
    pub timestamp_ms: i64,
}

impl StatePin {
    /// The meta pins (content roots) this pin is a cluster DAG or a shard
    /// of, over every owner's spec, sorted: what releasing one of them
    /// releases too (see `machine::PinStore::shard_members`).
    pub fn shard_metas(&self) -> Vec<CidKey> {
        let mut metas: Vec<CidKey> = self
            .owners
            .values()
            .filter_map(|s| s.options.shard_role.as_ref())
            .filter(|r| r.kind != crate::manifest::ShardKind::Meta)
            .filter_map(|r| r.meta.parse::<CidKey>().ok())
            .collect();
        metas.sort_by_key(|c| c.cid().to_bytes());
        metas.dedup();
        metas
    }

    /// The CID as users see it: their own spelling if they used one.
    pub fn display_cid(&self) -> String {
        match &self.written_as {
            Some(w) => w.to_string(),
            None => self.cid.to_string(),
        }
    }

    /// When the pin expires (Unix ms): the latest expiry over its owners,
    /// or never if any owner never expires it. A relative `expire_after`
    /// counts from when the pin entered the state.
    pub fn expire_at_ms(&self) -> Option<i64> {
        let mut latest: Option<i64> = None;
        for spec in self.owners.values() {
            let o = &spec.options;
            let at = match (o.expire_at_ms, o.expire_after) {
                (Some(at), _) => at,
                (None, Some(after)) => self
                    .timestamp_ms
                    .saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX)),
                (None, None) => return None,
            };
            latest = Some(latest.map_or(at, |l| l.max(at)));
        }
        latest
    }

    /// The name and options in force when owners disagree: the strictest
    /// wins (DESIGN §5). Replication: the larger factor, where -1 (every
    /// peer) beats any number and 0 (cluster default) loses to any; recursive
    /// beats direct; a pin that some owner never expires never expires,
    /// otherwise the longest expiry; metadata, tags and origins are merged,
    /// later owners (in owner order) winning a key.
    pub fn effective(&self) -> PinSpec {
        let mut owners = self.owners.values();
        let Some(first) = owners.next() else {
            return PinSpec {
                name: String::new(),
                options: Arc::new(PinOptions::default()),
            };
        };
        if self.owners.len() == 1 {
            return first.clone();
        }
        let mut name = first.name.clone();
        let mut o = (*first.options).clone();
        for spec in owners {
            let p = &spec.options;
            if name.is_empty() {
                name = spec.name.clone();
            }
            o.replication = ReplicationFactors {
                min: stricter_factor(o.replication.min, p.replication.min),
                max: stricter_factor(o.replication.max, p.replication.max),
            };
            if p.mode == PinMode::Recursive {
                o.mode = PinMode::Recursive;
            }
            o.expire_after = match (o.expire_after, p.expire_after) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
            o.metadata.extend(p.metadata.clone());
            o.allocate_tags.extend(p.allocate_tags.clone());
            for origin in &p.origins {
                if !o.origins.contains(origin) {
                    o.origins.push(origin.clone());
                }
            }
            for peer in &p.user_allocations {
                if !o.user_allocations.contains(peer) {
                    o.user_allocations.push(peer.clone());
                }
            }
            // A sharded pin's role: the one that knows its cluster DAG (a
            // PinSet that declares content already sharded by an add does
            // not), else the first.
            let knows = |r: &Option<ShardRole>| r.as_ref().is_some_and(|r| r.reference.is_some());
            if o.shard_role.is_none() || (!knows(&o.shard_role) && knows(&p.shard_role)) {
                o.shard_role = p.shard_role.clone().or(o.shard_role);
            }
        }
        PinSpec {
            name,
            options: Arc::new(o),
        }
    }
}

fn stricter_factor(a: i32, b: i32) -> i32 {
    match (a, b) {
        (-1, _) | (_, -1) => -1,
        _ => a.max(b),
    }
}

/// Chunks of one revision attempt: when first staged, and the ops by chunk.
type StagedRevision = (i64, Vec<Vec<Op>>);

/// The whole shared pinset in memory, ordered by CID, with an index of
/// each owner's pins. Peers keep the same data in redb; this one serves
/// tests, `plan --state` and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinState {
    pins: BTreeMap<CidKey, StatePin>,
    by_owner: BTreeMap<Owner, BTreeSet<CidKey>>,
    staged: BTreeMap<(Owner, u64), StagedRevision>,
    pinsets: BTreeMap<Owner, PinSetRecord>,
    conditions: BTreeMap<Owner, ConditionsRecord>,
    commits: BTreeMap<Owner, CommitRecord>,
    pinsvc: BTreeMap<String, pinsvc::PinSvcRequest>,
}

impl PinState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of pins.
    pub fn len(&self) -> usize {
        self.pins.len()
    }

    /// True when there is no pin.
    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }

    /// One pin.
    pub fn get(&self, cid: &CidKey) -> Option<&StatePin> {
        self.pins.get(cid)
    }

    /// Every pin in CID order.
    pub fn iter(&self) -> impl Iterator<Item = &StatePin> {
        self.pins.values()
    }

    /// Inserts or replaces a whole pin (import).
    pub fn insert(&mut self, pin: StatePin) {
        let before = self.pins.get(&pin.cid).cloned();
        let Ok(()) = PinStore::put(self, &pin, before.as_ref());
    }

    /// The pins `owner` holds, with the spec it recorded for each.
    pub fn owned_by(&self, owner: &Owner) -> OwnedPins {
        let Some(cids) = self.by_owner.get(owner) else {
            return OwnedPins::new();
        };
        cids.iter()
            .filter_map(|cid| {
                let spec = self.pins.get(cid)?.owners.get(owner)?;
                Some((*cid, spec.clone()))
            })
            .collect()
    }

    /// Every owner that holds at least one pin.
    pub fn owners(&self) -> BTreeSet<Owner> {
        self.by_owner.keys().cloned().collect()
    }

    /// Recorded PinSets.
    pub fn pinsets(&self) -> impl Iterator<Item = (&Owner, &PinSetRecord)> {
        self.pinsets.iter()
    }

    /// The generation of `owner`: how many commits it made (0 if none).
    /// A commit planned against it names it as its base.
    pub fn generation(&self, owner: &Owner) -> u64 {
        self.commits.get(owner).map_or(0, |c| c.generation)
    }

    /// Controller conditions reports, by PinSet.
    pub fn conditions(&self) -> impl Iterator<Item = (&Owner, &ConditionsRecord)> {
        self.conditions.iter()
    }

    /// Applies a plan at time 0 (see [`apply`] for the replicated path).
    /// Idempotent: applying the same plan twice changes nothing more.
    pub fn apply(&mut self, plan: &Plan) -> Outcome {
        self.apply_request(&Request {
            now_ms: 0,
            command: Command::Apply {
                owner: plan.owner.clone(),
                ops: plan_ops(plan),
            },
        })
    }

    /// Applies one state machine request.
    pub fn apply_request(&mut self, req: &Request) -> Outcome {
        let Ok(out) = apply(self, req);
        out
    }
}

impl PinStore for PinState {
    type Error = Infallible;

    fn get(&self, cid: &CidKey) -> Result<Option<StatePin>, Infallible> {
        Ok(self.pins.get(cid).cloned())
    }

    fn put(&mut self, pin: &StatePin, before: Option<&StatePin>) -> Result<(), Infallible> {
        if let Some(b) = before {
            for o in b.owners.keys().filter(|o| !pin.owners.contains_key(*o)) {
                self.unindex(o, &pin.cid);
            }
        }
        for o in pin.owners.keys() {
            self.by_owner.entry(o.clone()).or_default().insert(pin.cid);
        }
        self.pins.insert(pin.cid, pin.clone());
        Ok(())
    }

    fn remove(&mut self, before: &StatePin) -> Result<(), Infallible> {
        for o in before.owners.keys() {
            self.unindex(o, &before.cid);
        }
        self.pins.remove(&before.cid);
        Ok(())
    }

    fn shard_members(&self, meta: &CidKey) -> Result<Vec<CidKey>, Infallible> {
        // In memory (tests, tools): a scan is fine.
        let mut out: Vec<CidKey> = self
            .pins
            .values()
            .filter(|p| p.shard_metas().contains(meta))
            .map(|p| p.cid)
            .collect();
        out.sort_by_key(|c| c.cid().to_bytes());
        Ok(out)
    }

    fn stage(
        &mut self,
        owner: &Owner,
        revision: u64,
        seq: u32,
        now_ms: i64,
        ops: &[Op],
    ) -> Result<(), Infallible> {
        let slot = self
            .staged
            .entry((owner.clone(), revision))
            .or_insert((now_ms, Vec::new()));
        let seq = seq as usize;
        if slot.1.len() <= seq {
            slot.1.resize(seq + 1, Vec::new());
        }
        slot.1[seq] = ops.to_vec();
        Ok(())
    }

    fn take_staged(&mut self, owner: &Owner, revision: u64) -> Result<Vec<Vec<Op>>, Infallible> {
        Ok(self
            .staged
            .remove(&(owner.clone(), revision))
            .map(|(_, chunks)| chunks)
            .unwrap_or_default())
    }

    fn expire_staged(&mut self, older_than_ms: i64) -> Result<(), Infallible> {
        self.staged.retain(|_, (at, _)| *at >= older_than_ms);
        Ok(())
    }

    fn set_pinset(
        &mut self,
        owner: &Owner,
        record: Option<&PinSetRecord>,
    ) -> Result<(), Infallible> {
        match record {
            Some(r) => self.pinsets.insert(owner.clone(), r.clone()),
            None => self.pinsets.remove(owner),
        };
        Ok(())
    }

    fn set_conditions(
        &mut self,
        owner: &Owner,
        record: Option<&ConditionsRecord>,
    ) -> Result<(), Infallible> {
        match record {
            Some(r) => self.conditions.insert(owner.clone(), r.clone()),
            None => self.conditions.remove(owner),
        };
        Ok(())
    }

    fn pinset(&self, owner: &Owner) -> Result<Option<PinSetRecord>, Infallible> {
        Ok(self.pinsets.get(owner).cloned())
    }

    fn conditions(&self, owner: &Owner) -> Result<Option<ConditionsRecord>, Infallible> {
        Ok(self.conditions.get(owner).cloned())
    }

    fn commits(&self, owner: &Owner) -> Result<Option<CommitRecord>, Infallible> {
        Ok(self.commits.get(owner).cloned())
    }

    fn set_commits(&mut self, owner: &Owner, record: &CommitRecord) -> Result<(), Infallible> {
        self.commits.insert(owner.clone(), record.clone());
        Ok(())
    }

    fn pinsvc_get(&self, requestid: &str) -> Result<Option<pinsvc::PinSvcRequest>, Infallible> {
        Ok(self.pinsvc.get(requestid).cloned())
    }

    fn pinsvc_put(&mut self, request: &pinsvc::PinSvcRequest) -> Result<(), Infallible> {
        self.pinsvc
            .insert(request.requestid.clone(), request.clone());
        Ok(())
    }

    fn pinsvc_remove(&mut self, request: &pinsvc::PinSvcRequest) -> Result<(), Infallible> {
        self.pinsvc.remove(&request.requestid);
        Ok(())
    }

    fn pinsvc_holds(&self, token: &str, cid: &CidKey) -> Result<bool, Infallible> {
        Ok(self
            .pinsvc
            .values()
            .any(|r| r.token == token && r.cid == *cid))
    }

    fn pinsvc_last_created(&self) -> Result<i64, Infallible> {
        Ok(self
            .pinsvc
            .values()
            .map(|r| r.created_ns)
            .max()
            .unwrap_or(0))
    }
}

impl PinState {
    /// A Pinning Service request by id.
    pub fn pinsvc_request(&self, requestid: &str) -> Option<&pinsvc::PinSvcRequest> {
        self.pinsvc.get(requestid)
    }

    fn unindex(&mut self, owner: &Owner, cid: &CidKey) {
        if let Entry::Occupied(mut e) = self.by_owner.entry(owner.clone()) {
            e.get_mut().remove(cid);
            if e.get().is_empty() {
                e.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{PinSetId, ShardKind};

    fn spec(role: Option<ShardRole>) -> PinSpec {
        PinSpec {
            name: String::new(),
            options: Arc::new(PinOptions {
                shard_role: role,
                ..PinOptions::default()
            }),
        }
    }

    #[test]
    fn a_sharded_pin_shows_the_role_that_knows_its_cluster_dag() {
        let cid = CidKey::parse("bafkqaaa").unwrap();
        let role = |reference: Option<&str>| ShardRole {
            kind: ShardKind::Meta,
            reference: reference.map(str::to_string),
            meta: cid.to_string(),
            shard_size: 1 << 20,
            max_depth: 0,
        };
        let set = Owner::PinSet(Arc::new(PinSetId::new("ns", "big")));
        for (api, pinset, want) in [
            (
                Some(role(Some("bafydag"))),
                Some(role(None)),
                Some("bafydag"),
            ),
            (
                Some(role(None)),
                Some(role(Some("bafydag"))),
                Some("bafydag"),
            ),
            (None, Some(role(None)), None),
        ] {
            let pin = StatePin {
                cid,
                written_as: None,
                owners: BTreeMap::from([(Owner::Api, spec(api)), (set.clone(), spec(pinset))]),
                allocations: Vec::new(),
                timestamp_ms: 0,
            };
            let eff = pin.effective().options.shard_role.clone().unwrap();
            assert_eq!(eff.reference.as_deref(), want);
        }
    }
}
