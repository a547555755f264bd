//! Followers (issue 17): peers that hold and pin the cluster's state
//! without taking part in Raft. Three trusted in-process peers on
//! 127.0.0.1 (`cluster.trusted_peers` names them), followers started with
//! `ClusterNode::start_follower`: they receive the committed state as the
//! signed feed, from the trusted peers or from each other, verify it, and
//! can never write.

use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use pinfleet::consensus::{ClusterError, ClusterNode, NodeOptions};
use pinfleet::manifest::Owner;
use pinfleet::pinsets;
use pinfleet::state::{Command, Op};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{Peer, SECRET, apply, cid, pinset, trusted_cluster_with, wait_for};

const CLUSTER: &str = "mirror";

/// Three trusted peers that name each other in `trusted_peers`; they build
/// a snapshot every 20 entries and keep 5 behind it (the test settings), so
/// a follower that starts late finds the log purged.
async fn trusted_cluster(root: &Path) -> (Vec<Peer>, Vec<PeerId>) {
    trusted_cluster_with(3, root, |o| {
        o.cluster_name = CLUSTER.into();
        o.batch_max_pins = 100;
    })
    .await
}

struct Follower {
    node: ClusterNode,
    dir: PathBuf,
    key: Keypair,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Follower {
    async fn start(dir: &Path, key: Keypair, trusted: &[PeerId], via: Vec<Multiaddr>) -> Self {
        let mut opts = NodeOptions::new(dir.to_path_buf(), key.clone(), SECRET);
        opts.bootstrap = via;
        opts.trusted = trusted.to_vec();
        opts.cluster_name = CLUSTER.into();
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let node = ClusterNode::start_follower(opts, cancel.clone(), &tasks)
            .await
            .expect("follower starts");
        Self {
            node,
            dir: dir.to_path_buf(),
            key,
            cancel,
            tasks,
        }
    }

    /// A new follower `<root>/<name>` that dials every trusted peer.
    async fn of(root: &Path, name: &str, peers: &[Peer], trusted: &[PeerId]) -> Self {
        Self::fresh(root, name, trusted, peers.iter().map(Peer::addr).collect()).await
    }

    /// A new follower `<root>/<name>` that dials `via`.
    async fn fresh(root: &Path, name: &str, trusted: &[PeerId], via: Vec<Multiaddr>) -> Self {
        Self::start(&root.join(name), Keypair::generate_ed25519(), trusted, via).await
    }

    fn addr(&self) -> Multiaddr {
        let a: Multiaddr = self.node.node().addrs[0].parse().unwrap();
        a.with(libp2p::multiaddr::Protocol::P2p(self.node.peer_id()))
    }

    fn pins(&self) -> u64 {
        self.node.store().pin_count().unwrap()
    }

    fn applied(&self) -> u64 {
        self.node
            .store()
            .last_applied()
            .unwrap()
            .map_or(0, |l| l.index)
    }

    async fn stop(self) -> (PathBuf, Keypair) {
        self.cancel.cancel();
        self.tasks.close();
        tokio::time::timeout(Duration::from_secs(30), self.tasks.wait())
            .await
            .expect("follower stops");
        (self.dir, self.key)
    }
}

async fn stop_all(peers: Vec<Peer>) {
    for p in peers {
        p.stop().await;
    }
}

fn applied(p: &Peer) -> u64 {
    p.node
        .store()
        .last_applied()
        .unwrap()
        .map_or(0, |l| l.index)
}

async fn write_pinset(peers: &[Peer], name: &str, range: std::ops::Range<u64>) {
    pinsets::apply(&peers[0].node, apply(pinset(name, range), "r1"))
        .await
        .expect("the trusted peers write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_holds_the_committed_state_and_every_write_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let (peers, trusted) = trusted_cluster(root.path()).await;
    let f = Follower::of(root.path(), "f0", &peers, &trusted).await;
    write_pinset(&peers, "site", 0..250).await;
    wait_for("the follower holds the 250 pins", || f.pins() == 250).await;
    wait_for("the follower applied what the leader did", || {
        f.applied() == applied(&peers[0])
    })
    .await;
    // It follows the trusted peers' membership, but is not in it.
    let members: Vec<String> = f
        .node
        .members()
        .into_iter()
        .map(|(_, n)| n.peer_id)
        .collect();
    assert_eq!(members.len(), 3);
    assert!(!members.contains(&f.node.peer_id().to_string()));
    assert!(f.node.is_follower() && f.node.leader().is_none());

    // Every kind of write is refused, on the follower itself…
    let err = f
        .node
        .write(Command::Apply {
            owner: Owner::Api,
            ops: vec![Op::Release { cid: cid(1) }],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::Forbidden(_)), "{err}");
    let err = pinsets::apply(&f.node, apply(pinset("evil", 0..3), "r1"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("follower"), "{err}");
    let err = f.node.wait_ready(Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(err, ClusterError::Forbidden(_)), "{err}");
    // …and the trusted peers' state is what they wrote.
    for p in &peers {
        assert_eq!(p.node.store().pin_count().unwrap(), 250);
        assert_eq!(
            p.node
                .metrics()
                .membership_config
                .membership()
                .voter_ids()
                .count(),
            3
        );
    }
    // The trusted peers list it among their followers.
    wait_for("the leader lists the follower", || {
        peers.iter().any(|p| {
            p.node
                .followers()
                .iter()
                .any(|s| s.peer == f.node.peer_id())
        })
    })
    .await;
    f.stop().await;
    stop_all(peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_far_behind_installs_a_signed_snapshot_then_follows_new_entries() {
    let root = tempfile::tempdir().unwrap();
    let (peers, trusted) = trusted_cluster(root.path()).await;
    // 60 PinSets of 100 pins: several snapshots, the log purged behind.
    for i in 0..60u64 {
        write_pinset(&peers, &format!("s{i}"), i * 100..(i + 1) * 100).await;
    }
    let f = Follower::fresh(root.path(), "f0", &trusted, vec![peers[1].addr()]).await;
    wait_for("the follower holds the 6,000 pins", || f.pins() == 6000).await;
    assert!(
        f.node.feed_snapshot().is_some(),
        "the follower caught up through a snapshot"
    );
    assert!(f.dir.join("follow").join("offer.cbor").is_file());
    write_pinset(&peers, "more", 10_000..10_050).await;
    wait_for("the follower follows new entries", || f.pins() == 6050).await;
    assert_eq!(f.node.feed_refused(), 0);
    f.stop().await;
    stop_all(peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_restarted_from_disk_resumes_the_feed_from_its_last_index() {
    let root = tempfile::tempdir().unwrap();
    let (peers, trusted) = trusted_cluster(root.path()).await;
    let via: Vec<Multiaddr> = peers.iter().map(Peer::addr).collect();
    let f = Follower::fresh(root.path(), "f0", &trusted, via.clone()).await;
    write_pinset(&peers, "a", 0..100).await;
    wait_for("100 pins on the follower", || f.pins() == 100).await;
    let before = f.applied();
    let (dir, key) = f.stop().await;

    write_pinset(&peers, "b", 1000..1100).await;
    let f = Follower::start(&dir, key, &trusted, via).await;
    // Straight from its own disk, before it hears anything new.
    assert!(f.applied() >= before, "{} < {before}", f.applied());
    assert!(f.pins() >= 100);
    wait_for("the follower caught up", || {
        f.pins() == 200 && f.applied() == applied(&peers[0])
    })
    .await;
    assert_eq!(f.node.feed_refused(), 0);
    f.stop().await;
    stop_all(peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_that_knows_only_another_follower_gets_the_state_from_it() {
    let root = tempfile::tempdir().unwrap();
    let (peers, trusted) = trusted_cluster(root.path()).await;
    write_pinset(&peers, "site", 0..300).await;
    let a = Follower::of(root.path(), "fa", &peers, &trusted).await;
    wait_for("follower a holds the state", || a.pins() == 300).await;
    // b dials only a; what it applies is still signed by the trusted peers.
    let b = Follower::fresh(root.path(), "fb", &trusted, vec![a.addr()]).await;
    wait_for("follower b holds the state", || b.pins() == 300).await;
    assert!(
        a.node
            .followers()
            .iter()
            .any(|s| s.peer == b.node.peer_id()),
        "b pulled from a"
    );
    assert_eq!(b.node.feed_refused(), 0);
    b.stop().await;
    a.stop().await;
    stop_all(peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_refuses_a_feed_signed_by_peers_it_does_not_trust() {
    let root = tempfile::tempdir().unwrap();
    let (peers, _) = trusted_cluster(root.path()).await;
    write_pinset(&peers, "site", 0..50).await;
    // It trusts a key nobody in this cluster holds: every piece the real
    // peers serve is, to it, forged.
    let stranger = Keypair::generate_ed25519().public().to_peer_id();
    let f = Follower::fresh(
        root.path(),
        "f0",
        &[stranger],
        peers.iter().map(Peer::addr).collect(),
    )
    .await;
    wait_for("the follower refused pieces", || f.node.feed_refused() >= 2).await;
    assert_eq!(f.pins(), 0);
    assert_eq!(f.applied(), 0);
    f.stop().await;
    stop_all(peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_followers_write_join_remove_and_gc_requests_are_refused_by_the_trusted_peers() {
    use pinfleet::consensus::{RemoteFailure, Rpc, RpcReply};
    let root = tempfile::tempdir().unwrap();
    let (peers, trusted) = trusted_cluster(root.path()).await;
    write_pinset(&peers, "site", 0..20).await;
    let f = Follower::of(root.path(), "f0", &peers, &trusted).await;
    wait_for("the follower holds the state", || f.pins() == 20).await;
    let leader = peers
        .iter()
        .find(|p| p.node.is_leader())
        .expect("a leader")
        .node
        .peer_id();
    let applied_before = applied(&peers[0]);
    let term_before = peers[0].node.metrics().current_term;
    let own = f.node.node().clone();
    let requests = vec![
        Rpc::Write(Command::Apply {
            owner: Owner::Api,
            ops: vec![Op::Release { cid: cid(3) }],
        }),
        Rpc::Join(own),
        Rpc::Remove(peers[1].node.id()),
    ];
    for rpc in requests {
        let what = rpc.name().to_string();
        let reply = f.node.p2p().request(leader, rpc).await.unwrap();
        match reply {
            RpcReply::Refused(RemoteFailure::Forbidden(m)) => {
                assert!(m.contains(&f.node.peer_id().to_string()), "{what}: {m}")
            }
            other => panic!("{what} was not refused: {other:?}"),
        }
    }
    for p in &peers {
        pinfleet::ipfs::rpc::serve(&p.node, std::sync::Arc::new(pinfleet::ipfs::NoBackend));
    }
    let gc = f
        .node
        .call::<pinfleet::ipfs::rpc::Gc>(leader, &())
        .await
        .unwrap_err();
    assert!(gc.to_string().contains("trusted"), "{gc}");
    // Nothing changed: the pins, the membership, the log.
    for p in &peers {
        assert_eq!(p.node.store().pin_count().unwrap(), 20);
        assert_eq!(p.node.members().len(), 3);
    }
    // The log grew by nothing but the blank entry each new leader appends
    // (an election may happen on a loaded machine).
    let elections = peers[0].node.metrics().current_term - term_before;
    let grown = applied(&peers[0]) - applied_before;
    assert!(
        grown <= elections,
        "{grown} entries applied after the refused requests, {elections} elections"
    );
    f.stop().await;
    stop_all(peers).await;
}

/// A peer that holds the cluster secret and pretends to serve the feed: it
/// passes on a genuine signed snapshot offer (fetched from a trusted peer)
/// but sends every chunk cut in half.
async fn truncating_holder(
    trusted: PeerId,
    trusted_addr: Multiaddr,
    cancel: &CancellationToken,
    tasks: &TaskTracker,
) -> Multiaddr {
    use pinfleet::consensus::feed::{ChunkReply, PullReply, PullRequest};
    use pinfleet::consensus::{Rpc, RpcReply};
    use pinfleet::p2p::{self, P2pConfig};
    let mut config = P2pConfig::new(Keypair::generate_ed25519(), SECRET);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    let (handle, mut events) = p2p::spawn::<Rpc, RpcReply>(config, cancel.clone(), tasks)
        .await
        .unwrap();
    handle.add_address(trusted, trusted_addr).await.unwrap();
    let me = handle.local_peer_id();
    let addr = handle.listen_addrs().await.unwrap()[0]
        .clone()
        .with(libp2p::multiaddr::Protocol::P2p(me));
    tasks.spawn(async move {
        while let Some(req) = events.inbound.recv().await {
            let answer = match req.request {
                Rpc::FeedPull(_) => {
                    let ask = PullRequest {
                        cluster: CLUSTER.into(),
                        after: 0,
                        holds: None,
                        addrs: Vec::new(),
                    };
                    match handle.request(trusted, Rpc::FeedPull(ask)).await {
                        Ok(RpcReply::FeedPull(PullReply::Snapshot { offer, .. })) => {
                            RpcReply::FeedPull(PullReply::Snapshot {
                                offer,
                                sources: Vec::new(),
                            })
                        }
                        other => panic!("the trusted peer offered no snapshot: {other:?}"),
                    }
                }
                Rpc::FeedChunk(chunk) => match handle.request(trusted, Rpc::FeedChunk(chunk)).await
                {
                    Ok(RpcReply::FeedChunk(ChunkReply::Data(mut bytes))) => {
                        let half = bytes.len() / 2;
                        bytes.truncate(half);
                        RpcReply::FeedChunk(ChunkReply::Data(bytes))
                    }
                    other => panic!("the trusted peer sent no chunk: {other:?}"),
                },
                _ => RpcReply::Refused(pinfleet::consensus::RemoteFailure::Other("no".into())),
            };
            let _ = req.reply.send(answer);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_refuses_a_truncated_snapshot_from_a_peer_and_applies_nothing_of_it() {
    let root = tempfile::tempdir().unwrap();
    let (peers, trusted) = trusted_cluster(root.path()).await;
    // Enough entries that the trusted peers snapshot and purge their logs.
    for i in 0..30u64 {
        write_pinset(&peers, &format!("s{i}"), i * 10..(i + 1) * 10).await;
    }
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let hostile =
        truncating_holder(peers[0].node.peer_id(), peers[0].addr(), &cancel, &tasks).await;
    // The follower knows only the hostile peer.
    let f = Follower::fresh(root.path(), "f0", &trusted, vec![hostile]).await;
    wait_for("the follower refused the cut chunks", || {
        f.node.feed_refused() >= 1
    })
    .await;
    assert_eq!(f.pins(), 0);
    assert_eq!(f.applied(), 0);
    assert!(f.node.feed_snapshot().is_none());
    f.stop().await;
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    stop_all(peers).await;
}
