//! Bitswap against peers that are not embedded nodes: raw libp2p clients
//! driven by hand on the wire, misbehaving (wrong blocks, huge wantlists,
//! never reading) or speaking an older protocol version (1.1.0, 1.0.0),
//! next to real embedded nodes that must go on being served and fetching.
//!
//! All on 127.0.0.1, on the cluster's private network; every wait has a
//! deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use futures::{AsyncWriteExt, StreamExt};
use libp2p::core::Transport;
use libp2p::core::upgrade::Version as Upgrade;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol, SwarmBuilder, noise, tcp, yamux};
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::REASK;
use super::ledger::PEER_WANTS;
use super::wire::{
    Block, LegacyBlocks, MAX_MESSAGE_BYTES, Message, PROTOCOLS, V0_PREFIX, Version, WantEntry,
    Wantlist, cid_prefix, decode_for, read_frame,
};
use crate::ipfs::embedded::{EmbeddedConfig, EmbeddedNode};
use crate::ipfs::{AddInput, AddOpts, IpfsBackend, PinOpts};
use crate::manifest::CidKey;

const SECRET: [u8; 32] = [9; 32];
const DEADLINE: Duration = Duration::from_secs(30);

/// An embedded node and what stops it.
struct Node {
    node: EmbeddedNode,
    cancel: CancellationToken,
    tasks: TaskTracker,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let node = EmbeddedNode::start(
            EmbeddedConfig::new(dir.path(), SECRET),
            cancel.clone(),
            &tasks,
        )
        .await
        .unwrap();
        Node {
            node,
            cancel,
            tasks,
            _dir: dir,
        }
    }

    async fn addr(&self) -> Multiaddr {
        self.node.listen_addrs().await.remove(0)
    }

    async fn connect_to(&self, other: &Node) {
        self.node.connect(other.addr().await).await.unwrap();
    }

    /// Adds `data` as a file (256 KiB chunks), pinned; its root.
    async fn add_file(&self, data: Vec<u8>) -> Cid {
        let added = self
            .node
            .add(
                AddInput::Reader(Box::new(std::io::Cursor::new(data))),
                AddOpts::default(),
            )
            .await
            .unwrap();
        *added.root.cid()
    }

    /// Stores `blocks` (raw CIDs) without pinning.
    async fn put_raw(&self, blocks: &[(Cid, Vec<u8>)]) {
        let blocks = blocks.to_vec();
        let root = blocks[0].0;
        self.node
            .import(false, move |sink| {
                for (c, d) in blocks {
                    sink(c, d)?;
                }
                Ok(root)
            })
            .await
            .unwrap();
    }

    async fn pin(&self, cid: Cid, recursive: bool) -> Result<(), crate::ipfs::IpfsError> {
        let opts = PinOpts {
            recursive,
            max_depth: None,
            progress_timeout: DEADLINE,
            origins: Vec::new(),
        };
        self.node
            .pin(CidKey::from_cid(cid).unwrap(), opts, None)
            .await
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.tasks.close();
        drop(self.node);
        tokio::time::timeout(DEADLINE, self.tasks.wait())
            .await
            .expect("the node did not stop");
    }
}

