//! Compact binary encoding of a batch of [`Op`]s: what travels in log
//! entries (and between peers) and waits in the staging table.
//!
//! A revision's ops share a handful of option sets, and every op used to
//! repeat its options in full (as JSON: ~150 bytes an op). Here the distinct
//! options of a batch are written once, in a table, and each op refers to
//! one by index; CIDs are their binary form. A million-pin revision costs
//! ~45 bytes an op instead of ~300.
//!
//! ```text
//! batch   = version(=1) varint(n_options) option* varint(n_ops) op*
//!         | version(=2) varint(n_options) option*
//!           varint(n_peer_sets) peer_set* varint(n_ops) op*
//! option  = varint(len) json(PinOptions)
//! peer_set = varint(n) (varint(len) utf8)*
//! op      = 0 cid written_as name varint(option index)     (Set)
//!         | 1 cid                                          (Release)
//!         | 2 cid varint(peer set index)                   (Place, version 2)
//! cid     = varint(len) bytes
//! written_as = varint(0) | varint(len + 1) utf8
//! name    = varint(len) utf8
//! ```
//!
//! [`chunk_ops`] splits a revision's ops into batches bounded in count and
//! in encoded bytes (computed exactly, without encoding), so that every log
//! entry stays under its size limit.
//!
//! Pure: no I/O. Used through serde (`#[serde(with = "codec::ops")]`), so
//! any binary serde format carries a batch as one byte string; a reader
//! also accepts the older form, a plain sequence of ops, so logs written
//! before this encoding still load.

use std::collections::HashMap;
use std::sync::Arc;

use crate::manifest::{CidKey, PinOptions, PinSpec};

use super::Op;

/// Leading byte of an encoded batch without `Place` ops (what every
/// version reads).
const VERSION: u8 = 1;
/// Leading byte of a batch with a table of peer sets (`Place` ops).
const VERSION_PLACED: u8 = 2;
const SET: u8 = 0;
const RELEASE: u8 = 1;
const PLACE: u8 = 2;

/// Why bytes are not an encoded batch.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Unknown leading byte.
    #[error("unsupported op batch format {0}")]
    Version(u8),
    /// The bytes ended inside a field.
    #[error("truncated op batch")]
    Truncated,
    /// A field holds an impossible value.
    #[error("invalid op batch: {0}")]
    Invalid(String),
}

/// Encodes `ops` (options written once per distinct set).
pub fn encode_ops(ops: &[Op]) -> Vec<u8> {
    let mut table: Vec<Vec<u8>> = Vec::new();
    let mut by_ptr: HashMap<*const PinOptions, usize> = HashMap::new();
    let mut by_bytes: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut peer_sets: Vec<&[String]> = Vec::new();
    let mut peer_set_index: HashMap<&[String], usize> = HashMap::new();
    let mut body = Vec::with_capacity(ops.len() * 48);
    for op in ops {
        match op {
            Op::Set {
                cid,
                written_as,
                spec,
            } => {
                let ptr = Arc::as_ptr(&spec.options);
                let index = match by_ptr.get(&ptr) {
                    Some(i) => *i,
                    None => {
                        // Serialising plain structs of strings, numbers and
                        // maps into JSON cannot fail.
                        let json = serde_json::to_vec(&*spec.options).unwrap_or_default();
                        let i = *by_bytes.entry(json.clone()).or_insert_with(|| {
                            table.push(json);
                            table.len() - 1
                        });
                        by_ptr.insert(ptr, i);
                        i
                    }
                };
                body.push(SET);
                put_bytes(&mut body, &cid.cid().to_bytes());
                match written_as {
                    Some(w) => put_varint(&mut body, w.len() as u64 + 1),
                    None => put_varint(&mut body, 0),
                }
                if let Some(w) = written_as {
                    body.extend_from_slice(w.as_bytes());
                }
                put_bytes(&mut body, spec.name.as_bytes());
                put_varint(&mut body, index as u64);
            }
            Op::Release { cid } => {
                body.push(RELEASE);
                put_bytes(&mut body, &cid.cid().to_bytes());
            }
            Op::Place { cid, peers } => {
                let next = peer_sets.len();
                let index = *peer_set_index.entry(peers.as_slice()).or_insert(next);
                if index == next {
                    peer_sets.push(peers.as_slice());
                }
                body.push(PLACE);
                put_bytes(&mut body, &cid.cid().to_bytes());
                put_varint(&mut body, index as u64);
            }
        }
    }
    let mut out = Vec::with_capacity(body.len() + 16 + table.iter().map(Vec::len).sum::<usize>());
    // Batches without placements keep the format every version reads.
    out.push(if peer_sets.is_empty() {
        VERSION
    } else {
        VERSION_PLACED
    });
    put_varint(&mut out, table.len() as u64);
    for t in &table {
        put_bytes(&mut out, t);
    }
    if !peer_sets.is_empty() {
        put_varint(&mut out, peer_sets.len() as u64);
        for set in &peer_sets {
            put_varint(&mut out, set.len() as u64);
            for peer in *set {
                put_bytes(&mut out, peer.as_bytes());
            }
        }
    }
    put_varint(&mut out, ops.len() as u64);
    out.extend_from_slice(&body);
    out
}

