//! Sharded add through real processes (issue 18): `cargo bench --bench
//! sharding`.
//!
//! Starts the 3-peer testbed (`pinfleet testbed up`, embedded IPFS nodes,
//! daemon defaults, the binary cargo builds for this bench, on 127.0.0.1),
//! writes one pseudo-random file of S MiB (default 1,024) and measures, in
//! one run:
//!
//! 1. a loopback TCP copy of S MiB (std sockets, 256 KiB writes): MiB/s,
//!    what the machine moves at best;
//! 2. the unsharded add: `pinfleet add --host <peer 0> --replication 1 -q
//!    FILE` (a child process, what a user runs): its time and MiB/s (the
//!    content imported into peer 0's node, pinned on one peer);
//! 3. the sharded add of the same file: `pinfleet add --host <peer 0>
//!    --shard --shard-size Z --replication 1 -q FILE` (Z default 64MiB):
//!    its time and MiB/s, then from `GET /pins/{cid}` on peer 0 polled
//!    every 50 ms when the meta pin reports every peer `pinned` or
//!    `remote` (every shard on its peer): the time from the add's start and
//!    MiB/s; the shard pins (`GET /allocations?filter=shard-pin`) and how
//!    many each peer holds;
//! 4. each peer's peak RSS.
//!
//! Speed is never asserted; an add that fails, a pin that never reaches
//! `pinned`, or a peer that exits makes the bench exit 1 (with the tail of
//! the peers' logs). Every wait has a deadline. The testbed is stopped on
//! every exit path, and everything lives in one temporary directory
//! removed at the end.
//!
//! Environment: `PINFLEET_SHARDBENCH_MIB` (S), `PINFLEET_SHARDBENCH_SHARD`
//! (Z, as `pinfleet add --shard-size` takes it), `PINFLEET_SHARDBENCH_TIMEOUT_SECS`
//! (each wait, default 600), `PINFLEET_SHARDBENCH_DIR` (where the temporary
//! directory goes), `PINFLEET_SHARDBENCH_EXE` (another `pinfleet` build).
//! `PINFLEET_<SECTION>_<KEY>` variables reach the daemons as config
//! overrides.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    MIB, Res, Testbed, bounded, check_alive, env_u64, fig, loopback, peak_rss_mib, secs,
    write_random,
};

/// The daemon and CLI under test, built by cargo for this bench.
fn exe() -> String {
    std::env::var("PINFLEET_SHARDBENCH_EXE")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_pinfleet").into())
}

/// How often `GET /pins/{cid}` is polled.
const POLL: Duration = Duration::from_millis(50);

/// `pinfleet add --host API --replication 1 -q EXTRA… PATH`: the root CID
/// and how long the add took.
fn add(
    api: &str,
    path: &Path,
    extra: &[&str],
    timeout: Duration,
    dir: &Path,
) -> Res<(String, Duration)> {
    let t = Instant::now();
    let (ok, out, err) = bounded(
        Command::new(exe())
            .args(["add", "--host", api, "--replication", "1", "-q"])
            .args(extra)
            .arg(path)
            .env_remove("PINFLEET_HOST"),
        timeout,
        &dir.join("add"),
    )?;
    let took = t.elapsed();
    if !ok {
        return Err(format!("pinfleet add {extra:?} {}: {err}", path.display()));
    }
    let cid = out.lines().last().unwrap_or_default().trim().to_owned();
    if cid.is_empty() {
        return Err(format!("pinfleet add {} printed no CID", path.display()));
    }
    Ok((cid, took))
}

