//! The UnixFS `Data` message (go-unixfs' `unixfs.proto`) that a dag-pb
//! node's Data field carries: its typed form [`UnixfsData`] and the
//! prost-derived wire struct.
//!
//! It owns the bytes of that one message and must stay byte-for-byte what
//! go-unixfs writes (the CIDs of `ipfs add` depend on it); it must not know
//! about dag-pb framing, links or blocks.

use bytes::Bytes;
use prost::Message as _;

use super::DataType;

/// The UnixFS `Data` message carried in a dag-pb node's Data field (the
/// fields this module uses; `hashType`, `fanout`, `mode` and `mtime` are
/// skipped on decode and never written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixfsData {
    /// Field 1.
    pub kind: DataType,
    /// Field 2: file bytes of a leaf, or a symlink target.
    pub data: Option<Bytes>,
    /// Field 3: total file bytes under this node.
    pub filesize: Option<u64>,
    /// Field 4: file bytes under each link, in link order.
    pub blocksizes: Vec<u64>,
}

/// Why a UnixFS `Data` message does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnixfsDataError {
    /// Not a protobuf message: truncated, a length past the end, an
    /// overlong varint, or a known field with the wrong wire type.
    #[error(transparent)]
    Wire(#[from] prost::DecodeError),
    /// The required `Type` field is absent.
    #[error("UnixFS Data has no Type")]
    MissingType,
    /// `Type` is not one of the six known values.
    #[error("UnixFS Data has unknown Type {0}")]
    UnknownType(u64),
}

/// The wire form of [`UnixfsData`]: go-unixfs' `Data` message (proto2),
/// with prost-derive. proto2 `optional` fields are written exactly when
/// set, `blocksizes` unpacked, in field-number order: the bytes go-unixfs
/// writes. `Type` (an enum in the schema) is read as a plain varint, so an
/// out-of-range value is reported rather than truncated to 32 bits, and
/// kept optional here so that a missing `Type` is told from `Raw` (0).
#[derive(Clone, PartialEq, prost::Message)]
struct Data {
    #[prost(uint64, optional, tag = "1")]
    r#type: Option<u64>,
    #[prost(bytes = "bytes", optional, tag = "2")]
    data: Option<Bytes>,
    #[prost(uint64, optional, tag = "3")]
    filesize: Option<u64>,
    #[prost(uint64, repeated, packed = "false", tag = "4")]
    blocksizes: Vec<u64>,
}

impl UnixfsData {
    /// Encodes in field order, as go-unixfs writes it (blocksizes not
    /// packed).
    pub fn encode(&self) -> Vec<u8> {
        Data {
            r#type: Some(self.kind.code()),
            // A reference count, not a copy of the bytes.
            data: self.data.clone(),
            filesize: self.filesize,
            blocksizes: self.blocksizes.clone(),
        }
        .encode_to_vec()
    }

