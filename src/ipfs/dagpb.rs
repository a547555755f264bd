//! The dag-pb codec (multicodec `0x70`): the block format UnixFS lives in.
//!
//! This module owns the byte-level encoding and decoding of `PBNode` /
//! `PBLink` blocks, in the canonical form of the [DAG-PB spec] (Links before
//! Data, PBLink fields in field-number order), and [`links`]: the children of
//! a block, for the embedded node's DAG walks (pinning, GC, bitswap).
//!
//! It must not know about UnixFS semantics (files, directories: see
//! [`super::unixfs`]), fetch or store blocks, or verify hashes: callers hand
//! it bytes and get structure back. Decoding is strict (unknown fields,
//! duplicates, wrong wire types and bad CIDs are errors) and never panics on
//! arbitrary input.
//!
//! The protobuf wire helpers are hand-written (varints, wire types 0 and 2
//! only) rather than prost-derived: prost writes fields in field-number
//! order, which would put Data (1) before Links (2) and break the canonical
//! form.
//!
//! [DAG-PB spec]: https://ipld.io/specs/codecs/dag-pb/spec/

use cid::Cid;

/// Multicodec of dag-pb blocks.
pub const DAG_PB: u64 = 0x70;
/// Multicodec of raw blocks (opaque bytes, no links).
pub const RAW: u64 = 0x55;
/// Multihash code of the identity "hash" (the digest is the block itself).
pub const IDENTITY: u64 = 0x00;
/// Multihash code of sha2-256.
pub const SHA2_256: u64 = 0x12;

/// One link of a dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbLink {
    /// The CID of the target block (required).
    pub hash: Cid,
    /// The link name: a directory entry name, or empty for file chunks.
    /// `None` (absent) and `Some("")` (present, empty) encode differently.
    pub name: Option<String>,
    /// The cumulative size of the target DAG (its block plus its children).
    pub tsize: Option<u64>,
}

/// A decoded dag-pb block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PbNode {
    /// Links, in block order (never re-sorted on decode).
    pub links: Vec<PbLink>,
    /// Opaque payload (the UnixFS `Data` message for UnixFS nodes).
    pub data: Option<Vec<u8>>,
}

/// Why a block could not be decoded, or its links listed.
///
/// Offsets are byte positions in the block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagPbError {
    /// A varint ran past the end of its message.
    #[error("dag-pb: truncated varint at byte {offset}")]
    TruncatedVarint {
        /// Where the varint started.
        offset: usize,
    },
    /// A varint does not fit in 64 bits.
    #[error("dag-pb: varint at byte {offset} overflows 64 bits")]
    VarintOverflow {
        /// Where the varint started.
        offset: usize,
    },
    /// A length-delimited field is longer than what is left of its message.
    #[error("dag-pb: field at byte {offset} claims {len} bytes, only {remaining} remain")]
    Truncated {
        /// Where the length prefix started.
        offset: usize,
        /// The declared length.
        len: u64,
        /// Bytes actually left.
        remaining: usize,
    },
    /// A known field with the wrong protobuf wire type.
    #[error(
        "dag-pb: {message}.{field} at byte {offset} has wire type {wire_type}, expected {expected}"
    )]
    WrongWireType {
        /// `PBNode` or `PBLink`.
        message: &'static str,
        /// The field name.
        field: &'static str,
        /// The wire type found.
        wire_type: u8,
        /// The wire type the schema requires.
        expected: u8,
        /// Where the field's tag is.
        offset: usize,
    },
    /// A field number the schema does not have.
    #[error(
        "dag-pb: unknown field number {field} (wire type {wire_type}) in {message} at byte {offset}"
    )]
    UnknownField {
        /// `PBNode` or `PBLink`.
        message: &'static str,
        /// The field number found.
        field: u64,
        /// Its wire type.
        wire_type: u8,
        /// Where the field's tag is.
        offset: usize,
    },
    /// A non-repeated field appears twice.
    #[error("dag-pb: duplicate {message}.{field} at byte {offset}")]
    Duplicate {
        /// `PBNode` or `PBLink`.
        message: &'static str,
        /// The field name.
        field: &'static str,
        /// Where the second occurrence's tag is.
        offset: usize,
    },
    /// Fields out of the order the spec requires (PBLink: Hash, Name,
    /// Tsize; PBNode: all Links on one side of Data).
    #[error("dag-pb: {message}.{field} out of order at byte {offset}")]
    OutOfOrder {
        /// `PBNode` or `PBLink`.
        message: &'static str,
        /// The misplaced field.
        field: &'static str,
        /// Where its tag is.
        offset: usize,
    },
    /// A PBLink without a Hash.
    #[error("dag-pb: PBLink at byte {offset} has no Hash")]
    MissingHash {
        /// Where the link's message starts.
        offset: usize,
    },
    /// A PBLink Hash that is not a valid binary CID.
    #[error("dag-pb: PBLink.Hash at byte {offset} is not a valid CID: {reason}")]
    BadCid {
        /// Where the Hash bytes start.
        offset: usize,
        /// What the CID parser said.
        reason: String,
    },
    /// A PBLink Name that is not UTF-8.
    #[error("dag-pb: PBLink.Name at byte {offset} is not valid UTF-8")]
    InvalidName {
        /// Where the Name bytes start.
        offset: usize,
    },
    /// [`links`] was asked about a codec it cannot parse.
    #[error(
        "cannot list the links of a {name} block (codec 0x{codec:x}): only dag-pb, dag-cbor and raw are supported"
    )]
    Unsupported {
        /// The CID's multicodec.
        codec: u64,
        /// Its name from the multicodec table, or `unknown`.
        name: &'static str,
    },
    /// A dag-cbor block whose links cannot be read.
    #[error("{0}")]
    DagCbor(String),
}

