//! KuboClient against the mock Kubo (and, for HTTP trailers, a raw socket).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use pinfleet::ipfs::{
    IpfsBackend, IpfsError, KuboClient, NoBackend, PinKind, PinLsFilter, PinOpts, PinnedCid,
    RepoStat,
};
use pinfleet::manifest::CidKey;
use pinfleet::testkit::MockKubo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::support::{cid_v0, cid_v1};

/// No test step may take longer than this.
const BOUND: Duration = Duration::from_secs(10);

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {BOUND:?}"))
}

fn key(seed: &str) -> CidKey {
    CidKey::parse(&cid_v1(seed)).unwrap()
}

async fn kubo() -> (MockKubo, KuboClient) {
    let (mock, url) = MockKubo::start().await.unwrap();
    let client = KuboClient::new(&url, Duration::from_secs(5)).unwrap();
    (mock, client)
}

fn opts(progress_timeout: Duration) -> PinOpts {
    PinOpts {
        progress_timeout,
        ..PinOpts::default()
    }
}

async fn listed(client: &KuboClient, filter: PinLsFilter) -> Vec<PinnedCid> {
    bounded("pin ls", client.pin_ls(filter).try_collect())
        .await
        .unwrap()
}

#[tokio::test]
async fn id_reports_the_node() {
    let (mock, client) = kubo().await;
    mock.set_peer_id("QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN");
    let id = bounded("id", client.id()).await.unwrap();
    assert_eq!(id.id, "QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN");
    assert!(id.agent_version.starts_with("kubo/"), "{id:?}");
    assert!(
        id.addresses[0].ends_with(&format!("/p2p/{}", id.id)),
        "{id:?}"
    );
    assert_eq!(mock.calls()[0].endpoint, "id");
}

#[tokio::test]
async fn pin_list_unpin_round_trip_with_a_v0_cid() {
    let (mock, client) = kubo().await;
    // A manifest may say Qm…; the key is the same content either way.
    let cid = CidKey::parse(&cid_v0("round-trip")).unwrap();
    let other = key("other");
    mock.add_pins([(other, PinKind::Direct)]);

    bounded("pin", client.pin(cid, opts(Duration::from_secs(5)), None))
        .await
        .unwrap();
    assert_eq!(mock.pinned(cid), Some(PinKind::Recursive));
    let call = &mock.calls()[0];
    assert_eq!(call.endpoint, "pin/add");
    assert_eq!(call.args, vec![cid.to_string()]);
    for flag in ["recursive", "progress"] {
        assert!(
            call.query.contains(&(flag.into(), "true".into())),
            "{call:?}"
        );
    }

    let recursive = listed(&client, PinLsFilter::Recursive).await;
    assert_eq!(
        recursive,
        vec![PinnedCid {
            cid,
            kind: PinKind::Recursive
        }]
    );
    assert_eq!(listed(&client, PinLsFilter::All).await.len(), 2);

    bounded("unpin", client.unpin(cid, true)).await.unwrap();
    assert_eq!(mock.pinned(cid), None);
    assert!(listed(&client, PinLsFilter::Recursive).await.is_empty());
    let again = bounded("unpin", client.unpin(cid, true)).await.unwrap_err();
    assert!(
        matches!(again, IpfsError::NotPinned { cid: c } if c == cid),
        "{again:?}"
    );
}

#[tokio::test]
async fn listing_normalises_pins_kubo_spells_as_v0() {
    let (mock, client) = kubo().await;
    let v0 = cid_v0("made-by-hand");
    mock.add_pin_exact(cid::Cid::try_from(v0.as_str()).unwrap(), PinKind::Recursive);
    assert_eq!(mock.pins()[0].0, v0, "kubo keeps the v0 spelling");
    let pins = listed(&client, PinLsFilter::Recursive).await;
    assert_eq!(pins.len(), 1);
    assert_eq!(pins[0].cid, key("made-by-hand"));
}

#[tokio::test]
async fn pin_ls_streams_fifty_thousand_pins() {
    let (mock, client) = kubo().await;
    const N: usize = 50_000;
    mock.add_pins((0..N).map(|i| (key(&format!("pin-{i}")), PinKind::Recursive)));
    let started = Instant::now();
    let (count, last) =
        bounded(
            "listing 50k pins",
            client.pin_ls(PinLsFilter::Recursive).try_fold(
                (0usize, None),
                |(n, _), p| async move { Ok((n + 1, Some(p))) },
            ),
        )
        .await
        .unwrap();
    assert_eq!(count, N);
    assert_eq!(last.unwrap().kind, PinKind::Recursive);
    eprintln!("listed {N} pins in {:?}", started.elapsed());
}

