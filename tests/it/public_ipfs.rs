//! The embedded node on the public IPFS network's protocols (`[ipfs] swarm
//! = "public"`), in-process on 127.0.0.1: QUIC and TCP, providers found
//! through the DHT and through a delegated routing endpoint, block push
//! refused from nodes outside the cluster, and a public testbed.

use std::collections::HashSet;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use pinfleet::ipfs::embedded::{EmbeddedConfig, EmbeddedNode, PublicOptions};
use pinfleet::ipfs::{AddInput, AddOpts, IpfsBackend, PinOpts};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const DEADLINE: Duration = Duration::from_secs(30);

pub use crate::support::InProcessNode as Node;

/// A public node listening on loopback TCP and QUIC, joining the DHT
/// through `bootstrap`, asking `delegated` for providers when given.
pub async fn public(
    dir: &std::path::Path,
    bootstrap: Vec<Multiaddr>,
    delegated: Option<String>,
) -> Node {
    node(dir, bootstrap, delegated, false).await
}

/// [`public`], a DHT client only when `dht_client`.
async fn node(
    dir: &std::path::Path,
    bootstrap: Vec<Multiaddr>,
    delegated: Option<String>,
    dht_client: bool,
) -> Node {
    let mut config = EmbeddedConfig::new(dir, [9; 32]);
    config.listen = vec![
        "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
        "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
    ];
    config.public = Some(PublicOptions {
        bootstrap,
        relay_client: false,
        dht_client,
        max_connections: 64,
    });
    config.delegated_routing = delegated;
    Node::start_with(config).await
}

impl Node {
    pub async fn addr(&self, quic: bool) -> Multiaddr {
        self.node
            .listen_addrs()
            .await
            .into_iter()
            .find(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)) == quic)
            .unwrap()
    }

    /// Adds `len` bytes of content (pinned); its root.
    async fn add_bytes(&self, len: usize, seed: u64, push: bool) -> pinfleet::manifest::CidKey {
        self.node
            .add(
                AddInput::Reader(Box::new(std::io::Cursor::new(bytes(len, seed)))),
                AddOpts {
                    push,
                    ..AddOpts::default()
                },
            )
            .await
            .unwrap()
            .root
    }
}

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn opts(timeout: Duration) -> PinOpts {
    PinOpts {
        recursive: true,
        max_depth: None,
        progress_timeout: timeout,
        origins: Vec::new(),
    }
}

