//! The reader: the bytes of a UnixFS file back from its blocks, every
//! block checked against its CID.
//!
//! Blocks come from the caller's [`Getter`]; it must not fetch or store
//! them itself, and walks untrusted DAGs without recursion.

use std::io::Write;

use cid::Cid;
use sha2::{Digest, Sha256};

use super::{DataType, Getter, UnixfsData, UnixfsError};
use crate::ipfs::dagpb::{self, DAG_PB, IDENTITY, RAW, SHA2_256};

/// Gets a block and checks it against its CID; identity CIDs are answered
/// from the CID itself without calling `get`.
fn fetch<E>(cid: &Cid, get: &mut Getter<'_, E>) -> Result<Vec<u8>, UnixfsError<E>> {
    let mh = cid.hash();
    match mh.code() {
        IDENTITY => Ok(mh.digest().to_vec()),
        SHA2_256 => {
            let block = get(cid).map_err(|source| UnixfsError::Get { cid: *cid, source })?;
            if Sha256::digest(&block).as_slice() != mh.digest() {
                return Err(UnixfsError::HashMismatch { cid: *cid });
            }
            Ok(block)
        }
        code => Err(UnixfsError::UnsupportedHash { cid: *cid, code }),
    }
}

/// Reassembles the bytes of the UnixFS file rooted at `root` into `out`;
/// returns how many bytes were written.
///
/// Walks depth-first, left to right, with an explicit stack (no recursion
/// on untrusted depth). Every block's hash is verified; raw blocks are file
/// bytes; dag-pb nodes must be UnixFS `File` (or legacy `Raw`) nodes whose
/// blocksizes match their links; the root's filesize must equal the bytes
/// produced.
pub fn read_file_to<E, W: Write + ?Sized>(
    root: &Cid,
    get: &mut Getter<'_, E>,
    out: &mut W,
) -> Result<u64, UnixfsError<E>> {
    let mut stack = vec![*root];
    let mut written = 0u64;
    let mut expected: Option<u64> = None;
    let mut is_root = true;
    let mut visited = 0u64;
    while let Some(cid) = stack.pop() {
        // A file of n bytes has at most n leaves and fewer inner nodes, so
        // a DAG that needs more blocks (or more bytes) than its root's
        // filesize says repeats itself: stop it before it costs more.
        visited += 1;
        if let Some(e) = expected
            && (written > e || visited > e.saturating_mul(2).saturating_add(64))
        {
            return Err(UnixfsError::Malformed {
                cid: *root,
                reason: format!(
                    "filesize says {e} bytes, the DAG goes on past it ({visited} blocks, {written} bytes so far)"
                ),
            });
        }
        let block = fetch(&cid, get)?;
        let root_node = std::mem::replace(&mut is_root, false);
        let bytes: &[u8] = match cid.codec() {
            RAW => &block,
            DAG_PB => {
                let node = dagpb::decode(&block).map_err(|e| UnixfsError::DagPb {
                    cid,
                    source: Box::new(e),
                })?;
                let malformed = |reason: String| UnixfsError::Malformed { cid, reason };
                let data = node
                    .data
                    .ok_or_else(|| malformed("no UnixFS Data".into()))?;
                let fs = UnixfsData::decode(&data).map_err(|e| malformed(e.to_string()))?;
                if !matches!(fs.kind, DataType::File | DataType::Raw) {
                    return Err(UnixfsError::NotAFile {
                        cid,
                        kind: fs.kind.name(),
                    });
                }
                if fs.blocksizes.len() != node.links.len() {
                    return Err(malformed(format!(
                        "{} links but {} blocksizes",
                        node.links.len(),
                        fs.blocksizes.len()
                    )));
                }
                if root_node {
                    expected = fs.filesize;
                }
                stack.extend(node.links.iter().rev().map(|l| l.hash));
                out.write_all(fs.data.as_deref().unwrap_or_default())
                    .map_err(UnixfsError::Write)?;
                written += fs.data.as_ref().map_or(0, |d| d.len() as u64);
                continue;
            }
            codec => return Err(UnixfsError::UnsupportedCodec { cid, codec }),
        };
        out.write_all(bytes).map_err(UnixfsError::Write)?;
        written += bytes.len() as u64;
    }
    if let Some(expected) = expected.filter(|&e| e != written) {
        return Err(UnixfsError::Malformed {
            cid: *root,
            reason: format!("filesize says {expected} bytes, the blocks hold {written}"),
        });
    }
    Ok(written)
}

/// [`read_file_to`] into memory: for tests and small files.
pub fn read_file<E>(root: &Cid, get: &mut Getter<'_, E>) -> Result<Vec<u8>, UnixfsError<E>> {
    let mut out = Vec::new();
    read_file_to(root, get, &mut out)?;
    Ok(out)
}
