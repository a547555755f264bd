//! The Bitswap wire format: the protocol versions (1.0.0, 1.1.0, 1.2.0)
//! and what each can carry, the messages of go-bitswap's `message.proto` as
//! prost-derived structs, their uvarint length framing, CID prefixes, and
//! the check that a block hashes to the CID its prefix names.
//!
//! It must not hold state, touch the store, or do I/O beyond reading one
//! frame from a stream the caller owns.

use bytes::Bytes;
use cid::Cid;
use futures::AsyncReadExt;
use libp2p::StreamProtocol;
use prost::Message as _;
use sha2::Digest;

/// Largest message accepted or sent (go-bitswap's limit).
pub(crate) const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// A Bitswap protocol version; newer ones carry more (see [`encode_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Version {
    /// `/ipfs/bitswap/1.0.0` (and `/ipfs/bitswap`): wants, and blocks as
    /// raw bytes (field 2 `blocks`, a sha2-256 CIDv0 implied).
    V100,
    /// `/ipfs/bitswap/1.1.0`: blocks with their CID prefix (`payload`).
    V110,
    /// `/ipfs/bitswap/1.2.0`: `want-have`, block presences, `sendDontHave`.
    V120,
}

/// The protocols this node speaks, newest first: outbound streams try them
/// in this order; inbound streams are accepted on all.
pub(crate) const PROTOCOLS: [(StreamProtocol, Version); 4] = [
    (StreamProtocol::new("/ipfs/bitswap/1.2.0"), Version::V120),
    (StreamProtocol::new("/ipfs/bitswap/1.1.0"), Version::V110),
    (StreamProtocol::new("/ipfs/bitswap/1.0.0"), Version::V100),
    (StreamProtocol::new("/ipfs/bitswap"), Version::V100),
];

/// `Message.Wantlist.WantType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub(crate) enum WantType {
    /// `want-block`: send the block.
    Block = 0,
    /// `want-have`: say whether you hold it.
    Have = 1,
}

/// `Message.BlockPresenceType`: `Have` or `DontHave`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub(crate) enum Presence {
    /// The sender holds the block.
    Have = 0,
    /// The sender does not hold it.
    DontHave = 1,
}

// The messages of go-bitswap's `message.proto` (proto3) that 1.2.0 uses,
// with prost-derive: proto3 fields are written only when not zero, in
// field-number order. The byte fields are `required` so that they are
// written even when empty (an empty block's data), as go-bitswap does.
// Field 2 of `Message` (1.0.0 `blocks`) is read and written through
// [`LegacyBlocks`]; 5 (`pendingBytes`) is not declared: decoding skips it.

/// `Message.Wantlist.Entry`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub(crate) struct WantEntry {
    /// CID bytes (`block`).
    #[prost(bytes = "vec", required, tag = "1")]
    pub cid: Vec<u8>,
    /// Priority (unused by this node).
    #[prost(int32, tag = "2")]
    pub priority: i32,
    /// Revokes an earlier entry.
    #[prost(bool, tag = "3")]
    pub cancel: bool,
    /// A [`WantType`]; unknown values read as `want-block`.
    #[prost(enumeration = "WantType", tag = "4")]
    pub want_type: i32,
    /// Answer `DontHave` when the block is missing.
    #[prost(bool, tag = "5")]
    pub send_dont_have: bool,
}

impl WantEntry {
    /// A want (`want-have` or `want-block`) of `cid` at priority 1.
    pub(crate) fn new(cid: &Cid, want_have: bool, send_dont_have: bool) -> Self {
        let want_type = if want_have {
            WantType::Have
        } else {
            WantType::Block
        };
        Self {
            cid: cid.to_bytes(),
            priority: 1,
            cancel: false,
            want_type: want_type.into(),
            send_dont_have,
        }
    }

    /// Whether this is a `want-have` rather than a `want-block`.
    pub(crate) fn want_have(&self) -> bool {
        self.want_type() == WantType::Have
    }
}