/// Waits (30 s at most) until `check` holds.
pub async fn wait_until<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_for(what, check).await;
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_nodes_exchange_content_over_quic() {
    let dir = tempfile::tempdir().unwrap();
    let a = public(&dir.path().join("a"), Vec::new(), None).await;
    let b = public(&dir.path().join("b"), Vec::new(), None).await;
    let root = a.add_bytes(1 << 20, 1, false).await;
    let quic = a.addr(true).await;
    assert_eq!(b.node.connect(quic).await.unwrap(), a.node.peer_id());
    b.node.pin(root, opts(DEADLINE), None).await.unwrap();
    assert_eq!(
        b.node.get_block(root.cid()).await.unwrap(),
        a.node.get_block(root.cid()).await.unwrap()
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_node_finds_content_through_the_dht_on_a_node_it_was_never_told_about() {
    let dir = tempfile::tempdir().unwrap();
    // b serves the DHT; a holds the content and only queries the DHT
    // (so nobody's routing table names it); c knows only b.
    let b = public(&dir.path().join("b"), Vec::new(), None).await;
    let a = node(&dir.path().join("a"), vec![b.addr(false).await], None, true).await;
    wait_for("a to reach the dht through b", || async {
        b.node.connected_peers().await.contains(&a.node.peer_id())
    })
    .await;
    let root = a.add_bytes(600_000, 2, false).await;

    // Read without pinning (what `GET /ipfs/{cid}` does): the only node
    // connected refuses, a lookup finds a.
    let reader = public(&dir.path().join("r"), vec![b.addr(false).await], None).await;
    wait_for("the reader to join the dht through b", || async {
        reader
            .node
            .connected_peers()
            .await
            .contains(&b.node.peer_id())
    })
    .await;
    let read: Vec<u8> = {
        use futures::TryStreamExt;
        let parts: Vec<bytes::Bytes> = reader
            .node
            .cat(root, 0, 600_000)
            .try_collect()
            .await
            .unwrap();
        parts.concat()
    };
    assert!(read == bytes(600_000, 2), "the bytes read differ");
    assert!(
        reader
            .node
            .connected_peers()
            .await
            .contains(&a.node.peer_id())
    );
    reader.stop().await;

    let c = public(&dir.path().join("c"), vec![b.addr(false).await], None).await;
    wait_for("c to join the dht through b", || async {
        c.node.connected_peers().await.contains(&b.node.peer_id())
    })
    .await;
    assert!(!c.node.connected_peers().await.contains(&a.node.peer_id()));

    // No origins, no holder connected: the pin stalls, looks the root
    // up (a provides it), dials a and fetches from it.
    c.node.pin(root, opts(DEADLINE), None).await.unwrap();
    assert!(c.node.connected_peers().await.contains(&a.node.peer_id()));
    assert_eq!(
        c.node.get_block(root.cid()).await.unwrap(),
        a.node.get_block(root.cid()).await.unwrap()
    );

    // Once unpinned, nobody finds a as a provider of content it dropped;
    // c still provides it (it pinned it).
    a.node.unpin(root, true).await.unwrap();
    let d = public(&dir.path().join("d"), vec![b.addr(false).await], None).await;
    wait_for("d to join the dht through b", || async {
        d.node.connected_peers().await.contains(&b.node.peer_id())
    })
    .await;
    d.node.pin(root, opts(DEADLINE), None).await.unwrap();
    assert!(d.node.connected_peers().await.contains(&c.node.peer_id()));
    for n in [a, b, c, d] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_node_pins_content_named_by_a_delegated_routing_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let a = public(&dir.path().join("a"), Vec::new(), None).await;
    let root = a.add_bytes(300_000, 3, false).await;
    let provider = serde_json::json!({"Providers": [{
        "Schema": "peer",
        "ID": a.node.peer_id().to_string(),
        "Addrs": [a.addr(false).await.to_string()],
        "Protocols": ["transport-bitswap"],
    }]});
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = asked.clone();
    let app = axum::Router::new().route(
        "/routing/v1/providers/{cid}",
        axum::routing::get(
            move |axum::extract::Path(cid): axum::extract::Path<String>| {
                let provider = provider.clone();
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(cid);
                    axum::Json(provider)
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let c = public(&dir.path().join("c"), Vec::new(), Some(url)).await;
    c.node.pin(root, opts(DEADLINE), None).await.unwrap();
    assert!(c.node.connected_peers().await.contains(&a.node.peer_id()));
    let asked = asked.lock().unwrap().clone();
    assert!(
        asked
            .iter()
            .any(|cid| cid.parse::<cid::Cid>().unwrap().hash() == root.cid().hash()),
        "{asked:?}"
    );
    server.abort();
    a.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_node_takes_block_pushes_only_from_cluster_members() {
    let dir = tempfile::tempdir().unwrap();
    let a = public(&dir.path().join("a"), Vec::new(), None).await;
    let b = public(&dir.path().join("b"), Vec::new(), None).await;
    b.node.connect(a.addr(false).await).await.unwrap();
    // a counts b as a member and pushes to it; b does not know a yet.
    a.node.set_cluster_nodes(HashSet::from([b.node.peer_id()]));
    let first = a.add_bytes(3 << 20, 4, true).await;
    wait_for("b to refuse a's push", || async {
        b.node.push_streams_refused() == 1
    })
    .await;
    // Once b knows a, a's pushes are stored.
    b.node.set_cluster_nodes(HashSet::from([a.node.peer_id()]));
    let second = a.add_bytes(3 << 20, 5, true).await;
    wait_for("the second add's 13 blocks on b", || async {
        b.node.pushed_blocks_received() >= 13
    })
    .await;
    assert!(b.node.get_block(second.cid()).await.unwrap().is_some());
    assert_eq!(
        b.node.get_block(first.cid()).await.unwrap(),
        None,
        "a push from a node outside the cluster is refused"
    );
    assert_eq!(b.node.pushed_blocks_received(), 13);

    assert_eq!(b.node.push_streams_refused(), 1);
    for n in [a, b] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_node_and_a_public_node_cannot_connect() {
    let dir = tempfile::tempdir().unwrap();
    let a = public(&dir.path().join("a"), Vec::new(), None).await;
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let private = EmbeddedNode::start(
        EmbeddedConfig::new(&dir.path().join("p"), [9; 32]),
        cancel.clone(),
        &tasks,
    )
    .await
    .unwrap();
    assert!(private.connect(a.addr(false).await).await.is_err());
    let private_addr = private.listen_addrs().await.remove(0);
    assert!(a.node.connect(private_addr).await.is_err());
    cancel.cancel();
    a.stop().await;
}

/// `testbed up --public-ipfs`: the quickstart is pinned on every peer, and
/// an IPFS node outside the cluster (another secret) connects to a peer's
/// node, named in `testbed.json` with `/p2p/`, and fetches the content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_testbed_pins_the_quickstart_and_serves_it_to_a_node_outside_the_cluster() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let tb = dir.path().join("tb");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pinfleet"))
        .current_dir(repo)
        .args(["testbed", "up", "--public-ipfs", "--dir"])
        .arg(&tb)
        .args(["--add", "examples/quickstart/content"])
        .args(["--apply", "examples/quickstart", "--wait", "60s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line.contains("every pin is pinned");
            seen.push(line);
            if done {
                return;
            }
        }
        panic!("the testbed ended before pinning: {seen:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("not pinned in time: {seen:?}"));
    assert!(
        seen.iter().any(|l| l.contains("3 pins · pinned 9 ·")),
        "{seen:?}"
    );
    let file: pinfleet::testbed::TestbedFile =
        serde_json::from_slice(&std::fs::read(tb.join("testbed.json")).unwrap()).unwrap();
    let addr: Multiaddr = file.peers[0].ipfs.parse().unwrap();
    assert!(
        matches!(addr.iter().last(), Some(Protocol::P2p(_))),
        "{addr}"
    );

    let outsider = public(&dir.path().join("outsider"), Vec::new(), None).await;
    outsider.node.connect(addr).await.unwrap();
    let site: cid::Cid = "QmSnuKKp3siNyNhbWiW2fwo53W46HdWrcZ7fSZYWXKGV3c"
        .parse()
        .unwrap();
    outsider
        .node
        .pin(
            pinfleet::manifest::CidKey::from_cid(site).unwrap(),
            opts(DEADLINE),
            None,
        )
        .await
        .unwrap();
    outsider.stop().await;

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}

/// A CID nobody has fails with the progress timeout, as in the private
/// swarm, although the pin looks it up in the DHT meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cid_nobody_provides_fails_with_the_progress_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let b = public(&dir.path().join("b"), Vec::new(), None).await;
    let c = public(&dir.path().join("c"), vec![b.addr(false).await], None).await;
    wait_for("c to join the dht through b", || async {
        c.node.connected_peers().await.contains(&b.node.peer_id())
    })
    .await;
    let nobody = pinfleet::manifest::CidKey::from_cid(
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
            .parse()
            .unwrap(),
    )
    .unwrap();
    let err = c
        .node
        .pin(nobody, opts(Duration::from_secs(2)), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, pinfleet::ipfs::IpfsError::Timeout { .. }),
        "{err}"
    );
    b.stop().await;
    c.stop().await;
}
