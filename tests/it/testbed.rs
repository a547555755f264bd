//! The binary as an operator runs it: `init`, `daemon` (clean shutdown on
//! SIGTERM) and `testbed up` with real child processes on loopback.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pinfleet::daemon::read_run_file;
use pinfleet::testbed::TestbedFile;

use crate::support::{init_peer, spawn_daemon, stop_daemon, wait_running};

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_pinfleet")
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn init_writes_a_peer_directory_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("p");
    let out = Command::new(exe())
        .args(["init", "--dir"])
        .arg(&d)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("peer id:  12D3KooW"));
    assert!(d.join("identity.json").exists() && d.join("service.toml").exists());
    let again = Command::new(exe())
        .args(["init", "--dir"])
        .arg(&d)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("--force"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let forced = Command::new(exe())
        .args(["init", "--force", "--dir"])
        .arg(&d)
        .output()
        .unwrap();
    assert!(forced.status.success());
}

#[test]
fn daemon_serves_its_api_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("p");
    init_peer(&d);
    let mut child = spawn_daemon(&d, &[]);
    let info = wait_running(&d, &mut child);
    let id = Command::new(exe())
        .args(["id", "--json", "--host", &info.api])
        .output()
        .unwrap();
    assert!(
        id.status.success(),
        "{}",
        String::from_utf8_lossy(&id.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&id.stdout).unwrap();
    assert_eq!(v["id"], info.id);

    stop_daemon(&mut child);
    assert!(read_run_file(&d).is_none(), "run.json removed on shutdown");
}

