//! Crash tests: real `pinfleet daemon` processes (`ipfs.backend = none`) on
//! fixed loopback ports, killed with SIGKILL in the middle of large ingests
//! and restarted from their directories, as an operator's supervisor would.
//! What they prove: no acknowledged revision is lost, a peer that missed a
//! large ingest catches up from the log, and a peer that joins a cluster
//! whose log was compacted installs the snapshot. Every wait has a
//! deadline; none is a fixed sleep.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use crate::support::{init_peer, kill_daemon, spawn_daemon_logged, stop_daemon, wait_running};

/// The cluster secret every peer of a fleet shares.
const SECRET: &str = "c4a5c4a5c4a5c4a5c4a5c4a5c4a5c4a5c4a5c4a5c4a5c4a5c4a5c4a5c4a5c4a5";

/// Log filter of the daemons: pinfleet at info, and openraft's snapshot
/// worker, whose "install complete snapshot" line is what the join test
/// looks for.
const RUST_LOG: &str = "info,openraft=warn,openraft::core::sm::worker=info,libp2p=warn";

/// A port free right now on 127.0.0.1 (released before the daemon binds it,
/// as `pinfleet testbed` does).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// One peer of a fleet: its directory and fixed ports survive restarts.
struct Member {
    dir: PathBuf,
    log: PathBuf,
    api_port: u16,
    p2p_port: u16,
    id: String,
    child: Option<Child>,
}

impl Member {
    fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    fn p2p(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", self.p2p_port, self.id)
    }
}

/// Daemon processes under one temporary directory. Dropping it SIGKILLs
/// whatever still runs, so a failed test leaves no process behind.
struct Fleet {
    root: tempfile::TempDir,
    env: Vec<(String, String)>,
    members: Vec<Member>,
    http: reqwest::Client,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() && std::env::var_os("CRASH_KEEP").is_some() {
            let kept = std::mem::replace(&mut self.root, tempfile::tempdir().unwrap()).keep();
            eprintln!("kept {}", kept.display());
        }
    }
}