/// `Message.Wantlist`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub(crate) struct Wantlist {
    /// Wantlist entries.
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<WantEntry>,
    /// Whether `entries` is the sender's full wantlist.
    #[prost(bool, tag = "2")]
    pub full: bool,
}

/// `Message.Block`: a block with the CID prefix that names its hash.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub(crate) struct Block {
    /// CID prefix: version, codec, hash code and digest length.
    #[prost(bytes = "vec", required, tag = "1")]
    pub prefix: Vec<u8>,
    /// The block's bytes. Decoded from a [`Bytes`] frame this is a slice
    /// of the frame, not a copy: blocks are verified and handed over as
    /// soon as their message is read (never queued, unlike wants, whose
    /// CIDs are copied), so the frame does not outlive the read.
    #[prost(bytes = "bytes", required, tag = "2")]
    pub data: Bytes,
}

/// `Message.BlockPresence`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub(crate) struct BlockPresence {
    /// CID bytes.
    #[prost(bytes = "vec", required, tag = "1")]
    pub cid: Vec<u8>,
    /// A [`Presence`]; unknown values read as `Have`.
    #[prost(enumeration = "Presence", tag = "2")]
    pub r#type: i32,
}

impl BlockPresence {
    /// A presence of `cid`.
    pub(crate) fn new(cid: Vec<u8>, presence: Presence) -> Self {
        BlockPresence {
            cid,
            r#type: presence.into(),
        }
    }
}

/// One Bitswap message.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub(crate) struct Message {
    /// Wants; absent when the message carries none.
    #[prost(message, optional, tag = "1")]
    pub wantlist: Option<Wantlist>,
    /// Blocks (`payload`).
    #[prost(message, repeated, tag = "3")]
    pub payload: Vec<Block>,
    /// Block presences.
    #[prost(message, repeated, tag = "4")]
    pub block_presences: Vec<BlockPresence>,
}

/// A 1.0.0 message: the wantlist and field 2 of `Message` (`blocks`: a
/// block's bytes, its CID the sha2-256 CIDv0 of them).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub(crate) struct LegacyBlocks {
    /// Wants; absent when the message carries none.
    #[prost(message, optional, tag = "1")]
    pub wantlist: Option<Wantlist>,
    /// Blocks' bytes.
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub blocks: Vec<Bytes>,
}

/// The CID prefix of a 1.0.0 block: CIDv0 (dag-pb, sha2-256, 32 bytes).
pub(crate) const V0_PREFIX: [u8; 4] = [0x00, 0x70, 0x12, 0x20];

/// Decodes a message read from a stream of `version`: a 1.0.0 message's
/// blocks (field 2) come back as `payload` with the CIDv0 prefix their
/// bytes are checked against.
pub(crate) fn decode_for(frame: &[u8], version: Version) -> Result<Message, BitswapError> {
    if version > Version::V100 {
        return Ok(Message::decode(frame)?);
    }
    let legacy = LegacyBlocks::decode(frame)?;
    Ok(Message {
        wantlist: legacy.wantlist,
        payload: legacy
            .blocks
            .into_iter()
            .map(|data| Block {
                prefix: V0_PREFIX.to_vec(),
                data,
            })
            .collect(),
        block_presences: Vec::new(),
    })
}

/// Appends `msg`, length-prefixed, as a peer speaking `version` reads it:
/// before 1.2.0 without `want-have`s, `sendDontHave` or presences, and in
/// 1.0.0 with blocks as raw bytes (field 2). Nothing is appended when
/// nothing is left.
pub(crate) fn encode_for(msg: &Message, version: Version, out: &mut Vec<u8>) {
    if version >= Version::V120 {
        let _ = msg.encode_length_delimited(out);
        return;
    }
    let wantlist = msg.wantlist.as_ref().and_then(|wl| {
        let entries: Vec<WantEntry> = wl
            .entries
            .iter()
            .filter(|e| !e.want_have())
            .map(|e| WantEntry {
                send_dont_have: false,
                ..e.clone()
            })
            .collect();
        // An emptied full wantlist would mean "I want nothing".
        let full = wl.full;
        (!entries.is_empty() || (wl.entries.is_empty() && full))
            .then_some(Wantlist { entries, full })
    });
    if wantlist.is_none() && msg.payload.is_empty() {
        return;
    }
    let _ = if version == Version::V100 {
        LegacyBlocks {
            wantlist,
            blocks: msg.payload.iter().map(|b| b.data.clone()).collect(),
        }
        .encode_length_delimited(out)
    } else {
        Message {
            wantlist,
            payload: msg.payload.clone(),
            block_presences: Vec::new(),
        }
        .encode_length_delimited(out)
    };
}

