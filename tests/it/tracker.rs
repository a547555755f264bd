//! Pins reach IPFS: three real peers, each with its own mock Kubo, and the
//! per-peer tracker doing the work. Statuses are read the way the REST API
//! reads them (the status service, fanned out over RPC).

use std::sync::Arc;
use std::time::Duration;

use pinfleet::allocator::informer::InformerConfig;
use pinfleet::ipfs::KuboClient;
use pinfleet::manifest::{PinOptions, PinSpec, ReplicationFactors};
use pinfleet::pinsets;
use pinfleet::state::Command;
use pinfleet::testkit::MockKubo;
use pinfleet::tracker::{StatusService, TrackerConfig};
use pinfleet::wire::{GlobalPinInfo, TrackerStatus};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{Peer, apply, cid, cluster, pinset, wait_for};

struct Node {
    peer: Peer,
    kubo: MockKubo,
    status: Arc<StatusService>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

async fn tracked(n: usize, root: &std::path::Path) -> Vec<Node> {
    tracked_tagged(n, root, &[]).await
}

/// Peers with trackers and informers; `tags[i]` are peer i's informer tags.
async fn tracked_tagged(n: usize, root: &std::path::Path, tags: &[&[(&str, &str)]]) -> Vec<Node> {
    tracked_with(n, root, tags, Duration::from_millis(200)).await
}

/// [`tracked_tagged`] with the leader's allocation check every `check`.
async fn tracked_with(
    n: usize,
    root: &std::path::Path,
    tags: &[&[(&str, &str)]],
    check: Duration,
) -> Vec<Node> {
    let peers = cluster(n, root, 10_000).await;
    let mut out = Vec::new();
    let mut views = Vec::new();
    for peer in peers {
        let (kubo, url) = MockKubo::start().await.unwrap();
        let backend = Arc::new(KuboClient::new(&url, Duration::from_secs(5)).unwrap());
        let config = crate::support::tracker_config(
            Duration::from_secs(1),
            Duration::from_millis(100),
            Duration::from_millis(400),
        );
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let status = pinfleet::daemon::start_tracking(
            &peer.node,
            backend.clone(),
            config,
            "t".into(),
            &cancel,
            &tasks,
        )
        .unwrap();
        let mut informer = InformerConfig::new(ReplicationFactors { min: -1, max: -1 });
        informer.interval = Duration::from_millis(200);
        informer.check_interval = check;
        informer.grace = Duration::from_millis(1000);
        if let Some(t) = tags.get(out.len()) {
            informer.tags = t
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        }
        views.push(pinfleet::allocator::informer::spawn(
            peer.node.clone(),
            backend,
            status.tracker().clone(),
            informer,
            cancel.clone(),
            &tasks,
        ));
        out.push(Node {
            peer,
            kubo,
            status,
            cancel,
            tasks,
        });
    }
    // Ready means allocatable, as `testbed up`: pins are allocated as they
    // are written, by whichever peer leads, with the metrics it has.
    wait_for("every peer's informer knows every peer", || {
        let now = chrono::Utc::now().timestamp_millis();
        views.iter().all(|v| {
            let m = v.lock().unwrap();
            let live = m.peers().filter(|p| {
                m.get(p, pinfleet::allocator::FREESPACE)
                    .is_some_and(|x| x.is_usable(now))
            });
            live.count() == n
        })
    })
    .await;
    out
}

async fn stop(nodes: Vec<Node>) {
    for n in nodes {
        n.cancel.cancel();
        n.tasks.close();
        n.tasks.wait().await;
        n.peer.stop().await;
    }
}

async fn global(node: &Node, i: u64) -> GlobalPinInfo {
    let pin = node
        .peer
        .node
        .store()
        .get(&cid(i))
        .unwrap()
        .expect("pin in state");
    node.status.global(&[pin]).await.unwrap().pop().unwrap()
}

fn count(info: &GlobalPinInfo, s: TrackerStatus) -> usize {
    info.peer_map.values().filter(|p| p.status == s).count()
}

/// Polls an async condition until it holds (deadline in `wait_for`).
macro_rules! eventually {
    ($what:expr, $cond:expr) => {{
        let end = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if $cond {
                break;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "timed out waiting for {}",
                $what
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_peer_pins_a_replicate_everywhere_set_and_unpins_what_is_released() {
    let root = tempfile::tempdir().unwrap();
    let nodes = tracked(3, root.path()).await;
    pinsets::apply(&nodes[0].peer.node, apply(pinset("all", 0..5), "r1"))
        .await
        .unwrap();
    for n in &nodes {
        wait_for("5 pins on every kubo", || {
            (0..5).all(|i| n.kubo.pinned(cid(i)).is_some())
        })
        .await;
    }
    eventually!("global status pinned on 3 peers", {
        let g = global(&nodes[1], 0).await;
        count(&g, TrackerStatus::Pinned) == 3
    });

    // Release 2 of 5 (40% < 50%): they are unpinned everywhere.
    pinsets::apply(&nodes[0].peer.node, apply(pinset("all", 2..5), "r2"))
        .await
        .unwrap();
    for n in &nodes {
        wait_for("released pins unpinned", || {
            n.kubo.pinned(cid(0)).is_none() && n.kubo.pinned(cid(1)).is_none()
        })
        .await;
        assert!(n.kubo.pinned(cid(4)).is_some());
    }
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pin_goes_only_to_its_allocated_peer() {
    let root = tempfile::tempdir().unwrap();
    let nodes = tracked(3, root.path()).await;
    let mut ps = pinset("one", 10..11);
    let opts = Arc::new(PinOptions {
        replication: ReplicationFactors { min: 1, max: 1 },
        ..PinOptions::default()
    });
    for pin in ps.pins.values_mut() {
        pin.spec = PinSpec {
            name: pin.spec.name.clone(),
            options: Arc::clone(&opts),
        };
    }
    pinsets::apply(&nodes[0].peer.node, apply(ps, "r1"))
        .await
        .unwrap();
    let target = nodes[2].peer.node.peer_id().to_string();
    nodes[0]
        .peer
        .node
        .write(Command::Allocate {
            allocations: vec![(cid(10), vec![target.clone()])],
        })
        .await
        .unwrap();
    wait_for("allocated peer pins it", || {
        nodes[2].kubo.pinned(cid(10)).is_some()
    })
    .await;
    eventually!("status pinned on the allocated peer, remote elsewhere", {
        let g = global(&nodes[0], 10).await;
        g.peer_map[&target].status == TrackerStatus::Pinned && count(&g, TrackerStatus::Remote) == 2
    });
    for n in &nodes[..2] {
        assert_eq!(
            n.kubo.count_calls("pin/add"),
            0,
            "an unallocated peer never asked its kubo to pin"
        );
    }
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ipfs_down_is_a_pin_error_then_pinned_when_it_returns() {
    let root = tempfile::tempdir().unwrap();
    let nodes = tracked(2, root.path()).await;
    nodes[1].kubo.set_down(true);
    pinsets::apply(&nodes[0].peer.node, apply(pinset("down", 20..22), "r1"))
        .await
        .unwrap();
    let down_peer = nodes[1].peer.node.peer_id().to_string();
    eventually!("pin_error on the peer whose ipfs is down", {
        let g = global(&nodes[0], 20).await;
        g.peer_map.get(&down_peer).is_some_and(|p| {
            p.status == TrackerStatus::PinError && !p.error.is_empty() && p.attempt_count >= 1
        })
    });
    let up_peer = nodes[0].peer.node.peer_id().to_string();
    eventually!(
        "pinned on the peer whose ipfs is up",
        global(&nodes[0], 20).await.peer_map[&up_peer].status == TrackerStatus::Pinned
    );
    nodes[1].kubo.set_down(false);
    wait_for("pinned after ipfs returns", || {
        nodes[1].kubo.pinned(cid(20)).is_some() && nodes[1].kubo.pinned(cid(21)).is_some()
    })
    .await;
    eventually!(
        "status pinned",
        global(&nodes[0], 20).await.peer_map[&down_peer].status == TrackerStatus::Pinned
    );
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pin_removed_behind_our_back_is_noticed_and_repinned() {
    let root = tempfile::tempdir().unwrap();
    let nodes = tracked(1, root.path()).await;
    pinsets::apply(&nodes[0].peer.node, apply(pinset("drift", 30..31), "r1"))
        .await
        .unwrap();
    wait_for("pinned", || nodes[0].kubo.pinned(cid(30)).is_some()).await;
    let adds = nodes[0].kubo.count_calls("pin/add");
    nodes[0].kubo.remove_behind_back(cid(30));
    wait_for("re-pinned by drift repair", || {
        nodes[0].kubo.pinned(cid(30)).is_some() && nodes[0].kubo.count_calls("pin/add") > adds
    })
    .await;
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_peer_shows_cluster_error() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = tracked(3, root.path()).await;
    pinsets::apply(&nodes[0].peer.node, apply(pinset("ce", 40..41), "r1"))
        .await
        .unwrap();
    eventually!(
        "pinned everywhere",
        count(&global(&nodes[0], 40).await, TrackerStatus::Pinned) == 3
    );
    let gone = nodes.pop().unwrap();
    let gone_id = gone.peer.node.peer_id().to_string();
    stop(vec![gone]).await;
    eventually!("cluster_error for the stopped peer", {
        let g = global(&nodes[0], 40).await;
        g.peer_map
            .get(&gone_id)
            .is_some_and(|p| p.status == TrackerStatus::ClusterError && !p.error.is_empty())
    });
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_pin_is_not_kept() {
    let root = tempfile::tempdir().unwrap();
    let nodes = tracked(1, root.path()).await;
    let node = &nodes[0].peer.node;
    let past = chrono::Utc::now().timestamp_millis() - 1000;
    let expired = PinSpec {
        name: "old".into(),
        options: Arc::new(PinOptions {
            expire_at_ms: Some(past),
            ..PinOptions::default()
        }),
    };
    node.pin(cid(50), None, expired).await.unwrap();
    node.pin(
        cid(51),
        None,
        PinSpec {
            name: "keep".into(),
            options: Arc::new(PinOptions::default()),
        },
    )
    .await
    .unwrap();
    wait_for("the live pin is pinned", || {
        nodes[0].kubo.pinned(cid(51)).is_some()
    })
    .await;
    assert!(
        nodes[0].kubo.pinned(cid(50)).is_none(),
        "an expired pin is never pinned"
    );
    eventually!(
        "expired shows unpinned",
        count(&global(&nodes[0], 50).await, TrackerStatus::Unpinned) == 1
    );
    stop(nodes).await;
}

fn with_options(
    mut ps: pinfleet::manifest::DesiredPinSet,
    options: PinOptions,
) -> pinfleet::manifest::DesiredPinSet {
    let opts = Arc::new(options);
    for pin in ps.pins.values_mut() {
        pin.spec = PinSpec {
            name: pin.spec.name.clone(),
            options: Arc::clone(&opts),
        };
    }
    ps
}

fn holders(nodes: &[Node], i: u64) -> usize {
    nodes
        .iter()
        .filter(|n| n.kubo.pinned(cid(i)).is_some())
        .count()
}

/// Applies PinSet `name` of the pins `range` with replication 2/2 on peer 0.
async fn apply_two_copies(nodes: &[Node], name: &str, range: std::ops::Range<u64>) {
    let ps = with_options(
        pinset(name, range),
        PinOptions {
            replication: ReplicationFactors { min: 2, max: 2 },
            ..PinOptions::default()
        },
    );
    pinsets::apply(&nodes[0].peer.node, apply(ps, "r1"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn min_max_replication_allocates_that_many_peers() {
    let root = tempfile::tempdir().unwrap();
    let nodes = tracked(3, root.path()).await;
    apply_two_copies(&nodes, "two", 60..64).await;
    for i in 60..64 {
        wait_for("two copies", || holders(&nodes, i) == 2).await;
        let pin = nodes[0].peer.node.store().get(&cid(i)).unwrap().unwrap();
        assert_eq!(pin.allocations.len(), 2);
    }
    // Spread: with equal queues the three peers share the eight copies.
    assert!(
        nodes.iter().all(|n| !n.kubo.pins().is_empty()),
        "every peer got some copies"
    );
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allocation_honours_tags() {
    let root = tempfile::tempdir().unwrap();
    let eu: &[(&str, &str)] = &[("region", "eu")];
    let us: &[(&str, &str)] = &[("region", "us")];
    let nodes = tracked_tagged(3, root.path(), &[eu, eu, us]).await;
    let ps = with_options(
        pinset("us-only", 70..73),
        PinOptions {
            replication: ReplicationFactors { min: 1, max: 2 },
            allocate_tags: [("region".to_string(), "us".to_string())].into(),
            ..PinOptions::default()
        },
    );
    pinsets::apply(&nodes[0].peer.node, apply(ps, "r1"))
        .await
        .unwrap();
    for i in 70..73 {
        wait_for("pinned on the us peer", || {
            nodes[2].kubo.pinned(cid(i)).is_some()
        })
        .await;
    }
    assert!(
        nodes[0].kubo.pins().is_empty() && nodes[1].kubo.pins().is_empty(),
        "eu peers never pin us-only pins"
    );
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_peers_pins_move_after_the_grace_period() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = tracked(3, root.path()).await;
    let ps = with_options(
        pinset("one-copy", 80..81),
        PinOptions {
            replication: ReplicationFactors { min: 1, max: 1 },
            ..PinOptions::default()
        },
    );
    let leader = nodes.iter().position(|n| n.peer.node.is_leader()).unwrap();
    pinsets::apply(&nodes[leader].peer.node, apply(ps, "r1"))
        .await
        .unwrap();
    wait_for("one copy", || holders(&nodes, 80) == 1).await;
    // Stop the holder, unless it is the leader (then the test would also
    // exercise a leader election; keep it focused).
    let holder = nodes
        .iter()
        .position(|n| n.kubo.pinned(cid(80)).is_some())
        .unwrap();
    if holder == leader {
        // Move the copy elsewhere first: pin it to a follower by hand.
        let other = (leader + 1) % 3;
        let id = nodes[other].peer.node.peer_id().to_string();
        nodes[leader]
            .peer
            .node
            .write(Command::Allocate {
                allocations: vec![(cid(80), vec![id])],
            })
            .await
            .unwrap();
        wait_for("moved to a follower", || {
            nodes[other].kubo.pinned(cid(80)).is_some()
        })
        .await;
    }
    let holder = nodes
        .iter()
        .position(|n| n.kubo.pinned(cid(80)).is_some() && !n.peer.node.is_leader())
        .unwrap();
    let gone = nodes.remove(holder);
    let gone_id = gone.peer.node.peer_id().to_string();
    stop(vec![gone]).await;
    // Re-allocated away from the dead peer, and pinned where allocated.
    wait_for("re-allocated and re-pinned on a live peer", || {
        let pin = nodes[0].peer.node.store().get(&cid(80)).unwrap().unwrap();
        !pin.allocations.is_empty()
            && !pin.allocations.contains(&gone_id)
            && pin.allocations.iter().all(|a| {
                nodes.iter().any(|n| {
                    n.peer.node.peer_id().to_string() == *a && n.kubo.pinned(cid(80)).is_some()
                })
            })
    })
    .await;
    stop(nodes).await;
}

/// A new pin is allocated right after it is written, not at the next
/// allocation check (an hour away here).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_pin_is_allocated_without_waiting_for_the_check_interval() {
    let root = tempfile::tempdir().unwrap();
    let nodes = tracked_with(3, root.path(), &[], Duration::from_secs(3600)).await;
    apply_two_copies(&nodes, "soon", 80..82).await;
    for i in 80..82 {
        wait_for("two copies", || holders(&nodes, i) == 2).await;
    }
    stop(nodes).await;
}

/// A tracker (without informer) for `peer` on the mock Kubo at `url`,
/// keeping its managed pins at `managed` (`None`: in memory).
fn track(
    peer: &Peer,
    url: &str,
    managed: Option<std::path::PathBuf>,
) -> (Arc<StatusService>, CancellationToken, TaskTracker) {
    let backend = Arc::new(KuboClient::new(url, Duration::from_secs(5)).unwrap());
    let config = TrackerConfig {
        managed_path: managed,
        ..crate::support::tracker_config(
            Duration::from_secs(1),
            Duration::from_millis(100),
            Duration::from_millis(400),
        )
    };
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let status =
        pinfleet::daemon::start_tracking(&peer.node, backend, config, "t".into(), &cancel, &tasks)
            .unwrap();
    (status, cancel, tasks)
}

/// The tracker remembers on disk which pins it pinned for the cluster: a
/// pin released while its peer was down is unpinned when the peer comes
/// back (it used to stay on IPFS for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pin_released_while_a_peer_was_down_is_unpinned_when_it_restarts() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for peer in cluster(3, root.path(), 10_000).await {
        let (kubo, url) = MockKubo::start().await.unwrap();
        let managed = pinfleet::tracker::managed_path(&peer.dir);
        let (status, cancel, tasks) = track(&peer, &url, Some(managed));
        nodes.push(Node {
            peer,
            kubo,
            status,
            cancel,
            tasks,
        });
    }
    pinsets::apply(&nodes[0].peer.node, apply(pinset("rel", 90..95), "r1"))
        .await
        .unwrap();
    for n in &nodes {
        wait_for("5 pins on every kubo", || {
            (90..95).all(|i| n.kubo.pinned(cid(i)).is_some())
        })
        .await;
    }

    // Stop a follower (tracker, then peer); its mock Kubo keeps its pins.
    let down = nodes.iter().position(|n| !n.peer.node.is_leader()).unwrap();
    let Node {
        peer,
        kubo,
        status,
        cancel,
        tasks,
    } = nodes.remove(down);
    drop(status);
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    let (dir, keypair) = (peer.dir.clone(), peer.keypair.clone());
    peer.stop().await;

    // Release 2 of 5 through another peer while it is down.
    pinsets::apply(&nodes[0].peer.node, apply(pinset("rel", 92..95), "r2"))
        .await
        .unwrap();
    for n in &nodes {
        wait_for("released pins unpinned on the live peers", || {
            n.kubo.pinned(cid(90)).is_none() && n.kubo.pinned(cid(91)).is_none()
        })
        .await;
    }
    assert!(kubo.pinned(cid(90)).is_some() && kubo.pinned(cid(91)).is_some());
    assert_eq!(kubo.count_calls("pin/rm"), 0);

    // Same directory and identity, a fresh process's tracker.
    let members: Vec<&Peer> = nodes.iter().map(|n| &n.peer).collect();
    let back = Peer::restart(&dir, keypair, &members, 10_000)
        .await
        .unwrap();
    // The tracker starts once the peer has caught up: the state it reads
    // no longer has the released pins at all.
    wait_for("the restarted peer caught up", || {
        back.node.store().get(&cid(90)).unwrap().is_none()
    })
    .await;
    let (_status, cancel, tasks) = track(
        &back,
        kubo.url(),
        Some(pinfleet::tracker::managed_path(&dir)),
    );
    wait_for("the released pins unpinned after the restart", || {
        kubo.pinned(cid(90)).is_none() && kubo.pinned(cid(91)).is_none()
    })
    .await;
    assert!(
        (92..95).all(|i| kubo.pinned(cid(i)).is_some()),
        "the pins still wanted stay"
    );
    assert_eq!(kubo.count_calls("pin/rm"), 2, "one unpin per released pin");
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    back.stop().await;
    stop(nodes).await;
}

/// Whether process `pid` is gone or a zombie (killed, not yet reaped).
fn dead(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Waits (60 s at most) until the async `check` holds.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the peer at `api` reports being the Raft leader (`/metrics`).
async fn is_leader(http: &reqwest::Client, api: &str) -> Option<bool> {
    let body = http
        .get(format!("{api}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let line = body
        .lines()
        .find(|l| l.split_whitespace().next() == Some("pinfleet_leader"))?;
    Some(line.split_whitespace().nth(1)? == "1")
}

/// How many peers `GET /pins/{cid}` at `api` reports `pinned`.
async fn pinned_on(http: &reqwest::Client, api: &str, cid: &str) -> usize {
    let Ok(resp) = http.get(format!("{api}/pins/{cid}")).send().await else {
        return 0;
    };
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    v["peer_map"].as_object().map_or(0, |m| {
        m.values().filter(|s| s["status"] == "pinned").count()
    })
}

/// Three daemon processes, each on its own mock Kubo. A peer killed with
/// SIGKILL (no shutdown, nothing written on the way out) while its pins'
/// PinSet is deleted through the others unpins them from its Kubo when it
/// starts again: what it reported pinned, it had recorded as its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_a_peer_killed_while_its_pinset_was_deleted_unpins_it_after_restart() {
    use pinfleet::testbed::{Testbed, TestbedIpfs, TestbedOptions};
    let mut kubos = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..3 {
        let (kubo, url) = MockKubo::start().await.unwrap();
        kubos.push(kubo);
        urls.push(url);
    }
    let root = tempfile::tempdir().unwrap();
    let tb = Testbed::up(&TestbedOptions {
        exe: env!("CARGO_BIN_EXE_pinfleet").into(),
        peers: 3,
        dir: root.path().join("tb"),
        timeout: Duration::from_secs(60),
        ipfs: TestbedIpfs::Kubo(urls),
        auth: false,
        followers: 0,
        env: Vec::new(),
    })
    .await
    .unwrap();
    let peers = tb.file.peers.clone();
    let http = crate::support::http();

    // The leader takes the writes; a follower is the victim.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let leader = 'found: loop {
        for (i, p) in peers.iter().enumerate() {
            if is_leader(&http, &p.api).await == Some(true) {
                break 'found i;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let victim = (leader + 1) % 3;
    let (api, down) = (&peers[leader].api, &peers[victim]);

    let pins: Vec<_> = (200..205).map(cid).collect();
    let names: Vec<String> = pins.iter().map(|c| c.to_string()).collect();
    let put = http
        .put(format!("{api}/pinsets/it/crash"))
        .body(crate::support::pinset_yaml("it", "crash", &names))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());
    for name in &names {
        until("every peer reports the pins pinned", || async {
            pinned_on(&http, api, name).await == 3
        })
        .await;
    }
    assert!(pins.iter().all(|c| kubos[victim].pinned(*c).is_some()));

    // kill -9 the follower, then delete the PinSet through the leader.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(down.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    until("the killed peer is gone", || async { dead(down.pid) }).await;
    let del = http
        .delete(format!("{api}/pinsets/it/crash?force=true"))
        .send()
        .await
        .unwrap();
    assert!(del.status().is_success(), "{}", del.text().await.unwrap());
    for (i, kubo) in kubos.iter().enumerate().filter(|(i, _)| *i != victim) {
        until(&format!("peer {i} unpinned the deleted PinSet"), || async {
            pins.iter().all(|c| kubo.pinned(*c).is_none())
        })
        .await;
    }
    let kubo = &kubos[victim];
    assert!(pins.iter().all(|c| kubo.pinned(*c).is_some()));
    assert_eq!(kubo.count_calls("pin/rm"), 0);

    // The same peer again (its directory, on fresh ports: see
    // `restart_daemon`), its Kubo down until it has caught up: by then its
    // state no longer has the pins, so only its record of what it pinned
    // says they are its own.
    kubo.set_down(true);
    let members: Vec<String> = peers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .flat_map(|(_, p)| pinfleet::daemon::read_run_file(&p.dir).unwrap().p2p)
        .collect();
    let (child, info) = tokio::task::spawn_blocking({
        let dir = down.dir.clone();
        move || crate::support::restart_daemon(&dir, &[], &[], &dir.join("daemon.log"), &members)
    })
    .await
    .unwrap();
    let back = crate::support::KillOnDrop(child);
    for name in &names {
        until("the restarted peer caught up", || async {
            crate::support::owners_at(&info.api, name).await.is_none()
        })
        .await;
    }
    kubo.set_down(false);
    until("the restarted peer unpinned the deleted PinSet", || async {
        pins.iter().all(|c| kubo.pinned(*c).is_none())
    })
    .await;
    assert_eq!(kubo.pin_count(), 0, "nothing else was pinned or left");

    tokio::task::spawn_blocking(move || {
        let mut back = back;
        crate::support::stop_daemon(&mut back.0);
    })
    .await
    .unwrap();
    tb.stop().await;
}
