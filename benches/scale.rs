//! Scale on real processes (issue 12): `cargo bench --bench scale`.
//!
//! Starts real `pinfleet` daemons (the binary cargo builds for this bench,
//! bench profile) on 127.0.0.1 without IPFS (`PINFLEET_IPFS_BACKEND=none`,
//! what `testbed up --ipfs none` sets), applies one PinSet of N CIDs from a
//! `pinsFrom` list with `pinfleet apply --host`, and prints one line per
//! figure of the table: apply until every peer has applied it, the
//! unchanged re-apply, RSS (now and peak) and disk per peer, restart after
//! SIGKILL of a follower and of the leader, a fourth peer joining; then,
//! with `PINFLEET_SCALE_BIG`, a one-peer cluster holding that many pins.
//!
//! It talks to pinfleet only through the CLI (`init`, `daemon`, `apply`),
//! the REST API, the `PINFLEET_<SECTION>_<KEY>` config overrides and
//! `/proc`, so it keeps working while storage, tracker and consensus
//! change. "Applied on a peer" is read from that peer's own state:
//! `GET /pinsets/bench/scale` answers the PinSet record from the local
//! store, and the record is written by the same `Commit` log entry (one
//! store transaction) that applies the revision's pins, so a peer showing
//! the record with `pins = N` has applied all N. After timing, a full
//! `GET /allocations` stream from each peer (its local state) must count N
//! items: the only assertion, besides pin counts elsewhere; speed is never
//! asserted.
//!
//! Every wait has a deadline; a figure that could not be measured is
//! printed as such with the reason; any peer (or the CLI) whose RSS passes
//! the limit stops the run. Everything lives under one temporary directory
//! removed at the end, and every child is SIGKILLed on every exit path.
//!
//! Environment: `PINFLEET_SCALE_N` (pins, default 1,000,000; 0 skips the
//! 3-peer run), `PINFLEET_SCALE_BIG` (pins for the one-peer run, default 0:
//! off), `PINFLEET_SCALE_TIMEOUT_SECS` (each wait, default 900),
//! `PINFLEET_SCALE_RSS_LIMIT_MB` (default 8000), `PINFLEET_SCALE_IDLE_SECS`
//! (idle time before the second RSS reading, default 5),
//! `PINFLEET_SCALE_DIR` (where the temporary directory goes, default the
//! system's). Other `PINFLEET_<SECTION>_<KEY>` variables reach the daemons
//! as config overrides (e.g. `PINFLEET_CONSENSUS_SNAPSHOT_LOGS_SINCE_LAST`)
//! and are printed in the header.

use std::fmt::Display;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use sha2::{Digest, Sha256};

/// The daemon and CLI under test, built by cargo for this bench.
const EXE: &str = env!("CARGO_BIN_EXE_pinfleet");
/// The PinSet every run applies: `bench/scale`.
const NAMESPACE: &str = "bench";
const NAME: &str = "scale";
/// How often waits poll.
const POLL: Duration = Duration::from_millis(50);
/// Timeout of one small REST request while polling.
const REQUEST: Duration = Duration::from_secs(2);

type Res<T> = Result<T, String>;

/// Ends the message of a stop at the RSS limit: a figure reached, not a
/// failure of the bench.
const DNF: &str = "did not finish";
/// In the message of a wait that passed its deadline: a figure not
/// reached, not a failure of the bench (only wrong answers, crashes and
/// CLI errors are).
const LATE: &str = "not within";

/// Whether a stop is a failure of the bench (or only a figure not reached).
fn is_failure(e: &str) -> bool {
    !e.contains(DNF) && !e.contains(LATE)
}

/// Settings from the environment.
#[derive(Debug)]
struct Cfg {
    n: u64,
    big: u64,
    timeout: Duration,
    rss_limit_kb: u64,
    idle: Duration,
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let digits: String = v.chars().filter(|c| !matches!(c, '_' | ',')).collect();
            match digits.trim().parse() {
                Ok(n) => n,
                Err(_) => {
                    eprintln!("{name}={v:?} is not a number; using {default}");
                    default
                }
            }
        }
        Err(_) => default,
    }
}

impl Cfg {
    fn from_env() -> Self {
        Self {
            n: env_u64("PINFLEET_SCALE_N", 1_000_000),
            big: env_u64("PINFLEET_SCALE_BIG", 0),
            timeout: Duration::from_secs(env_u64("PINFLEET_SCALE_TIMEOUT_SECS", 900)),
            rss_limit_kb: env_u64("PINFLEET_SCALE_RSS_LIMIT_MB", 8000) * 1024,
            idle: Duration::from_secs(env_u64("PINFLEET_SCALE_IDLE_SECS", 5)),
        }
    }
}

// ---------------------------------------------------------------- printing

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Memory from /proc (KiB) in MiB.
fn mb(kb: u64) -> String {
    format!("{:.0} MiB", kb as f64 / 1024.0)
}

/// Disk and list sizes in MB (10^6 bytes), as `B/pin` figures are decimal.
fn bytes(b: u64) -> String {
    if b >= 1_000_000 {
        format!("{:.1} MB", b as f64 / 1e6)
    } else {
        format!("{:.1} kB", b as f64 / 1e3)
    }
}

/// One figure: `  what: value`.
fn fig(what: impl Display, value: impl Display) {
    println!("  {what}: {value}");
}

