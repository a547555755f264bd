//! Helpers shared by the integration-test modules.

use std::path::{Path, PathBuf};

/// A path inside the repository, whatever the test's working directory.
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Writes `files` (path relative to `root`, content) under `root`, creating
/// parent directories as needed.
pub fn write_tree(root: &Path, files: &[(&str, &str)]) {
    for (rel, content) in files {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, content).unwrap();
    }
}

/// The sha2-256 multihash of `seed`'s bytes: distinct seeds give distinct,
/// real CIDs.
fn multihash(seed: &str) -> cid::multihash::Multihash<64> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(seed.as_bytes());
    cid::multihash::Multihash::wrap(0x12, &digest).unwrap()
}

/// A CIDv1 (dag-pb, sha2-256, base32: `bafy…`) derived from `seed`.
pub fn cid_v1(seed: &str) -> String {
    cid::Cid::new_v1(0x70, multihash(seed)).to_string()
}

/// The CIDv0 (`Qm…`) spelling of `cid_v1(seed)`.
pub fn cid_v0(seed: &str) -> String {
    cid::Cid::new_v0(multihash(seed)).unwrap().to_string()
}

/// Starts a one-peer cluster and its REST API on a thread and runtime of
/// their own (so the peer outlives each test's runtime) and returns the API
/// URL. The peer's directory is under target/ (the process never drops a
/// peer kept in a `static`).
pub fn spawn_api_peer(peername: &'static str, secret: u8) -> String {
    spawn_api_peer_with(peername, secret, |state, _| state)
}

/// [`spawn_api_peer`] with the API's state adjusted by `tune` (given the
/// peer's directory) before it serves.
pub fn spawn_api_peer_with(
    peername: &'static str,
    secret: u8,
    tune: impl FnOnce(pinfleet::api::ApiState, &Path) -> pinfleet::api::ApiState + Send + 'static,
) -> String {
    use pinfleet::api::{ApiState, serve};
    use pinfleet::consensus::{ClusterNode, NodeOptions};
    let deadline = std::time::Duration::from_secs(30);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
            let tasks = tokio_util::task::TaskTracker::new();
            let cancel = tokio_util::sync::CancellationToken::new();
            let keypair = libp2p::identity::Keypair::generate_ed25519();
            let opts = NodeOptions::new(dir.path().to_path_buf(), keypair, [secret; 32]);
            let node = ClusterNode::start(opts, cancel.clone(), &tasks)
                .await
                .unwrap();
            node.wait_ready(deadline).await.unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let state = tune(ApiState::new(node, "0.0.0-it", peername), dir.path());
            let server = tokio::spawn(serve(listener, state, cancel.clone()));
            tx.send(url).unwrap();
            server.await.unwrap().unwrap();
            drop(dir);
        });
    });
    rx.recv_timeout(deadline * 2)
        .expect("the peer did not start")
}

/// A PinSet manifest `ns/name` pinning `cids` (named `pin-<i>`).
pub fn pinset_yaml(ns: &str, name: &str, cids: &[String]) -> String {
    let mut s = format!(
        "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n"
    );
    if cids.is_empty() {
        s.push_str("  pins: []\n");
    } else {
        s.push_str("  pins:\n");
        for (i, c) in cids.iter().enumerate() {
            s.push_str(&format!("    - cid: {c}\n      name: pin-{i}\n"));
        }
    }
    s
}

/// Owners of a pin in the shared state of the peer at `base`, or `None`
/// when it is not there.
pub async fn owners_at(base: &str, cid: &str) -> Option<Vec<String>> {
    let resp = crate::support::http()
        .get(format!("{base}/allocations/{cid}"))
        .send()
        .await
        .unwrap();
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return None;
    }
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let v: serde_json::Value = resp.json().await.unwrap();
    Some(v["owners"].as_object().unwrap().keys().cloned().collect())
}

/// The PinSet `ns/name` recorded by the peer at `base` (`GET /pinsets`).
pub async fn recorded_at(base: &str, ns: &str, name: &str) -> Option<serde_json::Value> {
    let resp = crate::support::http()
        .get(format!("{base}/pinsets"))
        .send()
        .await
        .unwrap();
    if resp.status() == reqwest::StatusCode::NO_CONTENT {
        return None;
    }
    let v: Vec<serde_json::Value> = resp.json().await.unwrap();
    v.into_iter()
        .find(|p| p["namespace"] == ns && p["name"] == name)
}

