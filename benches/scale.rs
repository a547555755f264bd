//! Scale on real processes (issue 12): `cargo bench --bench scale`.
//!
//! Starts `pinfleet daemon` processes (the binary cargo builds for this
//! bench) on 127.0.0.1 without IPFS (`PINFLEET_IPFS_BACKEND=none`, what
//! `testbed up --ipfs none` sets), applies one PinSet `bench/scale` of N
//! CIDs from a `pinsFrom` list with `pinfleet apply --host`, and prints one
//! line per figure of the issue's table:
//!
//! 1. three peers: apply N new pins until every peer has applied them; RSS
//!    now and peak (`/proc/<pid>/status`) and disk per peer; the unchanged
//!    re-apply; every peer's `GET /allocations` counts N; restart after
//!    SIGKILL of a follower, then of the leader (API up, all N pins
//!    served); a fourth peer joins and installs the state from a snapshot;
//! 2. with `PINFLEET_SCALE_BIG=M`, one peer applying M pins: apply time,
//!    RSS, disk.
//!
//! It talks to pinfleet only through the CLI (`init`, `daemon`, `apply`),
//! the REST API, `PINFLEET_<SECTION>_<KEY>` config overrides and `/proc`.
//! "Peer X has applied the PinSet" is read from X's own state: its
//! `GET /pinsets/bench/scale` record is written by the same `Commit` entry
//! that applies the revision's pins, so a record with `pins = N` means all
//! N are applied there.
//!
//! Snapshots: the 3-peer cluster runs with a snapshot threshold a little
//! above the entries of the apply (and no log kept behind a snapshot), so
//! no snapshot is built during the measured apply and the restarts find
//! the log holding the apply's entries; before the fourth peer joins, the bench pins and unpins one CID until every peer has built a
//! snapshot, so the new peer must install one (the path a long-lived
//! cluster takes), not replay the log.
//!
//! Speed is never asserted; wrong answers (pin counts, revisions), a crashed
//! peer or a failing CLI make the bench exit 1. Every wait has a deadline
//! (a figure not reached in time is printed as such); a process over the
//! RSS limit stops the run. Every child is SIGKILLed on every exit path of
//! the bench (not when the bench itself is SIGKILLed), and everything lives
//! in one temporary directory removed at the end.
//!
//! Environment: `PINFLEET_SCALE_N` (pins, default 1,000,000; 0 skips the
//! 3-peer run), `PINFLEET_SCALE_BIG` (pins of the one-peer run, default 0:
//! off), `PINFLEET_SCALE_TIMEOUT_SECS` (each wait, default 900),
//! `PINFLEET_SCALE_RSS_LIMIT_MB` (per process, default 4000), `PINFLEET_SCALE_IDLE_SECS`
//! (idle time before the second RSS reading, default 5),
//! `PINFLEET_SCALE_DIR` (where the temporary directory goes). Other
//! `PINFLEET_<SECTION>_<KEY>` variables reach the daemons as config
//! overrides and are printed in the header.

mod common;

use std::fmt::Display;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{env_u64, fig, secs};

use futures::StreamExt;
use sha2::{Digest, Sha256};

/// The daemon and CLI under test, built by cargo for this bench.
const EXE: &str = env!("CARGO_BIN_EXE_pinfleet");
/// `GET` path of the PinSet every run applies.
const RECORD: &str = "/pinsets/bench/scale";
/// How often waits poll.
const POLL: Duration = Duration::from_millis(50);
/// Timeout of one small REST request.
const REQUEST: Duration = Duration::from_secs(30);
/// The daemons' default `consensus.batch_max_pins`.
const BATCH_MAX_PINS: u64 = 10_000;
/// Snapshot threshold above the apply's log entries (see the top comment).
const SNAPSHOT_MARGIN: u64 = 100;

/// Why a run stopped.
#[derive(Debug)]
enum Stop {
    /// A figure not reached: a wait passed its deadline, or a process
    /// passed the RSS limit.
    NotReached(String),
    /// A wrong answer, a crashed peer, a failing command: the bench fails.
    Failed(String),
}

impl From<String> for Stop {
    fn from(e: String) -> Self {
        Stop::Failed(e)
    }
}

impl Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::NotReached(e) => write!(f, "not reached: {e}"),
            Stop::Failed(e) => write!(f, "FAILED: {e}"),
        }
    }
}

type Res<T> = Result<T, Stop>;

/// Settings from the environment.
struct Cfg {
    n: u64,
    big: u64,
    timeout: Duration,
    rss_limit_kb: u64,
    idle: Duration,
}

impl Cfg {
    fn from_env() -> Self {
        Self {
            n: env_u64("PINFLEET_SCALE_N", 1_000_000),
            big: env_u64("PINFLEET_SCALE_BIG", 0),
            timeout: Duration::from_secs(env_u64("PINFLEET_SCALE_TIMEOUT_SECS", 900)),
            rss_limit_kb: env_u64("PINFLEET_SCALE_RSS_LIMIT_MB", 4000) * 1024,
            idle: Duration::from_secs(env_u64("PINFLEET_SCALE_IDLE_SECS", 5)),
        }
    }
}

