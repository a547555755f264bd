//! Real peers in one process: p2p over 127.0.0.1, Raft on disk, the shared
//! state replicated. Every wait has a deadline; none is a fixed sleep.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use pinfleet::consensus::{ClusterError, ClusterNode, NodeOptions};
use pinfleet::manifest::{DesiredPinSet, Owner, PinOptions, PinSetId, PinSpec};
use pinfleet::pinsets::{self, PinSetApply};
use pinfleet::plan::PruneGuard;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const SECRET: [u8; 32] = [42u8; 32];
const DEADLINE: Duration = Duration::from_secs(30);

/// One running peer and what it needs to be stopped or restarted.
pub struct Peer {
    pub node: ClusterNode,
    pub dir: PathBuf,
    pub keypair: Keypair,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Peer {
    pub async fn start(
        dir: &Path,
        keypair: Keypair,
        secret: [u8; 32],
        bootstrap: Vec<Multiaddr>,
        batch: usize,
    ) -> Result<Peer, ClusterError> {
        Self::start_with(dir, keypair, secret, bootstrap, None, |o| {
            o.batch_max_pins = batch;
        })
        .await
    }

    /// Starts a stopped peer again from `dir` with its identity, on a
    /// fresh port (the one it had may have been taken while it was down),
    /// dialing `members` (running peers) as it starts: they learn its new
    /// address from that connection, and the leader replicates to it over
    /// it. Its Raft state is kept, so this is no join.
    pub async fn restart(
        dir: &Path,
        keypair: Keypair,
        members: &[&Peer],
        batch: usize,
    ) -> Result<Peer, ClusterError> {
        let via = members.iter().map(|p| p.addr()).collect();
        Self::start(dir, keypair, SECRET, via, batch).await
    }

    /// Starts a peer with the test settings, then `configure`d.
    pub async fn start_with(
        dir: &Path,
        keypair: Keypair,
        secret: [u8; 32],
        bootstrap: Vec<Multiaddr>,
        listen: Option<Multiaddr>,
        configure: impl FnOnce(&mut NodeOptions),
    ) -> Result<Peer, ClusterError> {
        let mut opts = NodeOptions::new(dir.to_path_buf(), keypair.clone(), secret);
        if let Some(l) = listen {
            opts.listen = vec![l];
        }
        opts.bootstrap = bootstrap;
        opts.heartbeat_interval = Duration::from_millis(100);
        opts.election_timeout_min = Duration::from_millis(500);
        opts.election_timeout_max = Duration::from_millis(1000);
        opts.write_timeout = Duration::from_secs(5);
        opts.snapshot_logs_since_last = 20;
        opts.max_in_snapshot_log_to_keep = 5;
        configure(&mut opts);
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let node = ClusterNode::start(opts, cancel.clone(), &tasks).await?;
        Ok(Peer {
            node,
            dir: dir.to_path_buf(),
            keypair,
            cancel,
            tasks,
        })
    }

    pub fn addr(&self) -> Multiaddr {
        let a: Multiaddr = self.node.node().addrs[0].parse().unwrap();
        a.with(libp2p::multiaddr::Protocol::P2p(self.node.peer_id()))
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        self.tasks.close();
        tokio::time::timeout(DEADLINE, self.tasks.wait())
            .await
            .expect("peer tasks stop");
    }
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn trace() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
    });
}

