//! CAR v1 (content-addressed archive) reading and writing, for `POST
//! /add?format=car` (IPFS Cluster's car adder) and for tests.
//!
//! A CAR is a varint-prefixed dag-cbor header `{roots: [CID…], version: 1}`
//! followed by sections, each a varint length, a CID and the block's bytes.
//! [`read`] parses one streaming (a section at a time in memory), verifies
//! every block's bytes against its CID's multihash (sha2-256, sha2-512,
//! identity), and hands the blocks to the caller's sink. As IPFS Cluster,
//! only CARs with exactly one root are accepted.
//!
//! This module owns the format only: it must not store, pin or fetch
//! blocks (the backends do).

use std::io::{self, Read};

use cbor4ii::core::Value;
use cbor4ii::core::dec::Decode;
use cbor4ii::core::enc::Encode;
use cid::Cid;
use sha2::Digest;

use super::dagpb;
use super::unixfs::UnixfsData;

/// The largest header accepted.
const MAX_HEADER_BYTES: u64 = 1 << 20;
/// The largest section (CID + block) accepted (go-car's default limit).
pub const MAX_SECTION_BYTES: u64 = 8 << 20;

/// What a CAR held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarSummary {
    /// Its one root.
    pub root: Cid,
    /// Blocks read.
    pub blocks: u64,
    /// Their total length (IPFS Cluster's `bytes` of a CAR add).
    pub bytes: u64,
    /// The root's UnixFS file size when the root block is in the CAR and is
    /// a UnixFS node with one (IPFS Cluster's `size`), else 0.
    pub size: u64,
}

/// Why a CAR was refused. `E` is the sink's error, passed through.
#[derive(Debug, thiserror::Error)]
pub enum CarError<E> {
    /// Reading the input failed.
    #[error("reading the car failed: {0}")]
    Read(#[source] io::Error),
    /// Not a CAR v1, or broken.
    #[error("invalid car: {0}")]
    Invalid(String),
    /// Zero or several roots (IPFS Cluster's message).
    #[error("only CAR files with a single root are supported")]
    Roots,
    /// A block whose bytes do not hash to its CID.
    #[error("invalid car: block {0} does not match its hash")]
    HashMismatch(Cid),
    /// The sink refused a block.
    #[error("storing block {cid} failed: {source}")]
    Sink {
        /// The block.
        cid: Cid,
        /// The sink's error.
        #[source]
        source: E,
    },
}

fn invalid<E>(what: impl Into<String>) -> CarError<E> {
    CarError::Invalid(what.into())
}

/// Reads an unsigned varint; `None` at a clean end of input.
fn read_varint<E>(r: &mut impl Read) -> Result<Option<u64>, CarError<E>> {
    let mut value = 0u64;
    for i in 0..10 {
        let mut b = [0u8; 1];
        match r.read(&mut b) {
            Ok(0) if i == 0 => return Ok(None),
            Ok(0) => return Err(invalid("truncated varint")),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CarError::Read(e)),
        }
        value |= u64::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            return Ok(Some(value));
        }
    }
    Err(invalid("varint longer than 10 bytes"))
}

fn read_exact<E>(r: &mut impl Read, len: u64, what: &str) -> Result<Vec<u8>, CarError<E>> {
    let mut buf = Vec::new();
    r.take(len).read_to_end(&mut buf).map_err(CarError::Read)?;
    if buf.len() as u64 != len {
        return Err(invalid(format!("truncated {what}")));
    }
    Ok(buf)
}