/// The controller's outcome for PinSet `name`.
pub fn outcome<'a>(
    out: &'a [pinfleet::controller::PinSetOutcome],
    name: &str,
) -> &'a pinfleet::controller::PinSetOutcome {
    out.iter()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("no outcome for {name}: {out:?}"))
}

/// A test DAG: a dag-pb root linking `fanout` dag-pb nodes, each linking
/// `fanout` raw leaves of distinct bytes derived from `seed`. Returns the
/// root and every block, root first (`1 + fanout + fanout²` blocks).
pub fn test_dag(seed: &str, fanout: usize) -> (cid::Cid, Vec<(cid::Cid, Vec<u8>)>) {
    test_dag_sized(seed, fanout, 3000)
}

/// [`test_dag`] with leaves of about `leaf_bytes` bytes each.
pub fn test_dag_sized(
    seed: &str,
    fanout: usize,
    leaf_bytes: usize,
) -> (cid::Cid, Vec<(cid::Cid, Vec<u8>)>) {
    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
        put_varint(out, (field << 3) | 2);
        put_varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
    fn cid_of(codec: u64, data: &[u8]) -> cid::Cid {
        use sha2::Digest;
        let mh = cid::multihash::Multihash::wrap(0x12, &sha2::Sha256::digest(data)).unwrap();
        cid::Cid::new_v1(codec, mh)
    }
    /// A dag-pb node: links (Hash, Name, Tsize) then Data.
    fn node(children: &[(cid::Cid, usize)], data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (c, size)) in children.iter().enumerate() {
            let mut link = Vec::new();
            put_bytes(&mut link, 1, &c.to_bytes());
            put_bytes(&mut link, 2, format!("{i}").as_bytes());
            put_varint(&mut link, 3 << 3);
            put_varint(&mut link, *size as u64);
            put_bytes(&mut out, 2, &link);
        }
        put_bytes(&mut out, 1, data);
        out
    }
    let mut blocks = Vec::new();
    let mut mids = Vec::new();
    for m in 0..fanout {
        let mut leaves = Vec::new();
        for l in 0..fanout {
            let unit = format!("{seed}/leaf/{m}/{l}/");
            let data = unit.repeat(leaf_bytes / unit.len() + 1).into_bytes();
            let c = cid_of(0x55, &data);
            leaves.push((c, data.len()));
            blocks.push((c, data));
        }
        let data = node(&leaves, format!("{seed}/mid/{m}").as_bytes());
        let c = cid_of(0x70, &data);
        mids.push((c, data.len()));
        blocks.push((c, data));
    }
    let data = node(&mids, seed.as_bytes());
    let root = cid_of(0x70, &data);
    blocks.insert(0, (root, data));
    (root, blocks)
}

