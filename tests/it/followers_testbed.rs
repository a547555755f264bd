//! Followers as an operator runs them (issue 17): the published follower
//! config (`follow.json`), `pinfleet init --follower --cluster FILE|URL`,
//! `pinfleet cluster publish`, `pinfleet follow`, and `testbed up
//! --followers N` with real follower processes on loopback whose REST API
//! is read-only.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pinfleet::config::{FollowConfig, SERVICE_FILE, ServiceConfig};
use pinfleet::testbed::TestbedFile;

use crate::support::{cid_v1, http, init_peer, stop_daemon, wait_running};

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_pinfleet")
}

const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn new_peer_id() -> String {
    libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_string()
}

/// A published config of cluster `mirror` with one trusted peer.
fn published(secret: &str, trusted: serde_json::Value) -> String {
    serde_json::json!({
        "format": "pinfleet-follow/1", "cluster": "mirror", "secret": secret,
        "trusted": trusted, "replication_factor_min": -1, "replication_factor_max": -1,
    })
    .to_string()
}

fn one_trusted(id: &str) -> serde_json::Value {
    serde_json::json!([{"id": id, "addrs": [format!("/ip4/127.0.0.1/tcp/4001/p2p/{id}")]}])
}

fn run(args: &[&str], dir: &Path) -> Output {
    Command::new(exe())
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn assert_follower_of_mirror(dir: &Path, trusted: &str) {
    let config = ServiceConfig::load_with_env(&dir.join(SERVICE_FILE), &[]).unwrap();
    assert!(config.cluster.follower);
    assert_eq!(config.cluster.name, "mirror");
    assert_eq!(config.cluster.secret.to_hex(), SECRET);
    assert_eq!(
        config
            .cluster
            .bootstrap
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec![format!("/ip4/127.0.0.1/tcp/4001/p2p/{trusted}")]
    );
    assert!(dir.join("identity.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_follower_from_a_file_and_from_an_http_url_writes_a_follower_of_that_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let trusted = new_peer_id();
    let text = published(SECRET, one_trusted(&trusted));
    let file = tmp.path().join("follow.json");
    std::fs::write(&file, &text).unwrap();

    let from_file = tmp.path().join("f-file");
    let out = run(
        &["init", "--follower", "--cluster", file.to_str().unwrap()],
        &from_file,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("a follower of cluster \"mirror\""));
    assert_follower_of_mirror(&from_file, &trusted);
    // An existing directory is refused, as `init` refuses it.
    let again = run(
        &["init", "--follower", "--cluster", file.to_str().unwrap()],
        &from_file,
    );
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );

    let app = axum::Router::new().route(
        "/follow.json",
        axum::routing::get(move || {
            let text = text.clone();
            async move { text }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let from_url = tmp.path().join("f-url");
    let url = format!("http://{addr}/follow.json");
    let (dir, u) = (from_url.clone(), url.clone());
    let out =
        tokio::task::spawn_blocking(move || run(&["init", "--follower", "--cluster", &u], &dir))
            .await
            .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_follower_of_mirror(&from_url, &trusted);
    // A URL that answers 404 is a clear error.
    let (dir, u) = (
        tmp.path().join("f-404"),
        format!("http://{addr}/missing.json"),
    );
    let out =
        tokio::task::spawn_blocking(move || run(&["init", "--follower", "--cluster", &u], &dir))
            .await
            .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));
    server.abort();
}

#[test]
fn init_follower_refuses_a_bad_published_config_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let id = new_peer_id();
    let cases = [
        (
            "bad-secret",
            published("0011", one_trusted(&id)),
            "secret: expected 64 hex characters",
        ),
        (
            "no-trusted",
            published(SECRET, serde_json::json!([])),
            "trusted: no trusted peers",
        ),
        (
            "no-p2p",
            published(
                SECRET,
                serde_json::json!([{"id": id, "addrs": ["/ip4/127.0.0.1/tcp/4001"]}]),
            ),
            "trusted[0].addrs[0]: \"/ip4/127.0.0.1/tcp/4001\" does not end in /p2p/<peer id>",
        ),
    ];
    for (name, text, expected) in cases {
        let file = tmp.path().join(format!("{name}.json"));
        std::fs::write(&file, text).unwrap();
        let dir = tmp.path().join(name);
        let out = run(
            &["init", "--follower", "--cluster", file.to_str().unwrap()],
            &dir,
        );
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = stderr(&out);
        assert!(err.contains(expected), "{name}: {err}");
        assert!(
            err.contains(&format!("cannot use {}", file.display())),
            "{err}"
        );
        assert!(!dir.exists(), "{name}: nothing written");
    }
}

#[test]
fn cluster_publish_refuses_a_cluster_without_trusted_peers() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("p");
    init_peer(&d);
    let out = run(&["cluster", "publish"], &d);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(
            "a cluster with no trusted_peers cannot have followers: set cluster.trusted_peers first"
        ),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn follow_refuses_a_directory_that_is_not_a_follower_of_that_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("follow.json");
    std::fs::write(&file, published(SECRET, one_trusted(&new_peer_id()))).unwrap();
    let d = tmp.path().join("p");
    init_peer(&d);
    let out = run(&["follow", file.to_str().unwrap()], &d);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("is not a follower of cluster \"mirror\""),
        "{}",
        stderr(&out)
    );
}

