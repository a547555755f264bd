//! Reading content back (issue 19 item 4): `GET /ipfs/{cid}[/path]` and
//! `pinfleet get`. Content added on one daemon of an embedded testbed is
//! read back byte for byte from another (whose node fetches it over
//! Bitswap), in ranges, as a directory tree and by path; the Kubo backend
//! reads through the mock Kubo; a reader's token may read, nobody else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pinfleet::api::AccessPolicy;
use pinfleet::auth::{Credential, hash_password};
use pinfleet::config::{ApiConfig, ClusterSecret};
use pinfleet::ipfs::KuboClient;
use pinfleet::manifest::CidKey;
use pinfleet::testkit::MockKubo;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{cid_v1, http};

/// Bytes that differ at every offset, so a misplaced range shows.
pub(crate) fn varied(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

fn pinfleet(args: &[&str], cwd: Option<&Path>) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pinfleet"));
    cmd.args(args)
        .env_remove("PINFLEET_HOST")
        .env_remove("PINFLEET_TOKEN")
        .env_remove("PINFLEET_BASIC_AUTH");
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    cmd.output().unwrap()
}

/// Runs the CLI off the runtime; fails the test on a non-zero exit.
pub(crate) async fn cli_ok(args: &[&str], cwd: Option<&Path>) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let cwd = cwd.map(Path::to_path_buf);
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        pinfleet(&args, cwd.as_deref())
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every file under `root` (relative path → bytes) and every directory.
fn tree(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    tree_with(root, |p| std::fs::read(p).unwrap())
}

/// Every file under `root` (relative path → `read` of it) and every
/// directory (`None`).
pub(crate) fn tree_with<T>(root: &Path, read: impl Fn(&Path) -> T) -> BTreeMap<PathBuf, Option<T>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if p.is_dir() {
                out.insert(rel, None);
                todo.push(p);
            } else {
                out.insert(rel, Some(read(&p)));
            }
        }
    }
    out
}

async fn range(url: &str, spec: &str) -> reqwest::Response {
    http().get(url).header("Range", spec).send().await.unwrap()
}