#[tokio::test]
async fn an_unreachable_node_is_reported_quickly() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }; // closed again: connections are refused
    let url = format!("http://127.0.0.1:{port}");
    let client = KuboClient::new(&url, Duration::from_secs(5)).unwrap();
    let started = Instant::now();
    let err = bounded("id", client.id()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(err, IpfsError::Unreachable { url: ref u, .. } if *u == url),
        "{err:?}"
    );
    assert_eq!(err.to_string(), format!("kubo at {url} is unreachable"));
    assert!(err.is_transient());

    let pin = client.pin(key("x"), opts(Duration::from_secs(5)), None);
    let err = bounded("pin", pin).await.unwrap_err();
    assert!(matches!(err, IpfsError::Unreachable { .. }), "{err:?}");
    let ls: Vec<_> = bounded("pin ls", client.pin_ls(PinLsFilter::All).collect()).await;
    assert!(
        matches!(ls[..], [Err(IpfsError::Unreachable { .. })]),
        "{ls:?}"
    );
}

#[tokio::test]
async fn kubo_error_messages_surface() {
    let (mock, client) = kubo().await;
    mock.fail_next(1, 500, "datastore closed");
    let err = bounded("id", client.id()).await.unwrap_err();
    assert!(
        matches!(
            err,
            IpfsError::Http {
                status: 500,
                code: Some(0),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "kubo answered 500: datastore closed");
    bounded("id", client.id()).await.unwrap(); // only the next one failed

    mock.set_down(true);
    let err = bounded("pin", client.pin(key("d"), opts(BOUND), None))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "kubo answered 503: mock kubo is down");
    assert!(err.is_transient());
    mock.set_down(false);

    let err = bounded("connect", client.swarm_connect("not-a-multiaddr".into()))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("kubo answered 500: failed to parse multiaddr")
    );
}

#[tokio::test]
async fn garbage_is_an_error_not_a_panic() {
    let (mock, client) = kubo().await;
    mock.garbage(true);
    let is_garbage = |r: Result<(), IpfsError>| matches!(r, Err(IpfsError::Garbage { .. }));
    assert!(is_garbage(bounded("id", client.id()).await.map(drop)));
    assert!(is_garbage(
        bounded("stat", client.repo_stat()).await.map(drop)
    ));
    assert!(is_garbage(bounded("gc", client.gc()).await.map(drop)));
    assert!(is_garbage(
        bounded("block", client.block_stat(key("g")))
            .await
            .map(drop)
    ));
    assert!(is_garbage(
        bounded("pin", client.pin(key("g"), opts(BOUND), None)).await
    ));
    let ls: Vec<_> = bounded("pin ls", client.pin_ls(PinLsFilter::All).collect()).await;
    assert!(matches!(ls[..], [Err(IpfsError::Garbage { .. })]), "{ls:?}");
    let err = bounded("id", client.id()).await.unwrap_err().to_string();
    assert!(
        err.starts_with("kubo sent an undecodable response: id:"),
        "{err}"
    );
}

#[tokio::test]
async fn a_pin_that_never_progresses_times_out_after_the_progress_timeout() {
    let (mock, client) = kubo().await;
    let cid = key("never");
    mock.never_arrives(cid);
    // The mock repeats Kubo's `{}` heartbeat every 100ms: lines that are not
    // progress must not keep the pin alive.
    let limit = Duration::from_millis(300);
    let started = Instant::now();
    let err = bounded("pin", client.pin(cid, opts(limit), None))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= limit && took < Duration::from_secs(2),
        "took {took:?}"
    );
    assert!(
        matches!(err, IpfsError::Timeout { stalled_for, .. } if stalled_for == limit),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("pin of {cid} stalled: no progress for 300ms")
    );
    assert_eq!(mock.pinned(cid), None);
}

#[tokio::test]
async fn steady_progress_is_never_a_stall() {
    let (mock, client) = kubo().await;
    let cid = key("slow");
    // 20 steps, 100ms apart: 2s in all, twice the 1s limit (which leaves a
    // loaded machine 900ms of slack between two steps).
    mock.slow_progress(cid, 20, Duration::from_millis(100));
    let (tx, mut rx) = mpsc::channel(64);
    let started = Instant::now();
    bounded(
        "pin",
        client.pin(cid, opts(Duration::from_secs(1)), Some(tx)),
    )
    .await
    .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(mock.pinned(cid), Some(PinKind::Recursive));
    let mut seen = Vec::new();
    while let Ok(n) = rx.try_recv() {
        seen.push(n);
    }
    assert_eq!(seen, (1..=20).collect::<Vec<u64>>());
}