/// Hand-written protobuf wire helpers (varints, wire types 0 and 2) for the
/// dag-pb codec.
mod proto {
    use super::DagPbError;

    /// Wire type of varint fields.
    pub(crate) const VARINT: u8 = 0;
    /// Wire type of length-delimited fields.
    pub(crate) const LEN: u8 = 2;

    /// Appends `v` as an unsigned LEB128 varint.
    pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// Appends a field tag.
    pub(crate) fn put_tag(out: &mut Vec<u8>, field: u64, wire_type: u8) {
        put_varint(out, (field << 3) | u64::from(wire_type));
    }

    /// Appends a length-delimited field.
    pub(crate) fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
        put_tag(out, field, LEN);
        put_varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    /// Appends a varint field.
    pub(crate) fn put_uint(out: &mut Vec<u8>, field: u64, v: u64) {
        put_tag(out, field, VARINT);
        put_varint(out, v);
    }

    /// A cursor over one protobuf message; offsets it reports are absolute
    /// (relative to the whole block) thanks to `base`.
    #[derive(Debug)]
    pub(crate) struct Reader<'a> {
        buf: &'a [u8],
        pos: usize,
        base: usize,
    }

    impl<'a> Reader<'a> {
        pub(crate) fn new(buf: &'a [u8], base: usize) -> Self {
            Reader { buf, pos: 0, base }
        }

        /// The absolute offset of the next byte.
        pub(crate) fn offset(&self) -> usize {
            self.base + self.pos
        }

        pub(crate) fn is_empty(&self) -> bool {
            self.pos >= self.buf.len()
        }

        pub(crate) fn varint(&mut self) -> Result<u64, DagPbError> {
            let offset = self.offset();
            let mut v: u64 = 0;
            for i in 0..10 {
                let Some(&b) = self.buf.get(self.pos) else {
                    return Err(DagPbError::TruncatedVarint { offset });
                };
                self.pos += 1;
                // The tenth byte may only carry the top bit of a u64.
                if i == 9 && b > 1 {
                    return Err(DagPbError::VarintOverflow { offset });
                }
                v |= u64::from(b & 0x7f) << (7 * i);
                if b & 0x80 == 0 {
                    return Ok(v);
                }
            }
            Err(DagPbError::VarintOverflow { offset })
        }

        /// Reads a tag: (field number, wire type, offset of the tag).
        pub(crate) fn tag(&mut self) -> Result<(u64, u8, usize), DagPbError> {
            let offset = self.offset();
            let tag = self.varint()?;
            Ok((tag >> 3, (tag & 7) as u8, offset))
        }

        /// Reads a length prefix and the bytes it covers; returns them with
        /// the absolute offset of their first byte.
        pub(crate) fn bytes(&mut self) -> Result<(&'a [u8], usize), DagPbError> {
            let offset = self.offset();
            let len = self.varint()?;
            let remaining = self.buf.len() - self.pos;
            let n = usize::try_from(len)
                .ok()
                .filter(|&n| n <= remaining)
                .ok_or(DagPbError::Truncated {
                    offset,
                    len,
                    remaining,
                })?;
            let start = self.pos;
            self.pos += n;
            Ok((&self.buf[start..start + n], self.base + start))
        }
    }
}

