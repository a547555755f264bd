//! One atomic revision written as it is produced: ops are pushed one at a
//! time, full chunks go out as `Stage` entries (a few in flight at once, so
//! producing the next chunk overlaps replicating the last), and `commit`
//! applies every chunk in one transaction on each peer. What a PinSet
//! apply and a bulk import (`POST /pins/batch`) both write.
//!
//! Chunks hold at most `consensus.batch_max_pins` ops and fit an entry.
//! An owner `api` revision's chunks take at most half an entry's bytes: the
//! leader adds each of their pins' placement (`Op::Place`, never larger
//! than the pin's own op) to the chunk, so those pins are allocated in the
//! commit's transaction rather than by the allocation loop afterwards
//! (which owners: `consensus::batcher`'s `allocated_at_write`).

// The state store answers with openraft's storage error (~224 bytes), as in
// `consensus`; boxing it at every read would only add noise.
#![allow(clippy::result_large_err)]

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;

use crate::consensus::{ClusterError, ClusterNode, MAX_ENTRY_BYTES, entry_bytes};
use crate::manifest::Owner;
use crate::state::codec::chunk_ops;
use crate::state::{Command, Op, Outcome, PinSetRecord};

/// `Stage` entries proposed and not yet committed at once.
const STAGES_IN_FLIGHT: usize = 4;

/// A revision being written.
pub struct StagedWrite {
    node: ClusterNode,
    owner: Owner,
    revision: u64,
    /// Bytes of encoded ops one chunk may take.
    budget: usize,
    max_ops: usize,
    /// Ops not yet in a staged chunk.
    pending: Vec<Op>,
    next_seq: u32,
    in_flight: FuturesUnordered<BoxFuture<'static, Result<Outcome, ClusterError>>>,
    /// Log entries written so far.
    entries: u64,
}

impl std::fmt::Debug for StagedWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedWrite")
            .field("owner", &self.owner)
            .field("revision", &self.revision)
            .field("staged", &self.next_seq)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl StagedWrite {
    /// A new revision of `owner`; `record` is the PinSet record its commit
    /// will carry (its size bounds the chunks).
    pub fn new(
        node: &ClusterNode,
        owner: Owner,
        record: &Option<PinSetRecord>,
    ) -> Result<Self, ClusterError> {
        let revision: u64 = rand::random();
        let budget = ops_budget(&owner, revision, record)?;
        Ok(Self {
            node: node.clone(),
            revision,
            // Room for the leader's placements (see the module docs).
            budget: if owner == Owner::Api {
                budget / 2
            } else {
                budget
            },
            max_ops: node.batch_max_pins().max(1),
            owner,
            pending: Vec::new(),
            next_seq: 0,
            in_flight: FuturesUnordered::new(),
            entries: 0,
        })
    }

    /// Adds `op`; stages what fills whole chunks. On an error the caller
    /// should [`abort`](Self::abort).
    pub async fn push(&mut self, op: Op) -> Result<(), ClusterError> {
        self.pending.push(op);
        if self.pending.len() >= 2 * self.max_ops {
            self.stage_full().await?;
        }
        Ok(())
    }

    /// Stages every full chunk of `pending`, keeping the last (possibly
    /// partial) one.
    async fn stage_full(&mut self) -> Result<(), ClusterError> {
        let ops = std::mem::take(&mut self.pending);
        let mut chunks = chunk_ops(ops, self.max_ops, self.budget)
            .map_err(|e| ClusterError::TooLarge(e.to_string()))?;
        self.pending = chunks.pop().unwrap_or_default();
        for chunk in chunks {
            self.stage(chunk).await?;
        }
        Ok(())
    }

    /// Proposes one chunk, waiting first while too many are in flight.
    async fn stage(&mut self, ops: Vec<Op>) -> Result<(), ClusterError> {
        while self.in_flight.len() >= STAGES_IN_FLIGHT {
            if let Some(done) = self.in_flight.next().await {
                done?;
            }
        }
        let seq = self.next_seq;
        self.next_seq = seq
            .checked_add(1)
            .ok_or_else(|| ClusterError::TooLarge(format!("more than {} chunks", u32::MAX)))?;
        let node = self.node.clone();
        let command = Command::Stage {
            owner: self.owner.clone(),
            revision: self.revision,
            seq,
            ops,
        };
        self.in_flight
            .push(Box::pin(async move { node.write(command).await }));
        self.entries += 1;
        Ok(())
    }

    /// Commits the revision: every chunk staged plus what is pending, at
    /// once, if the owner is still at generation `base` (`None`: whatever
    /// it is). Answers the commit's outcome (a refusal included) and the
    /// log entries the revision took. On an error nothing was applied.
    pub async fn commit(
        mut self,
        base: Option<u64>,
        record: Option<PinSetRecord>,
    ) -> Result<(Outcome, u64), ClusterError> {
        let last = match self.stage_rest().await {
            Ok(last) => last,
            Err(e) => {
                self.abort().await;
                return Err(e);
            }
        };
        let out = self
            .node
            .write(Command::Commit {
                owner: self.owner.clone(),
                revision: self.revision,
                base,
                staged: self.next_seq,
                ops: last,
                record,
            })
            .await?;
        Ok((out, self.entries + 1))
    }

    /// Stages all but the last chunk of what is pending and waits for
    /// every stage; answers the last chunk (the commit's own ops).
    async fn stage_rest(&mut self) -> Result<Vec<Op>, ClusterError> {
        let ops = std::mem::take(&mut self.pending);
        let mut chunks = chunk_ops(ops, self.max_ops, self.budget)
            .map_err(|e| ClusterError::TooLarge(e.to_string()))?;
        let last = chunks.pop().unwrap_or_default();
        for chunk in chunks {
            self.stage(chunk).await?;
        }
        while let Some(done) = self.in_flight.next().await {
            done?;
        }
        Ok(last)
    }

    /// Drops what was staged (best effort: staged chunks also expire on
    /// their own).
    pub async fn abort(mut self) {
        while self.in_flight.next().await.is_some() {}
        if self.next_seq > 0 {
            let _ = self
                .node
                .write(Command::Abort {
                    owner: self.owner.clone(),
                    revision: self.revision,
                })
                .await;
        }
    }
}

/// Bytes of encoded ops one entry of this revision can carry: the entry
/// limit less what a `Stage` or the `Commit` (with `record`) carries
/// besides its ops. A record that leaves less than half an entry for ops
/// is refused.
fn ops_budget(
    owner: &Owner,
    revision: u64,
    record: &Option<PinSetRecord>,
) -> Result<usize, ClusterError> {
    // The ops travel as one byte string: its head takes at most 9 bytes,
    // and the probes below already hold an empty batch.
    const BYTE_STRING_HEAD: usize = 9;
    let stage = Command::Stage {
        owner: owner.clone(),
        revision,
        seq: u32::MAX,
        ops: Vec::new(),
    };
    let commit = Command::Commit {
        owner: owner.clone(),
        revision,
        base: Some(u64::MAX),
        staged: u32::MAX,
        ops: Vec::new(),
        record: record.clone(),
    };
    let overhead = entry_bytes(&stage).max(entry_bytes(&commit)) + BYTE_STRING_HEAD;
    if overhead > MAX_ENTRY_BYTES / 2 {
        return Err(ClusterError::TooLarge(format!(
            "the PinSet's record (revision, source, labels) takes {overhead} bytes \
             encoded; at most {} are allowed",
            MAX_ENTRY_BYTES / 2
        )));
    }
    Ok(MAX_ENTRY_BYTES - overhead)
}
