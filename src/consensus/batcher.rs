//! Group commit on the leader. Every write the leader accepts (its own and
//! those followers forward) queues here; one task proposes them in order,
//! submitting each entry to Raft in queue order (so the log keeps it).
//! While more than a full batch is queued, up to [`IN_FLIGHT`] entries are
//! in flight at once; otherwise one commits before the next is gathered.
//! Single-pin writes (`Apply`, `Unpin`) that queued while the previous
//! entry was in flight go into ONE entry (`Command::Batch`), each
//! caller answered with its own member's outcome, exactly as if written
//! alone. There is no timer: an idle leader proposes a write as soon as it
//! arrives; under load a batch is whatever queued meanwhile, bounded by
//! `consensus.batch_max_pins` ops and [`MAX_ENTRY_BYTES`].
//!
//! Allocation at pin time: before proposing, the batch's pins that are new
//! or whose placement options changed are given to the registered
//! [`PinAllocator`] (the informer's, with the leader's current metrics) and
//! its choice travels in the same entry (a `Place` op after the op that
//! sets the pin, so a new pin is written once; an `Allocate` member for
//! the rest), so a pin is answered with its allocations.
//!
//! It must not decide *where* a pin goes (that is the allocator's hook) nor
//! what a command does (that is `state`).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{ClusterNode, MAX_ENTRY_BYTES, RemoteFailure, entry_bytes};
use crate::manifest::{CidKey, Owner};
use crate::state::{Command, Op, Outcome, Request, StatePin};

/// Chooses allocations at write time: given pins as they will stand after a
/// batch (new, or with changed placement options) and the members' peer
/// ids, answers the peers each should go to (pins it leaves out keep their
/// allocation; the allocation loop looks at them later). Registered by the
/// allocator's informer with [`ClusterNode::set_pin_allocator`].
pub type PinAllocator =
    Arc<dyn Fn(&[StatePin], &[String]) -> Vec<(CidKey, Vec<String>)> + Send + Sync>;

/// Writes waiting for the leader's next entry (a full queue makes callers
/// wait: backpressure).
pub(super) const QUEUE: usize = 8192;

/// Most members one batch holds.
const MAX_MEMBERS: usize = 8192;

/// Log entries proposed and not yet committed at once, while writes keep
/// more than a full batch queued, and for a revision's `Stage` chunks
/// (bulk: `POST /pins/batch`, `state import`, PinSet applies):
/// overlapping their fsync rounds keeps the peers busy. When a batch of
/// single writes takes everything queued, the proposer waits for it to
/// commit before gathering the next, so that concurrent single pins pile
/// up into large entries (measured: overlapping those cost more in entries
/// than it saved in waiting).
pub(super) const IN_FLIGHT: usize = 4;

/// Room kept in a batch's entry for the `Batch` envelope.
const BATCH_ENVELOPE: usize = 64;

/// Room kept for an `Allocate` member's envelope around its list.
const ALLOCATE_ENVELOPE: usize = 16;

/// One accepted write and whom to answer.
pub(super) struct Pending {
    pub(super) command: Command,
    pub(super) reply: oneshot::Sender<Result<Outcome, RemoteFailure>>,
}

/// A batch being gathered: what it holds so far, against its bounds.
#[derive(Debug)]
pub(super) struct Gather {
    max_ops: usize,
    members: usize,
    ops: usize,
    bytes: usize,
}

impl Gather {
    /// A batch that starts with `first` (always admitted: a write alone is
    /// bounded by `write`).
    pub(super) fn new(first: &Command, max_ops: usize) -> Self {
        Self {
            max_ops: max_ops.max(1),
            members: 1,
            ops: first.op_count(),
            bytes: entry_bytes(first).saturating_add(BATCH_ENVELOPE),
        }
    }

    /// True when `first` may be joined by others at all.
    pub(super) fn groupable(command: &Command) -> bool {
        matches!(
            command,
            Command::Apply { .. } | Command::Unpin { .. } | Command::PinSvc(_)
        )
    }