// ---------------------------------------------------------------- printing

/// Memory from /proc (KiB) in MiB.
fn mib(kb: u64) -> String {
    format!("{:.0} MiB", kb as f64 / 1024.0)
}

/// Disk and file sizes in MB (10^6 bytes), as `B/pin` figures are decimal.
fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// The checked-out commit, marked when the tree has changes.
fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(hash) if git(&["status", "--porcelain", "-uno"]).is_some_and(|s| !s.is_empty()) => {
            format!("{hash} (with uncommitted changes)")
        }
        Some(hash) => hash,
        None => "unknown".into(),
    }
}

fn header(cfg: &Cfg) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("== pinfleet scale bench (real daemon processes, no IPFS)");
    println!(
        "N = {} (PINFLEET_SCALE_N); single peer: {} (PINFLEET_SCALE_BIG)",
        cfg.n,
        match cfg.big {
            0 => "off".to_string(),
            m => format!("{m} pins"),
        }
    );
    println!(
        "commit {}; {cores} cores, memory {mem}; load average {}; {}",
        commit(),
        load_average(),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!(
        "each wait at most {}; RSS limit {} per process; idle before the second RSS reading {}",
        secs(cfg.timeout),
        mib(cfg.rss_limit_kb),
        secs(cfg.idle)
    );
    let overrides: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("PINFLEET_") && !k.starts_with("PINFLEET_SCALE_"))
        .filter(|(k, _)| !k.contains("SECRET"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !overrides.is_empty() {
        println!("environment passed to the daemons: {}", overrides.join(" "));
    }
    println!("binary: {EXE}");
}

/// VmRSS and VmHWM (peak) of a live process, in KiB.
fn mem_kb(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |key: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

// --------------------------------------------------------------- processes

/// A child process, SIGKILLed and reaped when dropped.
struct Guarded(Child);

impl Guarded {
    fn spawn(cmd: &mut Command, out: &Path) -> Res<Self> {
        let log = File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {EXE}: {e}"))?;
        Ok(Self(child))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// The exit status once it has exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().ok().flatten()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Res<u16> {
    // Released before the daemon binds it; a collision shows up as a bind
    // error in the peer's log.
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// The last lines of a log file, on one line.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.chars().take(240).collect())
        .collect();
    lines[lines.len().saturating_sub(4)..].join(" | ")
}

// -------------------------------------------------------------------- HTTP

/// A REST client on a runtime of its own (the bench is synchronous).
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

/// One answer: status, whether the peer knows no leader
/// (`x-pinfleet-stale`), body.
struct Reply(u16, bool, String);

impl Http {
    fn new() -> Res<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let client = pinfleet::tls::client(None)
            .map_err(|e| e.to_string())?
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { rt, client })
    }

    async fn send(&self, method: reqwest::Method, url: &str) -> Result<Reply, String> {
        let resp = self
            .client
            .request(method, url)
            .timeout(REQUEST)
            .send()
            .await
            .map_err(|e| chain(&e))?;
        let status = resp.status().as_u16();
        let stale = resp.headers().contains_key("x-pinfleet-stale");
        let body = resp.text().await.map_err(|e| chain(&e))?;
        Ok(Reply(status, stale, body))
    }

    fn get(&self, url: &str) -> Result<Reply, String> {
        self.rt.block_on(self.send(reqwest::Method::GET, url))
    }

    /// A write that must answer 2xx.
    fn write(&self, method: reqwest::Method, url: &str) -> Result<(), String> {
        match self.rt.block_on(self.send(method.clone(), url))? {
            Reply(s, _, _) if (200..300).contains(&s) => Ok(()),
            Reply(s, _, body) => Err(format!("{method} {url} answered {s}: {body}")),
        }
    }

    /// `GET` of several URLs at once.
    fn get_all(&self, urls: &[String]) -> Vec<Result<Reply, String>> {
        let gets = urls.iter().map(|u| self.send(reqwest::Method::GET, u));
        self.rt.block_on(futures::future::join_all(gets))
    }

    /// Lines of an NDJSON stream, read to its end.
    fn count_lines(&self, url: &str, timeout: Duration) -> Result<u64, String> {
        self.rt.block_on(async {
            let resp = self.client.get(url).timeout(timeout).send().await;
            let resp = resp.map_err(|e| chain(&e))?;
            if !resp.status().is_success() {
                return Err(format!("{url} answered {}", resp.status()));
            }
            let mut stream = resp.bytes_stream();
            let (mut lines, mut last) = (0u64, b'\n');
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| format!("{url}: stream broke off: {}", chain(&e)))?;
                lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
                last = chunk.last().copied().unwrap_or(last);
            }
            Ok(lines + u64::from(last != b'\n'))
        })
    }
}

/// An error and its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    s
}

