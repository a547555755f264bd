//! The replicated state machine's vocabulary: the commands one Raft log
//! entry carries (`Request`), what applying one did (`Outcome`), and the
//! records the state keeps about owners. Data only: the apply lives in
//! `machine.rs`.
//!
//! Commands are serde-encoded in the log: new variants and fields go at the
//! end (fields with a default), so entries written before stay readable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::manifest::model::Condition;
use crate::manifest::{CidKey, Owner, PinSpec};

/// One change to one owner's hold on one pin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// The owner wants this pin with this spec (add or update).
    Set {
        /// The pin.
        cid: CidKey,
        /// The CID as written, when not canonical.
        written_as: Option<Box<str>>,
        /// Name and options.
        spec: PinSpec,
    },
    /// The owner no longer wants this pin.
    Release {
        /// The pin.
        cid: CidKey,
    },
    /// The pin goes to these peers, priority order: the allocation the
    /// leader chose when it accepted the ops before it (a pin not in the
    /// state is skipped; the owner plays no part).
    Place {
        /// The pin.
        cid: CidKey,
        /// Its peers.
        peers: Vec<String>,
    },
}

/// What the state remembers about an applied PinSet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinSetRecord {
    /// `namespace/name`.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Revision applied (content digest or git revision).
    pub revision: String,
    /// Labels of the manifest.
    pub labels: BTreeMap<String, String>,
    /// Where it came from (file:line:col, git URL, `api`).
    pub source: String,
    /// Pins the PinSet declared in that revision.
    pub pins: u64,
    /// Prune enabled.
    pub prune: bool,
    /// Reconciling suspended.
    pub suspend: bool,
    /// When the revision was committed (Unix ms).
    pub applied_at_ms: i64,
}

/// The conditions a controller last reported for one PinSet (stored even
/// when the PinSet was never applied, e.g. an invalid manifest).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionsRecord {
    /// Where the controller read the PinSet (file:line:col, git URL).
    pub source: String,
    /// The revision the controller looked at, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// `Ready`, `Reconciling`, `Stalled` as the controller computed them.
    pub conditions: Vec<Condition>,
    /// When the report was committed (Unix ms).
    pub reported_at_ms: i64,
    /// The last [`MAX_RECONCILES`] reconciles of the PinSet, newest first
    /// (kept when a new report replaces the conditions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reconciles: Vec<ReconcileEntry>,
}

/// How many reconciles of one PinSet the state keeps.
pub const MAX_RECONCILES: usize = 10;

/// One reconcile of a PinSet, as a controller (or the dashboard's
/// re-check) ran it: what the dashboard lists as recent reconciles.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileEntry {
    /// When it was recorded (Unix ms; set by the state machine).
    #[serde(default)]
    pub at_ms: i64,
    /// What started it: `interval`, `change`, `request`, `dashboard`.
    pub trigger: String,
    /// Whether the PinSet came out Ready (or applied without error).
    pub ok: bool,
    /// Why not, or what it did.
    #[serde(default)]
    pub message: String,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// Pins it added.
    #[serde(default)]
    pub added: u64,
    /// Pins it released.
    #[serde(default)]
    pub removed: u64,
    /// The revision it looked at.
    #[serde(default)]
    pub revision: String,
}

/// What the state remembers about an owner's commits (one record per
/// owner that ever committed). It outlives the PinSet: after a delete the
/// generation stays, so a plan made before the delete is refused after it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    /// Commits applied for this owner so far: the base a plan names.
    pub generation: u64,
    /// Attempt id of the last commit applied (`Commit::revision`).
    pub last_attempt: Option<u64>,
    /// What that commit did, answered again to a retry of it.
    pub last_outcome: Outcome,
}

// Conditions hold only strings and integers: equality is total.
impl Eq for Condition {}

