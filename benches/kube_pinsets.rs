//! `kubectl apply` of many PinSets at once (issue 16, Benchmark):
//! `cargo bench --bench kube_pinsets`.
//!
//! Starts three scripted Kubo nodes in this process (`pinfleet::testkit`'s
//! `MockKubo`: a pin succeeds at once), the 3-peer testbed on them
//! (`pinfleet testbed up --ipfs kubo=URL,URL,URL`, the binary cargo builds
//! for this bench, on 127.0.0.1) and a fake Kubernetes API server
//! (`pinfleet::testkit::FakeKube`) holding P PinSets of C CIDs each
//! (defaults 1,000 × 1,000; CIDv1 raw, all distinct; replication 2), all
//! created before the controller starts. Then it runs `pinfleet controller
//! --source kube --namespace bench` (the real binary, with a kubeconfig
//! pointing at the fake server) against the testbed and prints:
//!
//! 1. the time until every PinSet's status has `Ready=True` with
//!    `observedGeneration` equal to its `metadata.generation` (every pin
//!    pinned on its peers);
//! 2. the time until every peer's state holds all P × C pins
//!    (`pinfleet_pins`);
//! 3. the controller's peak RSS (`VmHWM`), and the requests the fake API
//!    server served (lists, watches, status writes).
//!
//! Speed is never asserted; a wrong end state (a PinSet not Ready, a count
//! short) or a failing process makes the bench exit 1. Every wait has a
//! deadline. The controller (SIGTERM) and the testbed (SIGINT) are stopped
//! on every exit path, and everything lives in one temporary directory
//! removed at the end.
//!
//! Environment: `PINFLEET_KUBE_PINSETS` (P), `PINFLEET_KUBE_CIDS` (C),
//! `PINFLEET_KUBE_TIMEOUT_SECS` (each wait, default 1800),
//! `PINFLEET_KUBE_DIR` (where the temporary directory goes),
//! `PINFLEET_KUBE_EXE` (another `pinfleet` build to measure instead).
//! `PINFLEET_<SECTION>_<KEY>` variables reach the daemons (the testbed
//! passes its environment on) as config overrides.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Res, Testbed, env_u64, fig, gauge, peak_rss_mib, secs};
use pinfleet::testkit::{FakeKube, MockKubo, seq_cid};
use serde_json::{Value, json};

/// The daemon, controller and CLI under test.
fn exe() -> String {
    std::env::var("PINFLEET_KUBE_EXE").unwrap_or_else(|_| env!("CARGO_BIN_EXE_pinfleet").into())
}
/// How often waits poll.
const POLL: Duration = Duration::from_millis(250);
/// The namespace of the PinSets.
const NAMESPACE: &str = "bench";

/// A child process stopped on drop: `signal`, then SIGKILL after 30 s.
struct Stopped {
    child: Child,
    signal: nix::sys::signal::Signal,
}

impl Stopped {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it now; false when it had to be killed.
    fn stop(&mut self) -> bool {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if let Ok(Some(_)) = self.child.try_wait() {
            return true;
        }
        let _ = nix::sys::signal::kill(pid, self.signal);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `pinfleet testbed up --peers 3` on the given Kubo URLs and its peers'
/// API URLs.
fn testbed(dir: &Path, kubos: &[String], timeout: Duration) -> Res<(Testbed, Vec<String>)> {
    let tb = Testbed::up(
        &exe(),
        dir,
        &["--ipfs".into(), format!("kubo={}", kubos.join(","))],
        "3 peers on mock Kubo",
        timeout,
    )?;
    let apis = tb.peers("api");
    Ok((tb, apis))
}

/// PinSet `p` of `cids` CIDs, numbered after every earlier PinSet's.
fn pinset(p: u64, cids: u64) -> Value {
    let pins: Vec<Value> = (p * cids..(p + 1) * cids)
        .map(|i| json!({"cid": seq_cid(i).to_string(), "name": format!("c{i}")}))
        .collect();
    json!({
        "apiVersion": "pinfleet.io/v1alpha1",
        "kind": "PinSet",
        "metadata": {"name": format!("ps-{p:05}"), "namespace": NAMESPACE},
        "spec": {
            "defaults": {"replication": {"min": 2, "max": 2}},
            "pins": pins,
        },
    })
}

/// `Ready=True` for the object's current generation.
fn ready(o: &Value) -> bool {
    let generation = &o["metadata"]["generation"];
    let status = &o["status"];
    status["observedGeneration"] == *generation
        && status["conditions"].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                c["type"] == "Ready"
                    && c["status"] == "True"
                    && c["observedGeneration"] == *generation
            })
        })
}