/// Why a message or block was rejected.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BitswapError {
    /// Not a valid message.
    #[error("invalid bitswap message")]
    Decode(#[from] prost::DecodeError),
    /// A message length prefix over ten bytes.
    #[error("overlong message length prefix")]
    LengthPrefix,
    /// A message longer than [`MAX_MESSAGE_BYTES`].
    #[error("bitswap message of {0} bytes is over the limit")]
    TooLarge(u64),
    /// A block's prefix is not a CID prefix.
    #[error("invalid cid prefix")]
    Prefix,
    /// A hash function this node does not implement.
    #[error("unsupported multihash code {0:#x}")]
    Hash(u64),
    /// Reading or writing a stream failed.
    #[error("stream i/o failed")]
    Io(#[from] std::io::Error),
}

/// The CID prefix of `cid`: version, codec, hash code and digest length.
pub(crate) fn cid_prefix(cid: &Cid) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    let mut buf = unsigned_varint::encode::u64_buffer();
    for v in [
        u64::from(cid.version()),
        cid.codec(),
        cid.hash().code(),
        u64::from(cid.hash().size()),
    ] {
        out.extend_from_slice(unsigned_varint::encode::u64(v, &mut buf));
    }
    out
}

/// The digest of `data` under multihash `code`.
pub(crate) fn digest(code: u64, data: &[u8]) -> Result<Vec<u8>, BitswapError> {
    match code {
        0x00 => Ok(data.to_vec()),
        0x12 => Ok(sha2::Sha256::digest(data).to_vec()),
        0x13 => Ok(sha2::Sha512::digest(data).to_vec()),
        other => Err(BitswapError::Hash(other)),
    }
}

/// The CID of `data` as described by `prefix`, computed here: a peer's
/// claim is never trusted.
pub(crate) fn block_cid(prefix: &[u8], data: &[u8]) -> Result<Cid, BitswapError> {
    let mut rest = prefix;
    let mut next = || -> Result<u64, BitswapError> {
        let (v, tail) = unsigned_varint::decode::u64(rest).map_err(|_| BitswapError::Prefix)?;
        rest = tail;
        Ok(v)
    };
    let (version, codec, code, len) = (next()?, next()?, next()?, next()?);
    let digest = digest(code, data)?;
    if code != 0 && len as usize != digest.len() {
        return Err(BitswapError::Prefix);
    }
    let mh = multihash::Multihash::<64>::wrap(code, &digest).map_err(|_| BitswapError::Prefix)?;
    let version = cid::Version::try_from(version).map_err(|_| BitswapError::Prefix)?;
    Cid::new(version, codec, mh).map_err(|_| BitswapError::Prefix)
}

/// Verifies that `data` hashes to `cid`.
#[cfg(test)]
fn verify(cid: &Cid, data: &[u8]) -> bool {
    block_cid(&cid_prefix(cid), data).is_ok_and(|c| c.hash() == cid.hash())
}