    /// Adds `next` when it may share the entry: groupable, and the batch
    /// stays within its ops, bytes and members bounds.
    pub(super) fn admit(&mut self, next: &Command) -> bool {
        if !Self::groupable(next) || self.members >= MAX_MEMBERS {
            return false;
        }
        let ops = self.ops.saturating_add(next.op_count());
        // A member's own envelope (log id, clock) is not repeated.
        let bytes = self.bytes.saturating_add(super::size::encoded_len(next));
        if ops > self.max_ops || bytes > MAX_ENTRY_BYTES {
            return false;
        }
        self.members += 1;
        self.ops = ops;
        self.bytes = bytes;
        true
    }
}

/// The leader's proposer: takes writes off `queue` in order and proposes
/// them, grouped, until `cancel`.
pub(super) async fn run(
    node: ClusterNode,
    mut queue: mpsc::Receiver<Pending>,
    cancel: CancellationToken,
) {
    let mut carry: Option<Pending> = None;
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // A slot first: while all are taken, writes queue and the next batch
    // grows.
    while let Some((slot, first)) = next_round(&slots, &mut carry, &mut queue, &cancel).await {
        // A revision's chunks come one after another from one writer that
        // keeps several in flight: nothing would pile up behind them.
        let chunk = matches!(first.command, Command::Stage { .. });
        let mut batch = Vec::new();
        if Gather::groupable(&first.command) {
            let mut gather = Gather::new(&first.command, node.inner.batch_max_pins);
            batch.push(first);
            while let Ok(next) = queue.try_recv() {
                if gather.admit(&next.command) {
                    batch.push(next);
                } else {
                    carry = Some(next);
                    break;
                }
            }
        } else {
            batch.push(first);
        }
        node.propose(batch, slot).await;
        if carry.is_none() && !chunk {
            // The queue is drained: let what is in flight commit first.
            match slots.acquire_many(IN_FLIGHT as u32).await {
                Ok(all) => drop(all),
                Err(_) => return,
            }
        }
    }
}

/// What a grouping loop (this proposer, a follower's sender) waits for
/// at the start of each round: one of `slots`, then the next write
/// (`carry`, the one the last round left out, first). `None` once `cancel`
/// fires or the queue closes.
pub(super) async fn next_round<T>(
    slots: &Arc<Semaphore>,
    carry: &mut Option<T>,
    queue: &mut mpsc::Receiver<T>,
    cancel: &CancellationToken,
) -> Option<(OwnedSemaphorePermit, T)> {
    let slot = tokio::select! {
        _ = cancel.cancelled() => return None,
        // Never closed while the loop holds it.
        s = Arc::clone(slots).acquire_owned() => s.ok()?,
    };
    let first = match carry.take() {
        Some(p) => p,
        None => tokio::select! {
            _ = cancel.cancelled() => return None,
            p = queue.recv() => p?,
        },
    };
    Some((slot, first))
}

impl ClusterNode {
    /// Registers the hook that allocates pins at write time (once; later
    /// calls are ignored).
    pub fn set_pin_allocator(&self, allocator: PinAllocator) {
        let _ = self.inner.pin_allocator.set(allocator);
    }