/// Decodes a batch; ops of one option set share one `Arc`.
pub fn decode_ops(bytes: &[u8]) -> Result<Vec<Op>, CodecError> {
    let mut r = Reader { rest: bytes };
    let version = r.byte()?;
    if version != VERSION && version != VERSION_PLACED {
        return Err(CodecError::Version(version));
    }
    let n_options = r.len()?;
    let mut table = Vec::with_capacity(n_options.min(1024));
    for _ in 0..n_options {
        let json = r.bytes()?;
        let options: PinOptions = serde_json::from_slice(json)
            .map_err(|e| CodecError::Invalid(format!("options: {e}")))?;
        table.push(Arc::new(options));
    }
    let mut peer_sets: Vec<Vec<String>> = Vec::new();
    if version == VERSION_PLACED {
        let n_sets = r.len()?;
        for _ in 0..n_sets {
            let n = r.len()?;
            // Each peer takes at least a byte: never trust a count beyond
            // the input.
            let mut set = Vec::with_capacity(n.min(r.rest.len()));
            for _ in 0..n {
                let len = r.len()?;
                set.push(r.str(len)?.to_string());
            }
            peer_sets.push(set);
        }
    }
    let n_ops = r.len()?;
    // Each op takes at least 3 bytes: never trust a count beyond the input.
    let mut ops = Vec::with_capacity(n_ops.min(r.rest.len() / 3 + 1));
    for _ in 0..n_ops {
        let tag = r.byte()?;
        let cid = r.cid()?;
        match tag {
            SET => {
                let written_as = match r.varint()? {
                    0 => None,
                    n => {
                        let len = usize::try_from(n - 1)
                            .map_err(|_| CodecError::Invalid("length".into()))?;
                        Some(r.str(len)?.into())
                    }
                };
                let name_len = r.len()?;
                let name = r.str(name_len)?.to_string();
                let index = r.len()?;
                let options = table
                    .get(index)
                    .ok_or_else(|| CodecError::Invalid(format!("option set {index} missing")))?;
                ops.push(Op::Set {
                    cid,
                    written_as,
                    spec: PinSpec {
                        name,
                        options: Arc::clone(options),
                    },
                });
            }
            RELEASE => ops.push(Op::Release { cid }),
            PLACE if version == VERSION_PLACED => {
                let index = r.len()?;
                let peers = peer_sets
                    .get(index)
                    .ok_or_else(|| CodecError::Invalid(format!("peer set {index} missing")))?;
                ops.push(Op::Place {
                    cid,
                    peers: peers.clone(),
                });
            }
            other => return Err(CodecError::Invalid(format!("op tag {other}"))),
        }
    }
    if !r.rest.is_empty() {
        return Err(CodecError::Invalid("trailing bytes".into()));
    }
    Ok(ops)
}