#[test]
fn testbed_starts_peers_applies_examples_and_restarts_with_state() {
    let dir = tempfile::tempdir().unwrap();
    let tb = dir.path().join("tb");
    let run = || {
        Command::new(exe())
            .args(["testbed", "up", "--peers", "3", "--once", "--dir"])
            .arg(&tb)
            .arg("--apply")
            .arg(repo().join("examples"))
            .output()
            .unwrap()
    };
    let first = run();
    let out = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(
        first.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(out.contains("cluster formed"), "{out}");
    assert!(
        out.contains("mirrors/archlinux-core-list") && out.contains("21"),
        "{out}"
    );

    let file: TestbedFile =
        serde_json::from_slice(&std::fs::read(tb.join("testbed.json")).unwrap()).unwrap();
    assert_eq!(file.peers.len(), 3);
    // The dashboard's URL, on peer 0 (issue 21).
    let dashboard = format!("dashboard {}/ui/", file.peers[0].api.trim_end_matches('/'));
    assert!(out.contains(&dashboard), "{out}");
    for p in &file.peers {
        assert!(
            p.id.starts_with("12D3KooW") && p.api.starts_with("http://127.0.0.1:") && p.pid > 0
        );
        assert_eq!(p.cmd[1..3], ["daemon".to_string(), "--dir".to_string()]);
        // Each peer's share of the cores, kept in its restart command.
        assert!(
            p.cmd
                .windows(2)
                .any(|w| w[0] == "--worker-threads" && w[1].parse::<u16>().is_ok_and(|n| n >= 1)),
            "{:?}",
            p.cmd
        );
        // The default backend: an embedded node, its swarm address listed.
        assert!(
            p.ipfs.starts_with("/ip4/127.0.0.1/tcp/") && p.ipfs.contains("/p2p/"),
            "{}",
            p.ipfs
        );
    }
    // The peers were stopped by --once.
    for p in &file.peers {
        assert!(read_run_file(&p.dir).is_none());
    }

    // Same directory again: same peers, state kept, the apply changes nothing.
    let second = run();
    let out2 = String::from_utf8_lossy(&second.stdout).to_string();
    assert!(second.status.success(), "{out2}");
    let file2: TestbedFile =
        serde_json::from_slice(&std::fs::read(tb.join("testbed.json")).unwrap()).unwrap();
    let ids = |f: &TestbedFile| f.peers.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&file), ids(&file2));
    assert!(
        out2.lines().filter(|l| l.contains("unchanged")).count() >= 4,
        "{out2}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testbed_peers_pin_on_their_kubo_nodes() {
    use pinfleet::testkit::MockKubo;
    let (k0, u0) = MockKubo::start().await.unwrap();
    let (k1, u1) = MockKubo::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tb = dir.path().join("tb");
    let mut child = tokio::process::Command::new(exe())
        .args(["testbed", "up", "--peers", "2", "--dir"])
        .arg(&tb)
        .arg("--ipfs")
        .arg(format!("kubo={u0},{u1}"))
        .arg("--apply")
        .arg(repo().join("examples/small.yaml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let small: Vec<_> =
        pinfleet::manifest::load_paths(&[repo().join("examples/small.yaml")], &Default::default())
            .unwrap()
            .pinsets[0]
            .pins
            .keys()
            .copied()
            .collect();
    let start = Instant::now();
    while !small
        .iter()
        .all(|c| k0.pinned(*c).is_some() && k1.pinned(*c).is_some())
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "pins did not reach both kubo nodes"
        );
        assert!(child.try_wait().unwrap().is_none(), "testbed exited early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let file: TestbedFile =
        serde_json::from_slice(&std::fs::read(tb.join("testbed.json")).unwrap()).unwrap();
    assert_eq!(file.peers[0].ipfs, u0);
    assert_eq!(file.peers[1].ipfs, u1);
    // Ctrl-C (SIGINT) stops the testbed and its peers.
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
    for p in &file.peers {
        assert!(read_run_file(&p.dir).is_none(), "peer {} stopped", p.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testbed_wait_shows_a_summary_and_exits_by_whether_everything_is_pinned() {
    use pinfleet::testkit::MockKubo;
    let (_k0, u0) = MockKubo::start().await.unwrap();
    let (k1, u1) = MockKubo::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tb = dir.path().join("tb");
    let run = |wait: &str| {
        let mut cmd = tokio::process::Command::new(exe());
        cmd.args(["testbed", "up", "--peers", "2", "--once", "--dir"])
            .arg(&tb)
            .arg("--ipfs")
            .arg(format!("kubo={u0},{u1}"))
            .arg("--apply")
            .arg(repo().join("examples/small.yaml"))
            .arg("--wait")
            .arg(wait)
            .kill_on_drop(true);
        cmd
    };
    // One peer's IPFS is down: not everything gets pinned in time.
    k1.set_down(true);
    let out = tokio::time::timeout(Duration::from_secs(120), run("3s").output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("not every pin is pinned after 3s"),
        "{stderr}"
    );
    assert!(stdout.contains("peers 2/2 · leader peer-"), "{stdout}");

    // Back up: the restarted testbed settles, and says so.
    k1.set_down(false);
    let out = tokio::time::timeout(Duration::from_secs(120), run("60s").output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("peers 2/2"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        summary.ends_with("pinning 0 · queued 0 · error 0"),
        "{summary}"
    );
    assert!(stdout.contains("every pin is pinned"), "{stdout}");
}

/// The README's main job: a 3-peer testbed on the embedded backend adds the
/// quickstart content, applies its PinSet and ends with every pin pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_reaches_pinned_on_every_peer() {
    let dir = tempfile::tempdir().unwrap();
    let run = |add: &'static [&'static str]| {
        tokio::time::timeout(
            Duration::from_secs(120),
            tokio::process::Command::new(exe())
                .current_dir(repo())
                .args(["testbed", "up", "--peers", "3", "--dir"])
                .arg(dir.path().join("tb"))
                .args(add)
                .args(["--apply", "examples/quickstart", "--wait", "60s", "--once"])
                .kill_on_drop(true)
                .output(),
        )
    };
    let out = run(&["--add", "examples/quickstart/content"])
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("added QmSnuKKp3siNyNhbWiW2fwo53W46HdWrcZ7fSZYWXKGV3c content/site"),
        "{stdout}"
    );
    assert!(stdout.contains("default/quickstart"), "{stdout}");
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("peers 3/3"))
        .unwrap_or_else(|| panic!("{stdout}"));
    // 3 pins on every one of 3 peers.
    assert!(summary.contains("3 pins · pinned 9 ·"), "{summary}");
    assert!(stdout.contains("every pin is pinned"), "{stdout}");

    // Restarted without adding anything, the peers come back with their
    // state and their blocks: the PinSet is unchanged and pinned everywhere.
    let out = run(&[]).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("default/quickstart") && l.ends_with("unchanged")),
        "{stdout}"
    );
    assert!(stdout.contains("every pin is pinned"), "{stdout}");
}