    /// Submits one batch as one log entry (in order: it returns once Raft
    /// has it) and answers each member when it is committed; `slot` is
    /// freed then.
    async fn propose(&self, batch: Vec<Pending>, slot: OwnedSemaphorePermit) {
        let (commands, replies): (Vec<Command>, Vec<_>) =
            batch.into_iter().map(|p| (p.command, p.reply)).unzip();
        let (mut commands, mut allocations) = self.allocate_at_write(commands).await;
        // A revision's chunk carries its pins' placements itself: they
        // apply with its commit, in the same transaction.
        if let [chunk @ (Command::Stage { .. } | Command::Commit { .. })] = commands.as_mut_slice()
        {
            place_staged(chunk, std::mem::take(&mut allocations));
        }
        let mut later = Vec::new();
        if !allocations.is_empty() {
            // Rare (many new pins, many peers each): the choice goes in
            // entries of its own right after.
            let fits = commands.iter().map(super::size::encoded_len).sum::<usize>()
                + super::size::encoded_len(&allocations)
                + ALLOCATE_ENVELOPE
                + BATCH_ENVELOPE
                + 256
                <= MAX_ENTRY_BYTES;
            if fits {
                let rest = place_with_sets(&mut commands, allocations);
                if !rest.is_empty() {
                    commands.push(Command::Allocate { allocations: rest });
                }
            } else {
                later = allocations;
            }
        }
        let single = commands.len() == 1;
        let command = if single {
            match commands.pop() {
                Some(c) => c,
                None => return,
            }
        } else {
            Command::Batch(commands)
        };
        let submitted = self.submit(command).await;
        // The allocations that did not fit go right after, in order.
        let mut extra = Vec::new();
        if submitted.is_ok() {
            for chunk in split_allocations(later) {
                match self.submit(chunk).await {
                    Ok(rx) => extra.push(rx),
                    Err(e) => {
                        tracing::debug!(error = %e, "write-time allocation not recorded; the allocation loop retries");
                    }
                }
            }
        }
        let timeout = self.inner.write_timeout;
        tokio::spawn(async move {
            let result = match submitted {
                Ok(rx) => committed(rx, timeout).await,
                Err(f) => Err(f),
            };
            match result {
                Ok(out) => {
                    let index = out.log_index;
                    let outcomes = if single { vec![out] } else { out.members };
                    let mut outcomes = outcomes.into_iter();
                    for reply in replies {
                        let mut own = outcomes.next().unwrap_or_default();
                        own.log_index = index;
                        // The caller may have given up waiting.
                        let _ = reply.send(Ok(own));
                    }
                }
                Err(f) => {
                    for reply in replies {
                        let _ = reply.send(Err(f.clone()));
                    }
                }
            }
            for rx in extra {
                if let Err(e) = committed(rx, timeout).await {
                    tracing::debug!(error = %e, "write-time allocation not recorded; the allocation loop retries");
                }
            }
            drop(slot);
        });
    }

    /// Hands one command to Raft on this (leader) peer; the receiver
    /// answers once it is committed and applied. Raft appends in the order
    /// of these calls.
    async fn submit(&self, command: Command) -> Result<Committed, RemoteFailure> {
        let req = Request {
            now_ms: chrono::Utc::now().timestamp_millis(),
            command,
        };
        let Some(raft) = &self.inner.raft else {
            return Err(RemoteFailure::Forbidden(super::node::FOLLOWER_WRITE.into()));
        };
        raft.client_write_ff(req)
            .await
            .map_err(|e| RemoteFailure::Unavailable(format!("raft stopped: {e}")))
    }

    /// The allocations the registered [`PinAllocator`] chooses for the
    /// batch's new or re-placed pins (none without one, or when the state
    /// cannot be read: the allocation loop catches up).
    async fn allocate_at_write(
        &self,
        commands: Vec<Command>,
    ) -> (Vec<Command>, Vec<(CidKey, Vec<String>)>) {
        let Some(allocator) = self.inner.pin_allocator.get().cloned() else {
            return (commands, Vec::new());
        };
        if !commands.iter().any(allocated_at_write) {
            return (commands, Vec::new());
        }
        let members: Vec<String> = self.members().into_iter().map(|(_, n)| n.peer_id).collect();
        let store = self.inner.store.clone();
        let shared = Arc::new(commands);
        let task = {
            let shared = Arc::clone(&shared);
            tokio::task::spawn_blocking(move || {
                // The batch's pins from one read transaction.
                let cids = set_cids(&shared);
                let fetched: HashMap<CidKey, Option<StatePin>> = match store.get_many(&cids) {
                    Ok(pins) => cids.into_iter().zip(pins).collect(),
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot read pins to allocate at write time");
                        return Vec::new();
                    }
                };
                let get = |cid: &CidKey| match fetched.get(cid) {
                    Some(pin) => Ok(pin.clone()),
                    None => store.get(cid).map_err(|e| e.to_string()),
                };
                match prospective(get, &shared) {
                    Ok(pins) if !pins.is_empty() => allocator(&pins, &members),
                    Ok(_) => Vec::new(),
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot read pins to allocate at write time");
                        Vec::new()
                    }
                }
            })
        };
        let allocations = task.await.unwrap_or_default();
        // The task is done: this is the only reference left.
        let commands = Arc::try_unwrap(shared).unwrap_or_else(|a| (*a).clone());
        (commands, allocations)
    }
}

