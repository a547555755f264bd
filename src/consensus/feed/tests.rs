//! What a follower accepts from the feed, and what it refuses: forged,
//! altered, truncated, replayed, reordered and foreign pieces.

use libp2p::identity::Keypair;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, SnapshotMeta};

use super::*;

fn entry(index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 7), index),
        payload: EntryPayload::Blank,
    }
}

fn piece(key: &Keypair, cluster: &str, first: u64, last: u64) -> Signed {
    let body = EntriesBody {
        cluster: cluster.into(),
        first,
        last,
        entries: (first..=last).map(entry).collect(),
    };
    Signed::sign(PieceKind::Entries, &body, key).unwrap()
}

fn trust(keys: &[&Keypair]) -> Trusted {
    Trusted {
        cluster: "mirror".into(),
        peers: keys.iter().map(|k| k.public().to_peer_id()).collect(),
    }
}

#[test]
fn entries_signed_by_a_trusted_peer_are_accepted_from_the_next_index_on() {
    let key = Keypair::generate_ed25519();
    let t = trust(&[&key]);
    let got = t.accept_entries(&piece(&key, "mirror", 1, 5), 0).unwrap();
    assert_eq!(got.len(), 5);
    // A piece that overlaps what is applied brings only what is new.
    let got = t.accept_entries(&piece(&key, "mirror", 3, 9), 5).unwrap();
    let indexes: Vec<u64> = got.iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, vec![6, 7, 8, 9]);
}

#[test]
fn a_piece_signed_by_a_key_outside_the_trusted_list_is_refused() {
    let trusted = Keypair::generate_ed25519();
    let stranger = Keypair::generate_ed25519();
    let t = trust(&[&trusted]);
    let err = t
        .accept_entries(&piece(&stranger, "mirror", 1, 3), 0)
        .unwrap_err();
    assert_eq!(err, FeedError::Untrusted(stranger.public().to_peer_id()));
}

#[test]
fn a_forged_piece_claiming_a_trusted_key_is_refused() {
    let trusted = Keypair::generate_ed25519();
    let forger = Keypair::generate_ed25519();
    let t = trust(&[&trusted]);
    // The forger's entries, its own signature, the trusted peer's key.
    let mut forged = piece(&forger, "mirror", 1, 3);
    forged.key = ByteBuf::from(trusted.public().encode_protobuf());
    assert_eq!(
        t.accept_entries(&forged, 0).unwrap_err(),
        FeedError::BadSignature
    );
    // A genuine signature moved onto other entries.
    let genuine = piece(&trusted, "mirror", 1, 3);
    let mut swapped = piece(&forger, "mirror", 1, 4);
    swapped.key = genuine.key.clone();
    swapped.signature = genuine.signature.clone();
    assert_eq!(
        t.accept_entries(&swapped, 0).unwrap_err(),
        FeedError::BadSignature
    );
    // A genuine signature of another kind of piece.
    let mut rekinded = genuine.clone();
    rekinded.kind = PieceKind::Snapshot;
    assert_eq!(
        t.accept_offer(&rekinded, 0).unwrap_err(),
        FeedError::BadSignature
    );
}

#[test]
fn a_truncated_or_altered_piece_is_refused() {
    let key = Keypair::generate_ed25519();
    let t = trust(&[&key]);
    let genuine = piece(&key, "mirror", 1, 20);
    let mut cut = genuine.clone();
    let half = cut.body.len() / 2;
    cut.body.truncate(half);
    assert_eq!(
        t.accept_entries(&cut, 0).unwrap_err(),
        FeedError::BadSignature
    );
    let mut altered = genuine.clone();
    let last = altered.body.len() - 1;
    altered.body[last] ^= 1;
    assert_eq!(
        t.accept_entries(&altered, 0).unwrap_err(),
        FeedError::BadSignature
    );
    let mut short_sig = genuine;
    short_sig.signature.truncate(10);
    assert_eq!(
        t.accept_entries(&short_sig, 0).unwrap_err(),
        FeedError::BadSignature
    );
}

#[test]
fn a_replayed_piece_is_refused() {
    let key = Keypair::generate_ed25519();
    let t = trust(&[&key]);
    let old = piece(&key, "mirror", 1, 5);
    assert_eq!(
        t.accept_entries(&old, 5).unwrap_err(),
        FeedError::Replay {
            last: 5,
            applied: 5
        }
    );
    assert!(matches!(
        t.accept_entries(&old, 9).unwrap_err(),
        FeedError::Replay { .. }
    ));
}