/// `pinfleet init --dir d`, which must succeed.
pub fn init_peer(d: &Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pinfleet"))
        .args(["init", "--dir"])
        .arg(d)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `pinfleet daemon --dir d` on free loopback ports, with `env` set (stdout
/// discarded, stderr piped for the caller).
pub fn spawn_daemon(d: &Path, env: &[(&str, &str)]) -> std::process::Child {
    daemon_command(d, &[], env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// `pinfleet daemon --dir d args…` on loopback port 0 and without a webhook
/// secret from the environment, then `env` (which may fix the ports).
fn daemon_command(d: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pinfleet"));
    cmd.args(["daemon", "--dir"])
        .arg(d)
        .args(args)
        .env("PINFLEET_API_LISTEN", "127.0.0.1:0")
        .env(
            "PINFLEET_CLUSTER_LISTEN_MULTIADDRESS",
            "/ip4/127.0.0.1/tcp/0",
        )
        .env_remove("PINFLEET_WEBHOOK_SECRET")
        // `init` writes a public node with the public bootstrap list: tests
        // stay private and on loopback unless they set these themselves.
        .env("PINFLEET_IPFS_SWARM", "private")
        .env("PINFLEET_IPFS_BOOTSTRAP", "");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Waits (30 s at most) until the daemon `child` in `d` has written its
/// `run.json`.
pub fn wait_running(d: &Path, child: &mut std::process::Child) -> pinfleet::daemon::RunInfo {
    wait_run_file(d, child, None)
}

/// [`wait_running`] for a daemon whose output goes to `log`: when it exits
/// or does not start in time, the failure quotes the log's last lines.
pub fn wait_running_logged(
    d: &Path,
    child: &mut std::process::Child,
    log: &Path,
) -> pinfleet::daemon::RunInfo {
    wait_run_file(d, child, Some(log))
}

fn wait_run_file(
    d: &Path,
    child: &mut std::process::Child,
    log: Option<&Path>,
) -> pinfleet::daemon::RunInfo {
    let said = || log.map(|l| log_tail(l, 20)).unwrap_or_default();
    let start = std::time::Instant::now();
    loop {
        if let Some(i) = pinfleet::daemon::read_run_file(d).filter(|i| i.pid == child.id()) {
            return i;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("daemon exited early ({status}){}", said());
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "daemon did not start{}",
            said()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The last `n` lines of the log at `path`, introduced by a line naming
/// it (for failure messages).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    format!(
        "\n--- last lines of {}:\n{}",
        path.display(),
        lines[from..].join("\n")
    )
}

/// Starts the daemon of directory `d` again (after a SIGKILL or a stop):
/// the same identity and state, `args` and `env`, output appended to
/// `log`, but on fresh loopback ports. The ports it had were free when it
/// got them, not since: another process may have taken one while it was
/// down, and a daemon that cannot bind exits. So the API and p2p
/// listeners are on port 0 (whatever `env` says), and the daemon dials
/// `members` (running peers' p2p addresses, with `/p2p/<id>`) as it
/// starts: they learn its new address from that connection (identify),
/// and the leader replicates to it over it. Its Raft state is kept, so
/// this is no join. Fails at once, quoting the log, if it exits before it
/// runs; returns the child and its `run.json` (the new ports).
pub fn restart_daemon(
    d: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    log: &Path,
    members: &[String],
) -> (std::process::Child, pinfleet::daemon::RunInfo) {
    // A killed daemon leaves its run.json behind.
    let _ = std::fs::remove_file(d.join(pinfleet::daemon::RUN_FILE));
    let mut args = args.to_vec();
    for m in members {
        args.extend(["--bootstrap", m.as_str()]);
    }
    let mut env = env.to_vec();
    env.extend([
        ("PINFLEET_API_LISTEN", "127.0.0.1:0"),
        (
            "PINFLEET_CLUSTER_LISTEN_MULTIADDRESS",
            "/ip4/127.0.0.1/tcp/0",
        ),
    ]);
    let mut child = spawn_daemon_logged(d, &args, &env, log);
    let info = wait_running_logged(d, &mut child, log);
    (child, info)
}

/// A daemon process that is SIGKILLed and reaped if dropped (a failed
/// test leaves no process behind).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SIGTERM, then a clean exit within 30 s.
pub fn stop_daemon(child: &mut std::process::Child) {
    let status = signal_and_wait(
        child,
        nix::sys::signal::Signal::SIGTERM,
        std::time::Duration::from_secs(30),
        "daemon ignored SIGTERM",
    );
    assert!(status.success(), "clean exit, got {status}");
}

/// Sends `signal` to `child` and waits (`limit` at most, else `late`) for
/// it to end.
fn signal_and_wait(
    child: &mut std::process::Child,
    signal: nix::sys::signal::Signal,
    limit: std::time::Duration,
    late: &str,
) -> std::process::ExitStatus {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
    let start = std::time::Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(start.elapsed() < limit, "{late}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `pinfleet daemon --dir d` followed by `args`, with `env` set (after the
/// loopback-port defaults of [`spawn_daemon`], so `env` may fix the ports)
/// and stdout and stderr appended to `log`: a peer that logs a lot never
/// blocks on a pipe nobody reads, and the log survives a SIGKILL.
pub fn spawn_daemon_logged(
    d: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    log: &Path,
) -> std::process::Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let err = out.try_clone().unwrap();
    daemon_command(d, args, env)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap()
}

/// SIGKILL: the daemon dies at once, no shutdown code runs (no final
/// flush, no run.json removal). Waits (10 s at most) until it is gone and
/// checks that the signal is what ended it.
pub fn kill_daemon(child: &mut std::process::Child) {
    use std::os::unix::process::ExitStatusExt;
    let status = signal_and_wait(
        child,
        nix::sys::signal::Signal::SIGKILL,
        std::time::Duration::from_secs(10),
        "daemon survived SIGKILL",
    );
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL, got {status}");
}

/// `GET url`, which must succeed, as JSON.
pub async fn get_json(url: &str) -> serde_json::Value {
    let resp = http().get(url).send().await.unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.json().await.unwrap()
}

/// A plain HTTP client (`pinfleet::tls::client`, which installs the crypto
/// provider every reqwest client needs).
pub fn http() -> reqwest::Client {
    http_builder().build().unwrap()
}

/// [`http`]'s builder, for timeouts and the like.
pub fn http_builder() -> reqwest::ClientBuilder {
    pinfleet::tls::client(None).unwrap()
}

/// A three-daemon testbed in `tb` whose peers run embedded IPFS nodes, on
/// the public swarm's protocols when `public` (`testbed up --public-ipfs`:
/// loopback TCP and QUIC, no bootstrap peers), without API users.
pub async fn embedded_testbed(tb: &Path, public: bool) -> pinfleet::testbed::Testbed {
    embedded_testbed_with(tb, public, &[]).await
}

/// [`embedded_testbed`] whose peers also get the variables `env`
/// (`PINFLEET_<SECTION>_<KEY>` config overrides).
pub async fn embedded_testbed_with(
    tb: &Path,
    public: bool,
    env: &[(&str, &str)],
) -> pinfleet::testbed::Testbed {
    use pinfleet::testbed::{Testbed, TestbedIpfs, TestbedOptions};
    Testbed::up(&TestbedOptions {
        exe: env!("CARGO_BIN_EXE_pinfleet").into(),
        peers: 3,
        dir: tb.to_path_buf(),
        timeout: std::time::Duration::from_secs(90),
        ipfs: if public {
            TestbedIpfs::EmbeddedPublic
        } else {
            TestbedIpfs::Embedded
        },
        auth: false,
        followers: 0,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
    .await
    .unwrap()
}

/// An embedded IPFS node running in this process. Its tasks are cancelled
/// when it is dropped (a failing test leaves nothing running);
/// [`InProcessNode::stop`] also waits until its blockstore is closed.
pub struct InProcessNode {
    /// The node.
    pub node: pinfleet::ipfs::embedded::EmbeddedNode,
    cancel: tokio_util::sync::CancellationToken,
    tasks: tokio_util::task::TaskTracker,
}

impl InProcessNode {
    /// Starts a node with `config`.
    pub async fn start_with(config: pinfleet::ipfs::embedded::EmbeddedConfig) -> Self {
        let cancel = tokio_util::sync::CancellationToken::new();
        let tasks = tokio_util::task::TaskTracker::new();
        let node = pinfleet::ipfs::embedded::EmbeddedNode::start(config, cancel.clone(), &tasks)
            .await
            .unwrap();
        Self {
            node,
            cancel,
            tasks,
        }
    }

    /// Stops the node and waits (30 s at most) until its blockstore is
    /// closed.
    pub async fn stop(self) {
        let tasks = self.tasks.clone();
        self.cancel.cancel();
        tasks.close();
        drop(self);
        tokio::time::timeout(std::time::Duration::from_secs(30), tasks.wait())
            .await
            .expect("the node did not stop");
    }
}

impl Drop for InProcessNode {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Tracker settings of the tests that pin on a `MockKubo`: 4 pins at once,
/// a recheck every 300 ms, drift repaired, replication -1 by default, and
/// `progress` as the progress timeout with a retry backoff from
/// `retry_base` to `retry_max`.
pub fn tracker_config(
    progress: std::time::Duration,
    retry_base: std::time::Duration,
    retry_max: std::time::Duration,
) -> pinfleet::tracker::TrackerConfig {
    pinfleet::tracker::TrackerConfig {
        concurrency: 4,
        progress_timeout: progress,
        retry_base,
        retry_max,
        recheck_interval: std::time::Duration::from_millis(300),
        repair_drift: true,
        default_replication: pinfleet::manifest::ReplicationFactors { min: -1, max: -1 },
        managed_path: None,
    }
}
