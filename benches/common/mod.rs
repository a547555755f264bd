//! What every process benchmark prints and reads the same way: numbers
//! from the environment and figures, the testbed they run on, gauges and
//! peak RSS. Each bench declares `mod common;` and uses what it needs.
#![allow(dead_code)]

use std::fmt::Display;
use std::time::Duration;

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