/// A request that never ends (an upload that stalls) does not keep the
/// daemon alive after SIGTERM: requests get a short grace, then are dropped.
#[test]
fn a_stalled_request_does_not_block_shutdown() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("p");
    init_peer(&d);
    let mut child = spawn_daemon(&d, &[]);
    let info = wait_running(&d, &mut child);
    let addr = info.api.trim_start_matches("http://").to_string();
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stalled,
        "POST /add?progress=true HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: 1000000\r\n\r\n--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big\"\r\n\r\n"
    )
    .unwrap();
    stalled.write_all(&[7u8; 300 * 1024]).unwrap();
    stalled.flush().unwrap();
    // The daemon is reading that body (it imported the first 256 KiB and
    // says so while the rest has not come) when the signal comes.
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\"bytes\":262144") {
        use std::io::Read;
        let n = stalled.read(&mut buf).expect("upload not started");
        assert!(
            n > 0,
            "upload not started: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    // SIGTERM must end it within the grace, not wait for the upload.
    stop_daemon(&mut child);
    drop(stalled);
}

/// Issue 13's "done when": a 3-peer testbed with `--auth` runs the
/// quickstart (add, apply, wait) as its writer; without credentials the
/// CLI is refused with a hint, a reader cannot apply, a writer and a
/// writer's token can.
#[test]
fn a_testbed_with_auth_serves_the_quickstart_to_its_writer() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let tb_dir = dir.path().join("tb");
    let mut child = Command::new(exe())
        .current_dir(repo())
        .args(["testbed", "up", "--peers", "3", "--auth", "--dir"])
        .arg(&tb_dir)
        .args(["--add", "examples/quickstart/content"])
        .args(["--apply", "examples/quickstart", "--wait", "90s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("every pin is pinned") => break,
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("the quickstart did not finish: {seen:#?}");
            }
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("default/quickstart")),
        "{seen:#?}"
    );

    let path = tb_dir.join("testbed.json");
    let file: TestbedFile = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "testbed.json holds passwords: {mode:o}");
    }
    let (admin, writer, reader) = (
        file.credentials("admin").unwrap().to_owned(),
        file.credentials("writer").unwrap().to_owned(),
        file.credentials("reader").unwrap().to_owned(),
    );
    assert!(admin.starts_with("admin:") && writer.starts_with("writer:"));
    let api = file.peers[1].api.clone();
    let cli = |args: &[&str], auth: Option<(&str, &str)>| {
        let mut cmd = Command::new(exe());
        cmd.current_dir(repo())
            .args(args)
            .args(["--host", &api])
            .env_remove("PINFLEET_BASIC_AUTH")
            .env_remove("PINFLEET_TOKEN");
        if let Some((k, v)) = auth {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let status = ["status", "pinset/default/quickstart"];
    let anonymous = cli(&status, None);
    assert_eq!(anonymous.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&anonymous.stderr);
    assert!(
        stderr.contains("http 401") && stderr.contains("--basic-auth"),
        "{stderr}"
    );
    let as_reader = cli(&status, Some(("PINFLEET_BASIC_AUTH", &reader)));
    assert!(as_reader.status.success(), "{as_reader:?}");
    let cid = crate::support::cid_v1("testbed-auth");
    let pin = ["pin", "add", cid.as_str()];
    let reader_pin = cli(&pin, Some(("PINFLEET_BASIC_AUTH", &reader)));
    assert_eq!(reader_pin.status.code(), Some(2), "{reader_pin:?}");
    assert!(String::from_utf8_lossy(&reader_pin.stderr).contains("http 403"));
    let apply = ["apply", "examples/quickstart"];
    let writer_apply = cli(&apply, Some(("PINFLEET_BASIC_AUTH", &writer)));
    assert!(writer_apply.status.success(), "{writer_apply:?}");
    assert!(String::from_utf8_lossy(&writer_apply.stdout).contains("unchanged"));
    let token = cli(&["token"], Some(("PINFLEET_BASIC_AUTH", &writer)));
    assert!(token.status.success(), "{token:?}");
    let token = String::from_utf8(token.stdout).unwrap();
    let with_token = cli(&pin, Some(("PINFLEET_TOKEN", token.trim())));
    assert!(with_token.status.success(), "{with_token:?}");
    stop_daemon(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_testbed_peer_whose_port_was_taken_starts_on_fresh_ports() {
    use pinfleet::testbed::{Testbed, TestbedIpfs, TestbedOptions};
    let dir = tempfile::tempdir().unwrap();
    let opts = TestbedOptions {
        exe: exe().into(),
        peers: 1,
        dir: dir.path().join("tb"),
        timeout: Duration::from_secs(60),
        ipfs: TestbedIpfs::None,
        auth: false,
        followers: 0,
        env: Vec::new(),
    };
    let tb = Testbed::up(&opts).await.unwrap();
    let first = tb.file.peers[0].api.clone();
    tb.stop().await;
    // Another process holds the API port the peer's config names.
    let addr = first.trim_start_matches("http://").trim_end_matches('/');
    let _holder = std::net::TcpListener::bind(addr).unwrap();
    let tb = Testbed::up(&opts).await.unwrap();
    let again = tb.file.peers[0].api.clone();
    assert_ne!(again, first, "the peer moved to a free port");
    let resp = crate::support::http()
        .get(format!("{}/health", again.trim_end_matches('/')))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    tb.stop().await;
}