/// Waits until `check` holds, polling; fails the test at the deadline.
pub async fn wait_for<F: FnMut() -> bool>(what: &str, mut check: F) {
    let end = tokio::time::Instant::now() + DEADLINE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn cluster(n: usize, root: &Path, batch: usize) -> Vec<Peer> {
    cluster_with(n, root, |o| o.batch_max_pins = batch).await
}

/// `n` peers with the test settings, then `configure`d.
pub async fn cluster_with(
    n: usize,
    root: &Path,
    configure: impl Fn(&mut NodeOptions),
) -> Vec<Peer> {
    start_peers(n, root, false, configure).await.0
}

/// `n` peers whose `cluster.trusted_peers` names exactly the `n` of them,
/// then `configure`d; with their ids.
pub async fn trusted_cluster_with(
    n: usize,
    root: &Path,
    configure: impl Fn(&mut NodeOptions),
) -> (Vec<Peer>, Vec<libp2p::PeerId>) {
    start_peers(n, root, true, configure).await
}

/// Peer 0 bootstraps, the others join it; returns once every peer is a
/// voter everywhere.
async fn start_peers(
    n: usize,
    root: &Path,
    trusting: bool,
    configure: impl Fn(&mut NodeOptions),
) -> (Vec<Peer>, Vec<libp2p::PeerId>) {
    trace();
    let keys: Vec<Keypair> = (0..n).map(|_| Keypair::generate_ed25519()).collect();
    let ids: Vec<libp2p::PeerId> = keys.iter().map(|k| k.public().to_peer_id()).collect();
    let mut peers: Vec<Peer> = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        let bootstrap = peers.first().map(|p| vec![p.addr()]).unwrap_or_default();
        let p = Peer::start_with(
            &root.join(format!("peer{i}")),
            key,
            SECRET,
            bootstrap,
            None,
            |o| {
                if trusting {
                    o.trusted = ids.clone();
                }
                configure(o);
            },
        )
        .await
        .unwrap();
        peers.push(p);
    }
    for p in &peers {
        p.node.wait_ready(DEADLINE).await.unwrap();
    }
    wait_for("every peer a voter everywhere", || {
        peers.iter().all(|p| {
            p.node
                .metrics()
                .membership_config
                .membership()
                .voter_ids()
                .count()
                == n
        })
    })
    .await;
    (peers, ids)
}

pub use pinfleet::testkit::seq_cid as cid;

pub fn pinset(name: &str, range: std::ops::Range<u64>) -> DesiredPinSet {
    pinfleet::testkit::seq_pinset("default", name, range)
}

pub fn apply(ps: DesiredPinSet, revision: &str) -> PinSetApply {
    PinSetApply {
        pinset: ps,
        revision: revision.into(),
        source: "test".into(),
        guard: PruneGuard::default(),
        dry_run: false,
    }
}

pub fn leader_index(peers: &[Peer]) -> usize {
    let leader = peers[0].node.leader().unwrap();
    peers.iter().position(|p| p.node.id() == leader).unwrap()
}