/// What [`ClusterNode::submit`] hands back: the commit's answer to come.
type Committed = <<super::TypeConfig as openraft::RaftTypeConfig>::Responder as openraft::raft::responder::Responder<super::TypeConfig>>::Receiver;

/// The outcome of a submitted command once committed, within `timeout`.
async fn committed(rx: Committed, timeout: std::time::Duration) -> Result<Outcome, RemoteFailure> {
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(Ok(resp))) => {
            let mut out = resp.data;
            out.log_index = Some(resp.log_id.index);
            Ok(out)
        }
        Ok(Ok(Err(e))) => Err(super::node::client_write_failure(e)),
        Ok(Err(_)) => Err(RemoteFailure::Unavailable(
            "raft dropped the write (shutting down?)".into(),
        )),
        Err(_) => Err(RemoteFailure::Unavailable(format!(
            "write not committed within {timeout:?} (no quorum?)"
        ))),
    }
}

/// True when `command` sets pins the leader allocates as it proposes
/// them: pins by hand (`Apply`, and the chunks of a bulk `api` revision),
/// Pinning Service requests. A PinSet's revision is left to the allocation
/// loop, as before: placing its chunks too works the same way, but what it
/// costs a million-pin apply was not measured apart from noise yet.
fn allocated_at_write(command: &Command) -> bool {
    let sets = |ops: &[Op]| ops.iter().any(|o| matches!(o, Op::Set { .. }));
    match command {
        Command::Apply { ops, .. } => sets(ops),
        Command::Stage {
            owner: Owner::Api,
            ops,
            ..
        }
        | Command::Commit {
            owner: Owner::Api,
            ops,
            ..
        } => sets(ops),
        Command::PinSvc(change) => change.created().is_some(),
        _ => false,
    }
}

/// True when the options that decide where a pin goes differ.
fn placement_changed(before: &StatePin, after: &StatePin) -> bool {
    let (b, a) = (before.effective(), after.effective());
    let (b, a) = (&b.options, &a.options);
    b.replication != a.replication
        || b.user_allocations != a.user_allocations
        || b.allocate_tags != a.allocate_tags
}

