//! Bounded input on the REST API (issue 13 item 7), on in-process peers:
//! the `/add` upload cap (413, nothing kept, nothing imported or pinned),
//! the slots of `PUT`/`PATCH /pinsets` (503 with `Retry-After` when all are
//! held), the small cap of `PUT …/conditions`, and read timeouts that cut a
//! trickling client without cutting a slow answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use pinfleet::controller::ReconcileRequests;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{cid_v1, pinset_yaml};

const DEADLINE: Duration = Duration::from_secs(20);

use crate::inproc::Api;

async fn assert_error(resp: reqwest::Response, code: u16) -> serde_json::Value {
    assert_eq!(resp.status().as_u16(), code);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
    body
}

const CAP: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_over_the_cap_is_413_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(tmp.path(), true, |mut s| {
        s.max_upload_bytes = CAP;
        s
    })
    .await;
    let http = crate::support::http();
    let pins_before = api.allocations().await;
    let size_before = api.ipfs_size().await;

    // Declared over the cap: refused before anything is read.
    let answer = raw_upload(api.addr, CAP as usize + 8 * 1024, false).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("max_upload_bytes"), "{answer}");
    assert!(api.uploads_left().is_empty(), "{:?}", api.uploads_left());

    // Chunked (no length): cut off once it grows past the cap. Raw, so
    // that the answer is read while the rest is still being sent.
    let answer = raw_upload(api.addr, 4 * CAP as usize, true).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"code\":413"), "{answer}");
    assert!(api.uploads_left().is_empty(), "{:?}", api.uploads_left());
    assert_eq!(api.allocations().await, pins_before, "nothing pinned");
    assert_eq!(api.ipfs_size().await, size_before, "nothing imported");

    // Under the cap the same route works.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(vec![1u8; 1000]).file_name("small.bin"),
    );
    let ok = http
        .post(format!("{}/add?stream-channels=false", api.url))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200, "{:?}", ok.text().await);
    assert!(api.uploads_left().is_empty());
    assert!(
        api.allocations().await > pins_before,
        "the small one is pinned"
    );
    api.stop().await;
}

/// `POST /add` of one file of `size` bytes (a multiple of 8 KiB), in a
/// chunked body or with its `Content-Length`, sent while the answer is
/// read; returns what was read of the answer (the server may close the
/// connection before the body ends).
async fn raw_upload(addr: std::net::SocketAddr, size: usize, chunked: bool) -> String {
    let conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rx, mut tx) = conn.into_split();
    let writer = tokio::spawn(async move {
        let part = "--b0undary\r\nContent-Disposition: form-data; name=\"file\"; \
                    filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n";
        let end = "\r\n--b0undary--\r\n";
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_string()
        } else {
            format!("Content-Length: {}", part.len() + size + end.len())
        };
        let head = format!(
            "POST /add HTTP/1.1\r\nHost: localhost\r\n{framing}\r\n\
             Content-Type: multipart/form-data; boundary=b0undary\r\n\r\n"
        );
        let frame = |data: &[u8]| -> Vec<u8> {
            if !chunked {
                return data.to_vec();
            }
            let mut out = format!("{:x}\r\n", data.len()).into_bytes();
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
            out
        };
        let mut out = head.into_bytes();
        out.extend(frame(part.as_bytes()));
        if tx.write_all(&out).await.is_err() {
            return;
        }
        let piece = vec![b'z'; 8 * 1024];
        for _ in 0..size / piece.len() {
            // The server stops reading once over the cap: errors are fine.
            if tx.write_all(&frame(&piece)).await.is_err() {
                return;
            }
        }
        let mut last = frame(end.as_bytes());
        if chunked {
            last.extend_from_slice(b"0\r\n\r\n");
        }
        let _ = tx.write_all(&last).await;
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    loop {
        match tokio::time::timeout(DEADLINE, rx.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("no answer within {DEADLINE:?}"),
        }
        let text = String::from_utf8_lossy(&got);
        if text.contains("\r\n\r\n{") && text.ends_with('}') {
            break;
        }
        assert!(start.elapsed() < DEADLINE);
    }
    writer.abort();
    String::from_utf8_lossy(&got).into_owned()
}

