//! Peers on 127.0.0.1 talking to each other; every wait has a deadline.

use std::future::Future;
use std::time::{Duration, Instant};

use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::*;

/// Long enough for a loaded CI machine, short enough that a hang fails fast.
const DEADLINE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum TestRequest {
    Ping(u32),
    Echo(String),
    /// Received but never answered, so the requester waits.
    Hold,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum TestResponse {
    Pong(u32),
    Echo(String),
}

struct Peer {
    handle: P2pHandle<TestRequest, TestResponse>,
    gossip: mpsc::Receiver<(PeerId, Vec<u8>)>,
    held: mpsc::Receiver<InboundRequest<TestRequest, TestResponse>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    keypair: Keypair,
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn loopback() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().unwrap()
}

async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

async fn start(secret: [u8; 32]) -> Peer {
    start_with(
        Keypair::generate_ed25519(),
        secret,
        loopback(),
        REQUEST_TIMEOUT,
    )
    .await
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

async fn start_with(
    keypair: Keypair,
    secret: [u8; 32],
    listen: Multiaddr,
    request_timeout: Duration,
) -> Peer {
    init_tracing();
    let mut config = P2pConfig::new(keypair.clone(), secret);
    config.listen = vec![listen];
    config.request_timeout = request_timeout;
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let (handle, events) = spawn::<TestRequest, TestResponse>(config, cancel.clone(), &tasks)
        .await
        .unwrap();
    let (held_tx, held) = mpsc::channel(16);
    let mut inbound = events.inbound;
    // Ends when the event loop drops its sender.
    tasks.spawn(async move {
        while let Some(req) = inbound.recv().await {
            let response = match req.request {
                TestRequest::Ping(n) => TestResponse::Pong(n),
                TestRequest::Echo(ref s) => TestResponse::Echo(s.clone()),
                TestRequest::Hold => {
                    let _ = held_tx.send(req).await;
                    continue;
                }
            };
            let _ = req.reply.send(response);
        }
    });
    Peer {
        handle,
        gossip: events.gossip,
        held,
        cancel,
        tasks,
        keypair,
    }
}

impl Peer {
    fn id(&self) -> PeerId {
        self.handle.local_peer_id()
    }

    async fn addr(&self) -> Multiaddr {
        let addrs = self.handle.listen_addrs().await.unwrap();
        addrs.into_iter().next().unwrap()
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.tasks.close();
        within("the actor to stop", self.tasks.wait()).await;
    }
}

async fn wait_for(events: &mut broadcast::Receiver<PeerEvent>, want: PeerEvent) {
    within(&format!("{want:?}"), async {
        loop {
            match events.recv().await {
                Ok(event) if event == want => return,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => panic!("peer events closed"),
            }
        }
    })
    .await;
}

async fn connected_pair() -> (Peer, Peer) {
    let a = start([7; 32]).await;
    let b = start([7; 32]).await;
    let dialed = within("dial", a.handle.dial(b.addr().await)).await.unwrap();
    assert_eq!(dialed, b.id());
    (a, b)
}

#[tokio::test]
async fn peers_with_same_secret_exchange_requests_both_ways() {
    let (a, b) = connected_pair().await;

    let addrs = b.handle.listen_addrs().await.unwrap();
    assert!(!addrs.is_empty());
    for addr in &addrs {
        let protocols: Vec<_> = addr.iter().collect();
        assert!(matches!(protocols.last(), Some(Protocol::P2p(id)) if *id == b.id()));
        assert!(
            !protocols.contains(&Protocol::Tcp(0)),
            "port 0 not resolved: {addr}"
        );
    }

    let pong = within("a -> b", a.handle.request(b.id(), TestRequest::Ping(7))).await;
    assert_eq!(pong.unwrap(), TestResponse::Pong(7));
    let pong = within("b -> a", b.handle.request(a.id(), TestRequest::Ping(8))).await;
    assert_eq!(pong.unwrap(), TestResponse::Pong(8));

    assert_eq!(a.handle.connected_peers().await.unwrap(), vec![b.id()]);
    assert_eq!(b.handle.connected_peers().await.unwrap(), vec![a.id()]);

    // Dialing a peer we are connected to answers at once with its id.
    let again = within("redial", a.handle.dial(b.addr().await)).await;
    assert_eq!(again.unwrap(), b.id());

    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn peer_with_other_secret_cannot_connect() {
    // A wrong secret is not refused, it garbles the handshake until the dial
    // timeout (min(request_timeout, MAX_DIAL_TIMEOUT)) fires: keep it short.
    let timeout = Duration::from_millis(1500);
    let a = start_with(Keypair::generate_ed25519(), [1; 32], loopback(), timeout).await;
    let b = start_with(Keypair::generate_ed25519(), [2; 32], loopback(), timeout).await;
    let mut a_events = a.handle.peer_events();
    let b_addr = b.addr().await;

    let started = Instant::now();
    let dialed = within("dial to fail", a.handle.dial(b_addr.clone())).await;
    assert!(
        matches!(dialed, Err(P2pError::Dial { .. })),
        "dial should fail: {dialed:?}"
    );

    // A request by peer id, with the address known, fails as well.
    a.handle.add_address(b.id(), b_addr).await.unwrap();
    let response = within(
        "request to fail",
        a.handle.request(b.id(), TestRequest::Ping(1)),
    )
    .await;
    assert!(
        matches!(response, Err(P2pError::Unreachable { .. })),
        "request should fail: {response:?}"
    );
    // Both waits are bounded by the dial timeout, not by DEADLINE.
    assert!(started.elapsed() < 3 * timeout, "{:?}", started.elapsed());

    assert!(a.handle.connected_peers().await.unwrap().is_empty());
    assert!(b.handle.connected_peers().await.unwrap().is_empty());
    assert!(
        matches!(
            a_events.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ),
        "no connection event expected"
    );

    a.stop().await;
    b.stop().await;
}

/// Waits until `a` knows (from identify) that `b` takes kept streams.
async fn identified_streams(a: &Peer, b: &Peer) {
    within("identify to list the stream protocol", async {
        while !a.handle.streams.speaks(&b.id()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn requests_to_a_peer_that_takes_streams_share_one_kept_stream() {
    let (a, b) = connected_pair().await;
    identified_streams(&a, &b).await;
    for n in 0..20 {
        let pong = within("a -> b", a.handle.request(b.id(), TestRequest::Ping(n))).await;
        assert_eq!(pong.unwrap(), TestResponse::Pong(n));
    }
    assert_eq!(
        a.handle.streams.opened(),
        1,
        "one stream for 20 requests in turn"
    );
    // Concurrent requests each get an answer of their own.
    let asks = (0..8).map(|n| a.handle.request(b.id(), TestRequest::Echo(format!("e{n}"))));
    let answers = within("concurrent requests", futures::future::join_all(asks)).await;
    for (n, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap(), TestResponse::Echo(format!("e{n}")));
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_peer_that_takes_no_streams_is_asked_the_request_response_way() {
    let (a, b) = connected_pair().await;
    identified_streams(&a, &b).await;
    // What identify says of a peer of an older version.
    a.handle.streams.identified(b.id(), &[]);
    let pong = within("a -> b", a.handle.request(b.id(), TestRequest::Ping(3))).await;
    assert_eq!(pong.unwrap(), TestResponse::Pong(3));
    assert_eq!(a.handle.streams.opened(), 0);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_unanswered_request_on_a_stream_times_out_and_its_stream_is_dropped() {
    let a = start_with(
        Keypair::generate_ed25519(),
        [7; 32],
        loopback(),
        Duration::from_millis(500),
    )
    .await;
    let mut b = start([7; 32]).await;
    within("dial", a.handle.dial(b.addr().await)).await.unwrap();
    identified_streams(&a, &b).await;
    let held = within(
        "a held request",
        a.handle.request(b.id(), TestRequest::Hold),
    )
    .await;
    assert!(matches!(held, Err(P2pError::Timeout)), "{held:?}");
    let _held = within("b to hold it", b.held.recv()).await.unwrap();
    // The next request is answered, on a new stream: the old one may
    // still carry the late answer.
    let pong = within("a -> b", a.handle.request(b.id(), TestRequest::Ping(4))).await;
    assert_eq!(pong.unwrap(), TestResponse::Pong(4));
    assert_eq!(a.handle.streams.opened(), 2);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn request_to_stopped_peer_fails() {
    let (a, mut b) = connected_pair().await;
    let mut a_events = a.handle.peer_events();
    let b_id = b.id();

    // A request in flight when the peer stops.
    let pending = tokio::spawn({
        let handle = a.handle.clone();
        async move { handle.request(b_id, TestRequest::Hold).await }
    });
    let held = within("b to receive the request", b.held.recv())
        .await
        .unwrap();
    drop(b.held);
    b.cancel.cancel();
    b.tasks.close();
    within("b to stop", b.tasks.wait()).await;
    drop(held);

    let response = within("in-flight request to fail", pending).await.unwrap();
    assert!(response.is_err(), "expected an error, got {response:?}");
    wait_for(&mut a_events, PeerEvent::Disconnected(b_id)).await;

    // A new request cannot reconnect: nobody listens there any more.
    let response = within(
        "new request to fail",
        a.handle.request(b_id, TestRequest::Ping(1)),
    )
    .await;
    assert!(
        matches!(response, Err(P2pError::Unreachable { .. })),
        "expected unreachable, got {response:?}"
    );

    a.stop().await;
}

#[tokio::test]
async fn request_reconnects_after_peer_restarts() {
    // B dials A, so A sees only B's ephemeral source port; B's listen
    // address reaches A through identify alone.
    let a = start([7; 32]).await;
    let b = start([7; 32]).await;
    let mut a_events = a.handle.peer_events();
    let b_id = b.id();
    within("dial", b.handle.dial(a.addr().await)).await.unwrap();
    wait_for(&mut a_events, PeerEvent::Identified(b_id)).await;

    let b_keypair = b.keypair.clone();
    let b_listen: Multiaddr = b
        .addr()
        .await
        .iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect();
    b.stop().await;
    wait_for(&mut a_events, PeerEvent::Disconnected(b_id)).await;

    // A request while B is down fails, and makes libp2p's own address caches
    // forget B's address.
    let down = within(
        "request to a stopped peer",
        a.handle.request(b_id, TestRequest::Ping(2)),
    )
    .await;
    assert!(
        matches!(down, Err(P2pError::Unreachable { .. })),
        "{down:?}"
    );

    // Same identity, same address: a request by peer id finds it again.
    let b = start_with(b_keypair, [7; 32], b_listen, REQUEST_TIMEOUT).await;
    let pong = within(
        "request after restart",
        a.handle.request(b_id, TestRequest::Ping(3)),
    )
    .await;
    assert_eq!(pong.unwrap(), TestResponse::Pong(3));

    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn large_messages_pass_both_ways() {
    // Size, not speed, is the point: an unoptimised build on a loaded
    // machine may take longer than the default request timeout to encrypt
    // 10 MiB.
    let big = |secret| start_with(Keypair::generate_ed25519(), secret, loopback(), DEADLINE);
    let (a, b) = (big([7; 32]).await, big([7; 32]).await);
    let dialed = within("dial", a.handle.dial(b.addr().await)).await.unwrap();
    assert_eq!(dialed, b.id());
    let payload = "x".repeat(5 * 1024 * 1024);

    let started = Instant::now();
    let echo = within(
        "5 MiB echo",
        a.handle.request(b.id(), TestRequest::Echo(payload.clone())),
    )
    .await;
    assert_eq!(echo.unwrap(), TestResponse::Echo(payload));
    tracing::info!(elapsed = ?started.elapsed(), "5 MiB each way");

    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn gossip_reaches_the_other_peer() {
    let a = start([7; 32]).await;
    let mut b = start([7; 32]).await;
    let mut a_events = a.handle.peer_events();
    within("dial", a.handle.dial(b.addr().await)).await.unwrap();
    // Publishing before the remote's subscription is known has no one to
    // send to.
    wait_for(&mut a_events, PeerEvent::Subscribed(b.id())).await;

    a.handle.publish(b"free=42".to_vec()).await.unwrap();
    let (author, data) = within("gossip", b.gossip.recv()).await.unwrap();
    assert_eq!(author, a.id());
    assert_eq!(data, b"free=42");

    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn invalid_protocol_is_a_config_error() {
    let mut config = P2pConfig::new(Keypair::generate_ed25519(), [0; 32]);
    config.protocol = "pinfleet-rpc";
    let result =
        spawn::<TestRequest, TestResponse>(config, CancellationToken::new(), &TaskTracker::new())
            .await;
    assert!(matches!(result, Err(P2pError::InvalidConfig { .. })));
}

#[test]
fn config_debug_hides_the_secret() {
    let config = P2pConfig::new(Keypair::generate_ed25519(), [0xab; 32]);
    let printed = format!("{config:?}");
    assert!(
        !printed.contains("ab, ab") && !printed.contains("171"),
        "{printed}"
    );
    assert!(printed.contains("secret_fingerprint"));
}