/// A figure that could not be measured, and why.
fn missing(what: impl Display, why: impl Display) {
    println!("  {what}: NOT MEASURED ({why})");
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

fn commit() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "--short", "HEAD"]) {
        Some(hash) => {
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{hash} (with uncommitted changes)")
            } else {
                hash
            }
        }
        None => "unknown (no git)".into(),
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
        "N = {} pins (PINFLEET_SCALE_N); single-peer N = {} (PINFLEET_SCALE_BIG)",
        cfg.n,
        if cfg.big > 0 {
            cfg.big.to_string()
        } else {
            "off".into()
        }
    );
    println!(
        "commit {}; {} cores, memory {mem}; load average at start {}; {}",
        commit(),
        cores,
        load_average(),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!(
        "each wait {}; RSS limit {} per process; idle before the second RSS reading {}",
        secs(cfg.timeout),
        mb(cfg.rss_limit_kb),
        secs(cfg.idle)
    );
    let overrides: Vec<String> = std::env::vars()
        .filter(|(k, _)| {
            k.starts_with("PINFLEET_")
                && !k.starts_with("PINFLEET_SCALE_")
                && k != "PINFLEET_SECRET"
                && k != "PINFLEET_CLUSTER_SECRET"
        })
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !overrides.is_empty() {
        println!(
            "environment passed to the daemons: {}",
            overrides.join(" ")
        );
    }
    println!("binary: {EXE}");
}

// ------------------------------------------------------------------- /proc

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

// --------------------------------------------------------------- children

/// A child process SIGKILLed and reaped when dropped.
#[derive(Debug)]
struct Guarded(Child);

impl Guarded {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL and reap; the exit status.
    fn kill(mut self) -> Option<ExitStatus> {
        let _ = self.0.kill();
        self.0.wait().ok()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn free_port() -> Res<u16> {
    // Released before the daemon binds it; a collision shows up as a bind
    // error in the peer's log.
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Runs a short CLI command to completion (with a deadline).
fn run_cli(args: &[&str], out: &Path, timeout: Duration) -> Res<String> {
    let file = |p: &Path| File::create(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut child = Guarded(
        Command::new(EXE)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file(out)?)
            .stderr(file(&out.with_extension("err"))?)
            .spawn()
            .map_err(|e| format!("cannot start {EXE}: {e}"))?,
    );
    let t = Instant::now();
    loop {
        match child.0.try_wait() {
            Ok(Some(status)) => {
                let text = std::fs::read_to_string(out).unwrap_or_default();
                if status.success() {
                    return Ok(text);
                }
                let err = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
                return Err(format!(
                    "`pinfleet {}` exited with {status}: {}",
                    args.join(" "),
                    err.trim()
                ));
            }
            Ok(None) if t.elapsed() > timeout => {
                return Err(format!(
                    "`pinfleet {}` did not return within {}",
                    args.join(" "),
                    secs(timeout)
                ));
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => return Err(e.to_string()),
        }
    }
}

// ------------------------------------------------------------------- HTTP

/// One answer of a small request.
struct Reply {
    status: u16,
    /// `x-pinfleet-stale`: the peer knows no leader.
    stale: bool,
    body: String,
}

impl Reply {
    fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// A REST client on a runtime of its own (the bench is synchronous).
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    fn new() -> Res<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { rt, client })
    }

    async fn get_async(&self, url: &str, timeout: Duration) -> Res<Reply> {
        let resp = self
            .client
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let stale = resp.headers().contains_key("x-pinfleet-stale");
        let body = resp.text().await.map_err(|e| e.to_string())?;
        Ok(Reply {
            status,
            stale,
            body,
        })
    }

    fn get(&self, url: &str, timeout: Duration) -> Res<Reply> {
        self.rt.block_on(self.get_async(url, timeout))
    }

    /// The same request to several URLs at once.
    fn get_all(&self, urls: &[String], timeout: Duration) -> Vec<Res<Reply>> {
        self.rt.block_on(futures::future::join_all(
            urls.iter().map(|u| self.get_async(u, timeout)),
        ))
    }

    /// Items of an NDJSON stream (lines), read to its end.
    fn count_lines(&self, url: &str, timeout: Duration) -> Res<u64> {
        self.rt.block_on(async {
            let resp = self
                .client
                .get(url)
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("{url} answered {}", resp.status()));
            }
            let mut stream = resp.bytes_stream();
            let (mut lines, mut last) = (0u64, b'\n');
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| format!("{url}: stream broke off: {e}"))?;
                lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
                if let Some(b) = chunk.last() {
                    last = *b;
                }
            }
            Ok(lines + u64::from(last != b'\n'))
        })
    }
}

// ------------------------------------------------------------------ data

/// CID `i`: CIDv1, raw codec, sha2-256 of `i` (little-endian u64).
fn cid(i: u64) -> String {
    let digest = Sha256::digest(i.to_le_bytes());
    match multihash::Multihash::<64>::wrap(0x12, &digest) {
        Ok(mh) => cid::Cid::new_v1(0x55, mh).to_string(),
        // A 32-byte digest always fits a 64-byte multihash.
        Err(e) => unreachable!("sha2-256 multihash: {e}"),
    }
}