/// The roots of a dag-cbor CAR header.
fn header_roots<E>(bytes: &[u8]) -> Result<Vec<Cid>, CarError<E>> {
    let value = Value::decode(&mut cbor4ii::core::utils::SliceReader::new(bytes))
        .map_err(|e| invalid(format!("header is not dag-cbor: {e}")))?;
    let Value::Map(entries) = value else {
        return Err(invalid("header is not a map"));
    };
    let field = |name: &str| {
        entries
            .iter()
            .find(|(k, _)| matches!(k, Value::Text(t) if t == name))
            .map(|(_, v)| v)
    };
    match field("version") {
        Some(Value::Integer(1)) => {}
        Some(Value::Integer(v)) => return Err(invalid(format!("unsupported car version {v}"))),
        _ => return Err(invalid("header has no version")),
    }
    let Some(Value::Array(roots)) = field("roots") else {
        return Err(invalid("header has no roots"));
    };
    roots
        .iter()
        .map(|r| match r {
            // A dag-cbor link: tag 42 over the CID bytes with a 0 prefix.
            Value::Tag(42, inner) => match inner.as_ref() {
                Value::Bytes(b) if b.first() == Some(&0) => {
                    Cid::try_from(&b[1..]).map_err(|e| invalid(format!("invalid root cid: {e}")))
                }
                _ => Err(invalid("a root is not a cid")),
            },
            _ => Err(invalid("a root is not a cid")),
        })
        .collect()
}

/// Whether `data` hashes to `cid`'s multihash.
fn verify<E>(cid: &Cid, data: &[u8]) -> Result<(), CarError<E>> {
    let mh = cid.hash();
    let digest = match mh.code() {
        0x00 => data.to_vec(),
        0x12 => sha2::Sha256::digest(data).to_vec(),
        0x13 => sha2::Sha512::digest(data).to_vec(),
        other => {
            return Err(invalid(format!(
                "block {cid} uses multihash 0x{other:x}; only sha2-256, sha2-512 and identity are verified"
            )));
        }
    };
    if digest == mh.digest() {
        Ok(())
    } else {
        Err(CarError::HashMismatch(*cid))
    }
}

/// Reads a CAR v1 from `input`, handing every block (verified) to `sink`
/// in order. Fails on anything but exactly one root.
pub fn read<R: Read, E>(
    input: R,
    sink: &mut dyn FnMut(Cid, Vec<u8>) -> Result<(), E>,
) -> Result<CarSummary, CarError<E>> {
    let mut r = io::BufReader::new(input);
    let len = read_varint(&mut r)?.ok_or_else(|| invalid("empty input"))?;
    if len == 0 || len > MAX_HEADER_BYTES {
        return Err(invalid(format!("header length {len} out of bounds")));
    }
    let header = read_exact(&mut r, len, "header")?;
    let roots = header_roots(&header)?;
    let [root] = roots.as_slice() else {
        return Err(CarError::Roots);
    };
    let root = *root;
    let mut summary = CarSummary {
        root,
        blocks: 0,
        bytes: 0,
        size: 0,
    };
    while let Some(len) = read_varint(&mut r)? {
        if len == 0 || len > MAX_SECTION_BYTES {
            return Err(invalid(format!("section length {len} out of bounds")));
        }
        let section = read_exact(&mut r, len, "section")?;
        let mut cursor = io::Cursor::new(section.as_slice());
        let cid = Cid::read_bytes(&mut cursor)
            .map_err(|e| invalid(format!("a section has an invalid cid: {e}")))?;
        let start = usize::try_from(cursor.position()).unwrap_or(section.len());
        let data = section[start..].to_vec();
        verify(&cid, &data)?;
        summary.blocks += 1;
        summary.bytes += data.len() as u64;
        if cid == root && cid.codec() == dagpb::DAG_PB {
            summary.size = dagpb::decode(&data)
                .ok()
                .and_then(|n| n.data)
                .and_then(|d| UnixfsData::decode(&d).ok())
                .and_then(|u| u.filesize)
                .unwrap_or(0);
        }
        sink(cid, data).map_err(|source| CarError::Sink { cid, source })?;
    }
    Ok(summary)
}

/// Reads only the roots of a CAR's header.
pub fn roots<R: Read>(input: R) -> Result<Vec<Cid>, CarError<std::convert::Infallible>> {
    let mut r = io::BufReader::new(input);
    let len = read_varint(&mut r)?.ok_or_else(|| invalid("empty input"))?;
    if len == 0 || len > MAX_HEADER_BYTES {
        return Err(invalid(format!("header length {len} out of bounds")));
    }
    header_roots(&read_exact(&mut r, len, "header")?)
}

