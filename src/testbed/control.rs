//! `pinfleet testbed kill` / `testbed start`: stop one peer of a running
//! testbed the hard way (SIGKILL, as a crash or a pulled plug) and start it
//! again from its directory, for trying out how the cluster copes.
//!
//! Works from `testbed.json` alone (the `pid` and `cmd` of each peer), so
//! it needs no connection to the `testbed up` process; a restarted peer is
//! not that process's child, and its `pid` in `testbed.json` is updated.
//! It must not touch a peer's data: only processes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::{TESTBED_FILE, TestbedFile, TestbedPeer, last_lines, write_testbed_file};
use crate::daemon::read_run_file;

/// Why a peer could not be killed or started.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No readable `testbed.json`.
    #[error("cannot read {}: is a testbed running there?", path.display())]
    NoTestbed {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `testbed.json` is not what `testbed up` writes.
    #[error("{} is not a testbed file", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// No peer by that name.
    #[error("no peer {which:?} in the testbed (peers: {known})")]
    UnknownPeer {
        /// What was asked.
        which: String,
        /// The names there are.
        known: String,
    },
    /// Killing a peer that does not run.
    #[error("{name} is not running")]
    NotRunning {
        /// `peer-<i>`.
        name: String,
    },
    /// Starting a peer that runs.
    #[error("{name} is already running (pid {pid})")]
    AlreadyRunning {
        /// `peer-<i>`.
        name: String,
        /// Its process.
        pid: u32,
    },
    /// The peer's API did not close or open in time.
    #[error("{name}: {what} within {timeout:?} (see {})", log.display())]
    Timeout {
        /// `peer-<i>`.
        name: String,
        /// What did not happen.
        what: &'static str,
        /// How long it had.
        timeout: Duration,
        /// Its log.
        log: PathBuf,
    },
    /// Signal, spawn or file errors.
    #[error("{name}: {message}")]
    Failed {
        /// `peer-<i>`.
        name: String,
        /// What failed.
        message: String,
    },
    /// Writing `testbed.json` back.
    #[error(transparent)]
    Write(#[from] super::TestbedError),
}

/// The `testbed.json` of the testbed directory `dir`.
pub fn read_testbed_file(dir: &Path) -> Result<TestbedFile, ControlError> {
    let path = dir.join(TESTBED_FILE);
    let bytes = std::fs::read(&path).map_err(|source| ControlError::NoTestbed {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| ControlError::BadFile { path, source })
}

/// Index of the peer named `which`: `peer-1`, `1` or its peer id.
fn find(file: &TestbedFile, which: &str) -> Result<usize, ControlError> {
    let index = which.strip_prefix("peer-").unwrap_or(which);
    if let Ok(i) = index.parse::<usize>()
        && i < file.peers.len()
    {
        return Ok(i);
    }
    file.peers
        .iter()
        .position(|p| p.id == which)
        .ok_or_else(|| ControlError::UnknownPeer {
            which: which.to_string(),
            known: (0..file.peers.len())
                .map(|i| format!("peer-{i}"))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The API's socket address (`http://127.0.0.1:PORT` → `127.0.0.1:PORT`).
fn api_addr(peer: &TestbedPeer) -> Option<SocketAddr> {
    let rest = peer
        .api
        .strip_prefix("http://")
        .or_else(|| peer.api.strip_prefix("https://"))?;
    rest.trim_end_matches('/').parse().ok()
}

/// True while something accepts connections on the peer's API port.
async fn api_open(peer: &TestbedPeer) -> bool {
    match api_addr(peer) {
        Some(addr) => tokio::net::TcpStream::connect(addr).await.is_ok(),
        None => false,
    }
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
async fn wait_until<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends SIGKILL to the testbed peer `which` (in the testbed directory
/// `dir`) and waits until its API port is closed. Returns the peer as
/// `testbed.json` lists it.
pub async fn kill_peer(
    dir: &Path,
    which: &str,
    timeout: Duration,
) -> Result<(String, TestbedPeer), ControlError> {
    let file = read_testbed_file(dir)?;
    let i = find(&file, which)?;
    let name = format!("peer-{i}");
    let peer = file.peers[i].clone();
    if !api_open(&peer).await {
        return Err(ControlError::NotRunning { name });
    }
    let pid = i32::try_from(peer.pid).map_err(|_| ControlError::Failed {
        name: name.clone(),
        message: format!("invalid pid {}", peer.pid),
    })?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .map_err(|e| match e {
        nix::errno::Errno::ESRCH => ControlError::NotRunning { name: name.clone() },
        e => ControlError::Failed {
            name: name.clone(),
            message: format!("cannot kill pid {pid}: {e}"),
        },
    })?;
    // A killed child stays a zombie until `testbed up` reaps it, so the
    // process table says little; its sockets close at once.
    if !wait_until(timeout, || async { !api_open(&peer).await }).await {
        return Err(ControlError::Timeout {
            name,
            what: "the API port did not close",
            timeout,
            log: peer.dir.join("daemon.log"),
        });
    }
    Ok((name, peer))
}

/// Starts the testbed peer `which` again with its `cmd` from
/// `testbed.json` (as a process of its own, logging to its `daemon.log`),
/// waits until its API answers and writes its new pid to `testbed.json`.
pub async fn start_peer(
    dir: &Path,
    which: &str,
    timeout: Duration,
) -> Result<(String, TestbedPeer), ControlError> {
    let mut file = read_testbed_file(dir)?;
    let i = find(&file, which)?;
    let name = format!("peer-{i}");
    let peer = file.peers[i].clone();
    if api_open(&peer).await {
        return Err(ControlError::AlreadyRunning {
            name,
            pid: peer.pid,
        });
    }
    let failed = |message: String| ControlError::Failed {
        name: name.clone(),
        message,
    };
    let (exe, args) = peer
        .cmd
        .split_first()
        .ok_or_else(|| failed("no cmd in testbed.json".into()))?;
    let log_path = peer.dir.join("daemon.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| failed(format!("cannot open {}: {e}", log_path.display())))?;
    let err_log = log
        .try_clone()
        .map_err(|e| failed(format!("cannot open {}: {e}", log_path.display())))?;
    let _ = std::fs::remove_file(peer.dir.join(crate::daemon::RUN_FILE)); // the killed run's
    // Its own process group: Ctrl-C in the terminal that started it does
    // not stop it; `testbed kill` does.
    let mut child = tokio::process::Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .process_group(0)
        .spawn()
        .map_err(|e| failed(format!("cannot start {exe}: {e}")))?;
    let pid = child.id().unwrap_or_default();
    let mut exited = None;
    let up = wait_until(timeout, || {
        let came_up = read_run_file(&peer.dir).is_some_and(|r| r.pid == pid);
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
        }
        async move { came_up }
    })
    .await;
    if let Some(status) = exited.filter(|_| !up) {
        return Err(failed(format!(
            "exited with {status}: {}",
            last_lines(&log_path, 5)
        )));
    }
    if !up || !wait_until(timeout, || api_open(&peer)).await {
        return Err(ControlError::Timeout {
            name,
            what: "the API did not answer",
            timeout,
            log: log_path,
        });
    }
    file.peers[i].pid = pid;
    write_testbed_file(dir, &file)?;
    Ok((name, file.peers[i].clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> TestbedFile {
        let peer = |i: usize| TestbedPeer {
            id: format!("12D3KooWpeer{i}"),
            pid: 100 + i as u32,
            dir: PathBuf::from(format!("/tb/peer-{i}")),
            api: format!("http://127.0.0.1:{}", 9000 + i),
            cmd: vec!["pinfleet".into(), "daemon".into()],
            ipfs: "none".into(),
            pinsvc: None,
        };
        TestbedFile {
            peers: (0..3).map(peer).collect(),
            followers: Vec::new(),
            basic_auth: None,
            pinsvc_token: None,
        }
    }

    #[test]
    fn a_peer_is_named_by_peername_index_or_id() {
        let f = file();
        assert_eq!(find(&f, "peer-1").unwrap(), 1);
        assert_eq!(find(&f, "2").unwrap(), 2);
        assert_eq!(find(&f, "12D3KooWpeer0").unwrap(), 0);
        let err = find(&f, "peer-3").unwrap_err().to_string();
        assert_eq!(
            err,
            "no peer \"peer-3\" in the testbed (peers: peer-0, peer-1, peer-2)"
        );
        assert_eq!(
            api_addr(&f.peers[1]),
            Some("127.0.0.1:9001".parse().unwrap())
        );
    }
}