/// The `pins` count of a `GET /pinsets/…` answer.
fn record_pins(r: &Result<Reply, String>) -> Option<u64> {
    match r {
        Ok(Reply(200, _, body)) => {
            serde_json::from_str::<serde_json::Value>(body).ok()?["pins"].as_u64()
        }
        _ => None,
    }
}

// -------------------------------------------------------------------- data

/// CID `i`: CIDv1, raw codec, sha2-256 of `i` (little-endian u64).
fn cid(i: u64) -> String {
    let digest = Sha256::digest(i.to_le_bytes());
    match multihash::Multihash::<64>::wrap(0x12, &digest) {
        Ok(mh) => cid::Cid::new_v1(0x55, mh).to_string(),
        // A 32-byte digest always fits a 64-byte multihash.
        Err(e) => unreachable!("sha2-256 multihash: {e}"),
    }
}

/// Writes `dir/scale.yaml` (PinSet bench/scale) and its `pinsFrom` list
/// `dir/list.txt` of `n` lines `CID p<i>`; prints what it wrote.
fn write_manifest(dir: &Path, n: u64) -> Res<PathBuf> {
    let t = Instant::now();
    let err = |e: std::io::Error| format!("{}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(err)?;
    let list = dir.join("list.txt");
    let mut w = BufWriter::with_capacity(1 << 20, File::create(&list).map_err(err)?);
    for i in 0..n {
        writeln!(w, "{} p{i}", cid(i)).map_err(err)?;
    }
    w.flush().map_err(err)?;
    let manifest = dir.join("scale.yaml");
    let yaml = "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: scale\n  \
                namespace: bench\nspec:\n  pinsFrom:\n    - path: list.txt\n";
    std::fs::write(&manifest, yaml).map_err(err)?;
    let size = std::fs::metadata(&list).map_err(err)?.len();
    println!(
        "  (setup) pinsFrom list of {n} CIDs (CIDv1 raw, sha2-256 of the index; `CID p<i>` per line, {}) written in {}",
        mb(size),
        secs(t.elapsed())
    );
    Ok(manifest)
}

/// Files under `dir`: apparent size, allocated bytes, and each file of at
/// least 64 kB by its path relative to `dir`.
fn disk(dir: &Path) -> (u64, u64, Vec<(String, u64)>) {
    use std::os::unix::fs::MetadataExt;
    let (mut size, mut allocated, mut big) = (0, 0, Vec::new());
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                dirs.push(e.path());
                continue;
            }
            size += m.len();
            allocated += m.blocks() * 512;
            if m.len() >= 64 * 1024 {
                let path = e.path();
                let rel = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                big.push((rel, m.len()));
            }
        }
    }
    big.sort();
    (size, allocated, big)
}

/// `.snap` files under a peer's `raft/snapshots/`.
fn snapshots(dir: &Path) -> Vec<(String, u64)> {
    disk(&dir.join("raft").join("snapshots"))
        .2
        .into_iter()
        .filter(|(f, _)| f.ends_with(".snap"))
        .collect()
}

// ------------------------------------------------------------------- peers

/// One daemon process and what it needs to start again.
struct Peer {
    name: String,
    dir: PathBuf,
    api: String,
    api_port: u16,
    p2p_port: u16,
    /// libp2p peer id (from `GET /id` once up).
    id: String,
    log: PathBuf,
    child: Option<Guarded>,
}

impl Peer {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    fn p2p_addr(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", self.p2p_port, self.id)
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Guarded::pid)
    }
}

/// The peers of one cluster, and the bench's view of them.
struct Fleet<'a> {
    cfg: &'a Cfg,
    root: PathBuf,
    secret: String,
    http: Http,
    peers: Vec<Peer>,
    /// Config overrides for every daemon.
    env: Vec<(&'static str, String)>,
    /// Pins the PinSet holds.
    n: u64,
}

impl<'a> Fleet<'a> {
    fn new(cfg: &'a Cfg, root: &Path, n: u64) -> Res<Self> {
        std::fs::create_dir_all(root.join("logs")).map_err(|e| e.to_string())?;
        Ok(Self {
            cfg,
            root: root.to_path_buf(),
            secret: hex::encode(rand::random::<[u8; 32]>()),
            http: Http::new()?,
            peers: Vec::new(),
            env: vec![("PINFLEET_IPFS_BACKEND", "none".into())],
            n,
        })
    }