#[test]
fn a_piece_out_of_order_is_refused_until_the_gap_is_filled() {
    let key = Keypair::generate_ed25519();
    let t = trust(&[&key]);
    let later = piece(&key, "mirror", 8, 12);
    assert_eq!(
        t.accept_entries(&later, 5).unwrap_err(),
        FeedError::Gap { first: 8, next: 6 }
    );
    assert_eq!(t.accept_entries(&later, 7).unwrap().len(), 5);
}

#[test]
fn a_piece_whose_entries_do_not_match_its_range_is_refused() {
    let key = Keypair::generate_ed25519();
    let t = trust(&[&key]);
    // Signed by a trusted key, but the body lies about its entries (a
    // trusted peer never signs this; the follower checks anyway).
    let body = EntriesBody {
        cluster: "mirror".into(),
        first: 1,
        last: 3,
        entries: vec![entry(1), entry(3), entry(2)],
    };
    let p = Signed::sign(PieceKind::Entries, &body, &key).unwrap();
    assert_eq!(
        t.accept_entries(&p, 0).unwrap_err(),
        FeedError::Inconsistent { first: 1, last: 3 }
    );
}

#[test]
fn a_piece_of_another_cluster_is_refused() {
    let key = Keypair::generate_ed25519();
    let t = trust(&[&key]);
    assert!(matches!(
        t.accept_entries(&piece(&key, "other", 1, 2), 0)
            .unwrap_err(),
        FeedError::OtherCluster { .. }
    ));
}

#[test]
fn a_snapshot_offer_older_than_the_state_is_refused_as_a_replay() {
    let key = Keypair::generate_ed25519();
    let t = trust(&[&key]);
    let offer = SnapshotOffer {
        cluster: "mirror".into(),
        meta: SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(2, 7), 40)),
            last_membership: Default::default(),
            snapshot_id: "2-40-1".into(),
        },
        size: 1234,
        sha256: [7; 32],
        chunks: vec![[8; 32]],
    };
    let p = Signed::sign(PieceKind::Snapshot, &offer, &key).unwrap();
    assert_eq!(t.accept_offer(&p, 10).unwrap(), offer);
    assert_eq!(
        t.accept_offer(&p, 40).unwrap_err(),
        FeedError::Replay {
            last: 40,
            applied: 40
        }
    );
}

#[test]
fn a_head_announcement_is_accepted_only_from_a_trusted_signer() {
    let trusted = Keypair::generate_ed25519();
    let other = Keypair::generate_ed25519();
    let t = trust(&[&trusted]);
    let head = HeadBody {
        cluster: "mirror".into(),
        applied: 99,
    };
    let good = Signed::sign(PieceKind::Head, &head, &trusted).unwrap();
    assert_eq!(t.accept_head(&good).unwrap().1.applied, 99);
    let bad = Signed::sign(PieceKind::Head, &head, &other).unwrap();
    assert!(t.accept_head(&bad).is_err());
}

#[test]
fn each_snapshot_chunk_is_checked_against_the_signed_offer() {
    use sha2::{Digest, Sha256};
    let key = Keypair::generate_ed25519();
    let t = trust(&[&key]);
    let file: Vec<u8> = (0..(CHUNK_BYTES + 100)).map(|i| (i % 251) as u8).collect();
    let (first, second) = file.split_at(CHUNK_BYTES as usize);
    let offer = SnapshotOffer {
        cluster: "mirror".into(),
        meta: SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 7), 9)),
            last_membership: Default::default(),
            snapshot_id: "1-9-1".into(),
        },
        size: file.len() as u64,
        sha256: Sha256::digest(&file).into(),
        chunks: vec![Sha256::digest(first).into(), Sha256::digest(second).into()],
    };
    let p = Signed::sign(PieceKind::Snapshot, &offer, &key).unwrap();
    let offer = t.accept_offer(&p, 0).unwrap();
    assert!(offer.chunk_matches(0, first));
    assert!(offer.chunk_matches(CHUNK_BYTES, second));
    // Altered, cut short, misplaced, past the end: refused.
    let mut bad = first.to_vec();
    bad[5] ^= 1;
    assert!(!offer.chunk_matches(0, &bad));
    assert!(!offer.chunk_matches(0, &first[..100]));
    assert!(!offer.chunk_matches(CHUNK_BYTES, first));
    assert!(!offer.chunk_matches(7, &first[7..]));
    assert!(!offer.chunk_matches(2 * CHUNK_BYTES, b"x"));
    // An offer whose chunk list does not cover its size is refused.
    let mut short = offer.clone();
    short.chunks.pop();
    let p = Signed::sign(PieceKind::Snapshot, &short, &key).unwrap();
    assert!(matches!(
        t.accept_offer(&p, 0).unwrap_err(),
        FeedError::SnapshotMismatch(_)
    ));
}
