//! A block's children, for DAG walks (pin, gc).
//!
//! Temporary: a minimal dag-pb link decoder used until `ipfs::dagpb` (which
//! owns dag-pb encoding and decoding) is merged; then [`links`] becomes a
//! call to `dagpb::links` and this file shrinks to nothing. It must not
//! grow: no dag-pb encoding, no UnixFS.

use cid::Cid;

use super::pb::{Fields, PbError};

/// Multicodec of dag-pb.
pub(crate) const DAG_PB: u64 = 0x70;
/// Multicodec of raw blocks.
pub(crate) const RAW: u64 = 0x55;

/// Why a block's links could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinksError {
    /// The block is not valid dag-pb.
    #[error("invalid dag-pb block")]
    DagPb(#[source] PbError),
    /// A link holds bytes that are not a CID.
    #[error("invalid cid in a dag-pb link")]
    Cid(#[source] cid::Error),
    /// The codec has links this node cannot read.
    #[error("cannot traverse blocks of codec {0:#x}")]
    Codec(u64),
}

/// The CIDs `block` (whose CID is `cid`) links to, in order: dag-pb links;
/// none for raw and identity blocks.
pub(crate) fn links(cid: &Cid, block: &[u8]) -> Result<Vec<Cid>, LinksError> {
    match cid.codec() {
        RAW => Ok(Vec::new()),
        DAG_PB => {
            let mut out = Vec::new();
            for field in Fields::new(block) {
                let (n, value) = field.map_err(LinksError::DagPb)?;
                if n != 2 {
                    continue; // 1 is Data
                }
                let link = value.bytes(2).map_err(LinksError::DagPb)?;
                for f in Fields::new(link) {
                    let (m, v) = f.map_err(LinksError::DagPb)?;
                    if m == 1 {
                        let bytes = v.bytes(1).map_err(LinksError::DagPb)?;
                        out.push(Cid::try_from(bytes).map_err(LinksError::Cid)?);
                    }
                }
            }
            Ok(out)
        }
        _ if cid.hash().code() == 0 => Ok(Vec::new()),
        other => Err(LinksError::Codec(other)),
    }
}