/// One op whose encoding does not fit in a batch even alone.
#[derive(Debug, thiserror::Error)]
#[error(
    "pin {cid} takes {bytes} bytes encoded (its name and options), more than the {max} bytes one log entry holds"
)]
pub struct OpTooLarge {
    /// The pin.
    pub cid: CidKey,
    /// Its encoded size in a batch of its own.
    pub bytes: usize,
    /// The batch limit.
    pub max: usize,
}

/// Splits `ops`, in order, into batches of at most `max_ops` ops whose
/// encoding ([`encode_ops`]) is at most `max_bytes` bytes each, each batch
/// filled as far as both limits allow. An option set counts in every batch
/// that uses it (each batch carries its own table). No ops: no batch.
/// Fails on the first op that does not fit in a batch of its own.
pub fn chunk_ops(
    ops: Vec<Op>,
    max_ops: usize,
    max_bytes: usize,
) -> Result<Vec<Vec<Op>>, OpTooLarge> {
    let max_ops = max_ops.max(1);
    let mut sets = OptionSets::default();
    let mut chunks = Vec::new();
    let mut chunk: Vec<Op> = Vec::new();
    let mut size = BatchSize::default();
    for op in ops {
        let (cid, body, set) = match &op {
            Op::Set {
                cid,
                written_as,
                spec,
            } => {
                let written = written_as
                    .as_ref()
                    .map_or(1, |w| varint_len(w.len() as u64 + 1) + w.len());
                let name = varint_len(spec.name.len() as u64) + spec.name.len();
                let set = sets.id(&spec.options);
                (*cid, 1 + cid_len(cid) + written + name, Some(set))
            }
            Op::Release { cid } => (*cid, 1 + cid_len(cid), None),
            // Counted as if its peer set were in the table for it alone
            // (and the table's count took 5 bytes): an upper bound.
            Op::Place { cid, peers } => {
                let set = varint_len(peers.len() as u64)
                    + peers
                        .iter()
                        .map(|p| varint_len(p.len() as u64) + p.len())
                        .sum::<usize>();
                (*cid, 1 + cid_len(cid) + 5 + set + 5, None)
            }
        };
        if !chunk.is_empty() && (chunk.len() >= max_ops || size.with(body, set, &sets) > max_bytes)
        {
            chunks.push(std::mem::take(&mut chunk));
            size = BatchSize::default();
        }
        let bytes = size.with(body, set, &sets);
        if bytes > max_bytes {
            return Err(OpTooLarge {
                cid,
                bytes,
                max: max_bytes,
            });
        }
        size.add(body, set, &sets);
        chunk.push(op);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    Ok(chunks)
}

/// The distinct option sets met while chunking, each encoded once: ids by
/// allocation and by encoding (the encoder merges equal sets too), and the
/// encoded length of each.
#[derive(Default)]
struct OptionSets {
    by_ptr: HashMap<*const PinOptions, usize>,
    by_bytes: HashMap<Vec<u8>, usize>,
    lens: Vec<usize>,
}

impl OptionSets {
    fn id(&mut self, options: &Arc<PinOptions>) -> usize {
        let ptr = Arc::as_ptr(options);
        if let Some(id) = self.by_ptr.get(&ptr) {
            return *id;
        }
        // As in `encode_ops`: plain data always serialises.
        let json = serde_json::to_vec(&**options).unwrap_or_default();
        let len = json.len();
        let next = self.lens.len();
        let id = *self.by_bytes.entry(json).or_insert(next);
        if id == next {
            self.lens.push(len);
        }
        self.by_ptr.insert(ptr, id);
        id
    }
}

/// The encoded size of a batch being filled.
#[derive(Default)]
struct BatchSize {
    ops: usize,
    table: usize,
    body: usize,
    /// Option set id → its index in this batch's table.
    index: HashMap<usize, usize>,
}

impl BatchSize {
    fn total_of(options: usize, table: usize, ops: usize, body: usize) -> usize {
        1 + varint_len(options as u64) + table + varint_len(ops as u64) + body
    }

    /// The size once an op of `body` bytes using option set `set` is added.
    fn with(&self, body: usize, set: Option<usize>, sets: &OptionSets) -> usize {
        let mut options = self.index.len();
        let mut table = self.table;
        let mut body = self.body + body;
        if let Some(set) = set {
            let index = match self.index.get(&set) {
                Some(i) => *i,
                None => {
                    let len = sets.lens[set];
                    table += varint_len(len as u64) + len;
                    options += 1;
                    options - 1
                }
            };
            body += varint_len(index as u64);
        }
        Self::total_of(options, table, self.ops + 1, body)
    }

    fn add(&mut self, body: usize, set: Option<usize>, sets: &OptionSets) {
        self.ops += 1;
        self.body += body;
        if let Some(set) = set {
            let next = self.index.len();
            let index = *self.index.entry(set).or_insert_with(|| {
                let len = sets.lens[set];
                self.table += varint_len(len as u64) + len;
                next
            });
            self.body += varint_len(index as u64);
        }
    }
}

fn cid_len(cid: &CidKey) -> usize {
    let n = cid.cid().encoded_len();
    varint_len(n as u64) + n
}

fn varint_len(v: u64) -> usize {
    let bits = 64 - v.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

fn put_varint(out: &mut Vec<u8>, v: u64) {
    let mut buf = unsigned_varint::encode::u64_buffer();
    out.extend_from_slice(unsigned_varint::encode::u64(v, &mut buf));
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, CodecError> {
        let (b, rest) = self.rest.split_first().ok_or(CodecError::Truncated)?;
        self.rest = rest;
        Ok(*b)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let (v, rest) = unsigned_varint::decode::u64(self.rest).map_err(|e| match e {
            unsigned_varint::decode::Error::Insufficient => CodecError::Truncated,
            other => CodecError::Invalid(other.to_string()),
        })?;
        self.rest = rest;
        Ok(v)
    }

    fn len(&mut self) -> Result<usize, CodecError> {
        let v = self.varint()?;
        usize::try_from(v).map_err(|_| CodecError::Invalid(format!("length {v}")))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.rest.len() {
            return Err(CodecError::Truncated);
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.len()?;
        self.take(n)
    }

    fn str(&mut self, n: usize) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.take(n)?).map_err(|e| CodecError::Invalid(e.to_string()))
    }

    fn cid(&mut self) -> Result<CidKey, CodecError> {
        let bytes = self.bytes()?;
        let cid = cid::Cid::try_from(bytes).map_err(|e| CodecError::Invalid(e.to_string()))?;
        CidKey::from_cid(cid).map_err(|e| CodecError::Invalid(e.to_string()))
    }
}

/// `#[serde(with = "…::ops")]` for a `Vec<Op>` field: one byte string in
/// the [batch format](self); reads that or the older sequence of ops.
pub mod ops {
    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    use super::{Op, decode_ops, encode_ops};

    /// Writes `ops` as one byte string.
    pub fn serialize<S: Serializer>(ops: &[Op], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&encode_ops(ops))
    }

    /// Reads a byte string (or, from logs written before the batch format,
    /// a sequence of ops).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Op>, D::Error> {
        d.deserialize_any(OpsVisitor)
    }

    struct OpsVisitor;

    impl<'de> Visitor<'de> for OpsVisitor {
        type Value = Vec<Op>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an encoded op batch or a sequence of ops")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<Op>, E> {
            decode_ops(v).map_err(E::custom)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Op>, A::Error> {
            let mut ops = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(100_000));
            while let Some(op) = seq.next_element::<Op>()? {
                ops.push(op);
            }
            Ok(ops)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::ReplicationFactors;
    use crate::testkit::seq_cid;

    fn set(i: u64, options: &Arc<PinOptions>) -> Op {
        Op::Set {
            cid: seq_cid(i),
            written_as: i.is_multiple_of(3).then(|| format!("Q{i}").into()),
            spec: PinSpec {
                name: format!("p{i}"),
                options: Arc::clone(options),
            },
        }
    }

    #[test]
    fn a_batch_round_trips_and_writes_each_option_set_once() {
        let a = Arc::new(PinOptions::default());
        let b = Arc::new(PinOptions {
            replication: ReplicationFactors { min: 2, max: 3 },
            ..PinOptions::default()
        });
        // Equal to `b` but another allocation: still one table entry.
        let b2 = Arc::new((*b).clone());
        let mut ops: Vec<Op> = (0..100)
            .map(|i| set(i, if i.is_multiple_of(2) { &a } else { &b }))
            .collect();
        ops.push(set(100, &b2));
        ops.push(Op::Release { cid: seq_cid(7) });
        let bytes = encode_ops(&ops);
        assert_eq!(decode_ops(&bytes).unwrap(), ops);
        let json = serde_json::to_vec(&ops).unwrap();
        assert!(
            bytes.len() * 2 < json.len(),
            "{} bytes vs {} as JSON",
            bytes.len(),
            json.len()
        );
        let opts_json = serde_json::to_vec(&*b).unwrap();
        let times = bytes
            .windows(opts_json.len())
            .filter(|w| *w == opts_json.as_slice())
            .count();
        assert_eq!(times, 1, "option set written once");
    }

    #[test]
    fn placements_round_trip_with_each_peer_set_written_once_and_plain_batches_keep_version_1() {
        let o = Arc::new(PinOptions::default());
        let plain: Vec<Op> = (0..10).map(|i| set(i, &o)).collect();
        assert_eq!(encode_ops(&plain)[0], VERSION, "readable by older peers");
        let peers = |a: &str, b: &str| vec![a.to_string(), b.to_string()];
        let mut ops = plain.clone();
        ops.extend((0..10).map(|i| Op::Place {
            cid: seq_cid(i),
            peers: if i % 2 == 0 {
                peers("12D3KooWPeerAlpha", "12D3KooWPeerBravo")
            } else {
                peers("12D3KooWPeerBravo", "12D3KooWPeerAlpha")
            },
        }));
        let bytes = encode_ops(&ops);
        assert_eq!(bytes[0], VERSION_PLACED);
        assert_eq!(decode_ops(&bytes).unwrap(), ops);
        let times = bytes
            .windows("12D3KooWPeerAlpha".len())
            .filter(|w| *w == b"12D3KooWPeerAlpha")
            .count();
        assert_eq!(times, 2, "each of the two peer sets written once");
        for cut in 0..bytes.len() {
            assert!(decode_ops(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // A Place op in a version 1 batch is not valid.
        let mut v1 = bytes.clone();
        v1[0] = VERSION;
        assert!(decode_ops(&v1).is_err());
        // chunk_ops bounds a batch of placements from above.
        let chunks = chunk_ops(ops.clone(), usize::MAX, bytes.len()).unwrap();
        assert!(chunks.iter().all(|c| encode_ops(c).len() <= bytes.len()));
        assert_eq!(chunks.concat(), ops);
    }

    #[test]
    fn truncated_or_corrupt_batches_are_errors_not_panics() {
        let o = Arc::new(PinOptions::default());
        let ops: Vec<Op> = (0..20).map(|i| set(i, &o)).collect();
        let bytes = encode_ops(&ops);
        for cut in 0..bytes.len() {
            assert!(decode_ops(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(matches!(decode_ops(&bad), Err(CodecError::Version(9))));
        // A huge op count with no ops behind it.
        let mut huge = vec![VERSION, 0];
        put_varint(&mut huge, u64::MAX / 2);
        assert!(decode_ops(&huge).is_err());
    }

    /// Ops of varied sizes: names of 0–300 bytes, some written as `Qm…`,
    /// releases, and four option sets (one of them large) spread unevenly.
    fn varied_ops(n: u64) -> Vec<Op> {
        let small = Arc::new(PinOptions::default());
        let other = Arc::new(PinOptions {
            replication: ReplicationFactors { min: 2, max: 3 },
            ..PinOptions::default()
        });
        let mut big = PinOptions::default();
        for k in 0..40 {
            big.metadata.insert(format!("key-{k}"), "v".repeat(50));
        }
        let big = Arc::new(big);
        // Equal to `other`, another allocation.
        let other2 = Arc::new((*other).clone());
        (0..n)
            .map(|i| {
                if i % 11 == 5 {
                    return Op::Release { cid: seq_cid(i) };
                }
                let options = match i % 7 {
                    0 => &big,
                    1 | 2 => &other,
                    3 => &other2,
                    _ => &small,
                };
                Op::Set {
                    cid: seq_cid(i),
                    written_as: i.is_multiple_of(3).then(|| format!("Q{i}").into()),
                    spec: PinSpec {
                        name: "n".repeat((i * 37 % 301) as usize),
                        options: Arc::clone(options),
                    },
                }
            })
            .collect()
    }

    #[test]
    fn chunks_hold_at_most_max_bytes_encoded_and_are_filled_greedily() {
        let ops = varied_ops(3000);
        for max_bytes in [4_000, 9_000, 64 << 10] {
            let chunks = chunk_ops(ops.clone(), 10_000, max_bytes).unwrap();
            assert_eq!(chunks.concat(), ops, "every op, in order");
            for (k, chunk) in chunks.iter().enumerate() {
                let len = encode_ops(chunk).len();
                assert!(len <= max_bytes, "chunk {k}: {len} > {max_bytes}");
                // The next op would not have fitted: the split is where
                // the limit is, not earlier.
                if let Some(next) = chunks.get(k + 1) {
                    let mut more = chunk.clone();
                    more.push(next[0].clone());
                    let grown = encode_ops(&more).len();
                    assert!(grown > max_bytes, "chunk {k} closed early: {grown} fits");
                }
            }
            // The accounting is exact, so the number of chunks is about
            // the total size over the limit.
            let total: usize = chunks.iter().map(|c| encode_ops(c).len()).sum();
            assert!(
                chunks.len() <= total / max_bytes * 2 + 2,
                "{} chunks",
                chunks.len()
            );
        }
    }

    #[test]
    fn chunks_hold_at_most_max_ops_and_the_byte_limit_binds_first_when_smaller() {
        let o = Arc::new(PinOptions::default());
        let ops: Vec<Op> = (0..1000).map(|i| set(i, &o)).collect();
        let by_count = chunk_ops(ops.clone(), 300, usize::MAX).unwrap();
        let lens: Vec<usize> = by_count.iter().map(Vec::len).collect();
        assert_eq!(lens, [300, 300, 300, 100]);
        // ~45 bytes an op: 4 KiB holds far fewer than 300.
        let by_bytes = chunk_ops(ops.clone(), 300, 4096).unwrap();
        assert!(by_bytes.len() > 10, "{} chunks", by_bytes.len());
        assert!(by_bytes.iter().all(|c| encode_ops(c).len() <= 4096));
        assert_eq!(by_bytes.concat(), ops);
        assert!(chunk_ops(Vec::new(), 300, 4096).unwrap().is_empty());
    }

    #[test]
    fn an_op_larger_than_a_batch_is_refused_and_named() {
        let o = Arc::new(PinOptions::default());
        let mut ops: Vec<Op> = (0..10).map(|i| set(i, &o)).collect();
        ops.push(Op::Set {
            cid: seq_cid(99),
            written_as: None,
            spec: PinSpec {
                name: "x".repeat(5000),
                options: Arc::clone(&o),
            },
        });
        let err = chunk_ops(ops, 100, 4096).unwrap_err();
        assert_eq!(err.cid, seq_cid(99));
        assert!(err.bytes > 5000 && err.max == 4096, "{err}");
        assert!(
            err.to_string().contains("more than the 4096 bytes"),
            "{err}"
        );
    }

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Carrier {
        #[serde(with = "ops")]
        ops: Vec<Op>,
    }

    #[test]
    fn cbor_carries_a_byte_string_and_the_old_sequence_form_still_reads() {
        let o = Arc::new(PinOptions::default());
        let c = Carrier {
            ops: (0..5).map(|i| set(i, &o)).collect(),
        };
        let cbor = cbor4ii::serde::to_vec(Vec::new(), &c).unwrap();
        let back: Carrier = cbor4ii::serde::from_slice(&cbor).unwrap();
        assert_eq!(back, c);
        // What a log written before the batch format holds: ops as JSON.
        let old = serde_json::json!({ "ops": &c.ops }).to_string();
        let read: Carrier = serde_json::from_str(&old).unwrap();
        assert_eq!(read, c);
    }
}