/// A bare libp2p peer on the cluster's private network: no Bitswap of its
/// own, only the streams the test opens and accepts.
struct RawPeer {
    id: PeerId,
    control: libp2p_stream::Control,
    cancel: CancellationToken,
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl RawPeer {
    /// Connects to `node`, accepting inbound streams of `accept`.
    async fn connect(
        node: &Node,
        accept: &[StreamProtocol],
    ) -> (RawPeer, Vec<libp2p_stream::IncomingStreams>) {
        let psk = PreSharedKey::new(SECRET);
        let mut swarm = SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_other_transport(|keypair| {
                let noise = noise::Config::new(keypair)?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                        .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                        .upgrade(Upgrade::V1)
                        .authenticate(noise)
                        .multiplex(yamux::Config::default()),
                )
            })
            .unwrap()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
            .build();
        let mut control = swarm.behaviour().new_control();
        let incoming = accept
            .iter()
            .map(|p| control.accept(p.clone()).unwrap())
            .collect();
        let id = *swarm.local_peer_id();
        swarm.dial(node.addr().await).unwrap();
        let connected = async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { .. } => return,
                    SwarmEvent::OutgoingConnectionError { error, .. } => panic!("{error}"),
                    _ => {}
                }
            }
        };
        tokio::time::timeout(DEADLINE, connected).await.unwrap();
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = swarm.select_next_some() => {}
                }
            }
        });
        let raw = RawPeer {
            id,
            control,
            cancel,
        };
        (raw, incoming)
    }

    async fn open(&self, to: &Node, protocol: StreamProtocol) -> Stream {
        self.control
            .clone()
            .open_stream(to.node.peer_id(), protocol)
            .await
            .unwrap()
    }
}

/// `/ipfs/bitswap/<v>`.
fn protocol(version: &str) -> StreamProtocol {
    PROTOCOLS
        .iter()
        .map(|(p, _)| p.clone())
        .find(|p| p.as_ref().ends_with(version))
        .unwrap()
}

async fn send(stream: &mut Stream, msg: &Message) {
    stream
        .write_all(&msg.encode_length_delimited_to_vec())
        .await
        .unwrap();
}

fn wants(entries: Vec<WantEntry>) -> Message {
    Message {
        wantlist: Some(Wantlist {
            entries,
            full: false,
        }),
        ..Message::default()
    }
}

/// The next message on `stream`, as a peer speaking `version` reads it.
async fn next(stream: &mut Stream, version: Version) -> Message {
    let frame = tokio::time::timeout(DEADLINE, read_frame(stream))
        .await
        .expect("no message in time")
        .unwrap()
        .expect("the stream ended");
    decode_for(&frame, version).unwrap()
}

/// A CIDv1 raw of `data`.
fn raw_cid(data: &[u8]) -> Cid {
    super::wire::tests::raw_cid(data)
}