#[tokio::test]
async fn an_error_object_mid_stream_aborts_the_pin() {
    let (mock, client) = kubo().await;
    let cid = key("broken");
    mock.fail_midstream(cid, "failed to fetch block: context canceled");
    let err = bounded("pin", client.pin(cid, opts(BOUND), None))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "kubo aborted the response: failed to fetch block: context canceled"
    );
}

/// Serves one connection with `response`, verbatim, as Go's net/http would
/// write it.
async fn raw_server(response: String) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "client went away before sending a request");
            req.extend_from_slice(&buf[..n]);
        }
        // A client that stops reading early may close the socket under us.
        if sock.write_all(response.as_bytes()).await.is_ok() {
            let _ = sock.shutdown().await;
        }
    });
    (url, task)
}

fn chunked_with_error_trailer(lines: &[&str], error: &str) -> String {
    let mut out = String::from(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTrailer: X-Stream-Error\r\n\
         Transfer-Encoding: chunked\r\nX-Chunked-Output: 1\r\nConnection: close\r\n\r\n",
    );
    for l in lines {
        let chunk = format!("{l}\n");
        out.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    out.push_str(&format!("0\r\nX-Stream-Error: {error}\r\n\r\n"));
    out
}

#[tokio::test]
async fn an_x_stream_error_trailer_aborts_the_pin() {
    let response = chunked_with_error_trailer(
        &["{}", r#"{"Progress":3,"Bytes":786432}"#],
        "merkledag: not found",
    );
    let (url, server) = raw_server(response).await;
    let client = KuboClient::new(&url, BOUND).unwrap();
    let err = bounded("pin", client.pin(key("t"), opts(BOUND), None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, IpfsError::Aborted { ref message } if message == "merkledag: not found"),
        "{err:?}"
    );
    bounded("raw server", server).await.unwrap();
}

#[tokio::test]
async fn an_x_stream_error_trailer_ends_a_listing_with_an_error() {
    let v1 = cid_v1("t1");
    let response = chunked_with_error_trailer(
        &[&format!(r#"{{"Cid":"{v1}","Type":"recursive"}}"#)],
        "context canceled",
    );
    let (url, server) = raw_server(response).await;
    let client = KuboClient::new(&url, BOUND).unwrap();
    let items: Vec<_> = bounded("pin ls", client.pin_ls(PinLsFilter::All).collect()).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0].as_ref().unwrap().cid, key("t1"));
    assert!(
        matches!(&items[1], Err(IpfsError::Aborted { message }) if message == "context canceled"),
        "{items:?}"
    );
    bounded("raw server", server).await.unwrap();
}

/// A response whose body is `body`, ended by closing the connection.
fn until_close(body: &str) -> String {
    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{body}")
}

#[tokio::test]
async fn a_line_over_one_mib_is_garbage() {
    let line = format!(r#"{{"Progress":1,"Pad":"{}"}}"#, "x".repeat(2 << 20));
    let (url, server) = raw_server(until_close(&format!("{line}\n"))).await;
    let client = KuboClient::new(&url, BOUND).unwrap();
    let err = bounded("pin", client.pin(key("long"), opts(BOUND), None))
        .await
        .unwrap_err();
    assert!(matches!(err, IpfsError::Garbage { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "kubo sent an undecodable response: pin/add: a line longer than 1048576 bytes"
    );
    bounded("raw server", server).await.unwrap();

    // A line just under the limit is read whole.
    let v1 = cid_v1("long");
    let pad = "x".repeat((1 << 20) - 100);
    let line = format!(r#"{{"Cid":"{v1}","Type":"recursive","Pad":"{pad}"}}"#);
    assert!(line.len() <= 1 << 20);
    let (url, server) = raw_server(until_close(&format!("{line}\n"))).await;
    let client = KuboClient::new(&url, BOUND).unwrap();
    let pins = listed(&client, PinLsFilter::All).await;
    assert_eq!(
        pins.iter().map(|p| p.cid).collect::<Vec<_>>(),
        vec![key("long")]
    );
    bounded("raw server", server).await.unwrap();
}

#[tokio::test]
async fn a_body_that_breaks_off_is_a_disconnect() {
    // Content-Length promises more than is sent before the socket closes.
    let v1 = cid_v1("cut");
    let body = format!("{{\"Cid\":\"{v1}\",\"Type\":\"recursive\"}}\n{{\"Cid\":\"ba");
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len() + 100
    );
    let (url, server) = raw_server(response).await;
    let client = KuboClient::new(&url, BOUND).unwrap();
    let items: Vec<_> = bounded("pin ls", client.pin_ls(PinLsFilter::All).collect()).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0].as_ref().unwrap().cid, key("cut"));
    assert!(
        matches!(&items[1], Err(IpfsError::Disconnected { .. })),
        "{items:?}"
    );
    bounded("raw server", server).await.unwrap();

    // A chunked body whose last chunk never comes.
    let response = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
        Transfer-Encoding: chunked\r\n\r\n3\r\n{}\n\r\n20\r\n{\"Progress\":1"
        .to_string();
    let (url, server) = raw_server(response).await;
    let client = KuboClient::new(&url, BOUND).unwrap();
    let err = bounded("pin", client.pin(key("cut"), opts(BOUND), None))
        .await
        .unwrap_err();
    assert!(matches!(err, IpfsError::Disconnected { .. }), "{err:?}");
    bounded("raw server", server).await.unwrap();
}

#[tokio::test]
async fn blank_lines_and_a_last_line_without_newline_are_read() {
    let (a, b) = (cid_v1("a"), cid_v1("b"));
    let body = format!(
        "\n{{\"Cid\":\"{a}\",\"Type\":\"recursive\"}}\r\n  \n{{\"Cid\":\"{b}\",\"Type\":\"direct\"}}"
    );
    let (url, server) = raw_server(until_close(&body)).await;
    let client = KuboClient::new(&url, BOUND).unwrap();
    let pins = listed(&client, PinLsFilter::All).await;
    assert_eq!(
        pins,
        vec![
            PinnedCid {
                cid: key("a"),
                kind: PinKind::Recursive
            },
            PinnedCid {
                cid: key("b"),
                kind: PinKind::Direct
            }
        ]
    );
    bounded("raw server", server).await.unwrap();
}

#[tokio::test]
async fn a_pin_removed_behind_our_back_is_gone_from_the_listing() {
    let (mock, client) = kubo().await;
    let (a, b) = (key("a"), key("b"));
    for cid in [a, b] {
        bounded("pin", client.pin(cid, opts(BOUND), None))
            .await
            .unwrap();
    }
    mock.remove_behind_back(a);
    let pins = listed(&client, PinLsFilter::Recursive).await;
    assert_eq!(pins.iter().map(|p| p.cid).collect::<Vec<_>>(), vec![b]);
    assert_eq!(mock.count_calls("pin/rm"), 0);
}

#[tokio::test]
async fn repo_stat_reports_sizes_and_no_limit() {
    let (mock, client) = kubo().await;
    mock.set_repo(123_456_789, 10_000_000_000);
    let stat = bounded("stat", client.repo_stat()).await.unwrap();
    assert_eq!(
        stat,
        RepoStat {
            repo_size: 123_456_789,
            storage_max: Some(10_000_000_000),
            num_objects: None,
        }
    );
    let call = &mock.calls()[0];
    assert!(call.query.contains(&("size-only".into(), "true".into())));
    mock.set_repo(5, u64::MAX);
    let stat = bounded("stat", client.repo_stat()).await.unwrap();
    assert_eq!(stat.storage_max, None);
}

#[tokio::test]
async fn update_gc_connect_and_block_stat() {
    let (mock, client) = kubo().await;
    let (old, new) = (key("v1"), key("v2"));
    bounded("pin", client.pin(old, opts(BOUND), None))
        .await
        .unwrap();
    bounded("update", client.pin_update(old, new, BOUND))
        .await
        .unwrap();
    assert_eq!(mock.pinned(old), None);
    assert_eq!(mock.pinned(new), Some(PinKind::Recursive));
    let err = bounded("update", client.pin_update(old, new, BOUND))
        .await
        .unwrap_err();
    assert!(
        matches!(err, IpfsError::NotPinned { cid } if cid == old),
        "{err:?}"
    );

    // The streamed `{"Key": {"/": cid}}` lines are counted and named.
    let report = bounded("gc", client.gc()).await.unwrap();
    assert_eq!((report.removed, report.keys), (1, vec![old.to_string()]));
    let report = bounded("gc", client.gc()).await.unwrap();
    assert_eq!((report.removed, report.keys.len()), (0, 0));

    let origin = "/ip4/10.0.0.7/tcp/4001/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN";
    let with_origin = PinOpts {
        origins: vec![origin.into()],
        ..opts(BOUND)
    };
    bounded("pin", client.pin(key("o"), with_origin, None))
        .await
        .unwrap();
    bounded("connect", client.swarm_connect(origin.into()))
        .await
        .unwrap();
    assert_eq!(mock.connected().last().map(String::as_str), Some(origin));

    mock.put_block(key("blk"), 777);
    assert_eq!(
        bounded("block", client.block_stat(key("blk")))
            .await
            .unwrap(),
        777
    );
    let err = bounded("block", client.block_stat(key("absent")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, IpfsError::NotFound { cid } if cid == key("absent")),
        "{err:?}"
    );
    let block_call = mock.calls().pop().unwrap();
    assert!(
        block_call
            .query
            .contains(&("offline".into(), "true".into()))
    );
}

#[tokio::test]
async fn a_stopped_node_is_unreachable_until_restarted() {
    let (mock, client) = kubo().await;
    let cid = key("in-flight");
    mock.never_arrives(cid);
    let pin = client.pin(cid, opts(BOUND), None);
    tokio::pin!(pin);
    // Let the pin start streaming, then kill the node under it.
    let raced = tokio::time::timeout(Duration::from_millis(200), &mut pin).await;
    assert!(raced.is_err(), "the pin finished early: {raced:?}");
    bounded("stop", mock.stop()).await;
    let started = Instant::now();
    let err = bounded("pin", pin).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited for the timeout"
    );
    assert!(matches!(err, IpfsError::Disconnected { .. }), "{err:?}");

    let err = bounded("id", client.id()).await.unwrap_err();
    assert!(matches!(err, IpfsError::Unreachable { .. }), "{err:?}");
    bounded("restart", mock.restart()).await.unwrap();
    bounded("id", client.id()).await.unwrap();
}

#[tokio::test]
async fn a_slow_answer_is_a_timeout() {
    let (mock, url) = MockKubo::start().await.unwrap();
    let client = KuboClient::new(&url, Duration::from_millis(100)).unwrap();
    mock.set_latency(Duration::from_millis(500));
    let err = bounded("id", client.id()).await.unwrap_err();
    assert!(
        matches!(err, IpfsError::Timeout { stalled_for, .. } if stalled_for == Duration::from_millis(100)),
        "{err:?}"
    );
    assert!(err.to_string().contains("stalled"), "{err}");
}

#[tokio::test]
async fn no_backend_refuses_everything() {
    let backend: Arc<dyn IpfsBackend> = Arc::new(NoBackend);
    assert_eq!(backend.kind(), "none");
    let cid = key("n");
    let refused = |r: Result<(), IpfsError>| matches!(r, Err(IpfsError::NotConfigured));
    assert!(refused(backend.id().await.map(drop)));
    assert!(refused(backend.pin(cid, PinOpts::default(), None).await));
    assert!(refused(backend.unpin(cid, true).await));
    assert!(refused(backend.pin_update(cid, cid, BOUND).await));
    assert!(refused(backend.repo_stat().await.map(drop)));
    assert!(refused(backend.gc().await.map(drop)));
    assert!(refused(
        backend.swarm_connect("/ip4/1.2.3.4/tcp/1".into()).await
    ));
    assert!(refused(backend.block_stat(cid).await.map(drop)));
    let ls: Vec<_> = backend.pin_ls(PinLsFilter::All).collect().await;
    assert!(matches!(ls[..], [Err(IpfsError::NotConfigured)]));
    assert_eq!(
        IpfsError::NotConfigured.to_string(),
        "no ipfs backend is configured: this peer runs consensus only"
    );
}

#[tokio::test]
async fn kubo_is_usable_as_a_trait_object() {
    let (mock, client) = kubo().await;
    let backend: Arc<dyn IpfsBackend> = Arc::new(client);
    assert_eq!(backend.kind(), "kubo");
    let cid = key("dyn");
    let direct = PinOpts {
        recursive: false,
        ..opts(BOUND)
    };
    bounded("pin", backend.pin(cid, direct, None))
        .await
        .unwrap();
    assert_eq!(mock.pinned(cid), Some(PinKind::Direct));
    let pins: Vec<_> = bounded(
        "pin ls",
        backend.pin_ls(PinLsFilter::Direct).try_collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    assert_eq!(pins[0].kind, PinKind::Direct);
}