    /// `pinfleet init` a new peer and start it; its index and start time.
    fn add_peer(&mut self, bootstrap: Option<&str>) -> Res<(usize, Instant)> {
        let i = self.peers.len();
        let name = format!("peer-{i}");
        let dir = self.root.join(&name);
        let out = self.root.join("logs").join(format!("init-{i}.out"));
        let mut init = Guarded::spawn(
            Command::new(EXE)
                .args([
                    "init",
                    "--secret",
                    &self.secret,
                    "--peername",
                    &name,
                    "--dir",
                ])
                .arg(&dir),
            &out,
        )?;
        let t = Instant::now();
        let status = loop {
            if let Some(s) = init.exited() {
                break s;
            }
            if t.elapsed() > Duration::from_secs(60) {
                return Err(format!("pinfleet init did not return: {}", tail(&out)).into());
            }
            std::thread::sleep(POLL);
        };
        if !status.success() {
            return Err(format!("pinfleet init exited with {status}: {}", tail(&out)).into());
        }
        let api_port = free_port()?;
        self.peers.push(Peer {
            log: self.root.join("logs").join(format!("{name}.log")),
            name,
            dir,
            api: format!("http://127.0.0.1:{api_port}"),
            api_port,
            p2p_port: free_port()?,
            id: String::new(),
            child: None,
        });
        Ok((i, self.start(i, bootstrap)?))
    }