    /// Decodes, accepting packed or unpacked `blocksizes` and skipping
    /// fields this module does not use. A field that appears twice keeps
    /// its last value (protobuf's rule, which go-unixfs follows).
    pub fn decode(bytes: &[u8]) -> Result<Self, UnixfsDataError> {
        let msg = Data::decode(bytes)?;
        let code = msg.r#type.ok_or(UnixfsDataError::MissingType)?;
        Ok(UnixfsData {
            kind: DataType::from_code(code).ok_or(UnixfsDataError::UnknownType(code))?,
            data: msg.data,
            filesize: msg.filesize,
            blocksizes: msg.blocksizes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unixfs_data_decodes_packed_blocksizes_and_skips_metadata() {
        // Type=File, blocksizes packed [3, 300], mode=0o644 (field 7).
        let bytes = [0x08, 0x02, 0x22, 0x03, 0x03, 0xac, 0x02, 0x38, 0xa4, 0x03];
        let data = UnixfsData::decode(&bytes).unwrap();
        assert_eq!((data.kind, data.blocksizes), (DataType::File, vec![3, 300]));
        assert_eq!(
            UnixfsData::decode(&[0x18, 0x00]),
            Err(UnixfsDataError::MissingType)
        );
        assert_eq!(
            UnixfsData::decode(&[0x08, 0x09]),
            Err(UnixfsDataError::UnknownType(9))
        );
        // 2^32 + 2 is not File cut to 32 bits.
        assert_eq!(
            UnixfsData::decode(&[0x08, 0x82, 0x80, 0x80, 0x80, 0x10]),
            Err(UnixfsDataError::UnknownType((1 << 32) + 2))
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The bytes go-unixfs (and the hand-written encoder this replaced)
    /// writes: Type always, then Data, filesize only when set (even empty
    /// or 0), blocksizes one unpacked field each.
    #[test]
    fn unixfs_data_encodes_as_go_unixfs() {
        let d = |kind, data: Option<&[u8]>, filesize, blocksizes: &[u64]| UnixfsData {
            kind,
            data: data.map(Bytes::copy_from_slice),
            filesize,
            blocksizes: blocksizes.to_vec(),
        };
        for (data, want) in [
            (d(DataType::Raw, None, None, &[]), "0800"),
            (d(DataType::Directory, None, None, &[]), "0801"),
            (
                d(DataType::File, Some(b"hi"), Some(2), &[]),
                "0802120268691802",
            ),
            (d(DataType::File, Some(b""), Some(0), &[]), "080212001800"),
            (d(DataType::File, None, Some(0), &[]), "08021800"),
            (
                d(DataType::File, None, Some(262_154), &[262_144, 10, 0]),
                "0802188a801020808010200a2000",
            ),
            (
                d(DataType::Symlink, Some(b"target.txt"), None, &[]),
                "0804120a7461726765742e747874",
            ),
            (d(DataType::HamtShard, None, None, &[]), "0805"),
        ] {
            let bytes = data.encode();
            assert_eq!(hex(&bytes), want, "{data:?}");
            assert_eq!(UnixfsData::decode(&bytes).unwrap(), data);
        }
    }

    #[test]
    fn malformed_unixfs_data_is_an_error_not_a_panic() {
        for (what, bytes) in [
            ("truncated Type", &[0x08][..]),
            (
                "Data past the end",
                &[0x08, 0x02, 0x12, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01],
            ),
            (
                "Data length 2^63",
                &[
                    0x12, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
                ],
            ),
            (
                "packed blocksizes past the end",
                &[0x08, 0x02, 0x22, 0x05, 0x03],
            ),
            (
                "packed blocksize cut short",
                &[0x08, 0x02, 0x22, 0x01, 0x80],
            ),
            ("Type as bytes", &[0x0a, 0x00]),
            ("filesize as bytes", &[0x08, 0x02, 0x1a, 0x00]),
            (
                "overlong varint",
                &[
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ],
            ),
            ("unknown field cut short", &[0x08, 0x02, 0x3a, 0x05, 0x01]),
            ("wire type 7", &[0x08, 0x02, 0x0f]),
        ] {
            assert!(
                matches!(UnixfsData::decode(bytes), Err(UnixfsDataError::Wire(_))),
                "{what}"
            );
        }
        // A repeated field keeps its last value, as in go-unixfs.
        let twice = UnixfsData::decode(&[0x08, 0x01, 0x08, 0x02]).unwrap();
        assert_eq!(twice.kind, DataType::File);
    }

    fn any_kind() -> impl Strategy<Value = DataType> {
        (0u64..6).prop_map(|c| DataType::from_code(c).unwrap())
    }

    proptest! {
        #[test]
        fn unixfs_data_round_trips(
            kind in any_kind(),
            data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            filesize in proptest::option::of(any::<u64>()),
            blocksizes in proptest::collection::vec(any::<u64>(), 0..8),
        ) {
            let d = UnixfsData { kind, data: data.map(Bytes::from), filesize, blocksizes };
            prop_assert_eq!(UnixfsData::decode(&d.encode()).unwrap(), d);
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panicking(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let _ = UnixfsData::decode(&bytes);
        }
    }
}
