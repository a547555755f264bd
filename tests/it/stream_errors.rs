//! Stream answers end with IPFS Cluster's `X-Stream-Error` trailer: empty
//! when every item was sent, the error when the answer failed halfway
//! (here: a pin record damaged on disk, met in the middle of the listing).
//! A client that did not ask for trailers (`TE: trailers`) gets a cut body
//! instead, never a complete-looking one. One in-process peer of its own,
//! read with a raw HTTP/1.1 client, the library client and the CLI.

use std::process::Command;
use std::time::Duration;

use libp2p::identity::Keypair;
use pinfleet::api::{ApiState, serve};
use pinfleet::client::{Client, ClientError};
use pinfleet::consensus::{ClusterNode, NodeOptions};
use pinfleet::manifest::CidKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::support::cid_v1;

const DEADLINE: Duration = Duration::from_secs(30);
const PINS: usize = 5;

/// What a raw HTTP/1.1 `GET` read to the end of the connection gave.
struct Raw {
    head: String,
    /// The chunks' data, joined.
    body: String,
    /// The bytes after the last (zero-sized) chunk: the trailer section;
    /// `None` when the body was cut before it.
    trailer: Option<String>,
}

/// `GET path` over a fresh connection (`Connection: close`), asking for
/// trailers when `te`, read until the server closes it.
async fn raw_get(addr: &str, path: &str, te: bool) -> Raw {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let te = if te { "TE: trailers\r\n" } else { "" };
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{te}Connection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(DEADLINE, conn.read_to_end(&mut bytes))
        .await
        .expect("the server did not close the connection")
        .unwrap();
    let text = String::from_utf8(bytes).unwrap();
    // A stream that fails before its first flush may be dropped before
    // even its head went out: nothing arrived, nothing looks complete.
    let Some((head, mut rest)) = text.split_once("\r\n\r\n") else {
        return Raw {
            head: text,
            body: String::new(),
            trailer: None,
        };
    };
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let mut body = String::new();
    let trailer = loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            break None;
        };
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break Some(after.to_string());
        }
        if after.len() < size + 2 {
            break None;
        }
        body.push_str(&after[..size]);
        assert_eq!(&after[size..size + 2], "\r\n");
        rest = &after[size + 2..];
    };
    Raw {
        head: head.to_string(),
        body,
        trailer,
    }
}

/// The CIDs of the body's lines (`PinRecord`s), in order.
fn cids_of(body: &str) -> Vec<String> {
    body.lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            v["cid"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_with_an_empty_trailer_and_one_failing_halfway_carries_the_error() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let tasks = TaskTracker::new();
    let cancel = CancellationToken::new();
    let opts = NodeOptions::new(
        dir.path().to_path_buf(),
        Keypair::generate_ed25519(),
        [3u8; 32],
    );
    let node = ClusterNode::start(opts, cancel.clone(), &tasks)
        .await
        .unwrap();
    node.wait_ready(DEADLINE).await.unwrap();
    let store = node.store().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let url = format!("http://{addr}");
    let server = tokio::spawn(serve(
        listener,
        ApiState::new(node, "0.0.0-it", "it-peer"),
        cancel.clone(),
    ));

    // The CIDs in the order the state lists them (by CID bytes).
    let mut cids: Vec<CidKey> = (0..PINS)
        .map(|i| CidKey::parse(&cid_v1(&format!("stream-errors-{i}"))).unwrap())
        .collect();
    cids.sort_by_key(|c| c.cid().to_bytes());
    let listed: Vec<String> = cids.iter().map(|c| c.to_string()).collect();
    let http = crate::support::http();
    for c in &listed {
        let resp = http.post(format!("{url}/pins/{c}")).send().await.unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
    }

    // Fine: every item, then an empty X-Stream-Error trailer.
    let fine = raw_get(&addr, "/allocations", true).await;
    assert!(fine.head.starts_with("HTTP/1.1 200"), "{}", fine.head);
    assert!(
        fine.head
            .to_ascii_lowercase()
            .contains("trailer: x-stream-error"),
        "{}",
        fine.head
    );
    assert_eq!(cids_of(&fine.body), listed);
    assert_eq!(
        fine.trailer
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("x-stream-error: \r\n\r\n"),
        "the body ends with the empty trailer"
    );
    // A client that did not ask for trailers gets a plain complete end.
    let plain = raw_get(&addr, "/allocations", false).await;
    assert_eq!(cids_of(&plain.body), listed);
    assert_eq!(plain.trailer.as_deref(), Some("\r\n"));
    // The library client reads the whole listing without an error.
    let client = Client::new(&url).unwrap();
    let mut lines = client.allocations(None).await.unwrap();
    let mut n = 0;
    while let Some(item) = lines.next().await {
        item.unwrap();
        n += 1;
    }
    assert_eq!(n, PINS);

    // The last record in the listing order no longer decodes: the stream
    // fails after the items before it.
    store.corrupt_pin_for_tests(&cids[PINS - 1]).unwrap();
    let failed = raw_get(&addr, "/allocations", true).await;
    assert!(failed.head.starts_with("HTTP/1.1 200"), "{}", failed.head);
    assert_eq!(
        cids_of(&failed.body),
        listed[..PINS - 1],
        "the items before the failure arrive intact"
    );
    let trailer = failed.trailer.expect("the body ends with its trailer");
    let (name, value) = trailer.split_once(':').unwrap();
    assert!(name.eq_ignore_ascii_case("x-stream-error"), "{trailer:?}");
    assert!(
        value.trim().starts_with("cannot read the state"),
        "the trailer carries the error: {trailer:?}"
    );
    assert!(trailer.ends_with("\r\n\r\n") && trailer.matches("\r\n").count() == 2);

    // Without `TE: trailers` the failed body is cut: no last chunk. hyper
    // drops the connection on the body's error, and items it had not yet
    // flushed are lost with it (seen in CI under load; at times the head
    // too), so what arrives is an intact prefix of the listing, possibly
    // empty, never the failed item or an end.
    let cut = raw_get(&addr, "/allocations", false).await;
    let arrived = cids_of(&cut.body);
    assert!(
        arrived.len() < PINS && arrived[..] == listed[..arrived.len()],
        "{arrived:?}"
    );
    assert!(
        cut.trailer.is_none(),
        "a failed stream must not look complete"
    );

    // The library client reports the server's error after the items.
    let mut lines = client.allocations(None).await.unwrap();
    let mut got = Vec::new();
    let err = loop {
        match lines.next().await.expect("an error, not an end") {
            Ok(p) => got.push(p.cid.to_string()),
            Err(e) => break e,
        }
    };
    assert_eq!(got, listed[..PINS - 1]);
    match &err {
        ClientError::StreamFailed { message, .. } => {
            assert!(message.starts_with("cannot read the state"), "{message}")
        }
        other => panic!("expected StreamFailed, got {other:?}"),
    }
    assert!(lines.next().await.is_none(), "nothing after the error");

    // The CLI fails the export with the server's error and writes no file.
    let out_file = dir.path().join("export.ndjson");
    let o = tokio::task::spawn_blocking({
        let url = url.clone();
        let out_file = out_file.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_pinfleet"))
                .args(["state", "export", "-o", out_file.to_str().unwrap()])
                .args(["--host", &url])
                .env_remove("PINFLEET_HOST")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    assert!(
        stderr.contains("failed halfway") && stderr.contains("cannot read the state"),
        "{stderr}"
    );
    assert!(!out_file.exists());

    cancel.cancel();
    server.await.unwrap().unwrap();
    tasks.close();
    tasks.wait().await;
}