impl Fleet {
    /// A fleet whose peers all get `env` (`PINFLEET_CONSENSUS_*` settings).
    fn new(env: &[(&str, &str)]) -> Fleet {
        Fleet {
            root: tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            members: Vec::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(600))
                .build()
                .unwrap(),
        }
    }

    /// Starts `n` peers: the first bootstraps the cluster, the others join
    /// it; returns once every peer lists `n` members.
    async fn start(n: usize, env: &[(&str, &str)]) -> Fleet {
        let mut fleet = Fleet::new(env);
        for _ in 0..n {
            fleet.add();
        }
        fleet.wait_formed(n).await;
        fleet
    }

    /// Creates, starts and (for any peer but the first) joins a new peer
    /// through the first one; returns its index.
    fn add(&mut self) -> usize {
        let i = self.members.len();
        let dir = self.root.path().join(format!("peer-{i}"));
        init_peer(&dir);
        self.members.push(Member {
            log: self.root.path().join(format!("peer-{i}.log")),
            dir,
            api_port: free_port(),
            p2p_port: free_port(),
            id: String::new(),
            child: None,
        });
        let bootstrap = (i > 0).then(|| self.members[0].p2p());
        self.spawn(i, bootstrap);
        i
    }

    fn spawn(&mut self, i: usize, bootstrap: Option<String>) {
        let m = &self.members[i];
        let api = format!("127.0.0.1:{}", m.api_port);
        let p2p = format!("/ip4/127.0.0.1/tcp/{}", m.p2p_port);
        let mut env: Vec<(&str, &str)> = vec![
            ("PINFLEET_CLUSTER_SECRET", SECRET),
            ("PINFLEET_CLUSTER_PEERNAME", "crash"),
            ("PINFLEET_API_LISTEN", &api),
            ("PINFLEET_CLUSTER_LISTEN_MULTIADDRESS", &p2p),
            ("PINFLEET_IPFS_BACKEND", "none"),
            ("RUST_LOG", RUST_LOG),
        ];
        env.extend(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut args = Vec::new();
        if let Some(b) = &bootstrap {
            args = vec!["--bootstrap", b.as_str()];
        }
        let mut child = spawn_daemon_logged(&m.dir, &args, &env, &m.log);
        let info = wait_running(&m.dir, &mut child);
        let m = &mut self.members[i];
        m.id = info.id;
        m.child = Some(child);
    }

    /// Restarts a stopped peer from its directory, on its ports.
    fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "peer {i} is running");
        // A killed daemon leaves its run.json behind.
        let _ = std::fs::remove_file(self.members[i].dir.join(pinfleet::daemon::RUN_FILE));
        self.spawn(i, None);
    }

    /// SIGKILL.
    fn kill(&mut self, i: usize) {
        let mut c = self.members[i].child.take().expect("peer is running");
        kill_daemon(&mut c);
    }

    /// SIGTERM and a clean exit.
    fn stop(&mut self, i: usize) {
        let mut c = self.members[i].child.take().expect("peer is running");
        stop_daemon(&mut c);
    }

    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len()).filter(|i| self.members[*i].child.is_some())
    }

    /// The last lines of every peer's log, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (i, m) in self.members.iter().enumerate() {
            let text = std::fs::read_to_string(&m.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(25);
            let _ = writeln!(out, "--- peer {i} ({}) log tail:", m.id);
            for l in &lines[from..] {
                let _ = writeln!(out, "{l}");
            }
        }
        out
    }

    /// Polls `check` (every 200 ms) until it holds; panics with `what` and
    /// the peers' log tails after `limit`.
    async fn wait_until<F, Fut>(&self, what: &str, limit: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        while !check().await {
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The members peer `i` lists in `/id`, or none when it does not answer.
    async fn members_seen(&self, i: usize) -> usize {
        let url = format!("{}/id", self.members[i].api());
        match self
            .http
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) => r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v["cluster_peers"].as_array().map(Vec::len))
                .unwrap_or(0),
            Err(_) => 0,
        }
    }

    async fn wait_formed(&self, n: usize) {
        self.wait_until(&format!("{n} members"), Duration::from_secs(60), || async {
            for i in self.running() {
                if self.members_seen(i).await != n {
                    return false;
                }
            }
            true
        })
        .await;
    }

    /// The running peer that says it is the Raft leader (`/metrics`).
    async fn leader(&self) -> Option<usize> {
        for i in self.running() {
            let url = format!("{}/metrics", self.members[i].api());
            let Ok(r) = self
                .http
                .get(url)
                .timeout(Duration::from_secs(30))
                .send()
                .await
            else {
                continue;
            };
            if r.text()
                .await
                .is_ok_and(|t| t.lines().any(|l| l == "pinfleet_leader 1"))
            {
                return Some(i);
            }
        }
        None
    }

    async fn wait_leader(&self) -> usize {
        let start = Instant::now();
        loop {
            if let Some(i) = self.leader().await {
                return i;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no leader after 60 s\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `PUT /pinsets/crash/NAME?revision=REV` on peer `i`.
    async fn put(
        &self,
        i: usize,
        name: &str,
        body: String,
        revision: &str,
    ) -> Result<(StatusCode, String), String> {
        let url = format!(
            "{}/pinsets/crash/{name}?revision={revision}",
            self.members[i].api()
        );
        let r = self
            .http
            .put(url)
            .header("content-type", "application/yaml")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        Ok((status, r.text().await.unwrap_or_default()))
    }

    /// The revision of `crash/NAME` peer `i` records, if any.
    async fn recorded(&self, i: usize, name: &str) -> Option<String> {
        let url = format!("{}/pinsets/crash/{name}", self.members[i].api());
        let r = self
            .http
            .get(url)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .ok()?;
        if r.status() != StatusCode::OK {
            return None;
        }
        let v: serde_json::Value = r.json().await.ok()?;
        v["revision"].as_str().map(str::to_string)
    }

    /// The revision of `crash/NAME` peer `i` records, once it answers one
    /// (60 s at most).
    async fn wait_recorded(&self, i: usize, name: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(r) = self.recorded(i, name).await {
                return r;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "peer {i} records no revision\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Peer `i`'s `GET /allocations`, summarised.
    async fn allocations(&self, i: usize) -> Option<Allocations> {
        let url = format!("{}/allocations", self.members[i].api());
        let r = self.http.get(url).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        let mut lines = Vec::new();
        let mut indexes = Vec::new();
        let mut rest = Vec::new();
        let mut body = r.bytes_stream();
        while let Some(chunk) = body.next().await {
            rest.extend_from_slice(&chunk.ok()?);
            let mut start = 0;
            while let Some(n) = rest[start..].iter().position(|b| *b == b'\n') {
                let line = &rest[start..start + n];
                lines.push(<[u8; 32]>::from(Sha256::digest(line)));
                indexes.push(seq_index(line));
                start += n + 1;
            }
            rest.drain(..start);
        }
        lines.sort_unstable();
        indexes.sort_unstable();
        let mut h = Sha256::new();
        for l in &lines {
            h.update(l);
        }
        Some(Allocations {
            digest: hex::encode(h.finalize()),
            indexes,
        })
    }
}

/// A peer's `GET /allocations`: the digest of its sorted lines (equal
/// digests: byte-identical sorted bodies) and the test CIDs it holds.
#[derive(Debug, PartialEq, Eq)]
struct Allocations {
    digest: String,
    /// `i` of every `seq_cid(i)` listed, sorted.
    indexes: Vec<u64>,
}

/// The `i` of the `seq_cid(i)` an `/allocations` line is about.
fn seq_index(line: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(line).unwrap();
    let cid: cid::Cid = v["cid"].as_str().unwrap().parse().unwrap();
    let digest = cid.hash().digest();
    u64::from_le_bytes(digest[..8].try_into().unwrap())
}

/// The PinSet `crash/NAME` pinning `seq_cid(i)` for `i` in `range`.
fn pinset(name: &str, range: std::ops::Range<u64>) -> String {
    let mut s = String::with_capacity(100 * (range.end - range.start) as usize + 200);
    let _ = write!(
        s,
        "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: {name}\n  namespace: crash\nspec:\n  pins:\n",
    );
    for i in range {
        let _ = write!(
            s,
            "    - cid: {}\n      name: p{i}\n",
            pinfleet::testkit::seq_cid(i)
        );
    }
    s
}

/// Pins of the crash and catch-up ingests (the 300k).
const INGEST_PINS: u64 = 300_000;

/// Pins in the cluster a new peer joins (the 1M).
const JOIN_PINS: u64 = 1_000_000;

/// Settings of every test peer, for a debug build on a shared 2-core CI
/// machine (see the module comment of `support` for why each).
const TEST_ENV: &[(&str, &str)] = &[];

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// The settings every fleet of this module runs with, plus `extra`.
fn test_env(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&'static str, String)> =
        TEST_ENV.iter().map(|(k, v)| (*k, v.to_string())).collect();
    for (k, v) in [
        ("PINFLEET_CONSENSUS_HEARTBEAT_INTERVAL", "CRASH_HB"),
        ("PINFLEET_CONSENSUS_ELECTION_TIMEOUT_MIN", "CRASH_EMIN"),
        ("PINFLEET_CONSENSUS_ELECTION_TIMEOUT_MAX", "CRASH_EMAX"),
        ("PINFLEET_CONSENSUS_BATCH_MAX_PINS", "CRASH_BATCH"),
        ("PINFLEET_CONSENSUS_APPEND_MAX_BYTES", "CRASH_APPEND"),
    ] {
        if let Ok(x) = std::env::var(v) {
            env.push((k, x));
        }
    }
    env.extend(extra.iter().cloned());
    env
}

async fn start(n: usize, extra: &[(&'static str, String)]) -> Fleet {
    let env = test_env(extra);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Fleet::start(n, &env).await
}

/// Waits until every running peer records each `(name, revision)` and
/// their sorted `GET /allocations` are byte-identical and list exactly the
/// pins `want` (sorted `seq_cid` numbers).
async fn wait_converged(fleet: &Fleet, records: &[(&str, &str)], want: &[u64], limit: Duration) {
    let start = Instant::now();
    let peers: Vec<usize> = fleet.running().collect();
    for &i in &peers {
        for &(name, revision) in records {
            fleet
                .wait_until(
                    &format!("peer {i} to record {name} at {revision}"),
                    limit.saturating_sub(start.elapsed()),
                    || async { fleet.recorded(i, name).await.as_deref() == Some(revision) },
                )
                .await;
        }
    }
    // Recorded means applied; allocations may still be on their way, so
    // compare until equal (or the deadline).
    loop {
        let mut all = Vec::new();
        for &i in &peers {
            all.push(fleet.allocations(i).await);
        }
        let agreed = all.iter().all(|a| a.is_some() && *a == all[0]);
        if agreed && all[0].as_ref().is_some_and(|a| a.indexes == want) {
            return;
        }
        let seen: Vec<_> = all
            .iter()
            .map(|a| a.as_ref().map(|a| (a.digest.clone(), a.indexes.len())))
            .collect();
        assert!(
            start.elapsed() < limit,
            "allocations did not converge on {records:?} ({} pins) within {limit:?}: {seen:?}\n{}",
            want.len(),
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_follower_catches_up_after_a_300k_pin_ingest() {
    let n: u64 = env_or("CRASH_PINS", &INGEST_PINS.to_string())
        .parse()
        .unwrap();
    let _one_at_a_time = HEAVY.lock().await;
    let mut fleet = start(3, &[]).await;
    let leader = fleet.wait_leader().await;
    let follower = (0..3).find(|i| *i != leader).unwrap();
    fleet.kill(follower);
    let t = Instant::now();
    let (status, text) = fleet
        .put(leader, "mirror", pinset("mirror", 0..n), "r1")
        .await
        .unwrap();
    assert!(status.is_success(), "{status} {text}\n{}", fleet.logs());
    eprintln!("{n} pins applied on 2 of 3 peers in {:?}", t.elapsed());
    let t = Instant::now();
    fleet.restart(follower);
    let want: Vec<u64> = (0..n).collect();
    wait_converged(&fleet, &[("mirror", "r1")], &want, Duration::from_secs(600)).await;
    eprintln!("the restarted follower caught up in {:?}", t.elapsed());
}

/// PinSets the join test's pins are spread over (each PUT stays a few
/// hundred thousand pins, as a mirror's PinSets would).
const JOIN_PINSETS: u64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_peer_joins_a_large_cluster_and_installs_the_snapshot() {
    let n: u64 = env_or("CRASH_JOIN_PINS", &JOIN_PINS.to_string())
        .parse()
        .unwrap();
    let _one_at_a_time = HEAVY.lock().await;
    // Snapshots every few hundred entries, and no log kept behind them:
    // a peer that joins after the ingest can only get the state from a
    // snapshot.
    let mut fleet = start(
        3,
        &[
            (
                "PINFLEET_CONSENSUS_SNAPSHOT_LOGS_SINCE_LAST",
                env_or("CRASH_SNAP", "200"),
            ),
            ("PINFLEET_CONSENSUS_MAX_IN_SNAPSHOT_LOG_TO_KEEP", "0".into()),
        ],
    )
    .await;
    let leader = fleet.wait_leader().await;
    let t = Instant::now();
    let names: Vec<String> = (0..JOIN_PINSETS).map(|k| format!("part-{k}")).collect();
    let per = n / JOIN_PINSETS;
    for (k, name) in names.iter().enumerate() {
        let k = k as u64;
        let range = k * per..if k + 1 == JOIN_PINSETS {
            n
        } else {
            (k + 1) * per
        };
        let (status, text) = fleet
            .put(leader, name, pinset(name, range), "r1")
            .await
            .unwrap();
        assert!(status.is_success(), "{status} {text}\n{}", fleet.logs());
    }
    eprintln!("{n} pins applied in {:?}", t.elapsed());
    let records: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "r1")).collect();
    let want: Vec<u64> = (0..n).collect();
    wait_converged(&fleet, &records, &want, Duration::from_secs(600)).await;
    eprintln!("3 peers agree {:?} after the first apply", t.elapsed());

    let t = Instant::now();
    let new = fleet.add();
    fleet.wait_formed(4).await;
    wait_converged(&fleet, &records, &want, Duration::from_secs(600)).await;
    eprintln!("the new peer joined and caught up in {:?}", t.elapsed());
    let log = std::fs::read_to_string(&fleet.members[new].log).unwrap();
    assert!(
        log.contains("Done install complete snapshot"),
        "the new peer caught up without installing a snapshot\n{}",
        fleet.logs()
    );
}

/// The revisions a crash test applies, in order: `crash/mirror` grows by a
/// third of `n` per revision to `n` pins, then drops its first tenth.
fn revisions(n: u64) -> Vec<(String, std::ops::Range<u64>)> {
    vec![
        ("r1".to_string(), 0..n / 3),
        ("r2".to_string(), 0..2 * n / 3),
        ("r3".to_string(), 0..n),
        ("r4".to_string(), n / 10..n),
    ]
}

/// What the client is doing: the revision it is sending and the last one
/// a peer acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Progress {
    sending: Option<usize>,
    acked: Option<usize>,
}

/// Applies `revisions` in order with `PUT`, starting at peer `first`: a
/// revision is retried (on any peer) until one acknowledges it with 2xx;
/// 503 and connection failures (a killed peer) move on to the next peer.
/// Any other answer fails the test.
async fn client(
    apis: Vec<String>,
    revisions: Vec<(String, std::ops::Range<u64>)>,
    first: usize,
    progress: tokio::sync::watch::Sender<Progress>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let mut peer = first;
    for (j, (revision, range)) in revisions.iter().enumerate() {
        let body = pinset("mirror", range.clone());
        let start = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            assert!(
                start.elapsed() < Duration::from_secs(600) && attempts <= 200,
                "{revision} not acknowledged after {attempts} attempts"
            );
            progress.send_modify(|p| p.sending = Some(j));
            let url = format!("{}/pinsets/crash/mirror?revision={revision}", apis[peer]);
            let answer = http
                .put(url)
                .header("content-type", "application/yaml")
                .body(body.clone())
                .send()
                .await;
            match answer {
                Ok(r) if r.status().is_success() => {
                    eprintln!(
                        "{revision} acknowledged by peer {peer} after {:?}",
                        start.elapsed()
                    );
                    progress.send_modify(|p| p.acked = Some(j));
                    break;
                }
                Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    eprintln!(
                        "{revision}: peer {peer} answered 503: {}",
                        r.text().await.unwrap_or_default()
                    );
                }
                Ok(r) => {
                    let status = r.status();
                    panic!(
                        "{revision}: peer {peer} answered {status}: {}",
                        r.text().await.unwrap_or_default()
                    );
                }
                Err(e) => eprintln!("{revision}: peer {peer} failed: {e}"),
            }
            peer = (peer + 1) % apis.len();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Size of peer `i`'s Raft log file.
fn log_bytes(fleet: &Fleet, i: usize) -> u64 {
    std::fs::metadata(fleet.members[i].dir.join("raft").join("log.redb"))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Which peer a crash test kills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Victim {
    Leader,
    Follower,
}

/// Runs the revisions of [`revisions`] through a client while SIGKILLing
/// `victim` part-way through the second one (once its Raft log has grown
/// by `grown` bytes since that revision was sent), restarts it, and checks
/// that no acknowledged revision was lost and that the peers converge.
async fn crash_during_ingest(victim: Victim) {
    let n: u64 = env_or("CRASH_PINS", &INGEST_PINS.to_string())
        .parse()
        .unwrap();
    let _one_at_a_time = HEAVY.lock().await;
    let mut fleet = start(3, &[]).await;
    let leader = fleet.wait_leader().await;
    let target = match victim {
        Victim::Leader => leader,
        Victim::Follower => (0..3).find(|i| *i != leader).unwrap(),
    };
    let apis: Vec<String> = fleet.members.iter().map(Member::api).collect();
    let revs = revisions(n);
    let (tx, mut rx) = tokio::sync::watch::channel(Progress::default());
    let run = tokio::spawn(client(apis, revs.clone(), leader, tx));

    // Part-way through r2: once the victim's log has grown by a few
    // entries' worth since r2 was sent (or r2 is done, on a fast machine).
    rx.wait_for(|p| p.sending == Some(1)).await.unwrap();
    let before = log_bytes(&fleet, target);
    let grown = 1 << 20;
    fleet
        .wait_until(
            "the victim to log part of r2",
            Duration::from_secs(600),
            || async {
                log_bytes(&fleet, target) >= before + grown || rx.borrow().acked >= Some(1)
            },
        )
        .await;
    let acked = rx.borrow().acked;
    eprintln!(
        "SIGKILL {victim:?} peer {target}: log grew {} bytes, acked {acked:?}",
        log_bytes(&fleet, target) - before
    );
    fleet.kill(target);

    // What was acknowledged before the crash is on the survivors.
    if let Some(a) = acked {
        for i in fleet.running().collect::<Vec<_>>() {
            let seen = fleet.wait_recorded(i, "mirror").await;
            let at = revs.iter().position(|(r, _)| *r == seen).unwrap();
            assert!(
                at >= a,
                "peer {i} records {seen} but {} was acknowledged",
                revs[a].0
            );
        }
    }

    run.await.unwrap();
    let (last, range) = revs.last().unwrap().clone();
    fleet.restart(target);
    let want: Vec<u64> = range.collect();
    wait_converged(
        &fleet,
        &[("mirror", &last)],
        &want,
        Duration::from_secs(600),
    )
    .await;
}

/// Crash tests start three daemons each and ingest hundreds of thousands
/// of pins: one at a time, so they do not starve each other of CPU.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_of_the_leader_during_an_ingest_loses_no_acknowledged_revision() {
    crash_during_ingest(Victim::Leader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_of_a_follower_during_an_ingest_loses_no_acknowledged_revision() {
    crash_during_ingest(Victim::Follower).await;
}