/// Writes `dir/scale.yaml` (PinSet bench/scale) and `dir/list.txt` with `n`
/// lines `CID p<i>`; the manifest's path and the list's size.
fn write_manifest(dir: &Path, n: u64) -> Res<(PathBuf, u64)> {
    let err = |e: std::io::Error| format!("{}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(err)?;
    let list = dir.join("list.txt");
    let mut w = BufWriter::with_capacity(1 << 20, File::create(&list).map_err(err)?);
    for i in 0..n {
        writeln!(w, "{} p{i}", cid(i)).map_err(err)?;
    }
    w.flush().map_err(err)?;
    drop(w);
    let manifest = dir.join("scale.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: {NAME}\n  namespace: {NAMESPACE}\nspec:\n  pinsFrom:\n    - path: list.txt\n"
        ),
    )
    .map_err(err)?;
    let size = std::fs::metadata(&list).map_err(err)?.len();
    Ok((manifest, size))
}

/// Apparent bytes of every file under `dir`, by path relative to it.
fn files(dir: &Path) -> Vec<(String, u64)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => walk(root, &path, out),
                Ok(m) => {
                    let rel = path.strip_prefix(root).unwrap_or(&path);
                    out.push((rel.display().to_string(), m.len()));
                }
                Err(_) => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Allocated bytes (blocks) under `dir`.
fn allocated(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fn walk(dir: &Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.blocks() * 512,
                Err(_) => 0,
            })
            .sum()
    }
    walk(dir)
}

/// Prints a peer directory's size: total, per pin, and per file, grouped
/// as raft log, state, snapshots (by file name) and other.
fn print_disk(label: &str, dir: &Path, pins: u64) {
    let all = files(dir);
    let total: u64 = all.iter().map(|(_, s)| s).sum();
    let group = |name: &str| {
        let n = name.to_ascii_lowercase();
        if n.contains("snap") {
            "snapshots"
        } else if n.contains("log") {
            "raft log"
        } else if n.contains("state") {
            "state"
        } else {
            "other"
        }
    };
    let mut split: Vec<(&str, u64)> = ["raft log", "state", "snapshots", "other"]
        .iter()
        .map(|g| (*g, 0))
        .collect();
    for (name, size) in &all {
        if let Some(slot) = split.iter_mut().find(|(g, _)| *g == group(name)) {
            slot.1 += size;
        }
    }
    fig(
        format!("disk {label} ({} pins)", pins),
        format!(
            "{} total ({:.0} B/pin); allocated on disk {}",
            bytes(total),
            total as f64 / pins.max(1) as f64,
            bytes(allocated(dir))
        ),
    );
    fig(
        format!("disk {label} split"),
        split
            .iter()
            .map(|(g, s)| format!("{g} {}", bytes(*s)))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let big: Vec<String> = all
        .iter()
        .filter(|(_, s)| *s >= 64 * 1024)
        .map(|(n, s)| format!("{n} {}", bytes(*s)))
        .collect();
    fig(
        format!("disk {label} files ≥ 64 kB"),
        if big.is_empty() {
            "none".into()
        } else {
            big.join(", ")
        },
    );
}

// ------------------------------------------------------------------ peers

/// One daemon process and what it needs to start again.
#[derive(Debug)]
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
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Guarded::pid)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    fn p2p_addr(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", self.p2p_port, self.id)
    }

    /// Starts the daemon (its log appended to `self.log`).
    fn start(&mut self, bootstrap: Option<&str>) -> Res<Instant> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let err_log = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(EXE);
        cmd.arg("daemon").arg("--dir").arg(&self.dir);
        if let Some(b) = bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        cmd.env("PINFLEET_API_LISTEN", format!("127.0.0.1:{}", self.api_port))
            .env(
                "PINFLEET_CLUSTER_LISTEN_MULTIADDRESS",
                format!("/ip4/127.0.0.1/tcp/{}", self.p2p_port),
            )
            .env("PINFLEET_IPFS_BACKEND", "none")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log);
        let started = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {EXE}: {e}"))?;
        self.child = Some(Guarded(child));
        Ok(started)
    }

    /// SIGKILL and reap.
    fn kill(&mut self) {
        if let Some(c) = self.child.take() {
            c.kill();
        }
    }

    fn tail_log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .map(|l| l.chars().take(240).collect())
            .collect();
        lines[lines.len().saturating_sub(4)..].join(" | ")
    }
}