/// A state machine command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Ops for `owner` outside any revision (REST pins, `owner = api`).
    Apply {
        /// Who acts.
        owner: Owner,
        /// What changes.
        #[serde(with = "super::codec::ops")]
        ops: Vec<Op>,
    },
    /// A chunk of a revision; invisible until its `Commit`.
    Stage {
        /// Who acts.
        owner: Owner,
        /// Proposer-chosen id of this revision attempt.
        revision: u64,
        /// Chunk number, from 0.
        seq: u32,
        /// What changes.
        #[serde(with = "super::codec::ops")]
        ops: Vec<Op>,
    },
    /// Applies every staged chunk of `revision` plus `ops` at once, if the
    /// owner is still at generation `base`.
    Commit {
        /// Who acts.
        owner: Owner,
        /// The attempt id used by its `Stage` chunks.
        revision: u64,
        /// The owner's generation the ops were planned against; the commit
        /// is refused (nothing applied) when it changed. `None` commits
        /// unconditionally, as entries written before generations existed.
        #[serde(default)]
        base: Option<u64>,
        /// How many chunks were staged; a commit missing chunks is refused.
        staged: u32,
        /// Last ops.
        #[serde(with = "super::codec::ops")]
        ops: Vec<Op>,
        /// The PinSet's record after this revision (None: the PinSet is gone).
        record: Option<PinSetRecord>,
    },
    /// Records which peers pin which CIDs (chosen by the leader's
    /// allocator; followers apply the result, never recompute it). CIDs no
    /// longer in the state are skipped.
    Allocate {
        /// CID and its peers, priority order.
        allocations: Vec<(CidKey, Vec<String>)>,
    },
    /// Records the conditions a controller computed for a PinSet (replacing
    /// any earlier report; an empty list forgets the report).
    SetConditions {
        /// The PinSet.
        owner: Owner,
        /// Where the controller read it.
        source: String,
        /// The revision it looked at.
        revision: Option<String>,
        /// The conditions.
        conditions: Vec<Condition>,
    },
    /// `DELETE /pins/{cid}`: releases owner `api` when it is the pin's
    /// only owner. While a PinSet also owns the pin the command is refused
    /// (nothing changes) unless `force`, which removes the pin from every
    /// owner at once and counts up each PinSet's generation, so a plan made
    /// before is refused. A PinSet that still declares the CID pins it again
    /// on its next apply. Checked here, at apply, so a PinSet that took the
    /// CID after the caller looked cannot be released silently.
    Unpin {
        /// The pin.
        cid: CidKey,
        /// Remove it from every owner, PinSets included.
        force: bool,
    },
    /// Drops the staged chunks of an abandoned revision.
    Abort {
        /// Who acted.
        owner: Owner,
        /// The attempt id.
        revision: u64,
    },
    /// Several commands in one log entry (the leader's group commit):
    /// applied in order, each exactly as if it had its own entry, in one
    /// store transaction. The outcome lists each member's own outcome
    /// ([`Outcome::members`]). Members are never batches themselves.
    Batch(Vec<Command>),
    /// A Pinning Service API request created, replaced or removed, with
    /// its pin's ownership (`pinsvc:<token>`), in one step.
    PinSvc(super::pinsvc::PinSvcChange),
    /// Adds one reconcile to the PinSet's recent reconciles (kept with its
    /// conditions report, the last [`MAX_RECONCILES`]); skipped for a
    /// PinSet that is not recorded.
    RecordReconcile {
        /// The PinSet.
        owner: Owner,
        /// What the reconcile did (`at_ms` is set to the entry's time).
        entry: ReconcileEntry,
    },
}

impl Command {
    /// Pin ops this command carries (what `consensus.batch_max_pins`
    /// bounds): the ops of `Apply`/`Stage`/`Commit`, the CIDs of
    /// `Allocate`, one for an `Unpin`, the sum for a `Batch`.
    pub fn op_count(&self) -> usize {
        match self {
            Command::Apply { ops, .. }
            | Command::Stage { ops, .. }
            | Command::Commit { ops, .. } => ops.len(),
            Command::Allocate { allocations } => allocations.len(),
            Command::Unpin { .. } => 1,
            Command::SetConditions { .. }
            | Command::Abort { .. }
            | Command::RecordReconcile { .. } => 0,
            Command::Batch(members) => members.iter().map(Command::op_count).sum(),
            Command::PinSvc(change) => change.op_count(),
        }
    }
}

/// A log entry's payload: the command and the proposer's clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Unix milliseconds when the leader accepted the command.
    pub now_ms: i64,
    /// What to do.
    pub command: Command,
}

/// What applying a command did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Pins that did not exist before.
    pub created: u64,
    /// Pins whose owners or specs changed but that stay.
    pub changed: u64,
    /// Pins that lost their last owner.
    pub removed: u64,
    /// Ops staged (for `Stage`).
    pub staged: u64,
    /// The command was refused; nothing changed.
    pub refused: Option<String>,
    /// For a `Batch`: each member's own outcome, in order (the counts
    /// above are their sums). Empty for any other command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Outcome>,
    /// The index of the log entry that carried the command, set by
    /// consensus once it is committed (applying leaves it `None`): a
    /// follower that forwarded the write waits until it has applied this
    /// far before answering, so its own reads show the write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_index: Option<u64>,
}