/// Polls `GET API/pins/CID` until every peer of its `peer_map` is `pinned`
/// or `remote` (at least one `pinned`).
async fn until_pinned(
    client: &reqwest::Client,
    api: &str,
    cid: &str,
    timeout: Duration,
    tb: &mut Testbed,
    dir: &Path,
) -> Res<Instant> {
    let t = Instant::now();
    let mut last = serde_json::Value::Null;
    loop {
        check_alive(tb, dir)?;
        if t.elapsed() > timeout {
            return Err(format!("{cid} not pinned after {}: {last}", secs(timeout)));
        }
        let resp = client
            .get(format!("{api}/pins/{cid}"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            last = resp.json().await.map_err(|e| e.to_string())?;
            if let Some(map) = last["peer_map"].as_object() {
                let statuses: Vec<&str> = map
                    .values()
                    .map(|p| p["status"].as_str().unwrap_or(""))
                    .collect();
                if statuses.contains(&"pinned")
                    && statuses.iter().all(|s| *s == "pinned" || *s == "remote")
                {
                    return Ok(Instant::now());
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The shard pins of the state and how many each peer was allocated.
async fn shards(client: &reqwest::Client, api: &str) -> Res<(usize, BTreeMap<String, usize>)> {
    let resp = client
        .get(format!("{api}/allocations?filter=shard-pin"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!(
            "GET /allocations?filter=shard-pin: {}",
            resp.status()
        ));
    }
    let text = resp.text().await.map_err(|e| e.to_string())?;
    // An array, or NDJSON (one pin a line), as the server streams it.
    let pins: Vec<serde_json::Value> = match serde_json::from_str(&text) {
        Ok(serde_json::Value::Array(a)) => a,
        _ => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|e| e.to_string()))
            .collect::<Res<_>>()?,
    };
    let mut per_peer = BTreeMap::new();
    for p in &pins {
        for a in p["allocations"].as_array().into_iter().flatten() {
            *per_peer
                .entry(a.as_str().unwrap_or("?").to_owned())
                .or_insert(0) += 1;
        }
    }
    Ok((pins.len(), per_peer))
}

fn run(dir: &Path) -> Res<()> {
    let mib = env_u64("PINFLEET_SHARDBENCH_MIB", 1024);
    let shard = std::env::var("PINFLEET_SHARDBENCH_SHARD").unwrap_or_else(|_| "64MiB".into());
    let timeout = Duration::from_secs(env_u64("PINFLEET_SHARDBENCH_TIMEOUT_SECS", 600));
    let mut tb = Testbed::up(&exe(), dir, &[], "3 peers, embedded IPFS", timeout)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let client = pinfleet::tls::client(None)
        .map_err(|e| e.to_string())?
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let (apis, ids) = (tb.peers("api"), tb.peers("id"));
    let bytes = (mib << 20) as f64;
    let rate = |d: Duration| bytes / MIB / d.as_secs_f64().max(1e-3);

    let file = dir.join("random.bin");
    let t = Instant::now();
    write_random(&file, mib << 20, 0x5a4d_0001)?;
    fig(
        format!("(setup) pseudo-random file of {mib} MiB written"),
        secs(t.elapsed()),
    );

    println!("\n== loopback TCP copy of {mib} MiB (256 KiB writes)");
    let copy = loopback(mib << 20)?;
    fig("loopback TCP", format!("{copy:.0} MiB/s"));

    println!("\n== unsharded: pinfleet add --replication 1 ({mib} MiB) on peer 0");
    let (_, took) = add(&apis[0], &file, &[], timeout, dir)?;
    let plain = rate(took);
    fig(
        "pinfleet add returned",
        format!("{} ({plain:.1} MiB/s)", secs(took)),
    );

    println!(
        "\n== sharded: pinfleet add --shard --shard-size {shard} --replication 1 ({mib} MiB) on peer 0"
    );
    let t0 = Instant::now();
    let (cid, took) = add(
        &apis[0],
        &file,
        &["--shard", "--shard-size", &shard],
        timeout,
        dir,
    )?;
    let sharded = rate(took);
    fig(
        "pinfleet add --shard returned",
        format!("{} ({sharded:.1} MiB/s)", secs(took)),
    );
    let at = rt.block_on(until_pinned(&client, &apis[0], &cid, timeout, &mut tb, dir))?;
    fig(
        "every shard pinned on its peer, from the add's start",
        format!("{} ({:.1} MiB/s)", secs(at - t0), rate(at - t0)),
    );
    let (n, per_peer) = rt.block_on(shards(&client, &apis[0]))?;
    let spread: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| format!("peer {i}: {}", per_peer.get(id).copied().unwrap_or(0)))
        .collect();
    fig(
        "shard pins (allocations per peer)",
        format!("{n} ({})", spread.join(", ")),
    );
    fig(
        "sharded / unsharded add, sharded / loopback",
        format!("{:.2}, {:.3}", sharded / plain, sharded / copy),
    );

    println!("\n== peak RSS");
    for (i, pid) in tb.pids().into_iter().enumerate() {
        fig(
            format!("peer {i}"),
            peak_rss_mib(pid).map_or("unknown".into(), |m| format!("{m:.0} MiB")),
        );
    }
    Ok(())
}

fn main() {
    common::main_in(
        "sharding",
        "PINFLEET_SHARDBENCH_DIR",
        "pinfleet-sharding-",
        run,
    );
}
