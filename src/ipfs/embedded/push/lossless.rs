//! Acknowledged block push (`/pinfleet/block-push-acked/1.0.0`), for
//! sharded adds: the adder keeps no copy of what it sends, so nothing may
//! be dropped, and the add must learn whether every block arrived.
//!
//! Wire: one stream per shard and peer. Sender → receiver: the same frames
//! as the lossy push (a uvarint-length-prefixed Bitswap `Message` with only
//! `payload`). Receiver → sender: one status byte per frame once it is
//! handled ([`ACK_STORED`], or a refusal after which the receiver ends the
//! stream), and once the sender has closed its side, one more byte when
//! everything received is durable. The sender keeps at most [`WINDOW`]
//! frames unacknowledged, and a queue of [`QUEUE_FRAMES`] frames per peer:
//! a full queue makes the add wait. A refusal, a stalled or broken stream
//! fails the add.
//!
//! This module must not decide whom to send to, nor pin.

use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::super::bitswap::wire::{Block, MAX_MESSAGE_BYTES, Message, cid_prefix, next_message};
use super::{BLOCK_OVERHEAD, FRAME_BLOCK_BYTES, Push, store_verified};
use crate::ipfs::IpfsError;

/// The protocol.
pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/pinfleet/block-push-acked/1.0.0");
/// The frame (or, at the end, everything) is stored.
pub(crate) const ACK_STORED: u8 = 0;
/// Refused: the receiver's store would pass its `storage_max`.
pub(crate) const ACK_FULL: u8 = 1;
/// Refused: a block does not hash to its CID.
pub(crate) const ACK_INVALID: u8 = 2;
/// The receiver could not store (disk error) or refuses the sender.
pub(crate) const ACK_FAILED: u8 = 3;
/// Frames written and not yet acknowledged, per peer.
const WINDOW: usize = 4;
/// Frames queued per peer before the add waits.
const QUEUE_FRAMES: usize = 4;
/// How long a write or an acknowledgement may take.
const STALL: Duration = Duration::from_secs(60);

/// What a status byte means, for the sender's error.
fn refusal(code: u8) -> &'static str {
    match code {
        ACK_FULL => "its store is full (ipfs.storage_max)",
        ACK_INVALID => "a block did not match its cid",
        _ => "it could not store them",
    }
}

impl Push {
    /// Sends `peers` (each named by its IPFS node id) the blocks given to
    /// the session, losslessly (see the module). Call within the runtime;
    /// use the session from a blocking thread.
    pub(crate) fn acked_session(&self, peers: Vec<PeerId>) -> AckedSession {
        let peers = peers
            .into_iter()
            .map(|peer| {
                let (tx, rx) = mpsc::channel(QUEUE_FRAMES);
                let (done_tx, done) = oneshot::channel();
                let allowed = self.allowed(&peer);
                let control = self.control.clone();
                let cancel = self.cancel.clone();
                self.tasks.spawn(async move {
                    let out = if allowed {
                        send_acked(control, peer, rx, cancel).await
                    } else {
                        Err("it is not a cluster member's node".to_string())
                    };
                    let _ = done_tx.send(out);
                });
                AckedPeer {
                    peer,
                    tx: Some(tx),
                    done: Some(done),
                }
            })
            .collect();
        AckedSession {
            peers,
            pending: Vec::new(),
            pending_bytes: 0,
        }
    }

    /// Reads `peer`'s acknowledged frames, storing each one's verified
    /// blocks and answering its status; at the end, makes them durable.
    pub(super) async fn acked_loop(self: std::sync::Arc<Self>, peer: PeerId, mut stream: Stream) {
        if !self.allowed(&peer) {
            self.counters
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = stream.write_all(&[ACK_FAILED]).await;
            let _ = stream.close().await;
            return;
        }
        let mut buf = Vec::new();
        // After a refusal every further frame is read and refused too (not
        // stored), so that the sender, whose frames are in flight, never
        // stalls on a full stream before it reads why.
        let mut refused: Option<u8> = None;
        loop {
            let msg = match next_message(&mut stream, &mut buf, &self.cancel).await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "acknowledged block push stream dropped");
                    return;
                }
            };
            if let Some(code) = refused {
                if !matches!(
                    tokio::time::timeout(STALL, stream.write_all(&[code])).await,
                    Ok(Ok(()))
                ) {
                    return;
                }
                continue;
            }
            let store = self.store.clone();
            let max = self.storage_max;
            let stored =
                tokio::task::spawn_blocking(move || store_verified(&store, msg.payload, max)).await;
            let code = match stored {
                Ok(Ok(stored)) => {
                    self.count(peer, stored);
                    if stored.full > 0 {
                        ACK_FULL
                    } else if stored.rejected > 0 {
                        ACK_INVALID
                    } else {
                        ACK_STORED
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "cannot store pushed blocks");
                    ACK_FAILED
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "cannot store pushed blocks");
                    ACK_FAILED
                }
            };
            if !matches!(
                tokio::time::timeout(STALL, stream.write_all(&[code])).await,
                Ok(Ok(()))
            ) {
                return;
            }
            if code != ACK_STORED {
                refused = Some(code);
            }
        }
        // The sender is done: make what it sent durable, then say so.
        let code = match refused {
            Some(code) => code,
            None => {
                let store = self.store.clone();
                match tokio::task::spawn_blocking(move || store.sync()).await {
                    Ok(Ok(())) => ACK_STORED,
                    _ => ACK_FAILED,
                }
            }
        };
        let _ = tokio::time::timeout(STALL, stream.write_all(&[code])).await;
        let _ = tokio::time::timeout(STALL, stream.close()).await;
    }
}