/// Bytes that differ everywhere, so that every chunk is a block of its own.
fn varied(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_blocks_that_do_not_match_their_cid_is_ignored_and_others_still_deliver() {
    let ours = Node::start().await;
    let honest = Node::start().await;
    let root = honest.add_file(varied(3 << 20, 1)).await;
    // The liar connects first, so that it is known before the pin starts.
    let (liar, mut incoming) = RawPeer::connect(&ours, &[protocol("1.2.0")]).await;
    let mut to_ours = liar.open(&ours, protocol("1.2.0")).await;
    let asked = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&asked);
    tokio::spawn(async move {
        // Every want (want-have or want-block) is answered with wrong bytes
        // under the wanted CID's prefix.
        while let Some((_, mut from_ours)) = incoming[0].next().await {
            loop {
                let Ok(Some(frame)) = read_frame(&mut from_ours).await else {
                    break;
                };
                let msg = Message::decode(frame.as_slice()).unwrap();
                let payload: Vec<Block> = msg
                    .wantlist
                    .map(|w| w.entries)
                    .unwrap_or_default()
                    .iter()
                    .map(|e| Block {
                        prefix: cid_prefix(&Cid::try_from(e.cid.as_slice()).unwrap()),
                        data: Bytes::from_static(b"not the block you want"),
                    })
                    .collect();
                counted.fetch_add(payload.len(), Ordering::Relaxed);
                let answer = Message {
                    payload,
                    ..Message::default()
                };
                if to_ours
                    .write_all(&answer.encode_length_delimited_to_vec())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    // The pin starts with the liar as the only peer: it is asked for the
    // root and answers wrong bytes; then the honest node connects and says
    // `Have`. Unless the liar's answer counts as a refusal, the want waits
    // for the re-ask time before anyone else is asked for the block.
    let started = tokio::time::Instant::now();
    let node = ours.node.clone();
    let pin = tokio::spawn(async move {
        let opts = PinOpts {
            recursive: true,
            max_depth: None,
            progress_timeout: DEADLINE,
            origins: Vec::new(),
        };
        node.pin(CidKey::from_cid(root).unwrap(), opts, None).await
    });
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while ours.node.rejected_blocks() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the liar was not asked"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ours.connect_to(&honest).await;
    tokio::time::timeout(DEADLINE, pin)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < REASK,
        "the pin took {:?}",
        started.elapsed()
    );
    assert!(asked.load(Ordering::Relaxed) > 0, "the liar was asked");
    assert!(ours.node.rejected_blocks() > 0);
    drop(liar);
    ours.stop().await;
    honest.stop().await;
}

/// A wantlist message of `n` CIDs nobody has (want-block, `sendDontHave`),
/// numbered from `from`.
fn junk_wants(from: u64, n: u64) -> Message {
    wants(
        (from..from + n)
            .map(|i| {
                let mut digest = [0u8; 32];
                digest[..8].copy_from_slice(&i.to_le_bytes());
                let mh = multihash::Multihash::<64>::wrap(0x12, &digest).unwrap();
                WantEntry::new(&Cid::new_v1(0x55, mh), false, true)
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_wantlist_is_bounded_and_other_peers_are_still_served() {
    let ours = Node::start().await;
    let root = ours.add_file(varied(4 << 20, 2)).await;
    let (flooder, mut incoming) = RawPeer::connect(&ours, &[protocol("1.2.0")]).await;
    // It reads our answers (so we keep working on its wants) ...
    tokio::spawn(async move {
        while let Some((_, mut s)) = incoming[0].next().await {
            tokio::spawn(async move { while let Ok(Some(_)) = read_frame(&mut s).await {} });
        }
    });
    // ... and sends 4 wantlists of 90,000 entries each, just under 4 MiB.
    const PER_MESSAGE: u64 = 90_000;
    const MESSAGES: u64 = 4;
    let mut stream = flooder.open(&ours, protocol("1.2.0")).await;
    let first = junk_wants(0, PER_MESSAGE);
    let size = first.encoded_len();
    assert!(size > 3 << 20 && size <= MAX_MESSAGE_BYTES, "{size} bytes");
    send(&mut stream, &first).await;
    let flood = tokio::spawn(async move {
        for m in 1..MESSAGES {
            send(&mut stream, &junk_wants(m * PER_MESSAGE, PER_MESSAGE)).await;
        }
        stream
    });

    let honest = Node::start().await;
    honest.connect_to(&ours).await;
    let started = tokio::time::Instant::now();
    let bitswap = Arc::clone(&ours.node.inner.bitswap);
    let mut most = 0;
    {
        let fetch = honest.pin(root, true);
        tokio::pin!(fetch);
        loop {
            tokio::select! {
                r = &mut fetch => { r.unwrap(); break; }
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            let (queued, _) = bitswap.queued_wants(&flooder.id).unwrap_or_default();
            most = most.max(queued);
            assert!(started.elapsed() < DEADLINE, "the honest fetch stalled");
        }
    }
    let fetched_in = started.elapsed();
    let _stream = tokio::time::timeout(DEADLINE, flood)
        .await
        .unwrap()
        .unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let dropped = loop {
        let (queued, dropped) = bitswap.queued_wants(&flooder.id).unwrap();
        most = most.max(queued);
        // Most of the flood (what was not answered meanwhile).
        if dropped >= 2 * PER_MESSAGE {
            break dropped;
        }
        assert!(tokio::time::Instant::now() < deadline, "{dropped} dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(most <= PEER_WANTS, "{most} wants queued");
    assert!(dropped > 0);
    eprintln!("fetched in {fetched_in:?} during the flood");
    assert!(fetched_in < Duration::from_secs(20), "{fetched_in:?}");
    drop(flooder);
    honest.stop().await;
    ours.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_does_not_stall_answers_to_others() {
    let ours = Node::start().await;
    // 16 blocks of 1 MiB.
    let big: Vec<(Cid, Vec<u8>)> = (0..16)
        .map(|i| {
            let d = varied(1 << 20, 100 + i);
            (raw_cid(&d), d)
        })
        .collect();
    ours.put_raw(&big).await;
    let root = ours.add_file(varied(4 << 20, 3)).await;
    let (sink, mut incoming) = RawPeer::connect(&ours, &[protocol("1.2.0")]).await;
    // Accepts our streams and never reads them.
    let held = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&held);
    tokio::spawn(async move {
        let mut streams = Vec::new();
        while let Some((_, s)) = incoming[0].next().await {
            streams.push(s);
            counted.store(streams.len(), Ordering::Relaxed);
        }
    });
    let mut stream = sink.open(&ours, protocol("1.2.0")).await;
    let all: Vec<WantEntry> = big
        .iter()
        .map(|(c, _)| WantEntry::new(c, false, true))
        .collect();
    // Asks again and again: the answers pile up in front of it.
    let asking = tokio::spawn(async move {
        for _ in 0..20 {
            send(&mut stream, &wants(all.clone())).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stream
    });
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while held.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no stream to the sink"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let honest = Node::start().await;
    honest.connect_to(&ours).await;
    let started = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(20), honest.pin(root, true))
        .await
        .expect("the honest fetch stalled behind the sink")
        .unwrap();
    // A big block too, while the sink is still owed it.
    honest.pin(big[0].0, false).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    let _stream = asking.await.unwrap();
    drop(sink);
    honest.stop().await;
    ours.stop().await;
}

/// A raw peer speaking only `version`, asking `ours` for one held block
/// and one missing (in one wantlist, with `sendDontHave`) and reading the
/// answer: the block, and no presences.
async fn old_client_is_served(ours: &Node, version: &str, v: Version) {
    let held = varied(5000, 4);
    let held_cid = raw_cid(&held);
    ours.put_raw(&[(held_cid, held.clone())]).await;
    let missing = raw_cid(b"nobody has this");
    let (client, mut incoming) = RawPeer::connect(ours, &[protocol(version)]).await;
    let mut to_ours = client.open(ours, protocol(version)).await;
    send(
        &mut to_ours,
        &wants(vec![
            WantEntry::new(&held_cid, false, true),
            WantEntry::new(&missing, false, true),
        ]),
    )
    .await;
    let (_, mut from_ours) = tokio::time::timeout(DEADLINE, incoming[0].next())
        .await
        .unwrap()
        .unwrap();
    let msg = next(&mut from_ours, v).await;
    assert!(msg.block_presences.is_empty(), "{version}: no presences");
    assert_eq!(msg.payload.len(), 1, "{version}");
    assert_eq!(msg.payload[0].data, held, "{version}");
    // 1.0.0 carries raw bytes only (field 2), read back as CIDv0 blocks.
    let prefix = match v {
        Version::V100 => V0_PREFIX.to_vec(),
        _ => cid_prefix(&held_cid),
    };
    assert_eq!(msg.payload[0].prefix, prefix, "{version}");
}

/// A raw server speaking only `version` that holds `block` and answers
/// want-blocks for it as a peer of that version does (until dropped), and
/// its task, which ends with the entries it saw once it answered.
async fn old_server(
    ours: &Node,
    version: &str,
    v: Version,
    block: Vec<u8>,
) -> (RawPeer, tokio::task::JoinHandle<Vec<WantEntry>>) {
    let (server, mut incoming) = RawPeer::connect(ours, &[protocol(version)]).await;
    let to_ours = server.open(ours, protocol(version)).await;
    let cid = raw_cid(&block);
    let task = tokio::spawn(async move {
        let mut to_ours = to_ours;
        let mut seen = Vec::new();
        let (_, mut from_ours) = incoming[0].next().await.unwrap();
        loop {
            let msg = next(&mut from_ours, v).await;
            let entries = msg.wantlist.map(|w| w.entries).unwrap_or_default();
            let wanted = entries
                .iter()
                .any(|e| e.cid == cid.to_bytes() && !e.want_have());
            seen.extend(entries);
            if !wanted {
                continue;
            }
            let frame = if v == Version::V100 {
                LegacyBlocks {
                    wantlist: None,
                    blocks: vec![Bytes::from(block.clone())],
                }
                .encode_length_delimited_to_vec()
            } else {
                Message {
                    payload: vec![Block {
                        prefix: cid_prefix(&cid),
                        data: Bytes::from(block.clone()),
                    }],
                    ..Message::default()
                }
                .encode_length_delimited_to_vec()
            };
            to_ours.write_all(&frame).await.unwrap();
            to_ours.flush().await.unwrap();
            return seen;
        }
    });
    (server, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_bitswap_versions_are_served_and_fetched_from() {
    let ours = Node::start().await;
    old_client_is_served(&ours, "1.1.0", Version::V110).await;
    old_client_is_served(&ours, "1.0.0", Version::V100).await;

    for (version, v) in [("1.1.0", Version::V110), ("1.0.0", Version::V100)] {
        // Earlier raw peers are gone: the old server is the only one asked.
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !ours.node.connected_peers().await.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "raw peers linger");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let block = varied(3000, if v == Version::V100 { 5 } else { 6 });
        let cid = raw_cid(&block);
        let (_server, task) = old_server(&ours, version, v, block.clone()).await;
        tokio::time::timeout(DEADLINE, ours.pin(cid, false))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ours.node.get_block(&cid).await.unwrap(), Some(block));
        let seen = tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
        assert!(
            seen.iter().all(|e| !e.want_have() && !e.send_dont_have),
            "{version}: only want-blocks"
        );
    }
    ours.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_keeps_at_most_sixteen_bitswap_streams_to_us_and_those_still_work() {
    let ours = Node::start().await;
    let blocks: Vec<(Cid, Vec<u8>)> = (0..super::INBOUND_STREAMS + 1)
        .map(|i| {
            let d = varied(2000, 200 + i as u64);
            (raw_cid(&d), d)
        })
        .collect();
    ours.put_raw(&blocks).await;
    let (peer, mut incoming) = RawPeer::connect(&ours, &[protocol("1.2.0")]).await;
    let mut streams = Vec::new();
    for _ in 0..super::INBOUND_STREAMS {
        streams.push(peer.open(&ours, protocol("1.2.0")).await);
    }
    // Each stream is read: a want on each is answered.
    for (s, (cid, _)) in streams.iter_mut().zip(&blocks) {
        send(s, &wants(vec![WantEntry::new(cid, false, true)])).await;
    }
    let (_, mut from_ours) = tokio::time::timeout(DEADLINE, incoming[0].next())
        .await
        .unwrap()
        .unwrap();
    let mut got = Vec::new();
    while got.len() < super::INBOUND_STREAMS {
        got.extend(next(&mut from_ours, Version::V120).await.payload);
    }

    // One more is closed on arrival.
    let mut extra = peer.open(&ours, protocol("1.2.0")).await;
    let end = tokio::time::timeout(DEADLINE, read_frame(&mut extra))
        .await
        .expect("the extra stream stayed open");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    // The first ones still work.
    let (cid, data) = &blocks[super::INBOUND_STREAMS];
    send(
        &mut streams[0],
        &wants(vec![WantEntry::new(cid, false, true)]),
    )
    .await;
    let msg = next(&mut from_ours, Version::V120).await;
    assert_eq!(msg.payload[0].data, *data);
    drop(peer);
    ours.stop().await;
}
