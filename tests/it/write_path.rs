//! The write path (issue 14 items 1 and 8): allocation at pin time, group
//! commit of concurrent pins into few log entries, `POST /pins/batch` and
//! `state import` of IPFS Cluster's own export. The allocation tests run a
//! real 3-peer testbed (`pinfleet testbed up`, processes on 127.0.0.1);
//! the import tests a one-peer cluster in this process. Every wait has a
//! deadline.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use pinfleet::testbed::TestbedFile;
use serde_json::Value;

use crate::support::{cid_v0, cid_v1, get_json, http, spawn_api_peer};

const DEADLINE: Duration = Duration::from_secs(60);

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_pinfleet")
}

/// A `testbed up` process, SIGINTed (and waited for) on drop.
struct Testbed {
    child: std::process::Child,
    file: TestbedFile,
}

impl Testbed {
    /// Starts `n` peers without IPFS and returns once `testbed up` says the
    /// cluster formed (its readiness is what the test checks).
    fn up(dir: &std::path::Path, n: usize) -> Testbed {
        Self::up_with(dir, n, &[])
    }

    /// [`Testbed::up`] with `env` set for the testbed and its daemons
    /// (config overrides).
    fn up_with(dir: &std::path::Path, n: usize, env: &[(&str, &str)]) -> Testbed {
        let mut child = Command::new(exe())
            .envs(env.iter().copied())
            .args(["testbed", "up", "--ipfs", "none", "--peers"])
            .arg(n.to_string())
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("cluster formed") {
                    let _ = tx.send(());
                }
            }
        });
        let formed = rx.recv_timeout(DEADLINE * 2);
        let tb = |child| Testbed {
            child,
            file: serde_json::from_slice(&std::fs::read(dir.join("testbed.json")).unwrap())
                .unwrap(),
        };
        if formed.is_err() {
            let _ = child.kill();
            panic!("testbed up did not report the cluster formed");
        }
        tb(child)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let end = Instant::now() + DEADLINE;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pinfleet_raft_last_log_index` from a peer's `/metrics`.
async fn log_index(api: &str) -> u64 {
    let text = http()
        .get(format!("{api}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("pinfleet_raft_last_log_index "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no log index in /metrics:\n{text}"))
}

async fn leader_index(tb: &Testbed) -> usize {
    for (i, p) in tb.file.peers.iter().enumerate() {
        let text = http()
            .get(format!("{}/metrics", p.api))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.lines().any(|l| l == "pinfleet_leader 1") {
            return i;
        }
    }
    panic!("no leader");
}

async fn pin(api: &str, cid: &str, query: &str) -> Value {
    let resp = http()
        .post(format!("{api}/pins/{cid}?{query}"))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "pin {cid}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// `POST /pins/batch` of `body` to the peer at `api`.
async fn post_batch(api: &str, body: String) -> reqwest::Response {
    http()
        .post(format!("{api}/pins/batch"))
        .body(body)
        .send()
        .await
        .unwrap()
}

fn allocations(v: &Value) -> Vec<String> {
    v["allocations"]
        .as_array()
        .unwrap_or_else(|| panic!("no allocations in {v}"))
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

/// The issue's promise on a fresh testbed: once `testbed up` reports the
/// cluster formed, a pin with replication 3 is answered allocated on all
/// three peers, and `GET /allocations/{cid}` on any peer shows it at once;
/// concurrent pins through the leader and a follower all land, each
/// answered with its own pin, in fewer log entries than pins; a pin then
/// an unpin of one CID by one client end unpinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_are_answered_allocated_and_concurrent_pins_share_log_entries() {
    let dir = tempfile::tempdir().unwrap();
    let tb = Testbed::up(&dir.path().join("tb"), 3);
    let ids: std::collections::BTreeSet<String> =
        tb.file.peers.iter().map(|p| p.id.clone()).collect();
    let leader = leader_index(&tb).await;
    let follower = (leader + 1) % 3;
    let api = |i: usize| tb.file.peers[i].api.clone();

    // Ready means allocatable: replication 3 at once, through a follower.
    let cid = cid_v1("write-path-r3");
    let answer = pin(&api(follower), &cid, "replication-min=3&replication-max=3").await;
    let got: std::collections::BTreeSet<String> = allocations(&answer).into_iter().collect();
    assert_eq!(got, ids, "{answer}");

    // Replication 2: two peers in the answer, the same on every peer now.
    let cid = cid_v1("write-path-r2");
    let answer = pin(&api(leader), &cid, "replication-min=2&replication-max=2").await;
    let chosen = allocations(&answer);
    assert_eq!(chosen.len(), 2, "{answer}");
    assert!(chosen.iter().all(|p| ids.contains(p)), "{answer}");
    let shown = get_json(&format!("{}/allocations/{cid}", api(leader))).await;
    assert_eq!(allocations(&shown), chosen);

    // 200 concurrent pins, half through the leader and half through a
    // follower (which sends them to the leader in groups): each answered
    // with its own CID and its allocations, and each readable at once on
    // the peer that answered it (read your writes).
    const N: usize = 200;
    let before = log_index(&api(leader)).await;
    let mut calls = FuturesUnordered::new();
    for i in 0..N {
        let base = api(if i % 2 == 0 { leader } else { follower });
        let cid = cid_v1(&format!("write-path-many-{i}"));
        calls.push(async move {
            let v = pin(&base, &cid, "replication-min=2&replication-max=2").await;
            let shown = get_json(&format!("{base}/allocations/{cid}")).await;
            assert_eq!(shown["cid"], cid.as_str(), "{shown}");
            (cid, v)
        });
    }
    let mut answered = 0;
    while let Some((cid, v)) = calls.next().await {
        assert_eq!(v["cid"], cid.as_str());
        assert_eq!(allocations(&v).len(), 2, "{v}");
        answered += 1;
    }
    assert_eq!(answered, N);
    let after = log_index(&api(leader)).await;
    eprintln!("{N} concurrent pins took {} log entries", after - before);
    assert!(
        after - before < N as u64,
        "{N} pins took {} log entries",
        after - before
    );
    for i in 0..N {
        let cid = cid_v1(&format!("write-path-many-{i}"));
        let v = get_json(&format!("{}/allocations/{cid}", api(follower))).await;
        assert_eq!(allocations(&v).len(), 2, "{v}");
    }

    // One client pins then unpins, another unpins then pins, concurrently
    // with each other: each ends as its last call says.
    let gone = cid_v1("write-path-pin-unpin");
    let kept = cid_v1("write-path-unpin-pin");
    pin(&api(leader), &kept, "").await;
    let a = {
        let (base, gone) = (api(follower), gone.clone());
        async move {
            for _ in 0..5 {
                pin(&base, &gone, "").await;
                let resp = http()
                    .delete(format!("{base}/pins/{gone}"))
                    .send()
                    .await
                    .unwrap();
                assert!(resp.status().is_success(), "{}", resp.status());
            }
        }
    };
    let b = {
        let (base, kept) = (api(leader), kept.clone());
        async move {
            for _ in 0..5 {
                let resp = http()
                    .delete(format!("{base}/pins/{kept}"))
                    .send()
                    .await
                    .unwrap();
                assert!(resp.status().is_success(), "{}", resp.status());
                pin(&base, &kept, "").await;
            }
        }
    };
    tokio::join!(a, b);
    for p in 0..3 {
        let resp = http()
            .get(format!("{}/allocations/{gone}", api(p)))
            .send()
            .await
            .unwrap();
        // Followers may apply a moment later: wait with a deadline.
        let end = Instant::now() + DEADLINE;
        let mut status = resp.status();
        while status != reqwest::StatusCode::NOT_FOUND && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(50)).await;
            status = http()
                .get(format!("{}/allocations/{gone}", api(p)))
                .send()
                .await
                .unwrap()
                .status();
        }
        assert_eq!(status, reqwest::StatusCode::NOT_FOUND, "peer {p}");
    }
    get_json(&format!("{}/allocations/{kept}", api(leader))).await;
}

/// An IPFS Cluster `state export` file as `ipfs-cluster-service` 1.x
/// writes it (Go's `json.Encoder` over `api.Pin`: every field, `null` for
/// nil maps and slices, CIDs as strings), plus one line as pre-1.0 wrote it
/// (`{"/": cid}`, numeric type) and one shard pin, which is skipped.
fn cluster_export(cids: &[String], peer: &str) -> String {
    let mut lines = vec![
        format!(
            r#"{{"replication_factor_min":2,"replication_factor_max":3,"name":"docs","mode":"recursive","shard_size":0,"user_allocations":["{peer}"],"expire_at":"2031-02-03T04:05:06Z","metadata":{{"team":"web"}},"pin_update":null,"origins":["/ip4/127.0.0.1/tcp/4001/p2p/{peer}"],"cid":"{}","type":"pin","allocations":["{peer}"],"max_depth":-1,"reference":null,"timestamp":"2024-05-01T10:00:00Z"}}"#,
            cids[0]
        ),
        format!(
            r#"{{"replication_factor_min":-1,"replication_factor_max":-1,"name":"","mode":"direct","shard_size":0,"user_allocations":null,"expire_at":"0001-01-01T00:00:00Z","metadata":null,"pin_update":null,"origins":null,"cid":"{}","type":"pin","allocations":[],"max_depth":0,"reference":null,"timestamp":"2024-05-01T10:00:01Z"}}"#,
            cids[1]
        ),
        format!(
            r#"{{"replication_factor_min":-1,"replication_factor_max":-1,"name":"","mode":"direct","shard_size":0,"user_allocations":null,"expire_at":"0001-01-01T00:00:00Z","metadata":null,"pin_update":null,"cid":{{"/":"{}"}},"type":2,"allocations":[],"max_depth":0,"reference":null}}"#,
            cids[2]
        ),
        format!(
            r#"{{"replication_factor_min":-1,"replication_factor_max":-1,"name":"","mode":"recursive","shard_size":0,"user_allocations":null,"expire_at":"0001-01-01T00:00:00Z","metadata":null,"pin_update":null,"origins":null,"cid":"{}","type":"shard-pin","allocations":[],"max_depth":1,"reference":null,"timestamp":"2024-05-01T10:00:02Z"}}"#,
            cids[3]
        ),
    ];
    lines.push(String::new());
    lines.join("\n")
}

fn import(api: &str, file: &std::path::Path) -> std::process::Output {
    Command::new(exe())
        .args(["state", "import", "--host", api])
        .arg(file)
        .env_remove("PINFLEET_HOST")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_import_of_an_ipfs_cluster_export_lands_every_pin_with_its_options() {
    let api = spawn_api_peer("write-path-import", 141);
    let dir = tempfile::tempdir().unwrap();
    let peer = libp2p::PeerId::random().to_string();
    let cids = [
        cid_v1("import-docs"),
        cid_v1("import-direct"),
        cid_v0("import-old"),
        cid_v1("import-shard"),
    ];
    let file = dir.path().join("export.json");
    std::fs::write(&file, cluster_export(&cids, &peer)).unwrap();
    let o = import(&api, &file);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("IPFS Cluster state export, 3 pins"),
        "{stderr}"
    );
    assert!(stderr.contains("skipping 1 line"), "{stderr}");

    let docs = get_json(&format!("{api}/allocations/{}", cids[0])).await;
    assert_eq!(docs["name"], "docs");
    assert_eq!(docs["mode"], "recursive");
    assert_eq!(
        (
            docs["replication_factor_min"].clone(),
            docs["replication_factor_max"].clone()
        ),
        (Value::from(2), Value::from(3))
    );
    assert_eq!(docs["metadata"]["team"], "web");
    assert_eq!(docs["user_allocations"][0], peer.as_str());
    assert_eq!(docs["expire_at"], "2031-02-03T04:05:06Z");
    assert_eq!(docs["origins"].as_array().unwrap().len(), 1);
    assert_eq!(docs["owners"].as_object().unwrap().len(), 1);
    assert!(docs["owners"]["api"].is_object(), "{docs}");
    let direct = get_json(&format!("{api}/allocations/{}", cids[1])).await;
    assert_eq!(direct["mode"], "direct");
    // The pre-1.0 line, its CIDv0 spelling kept.
    let old = get_json(&format!("{api}/allocations/{}", cids[2])).await;
    assert_eq!(old["cid"], cids[2].as_str());
    let shard = http()
        .get(format!("{api}/allocations/{}", cids[3]))
        .send()
        .await
        .unwrap();
    assert_eq!(shard.status(), reqwest::StatusCode::NOT_FOUND);

    // Importing again changes nothing.
    let o = import(&api, &file);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("3 pins by hand (owner api), 0 new"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_line_stops_the_import_naming_file_and_line_and_nothing_is_written() {
    let api = spawn_api_peer("write-path-bad-import", 142);
    let dir = tempfile::tempdir().unwrap();
    let good: Vec<String> = (0..3).map(|i| cid_v1(&format!("bad-import-{i}"))).collect();
    let mut text = String::new();
    for c in &good[..2] {
        text.push_str(&format!(r#"{{"cid":"{c}","type":"pin","name":"ok"}}"#));
        text.push('\n');
    }
    text.push_str("{\"cid\":\"not-a-cid\",\"type\":\"pin\"}\n");
    text.push_str(&format!(r#"{{"cid":"{}","type":"pin"}}"#, good[2]));
    let file = dir.path().join("bad.json");
    std::fs::write(&file, text).unwrap();
    let o = import(&api, &file);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains(&format!("{}:3: invalid cid \"not-a-cid\"", file.display())),
        "{stderr}"
    );
    assert!(stderr.contains("nothing imported"), "{stderr}");
    for c in &good {
        let resp = http()
            .get(format!("{api}/allocations/{c}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::NOT_FOUND, "{c}");
    }

    // The route itself: a bad object answers 400 naming it, nothing written.
    let body = format!(
        "[{{\"cid\":\"{}\"}},{{\"cid\":\"{}\",\"replication_factor_min\":-2}}]",
        good[0], good[1]
    );
    let resp = post_batch(&api, body).await;
    assert_eq!(resp.status(), reqwest::StatusCode::BAD_REQUEST);
    let error: Value = resp.json().await.unwrap();
    assert_eq!(error["code"], 400);
    assert!(
        error["message"].as_str().unwrap().starts_with("pin 2: "),
        "{error}"
    );
    let resp = http()
        .get(format!("{api}/allocations/{}", good[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::NOT_FOUND);

    // And a good batch answers what it wrote.
    let body = format!("{{\"cid\":\"{}\"}}\n{{\"cid\":\"{}\"}}\n", good[0], good[1]);
    let report: Value = post_batch(&api, body).await.json().await.unwrap();
    assert_eq!(
        report,
        serde_json::json!({"pins": 2, "created": 2, "changed": 0})
    );
}

/// A `POST /pins/batch` body larger than a log entry (here: entries of at
/// most 100 ops, 8,000 pins, 1.5 MB in the body) is one revision: a bad
/// last line leaves nothing behind though the chunks read before it were
/// staged (the server parses each MiB as it arrives), and a good body
/// lands whole, its pins answered by the commit and allocated at once (the
/// leader placed each staged chunk), on a follower too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_an_entry_lands_whole_and_allocated_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let tb = Testbed::up_with(
        &dir.path().join("tb"),
        3,
        &[("PINFLEET_CONSENSUS_BATCH_MAX_PINS", "100")],
    );
    let leader = leader_index(&tb).await;
    let follower = (leader + 1) % 3;
    let api = |i: usize| tb.file.peers[i].api.clone();
    const N: usize = 8000;
    let cids: Vec<String> = (0..N).map(|i| cid_v1(&format!("bulk-{i}"))).collect();
    let line = |c: &String| {
        format!(
            r#"{{"cid":"{c}","type":"pin","name":"n-{c}","replication_factor_min":2,"replication_factor_max":2}}"#
        )
    };
    let good: String = cids.iter().map(|c| line(c) + "\n").collect();

    let bad = format!("{good}{{\"cid\":\"nope\"}}\n");
    assert!(bad.len() > 1 << 20, "{} bytes: one parse step", bad.len());
    let before = log_index(&api(leader)).await;
    let resp = post_batch(&api(follower), bad).await;
    assert_eq!(resp.status(), reqwest::StatusCode::BAD_REQUEST);
    let error: Value = resp.json().await.unwrap();
    let message = error["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("line {}: invalid cid", N + 1)),
        "{error}"
    );
    let staged = log_index(&api(leader)).await - before;
    assert!(
        staged > 10,
        "{staged} entries: chunks were staged, then dropped"
    );
    for c in [&cids[0], &cids[N / 2], &cids[N - 1]] {
        let resp = http()
            .get(format!("{}/allocations/{c}", api(leader)))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::NOT_FOUND, "{c}");
    }

    let before = log_index(&api(leader)).await;
    let report: Value = post_batch(&api(follower), good.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        report,
        serde_json::json!({"pins": N, "created": N, "changed": 0})
    );
    let entries = log_index(&api(leader)).await - before;
    assert!(
        entries >= (N / 100) as u64,
        "{entries} entries for chunks of 100"
    );
    // Read your writes on the follower that answered: all there, each
    // with its two peers and its own name.
    let ids: std::collections::BTreeSet<String> =
        tb.file.peers.iter().map(|p| p.id.clone()).collect();
    for c in cids.iter().step_by(40) {
        let v = get_json(&format!("{}/allocations/{c}", api(follower))).await;
        assert_eq!(v["name"], format!("n-{c}"));
        let peers = allocations(&v);
        assert_eq!(peers.len(), 2, "{v}");
        assert!(peers.iter().all(|p| ids.contains(p)), "{v}");
    }
    // The same body again changes nothing.
    let report: Value = post_batch(&api(leader), good).await.json().await.unwrap();
    assert_eq!(
        report,
        serde_json::json!({"pins": N, "created": 0, "changed": 0})
    );
}
