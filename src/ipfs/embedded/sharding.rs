//! What a sharded add needs from the embedded node (`api::add::shard`):
//! sending a shard's blocks to other nodes losslessly and storing them
//! here, both within `[ipfs] storage_max`.
//!
//! It must not decide shards or their peers.

use cid::Cid;
use libp2p::PeerId;

use super::{AckedSession, EmbeddedNode, mh_of, storage};
use crate::ipfs::IpfsError;

impl EmbeddedNode {
    /// Pushed blocks refused because storing them would take this node
    /// past its `storage_max`.
    pub fn pushed_blocks_refused_full(&self) -> u64 {
        self.inner.push.refused_full()
    }

    /// Sends blocks to the IPFS nodes `peers` losslessly, each frame
    /// acknowledged (a sharded add's shard: see `push::lossless`). Call
    /// within the runtime; use the session from a blocking thread.
    pub fn acked_session(&self, peers: Vec<PeerId>) -> AckedSession {
        self.inner.push.acked_session(peers)
    }

    /// Stores `blocks` here (unpinned, durable when this returns) unless
    /// they would take the store past `storage_max`. Blocking: call from a
    /// blocking thread. Identity blocks are skipped.
    pub fn store_blocks_blocking(&self, blocks: &[(Cid, Vec<u8>)]) -> Result<(), IpfsError> {
        let keyed: Vec<(Vec<u8>, Vec<u8>)> = blocks
            .iter()
            .filter(|(c, _)| c.hash().code() != 0)
            .map(|(c, d)| (mh_of(c), d.clone()))
            .collect();
        let store = &self.inner.store;
        if let Some(max) = self.inner.storage_max {
            let (used, _) = store.stat().map_err(storage)?;
            let adding: u64 = keyed.iter().map(|(_, d)| d.len() as u64).sum();
            if used.saturating_add(adding) > max {
                return Err(IpfsError::NoRoom {
                    what: format!(
                        "storing {adding} bytes would take this node past its storage_max of {max} bytes ({used} used)"
                    ),
                });
            }
        }
        store.put_many_lazy(&keyed).map_err(storage)?;
        store.sync().map_err(storage)
    }
}