/// `GET url` once it is not 404 (within 30 s): a daemon's node answers
/// 404 for content on nodes it has not connected to yet (the daemons
/// connect their nodes once they have exchanged identities).
async fn first_read(url: &str) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = http().get(url).send().await.unwrap();
        if resp.status() != StatusCode::NOT_FOUND || Instant::now() > deadline {
            return resp;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The round trip on the embedded backend: `pinfleet add
/// --no-pin` on peer 0 (nothing pinned, nothing pushed), then reads from
/// peers 1 and 2, whose nodes fetch every block over Bitswap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_added_on_one_peer_is_read_back_identical_from_another() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("sub/deep")).unwrap();
    // Three chunks of 256 KiB and a tail: a two-level file DAG.
    let big = varied(700 * 1024 + 17, 1);
    std::fs::write(site.join("big.bin"), &big).unwrap();
    std::fs::write(site.join("index.html"), b"<h1>hello</h1>\n").unwrap();
    std::fs::write(site.join("empty"), b"").unwrap();
    std::fs::write(site.join("sub/deep/note.txt"), b"deep note\n").unwrap();
    // 1 KiB chunks: 300 leaves under two levels of 174-link nodes.
    let deep = varied(300 * 1024 + 5, 2);
    let deep_path = dir.path().join("deep.bin");
    std::fs::write(&deep_path, &deep).unwrap();

    let tb = dir.path().join("tb");
    let testbed = crate::support::embedded_testbed(&tb, false).await;
    let api: Vec<String> = testbed.file.peers.iter().map(|p| p.api.clone()).collect();
    let added = cli_ok(
        &[
            "add",
            site.to_str().unwrap(),
            "--no-pin",
            "-q",
            "--host",
            &api[0],
        ],
        None,
    )
    .await;
    let root = added.trim().to_string();
    let added = cli_ok(
        &[
            "add",
            deep_path.to_str().unwrap(),
            "--no-pin",
            "-q",
            "--chunker",
            "size-1024",
            "--cid-version",
            "1",
            "--host",
            &api[0],
        ],
        None,
    )
    .await;
    let deep_cid = added.trim().to_string();
    // Nothing was pinned anywhere: peers 1 and 2 hold nothing of it.
    let pins: Vec<Value> = http()
        .get(format!("{}/allocations", api[1]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(pins.is_empty(), "{pins:?}");

    // A whole file, by path, from peer 1: once its node has connected to
    // peer 0's (the daemons connect them after exchanging identities; a
    // node that asked everyone connected answers 404 until then).
    let url = format!("{}/ipfs/{root}/big.bin", api[1]);
    let resp = first_read(&url).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "application/octet-stream");
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["content-length"], big.len().to_string().as_str());
    let etag = h["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with("\"bafy") && etag.ends_with('"'), "{etag}");
    assert!(resp.bytes().await.unwrap() == big, "big.bin differs");

    // Ranges: first, across a chunk boundary, last, open-ended, suffix.
    let size = big.len();
    for (spec, from, to) in [
        ("bytes=0-99", 0, 99),
        ("bytes=262100-262300", 262_100, 262_300),
        ("bytes=524287-524288", 524_287, 524_288),
        (&format!("bytes={}-", size - 3), size - 3, size - 1),
        ("bytes=-10", size - 10, size - 1),
        (&format!("bytes=700000-{}", size * 2), 700_000, size - 1),
    ] {
        let resp = range(&url, spec).await;
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "{spec}");
        assert_eq!(
            resp.headers()["content-range"],
            format!("bytes {from}-{to}/{size}").as_str(),
            "{spec}"
        );
        assert_eq!(resp.headers()["etag"], etag.as_str());
        let body = resp.bytes().await.unwrap();
        assert!(body[..] == big[from..=to], "{spec}: wrong bytes");
    }
    let resp = range(&url, &format!("bytes={size}-")).await;
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes */{size}").as_str()
    );
    let error: Value = resp.json().await.unwrap();
    assert_eq!(error["code"], 416, "{error}");

    // A DAG two levels deep, read in ranges that cross its inner nodes.
    let deep_url = format!("{}/ipfs/{deep_cid}", api[2]);
    let whole = first_read(&deep_url).await;
    assert!(whole.bytes().await.unwrap() == deep, "deep.bin differs");
    for (from, to) in [(0, 0), (178_170, 178_200), (100_000, 250_000)] {
        let resp = range(&deep_url, &format!("bytes={from}-{to}")).await;
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
        assert!(resp.bytes().await.unwrap()[..] == deep[from..=to]);
    }

    // The directory's listing, and a path two directories down.
    let listing: Vec<Value> = http()
        .get(format!("{}/ipfs/{root}", api[1]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<(&str, &str, u64)> = listing
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                e["type"].as_str().unwrap(),
                e["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("big.bin", "file", size as u64),
            ("empty", "file", 0),
            ("index.html", "file", 15),
            ("sub", "directory", 0)
        ]
    );
    let note = http()
        .get(format!("{}/ipfs/{root}/sub/deep/note.txt", api[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(note.status(), StatusCode::OK);
    assert_eq!(note.bytes().await.unwrap(), "deep note\n");

    // Missing names and CIDs nobody has are 404 (told quickly: every
    // connected node says it does not have it); a bad CID is 400.
    let missing = http()
        .get(format!("{}/ipfs/{root}/sub/nope", api[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let error: Value = missing.json().await.unwrap();
    assert_eq!(error["code"], 404);
    assert!(
        error["message"].as_str().unwrap().contains("nope"),
        "{error}"
    );
    let started = Instant::now();
    let unknown = http()
        .get(format!("{}/ipfs/{}", api[1], cid_v1("nobody-has-this")))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert!(started.elapsed() < Duration::from_secs(20));
    let error: Value = unknown.json().await.unwrap();
    assert_eq!(error["code"], 404, "{error}");
    let bad = http()
        .get(format!("{}/ipfs/not-a-cid", api[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    // An identity CID holds its bytes: no node needs to have it.
    let mh = cid::multihash::Multihash::<64>::wrap(0, b"inline bytes").unwrap();
    let inline = cid::Cid::new_v1(0x55, mh);
    let resp = http()
        .get(format!("{}/ipfs/{inline}", api[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap(), "inline bytes");

    // `pinfleet get -o DIR` from peer 2 writes the same tree.
    let out = dir.path().join("out");
    let said = cli_ok(
        &["get", &root, "-o", out.to_str().unwrap(), "--host", &api[2]],
        None,
    )
    .await;
    assert!(said.contains("4 files in 3 directories"), "{said}");
    assert_eq!(tree(&out), tree(&site));
    // A file by path to stdout, and to its own name in the cwd.
    let stdout = cli_ok(
        &[
            "get",
            &format!("/ipfs/{root}/sub/deep/note.txt"),
            "-o",
            "-",
            "--host",
            &api[2],
        ],
        None,
    )
    .await;
    assert_eq!(stdout, "deep note\n");
    cli_ok(
        &["get", &format!("{root}/big.bin"), "-q", "--host", &api[2]],
        Some(dir.path()),
    )
    .await;
    assert!(std::fs::read(dir.path().join("big.bin")).unwrap() == big);
    testbed.stop().await;
}

/// A reader-only API with one user and the mock Kubo as its node.
fn kubo_peer(kubo_url: String) -> String {
    crate::support::spawn_api_peer_with("reader-get", 47, move |mut state, _| {
        let hash = hash_password("read-pw").unwrap();
        let users: BTreeMap<String, Credential> = [(
            "rita".to_string(),
            Credential::parse(&format!("reader:{hash}")).unwrap(),
        )]
        .into();
        let api = ApiConfig {
            basic_auth_credentials: users,
            ..ApiConfig::default()
        };
        state.access = AccessPolicy::from_config(&api, &ClusterSecret::from_bytes([47; 32]));
        let kubo = KuboClient::new(&kubo_url, Duration::from_secs(10)).unwrap();
        state.ipfs = Some(std::sync::Arc::new(kubo));
        state
    })
}

/// The Kubo backend reads through `files/stat`, `ls` and `cat` (ranges
/// become `offset`/`length`), behind the API's access check: a reader's
/// token may read, a request without credentials may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubo_backend_reads_files_ranges_and_directories_for_a_reader_token() {
    let (kubo, kubo_url) = MockKubo::start().await.unwrap();
    let key = |seed: &str| CidKey::parse(&cid_v1(seed)).unwrap();
    let (file, dir, sub, inner) = (key("f"), key("d"), key("s"), key("i"));
    let bytes = varied(200_000, 3);
    kubo.put_file(file, bytes.clone());
    kubo.put_file(inner, b"inner\n".to_vec());
    kubo.put_dir(sub, vec![("inner.txt".into(), *inner.cid())]);
    kubo.put_dir(
        dir,
        vec![("a.bin".into(), *file.cid()), ("sub".into(), *sub.cid())],
    );
    let api = kubo_peer(kubo_url);

    let url = format!("{api}/ipfs/{file}");
    let refused = http().get(&url).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let token: Value = http()
        .post(format!("{api}/token"))
        .basic_auth("rita", Some("read-pw"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_string();
    let get = |path: String| http().get(format!("{api}{path}")).bearer_auth(&token);

    let whole = get(format!("/ipfs/{file}")).send().await.unwrap();
    assert_eq!(whole.status(), StatusCode::OK);
    assert!(whole.bytes().await.unwrap() == bytes);
    kubo.clear_calls();
    let part = get(format!("/ipfs/{file}"))
        .header("Range", "bytes=150000-150009")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.headers()["content-range"],
        "bytes 150000-150009/200000"
    );
    assert!(part.bytes().await.unwrap()[..] == bytes[150_000..150_010]);
    let cat = kubo
        .calls()
        .into_iter()
        .find(|c| c.endpoint == "cat")
        .unwrap();
    assert!(cat.query.contains(&("offset".into(), "150000".into())));
    assert!(cat.query.contains(&("length".into(), "10".into())));

    let listing: Vec<Value> = get(format!("/ipfs/{dir}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listing.len(), 2);
    assert_eq!(listing[0]["name"], "a.bin");
    assert_eq!(listing[0]["type"], "file");
    assert_eq!(listing[0]["size"], 200_000);
    assert_eq!(listing[1]["type"], "directory");
    let inner_text = get(format!("/ipfs/{dir}/sub/inner.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(inner_text.bytes().await.unwrap(), "inner\n");
    let missing = get(format!("/ipfs/{dir}/nope")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let unknown = get(format!("/ipfs/{}", cid_v1("unknown")))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    // `pinfleet get` with the token walks the directory.
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("copy");
    cli_ok(
        &[
            "get",
            &dir.to_string(),
            "-o",
            dest.to_str().unwrap(),
            "--token",
            &token,
            "--host",
            &api,
        ],
        None,
    )
    .await;
    assert!(std::fs::read(dest.join("a.bin")).unwrap() == bytes);
    assert_eq!(
        std::fs::read(dest.join("sub/inner.txt")).unwrap(),
        b"inner\n"
    );
}

/// An in-process embedded node in `dir`.
pub(crate) async fn start_node(dir: &Path) -> crate::support::InProcessNode {
    let config = pinfleet::ipfs::embedded::EmbeddedConfig::new(dir, [9; 32]);
    crate::support::InProcessNode::start_with(config).await
}

/// The embedded backend's `cat` streams a file in pieces no larger than
/// its chunks (never the whole file at once), fetched from the node that
/// has it and not stored by the reader; a node alone reports a CID it
/// lacks as not found at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_node_streams_a_file_from_a_peer_in_chunks_without_storing_it() {
    use futures::StreamExt;
    use pinfleet::ipfs::content::Content;
    use pinfleet::ipfs::path::IpfsPath;
    use pinfleet::ipfs::unixfs::{AddOptions, add_reader};
    use pinfleet::ipfs::{IpfsBackend, IpfsError};

    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        start_node(&dir.path().join("a")).await,
        start_node(&dir.path().join("b")).await,
    );
    let bytes = varied(5 * 262_144 + 3, 4);
    let data = bytes.clone();
    let added = a
        .node
        .import(false, move |sink| {
            let added = add_reader(&data[..], &AddOptions::default(), sink).map_err(|e| {
                IpfsError::InvalidInput {
                    what: e.to_string(),
                }
            })?;
            Ok(added.cid)
        })
        .await
        .unwrap();

    // Alone, `b` has nobody to ask: not found, at once.
    let started = Instant::now();
    let path = IpfsPath::parse(&format!("/ipfs/{}", added.root)).unwrap();
    let alone = b.node.get(path.clone()).await;
    assert!(
        matches!(alone, Err(IpfsError::NotFound { .. })),
        "{alone:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    let addr = a.node.listen_addrs().await.remove(0);
    b.node.connect(addr).await.unwrap();
    let content = tokio::time::timeout(Duration::from_secs(30), b.node.get(path))
        .await
        .unwrap()
        .unwrap();
    let Content::File { size, .. } = content else {
        panic!("{content:?}")
    };
    assert_eq!(size, bytes.len() as u64);
    let (offset, len) = (100_000u64, 4 * 262_144u64);
    let mut pieces = b.node.cat(added.root, offset, len);
    let mut got = Vec::new();
    while let Some(piece) = tokio::time::timeout(Duration::from_secs(30), pieces.next())
        .await
        .unwrap()
    {
        let piece = piece.unwrap();
        assert!(piece.len() <= 262_144, "a piece of {} bytes", piece.len());
        got.extend_from_slice(&piece);
    }
    assert!(got[..] == bytes[offset as usize..(offset + len) as usize]);
    // Read, not kept: `b` stores none of the blocks it streamed.
    let root_block = b.node.get_block(added.root.cid()).await.unwrap();
    assert!(root_block.is_none());
    a.stop().await;
    b.stop().await;
}