/// Reads one uvarint-length-prefixed frame into `buf` (grown as needed,
/// never shrunk or zeroed again: a stream reuses one buffer); its length,
/// or `None` at a clean end of the stream.
pub(crate) async fn read_frame_into(
    stream: &mut (impl futures::AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> Result<Option<usize>, BitswapError> {
    let mut len = 0u64;
    for i in 0..10 {
        let mut b = [0u8; 1];
        match stream.read_exact(&mut b).await {
            Ok(()) => {}
            Err(e) if i == 0 && e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        len |= u64::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            // Checked before allocating: a peer cannot make us reserve more.
            let len = usize::try_from(len)
                .ok()
                .filter(|&n| n <= MAX_MESSAGE_BYTES)
                .ok_or(BitswapError::TooLarge(len))?;
            if buf.len() < len {
                buf.resize(len, 0);
            }
            stream.read_exact(&mut buf[..len]).await?;
            return Ok(Some(len));
        }
    }
    Err(BitswapError::LengthPrefix)
}

/// The next message of `stream`, read into `buf` (reused: decoding copies
/// each block out once); `None` at a clean end or when `cancel` fires.
pub(crate) async fn next_message(
    stream: &mut (impl futures::AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<Option<Message>, BitswapError> {
    let frame = tokio::select! {
        _ = cancel.cancelled() => return Ok(None),
        f = read_frame_into(stream, buf) => f?,
    };
    Ok(frame
        .map(|n| Message::decode(buf.get(..n).unwrap_or_default()))
        .transpose()?)
}

/// Runs `handle` on its own task for each inbound stream of `incoming`,
/// until `cancel` fires or the swarm goes.
pub(crate) async fn serve_streams<F, Fut>(
    mut incoming: libp2p_stream::IncomingStreams,
    cancel: tokio_util::sync::CancellationToken,
    tasks: tokio_util::task::TaskTracker,
    mut handle: F,
) where
    F: FnMut(libp2p::PeerId, libp2p::Stream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use futures::StreamExt;
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return,
            n = incoming.next() => n,
        };
        let Some((peer, stream)) = next else { return };
        tasks.spawn(handle(peer, stream));
    }
}

/// [`read_frame_into`] a fresh buffer: the frame's bytes.
#[cfg(test)]
pub(super) async fn read_frame(
    stream: &mut (impl futures::AsyncRead + Unpin),
) -> Result<Option<Vec<u8>>, BitswapError> {
    let mut buf = Vec::new();
    Ok(read_frame_into(stream, &mut buf).await?.map(|n| {
        buf.truncate(n);
        buf
    }))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A CIDv1 raw, sha2-256 of `data`.
    pub(in crate::ipfs::embedded::bitswap) fn raw_cid(data: &[u8]) -> Cid {
        let mh = multihash::Multihash::<64>::wrap(0x12, &sha2::Sha256::digest(data)).unwrap();
        Cid::new_v1(0x55, mh)
    }

    fn wants(entries: Vec<WantEntry>, full: bool) -> Message {
        Message {
            wantlist: Some(Wantlist { entries, full }),
            ..Message::default()
        }
    }

    #[test]
    fn messages_round_trip() {
        let cid = raw_cid(b"hello");
        let msg = Message {
            payload: vec![Block {
                prefix: cid_prefix(&cid),
                data: Bytes::from_static(b"hello"),
            }],
            block_presences: vec![BlockPresence::new(cid.to_bytes(), Presence::DontHave)],
            ..wants(vec![WantEntry::new(&cid, true, true)], true)
        };
        assert_eq!(
            Message::decode(msg.encode_to_vec().as_slice()).unwrap(),
            msg
        );
        assert!(msg.wantlist.as_ref().unwrap().entries[0].want_have());
        assert!(Message::decode(&[0x0a, 0x05, 0x01][..]).is_err());
    }

    /// The bytes the hand-written encoder this replaced wrote for the same
    /// messages: peers see no change.
    #[test]
    fn encoding_is_byte_for_byte_unchanged() {
        let cid: Cid = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
            .parse()
            .unwrap();
        let v0: Cid = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
            .parse()
            .unwrap();
        assert_eq!(hex::encode(cid_prefix(&cid)), "01551220");
        assert_eq!(hex::encode(cid_prefix(&v0)), "00701220");
        let cancel = WantEntry {
            priority: 0,
            cancel: true,
            send_dont_have: false,
            ..WantEntry::new(&cid, false, false)
        };
        let negative = WantEntry {
            priority: -1,
            ..WantEntry::new(&v0, false, true)
        };
        let cases = [
            (Message::default(), ""),
            (
                wants(vec![WantEntry::new(&cid, true, true)], true),
                "0a300a2c0a2401551220a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192\
                 a4471001200128011001",
            ),
            (
                wants(vec![cancel, negative], false),
                "0a5d0a280a2401551220a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192\
                 a44718010a310a22122046d44814b9c5af141c3aaab7c05dc5e844ead5f91f12858b021eba45768b\
                 4c0e10ffffffffffffffffff012801",
            ),
            (wants(vec![], true), "0a021001"),
            (
                Message {
                    payload: vec![
                        Block {
                            prefix: cid_prefix(&cid),
                            data: Bytes::from_static(b"hello world\n"),
                        },
                        // An empty block still carries its (empty) data field.
                        Block {
                            prefix: cid_prefix(&v0),
                            data: Bytes::new(),
                        },
                    ],
                    block_presences: vec![
                        BlockPresence::new(cid.to_bytes(), Presence::Have),
                        BlockPresence::new(v0.to_bytes(), Presence::DontHave),
                    ],
                    ..Message::default()
                },
                "1a140a0401551220120c68656c6c6f20776f726c640a1a080a040070122012002226\
                 0a2401551220a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447\
                 22260a22122046d44814b9c5af141c3aaab7c05dc5e844ead5f91f12858b021eba45768b4c0e1001",
            ),
        ];
        for (msg, want) in cases {
            let bytes = msg.encode_to_vec();
            assert_eq!(hex::encode(&bytes), want);
            assert_eq!(Message::decode(bytes.as_slice()).unwrap(), msg);
            let framed = msg.encode_length_delimited_to_vec();
            assert_eq!(framed[framed.len() - bytes.len()..], bytes[..]);
            assert_eq!(
                unsigned_varint::decode::u64(&framed).unwrap(),
                (bytes.len() as u64, &bytes[..])
            );
        }
    }

    /// Appends a protobuf field: tag, then `payload` as it goes on the wire
    /// (for wire type 2, the length prefix is added here).
    fn field(out: &mut Vec<u8>, tag: u64, wire_type: u64, payload: &[u8]) {
        let mut buf = unsigned_varint::encode::u64_buffer();
        out.extend_from_slice(unsigned_varint::encode::u64(tag << 3 | wire_type, &mut buf));
        if wire_type == 2 {
            out.extend_from_slice(unsigned_varint::encode::u64(payload.len() as u64, &mut buf));
        }
        out.extend_from_slice(payload);
    }

    fn varint(v: u64) -> Vec<u8> {
        unsigned_varint::encode::u64(v, &mut unsigned_varint::encode::u64_buffer()).to_vec()
    }

    /// A message as Kubo (boxo's bitswap, proto3 via gogoproto) writes it:
    /// zero fields left out (a want-block has no wantType, a Have presence
    /// no type), priorities near `i32::MAX`, `pendingBytes` set, plus a
    /// 1.0.0 `blocks` entry and an unknown fixed64 field this node skips.
    #[test]
    fn messages_shaped_as_kubo_writes_them_decode() {
        let (a, b) = (raw_cid(b"a"), raw_cid(b"b"));
        let mut block_want = Vec::new();
        field(&mut block_want, 1, 2, &a.to_bytes());
        field(&mut block_want, 2, 0, &varint(2_147_483_646));
        field(&mut block_want, 5, 0, &[1]);
        let mut have_want = Vec::new();
        field(&mut have_want, 1, 2, &b.to_bytes());
        field(&mut have_want, 2, 0, &varint(2_147_483_645));
        field(&mut have_want, 4, 0, &[1]);
        let mut cancel = Vec::new();
        field(&mut cancel, 1, 2, &a.to_bytes());
        field(&mut cancel, 3, 0, &[1]);
        let mut wantlist = Vec::new();
        for e in [&block_want, &have_want, &cancel] {
            field(&mut wantlist, 1, 2, e);
        }
        let mut block = Vec::new();
        field(&mut block, 1, 2, &cid_prefix(&a));
        field(&mut block, 2, 2, b"a");
        let mut have = Vec::new();
        field(&mut have, 1, 2, &a.to_bytes());
        let mut dont_have = Vec::new();
        field(&mut dont_have, 1, 2, &b.to_bytes());
        field(&mut dont_have, 2, 0, &[1]);
        let mut msg = Vec::new();
        field(&mut msg, 1, 2, &wantlist);
        field(&mut msg, 2, 2, b"legacy 1.0.0 block");
        field(&mut msg, 3, 2, &block);
        field(&mut msg, 4, 2, &have);
        field(&mut msg, 4, 2, &dont_have);
        field(&mut msg, 5, 0, &varint(4096));
        field(&mut msg, 9, 1, &[7; 8]);

        let m = Message::decode(msg.as_slice()).unwrap();
        let wl = m.wantlist.unwrap();
        assert!(!wl.full);
        let e = &wl.entries;
        assert_eq!(e.len(), 3);
        assert_eq!((e[0].cid.clone(), e[0].want_have()), (a.to_bytes(), false));
        assert!(e[0].send_dont_have && !e[0].cancel);
        assert_eq!(e[0].priority, 2_147_483_646);
        assert_eq!((e[1].cid.clone(), e[1].want_have()), (b.to_bytes(), true));
        assert!(!e[1].send_dont_have);
        assert!(e[2].cancel);
        assert_eq!(m.payload.len(), 1);
        assert_eq!(
            block_cid(&m.payload[0].prefix, &m.payload[0].data).unwrap(),
            a
        );
        let presences: Vec<_> = m
            .block_presences
            .iter()
            .map(|p| (p.cid.clone(), p.r#type()))
            .collect();
        assert_eq!(
            presences,
            vec![
                (a.to_bytes(), Presence::Have),
                (b.to_bytes(), Presence::DontHave)
            ]
        );

        // Values outside the enums read as the zero value, as before.
        let mut odd = Vec::new();
        field(&mut odd, 1, 2, &a.to_bytes());
        field(&mut odd, 4, 0, &[7]);
        let mut wl = Vec::new();
        field(&mut wl, 1, 2, &odd);
        let mut msg = Vec::new();
        field(&mut msg, 1, 2, &wl);
        let m = Message::decode(msg.as_slice()).unwrap();
        assert!(!m.wantlist.unwrap().entries[0].want_have());
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let cid = raw_cid(b"x");
        let mut presence = Vec::new();
        field(&mut presence, 1, 2, &cid.to_bytes());
        // A block whose data claims 2^62 bytes inside a well-framed message.
        let mut huge_inner = vec![0x12]; // field 2, wire type 2
        huge_inner.extend_from_slice(&varint(1 << 62));
        huge_inner.extend_from_slice(b"short");
        let mut huge = Vec::new();
        field(&mut huge, 3, 2, &huge_inner);
        let mut wrong_wire = Vec::new();
        field(&mut wrong_wire, 1, 0, &[1]); // wantlist as a varint
        let mut unterminated_group = Vec::new();
        field(&mut unterminated_group, 9, 3, &[]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated sub-message", vec![0x0a, 0x05, 0x01]),
            (
                "length past the end",
                vec![0x1a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01],
            ),
            ("inner length past the end", huge),
            ("overlong varint", [&[0x28][..], &[0xff; 11]].concat()),
            (
                "truncated presence",
                presence[..presence.len() - 1].to_vec(),
            ),
            ("known field, wrong wire type", wrong_wire),
            ("unterminated group", unterminated_group),
            (
                "nested groups past the recursion limit",
                [0x4b; 200].to_vec(),
            ),
            ("wire type 7", vec![0x0f]),
        ];
        for (what, bytes) in cases {
            assert!(Message::decode(bytes.as_slice()).is_err(), "{what}");
        }
    }

    #[test]
    fn frames_over_the_limit_are_refused_before_allocating() {
        let read = |bytes: Vec<u8>| {
            futures::executor::block_on(read_frame(&mut futures::io::Cursor::new(bytes)))
        };
        let mut frame = varint(3);
        frame.extend_from_slice(b"abc");
        assert_eq!(read(frame).unwrap(), Some(b"abc".to_vec()));
        assert_eq!(read(Vec::new()).unwrap(), None);
        let over = read(varint(MAX_MESSAGE_BYTES as u64 + 1)).unwrap_err();
        assert!(matches!(over, BitswapError::TooLarge(n) if n == MAX_MESSAGE_BYTES as u64 + 1));
        assert!(matches!(
            read(varint(u64::MAX)).unwrap_err(),
            BitswapError::TooLarge(u64::MAX)
        ));
        assert!(matches!(
            read(vec![0xff; 11]).unwrap_err(),
            BitswapError::LengthPrefix
        ));
        // A length prefix cut short, and a body cut short.
        assert!(matches!(read(vec![0x80]).unwrap_err(), BitswapError::Io(_)));
        assert!(matches!(
            read(vec![0x05, 1]).unwrap_err(),
            BitswapError::Io(_)
        ));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_without_panicking(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            if let Ok(m) = Message::decode(bytes.as_slice()) {
                // Whatever decodes re-encodes to something that decodes the same.
                let again = Message::decode(m.encode_to_vec().as_slice()).unwrap();
                prop_assert_eq!(again, m);
            }
        }
    }

    /// What each version gets of one message carrying a want-block, a
    /// want-have, a block and a presence, read back as that version reads.
    #[test]
    fn messages_are_encoded_for_the_peers_version() {
        let (a, b) = (raw_cid(b"a"), raw_cid(b"b"));
        let block = Block {
            prefix: cid_prefix(&a),
            data: Bytes::from_static(b"a"),
        };
        let msg = Message {
            payload: vec![block.clone()],
            block_presences: vec![BlockPresence::new(b.to_bytes(), Presence::DontHave)],
            ..wants(
                vec![
                    WantEntry::new(&a, false, true),
                    WantEntry::new(&b, true, true),
                ],
                false,
            )
        };
        let read = |v: Version| {
            let mut out = Vec::new();
            encode_for(&msg, v, &mut out);
            let (len, body) = unsigned_varint::decode::usize(&out).unwrap();
            assert_eq!(len, body.len());
            decode_for(body, v).unwrap()
        };
        assert_eq!(read(Version::V120), msg);
        let old_wants = Some(Wantlist {
            entries: vec![WantEntry::new(&a, false, false)],
            full: false,
        });
        let v110 = read(Version::V110);
        assert_eq!(v110.wantlist, old_wants);
        assert_eq!(v110.payload, vec![block]);
        assert!(v110.block_presences.is_empty());
        let v100 = read(Version::V100);
        assert_eq!(v100.wantlist, old_wants);
        assert_eq!(v100.payload[0].prefix, V0_PREFIX);
        // A 1.0.0 block is checked as the CIDv0 of its bytes: same multihash.
        let cid = block_cid(&v100.payload[0].prefix, &v100.payload[0].data).unwrap();
        assert_eq!(cid.hash(), a.hash());
        assert_eq!(cid.version(), cid::Version::V0);

        // Nothing a 1.1.0 peer can read: nothing sent.
        let mut out = Vec::new();
        let presences_only = Message {
            block_presences: msg.block_presences.clone(),
            ..wants(vec![WantEntry::new(&b, true, true)], true)
        };
        encode_for(&presences_only, Version::V110, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn blocks_are_verified_against_their_cid() {
        let cid = raw_cid(b"hello");
        assert_eq!(block_cid(&cid_prefix(&cid), b"hello").unwrap(), cid);
        assert_ne!(block_cid(&cid_prefix(&cid), b"hellO").unwrap(), cid);
        assert!(verify(&cid, b"hello"));
        assert!(!verify(&cid, b"hellO"));
        let v0 = Cid::new_v0(*cid.hash()).unwrap();
        assert_eq!(block_cid(&cid_prefix(&v0), b"hello").unwrap(), v0);
        assert!(block_cid(&[1, 0x55, 0x1e, 32], b"x").is_err());
        assert!(
            block_cid(&[1, 0x55, 0x12], b"x").is_err(),
            "truncated prefix"
        );
    }
}