fn varint(n: u64, out: &mut Vec<u8>) {
    let mut buf = unsigned_varint::encode::u64_buffer();
    out.extend_from_slice(unsigned_varint::encode::u64(n, &mut buf));
}

/// A CAR v1 with `roots` and `blocks` (CID, bytes), in order.
pub fn write(roots: &[Cid], blocks: &[(Cid, Vec<u8>)]) -> Vec<u8> {
    let header = Value::Map(vec![
        (
            Value::Text("roots".into()),
            Value::Array(
                roots
                    .iter()
                    .map(|c| {
                        let mut b = vec![0u8];
                        b.extend_from_slice(&c.to_bytes());
                        Value::Tag(42, Box::new(Value::Bytes(b)))
                    })
                    .collect(),
            ),
        ),
        (Value::Text("version".into()), Value::Integer(1)),
    ]);
    let mut writer = cbor4ii::core::utils::BufWriter::new(Vec::new());
    // Infallible: writing to a Vec cannot fail.
    let _ = header.encode(&mut writer);
    let header = writer.into_inner();
    let mut out = Vec::new();
    varint(header.len() as u64, &mut out);
    out.extend_from_slice(&header);
    for (cid, data) in blocks {
        let c = cid.to_bytes();
        varint((c.len() + data.len()) as u64, &mut out);
        out.extend_from_slice(&c);
        out.extend_from_slice(data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::unixfs::{AddOptions, add_reader};

    type Blocks = Vec<(Cid, Vec<u8>)>;

    fn blocks() -> (Cid, Blocks) {
        let mut out = Vec::new();
        let opts = AddOptions {
            chunk_size: 4,
            ..AddOptions::default()
        };
        let added = add_reader(&b"0123456789"[..], &opts, &mut |c, d| {
            out.push((c, d));
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap();
        (added.cid, out)
    }

    fn read_all(car: &[u8]) -> Result<(CarSummary, Blocks), String> {
        let mut got = Vec::new();
        read(car, &mut |c, d| {
            got.push((c, d));
            Ok::<(), std::convert::Infallible>(())
        })
        .map(|s| (s, got))
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_written_car_reads_back_with_its_root_size_and_blocks() {
        let (root, blocks) = blocks();
        let car = write(&[root], &blocks);
        let (summary, got) = read_all(&car).unwrap();
        assert_eq!(got, blocks);
        assert_eq!(summary.root, root);
        assert_eq!(summary.blocks, 4);
        assert_eq!(summary.size, 10, "the root's UnixFS file size");
        assert_eq!(
            summary.bytes,
            blocks.iter().map(|(_, d)| d.len() as u64).sum::<u64>()
        );
        assert_eq!(roots(car.as_slice()).unwrap(), vec![root]);
    }

    #[test]
    fn bad_cars_are_refused_with_what_is_wrong() {
        let (root, blocks) = blocks();
        assert_eq!(
            read_all(&write(&[root, blocks[0].0], &blocks)).unwrap_err(),
            "only CAR files with a single root are supported"
        );
        assert_eq!(
            read_all(&write(&[], &blocks)).unwrap_err(),
            "only CAR files with a single root are supported"
        );
        let mut tampered = blocks.clone();
        tampered[1].1[0] ^= 1;
        assert_eq!(
            read_all(&write(&[root], &tampered)).unwrap_err(),
            format!("invalid car: block {} does not match its hash", blocks[1].0)
        );
        assert_eq!(read_all(b"").unwrap_err(), "invalid car: empty input");
        assert!(
            read_all(b"hello world, not a car")
                .unwrap_err()
                .starts_with("invalid car: ")
        );
        let car = write(&[root], &blocks);
        assert_eq!(
            read_all(&car[..car.len() - 1]).unwrap_err(),
            "invalid car: truncated section"
        );
    }
}