use proto::{LEN, Reader, VARINT};

/// Encodes `node` in canonical dag-pb form: every link (field 2) before the
/// data (field 1); within a link Hash (1), Name (2), Tsize (3), each only if
/// present. Links are written in the given order (sorting directory entries
/// is the caller's job, as in go-merkledag).
pub fn encode(node: &PbNode) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(node.data.as_ref().map_or(0, |d| d.len() + 6) + node.links.len() * 48);
    let mut link_buf = Vec::with_capacity(64);
    for link in &node.links {
        link_buf.clear();
        proto::put_bytes(&mut link_buf, 1, &link.hash.to_bytes());
        if let Some(name) = &link.name {
            proto::put_bytes(&mut link_buf, 2, name.as_bytes());
        }
        if let Some(tsize) = link.tsize {
            proto::put_uint(&mut link_buf, 3, tsize);
        }
        proto::put_bytes(&mut out, 2, &link_buf);
    }
    if let Some(data) = &node.data {
        proto::put_bytes(&mut out, 1, data);
    }
    out
}

/// Decodes a dag-pb block.
///
/// Follows the spec's strictness rules: only fields Data (1) and Links (2)
/// with wire type 2; Data at most once; all Links on one side of Data (both
/// the canonical Links-first and the legacy Data-first orders are accepted);
/// PBLink fields in order Hash, Name, Tsize, none repeated, Hash required
/// and a complete binary CID, Name UTF-8. The empty block is a valid node
/// with no links and no data.
pub fn decode(block: &[u8]) -> Result<PbNode, DagPbError> {
    let mut r = Reader::new(block, 0);
    let mut node = PbNode::default();
    let mut links_before_data = false;
    while !r.is_empty() {
        let (field, wire_type, offset) = r.tag()?;
        let name = match field {
            1 => "Data",
            2 => "Links",
            _ => {
                return Err(DagPbError::UnknownField {
                    message: "PBNode",
                    field,
                    wire_type,
                    offset,
                });
            }
        };
        if wire_type != LEN {
            return Err(DagPbError::WrongWireType {
                message: "PBNode",
                field: name,
                wire_type,
                expected: LEN,
                offset,
            });
        }
        let (bytes, start) = r.bytes()?;
        if field == 1 {
            if node.data.is_some() {
                return Err(DagPbError::Duplicate {
                    message: "PBNode",
                    field: "Data",
                    offset,
                });
            }
            links_before_data = !node.links.is_empty();
            node.data = Some(bytes.to_vec());
        } else {
            if node.data.is_some() && links_before_data {
                return Err(DagPbError::OutOfOrder {
                    message: "PBNode",
                    field: "Links",
                    offset,
                });
            }
            node.links.push(decode_link(bytes, start)?);
        }
    }
    Ok(node)
}

