//! Property tests that feed the Bitswap receive path hostile bytes: the
//! frame reader, the message decoder, the block check and the answer to a
//! wantlist, with arbitrary streams and mutations of valid messages. Each
//! must answer a value or an error (never panic), with output bounded by
//! the input.
//!
//! Bounded for CI: streams of a few KiB; the case counts keep each test to
//! a few seconds in a debug build.

use bytes::Bytes;
use cid::Cid;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::Message as _;

use super::BlockStore;
use super::answer;
use super::wire::tests::raw_cid;
use super::wire::{
    Block, BlockPresence, Message, Presence, Version, WantEntry, Wantlist, block_cid, cid_prefix,
    decode_for, read_frame,
};
use crate::testkit::fuzz::{bytes, mutated};

/// Tags and varints of the message: `wantlist` 1, `payload` 3,
/// `blockPresences` 4, their inner fields, and overlong or huge lengths.
const TOKENS: &[&[u8]] = &[
    b"\x0a",
    b"\x1a",
    b"\x22",
    b"\x08",
    b"\x10",
    b"\x12",
    b"\x18",
    b"\x20",
    b"\x28",
    b"\x80",
    b"\xff\xff\xff\xff\x0f",
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    b"\x00",
    b"\x4b",
    b"\x01\x55\x12\x20",
    b"\x0f",
];

/// Valid framed messages: a wantlist, blocks, presences, and all three.
fn corpus() -> Vec<Vec<u8>> {
    let (a, b) = (raw_cid(b"a"), raw_cid(b"bb"));
    let wants = Message {
        wantlist: Some(Wantlist {
            entries: vec![
                WantEntry::new(&a, false, true),
                WantEntry::new(&b, true, false),
            ],
            full: true,
        }),
        ..Message::default()
    };
    let blocks = Message {
        payload: vec![
            Block {
                prefix: cid_prefix(&a),
                data: Bytes::from_static(b"a"),
            },
            Block {
                prefix: cid_prefix(&b),
                data: Bytes::from_static(b"bb"),
            },
        ],
        ..Message::default()
    };
    let presences = Message {
        block_presences: vec![
            BlockPresence::new(a.to_bytes(), Presence::Have),
            BlockPresence::new(b.to_bytes(), Presence::DontHave),
        ],
        ..Message::default()
    };
    let all = Message {
        wantlist: wants.wantlist.clone(),
        payload: blocks.payload.clone(),
        block_presences: presences.block_presences.clone(),
    };
    [wants, blocks, presences, all]
        .iter()
        .map(|m| m.encode_length_delimited_to_vec())
        .collect()
}

/// Reads `stream` as the receive loop does: frames until the end or an
/// error, each decoded as a message, its blocks checked against their
/// prefix and its wants answered from `store`.
fn receive(store: &BlockStore, stream: &[u8]) {
    let mut cursor = futures::io::Cursor::new(stream);
    let mut frames = 0usize;
    while let Ok(Some(frame)) = futures::executor::block_on(read_frame(&mut cursor)) {
        frames += 1;
        assert!(frames <= stream.len(), "more frames than bytes");
        assert!(
            frame.len() <= stream.len(),
            "a frame larger than the stream"
        );
        let len = frame.len();
        // As a 1.0.0 stream reads it: blocks, each checked as a CIDv0.
        if let Ok(old) = decode_for(&frame, Version::V100) {
            assert!(old.payload.iter().all(|b| b.data.len() <= len));
        }
        let Ok(msg) = Message::decode(Bytes::from(frame)) else {
            continue;
        };
        // Every entry takes at least a tag and a length.
        let wants = msg.wantlist.map(|w| w.entries).unwrap_or_default();
        assert!(wants.len() + msg.payload.len() + msg.block_presences.len() <= len / 2 + 1);
        for b in &msg.payload {
            assert!(b.data.len() <= len);
            if let Ok(cid) = block_cid(&b.prefix, &b.data) {
                // What a block hashes to is what its CID's prefix rebuilds.
                assert_eq!(block_cid(&cid_prefix(&cid), &b.data).unwrap(), cid);
            }
        }
        for p in &msg.block_presences {
            let _ = (p.r#type(), Cid::try_from(p.cid.as_slice()));
        }
        let n = wants.len();
        let answers = answer(store, wants);
        let items: usize = answers
            .iter()
            .map(|m| m.payload.len() + m.block_presences.len())
            .sum();
        assert!(items <= n, "{items} answers to {n} wants");
    }
}

fn run(cases: u32, strategy: impl Strategy<Value = Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let store = BlockStore::open(&dir.path().join("b.redb")).unwrap();
    let held = raw_cid(b"a");
    store
        .put_many(&[(held.hash().to_bytes(), b"a".to_vec())])
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    runner
        .run(&strategy, |stream| {
            receive(&store, &stream);
            Ok(())
        })
        .unwrap();
}

#[test]
fn receive_path_answers_arbitrary_streams_without_panicking() {
    run(2048, bytes(2048));
}

#[test]
fn receive_path_answers_mutated_messages_without_panicking() {
    let stream = proptest::collection::vec(mutated(corpus(), TOKENS, 6), 1..4)
        .prop_map(|frames| frames.concat());
    run(2048, stream);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn block_check_answers_any_prefix_with_a_cid_or_an_error(
        prefix in prop_oneof![bytes(16), mutated(vec![cid_prefix(&raw_cid(b"x"))], TOKENS, 3)],
        data in bytes(64),
    ) {
        if let Ok(cid) = block_cid(&prefix, &data) {
            prop_assert_eq!(block_cid(&cid_prefix(&cid), &data).unwrap(), cid);
        }
    }
}
