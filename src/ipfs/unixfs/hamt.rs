//! HAMT-sharded directories as Kubo 0.22 (boxo) writes them: a directory
//! whose estimated size (the sum over its entries of name length plus CID
//! byte length) reaches [`SHARDING_THRESHOLD`] becomes a UnixFS
//! `HAMTShard` tree of fanout 256, keyed by the murmur3 x64 hash of each
//! name (the first 64 bits, big-endian, one byte per level).
//!
//! A shard node links, in slot order, either an entry (named by the slot in
//! two upper-case hex digits followed by the entry's name) or, when several
//! names share the slot, a sub-shard (named by the slot alone). Its `Data`
//! is the UnixFS message `{Type: HAMTShard, Data: bitfield of the used
//! slots, hashType: murmur3 (0x22), fanout: 256}`. This module only builds
//! the blocks; they leave through the caller's sink like every other
//! importer block.

use cid::{Cid, Version};

use super::import::block_cid;
use super::{Sink, UnixfsError};
use crate::ipfs::dagpb::{self, DAG_PB, PbLink, PbNode};

/// `Import.UnixFSHAMTDirectorySizeThreshold`'s default (256 KiB): a
/// directory whose estimated size is at least this is sharded.
pub const SHARDING_THRESHOLD: usize = 256 * 1024;
/// Slots per shard node.
const FANOUT: usize = 256;
/// The multicodec of murmur3-x64-64, the UnixFS `hashType` of a shard.
const MURMUR3: u64 = 0x22;

/// One directory entry: its name and how a parent links it.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub name: String,
    pub cid: Cid,
    pub tsize: u64,
}

/// Kubo's estimate of a basic directory's size.
pub(super) fn estimated_size(entries: &[Entry]) -> usize {
    entries
        .iter()
        .map(|e| e.name.len() + e.cid.encoded_len())
        .sum()
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The first 64 bits of MurmurHash3 x64 128 (seed 0) of `data`, as
/// go's `murmur3.New64().Sum(nil)` gives them: big-endian.
pub(super) fn murmur3_64(data: &[u8]) -> [u8; 8] {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    let (mut h1, mut h2) = (0u64, 0u64);
    let mix1 = |k: u64| k.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    let mix2 = |k: u64| k.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    let mut blocks = data.chunks_exact(16);
    for block in &mut blocks {
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&block[..8]);
        hi.copy_from_slice(&block[8..]);
        h1 ^= mix1(u64::from_le_bytes(lo));
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        h2 ^= mix2(u64::from_le_bytes(hi));
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }
    let tail = blocks.remainder();
    let (mut k1, mut k2) = (0u64, 0u64);
    for (i, b) in tail.iter().enumerate() {
        if i < 8 {
            k1 |= u64::from(*b) << (8 * i);
        } else {
            k2 |= u64::from(*b) << (8 * (i - 8));
        }
    }
    if tail.len() > 8 {
        h2 ^= mix2(k2);
    }
    if !tail.is_empty() {
        h1 ^= mix1(k1);
    }
    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 = h1.wrapping_add(h2);
    h1.to_be_bytes()
}

/// The UnixFS `Data` of a shard node with the slots `used` set.
fn shard_data(used: &[bool; FANOUT]) -> Vec<u8> {
    // go-bitfield: slot i is bit i%8 of byte 31 - i/8; leading zero bytes
    // are dropped.
    let mut bits = [0u8; FANOUT / 8];
    for (i, _) in used.iter().enumerate().filter(|(_, u)| **u) {
        bits[FANOUT / 8 - 1 - i / 8] |= 1 << (i % 8);
    }
    let first = bits.iter().position(|b| *b != 0).unwrap_or(bits.len());
    let bits = &bits[first..];
    let mut out = vec![0x08, 0x05]; // Type = HAMTShard
    if !bits.is_empty() {
        out.push(0x12); // Data
        out.push(bits.len() as u8); // at most 32 bytes: a one-byte varint
        out.extend_from_slice(bits);
    }
    out.extend_from_slice(&[0x28, MURMUR3 as u8]); // hashType
    out.extend_from_slice(&[0x30, 0x80, 0x02]); // fanout = 256
    out
}

/// Builds the shard tree of `entries`; returns the root's CID and
/// cumulative size. Every node goes to `sink`, children first.
pub(super) fn build<E>(
    entries: Vec<Entry>,
    version: Version,
    sink: &mut Sink<'_, E>,
) -> Result<(Cid, u64), UnixfsError<E>> {
    let hashed = entries
        .into_iter()
        .map(|e| (murmur3_64(e.name.as_bytes()), e))
        .collect();
    node(hashed, 0, version, sink)
}

fn node<E>(
    entries: Vec<([u8; 8], Entry)>,
    depth: usize,
    version: Version,
    sink: &mut Sink<'_, E>,
) -> Result<(Cid, u64), UnixfsError<E>> {
    if depth >= 8 {
        return Err(UnixfsError::InvalidOptions(
            "sharded directory too deep: two names have the same 64-bit hash".into(),
        ));
    }
    let mut slots: Vec<Vec<([u8; 8], Entry)>> = (0..FANOUT).map(|_| Vec::new()).collect();
    for (hash, entry) in entries {
        slots[usize::from(hash[depth])].push((hash, entry));
    }
    let mut used = [false; FANOUT];
    let mut links = Vec::new();
    for (slot, group) in slots.into_iter().enumerate() {
        if group.is_empty() {
            continue;
        }
        used[slot] = true;
        if group.len() == 1 {
            for (_, e) in group {
                links.push(PbLink {
                    hash: e.cid,
                    name: Some(format!("{slot:02X}{}", e.name)),
                    tsize: Some(e.tsize),
                });
            }
        } else {
            let (cid, tsize) = node(group, depth + 1, version, sink)?;
            links.push(PbLink {
                hash: cid,
                name: Some(format!("{slot:02X}")),
                tsize: Some(tsize),
            });
        }
    }
    let children: u64 = links.iter().filter_map(|l| l.tsize).sum();
    let block = dagpb::encode(&PbNode {
        links,
        data: Some(shard_data(&used)),
    });
    let cid = block_cid(version, DAG_PB, &block);
    let tsize = block.len() as u64 + children;
    sink(cid, block).map_err(|source| UnixfsError::Sink { cid, source })?;
    Ok((cid, tsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_matches_the_reference_hash() {
        // MurmurHash3_x64_128 with seed 0, first 64 bits.
        assert_eq!(murmur3_64(b""), [0; 8]);
        assert_eq!(
            u64::from_be_bytes(murmur3_64(b"hello")),
            0xcbd8_a7b3_41bd_9b02
        );
        assert_eq!(
            u64::from_be_bytes(murmur3_64(b"The quick brown fox jumps over the lazy dog")),
            0xe34b_bc7b_bc07_1b6c
        );
    }

    #[test]
    fn shard_data_is_the_unixfs_message_kubo_writes() {
        let mut used = [false; FANOUT];
        used[0] = true;
        used[9] = true;
        assert_eq!(
            shard_data(&used),
            [
                0x08, 0x05, 0x12, 0x02, 0x02, 0x01, 0x28, 0x22, 0x30, 0x80, 0x02
            ]
        );
    }
}