async fn run(dir: &Path) -> Res<()> {
    let p = env_u64("PINFLEET_KUBE_PINSETS", 1_000);
    let c = env_u64("PINFLEET_KUBE_CIDS", 1_000);
    let timeout = Duration::from_secs(env_u64("PINFLEET_KUBE_TIMEOUT_SECS", 1_800));
    let total = p * c;
    let mut kubos: Vec<MockKubo> = Vec::new();
    for _ in 0..3 {
        let (k, _) = MockKubo::start().await.map_err(|e| e.to_string())?;
        kubos.push(k);
    }
    let urls: Vec<String> = kubos.iter().map(|k| k.url().to_string()).collect();
    let (mut tb, apis) = {
        let (dir, urls) = (dir.to_path_buf(), urls.clone());
        tokio::task::spawn_blocking(move || testbed(&dir, &urls, timeout))
            .await
            .map_err(|e| e.to_string())??
    };
    let fake = FakeKube::start().await.map_err(|e| e.to_string())?;
    let t = Instant::now();
    for i in 0..p {
        if fake.create(NAMESPACE, pinset(i, c)).is_none() {
            return Err(format!("pinset {i} already exists"));
        }
    }
    fig(
        format!("(setup) {p} PinSets of {c} CIDs in the fake API server"),
        secs(t.elapsed()),
    );
    let config = dir.join("kubeconfig");
    std::fs::write(&config, fake.kubeconfig()).map_err(|e| e.to_string())?;
    let log = File::create(dir.join("controller.log")).map_err(|e| e.to_string())?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let t = Instant::now();
    let child = Command::new(exe())
        .args(["controller", "--source", "kube", "--namespace", NAMESPACE])
        .args(["--host", &apis[0]])
        .env("KUBECONFIG", &config)
        .env_remove("PINFLEET_HOST")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start the controller: {e}"))?;
    let mut controller = Stopped {
        child,
        signal: nix::sys::signal::Signal::SIGTERM,
    };
    let client = pinfleet::tls::client(None)
        .map_err(|e| e.to_string())?
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let mut all_ready: Option<Duration> = None;
    let mut all_pins: Option<Duration> = None;
    let mut rss = 0.0f64;
    let mut counts = (0usize, [0u64; 3]);
    while all_ready.is_none() || all_pins.is_none() {
        if let Ok(Some(status)) = controller.child.try_wait() {
            let text = std::fs::read_to_string(dir.join("controller.log")).unwrap_or_default();
            let tail: String = text.lines().rev().take(20).collect::<Vec<_>>().join("\n");
            return Err(format!(
                "the controller exited: {status}; last lines:\n{tail}"
            ));
        }
        rss = rss.max(peak_rss_mib(controller.pid()).unwrap_or(0.0));
        for k in &kubos {
            k.clear_calls();
        }
        if all_ready.is_none() {
            counts.0 = fake.count(ready);
            if counts.0 as u64 == p {
                all_ready = Some(t.elapsed());
                fig("every PinSet Ready for its generation", secs(t.elapsed()));
            }
        }
        if all_pins.is_none() {
            for (i, api) in apis.iter().enumerate() {
                counts.1[i] = gauge(&client, api, "pinfleet_pins").await.unwrap_or(0);
            }
            if counts.1.iter().all(|&n| n >= total) {
                all_pins = Some(t.elapsed());
                fig(
                    format!("every peer's state holds {total} pins"),
                    secs(t.elapsed()),
                );
            }
        }
        if t.elapsed() > timeout {
            return Err(format!(
                "after {}: {} of {p} PinSets Ready, peers hold {:?} of {total} pins",
                secs(timeout),
                counts.0,
                counts.1
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    rss = rss.max(peak_rss_mib(controller.pid()).unwrap_or(0.0));
    fig("controller peak RSS (VmHWM)", format!("{rss:.0} MiB"));
    let peers: Vec<String> = tb
        .pids()
        .into_iter()
        .map(|pid| format!("{:.0}", peak_rss_mib(pid).unwrap_or(0.0)))
        .collect();
    fig(
        "peers' peak RSS (VmHWM)",
        format!("{} MiB", peers.join(" / ")),
    );
    let (lists, watches) = fake.requests();
    let writes: usize = (0..p)
        .map(|i| fake.statuses(NAMESPACE, &format!("ps-{i:05}")).len())
        .sum();
    fig(
        "fake API server served",
        format!("{lists} lists, {watches} watches, {writes} status writes"),
    );
    let clean = tokio::task::spawn_blocking(move || {
        let clean = controller.stop();
        tb.stop();
        clean
    })
    .await
    .map_err(|e| e.to_string())?;
    if !clean {
        return Err("the controller did not stop on SIGTERM within 30 s".into());
    }
    drop(kubos);
    Ok(())
}

fn main() {
    common::main_in(
        "kube PinSets",
        "PINFLEET_KUBE_DIR",
        "pinfleet-kube-",
        |dir| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(run(dir))
        },
    );
}