/// The pins `commands` create or re-place, as they will stand once applied
/// (in first-touched order). A CID an `Unpin` touches is left to the
/// allocation loop.
pub(super) fn prospective(
    get: impl Fn(&CidKey) -> Result<Option<StatePin>, String>,
    commands: &[Command],
) -> Result<Vec<StatePin>, String> {
    let mut after: HashMap<CidKey, Option<StatePin>> = HashMap::new();
    let mut order: Vec<CidKey> = Vec::new();
    let mut wanted: HashSet<CidKey> = HashSet::new();
    let mut skipped: HashSet<CidKey> = HashSet::new();
    let current = |cid: &CidKey, after: &HashMap<CidKey, Option<StatePin>>| match after.get(cid) {
        Some(p) => Ok(p.clone()),
        None => get(cid),
    };
    for command in commands {
        if let Some((owner, ops)) = setting_ops(command) {
            for op in ops.iter() {
                match op {
                    Op::Set {
                        cid,
                        written_as,
                        spec,
                    } => {
                        let before = current(cid, &after)?;
                        let mut pin = before.clone().unwrap_or_else(|| StatePin {
                            cid: *cid,
                            written_as: written_as.clone(),
                            owners: Default::default(),
                            allocations: Vec::new(),
                            timestamp_ms: 0,
                        });
                        pin.owners.insert((*owner).clone(), spec.clone());
                        let moved = before.as_ref().is_none_or(|b| placement_changed(b, &pin));
                        if moved && !skipped.contains(cid) && wanted.insert(*cid) {
                            order.push(*cid);
                        }
                        after.insert(*cid, Some(pin));
                    }
                    Op::Release { cid } => {
                        if let Some(mut pin) = current(cid, &after)? {
                            pin.owners.remove(&*owner);
                            after.insert(*cid, (!pin.owners.is_empty()).then_some(pin));
                        }
                    }
                    // Already placed by whoever wrote the ops.
                    Op::Place { cid, .. } => {
                        skipped.insert(*cid);
                        wanted.remove(cid);
                    }
                }
            }
        } else if let Command::Unpin { cid, .. } = command {
            skipped.insert(*cid);
            wanted.remove(cid);
        }
    }
    Ok(order
        .into_iter()
        .filter(|cid| wanted.contains(cid))
        .filter_map(|cid| after.remove(&cid).flatten())
        .collect())
}

/// The owner and ops with which `command` sets pins: its own for `Apply`
/// and a revision's chunks; for a new Pinning Service request, the pin its
/// owner sets (it is placed as that pin).
fn setting_ops(command: &Command) -> Option<(Cow<'_, Owner>, Cow<'_, [Op]>)> {
    match command {
        Command::Apply { owner, ops }
        | Command::Stage { owner, ops, .. }
        | Command::Commit { owner, ops, .. } => {
            Some((Cow::Borrowed(owner), Cow::Borrowed(ops.as_slice())))
        }
        Command::PinSvc(change) => change
            .created()
            .map(|r| (Cow::Owned(r.owner()), Cow::Owned(vec![r.set_op()]))),
        _ => None,
    }
}

/// The CIDs `commands` set (each once, in first-set order): what
/// [`prospective`] reads.
fn set_cids(commands: &[Command]) -> Vec<CidKey> {
    let mut seen = HashSet::new();
    let mut cids = Vec::new();
    for (_, ops) in commands.iter().filter_map(setting_ops) {
        for op in ops.iter() {
            if let Op::Set { cid, .. } = op
                && seen.insert(*cid)
            {
                cids.push(*cid);
            }
        }
    }
    cids
}

/// Moves each of `allocations` into the op list of the last `Apply` in
/// `commands` that sets its pin, as a `Place` op after that list's own (a
/// new pin is then written once, with its peers, rather than written and
/// then placed by an `Allocate` member); answers the placements no `Apply`
/// sets (a Pinning Service request's), in their order.
fn place_with_sets(
    commands: &mut [Command],
    allocations: Vec<(CidKey, Vec<String>)>,
) -> Vec<(CidKey, Vec<String>)> {
    let order: Vec<CidKey> = allocations.iter().map(|(cid, _)| *cid).collect();
    let mut todo: HashMap<CidKey, Vec<String>> = allocations.into_iter().collect();
    for command in commands.iter_mut().rev() {
        let Command::Apply { ops, .. } = command else {
            continue;
        };
        let places: Vec<Op> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Set { cid, .. } => todo.remove(cid).map(|peers| Op::Place { cid: *cid, peers }),
                _ => None,
            })
            .collect();
        ops.extend(places);
    }
    order
        .into_iter()
        .filter_map(|cid| todo.remove(&cid).map(|peers| (cid, peers)))
        .collect()
}

