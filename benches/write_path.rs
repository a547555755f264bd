//! The write path on real processes (issue 14, Benchmark):
//! `cargo bench --bench write_path`.
//!
//! Starts the 3-peer testbed (`pinfleet testbed up --ipfs none`, the binary
//! cargo builds for this bench, on 127.0.0.1) and measures:
//!
//! 1. sustained `POST /pins/{cid}`: C concurrent clients (default 64),
//!    spread over the three peers' APIs, pin N new CIDs (default 100,000)
//!    with replication 2; prints pins/s, latency percentiles and the log
//!    entries the leader wrote for them (group commit: far fewer than N);
//! 2. `pinfleet state import` of M pins (default 1,000,000) from a file in
//!    IPFS Cluster's own `state export` format; prints the time until the
//!    command returns and until every peer's state holds all M pins.
//!
//! Speed is never asserted; a wrong answer (a pin refused, a count short)
//! or a failing command makes the bench exit 1. Every wait has a deadline.
//! The testbed is stopped (SIGINT, then SIGKILL) on every exit path of the
//! bench, and everything lives in one temporary directory removed at the
//! end.
//!
//! Environment: `PINFLEET_WRITE_PINS` (N, 0 skips part 1),
//! `PINFLEET_WRITE_CLIENTS` (C), `PINFLEET_WRITE_IMPORT` (M, 0 skips part
//! 2), `PINFLEET_WRITE_TIMEOUT_SECS` (each wait, default 900),
//! `PINFLEET_WRITE_DIR` (where the temporary directory goes),
//! `PINFLEET_WRITE_EXE` (another `pinfleet` build to measure instead).
//! `PINFLEET_<SECTION>_<KEY>` variables reach the daemons (the testbed
//! passes its environment on) as config overrides.

mod common;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Res, Testbed, env_u64, fig, gauge, secs};

use sha2::{Digest, Sha256};

/// The daemon and CLI under test, built by cargo for this bench
/// (`PINFLEET_WRITE_EXE` names another build, to compare two versions).
fn exe() -> String {
    std::env::var("PINFLEET_WRITE_EXE").unwrap_or_else(|_| env!("CARGO_BIN_EXE_pinfleet").into())
}
/// How often waits poll.
const POLL: Duration = Duration::from_millis(100);

/// CID `i`: CIDv1, raw codec, sha2-256 of `i` (little-endian u64), with a
/// salt so the two parts never share a CID.
fn cid(salt: u8, i: u64) -> String {
    let mut h = Sha256::new();
    h.update([salt]);
    h.update(i.to_le_bytes());
    let digest = h.finalize();
    match multihash::Multihash::<64>::wrap(0x12, &digest) {
        Ok(mh) => cid::Cid::new_v1(0x55, mh).to_string(),
        // A 32-byte digest always fits a 64-byte multihash.
        Err(e) => unreachable!("sha2-256 multihash: {e}"),
    }
}

async fn leader(client: &reqwest::Client, apis: &[String]) -> Res<String> {
    for api in apis {
        if gauge(client, api, "pinfleet_leader").await? == 1 {
            return Ok(api.clone());
        }
    }
    Err("no leader".into())
}

/// Part 1: `clients` concurrent clients pin `n` CIDs.
async fn pins(client: &reqwest::Client, apis: &[String], n: u64, clients: u64) -> Res<()> {
    let leader = leader(client, apis).await?;
    let before = gauge(client, &leader, "pinfleet_raft_last_log_index").await?;
    let (http, apis) = (client.clone(), apis.to_vec());
    let (took, latencies) = common::drive(n, clients, move |c, i| {
        let client = http.clone();
        let api = apis[(c as usize) % apis.len()].clone();
        async move {
            let url = format!(
                "{api}/pins/{}?replication-min=2&replication-max=2",
                cid(1, i)
            );
            let resp = client.post(&url).send().await.map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                let status = resp.status();
                return Err(format!(
                    "pin {i}: {status} {}",
                    resp.text().await.unwrap_or_default()
                ));
            }
            let _ = resp.bytes().await;
            Ok(())
        }
    })
    .await?;
    let after = gauge(client, &leader, "pinfleet_raft_last_log_index").await?;
    fig(
        format!("{n} pins, {clients} clients over 3 peers"),
        format!(
            "{} ({:.0} pins/s)",
            secs(took),
            n as f64 / took.as_secs_f64()
        ),
    );
    common::latency_fig(&latencies);
    fig(
        "log entries written meanwhile",
        format!(
            "{} ({:.1} pins per entry)",
            after - before,
            n as f64 / (after - before).max(1) as f64
        ),
    );
    Ok(())
}