fn decode_link(bytes: &[u8], base: usize) -> Result<PbLink, DagPbError> {
    let mut r = Reader::new(bytes, base);
    let mut last_field = 0u64;
    let mut hash = None;
    let mut name = None;
    let mut tsize = None;
    while !r.is_empty() {
        let (field, wire_type, offset) = r.tag()?;
        let (field_name, expected) = match field {
            1 => ("Hash", LEN),
            2 => ("Name", LEN),
            3 => ("Tsize", VARINT),
            _ => {
                return Err(DagPbError::UnknownField {
                    message: "PBLink",
                    field,
                    wire_type,
                    offset,
                });
            }
        };
        if wire_type != expected {
            return Err(DagPbError::WrongWireType {
                message: "PBLink",
                field: field_name,
                wire_type,
                expected,
                offset,
            });
        }
        if field == last_field {
            return Err(DagPbError::Duplicate {
                message: "PBLink",
                field: field_name,
                offset,
            });
        }
        if field < last_field {
            return Err(DagPbError::OutOfOrder {
                message: "PBLink",
                field: field_name,
                offset,
            });
        }
        last_field = field;
        match field {
            1 => {
                let (cid_bytes, start) = r.bytes()?;
                hash = Some(parse_cid(cid_bytes, start)?);
            }
            2 => {
                let (name_bytes, start) = r.bytes()?;
                let s = std::str::from_utf8(name_bytes)
                    .map_err(|_| DagPbError::InvalidName { offset: start })?;
                name = Some(s.to_owned());
            }
            _ => tsize = Some(r.varint()?),
        }
    }
    let hash = hash.ok_or(DagPbError::MissingHash { offset: base })?;
    Ok(PbLink { hash, name, tsize })
}