/// The running peers of one cluster, and the bench's view of them.
struct Fleet<'a> {
    cfg: &'a Cfg,
    root: PathBuf,
    secret: String,
    http: Http,
    peers: Vec<Peer>,
    /// Pins the PinSet is expected to hold.
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
            n,
        })
    }

    /// `pinfleet init` a new peer and start it; its index and start time.
    fn add_peer(&mut self, bootstrap: Option<&str>) -> Res<(usize, Instant)> {
        let i = self.peers.len();
        let name = format!("peer-{i}");
        let dir = self.root.join(&name);
        let out = self.root.join("logs").join(format!("init-{i}.out"));
        let dir_s = dir.display().to_string();
        run_cli(
            &[
                "init",
                "--dir",
                &dir_s,
                "--secret",
                &self.secret,
                "--peername",
                &name,
            ],
            &out,
            Duration::from_secs(60),
        )?;
        let api_port = free_port()?;
        let mut peer = Peer {
            log: self.root.join("logs").join(format!("{name}.log")),
            name,
            dir,
            api: format!("http://127.0.0.1:{api_port}"),
            api_port,
            p2p_port: free_port()?,
            id: String::new(),
            child: None,
        };
        let started = peer.start(bootstrap)?;
        self.peers.push(peer);
        Ok((i, started))
    }

    /// Errors when a peer died, or a peer (or `extra`, the CLI) passed the
    /// RSS limit.
    fn guard(&mut self, extra: Option<u32>) -> Res<()> {
        let limit = self.cfg.rss_limit_kb;
        for p in &mut self.peers {
            let Some(c) = p.child.as_mut() else { continue };
            if let Ok(Some(status)) = c.0.try_wait() {
                return Err(format!(
                    "{} exited with {status}; log: {}",
                    p.name,
                    p.tail_log()
                ));
            }
            if let Some((rss, _)) = mem_kb(c.pid())
                && rss > limit
            {
                return Err(format!(
                    "{}'s RSS reached {} (limit {}): {DNF}",
                    p.name,
                    mb(rss),
                    mb(limit)
                ));
            }
        }
        if let Some((rss, _)) = extra.and_then(mem_kb)
            && rss > limit
        {
            return Err(format!(
                "the pinfleet apply CLI's RSS reached {} (limit {}): {DNF}",
                mb(rss),
                mb(limit)
            ));
        }
        Ok(())
    }

    /// Polls `f` until it answers `Ok` (or the deadline; `Err` is what it
    /// saw last); checks the guard on every round.
    fn wait_for<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&Fleet<'_>) -> Result<T, String>,
    ) -> Res<(T, Instant)> {
        let t = Instant::now();
        loop {
            self.guard(None)?;
            let last = match f(self) {
                Ok(v) => return Ok((v, Instant::now())),
                Err(last) => last,
            };
            if t.elapsed() > self.cfg.timeout {
                return Err(format!(
                    "{what}: {LATE} {} (last seen: {last})",
                    secs(self.cfg.timeout)
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Peer `i`'s `/health` answers 2xx.
    fn healthy(&self, i: usize) -> Result<(), String> {
        match self.http.get(&self.peers[i].url("/health"), REQUEST) {
            Ok(r) if (200..300).contains(&r.status) => Ok(()),
            Ok(r) => Err(format!("/health answered {}", r.status)),
            Err(e) => Err(e),
        }
    }

    /// Peer `i`'s record holds N pins.
    fn holds_all(&self, i: usize) -> Result<(), String> {
        match self.record(i) {
            Some((p, _)) if p == self.n => Ok(()),
            Some((p, _)) => Err(format!("its record shows {p} pins")),
            None => Err("no record".into()),
        }
    }

    /// The last lines of every peer's log, for a stop.
    fn print_log_tails(&self) {
        for p in &self.peers {
            println!("  (log) {}: {}", p.name, p.tail_log());
        }
    }

    /// Peer `i`'s `/id`: its id and how many members it sees, and whether
    /// it knows a leader.
    fn id(&self, i: usize) -> Option<(String, usize, bool)> {
        let r = self.http.get(&self.peers[i].url("/id"), REQUEST).ok()?;
        let v = r.json()?;
        let members = v["cluster_peers"].as_array().map_or(0, Vec::len);
        Some((v["id"].as_str()?.to_string(), members, !r.stale))
    }

    /// Waits until peer `i` sees `members` members and knows a leader;
    /// records its peer id.
    fn wait_member(&mut self, i: usize, members: usize) -> Res<Instant> {
        let name = self.peers[i].name.clone();
        let (id, at) = self.wait_for(
            &format!("{name} sees {members} members and a leader"),
            |f| match f.id(i) {
                Some((id, m, true)) if m == members => Ok(id),
                Some((_, m, leader)) => Err(format!("{m} members, leader known: {leader}")),
                None => Err("no answer to /id".into()),
            },
        )?;
        self.peers[i].id = id;
        Ok(at)
    }

    /// Pins in peer `i`'s PinSet record (its local state), and the record.
    fn record(&self, i: usize) -> Option<(u64, serde_json::Value)> {
        let r = self
            .http
            .get(&self.peers[i].url(&record_path()), REQUEST)
            .ok()?;
        let v = r.json().filter(|_| r.status == 200)?;
        Some((v["pins"].as_u64()?, v))
    }

    /// Items of peer `i`'s `GET /allocations` stream (its local state).
    fn allocations(&self, i: usize) -> Res<u64> {
        self.http
            .count_lines(&self.peers[i].url("/allocations"), self.cfg.timeout)
    }

    /// The leader's index, from each peer's `/metrics` (`pinfleet_leader`).
    fn leader(&self) -> Option<usize> {
        (0..self.peers.len()).find(|&i| {
            self.peers[i].child.is_some()
                && self
                    .http
                    .get(&self.peers[i].url("/metrics"), self.cfg.timeout)
                    .is_ok_and(|r| r.body.lines().any(|l| l.trim() == "pinfleet_leader 1"))
        })
    }

    /// RSS now and peak of every running peer, one line each.
    fn print_rss(&self, moment: &str) {
        for p in &self.peers {
            let what = format!("RSS {} {moment}", p.name);
            match p.pid().and_then(mem_kb) {
                Some((now, peak)) => fig(what, format!("now {}, peak {}", mb(now), mb(peak))),
                None => missing(what, "process not running"),
            }
        }
    }
}

fn record_path() -> String {
    format!("/pinsets/{NAMESPACE}/{NAME}")
}

/// What one `pinfleet apply` did.
struct Applied {
    /// When the CLI returned.
    cli: Duration,
    /// Its stdout (`--json`).
    report: serde_json::Value,
    /// When each peer showed the record with N pins (first apply only).
    peers: Vec<Option<Duration>>,
    /// Highest VmHWM of the CLI seen while it ran.
    cli_peak_kb: u64,
}

impl Fleet<'_> {
    /// Runs `pinfleet apply manifest --host api --json`; with `watch`, also
    /// polls every peer's record until it holds N pins.
    fn apply(&mut self, manifest: &Path, host: &str, watch: bool) -> Res<Applied> {
        let out = self.root.join("logs").join("apply.out");
        let err = out.with_extension("err");
        let file = |p: &Path| File::create(p).map_err(|e| format!("{}: {e}", p.display()));
        let urls: Vec<String> = self.peers.iter().map(|p| p.url(&record_path())).collect();
        let t0 = Instant::now();
        let mut cli = Some(Guarded(
            Command::new(EXE)
                .arg("apply")
                .arg(manifest)
                .args(["--host", host, "--json"])
                .stdin(Stdio::null())
                .stdout(file(&out)?)
                .stderr(file(&err)?)
                .spawn()
                .map_err(|e| format!("cannot start {EXE}: {e}"))?,
        ));
        let mut returned: Option<(Duration, ExitStatus)> = None;
        let mut peers: Vec<Option<Duration>> = vec![None; self.peers.len()];
        let mut cli_peak_kb = 0;
        let mut failed_at: Option<Instant> = None;
        loop {
            if let Some(c) = cli.as_mut() {
                match c.0.try_wait() {
                    Ok(Some(status)) => {
                        returned = Some((t0.elapsed(), status));
                        cli = None;
                        if !status.success() {
                            failed_at = Some(Instant::now());
                        }
                    }
                    Ok(None) => {
                        if let Some((_, peak)) = mem_kb(c.pid()) {
                            cli_peak_kb = cli_peak_kb.max(peak);
                        }
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            if watch {
                let pending: Vec<usize> = (0..peers.len()).filter(|i| peers[*i].is_none()).collect();
                let asked: Vec<String> = pending.iter().map(|i| urls[*i].clone()).collect();
                for (i, r) in pending.iter().zip(self.http.get_all(&asked, REQUEST)) {
                    let pins = r
                        .ok()
                        .filter(|r| r.status == 200)
                        .and_then(|r| r.json())
                        .and_then(|v| v["pins"].as_u64());
                    if pins == Some(self.n) {
                        peers[*i] = Some(t0.elapsed());
                    }
                }
            }
            self.guard(cli.as_ref().map(Guarded::pid))?;
            let all = peers.iter().all(Option::is_some);
            if returned.is_some() && (!watch || all) {
                break;
            }
            // A failed CLI: give the peers a minute, then stop.
            let given_up = failed_at.is_some_and(|t| t.elapsed() > Duration::from_secs(60));
            if t0.elapsed() > self.cfg.timeout || given_up {
                let reached: Vec<String> = peers
                    .iter()
                    .zip(&self.peers)
                    .map(|(d, p)| match d {
                        Some(d) => format!("{} applied after {}", p.name, secs(*d)),
                        None => format!("{} not applied", p.name),
                    })
                    .collect();
                let cli_state = match &returned {
                    Some((d, s)) => format!(
                        "CLI returned after {} with {s}: {}",
                        secs(*d),
                        std::fs::read_to_string(&err).unwrap_or_default().trim()
                    ),
                    None => "CLI still running".into(),
                };
                return Err(format!(
                    "apply did not complete ({LATE} {}): {cli_state}; {}",
                    secs(t0.elapsed()),
                    reached.join(", ")
                ));
            }
            std::thread::sleep(POLL);
        }
        let Some((cli_time, status)) = returned else {
            return Err("internal: the CLI's exit was not recorded".into());
        };
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if !status.success() {
            return Err(format!(
                "pinfleet apply exited with {status} after {} (every peer applied it nonetheless): {} {}",
                secs(cli_time),
                text.trim(),
                std::fs::read_to_string(&err).unwrap_or_default().trim()
            ));
        }
        let report = serde_json::from_str(&text)
            .map_err(|e| format!("pinfleet apply --json printed no JSON ({e}): {text}"))?;
        Ok(Applied {
            cli: cli_time,
            report,
            peers,
            cli_peak_kb,
        })
    }
}

/// `add 1000000, unchanged 0, entries 101` from an apply's JSON report.
fn summary(report: &serde_json::Value) -> String {
    let r = &report["pinsets"][0];
    ["add", "update", "release", "unchanged", "entries"]
        .iter()
        .map(|k| format!("{k} {}", r[*k]))
        .collect::<Vec<_>>()
        .join(", ")
}

// ------------------------------------------------------------------- runs

/// Stages of the 3-peer run, for the list of what was not measured when a
/// stage stops it.
const STAGES: [&str; 8] = [
    "start 3 peers",
    "apply N new pins",
    "RSS and disk",
    "unchanged re-apply",
    "counts",
    "restart after SIGKILL of a follower",
    "a 4th peer joins",
    "restart after SIGKILL of the leader",
];

fn cluster_run(cfg: &Cfg, root: &Path, failures: &mut Vec<String>) {
    let n = cfg.n;
    println!("\n== 3 peers, one PinSet of {n} pins");
    let t = Instant::now();
    let (manifest, size) = match write_manifest(&root.join("manifest"), n) {
        Ok(m) => m,
        Err(e) => {
            missing("every figure of the 3-peer run", format!("cannot write the list: {e}"));
            return;
        }
    };
    println!(
        "  (setup) list of {n} CIDs (CIDv1 raw sha2-256 of the index, `CID p<i>` per line, {}) written in {}",
        bytes(size),
        secs(t.elapsed())
    );
    let mut fleet = match Fleet::new(cfg, &root.join("cluster"), n) {
        Ok(f) => f,
        Err(e) => {
            missing("every figure of the 3-peer run", e);
            return;
        }
    };
    let mut stage = 0;
    let result = cluster_stages(&mut fleet, &manifest, &mut stage, failures);
    if let Err(e) = result {
        println!("  STOPPED in stage \"{}\": {e}", STAGES[stage]);
        fleet.print_log_tails();
        if is_failure(&e) {
            failures.push(format!("{}: {e}", STAGES[stage]));
        }
        for s in &STAGES[stage..] {
            missing(s, "the run stopped (above)");
        }
    }
    println!(
        "  (end) load average {}; stopping the peers and removing their data",
        load_average()
    );
    for p in &mut fleet.peers {
        p.kill();
    }
    let _ = std::fs::remove_dir_all(&fleet.root);
    let _ = std::fs::remove_dir_all(root.join("manifest"));
}

fn cluster_stages(
    fleet: &mut Fleet<'_>,
    manifest: &Path,
    stage: &mut usize,
    failures: &mut Vec<String>,
) -> Res<()> {
    let n = fleet.n;
    // Stage 0: three peers, as `testbed up --ipfs none` starts them.
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
    println!(
        "  (setup) 3 peers formed one cluster in {}",
        secs(t.elapsed())
    );
    let leader = fleet.leader().ok_or("no peer reports pinfleet_leader 1")?;
    let host = fleet.peers[leader].api.clone();
    println!(
        "  (setup) leader {}; `pinfleet apply {} --host {host}`",
        fleet.peers[leader].name,
        manifest.display()
    );

    // Stage 1: apply N new pins.
    *stage = 1;
    let applied = fleet.apply(manifest, &host, true)?;
    fig(
        format!("apply {n} new pins: CLI returned"),
        format!("{} ({})", secs(applied.cli), summary(&applied.report)),
    );
    for (p, d) in fleet.peers.iter().zip(&applied.peers) {
        if let Some(d) = d {
            fig(
                format!("apply {n} new pins: {} has applied all {n} (its GET {})", p.name, record_path()),
                secs(*d),
            );
        }
    }
    let all = applied.peers.iter().flatten().max().copied().unwrap_or_default();
    fig(format!("apply {n} new pins: EVERY peer has applied all {n}"), secs(all));
    fig(
        "pinfleet apply CLI peak RSS (VmHWM, last sample before it exited)",
        mb(applied.cli_peak_kb),
    );
    let records: Vec<Option<serde_json::Value>> =
        (0..3).map(|i| fleet.record(i).map(|(_, v)| v)).collect();
    let revisions: Vec<&str> = records
        .iter()
        .map(|r| r.as_ref().and_then(|v| v["revision"].as_str()).unwrap_or("none"))
        .collect();
    if revisions.iter().any(|r| *r != revisions[0]) {
        println!("  WRONG: the peers record different revisions: {revisions:?}");
        failures.push(format!("revisions differ: {revisions:?}"));
    }

    // Stage 2: memory right after, then after idling; disk.
    *stage = 2;
    fleet.print_rss("right after every peer applied");
    std::thread::sleep(fleet.cfg.idle);
    fleet.guard(None)?;
    fleet.print_rss(&format!("after {} idle", secs(fleet.cfg.idle)));
    for p in &fleet.peers {
        print_disk(&p.name, &p.dir, n);
    }

    // Stage 3: the same manifest again.
    *stage = 3;
    let again = fleet.apply(manifest, &host, false)?;
    fig(
        format!("apply of the same, unchanged manifest ({n} pins) again: CLI returned"),
        format!("{} ({})", secs(again.cli), summary(&again.report)),
    );
    for (i, before) in records.iter().enumerate() {
        let after = fleet.record(i).map(|(_, v)| v);
        let at = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v["appliedAt"].clone());
        if at(before) != at(&after) {
            println!(
                "  note: the unchanged apply re-committed the PinSet on {} (appliedAt {} → {})",
                fleet.peers[i].name,
                at(before).unwrap_or_default(),
                at(&after).unwrap_or_default()
            );
        }
    }
    fleet.print_rss("after the unchanged apply");

    // Stage 4: every peer's own state holds exactly N pins.
    *stage = 4;
    for i in 0..3 {
        let t = Instant::now();
        let name = fleet.peers[i].name.clone();
        match fleet.allocations(i) {
            Ok(c) if c == n => fig(
                format!("GET /allocations of {name}: {n} items (correct)"),
                format!("streamed in {}", secs(t.elapsed())),
            ),
            Ok(c) => {
                println!("  WRONG: GET /allocations of {name} streamed {c} items, expected {n}");
                failures.push(format!("{name}: /allocations {c} != {n}"));
            }
            Err(e) => {
                missing(format!("GET /allocations of {name}"), &e);
                failures.push(format!("{name}: /allocations: {e}"));
            }
        }
    }
    fleet.print_rss("after streaming GET /allocations");

    // Stages 5 to 7 do not depend on each other: one that stops is
    // reported and the next runs, unless a peer died or passed the RSS
    // limit.
    *stage = 5;
    let r = fleet
        .leader()
        .ok_or_else(|| "no peer reports pinfleet_leader 1".to_string())
        .and_then(|leader| {
            let follower = (0..3).find(|i| *i != leader).unwrap_or(1);
            restart(fleet, follower, "a follower")
        });
    settle(fleet, r, STAGES[5], failures)?;
    *stage = 6;
    let r = join(fleet, failures);
    settle(fleet, r, STAGES[6], failures)?;
    // Last: it may leave the cluster unsettled.
    *stage = 7;
    let r = fleet
        .leader()
        .ok_or_else(|| "no peer reports pinfleet_leader 1".to_string())
        .and_then(|leader| restart(fleet, leader, "the leader"));
    settle(fleet, r, STAGES[7], failures)
}

/// Reports a stage that stopped; the run goes on unless the fleet's guard
/// (a dead peer, the RSS limit) says otherwise.
fn settle(fleet: &mut Fleet<'_>, r: Res<()>, stage: &str, failures: &mut Vec<String>) -> Res<()> {
    // A dead or oversized peer stops the run (reported once, by the caller).
    fleet.guard(None)?;
    if let Err(e) = r {
        missing(stage, &e);
        fleet.print_log_tails();
        if is_failure(&e) {
            failures.push(format!("{stage}: {e}"));
        }
    }
    Ok(())
}

/// Stage 7: a fourth peer joins the N-pin cluster.
fn join(fleet: &mut Fleet<'_>, failures: &mut Vec<String>) -> Res<()> {
    let n = fleet.n;
    let boot = fleet.peers[0].p2p_addr();
    let (i, started) = fleet.add_peer(Some(&boot))?;
    let name = fleet.peers[i].name.clone();
    let (_, up) = fleet.wait_for(&format!("{name}'s /health"), |f| f.healthy(i))?;
    fig(
        format!("a 4th peer joins the {n}-pin cluster: {name}'s API answers /health"),
        secs(up - started),
    );
    let ((), holds) = fleet.wait_for(&format!("{name}'s record with {n} pins"), |f| {
        f.holds_all(i)
    })?;
    fig(
        format!("a 4th peer joins: {name}'s local state holds all {n} pins (its GET {})", record_path()),
        secs(holds - started),
    );
    let joined = fleet.wait_member(i, 4)?;
    fig(
        format!("a 4th peer joins: {name} is a member (its /id lists 4 peers) and knows the leader"),
        secs(joined - started),
    );
    let t = Instant::now();
    match fleet.allocations(i) {
        Ok(c) if c == n => fig(
            format!("a 4th peer joins: GET /allocations of {name}: {n} items (correct)"),
            format!("streamed in {}", secs(t.elapsed())),
        ),
        Ok(c) => {
            println!("  WRONG: GET /allocations of {name} streamed {c} items, expected {n}");
            failures.push(format!("{name}: /allocations {c} != {n}"));
        }
        Err(e) => {
            missing(format!("GET /allocations of {name}"), &e);
            failures.push(format!("{name}: /allocations: {e}"));
        }
    }
    let snapshots: Vec<String> = files(&fleet.peers[i].dir)
        .into_iter()
        .filter(|(f, size)| f.to_ascii_lowercase().contains("snap") && *size > 0)
        .map(|(f, size)| format!("{f} {}", bytes(size)))
        .collect();
    fig(
        format!("a 4th peer joins: how {name}'s state arrived"),
        if snapshots.is_empty() {
            "log replay (no snapshot file in its directory)".to_string()
        } else {
            format!("snapshot (files: {})", snapshots.join(", "))
        },
    );
    fleet.print_rss("at the end (restarted peers: peak since their restart)");
    print_disk(&fleet.peers[i].name.clone(), &fleet.peers[i].dir.clone(), n);
    Ok(())
}

/// SIGKILLs peer `i`, starts it again, and prints when its API answers,
/// when its record shows N pins, and when a full `GET /allocations` from it
/// streams N items.
fn restart(fleet: &mut Fleet<'_>, i: usize, role: &str) -> Res<()> {
    let n = fleet.n;
    let name = fleet.peers[i].name.clone();
    let what = format!("restart after SIGKILL of {role} ({name})");
    fleet.peers[i].kill();
    let started = fleet.peers[i].start(None)?;
    let (_, up) = fleet.wait_for(&format!("{name}'s /health"), |f| f.healthy(i))?;
    fig(format!("{what}: API answers /health"), secs(up - started));
    let ((), rec) = fleet.wait_for(&format!("{name}'s record with {n} pins"), |f| {
        f.holds_all(i)
    })?;
    fig(
        format!("{what}: its GET {} shows {n} pins", record_path()),
        secs(rec - started),
    );
    let ((stream_start, c), done) = fleet.wait_for(&format!("{name} streams {n} pins"), |f| {
        let t = Instant::now();
        match f.allocations(i) {
            Ok(c) if c == n => Ok((t, c)),
            Ok(c) => Err(format!("{c} items")),
            Err(e) => Err(e),
        }
    })?;
    fig(
        format!("{what}: all {c} pins served (a full GET /allocations ends)"),
        format!(
            "{} (that stream started at {})",
            secs(done - started),
            secs(stream_start - started)
        ),
    );
    // Back in the cluster: it sees as many members as a peer that stayed
    // up, and knows the leader.
    let other = (0..fleet.peers.len())
        .find(|j| *j != i && fleet.peers[*j].child.is_some())
        .unwrap_or(0);
    let ((), back) = fleet.wait_for(&format!("{name} back in the cluster"), |f| {
        match (f.id(i), f.id(other)) {
            (Some((_, mine, true)), Some((_, theirs, _))) if mine == theirs => Ok(()),
            (mine, theirs) => Err(format!(
                "members and leader known {:?}, another peer sees {:?} members",
                mine.map(|(_, m, l)| (m, l)),
                theirs.map(|(_, m, _)| m)
            )),
        }
    })?;
    fig(
        format!("{what}: knows the leader and all members again"),
        secs(back - started),
    );
    Ok(())
}

/// One peer holding `m` pins: apply time, RSS, disk; stops at the RSS
/// limit.
fn big_run(cfg: &Cfg, root: &Path, failures: &mut Vec<String>) {
    let m = cfg.big;
    println!("\n== 1 peer, one PinSet of {m} pins (PINFLEET_SCALE_BIG)");
    let t = Instant::now();
    let (manifest, size) = match write_manifest(&root.join("big-manifest"), m) {
        Ok(x) => x,
        Err(e) => {
            missing("every figure of the single-peer run", format!("cannot write the list: {e}"));
            return;
        }
    };
    println!(
        "  (setup) list of {m} CIDs ({}) written in {}",
        bytes(size),
        secs(t.elapsed())
    );
    let mut fleet = match Fleet::new(cfg, &root.join("big"), m) {
        Ok(f) => f,
        Err(e) => {
            missing("every figure of the single-peer run", e);
            return;
        }
    };
    if let Err(e) = big_stages(&mut fleet, &manifest, failures) {
        let what = format!("single peer with {m} pins");
        let reached = fleet
            .peers
            .first()
            .and_then(Peer::pid)
            .and_then(mem_kb)
            .map(|(now, peak)| format!("; the peer's RSS was {} (peak {})", mb(now), mb(peak)))
            .unwrap_or_default();
        println!("  {what}: STOPPED: {e}{reached}");
        fleet.print_log_tails();
        if is_failure(&e) {
            failures.push(format!("{what}: {e}"));
        }
    }
    println!("  (end) load average {}; removing the peer's data", load_average());
    for p in &mut fleet.peers {
        p.kill();
    }
    let _ = std::fs::remove_dir_all(&fleet.root);
    let _ = std::fs::remove_dir_all(root.join("big-manifest"));
}

fn big_stages(fleet: &mut Fleet<'_>, manifest: &Path, failures: &mut Vec<String>) -> Res<()> {
    let m = fleet.n;
    fleet.add_peer(None)?;
    fleet.wait_member(0, 1)?;
    let host = fleet.peers[0].api.clone();
    let applied = fleet.apply(manifest, &host, true)?;
    fig(
        format!("single peer, apply {m} new pins: CLI returned"),
        format!("{} ({})", secs(applied.cli), summary(&applied.report)),
    );
    if let Some(Some(d)) = applied.peers.first() {
        fig(
            format!("single peer, apply {m} new pins: applied (its GET {})", record_path()),
            secs(*d),
        );
    }
    fig(
        "single peer: pinfleet apply CLI peak RSS (VmHWM, last sample)",
        mb(applied.cli_peak_kb),
    );
    fleet.print_rss(&format!("holding {m} pins, right after the apply"));
    std::thread::sleep(fleet.cfg.idle);
    fleet.guard(None)?;
    fleet.print_rss(&format!("holding {m} pins, after {} idle", secs(fleet.cfg.idle)));
    print_disk(&fleet.peers[0].name.clone(), &fleet.peers[0].dir.clone(), m);
    let t = Instant::now();
    match fleet.allocations(0) {
        Ok(c) if c == m => fig(
            format!("single peer: GET /allocations: {m} items (correct)"),
            format!("streamed in {}", secs(t.elapsed())),
        ),
        Ok(c) => {
            println!("  WRONG: GET /allocations streamed {c} items, expected {m}");
            failures.push(format!("single peer: /allocations {c} != {m}"));
        }
        Err(e) => {
            missing("single peer: GET /allocations", &e);
            failures.push(format!("single peer: /allocations: {e}"));
        }
    }
    fleet.print_rss("after streaming GET /allocations");
    Ok(())
}

fn main() {
    let cfg = Cfg::from_env();
    header(&cfg);
    let base = std::env::var_os("PINFLEET_SCALE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    // Declared first so it is dropped (removed) after every child is killed.
    let tmp = tempfile::Builder::new()
        .prefix("pinfleet-scale-")
        .tempdir_in(&base)
        .expect("a temporary directory for the bench's data");
    println!("data under {} (removed at the end)", tmp.path().display());
    let started = Instant::now();
    let mut failures = Vec::new();
    if cfg.n > 0 {
        cluster_run(&cfg, tmp.path(), &mut failures);
    }
    if cfg.big > 0 {
        big_run(&cfg, tmp.path(), &mut failures);
    }
    println!(
        "\n== done in {}; load average {}",
        secs(started.elapsed()),
        load_average()
    );
    drop(tmp);
    assert!(
        failures.is_empty(),
        "the scale bench did not complete correctly:\n{}",
        failures.join("\n")
    );
}