fn count(p: &Peer) -> u64 {
    p.node.store().pin_count().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_peers_replicate_an_applied_pinset_and_reapply_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let peers = cluster(3, root.path(), 10_000).await;
    let follower = (leader_index(&peers) + 1) % 3;

    // Written through a follower: forwarded to the leader.
    let r = pinsets::apply(&peers[follower].node, apply(pinset("site", 0..50), "r1"))
        .await
        .unwrap();
    assert_eq!((r.add, r.entries, r.created), (50, 1, 50));
    for p in &peers {
        wait_for("50 pins everywhere", || count(p) == 50).await;
    }
    let again = pinsets::apply(&peers[follower].node, apply(pinset("site", 0..50), "r1"))
        .await
        .unwrap();
    assert_eq!(
        (again.add, again.entries),
        (0, 0),
        "re-applying a revision writes nothing"
    );

    // Drop 10, add 5: plan against the shared state, from another peer.
    let r = pinsets::apply(
        &peers[(follower + 1) % 3].node,
        apply(pinset("site", 10..55), "r2"),
    )
    .await
    .unwrap();
    assert_eq!((r.add, r.release, r.removed), (5, 10, 10));
    for p in &peers {
        wait_for("45 pins everywhere", || count(p) == 45).await;
        assert!(p.node.store().get(&cid(3)).unwrap().is_none());
        let pin = p.node.store().get(&cid(54)).unwrap().unwrap();
        assert_eq!(
            pin.owners.keys().cloned().collect::<Vec<_>>(),
            vec![Owner::pinset(PinSetId::new("default", "site"))]
        );
    }
    for p in peers {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_revision_is_chunked_but_appears_at_once() {
    let root = tempfile::tempdir().unwrap();
    let peers = cluster(3, root.path(), 100).await;
    let r = pinsets::apply(&peers[0].node, apply(pinset("big", 0..1050), "r1"))
        .await
        .unwrap();
    assert_eq!(r.entries, 11, "10 staged chunks and a commit");
    for p in &peers {
        wait_for("1050 pins", || count(p) == 1050).await;
    }
    // Staged chunks are invisible: a revision that is never committed leaves no pins.
    let owner = Owner::pinset(PinSetId::new("default", "ghost"));
    let ops = (5000..5100)
        .map(|i| pinfleet::state::Op::Set {
            cid: cid(i),
            written_as: None,
            spec: PinSpec {
                name: String::new(),
                options: Arc::new(PinOptions::default()),
            },
        })
        .collect();
    peers[0]
        .node
        .write(pinfleet::state::Command::Stage {
            owner: owner.clone(),
            revision: 7,
            seq: 0,
            ops,
        })
        .await
        .unwrap();
    assert_eq!(count(&peers[0]), 1050);
    let out = peers[0]
        .node
        .write(pinfleet::state::Command::Commit {
            owner,
            revision: 7,
            base: None,
            staged: 2,
            ops: vec![],
            record: None,
        })
        .await
        .unwrap();
    assert!(out.refused.is_some(), "a commit missing chunks is refused");
    assert_eq!(count(&peers[0]), 1050);
    for p in peers {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revision_too_large_in_bytes_for_one_entry_is_split_and_an_oversized_pin_refused() {
    let root = tempfile::tempdir().unwrap();
    // Entries of a whole MiB each: messages that size need more than the
    // 100 ms heartbeat of the other tests in an unoptimised build.
    let peers = cluster_with(3, root.path(), |o| {
        o.heartbeat_interval = Duration::from_millis(1000);
        o.election_timeout_min = Duration::from_millis(3000);
        o.election_timeout_max = Duration::from_millis(6000);
        o.write_timeout = Duration::from_secs(30);
    })
    .await;
    // 300 pins of ~10 KB each: ~3 MB, far fewer pins than batch_max_pins.
    let mut wide = pinset("wide", 0..300);
    for (i, pin) in wide.pins.values_mut().enumerate() {
        pin.spec.name = format!("{i}-{}", "n".repeat(10_000));
    }
    let r = pinsets::apply(&peers[1].node, apply(wide, "r1"))
        .await
        .unwrap();
    let max = pinfleet::consensus::MAX_ENTRY_BYTES;
    assert!(
        r.entries > 300 * 10_000 / max as u64,
        "{} entries for ~3 MB of pins",
        r.entries
    );
    for p in &peers {
        wait_for("300 wide pins everywhere", || count(p) == 300).await;
    }

    // One pin larger than an entry: refused by name, nothing written.
    let mut huge = pinset("huge", 1000..1010);
    huge.pins.get_mut(&cid(1004)).unwrap().spec.name = "n".repeat(max + 1);
    let err = pinsets::apply(&peers[0].node, apply(huge, "r1"))
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::TooLarge(_)), "{err:?}");
    assert!(err.to_string().contains(&cid(1004).to_string()), "{err}");
    let huge = Owner::pinset(PinSetId::new("default", "huge"));
    assert!(peers[0].node.store().pinset(&huge).unwrap().is_none());
    assert_eq!(count(&peers[0]), 300);

    // Any other command over the limit is refused before it is proposed.
    let err = peers[2]
        .node
        .write(pinfleet::state::Command::SetConditions {
            owner: huge,
            source: "s".repeat(max),
            revision: None,
            conditions: Vec::new(),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::TooLarge(_)), "{err:?}");
    for p in peers {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_the_leader_elects_another_and_a_restarted_peer_catches_up() {
    let root = tempfile::tempdir().unwrap();
    let mut peers = cluster(3, root.path(), 10_000).await;
    pinsets::apply(&peers[0].node, apply(pinset("a", 0..20), "r1"))
        .await
        .unwrap();
    for p in &peers {
        wait_for("20 pins", || count(p) == 20).await;
    }
    let old = peers.remove(leader_index(&peers));
    let (old_dir, old_key, old_id) = (old.dir.clone(), old.keypair.clone(), old.node.id());
    old.stop().await;
    wait_for("a new leader", || {
        peers[0].node.leader().is_some_and(|l| l != old_id)
    })
    .await;

    // Acknowledged writes continue with two of three peers, and enough of
    // them to force snapshots and log compaction.
    for rev in 0..30u64 {
        pinsets::apply(
            &peers[0].node,
            apply(pinset("a", rev..20 + rev), &format!("r{}", rev + 2)),
        )
        .await
        .unwrap();
    }
    // The old leader restarts from its directory and catches up (by snapshot).
    // Same directory, same identity: as a restarted daemon.
    let members: Vec<&Peer> = peers.iter().collect();
    let back = Peer::restart(&old_dir, old_key, &members, 10_000)
        .await
        .unwrap();
    assert_eq!(back.node.id(), old_id);
    wait_for("restarted peer caught up", || {
        back.node.store().get(&cid(48)).unwrap().is_some()
            && back.node.store().get(&cid(28)).unwrap().is_none()
            && count(&back) == 20
    })
    .await;
    back.stop().await;
    for p in peers {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_quorum_writes_fail_fast_and_nothing_acknowledged_is_lost() {
    let root = tempfile::tempdir().unwrap();
    let mut peers = cluster(3, root.path(), 10_000).await;
    pinsets::apply(&peers[0].node, apply(pinset("q", 0..10), "r1"))
        .await
        .unwrap();
    let survivor = peers.remove(0);
    for p in peers {
        p.stop().await;
    }
    // The survivor notices it is alone: writes are refused, quickly and clearly.
    let started = tokio::time::Instant::now();
    let mut last = None;
    while started.elapsed() < DEADLINE {
        match pinsets::apply(&survivor.node, apply(pinset("q", 0..11), "r2")).await {
            Err(e) if e.is_unavailable() => {
                last = Some(e);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let e = last.expect("writes refused without quorum");
    assert!(e.is_unavailable(), "{e}");
    // The acknowledged revision is still there.
    assert_eq!(count(&survivor), 10);
    survivor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_with_another_secret_cannot_join() {
    let root = tempfile::tempdir().unwrap();
    let peers = cluster(1, root.path(), 10_000).await;
    let intruder = Peer::start(
        &root.path().join("intruder"),
        Keypair::generate_ed25519(),
        [1u8; 32],
        vec![peers[0].addr()],
        10_000,
    )
    .await
    .unwrap();
    assert!(
        intruder
            .node
            .wait_ready(Duration::from_secs(3))
            .await
            .is_err()
    );
    assert_eq!(peers[0].node.members().len(), 1);
    intruder.stop().await;
    for p in peers {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_a_peer_shrinks_the_membership() {
    let root = tempfile::tempdir().unwrap();
    let peers = cluster(3, root.path(), 10_000).await;
    let victim = peers[2].node.id();
    peers[1].node.remove_peer(victim).await.unwrap();
    wait_for("two members", || {
        peers[0].node.members().len() == 2 && peers[1].node.members().len() == 2
    })
    .await;
    pinsets::apply(&peers[0].node, apply(pinset("after", 0..3), "r1"))
        .await
        .unwrap();
    for p in peers {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_suspended_pinset_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let peers = cluster(1, root.path(), 10_000).await;
    pinsets::apply(&peers[0].node, apply(pinset("s", 0..10), "r1"))
        .await
        .unwrap();
    let mut suspended = pinset("s", 5..20);
    suspended.suspend = true;
    let r = pinsets::apply(&peers[0].node, apply(suspended, "r2"))
        .await
        .unwrap();
    assert!(r.suspended);
    assert_eq!(
        (r.add, r.release, r.entries),
        (10, 5, 0),
        "plan shown, nothing written"
    );
    assert!(peers[0].node.store().get(&cid(0)).unwrap().is_some());
    assert!(peers[0].node.store().get(&cid(15)).unwrap().is_none());
    for p in peers {
        p.stop().await;
    }
}

/// `POST /pinsets/{ns}/{name}/reconcile` on a follower is forwarded to the
/// leader, whose controller owns the request; `wait=true` answers when that
/// controller marks it handled, 504 when it does not in time.
#[tokio::test(flavor = "multi_thread")]
async fn reconcile_now_sent_to_a_follower_reaches_the_leader() {
    use pinfleet::api::{ApiState, serve};
    use pinfleet::controller::ReconcileRequests;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SOURCE: &str = "dir:/srv/mirror";
    let root = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let mut listeners = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..3 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        urls.push(format!("http://{}", l.local_addr().unwrap()));
        listeners.push(l);
    }
    let next = AtomicUsize::new(0);
    let nodes = pinfleet::testkit::start_cluster(3, root.path(), &cancel, &tasks, |o| {
        o.api_url = urls[next.fetch_add(1, Ordering::SeqCst)].clone();
    })
    .await
    .unwrap();
    // Every peer runs "the same controller"; only the leader's may be asked.
    let mut requests = Vec::new();
    for (node, listener) in nodes.iter().zip(listeners) {
        let r = ReconcileRequests::default();
        let mut state = ApiState::new(node.clone(), "0.0.0-it", "p");
        state.reconcile_now = Some(Arc::new(BTreeMap::from([(SOURCE.to_string(), r.clone())])));
        requests.push(r);
        tokio::spawn(serve(listener, state, cancel.clone()));
    }
    let http = crate::support::http();
    let put = http
        .put(
            reqwest::Url::parse_with_params(
                &format!("{}/pinsets/it/forwarded", urls[0]),
                [("source", SOURCE)],
            )
            .unwrap(),
        )
        .body(
            "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: forwarded\n  namespace: it\nspec:\n  pins: []\n",
        )
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{put:?}");

    let leader = nodes.iter().position(|n| n.is_leader()).unwrap();
    let follower = (leader + 1) % 3;
    // The follower may not have applied the PinSet yet: the leader reads
    // its own state, so only the routing matters here.
    let queued = http
        .post(format!("{}/pinsets/it/forwarded/reconcile", urls[follower]))
        .send()
        .await
        .unwrap();
    assert_eq!(queued.status().as_u16(), 202);
    let answer: serde_json::Value = queued.json().await.unwrap();
    assert_eq!(answer["source"], SOURCE);
    assert_eq!(answer["ticket"], 1);
    let pending: Vec<bool> = requests.iter().map(ReconcileRequests::pending).collect();
    let mut expected = vec![false; 3];
    expected[leader] = true;
    assert_eq!(pending, expected, "only the leader's controller was asked");

    // Nobody handles it: the wait ends with 504, named.
    let timed_out = http
        .post(format!(
            "{}/pinsets/it/forwarded/reconcile?wait=true&timeout=200ms",
            urls[follower]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(timed_out.status().as_u16(), 504);

    // A "controller" that handles requests: wait=true answers 200, handled.
    let r = requests[leader].clone();
    tokio::spawn(async move {
        loop {
            r.wait_pending().await;
            r.mark_handled(r.latest());
        }
    });
    let done = http
        .post(format!(
            "{}/pinsets/it/forwarded/reconcile?wait=true",
            urls[follower]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status().as_u16(), 200);
    let answer: serde_json::Value = done.json().await.unwrap();
    assert_eq!(answer["handled"], true);

    let missing = http
        .post(format!("{}/pinsets/it/missing/reconcile", urls[follower]))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);

    cancel.cancel();
    tasks.close();
    tasks.wait().await;
}

/// A layer's service method, registered on one peer by name, is called from
/// another peer with typed request and reply; the handler's error reaches
/// the caller, and a peer that does not serve the method says which.
#[tokio::test(flavor = "multi_thread")]
async fn a_service_method_is_served_by_the_peer_that_registered_it() {
    use pinfleet::consensus::{CallError, Method, RemoteFailure};

    struct Shout;
    impl Method for Shout {
        const NAME: &'static str = "it.shout";
        type Request = String;
        type Reply = String;
    }

    let root = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let nodes = pinfleet::testkit::start_cluster(2, root.path(), &cancel, &tasks, |_| {})
        .await
        .unwrap();
    nodes[1].serve::<Shout, _, _>(|s: String| async move {
        if s == "quiet" {
            Err("refused: too quiet".to_string())
        } else {
            Ok(s.to_uppercase())
        }
    });
    let (a, b) = (&nodes[0], &nodes[1]);
    assert_eq!(
        a.call::<Shout>(b.peer_id(), &"hello".into()).await.unwrap(),
        "HELLO"
    );
    match a.call::<Shout>(b.peer_id(), &"quiet".into()).await {
        Err(CallError::Remote(RemoteFailure::Other(m))) => assert_eq!(m, "refused: too quiet"),
        other => panic!("expected the handler's error, got {other:?}"),
    }
    let err = b
        .call::<Shout>(a.peer_id(), &"hello".into())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "this peer does not serve it.shout");
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
}
