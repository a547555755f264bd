//! Writes a follower sends to the leader. Every write a follower accepts
//! queues here; one task sends them in order, grouped: up to
//! [`IN_FLIGHT`] requests are on their way at once, and the pins and
//! unpins that queue meanwhile go together in the next one
//! (`Rpc::WriteBatch`), each caller answered with its own outcome, exactly
//! as if sent alone (other commands go alone). There is no timer: an idle
//! follower sends a write as soon as it arrives.
//!
//! Under load this turns one request and one reply per pin into one per
//! group, which is most of what a forwarded pin costs (the leader's
//! proposer puts a group's writes in one log entry anyway).
//!
//! It must not decide what a write does or where it goes: it carries
//! commands and answers, nothing else.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::batcher::{Gather, next_round};
use super::{ClusterNode, MAX_ENTRY_BYTES, RemoteFailure, Rpc, RpcReply};
use crate::state::{Command, Outcome};

/// Writes waiting to be sent (a full queue makes callers wait).
pub(super) const QUEUE: usize = 8192;

/// Requests to the leader on their way at once. Two: one is answered
/// while the next gathers what queued meanwhile.
const IN_FLIGHT: usize = 2;

/// Most writes in one request.
const MAX_WRITES: usize = 4096;

/// What one write's answer is.
pub(super) type Answer = Result<Outcome, RemoteFailure>;

/// One write to send to the leader and whom to answer.
pub(super) struct Forward {
    pub(super) command: Command,
    pub(super) reply: oneshot::Sender<Answer>,
}

/// The follower's sender: takes writes off `queue` in order and sends
/// them to the leader, grouped, until `cancel`.
pub(super) async fn run(
    node: ClusterNode,
    mut queue: mpsc::Receiver<Forward>,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carry: Option<Forward> = None;
    while let Some((slot, first)) = next_round(&slots, &mut carry, &mut queue, &cancel).await {
        let groupable = Gather::groupable(&first.command);
        let mut bytes = super::size::encoded_len(&first.command);
        let mut group = vec![first];
        while groupable && group.len() < MAX_WRITES {
            let Ok(next) = queue.try_recv() else { break };
            let more = super::size::encoded_len(&next.command);
            if !Gather::groupable(&next.command) || bytes.saturating_add(more) > MAX_ENTRY_BYTES {
                carry = Some(next);
                break;
            }
            bytes += more;
            group.push(next);
        }
        let node = node.clone();
        tokio::spawn(async move {
            node.send_group(group).await;
            drop(slot);
        });
    }
}

impl ClusterNode {
    /// Queues `command` for the leader and waits for its answer.
    pub(super) async fn forward(&self, command: Command) -> Answer {
        let (reply, answer) = oneshot::channel();
        let stopped = || RemoteFailure::Unavailable("the peer is shutting down".into());
        self.inner
            .forwards
            .send(Forward { command, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Sends one group to the leader and answers each of its writes. A
    /// group of one goes as a plain `Write`.
    async fn send_group(&self, group: Vec<Forward>) {
        let (commands, replies): (Vec<Command>, Vec<_>) =
            group.into_iter().map(|f| (f.command, f.reply)).unzip();
        let n = commands.len();
        let unexpected = || Err(RemoteFailure::Other("unexpected reply".into()));
        let answers: Vec<Answer> = match <[Command; 1]>::try_from(commands) {
            Ok([command]) => vec![self.send_one(command).await],
            Err(commands) => {
                // Kept to send one by one if the group fails: a leader of
                // an older version does not know `WriteBatch` (and a
                // leader that is really gone fails those too). Only pins
                // and unpins are grouped, and writing one again is
                // harmless (the same spec, or nothing left to unpin).
                let again = commands.clone();
                match self.send_to_leader(Rpc::WriteBatch(commands)).await {
                    Ok(RpcReply::WriteBatch(r)) if r.len() == n => r,
                    Ok(_) => vec![unexpected(); n],
                    // The leader does not trust this peer: one by one
                    // would be refused the same way.
                    Err(e @ RemoteFailure::Forbidden(_)) => vec![Err(e); n],
                    Err(e) => {
                        tracing::debug!(error = %e, writes = n, "a group of writes failed; sending them one by one");
                        futures::future::join_all(again.into_iter().map(|c| self.send_one(c))).await
                    }
                }
            }
        };
        for (reply, answer) in replies.into_iter().zip(answers) {
            // The caller may have given up waiting.
            let _ = reply.send(answer);
        }
    }

    /// Sends one write to the leader as a plain `Write`.
    async fn send_one(&self, command: Command) -> Answer {
        match self.send_to_leader(Rpc::Write(command)).await {
            Ok(RpcReply::Write(r)) => r,
            Ok(_) => Err(RemoteFailure::Other("unexpected reply".into())),
            Err(e) => Err(e),
        }
    }

    /// Writes forwarded together (`Rpc::WriteBatch`), on the leader: queued
    /// for the proposer in their order, answered together.
    pub(super) async fn write_local_group(&self, commands: Vec<Command>) -> Vec<Answer> {
        // `join_all` polls them in order and the proposer's queue admits
        // waiting senders first come, first served: the order holds.
        futures::future::join_all(commands.into_iter().map(|c| self.write_local(c))).await
    }
}