/// Adds `allocations` to the `Stage` or `Commit` chunk `chunk` as `Place`
/// ops after its own, when the entry still fits (else they are dropped:
/// the allocation loop places those pins once the revision is committed).
fn place_staged(chunk: &mut Command, allocations: Vec<(CidKey, Vec<String>)>) {
    let (Command::Stage { ops, .. } | Command::Commit { ops, .. }) = chunk else {
        return;
    };
    if allocations.is_empty() {
        return;
    }
    let before = ops.len();
    ops.extend(
        allocations
            .into_iter()
            .map(|(cid, peers)| Op::Place { cid, peers }),
    );
    if entry_bytes(chunk) > MAX_ENTRY_BYTES
        && let Command::Stage { ops, .. } | Command::Commit { ops, .. } = chunk
    {
        ops.truncate(before);
    }
}

/// `allocations` as `Allocate` commands that each fit an entry, in order.
fn split_allocations(allocations: Vec<(CidKey, Vec<String>)>) -> Vec<Command> {
    let mut out = Vec::new();
    let mut todo = vec![allocations];
    while let Some(mut allocations) = todo.pop() {
        if allocations.is_empty() {
            continue;
        }
        let n = allocations.len();
        let command = Command::Allocate { allocations };
        if n > 1 && entry_bytes(&command) > MAX_ENTRY_BYTES {
            if let Command::Allocate { allocations: all } = command {
                allocations = all;
                let back = allocations.split_off(n / 2);
                todo.push(back);
                todo.push(allocations);
            }
        } else {
            out.push(command);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Owner, PinOptions, PinSpec, ReplicationFactors};
    use crate::state::PinState;
    use crate::testkit::seq_cid;

    fn spec(min: i32, max: i32) -> PinSpec {
        PinSpec {
            name: String::new(),
            options: Arc::new(PinOptions {
                replication: ReplicationFactors { min, max },
                ..PinOptions::default()
            }),
        }
    }

    fn pin(i: u64, min: i32, max: i32) -> Command {
        Command::Apply {
            owner: Owner::Api,
            ops: vec![Op::Set {
                cid: seq_cid(i),
                written_as: None,
                spec: spec(min, max),
            }],
        }
    }

    #[test]
    fn a_batch_takes_pins_and_unpins_up_to_its_op_bound_and_nothing_else() {
        let mut g = Gather::new(&pin(0, 2, 2), 3);
        assert!(g.admit(&Command::Unpin {
            cid: seq_cid(0),
            force: false
        }));
        assert!(g.admit(&pin(1, 2, 2)));
        assert!(!g.admit(&pin(2, 2, 2)), "a fourth op is over the bound");
        let mut g = Gather::new(&pin(0, 2, 2), 100);
        let abort = Command::Abort {
            owner: Owner::Api,
            revision: 1,
        };
        assert!(!g.admit(&abort), "only single-pin writes share an entry");
        assert!(!Gather::groupable(&abort));
    }

    #[test]
    fn a_batch_stays_within_one_log_entry() {
        let big = Command::Apply {
            owner: Owner::Api,
            ops: (0..10_000)
                .map(|i| Op::Set {
                    cid: seq_cid(i),
                    written_as: None,
                    spec: PinSpec {
                        name: format!("{i:0>40}"),
                        options: Arc::new(PinOptions::default()),
                    },
                })
                .collect(),
        };
        assert!(
            entry_bytes(&big) > MAX_ENTRY_BYTES / 2,
            "{}",
            entry_bytes(&big)
        );
        assert!(
            entry_bytes(&big) < MAX_ENTRY_BYTES - 1000,
            "{}",
            entry_bytes(&big)
        );
        let mut g = Gather::new(&big, 1_000_000);
        assert!(!g.admit(&big), "two would not fit one entry");
        assert!(g.admit(&pin(1, 1, 1)), "a small pin still does");
    }

    #[test]
    fn new_pins_and_changed_placement_are_allocated_unpinned_ones_are_not() {
        let mut state = PinState::new();
        state.apply_request(&Request {
            now_ms: 1,
            command: pin(1, 2, 2),
        });
        state.apply_request(&Request {
            now_ms: 1,
            command: pin(2, 2, 2),
        });
        let batch = vec![
            pin(1, 2, 2), // unchanged: keeps its allocation
            pin(2, 3, 3), // re-placed
            pin(3, 2, 2), // new
            pin(4, 2, 2),
            Command::Unpin {
                cid: seq_cid(4),
                force: false,
            },
            pin(3, 2, 2), // same again: once
        ];
        let pins = prospective(|cid| Ok(state.get(cid).cloned()), &batch).unwrap();
        let cids: Vec<CidKey> = pins.iter().map(|p| p.cid).collect();
        assert_eq!(cids, vec![seq_cid(2), seq_cid(3)]);
        assert_eq!(pins[0].effective().options.replication.min, 3);
    }

    #[test]
    fn allocations_too_large_for_one_entry_are_split_in_order() {
        let peers: Vec<String> = (0..20).map(|p| format!("12D3KooW{p:044}")).collect();
        let all: Vec<(CidKey, Vec<String>)> =
            (0..10_000).map(|i| (seq_cid(i), peers.clone())).collect();
        let entries = split_allocations(all.clone());
        assert!(entries.len() > 1);
        let mut back = Vec::new();
        for e in entries {
            assert!(entry_bytes(&e) <= MAX_ENTRY_BYTES);
            let Command::Allocate { allocations } = e else {
                panic!("not an allocation");
            };
            back.extend(allocations);
        }
        assert_eq!(back, all);
    }

    #[test]
    fn placements_ride_with_the_last_op_setting_their_pin_and_apply_as_an_allocate_would() {
        let peers = |p: &str| vec![p.to_string()];
        let batch = vec![
            pin(1, 1, 1),
            pin(2, 1, 1),
            pin(1, 2, 2), // the same pin again: its placement goes here
            Command::Unpin {
                cid: seq_cid(9),
                force: false,
            },
        ];
        let allocations = vec![
            (seq_cid(1), vec!["a".to_string(), "b".to_string()]),
            (seq_cid(7), peers("c")), // set by no `Apply`: left over
            (seq_cid(2), peers("b")),
        ];
        let mut merged = batch.clone();
        let rest = place_with_sets(&mut merged, allocations.clone());
        assert_eq!(rest, vec![(seq_cid(7), peers("c"))]);
        let places = |c: &Command| match c {
            Command::Apply { ops, .. } => ops
                .iter()
                .filter_map(|op| match op {
                    Op::Place { cid, .. } => Some(*cid),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        assert_eq!(places(&merged[0]), vec![]);
        assert_eq!(places(&merged[1]), vec![seq_cid(2)]);
        assert_eq!(places(&merged[2]), vec![seq_cid(1)]);
        // Applied, the merged batch leaves the state an `Allocate` member
        // after the batch leaves.
        let mut apart = batch;
        apart.push(Command::Allocate { allocations });
        let (mut a, mut b) = (PinState::new(), PinState::new());
        for (state, members) in [(&mut a, apart), (&mut b, merged)] {
            state.apply_request(&Request {
                now_ms: 5,
                command: Command::Batch(members),
            });
        }
        for i in [1, 2] {
            assert_eq!(a.get(&seq_cid(i)), b.get(&seq_cid(i)), "pin {i}");
        }
        let one = b.get(&seq_cid(1)).unwrap();
        assert_eq!(one.allocations, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(one.effective().options.replication.min, 2);
        assert_eq!(b.get(&seq_cid(2)).unwrap().allocations, peers("b"));
    }

    #[test]
    fn the_cids_read_for_allocation_are_the_ones_set_once_each() {
        let batch = vec![
            pin(3, 1, 1),
            Command::Unpin {
                cid: seq_cid(4),
                force: false,
            },
            pin(1, 1, 1),
            pin(3, 2, 2),
        ];
        assert_eq!(set_cids(&batch), vec![seq_cid(3), seq_cid(1)]);
    }
}