fn parse_cid(bytes: &[u8], offset: usize) -> Result<Cid, DagPbError> {
    let mut rest = bytes;
    let cid = Cid::read_bytes(&mut rest).map_err(|e| DagPbError::BadCid {
        offset,
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(DagPbError::BadCid {
            offset,
            reason: format!("{} trailing bytes after the CID", rest.len()),
        });
    }
    Ok(cid)
}

/// The children of a block, for a DAG walk, in block order.
///
/// - dag-pb: the Hash of every link;
/// - dag-cbor: every link (tag 42), in the order they appear;
/// - raw: none;
/// - identity-hash CIDs carry their block inside the CID, so `block` is
///   ignored and the digest is used: none for raw and every codec other
///   than dag-pb (nothing to fetch), the links of the inline node for
///   dag-pb (an inlined directory still points at stored blocks);
/// - any other codec: [`DagPbError::Unsupported`], naming the codec.
pub fn links(cid: &Cid, block: &[u8]) -> Result<Vec<Cid>, DagPbError> {
    let identity = cid.hash().code() == IDENTITY;
    let block = if identity { cid.hash().digest() } else { block };
    match cid.codec() {
        DAG_PB => Ok(decode(block)?.links.into_iter().map(|l| l.hash).collect()),
        RAW => Ok(Vec::new()),
        _ if identity => Ok(Vec::new()),
        super::dagcbor::DAG_CBOR => {
            super::dagcbor::links(block).map_err(|e| DagPbError::DagCbor(e.to_string()))
        }
        codec => Err(DagPbError::Unsupported {
            codec,
            name: codec_name(codec),
        }),
    }
}

/// Names of the IPLD codecs a walk is likely to meet, for error messages.
fn codec_name(codec: u64) -> &'static str {
    match codec {
        0x51 => "cbor",
        0x71 => "dag-cbor",
        0x72 => "libp2p-key",
        0x78 => "git-raw",
        0x85 => "dag-jose",
        0x0129 => "dag-json",
        0x0200 => "json",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sha256_cid(version: u64, codec: u64, bytes: &[u8]) -> Cid {
        use sha2::Digest;
        let mh =
            cid::multihash::Multihash::<64>::wrap(SHA2_256, &sha2::Sha256::digest(bytes)).unwrap();
        if version == 0 {
            Cid::new_v0(mh).unwrap()
        } else {
            Cid::new_v1(codec, mh)
        }
    }

    fn sample() -> PbNode {
        PbNode {
            links: vec![
                PbLink {
                    hash: sha256_cid(0, DAG_PB, b"a"),
                    name: Some("a".into()),
                    tsize: Some(300),
                },
                PbLink {
                    hash: sha256_cid(1, RAW, b"b"),
                    name: None,
                    tsize: None,
                },
                PbLink {
                    hash: sha256_cid(1, DAG_PB, b"c"),
                    name: Some(String::new()),
                    tsize: Some(0),
                },
            ],
            data: Some(vec![8, 1]),
        }
    }

    #[test]
    fn zero_length_block_is_the_empty_node_with_the_spec_cid() {
        assert_eq!(decode(&[]).unwrap(), PbNode::default());
        let bytes = encode(&PbNode::default());
        assert!(bytes.is_empty());
        // Vector from the DAG-PB spec, "Zero-length blocks".
        assert_eq!(
            sha256_cid(0, DAG_PB, &bytes).to_string(),
            "QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n"
        );
    }

    #[test]
    fn empty_directory_node_encodes_to_kubo_bytes_and_cid() {
        let node = PbNode {
            links: vec![],
            data: Some(vec![0x08, 0x01]),
        };
        let bytes = encode(&node);
        assert_eq!(bytes, [0x0a, 0x02, 0x08, 0x01]);
        assert_eq!(
            sha256_cid(0, DAG_PB, &bytes).to_string(),
            "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
        );
    }

    #[test]
    fn encode_writes_links_before_data_and_round_trips() {
        let node = sample();
        let bytes = encode(&node);
        // First byte: field 2 (Links), wire type 2; the last field is Data.
        assert_eq!(bytes[0], 0x12);
        assert_eq!(&bytes[bytes.len() - 4..], [0x0a, 0x02, 0x08, 0x01]);
        assert_eq!(decode(&bytes).unwrap(), node);
    }

    #[test]
    fn absent_and_empty_names_stay_distinct() {
        let node = sample();
        let decoded = decode(&encode(&node)).unwrap();
        assert_eq!(decoded.links[1].name, None);
        assert_eq!(decoded.links[2].name, Some(String::new()));
        assert_eq!(decoded.links[1].tsize, None);
    }

    #[test]
    fn legacy_data_first_order_is_accepted() {
        let node = sample();
        let canonical = encode(&node);
        let data_field = [0x0a, 0x02, 0x08, 0x01];
        let mut legacy = data_field.to_vec();
        legacy.extend_from_slice(&canonical[..canonical.len() - 4]);
        assert_eq!(decode(&legacy).unwrap(), node);
    }

    fn link_bytes(fields: &[u8]) -> Vec<u8> {
        let mut out = vec![0x12, fields.len() as u8];
        out.extend_from_slice(fields);
        out
    }

    fn hash_field() -> Vec<u8> {
        let cid = sha256_cid(0, DAG_PB, b"x").to_bytes();
        let mut out = vec![0x0a, cid.len() as u8];
        out.extend_from_slice(&cid);
        out
    }

    #[test]
    fn malformed_blocks_are_rejected_with_a_precise_error() {
        let h = hash_field();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0x12, 0x80], "truncated varint"),
            (vec![0x0a, 0x80, 0x80], "truncated varint"),
            (vec![0x0a, 0x05, 1, 2], "claims 5 bytes"),
            (vec![0x08, 0x01], "wire type 0, expected 2"),
            (vec![0x1a, 0x00], "unknown field number 3"),
            (vec![0x0a, 0x00, 0x0a, 0x00], "duplicate PBNode.Data"),
            (
                [link_bytes(&h), vec![0x0a, 0x00], link_bytes(&h)].concat(),
                "PBNode.Links out of order",
            ),
            (link_bytes(&[0x12, 0x00]), "has no Hash"),
            (link_bytes(&[0x0a, 0x03, 1, 2, 3]), "not a valid CID"),
            (
                link_bytes(&[&h[..], &[0x12, 0x00], &h[..]].concat()),
                "PBLink.Hash out of order",
            ),
            (
                link_bytes(&[&h[..], &h[..]].concat()),
                "duplicate PBLink.Hash",
            ),
            (
                link_bytes(&[&h[..], &[0x18, 0x01, 0x12, 0x00]].concat()),
                "PBLink.Name out of order",
            ),
            (
                link_bytes(&[&h[..], &[0x12, 0x02, 0xff, 0xfe]].concat()),
                "not valid UTF-8",
            ),
            (
                link_bytes(&[&h[..], &[0x1a, 0x00]].concat()),
                "PBLink.Tsize at byte",
            ),
            (
                link_bytes(&[&h[..], &[0x20, 0x00]].concat()),
                "unknown field number 4",
            ),
            (
                vec![
                    0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
                ],
                "overflows 64 bits",
            ),
        ];
        for (bytes, want) in cases {
            let err = decode(&bytes).expect_err(want).to_string();
            assert!(
                err.contains(want),
                "{bytes:02x?}: got {err:?}, want {want:?}"
            );
        }
    }

    #[test]
    fn a_cid_followed_by_junk_is_a_bad_cid() {
        let mut cid = sha256_cid(1, RAW, b"x").to_bytes();
        cid.push(0);
        let mut fields = vec![0x0a, cid.len() as u8];
        fields.extend_from_slice(&cid);
        let err = decode(&link_bytes(&fields)).unwrap_err();
        assert!(matches!(err, DagPbError::BadCid { offset: 4, .. }), "{err}");
    }

    #[test]
    fn links_of_dag_pb_are_its_hashes_in_block_order() {
        let node = sample();
        let bytes = encode(&node);
        let cid = sha256_cid(1, DAG_PB, &bytes);
        let want: Vec<Cid> = node.links.iter().map(|l| l.hash).collect();
        assert_eq!(links(&cid, &bytes).unwrap(), want);
    }

    #[test]
    fn raw_and_identity_blocks_have_no_links_to_fetch() {
        let raw = sha256_cid(1, RAW, b"hello");
        assert_eq!(links(&raw, b"hello").unwrap(), vec![]);
        let inline = cid::multihash::Multihash::<64>::wrap(IDENTITY, b"hi").unwrap();
        assert_eq!(links(&Cid::new_v1(RAW, inline), &[]).unwrap(), vec![]);
        // An identity dag-cbor CID: nothing to fetch either.
        assert_eq!(links(&Cid::new_v1(0x71, inline), &[]).unwrap(), vec![]);
    }

    #[test]
    fn an_inline_dag_pb_node_still_points_at_its_children() {
        let node = PbNode {
            links: vec![PbLink {
                hash: sha256_cid(0, DAG_PB, b"child"),
                name: Some("f".into()),
                tsize: Some(5),
            }],
            data: Some(vec![8, 1]),
        };
        let bytes = encode(&node);
        let mh = cid::multihash::Multihash::<64>::wrap(IDENTITY, &bytes).unwrap();
        let cid = Cid::new_v1(DAG_PB, mh);
        // `block` is ignored: the block is inside the CID.
        assert_eq!(links(&cid, b"ignored").unwrap(), vec![node.links[0].hash]);
    }

    #[test]
    fn other_codecs_are_unsupported_by_name() {
        let cid = sha256_cid(1, 0x0129, b"{}");
        let err = links(&cid, b"{}").unwrap_err();
        assert_eq!(
            err,
            DagPbError::Unsupported {
                codec: 0x0129,
                name: "dag-json"
            }
        );
        assert!(err.to_string().contains("dag-json"));
    }

    fn arb_cid() -> impl Strategy<Value = Cid> {
        (any::<bool>(), any::<bool>(), any::<[u8; 8]>()).prop_map(|(v0, raw, seed)| {
            if v0 {
                sha256_cid(0, DAG_PB, &seed)
            } else {
                sha256_cid(1, if raw { RAW } else { DAG_PB }, &seed)
            }
        })
    }

    fn arb_node() -> impl Strategy<Value = PbNode> {
        let link = (
            arb_cid(),
            proptest::option::of(".{0,12}"),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(|(hash, name, tsize)| PbLink { hash, name, tsize });
        (
            proptest::collection::vec(link, 0..6),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        )
            .prop_map(|(links, data)| PbNode { links, data })
    }

    proptest! {
        #[test]
        fn any_node_round_trips(node in arb_node()) {
            prop_assert_eq!(decode(&encode(&node)).unwrap(), node);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
            let _ = links(&sha256_cid(1, DAG_PB, &bytes), &bytes);
        }

        #[test]
        fn mutated_nodes_never_panic_and_decode_canonically(
            node in arb_node(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
        ) {
            let mut bytes = encode(&node);
            for (at, byte) in edits {
                if !bytes.is_empty() {
                    let i = at % bytes.len();
                    bytes[i] = byte;
                }
            }
            bytes.truncate(cut % (bytes.len() + 1));
            if let Ok(decoded) = decode(&bytes) {
                // Whatever decodes must survive re-encoding unchanged.
                prop_assert_eq!(decode(&encode(&decoded)).unwrap(), decoded);
            }
        }
    }
}
