//! `POST /add` as IPFS Cluster's adder: entries streamed while the upload
//! still arrives, several top-level files without wrapping (only the last
//! root pinned), `progress=true`, `format=car` (embedded and Kubo), the Kubo
//! backend (the upload proxied to Kubo's `add` with the same parameters),
//! `local`, and a failure after the first entry (`X-Stream-Error`, nothing
//! pinned). On the embedded node the upload streams into the importer:
//! a file is imported while it uploads, with nothing on disk, to the CIDs
//! the importer gives the same bytes or tree; an import that fails midway
//! answers why and pins nothing.

use std::sync::Arc;
use std::time::Duration;

use cid::Cid;
use pinfleet::ipfs::unixfs::{AddOptions, add_reader};
use pinfleet::ipfs::{IpfsBackend, KuboClient, car};
use pinfleet::testkit::MockKubo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::inproc::Api;

/// Bound on every wait of these tests.
const DEADLINE: Duration = Duration::from_secs(30);
const BOUNDARY: &str = "b0undary";

fn part_head(name: &str) -> String {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// A raw `POST /add{query}` whose body is sent in steps (chunked), so a
/// test can read the answer while the upload is still open.
struct RawAdd {
    conn: tokio::net::TcpStream,
    got: Vec<u8>,
}

impl RawAdd {
    async fn start(api: &Api, query: &str, first: &[u8]) -> RawAdd {
        let mut conn = tokio::net::TcpStream::connect(api.addr).await.unwrap();
        let head = format!(
            "POST /add{query} HTTP/1.1\r\nHost: localhost\r\nTE: trailers\r\nConnection: close\r\n\
             Transfer-Encoding: chunked\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(&chunk(first)).await.unwrap();
        RawAdd {
            conn,
            got: Vec::new(),
        }
    }

    async fn send(&mut self, data: &[u8]) {
        self.conn.write_all(&chunk(data)).await.unwrap();
    }

    /// Ends the body.
    async fn finish(&mut self) {
        let end = format!("\r\n--{BOUNDARY}--\r\n");
        self.conn.write_all(&chunk(end.as_bytes())).await.unwrap();
        self.conn.write_all(b"0\r\n\r\n").await.unwrap();
    }

    /// Reads the answer until `text` is in it (bounded by [`DEADLINE`]).
    async fn read_until(&mut self, text: &str) {
        let found = tokio::time::timeout(DEADLINE, async {
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&self.got).contains(text) {
                let n = self.conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the answer ended without {text:?}");
                self.got.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "no {text:?} in the answer so far: {}",
            String::from_utf8_lossy(&self.got)
        );
    }

    /// The whole answer (the server closes the connection after it).
    async fn rest(mut self) -> String {
        tokio::time::timeout(DEADLINE, self.conn.read_to_end(&mut self.got))
            .await
            .expect("the answer ends")
            .unwrap();
        String::from_utf8_lossy(&self.got).into_owned()
    }
}

/// The NDJSON objects of a raw chunked answer (the chunk-size lines and
/// the trailer are not JSON objects and are skipped).
fn objects(raw: &str) -> Vec<serde_json::Value> {
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    body.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn pinned(api: &Api, cid: &str) -> bool {
    crate::support::http()
        .get(format!("{}/allocations/{cid}", api.url))
        .send()
        .await
        .unwrap()
        .status()
        .is_success()
}

fn form(parts: &[(&str, Vec<u8>)]) -> reqwest::multipart::Form {
    let mut form = reqwest::multipart::Form::new();
    for (name, data) in parts {
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(data.clone()).file_name(name.to_string()),
        );
    }
    form
}

async fn post_add(
    api: &Api,
    query: &str,
    parts: &[(&str, Vec<u8>)],
) -> (u16, Vec<serde_json::Value>, String) {
    let resp = crate::support::http()
        .post(format!("{}/add{query}", api.url))
        .multipart(form(parts))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let lines = if status == 200 {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    } else {
        Vec::new()
    };
    (status, lines, text)
}

/// Deterministic bytes.
fn noise(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// `data` imported with default options: root and blocks.
fn blocks_of(data: &[u8]) -> (Cid, Vec<(Cid, Vec<u8>)>) {
    let mut blocks = Vec::new();
    let added = add_reader(data, &AddOptions::default(), &mut |c, d| {
        blocks.push((c, d));
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap();
    (added.cid, blocks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_entry_arrives_while_the_second_file_is_still_uploading() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), true, |s| s).await;
    // Part "a" complete and part "b" begun: "a" is imported and answered
    // while "b" has not been sent.
    let mut first = part_head("a").into_bytes();
    first.extend_from_slice(b"the first file\n");
    first.extend_from_slice(format!("\r\n{}", part_head("b")).as_bytes());
    first.extend_from_slice(&noise(1, 1000));
    let mut add = RawAdd::start(&api, "", &first).await;
    add.read_until("\"name\":\"a\"").await;
    assert!(add.got.starts_with(b"HTTP/1.1 200"));
    let head = String::from_utf8_lossy(&add.got).to_lowercase();
    assert!(head.contains("x-chunked-output: 1"), "{head}");
    assert!(head.contains("trailer: x-stream-error"), "{head}");
    assert!(
        !String::from_utf8_lossy(&add.got).contains("\"name\":\"b\""),
        "b is not complete yet"
    );
    add.send(&noise(2, 300 * 1024)).await;
    add.finish().await;
    let raw = add.rest().await;
    let lines = objects(&raw);
    let names: Vec<&str> = lines.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(lines[1]["bytes"], 1000 + 300 * 1024);
    assert!(raw.contains("x-stream-error: \r\n"), "ends complete: {raw}");
    // Only the last root is pinned, as IPFS Cluster does.
    let (a, b) = (
        lines[0]["cid"].as_str().unwrap(),
        lines[1]["cid"].as_str().unwrap(),
    );
    assert!(pinned(&api, b).await);
    assert!(!pinned(&api, a).await);
    assert_eq!(api.allocations().await, 1);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_the_first_entry_ends_with_the_stream_error_and_pins_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), true, |s| s).await;
    let mut first = part_head("a").into_bytes();
    first.extend_from_slice(b"fine\n");
    first.extend_from_slice(format!("\r\n{}", part_head("b")).as_bytes());
    let mut add = RawAdd::start(&api, "", &first).await;
    add.read_until("\"name\":\"a\"").await;
    // Then a part that escapes the upload: refused, after "a" was sent.
    let evil = format!(
        "b data\r\n{}x\r\n--{BOUNDARY}--\r\n",
        part_head("..%2Fescape")
    );
    add.send(evil.as_bytes()).await;
    add.conn.write_all(b"0\r\n\r\n").await.unwrap();
    let raw = add.rest().await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(
        raw.contains("x-stream-error: invalid file name"),
        "the trailer says why: {raw}"
    );
    assert_eq!(api.allocations().await, 0, "nothing is pinned");
    crate::status::eventually("the upload removed", || async {
        api.uploads_left().is_empty().then_some(())
    })
    .await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_entries_without_wrap_are_listed_and_only_the_last_root_is_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), true, |s| s).await;
    let (status, lines, text) = post_add(
        &api,
        "?local=true",
        &[
            ("dir%2Fx", b"x\n".to_vec()),
            ("dir%2Fy", b"y\n".to_vec()),
            ("z", b"z\n".to_vec()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let names: Vec<&str> = lines.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["dir/x", "dir/y", "dir", "z"]);
    for l in &lines[..3] {
        assert!(!pinned(&api, l["cid"].as_str().unwrap()).await, "{l}");
    }
    assert!(pinned(&api, lines[3]["cid"].as_str().unwrap()).await);
    assert_eq!(api.allocations().await, 1);
    // `local` is a boolean like IPFS Cluster's.
    let (status, _, text) = post_add(&api, "?local=maybe", &[("z", b"z".to_vec())]).await;
    assert_eq!(status, 400, "{text}");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reports_the_bytes_read_while_a_large_file_is_chunked() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), true, |s| s).await;
    let big = noise(3, 600 * 1024);
    let (root, _) = blocks_of(&big);
    let (status, lines, text) = post_add(
        &api,
        "?progress=true&stream-channels=false",
        &[("big.bin", big.clone())],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let lines = lines[0].as_array().unwrap();
    let progress: Vec<(&str, u64)> = lines
        .iter()
        .filter(|l| l["cid"].is_null())
        .map(|l| (l["name"].as_str().unwrap(), l["bytes"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        progress,
        [
            ("big.bin", 262_144),
            ("big.bin", 524_288),
            ("big.bin", 614_400)
        ]
    );
    let last = lines.last().unwrap();
    assert_eq!(last["cid"], root.to_string());
    assert_eq!(last["bytes"], 614_400);
    assert!(pinned(&api, &root.to_string()).await);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_car_round_trips_into_another_peer_with_the_same_root_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let source = Api::start(&dir.path().join("a"), true, |s| s).await;
    let target = Api::start(&dir.path().join("b"), true, |s| s).await;
    let data = noise(4, 700 * 1024);
    let (status, lines, text) = post_add(&source, "", &[("data.bin", data.clone())]).await;
    assert_eq!(status, 200, "{text}");
    let root = lines.last().unwrap()["cid"].as_str().unwrap().to_string();
    // The same blocks the source node holds, as a CAR.
    let (cid, blocks) = blocks_of(&data);
    assert_eq!(cid.to_string(), root);
    for (c, d) in &blocks {
        let key = pinfleet::manifest::CidKey::from_cid(*c).unwrap();
        assert_eq!(
            source.ipfs.as_ref().unwrap().block_stat(key).await.unwrap(),
            d.len() as u64
        );
    }
    let car = car::write(&[cid], &blocks);
    let (status, lines, text) =
        post_add(&target, "?format=car&name=imported", &[("data.car", car)]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(lines.len(), 1, "one AddedOutput for the root: {text}");
    assert_eq!(lines[0]["cid"], root.as_str());
    assert_eq!(lines[0]["name"], "data.car");
    assert_eq!(lines[0]["size"], 700 * 1024, "the root's file size");
    assert_eq!(
        lines[0]["bytes"],
        blocks.iter().map(|(_, d)| d.len()).sum::<usize>()
    );
    assert!(pinned(&target, &root).await);
    for (c, d) in &blocks {
        let key = pinfleet::manifest::CidKey::from_cid(*c).unwrap();
        assert_eq!(
            target.ipfs.as_ref().unwrap().block_stat(key).await.unwrap(),
            d.len() as u64,
            "{c} stored"
        );
    }
    source.stop().await;
    target.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cars_are_refused_with_400_and_nothing_is_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), true, |s| s).await;
    let (root, blocks) = blocks_of(&noise(5, 1000));
    let (other, _) = blocks_of(b"other");
    let mut tampered = blocks.clone();
    tampered[0].1[3] ^= 0xff;
    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "?format=car",
            car::write(&[root, other], &blocks),
            "only CAR files with a single root are supported",
        ),
        ("?format=car", b"not a car at all".to_vec(), "invalid car: "),
        (
            "?format=car",
            car::write(&[root], &tampered),
            "does not match its hash",
        ),
        (
            "?format=car&wrap-with-directory=true",
            car::write(&[root], &blocks),
            "cannot wrap a CAR file upload",
        ),
        (
            "?format=tar",
            car::write(&[root], &blocks),
            "unsupported format \\\"tar\\\"",
        ),
    ];
    for (query, body, message) in cases {
        let (status, _, text) = post_add(&api, query, &[("x.car", body)]).await;
        assert_eq!(status, 400, "{query}: {text}");
        assert!(text.contains(message), "{query}: {text}");
    }
    assert_eq!(api.allocations().await, 0);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_kubo_backend_the_upload_goes_to_kubo_and_kubos_root_is_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let (kubo, url) = MockKubo::start().await.unwrap();
    let client = KuboClient::new(&url, Duration::from_secs(10)).unwrap();
    let api = Api::start(dir.path(), false, move |mut s| {
        s.ipfs = Some(Arc::new(client) as Arc<dyn IpfsBackend>);
        s
    })
    .await;
    let big = noise(6, 300 * 1024);
    let (status, lines, text) = post_add(
        &api,
        "?cid-version=1&raw-leaves=false&chunker=size-65536&wrap-with-directory=true&progress=true&name=via-kubo",
        &[("a b.txt", b"first\n".to_vec()), ("big.bin", big)],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let call = kubo
        .calls()
        .into_iter()
        .find(|c| c.endpoint == "add")
        .expect("kubo's add was called");
    for (k, v) in [
        ("cid-version", "1"),
        ("raw-leaves", "false"),
        ("chunker", "size-65536"),
        ("wrap-with-directory", "true"),
        ("hidden", "true"),
        ("pin", "false"),
        ("progress", "true"),
    ] {
        assert!(
            call.query.iter().any(|(qk, qv)| qk == k && qv == v),
            "{k}={v} forwarded: {:?}",
            call.query
        );
    }
    let entries: Vec<&serde_json::Value> = lines.iter().filter(|l| !l["cid"].is_null()).collect();
    let names: Vec<&str> = entries
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a b.txt", "big.bin", ""]);
    assert!(
        lines
            .iter()
            .any(|l| l["cid"].is_null() && l["name"] == "big.bin" && l["bytes"] == 300 * 1024),
        "kubo's progress is passed on: {text}"
    );
    let root = entries[2]["cid"].as_str().unwrap();
    assert_eq!(kubo.added(), vec![root.to_string()], "the root is kubo's");
    assert!(pinned(&api, root).await);

    // Without wrapping: a directory and a file, as two top-level entries;
    // only the last root (kubo's) is pinned.
    let (status, lines, text) = post_add(
        &api,
        "",
        &[
            ("dir%2Fx", b"x\n".to_vec()),
            ("dir%2Fy", b"y\n".to_vec()),
            ("z", b"z\n".to_vec()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let names: Vec<&str> = lines.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["dir/x", "dir/y", "dir", "z"]);
    let added = kubo.added();
    assert_eq!(added.len(), 3, "one kubo add per top-level entry");
    assert_eq!(lines[2]["cid"], added[1].as_str());
    assert_eq!(lines[3]["cid"], added[2].as_str());
    assert!(!pinned(&api, &added[1]).await);
    assert!(pinned(&api, &added[2]).await);

    // A bad CAR is refused before kubo sees it.
    let (status, _, text) = post_add(&api, "?format=car", &[("x.car", b"junk".to_vec())]).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("invalid car"), "{text}");
    assert_eq!(kubo.count_calls("dag/import"), 0);

    // A CAR goes to dag/import, its root not pinned by kubo itself.
    let (car_root, blocks) = blocks_of(&noise(7, 2000));
    let (status, lines, text) = post_add(
        &api,
        "?format=car",
        &[("x.car", car::write(&[car_root], &blocks))],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(lines[0]["cid"], car_root.to_string());
    let import = kubo
        .calls()
        .into_iter()
        .find(|c| c.endpoint == "dag/import")
        .expect("kubo's dag/import was called");
    assert!(
        import
            .query
            .contains(&("pin-roots".to_string(), "false".to_string()))
    );
    assert!(pinned(&api, &car_root.to_string()).await);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_add_imports_a_file_while_it_uploads_with_nothing_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), true, |s| s).await;
    let data = noise(7, 700 * 1024);
    let (root, _) = blocks_of(&data);
    // 600 KiB of the file sent, the rest not: the importer has read past
    // its first 256 KiB (progress says so) while the upload is open, and
    // nothing of it was written under the upload directory.
    let mut first = part_head("big.bin").into_bytes();
    first.extend_from_slice(&data[..600 * 1024]);
    let mut add = RawAdd::start(&api, "?progress=true", &first).await;
    add.read_until("\"bytes\":524288").await;
    assert!(api.uploads_left().is_empty(), "{:?}", api.uploads_left());
    add.send(&data[600 * 1024..]).await;
    add.finish().await;
    let lines = objects(&add.rest().await);
    let last = lines.last().unwrap();
    assert_eq!(last["name"], "big.bin");
    assert_eq!(last["cid"], root.to_string());
    assert!(pinned(&api, &root.to_string()).await);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_mib_file_added_through_the_api_has_the_cid_add_reader_gives() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), true, |s| s).await;
    let data = noise(8, 20 << 20);
    let expected = add_reader(&data[..], &AddOptions::default(), &mut |_, _| {
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap();
    let (status, lines, text) = post_add(&api, "", &[("twenty.bin", data)]).await;
    assert_eq!(status, 200, "{text}");
    let last = lines.last().unwrap();
    assert_eq!(last["cid"], expected.cid.to_string());
    assert_eq!(last["size"], expected.size);
    assert_eq!(last["bytes"], 20 << 20);
    assert!(pinned(&api, &expected.cid.to_string()).await);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrapped_tree_with_implicit_parents_gets_the_cids_of_the_same_tree_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(&dir.path().join("api"), true, |s| s).await;
    let parts: [(&str, Vec<u8>); 4] = [
        ("d%2Fa", b"a\n".to_vec()),
        ("d%2Fsub%2Fb", noise(9, 300 * 1024)),
        ("d%2Fsub%2Fempty", Vec::new()),
        ("e", b"e\n".to_vec()),
    ];
    let tree = dir.path().join("upload");
    for (name, data) in &parts {
        let path = tree.join(name.replace("%2F", "/"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    let on_disk = pinfleet::ipfs::unixfs::add_path(&tree, &AddOptions::default(), &mut |_, _| {
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap();
    let expected: Vec<(String, String)> = on_disk
        .iter()
        .map(|a| {
            let name = a.name.split_once('/').map_or("", |(_, rest)| rest);
            (name.to_string(), a.cid.to_string())
        })
        .collect();
    let (status, lines, text) = post_add(&api, "?wrap-with-directory=true", &parts).await;
    assert_eq!(status, 200, "{text}");
    let got: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().into(),
                l["cid"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert!(pinned(&api, &expected.last().unwrap().1).await);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_that_fails_midway_answers_why_and_pins_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), true, |s| s).await;
    // A CAR whose last block (after 2 MiB of good ones) is corrupt: the
    // blocks before it are read and stored, then the import fails.
    let (root, blocks) = blocks_of(&noise(10, 2 << 20));
    let mut tampered = blocks.clone();
    let last = tampered.len() - 1;
    tampered[last - 1].1[5] ^= 0xff;
    let (status, _, text) = post_add(
        &api,
        "?format=car",
        &[("x.car", car::write(&[root], &tampered))],
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("does not match its hash"), "{text}");
    // A file, then a part inside it: the file is imported, the tree
    // cannot be built.
    let (status, _, text) = post_add(
        &api,
        "",
        &[("d", b"a file".to_vec()), ("d%2Fx", b"inside".to_vec())],
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("conflicts with a file"), "{text}");
    assert!(!pinned(&api, &root.to_string()).await);
    assert_eq!(api.allocations().await, 0, "nothing is pinned");
    api.stop().await;
}