/// A `PUT /pinsets/{ns}/{name}` whose body is sent by the test, piece by
/// piece, through the returned sender.
fn slow_put(
    url: &str,
    name: &str,
) -> (
    tokio::sync::mpsc::Sender<Vec<u8>>,
    tokio::task::JoinHandle<reqwest::Response>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::io::Error>);
    let request = crate::support::http()
        .put(format!("{url}/pinsets/bounded/{name}"))
        .body(reqwest::Body::wrap_stream(stream));
    (
        tx,
        tokio::spawn(async move { request.send().await.unwrap() }),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn pinset_writes_beyond_the_slots_get_503_with_retry_after() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(tmp.path(), false, |mut s| {
        s.pinset_write_wait = Duration::from_millis(200);
        s.with_pinset_writes(2)
    })
    .await;
    let slots = Arc::clone(&api.state.pinset_writes);

    // Two slow writers hold both slots, their bodies half sent.
    let mut writers = Vec::new();
    for name in ["slow-a", "slow-b"] {
        let (tx, answer) = slow_put(&api.url, name);
        let doc = pinset_yaml("bounded", name, &[cid_v1(name)]);
        let (head, tail) = doc.split_at(doc.len() / 2);
        tx.send(head.as_bytes().to_vec()).await.unwrap();
        writers.push((tx, tail.as_bytes().to_vec(), answer));
    }
    let start = Instant::now();
    while slots.available_permits() > 0 {
        assert!(start.elapsed() < DEADLINE, "the slow writers never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let http = crate::support::http();
    for method in [reqwest::Method::PUT, reqwest::Method::PATCH] {
        let busy = http
            .request(method.clone(), format!("{}/pinsets/bounded/third", api.url))
            .body(pinset_yaml("bounded", "third", &[cid_v1("third")]))
            .send()
            .await
            .unwrap();
        assert_eq!(
            busy.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap()),
            Some("1"),
            "{method}"
        );
        assert_error(busy, 503).await;
    }
    // Reads are not limited.
    let read = http
        .get(format!("{}/pinsets", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status().as_u16(), 200);

    // The slow writers finish and succeed; then a new write gets a slot.
    for (tx, tail, answer) in writers {
        tx.send(tail).await.unwrap();
        drop(tx);
        let resp = answer.await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
    }
    let later = http
        .put(format!("{}/pinsets/bounded/third", api.url))
        .body(pinset_yaml("bounded", "third", &[cid_v1("third")]))
        .send()
        .await
        .unwrap();
    assert_eq!(later.status().as_u16(), 200, "{:?}", later.text().await);
    assert_eq!(slots.available_permits(), 2, "every slot is given back");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conditions_bodies_are_capped_small() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(tmp.path(), false, |s| s).await;
    let http = crate::support::http();
    let url = format!("{}/pinsets/bounded/cond/conditions", api.url);
    let condition = serde_json::json!({
        "type": "Ready", "status": "True", "reason": "Applied", "message": "x".repeat(1000),
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    });
    let report = |n: usize| {
        serde_json::json!({
            "source": "it", "revision": "r1",
            "conditions": vec![condition.clone(); n],
        })
    };
    let big = serde_json::to_vec(&report(70)).unwrap();
    assert!(big.len() as u64 > pinfleet::api::MAX_CONDITIONS_BODY_BYTES);
    // Raw: the server answers 413 and closes before the body is all sent,
    // which a client library may report as a broken pipe instead.
    let mut conn = tokio::net::TcpStream::connect(api.addr).await.unwrap();
    let head = format!(
        "PUT /pinsets/bounded/cond/conditions HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let _ = conn.write_all(&big).await; // may be cut off by the answer
    let answer = read_until_closed(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"code\":413"), "{answer}");
    let small = http.put(&url).json(&report(1)).send().await.unwrap();
    assert_ne!(small.status().as_u16(), 413);
    assert!(small.status().is_success(), "{:?}", small.text().await);
    api.stop().await;
}

/// Reads from `conn` until the server closes it or [`DEADLINE`]; returns
/// what it sent.
async fn read_until_closed(conn: &mut tokio::net::TcpStream) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(DEADLINE, conn.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the server kept a stalled connection open");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trickling_client_is_cut_and_a_slow_answer_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    const SOURCE: &str = "dir:/srv/bounded";
    let requests = ReconcileRequests::default();
    let api = Api::start(tmp.path(), false, |mut s| {
        s.read_timeout = Duration::from_millis(500);
        s.reconcile_now = Some(Arc::new(BTreeMap::from([(
            SOURCE.to_string(),
            requests.clone(),
        )])));
        s
    })
    .await;

    // Headers that never end: the connection is closed.
    let mut headers = tokio::net::TcpStream::connect(api.addr).await.unwrap();
    headers
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    // A body that stops halfway: 408, then closed.
    let mut body = tokio::net::TcpStream::connect(api.addr).await.unwrap();
    body.write_all(
        b"PUT /pinsets/bounded/trickle HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\napiVersion: pinfl",
    )
    .await
    .unwrap();
    // Meanwhile the server answers others.
    assert!(api.healthy().await);

    let started = Instant::now();
    let answer = read_until_closed(&mut body).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":408"), "{answer}");
    let _ = read_until_closed(&mut headers).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(api.healthy().await, "still serving after cutting them");

    // An answer that takes longer than read_timeout is not cut: a
    // reconcile-now that waits 2 s for a controller that never comes.
    let http = crate::support::http();
    let put = http
        .put(format!(
            "{}/pinsets/bounded/slow?source={}",
            api.url, "dir%3A%2Fsrv%2Fbounded"
        ))
        .body(pinset_yaml("bounded", "slow", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 200, "{:?}", put.text().await);
    let begun = Instant::now();
    let waited = http
        .post(format!(
            "{}/pinsets/bounded/slow/reconcile?wait=true&timeout=2s",
            api.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(waited.status().as_u16(), 504);
    assert!(begun.elapsed() >= Duration::from_secs(2));
    api.stop().await;
}
