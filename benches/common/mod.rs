//! What every process benchmark prints and reads the same way: numbers
//! from the environment and figures, the testbed they run on, gauges and
//! peak RSS. Each bench declares `mod common;` and uses what it needs.
#![allow(dead_code)]

use std::fmt::Display;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `name` from the environment as a number (`_` and `,` allowed between
/// digits), or `default` (said on stderr when the value is not a number).
pub fn env_u64(name: &str, default: u64) -> u64 {
    let Ok(v) = std::env::var(name) else {
        return default;
    };
    let digits: String = v.chars().filter(|c| !matches!(c, '_' | ',')).collect();
    digits.trim().parse().unwrap_or_else(|_| {
        eprintln!("{name}={v:?} is not a number; using {default}");
        default
    })
}

/// One figure: `  what: value`.
pub fn fig(what: impl Display, value: impl Display) {
    println!("  {what}: {value}");
}

/// A duration as seconds with two decimals.
pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// What the process benches return on failure: a message.
pub type Res<T> = Result<T, String>;

/// `pinfleet testbed up` (on 127.0.0.1), stopped on drop: SIGINT (it stops
/// its peers), SIGKILL after 30 s, then any peer still running under a pid
/// of `testbed.json` (the testbed was killed, or a peer hung) is killed.
pub struct Testbed {
    child: std::process::Child,
    path: std::path::PathBuf,
    /// `testbed.json` as it was when the cluster formed.
    pub file: serde_json::Value,
}

impl Testbed {
    /// `EXE testbed up --peers 3 --dir DIR/tb ARGS…`, once it says the
    /// cluster formed (its output and errors go to `DIR/testbed.out`); prints the
    /// time it took as `testbed ready (WHAT)`.
    pub fn up(
        exe: &str,
        dir: &std::path::Path,
        args: &[String],
        what: &str,
        timeout: Duration,
    ) -> Res<Testbed> {
        let out = dir.join("testbed.out");
        let log = std::fs::File::create(&out).map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = std::process::Command::new(exe)
            .args(["testbed", "up", "--peers", "3", "--dir"])
            .arg(dir.join("tb"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {exe}: {e}"))?;
        let mut tb = Testbed {
            child,
            path: dir.join("tb").join("testbed.json"),
            file: serde_json::Value::Null,
        };
        let t = std::time::Instant::now();
        loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if text.contains("cluster formed") {
                break;
            }
            if let Ok(Some(status)) = tb.child.try_wait() {
                return Err(format!("testbed up exited: {status}: {text}"));
            }
            if t.elapsed() > timeout {
                return Err("the testbed did not form in time".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        fig(format!("testbed ready ({what})"), secs(t.elapsed()));
        tb.file = serde_json::from_slice(&std::fs::read(&tb.path).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        if tb.peers("api").len() != 3 {
            return Err(format!(
                "testbed.json lists {} peers",
                tb.peers("api").len()
            ));
        }
        Ok(tb)
    }

    /// Each peer's string field `key` (`api`, `pinsvc`, …), in order.
    pub fn peers(&self, key: &str) -> Vec<String> {
        self.file["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p[key].as_str().map(str::to_owned))
            .collect()
    }

    /// The peers' pids.
    pub fn pids(&self) -> Vec<u32> {
        self.file["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["pid"].as_u64().and_then(|p| u32::try_from(p).ok()))
            .collect()
    }

    /// The exit status of `testbed up` if it has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stops the testbed and whatever it left running.
    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if self.exited().is_none() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let t = std::time::Instant::now();
            while self.exited().is_none() && t.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for pid in self.pids() {
            // Only a pinfleet daemon still running under that pid.
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("daemon"));
            if ours {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Peak RSS (`VmHWM`) of `pid`, in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// A gauge from a peer's `/metrics`.
pub async fn gauge(client: &reqwest::Client, api: &str, name: &str) -> Res<u64> {
    let text = client
        .get(format!("{api}/metrics"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("{api}/metrics has no {name}"))
}

/// A bench's `main`: prints `pinfleet NAME bench: N cores`, runs `run` in
/// a fresh temporary directory (`prefix…`, under `$DIR_VAR` or the
/// system's), removes it, and exits 1 with `FAILED: …` when `run` fails
/// (2 when no directory can be made).
pub fn main_in(
    name: &str,
    dir_var: &str,
    prefix: &str,
    run: impl FnOnce(&std::path::Path) -> Res<()>,
) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("pinfleet {name} bench: {cores} cores");
    let base = std::env::var_os(dir_var).map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let tmp = match tempfile::Builder::new().prefix(prefix).tempdir_in(&base) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot create a directory under {}: {e}", base.display());
            std::process::exit(2);
        }
    };
    println!("data under {} (removed at the end)", tmp.path().display());
    let result = run(tmp.path());
    drop(tmp);
    if let Err(e) = result {
        println!("FAILED: {e}");
        std::process::exit(1);
    }
}

/// Percentile `p` (0–1) of sorted `d`, in ms.
pub fn pct(d: &[Duration], p: f64) -> String {
    d.get(((d.len() as f64 - 1.0) * p) as usize).map_or_else(
        || "-".into(),
        |d| format!("{:.1} ms", d.as_secs_f64() * 1e3),
    )
}

/// `clients` concurrent tasks make calls `0..n` between them (each takes
/// the next number); task `c` runs `call(c, i)`. Returns the wall time and
/// every call's latency, sorted; the first failure ends it.
pub async fn drive<F, Fut>(n: u64, clients: u64, call: F) -> Res<(Duration, Vec<Duration>)>
where
    F: Fn(u64, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Res<()>> + Send + 'static,
{
    let call = std::sync::Arc::new(call);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let t = std::time::Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (call, next) = (std::sync::Arc::clone(&call), std::sync::Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, String>(latencies);
                }
                let started = std::time::Instant::now();
                call(c, i).await?;
                latencies.push(started.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.map_err(|e| e.to_string())??);
    }
    let took = t.elapsed();
    latencies.sort();
    Ok((took, latencies))
}

/// `latency p50 / p99 / max` of sorted `latencies`.
pub fn latency_fig(latencies: &[Duration]) {
    fig(
        "latency p50 / p99 / max",
        format!(
            "{} / {} / {}",
            pct(latencies, 0.5),
            pct(latencies, 0.99),
            pct(latencies, 1.0)
        ),
    );
}

/// Bytes in a MiB, for rates.
pub const MIB: f64 = 1024.0 * 1024.0;

/// Pseudo-random bytes (splitmix64), so no two blocks deduplicate.
pub struct Prng(pub u64);

impl Prng {
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Writes `bytes` pseudo-random bytes (from `seed`) to `path`.
pub fn write_random(path: &Path, bytes: u64, seed: u64) -> Res<()> {
    let f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut rng = Prng(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        w.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        left -= n as u64;
    }
    w.flush().map_err(|e| e.to_string())
}

/// The last `n` non-empty lines of the file at `path`.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n    ")
}

/// Whether `pid` runs (and is not a zombie).
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// An error when the testbed or one of its peers has exited, with the
/// tails of `testbed.out` and of that peer's `daemon.log`.
pub fn check_alive(tb: &mut Testbed, dir: &Path) -> Res<()> {
    let mut dead = Vec::new();
    if let Some(status) = tb.exited() {
        dead.push(format!("testbed up exited ({status})"));
    }
    let peers = tb.file["peers"].as_array().cloned().unwrap_or_default();
    let mut logs = vec![(
        "testbed.out".to_string(),
        tail(&dir.join("testbed.out"), 10),
    )];
    for (i, p) in peers.iter().enumerate() {
        let pid = p["pid"].as_u64().unwrap_or(0) as u32;
        if !running(pid) {
            dead.push(format!("peer {i} (pid {pid}) exited"));
            let log = Path::new(p["dir"].as_str().unwrap_or_default()).join("daemon.log");
            logs.push((format!("peer {i} daemon.log"), tail(&log, 20)));
        }
    }
    if dead.is_empty() {
        return Ok(());
    }
    let logs: Vec<String> = logs
        .into_iter()
        .map(|(what, text)| format!("  {what}:\n    {text}"))
        .collect();
    Err(format!("{}\n{}", dead.join("; "), logs.join("\n")))
}

/// Runs `cmd` (its output to `out.stdout`/`out.stderr`), killed after
/// `timeout`: whether it succeeded, its output and its errors.
pub fn bounded(cmd: &mut Command, timeout: Duration, out: &Path) -> Res<(bool, String, String)> {
    let (so, se) = (out.with_extension("stdout"), out.with_extension("stderr"));
    let file = |p: &Path| std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file(&so)?)
        .stderr(file(&se)?)
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let t = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if t.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{cmd:?} took longer than {}", secs(timeout)));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    Ok((status.success(), read(&so), read(&se).trim().to_owned()))
}

/// `bytes` over a loopback TCP connection in 256 KiB writes: MiB/s, what
/// the machine moves at best.
pub fn loopback(bytes: u64) -> Res<f64> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 256 << 10];
        let mut got = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(got);
            }
            got += n as u64;
        }
    });
    let mut buf = vec![0u8; 256 << 10];
    Prng(7).fill(&mut buf);
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        left -= n as u64;
    }
    drop(s);
    let got = reader
        .join()
        .map_err(|_| "loopback reader panicked".to_string())?
        .map_err(|e| e.to_string())?;
    let took = t.elapsed();
    if got != bytes {
        return Err(format!("loopback copy moved {got} of {bytes} bytes"));
    }
    Ok(bytes as f64 / MIB / took.as_secs_f64())
}
