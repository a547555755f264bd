//! ipfs-cluster-ctl's commands as `pinfleet` runs them: `pin add|rm
//! --wait` against three peers with mock Kubos (what the wait waits for,
//! how it fails), and against a real daemon `version`, `health metrics`,
//! `ipfs gc`, `add --wait --metadata --expire-in`, `status CID CID`,
//! `--host` as a multiaddress and `--timeout`.

use std::process::Output;
use std::time::Duration;

use pinfleet::wire::{GlobalPinInfo, PinRecord, TrackerStatus};
use serde_json::Value;

use crate::cluster::cid;
use crate::compat_monitor::Peer;
use crate::status::Fleet;

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `pinfleet args…` off the runtime (no `--host` added).
async fn pinfleet(args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pinfleet"));
    cmd.args(args)
        .env_remove("PINFLEET_HOST")
        .env_remove("PINFLEET_TIMEOUT");
    tokio::task::spawn_blocking(move || cmd.output().expect("run pinfleet"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pin_add_wait_returns_once_every_peer_pinned_and_rm_wait_once_every_peer_unpinned() {
    let root = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(3, root.path(), Duration::from_secs(60)).await;
    let c = cid(7001).to_string();
    // Peer 2's node takes a while: the wait must outlast it.
    fleet.nodes[2]
        .kubo
        .slow_progress(cid(7001), 6, Duration::from_millis(250));
    let o = fleet
        .cli(&[
            "pin",
            "add",
            &c,
            "--name",
            "first",
            "--metadata",
            "team=arch",
            "--wait",
            "--wait-timeout",
            "60s",
        ])
        .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Back only once every node has it (replication -1: everywhere).
    for n in &fleet.nodes {
        assert!(n.kubo.pinned(cid(7001)).is_some(), "{}", text(&o));
    }
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.matches(": PINNED |").count(), 3, "{out}");

    // `pin update FROM TO`: the new pin takes FROM's options; FROM stays.
    // TO is given as an IPFS path (a bare root: nothing to resolve).
    let next = cid(7004).to_string();
    let o = fleet
        .cli(&[
            "pin",
            "update",
            &c,
            &format!("/ipfs/{next}"),
            "--wait",
            "--wait-timeout",
            "60s",
            "--json",
        ])
        .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let updated: PinRecord = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(updated.cid, next);
    assert_eq!(updated.name, "first");
    assert_eq!(updated.metadata["team"], "arch");
    for n in &fleet.nodes {
        assert!(n.kubo.pinned(cid(7004)).is_some(), "{}", text(&o));
        assert!(n.kubo.pinned(cid(7001)).is_some(), "{}", text(&o));
    }

    let o = fleet
        .cli(&["pin", "rm", &c, "--wait", "--wait-timeout", "60s"])
        .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for n in &fleet.nodes {
        assert!(n.kubo.pinned(cid(7001)).is_none(), "{}", text(&o));
    }
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pin_add_wait_fails_with_the_peers_error_and_times_out_naming_the_progress() {
    let root = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(3, root.path(), Duration::from_secs(600)).await;
    // A node that cannot fetch the content: the wait ends with its error.
    let broken = cid(7002);
    fleet.nodes[1]
        .kubo
        .fail_midstream(broken, "failed to fetch block: no providers");
    let o = fleet
        .cli(&["pin", "add", &broken.to_string(), "--wait"])
        .await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("a peer failed"), "{err}");
    assert!(err.contains("pin_error"), "{err}");
    assert!(err.contains("no providers"), "{err}");

    // A node still fetching when --wait-timeout passes: exit 1, saying
    // how far it got; the pin itself stays.
    let slow = cid(7003);
    fleet.nodes[0]
        .kubo
        .slow_progress(slow, 10_000, Duration::from_millis(100));
    let o = fleet
        .cli(&[
            "pin",
            "add",
            &slow.to_string(),
            "--wait",
            "--wait-timeout",
            "2s",
        ])
        .await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("timed out after 2s"), "{err}");
    assert!(err.contains("of 3 peers pinned"), "{err}");
    let (code, body) = fleet.get(&format!("/allocations/{slow}")).await;
    assert_eq!(code, 200, "{body}");

    // --wait-limit: peer 0 never finishes, but peers 1 and 2 did, and two
    // are enough.
    let o = fleet
        .cli(&[
            "pin",
            "add",
            &slow.to_string(),
            "--wait",
            "--wait-limit",
            "2",
            "--wait-timeout",
            "30s",
            "--json",
        ])
        .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let pin: PinRecord = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(pin.cid, slow.to_string());
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_commands_against_a_daemon_print_its_answers() {
    let peer = Peer::start();
    let port = peer.url.rsplit(':').next().unwrap().to_string();
    let maddr = format!("/ip4/127.0.0.1/tcp/{port}");
    let host = ["--host", maddr.as_str()];

    // `version` through a multiaddress --host.
    let o = pinfleet(&[&["version"][..], &host].concat()).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        env!("CARGO_PKG_VERSION")
    );

    // `health metrics`: the names, then one metric of every peer.
    let start = tokio::time::Instant::now();
    loop {
        let o = pinfleet(&[&["health", "metrics"][..], &host].concat()).await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        if String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l == "freespace")
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no freespace metric: {}",
            text(&o)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let o = pinfleet(&[&["health", "metrics", "freespace"][..], &host].concat()).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let line = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(
        line.starts_with(&format!("{} | freespace: ", peer.id)),
        "{line}"
    );
    assert!(line.contains("| Expires in: "), "{line}");

    // `add --wait` with ipfs-cluster-ctl's pin options.
    let dir = tempfile::tempdir().unwrap();
    let mut cids = Vec::new();
    for name in ["a.txt", "b.txt"] {
        let f = dir.path().join(name);
        std::fs::write(&f, format!("content of {name}")).unwrap();
        let o = pinfleet(
            &[
                &[
                    "add",
                    f.to_str().unwrap(),
                    "--wait",
                    "--wait-timeout",
                    "60s",
                    "--metadata",
                    "team=arch",
                    "--expire-in",
                    "24h",
                    "-q",
                ][..],
                &host,
            ]
            .concat(),
        )
        .await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        cids.push(String::from_utf8_lossy(&o.stdout).trim().to_string());
    }
    let o = pinfleet(&[&["pin", "ls", &cids[0], "--json"][..], &host].concat()).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let pin: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(pin["metadata"]["team"], "arch", "{pin}");
    let expire = pin["expire_at"].as_str().unwrap();
    let expire = chrono::DateTime::parse_from_rfc3339(expire).unwrap();
    let left = expire.signed_duration_since(chrono::Utc::now());
    assert!(
        left > chrono::Duration::hours(23) && left <= chrono::Duration::hours(24),
        "{pin}"
    );

    // `status CID CID`: both, pinned (the wait saw to that).
    let o = pinfleet(&[&["status", &cids[0], &cids[1], "--json"][..], &host].concat()).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let infos: Vec<GlobalPinInfo> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut shown: Vec<String> = infos.iter().map(|i| i.cid.clone()).collect();
    shown.sort();
    let mut want = cids.clone();
    want.sort();
    assert_eq!(shown, want);
    assert!(
        infos
            .iter()
            .all(|i| i.peer_map[&peer.id].status == TrackerStatus::Pinned)
    );

    // `health graph` (DOT, this peer drawn doubled), `alerts`, `bandwidth`.
    let o = pinfleet(&[&["health", "graph"][..], &host].concat()).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let dot = String::from_utf8_lossy(&o.stdout);
    assert!(dot.starts_with("digraph cluster {"), "{dot}");
    assert!(dot.contains("peripheries=2"), "{dot}");
    let o = pinfleet(&[&["health", "graph", "--json"][..], &host].concat()).await;
    let g: Value = serde_json::from_slice(&o.stdout).unwrap();
    crate::compat_shapes::check(
        &g,
        &crate::compat_shapes::CONNECT_GRAPH,
        "health graph --json",
    );
    assert_eq!(g["cluster_id"], peer.id.as_str());
    let o = pinfleet(&[&["health", "alerts"][..], &host].concat()).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("no alerts"),
        "{}",
        text(&o)
    );
    let o = pinfleet(&[&["health", "bandwidth", "--json"][..], &host].concat()).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        serde_json::from_slice::<Value>(&o.stdout)
            .unwrap()
            .is_object()
    );

    // `ipfs gc`: the peer's line; what it removed is listed below it.
    let o = pinfleet(&[&["ipfs", "gc"][..], &host].concat()).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("| removed "), "{out}");
    let o = pinfleet(&[&["ipfs", "gc", "--local", "--json"][..], &host].concat()).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let gc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(gc["peer_map"][&peer.id].is_object(), "{gc}");
    crate::compat_shapes::check(&gc, &crate::compat_shapes::GLOBAL_REPO_GC, "ipfs gc --json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_gives_up_on_a_peer_that_never_answers() {
    // Accepts connections and reads requests, never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let url = format!("http://{addr}");
    let o = pinfleet(&["id", "--host", &url, "--timeout", "1"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("within 1s (--timeout)"), "{err}");
    let o = pinfleet(&["id", "--host", "/ip4/127.0.0.1/udp/9094"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("udp is not supported"),
        "{}",
        text(&o)
    );
    silent.abort();
}