/// One peer of an [`AckedSession`].
struct AckedPeer {
    peer: PeerId,
    /// Its queue; `None` once closed.
    tx: Option<mpsc::Sender<Bytes>>,
    /// Its sender's outcome.
    done: Option<oneshot::Receiver<Result<(), String>>>,
}

impl AckedPeer {
    /// Why this peer's sender ended (waiting for it to end).
    fn outcome(&mut self) -> Result<(), IpfsError> {
        self.tx = None;
        let out = match self.done.take() {
            Some(done) => done
                .blocking_recv()
                .unwrap_or_else(|_| Err("the push stopped".to_string())),
            None => Ok(()),
        };
        out.map_err(|why| IpfsError::Delivery {
            what: format!("sending blocks to ipfs node {}: {why}", self.peer),
        })
    }
}

/// One shard's acknowledged push: blocks are framed and each frame queued
/// to every peer (waiting for room); [`AckedSession::finish`] waits until
/// every peer confirmed. Use it from a blocking thread.
pub struct AckedSession {
    peers: Vec<AckedPeer>,
    pending: Vec<Block>,
    pending_bytes: usize,
}

impl std::fmt::Debug for AckedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckedSession")
            .field(
                "peers",
                &self.peers.iter().map(|p| p.peer).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl AckedSession {
    /// Sends the block `cid` (its bytes `data`, known to hash to it);
    /// waits while a peer's queue is full. Fails when a peer's stream
    /// failed or it refused blocks.
    pub fn send(&mut self, cid: &Cid, data: &[u8]) -> Result<(), IpfsError> {
        if self.peers.is_empty() || cid.hash().code() == 0 {
            return Ok(());
        }
        let size = data.len() + BLOCK_OVERHEAD;
        if size > MAX_MESSAGE_BYTES {
            return Err(IpfsError::Delivery {
                what: format!(
                    "block {cid} ({} bytes) is too large to send (at most {MAX_MESSAGE_BYTES})",
                    data.len()
                ),
            });
        }
        if self.pending_bytes + size > MAX_MESSAGE_BYTES {
            self.flush()?;
        }
        self.pending.push(Block {
            prefix: cid_prefix(cid),
            data: Bytes::copy_from_slice(data),
        });
        self.pending_bytes += size;
        if self.pending_bytes >= FRAME_BLOCK_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Queues the pending blocks as one frame to every peer.
    fn flush(&mut self) -> Result<(), IpfsError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let msg = Message {
            wantlist: None,
            payload: std::mem::take(&mut self.pending),
            block_presences: Vec::new(),
        };
        self.pending_bytes = 0;
        let frame = Bytes::from(msg.encode_length_delimited_to_vec());
        for p in &mut self.peers {
            let sent =
                p.tx.as_ref()
                    .is_some_and(|tx| tx.blocking_send(frame.clone()).is_ok());
            if !sent {
                // Its sender ended early: that is why.
                p.outcome()?;
                return Err(IpfsError::Delivery {
                    what: format!("sending blocks to ipfs node {}: the push stopped", p.peer),
                });
            }
        }
        Ok(())
    }

    /// Sends what is pending and waits until every peer confirmed that it
    /// stored everything (durably); the first failure otherwise.
    pub fn finish(mut self) -> Result<(), IpfsError> {
        let flushed = self.flush();
        for p in &mut self.peers {
            p.tx = None;
        }
        let mut first = flushed.err();
        for p in &mut self.peers {
            if let Err(e) = p.outcome()
                && first.is_none()
            {
                first = Some(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Writes one session's frames to `peer`, reading its acknowledgements.
async fn send_acked(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    mut frames: mpsc::Receiver<Bytes>,
    cancel: CancellationToken,
) -> Result<(), String> {
    let stopped = || "the node is stopping".to_string();
    let mut stream = tokio::select! {
        _ = cancel.cancelled() => return Err(stopped()),
        s = tokio::time::timeout(STALL, control.open_stream(peer, PROTOCOL)) => match s {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("cannot open a stream: {e}")),
            Err(_) => return Err("opening a stream stalled".into()),
        },
    };
    let mut unacked = 0usize;
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => return Err(stopped()),
            f = frames.recv() => match f { Some(f) => f, None => break },
        };
        match tokio::time::timeout(STALL, stream.write_all(&frame)).await {
            Ok(Ok(())) => {}
            // A receiver that refused a frame ends the stream: say why.
            Ok(Err(e)) => {
                read_ack(&mut stream).await?;
                return Err(format!("the stream failed: {e}"));
            }
            Err(_) => return Err(format!("writing stalled for {}s", STALL.as_secs())),
        }
        unacked += 1;
        while unacked >= WINDOW {
            read_ack(&mut stream).await?;
            unacked -= 1;
        }
    }
    // Ends our side; the receiver answers the frames left and then that
    // everything is durable.
    match tokio::time::timeout(STALL, stream.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("the stream failed: {e}")),
        Err(_) => return Err("closing the stream stalled".into()),
    }
    for _ in 0..=unacked {
        read_ack(&mut stream).await?;
    }
    Ok(())
}

/// One status byte; an error unless it says stored.
async fn read_ack(stream: &mut Stream) -> Result<(), String> {
    let mut code = [0u8; 1];
    match tokio::time::timeout(STALL, stream.read_exact(&mut code)).await {
        Ok(Ok(())) if code[0] == ACK_STORED => Ok(()),
        Ok(Ok(())) => Err(format!("it refused blocks: {}", refusal(code[0]))),
        Ok(Err(e)) => Err(format!("no acknowledgement: {e}")),
        Err(_) => Err(format!(
            "no acknowledgement for {}s (stalled)",
            STALL.as_secs()
        )),
    }
}