/// A `testbed up` child process, SIGINT-ed and awaited on [`Running::stop`]
/// (killed if dropped).
struct Running {
    child: tokio::process::Child,
    file: TestbedFile,
}

impl Running {
    /// Starts `testbed up --peers P --followers F --ipfs none` in `tb` and
    /// waits (at most 120 s) for its `testbed.json`.
    async fn up(tb: &Path, peers: usize, followers: usize) -> Running {
        let mut child = tokio::process::Command::new(exe())
            .args(["testbed", "up", "--ipfs", "none", "--timeout", "90"])
            .args(["--peers", &peers.to_string()])
            .args(["--followers", &followers.to_string()])
            .arg("--dir")
            .arg(tb)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let start = Instant::now();
        let path = tb.join("testbed.json");
        loop {
            if let Ok(bytes) = std::fs::read(&path) {
                let file: TestbedFile = serde_json::from_slice(&bytes).unwrap();
                return Running { child, file };
            }
            if let Some(status) = child.try_wait().unwrap() {
                let out = child.wait_with_output().await.unwrap();
                panic!(
                    "testbed exited with {status}: {}",
                    stderr(&Output {
                        status,
                        stdout: Vec::new(),
                        stderr: out.stderr,
                    })
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "the testbed did not come up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "{status}");
    }
}

/// `POST /pins/{cid}` on `api` with replication `factor` (min and max).
async fn pin(api: &str, cid: &str, factor: i32) {
    let r = http()
        .post(format!(
            "{api}/pins/{cid}?replication-min={factor}&replication-max={factor}"
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// Waits until `GET {api}/allocations` lists every one of `cids`, failing
/// 60 s after `start`; `who` names the peer in the failure.
async fn wait_allocated(api: &str, cids: &[String], who: &str, start: Instant) {
    loop {
        let listed = allocated(api).await;
        if cids.iter().all(|c| listed.contains(c)) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{who} lists {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// CIDs listed by `GET {api}/allocations`.
async fn allocated(api: &str) -> Vec<String> {
    let Ok(r) = http().get(format!("{api}/allocations")).send().await else {
        return Vec::new();
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["cid"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_testbed_with_followers_lists_them_and_they_receive_the_state() {
    let tmp = tempfile::tempdir().unwrap();
    let tb = tmp.path().join("tb");
    let running = Running::up(&tb, 3, 2).await;
    let file = running.file.clone();
    assert_eq!(file.peers.len(), 3);
    assert_eq!(file.followers.len(), 2);
    let peer_ids: Vec<&str> = file.peers.iter().map(|p| p.id.as_str()).collect();
    for f in &file.followers {
        assert!(f.id.starts_with("12D3KooW") && !peer_ids.contains(&f.id.as_str()));
        assert!(f.pid > 0 && f.api.starts_with("http://127.0.0.1:"), "{f:?}");
        assert!(f.dir.join("identity.json").exists());
        assert_eq!(f.cmd[1], "follow");
        let config = ServiceConfig::load_with_env(&f.dir.join(SERVICE_FILE), &[]).unwrap();
        assert!(config.cluster.follower);
    }
    // The published config the followers run from names every peer.
    let follow = FollowConfig::parse(&std::fs::read(tb.join("follow.json")).unwrap()).unwrap();
    let mut trusted: Vec<String> = follow
        .trusted_ids()
        .iter()
        .map(ToString::to_string)
        .collect();
    trusted.sort();
    let mut expected: Vec<String> = peer_ids.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(trusted, expected);

    let cids: Vec<String> = (0..3)
        .map(|i| cid_v1(&format!("follower-tb-{i}")))
        .collect();
    for cid in &cids {
        pin(&file.peers[0].api, cid, -1).await;
    }
    let start = Instant::now();
    for f in &file.followers {
        wait_allocated(&f.api, &cids, &format!("follower {}", f.id), start).await;
    }

    // A trusted peer's operator publishes the same cluster (its addresses
    // from the running peer's API) …
    let published = tmp.path().join("published.json");
    let out = Command::new(exe())
        .args(["cluster", "publish", "--dir"])
        .arg(&file.peers[0].dir)
        .arg("--out")
        .arg(&published)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let again = FollowConfig::parse(&std::fs::read(&published).unwrap()).unwrap();
    assert_eq!(again.cluster, "testbed");
    assert_eq!(again.secret, follow.secret);
    assert_eq!(again.trusted_ids(), follow.trusted_ids());
    assert!(again.trusted.iter().all(|t| !t.addrs.is_empty()));
    // … and anyone follows it with `pinfleet follow FILE` into a new
    // directory: it is created as a follower and receives the state.
    let late = tmp.path().join("late");
    let mut child = Command::new(exe())
        .arg("follow")
        .arg(&published)
        .arg("--dir")
        .arg(&late)
        .env("PINFLEET_API_LISTEN", "127.0.0.1:0")
        .env(
            "PINFLEET_CLUSTER_LISTEN_MULTIADDRESS",
            "/ip4/127.0.0.1/tcp/0",
        )
        .env("PINFLEET_IPFS_BACKEND", "none")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (dir, info, mut child) = tokio::task::spawn_blocking(move || {
        let info = wait_running(&late, &mut child);
        (late, info, child)
    })
    .await
    .unwrap();
    wait_allocated(&info.api, &cids, "the late follower", Instant::now()).await;
    tokio::task::spawn_blocking(move || stop_daemon(&mut child))
        .await
        .unwrap();
    let config = ServiceConfig::load_with_env(&dir.join(SERVICE_FILE), &[]).unwrap();
    assert!(config.cluster.follower);

    running.stop().await;
    for f in &file.followers {
        assert!(
            pinfleet::daemon::read_run_file(&f.dir).is_none(),
            "{} stopped",
            f.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_api_refuses_every_write_with_403_saying_it_is_a_follower() {
    let tmp = tempfile::tempdir().unwrap();
    let running = Running::up(&tmp.path().join("tb"), 1, 1).await;
    let api = running.file.followers[0].api.clone();
    let peer = running.file.peers[0].id.clone();
    let cid = cid_v1("follower-api");
    let client = http();
    // A pin written on the trusted peer, which the follower then holds.
    let r = client
        .post(format!("{}/pins/{cid}", running.file.peers[0].api))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let start = Instant::now();
    while !allocated(&api).await.contains(&cid) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the follower never got the pin"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let writes = [
        client.post(format!("{api}/pins/{cid}")),
        client.delete(format!("{api}/pins/{cid}")),
        client
            .put(format!("{api}/pinsets/ns/name"))
            .header("content-type", "application/json")
            .body("{}"),
        client.post(format!("{api}/add")),
        client.post(format!("{api}/ipfs/gc")),
        client.delete(format!("{api}/peers/{peer}")),
    ];
    for request in writes {
        let request = request.build().unwrap();
        let shown = format!("{} {}", request.method(), request.url().path());
        let r = client.execute(request).await.unwrap();
        assert_eq!(r.status(), 403, "{shown}");
        let body = r.text().await.unwrap();
        assert!(body.contains("follower"), "{shown}: {body}");
    }
    for path in ["/id", "/allocations", "/pins", "/metrics"] {
        let r = client.get(format!("{api}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
    }
    // The refused DELETE changed nothing.
    assert!(allocated(&api).await.contains(&cid));
    assert!(allocated(&running.file.peers[0].api).await.contains(&cid));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_allocates_an_explicit_factor_to_followers_that_report_metrics_and_lists_them() {
    let tmp = tempfile::tempdir().unwrap();
    let tb = tmp.path().join("tb");
    let running = Running::up(&tb, 3, 2).await;
    let file = running.file.clone();
    let follower_ids: Vec<String> = file.followers.iter().map(|f| f.id.clone()).collect();

    // Five copies: three trusted peers are not enough, so the followers,
    // which report metrics tagged follower=true, get the other two.
    let cid = cid_v1("explicit-factor-on-followers");
    pin(&file.peers[0].api, &cid, 5).await;
    let start = Instant::now();
    loop {
        let pin: serde_json::Value = http()
            .get(format!("{}/allocations/{cid}", file.peers[0].api))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let allocations: Vec<String> = pin["allocations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if allocations.len() == 5 && follower_ids.iter().all(|f| allocations.contains(f)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "allocations {allocations:?}, followers {follower_ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The trusted peer lists its followers over REST and the CLI, with the
    // tag their informer sent.
    let listed: Vec<serde_json::Value> = http()
        .get(format!("{}/followers", file.peers[0].api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for f in &follower_ids {
        let entry = listed
            .iter()
            .find(|e| e["id"] == f.as_str())
            .unwrap_or_else(|| panic!("{f} not in {listed:?}"));
        assert_eq!(entry["tags"]["follower"], "true", "{entry}");
    }
    let api = file.peers[0].api.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(exe())
            .args(["peers", "ls", "--followers", "--host", &api])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for f in &follower_ids {
        assert!(
            text.contains(f.as_str()) && text.contains("follower"),
            "{text}"
        );
    }
    running.stop().await;
}