    /// Starts peer `i`'s daemon (its log appended to `peer.log`).
    fn start(&mut self, i: usize, bootstrap: Option<&str>) -> Res<Instant> {
        let p = &mut self.peers[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.log)
            .map_err(|e| format!("{}: {e}", p.log.display()))?;
        let mut cmd = Command::new(EXE);
        cmd.arg("daemon").arg("--dir").arg(&p.dir);
        if let Some(b) = bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        cmd.env("PINFLEET_API_LISTEN", format!("127.0.0.1:{}", p.api_port))
            .env(
                "PINFLEET_CLUSTER_LISTEN_MULTIADDRESS",
                format!("/ip4/127.0.0.1/tcp/{}", p.p2p_port),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stderr(log.try_clone().map_err(|e| e.to_string())?)
            .stdout(log);
        let started = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {EXE}: {e}"))?;
        p.child = Some(Guarded(child));
        Ok(started)
    }

    /// SIGKILL (and reap) peer `i`.
    fn kill(&mut self, i: usize) {
        self.peers[i].child = None;
    }

    /// Errs when a peer exited, or a peer (or `cli`) passed the RSS limit.
    fn guard(&mut self, cli: Option<u32>) -> Res<()> {
        let limit = self.cfg.rss_limit_kb;
        for p in &mut self.peers {
            let Some(c) = p.child.as_mut() else { continue };
            if let Some(status) = c.exited() {
                let log = tail(&p.log);
                return Err(format!("{} exited with {status}; log: {log}", p.name).into());
            }
            if let Some((rss, _)) = mem_kb(c.pid())
                && rss > limit
            {
                let e = format!(
                    "{}'s RSS reached {} (limit {})",
                    p.name,
                    mib(rss),
                    mib(limit)
                );
                return Err(Stop::NotReached(e));
            }
        }
        match cli.and_then(mem_kb) {
            Some((rss, _)) if rss > limit => Err(Stop::NotReached(format!(
                "the pinfleet apply CLI's RSS reached {} (limit {})",
                mib(rss),
                mib(limit)
            ))),
            _ => Ok(()),
        }
    }

    /// Polls `f` until it answers `Ok`; the answer and when. `Err` is what
    /// it saw last, reported at the deadline.
    fn wait_for<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&Fleet<'_>) -> Result<T, String>,
    ) -> Res<(T, Instant)> {
        let t = Instant::now();
        loop {
            self.guard(None)?;
            match f(self) {
                Ok(v) => return Ok((v, Instant::now())),
                Err(last) if t.elapsed() > self.cfg.timeout => {
                    let e = format!("{what} within {} (last seen: {last})", secs(t.elapsed()));
                    return Err(Stop::NotReached(e));
                }
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    fn healthy(&self, i: usize) -> Result<(), String> {
        match self.http.get(&self.peers[i].url("/health"))? {
            Reply(s, _, _) if (200..300).contains(&s) => Ok(()),
            Reply(s, _, _) => Err(format!("/health answered {s}")),
        }
    }

    /// Peer `i`'s PinSet record, as JSON.
    fn record(&self, i: usize) -> Option<serde_json::Value> {
        match self.http.get(&self.peers[i].url(RECORD)) {
            Ok(Reply(200, _, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// Peer `i`'s record counts N pins.
    fn holds_all(&self, i: usize) -> Result<(), String> {
        match self.record(i).map(|v| v["pins"].as_u64()) {
            Some(Some(p)) if p == self.n => Ok(()),
            Some(p) => Err(format!("its record shows {p:?} pins")),
            None => Err("no record".into()),
        }
    }

    /// Peer `i`'s `/id`: its peer id, how many members it lists, whether it
    /// knows a leader.
    fn id(&self, i: usize) -> Option<(String, usize, bool)> {
        let Reply(_, stale, body) = self.http.get(&self.peers[i].url("/id")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let members = v["cluster_peers"].as_array().map_or(0, Vec::len);
        Some((v["id"].as_str()?.to_string(), members, !stale))
    }

    /// Waits until peer `i` lists `members` members and knows a leader;
    /// records its peer id; when.
    fn wait_member(&mut self, i: usize, members: usize) -> Res<Instant> {
        let what = format!(
            "{} lists {members} members and knows a leader",
            self.peers[i].name
        );
        let (id, at) = self.wait_for(&what, |f| match f.id(i) {
            Some((id, m, true)) if m == members => Ok(id),
            Some((_, m, leader)) => Err(format!("{m} members, leader known: {leader}")),
            None => Err("no answer to /id".into()),
        })?;
        self.peers[i].id = id;
        Ok(at)
    }

    /// Checks that peer `i`'s full `GET /allocations` (its local state)
    /// streams N items; prints how long it took.
    fn check_allocations(&self, i: usize, what: &str) -> Res<()> {
        let t = Instant::now();
        let url = self.peers[i].url("/allocations");
        match self.http.count_lines(&url, self.cfg.timeout)? {
            c if c == self.n => {
                fig(
                    format!(
                        "{what}: GET /allocations of {}: all {c} items",
                        self.peers[i].name
                    ),
                    format!("streamed in {}", secs(t.elapsed())),
                );
                Ok(())
            }
            c => Err(format!(
                "GET /allocations of {} streamed {c} items, not {}",
                self.peers[i].name, self.n
            )
            .into()),
        }
    }

    /// The leader's index: waits for a running peer whose
    /// `pinfleet_leader` metric is 1 (asking at most once a second: a
    /// scrape walks every pin).
    fn leader(&mut self) -> Res<usize> {
        let (i, _) = self.wait_for("a peer reporting pinfleet_leader 1", |f| {
            let leader = (0..f.peers.len())
                .filter(|&i| f.peers[i].child.is_some())
                .find(|&i| {
                    f.http
                        .get(&f.peers[i].url("/metrics"))
                        .is_ok_and(|r| r.2.lines().any(|l| l.trim() == "pinfleet_leader 1"))
                });
            leader.ok_or_else(|| {
                std::thread::sleep(Duration::from_secs(1));
                "none".to_string()
            })
        })?;
        Ok(i)
    }

    /// RSS now and peak of every running peer, on one line.
    fn print_rss(&self, moment: &str) {
        let each: Vec<String> = self
            .peers
            .iter()
            .map(|p| match p.pid().and_then(mem_kb) {
                Some((now, peak)) => format!("{} {} (peak {})", p.name, mib(now), mib(peak)),
                None => format!("{} not running", p.name),
            })
            .collect();
        fig(format!("RSS {moment}"), each.join(", "));
    }

    /// Peer `i`'s directory: total, per pin, files of 64 kB or more.
    fn print_disk(&self, i: usize, moment: &str) {
        let p = &self.peers[i];
        let (size, allocated, big) = disk(&p.dir);
        let files: Vec<String> = big.iter().map(|(f, s)| format!("{f} {}", mb(*s))).collect();
        fig(
            format!("disk {} {moment}", p.name),
            format!(
                "{} = {:.0} B/pin (allocated {}): {}",
                mb(size),
                size as f64 / self.n.max(1) as f64,
                mb(allocated),
                files.join(", ")
            ),
        );
    }

    /// The last lines of every peer's log.
    fn print_log_tails(&self) {
        for p in &self.peers {
            println!("  (log) {}: {}", p.name, tail(&p.log));
        }
    }
}

/// What one `pinfleet apply` did.
struct Applied {
    /// When the CLI returned.
    cli: Duration,
    /// `add …, unchanged …, entries …` from its `--json` report.
    summary: String,
    /// When each peer's record showed N pins (with `watch`).
    peers: Vec<Option<Duration>>,
    /// Highest VmHWM of the CLI seen while it ran.
    cli_peak_kb: u64,
}

impl Fleet<'_> {
    /// Runs `pinfleet apply manifest --host host --json`; with `watch`,
    /// also polls every peer's record until it counts N pins.
    fn apply(&mut self, manifest: &Path, host: &str, watch: bool) -> Res<Applied> {
        let out = self.root.join("logs").join("apply.out");
        let err = self.root.join("logs").join("apply.err");
        let file = |p: &Path| File::create(p).map_err(|e| format!("{}: {e}", p.display()));
        let urls: Vec<String> = self.peers.iter().map(|p| p.url(RECORD)).collect();
        let t0 = Instant::now();
        let mut cli = Guarded(
            Command::new(EXE)
                .arg("apply")
                .arg(manifest)
                .args(["--host", host, "--json"])
                .stdin(Stdio::null())
                .stdout(file(&out)?)
                .stderr(file(&err)?)
                .spawn()
                .map_err(|e| format!("cannot start {EXE}: {e}"))?,
        );
        let mut returned = None;
        let mut peers: Vec<Option<Duration>> = vec![None; urls.len()];
        let mut cli_peak_kb = 0;
        loop {
            if returned.is_none() {
                if let Some(status) = cli.exited() {
                    if !status.success() {
                        let e = std::fs::read_to_string(&err).unwrap_or_default();
                        return Err(
                            format!("pinfleet apply exited with {status}: {}", e.trim()).into()
                        );
                    }
                    returned = Some(t0.elapsed());
                } else if let Some((_, peak)) = mem_kb(cli.pid()) {
                    cli_peak_kb = cli_peak_kb.max(peak);
                }
            }
            if watch {
                let pending: Vec<usize> = (0..urls.len()).filter(|i| peers[*i].is_none()).collect();
                let asked: Vec<String> = pending.iter().map(|i| urls[*i].clone()).collect();
                for (i, r) in pending.into_iter().zip(self.http.get_all(&asked)) {
                    if record_pins(&r) == Some(self.n) {
                        peers[i] = Some(t0.elapsed());
                    }
                }
            }
            self.guard(returned.is_none().then(|| cli.pid()))?;
            if let Some(cli) = returned
                && peers.iter().all(|p| p.is_some() || !watch)
            {
                let text = std::fs::read_to_string(&out).unwrap_or_default();
                let report: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| format!("pinfleet apply --json printed no JSON ({e}): {text}"))?;
                let r = &report["pinsets"][0];
                let summary = ["add", "update", "release", "unchanged", "entries"]
                    .iter()
                    .map(|k| format!("{k} {}", r[*k]))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Ok(Applied {
                    cli,
                    summary,
                    peers,
                    cli_peak_kb,
                });
            }
            if t0.elapsed() > self.cfg.timeout {
                let seen: Vec<String> = peers
                    .iter()
                    .zip(&self.peers)
                    .map(|(d, p)| match d {
                        Some(d) => format!("{} applied after {}", p.name, secs(*d)),
                        None => format!("{} not applied", p.name),
                    })
                    .collect();
                let cli = match returned {
                    Some(d) => format!("the CLI returned after {}", secs(d)),
                    None => "the CLI still runs".into(),
                };
                let e = format!(
                    "apply within {}: {cli}; {}",
                    secs(t0.elapsed()),
                    seen.join(", ")
                );
                return Err(Stop::NotReached(e));
            }
            std::thread::sleep(POLL);
        }
    }
}

// -------------------------------------------------------------------- runs

/// The 3-peer run; stops at the first stop (printed by the caller).
fn cluster(fleet: &mut Fleet<'_>, manifest: &Path) -> Res<()> {
    let n = fleet.n;
    let t = Instant::now();
    fleet.add_peer(None)?;
    fleet.wait_member(0, 1)?;
    let boot = fleet.peers[0].p2p_addr();
    for _ in 1..3 {
        fleet.add_peer(Some(&boot))?;
    }
    for i in 0..3 {
        fleet.wait_member(i, 3)?;
    }
    let leader = fleet.leader()?;
    let host = fleet.peers[leader].api.clone();
    println!(
        "  (setup) 3 peers formed one cluster in {}; leader {}; `pinfleet apply {} --host {host}`",
        secs(t.elapsed()),
        fleet.peers[leader].name,
        manifest.display()
    );

    let applied = fleet.apply(manifest, &host, true)?;
    let what = format!("apply {n} new pins");
    fig(
        format!("{what}: CLI returned"),
        format!("{} ({})", secs(applied.cli), applied.summary),
    );
    for (p, d) in fleet.peers.iter().zip(&applied.peers) {
        fig(
            format!("{what}: {} has applied all (its GET {RECORD})", p.name),
            secs(d.unwrap_or_default()),
        );
    }
    let every = applied
        .peers
        .iter()
        .flatten()
        .max()
        .copied()
        .unwrap_or_default();
    fig(
        format!("{what}: EVERY peer has applied all {n}"),
        secs(every),
    );
    fig(
        format!("{what}: pinfleet apply CLI peak RSS"),
        mib(applied.cli_peak_kb),
    );
    let records: Vec<Option<serde_json::Value>> = (0..3).map(|i| fleet.record(i)).collect();
    let revisions: Vec<&serde_json::Value> =
        records.iter().flatten().map(|r| &r["revision"]).collect();
    if revisions.len() != 3 || revisions.iter().any(|r| *r != revisions[0]) {
        return Err(format!("the peers record different revisions: {revisions:?}").into());
    }

    fleet.print_rss("right after every peer applied");
    std::thread::sleep(fleet.cfg.idle);
    fleet.guard(None)?;
    fleet.print_rss(&format!("after {} idle", secs(fleet.cfg.idle)));
    for i in 0..3 {
        fleet.print_disk(i, "holding the pins");
    }

    let again = fleet.apply(manifest, &host, false)?;
    fig(
        format!("apply of the same, unchanged manifest ({n} pins) again: CLI returned"),
        format!("{} ({})", secs(again.cli), again.summary),
    );
    for (i, before) in records.iter().enumerate() {
        let at = |r: &Option<serde_json::Value>| r.as_ref().map(|v| v["appliedAt"].to_string());
        if at(before) != at(&fleet.record(i)) {
            println!(
                "  note: the unchanged apply committed the PinSet again on {}",
                fleet.peers[i].name
            );
        }
    }
    fleet.print_rss("after the unchanged apply");
    for i in 0..3 {
        fleet.check_allocations(i, "local state")?;
    }
    fleet.print_rss("after streaming GET /allocations");

    let leader = fleet.leader()?;
    let follower = (0..3).find(|i| *i != leader).unwrap_or(1);
    restart(fleet, follower, "a follower")?;
    // While the log still holds the apply's entries, as it does under the
    // default snapshot policy. A new leader that does not settle in time is
    // reported and the run goes on; a dead peer or one over the RSS limit
    // stops it.
    let leader = fleet.leader()?;
    match restart(fleet, leader, "the leader") {
        Err(Stop::NotReached(e)) => {
            println!("  restart after SIGKILL of the leader: not reached: {e}");
            fleet.print_log_tails();
        }
        r => r?,
    }
    fleet.print_rss("after the restarts (a restarted peer's peak is since its restart)");
    snapshot_everywhere(fleet)?;
    join(fleet)?;
    fleet.print_rss("after the 4th peer joined");
    Ok(())
}

/// SIGKILLs peer `i`, starts it again, and prints when its API answers,
/// when its record counts N pins, when a full `GET /allocations` streams N
/// items, and when it lists every member and knows the leader again.
fn restart(fleet: &mut Fleet<'_>, i: usize, role: &str) -> Res<()> {
    let n = fleet.n;
    let name = fleet.peers[i].name.clone();
    let what = format!("restart after SIGKILL of {role} ({name})");
    fleet.kill(i);
    let started = fleet.start(i, None)?;
    let (_, up) = fleet.wait_for(&format!("{name}'s /health"), |f| f.healthy(i))?;
    fig(format!("{what}: API answers /health"), secs(up - started));
    let (_, rec) = fleet.wait_for(&format!("{name}'s record of {n} pins"), |f| f.holds_all(i))?;
    fig(
        format!("{what}: its GET {RECORD} counts {n} pins"),
        secs(rec - started),
    );
    let url = fleet.peers[i].url("/allocations");
    let (from, served) = fleet.wait_for(&format!("{name} streams {n} pins"), |f| {
        let t = Instant::now();
        match f.http.count_lines(&url, f.cfg.timeout)? {
            c if c == n => Ok(t - started),
            c => Err(format!("{c} items")),
        }
    })?;
    fig(
        format!("{what}: all {n} pins served (a full GET /allocations ends)"),
        format!(
            "{} (that stream started at {})",
            secs(served - started),
            secs(from)
        ),
    );
    let members = fleet.peers.iter().filter(|p| p.child.is_some()).count();
    let back = fleet.wait_member(i, members)?;
    fig(
        format!("{what}: lists {members} members and knows the leader"),
        secs(back - started),
    );
    Ok(())
}

/// Pins and unpins one CID through any peer (a follower forwards; the
/// next peer after a failed write) until every peer has built a snapshot;
/// prints how many writes that took and every peer's disk with it.
fn snapshot_everywhere(fleet: &mut Fleet<'_>) -> Res<()> {
    let t = Instant::now();
    let path = format!("/pins/{}", cid(u64::MAX));
    let most = 2 * (fleet.n / BATCH_MAX_PINS + 2 * SNAPSHOT_MARGIN);
    let (mut writes, mut failed, mut last) = (0u64, 0usize, String::from("none"));
    // An even count of writes leaves the CID unpinned.
    while writes % 2 == 1 || fleet.peers.iter().any(|p| snapshots(&p.dir).is_empty()) {
        fleet.guard(None)?;
        if writes >= most || t.elapsed() > fleet.cfg.timeout {
            return Err(Stop::NotReached(format!(
                "a snapshot on every peer after {writes} writes in {} (last failed write: {last})",
                secs(t.elapsed())
            )));
        }
        let method = match writes % 2 {
            0 => reqwest::Method::POST,
            _ => reqwest::Method::DELETE,
        };
        let url = fleet.peers[failed % fleet.peers.len()].url(&path);
        match fleet.http.write(method, &url) {
            Ok(()) => writes += 1,
            Err(e) => {
                (failed, last) = (failed + 1, e);
                std::thread::sleep(POLL);
            }
        }
    }
    println!(
        "  (setup) every peer built a snapshot after {writes} more writes in {} ({failed} writes failed and were sent again)",
        secs(t.elapsed())
    );
    for i in 0..fleet.peers.len() {
        fleet.print_disk(i, "with its snapshot");
    }
    Ok(())
}

/// A fourth peer joins the N-pin cluster.
fn join(fleet: &mut Fleet<'_>) -> Res<()> {
    let n = fleet.n;
    let boot = fleet.peers[0].p2p_addr();
    let (i, started) = fleet.add_peer(Some(&boot))?;
    let name = fleet.peers[i].name.clone();
    let what = format!("a 4th peer ({name}) joins the {n}-pin cluster");
    let (_, up) = fleet.wait_for(&format!("{name}'s /health"), |f| f.healthy(i))?;
    fig(format!("{what}: API answers /health"), secs(up - started));
    let (_, holds) = fleet.wait_for(&format!("{name}'s record of {n} pins"), |f| f.holds_all(i))?;
    fig(
        format!("{what}: state installed (its GET {RECORD} counts {n} pins)"),
        secs(holds - started),
    );
    let member = fleet.wait_member(i, 4)?;
    fig(
        format!("{what}: lists 4 members and knows the leader"),
        secs(member - started),
    );
    fleet.check_allocations(i, &what)?;
    let snaps: Vec<String> = snapshots(&fleet.peers[i].dir)
        .iter()
        .map(|(f, s)| format!("snapshot {f} {}", mb(*s)))
        .collect();
    fig(
        format!("{what}: how the state arrived"),
        if snaps.is_empty() {
            "log replay (it holds no snapshot)".into()
        } else {
            snaps.join(", ")
        },
    );
    fleet.print_disk(i, "after joining");
    Ok(())
}

/// One peer applying `fleet.n` pins.
fn single(fleet: &mut Fleet<'_>, manifest: &Path) -> Res<()> {
    let m = fleet.n;
    fleet.add_peer(None)?;
    fleet.wait_member(0, 1)?;
    let host = fleet.peers[0].api.clone();
    let applied = fleet.apply(manifest, &host, true)?;
    let what = format!("single peer, apply {m} new pins");
    fig(
        format!("{what}: CLI returned"),
        format!("{} ({})", secs(applied.cli), applied.summary),
    );
    let done = applied.peers[0].unwrap_or_default();
    fig(format!("{what}: applied (its GET {RECORD})"), secs(done));
    fig(
        format!("{what}: pinfleet apply CLI peak RSS"),
        mib(applied.cli_peak_kb),
    );
    fleet.print_rss(&format!("holding {m} pins, right after the apply"));
    std::thread::sleep(fleet.cfg.idle);
    fleet.guard(None)?;
    fleet.print_rss(&format!(
        "holding {m} pins, after {} idle",
        secs(fleet.cfg.idle)
    ));
    fleet.print_disk(0, "holding the pins");
    fleet.check_allocations(0, "single peer")?;
    fleet.print_rss("after streaming GET /allocations");
    Ok(())
}

/// Runs one of the runs in `dir`, prints a stop, removes its data; false
/// when it failed.
fn run(
    cfg: &Cfg,
    dir: &Path,
    n: u64,
    env: Vec<(&'static str, String)>,
    body: fn(&mut Fleet<'_>, &Path) -> Res<()>,
) -> bool {
    let result = write_manifest(&dir.join("manifest"), n).and_then(|manifest| {
        let mut fleet = Fleet::new(cfg, &dir.join("peers"), n)?;
        fleet.env.extend(env);
        let r = body(&mut fleet, &manifest);
        if r.is_err() {
            fleet.print_log_tails();
        }
        r
    });
    println!("  (end) load average {}; removing the data", load_average());
    let _ = std::fs::remove_dir_all(dir);
    match result {
        Ok(()) => true,
        Err(e) => {
            println!("  STOPPED, the figures after this line were not measured: {e}");
            !matches!(e, Stop::Failed(_))
        }
    }
}

fn main() {
    let cfg = Cfg::from_env();
    header(&cfg);
    let base =
        std::env::var_os("PINFLEET_SCALE_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let tmp = match tempfile::Builder::new()
        .prefix("pinfleet-scale-")
        .tempdir_in(&base)
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot create a directory under {}: {e}", base.display());
            std::process::exit(2);
        }
    };
    println!("data under {} (removed at the end)", tmp.path().display());
    let t = Instant::now();
    let mut ok = true;
    if cfg.n > 0 {
        println!("\n== 3 peers, one PinSet of {} pins", cfg.n);
        // No snapshot during the apply; one soon after (see the top comment).
        let mut env = Vec::new();
        if std::env::var_os("PINFLEET_CONSENSUS_SNAPSHOT_LOGS_SINCE_LAST").is_none() {
            let threshold = cfg.n / BATCH_MAX_PINS + SNAPSHOT_MARGIN;
            env.push((
                "PINFLEET_CONSENSUS_SNAPSHOT_LOGS_SINCE_LAST",
                threshold.to_string(),
            ));
            env.push(("PINFLEET_CONSENSUS_MAX_IN_SNAPSHOT_LOG_TO_KEEP", "0".into()));
            println!("  (setup) snapshot after {threshold} log entries, none kept behind it");
        }
        ok &= run(&cfg, &tmp.path().join("cluster"), cfg.n, env, cluster);
    }
    if cfg.big > 0 {
        println!(
            "\n== 1 peer, one PinSet of {} pins (PINFLEET_SCALE_BIG)",
            cfg.big
        );
        ok &= run(
            &cfg,
            &tmp.path().join("single"),
            cfg.big,
            Vec::new(),
            single,
        );
    }
    println!(
        "\n== done in {}; load average {}",
        secs(t.elapsed()),
        load_average()
    );
    drop(tmp);
    if !ok {
        std::process::exit(1);
    }
}