/// Writes `m` pins in IPFS Cluster's `state export` format.
fn write_export(path: &Path, m: u64) -> Res<()> {
    let t = Instant::now();
    let f = File::create(path).map_err(|e| e.to_string())?;
    let mut w = BufWriter::new(f);
    for i in 0..m {
        writeln!(
            w,
            r#"{{"replication_factor_min":2,"replication_factor_max":2,"name":"p{i}","mode":"recursive","shard_size":0,"user_allocations":null,"expire_at":"0001-01-01T00:00:00Z","metadata":null,"pin_update":null,"origins":[],"cid":"{}","type":"pin","allocations":[],"max_depth":-1,"reference":null,"timestamp":"2024-01-01T00:00:00Z"}}"#,
            cid(2, i)
        )
        .map_err(|e| e.to_string())?;
    }
    w.flush().map_err(|e| e.to_string())?;
    let bytes = std::fs::metadata(path).map_or(0, |m| m.len());
    fig(
        format!("(setup) export file of {m} pins"),
        format!("{:.1} MB in {}", bytes as f64 / 1e6, secs(t.elapsed())),
    );
    Ok(())
}

/// Part 2: `state import` of `m` pins; waits until every peer holds them.
async fn import(
    client: &reqwest::Client,
    apis: &[String],
    file: &Path,
    m: u64,
    already: u64,
    timeout: Duration,
) -> Res<()> {
    let t = Instant::now();
    let out = tokio::process::Command::new(exe())
        .args(["state", "import", "--host", &apis[0]])
        .arg(file)
        .env_remove("PINFLEET_HOST")
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "state import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    fig(
        format!("state import of {m} pins returned"),
        secs(t.elapsed()),
    );
    for api in apis {
        loop {
            let have = gauge(client, api, "pinfleet_pins").await?;
            if have >= already + m {
                break;
            }
            if t.elapsed() > timeout {
                return Err(format!("{api} holds {have} pins after {}", secs(timeout)));
            }
            tokio::time::sleep(POLL).await;
        }
    }
    fig("every peer holds them", secs(t.elapsed()));
    Ok(())
}

fn run(dir: &Path) -> Res<()> {
    let n = env_u64("PINFLEET_WRITE_PINS", 100_000);
    let clients = env_u64("PINFLEET_WRITE_CLIENTS", 64).max(1);
    let m = env_u64("PINFLEET_WRITE_IMPORT", 1_000_000);
    let timeout = Duration::from_secs(env_u64("PINFLEET_WRITE_TIMEOUT_SECS", 900));
    let tb = Testbed::up(
        &exe(),
        dir,
        &["--ipfs".into(), "none".into()],
        "3 peers, no IPFS",
        timeout,
    )?;
    let apis = tb.peers("api");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = pinfleet::tls::client(None)
            .map_err(|e| e.to_string())?
            .pool_max_idle_per_host(clients as usize)
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        if n > 0 {
            println!("\n== POST /pins/{{cid}}");
            pins(&client, &apis, n, clients).await?;
        }
        if m > 0 {
            println!("\n== state import (IPFS Cluster export format)");
            let file = dir.join("export.json");
            write_export(&file, m)?;
            let already = gauge(&client, &apis[0], "pinfleet_pins").await?;
            import(&client, &apis, &file, m, already, timeout).await?;
        }
        Ok::<_, String>(())
    })?;
    drop(tb);
    Ok(())
}

fn main() {
    common::main_in("write path", "PINFLEET_WRITE_DIR", "pinfleet-write-", run);
}
