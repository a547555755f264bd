//! The one outbound Bitswap stream to a peer: opened with the newest
//! protocol version the peer speaks (remembered for the connection), and
//! fed our wants and our answers, encoded for that version.
//!
//! It must not decide what to send: wants and answers arrive queued.

use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream};
use libp2p_stream::OpenStreamError;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::wire::{Message, PROTOCOLS, Version, encode_for};

/// Queued messages written to a stream at once, up to about this many bytes.
const COALESCE_BYTES: usize = 1 << 20;

/// Sends our wants (first: they are small and keep the peer busy) and our
/// answers to `peer` on one stream, until the peer is `gone` or the node
/// stops. A peer that does not read holds up only this task.
pub(super) async fn send_loop(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    mut wants: mpsc::Receiver<Message>,
    mut answers: mpsc::Receiver<Message>,
    gone: CancellationToken,
) {
    let mut stream: Option<(Stream, Version)> = None;
    // Index into `PROTOCOLS` of the version the peer accepted last.
    let mut known = 0usize;
    loop {
        let msg = tokio::select! {
            biased;
            _ = gone.cancelled() => break,
            m = wants.recv() => match m { Some(m) => m, None => break },
            m = answers.recv() => match m { Some(m) => m, None => break },
        };
        // Messages that queued meanwhile go in the same write.
        let mut size = msg.encoded_len();
        let mut batch = vec![msg];
        while size < COALESCE_BYTES {
            let Ok(more) = wants.try_recv().or_else(|_| answers.try_recv()) else {
                break;
            };
            size += more.encoded_len();
            batch.push(more);
        }
        // One retry on a fresh stream: the old one may have been reset.
        for _ in 0..2 {
            if stream.is_none() {
                stream = open(&mut control, peer, &mut known).await;
            }
            let Some((s, version)) = stream.as_mut() else {
                break;
            };
            let mut frame = Vec::with_capacity(size + 8 * batch.len());
            for m in &batch {
                encode_for(m, *version, &mut frame);
            }
            if frame.is_empty() {
                break;
            }
            let written = tokio::select! {
                _ = gone.cancelled() => return,
                w = s.write_all(&frame) => w,
            };
            match written {
                Ok(()) => break,
                Err(_) => stream = None,
            }
        }
    }
    if let Some((mut s, _)) = stream {
        let _ = s.close().await;
    }
}

/// Opens a stream to `peer` with the newest version it accepts, trying
/// from `PROTOCOLS[*known]` down and remembering the one that worked (or
/// that none did: then the peer is not asked again on this connection).
async fn open(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    known: &mut usize,
) -> Option<(Stream, Version)> {
    while let Some((protocol, version)) = PROTOCOLS.get(*known) {
        match control.open_stream(peer, protocol.clone()).await {
            Ok(s) => return Some((s, *version)),
            Err(OpenStreamError::UnsupportedProtocol(_)) => *known += 1,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot open a bitswap stream");
                return None;
            }
        }
    }
    tracing::debug!(%peer, "the peer speaks no bitswap version we know");
    None
}
